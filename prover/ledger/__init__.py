"""The metering ledger: schema, migrations and the transactional store (prover/ledger/store.py)."""

from prover.ledger.store import (
    ChainPosition,
    EpochInfo,
    Ledger,
    Outcome,
    PendingEvent,
    Stored,
    make_engine,
    migrate,
)

__all__ = ["ChainPosition", "EpochInfo", "Ledger", "Outcome", "PendingEvent", "Stored",
           "make_engine", "migrate"]

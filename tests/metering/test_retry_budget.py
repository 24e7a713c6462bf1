"""The retry budget of transient database errors is spent to its end, and not beyond."""

import sqlite3
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from prover.errors import LedgerError
from prover.ledger.faults import with_retries

BUDGET = 1.0


def test_a_locked_database_is_retried_until_the_budget_ends(tmp_path: Path) -> None:
    db = tmp_path / "held.db"
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("CREATE TABLE t (x INTEGER)")
    holder.execute("BEGIN IMMEDIATE")  # every other writer gets 'database is locked'
    engine = create_engine(f"sqlite:///{db}", connect_args={"timeout": 0})
    attempts: list[float] = []

    def write() -> None:
        attempts.append(time.monotonic())
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")

    start = time.monotonic()
    try:
        with pytest.raises(LedgerError, match="the database is unavailable") as refused:
            with_retries(write, seconds=BUDGET)
    finally:
        holder.rollback()
        holder.close()
        engine.dispose()
    # The last attempt comes at the end of the budget, not one backoff before it...
    assert attempts[-1] - start >= BUDGET - 0.05
    # ...and nothing waits past it (one attempt against a held lock is immediate).
    assert time.monotonic() - start < BUDGET + 0.5
    assert len(attempts) >= 5
    assert f"gave up after {len(attempts)} attempts" in str(refused.value)

"""Keyless users' plaintext openings are kept for a documented, configurable time
(ZKMETER_PLAINTEXT_OPENING_RETENTION_DAYS, default 90), then deleted with the user id beside
them; the sealed openings stay (issue 12)."""

from sqlalchemy import select

from prover.app import build_services
from prover.config import Settings
from prover.ledger.schema import epoch_openings
from prover.ledger.store import now_ms
from prover.metering import UsageRequest
from tests.accounts import enroll

SEED = "b7e151628aed2a6abf7158809cf4f3c762e7160f38b4da56a784d9045190cfef"


def test_plaintext_openings_expire_and_leave_no_user_id(tmp_path):
    assert Settings().plaintext_opening_retention_days == 90
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'zk.sqlite'}", signing_key=SEED,
                        proof_workers=1, contract_address="0x" + "42" * 20, min_leaves=4,
                        plaintext_opening_retention_days=2)
    services = build_services(settings)
    try:
        enroll(services.meter.ledger.engine, services.meter.provider_id, ["keyless"])
        services.meter.record(UsageRequest("k1", "keyless", "gpt-4o", input_tokens=4,
                                           output_tokens=2))
        closed = services.epochs.close()
        epoch_id = closed.bundle.epoch_id
        store = services.store
        assert store.private_opening(epoch_id, "keyless") is not None
        sealed_before = store.sealed_openings(epoch_id)
        assert store.purge_expired_openings(now_ms() + 86_400_000) == 0  # inside 2 days
        assert store.purge_expired_openings(now_ms() + 2 * 86_400_000 + 60_000) == 1
        assert store.private_opening(epoch_id, "keyless") is None
        with store.engine.begin() as conn:
            rows = conn.execute(select(epoch_openings.c.user_id, epoch_openings.c.opening)
                                .where(epoch_openings.c.epoch_id == epoch_id)).all()
        assert all(r.user_id is None and r.opening is None for r in rows)
        assert store.sealed_openings(epoch_id) == sealed_before
    finally:
        services.close()

"""Fixtures of the fault-injection tests: a provider, and zkmeter services on a fresh
PostgreSQL database behind a FaultProxy (tests/faults/proxy.py), or on a SQLite file.

Timeouts are short here (connect 2 s, statement 1 s, retries 3 s) so every bound is checked in
seconds; docs/operations.md has the defaults.
"""

import pytest

from prover.app import Services, build_services
from prover.config import Settings
from tests.accounts import STANDARD_USERS, enroll
from tests.faults.proxy import FaultProxy
from tests.postgres import PG_HOST, PG_PORT, temporary_database

SEED = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
FAST = {"db_connect_timeout_seconds": 2, "db_statement_timeout_seconds": 1.0,
        "db_retry_seconds": 3.0}


def settings_for(url: str, **overrides) -> Settings:
    values = {"database_url": url, "signing_key": SEED, "contract_address": "0x" + "42" * 20,
              "min_leaves": 8, "proof_workers": 1, **FAST}
    values.update(overrides)
    return Settings(**values)


@pytest.fixture()
def pg_url():
    with temporary_database("zkmeter_faults") as url:
        yield url


@pytest.fixture()
def proxy():
    with FaultProxy((PG_HOST, PG_PORT)) as running:
        yield running


@pytest.fixture()
def services_factory():
    """Build Services from settings; all closed at the end."""
    made: list[Services] = []

    def factory(url: str, **overrides) -> Services:
        services = build_services(settings_for(url, **overrides))
        enroll(services.meter.ledger.engine, services.meter.provider_id, STANDARD_USERS)
        made.append(services)
        return services

    yield factory
    for services in made:
        services.close()


# --- helpers shared by the close tests -------------------------------------------------------

SQL_WORDS = ("SELECT", "INSERT", "UPDATE", "DELETE", "FROM", "%(", "::", "[SQL")


def assert_one_short_line(text: str) -> None:
    """An operator-facing failure: one line, short, no traceback, no SQL."""
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert len(lines[0]) < 300 and "Traceback" not in text, text
    assert not any(word in text for word in SQL_WORDS), text


def record_and_start_closing(services: Services, *, events: int = 24, users: int = 9) -> int:
    """Usage for ``users`` users, then the open epoch moved to ``closing`` (its window is
    fixed from here on); returns the closing epoch's id."""
    from prover.metering import UsageRequest

    for i in range(events):
        services.meter.record(UsageRequest(idempotency_key=f"e-{i}", user_id=f"user-{i % users}",
                                           model="gpt-4o", input_tokens=100 + i,
                                           output_tokens=3 * i))
    info = services.epochs.epoch_to_close()
    return info.id


def reference_bundle(services: Services, epoch_id: int, *, min_leaves: int) -> bytes:
    """The bundle an uninterrupted close of ``epoch_id`` (one billing account) publishes:
    computed in process from the stored epoch and totals, with nothing resumed."""
    from tests.accounts import uninterrupted_close

    (account_id,) = set(services.accounts.accounts_of(
        services.meter.ledger.totals(epoch_id)).values())
    bundle, _ = uninterrupted_close(services.epochs, epoch_id, account_id,
                                    services.settings.load_signing_key(),
                                    min_leaves=min_leaves)
    return bundle.dumps().encode()


def cli_env(url: str, **settings: str) -> dict[str, str]:
    """The environment of a ``zkmeter`` subprocess on ``url`` with the fast timeouts."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("ZKMETER_")}
    env.update({"ZKMETER_DATABASE_URL": url, "ZKMETER_SIGNING_KEY": SEED,
                "ZKMETER_CONTRACT_ADDRESS": "0x" + "42" * 20, "ZKMETER_CHAIN_ID": "31337",
                "ZKMETER_PROOF_WORKERS": "1", "ZKMETER_MIN_LEAVES": "8"})
    env.update({f"ZKMETER_{k.upper()}": str(v) for k, v in FAST.items()})
    env.update({f"ZKMETER_{k.upper()}": v for k, v in settings.items()})
    return env

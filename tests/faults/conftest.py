"""Fixtures of the fault-injection tests: a provider, and zkmeter services on a fresh
PostgreSQL database behind a FaultProxy (tests/faults/proxy.py), or on a SQLite file.

Timeouts are short here (connect 2 s, statement 1 s, retries 3 s) so every bound is checked in
seconds; docs/operations.md has the defaults.
"""

import pytest

from prover.app import Services, build_services
from prover.config import Settings
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
        made.append(services)
        return services

    yield factory
    for services in made:
        services.close()

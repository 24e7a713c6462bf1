"""Fixtures of the epoch tests: a provider key, and ledger URLs on SQLite and PostgreSQL.

PostgreSQL is the server at 127.0.0.1:5432 (trust auth); each test gets its own database,
dropped afterwards. Without a reachable server those cases skip, saying why.
"""


import pytest
from nacl.signing import SigningKey

from tests.postgres import temporary_database

PROVIDER_SEED = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")


@pytest.fixture(scope="session")
def signing_key():
    return SigningKey(PROVIDER_SEED)


@pytest.fixture()
def pg_url():
    with temporary_database("zkmeter_epoch") as url:
        yield url


@pytest.fixture()
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'ledger.sqlite'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request):
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")

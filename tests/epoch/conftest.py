"""Fixtures of the epoch tests: a provider key, and ledger URLs on SQLite and PostgreSQL.

PostgreSQL is the server at 127.0.0.1:5432 (trust auth); each test gets its own database,
dropped afterwards. Without a reachable server those cases skip, saying why.
"""

import os
import secrets

import psycopg
import pytest
from nacl.signing import SigningKey

PROVIDER_SEED = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
PG_HOST = os.environ.get("ZKMETER_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("ZKMETER_TEST_PG_PORT", "5432"))


@pytest.fixture(scope="session")
def signing_key():
    return SigningKey(PROVIDER_SEED)


def _admin():
    reasons = []
    for user in ("postgres", "root"):
        try:
            return user, psycopg.connect(host=PG_HOST, port=PG_PORT, user=user,
                                         dbname="postgres", connect_timeout=3, autocommit=True)
        except psycopg.OperationalError as exc:
            reasons.append(f"{user}: {str(exc).splitlines()[0]}")
    return None, "; ".join(reasons)


@pytest.fixture()
def pg_url():
    user, admin = _admin()
    if user is None:
        pytest.skip(f"PostgreSQL at {PG_HOST}:{PG_PORT} is unreachable ({admin})")
    name = f"zkmeter_epoch_{secrets.token_hex(6)}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://{user}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture()
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'ledger.sqlite'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request):
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")

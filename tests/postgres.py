"""The PostgreSQL server the suites run on (127.0.0.1:5432, trust auth; override with
ZKMETER_TEST_PG_HOST / ZKMETER_TEST_PG_PORT): a throwaway database per use, dropped after.
Where no server is reachable the caller's test skips, saying why; CI starts one."""

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest

PG_HOST = os.environ.get("ZKMETER_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("ZKMETER_TEST_PG_PORT", "5432"))


def admin_connection() -> tuple[str, psycopg.Connection] | tuple[None, str]:
    """(role, autocommit connection to `postgres`) for the first role let in, else
    (None, why not)."""
    reasons = []
    for user in ("postgres", "root"):
        try:
            return user, psycopg.connect(host=PG_HOST, port=PG_PORT, user=user,
                                         dbname="postgres", connect_timeout=3, autocommit=True)
        except psycopg.OperationalError as exc:
            reasons.append(f"{user}: {str(exc).splitlines()[0]}")
    return None, "; ".join(reasons)


@contextmanager
def temporary_database(prefix: str) -> Iterator[str]:
    """A fresh database named ``<prefix>_<random>``; yields its SQLAlchemy URL."""
    user, admin = admin_connection()
    if user is None:
        pytest.skip(f"PostgreSQL at {PG_HOST}:{PG_PORT} is unreachable ({admin})")
    name = f"{prefix}_{secrets.token_hex(6)}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://{user}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()

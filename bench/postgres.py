"""A throwaway PostgreSQL database for a benchmark, next to an admin URL the user gives."""

import os
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg


class ServerUnreachable(Exception):
    """The PostgreSQL server of the admin URL did not let us in (the first line of why)."""


@contextmanager
def fresh_database(admin_url: str, prefix: str) -> Iterator[tuple[str, psycopg.Connection]]:
    """Create ``<prefix>_<random>`` on the server of ``admin_url`` (a SQLAlchemy
    ``postgresql+psycopg://`` or a libpq ``postgresql://`` URL); yield its SQLAlchemy URL and
    the admin connection; drop it afterwards. Raises ServerUnreachable if the server cannot
    be reached."""
    libpq = admin_url.replace("postgresql+psycopg://", "postgresql://", 1)
    name = f"{prefix}_{os.urandom(4).hex()}"
    try:
        connection = psycopg.connect(libpq, connect_timeout=3, autocommit=True)
    except psycopg.OperationalError as exc:
        raise ServerUnreachable(str(exc).splitlines()[0] if str(exc) else "refused") from None
    with connection as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            base = libpq.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
            yield f"{base}/{name}", admin
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

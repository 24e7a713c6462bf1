"""Fixtures of the metering tests: a signing key, a rate card, and ledgers on both backends.

The ledger suite runs on a SQLite file per test and on the PostgreSQL server at
127.0.0.1:5432 (trust auth): one database per test session, named zkmeter_test_<random>,
migrated once, truncated between tests, dropped at the end. Without a reachable server the
PostgreSQL cases skip, saying why.
"""


import pytest
from nacl.signing import SigningKey
from sqlalchemy import text

from prover.ledger import Ledger, make_engine, migrate
from prover.ledger.schema import metadata
from prover.metering import Meter
from prover.ratecard import loads_rate_card
from tests.accounts import STANDARD_USERS, enroll
from tests.postgres import temporary_database

PROVIDER_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")

RATE_CARD_TOML = """
version = 7
unit = "test-unit"

[models."gpt-4o"]
input = 3
cached_input = 1
output = 10
reasoning = 7

[models."gpt-4"]
input = 30
cached_input = 30
output = 60
reasoning = 60

[models."custom-llm"]
input = 2
cached_input = 1
output = 4
reasoning = 4
"""


@pytest.fixture(scope="session")
def signing_key():
    return SigningKey(PROVIDER_SEED)


@pytest.fixture(scope="session")
def rate_card():
    return loads_rate_card(RATE_CARD_TOML)


@pytest.fixture(scope="session")
def pg_url():
    """URL of this session's own PostgreSQL database (created, migrated, dropped)."""
    with temporary_database("zkmeter_test") as url:
        engine = make_engine(url)
        migrate(engine)
        engine.dispose()
        yield url


def _truncate(url):
    engine = make_engine(url)
    with engine.begin() as conn:
        names = ", ".join(t.name for t in metadata.sorted_tables)
        conn.execute(text(f"TRUNCATE {names} CASCADE"))
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    """A fresh, migrated ledger database on each backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
        engine = make_engine(url)
        migrate(engine)
        engine.dispose()
        yield url
    else:
        url = request.getfixturevalue("pg_url")
        _truncate(url)
        yield url


@pytest.fixture
def make_meter(db_url, signing_key, rate_card):
    """Build meters on the test's database (each with its own engine); disposed at the end."""
    made = []

    def factory(**kwargs):
        ledger = Ledger.from_url(db_url, provider_id=bytes(signing_key.verify_key),
                                 run_migrations=False)
        if not made:  # the standard users, under one account
            enroll(ledger.engine, ledger.provider_id, STANDARD_USERS)
        meter = Meter(ledger=ledger, signing_key=signing_key,
                      rate_card=kwargs.pop("rate_card", rate_card), **kwargs)
        made.append(meter)
        return meter

    yield factory
    for meter in made:
        meter.ledger.dispose()

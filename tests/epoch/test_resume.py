"""Kill-and-resume: ``zkmeter epoch close`` killed with SIGKILL at several points, then run
again, publishes the byte-identical bundle an uninterrupted close publishes."""

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from prover.config import Settings
from prover.epoch.storage import EpochStore
from prover.ledger import Ledger
from prover.metering import Meter, UsageRequest
from prover.ratecard import load_rate_card
from tests.accounts import STANDARD_USERS, enroll
from verifier.bundle import parse_bundle, verify_bundle

LEAVES = 256


def cli_env(db_path, signing_key):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZKMETER_")}
    env.update({
        "ZKMETER_DATABASE_URL": f"sqlite:///{db_path}",
        "ZKMETER_SIGNING_KEY": bytes(signing_key).hex(),
        "ZKMETER_PROOF_WORKERS": "1",
        "ZKMETER_MIN_LEAVES": str(LEAVES),
        "ZKMETER_CONTRACT_ADDRESS": "0x" + "42" * 20,
        "ZKMETER_CHAIN_ID": "31337",
    })
    return env


def close_cmd():
    return [sys.executable, "-m", "prover.cli", "epoch", "close", "--json"]


def leaves_stored(db_path) -> int:
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5) as conn:
        try:
            return conn.execute("SELECT count(*) FROM epoch_leaves").fetchone()[0]
        except sqlite3.OperationalError:  # table not there yet
            return -1


def close_started(db_path) -> bool:
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5) as conn:
        try:
            return conn.execute("SELECT count(*) FROM epoch_closes").fetchone()[0] > 0
        except sqlite3.OperationalError:
            return False


def kill_when(db_path, env, predicate, deadline=120.0):
    """Start a close and SIGKILL it as soon as ``predicate(db_path)`` holds."""
    proc = subprocess.Popen(close_cmd(), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    start = time.monotonic()
    try:
        while not predicate(db_path):
            if proc.poll() is not None:
                pytest.fail("the close finished before the kill point was reached")
            if time.monotonic() - start > deadline:
                pytest.fail("kill point not reached in time")
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def store_is_unpublished(db_path) -> bool:
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5) as conn:
        return conn.execute("SELECT count(*) FROM epoch_closes WHERE bundle_json IS NOT NULL"
                            ).fetchone()[0] == 0


@pytest.fixture()
def two_identical_ledgers(tmp_path, signing_key):
    """A ledger with an epoch moved to `closing`, and a byte copy of its file."""
    a = tmp_path / "a.sqlite"
    ledger = Ledger.from_url(f"sqlite:///{a}", provider_id=bytes(signing_key.verify_key))
    enroll(ledger.engine, ledger.provider_id, STANDARD_USERS)
    meter = Meter(ledger=ledger, signing_key=signing_key,
                  rate_card=load_rate_card(Settings().rate_card))
    for i in range(60):
        meter.record(UsageRequest(idempotency_key=f"k{i}", user_id=f"user-{i % 23}",
                                  model="gpt-4o", input_tokens=100 + i, output_tokens=7 * i))
    epoch = ledger.current_epoch()
    ledger.close_epoch(epoch.id, next_rate_card_hash=meter.rate_card_hash, next_bit_size=32,
                       epoch_seconds=3600)
    ledger.dispose()
    b = tmp_path / "b.sqlite"
    shutil.copyfile(a, b)
    return a, b, epoch.id


@pytest.mark.slow
def test_killed_closes_resume_to_the_identical_bundle(two_identical_ledgers, signing_key):
    a, b, epoch_id = two_identical_ledgers
    done = subprocess.run(close_cmd(), env=cli_env(a, signing_key), capture_output=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    expected = EpochStore(Ledger.from_url(f"sqlite:///{a}", provider_id=bytes(
        signing_key.verify_key)).engine).bundle_json(epoch_id)

    env = cli_env(b, signing_key)
    kill_when(b, env, close_started)  # right after the close is recorded, before leaves
    first = leaves_stored(b)
    kill_when(b, env, lambda p: leaves_stored(p) >= first + 64)  # in the middle
    middle = leaves_stored(b)
    assert first < middle < LEAVES
    assert store_is_unpublished(b)
    kill_when(b, env, lambda p: leaves_stored(p) >= LEAVES - 16)  # near the end
    resumed = subprocess.run(close_cmd(), env=env, capture_output=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr.decode()

    store = EpochStore(Ledger.from_url(f"sqlite:///{b}", provider_id=bytes(
        signing_key.verify_key)).engine)
    got = store.bundle_json(epoch_id)
    assert got == expected
    bundle = parse_bundle(got)
    assert len(bundle.leaves) == LEAVES
    assert all(c.ok for c in verify_bundle(bundle))
    assert leaves_stored(b) == LEAVES  # nothing proved twice
    assert len(store.sealed_openings(epoch_id)) == LEAVES

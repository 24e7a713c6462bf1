"""Closes that race or restart: two closers at once on PostgreSQL, a resume with changed
settings, and SIGKILL of a closer with proof workers (they must exit with it)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prover.epoch.storage import EpochStore
from prover.metering import UsageRequest
from tests.faults.conftest import assert_one_short_line, cli_env, reference_bundle
from tests.faults.test_close_faults import CLOSE, count, wait_for
from verifier.bundle import parse_bundle

LEAVES = 32
pytestmark = pytest.mark.slow  # real CLI subprocesses, each proving a whole epoch


def record(services, first: int, events: int = 12) -> None:
    for i in range(first, first + events):
        services.meter.record(UsageRequest(idempotency_key=f"r-{i}", user_id=f"user-{i % 5}",
                                           model="gpt-4o", input_tokens=50 + i,
                                           output_tokens=i))


@pytest.mark.postgres
def test_two_closers_at_once(pg_url, services_factory):
    """Two ``zkmeter epoch close`` processes started together, two epochs in a row: one
    publishes; the other either publishes the same epoch first, fails with the clear
    "epoch N is not closing", or (when it starts after the first closer has published) is
    refused because the next epoch has no usage yet; never an IntegrityError or a
    traceback. Every bundle is the one an uninterrupted close publishes."""
    services = services_factory(pg_url, min_leaves=LEAVES)
    env = cli_env(pg_url, min_leaves=str(LEAVES))
    for round_ in range(2):
        record(services, 100 * round_)
        epoch_id = services.meter.ledger.current_epoch().id
        closers = [subprocess.Popen(CLOSE, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE) for _ in range(2)]
        results = [(p.wait(timeout=300), p.stdout.read().decode(), p.stderr.read().decode())
                   for p in closers]
        for p in closers:
            p.stdout.close()
            p.stderr.close()
        codes = sorted(code for code, _, _ in results)
        assert codes in ([0, 0], [0, 1]), results
        for code, _, err in results:
            if code == 1:
                assert_one_short_line(err)
                assert (f"epoch {epoch_id} is not closing" in err
                        or f"epoch {epoch_id + 1} has no usage since the last close" in err), err
            assert "IntegrityError" not in err and "Traceback" not in err
        assert services.meter.ledger.epoch(epoch_id).state == "closed"
        bundle = EpochStore(services.meter.ledger.engine).bundle_json(epoch_id)
        assert bundle == reference_bundle(services, epoch_id, min_leaves=LEAVES)
        assert count(pg_url, f"SELECT count(*) FROM epoch_openings WHERE epoch_id = {epoch_id}"
                     ) == LEAVES


def api_leaves_total(services, epoch_id: int) -> int | None:
    """``leaves_total`` of an epoch as GET /v1/epochs/{id} and gRPC GetEpoch answer it."""
    from prover.api.grpc_server import epoch_to_proto
    from prover.api.http import epoch_out

    (summary,) = services.store.summaries(limit=1, epoch_id=epoch_id, closed_only=True)
    http = epoch_out(summary).leaves_total
    grpc_ = epoch_to_proto(services.meter.ledger.epoch(epoch_id), services).leaves_total
    assert http == grpc_, (http, grpc_)
    return http


def kill_after_leaves(url: str, env: dict[str, str], leaves: int) -> None:
    proc = subprocess.Popen(CLOSE, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: count(url, "SELECT count(*) FROM epoch_leaves") >= leaves)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)


def test_resume_with_changed_settings(tmp_path, services_factory):
    """A close killed with ZKMETER_MIN_LEAVES=32 resumes with 32 leaves although the setting
    now says 1024 (and the API's leaves_total agrees); a resume with another contract or
    chain id is refused naming the setting, and nothing changes until it is set back."""
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    services = services_factory(url, min_leaves=LEAVES)
    record(services, 0)
    env = cli_env(url, min_leaves=str(LEAVES))
    kill_after_leaves(url, env, 4)
    epoch_id = 1
    stored = count(url, "SELECT count(*) FROM epoch_leaves")
    assert 4 <= stored < LEAVES
    assert api_leaves_total(services, epoch_id) == LEAVES

    for setting, value, named in [
            ("contract_address", "0x" + "43" * 20, "ZKMETER_CONTRACT_ADDRESS is now 0x4343"),
            ("chain_id", "1", "ZKMETER_CHAIN_ID is now 1")]:
        refused = subprocess.run(CLOSE, env=cli_env(url, min_leaves="1024", **{setting: value}),
                                 capture_output=True, timeout=120)
        assert refused.returncode == 1, refused.stderr.decode()
        assert_one_short_line(refused.stderr.decode())
        assert named in refused.stderr.decode()
        assert count(url, "SELECT count(*) FROM epoch_leaves") == stored
        assert services.meter.ledger.epoch(epoch_id).state == "closing"

    resumed = subprocess.run(CLOSE, env=cli_env(url, min_leaves="1024"), capture_output=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr.decode()
    store = EpochStore(services.meter.ledger.engine)
    bundle = store.bundle_json(epoch_id)
    assert bundle == reference_bundle(services, epoch_id, min_leaves=LEAVES)
    assert len(parse_bundle(bundle).leaves) == LEAVES
    status = store.status(epoch_id)
    assert (status.leaves_done, status.leaves_total) == (LEAVES, LEAVES)
    assert api_leaves_total(services, epoch_id) == LEAVES
    # the next epoch is closed with the new setting
    record(services, 1000)
    nxt = subprocess.run(CLOSE, env=cli_env(url, min_leaves="128"), capture_output=True,
                         timeout=300)
    assert nxt.returncode == 0, nxt.stderr.decode()
    assert store.status(epoch_id + 1).leaves_total == 128
    assert api_leaves_total(services, epoch_id + 1) == 128
    assert len(parse_bundle(store.bundle_json(epoch_id + 1)).leaves) == 128


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_exit_with_a_killed_closer(tmp_path, services_factory):
    """SIGKILL of a close with two proof workers: the workers and multiprocessing's resource
    tracker are gone within a few seconds; the resumed close is identical."""
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    services = services_factory(url, min_leaves=64)
    record(services, 0)
    env = cli_env(url, min_leaves="64", proof_workers="2")
    proc = subprocess.Popen(CLOSE, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: count(url, "SELECT count(*) FROM epoch_leaves") >= 8)
        workers = descendants(proc.pid)
        names = {pid: cmdline(pid) for pid in workers}
        assert sum("spawn_main" in name for name in names.values()) == 2, names
        assert any("resource_tracker" in name for name in names.values()), names
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    started = time.monotonic()
    while any(alive(pid) for pid in workers) and time.monotonic() - started < 10:
        time.sleep(0.1)
    left = {pid for pid in workers if alive(pid)}
    for pid in left:  # do not leave them behind even when the test fails
        os.kill(pid, signal.SIGKILL)
    print(f"SIGKILL: {len(workers)} children gone {time.monotonic() - started:.2f} s after "
          "the kill")
    assert not left, f"still running {time.monotonic() - started:.1f} s after the kill: {left}"
    assert time.monotonic() - started < 3.0
    resumed = subprocess.run(CLOSE, env=cli_env(url, min_leaves="64"), capture_output=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr.decode()
    bundle = EpochStore(services.meter.ledger.engine).bundle_json(1)
    assert bundle == reference_bundle(services, 1, min_leaves=64)

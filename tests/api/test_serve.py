"""``zkmeter serve``: both servers from the configuration, and a graceful drain on SIGTERM."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from prover.api.grpc_server import hash_api_key, new_api_key
from prover.api.serve import ingest_in_child, ingest_writers, usable_cpus
from prover.config import Settings
from prover.errors import ConfigError
from zkmeter.client import Client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (httpx.HTTPError, grpc.RpcError, OSError):
            pass
        time.sleep(0.1)
    pytest.fail("the server did not come up")


@pytest.fixture()
def server_env(tmp_path):
    key = new_api_key()
    grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZKMETER_")}
    env.update({
        "ZKMETER_DATABASE_URL": f"sqlite:///{tmp_path / 'serve.sqlite'}",
        "ZKMETER_SIGNING_KEY": "e1" + "".join(f"{i:02x}" for i in range(31)),
        "ZKMETER_API_KEY_HASHES": json.dumps({hash_api_key(key): "operator"}),
        "ZKMETER_GRPC_BIND": f"127.0.0.1:{grpc_port}",
        "ZKMETER_METRICS_BIND": f"127.0.0.1:{metrics_port}",
        "ZKMETER_HTTP_BIND": f"127.0.0.1:{http_port}",
        "ZKMETER_SHUTDOWN_GRACE_SECONDS": "2",
        "ZKMETER_PROOF_WORKERS": "1",
        "ZKMETER_CHAIN_ID": "31337",
        "ZKMETER_CONTRACT_ADDRESS": "0x" + "5e" * 20,
    })
    return env, key, grpc_port, http_port


def test_serve_runs_both_servers_and_drains_on_sigterm(server_env):
    env, key, grpc_port, http_port = server_env
    proc = subprocess.Popen([sys.executable, "-m", "prover.cli", "serve"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        target = f"127.0.0.1:{grpc_port}"
        base = f"http://127.0.0.1:{http_port}"
        wait_until(lambda: httpx.get(f"{base}/healthz", timeout=2).status_code == 200)
        with grpc.insecure_channel(target) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with Client(target, api_key=key) as zk:
            account = zk.register_account(payer=b"\xa1" * 20, asset=bytes(20),
                                          payer_x25519_public_key=b"\x09" * 32)
            zk.register_user("u", account.account_id)
            receipt = zk.record_usage(idempotency_key="s1", user_id="u", model="gpt-4o",
                                      input_tokens=3, output_tokens=4).receipt
            assert receipt.sequence == 1
            epoch = zk.close_epoch()
        bundle = httpx.get(f"{base}/v1/epochs/{epoch.epoch_id}/bundle", timeout=10)
        assert bundle.status_code == 200 and bundle.json()["epoch_id"] == epoch.epoch_id
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = proc.stderr.read().decode()
    assert "draining" in stderr
    assert "Traceback" not in stderr
    # the start-up log: who, where epochs settle, the database, the listen addresses
    from nacl.signing import SigningKey

    provider = bytes(SigningKey(bytes.fromhex(env["ZKMETER_SIGNING_KEY"])).verify_key).hex()
    assert f"provider id {provider}" in stderr
    assert f"settles on chain 31337, contract {env['ZKMETER_CONTRACT_ADDRESS']}" in stderr
    assert f"database {env['ZKMETER_DATABASE_URL']}" in stderr
    assert f"grpc 127.0.0.1:{grpc_port}, http 127.0.0.1:{http_port}" in stderr


def test_serve_refuses_a_placeholder_key(server_env):
    env, *_ = server_env
    env["ZKMETER_SIGNING_KEY"] = "changeme"
    proc = subprocess.run([sys.executable, "-m", "prover.cli", "serve"], env=env,
                          capture_output=True, timeout=60)
    assert proc.returncode == 2
    assert b"changeme" not in proc.stderr  # the secret is never echoed
    assert b"placeholder" in proc.stderr


@pytest.mark.parametrize(("extra", "args", "reason"), [
    ({}, [], b"needs PostgreSQL: SQLite has a single writer"),
    ({"ZKMETER_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:5432/test",
      "ZKMETER_INGEST_PROCESS": "true"}, ["--workers", "2"],
     b"cannot be combined with ZKMETER_INGEST_PROCESS"),
])
def test_serve_refuses_more_ingest_writers_than_the_setup_can_use(server_env, extra, args,
                                                                  reason):
    env, *_ = server_env
    env.update({"ZKMETER_INGEST_WRITERS": "2", **extra})
    proc = subprocess.run([sys.executable, "-m", "prover.cli", "serve", "--dev", *args],
                          env=env, capture_output=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count(reason) == 1  # refused before any worker starts
    assert b"Traceback" not in proc.stderr


def test_ingest_writers_follow_the_setting_on_postgresql():
    base = {"database_url": "postgresql+psycopg://u@h/db",
            "signing_key": "e1" + "".join(f"{i:02x}" for i in range(31))}
    assert ingest_writers(Settings(**base)) == 1  # the default, on either backend
    assert ingest_writers(Settings(**base, ingest_writers=3)) == 3
    with pytest.raises(ValueError, match="less than or equal to 8"):  # the pool has 15
        Settings(**base, ingest_writers=9)
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        Settings(**base, ingest_writers=0)


def test_settle_gc_freezes_start_up_objects_and_raises_the_thresholds():
    """In a fresh interpreter (the collector's settings are process-wide): what
    `zkmeter serve` does once started."""
    code = ("import gc; from prover.api.serve import settle_gc, SERVING_GC_THRESHOLDS as T; "
            "before = (gc.get_threshold(), gc.get_freeze_count()); settle_gc(); "
            "print(before[0] != T, before[1], gc.get_threshold() == T, gc.get_freeze_count())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout.split()
    assert out[0] == "True" and out[1] == "0"  # the interpreter's own settings before
    assert out[2] == "True"
    assert int(out[3]) > 10_000  # the modules and objects of start-up, no longer scanned


# --- ZKMETER_INGEST_PROCESS=auto: where the ingest transactions run ------------------------

def _children_running_spawn(pid: int) -> list[int]:
    """The multiprocessing children of ``pid`` (the ingest process; not the resource
    tracker, which is a fork of the interpreter with another entry point)."""
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids = f.read().split()
        except OSError:
            continue
        for kid in kids:
            try:
                with open(f"/proc/{kid}/cmdline", "rb") as f:
                    if b"spawn_main" in f.read():
                        found.append(int(kid))
            except OSError:
                continue
    return found


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two usable cores")
@pytest.mark.parametrize(("setting", "cores", "child", "line"), [
    (None, None, True, "ingest transactions in a child process (auto: 2 usable cores for 1 "
                       "serving process)"),
    (None, {0}, False, "ingest transactions in this process (auto: 1 usable core, a child "
                       "per serving process needs 2)"),
    ("false", None, False, "ingest transactions in this process (ZKMETER_INGEST_PROCESS=false)"),
    ("true", {0}, True, "ingest transactions in a child process (ZKMETER_INGEST_PROCESS=true)"),
])
def test_serve_runs_the_ingest_child_where_two_cores_are_free(server_env, setting, cores,
                                                             child, line):
    """The default (auto) follows the cores the process may use (its affinity here, as
    `taskset` or a container's cpuset sets it); true and false are obeyed. Either way a
    receipt comes back and the log says where the transactions run."""
    env, key, grpc_port, http_port = server_env
    env["ZKMETER_SIGNING_KEY"] = os.urandom(32).hex()  # the start-up log's line is checked
    if setting is not None:
        env["ZKMETER_INGEST_PROCESS"] = setting
    if len(os.sched_getaffinity(0)) > 2 and cores is None:
        cores = {0, 1}  # the parametrized line names two cores
    proc = subprocess.Popen(
        [sys.executable, "-m", "prover.cli", "serve", "--dev"], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=None if cores is None else (lambda: os.sched_setaffinity(0, cores)))
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{http_port}/healthz",
                                     timeout=2).status_code == 200)
        assert bool(_children_running_spawn(proc.pid)) is child
        with Client(f"127.0.0.1:{grpc_port}", api_key=key) as zk:
            account = zk.register_account(payer=b"\xa1" * 20, asset=bytes(20),
                                          payer_x25519_public_key=b"\x09" * 32)
            zk.register_user("u", account.account_id)
            reply = zk.record_usage(idempotency_key="k", user_id="u", model="gpt-4o",
                                    input_tokens=3, output_tokens=4)
            assert reply.receipt.sequence == 1 and not reply.replayed
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = proc.stderr.read().decode()
    assert stderr.count(line) == 1, stderr[-2000:]
    assert "Traceback" not in stderr


def _settings(**fields):
    return Settings(database_url="postgresql+psycopg://u@h/db",
                    signing_key="e1" + "".join(f"{i:02x}" for i in range(31)), **fields)


@pytest.mark.parametrize(("fields", "workers", "cpus", "escrow_given", "in_child", "why"), [
    ({}, 1, 2, False, True, "auto: 2 usable cores for 1 serving process"),
    ({}, 1, 1, False, False, "auto: 1 usable core, a child per serving process needs 2"),
    ({}, 2, 3, False, False, "auto: 3 usable cores, a child per serving process needs 4"),
    ({}, 2, 4, False, True, "auto: 4 usable cores for 2 serving processes"),
    ({}, 1, 8, True, False, "auto: the escrow was given as an object"),
    ({"ingest_writers": 2}, 1, 8, False, False, "auto: ZKMETER_INGEST_WRITERS > 1"),
    ({"ingest_process": "true"}, 4, 1, False, True, "ZKMETER_INGEST_PROCESS=true"),
    ({"ingest_process": "false"}, 1, 64, False, False, "ZKMETER_INGEST_PROCESS=false"),
])
def test_auto_starts_the_ingest_child_only_where_it_pays(fields, workers, cpus, escrow_given,
                                                         in_child, why):
    decided, reason = ingest_in_child(_settings(**fields), workers=workers,
                                      escrow_given=escrow_given, cpus=cpus)
    assert decided is in_child
    assert why in reason


def test_the_ingest_process_setting_is_true_false_or_auto():
    assert _settings().ingest_process == "auto"  # the default
    for word, value in (("AUTO", "auto"), (" auto ", "auto"), ("TRUE", True), ("1", True),
                        ("on", True), ("False", False), ("0", False), ("no", False)):
        assert _settings(ingest_process=word).ingest_process == value
    for word in ("maybe", "", "2", "child"):
        with pytest.raises(ValueError, match="ingest_process must be true, false or auto"):
            _settings(ingest_process=word)
    # auto with more writers keeps them; only an explicit true is refused with them
    assert ingest_writers(_settings(ingest_writers=2)) == 2
    with pytest.raises(ConfigError, match="cannot be combined"):
        ingest_writers(_settings(ingest_writers=2, ingest_process=True))


def _cgroup(tmp_path, proc_lines, files):
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "cgroup").write_text("".join(f"{line}\n" for line in proc_lines))
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return {"proc": proc, "cgroup_fs": root}


@pytest.mark.parametrize(("proc_lines", "files", "expected"), [
    # cgroup v2: the quota of the process's own cgroup, or of one above it; "max" is none
    (["0::/app/web"], {"app/web/cpu.max": "100000 100000\n"}, 1),
    (["0::/app/web"], {"app/web/cpu.max": "max 100000\n", "app/cpu.max": "150000 100000\n"}, 1),
    (["0::/app/web"], {"app/web/cpu.max": "max 100000\n"}, None),
    (["0::/"], {"cpu.max": "50000 100000\n"}, 1),  # half a core is still one
    # cgroup v1: the cpu controller's CFS quota and period; -1 is none
    (["4:memory:/x", "2:cpu,cpuacct:/docker/abc"],
     {"cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "100000\n",
      "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n"}, 1),
    (["1:cpu:/"], {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    # nothing readable: the affinity alone
    (["0::/gone"], {}, None),
    (["1:cpu:/"], {}, None),
    (["garbage", "0::/"], {"cpu.max": "nonsense 100000\n"}, None),  # unreadable: ignored
])
def test_usable_cpus_follow_a_cgroup_quota(tmp_path, proc_lines, files, expected):
    affinity = len(os.sched_getaffinity(0))
    found = usable_cpus(**_cgroup(tmp_path, proc_lines, files))
    assert found == (affinity if expected is None else min(affinity, expected))


def test_usable_cpus_of_this_process_are_its_affinity_at_most():
    assert 1 <= usable_cpus() <= len(os.sched_getaffinity(0))

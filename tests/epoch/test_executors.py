"""Every executor yields the same, byte-identical bundle: inline, process pool, and Ray."""

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from circuits.transcript import RangeProofContext
from prover.epoch.close import EpochInputs, MemoryLeafStore, close_epoch
from prover.epoch.executor import InlineExecutor, ProcessExecutor
from verifier.bundle import verify_bundle

SECRET = b"executor test master secret (32+ bytes)"
KEY = SigningKey(b"e" * 32)


def inputs() -> EpochInputs:
    ctx = RangeProofContext(chain_id=5, contract=b"\x07" * 20,
                            provider_id=bytes(KEY.verify_key), epoch_id=9)
    return EpochInputs(ctx=ctx, window_start=10, window_end=20, rate_card_hash=b"\x01" * 32,
                       bit_size=32, totals={f"u{i}": 17 * i for i in range(12)})


def close_with(executor) -> bytes:
    closed = close_epoch(inputs(), secret=SECRET, signing_key=KEY, store=MemoryLeafStore(),
                         executor=executor)
    assert all(c.ok for c in verify_bundle(closed.bundle))
    return closed.bundle.dumps().encode()


@pytest.fixture(scope="module")
def inline_bundle() -> bytes:
    return close_with(InlineExecutor())


def test_process_pool_gives_the_inline_bundle(inline_bundle):
    with ProcessExecutor(2, chunk=3) as executor:
        assert close_with(executor) == inline_bundle


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A local Ray head node on a free loopback port, stopped afterwards."""
    pytest.importorskip("ray", reason="ray is in the dev extra; install it to run this test")
    ray_bin = Path(sys.executable).with_name("ray")
    if not ray_bin.exists():
        ray_bin = Path(shutil.which("ray") or "ray")
    port = _free_port()
    temp = tmp_path_factory.mktemp("ray")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    start = [str(ray_bin), "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
             "--num-cpus=2", "--include-dashboard=false", f"--temp-dir={temp}",
             "--disable-usage-stats"]
    subprocess.run(start, check=True, capture_output=True, timeout=180, env=env)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        import ray

        ray.shutdown()
        subprocess.run([str(ray_bin), "stop", "--force"], capture_output=True, timeout=120,
                       env=env)


@pytest.mark.slow
def test_ray_cluster_gives_the_inline_bundle(inline_bundle, ray_cluster):
    from prover.epoch.executor import RayExecutor, make_executor

    executor = make_executor(ray_address=ray_cluster)
    assert isinstance(executor, RayExecutor)
    assert close_with(executor) == inline_bundle

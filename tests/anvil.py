"""A real anvil node for the tests (npm ``@foundry-rs/anvil``, see docs/TOOLCHAIN facts).

:func:`running_anvil` starts ``anvil --hardfork prague`` (the EVM the artifacts target) with
py-evm's 30M block gas limit on a free loopback port, waits until it answers JSON-RPC, yields
its URL and stops it afterwards; it skips the test when anvil is not installed. Standard
library only, so it also serves tests that run before web3 is importable.
"""

import json
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ANVIL = ROOT / "contracts" / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
START_SECONDS = 20  # a generous bound on start-up (about 0.1 s on an idle machine)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rpc(url: str, method: str, params=()):
    """One JSON-RPC call (anvil's accounts, its dev clock); returns its ``result``."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method,
                       "params": list(params)}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["result"]


@contextmanager
def running_anvil() -> Iterator[str]:
    """A fresh anvil node on 127.0.0.1 (random free port): yields its URL, then stops it."""
    if not ANVIL.exists():
        pytest.skip("anvil not installed: run `cd contracts && npm ci`")
    port = free_port()
    proc = subprocess.Popen(
        [str(ANVIL), "--host", "127.0.0.1", "--port", str(port), "--silent",
         "--hardfork", "prague", "--gas-limit", "30000000"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            try:
                rpc(url, "eth_chainId")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("anvil did not start") from None
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

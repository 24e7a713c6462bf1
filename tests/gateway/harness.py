"""Real processes on loopback for the gateway tests, the benchmark and the demo:
``zkmeter serve`` (gRPC + HTTP on a SQLite file), ``zkmeter upstream`` and ``zkmeter gateway``,
each a subprocess whose stdout and stderr go to a log file (the tests grep them)."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from prover.api.grpc_server import hash_api_key, new_api_key
from prover.ratecard import DEFAULT_RATE_CARD

SEED = "b7e151628aed2a6abf7158809cf4f3c762e7160f38b4da56a784d9045190cfef"
ZKMETER = [sys.executable, "-m", "prover.cli"]
WARMUP_USER = "warm-up"
ROOT = Path(__file__).resolve().parents[2]
EMBEDDING_PRICES = """
[models."text-embedding-3-small"]
input = 2
cached_input = 2
output = 0
reasoning = 0
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} not listening after {timeout} s")


class Proc:
    """One subprocess with a log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], workdir: Path,
                 port: int) -> None:
        self.name, self.args, self.env, self.workdir, self.port = name, args, env, workdir, port
        self.log = workdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Proc":
        out = self.log.open("ab")
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'proto'}", **self.env}
        self.proc = subprocess.Popen(self.args, env=env, cwd=self.workdir, stdout=out,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        out.close()
        wait_port(self.port, self.proc, self.log)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class Stack:
    """serve + upstream + gateway in ``workdir``; ``users`` get caller keys."""

    def __init__(self, workdir: Path, users: list[str], *, upstream_key: str = "sk-upstream",
                 gateway_env: dict[str, str] | None = None,
                 upstream_args: list[str] | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.api_key = new_api_key()  # the gateway's (role gateway)
        self.operator_key = new_api_key()  # opens the test's billing account
        self.grpc_port, self.http_port = free_port(), free_port()
        self.upstream_port, self.gateway_port = free_port(), free_port()
        self.metrics_port = free_port()
        self.caller_keys = {u: new_api_key() for u in [*users, WARMUP_USER]}
        rate_card = workdir / "ratecard.toml"  # the packaged card and an embedding model
        rate_card.write_text(DEFAULT_RATE_CARD.read_text() + EMBEDDING_PRICES)
        self.serve = Proc("serve", [*ZKMETER, "serve"], {
            "ZKMETER_DATABASE_URL": f"sqlite:///{workdir / 'zkmeter.sqlite'}",
            "ZKMETER_SIGNING_KEY": SEED, "ZKMETER_PROOF_WORKERS": "1",
            "ZKMETER_RATE_CARD": str(rate_card),
            "ZKMETER_CONTRACT_ADDRESS": "0x" + "42" * 20, "ZKMETER_CHAIN_ID": "31337",
            "ZKMETER_GRPC_BIND": f"127.0.0.1:{self.grpc_port}",
            "ZKMETER_METRICS_BIND": "127.0.0.1:0",
            "ZKMETER_HTTP_BIND": f"127.0.0.1:{self.http_port}",
            "ZKMETER_API_KEY_HASHES": json.dumps({hash_api_key(self.api_key): "gateway",
                                                  hash_api_key(self.operator_key): "operator"})},
            workdir, self.grpc_port)
        self.upstream_key = upstream_key
        self.upstream = Proc("upstream", [
            *ZKMETER, "upstream", "--bind", f"127.0.0.1:{self.upstream_port}",
            *(upstream_args or [])], {"ZKMETER_UPSTREAM_API_KEY": upstream_key}, workdir,
            self.upstream_port)
        self.gateway = Proc("gateway", [*ZKMETER, "gateway", "--upstream", self.upstream_url,
                                        "--bind", f"127.0.0.1:{self.gateway_port}"], {
            "ZKMETER_GATEWAY_UPSTREAM_API_KEY": upstream_key,
            "ZKMETER_GATEWAY_CALLER_KEYS": json.dumps(
                {hash_api_key(k): u for u, k in self.caller_keys.items()}),
            "ZKMETER_GATEWAY_ZKMETER_TARGET": f"127.0.0.1:{self.grpc_port}",
            "ZKMETER_GATEWAY_ZKMETER_API_KEY": self.api_key,
            "ZKMETER_GATEWAY_QUEUE_PATH": str(workdir / "gateway.sqlite"),
            "ZKMETER_GATEWAY_METRICS_BIND": f"127.0.0.1:{self.metrics_port}",
            "ZKMETER_GATEWAY_RETRY_SECONDS": "0.2",
            **(gateway_env or {})}, workdir, self.gateway_port)

    @property
    def upstream_url(self) -> str:
        return f"http://127.0.0.1:{self.upstream_port}/v1"

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}/v1"

    def start(self) -> "Stack":
        self.serve.start()
        wait_serving(f"127.0.0.1:{self.grpc_port}")
        self.register_users()
        self.upstream.start()
        self.gateway.start()
        self.warm_up()
        return self

    def warm_up(self) -> None:
        """One request end to end, so zkmeter serve has loaded its tokenizer (seconds on a
        busy machine: longer than the gateway's report timeout) before the tests run."""
        auth = {"authorization": f"Bearer {self.caller_keys[WARMUP_USER]}"}
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "warm up"}]}
        reply = httpx.post(f"{self.gateway_url}/chat/completions", json=body, headers=auth,
                           timeout=60)
        request_id = reply.headers["x-request-id"]
        deadline = time.monotonic() + 60
        while httpx.get(f"{self.gateway_url}/zkmeter/receipts/{request_id}", headers=auth,
                        timeout=60).status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("the warm-up request got no receipt")
            time.sleep(0.1)

    def register_users(self) -> None:
        """Usage needs a billing account: put every caller's user under one (idempotent)."""
        from zkmeter.client import Client

        with Client(f"127.0.0.1:{self.grpc_port}", api_key=self.operator_key) as zk:
            account = zk.register_account(payer=b"\xa1" * 20, asset=bytes(20),
                                          payer_x25519_public_key=b"\x09" * 32)
            for user in self.caller_keys:
                zk.register_user(user, account.account_id)

    def stop(self) -> None:
        for proc in (self.gateway, self.upstream, self.serve):
            proc.stop()

    def logs(self) -> str:
        return "".join(p.log.read_text(errors="replace") for p in
                       (self.serve, self.upstream, self.gateway) if p.log.exists())


def wait_serving(target: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                time.sleep(0.1)
    raise RuntimeError(f"zkmeter serve at {target} not serving after {timeout} s")

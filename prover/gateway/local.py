"""The local upstream and a gateway in front of it, on loopback ports, served by uvicorn on
one event loop in a background thread (``zkmeter demo``)."""

import asyncio
import threading
from pathlib import Path
from typing import Any

import uvicorn
from pydantic import SecretStr

from prover.api.grpc_server import hash_api_key, new_api_key
from prover.gateway.app import GatewayApp
from prover.gateway.config import GatewaySettings
from prover.gateway.upstream import UpstreamApp, UpstreamOptions


def _config(app: Any) -> uvicorn.Config:
    return uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                          access_log=False, lifespan="on", loop="asyncio")


async def _start(server: uvicorn.Server) -> tuple["asyncio.Task[None]", int]:
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise OSError("a local server could not start")
        await asyncio.sleep(0.01)
    return task, int(server.servers[0].sockets[0].getsockname()[1])


class LocalGateway:
    """``zkmeter upstream`` + ``zkmeter gateway`` for ``users`` (each gets a caller key)."""

    def __init__(self, *, zkmeter_target: str, zkmeter_api_key: str, users: list[str],
                 workdir: Path) -> None:
        self.caller_keys = {user: new_api_key() for user in users}
        upstream_key = new_api_key()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._servers: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []

        async def start() -> tuple[int, int]:
            upstream = uvicorn.Server(_config(UpstreamApp(UpstreamOptions(
                api_key=upstream_key))))
            up_task, up_port = await _start(upstream)
            self._servers.append((upstream, up_task))
            settings = GatewaySettings(
                upstream_url=f"http://127.0.0.1:{up_port}/v1",
                upstream_api_key=SecretStr(upstream_key),
                caller_keys={hash_api_key(k): u for u, k in self.caller_keys.items()},
                zkmeter_target=zkmeter_target, zkmeter_api_key=SecretStr(zkmeter_api_key),
                queue_path=workdir / "gateway.sqlite")
            gateway = uvicorn.Server(_config(GatewayApp(settings)))
            gw_task, gw_port = await _start(gateway)
            self._servers.append((gateway, gw_task))
            return up_port, gw_port

        self.upstream_port, self.port = asyncio.run_coroutine_threadsafe(
            start(), self.loop).result(timeout=60)
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        """Stop the gateway (finishing its reports), then the upstream."""
        async def stop() -> None:
            for server, task in reversed(self._servers):
                server.should_exit = True
                await task

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(timeout=60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        self.loop.close()

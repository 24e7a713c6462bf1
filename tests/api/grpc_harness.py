"""A real gRPC server on a loopback port, run on its own event loop in a background thread."""

import asyncio
import threading

from prover.api.grpc_server import RunningServer, create_server


class ServerThread:
    """Start ``create_server(services, **options)`` on 127.0.0.1:<free port>; ``stop()``."""

    def __init__(self, services, **options) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        options.setdefault("bind", "127.0.0.1:0")
        self.running: RunningServer = asyncio.run_coroutine_threadsafe(
            create_server(services, **options), self.loop).result(timeout=30)
        self.target = f"127.0.0.1:{self.running.port}"

    def stop(self, grace: float = 0.0) -> None:
        asyncio.run_coroutine_threadsafe(self.running.stop(grace), self.loop).result(timeout=60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        self.loop.close()

"""A loopback TCP proxy for fault injection: put it between zkmeter and PostgreSQL, then make
the database refuse connections, black-hole them (a network partition) or cut them.

Modes (``FaultProxy.mode``):

* ``"pass"``: bytes flow both ways (the healthy network);
* ``"blackhole"``: connections are accepted and every byte either way is read and dropped: the
  client never hears back, exactly like a partition in which the kernel still ACKs (no TCP
  timeout fires; only the client's own deadline helps);
* ``"refuse"``: the listening socket is closed, so new connections get ECONNREFUSED; existing
  ones are cut. ``mode = "pass"`` listens again on the same port.

``cut()`` closes every open connection (both sides) without changing the mode. Threads only, no
asyncio, so it runs beside any code under test.
"""

import contextlib
import select
import socket
import threading
from collections.abc import Iterator

MODES = ("pass", "blackhole", "refuse")


class FaultProxy:
    """127.0.0.1:<port> -> ``target`` with switchable faults (module docstring)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._mode = "pass"
        self._lock = threading.Lock()
        self._pairs: set[tuple[socket.socket, socket.socket]] = set()
        self._closed = False
        self._listener = self._listen(0)
        self.port: int = self._listener.getsockname()[1]
        self._accepting = self._start_accepting()

    # --- control ------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        with self._lock:
            previous, self._mode = self._mode, mode
        if mode == "refuse" and previous != "refuse":
            self._stop_listening()
            self.cut()
        elif mode != "refuse" and previous == "refuse":
            self._listener = self._listen(self.port)
            self._accepting = self._start_accepting()

    def cut(self) -> None:
        """Close every open connection, both sides."""
        with self._lock:
            pairs, self._pairs = self._pairs, set()
        for pair in pairs:
            for sock in pair:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def connections(self) -> int:
        """Open proxied connections."""
        with self._lock:
            return len(self._pairs)

    def url(self, database_url: str) -> str:
        """``database_url`` with its host:port replaced by the proxy's."""
        host, port = self.target
        return database_url.replace(f"@{host}:{port}/", f"@127.0.0.1:{self.port}/")

    def close(self) -> None:
        self._closed = True
        self._stop_listening()
        self.cut()

    def __enter__(self) -> "FaultProxy":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- machinery ----------------------------------------------------------------------

    @staticmethod
    def _listen(port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(64)
        return sock

    def _stop_listening(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._accepting.join(timeout=5)

    def _start_accepting(self) -> threading.Thread:
        thread = threading.Thread(target=self._accept_loop, args=(self._listener,),
                                  daemon=True)
        thread.start()
        return thread

    def _accept_loop(self, listener: socket.socket) -> None:
        while not self._closed:
            try:
                ready, _, _ = select.select([listener], [], [], 0.1)
                if not ready:
                    continue
                client, _ = listener.accept()
            except (OSError, ValueError):  # the listener was closed
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            pair = (client, upstream)
            with self._lock:
                self._pairs.add(pair)
            threading.Thread(target=self._pump, args=(pair,), daemon=True).start()

    def _pump(self, pair: tuple[socket.socket, socket.socket]) -> None:
        client, upstream = pair
        peers = {client: upstream, upstream: client}
        try:
            while True:
                with self._lock:
                    if pair not in self._pairs:
                        return
                ready, _, _ = select.select(list(peers), [], [], 0.1)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if self._mode == "pass":
                        peers[sock].sendall(data)
                    # blackhole: read and drop
        except (OSError, ValueError):
            return
        finally:
            with self._lock:
                self._pairs.discard(pair)
            for sock in pair:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()


@contextlib.contextmanager
def fault_proxy(target: tuple[str, int]) -> Iterator[FaultProxy]:
    """A FaultProxy for the duration of a ``with`` block."""
    proxy = FaultProxy(target)
    try:
        yield proxy
    finally:
        proxy.close()

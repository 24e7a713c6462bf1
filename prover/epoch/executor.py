"""Where range proofs are computed: in process, over a local process pool, or over Ray.

A proof job carries only what one leaf needs (tag, value, blinding, and the seed of its proof
randomness); the master secret never leaves the closing process. Jobs are sent in chunks to
amortise inter-process overhead, and results come back as they finish so the caller can
persist each leaf at once.
"""

import multiprocessing
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from circuits.rangeproof import prove
from circuits.transcript import RangeProofContext
from prover.epoch.derive import proof_rng
from prover.errors import ConfigError
from prover.workers import orphan_watchdog


@dataclass(frozen=True, slots=True)
class LeafJob:
    """One leaf to commit and prove. Its repr shows the tag only: the value, the blinding and
    the seed of the proof randomness are secrets (they open the commitment)."""

    tag: bytes
    value: int = field(repr=False)
    blinding: int = field(repr=False)
    seed: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class LeafResult:
    """A finished leaf."""

    tag: bytes
    commitment: bytes
    proof: bytes


def prove_leaf(ctx: RangeProofContext, n: int, job: LeafJob) -> LeafResult:
    """Commit to the job's value and prove it in [0, 2^n), deterministically from its seed."""
    source = proof_rng(job.seed)
    proof, (commitment,) = prove(
        ctx.transcript(), values=[job.value], blindings=[job.blinding], n=n,
        rng=lambda: next(source),
    )
    return LeafResult(job.tag, commitment, proof)


def prove_chunk(ctx: RangeProofContext, n: int, jobs: Sequence[LeafJob]) -> list[LeafResult]:
    """prove_leaf over a chunk (the unit of work sent to a worker)."""
    return [prove_leaf(ctx, n, job) for job in jobs]


def _chunks(jobs: Sequence[LeafJob], size: int) -> list[Sequence[LeafJob]]:
    return [jobs[i : i + size] for i in range(0, len(jobs), size)]


class ProofExecutor(ABC):
    """Runs leaf jobs and yields results as they finish (in any order)."""

    name: str

    @abstractmethod
    def run(
        self, ctx: RangeProofContext, n: int, jobs: Sequence[LeafJob]
    ) -> Iterator[list[LeafResult]]:
        """Yield lists of finished leaves until every job is done."""

    def close(self) -> None:  # noqa: B027 - a no-op for executors without workers
        """Release workers."""

    def __enter__(self) -> "ProofExecutor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class InlineExecutor(ProofExecutor):
    """Proves in the calling process (one core)."""

    name = "inline"

    def __init__(self, chunk: int = 8) -> None:
        self.chunk = chunk

    def run(
        self, ctx: RangeProofContext, n: int, jobs: Sequence[LeafJob]
    ) -> Iterator[list[LeafResult]]:
        for part in _chunks(jobs, self.chunk):
            yield prove_chunk(ctx, n, part)


class ProcessExecutor(ProofExecutor):
    """Proves over a local pool of worker processes (spawned, so safe beside threads)."""

    name = "processes"

    def __init__(self, workers: int | None = None, chunk: int = 8) -> None:
        self.workers = workers or os.cpu_count() or 1
        self.chunk = chunk
        self._pool: ProcessPoolExecutor | None = None

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=orphan_watchdog, initargs=(os.getpid(),),  # exit with the parent
            )
        return self._pool

    def run(
        self, ctx: RangeProofContext, n: int, jobs: Sequence[LeafJob]
    ) -> Iterator[list[LeafResult]]:
        pool = self._get_pool()
        pending: set[Future[list[LeafResult]]] = {
            pool.submit(prove_chunk, ctx, n, part) for part in _chunks(jobs, self.chunk)
        }
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
        finally:
            for future in pending:
                future.cancel()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


@dataclass(frozen=True, slots=True)
class RayTls:
    """Ray's own TLS settings (its gRPC channels between driver, head and workers), passed
    to Ray through the environment variables it reads: ``RAY_USE_TLS``,
    ``RAY_TLS_SERVER_CERT``, ``RAY_TLS_SERVER_KEY``, ``RAY_TLS_CA_CERT``. Every node of the
    cluster must be started with the same settings (docs/security.md)."""

    cert: str
    key: str
    ca: str

    def environment(self) -> dict[str, str]:
        """The variables Ray reads at ``ray.init``."""
        return {"RAY_USE_TLS": "1", "RAY_TLS_SERVER_CERT": self.cert,
                "RAY_TLS_SERVER_KEY": self.key, "RAY_TLS_CA_CERT": self.ca}


_LOOPBACK = ("127.", "localhost", "[::1]", "::1")


def check_ray_transport(address: str, tls: RayTls | None, *, allow_plaintext: bool) -> None:
    """Proof jobs carry values and blindings (they open the commitments): refuse to send them
    in the clear to a Ray head that is not on this machine, unless the operator says the
    network is trusted (``ZKMETER_RAY_ALLOW_PLAINTEXT``)."""
    host = address.removeprefix("ray://").rsplit(":", 1)[0]
    if tls is None and not allow_plaintext and not host.startswith(_LOOPBACK):
        raise ConfigError("ZKMETER_RAY_ADDRESS is not on this machine and Ray TLS is not "
                         "configured (ZKMETER_RAY_TLS_CERT_FILE, _KEY_FILE, _CA_FILE): proof "
                         "jobs carry values and blindings; set ZKMETER_RAY_ALLOW_PLAINTEXT=1 "
                         "only for a network you trust")


class RayExecutor(ProofExecutor):
    """Proves on a Ray cluster (``ZKMETER_RAY_ADDRESS``); each chunk is one Ray task.

    Trust: every Ray node sees the values and blindings of the leaves it proves (the master
    secret never leaves this process). Each result is checked here before it is signed, so a
    faulty node cannot get a bad proof signed, but a node can read what it is sent."""

    name = "ray"

    def __init__(self, address: str, chunk: int = 16, *, tls: RayTls | None = None,
                 allow_plaintext: bool = False) -> None:
        check_ray_transport(address, tls, allow_plaintext=allow_plaintext)
        if tls is not None:
            os.environ.update(tls.environment())  # Ray reads its TLS settings from here
        import ray  # optional dependency: only when a cluster address is configured

        self._ray: Any = ray
        if not ray.is_initialized():
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
        self._remote = ray.remote(prove_chunk)
        self.chunk = chunk

    def run(
        self, ctx: RangeProofContext, n: int, jobs: Sequence[LeafJob]
    ) -> Iterator[list[LeafResult]]:
        ray = self._ray
        pending = [self._remote.remote(ctx, n, list(part)) for part in _chunks(jobs, self.chunk)]
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    yield ray.get(ref)
        finally:
            for ref in pending:
                ray.cancel(ref)


def make_executor(*, workers: int | None = None, ray_address: str | None = None,
                  ray_tls: RayTls | None = None, ray_allow_plaintext: bool = False
                  ) -> ProofExecutor:
    """Ray when an address is configured, else a process pool (inline for one worker)."""
    if ray_address:
        return RayExecutor(ray_address, tls=ray_tls, allow_plaintext=ray_allow_plaintext)
    if workers == 1:
        return InlineExecutor()
    return ProcessExecutor(workers)

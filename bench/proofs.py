"""Range-proof benchmark: ``python -m bench.proofs --json``.

For each backend: median milliseconds to prove and to verify 32x1, 64x1 and 32x16
(bits x values), and the batch verification time per proof for 1,024 single 32-bit proofs
(the proofs are made once, on the fastest backend; only verification is timed per backend).
Goals (issue 2, 2 cores, mcl): prove 32-bit <= 10 ms, verify <= 2 ms, batch <= 0.5 ms per
proof; the pure-Python backend within 10x of mcl.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from circuits.backend import GroupBackend, available_backends, get_backend
from circuits.rangeproof import Statement, batch_verify, prove, random_scalar, verify
from circuits.transcript import RangeProofContext

CONTEXT = RangeProofContext(chain_id=1, contract=bytes(20), provider_id=bytes(32), epoch_id=1)
SHAPES = [(32, 1), (64, 1), (32, 16)]


def _median_ms(fn: Callable[[], object], reps: int) -> float:
    fn()  # warm-up: generators, caches
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return round(statistics.median(times), 3)


def _shape(backend: GroupBackend, n: int, m: int, reps: int) -> dict[str, float]:
    values = [random_scalar() % (1 << n) for _ in range(m)]
    blindings = [random_scalar() for _ in range(m)]

    def do_prove() -> tuple[bytes, list[bytes]]:
        return prove(CONTEXT.transcript(), values=values, blindings=blindings, n=n,
                     backend=backend)

    proof, commitments = do_prove()
    return {
        "prove_ms": _median_ms(do_prove, reps),
        "verify_ms": _median_ms(
            lambda: verify(CONTEXT.transcript(), proof, commitments, n=n, backend=backend), reps
        ),
    }


def run(backends: list[str], batch: int, reps: int) -> dict[str, Any]:
    """Measure every backend; returns the JSON-ready report."""
    maker = get_backend()
    proofs = [
        prove(CONTEXT.transcript(), values=[random_scalar() % 2**32], blindings=[random_scalar()],
              n=32, backend=maker)
        for _ in range(batch)
    ]
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "batch_size": batch,
        "backends": {},
    }
    for name in backends:
        backend = get_backend(name)
        slow = name != "mcl"
        result: dict[str, Any] = {}
        for n, m in SHAPES:
            result[f"{n}x{m}"] = _shape(backend, n, m, max(1, reps // (8 if slow else 1) // m))
        statements = [Statement(CONTEXT.transcript(), p, c, 32) for p, c in proofs]
        start = time.perf_counter()
        batch_verify(statements, backend=backend)
        elapsed = (time.perf_counter() - start) * 1e3
        result["batch_verify_ms_per_proof"] = round(elapsed / batch, 4)
        report["backends"][name] = result
    if "mcl" in report["backends"] and "python" in report["backends"]:
        mcl, py = report["backends"]["mcl"], report["backends"]["python"]
        report["python_over_mcl"] = {
            "prove_32x1": round(py["32x1"]["prove_ms"] / mcl["32x1"]["prove_ms"], 1),
            "verify_32x1": round(py["32x1"]["verify_ms"] / mcl["32x1"]["verify_ms"], 1),
            "batch": round(py["batch_verify_ms_per_proof"] / mcl["batch_verify_ms_per_proof"], 1),
        }
    return report


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--backends", default=",".join(b for b in available_backends()
                                                        if b != "pyecc"))
    parser.add_argument("--batch", type=int, default=1024, help="proofs in the batch")
    parser.add_argument("--reps", type=int, default=32, help="repetitions (mcl, 32x1)")
    args = parser.parse_args(argv)
    report = run([b for b in args.backends.split(",") if b], args.batch, args.reps)
    if args.json:
        print(json.dumps(report))
    else:
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

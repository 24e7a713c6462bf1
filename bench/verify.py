"""Bundle verification benchmark: ``python -m bench.verify --leaves 1024 --json``.

Closes one epoch of ``--leaves`` users through the real pipeline, then times what
``zkmeter-verify bundle`` does: every check of the bundle, the range proofs batch-verified, and
next to it the proofs verified one by one. Goal (issue 7): <= 0.5 ms per proof (batch) on
2 cores.
"""

import argparse
import json
import sys
import time

from nacl.signing import SigningKey

from circuits.backend import get_backend
from circuits.rangeproof import verify
from circuits.transcript import RangeProofContext
from prover.epoch.close import EpochInputs, MemoryLeafStore, close_epoch
from prover.epoch.executor import make_executor
from verifier.bundle import check_range_proofs, parse_bundle, verify_bundle


def main(argv: list[str] | None = None) -> int:
    """Make a bundle, verify it three ways, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leaves", type=int, default=1024)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    key = SigningKey.generate()
    ctx = RangeProofContext(chain_id=1, contract=bytes(20), provider_id=bytes(key.verify_key),
                            epoch_id=1)
    totals = {f"u{i}": i * 13 for i in range(args.leaves)}
    inputs = EpochInputs(ctx=ctx, window_start=0, window_end=1, rate_card_hash=bytes(32),
                         bit_size=32, totals=totals)
    with make_executor() as executor:
        closed = close_epoch(inputs, secret=b"b" * 32, signing_key=key, store=MemoryLeafStore(),
                             executor=executor)
    text = closed.bundle.dumps()
    start = time.perf_counter()
    bundle = parse_bundle(text)
    checks = verify_bundle(bundle)
    whole = time.perf_counter() - start
    if not all(c.ok for c in checks):
        raise SystemExit("the benchmark bundle does not verify")
    start = time.perf_counter()
    check_range_proofs(bundle)
    batch = time.perf_counter() - start
    start = time.perf_counter()
    for leaf in bundle.leaves:
        verify(ctx.transcript(), leaf.proof, [leaf.commitment], n=32)
    single = time.perf_counter() - start
    count = len(bundle.leaves)
    report = {
        "leaves": count, "backend": get_backend().name,
        "whole_bundle_s": round(whole, 3),
        "batch_ms_per_proof": round(batch / count * 1e3, 4),
        "single_ms_per_proof": round(single / count * 1e3, 4),
    }
    print(json.dumps(report) if args.json else json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Epoch-close benchmark: ``python -m bench.epoch --users 1024 --json``.

Closes one epoch of N users (random 20-bit totals, every user with an X25519 key) through
the real pipeline with a local process pool, and reports users per second for the whole
close with the phase split: derive (tags, blindings, seeds), commit_and_prove (the workers:
one Pedersen commitment and one 32-bit range proof per leaf), tree, sign, seal.
Goal (issue 5): >= 150 users/s on 2 cores.
"""

import argparse
import json
import os
import secrets
import sys
import time

from nacl.public import PrivateKey
from nacl.signing import SigningKey

from circuits.backend import get_backend
from circuits.transcript import RangeProofContext
from prover.epoch.close import EpochInputs, MemoryLeafStore, close_epoch
from prover.epoch.executor import make_executor


def main(argv: list[str] | None = None) -> int:
    """Run one close and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    signing_key = SigningKey.generate()
    ctx = RangeProofContext(chain_id=31337, contract=bytes(20),
                            provider_id=bytes(signing_key.verify_key), epoch_id=1)
    totals = {f"user-{i}": secrets.randbelow(1 << 20) for i in range(args.users)}
    keys = {u: bytes(PrivateKey.generate().public_key) for u in totals}
    inputs = EpochInputs(ctx=ctx, window_start=0, window_end=3600,
                         rate_card_hash=bytes(32), bit_size=32, totals=totals)
    with make_executor(workers=args.workers) as executor:
        start = time.perf_counter()
        closed = close_epoch(inputs, secret=secrets.token_bytes(32), signing_key=signing_key,
                             store=MemoryLeafStore(), executor=executor, user_keys=keys)
        elapsed = time.perf_counter() - start
    report = {
        "users": args.users,
        "leaves": len(closed.bundle.leaves),
        "workers": args.workers,
        "backend": get_backend().name,
        "seconds": round(elapsed, 3),
        "users_per_s": round(args.users / elapsed, 1),
        "phases_s": {k: round(v, 3) for k, v in closed.timings.items()},
        "note": "commit_and_prove includes starting the worker processes",
    }
    print(json.dumps(report) if args.json else json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A short proof round trip (``make demo`` until the end-to-end demo lands).

Commits to a few usage totals, proves them in range, verifies the proofs one by one and in a
batch, and shows that the same proof is refused under another epoch's context.
"""

import secrets
import sys
import time

from circuits import RangeProofContext, VerificationError, batch_verify, get_backend, prove, verify
from circuits.constants import CURVE_ORDER
from circuits.pedersen import commit, sum_commitments
from circuits.rangeproof import Statement


def main() -> int:
    """Run the round trip and print what happened; exit 0 on success."""
    backend = get_backend()
    ctx = RangeProofContext(chain_id=31337, contract=bytes(20), provider_id=bytes(32), epoch_id=1)
    totals = [1_250, 98_304, 7, 0]
    print(f"backend: {backend.name}; proving {len(totals)} 32-bit usage totals")
    statements = []
    blindings = [secrets.randbelow(CURVE_ORDER - 1) + 1 for _ in totals]
    for total, blinding in zip(totals, blindings, strict=True):
        start = time.perf_counter()
        proof, (commitment,) = prove(ctx.transcript(), values=[total], blindings=[blinding], n=32)
        elapsed = (time.perf_counter() - start) * 1e3
        verify(ctx.transcript(), proof, [commitment], n=32)
        print(f"  C = {commitment.hex()[:16]}...  proof {len(proof)} B  prove {elapsed:.1f} ms  ok")
        statements.append(Statement(ctx.transcript(), proof, [commitment], 32))
    batch_verify(statements)
    print("batch verification of all proofs: ok")
    total_blinding = sum(blindings) % CURVE_ORDER
    expected = commit(sum(totals), total_blinding)
    agg = sum_commitments([st.commitments[0] for st in statements])
    print(f"sum of commitments opens to V = {sum(totals)}: {agg == expected}")
    other = RangeProofContext(chain_id=31337, contract=bytes(20), provider_id=bytes(32), epoch_id=2)
    try:
        verify(other.transcript(), statements[0].proof, statements[0].commitments, n=32)
    except VerificationError:
        print("same proof under epoch 2: rejected (bound to its context)")
    else:
        print("same proof under epoch 2: ACCEPTED - this is a bug")
        return 1
    return 0 if agg == expected else 1


if __name__ == "__main__":
    sys.exit(main())

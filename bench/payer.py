"""Payer-check benchmark: ``python -m bench.payer --leaves 1024 --json``.

Closes one billing account's epoch of ``--leaves`` users through the real pipeline (real
commitments and range proofs under the account id, a local process pool), signs each user's
receipt chain (two receipts a user) and the payer statement sealed to the payer, then times
what ``zkmeter-verify payer`` does after reading its files: opening the sealed statement, and
:func:`verifier.payer.check_payer` without and with every user's forwarded receipts (median
of ``--repeat`` runs). The payer check does not re-verify the range proofs (that is
``zkmeter-verify bundle``, bench/verify.py). Goal (issue 14): <= 1 s for 1,024 leaves.
"""

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from nacl.public import PrivateKey
from nacl.signing import SigningKey

from circuits.backend import get_backend
from circuits.transcript import RangeProofContext
from prover.epoch.close import EpochInputs, MemoryLeafStore, close_epoch
from prover.epoch.executor import make_executor
from verifier.account import ETH, AccountBlock
from verifier.bundle import parse_bundle
from verifier.payer import check_payer
from verifier.receipts import Receipt, sign_receipt
from verifier.statement import make_statement, seal_statement, unseal_statement


def _chain(key: SigningKey, epoch_id: int, user: str, value: int) -> list[Receipt]:
    out: list[Receipt] = []
    prev, total = bytes(32), 0
    for seq, units in enumerate((value // 2, value - value // 2), start=1):
        total += units
        receipt = sign_receipt(Receipt(
            provider_id=bytes(key.verify_key), epoch_id=epoch_id, user_id=user, seq=seq,
            prev_hash=prev, idempotency_key_digest=seq.to_bytes(32, "big"), model="m",
            encoding="", input_tokens=units, output_tokens=0, cached_input_tokens=0,
            reasoning_tokens=0, units=units, total_units=total, rate_card_hash=bytes(32),
            salt=bytes(32), prompt_digest=bytes(32), completion_digest=bytes(32),
            timestamp_ms=seq), key)
        out.append(receipt)
        prev = receipt.hash()
    return out


def _median(work: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main(argv: list[str] | None = None) -> int:
    """Make an account epoch, time the payer check, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leaves", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    key, payer_key = SigningKey.generate(), PrivateKey.generate()
    account = AccountBlock(operator=b"\x0a" * 20, payer=b"\xb2" * 20, asset=ETH)
    epoch_id = 1
    ctx = RangeProofContext(chain_id=31337, contract=bytes(20),
                            provider_id=account.account_id(bytes(key.verify_key)),
                            epoch_id=epoch_id)
    totals = {f"user-{i:05d}": 2 + i * 13 for i in range(args.leaves)}
    inputs = EpochInputs(ctx=ctx, window_start=0, window_end=1, rate_card_hash=bytes(32),
                         bit_size=32, totals=totals, account=account)
    start = time.perf_counter()
    with make_executor() as executor:
        closed = close_epoch(inputs, secret=b"p" * 32, signing_key=key,
                             store=MemoryLeafStore(), executor=executor)
    close_s = time.perf_counter() - start
    receipts = {u: _chain(key, epoch_id, u, v) for u, v in totals.items()}
    entries = [(p.job.tag, p.user_id, p.job.value, p.job.blinding,
                bytes(32) if p.user_id is None else receipts[p.user_id][-1].hash())
               for p in closed.planned]
    sealed = seal_statement(make_statement(closed.bundle, entries, key),
                            bytes(payer_key.public_key))
    forwarded = [r for chain in receipts.values() for r in chain]
    text, secret, users = closed.bundle.dumps(), bytes(payer_key), list(totals)

    parse_s, bundle = _median(lambda: parse_bundle(text), args.repeat)
    unseal_s, statement = _median(lambda: unseal_statement(sealed, secret), args.repeat)
    plain_s, result = _median(lambda: check_payer(bundle, statement, users=users),
                              args.repeat)
    with_s, with_receipts = _median(
        lambda: check_payer(bundle, statement, users=users, receipts=forwarded), args.repeat)
    if not (result.ok and with_receipts.ok):
        raise SystemExit("the honest epoch failed the payer check")
    report = {
        "leaves": len(closed.bundle.leaves),
        "backend": get_backend().name,
        "statement_bytes": len(sealed),
        "close_s": round(close_s, 3),
        "parse_bundle_s": round(parse_s, 4),
        "unseal_statement_s": round(unseal_s, 4),
        "check_payer_s": round(plain_s, 4),
        "check_payer_with_receipts_s": round(with_s, 4),
        "receipts": len(forwarded),
        "goal": "check_payer <= 1 s for 1,024 leaves",
        "note": "check_payer does not re-verify range proofs (zkmeter-verify bundle does); "
                "median of --repeat runs; close_s includes starting the worker processes",
    }
    print(json.dumps(report) if args.json else json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

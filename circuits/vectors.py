"""Golden test vectors for the range proofs: ``python -m circuits.vectors [--check]``.

Writes ``circuits/vectors/golden_v1.json``: the curve constants, the generators, transcript
states, and proofs made with a deterministic random source, with every Fiat-Shamir challenge,
plus tampered proofs that must be rejected. The Python tests regenerate the file and require
it to be identical; the Solidity tests read it.
"""

import argparse
import dataclasses
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from circuits.backend import GroupBackend, get_backend
from circuits.constants import (
    BP_G_LABEL,
    BP_H_LABEL,
    CURVE_ORDER,
    FIELD_MODULUS,
    H2C_DOMAIN,
    RANGE_PROOF_DOMAIN,
    RANGE_PROOF_VERSION,
)
from circuits.encoding import G1Affine, point_to_bytes
from circuits.generators import BulletproofGens, PedersenGens, hash_to_g1
from circuits.hashing import keccak256
from circuits.rangeproof import Statement, _decode, _verification_terms, prove
from circuits.transcript import RangeProofContext, Transcript

VECTORS_PATH = Path(__file__).with_name("vectors") / "golden_v1.json"
GENERATOR_COUNT = 64

CONTEXT = RangeProofContext(
    chain_id=31337,
    contract=bytes.fromhex("5fbdb2315678afecb367f032d93f642f64180aa3"),
    provider_id=keccak256(b"zkmeter golden vectors provider"),
    epoch_id=42,
)
CASES = [  # (n, values)
    (8, [0]),
    (8, [255]),
    (32, [0]),
    (32, [1_234_567]),
    (32, [2**32 - 1]),
    (64, [2**64 - 1]),
    (16, [1, 2, 65_535, 300]),
]


def deterministic_rng(seed: bytes) -> Iterator[int]:
    """Scalars in [1, r) from keccak256(seed || u32(counter)); for vectors only, never secret."""
    counter = 0
    while True:
        value = int.from_bytes(keccak256(seed, counter.to_bytes(4, "big")), "big") % CURVE_ORDER
        counter += 1
        if value:
            yield value


def _hex_point(p: G1Affine) -> str:
    return "0x" + point_to_bytes(p).hex()


def _hex_scalar(k: int) -> str:
    return f"0x{k:064x}"


def _proof_case(n: int, values: list[int], backend: GroupBackend) -> dict[str, Any]:
    seed = keccak256(b"golden", n.to_bytes(4, "big"), *(v.to_bytes(8, "big") for v in values))
    source = deterministic_rng(seed)
    blindings = [next(source) for _ in values]
    proof, commitments = prove(
        CONTEXT.transcript(), values=values, blindings=blindings, n=n, backend=backend,
        rng=lambda: next(source),
    )
    statement = Statement(CONTEXT.transcript(), proof, commitments, n)
    decoded, points = _decode(statement)
    terms = _verification_terms(statement.transcript, decoded, points, n, c=1)
    y, z, x, w, *us = terms.challenges
    # A tampered copy that still decodes: t_x + 1.
    bad = dataclasses.replace(decoded, t_x=(decoded.t_x + 1) % CURVE_ORDER)
    return {
        "n": n,
        "m": len(values),
        "values": values,
        "blindings": [_hex_scalar(b) for b in blindings],
        "commitments": ["0x" + c.hex() for c in commitments],
        "proof": "0x" + proof.hex(),
        "challenges": {
            "y": _hex_scalar(y), "z": _hex_scalar(z), "x": _hex_scalar(x), "w": _hex_scalar(w),
            "u": [_hex_scalar(u) for u in us],
        },
        "tampered_proof_t_x_plus_1": "0x" + bad.to_bytes().hex(),
    }


def build(backend: GroupBackend | None = None) -> dict[str, Any]:
    """The whole vector file as a JSON-ready dict."""
    be = backend or get_backend()
    transcript = Transcript(RANGE_PROOF_DOMAIN)
    states = [{"op": "start", "state": "0x" + transcript.state.hex()}]
    transcript.append_message(b"label", b"data")
    states.append(
        {"op": "append label=label data=0x64617461", "state": "0x" + transcript.state.hex()}
    )
    c = transcript.challenge_scalar(b"c")
    states.append({"op": "challenge label=c", "state": "0x" + transcript.state.hex(),
                   "challenge": _hex_scalar(c)})
    return {
        "version": 1,
        "proof_format_version": RANGE_PROOF_VERSION,
        "curve": {"p": hex(FIELD_MODULUS), "r": hex(CURVE_ORDER)},
        "hash_to_curve_domain": H2C_DOMAIN.decode(),
        "generators": {
            "G": _hex_point(PedersenGens.G_AFFINE),
            "H": _hex_point(PedersenGens.H_AFFINE),
            "U": _hex_point(BulletproofGens.U_AFFINE),
            "G_i": [_hex_point(hash_to_g1(BP_G_LABEL, i)) for i in range(GENERATOR_COUNT)],
            "H_i": [_hex_point(hash_to_g1(BP_H_LABEL, i)) for i in range(GENERATOR_COUNT)],
        },
        "transcript": states,
        "context": {
            "chain_id": CONTEXT.chain_id,
            "contract": "0x" + CONTEXT.contract.hex(),
            "provider_id": "0x" + CONTEXT.provider_id.hex(),
            "epoch_id": CONTEXT.epoch_id,
            "transcript_state": "0x" + CONTEXT.transcript().state.hex(),
        },
        "proofs": [_proof_case(n, values, be) for n, values in CASES],
    }


def render(data: dict[str, Any]) -> str:
    """Canonical JSON text of the vectors."""
    return json.dumps(data, indent=1, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the vectors, or with --check compare them with the committed file."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the file differs")
    args = parser.parse_args(argv)
    text = render(build())
    if args.check:
        same = VECTORS_PATH.read_text() == text
        print("golden vectors up to date" if same else "golden vectors differ from the code")
        return 0 if same else 1
    VECTORS_PATH.parent.mkdir(exist_ok=True)
    VECTORS_PATH.write_text(text)
    print(f"wrote {VECTORS_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


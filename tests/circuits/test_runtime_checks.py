"""Runtime checks survive ``python -O``: circuits/ never uses ``assert`` for them, and the
verifier and prover still refuse bad input with optimisation on."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import circuits

CIRCUITS_DIR = Path(circuits.__file__).parent
SOURCES = sorted(CIRCUITS_DIR.rglob("*.py"))


def test_sources_are_found():
    names = {p.name for p in SOURCES}
    assert {"encoding.py", "rangeproof.py", "transcript.py", "pedersen.py"} <= names


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(CIRCUITS_DIR)))
def test_no_assert_statements(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    lines = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Assert)]
    assert lines == []


SCRIPT = r"""
from circuits import (CircuitsError, DecodeError, ValueOutOfRangeError, VerificationError,
                      bytes_to_point, bytes_to_scalar, get_backend, prove, verify)
from circuits.transcript import RangeProofContext

be = get_backend("mcl")
ctx = RangeProofContext(chain_id=1, contract=bytes(20), provider_id=bytes(32), epoch_id=1)
proof, commitments = prove(ctx.transcript(), values=[5], blindings=[7], n=8, backend=be)
verify(ctx.transcript(), proof, commitments, n=8, backend=be)
outcomes = []
for attempt in (
    lambda: verify(ctx.transcript(), proof[:-1] + bytes([proof[-1] ^ 1]), commitments, n=8,
                   backend=be),
    lambda: verify(ctx.transcript(), proof[:-1], commitments, n=8, backend=be),
    lambda: prove(ctx.transcript(), values=[256], blindings=[7], n=8, backend=be),
    lambda: bytes_to_point(bytes(64)),
    lambda: bytes_to_scalar(b"\xff" * 32),
):
    try:
        attempt()
        outcomes.append("accepted")
    except CircuitsError as exc:
        outcomes.append(type(exc).__name__)
print(",".join(outcomes))
"""


def test_bad_input_is_refused_under_python_dash_o():
    root = CIRCUITS_DIR.parent
    result = subprocess.run([sys.executable, "-O", "-c", SCRIPT], cwd=root, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().split(",") == [
        "VerificationError", "DecodeError", "ValueOutOfRangeError", "DecodeError", "DecodeError",
    ]

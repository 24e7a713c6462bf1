"""Verification randomness and the caller's transcript (docs/security.md).

A zero weight drops a proof from a batch and a zero c drops the t equation from the check, so
a source that returns 0 must make verification fail closed, never let a dishonest proof pass.
Verification clones the transcripts it is given: the caller's stay as they were."""

import pytest

from circuits.backend import get_backend, self_test
from circuits.backend.mcl import MclBackend
from circuits.constants import CURVE_ORDER
from circuits.errors import BackendError, ParameterError, VerificationError
from circuits.rangeproof import Statement, batch_verify, verify
from tests.circuits.conftest import CONTEXT, KeccakRng, make_proof
from tests.circuits.test_rangeproof_dishonest import dishonest

R = CURVE_ORDER


@pytest.fixture(scope="module")
def out_of_range(mcl):
    """A well-formed proof for the 8-bit "range" of 2^8 (bits all zero): dishonest."""
    return dishonest([1 << 8], [0] * 8, 8, mcl, b"zero-c")


def test_the_dishonest_proof_fails_under_honest_randomness(mcl, out_of_range):
    data, commitments = out_of_range
    with pytest.raises(VerificationError):
        verify(CONTEXT.transcript(), data, commitments, n=8, backend=mcl)


@pytest.mark.parametrize("bad", [0, R, R + 5, -1])
def test_a_zero_or_out_of_range_c_is_refused(mcl, out_of_range, bad):
    data, commitments = out_of_range
    with pytest.raises(ParameterError):
        verify(CONTEXT.transcript(), data, commitments, n=8, backend=mcl, rng=lambda: bad)


def test_a_zero_weight_cannot_hide_a_dishonest_proof_in_a_batch(mcl, out_of_range):
    data, commitments = out_of_range
    good, good_commitments = make_proof([200], 8, backend=mcl, seed=b"weights")
    honest = KeccakRng(b"weights")
    draws = iter([0, honest(), honest(), honest()])  # the dishonest proof's weight is 0
    statements = [Statement(CONTEXT.transcript(), data, commitments, 8),
                  Statement(CONTEXT.transcript(), good, good_commitments, 8)]
    with pytest.raises(ParameterError):
        batch_verify(statements, backend=mcl, rng=lambda: next(draws))


def test_verification_leaves_the_callers_transcript_unchanged(mcl, proof32):
    data, commitments = proof32
    transcript = CONTEXT.transcript()
    before = transcript.state
    verify(transcript, data, commitments, n=32, backend=mcl)
    assert transcript.state == before
    verify(transcript, data, commitments, n=32, backend=mcl)  # reusable: still verifies
    statement = Statement(transcript, data, commitments, 32)
    batch_verify([statement, statement], backend=mcl)
    assert transcript.state == before


class _MsmBrokenPastSize(MclBackend):
    """mcl whose MSM drops the last term once it has more than 512 points."""

    def msm(self, points, scalars):
        if len(points) > 512:
            return super().msm(points[:-1], scalars[:-1])
        return super().msm(points, scalars)


def test_the_native_self_test_covers_a_many_point_msm():
    broken = _MsmBrokenPastSize()
    with pytest.raises(BackendError, match="msm of 1100 points"):
        self_test(broken)
    self_test(get_backend("mcl"))  # control: the real backend passes

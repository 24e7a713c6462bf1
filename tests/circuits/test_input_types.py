"""Type confusion at the public API: a value of the wrong type must be refused with the
layer's documented error (a CircuitsError), never crash with an AttributeError or TypeError
from deep inside, and never be silently coerced.

The strict xfails below are bugs found in circuits/ (see their reasons); each one names the
exception the code raises today, so the test flips to XPASS (and fails) once it is fixed.
"""

import dataclasses

import pytest

from circuits.errors import CircuitsError, ParameterError, ValueOutOfRangeError
from circuits.pedersen import commit
from circuits.rangeproof import proof_size, prove, verify
from tests.circuits.conftest import CONTEXT, KeccakRng


def test_integer_n_given_as_bool_is_a_parameter_error(mcl, proof32):
    proof, commitments = proof32
    with pytest.raises(ParameterError):
        verify(CONTEXT.transcript(), proof, commitments, n=True, backend=mcl)


def test_prove_refuses_float_values_and_blindings_with_its_own_error(mcl):
    for values, blindings in (([5.0], [3]), ([5], [3.0])):
        with pytest.raises(ValueOutOfRangeError):
            prove(CONTEXT.transcript(), values=values, blindings=blindings, n=8, backend=mcl,
                  rng=KeccakRng(b"types"))


@pytest.mark.xfail(strict=True, raises=AttributeError,
                   reason="check_parameters tests `n in ALLOWED_BIT_SIZES`, which a float 8.0 "
                   "passes; verify then crashes with AttributeError ('float' has no "
                   "bit_length) in proof_size instead of raising ParameterError")
def test_verify_with_float_n_is_a_parameter_error(mcl, proof32):
    proof, commitments = proof32
    with pytest.raises(ParameterError):
        verify(CONTEXT.transcript(), proof, commitments, n=32.0, backend=mcl)


@pytest.mark.xfail(strict=True, raises=AttributeError,
                   reason="proof_size(8.0, 1) passes check_parameters (8.0 in (8, ...)) and "
                   "crashes on (n*m).bit_length()")
def test_proof_size_with_float_n_is_a_parameter_error():
    with pytest.raises(ParameterError):
        proof_size(8.0, 1)


@pytest.mark.xfail(strict=True, raises=TypeError,
                   reason="prove(n=8.0) passes check_parameters and crashes with TypeError on "
                   "`1 << n` instead of raising ParameterError")
def test_prove_with_float_n_is_a_parameter_error(mcl):
    with pytest.raises(ParameterError):
        prove(CONTEXT.transcript(), values=[5], blindings=[3], n=8.0, backend=mcl,
              rng=KeccakRng(b"types"))


@pytest.mark.xfail(strict=True, raises=AttributeError,
                   reason="pedersen.commit checks only 0 <= value < r and 0 < blinding < r, "
                   "not the type (prove does): a float passes and crashes in the backend "
                   "with AttributeError ('float' has no to_bytes)")
@pytest.mark.parametrize(("value", "blinding"), [(1.5, 3), (3, 1.5)], ids=["value", "blinding"])
def test_commit_refuses_float_inputs(mcl, value, blinding):
    with pytest.raises(ValueOutOfRangeError):
        commit(value, blinding, backend=mcl)


@pytest.mark.xfail(strict=True, raises=AttributeError,
                   reason="RangeProofContext checks only the range of chain_id and epoch_id, "
                   "not that they are int: 1.5 is accepted and transcript() crashes with "
                   "AttributeError")
@pytest.mark.parametrize("field", ["chain_id", "epoch_id"])
def test_context_refuses_float_integers(field):
    with pytest.raises((ValueError, CircuitsError)):
        dataclasses.replace(CONTEXT, **{field: 1.5}).transcript()

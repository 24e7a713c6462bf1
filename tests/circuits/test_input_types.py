"""Type confusion at the public API: a value of the wrong type must be refused with the
layer's documented error (a CircuitsError), never crash with an AttributeError or TypeError
from deep inside, and never be silently coerced.

These tests were strict xfails for bugs found in circuits/ (floats and strings slipping past
range checks); the checks now test exact types.
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


def test_verify_with_float_n_is_a_parameter_error(mcl, proof32):
    proof, commitments = proof32
    with pytest.raises(ParameterError):
        verify(CONTEXT.transcript(), proof, commitments, n=32.0, backend=mcl)


def test_proof_size_with_float_n_is_a_parameter_error():
    with pytest.raises(ParameterError):
        proof_size(8.0, 1)


def test_prove_with_float_n_is_a_parameter_error(mcl):
    with pytest.raises(ParameterError):
        prove(CONTEXT.transcript(), values=[5], blindings=[3], n=8.0, backend=mcl,
              rng=KeccakRng(b"types"))


@pytest.mark.parametrize(("value", "blinding"), [(1.5, 3), (3, 1.5)], ids=["value", "blinding"])
def test_commit_refuses_float_inputs(mcl, value, blinding):
    with pytest.raises(ValueOutOfRangeError):
        commit(value, blinding, backend=mcl)


@pytest.mark.parametrize("field", ["chain_id", "epoch_id"])
def test_context_refuses_float_integers(field):
    with pytest.raises((ValueError, CircuitsError)):
        dataclasses.replace(CONTEXT, **{field: 1.5}).transcript()


@pytest.mark.parametrize(("n", "m"), [(8.0, 1), (True, 1), ("8", 1), (8, 1.0), (8, True)],
                         ids=["float-n", "bool-n", "str-n", "float-m", "bool-m"])
def test_proof_size_refuses_non_int_parameters(n, m):
    with pytest.raises(ParameterError):
        proof_size(n, m)


@pytest.mark.parametrize(("value", "blinding"), [(True, 3), (3, True), ("3", 3), (None, 3)],
                         ids=["bool-value", "bool-blinding", "str-value", "none-value"])
def test_commit_refuses_non_int_inputs(mcl, value, blinding):
    with pytest.raises(ValueOutOfRangeError):
        commit(value, blinding, backend=mcl)


@pytest.mark.parametrize("fields", [
    {"chain_id": True}, {"epoch_id": False}, {"chain_id": "1"}, {"epoch_id": None},
    {"contract": bytearray(20)}, {"provider_id": memoryview(bytes(32))},
    {"contract": list(range(20))}, {"provider_id": "p" * 32},
], ids=["bool-chain", "bool-epoch", "str-chain", "none-epoch", "bytearray-contract",
        "memoryview-provider", "list-contract", "str-provider"])
def test_context_refuses_wrongly_typed_fields(fields):
    with pytest.raises(ValueError):
        dataclasses.replace(CONTEXT, **fields)


def test_verify_with_string_n_is_a_parameter_error(mcl, proof32):
    proof, commitments = proof32
    with pytest.raises(ParameterError):
        verify(CONTEXT.transcript(), proof, commitments, n="32", backend=mcl)

"""Every fast backend agrees bit for bit with the py_ecc reference, and backend selection
(by name, by ZKMETER_BACKEND, auto with fallback) behaves as documented."""

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import circuits.backend as backend_module
from circuits.backend import available_backends, get_backend, self_test
from circuits.backend.pure import PureBackend
from circuits.constants import CURVE_ORDER, FIELD_MODULUS, G1_GENERATOR
from circuits.encoding import IDENTITY, G1Affine, is_on_curve
from circuits.errors import BackendError
from circuits.generators import hash_to_g1
from tests.circuits.conftest import KeccakRng

R = CURVE_ORDER
FAST = ["mcl", "python"]
G = G1Affine(*G1_GENERATOR)
# Independent test points from the hash to curve (no backend involved in making them).
POINTS = [hash_to_g1(b"tests.backend.points", i) for i in range(100)]

EDGE_SCALARS = [
    0, 1, 2, 3, 15, 16, 17, 255, 256, (1 << 64) - 1, 1 << 128, (1 << 253) - 1, 1 << 253,
    (1 << 253) + 1, (1 << 253) + 12345, (1 << 253) + (1 << 252), R - 2, R - 1, (R - 1) // 2,
    (R + 1) // 2,
]


@pytest.fixture(scope="module", params=FAST)
def fast(request):
    return get_backend(request.param)


@pytest.fixture(scope="module")
def ref():
    return get_backend("pyecc")


def affine(be, point):
    return be.to_affine(point)


def test_reference_backend_is_py_ecc():
    assert get_backend("pyecc").name == "pyecc"


@pytest.mark.parametrize("point", [G, *POINTS[:5]], ids=lambda p: f"{p.x:x}"[:8])
def test_from_affine_to_affine_round_trip(fast, point):
    back = fast.to_affine(fast.from_affine(point))
    assert back == point
    assert type(back.x) is int
    assert type(back.y) is int


def test_identity_round_trips_through_native_form(fast):
    assert fast.is_identity(fast.from_affine(IDENTITY))
    assert fast.to_affine(fast.identity()) == IDENTITY
    assert fast.to_affine(fast.from_affine(IDENTITY)) == IDENTITY


@pytest.mark.parametrize("i", range(6))
def test_add_agrees_with_reference(fast, ref, i):
    a, b = POINTS[i], POINTS[i + 10]
    got = fast.to_affine(fast.add(fast.from_affine(a), fast.from_affine(b)))
    assert got == ref.to_affine(ref.add(ref.from_affine(a), ref.from_affine(b)))
    assert is_on_curve(*got)


def test_add_of_a_point_to_itself_is_doubling(fast, ref):
    for point in (G, POINTS[0]):
        p = fast.from_affine(point)
        got = fast.to_affine(fast.add(p, p))
        assert got == ref.to_affine(ref.mul(ref.from_affine(point), 2))
        assert got == fast.to_affine(fast.mul(p, 2))


def test_add_is_commutative_and_associative(fast):
    a, b, c = (fast.from_affine(p) for p in POINTS[:3])
    assert fast.to_affine(fast.add(a, b)) == fast.to_affine(fast.add(b, a))
    left = fast.add(fast.add(a, b), c)
    right = fast.add(a, fast.add(b, c))
    assert fast.to_affine(left) == fast.to_affine(right)


@pytest.mark.parametrize("point", [G, POINTS[1], POINTS[2]], ids=["G", "P1", "P2"])
def test_neg_agrees_with_reference_and_flips_y(fast, ref, point):
    got = fast.to_affine(fast.neg(fast.from_affine(point)))
    assert got == ref.to_affine(ref.neg(ref.from_affine(point)))
    assert got == G1Affine(point.x, FIELD_MODULUS - point.y)


def test_sub_agrees_with_reference(fast, ref):
    a, b = POINTS[3], POINTS[4]
    got = fast.to_affine(fast.sub(fast.from_affine(a), fast.from_affine(b)))
    want = ref.to_affine(ref.add(ref.from_affine(a), ref.neg(ref.from_affine(b))))
    assert got == want


def test_point_plus_its_negation_is_identity(fast):
    for point in (G, POINTS[5]):
        p = fast.from_affine(point)
        total = fast.add(p, fast.neg(p))
        assert fast.is_identity(total)
        assert fast.to_affine(total) == IDENTITY
        assert fast.is_identity(fast.sub(p, p))


def test_identity_is_neutral_for_add(fast):
    p = fast.from_affine(POINTS[6])
    zero = fast.identity()
    assert fast.to_affine(fast.add(zero, p)) == POINTS[6]
    assert fast.to_affine(fast.add(p, zero)) == POINTS[6]
    assert fast.is_identity(fast.add(zero, zero))
    assert fast.is_identity(fast.neg(zero))


def test_non_identity_points_are_not_identity(fast):
    assert not fast.is_identity(fast.from_affine(G))
    assert not fast.is_identity(fast.from_affine(POINTS[0]))


def test_eq_distinguishes_points(fast):
    a, b = fast.from_affine(POINTS[0]), fast.from_affine(POINTS[1])
    assert fast.eq(a, a)
    assert not fast.eq(a, b)
    # Same group element, different native representations (a sum vs a fresh decode).
    total = fast.add(a, b)
    fresh = fast.from_affine(fast.to_affine(total))
    assert fast.eq(total, fresh)


@pytest.mark.parametrize("k", EDGE_SCALARS, ids=lambda k: f"k{k.bit_length()}b_{k % 1000}")
def test_mul_on_edge_scalars_agrees_with_reference(fast, ref, k):
    for point in (G, POINTS[7]):
        got = fast.to_affine(fast.mul(fast.from_affine(point), k))
        assert got == ref.to_affine(ref.mul(ref.from_affine(point), k))


def test_mul_by_zero_and_order_minus_one(fast):
    p = fast.from_affine(POINTS[8])
    assert fast.is_identity(fast.mul(p, 0))
    assert fast.to_affine(fast.mul(p, 1)) == POINTS[8]
    assert fast.to_affine(fast.mul(p, R - 1)) == G1Affine(POINTS[8].x, FIELD_MODULUS - POINTS[8].y)


def test_mul_of_identity_is_identity(fast):
    assert fast.is_identity(fast.mul(fast.identity(), 12345))
    assert fast.is_identity(fast.mul(fast.identity(), R - 1))


def test_mul_on_random_scalars_agrees_with_reference(fast, ref):
    rng = KeccakRng(b"mul-random")
    for i in range(8):
        point, k = POINTS[20 + i], rng.below(R)
        got = fast.to_affine(fast.mul(fast.from_affine(point), k))
        assert got == ref.to_affine(ref.mul(ref.from_affine(point), k))


def reference_msm(ref, points, scalars):
    acc = ref.identity()
    for point, k in zip(points, scalars, strict=True):
        acc = ref.add(acc, ref.mul(ref.from_affine(point), k))
    return ref.to_affine(acc)


@pytest.mark.parametrize("size", [0, 1, 2, 7, 8, 9, 33, 100])
def test_msm_agrees_with_reference(fast, ref, size):
    rng = KeccakRng(b"msm-%d" % size)
    points = POINTS[:size]
    # Random scalars with zeros and extremes mixed in.
    scalars = []
    for i in range(size):
        kind = i % 5
        scalars.append([0, rng.below(R), R - 1, 1, (1 << 253) + i][kind])
    got = fast.to_affine(fast.msm([fast.from_affine(p) for p in points], scalars))
    assert got == reference_msm(ref, points, scalars)


@pytest.mark.parametrize("size", [0, 1, 8, 33])
def test_msm_of_all_zero_scalars_is_identity(fast, size):
    points = [fast.from_affine(p) for p in POINTS[:size]]
    assert fast.is_identity(fast.msm(points, [0] * size))


def test_msm_with_repeated_and_opposite_points(fast, ref):
    # Buckets that add a point to itself (doubling) and to its negation (identity).
    p, q = POINTS[0], POINTS[1]
    minus_p = G1Affine(p.x, FIELD_MODULUS - p.y)
    points = [p, p, minus_p, q, p, minus_p, q, q, p, minus_p]
    scalars = [5, 5, 5, 7, 5, 5, 7, 7, 5, 5]
    got = fast.to_affine(fast.msm([fast.from_affine(x) for x in points], scalars))
    assert got == ref.to_affine(ref.add(ref.mul(ref.from_affine(p), 5),
                                        ref.mul(ref.from_affine(q), 21)))


def test_msm_that_cancels_to_identity(fast):
    points = [fast.from_affine(p) for p in POINTS[:9]]
    scalars = [3, 1, 4, 1, 5, 9, 2, 6, 5]
    total = fast.msm(points, scalars)
    minus = fast.msm(points, [R - k for k in scalars])
    assert fast.is_identity(fast.add(total, minus))


def test_msm_with_identity_points(fast, ref):
    points = [POINTS[0], IDENTITY, POINTS[1], IDENTITY, *POINTS[2:8]]
    scalars = [11, 13, 17, 19, 23, 29, 31, 37, 41, 43]
    got = fast.to_affine(fast.msm([fast.from_affine(p) for p in points], scalars))
    assert got == reference_msm(ref, points, scalars)


def test_msm_equals_sum_of_muls(fast):
    rng = KeccakRng(b"msm-vs-mul")
    points = [fast.from_affine(p) for p in POINTS[40:60]]
    scalars = [rng.below(R) for _ in points]
    acc = fast.identity()
    for p, k in zip(points, scalars, strict=True):
        acc = fast.add(acc, fast.mul(p, k))
    assert fast.to_affine(fast.msm(points, scalars)) == fast.to_affine(acc)


scalars_st = st.one_of(
    st.integers(min_value=0, max_value=R - 1),
    st.sampled_from([0, 1, 2, R - 1, R - 2, 1 << 253, (1 << 253) + 1, (1 << 254) - 1 - (1 << 253)]),
)


@settings(max_examples=25, deadline=None)
@given(k=scalars_st, index=st.integers(min_value=0, max_value=len(POINTS) - 1))
def test_property_mul_agrees_across_all_backends(k, index):
    point = POINTS[index]
    ref = get_backend("pyecc")
    want = ref.to_affine(ref.mul(ref.from_affine(point), k))
    for name in FAST:
        be = get_backend(name)
        assert be.to_affine(be.mul(be.from_affine(point), k)) == want


@settings(max_examples=15, deadline=None)
@given(st.lists(st.tuples(st.integers(min_value=0, max_value=len(POINTS) - 1), scalars_st),
                min_size=0, max_size=12))
def test_property_msm_agrees_across_all_backends(terms):
    points = [POINTS[i] for i, _ in terms]
    scalars = [k for _, k in terms]
    want = reference_msm(get_backend("pyecc"), points, scalars)
    for name in FAST:
        be = get_backend(name)
        assert be.to_affine(be.msm([be.from_affine(p) for p in points], scalars)) == want


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=R - 1), min_size=1, max_size=40))
def test_property_fast_backends_agree_with_each_other_on_msm(scalars):
    points = POINTS[: len(scalars)]
    results = set()
    for name in FAST:
        be = get_backend(name)
        results.add(be.to_affine(be.msm([be.from_affine(p) for p in points], scalars)))
    assert len(results) == 1


# --- self-test and selection -------------------------------------------------------------


@pytest.mark.parametrize("name", ["mcl", "python", "pyecc"])
def test_self_test_passes(name):
    self_test(get_backend(name))


class MaskingBackend(PureBackend):
    """A broken backend that masks scalars to 253 bits, as mcl's plain setters would."""

    name = "masking"

    def mul(self, a, k):
        return super().mul(a, k & ((1 << 253) - 1))


class WrongMsmBackend(PureBackend):
    """A broken backend whose msm drops the last term."""

    name = "wrong-msm"

    def msm(self, points, scalars):
        return super().msm(points[:-1], scalars[:-1])


class NoWrapBackend(PureBackend):
    """A broken backend whose multiplication is off by one addition for large scalars."""

    name = "no-wrap"

    def mul(self, a, k):
        out = super().mul(a, k)
        return self.add(out, a) if k > R // 2 else out


@pytest.mark.parametrize("cls", [MaskingBackend, WrongMsmBackend, NoWrapBackend])
def test_self_test_catches_a_broken_backend(cls):
    with pytest.raises(BackendError):
        self_test(cls())


def test_unknown_backend_name_raises_backend_error():
    with pytest.raises(BackendError):
        get_backend("bogus")


def test_available_backends_lists_all_three_here():
    assert available_backends() == ["mcl", "python", "pyecc"]


@pytest.fixture
def fresh_backend_cache():
    get_backend.cache_clear()
    yield
    get_backend.cache_clear()


@pytest.mark.parametrize(("env", "expected"), [
    ("python", "python"), ("mcl", "mcl"), ("auto", "mcl"), ("  PYTHON ", "python"),
    ("pyecc", "pyecc"),
])
def test_environment_variable_selects_backend(monkeypatch, fresh_backend_cache, env, expected):
    monkeypatch.setenv("ZKMETER_BACKEND", env)
    assert get_backend().name == expected


def test_default_without_environment_is_mcl_here(monkeypatch, fresh_backend_cache):
    monkeypatch.delenv("ZKMETER_BACKEND", raising=False)
    assert get_backend().name == "mcl"


def test_environment_variable_with_unknown_name_raises(monkeypatch, fresh_backend_cache):
    monkeypatch.setenv("ZKMETER_BACKEND", "bogus")
    with pytest.raises(BackendError):
        get_backend()


def test_explicit_name_wins_over_environment(monkeypatch, fresh_backend_cache):
    monkeypatch.setenv("ZKMETER_BACKEND", "python")
    assert get_backend("mcl").name == "mcl"


def test_auto_falls_back_to_python_with_one_log_line(monkeypatch, fresh_backend_cache, caplog):
    real_load = backend_module._load

    def failing_mcl(name):
        if name == "mcl":
            raise BackendError("simulated: mcl failed its self-test")
        return real_load(name)

    monkeypatch.setattr(backend_module, "_load", failing_mcl)
    monkeypatch.setenv("ZKMETER_BACKEND", "auto")
    with caplog.at_level(logging.WARNING, logger="circuits.backend"):
        chosen = get_backend()
    assert chosen.name == "python"
    warnings = [r for r in caplog.records if r.name == "circuits.backend"]
    assert len(warnings) == 1
    assert "mcl" in warnings[0].getMessage()


def test_explicit_mcl_does_not_fall_back(monkeypatch, fresh_backend_cache):
    def failing(name):
        raise BackendError("simulated")

    monkeypatch.setattr(backend_module, "_load", failing)
    with pytest.raises(BackendError):
        get_backend("mcl")

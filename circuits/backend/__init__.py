"""Choosing a group backend: ``ZKMETER_BACKEND=auto|mcl|python`` (default ``auto``).

``auto`` loads mcl and runs its self-test against known vectors; if the wheel is missing or
the test fails it logs one line and falls back to the pure-Python backend. The self-test
includes a multi-scalar multiplication of many points (1,100 for the native backend, about
the size of a 16-proof batch verification), checked against the same sum computed with one
multiplication, so a native MSM that goes wrong only past some size (a window-size switch, a
chunk boundary) is caught at start-up. (Epoch close also batch-verifies every proof before it
signs, so a backend that fails later still never gets a bad proof signed.) The py_ecc
reference backend is for tests only and is chosen by name (``pyecc``).
"""

import logging
import os
from functools import cache

from circuits.backend.base import GroupBackend, Point
from circuits.constants import CURVE_ORDER, G1_GENERATOR
from circuits.encoding import G1Affine
from circuits.errors import BackendError
from circuits.hashing import keccak256

__all__ = ["GroupBackend", "Point", "available_backends", "get_backend", "self_test"]

log = logging.getLogger(__name__)

BACKEND_ENV = "ZKMETER_BACKEND"

# Known answers computed with py_ecc (the reference). The scalars reach past 2^253 so that a
# backend that masks or truncates scalars fails.
_K1 = (1 << 253) + 12345
_K1_G = G1Affine(
    0x2148C698345B7D9848CC66D988B9988567634B28ECA0184202FCCB202733F347,
    0x11C1266751992BB9083557292655CD9820DA0452DDB09511078DA20DC2455A19,
)
# (r - 1) * G + (2^253 + 5) * 2G
_MSM_G = G1Affine(
    0x1CE61E4C24BBB48EF73FBFB1E259FA862EF00663ADE0EA60D5EC7BC1D6C029FF,
    0x08A9A27DEA1F18AD620D1BC37C0E16DE735B358AC3A7B484AA9594075F455B81,
)


# Points in the many-point MSM check: the native backend is the one that proves and verifies
# big batches; the pure-Python ones are slow, so they check a smaller (still multi-window) MSM.
MSM_SELF_TEST_POINTS = {"mcl": 1100}
MSM_SELF_TEST_POINTS_DEFAULT = 96
_MSM_SELF_TEST_TAG = b"ZKMETER_SELFTEST"


def _many_point_msm_ok(backend: GroupBackend, g: Point, count: int) -> bool:
    """sum_i s_i * ((i+1) G) == (sum_i (i+1) s_i) * G for ``count`` pseudo-random 256-bit
    scalars s_i (keccak256 of a tag and i, reduced mod r)."""
    points = []
    point = g
    for _ in range(count):
        points.append(point)
        point = backend.add(point, g)
    scalars = [int.from_bytes(keccak256(_MSM_SELF_TEST_TAG, i.to_bytes(4, "big")), "big")
               % CURVE_ORDER for i in range(count)]
    combined = sum((i + 1) * s for i, s in enumerate(scalars)) % CURVE_ORDER
    return backend.eq(backend.msm(points, scalars), backend.mul(g, combined))


def self_test(backend: GroupBackend, *, msm_points: int | None = None) -> None:
    """Check a backend against the known answers; raises BackendError on any mismatch."""
    if msm_points is None:
        msm_points = MSM_SELF_TEST_POINTS.get(backend.name, MSM_SELF_TEST_POINTS_DEFAULT)
    g = backend.from_affine(G1Affine(*G1_GENERATOR))
    two_g = backend.add(g, g)
    checks = {
        "generator round trip": backend.to_affine(g) == G1Affine(*G1_GENERATOR),
        "mul": backend.to_affine(backend.mul(g, _K1)) == _K1_G,
        "msm": backend.to_affine(backend.msm([g, two_g], [CURVE_ORDER - 1, (1 << 253) + 5]))
        == _MSM_G,
        "order": backend.is_identity(backend.add(backend.mul(g, CURVE_ORDER - 1), g)),
        f"msm of {msm_points} points": _many_point_msm_ok(backend, g, msm_points),
    }
    failed = [name for name, ok in checks.items() if not ok]
    if failed:
        raise BackendError(f"backend {backend.name} failed its self-test: {', '.join(failed)}")


def _load(name: str) -> GroupBackend:
    backend: GroupBackend
    if name == "mcl":
        from circuits.backend.mcl import MclBackend

        backend = MclBackend()
    elif name == "python":
        from circuits.backend.pure import PureBackend

        backend = PureBackend()
    elif name == "pyecc":
        from circuits.backend.pyecc import PyEccBackend

        backend = PyEccBackend()
    else:
        raise BackendError(f"unknown backend {name!r}; choose auto, mcl or python")
    self_test(backend)
    return backend


@cache
def get_backend(name: str | None = None) -> GroupBackend:
    """The backend named (or by ``ZKMETER_BACKEND``); ``auto`` prefers mcl, else python."""
    choice = (name or os.environ.get(BACKEND_ENV) or "auto").strip().lower()
    if choice != "auto":
        return _load(choice)
    try:
        return _load("mcl")
    except Exception as exc:  # any failure of the native path means: use the fallback
        log.warning("zkmeter: mcl backend unavailable (%s); using the pure-Python backend", exc)
        return _load("python")


def available_backends() -> list[str]:
    """Names of the backends that load and pass their self-test here."""
    names = []
    for name in ("mcl", "python", "pyecc"):
        try:
            get_backend(name)
        except Exception:  # noqa: S112 - a backend that fails to load is simply not available
            continue
        names.append(name)
    return names

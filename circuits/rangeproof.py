"""Bulletproofs range proofs on BN254 G1 (Bünz et al., eprint 2017/1066, §4.1-4.3 and §6.2).

Relation (aggregated over m values, n bits each, N = n*m; eq. (64) of the paper)::

    { (G, H, Gs, Hs in G1^N, V_0..V_{m-1} ; v_j, gamma_j) :
        V_j = v_j * G + gamma_j * H  and  0 <= v_j < 2^n  for every j }

The prover commits to the bits a_L of the values and a_R = a_L - 1 (A), to blinding vectors
(S), to the coefficients t1, t2 of t(X) = <l(X), r(X)> (T1, T2), and runs the logarithmic
inner-product argument (Protocol 2, §3.1) on l(x), r(x) with base Q = w * U. The verifier
checks everything as ONE multi-scalar multiplication: the equation of t (eq. 72) weighted by a
random c, plus the inner-product equation with the folding coefficients s_i expanded (§6.2).
Many proofs are batch-verified with one MSM under independent random weights.

The exact transcript order and byte layouts are in PROTOCOL.md beside this file.
"""

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import gmpy2

from circuits.backend import GroupBackend, Point, get_backend
from circuits.constants import (
    ALLOWED_BIT_SIZES,
    CURVE_ORDER,
    MAX_AGGREGATION,
    POINT_BYTES,
    RANGE_PROOF_VERSION,
    SCALAR_BYTES,
)
from circuits.encoding import (
    G1Affine,
    bytes_to_point,
    bytes_to_scalar,
    point_to_bytes,
    scalar_to_bytes,
)
from circuits.errors import (
    DecodeError,
    ParameterError,
    ValueOutOfRangeError,
    VerificationError,
)
from circuits.generators import bulletproof_gens, pedersen_gens
from circuits.transcript import Transcript

R = CURVE_ORDER

ScalarSource = Callable[[], int]
"""A source of uniformly random scalars in [1, r); injectable for test vectors."""


def _draw(rng: ScalarSource) -> int:
    """One verification scalar from ``rng``, refused unless it is an integer in [1, r).

    A zero weight would drop a proof from a batch, and a zero c would drop the t equation
    (eq. 72) from the check, so a source that yields 0 (or r, or anything out of range) must
    never make a dishonest proof pass: it is an error, not a value to reduce."""
    value = rng()
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < R:
        raise ParameterError("the verification randomness source returned a scalar "
                             "outside [1, r)")
    return value


def random_scalar() -> int:
    """A uniformly random scalar in [1, r) from the OS CSPRNG."""
    return secrets.randbelow(R - 1) + 1


def check_parameters(n: int, m: int) -> None:
    """n in {8, 16, 32, 64}; m a power of two in [1, MAX_AGGREGATION]; both exact ints."""
    if type(n) is not int or n not in ALLOWED_BIT_SIZES:
        raise ParameterError(f"bit size n must be one of {ALLOWED_BIT_SIZES}, got {n}")
    if type(m) is not int or not 1 <= m <= MAX_AGGREGATION or m & (m - 1):
        raise ParameterError(
            f"aggregation size m must be a power of two in [1, {MAX_AGGREGATION}], got {m}"
        )


def proof_size(n: int, m: int) -> int:
    """Byte length of an encoded proof: 1 + 4*64 + 3*32 + 2*log2(n*m)*64 + 2*32."""
    check_parameters(n, m)
    rounds = (n * m).bit_length() - 1
    return 1 + 4 * POINT_BYTES + 3 * SCALAR_BYTES + 2 * rounds * POINT_BYTES + 2 * SCALAR_BYTES


@dataclass(frozen=True, slots=True)
class RangeProof:
    """A decoded range proof; every field already validated."""

    A: G1Affine
    S: G1Affine
    T1: G1Affine
    T2: G1Affine
    t_x: int
    t_x_blinding: int
    e_blinding: int
    L: tuple[G1Affine, ...]
    R: tuple[G1Affine, ...]
    a: int
    b: int

    def to_bytes(self) -> bytes:
        """``version || A || S || T1 || T2 || t_x || t_x_blinding || e_blinding
        || (L_j || R_j) for each round || a || b`` (PROTOCOL.md §5)."""
        parts = [bytes([RANGE_PROOF_VERSION])]
        parts += [point_to_bytes(p) for p in (self.A, self.S, self.T1, self.T2)]
        parts += [scalar_to_bytes(s) for s in (self.t_x, self.t_x_blinding, self.e_blinding)]
        for left, right in zip(self.L, self.R, strict=True):
            parts += [point_to_bytes(left), point_to_bytes(right)]
        parts += [scalar_to_bytes(self.a), scalar_to_bytes(self.b)]
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes, *, n: int, m: int) -> "RangeProof":
        """Strictly decode a proof for n-bit ranges of m values; raises DecodeError."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise DecodeError(f"proof must be bytes, got {type(data).__name__}")
        data = bytes(data)
        expected = proof_size(n, m)
        if len(data) != expected:
            raise DecodeError(f"proof for n={n}, m={m} must be {expected} bytes, got {len(data)}")
        if data[0] != RANGE_PROOF_VERSION:
            raise DecodeError(f"unsupported proof format version {data[0]}")
        pos = 1

        def point() -> G1Affine:
            nonlocal pos
            p = bytes_to_point(data[pos : pos + POINT_BYTES])
            pos += POINT_BYTES
            return p

        def scalar() -> int:
            nonlocal pos
            s = bytes_to_scalar(data[pos : pos + SCALAR_BYTES])
            pos += SCALAR_BYTES
            return s

        big_a, big_s, t1, t2 = point(), point(), point(), point()
        t_x, t_x_blinding, e_blinding = scalar(), scalar(), scalar()
        lefts, rights = [], []
        for _ in range((n * m).bit_length() - 1):
            lefts.append(point())
            rights.append(point())
        a, b = scalar(), scalar()
        return cls(big_a, big_s, t1, t2, t_x, t_x_blinding, e_blinding,
                   tuple(lefts), tuple(rights), a, b)


def _inner(a: Sequence[int], b: Sequence[int]) -> int:
    """<a, b> mod r."""
    return sum(x * y for x, y in zip(a, b, strict=True)) % R


def _powers(base: int, count: int) -> list[int]:
    """[1, base, base^2, ..., base^(count-1)] mod r."""
    out = [1] * count
    for i in range(1, count):
        out[i] = out[i - 1] * base % R
    return out


def _start(transcript: Transcript, n: int, m: int, commitments: Sequence[G1Affine]) -> None:
    """Bind the statement: domain separator, n, m and every commitment (PROTOCOL.md §4)."""
    transcript.append_message(b"dom-sep", b"rangeproof v1")
    transcript.append_u32(b"n", n)
    transcript.append_u32(b"m", m)
    for commitment in commitments:
        transcript.append_point(b"V", commitment)


def prove(
    transcript: Transcript,
    *,
    values: Sequence[int],
    blindings: Sequence[int],
    n: int,
    backend: GroupBackend | None = None,
    rng: ScalarSource = random_scalar,
) -> tuple[bytes, list[bytes]]:
    """Prove 0 <= v_j < 2^n for the commitments v_j*G + gamma_j*H.

    Returns the encoded proof and the encoded commitments. Refuses (ValueOutOfRangeError) a
    value outside [0, 2^n) or a blinding outside [1, r).
    """
    m = len(values)
    check_parameters(n, m)
    if len(blindings) != m:
        raise ParameterError("values and blindings differ in length")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 1 << n:
            raise ValueOutOfRangeError(f"value is outside [0, 2^{n})")
    for gamma in blindings:
        if isinstance(gamma, bool) or not isinstance(gamma, int) or not 0 < gamma < R:
            raise ValueOutOfRangeError("blinding must be an integer in [1, r)")
    bits = [(v >> i) & 1 for v in values for i in range(n)]
    proof, commitments = _prove(
        transcript, values, blindings, bits, n, backend or get_backend(), rng
    )
    return proof.to_bytes(), [point_to_bytes(c) for c in commitments]


def _prove(
    transcript: Transcript,
    values: Sequence[int],
    blindings: Sequence[int],
    a_l: Sequence[int],
    n: int,
    be: GroupBackend,
    rng: ScalarSource,
) -> tuple[RangeProof, list[G1Affine]]:
    """The prover's steps (§4.1, §4.3), with the bit vector a_L given.

    Honest callers pass the bits of the values; tests pass anything to play a dishonest
    prover. Nothing here checks the range: :func:`prove` does.
    """
    m = len(values)
    size = n * m
    pg = pedersen_gens(be)
    bg = bulletproof_gens(be)
    gs, hs = bg.G(size), bg.H(size)

    commitments = [
        be.to_affine(pg.commit(v % R, g)) for v, g in zip(values, blindings, strict=True)
    ]
    _start(transcript, n, m, commitments)

    # A = alpha*H + <a_L, Gs> + <a_R, Hs>, a_R = a_L - 1.
    a_r = [(bit - 1) % R for bit in a_l]
    alpha = rng()
    if all(bit in (0, 1) for bit in a_l):  # honest bits: additions only
        big_a = be.mul(pg.H, alpha)
        for bit, g_i, h_i in zip(a_l, gs, hs, strict=True):
            big_a = be.add(big_a, g_i) if bit else be.sub(big_a, h_i)
    else:
        big_a = be.msm([pg.H, *gs, *hs], [alpha, *(b % R for b in a_l), *a_r])
    # S = rho*H + <s_L, Gs> + <s_R, Hs>.
    s_l = [rng() for _ in range(size)]
    s_r = [rng() for _ in range(size)]
    rho = rng()
    big_s = be.msm([pg.H, *gs, *hs], [rho, *s_l, *s_r])
    a_aff, s_aff = be.to_affine(big_a), be.to_affine(big_s)
    transcript.append_point(b"A", a_aff)
    transcript.append_point(b"S", s_aff)
    y = transcript.challenge_scalar(b"y")
    z = transcript.challenge_scalar(b"z")

    # l(X) = (a_L - z) + s_L X ;  r(X) = y^N o (a_R + z + s_R X) + zeta, where
    # zeta_i = z^(2+j) 2^(i mod n) for i in block j (eq. 70-71).
    y_pow = _powers(y, size)
    two_pow = _powers(2, n)
    z_pow = _powers(z, m + 3)
    l0 = [(bit - z) % R for bit in a_l]
    r0 = [
        (y_pow[i] * (a_r[i] + z) + z_pow[2 + i // n] * two_pow[i % n]) % R for i in range(size)
    ]
    r1 = [y_pow[i] * s_r[i] % R for i in range(size)]
    t1 = (_inner(l0, r1) + _inner(s_l, r0)) % R
    t2 = _inner(s_l, r1)

    tau1, tau2 = rng(), rng()
    t1_aff = be.to_affine(be.msm([pg.G, pg.H], [t1, tau1]))
    t2_aff = be.to_affine(be.msm([pg.G, pg.H], [t2, tau2]))
    transcript.append_point(b"T1", t1_aff)
    transcript.append_point(b"T2", t2_aff)
    x = transcript.challenge_scalar(b"x")

    l_vec = [(l0[i] + s_l[i] * x) % R for i in range(size)]
    r_vec = [(r0[i] + r1[i] * x) % R for i in range(size)]
    t_x = _inner(l_vec, r_vec)
    t_x_blinding = (
        tau2 * x * x + tau1 * x + sum(z_pow[2 + j] * g for j, g in enumerate(blindings))
    ) % R
    e_blinding = (alpha + rho * x) % R
    transcript.append_scalar(b"t_x", t_x)
    transcript.append_scalar(b"t_x_blinding", t_x_blinding)
    transcript.append_scalar(b"e_blinding", e_blinding)
    w = transcript.challenge_scalar(b"w")

    # Inner-product argument on H'_i = y^-i H_i, without computing H' as points.
    lefts, rights, a, b = _inner_product_prove(
        transcript, be, be.mul(bg.U, w), list(gs), list(hs), _inv(y), l_vec, r_vec
    )
    proof = RangeProof(a_aff, s_aff, t1_aff, t2_aff, t_x, t_x_blinding, e_blinding,
                       tuple(lefts), tuple(rights), a, b)
    return proof, commitments


def _inv(x: int) -> int:
    """x^-1 mod r (x nonzero)."""
    return int(gmpy2.invert(x, R))


def _fold(be: GroupBackend, points: list[Point], ratio: int) -> list[Point]:
    """P'_i = P_i + ratio * P_(h+i): one scalar multiplication per new point."""
    h = len(points) // 2
    return [be.add(points[i], be.mul(points[h + i], ratio)) for i in range(h)]


def _inner_product_prove(
    transcript: Transcript,
    be: GroupBackend,
    q: Point,
    g_vec: list[Point],
    h_vec: list[Point],
    y_inv: int,
    a: list[int],
    b: list[int],
) -> tuple[list[G1Affine], list[G1Affine], int, int]:
    """Protocol 2 of the paper: prove P = <a, G> + <b, H'> + <a, b> Q with H'_i = y^-i H_i.

    Each round: L = <a_lo, G_hi> + <b_hi, H'_lo> + <a_lo, b_hi> Q,
                R = <a_hi, G_lo> + <b_lo, H'_hi> + <a_hi, b_lo> Q, u = challenge,
                a' = u a_lo + u^-1 a_hi, b' = u^-1 b_lo + u b_hi,
                G' = u^-1 G_lo + u G_hi, H' = u H_lo + u^-1 H_hi.

    The folded generators are kept as points times geometric factors, G'_i = kg * P_i and
    H'_i = kh * rho^i * Q_i (rho = y^-1), so that each fold is P_i + c * P_(h+i) with one
    constant c per round, and H' is never computed as points.
    """
    size = len(a)
    rho_pow = _powers(y_inv, size)
    kg = kh = 1
    lefts: list[G1Affine] = []
    rights: list[G1Affine] = []
    while len(a) > 1:
        h = len(a) // 2
        a_lo, a_hi, b_lo, b_hi = a[:h], a[h:], b[:h], b[h:]
        c_l, c_r = _inner(a_lo, b_hi), _inner(a_hi, b_lo)
        big_l = be.msm(
            [*g_vec[h:], *h_vec[:h], q],
            [*(x * kg % R for x in a_lo),
             *(b_hi[i] * kh * rho_pow[i] % R for i in range(h)), c_l],
        )
        big_r = be.msm(
            [*g_vec[:h], *h_vec[h:], q],
            [*(x * kg % R for x in a_hi),
             *(b_lo[i] * kh * rho_pow[h + i] % R for i in range(h)), c_r],
        )
        l_aff, r_aff = be.to_affine(big_l), be.to_affine(big_r)
        transcript.append_point(b"L", l_aff)
        transcript.append_point(b"R", r_aff)
        lefts.append(l_aff)
        rights.append(r_aff)
        u = transcript.challenge_scalar(b"u")
        u_inv = _inv(u)
        a = [(a_lo[i] * u + a_hi[i] * u_inv) % R for i in range(h)]
        b = [(b_lo[i] * u_inv + b_hi[i] * u) % R for i in range(h)]
        if h > 1:  # the last round's folded generators are never used
            u_sq, u_inv_sq = u * u % R, u_inv * u_inv % R
            # G'_i = u^-1 kg P_i + u kg P_(h+i) = (u^-1 kg) (P_i + u^2 P_(h+i))
            g_vec = _fold(be, g_vec, u_sq)
            kg = kg * u_inv % R
            # H'_i = u kh rho^i Q_i + u^-1 kh rho^(h+i) Q_(h+i)
            #      = (u kh) rho^i (Q_i + u^-2 rho^h Q_(h+i))
            h_vec = _fold(be, h_vec, u_inv_sq * rho_pow[h] % R)
            kh = kh * u % R
    return lefts, rights, a[0], b[0]


@dataclass(frozen=True, slots=True)
class _Terms:
    """One proof's verification equation as MSM terms (PROTOCOL.md §6)."""

    g: int  # coefficient of the Pedersen G
    h: int  # coefficient of the Pedersen H
    u: int  # coefficient of U
    gs: list[int]
    hs: list[int]
    points: list[G1Affine]
    scalars: list[int]
    challenges: tuple[int, ...]  # y, z, x, w, u_1..u_k (for test vectors)


def _verification_terms(
    transcript: Transcript,
    proof: RangeProof,
    commitments: Sequence[G1Affine],
    n: int,
    c: int,
) -> _Terms:
    """Replay the transcript and expand both verification equations into MSM terms whose sum
    is the identity iff the proof is valid (the t equation weighted by c)."""
    m = len(commitments)
    size = n * m
    _start(transcript, n, m, commitments)
    transcript.append_point(b"A", proof.A)
    transcript.append_point(b"S", proof.S)
    y = transcript.challenge_scalar(b"y")
    z = transcript.challenge_scalar(b"z")
    transcript.append_point(b"T1", proof.T1)
    transcript.append_point(b"T2", proof.T2)
    x = transcript.challenge_scalar(b"x")
    transcript.append_scalar(b"t_x", proof.t_x)
    transcript.append_scalar(b"t_x_blinding", proof.t_x_blinding)
    transcript.append_scalar(b"e_blinding", proof.e_blinding)
    w = transcript.challenge_scalar(b"w")
    us = []
    for left, right in zip(proof.L, proof.R, strict=True):
        transcript.append_point(b"L", left)
        transcript.append_point(b"R", right)
        us.append(transcript.challenge_scalar(b"u"))
    rounds = len(us)

    # s_i = prod_j u_j^(+1 if bit (rounds - j) of i is set else -1), j = 1..rounds.
    u_sq = [u * u % R for u in us]
    s = [0] * size
    s[0] = _inv(_product(us))
    for i in range(1, size):
        top = i.bit_length() - 1
        s[i] = s[i - (1 << top)] * u_sq[rounds - 1 - top] % R

    y_pow = _powers(y, size)
    y_inv_pow = _powers(_inv(y), size)
    two_pow = _powers(2, n)
    z_pow = _powers(z, m + 3)
    delta = ((z - z * z) * sum(y_pow) - ((1 << n) - 1) * sum(z_pow[3 : 3 + m])) % R
    a, b = proof.a, proof.b
    gs = [(-z - a * s[i]) % R for i in range(size)]
    hs = [
        (z + (z_pow[2 + i // n] * two_pow[i % n] - b * s[size - 1 - i]) * y_inv_pow[i]) % R
        for i in range(size)
    ]
    points = [*commitments, proof.T1, proof.T2, proof.A, proof.S, *proof.L, *proof.R]
    scalars = [
        *((-c * z_pow[2 + j]) % R for j in range(m)),
        (-c * x) % R,
        (-c * x * x) % R,
        1,
        x,
        *u_sq,
        *(_inv(u2) for u2 in u_sq),
    ]
    return _Terms(
        g=c * (proof.t_x - delta) % R,
        h=(c * proof.t_x_blinding - proof.e_blinding) % R,
        u=w * (proof.t_x - a * b) % R,
        gs=gs,
        hs=hs,
        points=points,
        scalars=scalars,
        challenges=(y, z, x, w, *us),
    )


def _product(values: Sequence[int]) -> int:
    out = 1
    for v in values:
        out = out * v % R
    return out


@dataclass(frozen=True, slots=True)
class Statement:
    """One range proof to check: its transcript (context absorbed), bytes, and commitments."""

    transcript: Transcript
    proof: bytes
    commitments: Sequence[bytes]
    n: int


def _decode(statement: Statement) -> tuple[RangeProof, list[G1Affine]]:
    m = len(statement.commitments)
    check_parameters(statement.n, m)
    commitments = [bytes_to_point(c) for c in statement.commitments]
    return RangeProof.from_bytes(statement.proof, n=statement.n, m=m), commitments


def verify(
    transcript: Transcript,
    proof: bytes,
    commitments: Sequence[bytes],
    *,
    n: int,
    backend: GroupBackend | None = None,
    rng: ScalarSource = random_scalar,
) -> None:
    """Verify one (possibly aggregated) range proof as a single MSM.

    Raises DecodeError or ParameterError for malformed input and VerificationError (opaque)
    for a well-formed proof that does not verify.
    """
    batch_verify([Statement(transcript, proof, commitments, n)], backend=backend, rng=rng)


def batch_verify(
    statements: Sequence[Statement],
    *,
    backend: GroupBackend | None = None,
    rng: ScalarSource = random_scalar,
) -> None:
    """Verify many range proofs at once: every proof's terms under an independent random
    weight, summed into one MSM. Raises VerificationError if any proof is invalid.

    Each statement's transcript is cloned before use: verification never changes a caller's
    transcript, so the same statement can be verified again (and gives the same answer).
    Every weight and every c is drawn from ``rng`` and must be in [1, r) (see ``_draw``)."""
    be = backend or get_backend()
    decoded = [_decode(st) for st in statements]  # all input is validated before any work
    if not decoded:
        return
    size = max(st.n * len(st.commitments) for st in statements)
    g_sum = h_sum = u_sum = 0
    gs_sum = [0] * size
    hs_sum = [0] * size
    points: list[G1Affine] = []
    scalars: list[int] = []
    for st, (proof, commitments) in zip(statements, decoded, strict=True):
        weight = 1 if len(statements) == 1 else _draw(rng)
        terms = _verification_terms(st.transcript.clone(), proof, commitments, st.n,
                                    _draw(rng))
        g_sum += weight * terms.g
        h_sum += weight * terms.h
        u_sum += weight * terms.u
        for i, coef in enumerate(terms.gs):
            gs_sum[i] += weight * coef
        for i, coef in enumerate(terms.hs):
            hs_sum[i] += weight * coef
        points += terms.points
        scalars += [weight * k % R for k in terms.scalars]
    pg = pedersen_gens(be)
    bg = bulletproof_gens(be)
    total = be.msm(
        [pg.G, pg.H, bg.U, *bg.G(size), *bg.H(size), *(be.from_affine(p) for p in points)],
        [g_sum % R, h_sum % R, u_sum % R, *(k % R for k in gs_sum), *(k % R for k in hs_sum),
         *scalars],
    )
    if not be.is_identity(total):
        raise VerificationError()

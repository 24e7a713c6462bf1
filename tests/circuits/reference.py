"""Naive, independent re-implementations written from the documentation (generators.py and
transcript.py docstrings, PROTOCOL.md §3-§6), against which the tests check circuits/.

Nothing here imports circuits' protocol code: only keccak256, the constants and a group
backend for point arithmetic. Clarity over speed: the inner-product argument is verified by
folding the generators round by round, as in Protocol 2 of the paper, not by one MSM.
"""

from dataclasses import dataclass

from circuits.constants import CURVE_ORDER, FIELD_MODULUS
from circuits.encoding import G1Affine
from circuits.hashing import keccak256

R, P = CURVE_ORDER, FIELD_MODULUS


def reference_hash_to_g1(label: bytes, index: int) -> G1Affine:
    """Try-and-increment exactly as documented, with the square root checked by Euler's
    criterion instead of by squaring."""
    for counter in range(256):
        preimage = (b"ZKMETER_H2G1_V1_" + len(label).to_bytes(1, "big") + label
                    + index.to_bytes(4, "big") + counter.to_bytes(1, "big"))
        x = int.from_bytes(keccak256(preimage), "big") % P
        rhs = (x**3 + 3) % P
        if rhs != 0 and pow(rhs, (P - 1) // 2, P) != 1:
            continue  # not a square: next counter
        y = pow(rhs, (P + 1) // 4, P)
        assert y * y % P == rhs
        return G1Affine(x, y if y % 2 == 0 else P - y)
    raise AssertionError("no point in 256 tries")


class ReferenceTranscript:
    """The transcript operations exactly as documented (PROTOCOL.md §4)."""

    def __init__(self, domain: bytes) -> None:
        self.state = keccak256(domain)

    def append(self, label: bytes, data: bytes) -> None:
        self.state = keccak256(self.state + b"\x01" + bytes([len(label)]) + label
                               + len(data).to_bytes(4, "big") + data)

    def challenge(self, label: bytes) -> int:
        while True:
            self.state = keccak256(self.state + b"\x02" + bytes([len(label)]) + label)
            c = int.from_bytes(self.state, "big") % R
            if c:
                return c


@dataclass
class ParsedProof:
    A: bytes
    S: bytes
    T1: bytes
    T2: bytes
    t_x: int
    t_x_blinding: int
    e_blinding: int
    L: list[bytes]
    R: list[bytes]
    a: int
    b: int


def parse_proof(data: bytes, rounds: int) -> ParsedProof:
    """Split the proof bytes per PROTOCOL.md §5 (no validation: the caller's proofs are
    honest or deliberately wrong but well formed)."""
    assert data[0] == 1
    assert len(data) == 1 + 4 * 64 + 3 * 32 + rounds * 128 + 64
    points = [data[1 + 64 * i: 65 + 64 * i] for i in range(4)]
    pos = 257
    scalars = [int.from_bytes(data[pos + 32 * i: pos + 32 * i + 32], "big") for i in range(3)]
    pos += 96
    lefts, rights = [], []
    for _ in range(rounds):
        lefts.append(data[pos:pos + 64])
        rights.append(data[pos + 64:pos + 128])
        pos += 128
    a = int.from_bytes(data[pos:pos + 32], "big")
    b = int.from_bytes(data[pos + 32:pos + 64], "big")
    return ParsedProof(*points, *scalars, lefts, rights, a, b)


def inv(x: int) -> int:
    return pow(x, R - 2, R)


@dataclass
class Replay:
    """The verifier's challenges, replayed with the reference transcript."""

    y: int
    z: int
    x: int
    w: int
    us: list[int]
    state: bytes  # the transcript state after the last challenge


def replay(proof: ParsedProof, commitments: list[bytes], n: int, ctx) -> Replay:
    """PROTOCOL.md §4, the table of a range proof's transcript, row by row."""
    t = ReferenceTranscript(b"ZKMETER_RANGE_V1")
    t.append(b"chain-id", ctx.chain_id.to_bytes(32, "big"))
    t.append(b"contract", ctx.contract)
    t.append(b"provider", ctx.provider_id)
    t.append(b"epoch", ctx.epoch_id.to_bytes(8, "big"))
    t.append(b"dom-sep", b"rangeproof v1")
    t.append(b"n", n.to_bytes(4, "big"))
    t.append(b"m", len(commitments).to_bytes(4, "big"))
    for v in commitments:
        t.append(b"V", v)
    t.append(b"A", proof.A)
    t.append(b"S", proof.S)
    y, z = t.challenge(b"y"), t.challenge(b"z")
    t.append(b"T1", proof.T1)
    t.append(b"T2", proof.T2)
    x = t.challenge(b"x")
    for label, value in ((b"t_x", proof.t_x), (b"t_x_blinding", proof.t_x_blinding),
                         (b"e_blinding", proof.e_blinding)):
        t.append(label, value.to_bytes(32, "big"))
    w = t.challenge(b"w")
    us = []
    for left, right in zip(proof.L, proof.R, strict=True):
        t.append(b"L", left)
        t.append(b"R", right)
        us.append(t.challenge(b"u"))
    return Replay(y, z, x, w, us, t.state)


def s_vector(us: list[int], size: int) -> list[int]:
    """s_i = prod_{j=1..k} u_j^(+1 if bit (k - j) of i is set else -1), computed naively."""
    k = len(us)
    out = []
    for i in range(size):
        s = 1
        for j in range(1, k + 1):
            bit = (i >> (k - j)) & 1
            s = s * (us[j - 1] if bit else inv(us[j - 1])) % R
        out.append(s)
    return out


def delta(y: int, z: int, n: int, m: int) -> int:
    """delta(y, z) = (z - z^2) <1, y^N> - sum_j z^(3+j) <1, 2^n>."""
    size = n * m
    return ((z - z * z) * sum(pow(y, i, R) for i in range(size))
            - sum(pow(z, 3 + j, R) for j in range(m)) * ((1 << n) - 1)) % R


def naive_verify(be, proof_bytes: bytes, commitments: list[bytes], n: int, ctx) -> bool:
    """Both equations of the paper checked separately; the inner-product argument by folding
    the generators round by round (Protocol 2), with H'_i = y^-i H_i computed as points."""
    m = len(commitments)
    size = n * m
    rounds = size.bit_length() - 1
    proof = parse_proof(proof_bytes, rounds)
    ch = replay(proof, commitments, n, ctx)
    y, z, x, w = ch.y, ch.z, ch.x, ch.w

    def pt(data: bytes):
        return be.from_affine(G1Affine(int.from_bytes(data[:32], "big"),
                                       int.from_bytes(data[32:], "big")))

    def lin(terms):
        acc = be.identity()
        for k, point in terms:
            acc = be.add(acc, be.mul(point, k % R))
        return acc

    def same(p1, p2) -> bool:
        return be.to_affine(p1) == be.to_affine(p2)

    g = be.from_affine(G1Affine(1, 2))
    h = be.from_affine(reference_hash_to_g1(b"pedersen.H", 0))
    u_base = be.from_affine(reference_hash_to_g1(b"bulletproofs.U", 0))
    gs = [be.from_affine(reference_hash_to_g1(b"bulletproofs.G", i)) for i in range(size)]
    hs = [be.from_affine(reference_hash_to_g1(b"bulletproofs.H", i)) for i in range(size)]
    vs = [pt(c) for c in commitments]

    # (72): t_x G + tau_x H == sum_j z^(2+j) V_j + delta G + x T1 + x^2 T2.
    lhs = lin([(proof.t_x, g), (proof.t_x_blinding, h)])
    rhs = lin([*((pow(z, 2 + j, R), vs[j]) for j in range(m)), (delta(y, z, n, m), g),
               (x, pt(proof.T1)), (x * x, pt(proof.T2))])
    if not same(lhs, rhs):
        return False

    # P = A + x S - z <1, G> + <z y^N + zeta, H'> - mu H, then + t_x Q for the IPA.
    y_inv = inv(y)
    h_prime = [be.mul(hs[i], pow(y_inv, i, R)) for i in range(size)]
    q = be.mul(u_base, w)
    zeta = [pow(z, 2 + i // n, R) * pow(2, i % n, R) for i in range(size)]
    p = lin([(1, pt(proof.A)), (x, pt(proof.S)), *((-z, gi) for gi in gs),
             *((z * pow(y, i, R) + zeta[i], h_prime[i]) for i in range(size)),
             (-proof.e_blinding, h), (proof.t_x, q)])

    g_vec, h_vec = gs, h_prime
    for left, right, u in zip(proof.L, proof.R, ch.us, strict=True):
        half = len(g_vec) // 2
        u_inv = inv(u)
        p = lin([(u * u, pt(left)), (1, p), (u_inv * u_inv, pt(right))])
        g_vec = [lin([(u_inv, g_vec[i]), (u, g_vec[half + i])]) for i in range(half)]
        h_vec = [lin([(u, h_vec[i]), (u_inv, h_vec[half + i])]) for i in range(half)]
    final = lin([(proof.a, g_vec[0]), (proof.b, h_vec[0]), (proof.a * proof.b, q)])
    return same(p, final)

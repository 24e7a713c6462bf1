// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {BN254} from "./BN254.sol";
import {BulletproofGenerators as Gens} from "./BulletproofGenerators.sol";
import {IBulletproofVerifier} from "./IBulletproofVerifier.sol";

/// @title BulletproofVerifier: one 32-bit Bulletproofs range proof, checked as one MSM
/// @notice Implements circuits/PROTOCOL.md for n = 32, m = 1 byte for byte.
/// @dev Accepts iff (PROTOCOL.md §6), with delta = (z - z^2) <1, y^32> - (2^32 - 1) z^3 and
///      s_i = prod_j u_j^(+-1) (bit (5 - j) of i):
///
///        c (t_x - delta) G + (c t_x_blinding - e_blinding) H + w (t_x - a b) U
///      + sum_i (-z - a s_i) G_i + sum_i (z + (z^2 2^i - b s_{31-i}) y^-i) H_i
///      - c z^2 V - c x T1 - c x^2 T2 + A + x S + sum_j (u_j^2 L_j + u_j^-2 R_j) == identity
///
///      81 ECMULs (A has coefficient 1) and 81 ECADDs. The verifier has no private randomness,
///      so `c` comes from the transcript after everything the prover sends: append "a",
///      append "b", challenge "c".
contract BulletproofVerifier is IBulletproofVerifier {
    /// @dev Proof layout (PROTOCOL.md §5): version, A, S, T1, T2, t_x, t_x_blinding,
    ///      e_blinding, (L_j, R_j) for j = 1..5, a, b.
    uint256 private constant PROOF_LENGTH = 1057;
    uint256 private constant OFF_A = 1;
    uint256 private constant OFF_S = 65;
    uint256 private constant OFF_T1 = 129;
    uint256 private constant OFF_T2 = 193;
    uint256 private constant OFF_TX = 257;
    uint256 private constant OFF_TXB = 289;
    uint256 private constant OFF_EB = 321;
    uint256 private constant OFF_LR = 353;
    uint256 private constant OFF_A_SCALAR = 993;
    uint256 private constant OFF_B_SCALAR = 1025;
    uint256 private constant ROUNDS = 5;
    uint256 private constant N = 32;

    /// @dev keccak256("ZKMETER_RANGE_V1"): the transcript's start state.
    bytes32 private constant START_STATE = keccak256("ZKMETER_RANGE_V1");

    uint256 private constant R = BN254.R;
    /// @dev r again, as a literal: inline assembly reads only literal constants.
    uint256 private constant ORDER =
        21888242871839275222246405745257275088548364400416034343698204186575808495617;

    /// @inheritdoc IBulletproofVerifier
    function verify(
        uint256 chainId,
        address settlement,
        bytes32 providerId,
        uint64 epochId,
        uint256 commitmentX,
        uint256 commitmentY,
        bytes calldata proof
    ) external view returns (bool valid) {
        if (!_wellFormed(commitmentX, commitmentY, proof)) return false;
        uint256[10] memory chs =
            _transcript(chainId, settlement, providerId, epochId, commitmentX, commitmentY, proof);
        uint256 work = _inversesAndFolds(chs);
        uint256 acc = _pointTerms(chs, work, commitmentX, commitmentY, proof);
        _baseTerms(acc, chs, proof);
        return _vectorTerms(acc, work);
    }

    /// @inheritdoc IBulletproofVerifier
    function challenges(
        uint256 chainId,
        address settlement,
        bytes32 providerId,
        uint64 epochId,
        uint256 commitmentX,
        uint256 commitmentY,
        bytes calldata proof
    ) external pure returns (Challenges memory ch) {
        if (!_wellFormed(commitmentX, commitmentY, proof)) revert MalformedProof();
        uint256[10] memory chs =
            _transcript(chainId, settlement, providerId, epochId, commitmentX, commitmentY, proof);
        ch.y = chs[0];
        ch.z = chs[1];
        ch.x = chs[2];
        ch.w = chs[3];
        for (uint256 j = 0; j < ROUNDS; ++j) {
            ch.u[j] = chs[4 + j];
        }
        ch.c = chs[9];
    }

    /// @dev Length 1057, version 1, the commitment and all 14 points on the curve (coordinates
    ///      < p, not the identity), all 5 scalars < r.
    function _wellFormed(uint256 cx, uint256 cy, bytes calldata proof) private pure returns (bool ok) {
        if (proof.length != PROOF_LENGTH) return false;
        if (!BN254.isOnCurve(cx, cy)) return false;
        assembly ("memory-safe") {
            let p := 21888242871839275222246405745257275088696311157297823662689037894645226208583
            let base := proof.offset
            ok := eq(shr(248, calldataload(base)), 1)
            // A, S, T1, T2 at 1 + 64k, k < 4; L_j, R_j at 353 + 64k, k < 10.
            for { let off := 1 } lt(off, 993) { off := add(off, 64) } {
                if eq(off, 257) { off := 353 }
                let x := calldataload(add(base, off))
                let y := calldataload(add(base, add(off, 32)))
                ok := and(ok, and(lt(x, p), lt(y, p)))
                ok := and(ok, eq(mulmod(y, y, p), addmod(mulmod(x, mulmod(x, x, p), p), 3, p)))
            }
            ok := and(ok, lt(calldataload(add(base, 257)), ORDER))
            ok := and(ok, lt(calldataload(add(base, 289)), ORDER))
            ok := and(ok, lt(calldataload(add(base, 321)), ORDER))
            ok := and(ok, lt(calldataload(add(base, 993)), ORDER))
            ok := and(ok, lt(calldataload(add(base, 1025)), ORDER))
        }
    }

    /// @dev Replays the transcript of PROTOCOL.md §4 and returns [y, z, x, w, u_1..u_5, c]:
    ///      append(label, d): state = keccak256(state || 0x01 || u8(len(label)) || label ||
    ///                                          u32(len(d)) || d)
    ///      challenge(label): state = keccak256(state || 0x02 || u8(len(label)) || label),
    ///                        c = state mod r, again while c == 0.
    ///      c, which PROTOCOL.md leaves to the verifier, is: append "a", append "b" (the final
    ///      scalars), challenge "c".
    function _transcript(
        uint256 chainId,
        address settlement,
        bytes32 providerId,
        uint64 epochId,
        uint256 cx,
        uint256 cy,
        bytes calldata proof
    ) private pure returns (uint256[10] memory chs) {
        bytes32 st = START_STATE;
        assembly ("memory-safe") {
            // Each append's header `0x01 || u8(len(label)) || label || u32(len(data))` is a
            // constant, left-aligned in one word (hlen bytes); data follows it.
            // append with one 32-byte data word
            function app32(m, state, hdr, hlen, w) -> next {
                mstore(m, state)
                mstore(add(m, 0x20), hdr)
                mstore(add(add(m, 0x20), hlen), w)
                next := keccak256(m, add(0x40, hlen))
            }
            // append with a 64-byte point copied from calldata at `at`
            function app64(m, state, hdr, hlen, at) -> next {
                mstore(m, state)
                mstore(add(m, 0x20), hdr)
                calldatacopy(add(add(m, 0x20), hlen), at, 0x40)
                next := keccak256(m, add(0x60, hlen))
            }
            // challenge: `word` = 0x02 || 0x01 || label, left-aligned
            function challenge(m, state, word) -> next, c {
                next := state
                for {} iszero(c) {} {
                    mstore(m, next)
                    mstore(add(m, 0x20), word)
                    next := keccak256(m, 0x23)
                    c := mod(next, ORDER)
                }
            }
            let m := mload(0x40)
            let base := proof.offset
            let c
            // context (RangeProofContext.transcript)
            st := app32(m, st, 0x0108636861696e2d696400000020000000000000000000000000000000000000, 14, chainId)
            mstore(m, st) // "contract": 20-byte address
            mstore(add(m, 0x20), 0x0108636f6e747261637400000014000000000000000000000000000000000000)
            mstore(add(m, 0x2e), shl(96, settlement))
            st := keccak256(m, 0x42)
            st := app32(m, st, 0x010870726f766964657200000020000000000000000000000000000000000000, 14, providerId)
            mstore(m, st) // "epoch": u64
            mstore(add(m, 0x20), 0x010565706f636800000008000000000000000000000000000000000000000000)
            mstore(add(m, 0x2b), shl(192, epochId))
            st := keccak256(m, 0x33)
            // "dom-sep" = "rangeproof v1", "n" = u32 32, "m" = u32 1: header and data constant
            mstore(m, st)
            mstore(add(m, 0x20), 0x0107646f6d2d7365700000000d72616e676570726f6f66207631000000000000)
            st := keccak256(m, 0x3a)
            mstore(m, st)
            mstore(add(m, 0x20), 0x01016e0000000400000020000000000000000000000000000000000000000000)
            st := keccak256(m, 0x2b)
            mstore(m, st)
            mstore(add(m, 0x20), 0x01016d0000000400000001000000000000000000000000000000000000000000)
            st := keccak256(m, 0x2b)
            mstore(m, st) // "V": the commitment
            mstore(add(m, 0x20), 0x0101560000004000000000000000000000000000000000000000000000000000)
            mstore(add(m, 0x27), cx)
            mstore(add(m, 0x47), cy)
            st := keccak256(m, 0x67)
            st := app64(m, st, 0x0101410000004000000000000000000000000000000000000000000000000000, 7, add(base, 1))
            st := app64(m, st, 0x0101530000004000000000000000000000000000000000000000000000000000, 7, add(base, 65))
            st, c := challenge(m, st, 0x0201790000000000000000000000000000000000000000000000000000000000) // y
            mstore(chs, c)
            st, c := challenge(m, st, 0x02017a0000000000000000000000000000000000000000000000000000000000) // z
            mstore(add(chs, 0x20), c)
            st := app64(m, st, 0x0102543100000040000000000000000000000000000000000000000000000000, 8, add(base, 129))
            st := app64(m, st, 0x0102543200000040000000000000000000000000000000000000000000000000, 8, add(base, 193))
            st, c := challenge(m, st, 0x0201780000000000000000000000000000000000000000000000000000000000) // x
            mstore(add(chs, 0x40), c)
            st := app32(m, st, 0x0103745f78000000200000000000000000000000000000000000000000000000, 9,
                        calldataload(add(base, 257)))
            st := app32(m, st, 0x010c745f785f626c696e64696e67000000200000000000000000000000000000, 18,
                        calldataload(add(base, 289)))
            st := app32(m, st, 0x010a655f626c696e64696e670000002000000000000000000000000000000000, 16,
                        calldataload(add(base, 321)))
            st, c := challenge(m, st, 0x0201770000000000000000000000000000000000000000000000000000000000) // w
            mstore(add(chs, 0x60), c)
            for { let j := 0 } lt(j, 5) { j := add(j, 1) } {
                let at := add(base, add(353, shl(7, j)))
                st := app64(m, st, 0x01014c0000004000000000000000000000000000000000000000000000000000, 7, at)
                st := app64(m, st, 0x0101520000004000000000000000000000000000000000000000000000000000, 7, add(at, 64))
                st, c := challenge(m, st, 0x0201750000000000000000000000000000000000000000000000000000000000) // u
                mstore(add(chs, shl(5, add(4, j))), c)
            }
            // c: append "a", append "b", challenge "c"
            st := app32(m, st, 0x0101610000002000000000000000000000000000000000000000000000000000, 7,
                        calldataload(add(base, 993)))
            st := app32(m, st, 0x0101620000002000000000000000000000000000000000000000000000000000, 7,
                        calldataload(add(base, 1025)))
            st, c := challenge(m, st, 0x0201630000000000000000000000000000000000000000000000000000000000)
            mstore(add(chs, 0x120), c)
        }
    }

    /// @dev Fresh memory `work` holding [y^-1, u_1^-1, ..., u_5^-1] (6 words, by Montgomery's
    ///      batch inversion and one MODEXP) then s_0..s_31 (32 words), where
    ///      s_i = prod_j u_j^(+1 if bit (5 - j) of i is set else -1): s_0 = prod_j u_j^-1, and
    ///      setting the top bit k of i multiplies by u_{5-k}^2.
    function _inversesAndFolds(uint256[10] memory chs) private view returns (uint256 work) {
        bool ok;
        assembly ("memory-safe") {
            work := mload(0x40)
            let s := add(work, 0xc0)
            let pre := add(s, 0x400)
            mstore(0x40, add(pre, 0xc0))
            // pre[k] = y * u_1 * ... * u_k; chs[4 + k - 1] = u_k
            mstore(pre, mload(chs))
            for { let k := 1 } lt(k, 6) { k := add(k, 1) } {
                mstore(add(pre, shl(5, k)),
                       mulmod(mload(add(pre, shl(5, sub(k, 1)))), mload(add(chs, shl(5, add(k, 3)))), ORDER))
            }
            // t = pre[5]^(ORDER-2) mod ORDER, with MODEXP on scratch memory at s
            mstore(s, 0x20)
            mstore(add(s, 0x20), 0x20)
            mstore(add(s, 0x40), 0x20)
            mstore(add(s, 0x60), mload(add(pre, 0xa0)))
            mstore(add(s, 0x80), sub(ORDER, 2))
            mstore(add(s, 0xa0), ORDER)
            ok := staticcall(gas(), 0x05, s, 0xc0, s, 0x20)
            let t := mload(s)
            for { let k := 5 } gt(k, 0) { k := sub(k, 1) } {
                mstore(add(work, shl(5, k)), mulmod(t, mload(add(pre, shl(5, sub(k, 1)))), ORDER))
                t := mulmod(t, mload(add(chs, shl(5, add(k, 3)))), ORDER)
            }
            mstore(work, t)
            // s_0 = prod_j u_j^-1
            let s0 := 1
            for { let k := 1 } lt(k, 6) { k := add(k, 1) } { s0 := mulmod(s0, mload(add(work, shl(5, k))), ORDER) }
            mstore(s, s0)
            for { let top := 0 } lt(top, 5) { top := add(top, 1) } {
                let u := mload(add(chs, shl(5, sub(8, top)))) // u_{5 - top}
                let uSq := mulmod(u, u, ORDER)
                let half := shl(top, 1)
                for { let i := 0 } lt(i, half) { i := add(i, 1) } {
                    mstore(add(s, shl(5, add(half, i))), mulmod(mload(add(s, shl(5, i))), uSq, ORDER))
                }
            }
        }
        if (!ok) revert BN254.PrecompileFailed(0x05);
    }

    /// @dev The running sum `acc` (fresh memory: acc.x, acc.y, 0x60 bytes of scratch, then
    ///      z, a, b for `_vectorTerms`)
    ///      of A + x S - c z^2 V - c x T1 - c x^2 T2 + sum_j (u_j^2 L_j + u_j^-2 R_j).
    function _pointTerms(uint256[10] memory chs, uint256 work, uint256 cx, uint256 cy, bytes calldata proof)
        private
        view
        returns (uint256 acc)
    {
        bool ok;
        assembly ("memory-safe") {
            function mulAdd(m, px, py, k) -> success {
                mstore(add(m, 0x40), px)
                mstore(add(m, 0x60), py)
                mstore(add(m, 0x80), k)
                success := staticcall(gas(), 0x07, add(m, 0x40), 0x60, add(m, 0x40), 0x40)
                success := and(success, staticcall(gas(), 0x06, m, 0x80, m, 0x40))
            }
            let base := proof.offset
            acc := mload(0x40)
            mstore(0x40, add(acc, 0x100))
            mstore(acc, calldataload(add(base, 1))) // A
            mstore(add(acc, 0x20), calldataload(add(base, 33)))
            let x := mload(add(chs, 0x40))
            let c := mload(add(chs, 0x120))
            let cX := mulmod(c, x, ORDER)
            let z := mload(add(chs, 0x20))
            ok := mulAdd(acc, calldataload(add(base, 65)), calldataload(add(base, 97)), x) // S
            ok := and(ok, mulAdd(acc, cx, cy, sub(ORDER, mulmod(c, mulmod(z, z, ORDER), ORDER)))) // V
            ok := and(ok, mulAdd(acc, calldataload(add(base, 129)), calldataload(add(base, 161)), sub(ORDER, cX)))
            ok := and(ok, mulAdd(acc, calldataload(add(base, 193)), calldataload(add(base, 225)),
                                 sub(ORDER, mulmod(cX, x, ORDER))))
            for { let j := 0 } lt(j, 5) { j := add(j, 1) } {
                let at := add(base, add(353, shl(7, j)))
                let u := mload(add(chs, shl(5, add(4, j))))
                let ui := mload(add(work, shl(5, add(1, j))))
                ok := and(ok, mulAdd(acc, calldataload(at), calldataload(add(at, 32)), mulmod(u, u, ORDER)))
                ok := and(ok, mulAdd(acc, calldataload(add(at, 64)), calldataload(add(at, 96)), mulmod(ui, ui, ORDER)))
            }
        }
        if (!ok) revert BN254.PrecompileFailed(0x07);
    }

    /// @dev acc + c (t_x - delta) G + (c t_x_blinding - e_blinding) H + w (t_x - a b) U,
    ///      with delta = (z - z^2) <1, y^32> - (2^32 - 1) z^3.
    function _baseTerms(uint256 acc, uint256[10] memory chs, bytes calldata proof) private view {
        uint256[4] memory hu = [Gens.H_X, Gens.H_Y, Gens.U_X, Gens.U_Y];
        bool ok;
        assembly ("memory-safe") {
            function mulAdd(m, px, py, k) -> success {
                mstore(add(m, 0x40), px)
                mstore(add(m, 0x60), py)
                mstore(add(m, 0x80), k)
                success := staticcall(gas(), 0x07, add(m, 0x40), 0x60, add(m, 0x40), 0x40)
                success := and(success, staticcall(gas(), 0x06, m, 0x80, m, 0x40))
            }
            let base := proof.offset
            let y := mload(chs)
            let z := mload(add(chs, 0x20))
            let c := mload(add(chs, 0x120))
            let sumY := 0
            let yPow := 1
            for { let i := 0 } lt(i, 32) { i := add(i, 1) } {
                sumY := addmod(sumY, yPow, ORDER)
                yPow := mulmod(yPow, y, ORDER)
            }
            let zz := mulmod(z, z, ORDER)
            let delta := addmod(mulmod(addmod(z, sub(ORDER, zz), ORDER), sumY, ORDER),
                                sub(ORDER, mulmod(0xffffffff, mulmod(zz, z, ORDER), ORDER)), ORDER)
            let tX := calldataload(add(base, 257))
            ok := mulAdd(acc, 1, 2, mulmod(c, addmod(tX, sub(ORDER, delta), ORDER), ORDER)) // G
            ok := and(ok, mulAdd(acc, mload(hu), mload(add(hu, 0x20)),
                                 addmod(mulmod(c, calldataload(add(base, 289)), ORDER),
                                        sub(ORDER, calldataload(add(base, 321))), ORDER))) // H
            mstore(add(acc, 0xa0), z)
            mstore(add(acc, 0xc0), calldataload(add(base, 993)))
            mstore(add(acc, 0xe0), calldataload(add(base, 1025)))
            let ab := mulmod(calldataload(add(base, 993)), calldataload(add(base, 1025)), ORDER)
            ok := and(ok, mulAdd(acc, mload(add(hu, 0x40)), mload(add(hu, 0x60)),
                                 mulmod(mload(add(chs, 0x60)), addmod(tX, sub(ORDER, ab), ORDER), ORDER))) // U
        }
        if (!ok) revert BN254.PrecompileFailed(0x07);
    }

    /// @dev acc + sum_i (-z - a s_i) G_i + sum_i (z + (z^2 2^i - b s_{31-i}) y^-i) H_i (the
    ///      generated, unrolled `BulletproofGenerators.vectorTerms`), and whether the result is
    ///      the identity.
    function _vectorTerms(uint256 acc, uint256 work) private view returns (bool valid) {
        if (!Gens.vectorTerms(acc, work)) revert BN254.PrecompileFailed(0x07);
        assembly ("memory-safe") {
            valid := and(iszero(mload(acc)), iszero(mload(add(acc, 0x20))))
        }
    }
}

"""Gas of the settlement contracts: ``python -m bench.gas --json``.

Measures, on a fresh anvil node started here (127.0.0.1, random port, ``--steps-tracing`` for
the breakdown; the embedded py-evm chain if anvil is not installed, same gas schedule):

* ``submitEpoch`` for 8, 64 and 256 leaves (receipt gasUsed; the least-squares fixed part and
  per-leaf slope; the EIP-7623 calldata floor ``21000 + 10 * tokens`` that Prague imposes,
  and the gas the same transaction would cost without that floor);
* ``challengeRangeProof`` that succeeds (a dishonest proof in a 256-leaf epoch: Merkle path of
  8, one on-chain verification, epoch rejected, bond credited) and the verifier's ``verify``
  alone as a transaction;
* ``finalize`` (first finalize of a provider: its earnings slot goes from zero to nonzero).

Goals (issue 6): submitEpoch <= 3,000 gas per leaf + 100k, challenge <= 550k, finalize <= 60k.
"""

import argparse
import json
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from web3.types import RPCEndpoint

from circuits.backend import get_backend
from circuits.constants import CURVE_ORDER
from circuits.hashing import keccak256
from circuits.pedersen import commit
from circuits.rangeproof import _prove, random_scalar
from circuits.transcript import RangeProofContext
from prover.chain import ChainClient, LeafInput
from verifier.chain import connect

ROOT = Path(__file__).resolve().parents[1]
ANVIL = ROOT / "contracts" / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
SIZES = (8, 64, 256)
GOALS = {"submit_fixed": 100_000, "submit_per_leaf": 3_000, "challenge": 550_000,
         "finalize": 60_000}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_anvil() -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = subprocess.Popen(
        [str(ANVIL), "--host", "127.0.0.1", "--port", str(port), "--silent", "--steps-tracing",
         "--gas-limit", "30000000"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if connect(url).is_connected():
                return proc, url
        except Exception:  # not up yet
            pass
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("anvil did not start")


def _tokens(data: bytes) -> int:
    zeros = data.count(0)
    return zeros + 4 * (len(data) - zeros)


def _breakdown(client: ChainClient, receipt: Any, traced: bool) -> dict[str, int]:
    tx = client.w3.eth.get_transaction(receipt["transactionHash"])
    tokens = _tokens(bytes(tx["input"]))
    out = {"gas": int(receipt["gasUsed"]), "calldata_bytes": len(bytes(tx["input"])),
           "calldata_floor": 21_000 + 10 * tokens}
    if traced:
        trace = client.w3.provider.make_request(
            RPCEndpoint("debug_traceTransaction"),
            [receipt["transactionHash"].to_0x_hex(), {"disableStack": True}])
        logs = trace["result"]["structLogs"]
        top = [step for step in logs if step["depth"] == 1]
        execution = top[0]["gas"] - top[-1]["gas"] + top[-1]["gasCost"]
        refund = int(top[-1].get("refund", 0))
        used = 21_000 + 4 * tokens + execution
        out["without_floor"] = used - min(refund, used // 5)
    return out


def _epoch_leaves(count: int, bad: int | None, ctx: RangeProofContext | None
                  ) -> tuple[list[LeafInput], int, int, dict[str, Any]]:
    values = [secrets.randbelow(1 << 20) for _ in range(count)]
    blindings = [random_scalar() for _ in range(count)]
    leaves, extra = [], {}
    for i, (v, g) in enumerate(zip(values, blindings, strict=True)):
        tag = secrets.token_bytes(32)
        if i == bad and ctx is not None:
            values[i] = v = 1 << 32
            proof_obj, comms = _prove(ctx.transcript(), [v], [g], [0] * 32, 32, get_backend(),
                                      random_scalar)
            proof = proof_obj.to_bytes()
            c = comms[0].x.to_bytes(32, "big") + comms[0].y.to_bytes(32, "big")
            extra = {"tag": tag, "commitment": c, "proof": proof}
        else:
            c = commit(v, g)
            proof = secrets.token_bytes(1057)  # only its hash is submitted
        leaves.append(LeafInput(tag, c, keccak256(proof)))
    return leaves, sum(values), sum(blindings) % CURVE_ORDER, extra


def measure(client: ChainClient, traced: bool) -> dict[str, Any]:
    """Every figure of the module docstring, on one fresh deployment."""
    from circuits import merkle

    client.deploy()
    pid = secrets.token_bytes(32)
    client.register_provider(pid, bond=10**18, unit_price=10**9, challenge_window=3600)
    client.deposit(pid, 10**21)
    result: dict[str, Any] = {"submitEpoch": {}}
    epoch_id = 0
    for size in SIZES:
        epoch_id += 1
        leaves, total, blinding, _ = _epoch_leaves(size, None, None)
        receipt = client.submit_epoch(pid, epoch_id, total=total, total_blinding=blinding,
                                      leaves=leaves)
        figures = _breakdown(client, receipt, traced)
        figures["per_leaf_above_100k"] = round((figures["gas"] - GOALS["submit_fixed"]) / size)
        result["submitEpoch"][str(size)] = figures
    xs = list(SIZES)
    ys = [result["submitEpoch"][str(n)]["gas"] for n in SIZES]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mean_x) ** 2 for x in xs)
    result["submitEpoch_fit"] = {"fixed": round(mean_y - slope * mean_x),
                                 "per_leaf": round(slope)}
    if traced:
        ys2 = [result["submitEpoch"][str(n)]["without_floor"] for n in SIZES]
        mean_y2 = sum(ys2) / len(ys2)
        slope2 = sum((x - mean_x) * (y - mean_y2) for x, y in zip(xs, ys2, strict=True)) / sum(
            (x - mean_x) ** 2 for x in xs)
        result["submitEpoch_fit_without_floor"] = {"fixed": round(mean_y2 - slope2 * mean_x),
                                                   "per_leaf": round(slope2)}

    # a 256-leaf epoch with one dishonest proof, challenged
    epoch_id += 1
    ctx = RangeProofContext(chain_id=client.chain_id,
                            contract=bytes.fromhex(client.settlement.address[2:]),
                            provider_id=pid, epoch_id=epoch_id)
    bad = 77
    leaves, total, blinding, extra = _epoch_leaves(256, bad, ctx)
    client.submit_epoch(pid, epoch_id, total=total, total_blinding=blinding, leaves=leaves)
    tree = merkle.levels([keccak256(lf.tag, lf.commitment, lf.proof_hash) for lf in leaves])
    receipt = client.challenge(pid, epoch_id, leaf_index=bad, tag=extra["tag"],
                               commitment=extra["commitment"], proof=extra["proof"],
                               path=merkle.path(tree, bad), sender=list(client.w3.eth.accounts)[1])
    result["challengeRangeProof"] = {**_breakdown(client, receipt, traced), "leaves": 256}

    verifier = client.w3.eth.contract(address=client.settlement.functions.verifier().call(),
                                      abi=client._contract("BulletproofVerifier").abi)
    c = extra["commitment"]
    fn = verifier.functions.verify(client.chain_id, client.settlement.address, pid, epoch_id,
                                   int.from_bytes(c[:32], "big"), int.from_bytes(c[32:], "big"),
                                   extra["proof"])
    receipt = client._send(fn, gas=2_000_000)
    result["verify_only_tx"] = int(receipt["gasUsed"])

    client.advance_time(3601)
    receipt = client.finalize(pid, 1)
    result["finalize"] = int(receipt["gasUsed"])
    receipt = client.finalize(pid, 2)
    result["finalize_again"] = int(receipt["gasUsed"])
    return result


def goals(result: dict[str, Any]) -> dict[str, Any]:
    """Each goal, its limit and whether it is met."""
    submit = {
        n: {"gas": f["gas"], "limit": GOALS["submit_fixed"] + GOALS["submit_per_leaf"] * int(n),
            "met": f["gas"] <= GOALS["submit_fixed"] + GOALS["submit_per_leaf"] * int(n)}
        for n, f in result["submitEpoch"].items()
    }
    return {
        "submitEpoch": submit,
        "challengeRangeProof": {"gas": result["challengeRangeProof"]["gas"],
                                "limit": GOALS["challenge"],
                                "met": result["challengeRangeProof"]["gas"] <= GOALS["challenge"]},
        "finalize": {"gas": result["finalize"], "limit": GOALS["finalize"],
                     "met": result["finalize"] <= GOALS["finalize"]},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--embedded", action="store_true",
                        help="use the embedded py-evm chain even if anvil is installed")
    args = parser.parse_args(argv)
    proc = None
    try:
        if ANVIL.exists() and not args.embedded:
            proc, url = _start_anvil()
            client, chain, traced = ChainClient.connect(url), "anvil 1.7.1", True
        else:
            client, chain, traced = ChainClient.connect(None), "py-evm (embedded)", False
        start = time.perf_counter()
        result = measure(client, traced)
        result = {"chain": chain, "evm": "prague", **result, "goals": goals(result),
                  "seconds": round(time.perf_counter() - start, 1)}
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

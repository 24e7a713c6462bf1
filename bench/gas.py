"""Gas of the settlement contracts against their floors: ``python -m bench.gas --json``.

Runs on a fresh anvil node started here (127.0.0.1, random port, ``--hardfork prague
--steps-tracing``). Every transaction is traced (``debug_traceTransaction``) and its gas is
set beside its **floor**, the least any implementation of the same design must pay:

    floor = 21,000 + max(10 * tokens,                      (EIP-7623's calldata floor)
                         4 * tokens + precompiles + storage + loads + logs + hashing + token
                         + transfer) - refunds

where ``tokens`` counts calldata bytes (zero bytes 1, others 4), ``precompiles`` is the gas the
BN254 and modexp precompile calls consumed (each call's gas drop: the precompile's price plus
the warm access of 100 that EIP-2929 charges for any call),
``storage`` the SSTOREs' charges, ``loads`` the SLOADs' charges (each slot the design reads is
paid once cold), ``logs`` the LOGn charges, ``hashing`` the KECCAK256 charges (the Merkle root
and leaf hashes cannot be skipped), ``token`` the gas an ERC-20's own code used inside its
calls and ``transfer`` what an ETH payment out costs (value transfer and account access).
Storage refunds (EIP-3529, at most a fifth of the gas) come off the floor as they come off
the receipt. Everything else in ``gas`` is the contracts' own overhead (dispatch, ABI
decoding, checks, memory, the call into the verifier); ``ratio = gas / floor``.

Goals (issue 13): submitEpoch within 10 % of its floor at 16 and 512 leaves;
challengeRangeProof within 8 %; finalize, deposit, withdraw and the availability answer within
15 %. The embedded py-evm chain (``--embedded``) reports gas without the breakdown.
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

from circuits import merkle
from circuits.backend import get_backend
from circuits.constants import CURVE_ORDER
from circuits.hashing import keccak256
from circuits.pedersen import commit
from circuits.rangeproof import _prove, prove, random_scalar
from circuits.transcript import RangeProofContext
from prover.chain import DEFAULT_PARAMS, ChainClient, LeafInput
from verifier.chain import connect

ROOT = Path(__file__).resolve().parents[1]
ANVIL = ROOT / "contracts" / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
SIZES = (16, 512, 1024)
GOALS = {"submitEpoch_16": 1.10, "submitEpoch_512": 1.10, "challengeRangeProof": 1.08,
         "finalize": 1.15, "deposit_eth": 1.15, "deposit_erc20": 1.15,
         "completeWithdrawal": 1.15, "withdraw": 1.15, "answerDemand": 1.15}
PRECOMPILES = range(1, 11)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_anvil() -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = subprocess.Popen(
        [str(ANVIL), "--host", "127.0.0.1", "--port", str(port), "--silent", "--steps-tracing",
         "--hardfork", "prague", "--gas-limit", "30000000"],
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


def _trace_costs(client: ChainClient, tx_hash: Any, token: int | None) -> dict[str, int]:
    """Precompile, SSTORE, SLOAD, LOG, KECCAK256 and token gas of one transaction, from its
    step trace (``token``: the ERC-20's address, whose calls count whole)."""
    trace = client.w3.provider.make_request(
        RPCEndpoint("debug_traceTransaction"),
        [tx_hash.to_0x_hex(), {"disableStack": False, "disableMemory": True,
                               "disableStorage": True}])
    steps = trace["result"]["structLogs"]
    refund = int(steps[-1].get("refund", 0)) if steps else 0
    costs = {"precompiles": 0, "storage": 0, "loads": 0, "logs": 0, "hashing": 0, "token": 0,
             "transfer": 0}
    for i, step in enumerate(steps):
        op = step["op"]
        if op == "CALL" and step["depth"] == 1 and int(step["stack"][-3], 16) > 0 \
                and (token is None or int(step["stack"][-2], 16) != token):
            # an ETH payment out: value transfer and account access (EIP-2929 / 150)
            j = next(k for k in range(i + 1, len(steps)) if steps[k]["depth"] == 1)
            costs["transfer"] += int(step["gas"]) - int(steps[j]["gas"])
            continue
        if token is not None and op in ("CALL", "STATICCALL") and step["depth"] == 1 \
                and int(step["stack"][-2], 16) == token:
            # the token's code runs at depth 2 until the next depth-1 step
            j = next(k for k in range(i + 1, len(steps)) if steps[k]["depth"] == 1)
            costs["token"] += int(step["gas"]) - int(steps[j]["gas"])
            continue
        if token is not None and step["depth"] > 1:
            continue  # inside the token: counted above
        if op == "SSTORE":
            costs["storage"] += int(step["gasCost"])
        elif op == "SLOAD":
            costs["loads"] += int(step["gasCost"])
        elif op.startswith("LOG"):
            costs["logs"] += int(step["gasCost"])
        elif op in ("KECCAK256", "SHA3"):
            costs["hashing"] += int(step["gasCost"])
        elif op == "STATICCALL" and i + 1 < len(steps):
            address = int(step["stack"][-2], 16)
            if address in PRECOMPILES and steps[i + 1]["depth"] == step["depth"]:
                costs["precompiles"] += int(step["gas"]) - int(steps[i + 1]["gas"])
    costs["refund"] = refund
    return costs


def _figures(client: ChainClient, receipt: Any, traced: bool,
             token: str | None = None) -> dict[str, Any]:
    """gas, calldata and, when traced, the floor and the ratio."""
    tx = client.w3.eth.get_transaction(receipt["transactionHash"])
    data = bytes(tx["input"])
    tokens = _tokens(data)
    out: dict[str, Any] = {"gas": int(receipt["gasUsed"]), "calldata_bytes": len(data)}
    if traced:
        costs = _trace_costs(client, receipt["transactionHash"],
                             int(token, 16) if token else None)
        refund = costs.pop("refund")
        executed = 21_000 + 4 * tokens + sum(costs.values())
        floor = max(21_000 + 10 * tokens, executed - min(refund, executed // 5))
        costs["refund"] = refund
        out.update(costs)
        out["floor"] = floor
        out["ratio"] = round(out["gas"] / floor, 3)
    return out


def _leaves(count: int, *, bad: int | None = None, ctx: RangeProofContext | None = None
            ) -> tuple[list[LeafInput], int, int, dict[str, Any]]:
    """``count`` leaves with strictly increasing tags; leaf ``bad`` gets a dishonest proof
    (value 2^32) under ``ctx``; the others have commitments and hashes of random bytes."""
    values = [secrets.randbelow(1 << 20) for _ in range(count)]
    blindings = [random_scalar() for _ in range(count)]
    tags = sorted(secrets.token_bytes(32) for _ in range(count))
    leaves, extra = [], {}
    for i, (v, g) in enumerate(zip(values, blindings, strict=True)):
        if i == bad and ctx is not None:
            values[i] = v = 1 << 32
            proof_obj, comms = _prove(ctx.transcript(), [v], [g], [0] * 32, 32, get_backend(),
                                      random_scalar)
            proof = proof_obj.to_bytes()
            c = comms[0].x.to_bytes(32, "big") + comms[0].y.to_bytes(32, "big")
            extra = {"tag": tags[i], "commitment": c, "proof": proof, "index": i}
        else:
            c = commit(v, g)
            proof = secrets.token_bytes(1057)  # only its hash is submitted
        leaves.append(LeafInput(tags[i], c, keccak256(proof)))
    return leaves, sum(values), sum(blindings) % CURVE_ORDER, extra


def _tree(leaves: list[LeafInput]) -> list[list[bytes]]:
    return merkle.levels([keccak256(lf.tag, lf.commitment, lf.proof_hash) for lf in leaves])


def measure(client: ChainClient, traced: bool) -> dict[str, Any]:
    """Every figure of the module docstring, on one fresh deployment."""
    accounts = list(client.w3.eth.accounts)
    payer, challenger = accounts[1], accounts[2]
    client.deploy()
    key = secrets.token_bytes(32)
    result: dict[str, Any] = {}
    result["registerProvider"] = _figures(client, client.register_provider(
        key, bond=10**21, unit_price=10**3, challenge_window=3600), traced)
    pid = client.provider_id_for(key)
    result["openAccount"] = _figures(client, client.open_account(pid, sender=payer), traced)
    aid = client.account_id_for(pid, payer=payer)
    client.deposit(aid, 10**18, sender=payer)  # the first deposit fills a zero slot
    result["deposit_eth"] = _figures(client, client.deposit(aid, 10**18, sender=payer), traced)

    token = client.deploy_test_token()
    client.open_account(pid, asset=token, sender=payer)
    token_account = client.account_id_for(pid, payer=payer, asset=token)
    client.mint_test_token(token, payer, 10**15)
    client.approve_token(token, 10**15, sender=payer)
    client.deposit(token_account, 10**9, sender=payer)
    result["deposit_erc20"] = _figures(client, client.deposit(token_account, 10**9,
                                                              sender=payer), traced, token)

    epoch_id = 0
    result["submitEpoch"] = {}
    for size in SIZES:
        epoch_id += 1
        leaves, total, blinding, _ = _leaves(size)
        receipt = client.submit_epoch(aid, epoch_id, total=total, total_blinding=blinding,
                                      leaves=leaves)
        result["submitEpoch"][str(size)] = _figures(client, receipt, traced)

    # data availability: a demand on a 16-leaf epoch, answered by the provider
    epoch_id += 1
    ctx = RangeProofContext(chain_id=client.chain_id,
                            contract=bytes.fromhex(client.settlement.address[2:]),
                            provider_id=aid, epoch_id=epoch_id)
    leaves, total, blinding, _ = _leaves(15)
    gamma = random_scalar()
    proof, comms = prove(ctx.transcript(), values=[3], blindings=[gamma], n=32,
                         backend=get_backend())
    leaves.append(LeafInput(b"\xff" * 32, comms[0], keccak256(proof)))
    client.submit_epoch(aid, epoch_id, total=total + 3, total_blinding=(blinding + gamma)
                        % CURVE_ORDER, leaves=leaves)
    salt = secrets.token_bytes(32)
    result["commitChallenge"] = _figures(client, client.commit_challenge(
        2, aid, epoch_id, 15, salt, sender=challenger), traced)
    result["demandData"] = _figures(client, client.demand_data(
        aid, epoch_id, 15, salt=salt, sender=challenger), traced)
    tree = _tree(leaves)
    result["answerDemand"] = _figures(client, client.answer_demand(
        aid, epoch_id, leaf_index=15, tag=leaves[15].tag, commitment=comms[0], proof=proof,
        path=merkle.path(tree, 15)), traced)

    # finalize the first epochs, then withdraw
    client.advance_time(3601)
    result["finalize"] = _figures(client, client.finalize(aid, 1), traced)
    result["finalize_again"] = _figures(client, client.finalize(aid, 2), traced)
    client.request_withdrawal(aid, 10**17, sender=payer)
    client.advance_time(DEFAULT_PARAMS.withdrawal_notice + 1)
    result["completeWithdrawal"] = _figures(client, client.complete_withdrawal(
        aid, sender=payer), traced)
    result["withdrawEarnings"] = _figures(client, client.withdraw_earnings(pid), traced)

    # a 256-leaf epoch with one dishonest proof, challenged (commit, then reveal)
    epoch_id += 1
    ctx = RangeProofContext(chain_id=client.chain_id,
                            contract=bytes.fromhex(client.settlement.address[2:]),
                            provider_id=aid, epoch_id=epoch_id)
    leaves, total, blinding, extra = _leaves(256, bad=77, ctx=ctx)
    client.submit_epoch(aid, epoch_id, total=total, total_blinding=blinding, leaves=leaves)
    salt = secrets.token_bytes(32)
    client.commit_challenge(1, aid, epoch_id, 77, salt, sender=challenger)
    receipt = client.challenge(aid, epoch_id, leaf_index=77, tag=extra["tag"],
                               commitment=extra["commitment"], proof=extra["proof"],
                               path=merkle.path(_tree(leaves), 77), salt=salt,
                               sender=challenger)
    result["challengeRangeProof"] = {**_figures(client, receipt, traced), "leaves": 256}
    result["withdraw"] = _figures(client, client.withdraw(sender=challenger), traced)
    return result


def goals(result: dict[str, Any]) -> dict[str, Any]:
    """Each goal: the ratio to the floor, its limit and whether it is met."""
    flat = {f"submitEpoch_{n}": f for n, f in result["submitEpoch"].items()}
    flat.update({k: v for k, v in result.items() if isinstance(v, dict) and "gas" in v})
    out = {}
    for name, limit in GOALS.items():
        ratio = flat[name].get("ratio")
        out[name] = {"gas": flat[name]["gas"], "floor": flat[name].get("floor"),
                     "ratio": ratio, "limit": limit,
                     "met": None if ratio is None else ratio <= limit}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--embedded", action="store_true",
                        help="use the embedded py-evm chain (gas only, no floors)")
    args = parser.parse_args(argv)
    proc = None
    try:
        if ANVIL.exists() and not args.embedded:
            proc, url = _start_anvil()
            client, chain, traced = ChainClient.connect(url), "anvil 1.7.1 (prague)", True
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
        for name, goal in result["goals"].items():
            print(f"{name:22} gas {goal['gas']:>9,}  floor {goal['floor'] or 0:>9,}  "
                  f"ratio {goal['ratio']}  (goal <= {goal['limit']}: "
                  f"{'met' if goal['met'] else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The settler's watcher: ``zkmeter-verify chain --watch``.

A settler (anyone) keeps a provider honest by acting inside each epoch's challenge window.
One :func:`watch_round` looks at every pending epoch the settlement recorded (``EpochSubmitted``
events, optionally one account only) and, per epoch:

1. fetches its bundle from ``bundle_source`` (a path or URL template with ``{account}`` and
   ``{epoch}``); a bundle that is missing, unreadable or does not match the on-chain record
   (root, total, leaf count) counts as **withheld**;
2. withheld: demands the data of random leaves nobody demanded yet, until this settler has
   ``max_demands`` demands on the epoch (each risks the demand bond: an answer pays it to
   the answerer); the chain's DataDemanded events are its memory. Sampling finds one bad leaf
   among N with probability k/N for k demands: a provider that withholds the bundle and
   answers every demand is caught only by demanding every leaf (docs/contracts.md);
3. available: batch-verifies every range proof under the epoch's context; the first bad leaf
   is **challenged** (commit, then reveal);
4. every answered demand: reads the answer back from the chain, verifies its proof and
   challenges it if bad;
5. every open demand past its deadline, whoever made it: **resolves** it (the provider is
   slashed; the demander gets its share);
6. with ``finalize``: finalizes epochs whose window closed and that have no open demand.

Every action is returned as an :class:`Action` (and printed as a JSON line by the CLI). The
watcher never guesses: an epoch is left alone when its bundle verifies.
"""

import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

from circuits.transcript import RangeProofContext
from verifier.bundle import BundleFormatError, failing_proofs, parse_bundle
from verifier.chain import DemandStatus, EpochRecord, EpochStatus
from verifier.chain_client import ChainClient, SettlementError
from verifier.sources import InputError, read_source

_RANDOM = secrets.SystemRandom()


@dataclass(frozen=True, slots=True)
class Action:
    """One thing the watcher did or saw: ``kind`` (challenge, demand, resolve, finalize,
    ok, withheld, error), the epoch and a detail."""

    kind: str
    account_id: bytes
    epoch_id: int
    detail: str
    leaf_index: int | None = None

    def to_json(self) -> dict[str, Any]:
        """Stable JSON form."""
        return {"action": self.kind, "account_id": "0x" + self.account_id.hex(),
                "epoch_id": self.epoch_id, "leaf_index": self.leaf_index,
                "detail": self.detail}


def submitted_epochs(client: ChainClient, account_id: bytes | None) -> list[tuple[bytes, int]]:
    """(account id, epoch id) of every EpochSubmitted event, oldest first."""
    filters = {"accountId": account_id} if account_id is not None else None
    logs = client.settlement.events.EpochSubmitted.get_logs(from_block=0,
                                                           argument_filters=filters)
    return [(bytes(log["args"]["accountId"]), int(log["args"]["epochId"])) for log in logs]


def demanded_leaves(client: ChainClient, account_id: bytes,
                    epoch_id: int) -> dict[int, str]:
    """Leaf index -> demander of every DataDemanded event of one epoch (the chain is the
    watcher's memory, so a restarted watcher carries on)."""
    logs = client.settlement.events.DataDemanded.get_logs(
        from_block=0, argument_filters={"accountId": account_id, "epochId": epoch_id})
    return {int(log["args"]["leafIndex"]): str(log["args"]["demander"]) for log in logs}


def _context(client: ChainClient, account_id: bytes, epoch_id: int) -> RangeProofContext:
    return RangeProofContext(chain_id=client.chain_id,
                             contract=bytes.fromhex(client.settlement.address[2:]),
                             provider_id=account_id, epoch_id=epoch_id)


def _bad_proof(ctx: RangeProofContext, proof: bytes, commitment: bytes) -> bool:
    return bool(failing_proofs(ctx, 32, [(proof, commitment)]))


def _fetch(bundle_source: str, account_id: bytes, epoch_id: int, record: EpochRecord) -> Any:
    """The epoch's bundle if it is published and matches the record, else None."""
    source = bundle_source.format(account="0x" + account_id.hex(), epoch=epoch_id)
    try:
        bundle = parse_bundle(read_source(source))
    except (InputError, BundleFormatError):
        return None
    if (bundle.merkle_root != record.merkle_root or bundle.total != record.total
            or len(bundle.leaves) != record.leaf_count or bundle.epoch_id != epoch_id):
        return None
    return bundle


def _try(action: Callable[[], Any], ok: Action, account_id: bytes, epoch_id: int,
         leaf: int | None) -> Action:
    try:
        action()
    except SettlementError as exc:
        return Action("error", account_id, epoch_id, f"{ok.kind} refused: {exc}", leaf)
    return ok


def _watch_epoch(client: ChainClient, account_id: bytes, epoch_id: int, *,
                 bundle_source: str, max_demands: int, finalize: bool,
                 now: int) -> Iterable[Action]:
    record = client.epoch(account_id, epoch_id)
    if record.status is not EpochStatus.PENDING:
        return
    ctx = _context(client, account_id, epoch_id)
    demanded = demanded_leaves(client, account_id, epoch_id)
    mine = sum(1 for who in demanded.values() if who.lower() == client.account.lower())

    for index in sorted(demanded):
        demand = client.demand(account_id, epoch_id, index)
        if demand.status is DemandStatus.OPEN and now >= demand.deadline:
            yield _try(partial(client.resolve_demand, account_id, epoch_id, index),
                       Action("resolve", account_id, epoch_id,
                              "unanswered after its deadline: provider slashed", index),
                       account_id, epoch_id, index)
            return
        if demand.status is DemandStatus.ANSWERED:
            answered = client.answered_leaf(account_id, epoch_id, index)
            if answered is not None and now < record.ready_at and _bad_proof(
                    ctx, answered.proof, answered.commitment):
                yield _try(partial(
                    client.challenge, account_id, epoch_id, leaf_index=index,
                    tag=answered.tag, commitment=answered.commitment, proof=answered.proof,
                    path=answered.path),
                    Action("challenge", account_id, epoch_id,
                           "the answered proof does not verify", index),
                    account_id, epoch_id, index)
                return

    if now < record.ready_at:
        bundle = _fetch(bundle_source, account_id, epoch_id, record)
        if bundle is None:
            # random leaves: a provider that answers only what is demanded cannot know in
            # advance where to hide a bad leaf (lowest-first would tell it: put it last)
            candidates = [i for i in range(record.leaf_count) if i not in demanded]
            budget = max(0, max_demands - mine)
            for index in sorted(_RANDOM.sample(candidates, min(budget, len(candidates)))):
                yield _try(partial(client.demand_data, account_id, epoch_id, index),
                           Action("demand", account_id, epoch_id,
                                  "bundle withheld or not matching the chain", index),
                           account_id, epoch_id, index)
            if not candidates or budget == 0:
                yield Action("withheld", account_id, epoch_id,
                             f"bundle withheld; {len(demanded)} demand(s) out")
            return
        bad = failing_proofs(ctx, bundle.bit_size,
                             [(leaf.proof, leaf.commitment) for leaf in bundle.leaves])
        if bad:
            index = bad[0]
            yield _try(partial(client.challenge_bundle_leaf, bundle, index),
                       Action("challenge", account_id, epoch_id,
                              f"{len(bad)} range proof(s) fail", index),
                       account_id, epoch_id, index)
            return
        yield Action("ok", account_id, epoch_id, "bundle matches the chain and verifies")
        return

    if finalize and record.open_demands == 0:
        yield _try(partial(client.finalize, account_id, epoch_id),
                   Action("finalize", account_id, epoch_id, "window closed, finalized"),
                   account_id, epoch_id, None)


def watch_round(client: ChainClient, *, bundle_source: str, account_id: bytes | None = None,
                max_demands: int = 1, finalize: bool = False) -> list[Action]:
    """One pass over every pending epoch (module docstring)."""
    now = int(client.w3.eth.get_block("latest")["timestamp"])
    actions: list[Action] = []
    for aid, epoch_id in submitted_epochs(client, account_id):
        actions += _watch_epoch(client, aid, epoch_id, bundle_source=bundle_source,
                                max_demands=max_demands, finalize=finalize, now=now)
    return actions


def watch(client: ChainClient, *, bundle_source: str, account_id: bytes | None = None,
          max_demands: int = 1, finalize: bool = False, interval: float = 12.0,
          rounds: int | None = None, report: Callable[[Action], None] | None = None) -> None:
    """Run :func:`watch_round` every ``interval`` seconds (``rounds`` times, or forever)."""
    done = 0
    while rounds is None or done < rounds:
        for action in watch_round(client, bundle_source=bundle_source, account_id=account_id,
                                  max_demands=max_demands, finalize=finalize):
            if report is not None:
                report(action)
        done += 1
        if rounds is None or done < rounds:
            time.sleep(interval)


__all__ = ["Action", "demanded_leaves", "submitted_epochs", "watch", "watch_round"]

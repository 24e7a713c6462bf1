"""The payer's check (``zkmeter-verify payer``): every unit of an account's epoch, attributed.

The payer holds the account's bundle (public), its payer statement (sealed to the payer;
verifier/statement.py), its own list of users and, optionally, receipts its users forwarded
and the on-chain record. :func:`check_payer` runs each named check on its own:

- the bundle's own cheap checks (``structure``, ``encodings``, ``signature``,
  ``merkle_root``, ``aggregate``); its range proofs are *not* re-verified here
  (``range_proofs`` is reported as not checked: that is ``zkmeter-verify bundle``'s job, and
  the chain's challenge window's);
- ``statement_signature``: the provider's Ed25519 signature over the statement;
- ``statement_matches_bundle``: same chain, contract, provider, account, epoch, the bundle
  hash keccak256(bundle canonical bytes) and the same tags in order;
- ``leaves_open``: every entry's v*G + r*H equals its leaf's commitment;
- ``padding_zero``: every padding entry has value 0;
- ``users_unique``: no user id appears twice;
- ``users_known``: every user id is on the payer's list;
- ``total``: the values sum to the bundle's V and the blindings to its R (mod r);
- ``receipts`` (with forwarded receipts): each user's chain verifies under the provider key,
  its last receipt's hash is the stated hash and its running total the stated value;
- ``chain`` (with the on-chain record's checks): the record matches the bundle.

Every contradiction found in provider-signed data comes back as a :class:`Claim`
(verifier/evidence.py) for an evidence file anyone can re-check; claims are made only when
both signatures verify under the bundle's provider key. Inputs that do not belong together
(receipts of another epoch or provider, not signed by the provider, or with a gap in seq)
raise :class:`PayerInputError` (exit code 2): they are the payer's mix-up, not evidence.
"""

from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from circuits.constants import CURVE_ORDER
from verifier.bundle import (
    Bundle,
    Check,
    check_aggregate,
    check_encodings,
    check_merkle_root,
    check_signature,
    check_structure,
)
from verifier.evidence import Claim, entry_opens, header_differences, overcharge
from verifier.hexfields import to_hex
from verifier.receipts import Receipt, ReceiptError, verify_chain, verify_signature
from verifier.statement import (
    PayerStatement,
    StatementError,
    bundle_hash,
    verify_statement_signature,
)

RANGE_PROOFS_NOT_CHECKED = ("not re-verified by the payer check: run `zkmeter-verify bundle` "
                            "on the same bundle for every range proof")


class PayerInputError(ValueError):
    """The payer's inputs do not belong together (exit code 2)."""


@dataclass(frozen=True)
class PayerResult:
    """The named checks (in report order), the contradictions found in provider-signed data,
    and facts for the report."""

    checks: list[Check]
    contradictions: list[Claim]
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """No check failed (checks that did not run are not failures)."""
        return not any(c.status == "failed" for c in self.checks)


def _indices(items: Sequence[int]) -> str:
    shown = ", ".join(map(str, items[:10]))
    return shown + (" ..." if len(items) > 10 else "")


def check_payer(
    bundle: Bundle,
    statement: PayerStatement,
    *,
    users: Collection[str],
    receipts: Sequence[Receipt] | None = None,
    chain_checks: Sequence[Check] | None = None,
) -> PayerResult:
    """Every check of the payer (module docstring), each on its own; raises
    :class:`PayerInputError` when ``receipts`` do not belong with the bundle."""
    checks = [check_structure(bundle), check_encodings(bundle), check_signature(bundle),
              check_merkle_root(bundle), check_aggregate(bundle),
              Check.not_checked("range_proofs", RANGE_PROOFS_NOT_CHECKED)]
    claims: list[Claim] = []
    try:
        verify_statement_signature(statement)
        checks.append(Check("statement_signature", True,
                            "the provider's Ed25519 signature over the statement verifies"))
        signed = True
    except StatementError as exc:
        checks.append(Check("statement_signature", False, str(exc)))
        signed = False
    # claims only from data the provider verifiably signed, under one key
    provable = signed and checks[2].ok and statement.provider_id == bundle.provider_id
    entries = statement.entries

    match = _matches(bundle, statement)
    checks.append(match)
    if not match.ok and provable and not header_differences(bundle, statement):
        claims.append(Claim("statement_bundle_mismatch", match.detail))
    bound = match.ok
    provable_bound = provable and bound
    not_bound = "the statement is not of this bundle (statement_matches_bundle)"

    if bound:
        bad = [i for i, e in enumerate(entries) if not entry_opens(bundle, i, e)]
        checks.append(Check("leaves_open", not bad,
                            f"{len(bad)} of {len(entries)} entries do not open their leaf"
                            if bad else f"all {len(entries)} entries open their leaf",
                            tuple(bad)))
        if provable_bound:
            claims += [Claim("opening_mismatch", f"entry {i} does not open leaf {i}", (i,),
                             entries[i].user_id) for i in bad]
    else:
        bad = []
        checks.append(Check.not_checked("leaves_open", not_bound))

    padded = [i for i, e in enumerate(entries) if e.user_id is None and e.value]
    paddings = sum(1 for e in entries if e.user_id is None)
    checks.append(Check("padding_zero", not padded,
                        f"padding entries {_indices(padded)} carry value "
                        f"{sum(entries[i].value for i in padded)}" if padded
                        else f"all {paddings} padding entries are zero", tuple(padded)))
    if provable_bound:
        claims += [Claim("padding_with_value", f"padding entry {i} carries value "
                         f"{entries[i].value}", (i,)) for i in padded if i not in bad]

    seen: dict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(entries):
        if e.user_id is not None:
            seen[e.user_id].append(i)
    dupes = {u: ix for u, ix in seen.items() if len(ix) > 1}
    checks.append(Check("users_unique", not dupes,
                        "users with more than one entry: " + ", ".join(
                            f"{u!r} (entries {_indices(ix)})" for u, ix in list(dupes.items())[:5])
                        if dupes else f"{len(seen)} users, one entry each",
                        tuple(sorted(i for ix in dupes.values() for i in ix[1:]))))
    if provable_bound:
        claims += [Claim("duplicate_user", f"user {u!r} has entries {ix[0]} and {j}",
                         (ix[0], j), u) for u, ix in dupes.items() for j in ix[1:]]

    mine = set(users)
    unknown = [i for i, e in enumerate(entries) if e.user_id is not None
               and e.user_id not in mine]
    checks.append(Check("users_known", not unknown,
                        f"{len(unknown)} entries bill users not on your list (value "
                        f"{sum(entries[i].value for i in unknown)}): " + ", ".join(
                            repr(entries[i].user_id) for i in unknown[:5])
                        if unknown else f"every user is on your list of {len(mine)}",
                        tuple(unknown)))
    if provable_bound:
        claims += [Claim("phantom_user", f"user {entries[i].user_id!r} (entry {i}, value "
                         f"{entries[i].value}) is not on the payer's list", (i,),
                         entries[i].user_id) for i in unknown]

    total = _total(bundle, statement)
    checks.append(total)
    if not total.ok and provable_bound:
        claims.append(Claim("total_mismatch", total.detail))

    if receipts is None:
        checks.append(Check.not_checked("receipts", "no --receipts given: the stated values "
                                                    "were not compared with users' receipts"))
    else:
        check, found = _receipts(bundle, statement, receipts, seen)
        checks.append(check)
        if provable_bound:
            claims += found
    if chain_checks is None:
        checks.append(Check.not_checked("chain", "no --rpc-url/--contract given: the "
                                                 "on-chain record was not read"))
    else:
        failed = [c for c in chain_checks if not c.ok]
        checks.append(Check("chain", not failed, "; ".join(
            f"{c.name}: {c.detail}" for c in (failed or chain_checks))))
    facts = {"epoch_id": bundle.epoch_id, "account_id": to_hex(bundle.subject),
             "leaves": len(bundle.leaves), "users": len(seen), "total": bundle.total,
             "stated_total": statement.total,
             "contradictions": [c.kind for c in claims]}
    return PayerResult(checks, claims, facts)


def _matches(bundle: Bundle, statement: PayerStatement) -> Check:
    differ = header_differences(bundle, statement)
    if differ:
        return Check("statement_matches_bundle", False,
                     f"the statement is for another {', '.join(differ)} than the bundle")
    if statement.bundle_hash != bundle_hash(bundle):
        return Check("statement_matches_bundle", False, "the statement is of another bundle "
                     "of this account epoch (its bundle hash differs)")
    if [e.tag for e in statement.entries] != [leaf.tag for leaf in bundle.leaves]:
        return Check("statement_matches_bundle", False, "the statement's tags are not the "
                     "bundle's leaves in order")
    return Check("statement_matches_bundle", True, f"same chain, contract, provider, account "
                 f"and epoch; bundle hash and all {len(bundle.leaves)} tags match")


def _total(bundle: Bundle, statement: PayerStatement) -> Check:
    values = statement.total
    blindings = sum(e.blinding for e in statement.entries) % CURVE_ORDER
    problems = []
    if values != bundle.total:
        problems.append(f"the entries sum to {values} units, the bundle bills V = "
                        f"{bundle.total}")
    if blindings != bundle.total_blinding:
        problems.append("the blindings do not sum to the bundle's R")
    if problems:
        return Check("total", False, "; ".join(problems))
    return Check("total", True, f"the entries sum to V = {values} and to R")


def _screen(bundle: Bundle, user: str, chain: Sequence[Receipt]) -> None:
    """Raise PayerInputError if one user's forwarded receipts cannot be used as given."""
    for r in chain:
        if r.epoch_id != bundle.epoch_id:
            raise PayerInputError(f"user {user!r}'s receipts include epoch {r.epoch_id}, the "
                                  f"bundle is epoch {bundle.epoch_id}: forward one epoch's")
        try:
            verify_signature(r, provider_id=bundle.provider_id)
        except ReceiptError:
            raise PayerInputError(f"user {user!r}'s receipt seq {r.seq} is not signed by the "
                                  f"bundle's provider key: no receipt of this provider"
                                  ) from None
    seqs = sorted({r.seq for r in chain})
    if seqs != list(range(1, len(seqs) + 1)):
        missing = sorted(set(range(1, seqs[-1] + 1)) - set(seqs))
        raise PayerInputError(f"user {user!r}'s receipts miss seq "
                              f"{', '.join(map(str, missing[:10]))}: forward them all")


def _receipts(bundle: Bundle, statement: PayerStatement, receipts: Sequence[Receipt],
              seen: dict[str, list[int]]) -> tuple[Check, list[Claim]]:
    by_user: dict[str, list[Receipt]] = defaultdict(list)
    for r in receipts:
        by_user[r.user_id].append(r)
    problems: list[str] = []
    claims: list[Claim] = []
    elsewhere = []
    checked = 0
    for user in sorted(by_user):
        chain = sorted(by_user[user], key=lambda r: r.seq)
        _screen(bundle, user, chain)
        if user not in seen:
            elsewhere.append(user)
            continue
        try:
            verify_chain(chain, provider_id=bundle.provider_id)
        except ReceiptError as exc:
            problems.append(f"user {user!r}: the receipts do not chain: {exc}")
            continue
        checked += 1
        for index in seen[user]:
            entry = statement.entries[index]
            found = overcharge(entry, chain)
            if found is not None:
                detail = found[1]
                problems.append(f"user {user!r} (entry {index}): {detail}")
                claims.append(Claim("overcharged_user", detail, (index,), user, tuple(chain)))
    note = ""
    if elsewhere:
        note = (f"; receipts of {len(elsewhere)} users with no entry here (billed in another "
                f"account, or not at all): " + ", ".join(repr(u) for u in elsewhere[:5]))
    if problems:
        return Check("receipts", False, "; ".join(problems[:5]) + note), claims
    return Check("receipts", True, f"{checked} of {len(seen)} users' receipts forwarded: each "
                                   f"chain ends at the stated hash and value" + note), claims


__all__ = ["RANGE_PROOFS_NOT_CHECKED", "PayerInputError", "PayerResult", "check_payer"]

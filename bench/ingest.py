"""Ingest throughput through the metering core (no network), next to raw tiktoken.

    python -m bench.ingest --json [--events 20000] [--batch 500] [--postgres URL | --no-postgres]

For each backend (a SQLite file in a temporary directory; a fresh PostgreSQL database that is
created and dropped), events/s of:

* counts-only: reported counts, in batches (one transaction each) and one event per
  transaction;
* text: chat messages and a completion of about 500 o200k tokens in all, counted, digested,
  priced, signed and stored, in batches and one per transaction;
* text batched again with the counting in one worker process and two writer threads
  (``Meter(count_workers=1)``: tokenization holds the GIL, so this is how it overlaps the
  numbering, signing and storing);
* both batched again with ``--workers`` processes (default 2) sharing the database;

and, in the same run, the physical limit of each part (issue 16), each figure printed with its
ratio to it under ``ratios``:

* raw Ed25519 signing alone (libsodium ``crypto_sign`` over messages of a receipt's size, one
  thread): the ceiling of the counts-only core (goal >= 50 %);
* raw tiktoken: ``encode_ordinary`` on the same strings, one thread (the in-process text path,
  goal >= 80 %) and in ``--workers`` processes (the text path that counts in a worker process
  while writer threads sign and store);
* SQLite under the same load, for PostgreSQL (goal >= 80 %);

and the floor of the counts-only core on SQLite (``ingest_floor``): what any durable ingest
in CPython on SQLite must do per event, with nothing else around it (its ratio to raw signing
bounds the first goal; the core's ratio to it is the core's own overhead).

The machine may be shared: the absolute figures move with its load, the same-run ratios are
the measure. Every figure is durable: each transaction is committed with
SQLite ``synchronous=FULL`` (WAL) / PostgreSQL ``synchronous_commit`` as the server has it
(reported). Prints one JSON object.
"""

import argparse
import json
import multiprocessing
import os
import platform
import random
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nacl.bindings import crypto_sign, crypto_sign_seed_keypair
from nacl.signing import SigningKey

from bench.postgres import ServerUnreachable, fresh_database
from circuits.hashing import keccak256
from prover.accounts.registry import AccountRegistry
from prover.ledger import Ledger
from prover.ledger.schema import sqlite_in
from prover.ledger.store import (  # the ledger's own statements, for the floor
    _SQLITE_FIND_KEYS,
    _SQLITE_INSERT_EVENTS,
    _SQLITE_INSERT_STATES,
    _SQLITE_STATES,
    _SQLITE_UPDATE_STATES,
)
from prover.metering import FINGERPRINT_LABEL, Meter, UsageRequest
from prover.ratecard import load_rate_card
from verifier.receipts import (  # the canonical layout, for the floor
    _HEAD,
    _MID,
    _TAIL,
    _U16,
    IDEMPOTENCY_LABEL,
    RECEIPT_DOMAIN,
    RECEIPT_KEY_LABEL,
    RECEIPT_VERSION,
    decode_receipt,
    verify_signature,
)
from verifier.tokens import Message, get_encoding

SEED = bytes.fromhex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
MODEL = "gpt-4o"
POOL_BATCH = 200
_CORPUS = ("the provider meters every request and signs a receipt for its user while the "
         "ledger keeps a running total per epoch so that nobody can shift charges between "
         "users; zero-knowledge range proofs, Pedersen commitments, Merkle trees, BN254, "
         "keccak256, Ed25519 and SQLite or PostgreSQL all play a part. Numbers like 42, "
         "3.14159 and 2026-11-28 appear too, with punctuation: (a), [b], {c}; émigré café "
         "naïve façade — 数据 トークン 토큰.")
WORDS = tuple(_CORPUS.split())


def make_texts(count: int, rng: random.Random) -> list[tuple[list[Message], str]]:
    """Distinct chat requests of about 500 o200k tokens each (prompt + completion)."""
    out = []
    for i in range(count):
        user = f"request {i}: " + " ".join(rng.choice(WORDS) for _ in range(235))
        completion = " ".join(rng.choice(WORDS) for _ in range(60))
        out.append(([Message("system", "You are a careful assistant."),
                     Message("user", user)], completion))
    return out


def raw_tiktoken(texts: Sequence[tuple[list[Message], str]]) -> dict[str, float]:
    """encode_ordinary on every string of every request, one thread."""
    enc = get_encoding("o200k_base")
    strings = [s for messages, completion in texts
               for s in (*(m.content for m in messages), completion)]
    for s in strings[:50]:  # warm: the first calls build tiktoken's caches
        enc.encode_ordinary(s)
    tokens = 0
    start = time.perf_counter()
    for s in strings:
        tokens += len(enc.encode_ordinary(s))
    elapsed = time.perf_counter() - start
    return {"events_per_s": len(texts) / elapsed, "tokens_per_s": tokens / elapsed,
            "tokens_per_event": tokens / len(texts)}


def _encode_share(strings: Sequence[str]) -> int:
    enc = get_encoding("o200k_base")
    return sum(len(enc.encode_ordinary(s)) for s in strings)


def raw_tiktoken_processes(texts: Sequence[tuple[list[Message], str]],
                           workers: int) -> dict[str, float]:
    """encode_ordinary on the same strings spread over ``workers`` processes (the text is
    sent to them, as the counting pool's is), started and warmed before the clock runs."""
    from concurrent.futures import ProcessPoolExecutor

    strings = [s for messages, completion in texts
               for s in (*(m.content for m in messages), completion)]
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        list(pool.map(_encode_share, [strings[:50]] * workers))  # start, load the encoding
        size = -(-len(strings) // (workers * 8))
        start = time.perf_counter()
        tokens = sum(pool.map(_encode_share, [strings[i : i + size]
                                              for i in range(0, len(strings), size)]))
        elapsed = time.perf_counter() - start
    return {"events_per_s": len(texts) / elapsed, "tokens_per_s": tokens / elapsed,
            "processes": workers}


def raw_ed25519(count: int, message_bytes: int) -> dict[str, float]:
    """libsodium Ed25519 signatures (crypto_sign) of distinct ``message_bytes``-byte messages,
    one thread: the signing the ingest core must do once per receipt, and nothing else."""
    secret64 = crypto_sign_seed_keypair(SEED)[1]
    messages = [i.to_bytes(8, "big") * (message_bytes // 8 + 1) for i in range(count)]
    messages = [m[:message_bytes] for m in messages]
    start, cpu = time.perf_counter(), time.process_time()
    for m in messages:
        crypto_sign(m, secret64)
    elapsed = time.perf_counter() - start
    return {"signatures_per_s": count / elapsed, "message_bytes": message_bytes,
            "cpu_us_per_signature": 1e6 * (time.process_time() - cpu) / count}


def ingest_floor(path: Path, *, events: int, batch: int, users: int) -> dict[str, float]:
    """The floor of the counts-only core on SQLite: per event only what a durable ingest must
    do (the idempotency key's two digests and the payload fingerprint, the receipt's canonical
    bytes, its signature and hash, a row), per batch one salt draw, the key and chain-state
    look-ups, the inserts and updates and a durable commit, with the ledger's own schema
    (migrations), statements and pragmas, on a raw ``sqlite3`` connection; nothing else (no
    request objects or validation, no admission, epoch lock or SQLAlchemy). Checks that its
    last receipt decodes and verifies and that every event was stored."""
    provider, secret64 = crypto_sign_seed_keypair(SEED)
    Ledger.from_url(f"sqlite:///{path}", provider_id=provider, run_migrations=True).dispose()
    db = sqlite3.connect(path, isolation_level=None)
    for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON"):
        db.execute(f"PRAGMA {pragma}")
    db.execute("INSERT INTO epochs (id, state, window_start_ms, planned_end_ms, rate_card_hash,"
               " bit_size) VALUES (1, 'open', 0, 1, ?, 32)", (bytes(32),))
    digest_key, fingerprint_key, rate_card = (bytes([k]) * 32 for k in (1, 2, 3))
    head = _HEAD.pack(RECEIPT_DOMAIN, RECEIPT_VERSION, 0, provider, 1)
    model, encoding = "gpt-4o", ""
    middle = b"".join((_U16.pack(len(model)), model.encode(), bytes((0,))))
    zero = bytes(32)

    def run(prefix: str, count: int) -> tuple[float, float, bytes]:
        wire = b""
        start, cpu = time.perf_counter(), time.process_time()
        for first in range(0, count, batch):
            n = min(batch, count - first)
            salts = os.urandom(32 * n)
            keys = [f"{prefix}-{i}".encode() for i in range(first, first + n)]
            ids = [f"user-{i % users}" for i in range(first, first + n)]
            digests = [keccak256(IDEMPOTENCY_LABEL, k) for k in keys]
            names = sorted(set(ids))
            db.execute("BEGIN IMMEDIATE")
            in_keys, key_values = sqlite_in(digests)
            db.execute(_SQLITE_FIND_KEYS.format(names=in_keys),
                       {"provider": provider, **key_values}).fetchall()
            in_users, user_values = sqlite_in(names)
            state = {u: [seq, total, last] for u, seq, total, last in db.execute(
                _SQLITE_STATES.format(names=in_users), {"epoch": 1, **user_values})}
            fresh = {u for u in names if u not in state}
            for u in fresh:
                state[u] = [0, 0, zero]
            rows = []
            for j in range(n):
                user, key, i = ids[j], keys[j], first + j
                seq, total, last = state[user]
                seq, units = seq + 1, 1_000 + i % 97
                total += units
                user_bytes = user.encode()
                fingerprint = keccak256(fingerprint_key, FINGERPRINT_LABEL, user_bytes, key)
                body = b"".join((
                    head, _U16.pack(len(user_bytes)), user_bytes,
                    _MID.pack(seq, last, keccak256(RECEIPT_KEY_LABEL, digest_key,
                                                   len(key).to_bytes(4, "big"), key)),
                    middle, _TAIL.pack(400, 100, 0, 1, units, total, rate_card,
                                       salts[32 * j : 32 * j + 32], zero, zero, 123)))
                wire = body + crypto_sign(body, secret64)[:64]
                digest = keccak256(wire)
                state[user] = [seq, total, digest]
                rows.append((provider, digests[j], fingerprint, 1, user, seq, model, encoding,
                             400, 100, 0, 1, units, total, digest, wire, 123))
            db.executemany(_SQLITE_INSERT_EVENTS, rows)
            touched = sorted({row[4] for row in rows})
            db.executemany(_SQLITE_INSERT_STATES,
                           [(1, u, *state[u]) for u in touched if u in fresh])
            db.executemany(_SQLITE_UPDATE_STATES,
                           [(*state[u], 1, u) for u in touched if u not in fresh])
            db.execute("COMMIT")
        return (count / (time.perf_counter() - start),
                1e6 * (time.process_time() - cpu) / count, wire)

    run("warm", batch)
    rate, cpu_us, last = run("floor", events)
    stored = db.execute("SELECT count(*) FROM events").fetchone()[0]
    db.close()
    receipt = decode_receipt(last)
    verify_signature(receipt, provider_id=provider)
    if stored != events + batch or len(last) != len(receipt.signed_bytes()) + 64:
        raise RuntimeError("the floor did not store what it signed")
    return {"events_per_s": rate, "cpu_us_per_event": cpu_us}


def _meter(url: str, *, migrate: bool, count_workers: int = 0) -> Meter:
    key = SigningKey(SEED)
    ledger = Ledger.from_url(url, provider_id=bytes(key.verify_key), run_migrations=migrate)
    return Meter(ledger=ledger, signing_key=key, rate_card=load_rate_card(),
                 count_workers=count_workers)


def _run_threads(meter: Meter, requests: Sequence[UsageRequest], batch: int,
                 threads: int) -> float:
    """Like _run, with ``threads`` writer threads sharing the meter (as the gRPC writers do)."""
    chunks = [requests[i : i + batch] for i in range(0, len(requests), batch)]
    errors: list[BaseException] = []

    def work(part: Sequence[Sequence[UsageRequest]]) -> None:
        try:
            for chunk in part:
                for outcome in meter.record_batch(chunk):
                    if isinstance(outcome, Exception):
                        raise outcome
        except BaseException as exc:  # reported after the join
            errors.append(exc)

    pool = [threading.Thread(target=work, args=(chunks[k::threads],)) for k in range(threads)]
    start = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    if errors:
        raise errors[0]
    return len(requests) / (time.perf_counter() - start)


def _run(meter: Meter, requests: Sequence[UsageRequest], batch: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(requests), batch):
        for outcome in meter.record_batch(requests[i : i + batch]):
            if isinstance(outcome, Exception):
                raise outcome
    return len(requests) / (time.perf_counter() - start)


def _counts(prefix: str, n: int, users: int) -> list[UsageRequest]:
    return [UsageRequest(f"{prefix}-{i}", f"user-{i % users}", MODEL, input_tokens=400 + i % 97,
                         output_tokens=100 + i % 31, reasoning_tokens=i % 5) for i in range(n)]


def _texted(prefix: str, texts: Sequence[tuple[list[Message], str]],
            users: int) -> list[UsageRequest]:
    return [UsageRequest(f"{prefix}-{i}", f"user-{i % users}", MODEL, messages=messages,
                         completion=completion) for i, (messages, completion) in enumerate(texts)]


def _worker(url: str, prefix: str, n: int, users: int, batch: int, barrier: Any,
            text: bool) -> float:
    meter = _meter(url, migrate=False)
    if text:
        requests = _texted(prefix, make_texts(n, random.Random(prefix)), users)
        get_encoding("o200k_base").encode_ordinary(WORDS[0])  # loaded before the clock runs
    else:
        requests = _counts(prefix, n, users)
    barrier.wait(60)
    start = time.perf_counter()
    _run(meter, requests, batch)
    elapsed = time.perf_counter() - start
    meter.ledger.dispose()
    return elapsed


def _processes(url: str, *, workers: int, n: int, users: int, batch: int, text: bool) -> float:
    """Aggregate events/s of ``workers`` processes ingesting into one database at once."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(workers)
        with ctx.Pool(workers) as pool:
            jobs = [pool.apply_async(_worker, (url, f"{'t' if text else 'c'}mp{w}",
                                               n // workers, users, batch, barrier, text))
                    for w in range(workers)]
            slowest = max(job.get(timeout=600) for job in jobs)
    return (n // workers) * workers / slowest


def enroll(meter: Meter, users: int) -> None:
    """Put user-0 .. user-(users-1) under one billing account (usage needs an account)."""
    reg = AccountRegistry(meter.ledger.engine, operator=bytes(20),
                          provider_key=meter.provider_id)
    account = reg.register_account(payer=bytes.fromhex("a1" * 20), asset=bytes(20),
                                   payer_x25519_public_key=bytes(32 * [9]))
    for i in range(users):
        reg.register_user(f"user-{i}", account.account_id)


def bench_backend(url: str, *, events: int, batch: int, users: int, workers: int,
                  texts: Sequence[tuple[list[Message], str]]) -> dict[str, Any]:
    meter = _meter(url, migrate=True)
    enroll(meter, users)
    _run(meter, _counts("warm", batch, users), batch)  # open the epoch, warm caches
    sample = meter.record(_counts("size", 1, users)[0]).receipt
    single_n = max(200, events // 20)
    text_single_n = max(100, len(texts) // 10)
    cpu = time.process_time()
    counts_batched = _run(meter, _counts("cb", events, users), batch)
    result = {
        "receipt_signed_bytes": len(sample.signed_bytes()),
        "counts_only_batched_events_per_s": counts_batched,
        "counts_only_batched_cpu_us_per_event": 1e6 * (time.process_time() - cpu) / events,
        "counts_only_single_events_per_s": _run(meter, _counts("cs", single_n, users), 1),
        "text_batched_events_per_s": _run(meter, _texted("tb", texts, users), batch),
        "text_single_events_per_s": _run(meter, _texted("ts", texts[:text_single_n], users), 1),
    }
    meter.ledger.dispose()
    # Tokenization holds the GIL: count in one worker process while two writer threads
    # number, sign and store (Meter(count_workers=1)).
    pooled = _meter(url, migrate=False, count_workers=1)
    try:
        _run(pooled, _texted("tpw", texts[:batch], users), batch)  # start the worker
        # smaller batches: more of them in flight, so counting and writing overlap
        result["text_batched_count_process_2_writers_events_per_s"] = _run_threads(
            pooled, _texted("tp", texts, users), POOL_BATCH, 2)
    finally:
        pooled.close()
        pooled.ledger.dispose()
    if workers > 1:
        result[f"counts_only_batched_{workers}_processes_events_per_s"] = _processes(
            url, workers=workers, n=events, users=users, batch=batch, text=False)
        result[f"text_batched_{workers}_processes_events_per_s"] = _processes(
            url, workers=workers, n=len(texts), users=users, batch=batch, text=True)
    return result


def _ratio(value: float, baseline: float, goal: float | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"value": round(value, 1), "baseline": round(baseline, 1),
                           "ratio": round(value / baseline, 3)}
    if goal is not None:
        out["goal"] = goal
        out["met"] = value / baseline >= goal
    return out


def ratios(report: dict[str, Any], workers: int) -> dict[str, Any]:
    """Each figure against its same-run baseline (issue 16's goals where it sets one)."""
    sign = report["raw_ed25519"]["signatures_per_s"]
    floor = report["sqlite_floor"]["events_per_s"]
    raw = report["raw_tiktoken"]["events_per_s"]
    raw_n = report.get(f"raw_tiktoken_{workers}_processes", {}).get("events_per_s")
    out: dict[str, Any] = {}
    backends = [b for b in ("sqlite", "postgresql") if "skipped" not in report[b]]
    for backend in backends:
        f = report[backend]
        out[f"{backend}_counts_only_vs_raw_ed25519"] = _ratio(
            f["counts_only_batched_events_per_s"], sign, 0.5)
        out[f"{backend}_text_vs_raw_tiktoken"] = _ratio(f["text_batched_events_per_s"], raw, 0.8)
        if raw_n:
            out[f"{backend}_text_count_process_2_writers_vs_raw_tiktoken_{workers}_processes"] = (
                _ratio(f["text_batched_count_process_2_writers_events_per_s"], raw_n))
            multi = f.get(f"text_batched_{workers}_processes_events_per_s")
            if multi is not None:
                out[f"{backend}_text_{workers}_processes_vs_raw_tiktoken_{workers}_processes"] = (
                    _ratio(multi, raw_n))
    out["sqlite_floor_vs_raw_ed25519"] = _ratio(floor, sign)  # the most the core could reach
    out["sqlite_counts_only_vs_floor"] = _ratio(
        report["sqlite"]["counts_only_batched_events_per_s"], floor)
    if len(backends) == 2:
        pg, lite = report["postgresql"], report["sqlite"]
        out["postgresql_vs_sqlite_counts_only"] = _ratio(
            pg["counts_only_batched_events_per_s"], lite["counts_only_batched_events_per_s"], 0.8)
        out["postgresql_vs_sqlite_text"] = _ratio(
            pg["text_batched_events_per_s"], lite["text_batched_events_per_s"], 0.8)
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    parser.add_argument("--events", type=int, default=20_000, help="counts-only events")
    parser.add_argument("--text-events", type=int, default=3_000, help="text events")
    parser.add_argument("--batch", type=int, default=500, help="events per transaction")
    parser.add_argument("--users", type=int, default=1_000, help="distinct users")
    parser.add_argument("--workers", type=int, default=2, help="processes, last run")
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/"
                        "postgres", help="admin URL; a fresh database is made next to it")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args(argv)

    texts = make_texts(args.text_events, random.Random(7))
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "sqlite": sqlite3.sqlite_version, "load_avg_at_start": os.getloadavg()[0]},
        "settings": {"events": args.events, "text_events": args.text_events,
                     "batch": args.batch, "users": args.users, "model": MODEL},
        "raw_tiktoken": raw_tiktoken(texts),
    }
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.sqlite'}"
        report["sqlite"] = {"durability": "WAL, synchronous=FULL",
                            **bench_backend(url, events=args.events, batch=args.batch,
                                            users=args.users, workers=args.workers,
                                            texts=texts)}
        report["sqlite_floor"] = ingest_floor(Path(tmp) / "floor.sqlite", events=args.events,
                                              batch=args.batch, users=args.users)
    if args.no_postgres:
        report["postgresql"] = {"skipped": "--no-postgres"}
    else:
        try:
            with fresh_database(args.postgres, "zkmeter_bench") as (url, conn):
                sync = conn.execute("SHOW synchronous_commit").fetchone()
                report["postgresql"] = {
                    "durability": f"synchronous_commit={sync[0] if sync else '?'}",
                    "server": conn.info.server_version,
                    **bench_backend(url, events=args.events, batch=args.batch,
                                    users=args.users, workers=args.workers, texts=texts)}
        except ServerUnreachable as exc:
            report["postgresql"] = {"skipped": f"no PostgreSQL server reachable: {exc}"}
    if args.workers > 1:
        report[f"raw_tiktoken_{args.workers}_processes"] = raw_tiktoken_processes(
            texts, args.workers)
    size = report["sqlite"]["receipt_signed_bytes"]
    report["raw_ed25519"] = raw_ed25519(max(args.events, 5_000), size)
    report["ratios"] = ratios(report, args.workers)
    report["machine"]["load_avg_at_end"] = os.getloadavg()[0]
    text = json.dumps(report, indent=None if args.json else 1, sort_keys=False)
    print(text)
    return report


if __name__ == "__main__":
    main(sys.argv[1:])

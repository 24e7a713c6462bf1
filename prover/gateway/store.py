"""The gateway's SQLite file: the durable report queue and the receipts kept for callers.

Rows hold counts, ids and receipts only (a receipt carries salted digests, never text):

* ``reports``: one row per finished request not yet acknowledged by ``zkmeter serve``:
  request id, user, model, the visible counts zkmeter's own counting code gave in the
  gateway, the hidden counts from the upstream, attempts;
* ``receipts``: the signed receipt JSON of each delivered report, by request id and user;
* ``refused``: reports that ``zkmeter serve`` refused for good (status code name only).

WAL mode; ``synchronous`` NORMAL (a commit survives a crash of the process) or FULL (also a
power loss). One connection, used from the event loop's thread only.
"""

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS reports (
    request_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    model TEXT NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cached_input_tokens INTEGER NOT NULL,
    reasoning_tokens INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS receipts (
    request_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    receipt_json TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS refused (
    request_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    code TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class Report:
    """One finished request's usage, as counts (the durable form)."""

    request_id: str
    user_id: str
    model: str
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    reasoning_tokens: int


class GatewayStore:
    """The queue and the receipts (module docstring)."""

    def __init__(self, path: Path, *, synchronous: str = "NORMAL") -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError("synchronous must be NORMAL or FULL")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._db.execute("PRAGMA busy_timeout=30000")
        self._db.executescript(SCHEMA)
        self._pending = self._db.execute("SELECT count(*) FROM reports").fetchone()[0]

    @property
    def pending(self) -> int:
        """Reports not yet acknowledged (kept in memory; the table is the truth at start)."""
        return int(self._pending)

    def enqueue(self, report: Report) -> None:
        """Make a report durable before anything is sent for it."""
        self._db.execute(
            "INSERT INTO reports (request_id, user_id, model, input_tokens, output_tokens, "
            "cached_input_tokens, reasoning_tokens, created_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (report.request_id, report.user_id, report.model, report.input_tokens,
             report.output_tokens, report.cached_input_tokens, report.reasoning_tokens,
             int(time.time() * 1000)))
        self._pending += 1

    def due(self, limit: int, exclude: set[str]) -> list[Report]:
        """The oldest waiting reports, except those being sent right now."""
        rows = self._db.execute(
            "SELECT request_id, user_id, model, input_tokens, output_tokens, "
            "cached_input_tokens, reasoning_tokens FROM reports ORDER BY created_ms LIMIT ?",
            (limit + len(exclude),)).fetchall()
        return [Report(*row) for row in rows if row[0] not in exclude][:limit]

    def attempted(self, request_id: str) -> None:
        """Count a failed attempt."""
        self._db.execute("UPDATE reports SET attempts = attempts + 1 WHERE request_id = ?",
                         (request_id,))

    def delivered(self, request_id: str, user_id: str, receipt: dict[str, Any]) -> None:
        """The report is acknowledged: keep its receipt, drop it from the queue (one commit)."""
        now = int(time.time() * 1000)
        with self._tx():
            self._db.execute(
                "INSERT OR REPLACE INTO receipts (request_id, user_id, receipt_json, "
                "created_ms) VALUES (?, ?, ?, ?)",
                (request_id, user_id, json.dumps(receipt, separators=(",", ":")), now))
            self._drop(request_id)

    def refused(self, request_id: str, user_id: str, code: str) -> None:
        """zkmeter serve refused the report for good: record the code, drop it."""
        with self._tx():
            self._db.execute(
                "INSERT OR REPLACE INTO refused (request_id, user_id, code, created_ms) "
                "VALUES (?, ?, ?, ?)", (request_id, user_id, code, int(time.time() * 1000)))
            self._drop(request_id)

    def _drop(self, request_id: str) -> None:
        cursor = self._db.execute("DELETE FROM reports WHERE request_id = ?", (request_id,))
        self._pending -= cursor.rowcount

    def lookup(self, request_id: str, user_id: str) -> tuple[str, Any]:
        """``("ok", receipt)``, ``("pending", None)``, ``("refused", code)`` or
        ``("unknown", None)`` for this user's request (another user's is unknown)."""
        row = self._db.execute("SELECT receipt_json FROM receipts WHERE request_id = ? AND "
                               "user_id = ?", (request_id, user_id)).fetchone()
        if row:
            return "ok", json.loads(row[0])
        if self._db.execute("SELECT 1 FROM reports WHERE request_id = ? AND user_id = ?",
                            (request_id, user_id)).fetchone():
            return "pending", None
        row = self._db.execute("SELECT code FROM refused WHERE request_id = ? AND user_id = ?",
                               (request_id, user_id)).fetchone()
        if row:
            return "refused", row[0]
        return "unknown", None

    def _tx(self) -> "_Tx":
        return _Tx(self._db)

    def close(self) -> None:
        """Close the file."""
        self._db.close()


class _Tx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")

"""The trainer's durable state: which events were applied, the chat turns and the feedback
that names them, and the preference pairs they make.

SQLite in WAL mode with ``synchronous=FULL`` (as the producer's spool): each event is
recorded in one transaction that is on disk when :meth:`Ledger.record_feedback` or
:meth:`Ledger.record_turn` returns — its id (the de-duplication key), what it stored and
the pairs it completed, together. Kafka offsets are committed only after that, so a
crash anywhere re-delivers events whose effects are either complete or absent; the
recommender de-duplicates by event id as well, so an interaction re-applied after a
crash between the two changes nothing.

Pairs are keyed by (answer, chosen item, rejected item): a pair is never stored twice,
whichever of its events arrives last or how often they are delivered. A fixed share of
answers (by a hash of the answer id, so every pair of one answer lands on the same side)
is held out for evaluation.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from styleloop.runtime.spool import fsync_dir

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    event_id TEXT PRIMARY KEY,
    topic TEXT NOT NULL,
    outcome TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_at ON events (at);
CREATE TABLE IF NOT EXISTS turns (
    answer_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    event BLOB NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS answer_feedback (
    event_id TEXT PRIMARY KEY,
    answer_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS answer_feedback_answer ON answer_feedback (answer_id);
CREATE TABLE IF NOT EXISTS pairs (
    pair_id TEXT PRIMARY KEY,
    answer_id TEXT NOT NULL,
    split TEXT NOT NULL,
    prompt TEXT NOT NULL,
    chosen TEXT NOT NULL,
    rejected TEXT NOT NULL,
    chosen_item_id TEXT NOT NULL,
    rejected_item_id TEXT NOT NULL,
    provenance TEXT NOT NULL,
    adapter_id TEXT NOT NULL,
    created REAL NOT NULL,
    round_id TEXT NOT NULL DEFAULT ''
);
"""


@dataclass(frozen=True)
class Pair:
    """One preference pair: the same prompt, an answer citing an item the shopper wanted
    (chosen) and one citing an item they rejected."""

    pair_id: str
    answer_id: str
    split: str  # "train" or "eval"
    prompt: list[tuple[str, str]]  # (role, content), exactly what the model read
    chosen: str
    rejected: str
    chosen_item_id: str
    rejected_item_id: str
    provenance: dict[str, Any]  # event ids and the adapter that answered
    adapter_id: str
    created: float
    round_id: str = ""

    def as_json(self) -> dict[str, Any]:
        """The row of a pairs file (`styleloop train dpo --pairs`)."""
        return {
            "pair_id": self.pair_id,
            "split": self.split,
            "prompt": [{"role": r, "content": c} for r, c in self.prompt],
            "chosen": self.chosen,
            "rejected": self.rejected,
            "chosen_item_id": self.chosen_item_id,
            "rejected_item_id": self.rejected_item_id,
            "adapter_id": self.adapter_id,
            "provenance": self.provenance,
        }


@dataclass(frozen=True)
class AnswerFeedback:
    event_id: str
    item_id: str
    kind: str  # like, click, purchase, reject


def pair_id(answer_id: str, chosen_item: str, rejected_item: str) -> str:
    return hashlib.sha256(f"{answer_id}\0{chosen_item}\0{rejected_item}".encode()).hexdigest()[:32]


def split_of(answer_id: str, eval_percent: int) -> str:
    """The same answer always lands on the same side."""
    bucket = int(hashlib.sha256(answer_id.encode()).hexdigest()[:8], 16) % 100
    return "eval" if bucket < eval_percent else "train"


class Ledger:
    """Thread-safe; every call is short and blocking (call it from a worker thread)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = directory / "trainer.sqlite3"
        created = not self.path.exists()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        if created:
            os.chmod(self.path, 0o600)  # user ids and questions
            fsync_dir(directory)
        self._db.execute("PRAGMA journal_mode=WAL").fetchone()
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------------ events

    def seen(self, event_id: str) -> bool:
        with self._lock:
            row = self._db.execute("SELECT 1 FROM events WHERE event_id = ?", (event_id,))
            return row.fetchone() is not None

    def outcomes(self) -> dict[str, int]:
        """How many events ended each way (applied, stored, dead_lettered …)."""
        with self._lock:
            rows = self._db.execute("SELECT outcome, COUNT(*) FROM events GROUP BY outcome")
            return {str(o): int(n) for o, n in rows}

    def record_event(self, event_id: str, topic: str, outcome: str) -> bool:
        """Only the id (a dead-lettered or ignored event); False when it was there."""
        with self._lock, self._db:
            return self._mark(event_id, topic, outcome)

    def _mark(self, event_id: str, topic: str, outcome: str) -> bool:
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?)",
            (event_id, topic, outcome, time.time()),
        )
        return cursor.rowcount == 1

    def forget_before(self, when: float) -> int:
        """Drop ids older than the de-duplication window (``DEDUP_RETENTION_S``)."""
        with self._lock, self._db:
            return self._db.execute("DELETE FROM events WHERE at < ?", (when,)).rowcount

    # ------------------------------------------------------------------ turns and feedback

    def record_turn(
        self,
        event_id: str,
        topic: str,
        answer_id: str,
        user_id: str,
        event: bytes,
        pairs: Callable[[list[AnswerFeedback]], list[Pair]],
    ) -> list[Pair]:
        """Stores a chat turn and the pairs it completes (``pairs(turn_feedback)`` makes
        them from the feedback that named the answer before the turn arrived)."""
        with self._lock, self._db:
            if not self._mark(event_id, topic, "stored"):
                return []
            self._db.execute(
                "INSERT OR IGNORE INTO turns VALUES (?, ?, ?, ?)",
                (answer_id, user_id, event, time.time()),
            )
            return self._insert_pairs(pairs(self._feedback_of(answer_id)))

    def record_feedback(
        self,
        event_id: str,
        topic: str,
        outcome: str,
        answer_id: str,
        user_id: str,
        item_id: str,
        kind: str,
        pairs: Callable[[bytes, list[AnswerFeedback]], list[Pair]],
    ) -> list[Pair]:
        """Marks a feedback event applied; when it names a chat answer, keeps it and
        stores the pairs it completes (``pairs(turn_event_bytes, all_feedback)``)."""
        with self._lock, self._db:
            if not self._mark(event_id, topic, outcome):
                return []
            if not answer_id:
                return []
            self._db.execute(
                "INSERT OR IGNORE INTO answer_feedback VALUES (?, ?, ?, ?, ?, ?)",
                (event_id, answer_id, user_id, item_id, kind, time.time()),
            )
            row = self._db.execute(
                "SELECT event FROM turns WHERE answer_id = ?", (answer_id,)
            ).fetchone()
            if row is None:  # the turn has not arrived yet: pairs are made when it does
                return []
            return self._insert_pairs(pairs(bytes(row[0]), self._feedback_of(answer_id)))

    def _feedback_of(self, answer_id: str) -> list[AnswerFeedback]:
        rows = self._db.execute(
            "SELECT event_id, item_id, kind FROM answer_feedback WHERE answer_id = ? "
            "ORDER BY at, event_id",
            (answer_id,),
        )
        return [AnswerFeedback(str(e), str(i), str(k)) for e, i, k in rows]

    def _insert_pairs(self, pairs: Iterable[Pair]) -> list[Pair]:
        added = []
        for p in pairs:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO pairs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    p.pair_id,
                    p.answer_id,
                    p.split,
                    json.dumps(p.prompt),
                    p.chosen,
                    p.rejected,
                    p.chosen_item_id,
                    p.rejected_item_id,
                    json.dumps(p.provenance, sort_keys=True),
                    p.adapter_id,
                    p.created,
                    p.round_id,
                ),
            )
            if cursor.rowcount == 1:
                added.append(p)
        return added

    # ------------------------------------------------------------------ pairs

    def pairs(self, split: str | None = None, unused_only: bool = False) -> list[Pair]:
        query, args = "SELECT * FROM pairs WHERE 1 = 1", []
        if split is not None:
            query += " AND split = ?"
            args.append(split)
        if unused_only:
            query += " AND round_id = ''"
        with self._lock:
            rows = self._db.execute(query + " ORDER BY created, pair_id", args).fetchall()
        return [
            Pair(
                pair_id=r[0],
                answer_id=r[1],
                split=r[2],
                prompt=[(m[0], m[1]) for m in json.loads(r[3])],
                chosen=r[4],
                rejected=r[5],
                chosen_item_id=r[6],
                rejected_item_id=r[7],
                provenance=json.loads(r[8]),
                adapter_id=r[9],
                created=r[10],
                round_id=r[11],
            )
            for r in rows
        ]

    def mark_used(self, pair_ids: Sequence[str], round_id: str) -> None:
        with self._lock, self._db:
            self._db.executemany(
                "UPDATE pairs SET round_id = ? WHERE pair_id = ?",
                [(round_id, p) for p in pair_ids],
            )

"""A durable, ordered log of Kafka records that could not be delivered yet.

SQLite in WAL mode with ``synchronous=FULL``: every :meth:`Spool.append` is one
transaction that is on disk when it returns, a write cut short by a crash is rolled back
by SQLite itself (the WAL's frames carry checksums), and each record also carries its
own CRC-32, checked when it is read back. Records come out in the order they went in
(``seq``); a delivered chunk is removed in one transaction (:meth:`Spool.delete_through`),
which is the durable cursor: a crash mid-delivery re-sends at most one chunk.

Nothing read back is ever fatal. A record whose checksum does not match, a database file
that is not a database, and lines of the old JSON-lines spool that cannot be parsed are
moved aside (quarantined) with a log line and ``styleloop_spool_quarantined_total``,
and the rest is delivered. The folder is 0700 and the files 0600 (they hold user ids and
queries); the folder is fsynced whenever a file in it is created, renamed or removed.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import sqlite3
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import Counter

log = logging.getLogger(__name__)

QUARANTINED = Counter(
    "styleloop_spool_quarantined_total",
    "Spool entries moved aside because they could not be read back (record, file, line).",
    ["what"],
)

# The JSON-lines spool of earlier versions: imported once, then removed.
LEGACY_NAMES = ("feedback.replaying", "feedback.spool")
SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key BLOB NOT NULL,
    value BLOB NOT NULL,
    crc INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS quarantine (
    seq INTEGER,
    key BLOB,
    value BLOB,
    crc INTEGER,
    reason TEXT NOT NULL,
    quarantine_time REAL NOT NULL
);
"""

Record = tuple[bytes, bytes]  # (key, value)


@dataclass(frozen=True)
class Entry:
    seq: int
    key: bytes
    value: bytes


def checksum(key: bytes, value: bytes) -> int:
    """CRC-32 of a record, its key length included (so key/value boundaries count)."""
    return zlib.crc32(value, zlib.crc32(key, zlib.crc32(len(key).to_bytes(4, "big"))))


def intact(key: object, value: object, crc: object) -> bool:
    """A stored row is what was written: blobs whose checksum matches."""
    return isinstance(key, bytes) and isinstance(value, bytes) and crc == checksum(key, value)


def fsync_dir(path: Path) -> None:
    """Make a file's creation, rename or removal inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """Thread-safe; every call is short and blocking (call it from a worker thread)."""

    def __init__(self, directory: Path, name: str = "feedback") -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(directory, 0o700)
        self.path = directory / f"{name}.sqlite3"
        self.legacy_names = LEGACY_NAMES if name == "feedback" else ()
        self._lock = threading.Lock()
        self._db = self._open()
        self._import_legacy()

    # ------------------------------------------------------------------ opening

    def _connect(self) -> sqlite3.Connection:
        created = not self.path.exists()
        if created:  # 0600 from the first byte; SQLite gives -wal/-shm the same mode
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
            fsync_dir(self.directory)
        os.chmod(self.path, 0o600)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL").fetchone()
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(SCHEMA)
            check = db.execute("PRAGMA quick_check").fetchone()
            if check is None or check[0] != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {check}")
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def _open(self) -> sqlite3.Connection:
        try:
            return self._connect()
        except sqlite3.DatabaseError as exc:
            salvaged = self._salvage()
            aside = self.path.with_name(f"{self.path.name}.corrupt-{time.time_ns()}")
            for suffix in ("", "-wal", "-shm"):
                source = Path(f"{self.path}{suffix}")
                if source.exists():
                    os.replace(source, f"{aside}{suffix}")
            fsync_dir(self.directory)
            QUARANTINED.labels("file").inc()
            log.error(
                "the feedback spool could not be read; moved aside, readable records kept",
                extra={"error": repr(exc), "moved_to": str(aside), "salvaged": len(salvaged)},
            )
            db = self._connect()
            self._insert(db, salvaged)
            return db

    def _salvage(self) -> list[Record]:
        """Whatever records a damaged database still gives, in order (often none)."""
        records: list[Record] = []
        try:
            db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            try:
                rows = db.execute("SELECT key, value, crc FROM records ORDER BY seq")
                records = [(key, value) for key, value, crc in rows if intact(key, value, crc)]
            finally:
                db.close()
        except sqlite3.Error:
            pass
        return records

    def _import_legacy(self) -> None:
        """Move the records of an old JSON-lines spool (replaying batch first) into the
        database; lines that do not parse are kept in ``feedback.spool.corrupt``."""
        present = [self.directory / n for n in self.legacy_names if (self.directory / n).exists()]
        if not present:
            return
        records: list[Record] = []
        for path in present:
            data = path.read_bytes()
            lines = data.split(b"\n")
            for number, line in enumerate(lines, 1):
                if not line:
                    continue
                torn = number == len(lines)  # no newline after it: a write cut short
                record = None if torn else _legacy_record(line)
                if record is None:
                    self._quarantine_line(path, number, line, "torn" if torn else "unparsable")
                else:
                    records.append(record)
        self._insert(self._db, records)
        for path in present:
            path.unlink()
        fsync_dir(self.directory)
        log.info("imported the old feedback spool", extra={"events": len(records)})

    def _quarantine_line(self, path: Path, number: int, line: bytes, why: str) -> None:
        aside = self.directory / "feedback.spool.corrupt"
        fd = os.open(aside, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
        try:
            os.write(fd, line + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        QUARANTINED.labels("line").inc()
        log.error(
            "a spool line could not be read; kept aside",
            extra={"file": path.name, "line": number, "why": why, "moved_to": str(aside)},
        )

    # ------------------------------------------------------------------ the log

    @staticmethod
    def _insert(db: sqlite3.Connection, records: list[Record]) -> None:
        if not records:
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(
                "INSERT INTO records (key, value, crc) VALUES (?, ?, ?)",
                [(k, v, checksum(k, v)) for k, v in records],
            )
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # SQLite rolls back by itself on some errors (disk full)
                db.execute("ROLLBACK")
            raise

    def append(self, records: list[Record]) -> None:
        """Durable when it returns (one fsynced transaction)."""
        with self._lock:
            self._insert(self._db, records)

    def head(self, limit: int) -> list[Entry]:
        """The oldest ``limit`` readable records; unreadable ones are quarantined."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, key, value, crc FROM records ORDER BY seq LIMIT ?", (limit,)
            ).fetchall()
            good, bad = [], []
            for seq, key, value, crc in rows:
                if intact(key, value, crc):
                    good.append(Entry(seq, key, value))
                else:
                    bad.append(seq)
            if bad:
                self._db.execute("BEGIN IMMEDIATE")
                for seq in bad:
                    self._db.execute(
                        "INSERT INTO quarantine SELECT seq, key, value, crc, ?, ? FROM records "
                        "WHERE seq = ?",
                        ("checksum", time.time(), seq),
                    )
                    self._db.execute("DELETE FROM records WHERE seq = ?", (seq,))
                self._db.execute("COMMIT")
                QUARANTINED.labels("record").inc(len(bad))
                log.error("spooled records failed their checksum; quarantined", extra={"seqs": bad})
            return good

    def delete_through(self, seq: int) -> None:
        """Forget every record up to and including ``seq`` (they were delivered)."""
        with self._lock:
            self._db.execute("DELETE FROM records WHERE seq <= ?", (seq,))

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM records").fetchone()[0])

    def quarantined(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM quarantine").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _legacy_record(line: bytes) -> Record | None:
    try:
        entry = json.loads(line.decode("ascii"))
        if not isinstance(entry, dict) or not isinstance(entry.get("k"), str):
            return None
        if not isinstance(entry.get("v"), str):
            return None
        return base64.b64decode(entry["k"], validate=True), base64.b64decode(
            entry["v"], validate=True
        )
    except (UnicodeDecodeError, ValueError, binascii.Error):
        return None

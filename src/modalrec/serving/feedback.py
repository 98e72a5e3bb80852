"""Feedback store: SQLite in WAL mode, one group-committing writer thread per process.

Why this shape: a feedback POST is answered 200 only after its row is committed (``synchronous=FULL``
by default: the WAL is fsynced at every commit), so a client that got a 200 can trust the row exists
after a crash. Committing one transaction per request would cost one fsync each; instead a writer
thread takes every row that queued up while the previous commit ran and commits them together
(group commit), then wakes their requests. Several server processes share the file (SQLite locks),
and readers never block the writer (WAL), which is why ``/recommend`` can read a user's feedback on
every request and reflect it at once whichever worker received the POST.

An optional client ``request_id`` makes a POST idempotent: a retried request returns the original
row instead of writing a duplicate.

>>> import tempfile, os
>>> store = FeedbackStore(os.path.join(tempfile.mkdtemp(), "fb.sqlite"))
>>> a = store.add([FeedbackRow("u1", "i9", "click", None, "a", request_id="r1")])[0]
>>> b = store.add([FeedbackRow("u1", "i9", "click", None, "a", request_id="r1")])[0]
>>> a.id == b.id, b.duplicate, len(store.for_user("u1"))
(True, True, 1)
>>> store.close()
"""

from __future__ import annotations

import contextlib
import queue
import sqlite3
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT UNIQUE,
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    event TEXT NOT NULL,
    value REAL,
    arm TEXT NOT NULL DEFAULT 'a',
    ts REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_user ON feedback(user_id, id);
CREATE TABLE IF NOT EXISTS impressions (
    arm TEXT NOT NULL,
    source TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (arm, source)
);
"""


@dataclass
class FeedbackRow:
    user_id: str
    item_id: str
    event: str
    value: float | None
    arm: str
    request_id: str | None = None
    ts: float = 0.0


@dataclass
class Stored:
    id: int
    ts: float
    duplicate: bool


class FeedbackStore:
    """Durable feedback log plus per-arm recommendation counters (for A/B rates)."""

    def __init__(self, path: str | Path, *, synchronous: str = "FULL", batch: int = 512) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.synchronous = synchronous
        self.batch = batch
        self._local = threading.local()
        self._queue: queue.Queue[tuple[list[FeedbackRow], Future[list[Stored]]] | None] = queue.Queue()
        self._pending: dict[tuple[str, str], int] = {}
        self._pending_lock = threading.Lock()
        self._last_flush = time.monotonic()
        con = self._connect()
        con.executescript(SCHEMA)
        con.commit()
        self._writer = threading.Thread(target=self._run, name="feedback-writer", daemon=True)
        self._closed = False
        self._writer.start()

    # ------------------------------------------------------------------ connections
    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute(f"PRAGMA synchronous={self.synchronous}")
        con.execute("PRAGMA busy_timeout=30000")
        return con

    def _reader(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = self._connect()
            self._local.con = con
        return con

    # ------------------------------------------------------------------ writes
    def submit(self, rows: list[FeedbackRow]) -> Future[list[Stored]]:
        """Queue rows for the next group commit; the future resolves once they are durable."""
        if self._closed:
            raise RuntimeError("feedback store is closed")
        fut: Future[list[Stored]] = Future()
        now = time.time()
        for r in rows:
            if not r.ts:
                r.ts = now
        self._queue.put((rows, fut))
        return fut

    def add(self, rows: list[FeedbackRow], timeout: float = 30.0) -> list[Stored]:
        """Write rows and wait until they are committed."""
        return self.submit(rows).result(timeout)

    def count_impressions(self, arm: str, source: str, n: int = 1) -> None:
        """Count served recommendation lists; flushed to the database by the writer (every ~0.5 s)."""
        with self._pending_lock:
            self._pending[(arm, source)] = self._pending.get((arm, source), 0) + n

    def flush_impressions(self) -> None:
        """Make this process's pending counters durable now (the writer also does so periodically)."""
        fut: Future[list[Stored]] = Future()
        self._queue.put(([], fut))
        fut.result(30.0)

    def _run(self) -> None:
        con = self._connect()
        while True:
            try:
                first = self._queue.get(timeout=0.5)
            except queue.Empty:
                first = ()  # type: ignore[assignment]
            if first is None:
                self._commit(con, [])
                con.close()
                return
            jobs = [first] if first else []
            while len(jobs) < self.batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)  # handle the stop after this batch
                    break
                jobs.append(nxt)
            if jobs or time.monotonic() - self._last_flush > 0.5:
                self._commit(con, jobs)

    def _commit(
        self, con: sqlite3.Connection, jobs: list[tuple[list[FeedbackRow], Future[list[Stored]]]]
    ) -> None:
        with self._pending_lock:
            pending, self._pending = self._pending, {}
        self._last_flush = time.monotonic()
        if not jobs and not pending:
            return
        results: list[list[Stored]] = []
        try:
            con.execute("BEGIN IMMEDIATE")
            for rows, _ in jobs:
                out = []
                for r in rows:
                    cur = con.execute(
                        "INSERT OR IGNORE INTO feedback (request_id, user_id, item_id, event, value, arm, ts) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (r.request_id, r.user_id, r.item_id, r.event, r.value, r.arm, r.ts),
                    )
                    if cur.rowcount == 1:
                        out.append(Stored(int(cur.lastrowid or 0), r.ts, False))
                    else:
                        rid, ts = con.execute(
                            "SELECT id, ts FROM feedback WHERE request_id = ?", (r.request_id,)
                        ).fetchone()
                        out.append(Stored(int(rid), float(ts), True))
                results.append(out)
            for (arm, source), n in pending.items():
                con.execute(
                    "INSERT INTO impressions (arm, source, n) VALUES (?, ?, ?) "
                    "ON CONFLICT(arm, source) DO UPDATE SET n = n + excluded.n",
                    (arm, source, n),
                )
            con.execute("COMMIT")
        except Exception as e:
            with contextlib.suppress(sqlite3.Error):
                con.execute("ROLLBACK")
            with self._pending_lock:  # keep the counts for the next try
                for key, n in pending.items():
                    self._pending[key] = self._pending.get(key, 0) + n
            for _, fut in jobs:
                fut.set_exception(e)
            return
        for (_, fut), out in zip(jobs, results, strict=True):
            fut.set_result(out)

    # ------------------------------------------------------------------ reads
    def for_user(self, user_id: str) -> list[tuple[str, str, float | None]]:
        """(item_id, event, value) of every feedback row of a user, oldest first."""
        cur = self._reader().execute(
            "SELECT item_id, event, value FROM feedback WHERE user_id = ? ORDER BY id", (user_id,)
        )
        return cur.fetchall()

    def count(self) -> int:
        return int(self._reader().execute("SELECT COUNT(*) FROM feedback").fetchone()[0])

    def events_by_arm(self) -> dict[str, dict[str, int]]:
        rows = (
            self._reader().execute("SELECT arm, event, COUNT(*) FROM feedback GROUP BY arm, event").fetchall()
        )
        out: dict[str, dict[str, int]] = {}
        for arm, event, n in rows:
            out.setdefault(arm, {})[event] = int(n)
        return out

    def impressions_by_arm(self) -> dict[str, dict[str, int]]:
        rows = self._reader().execute("SELECT arm, source, n FROM impressions").fetchall()
        out: dict[str, dict[str, int]] = {}
        for arm, source, n in rows:
            out.setdefault(arm, {})[source] = int(n)
        return out

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._writer.join(timeout=10)
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()

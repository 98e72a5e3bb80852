"""Feedback store: SQLite in WAL mode, one group-committing writer thread per process; it also keeps
the experiment log (impressions served and the attribution of feedback to them).

Why this shape: a feedback POST is answered 200 only after its row is committed (``synchronous=FULL``
by default: the WAL is fsynced at every commit), so a client that got a 200 can trust the row exists
after a crash. Committing one transaction per request would cost one fsync each; instead a writer
thread takes every row that queued up while the previous commit ran and commits them together
(group commit), then wakes their requests. Several server processes share the file (SQLite locks),
and readers never block the writer (WAL), which is why ``/recommend`` can read a user's feedback on
every request and reflect it at once whichever worker received the POST.

An optional client ``request_id`` makes a POST idempotent: a retried request returns the original
row instead of writing a duplicate.

Experiment log (issue 21; the interface is :class:`modalrec.serving.experiments.ExperimentStore`, which
a PostgreSQL store can implement too): every ``/recommend`` answer is an impression row (id, user, arm,
the items shown in order, interleaving teams, latency, error). Impressions are queued without waiting
(a recommendation is not held up by an fsync) and committed by the same writer, so a feedback row of
the same process is always committed after the impression it follows. Each feedback row is attributed
in the transaction that stores it: to the impression it names (``impression_id``) if that impression
showed the item to the same user within ``attribution_window_s``, else to the newest impression of the
user in the window that showed the item; otherwise it is stored as unattributed with the reason.

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

from modalrec.serving.experiments import Attribution, Impression, SQLiteExperimentReads, attribute

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
CREATE TABLE IF NOT EXISTS ab_impressions (
    id TEXT PRIMARY KEY,
    experiment TEXT NOT NULL,
    user_id TEXT NOT NULL,
    arm TEXT NOT NULL,
    source TEXT NOT NULL,
    items TEXT NOT NULL,
    teams TEXT,
    latency_ms REAL,
    error INTEGER NOT NULL DEFAULT 0,
    ts REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS ab_impressions_user ON ab_impressions(user_id, ts);
CREATE INDEX IF NOT EXISTS ab_impressions_exp ON ab_impressions(experiment, user_id);
CREATE TABLE IF NOT EXISTS ab_attributions (
    feedback_id INTEGER PRIMARY KEY,
    impression_id TEXT,
    experiment TEXT,
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    event TEXT NOT NULL,
    arm TEXT,
    rank INTEGER,
    team TEXT,
    how TEXT NOT NULL,
    ts REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS ab_attributions_imp ON ab_attributions(impression_id);
CREATE INDEX IF NOT EXISTS ab_attributions_exp ON ab_attributions(experiment);
CREATE TABLE IF NOT EXISTS ab_state (
    experiment TEXT PRIMARY KEY,
    min_p REAL NOT NULL,
    looks INTEGER NOT NULL,
    updated REAL NOT NULL
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
    #: The impression the client says it clicked in (from the /recommend answer) and the 1-based rank.
    impression_id: str | None = None
    rank: int | None = None
    #: The experiment running when the event arrived (tags unattributed events).
    experiment: str | None = None


@dataclass
class Stored:
    id: int
    ts: float
    duplicate: bool
    attribution: Attribution | None = None


class FeedbackStore(SQLiteExperimentReads):
    """Durable feedback log plus the experiment log (impressions, attributions; :class:`ExperimentStore`)."""

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: str = "FULL",
        batch: int = 512,
        attribution_window_s: float = 1800.0,
    ) -> None:
        self.path = Path(path)
        self.attribution_window_s = attribution_window_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.synchronous = synchronous
        self.batch = batch
        self._local = threading.local()
        self._queue: queue.Queue[tuple[list[FeedbackRow], Future[list[Stored]] | None] | None] = queue.Queue()
        self._pending: list[Impression] = []
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

    def record_impression(self, imp: Impression) -> None:
        """Queue one impression; the writer commits it with its next group (without making the caller wait)."""
        if self._closed:
            return
        with self._pending_lock:
            self._pending.append(imp)
        self._queue.put(([], None))  # wake the writer

    def flush_impressions(self) -> None:
        """Make this process's queued impressions durable now (the writer also does so continuously)."""
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
            jobs = [first] if first and first[1] is not None else []
            while len(jobs) < self.batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)  # handle the stop after this batch
                    break
                if nxt[1] is not None:
                    jobs.append(nxt)
            if jobs or self._pending or time.monotonic() - self._last_flush > 0.5:
                self._commit(con, jobs)  # type: ignore[arg-type]

    def _commit(
        self, con: sqlite3.Connection, jobs: list[tuple[list[FeedbackRow], Future[list[Stored]]]]
    ) -> None:
        with self._pending_lock:
            pending, self._pending = self._pending, []
        self._last_flush = time.monotonic()
        if not jobs and not pending:
            return
        results: list[list[Stored]] = []
        try:
            con.execute("BEGIN IMMEDIATE")
            con.executemany(
                "INSERT OR IGNORE INTO ab_impressions "
                "(id, experiment, user_id, arm, source, items, teams, latency_ms, error, ts) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [imp.row() for imp in pending],
            )
            for rows, _ in jobs:
                results.append([self._insert(con, r) for r in rows])
            con.execute("COMMIT")
        except Exception as e:
            with contextlib.suppress(sqlite3.Error):
                con.execute("ROLLBACK")
            with self._pending_lock:  # keep the impressions for the next try
                self._pending[:0] = pending
            for _, fut in jobs:
                fut.set_exception(e)
            return
        for (_, fut), out in zip(jobs, results, strict=True):
            fut.set_result(out)

    def _insert(self, con: sqlite3.Connection, r: FeedbackRow) -> Stored:
        """Insert one feedback row (or find its earlier copy by request_id) and attribute it."""
        cur = con.execute(
            "INSERT OR IGNORE INTO feedback (request_id, user_id, item_id, event, value, arm, ts) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (r.request_id, r.user_id, r.item_id, r.event, r.value, r.arm, r.ts),
        )
        if cur.rowcount == 1:
            fid = int(cur.lastrowid or 0)
            att = attribute(con, r, self.attribution_window_s)
            con.execute(
                "INSERT OR IGNORE INTO ab_attributions (feedback_id, impression_id, experiment, user_id, "
                "item_id, event, arm, rank, team, how, ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    fid,
                    att.impression_id,
                    att.experiment or r.experiment,
                    r.user_id,
                    r.item_id,
                    r.event,
                    att.arm or r.arm,
                    att.rank,
                    att.team,
                    att.how,
                    r.ts,
                ),
            )
            return Stored(fid, r.ts, False, att)
        rid, ts = con.execute("SELECT id, ts FROM feedback WHERE request_id = ?", (r.request_id,)).fetchone()
        row = con.execute(
            "SELECT impression_id, rank, arm, team, how, experiment FROM ab_attributions WHERE feedback_id = ?",
            (rid,),
        ).fetchone()
        return Stored(int(rid), float(ts), True, Attribution(*row) if row else None)

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

    # ------------------------------------------------------------------ experiment log reads
    def update_running_p(self, experiment: str, p_value: float) -> float:
        """Store ``min(previous, p_value)`` for ``experiment`` and return it (the always-valid p-value is
        the running minimum over looks). A short write on its own connection: rare (admin reads)."""
        con = self._connect()
        try:
            con.execute(
                "INSERT INTO ab_state (experiment, min_p, looks, updated) VALUES (?, ?, 1, ?) "
                "ON CONFLICT(experiment) DO UPDATE SET min_p = MIN(min_p, excluded.min_p), "
                "looks = looks + 1, updated = excluded.updated",
                (experiment, float(p_value), time.time()),
            )
            (p,) = con.execute("SELECT min_p FROM ab_state WHERE experiment = ?", (experiment,)).fetchone()
        finally:
            con.close()
        return float(p)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._writer.join(timeout=10)
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()

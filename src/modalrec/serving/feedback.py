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

The queue, the writer thread and the statements both dialects accept live in :class:`GroupCommitStore`;
:class:`FeedbackStore` (SQLite, the default) and
:class:`~modalrec.serving.feedback_pg.PostgresFeedbackStore` (``[feedback] url``, shared by many hosts)
add only their connections, schema and the one insert whose syntax differs.

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

import abc
import contextlib
import queue
import sqlite3
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modalrec.serving.active import NEWEST, ActiveRun
from modalrec.serving.active import SCHEMA as ACTIVE_SCHEMA
from modalrec.serving.experiments import (
    Attribution,
    ExperimentReads,
    Fetch,
    Impression,
    SQLiteExperimentReads,
    attribute,
)

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


_Job = tuple[list[FeedbackRow], Future[list[Stored]]]


def active_from_rows(rows: list[tuple[Any, ...]]) -> ActiveRun | None:
    """The :data:`~modalrec.serving.active.NEWEST` query's answer as a record (None: no row)."""
    if not rows:
        return None
    gen, a, b, fp, at = rows[0]
    return ActiveRun(int(gen), str(a), str(b) if b is not None else None, str(fp), float(at))


IMPRESSION_INSERT = (
    "INSERT INTO ab_impressions (id, experiment, user_id, arm, source, items, teams, latency_ms, error, ts) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING"
)
ATTRIBUTION_INSERT = (
    "INSERT INTO ab_attributions (feedback_id, impression_id, experiment, user_id, item_id, event, arm, "
    "rank, team, how, ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (feedback_id) DO NOTHING"
)


class GroupCommitStore(ExperimentReads):
    """The group-committing writer shared by the SQLite and PostgreSQL stores (module docstring).

    Subclasses open connections and run statements (``?`` placeholders); this class owns the queue, the
    writer thread, the transaction's shape and the attribution of each new row."""

    attribution_window_s: float
    batch: int
    #: Impressions kept for retry while commits fail (None: unbounded); the oldest are dropped past it.
    max_pending: int | None = None
    #: Queued impressions are committed within this many seconds (or with the next feedback commit, or
    #: once ``batch`` are queued). Why not at once: a commit (an fsync) per ``/recommend`` cost 1.1-1.4 ms
    #: of CPU per request at 40 req/s (measured, issue 15); waking the writer for each impression made
    #: most commits hold one row. Another process sees an impression up to this much later.
    impression_flush_s: float = 0.1

    def _start_writer(self) -> None:
        self._queue: queue.Queue[tuple[list[FeedbackRow], Future[list[Stored]] | None] | None] = queue.Queue()
        self._pending: list[Impression] = []
        self._pending_lock = threading.Lock()
        self._last_flush = time.monotonic()
        self._wcon: Any = None
        self._writer = threading.Thread(target=self._run, name="feedback-writer", daemon=True)
        self._closed = False
        self._writer.start()

    # ------------------------------------------------------------------ dialect hooks
    @abc.abstractmethod
    def _open_writer(self) -> Any:
        """A connection for the writer thread (no transaction open)."""

    @abc.abstractmethod
    def _sql(self, con: Any, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """Run one statement in the open transaction; its rows ([] for a statement without any)."""

    @abc.abstractmethod
    def _sql_many(self, con: Any, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """Run one statement once per row in the open transaction."""

    @abc.abstractmethod
    def _begin(self, con: Any) -> None: ...

    @abc.abstractmethod
    def _end(self, con: Any, commit: bool) -> None:
        """Commit (durable when it returns) or roll back (must not raise)."""

    @abc.abstractmethod
    def _new_feedback_id(self, con: Any, r: FeedbackRow) -> int | None:
        """Insert one feedback row; its id, or None when its ``request_id`` is already stored."""

    def _writer_failed(self, con: Any) -> Any:
        """The writer connection to keep after a failed commit (None: open a new one next time)."""
        return con

    def _close_readers(self) -> None:
        """Close this thread's reader connection, if any."""

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
            full = len(self._pending) >= self.batch
        if full:
            self._queue.put(([], None))  # wake the writer; else it flushes within impression_flush_s

    def flush_impressions(self) -> None:
        """Make this process's queued impressions durable now (the writer also does so continuously)."""
        fut: Future[list[Stored]] = Future()
        self._queue.put(([], fut))
        fut.result(30.0)

    def _run(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=self.impression_flush_s)
            except queue.Empty:
                first = ()  # type: ignore[assignment]
            if first is None:
                self._commit([])
                if self._wcon is not None:
                    with contextlib.suppress(Exception):
                        self._wcon.close()
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
            if jobs or self._pending or time.monotonic() - self._last_flush > self.impression_flush_s:
                self._commit(jobs)  # type: ignore[arg-type]

    def _commit(self, jobs: list[_Job]) -> None:
        """One transaction: the queued impressions, then every job's rows; futures resolve after COMMIT."""
        with self._pending_lock:
            pending, self._pending = self._pending, []
        self._last_flush = time.monotonic()
        if not jobs and not pending:
            return
        results: list[list[Stored]] = []
        began = False
        try:
            if self._wcon is None:
                self._wcon = self._open_writer()
            con = self._wcon
            self._begin(con)
            began = True
            self._sql_many(con, IMPRESSION_INSERT, [imp.row() for imp in pending])
            results = self._insert_in_lock_order(con, [rows for rows, _ in jobs])
            self._end(con, commit=True)
        except Exception as e:
            if began:
                self._end(self._wcon, commit=False)
            self._wcon = self._writer_failed(self._wcon)
            with self._pending_lock:  # keep the impressions for the next try
                self._pending[:0] = pending
                if self.max_pending is not None and len(self._pending) > self.max_pending:
                    del self._pending[: len(self._pending) - self.max_pending]
            for _, fut in jobs:
                fut.set_exception(e)
            return
        for (_, fut), out in zip(jobs, results, strict=True):
            fut.set_result(out)

    def _insert_in_lock_order(self, con: Any, batches: list[list[FeedbackRow]]) -> list[list[Stored]]:
        """Insert the rows of every job sorted by ``request_id`` (rows without one last, in arrival order)
        and return the results in the jobs' own order.

        Why sorted: a row inserted under a unique ``request_id`` holds its index entry until COMMIT, and a
        second transaction inserting the same id waits for it. Two processes whose batches hold the same
        ids in opposite order would each wait on the other (PostgreSQL aborts one with a deadlock error, its
        POSTs get 503). When every transaction inserts in one global order, a transaction only ever waits
        on ids that sort after everything it holds, so no cycle can form. The cost: within one commit, row
        ids follow the sort, not the arrival (the rows of one commit come from concurrent requests)."""
        flat = [(j, k, r) for j, rows in enumerate(batches) for k, r in enumerate(rows)]
        flat.sort(key=lambda t: (t[2].request_id is None, t[2].request_id or ""))
        out: list[list[Stored | None]] = [[None] * len(rows) for rows in batches]
        for j, k, r in flat:
            out[j][k] = self._insert(con, r)
        return [[s for s in rows if s is not None] for rows in out]

    def _insert(self, con: Any, r: FeedbackRow) -> Stored:
        """Insert one feedback row (or find its earlier copy by request_id) and attribute it."""
        fid = self._new_feedback_id(con, r)
        if fid is not None:
            fetch: Fetch = lambda sql, params: self._sql(con, sql, params)  # noqa: E731
            att = attribute(fetch, r, self.attribution_window_s)
            self._sql(
                con,
                ATTRIBUTION_INSERT,
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
        rid, ts = self._sql(con, "SELECT id, ts FROM feedback WHERE request_id = ?", (r.request_id,))[0]
        found = self._sql(
            con,
            "SELECT impression_id, rank, arm, team, how, experiment FROM ab_attributions WHERE feedback_id = ?",
            (rid,),
        )
        return Stored(int(rid), float(ts), True, Attribution(*found[0]) if found else None)

    # ------------------------------------------------------------------ reads (``query``: ExperimentReads)
    def for_user(self, user_id: str) -> list[tuple[str, str, float | None]]:
        """(item_id, event, value) of every feedback row of a user, oldest first."""
        rows = self.query(
            "SELECT item_id, event, value FROM feedback WHERE user_id = ? ORDER BY id", (user_id,)
        )
        return [(str(a), str(b), c) for a, b, c in rows]

    def count(self) -> int:
        return int(self.query("SELECT COUNT(*) FROM feedback")[0][0])

    def active_run(self) -> ActiveRun | None:
        """The newest record of the serving fleet's active run (:mod:`modalrec.serving.active`)."""
        return active_from_rows(self.query(NEWEST))

    def events_by_arm(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for arm, event, n in self.query("SELECT arm, event, COUNT(*) FROM feedback GROUP BY arm, event"):
            out.setdefault(arm, {})[event] = int(n)
        return out

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._writer.join(timeout=10)
        self._close_readers()


class FeedbackStore(GroupCommitStore, SQLiteExperimentReads):
    """Durable feedback log plus the experiment log (impressions, attributions; :class:`ExperimentStore`)
    in one SQLite file (WAL) that the server processes of one host share."""

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
        con = self._connect()
        con.executescript(SCHEMA + ACTIVE_SCHEMA)
        con.commit()
        con.close()
        self._start_writer()

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

    def _close_readers(self) -> None:
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()

    # ------------------------------------------------------------------ writer hooks
    def _open_writer(self) -> sqlite3.Connection:
        return self._connect()

    def _sql(self, con: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        return con.execute(sql, params).fetchall()

    def _sql_many(self, con: sqlite3.Connection, sql: str, rows: list[tuple[Any, ...]]) -> None:
        con.executemany(sql, rows)

    def _begin(self, con: sqlite3.Connection) -> None:
        con.execute("BEGIN IMMEDIATE")

    def _end(self, con: sqlite3.Connection, commit: bool) -> None:
        if commit:
            con.execute("COMMIT")
        else:
            with contextlib.suppress(sqlite3.Error):
                con.execute("ROLLBACK")

    def _new_feedback_id(self, con: sqlite3.Connection, r: FeedbackRow) -> int | None:
        cur = con.execute(
            "INSERT OR IGNORE INTO feedback (request_id, user_id, item_id, event, value, arm, ts) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (r.request_id, r.user_id, r.item_id, r.event, r.value, r.arm, r.ts),
        )
        return int(cur.lastrowid or 0) if cur.rowcount == 1 else None

    # ------------------------------------------------------------------ active run
    def set_active(
        self, run_dir: str, run_dir_b: str | None, fingerprint: str, *, only_if_empty: bool = False
    ) -> ActiveRun:
        """Record a new generation of the active run (BEGIN IMMEDIATE serialises writers); the newest
        record afterwards (:class:`modalrec.serving.active.ActiveRunStore`)."""
        con = self._connect()
        try:
            con.execute("BEGIN IMMEDIATE")
            have = con.execute("SELECT COUNT(*) FROM serving_active").fetchone()[0]
            if not (only_if_empty and have):
                con.execute(
                    "INSERT INTO serving_active (generation, run_dir, run_dir_b, fingerprint, set_at) "
                    "SELECT COALESCE(MAX(generation), 0) + 1, ?, ?, ?, ? FROM serving_active",
                    (run_dir, run_dir_b, fingerprint, time.time()),
                )
            gen, a, b, fp, at = con.execute(NEWEST).fetchone()
            con.execute("COMMIT")
        finally:
            con.close()
        return ActiveRun(int(gen), str(a), b, str(fp), float(at))

    # ------------------------------------------------------------------ experiment state
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

"""PostgreSQL feedback store shared by two server processes: durability under SIGKILL and acknowledged
throughput, next to SQLite measured the same way (plan: benchmarks/plans/feedback_pg.toml).

Per repetition and backend: two ``modalrec serve --workers 1`` processes (SQLite: one state dir, one
database file, as the processes of one host; PostgreSQL: a state dir each, as two hosts, and one
database of a throw-away cluster the script starts with initdb + pg_ctl). 32 keep-alive clients (raw
HTTP/1.1 over asyncio, one process) send POST /feedback with a unique request_id each, client c to
server c % 2; when POST number ``--kill-after`` is written to a socket, server 0 gets SIGKILL and its
clients fail over to server 1. No retries during the load. Then the rows are counted in the database
(every acknowledged request_id present, none twice, none never sent), every unacknowledged POST is
retried once with its request_id against the surviving server, and the rows are counted again.

Usage (a timing benchmark: nothing else heavy on the machine)::

    /work/q/submit timing i16-fbpg 30 -- python benchmarks/feedback_pg.py
    python benchmarks/feedback_pg.py --posts 300 --kill-after 150 --repeats 1 --results /tmp/fbpg  # check
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests" / "serving"))

from serving import KEY, Server, cpu_jiffies  # noqa: E402  (benchmarks/serving.py)
from serving_loadgen import summary  # noqa: E402

PLAN = ROOT / "benchmarks" / "plans" / "feedback_pg.toml"
REFERENCE = {"sqlite_acks_per_s": 2402, "sqlite_p99_ms": 133, "source": "benchmarks/results/serving.md"}


def git(*args: str) -> str:
    # rstrip only: a porcelain status line starts with a space that names the path's column
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.rstrip()


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ---------------------------------------------------------------------------------------------- set-up
def make_run(work: Path, plan: dict[str, Any]) -> Path:
    """The small popularity run of the plan (POST /feedback scores nothing; the run only names ids)."""
    from modalrec.data import load
    from modalrec.data.synth import make_synthetic
    from modalrec.workflows.pipeline import fit_dataset

    r = plan["run"]
    data = make_synthetic(
        work / "data",
        n_users=r["users"],
        n_items=r["items"],
        n_interactions=r["interactions"],
        seed=r["seed"],
    )
    ds = load(str(data / "dataset.toml"))
    run = fit_dataset(ds, r["model"], {}, work / "run", config={"benchmark": "feedback_pg"}, progress=False)
    return Path(run.path)


def write_config(d: Path, url: str | None) -> Path:
    from modalrec.serving.auth import hash_key

    d.mkdir(parents=True, exist_ok=True)
    cfg = d / "serve.toml"
    feedback = f'[feedback]\nurl = "{url}"\n' if url else ""
    cfg.write_text(
        f'state_dir = "state"\ntext_encoder = "none"\n{feedback}'
        f'[[auth.keys]]\nname = "bench"\nhash = "{hash_key(KEY, "sha256")}"\nscopes = ["read", "write", "admin"]\n'
    )
    return cfg


class Rows:
    """request_ids stored in the backend's database, read with SQL."""

    def __init__(self, sqlite_path: Path | None = None, url: str | None = None) -> None:
        self.sqlite_path, self.url = sqlite_path, url

    def request_ids(self) -> list[str]:
        sql = "SELECT request_id FROM feedback"
        if self.url is not None:
            import psycopg

            with psycopg.connect(self.url) as con:
                return [r[0] for r in con.execute(sql).fetchall()]
        con = sqlite3.connect(str(self.sqlite_path), timeout=60)
        try:
            return [r[0] for r in con.execute(sql).fetchall()]
        finally:
            con.close()


# ---------------------------------------------------------------------------------------------- load
async def _read_status(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(h[15:]) for h in head.split(b"\r\n") if h[:15].lower() == b"content-length:")
    await reader.readexactly(length)
    return int(head[9:12])


def _request(rid: str, user: str, item: str) -> bytes:
    body = json.dumps({"user_id": user, "item_id": item, "event": "click", "request_id": rid}).encode()
    head = (
        f"POST /feedback HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Load:
    """Closed-loop clients over keep-alive sockets, failover to the next server on connection errors."""

    def __init__(self, ports: list[int], users: list[str], items: list[str], a: argparse.Namespace) -> None:
        self.ports, self.users, self.items, self.a = ports, users, items, a
        self.sent: list[str] = []
        self.bodies: dict[str, tuple[str, str]] = {}
        self.acked: dict[str, float] = {}
        self.failed: list[str] = []
        self.n = 0
        self.on_kill: Any = None
        self.failovers = 0
        #: Why POSTs were not acknowledged: HTTP status, or the connection error's type.
        self.failures: dict[str, int] = {}

    async def _connect(self, target: int) -> tuple[int, asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to ``target`` or, when refused, to the next server (the balancer's failover)."""
        for k in range(2 * len(self.ports)):
            t = (target + k) % len(self.ports)
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.ports[t])
                return t, reader, writer
            except OSError:
                await asyncio.sleep(0.05)
        raise RuntimeError("no server accepts connections")

    async def client(self, c: int) -> None:
        rng = random.Random(1000 + c)
        target = c % len(self.ports)
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        while self.n < self.a.posts:
            if conn is None:
                target, reader, writer = await self._connect(target)
                conn = (reader, writer)
            reader, writer = conn
            self.n += 1
            n = self.n
            rid = f"fbpg-{c}-{n}"
            self.bodies[rid] = (rng.choice(self.users), rng.choice(self.items))
            t = time.perf_counter()
            try:
                writer.write(_request(rid, *self.bodies[rid]))
                self.sent.append(rid)
                if n == self.a.kill_after and self.on_kill is not None:
                    self.on_kill()
                status = await asyncio.wait_for(_read_status(reader), self.a.request_timeout)
            except (OSError, asyncio.IncompleteReadError, TimeoutError, StopIteration, ValueError) as e:
                self.failed.append(rid)
                self.failures[type(e).__name__] = self.failures.get(type(e).__name__, 0) + 1
                writer.close()
                conn = None
                target = (target + 1) % len(self.ports)  # this server stopped answering: fail over
                self.failovers += 1
                continue
            if status == 200:
                self.acked[rid] = time.perf_counter() - t
            else:
                self.failed.append(rid)
                self.failures[str(status)] = self.failures.get(str(status), 0) + 1
        if conn is not None:
            conn[1].close()

    async def run(self) -> float:
        t0 = time.perf_counter()
        await asyncio.gather(*(self.client(c) for c in range(self.a.clients)))
        return time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------- one run
def _retry(url: str, load: Load, unacked: list[str]) -> dict[str, int]:
    import httpx

    out = {"stored_now": 0, "reported_duplicate": 0, "errors": 0}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as c:
        for rid in unacked:
            user, item = load.bodies[rid]
            r = c.post(
                "/feedback", json={"user_id": user, "item_id": item, "event": "click", "request_id": rid}
            )
            if r.status_code != 200:
                out["errors"] += 1
            elif r.json()["duplicate"]:
                out["reported_duplicate"] += 1
            else:
                out["stored_now"] += 1
    return out


def _checks(load: Load, before: list[str], after: list[str], retry: dict[str, int]) -> dict[str, Any]:
    sent, stored = set(load.sent), set(before)
    unacked = [r for r in load.sent if r not in load.acked]
    c = {
        "posts_sent": len(load.sent),
        "acknowledged_200": len(load.acked),
        "unacknowledged": len(unacked),
        "unacknowledged_but_stored": sum(r in stored for r in unacked),
        "rows_before_retry": len(before),
        "acknowledged_missing": sum(r not in stored for r in load.acked),
        "duplicated_request_ids": len(before) - len(stored),
        "rows_never_sent": len(stored - sent),
        "retry_of_unacknowledged": retry,
        "rows_after_retry": len(after),
        "duplicated_after_retry": len(after) - len(set(after)),
        "sent_not_stored_after_retry": len(sent - set(after)),
    }
    c["target_met"] = bool(
        c["acknowledged_missing"] == 0
        and c["duplicated_request_ids"] == 0
        and c["rows_never_sent"] == 0
        and c["duplicated_after_retry"] == 0
        and c["sent_not_stored_after_retry"] == 0
        and len(after) == len(load.sent)
        and retry["errors"] == 0
    )
    return c


def one_repetition(
    backend: str,
    run: Path,
    work: Path,
    url: str | None,
    users: list[str],
    items: list[str],
    a: argparse.Namespace,
) -> dict[str, Any]:
    """Two servers, the load with a SIGKILL of server 0, the database counted, the retry, counted again."""
    if backend == "sqlite":
        cfg = write_config(work / "host", None)
        cfgs = [cfg, cfg]  # one state dir: one SQLite file shared by both processes
        rows = Rows(sqlite_path=cfg.parent / "state" / "feedback.sqlite")
    else:
        cfgs = [write_config(work / f"host{k}", url) for k in range(2)]
        rows = Rows(url=url)
    servers: list[Server] = []
    try:
        for cfg in cfgs:
            servers.append(Server(run, cfg, workers=1))
        load = Load([s.port for s in servers], users, items, a)
        at_kill: dict[str, Any] = {}

        def kill() -> None:
            at_kill.update(sent=len(load.sent), acked=len(load.acked), t=time.perf_counter())
            os.killpg(servers[0].proc.pid, signal.SIGKILL)

        load.on_kill = kill
        la0, (b0, _) = loadavg(), cpu_jiffies()
        wall = asyncio.run(load.run())
        b1, _ = cpu_jiffies()
        servers[0].proc.wait()
        before = rows.request_ids()
        unacked = [r for r in load.sent if r not in load.acked]
        retry = _retry(servers[1].url, load, unacked)
        after = rows.request_ids()
        lat = list(load.acked.values())
        return {
            "backend": backend,
            "loadavg_start": la0,
            "loadavg_end": loadavg(),
            "load_wall_s": round(wall, 3),
            "acked_per_s": round(len(load.acked) / wall, 1),
            "ack_latency": summary(lat),
            "killed_after_sent": at_kill.get("sent"),
            "acked_before_kill": at_kill.get("acked"),
            "client_failovers": load.failovers,
            "unacknowledged_because": load.failures,
            "machine_busy_cpu_s": round((b1 - b0) / os.sysconf("SC_CLK_TCK"), 2),
            **_checks(load, before, after, retry),
        }
    finally:
        for s in servers:
            with contextlib.suppress(Exception):
                s.stop()


# ---------------------------------------------------------------------------------------------- report
def _median(rows: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] if key != "p99" else r["ack_latency"]["p99_ms"] for r in rows]
    vals = [v for v in vals if v is not None]
    return round(statistics.median(vals), 1) if vals else None


def write_md(res: dict[str, Any], path: Path) -> None:
    L = [
        "# PostgreSQL feedback store: two server processes, SIGKILL of one mid-load",
        "",
        f"Plan `benchmarks/plans/feedback_pg.toml` (commit {res['plan_commit']}), code {res['code_commit']}, "
        f"{res['machine']['cores']} cores, PostgreSQL {res.get('postgres_version')}. Load average "
        f"{res['loadavg_start']} at start, {res['loadavg_end']} at the end. Script: `python benchmarks/feedback_pg.py`.",
        "",
        f"Protocol: {res['protocol']}",
        "",
        "| rep | backend | sent | acked | acks/s | p50 ms | p99 ms | max ms | unacked (stored anyway) "
        "| acked missing | duplicates | never sent | retry: stored / duplicate / errors | rows after retry "
        "| duplicates after retry | target met | load avg start/end |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(res["repetitions"], 1):
        if "error" in r:
            L.append(f"| {i} | {r['backend']} | failed: {r['error']} |" + " |" * 15)
            continue
        lat, rt = r["ack_latency"], r["retry_of_unacknowledged"]
        L.append(
            f"| {i} | {r['backend']} | {r['posts_sent']} | {r['acknowledged_200']} | {r['acked_per_s']:.0f} "
            f"| {lat['p50_ms']} | {lat['p99_ms']} | {lat['max_ms']} | {r['unacknowledged']} "
            f"({r['unacknowledged_but_stored']}) | {r['acknowledged_missing']} | {r['duplicated_request_ids']} "
            f"| {r['rows_never_sent']} | {rt['stored_now']} / {rt['reported_duplicate']} / {rt['errors']} "
            f"| {r['rows_after_retry']} | {r['duplicated_after_retry']} | {'yes' if r['target_met'] else 'NO'} "
            f"| {r['loadavg_start'][0]} / {r['loadavg_end'][0]} |"
        )
    L += [
        "",
        "| backend | median acks/s | median p99 ms | repetitions meeting the target |",
        "|---|---|---|---|",
    ]
    for b, s in res["summary"].items():
        L.append(f"| {b} | {s['median_acked_per_s']} | {s['median_p99_ms']} | {s['target_met']} |")
    L += ["", "Why POSTs went unacknowledged (HTTP status or connection error), per repetition:", ""]
    for i, r in enumerate(res["repetitions"], 1):
        if "error" not in r:
            L.append(
                f"- {i} ({r['backend']}): {r['unacknowledged_because']}; killed after POST {r['killed_after_sent']} "
                f"was sent ({r['acked_before_kill']} acknowledged by then); client failovers {r['client_failovers']}"
            )
    L += ["", "Notes:", ""] + [f"- {n}" for n in res["notes"]]
    path.write_text("\n".join(L) + "\n")


def result(
    a: argparse.Namespace, reps: list[dict[str, Any]], la0: list[float], pg_version: str | None
) -> dict[str, Any]:
    """The results document of the repetitions run so far (written after each one)."""
    ok = [r for r in reps if "error" not in r]
    return {
        "plan": str(PLAN.relative_to(ROOT)),
        "plan_commit": git("log", "-1", "--format=%h", "--", str(PLAN)),
        "code_commit": a.code_commit or git("rev-parse", "--short", "HEAD"),
        "code_dirty": [] if a.code_commit else git("status", "--porcelain", "--", "src").splitlines(),
        "machine": {"cores": os.cpu_count(), "python": sys.version.split()[0]},
        "postgres_version": pg_version,
        "loadavg_start": la0,
        "loadavg_end": loadavg(),
        "settings": {"posts": a.posts, "clients": a.clients, "kill_after_sent": a.kill_after, "servers": 2},
        "planned_order": a.order.split(","),
        "protocol": (
            f"{a.posts} POST /feedback (unique request_id each) from {a.clients} keep-alive clients, client c to "
            f"server c % 2 of two `modalrec serve --workers 1` processes; SIGKILL of server 0 when POST "
            f"{a.kill_after} is written, its clients fail over to server 1; no retries during the load; rows "
            "counted in the database; every unacknowledged POST retried once (same request_id) against server 1; "
            "rows counted again. SQLite: both processes on one state dir (one file, WAL, synchronous=FULL). "
            "PostgreSQL: a state dir each, one database of a throw-away cluster (fsync on, synchronous_commit on). "
            "Latency: request written to 200 read (closed loop). Servers, PostgreSQL and the clients share the "
            "machine's cores."
        ),
        "repetitions": reps,
        "summary": {
            b: {
                "median_acked_per_s": _median([r for r in ok if r["backend"] == b], "acked_per_s"),
                "median_p99_ms": _median([r for r in ok if r["backend"] == b], "p99"),
                "target_met": f"{sum(r['target_met'] for r in ok if r['backend'] == b)} of "
                f"{sum(r['backend'] == b for r in reps)}",
            }
            for b in dict.fromkeys(r["backend"] for r in reps)
        },
        "reference": REFERENCE,
        "notes": [
            "Reference, a different protocol (one server with --workers 2, the whole server killed as the last POST "
            f"is sent): SQLite {REFERENCE['sqlite_acks_per_s']} acks/s, p99 {REFERENCE['sqlite_p99_ms']} ms "
            "(benchmarks/results/serving.md); quoted, not compared as like for like.",
            *[
                f"repetition {i + 1} ({r['backend']}) failed: {r['error']}"
                for i, r in enumerate(reps)
                if "error" in r
            ],
            *(
                [f"{len(reps)} of {len(a.order.split(','))} planned repetitions written so far (or run)."]
                if len(reps) < len(a.order.split(","))
                else []
            ),
        ],
    }


def save(res: dict[str, Any], results: Path) -> None:
    """feedback_pg.json and .md, each written atomically (after every repetition)."""
    results.mkdir(parents=True, exist_ok=True)
    tmp = results / "feedback_pg.json.tmp"
    tmp.write_text(json.dumps(res, indent=2) + "\n")
    tmp.replace(results / "feedback_pg.json")
    write_md(res, results / "feedback_pg.md.tmp")
    (results / "feedback_pg.md.tmp").replace(results / "feedback_pg.md")


def main() -> None:
    import tomllib

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    plan = tomllib.loads(PLAN.read_text())
    ap.add_argument("--posts", type=int, default=plan["load"]["posts"])
    ap.add_argument("--clients", type=int, default=plan["load"]["clients"])
    ap.add_argument("--kill-after", type=int, default=plan["load"]["kill_after_sent"])
    ap.add_argument("--request-timeout", type=float, default=plan["load"]["request_timeout_s"])
    ap.add_argument("--order", default=",".join(plan["backends"]["order"]))
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument(
        "--code-commit",
        default=None,
        help="commit of the code run (default: HEAD; for a git archive snapshot)",
    )
    a = ap.parse_args()
    from pg_cluster import PgCluster, _bin_dir

    work = a.work or Path(tempfile.mkdtemp(prefix="modalrec-fbpg-"))
    la0 = loadavg()
    run = make_run(work, plan)
    from modalrec.workflows.rundir import load_run

    ds = load_run(run).dataset
    items = [str(i) for i in ds.item_ids]
    users = [str(u) for u in ds.user_ids] + [f"visitor-{n}" for n in range(100)]
    bin_dir = _bin_dir()
    if bin_dir is None:
        raise SystemExit("PostgreSQL binaries (initdb, pg_ctl) not found: apt-get install postgresql-15")
    cluster = PgCluster(bin_dir)
    reps: list[dict[str, Any]] = []
    pg_version: str | None = None
    try:
        cluster.start()
        import psycopg

        with psycopg.connect(cluster.url()) as con:
            row = con.execute("SHOW server_version").fetchone()
            pg_version = str(row[0]) if row else None
        for i, backend in enumerate(a.order.split(",")):
            url = cluster.new_database() if backend == "postgres" else None
            try:
                r = one_repetition(backend, run, work / f"rep{i}-{backend}", url, users, items, a)
            except Exception as e:  # recorded: the results say what failed
                r = {"backend": backend, "error": f"{type(e).__name__}: {e}"}
            print(json.dumps({k: v for k, v in r.items() if k != "ack_latency"}), flush=True)
            reps.append(r)
            save(result(a, reps, la0, pg_version), a.results)
    finally:
        with contextlib.suppress(Exception):
            cluster.stop()
        cluster.remove()
    res = result(a, reps, la0, pg_version)
    save(res, a.results)
    print(json.dumps(res["summary"]))


if __name__ == "__main__":
    main()

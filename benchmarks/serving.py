"""Serving benchmark: HTTP throughput/latency, feedback durability under SIGKILL, HNSW at 1M items,
and the quality/memory cost of compressed item vectors.

Everything runs on loopback on this machine. The protocol (sections, rates, durations, connections,
workers, seeds, targets; the numbers below) comes from the plan ``benchmarks/plans/serving.toml``, read
when a run starts; each section stores the plan's commit and any command-line value that overrides the
plan. Sections (``--sections``, default the plan's list; each section merges its results into
``benchmarks/results/serving.json`` and rewrites ``serving.md``):

* ``recommend``: ``modalrec serve RUN --workers 2`` on the ML-100K LightGCN run directory
  (benchmarks/serving_prepare.py; protocol "ML-100K raw pipeline"). An open-loop generator
  (benchmarks/serving_loadgen.py, separate process, asyncio + uvloop, raw HTTP/1.1 keep-alive) offers
  ``--rate`` GET /recommend/{user}?k=10 per second for ``--duration`` s over all 943 users plus 5%
  unknown users (popularity fallback). Latency is measured from each request's scheduled time (no
  coordinated omission). A short closed-loop probe with ``wrk`` (if installed) gives the capacity.
  CPU seconds of the server processes, the load generator and everything else on the box are read
  from /proc over the same window.
* ``search``: GET /search?q=... (MiniLM query embedding + scan of the 1,682 text vectors) at
  ``--search-rate`` for 30 s, and GET /similar/{item} at 300/s for 15 s.
* ``feedback``: 32 concurrent keep-alive clients POST /feedback (each with a unique request_id,
  no retries) until 10,000 POSTs have been sent; the moment the 10,000th is sent, the whole server
  (master + workers) gets SIGKILL while POSTs are still in flight. The server is restarted on the
  same state directory and the SQLite file is checked: every acknowledged (200) row present, no
  request_id stored twice, nothing stored that was never sent. Then every unacknowledged POST is
  retried with its request_id: each ends stored exactly once.
* ``hnsw``: synthetic 1M x 64 catalogue (a mixture of 1,000 Gaussian clusters, like trained item
  embeddings) in modalrec's VectorIndex (faiss HNSW, M=32, inner product); 1,000 held-out queries
  from the same distribution; recall@10 against an exact scan and single-query time of both, for
  several efSearch values.
* ``compression``: :func:`modalrec.serving.index.compression_report` on the ML-100K run: test
  Recall@20 (full ranking, train+valid masked, hits / min(20, #test items), recall_capped in modalrec.evaluation) when
  recommendations come from a PCA-reduced and/or int8 / product-quantised item index, and the index
  memory.

Usage (heavy: run under the lock, nothing else heavy meanwhile)::

    nice -n 10 flock /tmp/modalrec-heavy.lock python benchmarks/serving.py --run RUN_DIR
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import shlex
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from plan import code_commit, load_plan  # noqa: E402
from plan import plan_line as plan_provenance  # noqa: E402
from proctree import tree_cpu_s  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
LOADGEN = ROOT / "benchmarks" / "serving_loadgen.py"
CLI = [sys.executable, "-c", "from modalrec.cli import main; main()"]
KEY = "mr_benchmark_writer_key_" + "x" * 16

PLAN_NAME = "serving"
SECTIONS = ("recommend", "search", "feedback", "hnsw", "compression")
# Values fixed in the code below that the plan states too: a run refuses to start when they disagree.
SERVE_THREADS = 1  # MODALREC_SERVE_THREADS of every worker
WRK_THREADS = 2  # wrk -t2
FEEDBACK_RESPONSE_TIMEOUT_S = 30  # a POST /feedback without an answer by then is unacknowledged
HNSW_BUILD_THREADS = 2  # faiss threads while building (key build_s_2_threads)
HNSW_EXACT_TIMING_QUERIES = 200  # single exact queries timed, and the batch size (key ..._batch_of_200)
HNSW_TARGET_RECALL = 0.95  # also printed in serving.md
FIXED_IN_CODE = {
    ("server", "serve_threads"): SERVE_THREADS,
    ("recommend", "wrk_probe", "threads"): WRK_THREADS,
    ("feedback", "response_timeout_s"): FEEDBACK_RESPONSE_TIMEOUT_S,
    ("feedback", "event"): "click",  # the event of every POST /feedback and of its retry
    ("hnsw", "build_threads"): HNSW_BUILD_THREADS,
    ("hnsw", "exact_timing_queries"): HNSW_EXACT_TIMING_QUERIES,
    ("hnsw", "target_recall"): HNSW_TARGET_RECALL,
    ("hnsw", "k"): 10,  # the result keys say recall_at_10
    ("compression", "k"): 20,  # the rows' key and serving.md say Recall@20
    ("compression", "split"): "test",
}
# Command-line options that override a plan value (a given value that differs is recorded as an override).
OVERRIDABLE = {
    "run": ("run", "run_dir"),
    "work": ("run", "work_dir"),
    "rate": ("recommend", "rate"),
    "duration": ("recommend", "duration_s"),
    "wrk": ("recommend", "wrk_probe", "enabled"),
    "search_rate": ("search", "rate"),
    "search_duration": ("search", "duration_s"),
    "feedback_posts": ("feedback", "posts"),
    "hnsw_items": ("hnsw", "items"),
    "hnsw_m": ("hnsw", "m"),
    "ef_construction": ("hnsw", "ef_construction"),
}


# ---------------------------------------------------------------------------------------------- machine
def cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    f = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    v = [int(x) for x in f]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


def machine() -> dict[str, Any]:
    import faiss

    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "faiss": faiss.__version__,
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


# ---------------------------------------------------------------------------------------------- server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(work: Path, text_encoder: str = "minilm") -> Path:
    from modalrec.serving.auth import hash_key

    cfg = work / "serve.toml"
    cfg.write_text(
        f'state_dir = "state"\ntext_encoder = "{text_encoder}"\n'
        f'[[auth.keys]]\nname = "bench"\nhash = "{hash_key(KEY, "sha256")}"\nscopes = ["read", "write", "admin"]\n'
    )
    return cfg


class Server:
    """``modalrec serve`` in its own process group (so SIGKILL reaches master and workers)."""

    def __init__(self, run: Path, cfg: Path, workers: int, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(cfg.parent / f"server-{self.port}.log", "a")  # noqa: SIM115
        self.log_offset = self.log.tell()
        env = {**os.environ, "MODALREC_SERVE_THREADS": str(SERVE_THREADS), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [
                *CLI,
                "serve",
                str(run),
                "--port",
                str(self.port),
                "--workers",
                str(workers),
                "--config",
                str(cfg),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        self.started = time.perf_counter()
        self.wait_ready(workers)
        self.ready_s = time.perf_counter() - self.started

    def wait_ready(self, workers: int, timeout: float = 300) -> None:
        """Until every worker logged "Application startup complete" and /health answers."""
        import httpx

        deadline = time.monotonic() + timeout
        log_path = Path(self.log.name)
        with httpx.Client(base_url=self.url, timeout=5) as c:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited with {self.proc.returncode}; see {log_path}")
                text = log_path.read_bytes()[self.log_offset :].decode(errors="replace")
                if text.count("Application startup complete") >= workers:
                    try:
                        if c.get("/health").status_code == 200:
                            return
                    except httpx.TransportError:
                        pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server did not become ready; see {log_path}")
                time.sleep(0.25)

    def cpu(self) -> float:
        return tree_cpu_s(self.proc.pid)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.log.close()

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            self.kill()
            return
        self.log.close()


def loadgen(
    port: int, paths: list[str], rate: float, duration: float, work: Path, connections: int = 64
) -> dict:
    pf = work / f"paths-{random.random():.6f}.txt"
    pf.write_text("\n".join(paths))
    out = subprocess.run(
        [
            sys.executable,
            str(LOADGEN),
            "--port",
            str(port),
            "--paths",
            str(pf),
            "--rate",
            str(rate),
            "--duration",
            str(duration),
            "--connections",
            str(connections),
        ],
        capture_output=True,
        text=True,
        timeout=duration + 120,
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout)


def measured(server: Server, fn: Any) -> tuple[Any, dict[str, Any]]:
    """Run ``fn`` and account the machine's CPU over it: server, everything else, total."""
    b0, _t0 = cpu_jiffies()
    s0 = server.cpu()
    w0 = time.perf_counter()
    res = fn()
    wall = time.perf_counter() - w0
    s1 = server.cpu()
    b1, _t1 = cpu_jiffies()
    hz = os.sysconf("SC_CLK_TCK")
    busy = (b1 - b0) / hz
    cores = os.cpu_count() or 1
    return res, {
        "wall_s": round(wall, 2),
        "server_cpu_s": round(s1 - s0, 2),
        "machine_busy_cpu_s": round(busy, 2),
        "machine_capacity_cpu_s": round(wall * cores, 2),
        "machine_busy_share": round(busy / max(wall * cores, 1e-9), 3),
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }


def wrk_probe(url: str, path: str, seconds: int = 10, connections: int = 16) -> dict[str, Any] | None:
    """Closed-loop capacity with wrk (2 threads): requests/s when the server is saturated."""
    import shutil

    if shutil.which("wrk") is None:
        return None
    out = subprocess.run(
        ["wrk", f"-t{WRK_THREADS}", f"-c{connections}", f"-d{seconds}s", "--latency", url + path],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    ).stdout
    res: dict[str, Any] = {
        "tool": f"wrk 4 (closed loop, {WRK_THREADS} threads)",
        "connections": connections,
        "seconds": seconds,
    }
    for line in out.splitlines():
        s = line.split()
        if line.startswith("Requests/sec:"):
            res["requests_per_s"] = float(s[1])
        elif s[:1] == ["99%"]:
            res["p99"] = s[1]
        elif s[:1] == ["50%"]:
            res["p50"] = s[1]
        elif "Non-2xx" in line or "Socket errors" in line:
            res.setdefault("errors", []).append(line.strip())
    res["raw"] = out
    return res


# ---------------------------------------------------------------------------------------------- sections
def section_recommend(run: Path, work: Path, a: argparse.Namespace) -> dict[str, Any]:
    from modalrec.workflows.rundir import load_run

    P, workers = a.plan["recommend"], a.plan["server"]["workers"]
    users = [str(u) for u in load_run(run).dataset.user_ids]
    rng = random.Random(P["seed"])
    paths = []
    for _ in range(P["paths"]):
        known = rng.random() >= P["unknown_user_share"]
        u = rng.choice(users) if known else f"new-visitor-{rng.randrange(10**6)}"
        paths.append(f"/recommend/{u}?k={P['k']}")
    cfg = write_config(work, text_encoder=P["text_encoder"])
    srv = Server(run, cfg, workers=workers)
    conns, w, wp = P["connections"], P["warmup"], P["wrk_probe"]
    try:  # warm-up first: connections, caches, code paths
        loadgen(srv.port, paths[: w["paths"]], w["rate"], w["duration_s"], work, conns)
        res, acct = measured(srv, lambda: loadgen(srv.port, paths, a.rate, a.duration, work, conns))
        client_cpu = res["client_cpu_s"]
        acct["client_cpu_s"] = client_cpu
        acct["other_cpu_s"] = round(acct["machine_busy_cpu_s"] - acct["server_cpu_s"] - client_cpu, 2)
        probe_path = f"/recommend/{users[0]}?k={P['k']}"
        probe = wrk_probe(srv.url, probe_path, wp["seconds"], wp["connections"]) if a.wrk else None
        health = json_get(srv.url + "/health")
    finally:
        srv.stop()
    lat, t = res["latency"], P["target"]
    ok = (
        res["achieved_rate"] >= t["min_achieved_rate"]
        and res["duration_s"] >= t["min_duration_s"]
        and lat["p99_ms"] is not None
        and lat["p99_ms"] < t["max_p99_ms"]
        and res["errors"] <= t["max_errors"]
    )
    errors = "zero errors" if t["max_errors"] == 0 else f"<= {t['max_errors']} errors"
    return {
        "endpoint": f"GET /recommend/{{user_id}}?k={P['k']} (exclude_seen, {P['unknown_user_share']:.0%} unknown users)",
        "workers": workers,
        "server_ready_s": round(srv.ready_s, 1),
        "index": health["arms"]["a"]["index"],
        "load": res,
        "cpu": acct,
        "wrk_capacity_probe": probe,
        "target": f">= {t['min_achieved_rate']:g} req/s for {t['min_duration_s']:g} s, p99 < {t['max_p99_ms']:g} ms, "
        f"{errors}, {workers} workers",
        "target_met": bool(ok),
    }


def json_get(url: str) -> Any:
    """GET as JSON with the benchmark's key (user histories need a read key)."""
    import httpx

    return httpx.get(url, timeout=30, headers={"Authorization": f"Bearer {KEY}"}).json()


def section_search(run: Path, work: Path, a: argparse.Namespace) -> dict[str, Any]:
    from modalrec.workflows.rundir import load_run

    ds = load_run(run).dataset
    if "text" not in ds.features:
        raise SystemExit(f"{run} has no text features: build it with benchmarks/serving_prepare.py")
    items = [str(i) for i in ds.item_ids]
    from urllib.parse import quote

    P, S, workers = a.plan["search"], a.plan["similar"], a.plan["server"]["workers"]
    rng = random.Random(P["seed"])
    queries = P["queries"]
    spaths = [f"/search?k={P['k']}&q={quote(rng.choice(queries) + ' ' + str(n))}" for n in range(P["paths"])]
    with_image = [it for it, ok in zip(items, ds.feature_masks["image"], strict=True) if ok]
    sim = []
    for _ in range(S["paths"]):  # items without a poster have no image vector (404 no_vector): not asked for
        m = rng.choice(S["modalities"])
        sim.append(f"/similar/{rng.choice(with_image if m == 'image' else items)}?k={S['k']}&modality={m}")
    cfg = write_config(work, text_encoder=P["text_encoder"])
    srv = Server(run, cfg, workers=workers)
    w, t = P["warmup"], P["target"]
    try:
        loadgen(srv.port, spaths[: w["paths"]], w["rate"], w["duration_s"], work, P["connections"])
        res, acct = measured(
            srv, lambda: loadgen(srv.port, spaths, a.search_rate, a.search_duration, work, P["connections"])
        )
        acct["client_cpu_s"] = res["client_cpu_s"]
        sres, sacct = measured(
            srv, lambda: loadgen(srv.port, sim, S["rate"], S["duration_s"], work, S["connections"])
        )
        sacct["client_cpu_s"] = sres["client_cpu_s"]
        example = json_get(srv.url + f"/search?k={P['example_k']}&q=" + quote(P["example_query"]))
    finally:
        srv.stop()
    p99 = res["latency"]["p99_ms"]
    return {
        "search": {
            "endpoint": f"GET /search?q=...&k={P['k']} (modality text: MiniLM query vs item text vectors)",
            "workers": workers,
            "load": res,
            "cpu": acct,
            "target": f"p99 < {t['max_p99_ms']:g} ms",
            "target_met": bool(
                p99 is not None and p99 < t["max_p99_ms"] and res["errors"] <= t["max_errors"]
            ),
            "example": {
                "q": P["example_query"],
                "titles": [it["title"] for it in example["items"]],
            },
        },
        "similar": {
            "endpoint": f"GET /similar/{{item_id}}?k={S['k']}&modality={'|'.join(S['modalities'])} "
            "(image: items with a poster)",
            "workers": workers,
            "load": sres,
            "cpu": sacct,
        },
    }


async def _feedback_clients(
    port: int, items: list[str], users: list[str], n_total: int, clients: int, on_last_sent: Any
) -> dict[str, Any]:
    sent: list[str] = []
    bodies: dict[str, tuple[str, str]] = {}
    acked: list[str] = []
    failed: list[str] = []
    lat: list[float] = []
    counter = {"n": 0}

    async def client(c: int) -> None:
        rng = random.Random(c)
        reader = writer = None
        while counter["n"] < n_total:
            counter["n"] += 1
            n = counter["n"]
            rid = f"bench-{c}-{n}"
            bodies[rid] = (rng.choice(users), rng.choice(items))
            body = json.dumps(
                {"user_id": bodies[rid][0], "item_id": bodies[rid][1], "event": "click", "request_id": rid}
            ).encode()
            req = (
                f"POST /feedback HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                t = time.perf_counter()
                writer.write(req)
                sent.append(rid)
                if n == n_total:
                    on_last_sent()
                assert reader is not None
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), FEEDBACK_RESPONSE_TIMEOUT_S)
                status = int(head[9:12])
                length = next(
                    int(h[15:]) for h in head.split(b"\r\n") if h[:15].lower() == b"content-length:"
                )
                await reader.readexactly(length)
                if status == 200:
                    acked.append(rid)
                    lat.append(time.perf_counter() - t)
                else:
                    failed.append(rid)
            except (OSError, asyncio.IncompleteReadError, TimeoutError, StopIteration):
                failed.append(rid)
                if writer is not None:
                    writer.close()
                reader = writer = None
                if counter["n"] >= n_total:
                    return
        if writer is not None:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(clients)))
    from serving_loadgen import summary

    return {
        "sent": sent,
        "bodies": bodies,
        "acked": acked,
        "failed": failed,
        "latency": summary(lat),
        "wall_s": time.perf_counter() - t0,
    }


@dataclass
class _KilledRun:
    """What the clients saw up to the SIGKILL, with the CPU counters read around that window."""

    res: dict[str, Any]  # _feedback_clients' answer: sent, bodies, acked, failed, latency, wall_s
    at_kill: dict[str, float]  # server_cpu_s, read by the client that sent the last POST
    s0: float  # server CPU seconds when the clients started
    b0: int  # machine busy jiffies when the clients started
    b1: int  # machine busy jiffies once the killed server was reaped


@dataclass
class _Recovered:
    """What the restarted server's SQLite file held, before and after retrying the unacknowledged POSTs."""

    journal: str  # PRAGMA journal_mode of the recovered file
    stored: list[str]  # request_ids after the restart
    missing: list[str]  # acknowledged but not stored
    dup: int  # request_ids stored more than once
    never_sent: set[str]  # stored but never sent
    unacked: list[str]  # sent without a 200 (in send order)
    in_flight_stored: int  # of those, already stored before the kill
    retried: dict[str, int]  # outcome of retrying each unacknowledged POST
    after: list[str]  # request_ids after the retries
    hist: Any  # GET /users/{first user}/history after the restart


def _fresh_feedback_state(work: Path, text_encoder: str) -> tuple[Path, Path]:
    """Config and SQLite path of a state directory emptied first, so every stored row is from this run."""
    fb_work = work / "feedback"
    fb_work.mkdir(parents=True, exist_ok=True)
    cfg = write_config(fb_work, text_encoder=text_encoder)
    db = fb_work / "state" / "feedback.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    return cfg, db


def _posts_until_kill(
    run: Path, cfg: Path, workers: int, items: list[str], users: list[str], posts: int, clients: int
) -> _KilledRun:
    """Start a server and SIGKILL its whole process group the moment the last POST is sent.

    The kill happens inside the client loop (not after it) so that POSTs are still in flight: that is
    the case durability has to survive.
    """
    srv = Server(run, cfg, workers=workers)
    at_kill: dict[str, float] = {}

    def kill_now() -> None:
        at_kill["server_cpu_s"] = srv.cpu()
        os.killpg(srv.proc.pid, signal.SIGKILL)

    b0, _ = cpu_jiffies()
    s0 = srv.cpu()
    res = asyncio.run(_feedback_clients(srv.port, items, users, posts, clients, kill_now))
    srv.proc.wait()
    srv.log.close()
    b1, _ = cpu_jiffies()
    return _KilledRun(res=res, at_kill=at_kill, s0=s0, b0=b0, b1=b1)


def _retry_unacknowledged(url: str, unacked: list[str], bodies: dict[str, tuple[str, str]]) -> dict[str, int]:
    """Retry every POST that got no 200, with its request_id, as a client would: each must end stored once."""
    import httpx

    retried = {"stored_once": 0, "reported_duplicate": 0, "errors": 0}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as c:
        for rid in unacked:
            uid, iid = bodies[rid]
            r = c.post(
                "/feedback", json={"user_id": uid, "item_id": iid, "event": "click", "request_id": rid}
            )
            if r.status_code != 200:
                retried["errors"] += 1
            elif r.json()["duplicate"]:
                retried["reported_duplicate"] += 1
            else:
                retried["stored_once"] += 1
    return retried


def _inspect_restarted(srv2: Server, db: Path, res: dict[str, Any], users: list[str]) -> _Recovered:
    """Compare the recovered SQLite rows with what the clients sent and saw acknowledged, then retry.

    Read-only connections, so the check itself cannot add or repair rows.
    """
    acked, sent = res["acked"], res["sent"]
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    stored = [r[0] for r in con.execute("SELECT request_id FROM feedback")]
    journal = con.execute("PRAGMA journal_mode").fetchone()[0]
    con.close()
    stored_set = set(stored)
    missing = [r for r in acked if r not in stored_set]
    dup = len(stored) - len(stored_set)
    never_sent = stored_set - set(sent)
    unacked = [r for r in sent if r not in set(acked)]
    in_flight_stored = len([r for r in unacked if r in stored_set])
    # a client retries every POST it got no 200 for, with the same request_id
    retried = _retry_unacknowledged(srv2.url, unacked, res["bodies"])
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    after = [r[0] for r in con.execute("SELECT request_id FROM feedback")]
    con.close()
    example_user = users[0]
    hist = json_get(srv2.url + f"/users/{example_user}/history?limit=500")
    return _Recovered(
        journal=journal,
        stored=stored,
        missing=missing,
        dup=dup,
        never_sent=never_sent,
        unacked=unacked,
        in_flight_stored=in_flight_stored,
        retried=retried,
        after=after,
        hist=hist,
    )


def _feedback_result(
    posts: int, clients: int, workers: int, k: _KilledRun, chk: _Recovered, restart_ready_s: float
) -> dict[str, Any]:
    """The section's JSON entry (keys in the order serving.json has always had)."""
    res = k.res
    n_acked = len(res["acked"])
    return {
        "protocol": f"{posts} POST /feedback from {clients} concurrent keep-alive clients (unique request_id each, "
        "no retries), SIGKILL to the server process group the moment the last POST is sent, restart, inspect SQLite",
        "workers": workers,
        "sqlite": {
            "journal_mode": chk.journal,
            "synchronous": "FULL",
            "commit": "group commit per worker, 200 after COMMIT",
        },
        "posts_sent": len(res["sent"]),
        "acknowledged_200": n_acked,
        "unacknowledged_at_kill": len(chk.unacked),
        "ack_rate_per_s": round(n_acked / res["wall_s"], 1),
        "ack_latency": res["latency"],
        "machine_busy_cpu_s": round((k.b1 - k.b0) / os.sysconf("SC_CLK_TCK"), 2),
        "server_cpu_s_until_kill": round(k.at_kill["server_cpu_s"] - k.s0, 2),
        "rows_after_restart": len(chk.stored),
        "acknowledged_missing": len(chk.missing),
        "duplicated_request_ids": chk.dup,
        "rows_never_sent": len(chk.never_sent),
        "unacknowledged_but_stored": chk.in_flight_stored,
        "retry_of_unacknowledged": chk.retried,
        "rows_after_retry": len(chk.after),
        "duplicated_after_retry": len(chk.after) - len(set(chk.after)),
        "restart_ready_s": round(restart_ready_s, 1),
        "example_user_feedback_visible_after_restart": len(chk.hist["feedback"]),
        "target": "every acknowledged row present, none duplicated",
        "target_met": bool(
            not chk.missing and chk.dup == 0 and not chk.never_sent and len(chk.after) == len(set(chk.after))
        ),
        "_s0": k.s0,
    }


def section_feedback(run: Path, work: Path, a: argparse.Namespace) -> dict[str, Any]:
    """POSTs, SIGKILL mid-flight, restart, check SQLite, retry: every acknowledged row must survive once."""
    from modalrec.workflows.rundir import load_run

    P, workers = a.plan["feedback"], a.plan["server"]["workers"]  # benchmarks/ is on sys.path (top)
    ds = load_run(run).dataset
    items = [str(i) for i in ds.item_ids]
    users = [str(u) for u in ds.user_ids][: P["known_users"]]
    users += [f"fb-visitor-{n}" for n in range(P["unknown_users"])]
    cfg, db = _fresh_feedback_state(work, P["text_encoder"])
    killed = _posts_until_kill(run, cfg, workers, items, users, a.feedback_posts, P["clients"])
    # restart on the same state directory (recovers the WAL), then inspect the database
    srv2 = Server(run, cfg, workers=workers)
    try:
        chk = _inspect_restarted(srv2, db, killed.res, users)
    finally:
        srv2.stop()
    return _feedback_result(a.feedback_posts, P["clients"], workers, killed, chk, srv2.ready_s)


def section_hnsw(work: Path, a: argparse.Namespace) -> dict[str, Any]:
    import faiss

    from modalrec.serving.index import VectorIndex, recall_at
    from modalrec.serving.settings import IndexConfig

    H = a.plan["hnsw"]
    faiss.omp_set_num_threads(HNSW_BUILD_THREADS)
    n, d, nq, k = a.hnsw_items, H["dim"], H["queries"], H["k"]
    sd, nt = H["cluster_sd"], HNSW_EXACT_TIMING_QUERIES
    rng = np.random.default_rng(H["seed"])
    centres = rng.normal(size=(H["clusters"], d)).astype(np.float32)

    def sample(m: int) -> np.ndarray:
        out = np.empty((m, d), dtype=np.float32)
        for s in range(0, m, 200_000):
            e = min(m, s + 200_000)
            c = rng.integers(0, len(centres), e - s)
            out[s:e] = centres[c] + sd * rng.normal(size=(e - s, d)).astype(np.float32)
        return out

    V = sample(n)
    Q = sample(nq)
    cfg = IndexConfig(
        hnsw_threshold=1, hnsw_m=a.hnsw_m, ef_construction=a.ef_construction, ef_search=128, recall_queries=nq
    )
    t0 = time.perf_counter()
    idx = VectorIndex(V, cfg, queries=Q, measure=False)
    build = time.perf_counter() - t0
    flat = faiss.IndexFlatIP(d)
    flat.add(V)
    faiss.omp_set_num_threads(1)  # query timing: one thread, one query at a time (a serving request)
    t0 = time.perf_counter()
    for i in range(nt):
        flat.search(Q[i : i + 1], k)
    exact_ms = (time.perf_counter() - t0) / nt * 1000
    _, truth = flat.search(Q, k)
    t0 = time.perf_counter()
    flat.search(Q[:nt], k)
    exact_batch_ms = (time.perf_counter() - t0) / nt * 1000
    rows = []
    for ef in H["ef_search"]:
        idx.index.hnsw.efSearch = ef
        t0 = time.perf_counter()
        for i in range(nq):
            idx.index.search(Q[i : i + 1], k)
        ms = (time.perf_counter() - t0) / nq * 1000
        _, found = idx.index.search(Q, k)
        rows.append(
            {
                "ef_search": ef,
                "recall_at_10": round(recall_at(found, truth), 4),
                "hnsw_ms_per_query": round(ms, 4),
                "exact_over_hnsw_time": round(exact_ms / ms, 1),
            }
        )
    best = next((r for r in rows if r["recall_at_10"] >= HNSW_TARGET_RECALL), None)
    return {
        "catalogue": f"synthetic {n:,} x {d} float32, mixture of {H['clusters']:,} Gaussian clusters (sd {sd} around N(0,1) centres)",
        "queries": f"{nq} held-out points from the same mixture (not catalogue items)",
        "metric": "inner product, recall@10 of HNSW top-10 vs exact top-10 (faiss IndexFlatIP)",
        "index": f"faiss IndexHNSWFlat M={a.hnsw_m}, efConstruction={a.ef_construction} (modalrec VectorIndex)",
        "build_s_2_threads": round(build, 1),
        "index_bytes": idx.report["index_bytes"],
        "exact_ms_per_query_1_thread": round(exact_ms, 3),
        "exact_ms_per_query_in_batch_of_200": round(exact_batch_ms, 3),
        "sweep": rows,
        "operating_point": best,
        "target": f"recall@10 >= {HNSW_TARGET_RECALL} vs exact; report exact/HNSW query time",
        "target_met": best is not None,
    }


def section_compression(run: Path, a: argparse.Namespace) -> dict[str, Any]:
    import faiss

    from modalrec.serving.index import compression_report
    from modalrec.workflows.rundir import load_run

    faiss.omp_set_num_threads(1)
    r = load_run(run)
    t0 = time.perf_counter()
    options = [dict(o) for o in a.plan["compression"]["options"]]  # IndexConfig options, in the plan's order
    rows = compression_report(r, options, k=20, split="test")
    return {
        "protocol": "ML-100K raw pipeline, LightGCN run; test split, full ranking over all 1,682 items with "
        "train+valid items masked; Recall@20 = hits / min(20, #test items) (recall_capped in modalrec.evaluation; the fit-time recall_capped@20 of this run is the 'none' row); each row retrieves "
        "from an exact index over the compressed item vectors (users' vectors projected likewise)",
        "rows": rows,
        "wall_s": round(time.perf_counter() - t0, 1),
    }


# ---------------------------------------------------------------------------------------------- report
def _load_note(sec: dict[str, Any]) -> str:
    la = sec.get("machine_at_start", {}).get("loadavg_at_start")
    return f"Load average when the section started: {la}." if la else ""


def plan_line(res: dict[str, Any]) -> str:
    """Which plan the result ran under; sections from other runs and command-line overrides, if any."""
    top = res.get("plan")
    line = plan_provenance(top, PLAN_NAME)
    if not top:
        return line
    commit = top.get("plan_commit") or ""
    notes: list[str] = []
    for sec in (s for s in SECTIONS if s in res):
        rec = res[sec].get("plan")
        if not rec:
            notes.append(f"section {sec} was produced before plans existed")
        elif (rec.get("plan_commit") or "") != commit:
            notes.append(f"section {sec} ran under plan commit {(rec.get('plan_commit') or 'none')[:7]}")
        for opt, o in ((rec or {}).get("overrides_of_plan") or {}).items():
            notes.append(
                f"section {sec} overrode the plan's {opt} on the command line: {o['used']} (plan {o['plan']})"
            )
    return line + ("; " + "; ".join(notes) + "." if notes else "")


def _md_header(res: dict[str, Any]) -> list[str]:
    """Title, plan provenance and machine: what a reader needs before trusting any number below."""
    L = ["# Serving benchmark", "", "Produced by `benchmarks/serving.py` (loopback only, this machine)."]
    L += ["", plan_line(res)]
    m = res.get("machine", {})
    L += [
        "",
        f"Machine: {m.get('cores')} cores, Python {m.get('python')}, faiss {m.get('faiss')}. Run directory: "
        f"`{res.get('run_dir')}` (benchmarks/serving_prepare.py). The machine is shared with other jobs; each "
        "HTTP section reports the CPU seconds the server, the load generator and everything else used.",
    ]
    return L


def _md_recommend(r: dict[str, Any], m: dict[str, Any]) -> list[str]:
    """/recommend: the open-loop latency table, where the CPU went, and the closed-loop capacity probe."""
    ld, c = r["load"], r["cpu"]
    L: list[str] = [
        "",
        f"## /recommend ({r['workers']} workers)",
        "",
        f"{r['endpoint']}; open-loop offered rate {ld['offered_rate']}/s for {ld['duration_s']} s, "
        f"{ld['connections']} keep-alive connections; latency from each request's scheduled send time. "
        + _load_note(r),
        "",
        "| requests | 200 OK | errors | achieved req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | target met |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| {ld['requests']} | {ld['ok_200']} | {ld['errors']} | {ld['achieved_rate']} | {ld['latency']['p50_ms']} | "
        f"{ld['latency']['p90_ms']} | {ld['latency']['p99_ms']} | {ld['latency']['p999_ms']} | "
        f"{ld['latency']['max_ms']} | {r['target_met']} |",
        "",
        f"CPU over the window ({c['wall_s']} s x {m.get('cores')} cores = {c['machine_capacity_cpu_s']} CPU s): "
        f"server {c['server_cpu_s']} s, load generator {c['client_cpu_s']} s "
        f"({ld['client_cpu_share_of_one_core']:.1%} of one core), everything else on the box "
        f"{c['other_cpu_s']} s; machine busy {c['machine_busy_share']:.1%}. Load average after: {c['loadavg_after']}.",
        f"Index: {r['index']['kind']} over {r['index']['items']} items, recall@10 vs exact {r['index'].get('recall_at_10')}.",
    ]
    p = r.get("wrk_capacity_probe")
    if p:
        L += [
            "",
            f"Capacity probe ({p['tool']}, {p['connections']} connections, {p['seconds']} s, one known user): "
            f"{p.get('requests_per_s')} req/s, p50 {p.get('p50')}, p99 {p.get('p99')} (closed loop: the "
            "client waits for each answer, so this is the saturation throughput, not a latency target). "
            f"{'; '.join(p.get('errors', [])) or 'no errors reported'}.",
        ]
    return L


def _md_search(s: dict[str, Any]) -> list[str]:
    """/search and /similar: one table each, since they share a section (and its load note) in the JSON."""
    L: list[str] = []
    for key, title in (("search", "/search"), ("similar", "/similar")):
        r = s[key]
        ld, c = r["load"], r["cpu"]
        L += [
            "",
            f"## {title} ({r['workers']} workers)",
            "",
            f"{r['endpoint']}; open loop {ld['offered_rate']}/s for {ld['duration_s']} s."
            + " "
            + _load_note(s),
            "",
            "| requests | errors | achieved req/s | p50 ms | p90 ms | p99 ms | max ms | server CPU s | client CPU s |",
            "|---|---|---|---|---|---|---|---|---|",
            f"| {ld['requests']} | {ld['errors']} | {ld['achieved_rate']} | {ld['latency']['p50_ms']} | "
            f"{ld['latency']['p90_ms']} | {ld['latency']['p99_ms']} | {ld['latency']['max_ms']} | "
            f"{c['server_cpu_s']} | {c['client_cpu_s']} |",
        ]
        if key == "search":
            L += [
                "",
                f"Target p99 < 100 ms met: {r['target_met']}. Example: `{r['example']['q']}` -> "
                + "; ".join(str(t) for t in r["example"]["titles"]),
            ]
    return L


def _md_feedback(f: dict[str, Any]) -> list[str]:
    """Feedback durability: the counts that show whether an acknowledged POST can be lost or doubled."""
    L: list[str] = [
        "",
        "## Feedback durability (SIGKILL)",
        "",
        f["protocol"] + ". " + _load_note(f),
        "",
        "| POSTs sent | 200 acknowledged | unacknowledged at kill | rows after restart | acknowledged missing | duplicated | never-sent rows | ack rate /s | ack p99 ms |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {f['posts_sent']} | {f['acknowledged_200']} | {f['unacknowledged_at_kill']} | {f['rows_after_restart']} | "
        f"{f['acknowledged_missing']} | {f['duplicated_request_ids']} | {f['rows_never_sent']} | {f['ack_rate_per_s']} | "
        f"{f['ack_latency']['p99_ms']} |",
        "",
        f"Of the unacknowledged POSTs, {f['unacknowledged_but_stored']} had been committed before the kill. "
        f"Retrying all of them with their request_id: {f['retry_of_unacknowledged']}; rows after retry "
        f"{f['rows_after_retry']}, duplicated {f['duplicated_after_retry']}. Target met: {f['target_met']}.",
    ]
    return L


def _md_hnsw(h: dict[str, Any]) -> list[str]:
    """HNSW at 1M items: the efSearch sweep, so the recall/speed trade-off and operating point are visible."""
    L: list[str] = [
        "",
        "## HNSW at 1M items",
        "",
        f"{h['catalogue']}; {h['queries']}; {h['metric']}; {h['index']}. Build {h['build_s_2_threads']} s "
        f"(2 threads), index {h['index_bytes'] / 2**20:.0f} MiB. Exact scan: {h['exact_ms_per_query_1_thread']} ms "
        f"per single query (1 thread). " + _load_note(h),
        "",
        "| efSearch | recall@10 | HNSW ms/query | exact/HNSW time |",
        "|---|---|---|---|",
    ]
    L += [
        f"| {r['ef_search']} | {r['recall_at_10']} | {r['hnsw_ms_per_query']} | {r['exact_over_hnsw_time']} |"
        for r in h["sweep"]
    ]
    L += ["", f"Lowest efSearch reaching recall@10 >= 0.95: {h['operating_point']}."]
    return L


def _md_compression(c: dict[str, Any]) -> list[str]:
    """Compression: Recall@20 lost against memory saved, one row per index option."""
    L: list[str] = [
        "",
        "## Compression (ML-100K LightGCN item vectors)",
        "",
        c["protocol"] + ". " + _load_note(c),
        "",
        "| dims | quantisation | Recall@20 | change | index bytes | memory saved vs float32 index |",
        "|---|---|---|---|---|---|",
    ]
    L += [
        f"| {r['pca_dim']} | {r['quantize']} | {r['recall_at_20']} | {r['recall_change']:+.4f} | {r['index_bytes']} | "
        f"{r['memory_saved']:.1%} |"
        for r in c["rows"]
    ]
    L += ["", f"Evaluated users: {c['rows'][0]['users']}; wall time {c['wall_s']} s."]
    return L


def to_markdown(res: dict[str, Any]) -> str:
    """serving.md from serving.json; a part per section present, so a partial run still renders."""
    L = _md_header(res)
    if "recommend" in res:
        L += _md_recommend(res["recommend"], res.get("machine", {}))
    if "search" in res:
        L += _md_search(res["search"])
    if "feedback" in res:
        L += _md_feedback(res["feedback"])
    if "hnsw" in res:
        L += _md_hnsw(res["hnsw"])
    if "compression" in res:
        L += _md_compression(res["compression"])
    return "\n".join(L) + "\n"


def _plan_value(data: dict[str, Any], path: tuple[str, ...]) -> Any:
    """The plan's value at ``path`` (table names, then key); SystemExit naming it when absent."""
    v: Any = data
    for key in path:
        if not isinstance(v, dict) or key not in v:
            raise SystemExit(f"benchmarks/plans/{PLAN_NAME}.toml has no {'.'.join(path)}")
        v = v[key]
    return v


def apply_plan(a: argparse.Namespace, data: dict[str, Any]) -> dict[str, Any]:
    """Fill the options not given on the command line from the plan; return the given ones that differ.

    Also refuses a plan that disagrees with a value fixed in this script (``FIXED_IN_CODE``) or names a
    section the script does not have.
    """
    for path, fixed in FIXED_IN_CODE.items():
        planned = _plan_value(data, path)
        if planned != fixed:
            raise SystemExit(
                f"plan {'.'.join(path)} = {planned!r} but benchmarks/serving.py fixes it at {fixed!r}: "
                "change the script (and commit both) before running"
            )
    unknown = set(_plan_value(data, ("sections",))) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"plan sections {sorted(unknown)} are not sections of this script {SECTIONS}")
    overrides: dict[str, Any] = {}
    for dest, path in OVERRIDABLE.items():
        planned, given = _plan_value(data, path), getattr(a, dest)
        if dest in ("run", "work"):
            planned = Path(planned)
        if given is None:
            setattr(a, dest, planned)
        elif given != planned:
            path_like = dest in ("run", "work")
            overrides[dest] = {
                "plan": str(planned) if path_like else planned,
                "used": str(given) if path_like else given,
            }
    a.plan = data
    return overrides


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    planned = f"(default: benchmarks/plans/{PLAN_NAME}.toml; a different value is recorded as an override)"
    ap.add_argument("--run", type=Path, default=None, help=f"run directory {planned}")
    ap.add_argument("--work", type=Path, default=None, help=f"scratch directory {planned}")
    ap.add_argument("--sections", default=None, help="comma-separated subset (default: the plan's sections)")
    ap.add_argument("--rate", type=float, default=None, help=f"/recommend offered req/s {planned}")
    ap.add_argument("--duration", type=float, default=None, help=f"/recommend seconds {planned}")
    ap.add_argument("--search-rate", type=float, default=None, help=f"/search offered req/s {planned}")
    ap.add_argument("--search-duration", type=float, default=None, help=f"/search seconds {planned}")
    ap.add_argument("--feedback-posts", type=int, default=None, help=f"POSTs before the kill {planned}")
    ap.add_argument("--hnsw-items", type=int, default=None, help=f"synthetic catalogue size {planned}")
    ap.add_argument("--hnsw-m", type=int, default=None, help=f"HNSW M {planned}")
    ap.add_argument("--ef-construction", type=int, default=None, help=f"HNSW efConstruction {planned}")
    ap.add_argument("--no-wrk", dest="wrk", action="store_false", default=None, help="skip the wrk probe")
    ap.add_argument("--allow-uncommitted-plan", action="store_true", help="dry runs only; recorded as such")
    ap.add_argument("--out", type=Path, default=RESULTS / "serving")
    a = ap.parse_args()
    plan = load_plan(PLAN_NAME, allow_uncommitted=a.allow_uncommitted_plan)
    overrides = apply_plan(a, plan.data)
    stamp = plan.record() | {
        "overrides_of_plan": overrides,
        "command": shlex.join(["python", "benchmarks/serving.py", *sys.argv[1:]]),
        "code_commit": code_commit(),
    }
    a.work.mkdir(parents=True, exist_ok=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    js = a.out.with_suffix(".json")
    res: dict[str, Any] = json.loads(js.read_text()) if js.exists() else {}
    res["machine"] = machine()
    res["run_dir"] = str(a.run)
    res["plan"] = plan.record()  # of the latest run; each section stores the record of its own run
    sections = a.sections.split(",") if a.sections is not None else list(plan.data["sections"])
    for sec in [s.strip() for s in sections if s.strip()]:
        t0 = time.perf_counter()
        mach = machine()
        print(f"[serving] {sec} ...", flush=True)
        if sec == "recommend":
            out = section_recommend(a.run, a.work, a)
        elif sec == "search":
            out = section_search(a.run, a.work, a)
        elif sec == "feedback":
            out = section_feedback(a.run, a.work, a)
            out.pop("_s0", None)
        elif sec == "hnsw":
            out = section_hnsw(a.work, a)
        elif sec == "compression":
            out = section_compression(a.run, a)
        else:
            raise SystemExit(f"unknown section {sec!r}")
        out["machine_at_start"] = mach
        out["section_wall_s"] = round(time.perf_counter() - t0, 1)
        out["recorded_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        out["plan"] = stamp
        res[sec] = out
        js.write_text(json.dumps(res, indent=1, default=str))
        a.out.with_suffix(".md").write_text(to_markdown(res))
        print(f"[serving] {sec} done in {out['section_wall_s']} s", flush=True)


if __name__ == "__main__":
    main()

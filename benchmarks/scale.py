"""Scale benchmark (issue 15 item 2): what load, fit, evaluation and serving cost at 1M, 10M and 50M
interactions on this machine, and how that cost grows.

One command per size::

    python benchmarks/scale.py --size S            # 1M interactions, 50k items, 100k users
    python benchmarks/scale.py --size M            # 10M interactions, 200k items, 1M users
    python benchmarks/scale.py --size L            # 50M interactions, 1M items, 5M users
    python benchmarks/scale.py --render            # rewrite scale.md and the plot from scale.json

Rows, sizes and seeds come from ``benchmarks/plans/scale.toml`` (committed before any run; its commit
is recorded). Data: ``modalrec synth`` (``--modalities image:64``, fixed seed) into /tmp, never the
repo. Every step runs in its own subprocess (benchmarks/scale_step.py): wall time measured here, peak
memory = ``ru_maxrss`` of that child (``os.wait4``), ``/proc/loadavg`` before and after each step.
Results merge into ``benchmarks/results/scale.json`` under ``runs[label][size]`` (``--label before``
for today's code from a ``git archive`` snapshot given with ``--src``, ``final`` for the end state),
and ``scale.md`` + ``scale.png`` (log-log cost against size with the fitted slope) are rewritten.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PLAN = ROOT / "benchmarks" / "plans" / "scale.toml"
RESULTS = ROOT / "benchmarks" / "results"
JSON_OUT = RESULTS / "scale.json"
STEP = ROOT / "benchmarks" / "scale_step.py"
LOADGEN = ROOT / "benchmarks" / "serving_loadgen.py"

sys.path.insert(0, str(ROOT / "benchmarks"))
from proctree import tree_cpu_s, tree_rss_mb  # noqa: E402
from scale_report import render  # noqa: E402

# --------------------------------------------------------------------------------------------- basics
#: Process groups of the children running now (steps, servers, the load generator): every child runs in
#: its own session, so a SIGTERM to this script (the job queue's timeout) would leave them running;
#: :func:`_stop_children` kills them first.
LIVE_GROUPS: set[int] = set()


def _stop_children(signum: int, _frame: Any) -> None:
    for pgid in list(LIVE_GROUPS):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    raise SystemExit(128 + signum)


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def plan_commit() -> dict[str, Any]:
    try:
        rel = str(PLAN.relative_to(ROOT))
    except ValueError:  # a dry-run plan outside the repo
        return {"plan": str(PLAN), "plan_commit": None, "plan_dirty": True}
    return {
        "plan": rel,
        "plan_commit": git("log", "-1", "--format=%H", "--", rel),
        "plan_dirty": bool(git("status", "--porcelain", "--", rel)),
    }


def code_state(src: Path | None) -> dict[str, Any]:
    """Which code ran: a snapshot (``--src``, its COMMIT file) or the shared checkout (HEAD + dirty src files)."""
    if src is not None:
        c = (src / "COMMIT").read_text().strip() if (src / "COMMIT").exists() else "unknown"
        return {"code": str(src), "code_commit": c, "code_dirty": []}
    dirty = [ln.split(maxsplit=1)[-1] for ln in git("status", "--porcelain", "--", "src").splitlines()]
    return {"code": "checkout", "code_commit": git("rev-parse", "HEAD"), "code_dirty": dirty}


def child_env(src: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("MODALREC_DATA", "/work/shared/data")
    return env


def run_child(cmd: list[str], *, env: dict[str, str], timeout: float, nice: int) -> dict[str, Any]:
    """Run ``cmd`` in a new session; wall time, peak RSS of the child (wait4), status, last stdout line."""
    la0 = loadavg()
    t0 = time.perf_counter()
    with open(os.devnull, "rb") as devnull:
        p = subprocess.Popen(
            cmd,
            env=env,
            stdin=devnull,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=(lambda: os.nice(nice)) if nice else None,
        )
    LIVE_GROUPS.add(p.pid)
    out_chunks: list[bytes] = []
    err_chunks: list[bytes] = []
    import threading

    readers = [
        threading.Thread(target=lambda s=s, b=b: b.extend(iter(lambda: s.read(65536), b"")), daemon=True)
        for s, b in ((p.stdout, out_chunks), (p.stderr, err_chunks))
    ]
    for r in readers:
        r.start()
    status, ru, timed_out = 0, None, False
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() - t0 > timeout:
            timed_out = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            _, status, ru = os.wait4(p.pid, 0)
            break
        time.sleep(0.2)
    LIVE_GROUPS.discard(p.pid)
    p.returncode = os.waitstatus_to_exitcode(status)
    for r in readers:
        r.join(5)
    wall = time.perf_counter() - t0
    out = b"".join(out_chunks).decode(errors="replace").strip().splitlines()
    err = b"".join(err_chunks).decode(errors="replace").strip().splitlines()
    rec: dict[str, Any] = {
        "wall_s": round(wall, 2),
        "peak_rss_mb": round(ru.ru_maxrss / 1024, 1) if ru is not None else None,
        "loadavg_before": la0,
        "loadavg_after": loadavg(),
        "returncode": p.returncode,
    }
    result: dict[str, Any] = {}
    for line in reversed(out):  # the last JSON line: the result, or what a killed step got to
        with contextlib.suppress(ValueError):
            result = json.loads(line)
            break
    status = result.pop("status", "ok")
    if timed_out:
        rec["status"] = "timeout"
        done = ""
        if status == "partial":
            done = (
                " (fit finished, evaluation did not)"
                if "fit_s" in result
                else " (mid-fit; validation curve kept)"
            )
        rec["message"] = f"killed after {timeout:.0f} s{done}"
    elif p.returncode != 0:
        rec["status"] = "failed"
        rec["message"] = "\n".join(err[-6:])[-1500:]
    else:
        rec["status"] = status
    rec.update(result)
    return rec


# --------------------------------------------------------------------------------------------- results
def load_results() -> dict[str, Any]:
    if JSON_OUT.exists():
        return json.loads(JSON_OUT.read_text())
    return {"benchmark": "scale (issue 15 item 2)", "runs": {}}


@contextlib.contextmanager
def results_lock() -> Any:
    """Two sizes may run at once (e.g. L under load while S finishes): one writer at a time."""
    import fcntl

    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(Path(PLAN_LOCK_DIR) / "scale-results.lock", "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


PLAN_LOCK_DIR = "/tmp"


def save_results(res: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    tmp = JSON_OUT.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(res, indent=1, default=str) + "\n")
    os.replace(tmp, JSON_OUT)


class Recorder:
    """Merges each finished step into scale.json at once (a crash keeps what finished)."""

    def __init__(self, label: str, size: str, src: Path | None, nice: int) -> None:
        self.label, self.size, self.src, self.nice = label, size, src, nice
        with results_lock():
            self._start()

    def _start(self) -> None:
        label, size, nice = self.label, self.size, self.nice
        res = load_results()
        run = res["runs"].setdefault(label, {}).setdefault(size, {"steps": {}})
        inv = {**plan_commit(), "started": now(), "nice": nice, "argv": sys.argv[1:]}
        run.setdefault("started", inv["started"])
        run.setdefault("invocations", []).append(inv)
        run.update(
            {
                "plan_commit": inv["plan_commit"],
                "nice": nice,
                "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
            }
        )
        save_results(res)

    def put(self, name: str, rec: dict[str, Any]) -> None:
        rec = {"finished": now(), **code_state(self.src), **rec}
        with results_lock():
            res = load_results()
            run = res["runs"].setdefault(self.label, {}).setdefault(self.size, {"steps": {}})
            run["steps"][name] = rec
            run["updated"] = now()
            save_results(res)
        short = {
            k: rec.get(k) for k in ("status", "wall_s", "peak_rss_mb", "fit_s", "eval_s", "loadavg_after")
        }
        print(f"[{now()}] {self.label}/{self.size}/{name}: {json.dumps(short)}", flush=True)


# --------------------------------------------------------------------------------------------- steps
def synth(size: str, plan: dict[str, Any], rec: Recorder, env: dict[str, str], timeout: float) -> Path:
    """``modalrec synth`` into /tmp (reused when the same parameters already made it)."""
    sz = plan["sizes"][size]
    out = Path(plan["data_root"]) / f"data-{size}"
    args = {
        "users": sz["users"],
        "items": sz["items"],
        "interactions": sz["interactions"],
        "modalities": plan["modalities"],
        "clusters": plan["clusters"],
        "seed": plan["seed"],
    }
    stamp = out / "scale-args.json"
    if (out / "dataset.toml").exists() and stamp.exists() and json.loads(stamp.read_text()) == args:
        return out / "dataset.toml"
    cmd = [sys.executable, "-c", "from modalrec.cli import main; main()", "synth", "--out", str(out)]
    for k, v in args.items():
        cmd += [f"--{k}", str(v)]
    r = run_child(cmd, env=env, timeout=timeout, nice=rec.nice)
    r["args"] = args
    rec.put("synth", r)
    if r["status"] != "ok":
        raise SystemExit(f"synth failed: {r.get('message')}")
    stamp.write_text(json.dumps(args))
    return out / "dataset.toml"


def step(spec: dict[str, Any], rec: Recorder, env: dict[str, str], timeout: float) -> dict[str, Any]:
    return run_child([sys.executable, str(STEP), json.dumps(spec)], env=env, timeout=timeout, nice=rec.nice)


def model_specs(size: str, plan: dict[str, Any], registered: set[str]) -> list[tuple[str, dict[str, Any]]]:
    """(step name, step spec) of every planned model row at ``size``: per-epoch/fit rows, then
    convergence rows (S), then the optional closed-form model when it is registered."""
    sz = plan["sizes"][size]
    models = list(sz["models"])
    opt = plan.get("optional", {})
    if size in opt.get("sizes", []):
        models += [m for m in opt.get("closed_form_candidates", []) if m in registered and m not in models]
    rows: list[tuple[str, dict[str, Any]]] = []
    pe = plan["per_epoch"]
    for m in models:
        params = dict(plan["params"].get(m, {}))
        spec: dict[str, Any] = {"step": "fit", "model": m, "params": params}
        if not sz.get("evaluate", True):
            spec["evaluate"] = False
        elif "eval_full" in sz and m not in sz["eval_full"]:
            spec["eval_sample"] = int(sz["eval_sample"])
        if m in pe["epochs"]:
            e = int(sz.get("epochs", {}).get(m, pe["epochs"][m]))
            params.update(epochs=e, eval_every=e, patience=e)
            spec.update(valid_sample=pe["valid_sample"], valid_sample_seed=pe["valid_sample_seed"])
        rows.append((f"fit:{m}", spec))
    for m in sz.get("converge", []):
        params = {**plan["params"].get(m, {}), **plan["converge"][m]}
        spec = {"step": "fit", "model": m, "params": params}
        if m in plan["converge"].get("valid_sample", {}):
            spec.update(
                valid_sample=plan["converge"]["valid_sample"][m], valid_sample_seed=pe["valid_sample_seed"]
            )
        rows.append((f"converge:{m}", spec))
    return rows


# --------------------------------------------------------------------------------------------- serving
def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_paths(run_dir: Path, out: Path, sv: dict[str, Any]) -> Path:
    """GET paths: a seeded sample of known users plus a share of unknown ones (popularity fallback)."""
    import numpy as np
    import polars as pl

    users = pl.read_parquet(run_dir / "users.parquet")["user_id"].to_numpy().astype(str)
    rng = np.random.default_rng(int(sv["paths_seed"]))
    n = int(sv["path_users"])
    known = rng.choice(users, min(n, len(users)), replace=False).tolist()
    unknown = [f"unknown-user-{i}" for i in range(int(n * sv["unknown_share"]))]
    paths = [f"/recommend/{u}?k={sv['k']}" for u in known + unknown]
    rng.shuffle(paths)
    out.write_text("\n".join(paths) + "\n")
    return out


def _health(port: int) -> dict[str, Any]:
    """/health as JSON, or {} while the server is not answering yet."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
            return dict(json.loads(r.read())) if r.status == 200 else {}
    except (OSError, ValueError):
        return {}


def start_server(
    run_dir: Path, cfg: Path, port: int, workers: int, env: dict[str, str], log: Path, timeout: float
) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    """Spawn ``modalrec serve`` and wait for /health (first worker) and every worker's load line."""

    cmd = [sys.executable, "-c", "from modalrec.cli import main; main()", "serve", str(run_dir)]
    cmd += ["--port", str(port), "--workers", str(workers), "--config", str(cfg), "--log-level", "info"]
    fh = open(log, "wb")  # noqa: SIM115  # closed with the process
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    LIVE_GROUPS.add(p.pid)
    first = None
    peak = 0.0
    health: dict[str, Any] = {}
    while time.perf_counter() - t0 < timeout and p.poll() is None:
        peak = max(peak, tree_rss_mb(p.pid))
        if first is None:
            health = _health(port)
            if health:
                first = time.perf_counter() - t0
        loaded = log.read_text(errors="replace").count("loaded run ")
        if first is not None and loaded >= workers:
            break
        time.sleep(0.25)
    info = {
        "startup_first_worker_s": round(first, 2) if first is not None else None,
        "startup_all_workers_s": round(time.perf_counter() - t0, 2) if first is not None else None,
        "startup_peak_tree_rss_mb": round(peak, 1),
        "health": health,
        "load_lines": [
            ln[-220:] for ln in log.read_text(errors="replace").splitlines() if "loaded run " in ln
        ],
    }
    if first is None:
        info["error"] = "server did not answer /health: " + log.read_text(errors="replace")[-1500:]
    return p, info


def stop_server(p: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(p.pid, signal.SIGTERM)
    try:
        p.wait(30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    LIVE_GROUPS.discard(p.pid)


def loadgen(port: int, paths: Path, rate: float, duration: float, env: dict[str, str]) -> dict[str, Any]:
    cmd = [sys.executable, str(LOADGEN), "--port", str(port), "--paths", str(paths)]
    cmd += ["--rate", str(rate), "--duration", str(duration)]
    try:  # open loop: a server slower than the offered rate makes requests wait up to 5 s each
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=duration + 600)
    except subprocess.TimeoutExpired:
        return {"error": f"load generator still waiting for answers {duration + 600:.0f} s after the start"}
    try:
        return dict(json.loads(r.stdout.strip().splitlines()[-1]))
    except (ValueError, IndexError):
        return {"error": r.stderr[-1500:]}


def serve_http(
    run_dir: Path, work: Path, plan: dict[str, Any], rec: Recorder, env: dict[str, str], timeout: float
) -> dict[str, Any]:
    """Cold start (fresh state dir), warm-up + measured open-loop load, stop; then a warm start."""
    import shutil

    sv = {
        **plan["serving"],
        "workers": plan["sizes"][rec.size].get("serving_workers", plan["serving"]["workers"]),
    }
    state = work / "serve-state"
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    cfg = work / "serve.toml"
    cfg.write_text(f'state_dir = "{state}"\ntext_encoder = "none"\n')
    paths = write_paths(run_dir, work / "paths.txt", sv)
    out: dict[str, Any] = {"loadavg_before": loadavg(), "workers": sv["workers"], "config": cfg.read_text()}
    port = free_port()
    p, cold = start_server(run_dir, cfg, port, sv["workers"], env, work / "serve-cold.log", timeout)
    out["cold"] = cold
    try:
        _measure_load(p, port, paths, sv, env, out)
    finally:
        stop_server(p)
    port = free_port()
    p, warm = start_server(run_dir, cfg, port, sv["workers"], env, work / "serve-warm.log", timeout)
    out["warm"] = warm
    stop_server(p)
    out["loadavg_after"] = loadavg()
    lat = out.get("load", {}).get("latency", {})
    out["status"] = "ok" if lat.get("p99_ms") is not None else "failed"
    out["p99_ms"] = lat.get("p99_ms")
    out["startup_cold_s"] = cold.get("startup_all_workers_s")
    out["startup_warm_s"] = warm.get("startup_all_workers_s")
    return out


def _measure_load(
    p: subprocess.Popen[bytes],
    port: int,
    paths: Path,
    sv: dict[str, Any],
    env: dict[str, str],
    out: dict[str, Any],
) -> None:
    """Warm-up, then the measured open-loop load while the server's memory is sampled."""
    import threading

    if out["cold"].get("startup_first_worker_s") is not None:
        peak = [0.0]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], tree_rss_mb(p.pid))
                time.sleep(0.5)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        try:
            out["warmup"] = loadgen(port, paths, sv["rate"], sv["warmup_s"], env).get("latency")
            out["loadavg_before_load"] = loadavg()
            cpu0 = tree_cpu_s(p.pid)
            out["load"] = loadgen(port, paths, sv["rate"], sv["duration_s"], env)
            cpu = tree_cpu_s(p.pid) - cpu0
            out["loadavg_after_load"] = loadavg()
            done = int(out["load"].get("completed") or 0)
            # What one answer costs the server (every worker, HTTP parsing to JSON) and what the load
            # generator took of the same two cores.
            out["server_cpu_s"] = round(cpu, 3)
            out["server_cpu_ms_per_request"] = round(1000 * cpu / done, 3) if done else None
        finally:
            stop.set()
            th.join()
        out["serving_peak_tree_rss_mb"] = round(peak[0], 1)


# --------------------------------------------------------------------------------------------- driver
def registered_models(env: dict[str, str]) -> set[str]:
    code = "from modalrec.models.base import REGISTRY; print(' '.join(REGISTRY))"
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    return set(r.stdout.split())


def run_size(
    size: str, label: str, src: Path | None, nice: int, only: set[str] | None, timeout_s: float | None = None
) -> None:
    plan = tomllib.loads(PLAN.read_text())
    sz = plan["sizes"][size]
    env = child_env(src)
    rec = Recorder(label, size, src, nice)
    timeout = float(timeout_s or sz["step_timeout_s"])
    work = Path(plan["data_root"]) / label / size
    work.mkdir(parents=True, exist_ok=True)
    data = synth(size, plan, rec, env, timeout)
    base = {"data": str(data), "split_seed": plan["split_seed"], "ks": plan["ks"]}
    want = lambda name: only is None or name in only or name.split(":")[-1] in only  # noqa: E731
    if want("load"):
        rec.put("load", step({**base, "step": "load"}, rec, env, timeout))
    run_dir = work / f"run-{sz['serve_model']}"
    for name, spec in model_specs(size, plan, registered_models(env)):
        if not want(name):
            continue
        spec = {**base, **spec}
        if name == f"fit:{sz['serve_model']}":
            spec["run_dir"] = str(run_dir)
        elif name.startswith("fit:") and name[4:] in sz.get("engine_models", []):
            spec["run_dir"] = str(work / f"run-{name[4:]}")
        rec.put(name, step(spec, rec, env, timeout))
    for m in sz.get("engine_models", []):
        if want(f"engine:{m}") and (work / f"run-{m}" / "manifest.json").exists():
            cfg = work / "engine.toml"
            cfg.write_text(f'state_dir = "{work / "engine-state"}"\ntext_encoder = "none"\n')
            spec = {"step": "engine", "run_dir": str(work / f"run-{m}"), "config": str(cfg)}
            rec.put(f"engine:{m}", step(spec, rec, env, timeout))
    if want("serve") and (run_dir / "manifest.json").exists() and sz.get("engine_step", True):
        cfg = work / "engine.toml"
        cfg.write_text(f'state_dir = "{work / "engine-state"}"\ntext_encoder = "none"\n')
        spec = {"step": "engine", "run_dir": str(run_dir), "config": str(cfg)}
        if src is None:  # the index cache came with the serving fixes; the snapshot has none
            spec["index_cache"] = str(work / "engine-state" / "index-cache")
        rec.put("engine", step(spec, rec, env, timeout))
    if want("serve") and (run_dir / "manifest.json").exists():
        rec.put("serve", serve_http(run_dir, work, plan, rec, env, timeout))
    render(JSON_OUT, RESULTS)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=["S", "M", "L"])
    ap.add_argument("--label", default="final", help="before (today's code, --src snapshot) or final")
    ap.add_argument("--src", type=Path, help="code snapshot (git archive) to run instead of the checkout")
    ap.add_argument(
        "--nice", type=int, default=0, help="niceness of every step (10 while others use the CPU)"
    )
    ap.add_argument("--only", help="comma-separated steps or models (load, als, converge:als, serve, ...)")
    ap.add_argument("--timeout", type=float, help="per-step time limit in s (default: the plan's)")
    ap.add_argument("--render", action="store_true", help="only rewrite scale.md and the plot")
    ap.add_argument("--plan", type=Path, help="another plan (harness dry runs; results go next to it)")
    a = ap.parse_args()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _stop_children)
    if a.plan is not None:
        global PLAN, JSON_OUT, RESULTS
        PLAN, RESULTS = a.plan.resolve(), a.plan.resolve().parent
        JSON_OUT = RESULTS / "scale.json"
    if a.render or a.size is None:
        render()
        return
    only = set(a.only.split(",")) if a.only else None
    run_size(a.size, a.label, a.src, a.nice, only, a.timeout)


if __name__ == "__main__":
    main()

"""Live items (issue 17): items added through ``POST /items`` to a running server, measured.

Reproduces ``benchmarks/results/live_items.{json,md}`` from the plan ``benchmarks/plans/live_items.toml``
(committed before the first run; its commit is recorded). One part per command, each merged into the
JSON with its code commit and load average::

    /work/slots/run-heavy python benchmarks/live_items.py --part prepare           # fits the two runs
    /work/slots/run-heavy python benchmarks/live_items.py --part recall            # quality
    /work/slots/run-heavy --timing python benchmarks/live_items.py --part latency  # wall-clock parts
    /work/slots/run-heavy --timing python benchmarks/live_items.py --part load
    /work/slots/run-heavy --timing python benchmarks/live_items.py --part kill
    python benchmarks/live_items.py --render                                       # Markdown only

Parts:

- ``prepare``: ``modalrec fit`` of the plan's two coldstart configs (text; text + poster) on the ML-100K
  cold-start split, then each run's *warm run*: the same model and catalogue without the cold items;
- ``recall``: the cold items added one by one to a server on the warm text run, then Recall/NDCG of
  the cold items through ``GET /recommend`` against ``modalrec evaluate --cold`` of the full run;
- ``latency``: client-side time of one ``POST /items``, text only and with a poster upload;
- ``load``: 1,000 adds while the load generator offers 200 ``/recommend`` requests per second;
- ``kill``: SIGKILL of the server during adds; after a restart every acknowledged item must be there.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import platform
import subprocess
import sys
import threading
import time
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import coldstart as cs
import serving as sb
from modalrec.core.io import atomic_write_json, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
PLAN = ROOT / "benchmarks" / "plans" / "live_items.toml"
RESULTS = ROOT / "benchmarks" / "results"
DATA = Path("/work/shared/data/ml100k_tmdb_posters")
WORK = Path(os.environ.get("LIVE_ITEMS_WORK", "/tmp/modalrec-live-items-bench"))
FIELDS = ("title", "genres", "overview")
AUTH = {"Authorization": f"Bearer {sb.KEY}"}
#: Seconds between "ready" and the first request of the load and kill parts: the server warms its
#: encoders up in a background thread after start-up ([items] warm_up), a one-off cost.
WARM_UP_WAIT_S = 30.0


def log(*a: Any) -> None:
    print(f"[{time.strftime('%H:%M:%S')}]", *a, flush=True)


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def load_plan() -> dict[str, Any]:
    return tomllib.loads(PLAN.read_text())


# ---------------------------------------------------------------------------------------------- prepare
def run_configs(plan: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The two fit configs: the coldstart benchmark's seed config, and the same plus posters."""
    cplan = tomllib.loads(cs.PLAN.read_text())
    sp = plan["split"]
    text = cs.run_config(cplan, int(sp["model_seed"]), float(sp["ease_l2"]))
    poster = json.loads(json.dumps(text))
    poster["encode"]["modalities"].append("image")
    poster["encode"]["options"]["image"] = {"encoder": "efficientnet", "column": "image"}
    poster["model"]["params"]["modalities"] = list(poster["encode"]["modalities"])
    return {"text": text, "poster": poster}


def warm_run(full: Path, out: Path) -> dict[str, Any]:
    """``full`` without its cold items: dataset rows/columns, features, the tower's item vectors and
    the EASE member's rows/columns (zero for items without training interactions). Same model."""
    import polars as pl

    from modalrec.data.dataset import Dataset
    from modalrec.workflows.pipeline import write_run
    from modalrec.workflows.rundir import load_run

    run = load_run(full)
    ds, model = run.dataset, run.model
    cold = np.asarray(ds.cold_items, dtype=np.int64)
    keep = np.setdiff1d(np.arange(ds.n_items), cold)
    assert ds.train[:, cold].nnz == 0
    sub = Dataset(
        name=ds.name,
        user_ids=ds.user_ids,
        item_ids=ds.item_ids[keep],
        train=ds.train[:, keep].tocsr(),
        valid=ds.valid[:, keep].tocsr(),
        test=ds.test[:, keep].tocsr(),
        items=ds.items.select(pl.all().gather(keep)) if ds.items is not None else None,
        features={m: f[keep] for m, f in ds.features.items()},
        feature_masks={m: f[keep] for m, f in ds.feature_masks.items()},
        cold_items=np.zeros(0, np.int64),
        text_fields=ds.text_fields,
        media_columns=ds.media_columns,
        split_name=ds.split_name,
        report=ds.report,
    )
    st = model._state
    st["item_vectors"] = st["item_vectors"][keep]
    st["warm"] = st["warm"][keep]
    cf_model = model._cf
    b = cf_model._sim
    assert np.abs(b[cold]).max() == 0 and np.abs(b[:, cold]).max() == 0
    cf_model.n_items = len(keep)
    cf_model.meta["n_items"] = len(keep)
    cf_model._set(cf_model._train[:, keep], b[np.ix_(keep, keep)])
    model.n_items = len(keep)
    model.meta["n_items"] = len(keep)
    model.meta.setdefault("collaborative", {}).setdefault("meta", cf_model.meta)["n_items"] = len(keep)
    metrics = json.loads((run.path / "metrics.json").read_text())
    write_run(sub, model, out, config=run.manifest.get("config") or {}, metrics=metrics, overwrite=True)
    return {"items": len(keep), "cold_removed": len(cold)}


def part_prepare(plan: dict[str, Any]) -> dict[str, Any]:
    import tomli_w

    WORK.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {}
    for name, cfg in run_configs(plan).items():
        toml = WORK / f"{name}.toml"
        toml.write_text(tomli_w.dumps(cfg))
        full, warm = WORK / f"run-{name}", WORK / f"warm-{name}"
        t0 = time.perf_counter()
        if not cs._same_config(full, cfg):
            cs.cli("fit", str(toml), "--out", str(full), "--overwrite", "--quiet")
        fit_s = round(time.perf_counter() - t0, 1)
        out[name] = {"config": cfg, "fit_seconds": fit_s, "warm": warm_run(full, warm)}
        log(f"prepared {name}: fit {fit_s}s, warm run {out[name]['warm']}")
    return out


# ---------------------------------------------------------------------------------------------- helpers
def serve_config(work: Path, max_k: int = 200) -> Path:
    from modalrec.serving.auth import hash_key

    cfg = work / "serve.toml"
    cfg.write_text(
        f'state_dir = "state"\ntext_encoder = "none"\n[limits]\nmax_k = {max_k}\n'
        f'[[auth.keys]]\nname = "bench"\nhash = "{hash_key(sb.KEY, "sha256")}"\nscopes = ["read", "write", "admin"]\n'
    )
    return cfg


def fresh_dir(name: str) -> Path:
    import shutil

    d = WORK / name
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    return d


def cold_items() -> tuple[Any, np.ndarray]:
    """The full text run's data set and its cold item indices."""
    from modalrec.workflows.rundir import load_run

    ds = load_run(WORK / "run-text").dataset
    return ds, np.asarray(ds.cold_items, dtype=np.int64)


def item_json(ds: Any, i: int, item_id: str | None = None, suffix: str = "") -> dict[str, Any]:
    row = ds.items.row(int(i), named=True)
    fields = {f: str(row[f]) for f in FIELDS if row.get(f) is not None}
    if suffix and "title" in fields:
        fields["title"] += suffix
    return {"item_id": item_id or str(ds.item_ids[i]), "fields": fields}


def poster_bytes(ds: Any, i: int) -> bytes | None:
    ref = ds.items.row(int(i), named=True).get("image")
    if not ref or not str(ref).startswith("zip://"):
        return None
    archive, member = str(ref)[len("zip://") :].split("#", 1)
    try:
        with zipfile.ZipFile(archive) as z:
            return z.read(member)
    except KeyError:
        return None


def env_record() -> dict[str, Any]:
    return {
        "code_commit": git("rev-parse", "HEAD"),
        "plan_commit": git("log", "-1", "--format=%H", "--", str(PLAN.relative_to(ROOT))),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    }


def rank_metrics(ranked: list[str], truth: set[str], ks: list[int]) -> dict[str, float]:
    """Recall@K = hits / #relevant, NDCG@K with binary gains (as modalrec.evaluation computes them)."""
    out = {}
    for k in ks:
        top = ranked[:k]
        hits = [1.0 if x in truth else 0.0 for x in top]
        dcg = sum(h / np.log2(r + 2) for r, h in enumerate(hits))
        idcg = sum(1.0 / np.log2(r + 2) for r in range(min(k, len(truth))))
        out[f"recall@{k}"] = sum(hits) / len(truth)
        out[f"ndcg@{k}"] = dcg / idcg
    return out


# ---------------------------------------------------------------------------------------------- recall
def add_cold_items(url: str, ds: Any, cold: np.ndarray) -> list[float]:
    """POST every cold item (JSON, text fields) one by one; the client-side seconds of each."""
    import httpx

    times = []
    with httpx.Client(base_url=url, timeout=120) as c:
        for i in cold:
            t0 = time.perf_counter()
            r = c.post("/items", json=item_json(ds, int(i)), headers=AUTH)
            times.append(time.perf_counter() - t0)
            if r.status_code != 201:
                raise RuntimeError(f"POST /items {ds.item_ids[i]}: {r.status_code} {r.text[:300]}")
    return times


def part_recall(plan: dict[str, Any]) -> dict[str, Any]:
    import httpx

    ds, cold = cold_items()
    ks = list(plan["recall"]["ks"])
    cold_ids = {str(ds.item_ids[i]) for i in cold}
    work = fresh_dir("recall")
    srv = sb.Server(WORK / "warm-text", serve_config(work, max_k=ds.n_items + 10), workers=1)
    try:
        add_times = add_cold_items(srv.url, ds, cold)
        truth = ds.test[:, cold].tocsr()
        valid = ds.valid[:, cold].tocsr()
        users = np.flatnonzero(np.diff(truth.indptr) > 0)
        per_user = []
        with httpx.Client(base_url=srv.url, timeout=120) as c:
            for u in users:
                uid = str(ds.user_ids[u])
                r = c.get(f"/recommend/{uid}", params={"k": ds.n_items})
                r.raise_for_status()
                masked = {
                    str(ds.item_ids[cold[j]]) for j in valid.indices[valid.indptr[u] : valid.indptr[u + 1]]
                }
                ranked = [it["item_id"] for it in r.json()["items"] if it["item_id"] in cold_ids]
                ranked = [x for x in ranked if x not in masked]
                rel = {
                    str(ds.item_ids[cold[j]]) for j in truth.indices[truth.indptr[u] : truth.indptr[u + 1]]
                }
                per_user.append(rank_metrics(ranked, rel, ks))
    finally:
        srv.stop()
    server = {key: float(np.mean([m[key] for m in per_user])) for key in per_user[0]}
    offline = json.loads(cs.cli("evaluate", str(WORK / "run-text"), "--cold", "--json"))
    gap = abs(server["recall@20"] - offline["metrics"]["recall@20"]) / offline["metrics"]["recall@20"]
    log(
        f"recall: server R@20 {server['recall@20']:.4f}, offline {offline['metrics']['recall@20']:.4f}, gap {gap:.4%}"
    )
    return {
        "server": server,
        "server_users": len(per_user),
        "offline": {k: v for k, v in offline["metrics"].items() if k.split("@")[0] in ("recall", "ndcg")},
        "offline_users": offline.get("n_users"),
        "relative_gap_recall@20": gap,
        "target_met": gap <= plan["recall"]["target_relative_gap"],
        "items_added": len(add_times),
        "add_seconds_p50": float(np.percentile(add_times, 50)),
    }


# ---------------------------------------------------------------------------------------------- latency
def latency_summary(times: list[float]) -> dict[str, Any]:
    a = np.asarray(times) * 1000
    return {
        "n": len(a),
        "first_ms": round(float(a[0]), 1),
        "p50_ms": round(float(np.percentile(a, 50)), 1),
        "p95_ms": round(float(np.percentile(a, 95)), 1),
        "p99_ms": round(float(np.percentile(a, 99)), 1),
        "max_ms": round(float(a.max()), 1),
        "p95_ms_without_first": round(float(np.percentile(a[1:], 95)), 1) if len(a) > 1 else None,
    }


def add_posters(url: str, ds: Any, cold: np.ndarray) -> tuple[list[float], int]:
    """POST every cold item that has a poster, as multipart with the JPEG; (seconds, skipped)."""
    import httpx

    times, skipped = [], 0
    with httpx.Client(base_url=url, timeout=120) as c:
        for i in cold:
            data = poster_bytes(ds, int(i))
            if data is None:
                skipped += 1
                continue
            item = item_json(ds, int(i))
            form = {"item_id": item["item_id"], **item["fields"]}
            t0 = time.perf_counter()
            r = c.post("/items", data=form, files={"image": ("poster.jpg", data, "image/jpeg")}, headers=AUTH)
            times.append(time.perf_counter() - t0)
            if r.status_code != 201:
                raise RuntimeError(f"POST /items {item['item_id']}: {r.status_code} {r.text[:300]}")
    return times, skipped


def part_latency(plan: dict[str, Any]) -> dict[str, Any]:
    ds, cold = cold_items()
    out: dict[str, Any] = {}
    work = fresh_dir("latency-text")
    srv = sb.Server(WORK / "warm-text", serve_config(work), workers=1)
    try:
        out["text"] = latency_summary(add_cold_items(srv.url, ds, cold))
    finally:
        srv.stop()
    work = fresh_dir("latency-poster")
    srv = sb.Server(WORK / "warm-poster", serve_config(work), workers=1)
    try:
        times, skipped = add_posters(srv.url, ds, cold)
        out["poster"] = {**latency_summary(times), "skipped_without_poster": skipped}
    finally:
        srv.stop()
    L = plan["latency"]
    out["text"]["target_met"] = out["text"]["p95_ms"] < L["text_p95_ms_target"]
    out["poster"]["target_met"] = out["poster"]["p95_ms"] < L["poster_p95_ms_target"]
    log(f"latency: text {out['text']}, poster {out['poster']}")
    return out


# ---------------------------------------------------------------------------------------------- load
def paced_adds(url: str, ds: Any, cold: np.ndarray, n: int, start: float, span: float, out: list) -> None:
    """Add ``n`` items L0.. (cold items' texts, title suffixed), paced evenly over ``span`` seconds
    from ``start`` (perf_counter); appends (id, seconds, status) to ``out``."""
    import httpx

    with httpx.Client(base_url=url, timeout=120) as c:
        for j in range(n):
            due = start + j * span / n
            time.sleep(max(0.0, due - time.perf_counter()))
            i = int(cold[j % len(cold)])
            body = item_json(ds, i, item_id=f"L{j}", suffix=f" (copy {j // len(cold)})")
            t0 = time.perf_counter()
            try:
                status = c.post("/items", json=body, headers=AUTH).status_code
            except httpx.HTTPError as e:
                status = type(e).__name__
            out.append((f"L{j}", time.perf_counter() - t0, status))


def part_load(plan: dict[str, Any]) -> dict[str, Any]:
    ds, cold = cold_items()
    L = plan["load"]
    work = fresh_dir("load")
    srv = sb.Server(WORK / "warm-text", serve_config(work), workers=2)
    paths = [f"/recommend/{u}?k=10" for u in ds.user_ids]
    try:
        time.sleep(WARM_UP_WAIT_S)  # the workers load their encoders in the background after start-up
        log("load: baseline")
        base, base_cpu = sb.measured(
            srv, lambda: sb.loadgen(srv.port, paths, L["rate"], L["baseline_s"], work)
        )
        adds: list[tuple[str, float, Any]] = []
        t = threading.Thread(
            target=paced_adds,
            args=(srv.url, ds, cold, int(L["items"]), time.perf_counter() + 10, L["duration_s"] - 40, adds),
        )
        log("load: with adds")
        t.start()
        res, cpu = sb.measured(srv, lambda: sb.loadgen(srv.port, paths, L["rate"], L["duration_s"], work))
        t.join()
    finally:
        srv.stop()
    ok = [a for a in adds if a[2] == 201]
    out = {
        "baseline": {**base, "cpu": base_cpu},
        "with_adds": {**res, "cpu": cpu},
        "adds_attempted": len(adds),
        "adds_acknowledged": len(ok),
        "add_statuses": {str(s): sum(1 for a in adds if a[2] == s) for s in {a[2] for a in adds}},
        "add_latency": latency_summary([a[1] for a in adds]) if adds else None,
    }
    out["target_met"] = (
        res["latency"]["p99_ms"] is not None
        and res["latency"]["p99_ms"] < L["recommend_p99_ms_target"]
        and res["errors"] == 0
        and len(ok) == L["items"]
    )
    log(f"load: p99 {res['latency']['p99_ms']} ms, errors {res['errors']}, adds {len(ok)}/{len(adds)}")
    return out


# ---------------------------------------------------------------------------------------------- kill
def present(url: str, ids: list[str]) -> list[str]:
    """The ids among ``ids`` that GET /items/{id} finds."""
    import httpx

    with httpx.Client(base_url=url, timeout=60) as c:
        return [i for i in ids if c.get(f"/items/{i}").status_code == 200]


def kill_during_adds(srv: Any, ds: Any, cold: np.ndarray, K: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Add K0.. from several threads, SIGKILL the server after ``kill_after_acks`` acks; (acked, tried)."""
    import httpx

    acked: list[str] = []
    tried: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    counter = iter(range(10**6))

    def worker() -> None:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            while not stop.is_set():
                with lock:
                    j = next(counter)
                    tried.append(f"K{j}")
                body = item_json(ds, int(cold[j % len(cold)]), item_id=f"K{j}", suffix=f" (kill {j})")
                try:
                    r = c.post("/items", json=body, headers=AUTH)
                except httpx.HTTPError:
                    continue
                if r.status_code == 201:
                    with lock:
                        acked.append(f"K{j}")

    with cf.ThreadPoolExecutor(int(K["threads"])) as ex:
        futures = [ex.submit(worker) for _ in range(int(K["threads"]))]
        while len(acked) < int(K["kill_after_acks"]):
            time.sleep(0.01)
        srv.kill()
        stop.set()
        for f in futures:
            f.result()
    return list(acked), list(tried)


def part_kill(plan: dict[str, Any]) -> dict[str, Any]:
    ds, cold = cold_items()
    K = plan["kill"]
    work = WORK / "load"  # the state the load part left
    cfg = serve_config(work)
    srv = sb.Server(WORK / "warm-text", cfg, workers=2)
    time.sleep(WARM_UP_WAIT_S)
    load_ids = [f"L{j}" for j in range(int(plan["load"]["items"]))]
    back = present(srv.url, load_ids)
    t0 = time.perf_counter()
    acked, tried = kill_during_adds(srv, ds, cold, K)
    kill_s = time.perf_counter() - t0
    srv2 = sb.Server(WORK / "warm-text", cfg, workers=2)
    try:
        restart_s = srv2.ready_s
        found_acked = present(srv2.url, acked)
        unacked = [i for i in tried if i not in set(acked)]
        found_unacked = present(srv2.url, unacked)
        back_after = present(srv2.url, load_ids)
    finally:
        srv2.stop()
    lost = sorted(set(acked) - set(found_acked))
    out = {
        "load_items_back_before_kill": len(back),
        "load_items_back_after_kill": len(back_after),
        "load_items": len(load_ids),
        "acknowledged": len(acked),
        "acknowledged_found_after_restart": len(found_acked),
        "lost_acknowledged": lost,
        "in_flight_or_unacknowledged": len(unacked),
        "unacknowledged_found": len(found_unacked),
        "seconds_until_kill": round(kill_s, 1),
        "restart_ready_seconds": round(restart_s, 1),
    }
    out["target_met"] = len(lost) == int(K["target_lost_acknowledged"]) and len(back_after) == len(load_ids)
    log(f"kill: {out}")
    return out


# ---------------------------------------------------------------------------------------------- report
def _env_line(part: dict[str, Any]) -> str:
    e = part.get("env", {})
    return (
        f"Code {str(e.get('code_commit', '?'))[:10]}, load average at start {e.get('loadavg_at_start')}, "
        f"at end {e.get('loadavg_at_end')}, {part.get('seconds', '?')} s; command `{e.get('command', '?')}`."
    )


def _md_recall(r: dict[str, Any]) -> list[str]:
    s, o = r["server"], r["offline"]
    L = [
        "## Cold items added live vs the offline cold-start evaluation",
        "",
        _env_line(r),
        "",
        "| | R@10 | R@20 | R@50 | NDCG@20 | users |",
        "|---|---|---|---|---|---|",
        f"| offline: `modalrec evaluate <full run> --cold` | {o['recall@10']:.4f} | {o['recall@20']:.4f} | "
        f"{o['recall@50']:.4f} | {o['ndcg@20']:.4f} | {r['offline_users']} |",
        f"| server: {r['items_added']} cold items added by POST /items, ranked by GET /recommend | "
        f"{s['recall@10']:.4f} | {s['recall@20']:.4f} | {s['recall@50']:.4f} | {s['ndcg@20']:.4f} | "
        f"{r['server_users']} |",
        "",
        f"Relative gap of Recall@20: {r['relative_gap_recall@20']:.4%} (target <= 1%): "
        f"**{'met' if r['target_met'] else 'NOT met'}**.",
        "",
    ]
    return L


def _md_latency(r: dict[str, Any]) -> list[str]:
    L = ["## Latency of one POST /items (client side, one at a time, 1 worker)", "", _env_line(r), ""]
    L += [
        "| content | items | first (loads the encoders) | p50 | p95 | p99 | max | p95 without the first | target |"
    ]
    L += ["|---|---|---|---|---|---|---|---|---|"]
    for name, label, target in (
        ("text", "text only", 300),
        ("poster", "text + poster (multipart JPEG)", 1500),
    ):
        t = r[name]
        L.append(
            f"| {label} | {t['n']} | {t['first_ms']} ms | {t['p50_ms']} ms | {t['p95_ms']} ms | {t['p99_ms']} ms | "
            f"{t['max_ms']} ms | {t['p95_ms_without_first']} ms | p95 < {target} ms: "
            f"**{'met' if t['target_met'] else 'NOT met'}** |"
        )
    if r["poster"].get("skipped_without_poster"):
        L += [
            "",
            f"{r['poster']['skipped_without_poster']} cold items have no poster and were left out of the poster row.",
        ]
    return [*L, ""]


def _md_load(r: dict[str, Any]) -> list[str]:
    L = ["## 1,000 adds while /recommend is under load (2 workers)", "", _env_line(r), ""]
    L += ["| phase | offered | served/s | p50 | p99 | max | errors | server CPU s | machine busy |"]
    L += ["|---|---|---|---|---|---|---|---|---|"]
    for name in ("baseline", "with_adds"):
        x = r[name]
        lat = x["latency"]
        L.append(
            f"| {name.replace('_', ' ')} | {x['offered_rate']}/s x {x['duration_s']} s | {x['achieved_rate']} | "
            f"{lat['p50_ms']} ms | {lat['p99_ms']} ms | {lat['max_ms']} ms | {x['errors']} | "
            f"{x['cpu']['server_cpu_s']} | {x['cpu']['machine_busy_share']:.0%} |"
        )
    a = r["add_latency"] or {}
    L += [
        "",
        f"Adds: {r['adds_acknowledged']} acknowledged of {r['adds_attempted']} (statuses {r['add_statuses']}); "
        f"add latency p50 {a.get('p50_ms')} ms, p95 {a.get('p95_ms')} ms, max {a.get('max_ms')} ms.",
        f"Target (/recommend p99 < 50 ms, no errors, every add acknowledged): **{'met' if r['target_met'] else 'NOT met'}**.",
        "",
    ]
    return L


def _md_kill(r: dict[str, Any]) -> list[str]:
    return [
        "## SIGKILL during adds",
        "",
        _env_line(r),
        "",
        f"- {r['acknowledged']} adds acknowledged before the SIGKILL of the server's process group "
        f"({r['seconds_until_kill']} s of adds from 4 threads); after the restart "
        f"({r['restart_ready_seconds']} s to ready) {r['acknowledged_found_after_restart']} of them are there; "
        f"lost: {r['lost_acknowledged'] or 'none'}.",
        f"- {r['in_flight_or_unacknowledged']} adds were in flight or unanswered at the kill; "
        f"{r['unacknowledged_found']} of them were stored anyway (committed, the answer lost).",
        f"- The {r['load_items']} items of the load part: {r['load_items_back_before_kill']} back at the "
        f"start of this part, {r['load_items_back_after_kill']} after the kill and restart.",
        f"- Target (0 acknowledged items lost): **{'met' if r['target_met'] else 'NOT met'}**.",
        "",
    ]


def render(R: dict[str, Any]) -> str:
    L = [
        "# Live items: POST /items on a running server (ML-100K cold-start split)",
        "",
        f"Plan: `benchmarks/plans/live_items.toml` at commit {R.get('plan_commit', '?')}. Each part is one "
        "command (see `benchmarks/live_items.py`); its code commit, load average and command are given with it.",
        "",
        "Protocol: ML-100K raw pipeline, per-user random 8:1:1 split seed 2024; cold-start variant: 168 items "
        "(10%, seed 2024) without training interactions; the server runs the *warm run* (the fitted coldstart "
        "run with those items removed from its catalogue: same model) and gets the cold items through "
        "POST /items. Recall@K = hits / #test items of the user; cold rows rank the cold items only, train + "
        "valid masked.",
        "",
    ]
    P = R.get("parts", {})
    if "prepare" in P:
        p = P["prepare"]
        L += [
            "## Runs",
            "",
            *[
                f"- {n}: modalities {v['config']['encode']['modalities']}, fit {v['fit_seconds']} s (0: reused), "
                f"warm run {v['warm']}"
                for n, v in p.items()
                if isinstance(v, dict) and "config" in v
            ],
            "",
        ]
    for name, fn in (
        ("recall", _md_recall),
        ("latency", _md_latency),
        ("load", _md_load),
        ("kill", _md_kill),
    ):
        if name in P:
            L += fn(P[name])
        else:
            L += [f"## {name}", "", "Not run.", ""]
    if R.get("notes"):
        L += ["## Notes", "", *[f"- {n}" for n in R["notes"]], ""]
    return "\n".join(L)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=["prepare", "recall", "latency", "load", "kill"])
    ap.add_argument("--render", action="store_true", help="only rewrite the Markdown from the JSON")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--note", action="append", default=[], help="a line for the Notes section")
    a = ap.parse_args()
    plan = load_plan()
    path = a.out / "live_items.json"
    R = json.loads(path.read_text()) if path.exists() else {"parts": {}}
    if a.note:
        R["notes"] = [*R.get("notes", []), *a.note]
        atomic_write_json(path, R)
    if a.part:
        env = env_record()
        env["command"] = " ".join(["python", "benchmarks/live_items.py", *sys.argv[1:]])
        t0 = time.perf_counter()
        fn = {"prepare": part_prepare, "recall": part_recall, "latency": part_latency, "load": part_load}
        res = (fn.get(a.part) or part_kill)(plan)
        env["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        res["env"], res["seconds"] = env, round(time.perf_counter() - t0, 1)
        R = json.loads(path.read_text()) if path.exists() else {"parts": {}}  # others may have merged
        R["parts"][a.part] = res
        R["plan_commit"] = env["plan_commit"]
        a.out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, R)
    atomic_write_text(a.out / "live_items.md", render(R))


if __name__ == "__main__":
    main()

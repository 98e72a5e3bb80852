"""Data-parallel training on Ray Train: 2 workers vs 1 (quality, epoch time) and a SIGKILLed worker.

Reads ``benchmarks/plans/ray.toml`` (committed before any run; its commit is recorded) and merges rows
into ``benchmarks/results/ray.json``, then rewrites ``benchmarks/results/ray.md``::

    /work/q/submit timing i16-kill 30 -- python benchmarks/ray_train.py --part kill
    /work/q/submit timing i16-q100k-2025 30 -- python benchmarks/ray_train.py --part quality --dataset ml100k --seeds 2025
    /work/q/submit quality i16-qS-2024 30 -- python benchmarks/ray_train.py --part quality --dataset S --seeds 2024
    /work/q/submit timing i16-timing 30 -- python benchmarks/ray_train.py --part timing
    python benchmarks/ray_train.py --report            # only rewrite ray.md from ray.json

Every fit goes through ``modalrec.workflows.ray_train.fit_ray`` on a local Ray runtime of 2 CPUs; test
metrics come from the local evaluator (full ranking). Each row records the code commit, the load average
before and after, wall seconds and the workers' own epoch seconds. A row that fails is recorded with its
error; rows not run are listed as such in the Markdown.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PLAN = ROOT / "benchmarks" / "plans" / "ray.toml"
OUT_JSON = ROOT / "benchmarks" / "results" / "ray.json"
OUT_MD = ROOT / "benchmarks" / "results" / "ray.md"
SYNTH_ROOT = Path("/tmp/modalrec-ray-bench")


def git(*args: str) -> str:
    out = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False)
    # rstrip only: a porcelain status line starts with a space that names the path's column
    return out.stdout.rstrip() if out.returncode == 0 else ""


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())


def provenance() -> dict[str, Any]:
    rel = str(PLAN.relative_to(ROOT))
    return {
        "plan": rel,
        "plan_commit": git("log", "-1", "--format=%H", "--", rel) or None,
        "plan_uncommitted_edits": bool(git("status", "--porcelain", "--", rel)),
        "code_commit": git("rev-parse", "HEAD"),
        "code_dirty_paths": [
            line[3:]
            for line in git(
                "status", "--porcelain", "--", "src/modalrec/models", "src/modalrec/workflows"
            ).splitlines()
        ],
    }


def merge(section: str, key: str, row: dict[str, Any]) -> None:
    """Add one row to ray.json under a file lock (two parts may run one after the other)."""
    OUT_JSON.parent.mkdir(parents=True, exist_ok=True)
    with open(Path(tempfile.gettempdir()) / "modalrec-ray-bench.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        res = json.loads(OUT_JSON.read_text()) if OUT_JSON.exists() else {}
        res.setdefault(section, {})[key] = row
        tmp = OUT_JSON.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(res, indent=1, default=float) + "\n")
        tmp.replace(OUT_JSON)
        write_md(res)  # each finished row is in ray.md too, even if a later row of this job is cut
    print(
        f"[{now()}] {section}/{key}: "
        + json.dumps({k: row.get(k) for k in ("status", "recall@20", "ndcg@20", "wall_s", "mean_epoch_s")}),
        flush=True,
    )


def add_note(text: str) -> None:
    """Append a note (what did not run, and why) under the same lock as the rows."""
    OUT_JSON.parent.mkdir(parents=True, exist_ok=True)
    with open(Path(tempfile.gettempdir()) / "modalrec-ray-bench.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        res = json.loads(OUT_JSON.read_text()) if OUT_JSON.exists() else {}
        res.setdefault("notes", []).append(text)
        tmp = OUT_JSON.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(res, indent=1, default=float) + "\n")
        tmp.replace(OUT_JSON)
        write_md(res)


def write_md(res: dict[str, Any]) -> None:
    """Rewrite ray.md from ``res`` (the content of ray.json), atomically."""
    tmp = OUT_MD.with_suffix(".md.tmp")
    tmp.write_text(markdown(res, tomllib.loads(PLAN.read_text())))
    tmp.replace(OUT_MD)


# ------------------------------------------------------------------------------------------------ data
def dataset(name: str, plan: dict[str, Any]) -> Any:
    from modalrec.data import load as load_data

    if name == "ml100k":
        return load_data("ml100k", split=None, seed=2024)
    spec = plan["quality"]["S"]["synth"]
    # the scale benchmark's S folder when it was made with the same settings (same seed, same files)
    scale = Path("/tmp/modalrec-scale/data-S")
    same = {
        "users": spec["users"],
        "items": spec["items"],
        "interactions": spec["interactions"],
        "modalities": spec["modalities"],
        "clusters": spec["clusters"],
        "seed": spec["seed"],
    }
    stamp = scale / "scale-args.json"
    if (scale / "dataset.toml").exists() and stamp.exists() and json.loads(stamp.read_text()) == same:
        return load_data(str(scale / "dataset.toml"), seed=2024)
    out = SYNTH_ROOT / "S"
    SYNTH_ROOT.mkdir(parents=True, exist_ok=True)
    # two jobs (timing and quality lanes) may need S at once: one generates, into a temporary folder
    # renamed into place, while the other waits on the lock
    with open(SYNTH_ROOT / "S.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "dataset.toml").exists():
            from modalrec.data.synth import make_synthetic

            part = Path(tempfile.mkdtemp(prefix="S-", dir=SYNTH_ROOT))
            make_synthetic(
                part,
                n_users=spec["users"],
                n_items=spec["items"],
                n_interactions=spec["interactions"],
                n_clusters=spec["clusters"],
                modalities={"image": 64},
                seed=spec["seed"],
            )
            subprocess.run(["rm", "-rf", str(out)], check=False)
            part.replace(out)
    return load_data(str(out / "dataset.toml"), seed=2024)


# ------------------------------------------------------------------------------------------------- fits
def fit_row(
    ds: Any, model: str, params: dict[str, Any], workers: int, ks: list[int], kill_after: int = 0
) -> dict[str, Any]:
    """One Ray fit (optionally SIGKILLing a worker after ``kill_after`` checkpoints) and its test metrics."""
    from modalrec.evaluation import evaluate
    from modalrec.workflows.ray_train import fit_ray

    row: dict[str, Any] = {
        "model": model,
        "params": params,
        "workers": workers,
        "start": now(),
        "load_start": load(),
    }
    store = Path(tempfile.mkdtemp(prefix="modalrec-ray-ckpt-"))
    t0 = time.perf_counter()
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["model"] = fit_ray(ds, model, params, workers=workers, storage=store, max_failures=3)
        except Exception as e:
            out["error"] = f"{type(e).__name__}: {e}"

    th = threading.Thread(target=run)
    th.start()
    if kill_after:
        row["killed"] = kill_one_worker(store, kill_after, th)
    th.join()
    row["wall_s"] = round(time.perf_counter() - t0, 2)
    subprocess.run(["rm", "-rf", str(store)], check=False)
    if "error" in out:
        return {**row, "status": "failed", "error": out["error"][:500], "load_end": load()}
    m = out["model"]
    res = evaluate(m, ds, "test", ks=tuple(ks))
    row.update(
        {k: round(v, 6) for k, v in res.metrics.items() if k.split("@")[0] in ("recall", "ndcg", "precision")}
    )
    secs = m.meta.get("epoch_seconds", [])
    row.update(
        {
            "status": "ok",
            "test_users": res.n_users,
            "best_epoch": m.meta.get("best_epoch"),
            "epochs_run": m.meta.get("epochs_run"),
            "best_valid_recall@20": m.meta.get("best_valid_recall@20"),
            "mean_epoch_s": round(sum(secs) / len(secs), 3) if secs else None,
            "data_parallel": m.meta.get("data_parallel"),
            "load_end": load(),
        }
    )
    return row


def registered_checkpoints(store: Path) -> list[dict[str, Any]]:
    """The checkpoints Ray Train's controller has registered (its checkpoint manager snapshot), oldest
    first: what a restarted worker group resumes from. A ``checkpoint_*`` folder on disk is not enough:
    rank 0 writes it before the controller has collected every worker's report (the first kill run,
    triggered by folders on disk, resumed from the check before the one it waited for)."""
    out: list[dict[str, Any]] = []
    for snap in store.glob("*/checkpoint_manager_snapshot.json"):
        try:
            state = json.loads(snap.read_text())
        except (OSError, ValueError):
            continue  # being written: read again at the next poll
        out += [r for r in state.get("checkpoint_results", []) if r.get("checkpoint_dir_name")]
    return out


def kill_one_worker(store: Path, after: int, th: threading.Thread) -> dict[str, Any]:
    """SIGKILL one Ray Train worker process once Ray has registered ``after`` checkpoints."""
    import psutil

    seen: dict[str, Any] = {}  # checkpoint folder -> epoch, over the polls (Ray keeps only 2)
    while th.is_alive():
        for r in registered_checkpoints(store):
            seen.setdefault(r["checkpoint_dir_name"], (r.get("metrics") or {}).get("epoch"))
        if len(seen) >= after:
            procs = []
            for p in psutil.Process(os.getpid()).children(recursive=True):
                try:
                    if any("RayTrainWorker" in part for part in p.cmdline()):
                        procs.append(p)
                except psutil.Error:
                    continue
            if procs:
                victim = procs[-1].pid
                os.kill(victim, signal.SIGKILL)
                return {
                    "pid": victim,
                    "at": now(),
                    "registered_checkpoint_epochs": sorted(e for e in seen.values() if e is not None),
                    "checkpoint_folders_on_disk": len(list(store.glob("*/checkpoint_*"))),
                }
        time.sleep(0.2)
    return {"pid": None, "note": "training ended before the planned checkpoint: no worker was killed"}


def part_quality(
    plan: dict[str, Any], name: str, only_workers: list[int] | None, seeds: list[int] | None
) -> None:
    q = plan["quality"][name]
    ds = dataset(q["dataset"], plan)
    for seed in seeds or plan["seeds"]:
        for w in only_workers or plan["workers"]:
            row = fit_row(ds, q["model"], {**q["params"], "seed": seed}, w, plan["ks"])
            merge(
                "quality",
                f"{name}/{q['model']}/w{w}/s{seed}",
                {**row, "dataset": name, "seed": seed, **provenance()},
            )


def part_kill(plan: dict[str, Any]) -> None:
    k = plan["kill"]
    q = plan["quality"][k["dataset"]]
    ds = dataset(k["dataset"], plan)
    row = fit_row(
        ds,
        q["model"],
        {**q["params"], "seed": k["seed"]},
        k["workers"],
        plan["ks"],
        kill_after=k["kill_after_checkpoints"],
    )
    merge(
        "kill",
        f"{k['dataset']}/{q['model']}/w{k['workers']}/s{k['seed']}",
        {**row, "dataset": k["dataset"], "seed": k["seed"], **provenance()},
    )


def part_timing(plan: dict[str, Any]) -> None:
    t = plan["timing"]
    cache: dict[str, Any] = {}
    for r in t["rows"]:
        if r["dataset"] not in cache:
            cache.clear()
            cache[r["dataset"]] = dataset(r["dataset"], plan)
        params = {**t["params"], **r.get("extra", {}), "epochs": r["epochs"], "eval_every": r["epochs"]}
        for w in plan["workers"]:
            row = fit_row(cache[r["dataset"]], r["model"], params, w, plan["ks"])
            key = f"{r['dataset']}/{r['model']}/w{w}"
            merge("timing", key, {**row, "dataset": r["dataset"], **provenance()})


# ---------------------------------------------------------------------------------------------- report
def mean_std(xs: list[float]) -> tuple[float, float]:
    m = sum(xs) / len(xs)
    return m, (math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else float("nan"))


def markdown(res: dict[str, Any], plan: dict[str, Any]) -> str:
    lines = [
        "# Data-parallel training on Ray Train: 2 workers vs 1",
        "",
        "Script: `benchmarks/ray_train.py` (plan `benchmarks/plans/ray.toml`). Ray Train `TorchTrainer`, gloo, one CPU",
        "per worker, on a local Ray runtime of 2 CPUs on this 2-core machine shared with other jobs (load averages per",
        "row). Test split, full ranking; Recall = hits / #relevant. Early stopping on validation Recall@20 (rank 0).",
        f"Within seed noise: {plan['noise_rule']}.",
        "",
        *provenance_lines(res),
    ]
    notes = res.get("notes", [])
    if notes:
        lines += ["## Notes (what ran, what did not, and why)", "", *[f"- {n}" for n in notes], ""]
    lines += quality_tables(res.get("quality", {}), plan)
    lines += kill_table(res.get("kill", {}), res.get("quality", {}))
    lines += timing_table(res.get("timing", {}))
    if res.get("timing_dense_sync"):
        lines += [
            "### Before the sparse gradient sync: whole embedding tables all-reduced every step",
            "",
            "The same rows at HEAD 5e91e3b-9f4ba59 (models/distributed.py as of 5bcec23), before it summed only the",
            "gradient rows that are non-zero on some worker (e354178). Same plan, same timing lane, 20:02-20:14 UTC.",
            "",
            *timing_table(res["timing_dense_sync"])[4:],
        ]
    return "\n".join(lines) + "\n"


def provenance_lines(res: dict[str, Any]) -> list[str]:
    """Which plan commit(s) and code commit(s) the rows ran at (each row records its own)."""
    sections = ("quality", "kill", "timing", "timing_dense_sync")
    rows = [r for sec in sections for r in res.get(sec, {}).values()]
    if not rows:
        return []
    plans = sorted({str(r.get("plan_commit"))[:7] for r in rows})
    codes = sorted({str(r.get("code_commit"))[:7] for r in rows})
    dirty = sorted({p for r in rows for p in r.get("code_dirty_paths") or []})
    out = [f"Plan commit(s) of the rows: {', '.join(plans)}; code commit(s): {', '.join(codes)}."]
    if dirty:
        out.append(f"Uncommitted model/workflow files in the checkout during some rows: {', '.join(dirty)}.")
    return [*out, ""]


def quality_tables(q: dict[str, Any], plan: dict[str, Any]) -> list[str]:
    out = ["## Quality (3 seeds per arm)", ""]
    for name in plan["quality"]:
        model = plan["quality"][name]["model"]
        out += [
            f"### {name}, {model}",
            "",
            "| workers | seed | R@20 | NDCG@20 | R@10 | R@50 | best epoch | epochs | wall s | mean epoch s | load start / end |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        arms: dict[int, dict[str, list[float]]] = {}
        for w in plan["workers"]:
            for s in plan["seeds"]:
                r = q.get(f"{name}/{model}/w{w}/s{s}")
                if r is None:
                    out.append(f"| {w} | {s} | not run | | | | | | | | |")
                    continue
                if r["status"] != "ok":
                    out.append(
                        f"| {w} | {s} | failed: {r.get('error', '')[:80]} | | | | | | {r['wall_s']} | | {r['load_start']} / {r['load_end']} |"
                    )
                    continue
                a = arms.setdefault(w, {"r": [], "n": []})
                a["r"].append(r["recall@20"])
                a["n"].append(r["ndcg@20"])
                out.append(
                    f"| {w} | {s} | {r['recall@20']:.4f} | {r['ndcg@20']:.4f} | {r['recall@10']:.4f} | {r['recall@50']:.4f} | "
                    f"{r['best_epoch']} | {r['epochs_run']} | {r['wall_s']} | {r['mean_epoch_s']} | {r['load_start']} / {r['load_end']} |"
                )
        out.append("")
        out += noise_lines(arms)
    return out


def noise_lines(arms: dict[int, dict[str, list[float]]]) -> list[str]:
    if 1 not in arms or 2 not in arms or len(arms[1]["r"]) < 2 or len(arms[2]["r"]) < 2:
        return ["Fewer than 2 seeds per arm: no noise comparison.", ""]
    out = []
    for key, label in (("r", "Recall@20"), ("n", "NDCG@20")):
        m1, s1 = mean_std(arms[1][key])
        m2, s2 = mean_std(arms[2][key])
        se = 2 * math.sqrt(s1**2 / len(arms[1][key]) + s2**2 / len(arms[2][key]))
        verdict = "within seed noise" if abs(m2 - m1) <= se else "OUTSIDE seed noise"
        out.append(
            f"- {label}: 1 worker {m1:.4f} +- {s1:.4f}, 2 workers {m2:.4f} +- {s2:.4f} (n = {len(arms[1][key])}, {len(arms[2][key])}); difference {m2 - m1:+.4f}, 2 SE {se:.4f}: **{verdict}**."
        )
    return [*out, ""]


def kill_table(k: dict[str, Any], q: dict[str, Any]) -> list[str]:
    out = ["## One worker SIGKILLed mid-training", ""]
    if not k:
        return [*out, "Not run.", ""]
    for key, r in k.items():
        ref = q.get(key)
        out.append(
            f"Row `{key}`: killed {r.get('killed')}; status {r['status']}; resumed from epochs {(r.get('data_parallel') or {}).get('resumed_from_epochs')}."
        )
        if r["status"] == "ok":
            out.append(
                f"- killed run: R@20 {r['recall@20']:.4f}, NDCG@20 {r['ndcg@20']:.4f}, best epoch {r['best_epoch']}, wall {r['wall_s']} s (load {r['load_start']} / {r['load_end']})."
            )
        if ref and ref.get("status") == "ok":
            out.append(
                f"- uninterrupted run, same seed and workers: R@20 {ref['recall@20']:.4f}, NDCG@20 {ref['ndcg@20']:.4f}, best epoch {ref['best_epoch']}."
            )
        out.append("")
    return out


def timing_table(t: dict[str, Any]) -> list[str]:
    out = [
        "## Epoch time, 1 vs 2 workers",
        "",
        "Two cores are the ceiling here: two workers use both, and the driver and Ray's own processes share them.",
        "",
        "| row | workers | epochs | mean epoch s (workers' clock) | wall s (whole fit) | load start / end |",
        "|---|---|---|---|---|---|",
    ]
    if not t:
        return [*out, "", "Not run.", ""]
    for key, r in t.items():
        out.append(
            f"| {key.rsplit('/', 1)[0]} | {r['workers']} | {r.get('epochs_run')} | {r.get('mean_epoch_s')} | {r['wall_s']} | {r['load_start']} / {r['load_end']} |"
        )
    return [*out, ""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=["quality", "kill", "timing"])
    ap.add_argument("--dataset", choices=["ml100k", "S"], default="ml100k")
    ap.add_argument("--workers", type=int, nargs="*", help="only these worker counts (default: the plan's)")
    ap.add_argument("--seeds", type=int, nargs="*", help="only these seeds (default: the plan's)")
    ap.add_argument("--report", action="store_true", help="only rewrite ray.md from ray.json")
    ap.add_argument(
        "--note", action="append", default=[], help="add a note line to ray.json (shown in ray.md)"
    )
    args = ap.parse_args()
    plan = tomllib.loads(PLAN.read_text())
    for n in args.note:
        add_note(f"{now()}: {n}")
    if args.part:
        import ray

        os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        if args.part == "quality":
            part_quality(plan, args.dataset, args.workers, args.seeds)
        elif args.part == "kill":
            part_kill(plan)
        else:
            part_timing(plan)
        ray.shutdown()
    res = json.loads(OUT_JSON.read_text()) if OUT_JSON.exists() else {}
    write_md(res)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    main()

"""Evaluation at scale and load time (issue 15 items 7-8 and the load target).

One command per size::

    python benchmarks/eval_scale.py --size S
    python benchmarks/eval_scale.py --size M --label after
    python benchmarks/eval_scale.py --render        # rewrite eval_scale.md from eval_scale.json

The plan (sizes, seeds, sample sizes, the "before" commit) is ``benchmarks/plans/eval_scale.toml``,
committed before any run; its commit is recorded. Data: ``modalrec synth`` into the plan's
``data_root`` (/tmp). Steps, each in its own subprocess (wall time measured here, peak memory =
``ru_maxrss`` of the child from ``os.wait4``, which is what ``/usr/bin/time -v`` reports as
"Maximum resident set size"; CPU = user + system seconds of the child; ``/proc/loadavg`` before and
after):

- ``validate``: ``modalrec validate DATA/dataset.toml`` (load + checks + split), as a user runs it;
- ``eval_full``: full-ranking evaluation of every test user with a dim-64 random-factor scorer;
- ``eval_sample``: seeded user samples with their 95% confidence intervals;
- ``before`` / ``after_subset``: the protocol of the plan's ``before_commit`` (a ``git archive``
  snapshot) and today's, on the same first ``before_users`` users; their metrics must be equal.

Results merge into ``benchmarks/results/eval_scale.json`` under ``runs[label][size]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PLAN = ROOT / "benchmarks" / "plans" / "eval_scale.toml"
RESULTS = ROOT / "benchmarks" / "results"
JSON_OUT = RESULTS / "eval_scale.json"
MD_OUT = RESULTS / "eval_scale.md"


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


# ------------------------------------------------------------------------------------------ children
def child_eval(args: dict[str, Any]) -> dict[str, Any]:
    """Runs inside a subprocess: load the data, build the scorer, evaluate as ``args`` says."""
    import resource

    import numpy as np
    import torch

    from modalrec.data import load
    from modalrec.evaluation.protocol import evaluate

    t0 = time.perf_counter()
    ds = load(args["data"], seed=args["split_seed"])
    load_s = time.perf_counter() - t0
    scorer = RandomFactors(ds, args["dim"], args["factor_seed"])
    truth = ds.target(args["split"])
    eligible = np.flatnonzero(np.diff(truth.indptr) > 0)
    users = eligible[: args["users"]] if args.get("users") else None
    out: dict[str, Any] = {
        "load_seconds": load_s,
        "eligible": len(eligible),
        "torch_threads": torch.get_num_threads(),
    }
    runs = []
    for sample, seed in args.get("samples") or [(None, 0)]:
        kw: dict[str, Any] = {"ks": tuple(args["ks"]), "users": users}
        if args.get("chunk_size"):
            kw["chunk_size"] = args["chunk_size"]
        if sample is not None:
            kw.update(sample_users=sample, seed=seed)
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t = time.perf_counter()
        res = evaluate(scorer, ds, args["split"], **kw)
        wall = time.perf_counter() - t
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        row = {
            "sample_users": sample,
            "seed": seed if sample is not None else None,
            "seconds": wall,
            "cpu_seconds": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime),
            "n_users": res.n_users,
            "metrics": res.metrics,
            "coverage": res.coverage,
            "chunk_size": getattr(res, "chunk_size", None) or kw.get("chunk_size", 4096),
        }
        if getattr(res, "confidence", None):
            row["confidence"] = {k: list(v) for k, v in res.confidence.items()}
            row["population"] = res.population
        runs.append(row)
    out["runs"] = runs
    out["n_items"] = ds.n_items
    return out


class RandomFactors:
    """score = U[users] @ V.T with seeded random factors; column 0 = (1, log(1 + popularity))."""

    def __init__(self, ds: Any, dim: int, seed: int) -> None:
        import numpy as np
        import torch

        rng = np.random.default_rng(seed)
        u = (0.1 * rng.standard_normal((ds.n_users, dim))).astype(np.float32)
        v = (0.1 * rng.standard_normal((ds.n_items, dim))).astype(np.float32)
        u[:, 0] = 1.0
        v[:, 0] = np.log1p(ds.item_popularity()).astype(np.float32)
        self.U, self.V = torch.from_numpy(u), torch.from_numpy(v)

    def _score(self, users: Any) -> Any:
        import torch

        return self.U[torch.as_tensor(users)] @ self.V.T


# ------------------------------------------------------------------------------------------- parent
def run_measured(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``cmd``; wall time, and the child's own CPU seconds and peak RSS (``os.wait4``)."""
    la0 = loadavg()
    t0 = time.perf_counter()
    with open(os.devnull, "rb") as devnull:
        p = subprocess.Popen(cmd, env=env, stdin=devnull, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    import threading

    bufs: list[bytearray] = [bytearray(), bytearray()]
    streams = [p.stdout, p.stderr]
    threads = [
        threading.Thread(target=lambda s=s, b=b: b.extend(s.read()), daemon=True)
        for s, b in zip(streams, bufs, strict=True)
    ]
    for t in threads:
        t.start()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    for t in threads:
        t.join()
    p.returncode = os.waitstatus_to_exitcode(status)
    return {
        "cmd": " ".join(cmd),
        "wall_seconds": round(wall, 2),
        "cpu_seconds": round(ru.ru_utime + ru.ru_stime, 2),
        "peak_rss_gb": round(ru.ru_maxrss / 1024**2, 3),
        "returncode": p.returncode,
        "loadavg_before": la0,
        "loadavg_after": loadavg(),
        "stdout": bufs[0].decode(errors="replace"),
        "stderr_tail": bufs[1].decode(errors="replace")[-1500:],
    }


def ensure_data(plan: dict[str, Any], size: str) -> Path:
    spec = plan["sizes"][size]
    out = Path(plan["data_root"]) / size
    if not (out / "dataset.toml").exists():
        subprocess.run(
            [
                "modalrec",
                "synth",
                "--out",
                str(out),
                "--users",
                str(spec["users"]),
                "--items",
                str(spec["items"]),
                "--interactions",
                str(spec["interactions"]),
                "--modalities",
                plan["modalities"],
                "--seed",
                str(plan["seed"]),
            ],
            check=True,
        )
    return out / "dataset.toml"


def snapshot(commit: str) -> Path:
    """``git archive`` of ``commit``'s src/ into /tmp (the "before" code)."""
    dest = Path(f"/tmp/modalrec-eval-scale-src-{commit}")
    if not (dest / "src").exists():
        dest.mkdir(parents=True, exist_ok=True)
        tar = dest / "src.tar"
        subprocess.run(["git", "archive", "-o", str(tar), commit, "src"], cwd=ROOT, check=True)
        with tarfile.open(tar) as tf:
            tf.extractall(dest, filter="data")
    return dest / "src"


def eval_step(
    plan: dict[str, Any], data: Path, extra: dict[str, Any], src: Path | None = None
) -> dict[str, Any]:
    args = {
        "data": str(data),
        "split_seed": plan["split_seed"],
        "dim": plan["dim"],
        "factor_seed": plan["factor_seed"],
        "ks": plan["ks"],
        "split": plan["split"],
        **extra,
    }
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src) + os.pathsep + env.get("PYTHONPATH", "")
    r = run_measured([sys.executable, __file__, "--child", json.dumps(args)], env=env)
    lines = [ln for ln in r.pop("stdout").splitlines() if ln.startswith("{")]
    r["result"] = json.loads(lines[-1]) if lines and r["returncode"] == 0 else None
    return r


def measure(size: str, label: str, steps: list[str], sample_override: str | None = None) -> dict[str, Any]:
    plan = tomllib.loads(PLAN.read_text())
    if sample_override:
        plan["sample_users"] = [int(x) for x in sample_override.split(",")]
    data = ensure_data(plan, size)
    out: dict[str, Any] = {
        "size": size,
        "spec": plan["sizes"][size],
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "steps": steps,
        "sample_users_override": sample_override,
    }
    if "validate" in steps:
        out["validate"] = run_measured(["modalrec", "validate", str(data)])
        out["validate"]["stdout_tail"] = out["validate"].pop("stdout")[-1500:]
        print(
            "validate",
            {k: out["validate"][k] for k in ("wall_seconds", "peak_rss_gb", "cpu_seconds")},
            flush=True,
        )
    if "before" in steps:
        n = plan["before_users"]
        chunk = plan.get("before_chunk", {}).get(size)
        extra = {"users": n, **({"chunk_size": chunk} if chunk else {})}
        out["before"] = eval_step(plan, data, extra, src=snapshot(plan["before_commit"]))
        out["after_subset"] = eval_step(plan, data, {"users": n})
        a, b = (out[k]["result"]["runs"][0] if out[k]["result"] else {} for k in ("before", "after_subset"))
        out["subset_identical"] = (
            bool(a) and a.get("metrics") == b.get("metrics") and a.get("coverage") == b.get("coverage")
        )
        print("before/after subset identical:", out["subset_identical"], flush=True)
    if "eval_full" in steps:
        out["eval_full"] = eval_step(plan, data, {})
        print(
            "eval_full",
            {k: out["eval_full"][k] for k in ("wall_seconds", "peak_rss_gb", "cpu_seconds")},
            flush=True,
        )
    if "eval_sample" in steps:
        samples = [(n, s) for n in plan["sample_users"] for s in plan["sample_seeds"]]
        out["eval_sample"] = eval_step(plan, data, {"samples": samples})
        _coverage_check(out)
    out["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return out


def _coverage_check(out: dict[str, Any]) -> None:
    """Whether each sample's interval covers the full-population value (when both ran)."""
    full = (out.get("eval_full") or {}).get("result")
    sample = (out.get("eval_sample") or {}).get("result")
    if not full or not sample:
        return
    truth = full["runs"][0]["metrics"]
    for row in sample["runs"]:
        ci = row.get("confidence", {})
        row["covers_full"] = {k: bool(lo <= truth[k] <= hi) for k, (lo, hi) in ci.items() if k in truth}
        row["covered_share"] = sum(row["covers_full"].values()) / max(1, len(row["covers_full"]))


# ------------------------------------------------------------------------------------------- report
def render(res: dict[str, Any]) -> str:
    lines = [
        "# Evaluation at scale and load time (issue 15 items 7-8)",
        "",
        f"Plan: `benchmarks/plans/eval_scale.toml` at commit {res.get('plan_commit', '?')}; code {res.get('code_commit', '?')}"
        f"{' + uncommitted ' + ', '.join(res['code_dirty']) if res.get('code_dirty') else ''}.",
        "Machine: 2 cores shared with other helpers' jobs; each row records /proc/loadavg (1, 5, 15 min) before and after."
        " Scorer: dim-64 random factors (column 0 = log popularity). Peak = ru_maxrss of the step's process"
        " (what `/usr/bin/time -v` reports). Protocol: full ranking of all items, train+valid masked, ks 10/20/50.",
        "",
        "| label | size | step | users evaluated | chunk | wall s | CPU s | peak GB | loadavg before -> after | notes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, sizes in res.get("runs", {}).items():
        for size, r in sizes.items():
            lines += _rows(label, size, r)
    lines += [
        "",
        "## Samples and confidence intervals (95%, normal approximation over users, finite-population corrected)",
        "",
    ]
    lines += [
        "| label | size | sample | seed | eval s | recall@20 [CI] | ndcg@20 [CI] | full recall@20 | metrics covered |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, sizes in res.get("runs", {}).items():
        for size, r in sizes.items():
            full = ((r.get("eval_full") or {}).get("result") or {}).get("runs", [{}])[0].get("metrics", {})
            for row in ((r.get("eval_sample") or {}).get("result") or {}).get("runs", []):
                f = _ci_cell(row)
                cov = f"{row['covered_share']:.0%}" if "covered_share" in row else "-"
                lines.append(
                    f"| {label} | {size} | {row['sample_users']} | {row['seed']} | {row['seconds']:.1f} | {f('recall@20')} | {f('ndcg@20')} | "
                    f"{full.get('recall@20', float('nan')):.5f} | {cov} |"
                )
    lines += ["", *res.get("notes", [])]
    return "\n".join(lines) + "\n"


def _ci_cell(row: dict[str, Any]) -> Any:
    ci = row.get("confidence", {})
    return lambda k: f"{row['metrics'][k]:.5f} [{ci[k][0]:.5f}, {ci[k][1]:.5f}]" if k in ci else "-"


def _extrapolation(res: dict[str, Any]) -> str:
    """Linear extrapolation of the subset's evaluate() CPU seconds to every eligible user."""
    run = res.get("runs", [{}])[0]
    if not run.get("n_users") or not run.get("cpu_seconds") or run["n_users"] >= res["eligible"]:
        return ""
    per_user = run["cpu_seconds"] / run["n_users"]
    total = per_user * res["eligible"]
    return (
        f"; ESTIMATE for all {res['eligible']} eligible users: {total:.0f} CPU s, "
        f"~{total / 2:.0f} s wall on two idle cores ({per_user * 1e3:.2f} CPU ms per user)"
    )


def _rows(label: str, size: str, r: dict[str, Any]) -> list[str]:
    out = []
    for step in ("validate", "before", "after_subset", "eval_full", "eval_sample"):
        s = r.get(step)
        if not s:
            continue
        res = s.get("result") or {}
        runs = res.get("runs", [{}])
        users = ", ".join(str(x.get("n_users", "")) for x in runs) if step != "validate" else "-"
        chunk = str(runs[0].get("chunk_size", "")) if step != "validate" else "-"
        note = ""
        if step in ("before", "after_subset", "eval_full"):
            eval_s = runs[0].get("seconds")
            note = (
                f"evaluate() {eval_s:.1f} s wall, {runs[0].get('cpu_seconds', 0):.1f} CPU s "
                f"(load {res.get('load_seconds', 0):.1f} s)"
                if eval_s
                else f"failed: {s.get('stderr_tail', '')[-200:]}"
            )
            if step in ("after_subset", "eval_full"):
                note += _extrapolation(res)
        if step == "after_subset":
            note += (
                "; metrics identical to before"
                if r.get("subset_identical")
                else "; METRICS DIFFER from before"
            )
        if step == "validate" and s["returncode"] != 0:
            note = f"exit {s['returncode']}"
        out.append(
            f"| {label} | {size} | {step} | {users} | {chunk} | {s['wall_seconds']} | {s['cpu_seconds']} | {s['peak_rss_gb']} | "
            f"{s['loadavg_before']} -> {s['loadavg_after']} | {note} |"
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=["S", "M"])
    ap.add_argument("--label", default="after")
    ap.add_argument("--steps", help="comma-separated steps (default: the plan's [steps] for the size)")
    ap.add_argument("--sample-users", help="override the plan's sample sizes (recorded in the results)")
    ap.add_argument("--render", action="store_true")
    ap.add_argument("--child")
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child_eval(json.loads(a.child))))
        return
    res = json.loads(JSON_OUT.read_text()) if JSON_OUT.exists() else {}
    if a.size:
        steps = a.steps.split(",") if a.steps else tomllib.loads(PLAN.read_text())["steps"][a.size]
        measured = measure(a.size, a.label, steps, a.sample_users)
        # re-read: another size may have finished (and written) while this one ran
        res = json.loads(JSON_OUT.read_text()) if JSON_OUT.exists() else {}
        res.setdefault("runs", {}).setdefault(a.label, {})[a.size] = measured
        dirty = [
            ln.split(maxsplit=1)[-1]
            for ln in git(
                "status", "--porcelain", "--", "src/modalrec/evaluation", "src/modalrec/data"
            ).splitlines()
        ]
        res.update(
            plan_commit=git("log", "-1", "--format=%H", "--", str(PLAN.relative_to(ROOT))),
            code_commit=git("rev-parse", "HEAD"),
            code_dirty=dirty,
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    JSON_OUT.write_text(json.dumps(res, indent=1) + "\n")
    MD_OUT.write_text(render(res))
    print(MD_OUT.read_text())


if __name__ == "__main__":
    main()

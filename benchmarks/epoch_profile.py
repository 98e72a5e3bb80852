"""Where one shared LightGCN epoch spends its time at S and M, with torch's huge pages off and on (issue 15).

Plan: ``benchmarks/plans/epoch_profile.toml`` (committed before the run). One command, a timing-lane job::

    python benchmarks/epoch_profile.py            # S off, S on, M off, M on; each run in its own process
    python benchmarks/epoch_profile.py --render   # rewrite the Markdown from the JSON

Each run wraps the training loop's own functions with wall clocks (no change to what they compute) and trains
one epoch; the parent writes ``benchmarks/results/epoch_profile.{json,md}``.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import resource
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PLAN = HERE / "plans" / "epoch_profile.toml"
OUT_JSON = HERE / "results" / "epoch_profile.json"
OUT_MD = HERE / "results" / "epoch_profile.md"
COMPONENTS = [
    "sampler",
    "propagate",
    "batch_loss",
    "batch_grad",
    "grad_sum",
    "graph_backward",
    "adam",
    "other",
]


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=HERE.parent, capture_output=True, text=True).stdout.strip()


def child(size: str, plan: dict[str, Any]) -> dict[str, Any]:
    """One epoch with every component timed (runs in its own process: THP is read once per process)."""
    import modalrec  # noqa: F401  (before torch, as the CLI does)

    # isort: split
    import numpy as np
    import torch

    import modalrec.models.embedding as emb
    from modalrec.data import load
    from modalrec.models import create
    from modalrec.models.training import BPRSampler

    sys.path.insert(0, str(HERE))
    from graph_linear import PLAN as GL_PLAN
    from graph_linear import synth_data

    spec = tomllib.loads(GL_PLAN.read_text())["timing"]["sizes"][size]
    ds = load(str(synth_data(Path("/tmp/graph_linear"), size, spec)))
    torch.set_num_threads(plan["threads"])
    m = create(plan["model"], **plan["params"], threads=plan["threads"])
    run = m.start_training(ds, BPRSampler)
    clock: collections.Counter[str] = collections.Counter()

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                clock[name] += time.perf_counter() - t0

        return wrapper

    m.propagate = timed("propagate", m.propagate)  # type: ignore[method-assign]
    m.propagated_loss = timed("batch_loss", m.propagated_loss)  # type: ignore[method-assign]
    emb._GradSum.add = timed("grad_sum", emb._GradSum.add)  # type: ignore[method-assign]
    emb.torch.autograd.grad = timed("batch_grad", torch.autograd.grad)  # type: ignore[assignment]
    emb.torch.autograd.backward = timed("graph_backward", torch.autograd.backward)  # type: ignore[assignment]
    run.opt.step = timed("adam", run.opt.step)  # type: ignore[method-assign]
    run.triplets.epoch = timed("sampler", run.triplets.epoch)  # type: ignore[method-assign]
    load0, c0, t0 = os.getloadavg(), resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    m.train_epoch(run, 1)
    wall, c1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    clock["other"] = wall - sum(clock.values())
    s = run.triplets
    rng = np.random.default_rng(0)
    order = rng.permutation(len(s.users))
    negs = rng.integers(0, s.n_items, size=len(order))
    t1 = time.perf_counter()
    shuffled = s._is_pos(s.users[order], negs)
    t2 = time.perf_counter()
    stored = np.empty_like(negs)
    stored[order] = negs
    in_order = s._is_pos(s.users, stored)[order]
    t3 = time.perf_counter()
    assert (shuffled == in_order).all()
    hugepages = Path("/proc/self/smaps_rollup").read_text().split("AnonHugePages:")[1].split()[0]
    return {
        "size": size,
        "thp": os.environ.get("THP_MEM_ALLOC_ENABLE"),
        "train_interactions": int(ds.train.nnz),
        "epoch_seconds": round(wall, 2),
        "components": {k: round(clock[k], 2) for k in COMPONENTS},
        "user_cpu_seconds": round(c1.ru_utime - c0.ru_utime, 2),
        "system_cpu_seconds": round(c1.ru_stime - c0.ru_stime, 2),
        "membership_test_shuffled_s": round(t2 - t1, 3),
        "membership_test_stored_s": round(t3 - t2, 3),
        "anon_huge_pages_kb_at_end": int(hugepages),
        "peak_rss_gb": round(c1.ru_maxrss / 2**20, 2),
        "loadavg_start": [round(x, 2) for x in load0],
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
    }


def markdown(res: dict[str, Any]) -> str:
    rows = {k: v for k, v in res.get("runs", {}).items() if "error" not in v}
    failed = {k: v["error"].strip().splitlines()[-1] for k, v in res.get("runs", {}).items() if "error" in v}
    lines = [
        "# One LightGCN epoch, component by component, S and M, huge pages off and on (issue 15)",
        "",
        f"Produced by `benchmarks/epoch_profile.py` from `benchmarks/plans/epoch_profile.toml` (plan commit "
        f"{res.get('plan_commit', '?')[:10]}, code commit {res.get('code_commit', '?')[:10]}). One epoch of "
        "lightgcn (shared propagation, 16 steps, dim 64, batch 2048) on 1 thread, each run in its own process. "
        "Seconds of wall clock; `thp` = THP_MEM_ALLOC_ENABLE (1 = torch's tensors of 2 MB and more on 2 MB pages).",
        "",
        "| size | thp | epoch s | " + " | ".join(COMPONENTS) + " | sys CPU s | load start -> end |",
        "|---|---|---|" + "---|" * len(COMPONENTS) + "---|---|",
    ]
    for r in rows.values():
        comp = " | ".join(f"{r['components'][k]:.2f}" for k in COMPONENTS)
        lines.append(
            f"| {r['size']} | {r['thp']} | {r['epoch_seconds']:.1f} | {comp} | {r['system_cpu_seconds']:.1f} | "
            f"{r['loadavg_start'][0]} -> {r['loadavg_end'][0]} |"
        )
    lines += ["", "M / S (10x the interactions; slope = log10 of the epoch ratio):", ""]
    lines += [
        "| thp | epoch ratio | slope | " + " | ".join(COMPONENTS) + " |",
        "|---|---|---|" + "---|" * len(COMPONENTS),
    ]
    for thp in ("0", "1"):
        s, m = rows.get(f"S/{thp}"), rows.get(f"M/{thp}")
        if not (s and m):
            continue
        ratio = m["epoch_seconds"] / s["epoch_seconds"]
        x = math.log(m["train_interactions"] / s["train_interactions"])
        comp = " | ".join(f"{m['components'][k] / max(s['components'][k], 1e-9):.1f}" for k in COMPONENTS)
        lines.append(f"| {thp} | {ratio:.2f} | {math.log(ratio) / x:.3f} | {comp} |")
    lines += [
        "",
        "Membership test of one epoch's negatives (same answers), shuffled order (before) vs stored order (now):",
        "",
    ]
    for key, r in rows.items():
        lines.append(
            f"- {key}: {r['membership_test_shuffled_s']:.3f} s vs {r['membership_test_stored_s']:.3f} s"
        )
    lines += [f"- run {k} failed: {e}" for k, e in failed.items()]
    lines += ["", *res.get("notes", [])]
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--render", action="store_true")
    args = ap.parse_args()
    plan = tomllib.loads(PLAN.read_text())
    if args.child:
        print(json.dumps(child(args.child, plan)), flush=True)
        return
    from modalrec.core.io import atomic_write_json, atomic_write_text

    res = json.loads(OUT_JSON.read_text()) if OUT_JSON.exists() else {}
    if not args.render:
        res.update(
            plan_commit=git("log", "-1", "--format=%H", "--", str(PLAN)), code_commit=git("rev-parse", "HEAD")
        )
        res.setdefault("runs", {})
        for size in plan["sizes"]:
            for thp in plan["thp"]:
                env = {**os.environ, "THP_MEM_ALLOC_ENABLE": thp}
                out = subprocess.run(
                    [sys.executable, __file__, "--child", size], env=env, capture_output=True, text=True
                )
                if out.returncode != 0:
                    res["runs"][f"{size}/{thp}"] = {"error": out.stderr[-2000:]}
                    print(out.stderr[-2000:], file=sys.stderr)
                    continue
                row = json.loads(out.stdout.strip().splitlines()[-1])
                print(json.dumps(row), flush=True)
                res["runs"][f"{size}/{thp}"] = row
                atomic_write_json(OUT_JSON, res)
    atomic_write_json(OUT_JSON, res)
    atomic_write_text(OUT_MD, markdown(res))


if __name__ == "__main__":
    main()

"""Fit the run directories that benchmarks/ab.py serves (plan: benchmarks/plans/ab.toml, [models]).

ML-100K raw pipeline (implicit feedback from all ratings, per-user random 8:1:1, seed 2024), no item
features (the A/B benchmark needs recommendations only). Idempotent: an existing run directory is kept.

``<name>-served`` (EASE and Popularity, for the live section): the same model fitted the same way,
written with a run directory whose interactions hold train + validation only. A server treats every
stored interaction as already seen and never recommends it; leaving the test interactions out makes
them the held-out future that the simulated visitors click (the fitted model does not change: both
are fitted on train).

Usage: ``MODALREC_DATA=/work/shared/data python benchmarks/ab_prepare.py --out /tmp/modalrec-ab``
"""

from __future__ import annotations

import argparse
import copy
import json
import time
import tomllib
from pathlib import Path

import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
PLAN = ROOT / "benchmarks" / "plans" / "ab.toml"
SERVED = ("ease", "popularity")


def prepare(out: Path, names: list[str] | None = None) -> dict[str, Path]:
    """Fit each planned model (or ``names``) into ``out/<name>`` unless it is already there."""
    import torch

    from modalrec.data import load
    from modalrec.workflows.pipeline import fit_dataset

    torch.set_num_threads(1)
    plan = tomllib.loads(PLAN.read_text())["models"]
    ds = None
    dirs: dict[str, Path] = {}
    jobs = [(n, n) for n in plan if n != "pairs"] + [(f"{n}-served", n) for n in SERVED]
    for name, base in jobs:
        if names and base not in names:
            continue
        spec = plan[base]
        path = out / name
        dirs[name] = path
        if (path / "manifest.json").exists():
            continue
        if ds is None:
            ds = load("ml100k", split="random", seed=2024)
        data = ds
        if name.endswith("-served"):
            data = copy.copy(ds)
            data.test = sp.csr_matrix(ds.test.shape, dtype=ds.test.dtype)
        t0 = time.perf_counter()
        fit_dataset(
            data,
            spec["model"],
            dict(spec["params"]),
            path,
            config={"data": {"name": "ml100k", "split": "random", "seed": 2024}, "model": spec},
            progress=False,
        )
        print(json.dumps({"fitted": name, "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
    return dirs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/modalrec-ab"))
    ap.add_argument("--models", nargs="*", default=None)
    a = ap.parse_args()
    print(json.dumps({k: str(v) for k, v in prepare(a.out, a.models).items()}))


if __name__ == "__main__":
    main()

"""Fit the run directories that benchmarks/ab.py serves (plan: benchmarks/plans/ab.toml, [models]).

ML-100K raw pipeline (implicit feedback from all ratings, per-user random 8:1:1, seed 2024), no item
features (the A/B benchmark needs recommendations only). Idempotent: an existing run directory is kept.

Usage: ``MODALREC_DATA=/work/shared/data python benchmarks/ab_prepare.py --out /tmp/modalrec-ab``
"""

from __future__ import annotations

import argparse
import json
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLAN = ROOT / "benchmarks" / "plans" / "ab.toml"


def prepare(out: Path, names: list[str] | None = None) -> dict[str, Path]:
    """Fit each planned model (or ``names``) into ``out/<name>`` unless it is already there."""
    import torch

    from modalrec.data import load
    from modalrec.workflows.pipeline import fit_dataset

    torch.set_num_threads(1)
    plan = tomllib.loads(PLAN.read_text())["models"]
    ds = None
    dirs: dict[str, Path] = {}
    for name, spec in plan.items():
        if name == "pairs" or (names and name not in names):
            continue
        path = out / name
        dirs[name] = path
        if (path / "manifest.json").exists():
            continue
        if ds is None:
            ds = load("ml100k", split="random", seed=2024)
        t0 = time.perf_counter()
        fit_dataset(
            ds,
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

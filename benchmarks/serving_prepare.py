"""Build the ML-100K run directory that benchmarks/serving.py serves (LightGCN + text/image features).

Same as ``modalrec fit examples/ml100k_lightgcn.toml --out RUN`` (protocol "ML-100K raw pipeline":
implicit feedback from all ratings, per-user random 8:1:1 split, seed 2024; early stopping on
validation), with the item features the server needs for ``/search`` and ``/similar?modality=``:
text = title | genres | overview (MiniLM), image = poster (EfficientNet-Lite0), from the shared
vector cache ``~/.cache/modalrec``.

Usage: ``python benchmarks/serving_prepare.py --out /tmp/modalrec-serving/ml100k-lightgcn``
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def prepare(out: Path, cache_dir: Path, overwrite: bool = False) -> dict[str, float]:
    import torch

    from modalrec.encoders import encode_dataset
    from modalrec.workflows.config import load_config
    from modalrec.workflows.pipeline import fit_dataset, load_dataset

    torch.set_num_threads(1)
    cfg = load_config(ROOT / "examples" / "ml100k_lightgcn.toml")
    t0 = time.perf_counter()
    ds = load_dataset(cfg)
    t1 = time.perf_counter()
    encode_dataset(ds, ["text", "image"], None, cache_dir=cache_dir, progress=False)
    t2 = time.perf_counter()
    fit_dataset(
        ds,
        cfg.model.name,
        dict(cfg.model.params),
        out,
        config=cfg.model_dump(),
        ks=tuple(cfg.evaluate.ks),
        overwrite=overwrite,
        progress=False,
    )
    t3 = time.perf_counter()
    return {"load_s": t1 - t0, "encode_s": t2 - t1, "fit_s": t3 - t2}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/modalrec-serving/ml100k-lightgcn"))
    ap.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "modalrec")
    ap.add_argument("--overwrite", action="store_true")
    a = ap.parse_args()
    times = prepare(a.out, a.cache_dir, a.overwrite)
    metrics = json.loads((a.out / "metrics.json").read_text())
    print(json.dumps({"run_dir": str(a.out), **times, "test": metrics.get("test")}, indent=1, default=str))


if __name__ == "__main__":
    main()

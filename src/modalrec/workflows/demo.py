"""``modalrec demo``: the whole pipeline on the embedded demo catalogue, in a few minutes.

Steps: generate the catalogue (images, sounds, texts, simulated users; :mod:`modalrec.data.demo`),
encode every modality with the real pretrained encoders (MiniLM, EfficientNet-Lite0, log-mel audio),
fit a collaborative baseline and the content-aware models, compare them on the test split and write
the best one (by validation Recall@20, never by test) as a run directory.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modalrec.models.base import REGISTRY

#: Models the demo compares, with settings that converge in seconds on the demo catalogue.
DEMO_MODELS: dict[str, dict[str, Any]] = {
    "popularity": {},
    "itemknn": {"k": 50},
    "lightgcn": {"dim": 64, "lr": 0.005, "epochs": 60, "eval_every": 2, "patience": 5, "batch_size": 1024},
    "vbpr": {"dim": 64, "lr": 0.005, "epochs": 60, "eval_every": 2, "patience": 5, "batch_size": 1024},
}


#: The real pretrained encoders. The demo's product pictures are flat Pillow renderings (shape, colour,
#: pattern), so EfficientNet-Lite0 reads them at 128 px: 3x fewer pixels than its 224 px default, which
#: keeps the whole demo within its 3-minute budget on a 2-core CPU.
DEMO_ENCODERS: dict[str, Any] = {
    "text": "minilm",
    "image": {"encoder": "efficientnet-lite0", "image_size": 128},
    "audio": "logmel",
}


@dataclass
class DemoResult:
    out: Path
    run_dir: Path
    best_model: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    encode_summary: list[dict[str, Any]] = field(default_factory=list)
    #: a user with test interactions, for the example recommendation
    example_user: str = ""


def run_demo(
    out: str | Path,
    *,
    seed: int = 0,
    n_items: int = 1200,
    n_users: int = 800,
    models: dict[str, dict[str, Any]] | None = None,
    progress: bool = True,
    cache_dir: str | Path | None = None,
) -> DemoResult:
    """Generate, encode, fit, evaluate; returns the comparison and writes ``out/run``."""
    from modalrec.data.demo import make_demo
    from modalrec.encoders import encode_dataset
    from modalrec.workflows.pipeline import evaluate_both, write_run

    out = Path(out)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    ds = make_demo(out / "catalogue", n_items=n_items, n_users=n_users, seed=seed)
    timings["generate"] = time.perf_counter() - t

    t = time.perf_counter()
    fs = encode_dataset(
        ds, DEMO_ENCODERS, out_dir=out / "encoded", cache_dir=cache_dir, progress=progress, workers=2
    )
    timings["encode"] = time.perf_counter() - t

    chosen = {k: v for k, v in (models or DEMO_MODELS).items() if k in REGISTRY}
    rows: list[dict[str, Any]] = []
    best: tuple[float, str, Any, dict[str, Any]] | None = None
    from modalrec.models import create

    for name, params in chosen.items():
        t = time.perf_counter()
        model = create(name, **params).fit(ds, progress=progress)
        metrics = evaluate_both(model, ds, (10, 20, 50))
        secs = time.perf_counter() - t
        valid_r20 = metrics["valid"]["metrics"]["recall@20"]
        rows.append(
            {
                "model": name,
                "uses_content": bool(getattr(model, "uses_features", False)),
                "valid_recall@20": valid_r20,
                "test": metrics["test"]["metrics"],
                "test_users": metrics["test"]["n_users"],
                "seconds": secs,
            }
        )
        if best is None or valid_r20 > best[0]:
            best = (valid_r20, name, model, metrics)
    timings["fit+evaluate"] = sum(r["seconds"] for r in rows)
    assert best is not None, "no demo model is registered"

    t = time.perf_counter()
    _, best_name, best_model, best_metrics = best
    run = write_run(
        ds,
        best_model,
        out / "run",
        config={
            "demo": {"seed": seed, "n_items": n_items, "n_users": n_users},
            "model": {"name": best_name, "params": chosen[best_name]},
        },
        metrics=best_metrics,
        overwrite=True,
    )
    timings["write run"] = time.perf_counter() - t
    summary = [
        {
            "modality": m,
            "items": len(fs.masks[m]),
            "dim": int(fs.features[m].shape[1]),
            "missing": int((~fs.masks[m]).sum()),
        }
        for m in fs.features
    ]
    test_users = np.flatnonzero(np.diff(ds.test.indptr))
    return DemoResult(
        out=out,
        run_dir=run.path,
        best_model=best_name,
        rows=rows,
        seconds=timings,
        encode_summary=summary,
        example_user=str(ds.user_ids[test_users[0]]) if len(test_users) else str(ds.user_ids[0]),
    )

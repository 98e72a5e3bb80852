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
from typing import TYPE_CHECKING, Any

import numpy as np

from modalrec.models.base import REGISTRY

if TYPE_CHECKING:
    from modalrec.data.dataset import Dataset
    from modalrec.encoders import FeatureSet

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
    rows, best = compare_models(ds, chosen, progress=progress)
    timings["fit+evaluate"] = sum(r["seconds"] for r in rows)

    t = time.perf_counter()
    run_dir = write_best_run(
        ds, best, out / "run", demo={"seed": seed, "n_items": n_items, "n_users": n_users}, params=chosen
    )
    timings["write run"] = time.perf_counter() - t
    return DemoResult(
        out=out,
        run_dir=run_dir,
        best_model=best.name,
        rows=rows,
        seconds=timings,
        encode_summary=encode_summary(fs),
        example_user=example_user(ds),
    )


@dataclass
class _Best:
    """The model with the highest validation Recall@20 so far, with its metrics."""

    valid_recall: float
    name: str
    model: Any
    metrics: dict[str, Any]


def compare_models(
    ds: Dataset, chosen: dict[str, dict[str, Any]], *, progress: bool
) -> tuple[list[dict[str, Any]], _Best]:
    """Fit and evaluate every chosen model; one row each, and the best by validation Recall@20."""
    from modalrec.models import create
    from modalrec.workflows.pipeline import evaluate_both

    rows: list[dict[str, Any]] = []
    best: _Best | None = None
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
        if best is None or valid_r20 > best.valid_recall:
            best = _Best(valid_r20, name, model, metrics)
    assert best is not None, "no demo model is registered"
    return rows, best


def write_best_run(
    ds: Dataset, best: _Best, path: Path, *, demo: dict[str, Any], params: dict[str, dict[str, Any]]
) -> Path:
    """Write the best model as a run directory (replacing an earlier demo run); returns its path."""
    from modalrec.workflows.pipeline import write_run

    run = write_run(
        ds,
        best.model,
        path,
        config={"demo": demo, "model": {"name": best.name, "params": params[best.name]}},
        metrics=best.metrics,
        overwrite=True,
    )
    return run.path


def encode_summary(fs: FeatureSet) -> list[dict[str, Any]]:
    """One row per encoded modality: items, vector size, items without that modality."""
    return [
        {
            "modality": m,
            "items": len(fs.masks[m]),
            "dim": int(fs.features[m].shape[1]),
            "missing": int((~fs.masks[m]).sum()),
        }
        for m in fs.features
    ]


def example_user(ds: Dataset) -> str:
    """A user with test interactions (the first one), for the example recommendation."""
    test_users = np.flatnonzero(np.diff(ds.test.indptr))
    return str(ds.user_ids[test_users[0]]) if len(test_users) else str(ds.user_ids[0])

"""The Ray backend: a Ray Data actor pool, each actor holding its own encoder rebuilt from its spec.

Ray is imported only when this backend runs; the items travel as plain rows (index, content key,
reference as a string, null flag) and come back in their original order.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from modalrec.core.raycluster import connect, import_ray
from modalrec.encoders.backends.batch import BatchResult, batch_size, encode_loaded, safe_load
from modalrec.encoders.registry import build_encoder

# Items per Ray actor call for text encoders (the local backend's 512 would leave actors idle).
RAY_TEXT_BATCH = 64


class RayEncodeActor:
    """One encoder per Ray actor: load + encode a batch, returning vectors and failure reasons."""

    def __init__(self, spec: dict[str, Any], dim: int) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.encoder = build_encoder(spec)
        if self.encoder.dim != dim:
            raise RuntimeError(f"encoder rebuilt from its spec has dim {self.encoder.dim}, expected {dim}")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        refs = [
            None if bool(null) else _unwrap(r) for r, null in zip(batch["ref"], batch["null"], strict=True)
        ]
        keys = [str(k) for k in batch["key"]]
        res = encode_loaded(self.encoder, keys, [safe_load(self.encoder, r) for r in refs])
        return {
            "i": np.asarray(batch["i"], dtype=np.int64),
            "vec": res.vectors,
            "ok": np.asarray(res.ok, dtype=bool),
            "reason": np.asarray(res.reasons, dtype=str),
            "detail": np.asarray([d[:300] for d in res.details], dtype=str),
        }


def _unwrap(r: Any) -> Any:
    return r.item() if isinstance(r, np.generic) else r


def ray_init(num_cpus: int | None) -> None:
    """Start a local Ray runtime unless one is running (then ``num_cpus`` is ignored)."""
    connect(None, num_cpus)


def _import_ray() -> Any:
    return import_ray()


def _rows(refs: list[Any], keys: list[str]) -> list[dict[str, Any]]:
    return [
        {"i": i, "key": k, "ref": "" if r is None else str(r), "null": r is None}
        for i, (r, k) in enumerate(zip(refs, keys, strict=True))
    ]


def encode_ray(
    encoder: Any, refs: list[Any], keys: list[str], actors: int, chunk: int, num_cpus: int | None
) -> Iterator[BatchResult]:
    """Batches of ``chunk`` results in order, encoded by a pool of ``actors`` Ray actors."""
    ray = _import_ray()
    ray_init(num_cpus)
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # no per-dataset INFO lines in our CLI
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.execution_options.preserve_order = True
    rows = _rows(refs, keys)
    ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 4 * actors)))
    bs = batch_size(encoder) if getattr(encoder, "modality", "") != "text" else RAY_TEXT_BATCH
    out = ds.map_batches(
        RayEncodeActor,
        fn_constructor_kwargs={"spec": encoder.to_spec(), "dim": encoder.dim},
        batch_size=bs,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=1,
    )
    for b in out.iter_batches(batch_size=chunk, batch_format="numpy"):
        idx = b["i"].tolist()
        yield BatchResult(
            [keys[i] for i in idx],
            np.asarray(b["vec"], dtype=np.float32).reshape(len(idx), encoder.dim),
            [bool(x) for x in b["ok"]],
            [str(x) for x in b["reason"]],
            [str(x) for x in b["detail"]],
        )

"""Run directories: the only thing passed from training to evaluation and serving.

Layout::

    RUN_DIR/
      manifest.json          config, package versions, dataset summary, sha256 of every other file
      users.parquet          user_id (dense index = row number)
      items.parquet          item table (item_id first; text fields and media paths as loaded)
      interactions.parquet   user, item (dense indices), split (0 train, 1 valid, 2 test)
      cold_items.npy         item indices held out of training (cold-start split only)
      features/<m>.npy       item features per modality (float32) and features/<m>.mask.npy
      model/                 model.json + model.safetensors
      metrics.json           validation and test metrics computed at fit time
      validation_report.json the data validation report

A run is written into a temporary sibling directory and renamed into place at the end, so a crash
never leaves a half-written run behind. On load, every file's sha256 is checked against the manifest.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from modalrec.core.errors import RunDirError
from modalrec.core.io import atomic_save_npy, atomic_write_json, sha256_file
from modalrec.data.dataset import Dataset, interaction_matrix
from modalrec.data.report import ValidationReport

MANIFEST = "manifest.json"
PACKAGES = ("modalrec", "torch", "numpy", "scipy", "polars", "pyarrow", "safetensors", "pydantic")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for p in PACKAGES:
        try:
            out[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            out[p] = "not installed"
    return out


def write_dataset(ds: Dataset, d: Path) -> None:
    """Persist ids, item table, split interactions, cold items and features into ``d``."""
    pl.DataFrame({"user_id": [str(u) for u in ds.user_ids]}).write_parquet(d / "users.parquet")
    items = ds.items if ds.items is not None else pl.DataFrame({"item_id": [str(i) for i in ds.item_ids]})
    items.write_parquet(d / "items.parquet")
    parts = []
    for label, m in enumerate((ds.train, ds.valid, ds.test)):
        coo = m.tocoo()
        parts.append(
            pl.DataFrame(
                {
                    "user": coo.row.astype(np.int32),
                    "item": coo.col.astype(np.int32),
                    "split": np.full(coo.nnz, label, dtype=np.int8),
                }
            )
        )
    pl.concat(parts).write_parquet(d / "interactions.parquet")
    if ds.cold_items is not None:
        atomic_save_npy(d / "cold_items.npy", np.asarray(ds.cold_items, dtype=np.int64))
    if ds.features:
        (d / "features").mkdir(exist_ok=True)
        for name, feat in ds.features.items():
            atomic_save_npy(d / "features" / f"{name}.npy", feat.astype(np.float32))
            mask = ds.feature_masks.get(name, np.ones(len(feat), dtype=bool))
            atomic_save_npy(d / "features" / f"{name}.mask.npy", mask.astype(bool))


def read_feature_dir(fdir: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Feature matrices (float32) and presence masks (bool; all present without a mask file) of a
    ``features/`` folder. ``item_ids.npy``, which ``modalrec encode`` writes next to them, is not a
    feature; an unreadable file raises :class:`RunDirError` naming it."""
    views: dict[str, np.ndarray] = {}
    masks: dict[str, np.ndarray] = {}
    for f in sorted(fdir.glob("*.npy")):
        if f.name.endswith(".mask.npy") or f.name == "item_ids.npy":
            continue
        m = f.name[: -len(".npy")]
        try:
            views[m] = np.load(f, allow_pickle=False).astype(np.float32, copy=False)
            mf = fdir / f"{m}.mask.npy"
            masks[m] = (
                np.load(mf, allow_pickle=False).astype(bool) if mf.exists() else np.ones(len(views[m]), bool)
            )
        except (OSError, ValueError) as e:
            raise RunDirError(f"{f}: unreadable feature file: {e}") from None
    return views, masks


def read_dataset(d: Path, manifest: dict[str, Any]) -> Dataset:
    users = pl.read_parquet(d / "users.parquet")["user_id"].to_numpy().astype(str)
    items = pl.read_parquet(d / "items.parquet")
    item_ids = items["item_id"].cast(pl.Utf8).to_numpy().astype(str)
    inter = pl.read_parquet(d / "interactions.parquet")
    u, i, s = (inter[c].to_numpy() for c in ("user", "item", "split"))
    mats = [interaction_matrix(u[s == k], i[s == k], len(users), len(item_ids)) for k in range(3)]
    features, masks = read_feature_dir(d / "features") if (d / "features").is_dir() else ({}, {})
    cold = np.load(d / "cold_items.npy", allow_pickle=False) if (d / "cold_items.npy").exists() else None
    info = manifest.get("dataset", {})
    return Dataset(
        name=str(info.get("dataset", d.name)),
        user_ids=users,
        item_ids=item_ids,
        train=mats[0],
        valid=mats[1],
        test=mats[2],
        items=items,
        features=features,
        feature_masks=masks,
        cold_items=cold,
        text_fields=list(manifest.get("text_fields", [])),
        media_columns=dict(manifest.get("media_columns", {})),
        split_name=str(info.get("split", "")),
    )


class RunWriter:
    """Context manager that builds a run in a temporary sibling directory and renames it in place."""

    def __init__(self, out: str | Path, *, overwrite: bool = False) -> None:
        self.out = Path(out)
        self.overwrite = overwrite
        if self.out.exists() and not overwrite and any(self.out.iterdir()):
            raise RunDirError(f"{self.out} already exists and is not empty; use --overwrite to replace it")

    def __enter__(self) -> Path:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", dir=self.out.parent))
        return self.tmp

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        old = None
        if self.out.exists():
            old = self.out.with_name(f".{self.out.name}.old-{os.getpid()}")
            os.replace(self.out, old)
        os.replace(self.tmp, self.out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def write_manifest(d: Path, **content: Any) -> dict[str, Any]:
    """Hash every file under ``d`` (except the manifest) and write ``manifest.json``."""
    files = {
        str(p.relative_to(d)): sha256_file(p)
        for p in sorted(d.rglob("*"))
        if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")
    }
    manifest = {
        "format": "modalrec-run/1",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": package_versions(),
        **content,
        "files": files,
    }
    atomic_write_json(d / MANIFEST, manifest)
    return manifest


def read_manifest(d: str | Path, *, verify: bool = True) -> dict[str, Any]:
    """Read ``manifest.json``; with ``verify`` check every file's sha256 (tampering, truncation)."""
    d = Path(d)
    if not d.is_dir():
        raise RunDirError(f"{d}: run directory not found")
    try:
        manifest = json.loads((d / MANIFEST).read_text())
    except FileNotFoundError:
        raise RunDirError(f"{d}: not a run directory ({MANIFEST} is missing)") from None
    except json.JSONDecodeError as e:
        raise RunDirError(f"{d / MANIFEST}: unreadable JSON: {e}") from None
    if verify:
        for rel, digest in manifest.get("files", {}).items():
            p = d / rel
            if not p.exists():
                raise RunDirError(f"{d}: file {rel} listed in the manifest is missing")
            if sha256_file(p) != digest:
                raise RunDirError(f"{d}: file {rel} does not match its sha256 in the manifest (modified?)")
    return manifest


@dataclass
class Run:
    """A loaded run directory: its manifest, dataset (with splits) and fitted model."""

    path: Path
    manifest: dict[str, Any]
    dataset: Dataset
    model: Any

    @property
    def report(self) -> ValidationReport:
        return self.dataset.report


def load_run(path: str | Path, *, verify: bool = True) -> Run:
    """Load a run directory written by :func:`modalrec.workflows.pipeline.fit`."""
    from modalrec.models.base import Recommender

    d = Path(path)
    manifest = read_manifest(d, verify=verify)
    ds = read_dataset(d, manifest)
    model = Recommender.load(d / "model")
    if (model.n_users, model.n_items) != (ds.n_users, ds.n_items):
        raise RunDirError(
            f"{d}: model was fitted on {model.n_users}x{model.n_items} but the run's data is {ds.n_users}x{ds.n_items}"
        )
    return Run(path=d, manifest=manifest, dataset=ds, model=model)


def seen_matrix(ds: Dataset) -> sp.csr_matrix:
    """Everything a user has interacted with in any split: excluded from recommendations of a run."""
    return (ds.train + ds.valid + ds.test).tocsr()

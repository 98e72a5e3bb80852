"""Add new items to a fitted run offline (``modalrec add-items RUN_DIR items.csv --out NEW_RUN_DIR``).

Why: a catalogue changes daily, and a run already holds everything needed to place a new item at
once: the encoders it recorded (the config's ``[encode]`` table) and a cold-start model
(:class:`~modalrec.models.coldstart.ColdStart`) whose content tower maps content into the space its
user vectors live in. New items are encoded with those encoders, placed by the tower, appended to
the catalogue (no interactions: the tower alone ranks them until the next fit) and written as a new
run directory; the original run is left untouched.

Bad input fails before anything is written, with the file, row (1 = first data row) and field:
a missing ``item_id`` column, an empty or duplicated id, an id already in the run, an unknown column,
a row with no content for any modality the model reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from modalrec.core.errors import ConfigError, DataError
from modalrec.data.dataset import Dataset
from modalrec.models.coldstart import ColdStart
from modalrec.workflows.pipeline import write_run
from modalrec.workflows.rundir import Run, load_run


@dataclass
class AddItemsResult:
    """What :func:`add_items` did: the new run, the ids added and per-modality missing counts."""

    run: Run
    added: list[str]
    missing: dict[str, int]


def read_new_items(path: str | Path, ds: Dataset) -> pl.DataFrame:
    """The new items' table (all columns as strings), checked row by row against the run's catalogue."""
    p = Path(path)
    try:
        df = pl.read_csv(p, infer_schema=False)
    except FileNotFoundError:
        raise DataError("file not found", file=p) from None
    except (pl.exceptions.ComputeError, pl.exceptions.NoDataError, UnicodeDecodeError) as e:
        raise DataError(f"not a readable CSV file: {e}", file=p) from None
    if "item_id" not in df.columns:
        raise DataError(f"no item_id column (columns: {', '.join(df.columns) or 'none'})", file=p)
    allowed = set(ds.items.columns) if ds.items is not None else {"item_id"}
    unknown = [c for c in df.columns if c not in allowed]
    if unknown:
        raise DataError(
            f"unknown column(s) {unknown}; the run's catalogue has {sorted(allowed)}",
            file=p,
            field=unknown[0],
        )
    known = {str(i) for i in ds.item_ids}
    first: dict[str, int] = {}
    for row, raw in enumerate(df["item_id"].to_list(), start=1):
        iid = (raw or "").strip()
        if not iid:
            raise DataError("empty item_id", file=p, line=row, field="item_id")
        if iid in first:
            raise DataError(f"item_id {iid!r} repeats row {first[iid]}", file=p, line=row, field="item_id")
        if iid in known:
            raise DataError(
                f"item_id {iid!r} is already in the run's catalogue", file=p, line=row, field="item_id"
            )
        first[iid] = row
    if len(df) == 0:
        raise DataError("no items to add (the file has a header only)", file=p)
    df = df.with_columns(pl.col("item_id").str.strip_chars())
    missing_cols = [c for c in allowed if c not in df.columns]
    return df.with_columns([pl.lit(None, dtype=pl.String).alias(c) for c in missing_cols]).select(
        [c for c in (ds.items.columns if ds.items is not None else ["item_id"])]
    )


def recorded_encoders(run: Run, modalities: list[str]) -> tuple[dict[str, dict[str, Any]], str | None]:
    """The encoder spec of each modality as the run's config recorded it (``[encode]``), and the
    recorded feature cache folder."""
    enc = (run.manifest.get("config") or {}).get("encode") or {}
    if not enc:
        raise ConfigError(f"{run.path}: the run records no encoders ([encode] table); refit with one")
    options = enc.get("options") or {}
    ds = run.dataset
    specs = {}
    for m in modalities:
        spec = dict(options.get(m) or {})
        if isinstance(options.get(m), str):
            spec = {"encoder": options[m]}
        if "fields" not in spec and "column" not in spec:
            if m in ds.media_columns:
                spec["column"] = ds.media_columns[m]
            elif m == "text":
                spec["fields"] = list(ds.text_fields)
        if str(spec.get("encoder", "")).startswith("tfidf"):
            raise ConfigError(
                f"{run.path}: modality {m!r} uses {spec['encoder']!r}, an encoder fitted on the catalogue; "
                "its fitted state is not in the run, so new items cannot be encoded the same way"
            )
        specs[m] = spec
    return specs, enc.get("cache_dir")


def extended_dataset(
    ds: Dataset, new: pl.DataFrame, feats: dict[str, np.ndarray], masks: dict[str, np.ndarray]
) -> Dataset:
    """The run's data set with the new items appended (no interactions; other modalities absent)."""
    n_new = len(new)
    shape = (ds.n_users, ds.n_items + n_new)

    def wider(m: sp.csr_matrix) -> sp.csr_matrix:
        return sp.csr_matrix((m.data, m.indices, m.indptr), shape=shape)

    features, fmasks = {}, {}
    for m, x in ds.features.items():
        add = feats.get(m, np.zeros((n_new, x.shape[1]), np.float32))
        features[m] = np.concatenate([x, add.astype(np.float32)])
        old_mask = ds.feature_masks.get(m, np.ones(len(x), bool))
        fmasks[m] = np.concatenate([old_mask, masks.get(m, np.zeros(n_new, bool))])
    items = pl.concat([ds.items, new], how="vertical_relaxed") if ds.items is not None else None
    return Dataset(
        name=ds.name,
        user_ids=ds.user_ids,
        item_ids=np.concatenate([ds.item_ids.astype(str), new["item_id"].to_numpy().astype(str)]),
        train=wider(ds.train),
        valid=wider(ds.valid),
        test=wider(ds.test),
        items=items,
        features=features,
        feature_masks=fmasks,
        cold_items=ds.cold_items,
        text_fields=ds.text_fields,
        media_columns=ds.media_columns,
        split_name=ds.split_name,
        report=ds.report,
    )


def add_items(
    run_dir: str | Path,
    items_file: str | Path,
    out: str | Path,
    *,
    overwrite: bool = False,
    progress: bool = False,
) -> AddItemsResult:
    """Encode the items of ``items_file`` with the run's encoders, place them with its cold-start
    model and write the extended run to ``out`` (the run at ``run_dir`` is not changed)."""
    from modalrec.encoders import encode_dataset

    run = load_run(run_dir)
    model = run.model
    if not isinstance(model, ColdStart):
        raise ConfigError(
            f"{run.path}: the run's model {model.name!r} cannot place items without interactions; "
            "fit a 'coldstart' model (modalrec models coldstart)"
        )
    new = read_new_items(items_file, run.dataset)
    specs, cache_dir = recorded_encoders(run, model.modalities)
    fs = encode_dataset(
        new,
        specs,
        None,
        cache_dir=Path(cache_dir).expanduser() if cache_dir else None,
        progress=progress,
        base_dir=Path(items_file).parent,
        apply=False,
    )
    present = np.zeros(len(new), bool)
    for m in model.modalities:
        present |= fs.masks[m]
    if not present.all():
        row = int(np.flatnonzero(~present)[0])
        iid = new["item_id"][row]
        why = "; ".join(
            f"{m}: {p['reason']}" + (f" ({p['detail']})" if p.get("detail") else "")
            for m, rep in fs.report.modalities.items()
            for p in rep.problems
            if p["item_id"] == iid
        )
        raise DataError(
            f"item {iid!r} has no content for any modality the model reads ({', '.join(model.modalities)}): "
            f"{why or 'nothing to encode'}",
            file=items_file,
            line=row + 1,
        )
    model.add_items(model.place_items(fs.features, fs.masks))
    ds = extended_dataset(run.dataset, new, fs.features, fs.masks)
    metrics = json.loads((run.path / "metrics.json").read_text())
    new_run = write_run(
        ds, run.model, out, config=run.manifest.get("config") or {}, metrics=metrics, overwrite=overwrite
    )
    missing = {m: int((~fs.masks[m]).sum()) for m in model.modalities}
    return AddItemsResult(run=new_run, added=new["item_id"].to_list(), missing=missing)

"""Encode a catalogue's items in every modality: cached, resumable, robust, local or on Ray.

:func:`encode_dataset` is what ``modalrec encode`` and ``modalrec demo`` call. Per modality it

1. builds the encoder and the items' references (joined text fields, or a media column);
2. hashes every item's content and looks the hashes up in the encoder's :class:`VectorCache`;
3. encodes only the unique contents not cached yet, in batches, with one of the
   :mod:`~modalrec.encoders.backends` (decoding in a thread pool while the model runs, or a Ray
   Data actor pool with ``backend="ray"``), writing a cache shard atomically every few hundred
   items (so a killed run resumes where it stopped);
4. assembles a float32 matrix and a presence mask in catalogue order; bad content (missing,
   corrupt, truncated, zero-length files, empty text, NaN rows) is marked missing with a reason.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modalrec.core.errors import ConfigError
from modalrec.core.io import atomic_write_json, atomic_write_text
from modalrec.encoders.backends import BatchResult, encode_batches
from modalrec.encoders.base import ENCODER_ERROR, describe_ref
from modalrec.encoders.progress import Progress
from modalrec.encoders.registry import build_encoder, canonical_name, default_encoder_name
from modalrec.encoders.store import FeatureSet, ModalityReport, VectorCache, unique_in_order

TEXT_SEP = " | "


@dataclass
class ModalitySpec:
    """One modality to encode: the encoder and where its input comes from in the item table."""

    modality: str
    encoder: Any
    column: str | None = None  # media / feature column (paths, zip:// refs, row numbers)
    fields: list[str] | None = None  # text fields joined with ``sep``
    sep: str = TEXT_SEP


# ------------------------------------------------------------------------------------ configuration
def _items_table(data: Any, id_column: str) -> tuple[Any, list[str], Any]:
    import polars as pl

    from modalrec.data.dataset import Dataset

    if isinstance(data, Dataset):
        if data.items is None:
            raise ConfigError(f"dataset {data.name!r} has no item table to encode")
        ids = [str(i) for i in data.item_ids]
        return data.items, ids, data
    if isinstance(data, pl.DataFrame):
        col = id_column if id_column in data.columns else data.columns[0]
        return data, [str(i) for i in data[col].to_list()], None
    raise ConfigError(f"expected a Dataset or a polars DataFrame of items, got {type(data).__name__}")


def resolve_modalities(
    items: Any, dataset: Any, modalities: Mapping[str, Any] | Sequence[str] | None
) -> list[ModalitySpec]:
    """Turn a modalities configuration into :class:`ModalitySpec` objects.

    ``modalities`` maps a modality name to an encoder name, an options dict
    (``{"encoder": "efficientnet", "column": "poster", "image_size": 224}``; text takes
    ``"fields"``), or an encoder object. A list of names, or None, means defaults: the dataset's
    text fields and media columns with the default encoder of each modality.
    """
    text_fields = list(getattr(dataset, "text_fields", []) or [])
    media = dict(getattr(dataset, "media_columns", {}) or {})
    if modalities is None:
        modalities = (["text"] if text_fields else []) + list(media)
        if not modalities:
            raise ConfigError("nothing to encode: the items have no text fields or media columns")
    if not isinstance(modalities, Mapping):
        modalities = {m: {} for m in modalities}
    specs = []
    for modality, cfg in modalities.items():
        spec = _spec_from_config(modality, cfg)
        _resolve_source(spec, items, text_fields, media)
        specs.append(spec)
    return specs


def _spec_from_config(modality: str, cfg: Any) -> ModalitySpec:
    """The encoder (built from its name and options, or given as an object) and the source options."""
    column = fields = None
    sep = TEXT_SEP
    if isinstance(cfg, str):
        cfg = {"encoder": cfg}
    if isinstance(cfg, Mapping):
        cfg = dict(cfg)
        column = cfg.pop("column", None)
        fields = cfg.pop("fields", None)
        sep = cfg.pop("sep", TEXT_SEP)
        cfg.pop("modality", None)
        given = cfg.get("encoder")
        if given is not None and not isinstance(given, str):
            enc = given  # an encoder object, with column / fields next to it
        else:
            name = canonical_name(given or default_encoder_name(modality))
            enc = build_encoder({**cfg, "encoder": name})
    else:
        enc = cfg
    return ModalitySpec(modality, enc, column, fields, sep)


def _resolve_source(spec: ModalitySpec, items: Any, text_fields: list[str], media: dict[str, str]) -> None:
    """Fill in where the spec's input comes from: text fields for a text encoder without a column
    (the dataset's, else every string column but the first), else a media column; check they exist.
    """
    modality = spec.modality
    if getattr(spec.encoder, "modality", "") == "text" and spec.column is None:
        fields = list(spec.fields or text_fields)
        if not fields:
            fields = [c for c, t in items.schema.items() if str(t) in ("String", "Utf8")][1:]
        bad = [f for f in fields if f not in items.columns]
        if bad:
            raise ConfigError(f"modality {modality!r}: text fields not in the item table: {bad}")
        spec.fields = fields
    elif getattr(spec.encoder, "name", "") != "npy-matrix":
        column = spec.column or media.get(modality) or (modality if modality in items.columns else None)
        if column is None or column not in items.columns:
            raise ConfigError(
                f"modality {modality!r}: no column with its media; set column = ... "
                f"(item table columns: {items.columns})"
            )
        spec.column = column


def _refs(items: Any, spec: ModalitySpec, base_dir: Path | None) -> list[Any]:
    import polars as pl

    if spec.fields is not None:
        parts = [items[c].cast(pl.Utf8).fill_null("").to_list() for c in spec.fields]
        return [spec.sep.join(p.strip() for p in row if p and p.strip()) for row in zip(*parts, strict=True)]
    if spec.column is None:  # npy-matrix: row numbers
        return list(range(len(items)))
    vals = items[spec.column].to_list()
    if base_dir is None:
        return vals
    out = []
    for v in vals:
        if isinstance(v, str) and v and "://" not in v and not os.path.isabs(v):
            v = str(base_dir / v)
        out.append(v)
    return out


# ------------------------------------------------------------------------------------ one modality
@dataclass(frozen=True)
class _RunOptions:
    """How the contents not cached yet are encoded and how often they are written to the cache."""

    backend: str = "local"
    workers: int = 2
    shard_items: int = 256
    shard_seconds: float = 20.0
    ray_actors: int = 2
    ray_num_cpus: int | None = None


@dataclass
class _Work:
    """One modality's items against its cache: what is there and what is left to encode."""

    keys: list[str]  # every item's content key, in catalogue order
    todo_keys: list[str]  # the unique keys not cached yet, in order of first appearance
    todo_refs: list[Any]  # the first item reference with each of those keys
    n_todo_items: int  # items whose key is not cached (an item per duplicate)
    count: dict[str, int]  # items per key to encode: how far one result advances the progress bar

    @classmethod
    def plan(cls, keys: list[str], refs: list[Any], cache: VectorCache) -> _Work:
        todo_keys = [k for k in unique_in_order(keys) if k not in cache]
        first: dict[str, Any] = {}
        for k, r in zip(keys, refs, strict=True):
            first.setdefault(k, r)
        count = {k: 0 for k in todo_keys}
        for k in keys:
            if k in count:
                count[k] += 1
        n_todo_items = sum(1 for k in keys if k not in cache)
        return cls(keys, todo_keys, [first[k] for k in todo_keys], n_todo_items, count)


def _fit_if_needed(encoder: Any, refs: list[Any]) -> None:
    """Fit an encoder that learns from the corpus (TF-IDF, .npy dims) unless it is already fitted."""
    if hasattr(encoder, "fit") and (not getattr(encoder, "fitted", True) or not getattr(encoder, "dim", 0)):
        encoder.fit([r for r in refs if r is not None])


def _content_keys(encoder: Any, refs: list[Any], workers: int) -> list[str]:
    """Every item's content hash (file bytes are read in a thread pool)."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as ex:
        return list(ex.map(encoder.content_key, refs, chunksize=32))


class _ShardWriter:
    """Buffers batch results and writes them to the cache as one shard every ``shard_items`` items
    or ``shard_seconds``, so that a killed run loses at most that much work.

    Failures of the encoder itself (not of the content) are kept in ``transient`` for the report but
    not cached, so that the next run tries those items again.
    """

    def __init__(self, cache: VectorCache, shard_items: int, shard_seconds: float) -> None:
        self.cache = cache
        self.shard_items = shard_items
        self.shard_seconds = shard_seconds
        self.transient: dict[str, tuple[str, str]] = {}
        self._buf: list[BatchResult] = []
        self._last_flush = time.perf_counter()

    def add(self, res: BatchResult) -> None:
        self._buf.append(res)

    def flush_if_due(self) -> None:
        if (
            sum(len(r.keys) for r in self._buf) >= self.shard_items
            or time.perf_counter() - self._last_flush > self.shard_seconds
        ):
            self.flush()

    def flush(self) -> None:
        rows = [
            (k, r.vectors[j], r.ok[j], r.reasons[j], r.details[j])
            for r in self._buf
            for j, k in enumerate(r.keys)
            if r.ok[j] or r.reasons[j] != ENCODER_ERROR
        ]
        for r in self._buf:
            for j, k in enumerate(r.keys):
                if not r.ok[j] and r.reasons[j] == ENCODER_ERROR:
                    self.transient[k] = (r.reasons[j], r.details[j])
        if rows:
            self.cache.put(
                [x[0] for x in rows],
                np.stack([x[1] for x in rows]),
                [x[2] for x in rows],
                [x[3] for x in rows],
                [x[4] for x in rows],
            )
        self._buf.clear()
        self._last_flush = time.perf_counter()


def _encode_missing(
    encoder: Any, work: _Work, cache: VectorCache, opts: _RunOptions, advance: Callable[[int], None]
) -> dict[str, tuple[str, str]]:
    """Encode the contents not cached yet into the cache; returns the encoder failures (not cached)."""
    if not work.todo_keys:
        return {}
    results = encode_batches(
        opts.backend,
        encoder,
        work.todo_refs,
        work.todo_keys,
        workers=opts.workers,
        ray_actors=opts.ray_actors,
        chunk=opts.shard_items,
        ray_num_cpus=opts.ray_num_cpus,
    )
    writer = _ShardWriter(cache, opts.shard_items, opts.shard_seconds)
    try:
        for res in results:
            writer.add(res)
            advance(sum(work.count[k] for k in res.keys))
            writer.flush_if_due()
    finally:  # also on Ctrl-C: keep every finished batch, the next run resumes after them
        writer.flush()
    cache.compact()
    return writer.transient


def _assemble(
    spec: ModalitySpec,
    refs: list[Any],
    item_ids: list[str],
    work: _Work,
    cache: VectorCache,
    transient: Mapping[str, tuple[str, str]],
    backend: str,
) -> tuple[np.ndarray, np.ndarray, ModalityReport]:
    """The catalogue-order matrix and presence mask from the cache, and the modality's report."""
    enc = spec.encoder
    n = len(refs)
    x = np.zeros((n, enc.dim), dtype=np.float32)
    mask = np.zeros(n, dtype=bool)
    rep = ModalityReport(
        modality=spec.modality, encoder=enc.name, version=enc.version, dim=enc.dim, items=n, backend=backend
    )
    rep.encoded = len(work.todo_keys)
    rep.cached = n - work.n_todo_items
    for i, k in enumerate(work.keys):
        row = cache.get(k)
        if row is not None and row.ok and row.vector is not None:
            x[i] = row.vector
            mask[i] = True
            continue
        if row is not None:
            reason, detail = row.reason, row.detail
        else:
            reason, detail = transient.get(k, (ENCODER_ERROR, "no result recorded"))
        rep.missing_by_reason[reason] = rep.missing_by_reason.get(reason, 0) + 1
        rep.problems.append(
            {"item_id": item_ids[i], "reason": reason, "detail": detail, "ref": describe_ref(refs[i])[:200]}
        )
    rep.present = int(mask.sum())
    return x, mask, rep


def encode_modality(
    spec: ModalitySpec,
    refs: list[Any],
    item_ids: list[str],
    cache_root: Path,
    *,
    backend: str = "local",
    workers: int = 2,
    shard_items: int = 256,
    shard_seconds: float = 20.0,
    ray_actors: int = 2,
    ray_num_cpus: int | None = None,
    advance: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, ModalityReport]:
    """Encode one modality; returns (float32 matrix, presence mask, report).

    Steps: fit the encoder if it learns from the corpus, hash every item's content, look the hashes
    up in the encoder's cache, encode the unique contents not cached yet with ``backend`` (written
    to the cache shard by shard), then read every item's vector or failure reason from the cache.
    """
    t0 = time.perf_counter()
    opts = _RunOptions(backend, workers, shard_items, shard_seconds, ray_actors, ray_num_cpus)
    enc = spec.encoder
    advance = advance or (lambda n: None)
    _fit_if_needed(enc, refs)
    keys = _content_keys(enc, refs, workers)
    cache = VectorCache(cache_root, enc.cache_id, enc.dim)
    work = _Work.plan(keys, refs, cache)
    advance(len(keys) - work.n_todo_items)
    transient = _encode_missing(enc, work, cache, opts, advance)
    x, mask, rep = _assemble(spec, refs, item_ids, work, cache, transient, backend)
    rep.seconds = time.perf_counter() - t0
    return x, mask, rep


# ------------------------------------------------------------------------------------ main entry
def encode_dataset(
    data: Any,
    modalities: Mapping[str, Any] | Sequence[str] | None = None,
    out_dir: str | Path | None = None,
    *,
    backend: str = "local",
    progress: bool = True,
    cache_dir: str | Path | None = None,
    workers: int = 2,
    shard_items: int = 256,
    ray_actors: int = 2,
    ray_num_cpus: int | None = None,
    base_dir: str | Path | None = None,
    id_column: str = "item_id",
    apply: bool = True,
) -> FeatureSet:
    """Encode every modality of a catalogue into a :class:`FeatureSet` (matrices + masks + report).

    Args:
        data: a :class:`~modalrec.data.Dataset` (its ``items`` table, ``text_fields`` and
            ``media_columns`` are used) or a polars DataFrame of items (ids in ``id_column``).
        modalities: ``{modality: encoder name | options dict | encoder}``; None = the dataset's
            text fields + media columns with default encoders (text: MiniLM, image:
            EfficientNet-Lite0, audio: log-mel statistics, video: frames). Options dicts take
            ``encoder``, ``column`` (media column) or ``fields`` (text), plus encoder options.
        out_dir: where ``features/`` (``<m>.npy``, ``<m>.mask.npy``, ``manifest.json``),
            ``encode_report.{json,md}`` and, unless ``cache_dir`` is given, ``cache/`` go.
            None: nothing is written and a temporary cache is used.
        backend: "local" (threads) or "ray" (Ray Data actor pool of ``ray_actors`` actors).
        progress: show a rich progress bar per modality.
        cache_dir: shared vector cache (e.g. ``~/.cache/modalrec``) reused across runs.
        workers: decoding threads (local backend).
        shard_items: items per cache shard: the most work a kill can lose.
        base_dir: resolves relative media paths.
        apply: for a Dataset, also fill ``data.features`` / ``data.feature_masks`` and add the
            missing items to ``data.report``.

    Example (TF-IDF needs no model; a catalogue with one empty text):

    >>> import polars as pl, tempfile
    >>> items = pl.DataFrame({"item_id": ["a", "b", "c", "d"],
    ...                       "title": ["red wool chair", "blue steel lamp", "", "red lamp"]})
    >>> out = tempfile.mkdtemp()
    >>> fs = encode_dataset(items, {"text": {"encoder": "tfidf", "fields": ["title"], "dim": 2}},
    ...                     out, progress=False)
    >>> fs.features["text"].shape, fs.masks["text"].tolist()
    ((4, 2), [True, True, False, True])
    >>> fs.report.missing_by_reason()
    {'empty text': 1}
    >>> again = encode_dataset(items, {"text": {"encoder": "tfidf", "fields": ["title"], "dim": 2}},
    ...                        out, progress=False)
    >>> again.report.modalities["text"].encoded, again.report.modalities["text"].cached
    (0, 4)
    """
    items, item_ids, dataset = _items_table(data, id_column)
    specs = resolve_modalities(items, dataset, modalities)
    out = Path(out_dir) if out_dir is not None else None
    encode_one = functools.partial(
        encode_modality,
        backend=backend,
        workers=workers,
        shard_items=shard_items,
        ray_actors=ray_actors,
        ray_num_cpus=ray_num_cpus,
    )
    with _cache_root(cache_dir, out) as cache_root:
        base = Path(base_dir) if base_dir is not None else None
        fs = _encode_all(items, item_ids, specs, base, cache_root, encode_one, progress)
    if out is not None:
        _write_outputs(fs, out)
    if dataset is not None and apply:
        _apply_to_dataset(fs, dataset, specs)
    return fs


@contextlib.contextmanager
def _cache_root(cache_dir: str | Path | None, out: Path | None) -> Iterator[Path]:
    """``cache_dir``, else ``<out>/cache``, else a temporary directory removed afterwards."""
    if cache_dir is not None:
        yield Path(cache_dir)
    elif out is not None:
        yield out / "cache"
    else:
        tmp_cache = tempfile.mkdtemp(prefix="modalrec-cache-")
        try:
            yield Path(tmp_cache)
        finally:
            shutil.rmtree(tmp_cache, ignore_errors=True)


def _encode_all(
    items: Any,
    item_ids: list[str],
    specs: list[ModalitySpec],
    base: Path | None,
    cache_root: Path,
    encode_one: Callable[..., tuple[np.ndarray, np.ndarray, ModalityReport]],
    progress: bool,
) -> FeatureSet:
    """Every modality in turn, each with its progress bar, gathered into one :class:`FeatureSet`."""
    fs = FeatureSet(item_ids=np.asarray(item_ids, dtype=str))
    with Progress(progress) as prog:
        for spec in specs:
            refs = _refs(items, spec, base)
            advance = prog.task(f"{spec.modality} ({spec.encoder.name})", len(refs))
            x, mask, rep = encode_one(spec, refs, item_ids, cache_root, advance=advance)
            fs.features[spec.modality] = x
            fs.masks[spec.modality] = mask
            fs.encoders[spec.modality] = {
                "encoder": spec.encoder.name,
                "version": spec.encoder.version,
                "source": spec.column if spec.fields is None else spec.fields,
                **json_spec(spec.encoder),
            }
            fs.report.modalities[spec.modality] = rep
    return fs


def _write_outputs(fs: FeatureSet, out: Path) -> None:
    fs.save(out / "features")
    atomic_write_json(out / "encode_report.json", fs.report.as_dict())
    atomic_write_text(out / "encode_report.md", fs.report.to_markdown())


def _apply_to_dataset(fs: FeatureSet, dataset: Any, specs: list[ModalitySpec]) -> None:
    """Fill the dataset's features and masks and add each modality's missing items to its report."""
    fs.apply(dataset)
    for m, rep in fs.report.modalities.items():
        for reason, c in rep.missing_by_reason.items():
            dataset.report.add(
                f"{m} missing: {reason}",
                str(next((s.column for s in specs if s.modality == m), m) or m),
                count=c,
                examples=[p["item_id"] for p in rep.problems if p["reason"] == reason][:5],
            )


def json_spec(encoder: Any) -> dict[str, Any]:
    """``{"spec": encoder.to_spec()}`` when that spec is plain JSON, else ``{}``.

    Why: ``modalrec search`` rebuilds the run's own text encoder from this spec to embed a query in
    the space the run's text vectors came from (MiniLM, character n-grams...). Fitted encoders whose
    state holds arrays (TF-IDF) are not recorded; search then falls back to MiniLM.
    """
    import json

    try:
        spec = encoder.to_spec()
        json.dumps(spec)
    except (TypeError, ValueError, AttributeError):
        return {}
    return {"spec": spec}

"""Encode a catalogue's items in every modality: cached, resumable, robust, local or on Ray.

:func:`encode_dataset` is what ``modalrec encode`` and ``modalrec demo`` call. Per modality it

1. builds the encoder and the items' references (joined text fields, or a media column);
2. hashes every item's content and looks the hashes up in the encoder's :class:`VectorCache`;
3. encodes only the unique contents not cached yet, in batches, decoding in a thread pool while
   the model runs (or in a Ray Data actor pool with ``backend="ray"``), writing a cache shard
   atomically every few hundred items (so a killed run resumes where it stopped);
4. assembles a float32 matrix and a presence mask in catalogue order; bad content (missing,
   corrupt, truncated, zero-length files, empty text, NaN rows) is marked missing with a reason.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modalrec.core.errors import ConfigError, ModalrecError
from modalrec.core.io import atomic_write_json, atomic_write_text
from modalrec.encoders.base import (
    ENCODER_ERROR,
    NON_FINITE,
    ContentError,
    describe_ref,
)
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
        if getattr(enc, "modality", "") == "text" and column is None:
            fields = list(fields or text_fields)
            if not fields:
                fields = [c for c, t in items.schema.items() if str(t) in ("String", "Utf8")][1:]
            bad = [f for f in fields if f not in items.columns]
            if bad:
                raise ConfigError(f"modality {modality!r}: text fields not in the item table: {bad}")
        elif getattr(enc, "name", "") != "npy-matrix":
            column = column or media.get(modality) or (modality if modality in items.columns else None)
            if column is None or column not in items.columns:
                raise ConfigError(
                    f"modality {modality!r}: no column with its media; set column = ... "
                    f"(item table columns: {items.columns})"
                )
        specs.append(ModalitySpec(modality, enc, column, fields, sep))
    return specs


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


# ------------------------------------------------------------------------------------ progress
class _Progress:
    """A rich progress bar per modality (items/s, ETA), or nothing."""

    def __init__(self, enabled: bool) -> None:
        self._p: Any = None
        if enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._p = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                transient=False,
            )

    def __enter__(self) -> _Progress:
        if self._p is not None:
            self._p.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._p is not None:
            self._p.__exit__(*exc)

    def task(self, description: str, total: int) -> Callable[[int], None]:
        if self._p is None:
            return lambda n: None
        tid = self._p.add_task(description, total=total, rate="")
        start = time.perf_counter()
        done = [0]

        def advance(n: int) -> None:
            done[0] += n
            dt = time.perf_counter() - start
            rate = f"{done[0] / dt:,.1f} items/s" if dt > 0 else ""
            self._p.update(tid, advance=n, rate=rate)

        return advance


# ------------------------------------------------------------------------------------ encoding loops
@dataclass
class _Result:
    keys: list[str]
    vectors: np.ndarray
    ok: list[bool]
    reasons: list[str]
    details: list[str]


def _safe_load(encoder: Any, ref: Any) -> tuple[bool, Any]:
    try:
        return True, encoder.load(ref)
    except ContentError as e:
        return False, (e.reason, e.detail)
    except Exception as e:  # a decoder bug on odd input must not stop the run
        return False, (ENCODER_ERROR, f"{type(e).__name__}: {e}")


def encode_loaded(encoder: Any, keys: list[str], loaded: list[tuple[bool, Any]]) -> _Result:
    """Encode one batch of load results; failures and non-finite rows become missing rows."""
    dim = encoder.dim
    vecs = np.zeros((len(keys), dim), dtype=np.float32)
    ok = [flag for flag, _ in loaded]
    reasons = ["" if flag else obj[0] for flag, obj in loaded]
    details = ["" if flag else obj[1] for flag, obj in loaded]
    good = [i for i, flag in enumerate(ok) if flag]
    if good:
        try:
            out = encoder.encode([loaded[i][1] for i in good])
            vecs[good] = out
        except ModalrecError:
            raise  # e.g. the model's package is missing: a setup problem, not one item's content
        except Exception:
            for i in good:  # isolate the item that breaks the batch
                try:
                    vecs[i] = encoder.encode([loaded[i][1]])[0]
                except ModalrecError:
                    raise
                except Exception as e:
                    ok[i], reasons[i], details[i] = False, ENCODER_ERROR, f"{type(e).__name__}: {e}"
    for i in good:
        if ok[i] and not np.isfinite(vecs[i]).all():
            ok[i], reasons[i], details[i] = False, NON_FINITE, "encoder output has NaN or inf"
            vecs[i] = 0.0
    return _Result(keys, vecs, ok, reasons, details)


def _batch_size(encoder: Any) -> int:
    if getattr(encoder, "modality", "") == "text":
        return 512  # the sentence encoder sorts by length inside a call; bigger calls pad less
    return max(1, int(getattr(encoder, "batch_size", 16)))


def _encode_local(encoder: Any, refs: list[Any], keys: list[str], workers: int) -> Iterator[_Result]:
    """Batches of results; loading runs ``2`` batches ahead in a thread pool."""
    bs = _batch_size(encoder)
    n = len(refs)
    if workers <= 0:
        for s in range(0, n, bs):
            loaded = [_safe_load(encoder, r) for r in refs[s : s + bs]]
            yield encode_loaded(encoder, keys[s : s + bs], loaded)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="modalrec-load") as ex:
        queue: deque[Any] = deque()
        nxt = 0
        ahead = 2 * bs + bs

        def fill() -> None:
            nonlocal nxt
            while nxt < n and len(queue) < ahead:
                queue.append(ex.submit(_safe_load, encoder, refs[nxt]))
                nxt += 1

        fill()
        start = 0
        while queue:
            m = min(bs, len(queue))
            loaded = [queue.popleft().result() for _ in range(m)]
            fill()
            yield encode_loaded(encoder, keys[start : start + m], loaded)
            start += m


class _RayEncodeActor:
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
        res = encode_loaded(self.encoder, keys, [_safe_load(self.encoder, r) for r in refs])
        return {
            "i": np.asarray(batch["i"], dtype=np.int64),
            "vec": res.vectors,
            "ok": np.asarray(res.ok, dtype=bool),
            "reason": np.asarray(res.reasons, dtype=str),
            "detail": np.asarray([d[:300] for d in res.details], dtype=str),
        }


def _unwrap(r: Any) -> Any:
    return r.item() if isinstance(r, np.generic) else r


def _ray_init(num_cpus: int | None) -> None:
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=num_cpus or os.cpu_count() or 2,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )


def _encode_ray(
    encoder: Any, refs: list[Any], keys: list[str], actors: int, chunk: int, num_cpus: int | None
) -> Iterator[_Result]:
    # Ray Data logs every dataset execution at INFO to the console; our progress bar says enough.
    os.environ.setdefault("RAY_DATA_LOG_LEVEL", "WARNING")
    try:
        import ray
    except ImportError:
        raise ConfigError("backend 'ray' needs Ray Data: pip install 'ray[data]'") from None
    _ray_init(num_cpus)
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # no per-dataset INFO lines in our CLI
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.execution_options.preserve_order = True
    rows = [
        {"i": i, "key": k, "ref": "" if r is None else str(r), "null": r is None}
        for i, (r, k) in enumerate(zip(refs, keys, strict=True))
    ]
    ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 4 * actors)))
    bs = _batch_size(encoder) if getattr(encoder, "modality", "") != "text" else 64
    out = ds.map_batches(
        _RayEncodeActor,
        fn_constructor_kwargs={"spec": encoder.to_spec(), "dim": encoder.dim},
        batch_size=bs,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=1,
    )
    for b in out.iter_batches(batch_size=chunk, batch_format="numpy"):
        idx = b["i"].tolist()
        yield _Result(
            [keys[i] for i in idx],
            np.asarray(b["vec"], dtype=np.float32).reshape(len(idx), encoder.dim),
            [bool(x) for x in b["ok"]],
            [str(x) for x in b["reason"]],
            [str(x) for x in b["detail"]],
        )


# ------------------------------------------------------------------------------------ main entry
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
    """Encode one modality; returns (float32 matrix, presence mask, report)."""
    t0 = time.perf_counter()
    enc = spec.encoder
    advance = advance or (lambda n: None)
    if hasattr(enc, "fit") and (not getattr(enc, "fitted", True) or not getattr(enc, "dim", 0)):
        enc.fit([r for r in refs if r is not None])
    with ThreadPoolExecutor(max_workers=max(1, workers)) as ex:
        keys = list(ex.map(enc.content_key, refs, chunksize=32))
    cache = VectorCache(cache_root, enc.cache_id, enc.dim)
    todo_keys = [k for k in unique_in_order(keys) if k not in cache]
    first: dict[str, Any] = {}
    for k, r in zip(keys, refs, strict=True):
        first.setdefault(k, r)
    todo_refs = [first[k] for k in todo_keys]
    n_todo_items = sum(1 for k in keys if k not in cache)
    advance(len(keys) - n_todo_items)
    count = {k: 0 for k in todo_keys}
    for k in keys:
        if k in count:
            count[k] += 1

    transient: dict[str, tuple[str, str]] = {}
    if todo_keys:
        if backend == "local":
            results = _encode_local(enc, todo_refs, todo_keys, workers)
        elif backend == "ray":
            results = _encode_ray(enc, todo_refs, todo_keys, ray_actors, shard_items, ray_num_cpus)
        else:
            raise ConfigError(f"unknown backend {backend!r}; expected 'local' or 'ray'")
        buf: list[_Result] = []
        last_flush = time.perf_counter()

        def flush() -> None:
            nonlocal last_flush
            # Failures of the encoder itself (not of the content) are reported but not cached,
            # so that the next run tries those items again.
            rows = [
                (k, r.vectors[j], r.ok[j], r.reasons[j], r.details[j])
                for r in buf
                for j, k in enumerate(r.keys)
                if r.ok[j] or r.reasons[j] != ENCODER_ERROR
            ]
            for r in buf:
                for j, k in enumerate(r.keys):
                    if not r.ok[j] and r.reasons[j] == ENCODER_ERROR:
                        transient[k] = (r.reasons[j], r.details[j])
            if rows:
                cache.put(
                    [x[0] for x in rows],
                    np.stack([x[1] for x in rows]),
                    [x[2] for x in rows],
                    [x[3] for x in rows],
                    [x[4] for x in rows],
                )
            buf.clear()
            last_flush = time.perf_counter()

        try:
            for res in results:
                buf.append(res)
                advance(sum(count[k] for k in res.keys))
                if (
                    sum(len(r.keys) for r in buf) >= shard_items
                    or time.perf_counter() - last_flush > shard_seconds
                ):
                    flush()
        finally:  # also on Ctrl-C: keep every finished batch, the next run resumes after them
            flush()
        cache.compact()

    n = len(refs)
    x = np.zeros((n, enc.dim), dtype=np.float32)
    mask = np.zeros(n, dtype=bool)
    rep = ModalityReport(
        modality=spec.modality, encoder=enc.name, version=enc.version, dim=enc.dim, items=n, backend=backend
    )
    rep.encoded = len(todo_keys)
    rep.cached = n - n_todo_items
    for i, k in enumerate(keys):
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
    rep.seconds = time.perf_counter() - t0
    return x, mask, rep


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
    tmp_cache = None
    if cache_dir is not None:
        cache_root = Path(cache_dir)
    elif out is not None:
        cache_root = out / "cache"
    else:
        tmp_cache = tempfile.mkdtemp(prefix="modalrec-cache-")
        cache_root = Path(tmp_cache)
    base = Path(base_dir) if base_dir is not None else None
    fs = FeatureSet(item_ids=np.asarray(item_ids, dtype=str))
    try:
        with _Progress(progress) as prog:
            for spec in specs:
                refs = _refs(items, spec, base)
                advance = prog.task(f"{spec.modality} ({spec.encoder.name})", len(refs))
                x, mask, rep = encode_modality(
                    spec,
                    refs,
                    item_ids,
                    cache_root,
                    backend=backend,
                    workers=workers,
                    shard_items=shard_items,
                    ray_actors=ray_actors,
                    ray_num_cpus=ray_num_cpus,
                    advance=advance,
                )
                fs.features[spec.modality] = x
                fs.masks[spec.modality] = mask
                fs.encoders[spec.modality] = {
                    "encoder": spec.encoder.name,
                    "version": spec.encoder.version,
                    "source": spec.column if spec.fields is None else spec.fields,
                    **json_spec(spec.encoder),
                }
                fs.report.modalities[spec.modality] = rep
    finally:
        if tmp_cache is not None:
            shutil.rmtree(tmp_cache, ignore_errors=True)
    if out is not None:
        fs.save(out / "features")
        atomic_write_json(out / "encode_report.json", fs.report.as_dict())
        atomic_write_text(out / "encode_report.md", fs.report.to_markdown())
    if dataset is not None and apply:
        fs.apply(dataset)
        for m, rep in fs.report.modalities.items():
            for reason, c in rep.missing_by_reason.items():
                dataset.report.add(
                    f"{m} missing: {reason}",
                    str(next((s.column for s in specs if s.modality == m), m) or m),
                    count=c,
                    examples=[p["item_id"] for p in rep.problems if p["reason"] == reason][:5],
                )
    return fs


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

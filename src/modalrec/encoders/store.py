"""Feature store: a content-addressed vector cache per encoder, and the per-run :class:`FeatureSet`.

Why content addressing: an item's vector depends only on its content and on the encoder (name +
version), so the cache key is ``hash(content)`` inside a directory per ``name-version``. Re-running
after editing three texts encodes three texts; renaming items or reordering the catalogue costs
nothing; a new encoder version starts a fresh directory instead of mixing vectors.

Why shards: the cache is a set of immutable ``shard-*.npz`` files, each written atomically (temp
file, fsync, rename) after a few hundred items. A run killed with SIGKILL loses at most the shard
in progress, never corrupts an old one, and the next run encodes only what is not in any shard.
Shards hold plain arrays (keys and reasons as fixed-width unicode), read with
``allow_pickle=False``.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modalrec.core.io import atomic_path, atomic_save_npy, atomic_write_json

STALE_TMP_SECONDS = 3600.0


@dataclass
class CachedRow:
    vector: np.ndarray | None  # None when the item failed (ok=False)
    ok: bool
    reason: str = ""
    detail: str = ""


class VectorCache:
    """Vectors of one encoder (``cache_id``) keyed by content hash, stored as atomic shards.

    >>> import tempfile
    >>> c = VectorCache(tempfile.mkdtemp(), "toy-1", dim=2)
    >>> _ = c.put(["k1", "k2"], np.array([[1, 2], [0, 0]], np.float32), [True, False], ["", "corrupt file"])
    >>> c2 = VectorCache(c.root.parent, "toy-1", dim=2)  # a new process sees the same rows
    >>> c2.get("k1").vector.tolist(), c2.get("k2").reason, c2.get("k3")
    ([1.0, 2.0], 'corrupt file', None)
    """

    def __init__(self, root: str | Path, cache_id: str, dim: int) -> None:
        self.root = Path(root) / cache_id
        self.cache_id = cache_id
        self.dim = int(dim)
        self._rows: dict[str, CachedRow] = {}
        self._shards: list[Path] = []
        self._load()

    # ------------------------------------------------------------------ reading
    def _load(self) -> None:
        if not self.root.is_dir():
            return
        now = time.time()
        for p in self.root.iterdir():
            # Temp files of a killed writer: never read; removed once clearly abandoned.
            if p.name.endswith(".tmp"):
                try:
                    if now - p.stat().st_mtime > STALE_TMP_SECONDS:
                        p.unlink()
                except OSError:
                    pass
        for p in sorted(self.root.glob("shard-*.npz")):
            try:
                with np.load(p, allow_pickle=False) as z:
                    keys, vecs, ok = z["keys"], z["vectors"], z["ok"]
                    reasons, details = z["reasons"], z["details"]
            except Exception:  # an unreadable shard (disk trouble): ignore it, its items get re-encoded
                continue
            if vecs.ndim != 2 or vecs.shape[1] != self.dim:
                continue
            for i, k in enumerate(keys.tolist()):
                good = bool(ok[i])
                self._rows[k] = CachedRow(vecs[i] if good else None, good, str(reasons[i]), str(details[i]))
            self._shards.append(p)

    def __contains__(self, key: str) -> bool:
        return key in self._rows

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, key: str) -> CachedRow | None:
        return self._rows.get(key)

    @property
    def n_shards(self) -> int:
        return len(self._shards)

    # ------------------------------------------------------------------ writing
    def put(
        self,
        keys: Sequence[str],
        vectors: np.ndarray,
        ok: Sequence[bool],
        reasons: Sequence[str],
        details: Sequence[str] | None = None,
    ) -> Path | None:
        """Write one new shard atomically and add its rows to the in-memory index."""
        if not keys:
            return None
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(keys), self.dim)
        ok_arr = np.asarray(ok, dtype=bool)
        details = list(details) if details is not None else [""] * len(keys)
        details = [d[:300] for d in details]
        self.root.mkdir(parents=True, exist_ok=True)
        target = self.root / f"shard-{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}.npz"
        with atomic_path(target) as tmp, open(tmp, "wb") as f:
            np.savez(
                f,
                keys=np.asarray(list(keys), dtype=str),
                vectors=vectors,
                ok=ok_arr,
                reasons=np.asarray(list(reasons), dtype=str),
                details=np.asarray(details, dtype=str),
            )
        for i, k in enumerate(keys):
            good = bool(ok_arr[i])
            self._rows[k] = CachedRow(vectors[i] if good else None, good, reasons[i], details[i])
        self._shards.append(target)
        return target

    def compact(self, min_shards: int = 8) -> None:
        """Merge many small shards into one (write the merged shard first, then delete the old ones).

        A crash in between leaves duplicate rows with identical content, which is harmless.
        """
        if len(self._shards) < min_shards:
            return
        old = list(self._shards)
        keys = list(self._rows)
        vecs = np.zeros((len(keys), self.dim), dtype=np.float32)
        for i, k in enumerate(keys):
            r = self._rows[k]
            if r.ok and r.vector is not None:
                vecs[i] = r.vector
        self._shards = []
        self.put(
            keys,
            vecs,
            [self._rows[k].ok for k in keys],
            [self._rows[k].reason for k in keys],
            [self._rows[k].detail for k in keys],
        )
        for p in old:
            with contextlib.suppress(OSError):
                p.unlink()


# ---------------------------------------------------------------------------------------- results
@dataclass
class ModalityReport:
    """What happened to one modality in one run."""

    modality: str
    encoder: str
    version: str
    dim: int
    items: int = 0
    present: int = 0
    encoded: int = 0  # newly encoded in this run (unique contents)
    cached: int = 0  # items whose vector came from the cache
    seconds: float = 0.0
    backend: str = "local"
    missing_by_reason: dict[str, int] = field(default_factory=dict)
    problems: list[dict[str, str]] = field(default_factory=list)  # item_id, reason, detail, ref

    @property
    def missing(self) -> int:
        return self.items - self.present

    def as_dict(self) -> dict[str, Any]:
        return {
            "modality": self.modality,
            "encoder": self.encoder,
            "version": self.version,
            "dim": self.dim,
            "items": self.items,
            "present": self.present,
            "missing": self.missing,
            "encoded": self.encoded,
            "cached": self.cached,
            "seconds": round(self.seconds, 3),
            "backend": self.backend,
            "missing_by_reason": dict(self.missing_by_reason),
            "problems": list(self.problems),
        }


@dataclass
class EncodeReport:
    """Per-modality summaries plus every item that was marked missing, with its reason."""

    modalities: dict[str, ModalityReport] = field(default_factory=dict)

    def missing_by_reason(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for m in self.modalities.values():
            for r, c in m.missing_by_reason.items():
                out[r] = out.get(r, 0) + c
        return out

    def summary_rows(self) -> list[dict[str, Any]]:
        """One row per modality for the CLI's summary table."""
        return [
            {
                "modality": m.modality,
                "encoder": f"{m.encoder} {m.version}",
                "items": m.items,
                "dim": m.dim,
                "missing": m.missing,
                "encoded": m.encoded,
                "cached": m.cached,
                "seconds": round(m.seconds, 2),
            }
            for m in self.modalities.values()
        ]

    def as_dict(self) -> dict[str, Any]:
        return {
            "missing_by_reason": self.missing_by_reason(),
            "modalities": {k: v.as_dict() for k, v in self.modalities.items()},
        }

    def to_markdown(self, max_problems: int = 50) -> str:
        lines = [
            "# Encoding report",
            "",
            "| modality | encoder | items | dim | missing | encoded | cached | seconds |",
        ]
        lines.append("|---|---|---|---|---|---|---|---|")
        for r in self.summary_rows():
            lines.append(
                f"| {r['modality']} | {r['encoder']} | {r['items']} | {r['dim']} | {r['missing']} "
                f"| {r['encoded']} | {r['cached']} | {r['seconds']} |"
            )
        lines.append("")
        by_reason = self.missing_by_reason()
        if by_reason:
            lines += ["## Missing by reason", "", "| modality | reason | items |", "|---|---|---|"]
            for m in self.modalities.values():
                for reason, c in sorted(m.missing_by_reason.items(), key=lambda kv: -kv[1]):
                    lines.append(f"| {m.modality} | {reason} | {c} |")
            lines.append("")
            lines += [
                "## Items marked missing",
                "",
                "| modality | item | reason | detail |",
                "|---|---|---|---|",
            ]
            for m in self.modalities.values():
                for p in m.problems[:max_problems]:
                    detail = p.get("detail", "").replace("|", "/")
                    lines.append(f"| {m.modality} | {p['item_id']} | {p['reason']} | {detail} |")
                if len(m.problems) > max_problems:
                    lines.append(f"| {m.modality} | ... | {len(m.problems) - max_problems} more | |")
        else:
            lines.append("No item is missing any modality.")
        return "\n".join(lines) + "\n"


@dataclass
class FeatureSet:
    """Encoded features of a catalogue: per modality a float32 matrix and a presence mask.

    Rows follow ``item_ids``; a missing item has an all-zero row and ``False`` in its mask.
    """

    item_ids: np.ndarray
    features: dict[str, np.ndarray] = field(default_factory=dict)
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    encoders: dict[str, dict[str, Any]] = field(default_factory=dict)
    report: EncodeReport = field(default_factory=EncodeReport)

    def apply(self, dataset: Any) -> Any:
        """Put the features into ``dataset.features`` / ``dataset.feature_masks`` (rows re-ordered by id)."""
        ids = [str(i) for i in dataset.item_ids]
        if ids == [str(i) for i in self.item_ids]:
            order = np.arange(len(ids))
        else:
            pos = {str(i): k for k, i in enumerate(self.item_ids)}
            missing = [i for i in ids if i not in pos]
            if missing:
                from modalrec.core.errors import DataError

                raise DataError(f"{len(missing)} dataset items have no features, e.g. {missing[:3]}")
            order = np.array([pos[i] for i in ids])
        for m, x in self.features.items():
            dataset.features[m] = x[order]
            dataset.feature_masks[m] = self.masks[m][order]
        return dataset

    def save(self, directory: str | Path) -> Path:
        """Write ``<m>.npy``, ``<m>.mask.npy``, ``item_ids.npy`` and ``manifest.json`` atomically."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        atomic_save_npy(d / "item_ids.npy", np.asarray([str(i) for i in self.item_ids], dtype=str))
        for m, x in self.features.items():
            atomic_save_npy(d / f"{m}.npy", np.asarray(x, dtype=np.float32))
            atomic_save_npy(d / f"{m}.mask.npy", np.asarray(self.masks[m], dtype=bool))
        manifest = {
            "format": "modalrec-features/1",
            "n_items": len(self.item_ids),
            "modalities": {
                m: {
                    **self.encoders.get(m, {}),
                    "dim": int(x.shape[1]),
                    "present": int(self.masks[m].sum()),
                    "file": f"{m}.npy",
                    "mask": f"{m}.mask.npy",
                }
                for m, x in self.features.items()
            },
        }
        atomic_write_json(d / "manifest.json", manifest)
        return d

    @classmethod
    def load(cls, directory: str | Path) -> FeatureSet:
        d = Path(directory)
        manifest = json.loads((d / "manifest.json").read_text(encoding="utf-8"))
        ids = np.load(d / "item_ids.npy", allow_pickle=False)
        fs = cls(item_ids=ids)
        for m, info in manifest["modalities"].items():
            fs.features[m] = np.load(d / info["file"], allow_pickle=False)
            fs.masks[m] = np.load(d / info["mask"], allow_pickle=False)
            fs.encoders[m] = {k: v for k, v in info.items() if k not in ("file", "mask", "present")}
        report = d.parent / "encode_report.json"
        if report.is_file():
            fs.report = _report_from_dict(json.loads(report.read_text(encoding="utf-8")))
        return fs


def _report_from_dict(obj: dict[str, Any]) -> EncodeReport:
    rep = EncodeReport()
    for k, v in obj.get("modalities", {}).items():
        fields = {f: v[f] for f in ModalityReport.__dataclass_fields__ if f in v}
        rep.modalities[k] = ModalityReport(**fields)
    return rep


def unique_in_order(keys: Iterable[str]) -> list[str]:
    """Distinct keys, first occurrence order.

    >>> unique_in_order(["b", "a", "b"])
    ['b', 'a']
    """
    return list(dict.fromkeys(keys))

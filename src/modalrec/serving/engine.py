"""One loaded run directory, ready to answer: recommendations with feedback fold-in, similar items,
text search and item lookups.

Why a separate object: hot reload and A/B tests swap or pair whole engines; a request holds a
reference to the engine it started with, so swapping never disturbs it.

Fold-in (no retraining): for dot-product models the user's query vector becomes
``(1 - w) * stored + w * f`` with ``f`` the weighted mean of the item vectors of the user's feedback
(scaled to the stored vector's norm, negative events subtract), ``w = n / (n + prior)``. Users the
model never saw get ``f`` alone. For ItemKNN the feedback items are added to the user's history row
and rescored; for models with neither (e.g. popularity) feedback only removes the items from the list.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from modalrec.core.errors import ConfigError, DataError
from modalrec.serving.index import VectorIndex
from modalrec.serving.settings import ServeConfig
from modalrec.workflows.rundir import load_run, seen_matrix

log = logging.getLogger("modalrec.serving")

TextEncoderFn = Callable[[Sequence[str]], np.ndarray]
MEDIA_KINDS = ("image", "audio", "video")


def _l2(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class IdIndex:
    """String id -> dense index, answered by binary search over the sorted ids (a read-only mapping).

    Why not a dict: a dict of 5 million Python strings takes seconds to build and half a gigabyte
    in every server worker, while the ids are already held as one numpy array; ids that are sorted
    (synthetic and most exported catalogues) need no extra copy at all, others one argsort.

    >>> ix = IdIndex(np.array(["b", "a", "c"]))
    >>> ix["c"], ix.get("a"), ix.get("zz"), "b" in ix, len(ix)
    (2, 1, None, True, 3)
    """

    def __init__(self, ids: np.ndarray) -> None:
        self.ids = np.asarray(ids).astype(str, copy=False)
        n = len(self.ids)
        if n < 2 or bool(np.all(self.ids[1:] > self.ids[:-1])):
            self.order: np.ndarray | None = None
            self.sorted = self.ids
        else:
            self.order = np.argsort(self.ids, kind="stable")
            self.sorted = self.ids[self.order]

    def get(self, key: str, default: int | None = None) -> int | None:
        if not isinstance(key, str):
            return default
        j = int(np.searchsorted(self.sorted, key))
        if j >= len(self.sorted) or self.sorted[j] != key:
            return default
        return j if self.order is None else int(self.order[j])

    def __getitem__(self, key: str) -> int:
        i = self.get(key)
        if i is None:
            raise KeyError(key)
        return i

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def __len__(self) -> int:
        return len(self.ids)


def model_vectors(model: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """(user vectors, item vectors) of a model that scores by their inner product, else None.

    Embedding models store ``user_vectors``/``item_vectors``; ALS stores ``user_factors``/
    ``item_factors`` (its score is the same plain inner product), so it is served from the index too.
    """
    state = getattr(model, "_state", None) or {}
    for u_key, i_key in (("user_vectors", "item_vectors"), ("user_factors", "item_factors")):
        if u_key in state and i_key in state:
            return np.asarray(state[u_key]), np.asarray(state[i_key])
    return None


class Engine:
    """Serving view of a run directory (loaded and verified with :func:`modalrec.workflows.rundir.load_run`).

    ``index_cache``: folder where built HNSW indexes are kept between starts (the server passes
    ``state_dir/index-cache``); None builds every time.
    """

    def __init__(
        self,
        run_dir: str | Path,
        cfg: ServeConfig,
        *,
        encode_text: TextEncoderFn | None = None,
        index_cache: str | Path | None = None,
    ) -> None:
        t0 = time.perf_counter()
        self.cfg = cfg
        self.index_cache = Path(index_cache) if index_cache is not None else None
        self.timings: dict[str, float] = {}
        self.run = load_run(run_dir, verify=True)
        self.path = Path(run_dir).resolve()
        self.model = self.run.model
        self.model_name = str(self.model.name)
        self.timings["load_run_s"] = time.perf_counter() - t0
        self._init_catalogue(self.run.dataset)
        self._init_vectors()
        self._init_galleries(self.run.dataset, encode_text)
        t = time.perf_counter()
        # --- training score distribution (for drift alerts): top-1 model score of sampled users
        self.score_stats = self._score_stats()
        self.timings["score_stats_s"] = time.perf_counter() - t
        self.load_seconds = time.perf_counter() - t0
        log.info(
            "loaded run %s (%s, %d users x %d items) in %.2fs (%s); index %s",
            self.path,
            self.model_name,
            len(self.user_ids),
            len(self.item_ids),
            self.load_seconds,
            ", ".join(f"{k} {v:.2f}" for k, v in self.timings.items()),
            self.rec_index.report if self.rec_index else "none (model has no item vectors)",
        )

    def _init_catalogue(self, ds: Any) -> None:
        """Id maps, the seen/train matrices, popularity and the item table's display columns."""
        t = time.perf_counter()
        self.item_ids = np.asarray(ds.item_ids).astype(str)
        self.user_ids = np.asarray(ds.user_ids).astype(str)
        self.item_pos = IdIndex(self.item_ids)
        self.user_pos = IdIndex(self.user_ids)
        self.seen = seen_matrix(ds)
        self.train = ds.train.tocsr()
        pop = np.asarray(ds.item_popularity(), dtype=np.float64)
        self.popular = np.argsort(-pop, kind="stable")
        self.popularity = pop
        self.items = ds.items if ds.items is not None else pl.DataFrame({"item_id": self.item_ids})
        self.title_col = next((c for c in ("title", "name") if c in self.items.columns), None)
        self.media_cols = {m: c for m, c in ds.media_columns.items() if c in self.items.columns}
        for m in MEDIA_KINDS:
            if m not in self.media_cols and m in self.items.columns:
                self.media_cols[m] = m
        # Columns a list answer reads for every item, as Python lists (O(1) per item, no row dicts).
        self._columns: dict[str, list[Any]] = {
            c: self.items[c].to_list() for c in {self.title_col, *self.media_cols.values()} if c is not None
        }
        self.timings["catalogue_s"] = time.perf_counter() - t

    def _init_vectors(self) -> None:
        """Dot-product models: the recommendation index (built or read from the index cache).
        The cosine index of similar items is built on first use (see :meth:`similar`)."""
        t = time.perf_counter()
        self.V: np.ndarray | None = None
        self.U: np.ndarray | None = None
        vecs = model_vectors(self.model)
        if vecs is not None:
            self.U = np.ascontiguousarray(vecs[0], dtype=np.float32)
            self.V = np.ascontiguousarray(vecs[1], dtype=np.float32)
            self.mean_user_norm = float(np.linalg.norm(self.U, axis=1).mean())
        self.knn_sim = getattr(self.model, "_sim", None)
        self.rec_index: VectorIndex | None = None
        self._sim_index: VectorIndex | None = None
        self._sim_lock = threading.Lock()
        self._sim_thread: threading.Thread | None = None
        self._unit_V: np.ndarray | None = None
        if self.V is not None:
            self.rec_index = VectorIndex(self.V, self.cfg.index, queries=self.U, cache_dir=self.index_cache)
        self.timings["index_s"] = time.perf_counter() - t

    def _init_galleries(self, ds: Any, encode_text: TextEncoderFn | None) -> None:
        """Modality galleries (aligned views when the run has them, else raw features), cosine."""
        t = time.perf_counter()
        self.galleries: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.search_index = None
        align_dir = self.path / "align" / "aligned"
        if align_dir.is_dir():
            from modalrec.workflows.search import SearchIndex

            self.search_index = SearchIndex.from_run(self.path, encode_text=encode_text)
            for m in self.search_index.modalities:
                self.galleries[m] = self.search_index._gallery(m)
        else:
            for m, f in ds.features.items():
                mask = ds.feature_masks.get(m, np.ones(len(f), bool)).astype(bool)
                self.galleries[m] = (_l2(np.asarray(f, dtype=np.float32)), mask)
        self.encode_text = encode_text
        self.timings["galleries_s"] = time.perf_counter() - t

    @property
    def sim_index(self) -> VectorIndex | None:
        """The cosine index over item vectors once built (None before the first /similar)."""
        return self._sim_index

    # ------------------------------------------------------------------ info
    def info(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.path),
            "model": self.model_name,
            "users": len(self.user_ids),
            "items": len(self.item_ids),
            "index": self.rec_index.report if self.rec_index else None,
            "modalities": self.modalities(),
            "search": self.search_available(),
            "load_seconds": round(self.load_seconds, 3),
            "load_timings": {k: round(v, 3) for k, v in self.timings.items()},
        }

    def modalities(self) -> list[str]:
        mods = ["fused"] if (self.V is not None or self.knn_sim is not None) else []
        return mods + [m for m in self.galleries if m not in mods]

    def search_available(self) -> bool:
        if self.cfg.text_encoder == "none" and self.encode_text is None:
            return False
        return self.search_index is not None or "text" in self.galleries

    def _score_stats(self) -> dict[str, float]:
        rng = np.random.default_rng(self.cfg.index.seed)
        n = len(self.user_ids)
        if n == 0:
            return {"mean": 0.0, "std": 1.0}
        users = rng.choice(n, min(200, n), replace=False)
        tops = []
        for u in users:
            _, s, _ = self.recommend_index(int(u), [], 1, exclude_seen=True)
            if len(s) and np.isfinite(s[0]):
                tops.append(float(s[0]))
        if not tops:
            return {"mean": 0.0, "std": 1.0}
        return {"mean": float(np.mean(tops)), "std": float(np.std(tops) or 1.0)}

    # ------------------------------------------------------------------ lookups
    def item_index(self, item_id: str) -> int:
        try:
            return self.item_pos[item_id]
        except KeyError:
            raise DataError(f"unknown item id {item_id!r}", field="item_id") from None

    def title(self, i: int) -> str | None:
        if self.title_col is None:
            return None
        v = self._columns[self.title_col][i]
        return None if v is None else str(v)

    def has_media(self, i: int, kind: str = "image") -> bool:
        col = self.media_cols.get(kind)
        if col is None:
            return False
        return bool(self._columns[col][i])

    def media_ref(self, i: int, kind: str = "image") -> str | None:
        col = self.media_cols.get(kind)
        if col is None:
            return None
        v = self._columns[col][i]
        return str(v) if v else None

    def item_brief(self, i: int, score: float | None = None) -> dict[str, Any]:
        iid = str(self.item_ids[i])
        out: dict[str, Any] = {"item_id": iid, "title": self.title(i)}
        if score is not None:
            out["score"] = float(score)
        out["image_url"] = f"/items/{iid}/image" if self.has_media(i) else None
        return out

    def item_detail(self, i: int) -> dict[str, Any]:
        row = self.items.row(i, named=True)
        media = set(self.media_cols.values())
        fields = {
            k: v
            for k, v in row.items()
            if k != "item_id" and k not in media and isinstance(v, (str, int, float, bool)) and v is not None
        }
        return {
            **self.item_brief(i),
            "fields": fields,
            "media": {m: bool(row.get(c)) for m, c in self.media_cols.items()},
            "popularity": int(self.popularity[i]),
            "modalities": [m for m, (_, mask) in self.galleries.items() if mask[i]],
        }

    def history(self, user_id: str, limit: int) -> list[int]:
        u = self.user_pos.get(user_id)
        if u is None:
            return []
        row = self.train[u]
        return [int(i) for i in row.indices[:limit]]

    # ------------------------------------------------------------------ recommendations
    def feedback_weights(self, fb: list[tuple[str, str, float | None]]) -> tuple[np.ndarray, np.ndarray]:
        """Known feedback items (indices) and their fold-in weights (events the config does not weigh
        count 1; ratings are centred)."""
        fc = self.cfg.feedback
        idx, w = [], []
        for item_id, event, value in fb:
            i = self.item_pos.get(item_id)
            if i is None:
                continue  # item not in this run (e.g. the other A/B arm's catalogue)
            if event == "rating" and value is not None:
                wt = (float(value) - fc.rating_centre) / fc.rating_scale
            else:
                wt = fc.event_weights.get(event, 1.0) * (
                    1.0 if value is None or event == "rating" else float(value)
                )
            idx.append(i)
            w.append(wt)
        return np.asarray(idx, dtype=np.int64), np.asarray(w, dtype=np.float32)

    def recommend_index(
        self, u: int | None, fb: list[tuple[str, str, float | None]], k: int, *, exclude_seen: bool
    ) -> tuple[np.ndarray, np.ndarray, str]:
        """Item indices, scores and the source (model | model+feedback | feedback | popularity)."""
        fb_items, fb_w = self.feedback_weights(fb)
        excl = np.zeros(0, dtype=np.int64)
        if exclude_seen:
            parts = [fb_items]
            if u is not None:
                parts.append(
                    self.seen.indices[self.seen.indptr[u] : self.seen.indptr[u + 1]].astype(np.int64)
                )
            excl = np.unique(np.concatenate(parts))
        has_fb = len(fb_items) > 0 and bool(np.any(fb_w != 0))
        source = "model" if u is not None else "popularity"
        if self.V is not None and self.U is not None and self.rec_index is not None:
            q = self.U[u] if u is not None else None
            if has_fb:
                f = (fb_w[:, None] * self.V[fb_items]).sum(0) / max(float(np.abs(fb_w).sum()), 1e-9)
                target = float(np.linalg.norm(q)) if q is not None else self.mean_user_norm
                f = f * (target / max(float(np.linalg.norm(f)), 1e-12))
                if q is None:
                    q, source = f, "feedback"
                else:
                    n = float(len(fb_items))
                    wgt = n / (n + self.cfg.feedback.prior)
                    q, source = (1 - wgt) * q + wgt * f, "model+feedback"
            if q is not None:
                ids, scores = self.rec_index.search(q[None, :], k, exclude=[excl])
                keep = ids[0] >= 0
                return ids[0][keep], scores[0][keep], source
        elif self.knn_sim is not None:
            rows = (
                self.train.indices[self.train.indptr[u] : self.train.indptr[u + 1]] if u is not None else []
            )
            idx = np.concatenate([np.asarray(rows, dtype=np.int64), fb_items if has_fb else fb_items[:0]])
            w = np.concatenate([np.ones(len(rows), np.float32), fb_w if has_fb else fb_w[:0]])
            if has_fb:
                source = "model+feedback" if u is not None else "feedback"
            items, inv = np.unique(idx, return_inverse=True)
            hist = np.bincount(inv, weights=w, minlength=len(items)).astype(np.float32)
            if np.any(hist != 0):
                # history @ sim from the history's rows only: cost grows with the history, not
                # with the whole item x item matrix (20M entries at 200k items and k = 100)
                s = np.asarray(self.knn_sim[items].T @ hist, dtype=np.float32).ravel()
                return self._top(s, k, excl, source)
            source = "popularity"
        elif u is not None:
            s = self.model.score(np.array([u]))[0].astype(np.float32)
            return self._top(s, k, excl, "model+feedback" if has_fb else "model")
        # popularity fallback (unknown user and nothing to fold in)
        s = self.popularity.astype(np.float32)
        return self._top(s, k, excl, "popularity")

    def _top(
        self, s: np.ndarray, k: int, excl: np.ndarray, source: str
    ) -> tuple[np.ndarray, np.ndarray, str]:
        s = s.copy()
        if len(excl):
            s[excl] = -np.inf
        k = min(k, int(np.isfinite(s).sum()))
        if k <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32), source
        top = np.argpartition(-s, k - 1)[:k]
        top = top[np.lexsort((top, -s[top]))]
        return top.astype(np.int64), s[top], source

    # ------------------------------------------------------------------ similar / search
    def similar(self, item_id: str, k: int, modality: str) -> list[tuple[int, float]]:
        i = self.item_index(item_id)
        if modality == "fused" and "fused" not in self.galleries:
            if self.V is not None:
                return self._similar_vectors(i, k)
            if isinstance(self.knn_sim, np.ndarray):  # dense item-item weights (EASE)
                ids, scores, _ = self._top(self.knn_sim[i], k, np.array([i]), "")
                return list(zip(ids.tolist(), scores.tolist(), strict=True))
            if self.knn_sim is not None:
                row = self.knn_sim[i]
                order = np.argsort(-row.data, kind="stable")[:k]
                return [(int(row.indices[o]), float(row.data[o])) for o in order]
        if modality not in self.galleries:
            raise ConfigError(
                f"no {modality!r} vectors in this run; available: {', '.join(self.modalities()) or 'none'}"
            )
        G, mask = self.galleries[modality]
        if not mask[i]:
            raise DataError(f"item {item_id!r} has no {modality} vector", field="modality")
        s = G @ G[i]
        s = np.where(mask, s, -np.inf)
        ids, scores, _ = self._top(s, k, np.array([i]), "")
        return list(zip(ids.tolist(), scores.tolist(), strict=True))

    def _similar_vectors(self, i: int, k: int) -> list[tuple[int, float]]:
        """Cosine neighbours of item ``i`` in the model's item space.

        The cosine index is not built at start-up (it would double an HNSW build that the
        recommendations need first): the first call starts building it in a background thread
        (or reads it from the index cache) and, until it is ready, answers with an exact scan of
        the unit-length item vectors (a few milliseconds at 200k items).
        """
        assert self.V is not None
        if self._sim_index is not None:
            ids, s = self._sim_index.search(self.V[i][None, :], k, exclude=[np.array([i])])
            return [(int(a), float(b)) for a, b in zip(ids[0], s[0], strict=True) if a >= 0]
        with self._sim_lock:
            if self._unit_V is None:
                self._unit_V = _l2(self.V)
            if self._sim_thread is None:
                self._sim_thread = threading.Thread(target=self._build_sim_index, daemon=True)
                self._sim_thread.start()
        unit = self._unit_V
        ids, scores, _ = self._top(unit @ unit[i], k, np.array([i]), "")
        return list(zip(ids.tolist(), scores.tolist(), strict=True))

    def _build_sim_index(self) -> None:
        assert self.V is not None
        try:
            self._sim_index = VectorIndex(self.V, self.cfg.index, normalize=True, cache_dir=self.index_cache)
        except Exception:  # the exact scan keeps answering; the failure is logged, not raised
            log.exception("building the similar-items index failed; /similar keeps the exact scan")

    def search(self, query: str, k: int, modality: str) -> list[tuple[int, float]]:
        if not self.search_available():
            raise ConfigError(
                "text search is not available for this run (no text features and no aligned views)"
            )
        if self.search_index is not None:
            if self.encode_text is not None:
                self.search_index.encode_text = self.encode_text
            mod = modality if modality in self.search_index.modalities else None
            if mod is None:
                raise ConfigError(
                    f"no {modality!r} vectors to search; available: {', '.join(self.search_index.modalities)}"
                )
            rows = self.search_index._rank(self.search_index.embed_query(query), mod, k)
            return [(int(r["index"]), float(r["score"])) for r in rows]
        if modality not in ("text", "fused"):
            raise ConfigError(
                f"searching {modality!r} from text needs aligned views (modalrec align); this run can search: text"
            )
        if self.encode_text is None:
            raise ConfigError("no text encoder loaded")
        G, mask = self.galleries["text"]
        q = np.asarray(self.encode_text([query]), dtype=np.float32).reshape(-1)
        if q.shape[0] != G.shape[1]:
            raise ConfigError(
                f"the run's text features are {G.shape[1]}-d but the query encoder gives {q.shape[0]}-d: "
                "the features were not made with the serving text encoder"
            )
        s = np.where(mask, G @ _l2(q), -np.inf)
        ids, scores, _ = self._top(s, k, np.zeros(0, np.int64), "")
        return list(zip(ids.tolist(), scores.tolist(), strict=True))

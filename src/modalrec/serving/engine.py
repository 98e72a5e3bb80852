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
from modalrec.serving.redact import run_label
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
        # Live items (POST /items) and deletions sit on top of the sorted ids: a dict of the few
        # added ids and a set of hidden ones, so that the sorted array is never rebuilt.
        self.extra: dict[str, int] = {}
        self.hidden: set[str] = set()
        self._width = self.sorted.dtype.itemsize // np.dtype("U1").itemsize

    def _find(self, key: str) -> int | None:
        """Position of ``key`` in ``self.sorted``, or None.

        Why the length check and the typed key: numpy compares a str longer than the array's strings
        by first converting the whole array to the wider dtype (28 ms per lookup at 1M user ids,
        measured: every unknown user's request paid it); a key of the array's own dtype costs 3 us.
        """
        if len(key) > self._width:
            return None
        j = int(np.searchsorted(self.sorted, np.array(key, dtype=self.sorted.dtype)))
        return j if j < len(self.sorted) and self.sorted[j] == key else None

    def add(self, key: str, index: int) -> None:
        """Map ``key`` to ``index`` (a live item; wins over a hidden catalogue entry of the same id)."""
        self.extra[key] = index

    def hide(self, key: str) -> None:
        """Forget ``key`` (a deleted item): lookups answer None from now on."""
        self.extra.pop(key, None)
        if self._find(key) is not None:
            self.hidden.add(key)

    def get(self, key: str, default: int | None = None) -> int | None:
        if not isinstance(key, str):
            return default
        if key in self.extra:
            return self.extra[key]
        if key in self.hidden:
            return default
        j = self._find(key)
        if j is None:
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
        return len(self.ids) - len(self.hidden) + len(self.extra)


class GrowingRows:
    """Rows appended at amortised O(1) cost: a buffer that doubles, read through ``view`` (the first
    ``n`` rows).

    Why: an item added live must not copy every item vector (at 200k items a copy per add would
    block the event loop for milliseconds). Views handed out earlier stay valid: rows are only ever
    written past the end of every earlier view, and a grown buffer is a new array.

    >>> g = GrowingRows(np.zeros((2, 3), np.float32))
    >>> g.append(np.ones((3, 3), np.float32)).shape, g.view[2:].sum()
    ((5, 3), np.float32(9.0))
    """

    def __init__(self, rows: np.ndarray) -> None:
        self._buf = np.asarray(rows)
        self.n = len(self._buf)
        self.view = self._buf[: self.n]

    def append(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=self._buf.dtype)
        need = self.n + len(rows)
        if need > len(self._buf):
            cap = max(need, 2 * len(self._buf), 16)
            buf = np.empty((cap, *self._buf.shape[1:]), dtype=self._buf.dtype)
            buf[: self.n] = self._buf[: self.n]
            self._buf = buf
        self._buf[self.n : need] = rows
        self.n = need
        self.view = self._buf[:need]
        return self.view


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
            "loaded %s (%s, %d users x %d items) in %.2fs (%s); index %s",
            run_label(self.path),
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
        # Live items (POST /items) get indices n_base, n_base + 1, ...; deleted items stay in place,
        # hidden (see append_items / hide_item).
        self.n_base = len(self.item_ids)
        self.live_ids: list[str] = []
        self.live_fields: list[dict[str, Any]] = []
        self.live_media: list[dict[str, str]] = []
        self.live_hash: dict[str, str] = {}
        self._pop_rows = GrowingRows(pop.astype(np.float64))
        self._hidden_rows = GrowingRows(np.zeros(self.n_base, bool))
        self.hidden_idx = np.zeros(0, np.int64)
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
        self._gallery_rows: dict[str, tuple[GrowingRows, GrowingRows]] = {}
        if self.V is not None:
            self.rec_index = VectorIndex(self.V, self.cfg.index, queries=self.U, cache_dir=self.index_cache)
            self._V_rows = GrowingRows(self.V)
        self._blend = self._coldstart_blend()
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
            "live_items": len(self.live_hash),
            "hidden_items": len(self.hidden_idx),
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

    def item_id_of(self, i: int) -> str:
        """The string id of item index ``i`` (a catalogue item or a live one)."""
        return str(self.item_ids[i]) if i < self.n_base else self.live_ids[i - self.n_base]

    def title(self, i: int) -> str | None:
        if i >= self.n_base:
            v: Any = self.live_fields[i - self.n_base].get(self.title_col) if self.title_col else None
        elif self.title_col is None:
            return None
        else:
            v = self._columns[self.title_col][i]
        return None if v is None else str(v)

    def has_media(self, i: int, kind: str = "image") -> bool:
        return self.media_ref(i, kind) is not None

    def media_ref(self, i: int, kind: str = "image") -> str | None:
        if i >= self.n_base:
            return self.live_media[i - self.n_base].get(kind)
        col = self.media_cols.get(kind)
        if col is None:
            return None
        v = self._columns[col][i]
        return str(v) if v else None

    def item_brief(self, i: int, score: float | None = None) -> dict[str, Any]:
        iid = self.item_id_of(i)
        out: dict[str, Any] = {"item_id": iid, "title": self.title(i)}
        if score is not None:
            out["score"] = float(score)
        out["image_url"] = f"/items/{iid}/image" if self.has_media(i) else None
        return out

    def item_detail(self, i: int) -> dict[str, Any]:
        if i >= self.n_base:
            return self._live_detail(i)
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

    def _live_detail(self, i: int) -> dict[str, Any]:
        """:meth:`item_detail` of a live item (its fields as posted, no interactions yet)."""
        j = i - self.n_base
        fields = {k: v for k, v in self.live_fields[j].items() if v is not None}
        kinds = set(self.media_cols) | set(self.live_media[j])
        return {
            **self.item_brief(i),
            "fields": fields,
            "media": {m: m in self.live_media[j] for m in sorted(kinds)},
            "popularity": 0,
            "modalities": [m for m, (_, mask) in self.galleries.items() if mask[i]],
            "live": True,
        }

    # ------------------------------------------------------------------ live items
    def _coldstart_blend(self) -> tuple[float, np.ndarray] | None:
        """(tower weight, warm item indices) of a cold-start model that blends its tower with a
        collaborative model, else None.

        Why: its item vectors are the tower's alone; ranking a known user's list by them would serve
        another model than the one evaluated (on the ML-100K cold-start split warm-item Recall@20 .381
        instead of the blend's .425). Such users are scored by the model itself instead, and items
        added live get the tower's share of the blend, standardised with the same warm-item
        statistics (:meth:`_blend_scores`), so they rank as ``modalrec add-items`` would rank them.
        """
        from modalrec.models.coldstart import ColdStart

        m = self.model
        if not isinstance(m, ColdStart) or self.V is None or getattr(m, "_cf", None) is None:
            return None
        state = getattr(m, "_state", {})
        if "item_vectors" not in state or m.blend_weight >= 1.0:
            return None
        return m.blend_weight, np.flatnonzero(np.asarray(state["warm"], bool)[: self.n_base])

    def _blend_scores(self, u: int) -> np.ndarray:
        """The cold-start model's blended scores of user ``u`` over every item, live items included."""
        assert self._blend is not None and self.V is not None and self.U is not None
        base = np.asarray(self.model.score(np.array([u]))[0], dtype=np.float32)
        if not self.live_ids:
            return base
        w, warm = self._blend
        q = self.U[u]
        t = self.V[: self.n_base][warm] @ q
        mean, sd = float(t.mean()), float(t.std(ddof=1)) if len(t) > 1 else 0.0
        live = self.V[self.n_base :] @ q
        z = (live - mean) / sd if sd > 1e-12 else np.zeros_like(live)
        return np.concatenate([base, (w * z).astype(np.float32)])

    def placement_problem(self) -> str | None:
        """Why this engine cannot take items added live (None: it can): placing an item without
        interactions needs a cold-start model, and serving it needs the model's item vectors."""
        from modalrec.models.coldstart import ColdStart

        if not isinstance(self.model, ColdStart) or not self.model.meta.get("modalities"):
            return (
                f"the run's model {self.model_name!r} cannot place items that have no interactions; "
                "fit a 'coldstart' model (modalrec models coldstart) and serve that run, or add the "
                "items offline and refit"
            )
        if self.V is None or self.rec_index is None:
            return f"the run's model {self.model_name!r} has no item vectors to add new items to"
        return None

    def append_items(
        self,
        ids: Sequence[str],
        fields: Sequence[dict[str, Any]],
        media: Sequence[dict[str, str]],
        vectors: np.ndarray,
        views: dict[str, np.ndarray],
        masks: dict[str, np.ndarray],
        hashes: Sequence[str],
    ) -> list[int]:
        """Make items placed by the cold-start model recommendable, similar and searchable at once.

        ``vectors`` [n, d] are the model's item vectors (:meth:`ColdStart.place_items`), ``views``/
        ``masks`` the items' raw features per modality (the /similar and /search galleries).
        Cost: the new rows only (amortised), one incremental add to each vector index; no index is
        rebuilt. Runs on the event loop thread (the only writer), so no request sees half an item.
        """
        n0, n = self.n_base + len(self.live_ids), len(ids)
        assert self.V is not None and self.rec_index is not None
        vecs = np.ascontiguousarray(vectors, dtype=np.float32).reshape(n, self.V.shape[1])
        self.live_ids.extend(ids)
        self.live_fields.extend(fields)
        self.live_media.extend(media)
        self.popularity = self._pop_rows.append(np.zeros(n))
        self._hidden_rows.append(np.zeros(n, bool))
        with self._sim_lock:
            self.V = self._V_rows.append(vecs)
            self.rec_index.add(vecs)
            if self._sim_index is not None:
                self._sim_index.add(vecs)
        for m, (G, mask) in list(self.galleries.items()):
            x = views.get(m)
            if x is not None and np.asarray(x).shape[1:] != G.shape[1:]:
                x = None  # an aligned view (modalrec align): raw features do not fit; not in that gallery
            mk = np.zeros(n, bool) if x is None else np.asarray(masks.get(m, np.ones(n, bool)), bool)
            rows = np.zeros((n, G.shape[1]), np.float32) if x is None else _l2(np.asarray(x, np.float32))
            grown = self._gallery_rows.get(m)
            if grown is None:
                grown = self._gallery_rows[m] = (GrowingRows(G), GrowingRows(mask))
            self.galleries[m] = (grown[0].append(np.where(mk[:, None], rows, 0.0)), grown[1].append(mk))
        out = list(range(n0, n0 + n))
        for iid, i, h in zip(ids, out, hashes, strict=True):
            self.item_pos.add(iid, i)
            self.live_hash[iid] = h
        return out

    def hide_item(self, item_id: str) -> bool:
        """Hide an item from /recommend, /similar, /search and lookups (False: unknown or hidden)."""
        i = self.item_pos.get(item_id)
        if i is None:
            return False
        self._hidden_rows.view[i] = True
        self.hidden_idx = np.flatnonzero(self._hidden_rows.view).astype(np.int64)
        self.item_pos.hide(item_id)
        self.live_hash.pop(item_id, None)
        return True

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
        if len(self.hidden_idx):  # deleted items, whatever exclude_seen says
            excl = np.union1d(excl, self.hidden_idx)
        has_fb = len(fb_items) > 0 and bool(np.any(fb_w != 0))
        source = "model" if u is not None else "popularity"
        if self._blend is not None and u is not None and not has_fb:
            return self._top(self._blend_scores(u), k, excl, source)
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
        skip = np.union1d([i], self.hidden_idx).astype(np.int64)  # itself and deleted items
        if modality == "fused" and "fused" not in self.galleries:
            if self.V is not None:
                return self._similar_vectors(i, k, skip)
            if isinstance(self.knn_sim, np.ndarray):  # dense item-item weights (EASE)
                ids, scores, _ = self._top(self.knn_sim[i], k, skip, "")
                return list(zip(ids.tolist(), scores.tolist(), strict=True))
            if self.knn_sim is not None:
                row = self.knn_sim[i]
                order = np.argsort(-row.data, kind="stable")
                pairs = [(int(row.indices[o]), float(row.data[o])) for o in order]
                return [(j, v) for j, v in pairs if not self._hidden_rows.view[j]][:k]
        if modality not in self.galleries:
            raise ConfigError(
                f"no {modality!r} vectors in this run; available: {', '.join(self.modalities()) or 'none'}"
            )
        G, mask = self.galleries[modality]
        if not mask[i]:
            raise DataError(f"item {item_id!r} has no {modality} vector", field="modality")
        s = G @ G[i]
        s = np.where(mask, s, -np.inf)
        ids, scores, _ = self._top(s, k, skip, "")
        return list(zip(ids.tolist(), scores.tolist(), strict=True))

    def _similar_vectors(self, i: int, k: int, skip: np.ndarray) -> list[tuple[int, float]]:
        """Cosine neighbours of item ``i`` in the model's item space.

        The cosine index is not built at start-up (it would double an HNSW build that the
        recommendations need first): the first call starts building it in a background thread
        (or reads it from the index cache) and, until it is ready, answers with an exact scan of
        the unit-length item vectors (a few milliseconds at 200k items).
        """
        assert self.V is not None
        if self._sim_index is not None:
            ids, s = self._sim_index.search(self.V[i][None, :], k, exclude=[skip])
            return [(int(a), float(b)) for a, b in zip(ids[0], s[0], strict=True) if a >= 0]
        with self._sim_lock:
            if self._unit_V is None or len(self._unit_V) != len(self.V):
                self._unit_V = _l2(self.V)
            if self._sim_thread is None:
                self._sim_thread = threading.Thread(target=self._build_sim_index, daemon=True)
                self._sim_thread.start()
            unit = self._unit_V
        ids, scores, _ = self._top(unit @ unit[i], k, skip, "")
        return list(zip(ids.tolist(), scores.tolist(), strict=True))

    def _build_sim_index(self) -> None:
        assert self.V is not None
        try:
            index = VectorIndex(self.V, self.cfg.index, normalize=True, cache_dir=self.index_cache)
            with self._sim_lock:  # items added live while it was built: add them before it answers
                if len(self.V) > index.n:
                    index.add(self.V[index.n :])
                self._sim_index = index
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
            rows = self.search_index._rank(
                self.search_index.embed_query(query), mod, k + len(self.hidden_idx)
            )
            hidden = self._hidden_rows.view
            return [(int(r["index"]), float(r["score"])) for r in rows if not hidden[int(r["index"])]][:k]
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
        ids, scores, _ = self._top(s, k, self.hidden_idx, "")
        return list(zip(ids.tolist(), scores.tolist(), strict=True))

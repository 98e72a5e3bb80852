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


class Engine:
    """Serving view of a run directory (loaded and verified with :func:`modalrec.workflows.rundir.load_run`)."""

    def __init__(
        self, run_dir: str | Path, cfg: ServeConfig, *, encode_text: TextEncoderFn | None = None
    ) -> None:
        t0 = time.perf_counter()
        self.cfg = cfg
        self.run = load_run(run_dir, verify=True)
        self.path = Path(run_dir).resolve()
        ds = self.run.dataset
        self.model = self.run.model
        self.model_name = str(self.model.name)
        self.item_ids = np.asarray(ds.item_ids).astype(str)
        self.user_ids = np.asarray(ds.user_ids).astype(str)
        self.item_pos = {s: i for i, s in enumerate(self.item_ids.tolist())}
        self.user_pos = {s: i for i, s in enumerate(self.user_ids.tolist())}
        self.seen = seen_matrix(ds)
        self.train = ds.train.tocsr()
        pop = np.asarray(ds.item_popularity(), dtype=np.float64)
        self.popular = np.argsort(-pop, kind="stable")
        self.popularity = pop
        self.items = ds.items if ds.items is not None else pl.DataFrame({"item_id": self.item_ids})
        self._item_rows: list[dict[str, Any]] = self.items.to_dicts()
        self.title_col = next((c for c in ("title", "name") if c in self.items.columns), None)
        self.media_cols = {m: c for m, c in ds.media_columns.items() if c in self.items.columns}
        for m in MEDIA_KINDS:
            if m not in self.media_cols and m in self.items.columns:
                self.media_cols[m] = m
        # --- vectors
        self.V: np.ndarray | None = None
        self.U: np.ndarray | None = None
        if "item_vectors" in getattr(self.model, "_state", {}):
            self.V = np.ascontiguousarray(self.model.item_vectors, dtype=np.float32)
            self.U = np.ascontiguousarray(self.model.user_vectors, dtype=np.float32)
            self.mean_user_norm = float(np.linalg.norm(self.U, axis=1).mean())
        self.knn_sim = getattr(self.model, "_sim", None)
        self.rec_index: VectorIndex | None = None
        self.sim_index: VectorIndex | None = None
        if self.V is not None:
            self.rec_index = VectorIndex(self.V, cfg.index, queries=self.U)
            self.sim_index = VectorIndex(self.V, cfg.index, normalize=True)
        # --- modality galleries (aligned views when the run has them, else raw features), cosine
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
        # --- training score distribution (for drift alerts): top-1 model score of sampled users
        self.score_stats = self._score_stats()
        self.load_seconds = time.perf_counter() - t0
        log.info(
            "loaded run %s (%s, %d users x %d items) in %.2fs; index %s",
            self.path,
            self.model_name,
            len(self.user_ids),
            len(self.item_ids),
            self.load_seconds,
            self.rec_index.report if self.rec_index else "none (model has no item vectors)",
        )

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
        }

    def modalities(self) -> list[str]:
        mods = ["fused"] if (self.sim_index is not None or self.knn_sim is not None) else []
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
        v = self._item_rows[i].get(self.title_col)
        return None if v is None else str(v)

    def has_media(self, i: int, kind: str = "image") -> bool:
        col = self.media_cols.get(kind)
        if col is None:
            return False
        v = self._item_rows[i].get(col)
        return bool(v)

    def media_ref(self, i: int, kind: str = "image") -> str | None:
        col = self.media_cols.get(kind)
        if col is None:
            return None
        v = self._item_rows[i].get(col)
        return str(v) if v else None

    def item_brief(self, i: int, score: float | None = None) -> dict[str, Any]:
        iid = str(self.item_ids[i])
        out: dict[str, Any] = {"item_id": iid, "title": self.title(i)}
        if score is not None:
            out["score"] = float(score)
        out["image_url"] = f"/items/{iid}/image" if self.has_media(i) else None
        return out

    def item_detail(self, i: int) -> dict[str, Any]:
        row = self._item_rows[i]
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
            hist = np.zeros(len(self.item_ids), dtype=np.float32)
            if u is not None:
                hist[self.train.indices[self.train.indptr[u] : self.train.indptr[u + 1]]] = 1.0
            if has_fb:
                np.add.at(hist, fb_items, fb_w)
                source = "model+feedback" if u is not None else "feedback"
            if np.any(hist != 0):
                s = np.asarray(self.knn_sim.T @ hist, dtype=np.float32).ravel()
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
            if self.sim_index is not None and self.V is not None:
                ids, s = self.sim_index.search(self.V[i][None, :], k, exclude=[np.array([i])])
                return [(int(a), float(b)) for a, b in zip(ids[0], s[0], strict=True) if a >= 0]
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

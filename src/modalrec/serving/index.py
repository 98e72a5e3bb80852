"""Item vector index for serving: faiss exact inner product for small catalogues, HNSW above a size.

Why both: an exact scan of 10k x 64 floats takes microseconds and is always right, while at a million
items an exact scan costs milliseconds per query and a graph index answers in a fraction of that at a
small recall cost. That cost is not assumed: every index measures its recall@10 against exact search on
sample queries when it is built, and the server reports it (``/health``, ``/metrics``).

Compression options trade quality for memory: PCA to fewer dimensions (items centred, both sides
projected: the per-user constant ``u . mean`` does not change a ranking) and int8 scalar or product
quantisation of the stored vectors. :func:`compression_report` measures what they cost in Recall@20 on
a run's test split.

>>> rng = np.random.default_rng(0)
>>> V = rng.normal(size=(500, 16)).astype(np.float32)
>>> idx = VectorIndex(V, IndexConfig(recall_queries=20))
>>> idx.kind, idx.report["recall_at_10"]
('exact', 1.0)
>>> ids, scores = idx.search(V[:1], 3, exclude=[np.array([0])])
>>> bool(0 in ids[0]), ids.shape
(False, (1, 3))
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from modalrec.serving.settings import IndexConfig

IP = faiss.METRIC_INNER_PRODUCT


#: Queries timed one by one against the flat scan when an index's recall is measured (see measure_recall).
EXACT_TIMING_QUERIES = 20


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each row's true neighbours that ``found`` contains (recall@k, k = truth width)."""
    hits = [
        len(set(f.tolist()) & set(t.tolist())) / max(len(t), 1) for f, t in zip(found, truth, strict=True)
    ]
    return float(np.mean(hits)) if hits else 1.0


def index_bytes(index: Any) -> int:
    """Serialized size of a faiss index (what it occupies in memory, give or take allocator slack)."""
    return int(faiss.serialize_index(index).nbytes)


def _pq_bits(n: int) -> int:
    # faiss wants >= 39 training points per centroid; small catalogues get fewer centroids.
    return int(max(4, min(8, np.floor(np.log2(max(n, 16) / 39)))))


class VectorIndex:
    """Inner-product index over item vectors with exclusion lists and a measured recall.

    ``normalize=True`` makes it a cosine index (similar items); recommendations use raw inner products
    because that is what dot-product models score with.
    """

    def __init__(
        self,
        vectors: np.ndarray,
        cfg: IndexConfig | None = None,
        *,
        queries: np.ndarray | None = None,
        normalize: bool = False,
        measure: bool = True,
        progress: bool = False,
        cache_dir: str | Path | None = None,
    ) -> None:
        self.cfg = cfg or IndexConfig()
        v = np.ascontiguousarray(vectors, dtype=np.float32)
        if normalize:
            v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        self.normalize = normalize
        self.vectors: np.ndarray | None = v
        self._buffer, self._capacity = v, len(v)  # grown by add(); ``vectors`` is its first n rows
        self.n, self.dim = v.shape
        self.kind = "hnsw" if self.n >= self.cfg.hnsw_threshold else "exact"
        self.mean: np.ndarray | None = None
        self.proj: np.ndarray | None = None
        stored = v
        if self.cfg.pca_dim and self.cfg.pca_dim < self.dim:
            self.mean = v.mean(axis=0)
            _, _, vt = np.linalg.svd(v - self.mean, full_matrices=False)
            self.proj = np.ascontiguousarray(vt[: self.cfg.pca_dim].T, dtype=np.float32)
            stored = np.ascontiguousarray((v - self.mean) @ self.proj, dtype=np.float32)
        d = stored.shape[1]
        t0 = time.perf_counter()
        self.index, self.cache = self._build_or_load(stored, d, cache_dir)
        self.build_seconds = time.perf_counter() - t0
        self._head: np.ndarray | None = None  # see IndexConfig.exact_head
        self._head_ids = np.zeros(0, np.int64)
        self._bound = 0.0
        if self.kind == "hnsw" and self.cfg.exact_head and not normalize and not self.compressed:
            self._init_head(v)
        self.report: dict[str, Any] = {
            "kind": self.kind,
            "cache": self.cache,
            "items": self.n,
            "dim": self.dim,
            "stored_dim": d,
            "quantize": self.cfg.quantize,
            "build_seconds": round(self.build_seconds, 3),
            "index_bytes": index_bytes(self.index),
            "float32_bytes": int(self.n * self.dim * 4),
            "exact_head": len(self._head_ids),
        }
        if measure:
            self.report.update(self.measure_recall(queries))
            self.report["exact_head"] = len(self._head_ids)
        if self.compressed:
            self.vectors = None  # type: ignore[assignment]  # the index is all that is kept

    def _build_or_load(self, x: np.ndarray, d: int, cache_dir: str | Path | None) -> tuple[Any, str]:
        """The index from ``cache_dir`` when one was built from the same vectors and settings, else
        built now (and stored there). How it was obtained: ``"none"``, ``"built"`` or ``"loaded"``.

        Why a cache: an HNSW graph over 200k items takes about a minute to build and a million items
        several minutes, while reading it back takes a second; a restart or a second worker serving
        the same run should not pay again. The file is keyed by a hash of the stored vectors and
        every index setting, written under a temporary name and renamed; a lock file makes a second
        worker wait for the first one's build and then read it instead of building its own.
        """
        if cache_dir is None or self.kind == "exact":
            return self._build_all_cores(x, d), "none"
        cache = Path(cache_dir)
        cache.mkdir(parents=True, exist_ok=True)
        key = hashlib.sha256(x.tobytes())
        settings = self.cfg.model_dump(
            exclude={"ef_search", "recall_queries", "exact_head"}
        )  # not in the file
        key.update(json.dumps([self.kind, self.normalize, settings], sort_keys=True).encode())
        path = cache / f"{self.kind}-{key.hexdigest()[:32]}.faiss"
        with open(path.with_suffix(".lock"), "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if path.exists():
                    with contextlib.suppress(RuntimeError):  # unreadable file: rebuild it
                        index: Any = faiss.read_index(str(path))
                        if index.ntotal == len(x) and index.d == d:
                            if self.kind == "hnsw":
                                index.hnsw.efSearch = self.cfg.ef_search
                            return index, "loaded"
                index = self._build_all_cores(x, d)
                tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                faiss.write_index(index, str(tmp))
                os.replace(tmp, path)
                return index, "built"
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _build_all_cores(self, x: np.ndarray, d: int) -> Any:
        """Build with every core: a server pins its workers to one compute thread for serving, but
        the one-off build is the start-up's critical path (faiss adds HNSW points in parallel)."""
        before = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(max(os.cpu_count() or 1, before))
        try:
            return self._build(x, d)
        finally:
            faiss.omp_set_num_threads(before)

    def _build(self, x: np.ndarray, d: int) -> Any:
        c = self.cfg
        fx: Any = faiss  # faiss's bundled stubs miss the (d, qtype/M, ...) constructor overloads
        index: Any
        if self.kind == "exact":
            if c.quantize == "int8":
                index = fx.IndexScalarQuantizer(d, fx.ScalarQuantizer.QT_8bit, IP)
            elif c.quantize == "pq":
                index = fx.IndexPQ(d, _pq_m(d, c.pq_m), _pq_bits(len(x)), IP)
            else:
                index = fx.IndexFlatIP(d)
        else:
            if c.quantize == "int8":
                index = fx.IndexHNSWSQ(d, fx.ScalarQuantizer.QT_8bit, c.hnsw_m, IP)
            elif c.quantize == "pq":
                index = fx.IndexHNSWPQ(d, _pq_m(d, c.pq_m), c.hnsw_m, _pq_bits(len(x)), IP)
            else:
                index = fx.IndexHNSWFlat(d, c.hnsw_m, IP)
            index.hnsw.efConstruction = c.ef_construction
            index.hnsw.efSearch = c.ef_search
        if not index.is_trained:
            rng = np.random.default_rng(c.seed)
            sample = x if len(x) <= 100_000 else x[rng.choice(len(x), 100_000, replace=False)]
            index.train(sample)
        index.add(x)
        return index

    def _init_head(self, v: np.ndarray) -> None:
        """The ``exact_head`` items of largest norm (at most a quarter of the catalogue, like the
        scan rule of :meth:`search`) as a matrix, and the largest norm left out (the bound)."""
        norms = np.linalg.norm(v, axis=1)
        h = min(self.cfg.exact_head, self.n // 4)
        if h < 1:
            return
        order = np.argsort(-norms, kind="stable")
        self._head_ids = np.sort(order[:h]).astype(np.int64)
        self._head = np.ascontiguousarray(v[self._head_ids])
        self._bound = float(norms[order[h]])

    def _head_answer(
        self, qv: np.ndarray, k: int, ex: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """The exact top ``k`` of one (transformed) query when the head proves it, else None.

        The head's best ``k + len(ex)`` hold its best ``k`` non-excluded items; they are the catalogue's
        best when the k-th score is at least ``|q| x`` the largest norm outside the head
        (Cauchy-Schwarz: no other item can score more). Norm-bounded pruning as in LEMP (Teflioudi et
        al., SIGMOD 2015).
        """
        assert self._head is not None
        s = self._head @ qv
        n_ex = len(ex) if ex is not None else 0
        m = min(len(s), k + n_ex)
        top = np.argpartition(-s, m - 1)[:m] if m < len(s) else np.arange(len(s))
        ids, sc = self._head_ids[top], s[top]
        if n_ex:
            keep = ~_member(ids, ex)  # type: ignore[arg-type]
            ids, sc = ids[keep], sc[keep]
        if len(ids) < k:
            return None
        o = np.lexsort((ids, -sc))[:k]
        ids, sc = ids[o], sc[o]
        if sc[-1] < float(np.linalg.norm(qv)) * self._bound:
            return None
        return ids, sc

    def add(self, vectors: np.ndarray) -> None:
        """Append items (indices ``n ..``) without rebuilding: faiss adds to a flat index and links
        new nodes into an HNSW graph incrementally (the graph of the others is unchanged); PCA and
        quantisers keep the basis/codebooks they were trained with. The recall measured at build
        time is not re-measured.

        Raw vectors are kept in a buffer that doubles when full, so an add costs the new rows only.
        """
        v = np.ascontiguousarray(np.atleast_2d(vectors), dtype=np.float32)
        if v.shape[1] != self.dim:
            raise ValueError(f"expected {self.dim}-d vectors, got {v.shape[1]}-d")
        if self.normalize:
            v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        stored = v if self.proj is None or self.mean is None else (v - self.mean) @ self.proj
        self.index.add(np.ascontiguousarray(stored, dtype=np.float32))
        if self._head is not None:  # the bound holds for the rest only if larger items join the head
            big = np.flatnonzero(np.linalg.norm(v, axis=1) > self._bound)
            if len(big):
                self._head = np.vstack([self._head, v[big]])
                self._head_ids = np.concatenate([self._head_ids, self.n + big.astype(np.int64)])
        if self.vectors is not None:
            need = self.n + len(v)
            if self._capacity < need:
                buf = np.empty((max(need, 2 * self._capacity), self.dim), np.float32)
                buf[: self.n] = self.vectors[: self.n]
                self._buffer, self._capacity = buf, len(buf)
            self._buffer[self.n : need] = v
            self.vectors = self._buffer[:need]
        self.n += len(v)
        self.report["items"] = self.n

    def _transform(self, q: np.ndarray) -> np.ndarray:
        q = np.ascontiguousarray(np.atleast_2d(q), dtype=np.float32)
        if self.normalize:
            q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        if self.proj is not None:
            q = q @ self.proj  # u . (i - mean) ranks like u . i for a fixed user
        return np.ascontiguousarray(q, dtype=np.float32)

    @property
    def compressed(self) -> bool:
        return self.proj is not None or self.cfg.quantize != "none"

    def search(
        self, queries: np.ndarray, k: int, exclude: Sequence[np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` item indices and inner-product scores per query, skipping each row's ``exclude``.

        An inner-product HNSW index first tries the exact head of large-norm items (see
        ``IndexConfig.exact_head``); the other queries go to the graph, asked for ``k + len(exclude)``
        results (a graph index asked for more than a quarter of the catalogue scans every stored
        vector instead); if it returns fewer usable ones, that query is answered by a full scan too
        (never fewer than asked for while items remain). Scores come from the index: exact for an
        uncompressed index, approximate under PCA / quantisation. Missing slots hold -1 / -inf.
        """
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = max(1, min(k, self.n))
        qt = self._transform(q)
        out_i = np.full((len(q), k), -1, dtype=np.int64)
        out_s = np.full((len(q), k), -np.inf, dtype=np.float32)
        rows = list(range(len(q)))
        if self._head is not None:
            left = []
            for r in rows:
                hit = self._head_answer(qt[r], k, exclude[r] if exclude is not None else None)
                if hit is None:
                    left.append(r)
                else:
                    out_i[r], out_s[r] = hit
            rows = left
        if rows:
            self._graph_rows(q, qt, k, exclude, rows, out_i, out_s)
        return out_i, out_s

    def _graph_rows(
        self,
        q: np.ndarray,
        qt: np.ndarray,
        k: int,
        exclude: Sequence[np.ndarray] | None,
        rows: list[int],
        out_i: np.ndarray,
        out_s: np.ndarray,
    ) -> None:
        """:meth:`search` of the queries ``rows`` through the index (or a scan), written into ``out_*``."""
        n_ex = max((len(exclude[r]) for r in rows), default=0) if exclude is not None else 0
        fetch = min(self.n, k + n_ex)
        sub = qt[rows]
        if self.kind == "hnsw" and fetch * 4 > self.n:
            # A graph walk asked for a large share of the catalogue is no faster than a scan and
            # misses items: rank every stored vector exactly instead.
            found, dist = self._scan(sub, fetch)
        else:
            dist, found = self.index.search(sub, fetch)
        offset = self._offset(q[rows])
        for j, r in enumerate(rows):
            ex = exclude[r] if exclude is not None else None
            ok = found[j] >= 0
            if ex is not None and len(ex):
                ok &= ~_member(found[j], ex)
            cand, sc = found[j][ok], dist[j][ok]
            want = k
            if len(cand) < k:  # fewer is right only when the exclusions leave fewer items than k
                want = min(k, self.n - (len(np.unique(ex)) if ex is not None and len(ex) else 0))
            if len(cand) < want:  # a graph index ran short (many exclusions): scan everything
                s = self._stored() @ qt[r]
                if ex is not None and len(ex):
                    s[ex] = -np.inf
                cand = np.argsort(-s, kind="stable")[:want]
                cand = cand[np.isfinite(s[cand])]
                sc = s[cand]
            m = min(k, len(cand))
            out_i[r, :m] = cand[:m]
            out_s[r, :m] = sc[:m] + offset[j]

    def _scan(self, qt: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``fetch`` over every stored vector, in query chunks: the score block is
        items x chunk, never items x all queries (a users x items matrix for a batch of users)."""
        stored = self._stored()
        step = max(1, (1 << 25) // max(self.n, 1))  # about 128 MB of float32 scores per chunk
        found = np.empty((len(qt), fetch), dtype=np.int64)
        dist = np.empty((len(qt), fetch), dtype=np.float32)
        for a in range(0, len(qt), step):
            s_all = stored @ qt[a : a + step].T
            top = np.argsort(-s_all, axis=0, kind="stable")[:fetch].T
            found[a : a + step] = top
            dist[a : a + step] = np.take_along_axis(s_all.T, top, axis=1)
        return found, dist

    def _offset(self, q: np.ndarray) -> np.ndarray:
        """PCA centres items; ``u . mean`` added back makes the scores estimates of ``u . i``."""
        if self.mean is None:
            return np.zeros(len(q), dtype=np.float32)
        qn = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12) if self.normalize else q
        return (qn @ self.mean).astype(np.float32)

    def _stored(self) -> np.ndarray:
        if self.vectors is not None:
            return self.vectors if self.proj is None else (self.vectors - self.mean) @ self.proj
        return self.index.reconstruct_n(0, self.n)

    def measure_recall(self, queries: np.ndarray | None = None, k: int = 10) -> dict[str, Any]:
        """Recall@``k`` of this index against exact search on the raw vectors (a faiss flat scan),
        and the mean time of one single-query search with each (only while raw vectors are held)."""
        if self.vectors is None:
            raise RuntimeError("raw vectors were dropped after building a compressed index")
        rng = np.random.default_rng(self.cfg.seed)
        nq = self.cfg.recall_queries
        if queries is None or len(queries) == 0:
            queries = self.vectors[rng.choice(self.n, min(nq, self.n), replace=False)]
        elif len(queries) > nq:
            queries = queries[rng.choice(len(queries), nq, replace=False)]
        q = np.ascontiguousarray(queries, dtype=np.float32)
        qn = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12) if self.normalize else q
        flat = self.index if (self.kind == "exact" and not self.compressed) else faiss.IndexFlatIP(self.dim)
        if flat is not self.index:
            flat.add(self.vectors)
        # Single-query latency of the flat scan from a few queries only: each costs a full scan (40 ms
        # at 200k items), and 200 of them were 8 s of every worker's start-up; the truth is one batch.
        timed = qn[:EXACT_TIMING_QUERIES]
        t0 = time.perf_counter()
        for i in range(len(timed)):
            flat.search(timed[i : i + 1], k)
        t_exact = (time.perf_counter() - t0) / max(len(timed), 1)
        _, truth = flat.search(qn, k)
        qt = self._transform(q)
        _, graph = self.index.search(qt, k)
        out: dict[str, Any] = {f"graph_recall_at_{k}": round(recall_at(graph, truth), 4)}
        if self._head is not None:
            proven = np.mean([self._head_answer(qt[i], k, None) is not None for i in range(len(qt))])
            out["exact_head_share"] = round(float(proven), 4)
            if proven < 0.5:  # norms too even for the bound to prove many answers: graph only
                self._head, self._head_ids = None, np.zeros(0, np.int64)
        # The timed single-query answers are the answers: searching the batch again cost a second pass
        # (about 0.5 s of each worker's start-up at 200k items); a query's answer does not depend on its batch.
        t0 = time.perf_counter()
        found = np.vstack([self.search(q[i : i + 1], k)[0] for i in range(len(q))])
        t_index = (time.perf_counter() - t0) / len(q)
        return {
            f"recall_at_{k}": round(recall_at(found, truth), 4),  # what search() answers
            **out,
            "recall_queries": len(q),
            "exact_ms_per_query": round(t_exact * 1000, 4),
            "index_ms_per_query": round(t_index * 1000, 4),
        }


def _member(values: np.ndarray, excluded: np.ndarray) -> np.ndarray:
    """``np.isin(values, excluded)`` for the few dozen candidates of one query: a binary search in the
    sorted exclusions (a user's history, often already sorted) costs a few microseconds, where
    ``np.isin`` sorts both arrays together on every call.

    >>> _member(np.array([5, 1, 9]), np.array([9, 2, 5]))
    array([ True, False,  True])
    """
    ex = np.asarray(excluded)
    if len(ex) > 1 and bool(np.any(ex[1:] < ex[:-1])):
        ex = np.sort(ex)
    pos = np.minimum(np.searchsorted(ex, values), len(ex) - 1)
    return np.asarray(ex[pos] == values)


def _pq_m(d: int, m: int) -> int:
    m = min(m, d)
    while d % m:
        m -= 1
    return m


DEFAULT_OPTIONS: tuple[dict[str, Any], ...] = (
    {"quantize": "none"},
    {"quantize": "int8"},
    {"quantize": "pq", "pq_m": 16},
    {"quantize": "pq", "pq_m": 8},
    {"pca_dim": 32},
    {"pca_dim": 32, "quantize": "int8"},
    {"pca_dim": 16},
)


def compression_report(
    run: Any, options: Sequence[dict[str, Any]] = DEFAULT_OPTIONS, k: int = 20, split: str = "test"
) -> list[dict[str, Any]]:
    """Recall@``k`` on a run's ``split`` when recommendations come from a compressed item index.

    Full ranking as in :mod:`modalrec.evaluation` (training and validation items masked at test
    time; Recall@K = hits / min(K, #test items), its ``recall_capped``), retrieved from an exact
    index over the stored (possibly PCA-reduced / quantised) vectors so only the compression differs.
    ``run`` is a :class:`modalrec.workflows.rundir.Run` whose model has ``user_vectors``/``item_vectors``.
    """
    ds = run.dataset
    U = np.ascontiguousarray(run.model.user_vectors, dtype=np.float32)
    V = np.ascontiguousarray(run.model.item_vectors, dtype=np.float32)
    target = ds.test if split == "test" else ds.valid
    seen = (ds.train + ds.valid).tocsr() if split == "test" else ds.train.tocsr()
    target = target.tocsr()
    users = np.flatnonzero(np.diff(target.indptr) > 0)
    exclude = [seen.indices[seen.indptr[u] : seen.indptr[u + 1]].astype(np.int64) for u in users]
    rows = []
    for opt in options:
        cfg = IndexConfig(**{"hnsw_threshold": 10**12, **opt})
        idx = VectorIndex(V, cfg, measure=False)
        found, _ = idx.search(U[users], k, exclude=exclude)
        rec = []
        for r, u in enumerate(users):
            truth = target.indices[target.indptr[u] : target.indptr[u + 1]]
            rec.append(len(np.intersect1d(found[r], truth)) / min(k, len(truth)))
        rows.append(
            {
                "pca_dim": cfg.pca_dim or idx.dim,
                "quantize": cfg.quantize
                + (
                    f" (m={_pq_m(idx.report['stored_dim'], cfg.pq_m)}, {_pq_bits(idx.n)} bits)"
                    if cfg.quantize == "pq"
                    else ""
                ),
                f"recall_at_{k}": round(float(np.mean(rec)), 4),
                "index_bytes": idx.report["index_bytes"],
                "float32_bytes": idx.report["float32_bytes"],
                "users": len(users),
            }
        )
    base = rows[0][f"recall_at_{k}"] if rows else 0.0
    for row in rows:
        row["recall_change"] = round(row[f"recall_at_{k}"] - base, 4)
        row["memory_saved"] = round(1 - row["index_bytes"] / max(rows[0]["index_bytes"], 1), 4)
    return rows

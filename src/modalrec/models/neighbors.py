"""Item neighbourhoods without a dense items x items matrix: sparse co-occurrence top-k and feature kNN.

Why a module of its own: ItemKNN, the interaction kNN graph of the graph models, the modality kNN
graphs and the neighbour-restricted EASE all need "the top-k neighbours of every item". Done naively
(one dense ``n_items^2`` similarity, or a dense ``block x n_items`` slab per block of items) that is
160 GB, or minutes of ``argpartition`` over 4e10 numbers, at 200k items. Here:

* **co-occurrence neighbours** (:func:`cooccurrence_topk`) come from the sparse product ``X^T X``
  computed one block of items at a time and pruned to the top ``k`` per row before the next block, so
  memory is the pruned result plus one sparse block; work is ``sum_u d_u^2`` (co-occurring pairs
  only), never ``n_items^2``. Blocks run on a small thread pool (two threads were no faster than one in the
  measurements so far, on a loaded machine: 5.2 s vs 5.5 s at S, 84 s vs 73 s at M; the pool stays for idle machines).
  The selected neighbours and their values are bit-identical to the dense block computation that
  ItemKNN used before (same float32 products, same divisions, same ``argpartition`` per row).
* **feature neighbours** (:func:`feature_topk`) use exact inner products in row chunks up to
  ``exact_max`` present items (bit-identical to the former dense-chunk code), and above it a faiss
  IVF-Flat index (inverted lists over k-means cells; exact inner products inside the probed cells).
  Its recall against the exact search is measured on a seeded sample of queries and returned, so a
  caller can record it (benchmarks/results/itemitem.md states it per size).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from modalrec.core.memory import check_allocation
from modalrec.core.ranking import chunks

#: Above this many present items, :func:`feature_topk` switches from exact chunked search to faiss
#: IVF-Flat. Why 20k: up to it the exact search stays bit-identical to the former code (every benchmark
#: data set is below it: TikTok 6.7k, Baby 7k items) and costs n^2 = 4e8 similarities at most; past it
#: that cost grows as n^2 (4e10 at 200k items) while IVF's grows about as n^1.5 (sqrt(n) cells, 32
#: probed). Times and recall at 50k and 200k items: benchmarks/results/itemitem.md.
EXACT_MAX = 20000


def _threads() -> int:
    """Worker threads for block-parallel work: the machine's cores, at most 4 (memory grows per worker)."""
    return max(1, min(4, os.cpu_count() or 1))


def topk_keep(m: sp.csr_matrix, k: int) -> np.ndarray:
    """Boolean mask over the stored entries of ``m`` (CSR, sorted indices): the ``k`` largest per row.

    Rows with at most ``k`` entries are kept whole in one vectorised step; only longer rows go through
    ``np.argpartition`` (the same call, on the same values in the same column order, as the row loop
    it replaces, so ties are resolved identically).
    """
    lens = np.diff(m.indptr)
    keep = np.ones(m.nnz, dtype=bool)
    for r in np.flatnonzero(lens > k):
        a, b = m.indptr[r], m.indptr[r + 1]
        row_keep = np.zeros(b - a, dtype=bool)
        row_keep[np.argpartition(-m.data[a:b], k - 1)[:k]] = True
        keep[a:b] = row_keep
    return keep


def _select(m: sp.csr_matrix, keep: np.ndarray, data: np.ndarray | None = None) -> sp.csr_matrix:
    """The entries of CSR ``m`` where ``keep`` holds (with ``data`` in place of ``m.data`` if given)."""
    rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))[keep]
    values = (m.data if data is None else data)[keep]
    return sp.csr_matrix((values, m.indices[keep], _indptr(rows, m.shape[0])), shape=m.shape)


def topk_rows(m: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep the ``k`` largest stored entries of each row of a CSR matrix (float32, indices sorted).

    >>> m = sp.csr_matrix(np.array([[3, 1, 2], [0, 5, 0]], np.float32))
    >>> topk_rows(m, 2).toarray().tolist()
    [[3.0, 0.0, 2.0], [0.0, 5.0, 0.0]]
    """
    m = sp.csr_matrix(m, dtype=np.float32)
    m.sort_indices()
    return _select(m, topk_keep(m, k))


@dataclass
class Cooccurrence:
    """Top-k co-occurrence neighbours of every item: two CSR matrices with the same sparsity pattern.

    ``cosine[i, j]`` is the (shrunk) cosine of item columns i and j, ``gram[i, j]`` the raw
    ``(X^T X)[i, j]``; row i holds item i's top-k neighbours by cosine, never i itself. ``degree`` is the
    Gram diagonal (each item's squared column norm).
    """

    cosine: sp.csr_matrix
    gram: sp.csr_matrix
    degree: np.ndarray


def _block_topk(
    xt: sp.csr_matrix, x: sp.csr_matrix, norms: np.ndarray, sl: slice, k: int, shrink: float
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """One block of rows of the top-k cosine (and matching raw Gram) matrix."""
    g = (xt[sl] @ x).tocsr()
    g.sort_indices()
    rows = np.repeat(np.arange(g.shape[0]), np.diff(g.indptr))
    # float32 throughout, in the order the dense code computed it: (n_i * n_j + shrink) + 1e-12
    denom = norms[sl][rows] * norms[g.indices]
    denom = denom + np.float32(shrink)
    denom = denom + np.float32(1e-12)
    cos = (g.data / denom).astype(np.float32)
    nonzero = (g.indices != rows + sl.start) & (cos != 0)
    c = _select(g, nonzero, cos)
    raw = _select(g, nonzero)
    keep = topk_keep(c, k)
    return _select(c, keep), _select(raw, keep)


def _indptr(rows: np.ndarray, n_rows: int) -> np.ndarray:
    """CSR row pointer of entries whose (sorted) row numbers are ``rows``."""
    return np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n_rows))]).astype(np.int64)


def cooccurrence_topk(
    train: sp.spmatrix, k: int, shrink: float = 0.0, block: int = 2048, threads: int | None = None
) -> Cooccurrence:
    """Each item's top-``k`` neighbours by cosine of interaction columns (see :class:`Cooccurrence`).

    Memory: the result (``k`` entries per item, twice) plus ``threads`` sparse blocks of ``X^T X`` rows;
    no dense item x item array, not even a dense block.

    >>> r = sp.csr_matrix(np.array([[1, 1, 0], [1, 1, 1], [0, 0, 1]], np.float32))
    >>> co = cooccurrence_topk(r, 1)
    >>> co.cosine.toarray().round(3).tolist(), co.gram.toarray().tolist(), co.degree.tolist()
    ([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.5, 0.0, 0.0]], [[0.0, 2.0, 0.0], [2.0, 0.0, 0.0], [1.0, 0.0, 0.0]], [2.0, 2.0, 2.0])
    """
    x = sp.csc_matrix(train, dtype=np.float32)
    sq = np.asarray(x.power(2).sum(axis=0)).ravel()
    norms = np.sqrt(sq)
    xt = x.T.tocsr()
    x = x.tocsr()
    blocks = list(chunks(x.shape[1], block))
    with ThreadPoolExecutor(threads or _threads()) as pool:
        parts = list(pool.map(lambda sl: _block_topk(xt, x, norms, sl, k, shrink), blocks))
    if not parts:
        empty = sp.csr_matrix((0, 0), dtype=np.float32)
        return Cooccurrence(empty, empty, sq)
    cos = sp.vstack([p[0] for p in parts]).tocsr()
    gram = sp.vstack([p[1] for p in parts]).tocsr()
    return Cooccurrence(cos, gram, sq.astype(np.float64))


def exact_feature_topk(xn: np.ndarray, mask: np.ndarray, k: int, chunk: int = 2048) -> np.ndarray:
    """``[n_present, k]`` neighbour indices of each present row of unit vectors ``xn`` (absent rows zero).

    Exact inner products, ``chunk`` rows at a time (memory ``chunk x n_items`` floats); self and absent
    items excluded. Bit-for-bit the search :func:`modalrec.models.content.knn_graph` always did.
    """
    n = xn.shape[0]
    check_allocation(
        4.0 * min(chunk, n) * n * 2,
        what=f"exact feature kNN ({min(chunk, n)} x {n} float32 similarity block)",
        alternative="lower the chunk size or let the faiss index take over (feature_topk exact_max)",
    )
    present = np.flatnonzero(mask)
    out = []
    for s in range(0, len(present), chunk):
        r = present[s : s + chunk]
        sim = xn[r] @ xn.T
        sim[:, ~mask] = -np.inf
        sim[np.arange(len(r)), r] = -np.inf
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k] if k < n else np.argsort(-sim, axis=1)[:, :k]
        out.append(top)
    return np.concatenate(out) if out else np.zeros((0, k), dtype=np.int64)


def ivf_feature_topk(
    xn: np.ndarray, mask: np.ndarray, k: int, *, nprobe: int = 32, seed: int = 0
) -> np.ndarray:
    """Approximate :func:`exact_feature_topk` with a faiss IVF-Flat inner-product index.

    ``nlist = 4 sqrt(n_present)`` k-means cells (trained on a seeded sample, so the result is
    deterministic), ``nprobe`` cells searched per query with exact inner products inside them; ``k + 1``
    neighbours are asked for and the item itself dropped.
    """
    import faiss

    present = np.flatnonzero(mask)
    xp = np.ascontiguousarray(xn[present], dtype=np.float32)
    n, d = xp.shape
    nlist = max(1, min(int(4 * np.sqrt(n)), n // 39))
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(seed)
    sample = xp[np.sort(rng.choice(n, size=min(n, 64 * nlist), replace=False))]
    index.cp.seed = seed
    index.train(sample)
    index.add(xp)
    index.nprobe = min(nprobe, nlist)
    out = np.empty((n, k), dtype=np.int64)
    for sl in chunks(n, 16384):
        _, ids = index.search(xp[sl], k + 1)
        out[sl] = _drop_self(ids, np.arange(sl.start, sl.stop), k)
    return present[np.maximum(out, 0)]


def _drop_self(ids: np.ndarray, own: np.ndarray, k: int) -> np.ndarray:
    """From ``k + 1`` search results per row, the first ``k`` that are not the query itself."""
    not_self = ids != own[:, None]
    # stable order: keep the first k entries that are not the query (the last one when self is absent)
    order = np.argsort(~not_self, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(ids, order, axis=1)


def feature_topk(
    x: np.ndarray,
    mask: np.ndarray,
    k: int,
    *,
    exact_max: int = EXACT_MAX,
    nprobe: int = 32,
    chunk: int = 2048,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` cosine neighbours of each present item: returns ``(rows, cols)`` edge arrays.

    Exact up to ``exact_max`` present items, faiss IVF-Flat above (see the module docstring).
    ``k`` is clipped to the number of other present items.
    """
    xn = np.asarray(x, dtype=np.float32)
    xn = xn / np.maximum(np.linalg.norm(xn, axis=1, keepdims=True), 1e-12)
    xn[~mask] = 0.0
    n_present = int(mask.sum())
    k = max(1, min(k, n_present - 1))
    present = np.flatnonzero(mask)
    if n_present <= 1:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    top = (
        exact_feature_topk(xn, mask, k, chunk)
        if n_present <= exact_max
        else ivf_feature_topk(xn, mask, k, nprobe=nprobe)
    )
    return np.repeat(present, k), top.ravel()


def feature_recall(x: np.ndarray, mask: np.ndarray, k: int, *, nprobe: int = 32, sample: int = 2000) -> float:
    """Recall@k of the IVF search against the exact one, on ``sample`` seeded query items.

    What the benchmark records next to the approximate graph: the share of true top-``k`` neighbours
    the index found.
    """
    xn = np.asarray(x, dtype=np.float32)
    xn = xn / np.maximum(np.linalg.norm(xn, axis=1, keepdims=True), 1e-12)
    xn[~mask] = 0.0
    present = np.flatnonzero(mask)
    k = max(1, min(k, len(present) - 1))
    approx = ivf_feature_topk(xn, mask, k, nprobe=nprobe)
    queries = np.sort(
        np.random.default_rng(0).choice(len(present), size=min(sample, len(present)), replace=False)
    )
    hits = 0
    for q in queries:
        sim = xn[present] @ xn[present[q]]
        sim[q] = -np.inf
        truth = present[np.argpartition(-sim, k - 1)[:k]]
        hits += len(np.intersect1d(truth, approx[q]))
    return hits / (len(queries) * k)


def _batches(lens: np.ndarray, budget: int) -> list[slice]:
    """Contiguous item ranges whose padded ``B x N x N`` systems hold about ``budget`` numbers each."""
    width = max(int(lens.max(initial=0)), 1)
    return list(chunks(len(lens), max(1, budget // (width * width))))


def _local_systems(
    gram: sp.csr_matrix, degree: np.ndarray, l2: float, sl: slice
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The padded ridge systems ``(G_SS + l2 I) b = G_Sj`` of the items ``j`` in ``sl``.

    Returns the matrices ``[B, N, N]``, right-hand sides ``[B, N]`` and the (batch row, slot) of every
    real neighbour. ``G_SS[p, q]`` is read from the sparsified Gram: the top-``N`` row of neighbour
    ``p`` (or of ``q``; a pair stored in either direction has its exact count, the Gram being
    symmetric); a pair in neither item's top list counts as 0, as in SANSA's sparsified Gram. Padding
    slots get a 1 on the diagonal and a 0 right-hand side, so their weight is 0.
    """
    n = gram.shape[1]
    lo, hi = gram.indptr[sl.start], gram.indptr[sl.stop]
    lens = np.diff(gram.indptr[sl.start : sl.stop + 1])
    b_of = np.repeat(np.arange(len(lens)), lens)
    p_of = np.arange(hi - lo) - np.repeat(np.cumsum(lens) - lens, lens)
    nb = gram.indices[lo:hi].astype(np.int64)
    width = max(int(lens.max(initial=0)), 1)
    rhs = np.zeros((len(lens), width))
    rhs[b_of, p_of] = gram.data[lo:hi]
    # gather the neighbours' own rows, then find each of their columns among the query's neighbours
    rl = np.diff(gram.indptr)[nb]
    src = np.repeat(gram.indptr[nb], rl) + np.arange(rl.sum()) - np.repeat(np.cumsum(rl) - rl, rl)
    eb, ep = np.repeat(b_of, rl), np.repeat(p_of, rl)
    keys = b_of * n + nb  # ascending: batch rows in order, each row's neighbours sorted
    query = eb * n + gram.indices[src]
    loc = np.minimum(np.searchsorted(keys, query), max(len(keys) - 1, 0))
    hit = keys[loc] == query
    a = np.zeros((len(lens), width, width))
    a[eb[hit], ep[hit], p_of[loc[hit]]] = gram.data[src[hit]]
    a = np.where(a != 0, a, a.transpose(0, 2, 1))
    diag = np.ones((len(lens), width))
    diag[b_of, p_of] = degree[nb] + l2
    idx = np.arange(width)
    a[:, idx, idx] = diag
    return a, rhs, b_of, p_of


def _spd_solve(a: np.ndarray, rhs: np.ndarray) -> tuple[np.ndarray, int]:
    """Batched Cholesky solve; a system the sparsified Gram left indefinite gets its diagonal raised to
    diagonal dominance (Gershgorin: then it is positive definite) and is solved again.

    Returns the solutions and how many systems needed the fix.
    """
    at = torch.from_numpy(a)
    chol, info = torch.linalg.cholesky_ex(at)
    bad = info != 0
    if bool(bad.any()):
        fix = at[bad]
        off = fix.abs().sum(-1) - torch.diagonal(fix, dim1=-2, dim2=-1).abs()
        diag = torch.diagonal(fix, dim1=-2, dim2=-1)
        fix = fix + torch.diag_embed(torch.clamp(off - diag, min=0.0) + 1e-6 * diag)
        chol[bad] = torch.linalg.cholesky(fix)
    sol = torch.cholesky_solve(torch.from_numpy(rhs)[..., None], chol)[..., 0]
    return sol.numpy(), int(bad.sum())


def neighbor_ease_weights(
    co: Cooccurrence, l2: float, *, budget: int = 4_000_000
) -> tuple[sp.csr_matrix, int]:
    """EASE restricted to each item's neighbours: ``B[S_j, j] = (G_SS + l2 I)^-1 G_Sj`` per item ``j``.

    Why this is EASE: EASE's constrained solution is, column by column, the ridge regression of item
    ``j``'s column on all *other* item columns (the zero-diagonal constraint just drops ``j``); here the
    regressors are ``S_j``, ``j``'s top co-occurrence neighbours (the rows of ``co``), and ``G`` is the
    Gram matrix sparsified to those top lists (in the spirit of SANSA, Spisak et al. 2023, which
    sparsifies the Gram before its approximate inverse). With every item a neighbour of every other the
    weights equal EASE's (tests check it). Cost: one ``N x N`` solve per item (``N`` = neighbours),
    batched, plus ``N^2`` look-ups per item; memory ``O(n_items N)`` plus one batch; never ``n_items^2``.

    Returns ``B`` as CSR (row: history item, column: scored item), so ``score(u) = x_u B``, and the
    number of items whose system needed the diagonal-dominance fix of :func:`_spd_solve`.
    """
    gram = co.gram.tocsr()
    gram.sort_indices()
    out = np.zeros(gram.nnz, dtype=np.float32)
    fixed = 0
    for sl in _batches(np.diff(gram.indptr), budget):
        if gram.indptr[sl.stop] == gram.indptr[sl.start]:
            continue
        a, rhs, b_of, p_of = _local_systems(gram, co.degree, l2, sl)
        sol, n_fixed = _spd_solve(a, rhs)
        out[gram.indptr[sl.start] : gram.indptr[sl.stop]] = sol[b_of, p_of]
        fixed += n_fixed
    bt = sp.csr_matrix((out, gram.indices, gram.indptr), shape=gram.shape)
    return bt.T.tocsr(), fixed

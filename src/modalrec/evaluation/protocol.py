"""Full-ranking evaluation protocol.

Every item in the catalogue is ranked for every evaluated user (no sampled negatives). Items the user
interacted with in training are masked, and at test time validation items are masked too. Users with
no relevant item in the evaluated split are skipped; the number of evaluated users is reported.

Scale: scoring runs in user chunks so that the user x item score matrix is never materialised. The
chunk is sized from the memory budget of :mod:`modalrec.core.memory` by
:func:`~modalrec.core.ranking.plan_chunk_size` (at most 4096 users and ``CHUNK_TARGET_BYTES`` of
scores, so a 200k-item catalogue ranks about 330 users at a time) and a
chunk that cannot fit stops with a :class:`~modalrec.core.memory.MemoryBudgetError` naming its size.
While one chunk is scored and ranked (torch, on every core), the metrics of the previous one are
computed on a second thread. Nothing else grows with users x items: hits are looked up in the sparse
truth, coverage is kept as one flag per item. Cost: O(users x items x (dim + log K)) time for an
embedding model, O(chunk x items + users x |metrics|) memory.

A seeded uniform sample of the users (``sample_users=n, seed=s``) costs n / users of the full run
and reports a confidence interval for each metric: the normal approximation over users,
``mean +- z * sd / sqrt(n) * sqrt((N - n) / (N - 1))`` (sampling without replacement from the N
eligible users, hence the finite-population factor; sd with ddof=1).
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import scipy.sparse as sp
import torch

from modalrec.core.ranking import (
    CHUNK_TARGET_BYTES,
    MAX_CHUNK_USERS,
    SCORE_COPIES,
    chunks,
    exact_topk,
    mask_rows,
    plan_chunk_size,
    reuse_freed_memory,
)
from modalrec.evaluation.metrics import hit_matrix, mean_metrics, per_user_metrics

if TYPE_CHECKING:
    from modalrec.data.dataset import Dataset


class Scorer(Protocol):
    """What evaluation needs of a model: float32 scores ``[len(users), n_items]`` for a user chunk.

    Every :class:`modalrec.models.Recommender` is one (structurally); evaluation never imports
    models, so any object with ``_score`` can be evaluated.
    """

    def _score(self, users: np.ndarray) -> torch.Tensor: ...


DEFAULT_KS: tuple[int, ...] = (10, 20, 50)
CI_METHOD = "normal approximation over users, finite-population corrected"


@dataclass
class EvalResult:
    """Mean metrics plus the context a reader needs to trust them.

    ``n_users`` counts the users evaluated; ``population`` the users eligible (with a relevant
    item). With a user sample (``sample_users``) ``confidence`` holds ``(low, high)`` per metric.
    """

    metrics: dict[str, float]
    n_users: int
    split: str
    seconds: float
    coverage: dict[str, float] = field(default_factory=dict)
    per_user: dict[str, np.ndarray] | None = None
    users: np.ndarray | None = None
    population: int = 0
    sample_seed: int | None = None
    confidence: dict[str, tuple[float, float]] = field(default_factory=dict)
    confidence_level: float = 0.95
    chunk_size: int = 0

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "split": self.split,
            "n_users": self.n_users,
            "seconds": round(self.seconds, 4),
            "metrics": self.metrics,
            "coverage": self.coverage,
            "recall_definition": "hits / #relevant (MMRec code); recall_capped = hits / min(K, #relevant)",
        }
        if self.sample_seed is not None:
            out["sample"] = {
                "users": self.n_users,
                "population": self.population,
                "seed": self.sample_seed,
                "confidence_level": self.confidence_level,
                "confidence_method": CI_METHOD,
                "confidence": {k: [lo, hi] for k, (lo, hi) in self.confidence.items()},
            }
        return out

    def __getitem__(self, key: str) -> float:
        return self.metrics[key]


def sample_users(eligible: np.ndarray, n: int, seed: int) -> np.ndarray:
    """A seeded uniform sample of ``n`` users (without replacement), in ascending order.

    >>> sample_users(np.arange(100), 5, seed=0).tolist() == sample_users(np.arange(100), 5, seed=0).tolist()
    True
    """
    if n < 1:
        raise ValueError(f"sample_users must be >= 1, got {n}")
    if n >= len(eligible):
        return np.asarray(eligible, dtype=np.int64)
    pick = np.random.default_rng(seed).choice(len(eligible), size=n, replace=False)
    return np.sort(np.asarray(eligible, dtype=np.int64)[pick])


def confidence_intervals(
    per_user: dict[str, np.ndarray], population: int, level: float = 0.95
) -> dict[str, tuple[float, float]]:
    """``(low, high)`` per metric for the mean over a uniform user sample (see the module docstring).

    >>> ci = confidence_intervals({"hit@1": np.array([0.0, 1.0, 1.0, 0.0])}, population=4)
    >>> ci["hit@1"]  # the whole population was evaluated: no sampling error
    (0.5, 0.5)
    """
    z = NormalDist().inv_cdf(0.5 + level / 2)
    out: dict[str, tuple[float, float]] = {}
    for key, values in per_user.items():
        v = values[np.isfinite(values)]
        n = len(v)
        if n == 0:
            out[key] = (float("nan"), float("nan"))
            continue
        mean = float(v.mean())
        fpc = float(np.sqrt(max(population - n, 0) / (population - 1))) if population > 1 else 0.0
        half = z * float(v.std(ddof=1)) / np.sqrt(n) * fpc if n > 1 else float("inf")
        out[key] = (float(mean - half), float(mean + half))
    return out


@dataclass
class _Accumulator:
    """Per-user metric parts and per-k coverage flags, filled chunk by chunk (on the helper thread)."""

    ks: tuple[int, ...]
    n_candidates: int
    parts: list[dict[str, np.ndarray]] = field(default_factory=list)
    covered: dict[int, np.ndarray] = field(default_factory=dict)

    def add(self, top: np.ndarray, truth: sp.csr_matrix) -> None:
        self.parts.append(per_user_metrics(hit_matrix(top, truth), np.diff(truth.indptr), self.ks))
        for k in self.ks:
            flags = self.covered.setdefault(k, np.zeros(self.n_candidates, dtype=bool))
            flags[top[:, :k].ravel()] = True

    def per_user(self) -> dict[str, np.ndarray]:
        if not self.parts:
            return {f"{m}@{k}": np.array([]) for m in ("recall", "ndcg") for k in self.ks}
        return {k: np.concatenate([p[k] for p in self.parts]) for k in self.parts[0]}

    def coverage(self) -> dict[str, float]:
        if not self.parts:
            return {}
        n = max(self.n_candidates, 1)
        return {f"coverage@{k}": float(self.covered[k].sum() / n) for k in self.ks}


def evaluate(
    model: Scorer,
    dataset: Dataset,
    split: str = "test",
    *,
    ks: tuple[int, ...] = DEFAULT_KS,
    chunk_size: int | None = None,
    users: np.ndarray | None = None,
    candidate_items: np.ndarray | None = None,
    keep_per_user: bool = False,
    scorer: Any = None,
    sample_users: int | None = None,
    seed: int = 0,
    confidence_level: float = 0.95,
) -> EvalResult:
    """Rank all items for each user with relevant items in ``split`` and average the metrics.

    Args:
        model: a fitted recommender (its ``_score`` is called on user chunks).
        dataset: holds the split matrices; ``dataset.seen(split)`` is masked.
        split: ``"valid"`` or ``"test"``.
        ks: cut-offs.
        chunk_size: users per scoring chunk; default sized from the memory budget (see
            :func:`plan_chunk_size`). It never changes the metrics.
        users: evaluate only these user indices (default: every user with a relevant item).
        candidate_items: rank only these items (the cold-start protocol ranks cold items only);
            relevant items outside the candidates are ignored.
        keep_per_user: keep per-user values (for bootstrap confidence intervals).
        scorer: optional callable ``users -> torch.Tensor`` used instead of ``model._score``.
        sample_users: evaluate a seeded uniform sample of this many eligible users (``seed``) and
            report a ``confidence_level`` interval per metric (see the module docstring).
    """
    start = time.perf_counter()
    truth, seen, cand = _split_matrices(dataset, split, candidate_items)
    n_rel_all = np.diff(truth.indptr)
    eligible = np.flatnonzero(n_rel_all > 0) if users is None else _eligible(users, n_rel_all)
    chosen = eligible if sample_users is None else _sample(eligible, sample_users, seed)
    n_cand = len(cand) if cand is not None else dataset.n_items
    size = plan_chunk_size(n_cand, chunk_size, n_users=len(chosen) if chunk_size is None else None)
    acc = _Accumulator(ks, n_cand)
    _rank_all(scorer if scorer is not None else model._score, chosen, truth, seen, cand, size, acc)
    per_user = acc.per_user()
    ci = confidence_intervals(per_user, len(eligible), confidence_level) if sample_users is not None else {}
    return EvalResult(
        metrics=mean_metrics(per_user),
        n_users=len(chosen),
        split=split,
        seconds=time.perf_counter() - start,
        coverage=acc.coverage(),
        per_user=per_user if keep_per_user else None,
        users=chosen if keep_per_user else None,
        population=len(eligible),
        sample_seed=seed if sample_users is not None else None,
        confidence=ci,
        confidence_level=confidence_level,
        chunk_size=size,
    )


def _split_matrices(
    dataset: Dataset, split: str, candidate_items: np.ndarray | None
) -> tuple[sp.csr_matrix, sp.csr_matrix, np.ndarray | None]:
    """Truth and mask of ``split``, restricted to the candidate items when there are some."""
    truth = dataset.target(split)
    seen = dataset.seen(split)
    if candidate_items is None:
        return truth, seen, None
    cand = np.asarray(candidate_items, dtype=np.int64)
    return truth[:, cand].tocsr(), seen[:, cand].tocsr(), cand


def _eligible(users: np.ndarray, n_rel_all: np.ndarray) -> np.ndarray:
    u = np.asarray(users, dtype=np.int64)
    return u[n_rel_all[u] > 0]


def _sample(eligible: np.ndarray, n: int, seed: int) -> np.ndarray:
    return sample_users(eligible, n, seed)


def _rank_all(
    score_fn: Any,
    users: np.ndarray,
    truth: sp.csr_matrix,
    seen: sp.csr_matrix,
    cand: np.ndarray | None,
    chunk_size: int,
    acc: _Accumulator,
) -> None:
    """Score, mask and rank chunk after chunk; the metrics of chunk i run while chunk i+1 ranks.

    Why a second thread: torch's matrix product and top-k use every core, but the metric step
    (sparse slicing, hit look-up, numpy arithmetic) is single-threaded and would leave a core idle.
    Chunks are added in order, so the result is the same as a sequential loop.
    """
    kmax = max(acc.ks)
    cand_t = torch.as_tensor(cand) if cand is not None else None
    pending: Future[None] | None = None
    with ThreadPoolExecutor(max_workers=1) as pool, torch.inference_mode(), reuse_freed_memory():
        for sl in chunks(len(users), chunk_size):
            rows = users[sl]
            s = score_fn(rows).float()
            if cand_t is not None:
                s = s[:, cand_t]
            s = mask_rows(s.clone() if not s.is_contiguous() else s, seen, rows)
            top = exact_topk(s, min(kmax, s.shape[1]))[1].numpy()
            del s
            if pending is not None:
                pending.result()
            pending = pool.submit(acc.add, top, truth[rows])
        if pending is not None:
            pending.result()


def recall_at(model: Scorer, dataset: Dataset, split: str = "valid", k: int = 20) -> float:
    """Recall@k on a split; the early-stopping criterion of every trained model."""
    return evaluate(model, dataset, split, ks=(k,)).metrics[f"recall@{k}"]


__all__ = [
    "CHUNK_TARGET_BYTES",
    "CI_METHOD",
    "DEFAULT_KS",
    "MAX_CHUNK_USERS",
    "SCORE_COPIES",
    "EvalResult",
    "Scorer",
    "confidence_intervals",
    "evaluate",
    "plan_chunk_size",
    "recall_at",
    "sample_users",
]

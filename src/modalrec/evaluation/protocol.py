"""Full-ranking evaluation protocol.

Every item in the catalogue is ranked for every evaluated user (no sampled negatives). Items the user
interacted with in training are masked, and at test time validation items are masked too. Users with
no relevant item in the evaluated split are skipped; the number of evaluated users is reported.

Scoring runs in user chunks so that the user x item score matrix is never materialised.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from modalrec.core.ranking import chunks, mask_rows
from modalrec.evaluation.metrics import coverage, hit_matrix, mean_metrics, per_user_metrics

if TYPE_CHECKING:
    from modalrec.data.dataset import Dataset


class Scorer(Protocol):
    """What evaluation needs of a model: float32 scores ``[len(users), n_items]`` for a user chunk.

    Every :class:`modalrec.models.Recommender` is one (structurally); evaluation never imports
    models, so any object with ``_score`` can be evaluated.
    """

    def _score(self, users: np.ndarray) -> torch.Tensor: ...


DEFAULT_KS: tuple[int, ...] = (10, 20, 50)


@dataclass
class EvalResult:
    """Mean metrics plus the context a reader needs to trust them."""

    metrics: dict[str, float]
    n_users: int
    split: str
    seconds: float
    coverage: dict[str, float] = field(default_factory=dict)
    per_user: dict[str, np.ndarray] | None = None
    users: np.ndarray | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "n_users": self.n_users,
            "seconds": round(self.seconds, 4),
            "metrics": self.metrics,
            "coverage": self.coverage,
            "recall_definition": "hits / #relevant (MMRec code); recall_capped = hits / min(K, #relevant)",
        }

    def __getitem__(self, key: str) -> float:
        return self.metrics[key]


def evaluate(
    model: Scorer,
    dataset: Dataset,
    split: str = "test",
    *,
    ks: tuple[int, ...] = DEFAULT_KS,
    chunk_size: int = 4096,
    users: np.ndarray | None = None,
    candidate_items: np.ndarray | None = None,
    keep_per_user: bool = False,
    scorer: Any = None,
) -> EvalResult:
    """Rank all items for each user with relevant items in ``split`` and average the metrics.

    Args:
        model: a fitted recommender (its ``_score`` is called on user chunks).
        dataset: holds the split matrices; ``dataset.seen(split)`` is masked.
        split: ``"valid"`` or ``"test"``.
        ks: cut-offs.
        users: evaluate only these user indices (default: every user with a relevant item).
        candidate_items: rank only these items (the cold-start protocol ranks cold items only);
            relevant items outside the candidates are ignored.
        keep_per_user: keep per-user values (for bootstrap confidence intervals).
        scorer: optional callable ``users -> torch.Tensor`` used instead of ``model._score``.
    """
    start = time.perf_counter()
    truth = dataset.target(split)
    seen = dataset.seen(split)
    if candidate_items is not None:
        cand = np.asarray(candidate_items, dtype=np.int64)
        truth = truth[:, cand].tocsr()
        seen = seen[:, cand].tocsr()
    else:
        cand = None
    n_rel_all = np.diff(truth.indptr)
    if users is None:
        users = np.flatnonzero(n_rel_all > 0)
    else:
        users = np.asarray(users, dtype=np.int64)
        users = users[n_rel_all[users] > 0]
    kmax = max(ks)
    score_fn = scorer if scorer is not None else model._score
    per_user_parts: list[dict[str, np.ndarray]] = []
    topk_all: list[np.ndarray] = []
    with torch.inference_mode():
        for sl in chunks(len(users), chunk_size):
            rows = users[sl]
            s = score_fn(rows).float()
            if cand is not None:
                s = s[:, torch.as_tensor(cand)]
            s = mask_rows(s.clone() if not s.is_contiguous() else s, seen, rows)
            k = min(kmax, s.shape[1])
            top = torch.topk(s, k, dim=1, sorted=True).indices.numpy()
            topk_all.append(top)
            t = truth[rows]
            per_user_parts.append(per_user_metrics(hit_matrix(top, t), np.diff(t.indptr), ks))
    if per_user_parts:
        per_user = {k: np.concatenate([p[k] for p in per_user_parts]) for k in per_user_parts[0]}
        topk = np.concatenate(topk_all)
        n_cov = len(cand) if cand is not None else dataset.n_items
        cov = {f"coverage@{k}": coverage(topk, n_cov, k) for k in ks}
    else:
        per_user = {f"{m}@{k}": np.array([]) for m in ("recall", "ndcg") for k in ks}
        cov = {}
    return EvalResult(
        metrics=mean_metrics(per_user),
        n_users=len(users),
        split=split,
        seconds=time.perf_counter() - start,
        coverage=cov,
        per_user=per_user if keep_per_user else None,
        users=users if keep_per_user else None,
    )


def recall_at(model: Scorer, dataset: Dataset, split: str = "valid", k: int = 20) -> float:
    """Recall@k on a split; the early-stopping criterion of every trained model."""
    return evaluate(model, dataset, split, ks=(k,)).metrics[f"recall@{k}"]

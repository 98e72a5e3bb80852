"""Full-ranking evaluation: pure metric functions and the protocol that applies them."""

from modalrec.evaluation.halves import HALVES_SEED, split_users, validation_halves
from modalrec.evaluation.metrics import METRICS, coverage, hit_matrix, mean_metrics, per_user_metrics
from modalrec.evaluation.protocol import DEFAULT_KS, EvalResult, evaluate, recall_at

__all__ = [
    "DEFAULT_KS",
    "HALVES_SEED",
    "METRICS",
    "EvalResult",
    "coverage",
    "evaluate",
    "hit_matrix",
    "mean_metrics",
    "per_user_metrics",
    "recall_at",
    "split_users",
    "validation_halves",
]

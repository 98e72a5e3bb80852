"""Full-ranking evaluation over user shards as Ray tasks: the metrics of :func:`~.protocol.evaluate`.

How: the driver chooses the users exactly as the local evaluator does (eligible users, optional
seeded sample), cuts them into contiguous shards, and puts the model and the split's truth and
mask matrices into Ray's object store once. Each task (one CPU) ranks its shard with the local
evaluator's own chunk loop (:func:`~.protocol._rank_all`) and returns the per-user metric values and
its coverage flags; the driver concatenates the per-user values in user order and averages them as
the local evaluator does, and ORs the coverage flags.

Why the numbers agree: every per-user value is computed by the same code from the same scores.
Shard borders fall on the local evaluator's chunk borders whenever there are at least as many
chunks as tasks, so every user is scored in the same chunk as locally and the metrics are equal bit
for bit. With fewer chunks than tasks (small data) the chunks are cut smaller, and a score can differ
in its last bit from a local one (a matrix product over fewer rows); a rank changes only when two
items tie to the last bit, so the means agree to far better than 1e-6 in practice (the tests check it).
"""

from __future__ import annotations

import itertools
import time
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from modalrec.core.ranking import plan_chunk_size
from modalrec.core.raycluster import cluster_cpus, connect
from modalrec.evaluation.metrics import mean_metrics
from modalrec.evaluation.protocol import (
    DEFAULT_KS,
    EvalResult,
    Scorer,
    _Accumulator,
    _rank_all,
    _sample,
    _split_matrices,
    confidence_intervals,
)

if TYPE_CHECKING:
    from modalrec.data.dataset import Dataset


def shard_bounds(n_users: int, chunk: int, shards: int) -> tuple[list[tuple[int, int]], int]:
    """``([(start, end), ...], chunk)``: contiguous user shards on chunk borders, and the chunk size.

    Whole chunks are spread over the shards when there are enough of them; otherwise the chunk is cut
    to ``ceil(n_users / shards)`` so that every shard gets work.

    >>> shard_bounds(10, 4, 2)  # 3 chunks of 4 users over 2 shards
    ([(0, 8), (8, 10)], 4)
    >>> shard_bounds(10, 100, 3)  # one chunk: cut into 3
    ([(0, 4), (4, 8), (8, 10)], 4)
    """
    if n_users == 0:
        return [], max(chunk, 1)
    n_chunks = -(-n_users // chunk)
    if n_chunks < shards:
        chunk = -(-n_users // shards)
        n_chunks = -(-n_users // chunk)
    per = np.linspace(0, n_chunks, min(shards, n_chunks) + 1).round().astype(int)
    bounds = [(int(a) * chunk, min(int(b) * chunk, n_users)) for a, b in itertools.pairwise(per.tolist())]
    return [(a, b) for a, b in bounds if b > a], chunk


def rank_shard(
    model: Scorer,
    users: np.ndarray,
    truth: sp.csr_matrix,
    seen: sp.csr_matrix,
    cand: np.ndarray | None,
    chunk: int,
    ks: tuple[int, ...],
    n_cand: int,
) -> tuple[dict[str, np.ndarray], dict[int, np.ndarray]]:
    """One Ray task: rank a shard of users; returns its per-user metrics and coverage flags."""
    acc = _Accumulator(ks, n_cand)
    _rank_all(model._score, users, truth, seen, cand, chunk, acc)
    return acc.per_user(), acc.covered


def evaluate_ray(
    model: Scorer,
    dataset: Dataset,
    split: str = "test",
    *,
    ks: tuple[int, ...] = DEFAULT_KS,
    chunk_size: int | None = None,
    candidate_items: np.ndarray | None = None,
    sample_users: int | None = None,
    seed: int = 0,
    confidence_level: float = 0.95,
    tasks: int | None = None,
    address: str | None = None,
) -> EvalResult:
    """:func:`~modalrec.evaluation.protocol.evaluate` with the users ranked by ``tasks`` Ray tasks
    (default: one per CPU of the cluster at ``address``, or of a local Ray runtime)."""
    ray = connect(address)
    start = time.perf_counter()
    truth, seen, cand = _split_matrices(dataset, split, candidate_items)
    n_rel_all = np.diff(truth.indptr)
    eligible = np.flatnonzero(n_rel_all > 0)
    chosen = eligible if sample_users is None else _sample(eligible, sample_users, seed)
    n_cand = len(cand) if cand is not None else dataset.n_items
    size = plan_chunk_size(n_cand, chunk_size, n_users=len(chosen) if chunk_size is None else None)
    bounds, chunk = shard_bounds(len(chosen), size, tasks or cluster_cpus(ray))
    task = ray.remote(num_cpus=1)(rank_shard)
    refs = [ray.put(x) for x in (model, truth, seen)]
    futures = [
        task.remote(refs[0], chosen[a:b], refs[1], refs[2], cand, chunk, ks, n_cand) for a, b in bounds
    ]
    acc = _Accumulator(ks, n_cand)
    for per_user, covered in ray.get(futures):
        acc.parts.append(per_user)
        for k, flags in covered.items():
            acc.covered[k] = flags if k not in acc.covered else acc.covered[k] | flags
    per_user_all = acc.per_user()
    ci = (
        confidence_intervals(per_user_all, len(eligible), confidence_level)
        if sample_users is not None
        else {}
    )
    return EvalResult(
        metrics=mean_metrics(per_user_all),
        n_users=len(chosen),
        split=split,
        seconds=time.perf_counter() - start,
        coverage=acc.coverage(),
        population=len(eligible),
        sample_seed=seed if sample_users is not None else None,
        confidence=ci,
        confidence_level=confidence_level,
        chunk_size=chunk,
    )

"""Shared training loop pieces: BPR triplet sampling, early stopping on validation Recall@20, progress.

Why shared: every trained model (BPR-MF, LightGCN, the multimodal ones) must stop on the same
criterion, measured the same way, on validation data only, and show the same progress bar.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

if TYPE_CHECKING:
    from modalrec.core.progress import PlainProgress
    from modalrec.data.dataset import Dataset
    from modalrec.models.base import Recommender


#: Callbacks ``(epoch, valid_recall@20) -> None`` run after every validation check of any model
#: trained in this context. Why a context variable: hyperparameter search (``modalrec tune``) must
#: see the validation curve to prune bad trials, without every model growing a callback argument.
#: A callback may raise (e.g. ``optuna.TrialPruned``) to abort training.
_VALIDATION_HOOKS: ContextVar[tuple[Callable[[int, float], None], ...]] = ContextVar(
    "modalrec_validation_hooks", default=()
)


@contextlib.contextmanager
def validation_hook(callback: Callable[[int, float], None]) -> Iterator[None]:
    """Call ``callback(epoch, valid_recall_at_20)`` after each validation check inside the block.

    >>> seen = []
    >>> with validation_hook(lambda e, v: seen.append((e, v))):
    ...     for cb in _VALIDATION_HOOKS.get():
    ...         cb(5, 0.25)
    >>> seen, _VALIDATION_HOOKS.get()
    ([(5, 0.25)], ())
    """
    token = _VALIDATION_HOOKS.set((*_VALIDATION_HOOKS.get(), callback))
    try:
        yield
    finally:
        _VALIDATION_HOOKS.reset(token)


def seed_everything(seed: int) -> np.random.Generator:
    """Seed torch and return a numpy Generator; every trained model calls this first."""
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


class BPRSampler:
    """Uniform (user, positive, negative) triplets from a CSR matrix, one epoch = nnz triplets.

    Negatives are drawn uniformly and re-drawn (vectorised) while they hit a training positive,
    the standard BPR/LightGCN protocol. Sampling is numpy-vectorised: an epoch over Amazon Baby's
    120k interactions takes milliseconds.
    """

    def __init__(self, train: sp.csr_matrix, rng: np.random.Generator) -> None:
        self.train = train.tocsr()
        self.rng = rng
        coo = self.train.tocoo()
        self.users = coo.row.astype(np.int64)
        self.pos = coo.col.astype(np.int64)
        self.n_items = train.shape[1]
        # Sorted keys user * n_items + item for O(log n) membership tests.
        self._keys = np.sort(self.users * self.n_items + self.pos)

    def _is_pos(self, u: np.ndarray, i: np.ndarray) -> np.ndarray:
        k = u * self.n_items + i
        j = np.searchsorted(self._keys, k)
        j = np.minimum(j, len(self._keys) - 1)
        return self._keys[j] == k

    def draw(self, size: int) -> np.ndarray:
        """``size`` candidate negatives (uniform over the catalogue; subclasses narrow the pool)."""
        return self.rng.integers(0, self.n_items, size=size)

    def negatives(self, order: np.ndarray) -> np.ndarray:
        """One negative per triplet of the shuffled epoch ``order``, none of them a training positive.

        Why tested in stored order: the stored triplets are sorted by user, so neighbouring membership
        queries share a user and their binary searches stay in cache; in shuffled order every query
        missed the cache once the keys outgrew it (45x the time at 10M interactions for 10x the data,
        ``benchmarks/graph_linear.py``). Only redrawn negatives are tested again. The random draws are
        the same as testing in shuffled order, so seeded runs give the same triplets.
        """
        n = self.draw(len(order))
        in_stored = np.empty_like(n)
        in_stored[order] = n
        bad = np.flatnonzero(self._is_pos(self.users, in_stored)[order])
        for _ in range(20):
            if len(bad) == 0:
                break
            n[bad] = self.draw(len(bad))
            bad = bad[self._is_pos(self.users[order[bad]], n[bad])]
        return n

    def epoch(self, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        order = self.rng.permutation(len(self.users))
        u, p = self.users[order], self.pos[order]
        n = self.negatives(order)
        return [
            (
                torch.from_numpy(u[s : s + batch_size]),
                torch.from_numpy(p[s : s + batch_size]),
                torch.from_numpy(n[s : s + batch_size]),
            )
            for s in range(0, len(u), batch_size)
        ]


@dataclass
class EarlyStopping:
    """Track validation Recall@20 and keep the best state; stop after ``patience`` checks without gain.

    >>> es = EarlyStopping(patience=2)
    >>> [es.update(v, epoch=i, state={"e": i}) for i, v in enumerate([0.1, 0.2, 0.15, 0.19])]
    [True, True, True, False]
    >>> es.best_epoch, es.best_state
    (1, {'e': 1})
    """

    patience: int = 10
    min_delta: float = 0.0
    best: float = -math.inf
    best_epoch: int = -1
    best_state: Any = None
    bad_checks: int = 0
    history: list[dict[str, float]] = field(default_factory=list)

    def update(self, value: float, *, epoch: int, state: Any) -> bool:
        """Record a validation value; returns False when training should stop."""
        self.history.append({"epoch": epoch, "valid_recall@20": value})
        if value > self.best + self.min_delta:
            self.best, self.best_epoch, self.best_state = value, epoch, copy.deepcopy(state)
            self.bad_checks = 0
        else:
            self.bad_checks += 1
        return self.bad_checks < self.patience


def make_progress(enabled: bool) -> Progress | PlainProgress:
    """A live rich bar in a terminal; plain periodic lines on stderr otherwise (logs, ``| tee``).

    Why not always rich: drawn into a pipe, a rich bar is printed once, at the end, cut to 80
    columns. :class:`~modalrec.core.progress.PlainProgress` has the same ``add_task``/``update``.
    """
    from modalrec.core.progress import PlainProgress, output_is_terminal

    if enabled and not output_is_terminal():
        return PlainProgress()
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        disable=not enabled,
        transient=False,
    )


def train_with_early_stopping(
    model: Recommender[Any],
    dataset: Dataset,
    *,
    run_epoch: Callable[[int], float],
    get_state: Callable[[], dict[str, torch.Tensor]],
    set_state: Callable[[dict[str, torch.Tensor]], None],
    epochs: int,
    eval_every: int,
    patience: int,
    progress: bool,
) -> None:
    """Run ``run_epoch`` (returns mean loss) up to ``epochs`` times, validating every ``eval_every``.

    The best state by validation Recall@20 is restored at the end, and ``model.meta`` records the
    best epoch, the validation curve and per-epoch training seconds (reported by benchmarks).
    Without validation interactions the model trains for the full ``epochs`` (no early stopping).
    """
    es = EarlyStopping(patience=patience)
    has_valid = dataset.valid.nnz > 0
    epoch_seconds: list[float] = []
    losses: list[float] = []
    with make_progress(progress) as bar:
        task = bar.add_task(f"{model.name}", total=epochs, status="")
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            loss = run_epoch(epoch)
            epoch_seconds.append(time.perf_counter() - t0)
            losses.append(float(loss))
            status = f"loss {loss:.4f}"
            if has_valid and (epoch % eval_every == 0 or epoch == epochs):
                rec = model.validate()
                keep_going = es.update(rec, epoch=epoch, state=get_state())
                for hook in _VALIDATION_HOOKS.get():
                    hook(epoch, rec)
                status += f"  valid R@20 {rec:.4f} (best {es.best:.4f} @ {es.best_epoch})"
                if not keep_going:
                    bar.update(task, advance=1, status=status + "  early stop")
                    break
            bar.update(task, advance=1, status=status)
    if has_valid and es.best_state is not None:
        set_state(es.best_state)
    model.meta.update(training_meta(es, has_valid, losses, epoch_seconds))


def training_meta(
    es: EarlyStopping, has_valid: bool, losses: list[float], epoch_seconds: list[float]
) -> dict[str, Any]:
    """What a trained model's ``meta`` records of its training (local and data-parallel runs alike)."""
    return {
        "epochs_run": len(epoch_seconds),
        "best_epoch": es.best_epoch if has_valid else len(epoch_seconds),
        "best_valid_recall@20": es.best if has_valid else None,
        "valid_curve": es.history,
        "train_loss": losses,
        "epoch_seconds": epoch_seconds,
        "mean_epoch_seconds": float(np.mean(epoch_seconds)) if epoch_seconds else 0.0,
    }

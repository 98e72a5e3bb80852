"""Data-parallel BPR training of the embedding models over ``torch.distributed`` (gloo on CPU).

What each of the N workers does (Ray Train starts them and the process group:
:mod:`modalrec.workflows.ray_train`; nothing here imports Ray):

* **Same model, same stream.** Every worker seeds, builds the network and draws the epoch's
  triplets as a local fit does (same seed, same numpy generator, set to rank 0's state at each
  epoch start), so the N workers hold identical parameters and identical global mini-batches.
* **A shard per worker.** Worker r trains on ``batch[r::N]`` of every global mini-batch: a disjoint
  1/N of the epoch's interactions, re-drawn every epoch (the scheme of PyTorch's
  ``DistributedSampler``: a shared seeded permutation, strided per rank). Mini-batches with fewer
  triplets than workers (at most the epoch's last one) are dropped on every worker alike.
* **Gradients synchronised.** After its backward pass a worker multiplies each gradient by its
  triplet count, the gradients are summed across workers (one ``all_reduce`` of one flat buffer)
  and divided by the global count: the gradient of the global mini-batch's mean loss, so one
  optimiser step on N workers is the step of one worker on the whole batch (up to float summation
  order). Only the rows that carry a gradient travel: a small all-reduce first tells every worker
  which rows of each embedding table are non-zero on any worker (BPR-MF: the users and items of the
  global mini-batch, a few thousand of a catalogue's 10^5-10^8), and only those rows are summed; a
  table whose gradient reaches more than half of its rows (LightGCN's and graphmm's, through the
  graph) is summed whole. Rows left out are zero on every worker, so the sum is the same as summing
  the whole tables (at S, 100k users + 50k items x 64, the whole tables were 38 MB per step and made
  2 workers 3x slower per epoch than 1). Adam then runs on identical gradients on every worker, so
  the parameters stay identical.
* **Early stopping on rank 0.** Rank 0 validates (full ranking on the validation split, as a local
  fit) and broadcasts ``[keep going, recall]``; every worker stops at the same epoch.
* **Checkpoints.** At every validation check rank 0 hands a :class:`TrainState` (network, Adam
  state, early-stopping state incl. the best network, numpy and torch random states, the curves) to
  ``report``; a restarted run gets the newest one back through ``resume`` and continues from the next
  epoch: the epochs after the checkpoint are replayed with the same random draws, so a run that
  lost a worker ends where an uninterrupted one ends. Tensors travel as safetensors-ready dicts and
  the rest as JSON (:meth:`TrainState.arrays`, :meth:`TrainState.info`), never pickled.

Models: ``bprmf``, ``lightgcn`` and ``graphmm`` (:data:`DATA_PARALLEL_MODELS`), with either
propagation mode of the graph models. With one worker no gradient is synchronised and the numbers
are those of a local fit.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist

from modalrec.core.errors import ConfigError
from modalrec.core.threads import torch_threads
from modalrec.models.base import _default_validator
from modalrec.models.embedding import Batch, EmbeddingRecommender, TrainingRun
from modalrec.models.training import EarlyStopping, training_meta

if TYPE_CHECKING:
    from modalrec.data.dataset import Dataset

#: Tables with fewer rows are summed whole (the row flags would cost about as much as the rows).
SPARSE_MIN_ROWS = 1024

#: The embedding models that can train data-parallel (the BPR loop of :mod:`modalrec.models.embedding`).
DATA_PARALLEL_MODELS = ("bprmf", "lightgcn", "graphmm")


def check_data_parallel(model_name: str) -> None:
    """Refuse a model that has no data-parallel training, naming the ones that have.

    >>> check_data_parallel("ease")
    Traceback (most recent call last):
    modalrec.core.errors.ConfigError: model 'ease' has no data-parallel training; the Ray backend trains bprmf, lightgcn, graphmm (fit other models with --backend local)
    """
    if model_name not in DATA_PARALLEL_MODELS:
        raise ConfigError(
            f"model {model_name!r} has no data-parallel training; the Ray backend trains "
            f"{', '.join(DATA_PARALLEL_MODELS)} (fit other models with --backend local)"
        )


@dataclass
class Workers:
    """This process's place among the data-parallel workers (a ``torch.distributed`` group when > 1)."""

    rank: int = 0
    world: int = 1

    def shard(self, batch: Batch) -> Batch:
        """This worker's strided part of a global mini-batch.

        >>> u = torch.arange(5)
        >>> [t.tolist() for t in Workers(1, 2).shard((u, u, u))]
        [[1, 3], [1, 3], [1, 3]]
        """
        return (
            batch[0][self.rank :: self.world],
            batch[1][self.rank :: self.world],
            batch[2][self.rank :: self.world],
        )

    def sync_gradients(self, params: list[torch.nn.Parameter], n_local: int, n_global: int) -> None:
        """Replace each gradient by the global mini-batch's mean-loss gradient (module docstring)."""
        if self.world == 1:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        rows = self.nonzero_rows(grads)
        packed = [
            g.reshape(-1) if r is None else g.index_select(0, r).reshape(-1)
            for g, r in zip(grads, rows, strict=True)
        ]
        flat = torch.cat(packed) * float(n_local)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= float(n_global)
        offset = 0
        for p, r in zip(params, rows, strict=True):
            if r is None:
                n = p.numel()
                p.grad = flat[offset : offset + n].view_as(p).clone()
            else:
                n = r.numel() * (p.numel() // max(p.shape[0], 1))
                full = torch.zeros_like(p)
                full.index_copy_(0, r, flat[offset : offset + n].view(-1, *p.shape[1:]))
                p.grad = full
            offset += n

    def nonzero_rows(self, grads: list[torch.Tensor]) -> list[torch.Tensor | None]:
        """Per gradient, the rows non-zero on any worker (one all-reduce of row flags for all tables),
        or None where the whole tensor is summed (not a table, or more than half of its rows)."""
        tables = [k for k, g in enumerate(grads) if g.dim() >= 2 and g.shape[0] >= SPARSE_MIN_ROWS]
        out: list[torch.Tensor | None] = [None] * len(grads)
        if not tables:
            return out
        flags = torch.cat([(grads[k].reshape(grads[k].shape[0], -1) != 0).any(1) for k in tables])
        hits = flags.to(torch.uint8)  # one byte per row: 1/256 of a 64-d float32 row
        dist.all_reduce(hits, op=dist.ReduceOp.MAX)
        offset = 0
        for k in tables:
            n = grads[k].shape[0]
            hit = torch.nonzero(hits[offset : offset + n]).reshape(-1)
            if hit.numel() * 2 <= n:
                out[k] = hit
            offset += n
        return out

    def align_generator(self, rng: np.random.Generator) -> None:
        """Give every worker rank 0's generator state (more than one worker), at each epoch start.

        Why: a draw whose size follows the local shard (graphmm's hard negatives) would otherwise
        leave the workers' generators apart, and the next epoch's shared permutation with them.
        Copying the state (JSON bytes, nothing drawn) keeps the stream a local fit draws.
        """
        if self.world == 1:
            return
        data = json.dumps(rng.bit_generator.state).encode()
        size = int(self.broadcast([float(len(data))])[0])
        buf = torch.zeros(size, dtype=torch.uint8)
        if self.rank == 0:
            buf[:] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        dist.broadcast(buf, src=0)
        rng.bit_generator.state = json.loads(bytes(buf.tolist()).decode())

    def broadcast(self, values: list[float]) -> list[float]:
        """Rank 0's ``values`` on every worker."""
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64)
        dist.broadcast(t, src=0)
        return t.tolist()

    def mean(self, value: float, weight: float) -> float:
        """Weighted mean of ``value`` over the workers (the epoch's mean loss per triplet)."""
        if self.world == 1:
            return value
        t = torch.tensor([value * weight, weight], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return float(t[0] / max(float(t[1]), 1e-12))


@dataclass
class TrainState:
    """Everything a restarted worker needs to continue training from a validation check.

    ``tensors`` are torch tensors (safetensors-ready, flat names); ``meta`` is JSON-ready.
    """

    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]

    def arrays(self) -> dict[str, np.ndarray]:
        """The tensors as contiguous numpy arrays (what :func:`safetensors.numpy.save_file` takes)."""
        return {k: np.ascontiguousarray(v.detach().cpu().numpy()) for k, v in self.tensors.items()}

    def info(self) -> dict[str, Any]:
        return self.meta

    @classmethod
    def from_files(cls, arrays: dict[str, np.ndarray], info: dict[str, Any]) -> TrainState:
        return cls({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}, info)


@dataclass
class _Loop:
    """The training loop's own state: epoch reached, curves, early stopping, restarts."""

    es: EarlyStopping
    epoch: int = 0
    losses: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    resumed_from: list[int] = field(default_factory=list)


def capture(model: EmbeddingRecommender[Any], run: TrainingRun, loop: _Loop) -> TrainState:
    """A :class:`TrainState` of the running fit (after epoch ``loop.epoch``)."""
    tensors: dict[str, torch.Tensor] = {f"net.{k}": v for k, v in model._net_state().items()}
    opt = run.opt.state_dict()
    for idx, st in opt["state"].items():
        for key, value in st.items():
            tensors[f"opt.{idx}.{key}"] = torch.as_tensor(value).detach().clone()
    if loop.es.best_state is not None:
        tensors.update({f"best.{k}": v for k, v in loop.es.best_state.items()})
    tensors["rng.torch"] = torch.get_rng_state()
    es = loop.es
    meta = {
        "epoch": loop.epoch,
        "es": {
            "best": es.best,
            "best_epoch": es.best_epoch,
            "bad_checks": es.bad_checks,
            "history": [dict(h) for h in es.history],
        },
        "losses": list(loop.losses),
        "epoch_seconds": list(loop.epoch_seconds),
        "resumed_from": list(loop.resumed_from),
        "rng_numpy": model._rng.bit_generator.state,
        "opt_groups": opt["param_groups"],
    }
    return TrainState(tensors, meta)


def restore(model: EmbeddingRecommender[Any], run: TrainingRun, loop: _Loop, state: TrainState) -> None:
    """Put a :class:`TrainState` back into the running fit (every worker does, so all stay equal)."""
    t, m = state.tensors, state.meta
    model.net.load_state_dict({k[4:]: v for k, v in t.items() if k.startswith("net.")})
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in t.items():
        if k.startswith("opt."):
            _, idx, key = k.split(".", 2)
            opt_state.setdefault(int(idx), {})[key] = v
    run.opt.load_state_dict({"state": opt_state, "param_groups": m["opt_groups"]})
    best = {k[5:]: v for k, v in t.items() if k.startswith("best.")}
    es = m["es"]
    loop.es.best, loop.es.best_epoch = float(es["best"]), int(es["best_epoch"])
    loop.es.bad_checks, loop.es.history = int(es["bad_checks"]), list(es["history"])
    loop.es.best_state = best or None
    loop.epoch, loop.losses, loop.epoch_seconds = int(m["epoch"]), list(m["losses"]), list(m["epoch_seconds"])
    loop.resumed_from = [*m.get("resumed_from", []), loop.epoch]
    model._rng.bit_generator.state = m["rng_numpy"]
    torch.set_rng_state(t["rng.torch"].to(torch.uint8))


def train_epoch_parallel(
    model: EmbeddingRecommender[Any], run: TrainingRun, epoch: int, workers: Workers
) -> float:
    """One data-parallel epoch: this worker's shard of every global mini-batch, gradients summed.

    Returns the mean loss per triplet over all workers.
    """
    workers.align_generator(model._rng)
    model.start_epoch(epoch)
    model.net.train()
    model._cache = None
    batches = [b for b in run.triplets.epoch(model.hp.batch_size) if len(b[0]) >= workers.world]
    params = [q for q in model.net.parameters() if q.requires_grad]
    total, n_seen = 0.0, 0
    for group in model.step_groups(batches):
        n_global = sum(len(b[0]) for b in group)
        local = [workers.shard(b) for b in group]
        n_local = sum(len(b[0]) for b in local)

        def sync(n_local: int = n_local, n_global: int = n_global) -> None:
            workers.sync_gradients(params, n_local, n_global)

        if model.shares_propagation():
            total += model._shared_step(run.opt, local, before_step=sync)
        else:
            (u, p, neg) = local[0]
            run.opt.zero_grad(set_to_none=True)
            loss = model.batch_loss(u, p, neg)
            loss.backward()
            sync()
            run.opt.step()
            total += float(loss.detach()) * len(u)
        n_seen += n_local
    model.net.eval()
    return workers.mean(total / max(n_seen, 1), float(n_seen))


#: ``report(epoch, metrics, state)``: called by every worker after each validation check; ``state``
#: is the checkpoint on rank 0 and None elsewhere.
Report = Callable[[int, dict[str, float], TrainState | None], None]


def fit_data_parallel(
    model: EmbeddingRecommender[Any],
    dataset: Dataset,
    workers: Workers,
    *,
    resume: TrainState | None = None,
    report: Report | None = None,
) -> EmbeddingRecommender[Any]:
    """Train ``model`` on ``dataset`` as worker ``workers.rank`` of ``workers.world`` (module docstring).

    On rank 0 the returned model is fitted (best validation state, final vectors, ``meta`` as a local
    fit plus ``meta["data_parallel"]``); other ranks return it unfinished. ``resume`` continues from a
    checkpoint; ``report`` receives each validation check (and rank 0's checkpoint).
    """
    check_data_parallel(model.name)
    model.n_users, model.n_items = dataset.n_users, dataset.n_items
    model.meta = {}
    model._validator = _default_validator(dataset) if workers.rank == 0 else None
    with torch_threads(model.hp.threads):
        try:
            run = model.start_training(dataset, model.triplet_sampler())
            loop = _Loop(EarlyStopping(patience=model.hp.patience))
            if resume is not None:
                restore(model, run, loop, resume)
            _epochs(model, dataset, run, loop, workers, report)
        finally:
            model._validator = None
    if workers.rank == 0:
        _finish(model, dataset, loop, workers)
    return model


def _epochs(
    model: EmbeddingRecommender[Any],
    dataset: Dataset,
    run: TrainingRun,
    loop: _Loop,
    workers: Workers,
    report: Report | None,
) -> None:
    """Epochs ``loop.epoch + 1 ..`` with rank 0's early-stopping decision broadcast at every check."""
    hp = model.hp
    has_valid = dataset.valid.nnz > 0
    for epoch in range(loop.epoch + 1, hp.epochs + 1):
        t0 = time.perf_counter()
        loss = train_epoch_parallel(model, run, epoch, workers)
        loop.epoch_seconds.append(time.perf_counter() - t0)
        loop.losses.append(loss)
        loop.epoch = epoch
        if not (epoch % hp.eval_every == 0 or epoch == hp.epochs):
            continue
        keep, rec = 1.0, float("nan")
        if has_valid and workers.rank == 0:
            rec = model.validate()
            keep = float(loop.es.update(rec, epoch=epoch, state=model._net_state()))
        keep, rec = workers.broadcast([keep, rec])
        if report is not None:
            state = capture(model, run, loop) if workers.rank == 0 else None
            report(epoch, {"epoch": epoch, "valid_recall@20": rec, "loss": loss}, state)
        if has_valid and not keep:
            break


def _finish(model: EmbeddingRecommender[Any], dataset: Dataset, loop: _Loop, workers: Workers) -> None:
    """Rank 0: restore the best state, compute the final vectors, record the training facts."""
    has_valid = dataset.valid.nnz > 0
    if has_valid and loop.es.best_state is not None:
        model.net.load_state_dict(loop.es.best_state)
    model._cache = None
    model.end_training()
    model._finalise()
    model.meta.update(training_meta(loop.es, has_valid, loop.losses, loop.epoch_seconds))
    model.meta["data_parallel"] = {
        "workers": workers.world,
        "backend": "gloo",
        "resumed_from_epochs": loop.resumed_from,
    }
    model.describe_training()
    model.meta.setdefault("n_users", model.n_users)
    model.meta.setdefault("n_items", model.n_items)
    model._check_finite()

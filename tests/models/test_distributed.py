"""Data-parallel training loop (models/distributed.py) in one process: with one worker it is a local
fit bit for bit, and a run resumed from a checkpoint written as safetensors + JSON ends where the
uninterrupted run ends. Two workers on Ray: tests/workflows/test_ray_backend.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from modalrec.core.errors import ConfigError
from modalrec.models.base import create
from modalrec.models.distributed import TrainState, Workers, check_data_parallel, fit_data_parallel
from synthetic import make_clustered

CASES = [
    ("bprmf", {}),
    ("lightgcn", {"propagation": "shared", "steps_per_epoch": 2}),
    ("graphmm", {"loss": "softmax", "hard_negatives": 2, "n_negatives": 16, "edge_keep": 0.8}),
]


@pytest.mark.parametrize(("name", "extra"), CASES, ids=[c[0] for c in CASES])
def test_one_worker_is_a_local_fit_and_resumes_exactly(
    name: str, extra: dict[str, Any], tmp_path: Path
) -> None:
    ds = make_clustered(with_features=True)
    params = {"dim": 16, "batch_size": 128, "epochs": 8, "patience": 3, "eval_every": 2, **extra}
    local = create(name, **params).fit(ds, progress=False)
    states: list[TrainState] = []

    def report(epoch: int, metrics: dict[str, float], state: TrainState | None) -> None:
        assert state is not None and metrics["epoch"] == epoch
        # what a Ray checkpoint holds: safetensors + JSON, read back from disk
        save_file(state.arrays(), str(tmp_path / f"{epoch}.safetensors"))
        (tmp_path / f"{epoch}.json").write_text(json.dumps(state.info()))
        states.append(state)

    dp = fit_data_parallel(create(name, **params), ds, Workers(), report=report)
    np.testing.assert_array_equal(dp.item_vectors, local.item_vectors)
    np.testing.assert_array_equal(dp.user_vectors, local.user_vectors)
    assert dp.meta["best_epoch"] == local.meta["best_epoch"] and len(states) == 4
    assert dp.meta["valid_curve"] == local.meta["valid_curve"]
    # Resume after the check at epoch 4 (as a restarted worker would): the same final model.
    resume = TrainState.from_files(
        load_file(str(tmp_path / "4.safetensors")), json.loads((tmp_path / "4.json").read_text())
    )
    again = fit_data_parallel(create(name, **params), ds, Workers(), resume=resume)
    np.testing.assert_array_equal(again.item_vectors, local.item_vectors)
    assert again.meta["data_parallel"]["resumed_from_epochs"] == [4]
    assert again.meta["epochs_run"] == local.meta["epochs_run"]
    assert again.meta["valid_curve"] == local.meta["valid_curve"]


def test_models_without_data_parallel_training_are_refused() -> None:
    with pytest.raises(
        ConfigError, match=r"model 'itemknn' has no data-parallel training.*bprmf, lightgcn, graphmm"
    ):
        fit_data_parallel(create("itemknn"), make_clustered(), Workers())
    check_data_parallel("lightgcn")


SYNC_WORKER = """
import json, sys
import numpy as np, torch, torch.distributed as dist
from modalrec.models.distributed import Workers
rank, world, init, out = int(sys.argv[1]), 2, sys.argv[2], sys.argv[3]
dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
exec(sys.argv[4])  # defines grads_of(rank) -> list of numpy arrays, N_LOCAL
params = [torch.nn.Parameter(torch.zeros(g.shape)) for g in grads_of(rank)]
for p, g in zip(params, grads_of(rank)):
    p.grad = torch.from_numpy(g.copy())
w = Workers(rank, world)
rows = w.nonzero_rows([p.grad for p in params])
w.sync_gradients(params, N_LOCAL[rank], sum(N_LOCAL))
np.savez(out, *[p.grad.numpy() for p in params])
json.dump([None if r is None else r.tolist() for r in rows], open(out + ".json", "w"))
dist.destroy_process_group()
"""

GRADS = """
N_LOCAL = [3, 4]
def grads_of(rank):
    rng = np.random.default_rng(rank)
    sparse = np.zeros((5000, 8), np.float32)
    for r in (3 * rank, 10 + rank, 50):  # rows this worker's mini-batch touched
        sparse[r] = rng.normal(size=8)
    dense = rng.normal(size=(3000, 4)).astype(np.float32)  # every row: summed whole
    small = np.zeros((100, 4), np.float32); small[rank] = 1.0  # under SPARSE_MIN_ROWS
    bias = rng.normal(size=10).astype(np.float32)
    return [sparse, dense, small, bias]
"""


def test_two_workers_sum_only_the_rows_with_a_gradient(tmp_path: Path) -> None:
    """Two gloo processes: the tables' non-zero rows are summed, the rest is zero, and every gradient
    is the global mean-loss gradient, bit for bit what summing the whole tensors gives."""
    import subprocess
    import sys

    init = f"file://{tmp_path / 'rendezvous'}"
    outs = [str(tmp_path / f"w{r}") for r in range(2)]
    procs = [
        subprocess.Popen([sys.executable, "-c", SYNC_WORKER, str(r), init, outs[r], GRADS]) for r in range(2)
    ]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    ns: dict[str, Any] = {"np": np}
    exec(GRADS, ns)
    g0, g1 = ns["grads_of"](0), ns["grads_of"](1)
    n0, n1 = ns["N_LOCAL"]
    expected = [
        (a * np.float32(n0) + b * np.float32(n1)) / np.float32(n0 + n1) for a, b in zip(g0, g1, strict=True)
    ]
    for r in range(2):
        got = np.load(outs[r] + ".npz")
        for k, want in enumerate(expected):
            np.testing.assert_array_equal(got[f"arr_{k}"], want)
        rows = json.loads(Path(outs[r] + ".json").read_text())
        assert rows == [[0, 3, 10, 11, 50], None, None, None], rows

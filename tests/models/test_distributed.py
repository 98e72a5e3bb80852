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

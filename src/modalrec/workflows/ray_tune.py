"""``modalrec tune --backend ray``: Optuna trials in parallel Ray tasks against one study in an RDB.

Each of the ``workers`` Ray tasks (one CPU each) opens the same study from the same storage URL and
runs trials until the study holds the requested number of finished trials, counting the trials the
other tasks are running (so the study ends at the requested count, or at most ``workers - 1`` above
it when tasks start trials at the same moment). The study is what :func:`modalrec.workflows.tuning.tune`
uses locally: heartbeats, stale trials failed, pruning on the validation curve, diverged fits recorded
as failed. Each task samples with its own TPE seed (``[tune] seed`` + task index), so parallel tasks
do not propose the same first parameters; TPE reads every task's finished trials from the storage.

Storage: the SQLite file in the study directory for a local Ray runtime (SQLite's lock is waited
for, up to 60 s); on a cluster, ``--storage postgresql+psycopg://user@host/db`` (any URL that
:class:`optuna.storages.RDBStorage` takes) so that every node reaches the study. Resumable as the
local backend: running the same command again continues the study.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from modalrec.core.errors import ConfigError
from modalrec.core.raycluster import cluster_cpus, connect
from modalrec.workflows.tuning import TuneSpec, make_objective, open_study, run_trials

if TYPE_CHECKING:
    from modalrec.data.dataset import Dataset


def tune_task(
    url: str,
    name: str,
    spec: dict[str, Any],
    trials: int,
    model: str,
    base: dict[str, Any],
    ds: Dataset,
    index: int,
) -> int:
    """One Ray task: run trials of the shared study until it is complete; returns how many it ran."""
    own = TuneSpec(**{**spec, "seed": int(spec["seed"]) + index})
    study = open_study(url, name, own, trials)
    objective = make_objective(model, base, own.space, ds, progress=False)
    ran = 0

    def tracked(trial: Any) -> float:
        nonlocal ran
        ran += 1
        return objective(trial)

    run_trials(study, trials, tracked, count_running=True)
    return ran


def run_trials_ray(
    url: str,
    name: str,
    spec: TuneSpec,
    trials: int,
    model: str,
    base: dict[str, Any],
    ds: Dataset,
    *,
    workers: int | None = None,
    address: str | None = None,
) -> list[int]:
    """Run the study's remaining trials in ``workers`` parallel Ray tasks; returns trials per task."""
    ray = connect(address)
    n = workers or cluster_cpus(ray)
    if n < 1:
        raise ConfigError(f"--workers must be >= 1, got {n}")
    task = ray.remote(num_cpus=1, max_retries=0)(tune_task)
    ds_ref = ray.put(ds)
    spec_d = dataclasses.asdict(spec)
    return list(ray.get([task.remote(url, name, spec_d, trials, model, base, ds_ref, i) for i in range(n)]))

"""``modalrec fit CONFIG --backend ray --workers N``: data-parallel training on Ray Train.

The driver (this process) loads the configured data set once, puts it into Ray's object store and
starts a :class:`ray.train.torch.TorchTrainer` of N workers (one CPU each, a gloo process group);
every worker runs :func:`modalrec.models.distributed.fit_data_parallel` (what a worker does, how
gradients are synchronised and how early stopping is decided is documented there). When training
ends, rank 0 saves the fitted model in modalrec's own format (JSON + safetensors) as the last Ray
checkpoint; the driver loads it, evaluates it and writes the same run directory as a local fit.

Fault tolerance: rank 0 reports a checkpoint at every validation check (``train_state.safetensors``
+ ``train_state.json``, no pickle). With ``FailureConfig(max_failures=...)`` Ray Train restarts the
worker group when a worker dies (e.g. SIGKILL) and each new worker resumes from the newest
checkpoint (``ray.train.get_checkpoint()``); the run directory's ``meta["data_parallel"]`` lists the
epochs it resumed from. Checkpoints live under ``storage`` (default: a ``.<run name>.ray/`` folder
beside the run directory; on a cluster give a path or URI every node reaches) and are removed after
the run directory is written.

What travels between processes: the data set and the hyperparameters go through Ray's object
store (Ray serialises them in memory); every file written is JSON or safetensors.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from safetensors.numpy import load_file

from modalrec.core.errors import ConfigError, FitError, RunDirError
from modalrec.core.persistence import write_arrays
from modalrec.core.raycluster import cluster_cpus, connect
from modalrec.models.base import Recommender, create
from modalrec.models.distributed import TrainState, Workers, check_data_parallel, fit_data_parallel
from modalrec.workflows.config import RunConfig
from modalrec.workflows.rundir import Run

#: File names inside a Ray checkpoint: the training state (a validation check) or the final model.
STATE_ARRAYS = "train_state.safetensors"
STATE_INFO = "train_state.json"
FINAL_MODEL = "model"

#: Worker-group restarts Ray Train allows before the fit fails (each resumes from the newest checkpoint).
DEFAULT_MAX_FAILURES = 3


def _save_state(directory: Path, state: TrainState) -> None:
    write_arrays(directory / STATE_ARRAYS, state.arrays())
    (directory / STATE_INFO).write_text(json.dumps(state.info()))


def _load_state(directory: Path) -> TrainState:
    return TrainState.from_files(
        load_file(str(directory / STATE_ARRAYS)), json.loads((directory / STATE_INFO).read_text())
    )


def train_worker(config: dict[str, Any]) -> None:
    """The function every Ray Train worker runs: resume if Ray hands back a checkpoint, train, and
    (rank 0) report the fitted model as the final checkpoint."""
    import ray
    import ray.train

    ctx = ray.train.get_context()
    workers = Workers(ctx.get_world_rank(), ctx.get_world_size())
    ds = ray.get(config["dataset"])
    resume = None
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            if (Path(d) / STATE_ARRAYS).exists():
                resume = _load_state(Path(d))

    def report(epoch: int, metrics: dict[str, float], state: TrainState | None) -> None:
        with tempfile.TemporaryDirectory() as d:
            checkpoint = None
            if state is not None:
                _save_state(Path(d), state)
                checkpoint = ray.train.Checkpoint.from_directory(d)
            ray.train.report({**metrics, "final": 0}, checkpoint=checkpoint)

    model = create(config["model"], **config["params"])
    fit_data_parallel(model, ds, workers, resume=resume, report=report)  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory() as d:
        checkpoint = None
        if workers.rank == 0:
            model.save(Path(d) / FINAL_MODEL)
            checkpoint = ray.train.Checkpoint.from_directory(d)
        ray.train.report({"final": 1}, checkpoint=checkpoint)


def default_storage(out: str | Path) -> Path:
    """Where a run's Ray checkpoints go by default: a hidden folder beside the run directory."""
    p = Path(out).resolve()
    return p.parent / f".{p.name}.ray"


def fit_ray(
    ds: Any,
    model_name: str,
    params: dict[str, Any],
    *,
    workers: int,
    storage: str | Path,
    address: str | None = None,
    max_failures: int = DEFAULT_MAX_FAILURES,
    name: str | None = None,
) -> Recommender:
    """Train ``model_name`` data-parallel on ``workers`` Ray Train workers; returns the fitted model.

    ``storage`` holds the Ray checkpoints (``name`` is the run's folder in it). Raises
    :class:`FitError` when training fails after ``max_failures`` restarts.
    """
    check_data_parallel(model_name)
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    create(model_name, **params)  # bad hyperparameters fail here, not inside N workers
    ray = connect(address)
    if address is None and workers > cluster_cpus(ray):
        # a local runtime never grows: Ray Train would wait for the missing CPUs forever
        raise ConfigError(
            f"--workers {workers} needs {workers} CPUs; the local Ray runtime has {cluster_cpus(ray)} "
            f"(one worker per CPU; join a cluster with --address for more)"
        )
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    name = name or f"fit-{model_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"dataset": ray.put(ds), "model": model_name, "params": dict(params)},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=False, resources_per_worker={"CPU": 1}),
        torch_config=TorchConfig(backend="gloo"),
        run_config=RunConfig(
            name=name,
            storage_path=str(storage),
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    try:
        result = trainer.fit()
    except Exception as e:  # Ray wraps worker errors in its own types (TrainingFailedError, ...)
        raise FitError(
            f"Ray training of {model_name!r} failed after {max_failures} restarts: {_first_line(e)}"
        ) from e
    if result.checkpoint is None:
        raise FitError(f"Ray training of {model_name!r} ended without a model checkpoint")
    with result.checkpoint.as_directory() as d:
        if not (Path(d) / FINAL_MODEL).exists():
            raise FitError(f"Ray training of {model_name!r} ended before its final model was saved")
        return Recommender.load(Path(d) / FINAL_MODEL)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def fit_config_ray(
    config: RunConfig,
    out: str | Path,
    *,
    workers: int,
    address: str | None = None,
    storage: str | Path | None = None,
    max_failures: int = DEFAULT_MAX_FAILURES,
    overwrite: bool = False,
) -> Run:
    """``modalrec fit --backend ray``: load, train on Ray, evaluate, write the run directory ``out``."""
    from modalrec.workflows.pipeline import write_run
    from modalrec.workflows.tuning import load_with_features

    check_data_parallel(config.model.name)
    o = Path(out)
    if o.exists() and not overwrite and any(o.iterdir()):  # RunWriter's check, before hours of training
        raise RunDirError(f"{o} already exists and is not empty; use --overwrite to replace it")
    connect(address)  # a wrong address stops before the data set is loaded
    ds = load_with_features(config)
    where = Path(storage) if storage is not None else default_storage(out)
    model = fit_ray(
        ds,
        config.model.name,
        {**config.model.params},
        workers=workers,
        storage=where,
        address=address,
        max_failures=max_failures,
    )
    run = write_run(
        ds, model, out, config=config.model_dump(), ks=tuple(config.evaluate.ks), overwrite=overwrite
    )
    if storage is None:
        shutil.rmtree(where, ignore_errors=True)
    return run

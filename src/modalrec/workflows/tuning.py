"""Hyperparameter search (``modalrec tune CONFIG.toml --trials N``): Optuna TPE with pruning.

Why this shape:

* **Objective = best validation Recall@20** of the trained model (the same number early stopping
  uses); the test split is never touched, so the tuned config can be reported honestly on test.
* **Pruning** sees the validation curve through :func:`modalrec.models.training.validation_hook`:
  every model that trains with the shared loop reports each validation check as an Optuna step, and a
  trial whose curve is below the median of earlier trials at the same epoch is stopped.
* **Resumable**: the study lives in SQLite (``<out>/study.sqlite`` by default); running the same
  command again continues it until it holds ``N`` finished trials (complete or pruned). Running
  trials send a heartbeat (Optuna's RDB heartbeat); one left RUNNING by a killed process is failed
  once its heartbeat is older than :data:`GRACE_SECONDS`, and the study goes on without it.
* **Diverged trials fail, they do not crash the study**: a fit that leaves NaN in the model
  (:class:`~modalrec.core.errors.FitError`) is recorded as a FAILED trial with the reason in its
  ``fail_reason`` user attribute (also in ``trials.json``); it does not count towards ``N``.
* **Best config written out** as a runnable TOML (``<out>/best.toml``: the input config with the best
  parameters merged into ``[model.params]``) plus ``best.json`` and ``trials.json``.

The search space is a ``[tune.space]`` table in the run config (ignored by ``modalrec fit``)::

    [tune]
    seed = 0                              # TPE sampler seed
    [tune.space]
    lr = { low = 1e-4, high = 1e-2, log = true }   # float range
    n_layers = { low = 1, high = 3 }               # int range (both bounds ints)
    loss = ["bpr", "softmax"]                      # categorical

Every key and every choice (or bound) is checked against the model's declared hyperparameters when
the config is read, so a typo fails before the first trial.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modalrec.core.errors import ConfigError, FitError
from modalrec.core.io import atomic_write_json, atomic_write_text
from modalrec.workflows.config import RunConfig, config_from_dict, read_toml, to_toml

if TYPE_CHECKING:
    import optuna

    from modalrec.data.dataset import Dataset

OBJECTIVE = "valid recall@20 (best early-stopping check)"


@dataclass
class TuneSpec:
    """The ``[tune]`` table of a run config."""

    space: dict[str, Any]
    seed: int = 0
    study_name: str | None = None
    startup_trials: int = 3
    warmup_steps: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def read_config(path: str | Path) -> tuple[RunConfig, TuneSpec | None, dict[str, Any]]:
    """Parse a run config TOML; returns ``(config, tune spec or None, raw dict without [tune])``."""
    p = Path(path)
    raw = read_toml(p)
    tune_raw = raw.pop("tune", None)
    cfg = config_from_dict(raw, source=str(p))
    spec = None
    if tune_raw is not None:
        if not isinstance(tune_raw, dict):
            raise ConfigError(f"{p}: [tune] must be a table")
        known = {"space", "seed", "study_name", "startup_trials", "warmup_steps"}
        unknown = set(tune_raw) - known
        if unknown:
            raise ConfigError(f"{p}: tune: unknown keys {sorted(unknown)}; known: {sorted(known)}")
        space = tune_raw.get("space", {})
        for name, dom in space.items():
            _check_domain(str(p), name, dom)
            _check_space_values(str(p), cfg.model.name, cfg.model.params, name, dom)
        spec = TuneSpec(
            space=space,
            seed=int(tune_raw.get("seed", 0)),
            study_name=tune_raw.get("study_name"),
            startup_trials=int(tune_raw.get("startup_trials", 3)),
            warmup_steps=int(tune_raw.get("warmup_steps", 0)),
        )
    return cfg, spec, raw


def _check_domain(source: str, name: str, dom: Any) -> None:
    if isinstance(dom, list):
        if not dom:
            raise ConfigError(f"{source}: tune.space.{name}: empty choice list")
        return
    if isinstance(dom, dict) and "low" in dom and "high" in dom:
        if not dom["low"] < dom["high"]:
            raise ConfigError(f"{source}: tune.space.{name}: low must be < high")
        if dom.get("log") and dom["low"] <= 0:
            raise ConfigError(f"{source}: tune.space.{name}: log scale needs low > 0")
        return
    raise ConfigError(
        f"{source}: tune.space.{name}: expected a list of choices or {{ low = .., high = .., log = .. }}"
    )


def _check_space_values(source: str, model: str, base: dict[str, Any], name: str, dom: Any) -> None:
    """Every choice (or both bounds) of ``tune.space.<name>`` must be a valid value of the model's
    hyperparameter ``name``: a typo fails when the config is read, not in trial 7."""
    from modalrec.workflows.config import check_params

    for value in dom if isinstance(dom, list) else (dom["low"], dom["high"]):
        check_params("model", model, {**base, name: value}, source=source, table=f"tune.space.{name}")
    if isinstance(dom, dict) and _declared_int(model, name):
        bounds = (dom["low"], dom["high"], dom.get("step", 1))
        if not all(isinstance(b, int) and not isinstance(b, bool) for b in bounds):
            # a float range would draw 21.17 for an int hyperparameter and abort the study in a trial
            raise ConfigError(
                f"{source}: tune.space.{name}: {name!r} of model {model!r} is an integer; give integer "
                f"low/high/step (e.g. low = {int(dom['low'])}, high = {int(dom['high'])})"
            )


def _declared_int(model: str, name: str) -> bool:
    """Whether the model declares hyperparameter ``name`` as a plain ``int``."""
    from modalrec.models import REGISTRY

    field = REGISTRY.get_or_raise(model).params_class.model_fields.get(name)
    return field is not None and field.annotation is int


def suggest(trial: optuna.Trial, space: dict[str, Any]) -> dict[str, Any]:
    """Draw one value per parameter: list = categorical, int bounds = int range, else float range."""
    out: dict[str, Any] = {}
    for name, dom in space.items():
        if isinstance(dom, list):
            out[name] = trial.suggest_categorical(name, [_hashable(v) for v in dom])
        elif (
            isinstance(dom["low"], int)
            and isinstance(dom["high"], int)
            and not isinstance(dom.get("step", 1), float)
        ):
            out[name] = trial.suggest_int(
                name, dom["low"], dom["high"], step=int(dom.get("step", 1)), log=bool(dom.get("log", False))
            )
        else:
            out[name] = trial.suggest_float(
                name, float(dom["low"]), float(dom["high"]), log=bool(dom.get("log", False))
            )
    return _decode(out)


def _hashable(v: Any) -> Any:
    """Optuna choices must be None/bool/int/float/str; lists (e.g. modality sets) travel as JSON."""
    if v is None or isinstance(v, bool | int | float | str):
        return v
    return "json:" + json.dumps(v)


def load_with_features(cfg: RunConfig) -> Dataset:
    """The configured data set, with features encoded when the config has an ``[encode]`` table."""
    from modalrec.workflows.pipeline import load_dataset

    ds = load_dataset(cfg)
    if cfg.encode is not None and not ds.features:
        from modalrec.encoders import encode_dataset

        mods: Any = cfg.encode.modalities or None
        if mods and cfg.encode.options:
            # per-modality encoder options ({modality: {encoder = .., ...}}), as `modalrec encode` takes
            mods = {m: cfg.encode.options.get(m) or {} for m in mods}
        cache = Path(cfg.encode.cache_dir).expanduser() if cfg.encode.cache_dir else None
        encode_dataset(ds, mods, cache_dir=cache, progress=False)
    return ds


def tune(
    config_path: str | Path,
    trials: int,
    out: str | Path,
    *,
    storage: str | None = None,
    dataset: Dataset | None = None,
    progress: bool = False,
    backend: str = "local",
    workers: int | None = None,
    address: str | None = None,
) -> dict[str, Any]:
    """Run (or resume) the study until it holds ``trials`` finished trials; write the best config.

    ``backend="ray"`` runs the trials in ``workers`` parallel Ray tasks (default: one per CPU of the
    cluster at ``address``) against the same study (:mod:`modalrec.workflows.ray_tune`).
    Returns the summary also written to ``<out>/best.json``.
    """
    cfg, spec, raw = _read_tune_config(config_path, trials)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    url = rdb_url(storage) if storage else f"sqlite:///{(out_dir / 'study.sqlite').resolve()}"
    name = spec.study_name or f"{Path(config_path).stem}-{cfg.model.name}"
    if backend == "ray":
        from modalrec.core.raycluster import connect

        connect(address)  # a wrong address stops before the data set is loaded
    elif backend != "local":
        raise ConfigError(f"unknown backend {backend!r}; expected 'local' or 'ray'")
    study = open_study(url, name, spec, trials)
    ds = dataset if dataset is not None else load_with_features(cfg)
    base = dict(cfg.model.params)
    if backend == "ray":
        from modalrec.workflows.ray_tune import run_trials_ray

        run_trials_ray(url, name, spec, trials, cfg.model.name, base, ds, workers=workers, address=address)
    else:
        run_trials(study, trials, make_objective(cfg.model.name, base, spec.space, ds, progress=progress))
    return write_results(
        study, out_dir, url=url, source=str(config_path), raw=raw, model=cfg.model.name, base=base
    )


def rdb_url(url: str) -> str:
    """The SQLAlchemy URL of a study database: a plain ``postgresql://`` URL (as ``[feedback] url``
    takes) gets the psycopg 3 driver of the ``postgres`` extra; other URLs are used as given.

    >>> rdb_url("postgresql://modalrec@db:5432/studies"), rdb_url("sqlite:///s.db")
    ('postgresql+psycopg://modalrec@db:5432/studies', 'sqlite:///s.db')
    """
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url[len(scheme) :]
    return url


#: Seconds between heartbeats of a running trial, and the silence after which it counts as dead:
#: a trial left RUNNING by a killed process is failed (``optuna.storages.fail_stale_trials``) once
#: its heartbeat is older than the grace period, so a resumed study goes on without it.
HEARTBEAT_SECONDS = 30
GRACE_SECONDS = 120

#: The trial user attribute that records why a trial failed (e.g. training diverged to NaN).
FAIL_REASON = "fail_reason"


def _read_tune_config(config_path: str | Path, trials: int) -> tuple[RunConfig, TuneSpec, dict[str, Any]]:
    """The run config, its non-empty ``[tune]`` spec and the raw dict; :class:`ConfigError` otherwise."""
    cfg, spec, raw = read_config(config_path)
    if spec is None or not spec.space:
        raise ConfigError(f"{config_path}: no tune.space table (a [tune.space] section): nothing to search")
    if trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {trials}")
    return cfg, spec, raw


def open_study(url: str, name: str, spec: TuneSpec, trials: int) -> optuna.Study:
    """Create or load the study in RDB storage with heartbeats; fail trials whose process died."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=name,
        storage=_heartbeat_storage(url),
        load_if_exists=True,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=spec.seed, n_startup_trials=min(10, max(2, trials // 3))),
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=spec.startup_trials, n_warmup_steps=spec.warmup_steps
        ),
    )
    # Trials left RUNNING by a killed process (stale heartbeat) are failed so that the study can go on.
    # Optuna does this again before every new trial; doing it now also keeps trials.json current.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    return study


def _heartbeat_storage(url: str) -> optuna.storages.RDBStorage:
    import inspect

    import optuna

    # The stale-trial callback keyword was renamed in Optuna 4.9 (failed_trial_callback is deprecated).
    keyword = (
        "heartbeat_stale_trial_callback"
        if "heartbeat_stale_trial_callback" in inspect.signature(optuna.storages.RDBStorage).parameters
        else "failed_trial_callback"
    )
    callback: dict[str, Any] = {keyword: _stale_trial_failed}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url,
            # several processes share a SQLite study under the Ray backend: wait for the file's lock
            # instead of failing after SQLite's default 5 s
            engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None,
            heartbeat_interval=HEARTBEAT_SECONDS,
            grace_period=GRACE_SECONDS,
            **callback,
        )


def _stale_trial_failed(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Heartbeat callback: nothing to undo (a finished trial's attributes cannot change); logged only."""
    import optuna

    optuna.logging.get_logger("optuna").warning(
        f"trial {trial.number} of study {study.study_name!r} stopped sending heartbeats: marked FAIL"
    )


def make_objective(
    model_name: str, base: dict[str, Any], space: dict[str, Any], ds: Dataset, *, progress: bool
) -> Callable[[optuna.Trial], float]:
    """The Optuna objective: fit with ``base`` + the sampled parameters, report each validation check
    (for pruning), return the best validation Recall@20. A fit that diverges (:class:`FitError`)
    records its reason in the trial's user attributes and re-raises, so the trial is FAILED."""
    import optuna

    from modalrec.models.base import create
    from modalrec.models.training import validation_hook

    def objective(trial: optuna.Trial) -> float:
        model = create(model_name, **{**base, **suggest(trial, space)})

        def hook(epoch: int, value: float) -> None:
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch} (valid R@20 {value:.4f})")

        try:
            with validation_hook(hook):
                model.fit(ds, progress=progress)
        except (FitError, FloatingPointError) as e:
            trial.set_user_attr(FAIL_REASON, f"{type(e).__name__}: {e}")
            raise
        best = model.meta.get("best_valid_recall@20")
        if best is None:
            from modalrec.evaluation.protocol import recall_at

            best = recall_at(model, ds, "valid", 20)
        trial.set_user_attr("best_epoch", model.meta.get("best_epoch"))
        trial.set_user_attr("mean_epoch_seconds", model.meta.get("mean_epoch_seconds"))
        return float(best)

    return objective


def run_trials(
    study: optuna.Study,
    trials: int,
    objective: Callable[[optuna.Trial], float],
    *,
    count_running: bool = False,
) -> None:
    """Optimise until the study holds ``trials`` finished (complete or pruned) trials.

    Failed trials (diverged fits) do not count; after as many failures as requested trials in this
    call the search stops rather than loop on a space where training cannot work. With
    ``count_running`` (several processes on one study) trials other processes are running count too,
    so the study ends near ``trials`` instead of each process adding its own.
    """
    import optuna

    done: tuple[optuna.trial.TrialState, ...] = (
        optuna.trial.TrialState.COMPLETE,
        optuna.trial.TrialState.PRUNED,
    )
    if count_running:
        done = (*done, optuna.trial.TrialState.RUNNING)
    fail = (optuna.trial.TrialState.FAIL,)
    failed_before = len(study.get_trials(deepcopy=False, states=fail))
    while len(study.get_trials(deepcopy=False, states=done)) < trials:
        if len(study.get_trials(deepcopy=False, states=fail)) - failed_before >= max(trials, 3):
            break
        study.optimize(objective, n_trials=1, catch=(FitError, FloatingPointError))


def write_results(
    study: optuna.Study,
    out_dir: Path,
    *,
    url: str,
    source: str,
    raw: dict[str, Any],
    model: str,
    base: dict[str, Any],
) -> dict[str, Any]:
    """Write ``best.toml`` (runnable), ``best.json`` (the summary, returned) and ``trials.json``."""
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        raise ConfigError(f"{source}: no trial completed (all pruned or failed); widen the search space")
    best = study.best_trial
    best_params = {**base, **_decode(best.params)}
    best_raw = json.loads(json.dumps(raw))
    best_raw.setdefault("model", {})["params"] = best_params
    best_raw["model"].setdefault("name", model)
    atomic_write_text(
        out_dir / "best.toml",
        f"# Best of {len(complete)} complete trials of study {study.study_name!r}: "
        f"{OBJECTIVE} = {best.value:.6f}\n" + to_toml(best_raw),
    )
    all_trials = study.get_trials(deepcopy=False)
    summary = {
        "study": study.study_name,
        "storage": _without_password(url),
        "objective": OBJECTIVE,
        "best_value": best.value,
        "best_trial": best.number,
        "best_params": best_params,
        "n_complete": len(complete),
        "n_pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in all_trials),
        "n_failed": sum(t.state == optuna.trial.TrialState.FAIL for t in all_trials),
        "best_config": str(out_dir / "best.toml"),
    }
    atomic_write_json(out_dir / "best.json", summary)
    atomic_write_json(out_dir / "trials.json", [_trial_row(t) for t in all_trials])
    return summary


def _without_password(url: str) -> str:
    """The storage URL as written to best.json: a database password never lands in a file.

    >>> _without_password("postgresql+psycopg://u:secret@db/studies")
    'postgresql+psycopg://u:***@db/studies'
    """
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a SQLAlchemy URL: Optuna would have refused it before this point
        return url


def _trial_row(t: optuna.trial.FrozenTrial) -> dict[str, Any]:
    return {
        "number": t.number,
        "state": t.state.name,
        "value": t.value,
        "params": _decode(t.params),
        "steps": len(t.intermediate_values),
        **t.user_attrs,
    }


def _decode(params: dict[str, Any]) -> dict[str, Any]:
    return {
        k: json.loads(v[5:]) if isinstance(v, str) and v.startswith("json:") else v for k, v in params.items()
    }

"""Hyperparameter search (``modalrec tune CONFIG.toml --trials N``): Optuna TPE with pruning.

Why this shape:

* **Objective = best validation Recall@20** of the trained model (the same number early stopping
  uses); the test split is never touched, so the tuned config can be reported honestly on test.
* **Pruning** sees the validation curve through :func:`modalrec.models.training.validation_hook`:
  every model that trains with the shared loop reports each validation check as an Optuna step, and a
  trial whose curve is below the median of earlier trials at the same epoch is stopped.
* **Resumable**: the study lives in SQLite (``<out>/study.sqlite`` by default); running the same
  command again continues it until it holds ``N`` finished trials (complete or pruned).
* **Best config written out** as a runnable TOML (``<out>/best.toml``: the input config with the best
  parameters merged into ``[model.params]``) plus ``best.json`` and ``trials.json``.

The search space is a ``[tune.space]`` table in the run config (ignored by ``modalrec fit``)::

    [tune]
    seed = 0                              # TPE sampler seed
    [tune.space]
    lr = { low = 1e-4, high = 1e-2, log = true }   # float range
    n_layers = { low = 1, high = 3 }               # int range (both bounds ints)
    loss = ["bpr", "softmax"]                      # categorical
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modalrec.core.errors import ConfigError
from modalrec.core.io import atomic_write_json, atomic_write_text
from modalrec.workflows.config import RunConfig, config_from_dict, read_toml

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


def to_toml(d: dict[str, Any]) -> str:
    """A small TOML writer for run configs (tables of scalars, lists and inline tables).

    >>> print(to_toml({"data": {"name": "ml100k"}, "model": {"name": "vbpr", "params": {"lr": 0.01}}}), end="")
    [data]
    name = "ml100k"
    <BLANKLINE>
    [model]
    name = "vbpr"
    <BLANKLINE>
    [model.params]
    lr = 0.01
    """
    lines: list[str] = []

    def table(prefix: str, t: dict[str, Any]) -> None:
        subs = {k: v for k, v in t.items() if isinstance(v, dict) and v}
        scalars = {k: v for k, v in t.items() if k not in subs and v is not None}
        if prefix:
            if lines:
                lines.append("")
            lines.append(f"[{prefix}]")
        for k, v in scalars.items():
            lines.append(f"{_key(k)} = {_value(v)}")
        for k, v in subs.items():
            table(f"{prefix}.{_key(k)}" if prefix else _key(k), v)

    table("", d)
    return "\n".join(lines) + "\n"


def _key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else json.dumps(k)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            raise ConfigError(f"cannot write {v} to TOML")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items() if x is not None) + " }"
    raise ConfigError(f"cannot write a {type(v).__name__} to TOML")


def tune(
    config_path: str | Path,
    trials: int,
    out: str | Path,
    *,
    storage: str | None = None,
    dataset: Dataset | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Run (or resume) the study until it holds ``trials`` finished trials; write the best config.

    Returns the summary also written to ``<out>/best.json``.
    """
    import optuna

    from modalrec.models.base import create
    from modalrec.models.training import validation_hook

    cfg, spec, raw = read_config(config_path)
    if spec is None or not spec.space:
        raise ConfigError(f"{config_path}: no tune.space table (a [tune.space] section): nothing to search")
    if trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {trials}")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    url = storage or f"sqlite:///{(out_dir / 'study.sqlite').resolve()}"
    name = spec.study_name or f"{Path(config_path).stem}-{cfg.model.name}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=name,
        storage=url,
        load_if_exists=True,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=spec.seed, n_startup_trials=min(10, max(2, trials // 3))),
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=spec.startup_trials, n_warmup_steps=spec.warmup_steps
        ),
    )
    done_states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    # Trials left RUNNING by a killed process are marked failed so that the study can go on.
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
    ds = dataset if dataset is not None else load_with_features(cfg)
    base = dict(cfg.model.params)

    def objective(trial: optuna.Trial) -> float:
        params = {**base, **suggest(trial, spec.space)}
        model = create(cfg.model.name, **params)

        def hook(epoch: int, value: float) -> None:
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch} (valid R@20 {value:.4f})")

        with validation_hook(hook):
            model.fit(ds, progress=progress)
        best = model.meta.get("best_valid_recall@20")
        if best is None:
            from modalrec.evaluation.protocol import recall_at

            best = recall_at(model, ds, "valid", 20)
        trial.set_user_attr("best_epoch", model.meta.get("best_epoch"))
        trial.set_user_attr("mean_epoch_seconds", model.meta.get("mean_epoch_seconds"))
        return float(best)

    def finished() -> int:
        return len(study.get_trials(deepcopy=False, states=done_states))

    while finished() < trials:
        study.optimize(objective, n_trials=1, catch=(FloatingPointError,))
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        raise ConfigError(f"{config_path}: no trial completed (all pruned or failed); widen the search space")
    best = study.best_trial
    best_params = {**base, **_decode(best.params)}
    best_raw = json.loads(json.dumps(raw))
    best_raw.setdefault("model", {})["params"] = best_params
    best_raw["model"].setdefault("name", cfg.model.name)
    atomic_write_text(
        out_dir / "best.toml",
        f"# Best of {len(complete)} complete trials of study {name!r}: {OBJECTIVE} = {best.value:.6f}\n"
        + to_toml(best_raw),
    )
    summary = {
        "study": name,
        "storage": url,
        "objective": OBJECTIVE,
        "best_value": best.value,
        "best_trial": best.number,
        "best_params": best_params,
        "n_complete": len(complete),
        "n_pruned": len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,))),
        "best_config": str(out_dir / "best.toml"),
    }
    atomic_write_json(out_dir / "best.json", summary)
    atomic_write_json(
        out_dir / "trials.json",
        [
            {
                "number": t.number,
                "state": t.state.name,
                "value": t.value,
                "params": _decode(t.params),
                "steps": len(t.intermediate_values),
                **t.user_attrs,
            }
            for t in study.get_trials(deepcopy=False)
        ],
    )
    return summary


def _decode(params: dict[str, Any]) -> dict[str, Any]:
    return {
        k: json.loads(v[5:]) if isinstance(v, str) and v.startswith("json:") else v for k, v in params.items()
    }

"""Typed run configuration, loaded from TOML and validated with pydantic.

Why typed: a typo in a TOML key should fail at load time with the file and key named, not an hour
into training. Unknown keys are errors (``extra="forbid"``), and so are model hyperparameters that
the model's declared :class:`~modalrec.core.params.Params` class does not accept (unknown name, wrong
type, out of range): the message names the file, the key and the allowed values.

Example ``ml100k_lightgcn.toml``::

    [data]
    name = "ml100k"          # a registered data set (ml100k, tiktok, baby) or a path
    split = "random"         # random | temporal | global_temporal | leave_one_out | fixed | cold_start
    seed = 2024

    [model]
    name = "lightgcn"
    params = { dim = 64, n_layers = 2, lr = 0.001 }

    [evaluate]
    ks = [10, 20, 50]
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modalrec.core.errors import ConfigError
from modalrec.core.registry import Registry


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Strict):
    name: str = Field(description="registered data set name or a path to a data folder/file")
    root: str | None = Field(default=None, description="folder holding the registered data sets")
    split: str | None = Field(default=None, description="split protocol; default: the data set's own")
    seed: int = 2024
    options: dict[str, Any] = Field(default_factory=dict, description="extra loader options")


class ModelConfig(_Strict):
    name: str = "lightgcn"
    params: dict[str, Any] = Field(default_factory=dict)


class EncodeConfig(_Strict):
    """Which modalities to encode and how; consumed by :mod:`modalrec.encoders`."""

    modalities: list[str] = Field(default_factory=list)
    options: dict[str, Any] = Field(default_factory=dict)
    cache_dir: str | None = None


class EvaluateConfig(_Strict):
    ks: list[int] = Field(default_factory=lambda: [10, 20, 50])
    chunk_size: int = 4096


class RunConfig(_Strict):
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    encode: EncodeConfig | None = None
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    seed: int = 2024


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file; a missing file, bad TOML or non-UTF-8 bytes raise :class:`ConfigError`."""
    p = Path(path)
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: invalid TOML: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text: {e}") from None


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a TOML run configuration; errors name the file and the offending key."""
    return config_from_dict(read_toml(path), source=str(path))


def config_from_dict(raw: dict[str, Any], source: str = "<config>") -> RunConfig:
    """Validate a config given as a dict (the form stored in run manifests).

    The ``[model] params`` are checked against the model's declared hyperparameters here, so a typo
    fails before any data is read.

    >>> config_from_dict({"data": {"name": "ml100k"}, "model": {"name": "bprmf"}}).model.name
    'bprmf'
    >>> config_from_dict({"data": {"name": "ml100k"}, "model": {"name": "itemknn", "params": {"kk": 1}}}, "a.toml")
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    modalrec.core.errors.ConfigError: a.toml: [model] params: model 'itemknn': unknown hyperparameter 'kk'; allowed: k...
    """
    try:
        cfg = RunConfig.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors())
        raise ConfigError(f"{source}: {problems}") from None
    check_params("model", cfg.model.name, cfg.model.params, source=source, table="[model] params")
    return cfg


def check_params(
    kind: Literal["model", "aligner"],
    name: str,
    params: dict[str, Any],
    *,
    source: str = "<config>",
    table: str | None = None,
) -> None:
    """Validate ``params`` against the declared hyperparameters of the registered component ``name``.

    :class:`ConfigError` names ``source`` (the config file), the table, the key and what is allowed;
    an unknown component name lists the known ones.

    >>> check_params("aligner", "ridge", {"rge": 1.0}, source="x.toml")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    modalrec.core.errors.ConfigError: x.toml: [aligner] params: aligner 'ridge': unknown hyperparameter 'rge'; allowed: ...reg...
    """
    known: Registry[Any]
    if kind == "model":
        from modalrec.models import REGISTRY as known
    else:
        from modalrec.align import ALIGNERS as known
    cls = known.get(name)
    where = f"{source}: {table or f'[{kind}] params'}"
    if cls is None:
        raise ConfigError(f"{where}: unknown {kind} {name!r}; known {kind}s: {', '.join(sorted(known))}")
    try:
        cls.params_class.build(kind, name, params)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def to_toml(d: dict[str, Any]) -> str:
    """A run config as TOML text (``tomli_w``); ``None`` values are left out (TOML has no null, and
    a missing key reads back as its default).

    >>> print(to_toml({"data": {"name": "ml100k", "root": None}, "model": {"name": "vbpr", "params": {"lr": 0.01}}}), end="")
    [data]
    name = "ml100k"
    <BLANKLINE>
    [model]
    name = "vbpr"
    <BLANKLINE>
    [model.params]
    lr = 0.01
    """
    try:
        return tomli_w.dumps(_drop_none(d))
    except TypeError as e:
        raise ConfigError(f"cannot write the config as TOML: {e}") from None


def _drop_none(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _drop_none(x) for k, x in v.items() if x is not None}
    if isinstance(v, list | tuple):
        return [_drop_none(x) for x in v]  # a None inside a list stays (and is refused by the writer)
    return v

"""Typed run configuration, loaded from TOML and validated with pydantic.

Why typed: a typo in a TOML key should fail at load time with the file and key named, not an hour
into training. Unknown keys are errors (``extra="forbid"``).

Example ``ml100k_lightgcn.toml``::

    [data]
    name = "ml100k"          # a registered data set (ml100k, tiktok, baby) or a path
    split = "random"         # random | temporal_user | temporal_global | leave_one_out | fixed | cold_start
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
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modalrec.core.errors import ConfigError


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

    >>> config_from_dict({"data": {"name": "ml100k"}, "model": {"name": "bprmf"}}).model.name
    'bprmf'
    """
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors())
        raise ConfigError(f"{source}: {problems}") from None

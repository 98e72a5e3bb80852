"""The ground floor: errors, atomic I/O, one registry, typed hyperparameters, persistence, ranking.

Everything above (data, encoders, evaluation, models, fusion, align, llm, workflows, serving, cli)
may import from here; nothing here imports from above (the layers contract in ``pyproject.toml``).
"""

from modalrec.core.errors import ConfigError, DataError, FitError, ModalrecError, RunDirError
from modalrec.core.params import ParamInfo, Params, describe_params
from modalrec.core.registry import Registry

__all__ = [
    "ConfigError",
    "DataError",
    "FitError",
    "ModalrecError",
    "ParamInfo",
    "Params",
    "Registry",
    "RunDirError",
    "describe_params",
]

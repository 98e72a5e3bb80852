"""One persistence base for every learned component (recommenders, aligners): no pickle, atomic.

Why one: a model and an aligner are both "typed hyperparameters + named arrays + JSON facts", and
were saved by two copies of the same code. A component is a directory holding ``<stem>.json``
(the registered name, the hyperparameters, the format version and JSON state) and
``<stem>.safetensors`` (every array). Loading looks the class up by name in the family's registry,
so a directory is self-describing. Files written before format versions existed count as version 1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Generic, Self, cast

import numpy as np
from safetensors.numpy import load_file, save_file
from typing_extensions import TypeVar

from modalrec.core.errors import ConfigError, RunDirError
from modalrec.core.io import atomic_path, atomic_write_text
from modalrec.core.params import Params
from modalrec.core.registry import Registry

#: Version of the ``<stem>.json`` layout; :meth:`Component.load` refuses newer files by name.
FORMAT_VERSION = 1

#: The hyperparameter class of a component (``Params`` when a caller does not know which).
P = TypeVar("P", bound=Params, default=Params)


def json_default(o: Any) -> Any:
    """``json.dumps`` fallback for numpy scalars/arrays and paths (everything else is a bug)."""
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Atomically write named arrays as safetensors (contiguous copies where needed)."""
    with atomic_path(path) as tmp:
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp))


def read_component_files(
    directory: Path, stem: str, kind: str
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The JSON facts and the arrays of a saved component; :class:`RunDirError` names what is wrong."""
    try:
        info = json.loads((directory / f"{stem}.json").read_text())
        state = load_file(str(directory / f"{stem}.safetensors"))
    except FileNotFoundError as e:
        raise RunDirError(f"{directory}: no saved {kind} ({e.filename} is missing)") from None
    except (json.JSONDecodeError, OSError) as e:
        raise RunDirError(f"{directory}: saved {kind} is unreadable: {e}") from None
    version = info.get("format_version", 1)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise RunDirError(
            f"{directory / (stem + '.json')}: format version {version!r} is newer than this modalrec "
            f"reads ({FORMAT_VERSION}); upgrade modalrec or re-create the {kind}"
        )
    return info, state


class Component(Generic[P]):
    """Typed hyperparameters (``self.hp``), arrays (``self._state``), JSON facts (``self.meta``).

    Subclass families set ``kind`` (used in messages and as the JSON key of the name), ``stem``
    (file names) and ``registry``; each component sets ``name`` and ``params_class``.
    """

    name: ClassVar[str] = "base"
    kind: ClassVar[str] = "component"
    stem: ClassVar[str] = "component"
    params_class: ClassVar[type[Params]] = Params
    registry: ClassVar[Registry[Any]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Components written for modalrec 0.1 declared ``default_params()``; without this check they
        # would silently accept no hyperparameters at all.
        super().__init_subclass__(**kwargs)
        if "default_params" in cls.__dict__ and "params_class" not in cls.__dict__:
            raise TypeError(
                f"{cls.__name__} overrides default_params(); declare its hyperparameters as a "
                "modalrec.core.Params subclass and set params_class instead (see docs/components.md)"
            )

    def __init__(self, **params: Any) -> None:
        self.hp: P = cast(P, self.params_class.build(self.kind, self.name, params))
        self._state: dict[str, np.ndarray] = {}
        self.meta: dict[str, Any] = {}

    # ------------------------------------------------------------------ hyperparameters
    @property
    def params(self) -> dict[str, Any]:
        """The hyperparameters as a plain dict (a copy: change them with :meth:`set_params`)."""
        return self.hp.as_dict()

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return cls.params_class().as_dict()

    def get_params(self) -> dict[str, Any]:
        return self.hp.as_dict()

    def set_params(self, **params: Any) -> Self:
        self.hp = cast(P, self.params_class.build(self.kind, self.name, {**self.get_params(), **params}))
        return self

    def clone(self) -> Self:
        """A new unfitted component with the same hyperparameters."""
        return type(self)(**self.get_params())

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # ------------------------------------------------------------------ persistence hooks
    @property
    def is_fitted(self) -> bool:
        raise NotImplementedError

    def _state_to_save(self) -> dict[str, np.ndarray]:
        """Arrays to persist; default: ``self._state``. Override to export torch parameters."""
        return self._state

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        """Rebuild the fitted component from saved arrays; default: keep them in ``self._state``."""
        self._state = state

    def _facts(self) -> dict[str, Any]:
        """JSON facts beyond name, hyperparameters and meta (sizes, modalities)."""
        return {}

    def _restore_facts(self, info: dict[str, Any]) -> None:
        """Inverse of :meth:`_facts`."""

    # ------------------------------------------------------------------ save / load
    def save(self, directory: str | Path) -> Path:
        """Write ``<stem>.json`` + ``<stem>.safetensors`` into ``directory`` (atomically, file by file)."""
        if not self.is_fitted:
            raise RuntimeError(f"cannot save an unfitted {self.kind}: call fit() first")
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        write_arrays(d / f"{self.stem}.safetensors", self._state_to_save())
        info = {self.kind: self.name, "params": self.get_params(), **self._facts(), "meta": self.meta}
        info["format_version"] = FORMAT_VERSION
        atomic_write_text(d / f"{self.stem}.json", json.dumps(info, indent=2, default=json_default))
        return d

    @classmethod
    def load(cls, directory: str | Path) -> Self:
        """Load a component saved by :meth:`save`; the class is taken from the JSON file."""
        d = Path(directory)
        info, state = read_component_files(d, cls.stem, cls.kind)
        try:
            klass = cls.registry.get_or_raise(info[cls.kind])
            obj = klass(**info["params"])
        except (ConfigError, KeyError) as e:
            raise RunDirError(
                f"{d / (cls.stem + '.json')}: cannot rebuild the saved {cls.kind}: {e}"
            ) from None
        if not isinstance(obj, cls):
            raise RunDirError(f"{d} holds a {info[cls.kind]!r} {cls.kind}, not {cls.name!r}")
        obj.meta = info.get("meta", {})
        obj._restore_facts(info)
        obj._restore(state)
        return obj

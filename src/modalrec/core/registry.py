"""One registry for every family of named components (models, aligners, fusion modules, encoders).

Why one: configs, the CLI and ``modalrec models`` look components up by name, and an unknown name
must give the same clear message (the known names) whatever the family. A registry is filled when
the package that defines its members is imported; ``populate`` names that package so that a lookup
works even when the caller imported only the base module.
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

from modalrec.core.errors import ConfigError

T = TypeVar("T")


def _definition(obj: object) -> tuple[str | None, str]:
    """(source file, qualified name): one definition, whatever module name it was imported under."""
    try:
        source = inspect.getsourcefile(obj)  # type: ignore[arg-type]
    except TypeError:
        source = None
    return (os.path.realpath(source) if source else None, getattr(obj, "__qualname__", repr(obj)))


class Registry(Mapping[str, T], Generic[T]):
    """Name -> component, case-insensitive on lookup.

    >>> shapes: Registry[type] = Registry("shape")
    >>> @shapes.register("square")
    ... class Square: ...
    >>> shapes.get_or_raise("SQUARE") is Square, sorted(shapes)
    (True, ['square'])
    >>> shapes.get_or_raise("circle")
    Traceback (most recent call last):
    modalrec.core.errors.ConfigError: unknown shape 'circle'; known shapes: square
    """

    def __init__(self, kind: str, *, populate: str | None = None) -> None:
        self.kind = kind
        self._populate = populate
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: add the decorated object under ``name``.

        A second, different object under one name is a bug and raises; the same definition (same
        source file and qualified name) imported again under a second module name, as a doctest runner
        may do, keeps the first registration, so ``isinstance`` checks against the canonical class hold.
        """

        def add(obj: T) -> T:
            key = name.lower()
            old = self._items.get(key)
            if old is not None and old is not obj:
                if _definition(old) == _definition(obj):
                    return obj
                raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._items[key] = obj
            return obj

        return add

    def _fill(self) -> None:
        if self._populate is not None:
            importlib.import_module(self._populate)

    def get_or_raise(self, name: str) -> T:
        """The component called ``name``; :class:`ConfigError` listing the known names otherwise."""
        self._fill()
        try:
            return self._items[name.lower()]
        except KeyError:
            known = ", ".join(sorted(self._items))
            raise ConfigError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}") from None

    def __getitem__(self, name: str) -> T:
        self._fill()
        return self._items[name.lower()]

    def __iter__(self) -> Iterator[str]:
        self._fill()
        return iter(self._items)

    def __len__(self) -> int:
        self._fill()
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        self._fill()
        return isinstance(name, str) and name.lower() in self._items

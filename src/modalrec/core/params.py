"""Typed, documented hyperparameters: one declaration per component, read by everything else.

Why: a hyperparameter is declared once, with its type, default, allowed range and a one-line
meaning, as a field of a :class:`Params` model (pydantic). The constructor of a model or aligner
validates against it, so a bad or unknown key in a config fails at load time naming the key and the
allowed values; ``modalrec models`` / ``modalrec aligners``, ``--help`` and the README table read the
same declaration through :func:`describe_params`; code reads ``self.hp.dim`` (typed for mypy and IDEs)
instead of ``self.params["dim"]``.

>>> from pydantic import Field
>>> class KNNParams(Params):
...     k: int = Field(50, ge=1, description="neighbours kept per item")
>>> KNNParams.build("model", "knn", {"k": 10}).k
10
>>> KNNParams.build("model", "knn", {"kk": 10})
Traceback (most recent call last):
modalrec.core.errors.ConfigError: model 'knn': unknown hyperparameter 'kk'; allowed: k
>>> KNNParams.build("model", "knn", {"k": 0})
Traceback (most recent call last):
modalrec.core.errors.ConfigError: model 'knn': hyperparameter 'k' = 0: Input should be greater than or equal to 1 (k: int >= 1)
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Any, Self

import annotated_types
from pydantic import BaseModel, ConfigDict, ValidationError

from modalrec.core.errors import ConfigError


class Params(BaseModel):
    """Base of every component's hyperparameters: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    @classmethod
    def build(cls, kind: str, name: str, values: dict[str, Any]) -> Self:
        """Validate ``values``; :class:`ConfigError` names the component, the key and what is allowed."""
        try:
            return cls(**values)
        except ValidationError as e:
            raise ConfigError(_explain(cls, kind, name, e)) from None

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (what ``model.json`` stores and ``get_params`` returns)."""
        return self.model_dump(mode="json")


@dataclass(frozen=True)
class ParamInfo:
    """One hyperparameter as shown to people: name, type, default, allowed range, meaning."""

    name: str
    type: str
    default: Any
    range: str
    meaning: str


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(annotation))
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{args}]" if name not in ("Union", "UnionType") else args.replace(", ", " | ")
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation))


def _range_text(metadata: list[Any]) -> str:
    parts = []
    for m in metadata:
        for attr, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if isinstance(m, getattr(annotated_types, attr.capitalize())):
                parts.append(f"{op} {getattr(m, attr)}")
    return ", ".join(parts)


def describe_params(cls: type[Params]) -> list[ParamInfo]:
    """Every declared hyperparameter of ``cls`` in declaration order.

    >>> from pydantic import Field
    >>> class P(Params):
    ...     lr: float = Field(0.01, gt=0, le=1, description="step size")
    >>> describe_params(P)
    [ParamInfo(name='lr', type='float', default=0.01, range='> 0, <= 1', meaning='step size')]
    """
    out = []
    for name, f in cls.model_fields.items():
        default = f.get_default(call_default_factory=True)
        out.append(
            ParamInfo(name, _type_name(f.annotation), default, _range_text(f.metadata), f.description or "")
        )
    return out


def _explain(cls: type[Params], kind: str, name: str, error: ValidationError) -> str:
    infos = {p.name: p for p in describe_params(cls)}
    lines = []
    for err in error.errors():
        key = ".".join(str(x) for x in err["loc"])
        if not key:  # a rule over several fields (a model validator): its message says which
            lines.append(str(err["msg"]).removeprefix("Value error, "))
            continue
        if err["type"] == "extra_forbidden":
            allowed = ", ".join(infos) or "(none)"
            lines.append(f"unknown hyperparameter {key!r}; allowed: {allowed}")
            continue
        top = str(err["loc"][0]) if err["loc"] else key
        info = infos.get(top)
        allowed = ""
        if info is not None:
            allowed = f" ({top}: {info.type}" + (f" {info.range}" if info.range else "") + ")"
        lines.append(f"hyperparameter {key!r} = {err.get('input')!r}: {err['msg']}{allowed}")
    return f"{kind} {name!r}: " + "; ".join(lines)

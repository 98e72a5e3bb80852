"""Run configs: model hyperparameters checked at load time (file, key and allowed values named), and
TOML written by ``to_toml`` (tomli-w) reads back through the config loader unchanged."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from modalrec.core.errors import ConfigError
from modalrec.models import REGISTRY
from modalrec.workflows.config import check_params, config_from_dict, load_config, to_toml


def test_unknown_model_hyperparameter_fails_at_load_naming_file_key_and_allowed(tmp_path: Path) -> None:
    p = tmp_path / "run.toml"
    p.write_text('[data]\nname = "ml100k"\n[model]\nname = "itemknn"\nparams = { kk = 10 }\n')
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}: [model] params: model 'itemknn': unknown hyperparameter 'kk'; allowed: ")
    assert "k" in msg.split("allowed: ")[1].split(", ")


def test_bad_model_hyperparameter_value_fails_at_load(tmp_path: Path) -> None:
    p = tmp_path / "run.toml"
    p.write_text('[data]\nname = "ml100k"\n[model]\nname = "itemknn"\nparams = { k = 0 }\n')
    with pytest.raises(
        ConfigError, match=r"run\.toml: \[model\] params: model 'itemknn': hyperparameter 'k' = 0"
    ):
        load_config(p)
    with pytest.raises(
        ConfigError, match=r"cfg: \[model\] params: model 'bprmf': hyperparameter 'dim' = 'big'"
    ):
        config_from_dict({"data": {"name": "x"}, "model": {"name": "bprmf", "params": {"dim": "big"}}}, "cfg")


def test_unknown_model_name_fails_at_load_listing_the_known_ones() -> None:
    with pytest.raises(
        ConfigError, match=r"c\.toml: \[model\] params: unknown model 'lightgnc'; known models: .*lightgcn"
    ):
        config_from_dict({"data": {"name": "x"}, "model": {"name": "lightgnc"}}, "c.toml")


def test_aligner_params_are_checked_the_same_way() -> None:
    check_params("aligner", "ridge", {"reg": 1.0})
    with pytest.raises(
        ConfigError,
        match=r"a\.toml: \[aligner\] params: aligner 'ridge': unknown hyperparameter 'alpha'; allowed: .*reg",
    ):
        check_params("aligner", "ridge", {"alpha": 1.0}, source="a.toml")
    with pytest.raises(ConfigError, match="unknown aligner 'rigde'; known aligners: "):
        check_params("aligner", "rigde", {})


def test_to_toml_refuses_what_toml_cannot_hold() -> None:
    with pytest.raises(ConfigError, match="cannot write the config as TOML"):
        to_toml({"data": {"name": "x", "options": {"weights": [1.0, None]}}})


# ---------------------------------------------------------------------------------- round trips
TEXT = st.text(max_size=12)
INT64 = st.integers(-(2**63), 2**63 - 1)
FLOAT = st.floats(allow_nan=False)  # TOML holds inf, but NaN != NaN would fail any equality
SCALAR = st.one_of(st.booleans(), INT64, FLOAT, TEXT)
VALUE = st.recursive(
    SCALAR, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3), max_leaves=8
)


def _valid(cls: Any, key: str, value: Any) -> bool:
    try:
        cls.params_class.model_validate({key: value})
    except ValidationError:
        return False
    return True


def _param_values(cls: Any, key: str, default: Any) -> st.SearchStrategy[Any]:
    """The declared default or a random value of the same type that the model accepts."""
    if isinstance(default, bool):
        other: st.SearchStrategy[Any] = st.booleans()
    elif isinstance(default, int):
        other = st.integers(-3, 10**6)
    elif isinstance(default, float):
        other = st.floats(-10.0, 1e6, allow_nan=False)
    else:
        other = st.just(default)
    return st.one_of(st.just(default), other.filter(lambda v: _valid(cls, key, v)))


@st.composite
def model_tables(draw: st.DrawFn) -> dict[str, Any]:
    name = draw(st.sampled_from(sorted(REGISTRY)))
    cls = REGISTRY[name]
    defaults = {k: v for k, v in cls.default_params().items() if v is not None}
    params = draw(
        st.fixed_dictionaries({}, optional={k: _param_values(cls, k, v) for k, v in defaults.items()})
    )
    return {"name": name, "params": params}


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


RUN_CONFIGS = st.fixed_dictionaries(
    {
        "data": st.fixed_dictionaries(
            {"name": TEXT},
            optional={
                "root": optional(TEXT),
                "split": optional(TEXT),
                "seed": INT64,
                "options": st.dictionaries(TEXT, VALUE, max_size=3),
            },
        )
    },
    optional={
        "model": model_tables(),
        "encode": st.fixed_dictionaries(
            {},
            optional={
                "modalities": st.lists(TEXT, max_size=3),
                "options": st.dictionaries(TEXT, VALUE, max_size=3),
                "cache_dir": optional(TEXT),
            },
        ),
        "evaluate": st.fixed_dictionaries(
            {},
            optional={"ks": st.lists(st.integers(1, 1000), max_size=4), "chunk_size": st.integers(1, 10**6)},
        ),
        "seed": INT64,
    },
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)
@given(raw=RUN_CONFIGS)
def test_run_configs_round_trip_through_toml(raw: dict[str, Any]) -> None:
    expected = config_from_dict(raw)
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "run.toml"
        p.write_text(to_toml(raw), encoding="utf-8")
        assert load_config(p) == expected


def test_floats_keep_every_digit() -> None:
    raw = {"data": {"name": "x", "options": {"a": 0.1 + 0.2, "b": -0.0, "c": math.inf, "d": 1e-300}}}
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "run.toml"
        p.write_text(to_toml(raw), encoding="utf-8")
        assert load_config(p).data.options == raw["data"]["options"]


def test_readme_split_names_are_the_loaders(tmp_path: Path) -> None:
    """Every split the README's config example lists loads (a wrong name there costs a user a ConfigError)."""
    import re

    from modalrec.data import load

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    line = next(x for x in readme.splitlines() if x.startswith('split = "random"'))
    names = [n.strip() for n in line.split("#", 1)[1].split("|")]
    assert len(names) >= 5
    rows = ["user,item,timestamp,x_label"]
    for u in range(12):
        for k in range(10):
            rows.append(f"u{u},i{(u * 3 + k) % 15},{100 * u + k},{0 if k < 8 else 1 + k % 2}")
    (tmp_path / "r.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    for name in names:
        assert re.fullmatch(r"[a-z_]+", name), name
        ds = load(tmp_path / "r.csv", split=name)
        assert ds.train.nnz > 0, name

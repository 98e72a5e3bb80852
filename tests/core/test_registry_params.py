"""The one registry and the typed hyperparameter declarations."""

from __future__ import annotations

from typing import Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import Field

from modalrec.core.errors import ConfigError
from modalrec.core.params import Params, describe_params
from modalrec.core.registry import Registry


class _P(Params):
    k: int = Field(10, ge=1, le=1000, description="neighbours")
    mode: Literal["a", "b"] = Field("a", description="which mode")
    scale: float | None = Field(None, gt=0, description="optional scale")


def test_describe_reports_type_default_range_meaning() -> None:
    infos = {p.name: p for p in describe_params(_P)}
    assert (infos["k"].type, infos["k"].default, infos["k"].range) == ("int", 10, ">= 1, <= 1000")
    assert infos["mode"].type == "'a' | 'b'"
    assert infos["scale"].type == "float | None"
    assert infos["scale"].meaning == "optional scale"


def test_errors_name_the_key_and_the_allowed_values() -> None:
    with pytest.raises(ConfigError, match=r"model 'x': hyperparameter 'mode' = 'c'.*\(mode: 'a' \| 'b'\)"):
        _P.build("model", "x", {"mode": "c"})
    with pytest.raises(ConfigError, match="unknown hyperparameter 'kk'; allowed: k, mode, scale"):
        _P.build("model", "x", {"kk": 1})


@given(st.integers())
def test_range_is_enforced_for_every_integer(k: int) -> None:
    if 1 <= k <= 1000:
        assert _P.build("model", "x", {"k": k}).k == k
    else:
        with pytest.raises(ConfigError, match="'k'"):
            _P.build("model", "x", {"k": k})


def test_registry_is_case_insensitive_and_refuses_a_second_object_under_one_name() -> None:
    reg: Registry[type] = Registry("widget")

    @reg.register("Knob")
    class Knob: ...

    assert reg.get_or_raise("KNOB") is Knob
    assert "knob" in reg
    assert list(reg) == ["knob"]
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("knob")(type("Other", (), {}))
    with pytest.raises(ConfigError, match="unknown widget 'dial'; known widgets: knob"):
        reg.get_or_raise("dial")


def test_a_same_named_class_from_another_file_does_not_replace_a_registered_one(tmp_path) -> None:
    import importlib.util

    from modalrec.models import REGISTRY, Popularity

    plugin = tmp_path / "popularity.py"
    plugin.write_text(
        "from modalrec.models import Recommender, register\n"
        "@register\n"
        "class Popularity(Recommender):\n"
        "    name = 'popularity'\n"
        "    def _fit(self, dataset, *, progress): ...\n"
        "    def _score(self, users): ...\n"
    )
    spec = importlib.util.spec_from_file_location("acme_popularity", plugin)
    assert spec is not None and spec.loader is not None
    with pytest.raises(ValueError, match="model 'popularity' is registered twice"):
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
    assert REGISTRY["popularity"] is Popularity


def test_a_component_declaring_default_params_the_old_way_fails_loudly() -> None:
    from modalrec.models import Recommender

    with pytest.raises(TypeError, match=r"declare its hyperparameters as a modalrec\.core\.Params subclass"):

        class Old(Recommender):  # modalrec 0.1 style
            name = "old"

            @classmethod
            def default_params(cls) -> dict[str, int]:
                return {"k": 10}


def test_a_rule_over_several_fields_reads_as_its_own_message() -> None:
    from modalrec.align import create

    with pytest.raises(ConfigError) as err:
        create("ensemble", members=[{"aligner": "ridge"}], weights=[1.0, 2.0])
    assert "'?'" not in str(err.value)
    assert str(err.value).startswith("aligner 'ensemble': ")

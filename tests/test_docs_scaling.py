"""docs/scaling.md is true: its cost table is what benchmarks/scaling_model.py computes from the committed
results, and every command option it documents exists (and the one it says is missing is missing)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "scaling.md"


def _scaling_model():
    spec = importlib.util.spec_from_file_location("scaling_model", ROOT / "benchmarks" / "scaling_model.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cost_table_is_what_the_model_computes() -> None:
    text = DOC.read_text(encoding="utf-8")
    shown = re.search(r"<!-- cost-model:start -->\n(.*?)<!-- cost-model:end -->", text, re.S)
    assert shown is not None, "the cost-model markers are missing"
    assert shown.group(1) == _scaling_model().markdown(), "run python benchmarks/scaling_model.py"


#: (command, options the page documents for it)
DOCUMENTED = {
    "encode": ["--backend", "--ray-actors", "--workers"],
    "fit": ["--backend", "--workers", "--address", "--storage", "--max-failures"],
    "evaluate": ["--backend", "--workers", "--address", "--sample-users", "--rerank"],
    "tune": ["--backend", "--workers", "--address", "--storage", "--trials"],
    "serve": ["--workers", "--config"],
    "serve-activate": ["--config", "--show", "--run-b"],
}


def _help(command: str) -> str:
    from typer.testing import CliRunner

    from modalrec.cli import app

    out = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200", "TERM": "dumb"})
    assert out.exit_code == 0, out.output
    return re.sub(r"\x1b\[[0-9;]*m", "", out.output)


@pytest.mark.parametrize("command", sorted(DOCUMENTED))
def test_documented_options_exist(command: str) -> None:
    text = DOC.read_text(encoding="utf-8")
    assert f"modalrec {command}" in text or f"`modalrec {command}`" in text
    shown = _help(command)
    missing = [opt for opt in DOCUMENTED[command] if opt not in shown]
    assert not missing, f"docs/scaling.md documents {missing} for `modalrec {command}`"


def test_what_the_page_calls_missing_is_missing() -> None:
    """'`--address` for `modalrec encode`' is listed as not built: update the page when it is."""
    assert "--address" not in _help("encode")

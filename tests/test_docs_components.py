"""The README's component tables and docs/components.md match the hyperparameter declarations.

Regenerate with ``python -m modalrec.workflows.components`` from the repository root.
"""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from modalrec.cli import app
from modalrec.workflows.components import (
    components_markdown,
    list_components,
    params_document,
    replace_tables,
    summary_table,
)

ROOT = Path(__file__).resolve().parents[1]


def test_readme_tables_match_declarations() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert replace_tables(readme) == readme, (
        "README tables are stale: python -m modalrec.workflows.components"
    )


def test_components_doc_matches_declarations() -> None:
    doc = (ROOT / "docs" / "components.md").read_text(encoding="utf-8")
    assert doc == components_markdown(), (
        "docs/components.md is stale: python -m modalrec.workflows.components"
    )


def test_every_parameter_is_typed_and_documented() -> None:
    for kind in ("model", "aligner"):
        for c in list_components(kind):
            for p in c.params:
                assert p.type != "Any", f"{kind} {c.name}: parameter {p.name} has no type"
                assert p.meaning, f"{kind} {c.name}: parameter {p.name} has no meaning"


def test_cli_lists_the_same_tables() -> None:
    runner = CliRunner()
    for kind in ("model", "aligner"):
        res = runner.invoke(app, [f"{kind}s", "--markdown"])
        assert res.exit_code == 0, res.output
        assert res.output == summary_table(kind)
    res = runner.invoke(app, ["models", "lightgcn", "--json"])
    assert res.exit_code == 0
    assert '"name": "n_layers"' in res.output
    res = runner.invoke(app, ["models", "ease", "--markdown"])
    assert res.exit_code == 0
    assert res.output == params_document("model", "ease")
    assert "### `ease`" in res.output and "### `bprmf`" not in res.output
    res = runner.invoke(app, ["aligners", "nope"])
    assert res.exit_code == 2
    assert "unknown aligner 'nope'" in res.output

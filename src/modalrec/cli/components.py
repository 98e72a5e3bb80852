"""CLI commands that list what can be configured: ``modalrec models`` and ``modalrec aligners``.

Both read the components' own hyperparameter declarations (:mod:`modalrec.workflows.components`),
the same source as configs, error messages and the README tables.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from modalrec.cli.app import app, console, print_json, user_errors

if TYPE_CHECKING:
    from modalrec.workflows.components import Kind


def _show(kind: Kind, name: str | None, as_json: bool, markdown: bool) -> None:
    from modalrec.workflows.components import list_components, params_document, summary_table

    infos = list_components(kind, name)
    if as_json:
        print_json([c.as_dict() for c in infos])
    elif markdown:
        typer.echo(params_document(kind, name) if name else summary_table(kind), nl=False)
    else:
        for c in infos:
            console.print(f"[bold]{c.name}[/]: {c.summary}", highlight=False)
            t = Table()
            for col in ("parameter", "type", "default", "range", "meaning"):
                t.add_column(col, overflow="fold")
            for p in c.params:
                t.add_row(p.name, p.type, repr(p.default), p.range or "-", p.meaning)
            console.print(t)


@app.command("models")
@user_errors
def models_cmd(
    name: Annotated[str | None, typer.Argument(help="one model (default: all)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    markdown: Annotated[bool, typer.Option(help="print the README's Markdown table")] = False,
) -> None:
    """Every registered model with its hyperparameters (type, default, range, meaning)."""
    _show("model", name, as_json, markdown)


@app.command("aligners")
@user_errors
def aligners_cmd(
    name: Annotated[str | None, typer.Argument(help="one aligner (default: all)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    markdown: Annotated[bool, typer.Option(help="print the README's Markdown table")] = False,
) -> None:
    """Every registered aligner with its hyperparameters (type, default, range, meaning)."""
    _show("aligner", name, as_json, markdown)

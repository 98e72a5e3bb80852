"""CLI command of the catalogue area: ``modalrec add-items`` (new items placed by the run's cold-start model)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modalrec.cli.app import app, console, user_errors


@app.command("add-items")
@user_errors
def add_items(
    run_dir: Annotated[Path, typer.Argument(help="run directory of a 'coldstart' model (modalrec fit)")],
    items: Annotated[Path, typer.Argument(help="CSV of new items: item_id + the run's text/media columns")],
    out: Annotated[Path, typer.Option("--out", "-o", help="new run directory to write")],
    overwrite: Annotated[bool, typer.Option(help="replace an existing run directory at --out")] = False,
    quiet: Annotated[bool, typer.Option(help="no progress bars")] = False,
) -> None:
    """Encode new items with the run's recorded encoders, place them with its cold-start model and
    write a new run directory (RUN_DIR is not changed). Bad rows are refused with file, row and field."""
    from modalrec.workflows.add_items import add_items as run_add

    res = run_add(run_dir, items, out, overwrite=overwrite, progress=not quiet)
    gaps = ", ".join(f"{m} missing for {n}" for m, n in res.missing.items() if n)
    console.print(
        f"Added {len(res.added)} items ({gaps or 'every modality present'}); "
        f"run written to [bold]{res.run.path}[/] ({res.run.dataset.n_items} items)"
    )

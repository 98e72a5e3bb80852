"""CLI commands of the alignment area: ``align``, ``align-report``, ``search`` and ``similar``.

They register themselves on :data:`modalrec.cli.app` when this module is imported (one import line
in ``modalrec/cli.py``) and only call the public functions of :mod:`modalrec.workflows.align_runs`,
:mod:`modalrec.align.report` and :mod:`modalrec.workflows.search`; heavy imports stay inside the functions so
that ``modalrec --help`` is fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from modalrec.cli.app import app, console, print_json, user_errors
from modalrec.core.errors import ConfigError


def parse_params(pairs: list[str] | None) -> dict[str, Any]:
    """``["dim=64", "hidden=null", "lr=0.001"]`` -> ``{"dim": 64, "hidden": None, "lr": 0.001}``.

    Values are JSON when they parse as JSON, else plain strings.

    >>> parse_params(["dim=64", "hidden=null", "reference=image"])
    {'dim': 64, 'hidden': None, 'reference': 'image'}
    """
    out: dict[str, Any] = {}
    for p in pairs or []:
        key, sep, val = p.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--param expects KEY=VALUE, got {p!r}")
        try:
            out[key.strip()] = json.loads(val)
        except json.JSONDecodeError:
            out[key.strip()] = val
    return out


def _hits_table(title: str, hits: list[dict[str, Any]]) -> Table:
    t = Table(title=title)
    t.add_column("rank", justify="right")
    t.add_column("item")
    if any("title" in h for h in hits):
        t.add_column("title")
    t.add_column("score", justify="right")
    for h in hits:
        row = [str(h["rank"]), h["item_id"]]
        if "title" in h:
            row.append(str(h["title"]))
        t.add_row(*row, f"{h['score']:.4f}")
    return t


@app.command()
@user_errors
def align(
    run_dir: Annotated[Path, typer.Argument(help="run directory with item features (features/<m>.npy)")],
    aligner: Annotated[
        str, typer.Option("--aligner", "-a", help="ridge, cca, contrastive, mmd, ...")
    ] = "contrastive",
    modality: Annotated[
        list[str] | None, typer.Option("--modality", "-m", help="modalities to align (repeat; default all)")
    ] = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="aligner hyperparameter KEY=VALUE (repeat)")
    ] = None,
    holdout: Annotated[float, typer.Option(help="share of items held out for the quality report")] = 0.2,
    seed: Annotated[int, typer.Option(help="seed of the hold-out split and the fit")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Fit an aligner on a run's item features and store it in RUN_DIR/align (used by search/similar)."""
    from modalrec.align.report import report_markdown
    from modalrec.workflows.align_runs import align_run

    rep = align_run(
        run_dir, aligner, modalities=modality, params=parse_params(param), holdout=holdout, seed=seed
    )
    if as_json:
        print_json(rep)
        return
    console.print(report_markdown(rep), markup=False, highlight=False)
    console.print(f"Alignment written to [bold]{run_dir / 'align'}[/]")


@app.command("align-report")
@user_errors
def align_report_cmd(
    run_dir: Annotated[Path, typer.Argument(help="run directory holding align/")],
    recompute: Annotated[
        bool, typer.Option(help="recompute from the saved aligner and the run's features")
    ] = False,
) -> None:
    """Print the alignment quality report (cross-modal Recall@1/10, median rank, cosine gaps)."""
    from modalrec.align.report import align_report

    console.print(align_report(run_dir, recompute=recompute), markup=False, highlight=False)


@app.command()
@user_errors
def search(
    run_dir: Annotated[Path, typer.Argument(help="run directory (aligned with `modalrec align`)")],
    query: Annotated[str, typer.Argument(help="free text describing the items you want")],
    k: Annotated[int, typer.Option("-k", help="number of results", min=1)] = 10,
    modality: Annotated[str, typer.Option(help="gallery: image, audio, text, ... or fused")] = "fused",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """Find items by their images, sounds, texts or fused vectors from a text query."""
    from modalrec.workflows.search import search as do_search

    hits = do_search(run_dir, query, k, modality=modality)
    if as_json:
        print_json(hits)
        return
    console.print(_hits_table(f"{query!r} -> {modality}", hits))


@app.command()
@user_errors
def similar(
    run_dir: Annotated[Path, typer.Argument(help="run directory (aligned with `modalrec align`)")],
    item: Annotated[str, typer.Argument(help="item id")],
    k: Annotated[int, typer.Option("-k", help="number of results", min=1)] = 10,
    modality: Annotated[str, typer.Option(help="gallery: image, audio, text, ... or fused")] = "fused",
    query_modality: Annotated[
        str | None, typer.Option(help="which vector of ITEM to query with (default: --modality)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """Items closest to ITEM, within one modality or across modalities (e.g. its text vs images)."""
    from modalrec.workflows.search import similar as do_similar

    hits = do_similar(run_dir, item, k, modality=modality, query_modality=query_modality)
    if as_json:
        print_json(hits)
        return
    console.print(_hits_table(f"{item} ({query_modality or modality}) -> {modality}", hits))

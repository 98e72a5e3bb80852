"""CLI commands of the multimodal-models area: ``modalrec tune`` and ``modalrec report``.

Registered on :data:`modalrec.cli.app` when :mod:`modalrec.cli.app` imports this module; heavy libraries
(optuna, matplotlib, torch models) are imported inside the commands so ``modalrec --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modalrec.cli.app import app, console, user_errors
from modalrec.core.errors import ConfigError


@app.command()
@user_errors
def tune(
    config: Annotated[Path, typer.Argument(help="TOML run config with a [tune.space] table")],
    trials: Annotated[int, typer.Option("--trials", "-n", help="finished trials the study should hold")] = 20,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="study directory (default: <config stem>-tune)")
    ] = None,
    storage: Annotated[str | None, typer.Option(help="Optuna storage URL (default: sqlite in --out)")] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bars")] = True,
    backend: Annotated[
        str, typer.Option(help="local, or ray: trials in parallel Ray tasks sharing the study's database")
    ] = "local",
    workers: Annotated[
        int | None, typer.Option(min=1, help="parallel Ray tasks (--backend ray; default: one per CPU)")
    ] = None,
    address: Annotated[
        str | None,
        typer.Option(help="Ray cluster to join (--backend ray): auto, host:port or ray://host:port"),
    ] = None,
) -> None:
    """Optuna TPE search (with pruning) maximising validation Recall@20; resumable; writes best.toml.

    --backend ray runs trials in parallel Ray tasks against one study (the SQLite file in --out for
    a local Ray runtime; on a cluster pass --storage postgresql+psycopg://... every node reaches).
    """
    from modalrec.workflows.tuning import tune as run_tune

    out_dir = out if out is not None else config.with_name(config.stem + "-tune")
    summary = run_tune(
        config,
        trials,
        out_dir,
        storage=storage,
        progress=not quiet,
        backend=backend,
        workers=workers,
        address=address,
    )
    console.print(
        f"{summary['n_complete']} complete, {summary['n_pruned']} pruned, {summary['n_failed']} failed "
        f"trials; best valid Recall@20 "
        f"{summary['best_value']:.4f} (trial {summary['best_trial']}): {summary['best_params']}"
    )
    console.print(f"Best config written to [bold]{summary['best_config']}[/]")


@app.command()
@user_errors
def report(
    source: Annotated[Path, typer.Argument(help="a run directory (modalrec fit) or a TOML run config")],
    out: Annotated[Path, typer.Option("--out", "-o", help="report directory")],
    quiet: Annotated[bool, typer.Option(help="no progress bars")] = True,
) -> None:
    """Ablations (each modality, every pair, all, none), warm vs cold, modality weights, K=10/20/50:
    Markdown + self-contained HTML with plots."""
    from modalrec.workflows.ablation import run_ablations
    from modalrec.workflows.report import write_report

    trained = None
    if source.is_dir():
        from modalrec.workflows.rundir import load_run

        run = load_run(source)
        ds, trained = run.dataset, run.model
        model_name, params = run.model.name, dict(run.model.get_params())
        ks = tuple(run.manifest.get("config", {}).get("evaluate", {}).get("ks", (10, 20, 50)))
    elif source.suffix.lower() == ".toml":
        from modalrec.workflows.tuning import load_with_features, read_config

        cfg, _, _ = read_config(source)
        ds = load_with_features(cfg)
        model_name, params, ks = cfg.model.name, dict(cfg.model.params), tuple(cfg.evaluate.ks)
    else:
        raise ConfigError(f"{source}: expected a run directory or a .toml run config")
    if 20 not in ks:
        ks = tuple(sorted({*ks, 20}))
    result = run_ablations(
        ds, model_name, params, ks=ks, trained=trained, progress=not quiet, log=lambda s: console.print(s)
    )
    result["source"] = str(source)
    result["dataset"] = str(ds.summary())
    paths = write_report(result, out)
    console.print(f"Report written to [bold]{paths['markdown']}[/] and [bold]{paths['html']}[/]")

"""CLI commands of a run: ``fit``, ``evaluate``, ``recommend`` and the main job ``demo``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from modalrec.cli.app import app, console, metrics_table, print_json, user_errors
from modalrec.core.errors import ConfigError, ModalrecError

#: Help of every ``--address`` option (the Ray cluster a command joins).
RAY_ADDRESS_HELP = (
    "Ray cluster to join (--backend ray): auto, host:port or ray://host:port (default: a local Ray runtime)"
)


@app.command()
@user_errors
def fit(
    config: Annotated[Path, typer.Argument(help="TOML run configuration")],
    out: Annotated[Path, typer.Option("--out", "-o", help="run directory to write")],
    overwrite: Annotated[bool, typer.Option(help="replace an existing run directory")] = False,
    quiet: Annotated[bool, typer.Option(help="no progress bars")] = False,
    backend: Annotated[
        str,
        typer.Option(help="local, or ray: data-parallel training on Ray Train (bprmf, lightgcn, graphmm)"),
    ] = "local",
    workers: Annotated[int, typer.Option(min=1, help="Ray Train workers, one CPU each (--backend ray)")] = 2,
    address: Annotated[str | None, typer.Option(help=RAY_ADDRESS_HELP)] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            help="where Ray checkpoints go (default: beside --out; on a cluster a path all nodes reach)"
        ),
    ] = None,
    max_failures: Annotated[
        int, typer.Option(min=0, help="worker-group restarts from the last checkpoint before the fit fails")
    ] = 3,
) -> None:
    """Load data, train the configured model with early stopping and write a run directory.

    Model params are checked against their declarations on load (`modalrec models NAME` lists them).
    With --backend ray the model trains on --workers Ray Train workers (shards of the interactions,
    gradients averaged, early stopping on rank 0, checkpoints that a restarted worker resumes from).
    """
    from modalrec.workflows.config import load_config
    from modalrec.workflows.pipeline import fit as run_fit

    cfg = load_config(config)
    if backend == "ray":
        from modalrec.workflows.ray_train import fit_config_ray

        run = fit_config_ray(
            cfg,
            out,
            workers=workers,
            address=address,
            storage=storage,
            max_failures=max_failures,
            overwrite=overwrite,
        )
    elif backend == "local":
        run = run_fit(cfg, out, overwrite=overwrite, progress=not quiet)
    else:
        raise ConfigError(f"unknown backend {backend!r}; expected 'local' or 'ray'")
    metrics = json.loads((run.path / "metrics.json").read_text())
    for split in ("valid", "test", "test_cold"):
        if split in metrics:
            m = metrics[split]
            console.print(metrics_table(f"{split} ({m['n_users']} users)", m["metrics"]))
    console.print(f"Run written to [bold]{run.path}[/]")


@app.command()
@user_errors
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="run directory written by `modalrec fit`")],
    split: Annotated[str, typer.Option(help="valid or test")] = "test",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    cold: Annotated[bool, typer.Option(help="rank cold-start items only (cold-start runs)")] = False,
    rerank: Annotated[
        str | None, typer.Option(help="re-rank the top 20 with: llm (blend chosen on validation; 200 users)")
    ] = None,
    sample_users: Annotated[
        int | None,
        typer.Option(
            "--sample-users",
            min=1,
            help="evaluate a seeded uniform sample of this many users; each metric gets a 95% confidence "
            "interval (normal approximation over users)",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="seed of the user sample (--sample-users)")] = 0,
    backend: Annotated[str, typer.Option(help="local, or ray: user shards ranked as Ray tasks")] = "local",
    workers: Annotated[
        int | None, typer.Option(min=1, help="Ray tasks (--backend ray; default: one per CPU of the cluster)")
    ] = None,
    address: Annotated[str | None, typer.Option(help=RAY_ADDRESS_HELP)] = None,
) -> None:
    """Full-ranking metrics of a run on its stored split (all users, or a seeded sample with CIs)."""
    from modalrec.evaluation.protocol import evaluate as run_eval
    from modalrec.workflows.rundir import load_run

    if backend not in ("local", "ray"):
        raise ConfigError(f"unknown backend {backend!r}; expected 'local' or 'ray'")
    if backend == "ray":
        if rerank is not None:
            raise ConfigError("--rerank runs locally; drop --backend ray")
        from modalrec.core.raycluster import connect

        connect(address)  # a wrong address stops before the run is loaded
    run = load_run(run_dir)
    if rerank is not None:
        from modalrec.cli.llm import evaluate_rerank

        evaluate_rerank(run, split, rerank, as_json=as_json)
        return
    cand = run.dataset.cold_items if cold else None
    if cold and cand is None:
        raise ModalrecError(f"{run_dir}: this run has no cold-start items")
    if backend == "ray":
        from modalrec.evaluation.distributed import evaluate_ray

        res = evaluate_ray(
            run.model,
            run.dataset,
            split,
            candidate_items=cand,
            sample_users=sample_users,
            seed=seed,
            tasks=workers,
        )
    else:
        res = run_eval(
            run.model, run.dataset, split, candidate_items=cand, sample_users=sample_users, seed=seed
        )
    if as_json:
        print_json(res.as_dict())
        return
    who = (
        f"{res.n_users} users"
        if sample_users is None
        else f"{res.n_users} of {res.population} users (seed {seed})"
    )
    console.print(metrics_table(f"{split}: {who}, {res.seconds:.2f} s", res.metrics))
    if res.confidence:
        ci = ", ".join(
            f"{k} [{lo:.4f}, {hi:.4f}]"
            for k, (lo, hi) in res.confidence.items()
            if k.startswith(("recall@", "ndcg@"))
        )
        console.print(
            f"{res.confidence_level:.0%} confidence intervals (normal approximation over users): {ci}"
        )


@app.command()
@user_errors
def recommend(
    run_dir: Annotated[Path, typer.Argument(help="run directory")],
    user: Annotated[str, typer.Option("--user", "-u", help="external user id")],
    k: Annotated[int, typer.Option("-k", help="number of items", min=1)] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Top-k recommendations for one user (items the user has seen are excluded)."""
    from modalrec.workflows.pipeline import recommend_for_user

    recs = recommend_for_user(run_dir, user, k)
    if as_json:
        print_json({"user": user, "items": recs})
        return
    t = Table(title=f"Top {k} for user {user}")
    cols = list(recs[0]) if recs else ["rank", "item_id", "score"]
    for c in cols:
        t.add_column(c)
    for r in recs:
        t.add_row(*(f"{r[c]:.4f}" if isinstance(r[c], float) else str(r[c]) for c in cols))
    console.print(t)


@app.command()
@user_errors
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="where the catalogue, features and run go")] = Path(
        "runs/demo"
    ),
    seed: Annotated[int, typer.Option(help="catalogue and training seed")] = 0,
    items: Annotated[int, typer.Option(help="number of demo items", min=50)] = 1200,
    users: Annotated[int, typer.Option(help="number of simulated users", min=20)] = 800,
    quiet: Annotated[bool, typer.Option(help="no progress bars")] = False,
) -> None:
    """The main job on the embedded demo catalogue: generate, encode, fit, compare, write a run."""
    from modalrec.workflows.demo import run_demo
    from modalrec.workflows.pipeline import recommend_for_user

    res = run_demo(out, seed=seed, n_items=items, n_users=users, progress=not quiet)
    t = Table(title="Encoded modalities")
    for c in ("modality", "items", "dim", "missing"):
        t.add_column(c, justify="right" if c != "modality" else "left")
    for r in res.encode_summary:
        t.add_row(r["modality"], str(r["items"]), str(r["dim"]), str(r["missing"]))
    console.print(t)
    t = Table(title=f"Test metrics ({res.rows[0]['test_users']} users, full ranking)")
    for c in ("model", "content", "valid R@20", "R@20", "NDCG@20", "P@20", "seconds"):
        t.add_column(c, justify="left" if c == "model" else "right")
    for r in res.rows:
        m = r["test"]
        t.add_row(
            r["model"] + (" *" if r["model"] == res.best_model else ""),
            "yes" if r["uses_content"] else "no",
            f"{r['valid_recall@20']:.4f}",
            f"{m['recall@20']:.4f}",
            f"{m['ndcg@20']:.4f}",
            f"{m['precision@20']:.4f}",
            f"{r['seconds']:.1f}",
        )
    console.print(t)
    console.print("* chosen on validation Recall@20 and written as the run directory")
    user = res.example_user
    recs = recommend_for_user(res.run_dir, user, 5)
    console.print(
        f"Top 5 for demo user {user}: " + ", ".join(f"{r['item_id']} ({r.get('title', '')})" for r in recs)
    )
    console.print(", ".join(f"{k} {v:.1f} s" for k, v in res.seconds.items()))
    console.print(
        f"Run directory: [bold]{res.run_dir}[/]  (try: modalrec recommend {res.run_dir} --user {user})"
    )

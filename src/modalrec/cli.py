"""The ``modalrec`` command line (typer + rich). Every command calls a public pipeline function.

User errors (:class:`~modalrec.errors.ModalrecError`) are printed as one red line, without a
traceback, and the process exits with code 2.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from modalrec.errors import ModalrecError

app = typer.Typer(
    name="modalrec",
    help="Multimodal recommendation with cross-modal alignment and an LLM layer.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(fn: F) -> F:
    """Turn ModalrecError (bad data, config, run dir) into a clear message and exit code 2."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ModalrecError as e:
            err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def metrics_table(title: str, metrics: dict[str, float], ks: tuple[int, ...] | None = None) -> Table:
    """Rows = metric names, columns = K."""
    names: list[str] = []
    kset: set[int] = set()
    for key in metrics:
        if "@" in key:
            n, k_text = key.split("@")
            if n not in names:
                names.append(n)
            kset.add(int(k_text))
    cols = sorted(kset) if ks is None else list(ks)
    t = Table(title=title)
    t.add_column("metric")
    for k in cols:
        t.add_column(f"@{k}", justify="right")
    for n in names:
        t.add_row(n, *(f"{metrics.get(f'{n}@{k}', float('nan')):.4f}" for k in cols))
    return t


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


@app.command()
@user_errors
def validate(
    data: Annotated[str, typer.Argument(help="registered data set name (ml100k, tiktok, baby) or a path")],
    root: Annotated[str | None, typer.Option(help="folder holding the registered data sets")] = None,
    items: Annotated[
        Path | None, typer.Option(help="catalogue file for an interaction file (csv/tsv/jsonl/parquet)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    encoding: Annotated[
        str | None, typer.Option(help="text encoding of the input files (default UTF-8)")
    ] = None,
    strict: Annotated[
        bool, typer.Option(help="stop at the first interaction naming an unknown item (file:line)")
    ] = False,
) -> None:
    """Load a data set, check it and print the validation report.

    Exit codes: 0 clean (informational notes only), 2 when a file cannot be read (the message names
    file, line and field) or when the report holds warnings (rows dropped or suspicious data), so
    the command can gate a data pipeline.
    """
    from modalrec.data import validate as run_validate

    opts: dict[str, Any] = {}
    if encoding:
        opts["encoding"] = encoding
        if items is not None:
            opts["items_encoding"] = encoding
    if items is not None:
        opts["items"] = items
    if strict:
        opts["strict"] = True
    report = run_validate(data, root=root, **opts)
    if as_json:
        print_json(report.as_dict())
    else:
        for f, s in report.stats.items():
            console.print(f"[bold]{f}[/]: " + ", ".join(f"{k}={v}" for k, v in s.items()), highlight=False)
        if not report.issues:
            console.print("[green]No problems found.[/]")
        else:
            t = Table(title="Problems")
            for c in ("severity", "problem", "file", "count", "dropped", "examples"):
                t.add_column(c)
            for i in report.issues.values():
                t.add_row(i.severity, i.kind, i.file, str(i.count), str(i.dropped), "; ".join(i.examples))
            console.print(t)
        console.print(
            f"Rows dropped: {report.dropped_rows}" + ("" if report.ok else "  [yellow](see warnings)[/]")
        )
    if not report.ok:
        raise typer.Exit(2)


@app.command()
@user_errors
def fit(
    config: Annotated[Path, typer.Argument(help="TOML run configuration")],
    out: Annotated[Path, typer.Option("--out", "-o", help="run directory to write")],
    overwrite: Annotated[bool, typer.Option(help="replace an existing run directory")] = False,
    quiet: Annotated[bool, typer.Option(help="no progress bars")] = False,
) -> None:
    """Load data, train the configured model with early stopping and write a run directory."""
    from modalrec.config import load_config
    from modalrec.pipeline import fit as run_fit

    cfg = load_config(config)
    run = run_fit(cfg, out, overwrite=overwrite, progress=not quiet)
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
) -> None:
    """Full-ranking metrics of a run on its stored split."""
    from modalrec.evaluation.protocol import evaluate as run_eval
    from modalrec.rundir import load_run

    run = load_run(run_dir)
    if rerank is not None:
        from modalrec.llm.commands import evaluate_rerank

        evaluate_rerank(run, split, rerank, as_json=as_json)
        return
    cand = run.dataset.cold_items if cold else None
    if cold and cand is None:
        raise ModalrecError(f"{run_dir}: this run has no cold-start items")
    res = run_eval(run.model, run.dataset, split, candidate_items=cand)
    if as_json:
        print_json(res.as_dict())
    else:
        console.print(metrics_table(f"{split}: {res.n_users} users, {res.seconds:.2f} s", res.metrics))


@app.command()
@user_errors
def recommend(
    run_dir: Annotated[Path, typer.Argument(help="run directory")],
    user: Annotated[str, typer.Option("--user", "-u", help="external user id")],
    k: Annotated[int, typer.Option("-k", help="number of items", min=1)] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Top-k recommendations for one user (items the user has seen are excluded)."""
    from modalrec.pipeline import recommend_for_user

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
    from modalrec.demo_job import run_demo
    from modalrec.pipeline import recommend_for_user

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


def _is_run_config(path: str) -> bool:
    """A run config has a [data] table; any other .toml is a data set description for ``load``."""
    import tomllib

    try:
        with open(path, "rb") as f:
            return "data" in tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError):
        return True  # let load_config report the problem with the file


@app.command()
@user_errors
def encode(
    data: Annotated[
        str, typer.Argument(help="a run config (.toml with [data]), a data set name, or a data path / .toml")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="output directory for features and the report")],
    backend: Annotated[str, typer.Option(help="local (threads) or ray (Ray Data actor pool)")] = "local",
    cache_dir: Annotated[
        Path | None, typer.Option(help="shared vector cache directory (default: OUT/cache)")
    ] = None,
    modality: Annotated[
        list[str] | None, typer.Option("--modality", "-m", help="modalities to encode")
    ] = None,
    root: Annotated[str | None, typer.Option(help="folder holding the registered data sets")] = None,
    workers: Annotated[int, typer.Option(help="decoding threads (local backend)", min=0)] = 2,
    ray_actors: Annotated[int, typer.Option(help="encoder actors (ray backend)", min=1)] = 2,
    quiet: Annotated[bool, typer.Option(help="no progress bars")] = False,
) -> None:
    """Encode every modality of a catalogue with the pretrained encoders (cached, resumable).

    Bad content (missing, corrupt, truncated or empty files, empty texts, NaN rows) marks the item
    missing for that modality; OUT/encode_report.md lists every such item with its reason.
    """
    from modalrec.encoders import encode_dataset

    mods: Any = None
    if data.endswith(".toml") and _is_run_config(data):
        from modalrec.config import load_config
        from modalrec.pipeline import load_dataset

        cfg = load_config(data)
        ds = load_dataset(cfg)
        if cfg.encode is not None:
            mods = list(modality or cfg.encode.modalities) or None
            if mods and cfg.encode.options:
                mods = {m: cfg.encode.options.get(m) or {} for m in mods}
            if cache_dir is None and cfg.encode.cache_dir:
                cache_dir = Path(cfg.encode.cache_dir)
        else:
            mods = modality or None
    else:
        from modalrec.data import load

        ds = load(data, root=root)
        mods = modality or None
    fs = encode_dataset(
        ds,
        mods,
        out,
        backend=backend,
        cache_dir=cache_dir.expanduser() if cache_dir is not None else None,
        progress=not quiet,
        workers=workers,
        ray_actors=ray_actors,
    )
    items_file = out / "items.parquet"
    # search and similar show titles from it; a run's own item table is never rewritten (its
    # manifest holds the file's hash)
    if ds.items is not None and not items_file.exists():
        from modalrec.io import atomic_path

        with atomic_path(items_file) as tmp:
            ds.items.write_parquet(tmp)
    t = Table(title=f"Encoded {ds.name} ({backend} backend)")
    for c in ("modality", "encoder", "items", "dim", "missing", "encoded", "cached", "seconds"):
        t.add_column(c, justify="left" if c in ("modality", "encoder") else "right")
    for r in fs.report.summary_rows():
        t.add_row(
            *(str(r[c]) for c in ("modality", "encoder", "items", "dim", "missing", "encoded", "cached")),
            f"{r['seconds']:.1f}",
        )
    console.print(t)
    for m, rep in fs.report.modalities.items():
        if rep.missing_by_reason:
            reasons = sorted(rep.missing_by_reason.items(), key=lambda kv: -kv[1])
            console.print(f"{m} missing by reason: " + ", ".join(f"{k}: {v}" for k, v in reasons))
    console.print(f"Features written to [bold]{out}/features[/]; report: {out}/encode_report.md")


# Commands of the other areas live in their own modules (one per area) and register themselves on
# ``app`` when imported; those modules import their heavy libraries inside the command functions so that
# ``modalrec --help`` stays fast. One import line per area below.
# area command modules:
import modalrec.align.commands  # noqa: E402
import modalrec.llm.commands  # noqa: E402
import modalrec.models.commands  # noqa: E402
import modalrec.serving.commands  # noqa: E402


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()

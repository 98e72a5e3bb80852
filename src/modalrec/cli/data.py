"""CLI commands of the data area: ``validate`` and ``encode``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from modalrec.cli.app import app, console, print_json, user_errors


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
        from modalrec.workflows.config import load_config
        from modalrec.workflows.pipeline import load_dataset

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
        from modalrec.core.io import atomic_path

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


@app.command()
@user_errors
def synth(
    out: Annotated[Path, typer.Option("--out", "-o", help="folder to write the catalogue into")],
    users: Annotated[int, typer.Option(help="number of users", min=1)] = 1000,
    items: Annotated[int, typer.Option(help="number of items", min=1)] = 500,
    interactions: Annotated[int, typer.Option(help="distinct user-item pairs", min=1)] = 20000,
    modalities: Annotated[
        str, typer.Option(help="item feature modalities, NAME or NAME:DIM, comma-separated ('' for none)")
    ] = "image:64,text:64",
    clusters: Annotated[int, typer.Option(help="taste clusters", min=1)] = 20,
    seed: Annotated[int, typer.Option(help="random seed (same seed, same files)")] = 0,
) -> None:
    """Write a synthetic catalogue: power-law popularity, clustered tastes, features with the cluster signal.

    The folder holds Parquet files, one .npy per modality and a dataset.toml that every command reads
    (e.g. `modalrec validate OUT/dataset.toml`).
    """
    from modalrec.data.synth import make_synthetic, parse_modalities, summary

    d = make_synthetic(
        out,
        n_users=users,
        n_items=items,
        n_interactions=interactions,
        modalities=parse_modalities(modalities),
        n_clusters=clusters,
        seed=seed,
    )
    s = summary(d)
    console.print(
        f"{s['interactions_written']} interactions, {users} users, {items} items, modalities "
        f"{', '.join(f'{m} ({k}-d)' for m, k in parse_modalities(modalities).items()) or 'none'}"
    )
    console.print(f"Data set: [bold]{d / 'dataset.toml'}[/]  (try: modalrec validate {d / 'dataset.toml'})")

"""CLI commands of the serving area: ``modalrec serve``, ``modalrec serve-key`` and ``modalrec serve-activate``.

Registered on :data:`modalrec.cli.app` when :mod:`modalrec.cli.app` imports this module; FastAPI, uvicorn
and faiss are imported inside the commands so ``modalrec --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from modalrec.cli.app import app, console, user_errors
from modalrec.core.errors import ConfigError


@app.command()
@user_errors
def serve(
    run_dir: Annotated[Path, typer.Argument(help="run directory written by `modalrec fit`")],
    host: Annotated[
        str, typer.Option(help="interface to bind (keep 127.0.0.1 behind a proxy)")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port", min=1, max=65535)] = 8000,
    workers: Annotated[int, typer.Option(help="server processes (one per core)", min=1)] = 1,
    config: Annotated[
        Path | None, typer.Option(help="server TOML: API key hashes, limits, index, A/B arms, alerts")
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error")] = "info",
) -> None:
    """HTTP API (recommend, similar, search, items, feedback, metrics, admin) and the web page at /.

    The run directory is verified (sha256 of every file) before any port opens. OpenAPI docs at /docs.
    Without --config no API keys exist, so POST /feedback and /admin/* answer 401.
    """
    try:
        from modalrec.serving.launcher import serve as run_server
    except ImportError as e:
        raise ConfigError(f"serving needs the serve extra (pip install 'modalrec[serve]'): {e}") from None
    if log_level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"--log-level must be debug, info, warning or error, not {log_level!r}")
    if config is not None and not config.is_file():
        raise ConfigError(f"{config}: server config not found")
    console.print(
        f"Serving run [bold]{run_dir.resolve().name}[/] on http://{host}:{port} with {workers} worker(s)"
    )
    run_server(run_dir, host=host, port=port, workers=workers, config=config, log_level=log_level.lower())


@app.command("serve-key")
@user_errors
def serve_key(
    name: Annotated[str, typer.Option(help="name shown in logs for this key")] = "client",
    scopes: Annotated[str, typer.Option(help="comma-separated: read, write, admin")] = "read,write",
    scheme: Annotated[str, typer.Option(help="sha256 (random keys) or scrypt")] = "sha256",
) -> None:
    """Make a new random API key and print the TOML entry (hash only) for the server config."""
    from modalrec.serving.auth import hash_key, new_key
    from modalrec.serving.settings import SCOPES

    wanted = [s.strip() for s in scopes.split(",") if s.strip()]
    bad = [s for s in wanted if s not in SCOPES]
    if bad or not wanted:
        raise ConfigError(f"--scopes must be a comma-separated subset of {', '.join(SCOPES)}, got {scopes!r}")
    if scheme not in ("sha256", "scrypt"):
        raise ConfigError(f"--scheme must be sha256 or scrypt, not {scheme!r}")
    key = new_key()
    # soft_wrap: a narrow terminal (or COLUMNS) must not split the key onto a line of its own, which
    # scripts that read "API key ...: <key>" (the tutorial's sed) would then miss
    console.print(
        f"API key (give it to the client, it is not stored anywhere): {key}",
        highlight=False,
        soft_wrap=True,
        markup=False,
    )
    console.print("Add to the server config:", highlight=False)
    entry = f'[[auth.keys]]\nname = "{name}"\nhash = "{hash_key(key, scheme)}"\nscopes = {wanted!r}'
    console.print(entry.replace("'", '"'), highlight=False, soft_wrap=True, markup=False)


@app.command("serve-activate")
@user_errors
def serve_activate(
    run_dir: Annotated[
        Path | None, typer.Argument(help="run directory to serve (every host must see it at this path)")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="server TOML naming the feedback store ([feedback] url or state_dir)")
    ] = None,
    run_b: Annotated[Path | None, typer.Option(help="run directory of A/B arm b (optional)")] = None,
    show: Annotated[bool, typer.Option("--show", help="print the active run and change nothing")] = False,
) -> None:
    """Make RUN_DIR the active run of every server sharing the config's feedback store.

    The run is verified here (sha256 of every file), then recorded as a new generation in the store:
    with `[feedback] url` (PostgreSQL) every server process on every host loads it within about a
    second; with the SQLite default, the workers of the host whose state_dir the config names.
    """
    from modalrec.serving import active
    from modalrec.serving.settings import load_serve_config
    from modalrec.workflows.rundir import read_manifest

    if config is not None and not config.is_file():
        raise ConfigError(f"{config}: server config not found")
    if not show and run_dir is None:
        raise ConfigError("give the RUN_DIR to activate (or --show to print the active run)")
    cfg = load_serve_config(config)
    if not show:
        assert run_dir is not None
        read_manifest(run_dir, verify=True)
        if run_b is not None:
            read_manifest(run_b, verify=True)
    store = _open_store(cfg)
    try:
        if show:
            rec = store.active_run()
        else:
            assert run_dir is not None
            rec = active.record(store, run_dir, run_b)
    finally:
        store.close()
    if rec is None:
        console.print("no active run recorded yet (servers serve the run on their command line)")
        return
    b = f", arm b {rec.run_dir_b}" if rec.run_dir_b else ""
    verb = "active" if show else "activated"
    console.print(f"generation {rec.generation} {verb}: {rec.run_dir}{b}", highlight=False, soft_wrap=True)


def _open_store(cfg: Any) -> Any:
    """The feedback store a server with ``cfg`` uses (PostgreSQL when ``[feedback] url`` is set)."""
    if cfg.feedback.url is not None:
        from modalrec.serving.feedback_pg import PostgresFeedbackStore

        return PostgresFeedbackStore(cfg.feedback.url)
    from modalrec.serving.feedback import FeedbackStore

    return FeedbackStore(cfg.db_path)

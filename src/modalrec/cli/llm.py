"""CLI commands of the LLM layer: ``explain``, ``describe``, ``llm-tune``, ``llm-serve``, ``evaluate --rerank llm``.

Registered on :data:`modalrec.cli.app` when :mod:`modalrec.cli.app` imports this module. transformers and
torch are imported inside the commands (through :mod:`modalrec.workflows.llm_runs`), so ``modalrec --help``
stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from modalrec.cli.app import app, console, metrics_table, print_json, user_errors
from modalrec.core.errors import ConfigError

if TYPE_CHECKING:
    from modalrec.workflows.rundir import Run

RERANKERS = ("llm",)


@app.command()
@user_errors
def explain(
    run_dir: Annotated[Path, typer.Argument(help="run directory written by `modalrec fit`")],
    user: Annotated[str, typer.Option("--user", "-u", help="external user id")],
    item: Annotated[str, typer.Option("--item", "-i", help="external item id")],
    k: Annotated[int, typer.Option("-k", help="history items used as evidence", min=1)] = 3,
    no_llm: Annotated[bool, typer.Option("--no-llm", help="template sentence only (no model load)")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Why ITEM for USER: the history items and modalities that weigh most, phrased by the local LLM.

    The sentence may only name the item and items from the user's history (checked; offending
    sentences are dropped). The checker's verdict is printed: it names a history item, uses the
    catalogue's noun and states an attribute the two items really share; when the LLM's text does
    not, a fact sentence from the data is added or the fact template is used.
    """
    from modalrec.workflows.llm_runs import explain_run

    exp = explain_run(run_dir, user, item, use_llm=not no_llm, k=k)
    if as_json:
        print_json(exp.as_dict())
        return
    console.print(f"[bold]{exp.text}[/]", highlight=False)
    rank = f", rank {exp.rank} for this user" if exp.rank is not None else ""
    console.print(f"source: {exp.source}{rank}; grounded: {exp.grounded}", highlight=False)
    if exp.check is not None:
        verdict = "passes" if exp.check["passes"] else "fails: " + "; ".join(exp.check["failures"])
        console.print(f"checker: {verdict}", highlight=False)
    t = Table(title="Evidence from the user's history")
    for c in ("item_id", "title", "similarity", "by modality", "shared genres"):
        t.add_column(c)
    for e in exp.evidence:
        by = ", ".join(f"{m} {v:.2f}" for m, v in e.by_modality.items())
        t.add_row(e.item_id, e.title, f"{e.similarity:.3f}", by, ", ".join(e.shared_genres))
    console.print(t)
    shares = ", ".join(f"{m} {v:.0%}" for m, v in exp.modality_weights.items())
    console.print(f"modality shares: {shares}", highlight=False)
    if exp.rejected:
        console.print(
            f"[yellow]dropped names not in the history:[/] {', '.join(exp.rejected)}", highlight=False
        )


@app.command()
@user_errors
def describe(
    run_dir: Annotated[Path, typer.Argument(help="run directory written by `modalrec fit`")],
    item: Annotated[str, typer.Argument(help="external item id")],
    source: Annotated[
        str, typer.Option("--from", help="item features to read (a modality of the run)")
    ] = "image",
    projector: Annotated[
        Path | None,
        typer.Option(help="item projector file (default RUN_DIR/llm/projector-<modality>.safetensors)"),
    ] = None,
    train_seconds: Annotated[
        float, typer.Option(help="time budget to train the run's projector if it has none", min=1)
    ] = 300.0,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    quiet: Annotated[bool, typer.Option(help="no progress bars")] = False,
) -> None:
    """The LLM describes ITEM from one modality's vector alone (soft tokens through the item projector).

    The first call on a run trains the projector (LLM frozen; bounded by --train-seconds) and
    stores it in the run directory; 10% of the items (seeded) are held out of that training.
    """
    from modalrec.workflows.llm_runs import describe_run

    out = describe_run(
        run_dir, item, modality=source, projector=projector, train_seconds=train_seconds, progress=not quiet
    )
    if as_json:
        print_json(out)
        return
    console.print(f"[bold]{out['description']}[/]", highlight=False)
    held = out["held_out_of_projector_training"]
    note = "" if held is None else (" (held out of projector training)" if held else " (seen in training)")
    console.print(f"item {out['item_id']}: {out['title']}{note}", highlight=False)
    console.print(
        f"true genres: {', '.join(out['true_genres']) or '-'}; named: {', '.join(out['named_genres']) or '-'}; "
        f"correct: {', '.join(out['correct_genres']) or '-'}",
        highlight=False,
    )
    if out["likely_genres_calibrated"]:
        console.print(
            f"likely genres (calibrated genre scores): {', '.join(out['likely_genres_calibrated'])}",
            highlight=False,
        )
    if out["projector_trained_now"]:
        console.print(f"projector trained and saved to {out['projector']}", highlight=False)


def evaluate_rerank(
    run: Run,
    split: str,
    reranker: str,
    *,
    as_json: bool = False,
    n_candidates: int = 20,
    max_users: int | None = 200,
    valid_users: int = 200,
) -> None:
    """``modalrec evaluate RUN_DIR --rerank llm``: the model alone and re-ranked, on the same users.

    Uses the run's fine-tuned re-ranker when ``modalrec llm-tune`` made one, and the ``[llm]``
    config's backend (``RUN_DIR/llm.toml`` or ``$MODALREC_LLM_CONFIG``).
    """
    from modalrec.workflows.llm_runs import rerank_run

    if reranker not in RERANKERS:
        raise ConfigError(f"unknown re-ranker {reranker!r}; expected one of {', '.join(RERANKERS)}")
    res = rerank_run(
        run.path,
        split,
        run=run,
        n_candidates=n_candidates,
        max_users=max_users,
        valid_users=valid_users,
        progress=not as_json,
    )
    if as_json:
        print_json(res.as_dict())
        return
    assert res.base is not None
    console.print(metrics_table(f"{split}: {res.n_users} users, model alone", res.base.metrics))
    console.print(
        metrics_table(f"{split}: {res.n_users} users, LLM re-ranked top {n_candidates}", res.metrics)
    )
    d = res.as_dict()["rerank"]
    console.print(
        f"LLM score {res.score!r}, blend weight {res.weight:g} (chosen on {res.validation.get('n_users', 0)} "
        f"validation users); latency per user p50 {d['latency_p50_s']:.2f} s, p95 {d['latency_p95_s']:.2f} s; "
        f"total {res.seconds:.0f} s",
        highlight=False,
    )


def _parse_sets(values: list[str] | None) -> dict[str, object]:
    """``key=value`` options as a dict, values parsed as TOML scalars/lists (``rank=16``, ``targets=["q_proj"]``)."""
    import tomllib

    out: dict[str, object] = {}
    for v in values or []:
        key, sep, raw = v.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {v!r}: expected key=value")
        try:
            out[key.strip()] = tomllib.loads(f"x = {raw}")["x"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = raw
    return out


@app.command("llm-tune")
@user_errors
def llm_tune(
    run_dir: Annotated[Path, typer.Argument(help="run directory written by `modalrec fit`")],
    minutes: Annotated[
        float, typer.Option(help="training time budget (early stopping may end sooner)", min=0.01)
    ] = 40.0,
    sets: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="LoRA training option key=value (rank, lr, negatives, ...; see modalrec.llm.tune.TuneParams)",
        ),
    ] = None,
    llm_config: Annotated[
        Path | None, typer.Option(help="[llm] config file (default RUN_DIR/llm.toml)")
    ] = None,
    quiet: Annotated[bool, typer.Option(help="no progress lines")] = False,
) -> None:
    """Fine-tune the LLM re-ranker (LoRA) on the run's training interactions into RUN_DIR/llm/reranker.

    Early-stopped on validation users; `modalrec evaluate RUN_DIR --rerank llm` then uses it.
    """
    from modalrec.workflows.llm_runs import tune_run, tuned_dir

    def show(point: dict[str, object]) -> None:
        if not quiet:
            v = point["valid_ndcg@10"]
            assert isinstance(v, dict)
            console.print(
                f"{point['minutes']} min, {point['examples']} examples: train loss {point['train_loss']}, "
                f"valid NDCG@10 LLM alone {v['sum']:.4f} (base order {v['base']:.4f})",
                highlight=False,
            )

    res = tune_run(
        run_dir, params={"max_minutes": minutes, **_parse_sets(sets)}, llm_config=llm_config, progress=show
    )
    console.print(
        f"stopped: {res.stopped}; best at {res.best['examples']} examples; chosen on "
        f"{res.selection.get('n_users')} other validation users: LLM score {res.score!r}, blend weight "
        f"{res.weight:g}; saved to {tuned_dir(run_dir)}",
        highlight=False,
    )


@app.command("llm-serve")
@user_errors
def llm_serve(
    model: Annotated[
        str, typer.Option(help="packaged name, local model directory or .gguf file")
    ] = "smollm2-135m",
    adapter: Annotated[
        Path | None, typer.Option(help="LoRA adapters to merge (e.g. RUN_DIR/llm/reranker)")
    ] = None,
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port", min=1, max=65535)] = 8011,
    dtype: Annotated[str, typer.Option(help="auto (float32), float32 or bfloat16")] = "auto",
    threads: Annotated[int | None, typer.Option(help="torch threads", min=1)] = None,
) -> None:
    """Serve a local LLM over an OpenAI-compatible API (/v1/completions with logprobs, /v1/chat/completions).

    Point other processes at it with `[llm] backend = "http"`, `url = "http://HOST:PORT/v1"`.
    """
    from modalrec.llm.loading import load_llm
    from modalrec.llm.server import serve

    llm = load_llm(model, threads=threads, dtype=dtype)
    if adapter is not None:
        from modalrec.llm.tune import load_tuned

        llm, _ = load_tuned(llm, adapter)
    console.print(f"serving {llm.name} on http://{host}:{port}/v1", highlight=False)
    serve(llm, host=host, port=port)

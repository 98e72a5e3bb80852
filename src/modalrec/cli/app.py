"""The ``modalrec`` command line (typer + rich). Every command calls a public pipeline function.

User errors (:class:`~modalrec.core.errors.ModalrecError`) are printed as one red line, without a
traceback, and the process exits with code 2.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from modalrec.core.errors import ModalrecError


def literal_help(cmd: Any) -> Any:
    """Escape a (typer's click) command's help texts, its own and its parameters', for rich markup, once.

    Why: typer renders help through rich markup, so a help text such as "a run config (.toml with
    [data])" lost "[data]" as an unknown style tag. Help texts here are plain text, never markup.
    """
    if getattr(cmd, "_modalrec_literal_help", False):
        return cmd
    if cmd.help:
        cmd.help = escape(cmd.help)
    if cmd.short_help:
        cmd.short_help = escape(cmd.short_help)
    for param in cmd.params:
        text = getattr(param, "help", None)
        if text:
            param.help = escape(text)
    cmd._modalrec_literal_help = True
    return cmd


class LiteralHelpGroup(TyperGroup):
    """The ``modalrec`` group: every command it hands out shows its help text literally."""

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        cmd = super().get_command(ctx, cmd_name)
        return literal_help(cmd) if cmd is not None else None

    def format_help(self, ctx: Any, formatter: Any) -> None:
        literal_help(self)
        super().format_help(ctx, formatter)


app = typer.Typer(
    name="modalrec",
    help="Multimodal recommendation with cross-modal alignment and an LLM layer.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    cls=LiteralHelpGroup,
)
#: Width of tables printed into a pipe or a file (CI logs, ``| tee``), where there is no terminal
#: width to follow: rich's default of 80 columns cut encoder names and file paths ("minilm-l6-…").
PIPE_WIDTH = 160


def make_console(stderr: bool = False) -> Console:
    """A console as wide as the terminal, or :data:`PIPE_WIDTH` columns outside one (``COLUMNS`` wins)."""
    c = Console(stderr=stderr)
    if not c.is_terminal and "COLUMNS" not in os.environ:
        c = Console(stderr=stderr, width=PIPE_WIDTH)
    return c


console = make_console()
err_console = make_console(stderr=True)

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

"""Every command's ``--help`` shows its docstring and option texts word for word.

Why: typer renders help through rich markup, and "a run config (.toml with [data])" used to come
out as "a run config (.toml with )". The test renders each command's help the way a user sees it
and looks for every word of every help text in it.
"""

from __future__ import annotations

import inspect
import re

import pytest
import typer
from typer.testing import CliRunner

from modalrec.cli import app

runner = CliRunner()
BOX = re.compile(r"[│╭╮╰╯─┃━]")


def _commands() -> dict[str, typer.models.CommandInfo]:
    return {
        (c.name or c.callback.__name__.replace("_", "-")): c for c in app.registered_commands if c.callback
    }


def _rendered(*args: str) -> set[str]:
    r = runner.invoke(app, [*args, "--help"], env={"COLUMNS": "400", "TERMINAL_WIDTH": "400"})
    assert r.exit_code == 0, r.output
    return set(BOX.sub(" ", r.output).split())


def _help_texts(info: typer.models.CommandInfo) -> list[str]:
    texts = [inspect.getdoc(info.callback) or ""]
    for p in inspect.signature(info.callback).parameters.values():
        for meta in getattr(p.annotation, "__metadata__", ()):
            if getattr(meta, "help", None):
                texts.append(meta.help)
    return texts


@pytest.mark.parametrize("name", sorted(_commands()))
def test_help_shows_every_word(name: str) -> None:
    shown = _rendered(name)
    for text in _help_texts(_commands()[name]):
        missing = [w for w in text.split() if w not in shown]
        assert not missing, f"modalrec {name} --help lost {missing} of {text!r}"


def test_encode_help_keeps_square_brackets() -> None:
    r = runner.invoke(app, ["encode", "--help"], env={"COLUMNS": "400"})
    assert "a run config (.toml with [data]), a data set name" in r.output


def test_group_help_lists_commands() -> None:
    shown = _rendered()
    assert {"validate", "encode", "fit", "report", "serve"} <= shown

"""Progress that reads well in a terminal and in a log: rich bars, or plain periodic lines.

Why: a rich bar drawn into a pipe (CI logs, ``| tee``) is rendered once, at the end, at the
default width of 80 columns, so the numbers that matter are cut off ("1200/12…"). When the
output is not a terminal, long work writes one plain line per task every ``every`` seconds
(and one when the task finishes) to standard error, never cut, so logs show progress as it
happens and standard output stays clean for ``--json``.

:class:`PlainProgress` implements the part of :class:`rich.progress.Progress` that modalrec uses
(``add_task``, ``update``, ``advance``, context manager), so call sites do not care which one
they got from :func:`progress_display`.

>>> import io
>>> buf = io.StringIO()
>>> with PlainProgress(every=0.0, file=buf) as p:
...     t = p.add_task("bprmf", total=1200, status="")
...     p.update(t, advance=1200, status="loss 0.6931")
>>> print(buf.getvalue().splitlines()[-1].split(" (")[0])
bprmf: 1200/1200 100%
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import IO, Any

from rich.progress import TaskID

#: Seconds between two plain progress lines of one task (``MODALREC_PROGRESS_SECONDS`` overrides).
DEFAULT_EVERY = 10.0


def output_is_terminal() -> bool:
    """Whether rich would draw live bars on standard output (honours ``FORCE_TERMINAL``, ``TERM=dumb``)."""
    from rich.console import Console

    console = Console()
    return console.is_terminal and not console.is_dumb_terminal


def _every_from_env() -> float:
    raw = os.environ.get("MODALREC_PROGRESS_SECONDS")
    try:
        return max(0.0, float(raw)) if raw else DEFAULT_EVERY
    except ValueError:
        return DEFAULT_EVERY


@dataclass
class _Task:
    description: str
    total: float | None
    completed: float = 0.0
    fields: dict[str, Any] = field(default_factory=dict)
    start: float = field(default_factory=time.perf_counter)
    last_print: float = 0.0
    finished_printed: bool = False


class PlainProgress:
    """Plain progress lines (``desc: 300/1200 25% (4.1 s, ETA 12 s) fields``) for logs and pipes."""

    def __init__(
        self, *, every: float | None = None, file: IO[str] | None = None, disable: bool = False
    ) -> None:
        self.every = _every_from_env() if every is None else every
        self.file = file
        self.disable = disable
        self._tasks: dict[TaskID, _Task] = {}

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        for tid, t in self._tasks.items():
            if not t.finished_printed and t.completed > 0:
                self._print(tid)

    def add_task(self, description: str, total: float | None = 100.0, **fields: Any) -> TaskID:
        """A new task; returns its id (as rich does)."""
        tid = TaskID(len(self._tasks))
        self._tasks[tid] = _Task(description, total, fields=dict(fields))
        return tid

    def advance(self, task_id: TaskID, advance: float = 1.0) -> None:
        self.update(task_id, advance=advance)

    def update(
        self,
        task_id: TaskID,
        *,
        advance: float | None = None,
        completed: float | None = None,
        total: float | None = None,
        description: str | None = None,
        **fields: Any,
    ) -> None:
        """Move a task on; print its line when ``every`` seconds have passed or it just finished."""
        t = self._tasks[task_id]
        if total is not None:
            t.total = total
        if description is not None:
            t.description = description
        if completed is not None:
            t.completed = completed
        if advance is not None:
            t.completed += advance
        t.fields.update(fields)
        now = time.perf_counter()
        done = t.total is not None and t.completed >= t.total
        if (done and not t.finished_printed) or now - max(t.last_print, t.start) >= self.every:
            self._print(task_id)

    def line(self, task_id: TaskID) -> str:
        """The text of a task's progress line."""
        t = self._tasks[task_id]
        elapsed = time.perf_counter() - t.start
        count = f"{t.completed:g}" + (f"/{t.total:g}" if t.total is not None else "")
        pct = f" {100.0 * t.completed / t.total:.0f}%" if t.total else ""
        eta = ""
        if t.total and 0 < t.completed < t.total:
            eta = f", ETA {elapsed / t.completed * (t.total - t.completed):.0f} s"
        extra = " ".join(str(v) for v in t.fields.values() if v not in ("", None))
        return f"{t.description}: {count}{pct} ({elapsed:.1f} s{eta})" + (f"  {extra}" if extra else "")

    def _print(self, task_id: TaskID) -> None:
        t = self._tasks[task_id]
        t.last_print = time.perf_counter()
        if t.total is not None and t.completed >= t.total:
            t.finished_printed = True
        if self.disable:
            return
        out = self.file if self.file is not None else sys.stderr
        out.write(self.line(task_id) + "\n")
        out.flush()

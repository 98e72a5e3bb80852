"""Progress per modality (items/s, ETA) for :func:`~modalrec.encoders.encode_dataset`.

A rich bar in a terminal; outside one (CI logs, ``| tee``) plain periodic lines on standard error
(:class:`~modalrec.core.progress.PlainProgress`), because a rich bar drawn into a pipe is printed
once, at the end, cut to 80 columns.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from modalrec.core.progress import PlainProgress, output_is_terminal


class Progress:
    """One task per modality: rich bars in a terminal, plain lines elsewhere, nothing when not ``enabled``.

    >>> with Progress(False) as p:
    ...     advance = p.task("text (tfidf-svd)", total=3)
    ...     advance(3)
    """

    def __init__(self, enabled: bool) -> None:
        self._p: Any = None
        if enabled and not output_is_terminal():
            self._p = PlainProgress()
        elif enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._p = RichProgress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                transient=False,
            )

    def __enter__(self) -> Progress:
        if self._p is not None:
            self._p.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._p is not None:
            self._p.__exit__(*exc)

    def task(self, description: str, total: int) -> Callable[[int], None]:
        """A new bar; the returned function advances it by ``n`` items."""
        if self._p is None:
            return lambda n: None
        tid = self._p.add_task(description, total=total, rate="")
        start = time.perf_counter()
        done = [0]

        def advance(n: int) -> None:
            done[0] += n
            dt = time.perf_counter() - start
            rate = f"{done[0] / dt:,.1f} items/s" if dt > 0 else ""
            self._p.update(tid, advance=n, rate=rate)

        return advance

"""A rich progress bar per modality (items/s, ETA) for :func:`~modalrec.encoders.encode_dataset`."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class Progress:
    """A rich progress display with one task per modality, or nothing when ``enabled`` is false.

    >>> with Progress(False) as p:
    ...     advance = p.task("text (tfidf-svd)", total=3)
    ...     advance(3)
    """

    def __init__(self, enabled: bool) -> None:
        self._p: Any = None
        if enabled:
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

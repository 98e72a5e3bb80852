"""One way to run a block of work with a given number of torch threads.

Why: models train with ``threads`` from their hyperparameters (benchmarks use one thread, where float
results do not depend on how work is split), and the caller's setting must come back afterwards even
when training fails; five places did this by hand before.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` torch intra-op threads (``None`` or 0: leave the setting as it is),
    and restore the previous setting afterwards, also on error.

    >>> before = torch.get_num_threads()
    >>> with torch_threads(1):
    ...     torch.get_num_threads()
    1
    >>> torch.get_num_threads() == before
    True
    """
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)

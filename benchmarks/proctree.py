"""CPU seconds and memory of a process with its live children (a server and its workers), via psutil.

Why a module: ``scale.py`` (serving start-up and load at S/M/L) and ``serving.py`` (the serving benchmark)
both charge a server's CPU time and memory to the whole process tree; one copy keeps them measuring alike.
"""

from __future__ import annotations

import contextlib
from typing import Any


def process_tree(pid: int) -> list[Any]:
    """``pid`` and its live descendants as psutil processes (empty once it has exited)."""
    import psutil

    try:
        p = psutil.Process(pid)
        return [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_rss_mb(pid: int) -> float:
    """Resident memory (MB) of ``pid`` and its live descendants, summed."""
    import psutil

    total = 0
    for q in process_tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += q.memory_info().rss
    return total / 2**20


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and its live descendants (0 once it has exited).

    >>> import os
    >>> tree_cpu_s(os.getpid()) > 0
    True
    """
    import psutil

    total = 0.0
    for q in process_tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            t = q.cpu_times()
            total += t.user + t.system
    return total

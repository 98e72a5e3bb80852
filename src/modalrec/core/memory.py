"""Memory guards: estimate an allocation that grows with users x items or items x items before making it.

Why: a dense ``n_items^2`` matrix at 200k items is 160 GB; numpy would either die with a bare
``MemoryError`` deep inside a fit or, worse, push the machine into swap for an hour. Every code path
that allocates something quadratic in the data calls :func:`check_allocation` first, which stops with
a :class:`MemoryBudgetError` naming the size, the budget and the alternative.

The budget is, in order: the ``MODALREC_MEMORY_BUDGET`` environment variable (bytes, or with a
``K``/``M``/``G`` suffix), else 80% of what the machine (or its cgroup) has available now.

>>> check_allocation(1000 * 1000 * 4, what="a 1000 x 1000 float32 matrix", alternative="none needed")
>>> human_bytes(3 * 1024**3)
'3.0 GiB'
"""

from __future__ import annotations

import os
from pathlib import Path

from modalrec.core.errors import ModalrecError

BUDGET_ENV = "MODALREC_MEMORY_BUDGET"
_SUFFIXES = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


class MemoryBudgetError(ModalrecError):
    """An allocation would exceed the memory budget; the message names the size and the way out."""


def human_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 KiB'``: sizes in messages a person can read at a glance."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def parse_bytes(text: str) -> int:
    """``'6G'`` -> 6442450944; plain numbers are bytes. Raises ValueError on anything else."""
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    scale = _SUFFIXES.get(text[-1:], 1)
    number = text[:-1] if text[-1:] in _SUFFIXES else text
    return int(float(number) * scale)


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _cgroup_headroom() -> int | None:
    """Bytes left under a cgroup v2 memory limit, when the process runs in one."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
    except (OSError, ValueError):
        return None
    if limit == "max":
        return None
    return max(int(limit) - used, 0)


def memory_budget() -> int:
    """Bytes a single new allocation may take (see the module docstring for where it comes from)."""
    configured = os.environ.get(BUDGET_ENV)
    if configured:
        try:
            return parse_bytes(configured)
        except ValueError as exc:
            raise MemoryBudgetError(
                f"{BUDGET_ENV}={configured!r} is not a size (use bytes or e.g. '6G')"
            ) from exc
    candidates = [v for v in (_meminfo_available(), _cgroup_headroom()) if v is not None]
    if not candidates:
        return 8 * 1024**3
    return int(0.8 * min(candidates))


def check_allocation(nbytes: float, *, what: str, alternative: str) -> None:
    """Refuse an allocation of ``nbytes`` above :func:`memory_budget`, naming ``what`` and ``alternative``.

    Call it before the allocation, with the size computed from the shapes (e.g.
    ``n_items**2 * 4`` for a float32 item x item matrix).
    """
    budget = memory_budget()
    if nbytes > budget:
        raise MemoryBudgetError(
            f"{what} needs {human_bytes(nbytes)}, over the memory budget of {human_bytes(budget)} "
            f"(set {BUDGET_ENV} to change it); {alternative}"
        )

"""Iterative k-core filtering: keep users and items with at least k interactions, until stable.

Why iterate: removing a rare item can push a user below k, which can push another item below k;
published protocols ("5-core") mean the fixed point, not one pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class KCoreResult:
    """``mask`` selects the kept interactions; the counts say what was removed."""

    mask: np.ndarray
    rounds: int
    removed_rows: int
    removed_users: int
    removed_items: int


def kcore_mask(
    users: np.ndarray,
    items: np.ndarray,
    k_user: int = 5,
    k_item: int | None = None,
    *,
    max_rounds: int = 1000,
) -> KCoreResult:
    """Mask of the interactions in the (k_user, k_item)-core (``k_item`` defaults to ``k_user``).

    Pass unique (user, item) pairs: duplicates would count twice.

    >>> u = np.array([0, 0, 1, 1, 2])
    >>> i = np.array([0, 1, 0, 1, 0])
    >>> r = kcore_mask(u, i, 2)
    >>> r.mask.tolist(), r.removed_users, r.removed_items, r.rounds
    ([True, True, True, True, False], 1, 0, 2)
    """
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    k_item = k_user if k_item is None else k_item
    keep = np.ones(len(users), dtype=bool)
    n_users = int(users.max()) + 1 if len(users) else 0
    n_items = int(items.max()) + 1 if len(items) else 0
    rounds = 0
    while rounds < max_rounds:
        rounds += 1
        uc = np.bincount(users[keep], minlength=n_users)
        ic = np.bincount(items[keep], minlength=n_items)
        new = keep & (uc[users] >= k_user) & (ic[items] >= k_item)
        if new.sum() == keep.sum():
            break
        keep = new
    users_before = len(np.unique(users))
    items_before = len(np.unique(items))
    return KCoreResult(
        mask=keep,
        rounds=rounds,
        removed_rows=int(len(keep) - keep.sum()),
        removed_users=users_before - len(np.unique(users[keep])),
        removed_items=items_before - len(np.unique(items[keep])),
    )

"""Two fixed, seeded, disjoint halves of the validation users: one to tune on, one to select with.

Why: when blend weights (or a grid point) are chosen on validation and the same validation users then
choose among several rows, the winner's validation score is biased upwards by the first choice and
the comparison favours the row that was tuned hardest. Splitting the validation users once, by a fixed
seed, keeps the two decisions on independent users: weights and grid points on the *tune* half, the
choice among rows on the *select* half (DESIGN.md, benchmark protocols).

The halves depend only on which users have validation items and on the seed, so every model, row and
re-run sees the same halves. Cost: one permutation of the validation users.

>>> import numpy as np
>>> tune, select = split_users(np.arange(10), seed=2024)
>>> sorted(np.concatenate([tune, select]).tolist()) == list(range(10)), len(tune), len(select)
(True, 5, 5)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from modalrec.data.dataset import Dataset

#: The seed every benchmark and the blend use unless told otherwise.
HALVES_SEED = 2024


def split_users(users: np.ndarray, seed: int = HALVES_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Split ``users`` into (tune, select): disjoint, sorted, sizes ceil(n/2) and floor(n/2).

    The order of ``users`` does not matter (they are sorted first), so the halves are a function of
    the user set and the seed only.
    """
    u = np.unique(np.asarray(users, dtype=np.int64))
    perm = np.random.default_rng([int(seed), 18]).permutation(u)
    n_tune = (len(u) + 1) // 2
    return np.sort(perm[:n_tune]), np.sort(perm[n_tune:])


def validation_halves(dataset: Dataset, seed: int = HALVES_SEED) -> tuple[np.ndarray, np.ndarray]:
    """(tune, select) halves of the users with at least one validation item of ``dataset``."""
    users = np.flatnonzero(np.diff(dataset.target("valid").indptr) > 0)
    return split_users(users, seed)

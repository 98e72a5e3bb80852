"""Most-popular baseline: every user gets the items with the most training interactions."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from modalrec.core.params import Params
from modalrec.models.base import Recommender, register

if TYPE_CHECKING:
    from modalrec.data.dataset import Dataset


class PopularityParams(Params):
    """Popularity has no hyperparameters."""


@register
class Popularity(Recommender[PopularityParams]):
    """Scores each item by its training interaction count (ties broken by item index).

    Why: the floor every personalised model must clear; on the cold-start and sparse protocols it is
    also a surprisingly strong reference.

    >>> import numpy as np, scipy.sparse as sp
    >>> from modalrec.data.dataset import Dataset
    >>> m = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 0]], dtype=np.float32))
    >>> empty = sp.csr_matrix(m.shape, dtype=np.float32)
    >>> ds = Dataset("toy", np.array(["a", "b"]), np.array(["x", "y", "z"]), m, empty, empty)
    >>> Popularity().fit(ds, progress=False).recommend([1], k=2)[0].tolist()
    [[1, 0]]
    """

    name = "popularity"
    params_class = PopularityParams

    def _fit(self, dataset: Dataset, *, progress: bool) -> None:
        self._state = {"counts": dataset.item_popularity().astype(np.float32)}

    def _score(self, users: np.ndarray) -> torch.Tensor:
        counts = torch.from_numpy(self._state["counts"])
        return counts.unsqueeze(0).expand(len(users), -1).clone()

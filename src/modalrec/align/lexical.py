"""Lexical aligner: modalities that already share a vocabulary, weighted by how rare each term is.

Why: some modalities speak the same words without any learning -- the character n-grams of an
item's title (:class:`~modalrec.encoders.lexical.CharNgramTextEncoder`) and of the text printed on
its poster (:class:`~modalrec.encoders.lexical.SceneTextImageEncoder`), or a product description
and its OCR'd packaging. Their raw vectors are comparable as they are; what the aligner learns is
only an inverse document frequency per term from the training items, so that n-grams every title
has ("the", "ing") count for little and a rare one ("zzz", "007") for a lot. The shared space is
the vocabulary itself, so the aligner is exact on the training items and on new ones alike.

It is usually one member of an :class:`~modalrec.align.EnsembleAligner` next to a learned aligner,
reading its own block of columns of each view (the ensemble's ``columns`` option).
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from modalrec.align.base import Aligner, l2_normalize, register
from modalrec.core.errors import DataError
from modalrec.core.params import Params


class LexicalParams(Params):
    """Hyperparameters of :class:`LexicalAligner`."""

    idf: bool = Field(
        True, description="weight terms by smoothed IDF from the training items (False: every term weighs 1)"
    )


@register
class LexicalAligner(Aligner[LexicalParams]):
    """IDF-weighted cosine space for views that share one vocabulary (same columns in every modality).

    What it learns: only an inverse document frequency per term (column) from the training items of
    every modality. Why: views that already speak the same words -- title n-grams and the n-grams of
    the text OCR'd from a poster -- need no map between them, but common terms must count for little.

    >>> text = np.array([[1, 1, 0, 0], [1, 0, 1, 0], [1, 0, 0, 1]], dtype=np.float32)
    >>> image = np.array([[1, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0]], dtype=np.float32)
    >>> al = LexicalAligner().fit({"text": text, "image": image})
    >>> z_t, z_i = al.transform("text", text), al.transform("image", image)
    >>> (z_t @ z_i.T).argmax(axis=1).tolist()  # each text finds its own picture
    [0, 1, 2]
    """

    name = "lexical"
    params_class = LexicalParams

    def _fit(
        self,
        views: dict[str, np.ndarray],
        masks: dict[str, np.ndarray],
        train: np.ndarray,
        *,
        seed: int,
        progress: bool,
    ) -> None:
        dims = {m: X.shape[1] for m, X in views.items()}
        if len(set(dims.values())) != 1:
            raise DataError(
                f"the lexical aligner needs views in one shared vocabulary (same number of columns), got {dims}"
            )
        d = next(iter(dims.values()))
        df = np.zeros(d, dtype=np.float64)
        n_docs = 0
        for m, X in views.items():
            rows = X[train & masks[m]]
            df += (rows > 0).sum(axis=0)
            n_docs += len(rows)
        # scikit-learn's smoothed IDF: a term seen nowhere in training gets the largest weight
        idf = np.log((1.0 + n_docs) / (1.0 + df)) + 1.0 if self.hp.idf else np.ones(d)
        self._state = {"idf": idf.astype(np.float32)}
        self.meta.update({"dim": int(d), "training_rows": int(n_docs), "terms_seen": int((df > 0).sum())})

    def _transform(self, modality: str, X: np.ndarray) -> np.ndarray:
        return l2_normalize(X * self._state["idf"])

"""Every registered aligner passes every conformance check of :mod:`modalrec.align.checks`.

One case per aligner configuration (small, fast settings); each check is its own test, so a failure
names the aligner and the rule. Registering an aligner without adding a case here fails
:func:`test_every_registered_aligner_has_a_conformance_case`.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from modalrec.align import (
    ALIGNERS,
    AdversarialAligner,
    CCAAligner,
    CollaborativeAligner,
    ContrastiveAligner,
    CrossAttentionAligner,
    EnsembleAligner,
    EntityAligner,
    InteractionAligner,
    LexicalAligner,
    MMDAligner,
    RidgeAligner,
)
from modalrec.align.base import Aligner
from modalrec.align.checks import ALIGNER_CHECKS, AlignerCase, check_transform_shapes, synthetic_views
from modalrec.encoders.lexical import char_ngram_vectors

FAST = {"max_epochs": 8, "patience": 8, "batch_size": 64}
VIEWS, LATENT = synthetic_views()


def _with_taggers(al: Aligner) -> None:
    """Entity taggers over 10 made-up entities: text by similarity, image by a classifier head."""
    assert isinstance(al, EntityAligner)
    rng = np.random.default_rng(3)
    E = rng.normal(size=(10, 12)).astype(np.float32)
    W = rng.normal(size=(10, 20)).astype(np.float32)
    names = [f"e{j}" for j in range(10)]
    al.set_tagger("text", names, E, kind="similarity")
    al.set_tagger("image", names, E, kind="classifier", weight=W)


def _lexical_views() -> dict[str, np.ndarray]:
    """Titles and what OCR reads on their posters, as character n-grams in one vocabulary."""
    titles = ["Toy Story", "GoldenEye", "Four Rooms", "Get Shorty", "Copycat", "Twelve Monkeys", "Babe"]
    titles += ["Dead Man Walking", "Richard III", "Seven", "Usual Suspects", "Mighty Aphrodite"]
    titles += ["Postino", "Braveheart", "Taxi Driver", "Bad Boys", "Apollo 13", "Batman Forever"]
    text = [f"{t} (1995) the movie" for t in titles]
    image = [f"{t.upper().replace(' ', '')}\nTHE MOVIE" for t in titles]
    return {"text": char_ngram_vectors(text, dim=1024), "image": char_ngram_vectors(image, dim=1024)}


def _interactions() -> sp.csr_matrix:
    """Users who like the synthetic items their taste vector points at."""
    taste = np.random.default_rng(5).normal(size=(80, LATENT.shape[1]))
    S = taste @ LATENT.T
    return sp.csr_matrix((np.quantile(S, 0.9, axis=1, keepdims=True) <= S).astype(np.float32))


_CF = LATENT @ np.random.default_rng(1).normal(size=(LATENT.shape[1], 5)).astype(np.float32)

CASES: dict[str, AlignerCase] = {
    "ridge": AlignerCase(RidgeAligner(reference="image")),
    "ridge-fixed-reg": AlignerCase(RidgeAligner(reg=0.1, dim=4)),
    "cca": AlignerCase(CCAAligner(dim=4)),
    "contrastive": AlignerCase(ContrastiveAligner(dim=8, hidden=16, **FAST)),
    "cross_attention": AlignerCase(CrossAttentionAligner(dim=8, n_tokens=2, heads=2, **FAST)),
    "mmd": AlignerCase(MMDAligner(dim=8, **FAST)),
    "adversarial": AlignerCase(AdversarialAligner(dim=8, **FAST)),
    "ensemble": AlignerCase(
        EnsembleAligner(
            members=[{"aligner": "ridge", "reference": "image"}, {"aligner": "cca", "dim": 4}], weights=[2, 1]
        )
    ),
    "collaborative": AlignerCase(CollaborativeAligner(), {**VIEWS, "cf": _CF}),
    "collaborative_softmax": AlignerCase(
        InteractionAligner(dim=8, hidden=16, max_steps=40, eval_every=10, seeds=2),
        fit_kwargs={"interactions": _interactions()},
    ),
    "entity": AlignerCase(EntityAligner(top_k=3), prepare=_with_taggers),
    "lexical": AlignerCase(LexicalAligner(), _lexical_views()),
}


def test_every_registered_aligner_has_a_conformance_case() -> None:
    covered = {case.aligner.name for case in CASES.values()}
    missing = sorted(set(ALIGNERS) - covered)
    assert not missing, f"registered aligners without a conformance case in {__name__}: {missing}"


@pytest.mark.parametrize(
    ("case_id", "check"),
    [(case_id, check) for case_id in CASES for check in ALIGNER_CHECKS],
    ids=[f"{case_id}-{check.__name__}" for case_id in CASES for check in ALIGNER_CHECKS],
)
def test_conformance(case_id, check) -> None:
    check(CASES[case_id])


class _OneColumnRidge(RidgeAligner):
    """Breaks the contract: transform keeps one column only, so its width is not ``dim``."""

    def _transform(self, modality, X):
        return super()._transform(modality, X)[:, :1]


def test_a_broken_aligner_fails_the_shape_check() -> None:
    with pytest.raises(AssertionError, match="shape"):
        check_transform_shapes(AlignerCase(_OneColumnRidge(reference="image")))

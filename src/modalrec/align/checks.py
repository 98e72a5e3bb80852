"""Conformance checks every aligner must pass (the ``check_estimator`` idea of scikit-learn).

Why: fusion, search and the report rely only on the :class:`~modalrec.align.base.Aligner` contract.
Each rule of that contract is one named check function taking an :class:`AlignerCase` (an unfitted
aligner plus the data to fit it on), so a failing rule is reported by name:

* :func:`check_params_round_trip` -- hyperparameters are JSON-able and survive ``clone``;
* :func:`check_fit_returns_fitted_self` -- ``fit`` returns the aligner itself, fitted on every view;
* :func:`check_transform_shapes` -- outputs are finite float32 ``[n, dim]``; a 1-d row and an empty
  input are accepted;
* :func:`check_bad_input_raises_data_error` -- an unknown modality or a wrong feature count raise
  :class:`~modalrec.core.errors.DataError`;
* :func:`check_fit_is_deterministic` -- the same seed gives the same outputs;
* :func:`check_missing_rows_are_ignored` -- missing rows (even NaN) do not poison the fit;
* :func:`check_save_load_round_trip` -- ``save``/``load`` reproduce the outputs, without pickle.

A new aligner is done when :func:`check_aligner` passes; a third-party author can also run the checks
one by one (``for check in ALIGNER_CHECKS: check(case)``), e.g. as parametrised tests.

>>> from modalrec.align.linear import RidgeAligner
>>> check_aligner(RidgeAligner(reference="image"))
>>> [c.__name__ for c in ALIGNER_CHECKS][:2]
['check_params_round_trip', 'check_fit_returns_fitted_self']
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modalrec.align.base import Aligner
from modalrec.core.errors import DataError


def synthetic_views(
    n: int = 240, d_text: int = 12, d_image: int = 20, latent: int = 6, noise: float = 0.05, seed: int = 0
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Two modalities generated from one latent item vector through known linear maps, + latent.

    >>> v, z = synthetic_views(n=10)
    >>> v["text"].shape, v["image"].shape, z.shape
    ((10, 12), (10, 20), (10, 6))
    """
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, latent)).astype(np.float32)
    A = rng.normal(size=(latent, d_text)).astype(np.float32)
    B = rng.normal(size=(latent, d_image)).astype(np.float32)
    text = z @ A + noise * rng.normal(size=(n, d_text)).astype(np.float32)
    image = z @ B + noise * rng.normal(size=(n, d_image)).astype(np.float32)
    return {"text": text, "image": image}, z


@dataclass
class AlignerCase:
    """An unfitted aligner and what the checks fit it on.

    ``prepare`` is called on every fresh instance before fitting (aligners that need fixed
    vocabularies, such as the entity aligner's taggers, set them there); ``fit_kwargs`` are extra
    keyword arguments of ``fit`` (e.g. ``interactions=`` of the ``collaborative_softmax`` aligner).
    The last fifth of the items is passed as ``valid_items``. The prototype ``aligner`` itself is
    never fitted: every check works on clones, and the checks that only inspect a fitted aligner share
    one fit (:meth:`fitted`).
    """

    aligner: Aligner
    views: dict[str, np.ndarray] = field(default_factory=lambda: synthetic_views()[0])
    masks: dict[str, np.ndarray] | None = None
    prepare: Callable[[Aligner], None] | None = None
    fit_kwargs: dict[str, Any] = field(default_factory=dict)
    _fit_result: tuple[Aligner, Aligner] | None = field(default=None, init=False, repr=False)

    @property
    def n(self) -> int:
        return len(next(iter(self.views.values())))

    @property
    def valid(self) -> np.ndarray:
        return np.arange(self.n - self.n // 5, self.n)

    def fresh(self) -> Aligner:
        """An unfitted clone of the aligner, prepared."""
        al = self.aligner.clone()
        if self.prepare is not None:
            self.prepare(al)
        return al

    def fit(
        self, views: dict[str, np.ndarray] | None = None, masks: dict[str, np.ndarray] | None = None
    ) -> Aligner:
        """A fresh clone fitted (seed 0) on ``views`` (default: the case's views and masks)."""
        al = self.fresh()
        if views is None:
            views, masks = self.views, self.masks
        return al.fit(views, masks, valid_items=self.valid, seed=0, **self.fit_kwargs)

    def fitted(self) -> Aligner:
        """The aligner fitted once on the case's data (shared by the checks that only read it)."""
        return self._fit_once()[0]

    def _fit_once(self) -> tuple[Aligner, Aligner]:
        """(the fitted instance, what its ``fit`` returned)."""
        if self._fit_result is None:
            al = self.fresh()
            out = al.fit(self.views, self.masks, valid_items=self.valid, seed=0, **self.fit_kwargs)
            self._fit_result = (al, out)
        return self._fit_result

    def outputs(self) -> dict[str, np.ndarray]:
        """The fitted aligner's transform of every view."""
        al = self.fitted()
        return {m: al.transform(m, X) for m, X in self.views.items()}


Check = Callable[[AlignerCase], None]


def check_params_round_trip(case: AlignerCase) -> None:
    """Hyperparameters are JSON-able (stored in aligner.json and run manifests) and ``clone`` copies
    them into a new, unfitted aligner of the same class."""
    aligner = case.aligner
    params = aligner.get_params()
    json.dumps(params)
    twin = aligner.clone()
    assert type(twin) is type(aligner), "clone() must return the same class"
    assert twin.get_params() == params, "clone() must copy hyperparameters"
    assert not twin.is_fitted, "clone() must return an unfitted aligner"


def check_fit_returns_fitted_self(case: AlignerCase) -> None:
    """``fit`` returns the aligner itself, fitted on every given modality, with a shared ``dim``."""
    al, out = case._fit_once()
    assert out is al, "fit() must return self"
    assert al.is_fitted, "is_fitted must be True after fit()"
    assert set(al.modalities) == set(case.views), f"fitted on {al.modalities}, given {sorted(case.views)}"
    assert isinstance(al.dim, int) and al.dim > 0, f"dim must be a positive int, got {al.dim!r}"


def check_transform_shapes(case: AlignerCase) -> None:
    """Every modality maps to finite float32 ``[n, dim]``; a single 1-d row gives ``[1, dim]`` and an
    empty input ``[0, dim]``."""
    al, n = case.fitted(), case.n
    k = al.dim
    for m, z in case.outputs().items():
        assert z.shape == (n, k), f"transform({m!r}) has shape {z.shape}, expected {(n, k)}"
        assert z.dtype == np.float32, f"transform({m!r}) must return float32"
        assert np.isfinite(z).all(), f"transform({m!r}) returned non-finite values"
    m0 = next(iter(case.views))
    assert al.transform(m0, case.views[m0][0]).shape == (1, k), "a single 1-d row must be accepted"
    assert al.transform(m0, case.views[m0][:0]).shape == (0, k), "empty input must give an empty output"


def check_bad_input_raises_data_error(case: AlignerCase) -> None:
    """An unknown modality or a wrong number of features raise :class:`DataError` (not a crash)."""
    al = case.fitted()
    m0 = next(iter(case.views))
    X = case.views[m0]
    for what, bad in (
        ("an unknown modality", lambda: al.transform("no-such-modality", X)),
        ("a wrong feature count", lambda: al.transform(m0, X[:, :-1])),
    ):
        try:
            bad()
        except DataError:
            continue
        raise AssertionError(f"transform() with {what} must raise DataError")


def check_fit_is_deterministic(case: AlignerCase) -> None:
    """Fitting a clone again with the same seed reproduces the outputs."""
    twin = case.fit()
    for m, z in case.outputs().items():
        np.testing.assert_allclose(
            twin.transform(m, case.views[m]), z, rtol=1e-4, atol=1e-5, err_msg="fit is not deterministic"
        )


def check_missing_rows_are_ignored(case: AlignerCase) -> None:
    """Rows marked missing in a mask may hold NaN: they must not leak into the fitted maps."""
    n = case.n
    mk = {m: np.ones(n, dtype=bool) for m in case.views}
    if case.masks is not None:
        mk.update({m: np.asarray(v, dtype=bool).copy() for m, v in case.masks.items()})
    last = list(case.views)[-1]
    mk[last][: n // 6] = False
    holey = {m: X.copy() for m, X in case.views.items()}
    holey[last][: n // 6] = np.nan
    al = case.fit(holey, mk)
    for m, X in case.views.items():
        assert np.isfinite(al.transform(m, X)).all(), "NaN in missing rows leaked into the fitted maps"


def check_save_load_round_trip(case: AlignerCase) -> None:
    """``save`` writes exactly aligner.json + aligner.safetensors (no pickle) and ``Aligner.load``
    rebuilds the same class with the same hyperparameters and outputs."""
    al = case.fitted()
    with tempfile.TemporaryDirectory() as tmp:
        d = al.save(Path(tmp) / "al")
        files = sorted(p.name for p in d.iterdir())
        assert files == ["aligner.json", "aligner.safetensors"], f"unexpected files {files}"
        loaded = Aligner.load(d)
    assert type(loaded) is type(al), f"load() rebuilt a {type(loaded).__name__}"
    assert loaded.get_params() == al.get_params(), "load() changed the hyperparameters"
    for m, z in case.outputs().items():
        np.testing.assert_allclose(
            loaded.transform(m, case.views[m]), z, rtol=1e-5, atol=1e-6, err_msg="load() changed outputs"
        )


#: Every conformance check, in the order :func:`check_aligner` runs them.
ALIGNER_CHECKS: tuple[Check, ...] = (
    check_params_round_trip,
    check_fit_returns_fitted_self,
    check_transform_shapes,
    check_bad_input_raises_data_error,
    check_fit_is_deterministic,
    check_missing_rows_are_ignored,
    check_save_load_round_trip,
)


def check_aligner(
    aligner: Aligner,
    views: dict[str, np.ndarray] | None = None,
    masks: dict[str, np.ndarray] | None = None,
    *,
    prepare: Callable[[Aligner], None] | None = None,
    fit_kwargs: dict[str, Any] | None = None,
) -> None:
    """Run every check of :data:`ALIGNER_CHECKS` on an unfitted aligner; ``AssertionError`` on failure.

    ``views`` default to :func:`synthetic_views`; see :class:`AlignerCase` for ``prepare`` and
    ``fit_kwargs``. The aligner passed in stays unfitted (the checks fit clones).
    """
    if views is None:
        views, _ = synthetic_views()
    case = AlignerCase(aligner, views, masks, prepare, fit_kwargs or {})
    for check in ALIGNER_CHECKS:
        check(case)

"""Conformance checks every aligner must pass (the ``check_estimator`` idea of scikit-learn).

Why: fusion, search and the report rely only on the :class:`~modalrec.align.base.Aligner` contract.
A new aligner is done when ``check_aligner(MyAligner(...))`` passes: parameters round-trip through
``get_params``/``clone``, fitting is deterministic for a seed, outputs have the promised shape and are
finite, bad input raises :class:`~modalrec.core.errors.DataError`, missing rows (even NaN) do not poison the
fit, and ``save``/``load`` reproduce the outputs exactly without pickle.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

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


def check_aligner(
    aligner: Aligner,
    views: dict[str, np.ndarray] | None = None,
    masks: dict[str, np.ndarray] | None = None,
    *,
    prepare: Callable[[Aligner], None] | None = None,
) -> None:
    """Run every conformance check on an (unfitted) aligner; raises ``AssertionError`` on failure.

    ``prepare`` is called on every fresh instance before fitting (aligners that need extra fitted
    vocabularies, such as the entity aligner, set them there).
    """
    if views is None:
        views, _ = synthetic_views()
    prep = prepare or (lambda a: None)
    n = len(next(iter(views.values())))
    valid = np.arange(n - n // 5, n)

    # hyperparameters
    params = aligner.get_params()
    json.dumps(params)  # must be JSON-serialisable (stored in aligner.json and run manifests)
    twin = aligner.clone()
    assert type(twin) is type(aligner) and twin.get_params() == params, "clone() must copy hyperparameters"
    assert not twin.is_fitted, "clone() must return an unfitted aligner"

    # fit returns self; outputs have the promised shape and are finite
    prep(aligner)
    out = aligner.fit(views, masks, valid_items=valid, seed=0)
    assert out is aligner, "fit() must return self"
    assert aligner.is_fitted and set(aligner.modalities) == set(views)
    k = aligner.dim
    Z = {m: aligner.transform(m, X) for m, X in views.items()}
    for m, z in Z.items():
        assert z.shape == (n, k), f"transform({m!r}) has shape {z.shape}, expected {(n, k)}"
        assert z.dtype == np.float32, f"transform({m!r}) must return float32"
        assert np.isfinite(z).all(), f"transform({m!r}) returned non-finite values"
    m0 = next(iter(views))
    one = aligner.transform(m0, views[m0][0])
    assert one.shape == (1, k), "a single 1-d row must be accepted"
    assert aligner.transform(m0, views[m0][:0]).shape == (0, k), "empty input must give an empty output"

    # bad input
    for bad in (
        lambda: aligner.transform("no-such-modality", views[m0]),
        lambda: aligner.transform(m0, views[m0][:, :-1]),
    ):
        try:
            bad()
        except DataError:
            pass
        else:
            raise AssertionError("unknown modality / wrong feature count must raise DataError")

    # determinism for a seed
    twin = aligner.clone()
    prep(twin)
    twin.fit(views, masks, valid_items=valid, seed=0)
    for m in views:
        np.testing.assert_allclose(
            twin.transform(m, views[m]), Z[m], rtol=1e-4, atol=1e-5, err_msg="fit is not deterministic"
        )

    # missing rows, even NaN, must not poison the fit
    mk = {m: np.ones(n, dtype=bool) for m in views}
    m1 = list(views)[-1]
    mk[m1][: n // 6] = False
    holey = {m: X.copy() for m, X in views.items()}
    holey[m1][: n // 6] = np.nan
    h = aligner.clone()
    prep(h)
    h.fit(holey, mk, valid_items=valid, seed=0)
    for m in views:
        assert np.isfinite(h.transform(m, views[m])).all(), "NaN in missing rows leaked into the fitted maps"

    # save / load round trip, no pickle
    with tempfile.TemporaryDirectory() as tmp:
        d = aligner.save(Path(tmp) / "al")
        files = sorted(p.name for p in d.iterdir())
        assert files == ["aligner.json", "aligner.safetensors"], f"unexpected files {files}"
        loaded = Aligner.load(d)
        assert type(loaded) is type(aligner) and loaded.get_params() == params
        for m in views:
            np.testing.assert_allclose(
                loaded.transform(m, views[m]), Z[m], rtol=1e-5, atol=1e-6, err_msg="load() changed outputs"
            )

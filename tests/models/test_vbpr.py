"""VBPR: multi-modality, mask-aware content, cold items scored by content, persistence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modalrec.core.errors import DataError
from modalrec.data.dataset import Dataset
from modalrec.evaluation import evaluate
from modalrec.models import Recommender, create
from synthetic import make_clustered

FAST = {"epochs": 30, "lr": 0.01, "dim": 16, "content_dim": 16, "batch_size": 256, "patience": 5}


def test_vbpr_uses_every_modality_and_reports_weights(featured: Dataset) -> None:
    m = create("vbpr", **FAST).fit(featured, progress=False)
    assert m.meta["modalities"] == ["image", "text"]
    w = m.meta["modality_weights"]
    assert set(w) == {"image", "text"} and abs(sum(w.values()) - 1) < 1e-5
    pop = evaluate(create("popularity").fit(featured, progress=False), featured, "test", ks=(10,))
    res = evaluate(m, featured, "test", ks=(10,))
    assert res["recall@10"] > 1.5 * pop["recall@10"]


def test_missing_rows_do_not_leak_into_scores(featured: Dataset) -> None:
    """Values in rows whose mask is False must not matter: they are not features."""
    a = create("vbpr", **FAST).fit(featured, progress=False)
    other = make_clustered(with_features=True)
    missing = ~other.feature_masks["image"]
    assert missing.any()
    other.features["image"][missing] = 1e3  # garbage where the image is absent
    b = create("vbpr", **FAST).fit(other, progress=False)
    np.testing.assert_allclose(a.score([0, 1]), b.score([0, 1]), rtol=1e-4, atol=1e-4)


def test_modality_subset_and_unknown_modality(featured: Dataset) -> None:
    m = create("vbpr", **{**FAST, "modalities": ["text"]}).fit(featured, progress=False)
    assert m.meta["modalities"] == ["text"]
    with pytest.raises(DataError, match="audio"):
        create("vbpr", **{**FAST, "modalities": ["audio"]}).fit(featured, progress=False)
    with pytest.raises(DataError):
        create("vbpr", **FAST).fit(make_clustered(), progress=False)


def test_cold_items_ranked_by_content(tmp_path: Path) -> None:
    ds = make_clustered(with_features=True, cold_share=0.2)
    assert ds.cold_items is not None and ds.train[:, ds.cold_items].nnz == 0
    m = create("vbpr", **FAST).fit(ds, progress=False)
    # Cold items keep only content: free factors and free bias are zero.
    d = FAST["dim"]
    assert np.all(m.item_vectors[ds.cold_items, :d] == 0)
    cold = evaluate(m, ds, "test", ks=(10,), candidate_items=ds.cold_items)
    pop = evaluate(
        create("popularity").fit(ds, progress=False), ds, "test", ks=(10,), candidate_items=ds.cold_items
    )
    assert cold["ndcg@10"] > 1.5 * pop["ndcg@10"]
    m.save(tmp_path / "v")
    np.testing.assert_allclose(Recommender.load(tmp_path / "v").score([3]), m.score([3]), rtol=1e-6)

"""Fusion modules: mask handling (left out and re-weighted, never zero-filled), imputation, learned
weights that follow the modality that actually drives the users."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modalrec.core.errors import ConfigError
from modalrec.data.dataset import Dataset, interaction_matrix
from modalrec.evaluation.protocol import evaluate
from modalrec.fusion import FUSIONS, create_fusion
from modalrec.fusion.modules import masked_softmax
from modalrec.models.fusion import FusionRecommender

DIMS = {"text": 4, "image": 4, "audio": 4}


def inputs(B=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(B, d, generator=g) for m, d in DIMS.items()}


@pytest.mark.parametrize("name", sorted(FUSIONS))
def test_every_fusion_shapes_and_missing_modalities(name):
    torch.manual_seed(0)
    f = create_fusion(name, DIMS, dim=4, project=False)
    z = inputs()
    mask = {m: torch.ones(5, dtype=torch.bool) for m in DIMS}
    mask["image"][0] = False
    out = f(z, mask)
    assert out.shape == (5, f.out_dim) and torch.isfinite(out).all()
    # a missing modality's values must not matter at all (it is left out, not zero-filled)
    z2 = {m: v.clone() for m, v in z.items()}
    z2["image"][0] = 1e6
    torch.testing.assert_close(f(z2, mask), out)
    # a modality absent from the input dict is treated as missing for every item
    out_no_audio = f({m: v for m, v in z.items() if m != "audio"}, mask)
    assert torch.isfinite(out_no_audio).all()
    w = f.modality_weights(z, mask)
    assert set(w) == set(DIMS) and abs(sum(w.values()) - 1) < 1e-5


def test_weighted_sum_reweights_present_modalities():
    f = create_fusion("weighted_sum", DIMS, dim=4, project=False)
    with torch.no_grad():
        f.logits[:] = torch.tensor([0.0, 1.0, 2.0])
    z = inputs()
    mask = {m: torch.ones(5, dtype=torch.bool) for m in DIMS}
    mask["audio"][:] = False
    w = torch.softmax(torch.tensor([0.0, 1.0]), 0)  # text, image renormalised without audio
    expected = w[0] * torch.nn.functional.normalize(z["text"], dim=1) + w[1] * torch.nn.functional.normalize(
        z["image"], dim=1
    )
    torch.testing.assert_close(f(z, mask), expected)
    # an item with a single modality is exactly that modality's normalised vector
    only_text = {m: torch.tensor([m == "text"] * 5) for m in DIMS}
    torch.testing.assert_close(f(z, only_text), torch.nn.functional.normalize(z["text"], dim=1))
    rep = f.modality_weights()
    assert rep["audio"] > rep["image"] > rep["text"]


def test_concat_keeps_unit_norm_whatever_is_missing():
    f = create_fusion("concat", DIMS, dim=4, project=False)
    z = inputs()
    mask = {
        "text": torch.tensor([True] * 5),
        "image": torch.tensor([True, False, True, False, False]),
        "audio": torch.tensor([False] * 5),
    }
    out = f(z, mask)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(5))
    assert (out[1, 4:8] == 0).all()  # missing image block stays empty...


def test_impute_fills_missing_modality_from_the_aligned_space():
    f = create_fusion("concat", DIMS, dim=4, project=False, impute=True)
    z = inputs()
    mask = {m: torch.ones(5, dtype=torch.bool) for m in DIMS}
    mask["image"][1] = False
    out = f(z, mask)
    n = {m: torch.nn.functional.normalize(v, dim=1) for m, v in z.items()}
    fill = torch.nn.functional.normalize(n["text"][1] + n["audio"][1], dim=0)
    torch.testing.assert_close(out[1, 4:8] * np.sqrt(3), fill)  # ...unless imputation is asked for


def test_masked_softmax_all_missing_is_zero():
    w = masked_softmax(torch.zeros(2, 3), torch.tensor([[False] * 3, [True, False, False]]))
    assert w.tolist() == [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]


def test_unknown_fusion():
    with pytest.raises(ConfigError):
        create_fusion("nope", DIMS)


def driven_dataset(n_users=150, n_items=120, seed=0) -> Dataset:
    """Users choose items by their *text* vector only; the image is noise; audio missing for half."""
    rng = np.random.default_rng(seed)
    text = rng.normal(size=(n_items, 6)).astype(np.float32)
    image = rng.normal(size=(n_items, 6)).astype(np.float32)
    prefs = rng.normal(size=(n_users, 6))
    scores = prefs @ (text / np.linalg.norm(text, axis=1, keepdims=True)).T
    rows, cols, part = [], [], []
    for u in range(n_users):
        top = np.argsort(-scores[u])[:16]
        rows += [u] * 16
        cols += list(top)
        part += [0] * 12 + [1] * 2 + [2] * 2
    rows, cols, part = np.array(rows), np.array(cols), np.array(part)
    m = [interaction_matrix(rows[part == p], cols[part == p], n_users, n_items) for p in range(3)]
    return Dataset(
        "driven",
        np.arange(n_users).astype(str),
        np.arange(n_items).astype(str),
        *m,
        features={"text": text, "image": image},
        feature_masks={"text": np.ones(n_items, bool), "image": np.arange(n_items) % 4 != 0},
    )


def test_fusion_recommender_learns_the_driving_modality():
    ds = driven_dataset()
    model = FusionRecommender(
        fusion="weighted_sum", dim=8, epochs=20, patience=5, batch_size=256, lr=0.02, seed=0
    )
    model.fit(ds, progress=False)
    w = model.meta["modality_weights"]
    assert w["text"] > 0.6 > w["image"], w
    image_only = FusionRecommender(
        fusion="weighted_sum",
        dim=8,
        epochs=20,
        patience=5,
        batch_size=256,
        lr=0.02,
        seed=0,
        modalities=["image"],
    )
    image_only.fit(ds, progress=False)
    assert (
        evaluate(model, ds, "test", ks=(10,))["recall@10"]
        > evaluate(image_only, ds, "test", ks=(10,))["recall@10"]
    )

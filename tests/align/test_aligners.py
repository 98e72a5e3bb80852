"""Every aligner: the conformance contract, and recovery of a known cross-modal map on synthetic data."""

from __future__ import annotations

import numpy as np
import pytest

from modalrec.align import (
    AdversarialAligner,
    CCAAligner,
    CollaborativeAligner,
    ContrastiveAligner,
    CrossAttentionAligner,
    EnsembleAligner,
    MMDAligner,
    RidgeAligner,
    create,
)
from modalrec.align.checks import synthetic_views
from modalrec.align.metrics import cross_modal_ranks, mean_recall
from modalrec.core.errors import ConfigError, DataError

FAST = {"max_epochs": 8, "patience": 8, "batch_size": 64}


def test_create_and_bad_params():
    assert isinstance(create("contrastive", dim=4), ContrastiveAligner)
    with pytest.raises(ConfigError):
        create("nope")
    with pytest.raises(ConfigError):
        create("cca", bogus=1)


def test_every_aligner_declares_its_hyperparameters_in_its_own_params_class():
    from modalrec.align import ALIGNERS

    for name, cls in ALIGNERS.items():
        assert "default_params" not in vars(cls), f"{name}: hyperparameters belong in its Params class"
        assert cls.params_class.__module__.startswith("modalrec.align."), f"{name}: no Params class"
        assert cls().get_params() == cls.params_class().as_dict()


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("ridge", {"reg": -1.0}, "'reg' = -1.0"),
        ("ridge", {"reg": "sometimes"}, "reg"),
        ("cca", {"dim": 0}, "'dim' = 0"),
        ("contrastive", {"hard_negatives": 1.0}, "hard_negatives"),
        ("cross_attention", {"dim": 10, "heads": 4}, "multiple of heads"),
        ("cross_attention", {"hidden": 64}, "unknown hyperparameter 'hidden'"),
        ("adversarial", {"mmd_weight": 1.0}, "unknown hyperparameter 'mmd_weight'"),
        ("ensemble", {"members": [{"aligner": "ensemble"}]}, "cannot be ensembles"),
        ("ensemble", {"members": [{"aligner": "nope"}]}, "member 0"),
        ("ensemble", {"members": [{"aligner": "cca", "dims": 4}]}, "unknown hyperparameter 'dims'"),
        ("ensemble", {"members": [{"aligner": "cca", "columns": {"text": [3, 1]}}]}, "columns"),
        ("ensemble", {"members": [{"dim": 4}]}, "aligner"),
        ("ensemble", {"members": [{"aligner": "cca"}], "weights": [1, 2]}, "one number per member"),
        ("ensemble", {"members": [{"aligner": "cca"}], "weights": [-1]}, ">= 0"),
    ],
)
def test_bad_hyperparameters_fail_when_the_aligner_is_built(name, params, message):
    with pytest.raises(ConfigError, match=message):
        create(name, **params)


def test_hyperparameters_are_typed():
    al = create("ridge", reg=1, dim=4.0)
    assert al.hp.reg == 1.0 and isinstance(al.hp.reg, float) and al.hp.dim == 4
    assert create("ensemble", members=[{"aligner": "cca", "columns": {"text": [0, 4]}}]).get_params() == {
        "members": [{"aligner": "cca", "columns": {"text": [0, 4]}}],
        "seeds": 1,
        "weights": None,
    }


def test_fit_rejects_bad_views():
    v, _ = synthetic_views(n=20)
    with pytest.raises(DataError):
        CCAAligner().fit({"text": v["text"], "image": v["image"][:10]})
    bad = v["text"].copy()
    bad[3, 0] = np.nan
    with pytest.raises(DataError, match="text"):
        CCAAligner().fit({"text": bad, "image": v["image"]})
    with pytest.raises(DataError):
        CCAAligner().fit({"text": v["text"]})


# ---------------------------------------------------------------- recovery of a known map
def split_views(n=600, seed=0, **kw):
    views, z = synthetic_views(n=n, seed=seed, **kw)
    test = np.arange(n - n // 5, n)
    return views, z, test


def test_ridge_recovers_exact_linear_map():
    rng = np.random.default_rng(0)
    t = rng.normal(size=(400, 8)).astype(np.float32)
    M = rng.normal(size=(8, 10)).astype(np.float32)
    i = t @ M
    test = np.arange(300, 400)
    al = RidgeAligner(reference="image", reg=1e-8, l2_input=False).fit(
        {"text": t, "image": i}, valid_items=test
    )
    zt, zi = al.transform("text", t[test]), al.transform("image", i[test])
    # the text map reproduces the image coordinates of unseen items almost exactly
    assert np.abs(zt - zi).max() < 1e-3 * np.abs(zi).max()
    assert (cross_modal_ranks(zt, zi) == 1).all()


def test_cca_recovers_known_canonical_correlations():
    rng = np.random.default_rng(0)
    n, rho = 4000, np.array([0.95, 0.7, 0.4])
    s = rng.normal(size=(n, 3))
    a = s
    b = rho * s + np.sqrt(1 - rho**2) * rng.normal(size=(n, 3))
    # embed both in bigger spaces with unrelated noise dimensions and random mixing
    A = np.concatenate([a, rng.normal(size=(n, 5))], 1) @ np.linalg.qr(rng.normal(size=(8, 8)))[0]
    B = np.concatenate([b, rng.normal(size=(n, 4))], 1) @ np.linalg.qr(rng.normal(size=(7, 7)))[0]
    cca = CCAAligner(dim=3, reg=1e-6, l2_input=False).fit(
        {"a": A.astype(np.float32), "b": B.astype(np.float32)}
    )
    np.testing.assert_allclose(cca.meta["correlations"], rho, atol=0.03)
    # normalisation constraint: projected training views have (near) identity covariance, no zero map
    za = cca.transform("a", A.astype(np.float32)) / np.asarray(cca.meta["correlations"], np.float32)
    cov = np.cov(za.T)
    np.testing.assert_allclose(np.diag(cov), 1.0, atol=0.1)


def test_contrastive_recovers_nonlinear_map():
    rng = np.random.default_rng(0)
    n = 700
    t = rng.normal(size=(n, 10)).astype(np.float32)
    i = np.tanh(t @ rng.normal(size=(10, 16))).astype(np.float32)
    test = np.arange(500, n)
    al = ContrastiveAligner(dim=16, hidden=64, max_epochs=60, patience=15, batch_size=128)
    al.fit({"text": t, "image": i}, valid_items=np.arange(400, 500), seed=0)
    zt, zi = al.transform("text", t[test]), al.transform("image", i[test])
    ranks = cross_modal_ranks(zt, zi)
    assert (ranks <= 10).mean() > 0.9  # chance: 10 / 200 = 0.05
    assert al.meta["best_epoch"] >= 0 and 0.001 < al.meta["temperature"] < 1.0


def test_contrastive_hard_negatives_and_partial_pairs_train():
    views, _, test = split_views(n=300)
    mk = {"text": np.ones(300, bool), "image": np.arange(300) % 3 != 0}
    al = ContrastiveAligner(dim=8, hidden=None, hard_negatives=0.3, noise=0.05, feature_dropout=0.1, **FAST)
    al.fit(views, mk, valid_items=test, seed=1)
    assert np.isfinite(al.transform("image", views["image"])).all()


def test_cross_attention_joint_vector_is_in_the_shared_space():
    views, _, test = split_views(n=500)
    al = CrossAttentionAligner(dim=16, n_tokens=2, heads=2, max_epochs=25, patience=6, batch_size=128)
    al.fit(views, valid_items=test, seed=0)
    zt = al.transform("text", views["text"][test])
    zi = al.transform("image", views["image"][test])
    assert mean_recall(zt, zi, k=10) > 0.8
    mk = {"text": np.ones(500, bool), "image": np.arange(500) % 2 == 0}
    j = al.joint({m: v[test] for m, v in views.items()}, {m: v[test] for m, v in mk.items()})
    assert j.shape == (len(test), 16)
    np.testing.assert_allclose(np.linalg.norm(j, axis=1), 1.0, atol=1e-5)
    # the joint vector of an item retrieves that item's text vector
    assert (cross_modal_ranks(j, zt) <= 10).mean() > 0.8


@pytest.mark.parametrize("cls", [MMDAligner, AdversarialAligner])
def test_distribution_aligners_use_unpaired_items(cls):
    """Only 8% of training items have both modalities; the rest have one. Held-out pairs still match."""
    rng = np.random.default_rng(0)
    n = 800
    z = rng.normal(size=(n, 8)).astype(np.float32)
    R = np.linalg.qr(rng.normal(size=(8, 8)))[0].astype(np.float32)
    views = {"text": z + 0.05 * rng.normal(size=(n, 8)).astype(np.float32), "image": z @ R}
    mk = {"text": np.ones(n, bool), "image": np.ones(n, bool)}
    unpaired = np.arange(50, 650)
    mk["text"][unpaired[::2]] = False
    mk["image"][unpaired[1::2]] = False
    fit_views = {m: v[:700] for m, v in views.items()}
    fit_masks = {m: v[:700] for m, v in mk.items()}
    al = cls(dim=8, max_epochs=80, patience=20, batch_size=128)
    al.fit(fit_views, fit_masks, valid_items=np.arange(650, 700), seed=0)
    assert al.meta["n_paired_train"] == 50
    zt, zi = al.transform("text", views["text"][700:]), al.transform("image", views["image"][700:])
    assert (cross_modal_ranks(zt, zi) <= 10).mean() > 0.8  # chance 0.1


def test_collaborative_places_cold_items_near_their_true_cf_vectors():
    rng = np.random.default_rng(0)
    n = 500
    text = rng.normal(size=(n, 12)).astype(np.float32)
    image = rng.normal(size=(n, 9)).astype(np.float32)
    cf = (text @ rng.normal(size=(12, 6)) + image @ rng.normal(size=(9, 6))).astype(np.float32)
    warm = np.arange(n) < 400
    al = CollaborativeAligner(l2_input=False).fit({"text": text, "image": image, "cf": cf}, {"cf": warm})
    cold = ~warm
    pred = al.transform_joint({"text": text[cold], "image": image[cold]})
    assert np.abs(pred - cf[cold]).max() < 0.05 * np.abs(cf).max()
    # the target space is the CF space itself
    np.testing.assert_array_equal(al.transform("cf", cf[:3]), cf[:3])
    # an item without an image still lands near its CF vector (modality dropout in the joint map)
    no_img = al.transform_joint(
        {"text": text[cold], "image": np.full_like(image[cold], np.nan)},
        {"text": np.ones(100, bool), "image": np.zeros(100, bool)},
    )
    np.testing.assert_allclose(no_img, al.transform("text", text[cold]), rtol=1e-5, atol=1e-5)
    assert (cross_modal_ranks(no_img, cf[cold]) <= 10).mean() > 0.5


def test_ensemble_of_seeds_recovers_the_map_and_reloads(tmp_path):
    rng = np.random.default_rng(0)
    n = 500
    t = rng.normal(size=(n, 10)).astype(np.float32)
    i = np.tanh(t @ rng.normal(size=(10, 16))).astype(np.float32)
    test = np.arange(400, n)
    member = {"aligner": "contrastive", "dim": 16, "hidden": 32, "max_epochs": 25, "patience": 25}
    ens = EnsembleAligner(members=[member], seeds=2).fit({"text": t[:400], "image": i[:400]}, seed=0)
    assert ens.dim == 32 and len(ens.meta["members"]) == 2
    zt, zi = ens.transform("text", t[test]), ens.transform("image", i[test])
    # cosine of ensemble vectors = mean of the member cosines
    np.testing.assert_allclose(np.linalg.norm(zt, axis=1), 1.0, atol=1e-5)
    assert (cross_modal_ranks(zt, zi) <= 10).mean() > 0.8  # chance 0.1
    back = EnsembleAligner.load(ens.save(tmp_path / "ens"))
    np.testing.assert_allclose(back.transform("text", t[test]), zt, atol=1e-6)
    with pytest.raises(ConfigError):
        EnsembleAligner().fit({"text": t, "image": i})
    with pytest.raises(ConfigError):
        EnsembleAligner(members=[{"aligner": "cca"}], weights=[1, 2]).fit({"text": t, "image": i})


def _taste_world(n_items=400, n_users=300, seed=0):
    """Items with text and image features; users like the items their taste vector points at."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n_items, 6))
    text = (latent @ rng.normal(size=(6, 16)) + 0.1 * rng.normal(size=(n_items, 16))).astype(np.float32)
    image = (latent[:, :3] @ rng.normal(size=(3, 8))).astype(np.float32)
    taste = rng.normal(size=(n_users, 6))
    S = taste @ latent.T
    R = (np.quantile(S, 0.95, axis=1, keepdims=True) <= S).astype(np.float32)
    return text, image, sp.csr_matrix(R)


def _cold_recall(U, V, R, cold, k=20):
    T = R[:, cold].toarray()
    users = np.flatnonzero(T.sum(1) > 0)
    top = np.argsort(-(U[users] @ V[cold].T), axis=1)[:, :k]
    return float(np.mean(np.take_along_axis(T[users], top, axis=1).sum(1) / T[users].sum(1)))


def test_interaction_aligner_makes_cold_items_recommendable(tmp_path):
    from modalrec.align import InteractionAligner

    text, image, R = _taste_world()
    cold = np.arange(320, 400)
    train = R.tolil()
    train[:, cold] = 0
    train = train.tocsr()
    views = {"text": text, "image": image}
    al = InteractionAligner(dim=16, hidden=32, max_steps=200, seeds=2).fit(views, interactions=train, seed=0)
    assert al.dim == 32 and al.user_vectors.shape == (300, 32)
    assert al.meta["validation"].startswith("pseudo-cold")  # no validate(): held-out warm items
    V = al.transform_joint(views)
    got = _cold_recall(al.user_vectors, V, R, cold)
    assert got > 3 * 20 / len(cold), got  # chance = 20/80 = 0.25
    # an item without its image is still placed from its text (mean-imputed block + presence flag)
    no_img = al.transform_joint(
        {"text": text, "image": np.full_like(image, np.nan)}, {"image": np.zeros(len(text), bool)}
    )
    assert np.isfinite(no_img).all()
    assert _cold_recall(al.user_vectors, no_img, R, cold) > 0.5
    back = InteractionAligner.load(al.save(tmp_path / "e2e"))
    np.testing.assert_allclose(back.transform_joint(views), V, atol=1e-5)
    np.testing.assert_allclose(back.user_vectors, al.user_vectors)
    with pytest.raises(ConfigError, match="interactions="):
        InteractionAligner().fit(views)
    with pytest.raises(DataError, match="item columns"):
        InteractionAligner().fit(views, interactions=R[:, :10])

"""The FREEDOM/LGMRec-family graph model: kNN graphs, pruning, learned modality weights, SSL options."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from modalrec.data.dataset import Dataset
from modalrec.evaluation import evaluate
from modalrec.models import create
from modalrec.models.content import degree_pruned_blocks, knn_graph, standardise
from synthetic import make_clustered

FAST = {"epochs": 25, "lr": 0.01, "dim": 16, "batch_size": 256, "patience": 4}


def test_knn_graph_links_same_cluster_items(featured: Dataset) -> None:
    x = standardise(featured.features["text"], featured.feature_masks["text"])
    g = knn_graph(x, featured.feature_masks["text"], k=5)
    assert g.shape == (featured.n_items, featured.n_items) and g.diagonal().sum() == 0
    r, c = g.nonzero()
    cluster = np.arange(featured.n_items) % 4
    assert (cluster[r] == cluster[c]).mean() > 0.95  # text reveals the cluster
    # FREEDOM/LATTICE normalisation by (row) degree: every present item's row sums to 1.
    np.testing.assert_allclose(np.asarray(g.sum(1)).ravel(), 1.0, rtol=1e-5)


def test_knn_graph_skips_absent_items(featured: Dataset) -> None:
    mask = featured.feature_masks["image"]
    g = knn_graph(standardise(featured.features["image"], mask), mask, k=5)
    absent = np.flatnonzero(~mask)
    assert g[absent].nnz == 0 and g[:, absent].nnz == 0


def test_degree_sensitive_pruning_prefers_low_degree_edges() -> None:
    rng = np.random.default_rng(0)
    r = sp.random(200, 100, density=0.1, random_state=1, format="csr", dtype=np.float32)
    r.data[:] = 1
    r[:20, :] = 1  # 20 hub users connected to everything
    r = sp.csr_matrix(r)
    a, _ = degree_pruned_blocks(r, 0.3, rng)
    kept = (a > 0).astype(np.float32)
    assert abs(kept.nnz - round(0.3 * r.nnz)) <= 1
    hub_share_kept = kept[:20].nnz / r[:20].nnz
    rest_share_kept = kept[20:].nnz / r[20:].nnz
    assert hub_share_kept < rest_share_kept


@pytest.mark.parametrize(
    "opts",
    [
        {},
        {"edge_keep": 0.8, "content_bpr": 0.1},
        {"ssl_weight": 0.1, "mfm_weight": 0.1, "content_bpr": 0.1},
        {"loss": "softmax", "n_negatives": 32, "content_residual": True},
        {"loss": "softmax", "n_negatives": 32, "hard_negatives": 4},
    ],
)
def test_graph_model_options_learn(featured: Dataset, opts: dict) -> None:
    m = create("graphmm", **FAST, **opts).fit(featured, progress=False)
    w = m.meta["modality_weights"]
    assert set(w) == {"image", "text"} and abs(sum(w.values()) - 1) < 1e-5
    pop = evaluate(create("popularity").fit(featured, progress=False), featured, "test", ks=(10,))
    assert evaluate(m, featured, "test", ks=(10,))["recall@10"] > 1.5 * pop["recall@10"]


def test_ssl_changes_the_model(featured: Dataset) -> None:
    a = create("graphmm", **FAST, content_bpr=0.1).fit(featured, progress=False)
    b = create("graphmm", **FAST, content_bpr=0.1, ssl_weight=0.5).fit(featured, progress=False)
    assert not np.allclose(a.score([0]), b.score([0]))


def test_without_modalities_is_pure_collaborative(featured: Dataset) -> None:
    m = create("graphmm", **FAST, modalities=[]).fit(featured, progress=False)
    assert m.meta["modalities"] == [] and m.meta["modality_weights"] == {}
    # And it runs on a data set without any features.
    create("graphmm", **FAST).fit(make_clustered(), progress=False)


def test_content_residual_scores_cold_items() -> None:
    ds = make_clustered(with_features=True, cold_share=0.2)
    m = create("graphmm", **FAST, content_residual=True, content_bpr=0.1).fit(ds, progress=False)
    cold = evaluate(m, ds, "test", ks=(10,), candidate_items=ds.cold_items)
    pop = evaluate(
        create("popularity").fit(ds, progress=False), ds, "test", ks=(10,), candidate_items=ds.cold_items
    )
    assert cold["ndcg@10"] > 1.5 * pop["ndcg@10"]


def test_hard_negatives_are_content_neighbours_never_own_positives(featured: Dataset) -> None:
    m = create("graphmm", **{**FAST, "epochs": 2}, loss="softmax", hard_negatives=8).fit(
        featured, progress=False
    )
    coo = featured.train.tocoo()
    users, pos = coo.row.astype(np.int64), coo.col.astype(np.int64)
    hard, ok = m._hard_negatives(users, pos, 8)
    assert ok.mean() > 0.5
    seen = featured.train.toarray() > 0
    assert not seen[np.repeat(users, 8)[ok.ravel()], hard.ravel()[ok.ravel()]].any()
    # Every usable hard negative is a neighbour of its positive in some modality graph.
    nbrs = m._neighbours
    assert all(h in nbrs[p] for p, row, okr in zip(pos, hard, ok, strict=True) for h in row[okr])


def test_interaction_graph_is_a_learned_extra_graph(clustered: Dataset) -> None:
    """cf_knn_k adds an item-item graph from the interactions alone (no content needed)."""
    m = create("graphmm", **FAST, modalities=[], loss="softmax", n_negatives=32, cf_knn_k=5)
    m.fit(clustered, progress=False)
    assert list(m.meta["modality_weights"]) == ["interactions"]
    pop = evaluate(create("popularity").fit(clustered, progress=False), clustered, "test", ks=(10,))
    assert evaluate(m, clustered, "test", ks=(10,))["recall@10"] > 1.5 * pop["recall@10"]
    plain = create("graphmm", **FAST, modalities=[], loss="softmax", n_negatives=32).fit(
        clustered, progress=False
    )
    assert not np.allclose(plain.score([0]), m.score([0]))


def test_interaction_graph_next_to_modality_graphs(featured: Dataset) -> None:
    m = create("graphmm", **FAST, cf_knn_k=5, content_residual=True).fit(featured, progress=False)
    w = m.meta["modality_weights"]
    assert list(w) == ["image", "text", "interactions"] and abs(sum(w.values()) - 1) < 1e-5


def test_user_graph_links_users_with_shared_items_and_learns(clustered: Dataset) -> None:
    """user_knn_k propagates user embeddings over a user-user co-occurrence graph: every edge joins
    two users who share a training item, the model still learns, and it scores differently."""
    m = create("graphmm", **FAST, modalities=[], loss="softmax", n_negatives=32, user_knn_k=5)
    m.fit(clustered, progress=False)
    assert m._uu is not None
    g = m._uu[0]
    assert g.shape == (clustered.n_users, clustered.n_users) and g.diagonal().sum() == 0
    r, c = g.nonzero()
    shared = np.asarray(clustered.train[r].multiply(clustered.train[c]).sum(1)).ravel()
    assert len(r) > 0 and (shared > 0).all()
    pop = evaluate(create("popularity").fit(clustered, progress=False), clustered, "test", ks=(10,))
    assert evaluate(m, clustered, "test", ks=(10,))["recall@10"] > 1.5 * pop["recall@10"]
    plain = create("graphmm", **FAST, modalities=[], loss="softmax", n_negatives=32).fit(
        clustered, progress=False
    )
    assert plain._uu is None and not np.allclose(plain.score([0]), m.score([0]))

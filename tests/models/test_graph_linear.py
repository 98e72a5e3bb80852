"""Shared graph propagation (issue 15 item 3): the linear-time path keeps the maths of the exact one.

Rules checked: with one mini-batch per group the shared path gives the per-batch path's parameters;
one group of everything gives the full-batch gradient step; splitting sparse products over threads
changes no bit; the groups cover every mini-batch once, in order.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from modalrec.data.dataset import Dataset
from modalrec.evaluation import evaluate
from modalrec.models import create, graph_order
from modalrec.models import lightgcn as lightgcn_module
from modalrec.models.embedding import EmbeddingRecommender, GraphTrainingParams
from modalrec.models.lightgcn import csr_matmul

FAST = {"epochs": 2, "lr": 0.01, "dim": 8, "batch_size": 128, "patience": 5}


def _fit(ds: Dataset, name: str, **params: object) -> EmbeddingRecommender:
    model = create(name, **{**FAST, **params})
    assert isinstance(model, EmbeddingRecommender)
    return model.fit(ds, progress=False)


@pytest.mark.parametrize(
    ("name", "opts"),
    [
        ("lightgcn", {}),
        ("graphmm", {"modalities": [], "loss": "softmax", "n_negatives": 16}),
        ("graphmm", {"edge_keep": 0.8, "content_bpr": 0.1, "ssl_weight": 0.1, "mfm_weight": 0.1}),
        ("graphmm", {"loss": "softmax", "n_negatives": 16, "hard_negatives": 2, "content_residual": True}),
    ],
)
def test_one_batch_per_group_equals_per_batch(featured: Dataset, name: str, opts: dict) -> None:
    exact = _fit(featured, name, propagation="per_batch", **opts)
    shared = _fit(featured, name, propagation="shared", steps_per_epoch=10_000, **opts)
    np.testing.assert_allclose(shared.item_vectors, exact.item_vectors, atol=2e-5)
    np.testing.assert_allclose(shared.user_vectors, exact.user_vectors, atol=2e-5)
    np.testing.assert_allclose(shared.meta["train_loss"], exact.meta["train_loss"], rtol=1e-5)


def test_one_group_is_the_full_batch_step(clustered: Dataset) -> None:
    # BPR + L2 are sums over triplets, and the sampler draws the same triplets whatever the batch size,
    # so one shared group of small mini-batches is one full-batch step of the per-batch path.
    n = clustered.train.nnz
    full = _fit(clustered, "lightgcn", propagation="per_batch", batch_size=n, epochs=3)
    grouped = _fit(
        clustered,
        "lightgcn",
        propagation="shared",
        steps_per_epoch=1,
        batch_size=64,
        epochs=3,
        lr_scaling="none",
    )
    np.testing.assert_allclose(grouped.item_vectors, full.item_vectors, atol=2e-5)
    np.testing.assert_allclose(grouped.meta["train_loss"], full.meta["train_loss"], rtol=1e-5)


def test_shared_path_takes_steps_per_epoch_propagations(clustered: Dataset, monkeypatch) -> None:
    calls = []
    original = lightgcn_module.lightgcn_propagate

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(lightgcn_module, "lightgcn_propagate", counting)
    model = create("lightgcn", **{**FAST, "epochs": 1, "propagation": "shared", "steps_per_epoch": 3})
    model.fit(clustered, progress=False)
    n_batches = -(-clustered.train.nnz // FAST["batch_size"])
    assert n_batches > 3
    # 3 training propagations + 1 for validation + 1 for the final vectors.
    assert len(calls) == 3 + 2


def test_shared_training_learns(clustered: Dataset) -> None:
    model = _fit(clustered, "lightgcn", propagation="shared", steps_per_epoch=2, epochs=30, lr=0.05)
    pop = create("popularity").fit(clustered, progress=False)
    ours = evaluate(model, clustered, "test", ks=(10,)).metrics["recall@10"]
    assert ours > evaluate(pop, clustered, "test", ks=(10,)).metrics["recall@10"] + 0.05


def test_step_groups_cover_every_batch_once_in_order() -> None:
    model = EmbeddingRecommender.__new__(EmbeddingRecommender)
    for steps in (1, 3, 7, 50):
        model.hp = GraphTrainingParams(propagation="shared", steps_per_epoch=steps)
        for n in (1, 5, 7, 23):
            groups = model.step_groups(list(range(n)))  # type: ignore[arg-type]
            assert [b for g in groups for b in g] == list(range(n))
            assert len(groups) == min(steps, n) and all(groups)
            assert max(map(len, groups)) - min(map(len, groups)) <= 1
    model.hp = GraphTrainingParams(propagation="per_batch", steps_per_epoch=2)
    assert model.step_groups(list(range(4))) == [[0], [1], [2], [3]]  # type: ignore[arg-type]


def test_row_split_product_is_bit_identical() -> None:
    a = sp.random(3000, 500, density=0.01, random_state=2, format="csr", dtype=np.float32)
    x = np.random.default_rng(1).standard_normal((500, 16)).astype(np.float32)
    for workers in (2, 3, 5):
        assert np.array_equal(csr_matmul(a, x, workers, min_nnz=0), a @ x)
    empty_rows = sp.csr_matrix((10, 5), dtype=np.float32)
    assert np.array_equal(csr_matmul(empty_rows, x[:5], 4, min_nnz=0), np.zeros((10, 16), np.float32))


def test_two_threads_train_the_same_model(clustered: Dataset, monkeypatch) -> None:
    monkeypatch.setattr(lightgcn_module, "PARALLEL_MIN_NNZ", 0)
    one = _fit(clustered, "lightgcn", propagation="shared", steps_per_epoch=3, threads=1)
    previous = torch.get_num_threads()
    two = _fit(clustered, "lightgcn", propagation="shared", steps_per_epoch=3, threads=2)
    assert torch.get_num_threads() == previous
    np.testing.assert_allclose(two.item_vectors, one.item_vectors, atol=1e-5)


def test_sqrt_lr_scaling_follows_the_group_size(clustered: Dataset) -> None:
    n_batches = -(-clustered.train.nnz // 64)
    model = _fit(clustered, "lightgcn", propagation="shared", steps_per_epoch=2, batch_size=64, epochs=1)
    assert model.meta["effective_lr"] == pytest.approx(FAST["lr"] * np.sqrt(n_batches / 2))
    exact = _fit(clustered, "lightgcn", propagation="per_batch", batch_size=64, epochs=1)
    assert exact.meta["effective_lr"] == FAST["lr"]


@pytest.mark.parametrize(("threshold", "mode"), [(10_000, "per_batch"), (0, "shared")])
def test_auto_propagation_picks_by_minibatches_per_epoch(
    clustered: Dataset, threshold: int, mode: str
) -> None:
    # The default ("auto") trains exactly like the explicit mode it resolves to, and says which it chose.
    auto = _fit(clustered, "lightgcn", shared_above_batches=threshold, steps_per_epoch=3)
    explicit = _fit(clustered, "lightgcn", propagation=mode, steps_per_epoch=3)
    assert auto.meta["propagation"] == mode
    np.testing.assert_array_equal(auto.item_vectors, explicit.item_vectors)


@pytest.mark.parametrize("scatter", [False, True])
@pytest.mark.parametrize("used", ["both", "users", "items"])
def test_fused_propagation_has_the_layerwise_values_and_gradients(
    monkeypatch, scatter: bool, used: str
) -> None:
    # The fused node's backward is the propagation itself (the adjacency is symmetric); it must give
    # autograd's layer-by-layer gradients, also when one output is unused and on the scatter kernel.
    scatters = []
    kernel = lightgcn_module.scatter_matmul
    monkeypatch.setattr(lightgcn_module, "scatter_matmul", lambda *a: scatters.append(1) or kernel(*a))
    if scatter:
        monkeypatch.setattr(lightgcn_module, "PARALLEL_MIN_NNZ", 0)
    # 60 users x 20 items: the users -> items product qualifies for the scatter kernel (items <= users / 2)
    train = sp.random(60, 20, density=0.2, random_state=3, format="csr", dtype=np.float32)
    train.data[:] = 1.0
    r, r_t = lightgcn_module.normalised_blocks(train)
    rng = np.random.default_rng(0)
    eu0, ei0 = (torch.tensor(rng.standard_normal((n, 4)), dtype=torch.float32) for n in train.shape)
    wu, wi = (torch.tensor(rng.standard_normal((n, 4)), dtype=torch.float32) for n in train.shape)
    # fused also on the blocks with the items renumbered by popularity (results back in the given order)
    ordered = graph_order.ItemOrderedBlocks.of(r, r_t)
    assert not np.array_equal(ordered.order, np.arange(train.shape[1]))
    results = []
    for fused, blocks in ((False, None), (True, None), (True, ordered)):
        eu, ei = eu0.clone().requires_grad_(), ei0.clone().requires_grad_()
        su, si = lightgcn_module.lightgcn_propagate(r, r_t, eu, ei, 3, workers=2, fused=fused, ordered=blocks)
        loss = {"both": (su * wu).sum() + (si * wi).sum(), "users": (su * wu).sum(), "items": (si * wi).sum()}
        loss[used].backward()
        results.append([su.detach(), si.detach(), eu.grad, ei.grad])
    assert bool(scatters) == scatter
    for layerwise, *fused_values in zip(*results, strict=True):
        for fused_value in fused_values:
            np.testing.assert_allclose(fused_value.numpy(), layerwise.numpy(), rtol=1e-5, atol=1e-6)


def test_item_ordered_blocks_are_the_graph_renumbered() -> None:
    train = sp.random(30, 12, density=0.3, random_state=5, format="csr", dtype=np.float32)
    r, r_t = lightgcn_module.normalised_blocks(train)
    g = graph_order.ItemOrderedBlocks.of(r, r_t)
    degree = np.diff(r_t.indptr)
    assert (np.diff(degree[g.order]) <= 0).all()  # falling popularity
    np.testing.assert_array_equal(g.r.toarray(), r.toarray()[:, g.order])
    np.testing.assert_array_equal(g.r_t.toarray(), g.r.toarray().T)
    assert g.r.has_sorted_indices and g.follows(r) and not g.follows(r.copy())
    cache = graph_order.ItemOrderCache("local")
    assert cache.blocks(r, r_t) is cache.blocks(r, r_t)
    assert graph_order.ItemOrderCache("given").blocks(r, r_t) is None


@pytest.mark.parametrize(("name", "data"), [("lightgcn", "clustered"), ("graphmm", "featured")])
def test_item_order_changes_only_rounding(request: pytest.FixtureRequest, name: str, data: str) -> None:
    ds = request.getfixturevalue(data)
    given = _fit(ds, name, propagation="shared", steps_per_epoch=3, item_order="given")
    local = _fit(ds, name, propagation="shared", steps_per_epoch=3, item_order="local")
    if name == "graphmm":  # its item-item graphs ran in their banded order
        assert set(local._banded) == {"text", "image"} and not given._banded
    np.testing.assert_allclose(local.item_vectors, given.item_vectors, atol=1e-4)
    np.testing.assert_allclose(local.user_vectors, given.user_vectors, atol=1e-4)


def test_banded_graph_gives_the_same_product() -> None:
    g = sp.random(80, 80, density=0.05, random_state=2, format="csr", dtype=np.float32)
    b = graph_order.BandedGraph.of(g, g.T.tocsr())
    assert sorted(b.order.tolist()) == list(range(80))
    x = np.random.default_rng(1).standard_normal((80, 3)).astype(np.float32)
    np.testing.assert_allclose((b.g @ x[b.order])[b.inverse], g @ x, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose((b.g_t @ x[b.order])[b.inverse], g.T @ x, rtol=1e-5, atol=1e-6)

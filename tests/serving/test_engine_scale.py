"""The serving engine at scale (issue 15): id lookups without dicts, ALS served from the vector index,
the on-disk index cache, ItemKNN scored from the history's rows, exact scans in query chunks, and
/similar answered before its index exists. Small data; the timings are in benchmarks/scale.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from serving_helpers import catalogue_dataset, serve_config

from modalrec.serving.engine import Engine, IdIndex
from modalrec.serving.index import VectorIndex
from modalrec.serving.settings import IndexConfig
from modalrec.workflows.pipeline import fit_dataset
from modalrec.workflows.rundir import seen_matrix


@pytest.fixture(scope="module")
def scale_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("scale-runs")
    ds, _ = catalogue_dataset(root)
    als = fit_dataset(
        ds, "als", {"dim": 8, "epochs": 3, "threads": 1}, root / "als", config={}, progress=False
    )
    knn = fit_dataset(ds, "itemknn", {"k": 20}, root / "knn", config={}, progress=False)
    return {"als": als.path, "knn": knn.path}


def test_id_index_sorted_and_unsorted() -> None:
    for ids in (np.array(["a", "b", "c", "d"]), np.array(["u10", "u2", "u1", "x"])):
        ix = IdIndex(ids)
        assert [ix[s] for s in ids] == list(range(len(ids)))
        assert ix.get("nope") is None and "nope" not in ix and 3 not in ix
        with pytest.raises(KeyError):
            ix["nope"]
    assert IdIndex(np.array(["b", "a"])).order is not None
    assert IdIndex(np.array(["a", "b"])).order is None  # sorted ids: no argsort, no copy


def test_als_is_served_from_the_vector_index(scale_runs: dict[str, Path], tmp_path: Path) -> None:
    eng = Engine(scale_runs["als"], serve_config(tmp_path, text_encoder="none"))
    assert eng.rec_index is not None and eng.V is not None and eng.U is not None
    seen = seen_matrix(eng.run.dataset)
    for u in (0, 5, 17):
        ids, scores, source = eng.recommend_index(u, [], 5, exclude_seen=True)
        s = eng.model.score(np.array([u]))[0]
        s[seen[u].indices] = -np.inf
        assert source == "model"
        np.testing.assert_array_equal(ids, np.argsort(-s, kind="stable")[:5])
        np.testing.assert_allclose(scores, s[ids], rtol=1e-5)
    assert "load_timings" in eng.info() and eng.info()["index"]["kind"] == "exact"


def test_hnsw_index_cache_built_then_loaded(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    V = rng.normal(size=(600, 16)).astype(np.float32)
    cfg = IndexConfig(hnsw_threshold=100, recall_queries=20)
    a = VectorIndex(V, cfg, cache_dir=tmp_path)
    b = VectorIndex(V, cfg, cache_dir=tmp_path)
    c = VectorIndex(V + 1.0, cfg, cache_dir=tmp_path)  # other vectors: another file
    assert (a.cache, b.cache, c.cache) == ("built", "loaded", "built")
    assert a.kind == b.kind == "hnsw" and b.report["recall_at_10"] == a.report["recall_at_10"]
    ia, sa = a.search(V[:7], 5, exclude=[np.array([i]) for i in range(7)])
    ib, sb = b.search(V[:7], 5, exclude=[np.array([i]) for i in range(7)])
    np.testing.assert_array_equal(ia, ib)
    np.testing.assert_allclose(sa, sb)
    assert len(list(tmp_path.glob("*.faiss"))) == 2


def test_exact_scan_in_chunks_matches_flat_search() -> None:
    rng = np.random.default_rng(1)
    V = rng.normal(size=(400, 8)).astype(np.float32)
    idx = VectorIndex(V, IndexConfig(hnsw_threshold=100, recall_queries=10), measure=False)
    q = rng.normal(size=(30, 8)).astype(np.float32)
    found, dist = idx._scan(q, 150)  # a large share of the catalogue: the search's exact path
    truth = np.argsort(-(q @ V.T), axis=1, kind="stable")[:, :150]
    np.testing.assert_array_equal(found, truth)
    np.testing.assert_allclose(dist, np.take_along_axis(q @ V.T, truth, axis=1), rtol=1e-5)


def test_itemknn_rows_only_scoring_matches_the_model(scale_runs: dict[str, Path], tmp_path: Path) -> None:
    eng = Engine(scale_runs["knn"], serve_config(tmp_path, text_encoder="none"))
    seen = seen_matrix(eng.run.dataset)
    for u in (1, 9, 30):
        ids, scores, source = eng.recommend_index(u, [], 10, exclude_seen=True)
        ref_ids, ref_scores = eng.model.recommend(np.array([u]), 10, exclude=seen)
        assert source == "model"
        np.testing.assert_allclose(scores, ref_scores[0], rtol=1e-5)
        assert set(ids[scores > scores.min()]) <= set(ref_ids[0])  # ties at the cut may differ
    item = str(eng.item_ids[0])
    ids, _, source = eng.recommend_index(None, [(item, "click", None)], 5, exclude_seen=True)
    assert source == "feedback" and 0 not in ids
    ref = np.asarray(eng.knn_sim[0].todense()).ravel()
    ref[0] = -np.inf
    assert ids[0] == int(np.argmax(ref))


def test_similar_before_and_after_the_cosine_index(scale_runs: dict[str, Path], tmp_path: Path) -> None:
    cfg = serve_config(tmp_path, text_encoder="none", index={"hnsw_threshold": 10})
    eng = Engine(scale_runs["als"], cfg, index_cache=tmp_path / "cache")
    assert eng.sim_index is None and eng.rec_index is not None and eng.rec_index.kind == "hnsw"
    item = str(eng.item_ids[3])
    first = eng.similar(item, 5, "fused")  # exact scan while the index is built in the background
    unit = eng.V / np.linalg.norm(eng.V, axis=1, keepdims=True)
    s = unit @ unit[3]
    s[3] = -np.inf
    assert [i for i, _ in first] == np.argsort(-s, kind="stable")[:5].tolist()
    assert eng._sim_thread is not None
    eng._sim_thread.join(60)
    assert eng.sim_index is not None and eng.sim_index.normalize
    later = eng.similar(item, 5, "fused")
    assert len(later) == 5 and 3 not in [i for i, _ in later]
    assert len(set(i for i, _ in later) & set(i for i, _ in first)) >= 3


@pytest.mark.parametrize("exact_head", [0, 500])
def test_a_querys_answer_does_not_depend_on_its_batch(exact_head: int) -> None:
    # measure_recall scores the answers of its timed one-by-one searches; that is the recall of what a
    # batch would answer only if each query's answer is independent of the others in its batch.
    rng = np.random.default_rng(3)
    v = (rng.standard_normal((3000, 16)) * rng.gamma(2.0, 1.0, (3000, 1))).astype(np.float32)
    idx = VectorIndex(v, IndexConfig(hnsw_threshold=1000, exact_head=exact_head, recall_queries=50))
    assert idx.kind == "hnsw"
    q = (rng.standard_normal((80, 16)) * rng.gamma(2.0, 1.0, (80, 1))).astype(np.float32)
    batch = idx.search(q, 10)[0]
    one_by_one = np.vstack([idx.search(q[i : i + 1], 10)[0] for i in range(len(q))])
    np.testing.assert_array_equal(one_by_one, batch)
    assert 0.0 <= idx.report["recall_at_10"] <= 1.0 and idx.report["recall_queries"] == 50

"""ANN index (exact / HNSW / compression), key hashing and the server config file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modalrec.core.errors import ConfigError
from modalrec.serving.auth import KeyStore, hash_key, mask_user_id, new_key, verify_key
from modalrec.serving.index import VectorIndex, compression_report
from modalrec.serving.settings import IndexConfig, KeyEntry, load_serve_config
from modalrec.workflows.rundir import load_run


def clustered_vectors(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(50, d))
    return (centres[rng.integers(0, 50, n)] + 0.5 * rng.normal(size=(n, d))).astype(np.float32)


def test_hnsw_recall_and_exclusion() -> None:
    V = clustered_vectors(4000, 16)
    idx = VectorIndex(
        V, IndexConfig(hnsw_threshold=1000, hnsw_m=16, ef_construction=80, ef_search=64, recall_queries=50)
    )
    assert idx.kind == "hnsw"
    assert idx.report["recall_at_10"] >= 0.9
    rep = idx.report
    assert (rep["items"], rep["dim"], rep["recall_queries"]) == (4000, 16, 50)
    assert rep["float32_bytes"] == 4000 * 16 * 4 and rep["quantize"] == "none"
    exact = VectorIndex(V, IndexConfig(), measure=False)
    assert exact.kind == "exact"
    q = V[:2] * 3
    ex = [np.arange(3900), np.array([], dtype=np.int64)]  # many exclusions force the full-scan path
    ids, scores = idx.search(q, 10, exclude=ex)
    eids, escores = exact.search(q, 10, exclude=ex)
    assert (ids[0] >= 3900).all() and ids[0].tolist() == eids[0].tolist()
    np.testing.assert_allclose(scores[0], escores[0], rtol=1e-5)
    assert len(set(ids[1].tolist()) & set(eids[1].tolist())) >= 8
    # asking for more than remains returns what remains, padded with -1
    ids, scores = exact.search(q[:1], 10, exclude=[np.arange(3995)])
    assert ids[0][:5].tolist() == sorted(ids[0][:5].tolist(), key=lambda i: -float(V[i] @ q[0]))
    assert (ids[0][5:] == -1).all() and np.isneginf(scores[0][5:]).all()


def test_exact_head_answers_like_a_flat_scan() -> None:
    """Item vectors of very unequal norms (like ALS factors): queries the head of large-norm items
    proves are answered exactly (a flat scan's list, exclusions skipped), live items larger than the
    bound join the head, and vectors of equal norm leave the head off."""
    rng = np.random.default_rng(0)
    V = clustered_vectors(4000, 16) * rng.lognormal(0.0, 1.5, size=(4000, 1)).astype(np.float32)
    U = rng.normal(size=(200, 16)).astype(np.float32)
    cfg = IndexConfig(hnsw_threshold=1000, hnsw_m=8, ef_construction=16, ef_search=16, exact_head=1000)
    idx = VectorIndex(V, cfg.model_copy(update={"recall_queries": 200}), queries=U)
    exact = VectorIndex(V, IndexConfig(), measure=False)
    assert idx.kind == "hnsw" and idx.report["exact_head"] == 1000
    assert idx.report["exact_head_share"] >= 0.5
    assert idx.report["recall_at_10"] >= idx.report["graph_recall_at_10"]
    ex = [exact.search(u, 3)[0][0] for u in U]  # each user's exact top 3 excluded
    ids, scores = idx.search(U, 10, exclude=ex)
    eids, escores = exact.search(U, 10, exclude=ex)
    proven = [r for r in range(len(U)) if idx._head_answer(U[r], 10, ex[r]) is not None]
    assert len(proven) >= 100
    assert ids[proven].tolist() == eids[proven].tolist()
    np.testing.assert_allclose(scores[proven], escores[proven], rtol=1e-4)
    idx.add(100.0 * U[:1])  # a live item far larger than every stored one, along user 0
    assert idx.report["items"] == 4001 and idx.search(U[:1], 1)[0][0, 0] == 4000
    unit = V / np.linalg.norm(V, axis=1, keepdims=True)
    assert VectorIndex(unit, cfg, queries=U).report["exact_head"] == 0


@pytest.mark.parametrize(
    ("opt", "max_bytes_ratio"),
    [({"quantize": "int8"}, 0.3), ({"quantize": "pq", "pq_m": 4}, 0.2), ({"pca_dim": 8}, 0.55)],
)
def test_compression_saves_memory(opt: dict, max_bytes_ratio: float) -> None:
    V = clustered_vectors(3000, 16)
    idx = VectorIndex(V, IndexConfig(**opt, recall_queries=50))
    assert idx.compressed and idx.vectors is None
    assert idx.report["index_bytes"] < max_bytes_ratio * idx.report["float32_bytes"] + 4096
    assert 0.2 < idx.report["recall_at_10"] <= 1.0
    ids, scores = idx.search(V[:1], 5)
    assert (ids >= 0).all() and np.all(np.diff(scores[0]) <= 1e-6)


def test_compression_report_on_run(runs) -> None:
    run = load_run(runs["bpr"])
    rows = compression_report(run, [{"quantize": "none"}, {"quantize": "int8"}, {"pca_dim": 4}])
    assert rows[0]["recall_change"] == 0 and rows[0]["memory_saved"] == 0
    assert rows[1]["memory_saved"] > 0.5 and rows[2]["pca_dim"] == 4
    assert all(0 <= r["recall_at_20"] <= 1 and r["users"] == 120 for r in rows)
    assert rows[0]["recall_at_20"] > 0.3  # the clustered data is learnable


def test_key_hashing() -> None:
    key = new_key()
    assert key.startswith("mr_") and len(key) > 40
    for scheme in ("sha256", "scrypt"):
        h = hash_key(key, scheme)
        assert h.startswith(scheme + "$") and key not in h
        assert verify_key(key, h) and not verify_key(key + "x", h)
    assert hash_key("k", "scrypt") != hash_key("k", "scrypt"), "scrypt hashes are salted"
    assert not verify_key("k", "scrypt$broken") and not verify_key("k", "md5$abc")
    store = KeyStore([KeyEntry(name="ops", hash=hash_key(key, "scrypt"), scopes=["admin"])])
    assert store.check(key, "admin").name == "ops" and store.check(key, "write") is None
    assert store.check(key, "admin").name == "ops"  # cached path
    assert mask_user_id("alice", "s1") != mask_user_id("alice", "s2")
    assert "alice" not in mask_user_id("alice", "s1")


def test_serve_config_file(tmp_path: Path) -> None:
    p = tmp_path / "serve.toml"
    p.write_text(
        'state_dir = "st"\n[auth]\nread_requires_key = true\n[[auth.keys]]\nname = "k"\n'
        f'hash = "{hash_key("abc", "sha256")}"\nscopes = ["write"]\n[ab]\nrun_b = "other"\nshare_b = 0.25\n'
    )
    cfg = load_serve_config(p)
    assert cfg.state_path == tmp_path / "st" and cfg.resolve("other") == tmp_path / "other"
    assert (
        cfg.auth.read_requires_key
        and cfg.ab.share_b == 0.25
        and cfg.db_path == tmp_path / "st" / "feedback.sqlite"
    )
    p.write_text('[auth]\n[[auth.keys]]\nname = "k"\nhash = "plaintext-key"\n')
    with pytest.raises(ConfigError, match=r"auth\.keys\.0\.hash"):
        load_serve_config(p)
    p.write_text("[limits]\nmax_k = 0\n")
    with pytest.raises(ConfigError, match=r"limits\.max_k"):
        load_serve_config(p)
    p.write_text("[index\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_serve_config(p)
    with pytest.raises(ConfigError, match="not found"):
        load_serve_config(tmp_path / "missing.toml")

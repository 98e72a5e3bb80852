"""Entity graph + entity aligner: tags from every modality meet in the text encoder's space."""

from __future__ import annotations

import numpy as np
import pytest

from modalrec.align import EntityAligner, EntityGraph, l2_normalize
from modalrec.align.entity import keywords, split_tags, top_tags
from modalrec.align.metrics import cross_modal_ranks
from modalrec.core.errors import ConfigError


def entity_world(n=300, V=40, k=16, d_img=24, seed=0):
    """Each item shows two of V entities; text = mean of their name embeddings (+noise, text-encoder
    space); image = a linear image of the one-hot entities, read back by a known classifier head."""
    rng = np.random.default_rng(seed)
    E = l2_normalize(rng.normal(size=(V, k)))
    ents = np.stack([rng.choice(V, 2, replace=False) for _ in range(n)])
    onehot = np.zeros((n, V), np.float32)
    onehot[np.arange(n)[:, None], ents] = 1.0
    text = (onehot @ E) / 2 + 0.05 * rng.normal(size=(n, k)).astype(np.float32)
    M = rng.normal(size=(V, d_img)).astype(np.float32)
    image = onehot @ M + 0.05 * rng.normal(size=(n, d_img)).astype(np.float32)
    W = 8.0 * np.linalg.pinv(M).T  # [V, d_img]: image @ W.T ~ 8 * onehot
    names = [f"entity{j}" for j in range(V)]
    return {"text": text, "image": image}, E, W, names, ents


def with_taggers(al, E, W, names):
    al.set_tagger("text", names, E, kind="similarity")
    al.set_tagger("image", names, E, kind="classifier", weight=W)


def test_entity_aligner_recovers_shared_entities():
    views, E, W, names, ents = entity_world()
    test = np.arange(240, 300)
    al = EntityAligner(top_k=2, temperature=0.05)
    with_taggers(al, E, W, names)
    al.fit({m: v[:240] for m, v in views.items()})
    zt, zi = al.transform("text", views["text"][test]), al.transform("image", views["image"][test])
    assert (cross_modal_ranks(zt, zi) <= 3).mean() > 0.8  # chance 0.05
    tags = al.tags("image", views["image"][test[:1]])[0]
    assert {t[0] for t in tags} == {names[j] for j in ents[test[0]]}
    with pytest.raises(ConfigError):
        EntityAligner().fit(views)  # no taggers


def test_entity_graph_merges_modalities_and_explains():
    genres = split_tags(["War|Drama", "War", "Comedy"])
    image = top_tags(np.array([[0.8, 0.1], [0.1, 0.7], [0.5, 0.5]]), ["tank", "military uniform"], top_k=1)
    kws = keywords(
        ["tanks in the desert war", "army tanks roll", "a wedding party"], top_k=3, min_df=1, max_df=0.7
    )
    vocab = {}

    def embed(names):  # a tiny "text encoder": tank/tanks and war/military uniform are close
        base = {"tank": 0, "tanks": 0, "war": 1, "military uniform": 1, "drama": 2, "comedy": 3}
        out = []
        for nm in names:
            v = np.zeros(8)
            v[base.get(nm, 4 + len(vocab) % 4)] = 1.0
            vocab.setdefault(nm, len(vocab))
            out.append(v)
        return np.array(out)

    g = EntityGraph.build(
        {"genre": genres, "image_tag": image, "keyword": kws}, embed=embed, merge_threshold=0.99
    )
    assert "tank" in g.entities and "tanks" not in g.entities  # merged across modalities
    kinds = dict(zip(g.entities, g.kinds, strict=True))
    assert set(kinds["tank"]) == {"image_tag", "keyword"}
    ev = g.shared(0, 1)
    assert ev[0]["match"] == "exact" and {e["entity"] for e in ev if e["match"] == "exact"} >= {"war", "tank"}
    assert g.shared(0, 2) == [] or all(e["entity"] != "war" for e in g.shared(0, 2))
    vecs = g.item_vectors()
    assert vecs.shape == (3, 8) and np.allclose(np.linalg.norm(vecs, axis=1), 1.0)


def test_entity_graph_round_trip(tmp_path):
    g = EntityGraph.build({"genre": split_tags(["A|B", "B"])}, embed=lambda n: np.eye(len(n), 4))
    g2 = EntityGraph.load(g.save(tmp_path / "eg"))
    assert g2.entities == g.entities and (g2.incidence != g.incidence).nnz == 0
    np.testing.assert_array_equal(g2.embeddings, g.embeddings)

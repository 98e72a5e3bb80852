"""Grounding of explanations: only the user's history and the item may be named (no model needed)."""

from __future__ import annotations

import numpy as np

from modalrec.llm.check import ExplanationChecker, best_fact, fact_sentence
from modalrec.llm.explain import TitleIndex, check_grounding, explain, ground
from modalrec.llm.text import ItemText

TITLES = ["Batman (1989)", "Batman Returns (1992)", "Toy Story (1995)", "The Godfather (1972)", "Heat (1995)"]


def test_title_index_finds_titles_and_variants() -> None:
    idx = TitleIndex(TITLES)
    assert idx.mentions("I loved the godfather and toy story.") == {2, 3}
    assert idx.mentions("A film about Godfather-like families") == {3}
    assert idx.mentions("The heat was unbearable") == set()  # too short to count as a title
    # "Batman Returns" must not also count as "Batman" when it is the allowed item.
    assert check_grounding("Like Batman Returns, it is dark.", [1], idx) == []
    assert check_grounding("Like Batman, it is dark.", [1], idx) == ["Batman (1989)"]


def test_ground_strips_only_offending_sentences() -> None:
    idx = TitleIndex(TITLES)
    text = 'You liked Toy Story. You will also love "Frozen Planet". Batman fans agree.'
    kept, rejected = ground(text, [2], idx)
    assert kept == "You liked Toy Story."
    assert rejected == ["Frozen Planet", "Batman (1989)"]


def _hallucinating(names: list[str]):
    def phrase(prompt: str) -> str:
        assert "Only mention the items named above" in prompt  # the fixture names no noun
        return " ".join(f"If you liked {n}, you will like this." for n in names)

    return phrase


def test_explain_falls_back_when_the_phrasing_names_other_items(movies) -> None:
    u = 0  # a family-film user: GoldenEye (index 1) is not in the history
    history = set(movies.train[u].indices) | set(movies.valid[u].indices)
    assert 1 not in history
    exp = explain(movies, None, u, 10, phrase=_hallucinating(["GoldenEye"]))
    assert exp.source == "template" and exp.grounded
    assert "GoldenEye (1995)" in exp.rejected and "GoldenEye" not in exp.text
    titles = ItemText(movies).titles
    assert any(titles[int(e.item_id) - 1] in exp.text for e in exp.evidence)


def test_explain_keeps_grounded_sentences(movies) -> None:
    u = 0
    hist = sorted(set(movies.train[u].indices) | set(movies.valid[u].indices))
    ok = ItemText(movies).titles[hist[0]]
    exp = explain(movies, None, u, 10, phrase=_hallucinating([ok, "Die Hard"]))
    assert exp.source == "llm+fact" and exp.grounded and exp.check is not None and exp.check["passes"]
    # the grounded sentence, plus one fact sentence (the sentence states nothing checkable)
    checker = ExplanationChecker(movies)
    ev = [int(e.item_id) - 1 for e in exp.evidence]
    fact = best_fact(checker, 10, ev)
    assert fact is not None
    assert exp.text == f"If you liked {ok}, you will like this. {fact_sentence(fact, checker.texts)}"
    assert exp.rejected == ["Die Hard (1988)"]
    # a sentence that already passes the checker is kept as it is
    said = explain(movies, None, u, 10, phrase=lambda _: f"Like {ok}, this item is Animation.")
    assert (said.source, said.text) == ("llm", f"Like {ok}, this item is Animation.")


def test_evidence_uses_fusion_weights_and_features(movies) -> None:
    rng = np.random.default_rng(0)
    vec = rng.normal(size=(movies.n_items, 8)).astype(np.float32)
    history = sorted((set(movies.train[0].indices) | set(movies.valid[0].indices)) - {10})
    twin = int(history[-1])  # not the history's first item, so it has to be *found* as the best evidence
    vec[twin] = vec[10]  # this history item looks exactly like Pinocchio in this "image" space
    exp = explain(
        movies, None, 0, 10, use_llm=False, item_vectors={"image": vec}, fusion_weights={"image": 1.0}
    )
    assert exp.source == "template" and exp.grounded
    assert exp.modality_weights["image"] == 1.0 and exp.modality_weights["collaborative"] == 0.0
    assert exp.evidence[0].item_id == str(twin + 1) and exp.evidence[0].by_modality["image"] == 1.0
    assert exp.evidence[0].similarity == 1.0  # the image view alone decides (fusion weight 1)


def test_template_explanations_are_grounded_for_every_pair(movies) -> None:
    for u in range(movies.n_users):
        for i in (int(movies.test[u].indices[0]), 0, 1):
            exp = explain(movies, None, u, i, use_llm=False)
            assert exp.grounded, (u, i, exp.text)


def test_a_title_is_not_another_domains_noun() -> None:
    """ "The Game (1997)" names a movie; it does not call the movie a game (the checker's false alarm)."""
    from modalrec.llm.check import foreign_nouns
    from modalrec.llm.domain import ItemDomain

    idx = TitleIndex(["The Game (1997)", "The Truman Show (1998)"])
    text = "You liked The Game and The Truman Show, two movies."
    assert foreign_nouns(text, ItemDomain("movie")) == ["game", "show"]
    assert foreign_nouns(idx.without_titles(text), ItemDomain("movie")) == []
    assert foreign_nouns(idx.without_titles("A game you liked."), ItemDomain("movie")) == ["game"]

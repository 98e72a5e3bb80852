"""The real packaged LLM on tiny inputs: batched scoring, re-ranking evaluation, explanations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modalrec.evaluation.protocol import evaluate
from modalrec.llm.domain import domain_of
from modalrec.llm.explain import TitleIndex, check_grounding, explain, foreign_nouns, ground
from modalrec.llm.loading import load_llm
from modalrec.llm.rerank import LLMReranker, choose_blend, rerank_evaluate
from modalrec.llm.scoring import (
    continuation_logprobs,
    naive_continuation_logprobs,
    padded_continuation_logprobs,
)
from modalrec.models import create

pytestmark = pytest.mark.slow


def test_packaged_model_is_loaded_once(llm) -> None:
    assert load_llm() is llm
    assert llm.name == "smollm2-135m" and llm.hidden_size == 576
    assert not any(p.requires_grad for p in llm.model.parameters())


def test_batched_scores_equal_one_pass_per_candidate(llm32) -> None:
    """The packed pass (all candidates in one sequence after the cached prompt) = one pass per candidate."""
    llm = llm32
    prompt = llm.encode(
        "A list of movies that a user liked:\n- Toy Story (1995)\nAnother movie this user liked:"
    )
    texts = (
        " Babe (1995)\n",
        " Heat (1995), Action, Crime, Thriller\n",
        " X\n",
        " The Lion King (1994)\n",
        "\n",
    )
    cands = [llm.encode(t) for t in texts]
    assert len(cands[-1]) == 1  # a one-token candidate: scored from the prompt pass alone
    naive = naive_continuation_logprobs(llm, prompt, cands)
    packed = continuation_logprobs(llm, prompt, cands)  # one packed pass
    np.testing.assert_allclose(packed.logprob, naive, rtol=0, atol=1e-4)
    assert packed.n_tokens.tolist() == [len(c) for c in cands]
    assert (packed.logprob < 0).all()
    # several passes (at most 12 tokens or 2 candidates each; the last pass holds the one-token
    # candidate alone) and the padded batch: the same scores
    chunked = continuation_logprobs(llm, prompt, cands, batch_size=2, pack_tokens=12)
    np.testing.assert_allclose(chunked.logprob, naive, rtol=0, atol=1e-4)
    padded = padded_continuation_logprobs(llm, prompt, cands, batch_size=3)
    np.testing.assert_allclose(padded.logprob, naive, rtol=0, atol=1e-4)


def test_packing_puts_each_candidate_after_the_prompt_alone(llm32) -> None:
    """A candidate's score does not depend on the other candidates packed with it (the mask isolates them)."""
    prompt = llm32.encode(
        "A list of movies that a user liked:\n- Heat (1995)\nAnother movie this user liked:"
    )
    a, b = llm32.encode(" Speed (1994)\n"), llm32.encode(" Pinocchio (1940)\n")
    alone = continuation_logprobs(llm32, prompt, [a]).logprob[0]
    together = continuation_logprobs(llm32, prompt, [b, a, b]).logprob
    assert abs(together[1] - alone) < 1e-4
    assert abs(together[0] - together[2]) < 1e-4


def test_candidates_with_shared_leading_tokens_run_them_once(llm32, monkeypatch) -> None:
    """Tails that begin alike share those positions (a prefix tree), and the scores stay those of one pass each."""
    import modalrec.llm.scoring as scoring

    prompt = llm32.encode(
        "A list of movies that a user liked:\n- Heat (1995)\nAnother movie this user liked:"
    )
    texts = (
        " The Game (1997)\n",
        " The Devil's Own (1997)\n",
        " The Devil's Advocate (1997)\n",
        " Heat (1995)\n",
    )
    cands = [llm32.encode(t) for t in texts]
    cands.append(list(cands[1]))  # a duplicate: all its inputs are shared
    tree = scoring.PrefixTree.build(cands)
    n_inputs = sum(len(c) - 1 for c in cands)  # without sharing
    assert n_inputs - len(tree.tokens) >= (len(cands[1]) - 1) + 2  # the duplicate's inputs, " The" twice
    assert len(tree.rows) == sum(len(c) - 1 for c in cands)
    naive = naive_continuation_logprobs(llm32, prompt, cands)
    np.testing.assert_allclose(continuation_logprobs(llm32, prompt, cands).logprob, naive, rtol=0, atol=1e-4)
    # the vocabulary projection in several row blocks of the reused buffer: the same scores
    monkeypatch.setattr(scoring, "HEAD_ROWS", 5)
    np.testing.assert_allclose(continuation_logprobs(llm32, prompt, cands).logprob, naive, rtol=0, atol=1e-4)


def test_vocab_logprobs_equal_log_softmax_of_the_head(llm32) -> None:
    """The buffered, in-place projection gives log_softmax(head(hidden)) at the asked rows and tokens."""
    from modalrec.llm.scoring import _decoder_and_head, vocab_logprobs

    _, head = _decoder_and_head(llm32.model)
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(7, llm32.hidden_size, generator=g)
    rows = torch.tensor([0, 3, 3, 6, 1])
    targets = torch.tensor([5, 17, 900, 3, 12])
    with torch.inference_mode():
        ref = torch.log_softmax(head(hidden), dim=-1)[rows, targets]
        got = vocab_logprobs(head, hidden, rows, targets)
        again = vocab_logprobs(head, hidden[:2], torch.tensor([1]), torch.tensor([4]))  # the buffer, reused
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(again, torch.log_softmax(head(hidden[1:2]), dim=-1)[:, 4], rtol=0, atol=1e-5)


def test_bfloat16_scores_order_candidates_like_float32(llm, llm32) -> None:
    """The default precision on bfloat16-capable CPUs keeps the float32 candidate order."""
    from modalrec.llm.loading import resolve_dtype

    bf = load_llm(dtype="bfloat16")
    assert bf.dtype == torch.bfloat16 and llm32.dtype == torch.float32
    assert llm.info["dtype"] == resolve_dtype("auto")
    prompt = llm32.encode(
        "A list of movies that a user liked:\n- Toy Story (1995)\n- Aladdin (1992)\nAnother movie:"
    )
    texts = [
        " The Lion King (1994)\n",
        " Pulp Fiction (1994)\n",
        " Beauty and the Beast (1991)\n",
        " Seven (1995)\n",
    ]
    cands = [llm32.encode(t) for t in texts]
    a = continuation_logprobs(llm32, prompt, cands).logprob
    b = continuation_logprobs(bf, prompt, cands).logprob
    np.testing.assert_allclose(a, b, atol=0.6)
    assert np.argsort(a).tolist() == np.argsort(b).tolist(), (a, b)


def test_llm_prefers_the_matching_taste(llm, movies) -> None:
    """Sanity check of the signal: after family films, a family film is likelier than an action film."""
    rr = LLMReranker(movies, llm, noun="movie")
    s = rr.score([0, 4, 6, 8], [10, 5])  # Pinocchio vs Die Hard after four animated films
    assert set(s) == {"sum", "mean", "pmi", "pmi_mean"}
    assert s["pmi"][0] > s["pmi"][1]


def test_rerank_evaluate_structure_and_base_equivalence(llm, movies) -> None:
    model = create("popularity").fit(movies, progress=False)
    res = rerank_evaluate(
        model, movies, llm=llm, n_candidates=5, ks=(3, 5), valid_users=8, max_users=8, progress=False
    )
    assert res.n_users == 8 and res.split == "test"
    assert set(res.metrics) == set(res.base.metrics)
    assert res.validation["n_users"] == 8 and len(res.seconds_per_user) == 8
    # The chosen (score, weight) is the best cell of the validation grid (ties keep the smaller weight).
    grid = res.validation["grid"]
    assert (
        grid[res.score][f"{res.weight:g}"]
        == res.validation["best"]
        == max(max(g.values()) for g in grid.values())
    )
    assert res.validation["base"] == grid["sum"]["0"]
    d = res.as_dict()
    assert d["rerank"]["latency_p50_s"] == float(np.percentile(res.seconds_per_user, 50))
    assert d["rerank"]["latency_p95_s"] == float(np.percentile(res.seconds_per_user, 95))
    # The base side must be exactly what the standard protocol reports on the same users.
    ref = evaluate(model, movies, ks=(3, 5), users=np.arange(movies.n_users), keep_per_user=True)
    sel = np.isin(ref.users, res_users := _users_of(res, movies))
    assert len(res_users) == 8
    np.testing.assert_allclose(res.base.metrics["ndcg@5"], np.nanmean(ref.per_user["ndcg@5"][sel]))
    # With the blend weight fixed at 0 the re-ranked lists are the base lists.
    zero = rerank_evaluate(
        model,
        movies,
        llm=llm,
        n_candidates=5,
        ks=(3, 5),
        max_users=8,
        weight=0.0,
        score="pmi",
        progress=False,
    )
    assert zero.metrics == zero.base.metrics and zero.validation == {}


def _users_of(res, movies) -> np.ndarray:
    rng = np.random.default_rng(1)  # rerank_evaluate samples eval users with seed + 1
    users = np.flatnonzero(np.diff(movies.test.indptr) > 0)
    return np.sort(rng.choice(users, size=8, replace=False))


def test_choose_blend_keeps_base_when_llm_is_noise(movies) -> None:
    from modalrec.llm.rerank import ScoredUsers

    users = np.arange(movies.n_users)
    model = create("popularity").fit(movies, progress=False)
    top, vals = model.recommend(users, 6, exclude=movies.seen("valid"))
    # An "LLM" score that puts every user's validation item last can only hurt: weight 0 must win.
    llm = np.zeros((len(users), 6))
    for r, u in enumerate(users):
        llm[r] = np.where(np.isin(top[r], movies.valid[u].indices), -10.0, 0.0)
    sc = ScoredUsers(users, top, vals.astype(float), {"sum": llm}, [])
    _, w, info = choose_blend(sc, movies, "valid", metric="ndcg@5", scores=("sum",))
    assert w == 0.0 and info["best"] == info["base"]
    # ... and a score that puts it first must win with a positive weight.
    sc.llm["sum"] = -llm
    _, w2, info2 = choose_blend(sc, movies, "valid", metric="ndcg@5", scores=("sum",))
    assert w2 > 0 and info2["best"] > info2["base"]


def test_explanation_is_grounded_with_the_real_llm(llm, movies) -> None:
    model = create("itemknn").fit(movies, progress=False)
    exp = explain(movies, model, "u0", "11", llm=llm)  # Pinocchio for a family-film user
    assert exp.grounded and exp.text
    history = set(movies.train[0].indices) | set(movies.valid[0].indices)
    allowed = [*history, 10]
    index = TitleIndex([t for t, _ in _titles(movies)])
    assert check_grounding(exp.text, allowed, index) == []
    assert {e.item_id for e in exp.evidence} <= {str(i + 1) for i in history}
    assert abs(sum(exp.modality_weights.values()) - 1.0) < 1e-3
    # The LLM's answer went through grounding: what was dropped, and which text and source resulted.
    kept, rejected = ground(exp.llm_text, allowed, index)
    foreign = foreign_nouns(kept, domain_of(movies))
    if foreign:  # another domain's noun ("film" for a catalogue of items): the whole answer is dropped
        kept, rejected = "", [*rejected, *foreign]
    assert exp.rejected == rejected
    if exp.source == "template":
        assert exp.text == explain(movies, model, "u0", "11", use_llm=False).text
    elif exp.source == "llm+fact":  # the kept sentences, plus one fact sentence built from the data
        assert exp.text.startswith(kept.rstrip("."))
    else:
        assert exp.text == kept and exp.source == ("llm-stripped" if rejected else "llm")
    assert exp.check is not None and exp.check["passes"], exp.check  # a family film: facts exist
    # The rank is Pinocchio's place in the model's own ranking with training items excluded; u0
    # trained on Pinocchio itself, so every one of the 8 items u0 did not train on ranks above it.
    scores = model.score(np.array([0]))[0].astype(np.float64)
    scores[movies.train[0].indices] = -np.inf
    assert 10 in movies.train[0].indices and exp.rank == 1 + int((scores > scores[10]).sum()) == 9


def _titles(movies):
    from modalrec.llm.text import ItemText

    t = ItemText(movies)
    return list(zip(t.titles, t.genres, strict=True))

"""LoRA fine-tuning of the re-ranker on the real packaged model: examples, gradients, storage, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from modalrec.cli import app
from modalrec.core.errors import ConfigError, RunDirError
from modalrec.llm.rerank import LLMReranker
from modalrec.llm.scoring import continuation_logprobs, differentiable_logprobs
from modalrec.llm.tune import (
    TuneParams,
    example_loss,
    load_tuned,
    lora_model,
    negative_pool,
    save_tuned,
    split_valid_users,
    training_examples,
    tune_reranker,
)
from modalrec.models import create

pytest.importorskip("peft")

TINY = {
    "negatives": 3,
    "pool": 6,
    "batch": 2,
    "eval_every": 6,
    "valid_users": 3,
    "select_users": 3,
    "patience": 1,
    "n_candidates": 6,
    "max_history": 3,
    "layers": 2,
    "lr": 3e-3,
}


def test_examples_use_training_interactions_only(movies) -> None:
    p = TuneParams(**TINY)
    model = create("itemknn").fit(movies, progress=False)
    pool = negative_pool(model, movies, p.pool)
    ex = training_examples(movies, pool, p, np.random.default_rng(0))
    assert ex
    for u, hist, items in ex:
        train = set(movies.train[u].indices)
        assert set(hist) <= train and items[0] in train and items[0] not in hist
        assert not set(items[1:]) & train and len(items) == 1 + p.negatives
    tune_u, sel_u = split_valid_users(movies, 5, 5, 0)
    assert not set(tune_u) & set(sel_u)


def test_differentiable_scores_equal_inference_scores(llm32, movies) -> None:
    rr = LLMReranker(movies, llm32, max_history=3)
    prompt, cands = rr.prompt_ids([0, 2, 4]), [rr.candidate_ids(i) for i in (6, 1, 8)]
    ref = continuation_logprobs(llm32, prompt, cands).logprob
    np.testing.assert_allclose(differentiable_logprobs(llm32, prompt, cands).detach().numpy(), ref, atol=1e-4)


def test_lora_steps_lower_the_loss_and_leave_the_base_model(llm, movies) -> None:
    """A few optimiser steps on one example make its positive likelier; the cached LLM is untouched."""
    before = [p.clone() for p in llm.model.parameters()][:3]
    tuned, peft_model = lora_model(llm, TuneParams(**TINY))
    rr = LLMReranker(movies, tuned, max_history=3)
    opt = torch.optim.AdamW([q for q in peft_model.parameters() if q.requires_grad], lr=3e-3)
    tuned.model.train()
    losses = []
    for _ in range(4):
        opt.zero_grad()
        loss = example_loss(rr, [0, 2, 4], [6, 1, 3, 5])
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < losses[0]
    assert all(torch.equal(a, b) for a, b in zip(before, list(llm.model.parameters())[:3], strict=True))


def test_tune_save_load_and_rerank(llm, movies, tmp_path) -> None:
    model = create("itemknn").fit(movies, progress=False)
    curve = []
    res = tune_reranker(llm, model, movies, TuneParams(**TINY, max_minutes=0.05), progress=curve.append)
    assert curve[0]["examples"] == 0 and len(res.curve) >= 2 and res.score and 0 <= res.weight <= 1
    save_tuned(res, tmp_path / "reranker")
    loaded, info = load_tuned(llm, tmp_path / "reranker")
    assert info["llm_score"] == res.score and info["curve"] == res.curve
    res.llm.model.eval()
    a = LLMReranker(movies, res.llm, max_history=3).score([0, 2], [4, 6, 1])
    b = LLMReranker(movies, loaded, max_history=3).score([0, 2], [4, 6, 1])
    np.testing.assert_allclose(a["sum"], b["sum"], atol=1e-3)  # merged adapters = unmerged, to float noise
    with pytest.raises(RunDirError, match="no tuned re-ranker"):
        load_tuned(llm, tmp_path)


def test_bad_targets_are_a_config_error(llm) -> None:
    with pytest.raises(ConfigError, match="LoRA targets"):
        lora_model(llm, TuneParams(targets=["no_such_proj"]))


@pytest.mark.slow
def test_llm_tune_command_then_rerank_uses_it(llm, small_movies, tmp_path) -> None:
    from modalrec.workflows.pipeline import write_run

    model = create("itemknn").fit(small_movies, progress=False)
    run = tmp_path / "run"
    write_run(small_movies, model, run, config={"test": True}, ks=(5,))
    sets = [f"--set={k}={v}" for k, v in TINY.items() if k not in ("valid_users", "select_users")]
    sets += ["--set=valid_users=2", "--set=select_users=2", "--set=n_candidates=4", "--set=pool=4"]
    out = CliRunner().invoke(app, ["llm-tune", str(run), "--minutes", "0.05", "--quiet", *sets])
    assert out.exit_code == 0, out.output
    info = json.loads((run / "llm" / "reranker" / "tune.json").read_text())
    assert info["params"]["max_history"] == 3 and info["base_model"] == "itemknn"
    ev = CliRunner().invoke(app, ["evaluate", str(run), "--rerank", "llm", "--json"])
    assert ev.exit_code == 0, ev.output
    d = json.loads(ev.output)["rerank"]
    assert d["llm_score"] == info["llm_score"] and d["blend_weight"] == info["blend_weight"]

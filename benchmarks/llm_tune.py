"""Fine-tuned LLM re-ranker on ML-100K (issue 19): plan ``benchmarks/plans/llm_tune.toml``.

Reproduces ``benchmarks/results/llm_tune.{json,md}``::

    nice -n 10 python benchmarks/llm_tune.py --section base     # fit + cache the base model
    nice -n 10 python benchmarks/llm_tune.py --section tune     # LoRA training, early stopping, blend weight
    nice -n 10 python benchmarks/llm_tune.py --section test     # the tuned re-ranker on the test users
    python benchmarks/llm_tune.py --section side                # timing run: latency, then HTTP vs in process

See the plan for the protocol; this docstring only says how to run it.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from machine import host_line, host_record
from plan import deadline

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CACHE = Path.home() / ".cache" / "modalrec"
SEED = 2024
TRAIN = {"dim": 64, "batch_size": 2048, "epochs": 1000, "eval_every": 5, "patience": 4, "threads": 1}
OURS = {**TRAIN, "loss": "softmax", "temperature": 0.2, "content_residual": True, "ssl_weight": 0.1}
# the multimodal benchmark's strongest ML-100K row ("ours: blend graphmm + content EASE"): content
# EASE with the l2 / content_weight its own row chose on validation (l2 300, content_weight 0.1)
BLEND = {
    "members": [
        {"model": "graphmm", "params": {**OURS, "seed": SEED}},
        {"model": "ease_content", "params": {"l2": 300.0, "content_weight": 0.1}},
    ]
}


def log(*a: Any) -> None:
    print(f"[{time.strftime('%H:%M:%S')}]", *a, flush=True)


def load_ml100k() -> Any:
    """ML-100K raw pipeline with MiniLM text and EfficientNet-Lite0 poster features (shared cache)."""
    from modalrec.data import load
    from modalrec.encoders import encode_dataset

    ds = load("ml100k", seed=SEED)
    encode_dataset(ds, cache_dir=CACHE, progress=False)
    return ds


def fit_base(directory: Path) -> tuple[Any, Any]:
    """The base model, fitted once and kept in ``directory`` (later runs load it)."""
    from modalrec.models import Recommender, create

    ds = load_ml100k()
    if (directory / "manifest.json").is_file() or any(directory.glob("*.json")):
        try:
            return Recommender.load(directory), ds
        except Exception as e:
            log(f"cached base model unusable ({e}); refitting")
    t0 = time.perf_counter()
    model = create("blend", **BLEND).fit(ds, progress=False)
    model.meta["fit_seconds"] = time.perf_counter() - t0
    model.save(directory)
    log(f"base fitted in {model.meta['fit_seconds']:.0f}s, weights {model.meta.get('blend_weights')}")
    return model, ds


def plan() -> tuple[dict[str, Any], str]:
    """The committed plan and the commit that last changed it."""
    import subprocess
    import tomllib

    path = ROOT / "benchmarks" / "plans" / "llm_tune.toml"
    commit = subprocess.run(
        ["git", "log", "-1", "--format=%H", "--", str(path)], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return tomllib.loads(path.read_text()), commit


def git_commit(path: Path | None) -> str:
    """The commit that last changed ``path`` (None: HEAD)."""
    import subprocess

    args = ["git", "log", "-1", "--format=%H", "--", str(path)] if path else ["git", "rev-parse", "HEAD"]
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True).stdout.strip()


def machine() -> dict[str, Any]:
    import os
    import platform

    import torch

    from modalrec.llm.loading import resolve_dtype

    return {
        "cpu_count": os.cpu_count(),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "torch_threads": torch.get_num_threads(),
        "llm_dtype": resolve_dtype("auto"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "nice": os.nice(0),
    }


def paired_bootstrap(a: Any, b: Any, n: int = 10_000, seed: int = 0) -> dict[str, float]:
    """Mean of b - a over users with a percentile 95% CI from resampling users (paired)."""
    import numpy as np

    d = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(n, len(d)))].mean(axis=1)
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


def _f(x: Any, nd: int = 4) -> str:
    return "-" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))


def markdown(r: dict[str, Any]) -> str:
    """The Markdown report of whatever sections have run (missing ones are said to be missing)."""
    out = ["# Fine-tuned LLM re-ranker (issue 19)", ""]
    out.append(
        f"Produced by `benchmarks/llm_tune.py` from the plan `{r.get('plan')}` (commit {r.get('plan_commit')})."
    )
    out.append(
        "Protocol: ML-100K raw pipeline, per-user random 8:1:1 split seed 2024, full ranking (train+valid masked); "
    )
    out.append(
        "the LLM re-ranks the base model's top 20. CPU shared with other jobs; every section ran under `nice -n 10` (load averages below)."
    )
    if r.get("host"):  # trained numbers can differ in the last digits between CPUs (benchmarks/machine.py)
        out.append(f"Host of the tuning run: {host_line(r['host'])}.")
    b = r.get("base_model", {})
    if b:
        out += ["", f"Base model: {b.get('name')} (full test: {r.get('base_full_test')})", ""]
    else:
        out += ["", "Base model: none fitted in a finished run (the plan's base: EASE, l2 200).", ""]
    if r.get("summary"):
        out += ["## Where this stands", ""] + [f"- {s}" for s in r["summary"]] + [""]
    if r.get("attempts"):
        out += ["## Runs that did not finish", ""]
        out += [f"- {a}" for a in r["attempts"]] + [""]
    out += _md_curve(r) + _md_test(r) + _md_latency(r) + _md_http(r) + _md_explain(r)
    return "\n".join(out) + "\n"


def _md_curve(r: dict[str, Any]) -> list[str]:
    out = ["## Training curve (LoRA, early stopping on validation users)", ""]
    if not r.get("curve"):
        return [*out, "Not run.", ""]
    out += [
        "| examples | minutes | train loss | valid NDCG@10 base order | LLM alone: sum | LLM alone: mean |",
        "|---|---|---|---|---|---|",
    ]
    for p in r["curve"]:
        v = p["valid_ndcg@10"]
        out.append(
            f"| {p['examples']} | {p['minutes']} | {_f(p['train_loss'])} | {_f(v['base'])} | {_f(v['sum'])} | {_f(v['mean'])} |"
        )
    t = r.get("tune")
    if t:
        sel = t.get("selection", {})
        out += [
            "",
            f"Stopped: {t['stopped']} after {t['seconds']} s; kept the adapters of {t['best']['examples']} examples. "
            f"Chosen on {sel.get('n_users')} other validation users: LLM score `{t['llm_score']}`, blend weight {t['blend_weight']} "
            f"(valid NDCG@10 {_f(sel.get('best'))} vs base {_f(sel.get('base'))}). Load during training: {r.get('machine_during_tune', {}).get('load_avg')}.",
        ]
    return [*out, ""]


def _md_test(r: dict[str, Any]) -> list[str]:
    t = r.get("test")
    out = ["## Test: NDCG@10 gain", ""]
    if not t:
        return [*out, "Not run.", ""]
    out += ["| metric | base | + tuned LLM re-ranker |", "|---|---|---|"]
    out += [
        f"| {m} | {_f(t[m]['base'])} | {_f(t[m]['reranked'])} |" for m in ("ndcg@10", "recall@10", "ndcg@20")
    ]
    bs = t["paired_bootstrap_ndcg@10"]
    out += [
        "",
        f"{t['n_users']} test users. NDCG@10 difference {bs['mean_diff']:+.4f}, paired bootstrap 95% CI "
        f"[{bs['ci95_low']:+.4f}, {bs['ci95_high']:+.4f}]; users better/worse/same {bs['users_better']}/{bs['users_worse']}/{bs['users_same']}. "
        f"Machine {t['machine']}.",
        "",
    ]
    return out


def _md_latency(r: dict[str, Any]) -> list[str]:
    lat = r.get("latency")
    out = ["## Re-ranking 20 candidates in process", ""]
    if not lat:
        return [*out, "Not run.", ""]
    old = r.get("latency_stop24")
    if old:
        out += [
            f"Stop 24 (tuned model, bfloat16 by dtype auto, padded batch): {old['threads']} threads, {old['n']} users: "
            f"p50 {_f(old['p50'], 3)} s, p95 {_f(old['p95'], 3)} s, max {_f(old['max'], 3)} s "
            f"(load average before {old['load_avg_before']}, after {old['load_avg_after']}).",
            "",
        ]
    for e in r.get("latency_earlier", []):
        out += [
            f"Earlier re-measurement (code {e['code_commit'][:10]}, load {e['load_avg_before']} -> {e['load_avg_after']}): {_md_pair(e)}.",
            "",
        ]
        out += [f"- {n}" for n in e.get("notes", [])] + ([""] if e.get("notes") else [])
    if not {"before_padded", "before_packed"} & set(lat):
        return out
    t = lat["tokens_mean"]
    b = lat.get("before_packed") or lat["before_padded"]
    before = (
        f"before: the packed pass of commit {b['commit'][:10]}"
        if "before_packed" in lat
        else "before: padded batch over a repeated prompt cache"
    )
    now = (
        f"now (code {lat['code_commit'][:10]}), float32"
        if "before_packed" in lat
        else "now: one packed pass (no padding), float32"
    )
    diff = lat.get("max_abs_score_diff_packed_vs_padded", lat.get("max_abs_score_diff_now_vs_packed"))
    diff = lat.get("max_abs_score_diff_now_vs_padded", diff)
    shared = t.get("candidate_inputs_shared_prefixes")
    out += [
        f"Re-measured (plan commit {lat['plan_commit']}, code {lat['code_commit'][:10]}): {lat['model']}, {lat['dtype']}, "
        f"{lat['threads']} threads, candidates = the top 20 of {lat['base']}, {lat['n']} users (after one warm-up user), "
        "each user scored by both implementations back to back:",
        "",
        "| implementation | p50 s | p95 s | max s |",
        "|---|---|---|---|",
        f"| {before} | {_f(b['p50'], 3)} | {_f(b['p95'], 3)} | {_f(b['max'], 3)} |",
        f"| {now} | {_f(lat['p50'], 3)} | {_f(lat['p95'], 3)} | {_f(lat['max'], 3)} |",
    ]
    bf = lat.get("bfloat16_packed")
    if bf:
        out.append(
            f"| now, packed, model in bfloat16 (first {bf['n']} users; emulated on this CPU) | {_f(bf['p50'], 3)} | {_f(bf['p95'], 3)} | {_f(bf['max'], 3)} |"
        )
    out += [
        "",
        f"Tokens per user (mean): prompt {t['prompt']:.0f}, candidates {t['candidates']:.0f} (padded batch: "
        f"{t['padded_positions']:.0f} positions"
        + (f"; candidate inputs with shared prefixes run once: {shared:.0f}" if shared is not None else "")
        + f"). Largest |score difference| now vs before: {diff:.1e}. Load average before {lat['load_avg_before']}, "
        f"after {lat['load_avg_after']}; machine {lat['machine']}.",
        "",
    ]
    return out + [f"- {n}" for n in lat.get("notes", [])] + ([""] if lat.get("notes") else [])


def _md_pair(e: dict[str, Any]) -> str:
    """One line for an earlier latency run: now vs its "before" (padded batch or an earlier commit)."""
    if "before_packed" in e:
        b, name = e["before_packed"], f"packed at {e['before_packed']['commit'][:10]}"
        now = "now"
    else:
        b, name, now = e["before_padded"], "padded", "packed"
    return (
        f"{now} p50 {_f(e['p50'], 3)} / p95 {_f(e['p95'], 3)} s, {name} p50 {_f(b['p50'], 3)} / "
        f"p95 {_f(b['p95'], 3)} s, {e['n']} users"
    )


def _md_http(r: dict[str, Any]) -> list[str]:
    h = r.get("http")
    out = ["## HTTP backend (`modalrec llm-serve`) vs in process", ""]
    if not h:
        return [*out, "Not run.", ""]
    paired = h.get("overhead_paired_median_s")
    old = r.get("http_stop24")
    if old:
        out += [
            f"Stop 24 (padded batch, `llm-serve` under nice 10): in process p50 {_f(old['in_process_s']['p50'], 3)} s, "
            f"HTTP p50 {_f(old['http_s']['p50'], 3)} s, overhead p50 {_f(old['overhead_p50_s'], 3)} s, load {old['machine']['load_avg']}.",
            "",
        ]
    for e in r.get("http_earlier", []):
        out += [
            f"Earlier re-measurement (code {e['code_commit'][:10]}): in process p50 {_f(e['in_process_s']['p50'], 3)} s, "
            f"HTTP p50 {_f(e['http_s']['p50'], 3)} s, overhead p50 {_f(e['overhead_p50_s'], 3)} s, load {e['machine']['load_avg']}.",
            "",
        ]
    return [
        *out,
        f"{h['users']} users x 20 candidates, {h['dtype']}, {h['threads']} threads: max |score difference| {h['max_abs_score_diff']:.2e}; "
        f"per user in process p50 {_f(h['in_process_s']['p50'], 3)} s / p95 {_f(h['in_process_s']['p95'], 3)} s, "
        f"HTTP p50 {_f(h['http_s']['p50'], 3)} s / p95 {_f(h['http_s']['p95'], 3)} s; overhead p50 {_f(h['overhead_p50_s'], 3)} s"
        + (f", median of the per-user differences {_f(paired, 3)} s" if paired is not None else "")
        + (f" (plan commit {h['plan_commit']})" if h.get("plan_commit") else "")
        + f". Machine {h['machine']}.",
        "",
    ]


def _md_explain(r: dict[str, Any]) -> list[str]:
    """Explanations are measured by benchmarks/llm_explain.py (results/llm_explain.md) since stop 24."""
    return ["## Explanations", "", "See `benchmarks/results/llm_explain.md`.", ""]


def results_path() -> Path:
    return RESULTS / "llm_tune.json"


def read_results() -> dict[str, Any]:
    import json

    p = results_path()
    return json.loads(p.read_text()) if p.is_file() else {}


def write_results(r: dict[str, Any]) -> None:
    from modalrec.core.io import atomic_write_json, atomic_write_text

    atomic_write_json(results_path(), r)
    atomic_write_text(RESULTS / "llm_tune.md", markdown(r))


def base_model(args: Any) -> tuple[Any, Any, dict[str, Any]]:
    """The plan's base recommender: the strongest ML-100K row (blend, default); ``--base ease`` for EASE l2 200."""
    from modalrec.data import load
    from modalrec.models import create

    if args.base == "blend":
        model, ds = fit_base(CACHE / "llm_tune_base")
        return model, ds, {"name": "ours: blend graphmm + content EASE", "params": BLEND}
    ds = load("ml100k", seed=SEED)
    t0 = time.perf_counter()
    model = create("ease", l2=200.0).fit(ds, progress=False)
    return (
        model,
        ds,
        {"name": "EASE", "params": {"l2": 200.0}, "fit_seconds": round(time.perf_counter() - t0, 1)},
    )


def section_base(args: Any) -> None:
    from modalrec.evaluation.protocol import evaluate

    model, ds, desc = base_model(args)
    full = evaluate(model, ds, "test", ks=(10, 20))
    log(f"base {desc['name']}: full test NDCG@10 {full.metrics['ndcg@10']:.4f} ({full.n_users} users)")


def tune_params(args: Any) -> Any:
    from modalrec.llm.tune import TuneParams

    p, _ = plan()
    values = {k: v for k, v in p["tune"].items() if k != "threads"}
    if args.minutes is not None:
        values["max_minutes"] = args.minutes
    return TuneParams.build("benchmark", "llm_tune", values)


def section_tune(args: Any) -> None:
    """LoRA training with early stopping; the adapters and the curve are stored for the test section."""
    import torch

    from modalrec.evaluation.protocol import evaluate
    from modalrec.llm import load_llm
    from modalrec.llm.tune import save_tuned, tune_reranker

    threads = int(plan()[0]["tune"]["threads"])
    model, ds, desc = base_model(args)
    full = evaluate(model, ds, "test", ks=(10, 20))
    llm = load_llm(threads=threads)
    torch.set_num_threads(threads)
    _, commit = plan()
    r = {
        "plan": "benchmarks/plans/llm_tune.toml",
        "plan_commit": commit,
        "base_model": desc,
        "host": host_record(),
    }
    r["base_full_test"] = {
        "n_users": full.n_users,
        **{k: round(float(v), 5) for k, v in full.metrics.items()},
    }
    curve: list[dict[str, Any]] = []

    def point(p: dict[str, Any]) -> None:
        log(p)
        curve.append(p)
        r.update(
            {k: v for k, v in read_results().items() if k not in r},
            curve=curve,
            machine_during_tune=machine(),
        )
        write_results(r)

    res = tune_reranker(llm, model, ds, tune_params(args), progress=point)
    save_tuned(res, CACHE / f"llm_tune_adapter_{args.base}", extra={"base_model": desc["name"]})
    r.update({k: v for k, v in read_results().items() if k not in r})
    r["tune"] = {k: v for k, v in res.info().items() if k != "curve"}
    r["tune"]["adapter_dir"] = str(CACHE / f"llm_tune_adapter_{args.base}")
    r["machine_after_tune"] = machine()
    write_results(r)
    log(f"tuned: stopped {res.stopped}, score {res.score}, weight {res.weight}")


def tuned_llm(args: Any, threads: int = 1, dtype: str = "auto") -> tuple[Any, dict[str, Any]]:
    from modalrec.llm import load_llm
    from modalrec.llm.tune import load_tuned

    return load_tuned(load_llm(threads=threads, dtype=dtype), CACHE / f"llm_tune_adapter_{args.base}")


def section_test(args: Any) -> None:
    """The tuned re-ranker on the plan's test users (seeded random order, until done or the deadline)."""
    import numpy as np
    import torch

    from modalrec.llm.rerank import LLMReranker

    pl, _ = plan()
    threads = int(pl["tune"]["threads"])
    torch.set_num_threads(threads)
    model, ds, _ = base_model(args)
    llm, info = tuned_llm(args, threads=threads)
    rr = LLMReranker(ds, llm, max_history=int(info["params"]["max_history"]), seed=0)
    score, weight = str(info["llm_score"]), float(info["blend_weight"])
    eligible = np.flatnonzero(np.diff(ds.target("test").indptr) > 0)
    users = np.random.default_rng(1).choice(eligible, size=int(pl["test"]["users"]), replace=False)
    seen, truth = ds.seen("test"), ds.target("test")
    top, vals = model.recommend(users, 20, exclude=seen)
    stop_at = deadline(pl["test"]["deadline_utc"])
    secs: list[float] = []
    llm_rows: list[Any] = []
    for i, u in enumerate(users):
        if datetime.now(UTC) >= stop_at:
            log(f"deadline reached after {i} users")
            break
        t0 = time.perf_counter()
        hist = seen.indices[seen.indptr[u] : seen.indptr[u + 1]]
        s = rr.score(rr.history_subset(int(u), hist), top[i], priors=score.startswith("pmi"))
        secs.append(time.perf_counter() - t0)
        llm_rows.append(s[score])
        if (i + 1) % 10 == 0:
            write_test(users, top, vals, truth, llm_rows, secs, score, weight, threads)
    write_test(users, top, vals, truth, llm_rows, secs, score, weight, threads)
    log("test done")


def write_test(
    users: Any,
    top: Any,
    vals: Any,
    truth: Any,
    llm_rows: list[Any],
    secs: list[float],
    score: str,
    weight: float,
    threads: int,
) -> None:
    """Metrics of the first ``len(llm_rows)`` users (base vs re-ranked), merged into the results."""
    import numpy as np

    from modalrec.evaluation.metrics import hit_matrix, per_user_metrics
    from modalrec.llm.rerank import rerank_order

    n = len(llm_rows)
    if n == 0:
        return
    order = rerank_order(vals[:n].astype(np.float64), np.asarray(llm_rows), weight)
    new = np.take_along_axis(top[:n], order, axis=1)
    t = truth[users[:n]]
    base_m = per_user_metrics(hit_matrix(top[:n], t), np.diff(t.indptr), (10, 20))
    new_m = per_user_metrics(hit_matrix(new, t), np.diff(t.indptr), (10, 20))
    r = read_results()  # the side process may have written meanwhile
    r["test"] = {
        "n_users": n,
        "planned_users": len(users),
        "llm_score": score,
        "blend_weight": weight,
        **{
            m: {"base": float(np.mean(base_m[m])), "reranked": float(np.mean(new_m[m]))}
            for m in ("ndcg@10", "recall@10", "ndcg@20")
        },
        "paired_bootstrap_ndcg@10": paired_bootstrap(base_m["ndcg@10"], new_m["ndcg@10"]),
        "latency_s": {"threads": threads, **_lat(secs)},
        "machine": machine(),
    }
    write_results(r)
    log(f"{n} users: {r['test']['ndcg@10']} {r['test']['paired_bootstrap_ndcg@10']}")


def _lat(secs: Any) -> dict[str, Any]:
    import numpy as np

    a = np.asarray(secs, dtype=np.float64)
    if not a.size:
        return {"n": 0}
    return {
        "p50": float(np.percentile(a, 50)),
        "p95": float(np.percentile(a, 95)),
        "max": float(a.max()),
        "n": int(a.size),
    }


def scoring_at(commit: str) -> Any:
    """``modalrec.llm.scoring`` as it was at ``commit`` (read with ``git show``), as a separate module.

    Why: "before" in the latency table is the code of that commit, run in the same process on the
    same users as the current code, so that both see the same load.
    """
    import importlib.util
    import subprocess
    import tempfile

    src = subprocess.run(
        ["git", "show", f"{commit}:src/modalrec/llm/scoring.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / f"scoring_{commit[:10]}.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def latency(
    rr: Any, model: Any, ds: Any, users: Any, *, threads: int, before: str | None = None
) -> dict[str, Any]:
    """Seconds per user to score 20 candidates, the current code (now) and a "before", interleaved.

    Per user, after one warm-up user that is not counted: the re-ranker's own ``score`` (prompt text
    -> one prompt pass + one packed pass over the candidates; no pmi priors), then the same prompt
    and candidate ids through "before", so both see the same load: the packed scoring of git commit
    ``before`` when given, else the padded batch over a repeated cache (the implementation before
    the packed pass). Also the largest score difference between them.
    """
    import numpy as np
    import torch

    from modalrec.llm.scoring import PrefixTree, padded_continuation_logprobs

    ref = scoring_at(before).continuation_logprobs if before else padded_continuation_logprobs
    torch.set_num_threads(threads)
    seen = ds.seen("test")
    top, _ = model.recommend(users, 20, exclude=seen)
    hists = [rr.history_subset(int(u), seen.indices[seen.indptr[u] : seen.indptr[u + 1]]) for u in users]
    rr.score(hists[0], top[0], priors=False)  # warm-up (first call: lazy initialisation)
    ref(rr.llm, rr.llm.encode(rr.prompt_text(hists[0])), [rr.candidate_ids(c) for c in top[0]])
    now, then, diffs, tokens = [], [], [], []
    load_before = machine()["load_avg"]
    for r in range(len(users)):
        t0 = time.perf_counter()
        a = rr.score(hists[r], top[r], priors=False)["sum"]
        now.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        prompt = rr.llm.encode(rr.prompt_text(hists[r]))
        cands = [rr.candidate_ids(c) for c in top[r]]
        b = ref(rr.llm, prompt, cands).logprob
        then.append(time.perf_counter() - t0)
        diffs.append(float(np.abs(a - b).max()))
        n_in = len(PrefixTree.build(cands).tokens)
        tokens.append([len(prompt), sum(len(c) for c in cands), 20 * max(len(c) for c in cands), n_in])
    tok = np.asarray(tokens)
    key = "before_packed" if before else "before_padded"
    return {
        "threads": threads,
        **_lat(now),
        key: {**_lat(then), **({"commit": before} if before else {})},
        f"max_abs_score_diff_now_vs_{key[7:]}": max(diffs),
        "tokens_mean": {
            "prompt": float(tok[:, 0].mean()),
            "candidates": float(tok[:, 1].mean()),
            "padded_positions": float(tok[:, 2].mean()),
            "candidate_inputs_shared_prefixes": float(tok[:, 3].mean()),
        },
        "load_avg_before": load_before,
        "load_avg_after": machine()["load_avg"],
    }


def latency_bf16(ds: Any, model: Any, users: Any, *, threads: int, max_history: int) -> dict[str, Any]:
    """The packed pass with the model in bfloat16 (the old ``auto`` choice on CPUs reporting native units)."""
    import torch

    from modalrec.llm import load_llm
    from modalrec.llm.rerank import LLMReranker

    rr = LLMReranker(ds, load_llm(threads=threads, dtype="bfloat16"), max_history=max_history, seed=0)
    torch.set_num_threads(threads)
    seen = ds.seen("test")
    top, _ = model.recommend(users, 20, exclude=seen)
    secs = []
    for r, u in enumerate(users):
        h = rr.history_subset(int(u), seen.indices[seen.indptr[u] : seen.indptr[u + 1]])
        t0 = time.perf_counter()
        rr.score(h, top[r], priors=False)
        secs.append(time.perf_counter() - t0)
    return {"threads": threads, **_lat(secs), "load_avg_after": machine()["load_avg"]}


def start_server(adapter: Path | None, *, dtype: str, threads: int, port: int) -> Any:
    """A real `modalrec llm-serve` process; returns it once /v1/models answers."""
    import os
    import subprocess

    import httpx

    cmd = [sys.executable, "-c", "from modalrec.cli import main; main()", "llm-serve", "--port", str(port)]
    cmd += ["--dtype", dtype, "--threads", str(threads)] + (["--adapter", str(adapter)] if adapter else [])
    proc = subprocess.Popen(cmd, env=dict(os.environ))  # the client's niceness: both are measured
    for _ in range(1200):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"llm-serve exited with {proc.returncode}")
        time.sleep(1)
    proc.terminate()
    raise RuntimeError("llm-serve did not start in 20 minutes")


def side_users(ds: Any, n: int) -> Any:
    """The first ``n`` of the plan's seeded test users (seed 1, the test section's order)."""
    import numpy as np

    pl, _ = plan()
    eligible = np.flatnonzero(np.diff(ds.target("test").indptr) > 0)
    return np.random.default_rng(1).choice(eligible, size=int(pl["test"]["users"]), replace=False)[:n]


def http_compare(args: Any) -> dict[str, Any]:
    """Scores and per-user time, in process vs through a real `modalrec llm-serve` (float32 both).

    Same users and candidates as the latency section; per user the in-process call and the HTTP
    call run back to back (the server and the client have the same niceness and threads).
    """
    import numpy as np
    import torch

    from modalrec.llm import load_llm
    from modalrec.llm.backend import HTTPBackend
    from modalrec.llm.rerank import LLMReranker

    pl, commit = plan()
    threads = int(pl["http"]["threads"])
    model, ds, _ = base_model(args)
    llm = load_llm(threads=threads, dtype="float32")
    hist_n = int(pl["tune"]["max_history"])
    users = side_users(ds, int(pl["http"]["users"]))
    seen = ds.seen("test")
    top, _ = model.recommend(users, 20, exclude=seen)
    proc = start_server(None, dtype="float32", threads=threads, port=8911)
    try:
        out: dict[str, Any] = {"users": len(users), "dtype": "float32", "threads": threads}
        local = LLMReranker(ds, llm, max_history=hist_n, seed=0)
        remote = LLMReranker(ds, HTTPBackend("http://127.0.0.1:8911/v1"), max_history=hist_n, seed=0)
        u0 = int(users[0])
        h0 = local.history_subset(u0, seen.indices[seen.indptr[u0] : seen.indptr[u0 + 1]])
        local.score(h0, top[0], priors=False), remote.score(h0, top[0], priors=False)  # warm-up
        diffs, t_local, t_http = [], [], []
        torch.set_num_threads(threads)
        for r, u in enumerate(users):
            h = local.history_subset(int(u), seen.indices[seen.indptr[u] : seen.indptr[u + 1]])
            t0 = time.perf_counter()
            a = local.score(h, top[r], priors=False)["sum"]
            t_local.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            b = remote.score(h, top[r], priors=False)["sum"]
            t_http.append(time.perf_counter() - t0)
            diffs.append(float(np.abs(a - b).max()))
        out["max_abs_score_diff"] = max(diffs)
        out["in_process_s"], out["http_s"] = _lat(t_local), _lat(t_http)
        out["overhead_p50_s"] = out["http_s"]["p50"] - out["in_process_s"]["p50"]
        out["overhead_paired_median_s"] = float(np.median(np.subtract(t_http, t_local)))
        out.update(plan_commit=commit, code_commit=git_commit(None), machine=machine())
        return out
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def section_latency(args: Any) -> None:
    """Seconds to re-rank 20 candidates at the plan's threads and users (a timing run).

    The tuned (merged) model when its adapters are in the cache, else the packaged model: a merged
    LoRA model has the same shapes, so the same cost per token.
    """
    from modalrec.llm import load_llm
    from modalrec.llm.rerank import LLMReranker

    pl, commit = plan()
    threads = int(pl["latency"]["threads"])
    model, ds, desc = base_model(args)
    tuned = (CACHE / f"llm_tune_adapter_{args.base}").is_dir()
    llm = tuned_llm(args, threads=threads)[0] if tuned else load_llm(threads=threads)
    hist_n = int(pl["tune"]["max_history"])
    rr = LLMReranker(ds, llm, max_history=hist_n, seed=0)
    users = side_users(ds, int(pl["latency"]["users"]))
    res = latency(rr, model, ds, users, threads=threads, before=args.before)
    res.update(plan_commit=commit, code_commit=git_commit(None), base=desc["name"])
    res.update(model="tuned (merged LoRA)" if tuned else "packaged SmolLM2-135M-Instruct (untuned)")
    res.update(dtype=str(llm.dtype).replace("torch.", ""), machine=machine())
    bf_n = int(pl["latency"].get("bf16_users", 0))
    if bf_n:
        res["bfloat16_packed"] = latency_bf16(ds, model, users[:bf_n], threads=threads, max_history=hist_n)
    r = read_results()
    if "latency" in r and "latency_stop24" not in r:
        r["latency_stop24"] = r["latency"]
    elif {"before_padded", "before_packed"} & set(r.get("latency", {})):  # an earlier re-measurement: kept
        r.setdefault("latency_earlier", []).append(r["latency"])
    r["latency"] = res
    write_results(r)
    log(res)


def section_http(args: Any) -> None:
    """The HTTP backend against a real `modalrec llm-serve` process: same scores, and its overhead."""
    res = http_compare(args)
    r = read_results()
    if "http" in r and "http_stop24" not in r:
        r["http_stop24"] = r["http"]
    elif "plan_commit" in r.get("http", {}):  # an earlier re-measurement: kept, shown in one line
        r.setdefault("http_earlier", []).append(r["http"])
    r["http"] = res
    write_results(r)
    log(r["http"])


def section_side(args: Any) -> None:
    """The timing run (both CPU slots held): in-process latency at 2 threads, then the HTTP comparison."""
    section_latency(args)
    section_http(args)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--section", choices=["base", "tune", "test", "http", "latency", "side", "render"], required=True
    )
    ap.add_argument("--base", choices=["ease", "blend"], default="blend")
    ap.add_argument(
        "--before", default=None, help="latency: measure the packed scoring of this git commit as 'before'"
    )
    ap.add_argument("--minutes", type=float, default=None, help="override the plan's max_minutes")
    ap.add_argument("--note", action="append", default=[], help="render: record a run that did not finish")
    ap.add_argument(
        "--summary", action="append", default=None, help="render: the reading of all sections (replaces it)"
    )
    ap.add_argument(
        "--latency-note",
        nargs=2,
        action="append",
        default=[],
        metavar=("AGE", "TEXT"),
        help="render: add a note to a latency run (AGE 0 = the latest, 1 = the one before, ...)",
    )
    args = ap.parse_args(argv)
    if args.section == "render":
        r = read_results()
        _, commit = plan()
        r.setdefault("plan", "benchmarks/plans/llm_tune.toml")
        r.setdefault("plan_commit", commit)
        r["attempts"] = [*r.get("attempts", []), *args.note]
        if args.summary is not None:
            r["summary"] = args.summary
        runs = [*r.get("latency_earlier", []), r.get("latency", {})]
        for age, text in args.latency_note:
            runs[-1 - int(age)].setdefault("notes", []).append(text)
        write_results(r)
        return 0
    {
        "base": section_base,
        "tune": section_tune,
        "test": section_test,
        "http": section_http,
        "latency": section_latency,
        "side": section_side,
    }[args.section](args)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())

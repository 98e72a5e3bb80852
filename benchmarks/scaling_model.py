"""The cost model of docs/scaling.md: measured S and M costs extrapolated to 10^8 and 10^9 interactions.

An estimate, not a measurement. Every number starts from a committed measurement and grows with the
slope measured between S (10^6 interactions) and M (10^7), cost = cost(M) * (n / 10^7) ** slope:

* ``benchmarks/results/scale.json`` (final runs): load + validate + split (time, peak memory) and ALS
  seconds per iteration at S and M; full-ranking evaluation seconds at S; the HNSW index at M.
* LightGCN with shared propagation: the CPU seconds of one epoch at M on one thread
  (``graph_linear.json``, ``M/lightgcn/new-t1``), grown with ALS's measured slope (both do work linear in
  the interactions per pass), and the share of the epoch spent in the sparse graph products
  (:data:`PROPAGATION_SHARE`, a cProfile at S): Ray Train workers each
  run that propagation in full, so only the rest is divided among them.

Assumptions (the size of the data grows as in the scale benchmark's synthetic catalogues): users =
n / 10, items = n / 50, 68% of users have test items (S: 67,503 of 99,762), vectors of 64 float32,
15 ALS iterations, a 10 Gbit/s network for the all-reduce, compute divided evenly over the workers
(an upper bound on the speed-up). Evaluation costs c x test users x items CPU seconds (every test user
ranks every item), c measured at S.

Run ``python benchmarks/scaling_model.py`` to print the Markdown table that docs/scaling.md shows
(tests/test_docs_scaling.py checks that they agree).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCALE = ROOT / "benchmarks" / "results" / "scale.json"
GRAPH = ROOT / "benchmarks" / "results" / "graph_linear.json"
SIZES = {"S": 1e6, "M": 1e7}
TARGETS = (1e8, 1e9)
DIM, FLOAT = 64, 4
TEST_USER_SHARE = 0.68
ALS_ITERATIONS = 15
NETWORK_BYTES_S = 10e9 / 8
#: Workers assumed per step and size (Ray tasks / Ray Train workers of one CPU each).
WORKERS = {"lightgcn": {1e8: 4, 1e9: 4}, "eval": {1e8: 32, 1e9: 128}}
#: Share of a shared-propagation LightGCN epoch spent in the sparse graph products: cProfile of one S
#: epoch on one thread, load ~1 (2026-12-02 19:29 UTC): scipy's csr_matvecs 6.78 s of 11.80 s. (It was
#: derived from the S per-batch and shared rows before; those two rows were timed at loads 25 and 5,
#: which gave a share above 100%.)
PROPAGATION_SHARE = 0.57


def measured() -> dict[str, Any]:
    """The S and M numbers the model starts from."""
    scale = json.loads(SCALE.read_text())["runs"]["final"]
    graph = json.loads(GRAPH.read_text())["timing"]
    s_load, m_load = scale["S"]["steps"]["load"], scale["M"]["steps"]["load"]
    s_als, m_als = scale["S"]["steps"]["fit:als"], scale["M"]["steps"]["fit:als"]
    engine = scale["M"]["steps"]["engine"]
    return {
        "load_s": (s_load["load_s"], m_load["load_s"]),
        "load_mb": (s_load["peak_rss_mb"], m_load["peak_rss_mb"]),
        "als_iter_s": (s_als["mean_epoch_seconds"], m_als["mean_epoch_seconds"]),
        "als_mb": (s_als["peak_rss_mb"], m_als["peak_rss_mb"]),
        "lightgcn_steps": graph["M/lightgcn/new-t1"]["steps_per_epoch"],
        "propagation_share": PROPAGATION_SHARE,
        "lightgcn_m_epoch_cpu_s": graph["M/lightgcn/new-t1"]["epoch_cpu_seconds"],
        "eval_s_per_user_item": s_als["eval_s"] / (s_als["eval_users"] * s_load["items"]),
        "index_bytes_per_item": engine["index"]["index_bytes"] / engine["index"]["items"],
        "hnsw_build_s": (engine["index"]["build_seconds"], engine["index"]["items"]),
    }


def slope(pair: tuple[float, float]) -> float:
    """log-log slope between S and M."""
    return math.log10(pair[1] / pair[0]) / math.log10(SIZES["M"] / SIZES["S"])


def work_slope(pair: tuple[float, float]) -> float:
    """The measured slope, but never below 1 for work that is at least linear in the interactions.

    Why: an ALS iteration touches every interaction, so a slope under 1 only shows that S and M ran
    at different loads (0.39 when S ran at load ~5 and M at ~2); extrapolating it would be a fiction.
    """
    return max(1.0, slope(pair))


def grow(pair: tuple[float, float], n: float) -> float:
    """cost(M) * (n / M) ** slope(S -> M) (the slope floored at linear, see work_slope)."""
    return pair[1] * (n / SIZES["M"]) ** work_slope(pair)


def _h(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def _gb(mb: float) -> str:
    return f"{mb / 1024:.0f} GB" if mb >= 10 * 1024 else f"{mb / 1024:.1f} GB"


def rows(m: dict[str, Any]) -> list[list[str]]:
    """One row per step: what it is, the slope, then workers / memory per worker / hours per size."""
    out = []
    load = [(grow(m["load_s"], n), m["load_mb"][1] / SIZES["M"] * n) for n in TARGETS]
    out.append(
        ["load + validate + split (driver, 1 process)", f"{slope(m['load_s']):.2f} (time)"]
        + [f"1 / {_gb(mb)} / {_h(s)}" for s, mb in load]
    )
    als = []
    for n, (_, data_mb) in zip(TARGETS, load, strict=True):
        vec_mb = (n / 10 + n / 50) * DIM * FLOAT * 2 / 2**20  # factors + one working copy
        als.append((ALS_ITERATIONS * grow(m["als_iter_s"], n), data_mb + vec_mb))
    out.append(
        [
            f"ALS, {ALS_ITERATIONS} iterations (one machine, all its cores; not on Ray)",
            f"{work_slope(m['als_iter_s']):.2f} (measured {slope(m['als_iter_s']):.2f}, floored at linear)",
        ]
        + [f"1 machine / {_gb(mb)} / {_h(s)}" for s, mb in als]
    )
    lg = []
    share = m["propagation_share"]
    for n, (_, data_mb) in zip(TARGETS, load, strict=True):
        w = WORKERS["lightgcn"][n]
        params = (n / 10 + n / 50) * DIM * FLOAT
        comm = m["lightgcn_steps"] * 2 * params * (w - 1) / w / NETWORK_BYTES_S  # ring all-reduce per epoch
        mem_mb = data_mb + 4 * params / 2**20  # data, parameters, gradients, Adam's two moments
        one = m["lightgcn_m_epoch_cpu_s"] * (n / SIZES["M"]) ** work_slope(m["als_iter_s"])
        lg.append((w, mem_mb, one * (share + (1 - share) / w) + comm, comm))
    out.append(
        [
            "LightGCN (shared propagation), one epoch, Ray Train data-parallel "
            f"(the propagation, {share:.0%} of an epoch, runs in full on every worker)",
            f"{work_slope(m['als_iter_s']):.2f} (ALS's)",
        ]
        + [f"{w} / {_gb(mb)} / {_h(s)} (all-reduce {_h(c)})" for w, mb, s, c in lg]
    )
    ev = []
    for n in TARGETS:
        w = WORKERS["eval"][n]
        cpu = m["eval_s_per_user_item"] * TEST_USER_SHARE * n / 10 * n / 50
        ev.append((w, cpu / w, n / 50 * DIM * FLOAT / 2**20 + 2048))
    out.append(
        ["full-ranking evaluation, every test user, Ray tasks", "2 (users x items)"]
        + [f"{w} / {_gb(mb)} / {_h(s)}" for w, s, mb in ev]
    )
    sample = [m["eval_s_per_user_item"] * 10_000 * n / 50 for n in TARGETS]
    out.append(
        ["evaluation of a 10,000-user sample (`--sample-users`), 1 process", "1 (items)"]
        + [
            f"1 / {_gb(n / 50 * DIM * FLOAT / 2**20 + 2048)} / {_h(s)}"
            for n, s in zip(TARGETS, sample, strict=True)
        ]
    )
    build_s, build_items = m["hnsw_build_s"]
    srv = []
    for n in TARGETS:
        items = n / 50
        secs = build_s * items / build_items * math.log(items) / math.log(build_items)
        srv.append((items * m["index_bytes_per_item"] / 2**20, secs))
    out.append(
        ["serving: HNSW index of the items, per server process", "1 (n log n build)"]
        + [f"each process / {_gb(mb)} index / build {_h(s)}" for mb, s in srv]
    )
    return out


def markdown() -> str:
    lines = [
        "| step | slope S->M | 10^8 interactions: workers / memory per worker / hours "
        "| 10^9 interactions: workers / memory per worker / hours |",
        "|---|---|---|---|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows(measured())]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")

"""Markdown table and log-log plot of benchmarks/results/scale.json (written by benchmarks/scale.py).

Why apart from the driver: the report is re-rendered after every size (and with ``scale.py --render``)
from whatever the JSON holds, so a partial run still gives a readable page.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SIZES = ("S", "M", "L")
INTERACTIONS = {"S": 1_000_000, "M": 10_000_000, "L": 50_000_000}
TARGETS_M = [
    ("load + validate + split", "load", "load_s", 60.0),
    ("load peak memory (MB)", "load", "peak_rss_mb", 6 * 1024.0),
    ("lightgcn one epoch (s)", "fit:lightgcn", "mean_epoch_seconds", 180.0),
    ("graphmm one epoch (s)", "fit:graphmm", "mean_epoch_seconds", 180.0),
    ("itemknn fit (s)", "fit:itemknn", "fit_s", 180.0),
    ("als 15 iterations (s, epoch seconds summed)", "fit:als", "sum_epoch_seconds", 180.0),
    ("full-ranking evaluation of every test user, als (s)", "fit:als", "eval_s", 300.0),
    ("serve start-up, cold, both workers (s)", "serve", "startup_cold_s", 60.0),
    ("serve start-up, warm index cache (s)", "serve", "startup_warm_s", 60.0),
    ("/recommend p99 at 200 req/s (ms)", "serve", "p99_ms", 50.0),
]


def fit_cost(rec: dict[str, Any]) -> float | None:
    """Seconds per epoch for epoch-trained models, whole fit seconds for the others."""
    if rec.get("status") != "ok" and not (rec.get("status") == "timeout" and rec.get("fit_s") is not None):
        return None  # a step killed during its evaluation still measured its fit
    if rec.get("mean_epoch_seconds"):
        return float(rec["mean_epoch_seconds"])
    return float(rec["fit_s"]) if rec.get("fit_s") is not None else None


def value(rec: dict[str, Any] | None, key: str) -> float | None:
    if rec is None:
        return None
    if key == "sum_epoch_seconds":
        ep = rec.get("epoch_seconds")
        return float(sum(ep)) if ep else None
    v = rec.get(key)
    return float(v) if isinstance(v, (int, float)) else None


def slope(a: float | None, b: float | None, na: int, nb: int) -> float | None:
    if not a or not b or a <= 0 or b <= 0:
        return None
    return math.log(b / a) / math.log(nb / na)


def fmt(v: Any, nd: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def _la(rec: dict[str, Any]) -> str:
    a, b = rec.get("loadavg_before"), rec.get("loadavg_after")
    first = lambda s: str(s).strip("[]").split(",")[0].strip(" '") if s else "?"  # noqa: E731
    return f"{first(a)} -> {first(b)}"


def step_table(run: dict[str, Any]) -> list[str]:
    rows = [
        "| step | status | fit s | s / epoch | epochs | eval s (users) | R@20 | peak MB | load 1-min | code |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in run.get("steps", {}).items():
        if name == "serve" or name.startswith("engine"):
            continue
        sampled = " sample" if r.get("eval_sampled") else ""
        ev = (
            f"{fmt(r.get('eval_s'))} ({r.get('eval_users', '-')}{sampled})"
            if r.get("eval_s") is not None
            else "-"
        )
        note = r.get("message", "")
        status = r.get("status", "?") + (f": {note[:140]}" if note and r.get("status") != "ok" else "")
        dirty = " +dirty" if r.get("code_dirty") else ""
        rows.append(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {}{} |".format(
                name,
                status.replace("|", "/").replace("\n", " "),
                fmt(r.get("fit_s") or r.get("load_s") or (r.get("wall_s") if name == "synth" else None)),
                fmt(r.get("mean_epoch_seconds")),
                fmt(r.get("epochs_run")),
                ev,
                fmt((r.get("metrics") or {}).get("recall@20"), 4),
                fmt(r.get("peak_rss_mb"), 0),
                _la(r),
                str(r.get("code_commit", ""))[:8],
                dirty,
            )
        )
    return rows


def engine_rows(res: dict[str, Any]) -> list[str]:
    """Serving start-up per model: one in-process Engine on the model's run directory."""
    rows = [
        "| label | size | model | start-up s | load run / catalogue / index / score stats s | index "
        "| recall@10 | recommend ms (in process, mean of 1,000 users) | peak MB | load 1-min |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, runs in res.get("runs", {}).items():
        for size in SIZES:
            for name, r in runs.get(size, {}).get("steps", {}).items():
                if not name.startswith("engine"):
                    continue
                model = name.split(":", 1)[1] if ":" in name else runs[size].get("serve_model", "als")
                t = r.get("timings") or {}
                parts = " / ".join(
                    fmt(t.get(k)) for k in ("load_run_s", "catalogue_s", "index_s", "score_stats_s")
                )
                idx = r.get("index") or {}
                kind = f"{idx.get('kind', 'none')}" + (f" ({idx['cache']})" if idx.get("cache") else "")
                rows.append(
                    f"| {label} | {size} | {model} | {fmt(r.get('engine_s'))} ({r.get('status')}) | {parts} | "
                    f"{kind} | {fmt(idx.get('recall_at_10'), 3)} | {fmt(r.get('recommend_ms_in_process'), 2)} | "
                    f"{fmt(r.get('peak_rss_mb'), 0)} | {_la(r)} |"
                )
    return rows


def serve_rows(res: dict[str, Any]) -> list[str]:
    rows = [
        "| label | size | start-up cold s | start-up warm s | p50 ms | p99 ms | achieved req/s | errors "
        "| index (build s, recall@10) | server CPU ms per request | load generator CPU (share of a core) "
        "| server peak RSS MB | load 1-min |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, runs in res.get("runs", {}).items():
        for size in SIZES:
            st = runs.get(size, {}).get("steps", {})
            s, e = st.get("serve"), st.get("engine")
            if s is None and e is None:
                continue
            s = s or {}
            lat = (s.get("load") or {}).get("latency", {})
            idx = (e or {}).get("index") or {}
            rows.append(
                f"| {label} | {size} | {fmt(s.get('startup_cold_s'))} | {fmt(s.get('startup_warm_s'))} | "
                f"{fmt(lat.get('p50_ms'))} | {fmt(lat.get('p99_ms'))} | "
                f"{fmt((s.get('load') or {}).get('achieved_rate'))} | {fmt((s.get('load') or {}).get('errors'))} | "
                f"{idx.get('kind', '-')} ({fmt(idx.get('build_seconds'))}, {fmt(idx.get('recall_at_10'), 3)}) | "
                f"{fmt(s.get('server_cpu_ms_per_request'), 2)} | "
                f"{fmt((s.get('load') or {}).get('client_cpu_share_of_one_core'), 3)} | "
                f"{fmt(s.get('serving_peak_tree_rss_mb'), 0)} | {_la(s) if s else '-'} |"
            )
    return rows


def series(runs: dict[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    """{cost kind: {model: {size: seconds}}} for fit (per epoch or whole fit) and evaluation."""
    out: dict[str, dict[str, dict[str, float]]] = {"fit": {}, "eval": {}}
    for size in SIZES:
        for name, r in runs.get(size, {}).get("steps", {}).items():
            if not name.startswith("fit:"):
                continue
            m = name[4:]
            c = fit_cost(r)
            if c is not None:
                out["fit"].setdefault(m, {})[size] = c
            if r.get("status") == "ok" and r.get("eval_s") and not r.get("eval_sampled"):
                out["eval"].setdefault(m, {})[size] = float(r["eval_s"])
        ld = runs.get(size, {}).get("steps", {}).get("load")
        if ld and ld.get("status") == "ok":
            out["fit"].setdefault("(load)", {})[size] = float(ld["load_s"])
    return out


def slope_rows(runs: dict[str, Any]) -> list[str]:
    rows = ["| cost | model | S | M | L | slope S->M | slope M->L |", "|---|---|---|---|---|---|---|"]
    for kind, per in series(runs).items():
        for m, v in sorted(per.items()):
            sm = slope(v.get("S"), v.get("M"), INTERACTIONS["S"], INTERACTIONS["M"])
            ml = slope(v.get("M"), v.get("L"), INTERACTIONS["M"], INTERACTIONS["L"])
            rows.append(
                f"| {kind} | {m} | {fmt(v.get('S'))} | {fmt(v.get('M'))} | {fmt(v.get('L'))} | "
                f"{fmt(sm, 2)} | {fmt(ml, 2)} |"
            )
    return rows


def plot(runs: dict[str, Any], png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, (kind, per) in zip(axes, series(runs).items(), strict=True):
        for m, v in sorted(per.items()):
            xs = [INTERACTIONS[s] for s in SIZES if s in v]
            ys = [v[s] for s in SIZES if s in v]
            if not xs:
                continue
            sm = slope(v.get("S"), v.get("M"), INTERACTIONS["S"], INTERACTIONS["M"])
            ml = slope(v.get("M"), v.get("L"), INTERACTIONS["M"], INTERACTIONS["L"])
            lab = m + (f" (S->M {sm:.2f}" if sm is not None else "") + (f", M->L {ml:.2f}" if ml else "")
            lab += ")" if sm is not None else ""
            ax.plot(xs, ys, marker="o", label=lab)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("interactions")
        ax.set_ylabel("seconds" + (" (per epoch, or whole fit)" if kind == "fit" else " (every test user)"))
        ax.set_title(f"{kind} cost; slope = d log t / d log n")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


GRAPH_TIMING = ROOT / "benchmarks" / "results" / "graph_linear.json"


def graph_epoch(step_name: str) -> tuple[float | None, str, str]:
    """(seconds, load, source) of the fastest shared-propagation epoch at M in graph_linear.json.

    Why: ``benchmarks/graph_linear.py --part timing`` times one epoch of lightgcn/graphmm at M with
    1 and 2 threads (no evaluation), which is what the "one epoch" target asks; scale.py's own fit
    rows (2 epochs + evaluation) are used when they exist.
    """
    if not GRAPH_TIMING.exists():
        return None, "", ""
    model = step_name.split(":", 1)[1]
    timing = json.loads(GRAPH_TIMING.read_text()).get("timing", {})
    rows = [(k, r) for k, r in timing.items() if k.startswith(f"M/{model}/new-")]
    if not rows:
        return None, "", ""
    key, r = min(rows, key=lambda kr: float(kr[1]["epoch_seconds"]))
    la = f"{r['loadavg_start'][0]:.2f} -> {r['loadavg_end'][0]:.2f}"
    return float(r["epoch_seconds"]), la, f"graph_linear.json `{key}`"


def _target_load(rec: dict[str, Any] | None) -> str:
    if rec is None:
        return ""
    if rec.get("loadavg_before_load"):  # serving: the load test itself
        return f"{_first(rec['loadavg_before_load'])} -> {_first(rec.get('loadavg_after_load'))}"
    return _la(rec)


def _first(la: Any) -> str:
    if isinstance(la, str):
        return la.strip("[]").split(",")[0].strip(" '")
    return f"{la[0]:.2f}" if la else "-"


def target_rows(runs: dict[str, Any]) -> list[str]:
    st = runs.get("M", {}).get("steps", {})
    rows = [
        "| target (M size) | limit | measured | met | load 1-min | source |",
        "|---|---|---|---|---|---|",
    ]
    for what, step_name, key, limit in TARGETS_M:
        rec = st.get(step_name)
        v, la, src = value(rec, key), _target_load(rec), f"scale.json `{step_name}`"
        if v is None and step_name in ("fit:lightgcn", "fit:graphmm"):
            v, la, src = graph_epoch(step_name)
        rows.append(_target_row(what, limit, v, la, src))
        if rec is not None and step_name in ("fit:lightgcn", "fit:graphmm"):
            # scale.py trains on one thread (the model default); the epoch alone, on both cores:
            g, gla, gsrc = graph_epoch(step_name)
            rows.append(_target_row(what.replace("(s)", "(s, fastest of 1-2 threads)"), limit, g, gla, gsrc))
    return rows


def _target_row(what: str, limit: float, v: float | None, la: str, src: str) -> str:
    met = "-" if v is None else ("yes" if v < limit else "**no**")
    la, src = (la, src) if v is not None else ("", "")
    return f"| {what} | < {limit:g} | {fmt(v)} | {met} | {la} | {src} |"


def render(json_path: Path | None = None, out_dir: Path | None = None) -> None:
    out_dir = out_dir or ROOT / "benchmarks" / "results"
    json_path = json_path or out_dir / "scale.json"
    res = json.loads(json_path.read_text())
    runs_all = res.get("runs", {})
    lines = [
        "# Scale benchmark (issue 15 item 2)",
        "",
        "Written by `benchmarks/scale.py` from `scale.json`; plan `benchmarks/plans/scale.toml`. Data: "
        "`modalrec synth --modalities image:64 --seed 0` (power-law popularity, 20 taste clusters), per-user "
        "random 8:1:1 split (seed 2024). Every step is its own process: *peak MB* is that process's "
        "`ru_maxrss` (load + fit + evaluation for a model row). *eval* = full ranking of every test user "
        "(train + valid masked), Recall@20 = hits / #test items. Per-epoch rows: a fixed number of epochs "
        "with one validation on 10,000 sampled validation users; *s / epoch* excludes validation, *fit s* "
        "includes it. *load 1-min* is `/proc/loadavg` before -> after the step: this is a 2-core machine "
        "shared with other jobs, so rows with a load above 2 ran slower than on an idle machine (each "
        "row's code commit says which code ran).",
        "",
    ]
    for label in sorted(runs_all, key=lambda x: (x != "final", x)):
        runs = runs_all[label]
        tag = (
            " (today's code before issue 15's scale work: a git archive snapshot)"
            if label == "before"
            else ""
        )
        lines += [f"## {label}{tag}", ""]
        for size in SIZES:
            if size not in runs:
                continue
            r = runs[size]
            lines += [
                f"### {label} / {size}",
                "",
                f"plan commit `{str(r.get('plan_commit', ''))[:10]}`, started {r.get('started')}, "
                f"niceness {r.get('nice')}",
                "",
                *step_table(r),
                "",
            ]
        lines += [f"### {label}: cost against size", "", *slope_rows(runs), ""]
        if "M" in runs:
            lines += [f"### {label}: issue 15 targets at M", "", *target_rows(runs), ""]
        png = out_dir / f"scale{'' if label == 'final' else '-' + label}.png"
        plot(runs, png, f"modalrec scale benchmark ({label}); 2-core machine")
        lines += [f"![{label} cost against size]({png.name})", ""]
    lines += ["## Serving (`modalrec serve RUN --workers 2`, HNSW index, open-loop GET /recommend)", ""]
    lines += [*serve_rows(res), ""]
    lines += ["## Serving start-up per model (in-process `Engine`, no index cache unless named)", ""]
    lines += [*engine_rows(res), ""]
    (out_dir / "scale.md").write_text("\n".join(lines) + "\n")

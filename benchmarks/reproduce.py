"""Re-run committed benchmark rows with the current code and compare them with the committed numbers.

Why: a refactor that claims "behaviour unchanged" (issue 14) must show it on the published numbers,
not only in unit tests. The rows, commands and fields are read from ``benchmarks/plans/reproduce.toml``
(committed before the first run); each committed benchmark script runs into a scratch folder seeded with
a copy of the committed results (the scripts merge into their JSON), so ``benchmarks/results`` is not
touched until the comparison is written to ``benchmarks/results/reproduce.{json,md}``.

    python benchmarks/reproduce.py                      # every part of the plan
    python benchmarks/reproduce.py --parts baselines multimodal
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

from modalrec.core.io import atomic_write_json, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PLAN = ROOT / "benchmarks" / "plans" / "reproduce.toml"


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def _pick(obj: Any, dotted: str) -> Any:
    """``runs.test`` -> [run["test"] for run in obj["runs"]]."""
    head, _, rest = dotted.partition(".")
    value = obj.get(head) if isinstance(obj, dict) else None
    if rest and isinstance(value, list):
        return [_pick(v, rest) for v in value]
    return _pick(value, rest) if rest else value


def _diff(a: Any, b: Any, path: str = "") -> list[str]:
    """Every leaf where the committed value ``a`` and the new value ``b`` differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _diff(a.get(k), b.get(k), f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path.lstrip('.')}: committed {a!r}, now {b!r}"]


def _run(command: str, scratch: Path) -> float:
    """Run one committed benchmark command (shell-quoted in the plan) into ``scratch``."""
    argv = [sys.executable if a == "python" else a for a in shlex.split(command.format(scratch=scratch))]
    env = {
        **os.environ,
        "MODALREC_DATA": os.environ.get("MODALREC_DATA", str(ROOT.parent / "shared" / "data")),
    }
    t0 = time.perf_counter()
    subprocess.run(argv, cwd=ROOT, check=True, env=env)
    return time.perf_counter() - t0


def baselines_rows(plan: dict[str, Any], new: dict[str, Any], old: dict[str, Any]) -> list[dict[str, Any]]:
    ds = plan["dataset"]
    out = []
    for name in plan["rows"]:
        pick = [
            next(
                (r for r in d["datasets"][ds]["rows"] if r["library"] == "modalrec" and r["model"] == name),
                {},
            )
            for d in (old, new)
        ]
        diffs = [d for f in plan["fields"] for d in _diff(pick[0].get(f), pick[1].get(f), f)]
        row = {"part": "baselines", "row": f"{ds} {name}", "diffs": diffs, "recall@20": _r20(pick)}
        out.append({**row, "absent": not pick[0]})
    return out


def multimodal_rows(plan: dict[str, Any], new: dict[str, Any], old: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for sec in plan["sections"]:
        for label in plan["rows"]:
            pick = [
                next((r for r in d["sections"][sec]["rows"] if r["label"] == label), {}) for d in (old, new)
            ]
            diffs = [d for f in plan["fields"] for d in _diff(_pick(pick[0], f), _pick(pick[1], f), f)]
            r20 = [p.get("agg", {}).get("recall@20", {}).get("mean") for p in pick]
            row = {"part": "multimodal", "row": f"{sec} {label}", "diffs": diffs, "recall@20": r20}
            out.append({**row, "absent": not pick[0]})
    return out


def alignment_rows(plan: dict[str, Any], new: dict[str, Any], old: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for r_old in old["align"]["rows"]:
        key = (r_old["aligner"], r_old["query"])
        r_new = next((r for r in new["align"]["rows"] if (r["aligner"], r["query"]) == key), {})
        strict = any(s in r_old["aligner"] for s in plan["row_contains"])
        diffs = [d for f in plan["fields"] for d in _diff(r_old.get(f), r_new.get(f), f)]
        row = f"{key[0]} ({key[1]} query)"
        out.append(
            {
                "part": "alignment",
                "row": row,
                "strict": strict,
                "diffs": diffs,
                "recall@10": [r_old.get("recall@10"), r_new.get("recall@10")],
            }
        )
    return out


def _r20(pick: list[dict[str, Any]]) -> list[Any]:
    return [p.get("test", {}).get("recall@20") for p in pick]


PARTS = {
    "baselines": ("baselines.json", baselines_rows),
    "multimodal": ("multimodal.json", multimodal_rows),
    "alignment": ("alignment.json", alignment_rows),
}


def _is_timing(diff: str) -> bool:
    """Wall-clock fields (``*seconds*``) cannot reproduce; they are listed, not counted."""
    return "seconds" in diff.split(":", 1)[0]


def _result(row: dict[str, Any]) -> str:
    if row.get("absent"):
        return "not in the committed results (the plan names it; nothing to compare)"
    real = [d for d in row["diffs"] if not _is_timing(d)]
    timing = [d for d in row["diffs"] if _is_timing(d)]
    if real:
        return "DIFFERS: " + "; ".join(real[:3]) + (f" (+{len(real) - 3} more)" if len(real) > 3 else "")
    return "identical" + (" (wall time differs: " + "; ".join(timing) + ")" if timing else "")


def control(part: str, path: Path, report: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
    """Compare a control run (the same benchmark run by the pre-refactor code on this machine today)
    with the committed results the same way, and count the rows where it differs exactly as the new
    code does: a difference shared by both comes from the machine or its feature cache, not the code."""
    fname, compare = PARTS[part]
    committed = json.loads((RESULTS / fname).read_text())
    rows = compare(plan[part], json.loads(path.read_text()), committed)
    new = {r["row"]: r["diffs"] for r in report["rows"] if r["part"] == part}
    same = [r["row"] for r in rows if new.get(r["row"]) == r["diffs"]]
    return {
        "rows": len(rows),
        "same_as_new_code": len(same),
        "differing": [r["row"] for r in rows if r["row"] not in same],
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Reproduction of committed rows after the architecture refactor",
        "",
        f"Code: commit {report['commit']}; plan {PLAN.relative_to(ROOT)} (commit {report['plan_commit']}).",
        "Each committed benchmark script re-ran its own rows into a scratch folder; every field named in the",
        "plan is compared with the committed value exactly (the JSON's own precision); wall-clock fields",
        "(`*seconds*`) are listed but cannot reproduce and do not count.",
        "",
        "| part | row | strict | result |",
        "|---|---|---|---|",
    ]
    for r in report["rows"]:
        res = _result(r)
        lines.append(f"| {r['part']} | {r['row']} | {'yes' if r.get('strict', True) else 'no'} | {res} |")
    lines += [
        "",
        "Wall time per part (s): " + ", ".join(f"{k} {v:.0f}" for k, v in report["seconds"].items()),
    ]
    for part, c in report.get("controls", {}).items():
        lines += [
            "",
            f"Control ({part}): {c['command']}. Rows where the pre-refactor code today differs from the "
            f"committed numbers exactly as the new code does: {c['same_as_new_code']} of {c['rows']}"
            + (f" (not: {', '.join(c['differing'])})" if c["differing"] else "")
            + ". Those differences come from this machine's freshly encoded features, not from the refactor.",
        ]
    strict = [r for r in report["rows"] if r.get("strict", True) and not r.get("absent")]
    same = sum(not any(not _is_timing(d) for d in r["diffs"]) for r in strict)
    lines += ["", f"Strict rows identical: {same} of {len(strict)}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", nargs="+", default=list(PARTS), choices=list(PARTS))
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--render", action="store_true", help="only rewrite reproduce.md from reproduce.json")
    ap.add_argument(
        "--control",
        nargs=3,
        metavar=("PART", "JSON", "COMMAND"),
        help="record a control run of PART (its results JSON and the command that made it) and re-render",
    )
    args = ap.parse_args()
    if args.control:
        part, path, command = args.control
        report = json.loads((args.out / "reproduce.json").read_text())
        plan = tomllib.loads(PLAN.read_text())
        report.setdefault("controls", {})[part] = {
            **control(part, Path(path), report, plan),
            "command": command,
        }
        atomic_write_json(args.out / "reproduce.json", report)
        args.render = True
    if args.render:
        atomic_write_text(
            args.out / "reproduce.md", markdown(json.loads((args.out / "reproduce.json").read_text()))
        )
        return
    plan = tomllib.loads(PLAN.read_text())
    previous = args.out / "reproduce.json"
    report = json.loads(previous.read_text()) if previous.exists() else {"rows": [], "seconds": {}}
    for part in args.parts:
        fname, compare = PARTS[part]
        with tempfile.TemporaryDirectory(prefix=f"reproduce-{part}-") as tmp:
            scratch = Path(tmp)
            shutil.copy(RESULTS / fname, scratch / fname)
            report["seconds"][part] = _run(plan[part]["command"], scratch)
            new = json.loads((scratch / fname).read_text())
        old = json.loads((RESULTS / fname).read_text())
        report["rows"] = [r for r in report["rows"] if r["part"] != part] + compare(plan[part], new, old)
        report.setdefault("part_commits", {})[part] = _git("rev-parse", "--short", "HEAD")
    report["commit"] = _git("rev-parse", "--short", "HEAD")
    report["plan_commit"] = _git("log", "-1", "--format=%h", "--", str(PLAN))
    report["dirty"] = bool(_git("status", "--porcelain", "--", "src"))
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "reproduce.json", report)
    atomic_write_text(args.out / "reproduce.md", markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()

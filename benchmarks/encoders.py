"""Encoder throughput against the bare models, and cold vs warm cache on ML-100K.

Protocol "ML-100K raw pipeline" (../shared/data/ml100k_tmdb_posters): text = title + genres +
overview (1,682 items), image = poster (1,663 JPEGs read from posters.zip).

* Text: ``encode_dataset`` with the MiniLM encoder vs ``SentenceTransformer.encode(texts,
  batch_size=64, normalize_embeddings=True)`` on the same texts.
* Images: ``encode_dataset`` with EfficientNet-Lite0 (224 px) vs the obvious loop: read each poster,
  decode with Pillow, crop/resize/normalise, stack 32 and run ``extract_features`` + mean pooling.
* Both sides get a model that is already loaded (load time is reported separately). The catalogue
  is cut into ``--chunks`` slices and the two sides alternate on each slice (ABBA order), so a
  change in the shared machine's load hits both alike.
* Cache: the modalrec slices fill one cache from empty (cold); then one call over the whole
  catalogue with that cache is the warm run.
* Audio: seconds of audio encoded per wall-clock second, log-mel statistics and YAMNet, on the
  demo catalogue's synthesised 1.5 s clips.

The protocol (data set, items, encoders, batch sizes, threads, slices, repetitions) is read at run time
from the committed plan ``benchmarks/plans/encoders.toml``; the values this script keeps as code are
checked against it (a mismatch stops the run), and the results record the plan's commit.

Usage: ``python benchmarks/encoders.py [--limit N] [--chunks N] [--skip SECTION ...]``; results go to
``benchmarks/results/encoders.{json,md}`` (``--limit`` / ``--chunks`` / ``--audio-items`` away from the
plan's values are recorded as off plan).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from plan import code_commit, load_plan
from plan import plan_line as plan_provenance

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"
PLAN_NAME = "encoders"
PLAN_PATH = "benchmarks/plans/encoders.toml"
SECTIONS = ("text", "image", "audio")

#: Protocol values this script keeps as code (the interleaving loop, one pass, the encoder classes it
#: builds): checked against the plan before any timing, since reading them from the plan would mean
#: rewriting the measurement itself.
FIXED: dict[tuple[str, str], Any] = {
    ("data", "protocol"): "ML-100K raw pipeline",
    ("timing", "order"): "ABBA",
    ("timing", "repetitions"): 1,
    ("text", "encoder"): "minilm-l6-v2",
    ("image", "encoder"): "efficientnet-lite0",
}


def check_plan(p: dict[str, Any]) -> None:
    """Stop (SystemExit) when the plan states a protocol value the script does not run."""
    for (section, key), value in FIXED.items():
        got = p.get(section, {}).get(key)
        if got != value:
            raise SystemExit(
                f"{PLAN_PATH}: [{section}] {key} = {got!r}, but benchmarks/encoders.py runs {value!r}: "
                "make the script and the plan agree (and commit the plan) before the run"
            )
    unknown = [s for s in p.get("sections", []) if s not in SECTIONS]
    if unknown or not p.get("sections"):
        raise SystemExit(f"{PLAN_PATH}: sections {p.get('sections')!r}; this script runs {list(SECTIONS)}")
    audio = [e for e in p["audio"]["encoders"] if e not in ("logmel", "yamnet")]
    if audio:
        raise SystemExit(f"{PLAN_PATH}: [audio] encoders {audio} unknown to this script (logmel, yamnet)")


def timed(fn: Any) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def side_by_side(
    items: Any,
    modality: str,
    cfg: dict[str, Any],
    bare_chunk: Any,
    chunks: int,
    work: Path,
    opts: dict[str, Any],
) -> dict[str, Any]:
    """Alternate bare and modalrec runs over ``chunks`` slices of the catalogue (ABBA order).

    Why interleaved: the machine is shared, and its load drifts over minutes. Timing both sides on
    the same slice back to back, alternating which goes first, exposes them to the same load. The
    modalrec side shares one cache directory across slices (each slice is cold: its items were
    never seen); afterwards one call over the whole catalogue measures the warm cache. ``opts``: the
    plan's ``encode_dataset`` options ([modalrec]: backend, workers, shard_items).
    """
    from modalrec.encoders import encode_dataset

    cache = work / f"{modality}-cache"
    shutil.rmtree(cache, ignore_errors=True)
    n = len(items)
    bounds = np.linspace(0, n, chunks + 1).round().astype(int)
    bare_s = ours_s = 0.0
    for c in range(chunks):
        part = items.slice(int(bounds[c]), int(bounds[c + 1] - bounds[c]))
        order = ("bare", "ours") if c % 2 == 0 else ("ours", "bare")
        for side in order:
            if side == "bare":
                bare_s += timed(lambda part=part: bare_chunk(part))[0]
            else:
                ours_s += timed(
                    lambda part=part: encode_dataset(
                        part, {modality: cfg}, None, cache_dir=cache, progress=False, **opts
                    )
                )[0]
    warm_s, warm = timed(
        lambda: encode_dataset(
            items, {modality: cfg}, work / f"{modality}-out", cache_dir=cache, progress=False, **opts
        )
    )
    rep = warm.report.modalities[modality]
    return {
        "items": n,
        "chunks": chunks,
        "bare_s": round(bare_s, 2),
        "modalrec_cold_s": round(ours_s, 2),
        "bare_items_per_s": round(n / bare_s, 2),
        "modalrec_items_per_s": round(n / ours_s, 2),
        "ratio_vs_bare": round(bare_s / ours_s, 3),
        "warm_s": round(warm_s, 3),
        "warm_over_cold": round(warm_s / ours_s, 4),
        "warm_encoded": rep.encoded,
        "warm_cached": rep.cached,
        "present": rep.present,
        "missing_by_reason": rep.missing_by_reason,
        "features": warm.features[modality],
    }


def bench_text(ds: Any, p: dict[str, Any], chunks: int, work: Path) -> dict[str, Any]:
    """``p``: the whole plan (its [text] and [modalrec] tables are used)."""
    import polars as pl

    from modalrec.encoders.text import MiniLMTextEncoder

    fields = list(p["text"]["fields"])
    bs, n_check = int(p["text"]["batch_size"]), int(p["text"]["agreement_items"])
    enc = MiniLMTextEncoder(batch_size=bs)
    load_s, model = timed(lambda: enc.model)
    # the exact strings modalrec builds (fields joined with " | "), handed to the bare model as well
    items = ds.items.select(["item_id", *fields])
    texts = [
        " | ".join(p.strip() for p in row if p and p.strip())
        for row in zip(*[items[c].cast(pl.Utf8).fill_null("").to_list() for c in fields], strict=True)
    ]
    items = items.with_columns(pl.Series("_text", texts))
    model.encode(texts[:bs], batch_size=bs)  # warm-up (allocations, lazy init)

    def bare(part: Any) -> Any:
        return model.encode(
            part["_text"].to_list(), batch_size=bs, normalize_embeddings=True, show_progress_bar=False
        )

    cfg = {"encoder": enc, "fields": fields}
    res = side_by_side(items, "text", cfg, bare, chunks, work, dict(p["modalrec"]))
    feats = res.pop("features")
    ref = bare(items.head(n_check))
    res["max_abs_diff_vs_bare"] = float(np.abs(feats[:n_check] - ref).max())
    res["model_load_s"] = round(load_s, 2)
    res["unique_texts"] = len(set(texts))
    return res


def bench_images(ds: Any, p: dict[str, Any], chunks: int, work: Path) -> dict[str, Any]:
    """``p``: the whole plan (its [image] and [modalrec] tables are used)."""
    import torch

    from modalrec.data.media import read_media_bytes
    from modalrec.encoders.image import EfficientNetImageEncoder, decode_image, preprocess

    q = p["image"]
    col, size, resize, bs = str(q["column"]), int(q["image_size"]), str(q["resize"]), int(q["batch_size"])
    items = ds.items.select(["item_id", col]).filter(ds.items[col].is_not_null())
    enc = EfficientNetImageEncoder(image_size=size, resize=resize, batch_size=bs)
    load_s, model = timed(lambda: enc.model)
    with torch.inference_mode():
        model.extract_features(torch.zeros(2, 3, size, size))

    def bare(part: Any) -> Any:
        refs = part[col].to_list()
        out = []
        with torch.inference_mode():
            for s in range(0, len(refs), bs):
                batch = [
                    preprocess(decode_image(read_media_bytes(r)), size, resize) for r in refs[s : s + bs]
                ]
                out.append(model.extract_features(torch.from_numpy(np.stack(batch))).mean(dim=(2, 3)).numpy())
        return np.concatenate(out)

    cfg = {"encoder": enc, "column": col}
    res = side_by_side(items, "image", cfg, bare, chunks, work, dict(p["modalrec"]))
    feats = res.pop("features")
    n_check = int(q["agreement_items"])
    res["max_abs_diff_vs_bare"] = float(np.abs(feats[:n_check] - bare(items.head(n_check))).max())
    res["image_size"] = size
    res["model_load_s"] = round(load_s, 2)
    res["catalogue_items"] = ds.n_items
    return res


def bench_audio(work: Path, p: dict[str, Any], n_items: int) -> dict[str, Any]:
    """``p``: the whole plan (its [audio] and [modalrec] tables are used); ``n_items`` demo items."""
    from modalrec.data.demo import make_demo
    from modalrec.encoders import encode_dataset
    from modalrec.encoders.audio import LogMelAudioEncoder, YamnetAudioEncoder

    q = p["audio"]
    demo = dict(q["demo"]) | {"n_items": n_items}
    ds = make_demo(work / "demo", **demo)
    assert ds.items is not None
    clips = [r for r in ds.items["audio"].to_list() if r]
    seconds_audio = float(demo["clip_seconds"]) * len(clips)
    out: dict[str, Any] = {"clips": len(clips), "audio_seconds": seconds_audio}
    cap = float(q["max_seconds"])
    make = {
        "logmel": lambda: LogMelAudioEncoder(max_seconds=cap),
        "yamnet": lambda: YamnetAudioEncoder(max_seconds=cap, num_threads=int(q["yamnet_threads"])),
    }
    opts = dict(p["modalrec"])
    for name in q["encoders"]:
        enc = make[name]()
        enc.encode([enc.load(clips[0])])  # load model / JIT outside the timing
        s, fs = timed(
            lambda enc=enc, name=name: encode_dataset(
                ds, {"audio": enc}, work / f"audio-{name}", progress=False, **opts
            )
        )
        out[name] = {
            "wall_s": round(s, 2),
            "audio_seconds_per_s": round(seconds_audio / s, 1),
            "clips_per_s": round(len(clips) / s, 1),
            "present": int(fs.masks["audio"].sum()),
        }
    return out


def plan_line(res: dict[str, Any]) -> str:
    """The results' provenance line: the plan commit the run read, or that it predates plans."""
    rec = res.get("plan")
    line = plan_provenance(rec, PLAN_NAME)
    if not rec:
        return line
    commit = str(rec.get("plan_commit") or "")
    kept = [
        f"{s} (plan {str(res[s].get('plan_commit'))[:8]})" if res[s].get("plan_commit") else f"{s} (no plan)"
        for s in SECTIONS
        if s in res and res[s].get("plan_commit") != (commit or None)
    ]
    if kept:
        line += ". Sections kept from an earlier run (--skip), not run under this commit: " + ", ".join(kept)
    off = res.get("off_plan") or {}
    if off:
        line += ". Off plan in this run: " + ", ".join(
            f"{k} {v['run']} (plan {v['plan']})" for k, v in off.items()
        )
    return line


def to_markdown(res: dict[str, Any]) -> str:
    t, i, a = res.get("text"), res.get("image"), res.get("audio")
    lines = [
        "# Encoder throughput (benchmarks/encoders.py)",
        "",
        f"Protocol: ML-100K raw pipeline (text = title + genres + overview; image = poster from posters.zip). "
        f"Machine: {res['machine']}. Load average at start / end: {res['loadavg_start']} / {res['loadavg_end']} "
        "(the machine is shared; absolute numbers move with its load, the ratios are measured side by side).",
        "",
        plan_line(res),
        "",
        "| modality | items | bare model items/s | modalrec items/s | modalrec / bare | cold s | warm s | warm / cold |",
        "|---|---|---|---|---|---|---|---|",
    ]
    image_label = f"image (EfficientNet-Lite0, {(i or {}).get('image_size', 224)} px)"
    for name, r in (("text (MiniLM-L6-v2)", t), (image_label, i)):
        if r:
            lines.append(
                f"| {name} | {r['items']} | {r['bare_items_per_s']} | {r['modalrec_items_per_s']} | "
                f"{r['ratio_vs_bare']:.1%} | {r['modalrec_cold_s']:.1f} | {r['warm_s']:.2f} | "
                f"{r['warm_over_cold']:.2%} |"
            )
    if a:
        lines += [
            "",
            f"Audio ({a['clips']} synthesised demo clips, {a['audio_seconds']:.0f} s of audio):",
            "",
            "| encoder | wall s | audio seconds / s | clips / s |",
            "|---|---|---|---|",
        ]
        for name in (n for n in ("logmel", "yamnet") if n in a):
            r = a[name]
            lines.append(f"| {name} | {r['wall_s']} | {r['audio_seconds_per_s']} | {r['clips_per_s']} |")
    lines += [
        "",
        "Bare = the model called directly on the same inputs (image decode done the obvious way: one "
        "poster after the other, then the batch forward). modalrec = `encode_dataset` from an empty cache, "
        "including content hashing, the thread-pool decoding that overlaps the forward pass, cache "
        "shards and the report. Warm = the same call again with the cache filled. Model load time is "
        "excluded from both sides and reported in the JSON.",
    ]
    return "\n".join(lines) + "\n"


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--limit", type=int, default=None, help="first N catalogue items only (quick check, off plan)"
    )
    ap.add_argument(
        "--chunks", type=int, default=None, help="interleaved bare/modalrec slices (default: the plan's)"
    )
    ap.add_argument("--audio-items", type=int, default=None, help="demo clips (default: the plan's)")
    ap.add_argument(
        "--skip", nargs="*", default=[], choices=list(SECTIONS), help="keep their previous results"
    )
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument(
        "--allow-uncommitted-plan", action="store_true", help="dry run with an edited plan (recorded as such)"
    )
    return ap.parse_args()


def off_plan(args: argparse.Namespace, p: dict[str, Any]) -> dict[str, Any]:
    """Command-line values that differ from the plan's: recorded in the results and shown with the plan line."""
    off: dict[str, Any] = {}
    if args.limit:
        off["limit"] = {"run": args.limit, "plan": "whole catalogue"}
    for key, planned in (("chunks", p["timing"]["chunks"]), ("audio_items", p["audio"]["demo"]["n_items"])):
        given = getattr(args, key)
        if given is not None and given != planned:
            off[key.replace("_", "-")] = {"run": given, "plan": planned}
    return off


def load_catalogue(p: dict[str, Any], limit: int | None) -> Any:
    """The plan's data set; without ``--limit``, its item counts must be the plan's (else SystemExit)."""
    import modalrec.data as mdata

    d = p["data"]
    ds = mdata.load(d["dataset"], root=SHARED)
    items = ds.items
    assert items is not None, "ML-100K has an item table"
    if limit:
        ds.items = items.head(limit)
        ds.item_ids = ds.item_ids[:limit]
        return ds
    counts = (len(items), int(items[p["image"]["column"]].is_not_null().sum()))
    if counts != (d["text_items"], d["image_items"]):
        raise SystemExit(
            f"{PLAN_PATH}: [data] plans {d['text_items']} items, {d['image_items']} with a poster; "
            f"the catalogue has {counts[0]}, {counts[1]}"
        )
    return ds


def run_sections(res: dict[str, Any], runs: dict[str, Any], skip: list[str], plan_commit: str) -> None:
    """Run each planned section not skipped, in the plan's order, stamping it with the plan commit."""
    for name, run in runs.items():
        if name in skip:
            continue
        load0 = [round(x, 2) for x in os.getloadavg()]
        res[name] = run()
        res[name]["plan_commit"] = plan_commit or None
        res[name]["run_at_utc"] = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
        res[name]["loadavg_before_after"] = [load0, [round(x, 2) for x in os.getloadavg()]]
        print(json.dumps(res[name]), flush=True)


def main() -> int:
    args = parse_args()
    plan = load_plan(PLAN_NAME, allow_uncommitted=args.allow_uncommitted_plan)
    p = plan.data
    check_plan(p)
    chunks = args.chunks if args.chunks is not None else int(p["timing"]["chunks"])
    audio_items = args.audio_items if args.audio_items is not None else int(p["audio"]["demo"]["n_items"])
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not (SHARED / p["data"]["directory"]).is_dir():
        print(f"{p['data']['directory']} not found under {SHARED}; nothing to benchmark", file=sys.stderr)
        return 1
    import torch

    if int(p["timing"]["torch_threads"]) > 0:  # 0: torch's default, as the plan states
        torch.set_num_threads(int(p["timing"]["torch_threads"]))
    ds = load_catalogue(p, args.limit)
    work = Path(tempfile.mkdtemp(prefix="modalrec-bench-enc-"))
    # Sections can be run one at a time (--skip) to keep each heavy job short: the results of the
    # sections not run this time are kept from the previous results file.
    previous = args.out / "encoders.json"
    old = json.loads(previous.read_text()) if previous.is_file() and not args.limit else {}
    res: dict[str, Any] = {
        "benchmark": "encoders",
        "protocol": "ML-100K raw pipeline: text = title + genres + overview, image = poster",
        "plan": plan.record(),
        "code_commit": code_commit(),
        "off_plan": off_plan(args, p),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), python {platform.python_version()}",
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "chunks": chunks,
        "limit": args.limit,
        "audio_items": audio_items,
    }
    res.update({k: old[k] for k in SECTIONS if k in old and k in args.skip})
    runners = {
        "text": lambda: bench_text(ds, p, chunks, work),
        "image": lambda: bench_images(ds, p, chunks, work),
        "audio": lambda: bench_audio(work, p, audio_items),
    }
    try:
        run_sections(res, {s: runners[s] for s in p["sections"]}, args.skip, plan.commit)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    res["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "encoders.json").write_text(json.dumps(res, indent=2) + "\n")
    (args.out / "encoders.md").write_text(to_markdown(res))
    print(to_markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

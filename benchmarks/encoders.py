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

Usage: ``python benchmarks/encoders.py [--limit N] [--chunks 8]``; results go to
``benchmarks/results/encoders.{json,md}``.
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

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"


def timed(fn: Any) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def side_by_side(
    items: Any, modality: str, cfg: dict[str, Any], bare_chunk: Any, chunks: int, work: Path
) -> dict[str, Any]:
    """Alternate bare and modalrec runs over ``chunks`` slices of the catalogue (ABBA order).

    Why interleaved: the machine is shared, and its load drifts over minutes. Timing both sides on
    the same slice back to back, alternating which goes first, exposes them to the same load. The
    modalrec side shares one cache directory across slices (each slice is cold: its items were
    never seen); afterwards one call over the whole catalogue measures the warm cache.
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
                        part, {modality: cfg}, None, cache_dir=cache, progress=False
                    )
                )[0]
    warm_s, warm = timed(
        lambda: encode_dataset(
            items, {modality: cfg}, work / f"{modality}-out", cache_dir=cache, progress=False
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


def bench_text(ds: Any, chunks: int, work: Path) -> dict[str, Any]:
    import polars as pl

    from modalrec.encoders.text import MiniLMTextEncoder

    fields = ["title", "genres", "overview"]
    enc = MiniLMTextEncoder()
    load_s, model = timed(lambda: enc.model)
    # the exact strings modalrec builds (fields joined with " | "), handed to the bare model as well
    items = ds.items.select(["item_id", *fields])
    texts = [
        " | ".join(p.strip() for p in row if p and p.strip())
        for row in zip(*[items[c].cast(pl.Utf8).fill_null("").to_list() for c in fields], strict=True)
    ]
    items = items.with_columns(pl.Series("_text", texts))
    model.encode(texts[:64], batch_size=64)  # warm-up (allocations, lazy init)

    def bare(part: Any) -> Any:
        return model.encode(
            part["_text"].to_list(), batch_size=64, normalize_embeddings=True, show_progress_bar=False
        )

    res = side_by_side(items, "text", {"encoder": enc, "fields": fields}, bare, chunks, work)
    feats = res.pop("features")
    ref = bare(items.head(50))
    res["max_abs_diff_vs_bare"] = float(np.abs(feats[:50] - ref).max())
    res["model_load_s"] = round(load_s, 2)
    res["unique_texts"] = len(set(texts))
    return res


def bench_images(ds: Any, chunks: int, work: Path) -> dict[str, Any]:
    import torch

    from modalrec.data.media import read_media_bytes
    from modalrec.encoders.image import EfficientNetImageEncoder, decode_image, preprocess

    items = ds.items.select(["item_id", "image"]).filter(ds.items["image"].is_not_null())
    enc = EfficientNetImageEncoder(image_size=224, resize="crop")
    load_s, model = timed(lambda: enc.model)
    with torch.inference_mode():
        model.extract_features(torch.zeros(2, 3, 224, 224))

    def bare(part: Any) -> Any:
        refs = part["image"].to_list()
        out = []
        with torch.inference_mode():
            for s in range(0, len(refs), 32):
                batch = [preprocess(decode_image(read_media_bytes(r)), 224, "crop") for r in refs[s : s + 32]]
                out.append(model.extract_features(torch.from_numpy(np.stack(batch))).mean(dim=(2, 3)).numpy())
        return np.concatenate(out)

    res = side_by_side(items, "image", {"encoder": enc, "column": "image"}, bare, chunks, work)
    feats = res.pop("features")
    res["max_abs_diff_vs_bare"] = float(np.abs(feats[:20] - bare(items.head(20))).max())
    res["model_load_s"] = round(load_s, 2)
    res["catalogue_items"] = ds.n_items
    return res


def bench_audio(work: Path, n_items: int) -> dict[str, Any]:
    from modalrec.data.demo import make_demo
    from modalrec.encoders import encode_dataset
    from modalrec.encoders.audio import LogMelAudioEncoder, YamnetAudioEncoder

    ds = make_demo(work / "demo", n_items=n_items, n_users=20, seed=0, n_broken=0, missing_share=0.0)
    clips = [r for r in ds.items["audio"].to_list() if r]
    seconds_audio = 1.5 * len(clips)
    out: dict[str, Any] = {"clips": len(clips), "audio_seconds": seconds_audio}
    for name, enc in (("logmel", LogMelAudioEncoder()), ("yamnet", YamnetAudioEncoder())):
        enc.encode([enc.load(clips[0])])  # load model / JIT outside the timing
        s, fs = timed(
            lambda enc=enc, name=name: encode_dataset(
                ds, {"audio": enc}, work / f"audio-{name}", progress=False
            )
        )
        out[name] = {
            "wall_s": round(s, 2),
            "audio_seconds_per_s": round(seconds_audio / s, 1),
            "clips_per_s": round(len(clips) / s, 1),
            "present": int(fs.masks["audio"].sum()),
        }
    return out


def to_markdown(res: dict[str, Any]) -> str:
    t, i, a = res.get("text"), res.get("image"), res.get("audio")
    lines = [
        "# Encoder throughput (benchmarks/encoders.py)",
        "",
        f"Protocol: ML-100K raw pipeline (text = title + genres + overview; image = poster from posters.zip). "
        f"Machine: {res['machine']}. Load average at start / end: {res['loadavg_start']} / {res['loadavg_end']} "
        "(the machine is shared; absolute numbers move with its load, the ratios are measured side by side).",
        "",
        "| modality | items | bare model items/s | modalrec items/s | modalrec / bare | cold s | warm s | warm / cold |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in (("text (MiniLM-L6-v2)", t), ("image (EfficientNet-Lite0, 224 px)", i)):
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
        for name in ("logmel", "yamnet"):
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=None, help="first N catalogue items only (quick check)")
    ap.add_argument("--chunks", type=int, default=8, help="interleaved bare/modalrec slices")
    ap.add_argument("--audio-items", type=int, default=300)
    ap.add_argument("--skip", nargs="*", default=[], choices=["text", "image", "audio"])
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not (SHARED / "ml100k_tmdb_posters").is_dir():
        print(f"ML-100K not found under {SHARED}; nothing to benchmark", file=sys.stderr)
        return 1
    import torch

    import modalrec.data as mdata

    ds = mdata.load("ml100k", root=SHARED)
    if args.limit:
        ds.items = ds.items.head(args.limit)
        ds.item_ids = ds.item_ids[: args.limit]
    work = Path(tempfile.mkdtemp(prefix="modalrec-bench-enc-"))
    # Sections can be run one at a time (--skip) to keep each heavy job short: the results of the
    # sections not run this time are kept from the previous results file.
    previous = args.out / "encoders.json"
    old = json.loads(previous.read_text()) if previous.is_file() and not args.limit else {}
    res: dict[str, Any] = {
        "benchmark": "encoders",
        "protocol": "ML-100K raw pipeline: text = title + genres + overview, image = poster",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), python {platform.python_version()}",
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "chunks": args.chunks,
        "limit": args.limit,
    }
    res.update({k: old[k] for k in ("text", "image", "audio") if k in old and k in args.skip})
    try:
        for name, run in (
            ("text", lambda: bench_text(ds, args.chunks, work)),
            ("image", lambda: bench_images(ds, args.chunks, work)),
            ("audio", lambda: bench_audio(work, args.audio_items)),
        ):
            if name in args.skip:
                continue
            load0 = [round(x, 2) for x in os.getloadavg()]
            res[name] = run()
            res[name]["run_at_utc"] = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
            res[name]["loadavg_before_after"] = [load0, [round(x, 2) for x in os.getloadavg()]]
            print(json.dumps(res[name]), flush=True)
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

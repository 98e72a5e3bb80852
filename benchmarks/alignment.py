"""Alignment, fusion and cold-start benchmark (issue: cross-modal alignment, fusion, missing modalities).

Reproduces every number in ``benchmarks/results/alignment.{json,md}``. Seeds, rows, grids and settings come
from the plan ``benchmarks/plans/alignment.toml``, read at run time (the committed results predate it)::

    python benchmarks/alignment.py                 # all three parts (~20-40 min on 2 busy cores)
    python benchmarks/alignment.py --parts align   # one part: align | fusion | coldstart

Parts (protocols named as in DESIGN.md):

A. **ML-100K text <-> poster retrieval.** Text = MiniLM(title | genres | overview) (+ TF-IDF/SVD fitted
   on training items only), image = EfficientNet-Lite0 pooled features of the ~92x138 posters, averaged
   over test-time augmentations (centre crop, flipped crop, padded, squashed; all through modalrec's
   encoders and feature cache). Items with both a text and a poster; 20% of them (seeded) are held out
   as test items and never seen by any aligner or selection step; 15% of the remaining items are the
   validation split used for early stopping and hyperparameter selection. Cosine retrieval among the
   held-out items, both directions: Recall@1/10, median rank, true-vs-random cosine. Scene text:
   RapidOCR reads each poster's printed words (``scene-text`` encoder), matched to the title's
   character trigrams by the ``lexical`` aligner, alone and next to ridge/CCA (weight on validation).
B. **Demo catalogue fusion.** ``modalrec.data.demo`` with a known hidden modality mix; features from
   modalrec's encoders; ``FusionRecommender`` (weighted sum) learns modality weights, compared with the
   generator's truth; fused vs each single modality on test Recall@20 (full ranking).
C. **ML-100K cold start** (DESIGN.md: 10% of items, seeded, removed from training; evaluated on them
   only, full ranking among cold items). Collaborative alignment (content -> PureSVD item factors)
   vs popularity and ItemKNN on raw text features (content similarity to the user's training items).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from modalrec.align import (
    AdversarialAligner,
    CCAAligner,
    CollaborativeAligner,
    ContrastiveAligner,
    CrossAttentionAligner,
    EnsembleAligner,
    InteractionAligner,
    LexicalAligner,
    MMDAligner,
    RidgeAligner,
    l2_normalize,
    pure_svd,
)
from modalrec.align.metrics import mean_reciprocal_rank, retrieval_metrics
from modalrec.align.report import alignment_report, report_markdown
from modalrec.core.io import atomic_write_json, atomic_write_text
from plan import Plan, load_plan
from plan import plan_line as plan_provenance

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path.home() / ".cache" / "modalrec"
SEED = 2024  # the plan's seed; only --render uses it without reading the plan (checked against it otherwise)
PLAN_NAME = "alignment"
PARTS = ("align", "fusion", "coldstart")
#: the rows part A builds (keys of the plan's [align.rows]; parameters come from the plan)
ALIGN_ROWS = (
    "ridge_t2i",
    "ridge_i2t",
    "cca",
    "cca_128",
    "cca_raw",
    "contrastive",
    "contrastive_raw",
    "contrastive_seeds",
    "linear_ensemble",
    "contrastive_linear_ensemble",
    "cross_attention",
    "mmd",
    "adversarial",
    "lexical",
    "lexical_plus_learned",
)


def log(*a: Any) -> None:
    print(f"[{time.strftime('%H:%M:%S')}]", *a, flush=True)


# ---------------------------------------------------------------------------------------- features
FIELDS = ("title", "genres", "overview")
VIEWS = ("crop", "crop_flip", "pad", "squash", "squash_flip")
STAGES = (2, 4, 7, 10, 14, 15)  # last block of each EfficientNet-Lite0 stage: 24, 40, 80, 112, 192, 320 ch
STAGE_DIMS = (24, 40, 80, 112, 192, 320)
HEAD_DIM = 1280
VIEW_DIM = HEAD_DIM + sum(STAGE_DIMS)


def multiview_image_encoder() -> Any:
    """EfficientNet-Lite0 over five test-time views of a poster, pooled at every stage.

    Why: the posters are ~92x138, so one centre crop throws away a third of the picture and the
    1280-d head alone describes mostly ImageNet objects; colour, layout and texture (which say a
    lot about genre) live in the intermediate stages. Per view the output holds the pooled head
    (1280) followed by the pooled output of each stage (768); views: centre crop, flipped crop,
    padded, squashed, flipped squash. Cached in modalrec's feature cache under its own version.
    """
    from modalrec.encoders.base import read_ref_bytes
    from modalrec.encoders.image import EfficientNetImageEncoder, decode_image, preprocess

    class MultiViewEfficientNet(EfficientNetImageEncoder):
        dim = len(VIEWS) * VIEW_DIM

        def __init__(self) -> None:
            super().__init__(resize="crop", batch_size=16)
            self.version = "1-s224-multiview5-stages"

        def load(self, ref: Any) -> np.ndarray:
            img = decode_image(read_ref_bytes(ref), draft_size=self.image_size)
            out = []
            for v in VIEWS:
                x = preprocess(img, self.image_size, v.split("_")[0])
                out.append(x[:, :, ::-1] if v.endswith("flip") else x)
            return np.ascontiguousarray(np.stack(out))

        def _forward(self, loaded: list[Any]) -> np.ndarray:
            x = np.concatenate([np.asarray(a, dtype=np.float32) for a in loaded])
            return self.forward_arrays(x).reshape(len(loaded), -1)

        def forward_arrays(self, x: np.ndarray) -> np.ndarray:
            m = self.model
            out = []
            with torch.inference_mode():
                for i in range(0, len(x), self.batch_size):
                    h = torch.from_numpy(np.ascontiguousarray(x[i : i + self.batch_size]))
                    h = m._swish(m._bn0(m._conv_stem(h)))
                    pooled = []
                    for j, block in enumerate(m._blocks):
                        h = block(h, drop_connect_rate=None)
                        if j in STAGES:
                            pooled.append(h.mean(dim=(2, 3)))
                    head = m._swish(m._bn1(m._conv_head(h))).mean(dim=(2, 3))
                    out.append(torch.cat([head, *pooled], dim=1).numpy())
            return np.concatenate(out).astype(np.float32, copy=False)

    return MultiViewEfficientNet()


def ml100k_features(ds: Any, progress: bool) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Raw MiniLM text, the standard EfficientNet poster features and the multi-view ones, cached."""
    from modalrec.encoders import encode_dataset

    mods: dict[str, Any] = {
        "text": {"encoder": "minilm", "fields": ["title", "genres", "overview"]},
        **{f"text_{f}": {"encoder": "minilm", "fields": [f]} for f in ("title", "genres", "overview")},
        "image": {"encoder": "efficientnet-lite0", "column": "image", "resize": "crop"},
        "image_mv": multiview_image_encoder(),
        # the lexical pair: character n-grams of the title, and of the text OCR reads on the poster
        "title_chars": {"encoder": "char-ngrams", "fields": ["title"]},
        "image_ocr": {"encoder": "scene-text", "column": "image"},
    }
    import polars as pl

    # an encoder object takes its media from a column of its own name
    items = ds.items.with_columns(pl.col("image").alias("image_mv"))
    t0 = time.perf_counter()
    fs = encode_dataset(items, mods, None, cache_dir=CACHE, progress=progress, workers=1, apply=False)
    log(f"features ready in {time.perf_counter() - t0:.0f}s:", {m: x.shape for m, x in fs.features.items()})
    return fs.features, fs.masks


def image_block(mv: np.ndarray, views: tuple[str, ...], part: str) -> np.ndarray:
    """Mean over ``views`` of one part ("head", "stages" or "all") of the multi-view features.

    Each stage block is L2-normalised on its own before averaging, so that the 24-channel early
    stage weighs as much as the 320-channel late one (they differ in scale by orders of magnitude).
    """
    acc = []
    for v in views:
        k = VIEWS.index(v) * VIEW_DIM
        blk = mv[:, k : k + VIEW_DIM]
        head = l2_normalize(blk[:, :HEAD_DIM])
        offs = np.cumsum((HEAD_DIM, *STAGE_DIMS))
        stages = np.concatenate(
            [l2_normalize(blk[:, a:b]) for a, b in itertools.pairwise(offs)], axis=1
        ) / np.sqrt(len(STAGE_DIMS))
        acc.append({"head": head, "stages": stages, "all": np.concatenate([head, stages], 1)}[part])
    return (sum(acc) / len(acc)).astype(np.float32)


def tfidf_block(texts: list[str], fit_rows: np.ndarray, dim: int, min_df: int, seed: int) -> np.ndarray:
    """TF-IDF/SVD text vectors; the vocabulary, IDF and SVD are fitted on training items only."""
    from modalrec.encoders.text import TfidfTextEncoder

    enc = TfidfTextEncoder(dim=dim, min_df=min_df, seed=seed).fit([texts[i] for i in fit_rows])
    return enc.encode(texts)


def year_block(titles: list[str]) -> np.ndarray:
    """One-hot 5-year bucket of the release year written in the title ("Heat (1995)"); zeros if none.

    Why: poster design follows its era (colour, typography, photo vs painting), and the year is part
    of the item text, but a sentence encoder barely represents a number in brackets.
    """
    import re

    edges = np.arange(1920, 2001, 5)
    out = np.zeros((len(titles), len(edges) + 1), np.float32)
    for i, t in enumerate(titles):
        m = re.search(r"\((\d{4})\)\s*$", t or "")
        if m:
            out[i, int(np.searchsorted(edges, int(m.group(1)), side="right"))] = 1.0
    return out


# ---------------------------------------------------------------------------------------- part A
@dataclass
class AlignData:
    """Part A's feature views, item split, and every fitted aligner with the views it reads.

    Why one object: every fit, validation score and report row needs the same views and split, and
    the rows are reported in the order the aligners were fitted; keeping them together keeps each
    step short and makes it impossible to hand a fit the test rows.
    """

    text_views: dict[str, np.ndarray]
    image_views: dict[str, np.ndarray]
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    seed: int
    aligners: dict[str, Any] = field(default_factory=dict)
    view_of: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    seen: np.ndarray = field(init=False, repr=False)
    vloc: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        """Everything an aligner sees: training + validation rows only (test rows are cut out entirely)."""
        self.seen = np.sort(np.concatenate([self.train, self.valid]))
        self.vloc = np.searchsorted(self.seen, self.valid)

    def views_of(self, tv: str, iv: str) -> dict[str, np.ndarray]:
        """The (text, image) view pair an aligner is fitted on."""
        return {"text": self.text_views[tv], "image": self.image_views[iv]}

    def valid_scores(self, al: Any, views: dict[str, np.ndarray]) -> dict[str, float]:
        """Validation MRR and text->image Recall@10: every selection in part A reads these only."""
        zt = al.transform("text", views["text"][self.valid])
        zi = al.transform("image", views["image"][self.valid])
        return {
            "valid_mrr": round(mean_reciprocal_rank(zt, zi), 4),
            "valid_t2i_recall@10": round(retrieval_metrics(zt, zi)["recall@10"], 4),
        }

    def fit(self, al: Any, views: dict[str, np.ndarray]) -> Any:
        """Fit on the seen rows (early stopping on validation) and store time and validation scores."""
        t0 = time.perf_counter()
        al.fit({m: v[self.seen] for m, v in views.items()}, valid_items=self.vloc, seed=self.seed)
        al.meta["fit_seconds"] = round(time.perf_counter() - t0, 1)
        al.meta.update(self.valid_scores(al, views))
        log(
            f"  fitted {type(al).__name__} in {al.meta['fit_seconds']}s, valid {self.valid_scores(al, views)}"
        )
        return al

    def add(self, name: str, al: Any, views: dict[str, np.ndarray]) -> None:
        """Fit ``al`` and keep it as a reported row (rows come out in the order they were added)."""
        self.aligners[name], self.view_of[name] = self.fit(al, views), views


def align_split(
    masks: dict[str, np.ndarray], P: dict[str, Any], seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded train/valid/test items among those with a text and a poster.

    Why first and seeded: the held-out test items must be fixed before any feature or aligner is
    fitted, and be the same items in every run of the plan.
    """
    both = np.flatnonzero(masks["text"] & masks["image"] & masks["image_mv"])
    rng = np.random.default_rng(seed)
    perm = rng.permutation(both)
    n_test = round(P["test_fraction"] * len(both))
    test = np.sort(perm[:n_test])
    rest = perm[n_test:]
    n_valid = round(P["valid_fraction"] * len(rest))
    valid, train = np.sort(rest[:n_valid]), np.sort(rest[n_valid:])
    log(f"items with text+poster {len(both)}: train {len(train)}, valid {len(valid)}, test {len(test)}")
    return train, valid, test


def align_text_views(
    ds: Any, feats: dict[str, np.ndarray], masks: dict[str, np.ndarray], train: np.ndarray, F: dict[str, Any]
) -> dict[str, np.ndarray]:
    """The plan's candidate text features (TF-IDF fitted on training items only, so test text stays unseen)."""
    W = F["weights"]
    texts = ds.item_texts(list(FIELDS))
    tfidf = tfidf_block(texts, train, **F["tfidf"])
    years = year_block(ds.items["title"].cast(str).fill_null("").to_list())
    minilm = l2_normalize(feats["text"])
    return {
        "MiniLM": feats["text"],
        "MiniLM+TF-IDF": np.concatenate([minilm, W["tfidf"] * l2_normalize(tfidf)], axis=1),
        "MiniLM+TF-IDF+year": np.concatenate(
            [minilm, W["tfidf"] * l2_normalize(tfidf), W["year"] * years], axis=1
        ),
        "MiniLM + per-field MiniLM": np.concatenate(
            [minilm]
            + [
                W["per_field"] * np.where(masks[f"text_{f}"][:, None], l2_normalize(feats[f"text_{f}"]), 0.0)
                for f in FIELDS
            ],
            axis=1,
        ).astype(np.float32),
    }


def align_image_views(feats: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The plan's candidate poster features: the default crop, and the multi-view head (+ stages)."""
    mv = feats["image_mv"]
    return {
        "crop": feats["image"],
        "5-view head": image_block(mv, VIEWS, "head"),
        "5-view head+stages": image_block(mv, VIEWS, "all"),
    }


def fit_feature_selection(data: AlignData, R: dict[str, Any]) -> tuple[list[dict[str, Any]], str, str]:
    """Step 1: ridge text->image on every text x image feature pair; the pair is chosen on validation MRR.

    Why ridge: it is cheap and has no hyperparameter to tune per pair, so it ranks the features
    themselves; every later aligner then works on the chosen pair.
    """
    feature_trials: list[dict[str, Any]] = []
    for tv in data.text_views:
        for iv in data.image_views:
            v = data.views_of(tv, iv)
            name = f"ridge text->image ({tv}; {iv})"
            data.add(name, RidgeAligner(**R["ridge_t2i"]), v)
            feature_trials.append({"text": tv, "image": iv, **data.valid_scores(data.aligners[name], v)})
    best_feat = max(feature_trials, key=lambda t: t["valid_mrr"])
    tv, iv = best_feat["text"], best_feat["image"]
    log("features selected on validation:", tv, "|", iv)
    return feature_trials, tv, iv


def fit_linear_baselines(data: AlignData, R: dict[str, Any], rich: dict[str, np.ndarray], tag: str) -> None:
    """Ridge image->text and CCA on the selected features, and CCA on the raw ones (the linear references)."""
    for name, al in [
        (f"ridge image->text {tag}", RidgeAligner(**R["ridge_i2t"])),
        (f"cca {tag}", CCAAligner(**R["cca"])),
        (f"cca dim 128 {tag}", CCAAligner(**R["cca_128"])),
        ("cca (MiniLM; crop)", CCAAligner(**R["cca_raw"])),
    ]:
        v = data.views_of("MiniLM", "crop") if "(MiniLM; crop)" in name else rich
        data.add(name, al, v)


def nonlinear_rows(
    data: AlignData,
    R: dict[str, Any],
    best: dict[str, Any],
    n_seeds: int,
    epochs: dict[str, int],
    linear_members: list[dict[str, Any]],
    rich: dict[str, np.ndarray],
    tag: str,
) -> list[tuple[str, Any, dict[str, np.ndarray]]]:
    """The learned (non-ridge, non-CCA) aligners as (name, unfitted aligner, views), in report order.

    Why built before fitting: every aligner is constructed first, then fitted one by one, exactly as
    the committed results were produced.
    """
    return [
        (f"contrastive {tag}", ContrastiveAligner(**best), rich),
        ("contrastive (MiniLM; crop)", ContrastiveAligner(**best), data.views_of("MiniLM", "crop")),
        (
            f"contrastive, {n_seeds} seeds {tag}",
            EnsembleAligner(members=[{"aligner": "contrastive", **best}] * n_seeds),
            rich,
        ),
        (
            f"linear ensemble: ridge both ways + CCA {tag}",
            EnsembleAligner(members=linear_members),
            rich,
        ),
        (
            f"contrastive {n_seeds} seeds + ridge both ways + CCA {tag}",
            EnsembleAligner(
                members=[{"aligner": "contrastive", **best}] * n_seeds + linear_members,
                weights=[1.0 / n_seeds] * n_seeds + [1.0 / len(linear_members)] * len(linear_members),
            ),
            rich,
        ),
        (
            f"cross-attention {tag}",
            CrossAttentionAligner(**R["cross_attention"], **epochs),
            rich,
        ),
        (
            f"mmd {tag}",
            MMDAligner(**R["mmd"], **epochs),
            rich,
        ),
        (
            f"adversarial {tag}",
            AdversarialAligner(**R["adversarial"], **epochs),
            rich,
        ),
    ]


def fit_learned(
    data: AlignData,
    args: argparse.Namespace,
    R: dict[str, Any],
    linear_members: list[dict[str, Any]],
    rich: dict[str, np.ndarray],
    tag: str,
) -> list[dict[str, Any]]:
    """Step 2: contrastive hyperparameters chosen by validation MRR on the selected features, then
    every learned aligner fitted with them; returns the contrastive trials.

    Why --quick cuts here: the grid and the epochs are what make part A slow.
    """
    grid = contrastive_grid(args.plan["align"]["contrastive"])
    if args.quick:
        grid = grid[:2]
        for g in grid:
            g["max_epochs"] = 30
    best, trials = select_contrastive(rich, data.seen, data.vloc, grid, args.seed)
    log("selected contrastive params", best)
    epochs = {"max_epochs": 30} if args.quick else {}
    n_seeds = 2 if args.quick else args.ensemble_seeds
    for name, al, v in nonlinear_rows(data, R, best, n_seeds, epochs, linear_members, rich, tag):
        data.add(name, al, v)
    return trials


def fit_scene_text(
    data: AlignData,
    P: dict[str, Any],
    R: dict[str, Any],
    lex_views: dict[str, np.ndarray],
    linear_members: list[dict[str, Any]],
    rich: dict[str, np.ndarray],
    tag: str,
) -> list[dict[str, Any]]:
    """Step 3: scene text alone and next to learned linear aligners; returns the validation trials.

    Character n-grams of the title vs those of the text OCR reads on the poster (one shared
    vocabulary, IDF fitted on training items), alone and next to learned linear aligners (ensemble
    members reading their own column blocks). Why a grid on validation: how much weight the lexical
    match deserves next to a learned map, and which map, cannot be fixed in advance.
    """
    lex_name = "scene text: lexical (title char n-grams <-> poster OCR n-grams)"
    data.add(lex_name, LexicalAligner(**R["lexical"]), lex_views)
    combo = {m: np.concatenate([rich[m], lex_views[m]], axis=1) for m in ("text", "image")}
    semantic = {m: [0, rich[m].shape[1]] for m in combo}
    lexical = {"aligner": "lexical", "columns": {m: [rich[m].shape[1], combo[m].shape[1]] for m in combo}}
    learned_parts: dict[str, list[dict[str, Any]]] = {
        "ridge image->text": [{"aligner": "ridge", **R["ridge_i2t"]}],
        "ridge both ways + CCA": linear_members,
    }
    same("align.scene_text.learned_parts", list(learned_parts), P["scene_text"]["learned_parts"])
    scene_trials: list[dict[str, Any]] = []
    scene_fits: dict[tuple[str, float], Any] = {}
    for label, members in learned_parts.items():
        for w in P["scene_text"]["weights"]:
            ens = EnsembleAligner(
                members=[{**m, "columns": semantic} for m in members] + [lexical],
                weights=[(1 - w) / len(members)] * len(members) + [w],
            )
            scene_fits[label, w] = data.fit(ens, combo)
            scene_trials.append({"learned": label, "scene_text_weight": w, **data.valid_scores(ens, combo)})
    pick = max(scene_trials, key=lambda t: t["valid_mrr"])
    combo_name = (
        f"scene text (lexical) + {pick['learned']} {tag}, scene-text weight {pick['scene_text_weight']}"
    )
    data.aligners[combo_name] = scene_fits[pick["learned"], pick["scene_text_weight"]]
    data.view_of[combo_name] = combo
    log("scene text + learned, selected on validation:", combo_name)
    return scene_trials


def align_report_rows(data: AlignData, lex_views: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Test-item retrieval rows: the two raw ("before") references, then each aligner with its validation scores."""
    rows = []
    before = alignment_report(data.views_of("MiniLM", "crop"), None, {}, data.test)["rows"]
    rows += [{**r, "aligner": "before (raw MiniLM vs EfficientNet crop)"} for r in before]
    before = alignment_report(lex_views, None, {}, data.test)["rows"]
    rows += [{**r, "aligner": "before (raw title char n-grams vs poster OCR n-grams)"} for r in before]
    for name, al in data.aligners.items():
        rep = alignment_report(data.view_of[name], None, {name: al}, data.test)
        rows += [
            {**r, "valid_mrr": al.meta["valid_mrr"], "valid_t2i_recall@10": al.meta["valid_t2i_recall@10"]}
            for r in rep["rows"]
            if r["aligner"] == name
        ]
    return rows


def align_context(
    data: AlignData, rows: list[dict[str, Any]], learned_names: list[str], features: str
) -> dict[str, Any]:
    """The protocol and headline picks written next to the rows (best aligners chosen on validation)."""
    aligners = data.aligners
    best_name = max(aligners, key=lambda n: aligners[n].meta["valid_mrr"])
    best_learned = max(learned_names, key=lambda n: aligners[n].meta["valid_mrr"])
    t2i = {r["aligner"]: r for r in rows if r["query"] == "text" and r["gallery"] == "image"}
    linear = [n for n in aligners if n.startswith(("ridge", "cca", "linear"))]
    best_linear = max(linear, key=lambda n: t2i[n]["recall@10"])
    return {
        "protocol": "ML-100K text (title | genres | overview) <-> poster; 20% of items with both held out (seed "
        f"{data.seed}), never seen by any fit or selection; early stopping and every selection (features, "
        "hyperparameters, best aligner) on a 15% validation split of the rest",
        "split": f"train {len(data.train)}, valid {len(data.valid)}, test {len(data.test)} items",
        "image features": "EfficientNet-Lite0: 'crop' = modalrec's default encoder (centre crop, pooled head); "
        "'5-view' = mean over centre crop, flipped crop, padded, squashed, flipped squash; 'head+stages' "
        "adds the pooled output of every stage (24..320 channels), each block L2-normalised",
        "text features": "MiniLM-L6-v2 of 'title | genres | overview'; + TF-IDF/SVD-256 fitted on training "
        "items; + one-hot 5-year bucket of the year in the title; or + MiniLM of each field on its own",
        "chance Recall@10": round(10 / len(data.test), 4),
        "selected features (valid MRR of ridge)": features,
        "best aligner by validation MRR": best_name,
        "its test text->image Recall@10": t2i[best_name]["recall@10"],
        "scene text": "RapidOCR (PP-OCRv4, ONNX weights in the rapidocr_onnxruntime wheel) reads the text printed "
        "on each poster (upscaled to a 184-px short side); it and the item's title are hashed into character "
        "trigrams (letters and digits only), so a poster that shows its title matches the title's text",
        "best learned aligner without scene text (by validation MRR)": best_learned,
        "its test text->image Recall@10 (learned maps only)": t2i[best_learned]["recall@10"],
        "best linear/CCA baseline on test (text->image R@10)": f"{best_linear}: {t2i[best_linear]['recall@10']:.4f}",
    }


def part_align(args: argparse.Namespace) -> dict[str, Any]:
    """ML-100K text <-> poster retrieval: features, then linear, learned and scene-text aligners."""
    import modalrec.data as mdata

    P, F = args.plan["align"], args.plan["features"]
    R = {k: r.get("params", {}) for k, r in P["rows"].items()}
    ds = mdata.load(P["dataset"])
    feats, masks = ml100k_features(ds, progress=not args.quiet)
    train, valid, test = align_split(masks, P, args.seed)
    data = AlignData(
        text_views=align_text_views(ds, feats, masks, train, F),
        image_views=align_image_views(feats),
        train=train,
        valid=valid,
        test=test,
        seed=args.seed,
    )
    same("align.text_views", list(data.text_views), P["text_views"])
    same("align.image_views", list(data.image_views), P["image_views"])

    feature_trials, tv, iv = fit_feature_selection(data, R)
    rich = data.views_of(tv, iv)
    tag = f"({tv}; {iv})"
    fit_linear_baselines(data, R, rich, tag)
    linear_members: list[dict[str, Any]] = [dict(m) for m in P["linear_members"]["members"]]
    trials = fit_learned(data, args, R, linear_members, rich, tag)
    learned_names = list(data.aligners)
    lex_views = {"text": feats["title_chars"], "image": feats["image_ocr"]}
    scene_trials = fit_scene_text(data, P, R, lex_views, linear_members, rich, tag)

    rows = align_report_rows(data, lex_views)
    return {
        "n_items_evaluated": len(test),
        "ks": [1, 10],
        "rows": rows,
        "aligners": {
            n: {"class": type(a).__name__, "params": a.get_params(), "meta": a.meta}
            for n, a in data.aligners.items()
        },
        "context": align_context(data, rows, learned_names, f"{tv}; {iv}"),
        "feature_selection": feature_trials,
        "contrastive_selection": trials,
        "scene_text_selection": scene_trials,
    }


def contrastive_grid(C: dict[str, Any]) -> list[dict[str, Any]]:
    """The plan's contrastive grid as aligner parameters ("none" -> None: TOML has no null; default patience)."""
    grid = [{k: None if v == "none" else v for k, v in g.items()} for g in C["grid"]]
    for g in grid:
        g.setdefault("patience", C["patience"])
    return grid


def select_contrastive(
    views: dict[str, np.ndarray], seen: np.ndarray, vloc: np.ndarray, grid: list[dict[str, Any]], seed: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Pick contrastive hyperparameters by validation MRR (validation items only; test never seen)."""
    sub = {m: v[seen] for m, v in views.items()}
    trials = []
    for params in grid:
        t0 = time.perf_counter()
        al = ContrastiveAligner(**params).fit(sub, valid_items=vloc, seed=seed)
        zt, zi = al.transform("text", sub["text"][vloc]), al.transform("image", sub["image"][vloc])
        r = retrieval_metrics(zt, zi)
        trials.append(
            {
                "params": params,
                "valid_mrr": round(mean_reciprocal_rank(zt, zi), 4),
                "valid_t2i_recall@10": round(r["recall@10"], 4),
                "epochs": al.meta["epochs_run"],
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
        log("  contrastive trial", trials[-1])
    best = max(trials, key=lambda t: t["valid_mrr"])
    return dict(best["params"]), trials


# ---------------------------------------------------------------------------------------- plan
def same(what: str, script_value: Any, plan_value: Any) -> None:
    """Refuse to run when a setting the script fixes in code differs from the plan's."""
    if script_value != plan_value:
        raise SystemExit(
            f"benchmarks/plans/{PLAN_NAME}.toml: {what} is {plan_value!r} in the plan but {script_value!r} in "
            "benchmarks/alignment.py: make the script follow the plan (or amend the plan) before the run"
        )


def read_plan(args: argparse.Namespace) -> Plan:
    """Load the plan, check what the script fixes in code against it, and take seeds from it (into ``args``)."""
    plan = load_plan(PLAN_NAME, allow_uncommitted=args.allow_uncommitted_plan)
    d = plan.data
    same("seed", SEED, d["seed"])
    same("features.fields", list(FIELDS), d["features"]["fields"])
    same("features.views", list(VIEWS), d["features"]["views"])
    same("features.stages", list(STAGES), d["features"]["stages"])
    same("align.rows (keys)", sorted(ALIGN_ROWS), sorted(d["align"]["rows"]))
    same("align.ks", [1, 10], d["align"]["ks"])
    same("align.selection_metric", "valid_mrr", d["align"]["selection_metric"])
    same("align.users", "none", d["align"]["users"])
    same("fusion.dataset", "demo", d["fusion"]["dataset"])
    same("fusion.ks", [20], d["fusion"]["ks"])
    same(
        "fusion.fusions[0] (the learned weights compared with the truth)",
        "weighted_sum",
        d["fusion"]["fusions"][0],
    )
    same("fusion.users", "all", d["fusion"]["users"])
    same("coldstart.ks", [10, 20, 50], d["coldstart"]["ks"])
    same("coldstart.users", "all", d["coldstart"]["users"])
    for opt, value in (("seed", d["seed"]), ("ensemble_seeds", d["align"]["contrastive"]["ensemble_seeds"])):
        if getattr(args, opt) not in (None, value):
            raise SystemExit(
                f"--{opt.replace('_', '-')} {getattr(args, opt)}: the plan fixes {value} (amend it)"
            )
        setattr(args, opt, value)
    args.plan = d
    return plan


def plan_line(results: dict[str, Any]) -> str:
    """The Markdown line saying which plan (commit) the results ran under, if any."""
    rec = results.get("plan")
    line = plan_provenance(rec, PLAN_NAME)
    if not rec:
        return line
    older = [p for p in PARTS if p in results and not (results[p].get("plan") or {}).get("plan_commit")]
    if older:
        line += f"; part(s) {', '.join(older)} produced before plans existed"
    quick = [p for p in PARTS if p in results and results[p].get("quick")]
    if quick:
        line += f"; part(s) {', '.join(quick)} from a --quick smoke run (not the plan's grids)"
    return line


# ---------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parts", default="align,fusion,coldstart")
    ap.add_argument(
        "--ensemble-seeds",
        type=int,
        default=None,
        help="contrastive seeds per ensemble (align part); default and only accepted value: the plan's",
    )
    ap.add_argument("--seed", type=int, default=None, help="default and only accepted value: the plan's")
    ap.add_argument("--allow-uncommitted-plan", action="store_true", help="dry runs only; recorded as such")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--quick", action="store_true", help="tiny grids and few epochs (smoke test)")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument(
        "--render",
        action="store_true",
        help="only rewrite alignment.md from the JSON (adding the cold-start random reference if missing)",
    )
    args = ap.parse_args(argv)
    if args.render:
        render(Path(args.out), SEED if args.seed is None else args.seed)
        return 0
    plan = read_plan(args)
    torch.set_num_threads(int(args.plan["torch_threads"]))
    # the quick parts first, so that the slow one (align) cannot hold back their results
    order = ["features", "fusion", "coldstart", "align"]
    parts = sorted(
        (p.strip() for p in args.parts.split(",") if p.strip()),
        key=lambda p: order.index(p) if p in order else len(order),
    )
    out = Path(args.out)
    json_path = out / "alignment.json"
    results: dict[str, Any] = json.loads(json_path.read_text()) if json_path.exists() else {}
    t_all = time.perf_counter()

    def save(results: dict[str, Any]) -> None:
        results["environment"] = _environment(argv, time.perf_counter() - t_all)
        atomic_write_json(json_path, results)
        atomic_write_text(out / "alignment.md", markdown(results))
        log(f"wrote {json_path} and alignment.md")

    for p in parts:
        t0 = time.perf_counter()
        load0 = [round(x, 2) for x in os.getloadavg()]
        if p == "features":  # fill the shared feature cache only (no results written for it)
            import modalrec.data as mdata

            ml100k_features(mdata.load("ml100k"), progress=not args.quiet)
            continue
        if p == "align":
            results["align"] = part_align(args)
        elif p == "fusion":
            results["fusion"] = part_fusion(args)
        elif p == "coldstart":
            results["coldstart"] = part_coldstart(args)
        else:
            raise SystemExit(f"unknown part {p!r}")
        results[p]["seconds"] = round(time.perf_counter() - t0, 1)
        results[p]["load_average_at_start"] = load0
        results[p]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        results[p]["command"] = "python benchmarks/alignment.py " + " ".join(
            argv if argv is not None else sys.argv[1:]
        )
        results[p]["plan"] = results["plan"] = plan.record()
        if args.quick:
            results[p]["quick"] = True
        save(results)  # after every part, so a later part's failure keeps the earlier results
    return 0


def cold_random_reference(ds: Any) -> dict[str, float]:
    """Expected metrics of a uniformly random ranking of each test user's cold candidates (analytic)."""
    from multimodal import expected_random

    return expected_random(ds, np.asarray(ds.cold_items, dtype=np.int64))


def add_random_ratios(C: dict[str, Any]) -> None:
    """Cold-start ratios against the expected random ranking (Popularity ranks cold items in tie order:
    every cold item has popularity 0, so it is no reference)."""
    rnd = C["random"]["recall@20"]
    for key, name in (
        ("ratio_vs_random", "collaborative alignment (content -> PureSVD)"),
        ("e2e_ratio_vs_random", E2E),
    ):
        if name in C["models"]:
            C[key] = C["models"][name]["test"]["recall@20"] / max(rnd, 1e-12)


def render(out: Path, seed: int) -> None:
    """Rewrite alignment.md from alignment.json; fill the cold-start random reference from the split
    (deterministic, no model involved) when the JSON predates it."""
    json_path = out / "alignment.json"
    results = json.loads(json_path.read_text())
    C = results.get("coldstart")
    if C is not None and "random" not in C:
        import modalrec.data as mdata

        C["random"] = cold_random_reference(mdata.load("ml100k", split="cold_start", seed=seed))
        C["random_note"] = "added after the run (issue 18): analytic, from the same cold split"
    if C is not None:
        add_random_ratios(C)
    atomic_write_json(json_path, results)
    atomic_write_text(out / "alignment.md", markdown(results))


def _environment(argv: list[str] | None, seconds: float) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads",
        "command": "python benchmarks/alignment.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "last_run_seconds": round(seconds, 1),
    }


def part_fusion(args: argparse.Namespace) -> dict[str, Any]:
    """Demo catalogue with a known modality mix: learned fusion weights vs truth; fused vs single."""
    import tempfile

    from modalrec.data.demo import load_truth, make_demo
    from modalrec.encoders import encode_dataset
    from modalrec.evaluation.protocol import evaluate
    from modalrec.models.fusion import FusionRecommender

    out: dict[str, Any] = {
        "protocol": "modalrec demo catalogue, per-user random 8:1:1 split (its own seed); "
        "test Recall@20/NDCG@20 by full ranking; early stopping on valid Recall@20",
        "runs": [],
    }
    P = args.plan["fusion"]
    mixes = [dict(m) for m in P["mixes"]]
    if args.quick:
        mixes = mixes[:1]
    n_items, n_users = (300, 200) if args.quick else (P["n_items"], P["n_users"])
    base = {**P["train"], "seed": args.seed} | ({"epochs": 15} if args.quick else {})
    for mix in mixes:
        tmp = Path(tempfile.mkdtemp(prefix="modalrec-demo-"))
        ds = make_demo(tmp, n_items=n_items, n_users=n_users, seed=args.seed, modality_weights=mix)
        truth = load_truth(tmp)["modality_weights"]
        encode_dataset(ds, None, None, cache_dir=CACHE, progress=not args.quiet, workers=1)
        mods = sorted(ds.features)
        run: dict[str, Any] = {"true_weights": truth, "modalities": mods, "models": {}}
        for name, params in [(f"fused {f}", {"fusion": f}) for f in P["fusions"]] + [
            (f"single {m}", {"fusion": "weighted_sum", "modalities": [m]}) for m in mods
        ]:
            t0 = time.perf_counter()
            model = FusionRecommender(**base, **params).fit(ds, progress=False)
            res = evaluate(model, ds, "test", ks=(20,))
            run["models"][name] = {
                "test_recall@20": res["recall@20"],
                "test_ndcg@20": res["ndcg@20"],
                "test_users": res.n_users,
                "best_valid_recall@20": model.meta.get("best_valid_recall@20"),
                "best_epoch": model.meta.get("best_epoch"),
                "modality_weights": model.meta.get("modality_weights"),
                "seconds": round(time.perf_counter() - t0, 1),
            }
            log(
                f"  demo {mix} {name}: R@20 {res['recall@20']:.4f} weights {model.meta.get('modality_weights')}"
            )
        learned = run["models"]["fused weighted_sum"]["modality_weights"]
        run["weights_rank_agreement"] = _rank_corr([truth[m] for m in mods], [learned[m] for m in mods])
        run["fused_beats_every_single"] = all(
            run["models"]["fused weighted_sum"]["test_recall@20"]
            > run["models"][f"single {m}"]["test_recall@20"]
            for m in mods
        )
        out["runs"].append(run)
    return out


def _rank_corr(a: list[float], b: list[float]) -> float:
    """Spearman rank correlation (no ties expected)."""
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


E2E = "collaborative alignment end to end (content tower, softmax on interactions)"


def vector_scorer(U: np.ndarray, V: np.ndarray) -> Any:
    """Scores of users by ``U @ V.T`` (for evaluate's ``scorer``)."""
    Ut = torch.from_numpy(np.ascontiguousarray(U, dtype=np.float32))
    Vt = torch.from_numpy(np.ascontiguousarray(V, dtype=np.float32))
    return lambda users: Ut[torch.as_tensor(users)] @ Vt.T


@dataclass
class ColdStart:
    """Part C's split, content features and evaluation, shared by every cold-start row.

    Why one object: every row is scored by the same evaluation (test users ranked over the cold items
    only) and chosen on the same validation numbers; keeping split, features and ``models`` together
    lets each family of rows be its own short step.
    """

    ds: Any
    cold: np.ndarray
    warm_mask: np.ndarray
    masks: dict[str, np.ndarray]
    image: np.ndarray
    text_combo: np.ndarray
    seed: int
    ks: tuple[int, ...] = (10, 20, 50)
    models: dict[str, Any] = field(default_factory=dict)
    pop: Any = None  # the popularity model: evaluate() runs it, scorers replace its scores
    train: Any = None  # training interactions (CSR float32), set once popularity is recorded

    def record(self, name: str, scorer: Any, extra: dict[str, Any] | None = None) -> None:
        """Evaluate a scorer on the test users over the cold items and keep it as a row."""
        from modalrec.evaluation.protocol import evaluate

        t0 = time.perf_counter()
        res = evaluate(self.pop, self.ds, "test", ks=self.ks, candidate_items=self.cold, scorer=scorer)
        self.models[name] = {
            "test": res.metrics,
            "test_users": res.n_users,
            "seconds": round(time.perf_counter() - t0, 2),
            **(extra or {}),
        }
        log(f"  cold {name}: R@20 {res['recall@20']:.4f} users {res.n_users}")

    def valid_recall(self, scorer: Any) -> float:
        """Validation Recall@20 over the cold items: what every cold-start selection reads."""
        from modalrec.evaluation.protocol import evaluate

        res = evaluate(self.pop, self.ds, "valid", ks=(20,), candidate_items=self.cold, scorer=scorer)
        return res["recall@20"]

    def knn_scorer(self, X: np.ndarray, k: int | None) -> Any:
        """ItemKNN on content: a user's score for a cold item sums its similarity to the user's warm items."""
        ds, cold, warm_mask = self.ds, self.cold, self.warm_mask
        Xn = l2_normalize(X)
        S = Xn[warm_mask] @ Xn[cold].T  # warm x cold similarity
        if k is not None and k < S.shape[0]:
            thr = -np.partition(-S, k - 1, axis=0)[k - 1]
            S = np.where(thr <= S, S, 0.0)
        full = np.zeros((ds.n_items, ds.n_items), np.float32)
        full[np.ix_(np.flatnonzero(warm_mask), cold)] = S
        Rw = self.train

        def score(users: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.asarray(Rw[users] @ full, dtype=np.float32))

        return score

    def collab(self, dim: int, use_image: bool) -> tuple[Any, dict[str, Any]]:
        """Content -> PureSVD item factors (CollaborativeAligner); cold items get factors from content alone."""
        U, V = pure_svd(self.train, dim, seed=self.seed)
        views = {"text": self.text_combo, "cf": V}
        mk = {"text": self.masks["text"], "cf": self.warm_mask}
        if use_image:
            views["image"], mk["image"] = self.image, self.masks["image_mv"]
        al = CollaborativeAligner().fit(views, mk, seed=self.seed)
        Vc = al.transform_joint({m: views[m] for m in views if m != "cf"}, mk)
        Ut = torch.from_numpy(U)
        Vt = torch.from_numpy(Vc.astype(np.float32))
        return (lambda users: Ut[torch.as_tensor(users)] @ Vt.T), {"reg": al.meta["reg"]}

    def e2e(self, content: str, hidden: int, seeds: Any) -> tuple[Any, dict[str, Any]]:
        """A content tower trained on the interactions (InteractionAligner), early-stopped on validation."""
        views = {"text": self.text_combo}
        mk = {"text": self.masks["text"]}
        if content == "text+image":
            views["image"], mk["image"] = self.image, self.masks["image_mv"]

        def validate(V: np.ndarray, U: np.ndarray) -> float:
            return self.valid_recall(vector_scorer(U, V))

        al = InteractionAligner(hidden=hidden, seeds=seeds).fit(
            views, mk, interactions=self.train, validate=validate, seed=self.seed
        )
        return vector_scorer(al.user_vectors, al.transform_joint(views, mk)), {
            "valid_recall@20": al.meta["valid_ensemble"],
            "best_steps": [h["best_step"] for h in al.meta["seeds"]],
        }


def cold_inputs(
    args: argparse.Namespace, P: dict[str, Any], F: dict[str, Any]
) -> tuple[ColdStart, dict[str, np.ndarray], np.ndarray]:
    """The cold split and its content features; also the raw MiniLM features and TF-IDF (for ItemKNN).

    Why warm items only for TF-IDF: its vocabulary and IDF must not be fitted on the cold items'
    text, which stands in for items the system has never seen.
    """
    import modalrec.data as mdata

    ds = mdata.load(P["dataset"], split=P["split"], seed=args.seed)
    cold = np.asarray(ds.cold_items, dtype=np.int64)
    warm_mask = np.ones(ds.n_items, bool)
    warm_mask[cold] = False
    warm_mask &= ds.item_popularity() > 0
    feats, masks = ml100k_features(ds, progress=not args.quiet)
    image = image_block(feats["image_mv"], VIEWS, "all")
    texts = ds.item_texts(list(FIELDS))
    tfidf = tfidf_block(texts, np.flatnonzero(warm_mask), **F["tfidf"])
    text_combo = np.concatenate(
        [l2_normalize(feats["text"]), F["weights"]["tfidf"] * l2_normalize(tfidf)], axis=1
    )
    log(f"cold-start split: {len(cold)} cold items, {int(warm_mask.sum())} warm items")
    cs = ColdStart(ds, cold, warm_mask, masks, image, text_combo, args.seed)
    return cs, feats, tfidf


def cold_itemknn(cs: ColdStart, P: dict[str, Any], minilm: np.ndarray, tfidf: np.ndarray) -> None:
    """ItemKNN on raw text features (the content-only reference), k chosen per feature set on validation."""
    knn_rows = [
        ("itemknn raw text (MiniLM)", minilm),
        ("itemknn raw text (TF-IDF)", tfidf),
        ("itemknn raw text (MiniLM+TF-IDF)", cs.text_combo),
    ]
    same("coldstart.itemknn_rows", [label for label, _ in knn_rows], P["itemknn_rows"])
    k_grid = [k or None for k in P["itemknn_k"]]  # 0 = every warm item
    for label, X in knn_rows:
        best = max(((cs.valid_recall(cs.knn_scorer(X, k)), k) for k in k_grid), key=lambda t: t[0])
        cs.record(label, cs.knn_scorer(X, best[1]), {"k": best[1], "valid_recall@20": best[0]})


def cold_collaborative(cs: ColdStart, P: dict[str, Any]) -> None:
    """Collaborative alignment (content -> PureSVD): factor dim and image use chosen on validation, then refit."""
    trials = []
    for dim in P["collaborative"]["dims"]:
        for use_image in P["collaborative"]["image"]:
            sc, meta = cs.collab(dim, use_image)
            trials.append({"dim": dim, "image": use_image, "valid_recall@20": cs.valid_recall(sc), **meta})
            log("  collaborative trial", trials[-1])
    best = max(trials, key=lambda t: t["valid_recall@20"])
    sc, _ = cs.collab(best["dim"], best["image"])
    cs.record("collaborative alignment (content -> PureSVD)", sc, {"selected": best, "trials": trials})


def cold_end_to_end(cs: ColdStart, P: dict[str, Any]) -> None:
    """End-to-end collaborative alignment: a content tower trained with the softmax likelihood of the
    interactions (InteractionAligner), early-stopped on the validation users' Recall@20 over the cold
    items; content set and tower width chosen on the same validation numbers, then refitted."""
    E = P["end_to_end"]
    e2e_trials = []
    for content in E["content"]:
        for hidden in E["hidden"]:
            _, meta = cs.e2e(content, hidden, E["seeds"])
            e2e_trials.append({"content": content, "hidden": hidden, **meta})
            log("  end-to-end trial", e2e_trials[-1])
    best_e2e = max(e2e_trials, key=lambda t: t["valid_recall@20"])
    sc, _ = cs.e2e(best_e2e["content"], best_e2e["hidden"], E["seeds"])
    cs.record(E2E, sc, {"selected": best_e2e, "trials": e2e_trials})


def cold_ratios(m: dict[str, Any]) -> dict[str, float]:
    """Test Recall@20 of the end-to-end and the collaborative alignment relative to the references."""
    e = m[E2E]["test"]["recall@20"]
    c = m["collaborative alignment (content -> PureSVD)"]["test"]["recall@20"]
    return {
        "e2e_ratio_vs_popularity": e / max(m["popularity"]["test"]["recall@20"], 1e-12),
        "e2e_ratio_vs_itemknn_text": e / max(m["itemknn raw text (MiniLM)"]["test"]["recall@20"], 1e-12),
        "e2e_ratio_vs_itemknn_text_tfidf": e
        / max(m["itemknn raw text (MiniLM+TF-IDF)"]["test"]["recall@20"], 1e-12),
        "e2e_ratio_vs_itemknn_text_tfidf_only": e
        / max(m["itemknn raw text (TF-IDF)"]["test"]["recall@20"], 1e-12),
        "ratio_vs_popularity": c / max(m["popularity"]["test"]["recall@20"], 1e-12),
        "ratio_vs_itemknn_text": c / max(m["itemknn raw text (MiniLM)"]["test"]["recall@20"], 1e-12),
        "ratio_vs_itemknn_text_tfidf": c
        / max(m["itemknn raw text (MiniLM+TF-IDF)"]["test"]["recall@20"], 1e-12),
    }


def part_coldstart(args: argparse.Namespace) -> dict[str, Any]:
    """ML-100K cold start: collaborative alignment vs popularity vs ItemKNN on raw text."""
    from modalrec.models import create

    P, F = args.plan["coldstart"], args.plan["features"]
    cs, feats, tfidf = cold_inputs(args, P, F)
    out: dict[str, Any] = {
        "protocol": f"ML-100K cold start (DESIGN.md): {len(cs.cold)} items (10%, seed {args.seed}) have no training "
        "interaction; test users ranked over cold items only (full ranking among them), train+valid masked; "
        "hyperparameters chosen on the valid split of the same cold items",
        "models": cs.models,
    }
    cs.pop = create("popularity").fit(cs.ds, progress=False)
    cs.record("popularity", None)
    out["random"] = cold_random_reference(cs.ds)
    cs.train = cs.ds.train.tocsr().astype(np.float32)
    cold_itemknn(cs, P, feats["text"], tfidf)
    cold_collaborative(cs, P)
    cold_end_to_end(cs, P)
    out.update(cold_ratios(cs.models))
    return out


def markdown_header(results: dict[str, Any]) -> list[str]:
    """Title, how to reproduce, the plan line, environment and per-part wall time and load.

    Why the load: every run shares 2 cores with other jobs, so times alone would mislead.
    """
    L = [
        "# Alignment, fusion and cold-start benchmark",
        "",
        "Reproduce: `python benchmarks/alignment.py` "
        "(parts: `--parts align,fusion,coldstart`). Numbers below are from the JSON next to this file.",
        "",
        plan_line(results),
        "",
    ]
    env = results.get("environment", {})
    if env:
        L += [f"Environment: {env}", ""]
    for part in ("align", "fusion", "coldstart"):
        if part in results and "seconds" in results[part]:
            R = results[part]
            L.append(
                f"- part {part}: {R['seconds']} s wall time; 1/5/15-min load average at start "
                f"{R.get('load_average_at_start', '?')}, at end {R.get('load_average_at_end', '?')} (2 cores, "
                "shared with other jobs)"
            )
    L.append("")
    return L


def markdown_align(A: dict[str, Any]) -> list[str]:
    """Part A: the retrieval report, then the validation-only selections, so the picks can be checked."""
    L = [
        report_markdown(A, "A. ML-100K text <-> poster retrieval (held-out items)").replace("# A.", "## A."),
        "Contrastive hyperparameter selection (validation items only):",
        "",
        "| params | valid MRR | valid text->image R@10 | epochs |",
        "|---|---|---|---|",
    ]
    for t in A.get("contrastive_selection", []):
        L.append(
            f"| `{json.dumps(t['params'])}` | {t['valid_mrr']:.4f} | {t['valid_t2i_recall@10']:.4f} | {t['epochs']} |"
        )
    L.append("")
    if A.get("scene_text_selection"):
        L += [
            "Scene text + learned aligner: learned part and scene-text weight (validation items only):",
            "",
            "| learned part | scene-text weight | valid MRR | valid text->image R@10 |",
            "|---|---|---|---|",
        ]
        for t in A["scene_text_selection"]:
            L.append(
                f"| {t['learned']} | {t['scene_text_weight']} | {t['valid_mrr']:.4f} | {t['valid_t2i_recall@10']:.4f} |"
            )
        L.append("")
    return L


def markdown_fusion(F: dict[str, Any]) -> list[str]:
    """Part B: per modality mix, the true weights next to each model's learned ones and test metrics."""
    L = [
        "## B. Demo catalogue: learned fusion weights vs the generator's truth",
        "",
        f"Protocol: {F['protocol']}",
        "",
    ]
    for run in F["runs"]:
        mods = run["modalities"]
        L.append("True modality weights: " + ", ".join(f"{m} {run['true_weights'][m]:.2f}" for m in mods))
        L += [
            "",
            "| model | test R@20 | test NDCG@20 | learned weights ("
            + ", ".join(mods)
            + ") | best epoch | test users | seconds |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, r in run["models"].items():
            w = r.get("modality_weights") or {}
            ws = ", ".join(f"{w.get(m, 0):.2f}" for m in mods) if not name.startswith("single") else "-"
            L.append(
                f"| {name} | {r['test_recall@20']:.4f} | {r['test_ndcg@20']:.4f} | {ws} | {r['best_epoch']} "
                f"| {r['test_users']} | {r['seconds']} |"
            )
        L += [
            "",
            f"Rank correlation of learned (weighted sum) vs true weights: {run['weights_rank_agreement']:.2f}; "
            f"fused weighted sum beats every single modality: {run['fused_beats_every_single']}",
            "",
        ]
    return L


def markdown_coldstart_table(C: dict[str, Any]) -> list[str]:
    """Part C's table: the analytic random reference first (when known), then every model's test row.

    Why popularity is relabelled: every cold item has popularity 0, so its ranking is tie order.
    """
    L = [
        "## C. ML-100K cold start",
        "",
        f"Protocol: {C['protocol']}",
        "",
        "| model | test R@10 | R@20 | R@50 | NDCG@20 | P@20 | users |",
        "|---|---|---|---|---|---|---|",
    ]
    if "random" in C:
        t = C["random"]
        L.append(
            f"| expected random ranking (analytic) | {t['recall@10']:.4f} | {t['recall@20']:.4f} | "
            f"{t['recall@50']:.4f} | - | {t['precision@20']:.4f} | {t['n_users']} |"
        )
    for name, r in C["models"].items():
        t = r["test"]
        label = (
            "popularity (tie order: cold items all have popularity 0; not a reference)"
            if name == "popularity"
            else name
        )
        L.append(
            f"| {label} | {t['recall@10']:.4f} | {t['recall@20']:.4f} | {t['recall@50']:.4f} | "
            f"{t['ndcg@20']:.4f} | {t.get('precision@20', float('nan')):.4f} | {r['test_users']} |"
        )
    return L


def markdown_e2e(C: dict[str, Any]) -> list[str]:
    """Part C's end-to-end line: its validation pick, its ratios to the references, and every trial."""
    sel = C["models"][E2E]["selected"]
    return [
        f"End-to-end collaborative alignment (selected on validation: content {sel['content']}, "
        f"hidden {sel['hidden']}, 3 seeds concatenated; valid R@20 {sel['valid_recall@20']:.4f}) / "
        + (
            f"expected random ranking: {C['e2e_ratio_vs_random']:.2f}x; "
            if "e2e_ratio_vs_random" in C
            else ""
        )
        + "/ ItemKNN raw text (MiniLM): "
        f"{C['e2e_ratio_vs_itemknn_text']:.2f}x; / ItemKNN raw text (TF-IDF): "
        f"{C.get('e2e_ratio_vs_itemknn_text_tfidf_only', float('nan')):.2f}x; "
        "/ ItemKNN raw text (MiniLM+TF-IDF): "
        f"{C['e2e_ratio_vs_itemknn_text_tfidf']:.2f}x. Trials (valid R@20): "
        + "; ".join(
            f"{t['content']}, hidden {t['hidden']}: {t['valid_recall@20']:.4f}"
            for t in C["models"][E2E]["trials"]
        ),
        "",
    ]


def markdown_coldstart(C: dict[str, Any]) -> list[str]:
    """Part C: the table, then the collaborative (and end-to-end) ratios to the references.

    Fills the random-ranking ratios into ``C`` first (results older than the random reference lack them).
    """
    L = markdown_coldstart_table(C)
    if "random" in C:
        add_random_ratios(C)
    vs_random = f"/ expected random ranking: {C['ratio_vs_random']:.2f}x; " if "ratio_vs_random" in C else ""
    L += [
        "",
        f"Collaborative alignment (R@20) {vs_random}"
        f"/ ItemKNN raw text (MiniLM): {C['ratio_vs_itemknn_text']:.2f}x; "
        f"/ ItemKNN raw text (MiniLM+TF-IDF): {C['ratio_vs_itemknn_text_tfidf']:.2f}x",
        "",
    ]
    if "e2e_ratio_vs_popularity" in C:
        L += markdown_e2e(C)
    L += [
        "Recall definition: hits / #relevant (modalrec default; see evaluation.protocol).",
        "",
    ]
    return L


def markdown(results: dict[str, Any]) -> str:
    """Human-readable tables of every part that has results."""
    L = markdown_header(results)
    if "align" in results:
        L += markdown_align(results["align"])
    if "fusion" in results:
        L += markdown_fusion(results["fusion"])
    if "coldstart" in results:
        L += markdown_coldstart(results["coldstart"])
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())

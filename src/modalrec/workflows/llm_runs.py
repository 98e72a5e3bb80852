"""The LLM layer on a run directory: explain, describe from one modality, re-ranked evaluation.

Why a separate module: the CLI (``modalrec explain / describe / evaluate --rerank llm``) and Python
users should call the same functions, and these functions are where run-directory details live
(which features a run holds, the fusion model's learned modality weights, where an item projector
is kept). The LLM functions themselves (:mod:`modalrec.llm.explain`, ``projector``, ``rerank``) know
nothing about run directories.

An item projector trained for a run is stored in ``RUN_DIR/llm/projector-<modality>.safetensors``,
a fine-tuned re-ranker (``modalrec llm-tune``) in ``RUN_DIR/llm/reranker/`` (LoRA adapters + the
training curve and the blend chosen on validation). The run's manifest lists neither (they are added
after ``modalrec fit``), so the run's checksums stay valid.

Which model answers (in process or an HTTP server) and what the items are called come from the
``[llm]`` config (:func:`modalrec.llm.config.read_llm_config`: ``--llm-config``, ``RUN_DIR/llm.toml``
or ``$MODALREC_LLM_CONFIG``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modalrec.core.errors import ConfigError
from modalrec.llm.text import ItemText

if TYPE_CHECKING:
    from modalrec.data.dataset import Dataset
    from modalrec.llm.backend import Backend
    from modalrec.llm.explain import Explanation
    from modalrec.llm.loading import LLM
    from modalrec.llm.projector import ItemProjector
    from modalrec.llm.rerank import RerankResult
    from modalrec.llm.tune import TuneResult
    from modalrec.workflows.rundir import Run


def evidence_weights(run: Run) -> dict[str, float] | None:
    """Per-view weights for explanations: half collaborative, half content split by the learned weights.

    Only fusion models store learned modality weights (``model.meta["modality_weights"]``); for
    other models ``None`` (every view weighs the same).
    """
    w = run.model.meta.get("modality_weights") if isinstance(run.model.meta, dict) else None
    if not w:
        return None
    content = {m: float(v) for m, v in w.items() if m in run.dataset.features and float(v) > 0}
    tot = sum(content.values())
    if tot <= 0:
        return None
    return {"collaborative": 0.5, **{m: 0.5 * v / tot for m, v in content.items()}}


def explain_run(
    run_dir: str | Path,
    user: str,
    item: str,
    *,
    use_llm: bool = True,
    k: int = 3,
    llm: LLM | Backend | None = None,
    llm_config: str | Path | None = None,
) -> Explanation:
    """:func:`modalrec.llm.explain` for external ids of a run (its features and fusion weights).

    The model (``llm``, else the ``[llm]`` config's backend) and the item noun come from the config.
    """
    from modalrec.llm.config import read_llm_config
    from modalrec.llm.explain import explain
    from modalrec.workflows.rundir import load_run

    run = load_run(run_dir)
    cfg = read_llm_config(llm_config, run_dir)
    if llm is None and use_llm:
        llm = cfg.backend_instance()
    return explain(
        run.dataset,
        run.model,
        str(user),
        str(item),
        llm=llm,
        item_vectors=run.dataset.features,
        fusion_weights=evidence_weights(run),
        k=k,
        use_llm=use_llm,
        domain=cfg.domain(run.dataset),
    )


def projector_path(run_dir: str | Path, modality: str) -> Path:
    return Path(run_dir) / "llm" / f"projector-{modality}.safetensors"


def _modality_vectors(ds: Dataset, modality: str) -> tuple[np.ndarray, np.ndarray]:
    if modality not in ds.features:
        have = ", ".join(sorted(ds.features)) or "none"
        raise ConfigError(f"the run has no {modality!r} item features (it has: {have})")
    x = np.asarray(ds.features[modality], dtype=np.float32)
    mask = ds.feature_masks.get(modality)
    present = np.asarray(mask, dtype=bool) if mask is not None else np.ones(len(x), dtype=bool)
    return x, present & np.isfinite(x).all(axis=1)


def projector_splits(ds: Dataset, modality: str, *, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded 80/10/10 split of the items that have text and the modality: train / valid / held_out.

    Held-out items are never seen in training, so describing them shows what the vector alone says.
    """
    _, present = _modality_vectors(ds, modality)
    texts = ItemText(ds)
    ok = np.flatnonzero(present & np.array(texts.has_text, dtype=bool))
    if len(ok) < 10:
        raise ConfigError(f"only {len(ok)} items have both text and {modality!r} features; need at least 10")
    perm = np.random.default_rng(seed).permutation(ok)
    n10 = max(1, len(ok) // 10)
    return {
        "held_out": np.sort(perm[:n10]),
        "valid": np.sort(perm[n10 : 2 * n10]),
        "train": np.sort(perm[2 * n10 :]),
    }


def fit_run_projector(
    run_dir: str | Path,
    modality: str,
    *,
    llm: LLM,
    max_seconds: float = 300.0,
    epochs: int = 3,
    n_tokens: int = 4,
    seed: int = 0,
    progress: bool = True,
) -> ItemProjector:
    """Train the projector of ``modality`` for a run (early stopping on its validation items) and save it."""
    from modalrec.llm.projector import train_projector
    from modalrec.workflows.rundir import load_run

    run = load_run(run_dir)
    ds = run.dataset
    x, _ = _modality_vectors(ds, modality)
    sp = projector_splits(ds, modality, seed=seed)
    texts = ItemText(ds)
    res = train_projector(
        llm,
        x[sp["train"]],
        [texts.target(int(i)) for i in sp["train"]],
        valid_vectors=x[sp["valid"]],
        valid_texts=[texts.target(int(i)) for i in sp["valid"]],
        n_tokens=n_tokens,
        epochs=epochs,
        max_seconds=max_seconds,
        seed=seed,
        progress=progress,
    )
    # Calibration of the constrained genre readout (see describe_run): each genre's mean score
    # after the soft tokens of the projector's validation items.
    vocab = sorted({g for gs in texts.genres for g in gs})
    calibration: dict[str, float] = {}
    if vocab and len(sp["valid"]):
        from modalrec.llm.projector import label_logprobs

        ref = label_logprobs(llm, res.projector, x[sp["valid"]], vocab).mean(axis=0)
        calibration = {g: round(float(v), 5) for g, v in zip(vocab, ref, strict=True)}
    extra = {
        "modality": modality,
        "llm": llm.name,
        "genre_calibration": calibration,
        "seed": seed,
        "held_out_items": [str(ds.item_ids[i]) for i in sp["held_out"]],
        "n_train": len(sp["train"]),
        "train_loss": res.train_loss,
        "valid_loss": res.valid_loss,
        "seconds": round(res.seconds, 1),
    }
    res.projector.save(projector_path(run_dir, modality), extra=extra)
    return res.projector


def _projector_extra(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    return dict(json.loads(meta.get("extra", "{}")))


def describe_run(
    run_dir: str | Path,
    item: str,
    *,
    modality: str = "image",
    projector: str | Path | None = None,
    llm: LLM | None = None,
    train_seconds: float = 300.0,
    max_new_tokens: int = 32,
    progress: bool = True,
) -> dict[str, Any]:
    """What the LLM says about ``item`` from its ``modality`` vector alone (soft tokens, no text).

    Uses ``projector`` or the run's stored projector; trains and stores one first (bounded by
    ``train_seconds``) if the run has none. The result names the item's true genres and whether
    the item was held out of the projector's training (only then is the description a real test).
    """
    from modalrec.llm.loading import load_llm
    from modalrec.llm.projector import ItemProjector, describe, genres_in, label_logprobs, name_labels
    from modalrec.workflows.rundir import load_run

    if llm is None:
        from modalrec.llm.config import read_llm_config

        cfg = read_llm_config(None, run_dir)
        if cfg.backend != "local":
            raise ConfigError(
                'describe feeds soft tokens (embeddings) to the model: it needs [llm] backend = "local"'
            )
        llm = load_llm(cfg.model, threads=cfg.threads, dtype=cfg.dtype)
    run = load_run(run_dir)
    ds = run.dataset
    i = ds.item_index(str(item))
    x, present = _modality_vectors(ds, modality)
    if not present[i]:
        raise ConfigError(f"item {item!r} has no {modality!r} features in this run")
    path = Path(projector) if projector is not None else projector_path(run_dir, modality)
    trained_now = False
    if path.is_file():
        proj = ItemProjector.load(path)
    elif projector is not None:
        raise ConfigError(f"projector file {path} not found")
    else:
        proj = fit_run_projector(run_dir, modality, llm=llm, max_seconds=train_seconds, progress=progress)
        trained_now = True
    if proj.d_in != x.shape[1]:
        raise ConfigError(
            f"{path}: projector expects {proj.d_in}-d vectors but {modality!r} is {x.shape[1]}-d"
        )
    extra = _projector_extra(path)
    text = describe(llm, proj, x[i], max_new_tokens=max_new_tokens)[0]
    texts = ItemText(ds)
    vocab = sorted({g for gs in texts.genres for g in gs})
    named = genres_in(text, vocab)
    held = set(extra.get("held_out_items", []))
    # Constrained readout: every genre name scored after the soft tokens, minus its mean over the
    # projector's validation items (stored at training), best three. Free text is dominated by
    # frequent genres; the calibrated scores say which genres *this* vector makes likelier.
    calib = extra.get("genre_calibration") or {}
    likely: list[str] = []
    if calib and set(calib) == set(vocab):
        lp = label_logprobs(llm, proj, x[i], vocab)
        ref = np.array([[calib[g] for g in vocab]])
        likely = [vocab[j] for j in name_labels(lp, ref, k=min(3, len(vocab)))[0]]
    return {
        "item_id": str(item),
        "title": texts.titles[i],
        "true_genres": texts.genres[i],
        "from": modality,
        "description": text,
        "named_genres": named,
        "correct_genres": [g for g in named if g in texts.genres[i]],
        "likely_genres_calibrated": likely,
        "held_out_of_projector_training": str(item) in held if held else None,
        "projector": str(path),
        "projector_trained_now": trained_now,
    }


def tuned_dir(run_dir: str | Path) -> Path:
    """Where ``modalrec llm-tune`` keeps a run's fine-tuned re-ranker."""
    return Path(run_dir) / "llm" / "reranker"


def rerank_run(
    run_dir: str | Path,
    split: str = "test",
    *,
    n_candidates: int = 20,
    max_users: int | None = 200,
    valid_users: int = 200,
    llm: LLM | Backend | None = None,
    seed: int = 0,
    progress: bool = True,
    llm_config: str | Path | None = None,
    run: Run | None = None,
) -> RerankResult:
    """:func:`modalrec.llm.rerank_evaluate` on a run's model and split.

    With a fine-tuned re-ranker in the run (``modalrec llm-tune``) and the in-process backend, its
    adapters are merged into the LLM and the LLM score and blend weight it chose on validation are
    used; otherwise the blend is chosen on ``valid_users`` validation users here.
    """
    from modalrec.llm.backend import Backend, LocalBackend
    from modalrec.llm.config import read_llm_config
    from modalrec.llm.rerank import LLMReranker, rerank_evaluate
    from modalrec.llm.tune import has_tuned, load_tuned
    from modalrec.workflows.rundir import load_run

    run = run or load_run(run_dir)
    cfg = read_llm_config(llm_config, run_dir)
    backend = llm if llm is not None else cfg.backend_instance()
    score: str | None = None
    weight: float | None = None
    tuned = tuned_dir(run_dir)
    # the in-process model, if any: a fine-tuned re-ranker is merged into it
    local = backend.llm if isinstance(backend, LocalBackend) else None
    if not isinstance(backend, Backend):
        local = backend
    if local is not None and has_tuned(tuned):
        merged, info = load_tuned(local, tuned)
        backend, score, weight = merged, str(info["llm_score"]), float(info["blend_weight"])
        max_history = int(info.get("params", {}).get("max_history", 10))
    else:
        max_history = 10
    reranker = LLMReranker(
        run.dataset, backend, max_history=max_history, seed=seed, domain=cfg.domain(run.dataset)
    )
    return rerank_evaluate(
        run.model,
        run.dataset,
        split,
        reranker=reranker,
        n_candidates=n_candidates,
        max_users=max_users,
        valid_users=valid_users,
        weight=weight,
        score=score,
        seed=seed,
        progress=progress,
    )


def tune_run(
    run_dir: str | Path,
    *,
    params: dict[str, Any] | None = None,
    llm_config: str | Path | None = None,
    progress: Any = None,
) -> TuneResult:
    """Fine-tune the re-ranker's LLM (LoRA) for a run and store it in :func:`tuned_dir`.

    Training uses the run's training interactions only; early stopping and the blend choice use
    two disjoint sets of its validation users (see :mod:`modalrec.llm.tune`).
    """
    from modalrec.llm.config import read_llm_config
    from modalrec.llm.loading import load_llm
    from modalrec.llm.tune import TuneParams, save_tuned, tune_reranker
    from modalrec.workflows.rundir import load_run

    cfg = read_llm_config(llm_config, run_dir)
    if cfg.backend != "local":
        raise ConfigError(
            'llm-tune trains the model in this process: use [llm] backend = "local" (then serve the '
            "tuned model with `modalrec llm-serve --adapter RUN_DIR/llm/reranker`)"
        )
    p = TuneParams.build("llm-tune", "lora", params or {})
    run = load_run(run_dir)
    llm = load_llm(cfg.model, threads=cfg.threads, dtype=cfg.dtype)
    res = tune_reranker(llm, run.model, run.dataset, p, domain=cfg.domain(run.dataset), progress=progress)
    save_tuned(res, tuned_dir(run_dir), extra={"base_model": run.model.name, "run": str(run_dir)})
    return res

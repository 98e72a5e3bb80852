"""CLI of the LLM layer on a small real run directory: explain, describe --from image, evaluate --rerank llm."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from modalrec.cli import app
from modalrec.evaluation.protocol import evaluate
from modalrec.llm.explain import TitleIndex, check_grounding, foreign_nouns, ground
from modalrec.llm.text import ItemText
from modalrec.models import create
from modalrec.workflows.llm_runs import projector_splits
from modalrec.workflows.pipeline import write_run
from modalrec.workflows.rundir import load_run

pytestmark = pytest.mark.slow
runner = CliRunner()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, small_movies):
    """6 users, 12 movies, an ItemKNN model and an 'image' feature that separates the two tastes."""
    ds = small_movies
    rng = np.random.default_rng(0)
    img = rng.normal(size=(ds.n_items, 16)).astype(np.float32)
    img[0::2, 0] += 3.0  # family films share a direction
    ds.features["image"] = img
    ds.feature_masks["image"] = np.ones(ds.n_items, dtype=bool)
    model = create("itemknn").fit(ds, progress=False)
    out = tmp_path_factory.mktemp("llmrun") / "run"
    write_run(ds, model, out, config={"test": True}, ks=(5,))
    return out


def _json(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_explain_command_is_grounded(llm, run_dir, small_movies) -> None:
    ds = small_movies
    hist = set(ds.train[0].indices) | set(ds.valid[0].indices)
    item = next(str(i + 1) for i in range(ds.n_items) if i not in hist)
    index = TitleIndex(ItemText(ds).titles)
    allowed = [*hist, int(item) - 1]
    outs = []
    for extra in (["--no-llm"], []):
        out = _json(
            runner.invoke(app, ["explain", str(run_dir), "--user", "u0", "--item", item, "--json", *extra])
        )
        assert out["grounded"] and out["item_id"] == item
        assert set(out["modality_weights"]) == {"collaborative", "image"}
        assert check_grounding(out["text"], allowed, index) == []
        assert {e["item_id"] for e in out["evidence"]} <= {str(i + 1) for i in hist}
        outs.append(out)
    template, phrased = outs
    assert template["source"] == "template" and template["llm_text"] is None
    assert phrased["evidence"] == template["evidence"]
    # The LLM's answer went through grounding: what was dropped, and which text and source resulted.
    kept, rejected = ground(phrased["llm_text"], allowed, index)
    foreign = foreign_nouns(kept, ItemText(ds).domain)  # the fixture names no noun: "item" only
    if foreign:
        kept, rejected = "", [*rejected, *foreign]
    assert phrased["rejected"] == rejected
    if phrased["source"] == "template":
        assert phrased["text"] == template["text"]
    elif phrased["source"] == "llm+fact":  # the kept sentences, plus one fact sentence from the data
        assert phrased["text"].startswith(kept.rstrip(".")) and phrased["check"]["passes"]
    else:
        assert phrased["text"] == kept and phrased["check"]["passes"]
        assert phrased["source"] == ("llm-stripped" if rejected else "llm")
    plain = runner.invoke(app, ["explain", str(run_dir), "--user", "u0", "--item", item, "--no-llm"])
    verdict = (
        "passes" if template["check"]["passes"] else "fails: " + "; ".join(template["check"]["failures"])
    )
    assert plain.exit_code == 0 and f"checker: {verdict}" in plain.output, plain.output
    bad = runner.invoke(app, ["explain", str(run_dir), "--user", "nobody", "--item", item, "--no-llm"])
    assert bad.exit_code == 2 and "unknown user" in bad.output


def test_describe_trains_stores_and_reuses_a_projector(llm, run_dir) -> None:
    args = ["describe", str(run_dir), "3", "--from", "image", "--train-seconds", "20", "--json", "--quiet"]
    first = _json(runner.invoke(app, args))
    assert first["projector_trained_now"] and (run_dir / "llm" / "projector-image.safetensors").is_file()
    assert first["title"] == "Babe (1995)" and first["from"] == "image"
    # Item 3 was one of the projector's training/validation items; the held-out item is reported as such.
    held_out = projector_splits(load_run(run_dir).dataset, "image")["held_out"]
    assert 2 not in held_out and first["held_out_of_projector_training"] is False
    held = _json(runner.invoke(app, [*args[:2], str(held_out[0] + 1), *args[3:]]))
    assert held["held_out_of_projector_training"] is True and not held["projector_trained_now"]
    second = _json(runner.invoke(app, args))
    assert not second["projector_trained_now"] and second["description"] == first["description"]
    # the calibrated genre readout: three distinct genres of the catalogue, stable across calls
    likely = first["likely_genres_calibrated"]
    assert len(likely) == 3 == len(set(likely)) and likely == second["likely_genres_calibrated"]
    assert set(likely) <= {g for gs in ItemText(load_run(run_dir).dataset).genres for g in gs}
    missing = runner.invoke(app, ["describe", str(run_dir), "3", "--from", "audio"])
    assert missing.exit_code == 2 and "no 'audio' item features" in missing.output


def test_evaluate_rerank_llm(llm, run_dir) -> None:
    out = _json(runner.invoke(app, ["evaluate", str(run_dir), "--rerank", "llm", "--json"]))
    assert out["n_users"] == 6 and set(out["metrics"]) == set(out["base"]["metrics"])
    assert out["rerank"]["chosen_on"].startswith("validation") and out["rerank"]["n_candidates"] == 20
    # The base side is the standard protocol's result on the same (all six) test users.
    run = load_run(run_dir)
    ref = evaluate(run.model, run.dataset, users=np.arange(run.dataset.n_users))
    assert out["base"]["metrics"] == pytest.approx(ref.metrics, nan_ok=True)
    # The chosen blend is the best of the validation grid, and never worse there than the base model.
    val = out["rerank"]["validation"]
    chosen = val["grid"][out["rerank"]["llm_score"]][f"{out['rerank']['blend_weight']:g}"]
    assert chosen == val["best"] >= val["base"] and val["n_users"] == 6
    if out["rerank"]["blend_weight"] == 0:
        assert out["metrics"] == out["base"]["metrics"]
    assert out["rerank"]["latency_p50_s"] <= out["rerank"]["latency_p95_s"] <= out["seconds"]
    bad = runner.invoke(app, ["evaluate", str(run_dir), "--rerank", "gpt"])
    assert bad.exit_code == 2 and "unknown re-ranker" in bad.output

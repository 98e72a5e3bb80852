"""`modalrec report`: modality ablations, warm vs cold, K = 10/20/50, Markdown + self-contained HTML."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from modalrec.cli import app
from modalrec.models import create
from modalrec.workflows.ablation import cold_and_warm, modality_subsets, run_ablations, variant_model
from modalrec.workflows.pipeline import write_run
from modalrec.workflows.report import write_report
from synthetic import make_clustered

FAST = {"dim": 16, "batch_size": 256, "epochs": 20, "patience": 3, "eval_every": 2, "lr": 0.01}


def test_variants_cover_singles_pairs_all_none() -> None:
    assert modality_subsets(["image", "text"]) == [["image"], ["text"], ["image", "text"], []]
    assert variant_model("vbpr", {"lr": 0.1, "content_dim": 8}, []) == ("bprmf", {"lr": 0.1})
    assert variant_model("graphmm", {"lr": 0.1}, [])[1]["modalities"] == []
    assert variant_model("lightgcn", {"lr": 0.1}, ["text"]) == ("lightgcn", {"lr": 0.1})
    assert variant_model("ease_content", {"l2": 5.0, "content_weight": 0.2}, []) == ("ease", {"l2": 5.0})


def test_ablations_measure_content_on_cold_items(tmp_path: Path) -> None:
    ds = make_clustered(with_features=True, cold_share=0.3)
    cold, warm = cold_and_warm(ds)
    assert len(cold) == 24 and len(cold) + len(warm) == ds.n_items
    res = run_ablations(ds, "vbpr", {**FAST, "content_dim": 8}, ks=(10, 20, 50))
    rows = {v["variant"]: v for v in res["variants"]}
    assert list(rows) == ["image", "text", "image + text", "none (CF)"]
    assert rows["none (CF)"]["model"] == "bprmf"
    for v in rows.values():
        assert set(v["test"]) >= {f"{m}@{k}" for m in ("recall", "ndcg") for k in (10, 20, 50)}
        assert v["valid_curve"] and "test_cold" in v and "test_warm" in v
    # Clean text reveals the cluster of a cold item: text beats pure CF (random on cold items) there.
    assert rows["text"]["test_cold"]["recall@10"] > rows["none (CF)"]["test_cold"]["recall@10"] + 0.1
    assert set(rows["image + text"]["modality_weights"]) == {"image", "text"}
    paths = write_report(res, tmp_path / "rep")
    md = paths["markdown"].read_text()
    assert "| image + text | vbpr |" in md and "cold R@20" in md
    page = paths["html"].read_text()
    assert page.count("data:image/png;base64,") == 4  # bars, Recall@K, weights, training curves
    assert "src='http" not in page and "<link" not in page  # self-contained
    assert json.loads(paths["json"].read_text())["n_cold_items"] == 24


def test_report_cli_on_run_dir(tmp_path: Path) -> None:
    ds = make_clustered(with_features=True, n_users=60, n_items=60)
    model = create("graphmm", **FAST).fit(ds, progress=False)
    write_run(ds, model, tmp_path / "run", config={"model": {"name": "graphmm"}})
    r = CliRunner().invoke(app, ["report", str(tmp_path / "run"), "--out", str(tmp_path / "rep")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert [v["variant"] for v in res["variants"]] == [
        "as trained",
        "image",
        "text",
        "image + text",
        "none (CF)",
    ]
    # The "as trained" row re-scores the saved model: same numbers as training with the same seed.
    assert res["variants"][0]["test"]["recall@20"] == res["variants"][3]["test"]["recall@20"]
    assert (tmp_path / "rep" / "report.html").exists()
    r = CliRunner().invoke(app, ["report", str(tmp_path / "nothing.txt"), "--out", str(tmp_path / "x")])
    assert r.exit_code == 2


def test_report_cli_on_config(tmp_path: Path) -> None:
    import numpy as np

    ds = make_clustered(with_features=True, n_users=60, n_items=60)
    rows = ["user,item,x_label"]
    for label, m in enumerate((ds.train, ds.valid, ds.test)):
        coo = m.tocoo()
        rows += [f"{u},{i},{label}" for u, i in zip(coo.row, coo.col, strict=True)]
    (tmp_path / "inter.csv").write_text("\n".join(rows) + "\n")
    np.save(tmp_path / "text.npy", ds.features["text"])
    (tmp_path / "dataset.toml").write_text(
        'name = "tiny"\ninteractions = "inter.csv"\n[features]\ntext = "text.npy"\n'
    )
    cfg = tmp_path / "run.toml"
    cfg.write_text(
        f'[data]\nname = "{tmp_path}"\n[model]\nname = "vbpr"\n'
        "params = { dim = 16, content_dim = 8, batch_size = 256, epochs = 10, patience = 3, lr = 0.01 }\n"
        "[evaluate]\nks = [5, 10]\n"
    )
    r = CliRunner().invoke(app, ["report", str(cfg), "--out", str(tmp_path / "rep")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert [v["variant"] for v in res["variants"]] == ["text", "none (CF)"]
    assert res["ks"] == [5, 10, 20] and "recall@5" in res["variants"][0]["test"]
    assert "| text | vbpr |" in (tmp_path / "rep" / "report.md").read_text()

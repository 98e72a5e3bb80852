"""modalrec add-items: new items encoded with the run's encoders, placed by its cold-start model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from modalrec.cli import app
from modalrec.core.errors import ConfigError, DataError
from modalrec.workflows.add_items import add_items
from modalrec.workflows.config import load_config
from modalrec.workflows.pipeline import fit
from modalrec.workflows.rundir import load_run

WORDS = [
    ["red", "wool", "chair", "sofa", "velvet"],
    ["blue", "steel", "lamp", "light", "bulb"],
    ["green", "oak", "desk", "shelf", "pine"],
]


def _write_data(d: Path, model: str) -> Path:
    rng = np.random.default_rng(0)
    items = ["item_id,title"] + [f"i{i},{' '.join(rng.choice(WORDS[i % 3], 3))}" for i in range(60)]
    (d / "items.csv").write_text("\n".join(items) + "\n")
    rows = ["user,item"]
    for u in range(90):
        own = [i for i in range(60) if i % 3 == u % 3]
        rows += [f"u{u},i{i}" for i in rng.choice(own, 12, replace=False)]
    (d / "inter.csv").write_text("\n".join(rows) + "\n")
    params = (
        "{ dim = 8, hidden = 16, max_steps = 80, eval_every = 10, seeds = 1, threads = 1, "
        'collaborative = { model = "itemknn", params = { k = 10 } } }'
        if model == "coldstart"
        else "{ k = 10 }"
    )
    cfg = d / f"{model}.toml"
    cfg.write_text(
        f"""[data]
name = "{d / "inter.csv"}"
seed = 1
options = {{ items = "{d / "items.csv"}" }}

[encode]
modalities = ["text"]
cache_dir = "{d / "cache"}"
options = {{ text = {{ encoder = "char-ngrams", fields = ["title"], dim = 256 }} }}

[model]
name = "{model}"
params = {params}
"""
    )
    return cfg


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("addrun")
    fit(load_config(_write_data(d, "coldstart")), d / "run", progress=False)
    return d / "run"


def test_new_items_are_placed_where_their_content_says(run_dir: Path, tmp_path: Path) -> None:
    new = tmp_path / "new.csv"
    new.write_text("item_id,title\nn0,red velvet sofa chair\nn1,blue steel lamp bulb\n")
    res = add_items(run_dir, new, tmp_path / "out")
    assert res.added == ["n0", "n1"] and res.missing == {"text": 0}
    run = load_run(tmp_path / "out")
    old = load_run(run_dir)
    assert run.dataset.n_items == old.dataset.n_items + 2
    assert run.dataset.item_ids[-2:].tolist() == ["n0", "n1"]
    assert run.dataset.items is not None and run.dataset.items["title"][-1] == "blue steel lamp bulb"
    # the old items score exactly as before; the new ones, untouched by interactions, are ranked by
    # the tower: cluster-0 users ("red wool chair" buyers) prefer n0, cluster-1 users n1
    users = np.arange(old.dataset.n_users)
    np.testing.assert_allclose(
        run.model.score(users)[:, : old.dataset.n_items], old.model.score(users), atol=1e-5
    )
    s = run.model.score(users)[:, -2:]
    c0, c1 = users % 3 == 0, users % 3 == 1
    assert (s[c0, 0] > s[c0, 1]).mean() > 0.8 and (s[c1, 1] > s[c1, 0]).mean() > 0.8
    assert (run_dir / "manifest.json").exists() and load_run(run_dir).dataset.n_items == old.dataset.n_items


@pytest.mark.parametrize(
    ("csv", "match"),
    [
        ("title\nfoo\n", "no item_id column"),
        ("item_id,title\n,red sofa\n", r"new.csv:1: field 'item_id': empty item_id"),
        (
            "item_id,title\nn0,red sofa\nn0,blue lamp\n",
            r"new.csv:2: field 'item_id': item_id 'n0' repeats row 1",
        ),
        ("item_id,title\ni3,red sofa\n", "already in the run's catalogue"),
        ("item_id,title,price\nn0,red sofa,3\n", r"unknown column\(s\) \['price'\]"),
        ("item_id,title\nn0,red sofa\nn1,\n", r"new.csv:2: item 'n1' has no content .*empty text"),
        ("item_id,title\n", "no items to add"),
    ],
)
def test_bad_rows_are_refused_with_file_row_and_field(
    run_dir: Path, tmp_path: Path, csv: str, match: str
) -> None:
    new = tmp_path / "new.csv"
    new.write_text(csv)
    with pytest.raises(DataError, match=match):
        add_items(run_dir, new, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_run_without_a_coldstart_model_is_refused_and_the_cli_exits_2(tmp_path: Path) -> None:
    fit(load_config(_write_data(tmp_path, "itemknn")), tmp_path / "knn", progress=False)
    new = tmp_path / "new.csv"
    new.write_text("item_id,title\nn0,red sofa\n")
    with pytest.raises(ConfigError, match="'itemknn' cannot place items"):
        add_items(tmp_path / "knn", new, tmp_path / "out")
    res = CliRunner().invoke(
        app, ["add-items", str(tmp_path / "knn"), str(new), "--out", str(tmp_path / "o")]
    )
    assert res.exit_code == 2 and "cannot place items" in res.output

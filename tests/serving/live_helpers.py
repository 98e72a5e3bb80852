"""Helpers for the live-items tests: a small coldstart run fitted through ``modalrec fit`` with a
recorded text encoder (character n-grams: no model weights, deterministic), and a server config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from modalrec.workflows.config import load_config
from modalrec.workflows.pipeline import fit

WORDS = [
    ["red", "wool", "chair", "sofa", "velvet"],
    ["blue", "steel", "lamp", "light", "bulb"],
    ["green", "oak", "desk", "shelf", "pine"],
]


def fit_run(d: Path, model: str = "coldstart") -> Path:
    """60 items in three word clusters, 90 users who each buy in one cluster; a run of ``model``."""
    rng = np.random.default_rng(0)
    items = ["item_id,title,colour"] + [
        f"i{i},{' '.join(rng.choice(WORDS[i % 3], 3))},{WORDS[i % 3][0]}" for i in range(60)
    ]
    (d / "items.csv").write_text("\n".join(items) + "\n")
    rows = ["user,item"]
    for u in range(90):
        own = [i for i in range(60) if i % 3 == u % 3]
        rows += [f"u{u},i{i}" for i in rng.choice(own, 12, replace=False)]
    (d / "inter.csv").write_text("\n".join(rows) + "\n")
    params = (
        "{ dim = 8, hidden = 16, max_steps = 80, eval_every = 10, seeds = 1, threads = 1, blend_weight = 0.5, "
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
    fit(load_config(cfg), d / model, progress=False)
    return d / model


def query_encoder() -> Any:
    """The run's own text encoder as the /search query encoder (same 256-d space as its gallery)."""
    from modalrec.encoders.registry import build_encoder

    enc = build_encoder({"encoder": "char-ngrams", "dim": 256})
    return lambda texts: enc.encode(list(texts))

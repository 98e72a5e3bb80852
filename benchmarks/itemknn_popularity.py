"""Why our ItemKNN can end below Popularity on a data set: a validation-only diagnosis (issue 18).

baselines.md flags any row at or below Popularity. ItemKNN is the same code on every data set, so when it
is below Popularity on one data set and above it on the others, the question is what that data set does
differently. This script measures, on the **validation** split only (the test matrix is never read):

* how many training items a validation user has (a neighbourhood score rests on them);
* reach: the share of validation pairs whose item co-occurs in training with one of the user's items
  (an item that co-occurs with none can only be ranked by ItemKNN's popularity tie-breaker);
* how popular the validation items are, and how popular the items are that Popularity and ItemKNN (at the
  point baselines.json chose on validation) put in their top 20.

    python benchmarks/itemknn_popularity.py                 # the data sets of baselines.json
    python benchmarks/itemknn_popularity.py --datasets tiktok
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from modalrec.core.io import atomic_write_json
from modalrec.data import load
from modalrec.data.dataset import Dataset
from modalrec.evaluation import evaluate
from modalrec.models import create

RESULTS = Path(__file__).resolve().parent / "results"
CHUNK = 2000  # users scored at once: 2000 x 7k items float32 is 56 MB


def reach(train: sp.csr_matrix, valid: sp.csr_matrix, users: np.ndarray) -> float:
    """Share of the validation pairs of ``users`` whose item co-occurs (X^T X > 0, itself excluded) with
    at least one training item of its user. Why: ItemKNN scores only such items above its tie-breaker."""
    co = (train.T @ train).tocsr()
    co.setdiag(0)
    co.eliminate_zeros()
    reached = (train[users] @ co).tocsr()
    pairs = valid[users].tocoo()
    return float((np.asarray(reached[pairs.row, pairs.col]).ravel() > 0).mean())


def top20(model: Any, train: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
    """Each user's 20 best-scored items, training items masked (unordered within the 20)."""
    out = []
    for a in range(0, len(users), CHUNK):
        u = users[a : a + CHUNK]
        s = model._score(u).numpy().copy()
        s[train[u].nonzero()] = -np.inf
        out.append(np.argpartition(-s, 19, axis=1)[:, :20])
    return np.concatenate(out)


def diagnose(ds: Dataset, knn_params: dict[str, Any]) -> dict[str, Any]:
    """The validation-only facts of one data set (module docstring), for Popularity and ItemKNN."""
    train, valid = ds.train.tocsr(), ds.valid.tocsr()
    pop = np.asarray(train.sum(axis=0)).ravel()
    users = np.flatnonzero(np.diff(valid.indptr))
    items = valid[users].tocoo().col
    most_popular = np.argsort(-pop, kind="stable")[:20]
    facts: dict[str, Any] = {
        "valid_users": len(users),
        "valid_pairs": len(items),
        "train_items_per_valid_user_median": float(np.median(np.diff(train[users].indptr))),
        "reach": round(reach(train, valid, users), 3),
        "valid_items_in_20_most_popular": round(float(np.isin(items, most_popular).mean()), 3),
        "train_popularity_median": {
            "valid_items": float(np.median(pop[items])),
            "all_items": float(np.median(pop)),
        },
    }
    for name, params in (("popularity", {}), ("itemknn", knn_params)):
        model = create(name, **params).fit(ds, progress=False)
        top = top20(model, train, users)
        facts[name] = {
            "params": params,
            "valid_recall@20": round(evaluate(model, ds, "valid", ks=(20,)).metrics["recall@20"], 4),
            "top20_train_popularity_median": float(np.median(pop[top])),
            "distinct_items_in_top20": len(np.unique(top)),
        }
    return facts


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=None, help="default: every data set of baselines.json")
    args = ap.parse_args(argv)
    baselines = json.loads((RESULTS / "baselines.json").read_text())["datasets"]
    out = {}
    for name in args.datasets or list(baselines):
        row = next(
            r for r in baselines[name]["rows"] if r["library"] == "modalrec" and r["model"] == "itemknn"
        )
        out[name] = diagnose(load(name), dict(row.get("chosen") or {}))
        print(name, json.dumps(out[name]), flush=True)
    atomic_write_json(RESULTS / "itemknn_popularity.json", out)


if __name__ == "__main__":
    main()

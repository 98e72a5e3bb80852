"""Every registered recommender passes every shipped check of :mod:`modalrec.models.checks`.

The checks themselves (and what each promises) live in the package, like scikit-learn's
``utils.estimator_checks``; this file runs them for the registry, plus two learning-quality tests
that are not part of the contract (they need more epochs than the fast check settings).
"""

from __future__ import annotations

import pytest

from modalrec.core.errors import ConfigError
from modalrec.data.dataset import Dataset
from modalrec.evaluation import evaluate
from modalrec.models import REGISTRY, Recommender, create
from modalrec.models.checks import Check, check_registry_covered, parametrize_with_checks

#: (model name, check name) -> reason, for a check a model fails because of a known bug in the model.
#: Marked xfail(strict=True): the suite stays green until the bug is fixed, then asks for the entry to go.
#: None today.
KNOWN_FAILURES: dict[tuple[str, str], str] = {}


def test_every_registered_model_has_fast_check_settings() -> None:
    assert {"popularity", "itemknn", "bprmf", "lightgcn", "fusion", "blend"} <= set(REGISTRY)
    check_registry_covered()


@parametrize_with_checks(expected_failures=KNOWN_FAILURES)
def test_conformance(model: Recommender, check: Check) -> None:
    check(model)


# Learning quality (beyond the contract): enough epochs to learn the clusters of tests/synthetic.py.
QUALITY = {
    "itemknn": {"k": 20},
    "ease": {"l2": 10.0},
    "als": {"dim": 16, "reg": 0.1, "epochs": 15, "threads": 1},
    "bprmf": {"epochs": 30, "lr": 0.01, "dim": 16, "batch_size": 256, "patience": 5},
    "lightgcn": {"epochs": 30, "lr": 0.01, "dim": 16, "batch_size": 256, "patience": 5},
}


def test_personalised_models_beat_popularity(clustered: Dataset) -> None:
    pop = evaluate(create("popularity").fit(clustered, progress=False), clustered, "test", ks=(10,))
    for n, params in sorted(QUALITY.items()):
        m = create(n, **params).fit(clustered, progress=False)
        res = evaluate(m, clustered, "test", ks=(10,))
        assert res.metrics["recall@10"] > 1.5 * pop.metrics["recall@10"], n


def test_early_stopping_records_validation_curve(clustered: Dataset) -> None:
    m = create("bprmf", **{**QUALITY["bprmf"], "epochs": 200, "patience": 3}).fit(clustered, progress=False)
    meta = m.meta
    assert meta["epochs_run"] < 200, "should stop early on this small data"
    assert meta["best_epoch"] == max(meta["valid_curve"], key=lambda r: r["valid_recall@20"])["epoch"]
    assert len(meta["epoch_seconds"]) == meta["epochs_run"]


def test_unknown_model_and_bad_params() -> None:
    with pytest.raises(ConfigError, match="unknown model"):
        create("nope")
    with pytest.raises(ConfigError, match="unknown hyperparameter 'dimension'"):
        create("bprmf", dimension=3)

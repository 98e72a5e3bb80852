"""The conformance checks themselves: they pass a conforming model and catch each kind of broken one.

Toy models are registered only for the duration of a test (``monkeypatch`` on the registry's table),
since ``create`` and ``load`` find models by name.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from pydantic import Field

from modalrec.core.params import Params
from modalrec.data.dataset import Dataset
from modalrec.models import REGISTRY, Recommender
from modalrec.models.checks import (
    CHECKS,
    FAST_PARAMS,
    check_bad_hyperparameter_value_rejected,
    check_deterministic_with_seed,
    check_fast_params_declared,
    check_fit_does_not_modify_dataset,
    check_fit_nan_raises,
    check_fit_quiet_without_progress,
    check_fit_returns_self,
    check_pairs,
    check_params_roundtrip,
    check_recommend_excludes_seen,
    check_recommender,
    check_registry_covered,
    check_save_load_roundtrip,
    check_score_batch_invariant,
    check_validator_released_and_used,
    make_check_dataset,
    parametrize_with_checks,
)


class ToyParams(Params):
    seed: int = Field(0, description="random seed")


class Toy(Recommender[ToyParams]):
    """A conforming model: per-item weights from the seed plus the user's own history."""

    name = "checks-toy"
    params_class = ToyParams

    def _fit(self, dataset: Dataset, *, progress: bool) -> None:
        rng = np.random.default_rng(self.hp.seed)
        self._state = {
            "w": (rng.random(dataset.n_items) + dataset.item_popularity()).astype(np.float32),
            "indptr": dataset.train.indptr.astype(np.int64),
            "indices": dataset.train.indices.astype(np.int64),
        }

    def _score(self, users: np.ndarray) -> torch.Tensor:
        train = sp.csr_matrix(
            (np.ones(len(self._state["indices"]), np.float32), self._state["indices"], self._state["indptr"]),
            shape=(self.n_users, self.n_items),
        )
        s = self._state["w"][None, :] + 0.5 * train[users].toarray()
        return torch.from_numpy(s.astype(np.float32))


class Unseeded(Toy):
    name = "checks-unseeded"

    def _fit(self, dataset: Dataset, *, progress: bool) -> None:
        super()._fit(dataset, progress=progress)
        self._state["w"] = np.random.default_rng().random(dataset.n_items).astype(np.float32)


class MutatesData(Toy):
    name = "checks-mutates"

    def _fit(self, dataset: Dataset, *, progress: bool) -> None:
        dataset.train.data *= 2.0  # e.g. an in-place re-weighting of the caller's matrix
        super()._fit(dataset, progress=progress)


class ForgetsState(Toy):
    name = "checks-forgets"

    def _fit(self, dataset: Dataset, *, progress: bool) -> None:
        super()._fit(dataset, progress=progress)
        self._offset = float(np.random.default_rng(self.hp.seed).random())  # learned, but never saved

    def _score(self, users: np.ndarray) -> torch.Tensor:
        return super()._score(users) + getattr(self, "_offset", 0.0)


class BatchDependent(Toy):
    name = "checks-batch"

    def _score(self, users: np.ndarray) -> torch.Tensor:
        s = super()._score(users)
        return s - s.mean(0, keepdim=True)  # centred over the users of the call


class SkipsNaNCheck(Toy):
    name = "checks-nancheck"

    def fit(self, dataset: Dataset, *, progress: bool = True, validator: Any = None) -> SkipsNaNCheck:
        self.n_users, self.n_items = dataset.n_users, dataset.n_items
        self.meta = {"n_users": self.n_users, "n_items": self.n_items}
        self._fit(dataset, progress=progress)
        return self


class CopiesState(Toy):
    """Exports copies of its arrays: NaN cannot be poisoned in place, the check poisons the export."""

    name = "checks-copies"

    def _state_to_save(self) -> dict[str, np.ndarray]:
        return {k: v.copy() for k, v in self._state.items()}


class ReturnsNone(Toy):
    name = "checks-none"

    def fit(self, dataset: Dataset, *, progress: bool = True, validator: Any = None) -> Any:
        super().fit(dataset, progress=progress, validator=validator)
        return None


class IgnoresExclude(Toy):
    name = "checks-exclude"

    def recommend(self, users: Any, k: int = 10, *, exclude: Any = None, chunk_size: int = 2048) -> Any:
        return super().recommend(users, k, exclude=None, chunk_size=chunk_size)


class Chatty(Toy):
    name = "checks-chatty"

    def _fit(self, dataset: Dataset, *, progress: bool) -> None:
        print("epoch 1")  # ignores progress=False
        super()._fit(dataset, progress=progress)


class OwnValidation(Toy):
    name = "checks-ownvalid"

    def _fit(self, dataset: Dataset, *, progress: bool) -> None:
        super()._fit(dataset, progress=progress)
        self.meta["members"] = [{"valid_curve": [{"epoch": 1, "valid_recall@20": 0.1}]}]  # not the caller's


class LooseParams(Params):
    seed: Any = 0  # declared without a type: anything goes


class Loose(Toy):
    name = "checks-loose"
    params_class = LooseParams


TOYS: list[type[Toy]] = [
    Toy,
    Unseeded,
    MutatesData,
    ForgetsState,
    BatchDependent,
    SkipsNaNCheck,
    CopiesState,
    ReturnsNone,
    IgnoresExclude,
    Chatty,
    Loose,
    OwnValidation,
]


@pytest.fixture(autouse=True)
def registered_toys(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Register the toys for one test only (the registry has no unregister; its table is restored)."""
    assert len(REGISTRY)  # fill the registry first, so that restoring the table keeps the built-ins
    for cls in TOYS:
        monkeypatch.setitem(REGISTRY._items, cls.name, cls)
    yield


def test_conforming_model_passes_every_check() -> None:
    check_recommender(Toy(seed=3))


def test_copied_state_still_gets_poisoned() -> None:
    check_fit_nan_raises(CopiesState())


@pytest.mark.parametrize(
    ("cls", "check", "message"),
    [
        (Unseeded, check_deterministic_with_seed, "two seeded fits differ"),
        (MutatesData, check_fit_does_not_modify_dataset, "modified the data set in place: ['train.data']"),
        (ForgetsState, check_save_load_roundtrip, "load() changed the scores"),
        (BatchDependent, check_score_batch_invariant, "differs from the same rows"),
        (SkipsNaNCheck, check_fit_nan_raises, "expected FitError"),
        (ReturnsNone, check_fit_returns_self, "fit() must return self"),
        (IgnoresExclude, check_recommend_excludes_seen, "was recommended excluded items"),
        (OwnValidation, check_validator_released_and_used, "records 1 validation curve(s)"),
        (Chatty, check_fit_quiet_without_progress, "printed 'epoch 1"),
        (Loose, check_bad_hyperparameter_value_rejected, "hyperparameter 'seed' = 'not-a-number'"),
    ],
)
def test_each_broken_model_fails_its_check(cls: type[Toy], check: Any, message: str) -> None:
    with pytest.raises(AssertionError) as e:
        check(cls())
    assert message in str(e.value)
    assert cls.__name__ in str(e.value), "the failure names the model"


def test_unregistered_model_fails_the_registration_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(REGISTRY._items, Toy.name)
    with pytest.raises(AssertionError, match="not registered"):
        check_params_roundtrip(Toy())


def test_uncovered_registered_model_is_reported() -> None:
    with pytest.raises(AssertionError, match=r"without fast check settings in FAST_PARAMS: \['checks-"):
        check_registry_covered()
    pairs = [(m, c) for m, c in check_pairs() if m.name == "checks-toy"]
    assert [c for _, c in pairs] == [check_fast_params_declared]
    model, check = pairs[0]
    with pytest.raises(AssertionError, match=r"no entry in modalrec\.models\.checks\.FAST_PARAMS"):
        check(model)


def test_covered_model_gets_every_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(FAST_PARAMS, "checks-toy", {"seed": 1})
    pairs = [(m, c) for m, c in check_pairs(["checks-toy"])]
    assert [c for _, c in pairs] == list(CHECKS)
    assert all(m.get_params() == {"seed": 1} for m, _ in pairs)


def test_stale_fast_params_entry_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    for cls in TOYS:
        monkeypatch.setitem(FAST_PARAMS, cls.name, {})
    check_registry_covered()
    monkeypatch.setitem(FAST_PARAMS, "no-such-model", {})
    with pytest.raises(AssertionError, match=r"entries for unregistered models: \['no-such-model'\]"):
        check_registry_covered()


def test_parametrize_marks_expected_failures_and_refuses_stale_ones() -> None:
    mark = parametrize_with_checks([Toy()], expected_failures={("checks-toy", "check_fit_idempotent"): "bug"})
    argnames, cases = mark.args[0], mark.args[1]
    assert argnames == ("model", "check")
    assert len(cases) == len(CHECKS)
    marked = {c.id: [m.name for m in c.marks] for c in cases if c.marks}
    assert marked == {"checks-toy-check_fit_idempotent": ["xfail"]}
    assert next(c for c in cases if c.marks).marks[0].kwargs == {"strict": True, "reason": "bug"}
    with pytest.raises(ValueError, match="name no case"):
        parametrize_with_checks([Toy()], expected_failures={("checks-toy", "check_nope"): "stale"})


def test_check_dataset_has_two_modalities_and_cold_items() -> None:
    ds = make_check_dataset()
    assert sorted(ds.features) == ["image", "text"]
    assert ds.feature_masks["text"].all() and not ds.feature_masks["image"].all()
    assert ds.cold_items is not None and ds.train[:, ds.cold_items].nnz == 0
    assert ds.test[:, ds.cold_items].nnz > 0
    assert ds.valid.nnz > 0 and np.diff(ds.test.indptr).min() >= 2
    again = make_check_dataset()
    assert (again.train != ds.train).nnz == 0, "the builder is deterministic"
    np.testing.assert_array_equal(again.features["image"], ds.features["image"])

"""Conformance checks every recommender must pass (scikit-learn's ``utils.estimator_checks`` for models).

Why: training, evaluation, serving, the LLM layer and the CLI rely only on the
:class:`~modalrec.models.base.Recommender` contract. Each promise of that contract is one named check
here, so that a failure names the broken promise and the model, not "the conformance test failed":

* hyperparameters: declared, JSON-able, round-trip through ``get_params``/``clone``/``set_params``,
  unknown names and non-numbers for numbers rejected (:class:`~modalrec.core.errors.ConfigError`);
* ``fit`` returns ``self``, prints nothing without progress, copes with users and items without
  interactions, leaves the data set untouched, validates with the caller's ``validator`` (whenever it
  early-stops or records a validation curve, members' included) and releases it, is deterministic
  for its seed, can be repeated on other data, and refuses a model whose learned arrays hold NaN
  (:class:`~modalrec.core.errors.FitError`);
* ``score`` is float32 ``[len(users), n_items]``, finite, independent of how users are batched;
* ``recommend`` is sorted, never returns an excluded item ahead of the others, agrees with ``score``
  and with the top of the masked scores, and rejects out-of-range users (``IndexError``);
* an unfitted model refuses to score, recommend or save (``RuntimeError``);
* ``save``/``load`` write exactly ``model.json`` + ``model.safetensors`` (no pickle) and reproduce
  the scores.

Every check has the signature ``check(model, dataset=None)``. It never fits or changes the model it
is given (it works on clones, built from ``get_params()``), so one instance can be passed to every
check. ``dataset=None`` uses :func:`check_dataset`: a small clustered catalogue with two item
modalities (a clean ``text`` one and a noisy ``image`` one missing for some items) and two cold items,
so that multimodal models are checked on what they use.

Each registered model runs the checks with the fast hyperparameters of :data:`FAST_PARAMS` (few
epochs, small vectors); a registered model without an entry fails :func:`check_registry_covered`
and :func:`check_fast_params_declared`, so a new model cannot join the registry unchecked.

In a test file::

    from modalrec.models.checks import parametrize_with_checks

    @parametrize_with_checks()
    def test_conformance(model, check):
        check(model)

For one model outside pytest: ``check_recommender(MyModel(...))`` runs every check.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import scipy.sparse as sp

from modalrec.core.errors import ConfigError, DataError, FitError
from modalrec.core.persistence import json_default
from modalrec.data.dataset import Dataset, interaction_matrix
from modalrec.models.base import REGISTRY, Recommender, create

if TYPE_CHECKING:
    from _pytest.mark.structures import MarkDecorator

__all__ = [
    "CHECKS",
    "FAST_PARAMS",
    "Check",
    "all_checks",
    "check_dataset",
    "check_pairs",
    "check_recommender",
    "check_registry_covered",
    "make_check_dataset",
    "parametrize_with_checks",
]

_TRAINED: dict[str, Any] = {"epochs": 3, "dim": 8, "batch_size": 128, "lr": 0.01, "patience": 2}

#: Fast hyperparameters per registered model name: what the checks fit. A registered model without
#: an entry fails the suite (:func:`check_registry_covered`); an entry for an unregistered name too.
FAST_PARAMS: dict[str, dict[str, Any]] = {
    "popularity": {},
    "als": {"dim": 8, "epochs": 3, "patience": 2, "threads": 1},
    "itemknn": {"k": 10},
    "ease": {"l2": 10.0},
    "ease_content": {"l2": 10.0, "content_weight": 0.5},
    "ease_knn": {"l2": 10.0, "neighbors": 10},
    "bprmf": dict(_TRAINED),
    "lightgcn": dict(_TRAINED),
    "vbpr": {**_TRAINED, "content_dim": 8},
    "graphmm": {**_TRAINED, "knn_k": 5, "cf_knn_k": 5, "content_bpr": 0.1, "ssl_weight": 0.1},
    "fusion": dict(_TRAINED),
    "coldstart": {
        "dim": 8,
        "hidden": 16,
        "max_steps": 20,
        "eval_every": 5,
        "patience": 2,
        "seeds": 2,
        "collaborative": {"model": "itemknn", "params": {"k": 10}},
        "blend_steps": 3,
        "threads": 1,
    },
    "blend": {
        "members": [
            {"model": "itemknn", "params": {"k": 10}},
            {"model": "ease_content", "params": {"l2": 10.0}},
            {"model": "bprmf", "params": dict(_TRAINED)},
        ],
        "weight_steps": 3,
    },
}

#: Scores may differ by float rounding between two evaluations of the same model (batching, loading).
_RTOL, _ATOL = 1e-5, 1e-6


class Check(Protocol):
    """A conformance check: raises ``AssertionError`` (with a message naming the promise) on failure."""

    __name__: str

    def __call__(self, model: Recommender, dataset: Dataset | None = None) -> None: ...


# ---------------------------------------------------------------------------------------------- data
def make_check_dataset(
    n_users: int = 48,
    n_items: int = 36,
    *,
    n_clusters: int = 3,
    per_user: int = 10,
    n_cold: int = 2,
    with_features: bool = True,
    missing_image: float = 0.2,
    seed: int = 0,
    name: str = "checks",
) -> Dataset:
    """A small learnable catalogue for the checks: users and items in clusters, two item modalities.

    Users take 90% of their items from their own cluster. Per user, one interaction goes to valid,
    two to test, the rest to train; ``n_cold`` items are cold (every interaction with them is in test).
    With ``with_features``: ``text`` (16-d, cluster centre + small noise, always present) and
    ``image`` (24-d, noisy, missing for a ``missing_image`` share of the items: mask False, row zeros).
    The test suite's own clustered data (``tests/synthetic.py``) is this generator with other sizes.

    >>> ds = make_check_dataset()
    >>> ds.n_users, ds.n_items, sorted(ds.features), int(ds.feature_masks["image"].sum()) < ds.n_items
    (48, 36, ['image', 'text'], True)
    >>> int(ds.train[:, ds.cold_items].nnz), ds.valid.nnz > 0
    (0, True)
    """
    rng = np.random.default_rng(seed)
    item_cluster = np.arange(n_items) % n_clusters
    n_own = round(per_user * 0.9)
    rows, cols, labels = [], [], []
    for u in range(n_users):
        own = np.flatnonzero(item_cluster == u % n_clusters)
        other = np.flatnonzero(item_cluster != u % n_clusters)
        items = np.concatenate(
            [rng.choice(own, n_own, replace=False), rng.choice(other, per_user - n_own, replace=False)]
        )
        rng.shuffle(items)
        rows += [u] * per_user
        cols += items.tolist()
        labels += [1, 2, 2] + [0] * (per_user - 3)
    r, c, lab = np.array(rows), np.array(cols), np.array(labels)
    cold = np.sort(rng.choice(n_items, n_cold, replace=False)) if n_cold else None
    if cold is not None:
        lab = np.where(np.isin(c, cold), 2, lab)
    train, valid, test = (interaction_matrix(r[lab == k], c[lab == k], n_users, n_items) for k in range(3))
    features: dict[str, np.ndarray] = {}
    masks: dict[str, np.ndarray] = {}
    if with_features:
        centres = rng.normal(size=(n_clusters, 16)).astype(np.float32)
        text = centres[item_cluster] + 0.3 * rng.normal(size=(n_items, 16)).astype(np.float32)
        proj = rng.normal(size=(16, 24)).astype(np.float32)
        image = (centres[item_cluster] @ proj + 3.0 * rng.normal(size=(n_items, 24))).astype(np.float32)
        present = rng.random(n_items) >= missing_image
        image[~present] = 0.0
        features = {"text": text.astype(np.float32), "image": image}
        masks = {"text": np.ones(n_items, dtype=bool), "image": present}
    return Dataset(
        name=name,
        user_ids=np.array([f"u{i}" for i in range(n_users)]),
        item_ids=np.array([f"i{i}" for i in range(n_items)]),
        train=train,
        valid=valid,
        test=test,
        features=features,
        feature_masks=masks,
        cold_items=cold,
        split_name="fixed",
    )


@functools.cache
def check_dataset() -> Dataset:
    """The data set the checks use when none is given (built once per process; checks do not change it)."""
    return make_check_dataset()


def _data(dataset: Dataset | None) -> Dataset:
    return dataset if dataset is not None else check_dataset()


def _without_features(ds: Dataset) -> Dataset:
    return Dataset(
        name=ds.name + "-no-features",
        user_ids=ds.user_ids,
        item_ids=ds.item_ids,
        train=ds.train,
        valid=ds.valid,
        test=ds.test,
        cold_items=ds.cold_items,
        split_name=ds.split_name,
    )


# ------------------------------------------------------------------------------------------ helpers
#: Fitted clones shared by the checks that only read a fitted model: (type, params, dataset) -> model.
_FITTED: dict[tuple[type, str, int], tuple[Dataset, Recommender]] = {}


def _params_key(model: Recommender) -> str:
    return json.dumps(model.get_params(), sort_keys=True, default=json_default)


def _fit(model: Recommender, dataset: Dataset, **kwargs: Any) -> Recommender:
    """A fresh clone of ``model`` fitted on ``dataset`` (the given model is never touched)."""
    return model.clone().fit(dataset, progress=False, **kwargs)


def _fitted(model: Recommender, dataset: Dataset) -> Recommender:
    """A fitted clone, shared between checks that only read it (score, recommend, save)."""
    key = (type(model), _params_key(model), id(dataset))
    hit = _FITTED.get(key)
    if hit is not None and hit[0] is dataset:
        return hit[1]
    if len(_FITTED) >= 32:
        _FITTED.clear()
    fitted = _fit(model, dataset)
    _FITTED[key] = (dataset, fitted)
    return fitted


def _raises(
    exc: type[BaseException], call: Callable[[], object], what: str, match: str | None = None
) -> BaseException:
    """Run ``call``; fail unless it raises ``exc`` (whose message contains ``match``, if given)."""
    try:
        call()
    except exc as e:
        if match is not None and match not in str(e):
            raise AssertionError(f"{what}: {type(e).__name__} message {str(e)!r} lacks {match!r}") from e
        return e
    except Exception as e:
        raise AssertionError(f"{what}: expected {exc.__name__}, got {type(e).__name__}: {e}") from e
    raise AssertionError(f"{what}: expected {exc.__name__}, nothing was raised")


def _label(model: Recommender) -> str:
    return f"{type(model).__name__} ({model.name!r})"


def _all_scores(model: Recommender, ds: Dataset) -> np.ndarray:
    return model.score(np.arange(ds.n_users))


# ------------------------------------------------------------------------------ hyperparameter checks
def check_fast_params_declared(model: Recommender, dataset: Dataset | None = None) -> None:
    """The model has fast check settings in :data:`FAST_PARAMS` (else the suite would not check it).

    Not one of :data:`CHECKS`: :func:`check_pairs` runs it for a registered name without settings.
    """
    assert model.name in FAST_PARAMS, (
        f"{_label(model)} has no entry in modalrec.models.checks.FAST_PARAMS: add fast hyperparameters "
        f"(few epochs, small dim) so that the conformance checks cover it"
    )


def check_params_roundtrip(model: Recommender, dataset: Dataset | None = None) -> None:
    """The model is registered under its name (``create`` and ``load`` find it there); ``get_params`` is
    JSON-able, names every declared hyperparameter and rebuilds the same model."""
    assert REGISTRY.get(model.name) is type(model), (
        f"{_label(model)} is not registered under {model.name!r}: create() and load() cannot find it "
        "(decorate the class with modalrec.models.register)"
    )
    params = model.get_params()
    try:
        text = json.dumps(params, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise AssertionError(f"{_label(model)}: get_params() is not JSON-serialisable: {e}") from e
    assert json.loads(text) == params, f"{_label(model)}: get_params() changes through JSON"
    declared = set(type(model).default_params())
    assert set(params) == declared, (
        f"{_label(model)}: get_params() keys {sorted(params)} differ from the declared {sorted(declared)}"
    )
    rebuilt = type(model)(**params)
    assert rebuilt.get_params() == params, f"{_label(model)}: Model(**get_params()) changes the params"
    again = create(model.name, **params)
    assert type(again) is type(model), f"create({model.name!r}) builds {type(again).__name__}"
    assert again.get_params() == params, f"{_label(model)}: create(name, **get_params()) changes the params"
    twin = model.clone()
    assert twin.set_params(**params) is twin, f"{_label(model)}: set_params() must return self"
    assert twin.get_params() == params, f"{_label(model)}: set_params(**get_params()) changes the params"
    assert type(model).__name__ in repr(model), f"{_label(model)}: repr() must name the class"


def check_clone_unfitted_same_params(model: Recommender, dataset: Dataset | None = None) -> None:
    """``clone()`` gives a new unfitted model of the same class with equal hyperparameters, fitted or not."""
    ds = _data(dataset)
    for source, state in ((model, "unfitted"), (_fitted(model, ds), "fitted")):
        twin = source.clone()
        assert twin is not source, f"{_label(model)}: clone() of a {state} model returned itself"
        assert type(twin) is type(source), f"{_label(model)}: clone() changed the class"
        assert twin.get_params() == source.get_params(), (
            f"{_label(model)}: clone() of a {state} model changed the hyperparameters"
        )
        assert not twin.is_fitted, f"{_label(model)}: clone() of a {state} model must be unfitted"
        assert twin.meta == {}, f"{_label(model)}: clone() of a {state} model copied meta"


def check_unknown_hyperparameter_rejected(model: Recommender, dataset: Dataset | None = None) -> None:
    """An unknown hyperparameter name is a :class:`ConfigError` naming it, at construction and in set_params."""
    bad = "no_such_hyperparameter"
    params = model.get_params()
    _raises(
        ConfigError,
        lambda: type(model)(**params, **{bad: 1}),
        f"{_label(model)}: constructor with unknown hyperparameter {bad!r}",
        match=bad,
    )
    _raises(
        ConfigError,
        lambda: create(model.name, **params, **{bad: 1}),
        f"{_label(model)}: create() with unknown hyperparameter {bad!r}",
        match=bad,
    )
    twin = model.clone()
    _raises(
        ConfigError,
        lambda: twin.set_params(**{bad: 1}),
        f"{_label(model)}: set_params() with unknown hyperparameter {bad!r}",
        match=bad,
    )
    assert twin.get_params() == params, f"{_label(model)}: a rejected set_params() changed the params"


def check_bad_hyperparameter_value_rejected(model: Recommender, dataset: Dataset | None = None) -> None:
    """A text where a numeric hyperparameter is declared is a :class:`ConfigError` naming the key."""
    params = model.get_params()
    numeric = [k for k, v in params.items() if isinstance(v, int | float) and not isinstance(v, bool)]
    for key in numeric:
        _raises(
            ConfigError,
            functools.partial(type(model), **{**params, key: "not-a-number"}),
            f"{_label(model)}: hyperparameter {key!r} = 'not-a-number'",
            match=repr(key),
        )


# ----------------------------------------------------------------------------------------- fit checks
def check_not_fitted_error(model: Recommender, dataset: Dataset | None = None) -> None:
    """An unfitted model refuses to score, recommend and save with ``RuntimeError``."""
    twin = model.clone()
    assert not twin.is_fitted, f"{_label(model)}: a new model claims to be fitted"
    _raises(RuntimeError, lambda: twin.score([0]), f"{_label(model)}: score() before fit()")
    _raises(RuntimeError, lambda: twin.recommend([0], 5), f"{_label(model)}: recommend() before fit()")
    with tempfile.TemporaryDirectory() as tmp:
        _raises(RuntimeError, lambda: twin.save(Path(tmp) / "m"), f"{_label(model)}: save() before fit()")
        assert not (Path(tmp) / "m").exists(), f"{_label(model)}: a refused save() left a directory"


def check_fit_returns_self(model: Recommender, dataset: Dataset | None = None) -> None:
    """``fit`` returns the model itself, fitted to the data set's sizes, with JSON-able ``meta``."""
    ds = _data(dataset)
    twin = model.clone()
    out = twin.fit(ds, progress=False)
    assert out is twin, f"{_label(model)}: fit() must return self, got {type(out).__name__}"
    assert twin.is_fitted, f"{_label(model)}: is_fitted is False after fit()"
    assert (twin.n_users, twin.n_items) == (ds.n_users, ds.n_items), (
        f"{_label(model)}: fitted sizes {(twin.n_users, twin.n_items)} != data {(ds.n_users, ds.n_items)}"
    )
    assert (twin.meta.get("n_users"), twin.meta.get("n_items")) == (ds.n_users, ds.n_items), (
        f"{_label(model)}: meta must record n_users and n_items"
    )
    try:
        json.dumps(twin.meta, default=json_default)
    except TypeError as e:
        raise AssertionError(f"{_label(model)}: meta is not JSON-serialisable: {e}") from e
    assert twin.get_params() == model.get_params(), f"{_label(model)}: fit() changed the hyperparameters"


def _dataset_arrays(ds: Dataset) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for part in ("train", "valid", "test"):
        m: sp.csr_matrix = getattr(ds, part)
        out.update({f"{part}.data": m.data, f"{part}.indices": m.indices, f"{part}.indptr": m.indptr})
    out.update({f"features.{k}": v for k, v in ds.features.items()})
    out.update({f"masks.{k}": v for k, v in ds.feature_masks.items()})
    return out


def check_fit_does_not_modify_dataset(model: Recommender, dataset: Dataset | None = None) -> None:
    """``fit`` leaves the split matrices, the features and their masks as they were."""
    ds = make_check_dataset() if dataset is None else dataset
    before = {k: np.array(v, copy=True) for k, v in _dataset_arrays(ds).items()}
    _fit(model, ds)
    after = _dataset_arrays(ds)
    assert set(after) == set(before), f"{_label(model)}: fit() added or removed features"
    changed = [
        k for k in before if not np.array_equal(before[k], after[k], equal_nan=before[k].dtype.kind == "f")
    ]
    assert not changed, f"{_label(model)}: fit() modified the data set in place: {changed}"


def check_fit_nan_raises(model: Recommender, dataset: Dataset | None = None) -> None:
    """A fit that leaves NaN in the learned arrays raises :class:`FitError` (simulated: the check
    subclasses the model and poisons one learned array after ``_fit``)."""
    ds = _data(dataset)
    poisoned: list[str] = []

    def first_float(state: Mapping[str, Any]) -> str | None:
        for key, arr in state.items():
            a = np.asarray(arr)
            if a.dtype.kind == "f" and a.size:
                return key
        return None

    base = type(model)

    def poison_in_place(fitted: Recommender) -> None:
        for key, arr in base._state_to_save(fitted).items():
            if isinstance(arr, np.ndarray) and arr.dtype.kind == "f" and arr.size and arr.flags.writeable:
                arr.flat[0] = np.nan
                if any(np.isnan(np.asarray(a)).any() for a in base._state_to_save(fitted).values()):
                    poisoned.append(key)
                    return

    class Poisoned(base):  # type: ignore[valid-type,misc]
        _after_fit = False

        def _fit(self, dataset: Dataset, *, progress: bool) -> None:
            super()._fit(dataset, progress=progress)
            poison_in_place(self)
            self._after_fit = True

        def _state_to_save(self) -> dict[str, np.ndarray]:
            # Models that export copies of their arrays cannot be poisoned in place: poison the export.
            state = dict(super()._state_to_save())
            key = None if poisoned or not self._after_fit else first_float(state)
            if key is not None:
                state[key] = np.array(state[key], dtype=np.asarray(state[key]).dtype, copy=True)
                state[key].flat[0] = np.nan
            return state

    Poisoned.__name__ = Poisoned.__qualname__ = f"Poisoned{base.__name__}"
    sick = Poisoned(**model.get_params())
    try:
        sick.fit(ds, progress=False)
    except FitError as e:
        assert "NaN" in str(e), f"{_label(model)}: FitError message should say NaN: {e}"
        return
    if not poisoned and first_float(sick._state_to_save()) is None:
        return  # no learned float array: nothing can be NaN
    raise AssertionError(f"{_label(model)}: fit() returned with NaN in its learned arrays; expected FitError")


def _validation_curves(meta: Any) -> int:
    """How many non-empty ``valid_curve`` records ``meta`` holds, nested ones (members) included."""
    if isinstance(meta, Mapping):
        own = 1 if meta.get("valid_curve") else 0
        return own + sum(_validation_curves(v) for v in meta.values())
    if isinstance(meta, list | tuple):
        return sum(_validation_curves(v) for v in meta)
    return 0


def check_validator_released_and_used(model: Recommender, dataset: Dataset | None = None) -> None:
    """Validation is the caller's: a model that early-stops (it has ``patience``) or records a
    validation curve (its own or a member's) calls the ``validator`` passed to ``fit``; after ``fit``
    the validator is released (``validate()`` raises ``RuntimeError``)."""
    ds = _data(dataset)
    calls: list[int] = []

    def validator(m: Recommender) -> float:
        assert m.n_items == ds.n_items, "validator got a model not sized to the data"
        calls.append(1)
        return 0.5 / len(calls)  # the first check is the best: training may stop early

    fitted = _fit(model, ds, validator=validator)
    if "patience" in model.get_params():
        assert calls, f"{_label(model)}: early-stopping model never called the validator passed to fit()"
    curves = _validation_curves(fitted.meta)
    assert calls or not curves, (
        f"{_label(model)}: meta records {curves} validation curve(s), but the validator passed to fit() "
        "was never called (validated with its own criterion instead of the caller's)"
    )
    _raises(RuntimeError, fitted.validate, f"{_label(model)}: validate() after fit()")


def check_deterministic_with_seed(model: Recommender, dataset: Dataset | None = None) -> None:
    """Two fits with the same hyperparameters (and seed) give the same scores."""
    ds = _data(dataset)
    a = _all_scores(_fit(model, ds), ds)
    b = _all_scores(_fit(model, ds), ds)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=f"{_label(model)}: two seeded fits differ")


def check_fit_idempotent(model: Recommender, dataset: Dataset | None = None) -> None:
    """Fitting one object twice on the same data gives the scores of a single fit (no state leaks)."""
    ds = _data(dataset)
    twice = model.clone().fit(ds, progress=False).fit(ds, progress=False)
    np.testing.assert_allclose(
        _all_scores(twice, ds),
        _all_scores(_fitted(model, ds), ds),
        rtol=1e-4,
        atol=1e-5,
        err_msg=f"{_label(model)}: a second fit() of the same object differs from one fit",
    )


def check_refit_on_other_data(model: Recommender, dataset: Dataset | None = None) -> None:
    """A fitted model can be fitted again on a data set of other sizes; it then follows the new data."""
    ds = _data(dataset)
    other = make_check_dataset(n_users=30, n_items=27, seed=1)
    if not ds.features:
        other = _without_features(other)
    twin = model.clone().fit(ds, progress=False).fit(other, progress=False)
    assert (twin.n_users, twin.n_items) == (other.n_users, other.n_items), (
        f"{_label(model)}: refit kept the old sizes"
    )
    s = twin.score(np.arange(other.n_users))
    assert s.shape == (other.n_users, other.n_items), f"{_label(model)}: score shape {s.shape} after refit"
    _raises(IndexError, lambda: twin.score([other.n_users]), f"{_label(model)}: old user range after refit")
    np.testing.assert_allclose(
        s,
        _all_scores(_fit(model, other), other),
        rtol=1e-4,
        atol=1e-5,
        err_msg=f"{_label(model)}: refit on new data differs from a fresh fit on it",
    )


def check_featureless_data(model: Recommender, dataset: Dataset | None = None) -> None:
    """Without item features, a model that does not use them fits; one that does fits or raises
    :class:`DataError` (a message the CLI shows), never another error."""
    ds = _without_features(_data(dataset))
    if not type(model).uses_features:
        fitted = _fit(model, ds)
        assert np.isfinite(fitted.score([0])).all(), f"{_label(model)}: non-finite scores without features"
        return
    try:
        _fit(model, ds)
    except DataError:
        pass
    except Exception as e:
        raise AssertionError(
            f"{_label(model)}: fit() on data without features raised {type(e).__name__} ({e}); "
            "expected success or DataError"
        ) from e


def check_fit_quiet_without_progress(model: Recommender, dataset: Dataset | None = None) -> None:
    """``fit(progress=False)`` prints nothing and warns nothing (library callers and servers log instead)."""
    ds = _data(dataset)
    out, err = io.StringIO(), io.StringIO()
    with (
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
        warnings.catch_warnings(record=True) as w,
    ):
        warnings.simplefilter("always")
        _fit(model, ds)
    said = out.getvalue() + err.getvalue()
    assert not said, f"{_label(model)}: fit(progress=False) printed {said[:200]!r}"
    assert not w, f"{_label(model)}: fit(progress=False) warned: {[str(x.message)[:120] for x in w]}"


def _with_empty_user_and_item(ds: Dataset) -> Dataset:
    """``ds`` with user 0's training history moved to test and the last item removed from every split."""
    train, valid, test = (m.tolil(copy=True) for m in (ds.train, ds.valid, ds.test))
    for i in ds.train[0].indices:
        test[0, i] = 1.0
    train[0, :] = 0.0
    for m in (train, valid, test):
        m[:, ds.n_items - 1] = 0.0
    return Dataset(
        name=ds.name + "-edges",
        user_ids=ds.user_ids,
        item_ids=ds.item_ids,
        train=sp.csr_matrix(train, dtype=np.float32),
        valid=sp.csr_matrix(valid, dtype=np.float32),
        test=sp.csr_matrix(test, dtype=np.float32),
        features=ds.features,
        feature_masks=ds.feature_masks,
        cold_items=ds.cold_items,
        split_name=ds.split_name,
    )


def check_users_and_items_without_interactions(model: Recommender, dataset: Dataset | None = None) -> None:
    """A user without training history and an item without any interaction fit and score finitely
    (both occur in real splits: new users, catalogue items nobody took)."""
    ds = _with_empty_user_and_item(_data(dataset))
    fitted = _fit(model, ds)
    s = fitted.score(np.arange(ds.n_users))
    assert s.shape == (ds.n_users, ds.n_items), f"{_label(model)}: score shape {s.shape}"
    assert np.isfinite(s).all(), f"{_label(model)}: non-finite scores for a user or item without interactions"
    idx, _ = fitted.recommend([0], 5, exclude=ds.train)
    assert idx.shape == (1, 5), f"{_label(model)}: no recommendations for a user without history"


# -------------------------------------------------------------------------------------- score checks
def check_score_shape_and_dtype(model: Recommender, dataset: Dataset | None = None) -> None:
    """``score`` returns finite float32 ``[len(users), n_items]`` for a list or an array of users."""
    ds = _data(dataset)
    fitted = _fitted(model, ds)
    users = [0, 1, ds.n_users - 1]
    s = fitted.score(users)
    assert isinstance(s, np.ndarray), f"{_label(model)}: score() returned {type(s).__name__}"
    assert s.shape == (3, ds.n_items), f"{_label(model)}: score() shape {s.shape}, expected {(3, ds.n_items)}"
    assert s.dtype == np.float32, f"{_label(model)}: score() dtype {s.dtype}, expected float32"
    assert np.isfinite(s).all(), f"{_label(model)}: score() returned non-finite values"
    np.testing.assert_array_equal(
        fitted.score(np.array(users)), s, err_msg=f"{_label(model)}: list and array users score differently"
    )


def check_score_empty_users(model: Recommender, dataset: Dataset | None = None) -> None:
    """Scoring no users gives an empty ``[0, n_items]`` float32 array; recommending to none, ``[0, k]``."""
    ds = _data(dataset)
    fitted = _fitted(model, ds)
    s = fitted.score(np.array([], dtype=np.int64))
    assert s.shape == (0, ds.n_items) and s.dtype == np.float32, (
        f"{_label(model)}: score([]) gave {s.shape} {s.dtype}"
    )
    idx, val = fitted.recommend([], 5)
    assert idx.shape == (0, 5) and val.shape == (0, 5), f"{_label(model)}: recommend([]) gave {idx.shape}"


def check_score_batch_invariant(model: Recommender, dataset: Dataset | None = None) -> None:
    """A user's scores do not depend on which other users (or repeats) share the call."""
    ds = _data(dataset)
    fitted = _fitted(model, ds)
    full = _all_scores(fitted, ds)
    for users in ([3], [5, 0, 5], list(range(ds.n_users - 1, -1, -2))):
        np.testing.assert_allclose(
            fitted.score(users),
            full[users],
            rtol=_RTOL,
            atol=_ATOL,
            err_msg=f"{_label(model)}: score({users}) differs from the same rows of score(all users)",
        )


def check_bad_user_index(model: Recommender, dataset: Dataset | None = None) -> None:
    """Out-of-range user indices (negative or ``>= n_users``) raise ``IndexError``."""
    ds = _data(dataset)
    fitted = _fitted(model, ds)
    for bad in (ds.n_users, -1):
        _raises(IndexError, functools.partial(fitted.score, [0, bad]), f"{_label(model)}: score([0, {bad}])")
        _raises(
            IndexError, functools.partial(fitted.recommend, [bad], 5), f"{_label(model)}: recommend([{bad}])"
        )


# ---------------------------------------------------------------------------------- recommend checks
def check_recommend_shape(model: Recommender, dataset: Dataset | None = None) -> None:
    """``recommend`` gives int64 indices and float32 scores ``[len(users), k]``, distinct valid items
    per row, and at most ``n_items`` columns when ``k`` is larger."""
    ds = _data(dataset)
    fitted = _fitted(model, ds)
    idx, val = fitted.recommend(np.arange(ds.n_users), 10)
    assert idx.shape == val.shape == (ds.n_users, 10), f"{_label(model)}: recommend() shape {idx.shape}"
    assert idx.dtype == np.int64 and val.dtype == np.float32, f"{_label(model)}: {idx.dtype}/{val.dtype}"
    assert idx.min() >= 0 and idx.max() < ds.n_items, f"{_label(model)}: item index out of range"
    assert all(len(set(row)) == len(row) for row in idx.tolist()), f"{_label(model)}: repeated item in a row"
    big, _ = fitted.recommend([0, 1], ds.n_items + 5)
    assert big.shape == (2, ds.n_items), f"{_label(model)}: k > n_items gave shape {big.shape}"
    assert sorted(big[0].tolist()) == list(range(ds.n_items)), f"{_label(model)}: k >= n_items misses items"


def check_recommend_sorted(model: Recommender, dataset: Dataset | None = None) -> None:
    """Recommended scores are non-increasing along each row (with and without excluded items)."""
    ds = _data(dataset)
    fitted = _fitted(model, ds)
    for exclude in (None, ds.train):
        _, val = fitted.recommend(np.arange(ds.n_users), 10, exclude=exclude)
        assert np.all(np.diff(val, axis=1) <= 0), f"{_label(model)}: recommend() scores are not sorted"


def check_recommend_excludes_seen(model: Recommender, dataset: Dataset | None = None) -> None:
    """Items in ``exclude`` never come before an allowed item: absent from a top-k shorter than the
    allowed items, and only as ``-inf`` padding at the end of a longer one."""
    ds = _data(dataset)
    fitted = _fitted(model, ds)
    seen = ds.seen("test")
    idx, _ = fitted.recommend(np.arange(ds.n_users), 10, exclude=seen)
    for u in range(ds.n_users):
        leaked = set(idx[u].tolist()) & set(seen[u].indices.tolist())
        assert not leaked, f"{_label(model)}: user {u} was recommended excluded items {sorted(leaked)}"
    idx, val = fitted.recommend(np.arange(ds.n_users), ds.n_items, exclude=seen)
    for u in range(ds.n_users):
        n_seen = len(seen[u].indices)
        tail = set(idx[u, ds.n_items - n_seen :].tolist())
        assert tail == set(seen[u].indices.tolist()), f"{_label(model)}: user {u}'s excluded items not last"
        assert np.all(np.isneginf(val[u, ds.n_items - n_seen :])), f"{_label(model)}: excluded items not -inf"
        assert np.isfinite(val[u, : ds.n_items - n_seen]).all(), f"{_label(model)}: allowed items not finite"


def check_recommend_matches_score(model: Recommender, dataset: Dataset | None = None) -> None:
    """``recommend``'s scores are ``score``'s, its items the top of the masked scores (up to ties),
    whatever the chunk size."""
    ds = _data(dataset)
    fitted = _fitted(model, ds)
    users = np.arange(ds.n_users)
    full = _all_scores(fitted, ds)
    masked = full.astype(np.float64)
    masked[ds.train.nonzero()] = -np.inf
    idx, val = fitted.recommend(users, 10, exclude=ds.train)
    np.testing.assert_allclose(
        val,
        np.take_along_axis(full, idx, axis=1),
        rtol=_RTOL,
        atol=_ATOL,
        err_msg=f"{_label(model)}: recommend() values are not score() at the returned items",
    )
    for u in users:
        rest = np.delete(masked[u], idx[u])
        kth = float(val[u, -1])
        assert rest.max() <= kth + _ATOL + _RTOL * abs(kth), (
            f"{_label(model)}: user {u}: an unreturned allowed item scores {rest.max()} > the k-th {kth}"
        )
    _, small = fitted.recommend(users, 10, exclude=ds.train, chunk_size=7)
    np.testing.assert_allclose(
        small, val, rtol=_RTOL, atol=_ATOL, err_msg=f"{_label(model)}: recommend() depends on chunk_size"
    )


# ------------------------------------------------------------------------------------ persistence
def check_save_load_roundtrip(model: Recommender, dataset: Dataset | None = None) -> None:
    """``save`` writes ``model.json`` + ``model.safetensors`` only; ``load`` (from the base class or the
    model's own) gives the same class, hyperparameters, sizes, meta and scores; a loaded model saves
    the same arrays again."""
    from safetensors.numpy import load_file

    ds = _data(dataset)
    fitted = _fitted(model, ds)
    users = np.arange(ds.n_users)
    with tempfile.TemporaryDirectory() as tmp:
        d = fitted.save(Path(tmp) / "m")
        files = sorted(p.name for p in d.iterdir())
        assert files == ["model.json", "model.safetensors"], f"{_label(model)}: save() wrote {files}"
        for loaded in (Recommender.load(d), type(fitted).load(d)):
            assert type(loaded) is type(fitted), f"{_label(model)}: load() built {type(loaded).__name__}"
            assert loaded.get_params() == fitted.get_params(), f"{_label(model)}: load() changed params"
            assert (loaded.n_users, loaded.n_items) == (fitted.n_users, fitted.n_items), (
                f"{_label(model)}: load() changed the sizes"
            )
            meta = json.dumps(fitted.meta, sort_keys=True, default=json_default)
            assert json.dumps(loaded.meta, sort_keys=True, default=json_default) == meta, (
                f"{_label(model)}: load() changed meta"
            )
            np.testing.assert_allclose(
                loaded.score(users),
                fitted.score(users),
                rtol=_RTOL,
                atol=_ATOL,
                err_msg=f"{_label(model)}: load() changed the scores",
            )
        d2 = loaded.save(Path(tmp) / "again")
        a, b = load_file(str(d / "model.safetensors")), load_file(str(d2 / "model.safetensors"))
        assert sorted(a) == sorted(b), f"{_label(model)}: a loaded model saves other arrays"
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{_label(model)}: re-saved {k!r} differs")


# ---------------------------------------------------------------------------------------- the suite
#: Every check, in the order :func:`check_recommender` runs them.
CHECKS: tuple[Check, ...] = (
    check_params_roundtrip,
    check_clone_unfitted_same_params,
    check_unknown_hyperparameter_rejected,
    check_bad_hyperparameter_value_rejected,
    check_not_fitted_error,
    check_fit_returns_self,
    check_fit_does_not_modify_dataset,
    check_fit_nan_raises,
    check_validator_released_and_used,
    check_deterministic_with_seed,
    check_fit_idempotent,
    check_refit_on_other_data,
    check_featureless_data,
    check_fit_quiet_without_progress,
    check_users_and_items_without_interactions,
    check_score_shape_and_dtype,
    check_score_empty_users,
    check_score_batch_invariant,
    check_bad_user_index,
    check_recommend_shape,
    check_recommend_sorted,
    check_recommend_excludes_seen,
    check_recommend_matches_score,
    check_save_load_roundtrip,
)


def all_checks() -> Iterator[Check]:
    """Every conformance check (each takes ``(model, dataset=None)``).

    >>> [c.__name__ for c in all_checks()][:2]
    ['check_params_roundtrip', 'check_clone_unfitted_same_params']
    """
    yield from CHECKS


def check_registry_covered() -> None:
    """Every registered model has :data:`FAST_PARAMS`, and every entry names a registered model.

    >>> check_registry_covered()
    """
    registered = set(REGISTRY)
    missing = sorted(registered - set(FAST_PARAMS))
    stale = sorted(set(FAST_PARAMS) - registered)
    problems = []
    if missing:
        problems.append(f"registered models without fast check settings in FAST_PARAMS: {missing}")
    if stale:
        problems.append(f"FAST_PARAMS entries for unregistered models: {stale}")
    if problems:
        raise AssertionError("modalrec.models.checks: " + "; ".join(problems))


def check_pairs(models: Iterable[str | Recommender] | None = None) -> Iterator[tuple[Recommender, Check]]:
    """``(model, check)`` for every model and check. ``models``: instances (checked as given), or
    registered names (built with :data:`FAST_PARAMS`); default every registered model. A name without
    fast settings gets only :func:`check_fast_params_declared`, which fails.

    >>> sorted({m.name for m, _ in check_pairs(["ease", "popularity"])})
    ['ease', 'popularity']
    """
    for m in sorted(REGISTRY) if models is None else models:
        if isinstance(m, Recommender):
            yield from ((m, check) for check in all_checks())
        elif m in FAST_PARAMS:
            model = create(m, **FAST_PARAMS[m])
            yield from ((model, check) for check in all_checks())
        else:
            yield REGISTRY.get_or_raise(m)(), check_fast_params_declared


def parametrize_with_checks(
    models: Iterable[str | Recommender] | None = None,
    *,
    expected_failures: Mapping[tuple[str, str], str] | None = None,
) -> MarkDecorator:
    """A ``pytest.mark.parametrize("model, check", ...)`` over :func:`check_pairs` (ids ``name-check``).

    ``expected_failures`` maps ``(model name, check name)`` to a reason: those cases are marked
    ``xfail(strict=True)``, so the suite stays green on a known bug and fails once it is fixed. A key
    that matches no case is an error (a stale entry would hide nothing and mislead).
    """
    import pytest

    known = dict(expected_failures or {})
    params = []
    for model, check in check_pairs(models):
        key = (model.name, check.__name__)
        marks = [pytest.mark.xfail(strict=True, reason=known.pop(key))] if key in known else []
        params.append(pytest.param(model, check, marks=marks, id=f"{model.name}-{check.__name__}"))
    if known:
        raise ValueError(f"expected_failures name no case: {sorted(known)}")
    return pytest.mark.parametrize(("model", "check"), params)


def check_recommender(model: Recommender, dataset: Dataset | None = None) -> None:
    """Run every check on ``model`` (unfitted; it is not changed); raises ``AssertionError`` on failure."""
    for check in all_checks():
        check(model, dataset)

"""Cold start as a model: a content tower trained on the interactions, blended with a collaborative model.

Why a content tower: a new item has content but no interactions. Item vectors here are ``f(content)``
(a small MLP over every content modality plus one presence flag per modality), user vectors are free,
and both are trained with the multinomial likelihood of each user's training interactions (a softmax
over all warm items, the loss that ranks well in Mult-VAE/EASE-style models). A cold item is placed by
``f`` alone, trained precisely so that its dot product with user vectors predicts who interacts with
it; regressing content onto a fixed collaborative space with a squared loss spends its capacity on
reproducing every latent dimension equally, whatever matters for ranking.

Why a blend: on warm items a collaborative model (EASE by default) knows far more than content. The
recommender scores ``w * z(tower) + (1 - w) * z(collaborative)`` with per-user z-scores; the
collaborative z-score is taken over warm items and is 0 (its mean) for items without training
interactions, so cold items are ranked by the tower and warm items by both. ``w`` is chosen on
validation (the caller's criterion, default Recall@20 over all items).

Early stopping of the tower: the tower overfits 1,500-odd warm items within a few hundred full-batch
steps, so each seed stops on a validation signal. With the caller's ``validator`` (tuning, checks)
that one; by default Recall@20 of the validation users over the items without training interactions
when the validation split has interactions with such items (the cold-start protocol), else recall of
a seeded ``holdout`` share of warm items held out as pseudo-cold items. Several seeds are trained and
their spaces concatenated (the dot products add up: an ensemble that is still one vector pair).

The tower's pieces (standardisation, features, training, pseudo-cold validation) are public functions
so that :class:`~modalrec.align.interactions.InteractionAligner` (a layer above) reuses them.

Example (TOML)::

    [model]
    name = "coldstart"
    params = { modalities = ["text"], hidden = 256, seeds = 3, collaborative = {model = "ease"} }
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field

from modalrec.core.errors import ConfigError, DataError
from modalrec.core.memory import check_allocation
from modalrec.core.params import Params
from modalrec.core.threads import torch_threads
from modalrec.models.base import REGISTRY, Recommender, Validator, create, register
from modalrec.models.blend import BlendMember, standardise_rows
from modalrec.models.content import presence, select_modalities

if TYPE_CHECKING:
    from modalrec.data.dataset import Dataset

#: ``validate(item_vectors, user_vectors) -> float`` (higher is better): a tower's early-stopping signal.
Validate = Callable[[np.ndarray, np.ndarray], float]


class TowerParams(Params):
    """Hyperparameters of the content tower (shared by the cold-start model and the aligner)."""

    dim: int = Field(
        64, ge=1, description="size of the collaborative space per seed (the saved space is dim * seeds wide)"
    )
    hidden: int = Field(256, ge=0, description="hidden width of the content tower (0: a linear tower)")
    dropout: float = Field(0.2, ge=0, lt=1, description="dropout rate on the tower's input")
    lr: float = Field(1e-2, gt=0, description="AdamW learning rate (full-batch steps)")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay")
    max_steps: int = Field(400, ge=1, description="upper limit on training steps per seed")
    eval_every: int = Field(20, ge=1, description="training steps between two validation evaluations")
    patience: int = Field(
        5, ge=1, description="evaluations without a better validation score before training stops"
    )
    seeds: int = Field(3, ge=1, description="independently trained towers, concatenated (an ensemble)")
    holdout: float = Field(
        0.1,
        gt=0,
        lt=1,
        description="share of warm items held out as pseudo-cold items when nothing else validates the tower",
    )


# ---------------------------------------------------------------------------------------- tower pieces
def fit_standardisation(
    views: dict[str, np.ndarray], masks: dict[str, np.ndarray], rows: np.ndarray, modalities: list[str]
) -> dict[str, np.ndarray]:
    """Per modality: mean, std and one global scale (``mu.m``, ``sd.m``, ``scale.m``) from ``rows`` that have it.

    >>> st = fit_standardisation({"t": np.array([[0.0], [2.0]])}, {"t": np.ones(2, bool)}, np.ones(2, bool), ["t"])
    >>> [float(st[k][0]) for k in ("mu.t", "sd.t", "scale.t")]
    [1.0, 1.0, 1.0]
    """
    out: dict[str, np.ndarray] = {}
    for m in modalities:
        X = np.asarray(views[m], dtype=np.float32)[rows & np.asarray(masks[m], bool)]
        if len(X) == 0:
            raise DataError(f"no warm item has modality {m!r}", field=m)
        mu, sd = X.mean(0), X.std(0)
        sd = np.where(sd > 1e-8, sd, 1.0)
        z = (X - mu) / sd
        out[f"mu.{m}"] = mu.astype(np.float32)
        out[f"sd.{m}"] = sd.astype(np.float32)
        out[f"scale.{m}"] = np.float32(1.0 / max(float(np.linalg.norm(z, axis=1).mean()), 1e-8)) * np.ones(
            1, np.float32
        )
    return out


def tower_features(
    state: dict[str, np.ndarray],
    views: dict[str, np.ndarray],
    masks: dict[str, np.ndarray],
    modalities: list[str],
) -> np.ndarray:
    """Standardised content blocks + one presence flag per modality, float32 [n, sum(d_m) + M].

    An absent block is the mean (zero after centring); the flag lets the tower tell "average" from
    "missing".
    """
    blocks, flags = [], []
    for m in modalities:
        X = np.asarray(views[m], dtype=np.float32)
        mk = np.asarray(masks[m], dtype=bool)
        Z = (X - state[f"mu.{m}"]) / state[f"sd.{m}"] * state[f"scale.{m}"]
        blocks.append(np.where(mk[:, None], Z, 0.0))
        flags.append(mk[:, None].astype(np.float32))
    return np.concatenate(blocks + flags, axis=1).astype(np.float32)


def build_tower(d_in: int, hp: TowerParams) -> torch.nn.Module:
    """Dropout on the input, then a linear map or a one-hidden-layer GELU MLP into ``hp.dim``."""
    layers: list[torch.nn.Module] = [torch.nn.Dropout(hp.dropout)]
    if hp.hidden:
        layers += [torch.nn.Linear(d_in, hp.hidden), torch.nn.GELU(), torch.nn.Linear(hp.hidden, hp.dim)]
    else:
        layers.append(torch.nn.Linear(d_in, hp.dim))
    return torch.nn.Sequential(*layers)


@dataclass(frozen=True)
class TowerData:
    """What every seed of a tower trains on."""

    features: torch.Tensor  # [n_items, d] content features of every item
    fit_features: torch.Tensor  # the rows of the items trained on
    positives: torch.Tensor  # [n_active_users, n_fit_items] training interactions (0/1)
    active: torch.Tensor  # bool [n_users]: users with an interaction among the fitted items
    n_users: int

    @classmethod
    def build(cls, features: np.ndarray, R: sp.csr_matrix, fit_items: np.ndarray) -> TowerData:
        """Dense positives of the fitted items (users x fitted items): refused above the memory budget."""
        n_fit = int(fit_items.sum())
        check_allocation(
            4.0 * 4 * R.shape[0] * n_fit,  # positives, logits, softmax and their gradient
            what=f"the content tower's full softmax over {R.shape[0]} users x {n_fit} items",
            alternative="train on a sample of users or items (the tower trains full batch)",
        )
        F = torch.from_numpy(features)
        Rf = torch.from_numpy(R[:, fit_items].toarray())
        active = Rf.sum(1) > 0
        return cls(F, F[torch.from_numpy(np.flatnonzero(fit_items))], Rf[active], active, R.shape[0])


def train_tower(
    data: TowerData, validate: Validate, hp: TowerParams, *, torch_seed: int
) -> tuple[torch.nn.Module, np.ndarray, dict[str, Any]]:
    """One seed: full-batch AdamW on the softmax likelihood, early-stopped on ``validate``.

    Returns the best tower (eval mode), its user vectors and the training record.
    """
    torch.manual_seed(torch_seed)
    tower = build_tower(data.features.shape[1], hp)
    U = torch.nn.Parameter(torch.randn(data.n_users, hp.dim) * 0.1)
    opt = torch.optim.AdamW([*tower.parameters(), U], lr=hp.lr, weight_decay=hp.weight_decay)
    n_pos = data.positives.sum()
    best, best_step, bad, best_state = -np.inf, 0, 0, None
    curve = []
    for step in range(1, hp.max_steps + 1):
        tower.train()
        logits = U[data.active] @ tower(data.fit_features).T
        loss = -(torch.log_softmax(logits, dim=1) * data.positives).sum() / n_pos
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % hp.eval_every == 0 or step == hp.max_steps:
            tower.eval()
            with torch.no_grad():
                V = tower(data.features).numpy()
            v = float(validate(V, U.detach().numpy()))
            curve.append((step, round(loss.item(), 5), round(v, 5)))
            if v > best + 1e-9:
                best, best_step, bad = v, step, 0
                best_state = ({k: t.clone() for k, t in tower.state_dict().items()}, U.detach().clone())
            else:
                bad += 1
                if bad >= hp.patience:
                    break
    assert best_state is not None
    tower.load_state_dict(best_state[0])
    tower.eval()
    return tower, best_state[1].numpy(), {"best_step": best_step, "best_valid": best, "curve": curve}


def train_towers(
    data: TowerData, validate: Validate, hp: TowerParams, *, seed: int
) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """``hp.seeds`` towers: their weights (``tower{s}.<key>``) and concatenated ``user_vectors``, and
    one training record per seed."""
    state: dict[str, np.ndarray] = {}
    users, history = [], []
    for s in range(hp.seeds):
        tower, U, record = train_tower(data, validate, hp, torch_seed=seed * 1000 + s)
        users.append(U)
        history.append({"seed": s, **record})
        for key, t in tower.state_dict().items():
            state[f"tower{s}.{key}"] = t.numpy().astype(np.float32)
    state["user_vectors"] = np.concatenate(users, axis=1).astype(np.float32)
    return state, history


def load_towers(state: dict[str, np.ndarray], d_in: int, hp: TowerParams) -> list[torch.nn.Module]:
    """The trained towers (eval mode) from ``tower{s}.<key>`` arrays."""
    out = []
    for s in range(hp.seeds):
        prefix = f"tower{s}."
        weights = {k[len(prefix) :]: torch.from_numpy(v) for k, v in state.items() if k.startswith(prefix)}
        if not weights:
            break
        t = build_tower(d_in, hp)
        t.load_state_dict(weights)
        out.append(t.eval())
    return out


def tower_vectors(towers: list[torch.nn.Module], features: np.ndarray) -> np.ndarray:
    """Item vectors of every tower, concatenated: float32 [n, dim * seeds]."""
    F = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    with torch.no_grad():
        return np.concatenate([t(F).numpy() for t in towers], axis=1).astype(np.float32)


def holdout_items(warm: np.ndarray, share: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(items to fit on, pseudo-cold items): a seeded ``share`` of the warm items held out.

    >>> fit, pseudo = holdout_items(np.ones(10, bool), 0.2, np.random.default_rng(0))
    >>> int(fit.sum()), int(pseudo.sum()), bool((fit & pseudo).any())
    (8, 2, False)
    """
    w = np.flatnonzero(warm)
    pseudo = np.zeros_like(warm)
    pseudo[rng.choice(w, size=max(1, round(share * len(w))), replace=False)] = True
    return warm & ~pseudo, pseudo


def pseudo_cold_recall(R: sp.csr_matrix, pseudo: np.ndarray, k: int = 20) -> Validate:
    """Recall@k of users over the held-out warm items, ranked among those items only."""
    cols = np.flatnonzero(pseudo)
    truth = R[:, cols].tocsr()
    users = np.flatnonzero(np.diff(truth.indptr) > 0)

    def score(V: np.ndarray, U: np.ndarray) -> float:
        if len(users) == 0:
            return 0.0
        S = U[users] @ V[cols].T
        kk = min(k, len(cols))
        top = np.argpartition(-S, kk - 1, axis=1)[:, :kk]
        T = truth[users]
        hits = np.asarray(T[np.arange(len(users))[:, None], top].sum(axis=1)).ravel()
        return float(np.mean(hits / np.diff(T.indptr)))

    return score


# ---------------------------------------------------------------------------------------- the model
class ColdStartParams(TowerParams):
    """Cold-start recommender: the content tower's settings, the collaborative model and the blend."""

    modalities: list[str] | str | None = Field(
        None, description="feature modalities the tower reads (None = every modality of the data set)"
    )
    collaborative: BlendMember | None = Field(
        BlendMember(model="ease", params={}),
        description="collaborative model blended in on warm items, {model = NAME, params = {...}} (None: tower only)",
    )
    blend_weight: float | None = Field(
        None, ge=0, le=1, description="fixed weight of the tower in the blend (None = chosen on validation)"
    )
    blend_steps: int = Field(
        21, ge=2, description="grid points of the tower's weight in (0, 1] searched on validation"
    )
    seed: int = Field(2024, ge=0, description="random seed of the towers and of the pseudo-cold holdout")
    threads: int = Field(
        0,
        ge=0,
        description="torch threads while the towers train (0 = torch's default; 1 is fastest on small data)",
    )


@register
class ColdStart(Recommender[ColdStartParams]):
    """Content tower trained on interactions (places items without interactions), blended with a
    collaborative model on warm items.

    Why: a new item has content but no interactions; a tower trained so that its output's dot product
    with user vectors predicts who interacts with an item places it where users will find it, and a
    collaborative model keeps what interactions say about warm items. See the module docstring.
    """

    name = "coldstart"
    params_class = ColdStartParams
    uses_features = True

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._state: dict[str, np.ndarray] = {}
        self._cf: Recommender | None = None
        self._tower_only = False
        self._tower_validator: Validator | None = None

    def fit(
        self, dataset: Dataset, *, progress: bool = True, validator: Validator | None = None
    ) -> ColdStart:
        """As :meth:`Recommender.fit`; without a ``validator`` the towers early-stop on the validation
        users' Recall@20 over the items without training interactions (see the module docstring)."""
        self._tower_validator = validator if validator is not None else _cold_validator(dataset)
        try:
            super().fit(dataset, progress=progress, validator=validator)
        finally:
            self._tower_validator = None
        return self

    def _fit(self, dataset: Dataset, *, progress: bool) -> None:
        if self.hp.modalities == []:  # the "none (CF)" ablation: the collaborative model alone
            self._fit_without_content(dataset, progress)
            return
        mods = select_modalities(dataset, self.hp.modalities)
        if not mods:
            raise DataError(
                "the coldstart model places items by their content: the data set has no item features"
            )
        R = sp.csr_matrix(dataset.train, dtype=np.float32, copy=True)
        R.data[:] = 1.0
        warm = np.diff(R.tocsc().indptr) > 0
        if warm.sum() < 10:
            raise DataError(f"only {int(warm.sum())} items have training interactions; need at least 10")
        feats = {m: np.asarray(dataset.features[m], np.float32) for m in mods}
        masks = {m: presence(dataset, m) for m in mods}
        self._state = {"warm": warm.astype(np.uint8), **fit_standardisation(feats, masks, warm, mods)}
        self.meta.update({"modalities": mods, "input_dims": {m: int(x.shape[1]) for m, x in feats.items()}})
        F = tower_features(self._state, feats, masks, mods)
        with torch_threads(self.hp.threads):
            self._fit_towers(F, R, warm)
        self._fit_collaborative(dataset, progress)

    def _fit_without_content(self, dataset: Dataset, progress: bool) -> None:
        """``modalities = []``: no tower, the collaborative member scores alone (blend weight 0)."""
        if self.hp.collaborative is None:
            raise DataError("coldstart with modalities = [] needs a collaborative model", field="modalities")
        self._cf = self._make_cf().fit(dataset, progress=progress, validator=self._validator)
        self.meta.update({"modalities": [], "input_dims": {}})
        self.meta["collaborative"] = {"model": self.hp.collaborative["model"], "meta": self._cf.meta}
        self._state = {
            "warm": (np.diff(dataset.train.tocsc().indptr) > 0).astype(np.uint8),
            "blend_weight": np.zeros(1, np.float64),
        }

    def _fit_towers(self, F: np.ndarray, R: sp.csr_matrix, warm: np.ndarray) -> None:
        """Train ``seeds`` towers, validated by the tower validator (or on pseudo-cold warm items)."""
        fit_items = warm
        if self._tower_validator is None:  # nothing validates cold items: hold out pseudo-cold ones
            fit_items, pseudo = holdout_items(warm, self.hp.holdout, np.random.default_rng(self.hp.seed))
            validate = pseudo_cold_recall(R, pseudo)
            self.meta["tower_validation"] = f"pseudo-cold: {int(pseudo.sum())} warm items held out"
        else:
            validate = self._validate_tower
            self.meta["tower_validation"] = "validator (tower scores alone)"
        state, history = train_towers(TowerData.build(F, R, fit_items), validate, self.hp, seed=self.hp.seed)
        self._state.update(state)
        self._state["item_vectors"] = tower_vectors(load_towers(state, F.shape[1], self.hp), F)
        self.meta["towers"] = history
        self.meta["valid_towers"] = float(validate(self._state["item_vectors"], self._state["user_vectors"]))

    def _validate_tower(self, V: np.ndarray, U: np.ndarray) -> float:
        """The tower validator on a model that scores with ``U @ V.T`` alone."""
        assert self._tower_validator is not None
        saved = {k: self._state.get(k) for k in ("item_vectors", "user_vectors")}
        self._state["item_vectors"], self._state["user_vectors"] = V, U
        self._tower_only = True
        try:
            return float(self._tower_validator(self))
        finally:
            self._tower_only = False
            for k, v in saved.items():
                if v is None:
                    self._state.pop(k, None)
                else:
                    self._state[k] = v

    def _fit_collaborative(self, dataset: Dataset, progress: bool) -> None:
        """Fit the collaborative member, then choose the tower's weight on validation."""
        spec = self.hp.collaborative
        if spec is None:
            self._state["blend_weight"] = np.ones(1, np.float64)
            return
        self._cf = self._make_cf().fit(dataset, progress=progress, validator=self._validator)
        self.meta["collaborative"] = {"model": spec["model"], "meta": self._cf.meta}
        if self.hp.blend_weight is not None:
            self._state["blend_weight"] = np.array([self.hp.blend_weight], np.float64)
            return
        steps = self.hp.blend_steps - 1
        grid = []
        for w in [i / steps for i in range(1, steps + 1)]:
            self._state["blend_weight"] = np.array([w], np.float64)
            grid.append({"tower_weight": w, "valid": self.validate()})
        best = max(grid, key=lambda g: g["valid"])  # first of equals: the smallest tower weight
        self._state["blend_weight"] = np.array([best["tower_weight"]], np.float64)
        self.meta["blend_grid"] = grid

    def _make_cf(self) -> Recommender:
        spec = self.hp.collaborative
        assert spec is not None
        params = dict(spec.get("params") or {})
        cls = REGISTRY.get(spec["model"].lower())
        if cls is None:
            raise ConfigError(f"coldstart: unknown collaborative model {spec['model']!r}")
        if cls.uses_features and self.hp.modalities is not None:
            params.setdefault("modalities", self.hp.modalities)
        return create(spec["model"], **params)

    # ------------------------------------------------------------------ scoring
    @property
    def blend_weight(self) -> float:
        """The tower's weight in the blend (1 = tower alone)."""
        return float(self._state["blend_weight"][0])

    def _score(self, users: np.ndarray) -> torch.Tensor:
        if "item_vectors" not in self._state:  # no content (modalities = []): the collaborative model
            assert self._cf is not None
            return self._cf._score(users).float()
        U = torch.from_numpy(self._state["user_vectors"][users])
        tower = U @ torch.from_numpy(self._state["item_vectors"]).T
        w = 1.0 if self._tower_only or self._cf is None else self.blend_weight
        if w >= 1.0:
            return tower
        assert self._cf is not None
        cf = self._cf._score(users).float()
        # Both z-scores use the statistics of the warm items, so adding items later changes no old
        # item's score. Items without training interactions (cold, or added after fit beyond the
        # collaborative model's columns) get the collaborative mean, 0: the tower ranks them.
        wi = torch.from_numpy(np.flatnonzero(self._state["warm"]))
        z = torch.zeros_like(tower)
        z[:, wi] = standardise_rows(cf[:, wi])
        t = tower[:, wi]
        sd = t.std(1, keepdim=True)
        zt = torch.where(
            sd > 1e-12, (tower - t.mean(1, keepdim=True)) / sd.clamp_min(1e-12), torch.zeros_like(tower)
        )
        return w * zt + (1 - w) * z

    # ------------------------------------------------------------------ new items
    def place_items(
        self, views: dict[str, np.ndarray], masks: dict[str, np.ndarray] | None = None
    ) -> np.ndarray:
        """Item vectors [n, dim * seeds] of items given by their content alone (the cold-start placement).

        ``views`` maps the model's modalities to raw feature rows; a modality left out, or masked
        False, counts as missing (mean block + presence flag 0).
        """
        self._check_fitted()
        mods, dims = self._modalities, self._input_dims
        if not mods:
            raise DataError("this coldstart model was fitted without content (modalities = [])")
        n = len(next(iter(views.values()))) if views else 0
        full, mk = {}, {}
        for m in mods:
            x = views.get(m)
            if x is not None and np.asarray(x).shape[1:] != (dims[m],):
                raise DataError(
                    f"modality {m!r}: expected {dims[m]} features, got {np.asarray(x).shape[1:]}", field=m
                )
            full[m] = np.zeros((n, dims[m]), np.float32) if x is None else np.asarray(x, np.float32)
            present = np.ones(n, bool) if masks is None or m not in masks else np.asarray(masks[m], bool)
            mk[m] = present & (x is not None)
            full[m] = np.where(mk[m][:, None], np.nan_to_num(full[m]), 0.0)
        F = tower_features(self._state, full, mk, mods)
        d_in = sum(dims.values()) + len(mods)
        return tower_vectors(load_towers(self._state, d_in, self.hp), F)

    def add_items(self, vectors: np.ndarray) -> None:
        """Append items placed by :meth:`place_items` (indices ``n_items ..``): no training interactions,
        so the tower alone ranks them (the collaborative z-score is 0) until the next fit."""
        self._check_fitted()
        V = np.asarray(vectors, np.float32)
        if V.ndim != 2 or V.shape[1] != self.item_vectors.shape[1]:
            raise DataError(f"new item vectors must be [n, {self.item_vectors.shape[1]}], got {V.shape}")
        self._state["item_vectors"] = np.concatenate([self.item_vectors, V])
        self._state["warm"] = np.concatenate([self._state["warm"], np.zeros(len(V), np.uint8)])
        self.n_items += len(V)

    @property
    def modalities(self) -> list[str]:
        """The feature modalities the tower reads (what a new item is encoded into)."""
        return self._modalities

    @property
    def _modalities(self) -> list[str]:
        return list(self.meta["modalities"])

    @property
    def _input_dims(self) -> dict[str, int]:
        return {m: int(d) for m, d in self.meta["input_dims"].items()}

    @property
    def item_vectors(self) -> np.ndarray:
        """[n_items, dim * seeds]: the tower's item side (score = user . item)."""
        return self._state["item_vectors"]

    @property
    def user_vectors(self) -> np.ndarray:
        """[n_users, dim * seeds]: the tower's user side."""
        return self._state["user_vectors"]

    # ------------------------------------------------------------------ persistence
    def _state_to_save(self) -> dict[str, np.ndarray]:
        out = dict(self._state)
        if self._cf is not None:
            out.update({f"cf.{k}": v for k, v in self._cf._state_to_save().items()})
        return out

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        self._state = {k: v for k, v in state.items() if not k.startswith("cf.")}
        self._cf = None
        if self.hp.collaborative is not None:
            cf = self._make_cf()
            info = self.meta.get("collaborative", {})
            cf.n_users = self.n_users
            cf.n_items = int(info.get("meta", {}).get("n_items", self.n_items))
            cf.meta = info.get("meta", {})
            cf._restore({k[3:]: v for k, v in state.items() if k.startswith("cf.")})
            self._cf = cf


def _cold_validator(dataset: Dataset) -> Validator | None:
    """Recall@20 of the validation users over the items without training interactions, if the
    validation split has interactions with such items (the cold-start protocol); else None."""
    from modalrec.evaluation.protocol import evaluate

    cold = np.flatnonzero(np.diff(dataset.train.tocsc().indptr) == 0)
    valid = dataset.target("valid")
    if len(cold) == 0 or valid[:, cold].nnz == 0:
        return None
    return lambda model: float(
        evaluate(model, dataset, "valid", ks=(20,), candidate_items=cold).metrics["recall@20"]
    )

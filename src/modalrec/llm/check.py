"""The explanation checker: does a sentence say only true, checkable things about a recommendation?

Why a checker separate from the explainer: a 135M model phrasing a reason can name a film the user
never saw, call clocks "movies", or say nothing the two items have in common. The checker reads the
final text only (not how it was made) against the catalogue and the interactions, and says whether
it passes three rules (issue 19, item 5):

1. **Grounded**: every catalogue title it names is the recommended item or an item of the user's
   real history (train + valid interactions), it names at least one history item, and it quotes no
   unknown title.
2. **The catalogue's noun**: it uses what the catalogue calls its items ("movie", "item", ...) and no
   other domain's noun ("film" for a catalogue of clocks).
3. **A shared attribute it can verify**: it states something the recommended item and a history item
   it names really share: a genre (or other describing attribute) both have in the catalogue, a
   keyword both descriptions contain, or a modality whose cosine similarity between the two is in the
   top :attr:`ExplanationChecker.top_share` of the recommended item's similarities to the catalogue.

:meth:`ExplanationChecker.facts` lists the shared attributes the checker would accept for an
(item, history item) pair; the explainer builds its fallback sentence from them, so a fallback is
right by construction and the checker still re-reads it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from modalrec.llm.domain import ItemDomain, plural_of
from modalrec.llm.text import ItemText, strip_year

if TYPE_CHECKING:
    from modalrec.data.dataset import Dataset


# ---------------------------------------------------------------------- titles named in a text
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
        found: set[int] = set()
        if allowed:
            ok = set(allowed)
            spans = []
            for p, i in self._patterns:
                if i in ok:
                    hits = [m.span() for m in p.finditer(text)]
                    found |= {i} if hits else set()
                    spans += hits
            for a, b in sorted(spans, key=lambda ab: ab[0] - ab[1]):
                text = text[:a] + "\x00" * (b - a) + text[b:]
        return found | {i for p, i in self._patterns if p.search(text)}

    def without_titles(self, text: str) -> str:
        """``text`` with every catalogue title it names blanked out (so "The Game" is not the noun "game").

        >>> TitleIndex(["The Game (1997)"]).without_titles("You liked The Game, a movie.")
        'You liked  , a movie.'
        """
        spans = [m.span() for p, _ in self._patterns for m in p.finditer(text)]
        for a, b in sorted(spans, key=lambda ab: ab[0] - ab[1]):
            text = text[:a] + " " * (b - a) + text[b:]
        return re.sub(r" {2,}", "  ", text)

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


# ---------------------------------------------------------------------- nouns
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


def _has_word(text: str, word: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text, re.IGNORECASE) is not None


def foreign_nouns(text: str, domain: ItemDomain) -> list[str]:
    """Nouns of another domain used in ``text`` (the catalogue's own noun and "item" are allowed).

    >>> foreign_nouns("You liked the movie Heat.", ItemDomain("clock"))
    ['movie']
    >>> foreign_nouns("Two clocks you liked; an item like them.", ItemDomain("clock"))
    []
    """
    own = {domain.noun.lower(), domain.plural.lower(), "item", "items"}
    found = [
        form for n in DOMAIN_NOUNS for form in (n, plural_of(n)) if form not in own and _has_word(text, form)
    ]
    return sorted(set(found))


def uses_noun(text: str, domain: ItemDomain) -> bool:
    """True when ``text`` calls the items what the catalogue calls them.

    >>> uses_noun("Two clocks you liked.", ItemDomain("clock")), uses_noun("You liked it.", ItemDomain("clock"))
    (True, False)
    """
    return _has_word(text, domain.noun) or _has_word(text, domain.plural)


# ---------------------------------------------------------------------- facts
#: words a modality may be called in a sentence ("visual similarity" for the image view)
MODALITY_WORDS = {
    "collaborative": ("collaborative", "co-occurrence"),
    "image": ("image", "visual", "poster", "picture"),
    "text": ("text", "description", "textual"),
    "audio": ("audio", "sound"),
    "video": ("video",),
}
_STOP = frozenset(
    [
        "about",
        "after",
        "again",
        "against",
        "their",
        "there",
        "these",
        "those",
        "which",
        "while",
        "where",
        "would",
        "could",
        "should",
        "other",
        "being",
        "every",
        "through",
        "during",
        "before",
        "under",
        "between",
        "story",
        "stories",
        "young",
        "people",
        "years",
        "world",
        "family",
        "life",
        "lives",
        "finds",
        "find",
        "takes",
        "take",
        "becomes",
        "become",
        "first",
        "their",
        "them",
        "they",
        "with",
        "from",
        "into",
        "when",
        "what",
    ]
)


@dataclass(frozen=True)
class Fact:
    """One attribute an item shares with a history item, in a form the checker can verify in text."""

    history_item: int
    kind: str  # "attribute" (a genre or other describing value), "keyword" or "similarity"
    value: str  # the genre / keyword / modality name
    strength: float = 1.0  # similarity percentile for "similarity", 1 otherwise


@dataclass
class CheckResult:
    """The checker's verdict on one explanation, with the reasons (JSON-able via :meth:`as_dict`)."""

    named_history: list[int]
    names_outside_history: list[str]
    foreign_nouns: list[str]
    uses_noun: bool
    shared: list[str] = field(default_factory=list)

    @property
    def states_shared_attribute(self) -> bool:
        return bool(self.shared)

    @property
    def passes(self) -> bool:
        return (
            bool(self.named_history)
            and not self.names_outside_history
            and not self.foreign_nouns
            and self.uses_noun
            and bool(self.shared)
        )

    def failures(self) -> list[str]:
        """Short names of the rules broken (empty when it passes)."""
        out = []
        if not self.named_history:
            out.append("names no history item")
        if self.names_outside_history:
            out.append("names an item outside the history")
        if self.foreign_nouns:
            out.append("another domain's noun")
        if not self.uses_noun:
            out.append("not the catalogue's noun")
        if not self.shared:
            out.append("no verified shared attribute")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "states_shared_attribute": self.states_shared_attribute,
            "passes": self.passes,
            "failures": self.failures(),
        }


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]{5,}", text.lower()) if w not in _STOP}


def _normalised_rows(mat: np.ndarray | sp.spmatrix) -> Any:
    if sp.issparse(mat):
        m = sp.csr_matrix(mat, dtype=np.float64)
        norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
        return sp.diags(np.where(norms > 0, 1.0 / np.where(norms > 0, norms, 1.0), 0.0)) @ m
    a = np.asarray(mat, dtype=np.float64)
    n = np.linalg.norm(a, axis=1, keepdims=True)
    return a / np.where(n > 0, n, 1.0)


class ExplanationChecker:
    """Checks explanations of one catalogue (see the module docstring for the rules).

    Args:
        dataset: the interactions (history = train + valid) and the catalogue.
        texts: titles and describing attributes (default: :class:`ItemText` of ``dataset``).
        item_vectors: the content views compared for "similarity" facts (default
            ``dataset.features``); the collaborative view (co-occurrence in training) is always there.
        top_share: a modality similarity counts as shared when it is in this top share of the
            recommended item's similarities to the other items (0.1 = top 10%).
    """

    def __init__(
        self,
        dataset: Dataset,
        texts: ItemText | None = None,
        *,
        item_vectors: Mapping[str, np.ndarray] | None = None,
        top_share: float = 0.1,
    ) -> None:
        self.dataset = dataset
        self.texts = texts or ItemText(dataset)
        self.index = TitleIndex(self.texts.titles)
        self.top_share = float(top_share)
        views: dict[str, Any] = {"collaborative": dataset.train.T.tocsr()}
        vecs = dict(item_vectors) if item_vectors is not None else dict(dataset.features)
        views.update({k: np.asarray(v) for k, v in vecs.items()})
        self._views = {k: _normalised_rows(v) for k, v in views.items()}
        self._masks = {k: dataset.feature_masks.get(k) for k in views}
        self._seen = (dataset.train + dataset.valid).tocsr()
        words = [_words(o) for o in self.texts.overviews]
        # keywords must be distinctive: in at most 2% of the descriptions ("prison", not "great")
        df: dict[str, int] = {}
        for ws in words:
            for w in ws:
                df[w] = df.get(w, 0) + 1
        limit = max(2, int(0.02 * len(words)))
        self._words = [{w for w in ws if df[w] <= limit} for ws in words]

    @property
    def domain(self) -> ItemDomain:
        return self.texts.domain

    def history(self, user: int) -> list[int]:
        """The user's real history (train + valid item indices)."""
        return [int(h) for h in self._seen.indices[self._seen.indptr[user] : self._seen.indptr[user + 1]]]

    def similarity_percentile(self, modality: str, item: int, other: int) -> float:
        """Share of catalogue items less similar to ``item`` than ``other`` is (in ``modality``)."""
        v = self._views[modality]
        mask = self._masks.get(modality)
        if mask is not None and len(mask) == self.dataset.n_items and not (mask[item] and mask[other]):
            return 0.0
        sims = np.asarray(v @ v[item].T.toarray() if sp.issparse(v) else v @ v[item]).ravel()
        if not np.isfinite(sims[other]) or sims[other] <= 0:
            return 0.0
        rest = np.delete(sims, item)
        return float((rest < sims[other]).mean())

    def facts(self, item: int, history_item: int) -> list[Fact]:
        """Every shared attribute of the two items the checker accepts, strongest kinds first."""
        h = history_item
        out = [Fact(h, "attribute", g) for g in self.texts.genres[item] if g in self.texts.genres[h]]
        genre_words = {w.lower() for g in self.texts.genres[item] for w in g.split()}
        title_words = _words(self.texts.titles[item]) | _words(self.texts.titles[h])
        shared_words = (self._words[item] & self._words[h]) - genre_words - title_words
        out += [Fact(h, "keyword", w) for w in sorted(shared_words)]
        for m in self._views:
            p = self.similarity_percentile(m, item, h)
            if p >= 1.0 - self.top_share:
                out.append(Fact(h, "similarity", m, round(p, 4)))
        return out

    def _stated(self, text: str, item: int, named: Iterable[int]) -> list[str]:
        """The facts about ``item`` and a named history item that ``text`` states."""
        low = text.lower()
        stated = []
        for h in named:
            for f in self.facts(item, h):
                if f.kind == "similarity":
                    words = MODALITY_WORDS.get(f.value, (f.value,))
                    ok = "similar" in low and any(_has_word(text, w) for w in words)
                else:
                    ok = _has_word(text, f.value)
                if ok:
                    stated.append(f"{f.kind}:{f.value} ({self.texts.titles[h]})")
        return sorted(set(stated))

    def check(self, text: str, user: int, item: int, history: Sequence[int] | None = None) -> CheckResult:
        """The verdict on ``text`` explaining ``item`` (index) to ``user`` (index)."""
        hist = list(history) if history is not None else self.history(user)
        allowed = [*hist, item]
        named = sorted(self.index.mentions(text, allowed) & set(hist))
        return CheckResult(
            named_history=named,
            names_outside_history=check_grounding(text, allowed, self.index),
            foreign_nouns=foreign_nouns(self.index.without_titles(text), self.domain),
            uses_noun=uses_noun(text, self.domain),
            shared=self._stated(text, item, named),
        )


def fact_sentence(fact: Fact, texts: ItemText) -> str:
    """One sentence stating ``fact`` in words the checker verifies (the history item named, the noun used).

    >>> from modalrec.llm.domain import ItemDomain
    >>> class T:  # a stand-in catalogue with one history title
    ...     titles, domain = ["Toy Story (1995)"], ItemDomain("movie", ("genres",))
    >>> fact_sentence(Fact(0, "attribute", "Comedy"), T())
    'Both it and Toy Story (1995), one of the movies you liked, have Comedy among their genres.'
    >>> fact_sentence(Fact(0, "similarity", "image", 0.97), T())
    'Its image is among the most similar to that of Toy Story (1995), one of the movies you liked.'
    """
    d = texts.domain
    liked = f"{texts.titles[fact.history_item]}, one of the {d.plural} you liked"
    if fact.kind == "attribute":
        return f"Both it and {liked}, have {fact.value} among their {d.attribute}."
    if fact.kind == "keyword":
        return f"Its description shares the keyword {fact.value} with that of {liked}."
    return f"Its {fact.value} is among the most similar to that of {liked}."


def best_fact(checker: ExplanationChecker, item: int, candidates: Sequence[int]) -> Fact | None:
    """The fact to state for ``item``: a shared attribute of the first candidate that has one, else a
    keyword, else the strongest similarity (candidates in the explainer's evidence order)."""
    facts = [f for h in candidates for f in checker.facts(item, h)]
    for kind in ("attribute", "keyword"):
        of_kind = [f for f in facts if f.kind == kind]
        if of_kind:
            return of_kind[0]
    sims = [f for f in facts if f.kind == "similarity"]
    return max(sims, key=lambda f: f.strength) if sims else None

"""Item text for prompts: short, natural titles plus genres, robust to catalogues without those columns.

Why short: the re-ranker scores every candidate's text under the LLM, so its cost grows with the
token count; title + genres carries most of what a 135M model can use, while plot overviews would
multiply the cost by ten. Why natural titles: MovieLens writes "Godfather, The (1972)"; the LLM
has seen "The Godfather (1972)" far more often, so the log-likelihoods are less noisy.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import polars as pl

from modalrec.llm.domain import ItemDomain, domain_of

if TYPE_CHECKING:
    from modalrec.data.dataset import Dataset

_ARTICLE = re.compile(
    r"^(?P<name>.+?), (?P<art>The|A|An|Les|La|Le|L'|Il|Das|Der|Die|El)(?P<rest>\s*\(.*\))?\s*$"
)
_YEAR = re.compile(r"\s*\((\d{4})\)\s*$")


def natural_title(title: str) -> str:
    """Move a trailing article to the front: MovieLens' "Godfather, The (1972)" -> "The Godfather (1972)".

    >>> natural_title("Godfather, The (1972)")
    'The Godfather (1972)'
    >>> natural_title("Toy Story (1995)")
    'Toy Story (1995)'
    """
    m = _ARTICLE.match(title.strip())
    if not m:
        return title.strip()
    art = m.group("art")
    sep = "" if art.endswith("'") else " "
    return f"{art}{sep}{m.group('name')}{m.group('rest') or ''}".strip()


def strip_year(title: str) -> str:
    """Title without a trailing "(1995)".

    >>> strip_year("The Godfather (1972)")
    'The Godfather'
    """
    return _YEAR.sub("", title).strip()


def clip_text(text: str, max_chars: int) -> str:
    """``text`` cut to at most ``max_chars`` characters, at a word boundary when there is one.

    >>> clip_text("Toy Story (1995), Animation", 100)
    'Toy Story (1995), Animation'
    >>> clip_text("Toy Story (1995), Animation", 20)
    'Toy Story (1995),'
    """
    if max_chars <= 0 or len(text) <= max_chars:
        return text
    cut = text[: max_chars + 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > 0 else text[:max_chars]).rstrip()


def split_genres(value: str | None) -> list[str]:
    """Genres from a ``|`` or ``,`` separated string.

    >>> split_genres("Animation|Children's|Comedy")
    ['Animation', "Children's", 'Comedy']
    """
    if not value:
        return []
    parts = re.split(r"[|,;]", value)
    return [
        p.strip() for p in parts if p.strip() and p.strip().lower() not in ("unknown", "(no genres listed)")
    ]


def _column(dataset: Dataset, names: tuple[str, ...]) -> list[str] | None:
    if dataset.items is None:
        return None
    for n in names:
        if n in dataset.items.columns:
            return [v or "" for v in dataset.items[n].cast(pl.Utf8).fill_null("").to_list()]
    return None


class ItemText:
    """Titles, describing attributes and overviews of a catalogue, computed once (the re-ranker asks per user).

    Which column is the title and which columns describe an item come from ``domain`` (default:
    :func:`~modalrec.llm.domain.domain_of` the data set). Falls back to the first text field as the
    "title" and to item ids where a catalogue has no text. ``genres`` holds the describing
    attributes (the values of ``domain.fields``), whatever the catalogue calls them.
    """

    def __init__(self, dataset: Dataset, domain: ItemDomain | None = None) -> None:
        self.domain = domain or domain_of(dataset)
        titles = _column(dataset, (self.domain.title,) if self.domain.title else ("title", "name"))
        if titles is None and dataset.text_fields:
            titles = _column(dataset, (dataset.text_fields[0],))
        ids = [str(i) for i in dataset.item_ids]
        self.item_ids: list[str] = ids
        raw = titles if titles is not None else ["" for _ in ids]
        self.titles: list[str] = [natural_title(t) if t else "" for t in raw]
        self.has_text: list[bool] = [bool(t) for t in self.titles]
        self.titles = [t if t else f"{self.domain.noun} {i}" for t, i in zip(self.titles, ids, strict=True)]
        self.genres: list[list[str]] = [[] for _ in ids]
        for f in self.domain.fields:
            col = _column(dataset, (f,))
            if col is not None:
                self.genres = [
                    [*g, *(x for x in split_genres(v) if x not in g)]
                    for g, v in zip(self.genres, col, strict=True)
                ]
        ov = _column(dataset, ("overview", "description", "plot"))
        self.overviews: list[str] = ov if ov is not None else ["" for _ in ids]
        self.n_items = len(ids)

    def short(self, i: int, *, genres: bool = True) -> str:
        """``"Toy Story (1995), Animation, Children's, Comedy"``: the text the re-ranker scores."""
        t = self.titles[i]
        if genres and self.genres[i]:
            return f"{t}, {', '.join(self.genres[i])}"
        return t

    def target(self, i: int) -> str:
        """The text the item projector learns to produce: the attributes first, then the title.

        Attributes (genres) come first because they are what an image vector can predict; the
        title is then generated conditioned on them.
        """
        g = ", ".join(self.genres[i]) if self.genres[i] else "unknown"
        return f"{self.domain.attribute.capitalize() if self.domain.fields else 'Genres'}: {g}. Title: {self.titles[i]}"

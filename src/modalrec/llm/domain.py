"""What a catalogue's items are called and which fields describe them: every prompt reads it from here.

Why this module: prompts used to say "movie" whatever the catalogue held, so the demo catalogue of
clocks and chairs got "The user liked the movie 'Vintage bamboo clock'". The noun and the describing
fields now come from the data set, in this order:

1. what the caller (a config's ``[llm]`` table, a CLI option) says;
2. the built-in data sets' own nouns (ML-100K holds movies, TikTok videos, Amazon Baby products);
3. the catalogue: the describing fields are the genre-like columns it has (``genres``, ``category``,
   ``tags``, ...), none if it has none;
4. the neutral default: "item", and no describing field.

>>> ItemDomain().plural
'items'
>>> ItemDomain(noun="category").plural, ItemDomain(noun="box").plural, ItemDomain(noun="toy").plural
('categories', 'boxes', 'toys')
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from modalrec.core.errors import ConfigError

if TYPE_CHECKING:
    from modalrec.data.dataset import Dataset

#: nouns of the built-in data sets (``modalrec.data.load`` names); any other data set says "item"
#: unless its config names one.
BUILTIN_NOUNS = {"ml100k": "movie", "tiktok": "video", "baby": "product"}
#: catalogue columns that list an item's attributes (the first present ones describe items)
ATTRIBUTE_COLUMNS = ("genres", "genre", "categories", "category", "tags", "keywords", "brand")
DEFAULT_NOUN = "item"


def plural_of(noun: str) -> str:
    """English plural of a simple noun (the cases item nouns need).

    >>> [plural_of(n) for n in ("movie", "dress", "berry", "day", "item")]
    ['movies', 'dresses', 'berries', 'days', 'items']
    """
    if noun.endswith("y") and len(noun) > 1 and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    if noun.endswith(("s", "x", "z", "ch", "sh")):
        return noun + "es"
    return noun + "s"


@dataclass(frozen=True)
class ItemDomain:
    """How prompts talk about the items of one catalogue.

    Attributes:
        noun: what one item is called ("movie", "product", "item").
        fields: catalogue columns whose values describe an item (shown after its title in prompts,
            compared between items in explanations); empty when the catalogue has none.
        title: the column holding an item's name (None: ``title``, ``name`` or the first text field).
        plural_noun: the plural when the simple English rule is wrong ("series", "people").
    """

    noun: str = DEFAULT_NOUN
    fields: tuple[str, ...] = ()
    title: str | None = None
    plural_noun: str | None = None

    def __post_init__(self) -> None:
        if not self.noun.strip() or "\n" in self.noun:
            raise ConfigError(f"item noun {self.noun!r} must be a non-empty single line")

    @property
    def plural(self) -> str:
        return self.plural_noun or plural_of(self.noun)

    @property
    def attribute(self) -> str:
        """Name of the describing attribute in prose ("genres", "category"; "attributes" if several)."""
        if len(self.fields) == 1:
            return self.fields[0].replace("_", " ")
        return "attributes"


def domain_of(
    dataset: Dataset,
    *,
    noun: str | None = None,
    fields: Sequence[str] | None = None,
    title: str | None = None,
    plural: str | None = None,
) -> ItemDomain:
    """The :class:`ItemDomain` of ``dataset``: explicit values first, then the data set's own.

    Raises:
        ConfigError: a named field or title column is not in the catalogue (names the column and the
            columns there are).
    """
    columns = list(dataset.items.columns) if dataset.items is not None else []
    for col in [*(fields or ()), *([title] if title else [])]:
        if col not in columns:
            raise ConfigError(
                f"[llm] item field {col!r} is not a catalogue column (columns: {', '.join(columns) or 'none'})"
            )
    if fields is None:
        fields = [c for c in ATTRIBUTE_COLUMNS if c in columns][:1]
    name = noun or BUILTIN_NOUNS.get(str(dataset.name).lower()) or DEFAULT_NOUN
    return ItemDomain(noun=name.strip(), fields=tuple(fields), title=title, plural_noun=plural)

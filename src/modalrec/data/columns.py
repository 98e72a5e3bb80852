"""Column auto-detection: which columns of the user's files mean user, item, rating, time, text, media.

Why a separate module: the same :class:`ColumnMap` resolves the columns of interaction files and of
item catalogues, whatever the format they were read from; it only sees column names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from modalrec.core.errors import ConfigError, DataError

# Column names recognised when a ColumnMap leaves a field to auto-detection (first match wins).
USER_NAMES = ("user_id", "userID", "userId", "user", "uid", "reviewerID", "customer_id")
ITEM_NAMES = ("item_id", "itemID", "itemId", "item", "iid", "movie_id", "movieId", "asin", "product_id")
RATING_NAMES = ("rating", "ratings", "score", "stars", "overall")
TIMESTAMP_NAMES = ("timestamp", "ts", "time", "datetime", "unixReviewTime", "date")
LABEL_NAMES = ("x_label", "split", "label_split")
TEXT_NAMES = (
    "title",
    "name",
    "genres",
    "categories",
    "category",
    "tags",
    "description",
    "overview",
    "tagline",
    "summary",
    "text",
    "plot",
    "brand",
)
MEDIA_NAMES = {
    "image": ("image", "image_path", "poster", "poster_path", "img", "image_file"),
    "audio": ("audio", "audio_path", "audio_file"),
    "video": ("video", "video_path", "video_file"),
}


@dataclass(frozen=True)
class ColumnMap:
    """Which columns of the user's files mean what.

    Interaction columns: ``user``, ``item`` (required), ``rating``, ``timestamp``, ``label``
    (a fixed split: 0/1/2 or train/valid/test, as MMRec's ``x_label``). Catalogue columns:
    ``item_id`` (defaults to ``item``), ``text`` (text fields, joined in this order by
    :meth:`Dataset.item_texts`), and media path columns ``image``, ``audio``, ``video``.

    With ``auto=True`` (default) every field left as ``None`` is looked up among common names
    (``userID``, ``movieId``, ``timestamp``, ``x_label``, ``title``, ``image_path``...); with
    ``auto=False`` a ``None`` field means "not present". A column that is named explicitly but
    missing from the file is a :class:`DataError`.

    >>> ColumnMap(user="uid", item="sku", rating="stars").resolve_interactions(
    ...     ["uid", "sku", "stars", "ts"], "x.csv").timestamp
    'ts'
    """

    user: str | None = None
    item: str | None = None
    rating: str | None = None
    timestamp: str | None = None
    label: str | None = None
    item_id: str | None = None
    text: tuple[str, ...] | None = None
    image: str | None = None
    audio: str | None = None
    video: str | None = None
    auto: bool = True

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ColumnMap:
        """Build from a plain mapping (TOML table); unknown keys raise ``ConfigError``."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown column-map keys {unknown}; expected some of {sorted(known)}")
        d = dict(d)
        if isinstance(d.get("text"), str):
            d["text"] = (d["text"],)
        elif d.get("text") is not None:
            d["text"] = tuple(d["text"])
        return cls(**d)

    def _pick(
        self, given: str | None, candidates: Sequence[str], columns: Sequence[str], file: str, what: str
    ) -> str | None:
        if given is not None:
            if given not in columns:
                raise DataError(f"{what} column {given!r} not found; columns are {list(columns)}", file=file)
            return given
        if not self.auto:
            return None
        lower = {c.lower(): c for c in columns}
        for cand in candidates:
            if cand in columns:
                return cand
            if cand.lower() in lower:
                return lower[cand.lower()]
        return None

    def resolve_interactions(self, columns: Sequence[str], file: str) -> ColumnMap:
        """Fill the interaction fields from ``columns``; user and item must be found."""
        user = self._pick(self.user, USER_NAMES, columns, file, "user")
        item = self._pick(self.item, ITEM_NAMES, columns, file, "item")
        if user is None or item is None:
            missing = "user" if user is None else "item"
            raise DataError(
                f"no {missing} column found; columns are {list(columns)}; "
                f"name it with ColumnMap({missing}=...) or columns={{'{missing}': ...}}",
                file=file,
            )
        if user == item:
            raise DataError(f"user and item map to the same column {user!r}", file=file)
        return replace(
            self,
            user=user,
            item=item,
            rating=self._pick(self.rating, RATING_NAMES, columns, file, "rating"),
            timestamp=self._pick(self.timestamp, TIMESTAMP_NAMES, columns, file, "timestamp"),
            label=self._pick(self.label, LABEL_NAMES, columns, file, "label"),
        )

    def resolve_items(self, columns: Sequence[str], file: str) -> ColumnMap:
        """Fill the catalogue fields from ``columns``; the item id column must be found."""
        given = self.item_id if self.item_id is not None else (self.item if self.item in columns else None)
        item_id = self._pick(given, ITEM_NAMES, columns, file, "item id")
        if item_id is None:
            raise DataError(
                f"no item id column found in the item table; columns are {list(columns)}; "
                "name it with ColumnMap(item_id=...)",
                file=file,
            )
        if self.text is not None:
            for t in self.text:
                if t not in columns:
                    raise DataError(f"text column {t!r} not found; columns are {list(columns)}", file=file)
            text = tuple(self.text)
        elif self.auto:
            text = tuple(c for c in TEXT_NAMES if c in columns and c != item_id)
        else:
            text = ()
        media = {
            m: self._pick(getattr(self, m), MEDIA_NAMES[m], columns, file, m)
            for m in ("image", "audio", "video")
        }
        return replace(
            self, item_id=item_id, text=text, image=media["image"], audio=media["audio"], video=media["video"]
        )

    @property
    def media(self) -> dict[str, str]:
        """Modality -> column name, for the media columns that are set."""
        return {m: c for m in ("image", "audio", "video") if (c := getattr(self, m)) is not None}

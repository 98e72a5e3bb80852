"""The encoder protocol, the bad-content error and content hashing.

Why one small protocol: the feature store, the local and the Ray backends and the CLI treat every
modality alike. An encoder has a ``name`` and a ``version`` (together they key the cache, so a change
in preprocessing or weights invalidates old vectors), a fixed output ``dim``, and two steps:

* ``load(ref)`` reads and decodes *one* item (a text, a file path, a ``zip://`` member). It runs in
  worker threads, so decoding overlaps the model's forward pass, and it raises :class:`ContentError`
  with a short reason for bad content (missing, empty, corrupt, truncated...). One bad file never
  stops a run: the pipeline catches the error and marks that item missing for the modality.
* ``encode(batch)`` turns a batch of loaded items (or raw references, which it loads itself) into a
  float32 array ``[len(batch), dim]``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from modalrec.core.errors import DataError

# Reasons an item is marked missing for a modality; reports count items by these strings.
NO_CONTENT = "no content"  # null / empty reference in the item table
EMPTY_TEXT = "empty text"
MISSING_FILE = "missing file"
EMPTY_FILE = "zero-length file"
CORRUPT_FILE = "corrupt file"
TRUNCATED_FILE = "truncated file"
UNSUPPORTED = "unsupported format"
NON_FINITE = "non-finite features"
WRONG_SHAPE = "wrong feature shape"
NO_FRAMES = "no video frames"
NO_AUDIO_TRACK = "no audio track"
ENCODER_ERROR = "encoder error"


class ContentError(Exception):
    """One item's content cannot be encoded; ``reason`` is one of the short constants above.

    >>> e = ContentError(MISSING_FILE, "posters/7.jpg")
    >>> e.reason, str(e)
    ('missing file', 'missing file: posters/7.jpg')
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


@runtime_checkable
class Encoder(Protocol):
    """What every modality encoder provides (see the module docstring)."""

    name: str
    version: str
    dim: int
    modality: str

    def load(self, ref: Any) -> Any: ...

    def encode(self, batch: Sequence[Any]) -> np.ndarray: ...

    def content_key(self, ref: Any) -> str: ...

    def to_spec(self) -> dict[str, Any]: ...


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_text(text: str) -> str:
    """Content hash of a text.

    >>> sha256_text("abc")[:12]
    'ba7816bf8f01'
    """
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_ref_bytes(ref: Any) -> bytes:
    """Bytes of a media reference (path, ``file://`` or ``zip://<archive>#<member>``).

    Maps every way of failing onto a :class:`ContentError` reason, so that callers never see an
    ``OSError`` for one bad file.
    """
    from modalrec.data.media import read_media_bytes

    if ref is None or (isinstance(ref, str) and not ref.strip()):
        raise ContentError(NO_CONTENT)
    if isinstance(ref, bytes):
        data = ref
    else:
        s = os.fspath(ref) if isinstance(ref, os.PathLike) else str(ref)
        try:
            data = read_media_bytes(s)
        except DataError as e:
            raise ContentError(MISSING_FILE, f"{s}: {e.message}") from None
        except (OSError, ValueError) as e:  # e.g. a bad zip member (CRC error), a directory
            raise ContentError(CORRUPT_FILE, f"{s}: {e}") from None
    if len(data) == 0:
        raise ContentError(EMPTY_FILE, str(ref)[:200])
    return data


def file_content_key(ref: Any) -> str:
    """Hash of a media reference's bytes; a stable marker (not an error) for unreadable ones.

    Missing and empty files get keys derived from the reference, so a file that appears later
    (or is fixed) gets a new key and is encoded on the next run.
    """
    try:
        return sha256_bytes(read_ref_bytes(ref))
    except ContentError as e:
        return sha256_text(f"unreadable\0{e.reason}\0{ref}")


def isobmff_declared_truncation(data: bytes) -> str | None:
    """For MP4/MOV/M4A (ISO BMFF) bytes: a message if a top-level box runs past the end, else None.

    Why: a cut-off MP4 often still opens (its ``moov`` index comes first, or the cut falls inside
    the last box) and the decoder silently returns only the frames before the cut, or none of the
    audio track; the box sizes say exactly how long the file should be.

    >>> box = lambda kind, body: (8 + len(body)).to_bytes(4, "big") + kind + body
    >>> mp4 = box(b"ftyp", b"isom" + bytes(4)) + box(b"mdat", bytes(100))
    >>> isobmff_declared_truncation(mp4) is None, isobmff_declared_truncation(mp4[:60])
    (True, "'mdat' box declares 108 bytes, 44 present")
    """
    if len(data) < 8 or data[4:8] != b"ftyp":
        return None
    pos, n = 0, len(data)
    while pos + 8 <= n:
        size = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8].decode("latin-1")
        if size == 1:  # 64-bit size follows the type
            if pos + 16 > n:
                return f"{kind!r} box header cut off"
            size = int.from_bytes(data[pos + 8 : pos + 16], "big")
        elif size == 0:  # the box runs to the end of the file
            return None
        if size < 8:
            return None  # not a box structure we understand: leave it to the decoder
        if pos + size > n:
            return f"{kind!r} box declares {size} bytes, {n - pos} present"
        pos += size
    if pos != n:
        return f"box header cut off at byte {pos}"
    return None


def describe_ref(ref: Any) -> str:
    """Short printable form of a reference for reports."""
    if isinstance(ref, bytes):
        return f"<{len(ref)} bytes>"
    if isinstance(ref, np.ndarray):
        return f"<array {ref.shape}>"
    s = str(ref)
    return s if len(s) <= 160 else s[:157] + "..."


class BaseEncoder:
    """Shared plumbing: content keys for file references and ``encode`` = load + forward.

    Subclasses set ``name``/``version``/``dim``/``modality`` and implement ``load`` and
    ``_forward(loaded_batch) -> float32 [n, dim]``. ``is_loaded`` tells raw references apart from
    already-decoded items, so that ``encode`` accepts either.
    """

    name: ClassVar[str] = "base"
    version: str = "0"
    dim: int = 0
    modality: ClassVar[str] = ""

    def load(self, ref: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def is_loaded(self, item: Any) -> bool:
        return not isinstance(item, (str, os.PathLike, bytes)) and item is not None

    def _forward(self, loaded: list[Any]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def content_key(self, ref: Any) -> str:
        return file_content_key(ref)

    def encode(self, batch: Sequence[Any]) -> np.ndarray:
        """Encode a batch of raw references or loaded items into float32 ``[len(batch), dim]``.

        Raises :class:`ContentError` if a raw reference in the batch is bad; the pipeline avoids
        that by loading items one by one first.
        """
        loaded = [x if self.is_loaded(x) else self.load(x) for x in batch]
        if not loaded:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = np.asarray(self._forward(loaded), dtype=np.float32)
        if out.shape != (len(loaded), self.dim):
            raise RuntimeError(f"{self.name} returned shape {out.shape}, expected {(len(loaded), self.dim)}")
        return out

    def to_spec(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this encoder with :func:`modalrec.encoders.build_encoder`."""
        return {"encoder": self.name}

    @property
    def cache_id(self) -> str:
        """Directory-safe id of (name, version): vectors of different ids never mix."""
        return f"{self.name}-{self.version}".replace("/", "_").replace(os.sep, "_")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, version={self.version!r}, dim={self.dim})"


def as_path(ref: Any) -> Path | None:
    """A filesystem path for a plain-path reference, else None (zip members, bytes)."""
    if isinstance(ref, os.PathLike):
        return Path(ref)
    if isinstance(ref, str) and "://" not in ref:
        return Path(ref)
    if isinstance(ref, str) and ref.startswith("file://"):
        return Path(ref[len("file://") :])
    return None

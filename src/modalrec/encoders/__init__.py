"""Item content -> vectors: text, image, audio, video and precomputed encoders + the feature store.

Heavy dependencies (torch models, sentence-transformers, librosa, PyAV, onnxruntime, Ray) are
imported only when an encoder is used, so importing this package is cheap.

>>> from modalrec.encoders import encode_dataset, build_encoder, FeatureSet
"""

from modalrec.encoders.base import BaseEncoder, ContentError, Encoder
from modalrec.encoders.encode import ModalitySpec, encode_dataset, encode_modality, resolve_modalities
from modalrec.encoders.registry import build_encoder, default_encoder_name
from modalrec.encoders.store import EncodeReport, FeatureSet, ModalityReport, VectorCache

__all__ = [
    "BaseEncoder",
    "ContentError",
    "EncodeReport",
    "Encoder",
    "FeatureSet",
    "ModalityReport",
    "ModalitySpec",
    "VectorCache",
    "build_encoder",
    "default_encoder_name",
    "encode_dataset",
    "encode_modality",
    "resolve_modalities",
]

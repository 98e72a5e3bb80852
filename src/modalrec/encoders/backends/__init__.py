"""Where the unique contents not cached yet get encoded: in this process or on Ray.

Both backends take an encoder, the references to encode and their content keys, and yield
:class:`~modalrec.encoders.backends.batch.BatchResult` objects (vectors, success flags and failure
reasons per key) as batches finish; :func:`~modalrec.encoders.encode.encode_modality` stores them
in the cache. What a batch is and how one is encoded lives in :mod:`.batch`, shared by both.

* ``"local"`` (:mod:`.local`): decoding in a thread pool, running ahead of the model.
* ``"ray"`` (:mod:`.ray_data`): a Ray Data actor pool, each actor with its own encoder rebuilt
  from ``encoder.to_spec()``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from modalrec.core.errors import ConfigError
from modalrec.encoders.backends.batch import BatchResult, encode_loaded, safe_load
from modalrec.encoders.backends.local import encode_local
from modalrec.encoders.backends.ray_data import encode_ray

BACKENDS = ("local", "ray")

__all__ = [
    "BACKENDS",
    "BatchResult",
    "encode_batches",
    "encode_loaded",
    "encode_local",
    "encode_ray",
    "safe_load",
]


def encode_batches(
    backend: str,
    encoder: Any,
    refs: list[Any],
    keys: list[str],
    *,
    workers: int,
    ray_actors: int,
    chunk: int,
    ray_num_cpus: int | None,
) -> Iterator[BatchResult]:
    """Results of encoding ``refs`` with ``backend``; ``chunk`` is the Ray backend's result batch size.

    >>> encode_batches("spark", None, [], [], workers=1, ray_actors=1, chunk=1, ray_num_cpus=None)
    Traceback (most recent call last):
    modalrec.core.errors.ConfigError: unknown backend 'spark'; expected 'local' or 'ray'
    """
    if backend == "local":
        return encode_local(encoder, refs, keys, workers)
    if backend == "ray":
        return encode_ray(encoder, refs, keys, ray_actors, chunk, ray_num_cpus)
    raise ConfigError(f"unknown backend {backend!r}; expected 'local' or 'ray'")

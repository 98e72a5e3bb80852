"""The local backend: items decoded in a thread pool while the model encodes the previous batch."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from modalrec.encoders.backends.batch import BatchResult, batch_size, encode_loaded, safe_load


def encode_local(encoder: Any, refs: list[Any], keys: list[str], workers: int) -> Iterator[BatchResult]:
    """Batches of results in order; loading runs ``2`` batches ahead in a pool of ``workers`` threads.

    ``workers <= 0`` loads in the calling thread.
    """
    if workers <= 0:
        yield from _encode_serial(encoder, refs, keys)
        return
    bs = batch_size(encoder)
    n = len(refs)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="modalrec-load") as ex:
        queue: deque[Any] = deque()
        nxt = 0
        ahead = 2 * bs + bs

        def fill() -> None:
            nonlocal nxt
            while nxt < n and len(queue) < ahead:
                queue.append(ex.submit(safe_load, encoder, refs[nxt]))
                nxt += 1

        fill()
        start = 0
        while queue:
            m = min(bs, len(queue))
            loaded = [queue.popleft().result() for _ in range(m)]
            fill()
            yield encode_loaded(encoder, keys[start : start + m], loaded)
            start += m


def _encode_serial(encoder: Any, refs: list[Any], keys: list[str]) -> Iterator[BatchResult]:
    bs = batch_size(encoder)
    for s in range(0, len(refs), bs):
        loaded = [safe_load(encoder, r) for r in refs[s : s + bs]]
        yield encode_loaded(encoder, keys[s : s + bs], loaded)

"""IdIndex answers exactly as a dict would, for ids longer or shorter than the stored ones too."""

from __future__ import annotations

import numpy as np
import pytest

from modalrec.serving.engine import IdIndex


@pytest.mark.parametrize("sorted_ids", [True, False])
def test_lookups_match_a_dict(sorted_ids: bool) -> None:
    rng = np.random.default_rng(0)
    ids = np.array([f"u{i:05d}" for i in range(5000)] + ["x", "ab", "abc"])
    if not sorted_ids:
        ids = ids[rng.permutation(len(ids))]
    ix, ref = IdIndex(ids), {k: i for i, k in enumerate(ids.tolist())}
    probes = [*ids[:50].tolist(), "u00000x", "unknown-user-123456789", "", "a", "u0000", "ab\x00", "zzzz"]
    for key in probes:
        assert ix.get(key) == ref.get(key), key
        assert (key in ix) == (key in ref)
    ix.hide("unknown-user-123456789")  # longer than every stored id: nothing to hide
    ix.hide("abc")
    assert ix.get("abc") is None and ix.get("ab") == ref["ab"] and len(ix) == len(ids) - 1
    ix.add("a-live-item-with-a-long-id", 7)
    assert ix["a-live-item-with-a-long-id"] == 7
    assert IdIndex(np.array([], dtype=str)).get("a") is None

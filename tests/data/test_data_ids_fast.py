"""The vectorised id paths of the loader give exactly what the plain Python definitions give."""

from __future__ import annotations

import re

import numpy as np
import polars as pl

from modalrec.data.build import _distinct, _encode, _prefix_number_keys, natural_order


def python_natural_order(ids: list[str]) -> list[int]:
    """The definition: digit runs compare as numbers, other runs as strings; ties keep input order."""
    split = re.compile(r"(\d+)")

    def key(v: str) -> tuple[tuple[int, int | str], ...]:
        return tuple((0, int(p)) if p.isdecimal() else (1, p) for p in split.split(v) if p)

    return sorted(range(len(ids)), key=lambda k: key(ids[k]))


def random_ids(rng: np.random.Generator, n: int) -> list[str]:
    prefixes = ["u", "item", "", "-", "é", "x_", "U", "a b", "²"]
    out = []
    for _ in range(n):
        p = prefixes[rng.integers(len(prefixes))]
        digits = str(rng.integers(0, 10 ** rng.integers(1, 8)))
        if rng.random() < 0.3:
            digits = digits.zfill(int(rng.integers(1, 9)))  # leading zeros: "u007" ties with "u7"
        out.append(p + digits)
    return out


def test_prefix_number_ids_sort_like_the_python_definition() -> None:
    rng = np.random.default_rng(0)
    for n in (1, 2, 50, 2000):
        ids = random_ids(rng, n)
        assert _prefix_number_keys(pl.Series(ids)) is not None  # the vectorised path is the one checked
        assert natural_order(ids).tolist() == python_natural_order(ids), ids[:10]


def test_other_ids_still_take_the_python_path() -> None:
    ids = ["b", "a10b", "a9", "٣", "x²", "a", "9", "10", "a01", "a1"]  # no digits, inner digits, unicode
    assert _prefix_number_keys(pl.Series(ids)) is None
    assert natural_order(ids).tolist() == python_natural_order(ids)


def test_encode_gives_natural_universe_and_codes() -> None:
    rng = np.random.default_rng(1)
    values = [f"i{int(x):07d}" for x in rng.zipf(1.3, 5000) % 300]  # skewed, zero-padded
    universe, codes = _encode(pl.Series(values))
    expected = sorted(set(values), key=lambda v: int(v[1:]))
    assert universe.tolist() == expected
    assert [universe[c] for c in codes] == values
    distinct, rank = _distinct(pl.Series(values))
    assert distinct.to_list() == sorted(set(values)) and [distinct[int(r)] for r in rank] == values

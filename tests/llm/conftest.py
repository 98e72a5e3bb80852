"""LLM test fixtures: the real packaged model (loaded once per session) and a tiny movie catalogue."""

from __future__ import annotations

import os

import numpy as np
import polars as pl
import pytest

from modalrec.data.dataset import Dataset, interaction_matrix

MOVIES = [
    ("Toy Story (1995)", "Animation|Children's|Comedy"),
    ("GoldenEye (1995)", "Action|Adventure|Thriller"),
    ("Babe (1995)", "Children's|Comedy|Drama"),
    ("Heat (1995)", "Action|Crime|Thriller"),
    ("Aladdin (1992)", "Animation|Children's|Comedy|Musical"),
    ("Die Hard (1988)", "Action|Thriller"),
    ("Lion King, The (1994)", "Animation|Children's|Musical"),
    ("Terminator, The (1984)", "Action|Sci-Fi|Thriller"),
    ("Beauty and the Beast (1991)", "Animation|Children's|Musical"),
    ("Speed (1994)", "Action|Romance|Thriller"),
    ("Pinocchio (1940)", "Animation|Children's"),
    ("True Lies (1994)", "Action|Adventure|Comedy|Romance"),
]


def make_movies(n_users: int = 24, seed: int = 0) -> Dataset:
    """Two tastes (family animation vs action), 12 real movie titles, 6 interactions per user.

    Even users like the family films (even indices), odd users the action films; per user 4 train,
    1 valid, 1 test interaction.
    """
    rng = np.random.default_rng(seed)
    fam = np.array([0, 2, 4, 6, 8, 10])
    act = np.array([1, 3, 5, 7, 9, 11])
    rows, cols, lab = [], [], []
    for u in range(n_users):
        items = rng.permutation(fam if u % 2 == 0 else act)
        rows += [u] * 6
        cols += items.tolist()
        lab += [0, 0, 0, 0, 1, 2]
    r, c, la = np.array(rows), np.array(cols), np.array(lab)
    mats = [interaction_matrix(r[la == k], c[la == k], n_users, len(MOVIES)) for k in range(3)]
    items = pl.DataFrame(
        {
            "item_id": [str(i + 1) for i in range(len(MOVIES))],
            "title": [t for t, _ in MOVIES],
            "genres": [g for _, g in MOVIES],
        }
    )
    return Dataset(
        name="movies",
        user_ids=np.array([f"u{i}" for i in range(n_users)]),
        item_ids=np.array([str(i + 1) for i in range(len(MOVIES))]),
        train=mats[0],
        valid=mats[1],
        test=mats[2],
        items=items,
        text_fields=["title", "genres"],
        split_name="fixed",
    )


@pytest.fixture(scope="session")
def movies() -> Dataset:
    return make_movies()


@pytest.fixture(scope="session")
def small_movies() -> Dataset:
    """6 users only: for tests that score every user with the real LLM."""
    return make_movies(n_users=6)


@pytest.fixture(scope="session")
def llm():
    """The real packaged SmolLM2-135M-Instruct, loaded once per test session.

    Without the ``[llm]`` extra the LLM tests skip on a developer machine but fail in CI (``CI`` set),
    so that a missing install step cannot pass unnoticed.
    """
    from modalrec.llm.loading import LLMUnavailableError, load_llm

    try:
        return load_llm(threads=1)  # one thread: faster than two on the shared, busy CI box
    except LLMUnavailableError as e:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def llm32(llm):
    """The packaged model in float32 (for exact equivalence checks; ``llm`` may be bfloat16)."""
    from modalrec.llm.loading import load_llm

    return load_llm(dtype="float32")

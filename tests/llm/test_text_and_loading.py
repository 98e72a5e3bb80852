"""Item text helpers and model loading errors (fast, no model needed)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from modalrec.core.errors import ConfigError, ModalrecError
from modalrec.data.dataset import Dataset, interaction_matrix
from modalrec.llm import loading
from modalrec.llm.text import ItemText, natural_title, split_genres


def test_natural_title_and_genres() -> None:
    assert natural_title("Lion King, The (1994)") == "The Lion King (1994)"
    assert natural_title("Amour, L' (2012)") == "L'Amour (2012)"
    assert natural_title("Seven (Se7en) (1995)") == "Seven (Se7en) (1995)"
    assert split_genres("Action|unknown|Drama") == ["Action", "Drama"]
    assert split_genres(None) == []


def test_item_text_from_table(movies) -> None:
    t = ItemText(movies)
    assert t.titles[6] == "The Lion King (1994)"
    assert t.short(0) == "Toy Story (1995), Animation, Children's, Comedy"
    assert t.short(0, genres=False) == "Toy Story (1995)"
    assert t.target(1) == "Genres: Action, Adventure, Thriller. Title: GoldenEye (1995)"


def test_item_text_without_catalogue() -> None:
    m = interaction_matrix(np.array([0]), np.array([1]), 1, 2)
    ds = Dataset("x", np.array(["u"]), np.array(["a", "b"]), m, m, m)
    t = ItemText(ds)
    assert t.titles == ["item a", "item b"] and t.has_text == [False, False]
    assert t.target(0) == "Genres: unknown. Title: item a"


def test_missing_extra_gives_install_hint(monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "transformers" else real(name, *a),
    )
    with pytest.raises(ModalrecError, match=r"transformers.*pip install"):
        loading.load_llm()


def test_bad_sources(tmp_path) -> None:
    if importlib.util.find_spec("transformers") is None:
        pytest.skip("llm extra not installed")
    with pytest.raises(ConfigError, match="not found"):
        loading.load_llm(tmp_path / "nope")
    (tmp_path / "a.gguf").write_bytes(b"")
    (tmp_path / "b.gguf").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"exactly one \.gguf"):
        loading.load_llm(tmp_path)


def test_dtype_auto_is_float32_unless_bfloat16_is_asked_for(monkeypatch) -> None:
    monkeypatch.delenv("MODALREC_LLM_DTYPE", raising=False)
    assert loading.resolve_dtype("auto") == "float32"
    monkeypatch.setenv("MODALREC_LLM_DTYPE", "bfloat16")
    assert loading.resolve_dtype("auto") == "bfloat16"
    assert loading.resolve_dtype("float32") == "float32"
    monkeypatch.setenv("MODALREC_LLM_DTYPE", "half")
    with pytest.raises(ConfigError, match="half"):
        loading.resolve_dtype("auto")


def test_long_item_texts_are_cut_at_a_word_boundary(movies) -> None:
    """Prompt lines and candidates are bounded (the re-ranker's cost grows with the tokens scored)."""
    from modalrec.llm.backend import HTTPBackend
    from modalrec.llm.rerank import LLMReranker

    backend = HTTPBackend("http://127.0.0.1:9/v1")  # never called: texts only
    full = LLMReranker(movies, backend)
    cut = LLMReranker(movies, backend, max_item_chars=20)
    assert full.item_text(0) == "Toy Story (1995), Animation, Children's, Comedy"
    assert cut.item_text(0) == "Toy Story (1995),"
    assert cut.candidate_text(0) == " Toy Story (1995),\n"
    assert LLMReranker(movies, backend, max_item_chars=0).item_text(0) == full.item_text(0)

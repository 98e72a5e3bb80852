"""LLM item features (issue 19 item 3): the packaged SmolLM2's hidden states as a text encoder."""

from __future__ import annotations

import os

import numpy as np
import polars as pl
import pytest

from modalrec.core.errors import ConfigError
from modalrec.encoders import build_encoder, encode_dataset

TEXTS = [
    "Toy Story (1995) | Animation|Children's|Comedy | A cowboy doll is threatened by a new spaceman figure.",
    "Heat (1995)",
    "GoldenEye (1995) | Action|Adventure|Thriller",
]


@pytest.fixture(scope="module")
def llm32():
    """The packaged model in float32; skips without the [llm] extra, except in CI (it must be there)."""
    from modalrec.encoders.causal_lm import LLMUnavailableError, load_llm

    try:
        return load_llm(dtype="float32")
    except LLMUnavailableError as e:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(e))


def _reference(llm, text: str, layer: int) -> np.ndarray:
    """Mean over tokens of the full model's hidden state after ``layer`` layers, L2-normalised."""
    import torch

    ids = llm.tokenizer([text], return_tensors="pt")
    with torch.inference_mode():
        hs = llm.model(**ids, output_hidden_states=True).hidden_states
    v = hs[layer][0].mean(0)
    return (v / v.norm()).numpy()


def test_cut_model_equals_the_full_models_hidden_states(llm32) -> None:
    """A middle layer runs only the first layers, yet gives the full model's hidden state there."""
    mid = build_encoder({"encoder": "llm", "layer": 4, "batch_size": 2})
    last = build_encoder("llm-hidden")
    assert (mid.name, mid.dim, last.dim) == ("llm-hidden", llm32.hidden_size, llm32.hidden_size)
    v, w = mid.encode(TEXTS), last.encode(TEXTS[:2])
    for i, t in enumerate(TEXTS):  # padding and length sorting inside a batch change nothing
        assert np.abs(v[i] - _reference(llm32, t, 4)).max() < 1e-4
    assert np.abs(w[1] - _reference(llm32, TEXTS[1], -1)).max() < 1e-4
    assert mid.version != last.version  # different layers never share cached vectors
    with pytest.raises(ConfigError, match="layer must be"):
        build_encoder({"encoder": "llm", "layer": 0})


def test_encode_dataset_caches_llm_features(llm32, tmp_path) -> None:
    items = pl.DataFrame({"item_id": ["a", "b", "c"], "title": [*TEXTS[1:], ""]})
    spec = {"text_llm": {"encoder": "llm", "layer": 2, "fields": ["title"]}}
    fs = encode_dataset(items, spec, tmp_path, progress=False)
    assert fs.features["text_llm"].shape == (3, llm32.hidden_size)
    assert fs.masks["text_llm"].tolist() == [True, True, False]  # the empty text is marked missing
    again = encode_dataset(items, spec, tmp_path, progress=False)
    assert again.report.modalities["text_llm"].cached == 3
    np.testing.assert_array_equal(again.features["text_llm"], fs.features["text_llm"])


def test_hidden_size_from_metadata_without_loading(tmp_path) -> None:
    """The encoder's size comes from the GGUF header or config.json; a bad file is a clear error."""
    import json

    from modalrec.encoders.causal_lm import hidden_size_of

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps({"hidden_size": 64}))
    assert hidden_size_of(tmp_path / "m") == 64
    (tmp_path / "bad.gguf").write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="not a GGUF file"):
        hidden_size_of(tmp_path / "bad.gguf")

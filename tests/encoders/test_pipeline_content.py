"""encode_dataset end to end per modality: MiniLM text, images, videos and .npy files with bad items.

Each catalogue mixes good items with every kind of bad content of its modality; the run must go on,
mark exactly the bad items missing with the right reason, and give the good items the same vectors
as encoding them on their own (one bad file never spoils its batch).
"""

from __future__ import annotations

import io

import numpy as np
import polars as pl
import pytest
from _media_fixtures import make_zip, png_bytes, video_bytes, write

from modalrec.data.media import zip_uri
from modalrec.encoders import encode_dataset
from modalrec.encoders.image import EfficientNetImageEncoder
from modalrec.encoders.video import VideoFrameEncoder


@pytest.mark.slow
def test_minilm_text_matches_the_bare_model_and_skips_empty_texts(tmp_path):
    from modalrec.encoders.text import load_minilm

    items = pl.DataFrame(
        {
            "item_id": list("abcdef"),
            "title": ["red wool armchair", "crimson woollen chair", "", None, "steel desk lamp", "  "],
            "genre": ["furniture", "furniture", "", None, "lighting", None],
        }
    )
    fs = encode_dataset(items, {"text": {"encoder": "minilm", "fields": ["title", "genre"]}}, tmp_path)
    rep = fs.report.modalities["text"]
    assert fs.masks["text"].tolist() == [True, True, False, False, True, False]
    assert rep.missing_by_reason == {"empty text": 3} and rep.dim == 384
    x = fs.features["text"]
    assert x.dtype == np.float32 and (x[~fs.masks["text"]] == 0).all()
    np.testing.assert_allclose(np.linalg.norm(x[fs.masks["text"]], axis=1), 1.0, atol=1e-5)
    bare = load_minilm().encode(
        ["red wool armchair | furniture", "crimson woollen chair | furniture", "steel desk lamp | lighting"],
        normalize_embeddings=True,
    )
    np.testing.assert_allclose(x[[0, 1, 4]], bare, atol=1e-5)
    assert x[0] @ x[1] > x[0] @ x[4] + 0.2  # paraphrases are closer than a different product


def _image_catalogue(tmp_path):
    good = [
        png_bytes((200, 30, 30)),
        png_bytes((30, 30, 200), fmt="JPEG"),
        png_bytes((30, 200, 30), fmt="WEBP"),
    ]
    z = make_zip(tmp_path / "pics.zip", {"p/ok.png": good[0], "p/empty.png": b""})
    refs = {
        "ok0": zip_uri(z, "p/ok.png"),
        "ok1": write(tmp_path / "ok1.jpg", good[1]),
        "ok2": write(tmp_path / "ok2.webp", good[2]),
        "missing": str(tmp_path / "nope.jpg"),
        "missing-member": zip_uri(z, "p/nope.png"),
        "empty": write(tmp_path / "empty.jpg", b""),
        "empty-member": zip_uri(z, "p/empty.png"),
        "corrupt": write(tmp_path / "corrupt.jpg", b"\xff\xd8\xff\xe0" + b"garbage" * 40 + b"\xff\xd9"),
        "truncated": write(tmp_path / "truncated.jpg", png_bytes(fmt="JPEG", size=(120, 90))[:400]),
        "null": None,
    }
    return pl.DataFrame({"item_id": list(refs), "image": list(refs.values())})


@pytest.mark.slow
def test_images_bad_files_never_stop_the_run(tmp_path):
    items = _image_catalogue(tmp_path)
    enc = EfficientNetImageEncoder(image_size=32, batch_size=4)
    fs = encode_dataset(
        items, {"image": {"encoder": enc, "column": "image"}}, tmp_path / "out", progress=False
    )
    rep = fs.report.modalities["image"]
    assert fs.masks["image"].tolist() == [True] * 3 + [False] * 7
    assert rep.missing_by_reason == {
        "missing file": 2,
        "zero-length file": 2,
        "corrupt file": 1,
        "truncated file": 1,
        "no content": 1,
    }
    assert {p["item_id"]: p["reason"] for p in rep.problems}["truncated"] == "truncated file"
    alone = enc.encode([items["image"][1]])
    np.testing.assert_allclose(fs.features["image"][1], alone[0], rtol=1e-4, atol=1e-5)
    assert "| image | corrupt | corrupt file |" in (tmp_path / "out" / "encode_report.md").read_text()


@pytest.mark.slow
def test_videos_bad_files_never_stop_the_run(tmp_path):
    v = video_bytes(seconds=1.0, fps=4)
    refs = {
        "ok": write(tmp_path / "ok.mp4", v),
        "silent": write(tmp_path / "silent.mp4", video_bytes(seconds=1.0, fps=4, with_audio=False)),
        "missing": str(tmp_path / "nope.mp4"),
        "empty": write(tmp_path / "empty.mp4", b""),
        "corrupt": write(tmp_path / "corrupt.mp4", b"hello world" * 30),
        "truncated": write(tmp_path / "truncated.mp4", v[: len(v) // 2]),
    }
    items = pl.DataFrame({"item_id": list(refs), "clip": list(refs.values())})
    spec = {
        "video": {"encoder": VideoFrameEncoder(fps=2.0, image_size=32), "column": "clip"},
        "video_audio": {"encoder": "video-audio", "column": "clip"},
    }
    fs = encode_dataset(items, spec, None, progress=False)
    assert fs.masks["video"].tolist() == [True, True, False, False, False, False]
    assert fs.masks["video_audio"].tolist() == [True, False, False, False, False, False]
    bad = {"missing file": 1, "zero-length file": 1, "corrupt file": 1, "truncated file": 1}
    assert fs.report.modalities["video"].missing_by_reason == bad
    assert fs.report.modalities["video_audio"].missing_by_reason == {**bad, "no audio track": 1}


def test_npy_files_with_nan_rows_and_any_float_dtype(tmp_path):
    def npy(arr):
        buf = io.BytesIO()
        np.save(buf, arr)
        return buf.getvalue()

    rows = {
        "f16": npy(np.array([1, 2, 3], dtype=np.float16)),
        "f64": npy(np.array([[4, 5, 6]], dtype=np.float64)),
        "int": npy(np.array([7, 8, 9], dtype=np.int32)),
        "nan": npy(np.array([1, np.nan, 3], dtype=np.float32)),
        "inf": npy(np.array([1, 2, np.inf], dtype=np.float64)),
        "short": npy(np.array([1, 2], dtype=np.float32)),
        "cut": npy(np.arange(300, dtype=np.float32))[:90],
        "empty": b"",
    }
    refs = [write(tmp_path / f"{k}.npy", b) for k, b in rows.items()]
    items = pl.DataFrame({"item_id": list(rows), "feat": refs})
    fs = encode_dataset(items, {"feat": {"encoder": "npy", "column": "feat"}}, None, progress=False)
    assert fs.masks["feat"].tolist() == [True, True, True, False, False, False, False, False]
    np.testing.assert_array_equal(fs.features["feat"][:3], [[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    assert fs.features["feat"].dtype == np.float32 and np.isfinite(fs.features["feat"]).all()
    reasons = fs.report.modalities["feat"].missing_by_reason
    assert reasons.pop("non-finite features") == 2 and reasons.pop("wrong feature shape") == 1
    assert reasons.pop("zero-length file") == 1 and sum(reasons.values()) == 1  # the cut file

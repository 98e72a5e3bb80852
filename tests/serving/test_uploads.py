"""Uploads of POST /items: size, magic bytes, decompression bombs, truncated or corrupt files, decode
timeouts and media paths; every refusal is a 422 (403 for a path outside the media root) with the
reason, and nothing is stored."""

from __future__ import annotations

import io
import sqlite3
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from live_helpers import fit_run
from serving_helpers import KEYS, LiveServer, png_bytes, serve_config

from modalrec.serving.app import create_app
from modalrec.serving.uploads import UploadError, UploadLimits, check_upload, read_under_root

W = {"Authorization": f"Bearer {KEYS['writer']}"}
LIMITS = UploadLimits(max_bytes=200_000, max_pixels=1_000_000, timeout_s=30.0)


def bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width`` x ``height`` pixels (its data is one short row)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def wav_bytes(seconds: float = 0.5, sr: int = 16000) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    t = np.arange(int(seconds * sr)) / sr
    sf.write(buf, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sr, format="WAV")
    return buf.getvalue()


def big_png(side: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


GOOD_PNG = png_bytes((200, 40, 40), size=16)
BAD = {
    "truncated PNG": ("image", GOOD_PNG[: len(GOOD_PNG) // 2], ("truncated_image", "corrupt_image")),
    "wrong magic (text as an image)": ("image", b"hello, this is not a picture" * 4, ("wrong_type",)),
    "wrong magic (a PNG as audio)": ("audio", GOOD_PNG, ("wrong_type",)),
    "wrong magic (audio as an image)": ("image", wav_bytes(), ("wrong_type",)),
    "decompression bomb": ("image", bomb_png(5_000, 5_000), ("too_many_pixels",)),
    "too large": ("image", GOOD_PNG + b"\x00" * 200_000, ("file_too_large",)),
    "empty": ("image", b"", ("empty_file",)),
    "audio garbage (WAV header)": (
        "audio",
        b"RIFF\x24\x08\x00\x00WAVE" + bytes(range(256)) * 4,
        ("bad_audio",),
    ),
    "audio garbage (Ogg magic)": ("audio", b"OggS" + bytes(range(256)) * 8, ("bad_audio",)),
    "truncated WAV": ("audio", wav_bytes()[:4000], ("bad_audio",)),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_each_kind_of_bad_upload_is_refused_with_its_reason(case: str) -> None:
    kind, data, codes = BAD[case]
    with pytest.raises(UploadError) as e:
        check_upload(kind, data, LIMITS)
    assert e.value.status == 422 and e.value.code in codes, (e.value.code, e.value.message)
    assert e.value.message.startswith(kind)


def test_good_uploads_pass_with_what_decoding_found() -> None:
    img = check_upload("image", GOOD_PNG, LIMITS)
    assert (img.format, img.extension, img.info) == ("png", ".png", {"width": 16, "height": 16})
    snd = check_upload("audio", wav_bytes(0.5), LIMITS)
    assert snd.format == "wav" and snd.info["seconds"] == pytest.approx(0.5, abs=0.01)


def test_the_pixel_limit_is_checked_before_the_pixels_are_decoded() -> None:
    # 5000 x 5000 declared in a file of a few hundred bytes: refused from its header alone
    data = bomb_png(5_000, 5_000)
    assert len(data) < 500
    with pytest.raises(UploadError, match="5000 x 5000 = 25,000,000 pixels is over the limit of 1,000,000"):
        check_upload("image", data, LIMITS)
    # past PIL's own bomb limit its open() refuses first: the same code and limit in the message
    with pytest.raises(UploadError, match="over the limit of 1,000,000 pixels") as e:
        check_upload("image", bomb_png(400_000, 400_000), LIMITS)
    assert e.value.code == "too_many_pixels"


def test_a_decode_longer_than_the_timeout_is_refused() -> None:
    data = big_png(1500)
    with pytest.raises(UploadError) as e:
        check_upload("image", data, UploadLimits(max_bytes=len(data), max_pixels=10**8, timeout_s=1e-6))
    assert e.value.code == "decode_timeout" and e.value.status == 422


def test_paths_must_stay_under_the_media_root(tmp_path: Path) -> None:
    root = tmp_path / "media"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "ok.png").write_bytes(GOOD_PNG)
    (tmp_path / "secret.png").write_bytes(GOOD_PNG)
    (root / "link.png").symlink_to(tmp_path / "secret.png")
    assert read_under_root(root, "sub/ok.png", "image", LIMITS) == GOOD_PNG
    for bad in ("../secret.png", "sub/../../secret.png", str(tmp_path / "secret.png"), "link.png", "~/x.png"):
        with pytest.raises(UploadError) as e:
            read_under_root(root, bad, "image", LIMITS)
        assert e.value.status == 403 and e.value.code == "path_outside_media_root", bad
        assert str(tmp_path) not in e.value.message and str(root) not in e.value.message
    with pytest.raises(UploadError) as e:
        read_under_root(root, "sub/missing.png", "image", LIMITS)
    assert e.value.status == 422 and e.value.code == "media_not_found" and str(root) not in e.value.message
    with pytest.raises(UploadError) as e:
        read_under_root(None, "sub/ok.png", "image", LIMITS)
    assert e.value.status == 403 and e.value.code == "media_root_not_configured"


# ------------------------------------------------------------------------------------------ over HTTP
@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fit_run(tmp_path_factory.mktemp("uploads"), "coldstart")


def _server(run: Path, tmp: Path) -> LiveServer:
    media = tmp / "media"
    media.mkdir(exist_ok=True)
    (media / "poster.png").write_bytes(GOOD_PNG)
    (tmp / "outside.png").write_bytes(GOOD_PNG)
    cfg = serve_config(
        tmp,
        text_encoder="none",
        items={"media_root": str(media), "max_upload_bytes": 200_000, "max_pixels": 1_000_000},
    )
    return LiveServer(create_app(run, cfg))


def _nothing_stored(tmp: Path) -> None:
    with sqlite3.connect(tmp / "state" / "live_items.sqlite") as con:
        assert con.execute("SELECT count(*) FROM live_items").fetchone()[0] == 0
    media = tmp / "state" / "item-media"
    assert not media.exists() or not any(media.iterdir())


def _form(item_id: str = "n1") -> dict[str, str]:
    return {"item_id": item_id, "title": "red velvet sofa chair"}


def test_an_uploaded_image_is_stored_and_served_and_a_path_under_the_media_root_works(
    run: Path, tmp_path: Path
) -> None:
    with _server(run, tmp_path) as srv:
        c = srv.client
        r = c.post("/items", data=_form(), files={"image": ("p.png", GOOD_PNG, "image/png")}, headers=W)
        assert r.status_code == 201, r.text
        assert r.json()["media"]["image"]["format"] == "png" and "file" not in r.json()["media"]["image"]
        assert c.get("/items/n1").json()["media"]["image"] is True
        assert c.get("/items/n1/image").content == GOOD_PNG
        r = c.post(
            "/items",
            json={"item_id": "n2", "fields": {"title": "blue lamp"}, "image_path": "poster.png"},
            headers=W,
        )
        assert r.status_code == 201 and c.get("/items/n2/image").content == GOOD_PNG
        snd = c.post(
            "/items", data=_form("n3"), files={"audio": ("a.wav", wav_bytes(), "audio/wav")}, headers=W
        )
        assert snd.status_code == 201 and snd.json()["media"]["audio"]["format"] == "wav"


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_upload_gets_a_422_with_the_reason_and_nothing_is_stored(
    run: Path, tmp_path: Path, case: str
) -> None:
    kind, data, codes = BAD[case]
    with _server(run, tmp_path) as srv:
        r = srv.client.post(
            "/items", data=_form(), files={kind: ("f.bin", data, "application/octet-stream")}, headers=W
        )
        assert r.status_code == 422, r.text
        assert r.json()["error"]["code"] in codes and r.json()["error"]["message"].startswith(kind)
        assert srv.client.get("/items/n1").status_code == 404
    _nothing_stored(tmp_path)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"image_path": "../outside.png"}, 403, "path_outside_media_root"),
        ({"image_path": "/etc/hostname"}, 403, "path_outside_media_root"),
        ({"image_path": "missing.png"}, 422, "media_not_found"),
        ({"audio_path": "poster.png"}, 422, "wrong_type"),
    ],
)
def test_media_paths_outside_the_root_or_wrong_are_refused_without_showing_paths(
    run: Path, tmp_path: Path, body: dict[str, Any], status: int, code: str
) -> None:
    with _server(run, tmp_path) as srv:
        r = srv.client.post(
            "/items", json={"item_id": "n1", "fields": {"title": "red sofa"}, **body}, headers=W
        )
        assert r.status_code == status and r.json()["error"]["code"] == code, r.text
        assert str(tmp_path) not in r.text
    _nothing_stored(tmp_path)


def test_form_mistakes_and_oversized_bodies_are_refused(run: Path, tmp_path: Path) -> None:
    with _server(run, tmp_path) as srv:
        c = srv.client
        two = c.post(
            "/items",
            data={**_form(), "image_path": "poster.png"},
            files={"image": ("p.png", GOOD_PNG)},
            headers=W,
        )
        assert two.status_code == 422 and "not both" in two.text
        odd = c.post("/items", data=_form(), files={"poster": ("p.png", GOOD_PNG)}, headers=W)
        assert odd.status_code == 422 and "'image' or 'audio'" in odd.text
        text = c.post("/items", content=b"item_id=n1", headers={**W, "content-type": "text/plain"})
        assert text.status_code == 422
        huge = c.post(
            "/items", data=_form(), files={"image": ("p.png", b"\x89PNG" + bytes(2_000_000))}, headers=W
        )
        assert huge.status_code == 413 and huge.json()["error"]["code"] == "body_too_large"
    _nothing_stored(tmp_path)

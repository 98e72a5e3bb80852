"""zip:// media references: build, parse, check existence, read bytes; used for ML-100K posters."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from modalrec.core.errors import DataError
from modalrec.data import load, media_exists, read_media_bytes, zip_uri
from modalrec.data.media import is_remote, parse_zip_uri


def make_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("posters/1.jpg", b"\xff\xd8one")
        zf.writestr("posters/2.jpg", b"\xff\xd8two")
    return path


def test_zip_uri_roundtrip(tmp_path: Path) -> None:
    z = make_zip(tmp_path / "p#x.zip")  # a '#' in the archive name is fine: the member is after the last '#'
    uri = zip_uri(z, "posters/1.jpg")
    assert uri == f"zip://{z}#posters/1.jpg"
    assert parse_zip_uri(uri) == (str(z), "posters/1.jpg")
    assert media_exists(uri) and read_media_bytes(uri) == b"\xff\xd8one"
    assert not media_exists(zip_uri(z, "posters/3.jpg"))
    with pytest.raises(DataError, match="not found in zip"):
        read_media_bytes(zip_uri(z, "posters/3.jpg"))


def test_plain_paths_and_urls(tmp_path: Path) -> None:
    f = tmp_path / "a.wav"
    f.write_bytes(b"RIFF")
    assert media_exists(str(f)) and read_media_bytes(f"file://{f}") == b"RIFF"
    assert not media_exists(str(tmp_path / "missing.wav")) and not media_exists(None)
    url = "http://example.com/a.jpg"
    assert is_remote(url) and not media_exists(url)
    with pytest.raises(DataError, match="offline"):
        read_media_bytes(url)
    with pytest.raises(DataError, match="cannot read"):
        read_media_bytes(str(tmp_path / "missing.wav"))


def test_catalogue_with_zip_members(tmp_path: Path) -> None:
    z = make_zip(tmp_path / "posters.zip")
    (tmp_path / "items.csv").write_text(
        f"item_id,title,image\n1,A,{zip_uri(z, 'posters/1.jpg')}\n2,B,{zip_uri(z, 'posters/9.jpg')}\n"
    )
    (tmp_path / "r.csv").write_text("user,item\nu,1\nu,2\n")
    ds = load(tmp_path / "r.csv", items=tmp_path / "items.csv")
    issue = ds.report.issues[("image file not found", str(tmp_path / "items.csv"))]
    assert issue.count == 1 and "posters/9.jpg" in issue.examples[0]
    assert ds.items is not None and read_media_bytes(ds.items["image"][0]) == b"\xff\xd8one"


def test_zip_reads_in_forked_workers(tmp_path: Path) -> None:
    """Workers forked after the parent opened the archive read their own handle (no shared offset)."""
    import multiprocessing as mp

    z = make_zip(tmp_path / "posters.zip")
    refs = [zip_uri(z, f"posters/{k}.jpg") for k in (1, 2)] * 20
    assert read_media_bytes(refs[0]) == b"\xff\xd8one"  # parent opens and caches the archive
    with mp.get_context("fork").Pool(2) as pool:
        got = pool.map(read_media_bytes, refs)
    assert got == [b"\xff\xd8one", b"\xff\xd8two"] * 20

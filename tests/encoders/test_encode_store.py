"""encode_dataset: caching by content, reports of bad content, NaN rows, resume after SIGKILL, Ray."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from _media_fixtures import tone, wav_bytes, write

from modalrec.core.errors import ConfigError
from modalrec.encoders import FeatureSet, VectorCache, encode_dataset
from modalrec.encoders.audio import LogMelAudioEncoder
from modalrec.encoders.precomputed import NpyMatrixEncoder
from modalrec.encoders.text import TfidfTextEncoder


def audio_items(tmp_path: Path, n: int) -> pl.DataFrame:
    refs = []
    for i in range(n):
        refs.append(write(tmp_path / "a" / f"{i}.wav", wav_bytes(tone(200 + 15 * i, 0.5))))
    return pl.DataFrame({"item_id": [f"i{i}" for i in range(n)], "audio": refs})


def text_items() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "item_id": ["a", "b", "c", "d", "e"],
            "title": ["oak chair", "steel lamp", None, "wool rug", "oak table"],
            "body": ["rustic and solid", "industrial", "   ", "soft", ""],
        }
    )


TFIDF = {"text": {"encoder": "tfidf", "fields": ["title", "body"], "dim": 3}}


def test_text_cache_and_changed_content(tmp_path):
    fs = encode_dataset(text_items(), TFIDF, tmp_path, progress=False)
    rep = fs.report.modalities["text"]
    assert fs.masks["text"].tolist() == [True, True, False, True, True]
    assert rep.missing_by_reason == {"empty text": 1} and rep.encoded == 5 and rep.cached == 0
    assert (fs.features["text"][2] == 0).all()
    # written artefacts
    for f in ["features/text.npy", "features/text.mask.npy", "features/manifest.json", "encode_report.md"]:
        assert (tmp_path / f).is_file(), f
    loaded = FeatureSet.load(tmp_path / "features")
    np.testing.assert_array_equal(loaded.features["text"], fs.features["text"])
    assert loaded.report.modalities["text"].missing == 1
    # the same corpus again: everything from the cache
    again = encode_dataset(text_items(), TFIDF, tmp_path, progress=False)
    assert again.report.modalities["text"].encoded == 0
    np.testing.assert_array_equal(again.features["text"], fs.features["text"])


def test_media_cache_encodes_only_changes_and_reports_reasons(tmp_path):
    items = audio_items(tmp_path, 6)
    refs = items["audio"].to_list()
    refs[1] = str(tmp_path / "missing.wav")
    refs[2] = write(tmp_path / "empty.wav", b"")
    refs[3] = write(tmp_path / "trunc.wav", wav_bytes(tone())[:3000])
    items = items.with_columns(pl.Series("audio", refs))
    out = tmp_path / "out"
    fs = encode_dataset(items, {"audio": "logmel"}, out, progress=False)
    rep = fs.report.modalities["audio"]
    assert fs.masks["audio"].tolist() == [True, False, False, False, True, True]
    assert rep.missing_by_reason == {"missing file": 1, "zero-length file": 1, "truncated file": 1}
    assert {p["item_id"] for p in rep.problems} == {"i1", "i2", "i3"}
    md = (out / "encode_report.md").read_text()
    assert "truncated file" in md and "i3" in md
    # fix one file, change another: only those two are encoded again
    write(tmp_path / "trunc.wav", wav_bytes(tone(500)))
    write(Path(refs[5]), wav_bytes(tone(900)))
    fs2 = encode_dataset(items, {"audio": "logmel"}, out, progress=False)
    rep2 = fs2.report.modalities["audio"]
    assert rep2.encoded == 2 and rep2.cached == 4
    assert fs2.masks["audio"].tolist() == [True, False, False, True, True, True]
    np.testing.assert_array_equal(fs2.features["audio"][[0, 4]], fs.features["audio"][[0, 4]])
    assert not np.allclose(fs2.features["audio"][5], fs.features["audio"][5])


def test_nan_rows_are_marked_missing(tmp_path):
    x = np.ones((4, 3), dtype=np.float64)
    x[1, 2] = np.nan
    x[3] = np.inf
    np.save(tmp_path / "f.npy", x)
    items = pl.DataFrame({"item_id": list("abcd")})
    fs = encode_dataset(items, {"visual": NpyMatrixEncoder(tmp_path / "f.npy")}, None, progress=False)
    assert fs.masks["visual"].tolist() == [True, False, True, False]
    assert fs.report.modalities["visual"].missing_by_reason == {"non-finite features": 2}
    assert fs.features["visual"].dtype == np.float32 and np.isfinite(fs.features["visual"]).all()


def test_dataset_input_fills_features_and_report(tmp_path):
    from modalrec.data.demo import make_demo

    ds = make_demo(tmp_path / "demo", n_items=40, n_users=10, seed=3, n_broken=2)
    fs = encode_dataset(
        ds,
        {"text": {"encoder": "tfidf", "dim": 8}, "audio": "logmel"},
        tmp_path / "out",
        progress=False,
    )
    assert ds.features["text"].shape == (40, 8)
    np.testing.assert_array_equal(ds.features["audio"], fs.features["audio"])
    # the demo's truth says which items have no audio and which audio files it broke on purpose
    truth = json.loads((tmp_path / "demo" / "demo_truth.json").read_text())["items"]
    bad = [bool({"audio"} & {*truth[i]["missing"], *truth[i]["broken"]}) for i in ds.item_ids]
    assert sum(bad) >= 3  # at least one null and the two broken files
    assert ds.feature_masks["audio"].tolist() == [not b for b in bad]
    counts = {k: v for k, v in ds.report.counts_by_kind().items() if k.startswith("audio missing")}
    assert sum(counts.values()) == sum(bad)
    assert counts == {
        f"audio missing: {r}": c for r, c in fs.report.modalities["audio"].missing_by_reason.items()
    }


def test_a_cache_written_by_an_earlier_run_is_used_as_is(tmp_path):
    """The cache's directory (encoder name + version), content keys (SHA-256 of the stripped text)
    and shard format are a promise to every existing cache: a shard written in that format, here
    by hand with vectors no encoder would give, is served without encoding anything."""
    items = pl.DataFrame({"item_id": ["a", "b", "c"], "name": ["Oak chair", "  steel lamp ", ""]})
    keys = [hashlib.sha256(t.encode()).hexdigest() for t in ("Oak chair", "steel lamp", "")]
    assert keys[2] == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    vecs = np.array([[1, 0, 0, 0], [0, 2, 0, 0], [0, 0, 0, 0]], dtype=np.float32)
    shard = tmp_path / "cache" / "char-ngrams-1-n3-d4" / "shard-00000000000000000001-1-0badcafe.npz"
    shard.parent.mkdir(parents=True)
    np.savez(
        shard,
        keys=np.asarray(keys),
        vectors=vecs,
        ok=np.array([True, True, False]),
        reasons=np.asarray(["", "", "empty text"]),
        details=np.asarray(["", "", ""]),
    )
    spec = {"name": {"encoder": "chargrams", "fields": ["name"], "dim": 4}}
    fs = encode_dataset(items, spec, tmp_path, progress=False)
    rep = fs.report.modalities["name"]
    assert (rep.encoded, rep.cached, rep.missing_by_reason) == (0, 3, {"empty text": 1})
    np.testing.assert_array_equal(fs.features["name"], vecs)
    assert fs.masks["name"].tolist() == [True, True, False]
    assert [p.name for p in shard.parent.iterdir()] == [shard.name]  # nothing new written


def test_vector_cache_ignores_temp_files_and_compacts(tmp_path):
    c = VectorCache(tmp_path, "enc-1", 2)
    for i in range(9):
        c.put([f"k{i}"], np.full((1, 2), i, np.float32), [True], [""])
    (c.root / ".shard-x.npz.123.tmp").write_bytes(b"half written")
    (c.root / "shard-0-garbage.npz").write_bytes(b"not a zip")
    c2 = VectorCache(tmp_path, "enc-1", 2)
    assert len(c2) == 9 and c2.get("k4").vector.tolist() == [4.0, 4.0]
    c2.compact()
    c3 = VectorCache(tmp_path, "enc-1", 2)
    assert len(c3) == 9 and c3.n_shards <= 2


RESUME_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import polars as pl
    from modalrec.encoders import encode_dataset
    from modalrec.encoders.audio import LogMelAudioEncoder

    class PacedLogMel(LogMelAudioEncoder):
        # same name and version as the real encoder (so it shares its cache); slowed down so that
        # the test can kill the process while it is encoding
        batch_size = 8

        def _forward(self, loaded):
            time.sleep(0.25)
            return super()._forward(loaded)

    items = pl.read_csv(sys.argv[1])
    encode_dataset(items, {"audio": PacedLogMel()}, sys.argv[2], progress=False, shard_items=8)
    """
)


def test_resume_after_sigkill(tmp_path):
    n = 96
    items = audio_items(tmp_path, n)
    items.write_csv(tmp_path / "items.csv")
    (tmp_path / "job.py").write_text(RESUME_SCRIPT)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, str(tmp_path / "job.py"), str(tmp_path / "items.csv"), str(out)], env=env
    )
    shard_dir = out / "cache" / LogMelAudioEncoder().cache_id
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            if shard_dir.is_dir() and len(list(shard_dir.glob("shard-*.npz"))) >= 3:
                break
            assert proc.poll() is None, "the encoding process ended before it could be killed"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    done_before = len(VectorCache(out / "cache", LogMelAudioEncoder().cache_id, LogMelAudioEncoder.dim))
    assert 0 < done_before < n
    resumed = encode_dataset(items, {"audio": "logmel"}, out, progress=False)
    rep = resumed.report.modalities["audio"]
    assert rep.cached == done_before and rep.encoded == n - done_before
    fresh = encode_dataset(items, {"audio": "logmel"}, tmp_path / "fresh", progress=False)
    np.testing.assert_array_equal(resumed.features["audio"], fresh.features["audio"])
    assert resumed.masks["audio"].all()


@pytest.mark.slow
def test_ray_backend_equals_local(tmp_path):
    ray = pytest.importorskip("ray")
    items = audio_items(tmp_path, 12).with_columns(
        pl.Series("title", ["oak chair", "steel lamp", "", "wool rug", "oak table", "glass vase"] * 2)
    )
    items = items.with_columns(
        pl.Series("audio", [*items["audio"].to_list()[:11], str(tmp_path / "gone.wav")])
    )
    spec = {"audio": "logmel", "text": {"encoder": "tfidf", "fields": ["title"], "dim": 4}}
    local = encode_dataset(items, spec, tmp_path / "local", progress=False)
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        remote = encode_dataset(items, spec, tmp_path / "ray", progress=False, backend="ray", ray_actors=2)
    finally:
        ray.shutdown()
    for m in ("audio", "text"):
        np.testing.assert_allclose(remote.features[m], local.features[m], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(remote.masks[m], local.masks[m])
        r, lo = remote.report.modalities[m], local.report.modalities[m]
        assert (r.encoded, r.cached, r.present) == (lo.encoded, lo.cached, lo.present)
        assert r.problems == lo.problems and r.missing_by_reason == lo.missing_by_reason
        # the Ray actors wrote the same cache entries (keys, flags, reasons) as the local threads
        cache_id = remote.encoders[m]["encoder"] + "-" + remote.encoders[m]["version"]
        assert cache_rows(tmp_path / "ray" / "cache", cache_id) == cache_rows(
            tmp_path / "local" / "cache", cache_id
        )
    assert local.masks["audio"].tolist() == [True] * 11 + [False]
    assert remote.report.modalities["audio"].missing_by_reason == {"missing file": 1}


def cache_rows(root: Path, cache_id: str) -> dict[str, tuple[bool, str]]:
    rows = {}
    for shard in (root / cache_id).glob("shard-*.npz"):
        with np.load(shard) as z:
            for k, ok, reason in zip(
                z["keys"].tolist(), z["ok"].tolist(), z["reasons"].tolist(), strict=True
            ):
                rows[k] = (ok, reason)
    assert rows, f"no cache rows under {root / cache_id}"
    return rows


class FlakyTfidf(TfidfTextEncoder):
    """The real TF-IDF encoder, failing on texts with "boom" (a decoder bug) or on every text (setup)."""

    broken_setup = False

    def _forward(self, loaded):
        if self.broken_setup:
            raise ConfigError("model package missing")
        if any("boom" in t for t in loaded):
            raise RuntimeError("kernel crashed")
        return super()._forward(loaded)


def test_encoder_failures_are_reported_not_cached_and_setup_errors_stop_the_run(tmp_path):
    items = pl.DataFrame({"item_id": list("abcd"), "t": ["oak chair", "boom lamp", "wool rug", "oak rug"]})
    enc = FlakyTfidf(dim=2)
    fs = encode_dataset(items, {"text": {"encoder": enc, "fields": ["t"]}}, tmp_path, progress=False)
    rep = fs.report.modalities["text"]
    assert fs.masks["text"].tolist() == [True, False, True, True]  # the other items of its batch survive
    assert rep.missing_by_reason == {"encoder error": 1} and "kernel crashed" in rep.problems[0]["detail"]
    again = encode_dataset(items, {"text": {"encoder": enc, "fields": ["t"]}}, tmp_path, progress=False)
    assert again.report.modalities["text"].encoded == 1  # retried, not served from the cache
    assert again.report.modalities["text"].cached == 3
    enc.broken_setup = True
    items2 = items.with_columns(pl.Series("t", ["new text", "boom", "x y", "oak rug"]))
    with pytest.raises(ConfigError, match="model package missing"):
        encode_dataset(items2, {"text": {"encoder": enc, "fields": ["t"]}}, tmp_path, progress=False)

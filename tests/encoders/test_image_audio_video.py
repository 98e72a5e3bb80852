"""Image, audio, video and precomputed encoders on tiny generated inputs, including broken files."""

from __future__ import annotations

import io

import numpy as np
import pytest
from _media_fixtures import make_zip, png_bytes, rgba_png_bytes, tone, video_bytes, wav_bytes, write

from modalrec.data.media import zip_uri
from modalrec.encoders import base
from modalrec.encoders.audio import LogMelAudioEncoder, Waveform, decode_audio, wav_declared_truncation
from modalrec.encoders.base import ContentError
from modalrec.encoders.image import EfficientNetImageEncoder, decode_image, preprocess
from modalrec.encoders.precomputed import NpyFileEncoder, NpyMatrixEncoder
from modalrec.encoders.video import VideoAudioEncoder, VideoFrameEncoder, decode_audio_track, sample_frames


def reason_of(fn, *args):
    with pytest.raises(ContentError) as e:
        fn(*args)
    return e.value.reason


# ------------------------------------------------------------------------------------ images
@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "BMP"])
def test_decode_every_format(fmt):
    img = decode_image(png_bytes(fmt=fmt))
    assert img.mode == "RGB" and img.size == (40, 60)
    r, g, b = img.getpixel((20, 30))
    assert r > 150 and g < 90 and b < 90  # the red disc survives every codec


def test_transparent_png_is_composited_on_white():
    img = decode_image(rgba_png_bytes())
    assert img.getpixel((0, 0)) == (255, 255, 255)
    assert img.getpixel((16, 16)) == (0, 0, 255)


def test_broken_images_get_reasons(tmp_path):
    good = png_bytes(fmt="JPEG")
    enc = EfficientNetImageEncoder(image_size=64)
    cases = {
        "missing file": str(tmp_path / "nope.jpg"),
        "zero-length file": write(tmp_path / "empty.jpg", b""),
        "corrupt file": write(tmp_path / "garbage.jpg", b"this is not an image" * 20),
        "truncated file": write(tmp_path / "trunc.png", png_bytes()[:200]),
        "no content": None,
    }
    for reason, ref in cases.items():
        assert reason_of(enc.load, ref) == reason, reason
    jpeg = png_bytes(fmt="JPEG", size=(200, 300))
    for frac in (0.3, 0.9):
        cut = write(tmp_path / f"trunc{frac}.jpg", jpeg[: int(len(jpeg) * frac)])
        assert reason_of(enc.load, cut) == base.TRUNCATED_FILE
    assert enc.load(write(tmp_path / "ok.jpg", good)).shape == (3, 64, 64)


def test_images_inside_a_zip(tmp_path):
    z = make_zip(tmp_path / "posters.zip", {"posters/1.jpg": png_bytes(fmt="JPEG"), "posters/2.jpg": b""})
    enc = EfficientNetImageEncoder(image_size=64)
    assert enc.load(zip_uri(z, "posters/1.jpg")).shape == (3, 64, 64)
    assert reason_of(enc.load, zip_uri(z, "posters/2.jpg")) == base.EMPTY_FILE
    assert reason_of(enc.load, zip_uri(z, "posters/3.jpg")) == base.MISSING_FILE
    assert enc.content_key(zip_uri(z, "posters/1.jpg")) == base.sha256_bytes(png_bytes(fmt="JPEG"))


def test_preprocess_modes_keep_the_picture():
    from PIL import Image

    img = Image.new("RGB", (92, 138), (255, 255, 255))
    img.paste((0, 0, 0), (0, 0, 92, 20))  # a black band at the top: cropped away, kept by "pad"
    crop = preprocess(img, 64, "crop")
    pad = preprocess(img, 64, "pad")
    assert crop.min() == pytest.approx(1.0)  # only white left after the centre crop
    assert pad.min() < -0.9
    assert preprocess(img, 64, "squash").shape == (3, 64, 64)


@pytest.mark.slow
def test_efficientnet_real_model(tmp_path):
    enc = EfficientNetImageEncoder(image_size=96)
    refs = [
        write(tmp_path / f"{i}.png", png_bytes(c))
        for i, c in enumerate([(220, 20, 20), (225, 25, 25), (20, 20, 220)])
    ]
    v = enc.encode(refs)
    assert v.shape == (3, 1280) and v.dtype == np.float32 and np.isfinite(v).all()
    assert (v >= 0).all() and (v <= 6).all() and v.max() > 0.5  # pooled ReLU6 activations
    cos = v @ v.T / np.outer(np.linalg.norm(v, axis=1), np.linalg.norm(v, axis=1))
    assert cos[0, 1] > cos[0, 2]  # two red discs are closer than red and blue
    np.testing.assert_allclose(enc.encode(refs[:1]), v[:1], rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------ audio
def test_decode_any_rate_and_channels():
    w = decode_audio(wav_bytes(tone(440, 1.0, sr=44_100, channels=2), sr=44_100))
    assert w.sr == 16_000 and w.samples.ndim == 1 and abs(len(w.samples) - 16_000) <= 2
    w8 = decode_audio(wav_bytes(tone(440, 0.5, sr=8_000), sr=8_000, fmt="FLAC"))
    assert abs(len(w8.samples) - 8_000) <= 2
    spec = np.abs(np.fft.rfft(w.samples))
    assert abs(np.argmax(spec) * 16_000 / len(w.samples) - 440) < 3  # resampling kept the pitch


def test_broken_audio_gets_reasons(tmp_path):
    good = wav_bytes(tone())
    enc = LogMelAudioEncoder()
    assert reason_of(enc.load, write(tmp_path / "e.wav", b"")) == base.EMPTY_FILE
    assert reason_of(enc.load, write(tmp_path / "t.wav", good[: len(good) // 2])) == base.TRUNCATED_FILE
    assert reason_of(enc.load, write(tmp_path / "g.wav", b"RIFFjunk" * 50)) == base.CORRUPT_FILE
    assert reason_of(enc.load, str(tmp_path / "missing.wav")) == base.MISSING_FILE
    header_only = wav_bytes(np.zeros(0, dtype=np.float32))
    assert reason_of(enc.load, write(tmp_path / "h.wav", header_only)) == "no audio samples"
    assert wav_declared_truncation(good) is None
    for fmt in ("FLAC", "OGG"):  # compressed formats cut anywhere: never a silently shorter clip
        data = wav_bytes(tone(440, 2.0), fmt=fmt)
        assert enc.load(write(tmp_path / f"ok.{fmt}", data)).seconds == pytest.approx(2.0, abs=0.01)
        for frac in (0.1, 0.5, 0.9):
            cut = write(tmp_path / f"cut{frac}.{fmt}", data[: int(len(data) * frac)])
            assert reason_of(enc.load, cut) == base.TRUNCATED_FILE, (fmt, frac)
        assert reason_of(enc.load, write(tmp_path / f"junk.{fmt}", data[:40] + bytes(3000))) in (
            base.CORRUPT_FILE,
            base.TRUNCATED_FILE,
        )


def test_logmel_features_separate_pitch_and_tempo():
    enc = LogMelAudioEncoder()

    def clip(freq, notes_per_s):
        t = np.arange(24_000) / 16_000
        gate = (np.sin(2 * np.pi * notes_per_s * t) > 0).astype(np.float32)
        return Waveform((0.5 * np.sin(2 * np.pi * freq * t) * gate).astype(np.float32), 16_000)

    v = enc.encode([clip(220, 2), clip(230, 2), clip(1200, 2), clip(220, 8)])
    assert v.shape == (4, enc.dim) and np.isfinite(v).all()
    d = lambda a, b: float(np.linalg.norm(v[a] - v[b]))  # noqa: E731
    assert d(0, 1) < d(0, 2)  # pitch: 220 vs 230 Hz closer than 220 vs 1200 Hz
    assert d(0, 1) < d(0, 3)  # tempo: same pitch, 2 vs 8 notes per second differ


@pytest.mark.slow
def test_yamnet_tags_a_tone_and_noise():
    from modalrec.encoders.audio import YamnetAudioEncoder

    enc = YamnetAudioEncoder()
    t = np.arange(32_000) / 16_000
    sine = Waveform((0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16_000)
    noise = Waveform((0.3 * np.random.default_rng(0).standard_normal(32_000)).astype(np.float32), 16_000)
    v = enc.encode([sine, noise])
    assert v.shape == (2, 521) and ((v >= 0) & (v <= 1)).all()
    tone_tags = {name for name, _ in enc.tags(v[0], top_k=5, min_score=0.0)[0]}
    noise_tags = {name for name, _ in enc.tags(v[1], top_k=3, min_score=0.0)[0]}
    # the int8 model hears a steady 440 Hz tone as a telephone tone ("Sine wave" itself scores
    # below 0.01 for both clips: the quantised output cannot resolve it)
    assert {"Dial tone", "Busy signal", "Telephone"} <= tone_tags
    assert not {"Dial tone", "Busy signal", "Telephone"} & noise_tags
    assert {"White noise", "Noise", "Static", "Pink noise"} & noise_tags


# ------------------------------------------------------------------------------------ video
def test_video_frames_and_audio_track(tmp_path):
    v = video_bytes(seconds=2.0, fps=8)
    frames = sample_frames(v, fps=2.0)
    assert len(frames) == 4  # t = 0, 0.5, 1.0, 1.5
    assert len(sample_frames(v, fps=100.0, max_frames=5)) == 5
    w = decode_audio_track(v)
    assert w.sr == 16_000 and 1.8 < w.seconds < 2.3
    silent = video_bytes(with_audio=False)
    with pytest.raises(ContentError) as e:
        decode_audio_track(silent)
    assert e.value.reason == base.NO_AUDIO_TRACK
    enc = VideoFrameEncoder(fps=1.0, image_size=64)
    assert (
        reason_of(enc.load, write(tmp_path / "bad.mp4", b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64))
        == base.CORRUPT_FILE
    )
    assert reason_of(enc.load, write(tmp_path / "empty.mp4", b"")) == base.EMPTY_FILE
    assert reason_of(enc.load, write(tmp_path / "text.mp4", b"hello world" * 30)) == base.CORRUPT_FILE
    assert reason_of(enc.load, str(tmp_path / "missing.mp4")) == base.MISSING_FILE
    # cut anywhere (inside the media data or inside the index at the end): truncated, for the frames
    # and for the audio track, never a silently shorter video
    audio_enc = VideoAudioEncoder()
    for frac in (0.3, 0.8, 0.999):
        cut = write(tmp_path / f"cut{frac}.mp4", v[: int(len(v) * frac)])
        assert reason_of(enc.load, cut) == base.TRUNCATED_FILE, frac
        assert reason_of(audio_enc.load, cut) == base.TRUNCATED_FILE, frac


def test_video_audio_encoder_matches_audio_encoder(tmp_path):
    ref = write(tmp_path / "v.mp4", video_bytes())
    va = VideoAudioEncoder().encode([ref])
    direct = LogMelAudioEncoder().encode([decode_audio_track(video_bytes())])
    np.testing.assert_allclose(va, direct, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_video_frame_encoder_real_model(tmp_path):
    enc = VideoFrameEncoder(fps=2.0, image_size=64)
    refs = [write(tmp_path / f"{i}.mp4", video_bytes(colour_shift=s)) for i, s in enumerate([0, 128])]
    v = enc.encode(refs)
    assert v.shape == (2, 1280) and np.isfinite(v).all()
    frames = enc.load(refs[0])
    np.testing.assert_allclose(v[0], enc.image.forward_arrays(frames).mean(axis=0), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------ precomputed
def test_npy_files_any_float_dtype_and_bad_ones(tmp_path):
    def npy(arr):
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=True)
        return buf.getvalue()

    ok16 = write(tmp_path / "a.npy", npy(np.arange(4, dtype=np.float16)))
    ok64 = write(tmp_path / "b.npy", npy(np.arange(4, dtype=np.float64)[None]))
    enc = NpyFileEncoder().fit([None, ok16])
    assert enc.dim == 4
    np.testing.assert_array_equal(enc.encode([ok16, ok64]), [[0, 1, 2, 3]] * 2)
    assert reason_of(enc.load, write(tmp_path / "c.npy", npy(np.arange(5.0)))) == base.WRONG_SHAPE
    assert (
        reason_of(enc.load, write(tmp_path / "d.npy", npy(np.array([{"a": 1}], dtype=object))))
        == base.UNSUPPORTED
    )
    assert reason_of(enc.load, write(tmp_path / "e.npy", npy(np.arange(400.0))[:100])) in (
        base.TRUNCATED_FILE,
        base.CORRUPT_FILE,
    )
    assert reason_of(enc.load, write(tmp_path / "f.npy", b"")) == base.EMPTY_FILE


def test_npy_matrix_rows(tmp_path):
    x = np.arange(12, dtype=np.float16).reshape(4, 3)
    np.save(tmp_path / "m.npy", x)
    enc = NpyMatrixEncoder(tmp_path / "m.npy")
    assert enc.dim == 3 and enc.encode([2]).tolist() == [[6.0, 7.0, 8.0]]
    assert enc.content_key(0) != enc.content_key(1)
    assert reason_of(enc.load, 9) == base.WRONG_SHAPE

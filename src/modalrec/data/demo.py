"""An embedded multimodal demo catalogue, generated on the fly: the data ``modalrec demo`` runs on.

Why synthetic: a demo must run anywhere in minutes, with no download, and with a known answer.
Every item has hidden attributes in three groups, and each group shows up in one modality only:

* **image** (rendered with Pillow): shape, colour and fill pattern of a product picture;
* **audio** (synthesised with numpy, 16 kHz WAV): pitch register, tempo (notes per second) and
  timbre (sine, square, sawtooth, bell);
* **text** (title + description): category, material and style words.

Simulated users prefer one value of each attribute; the utility of an item for a user is
``sum_m w_m * match_m(user, item)`` over modalities ``m`` plus a little item appeal and noise, and
each user picks ~``interactions_per_user`` items by a softmax over utilities. The hidden mix
``w_m`` (default text 0.40, image 0.35, audio 0.25) is written to ``demo_truth.json`` next to the
per-item attributes, so fusion weights learned from data can be checked against it. No single
modality explains the choices; a model that uses all three should beat any one of them.

Some items lack a modality (no picture, no sound, no description) and a few media files are
deliberately broken (truncated, zero-length), so the demo also shows the encoders' missing-content
report. Everything is deterministic for a seed.

>>> import tempfile
>>> ds = make_demo(tempfile.mkdtemp(), n_items=60, n_users=40, seed=1)
>>> ds.n_items, ds.n_users, ds.items.columns
(60, 40, ['item_id', 'title', 'description', 'image', 'audio'])
>>> ds.text_fields, ds.media_columns
(['title', 'description'], {'image': 'image', 'audio': 'audio'})
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from modalrec.core.errors import ConfigError
from modalrec.core.io import atomic_write_json, atomic_write_text
from modalrec.data.dataset import Dataset, interaction_matrix
from modalrec.data.report import ValidationReport
from modalrec.data.splits import random_split

SAMPLE_RATE = 16_000

ATTRIBUTES: dict[str, dict[str, list[str]]] = {
    "image": {
        "shape": ["circle", "square", "triangle", "diamond", "star", "ring"],
        "colour": ["red", "orange", "yellow", "green", "teal", "blue", "purple", "pink"],
        "pattern": ["solid", "stripes", "dots", "checks"],
    },
    "audio": {
        "pitch": ["very low", "low", "middle", "high", "very high"],
        "tempo": ["slow", "medium", "fast"],
        "timbre": ["sine", "square", "sawtooth", "bell"],
    },
    "text": {
        "category": ["chair", "lamp", "sofa", "table", "rug", "vase", "clock", "shelf"],
        "material": ["oak", "steel", "wool", "glass", "ceramic", "bamboo"],
        "style": ["modern", "rustic", "minimalist", "vintage", "industrial"],
    },
}
DEFAULT_WEIGHTS = {"text": 0.40, "image": 0.35, "audio": 0.25}

_RGB = {
    "red": (214, 39, 40),
    "orange": (255, 127, 14),
    "yellow": (240, 210, 30),
    "green": (44, 160, 44),
    "teal": (23, 190, 207),
    "blue": (31, 90, 200),
    "purple": (148, 103, 189),
    "pink": (247, 129, 191),
}
_PITCH_HZ = [130.8, 220.0, 392.0, 659.3, 1174.7]
_TEMPO_NPS = [2.0, 4.0, 8.0]  # notes per second
_STYLE_WORDS = {
    "modern": ["sleek", "contemporary", "clean-lined"],
    "rustic": ["farmhouse", "weathered", "countryside"],
    "minimalist": ["simple", "understated", "pared-back"],
    "vintage": ["retro", "classic", "heirloom"],
    "industrial": ["loft", "raw", "workshop"],
}
_MATERIAL_WORDS = {
    "oak": ["solid oak", "oak wood", "oiled oak"],
    "steel": ["brushed steel", "powder-coated steel", "steel frame"],
    "wool": ["felted wool", "wool weave", "soft wool"],
    "glass": ["blown glass", "tempered glass", "clear glass"],
    "ceramic": ["glazed ceramic", "stoneware", "matte ceramic"],
    "bamboo": ["woven bamboo", "bamboo slats", "light bamboo"],
}
_FILLER = [
    "Ships in two days.",
    "A favourite in our catalogue.",
    "Easy to clean.",
    "Designed in a small studio.",
    "Comes with a two-year warranty.",
    "Fits most rooms.",
    "",
]


# ------------------------------------------------------------------------------------ images
def render_image(shape: str, colour: str, pattern: str, rng: np.random.Generator, size: int = 64) -> Any:
    """A product picture: a coloured ``shape`` filled with ``pattern`` on a light background."""
    from PIL import Image, ImageDraw

    bg = tuple(int(v) for v in rng.integers(225, 256, 3))
    img = Image.new("RGB", (size, size), bg)
    fill = _RGB[colour]
    # pattern layer: the colour with a pattern of darker marks
    layer = Image.new("RGB", (size, size), fill)
    d = ImageDraw.Draw(layer)
    dark = tuple(max(0, int(c * 0.45)) for c in fill)
    step = max(4, size // 8)
    if pattern == "stripes":
        for k in range(-size, 2 * size, step):
            d.line([(k, 0), (k + size, size)], fill=dark, width=max(1, step // 3))
    elif pattern == "dots":
        dot = max(1, step // 4)
        for y in range(step // 2, size, step):
            for x in range(step // 2, size, step):
                d.ellipse([x - dot, y - dot, x + dot, y + dot], fill=dark)
    elif pattern == "checks":
        for y in range(0, size, step):
            for x in range(0, size, step):
                if (x // step + y // step) % 2:
                    d.rectangle([x, y, x + step - 1, y + step - 1], fill=dark)
    # shape mask with jittered position, size and rotation
    mask = Image.new("L", (size, size), 0)
    m = ImageDraw.Draw(mask)
    c = size / 2 + rng.uniform(-0.08, 0.08, 2) * size
    r = size * rng.uniform(0.30, 0.40)
    rot = rng.uniform(0, 2 * math.pi)

    def poly(n: int, radius: float, phase: float = 0.0) -> list[tuple[float, float]]:
        return [
            (
                c[0] + radius * math.cos(rot + phase + 2 * math.pi * k / n),
                c[1] + radius * math.sin(rot + phase + 2 * math.pi * k / n),
            )
            for k in range(n)
        ]

    if shape == "circle":
        m.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], fill=255)
    elif shape == "ring":
        m.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], fill=255)
        m.ellipse([c[0] - r * 0.55, c[1] - r * 0.55, c[0] + r * 0.55, c[1] + r * 0.55], fill=0)
    elif shape == "square":
        m.polygon(poly(4, r * 1.2, math.pi / 4), fill=255)
    elif shape == "diamond":
        pts = poly(4, r * 1.2)
        # stretch along one axis so it differs from a rotated square
        m.polygon([(c[0] + (x - c[0]) * 0.7, y) for x, y in pts], fill=255)
    elif shape == "triangle":
        m.polygon(poly(3, r * 1.25), fill=255)
    elif shape == "star":
        pts = []
        for k in range(10):
            rad = r * 1.2 if k % 2 == 0 else r * 0.5
            a = rot + math.pi * k / 5
            pts.append((c[0] + rad * math.cos(a), c[1] + rad * math.sin(a)))
        m.polygon(pts, fill=255)
    img.paste(layer, (0, 0), mask)
    return img


# ------------------------------------------------------------------------------------ audio
_TABLE_LEN = 2048


def _wavetable(timbre: str, f: float) -> np.ndarray:
    """One period of a sine / square / sawtooth with harmonics below 7.5 kHz."""
    if timbre == "sine":
        ks: tuple[int, ...] = (1,)
    elif timbre == "square":
        ks = tuple(k for k in (1, 3, 5, 7, 9) if f * k < 7500)
    else:
        ks = tuple(k for k in range(1, 12) if f * k < 7500)
    return _harmonic_table(ks)


@lru_cache(maxsize=64)
def _harmonic_table(ks: tuple[int, ...]) -> np.ndarray:
    ph = 2 * np.pi * np.arange(_TABLE_LEN) / _TABLE_LEN
    return np.asarray(sum(np.sin(k * ph) / k for k in ks))


def _write_if_changed(path: Path, data: bytes) -> None:
    """Write ``data`` unless the file already holds exactly it.

    Why: re-running the demo regenerates identical files; overwriting (truncating) thousands of
    files costs ~5 ms each on ext4 while reading and comparing costs ~0.1 ms.
    """
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return
    except OSError:
        pass
    path.write_bytes(data)


def synth_clip(
    pitch: int, tempo: int, timbre: str, rng: np.random.Generator, seconds: float = 1.5
) -> np.ndarray:
    """A short melody: notes at ``_TEMPO_NPS[tempo]`` per second around ``_PITCH_HZ[pitch]``."""
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    base = _PITCH_HZ[pitch] * rng.uniform(0.97, 1.03)
    nps = _TEMPO_NPS[tempo] * rng.uniform(0.95, 1.05)
    note_len = 1.0 / nps
    out = np.zeros(n, dtype=np.float64)
    start = rng.uniform(0, 0.05)
    while start < seconds:
        f = base * float(rng.choice([1.0, 1.122, 1.26, 1.335, 1.498]))
        i0, i1 = int(start * SAMPLE_RATE), min(n, int((start + note_len * 0.9) * SAMPLE_RATE))
        if i1 <= i0:
            break
        tt = t[i0:i1] - start
        if timbre == "bell":  # inharmonic partials with fast decay
            wave = sum(
                a * np.sin(2 * np.pi * f * p * tt) * np.exp(-tt * d)
                for p, a, d in ((1.0, 1.0, 6), (2.76, 0.5, 9), (5.4, 0.25, 14))
                if f * p < 7500
            )
        else:  # one period of the (band-limited) waveform, read at frequency f
            idx = (f * tt * _TABLE_LEN).astype(np.int64) % _TABLE_LEN
            wave = _wavetable(timbre, f)[idx]
        env = np.minimum(1.0, tt / 0.01) * np.exp(-tt * 3.0)
        out[i0:i1] += wave * env
        start += note_len
    out += rng.normal(0, 0.003, n)
    peak = np.abs(out).max()
    return (0.6 * out / peak if peak > 0 else out).astype(np.float32)


def _wav_bytes(x: np.ndarray) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, x, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buf.getvalue()


# ------------------------------------------------------------------------------------ text
def describe(category: str, material: str, style: str, rng: np.random.Generator) -> tuple[str, str]:
    """(title, description) naming the text attributes in varied words."""
    style_w = str(rng.choice(_STYLE_WORDS[style]))
    mat_w = str(rng.choice(_MATERIAL_WORDS[material]))
    title = f"{style.capitalize()} {material} {category}"
    templates = [
        f"A {style_w} {category} made of {mat_w}.",
        f"This {style} {category} is crafted from {mat_w}; {style_w} and sturdy.",
        f"{mat_w.capitalize()} {category} with a {style_w} look.",
    ]
    desc = str(rng.choice(templates)) + " " + str(rng.choice(_FILLER))
    return title, desc.strip()


# ------------------------------------------------------------------------------------ main
def make_demo(
    out_dir: str | Path,
    n_items: int = 1200,
    n_users: int = 800,
    seed: int = 0,
    *,
    interactions_per_user: int = 30,
    modality_weights: dict[str, float] | None = None,
    missing_share: float = 0.05,
    n_broken: int = 3,
    image_size: int = 64,
    clip_seconds: float = 1.5,
    temperature: float = 0.12,
) -> Dataset:
    """Generate the demo catalogue under ``out_dir`` and return it as a split :class:`Dataset`.

    Files: ``images/<id>.png|jpg|webp``, ``audio/<id>.wav``, ``items.csv`` (the item table as
    stored), ``interactions.csv`` (user, item, label 0/1/2), and ``demo_truth.json`` (the hidden
    modality weights, attribute vocabularies and every item's attributes). The split is per-user
    random 8:1:1 with the same seed. Identical arguments give byte-identical files.
    """
    params = {
        "n_items": n_items,
        "n_users": n_users,
        "interactions_per_user": interactions_per_user,
        "missing_share": missing_share,
        "n_broken": n_broken,
        "image_size": image_size,
        "clip_seconds": clip_seconds,
        "temperature": temperature,
    }
    weights = _check_demo_args(n_items, n_users, modality_weights)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)  # one stream, drawn in this order: items, users, choices
    hidden = _draw_items(rng, n_items, missing_share, n_broken)
    ids = [f"p{i:05d}" for i in range(n_items)]
    table = _write_item_media(out, ids, hidden, seed, image_size, clip_seconds)
    util = _utilities(rng, hidden, weights, n_users)
    users, items = _choose(rng, util, interactions_per_user, temperature)
    users_a = np.asarray(users, dtype=np.int64)
    items_a = np.asarray(items, dtype=np.int64)
    labels = random_split(users_a, seed=seed)
    mats = [
        interaction_matrix(users_a[labels == s], items_a[labels == s], n_users, n_items) for s in range(3)
    ]
    user_ids = [f"u{u:04d}" for u in range(n_users)]
    _write_tables(out, table, [user_ids[u] for u in users], [ids[i] for i in items], labels)
    atomic_write_json(out / "demo_truth.json", _truth(seed, weights, ids, hidden, params))
    rep = ValidationReport()
    rep.stat("demo", items=n_items, users=n_users, interactions=len(users))
    return Dataset(
        name="demo",
        user_ids=np.asarray(user_ids),
        item_ids=np.asarray(ids),
        train=mats[0],
        valid=mats[1],
        test=mats[2],
        items=table,
        text_fields=["title", "description"],
        media_columns={"image": "image", "audio": "audio"},
        split_name=f"random 8:1:1 seed {seed}",
        report=rep,
    )


def _check_demo_args(
    n_items: int, n_users: int, modality_weights: dict[str, float] | None
) -> dict[str, float]:
    """Check the sizes; the modality weights normalised to sum to 1."""
    if n_items < 20 or n_users < 5:
        raise ConfigError("the demo needs at least 20 items and 5 users")
    weights = dict(modality_weights or DEFAULT_WEIGHTS)
    if set(weights) != set(ATTRIBUTES) or any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise ConfigError(f"modality_weights must give a non-negative weight to each of {sorted(ATTRIBUTES)}")
    total = sum(weights.values())
    return {m: w / total for m, w in weights.items()}


@dataclass
class _HiddenItems:
    """Every item's hidden attributes (value indices per modality and attribute) and defects."""

    attrs: dict[str, dict[str, np.ndarray]]
    appeal: np.ndarray
    missing: dict[str, np.ndarray]
    broken_image: set[int]
    broken_audio: set[int]

    def value(self, modality: str, attribute: str, i: int) -> str:
        """The name of item ``i``'s value of an attribute."""
        return ATTRIBUTES[modality][attribute][self.attrs[modality][attribute][i]]


def _draw_items(rng: np.random.Generator, n_items: int, missing_share: float, n_broken: int) -> _HiddenItems:
    """Draw the items' attributes, appeal, missing modalities and broken media files."""
    attrs = {
        m: {a: rng.integers(0, len(v), n_items) for a, v in group.items()} for m, group in ATTRIBUTES.items()
    }
    appeal = rng.normal(0, 0.3, n_items)
    missing = {m: rng.random(n_items) < missing_share for m in ATTRIBUTES}
    broken_image = set(
        rng.choice(np.flatnonzero(~missing["image"]), min(n_broken, n_items // 10), replace=False).tolist()
    )
    broken_audio = set(
        rng.choice(np.flatnonzero(~missing["audio"]), min(n_broken, n_items // 10), replace=False).tolist()
    )
    return _HiddenItems(attrs, appeal, missing, broken_image, broken_audio)


def _write_item_media(
    out: Path, ids: list[str], hidden: _HiddenItems, seed: int, image_size: int, clip_seconds: float
) -> pl.DataFrame:
    """Write every item's picture and sound; the item table (text and absolute media paths).

    Each item draws from its own generator ``default_rng([seed, i])``: text, then image, then audio.
    """
    titles: list[str] = []
    descs: list[str] = []
    images: list[str | None] = []
    audios: list[str | None] = []
    for i in range(len(ids)):
        r = np.random.default_rng([seed, i])
        title, desc = describe(
            hidden.value("text", "category", i),
            hidden.value("text", "material", i),
            hidden.value("text", "style", i),
            r,
        )
        if hidden.missing["text"][i]:
            title, desc = "", ""  # the text modality is missing for this item
        titles.append(title)
        descs.append(desc)
        images.append(
            None if hidden.missing["image"][i] else _write_image(out, ids[i], i, hidden, r, image_size)
        )
        audios.append(
            None if hidden.missing["audio"][i] else _write_audio(out, ids[i], i, hidden, r, clip_seconds)
        )
    return pl.DataFrame(
        {"item_id": ids, "title": titles, "description": descs, "image": images, "audio": audios},
        schema={
            "item_id": pl.Utf8,
            "title": pl.Utf8,
            "description": pl.Utf8,
            "image": pl.Utf8,
            "audio": pl.Utf8,
        },
    )


_IMAGE_FORMATS = ["png", "png", "jpg", "webp"]


def _write_image(
    out: Path, item_id: str, i: int, hidden: _HiddenItems, r: np.random.Generator, image_size: int
) -> str:
    """Render item ``i``'s picture (format by ``i``; broken on purpose for some) and return its path."""
    fmt = _IMAGE_FORMATS[i % len(_IMAGE_FORMATS)]
    path = out / "images" / f"{item_id}.{fmt}"
    img = render_image(
        hidden.value("image", "shape", i),
        hidden.value("image", "colour", i),
        hidden.value("image", "pattern", i),
        r,
        image_size,
    )
    buf = io.BytesIO()
    if fmt == "jpg":
        img.save(buf, format="JPEG", quality=90)
    elif fmt == "webp":
        img.save(buf, format="WEBP", lossless=True)
    else:
        img.save(buf, format="PNG", optimize=False)
    data = buf.getvalue()
    if i in hidden.broken_image:
        data = data[: len(data) // 3] if i % 2 else b""  # truncated or zero-length
    _write_if_changed(path, data)
    return str(path.resolve())


def _write_audio(
    out: Path, item_id: str, i: int, hidden: _HiddenItems, r: np.random.Generator, clip_seconds: float
) -> str:
    """Synthesise item ``i``'s sound as a WAV file (broken on purpose for some) and return its path."""
    path = out / "audio" / f"{item_id}.wav"
    x = synth_clip(
        int(hidden.attrs["audio"]["pitch"][i]),
        int(hidden.attrs["audio"]["tempo"][i]),
        hidden.value("audio", "timbre", i),
        r,
        clip_seconds,
    )
    data = _wav_bytes(x)
    if i in hidden.broken_audio:
        data = data[: len(data) // 2] if i % 2 else b""
    _write_if_changed(path, data)
    return str(path.resolve())


def _utilities(
    rng: np.random.Generator, hidden: _HiddenItems, weights: dict[str, float], n_users: int
) -> np.ndarray:
    """Draw the users' preferred values; utility [n_users, n_items] of every item for every user."""
    prefs = {
        m: {a: rng.integers(0, len(v), n_users) for a, v in group.items()} for m, group in ATTRIBUTES.items()
    }
    n_items = len(hidden.appeal)
    util = np.zeros((n_users, n_items))
    for m, group in ATTRIBUTES.items():
        match = np.zeros((n_users, n_items))
        for a in group:
            match += prefs[m][a][:, None] == hidden.attrs[m][a][None, :]
        util += weights[m] * match / len(group)
    util += 0.05 * hidden.appeal[None, :]
    return util


def _choose(
    rng: np.random.Generator, util: np.ndarray, interactions_per_user: int, temperature: float
) -> tuple[list[int], list[int]]:
    """Each user's choices, a softmax sample without replacement: (user per row, item per row)."""
    n_users, n_items = util.shape
    users: list[int] = []
    items: list[int] = []
    k = max(5, min(interactions_per_user, n_items // 2))
    for u in range(n_users):
        logits = util[u] / temperature
        g = logits + rng.gumbel(size=n_items)  # Gumbel top-k = sampling without replacement
        n_u = int(np.clip(rng.poisson(k), 5, n_items // 2))
        chosen = np.argpartition(-g, n_u)[:n_u]
        users += [u] * n_u
        items += sorted(chosen.tolist())
    return users, items


def _write_tables(
    out: Path, table: pl.DataFrame, users: list[str], items: list[str], labels: np.ndarray
) -> None:
    """``items.csv`` (the item table) and ``interactions.csv`` (user, item, split label)."""
    table.write_csv(out / "items.csv")
    inter = pl.DataFrame({"user": users, "item": items, "label": labels.astype(np.int64)})
    atomic_write_text(out / "interactions.csv", inter.write_csv())


def _truth(
    seed: int, weights: dict[str, float], ids: list[str], hidden: _HiddenItems, params: dict[str, Any]
) -> dict[str, Any]:
    """The content of ``demo_truth.json``: modality weights, vocabularies, every item's attributes."""
    broken = (("image", hidden.broken_image), ("audio", hidden.broken_audio))
    return {
        "seed": seed,
        "modality_weights": weights,
        "attributes": ATTRIBUTES,
        "note": "each attribute group is visible in one modality only; users' choices mix them with modality_weights",
        "items": {
            ids[i]: {
                **{a: hidden.value(m, a, i) for m in ATTRIBUTES for a in ATTRIBUTES[m]},
                "missing": [m for m in ATTRIBUTES if hidden.missing[m][i]],
                "broken": [m for m, s in broken if i in s],
            }
            for i in range(len(ids))
        },
        "params": params,
    }


def load_truth(out_dir: str | Path) -> dict[str, Any]:
    """The hidden ground truth written by :func:`make_demo` (modality weights, item attributes)."""
    return json.loads((Path(out_dir) / "demo_truth.json").read_text(encoding="utf-8"))

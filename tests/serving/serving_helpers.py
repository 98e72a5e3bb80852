"""Helpers for the serving tests: small run directories with titles, images and text/image features,
and a real uvicorn server on a free loopback port (in a thread)."""

from __future__ import annotations

import importlib.util
import socket
import struct
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("faiss")
import faiss
import httpx
import uvicorn

_spec = importlib.util.spec_from_file_location(
    "_root_conftest", Path(__file__).resolve().parents[1] / "conftest.py"
)
assert _spec is not None and _spec.loader is not None
_root = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_root)
make_clustered = _root.make_clustered

from modalrec.serving.auth import hash_key  # noqa: E402
from modalrec.serving.settings import ServeConfig  # noqa: E402

faiss.omp_set_num_threads(1)

THEMES = ["space rocket astronaut", "romantic love wedding", "cooking recipe kitchen", "football match goal"]
KEYS = {"writer": "mr_test_writer_key", "reader": "mr_test_reader_key", "admin": "mr_test_admin_key"}
N_CLUSTERS = 4


def png_bytes(rgb: tuple[int, int, int], size: int = 8) -> bytes:
    """A tiny valid PNG of one colour (no imaging library needed)."""
    raw = b"".join(b"\x00" + bytes(rgb) * size for _ in range(size))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


def item_cluster(i: int) -> int:
    return i % N_CLUSTERS  # make_clustered assigns item i to cluster i % n_clusters


def catalogue_dataset(root: Path):
    """make_clustered plus an item table (themed titles, PNG posters) and image features per cluster."""
    ds = make_clustered()
    img_dir = root / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    colours = [(200, 40, 40), (40, 160, 60), (40, 60, 200), (200, 180, 40)]
    titles, images = [], []
    for i, iid in enumerate(ds.item_ids):
        c = item_cluster(i)
        titles.append(f"{THEMES[c]} {i}")
        p = img_dir / f"{iid}.png"
        p.write_bytes(png_bytes(colours[c]))
        images.append(str(p) if i % 10 != 9 else None)  # every tenth item has no image
    ds.items = pl.DataFrame({"item_id": [str(x) for x in ds.item_ids], "title": titles, "image": images})
    ds.text_fields = ["title"]
    ds.media_columns = {"image": "image"}
    rng = np.random.default_rng(1)
    img = np.eye(N_CLUSTERS, 8, dtype=np.float32)[[item_cluster(i) for i in range(ds.n_items)]]
    ds.features["image"] = img + 0.1 * rng.normal(size=img.shape).astype(np.float32)
    ds.feature_masks["image"] = np.array([x is not None for x in images])
    return ds, titles


def serve_config(tmp: Path, **over: Any) -> ServeConfig:
    raw: dict[str, Any] = {
        "state_dir": str(tmp / "state"),
        "auth": {
            "keys": [
                {"name": "writer", "hash": hash_key(KEYS["writer"], "sha256"), "scopes": ["read", "write"]},
                {"name": "reader", "hash": hash_key(KEYS["reader"], "scrypt"), "scopes": ["read"]},
                {
                    "name": "admin",
                    "hash": hash_key(KEYS["admin"], "sha256"),
                    "scopes": ["read", "write", "admin"],
                },
            ]
        },
        "health": {"check_every_s": 0.01, "min_requests": 10},
    }
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(raw.get(k), dict):
            raw[k] = {**raw[k], **v}
        else:
            raw[k] = v
    return ServeConfig.model_validate(raw)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """uvicorn serving an app on 127.0.0.1:<free port> in a background thread."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cfg = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False)
        self.server = uvicorn.Server(cfg)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        self.client = httpx.Client(base_url=self.url, timeout=30)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(timeout=20)

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {KEYS[who]}"}

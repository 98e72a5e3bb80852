"""Items added and deleted while the server runs (``POST /items``, ``DELETE /items/{item_id}``).

Why here and not a refit: a run already holds what places a new item at once, the encoders its
config recorded (``[encode]``) and a cold-start model whose content tower maps content into the
space of its user vectors (:class:`~modalrec.models.coldstart.ColdStart`). ``modalrec add-items``
does the same offline into a new run directory; the server does it in place, one item at a time:

1. the request is checked (fields against the catalogue's columns, uploads by
   :mod:`modalrec.serving.uploads`); nothing is stored for a refused item;
2. the item is encoded with the run's recorded encoders (built once per run, on first use, and kept
   warm) and placed by the model, in a worker thread: the event loop keeps answering meanwhile;
3. the media files (content-addressed, under ``state_dir/item-media``), then the item and its
   encoded features are committed to SQLite (``state_dir/live_items.sqlite``, WAL, synchronous=FULL);
4. only then is it added to the engines (:meth:`~modalrec.serving.engine.Engine.append_items`: new
   rows and one incremental add per vector index, on the event loop thread, so no request ever sees
   half an item) and the 201 is sent: an acknowledged item is on disk.

At start-up and on every reload the stored items are applied again (features read back when the
encoders are the same, else encoded again from the stored content); other worker processes apply
what one of them stored within about a second (:meth:`LiveItems.follow`).

Ids: the same id with the same content is idempotent (200, nothing done); other content under a
live id, or any id of the run's catalogue, is a 409. A deleted id may be added again.
The store is per host (SQLite) even when ``[feedback] url`` points at PostgreSQL.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modalrec.core.errors import ConfigError, ModalrecError
from modalrec.core.io import atomic_path
from modalrec.serving.engine import Engine
from modalrec.serving.redact import scrub_paths
from modalrec.serving.settings import ServeConfig
from modalrec.serving.uploads import CheckedMedia, UploadLimits

log = logging.getLogger("modalrec.serving")

SCHEMA = """
CREATE TABLE IF NOT EXISTS live_items (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id TEXT NOT NULL,
    op TEXT NOT NULL CHECK (op IN ('add', 'delete')),
    content_hash TEXT,
    body TEXT,
    fingerprint TEXT,
    ts REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS live_items_id ON live_items (item_id, seq);
CREATE TABLE IF NOT EXISTS live_features (
    seq INTEGER NOT NULL,
    modality TEXT NOT NULL,
    present INTEGER NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (seq, modality)
);
"""


class LiveItemError(Exception):
    """A refused add or delete: the HTTP status, a short code and the reason."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class NewItem:
    """An item to add: its id, text fields (catalogue columns) and checked media by kind."""

    item_id: str
    fields: dict[str, str]
    media: dict[str, CheckedMedia] = field(default_factory=dict)

    def content_hash(self) -> str:
        """Hash of what the item is (fields without blanks, media bytes): equal content, equal hash."""
        doc = {
            "fields": {k: v.strip() for k, v in sorted(self.fields.items()) if v is not None and v.strip()},
            "media": {k: m.sha256 for k, m in sorted(self.media.items())},
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


@dataclass
class Event:
    """One stored row: an add (with its content and the file names of its media) or a delete."""

    seq: int
    item_id: str
    op: str
    content_hash: str | None
    body: dict[str, Any]
    fingerprint: str | None


# ------------------------------------------------------------------------------------------ store
class ItemStore:
    """The durable log of live adds and deletes (SQLite; one writer at a time, every commit fsynced).

    Why a log and not a table of items: replaying it in order gives the catalogue's state at any
    point, a delete followed by a new add of the same id needs no special case, and a worker that
    has applied up to ``seq`` asks only for what came after.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._con = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
        self._con.execute("PRAGMA journal_mode=WAL")
        self._con.execute("PRAGMA synchronous=FULL")
        self._con.execute("PRAGMA busy_timeout=30000")
        self._con.executescript(SCHEMA)

    def add(
        self,
        item: NewItem,
        body: dict[str, Any],
        fingerprint: str,
        features: dict[str, tuple[bool, np.ndarray]],
    ) -> int:
        """Commit an add and its encoded features in one transaction; its sequence number."""
        with self._lock:
            cur = self._con.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                cur.execute(
                    "INSERT INTO live_items (item_id, op, content_hash, body, fingerprint, ts) "
                    "VALUES (?, 'add', ?, ?, ?, ?)",
                    (item.item_id, item.content_hash(), json.dumps(body), fingerprint, time.time()),
                )
                seq = int(cur.lastrowid or 0)
                cur.executemany(
                    "INSERT INTO live_features (seq, modality, present, vector) VALUES (?, ?, ?, ?)",
                    [
                        (seq, m, int(ok), np.ascontiguousarray(x, np.float32).tobytes())
                        for m, (ok, x) in features.items()
                    ],
                )
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        return seq

    def delete(self, item_id: str) -> int:
        """Commit a delete; its sequence number."""
        with self._lock:
            cur = self._con.execute(
                "INSERT INTO live_items (item_id, op, ts) VALUES (?, 'delete', ?)", (item_id, time.time())
            )
            return int(cur.lastrowid or 0)

    def events(self, after: int = 0) -> list[Event]:
        """Every event with ``seq > after``, in order."""
        with self._lock:
            rows = self._con.execute(
                "SELECT seq, item_id, op, content_hash, body, fingerprint FROM live_items WHERE seq > ? "
                "ORDER BY seq",
                (after,),
            ).fetchall()
        return [Event(r[0], r[1], r[2], r[3], json.loads(r[4]) if r[4] else {}, r[5]) for r in rows]

    def last(self, item_id: str) -> Event | None:
        """The newest event of ``item_id`` (None: never added or deleted live)."""
        with self._lock:
            r = self._con.execute(
                "SELECT seq, item_id, op, content_hash, body, fingerprint FROM live_items WHERE item_id = ? "
                "ORDER BY seq DESC LIMIT 1",
                (item_id,),
            ).fetchone()
        return None if r is None else Event(r[0], r[1], r[2], r[3], json.loads(r[4]) if r[4] else {}, r[5])

    def features(self, seq: int) -> dict[str, tuple[bool, np.ndarray]]:
        """The encoded features stored with add ``seq`` (modality -> (present, float32 vector))."""
        with self._lock:
            rows = self._con.execute(
                "SELECT modality, present, vector FROM live_features WHERE seq = ?", (seq,)
            ).fetchall()
        return {m: (bool(p), np.frombuffer(v, dtype=np.float32).copy()) for m, p, v in rows}

    def close(self) -> None:
        with self._lock:
            self._con.close()


def current_state(events: list[Event]) -> dict[str, Event]:
    """The newest event of each id (an add that is live, or a delete)."""
    out: dict[str, Event] = {}
    for e in events:
        out[e.item_id] = e
    return out


# ------------------------------------------------------------------------------------------ encoders
class RunEncoders:
    """A run's recorded encoders for the modalities its model reads (and its other galleries), built
    once on first use and kept warm for the next item.

    Text is the item's fields joined exactly as :func:`modalrec.encoders.encode_dataset` joins them
    offline (stripped, blanks left out, the spec's separator), so an item added live gets the vector
    the offline pipeline would give it.
    """

    def __init__(self, engine: Engine) -> None:
        from modalrec.workflows.add_items import recorded_encoders

        self.modalities = list(engine.model.modalities)
        encode_cfg = (engine.run.manifest.get("config") or {}).get("encode") or {}
        recorded = list(encode_cfg.get("modalities") or [])
        extra = [m for m in engine.galleries if m in recorded and m not in self.modalities]
        self.specs, _ = recorded_encoders(engine.run, self.modalities + extra)
        self.fingerprint = hashlib.sha256(
            json.dumps(self.specs, sort_keys=True, default=str).encode()
        ).hexdigest()
        self._built: dict[str, Any] = {}
        self._lock = threading.Lock()  # one item at a time per encoder object

    def _encoder(self, modality: str, spec: dict[str, Any]) -> Any:
        from modalrec.encoders.registry import build_encoder, canonical_name, default_encoder_name

        opts = {k: v for k, v in spec.items() if k not in ("fields", "column", "sep")}
        key = json.dumps(opts, sort_keys=True, default=str)
        if key not in self._built:  # equal options share one encoder (one MiniLM for many text views)
            name = canonical_name(opts.get("encoder") or default_encoder_name(modality))
            self._built[key] = build_encoder({**opts, "encoder": name})
        return self._built[key]

    def encode(
        self, fields: dict[str, str], media: dict[str, str]
    ) -> tuple[dict[str, tuple[bool, np.ndarray]], dict[str, str]]:
        """Per modality (present, float32 vector), and the reason of each missing one.

        Modalities that share an encoder (the text views of one MiniLM) are encoded in one batch:
        one forward pass instead of one per view.
        """
        from modalrec.encoders.base import ContentError
        from modalrec.encoders.encode import TEXT_SEP

        out: dict[str, tuple[bool, np.ndarray]] = {}
        missing: dict[str, str] = {}
        groups: dict[int, tuple[Any, list[tuple[str, Any]]]] = {}
        with self._lock:
            for m, spec in self.specs.items():
                enc = self._encoder(m, spec)
                if "fields" in spec:
                    parts = [str(fields.get(f) or "").strip() for f in spec["fields"]]
                    ref: Any = str(spec.get("sep", TEXT_SEP)).join(p for p in parts if p)
                else:
                    ref = media.get(str(getattr(enc, "modality", m)))
                try:
                    loaded = enc.load(ref)  # validates (text) or decodes (media) one reference
                except ContentError as e:
                    out[m] = (False, np.zeros(int(enc.dim), np.float32))
                    missing[m] = e.reason
                    continue
                groups.setdefault(id(enc), (enc, []))[1].append((m, loaded))
            for enc, members in groups.values():
                X = np.asarray(enc.encode([x for _, x in members]), np.float32)
                for (m, _), x in zip(members, X, strict=True):
                    ok = bool(np.isfinite(x).all())
                    if not ok:
                        missing[m] = "the encoder returned NaN"
                    out[m] = (ok, np.where(np.isfinite(x), x, 0.0).astype(np.float32))
        return {m: out[m] for m in self.specs}, missing

    def warm_up(self) -> None:
        """Build every encoder and run it once on a small sample (weights loaded, imports done)."""
        samples = {"image": _sample_png(), "audio": _sample_wav()}
        with self._lock:
            for m, spec in self.specs.items():
                try:
                    enc = self._encoder(m, spec)
                    kind = str(getattr(enc, "modality", m))
                    enc.encode(["warm up"] if "fields" in spec else [samples.get(kind, b"")])
                except Exception as e:  # a warm-up failure only means the first add pays instead
                    log.warning("warming up the %s encoder failed: %s", m, scrub_paths(e))


def _sample_png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (127, 127, 127)).save(buf, format="PNG")
    return buf.getvalue()


def _sample_wav() -> bytes:
    import io

    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.zeros(16000, np.float32), 16000, format="WAV")
    return buf.getvalue()


@dataclass
class Prepared:
    """An item encoded and placed for one engine, ready to append."""

    features: dict[str, tuple[bool, np.ndarray]]
    vector: np.ndarray
    missing: dict[str, str]
    fingerprint: str


# ------------------------------------------------------------------------------------------ live items
class LiveItems:
    """Adds and deletes for one server process: the store, the warm encoders, the media folder."""

    def __init__(self, cfg: ServeConfig) -> None:
        it = cfg.items
        self.cfg = cfg
        self.store = ItemStore(cfg.state_path / "live_items.sqlite")
        self.media_dir = cfg.state_path / "item-media"
        self.media_root = cfg.resolve(it.media_root) if it.media_root else None
        self.limits = UploadLimits(
            it.max_upload_bytes, it.max_pixels, it.decode_timeout_s, it.max_audio_seconds
        )
        self._encoders: dict[Path, RunEncoders] = {}
        self._enc_lock = threading.Lock()
        self.lock = asyncio.Lock()  # one add or delete at a time in this process
        self.applied_seq = 0

    def close(self) -> None:
        self.store.close()

    def warm_up(self, engines: dict[str, Engine]) -> threading.Thread:
        """Load the encoders of every engine that can place items, in a background thread.

        Why not on the first POST /items: building an encoder imports its libraries and loads its
        weights (MiniLM: seconds), which holds the interpreter lock long enough to stall the requests
        being answered meanwhile; at start-up nothing is waiting on an add yet.
        """

        def run() -> None:
            for eng in engines.values():
                if eng.placement_problem() is None:
                    try:
                        self.encoders_for(eng).warm_up()
                    except ModalrecError as e:  # e.g. no recorded encoders: POST /items will say so
                        log.warning("live items: %s", scrub_paths(e))

        t = threading.Thread(target=run, name="modalrec-encoder-warm-up", daemon=True)
        t.start()
        return t

    # -- building blocks (worker threads)
    def encoders_for(self, engine: Engine) -> RunEncoders:
        with self._enc_lock:
            if engine.path not in self._encoders:
                self._encoders[engine.path] = RunEncoders(engine)
            return self._encoders[engine.path]

    @staticmethod
    def text_fields(engine: Engine) -> list[str]:
        """The catalogue columns an item may set (media columns are set by uploads, never by name)."""
        media = set(engine.media_cols.values())
        return [c for c in engine.items.columns if c != "item_id" and c not in media]

    def prepare(self, engine: Engine, fields: dict[str, str], media: dict[str, str]) -> Prepared:
        """Encode with the run's encoders and place with its cold-start model (LiveItemError 422
        when the item has nothing the model reads)."""
        enc = self.encoders_for(engine)
        feats, missing = enc.encode(fields, media)
        return self._place(engine, feats, missing, enc.fingerprint)

    def _place(
        self, engine: Engine, feats: dict[str, tuple[bool, np.ndarray]], missing: dict[str, str], fp: str
    ) -> Prepared:
        mods = list(engine.model.modalities)
        if not any(feats.get(m, (False, None))[0] for m in mods):
            why = "; ".join(f"{m}: {missing.get(m, 'not given')}" for m in mods)
            raise LiveItemError(
                422, "no_content", f"the item has no content for any modality the model reads ({why})"
            )
        views = {m: feats[m][1][None, :] for m in mods if m in feats}
        masks = {m: np.array([feats[m][0]]) for m in mods if m in feats}
        vec = engine.model.place_items(views, masks)[0]
        return Prepared(feats, vec, missing, fp)

    def _save_media(self, item: NewItem) -> dict[str, str]:
        """Write each upload once under its content hash (atomic); kind -> file path."""
        out = {}
        for kind, m in item.media.items():
            path = self.media_dir / f"{m.sha256}{m.extension}"
            if not path.exists():
                with atomic_path(path) as tmp:
                    tmp.write_bytes(m.data)
            out[kind] = str(path)
        return out

    @staticmethod
    def _apply(
        engine: Engine, item_id: str, fields: dict[str, str], media: dict[str, str], p: Prepared, h: str
    ) -> None:
        """Append one prepared item to ``engine`` (event loop thread only)."""
        views = {m: x[None, :] for m, (_, x) in p.features.items()}
        masks = {m: np.array([ok]) for m, (ok, _) in p.features.items()}
        engine.append_items([item_id], [dict(fields)], [dict(media)], p.vector[None, :], views, masks, [h])

    # -- requests (event loop)
    async def add(self, engines: dict[str, Engine], item: NewItem) -> tuple[dict[str, Any], bool]:
        """Add ``item`` to every engine whose model can place it; (answer, created).

        The 201 answer is returned only after the item is committed; a repeat of the same id and
        content returns the stored answer with ``created = False`` and does nothing.
        """
        eng = engines["a"]
        why = eng.placement_problem()
        if why is not None:
            raise LiveItemError(409, "model_cannot_place", why)
        h = item.content_hash()
        async with self.lock:
            last = await asyncio.to_thread(self.store.last, item.item_id)
            if last is not None and last.op == "add":
                if last.content_hash == h:
                    return self._answer(item.item_id, last.body, created=False), False
                raise LiveItemError(
                    409,
                    "item_exists",
                    f"item {item.item_id!r} was added with other content; delete it first or use a new id",
                )
            if eng.item_pos.get(item.item_id) is not None:
                raise LiveItemError(
                    409, "item_exists", f"item {item.item_id!r} is already in the run's catalogue"
                )
            paths = await asyncio.to_thread(self._save_media, item)
            prepared: dict[str, Prepared] = {}
            for arm, e in engines.items():
                if e.placement_problem() is None:
                    prepared[arm] = await asyncio.to_thread(self.prepare, e, item.fields, paths)
            p = prepared["a"]
            body = {
                "fields": item.fields,
                "media": {
                    k: {"file": Path(paths[k]).name, "format": m.format, "sha256": m.sha256, **m.info}
                    for k, m in item.media.items()
                },
                "present": [m for m, (ok, _) in p.features.items() if ok],
                "missing": p.missing,
                "arms": sorted(prepared),
            }
            await asyncio.to_thread(self.store.add, item, body, p.fingerprint, p.features)
            for arm, pa in prepared.items():  # durable first, visible second: no ack without a row
                self._apply(engines[arm], item.item_id, item.fields, paths, pa, h)
        return self._answer(item.item_id, body, created=True), True

    @staticmethod
    def _answer(item_id: str, body: dict[str, Any], *, created: bool) -> dict[str, Any]:
        return {
            "item_id": item_id,
            "created": created,
            "modalities": body.get("present", []),
            "missing": body.get("missing", {}),
            "media": {
                k: {kk: v for kk, v in m.items() if kk != "file"} for k, m in body.get("media", {}).items()
            },
            "arms": body.get("arms", ["a"]),
        }

    async def delete(self, engines: dict[str, Engine], item_id: str) -> dict[str, Any]:
        """Hide ``item_id`` everywhere, after the delete is committed (404 when unknown or hidden)."""
        async with self.lock:
            if all(e.item_pos.get(item_id) is None for e in engines.values()):
                raise LiveItemError(404, "unknown_item", f"unknown item id {item_id!r}")
            await asyncio.to_thread(self.store.delete, item_id)
            for e in engines.values():
                e.hide_item(item_id)
        return {"item_id": item_id, "deleted": True}

    # -- start-up, reload and other workers
    def _prepare_events(
        self, engine: Engine, events: list[Event]
    ) -> list[tuple[Event, Prepared, dict[str, str]]]:
        """Adds among ``events`` that ``engine`` does not hold yet, encoded (stored features when the
        encoders are the same, else from the stored content) and placed. Worker thread."""
        if engine.placement_problem() is not None:
            return []
        out = []
        for e in events:
            if e.op != "add" or engine.live_hash.get(e.item_id) == e.content_hash:
                continue
            if e.item_id in engine.item_pos and e.item_id not in engine.live_hash:
                log.warning(
                    "live item %r is in the run's catalogue now; the run's entry is served", e.item_id
                )
                continue
            media = {k: str(self.media_dir / m["file"]) for k, m in e.body.get("media", {}).items()}
            fields = {k: str(v) for k, v in e.body.get("fields", {}).items() if v is not None}
            try:
                enc = self.encoders_for(engine)
                feats = self.store.features(e.seq) if e.fingerprint == enc.fingerprint else {}
                if set(feats) != set(enc.specs):
                    feats, missing = enc.encode(fields, media)
                else:
                    missing = dict(e.body.get("missing", {}))
                out.append((e, self._place(engine, feats, missing, enc.fingerprint), media))
            except (LiveItemError, ModalrecError, OSError) as err:
                log.error(
                    "live item %r could not be applied again: %s",
                    e.item_id,
                    scrub_paths(getattr(err, "message", err)),
                )
        return out

    @staticmethod
    def _hide_deleted(engine: Engine, events: list[Event]) -> None:
        """Hide every id deleted in ``events`` (before re-adds of the same ids are prepared)."""
        for e in events:
            if e.op == "delete":
                engine.hide_item(e.item_id)

    def _apply_events(self, engine: Engine, ready: list[tuple[Event, Prepared, dict[str, str]]]) -> None:
        for e, p, media in ready:
            if e.item_id in engine.live_hash:  # an older version of a re-added id
                engine.hide_item(e.item_id)
            fields = {k: str(v) for k, v in e.body.get("fields", {}).items() if v is not None}
            self._apply(engine, e.item_id, fields, media, p, str(e.content_hash))

    def replay(self, engines: dict[str, Engine]) -> int:
        """Apply every stored add and delete to freshly loaded engines (start-up, reload); the number
        of live items applied to arm a."""
        events = self.store.events(0)
        state = list(current_state(events).values())
        for eng in engines.values():
            self._hide_deleted(eng, events)
            try:
                ready = self._prepare_events(eng, state)
            except ConfigError as e:  # the run records no encoders: deletes still apply
                log.error("stored live items cannot be encoded for %s: %s", eng.model_name, scrub_paths(e))
                ready = []
            self._apply_events(eng, ready)
        self.applied_seq = events[-1].seq if events else 0
        return len(engines["a"].live_hash)

    async def follow(self, engines: dict[str, Engine]) -> None:
        """Apply what other worker processes stored since the last look (about once a second)."""
        if self.lock.locked():
            return
        async with self.lock:
            events = await asyncio.to_thread(self.store.events, self.applied_seq)
            if not events:
                return
            state = list(current_state(events).values())
            for eng in engines.values():
                self._hide_deleted(eng, events)
                ready = await asyncio.to_thread(self._prepare_events, eng, state)
                self._apply_events(eng, ready)
            self.applied_seq = events[-1].seq

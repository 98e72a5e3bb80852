"""Server configuration (TOML), kept apart from the training config because a product team edits it.

Why a separate file: API keys (stored hashed), limits, A/B shares and alert thresholds change without
retraining, and the run directory must never hold secrets. Example ``serve.toml``::

    state_dir = "serve-state"          # feedback.sqlite with the active run (relative to this file)

    [auth]
    read_requires_key = false          # catalogue GETs open; POST /feedback always needs a key
    open_user_data = false             # /users and /users/{id}/history need a read key (demo: true)
    [[auth.keys]]
    name = "web-frontend"
    hash = "sha256$9f86d08..."         # from `modalrec serve-key` (sha256$... or scrypt$...)
    scopes = ["read", "write"]
    [[auth.keys]]
    name = "ops"
    hash = "scrypt$16384$8$1$<salt hex>$<digest hex>"
    scopes = ["read", "write", "admin"]

    [index]
    hnsw_threshold = 50000             # exact inner product below, HNSW above
    pca_dim = 0                        # 0 = off
    quantize = "none"                  # none | int8 | pq

    [ab]
    run_b = "runs/candidate"           # second run directory (optional)
    mode = "ab"                        # or "interleave" (team-draft of both lists for every user)
    share_b = 0.2                      # share of users (by hash of the user id) sent to arm b

    [health]
    max_fallback_share = 0.5

>>> cfg = ServeConfig.model_validate({"limits": {"max_k": 50}})
>>> cfg.limits.max_k, cfg.index.hnsw_threshold, cfg.auth.read_requires_key, cfg.auth.open_user_data
(50, 50000, False, False)
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from modalrec.core.errors import ConfigError

Scope = Literal["read", "write", "admin"]
SCOPES: tuple[Scope, ...] = ("read", "write", "admin")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KeyEntry(_Strict):
    """One API key: a name (shown in logs instead of the key), its hash and what it may do."""

    name: str
    hash: str
    scopes: list[Scope] = Field(default_factory=lambda: list(SCOPES[:2]))

    @field_validator("hash")
    @classmethod
    def _known_scheme(cls, v: str) -> str:
        if not (v.startswith("sha256$") or v.startswith("scrypt$")):
            raise ValueError("key hash must start with 'sha256$' or 'scrypt$' (see `modalrec serve-key`)")
        return v


class AuthConfig(_Strict):
    #: Every GET needs a read key (else the catalogue endpoints are open; see open_user_data).
    read_requires_key: bool = False
    #: Demo switch: ``GET /users`` and ``/users/{id}/history`` as open as the catalogue reads (no key
    #: unless read_requires_key). Off by default: they say who uses the service and what each person
    #: did; a product never opens them.
    open_user_data: bool = False
    keys: list[KeyEntry] = Field(default_factory=list)
    #: Salt for masking user ids in logs (a stable pseudonym per deployment).
    log_salt: str = "modalrec"


class IndexConfig(_Strict):
    hnsw_threshold: int = Field(default=50_000, ge=1)
    hnsw_m: int = Field(default=32, ge=4, le=128)
    #: Candidates per insertion while building HNSW. 40 (faiss's default), not 200: on the scale
    #: benchmark's ALS item vectors (inner product, 1,000 user queries, ef_search 128) 200 gave recall@10
    #: .888 at S (50k items) and .982 at M (200k items, 2-iteration vectors), 40 gave .981 and .997 at
    #: half to a third of the build CPU (S 10.2 -> 5.2 s, M 50.6 -> 14.4 s); on normalised vectors
    #: (/similar) .970 -> .964 (issue 15: the HNSW build was most of a cold `modalrec serve` start-up).
    ef_construction: int = Field(default=40, ge=8)
    ef_search: int = Field(default=128, ge=8)
    #: Items of largest norm that an inner-product HNSW index also keeps as a plain matrix: a query is
    #: first ranked exactly against them, and that answer is kept when the Cauchy-Schwarz bound proves
    #: no other item can enter the top k (k-th score >= |query| x the largest norm left out); otherwise
    #: the graph answers. Why: collaborative item vectors have very unequal norms (ALS at 200k items:
    #: median .006, largest 45) and the top of every list comes from the few large ones, where HNSW on
    #: inner products is weakest (recall@10 .92 at ef_search 128 on the scale benchmark's M run, 15
    #: ALS iterations) while 5,000 head items proved the exact top 10 for every sampled user. Off when
    #: the measured share of proven sample queries is under half (e.g. vectors of equal norm). 0 = off.
    exact_head: int = Field(default=8192, ge=0)
    #: Queries used to measure ANN recall@10 against exact search at load time.
    recall_queries: int = Field(default=200, ge=10)
    pca_dim: int = Field(default=0, ge=0)
    quantize: Literal["none", "int8", "pq"] = "none"
    pq_m: int = Field(default=16, ge=1)
    seed: int = 2024


class FeedbackConfig(_Strict):
    db: str = "feedback.sqlite"
    #: A PostgreSQL database shared by every server process and host (``postgresql://user@host:5432/db``;
    #: needs the ``postgres`` extra). Unset: the SQLite file ``db`` in ``state_dir`` (one host).
    #: Prefer PGPASSWORD or ~/.pgpass to a password in the URL.
    url: str | None = None
    #: Weight of each event type in the fold-in (negative = pushes the user away from the item).
    event_weights: dict[str, float] = Field(
        default_factory=lambda: {
            "view": 0.5,
            "click": 1.0,
            "like": 1.0,
            "add_to_cart": 1.5,
            "purchase": 2.0,
            "rating": 1.0,
            "skip": -0.25,
            "dislike": -1.0,
        }
    )
    #: Fold-in strength: the new user vector is (1 - w) * stored + w * feedback mean, w = n / (n + prior).
    prior: float = Field(default=5.0, gt=0)
    #: Ratings are centred at this value (rating 5 with centre 3 counts +2/2 = +1).
    rating_centre: float = 3.0
    rating_scale: float = Field(default=2.0, gt=0)

    @field_validator("url")
    @classmethod
    def _postgres_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL (or leave it out for the SQLite file `db`)")
        return v


class LimitsConfig(_Strict):
    max_body_bytes: int = Field(default=16_384, ge=256)
    max_k: int = Field(default=200, ge=1)
    max_query_chars: int = Field(default=500, ge=1)


class ItemsConfig(_Strict):
    """Live items (``POST /items``, docs/serving.md "Live items"): where media paths may point, and what
    an upload may be (checked in :mod:`modalrec.serving.uploads`)."""

    #: Folder that ``image_path`` / ``audio_path`` of ``POST /items`` are relative to (relative to this
    #: file). Unset: the server takes uploaded bytes only, no paths.
    media_root: str | None = None
    #: Largest upload (or file under media_root) per medium, in bytes.
    max_upload_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    #: Largest image (width x height) decoded: a decompression bomb declares billions.
    max_pixels: int = Field(default=40_000_000, ge=1)
    #: Longest a decode of one upload may take before it is refused (422).
    decode_timeout_s: float = Field(default=10.0, gt=0)
    #: Audio longer than this is decoded up to this length only.
    max_audio_seconds: float = Field(default=600.0, gt=0)
    #: Load the run's encoders in a background thread at start-up (a run that can place items only),
    #: so that the first POST /items does not stall the requests served meanwhile. False: on first use.
    warm_up: bool = True


class ABConfig(_Strict):
    """An online experiment between run a and ``run_b`` (docs/serving.md, "A/B tests and interleaving")."""

    run_b: str | None = None
    #: "ab": each user is served by one arm (split by a salted hash of the user id);
    #: "interleave": every user gets a team-draft interleaving of both arms' lists.
    mode: Literal["ab", "interleave"] = "ab"
    share_b: float = Field(default=0.5, ge=0.0, le=1.0)
    salt: str = "ab-1"
    #: Significance level of the tests reported at /admin/ab (the always-valid one decides).
    alpha: float = Field(default=0.05, gt=0, lt=1)
    #: Primary A/B metric: share of lists with a positive event ("ctr"), positive events per list, per user.
    metric: Literal["ctr", "positive_per_impression", "positive_per_user"] = "ctr"
    #: mSPRT mixing standard deviation relative to the pooled metric (the size of effect it finds fastest).
    tau: float = Field(default=0.1, gt=0)
    #: Users per arm before the sequential test may answer (its variance is estimated).
    min_users: int = Field(default=100, ge=2)
    #: Always-valid sample-ratio-mismatch test level, and the concentration of its beta mixture.
    srm_alpha: float = Field(default=0.01, gt=0, lt=1)
    srm_concentration: float = Field(default=200.0, gt=0)
    #: Power for the minimum detectable effect shown at /admin/ab.
    power: float = Field(default=0.8, gt=0, lt=1)
    #: Feedback within this many seconds of an impression that showed the item is attributed to it.
    attribution_window_s: float = Field(default=1800.0, gt=0)
    #: Events that count as positive (None: every event with a positive weight except view and rating).
    positive_events: list[str] | None = None
    #: Store every /recommend answer as an impression (attribution, the A/B report). False: nothing is
    #: stored per request (~1 ms of CPU less per request, issue 15) and feedback stays unattributed.
    log_impressions: bool = True


class HealthConfig(_Strict):
    window: int = Field(default=1000, ge=10)
    min_requests: int = Field(default=200, ge=1)
    max_fallback_share: float = Field(default=0.5, ge=0, le=1)
    min_feedback_rate: float = Field(default=0.0, ge=0)
    max_score_drift: float = Field(default=3.0, gt=0)
    check_every_s: float = Field(default=10.0, gt=0)


class ServeConfig(_Strict):
    state_dir: str = "serve-state"
    auth: AuthConfig = Field(default_factory=AuthConfig)
    index: IndexConfig = Field(default_factory=IndexConfig)
    feedback: FeedbackConfig = Field(default_factory=FeedbackConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    ab: ABConfig = Field(default_factory=ABConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    items: ItemsConfig = Field(default_factory=ItemsConfig)
    #: Text encoder for /search: "minilm" (needs the encoders extra) or "none".
    text_encoder: Literal["minilm", "none"] = "minilm"
    #: Directory of the config file; relative paths (state_dir, ab.run_b) resolve against it.
    base_dir: str | None = None

    def resolve(self, p: str) -> Path:
        path = Path(p)
        if path.is_absolute() or self.base_dir is None:
            return path
        return Path(self.base_dir) / path

    @property
    def state_path(self) -> Path:
        return self.resolve(self.state_dir)

    @property
    def db_path(self) -> Path:
        db = Path(self.feedback.db)
        return db if db.is_absolute() else self.state_path / db


def load_serve_config(path: str | Path | None) -> ServeConfig:
    """Read and validate a server TOML file; ``None`` gives the defaults (no keys: writes refused)."""
    if path is None:
        return ServeConfig()
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{p}: server config not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: invalid TOML: {e}") from None
    raw.setdefault("base_dir", str(p.resolve().parent))
    try:
        return ServeConfig.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        raise ConfigError(f"{p}: {loc}: {first['msg']} ({len(e.errors())} error(s))") from None

"""API keys (stored hashed), Bearer checks and user-id masking for logs.

Why hashed: the server config is copied around (deploy repos, tickets); a leaked config must not leak
keys. Two schemes: ``sha256$<hex>`` is enough for long random keys (what :func:`new_key` makes), and
``scrypt$n$r$p$salt$hash`` for keys people choose. scrypt costs ~50 ms, so a verified key's sha256 is
cached in memory: each key pays that cost once per process, not per request.

>>> key = "mr_example_key"
>>> store = KeyStore([KeyEntry(name="site", hash=hash_key(key, "sha256"), scopes=["write"])])
>>> store.check(key, "write").name
'site'
>>> store.check("wrong", "write") is None
True
>>> mask_user_id("alice", "salt") == mask_user_id("alice", "salt") != mask_user_id("bob", "salt")
True
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading

from modalrec.serving.settings import KeyEntry

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


def new_key(prefix: str = "mr_") -> str:
    """A random 256-bit API key (URL-safe)."""
    return prefix + secrets.token_urlsafe(32)


def hash_key(key: str, scheme: str = "scrypt", *, salt: bytes | None = None) -> str:
    """Hash ``key`` for the config file (``sha256$...`` or ``scrypt$n$r$p$salt$hash``).

    >>> hash_key("k", "sha256")
    'sha256$8254c329a92850f6d539dd376f4816ee2764517da5e0235514af433164480d7a'
    """
    if scheme == "sha256":
        return "sha256$" + hashlib.sha256(key.encode()).hexdigest()
    if scheme == "scrypt":
        salt = salt if salt is not None else secrets.token_bytes(16)
        d = hashlib.scrypt(key.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
        return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${d.hex()}"
    raise ValueError(f"unknown hash scheme {scheme!r} (sha256 or scrypt)")


def verify_key(key: str, stored: str) -> bool:
    """Constant-time check of ``key`` against a stored hash."""
    if stored.startswith("sha256$"):
        return hmac.compare_digest(hash_key(key, "sha256"), stored)
    if stored.startswith("scrypt$"):
        try:
            _, n, r, p, salt, digest = stored.split("$")
            d = hashlib.scrypt(
                key.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=len(digest) // 2
            )
        except ValueError:
            return False
        return hmac.compare_digest(d.hex(), digest)
    return False


class KeyStore:
    """The configured keys; :meth:`check` returns the matching entry if it has the scope."""

    def __init__(self, keys: list[KeyEntry]) -> None:
        self.keys = list(keys)
        self._cache: dict[str, KeyEntry] = {}
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self.keys)

    def identify(self, key: str) -> KeyEntry | None:
        fp = hashlib.sha256(key.encode()).hexdigest()
        hit = self._cache.get(fp)
        if hit is not None:
            return hit
        for entry in self.keys:
            if verify_key(key, entry.hash):
                with self._lock:
                    self._cache[fp] = entry
                return entry
        return None

    def check(self, key: str, scope: str) -> KeyEntry | None:
        entry = self.identify(key)
        if entry is None or scope not in entry.scopes:
            return None
        return entry


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else None.

    >>> bearer_token("Bearer abc"), bearer_token("Basic abc"), bearer_token(None)
    ('abc', None, None)
    """
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def mask_user_id(user_id: str, salt: str) -> str:
    """A stable pseudonym for logs: the same user maps to the same tag, the id itself never appears."""
    return "u:" + hashlib.sha256(f"{salt}\x00{user_id}".encode()).hexdigest()[:12]

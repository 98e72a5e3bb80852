"""What the server's log lines say instead of filesystem paths.

The serving contract (DEVELOPERS.md): logs and open endpoints show no secrets, raw user ids or
filesystem paths. A run is named in the log by its folder's name and the sha256 of its
``manifest.json`` (``sha256sum RUN/manifest.json`` finds it again; an admin's ``GET /health`` names
the directory); error texts that may carry a path (a run directory's check, an encoder's file, a
database socket) go through :func:`scrub_paths` before they are logged.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path

#: An absolute path (or one under ``~``) inside a text: starts a token (not part of a URL such as
#: ``postgresql://host/db`` or of a relative path), runs to whitespace, a quote, a bracket, ``,;:``.
_ABSOLUTE = re.compile(r"(?<![\w/:.~-])~?/[^\s'\"(),;:]+")


def run_label(path: str | Path) -> str:
    """How a log line names a run directory: its folder name and its manifest's sha256 (12 digits).

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp()) / "bpr"
    >>> d.mkdir(); _ = (d / "manifest.json").write_text("{}")
    >>> run_label(d)
    "run 'bpr' (manifest sha256 44136fa355b3)"
    """
    p = Path(path)
    try:
        digest = hashlib.sha256((p / "manifest.json").read_bytes()).hexdigest()[:12]
    except OSError:
        return f"run {p.name!r}"
    return f"run {p.name!r} (manifest sha256 {digest})"


def scrub_paths(text: object, known: Iterable[str | Path | None] = ()) -> str:
    """``text`` with ``known`` paths (as given, e.g. a relative one, and resolved) replaced by
    ``<run dir>`` and every other absolute path by ``<path>``.

    >>> scrub_paths("/srv/runs/bpr: file model.json does not match its sha256")
    '<path>: file model.json does not match its sha256'
    >>> scrub_paths("runs/bpr: not a run directory", known=["runs/bpr"])
    '<run dir>: not a run directory'
    >>> scrub_paths("cannot connect to postgresql://db.example:5432/feedback (timeout)")
    'cannot connect to postgresql://db.example:5432/feedback (timeout)'
    >>> scrub_paths('socket "/tmp/pg/.s.PGSQL.5432" failed')
    'socket "<path>" failed'
    """
    out = str(text)
    names = {str(k) for k in known if k} | {str(Path(k).resolve()) for k in known if k}
    for name in sorted(names, key=len, reverse=True):  # the longer first: a parent would cut a child
        out = out.replace(name, "<run dir>")
    return _ABSOLUTE.sub("<path>", out)

"""HTTP serving of a run directory: FastAPI app, faiss index, SQLite feedback, auth, metrics, web page.

Needs the ``serve`` extra (``pip install 'modalrec[serve]'``). Entry points:

- :func:`modalrec.serving.app.create_app` ``(run_dir, config=None) -> FastAPI``
- :func:`modalrec.serving.launcher.serve` ``(run_dir, host, port, workers, config)`` (``modalrec serve``)
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app", "serve"]


def __getattr__(name: str) -> Any:
    # Lazy: importing modalrec.serving must not pull FastAPI/faiss until they are used.
    if name == "create_app":
        from modalrec.serving.app import create_app

        return create_app
    if name == "serve":
        from modalrec.serving.launcher import serve

        return serve
    raise AttributeError(name)

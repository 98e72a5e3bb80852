"""The ``modalrec`` command line (typer + rich), one module per area.

:mod:`modalrec.cli.app` holds the shared pieces (the typer ``app``, consoles, the user-error wrapper
and table helpers); every other module registers its commands on that ``app`` when imported here.
Nothing outside this package imports it (the layers contract in ``pyproject.toml`` checks that).
"""

# The import order is the order of the commands in ``modalrec --help``.
# isort: off
from modalrec.cli.app import app
from modalrec.cli import data, run, components, align, llm, models, serving, items
# isort: on

__all__ = ["align", "app", "components", "data", "items", "llm", "main", "models", "run", "serving"]


def main() -> None:
    """Console-script entry point."""
    app()

"""modalrec: multimodal recommendation with cross-modal alignment and an LLM layer.

The public API mirrors the CLI: every ``modalrec`` command calls a function importable from here
or from the subpackages (``modalrec.data``, ``modalrec.models``, ``modalrec.evaluation`` ...).
"""

from modalrec.core.errors import ConfigError, DataError, ModalrecError

__version__ = "0.1.0"

__all__ = ["ConfigError", "DataError", "ModalrecError", "__version__"]

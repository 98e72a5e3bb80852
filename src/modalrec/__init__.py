"""modalrec: multimodal recommendation with cross-modal alignment and an LLM layer.

The public API mirrors the CLI: every ``modalrec`` command calls a function importable from here
or from the subpackages (``modalrec.data``, ``modalrec.models``, ``modalrec.evaluation`` ...).
"""

import os
import sys

# Why: torch puts every tensor of 2 MB or more on 2 MB transparent huge pages when THP_MEM_ALLOC_ENABLE is set
# before its first allocation (it reads the variable once). Training at millions of users allocates table-sized
# temporaries every step (Adam, gradient sums, propagations); on 4 KB pages their page faults and TLB misses grew
# faster than the data (LightGCN at 10M interactions: 17% of the epoch, benchmarks/results/epoch_profile.md).
# numpy already does this for its own arrays. Set THP_MEM_ALLOC_ENABLE=0 to opt out; nothing changes when torch
# was imported before modalrec, or where the kernel has huge pages off.
if "torch" not in sys.modules:
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

from modalrec.core.errors import ConfigError, DataError, ModalrecError

__version__ = "0.1.0"

__all__ = ["ConfigError", "DataError", "ModalrecError", "__version__"]

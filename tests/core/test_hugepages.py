"""Importing modalrec before torch turns on torch's huge-page allocation, unless the user chose otherwise."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = "import modalrec, os, torch; torch.ones(1 << 20); print(os.environ.get('THP_MEM_ALLOC_ENABLE'))"


def run(code: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    out = subprocess.run(
        [sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def test_import_enables_huge_pages() -> None:
    assert run(PROBE) == "1"


def test_user_choice_is_kept() -> None:
    assert run(PROBE, THP_MEM_ALLOC_ENABLE="0") == "0"


def test_nothing_set_when_torch_came_first() -> None:
    # torch read the variable at its first allocation already: setting it then would only mislead
    assert run("import torch, os; import modalrec; print(os.environ.get('THP_MEM_ALLOC_ENABLE'))") == "None"

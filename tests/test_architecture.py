"""House rules that hold for all of ``src/``: short functions, no pickle, every layer declared.

The import direction itself is checked by import-linter (``lint-imports`` in ``scripts/test.sh``,
contract in ``pyproject.toml``); this file checks what import-linter cannot.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "modalrec"
MAX_FUNCTION_LINES = 80


def _functions() -> list[tuple[str, int]]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                where = f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"
                out.append((where, node.end_lineno - node.lineno + 1))
    return out


def test_no_function_is_longer_than_80_lines() -> None:
    functions = _functions()
    assert len(functions) > 500  # the scan found the code
    long = [f"{where} ({n} lines)" for where, n in functions if n > MAX_FUNCTION_LINES]
    assert not long, "split these into named steps: " + ", ".join(long)


def test_every_top_level_package_is_a_declared_layer() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (contract,) = config["tool"]["importlinter"]["contracts"]
    declared = {name.strip() for layer in contract["layers"] for name in layer.split("|")}
    packages = {f"modalrec.{p.name}" for p in SRC.iterdir() if (p / "__init__.py").exists()}
    modules = {f"modalrec.{p.stem}" for p in SRC.glob("*.py") if p.stem != "__init__"}
    assert not modules, f"top-level modules outside every layer: {sorted(modules)}"
    assert packages == declared


def test_nothing_uses_pickle() -> None:
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n.split(".")[0] in {"pickle", "cloudpickle", "dill", "joblib"} for n in names):
                offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, offenders

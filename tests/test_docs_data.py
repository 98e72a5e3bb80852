"""docs/data.md is true: its Python examples run as doctests, and every message in its table of bad
inputs is the message that input produces today."""

from __future__ import annotations

import doctest
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modalrec.core.errors import ModalrecError
from modalrec.data import load

DOC = Path(__file__).resolve().parents[1] / "docs" / "data.md"


def test_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the examples write their files into an empty folder
    result = doctest.testfile(str(DOC), module_relative=False, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.attempted > 30 and result.failed == 0


def documented_messages() -> list[str]:
    """The backticked messages of the 'Bad input' table."""
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("## Bad input") : text.index("## Limits")]
    return re.findall(r"^\|[^|]+\| `(.+)` .*\|$", section, re.M)


def _matches(doc: str, actual: str) -> bool:
    pattern = ".*".join(re.escape(part) for part in doc.split("..."))
    return re.fullmatch(pattern, actual) is not None


# name -> (file content or a writer, load options)
CASES: dict[str, tuple[Any, dict[str, Any]]] = {
    "missing.csv": (None, {}),
    "clicks": ("user item\nu1 i1\n", {}),
    "latin.csv": ("user,item\nu1,caf\xe9\n".encode("latin-1"), {}),
    "trunc.csv": ("user,item,rating\nu1,i1,5\nu2,i2\n", {}),
    "quote.csv": ('user,item\nu1,"i1\n', {}),
    "dup.csv": ("user,item,item\nu1,i1,i2\n", {}),
    "empty.csv": ("", {}),
    "header.csv": ("user,item\n", {}),
    "big.csv": ("user,item\nu1,i1\n" + "u" * 2_000_000 + ",i2\nu3,i3\n", {}),
    "nouser.csv": ("customer,sku\nc1,s1\n", {}),
    "ok.csv": ("user,item\nu1,i1\n", {"columns": {"user": "customer"}}),
    "emptyid.csv": ("user,item\nu1,\n", {}),
    "rating.csv": ("user,item,rating\nu1,i1,five\n", {}),
    "ts.csv": ("user,item,timestamp\nu1,i1,yesterday\n", {}),
    "label.csv": ("user,item,x_label\nu1,i1,holdout\n", {}),
    "bad.jsonl": ('{"user": "u1", "item": "i1"}\n{"user": "u2", "item": \n', {}),
    "bad.csv.gz": (b"not gzip", {}),
    "r.csv": ("user,item\nu1,i1\nu1,i3\nu2,i2\n", {"items": "items.csv", "strict": True}),
    "f.npy": (np.ones((3, 4), dtype=np.float32), {"items": "items.csv"}),
    "obj.npy": (np.array([{"a": 1}], dtype=object), {}),
    "one.npy": (np.ones(3, dtype=np.float32), {}),
    "d.toml": ('interactions = "r2.csv"\nusers = "x"\n', {}),
    "d2.toml": ('name = "x"\n', {}),
    "splits": (None, {"splits": "temporal"}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_message_is_documented(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("items.csv").write_text("item_id,title\ni1,Red chair\ni2,Blue sofa\n")
    Path("r2.csv").write_text("user,item\nu1,i1\nu2,i2\n")
    body, opts = CASES[name]
    target = name
    if isinstance(body, np.ndarray):
        np.save(name, body, allow_pickle=body.dtype == object)
        target, opts = "r2.csv", {**opts, "features": {"image": name}}
    elif isinstance(body, bytes):
        Path(name).write_bytes(body)
    elif body is not None:
        Path(name).write_text(body)
    if name == "splits":
        target = "r2.csv"
    with pytest.raises(ModalrecError) as e:
        load(target, **opts)
    actual = str(e.value)
    documented = documented_messages()
    assert any(_matches(doc, actual) for doc in documented), f"{actual!r} is not in docs/data.md"

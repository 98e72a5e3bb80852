"""Memory guards refuse what would not fit and name the way out."""

from __future__ import annotations

import pytest

from modalrec.core.memory import (
    MemoryBudgetError,
    check_allocation,
    human_bytes,
    memory_budget,
    parse_bytes,
)


def test_budget_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODALREC_MEMORY_BUDGET", "2G")
    assert memory_budget() == 2 * 1024**3
    check_allocation(1024**3, what="one GiB", alternative="-")
    with pytest.raises(
        MemoryBudgetError, match=r"needs 3.0 GiB, over the memory budget of 2.0 GiB.*use itemknn"
    ):
        check_allocation(3 * 1024**3, what="a dense item x item matrix", alternative="use itemknn")


def test_bad_budget_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODALREC_MEMORY_BUDGET", "lots")
    with pytest.raises(MemoryBudgetError, match="'lots' is not a size"):
        memory_budget()


def test_default_budget_is_positive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODALREC_MEMORY_BUDGET", raising=False)
    assert memory_budget() > 0


@pytest.mark.parametrize(
    ("text", "expected"), [("1024", 1024), ("1K", 1024), ("1.5M", 1572864), ("2GiB", 2 * 1024**3)]
)
def test_parse_bytes(text: str, expected: int) -> None:
    assert parse_bytes(text) == expected


def test_human_bytes() -> None:
    assert human_bytes(12) == "12 B"
    assert human_bytes(1536) == "1.5 KiB"

"""From checked tables to a :class:`Dataset`: ids, filters, de-duplication, k-core, split, features.

Every row that does not make it into the Dataset is counted in the :class:`ValidationReport`
with its reason and a few ``file:line`` examples; nothing is dropped silently. Order of steps:

1. ``min_rating`` (optional): interactions with a lower rating are dropped (info).
2. Catalogue: duplicate item ids keep their first row (warning).
3. Interactions naming an item missing from the catalogue are dropped (warning), or raise
   :class:`DataError` with ``strict=True``.
4. Duplicate (user, item) pairs collapse to one interaction: the earliest by timestamp (then by
   file line); with fixed split labels, the smallest label (train before valid before test).
   Exact duplicates are a warning; repeats at different times are info (repeat consumption).
5. k-core (optional): iterative filter on users and items (info).
6. Ids: string ids at the edges, dense indices inside, in natural order (numeric ids numerically,
   otherwise "item2" < "item10"). Catalogue items without interactions are kept (cold items,
   info) unless a k-core filter is requested.
7. Split (see :mod:`modalrec.data.splits`) on interactions ordered by (user index, item index).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from modalrec.core.errors import ConfigError, DataError
from modalrec.data import splits as S
from modalrec.data.dataset import Dataset, interaction_matrix
from modalrec.data.kcore import kcore_mask
from modalrec.data.media import is_remote, media_exists
from modalrec.data.report import MAX_EXAMPLES, ValidationReport
from modalrec.data.tables import Catalogue, Interactions


@dataclass
class FeatureInput:
    """A feature matrix as read from disk; row ``r`` belongs to item id ``row_ids[r]``."""

    modality: str
    array: np.ndarray
    row_ids: np.ndarray
    file: str
    source_dtype: str = ""


@dataclass
class BuildOptions:
    """Options shared by every loader (see :func:`modalrec.data.load` for their meaning)."""

    split: str | None = None
    ratios: tuple[float, float, float] = S.DEFAULT_RATIOS
    seed: int = 2024
    cold_share: float = 0.1
    min_rating: float | None = None
    kcore: int | tuple[int, int] | None = None
    strict: bool = False
    check_media: bool = True


BUILD_OPTION_NAMES = tuple(BuildOptions.__dataclass_fields__)


def natural_order(ids: list[str] | np.ndarray | pl.Series) -> np.ndarray:
    """Permutation that sorts ids naturally: all-integer ids numerically, else digit runs as numbers.

    Ties (e.g. "u01" and "u1", or repeated ids) keep input order. Ids of the common shape "prefix +
    number" (``u0000012``, ``item7``) take a vectorised path with the same result; others sort with
    a Python key (fine for thousands of ids, slow for millions).

    >>> ids = ["10", "9", "100"]
    >>> [ids[i] for i in natural_order(ids)]
    ['9', '10', '100']
    >>> ids = ["item10", "item2", "b", "a"]
    >>> [ids[i] for i in natural_order(ids)]
    ['a', 'b', 'item2', 'item10']
    """
    s = ids.cast(pl.Utf8) if isinstance(ids, pl.Series) else pl.Series(list(ids), dtype=pl.Utf8)
    as_int = s.cast(pl.Int64, strict=False)
    if len(s) and as_int.null_count() == 0:
        return np.lexsort((np.asarray(s.to_list(), dtype=str), as_int.to_numpy()))
    keys = _prefix_number_keys(s)
    if keys is not None:
        prefix_rank, number = keys
        return np.lexsort((number, prefix_rank))  # stable: ties keep input order, as sorted() does
    split = re.compile(r"(\d+)")
    ids = s.to_list()

    def key(v: str) -> tuple[tuple[int, int | str], ...]:
        return tuple((0, int(p)) if p.isdecimal() else (1, p) for p in split.split(v) if p)

    return np.asarray(sorted(range(len(ids)), key=lambda k: key(str(ids[k]))), dtype=np.int64)


def _prefix_number_keys(s: pl.Series) -> tuple[np.ndarray, np.ndarray] | None:
    """(rank of the prefix, number) for ids that are a digit-free prefix + 1..18 ASCII digits, else None.

    Why it equals the Python key of :func:`natural_order`: such an id splits into ``(1, prefix),
    (0, number)`` (or just ``(0, number)`` without a prefix, which sorts first, as the empty prefix
    does here); prefixes compare as Python strings (code points), then numbers numerically.
    """
    if not len(s) or s.null_count():
        return None
    parts = s.str.extract_groups(r"^(\D*)([0-9]{1,18})$")
    prefix, digits = parts.struct.field("1"), parts.struct.field("2")
    if prefix.null_count():
        return None
    uniq = sorted(prefix.unique().to_list())
    rank = prefix.replace_strict(uniq, list(range(len(uniq))), return_dtype=pl.Int64).to_numpy()
    return rank, digits.cast(pl.Int64).to_numpy()


def _examples(values: list[str]) -> list[str]:
    return [str(v) for v in values[:MAX_EXAMPLES]]


def _as_canonical_ints(values: pl.Series) -> np.ndarray | None:
    """int64 values when every string is a canonical integer ("12", not "012" or "1.0"), else None."""
    if len(values) > 1 and _as_canonical_ints(values.head(1)) is None:
        return None  # the first id already says no: skip the parse of millions of strings
    ints = values.str.to_integer(strict=False)
    if ints.null_count() or not bool((ints.cast(pl.Utf8) == values).all()):
        return None
    return ints.to_numpy().astype(np.int64)


def _distinct(values: pl.Series) -> tuple[pl.Series, np.ndarray]:
    """(distinct values in byte order, index of each value in them).

    Why not a join or ``rank`` on the strings: on millions of rows with a skewed id distribution
    (a few very popular items) polars' string rank takes minutes and a join several seconds, while
    ranking the 64-bit hashes takes about one. Hash collisions are checked for (every row must equal
    its group's representative); on one, the exact join path is used instead.
    """
    if not len(values):
        return values.clear(), np.zeros(0, dtype=np.int64)
    group = values.hash(seed=0).rank("dense").to_numpy().astype(np.int64) - 1
    representative = np.empty(int(group.max()) + 1, dtype=np.int64)
    representative[group] = np.arange(len(values))  # any row of a group holds the same string
    distinct = values.gather(representative)
    if not bool((distinct.gather(group) == values).all()):  # pragma: no cover - a 64-bit collision
        distinct = values.unique()
        mapping = pl.DataFrame({"v": distinct, "g": np.arange(len(distinct))})
        joined = values.rename("v").to_frame().join(mapping, on="v", how="left", maintain_order="left")
        group = joined["g"].to_numpy().astype(np.int64)
    by_bytes = distinct.arg_sort().to_numpy()
    position = np.empty(len(by_bytes), dtype=np.int64)
    position[by_bytes] = np.arange(len(by_bytes))
    return distinct.gather(by_bytes), position[group]


def _encode(values: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """(universe in natural order, code of each value). Integer ids take a fast numeric path."""
    ints = _as_canonical_ints(values)
    if ints is not None:
        uniq, codes = np.unique(ints, return_inverse=True)
        return uniq.astype(str), codes.astype(np.int64).ravel()
    distinct, rank = _distinct(values)
    order = natural_order(distinct)
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order))
    return distinct.to_numpy().astype(str)[order], position[rank]


def _codes(values: pl.Series, universe: np.ndarray) -> np.ndarray:
    """Index of each value in ``universe`` (natural order; every value must be present)."""
    ints = _as_canonical_ints(values)
    if ints is not None and len(universe):
        uni_ints = _as_canonical_ints(pl.Series(universe.tolist(), dtype=pl.Utf8))
        if uni_ints is not None and bool(np.all(np.diff(uni_ints) > 0)):
            return np.searchsorted(uni_ints, ints).astype(np.int64)
    distinct, rank = _distinct(values)
    mapping = pl.DataFrame(
        {"v": pl.Series(universe.tolist(), dtype=pl.Utf8), "code": np.arange(len(universe))}
    )
    joined = distinct.rename("v").to_frame().join(mapping, on="v", how="left", maintain_order="left")
    return joined["code"].to_numpy().astype(np.int64)[rank]


def _stable_order(*keys: np.ndarray) -> np.ndarray:
    """Like ``np.lexsort(keys)`` (last key primary; ties keep input order) via stable argsorts,
    which are several times faster than lexsort on millions of rows."""
    order = np.arange(len(keys[0]))
    for k in keys:
        order = order[np.argsort(k[order], kind="stable")]
    return order


def _compact(codes: np.ndarray, universe: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Renumber codes to 0..k-1 over the used part of ``universe`` (order preserved), in O(n)."""
    used = np.bincount(codes, minlength=len(universe)) > 0
    remap = np.cumsum(used) - 1
    return remap[codes].astype(np.int64), universe[used]


def _lost_users(u: np.ndarray, before: np.ndarray, after: np.ndarray, n_users: int) -> np.ndarray:
    """User codes that had rows under mask ``before`` and none under ``after``."""
    had = np.bincount(u[before], minlength=n_users) > 0
    has = np.bincount(u[after], minlength=n_users) > 0
    return np.flatnonzero(had & ~has)


@dataclass
class _Rows:
    """Interactions on their way into the Dataset: user and item codes, file line, time, label."""

    u: np.ndarray
    i: np.ndarray
    lines: np.ndarray
    ts: np.ndarray | None
    lab: np.ndarray | None

    def take(self, sel: np.ndarray) -> _Rows:
        """The rows selected (or reordered) by a mask or an index array."""
        return _Rows(
            self.u[sel],
            self.i[sel],
            self.lines[sel],
            self.ts[sel] if self.ts is not None else None,
            self.lab[sel] if self.lab is not None else None,
        )


@dataclass
class _KnownItems:
    """The item universe interactions are checked against, and how to name it in messages."""

    ids: pl.Series
    source: str
    unknown_kind: str


def build_dataset(
    name: str,
    inter: Interactions,
    catalogue: Catalogue | None = None,
    features: list[FeatureInput] | None = None,
    options: BuildOptions | None = None,
    *,
    report: ValidationReport | None = None,
    default_split: str = "random",
    all_items: list[str] | None = None,
) -> Dataset:
    """Assemble a Dataset; see the module docstring for the order of checks.

    ``all_items`` is the item universe when there is no catalogue file (e.g. MMRec folders, where
    the items are ``0..max(itemID)``); interactions naming other items count as unknown.
    """
    opt = options or BuildOptions()
    rep = report if report is not None else ValidationReport()
    user_universe, u_all = _encode(inter.frame["user"])
    # the numbered steps of the module docstring
    keep = _filter_min_rating(inter, opt, rep)  # 1
    lost_filter = [_lost_users(u_all, np.ones(len(keep), dtype=bool), keep, len(user_universe))]
    cat_frame = _dedupe_catalogue(catalogue, rep)  # 2
    known = _known_items(catalogue, cat_frame, all_items)
    unknown = _unknown_items(inter, keep, known, opt.strict, rep)  # 3
    lost_unknown = _lost_users(u_all, keep, keep & ~unknown, len(user_universe))
    keep &= ~unknown
    item_universe, rows = _coded_rows(inter, keep, u_all, known)
    rows = _collapse_duplicates(rows, inter, user_universe, item_universe, rep)  # 4
    rows = _filter_kcore(rows, opt, inter.file, len(user_universe), rep, lost_filter)  # 5
    u, user_ids = _compact(rows.u, user_universe)  # 6
    i, item_ids = (rows.i, item_universe) if opt.kcore is None else _compact(rows.i, item_universe)
    _report_lost_users(user_universe, lost_unknown, lost_filter, inter.file, rep)
    _report_cold_items(i, item_ids, catalogue.file if catalogue is not None else inter.file, rep)
    labels, cold_items, split_name = _split(  # 7
        opt.split or default_split, u, i, rows.ts, rows.lab, len(item_ids), opt
    )
    train, valid, test = (
        interaction_matrix(u[labels == k], i[labels == k], len(user_ids), len(item_ids)) for k in range(3)
    )
    _report_no_train(train, user_ids, rep)
    # item table, media and features
    items_df = _item_table(item_ids, cat_frame)
    media_columns = _check_catalogue_content(items_df, catalogue, opt, rep)
    feats, masks = _features(features or [], item_ids, len(item_universe), rep)
    rep.stat(inter.file, rows_read=inter.frame.height, rows_kept=len(u))
    rep.stat("dataset", users=len(user_ids), items=len(item_ids), interactions=len(u))
    rep.stat(
        "split",
        name=split_name,
        train=int(train.nnz),
        valid=int(valid.nnz),
        test=int(test.nnz),
        **({"cold_items": len(cold_items)} if cold_items is not None else {}),
    )
    return Dataset(
        name=name,
        user_ids=user_ids,
        item_ids=item_ids,
        train=train,
        valid=valid,
        test=test,
        items=items_df,
        features=feats,
        feature_masks=masks,
        cold_items=cold_items,
        text_fields=list(catalogue.text_fields) if catalogue is not None else [],
        media_columns=media_columns,
        split_name=split_name,
        report=rep,
    )


def _filter_min_rating(inter: Interactions, opt: BuildOptions, rep: ValidationReport) -> np.ndarray:
    """Step 1: mask of the interactions rated at least ``min_rating`` (all when it is not set)."""
    if opt.min_rating is None:
        return np.ones(inter.frame.height, dtype=bool)
    if not inter.has_rating:
        raise ConfigError(f"min_rating={opt.min_rating} needs a rating column, and {inter.file} has none")
    keep = inter.frame["rating"].to_numpy() >= opt.min_rating
    n_low = int((~keep).sum())
    if n_low:
        rep.add(
            f"rating below min_rating={opt.min_rating}",
            inter.file,
            count=n_low,
            dropped=n_low,
            severity="info",
        )
    return keep


def _dedupe_catalogue(catalogue: Catalogue | None, rep: ValidationReport) -> pl.DataFrame | None:
    """Step 2: the catalogue rows with duplicate item ids removed (the first row of an id is kept)."""
    if catalogue is None:
        return None
    cat_frame = catalogue.frame
    rep.stat(catalogue.file, rows_read=cat_frame.height)
    dup = cat_frame["item_id"].is_first_distinct().not_()
    n_dup = int(dup.sum())
    if n_dup:
        dup_idx = dup.arg_true().to_list()
        rep.add(
            "duplicate item id (first row kept)",
            catalogue.file,
            count=n_dup,
            dropped=n_dup,
            examples=[f"{catalogue.where(r)} item {cat_frame['item_id'][r]}" for r in dup_idx[:MAX_EXAMPLES]],
        )
        cat_frame = cat_frame.filter(~dup)
    rep.stat(catalogue.file, rows_kept=cat_frame.height)
    return cat_frame


def _known_items(
    catalogue: Catalogue | None, cat_frame: pl.DataFrame | None, all_items: list[str] | None
) -> _KnownItems | None:
    """The item universe: the catalogue's ids, else ``all_items``, else None (any item is known)."""
    if catalogue is not None and cat_frame is not None:
        return _KnownItems(
            cat_frame["item_id"],
            f"the item catalogue {catalogue.file}",
            "unknown item (not in the catalogue)",
        )
    if all_items is not None:
        return _KnownItems(pl.Series("item_id", all_items, dtype=pl.Utf8), "the item list", "unknown item")
    return None


def _unknown_items(
    inter: Interactions, keep: np.ndarray, known: _KnownItems | None, strict: bool, rep: ValidationReport
) -> np.ndarray:
    """Step 3: mask of the kept interactions naming an unknown item (reported; raised when strict)."""
    frame = inter.frame
    if known is None:
        return np.zeros(len(keep), dtype=bool)
    unknown = keep & ~frame["item"].is_in(known.ids.implode()).to_numpy()
    n_unknown = int(unknown.sum())
    if n_unknown:
        bad = np.flatnonzero(unknown)
        bad_items = frame["item"].gather(bad[:MAX_EXAMPLES]).to_list()
        bad_lines = frame["line"].gather(bad[:MAX_EXAMPLES]).to_list()
        if strict:
            raise DataError(
                f"item {bad_items[0]!r} is not in {known.source}"
                f" ({n_unknown} such interaction(s); strict=False drops and reports them)",
                file=inter.file,
                line=bad_lines[0] if inter.unit == "line" else None,
                field="item",
            )
        rep.add(
            known.unknown_kind,
            inter.file,
            count=n_unknown,
            dropped=n_unknown,
            examples=[f"{inter.where(ln)} item {it}" for ln, it in zip(bad_lines, bad_items, strict=True)],
        )
    return unknown


def _coded_rows(
    inter: Interactions, keep: np.ndarray, u_all: np.ndarray, known: _KnownItems | None
) -> tuple[np.ndarray, _Rows]:
    """The item universe in natural order, and the kept rows with item codes into it."""
    frame = inter.frame
    kept_frame = frame.filter(pl.Series(keep)) if not keep.all() else frame
    if known is not None:
        item_universe = known.ids.unique(maintain_order=True).to_numpy().astype(str)
        item_universe = item_universe[natural_order(item_universe)]
        i = _codes(kept_frame["item"], item_universe)
    else:
        item_universe, i = _encode(kept_frame["item"])
    rows = _Rows(
        u_all[keep],
        i,
        kept_frame["line"].to_numpy(),
        kept_frame["timestamp"].to_numpy() if inter.has_timestamp else None,
        kept_frame["label"].to_numpy().astype(np.int8) if inter.has_label else None,
    )
    return item_universe, rows


def _canonical_order(rows: _Rows, n_items: int) -> np.ndarray:
    """Order by (user, item, [label], [timestamp], file order): the row to keep comes first in a pair."""
    pair = rows.u * max(1, n_items) + rows.i
    order = np.argsort(pair, kind="stable")
    if (rows.ts is not None or rows.lab is not None) and len(pair) > 1:
        sp = pair[order]
        eq = sp[1:] == sp[:-1]
        if eq.any():
            # only rows of duplicated pairs need ordering by (label, time): re-sort just those
            in_dup = np.zeros(len(sp), dtype=bool)
            in_dup[1:] |= eq
            in_dup[:-1] |= eq
            sub = order[in_dup]
            keys = [k[sub] for k in (rows.ts, rows.lab) if k is not None]
            order[in_dup] = sub[_stable_order(*keys, pair[sub])]
    return order


def _collapse_duplicates(
    rows: _Rows,
    inter: Interactions,
    user_universe: np.ndarray,
    item_universe: np.ndarray,
    rep: ValidationReport,
) -> _Rows:
    """Step 4: one row per (user, item) pair, in canonical order; the collapsed rows are reported."""
    rows = rows.take(_canonical_order(rows, len(item_universe)))
    pair = rows.u * max(1, len(item_universe)) + rows.i
    same_pair = np.zeros(len(rows.u), dtype=bool)
    if len(rows.u) > 1:
        same_pair[1:] = pair[1:] == pair[:-1]
    if not same_pair.any():
        return rows
    dup_rows = np.flatnonzero(same_pair)
    exact = (
        np.ones(len(dup_rows), dtype=bool) if rows.ts is None else rows.ts[dup_rows] == rows.ts[dup_rows - 1]
    )
    conflict = np.zeros(len(dup_rows), dtype=bool)
    if rows.lab is not None:
        # compare with the kept (first) row of the pair
        first_of_pair = np.maximum.accumulate(np.where(~same_pair, np.arange(len(rows.u)), 0))
        conflict = rows.lab[dup_rows] != rows.lab[first_of_pair[dup_rows]]
    for kind, sel, sev in (
        ("duplicate interaction in different splits (smallest split label kept)", conflict, "warning"),
        ("duplicate interaction (collapsed)", exact & ~conflict, "warning"),
        ("repeated interaction at another time (collapsed, earliest kept)", ~exact & ~conflict, "info"),
    ):
        sel_rows = dup_rows[sel]
        if len(sel_rows):
            rep.add(
                kind,
                inter.file,
                count=len(sel_rows),
                dropped=len(sel_rows),
                severity=sev,
                examples=[
                    f"{inter.where(int(rows.lines[r]))} user {user_universe[rows.u[r]]} item {item_universe[rows.i[r]]}"
                    for r in sel_rows[:MAX_EXAMPLES]
                ],
            )
    return rows.take(~same_pair)


def _filter_kcore(
    rows: _Rows,
    opt: BuildOptions,
    file: str,
    n_all_users: int,
    rep: ValidationReport,
    lost_filter: list[np.ndarray],
) -> _Rows:
    """Step 5: the (k_user, k_item)-core of the rows (unchanged without ``kcore``).

    Users who lose every interaction here are appended to ``lost_filter``.
    """
    if opt.kcore is None:
        return rows
    ku, ki = (opt.kcore, opt.kcore) if isinstance(opt.kcore, int) else tuple(opt.kcore)
    kc = kcore_mask(rows.u, rows.i, int(ku), int(ki))
    if kc.removed_rows:
        rep.add(
            f"removed by {ku}/{ki}-core filter ({kc.removed_users} users, {kc.removed_items} items, "
            f"{kc.rounds} rounds)",
            file,
            count=kc.removed_rows,
            dropped=kc.removed_rows,
            severity="info",
        )
        lost_filter.append(_lost_users(rows.u, np.ones(len(rows.u), dtype=bool), kc.mask, n_all_users))
    return rows.take(kc.mask)


def _report_lost_users(
    user_universe: np.ndarray,
    lost_unknown: np.ndarray,
    lost_filter: list[np.ndarray],
    file: str,
    rep: ValidationReport,
) -> None:
    """Users of the file who are not in the Dataset, by reason."""
    if len(lost_unknown):
        rep.add(
            "user with no interactions left (all on unknown items)",
            file,
            count=len(lost_unknown),
            examples=_examples(user_universe[lost_unknown].tolist()),
        )
    lost = np.unique(np.concatenate(lost_filter)) if lost_filter else np.zeros(0, dtype=np.int64)
    if len(lost):
        rep.add(
            "user removed by filters (min_rating / k-core)",
            file,
            count=len(lost),
            severity="info",
            examples=_examples(user_universe[lost].tolist()),
        )


def _report_cold_items(i: np.ndarray, item_ids: np.ndarray, file: str, rep: ValidationReport) -> None:
    """Items without any interaction (kept as cold items)."""
    item_count = np.bincount(i, minlength=len(item_ids))
    if (item_count == 0).any():
        cold = np.flatnonzero(item_count == 0)
        rep.add(
            "item with no interactions (kept as a cold item)",
            file,
            count=len(cold),
            severity="info",
            examples=_examples(item_ids[cold].tolist()),
        )


def _report_no_train(train: sp.csr_matrix, user_ids: np.ndarray, rep: ValidationReport) -> None:
    """Users left without a training interaction by the split."""
    no_train = np.flatnonzero(np.diff(train.indptr) == 0)
    if len(no_train):
        rep.add(
            "user with no training interactions",
            "split",
            count=len(no_train),
            severity="info",
            examples=_examples(user_ids[no_train].tolist()),
        )


def _check_catalogue_content(
    items_df: pl.DataFrame, catalogue: Catalogue | None, opt: BuildOptions, rep: ValidationReport
) -> dict[str, str]:
    """Report items without text or media (and missing media files); return the media columns."""
    if catalogue is None:
        return {}
    media_columns = dict(catalogue.media_columns)
    _check_text(items_df, catalogue.text_fields, catalogue.file, rep)
    if opt.check_media:
        _check_media(items_df, media_columns, catalogue.file, rep)
    return media_columns


def _split(
    split: str,
    u: np.ndarray,
    i: np.ndarray,
    ts: np.ndarray | None,
    lab: np.ndarray | None,
    n_items: int,
    opt: BuildOptions,
) -> tuple[np.ndarray, np.ndarray | None, str]:
    r = S.check_ratios(opt.ratios)
    ratio_name = ":".join(f"{x * 10:g}" for x in r)

    def need_ts(what: str) -> np.ndarray:
        if ts is None:
            raise ConfigError(f"split={what!r} needs timestamps, and this data set has no timestamp column")
        return ts

    if split in ("random", "ratio"):
        return S.random_split(u, r, seed=opt.seed), None, f"random per-user {ratio_name}, seed {opt.seed}"
    if split == "temporal":
        return S.temporal_split(u, need_ts(split), r), None, f"temporal per-user {ratio_name}"
    if split == "global_temporal":
        return S.global_temporal_split(need_ts(split), r), None, f"global temporal {ratio_name}"
    if split in ("leave_one_out", "loo"):
        how = "by time" if ts is not None else f"random, seed {opt.seed}"
        return S.leave_one_out_split(u, ts, seed=opt.seed), None, f"leave-one-out ({how})"
    if split == "fixed":
        if lab is None:
            raise ConfigError(
                "split='fixed' needs a split label column (e.g. x_label), and this data set has none"
            )
        return S.fixed_split(lab), None, "fixed (x_label)"
    if split == "cold_start":
        if lab is not None:
            base, base_name = S.fixed_split(lab), "fixed (x_label)"
        else:
            base, base_name = S.random_split(u, r, seed=opt.seed), f"random per-user {ratio_name}"
        valid_fraction = r[1] / (r[1] + r[2]) if r[1] + r[2] > 0 else 0.5
        labels, cold = S.cold_start_split(
            i, base, cold_share=opt.cold_share, seed=opt.seed, valid_fraction=valid_fraction
        )
        name = f"cold_start {opt.cold_share:.0%} items, seed {opt.seed} (base: {base_name})"
        return labels, cold.astype(np.int64), name
    raise ConfigError(f"unknown split {split!r}; expected one of {', '.join(S.SPLITS)}")


def _item_table(item_ids: np.ndarray, cat_frame: pl.DataFrame | None) -> pl.DataFrame:
    ids = pl.DataFrame({"item_id": pl.Series("item_id", item_ids.tolist(), dtype=pl.Utf8)})
    if cat_frame is None:
        return ids
    out = ids.join(cat_frame, on="item_id", how="left", maintain_order="left")
    return out


def _check_text(items: pl.DataFrame, fields: list[str], file: str, rep: ValidationReport) -> None:
    for col in fields:
        s = items[col].cast(pl.Utf8)
        empty = (s.is_null() | (s.str.strip_chars().str.len_bytes() == 0)).arg_true().to_list()
        if empty:
            rep.add(
                f"item without {col}",
                file,
                count=len(empty),
                severity="info",
                examples=_examples([items["item_id"][k] for k in empty]),
            )


def _check_media(items: pl.DataFrame, media: dict[str, str], file: str, rep: ValidationReport) -> None:
    for modality, col in media.items():
        refs = items[col].to_list()
        empty = [k for k, r in enumerate(refs) if not r]
        if empty:
            rep.add(
                f"item without {modality}",
                file,
                count=len(empty),
                severity="info",
                examples=_examples([items["item_id"][k] for k in empty]),
            )
        remote = [k for k, r in enumerate(refs) if r and is_remote(r)]
        if remote:
            rep.add(
                f"{modality} given as URL (not checked, not downloadable offline)",
                file,
                count=len(remote),
                severity="info",
                examples=_examples([refs[k] for k in remote]),
            )
        missing = [k for k, r in enumerate(refs) if r and not is_remote(r) and not media_exists(r)]
        if missing:
            rep.add(
                f"{modality} file not found",
                file,
                count=len(missing),
                examples=[f"item {items['item_id'][k]}: {refs[k]}" for k in missing[:MAX_EXAMPLES]],
            )


def _features(
    features: list[FeatureInput], item_ids: np.ndarray, n_all_items: int, rep: ValidationReport
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Reorder feature rows to the item index; ``n_all_items`` is the item count before k-core."""
    feats: dict[str, np.ndarray] = {}
    masks: dict[str, np.ndarray] = {}
    for f in features:
        rows = _feature_rows(f, item_ids, n_all_items)
        out, mask = _clean_feature_rows(f, rows, item_ids, rep)
        rep.stat(
            f.file,
            rows=int(f.array.shape[0]),
            dim=int(f.array.shape[1]),
            dtype=f.source_dtype or str(f.array.dtype),
            present=int(mask.sum()),
        )
        feats[f.modality] = out
        masks[f.modality] = np.asarray(mask, dtype=bool)
    return feats, masks


def _feature_rows(f: FeatureInput, item_ids: np.ndarray, n_all_items: int) -> np.ndarray:
    """For each item index, its row in the feature file (every item must have one)."""
    arr = f.array
    if arr.shape[0] != n_all_items:
        raise DataError(
            f"{f.modality} feature file has {arr.shape[0]} rows but the data set has {n_all_items} items "
            "(one row per item is required; row r belongs to item id r, or to the r-th catalogue row)",
            file=f.file,
        )
    if arr.shape[0] != len(f.row_ids):  # pragma: no cover - loaders build row_ids from the array
        raise DataError(f"{arr.shape[0]} rows but {len(f.row_ids)} row ids", file=f.file)
    row_ids = f.row_ids.astype(str)
    if len(row_ids) == len(item_ids) and np.array_equal(row_ids, item_ids.astype(str)):
        rows = np.arange(len(item_ids), dtype=np.int64)
    else:
        lookup = dict(zip(row_ids.tolist(), range(len(row_ids)), strict=True))
        rows = np.fromiter((lookup.get(str(x), -1) for x in item_ids), dtype=np.int64, count=len(item_ids))
    if (rows < 0).any():
        missing = item_ids[rows < 0]
        raise DataError(
            f"{len(missing)} item(s) have no row in the feature file, e.g. item {missing[0]!r} "
            f"(the file has {arr.shape[0]} rows; row r belongs to item id {f.row_ids[0]!r}.. by the loader's convention)",
            file=f.file,
        )
    return rows


def _clean_feature_rows(
    f: FeatureInput, rows: np.ndarray, item_ids: np.ndarray, rep: ValidationReport
) -> tuple[np.ndarray, np.ndarray]:
    """float32 rows in item order with NaN/inf rows zeroed, and the mask of present rows (reported)."""
    out = np.ascontiguousarray(f.array[rows], dtype=np.float32)
    finite = np.isfinite(out).all(axis=1)
    mask = finite.copy()
    if (~finite).any():
        bad = np.flatnonzero(~finite)
        rep.add(
            f"{f.modality} feature row with NaN/inf (zeroed, marked missing in feature_masks)",
            f.file,
            count=len(bad),
            examples=[f"row {rows[b]} (item {item_ids[b]})" for b in bad[:MAX_EXAMPLES]],
        )
        out[bad] = 0.0
    zero = finite & ~out.any(axis=1)
    if zero.any():
        z = np.flatnonzero(zero)
        rep.add(
            f"{f.modality} feature row is all zeros (kept as present)",
            f.file,
            count=len(z),
            severity="info",
            examples=[f"row {rows[b]} (item {item_ids[b]})" for b in z[:MAX_EXAMPLES]],
        )
    return out, np.asarray(mask, dtype=bool)


def options_from(
    kwargs: dict[str, Any], allowed_extra: tuple[str, ...] = (), context: str = ""
) -> tuple[BuildOptions, dict[str, Any]]:
    """Split keyword options into :class:`BuildOptions` and loader-specific ones; unknown -> ConfigError."""
    build = {k: v for k, v in kwargs.items() if k in BUILD_OPTION_NAMES}
    rest = {k: v for k, v in kwargs.items() if k not in BUILD_OPTION_NAMES}
    unknown = sorted(set(rest) - set(allowed_extra))
    if unknown:
        raise ConfigError(
            f"option(s) {unknown} not understood here{f' ({context})' if context else ''}; "
            f"expected some of {sorted(BUILD_OPTION_NAMES + tuple(allowed_extra))}"
        )
    if "ratios" in build:
        build["ratios"] = S.check_ratios(build["ratios"])
    if build.get("kcore") is not None and not isinstance(build["kcore"], int):
        build["kcore"] = tuple(int(x) for x in build["kcore"])
    return BuildOptions(**build), rest

"""``modalrec.data.load`` / ``validate``: built-in data sets, folders, files and TOML descriptions.

Why one entry point: the CLI (``modalrec validate DATA``, ``modalrec fit --data DATA``), the
benchmarks and the Python API all name data the same way, either a built-in name (``ml100k``,
``tiktok``, ``baby``), or a path to a file, an MMRec folder, or a TOML description.

A TOML description of a custom data set (paths relative to the TOML file)::

    name = "shop"
    interactions = "clicks.csv"          # or {path = "...", format = "tsv", encoding = "latin-1"}
    items = "catalogue.jsonl"            # optional, same form
    [columns]                            # ColumnMap fields; unnamed ones are auto-detected
    user = "customer"
    item = "sku"
    text = ["title", "description"]
    image = "image_path"
    [features]                           # row r = r-th catalogue row (or item id r without items)
    image = "clip_image.npy"
    [options]                            # any load() option
    split = "temporal"
    kcore = 5
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from modalrec.core.errors import ConfigError, DataError
from modalrec.data.build import BuildOptions, FeatureInput, build_dataset, options_from
from modalrec.data.columns import ColumnMap
from modalrec.data.dataset import Dataset
from modalrec.data.media import zip_members, zip_uri
from modalrec.data.mmrec import feature_modality, load_feature_file, npy_dtype, read_mmrec_folder
from modalrec.data.readers import Table, read_table
from modalrec.data.report import MAX_EXAMPLES, ValidationReport
from modalrec.data.tables import Catalogue, catalogue_from_table, read_interactions, read_items

# name -> folder under the data root
BUILTIN = {"ml100k": "ml100k_tmdb_posters", "tiktok": "tiktok_diffmm", "baby": "amazon_baby_mmrec"}
ENV_ROOT = "MODALREC_DATA"

# options understood by the file / TOML loader in addition to BuildOptions
FILE_OPTIONS = (
    "columns",
    "items",
    "features",
    "name",
    "format",
    "separator",
    "has_header",
    "names",
    "encoding",
    "quote_char",
    "items_format",
    "items_separator",
    "items_encoding",
    "items_has_header",
    "items_names",
    "items_quote_char",
)


def default_root() -> Path | None:
    """``$MODALREC_DATA``, else ``<repo>/../shared/data`` when it exists (source checkouts)."""
    env = os.environ.get(ENV_ROOT)
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[3]
    cand = repo.parent / "shared" / "data"
    return cand if cand.is_dir() else None


def _builtin_folder(name: str, root: str | Path | None) -> Path:
    base = Path(root) if root is not None else default_root()
    if base is None:
        raise DataError(
            f"data set {name!r} needs a data root: pass root=..., or set {ENV_ROOT}=/path/to/data "
            f"(the folder that holds {BUILTIN[name]}/)"
        )
    folder = base / BUILTIN[name]
    if not folder.is_dir():
        raise DataError(
            f"data set {name!r} not found: expected a folder {BUILTIN[name]}/ under the data root",
            file=folder,
        )
    return folder


def load(
    name_or_path: str | Path,
    root: str | Path | None = None,
    *,
    split: str | None = None,
    seed: int = 2024,
    **options: Any,
) -> Dataset:
    """Load a data set into a :class:`Dataset` (with its :class:`ValidationReport` in ``.report``).

    Args:
        name_or_path: a built-in name, or a path:

            - ``"ml100k"``: MovieLens-100K + TMDB text + posters (``ml100k_tmdb_posters/``).
              Interactions: all 100,000 ratings of ``u.data.gz`` as implicit feedback (pass
              ``min_rating=4`` to keep only high ratings), with timestamps. Items: ``items_text.csv``
              (UTF-8) with text fields ``title, genres, overview`` and an ``image`` column
              ``zip://<abs path>/posters.zip#posters/<movie_id>.jpg`` (empty for the 19 movies
              without a poster; see :mod:`modalrec.data.media` to read them). Default split:
              per-user random 8:1:1, seed 2024.
            - ``"tiktok"``: TikTok (DiffMM/MMSSL), fixed ``x_label`` split, features ``image`` and
              ``audio`` (128-d, float16 on disk -> float32).
            - ``"baby"``: Amazon Baby (MMRec ids), fixed ``x_label`` split (random per-user 8:1:1,
              seed 42, made upstream); items carry ``asin`` and ``image_url`` (remote URLs, not a
              media column: there are no image files).
            - a ``.toml`` file describing a custom data set (format in the docstring of
              :mod:`modalrec.data.registry`), or a folder holding ``dataset.toml``;
            - an MMRec folder (``<name>.inter`` + ``*_feat.npy`` [+ ``i_id_mapping.csv``]);
            - an interaction file (``.csv``, ``.tsv``, ``.jsonl``, ``.parquet``, ``.gz`` of text
              formats), with ``items=`` a catalogue file and ``features={"image": "x.npy"}``.
        root: folder that holds the built-in data folders (default ``$MODALREC_DATA``, else
            ``<repo>/../shared/data``).
        split: ``random`` (per-user ratio), ``temporal`` (per-user), ``global_temporal``,
            ``leave_one_out``, ``fixed`` (label column) or ``cold_start``. Default: ``fixed`` when
            the data has a split label column, else ``random``.
        seed: seed of random splits and of the cold-item draw.
        **options: ``ratios=(0.8, 0.1, 0.1)``, ``cold_share=0.1``, ``min_rating``, ``kcore``
            (int or (users, items)), ``strict`` (unknown items raise instead of being dropped),
            ``check_media`` (check that media files exist; default True); for files also
            ``columns`` (:class:`ColumnMap` or dict), ``items``, ``features``, ``name``,
            ``format``, ``separator``, ``has_header``, ``names``, ``encoding`` (e.g.
            ``"latin-1"``), ``quote_char``, and the same for the item file as ``items_format``,
            ``items_separator``, ``items_encoding``, ``items_has_header``, ``items_names``,
            ``items_quote_char``. Unknown options raise :class:`~modalrec.core.errors.ConfigError`.

    Cold-start protocol (``split="cold_start"``, ``cold_share=0.1``): the base split is made first
    (per-user random with ``ratios`` and ``seed``, or the fixed labels); then ``round(cold_share *
    n)`` of the ``n`` items with interactions are drawn with ``seed``; their training interactions
    are moved to valid or test (in the ratio of the valid and test shares, seeded) so the cold items
    have no training interaction at all, and appear in valid and test only. ``Dataset.cold_items``
    holds their indices; evaluate with ``evaluate(..., candidate_items=dataset.cold_items)``,
    which ranks the cold items only (validation for model selection, test for the final number;
    the test ranking masks the user's cold-item validation interactions). Warm items' valid/test
    interactions are unchanged, so the warm protocol can run on the same object.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> rows = ["user,item,rating"] + [f"u{u},i{i},{1 + (u + i) % 5}" for u in range(4) for i in range(10)]
    >>> _ = (d / "r.csv").write_text("\\n".join(rows) + "\\n")
    >>> ds = load(d / "r.csv", seed=1)
    >>> ds.n_users, ds.n_items, ds.train.nnz, ds.valid.nnz, ds.test.nnz
    (4, 10, 32, 4, 4)
    >>> ds.item_ids[:3].tolist()
    ['i0', 'i1', 'i2']
    """
    opts: dict[str, Any] = {**options, **({"split": split} if split is not None else {}), "seed": seed}
    key = str(name_or_path)
    if isinstance(name_or_path, str) and key.lower() in BUILTIN and "/" not in key:
        folder = _builtin_folder(key.lower(), root)
        return _LOADERS[key.lower()](folder, opts)
    path = _existing_path(name_or_path, root)
    if path.is_dir():
        return _load_folder(path, opts)
    if path.suffix.lower() == ".toml":
        return _load_toml(path, opts)
    return _load_files(path, opts)


def _existing_path(name_or_path: str | Path, root: str | Path | None) -> Path:
    """The path as given, else under ``root`` when relative; it must exist."""
    path = Path(name_or_path)
    if not path.is_absolute() and root is not None and not path.exists():
        path = Path(root) / path
    if not path.exists():
        hint = f"; built-in data sets are {', '.join(BUILTIN)}"
        raise DataError(f"no such file or folder{hint}", file=path)
    return path


def _load_folder(path: Path, opts: dict[str, Any]) -> Dataset:
    """A folder: its TOML description, else the layout it has (ML-100K, Amazon Baby, MMRec)."""
    for fname in ("dataset.toml", "modalrec.toml"):
        if (path / fname).is_file():
            return _load_toml(path / fname, opts)
    if (path / "u.data.gz").is_file() and (path / "items_text.csv").is_file():
        return _load_ml100k(path, opts)
    if (path / "baby_url.csv").is_file() and (path / "i_id_mapping.csv").is_file():
        return _load_baby(path, opts)
    if any(path.glob("*.inter")):
        return _load_mmrec(path, opts)
    raise DataError(
        "folder has no dataset.toml and no *.inter file; pass an interaction file instead", file=path
    )


def validate(name_or_path: str | Path, root: str | Path | None = None, **options: Any) -> ValidationReport:
    """Load everything and return the validation report (structural errors raise :class:`DataError`).

    The report's stats hold rows read/kept per file, the final users/items/interactions
    (``stats["dataset"]``) and the split sizes (``stats["split"]``).

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "r.csv").write_text("user,item\\n1,a\\n1,a\\n2,b\\n")
    >>> rep = validate(d / "r.csv")
    >>> rep.ok, rep.dropped_rows, rep.stats["dataset"]
    (False, 1, {'users': 2, 'items': 2, 'interactions': 2})
    """
    return load(name_or_path, root, **options).report


# ---------------------------------------------------------------------------------------- built-ins
def _build_opts(
    opts: dict[str, Any], extra: tuple[str, ...] = (), context: str = "built-in data set"
) -> tuple[BuildOptions, dict[str, Any]]:
    return options_from(opts, extra, context)


def _load_ml100k(folder: Path, opts: dict[str, Any]) -> Dataset:
    bo, _ = _build_opts(opts)
    rep = ValidationReport()
    inter = read_interactions(
        folder / "u.data.gz",
        ColumnMap(user="user", item="item", rating="rating", timestamp="timestamp", auto=False),
        format="tsv",
        has_header=False,
        names=["user", "item", "rating", "timestamp"],
    )
    catalogue = _ml100k_catalogue(folder, rep)
    return build_dataset("ml100k", inter, catalogue, [], bo, report=rep, default_split="random")


def _ml100k_catalogue(folder: Path, rep: ValidationReport) -> Catalogue:
    """``items_text.csv`` with a ``zip://`` image reference for every movie that has a poster."""
    t = read_table(folder / "items_text.csv", format="csv")
    zpath = folder / "posters.zip"
    members = zip_members(str(zpath)) if zpath.is_file() else frozenset()
    if not zpath.is_file():
        rep.add("posters.zip not found (no images)", str(zpath), count=1)
    ids = t.df["movie_id"].str.strip_chars().to_list()
    image = [zip_uri(zpath, f"posters/{i}.jpg") if f"posters/{i}.jpg" in members else None for i in ids]
    df = t.df.with_columns(
        pl.Series("image", image, dtype=pl.Utf8),
        pl.col("year").cast(pl.Int32, strict=False),
        pl.col("tmdb_id").cast(pl.Int64, strict=False),
        (pl.col("has_poster").str.strip_chars() == "1").alias("has_poster"),
        (pl.col("tmdb_match_suspect").str.strip_chars() == "1").alias("tmdb_match_suspect"),
    )
    _report_ml100k_items(df, t, ids, image, members, rep)
    catalogue = catalogue_from_table(
        Table(df, t.lines, t.file),
        ColumnMap(item_id="movie_id", text=("title", "genres", "overview"), image="image", auto=False),
    )
    if zpath.is_file():
        rep.stat(str(zpath), images=len([m for m in members if m.endswith(".jpg")]))
    return catalogue


def _report_ml100k_items(
    df: pl.DataFrame,
    t: Table,
    ids: list[str],
    image: list[str | None],
    members: frozenset[str],
    rep: ValidationReport,
) -> None:
    """Movies whose ``has_poster`` disagrees with the zip, and TMDB matches flagged as suspect."""
    if members:
        stated = df["has_poster"].to_numpy()
        actual = np.array([x is not None for x in image])
        bad = np.flatnonzero(stated != actual)
        if len(bad):
            rep.add(
                "has_poster disagrees with posters.zip (the zip is used)",
                t.file,
                count=len(bad),
                examples=[f"{t.where(int(r))} movie {ids[r]}" for r in bad[:MAX_EXAMPLES]],
            )
    suspect = df["tmdb_match_suspect"].arg_true().to_list()
    if suspect:
        rep.add(
            "TMDB text/poster may belong to another movie (tmdb_match_suspect=1)",
            t.file,
            count=len(suspect),
            severity="info",
            examples=[f"movie {ids[r]}" for r in suspect[:MAX_EXAMPLES]],
        )


def _load_mmrec(
    folder: Path, opts: dict[str, Any], *, name: str | None = None, inter: str | None = None
) -> Dataset:
    bo, rest = _build_opts(opts, ("encoding", "inter", "name"), "MMRec folder")
    inter_arg = rest.get("inter", inter)
    interactions, catalogue, feats, all_items = read_mmrec_folder(
        folder, inter=inter_arg, encoding=rest.get("encoding", "utf-8")
    )
    ds_name = rest.get("name") or name or Path(interactions.file).stem
    return build_dataset(
        ds_name,
        interactions,
        catalogue,
        feats,
        bo,
        default_split="fixed" if interactions.has_label else "random",
        all_items=all_items,
    )


def _load_tiktok(folder: Path, opts: dict[str, Any]) -> Dataset:
    return _load_mmrec(folder, opts, name="tiktok", inter="tiktok.inter")


def _load_baby(folder: Path, opts: dict[str, Any]) -> Dataset:
    bo, _ = _build_opts(opts)
    rep = ValidationReport()
    interactions, catalogue, feats, _ = read_mmrec_folder(folder, inter="baby_randsplit.inter")
    assert catalogue is not None
    urls = read_table(folder / "baby_url.csv", format="csv")
    u = urls.df.select(
        pl.col("itemID").str.strip_chars().alias("item_id"),
        pl.col("asin").str.strip_chars().alias("asin_url"),
        pl.col("imUrl").str.strip_chars().replace("", None).alias("image_url"),
        pl.Series("url_line", urls.lines),
    )
    joined = catalogue.frame.join(u, on="item_id", how="left", maintain_order="left")
    missing = joined.filter(pl.col("url_line").is_null())
    if missing.height:
        rep.add(
            "item missing from baby_url.csv",
            urls.file,
            count=missing.height,
            severity="info",
            examples=missing["item_id"].head(MAX_EXAMPLES).to_list(),
        )
    clash = joined.filter(pl.col("url_line").is_not_null() & (pl.col("asin") != pl.col("asin_url")))
    if clash.height:
        rep.add(
            "ASIN differs between i_id_mapping.csv and baby_url.csv",
            urls.file,
            count=clash.height,
            examples=[
                f"{urls.file}:{r['url_line']} item {r['item_id']}: {r['asin']} vs {r['asin_url']}"
                for r in clash.head(MAX_EXAMPLES).iter_rows(named=True)
            ],
        )
    no_url = joined.filter(pl.col("image_url").is_null())
    if no_url.height:
        rep.add(
            "item without image URL",
            urls.file,
            count=no_url.height,
            severity="info",
            examples=no_url["item_id"].head(MAX_EXAMPLES).to_list(),
        )
    rep.stat(urls.file, rows_read=urls.df.height)
    cat = Catalogue(
        joined.drop("asin_url", "url_line"), catalogue.file, [], {}, catalogue.lines, catalogue.unit
    )
    return build_dataset("baby", interactions, cat, feats, bo, report=rep, default_split="fixed")


_LOADERS = {"ml100k": _load_ml100k, "tiktok": _load_tiktok, "baby": _load_baby}


# ---------------------------------------------------------------------------------------- files and TOML
def _read_spec(value: Any, base: Path, what: str, toml_file: Path) -> tuple[Path, dict[str, Any]]:
    if isinstance(value, str):
        return base / value, {}
    if isinstance(value, dict) and "path" in value:
        spec = dict(value)
        allowed = {"path", "format", "separator", "has_header", "names", "encoding", "quote_char"}
        unknown = sorted(set(spec) - allowed)
        if unknown:
            raise ConfigError(
                f"{toml_file}: unknown keys {unknown} in [{what}]; expected some of {sorted(allowed)}"
            )
        return base / spec.pop("path"), spec
    raise ConfigError(f"{toml_file}: {what} must be a path or a table with a 'path' key")


def _load_toml(path: Path, opts: dict[str, Any]) -> Dataset:
    try:
        spec = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid UTF-8") from None
    allowed = {"name", "interactions", "items", "columns", "features", "options"}
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ConfigError(f"{path}: unknown keys {unknown}; expected some of {sorted(allowed)}")
    if "interactions" not in spec:
        raise ConfigError(f"{path}: missing 'interactions = \"<file>\"'")
    base = path.parent
    inter_path, inter_read = _read_spec(spec["interactions"], base, "interactions", path)
    merged: dict[str, Any] = dict(spec.get("options", {}))
    merged.update(
        {
            k: v
            for k, v in opts.items()
            if not (k == "seed" and "seed" in spec.get("options", {}) and v == 2024)
        }
    )
    merged.setdefault(
        "name", spec.get("name", path.parent.name if path.name == "dataset.toml" else path.stem)
    )
    if "columns" in spec:
        merged.setdefault("columns", spec["columns"])
    if "features" in spec:
        feats = spec["features"]
        if not isinstance(feats, dict):
            raise ConfigError(f"{path}: [features] must map modality names to .npy files")
        merged.setdefault("features", {m: str(base / p) for m, p in feats.items()})
    for k, v in inter_read.items():
        merged.setdefault(k, v)
    if "items" in spec:
        items_path, items_read = _read_spec(spec["items"], base, "items", path)
        merged.setdefault("items", str(items_path))
        for k, v in items_read.items():
            merged.setdefault(f"items_{k}", v)
    return _load_files(inter_path, merged)


def _load_files(path: Path, opts: dict[str, Any]) -> Dataset:
    bo, rest = _build_opts(opts, FILE_OPTIONS, "interaction file")
    cols = rest.get("columns")
    if isinstance(cols, dict):
        cols = ColumnMap.from_dict(cols)
    elif cols is not None and not isinstance(cols, ColumnMap):
        raise ConfigError("columns must be a ColumnMap or a dict of column names")
    encoding = rest.get("encoding", "utf-8")
    inter = read_interactions(
        path,
        cols,
        format=rest.get("format"),
        separator=rest.get("separator"),
        has_header=rest.get("has_header", True),
        names=rest.get("names"),
        encoding=encoding,
        quote_char=rest.get("quote_char", '"'),
    )
    catalogue = None
    if rest.get("items") is not None:
        catalogue = read_items(
            rest["items"],
            cols,
            format=rest.get("items_format"),
            separator=rest.get("items_separator"),
            has_header=rest.get("items_has_header", True),
            names=rest.get("items_names"),
            encoding=rest.get("items_encoding", encoding),
            quote_char=rest.get("items_quote_char", '"'),
        )
    feats, all_items = _feature_inputs(rest.get("features") or {}, catalogue)
    name = rest.get("name") or path.name.split(".")[0]
    return build_dataset(
        name,
        inter,
        catalogue,
        feats,
        bo,
        default_split="fixed" if inter.has_label else "random",
        all_items=all_items,
    )


def _encoded_rows(path: Path, arr: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Rows and ids of a file written by ``modalrec encode`` (``item_ids.npy`` beside it), else None.

    Why: ``modalrec encode`` writes its rows in the data set's item order (natural id order), not in
    catalogue order; reading them by position would silently give items each other's vectors. Its
    ``<modality>.mask.npy`` is honoured too: rows it marks missing become NaN, which the builder
    zeroes and marks missing (instead of treating an all-zero placeholder row as a real vector).
    """
    ids_path = path.parent / "item_ids.npy"
    if not ids_path.is_file():
        return None
    try:
        row_ids = np.load(ids_path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataError(f"not a valid item id file: {e}", file=ids_path) from None
    if row_ids.ndim != 1 or len(row_ids) != arr.shape[0]:
        raise DataError(
            f"holds {row_ids.shape} item ids but {path.name} has {arr.shape[0]} rows "
            "(a folder written by modalrec encode has one id per row)",
            file=ids_path,
        )
    mask_path = path.with_name(path.name.removesuffix(".npy") + ".mask.npy")
    if mask_path.is_file():
        mask = np.load(mask_path, allow_pickle=False).astype(bool)
        if mask.shape != (arr.shape[0],):
            raise DataError(f"mask shape {mask.shape} does not match {arr.shape[0]} rows", file=mask_path)
        arr = arr.copy()
        arr[~mask] = np.nan
    return arr, row_ids.astype(str)


def _feature_inputs(
    features: dict[str, Any], catalogue: Catalogue | None
) -> tuple[list[FeatureInput], list[str] | None]:
    """Read the ``features={modality: .npy}`` files; the item universe they define without a catalogue.

    Row r belongs to the r-th catalogue row, or, without a catalogue, to item id ``"r"`` (the MMRec
    convention; the first feature file then defines the item list). A file written by ``modalrec
    encode`` carries its own row ids (``item_ids.npy`` beside it) and those are used instead.
    """
    feats: list[FeatureInput] = []
    all_items: list[str] | None = None
    for modality, fpath in features.items():
        arr = load_feature_file(fpath)
        encoded = _encoded_rows(Path(fpath), arr)
        if encoded is not None:
            arr, row_ids = encoded
            if catalogue is None and all_items is None:
                all_items = row_ids.tolist()
        elif catalogue is not None:
            row_ids = catalogue.frame["item_id"].to_numpy().astype(str)
            if len(row_ids) != arr.shape[0]:
                raise DataError(
                    f"{modality} feature file has {arr.shape[0]} rows but the item table has {len(row_ids)} rows "
                    "(row r belongs to the r-th catalogue row)",
                    file=fpath,
                )
        else:
            row_ids = np.arange(arr.shape[0]).astype(str)
            if all_items is None:
                all_items = row_ids.tolist()
        feats.append(
            FeatureInput(
                str(modality) or feature_modality(Path(fpath)), arr, row_ids, str(fpath), npy_dtype(fpath)
            )
        )
    return feats, all_items

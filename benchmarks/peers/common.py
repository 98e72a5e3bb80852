"""Shared code for running established recommender libraries ("peers") on modalrec's exact splits.

Why this file exists: every number in a benchmark table must come from the *same* split and the *same*
metric implementation. The peers (RecBole, Cornac, implicit) pin library versions that clash with
modalrec's own environment, so each runs in its own virtual environment (see ``setup.sh``) and talks to
the benchmark through files only:

* the benchmark writes a *split directory* with :func:`write_split` (``train.tsv``, ``valid.tsv``,
  ``test.tsv``, ``meta.json``, optional ``features/<modality>.npy``);
* :func:`run_peer` starts ``run_<lib>.py`` with that library's venv interpreter; the runner trains with
  early stopping on validation Recall@20 and writes ``topk.npy``, ``test_users.npy`` and ``run.json``;
* the benchmark scores ``topk.npy`` with modalrec's own evaluator.

This module uses only the standard library and numpy, because it is imported both by modalrec's
benchmark (numpy 2) and inside every peer venv (RecBole needs numpy<2). No pickle anywhere: arrays are
``.npy`` written and read with ``allow_pickle=False``, metadata is JSON.

Example (a tiny split, written and read back):

>>> import tempfile
>>> d = tempfile.mkdtemp()
>>> tr = np.array([[0, 0], [0, 1], [1, 2]]); va = np.array([[0, 2]]); te = np.array([[1, 0]])
>>> _ = write_split(d, tr, va, te, n_users=2, n_items=3, dataset_name="toy")
>>> s = read_split(d)
>>> (s.n_users, s.n_items, s.dataset, s.train.tolist(), s.test_users().tolist())
(2, 3, 'toy', [[0, 0], [0, 1], [1, 2]], [1])
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

PEERS_DIR = Path(__file__).resolve().parent
LIBRARIES = ("recbole", "cornac", "implicit")
#: Models each runner accepts (case-insensitive on the command line).
MODELS = {
    "recbole": ("LightGCN", "BPR"),
    "cornac": ("BPR", "VBPR"),
    "implicit": ("BPR", "ALS"),
}
TOPK = 50
SPLIT_FILES = ("train.tsv", "valid.tsv", "test.tsv")


class PeerError(RuntimeError):
    """A peer run failed (missing venv, crash, timeout, malformed output); the message says which."""


# --------------------------------------------------------------------------------------------- files
def _atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary name in the same directory, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike, obj: object) -> None:
    """JSON (UTF-8, indented, keys kept in insertion order) written atomically."""
    _atomic_write_bytes(Path(path), (json.dumps(obj, indent=2, allow_nan=False) + "\n").encode("utf-8"))


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """``np.save`` to a temporary name, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp.npy", dir=path.parent)
    os.close(fd)
    try:
        np.save(tmp, np.ascontiguousarray(array), allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_npy(path: str | os.PathLike) -> np.ndarray:
    """``np.load`` that refuses pickled object arrays."""
    return np.load(path, allow_pickle=False)


def _as_pairs(pairs: np.ndarray | Iterable, name: str, n_users: int, n_items: int) -> np.ndarray:
    arr = np.asarray(pairs if isinstance(pairs, np.ndarray) else list(pairs), dtype=np.int64)
    if arr.size == 0:
        arr = arr.reshape(0, 2)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name}: expected (user, item) pairs of shape [n, 2], got {arr.shape}")
    if arr.size and (arr[:, 0].min() < 0 or arr[:, 0].max() >= n_users):
        raise ValueError(f"{name}: user index out of range [0, {n_users})")
    if arr.size and (arr[:, 1].min() < 0 or arr[:, 1].max() >= n_items):
        raise ValueError(f"{name}: item index out of range [0, {n_items})")
    return arr


def _write_tsv(path: Path, pairs: np.ndarray) -> None:
    lines = ["user\titem"]
    lines.extend(f"{u}\t{i}" for u, i in pairs.tolist())
    _atomic_write_bytes(path, ("\n".join(lines) + "\n").encode("ascii"))


def _read_tsv(path: Path) -> np.ndarray:
    with open(path, encoding="ascii") as fh:
        header = fh.readline().rstrip("\n")
        if header != "user\titem":
            raise ValueError(f"{path}: line 1: expected header 'user<TAB>item', got {header!r}")
        body = fh.read()
    if not body.strip():
        return np.zeros((0, 2), dtype=np.int64)
    arr = np.array(body.split(), dtype=np.int64)
    if arr.size % 2:
        raise ValueError(f"{path}: odd number of fields; every line must be 'user<TAB>item'")
    return arr.reshape(-1, 2)


@dataclass
class Split:
    """A split directory loaded into memory: (user, item) index pairs per part plus sizes."""

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    n_users: int
    n_items: int
    dataset: str
    path: Path
    features: dict[str, np.ndarray] = field(default_factory=dict)

    def test_users(self) -> np.ndarray:
        """Users with at least one test item, sorted: the rows of ``topk.npy``."""
        return np.unique(self.test[:, 0]).astype(np.int64)

    def csr(self, *parts: str) -> tuple[np.ndarray, np.ndarray]:
        """Per-user item lists of the union of ``parts`` as (indptr, indices), without scipy."""
        pairs = np.concatenate([getattr(self, p) for p in parts]) if parts else np.zeros((0, 2), np.int64)
        return group_by_user(pairs, self.n_users)


def write_split(
    directory: str | os.PathLike,
    train_pairs: np.ndarray | Iterable,
    valid_pairs: np.ndarray | Iterable,
    test_pairs: np.ndarray | Iterable,
    n_users: int,
    n_items: int,
    dataset_name: str,
    features: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """Write a split directory that every peer runner reads.

    ``*_pairs`` are (user, item) dense int indices (arrays of shape [n, 2] or iterables of pairs).
    ``features`` maps a modality name to a float32 [n_items, d] array, saved as ``features/<name>.npy``
    (only content models such as Cornac's VBPR use it). ``n_users``/``n_items`` are stored explicitly so
    that users or items without any interaction still exist for every library (items never seen in
    training can then still be ranked, as modalrec ranks them).
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    n_users, n_items = int(n_users), int(n_items)
    parts = {
        "train.tsv": _as_pairs(train_pairs, "train", n_users, n_items),
        "valid.tsv": _as_pairs(valid_pairs, "valid", n_users, n_items),
        "test.tsv": _as_pairs(test_pairs, "test", n_users, n_items),
    }
    for name, pairs in parts.items():
        _write_tsv(d / name, pairs)
    feat_names = []
    for name, arr in (features or {}).items():
        a = np.asarray(arr, dtype=np.float32)
        if a.ndim != 2 or a.shape[0] != n_items:
            raise ValueError(f"features[{name!r}]: expected shape [{n_items}, d], got {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError(f"features[{name!r}]: contains NaN or inf")
        atomic_save_npy(d / "features" / f"{name}.npy", a)
        feat_names.append(name)
    meta = {
        "n_users": n_users,
        "n_items": n_items,
        "dataset": str(dataset_name),
        "counts": {k.removesuffix(".tsv"): len(v) for k, v in parts.items()},
        "features": feat_names,
    }
    atomic_write_json(d / "meta.json", meta)
    return d


def read_split(directory: str | os.PathLike, load_features: bool = True) -> Split:
    """Load a split directory written by :func:`write_split` (checks indices against ``meta.json``)."""
    d = Path(directory)
    meta_path = d / "meta.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path}: not a split directory (meta.json missing)")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    n_users, n_items = int(meta["n_users"]), int(meta["n_items"])
    parts = {}
    for name in SPLIT_FILES:
        parts[name.removesuffix(".tsv")] = _as_pairs(_read_tsv(d / name), str(d / name), n_users, n_items)
    features: dict[str, np.ndarray] = {}
    if load_features and (d / "features").is_dir():
        for f in sorted((d / "features").glob("*.npy")):
            arr = load_npy(f)
            if arr.ndim != 2 or arr.shape[0] != n_items:
                raise ValueError(f"{f}: expected shape [{n_items}, d], got {arr.shape}")
            features[f.stem] = arr.astype(np.float32, copy=False)
    return Split(
        train=parts["train"],
        valid=parts["valid"],
        test=parts["test"],
        n_users=n_users,
        n_items=n_items,
        dataset=str(meta.get("dataset", d.name)),
        path=d,
        features=features,
    )


# ------------------------------------------------------------------------------------ ranking helpers
def group_by_user(pairs: np.ndarray, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """(indptr, indices) of each user's items, i.e. a CSR matrix without needing scipy.

    >>> ptr, idx = group_by_user(np.array([[1, 5], [0, 2], [1, 3]]), 3)
    >>> ptr.tolist(), idx.tolist()
    ([0, 1, 3, 3], [2, 3, 5])
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    users, items = pairs[order, 0], pairs[order, 1]
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(users, minlength=n_users), out=indptr[1:])
    return indptr, items


def _gather(indptr: np.ndarray, indices: np.ndarray, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row positions (0..len(users)-1) and item indices of the CSR rows ``users``."""
    starts, ends = indptr[users], indptr[users + 1]
    counts = ends - starts
    rows = np.repeat(np.arange(len(users)), counts)
    offs = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    return rows, indices[np.repeat(starts, counts) + offs]


def full_rank_topk(
    score_fn: Callable[[np.ndarray], np.ndarray],
    users: np.ndarray,
    exclude: tuple[np.ndarray, np.ndarray],
    k: int = TOPK,
    chunk: int = 2048,
) -> np.ndarray:
    """Top-``k`` item indices per user over ALL items, with the ``exclude`` CSR items masked.

    ``score_fn(user_chunk)`` returns float scores of shape [len(user_chunk), n_items] in *our* item
    order. Ties are broken by the lower item index (stable sort), so results are deterministic.

    >>> s = np.array([[0.1, 0.9, 0.5, 0.5], [0.3, 0.2, 0.1, 0.0]])
    >>> ex = group_by_user(np.array([[0, 1]]), 2)
    >>> full_rank_topk(lambda u: s[u], np.array([0, 1]), ex, k=2).tolist()
    [[2, 3], [0, 1]]
    """
    users = np.asarray(users, dtype=np.int64)
    out = []
    for start in range(0, len(users), chunk):
        u = users[start : start + chunk]
        # the scorer's own float type (float32 factors stay float32: the same values, half the memory
        # traffic); the k best are the last k after partitioning, so no negated copy is made
        scores = np.array(score_fn(u), copy=True)
        if scores.dtype.kind != "f":
            scores = scores.astype(np.float64)
        if scores.shape[0] != len(u):
            raise ValueError(f"score_fn returned {scores.shape[0]} rows for {len(u)} users")
        rows, cols = _gather(exclude[0], exclude[1], u)
        scores[rows, cols] = -np.inf
        n = scores.shape[1]
        kk = min(k, n)
        part = np.argpartition(scores, n - kk, axis=1)[:, n - kk :]
        # order the k candidates by score, breaking ties by item index
        psc = np.take_along_axis(scores, part, axis=1)
        order = np.lexsort((part, -psc), axis=1)
        out.append(np.take_along_axis(part, order, axis=1))
    if not out:
        return np.zeros((0, k), dtype=np.int64)
    return np.concatenate(out).astype(np.int64)


def recall_at_k(
    topk: np.ndarray, users: np.ndarray, truth: tuple[np.ndarray, np.ndarray], k: int = 20
) -> float:
    """Mean over ``users`` of hits@k / #truth items (RecBole's and the usual definition).

    Used only for early stopping inside the runners; the benchmark's reported metrics come from
    modalrec's evaluator applied to ``topk.npy``.

    >>> truth = group_by_user(np.array([[0, 2], [0, 3], [1, 0]]), 2)
    >>> recall_at_k(np.array([[2, 1], [1, 2]]), np.array([0, 1]), truth, k=2)
    0.25
    """
    users = np.asarray(users, dtype=np.int64)
    if len(users) == 0:
        return 0.0
    rows, items = _gather(truth[0], truth[1], users)
    n_truth = np.bincount(rows, minlength=len(users))
    top = np.asarray(topk)[:, :k]
    hit_mask = (top[rows] == items[:, None]).any(axis=1)
    hits = np.bincount(rows, weights=hit_mask.astype(np.float64), minlength=len(users))
    return float(np.mean(hits / np.maximum(n_truth, 1)))


class ValidTracker:
    """Early stopping on validation Recall@20 for libraries without a validation loop of their own.

    ``evaluate(score_fn, epoch)`` ranks all items for every user with a validation item (training items
    masked), returns the recall and whether it improved; ``should_stop`` becomes true after
    ``patience`` evaluations without improvement.
    """

    def __init__(self, split: Split, patience: int = 10, k: int = 20) -> None:
        self.users = np.unique(split.valid[:, 0]).astype(np.int64)
        self.exclude = split.csr("train")
        self.truth = split.csr("valid")
        self.patience = int(patience)
        self.k = k
        self.best = -np.inf
        self.best_epoch = 0
        self.bad = 0
        self.history: list[list[float]] = []

    def evaluate(self, score_fn: Callable[[np.ndarray], np.ndarray], epoch: int) -> tuple[float, bool]:
        top = full_rank_topk(score_fn, self.users, self.exclude, k=self.k)
        rec = recall_at_k(top, self.users, self.truth, k=self.k)
        self.history.append([int(epoch), rec])
        improved = rec > self.best
        if improved:
            self.best, self.best_epoch, self.bad = rec, int(epoch), 0
        else:
            self.bad += 1
        return rec, improved

    @property
    def should_stop(self) -> bool:
        return self.bad >= self.patience


# ----------------------------------------------------------------------------------- runner plumbing
def base_argparser(lib: str):
    """The command line every ``run_<lib>.py`` shares (library-specific extras via ``--param k=v``)."""
    import argparse

    p = argparse.ArgumentParser(
        prog=f"run_{lib}.py",
        description=f"Train a {lib} model on a modalrec split directory; write topk.npy, test_users.npy, run.json.",
    )
    p.add_argument("--split", required=True, help="split directory written by common.write_split")
    p.add_argument("--model", required=True, help=f"one of {', '.join(MODELS[lib])}")
    p.add_argument("--out", required=True, help="output directory (created)")
    p.add_argument("--dim", type=int, default=64, help="embedding size / number of factors")
    p.add_argument(
        "--batch-size", type=int, default=2048, help="training batch size (where the model has one)"
    )
    p.add_argument(
        "--epochs", type=int, default=None, help="maximum number of epochs (library default if unset)"
    )
    p.add_argument("--lr", type=float, default=None, help="learning rate (library default if unset)")
    p.add_argument(
        "--reg", type=float, default=None, help="L2 regularisation weight (library default if unset)"
    )
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--eval-every", type=int, default=1, help="epochs between validation evaluations")
    p.add_argument("--patience", type=int, default=10, help="evaluations without improvement before stopping")
    p.add_argument(
        "--threads", type=int, default=None, help="CPU threads for training (library default if unset)"
    )
    p.add_argument("--k", type=int, default=TOPK, help="length of each top-k list")
    p.add_argument(
        "--time-budget",
        type=float,
        default=None,
        help="stop training (gracefully, keeping the best validated state) once training+validation "
        "have taken this many seconds; run.json then says stopped_by=time_budget",
    )
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra library parameter (VALUE parsed as JSON when possible), repeatable",
    )
    return p


def parse_params(items: list[str]) -> dict[str, object]:
    """``["n_layers=3", "name=x"]`` -> ``{"n_layers": 3, "name": "x"}`` (JSON values when they parse).

    >>> parse_params(["n_layers=3", "alpha=1e-4", "x=abc", "l=[1, 2]"])
    {'n_layers': 3, 'alpha': 0.0001, 'x': 'abc', 'l': [1, 2]}
    """
    out: dict[str, object] = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"--param expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def write_outputs(out_dir: str | os.PathLike, topk: np.ndarray, test_users: np.ndarray, run: dict) -> None:
    """Write the three result files of a runner (run.json last, so its presence means success)."""
    out = Path(out_dir)
    topk = np.asarray(topk, dtype=np.int64)
    test_users = np.asarray(test_users, dtype=np.int64)
    if topk.ndim != 2 or topk.shape[0] != len(test_users):
        raise ValueError(f"topk has shape {topk.shape}, expected [{len(test_users)}, k]")
    atomic_save_npy(out / "topk.npy", topk)
    atomic_save_npy(out / "test_users.npy", test_users)
    atomic_write_json(out / "run.json", run)


def epoch_summary(epoch_seconds: list[float]) -> dict[str, float | None]:
    """Mean and median per-epoch training time (the median resists a slow first epoch)."""
    if not epoch_seconds:
        return {"mean_epoch_train_seconds": None, "median_epoch_train_seconds": None}
    return {
        "mean_epoch_train_seconds": float(np.mean(epoch_seconds)),
        "median_epoch_train_seconds": float(np.median(epoch_seconds)),
    }


# ------------------------------------------------------------------------------------ benchmark side
def peers_root() -> Path:
    """Where ``setup.sh`` puts the venvs: ``$MODALREC_PEERS`` or ``~/.cache/modalrec-peers``."""
    return Path(os.environ.get("MODALREC_PEERS") or Path.home() / ".cache" / "modalrec-peers")


def venv_python(lib: str) -> Path:
    """The interpreter of ``lib``'s venv; raises :class:`PeerError` with the setup command if missing."""
    if lib not in LIBRARIES:
        raise PeerError(f"unknown peer library {lib!r}; expected one of {', '.join(LIBRARIES)}")
    py = peers_root() / lib / "bin" / "python"
    if not py.exists():
        raise PeerError(
            f"no {lib} venv at {py.parent.parent}; create it with: bash {PEERS_DIR / 'setup.sh'} {lib}"
        )
    return py


def peer_available(lib: str) -> bool:
    """True when ``lib``'s venv exists (a benchmark can then skip missing peers gracefully)."""
    try:
        venv_python(lib)
    except PeerError:
        return False
    return True


def run_peer(
    lib: str,
    split_dir: str | os.PathLike,
    model: str,
    out_dir: str | os.PathLike,
    *,
    timeout: float | None = None,
    echo: bool = False,
    **hparams: object,
) -> dict:
    """Train ``model`` of peer library ``lib`` on a split directory in its own venv; return its results.

    ``hparams`` become command-line options of ``run_<lib>.py`` (``batch_size=2048`` -> ``--batch-size
    2048``; ``param={"n_layers": 3}`` -> ``--param n_layers=3``). The returned dict is ``run.json`` plus
    ``topk`` (int64 [n_test_users, k]), ``test_users`` (int64, sorted) and ``out_dir``. The runner's
    stdout/stderr go to ``<out_dir>/peer.log``; on failure a :class:`PeerError` carries its tail.
    ``echo=True`` also streams the log to this process's stderr.
    """
    py = venv_python(lib)
    script = PEERS_DIR / f"run_{lib}.py"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("run.json", "topk.npy", "test_users.npy"):
        (out / stale).unlink(missing_ok=True)
    cmd = [str(py), str(script), "--split", str(split_dir), "--model", str(model), "--out", str(out)]
    for key, value in hparams.items():
        if value is None:
            continue
        if key == "param":
            assert isinstance(value, Mapping), "param must be a mapping of extra library parameters"
            for pk, pv in value.items():
                cmd += ["--param", f"{pk}={json.dumps(pv)}"]
            continue
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PYTHONNOUSERSITE"] = "1"
    env.setdefault("OPENBLAS_NUM_THREADS", "1")  # implicit warns (and slows down) with threaded BLAS
    log_path = out / "peer.log"
    t0 = time.perf_counter()
    with open(log_path, "wb") as log:
        log.write(("$ " + " ".join(cmd) + "\n").encode())
        log.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=str(out))
        pump = threading.Thread(target=_pump, args=(proc.stdout, log, echo), daemon=True)
        pump.start()
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pump.join(5)
            raise PeerError(
                f"{lib} {model} timed out after {timeout} s; log: {log_path}\n{_tail(log_path)}"
            ) from None
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        pump.join()
    if rc != 0:
        raise PeerError(f"{lib} {model} failed with exit code {rc}; log: {log_path}\n{_tail(log_path)}")
    run = read_outputs(lib, model, split_dir, out)
    run["wall_seconds"] = time.perf_counter() - t0
    return run


def read_outputs(lib: str, model: str, split_dir: str | os.PathLike, out_dir: str | os.PathLike) -> dict:
    """``run.json`` of a finished runner plus ``topk``, ``test_users`` and ``out_dir``, checked against
    the split (raises :class:`PeerError` when a file is missing, unreadable or does not match)."""
    out = Path(out_dir)
    log_path = out / "peer.log"
    try:
        run = json.loads((out / "run.json").read_text(encoding="utf-8"))
        topk = load_npy(out / "topk.npy")
        users = load_npy(out / "test_users.npy")
    except (OSError, ValueError) as exc:
        raise PeerError(
            f"{lib} {model}: the outputs in {out} are unreadable ({exc}); log: {log_path}"
        ) from exc
    expected = read_split(split_dir, load_features=False).test_users()
    if not np.array_equal(users, expected):
        raise PeerError(f"{lib} {model}: test_users.npy does not match the split's test users")
    if topk.ndim != 2 or topk.shape[0] != len(users):
        raise PeerError(f"{lib} {model}: topk.npy has shape {topk.shape}, expected [{len(users)}, k]")
    run.update({"topk": topk, "test_users": users, "out_dir": str(out)})
    return run


def _pump(stream, log, echo: bool) -> None:
    """Copy the child's output to the log file (and optionally to our stderr) as it arrives."""
    for line in iter(stream.readline, b""):
        log.write(line)
        log.flush()
        if echo:
            sys.stderr.write(line.decode("utf-8", "replace"))
    stream.close()


def _tail(path: Path, n: int = 40) -> str:
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join(lines[-n:])

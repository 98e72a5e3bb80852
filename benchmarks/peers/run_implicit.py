"""Train an implicit 0.7.3 model (BPR, ALS) on a modalrec split directory; runs in the implicit venv.

Why it is done this way:

* implicit trains on a users x items CSR matrix whose indices are already our dense indices, so no id
  mapping is involved; items without training interactions are ranked too.
* implicit has no validation loop, so the runner calls ``fit`` for ``--eval-every`` iterations at a time
  (both models continue from their current factors when ``fit`` is called again), evaluates validation
  Recall@20 with ``common.ValidTracker`` (full ranking, training items masked) and keeps the best
  factors. BPR's sampling RNG is a ``numpy.random.Generator`` shared across calls, so chunked training
  does not replay the same samples (an int seed would be re-seeded at every ``fit`` call).
* BPR is per-sample SGD (``--batch-size`` does not apply); implicit's ``factors`` counts the latent
  factors, and BPR adds one more column for the item bias. ALS weights observed entries by ``alpha``
  (``--param alpha=...``).
* implicit's BPR draws its negatives from the training *entries* (``disliked = itemids[random entry]``),
  i.e. in proportion to item popularity, not uniformly as in the BPR paper; positives and negatives then
  share one distribution and the item bias cannot learn popularity. ``--param uniform_negatives=S``
  (0 <= S < 1) makes a share S of the negatives uniform without touching the library: it appends padding
  users who interacted with every item. Their own draws are always rejected (every negative is "liked"
  by them, ``verify_negative_samples``), so they never train, but their entries are drawn as negatives
  for the real users: uniformly over items. An epoch keeps about one update per real training entry.
  Their rows are dropped before ranking.
* ``OPENBLAS_NUM_THREADS=1`` is set before numpy loads, as implicit asks, to avoid nested threading.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import numpy as np

LIB = "implicit"


def padding_users(nnz: int, n_items: int, share: float) -> int:
    """Users who like every item needed so that ``share`` of the drawn entries are theirs.

    >>> padding_users(1000, 100, 0.5), padding_users(1000, 100, 0.0)
    (10, 0)
    """
    if not 0.0 <= share < 1.0:
        raise SystemExit(f"uniform_negatives must be in [0, 1), got {share}")
    return int(np.ceil(share / (1.0 - share) * nnz / n_items)) if share > 0 else 0


#: Library defaults replaced by the runner when the command line gives no value (see README).
RUNNER_DEFAULTS = {"BPR": {"epochs": 300}, "ALS": {"epochs": 50}}


def main(argv: list[str] | None = None) -> int:
    args = common.base_argparser(LIB).parse_args(argv)
    t_start = time.perf_counter()
    models = {m.lower(): m for m in common.MODELS[LIB]}
    if args.model.lower() not in models:
        raise SystemExit(f"unknown model {args.model!r}; expected one of {', '.join(common.MODELS[LIB])}")
    model_name = models[args.model.lower()]
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    split = common.read_split(args.split, load_features=False)
    extra = common.parse_params(args.param)

    import implicit
    import scipy.sparse as sp
    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    user_items = sp.csr_matrix(
        (np.ones(len(split.train), dtype=np.float32), (split.train[:, 0], split.train[:, 1])),
        shape=(split.n_users, split.n_items),
    )
    user_items.sum_duplicates()
    user_items.data[:] = 1.0
    share = float(extra.pop("uniform_negatives", 0.0))
    n_pad = padding_users(user_items.nnz, split.n_items, share) if model_name == "BPR" else 0
    if n_pad:
        pad = sp.csr_matrix(np.ones((n_pad, split.n_items), dtype=np.float32))
        user_items = sp.vstack([user_items, pad], format="csr")

    chunk = max(1, args.eval_every)
    max_epochs = args.epochs if args.epochs is not None else RUNNER_DEFAULTS[model_name]["epochs"]
    kw: dict[str, object] = {
        "factors": args.dim,
        "iterations": chunk,
        "random_state": np.random.default_rng(args.seed),
        "num_threads": args.threads or 0,
    }
    if args.reg is not None:
        kw["regularization"] = args.reg
    if model_name == "BPR":
        if args.lr is not None:
            kw["learning_rate"] = args.lr
        kw.update(extra)
        model = BayesianPersonalizedRanking(**kw)
    else:
        if args.lr is not None:
            raise SystemExit("ALS has no learning rate; drop --lr")
        kw.update(extra)
        model = AlternatingLeastSquares(**kw)

    def score_with(uf: np.ndarray, itf: np.ndarray):
        def score_fn(users: np.ndarray) -> np.ndarray:
            return uf[users] @ itf.T

        return score_fn

    tracker = common.ValidTracker(split, patience=args.patience)
    epoch_seconds: list[float] = []
    best: tuple[np.ndarray, np.ndarray] | None = None
    epoch = 0
    fit_start = time.perf_counter()
    while epoch < max_epochs and not tracker.should_stop:
        if args.time_budget is not None and time.perf_counter() - fit_start > args.time_budget:
            break
        n = min(chunk, max_epochs - epoch)
        model.iterations = n
        t0 = time.perf_counter()
        model.fit(user_items, show_progress=False)
        dt = time.perf_counter() - t0
        epoch_seconds.extend([dt / n] * n)
        epoch += n
        uf = model.user_factors[: split.n_users]
        rec, improved = tracker.evaluate(score_with(uf, model.item_factors), epoch)
        if improved:
            best = (np.array(uf, copy=True), np.array(model.item_factors, copy=True))
        print(
            f"epoch {epoch}: train {dt:.2f} s, valid recall@20 {rec:.4f}{' *' if improved else ''}",
            flush=True,
        )
    assert best is not None

    test_users = split.test_users()
    t0 = time.perf_counter()
    topk = common.full_rank_topk(score_with(*best), test_users, split.csr("train", "valid"), k=args.k)
    rank_seconds = time.perf_counter() - t0

    names = (
        "factors",
        "learning_rate",
        "regularization",
        "alpha",
        "verify_negative_samples",
        "num_threads",
        "dtype",
        "use_cg",
        "use_native",
    )
    hp = {k: getattr(model, k) for k in names if hasattr(model, k)}
    hp = {k: (v if isinstance(v, (int, float, str, bool)) or v is None else str(v)) for k, v in hp.items()}
    hp.update({"seed": args.seed, "max_epochs": max_epochs, "eval_every": chunk, "patience": args.patience})
    hp.update({"uniform_negatives": share, "padding_users": n_pad})
    run = {
        "library": LIB,
        "library_version": implicit.__version__,
        "model": model_name,
        "dataset": split.dataset,
        "split": str(Path(args.split).resolve()),
        "hyperparameters": hp,
        "extra_params": extra,
        "threads": args.threads or os.cpu_count(),
        "epochs_run": epoch,
        "stopped_by": "early_stopping"
        if tracker.should_stop
        else ("max_epochs" if epoch >= max_epochs else "time_budget"),
        "best_epoch": tracker.best_epoch,
        "epoch_train_seconds": [round(s, 4) for s in epoch_seconds],
        **common.epoch_summary(epoch_seconds),
        "fit_train_seconds": float(sum(epoch_seconds)),
        "rank_seconds": rank_seconds,
        "total_seconds": time.perf_counter() - t_start,
        "valid_recall@20": tracker.best,
        "valid_history": tracker.history,
        "valid_metric_source": "runner's full-ranking recall@20 (hits / #valid items, train masked)",
        "n_test_users": len(test_users),
        "k": args.k,
        "notes": "per-epoch seconds are each fit chunk's time divided by its epochs (iterations)",
    }
    common.write_outputs(out, topk, test_users, run)
    print(
        f"[{LIB} {model_name}] best epoch {run['best_epoch']}/{run['epochs_run']}, "
        f"valid recall@20 {run['valid_recall@20']:.4f}, "
        f"median epoch {run['median_epoch_train_seconds']:.3f} s, total {run['total_seconds']:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

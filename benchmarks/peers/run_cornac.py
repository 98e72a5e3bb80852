"""Train a Cornac 3.0.1 model (BPR, VBPR) on a modalrec split directory; runs in the cornac venv.

Why it is done this way:

* Cornac's ``Dataset.build`` gets global id maps pre-filled with every user and item in our dense order,
  so Cornac's internal indices *are* our indices, and items without training interactions still exist
  (BPR and VBPR sample negatives from all of them, as modalrec does).
* Cornac has no validation-based early stopping for these models, so the runner trains one chunk of
  ``--eval-every`` epochs at a time (both models continue from their current parameters when ``fit`` is
  called again), evaluates validation Recall@20 with ``common.ValidTracker`` (full ranking, training items
  masked) and keeps a copy of the best parameters.
  Quirk: VBPR builds a fresh Adam optimiser inside every ``fit`` call, so Adam's moment estimates would
  restart at each chunk (a cold Adam takes full-size first steps: the runs before issue 18 were hurt by
  it). The runner carries the optimiser state across chunks (:func:`persistent_adam`: each new Adam loads
  the previous one's state; same parameters in the same order), so chunked training equals one long
  ``fit``. BPR is plain SGD (no state lost).
* VBPR needs an item image modality: the first ``features/<modality>.npy`` of the split (or
  ``--param modality=NAME``). ``--dim`` is split evenly between VBPR's gamma (k) and theta (k2) factors
  unless ``--param k2=...`` is given, so a user vector has ``--dim`` numbers in total.
* Cornac's BPR is per-sample SGD (Cython, OpenMP): ``--batch-size`` does not apply to it. With a seed,
  Cornac itself forces BPR to a single thread (its documented reproducibility rule).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import numpy as np

LIB = "cornac"


def persistent_adam() -> None:
    """Make every ``torch.optim.Adam`` created from now on start from the last one's state.

    Cornac's VBPR creates ``torch.optim.Adam([Bi, Gu, Gi, Tu, E, Bp])`` at each ``fit`` call from fresh
    tensors holding the current values; Adam's state dict is keyed by parameter position, so loading
    the previous optimiser's state into the new one continues the same optimisation.
    """
    import torch

    base = torch.optim.Adam
    last: dict[str, object] = {}

    class CarriedAdam(base):  # type: ignore[misc, valid-type]
        def __init__(self, params, *a, **kw):
            super().__init__(params, *a, **kw)
            prev = last.get("opt")
            if prev is not None:
                self.load_state_dict(prev.state_dict())  # type: ignore[attr-defined]
            last["opt"] = self

    torch.optim.Adam = CarriedAdam  # type: ignore[misc]


def main(argv: list[str] | None = None) -> int:
    args = common.base_argparser(LIB).parse_args(argv)
    t_start = time.perf_counter()
    models = {m.lower(): m for m in common.MODELS[LIB]}
    if args.model.lower() not in models:
        raise SystemExit(f"unknown model {args.model!r}; expected one of {', '.join(common.MODELS[LIB])}")
    model_name = models[args.model.lower()]
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    split = common.read_split(args.split, load_features=model_name == "VBPR")
    extra = common.parse_params(args.param)

    import cornac
    from cornac.data import Dataset, ImageModality

    if model_name == "VBPR":
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        persistent_adam()

    uid_map = {u: u for u in range(split.n_users)}
    iid_map = {i: i for i in range(split.n_items)}
    triples = [(int(u), int(i), 1.0) for u, i in split.train.tolist()]
    train_set = Dataset.build(
        triples, fmt="UIR", global_uid_map=uid_map, global_iid_map=iid_map, seed=args.seed
    )
    assert train_set.num_users == split.n_users and train_set.num_items == split.n_items
    assert list(train_set.uid_map.items())[:3] == [(0, 0), (1, 1), (2, 2)]

    max_epochs = args.epochs if args.epochs is not None else 300
    chunk = max(1, args.eval_every)
    modality_name = None
    if model_name == "BPR":
        kw: dict[str, object] = {"k": args.dim, "max_iter": chunk, "seed": args.seed, "verbose": False}
        if args.lr is not None:
            kw["learning_rate"] = args.lr
        if args.reg is not None:
            kw["lambda_reg"] = args.reg
        if args.threads:
            kw["num_threads"] = args.threads
        kw.update(extra)
        model = cornac.models.BPR(**kw)

        def params() -> dict[str, np.ndarray]:
            return {"U": model.u_factors, "V": model.i_factors, "Bi": model.i_biases}

        def score_with(p: dict[str, np.ndarray]):
            def score_fn(users: np.ndarray) -> np.ndarray:
                return p["U"][users] @ p["V"].T + p["Bi"][None, :]

            return score_fn

    else:  # VBPR
        if not split.features:
            raise SystemExit("VBPR needs item features: the split has no features/<modality>.npy")
        modality_name = str(extra.pop("modality", sorted(split.features)[0]))
        if modality_name not in split.features:
            raise SystemExit(f"no features/{modality_name}.npy in the split (have {sorted(split.features)})")
        feats = split.features[modality_name]
        image = ImageModality(features=feats, ids=list(range(split.n_items)), normalized=False)
        image.build(id_map=train_set.iid_map)
        train_set.add_modalities(item_image=image)
        k2 = int(extra.pop("k2", args.dim // 2))
        kw = {
            "k": int(extra.pop("k", args.dim - k2)),
            "k2": k2,
            "n_epochs": chunk,
            "batch_size": args.batch_size,
            "seed": args.seed,
            "use_gpu": False,
            "verbose": False,
        }
        if args.lr is not None:
            kw["learning_rate"] = args.lr
        if args.reg is not None:
            kw["lambda_w"] = args.reg
        kw.update(extra)
        model = cornac.models.VBPR(**kw)

        def params() -> dict[str, np.ndarray]:
            return {
                "Bi": model.beta_item,
                "Gu": model.gamma_user,
                "Gi": model.gamma_item,
                "Tu": model.theta_user,
                "Ti": model.theta_item,
                "vb": model.visual_bias,
            }

        def score_with(p: dict[str, np.ndarray]):
            def score_fn(users: np.ndarray) -> np.ndarray:
                return p["Gu"][users] @ p["Gi"].T + p["Tu"][users] @ p["Ti"].T + (p["Bi"] + p["vb"])[None, :]

            return score_fn

    tracker = common.ValidTracker(split, patience=args.patience)
    epoch_seconds: list[float] = []
    best: dict[str, np.ndarray] | None = None
    epoch = 0
    fit_start = time.perf_counter()
    while epoch < max_epochs and not tracker.should_stop:
        if args.time_budget is not None and time.perf_counter() - fit_start > args.time_budget:
            break
        n = min(chunk, max_epochs - epoch)
        if model_name == "BPR":
            model.max_iter = n
        else:
            model.n_epochs = n
        t0 = time.perf_counter()
        model.fit(train_set)
        dt = time.perf_counter() - t0
        epoch_seconds.extend([dt / n] * n)
        epoch += n
        rec, improved = tracker.evaluate(score_with(params()), epoch)
        if improved:
            best = {k: np.array(v, copy=True) for k, v in params().items()}
        print(
            f"epoch {epoch}: train {dt:.2f} s, valid recall@20 {rec:.4f}{' *' if improved else ''}",
            flush=True,
        )
    assert best is not None

    # validation top-k of the restored best state (train masked): lets the benchmark score any subset of
    # validation users (e.g. the select half) with its own evaluator
    common.atomic_save_npy(
        out / "valid_topk.npy",
        common.full_rank_topk(score_with(best), tracker.users, tracker.exclude, k=args.k),
    )
    common.atomic_save_npy(out / "valid_users.npy", tracker.users)
    test_users = split.test_users()
    t0 = time.perf_counter()
    topk = common.full_rank_topk(score_with(best), test_users, split.csr("train", "valid"), k=args.k)
    rank_seconds = time.perf_counter() - t0

    names = (
        "k",
        "k2",
        "learning_rate",
        "lambda_reg",
        "lambda_w",
        "lambda_b",
        "lambda_e",
        "batch_size",
        "use_bias",
        "num_threads",
        "seed",
    )
    hp = {k: getattr(model, k) for k in names if hasattr(model, k)}
    hp.update({"max_epochs": max_epochs, "eval_every": chunk, "patience": args.patience})
    run = {
        "library": LIB,
        "library_version": cornac.__version__,
        "model": model_name,
        "dataset": split.dataset,
        "split": str(Path(args.split).resolve()),
        "hyperparameters": hp,
        "extra_params": common.parse_params(args.param),
        "feature_modality": modality_name,
        "threads": hp.get("num_threads", args.threads),
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
        "notes": "per-epoch seconds are each fit chunk's time divided by its epochs"
        + ("; VBPR's Adam state is carried across chunks" if model_name == "VBPR" else ""),
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

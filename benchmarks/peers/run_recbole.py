"""Train a RecBole 1.2.1 model (LightGCN, BPR) on a modalrec split directory; runs in the recbole venv.

Why each step is done the way it is:

* RecBole reads the fixed split through its ``benchmark_filename`` mechanism: atomic files
  ``peer.train.inter`` / ``peer.valid.inter`` / ``peer.test.inter`` plus ``peer.user`` / ``peer.item``
  listing *every* user and item, so users/items without interactions keep existing (negative sampling
  and ranking then cover the same catalogue as modalrec). All filters are off; nothing is dropped.
* RecBole remaps ids internally (``[PAD]`` = 0); the runner maps its internal ids back to our dense
  indices before writing ``topk.npy``.
* Early stopping is RecBole's own (``valid_metric: recall@20``, full-sort evaluation, training items
  masked). ``Trainer._save_checkpoint`` is replaced by an in-memory copy of the best state: writing and
  re-reading ``.pth`` files trips torch's weights-only loading, and without saving RecBole would keep
  the *last* epoch's weights instead of the best.
* Per-epoch training time is measured around ``Trainer._train_epoch`` only (negative sampling + forward
  + backward + optimizer steps), excluding validation, which is what the speed comparison needs.
* The final top-50 is computed here over ALL items with train and valid items masked, through
  ``common.full_rank_topk`` (the same code every runner uses).
"""

from __future__ import annotations

import copy
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import numpy as np

LIB = "recbole"


def _write_atomic_files(split: common.Split, data_dir: Path, name: str) -> None:
    """RecBole atomic files for a pre-split data set (token ids = our dense indices as strings)."""
    d = data_dir / name
    d.mkdir(parents=True, exist_ok=True)
    for part in ("train", "valid", "test"):
        pairs = getattr(split, part)
        lines = ["user_id:token\titem_id:token"] + [f"{u}\t{i}" for u, i in pairs.tolist()]
        (d / f"{name}.{part}.inter").write_text("\n".join(lines) + "\n", encoding="ascii")
    (d / f"{name}.user").write_text(
        "\n".join(["user_id:token"] + [str(u) for u in range(split.n_users)]) + "\n", encoding="ascii"
    )
    (d / f"{name}.item").write_text(
        "\n".join(["item_id:token"] + [str(i) for i in range(split.n_items)]) + "\n", encoding="ascii"
    )


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

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    import recbole
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.data.interaction import Interaction
    from recbole.utils import get_model, get_trainer, init_logger, init_seed

    work = out / "recbole_work"
    data_dir = work / "data"
    ds_name = "peer"
    _write_atomic_files(split, data_dir, ds_name)

    cfg: dict[str, object] = {
        "data_path": str(data_dir),
        "checkpoint_dir": str(work / "saved"),
        "benchmark_filename": ["train", "valid", "test"],
        "load_col": {"inter": ["user_id", "item_id"], "user": ["user_id"], "item": ["item_id"]},
        # nothing may be dropped or altered
        "user_inter_num_interval": "[0,inf)",
        "item_inter_num_interval": "[0,inf)",
        "val_interval": None,
        "rm_dup_inter": None,
        "filter_inter_by_user_or_item": False,
        # training
        "embedding_size": args.dim,
        "train_batch_size": args.batch_size,
        "seed": args.seed,
        "reproducibility": True,
        "use_gpu": False,
        "show_progress": False,
        "eval_step": args.eval_every,
        "stopping_step": args.patience,
        # validation: RecBole's own full-sort early stopping on Recall@20
        "eval_args": {"split": None, "group_by": "user", "order": "RO", "mode": "full"},
        "metrics": ["Recall", "NDCG"],
        "topk": [20],
        "valid_metric": "recall@20",
        "valid_metric_bigger": True,
        # RecBole's full-sort batch holds eval_batch_size // n_items users: its default 4096 means ONE user
        # per batch on Baby (19k tiny matmuls per validation); 256 users per batch is ~7 MB on Baby.
        "eval_batch_size": 256 * (split.n_items + 1),
        "log_wandb": False,
    }
    if args.epochs is not None:
        cfg["epochs"] = args.epochs
    if args.lr is not None:
        cfg["learning_rate"] = args.lr
    if args.reg is not None:
        cfg["reg_weight"] = args.reg
    cfg.update(common.parse_params(args.param))

    # RecBole writes ./log and ./log_tensorboard relative to the working directory: keep them in --out.
    os.chdir(work)
    config = Config(model=model_name, dataset=ds_name, config_dict=cfg)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset = create_dataset(config)
    train_data, valid_data, _test_data = data_preparation(config, dataset)

    n_inter_loaded = len(dataset.inter_feat)
    n_expected = len(split.train) + len(split.valid) + len(split.test)
    if (
        n_inter_loaded != n_expected
        or dataset.user_num != split.n_users + 1
        or dataset.item_num != split.n_items + 1
    ):
        raise SystemExit(
            f"RecBole altered the data: {n_inter_loaded} interactions (expected {n_expected}), "
            f"{dataset.user_num - 1} users (expected {split.n_users}), {dataset.item_num - 1} items "
            f"(expected {split.n_items})"
        )

    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    base_trainer = get_trainer(config["MODEL_TYPE"], config["model"])

    class _OutOfTime(Exception):
        pass

    class TimedTrainer(base_trainer):  # type: ignore[misc, valid-type]
        """Times the training step of each epoch and keeps the best state in memory."""

        epoch_seconds: list[float]
        best_state: dict | None = None
        best_epoch: int = -1

        def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
            t0 = time.perf_counter()
            if args.time_budget is not None and t0 - self.fit_start > args.time_budget:
                raise _OutOfTime
            loss = super()._train_epoch(
                train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress
            )
            self.epoch_seconds.append(time.perf_counter() - t0)
            return loss

        def _save_checkpoint(self, epoch, verbose=True, **kwargs):
            self.best_state = copy.deepcopy(self.model.state_dict())
            self.best_epoch = int(epoch)

    trainer = TimedTrainer(config, model)
    trainer.epoch_seconds = []
    trainer.fit_start = time.perf_counter()
    try:
        best_valid_score, best_valid_result = trainer.fit(
            train_data, valid_data, verbose=True, saved=True, show_progress=False
        )
        stopped_by = "max_epochs" if len(trainer.epoch_seconds) >= config["epochs"] else "early_stopping"
    except _OutOfTime:
        best_valid_score, best_valid_result = trainer.best_valid_score, trainer.best_valid_result
        stopped_by = "time_budget"
    fit_seconds = sum(trainer.epoch_seconds)
    if trainer.best_state is None:
        raise SystemExit("RecBole finished without a best validation state (no evaluation ran?)")
    model.load_state_dict(trainer.best_state)
    model.eval()
    # LightGCN caches propagated embeddings from the last evaluation; they belong to the last epoch.
    for attr in ("restore_user_e", "restore_item_e"):
        if hasattr(model, attr):
            setattr(model, attr, None)

    uid_field, iid_field = dataset.uid_field, dataset.iid_field
    item_tokens = dataset.field2id_token[iid_field]
    ours_of_internal = np.array([-1] + [int(t) for t in item_tokens[1:]], dtype=np.int64)
    internal_uid = np.array(
        dataset.token2id(uid_field, [str(u) for u in range(split.n_users)]), dtype=np.int64
    )
    if sorted(ours_of_internal[1:].tolist()) != list(range(split.n_items)):
        raise SystemExit("RecBole's item map does not cover every item exactly once")

    def score_fn(users: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            inter = Interaction({uid_field: torch.as_tensor(internal_uid[users])})
            s = model.full_sort_predict(inter).view(len(users), -1).cpu().numpy()
        scores = np.full((len(users), split.n_items), -np.inf, dtype=np.float64)
        scores[:, ours_of_internal[1:]] = s[:, 1:]
        return scores

    # cross-check of the id mapping: our own valid Recall@20 with the best model (train masked)
    check = common.ValidTracker(split)
    valid_check, _ = check.evaluate(score_fn, trainer.best_epoch + 1)

    test_users = split.test_users()
    t0 = time.perf_counter()
    topk = common.full_rank_topk(score_fn, test_users, split.csr("train", "valid"), k=args.k)
    rank_seconds = time.perf_counter() - t0

    hp = {
        k: config.final_config_dict.get(k)
        for k in (
            "embedding_size",
            "n_layers",
            "reg_weight",
            "learning_rate",
            "train_batch_size",
            "epochs",
            "eval_step",
            "stopping_step",
            "learner",
            "weight_decay",
            "train_neg_sample_args",
            "seed",
        )
    }
    run = {
        "library": LIB,
        "library_version": recbole.__version__,
        "torch_version": torch.__version__,
        "model": model_name,
        "dataset": split.dataset,
        "split": str(Path(args.split).resolve()),
        "hyperparameters": json.loads(json.dumps(hp, default=str)),
        "extra_params": common.parse_params(args.param),
        "threads": torch.get_num_threads(),
        "epochs_run": len(trainer.epoch_seconds),
        "stopped_by": stopped_by,
        "best_epoch": trainer.best_epoch + 1,
        "epoch_train_seconds": [round(s, 4) for s in trainer.epoch_seconds],
        **common.epoch_summary(trainer.epoch_seconds),
        "fit_train_seconds": fit_seconds,
        "rank_seconds": rank_seconds,
        "total_seconds": time.perf_counter() - t_start,
        "valid_recall@20": float(best_valid_score),
        "valid_result_at_best": {k: float(v) for k, v in (best_valid_result or {}).items()},
        "valid_recall@20_check": valid_check,
        "valid_metric_source": "RecBole's own full-sort validation (recall = hits / #valid items)",
        "n_test_users": len(test_users),
        "k": args.k,
        "notes": "epochs/best_epoch are 1-based; per-epoch time covers RecBole's _train_epoch only",
    }
    common.write_outputs(out, topk, test_users, run)
    print(
        f"[{LIB} {model_name}] best epoch {run['best_epoch']}/{run['epochs_run']}, "
        f"valid recall@20 {run['valid_recall@20']:.4f} (check {valid_check:.4f}), "
        f"median epoch {run['median_epoch_train_seconds']:.3f} s, total {run['total_seconds']:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

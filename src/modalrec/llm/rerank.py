"""LLM re-ranking of any Recommender's top-N: log-likelihood of each candidate's text given the history.

How it works, per user: the prompt lists (up to ``max_history``) items from the user's history by
title and genres and asks for "another" one; each of the top-N candidates of the base recommender is
scored by the LLM's log-likelihood of its text as the continuation (see
:func:`modalrec.llm.scoring.continuation_logprobs`: the prompt runs once, the candidates run as one
batch; nothing is generated). The LLM score and the base score are standardised within the user's
candidate list and blended, ``(1 - w) * z(base) + w * z(llm)``.

Which LLM score (summed or per-token log-likelihood, optionally minus the same text's
log-likelihood under an empty history, a pointwise-mutual-information score that cancels how
likely a title is a priori) and the blend weight ``w`` are chosen on **validation** users only
(history = train items, targets = validation items); test users are touched once, with the chosen
setting. ``w = 0`` is always in the grid, so a useless LLM is selected away rather than hidden.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from modalrec.core.errors import ConfigError
from modalrec.evaluation.metrics import hit_matrix, mean_metrics, per_user_metrics
from modalrec.evaluation.protocol import DEFAULT_KS, EvalResult
from modalrec.llm.backend import Backend, LocalBackend, as_backend
from modalrec.llm.domain import ItemDomain, domain_of
from modalrec.llm.text import ItemText, clip_text

if TYPE_CHECKING:
    from modalrec.data.dataset import Dataset
    from modalrec.llm.loading import LLM
    from modalrec.llm.projector import ItemProjector
    from modalrec.models.base import Recommender

PROMPTS = ("list", "chat")
SCORES = ("sum", "mean", "pmi", "pmi_mean")
DEFAULT_WEIGHTS: tuple[float, ...] = tuple(round(x, 2) for x in np.linspace(0.0, 1.0, 11))


def zscore(x: np.ndarray) -> np.ndarray:
    """Standardise each row (candidates of one user); constant rows become 0.

    Non-finite entries (a base model's ``-inf`` for padding when a user has fewer than N unseen
    items) are left out of the statistics and come back as ``-inf``.

    A thin wrapper over numpy's NaN-skipping mean and (population) standard deviation, not
    :func:`scipy.stats.zscore`: scipy gives bit-identical z-scores on ordinary rows (checked with
    ``nan_policy="omit"`` after mapping non-finite entries to NaN), but it decides which rows are
    constant by a relative test (``std <= eps * |mean|``) and returns NaN for them, whereas a
    re-ranking blend needs a finite 0 and has always used an absolute test (``std <= 1e-12``). The
    two tests disagree on rows of tiny values (the last example below: scipy gives -1 and 1) and on rows of large
    values that differ in the last bits (scipy calls ``[1e5, 1e5 + 1.5e-11]`` constant); keeping
    the absolute test keeps every re-ranking result unchanged. It also warns (precision loss,
    empty rows) where this function is silent.

    >>> zscore(np.array([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]])).round(3).tolist()
    [[-1.225, 0.0, 1.225], [0.0, 0.0, 0.0]]
    >>> zscore(np.array([[1.0, 3.0, -np.inf]])).tolist()
    [[-1.0, 1.0, -inf]]
    >>> zscore(np.array([[1e-14, 3e-14], [-np.inf, -np.inf]])).tolist()
    [[0.0, 0.0], [-inf, -inf]]
    """
    x = np.asarray(x, dtype=np.float64)
    ok = np.isfinite(x)
    # Rows without any finite entry get dummy zeros: their output is all -inf anyway, and numpy
    # would warn about the statistics of an empty row.
    xn = np.where(ok, x, np.where(ok.any(axis=-1, keepdims=True), np.nan, 0.0))
    if xn.shape[-1] == 0:
        return xn
    mu = np.nanmean(xn, axis=-1, keepdims=True)
    sd = np.nanstd(xn, axis=-1, keepdims=True)
    z = np.where(sd > 1e-12, (xn - mu) / np.where(sd > 1e-12, sd, 1.0), 0.0)
    return np.where(ok, z, -np.inf)


def blend(base: np.ndarray, llm: np.ndarray, weight: float) -> np.ndarray:
    """``(1 - w) * z(base) + w * z(llm)`` row-wise: scale-free, so one weight fits every user.

    >>> blend(np.array([[3.0, 2.0, 1.0]]), np.array([[0.0, 0.0, 9.0]]), 0.0).argmax()
    np.int64(0)
    >>> blend(np.array([[3.0, 2.0, 1.0]]), np.array([[0.0, 0.0, 9.0]]), 1.0).argmax()
    np.int64(2)
    """
    base = np.asarray(base, dtype=np.float64)
    llm = np.asarray(llm, dtype=np.float64)
    zb, zl = zscore(base), zscore(llm)
    ok = np.isfinite(zb) & np.isfinite(zl)
    return np.where(ok, (1.0 - weight) * np.where(ok, zb, 0.0) + weight * np.where(ok, zl, 0.0), -np.inf)


def rerank_order(base: np.ndarray, llm: np.ndarray, weight: float) -> np.ndarray:
    """Positions [U, N] that sort each user's candidates by the blended score (stable: base order on ties)."""
    s = blend(base, llm, weight)
    return np.argsort(-s, axis=1, kind="stable")


class LLMReranker:
    """Scores a user's candidate items with a local LLM given the user's history.

    Args:
        dataset: the catalogue (titles/genres are read from ``dataset.items``).
        llm: a loaded :class:`~modalrec.llm.loading.LLM` (default: the packaged model).
        prompt: ``"list"`` (a plain-text list to continue) or ``"chat"`` (the model's chat format).
        max_history: at most this many history items in the prompt (a seeded random subset: the
            Dataset keeps no timestamps, and a fixed subset keeps the prompt, hence the cost, bounded).
        max_item_chars: an item's text (prompt line or candidate) is cut to this many characters at a
            word boundary (0: no cut), so that a catalogue of long product titles cannot make a
            prompt or a candidate arbitrarily long: the cost grows with the tokens scored. 160
            characters is ~40 tokens; no ML-100K title + genres is that long.
        genres: include the describing attributes (genres, category, ...) in item texts.
        noun: what the items are called in the prompt (default: the data set's noun, see
            :func:`modalrec.llm.domain.domain_of`; "item" for a catalogue that names none).
        domain: the catalogue's :class:`~modalrec.llm.domain.ItemDomain` (noun, describing fields);
            default: :func:`~modalrec.llm.domain.domain_of` the data set.
        seed: seeds the history subset.
        projector, item_vectors: items as soft tokens for items **without text**: such an item
            (no title in the catalogue) is written into prompts and scored as the text the LLM
            produces from its soft tokens (``projector(item_vectors[i])``, generated once per item
            and cached), instead of a bare "item <id>".
    """

    def __init__(
        self,
        dataset: Dataset,
        llm: LLM | Backend | None = None,
        *,
        prompt: str = "list",
        max_history: int = 10,
        genres: bool = True,
        noun: str | None = None,
        seed: int = 0,
        projector: ItemProjector | None = None,
        item_vectors: np.ndarray | None = None,
        domain: ItemDomain | None = None,
        max_item_chars: int = 160,
    ) -> None:
        if prompt not in PROMPTS:
            raise ValueError(f"unknown prompt form {prompt!r}; expected one of {PROMPTS}")
        self.backend = as_backend(llm)
        # the in-process model, when there is one (chat templates, soft tokens and fine-tuning need it)
        self.llm: LLM | None = self.backend.llm if isinstance(self.backend, LocalBackend) else None
        if self.llm is None and (prompt == "chat" or projector is not None):
            raise ConfigError(
                "the 'chat' prompt form and items as soft tokens need the in-process LLM backend"
            )
        self.dataset = dataset
        domain = domain or domain_of(dataset)
        if noun:
            domain = replace(domain, noun=noun, plural_noun=None)
        self.domain = domain
        self.texts = ItemText(dataset, domain)
        self.prompt = prompt
        self.max_history = int(max_history)
        self.max_item_chars = int(max_item_chars)
        self.genres = genres
        self.noun = domain.noun
        self.seed = int(seed)
        self._prior: dict[int, tuple[float, int]] = {}
        if (projector is None) != (item_vectors is None):
            raise ValueError("give both projector and item_vectors, or neither")
        if item_vectors is not None and len(item_vectors) != self.texts.n_items:
            raise ValueError(f"item_vectors has {len(item_vectors)} rows for {self.texts.n_items} items")
        self.projector = projector
        self.item_vectors = item_vectors
        self._soft_text: dict[int, str] = {}
        self._end = "\n"
        if prompt == "chat" and self.llm is not None and len(self.llm.encode("<|im_end|>")) == 1:
            self._end = "<|im_end|>"

    def local_llm(self) -> LLM:
        if self.llm is None:
            raise ConfigError("this operation needs the in-process LLM backend")
        return self.llm

    # ------------------------------------------------------------------ text -> token ids
    def item_text(self, item: int) -> str:
        """The item's text in prompts: title (+ genres), or for a textless item its soft-token text.

        Cut to ``max_item_chars`` characters (see the class docstring).
        """
        return clip_text(self._item_text(int(item)), self.max_item_chars)

    def _item_text(self, item: int) -> str:
        if self.texts.has_text[item] or self.projector is None or self.item_vectors is None:
            return self.texts.short(item, genres=self.genres)
        if item not in self._soft_text:
            v = np.asarray(self.item_vectors[item], dtype=np.float32)
            if not np.isfinite(v).all():
                self._soft_text[item] = self.texts.short(item, genres=self.genres)
            else:
                from modalrec.llm.projector import describe

                text = describe(self.local_llm(), self.projector, v, max_new_tokens=24)[0]
                self._soft_text[item] = " ".join(text.split()) or self.texts.short(item, genres=self.genres)
        return self._soft_text[item]

    def history_subset(self, user: int, history: np.ndarray) -> np.ndarray:
        """The (seeded, per user) subset of history items shown in the prompt, in index order."""
        history = np.asarray(history, dtype=np.int64)
        if len(history) <= self.max_history:
            return np.sort(history)
        rng = np.random.default_rng([self.seed, int(user)])
        return np.sort(rng.choice(history, size=self.max_history, replace=False))

    def prompt_text(self, history: Sequence[int]) -> str:
        """The prompt for a history (item indices); the candidate text is appended to it."""
        lines = "".join(f"- {self.item_text(int(i))}\n" for i in history)
        n, ns = self.domain.noun, self.domain.plural
        if self.prompt == "list":
            head = f"A list of {ns} that a user liked:\n{lines}" if len(history) else ""
            return f"{head}Another {n} this user liked:"
        ask = (
            f"I liked these {ns}:\n{lines}Recommend one more {n} I will like."
            if len(history)
            else f"Recommend a {n}."
        )
        return self.local_llm().chat(ask)

    def candidate_text(self, item: int) -> str:
        """The continuation scored for ``item``: its text and the end of a list line (or chat turn)."""
        lead = " " if self.prompt == "list" else ""
        return f"{lead}{self.item_text(int(item))}{self._end}"

    def prompt_ids(self, history: Sequence[int]) -> list[int]:
        """Token ids of the prompt (in-process backend only; fine-tuning needs them)."""
        return self.local_llm().encode(self.prompt_text(history))

    def candidate_ids(self, item: int) -> list[int]:
        """Token ids of :meth:`candidate_text` (in-process backend only; cached)."""
        assert isinstance(self.backend, LocalBackend)
        return self.backend.encode(self.candidate_text(item))

    # ------------------------------------------------------------------ scores
    def prior(self, items: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Log-likelihood (sum, n_tokens) of each item's text after an empty-history prompt; cached.

        It is a per-item constant (computed once per catalogue item), used by the ``pmi`` scores.
        """
        items = [int(i) for i in items]
        todo = [i for i in dict.fromkeys(items) if i not in self._prior]
        if todo:
            s = self.backend.score(self.prompt_text([]), [self.candidate_text(i) for i in todo])
            for i, lp, n in zip(todo, s.logprob, s.n_tokens, strict=True):
                self._prior[i] = (float(lp), int(n))
        lp = np.array([self._prior[i][0] for i in items], dtype=np.float64)
        n = np.array([self._prior[i][1] for i in items], dtype=np.int64)
        return lp, n

    def score(
        self,
        history: Sequence[int] | np.ndarray,
        candidates: Sequence[int] | np.ndarray,
        *,
        priors: bool = True,
    ) -> dict[str, np.ndarray]:
        """All LLM score variants (:data:`SCORES`) of ``candidates`` given ``history`` (item indices).

        One prompt pass + one batched continuation pass (plus, the first time an item is seen,
        its cached prior). ``priors=False`` skips the priors (the ``pmi`` variants are then NaN):
        during fine-tuning the priors change with every update and only ``sum``/``mean`` are needed.
        """
        cands = [int(c) for c in candidates]
        s = self.backend.score(self.prompt_text(list(history)), [self.candidate_text(c) for c in cands])
        prior_lp = self.prior(cands)[0] if priors else np.full(len(cands), np.nan)
        n = np.maximum(s.n_tokens, 1)
        return {
            "sum": s.logprob,
            "mean": s.logprob / n,
            "pmi": s.logprob - prior_lp,
            "pmi_mean": (s.logprob - prior_lp) / n,
        }

    def rerank(
        self,
        user: int,
        history: np.ndarray,
        candidates: np.ndarray,
        base_scores: np.ndarray,
        *,
        weight: float,
        score: str = "pmi",
    ) -> tuple[np.ndarray, np.ndarray]:
        """Re-ranked candidates and their blended scores for one user."""
        if score not in SCORES:
            raise ValueError(f"unknown LLM score {score!r}; expected one of {SCORES}")
        llm = self.score(self.history_subset(user, history), candidates)[score]
        blended = blend(base_scores[None, :], llm[None, :], weight)[0]
        order = np.argsort(-blended, kind="stable")
        return np.asarray(candidates)[order], blended[order]


# ---------------------------------------------------------------------- evaluation
@dataclass
class RerankResult(EvalResult):
    """:class:`EvalResult` of the re-ranked lists, plus the base model's result on the same users."""

    base: EvalResult | None = None
    weight: float = 0.0
    score: str = "pmi"
    prompt: str = "list"
    n_candidates: int = 20
    validation: dict[str, Any] = field(default_factory=dict)
    seconds_per_user: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        d = super().as_dict()
        lat = np.asarray(self.seconds_per_user, dtype=np.float64)
        d["rerank"] = {
            "llm_score": self.score,
            "blend_weight": self.weight,
            "prompt": self.prompt,
            "n_candidates": self.n_candidates,
            "chosen_on": "validation users (history = train, target = valid)",
            "validation": self.validation,
            "latency_p50_s": float(np.percentile(lat, 50)) if lat.size else None,
            "latency_p95_s": float(np.percentile(lat, 95)) if lat.size else None,
        }
        if self.base is not None:
            d["base"] = self.base.as_dict()
        return d


@dataclass
class ScoredUsers:
    users: np.ndarray
    top: np.ndarray  # [U, K] base ranking (item indices)
    base: np.ndarray  # [U, N] base scores of the first N
    llm: dict[str, np.ndarray]  # score name -> [U, N]
    seconds: list[float]  # per user: prompt + candidate pass (the per-item priors are precomputed)
    prior_seconds: float = 0.0  # one-off: priors of all candidate items


def _eligible(dataset: Dataset, split: str, users: np.ndarray | None) -> np.ndarray:
    n_rel = np.diff(dataset.target(split).indptr)
    if users is None:
        return np.flatnonzero(n_rel > 0)
    users = np.asarray(users, dtype=np.int64)
    return users[n_rel[users] > 0]


def score_users(
    reranker: LLMReranker,
    model: Recommender,
    dataset: Dataset,
    split: str,
    users: np.ndarray,
    n_candidates: int,
    kmax: int,
    progress: bool,
    label: str,
    priors: bool = True,
) -> ScoredUsers:
    seen = dataset.seen(split)
    top, vals = model.recommend(users, max(kmax, n_candidates), exclude=seen)
    N = min(n_candidates, top.shape[1])
    llm = {s: np.zeros((len(users), N)) for s in SCORES}
    t_prior = time.perf_counter()
    if priors:
        reranker.prior(np.unique(top[:, :N]).tolist())
    prior_seconds = time.perf_counter() - t_prior
    secs: list[float] = []
    iterator: Any = range(len(users))
    if progress:
        from rich.progress import track

        iterator = track(iterator, description=label, transient=True)
    for r in iterator:
        u = int(users[r])
        hist = seen.indices[seen.indptr[u] : seen.indptr[u + 1]]
        t0 = time.perf_counter()
        s = reranker.score(reranker.history_subset(u, hist), top[r, :N], priors=priors)
        secs.append(time.perf_counter() - t0)
        for k in SCORES:
            llm[k][r] = s[k]
    return ScoredUsers(
        users=users,
        top=top,
        base=vals[:, :N].astype(np.float64),
        llm=llm,
        seconds=secs,
        prior_seconds=prior_seconds,
    )


def metrics_for(
    scored: ScoredUsers, dataset: Dataset, split: str, ks: tuple[int, ...], score: str | None, weight: float
) -> dict[str, np.ndarray]:
    top = scored.top.copy()
    if score is not None and weight > 0:
        N = scored.base.shape[1]
        order = rerank_order(scored.base, scored.llm[score], weight)
        top[:, :N] = np.take_along_axis(top[:, :N], order, axis=1)
    truth = dataset.target(split)[scored.users]
    return per_user_metrics(hit_matrix(top, truth), np.diff(truth.indptr), ks)


def choose_blend(
    scored: ScoredUsers,
    dataset: Dataset,
    split: str,
    *,
    metric: str = "ndcg@10",
    weights: Sequence[float] = DEFAULT_WEIGHTS,
    scores: Sequence[str] = SCORES,
) -> tuple[str, float, dict[str, Any]]:
    """Grid-search (LLM score, blend weight) maximising ``metric`` on already-scored users.

    Ties keep the smaller weight (the base model unless the LLM helps).
    """
    k = int(metric.split("@")[1])
    grid: dict[str, dict[str, float]] = {}
    best = ("sum", 0.0, -np.inf)
    for s in scores:
        grid[s] = {}
        for w in sorted(weights):
            v = float(np.nanmean(metrics_for(scored, dataset, split, (k,), s, float(w))[metric]))
            grid[s][f"{w:g}"] = v
            if v > best[2] + 1e-12:
                best = (s, float(w), v)
    base_v = grid[scores[0]].get("0", float("nan"))
    return best[0], best[1], {"metric": metric, "grid": grid, "best": best[2], "base": base_v}


def rerank_evaluate(
    model: Recommender,
    dataset: Dataset,
    split: str = "test",
    *,
    llm: LLM | Backend | None = None,
    n_candidates: int = 20,
    ks: tuple[int, ...] = DEFAULT_KS,
    users: np.ndarray | None = None,
    max_users: int | None = None,
    valid_users: int = 200,
    prompt: str = "list",
    max_history: int = 10,
    weight: float | None = None,
    score: str | None = None,
    weights: Sequence[float] = DEFAULT_WEIGHTS,
    seed: int = 0,
    keep_per_user: bool = False,
    progress: bool = True,
    noun: str | None = None,
    projector: ItemProjector | None = None,
    item_vectors: np.ndarray | None = None,
    domain: ItemDomain | None = None,
    reranker: LLMReranker | None = None,
) -> RerankResult:
    """Evaluate ``model`` with and without LLM re-ranking of its top ``n_candidates``.

    The metric structure matches :func:`modalrec.evaluation.evaluate` (same masking of seen items,
    same per-user metrics, users without relevant items skipped). Positions after
    ``n_candidates`` keep the base order, so metrics at K > N are defined too.

    Args:
        model: a fitted Recommender.
        split: the evaluated split (normally ``"test"``; history = train + valid items).
        users / max_users: evaluate these users, or a seeded sample of at most ``max_users``.
        valid_users: size of the seeded validation sample used to choose the LLM score and blend
            weight (ignored when both ``weight`` and ``score`` are given).
        weight, score: fix the blend instead of choosing it on validation.
        projector, item_vectors: soft tokens for items without text (see :class:`LLMReranker`).
        noun, domain: how prompts name the items (default: the data set's, see :class:`LLMReranker`).
        reranker: a ready re-ranker (a fine-tuned model); ``llm``, ``prompt``, ... are then ignored.

    Returns:
        :class:`RerankResult` with the re-ranked metrics, ``.base`` (the model alone on the same
        users), the chosen setting, the validation grid and per-user latencies.
    """
    if split not in ("valid", "test"):
        raise ValueError("rerank_evaluate needs split 'valid' or 'test'")
    t_start = time.perf_counter()
    reranker = reranker or LLMReranker(
        dataset,
        llm,
        prompt=prompt,
        max_history=max_history,
        seed=seed,
        noun=noun,
        projector=projector,
        item_vectors=item_vectors,
        domain=domain,
    )
    validation: dict[str, Any] = {}
    if weight is None or score is None:
        score, weight, validation = _choose_on_validation(
            reranker,
            model,
            dataset,
            n_users=valid_users,
            n_candidates=n_candidates,
            scores=SCORES if score is None else (score,),
            weights=weights if weight is None else (weight,),
            seed=seed,
            progress=progress,
        )
    eval_users = _sample_users(_eligible(dataset, split, users), max_users, seed + 1)
    ts = score_users(
        reranker, model, dataset, split, eval_users, n_candidates, max(ks), progress, f"LLM re-rank ({split})"
    )
    res = _rerank_result(ts, dataset, split, ks, score, float(weight), keep_per_user=keep_per_user)
    elapsed = time.perf_counter() - t_start
    return replace(res, prompt=prompt, n_candidates=n_candidates, validation=validation, seconds=elapsed)


def _rerank_result(
    ts: ScoredUsers,
    dataset: Dataset,
    split: str,
    ks: tuple[int, ...],
    score: str,
    weight: float,
    *,
    keep_per_user: bool,
) -> RerankResult:
    """Metrics of the re-ranked lists and of the base lists, both from the same scored users.

    Why both from one :class:`ScoredUsers`: the comparison is paired (same users, same candidate
    lists, same masking); the base result has no time of its own (``seconds`` is NaN) because its
    ranking is a by-product of the re-ranking run. The setting's bookkeeping (prompt, candidate
    count, validation grid, wall time) is the caller's to fill in.
    """
    per_base = metrics_for(ts, dataset, split, ks, None, 0.0)
    per_llm = metrics_for(ts, dataset, split, ks, score, weight)
    kept = ts.users if keep_per_user else None
    base = EvalResult(
        metrics=mean_metrics(per_base),
        n_users=len(ts.users),
        split=split,
        seconds=float("nan"),
        per_user=per_base if keep_per_user else None,
        users=kept,
    )
    return RerankResult(
        metrics=mean_metrics(per_llm),
        n_users=len(ts.users),
        split=split,
        seconds=float("nan"),  # the caller sets the run's wall time
        per_user=per_llm if keep_per_user else None,
        users=kept,
        base=base,
        weight=weight,
        score=str(score),
        seconds_per_user=ts.seconds,
    )


def _sample_users(users: np.ndarray, max_users: int | None, seed: int) -> np.ndarray:
    """At most ``max_users`` of ``users``: a seeded sample, sorted (all of them if few enough).

    Why a sample: every user costs LLM passes; a fixed seed keeps the base and re-ranked metrics
    of repeated runs on the same users.
    """
    if max_users is None or len(users) <= max_users:
        return users
    return np.sort(np.random.default_rng(seed).choice(users, size=max_users, replace=False))


def _choose_on_validation(
    reranker: LLMReranker,
    model: Recommender,
    dataset: Dataset,
    *,
    n_users: int,
    n_candidates: int,
    scores: Sequence[str],
    weights: Sequence[float],
    seed: int,
    progress: bool,
) -> tuple[str, float, dict[str, Any]]:
    """The (LLM score, blend weight) of the grid that is best on a seeded sample of validation users.

    Why validation users (history = train items, target = validation items): choosing on the
    evaluated split would report the best of many settings as if it had been fixed in advance.
    Candidates are cut at ``n_candidates`` and judged by nDCG@10, as in :func:`choose_blend`.
    """
    vu = _sample_users(_eligible(dataset, "valid", None), n_users, seed)
    vs = score_users(reranker, model, dataset, "valid", vu, n_candidates, 10, progress, "LLM re-rank (valid)")
    score, weight, validation = choose_blend(vs, dataset, "valid", weights=weights, scores=scores)
    validation["n_users"] = len(vu)
    return score, weight, validation

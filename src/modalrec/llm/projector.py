"""Items as LLM tokens: a projector from item vectors to soft tokens in the LLM's input-embedding space.

Why: the recommender side represents an item by vectors (aligned/fused text, image, audio ...); the
LLM side reads tokens. A small projector (linear, or a 2-layer MLP) maps an item vector to ``m``
"soft tokens" that are placed in the LLM's input where words would be. It is trained with the LLM
frozen (no LLM weight changes, only the projector learns) by teacher forcing: given only the soft
tokens and a fixed instruction, the LLM must produce the item's text ("Genres: ... Title: ...");
the loss is the cross entropy on those target tokens. Afterwards the LLM can *describe* an item
from its vector alone, e.g. from the poster's image vector for an item whose text is unknown.

Each soft token is RMS-normalised and scaled to the typical norm of the LLM's real token embeddings,
so that the frozen LLM sees inputs of a familiar scale from the first step. Item vectors are
standardised with the training items' mean and standard deviation (stored with the projector).
Saved as one safetensors file with its configuration in the header metadata (no pickle).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from modalrec.core.errors import ConfigError, RunDirError
from modalrec.core.io import atomic_path

if TYPE_CHECKING:
    from modalrec.llm.loading import LLM

SLOT = "<ITEM>"
#: Plain-text frame around the soft tokens; short on purpose (every token costs in training).
INSTRUCTION = f"Item: {SLOT}\n"
FORMAT_VERSION = 1


class ItemProjector(nn.Module):
    """Item vector [B, d_in] -> soft tokens [B, n_tokens, d_model].

    Args:
        d_in: item vector size.
        d_model: the LLM's hidden size.
        n_tokens: number of soft tokens per item (``m``).
        hidden: hidden width of a 2-layer MLP; ``None`` or 0 for a linear projector.
        token_norm: target RMS of each soft token (set from the LLM's embedding table).

    >>> p = ItemProjector(8, 16, n_tokens=3, hidden=32)
    >>> tuple(p(torch.zeros(2, 8)).shape)
    (2, 3, 16)
    """

    def __init__(
        self,
        d_in: int,
        d_model: int,
        *,
        n_tokens: int = 4,
        hidden: int | None = 512,
        token_norm: float = 1.0,
        instruction: str = INSTRUCTION,
    ) -> None:
        super().__init__()
        if d_in <= 0 or d_model <= 0 or n_tokens <= 0:
            raise ConfigError(
                f"projector sizes must be positive (d_in={d_in}, d_model={d_model}, m={n_tokens})"
            )
        self.d_in, self.d_model, self.n_tokens = int(d_in), int(d_model), int(n_tokens)
        self.hidden = int(hidden) if hidden else 0
        self.instruction = instruction
        out = self.n_tokens * self.d_model
        if self.hidden:
            self.net: nn.Module = nn.Sequential(
                nn.Linear(self.d_in, self.hidden), nn.GELU(), nn.Linear(self.hidden, out)
            )
        else:
            self.net = nn.Linear(self.d_in, out)
        self.gain = nn.Parameter(torch.ones(self.n_tokens, self.d_model))
        self.token_norm: torch.Tensor
        self.in_mean: torch.Tensor
        self.in_std: torch.Tensor
        self.register_buffer("token_norm", torch.tensor(float(token_norm)))
        self.register_buffer("in_mean", torch.zeros(self.d_in))
        self.register_buffer("in_std", torch.ones(self.d_in))

    def set_input_stats(self, vectors: np.ndarray) -> None:
        """Standardise inputs with these (training) vectors' mean and std."""
        v = torch.as_tensor(np.asarray(vectors, dtype=np.float32))
        self.in_mean.copy_(v.mean(0))
        self.in_std.copy_(v.std(0).clamp_min(1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.float() - self.in_mean) / self.in_std
        t = self.net(x).view(-1, self.n_tokens, self.d_model)
        t = t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + 1e-6)
        return t * self.gain * self.token_norm

    def config(self) -> dict[str, Any]:
        return {
            "d_in": self.d_in,
            "d_model": self.d_model,
            "n_tokens": self.n_tokens,
            "hidden": self.hidden,
            "instruction": self.instruction,
        }

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path, *, extra: dict[str, Any] | None = None) -> Path:
        """One ``.safetensors`` file: weights + JSON config in the header metadata (atomic write)."""
        from safetensors.torch import save_file

        path = Path(path)
        meta = {
            "format": "modalrec.ItemProjector",
            "version": str(FORMAT_VERSION),
            "config": json.dumps(self.config()),
            "extra": json.dumps(extra or {}),
        }
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        with atomic_path(path) as tmp:
            save_file(state, str(tmp), metadata=meta)
        return path

    @classmethod
    def load(cls, path: str | Path) -> ItemProjector:
        from safetensors import safe_open
        from safetensors.torch import load_file

        path = Path(path)
        if not path.is_file():
            raise RunDirError(f"projector file {path} not found")
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != "modalrec.ItemProjector":
            raise RunDirError(f"{path} is not a modalrec item projector (format={meta.get('format')!r})")
        cfg = json.loads(meta["config"])
        p = cls(
            cfg["d_in"],
            cfg["d_model"],
            n_tokens=cfg["n_tokens"],
            hidden=cfg["hidden"],
            instruction=cfg["instruction"],
        )
        p.load_state_dict(load_file(str(path)))
        p.eval()
        return p


def embedding_rms(llm: LLM) -> float:
    """Typical RMS of the LLM's token embeddings (the scale soft tokens are given)."""
    w = llm.model.get_input_embeddings().weight.detach().float()
    return float(w.pow(2).mean(-1).sqrt().median())


def _prompt_parts(llm: LLM, instruction: str) -> tuple[list[int], list[int]]:
    """Token ids before and after the soft-token slot (``<ITEM>``) of the instruction."""
    if SLOT not in instruction:
        raise ConfigError(f"the projector instruction must contain {SLOT!r}: {instruction!r}")
    before, after = instruction.split(SLOT, 1)
    return (llm.encode(before) if before else []), (llm.encode(after) if after else [])


def _end_ids(llm: LLM) -> list[int]:
    eos = llm.tokenizer.eos_token_id
    return [int(eos)] if eos is not None else llm.encode("\n")


@dataclass
class TrainResult:
    projector: ItemProjector
    train_loss: list[float] = field(default_factory=list)
    valid_loss: list[float] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0


def _batch_inputs(
    llm: LLM,
    proj: ItemProjector,
    vecs: torch.Tensor,
    targets: list[list[int]],
    before: list[int],
    after: list[int],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """inputs_embeds, attention_mask and labels (-100 outside the target) for a teacher-forced batch."""
    from modalrec.llm.scoring import pad_right

    B = vecs.shape[0]
    emb = llm.model.get_input_embeddings()
    tgt, tmask = pad_right(targets, int(llm.tokenizer.pad_token_id or 0))
    L = tgt.shape[1]
    x = torch.cat([soft_prompt(llm, proj, vecs, before, after), emb(tgt)], dim=1)
    P = len(before) + proj.n_tokens + len(after)
    attn = torch.cat([torch.ones((B, P), dtype=torch.long), tmask], dim=1)
    labels = torch.full((B, P + L), -100, dtype=torch.long)
    labels[:, P:] = torch.where(tmask.bool(), tgt, torch.full_like(tgt, -100))
    return x, attn, labels


def soft_prompt(
    llm: LLM, proj: ItemProjector, vecs: torch.Tensor, before: list[int], after: list[int]
) -> torch.Tensor:
    """Input embeddings ``[B, len(before) + m + len(after), d]``: instruction text around the soft tokens.

    The soft tokens are cast to the LLM's dtype (the projector itself stays float32).
    """
    B = vecs.shape[0]
    emb = llm.model.get_input_embeddings()
    pre = emb(torch.tensor(before, dtype=torch.long)).unsqueeze(0).expand(B, -1, -1)
    post = emb(torch.tensor(after, dtype=torch.long)).unsqueeze(0).expand(B, -1, -1)
    return torch.cat([pre, proj(vecs).to(llm.dtype), post], dim=1)


def _loss(llm: LLM, x: torch.Tensor, attn: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logits = llm.model(inputs_embeds=x, attention_mask=attn).logits[:, :-1].float()
    return nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100
    )


def train_projector(
    llm: LLM,
    vectors: np.ndarray,
    texts: list[str],
    *,
    valid_vectors: np.ndarray | None = None,
    valid_texts: list[str] | None = None,
    n_tokens: int = 4,
    hidden: int | None = 512,
    instruction: str = INSTRUCTION,
    epochs: int = 5,
    batch_size: int = 16,
    lr: float = 2e-3,
    weight_decay: float = 0.01,
    patience: int = 2,
    max_seconds: float | None = None,
    max_target_tokens: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> TrainResult:
    """Train a projector so that the frozen LLM writes ``texts[i]`` from ``vectors[i]``'s soft tokens.

    With ``valid_vectors``/``valid_texts`` the epoch with the lowest validation loss is kept
    (early stopping after ``patience`` epochs without improvement). ``max_seconds`` bounds the
    wall time (training stops after the current batch). ``max_target_tokens`` cuts each target
    to its first tokens (the genres come first in :meth:`ItemText.target`), which makes a step
    cheaper at the price of learning less of the title.
    """
    if len(vectors) != len(texts) or len(texts) == 0:
        raise ConfigError(f"need one text per vector (got {len(vectors)} vectors, {len(texts)} texts)")
    torch.manual_seed(seed)  # before the projector is built: the seed fixes its initial weights
    rng = np.random.default_rng(seed)
    vectors = np.asarray(vectors, dtype=np.float32)
    proj = _new_projector(llm, vectors, n_tokens=n_tokens, hidden=hidden, instruction=instruction)
    before, after = _prompt_parts(llm, proj.instruction)
    tgt = _target_ids(llm, texts, max_target_tokens)
    vtgt = _target_ids(llm, valid_texts, max_target_tokens) if valid_texts is not None else None
    n_batches = math.ceil(len(texts) / batch_size)
    step = _Optimiser(proj, lr=lr, weight_decay=weight_decay, total_steps=max(1, epochs * n_batches))
    res = TrainResult(projector=proj)
    keeper = _BestEpoch(patience)
    t0 = time.perf_counter()

    def out_of_time() -> bool:
        return max_seconds is not None and time.perf_counter() - t0 > max_seconds

    V = torch.as_tensor(vectors)
    with _progress_bar(progress, total=epochs * n_batches) as report:
        for epoch in range(epochs):
            order = rng.permutation(len(texts))
            batches = [order[b * batch_size : (b + 1) * batch_size] for b in range(n_batches)]
            losses = _train_epoch(
                llm,
                proj,
                step,
                [(V[idx], [tgt[i] for i in idx]) for idx in batches],
                before,
                after,
                report=report,
                label=f"projector epoch {epoch + 1}",
                out_of_time=out_of_time,
            )
            res.train_loss.append(float(np.mean(losses)))
            score = res.train_loss[-1]
            if valid_vectors is not None and vtgt is not None:
                score = projector_loss(llm, proj, valid_vectors, vtgt, batch_size=batch_size * 2)
                res.valid_loss.append(score)
            if keeper.stop_after(epoch, score, proj) or out_of_time():
                break
    res.best_epoch = keeper.restore(proj)
    proj.eval()
    res.seconds = time.perf_counter() - t0
    return res


def _new_projector(
    llm: LLM, vectors: np.ndarray, *, n_tokens: int, hidden: int | None, instruction: str
) -> ItemProjector:
    """An untrained projector for ``llm``, its soft tokens scaled like the LLM's own token embeddings.

    Why the scale and the input statistics are set here, before training: the frozen LLM must see
    inputs of a familiar scale from the first step, and item vectors of any scale must give the
    network standardised inputs (the statistics are buffers, so they are saved with the weights).
    """
    proj = ItemProjector(
        vectors.shape[1],
        llm.hidden_size,
        n_tokens=n_tokens,
        hidden=hidden,
        token_norm=embedding_rms(llm),
        instruction=instruction,
    )
    proj.set_input_stats(vectors)
    return proj


def _target_ids(llm: LLM, texts: list[str], max_tokens: int | None) -> list[list[int]]:
    """Token ids of each target text plus end-of-sequence, cut to ``max_tokens`` (``None``/0: uncut).

    The end token is part of the target so that the LLM also learns where an item's text stops
    (:func:`describe` stops there).
    """
    end = _end_ids(llm)
    cut = max_tokens or None
    return [(llm.encode(t) + end)[:cut] for t in texts]


class _Optimiser:
    """AdamW with a one-cycle learning rate over the whole run; one call is one clipped step.

    Why one-cycle: a short warm-up (10% of the steps) keeps the first updates from throwing the
    soft tokens far from the LLM's embedding scale, and the decay to a small rate at the end
    makes the last epochs (often the kept ones) settle.
    """

    def __init__(self, proj: ItemProjector, *, lr: float, weight_decay: float, total_steps: int) -> None:
        self.params = list(proj.parameters())
        self.opt = torch.optim.AdamW(proj.parameters(), lr=lr, weight_decay=weight_decay)
        self.sched = torch.optim.lr_scheduler.OneCycleLR(
            self.opt, max_lr=lr, total_steps=total_steps, pct_start=0.1
        )

    def __call__(self, loss: torch.Tensor) -> None:
        self.opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        self.sched.step()


def _train_epoch(
    llm: LLM,
    proj: ItemProjector,
    step: _Optimiser,
    batches: list[tuple[torch.Tensor, list[list[int]]]],
    before: list[int],
    after: list[int],
    *,
    report: Callable[[str], None],
    label: str,
    out_of_time: Callable[[], bool],
) -> list[float]:
    """One pass over ``batches`` (item vectors, target ids); the teacher-forced loss of each batch.

    Each step is reported as ``"<label> loss <loss>"`` (the progress bar's description).

    Stops early when ``out_of_time()`` (checked after every batch, so a time budget is kept to
    within one step); the caller still ends the epoch normally (mean loss, validation).
    """
    proj.train()
    losses = []
    for vecs, targets in batches:
        x, attn, labels = _batch_inputs(llm, proj, vecs, targets, before, after)
        loss = _loss(llm, x, attn, labels)
        step(loss)
        losses.append(loss.item())
        report(f"{label} loss {loss.item():.3f}")
        if out_of_time():
            break
    return losses


class _BestEpoch:
    """Early stopping: remembers the weights of the best-scoring epoch and counts epochs since.

    Why a copy of the weights and not the last epoch's: validation loss is noisy and rises once
    the projector starts to memorise the training texts; the kept projector is the one that
    generalised best, and :class:`TrainResult` reports which epoch that was.
    """

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.best = math.inf
        self.epoch = 0
        self.bad_epochs = 0
        self.state: dict[str, torch.Tensor] | None = None

    def stop_after(self, epoch: int, score: float, proj: ItemProjector) -> bool:
        """Record epoch ``epoch``'s score; ``True`` once ``patience`` epochs brought no improvement."""
        if score < self.best - 1e-4:
            self.best, self.bad_epochs, self.epoch = score, 0, epoch
            self.state = {k: v.detach().clone() for k, v in proj.state_dict().items()}
            return False
        self.bad_epochs += 1
        return self.bad_epochs >= self.patience

    def restore(self, proj: ItemProjector) -> int:
        """Load the best epoch's weights into ``proj`` (if any epoch scored) and return its index."""
        if self.state is not None:
            proj.load_state_dict(self.state)
        return self.epoch


@contextmanager
def _progress_bar(enabled: bool, *, total: int) -> Iterator[Callable[[str], None]]:
    """A transient rich progress bar of ``total`` steps; yields ``advance(description)``.

    A context manager so that the bar is stopped (and the terminal restored) even when training
    raises or is interrupted.
    """
    if not enabled:
        yield lambda description: None
        return
    from rich.progress import Progress

    bar = Progress(transient=True)
    bar.start()
    try:
        task = bar.add_task("projector", total=total)
        yield lambda description: bar.update(task, advance=1, description=description)
    finally:
        bar.stop()


def projector_loss(
    llm: LLM,
    proj: ItemProjector,
    vectors: np.ndarray,
    targets: list[list[int]] | list[str],
    *,
    batch_size: int = 32,
) -> float:
    """Mean per-token cross entropy of the target texts given the soft tokens (no gradient)."""
    before, after = _prompt_parts(llm, proj.instruction)
    end = _end_ids(llm)
    tg = [llm.encode(t) + end if isinstance(t, str) else list(t) for t in targets]
    V = torch.as_tensor(np.asarray(vectors, dtype=np.float32))
    tot, n = 0.0, 0
    proj.eval()
    with torch.no_grad():
        for s in range(0, len(tg), batch_size):
            x, attn, labels = _batch_inputs(
                llm, proj, V[s : s + batch_size], tg[s : s + batch_size], before, after
            )
            k = int((labels[:, 1:] != -100).sum())
            tot += float(_loss(llm, x, attn, labels)) * k
            n += k
    return tot / max(n, 1)


def describe(
    llm: LLM, proj: ItemProjector, vectors: np.ndarray, *, max_new_tokens: int = 32, batch_size: int = 32
) -> list[str]:
    """Greedy text the LLM writes from each item vector's soft tokens alone (deterministic).

    All prompts have the same length (fixed instruction + ``m`` soft tokens), so a batch needs no
    padding; decoding reuses the KV cache and stops when every item has produced end-of-sequence.
    """
    from modalrec.llm.scoring import _cache_keyword, _output_cache

    V = np.asarray(vectors, dtype=np.float32)
    if V.ndim == 1:
        V = V[None, :]
    before, after = _prompt_parts(llm, proj.instruction)
    eos = set(_end_ids(llm))
    cache_kw = _cache_keyword(llm.model)
    out: list[str] = []
    proj.eval()
    with torch.inference_mode():
        for s in range(0, len(V), batch_size):
            vb = torch.as_tensor(V[s : s + batch_size])
            B = vb.shape[0]
            x = soft_prompt(llm, proj, vb, before, after)
            P = x.shape[1]
            res = llm.model(inputs_embeds=x, use_cache=True)
            cache = _output_cache(res)
            toks: list[list[int]] = [[] for _ in range(B)]
            done = torch.zeros(B, dtype=torch.bool)
            nxt = res.logits[:, -1].argmax(-1)
            for step in range(max_new_tokens):
                for b in range(B):
                    if not done[b]:
                        t = int(nxt[b])
                        if t in eos:
                            done[b] = True
                        else:
                            toks[b].append(t)
                if bool(done.all()) or step == max_new_tokens - 1:
                    break
                pos = torch.full((B, 1), P + step, dtype=torch.long)
                res = llm.model(input_ids=nxt[:, None], position_ids=pos, use_cache=True, **{cache_kw: cache})
                cache = _output_cache(res)
                nxt = res.logits[:, -1].argmax(-1)
            out.extend(str(llm.tokenizer.decode(t, skip_special_tokens=True)).strip() for t in toks)
    return out


def genres_in(text: str, vocabulary: list[str]) -> list[str]:
    """Genres of ``vocabulary`` named in the genre part of a description (before "Title:").

    >>> genres_in("Genres: Comedy, Drama. Title: Babe (1995)", ["Action", "Comedy", "Drama"])
    ['Comedy', 'Drama']
    """
    import re

    part = re.split(r"title\s*:", text, flags=re.IGNORECASE)[0]
    return [g for g in vocabulary if re.search(r"(?<!\w)" + re.escape(g) + r"(?!\w)", part, re.IGNORECASE)]


def label_logprobs(
    llm: LLM,
    proj: ItemProjector,
    vectors: np.ndarray,
    labels: list[str],
    *,
    lead: str = "Genres:",
    batch_size: int = 16,
) -> np.ndarray:
    """``log p(" " + label | soft tokens, lead)`` for every item vector and label: [N, n_labels].

    The constrained counterpart of :func:`describe`: instead of letting the LLM write freely, each
    label of a closed vocabulary (e.g. the catalogue's genres) is scored as the continuation of
    ``lead`` after the item's soft tokens. Each item's prompt runs once; its KV cache is repeated
    for all labels (one batched pass per item batch).
    """
    from modalrec.llm.scoring import _output_cache, _repeat_cache, continued_logprobs, pad_right

    V = np.asarray(vectors, dtype=np.float32)
    if V.ndim == 1:
        V = V[None, :]
    if not labels:
        raise ConfigError("label_logprobs needs at least one label")
    before, after = _prompt_parts(llm, proj.instruction)
    lead_ids = llm.encode(lead)
    lab = [llm.encode(" " + str(g)) for g in labels]
    ids, mask = pad_right(lab, int(llm.tokenizer.pad_token_id or 0))
    G, Lmax = ids.shape
    out = np.zeros((len(V), G), dtype=np.float64)
    proj.eval()
    with torch.inference_mode():
        for s in range(0, len(V), batch_size):
            vb = torch.as_tensor(V[s : s + batch_size])
            B = vb.shape[0]
            x = soft_prompt(llm, proj, vb, before, after + lead_ids)
            P = x.shape[1]
            first = llm.model(inputs_embeds=x, use_cache=True)
            first_lp = torch.log_softmax(first.logits[:, -1].float(), dim=-1)  # [B, vocab]
            lp = first_lp[:, ids[:, 0]].double()  # [B, G]
            if Lmax > 1:
                cache = _repeat_cache(_output_cache(first), G)  # rows: item-major, label-minor
                more = continued_logprobs(llm.model, cache, ids.repeat(B, 1), mask.repeat(B, 1), P)
                lp = lp + more.view(B, G)
            out[s : s + B] = lp.numpy()
    return out


def name_labels(scores: np.ndarray, reference: np.ndarray | None = None, k: int = 1) -> np.ndarray:
    """Indices of the ``k`` best labels per row, optionally calibrated against reference rows.

    Calibration (``reference`` = label scores of items the projector was tuned on, e.g. its
    validation items) subtracts each label's mean reference score, so a label the LLM finds likely
    after *any* soft tokens (a frequent genre, or the one first in alphabetical lists) does not win
    by default: what remains is how much this item's tokens raise a label (contextual calibration).

    >>> name_labels(np.array([[-1.0, -2.0], [-1.0, -0.5]])).ravel().tolist()
    [0, 1]
    >>> name_labels(np.array([[-1.0, -2.0]]), reference=np.array([[-0.5, -2.5]])).ravel().tolist()
    [1]
    """
    s = np.asarray(scores, dtype=np.float64)
    if reference is not None:
        s = s - np.asarray(reference, dtype=np.float64).mean(axis=0, keepdims=True)
    return np.argsort(-s, axis=1, kind="stable")[:, :k]

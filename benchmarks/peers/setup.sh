#!/usr/bin/env bash
# Create one virtual environment per peer library (RecBole, Cornac, implicit) OUTSIDE the repo.
#
# Why separate venvs: the peers pin versions that clash with modalrec's own environment
# (RecBole 1.2.1 needs numpy<2, pandas<2.3, scipy<1.12; Cornac 3.0.1 needs numpy>2). Each venv gets
# the CPU torch 2.13.0 where torch is needed, never a CUDA build.
#
# Usage: benchmarks/peers/setup.sh [recbole|cornac|implicit ...]   (default: all three)
# Location: ${MODALREC_PEERS:-$HOME/.cache/modalrec-peers}/<lib>
# Idempotent: a venv whose smoke import already works is left alone; a broken one is rebuilt.
set -euo pipefail

ROOT="${MODALREC_PEERS:-$HOME/.cache/modalrec-peers}"
PY="${MODALREC_PEERS_PYTHON:-python3.11}"
LIBS=("$@")
if [ ${#LIBS[@]} -eq 0 ]; then LIBS=(recbole cornac implicit); fi
mkdir -p "$ROOT"

smoke() {  # $1 = lib; exits 0 when the venv imports the library and prints its version
  local py="$ROOT/$1/bin/python"
  [ -x "$py" ] || return 1
  case "$1" in
    recbole)  "$py" -c "import recbole, torch; assert torch.__version__.startswith('2.13.0') and not torch.cuda.is_available(); print('recbole', recbole.__version__, 'torch', torch.__version__)" ;;
    cornac)   "$py" -c "import cornac, torch; from cornac.models import BPR, VBPR; assert torch.__version__.startswith('2.13.0'); print('cornac', cornac.__version__, 'torch', torch.__version__)" ;;
    implicit) "$py" -c "import implicit; from implicit.cpu.bpr import BayesianPersonalizedRanking; print('implicit', implicit.__version__)" ;;
    *) return 1 ;;
  esac
}

install() {  # $1 = lib
  local venv="$ROOT/$1"
  rm -rf "$venv"
  "$PY" -m venv "$venv"
  local pip=("$venv/bin/python" -m pip install --quiet)
  "${pip[@]}" --upgrade "pip<26" wheel
  case "$1" in
    recbole)
      # torch first, from the local CPU wheel; the rest pinned so RecBole 1.2.1 still imports.
      "${pip[@]}" "torch==2.13.0"
      "${pip[@]}" "recbole==1.2.1" "torch==2.13.0" "numpy<2" "pandas<2.3" "scipy<1.12" "setuptools<81"
      ;;
    cornac)
      # VBPR is a torch model in Cornac 3; LightGCN would need DGL, which has no wheel for this torch.
      "${pip[@]}" "torch==2.13.0"
      "${pip[@]}" "cornac==3.0.1" "torch==2.13.0"
      ;;
    implicit)
      "${pip[@]}" "implicit==0.7.3"
      ;;
    *) echo "unknown peer library: $1" >&2; exit 2 ;;
  esac
  # Guard: a CUDA torch or torchvision must never slip in.
  if "$venv/bin/python" -m pip list 2>/dev/null | grep -Eiq '^(torchvision|nvidia-)'; then
    echo "ERROR: $1 venv pulled CUDA packages or torchvision; refusing" >&2; exit 3
  fi
}

for lib in "${LIBS[@]}"; do
  if smoke "$lib" >/dev/null 2>&1; then
    echo "[skip] $lib: $(smoke "$lib" 2>/dev/null | tail -1) in $ROOT/$lib"
    continue
  fi
  echo "[build] $lib venv in $ROOT/$lib"
  install "$lib"
  if ! smoke "$lib"; then echo "ERROR: $lib venv built but the smoke import failed" >&2; exit 1; fi
done
echo "peer venvs ready under $ROOT"

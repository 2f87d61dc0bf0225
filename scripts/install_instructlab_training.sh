#!/usr/bin/env bash
# Install InstructLab's trainer (instructlab-training) for the CPU into its own virtual environment,
# apart from the project's .venv, so that tests/test_instructlab_training.py can run its real data
# processing (`instructlab.training.data_process`) on the files a generate run writes.
#
#   scripts/install_instructlab_training.sh [VENV_DIR]   (default: .venv-ilab-training at the repository root)
#
# Idempotent: does nothing when VENV_DIR already imports instructlab.training.data_process at the
# pinned version. torch is installed first and pinned to 2.13.0, the CPU build that pip takes from this
# machine's local wheel directory; left to itself the resolver could pull a multi-GB CUDA torch.
# Only the package's base requirements are installed (all of them, CPU-only): none of its extras
# (cuda: flash-attn, bitsandbytes, liger-kernel, mamba-ssm; deepspeed; rocm; hpu) is needed to process data.
set -euo pipefail

ILAB_TRAINING_VERSION="${ILAB_TRAINING_VERSION:-0.16.2}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
PYTHON="${PYTHON:-python3}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-$ROOT/.venv-ilab-training}"
case "$VENV" in /*) ;; *) VENV="$PWD/$VENV" ;; esac
export PIP_DISABLE_PIP_VERSION_CHECK=1

log() { echo "[install_instructlab_training] $*"; }

# Prints nothing, succeeds only if the venv imports what the test needs at the pinned versions.
installed_ok() {
    [ -x "$VENV/bin/python" ] || return 1
    "$VENV/bin/python" - "$ILAB_TRAINING_VERSION" "$TORCH_VERSION" >/dev/null 2>&1 <<'EOF'
import sys
from importlib.metadata import version
import datasets, tokenizers, torch, transformers, safetensors  # noqa: F401  (the imports are the check)
import instructlab.training.data_process  # noqa: F401
assert version("instructlab-training") == sys.argv[1], version("instructlab-training")
assert torch.__version__.split("+")[0] == sys.argv[2], torch.__version__
EOF
}

# Keep the venv out of git even where .gitignore does not list it.
keep_out_of_git() {
    [ -d "$VENV" ] && printf '# created by scripts/install_instructlab_training.sh: keep this virtual environment out of git\n*\n' \
        > "$VENV/.gitignore"
    return 0
}

if installed_ok; then
    keep_out_of_git
    log "instructlab-training==$ILAB_TRAINING_VERSION already installed in $VENV; nothing to do"
    exit 0
fi

start=$(date +%s)
if [ ! -x "$VENV/bin/python" ]; then
    log "creating virtual environment $VENV"
    "$PYTHON" -m venv "$VENV"
fi
keep_out_of_git
PIP=("$VENV/bin/python" -m pip)

log "installing torch==$TORCH_VERSION (CPU build)"
"${PIP[@]}" install -q "torch==$TORCH_VERSION"

log "installing instructlab-training==$ILAB_TRAINING_VERSION (base requirements only, no extras)"
# torch stays pinned so that the resolver cannot swap in another (CUDA) build; safetensors and
# tokenizers are for scripts/build_tiny_model.py (transformers normally brings both).
"${PIP[@]}" install -q "instructlab-training==$ILAB_TRAINING_VERSION" "torch==$TORCH_VERSION" safetensors tokenizers

log "checking the installation"
if ! installed_ok; then
    log "ERROR: $VENV does not import instructlab.training.data_process (instructlab-training==$ILAB_TRAINING_VERSION, torch==$TORCH_VERSION):"
    "$VENV/bin/python" -c "import torch, instructlab.training.data_process; print(torch.__version__)" || true
    exit 1
fi
"$VENV/bin/python" - <<'EOF'
from importlib.metadata import version
import torch
print(f"[install_instructlab_training] instructlab-training {version('instructlab-training')}, torch {torch.__version__}, "
      f"transformers {version('transformers')}, datasets {version('datasets')}")
EOF
log "done in $(( $(date +%s) - start )) s; $(du -sh "$VENV" | cut -f1) in $VENV"

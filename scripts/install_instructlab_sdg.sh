#!/usr/bin/env bash
# Install InstructLab's synthetic data generator (instructlab-sdg, "the anchor") for the CPU into its own
# virtual environment, apart from the project's .venv, so that benchmarks/vs_instructlab.py can run its
# real `generate_data` against the same teacher server and taxonomy as sdg.
#
#   scripts/install_instructlab_sdg.sh [VENV_DIR]   (default: .venv-ilab-sdg at the repository root)
#
# Idempotent: does nothing when VENV_DIR already imports instructlab.sdg.generate_data at the pinned
# version. torch is installed first and pinned to the CPU build that pip takes from this machine's local
# wheel directory (left to itself the resolver could pull a multi-GB CUDA torch, which docling wants).
# pandas is held below 3: with pandas 3 the anchor's mixing step crashes (`features can't be aligned`,
# string vs large_string ids, see NOTES.md "The anchor, run here").
set -euo pipefail

ILAB_SDG_VERSION="${ILAB_SDG_VERSION:-0.8.3}"
TOOL=install_instructlab_sdg DEFAULT_VENV=.venv-ilab-sdg PACKAGE="instructlab-sdg==$ILAB_SDG_VERSION"
source "$(dirname "${BASH_SOURCE[0]}")/cpu_torch_venv.sh"

# Prints nothing, succeeds only if the venv imports what the benchmark needs at the pinned versions.
installed_ok() {
    [ -x "$VENV/bin/python" ] || return 1
    "$VENV/bin/python" - "$ILAB_SDG_VERSION" "$TORCH_VERSION" >/dev/null 2>&1 <<'PY'
import sys
from importlib.metadata import version
import openai, pandas, torch  # noqa: F401  (the imports are the check)
from instructlab.sdg.generate_data import generate_data  # noqa: F401
assert version("instructlab-sdg") == sys.argv[1], version("instructlab-sdg")
assert torch.__version__.split("+")[0] == sys.argv[2], torch.__version__
assert int(pandas.__version__.split(".")[0]) < 3, pandas.__version__
PY
}

cpu_venv_begin "${1:-}"

log "installing instructlab-sdg==$ILAB_SDG_VERSION with pandas<3"
"${PIP[@]}" install -q "instructlab-sdg==$ILAB_SDG_VERSION" "torch==$TORCH_VERSION" "pandas<3"

cpu_venv_end "import torch, pandas; from instructlab.sdg.generate_data import generate_data; print(torch.__version__, pandas.__version__)"
"$VENV/bin/python" - <<'PY'
from importlib.metadata import version
import pandas, torch
print(f"[install_instructlab_sdg] instructlab-sdg {version('instructlab-sdg')}, torch {torch.__version__}, "
      f"pandas {pandas.__version__}, datasets {version('datasets')}, openai {version('openai')}")
PY
cpu_venv_done

# Sourced by scripts/install_*.sh: the common part of a tool installed into a virtual environment of its
# own beside the project's .venv, on the CPU torch that pip takes from this machine's local wheel
# directory (pinned: left to itself a resolver could pull a multi-GB CUDA build).
#
# The caller sets TOOL (its log prefix), DEFAULT_VENV (under the repository root) and PACKAGE (what it
# installs, for messages), defines `installed_ok` (succeeds only when the venv already has everything at
# the pinned versions), then calls:  cpu_venv_begin "${1:-}"  ... its own pip steps ...  cpu_venv_end
# cpu_venv_begin exits 0 at once when installed_ok passes (idempotent), else creates the venv and
# installs torch; cpu_venv_end runs installed_ok again and prints the time and size.

TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
PYTHON="${PYTHON:-python3}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PIP_DISABLE_PIP_VERSION_CHECK=1

log() { echo "[$TOOL] $*"; }

# Keep the venv (GBs) out of git even where .gitignore does not list it (as Python 3.13's venv does).
keep_out_of_git() {
    [ -d "$VENV" ] && printf '# created by scripts/%s.sh: keep this virtual environment out of git\n*\n' "$TOOL" \
        > "$VENV/.gitignore"
    return 0
}

cpu_venv_begin() {
    VENV="${1:-$ROOT/$DEFAULT_VENV}"
    case "$VENV" in /*) ;; *) VENV="$PWD/$VENV" ;; esac
    if installed_ok; then
        keep_out_of_git
        log "$PACKAGE already installed in $VENV; nothing to do"
        exit 0
    fi
    CPU_VENV_START=$(date +%s)
    if [ ! -x "$VENV/bin/python" ]; then
        log "creating virtual environment $VENV"
        "$PYTHON" -m venv "$VENV"
    fi
    keep_out_of_git
    PIP=("$VENV/bin/python" -m pip)
    log "installing torch==$TORCH_VERSION (CPU build)"
    "${PIP[@]}" install -q "torch==$TORCH_VERSION"
}

# $1: the imports to show when the check fails (a python -c statement).
cpu_venv_end() {
    log "checking the installation"
    if ! installed_ok; then
        log "ERROR: $VENV does not have $PACKAGE with torch==$TORCH_VERSION:"
        "$VENV/bin/python" -c "$1" || true
        exit 1
    fi
}

cpu_venv_done() {
    log "done in $(( $(date +%s) - CPU_VENV_START )) s; $(du -sh "$VENV" | cut -f1) in $VENV"
}

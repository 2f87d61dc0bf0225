#!/usr/bin/env bash
# Install a real headless browser for tests/test_html_report_browser.py (Debian 12, root).
#
#   bash scripts/install_browser.sh [VENV_DIR]      (default: .venv at the repository root)
#
# What it installs, only when missing: Debian's `chromium` and `chromium-driver` (the driver always
# matches the browser's version, which a separately downloaded driver would not) with apt-get, and the
# Selenium Python package into VENV_DIR with pip. Idempotent: when all three are present it returns at
# once without touching the network.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${1:-$HERE/.venv}
SELENIUM_SPEC=${SELENIUM_SPEC:-selenium>=4.15,<5}
log() { printf '[install_browser] %s\n' "$*"; }

have_browser() { command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; }

if ! have_browser; then
    [ "$(id -u)" = 0 ] || { log "chromium/chromedriver missing and not root: run as root (apt-get)" >&2; exit 1; }
    export DEBIAN_FRONTEND=noninteractive
    log "installing chromium and chromium-driver with apt-get"
    apt-get update -q
    apt-get install -y -q --no-install-recommends chromium chromium-driver fonts-dejavu-core
    have_browser || { log "chromium or chromedriver still missing after apt-get" >&2; exit 1; }
fi

[ -x "$VENV/bin/python" ] || { log "no Python venv at $VENV (make it first: python3 -m venv $VENV)" >&2; exit 1; }
if ! "$VENV/bin/python" -c "import selenium.webdriver" >/dev/null 2>&1; then
    log "installing $SELENIUM_SPEC into $VENV"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/python" -m pip install -q "$SELENIUM_SPEC"
fi

log "ready: $(chromium --version 2>/dev/null | head -n1); $(chromedriver --version 2>/dev/null | head -n1);" \
    "selenium $("$VENV/bin/python" -c 'import selenium; print(selenium.__version__)')"

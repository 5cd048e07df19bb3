#!/usr/bin/env bash
# What the browser tests and `python -m benchmarks.browser` need, installed when missing:
# Debian's chromium (apt-get, as root) and Playwright for Python (the venv's pip). It never
# downloads a browser (no `playwright install`): the tests drive the system's chromium.
#
#   bash scripts/browser.sh           install what is missing (idempotent), then report
#   bash scripts/browser.sh status    report only; exit 0 only when both are there
#
# VENV (default .venv) picks the virtual environment; CALLRT_CHROMIUM the browser binary
# (default /usr/bin/chromium). Nothing needs starting: each test launches its own headless browser.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="${VENV:-$ROOT/.venv}"
[[ "$VENV" = /* ]] || VENV="$ROOT/$VENV"
PYTHON="$VENV/bin/python"
CHROMIUM="${CALLRT_CHROMIUM:-/usr/bin/chromium}"
PLAYWRIGHT_SPEC="${CALLRT_PLAYWRIGHT_SPEC:-playwright>=1.45,<2}"

log() { printf 'browser.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

have_chromium() { [[ -x "$CHROMIUM" ]]; }
have_playwright() { [[ -x "$PYTHON" ]] && "$PYTHON" -c 'import playwright.async_api' >/dev/null 2>&1; }

report() {
    local ok=0
    if have_chromium; then
        log "chromium: $CHROMIUM ($("$CHROMIUM" --version 2>/dev/null | head -n1 || echo 'version unknown'))"
    else
        log "chromium: missing at $CHROMIUM"; ok=1
    fi
    if have_playwright; then
        log "playwright: $("$PYTHON" -c 'import importlib.metadata as m; print(m.version("playwright"))') in $VENV"
    else
        log "playwright: missing in $VENV"; ok=1
    fi
    return $ok
}

install_chromium() {
    have_chromium && return 0
    [[ "$CHROMIUM" == /usr/bin/chromium ]] || die "no browser at CALLRT_CHROMIUM=$CHROMIUM (install it, or unset it)"
    [[ $(id -u) -eq 0 ]] || die "chromium is missing; run as root (or: sudo apt-get install chromium)"
    command -v apt-get >/dev/null || die "chromium is missing and there is no apt-get: install chromium yourself"
    log "installing Debian's chromium with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium >/dev/null
    have_chromium || die "apt-get installed chromium, but $CHROMIUM is not there"
}

install_playwright() {
    have_playwright && return 0
    [[ -x "$PYTHON" ]] || die "no virtual environment at $VENV (make test creates it)"
    log "installing Playwright for Python into $VENV (the driver only: the system's chromium is used)"
    "$PYTHON" -m pip install -q "$PLAYWRIGHT_SPEC"
    have_playwright || die "pip installed playwright, but it does not import"
}

case "${1:-install}" in
    install)
        install_chromium
        install_playwright
        report
        ;;
    status)
        report
        ;;
    *)
        die "usage: bash scripts/browser.sh [install|status]"
        ;;
esac

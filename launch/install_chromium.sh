#!/usr/bin/env bash
# Installs Debian's headless-capable Chromium, which tests/launch/test_report.py uses to open the HTML
# report of `recrl report` and take a screenshot of it. Idempotent: nothing happens when a `chromium`
# is already on PATH. Needs root (or sudo) and apt; other systems: install Chromium or Chrome by hand
# and put it on PATH as `chromium`.
#
# Usage: bash launch/install_chromium.sh
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
command -v apt-get >/dev/null 2>&1 || {
    echo "install_chromium.sh: no apt-get here; install Chromium yourself and put \`chromium\` on PATH" >&2
    exit 1
}
SUDO=()
if [[ "$(id -u)" != 0 ]]; then
    command -v sudo >/dev/null 2>&1 || { echo "install_chromium.sh: run as root (apt-get needs it)" >&2; exit 1; }
    SUDO=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
# fonts-dejavu-core: a font for the page's text, so a bare container renders readable screenshots
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
command -v chromium >/dev/null

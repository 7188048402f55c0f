#!/usr/bin/env bash
# Creates a fresh virtual environment in .venv with everything the tests need.
# torch is pinned here, for the tests only; the plugin itself never pins it.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
# The browser tests drive Debian's Chromium (playwright's own browser download is not used).
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "Installing Chromium for the browser tests"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "Chromium not found and not root: install it (apt-get install chromium) to run the browser tests"
    fi
fi
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
"${PIP[@]}" --upgrade pip
"${PIP[@]}" torch==2.14.1 torchvision==0.29.1
"${PIP[@]}" torchaudio==2.11.0
"${PIP[@]}" -e ".[test]"
# The test hosts: ComfyUI versions from the package registry into .hosts/ (docs/test-hosts.md), plus the checkout
# COMFYUI_PATH names (else /opt/ComfyUI where one is), whose requirements and page are installed too.
ALSO=()
if [ -n "${COMFYUI_PATH:-}" ]; then
    ALSO=(--also "$COMFYUI_PATH")
elif [ -f /opt/ComfyUI/main.py ] && [ -d /opt/ComfyUI/comfy ]; then
    ALSO=(--also /opt/ComfyUI)
fi
"$VENV/bin/python" scripts/provision_hosts.py "${ALSO[@]}"
echo "Environment ready: $VENV"

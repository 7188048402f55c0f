#!/usr/bin/env bash
# Creates a fresh virtual environment in .venv with everything the tests need.
# torch is pinned here, for the tests only; the plugin itself never pins it.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
# System tools the tests drive: Debian's Chromium for the browser tests (playwright's own browser download is not
# used), espeak-ng and sox for the sounds of the soak test (tests/test_soak.py).
MISSING=()
for tool in chromium espeak-ng sox; do
    command -v "$tool" >/dev/null 2>&1 || MISSING+=("$tool")
done
if [ "${#MISSING[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "Installing ${MISSING[*]} for the tests"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${MISSING[@]}" >/dev/null
    else
        echo "Not found and not root: install them (apt-get install ${MISSING[*]}) to run the browser and soak tests"
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

#!/usr/bin/env bash
# Make the build venv of the installer: the app from a wheel of this checkout (not editable),
# CPU torch, napari, PySide6, pyqtgraph and PyInstaller; prints its Python.
#   packaging/make_build_venv.sh VENV [PYTHON]
# PYTHON: the interpreter to build it from (default python3; the app needs >= 3.10).
# On a machine with an NVIDIA driver, add the CPU index so that pip takes the CPU torch:
#   PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu packaging/make_build_venv.sh VENV
set -euo pipefail
VENV="${1:?usage: make_build_venv.sh VENV [PYTHON]}"
PY="${2:-python3}"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
WHEELS="$(mktemp -d)"
trap 'rm -rf "$WHEELS"' EXIT
"$PY" -m venv "$VENV"
"$VENV/bin/pip" wheel --no-deps -q -w "$WHEELS" "$REPO" >&2
rm -rf "$REPO/build" "$REPO"/*.egg-info
"$VENV/bin/pip" install -q "torch==2.13.0" "$WHEELS"/uda_studio-*.whl napari \
    "PySide6-Essentials<6.10" pyqtgraph npe2 pyinstaller pyinstaller-hooks-contrib >&2
echo "$VENV/bin/python"

#!/usr/bin/env bash
# Sets up everything UDA Studio and its tests need, in ./.venv:
#   - system libraries for the GUI tests (virtual X server, Mesa OpenGL, Qt's xcb deps), when
#     run as root on a Debian/Ubuntu machine (skipped otherwise: install them yourself), and
#     mricron-data (the Colin27 T1 head that tests/runs/test_real_scan.py predicts on);
#   - PyTorch (TORCH_SPEC, default torch==2.13.0), then this package with its dev and gui extras.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && [ "${UDA_SKIP_APT:-0}" != 1 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends \
    xvfb xauth libgl1 libegl1 libgl1-mesa-dri libglx-mesa0 libxkbcommon-x11-0 \
    libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 \
    libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0 libxcb-cursor0 libdbus-1-3 \
    libfontconfig1 mricron-data >/dev/null
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
.venv/bin/python -m pip install -q -e ".[dev,app]"
echo "UDA Studio is set up in .venv (run the tests with: .venv/bin/python -m pytest)"

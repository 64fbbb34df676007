#!/usr/bin/env bash
# Creates .venv and installs samq into it without ever downloading CUDA torch.
#   scripts/install.sh          runtime only
#   scripts/install.sh --dev    plus the test and lint tools
# sam2 ships as an sdist whose isolated build env would pull the newest CUDA torch; we install torch from the
# constraints file first and build sam2 without isolation (and without its optional CUDA extension).
set -euo pipefail
cd "$(dirname "$0")/.."
extra=""
[ "${1:-}" = "--dev" ] && extra="[dev]"
[ -x .venv/bin/python ] || python3 -m venv .venv
export PIP_CONSTRAINT="$PWD/constraints.txt" SAM2_BUILD_CUDA=0 PIP_DISABLE_PIP_VERSION_CHECK=1
.venv/bin/pip install -q -c constraints.txt torch torchvision "setuptools>=68" wheel
.venv/bin/pip install -q --no-build-isolation -c constraints.txt -e ".${extra}"

#!/usr/bin/env bash
# Creates .venv and installs samq into it from the locks in requirements/, never downloading CUDA torch.
#   scripts/install.sh          runtime only (requirements/runtime.txt)
#   scripts/install.sh --dev    plus the test and lint tools (requirements/dev.txt), Roboflow's inference-sdk in
#                               .venv-roboflow (requirements/roboflow-client.txt) for the compatibility tests, and
#                               Debian's chromium and chromium-driver for the browser tests (apt, when run as root)
# Every package but torch and torchvision is pinned with hashes (pip's hash-checking mode), so two installs of
# the same commit get the same files. torch and torchvision are pinned to exact versions by constraints.txt; which
# build of them pip takes is the index's choice (the CPU wheel on these machines; see README, Development).
# sam2, iopath and antlr4-python3-runtime ship as sdists: they are built without build isolation, against the
# locked setuptools installed first (an isolated build would pull the newest CUDA torch), and without sam2's
# optional CUDA extension (SAM2_BUILD_CUDA=0).
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."  # the checkout, also when called through a link
lock=requirements/runtime.txt
[ "${1:-}" = "--dev" ] && lock=requirements/dev.txt
[ -x .venv/bin/python ] || python3 -m venv .venv
export SAM2_BUILD_CUDA=0 PIP_DISABLE_PIP_VERSION_CHECK=1
pip=(.venv/bin/pip install -q)
"${pip[@]}" --require-hashes --no-deps -r requirements/build.txt
"${pip[@]}" --require-hashes --no-deps --no-build-isolation -r "$lock"
"${pip[@]}" -c constraints.txt torch torchvision
"${pip[@]}" --no-deps --no-build-isolation -e .
.venv/bin/pip check
if [ "${1:-}" = "--dev" ]; then  # Roboflow's client, in an environment of its own (requirements/roboflow-client.in)
  [ -x .venv-roboflow/bin/python ] || python3 -m venv .venv-roboflow
  .venv-roboflow/bin/pip install -q --require-hashes --no-deps -r requirements/roboflow-client.txt
  .venv-roboflow/bin/pip check
  if [ ! -x /usr/bin/chromedriver ]; then  # the pages' tests drive Debian's Chromium headless (no browser download)
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver
    else
      echo "install.sh: the browser tests need Debian's Chromium: sudo apt-get install chromium chromium-driver" >&2
    fi
  fi
fi

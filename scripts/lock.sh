#!/usr/bin/env bash
# Refreshes the locks in requirements/ from pyproject.toml and constraints.txt with uv (a dev dependency, so the
# version that writes the locks is itself locked). Run it after changing a dependency in pyproject.toml or
# constraints.txt; pass --upgrade to move every pin to the newest release the ranges allow, or
# --upgrade-package NAME for one. Commit the locks with the change that needs them.
#   bash scripts/install.sh --dev && bash scripts/lock.sh [--upgrade | --upgrade-package NAME ...]
#
# What is locked: every runtime and dev dependency, with hashes, for CPython 3.11 on Linux x86_64 (CI, the
# embedded default and the Docker images). torch and torchvision are left out of the locks (--no-emit-package):
# their exact versions live in constraints.txt and their build is the installer's choice (the CPU wheel here, the
# CUDA wheel in the GPU image). Their own dependencies are locked, resolved against the CPU wheel, so a lock never
# names a CUDA package. The CPU wheel's metadata comes from the pip find-links of this machine when set, else from
# PyTorch's CPU index.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${PIP_FIND_LINKS:-}" ]; then
  export UV_FIND_LINKS="${UV_FIND_LINKS:-$PIP_FIND_LINKS}"
else
  export UV_TORCH_BACKEND="${UV_TORCH_BACKEND:-cpu}"
fi
compile=(.venv/bin/uv pip compile --quiet --generate-hashes --python-version 3.11
         --python-platform x86_64-manylinux_2_28 --custom-compile-command "bash scripts/lock.sh"
         --no-emit-package torch --no-emit-package torchvision -c constraints.txt)
"${compile[@]}" "$@" pyproject.toml -o requirements/runtime.txt
"${compile[@]}" "$@" pyproject.toml --extra dev -c requirements/runtime.txt -o requirements/dev.txt
"${compile[@]}" "$@" requirements/build.in -c requirements/runtime.txt -o requirements/build.txt
"${compile[@]}" "$@" requirements/roboflow-client.in -o requirements/roboflow-client.txt
if grep -qE '^(nvidia-|triton==)' requirements/*.txt; then
  echo "lock.sh: a lock names a CUDA package: torch was resolved from a CUDA wheel" >&2
  exit 1
fi

# syntax=docker/dockerfile:1
#
# samq images: one Dockerfile, two targets.
#
#   docker build --target api    -t samq-api .
#   docker build --target worker -t samq-worker:cpu .
#   docker build --target worker --build-arg TORCH_INDEX_URL=https://pypi.org/simple -t samq-worker:cuda .
#
# What the images contain: samq is ONE Python package whose dependencies include torch, torchvision and sam2, so
# both targets carry them. The API never imports them (nothing under api/ loads model code; the build checks
# this below), so build the api target with the default CPU index: the dead weight is then the CPU torch wheel,
# not several GB of CUDA libraries. Model weights are never baked in: workers read them from SAMQ_WORKER_MODELS_DIR
# (a volume) or download them from the Hugging Face hub on first use.

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS base

# Where torch and torchvision come from; their versions always come from constraints.txt.
#   default                               PyTorch's CPU-only index: small, no CUDA (API, CPU workers)
#   https://pypi.org/simple               PyPI's Linux x86_64 torch wheels are CUDA builds (GPU workers)
#   https://download.pytorch.org/whl/cuXYZ  one specific CUDA variant, if your driver needs it
# The GPU image needs no CUDA base image: the wheels bundle the CUDA runtime; the host provides the driver
# (NVIDIA Container Toolkit).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/samq \
    PATH=/opt/samq/bin:$PATH

RUN python -m venv /opt/samq \
 && useradd --system --uid 10001 --user-group --create-home --home-dir /home/samq --shell /usr/sbin/nologin samq

WORKDIR /src

# The same locks as scripts/install.sh. torch and torchvision first, at the exact versions of constraints.txt, from
# TORCH_INDEX_URL (their own layer, so code and lock changes do not re-download them); then every other package
# from requirements/runtime.txt, pinned with hashes (this also sets torch's own dependencies to the locked
# versions); then samq itself. sam2 (and two other sdists) build without isolation against the locked setuptools
# (an isolated build would pull the newest CUDA torch), without sam2's optional CUDA extension (SAM2_BUILD_CUDA=0,
# no compiler or CUDA toolkit needed). pip check proves the result consistent.
COPY constraints.txt ./
RUN pip install -c constraints.txt --index-url "${TORCH_INDEX_URL}" torch torchvision

COPY requirements/ requirements/
RUN pip install --require-hashes --no-deps -r requirements/build.txt \
 && SAM2_BUILD_CUDA=0 pip install --require-hashes --no-deps --no-build-isolation -r requirements/runtime.txt

COPY pyproject.toml README.md ./
COPY samq/ samq/
COPY api/ api/
COPY tasks/ tasks/
COPY worker/ worker/
COPY storage/ storage/
RUN pip install --no-deps --no-build-isolation /src && pip check

# Smoke-test the installed package (outside /src, so the sources there do not shadow it).
WORKDIR /home/samq
RUN python -c "import sys, api.app, samq.cli; assert 'torch' not in sys.modules, 'the API must not import torch'" \
 && python -c "import worker.celery_app, worker.celery_tasks"

# ---------------------------------------------------------------------------------------------------------------
FROM base AS api

USER samq
ENV SAMQ_API_PORT=8000
EXPOSE 8000

# waitress stops cleanly on SIGINT; as PID 1 the process would ignore Docker's default SIGTERM.
STOPSIGNAL SIGINT

# Liveness only; docker-compose.yml checks /readyz (Redis and storage reachable) instead.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('SAMQ_API_PORT', '8000'), timeout=4)"]

# Binding 0.0.0.0 requires SAMQ_API_KEYS (comma-separated tenant:key pairs): without keys the API refuses to
# start on anything but a loopback address.
CMD ["samq", "api", "--host", "0.0.0.0"]

# ---------------------------------------------------------------------------------------------------------------
FROM base AS worker

# Checkpoints are looked up in /models first (<model id>.pt, e.g. sam2.1_hiera_tiny.pt); hub downloads are cached
# under /models/hub, so a volume on /models keeps both across restarts.
ENV SAMQ_WORKER_MODELS_DIR=/models \
    SAMQ_WORKER_HUB_CACHE_DIR=/models/hub \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
RUN mkdir -p /models/hub && chown -R samq:samq /models

USER samq

# Answers when this container's Celery node replies to a ping over the broker. `samq worker` names its node
# samq-<pid>@<hostname>, and with the exec-form CMD below the worker is PID 1: keep it that way (no shell or init
# wrapper in front of it) or adjust this check. The Celery main process answers even while a job runs in its
# pool child.
HEALTHCHECK --interval=30s --timeout=20s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import socket, sys; from worker.celery_app import create_celery; sys.exit(0 if create_celery().control.ping(destination=['samq-1@' + socket.gethostname()], timeout=10) else 1)"]

# One worker process per GPU: prefork with concurrency 1 keeps Celery's time limits, and the model loads lazily
# in the pool child (never CUDA in the parent). By default every queue (interactive, sam3, video, bulk, io), so a
# lone container runs every job type; split them with --queues per deployment, as docker-compose.yml does, keeping
# at least one worker on each queue. SIGTERM (Docker's default) is a Celery warm shutdown: the running job finishes
# first, so give the container a stop grace period that fits your jobs; a job cut short is re-run by another worker
# (see README, Reliability).
CMD ["samq", "worker", "--concurrency", "1"]

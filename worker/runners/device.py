"""Where models run and how: the device a worker's settings choose, and the inference context of every model call
(``inference_mode``, plus bf16 autocast on CUDA). Shared by every runner, so the choice is made once."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from worker.settings import WorkerSettings


def select_device(settings: WorkerSettings) -> str:
    if settings.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return settings.device


@contextlib.contextmanager
def inference(device: str) -> Iterator[None]:
    """``inference_mode``, plus bf16 autocast on CUDA (fp32 on CPU)."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.inference_mode())
        if device == "cuda":
            stack.enter_context(torch.autocast("cuda", dtype=torch.bfloat16))
        yield

"""The shrunk, seeded SAM3 image runners' test inputs: settings, the image, the phrases, a weights digest."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch

from worker.settings import WorkerSettings

SIZE = 224  # the random-weights default: a 16x16 patch grid
QUERIES_PER_PROMPT = 32  # num_queries of the shrunk DETR decoder
KEEP_ALL = 10_000


def sam3_settings(**overrides: Any) -> WorkerSettings:
    values: dict[str, Any] = {"random_weights": True, "device": "cpu", "seed": 0, "allow_download": False}
    values.update(overrides)
    return WorkerSettings(**values)


def sample_image() -> np.ndarray:
    rng = np.random.default_rng(42)
    image = rng.integers(0, 256, (120, 200, 3), dtype=np.uint8)
    image[30:90, 50:130] = (230, 40, 40)  # a flat red block
    return image


IMAGE = sample_image()
HEIGHT, WIDTH = IMAGE.shape[:2]
PHRASES = ["red car", "dog", "a person on a bike"]
EXEMPLAR = (50.0, 30.0, 130.0, 90.0)


def digest(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()

"""Building Meta's SAM2 models (image or video predictor) the way every SAM2 runner needs them.

One place for: the device choice, the hydra config module, the shrunk input size of dev/test builds, seeded random
weights, and turning an unloadable checkpoint into ``model_unavailable``.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable
from typing import Any

import torch

from tasks.errors import ModelUnavailableError
from worker import torchvision_compat
from worker.runners import components
from worker.runners.device import select_device
from worker.settings import WorkerSettings
from worker.weights import model_card, resolve_checkpoint

# sam2 imports torchvision at import time, which fails on CPU machines carrying the CUDA torchvision wheel unless
# the shim is installed first. Keep this call above the sam2 and hydra imports.
torchvision_compat.install()
components.install()  # sam2's hole filling on CPU too (worker.runners.components)

from hydra import initialize_config_module  # noqa: E402
from hydra.core.global_hydra import GlobalHydra  # noqa: E402

logger = logging.getLogger(__name__)

Builder = Callable[..., Any]
"""``sam2.build_sam.build_sam2`` or ``build_sam2_video_predictor``: ``(config, ckpt_path, device=, mode=,
hydra_overrides_extra=, apply_postprocessing=)``."""


def build(model_id: str, settings: WorkerSettings, builder: Builder, *, apply_postprocessing: bool) -> tuple[str, Any]:
    """``(canonical model id, model)``: built on the settings' device with checkpoint weights, or with seeded random
    weights (the same in every process) when ``settings.random_weights``."""
    card = model_card(model_id)
    device = select_device(settings)
    overrides = [f"++model.image_size={settings.image_size}"] if settings.image_size else []
    checkpoint = None if settings.random_weights else resolve_checkpoint(card.model_id, settings)
    if not GlobalHydra.instance().is_initialized():  # something may have cleared the instance `import sam2` made
        initialize_config_module("sam2", version_base="1.2")
    if checkpoint is None:
        logger.warning("building %s with RANDOM weights (seed %d): dev/test only", card.model_id, settings.seed)
        torch.manual_seed(settings.seed)  # right before the build: the same weights in every process
    else:
        logger.info("building %s from %s on %s", card.model_id, checkpoint, device)
    try:
        model = builder(
            card.config,
            None if checkpoint is None else str(checkpoint),
            device=device,
            mode="eval",
            hydra_overrides_extra=overrides,
            apply_postprocessing=apply_postprocessing,
        )
    except torch.OutOfMemoryError:
        raise
    except (RuntimeError, pickle.UnpicklingError, EOFError, KeyError, TypeError) as e:
        if checkpoint is None:
            raise
        # sam2 raises a bare RuntimeError for missing/unexpected keys (logged by sam2 just before).
        raise ModelUnavailableError(
            f"checkpoint {checkpoint} cannot be loaded as {card.model_id} ({type(e).__name__}: {e}); "
            "replace the file in SAMQ_WORKER_MODELS_DIR"
        ) from e
    return card.model_id, model


def has_connected_components() -> bool:
    """Whether sam2's connected components (for hole filling) import: its compiled extension, built only with CUDA
    (``SAM2_BUILD_CUDA=1``), or :mod:`worker.runners.components` standing in for it; without either, hole filling
    would only warn, so the video runner turns it off."""
    try:
        from sam2 import _C  # noqa: F401  (an optional compiled module: whether it imports is the answer)
    except ImportError:
        return False
    return True

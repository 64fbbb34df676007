"""Loaded models, per worker process: each loads on first use and stays warm, up to ``max_models`` (LRU).

Create the registry lazily in the worker child process (never in the Celery parent: no CUDA before fork) and keep
it for the life of the process. Nothing loads at import or construction time.
Not thread-safe: one job runs at a time per worker process.
"""

from __future__ import annotations

import gc
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from worker.settings import WorkerSettings

if TYPE_CHECKING:
    from worker.runners.sam2_image import Sam2ImageRunner

logger = logging.getLogger(__name__)

RunnerLoader = Callable[[str, WorkerSettings], "Sam2ImageRunner"]


def _load_sam2_image(model_id: str, settings: WorkerSettings) -> Sam2ImageRunner:
    # Imported here so that importing the registry does not import torch, torchvision or sam2.
    from worker.runners.sam2_image import Sam2ImageRunner

    return Sam2ImageRunner.load(model_id, settings)


class ModelRegistry:
    """Model id → loaded runner, loaded lazily by ``loader`` (``Sam2ImageRunner.load`` by default)."""

    def __init__(self, settings: WorkerSettings, loader: RunnerLoader | None = None, max_models: int = 2) -> None:
        if max_models < 1:
            raise ValueError(f"max_models must be >= 1, got {max_models}")
        self.settings = settings
        self.max_models = max_models
        self._loader: RunnerLoader = loader if loader is not None else _load_sam2_image
        self._runners: OrderedDict[str, Sam2ImageRunner] = OrderedDict()

    def get(self, model_id: str) -> Sam2ImageRunner:
        """The runner for ``model_id``, loading it (and evicting the least recently used one) if needed."""
        key = str(model_id)
        runner = self._runners.get(key)
        if runner is not None:
            self._runners.move_to_end(key)
            return runner
        while len(self._runners) >= self.max_models:
            evicted, _ = self._runners.popitem(last=False)
            logger.info("unloading %s to make room for %s", evicted, key)
            _release_memory()
        runner = self._loader(key, self.settings)
        self._runners[key] = runner
        return runner

    def loaded(self) -> list[str]:
        """Ids of the loaded models, least recently used first."""
        return list(self._runners)

    def __contains__(self, model_id: object) -> bool:
        return str(model_id) in self._runners


def _release_memory() -> None:
    import torch  # already imported by any loaded runner

    gc.collect()
    if torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        torch.cuda.empty_cache()

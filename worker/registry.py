"""Loaded models, per worker process: each loads on first use and stays warm, up to ``max_models`` (LRU).

Four kinds of runner, four accessors:

- :meth:`ModelRegistry.get` — image runners for segment / embed jobs, with the ``Sam2ImageRunner`` interface:
  the SAM2.1 ids (``"sam2.1_hiera_tiny"`` …) and ``"sam3"`` (the SAM3 tracker, ``Sam3TrackerRunner``).
- :meth:`ModelRegistry.get_concept` — concept runners for concept jobs: ``"sam3"`` (``Sam3ConceptRunner``), held
  under the key ``"sam3_concept"`` (what :meth:`ModelRegistry.loaded` lists).
- :meth:`ModelRegistry.get_everything` — the automatic mask generator for everything jobs
  (``Sam2EverythingRunner``), on the SAM2.1 image runner of :meth:`ModelRegistry.get` (no model of its own).
- :meth:`ModelRegistry.get_video` — video trackers for track jobs (:class:`~worker.runners.video.VideoTracker`):
  the SAM2.1 ids (``Sam2VideoRunner``), ``"sam3_tracker"`` and ``"sam3"`` (text concepts), held under
  ``<id>_video``.

All kinds share one LRU and one ``max_models`` budget. Create the registry lazily in the worker child process
(never in the Celery parent: no CUDA before fork) and keep it for the life of the process. Nothing loads at import
or construction time, and importing this module imports neither torch nor any model library.
Not thread-safe: one job runs at a time per worker process.
"""

from __future__ import annotations

import gc
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeAlias, TypeVar, cast

from worker.settings import WorkerSettings

if TYPE_CHECKING:
    from worker.runners.sam2_everything import Sam2EverythingRunner
    from worker.runners.sam2_image import Sam2ImageRunner
    from worker.runners.sam3_concept import Sam3ConceptRunner
    from worker.runners.sam3_tracker import Sam3TrackerRunner
    from worker.runners.video import VideoTracker

logger = logging.getLogger(__name__)

ImageRunner: TypeAlias = "Sam2ImageRunner | Sam3TrackerRunner"
RunnerLoader = Callable[[str, WorkerSettings], ImageRunner]
ConceptLoader = Callable[[str, WorkerSettings], "Sam3ConceptRunner"]
VideoLoader = Callable[[str, WorkerSettings], "VideoTracker"]

SAM3 = "sam3"
SAM3_TRACKER = "sam3_tracker"
CONCEPT_SUFFIX = "_concept"
VIDEO_SUFFIX = "_video"
"""A concept runner for model ``m`` is held under the key ``m + CONCEPT_SUFFIX`` (``"sam3_concept"``)."""

_Runner = TypeVar("_Runner")


def concept_key(model_id: str) -> str:
    """The registry key of the concept runner for ``model_id``: ``"sam3"`` → ``"sam3_concept"``."""
    return f"{model_id}{CONCEPT_SUFFIX}"


def load_image_runner(model_id: str, settings: WorkerSettings) -> ImageRunner:
    """The default image loader: the SAM3 tracker for ``"sam3"``, else a SAM2 image runner."""
    # Imported here so that importing the registry does not import torch, torchvision, sam2 or transformers.
    if model_id == SAM3:
        from worker.runners.sam3_tracker import Sam3TrackerRunner

        return Sam3TrackerRunner.load(model_id, settings)
    from worker.runners.sam2_image import Sam2ImageRunner

    return Sam2ImageRunner.load(model_id, settings)


def load_concept_runner(model_id: str, settings: WorkerSettings) -> Sam3ConceptRunner:
    """The default concept loader: ``Sam3ConceptRunner`` (``model_id`` ``"sam3"``)."""
    from worker.runners.sam3_concept import Sam3ConceptRunner

    return Sam3ConceptRunner.load(model_id, settings)


def load_video_runner(model_id: str, settings: WorkerSettings) -> VideoTracker:
    """The default video loader: SAM3 concept tracking for ``"sam3"``, the SAM3 tracker for ``"sam3_tracker"``, else
    the streaming SAM2 tracker."""
    if model_id == SAM3:
        from worker.runners.sam3_concept_video import Sam3ConceptVideoRunner

        return Sam3ConceptVideoRunner.load(model_id, settings)
    if model_id == SAM3_TRACKER:
        from worker.runners.sam3_tracker_video import Sam3TrackerVideoRunner

        return Sam3TrackerVideoRunner.load(model_id, settings)
    from worker.runners.sam2_video import Sam2VideoRunner

    return Sam2VideoRunner.load(model_id, settings)


class ModelRegistry:
    """Model id → loaded runner, loaded lazily by ``loader`` / ``concept_loader`` / ``video_loader`` (the defaults above)."""

    def __init__(
        self,
        settings: WorkerSettings,
        loader: RunnerLoader | None = None,
        max_models: int = 2,
        concept_loader: ConceptLoader | None = None,
        video_loader: VideoLoader | None = None,
    ) -> None:
        if max_models < 1:
            raise ValueError(f"max_models must be >= 1, got {max_models}")
        self.settings = settings
        self.max_models = max_models
        self._loader: RunnerLoader = loader if loader is not None else load_image_runner
        self._concept_loader: ConceptLoader = concept_loader if concept_loader is not None else load_concept_runner
        self._video_loader: VideoLoader = video_loader if video_loader is not None else load_video_runner
        self._runners: OrderedDict[str, object] = OrderedDict()

    def get(self, model_id: str) -> ImageRunner:
        """The image runner for ``model_id``, loading it (and evicting the least recently used runner) if needed."""
        key = str(model_id)
        if key.endswith(CONCEPT_SUFFIX):
            raise ValueError(f"{key!r} names a concept runner: use get_concept({key.removesuffix(CONCEPT_SUFFIX)!r})")
        return self._get(key, key, self._loader)

    def get_concept(self, model_id: str = SAM3) -> Sam3ConceptRunner:
        """The concept runner for ``model_id`` (``"sam3"``), loading it (and evicting the LRU runner) if needed."""
        return self._get(concept_key(str(model_id)), str(model_id), self._concept_loader)

    def get_everything(self, model_id: str) -> Sam2EverythingRunner:
        """The automatic mask generator on the SAM2.1 image runner for ``model_id`` (loaded if needed)."""
        from worker.runners.sam2_everything import Sam2EverythingRunner
        from worker.runners.sam2_image import Sam2ImageRunner

        runner = self.get(model_id)
        if not isinstance(runner, Sam2ImageRunner):
            raise ValueError(f"{model_id!r} is not a SAM2.1 model: everything runs on SAM2.1 only")
        return Sam2EverythingRunner(runner, self.settings.everything_chunk_masks)

    def get_video(self, model_id: str) -> VideoTracker:
        """The video tracker for ``model_id``, loading it (and evicting the LRU runner) if needed."""
        return self._get(f"{model_id}{VIDEO_SUFFIX}", str(model_id), self._video_loader)

    def _get(self, key: str, model_id: str, loader: Callable[[str, WorkerSettings], _Runner]) -> _Runner:
        runner = self._runners.get(key)
        if runner is not None:
            self._runners.move_to_end(key)
            return cast(_Runner, runner)  # a key is only ever filled by its own kind's loader
        while len(self._runners) >= self.max_models:
            evicted, _ = self._runners.popitem(last=False)
            logger.info("unloading %s to make room for %s", evicted, key)
            _release_memory()
        loaded = loader(model_id, self.settings)
        self._runners[key] = loaded
        return loaded

    def input_size(self, model_id: str, concept: bool = False) -> int | None:
        """The image size a loaded runner (the concept runner: ``concept``) encodes at; None when it is not loaded.
        Never loads one, never reorders: safe from another thread (one dict read)."""
        runner = self._runners.get(concept_key(model_id) if concept else model_id)
        size = getattr(runner, "image_size", None)
        return size if isinstance(size, int) else None

    def loaded(self) -> list[str]:
        """Keys of the loaded runners (model ids; ``"sam3_concept"`` for the concept runner), LRU first."""
        return list(self._runners)

    def __contains__(self, key: object) -> bool:
        return str(key) in self._runners


def _release_memory() -> None:
    import torch  # already imported by any loaded runner

    gc.collect()
    if torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        torch.cuda.empty_cache()

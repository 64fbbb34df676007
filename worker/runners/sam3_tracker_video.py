"""The SAM3 tracker on video: objects seeded by boxes and points, followed frame by frame with SAM2-style memory.

:class:`Sam3TrackerVideoRunner` wraps transformers' ``Sam3TrackerVideoModel`` + ``Sam3TrackerVideoProcessor`` and
implements :class:`~worker.runners.video.VideoTracker`. A session computes exactly what the documented whole-video
call computes (``processor.init_video_session(video)``, then per prompted frame ``add_inputs_to_inference_session``
+ ``model(session, frame_idx)``, then ``model.propagate_in_video_iterator`` and ``processor.post_process_masks``,
logits > 0), but:

- Frames are read one at a time from the lazy :class:`~worker.runners.video.Frames`, preprocessed with SAM3's image
  processing (equal to the video processor's, frame by frame) and handed to the session with ``add_new_frame``, as
  transformers' streaming mode does. The forward itself runs in whole-video mode with the video's length known
  (:class:`KnownLength`): streaming mode assumes an unbounded video (16 object pointers, temporal encoding scaled
  by 15) where the whole-video path uses ``min(length, 16)``, so only whole-video mode equals the reference on
  videos shorter than 16 frames.
- After every frame the session drops what the model can no longer read (:func:`prune`): the pixel values (the
  frame's features stay in transformers' one-frame cache), outputs of non-conditioning frames older than the memory
  window (:func:`memory_window`: 16 frames for the released model), and inside the outputs it keeps, what only the
  forward that made them reads. Conditioning frames (an object's seeds on a frame it was not yet tracked on) are
  kept: transformers feeds the object pointer of every one of them to every later frame. Memory is flat in video
  length.
- Several seeds on one frame are added one ``add_inputs_to_inference_session`` call per object (so no object's
  points are padded to another's count) and decoded by one forward, as the processor does for several objects.
- Masks are upsampled :data:`UPSAMPLE_CHUNK` objects at a time (bilinear per object, so chunks change nothing).
- :meth:`Sam3TrackerVideoSession.snapshot` saves exactly the pruned state (``torch.save`` of tensors and plain
  containers); a session resumed from it continues with identical results.

The pruning and snapshot machinery works on the tracker state that ``Sam3VideoModel`` (concept tracking,
:mod:`worker.runners.sam3_concept_video`) keeps in the same shape, and is shared with it.

Not thread-safe (one job at a time per worker process).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from tasks.errors import ModelUnavailableError
from worker import torchvision_compat
from worker.runners.device import inference, select_device
from worker.runners.image import VisualPrompt, check_prompt
from worker.runners.sam3 import (
    CHECKPOINT_ID,
    DEFAULT_RANDOM_IMAGE_SIZE,
    build_random,
    image_processor,
    input_size,
    load_pretrained,
    load_processor,
    shrunk_tracker_video_config,
    video_processor,
)
from worker.runners.sam3_video import (
    TRACKER_STATE,
    KnownLength,
    feed,
    new_session,
    prune,
    read_snapshot,
    upsample,
    video_geometry,
    write_snapshot,
)
from worker.runners.video import Frames, FrameTracks, Seed
from worker.settings import WorkerSettings
from worker.weights import pretrained_card

torchvision_compat.install()  # before transformers' SAM3 modules import torchvision (a no-op if already done)

from transformers import (  # noqa: E402
    Sam3TrackerVideoConfig,
    Sam3TrackerVideoInferenceSession,
    Sam3TrackerVideoModel,
    Sam3TrackerVideoProcessor,
)

MODEL_ID = "sam3_tracker"
"""The id this runner is loaded under; its weights are the tracker part of the ``sam3`` checkpoint folder."""


class _TrackerInferenceSession(KnownLength, Sam3TrackerVideoInferenceSession):
    """transformers' tracker session for a video of known length, fed one frame at a time."""


class Sam3TrackerVideoRunner:
    """A loaded SAM3 video tracker. Build it with :meth:`load`; then :meth:`open` or :meth:`resume` a session per
    video."""

    def __init__(self, model_id: str, model: Any, processor: Any, device: str) -> None:
        self.model_id = model_id
        self._model = model
        self._processor = processor
        self.device = device
        """``"cpu"`` or ``"cuda"``."""
        self.image_size: int = int(model.config.image_size)
        """The square input side the model runs at (1008 for the released model)."""

    @classmethod
    def load(cls, model_id: str, settings: WorkerSettings) -> Sam3TrackerVideoRunner:
        """Build the model on the settings' device, from the tracker part of the ``sam3`` checkpoint folder (or
        seeded random weights, shrunk). ``model_id`` must be :data:`MODEL_ID`."""
        if model_id != MODEL_ID:
            raise ModelUnavailableError(f"unknown model {model_id!r}: the SAM3 video tracker is {MODEL_ID!r}")
        card = pretrained_card(CHECKPOINT_ID)
        device = select_device(settings)
        size = input_size(settings)
        if settings.random_weights:
            size = size or DEFAULT_RANDOM_IMAGE_SIZE
            model = build_random(Sam3TrackerVideoModel, shrunk_tracker_video_config(size), MODEL_ID, settings, device)
            processor = Sam3TrackerVideoProcessor(
                image_processor=image_processor(size), video_processor=video_processor(size)
            )
        else:
            model, directory = load_pretrained(
                Sam3TrackerVideoModel, Sam3TrackerVideoConfig, "tracker", card.model_id, settings, size, device
            )
            processor = load_processor(Sam3TrackerVideoProcessor, directory, card.model_id, size)
        return cls(MODEL_ID, model, processor, device)

    def open(self, frames: Frames, concepts: Sequence[str] = (), *, reseeding: bool = False) -> Sam3TrackerVideoSession:
        """A session on ``frames`` (its first frame is decoded for the video's size). The tracker follows seeded
        objects: ``concepts`` are refused. ``reseeding`` changes nothing: transformers stores a seed on a frame the
        object was already tracked on as a correction (a non-conditioning output, pruned like any other), so
        conditioning frames stay bounded by the objects' first seeds."""
        if concepts:
            raise ValueError("the SAM3 tracker follows seeded objects; text concepts need the concept model (sam3)")
        length, height, width = video_geometry(frames)
        session = new_session(_TrackerInferenceSession, length, height, width, self.device)
        return Sam3TrackerVideoSession(self._model, self._processor, self.device, frames, session, None)

    def resume(self, frames: Frames, state: bytes, *, reseeding: bool = False) -> Sam3TrackerVideoSession:
        """The session a :meth:`Sam3TrackerVideoSession.snapshot` saved, on the same ``frames`` (none is decoded)."""
        payload = read_snapshot(state, MODEL_ID, self.image_size, len(frames), self.device)
        length, height, width = payload["video"]
        session = new_session(_TrackerInferenceSession, length, height, width, self.device)
        for name, value in payload["session"].items():
            setattr(session, name, value)
        return Sam3TrackerVideoSession(self._model, self._processor, self.device, frames, session, payload["last"])


class Sam3TrackerVideoSession:
    """One video tracked by a :class:`Sam3TrackerVideoRunner` (see the module docstring). Not thread-safe."""

    def __init__(self, model: Any, processor: Any, device: str, frames: Frames, session: Any, last: int | None) -> None:
        self._model = model
        self._processor = processor
        self._device = device
        self._frames = frames
        self._session = session
        """transformers' inference session (a :class:`KnownLength` one)."""
        self._last = last
        """The last frame propagated (``None``: none yet)."""

    def add(self, index: int, seeds: Sequence[Seed]) -> FrameTracks:
        """Prompt objects on frame ``index`` (boxes XYXY / points in video pixels); every object's result there.

        Before the first :meth:`propagate`, any frame; afterwards, only the frame last propagated.
        """
        self._check_frame(index)
        if self._last is not None and index != self._last:
            raise ValueError(f"seeds go on the frame last propagated ({self._last}) once tracking started, not {index}")
        if not seeds:
            raise ValueError("at least one seed is needed")
        ids = [int(seed.obj_id) for seed in seeds]
        if len(set(ids)) != len(ids):
            raise ValueError(f"one seed per object on a frame, got object ids {ids}")
        session = self._session
        low_res_size = int(self._model.prompt_encoder.mask_input_size[0])
        for i, seed in enumerate(seeds):
            prompt = VisualPrompt(point_coords=seed.point_coords, point_labels=seed.point_labels, box=seed.box)
            check_prompt(i, prompt, session.video_height, session.video_width, low_res_size)
        for obj_id, seed in zip(ids, seeds, strict=True):
            self._processor.add_inputs_to_inference_session(
                session,
                frame_idx=index,
                obj_ids=obj_id,
                input_points=None if seed.point_coords is None else [[seed.point_coords.tolist()]],
                input_labels=None if seed.point_labels is None else [[seed.point_labels.tolist()]],
                input_boxes=None if seed.box is None else [[seed.box.tolist()]],
            )
        session.obj_with_new_inputs = ids  # each call above marks only its own object as new
        tracks = self._track(index)
        self._prune()
        return tracks

    def propagate(self, start: int, end: int) -> Iterator[FrameTracks]:
        """Every object on frames ``start`` … ``end``, in order; a later call continues at ``end + 1``."""
        self._check_frame(start)
        self._check_frame(end)
        if start > end:
            raise ValueError(f"start ({start}) is after end ({end})")
        if self._last is not None and start != self._last + 1:
            raise ValueError(f"tracking continues at frame {self._last + 1}, not {start}")
        if not self._session.obj_ids:
            raise ValueError("nothing to track: add seeds first")
        return self._propagate(start, end)

    def snapshot(self) -> bytes:
        """The pruned session state after the last frame yielded (see :func:`write_snapshot`)."""
        session = self._session
        return write_snapshot(
            {
                "runner": MODEL_ID,
                "image_size": int(self._model.config.image_size),
                "video": [session.video_length, session.video_height, session.video_width],
                "last": self._last,
                "session": {name: getattr(session, name) for name in TRACKER_STATE},
            }
        )

    def _propagate(self, start: int, end: int) -> Iterator[FrameTracks]:
        for index in range(start, end + 1):
            tracks = self._track(index)
            self._last = index
            self._prune()
            yield tracks

    def _track(self, index: int) -> FrameTracks:
        """Run the model on frame ``index`` (for the new seeds there, or to track)."""
        session = self._session
        feed(session, self._processor, self._frames, index)
        with inference(self._device):
            out = self._model(inference_session=session, frame_idx=index)
            masks = upsample(self._processor, out.pred_masks, session.video_height, session.video_width)
            scores = torch.sigmoid(out.object_score_logits.float()).flatten().cpu().numpy()
        return FrameTracks(index=index, obj_ids=list(out.object_ids), masks=masks, scores=scores.astype(np.float32))

    def _prune(self) -> None:
        prune(self._session, -1 if self._last is None else self._last, self._model.config)

    def _check_frame(self, index: int) -> None:
        if not 0 <= index < self._session.video_length:
            raise ValueError(f"frame {index} is outside the video's {self._session.video_length} frames")

"""SAM3 concept tracking on video: every instance of text phrases, detected, given ids and followed.

:class:`Sam3ConceptVideoRunner` wraps transformers' ``Sam3VideoModel`` + ``Sam3VideoProcessor`` and implements
:class:`~worker.runners.video.VideoTracker` for concept sessions (phrases, no seeds). A session yields exactly what
the documented whole-video call yields (``processor.init_video_session(video)`` → ``processor.add_text_prompt`` →
``model.propagate_in_video_iterator`` → ``processor.postprocess_outputs`` per frame), with the discipline of
:mod:`worker.runners.sam3_tracker_video`:

- Frames are read one at a time from the lazy :class:`~worker.runners.video.Frames` and dropped once encoded; the
  model runs in whole-video mode with the video's length known. (Streaming mode, besides assuming an unbounded
  video, switches off the "hotstart" heuristics that remove spurious tracks.)
- Hotstart: transformers holds each frame's output back until ``hotstart_delay`` (15) frames more are processed,
  so that tracks it removes meanwhile are hidden on the frames already seen. The session does the same, frame by
  frame: frame ``i`` is yielded once frame ``min(i + hotstart_delay - 1, last frame)`` is processed, whatever the
  ``propagate`` calls' ranges, so chunked propagation and resumed sessions equal one uninterrupted run.
- Each yielded :class:`~worker.runners.video.FrameTracks` holds every object the model tracks on that frame (ids
  assigned by the model, increasing as instances are found; tracks it removed are left out), ``labels`` = each
  object's phrase, the masks of ``postprocess_outputs`` (transformers hides suppressed and empty tracks and keeps
  overlapping tracks of one phrase apart; a hidden track's mask is all False), and as scores the tracker's
  per-frame presence probability (the detection score on the frame an object is found).
- After every frame the tracker state is pruned as the video tracker's is, and so is the detection bookkeeping:
  per-frame scores and suppressions of passed frames, and the hotstart evidence of tracks past their hotstart
  period (it can no longer remove them). What stays grows with the number of objects found, not with frames,
  except for reconditioning: every ``recondition_every_nth_frame`` (16) frames a confidently re-detected track
  gets a conditioning frame, whose object pointer (a few hundred floats) transformers feeds to every later frame.
- :meth:`Sam3ConceptVideoSession.snapshot` saves the pruned state and the outputs held back for hotstart; the
  phrases' token ids and text embeddings are recomputed on resume.

Without the optional ``kernels`` package transformers skips the detections' NMS and the masks' hole filling (it
warns once); results then differ from a machine that has it, as they do with transformers alone.

Not thread-safe (one job at a time per worker process).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from worker import torchvision_compat
from worker.runners.device import inference, select_device
from worker.runners.sam3 import (
    DEFAULT_RANDOM_IMAGE_SIZE,
    build_random,
    clip_tokenizer,
    image_processor,
    input_size,
    load_pretrained,
    load_processor,
    shrunk_video_config,
    video_processor,
)
from worker.runners.sam3_video import (
    TRACKER_STATE,
    KnownLength,
    feed,
    new_session,
    prune,
    read_snapshot,
    video_geometry,
    write_snapshot,
)
from worker.runners.video import Frames, FrameTracks, Seed
from worker.settings import WorkerSettings
from worker.weights import pretrained_card

torchvision_compat.install()  # before transformers' SAM3 modules import torchvision (a no-op if already done)

from transformers import (  # noqa: E402
    Sam3VideoConfig,
    Sam3VideoInferenceSession,
    Sam3VideoModel,
    Sam3VideoProcessor,
    Sam3VideoSegmentationOutput,
)

DEFAULT_FACTORIES: dict[str, type[list[Any]] | type[set[Any]] | type[dict[Any, Any]]] = {
    "obj_id_to_tracker_score_frame_wise": dict,
    "unmatched_frame_inds": list,
    "overlap_pair_to_frame_inds": list,
    "suppressed_obj_ids": set,
}
"""The session's default dicts (saved as plain dicts) and their factories."""
CONCEPT_STATE = (
    *TRACKER_STATE,
    "obj_id_to_prompt_id",
    "obj_id_to_score",
    "obj_id_to_last_occluded",
    "max_obj_id",
    "obj_first_frame_idx",
    "trk_keep_alive",
    "removed_obj_ids",
    "hotstart_removed_obj_ids",
    *DEFAULT_FACTORIES,
)
"""The attributes of a ``Sam3VideoInferenceSession`` a snapshot saves (the phrases are saved apart)."""


class _ConceptInferenceSession(KnownLength, Sam3VideoInferenceSession):
    """transformers' concept-tracking session for a video of known length, fed one frame at a time."""


class Sam3ConceptVideoRunner:
    """A loaded SAM3 concept tracker. Build it with :meth:`load`; then :meth:`open` or :meth:`resume` a session per
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
    def load(cls, model_id: str, settings: WorkerSettings) -> Sam3ConceptVideoRunner:
        """Build the model on the settings' device, from the whole ``sam3`` checkpoint folder (or seeded random
        weights, shrunk)."""
        card = pretrained_card(model_id)
        device = select_device(settings)
        size = input_size(settings)
        if settings.random_weights:
            size = size or DEFAULT_RANDOM_IMAGE_SIZE
            model = build_random(Sam3VideoModel, shrunk_video_config(size), card.model_id, settings, device)
            processor = Sam3VideoProcessor(
                image_processor=image_processor(size), video_processor=video_processor(size), tokenizer=clip_tokenizer()
            )
        else:
            model, directory = load_pretrained(
                Sam3VideoModel, Sam3VideoConfig, "video", card.model_id, settings, size, device
            )
            processor = load_processor(Sam3VideoProcessor, directory, card.model_id, size)
        return cls(card.model_id, model, processor, device)

    def open(self, frames: Frames, concepts: Sequence[str] = (), *, reseeding: bool = False) -> Sam3ConceptVideoSession:
        """A session finding every instance of ``concepts`` (phrases) in ``frames`` (its first frame is decoded for
        the video's size). Concept sessions are not seeded, so ``reseeding`` is refused."""
        phrases = list(concepts)
        if not phrases:
            raise ValueError("concept tracking needs at least one phrase")
        if any(not phrase.strip() for phrase in phrases):
            raise ValueError("concept phrases must not be blank")
        if reseeding:
            raise ValueError("concept sessions are not seeded, so they cannot be re-seeded")
        length, height, width = video_geometry(frames)
        return self._session(frames, phrases, length, height, width)

    def resume(self, frames: Frames, state: bytes, *, reseeding: bool = False) -> Sam3ConceptVideoSession:
        """The session a :meth:`Sam3ConceptVideoSession.snapshot` saved, on the same ``frames`` (none is decoded)."""
        if reseeding:
            raise ValueError("concept sessions are not seeded, so they cannot be re-seeded")
        payload = read_snapshot(state, self.model_id, self.image_size, len(frames), self.device)
        length, height, width = payload["video"]
        session = self._session(frames, payload["concepts"], length, height, width)
        session.restore(payload)
        return session

    def _session(
        self, frames: Frames, phrases: list[str], length: int, height: int, width: int
    ) -> Sam3ConceptVideoSession:
        session = new_session(_ConceptInferenceSession, length, height, width, self.device)
        session.obj_with_new_inputs = []  # set by transformers when it adds the first objects; read by snapshots
        self._processor.add_text_prompt(session, phrases)
        return Sam3ConceptVideoSession(self.model_id, self._model, self._processor, self.device, frames, session)


class Sam3ConceptVideoSession:
    """One video's concept tracking by a :class:`Sam3ConceptVideoRunner` (see the module docstring). Not
    thread-safe."""

    def __init__(self, model_id: str, model: Any, processor: Any, device: str, frames: Frames, session: Any) -> None:
        self._model_id = model_id
        self._model = model
        self._processor = processor
        self._device = device
        self._frames = frames
        self._session = session
        """transformers' inference session (a :class:`KnownLength` one)."""
        self._delay = int(model.hotstart_delay)
        self._next: int | None = None
        """The next frame to yield (``None``: none yielded yet)."""
        self._processed: int | None = None
        """The last frame the model processed (``None``: none yet)."""
        self._held: list[Any] = []
        """Outputs of processed frames not yielded yet (``Sam3VideoSegmentationOutput``), oldest first."""

    def add(self, index: int, seeds: Sequence[Seed]) -> FrameTracks:
        """Refused: a concept session finds its objects itself."""
        raise ValueError("concept sessions are not seeded: the model finds every instance of the phrases itself")

    def propagate(self, start: int, end: int) -> Iterator[FrameTracks]:
        """Every object on frames ``start`` … ``end``, in order; a later call continues at ``end + 1``. Processing
        runs up to ``hotstart_delay - 1`` frames ahead of what is yielded."""
        length = self._session.video_length
        if not (0 <= start <= end < length):
            raise ValueError(f"frames {start}…{end} are not a range of the video's {length} frames")
        if self._next is not None and start != self._next:
            raise ValueError(f"tracking continues at frame {self._next}, not {start}")
        return self._propagate(start, end)

    def snapshot(self) -> bytes:
        """The pruned session state and the outputs held back, after the last frame yielded."""
        session = self._session
        return write_snapshot(
            {
                "runner": self._model_id,
                "image_size": int(self._model.config.image_size),
                "video": [session.video_length, session.video_height, session.video_width],
                "concepts": [session.prompts[prompt_id] for prompt_id in sorted(session.prompts)],
                "next": self._next,
                "processed": self._processed,
                "held": [dict(out) for out in self._held],
                "session": {name: getattr(session, name) for name in CONCEPT_STATE},
            }
        )

    def restore(self, payload: dict[str, Any]) -> None:
        """Take the state of a :meth:`snapshot` payload (read by :func:`read_snapshot`)."""
        for name, value in payload["session"].items():
            factory = DEFAULT_FACTORIES.get(name)
            setattr(self._session, name, value if factory is None else defaultdict(factory, value))
        self._next = payload["next"]
        self._processed = payload["processed"]
        self._held = [Sam3VideoSegmentationOutput(**fields) for fields in payload["held"]]

    def _propagate(self, start: int, end: int) -> Iterator[FrameTracks]:
        last = self._session.video_length - 1
        for index in range(start, end + 1):
            while self._processed is None or self._processed < min(index + max(self._delay, 1) - 1, last):
                self._process(start if self._processed is None else self._processed + 1)
            out = self._held.pop(0)
            tracks = self._tracks(out)
            self._next = index + 1
            yield tracks

    def _process(self, index: int) -> None:
        """Run the model on frame ``index`` and hold its output (``propagate_in_video_iterator``'s loop body)."""
        session = self._session
        feed(session, self._processor, self._frames, index)
        with inference(self._device):
            out = self._model(inference_session=session, frame_idx=index)
        if self._delay > 0:
            session.hotstart_removed_obj_ids.update(out.removed_obj_ids)
        self._held.append(out)
        self._processed = index
        self._prune(index)

    def _tracks(self, out: Any) -> FrameTracks:
        """A held output as the pipeline sees it, post-processed now (as a consumer of transformers' iterator does
        when it receives it)."""
        session = self._session
        with inference(self._device):
            shown = self._processor.postprocess_outputs(session, out)
        ids = [obj_id for obj_id in sorted(out.obj_id_to_mask) if obj_id not in session.removed_obj_ids]
        masks = np.zeros((len(ids), session.video_height, session.video_width), dtype=bool)
        row = {obj_id: i for i, obj_id in enumerate(ids)}
        for obj_id, mask in zip(shown["object_ids"].tolist(), shown["masks"], strict=True):
            masks[row[obj_id]] = mask.cpu().numpy()
        presence = out.obj_id_to_tracker_score
        return FrameTracks(
            index=int(out.frame_idx),
            obj_ids=ids,
            masks=masks,
            scores=np.array([presence.get(obj_id, 0.0) for obj_id in ids], dtype=np.float32),
            labels=[session.prompts[session.obj_id_to_prompt_id[obj_id]] for obj_id in ids],
        )

    def _prune(self, frame: int) -> None:
        """The tracker state's pruning, and the detection bookkeeping nothing reads after ``frame`` any more."""
        session = self._session
        prune(session, frame, self._model.tracker_model.config)
        for by_frame in (session.obj_id_to_tracker_score_frame_wise, session.suppressed_obj_ids):
            for passed in [passed for passed in by_frame if passed < frame]:
                del by_frame[passed]
        # A track first seen at or before frame - hotstart_delay is past its hotstart period: no later frame
        # removes it as unmatched or as a duplicate, whatever its evidence says.
        settled = {obj_id for obj_id, first in session.obj_first_frame_idx.items() if first <= frame - self._delay}
        for obj_id in settled & set(session.unmatched_frame_inds):
            session.unmatched_frame_inds[obj_id].clear()  # the key stays: the keep-alive rule iterates the keys
        pairs = session.overlap_pair_to_frame_inds
        for pair in [pair for pair in pairs if pair[1] in settled]:
            del pairs[pair]

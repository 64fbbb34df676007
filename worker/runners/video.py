"""What every video tracker offers (SAM2 streaming, SAM3 tracker, SAM3 concepts), in the pipeline's terms.

A tracker sees the job's *processed* frames only: index ``i`` is the i-th frame the job processes (after ``frames``
range, stride and ``max_fps``), not the video's frame number. Frames come from a lazy :class:`Frames` sequence that
decodes on access; a tracker asks for each frame when it needs it and never holds more than the model can attend to,
so memory is flat in video length.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt


class Frames(Protocol):
    """The processed frames of one video, decoded lazily: ``frames[i]`` is an (H, W, 3) uint8 RGB array.

    Access is cheapest in increasing order; going back re-decodes. Implementations keep O(1) frames in memory.
    """

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> npt.NDArray[np.uint8]: ...


@dataclass(frozen=True)
class Seed:
    """A visual prompt for one object on one processed frame, in video pixels: a box (4,) XYXY and/or points."""

    obj_id: int
    box: npt.NDArray[np.float32] | None = None
    point_coords: npt.NDArray[np.float32] | None = None
    """(K, 2) float32 ``(x, y)``."""
    point_labels: npt.NDArray[np.int32] | None = None
    """(K,) int32: 1 foreground, 0 background."""


@dataclass(frozen=True)
class FrameTracks:
    """The tracked objects on one processed frame.

    - ``obj_ids``: the ids of every object the session holds, in a stable order.
    - ``masks``: (N, H, W) bool at the video's resolution; an absent object's mask is all False.
    - ``scores``: (N,) float32, the model's probability that each object is present on this frame.
    - ``labels``: for trackers that name what they find (SAM3 concepts: the phrase), one label per object, else
      empty.
    """

    index: int
    obj_ids: list[int]
    masks: npt.NDArray[np.bool_]
    scores: npt.NDArray[np.float32]
    labels: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        count = len(self.obj_ids)
        if self.masks.dtype != np.bool_ or self.masks.ndim != 3 or self.masks.shape[0] != count:
            raise ValueError(f"masks must be ({count}, H, W) bool, got {self.masks.shape} {self.masks.dtype}")
        if self.scores.dtype != np.float32 or self.scores.shape != (count,):
            raise ValueError(f"scores must be ({count},) float32, got {self.scores.shape} {self.scores.dtype}")
        if self.labels and len(self.labels) != count:
            raise ValueError(f"labels must be empty or one per object ({count}), got {len(self.labels)}")


class VideoSession(Protocol):
    """One video being tracked. Not thread-safe; one per job attempt."""

    def add(self, index: int, seeds: Sequence[Seed]) -> FrameTracks:
        """Prompt objects on processed frame ``index`` (new ids start new tracks; known ids are re-seeded there).

        Before the first :meth:`propagate`, seeds may go on any frame (the model then conditions on them from the
        start, exactly as ``SAM2VideoPredictor`` does). Afterwards, only on the frame last propagated. Returns every
        object's result on that frame.
        """
        ...

    def propagate(self, start: int, end: int) -> Iterator[FrameTracks]:
        """Track every object through processed frames ``start`` … ``end`` (inclusive), one result per frame, in
        order. Dropping the iterator early is fine; nothing is kept that the model can no longer attend to."""
        ...

    def snapshot(self) -> bytes:
        """The session's state after the last yielded frame (``torch.save`` of plain tensors and containers, loadable
        with ``weights_only=True``), so a later attempt can :meth:`VideoTracker.resume` there with identical results.
        """
        ...


class VideoTracker(Protocol):
    """A loaded video model. ``concepts`` is for concept trackers (SAM3); others refuse it. ``reseeding``: the
    session will re-prompt known objects as it goes (``every_n_frames``), so re-seeded frames become conditioning
    frames, of which the tracker keeps a bounded number."""

    @property
    def device(self) -> str: ...

    def open(self, frames: Frames, concepts: Sequence[str] = (), *, reseeding: bool = False) -> VideoSession: ...

    def resume(self, frames: Frames, state: bytes, *, reseeding: bool = False) -> VideoSession: ...

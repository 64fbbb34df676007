"""Video frames decoded lazily: (H, W, 3) uint8 RGB, upright, one frame held at a time.

:class:`VideoFrames` is the :class:`worker.runners.video.Frames` protocol over the frames a job selected
(``worker.video_probe``), decoded forward on access.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import av
import av.container
import av.error
import av.video.frame
import av.video.stream
import numpy as np
import numpy.typing as npt

from tasks.errors import InvalidVideoError
from worker.video_probe import VideoInfo, open_video


class VideoFrames:
    """The selected frames of a video, decoded lazily: ``frames[i]`` is selected frame ``i`` as a fresh, writable
    (H, W, 3) uint8 RGB array, upright.

    Decoding runs forward from the current position (frames in between are decoded and dropped, never converted);
    asking for an earlier frame re-opens the file and decodes from the start. Only the last decoded frame is kept,
    so memory does not grow with the video's length. Not thread-safe. A frame that cannot be decoded (corrupt data,
    the file ending early) raises :class:`InvalidVideoError` naming its frame number.
    """

    def __init__(self, path: Path, info: VideoInfo, selected: npt.NDArray[np.int64]) -> None:
        numbers = np.array(selected, dtype=np.int64).reshape(-1)
        if numbers.size and (numbers.min() < 0 or numbers.max() >= info.frame_count):
            raise ValueError(f"selected frame numbers must lie in 0-{info.frame_count - 1}")
        numbers.setflags(write=False)
        self._path = path
        self._info = info
        self._selected = numbers
        self._container: av.container.InputContainer | None = None
        self._decoded: Iterator[av.video.frame.VideoFrame] | None = None
        self._position = -1
        """The frame number of the last frame taken from ``_decoded`` (-1: none yet)."""
        self._cached: tuple[int, av.video.frame.VideoFrame] | None = None
        self._closed = False
        coded = (info.height, info.width) if info.rotation % 180 == 0 else (info.width, info.height)
        self._coded_height, self._coded_width = coded

    def __len__(self) -> int:
        return int(self._selected.shape[0])

    def __getitem__(self, index: int) -> npt.NDArray[np.uint8]:
        count = len(self)
        if not -count <= index < count:
            raise IndexError(f"frame index {index} out of range for {count} frames")
        number = int(self._selected[index])
        if self._cached is None or self._cached[0] != number:
            self._cached = (number, self._decode(number))
        return self._to_rgb(self._cached[1])

    @property
    def info(self) -> VideoInfo:
        """The probe this reader decodes against."""
        return self._info

    @property
    def selected(self) -> npt.NDArray[np.int64]:
        """The video frame number of each processed index (read-only)."""
        return self._selected

    def frame_number(self, index: int) -> int:
        """The video's frame number (presentation order) of processed frame ``index``."""
        return int(self._selected[index])

    def time(self, index: int) -> float:
        """The presentation time in seconds (from the first frame) of processed frame ``index``."""
        return float(self._info.times[self._selected[index]])

    def close(self) -> None:
        """Release the file and the decoder (idempotent). Later access raises :class:`RuntimeError`."""
        self._closed = True
        self._cached = None
        self._close_container()

    def __enter__(self) -> VideoFrames:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _decode(self, number: int) -> av.video.frame.VideoFrame:
        if self._closed:
            raise RuntimeError("the video reader is closed")
        if self._decoded is None or number <= self._position:
            self._restart()
        assert self._decoded is not None
        try:
            for frame in self._decoded:
                found = self._number_of(frame)
                if found is None or found <= self._position:
                    continue  # not one of the probed frames (discarded by an edit list), or a repeat
                self._position = found
                if found == number:
                    return frame
                if found > number:
                    raise InvalidVideoError(
                        f"frame {number} cannot be decoded: the decoder skipped to frame {found} (corrupt data)"
                    )
        except av.error.FFmpegError as e:
            self._close_container()
            raise InvalidVideoError(f"cannot decode frame {number}: {e}") from e
        self._close_container()
        raise InvalidVideoError(
            f"the video ends before frame {number} (it has {self._info.frame_count} frames by its timestamps): "
            "truncated or corrupt"
        )

    def _restart(self) -> None:
        self._close_container()
        self._container = open_video(self._path)
        stream = self._container.streams[self._info.stream]
        if not isinstance(stream, av.video.stream.VideoStream):
            raise InvalidVideoError(f"stream {self._info.stream} of the file is no longer a video stream")
        stream.thread_type = "AUTO"
        self._decoded = self._container.decode(stream)
        self._position = -1

    def _number_of(self, frame: av.video.frame.VideoFrame) -> int | None:
        pts = self._info.pts
        if pts is None or frame.pts is None:
            return self._position + 1
        found = int(np.searchsorted(pts, frame.pts))
        if found < pts.shape[0] and int(pts[found]) == frame.pts:
            return found
        return None

    def _to_rgb(self, frame: av.video.frame.VideoFrame) -> npt.NDArray[np.uint8]:
        if (frame.width, frame.height) != (self._coded_width, self._coded_height):
            # The stream changed resolution mid-way: scale back to the probed size the job works in.
            array = frame.to_ndarray(format="rgb24", width=self._coded_width, height=self._coded_height)
        else:
            array = frame.to_ndarray(format="rgb24")
        rgb = np.asarray(array, dtype=np.uint8)
        turns = self._info.rotation // 90
        if turns:
            rgb = np.rot90(rgb, k=-turns)  # np.rot90 turns counter-clockwise
        # The array is a view of a frame converted for this call, except when the decoder's frame already was RGB:
        # then it is the cached frame's own buffer, which the caller must not be able to change.
        shared = frame.format.name == "rgb24"
        if turns or shared or not rgb.flags.c_contiguous or not rgb.flags.writeable:
            rgb = np.array(rgb, dtype=np.uint8, order="C")  # a writable C-ordered copy (torch wants both)
        return rgb

    def _close_container(self) -> None:
        self._decoded = None
        self._position = -1
        if self._container is not None:
            self._container.close()
            self._container = None

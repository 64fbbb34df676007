"""preview.mp4: the processed frames with every tracked object drawn on them, encoded as they come.

Each object's mask is tinted in a colour of its own (stable per object id, from :data:`PALETTE`), outlined, and
labelled with its id near its top-left corner. The video is H.264 (``libx264``, yuv420p, ``+faststart`` so browsers
play it while it downloads), or MPEG-4 part 2 where this FFmpeg build lacks libx264. Streaming: one frame in, one
frame encoded; nothing accumulates but the encoder's own look-ahead.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import av.container
import av.video.stream
import cv2
import numpy as np
import numpy.typing as npt

PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (220, 190, 255),
    (170, 110, 40),
    (255, 250, 200),
    (128, 0, 0),
    (170, 255, 195),
    (128, 128, 0),
    (255, 215, 180),
    (0, 0, 128),
    (128, 128, 128),
)
"""RGB colours (Sasha Trubetskoy's 20 distinct colours); object ``id`` gets ``PALETTE[id % len(PALETTE)]``."""

CODECS = ("libx264", "mpeg4")
"""Encoders in order of preference; the first this FFmpeg build has is used."""

OVERLAY_ALPHA = 0.45
"""Opacity of the tint over a mask."""

_CODEC_OPTIONS = {"libx264": {"preset": "veryfast", "crf": "23"}, "mpeg4": {"qmax": "6"}}


def colour_of(obj_id: int) -> tuple[int, int, int]:
    """The RGB colour object ``obj_id`` is drawn in."""
    return PALETTE[obj_id % len(PALETTE)]


class PreviewWriter:
    """Writes preview.mp4 frame by frame: ``with PreviewWriter(path, w, h, fps) as out: out.write(frame, objects)``.

    Frames are (height, width, 3) uint8 RGB; odd sizes are padded (black, right and bottom) to the even size 4:2:0
    video needs. Frame ``k`` is shown at ``k / fps`` seconds. Leaving the ``with`` block (or :meth:`close`) flushes
    the encoder and finishes the file.
    """

    def __init__(self, path: Path, width: int, height: int, fps: float) -> None:
        if width <= 0 or height <= 0:
            raise ValueError(f"width and height must be positive, got {width}x{height}")
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.width, self.height = width, height
        self.codec = pick_codec(av.codecs_available)
        self.frames_written = 0
        rate = Fraction(fps).limit_denominator(1001)  # 30000/1001 stays exact; MPEG-4 wants a denominator < 2**16
        self._padded = (width + width % 2, height + height % 2)
        self._container: av.container.OutputContainer | None = av.open(
            str(path), mode="w", format="mp4", options={"movflags": "+faststart"}
        )
        try:
            stream = self._container.add_stream(self.codec, rate=rate, options=dict(_CODEC_OPTIONS[self.codec]))
            assert isinstance(stream, av.video.stream.VideoStream)
            stream.width, stream.height = self._padded
            stream.pix_fmt = "yuv420p"
            if self.codec == "mpeg4":
                stream.codec_context.bit_rate = max(500_000, 4 * width * height)
        except BaseException:
            self._container.close()
            raise
        self._stream = stream

    def write(self, frame_rgb: npt.NDArray[np.uint8], objects: Sequence[tuple[int, npt.NDArray[np.bool_]]]) -> None:
        """Draw ``objects`` ((object id, (H, W) bool mask) pairs; empty masks are skipped) over a copy of
        ``frame_rgb`` and encode it as the next frame."""
        if self._container is None:
            raise RuntimeError("the preview is closed")
        if frame_rgb.shape != (self.height, self.width, 3) or frame_rgb.dtype != np.uint8:
            raise ValueError(
                f"frame must be ({self.height}, {self.width}, 3) uint8, got {frame_rgb.shape} {frame_rgb.dtype}"
            )
        view = np.array(frame_rgb, dtype=np.uint8, order="C")  # OpenCV draws in place on C-contiguous arrays only
        for obj_id, mask in objects:
            if mask.shape != (self.height, self.width) or mask.dtype != np.bool_:
                raise ValueError(
                    f"object {obj_id}: mask must be ({self.height}, {self.width}) bool, got {mask.shape} {mask.dtype}"
                )
            if mask.any():
                _tint(view, mask, colour_of(obj_id))
        for obj_id, mask in objects:  # outlines and ids after every tint, so no tint covers them
            if mask.any():
                _outline_and_label(view, mask, obj_id, colour_of(obj_id))
        if self._padded != (self.width, self.height):
            canvas = np.zeros((self._padded[1], self._padded[0], 3), dtype=np.uint8)
            canvas[: self.height, : self.width] = view
            view = canvas
        frame = av.VideoFrame.from_ndarray(view, format="rgb24")
        frame.pts = self.frames_written
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder and finish the file (idempotent)."""
        if self._container is None:
            return
        container, self._container = self._container, None
        try:
            for packet in self._stream.encode(None):
                container.mux(packet)
        finally:
            container.close()

    def __enter__(self) -> PreviewWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def pick_codec(available: set[str] | frozenset[str]) -> str:
    """The first of :data:`CODECS` among ``available`` encoder names (raises :class:`RuntimeError` if none)."""
    for codec in CODECS:
        if codec in available:
            return codec
    raise RuntimeError(f"this FFmpeg build has none of the preview encoders {', '.join(CODECS)}")


def _tint(view: npt.NDArray[np.uint8], mask: npt.NDArray[np.bool_], colour: tuple[int, int, int]) -> None:
    pixels = view[mask].astype(np.float32)
    blended = pixels * (1 - OVERLAY_ALPHA) + np.array(colour, dtype=np.float32) * OVERLAY_ALPHA
    view[mask] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def _outline_and_label(
    view: npt.NDArray[np.uint8], mask: npt.NDArray[np.bool_], obj_id: int, colour: tuple[int, int, int]
) -> None:
    height, width = mask.shape
    scale = max(0.4, min(width, height) / 720)
    thickness = max(1, round(2 * scale))
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(view, contours, -1, colour, thickness)

    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    x0, y0 = int(cols[0]), int(rows[0])
    text = str(obj_id)
    font = cv2.FONT_HERSHEY_SIMPLEX
    (text_w, text_h), baseline = cv2.getTextSize(text, font, scale, thickness)
    pad = thickness + 1
    box_h = text_h + baseline + 2 * pad
    top = y0 - box_h if y0 - box_h >= 0 else y0  # above the mask when there is room, else just inside it
    left = min(max(x0, 0), max(width - text_w - 2 * pad, 0))
    cv2.rectangle(view, (left, top), (left + text_w + 2 * pad, top + box_h), colour, -1)
    luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
    ink = (0, 0, 0) if luminance > 140 else (255, 255, 255)
    cv2.putText(view, text, (left + pad, top + pad + text_h), font, scale, ink, thickness, cv2.LINE_AA)

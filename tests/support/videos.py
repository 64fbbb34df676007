"""Synthetic test videos (nothing is downloaded): clips of moving shapes with their ground truth, and bad files.

Clips are encoded with PyAV; the container follows the file's suffix (``.mp4``, ``.mov``, ``.mkv``: H.264 with
B-frames, so packets come out of presentation order; ``.webm``: VP9; ``.avi``: MPEG-4 part 2). Quality is high but
lossy (4:2:0 chroma): compare decoded pixels with a tolerance, on flat colours rather than noise.
"""

from __future__ import annotations

import io
import itertools
import json
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import av.container
import av.stream
import av.video.stream
import numpy as np
import numpy.typing as npt
from PIL import Image

from worker.video_probe import VideoInfo, probe

RGB = tuple[int, int, int]

CODECS = {".mp4": "libx264", ".mov": "libx264", ".mkv": "libx264", ".webm": "libvpx-vp9", ".avi": "mpeg4"}
"""The encoder :func:`write_clip` uses for each suffix."""

_CODEC_OPTIONS = {
    "libx264": {"preset": "veryfast", "crf": "12"},  # veryfast keeps B-frames (reordering) and is quick
    "libvpx-vp9": {"crf": "12", "b": "0", "deadline": "realtime", "cpu-used": "8"},
    "libvpx": {"crf": "4", "b": "1M", "deadline": "realtime", "cpu-used": "8"},
    "mpeg4": {"qmin": "1", "qmax": "3"},
}


def write_clip(
    path: Path,
    frames: Iterable[npt.NDArray[np.uint8]],
    fps: float | Fraction = 10,
    *,
    codec: str | None = None,
    faststart: bool = False,
) -> int:
    """Encode (H, W, 3) uint8 RGB frames at a constant ``fps`` (even W and H); returns the number written.

    ``codec`` overrides the suffix's encoder (:data:`CODECS`). Frame ``k`` is stamped ``k / fps`` exactly.
    ``faststart`` puts an MP4's index (``moov``) before the frames, as web uploads have it: cut short, such a file
    still opens and its last frame is found cut (where by default the index, written last, is lost).
    """
    rate = Fraction(fps).limit_denominator(1001)
    stamped = ((frame, index) for index, frame in enumerate(frames))
    options = {"movflags": "+faststart"} if faststart else {}
    return _encode(path, stamped, time_base=1 / rate, rate=rate, codec=codec, options=options)


def write_vfr_clip(
    path: Path,
    frames: Iterable[npt.NDArray[np.uint8]],
    times: Sequence[float],
    *,
    time_base: Fraction = Fraction(1, 1000),
    codec: str | None = None,
) -> int:
    """Encode frames at explicit presentation times (seconds, increasing; variable frame rate), each rounded to
    ``time_base``; returns the number written. ``times`` must have one entry per frame (else :class:`ValueError`)."""
    stamps = [round(Fraction(t) / time_base) for t in times]
    if any(b <= a for a, b in itertools.pairwise(stamps)):
        raise ValueError("times must increase by at least one time_base step")
    return _encode(path, zip(frames, stamps, strict=True), time_base=time_base, rate=None, codec=codec)


def solid_frames(n_frames: int, width: int = 64, height: int = 48) -> Iterator[npt.NDArray[np.uint8]]:
    """Frames of flat colours that change with the frame number (frame ``k``'s top-left pixel is
    :func:`solid_colour` ``(k)``): a decoded frame can be told from its neighbours despite lossy coding."""
    for index in range(n_frames):
        frame = np.empty((height, width, 3), dtype=np.uint8)
        frame[:] = solid_colour(index)
        frame[height // 2 :, width // 2 :] = (255 - np.array(solid_colour(index))).astype(np.uint8)
        yield frame


def solid_colour(index: int) -> RGB:
    """The colour of :func:`solid_frames`' frame ``index`` (top-left and bottom-right-complemented quadrant)."""
    return (int(index * 37 % 200 + 20), int(index * 11 % 200 + 20), int(255 - (index * 23 % 200 + 20)))


@dataclass(frozen=True)
class Shape:
    """A coloured rectangle or ellipse moving linearly, present on frames ``first_frame`` … ``last_frame``.

    ``start`` is its top-left corner (pixels) on ``first_frame``; it moves by ``velocity`` pixels per frame and may
    leave the picture (then it has no box). ``size`` is (width, height).
    """

    colour: RGB
    size: tuple[int, int]
    start: tuple[float, float]
    velocity: tuple[float, float] = (0.0, 0.0)
    first_frame: int = 0
    last_frame: int | None = None
    kind: Literal["rectangle", "ellipse"] = "rectangle"
    label: str = "shape"

    def present(self, frame: int) -> bool:
        """Whether the shape exists on ``frame`` (it may still lie outside the picture)."""
        return frame >= self.first_frame and (self.last_frame is None or frame <= self.last_frame)

    def corner(self, frame: int) -> tuple[int, int]:
        """Its unclipped top-left corner on ``frame``, in whole pixels."""
        steps = frame - self.first_frame
        return round(self.start[0] + self.velocity[0] * steps), round(self.start[1] + self.velocity[1] * steps)

    def mask(self, frame: int, width: int, height: int) -> npt.NDArray[np.bool_]:
        """Its (height, width) pixels on ``frame`` (all False when absent or outside the picture)."""
        mask = np.zeros((height, width), dtype=bool)
        if not self.present(frame):
            return mask
        x, y = self.corner(frame)
        w, h = self.size
        if self.kind == "rectangle":
            mask[max(y, 0) : max(y + h, 0), max(x, 0) : max(x + w, 0)] = True
            return mask
        yy, xx = np.mgrid[0:height, 0:width]
        cx, cy = x + (w - 1) / 2, y + (h - 1) / 2
        mask[((xx - cx) / (w / 2)) ** 2 + ((yy - cy) / (h / 2)) ** 2 <= 1] = True
        return mask


@dataclass(frozen=True)
class TruthBox:
    """Where shape ``obj_id`` (its index in the shape list) is drawn on a frame: its tight box, clipped to the
    picture, in pixel-edge coordinates (``x1``/``y1`` exclusive, so ``x1 - x0`` is the width in pixels). The box is
    the whole shape even where a later shape hides it."""

    obj_id: int
    label: str
    x0: int
    y0: int
    x1: int
    y1: int


def moving_shapes(
    n_frames: int,
    width: int,
    height: int,
    shapes: Sequence[Shape],
    *,
    background: Literal["plain", "noise"] = "noise",
    seed: int = 0,
) -> Iterator[tuple[npt.NDArray[np.uint8], list[TruthBox]]]:
    """Yield ``n_frames`` (H, W, 3) uint8 RGB frames of ``shapes`` (drawn in order: later ones on top) with the
    ground truth boxes of the shapes visible on each. The background is flat grey or a fixed low-contrast noise
    texture (the same on every frame, like a still camera)."""
    if background == "plain":
        backdrop = np.full((height, width, 3), 96, dtype=np.uint8)
    else:
        rng = np.random.default_rng(seed)
        backdrop = rng.integers(70, 120, size=(height, width, 3), dtype=np.uint8)
    for index in range(n_frames):
        frame = backdrop.copy()
        boxes: list[TruthBox] = []
        for obj_id, shape in enumerate(shapes):
            mask = shape.mask(index, width, height)
            if not mask.any():
                continue
            frame[mask] = shape.colour
            rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
            boxes.append(
                TruthBox(obj_id, shape.label, int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
            )
        yield frame, boxes


def detections_jsonl(
    ground_truth: Iterable[Sequence[TruthBox]],
    every_n: int = 1,
    jitter: float = 0.0,
    *,
    score: float = 0.9,
    seed: int = 0,
) -> str:
    """A detections file (JSONL, one ``{"frame": i, "boxes": [{"x0", "y0", "x1", "y1", "label", "score"}]}`` line per
    frame) from ground truth: every ``every_n``-th frame (0, n, 2n, …), frames without boxes included with an empty
    list. ``jitter`` moves each edge by Gaussian noise of that fraction of the box's side (0.05: 5 %)."""
    if every_n < 1:
        raise ValueError(f"every_n must be >= 1, got {every_n}")
    rng = np.random.default_rng(seed)
    lines: list[str] = []
    for index, boxes in enumerate(ground_truth):
        if index % every_n:
            continue
        entries = []
        for box in boxes:
            x0, y0, x1, y1 = float(box.x0), float(box.y0), float(box.x1), float(box.y1)
            if jitter:
                dx, dy = jitter * (x1 - x0), jitter * (y1 - y0)
                x0, x1 = x0 + rng.normal(0, dx), x1 + rng.normal(0, dx)
                y0, y1 = y0 + rng.normal(0, dy), y1 + rng.normal(0, dy)
                x0, y0 = max(x0, 0.0), max(y0, 0.0)
                x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
            entries.append(
                {"x0": round(x0, 2), "y0": round(y0, 2), "x1": round(x1, 2), "y1": round(y1, 2)}
                | {"label": box.label, "score": score}
            )
        lines.append(json.dumps({"frame": index, "boxes": entries}))
    return "".join(line + "\n" for line in lines)


def truncated_copy(src: Path, dst: Path, fraction: float) -> Path:
    """The first ``fraction`` of ``src``'s bytes (a download cut short)."""
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def jpeg_as_mp4(dst: Path) -> Path:
    """A real JPEG image saved under a video name (FFmpeg would read it as a one-frame ``jpeg_pipe``)."""
    pixels = np.zeros((48, 64, 3), dtype=np.uint8)
    pixels[:, 32:] = (200, 40, 40)
    Image.fromarray(pixels).save(dst, format="JPEG")
    return dst


def zero_frame_video(dst: Path) -> Path:
    """A valid MP4 with an H.264 video stream and no frames.

    A plain MP4 would drop the empty track (no video stream at all) and Matroska cannot be read back without a
    cluster, so this is a fragmented MP4 (``empty_moov``): the track is declared up front and no fragment follows.
    """
    with av.open(str(dst), mode="w", format="mp4", options={"movflags": "empty_moov+frag_keyframe"}) as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        container.start_encoding()
        for packet in stream.encode(None):
            container.mux(packet)
    return dst


def ten_hour_video(dst: Path) -> Path:
    """A tiny clip (11 frames of 64x48, one an hour) whose header announces ten hours and more. MP4 or Matroska
    (by suffix); WebM's VP9 encoder refuses one-second time bases."""
    frames = solid_frames(11)
    stamped = ((frame, hour * 3600) for hour, frame in enumerate(frames))
    _encode(dst, stamped, time_base=Fraction(1, 1), rate=None, codec="libx264")
    return dst


def audio_only(dst: Path, *, cover: bool = False) -> Path:
    """An MP4 (``.m4a`` style) holding one second of silent AAC and no video stream; with ``cover``, also album
    art (a JPEG that FFmpeg reads back as a one-frame video stream marked ``attached_pic``)."""
    with av.open(str(dst), mode="w", format="mp4") as container:
        stream = container.add_stream("aac", rate=16000)
        if cover:
            picture = container.add_stream("mjpeg", rate=1)
            picture.width, picture.height, picture.pix_fmt = 64, 48, "yuvj420p"
            picture.disposition = av.stream.Disposition.attached_pic
            container.start_encoding()
            jpeg = io.BytesIO()
            Image.fromarray(np.full((48, 64, 3), 180, dtype=np.uint8)).save(jpeg, format="JPEG")
            packet = av.Packet(jpeg.getvalue())
            packet.stream, packet.pts, packet.dts = picture, 0, 0
            container.mux(packet)
        for index in range(16):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, index * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return dst


def rotated_copy(src: Path, dst: Path, degrees: Literal[90, 180, 270]) -> Path:
    """A copy of an MP4/MOV whose display matrix turns the picture ``degrees`` clockwise (as phones tag portrait
    video): the first ``tkhd`` box's matrix is rewritten in place."""
    data = bytearray(src.read_bytes())
    at = data.find(b"tkhd")
    if at < 0:
        raise ValueError(f"{src} has no tkhd box (not an MP4/MOV?)")
    version = data[at + 4]
    offset = at + 8 + (20 if version == 0 else 32) + 16  # times, track id, duration; reserved, layer, group, volume
    one, unity = 1 << 16, 1 << 30
    matrices = {
        90: (0, one, 0, -one, 0, 0, 0, 0, unity),
        180: (-one, 0, 0, 0, -one, 0, 0, 0, unity),
        270: (0, -one, 0, one, 0, 0, 0, 0, unity),
    }
    data[offset : offset + 36] = struct.pack(">9i", *matrices[degrees])
    dst.write_bytes(bytes(data))
    return dst


def _encode(
    path: Path,
    stamped: Iterable[tuple[npt.NDArray[np.uint8], int]],
    *,
    time_base: Fraction,
    rate: Fraction | None,
    codec: str | None,
    options: dict[str, str] | None = None,
) -> int:
    codec_name = codec or CODECS.get(path.suffix.lower())
    if codec_name is None:
        raise ValueError(f"no default codec for {path.suffix!r}; pass codec=")
    count = 0
    with av.open(str(path), mode="w", options=options or {}) as container:
        stream: av.video.stream.VideoStream | None = None
        for frame_rgb, pts in stamped:
            if stream is None:
                stream = _video_stream(container, codec_name, frame_rgb, time_base, rate)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame_rgb), format="rgb24")
            frame.pts, frame.time_base = pts, time_base
            for packet in stream.encode(frame):
                container.mux(packet)
            count += 1
        if stream is None:
            raise ValueError("no frames to write (see zero_frame_video for an empty stream)")
        for packet in stream.encode(None):
            container.mux(packet)
    return count


def _video_stream(
    container: av.container.OutputContainer,
    codec: str,
    first: npt.NDArray[np.uint8],
    time_base: Fraction,
    rate: Fraction | None,
) -> av.video.stream.VideoStream:
    height, width = first.shape[:2]
    if first.ndim != 3 or first.shape[2] != 3 or first.dtype != np.uint8:
        raise ValueError(f"frames must be (H, W, 3) uint8, got {first.shape} {first.dtype}")
    if width % 2 or height % 2:
        raise ValueError(f"4:2:0 video needs an even width and height, got {width}x{height}")
    stream = container.add_stream(codec, rate=rate, options=dict(_CODEC_OPTIONS.get(codec, {})))
    assert isinstance(stream, av.video.stream.VideoStream)
    stream.width, stream.height = width, height
    stream.pix_fmt = "yuv420p"
    stream.codec_context.time_base = time_base
    return stream


# ---- checking clips -------------------------------------------------------------------------------------------

SUFFIXES = (".mp4", ".mkv", ".webm", ".mov")
VFR_TIMES = (0.0, 0.04, 0.08, 0.2, 0.21, 0.22, 0.5, 0.533, 1.0)
COLOUR_TOLERANCE = 12  # lossy 4:2:0 coding of flat colours


def probe_clip(path: Path) -> VideoInfo:
    """Probe with limits far above every test clip."""
    return probe(path, max_seconds=600.0, max_pixels=10_000_000, max_frames=10_000)


def info_of(times: list[float] | np.ndarray) -> VideoInfo:
    stamps = np.asarray(times, dtype=np.float64)
    return VideoInfo(width=64, height=48, times=stamps, fps=30.0, duration=float(stamps[-1]) + 1 / 30)


def top_left(frame: np.ndarray) -> np.ndarray:
    return np.asarray(frame[4:12, 4:12].reshape(-1, 3).mean(axis=0))


def assert_frame_is(frame: np.ndarray, number: int) -> None:
    assert frame.shape == (48, 64, 3)
    assert frame.dtype == np.uint8
    assert np.abs(top_left(frame) - solid_colour(number)).max() <= COLOUR_TOLERANCE, number

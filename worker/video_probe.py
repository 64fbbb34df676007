"""Video files: what is in them, checked against the worker's limits before anything heavy is done.

- :func:`probe`: the first video stream's size and every frame's presentation time, from the container (packets
  are demuxed, not decoded; only the first frame is decoded, to prove the codec works). Limits are checked from the
  header first, then while demuxing, so a ten-hour file is refused without reading it all.
- :func:`select_frames`: the frame numbers a job processes (``frames`` range, stride, ``max_fps``).
- :func:`open_video`: the container, opened with the demuxers allowed to parse untrusted bytes only.

Frame numbers are positions in presentation order over the frames that carry data (what ``ffprobe -count_packets``
counts), so they are exact for containers that store no frame count (Matroska, WebM) and for variable frame rate.
A display rotation (phones store portrait video as landscape plus a rotation) is applied: sizes and pixels are the
upright ones. ``worker.video`` decodes the frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.container
import av.error
import av.stream
import av.video.frame
import av.video.stream
import numpy as np
import numpy.typing as npt

from tasks.errors import EmptyVideoError, InvalidVideoError, VideoTooLargeError, VideoTooLongError

ACCEPTED_FORMATS = ("mov", "mp4", "matroska", "webm", "avi", "mpegts", "mpeg", "flv", "asf", "ogg", "gif")
"""FFmpeg demuxers allowed to parse untrusted bytes (its ``format_whitelist``): real video containers only. Still
images (``jpeg_pipe``, ``image2``…), playlists that open other files or URLs (``hls``, ``concat``) and raw
elementary streams are refused."""

_OPEN_OPTIONS = {"format_whitelist": ",".join(ACCEPTED_FORMATS), "protocol_whitelist": "file"}

HEADER_SLACK_SECONDS = 1.0
"""A header's duration may exceed the timestamps' by rounding or a last frame's length: the header check refuses
only beyond ``max_seconds`` plus this; the exact check on timestamps follows."""

TRUNCATION_TOLERANCE = 0.05
"""A stream whose frames end more than this fraction (and more than :data:`TRUNCATION_MIN_SECONDS`) before the
duration its header announces is truncated."""

TRUNCATION_MIN_SECONDS = 0.25

TIME_TOLERANCE_SECONDS = 1e-3
"""``max_fps`` keeps frames at least ``1 / max_fps`` apart, less this (at most a tenth of the interval): Matroska and
WebM store whole milliseconds, so 30 fps there is 33, 33, 34 ms apart and two frames may be 66 ms for 1/15 s."""

FALLBACK_FPS = 25.0
"""Frame rate assumed when a stream has neither timestamps nor a rate (only to space frames and size the last one)."""

_SETTING_SECONDS = "SAMQ_WORKER_MAX_VIDEO_SECONDS"
_SETTING_FRAMES = "SAMQ_WORKER_MAX_VIDEO_FRAMES"
_SETTING_PIXELS = "SAMQ_WORKER_MAX_VIDEO_PIXELS"


@dataclass(frozen=True, eq=False)
class VideoInfo:
    """What :func:`probe` learnt about a video's first video stream (cover pictures skipped).

    - ``width``, ``height``: upright frame size (after the display rotation).
    - ``times``: (N,) float64, the presentation time in seconds of each frame relative to the first one; index ``k``
      is frame number ``k`` (presentation order). Read-only.
    - ``fps``: average frame rate, ``N / duration``.
    - ``duration``: seconds from the first frame's start to the last frame's end.
    - ``rotation``: degrees (0, 90, 180 or 270) the decoded frames are turned clockwise to be upright.
    - ``pts``: (N,) int64, each frame's timestamp in the stream's time base, which :class:`VideoFrames` uses to tell
      which frame the decoder returned; ``None`` when the container does not timestamp every frame (frames are then
      counted in decode order). Read-only.
    - ``format``: the FFmpeg demuxer that read the file (``"mov,mp4,m4a,3gp,3g2,mj2"``, ``"matroska,webm"``, …).
    - ``codec``: the video codec (``"h264"``, ``"vp9"``, …).
    - ``stream``: the index (among all the file's streams) of the video stream read.
    """

    width: int
    height: int
    times: npt.NDArray[np.float64]
    fps: float
    duration: float
    rotation: int = 0
    pts: npt.NDArray[np.int64] | None = None
    format: str = ""
    codec: str = ""
    stream: int = 0

    @property
    def frame_count(self) -> int:
        """The number of frames (``len(times)``)."""
        return int(self.times.shape[0])


def probe(path: Path, *, max_seconds: float, max_pixels: int, max_frames: int) -> VideoInfo:
    """Read a video's size and frame timestamps, and check them against the worker's limits.

    In order: :class:`InvalidVideoError` when the file is not a video in an accepted container
    (:data:`ACCEPTED_FORMATS`) or has no video stream (cover pictures do not count); :class:`VideoTooLargeError` when a frame has more than ``max_pixels``
    pixels; :class:`VideoTooLongError` when the header announces more than ``max_seconds`` (before any packet is
    read), then while demuxing as soon as the timestamps span more than ``max_seconds`` or there are more than
    ``max_frames`` frames; :class:`InvalidVideoError` when a packet is corrupt, the first frame cannot be decoded or
    the frames stop well before the duration the header announces (truncated); :class:`EmptyVideoError` when the
    stream holds no frame. A missing file raises :class:`FileNotFoundError`.
    """
    container = open_video(path)
    try:
        return _probe(container, max_seconds=max_seconds, max_pixels=max_pixels, max_frames=max_frames)
    finally:
        container.close()


def select_frames(
    info: VideoInfo, *, start: int = 0, end: int | None = None, stride: int = 1, max_fps: float | None = None
) -> npt.NDArray[np.int64]:
    """The frame numbers a job processes, increasing: ``start`` … ``end`` (inclusive; ``None`` or past the last frame
    means the last), every ``stride``-th, then thinned so that consecutive kept frames are at least ``1 / max_fps``
    seconds apart (by timestamps, so variable frame rate is thinned evenly in time; a frame is kept when it is at
    least that far after the last kept one, less :data:`TIME_TOLERANCE_SECONDS`).

    Raises :class:`EmptyVideoError` when nothing is selected (``start`` past the end, ``end`` before ``start``) and
    :class:`ValueError` for a negative ``start``, a ``stride`` below 1 or a ``max_fps`` that is not positive.
    """
    if start < 0:
        raise ValueError(f"start must be >= 0, got {start}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if max_fps is not None and not (max_fps > 0 and math.isfinite(max_fps)):
        raise ValueError(f"max_fps must be a positive number, got {max_fps}")
    count = info.frame_count
    last = count - 1 if end is None else min(end, count - 1)
    if start > last:
        span = "no frames" if count == 0 else f"frames 0-{count - 1}"
        asked = f"{start}-{'end' if end is None else end}"
        raise EmptyVideoError(f"no frames to process: the range {asked} is empty (the video has {span})")
    selected = np.arange(start, last + 1, stride, dtype=np.int64)
    if max_fps is None or selected.shape[0] < 2:
        return selected
    interval = 1.0 / max_fps
    min_gap = interval - min(TIME_TOLERANCE_SECONDS, interval / 10)
    times = info.times[selected]
    keep = np.zeros(selected.shape[0], dtype=bool)
    keep[0] = True
    last_kept = float(times[0])
    for position in range(1, selected.shape[0]):
        moment = float(times[position])
        if moment - last_kept >= min_gap:
            keep[position] = True
            last_kept = moment
    return selected[keep]


def open_video(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise FileNotFoundError(f"no such video file: {path}")
    try:
        return av.open(str(path), mode="r", container_options=dict(_OPEN_OPTIONS))
    except av.error.EOFError as e:
        raise InvalidVideoError("the file ends before its header does: truncated, or not a video") from e
    except av.error.ArgumentError as e:
        # What FFmpeg says when the bytes are a format outside the whitelist (a JPEG, a playlist, …).
        accepted = ", ".join(ACCEPTED_FORMATS)
        raise InvalidVideoError(f"not a video in an accepted container ({accepted})") from e
    except av.error.FFmpegError as e:
        raise InvalidVideoError(f"not a readable video: {_reason(e)}") from e


def _probe(
    container: av.container.InputContainer, *, max_seconds: float, max_pixels: int, max_frames: int
) -> VideoInfo:
    stream = _first_video_stream(container)
    if stream.codec_context is None:  # FFmpeg can name the codec but this build has no decoder for it
        raise InvalidVideoError("this worker has no decoder for the video stream's codec")
    width, height = stream.codec_context.width, stream.codec_context.height
    if width <= 0 or height <= 0:
        raise InvalidVideoError(f"the video stream declares no frame size ({width}x{height})")
    if width * height > max_pixels:
        raise VideoTooLargeError(
            f"video too large: {width}x{height} = {width * height} pixels per frame; "
            f"the limit is {max_pixels} pixels ({_SETTING_PIXELS})"
        )
    declared = _declared_duration(container, stream)
    if declared is not None and declared > max_seconds + HEADER_SLACK_SECONDS:
        raise VideoTooLongError(
            f"video too long: its header announces {declared:.1f} s; the limit is {max_seconds:g} s ({_SETTING_SECONDS})"
        )
    scan = _scan(container, stream, max_seconds=max_seconds, max_frames=max_frames)
    if scan.count == 0:
        raise EmptyVideoError("the video stream holds no frames")
    if scan.first is None:
        raise InvalidVideoError(f"the first frame of the {stream.codec_context.name} stream cannot be decoded")
    time_base = stream.time_base or Fraction(1, 1)
    rate = _stream_rate(stream)
    pts, times, last_length = _timeline(scan, time_base, rate)
    duration = float(times[-1]) + last_length
    if declared is not None:
        shortfall = declared - duration
        if shortfall > max(TRUNCATION_MIN_SECONDS, TRUNCATION_TOLERANCE * declared):
            raise InvalidVideoError(
                f"the frames end at {duration:.2f} s but the header announces {declared:.2f} s: truncated"
            )
    if duration > max_seconds:
        raise VideoTooLongError(
            f"video too long: {duration:.1f} s; the limit is {max_seconds:g} s ({_SETTING_SECONDS})"
        )
    rotation = (-round(scan.first.rotation / 90) * 90) % 360
    if rotation % 180:
        width, height = height, width
    times.setflags(write=False)
    if pts is not None:
        pts.setflags(write=False)
    return VideoInfo(
        width=width,
        height=height,
        times=times,
        fps=times.shape[0] / duration,
        duration=duration,
        rotation=rotation,
        pts=pts,
        format=container.format.name,
        codec=stream.codec_context.name,
        stream=stream.index,
    )


@dataclass
class _Scan:
    """What one demuxing pass collected: per frame (in decode order) its pts, dts and duration, and the first frame."""

    pts: list[int | None]
    dts: list[int | None]
    durations: list[int]
    first: av.video.frame.VideoFrame | None

    @property
    def count(self) -> int:
        return len(self.pts)


def _scan(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    *,
    max_seconds: float,
    max_frames: int,
) -> _Scan:
    """Demux every packet of ``stream`` (decoding only until the first frame comes out), stopping early at a limit."""
    scan = _Scan(pts=[], dts=[], durations=[], first=None)
    time_base = float(stream.time_base or 1)
    earliest: int | None = None
    try:
        for packet in container.demux(stream):
            if packet.size == 0 or packet.is_discard:
                continue  # the demuxer's end-of-stream marker, or a frame an edit list cuts
            number = scan.count
            if packet.is_corrupt:
                raise InvalidVideoError(f"frame {number} is corrupt or cut short: truncated or damaged file")
            if number >= max_frames:
                raise VideoTooLongError(
                    f"video too long: more than {max_frames} frames; "
                    f"the limit is {max_frames} frames ({_SETTING_FRAMES})"
                )
            stamp = packet.pts if packet.pts is not None else packet.dts
            if stamp is not None:
                earliest = stamp if earliest is None else min(earliest, stamp)
                if (stamp - earliest) * time_base > max_seconds:
                    raise VideoTooLongError(
                        f"video too long: frames past {max_seconds:g} s; "
                        f"the limit is {max_seconds:g} s ({_SETTING_SECONDS})"
                    )
            scan.pts.append(packet.pts)
            scan.dts.append(packet.dts)
            scan.durations.append(packet.duration or 0)
            if scan.first is None:
                decoded = stream.decode(packet)
                if decoded:
                    scan.first = decoded[0]
        if scan.first is None and scan.count:
            decoded = stream.decode(None)  # flush: a decoder with delay may hold the first frame back
            if decoded:
                scan.first = decoded[0]
    except av.error.FFmpegError as e:
        if scan.first is None:
            raise InvalidVideoError(
                f"the first frame of the {stream.codec_context.name} stream cannot be decoded: {_reason(e)}"
            ) from e
        raise InvalidVideoError(f"cannot read the video past frame {scan.count - 1}: {_reason(e)}") from e
    return scan


def _timeline(
    scan: _Scan, time_base: Fraction, rate: float
) -> tuple[npt.NDArray[np.int64] | None, npt.NDArray[np.float64], float]:
    """Per-frame timestamps in presentation order (``None`` unless every frame has its own), times in seconds from
    the first decodable frame, and the last frame's length in seconds.

    Frames without a pts fall back on decode timestamps (then presentation order is decode order), and without
    those on the stream's rate. Frames the decoder cannot start from (a stream cut before its first keyframe) are
    dropped: the first frame is the first one decoded.
    """
    seconds = float(time_base)
    exact = all(value is not None for value in scan.pts)
    if exact:
        stamps = np.array(scan.pts, dtype=np.int64)
        order = np.argsort(stamps, kind="stable")
        stamps = stamps[order]
        lengths = np.array(scan.durations, dtype=np.int64)[order]
        first_pts = scan.first.pts if scan.first is not None else None
        if first_pts is not None and first_pts in stamps:
            skip = int(np.searchsorted(stamps, first_pts))
            stamps, lengths = stamps[skip:], lengths[skip:]
        unique = bool(stamps.shape[0] < 2 or np.all(np.diff(stamps) > 0))
        times = (stamps - stamps[0]).astype(np.float64) * seconds
        last = float(lengths[-1]) * seconds
        pts: npt.NDArray[np.int64] | None = stamps if unique else None
    elif all(value is not None for value in scan.dts):
        stamps = np.array(scan.dts, dtype=np.int64)
        times = (stamps - stamps[0]).astype(np.float64) * seconds
        last = float(scan.durations[-1]) * seconds
        pts = None
    else:
        times = np.arange(scan.count, dtype=np.float64) / rate
        last = 0.0
        pts = None
    if last <= 0:
        gaps = np.diff(times)
        positive = gaps[gaps > 0]
        last = float(np.median(positive)) if positive.size else 1.0 / rate
    return pts, times, last


def _first_video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    """The first video stream that is not a cover picture (an MP4/M4A's ``covr``, a Matroska image attachment)."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    kinds: list[str] = sorted({stream.type for stream in container.streams})
    if container.streams.video:
        kinds = [kind for kind in kinds if kind != "video"] + ["a cover picture"]
    holds = f"it holds {', '.join(kinds)} only" if kinds else "it holds no streams"
    raise InvalidVideoError(f"the file has no video stream ({holds})")


def _declared_duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float | None:
    """The video stream's duration from the header, else the container's when the video is its only stream."""
    if stream.duration is not None and stream.duration > 0 and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0 and len(container.streams) == 1:
        return container.duration / av.time_base
    return None


def _stream_rate(stream: av.video.stream.VideoStream) -> float:
    for rate in (stream.average_rate, stream.guessed_rate):
        if rate is not None and rate > 0:
            return float(rate)
    return FALLBACK_FPS


def _reason(error: av.error.FFmpegError) -> str:
    return str(error.strerror or error)

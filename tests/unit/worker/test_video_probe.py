"""The video probe and frame selection (``worker.video_probe``): limits, timestamps, hostile files."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from tasks.errors import EmptyVideoError, InvalidVideoError, VideoTooLargeError, VideoTooLongError
from tests.support.videos import (
    COLOUR_TOLERANCE,
    SUFFIXES,
    VFR_TIMES,
    audio_only,
    info_of,
    jpeg_as_mp4,
    probe_clip,
    rotated_copy,
    solid_colour,
    ten_hour_video,
    truncated_copy,
    write_clip,
    zero_frame_video,
)
from worker import video_probe
from worker.video import VideoFrames
from worker.video_probe import probe, select_frames

# probe -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_probe_counts_every_frame_and_its_time(clips: dict[str, Path], suffix: str) -> None:
    info = probe_clip(clips[suffix])

    assert (info.width, info.height, info.frame_count, info.rotation) == (64, 48, 30, 0)
    # MP4/MOV keep exact ticks; Matroska/WebM store whole milliseconds.
    np.testing.assert_allclose(info.times, np.arange(30) / 30, atol=1e-3, rtol=0)
    assert info.duration == pytest.approx(1.0, abs=2e-3)
    assert info.fps == pytest.approx(30.0, rel=1e-2)
    assert not info.times.flags.writeable


def test_probe_names_format_and_codec(clips: dict[str, Path]) -> None:
    assert probe_clip(clips[".webm"]).codec == "vp9"
    mp4 = probe_clip(clips[".mp4"])
    assert (mp4.codec, "mp4" in mp4.format) == ("h264", True)


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".webm"])
def test_probe_follows_variable_frame_rate_timestamps(vfr_clips: dict[str, Path], suffix: str) -> None:
    info = probe_clip(vfr_clips[suffix])

    assert info.frame_count == len(VFR_TIMES)
    np.testing.assert_allclose(info.times, VFR_TIMES, atol=1e-3, rtol=0)
    assert info.duration > 1.0
    assert info.fps == pytest.approx(info.frame_count / info.duration)


def test_probe_applies_display_rotation(clips: dict[str, Path], tmp_path: Path) -> None:
    """A phone's portrait clip: stored 64x48 landscape, shown turned 90° clockwise (48 wide, 64 high)."""
    turned = rotated_copy(clips[".mp4"], tmp_path / "portrait.mp4", 90)
    info = probe_clip(turned)
    assert (info.width, info.height, info.rotation) == (48, 64, 90)

    with VideoFrames(turned, info, select_frames(info)) as frames:
        frame = frames[3]
    assert frame.shape == (64, 48, 3)
    assert frame.flags.c_contiguous and frame.flags.writeable
    # solid_frames paints the bottom-right quadrant in the complement; a clockwise turn brings it bottom-left.
    expected = 255 - np.array(solid_colour(3))
    assert np.abs(frame[40:60, 4:20].reshape(-1, 3).mean(axis=0) - expected).max() <= COLOUR_TOLERANCE
    assert np.abs(frame[4:20, 4:20].reshape(-1, 3).mean(axis=0) - solid_colour(3)).max() <= COLOUR_TOLERANCE


# bad files -------------------------------------------------------------------------------------------------------


def test_text_and_empty_files_are_invalid(tmp_path: Path) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n" * 100)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    for path in (text, empty):
        with pytest.raises(InvalidVideoError):
            probe_clip(path)


def test_a_jpeg_is_not_a_video(tmp_path: Path) -> None:
    with pytest.raises(InvalidVideoError, match="not a video in an accepted container"):
        probe_clip(jpeg_as_mp4(tmp_path / "photo.mp4"))


def test_a_playlist_cannot_make_ffmpeg_open_other_files(clips: dict[str, Path], tmp_path: Path) -> None:
    """An HLS playlist (or ffconcat list) would have FFmpeg read whatever path or URL it names (FFmpeg opens the
    playlist below, and the clip it names, when its demuxers are not restricted)."""
    playlist = tmp_path / "list.m3u8"
    playlist.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\n{clips['.mp4']}\n#EXT-X-ENDLIST\n")
    concat = tmp_path / "list.ffconcat"
    concat.write_text(f"ffconcat version 1.0\nfile '{clips['.mp4']}'\n")
    for path in (playlist, concat):
        with pytest.raises(InvalidVideoError, match="not a video in an accepted container"):
            probe_clip(path)


def test_audio_only_has_no_video_stream(tmp_path: Path) -> None:
    with pytest.raises(InvalidVideoError, match=r"no video stream.*audio"):
        probe_clip(audio_only(tmp_path / "sound.mp4"))


def test_album_art_is_not_a_video(tmp_path: Path) -> None:
    with pytest.raises(InvalidVideoError, match=r"no video stream.*audio, a cover picture only"):
        probe_clip(audio_only(tmp_path / "song.m4a", cover=True))


def test_zero_frames_is_empty(tmp_path: Path) -> None:
    with pytest.raises(EmptyVideoError, match="no frames"):
        probe_clip(zero_frame_video(tmp_path / "nothing.mp4"))


def test_missing_file_is_not_a_video_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        probe_clip(tmp_path / "absent.mp4")


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_ten_hours_is_refused_from_the_header_without_demuxing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    path = ten_hour_video(tmp_path / f"long{suffix}")

    def no_demux(*args: object, **kwargs: object) -> None:
        raise AssertionError("demuxed a file its header already refuses")

    monkeypatch.setattr(video_probe, "_scan", no_demux)
    with pytest.raises(VideoTooLongError, match=r"header announces 3\d{4}\.\d s.*SAMQ_WORKER_MAX_VIDEO_SECONDS"):
        probe(path, max_seconds=3600, max_pixels=10**7, max_frames=10**6)


def test_ten_hour_video_passes_with_a_generous_limit(tmp_path: Path) -> None:
    info = probe(ten_hour_video(tmp_path / "long.mkv"), max_seconds=48 * 3600, max_pixels=10**7, max_frames=100)
    assert info.frame_count == 11
    np.testing.assert_allclose(info.times, np.arange(11) * 3600.0)
    assert info.duration >= 10 * 3600


def test_too_long_by_timestamps(clips: dict[str, Path]) -> None:
    """1 s of video against a 0.5 s limit: within the header's slack, refused while demuxing."""
    with pytest.raises(VideoTooLongError, match=r"frames past 0\.5 s.*SAMQ_WORKER_MAX_VIDEO_SECONDS"):
        probe(clips[".mkv"], max_seconds=0.5, max_pixels=10**7, max_frames=1000)


def test_too_long_by_timestamps_without_a_header_duration(
    clips: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(video_probe, "_declared_duration", lambda container, stream: None)
    with pytest.raises(VideoTooLongError, match="SAMQ_WORKER_MAX_VIDEO_SECONDS"):
        probe(clips[".webm"], max_seconds=0.5, max_pixels=10**7, max_frames=1000)
    assert probe_clip(clips[".webm"]).frame_count == 30


def test_too_many_frames(clips: dict[str, Path]) -> None:
    with pytest.raises(VideoTooLongError, match=r"more than 29 frames.*SAMQ_WORKER_MAX_VIDEO_FRAMES"):
        probe(clips[".mp4"], max_seconds=600, max_pixels=10**7, max_frames=29)
    assert probe(clips[".mp4"], max_seconds=600, max_pixels=10**7, max_frames=30).frame_count == 30


def test_too_many_pixels(clips: dict[str, Path]) -> None:
    with pytest.raises(VideoTooLargeError, match=r"64x48 = 3072 pixels.*SAMQ_WORKER_MAX_VIDEO_PIXELS"):
        probe(clips[".mp4"], max_seconds=600, max_pixels=3071, max_frames=1000)
    assert probe(clips[".mp4"], max_seconds=600, max_pixels=3072, max_frames=1000).width == 64


def test_truncated_mp4_loses_its_index(clips: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(InvalidVideoError, match="not a readable video"):
        probe_clip(truncated_copy(clips[".mp4"], tmp_path / "cut.mp4", 0.6))


def test_truncated_faststart_mp4_has_a_cut_frame(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    noisy = (rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(40))
    full = tmp_path / "web.mp4"
    write_clip(full, noisy, fps=20, faststart=True)
    assert probe_clip(full).frame_count == 40
    with pytest.raises(InvalidVideoError, match=r"frame \d+ is corrupt or cut short"):
        probe_clip(truncated_copy(full, tmp_path / "cut.mp4", 0.5))


@pytest.mark.parametrize("suffix", [".mkv", ".webm"])
def test_truncated_matroska_ends_before_its_header_duration(tmp_path: Path, suffix: str) -> None:
    rng = np.random.default_rng(1)
    noisy = (rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(60))
    full = tmp_path / f"full{suffix}"
    write_clip(full, noisy, fps=20)
    assert probe_clip(full).frame_count == 60
    with pytest.raises(InvalidVideoError, match="truncated"):
        probe_clip(truncated_copy(full, tmp_path / f"cut{suffix}", 0.5))


def test_timeline_without_pts_falls_back_on_dts_then_rate() -> None:
    first = None
    by_dts = video_probe._Scan(pts=[None, None, None], dts=[0, 100, 200], durations=[100, 100, 0], first=first)
    pts, times, last = video_probe._timeline(by_dts, Fraction(1, 1000), 10.0)
    assert pts is None
    np.testing.assert_allclose(times, [0.0, 0.1, 0.2])
    assert last == pytest.approx(0.1)  # no packet duration: the typical gap

    bare = video_probe._Scan(pts=[None, None], dts=[None, None], durations=[0, 0], first=first)
    pts, times, last = video_probe._timeline(bare, Fraction(1, 1000), 25.0)
    assert pts is None
    np.testing.assert_allclose(times, [0.0, 0.04])


# select_frames ---------------------------------------------------------------------------------------------------


def test_select_range_and_stride() -> None:
    info = info_of(np.arange(30) / 30)
    assert select_frames(info).tolist() == list(range(30))
    assert select_frames(info, start=5, end=9).tolist() == [5, 6, 7, 8, 9]
    assert select_frames(info, start=3, stride=10).tolist() == [3, 13, 23]
    assert select_frames(info, start=28, end=500).tolist() == [28, 29]
    assert select_frames(info, start=29).tolist() == [29]
    assert select_frames(info).dtype == np.int64


def test_select_nothing_is_empty_video() -> None:
    info = info_of(np.arange(30) / 30)
    with pytest.raises(EmptyVideoError, match="range 30-end is empty"):
        select_frames(info, start=30)
    with pytest.raises(EmptyVideoError):
        select_frames(info, start=10, end=9)


def test_select_refuses_nonsense() -> None:
    info = info_of(np.arange(30) / 30)
    cases = [({"start": -1}, "start"), ({"stride": 0}, "stride"), ({"max_fps": 0.0}, "max_fps")]
    cases.append(({"max_fps": float("nan")}, "max_fps"))
    for kwargs, name in cases:
        with pytest.raises(ValueError, match=name):
            select_frames(info, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_max_fps_halves_30_fps_exactly(clips: dict[str, Path], suffix: str) -> None:
    """Matroska's millisecond stamps (0, 33, 67, 100, …) must not break the every-other-frame pattern."""
    info = probe_clip(clips[suffix])
    assert select_frames(info, max_fps=15).tolist() == list(range(0, 30, 2))
    assert select_frames(info, max_fps=10).tolist() == list(range(0, 30, 3))
    assert select_frames(info, max_fps=30).tolist() == list(range(30))
    assert select_frames(info, max_fps=1000).tolist() == list(range(30))
    assert select_frames(info, start=1, stride=2, max_fps=10).tolist() == [1, 5, 9, 13, 17, 21, 25, 29]


def test_max_fps_on_ntsc_rate() -> None:
    info = info_of(np.arange(60) * 1001 / 30000)
    assert select_frames(info, max_fps=15).tolist() == list(range(0, 60, 2))
    assert select_frames(info, max_fps=30000 / 1001).tolist() == list(range(60))


def test_max_fps_thins_variable_frame_rate_by_time(vfr_clips: dict[str, Path]) -> None:
    info = probe_clip(vfr_clips[".mkv"])
    # 0, .04, .08, .2, .21, .22, .5, .533, 1.0 → kept when ≥ 0.1 s after the last kept one.
    assert select_frames(info, max_fps=10).tolist() == [0, 3, 6, 8]
    assert select_frames(info, max_fps=25).tolist() == [0, 1, 2, 3, 6, 8]
    kept = info.times[select_frames(info, max_fps=4)]
    assert np.all(np.diff(kept) >= 0.25 - 1e-3)

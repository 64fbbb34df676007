from __future__ import annotations

import json
import tracemalloc
import weakref
from fractions import Fraction
from pathlib import Path

import numpy as np
import psutil  # type: ignore[import-untyped, unused-ignore]
import pytest

import worker.video as video
from tasks.errors import EmptyVideoError, InvalidVideoError, VideoTooLargeError, VideoTooLongError
from tests.support.videos import (
    Shape,
    audio_only,
    detections_jsonl,
    jpeg_as_mp4,
    moving_shapes,
    rotated_copy,
    solid_colour,
    solid_frames,
    ten_hour_video,
    truncated_copy,
    write_clip,
    write_vfr_clip,
    zero_frame_video,
)
from worker.runners.video import Frames
from worker.video import VideoFrames, VideoInfo, probe, select_frames

pytestmark = pytest.mark.unit

SUFFIXES = (".mp4", ".mkv", ".webm", ".mov")
VFR_TIMES = (0.0, 0.04, 0.08, 0.2, 0.21, 0.22, 0.5, 0.533, 1.0)
COLOUR_TOLERANCE = 12  # lossy 4:2:0 coding of flat colours


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """30 frames at 30 fps of :func:`solid_frames` in every container."""
    folder = tmp_path_factory.mktemp("clips")
    paths = {}
    for suffix in SUFFIXES:
        paths[suffix] = folder / f"clip{suffix}"
        write_clip(paths[suffix], solid_frames(30), fps=30)
    return paths


@pytest.fixture(scope="module")
def vfr_clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("vfr")
    paths = {}
    for suffix in (".mp4", ".mkv", ".webm"):
        paths[suffix] = folder / f"vfr{suffix}"
        write_vfr_clip(paths[suffix], solid_frames(len(VFR_TIMES)), VFR_TIMES)
    return paths


def _probe(path: Path) -> VideoInfo:
    """Probe with limits far above every test clip."""
    return probe(path, max_seconds=600.0, max_pixels=10_000_000, max_frames=10_000)


def _info(times: list[float] | np.ndarray) -> VideoInfo:
    stamps = np.asarray(times, dtype=np.float64)
    return VideoInfo(width=64, height=48, times=stamps, fps=30.0, duration=float(stamps[-1]) + 1 / 30)


def _top_left(frame: np.ndarray) -> np.ndarray:
    return np.asarray(frame[4:12, 4:12].reshape(-1, 3).mean(axis=0))


def _assert_frame_is(frame: np.ndarray, number: int) -> None:
    assert frame.shape == (48, 64, 3)
    assert frame.dtype == np.uint8
    assert np.abs(_top_left(frame) - solid_colour(number)).max() <= COLOUR_TOLERANCE, number


# probe -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_probe_counts_every_frame_and_its_time(clips: dict[str, Path], suffix: str) -> None:
    info = _probe(clips[suffix])

    assert (info.width, info.height, info.frame_count, info.rotation) == (64, 48, 30, 0)
    # MP4/MOV keep exact ticks; Matroska/WebM store whole milliseconds.
    np.testing.assert_allclose(info.times, np.arange(30) / 30, atol=1e-3, rtol=0)
    assert info.duration == pytest.approx(1.0, abs=2e-3)
    assert info.fps == pytest.approx(30.0, rel=1e-2)
    assert not info.times.flags.writeable


def test_probe_names_format_and_codec(clips: dict[str, Path]) -> None:
    assert _probe(clips[".webm"]).codec == "vp9"
    mp4 = _probe(clips[".mp4"])
    assert (mp4.codec, "mp4" in mp4.format) == ("h264", True)


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".webm"])
def test_probe_follows_variable_frame_rate_timestamps(vfr_clips: dict[str, Path], suffix: str) -> None:
    info = _probe(vfr_clips[suffix])

    assert info.frame_count == len(VFR_TIMES)
    np.testing.assert_allclose(info.times, VFR_TIMES, atol=1e-3, rtol=0)
    assert info.duration > 1.0
    assert info.fps == pytest.approx(info.frame_count / info.duration)


def test_probe_applies_display_rotation(clips: dict[str, Path], tmp_path: Path) -> None:
    """A phone's portrait clip: stored 64x48 landscape, shown turned 90° clockwise (48 wide, 64 high)."""
    turned = rotated_copy(clips[".mp4"], tmp_path / "portrait.mp4", 90)
    info = _probe(turned)
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
            _probe(path)


def test_a_jpeg_is_not_a_video(tmp_path: Path) -> None:
    with pytest.raises(InvalidVideoError, match="not a video in an accepted container"):
        _probe(jpeg_as_mp4(tmp_path / "photo.mp4"))


def test_a_playlist_cannot_make_ffmpeg_open_other_files(clips: dict[str, Path], tmp_path: Path) -> None:
    """An HLS playlist (or ffconcat list) would have FFmpeg read whatever path or URL it names (FFmpeg opens the
    playlist below, and the clip it names, when its demuxers are not restricted)."""
    playlist = tmp_path / "list.m3u8"
    playlist.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\n{clips['.mp4']}\n#EXT-X-ENDLIST\n")
    concat = tmp_path / "list.ffconcat"
    concat.write_text(f"ffconcat version 1.0\nfile '{clips['.mp4']}'\n")
    for path in (playlist, concat):
        with pytest.raises(InvalidVideoError, match="not a video in an accepted container"):
            _probe(path)


def test_audio_only_has_no_video_stream(tmp_path: Path) -> None:
    with pytest.raises(InvalidVideoError, match=r"no video stream.*audio"):
        _probe(audio_only(tmp_path / "sound.mp4"))


def test_album_art_is_not_a_video(tmp_path: Path) -> None:
    with pytest.raises(InvalidVideoError, match=r"no video stream.*audio, a cover picture only"):
        _probe(audio_only(tmp_path / "song.m4a", cover=True))


def test_zero_frames_is_empty(tmp_path: Path) -> None:
    with pytest.raises(EmptyVideoError, match="no frames"):
        _probe(zero_frame_video(tmp_path / "nothing.mp4"))


def test_missing_file_is_not_a_video_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        _probe(tmp_path / "absent.mp4")


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_ten_hours_is_refused_from_the_header_without_demuxing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    path = ten_hour_video(tmp_path / f"long{suffix}")

    def no_demux(*args: object, **kwargs: object) -> None:
        raise AssertionError("demuxed a file its header already refuses")

    monkeypatch.setattr(video, "_scan", no_demux)
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
    monkeypatch.setattr(video, "_declared_duration", lambda container, stream: None)
    with pytest.raises(VideoTooLongError, match="SAMQ_WORKER_MAX_VIDEO_SECONDS"):
        probe(clips[".webm"], max_seconds=0.5, max_pixels=10**7, max_frames=1000)
    assert _probe(clips[".webm"]).frame_count == 30


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
        _probe(truncated_copy(clips[".mp4"], tmp_path / "cut.mp4", 0.6))


def test_truncated_faststart_mp4_has_a_cut_frame(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    noisy = (rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(40))
    full = tmp_path / "web.mp4"
    write_clip(full, noisy, fps=20, faststart=True)
    assert _probe(full).frame_count == 40
    with pytest.raises(InvalidVideoError, match=r"frame \d+ is corrupt or cut short"):
        _probe(truncated_copy(full, tmp_path / "cut.mp4", 0.5))


@pytest.mark.parametrize("suffix", [".mkv", ".webm"])
def test_truncated_matroska_ends_before_its_header_duration(tmp_path: Path, suffix: str) -> None:
    rng = np.random.default_rng(1)
    noisy = (rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(60))
    full = tmp_path / f"full{suffix}"
    write_clip(full, noisy, fps=20)
    assert _probe(full).frame_count == 60
    with pytest.raises(InvalidVideoError, match="truncated"):
        _probe(truncated_copy(full, tmp_path / f"cut{suffix}", 0.5))


def test_timeline_without_pts_falls_back_on_dts_then_rate() -> None:
    first = None
    by_dts = video._Scan(pts=[None, None, None], dts=[0, 100, 200], durations=[100, 100, 0], first=first)
    pts, times, last = video._timeline(by_dts, Fraction(1, 1000), 10.0)
    assert pts is None
    np.testing.assert_allclose(times, [0.0, 0.1, 0.2])
    assert last == pytest.approx(0.1)  # no packet duration: the typical gap

    bare = video._Scan(pts=[None, None], dts=[None, None], durations=[0, 0], first=first)
    pts, times, last = video._timeline(bare, Fraction(1, 1000), 25.0)
    assert pts is None
    np.testing.assert_allclose(times, [0.0, 0.04])


# select_frames ---------------------------------------------------------------------------------------------------


def test_select_range_and_stride() -> None:
    info = _info(np.arange(30) / 30)
    assert select_frames(info).tolist() == list(range(30))
    assert select_frames(info, start=5, end=9).tolist() == [5, 6, 7, 8, 9]
    assert select_frames(info, start=3, stride=10).tolist() == [3, 13, 23]
    assert select_frames(info, start=28, end=500).tolist() == [28, 29]
    assert select_frames(info, start=29).tolist() == [29]
    assert select_frames(info).dtype == np.int64


def test_select_nothing_is_empty_video() -> None:
    info = _info(np.arange(30) / 30)
    with pytest.raises(EmptyVideoError, match="range 30-end is empty"):
        select_frames(info, start=30)
    with pytest.raises(EmptyVideoError):
        select_frames(info, start=10, end=9)


def test_select_refuses_nonsense() -> None:
    info = _info(np.arange(30) / 30)
    cases = [({"start": -1}, "start"), ({"stride": 0}, "stride"), ({"max_fps": 0.0}, "max_fps")]
    cases.append(({"max_fps": float("nan")}, "max_fps"))
    for kwargs, name in cases:
        with pytest.raises(ValueError, match=name):
            select_frames(info, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_max_fps_halves_30_fps_exactly(clips: dict[str, Path], suffix: str) -> None:
    """Matroska's millisecond stamps (0, 33, 67, 100, …) must not break the every-other-frame pattern."""
    info = _probe(clips[suffix])
    assert select_frames(info, max_fps=15).tolist() == list(range(0, 30, 2))
    assert select_frames(info, max_fps=10).tolist() == list(range(0, 30, 3))
    assert select_frames(info, max_fps=30).tolist() == list(range(30))
    assert select_frames(info, max_fps=1000).tolist() == list(range(30))
    assert select_frames(info, start=1, stride=2, max_fps=10).tolist() == [1, 5, 9, 13, 17, 21, 25, 29]


def test_max_fps_on_ntsc_rate() -> None:
    info = _info(np.arange(60) * 1001 / 30000)
    assert select_frames(info, max_fps=15).tolist() == list(range(0, 60, 2))
    assert select_frames(info, max_fps=30000 / 1001).tolist() == list(range(60))


def test_max_fps_thins_variable_frame_rate_by_time(vfr_clips: dict[str, Path]) -> None:
    info = _probe(vfr_clips[".mkv"])
    # 0, .04, .08, .2, .21, .22, .5, .533, 1.0 → kept when ≥ 0.1 s after the last kept one.
    assert select_frames(info, max_fps=10).tolist() == [0, 3, 6, 8]
    assert select_frames(info, max_fps=25).tolist() == [0, 1, 2, 3, 6, 8]
    kept = info.times[select_frames(info, max_fps=4)]
    assert np.all(np.diff(kept) >= 0.25 - 1e-3)


# VideoFrames -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_frames_decode_in_order_with_their_colours(clips: dict[str, Path], suffix: str) -> None:
    info = _probe(clips[suffix])
    with VideoFrames(clips[suffix], info, select_frames(info)) as frames:
        assert len(frames) == 30
        for index in range(len(frames)):
            _assert_frame_is(frames[index], index)


def test_frames_map_processed_index_to_frame_number_and_time(clips: dict[str, Path]) -> None:
    info = _probe(clips[".mp4"])
    with VideoFrames(clips[".mp4"], info, select_frames(info, start=2, stride=5)) as frames:
        protocol: Frames = frames  # what every tracker takes (checked by mypy)
        assert len(protocol) == 6
        assert len(frames) == 6
        assert [frames.frame_number(i) for i in range(6)] == [2, 7, 12, 17, 22, 27]
        assert frames.time(1) == pytest.approx(7 / 30)
        assert frames.selected.tolist() == [2, 7, 12, 17, 22, 27]
        for index in range(len(frames)):
            _assert_frame_is(frames[index], frames.frame_number(index))
        _assert_frame_is(frames[-1], 27)
        with pytest.raises(IndexError):
            frames[6]


def test_going_back_reopens_and_is_still_right(clips: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[Path] = []
    real_open = video._open

    def counting_open(path: Path):  # type: ignore[no-untyped-def]
        opened.append(path)
        return real_open(path)

    monkeypatch.setattr(video, "_open", counting_open)
    info = _probe(clips[".mkv"])
    opened.clear()
    with VideoFrames(clips[".mkv"], info, select_frames(info)) as frames:
        _assert_frame_is(frames[20], 20)
        _assert_frame_is(frames[25], 25)  # forward: same decoder
        assert len(opened) == 1
        _assert_frame_is(frames[25], 25)  # the cached frame: no decoding
        _assert_frame_is(frames[5], 5)  # backward: re-opened
        assert len(opened) == 2
        _assert_frame_is(frames[0], 0)
        _assert_frame_is(frames[29], 29)
        assert len(opened) == 3


def test_frames_are_fresh_writable_arrays(clips: dict[str, Path]) -> None:
    info = _probe(clips[".mp4"])
    with VideoFrames(clips[".mp4"], info, select_frames(info)) as frames:
        first = frames[4]
        again = frames[4]
        assert first is not again
        assert first.flags.writeable and first.flags.c_contiguous
        first[:] = 0  # the caller's to keep: the reader's copy is untouched
        _assert_frame_is(frames[4], 4)


def test_closed_reader_refuses(clips: dict[str, Path]) -> None:
    info = _probe(clips[".mp4"])
    frames = VideoFrames(clips[".mp4"], info, select_frames(info))
    frames[0]
    frames.close()
    frames.close()
    with pytest.raises(RuntimeError, match="closed"):
        frames[1]


def test_selection_outside_the_video_is_refused(clips: dict[str, Path]) -> None:
    info = _probe(clips[".mp4"])
    with pytest.raises(ValueError, match="0-29"):
        VideoFrames(clips[".mp4"], info, np.array([0, 30], dtype=np.int64))


def test_file_cut_after_probe_names_the_frame(clips: dict[str, Path], tmp_path: Path) -> None:
    """Corruption found mid-stream: the frames run out before the one asked for."""
    path = tmp_path / "clip.mkv"
    path.write_bytes(clips[".mkv"].read_bytes())
    info = _probe(path)
    truncated_copy(clips[".mkv"], path, 0.4)
    with VideoFrames(path, info, select_frames(info)) as frames:
        _assert_frame_is(frames[0], 0)
        with pytest.raises(InvalidVideoError, match="before frame 29"):
            frames[29]


def test_data_cut_mid_stream_names_the_first_missing_frame(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    noisy = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(40)]
    path = tmp_path / "web.mp4"
    write_clip(path, iter(noisy), fps=20, faststart=True)
    info = _probe(path)
    full = path.read_bytes()
    path.write_bytes(full[: len(full) // 2])
    reached: list[int] = []

    def read_all(frames: VideoFrames) -> None:
        for index in range(len(frames)):
            frames[index]
            reached.append(index)

    with VideoFrames(path, info, select_frames(info)) as frames, pytest.raises(InvalidVideoError) as failure:
        read_all(frames)
    # Frame threading hides the decoder's error; the frames that never come out are what gives it away.
    assert 0 < len(reached) < 40
    assert f"frame {len(reached)}" in failure.value.message


def test_moving_shapes_round_trip(tmp_path: Path) -> None:
    """A clip of the test helper's shapes decodes to the shapes where the ground truth puts them."""
    shapes = [
        Shape(colour=(220, 40, 40), size=(16, 12), start=(2.0, 4.0), velocity=(3.0, 1.0)),
        Shape(colour=(40, 220, 40), size=(10, 10), start=(50.0, 30.0), velocity=(-2.0, 0.0), first_frame=5),
    ]
    frames, truths = zip(*moving_shapes(12, 64, 48, shapes, background="plain"), strict=True)
    path = tmp_path / "shapes.mp4"
    write_clip(path, frames, fps=12)
    info = _probe(path)
    with VideoFrames(path, info, select_frames(info)) as decoded:
        for index, truth in enumerate(truths):
            for box in truth:
                inside = decoded[index][box.y0 + 2 : box.y1 - 2, box.x0 + 2 : box.x1 - 2].reshape(-1, 3).mean(axis=0)
                assert np.abs(inside - shapes[box.obj_id].colour).max() <= 20


def test_shapes_appear_move_leave_and_vanish() -> None:
    shapes = [
        Shape(colour=(200, 0, 0), size=(10, 6), start=(50.0, 2.0), velocity=(4.0, 0.0), label="runner"),
        Shape(colour=(0, 200, 0), size=(8, 8), start=(5.0, 30.0), first_frame=3, last_frame=4, kind="ellipse"),
    ]
    drawn = list(moving_shapes(8, 64, 48, shapes, background="plain"))
    boxes = [[(b.obj_id, b.x0, b.y0, b.x1, b.y1) for b in truth] for _, truth in drawn]
    assert boxes[0] == [(0, 50, 2, 60, 8)]
    assert boxes[1] == [(0, 54, 2, 64, 8)]
    assert boxes[2] == [(0, 58, 2, 64, 8)]  # clipped at the right edge
    assert boxes[3] == [(0, 62, 2, 64, 8), (1, 5, 30, 13, 38)]  # the disc appears on its first frame
    assert boxes[4] == [(1, 5, 30, 13, 38)]  # the runner has left the picture
    assert boxes[5] == boxes[6] == boxes[7] == []  # the disc's last frame was 4
    frame, truth = drawn[0]
    assert truth[0].label == "runner"
    assert (frame[2:8, 50:60] == (200, 0, 0)).all()
    assert (frame[10:, :] == 96).all()


def test_detections_jsonl_from_ground_truth() -> None:
    shapes = [Shape(colour=(200, 0, 0), size=(10, 10), start=(5.0, 5.0), velocity=(1.0, 0.0), label="car")]
    truth = [boxes for _, boxes in moving_shapes(7, 64, 48, shapes)]
    rows = [json.loads(line) for line in detections_jsonl(truth, every_n=3).splitlines()]
    assert [row["frame"] for row in rows] == [0, 3, 6]
    assert rows[1]["boxes"] == [{"x0": 8.0, "y0": 5.0, "x1": 18.0, "y1": 15.0, "label": "car", "score": 0.9}]

    jittered = [json.loads(line) for line in detections_jsonl(truth, jitter=0.05, seed=1).splitlines()]
    assert len(jittered) == 7
    box = jittered[6]["boxes"][0]
    assert box != {"x0": 11.0, "y0": 5.0, "x1": 21.0, "y1": 15.0, "label": "car", "score": 0.9}
    assert abs(box["x0"] - 11) < 3 and abs(box["x1"] - 21) < 3 and box["x1"] > box["x0"]


# memory ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 frames of 640x360: 207 MB as RGB arrays, were they kept."""
    path = tmp_path_factory.mktemp("long") / "long.mkv"
    shapes = [Shape(colour=(230, 190, 40), size=(120, 80), start=(0.0, 140.0), velocity=(1.5, 0.0))]
    write_clip(path, (frame for frame, _ in moving_shapes(300, 640, 360, shapes, background="plain")), fps=30)
    return path


def test_reading_hundreds_of_frames_holds_one(long_clip: Path) -> None:
    info = _probe(long_clip)
    assert info.frame_count == 300
    frame_bytes = 640 * 360 * 3
    process = psutil.Process()
    with VideoFrames(long_clip, info, select_frames(info)) as frames:
        returned = weakref.ref(frames[0])
        assert returned() is None  # the reader keeps no reference to what it hands out
        # The pixels live in FFmpeg's buffers, which only RSS sees; tracemalloc sees any Python-side pile-up.
        rss_before = process.memory_info().rss
        tracemalloc.start()
        try:
            for index in range(len(frames)):
                frames[index]
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        rss_growth = process.memory_info().rss - rss_before
    assert peak < 3 * frame_bytes, f"traced peak {peak} bytes while decoding 300 frames"
    assert rss_growth < 40 * 2**20, f"RSS grew {rss_growth / 2**20:.1f} MiB over 300 frames"

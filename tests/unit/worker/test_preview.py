from __future__ import annotations

import tracemalloc
from pathlib import Path

import av
import numpy as np
import pytest

from worker.preview import OVERLAY_ALPHA, PALETTE, PreviewWriter, colour_of, pick_codec

GREY = 100


def _decode(path: Path) -> tuple[str, float, list[np.ndarray]]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate or 0)
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        return stream.codec_context.name, rate, frames


def _square(height: int, width: int, x0: int, y0: int, side: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    mask[y0 : y0 + side, x0 : x0 + side] = True
    return mask


def test_writes_a_decodable_h264_mp4_frame_for_frame(tmp_path: Path) -> None:
    path = tmp_path / "preview.mp4"
    with PreviewWriter(path, 128, 96, 10) as writer:
        for index in range(25):
            frame = np.full((96, 128, 3), GREY, dtype=np.uint8)
            writer.write(frame, [(1, _square(96, 128, 10 + index, 30, 24)), (2, np.zeros((96, 128), dtype=bool))])
    assert writer.codec == "libx264"
    assert writer.frames_written == 25

    codec, rate, frames = _decode(path)
    assert (codec, rate, len(frames)) == ("h264", 10.0, 25)
    assert frames[0].shape == (96, 128, 3)


def test_masks_are_tinted_in_their_colour_and_the_rest_is_untouched(tmp_path: Path) -> None:
    path = tmp_path / "preview.mp4"
    mask = _square(96, 128, 40, 40, 40)
    with PreviewWriter(path, 128, 96, 5) as writer:
        writer.write(np.full((96, 128, 3), GREY, dtype=np.uint8), [(3, mask)])
    frame = _decode(path)[2][0].astype(np.float64)

    tint = GREY * (1 - OVERLAY_ALPHA) + np.array(colour_of(3)) * OVERLAY_ALPHA
    inside = frame[50:70, 50:70].reshape(-1, 3).mean(axis=0)  # well inside: no outline, no label
    assert np.abs(inside - tint).max() <= 8
    outside = frame[0:20, 100:128].reshape(-1, 3).mean(axis=0)
    assert np.abs(outside - GREY).max() <= 4
    # The outline is drawn in the full colour on the mask's edge.
    edge = frame[60, 40]
    assert np.abs(edge - np.array(colour_of(3))).max() <= 40
    # The id label sits just above the top-left corner: something other than the background is drawn there.
    label = frame[22:40, 40:60]
    assert np.abs(label - GREY).max() > 60


def test_odd_sizes_are_padded_to_even(tmp_path: Path) -> None:
    path = tmp_path / "odd.mp4"
    with PreviewWriter(path, 63, 47, 12.5) as writer:
        for _ in range(7):
            writer.write(np.full((47, 63, 3), 200, dtype=np.uint8), [(0, _square(47, 63, 5, 5, 10))])
    _, rate, frames = _decode(path)
    assert len(frames) == 7
    assert rate == 12.5
    assert frames[0].shape == (48, 64, 3)
    assert frames[0][20:40, 30:60].mean() > 190  # the picture
    assert frames[0][47, :56].mean() < 30  # the padding row, black


def test_ntsc_rate_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "ntsc.mp4"
    with PreviewWriter(path, 32, 32, 30000 / 1001) as writer:
        writer.write(np.zeros((32, 32, 3), dtype=np.uint8), [])
        writer.write(np.zeros((32, 32, 3), dtype=np.uint8), [])
    assert _decode(path)[1] == pytest.approx(30000 / 1001)


def test_falls_back_to_mpeg4_without_libx264(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(av, "codecs_available", av.codecs_available - {"libx264"})
    path = tmp_path / "fallback.mp4"
    with PreviewWriter(path, 65, 49, 10) as writer:
        for index in range(5):
            writer.write(np.full((49, 65, 3), GREY, dtype=np.uint8), [(index, _square(49, 65, 10, 10, 20))])
    assert writer.codec == "mpeg4"
    codec, _, frames = _decode(path)
    assert (codec, len(frames), frames[0].shape) == ("mpeg4", 5, (50, 66, 3))


def test_pick_codec() -> None:
    assert pick_codec({"mpeg4", "libx264"}) == "libx264"
    assert pick_codec({"mpeg4"}) == "mpeg4"
    with pytest.raises(RuntimeError, match="libx264, mpeg4"):
        pick_codec(set())


def test_colours_are_stable_and_distinct() -> None:
    assert len(set(PALETTE)) == len(PALETTE)
    assert colour_of(4) == colour_of(4 + len(PALETTE)) == PALETTE[4]
    assert colour_of(0) != colour_of(1)


def test_bad_input_is_refused(tmp_path: Path) -> None:
    with PreviewWriter(tmp_path / "p.mp4", 32, 24, 10) as writer:
        with pytest.raises(ValueError, match=r"frame must be \(24, 32, 3\) uint8"):
            writer.write(np.zeros((24, 30, 3), dtype=np.uint8), [])
        with pytest.raises(ValueError, match="frame must be"):
            writer.write(np.zeros((24, 32, 3), dtype=np.float32), [])
        with pytest.raises(ValueError, match=r"object 5: mask must be \(24, 32\) bool"):
            writer.write(np.zeros((24, 32, 3), dtype=np.uint8), [(5, np.zeros((24, 32), dtype=np.uint8))])
        writer.write(np.zeros((24, 32, 3), dtype=np.uint8), [])
    writer.close()
    with pytest.raises(RuntimeError, match="closed"):
        writer.write(np.zeros((24, 32, 3), dtype=np.uint8), [])
    with pytest.raises(ValueError, match="positive"):
        PreviewWriter(tmp_path / "q.mp4", 0, 24, 10)
    with pytest.raises(ValueError, match="fps"):
        PreviewWriter(tmp_path / "q.mp4", 32, 24, 0)


def test_streaming_keeps_nothing(tmp_path: Path) -> None:
    """200 frames of 320x240 with two objects: Python-side memory stays at a few frames, not 200."""
    frame = np.full((240, 320, 3), GREY, dtype=np.uint8)
    frame_bytes = frame.nbytes
    with PreviewWriter(tmp_path / "long.mp4", 320, 240, 30) as writer:
        writer.write(frame, [])
        tracemalloc.start()
        try:
            for index in range(200):
                objects = [(1, _square(240, 320, index, 50, 60)), (2, _square(240, 320, 200, index // 2, 40))]
                writer.write(frame, objects)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 12 * frame_bytes, f"traced peak {peak} bytes over 200 frames"
    assert writer.frames_written == 201

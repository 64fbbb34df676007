"""Sample media made on the spot (nothing is downloaded): what ``samq demo`` segments and the README's examples use.

``samq samples DIR`` writes ``scene.png`` (400×300: a yellow ellipse and a green square on a gradient),
``clip.mp4`` (2 s at 10 fps, 320×240: a red box moving right, a blue disc moving down) and ``dataset/`` (8 scenes
with the shapes moved about).
"""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
from PIL import Image

Pixels = npt.NDArray[np.uint8]


def scene(width: int = 400, height: int = 300, shift: tuple[int, int] = (0, 0)) -> Pixels:
    """A gradient with a yellow ellipse (centre 200,150 + shift) and a green square (300..360, 40..100 + shift)."""
    dx, dy = shift
    yy, xx = np.mgrid[0:height, 0:width]
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[..., 0] = (xx * 255 // width).astype(np.uint8)
    pixels[..., 2] = (yy * 255 // height).astype(np.uint8)
    pixels[((xx - 200 - dx) / 80) ** 2 + ((yy - 150 - dy) / 60) ** 2 <= 1] = (240, 200, 30)
    pixels[max(0, 40 + dy) : 100 + dy, max(0, 300 + dx) : 360 + dx] = (30, 200, 90)
    return pixels


def png(pixels: Pixels) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def clip_frames(count: int = 20, width: int = 320, height: int = 240) -> list[Pixels]:
    """A red box (starting at 20,40, 40×30) moving right 6 px a frame, a blue disc (centre 160,30, radius 18)
    moving down 5 px a frame, on grey."""
    yy, xx = np.mgrid[0:height, 0:width]
    frames = []
    for k in range(count):
        frame = np.full((height, width, 3), 90, dtype=np.uint8)
        x0 = 20 + 6 * k
        frame[40:70, x0 : x0 + 40] = (220, 40, 40)
        frame[(xx - 160) ** 2 + (yy - 30 - 5 * k) ** 2 <= 18**2] = (40, 80, 230)
        frames.append(frame)
    return frames


def write_clip(path: Path, frames: list[Pixels], fps: int = 10) -> None:
    """H.264 in MP4 (yuv420p), what browsers and samq's decoder both read."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "yuv420p"
        for pixels in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode())


def write_samples(out: Path) -> list[Path]:
    """``scene.png``, ``clip.mp4`` and ``dataset/00.png`` … ``07.png`` under ``out``; returns the paths."""
    (out / "dataset").mkdir(parents=True, exist_ok=True)
    written = [out / "scene.png", out / "clip.mp4"]
    written[0].write_bytes(png(scene()))
    write_clip(written[1], clip_frames())
    for i in range(8):
        path = out / "dataset" / f"{i:02}.png"
        path.write_bytes(png(scene(shift=(12 * i - 40, 9 * (i % 4) - 12))))
        written.append(path)
    return written

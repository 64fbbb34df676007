"""Progress on a terminal or in a log: a windowed rate, an ETA, and one status line redrawn in place."""

from __future__ import annotations

import math
import time
from collections import deque
from typing import TextIO


class RateMeter:
    """Progress per second over the samples of the last ``window`` seconds (not since the start)."""

    def __init__(self, window: float = 10.0) -> None:
        self.window = window
        self._samples: deque[tuple[float, int]] = deque()

    def add(self, at: float, done: int) -> None:
        self._samples.append((at, done))
        while len(self._samples) > 2 and at - self._samples[1][0] >= self.window:
            self._samples.popleft()  # the oldest kept sample is the last one at least a window old

    @property
    def rate(self) -> float | None:
        """None until two samples apart in time."""
        (t0, d0), (t1, d1) = self._samples[0], self._samples[-1]
        return (d1 - d0) / (t1 - t0) if t1 > t0 else None


def progress_line(
    done: int, total: int, rate: float | None, failed: int | None = None, width: int = 30, unit: str = "items"
) -> str:
    """``[#####.....] 12/40 items  3.20 items/s  ETA 0:00:09  1 failed``."""
    filled = min(width, width * done // total) if total > 0 else 0
    eta = max(total - done, 0) / rate if rate and rate > 0 and total > 0 else None
    speed = "--" if rate is None else f"{rate:.2f}" if rate < 10 else f"{rate:.0f}"
    line = f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {unit}  {speed} {unit}/s  ETA {format_eta(eta)}"
    return line if failed is None else f"{line}  {failed} failed"


def format_eta(seconds: float | None) -> str:
    """H:MM:SS, or ``--:--`` when unknown."""
    if seconds is None:
        return "--:--"
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02}:{s % 60:02}"


class StatusLine:
    """One status line on ``stream``: redrawn in place on a terminal; elsewhere (logs, pipes) printed as plain
    lines, at most one per ``every`` seconds, and always the final one."""

    def __init__(self, stream: TextIO, every: float = 5.0) -> None:
        self._stream, self._every = stream, every
        self._tty = stream.isatty()
        self._last, self._width = -math.inf, 0

    def show(self, line: str, final: bool = False) -> None:
        if self._tty:
            self._stream.write(f"\r{line.ljust(self._width)}" + ("\n" if final else ""))
            self._width = 0 if final else len(line)
        elif final or time.monotonic() - self._last >= self._every:
            self._stream.write(line + "\n")
            self._last = time.monotonic()
        self._stream.flush()

"""Peak memory of a process: the kernel's own high-water mark (``VmHWM``), resettable, and RSS sampled in a thread."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped, unused-ignore]

from bench.jobs import BenchError

RSS_SAMPLE_SECONDS = 0.005


def proc_status_bytes(pid: int, field: str) -> int:
    """A ``kB`` field of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise BenchError(f"/proc/{pid}/status has no {field}")


def reset_peak_rss(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (``echo 5 > /proc/<pid>/clear_refs``, Linux ≥ 4.0)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return proc_status_bytes(pid, "VmHWM") <= proc_status_bytes(pid, "VmRSS") + 8 * 1024 * 1024


class RssSampler:
    """Samples a process's RSS every ``interval`` seconds in a thread; ``peak`` is the largest seen.

    ``process``: a ``psutil.Process``."""

    def __init__(self, process: Any, interval: float = RSS_SAMPLE_SECONDS) -> None:
        self.process = process
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            try:
                rss = int(self.process.memory_info().rss)
            except psutil.Error:
                return
            self.peak = max(self.peak, rss)
            self.samples += 1
            if self._stop.wait(self.interval):
                return

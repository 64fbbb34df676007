"""Progress on a terminal or in a log: rich's progress bars, redrawn in place and cut to the terminal's width; where
the stream is not a terminal (a pipe, a log file), one plain line per change instead."""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class RateColumn(ProgressColumn):
    """``3.20 items/s``, over rich's recent window (not since the start)."""

    def render(self, task: Task) -> Text:
        return Text(f"{format_rate(task.speed)} {task.fields['unit']}/s", style="progress.data.speed")


class ProgressDisplay:
    """Counters shown on ``stream`` (``live``: redrawn in place; default, when ``stream`` is a terminal). Use it as a
    context manager, or :meth:`close` it."""

    def __init__(self, stream: TextIO, *, live: bool | None = None) -> None:
        self._stream = stream
        self._live = stream.isatty() if live is None else live
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=None),
            MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}"),
            RateColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[note]}"),
            console=Console(file=stream, force_terminal=self._live or None),
            disable=not self._live,
            speed_estimate_period=10,
        )
        self._progress.start()
        self._tasks: dict[str, TaskID] = {}
        self._shown: dict[str, tuple[str, int, int | None, str]] = {}

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def show(self, key: str, label: str, done: int, total: int | None, unit: str, note: str = "") -> None:
        """Counter ``key`` at ``done`` of ``total`` (None or 0: unknown yet), e.g. ``("job_…", "running", 3, 40,
        "items", "1 failed")``."""
        total = total or None
        if key not in self._tasks:
            self._tasks[key] = self._progress.add_task(label, total=total, unit=unit, note=note)
        task_id = self._tasks[key]
        self._progress.update(task_id, description=label, completed=done, total=total, unit=unit, note=note)
        state = (label, done, total, note)
        if not self._live and self._shown.get(key) != state:
            self._shown[key] = state
            self._stream.write(self.plain_line(key) + "\n")
            self._stream.flush()

    def plain_line(self, key: str) -> str:
        """``job_… running 12/40 items  3.20 items/s  ETA 0:00:09  1 failed``."""
        task = self._progress.tasks[self._tasks[key]]
        unit = task.fields["unit"]
        total = "?" if task.total is None else f"{task.total:.0f}"
        line = f"{key} {task.description} {task.completed:.0f}/{total} {unit}"
        if task.total is not None and not task.finished:
            line += f"  {format_rate(task.speed)} {unit}/s  ETA {format_eta(task.time_remaining)}"
        return f"{line}  {task.fields['note']}".rstrip()

    def close(self) -> None:
        self._progress.stop()


class JobProgress(ProgressDisplay):
    """A job's progress from its job objects: its status, counts and (for batches) failed items."""

    def update(self, job: Mapping[str, Any]) -> None:
        progress = job["progress"]
        failed = _failed(job)
        note = f"{failed} failed" if failed else ""
        self.show(job["id"], job["status"], progress["done"], progress["total"], progress["unit"], note)


def format_rate(rate: float | None) -> str:
    return "--" if rate is None else f"{rate:.2f}" if rate < 10 else f"{rate:.0f}"


def format_eta(seconds: float | None) -> str:
    """H:MM:SS, or ``--:--`` when unknown."""
    if seconds is None:
        return "--:--"
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02}:{s % 60:02}"


def _failed(job: Mapping[str, Any]) -> int | None:
    """Failed items so far, where the job says (its progress while running, its summary at the end)."""
    summary = (job.get("result") or {}).get("summary") or {}
    failed = job["progress"].get("failed", summary.get("failed"))
    return failed if isinstance(failed, int) else None

"""Markers by folder: ``tests/unit`` (no network, fakes passed in), ``tests/integration`` (a real Redis, real worker
processes, a real S3 endpoint), ``tests/e2e`` (the CLI and HTTP as a user runs them). ``-m unit`` etc. select them.
And at the end, a check that no process the tests started is left running."""

from __future__ import annotations

import contextlib
from pathlib import Path

import psutil
import pytest

TESTS = Path(__file__).parent
KINDS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        kind = item.path.relative_to(TESTS).parts[0]
        if kind not in KINDS:
            raise pytest.UsageError(f"{item.nodeid}: tests live under tests/{{{','.join(KINDS)}}}/")
        item.add_marker(getattr(pytest.mark, kind))


LEFTOVER_GRACE_SECONDS = 10


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """No process a test started outlives the run: whatever is still running (after a grace period for processes
    that are stopping) is reported, killed, and fails the session."""
    alive = [p for p in psutil.Process().children(recursive=True) if _running(p)]
    _, alive = psutil.wait_procs(alive, timeout=LEFTOVER_GRACE_SECONDS)
    leftovers = [p for p in alive if _running(p)]
    if not leftovers:
        return
    described = []
    for process in leftovers:
        with contextlib.suppress(psutil.Error):
            described.append(f"{process.pid}: {' '.join(process.cmdline())[:200]}")
            process.kill()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("processes left behind by the tests (killed now):\n  " + "\n  ".join(described), red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False

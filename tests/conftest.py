"""Markers by folder: ``tests/unit`` (no network, fakes passed in), ``tests/integration`` (a real Redis, real worker
processes, a real S3 endpoint), ``tests/e2e`` (the CLI and HTTP as a user runs them). ``-m unit`` etc. select them."""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS = Path(__file__).parent
KINDS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        kind = item.path.relative_to(TESTS).parts[0]
        if kind not in KINDS:
            raise pytest.UsageError(f"{item.nodeid}: tests live under tests/{{{','.join(KINDS)}}}/")
        item.add_marker(getattr(pytest.mark, kind))

"""Clips shared by the video probe and frame tests, written once per session in every container."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.videos import SUFFIXES, VFR_TIMES, solid_frames, write_clip, write_vfr_clip


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """30 frames at 30 fps of :func:`solid_frames` in every container."""
    folder = tmp_path_factory.mktemp("clips")
    paths = {}
    for suffix in SUFFIXES:
        paths[suffix] = folder / f"clip{suffix}"
        write_clip(paths[suffix], solid_frames(30), fps=30)
    return paths


@pytest.fixture(scope="session")
def vfr_clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("vfr")
    paths = {}
    for suffix in (".mp4", ".mkv", ".webm"):
        paths[suffix] = folder / f"vfr{suffix}"
        write_vfr_clip(paths[suffix], solid_frames(len(VFR_TIMES)), VFR_TIMES)
    return paths

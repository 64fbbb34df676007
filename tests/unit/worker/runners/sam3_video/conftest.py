"""The SAM3 video runner tests run one-threaded with denormals flushed (random weights breed denormals, which slow
a CPU fifteenfold; the tiny models gain nothing from a second thread, which, when another process holds the other
core, spins them to a crawl), and share the tracker on its seeded random model."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from tests.support.sam3_clips import SIZE
from tests.support.sam3_reference import present_tracker_video
from worker.runners.sam3_tracker_video import Sam3TrackerVideoRunner


@pytest.fixture(scope="module", autouse=True)
def one_thread_no_denormals() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    yield
    torch.set_flush_denormal(False)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def video_tracker() -> Sam3TrackerVideoRunner:
    """The runner on the seeded random model with objects made present (see ``present_tracker_video``)."""
    return Sam3TrackerVideoRunner("sam3_tracker", *present_tracker_video(0, SIZE), "cpu")

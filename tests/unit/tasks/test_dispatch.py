"""Messages as the dispatcher sends them: queue and time limits per job type."""

from __future__ import annotations

from typing import Any

from tasks.dispatch import Dispatcher
from tasks.jobs import new_job
from tasks.settings import QueueSettings
from tasks.track_specs import TrackSpec

SPEC = TrackSpec.model_validate(
    {"type": "track", "video": {"upload": "upl_v"}, "objects": [{"id": 1, "box": {"x0": 0, "y0": 0, "x1": 5, "y1": 5}}]}
)


class _App:
    """Records what ``send_task`` is given (a Celery app's send_task only)."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send_task(self, name: str, **options: Any) -> None:
        self.sent.append(options)


def test_track_jobs_go_to_the_video_queue_with_their_own_time_limits() -> None:
    app = _App()
    limits = QueueSettings(track_soft_time_limit_seconds=7200, track_hard_time_limit_seconds=7500)
    Dispatcher(app, limits).enqueue(new_job(SPEC, "default"))
    assert app.sent[0]["queue"] == "video"
    assert (app.sent[0]["soft_time_limit"], app.sent[0]["time_limit"]) == (7200, 7500)

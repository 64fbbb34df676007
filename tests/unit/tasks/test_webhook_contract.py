"""Webhooks' contract: signatures against the reference implementation, the retry schedule, the events a job
chooses."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import standardwebhooks

from tasks.settings import QueueSettings
from tasks.specs import SegmentSpec
from tasks.webhooks import signature


def test_signatures_match_the_standard_webhooks_reference() -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the spec's example secret
    body = '{"type":"job.succeeded","data":{"id":"job_1"}}'
    stamp = 1_700_000_000
    reference = standardwebhooks.Webhook(secret).sign("msg_1", datetime.fromtimestamp(stamp, tz=UTC), body)
    assert signature(secret, "msg_1", stamp, body.encode()) == reference
    assert signature(secret, "msg_2", stamp, body.encode()) != reference


def test_the_default_retry_schedule_spans_more_than_a_day() -> None:
    assert sum(QueueSettings().webhook_delays) > 24 * 3600
    with pytest.raises(ValueError, match="positive"):
        QueueSettings(webhook_retry_schedule="5,-1")


def test_webhook_events_are_chosen_per_job_and_default_to_the_terminal_ones() -> None:
    base = {"type": "segment", "image": {"upload": "upl_a"}, "prompts": [{"box": {"x0": 0, "y0": 0, "x1": 1, "y1": 1}}]}
    spec = SegmentSpec.model_validate({**base, "webhook": {"url": "https://h.example.com/"}})
    assert spec.webhook is not None
    assert [e.value for e in spec.webhook.events] == ["job.succeeded", "job.failed", "job.canceled"]
    for events, problem in (([], "at least 1"), (["job.started", "job.started"], "repeat"), (["job.x"], "job.started")):
        with pytest.raises(ValueError, match=problem):
            SegmentSpec.model_validate({**base, "webhook": {"url": "https://h.example.com/", "events": events}})

"""Webhook signatures against the reference implementation; API keys from a file; per-tenant limit overrides."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import standardwebhooks

from api.auth import Tenants
from api.settings import ApiSettings, TenantLimits
from tasks.settings import QueueSettings
from tasks.specs import SegmentSpec
from tasks.webhooks import signature

pytestmark = pytest.mark.unit


def test_signatures_match_the_standard_webhooks_reference() -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the spec's example secret
    body = '{"type":"job.succeeded","data":{"id":"job_1"}}'
    stamp = 1_700_000_000
    reference = standardwebhooks.Webhook(secret).sign("msg_1", datetime.fromtimestamp(stamp, tz=UTC), body)
    assert signature(secret, "msg_1", stamp, body.encode()) == reference
    assert signature(secret, "msg_2", stamp, body.encode()) != reference


def test_api_keys_come_from_the_variable_and_a_file(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# team keys\nvision:k-vision\n\n  ops:k-ops  \n")
    tenants = Tenants("acme:k1", str(keys))
    assert [tenants.resolve(f"Bearer {k}") for k in ("k1", "k-vision", "k-ops")] == ["acme", "vision", "ops"]
    with pytest.raises(ValueError, match="SAMQ_API_KEYS_FILE"):
        Tenants("", str(tmp_path / "missing"))
    for bad in ("../etc:k", "a/b:k", "a b:k", "t:", ":k"):
        with pytest.raises(ValueError, match="tenant:key"):
            Tenants(bad)


def test_tenant_limits_override_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAMQ_API_RATE_PER_SECOND", "7")
    monkeypatch.setenv("SAMQ_API_TENANT_LIMITS", '{"vision": {"max_queued_jobs": 5000}}')
    settings = ApiSettings()
    assert settings.limits_for("vision") == TenantLimits(rate_per_second=7, rate_burst=100, max_queued_jobs=5000)
    assert settings.limits_for("other") == TenantLimits(rate_per_second=7, rate_burst=100, max_queued_jobs=1000)
    monkeypatch.setenv("SAMQ_API_TENANT_LIMITS", '{"vision": {"rate_per_second": 0}}')
    with pytest.raises(ValueError, match="greater than 0"):
        ApiSettings()


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

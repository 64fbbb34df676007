"""Webhook delivery, in a worker process: one signed POST of one outbox event (``tasks.webhooks`` holds the outbox,
the secrets and the signature; the ``io`` queue carries one task per attempt)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from storage.base import ObjectStore
from tasks.jobs import Job
from tasks.pinned_http import post
from tasks.settings import QueueSettings
from tasks.views import job_object
from tasks.webhooks import DeliveryAttempt, Outbox, OutboxEvent, WebhookSecrets, signature


@dataclass(frozen=True)
class Deliverer:
    """What one delivery attempt needs; built once per worker process."""

    outbox: Outbox
    secrets: WebhookSecrets
    objects: ObjectStore
    settings: QueueSettings
    presign_seconds: int

    def deliver(self, event_id: str) -> DeliveryAttempt | None:
        """One attempt of one event (a no-op for an event that is unknown or already settled)."""
        event = self.outbox.load(event_id)
        if event is None or event.state != "pending":
            return None
        body = self.body(event)
        stamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "samq-webhooks",
            "webhook-id": event.id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": " ".join(
                signature(s, event.id, stamp, body) for s in self.secrets.signing(event.tenant)
            ),
        }
        outcome = post(
            event.url,
            body,
            headers,
            allowed=self.settings.allowed_networks,
            connect_timeout=self.settings.webhook_connect_timeout_seconds,
            read_timeout=self.settings.webhook_read_timeout_seconds,
        )
        return self.outbox.record(event.id, outcome)

    def body(self, event: OutboxEvent) -> bytes:
        """``{"type", "timestamp", "data": <job object>}``; result URLs are presigned afresh for each attempt."""
        job = Job.model_validate_json(event.job)
        data = job_object(job, self.objects, self.presign_seconds).model_dump(mode="json")
        stamp = event.timestamp.isoformat().replace("+00:00", "Z")
        return json.dumps({"type": event.type.value, "timestamp": stamp, "data": data}).encode()

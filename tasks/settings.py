"""Queue-contract settings shared by API and workers (env prefix ``SAMQ_``)."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_network

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class QueueSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SAMQ_", frozen=True, populate_by_name=True)

    redis_url: str = "redis://127.0.0.1:6379/0"
    job_ttl_seconds: int = 7 * 24 * 3600
    """Job records (and their index entries) expire this long after they were last written."""
    max_attempts: int = 3
    """Starts allowed per job; a job that loses its worker more often ends ``failed`` (``worker_lost``)."""
    lease_seconds: float = 30.0
    """A running job's lease; the worker renews it every third of this. A lapsed lease means a dead worker."""
    reap_interval_seconds: float = 5.0
    soft_time_limit_seconds: int = 600
    hard_time_limit_seconds: int = 660
    track_soft_time_limit_seconds: int = 6 * 3600
    """``track`` jobs (minutes to hours of video) get their own limits; a job past them fails with ``timeout``."""
    track_hard_time_limit_seconds: int = 6 * 3600 + 300
    batch_shard_size: int = Field(default=16, ge=1, le=256)
    """Images per shard of a batch (one task on the ``bulk`` queue) unless the batch sets ``shard_size``."""
    batch_encode_size: int | None = Field(default=None, ge=1, le=64)
    """Images of a shard that go through the image encoder in one call; 1 encodes them one by one. Default: 8 on a
    GPU, 1 on CPU (where a batch of 8 at 1024 px measured 20 % slower per image than one at a time)."""
    batch_max_items: int = Field(default=100_000, ge=1)
    """Most items one batch may hold (``batch_too_large`` above)."""
    max_image_pixels: int = Field(
        default=100_000_000,
        ge=1,
        validation_alias=AliasChoices("SAMQ_WORKER_MAX_IMAGE_PIXELS", "SAMQ_MAX_IMAGE_PIXELS"),
    )
    """``SAMQ_WORKER_MAX_IMAGE_PIXELS``: the decoded pixel cap (decompression-bomb guard). Workers check it from the
    image header before any allocation; the API refuses an upload over it at submit."""
    retry_backoff_seconds: float = 2.0
    """Base delay before a transient failure is retried (doubles per attempt)."""
    orphan_after_seconds: float = Field(default=120.0, gt=0)
    """A job queued this long is checked against the broker: with no message for it anywhere, it is sent again
    (its message was lost with a worker, or with Redis's last second of writes). A message a worker has held this
    long without its job starting (or its shard being claimed) is put back in its queue (the worker died)."""
    retry_claim_seconds: float = Field(default=300.0, gt=0)
    """A due retry whose message was sent but whose attempt has not started after this long is sent again (the
    message was lost with a worker); a second message for one attempt is harmless."""
    allow_private_urls: str = ""
    """Comma-separated CIDRs exempt from the SSRF guard (trusted internal networks); empty by default."""
    webhook_retry_schedule: str = "5,300,1800,7200,18000,36000,36000"
    """Seconds to wait before each retry of a failed delivery (the first attempt is immediate). The default spans
    27.6 hours; a delivery still failing after the last retry is given up (logged as ``exhausted``)."""
    webhook_connect_timeout_seconds: float = 3.0
    webhook_read_timeout_seconds: float = 10.0
    webhook_poll_seconds: float = 1.0
    """How often each worker looks for due deliveries (the outbox in Redis) and sends them to the ``io`` queue."""
    webhook_claim_seconds: float = 120.0
    """A delivery sent to the queue but not reported within this long (its worker died) is sent again."""
    webhook_secret_overlap_seconds: int = 24 * 3600
    """After ``POST /v1/webhooks/secret`` rotates a secret, the previous one keeps signing this long."""

    @field_validator("webhook_retry_schedule")
    @classmethod
    def _positive_delays(cls, schedule: str) -> str:
        delays = [float(d) for d in schedule.split(",") if d.strip()]
        if not delays or any(d <= 0 for d in delays):
            raise ValueError("SAMQ_WEBHOOK_RETRY_SCHEDULE must be comma-separated positive seconds")
        return schedule

    @property
    def webhook_delays(self) -> tuple[float, ...]:
        return tuple(float(d) for d in self.webhook_retry_schedule.split(",") if d.strip())

    @property
    def allowed_networks(self) -> tuple[IPv4Network | IPv6Network, ...]:
        return tuple(
            ip_network(cidr.strip(), strict=False) for cidr in self.allow_private_urls.split(",") if cidr.strip()
        )

"""Queue-contract settings shared by API and workers (env prefix ``SAMQ_``)."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_network

from pydantic_settings import BaseSettings, SettingsConfigDict


class QueueSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SAMQ_", frozen=True)

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
    retry_backoff_seconds: float = 2.0
    """Base delay before a transient failure is retried (doubles per attempt)."""
    allow_private_urls: str = ""
    """Comma-separated CIDRs exempt from the SSRF guard (trusted internal networks); empty by default."""

    @property
    def allowed_networks(self) -> tuple[IPv4Network | IPv6Network, ...]:
        return tuple(
            ip_network(cidr.strip(), strict=False) for cidr in self.allow_private_urls.split(",") if cidr.strip()
        )

"""API settings (env prefix ``SAMQ_API_``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class TenantLimits(BaseModel):
    """A tenant's request rate (a token bucket: ``rate_burst`` at once, refilled at ``rate_per_second``) and how
    many unfinished (queued or running) jobs it may have."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rate_per_second: Annotated[float, Field(gt=0)] = 20.0
    rate_burst: Annotated[int, Field(ge=1)] = 100
    max_queued_jobs: Annotated[int, Field(ge=0)] = 1000


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SAMQ_API_", frozen=True)

    host: str = "127.0.0.1"
    port: int = 8000
    threads: int = 16
    """Server threads for everything but the Roboflow-compatible calls (which get ``roboflow_max_waiting`` more)."""
    max_body_bytes: int = 24 * 1024 * 1024
    """JSON request bodies (a base64 image inflates by a third: keep above max_base64_bytes × 4/3)."""
    max_base64_bytes: int = 16 * 1024 * 1024
    """Decoded size of an inline ``{"base64": …}`` image."""
    max_upload_bytes: int = 256 * 1024 * 1024
    storage_timeout_seconds: Annotated[float, Field(gt=0)] = 10.0
    """Object storage calls made while a client waits (uploads, result documents): each try's read timeout (and at
    most 2 seconds to connect, 2 tries), far shorter than the workers' own."""
    storage_slots: Annotated[int, Field(ge=1)] = 8
    """Request threads that may wait on object storage at once; more wait a second, then answer 503
    ``storage_busy``."""
    max_wait_seconds: int = 60
    """Upper bound of ``Prefer: wait=N``."""
    roboflow_wait_seconds: Annotated[int, Field(ge=1)] = 300
    """How long a Roboflow-compatible call (``/sam2/…``, ``/sam3/…``) waits for its job before answering 504 with
    the job's id (the job goes on; poll ``/v1/jobs/{id}``)."""
    roboflow_max_waiting: Annotated[int, Field(ge=1)] = 128
    """Roboflow-compatible calls waiting at once; each holds a server thread of its own, added to ``threads``.
    One more answers 503 with ``Retry-After`` (Roboflow's client retries it)."""
    roboflow_sam2_version: Literal["hiera_tiny", "hiera_small", "hiera_b_plus", "hiera_large"] = "hiera_large"
    """The SAM2 model of a ``/sam2/…`` call that names none (Roboflow's own default)."""
    roboflow_image_id_ttl_seconds: Annotated[int, Field(ge=60)] = 24 * 3600
    """How long a caller-chosen ``image_id`` (and the logits saved under it) is remembered."""
    keys: SecretStr = SecretStr("")
    """``SAMQ_API_KEYS``: comma-separated ``tenant:key`` pairs. Empty (and no keys file) = open mode (loopback
    binding only)."""
    keys_file: str = ""
    """``SAMQ_API_KEYS_FILE``: a file of ``tenant:key`` lines (``#`` comments), read at start, added to the above."""
    rate_per_second: Annotated[float, Field(gt=0)] = 20.0
    rate_burst: Annotated[int, Field(ge=1)] = 100
    max_queued_jobs: Annotated[int, Field(ge=0)] = 1000
    """Per tenant: unfinished jobs allowed at once; more → 429."""
    tenant_limits: dict[str, TenantLimits] = {}
    """``SAMQ_API_TENANT_LIMITS``: JSON overrides per tenant, e.g. ``{"vision": {"rate_per_second": 100}}``."""

    def limits_for(self, tenant: str) -> TenantLimits:
        default = TenantLimits(
            rate_per_second=self.rate_per_second, rate_burst=self.rate_burst, max_queued_jobs=self.max_queued_jobs
        )
        override = self.tenant_limits.get(tenant)
        return default.model_copy(update=override.model_dump(exclude_unset=True)) if override else default

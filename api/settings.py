"""API settings (env prefix ``SAMQ_API_``)."""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SAMQ_API_", frozen=True)

    host: str = "127.0.0.1"
    port: int = 8000
    threads: int = 16
    max_body_bytes: int = 24 * 1024 * 1024
    """JSON request bodies (a base64 image inflates by a third: keep above max_base64_bytes × 4/3)."""
    max_base64_bytes: int = 16 * 1024 * 1024
    """Decoded size of an inline ``{"base64": …}`` image."""
    max_upload_bytes: int = 256 * 1024 * 1024
    max_wait_seconds: int = 60
    """Upper bound of ``Prefer: wait=N``."""
    keys: SecretStr = SecretStr("")
    """``SAMQ_API_KEYS``: comma-separated ``tenant:key`` pairs. Empty = open mode (loopback binding only)."""

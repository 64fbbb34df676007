"""Storage settings (env prefix ``SAMQ_STORAGE_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class StorageSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SAMQ_STORAGE_", frozen=True)

    backend: Literal["local", "s3"] = "local"
    dir: Path = Path("data/objects")
    """Local backend root."""
    public_url: str = "http://127.0.0.1:8000"
    """Base URL of the API, which serves the local backend's presigned GETs under /v1/files/."""
    presign_seconds: int = 3600
    s3_bucket: str = "samq"
    s3_endpoint_url: str | None = None
    """Anything S3-compatible: MinIO (http://minio:9000), AWS (unset), moto in tests."""
    s3_public_endpoint_url: str | None = None
    """The same S3 endpoint as the clients reach it, when that is another address than ``s3_endpoint_url`` (MinIO
    at http://localhost:9000 while the containers use http://minio:9000). A presigned URL's signature covers its
    host, so result URLs are signed for this one. Unset: ``s3_endpoint_url``."""
    s3_region: str = "us-east-1"
    s3_access_key_id: SecretStr | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_read_buckets: list[str] = []
    """Buckets that ``{"s3": "s3://bucket/key"}`` media references may read (never ``s3_bucket`` itself, which holds
    every tenant's results)."""
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    max_retries: int = 4
    multipart_threshold_bytes: int = 64 * 1024 * 1024
    """Smaller objects go up in one PutObject; larger ones as a multipart upload (8 MiB parts)."""
    expect_continue_bytes: int = 8 * 1024 * 1024
    """A PUT body at least this large asks ``Expect: 100-continue`` first (so a refused request costs one round trip,
    not the body); a smaller one goes at once."""
    max_connections: int = 16
    """Connections the S3 client of a process keeps open for reuse (it makes more under load, but closes them)."""

    @property
    def readable_buckets(self) -> frozenset[str]:
        """Where ``{"s3": …}`` media may come from: the read buckets, minus the results bucket."""
        return frozenset(self.s3_read_buckets) - {self.s3_bucket} if self.backend == "s3" else frozenset()

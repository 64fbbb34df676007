"""The object key layout, in one place. Every key is prefixed by the tenant that owns it."""

from __future__ import annotations


def job_prefix(tenant: str, job_id: str) -> str:
    return f"{tenant}/jobs/{job_id}/"


def job_file(tenant: str, job_id: str, name: str) -> str:
    return f"{job_prefix(tenant, job_id)}{name}"


def upload(tenant: str, upload_id: str) -> str:
    return f"{tenant}/uploads/{upload_id}"


def embedding(tenant: str, model: str, image_size: int, image_id: str) -> str:
    """Shared embedding-cache tier (any worker reads what another wrote), content-addressed within a tenant."""
    return f"{tenant}/cache/embeddings/{model}/{image_size}/{image_id}.pt"

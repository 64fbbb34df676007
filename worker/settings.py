"""Worker settings (env prefix ``SAMQ_WORKER_``; the two dev/test switches keep their short names)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SAMQ_WORKER_", frozen=True, populate_by_name=True)

    device: Literal["auto", "cpu", "cuda"] = "auto"
    models_dir: Path = Path("models")
    """Checkpoints are looked up here first: SAM2 as ``<model id>.pt`` (e.g. ``sam2.1_hiera_tiny.pt``), SAM3 as a
    Hugging Face checkpoint folder ``sam3/`` (``config.json``, ``model.safetensors``, tokenizer and processor files)."""
    hub_cache_dir: Path | None = None
    """Where hub downloads go (default: huggingface_hub's own cache)."""
    allow_download: bool = True
    hub_token: SecretStr | None = None
    """Hugging Face token: needed to download gated repositories (``facebook/sam3``)."""
    sam3_revision: str | None = None
    """Hub revision (a commit hash, ideally) of ``facebook/sam3`` to download; ``None``: the repository's ``main``."""
    torch_threads: int | None = None
    overlap: bool = True
    """Read the next job's inputs ahead and write a job's results behind the next job's model work
    (``worker.pipeline.overlap``); off: each job's reads, model work and writes in turn."""
    embedding_cache_bytes: int = 1024 * 1024 * 1024
    """In-process embedding LRU budget; the shared tier lives in object storage."""
    max_media_bytes: int = 256 * 1024 * 1024
    """Largest media object a worker reads (the API accepts uploads up to the same default)."""
    storage_outage_seconds: float = Field(default=300.0, ge=0)
    """How long a job rides out an unreachable object store (retrying with backoff) before its attempt fails with
    ``storage_unavailable``."""
    fetch_timeout_seconds: float = 30.0
    """Media URLs: limit on connecting, and on each wait for data from the server."""
    fetch_total_seconds: float = Field(default=120.0, gt=0)
    """Media URLs: limit on a whole download, redirects included (a server dripping bytes cannot hold a worker)."""
    random_weights: bool = Field(
        default=False, validation_alias=AliasChoices("SAMQ_RANDOM_WEIGHTS", "SAMQ_WORKER_RANDOM_WEIGHTS")
    )
    """Dev/test only: build the real architecture with seeded random weights instead of loading a checkpoint."""
    image_size: int | None = Field(
        default=None, ge=64, le=4096, validation_alias=AliasChoices("SAMQ_IMAGE_SIZE", "SAMQ_WORKER_IMAGE_SIZE")
    )
    """Dev/test only: shrink the model input size (a multiple of 32; SAM2's default is 1024). SAM3 rounds it down to
    a multiple of 14 (its default is 1008; its random-weights models default to 224)."""
    seed: int = 0
    max_video_seconds: float = Field(default=3 * 3600.0, gt=0)
    """Longest video (or selected range) a track job may process, in seconds of video."""
    max_video_frames: int = Field(default=500_000, ge=1)
    """Most frames a video may have (counted exactly, from the container's packets)."""
    max_video_pixels: int = Field(default=3840 * 2160, ge=1)
    """Largest video frame (width x height)."""
    max_track_objects: int = Field(default=64, ge=1)
    """Most objects one track job follows (seeded ones plus those re-seeding starts)."""
    everything_chunk_masks: int = Field(default=8, ge=1, le=1024)
    """An everything job upsamples, scores and encodes this many candidate masks at a time: its peak memory is about
    this many float32 copies of the image (8 × 12 MP × 4 B ≈ 0.4 GB for a 4000×3000 image), however many masks."""
    track_chunk_frames: int = Field(default=100, ge=1)
    """A track job stores its results (and its tracker state) every this many frames..."""
    track_chunk_seconds: float = Field(default=30.0, gt=0)
    """... or every this many seconds, whichever comes first: a lost worker costs at most one chunk of work."""

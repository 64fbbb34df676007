"""The inputs and jobs the sections share: synthetic photos, uploads, checked outcomes, concept jobs timed."""

from __future__ import annotations

import io
import time
from datetime import datetime
from typing import Any

import numpy as np
from PIL import Image

from samq.client import Client

IMAGE_W, IMAGE_H = 1024, 768
WAIT_SECONDS = 30
"""``Prefer: wait`` of the timed submissions."""
PHRASES = ("red car", "person", "dog", "traffic light", "bicycle", "tree", "window", "building")
"""Concept prompts, in this order: the timed jobs take the first N, the memory test's the first --memory-phrases."""
CONCEPT_THRESHOLD = 0.5  # the API default, for the timed jobs
CONCEPT_JOB_TIMEOUT = 900.0


class BenchError(RuntimeError):
    """Something other than a measurement went wrong (the stack, a failed job)."""


def synthetic_jpeg(seed: int, width: int = IMAGE_W, height: int = IMAGE_H) -> bytes:
    """A photo-like JPEG (gradients, an ellipse, a rectangle, mild noise): about the size of a real 1024×768 photo."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    pixels = np.empty((height, width, 3), dtype=np.float32)
    pixels[..., 0] = 40 + 120 * xx / width
    pixels[..., 1] = 60 + 80 * yy / height
    pixels[..., 2] = 90 + 60 * rng.random()
    cx, cy = width * rng.uniform(0.35, 0.45), height * rng.uniform(0.45, 0.55)
    pixels[((xx - cx) / (width * 0.2)) ** 2 + ((yy - cy) / (height * 0.25)) ** 2 <= 1] = (230, 190, 40)
    pixels[height // 6 : height // 3, width * 3 // 4 : width * 9 // 10] = (40, 200, 90)
    pixels += rng.normal(0, 6, size=pixels.shape)
    out = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(out, format="JPEG", quality=90)
    return out.getvalue()


def upload(client: Client, jpeg: bytes) -> str:
    """``POST /v1/uploads``; the upload's id."""
    upload_id: str = client.upload(jpeg, "image/jpeg")["id"]
    return upload_id


def upload_fresh(client: Client, seeds: range) -> list[str]:
    """One new synthetic photo per seed (new content: no embedding of it is cached anywhere)."""
    return [upload(client, synthetic_jpeg(seed)) for seed in seeds]


def require_succeeded(job: dict[str, Any]) -> None:
    if job["status"] != "succeeded":
        raise BenchError(f"job {job['id']} ended {job['status']} (error: {job.get('error')}); not a finished job")


def require_embedding(job: dict[str, Any], got: str, expect: str | None) -> None:
    """``expect``: the ``summary.embedding`` the job must report (``"miss"``: it encoded; ``"memory"``: a hit)."""
    if expect is not None and got != expect:
        raise BenchError(f"job {job['id']}: expected embedding {expect!r}, got {got!r}")


def epoch(stamp: str) -> float:
    """A job's ISO 8601 timestamp (``created_at``, ``finished_at``, …) in seconds since the epoch."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def concept_job(
    upload_id: str, phrases: list[str], threshold: float = CONCEPT_THRESHOLD, max_detections: int = 100
) -> dict[str, Any]:
    return {
        "type": "concept",
        "model": "sam3",
        "image": {"upload": upload_id},
        "prompts": [{"text": phrase} for phrase in phrases],
        "threshold": threshold,
        "max_detections": max_detections,
    }


class ConceptTimed:
    """One concept job: the client's end-to-end time and the worker's ``summary`` (timings, instances kept)."""

    def __init__(self, job: dict[str, Any], e2e_ms: float, phrases: int) -> None:
        self.job = job
        self.e2e_ms = e2e_ms
        self.phrases = phrases
        summary = job["result"]["summary"]
        timings = summary["timings"]
        self.embedding: str = summary["embedding"]
        self.encode_ms = float(timings["encode_ms"])
        self.detect_ms = float(timings["detect_ms"])
        self.model_ms = float(timings["model_ms"])
        self.total_ms = float(timings["total_ms"])
        self.instances = int(summary["instances"])
        self.per_prompt: list[int] = list(summary["instances_per_prompt"])

    @property
    def per_phrase_ms(self) -> float:
        return self.detect_ms / self.phrases

    def raw(self) -> dict[str, Any]:
        return {
            "id": self.job["id"],
            "embedding": self.embedding,
            "phrases": self.phrases,
            "e2e_ms": self.e2e_ms,
            "encode_ms": self.encode_ms,
            "detect_ms": self.detect_ms,
            "model_ms": self.model_ms,
            "total_ms": self.total_ms,
            "instances": self.instances,
            "instances_per_prompt": self.per_prompt,
        }


def run_concept(client: Client, spec: dict[str, Any], expect: str | None) -> ConceptTimed:
    """Submit with ``Prefer: wait``; a job still running when the wait ends is polled (its e2e time is then coarse)."""
    started = time.perf_counter()
    job = client.submit(spec, wait=WAIT_SECONDS)
    if job["status"] not in ("succeeded", "failed", "canceled"):
        job = client.wait(job["id"], timeout=CONCEPT_JOB_TIMEOUT, interval=0.05)
        job = client.get(job["id"])
    e2e_ms = (time.perf_counter() - started) * 1000
    require_succeeded(job)
    timed = ConceptTimed(job, e2e_ms, len(spec["prompts"]))
    require_embedding(job, timed.embedding, expect)
    return timed

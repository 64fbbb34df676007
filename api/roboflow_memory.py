"""What Roboflow's clients expect the server to remember between calls, kept in Redis (per tenant and model,
with a TTL) so that any API process answers alike:

- caller-chosen ``image_id``s: an embed call with ``"image_id": "example_image_id"`` remembers which image (its
  content hash, the key of samq's shared embedding cache) the name stands for; later calls may send the name alone;
- saved prompt sets (``save_logits_to_cache``): the job whose stored low-res logits a later, extended prompt set
  on the same image refines (``load_logits_from_cache``, fed back as samq's ``mask_input``);
- calls in flight: a call repeated while its first job still runs (Roboflow's client retries a 504) waits for
  that job instead of queueing the same work again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, cast

import redis

MAX_SAVED_PROMPT_SETS = 100
"""Per image and model; the oldest are forgotten first (Roboflow keeps at most 1000 over all images)."""

PromptKey = dict[str, Any]
"""A prompt as the logits cache compares it: ``{"box": corners | None, "points": [[x, y, positive], …]}``."""


@dataclass(frozen=True)
class PriorLogits:
    """An earlier job on the same image whose instance ``indices[i]`` refines prompt ``i`` (None: no mask)."""

    job: str
    indices: list[int | None]


class RoboflowMemory:
    """``client`` decodes responses (``tasks.broker.connect``)."""

    def __init__(self, client: redis.Redis, ttl_seconds: int) -> None:
        self._redis = client
        self._ttl = ttl_seconds

    # ---- image ids ------------------------------------------------------------------------------------------------

    def remember_image(self, tenant: str, model: str, image_id: str, content_hash: str) -> None:
        self._redis.set(self._image_key(tenant, model, image_id), content_hash, ex=self._ttl)

    def content_hash(self, tenant: str, model: str, image_id: str) -> str | None:
        return cast(str | None, self._redis.get(self._image_key(tenant, model, image_id)))

    # ---- low-res logits of saved prompt sets ----------------------------------------------------------------------

    def save_logits(self, tenant: str, model: str, image: str, prompts: list[PromptKey], job_id: str) -> None:
        key = self._logits_key(tenant, model, image)
        entry = json.dumps({"prompts": prompts, "job": job_id}, separators=(",", ":"))
        with self._redis.pipeline() as pipe:
            pipe.lpush(key, entry)
            pipe.ltrim(key, 0, MAX_SAVED_PROMPT_SETS - 1)
            pipe.expire(key, self._ttl)
            pipe.execute()

    def prior_logits(self, tenant: str, model: str, image: str, prompts: list[PromptKey]) -> PriorLogits | None:
        """Roboflow's choice (``find_prior_prompt_in_cache``): among saved prompt sets that are a strict subset of
        ``prompts`` (each saved prompt matches a distinct prompt with the same box and a subset of its points),
        newest first, the first with exactly one point fewer, else the one with the most points."""
        wanted = sum(len(p["points"]) for p in prompts) - 1
        best: tuple[int, PriorLogits] | None = None
        for raw in cast(list[str], self._redis.lrange(self._logits_key(tenant, model, image), 0, -1)):
            saved = json.loads(raw)
            indices = _match(saved["prompts"], prompts)
            if indices is None:
                continue
            size = sum(len(p["points"]) for p in saved["prompts"])
            prior = PriorLogits(job=saved["job"], indices=indices)
            if size == wanted:
                return prior
            if best is None or size > best[0]:
                best = (size, prior)
        return None if best is None else best[1]

    # ---- calls in flight ------------------------------------------------------------------------------------------

    def job_in_flight(self, tenant: str, call: str) -> str | None:
        return cast(str | None, self._redis.get(self._call_key(tenant, call)))

    def in_flight(self, tenant: str, call: str, job_id: str, seconds: int) -> None:
        self._redis.set(self._call_key(tenant, call), job_id, ex=seconds)

    # ---- keys -----------------------------------------------------------------------------------------------------

    def _image_key(self, tenant: str, model: str, image_id: str) -> str:
        return f"samq:roboflow:image:{tenant}:{model}:{_digest(image_id)}"

    def _logits_key(self, tenant: str, model: str, image: str) -> str:
        return f"samq:roboflow:logits:{tenant}:{model}:{_digest(image)}"

    def _call_key(self, tenant: str, call: str) -> str:
        return f"samq:roboflow:call:{tenant}:{_digest(call)}"


def _match(saved: list[PromptKey], prompts: list[PromptKey]) -> list[int | None] | None:
    """For each of ``prompts``, the index of the saved prompt it extends (None if none), when every saved prompt
    is extended by a distinct one and the two sets differ; else None."""
    if saved == prompts or len(saved) > len(prompts):
        return None
    indices: list[int | None] = [None] * len(prompts)
    for s, prompt in enumerate(saved):
        points = {tuple(p) for p in prompt["points"]}
        match = next(
            (
                i
                for i, candidate in enumerate(prompts)
                if indices[i] is None
                and candidate["box"] == prompt["box"]
                and points <= {tuple(p) for p in candidate["points"]}
            ),
            None,
        )
        if match is None:
            return None
        indices[match] = s
    return indices


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()

"""Model catalogue and checkpoint resolution: a model id → its sam2 config and a local checkpoint file.

Resolution order: ``<models_dir>/<model id>.pt`` (or the hub's file name there), then a hub download into the
cache when downloads are allowed. Anything else is a :class:`ModelUnavailableError` that says what to do.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from tasks.errors import ModelUnavailableError
from worker.settings import WorkerSettings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelCard:
    """Where a model's architecture and weights come from."""

    model_id: str
    config: str
    """sam2 hydra config name, relative to the ``sam2`` package."""
    hub_repo: str
    hub_filename: str


CATALOGUE: dict[str, ModelCard] = {
    card.model_id: card
    for card in (
        ModelCard(
            "sam2.1_hiera_tiny",
            "configs/sam2.1/sam2.1_hiera_t.yaml",
            "facebook/sam2.1-hiera-tiny",
            "sam2.1_hiera_tiny.pt",
        ),
        ModelCard(
            "sam2.1_hiera_small",
            "configs/sam2.1/sam2.1_hiera_s.yaml",
            "facebook/sam2.1-hiera-small",
            "sam2.1_hiera_small.pt",
        ),
        ModelCard(
            "sam2.1_hiera_base_plus",
            "configs/sam2.1/sam2.1_hiera_b+.yaml",
            "facebook/sam2.1-hiera-base-plus",
            "sam2.1_hiera_base_plus.pt",
        ),
        ModelCard(
            "sam2.1_hiera_large",
            "configs/sam2.1/sam2.1_hiera_l.yaml",
            "facebook/sam2.1-hiera-large",
            "sam2.1_hiera_large.pt",
        ),
    )
}


def model_card(model_id: str) -> ModelCard:
    """The catalogue entry for ``model_id`` (a ``tasks.specs.ModelId`` or its string value)."""
    try:
        return CATALOGUE[str(model_id)]
    except KeyError as e:
        known = ", ".join(CATALOGUE)
        raise ModelUnavailableError(f"unknown model {model_id!r}; known models: {known}") from e


def local_checkpoint_candidates(model_id: str, settings: WorkerSettings) -> list[Path]:
    """Files in the models directory that count as this model's checkpoint, in the order they are tried."""
    card = model_card(model_id)
    names = dict.fromkeys([f"{card.model_id}.pt", card.hub_filename])
    return [settings.models_dir / name for name in names]


def resolve_checkpoint(model_id: str, settings: WorkerSettings) -> Path:
    """Path of a local checkpoint for ``model_id``, downloading it from the hub if needed and allowed.

    Never touches the network when ``settings.random_weights`` is on or ``settings.allow_download`` is off.
    """
    card = model_card(model_id)
    candidates = local_checkpoint_candidates(model_id, settings)
    for path in candidates:
        if path.is_file():
            return path
    expected = candidates[0]
    if settings.random_weights or not settings.allow_download:
        raise ModelUnavailableError(
            f"no checkpoint for {card.model_id}: expected {expected} (set SAMQ_WORKER_MODELS_DIR to the folder "
            f"holding it, or SAMQ_WORKER_ALLOW_DOWNLOAD=true to fetch {card.hub_repo}/{card.hub_filename})"
        )
    from huggingface_hub import hf_hub_download

    token = settings.hub_token.get_secret_value() if settings.hub_token is not None else None
    logger.info("downloading %s/%s", card.hub_repo, card.hub_filename)
    try:
        downloaded = hf_hub_download(
            repo_id=card.hub_repo, filename=card.hub_filename, cache_dir=settings.hub_cache_dir, token=token
        )
    except Exception as e:  # offline, 401/403, 404, disk full...: all mean "this model cannot run here"
        raise ModelUnavailableError(
            f"no checkpoint for {card.model_id}: {expected} does not exist and downloading "
            f"{card.hub_repo}/{card.hub_filename} failed ({type(e).__name__}: {e}); put the file in "
            "SAMQ_WORKER_MODELS_DIR, or check network access and SAMQ_WORKER_HUB_TOKEN "
            "(SAMQ_WORKER_ALLOW_DOWNLOAD=false skips the download)"
        ) from e
    return Path(str(downloaded))

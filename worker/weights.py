"""Model catalogues and weight resolution.

- SAM2 (:data:`CATALOGUE`): a model id → its sam2 config and one checkpoint file. Resolution order:
  ``<models_dir>/<model id>.pt`` (or the hub's file name there), then a hub download into the cache when downloads
  are allowed.
- Hugging Face checkpoint folders (:data:`PRETRAINED_CATALOGUE`, SAM3): a model id → a folder holding
  ``config.json``, the safetensors weights and the processor / tokenizer files. Resolution order:
  ``<models_dir>/<model id>/``, then a snapshot of the hub repository (only the files a model needs, at
  ``settings.sam3_revision`` when pinned) into the cache when downloads are allowed.

Anything else is a :class:`ModelUnavailableError` that names the expected path and the settings that change it.
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


@dataclass(frozen=True)
class PretrainedCard:
    """A model distributed as a Hugging Face checkpoint folder."""

    model_id: str
    hub_repo: str
    gated: bool
    """The hub repository needs an accepted licence and a token (``SAMQ_WORKER_HUB_TOKEN``)."""


PRETRAINED_CATALOGUE: dict[str, PretrainedCard] = {
    card.model_id: card for card in (PretrainedCard("sam3", "facebook/sam3", gated=True),)
}

PRETRAINED_FILE_PATTERNS = ["*.json", "*.safetensors", "*.txt"]
"""What a snapshot download fetches: configs, safetensors weights, tokenizer and processor files (``facebook/sam3``
also carries Meta's 3.4 GB ``sam3.pt``, which transformers does not read)."""


def pretrained_card(model_id: str) -> PretrainedCard:
    """The catalogue entry for a checkpoint-folder model (``"sam3"``)."""
    try:
        return PRETRAINED_CATALOGUE[str(model_id)]
    except KeyError as e:
        known = ", ".join(PRETRAINED_CATALOGUE)
        raise ModelUnavailableError(f"unknown model {model_id!r}; known checkpoint-folder models: {known}") from e


def local_pretrained_dir(model_id: str, settings: WorkerSettings) -> Path:
    """The folder in the models directory that holds this model's checkpoint: ``<models_dir>/<model id>``."""
    return settings.models_dir / pretrained_card(model_id).model_id


def resolve_pretrained_dir(model_id: str, settings: WorkerSettings) -> Path:
    """A local checkpoint folder for ``model_id`` (one with a ``config.json``), downloading it if needed and allowed.

    Never touches the network when ``settings.random_weights`` is on or ``settings.allow_download`` is off.
    """
    card = pretrained_card(model_id)
    expected = local_pretrained_dir(model_id, settings)
    if (expected / "config.json").is_file():
        return expected
    token_hint = (
        " (a gated repository: accept its licence on the hub and set SAMQ_WORKER_HUB_TOKEN)" if card.gated else ""
    )
    if settings.random_weights or not settings.allow_download:
        raise ModelUnavailableError(
            f"no weights for {card.model_id}: expected a Hugging Face checkpoint folder {expected} with config.json, "
            "model.safetensors and the processor and tokenizer files (set SAMQ_WORKER_MODELS_DIR to the folder that "
            f"holds {card.model_id}/, or SAMQ_WORKER_ALLOW_DOWNLOAD=true to fetch {card.hub_repo}{token_hint})"
        )
    from huggingface_hub import snapshot_download

    token = settings.hub_token.get_secret_value() if settings.hub_token is not None else None
    logger.info("downloading %s (revision %s)", card.hub_repo, settings.sam3_revision or "main")
    try:
        downloaded = snapshot_download(
            repo_id=card.hub_repo,
            revision=settings.sam3_revision,
            cache_dir=settings.hub_cache_dir,
            token=token,
            allow_patterns=PRETRAINED_FILE_PATTERNS,
        )
    except Exception as e:  # offline, 401/403 (gated), 404, disk full...: all mean "this model cannot run here"
        raise ModelUnavailableError(
            f"no weights for {card.model_id}: {expected} does not exist and downloading {card.hub_repo} failed "
            f"({type(e).__name__}: {e}); put the checkpoint folder in SAMQ_WORKER_MODELS_DIR, or check network "
            f"access and SAMQ_WORKER_HUB_TOKEN{token_hint} (SAMQ_WORKER_ALLOW_DOWNLOAD=false skips the download)"
        ) from e
    return Path(str(downloaded))

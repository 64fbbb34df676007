from __future__ import annotations

from pathlib import Path
from typing import Any

import huggingface_hub
import pytest

from tasks.errors import ModelUnavailableError
from tasks.specs import ModelId
from worker.settings import WorkerSettings
from worker.weights import CATALOGUE, model_card, resolve_checkpoint


def _settings(models_dir: Path, **overrides: Any) -> WorkerSettings:
    values: dict[str, Any] = {"models_dir": models_dir, "allow_download": False, "random_weights": False}
    values.update(overrides)
    return WorkerSettings(**values)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []

    def refuse(**kwargs: Any) -> str:
        calls.append(kwargs)
        raise huggingface_hub.errors.LocalEntryNotFoundError("offline")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    return calls


def test_catalogue_covers_every_model_id() -> None:
    # SAM3 and the SAM3 tracker on video both read the SAM3 checkpoint folder
    assert set(CATALOGUE) | {ModelId.SAM3.value, ModelId.SAM3_TRACKER.value} == {m.value for m in ModelId}
    card = model_card(ModelId.SAM2_1_BASE_PLUS)
    assert card.config == "configs/sam2.1/sam2.1_hiera_b+.yaml"
    assert card.hub_repo == "facebook/sam2.1-hiera-base-plus"
    assert card.hub_filename == "sam2.1_hiera_base_plus.pt"


def test_unknown_model_is_unavailable() -> None:
    with pytest.raises(ModelUnavailableError, match="unknown model"):
        model_card("sam9_huge")


def test_local_file_wins(tmp_path: Path, no_network: list[dict[str, Any]]) -> None:
    checkpoint = tmp_path / "sam2.1_hiera_small.pt"
    checkpoint.write_bytes(b"weights")
    assert resolve_checkpoint("sam2.1_hiera_small", _settings(tmp_path, allow_download=True)) == checkpoint
    assert no_network == []


def test_missing_file_without_download_names_the_path_and_settings(
    tmp_path: Path, no_network: list[dict[str, Any]]
) -> None:
    with pytest.raises(ModelUnavailableError) as caught:
        resolve_checkpoint("sam2.1_hiera_tiny", _settings(tmp_path))
    message = str(caught.value)
    assert str(tmp_path / "sam2.1_hiera_tiny.pt") in message
    assert "SAMQ_WORKER_MODELS_DIR" in message
    assert "SAMQ_WORKER_ALLOW_DOWNLOAD" in message
    assert no_network == []


def test_random_weights_never_download(tmp_path: Path, no_network: list[dict[str, Any]]) -> None:
    with pytest.raises(ModelUnavailableError):
        resolve_checkpoint("sam2.1_hiera_tiny", _settings(tmp_path, allow_download=True, random_weights=True))
    assert no_network == []


def test_download_failure_is_unavailable_with_cause(tmp_path: Path, no_network: list[dict[str, Any]]) -> None:
    settings = _settings(tmp_path, allow_download=True, hub_cache_dir=tmp_path / "hub", hub_token="hf_secret")
    with pytest.raises(ModelUnavailableError) as caught:
        resolve_checkpoint("sam2.1_hiera_large", settings)
    assert isinstance(caught.value.__cause__, huggingface_hub.errors.LocalEntryNotFoundError)
    assert str(tmp_path / "sam2.1_hiera_large.pt") in str(caught.value)
    assert "hf_secret" not in str(caught.value)
    assert no_network == [
        {
            "repo_id": "facebook/sam2.1-hiera-large",
            "filename": "sam2.1_hiera_large.pt",
            "cache_dir": tmp_path / "hub",
            "token": "hf_secret",
        }
    ]


def test_download_success_returns_the_cached_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    downloaded = tmp_path / "hub" / "sam2.1_hiera_tiny.pt"
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda **kwargs: str(downloaded))
    assert resolve_checkpoint("sam2.1_hiera_tiny", _settings(tmp_path, allow_download=True)) == downloaded

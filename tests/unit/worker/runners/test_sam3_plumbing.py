"""SAM3 plumbing without a model: weight resolution, the registry, the cache protocol, tokenizer, detection choice."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import huggingface_hub
import numpy as np
import pytest
import torch

from tasks.errors import ModelUnavailableError
from worker.embedding_cache import EmbeddingCache
from worker.registry import ModelRegistry, concept_key, load_image_runner
from worker.runners.sam3 import clip_tokenizer, input_size
from worker.runners.sam3_selection import CandidatePool, upsample_masks
from worker.settings import WorkerSettings
from worker.weights import PRETRAINED_CATALOGUE, pretrained_card, resolve_pretrained_dir


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

    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)
    return calls


# --- weights ---------------------------------------------------------------------------------------------------------


def test_sam3_card() -> None:
    card = pretrained_card("sam3")
    assert (card.hub_repo, card.gated) == ("facebook/sam3", True)
    assert set(PRETRAINED_CATALOGUE) == {"sam3"}
    with pytest.raises(ModelUnavailableError, match="unknown model"):
        pretrained_card("sam2.1_hiera_tiny")


def test_local_folder_wins(tmp_path: Path, no_network: list[dict[str, Any]]) -> None:
    (tmp_path / "sam3").mkdir()
    (tmp_path / "sam3" / "config.json").write_text("{}")
    assert resolve_pretrained_dir("sam3", _settings(tmp_path, allow_download=True)) == tmp_path / "sam3"
    assert no_network == []


def test_missing_folder_without_download_names_the_folder_and_settings(
    tmp_path: Path, no_network: list[dict[str, Any]]
) -> None:
    (tmp_path / "sam3").mkdir()  # a folder without config.json does not count
    with pytest.raises(ModelUnavailableError) as caught:
        resolve_pretrained_dir("sam3", _settings(tmp_path))
    message = str(caught.value)
    for fragment in (str(tmp_path / "sam3"), "SAMQ_WORKER_MODELS_DIR", "SAMQ_WORKER_ALLOW_DOWNLOAD", "facebook/sam3"):
        assert fragment in message
    assert "SAMQ_WORKER_HUB_TOKEN" in message  # gated
    with pytest.raises(ModelUnavailableError):
        resolve_pretrained_dir("sam3", _settings(tmp_path, allow_download=True, random_weights=True))
    assert no_network == []


def test_download_failure_is_unavailable_with_cause(tmp_path: Path, no_network: list[dict[str, Any]]) -> None:
    settings = _settings(
        tmp_path, allow_download=True, hub_cache_dir=tmp_path / "hub", hub_token="hf_secret", sam3_revision="abc123"
    )
    with pytest.raises(ModelUnavailableError) as caught:
        resolve_pretrained_dir("sam3", settings)
    assert isinstance(caught.value.__cause__, huggingface_hub.errors.LocalEntryNotFoundError)
    assert "SAMQ_WORKER_HUB_TOKEN" in str(caught.value)
    assert "hf_secret" not in str(caught.value)
    assert no_network == [
        {
            "repo_id": "facebook/sam3",
            "revision": "abc123",
            "cache_dir": tmp_path / "hub",
            "token": "hf_secret",
            "allow_patterns": ["*.json", "*.safetensors", "*.txt"],
        }
    ]


def test_download_success_returns_the_snapshot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot = tmp_path / "hub" / "snapshots" / "abc"
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda **kwargs: str(snapshot))
    assert resolve_pretrained_dir("sam3", _settings(tmp_path, allow_download=True)) == snapshot


def test_sam3_revision_setting_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAMQ_WORKER_SAM3_REVISION", "deadbeef")
    assert WorkerSettings().sam3_revision == "deadbeef"


@pytest.mark.parametrize(
    ("image_size", "random_weights", "expected"),
    [(None, True, 224), (None, False, None), (256, True, 252), (224, False, 224), (1024, False, 1022)],
)
def test_sam3_input_size_is_a_multiple_of_14(
    image_size: int | None, random_weights: bool, expected: int | None
) -> None:
    settings = WorkerSettings(image_size=image_size, random_weights=random_weights)
    assert input_size(settings) == expected


# --- tokenizer -------------------------------------------------------------------------------------------------------


def test_offline_tokenizer_gives_the_genuine_clip_ids() -> None:
    from open_clip.tokenizer import SimpleTokenizer  # after worker.runners.sam3 installed the torchvision shim

    tokenizer = clip_tokenizer()
    reference = SimpleTokenizer()
    assert len(tokenizer) == 49408
    for text in ["red car", "A Person riding a BIKE, don't you think?", "naïve café 42 — 東京", "dogs' tails!!"]:
        assert tokenizer(text)["input_ids"] == [49406, *reference.encode(text), 49407]


# --- registry --------------------------------------------------------------------------------------------------------


class _Loader:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, model_id: str, settings: WorkerSettings) -> Any:
        self.calls.append(model_id)
        return object()


def test_concept_runners_have_their_own_key_and_share_the_lru() -> None:
    images, concepts = _Loader(), _Loader()
    registry = ModelRegistry(WorkerSettings(random_weights=True), loader=images, concept_loader=concepts, max_models=2)
    tracker = registry.get("sam3")
    concept = registry.get_concept("sam3")
    assert cast(object, concept) is not tracker
    assert registry.get_concept() is concept
    assert registry.loaded() == ["sam3", "sam3_concept"]
    assert concept_key("sam3") in registry
    assert (images.calls, concepts.calls) == (["sam3"], ["sam3"])
    registry.get("sam2.1_hiera_tiny")  # evicts the tracker, the least recently used
    assert registry.loaded() == ["sam3_concept", "sam2.1_hiera_tiny"]
    with pytest.raises(ValueError, match="get_concept"):
        registry.get("sam3_concept")


def test_default_image_loader_picks_the_sam3_tracker(monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.runners.sam2_image import Sam2ImageRunner
    from worker.runners.sam3_tracker import Sam3TrackerRunner

    loaded: list[str] = []
    monkeypatch.setattr(Sam3TrackerRunner, "load", classmethod(lambda cls, m, s: loaded.append(f"tracker:{m}")))
    monkeypatch.setattr(Sam2ImageRunner, "load", classmethod(lambda cls, m, s: loaded.append(f"sam2:{m}")))
    settings = WorkerSettings(random_weights=True)
    load_image_runner("sam3", settings)
    load_image_runner("sam2.1_hiera_tiny", settings)
    assert loaded == ["tracker:sam3", "sam2:sam2.1_hiera_tiny"]


def test_default_concept_loader_builds_the_concept_runner() -> None:
    registry = ModelRegistry(WorkerSettings(random_weights=True, device="cpu"))
    runner = registry.get_concept("sam3")
    assert type(runner).__name__ == "Sam3ConceptRunner"
    assert registry.loaded() == ["sam3_concept"]


def test_importing_the_registry_imports_no_model_library() -> None:
    code = "import sys, worker.registry; print(*(m in sys.modules for m in ('torch', 'transformers', 'sam2')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.split() == ["False", "False", "False"]


# --- embedding cache -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Sized:
    nbytes: int


def test_embedding_cache_takes_any_embedding_with_nbytes() -> None:
    cache: EmbeddingCache[_Sized] = EmbeddingCache(100)
    cache.put("a", _Sized(60))
    cache.put("b", _Sized(50))  # evicts a
    assert cache.get("a") is None
    assert cache.get("b") == _Sized(50)
    assert cache.nbytes == 50


# --- choosing detections ---------------------------------------------------------------------------------------------

SIDE = 8


def _logits(*boxes: tuple[int, int, int, int]) -> torch.Tensor:
    """Low-res logits: +5 inside each (x0, y0, x1, y1) box, -5 elsewhere, one mask per box."""
    out = torch.full((len(boxes), SIDE, SIDE), -5.0)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        out[i, y0:y1, x0:x1] = 5.0
    return out


def _add(pool: CandidatePool, prompt: int, scores: list[float], logits: torch.Tensor) -> None:
    count = len(scores)
    pool.add(prompt, np.arange(count), np.asarray(scores, np.float32), np.zeros((count, 4), np.float32), logits)


def test_nms_is_greedy_over_all_queries() -> None:
    """b overlaps a (suppressed by a alone); c, from a later query and better than a, suppresses a; so b survives."""
    pool = CandidatePool(max_detections=10, nms_iou=0.5)
    _add(pool, 0, [0.9, 0.8], _logits((0, 0, 4, 8), (1, 0, 5, 8)))  # a, b: IoU 0.6
    _add(pool, 1, [0.95], _logits((0, 0, 3, 8)))  # c: IoU 0.75 with a, 0.4 with b
    chosen = pool.select()
    assert pool.scores[chosen].tolist() == pytest.approx([0.95, 0.8])
    assert pool.prompt_index[chosen].tolist() == [1, 0]


def test_nms_reruns_a_query_whose_logits_were_evicted() -> None:
    pool = CandidatePool(max_detections=2, nms_iou=0.5)  # logits are kept for the best 4 candidates only
    first = _logits((0, 0, 8, 8), (0, 0, 8, 7), (0, 0, 7, 8), (0, 0, 7, 7), (0, 0, 1, 1))
    _add(pool, 0, [0.9, 0.8, 0.7, 0.6, 0.1], first)  # the tiny last mask's logits are evicted at once
    _add(pool, 1, [0.95], _logits((0, 0, 8, 8)))  # suppresses the four big masks of query 0
    chosen = pool.select()
    assert pool.prompt_index[chosen].tolist() == [1, 0]
    assert pool.scores[chosen].tolist() == pytest.approx([0.95, 0.1])
    reruns: list[int] = []

    def rerun(prompt: int) -> torch.Tensor:
        reruns.append(prompt)
        return first

    logits = pool.logits(chosen, rerun)
    assert reruns == [0]
    assert torch.equal(logits[1], first[4])


def test_without_nms_the_pool_never_holds_more_than_the_cap() -> None:
    pool = CandidatePool(max_detections=3, nms_iou=None)
    for prompt in range(5):
        _add(pool, prompt, [0.1 * prompt, 0.5, 0.05], _logits((0, 0, 2, 2), (0, 0, 3, 3), (0, 0, 4, 4)))
        assert len(pool.scores) <= 3
    chosen = pool.select()
    assert pool.scores[chosen].tolist() == pytest.approx([0.5, 0.5, 0.5])
    assert pool.prompt_index[chosen].tolist() == [0, 1, 2]  # ties: earlier queries first
    assert [tuple(t.shape) for t in pool.logits(chosen, lambda prompt: pytest.fail("no rerun without NMS"))] == [
        (SIDE, SIDE)
    ] * 3


def test_upsampled_masks_match_the_probability_threshold() -> None:
    logits = _logits((0, 0, 4, 8))
    masks = upsample_masks(logits, (16, 16))
    assert masks.dtype == torch.bool
    assert masks.shape == (1, 16, 16)
    assert masks[0, :, :7].all()
    assert not masks[0, :, 9:].any()

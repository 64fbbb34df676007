"""The SAM3 concept runner against direct transformers calls (shrunk seeded-random model, no weights, no network):
fidelity, the detection cap, chunked upsampling, NMS, embeddings and weights."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tasks.errors import ModelUnavailableError, PromptOutOfBoundsError
from tests.support.sam3_images import (
    EXEMPLAR,
    HEIGHT,
    IMAGE,
    KEEP_ALL,
    PHRASES,
    QUERIES_PER_PROMPT,
    SIZE,
    WIDTH,
    digest,
    sam3_settings,
)
from tests.support.sam3_reference import reference_concept, reference_detect
from worker.runners import sam3_selection
from worker.runners.concept import ConceptInstances, ConceptQuery, Sam3Embedding
from worker.runners.image import ImageEmbedding
from worker.runners.sam3_concept import Sam3ConceptRunner
from worker.runners.sam3_tracker import Sam3TrackerRunner

pytestmark = [
    # roi_align's Python fallback (exemplar boxes) imports torch._inductor, which uses deprecated torch.jit APIs.
    pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"),
]

# --- concept: fidelity ---------------------------------------------------------------------------------------------


def test_detect_equals_the_direct_transformers_call(
    concept: Sam3ConceptRunner, concept_embedding: Sam3Embedding
) -> None:
    prompts: list[dict[str, Any]] = [{"text": text} for text in PHRASES]
    prompts += [
        {"text": "red car", "input_boxes": [[list(EXEMPLAR)]], "input_boxes_labels": [[1]]},
        {"input_boxes": [[list(EXEMPLAR), [0.0, 0.0, 40.0, 30.0]]], "input_boxes_labels": [[1, 0]]},
    ]
    queries = [ConceptQuery(text, threshold=0.0) for text in PHRASES] + [
        ConceptQuery("red car", boxes=[EXEMPLAR], box_labels=[True], threshold=0.0),
        ConceptQuery(None, boxes=[EXEMPLAR, (0.0, 0.0, 40.0, 30.0)], box_labels=[True, False], threshold=0.0),
    ]
    reference = reference_detect(*reference_concept(0, SIZE), IMAGE, prompts)
    result = concept.detect(concept_embedding, queries, max_detections=KEEP_ALL, nms_iou=None)

    assert len(result) == len(queries) * QUERIES_PER_PROMPT == len(reference["scores"])
    assert result.masks.shape == (len(result), HEIGHT, WIDTH)
    assert np.array_equal(result.prompt_index, reference["prompt_index"])
    assert np.array_equal(result.scores, reference["scores"])
    assert np.array_equal(result.boxes, reference["boxes"])
    assert np.array_equal(result.masks, reference["masks"])
    assert np.all(np.diff(result.scores) <= 0)
    assert result.masks.any()  # random weights, but not degenerate
    assert not result.masks.all()


def test_each_phrase_gets_its_own_prompt_index(full_result: ConceptInstances) -> None:
    counts = np.bincount(full_result.prompt_index, minlength=len(PHRASES))
    assert counts.tolist() == [QUERIES_PER_PROMPT] * len(PHRASES)
    assert full_result.scores.dtype == np.float32
    assert full_result.boxes.dtype == np.float32
    assert np.all(full_result.boxes >= 0)
    assert np.all(full_result.boxes[:, [0, 2]] <= WIDTH)
    assert np.all(full_result.boxes[:, [1, 3]] <= HEIGHT)


def test_a_phrase_with_nothing_above_its_threshold_contributes_nothing(
    concept: Sam3ConceptRunner, concept_embedding: Sam3Embedding, full_result: ConceptInstances
) -> None:
    queries = [ConceptQuery(PHRASES[0], threshold=0.0), ConceptQuery(PHRASES[1], threshold=0.99)]
    queries.append(ConceptQuery(PHRASES[2], threshold=0.0))
    result = concept.detect(concept_embedding, queries, max_detections=KEEP_ALL, nms_iou=None)
    assert set(result.prompt_index.tolist()) == {0, 2}
    expected = full_result.prompt_index != 1
    assert np.array_equal(result.scores, full_result.scores[expected])
    assert np.array_equal(result.masks, full_result.masks[expected])

    nothing = concept.detect(concept_embedding, [ConceptQuery("dog", threshold=0.99)], max_detections=5, nms_iou=None)
    assert len(nothing) == 0
    assert nothing.masks.shape == (0, HEIGHT, WIDTH)
    assert nothing.boxes.shape == (0, 4)


def test_threshold_keeps_scores_at_or_above_it(
    concept: Sam3ConceptRunner, concept_embedding: Sam3Embedding, full_result: ConceptInstances
) -> None:
    cut = float(full_result.scores[10])
    queries = [ConceptQuery(text, threshold=cut) for text in PHRASES]
    result = concept.detect(concept_embedding, queries, max_detections=KEEP_ALL, nms_iou=None)
    assert np.array_equal(result.scores, full_result.scores[full_result.scores >= cut])


# --- concept: the cap, chunking and NMS -----------------------------------------------------------------------------


def test_max_detections_is_applied_before_upsampling_in_chunks(
    concept: Sam3ConceptRunner,
    concept_embedding: Sam3Embedding,
    full_result: ConceptInstances,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    expected = full_result.masks  # (materialised before the spy goes in)
    calls: list[int] = []
    real = sam3_selection.upsample_masks

    def spy(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        calls.append(int(logits.shape[0]))
        assert logits.shape[-1] == concept.low_res_size  # low-res in, full size out
        return real(logits, size)

    monkeypatch.setattr("worker.runners.concept.upsample_masks", spy)  # the name ConceptInstances calls
    queries = [ConceptQuery(text, threshold=0.0) for text in PHRASES]
    result = concept.detect(concept_embedding, queries, max_detections=5, nms_iou=None, chunk_size=2)
    assert calls == [], "nothing is upsampled until the masks are consumed"
    assert np.array_equal(result.masks, expected[:5])
    assert calls == [2, 2, 1]  # 5 of the 96 candidates were ever upsampled, at most 2 at a time
    assert np.array_equal(result.scores, full_result.scores[:5])
    assert np.array_equal(result.prompt_index, full_result.prompt_index[:5])

    calls.clear()
    single = concept.detect(concept_embedding, queries, max_detections=7, nms_iou=None, chunk_size=1)
    for i, mask in enumerate(single.iter_masks()):  # a consumer holds one full-size mask at a time
        assert calls == [1] * (i + 1)
        assert np.array_equal(mask, expected[i])


def test_nms_keeps_a_subsequence_of_the_ranking(
    concept: Sam3ConceptRunner, concept_embedding: Sam3Embedding, full_result: ConceptInstances
) -> None:
    queries = [ConceptQuery(text, threshold=0.0) for text in PHRASES]
    loose = concept.detect(concept_embedding, queries, max_detections=KEEP_ALL, nms_iou=1.0)
    assert np.array_equal(loose.masks, full_result.masks)  # IoU > 1 never happens: nothing is suppressed

    strict = concept.detect(concept_embedding, queries, max_detections=4, nms_iou=0.3)
    assert 1 <= len(strict) <= 4
    positions = [int(np.flatnonzero(full_result.scores == score)[0]) for score in strict.scores]
    assert positions == sorted(positions)
    assert positions[0] == 0
    for i, position in enumerate(positions):
        assert np.array_equal(strict.masks[i], full_result.masks[position])  # re-run or kept logits: same masks
        assert strict.prompt_index[i] == full_result.prompt_index[position]


def test_detect_refuses_bad_arguments(concept: Sam3ConceptRunner, concept_embedding: Sam3Embedding) -> None:
    query = ConceptQuery("dog")
    with pytest.raises(ValueError, match="at least one query"):
        concept.detect(concept_embedding, [], max_detections=5, nms_iou=None)
    with pytest.raises(ValueError, match="max_detections"):
        concept.detect(concept_embedding, [query], max_detections=0, nms_iou=None)
    with pytest.raises(ValueError, match="nms_iou"):
        concept.detect(concept_embedding, [query], max_detections=5, nms_iou=1.5)
    with pytest.raises(ValueError, match="text, exemplar boxes"):
        ConceptQuery()
    with pytest.raises(ValueError, match="box labels"):
        ConceptQuery("dog", boxes=[EXEMPLAR])
    with pytest.raises(ValueError, match="threshold"):
        ConceptQuery("dog", threshold=-0.1)


@pytest.mark.parametrize(
    "box", [(10.0, 10.0, WIDTH + 1.0, 50.0), (-1.0, 10.0, 50.0, 50.0), (10.0, 10.0, 50.0, HEIGHT + 0.5)]
)
def test_exemplar_box_outside_the_image_is_refused(
    concept: Sam3ConceptRunner, concept_embedding: Sam3Embedding, box: tuple[float, float, float, float]
) -> None:
    queries = [ConceptQuery("dog"), ConceptQuery("car", boxes=[EXEMPLAR, box], box_labels=[True, False])]
    with pytest.raises(PromptOutOfBoundsError, match="prompt 1: box"):
        concept.detect(concept_embedding, queries, max_detections=5, nms_iou=None)


# --- concept: embeddings, determinism, weights ----------------------------------------------------------------------


def test_embedding_shape_facts(concept: Sam3ConceptRunner, concept_embedding: Sam3Embedding) -> None:
    grid = SIZE // 14
    assert concept.image_size == SIZE
    assert concept.low_res_size == 4 * grid
    assert concept.device == "cpu"
    assert concept_embedding.orig_hw == (HEIGHT, WIDTH)
    assert [tuple(t.shape) for t in concept_embedding.fpn_hidden_states] == [
        (1, 32, 4 * grid, 4 * grid),
        (1, 32, 2 * grid, 2 * grid),
        (1, 32, grid, grid),
        (1, 32, grid // 2, grid // 2),
    ]
    assert concept_embedding.nbytes == sum(t.numel() * 4 for t in concept_embedding.fpn_hidden_states)


def test_embedding_bytes_round_trip_detects_identically(
    concept: Sam3ConceptRunner, concept_embedding: Sam3Embedding, full_result: ConceptInstances
) -> None:
    restored = Sam3Embedding.from_bytes(concept_embedding.to_bytes(), "cpu")
    assert restored.orig_hw == concept_embedding.orig_hw
    assert restored.nbytes == concept_embedding.nbytes
    queries = [ConceptQuery(text, threshold=0.0) for text in PHRASES]
    again = concept.detect(restored, queries, max_detections=KEEP_ALL, nms_iou=None)
    assert np.array_equal(again.masks, full_result.masks)
    assert np.array_equal(again.scores, full_result.scores)


def test_foreign_bytes_are_not_a_concept_embedding(tracker_embedding: ImageEmbedding) -> None:
    with pytest.raises(ValueError, match="not a serialized SAM3 concept embedding"):
        Sam3Embedding.from_bytes(b"definitely not torch")
    with pytest.raises(ValueError, match="not a serialized SAM3 concept embedding"):
        Sam3Embedding.from_bytes(tracker_embedding.to_bytes())  # a SAM2-layout embedding


def test_embedding_of_another_size_is_refused(concept: Sam3ConceptRunner) -> None:
    alien = Sam3Embedding.create([torch.zeros(1, 32, s, s) for s in (72, 36, 18, 9)], (HEIGHT, WIDTH))
    with pytest.raises(ValueError, match="another model or size"):
        concept.detect(alien, [ConceptQuery("dog")], max_detections=5, nms_iou=None)


def test_a_second_build_with_the_same_seed_is_identical(
    concept: Sam3ConceptRunner, full_result: ConceptInstances
) -> None:
    again = Sam3ConceptRunner.load("sam3", sam3_settings())
    assert digest(again._model) == digest(concept._model)
    queries = [ConceptQuery(text, threshold=0.0) for text in PHRASES]
    result = again.detect(again.encode(IMAGE), queries, max_detections=KEEP_ALL, nms_iou=None)
    assert np.array_equal(result.masks, full_result.masks)
    assert np.array_equal(result.scores, full_result.scores)
    other = Sam3ConceptRunner.load("sam3", sam3_settings(seed=1))
    assert digest(other._model) != digest(concept._model)


def test_random_weights_are_identical_across_processes(concept: Sam3ConceptRunner, tracker: Sam3TrackerRunner) -> None:
    code = (
        "import hashlib\n"
        "from worker.runners.sam3_concept import Sam3ConceptRunner\n"
        "from worker.runners.sam3_tracker import Sam3TrackerRunner\n"
        "from worker.settings import WorkerSettings\n"
        "s = WorkerSettings(random_weights=True, device='cpu', seed=0)\n"
        "for runner in (Sam3ConceptRunner, Sam3TrackerRunner):\n"
        "    digest = hashlib.sha256()\n"
        "    for name, tensor in sorted(runner.load('sam3', s)._model.state_dict().items()):\n"
        "        digest.update(name.encode())\n"
        "        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())\n"
        "    print(digest.hexdigest())\n"
    )
    root = Path(__file__).resolve().parents[4]  # the repository
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False, cwd=root
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-2:] == [digest(concept._model), digest(tracker._model)]


def test_missing_weights_are_unavailable(tmp_path: Path) -> None:
    settings = sam3_settings(random_weights=False, models_dir=tmp_path)
    for runner in (Sam3ConceptRunner, Sam3TrackerRunner):
        with pytest.raises(ModelUnavailableError) as caught:
            runner.load("sam3", settings)
        message = str(caught.value)
        assert str(tmp_path / "sam3") in message
        assert "SAMQ_WORKER_MODELS_DIR" in message
        assert "SAMQ_WORKER_ALLOW_DOWNLOAD" in message


def test_unknown_model_is_unavailable() -> None:
    with pytest.raises(ModelUnavailableError, match="unknown model"):
        Sam3ConceptRunner.load("sam9", sam3_settings())

"""SAM3 runners against direct transformers calls, on shrunk seeded-random models (no weights, no network)."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tasks.errors import ModelUnavailableError, PromptOutOfBoundsError
from tests.support.sam3_reference import reference_concept, reference_detect
from worker.results import boxes_from_masks
from worker.runners import sam3_concept
from worker.runners.sam2_image import ImageEmbedding, VisualPrompt
from worker.runners.sam3 import clip_tokenizer, image_processor, shrunk_concept_config, shrunk_tracker_config
from worker.runners.sam3_concept import ConceptInstances, ConceptQuery, Sam3ConceptRunner, Sam3Embedding
from worker.runners.sam3_tracker import Sam3TrackerRunner
from worker.settings import WorkerSettings

from transformers import (  # isort: skip  (worker.runners.sam3 installs the torchvision shim first)
    Sam3Processor,
    Sam3TrackerModel,
    Sam3TrackerProcessor,
    Sam3VideoConfig,
    Sam3VideoModel,
)
from transformers.models.sam3_tracker_video import Sam3TrackerVideoConfig  # isort: skip

pytestmark = [
    pytest.mark.unit,
    # roi_align's Python fallback (exemplar boxes) imports torch._inductor, which uses deprecated torch.jit APIs.
    pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"),
]

SIZE = 224  # the random-weights default: a 16x16 patch grid
QUERIES_PER_PROMPT = 32  # num_queries of the shrunk DETR decoder
KEEP_ALL = 10_000


def _settings(**overrides: Any) -> WorkerSettings:
    values: dict[str, Any] = {"random_weights": True, "device": "cpu", "seed": 0, "allow_download": False}
    values.update(overrides)
    return WorkerSettings(**values)


def _image() -> np.ndarray:
    rng = np.random.default_rng(42)
    image = rng.integers(0, 256, (120, 200, 3), dtype=np.uint8)
    image[30:90, 50:130] = (230, 40, 40)  # a flat red block
    return image


IMAGE = _image()
HEIGHT, WIDTH = IMAGE.shape[:2]
PHRASES = ["red car", "dog", "a person on a bike"]
EXEMPLAR = (50.0, 30.0, 130.0, 90.0)


def _digest(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def concept() -> Sam3ConceptRunner:
    return Sam3ConceptRunner.load("sam3", _settings())


@pytest.fixture(scope="module")
def concept_embedding(concept: Sam3ConceptRunner) -> Sam3Embedding:
    return concept.encode(IMAGE)


@pytest.fixture(scope="module")
def tracker() -> Sam3TrackerRunner:
    return Sam3TrackerRunner.load("sam3", _settings())


@pytest.fixture(scope="module")
def tracker_embedding(tracker: Sam3TrackerRunner) -> ImageEmbedding:
    return tracker.encode(IMAGE)


@pytest.fixture(scope="module")
def full_result(concept: Sam3ConceptRunner, concept_embedding: Sam3Embedding) -> ConceptInstances:
    queries = [ConceptQuery(text, threshold=0.0) for text in PHRASES]
    return concept.detect(concept_embedding, queries, max_detections=KEEP_ALL, nms_iou=None)


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
    real = sam3_concept.upsample_masks

    def spy(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        calls.append(int(logits.shape[0]))
        assert logits.shape[-1] == concept.low_res_size  # low-res in, full size out
        return real(logits, size)

    monkeypatch.setattr(sam3_concept, "upsample_masks", spy)
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
    again = Sam3ConceptRunner.load("sam3", _settings())
    assert _digest(again._model) == _digest(concept._model)
    queries = [ConceptQuery(text, threshold=0.0) for text in PHRASES]
    result = again.detect(again.encode(IMAGE), queries, max_detections=KEEP_ALL, nms_iou=None)
    assert np.array_equal(result.masks, full_result.masks)
    assert np.array_equal(result.scores, full_result.scores)
    other = Sam3ConceptRunner.load("sam3", _settings(seed=1))
    assert _digest(other._model) != _digest(concept._model)


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
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False, cwd=root
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-2:] == [_digest(concept._model), _digest(tracker._model)]


def test_missing_weights_are_unavailable(tmp_path: Path) -> None:
    settings = _settings(random_weights=False, models_dir=tmp_path)
    for runner in (Sam3ConceptRunner, Sam3TrackerRunner):
        with pytest.raises(ModelUnavailableError) as caught:
            runner.load("sam3", settings)
        message = str(caught.value)
        assert str(tmp_path / "sam3") in message
        assert "SAMQ_WORKER_MODELS_DIR" in message
        assert "SAMQ_WORKER_ALLOW_DOWNLOAD" in message


def test_unknown_model_is_unavailable() -> None:
    with pytest.raises(ModelUnavailableError, match="unknown model"):
        Sam3ConceptRunner.load("sam9", _settings())


# --- tracker ---------------------------------------------------------------------------------------------------------

PROMPTS = [
    VisualPrompt(point_coords=np.array([[80.0, 60.0]], np.float32), point_labels=np.array([1], np.int32)),
    VisualPrompt(
        point_coords=np.array([[60.0, 40.0], [150.0, 100.0]], np.float32), point_labels=np.array([1, 0], np.int32)
    ),
    VisualPrompt(box=np.array([45.0, 25.0, 135.0, 95.0], np.float32)),
    VisualPrompt(
        point_coords=np.array([[90.0, 50.0]], np.float32),
        point_labels=np.array([1], np.int32),
        box=np.array([0.0, 0.0, 200.0, 120.0], np.float32),
    ),
]


@pytest.fixture(scope="module")
def reference_tracker() -> tuple[Any, Any]:
    torch.manual_seed(0)
    model = Sam3TrackerModel(shrunk_tracker_config(SIZE)).eval()
    return model, Sam3TrackerProcessor(image_processor=image_processor(SIZE))


def _reference_track(reference: tuple[Any, Any], prompt: VisualPrompt, multimask: bool) -> tuple[np.ndarray, ...]:
    """The documented call: processor(images, points, labels, box) → model → post_process_masks."""
    model, processor = reference
    inputs = processor(
        images=IMAGE,
        input_points=None if prompt.point_coords is None else [[prompt.point_coords.tolist()]],
        input_labels=None if prompt.point_labels is None else [[prompt.point_labels.tolist()]],
        input_boxes=None if prompt.box is None else [[prompt.box.tolist()]],
        return_tensors="pt",
    )
    extra = {} if prompt.mask_input is None else {"input_masks": torch.from_numpy(prompt.mask_input)[None]}
    with torch.inference_mode():
        outputs = model(**inputs, **extra, multimask_output=multimask)
    masks = processor.post_process_masks(outputs.pred_masks, inputs["original_sizes"])[0][0]
    return masks.numpy(), outputs.iou_scores[0, 0].numpy(), outputs.pred_masks[0, 0].numpy()


@pytest.mark.parametrize("multimask", [True, False])
def test_tracker_equals_the_direct_transformers_call(
    tracker: Sam3TrackerRunner, tracker_embedding: ImageEmbedding, reference_tracker: Any, multimask: bool
) -> None:
    result = tracker.predict(tracker_embedding, PROMPTS, multimask, False)
    assert result.prompt_index.tolist() == list(range(len(PROMPTS)))
    assert result.masks.shape == (len(PROMPTS), HEIGHT, WIDTH)
    for i, prompt in enumerate(PROMPTS):
        masks, scores, logits = _reference_track(reference_tracker, prompt, multimask)
        best = int(np.argmax(scores))
        assert len(scores) == (3 if multimask else 1)
        assert np.array_equal(result.masks[i], masks[best])
        assert result.scores[i] == scores[best]
        assert np.array_equal(result.low_res_logits[i], logits[best])
    assert np.array_equal(result.boxes, boxes_from_masks(result.masks))
    assert result.masks.any()
    assert not result.masks.all()


def test_tracker_return_all_masks_and_mask_input_refinement(
    tracker: Sam3TrackerRunner, tracker_embedding: ImageEmbedding, reference_tracker: Any
) -> None:
    every = tracker.predict(tracker_embedding, PROMPTS[:2], True, True)
    assert every.prompt_index.tolist() == [0, 0, 0, 1, 1, 1]
    masks, scores, _ = _reference_track(reference_tracker, PROMPTS[1], True)
    assert np.array_equal(every.masks[3:], masks)
    assert np.array_equal(every.scores[3:], scores)

    refine = VisualPrompt(
        point_coords=np.array([[80.0, 60.0], [100.0, 70.0]], np.float32),
        point_labels=np.array([1, 1], np.int32),
        mask_input=every.low_res_logits[0:1],
    )
    assert tracker.low_res_size == 4 * SIZE // 14
    assert every.low_res_logits.shape[1:] == (tracker.low_res_size, tracker.low_res_size)
    refined = tracker.predict(tracker_embedding, [refine], False, False)
    masks, scores, logits = _reference_track(reference_tracker, refine, False)
    assert np.array_equal(refined.masks[0], masks[0])
    assert refined.scores[0] == scores[0]
    assert np.array_equal(refined.low_res_logits[0], logits[0])
    plain = VisualPrompt(point_coords=refine.point_coords, point_labels=refine.point_labels)
    assert not np.array_equal(tracker.predict(tracker_embedding, [plain], False, False).low_res_logits, logits)


def test_tracker_embedding_is_a_sam2_image_embedding(
    tracker: Sam3TrackerRunner, tracker_embedding: ImageEmbedding
) -> None:
    grid = SIZE // 14
    assert tracker.image_size == SIZE
    assert tuple(tracker_embedding.features["image_embed"].shape) == (1, 32, grid, grid)
    restored = ImageEmbedding.from_bytes(tracker_embedding.to_bytes(), "cpu")
    direct = tracker.predict(tracker_embedding, PROMPTS, True, True)
    again = tracker.predict(restored, PROMPTS, True, True)
    assert np.array_equal(direct.masks, again.masks)
    assert np.array_equal(direct.low_res_logits, again.low_res_logits)
    alien = ImageEmbedding.create(
        {"image_embed": torch.zeros(1, 32, 18, 18), "high_res_feats": [torch.zeros(1, 4, 72, 72)] * 2}, (HEIGHT, WIDTH)
    )
    with pytest.raises(ValueError, match="another model or size"):
        tracker.predict(alien, PROMPTS[:1], True, False)


def test_tracker_refuses_prompts_outside_the_image(
    tracker: Sam3TrackerRunner, tracker_embedding: ImageEmbedding
) -> None:
    outside = VisualPrompt(point_coords=np.array([[WIDTH, 10.0]], np.float32), point_labels=np.array([1], np.int32))
    with pytest.raises(PromptOutOfBoundsError, match="prompt 1: point 0"):
        tracker.predict(tracker_embedding, [PROMPTS[0], outside], True, False)
    with pytest.raises(PromptOutOfBoundsError, match="prompt 0: box"):
        tracker.predict(tracker_embedding, [VisualPrompt(box=np.array([0, 0, WIDTH + 1, 5], np.float32))], True, False)
    with pytest.raises(ValueError, match="mask_input must be"):
        tracker.predict(tracker_embedding, [VisualPrompt(mask_input=np.zeros((1, 256, 256), np.float32))], True, False)


# --- real-weight loading from a checkpoint folder --------------------------------------------------------------------


def _write_sam3_checkpoint(directory: Path, seed: int) -> Any:
    """A shrunk ``facebook/sam3``-style checkpoint: a ``sam3_video`` model holding the detector and the tracker.

    The weights file is written with safetensors directly: transformers 5.23's ``save_pretrained`` of a
    ``Sam3VideoModel`` prefixes the tracker's keys twice (``tracker_model.tracker_model.…``), unlike the hub's file.
    """
    from safetensors.torch import save_file

    tracker = shrunk_tracker_config(SIZE)
    config = Sam3VideoConfig(
        detector_config=shrunk_concept_config(SIZE),
        tracker_config=Sam3TrackerVideoConfig(
            image_size=SIZE,
            vision_config=tracker.vision_config,
            prompt_encoder_config=tracker.prompt_encoder_config.to_dict(),
            mask_decoder_config=tracker.mask_decoder_config.to_dict(),
        ),
    )
    torch.manual_seed(seed)
    model = Sam3VideoModel(config).eval()
    directory.mkdir(parents=True)
    config.save_pretrained(directory)
    state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, directory / "model.safetensors", metadata={"format": "pt"})
    Sam3Processor(image_processor=image_processor(SIZE), tokenizer=clip_tokenizer()).save_pretrained(directory)
    return model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    models_dir = tmp_path_factory.mktemp("models")
    return models_dir, _write_sam3_checkpoint(models_dir / "sam3", seed=123)


def test_concept_runner_loads_a_checkpoint_folder(checkpoint: tuple[Path, Any], full_result: ConceptInstances) -> None:
    models_dir, saved = checkpoint
    loaded = Sam3ConceptRunner.load("sam3", _settings(random_weights=False, models_dir=models_dir))
    assert _digest(loaded._model) == _digest(saved.detector_model)

    processor = Sam3Processor(image_processor=image_processor(SIZE), tokenizer=clip_tokenizer())
    reference = reference_detect(saved.detector_model, processor, IMAGE, [{"text": text} for text in PHRASES])
    queries = [ConceptQuery(text, threshold=0.0) for text in PHRASES]
    result = loaded.detect(loaded.encode(IMAGE), queries, max_detections=KEEP_ALL, nms_iou=None)
    assert np.array_equal(result.masks, reference["masks"])
    assert np.array_equal(result.scores, reference["scores"])
    assert not np.array_equal(result.scores, full_result.scores)  # not the seed-0 random model


def test_tracker_runner_loads_the_same_checkpoint_folder(checkpoint: tuple[Path, Any]) -> None:
    models_dir, saved = checkpoint
    loaded = Sam3TrackerRunner.load("sam3", _settings(random_weights=False, models_dir=models_dir))
    source = saved.state_dict()
    for name, tensor in loaded._model.state_dict().items():
        if name.startswith("vision_encoder.backbone."):
            origin = "detector_model." + name
        elif name.startswith("vision_encoder.neck."):
            origin = name.replace("vision_encoder.neck.", "tracker_neck.")
        else:
            origin = "tracker_model." + name
        assert torch.equal(tensor, source[origin]), name
    result = loaded.predict(loaded.encode(IMAGE), PROMPTS, True, False)
    assert result.masks.shape == (len(PROMPTS), HEIGHT, WIDTH)


def test_checkpoint_folder_at_another_input_size(checkpoint: tuple[Path, Any]) -> None:
    models_dir, _ = checkpoint
    settings = _settings(random_weights=False, models_dir=models_dir, image_size=128)  # → 126, a 9x9 grid
    concept = Sam3ConceptRunner.load("sam3", settings)
    tracker = Sam3TrackerRunner.load("sam3", settings)
    assert (concept.image_size, tracker.image_size, tracker.low_res_size) == (126, 126, 36)
    assert (
        len(concept.detect(concept.encode(IMAGE), [ConceptQuery("dog", threshold=0.0)], max_detections=3, nms_iou=None))
        == 3
    )
    assert tracker.predict(tracker.encode(IMAGE), PROMPTS[:1], True, True).low_res_logits.shape == (3, 36, 36)


def test_incomplete_checkpoint_is_unavailable(tmp_path: Path, checkpoint: tuple[Path, Any]) -> None:
    from safetensors.torch import load_file, save_file

    _, saved = checkpoint
    folder = tmp_path / "sam3"
    folder.mkdir()
    saved.config.save_pretrained(folder)
    state = load_file(checkpoint[0] / "sam3" / "model.safetensors")
    save_file(
        {k: v for k, v in state.items() if not k.startswith("tracker_model.mask_decoder.")},
        folder / "model.safetensors",
    )
    settings = _settings(random_weights=False, models_dir=tmp_path)
    with pytest.raises(ModelUnavailableError, match=r"lacks \d+ weights of sam3"):
        Sam3TrackerRunner.load("sam3", settings)

    (folder / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ModelUnavailableError, match=re.escape(f"the checkpoint in {folder} cannot be loaded")):
        Sam3ConceptRunner.load("sam3", settings)

"""The SAM3 tracker runner against direct transformers calls, and real-weight loading from a checkpoint folder
(shrunk seeded-random models, no weights, no network)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tasks.errors import ModelUnavailableError, PromptOutOfBoundsError
from tests.support.sam3_images import HEIGHT, IMAGE, KEEP_ALL, PHRASES, SIZE, WIDTH, digest, sam3_settings
from tests.support.sam3_reference import reference_detect
from worker.results import boxes_from_masks
from worker.runners.concept import ConceptInstances, ConceptQuery
from worker.runners.image import ImageEmbedding, VisualPrompt
from worker.runners.sam3 import clip_tokenizer, image_processor, shrunk_concept_config, shrunk_tracker_config
from worker.runners.sam3_concept import Sam3ConceptRunner
from worker.runners.sam3_tracker import Sam3TrackerRunner

from transformers import (  # isort: skip  (worker.runners.sam3 installs the torchvision shim first)
    Sam3Processor,
    Sam3TrackerModel,
    Sam3TrackerProcessor,
    Sam3VideoConfig,
    Sam3VideoModel,
)
from transformers.models.sam3_tracker_video import Sam3TrackerVideoConfig  # isort: skip

pytestmark = [
    # roi_align's Python fallback (exemplar boxes) imports torch._inductor, which uses deprecated torch.jit APIs.
    pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"),
]

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
    VisualPrompt(),  # no prompt at all: the most prominent mask
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


def test_tracker_logits_are_the_processors_unbinarized_masks(
    tracker: Sam3TrackerRunner, tracker_embedding: ImageEmbedding, reference_tracker: Any
) -> None:
    model, processor = reference_tracker
    result = tracker.predict(tracker_embedding, PROMPTS, True, False, return_logits=True)
    assert result.logits is not None
    assert np.array_equal(result.masks, tracker.predict(tracker_embedding, PROMPTS, True, False).masks)
    for i, prompt in enumerate(PROMPTS):
        inputs = processor(
            images=IMAGE,
            input_points=None if prompt.point_coords is None else [[prompt.point_coords.tolist()]],
            input_labels=None if prompt.point_labels is None else [[prompt.point_labels.tolist()]],
            input_boxes=None if prompt.box is None else [[prompt.box.tolist()]],
            return_tensors="pt",
        )
        with torch.inference_mode():
            outputs = model(**inputs, multimask_output=True)
        logits = processor.post_process_masks(outputs.pred_masks, inputs["original_sizes"], binarize=False)[0][0]
        assert np.array_equal(result.logits[i], logits.numpy()[int(np.argmax(outputs.iou_scores[0, 0].numpy()))])


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

    tracker: Any = shrunk_tracker_config(SIZE)
    config = Sam3VideoConfig(
        detector_config=shrunk_concept_config(SIZE),
        tracker_config=Sam3TrackerVideoConfig(  # type: ignore[call-arg]
            image_size=SIZE,  # taken through **kwargs
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
    loaded = Sam3ConceptRunner.load("sam3", sam3_settings(random_weights=False, models_dir=models_dir))
    assert digest(loaded._model) == digest(saved.detector_model)

    processor = Sam3Processor(image_processor=image_processor(SIZE), tokenizer=clip_tokenizer())
    reference = reference_detect(saved.detector_model, processor, IMAGE, [{"text": text} for text in PHRASES])
    queries = [ConceptQuery(text, threshold=0.0) for text in PHRASES]
    result = loaded.detect(loaded.encode(IMAGE), queries, max_detections=KEEP_ALL, nms_iou=None)
    assert np.array_equal(result.masks, reference["masks"])
    assert np.array_equal(result.scores, reference["scores"])
    assert not np.array_equal(result.scores, full_result.scores)  # not the seed-0 random model


def test_tracker_runner_loads_the_same_checkpoint_folder(checkpoint: tuple[Path, Any]) -> None:
    models_dir, saved = checkpoint
    loaded = Sam3TrackerRunner.load("sam3", sam3_settings(random_weights=False, models_dir=models_dir))
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
    settings = sam3_settings(random_weights=False, models_dir=models_dir, image_size=128)  # → 126, a 9x9 grid
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
    settings = sam3_settings(random_weights=False, models_dir=tmp_path)
    with pytest.raises(ModelUnavailableError, match=r"lacks \d+ weights of sam3"):
        Sam3TrackerRunner.load("sam3", settings)

    (folder / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ModelUnavailableError, match=re.escape(f"the checkpoint in {folder} cannot be loaded")):
        Sam3ConceptRunner.load("sam3", settings)

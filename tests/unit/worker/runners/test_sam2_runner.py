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
from worker.results import boxes_from_masks
from worker.runners.image import ImageEmbedding, Sam2Features, VisualPrompt
from worker.runners.sam2_image import Sam2ImageRunner
from worker.settings import WorkerSettings

pytestmark = [
    # sam2's SAM2Transforms scripts a module; torch 2.13 deprecates torch.jit.script (the runner silences this).
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning"),
]

MODEL = "sam2.1_hiera_tiny"
CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
SIZE = 256


def _settings(**overrides: Any) -> WorkerSettings:
    values: dict[str, Any] = {
        "random_weights": True,
        "image_size": SIZE,
        "device": "cpu",
        "seed": 0,
        "allow_download": False,
    }
    values.update(overrides)
    return WorkerSettings(**values)


def _reference_predictor(seed: int) -> Any:
    """Meta's predictor, built the documented way. (sam2 is imported here, after worker.runners.sam2_image has
    installed the torchvision shim that sam2's import of torchvision needs on CPU machines.)"""
    from sam2.build_sam import build_sam2
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    torch.manual_seed(seed)
    model = build_sam2(
        CONFIG, None, device="cpu", hydra_overrides_extra=[f"++model.image_size={SIZE}"], apply_postprocessing=False
    )
    predictor = SAM2ImagePredictor(model)
    predictor._bb_feat_sizes = [(SIZE // 4, SIZE // 4), (SIZE // 8, SIZE // 8), (SIZE // 16, SIZE // 16)]
    return predictor


def _image() -> np.ndarray:
    rng = np.random.default_rng(42)
    image = rng.integers(0, 256, (120, 200, 3), dtype=np.uint8)
    image[30:90, 50:130] = (230, 40, 40)  # a flat red block
    return image


IMAGE = _image()
HEIGHT, WIDTH = IMAGE.shape[:2]

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


def _reference_call(predictor: Any, prompt: VisualPrompt, multimask: bool) -> tuple[np.ndarray, ...]:
    masks, scores, logits = predictor.predict(
        point_coords=prompt.point_coords,
        point_labels=prompt.point_labels,
        box=prompt.box,
        mask_input=prompt.mask_input,
        multimask_output=multimask,
        return_logits=False,
        normalize_coords=True,
    )
    return masks.astype(bool), scores, logits


@pytest.fixture(scope="module")
def runner() -> Sam2ImageRunner:
    return Sam2ImageRunner.load(MODEL, _settings())


@pytest.fixture(scope="module")
def reference() -> Any:
    predictor = _reference_predictor(0)
    predictor.set_image(IMAGE)
    return predictor


@pytest.fixture(scope="module")
def embedding(runner: Sam2ImageRunner) -> ImageEmbedding:
    return runner.encode(IMAGE)


def test_runner_shape_facts(runner: Sam2ImageRunner, embedding: ImageEmbedding) -> None:
    assert runner.device == "cpu"
    assert runner.image_size == SIZE
    assert runner.low_res_size == SIZE // 4
    assert embedding.orig_hw == (HEIGHT, WIDTH)
    assert embedding.features["image_embed"].shape == (1, 256, SIZE // 16, SIZE // 16)
    assert embedding.nbytes == sum(
        t.numel() * t.element_size() for t in [embedding.features["image_embed"], *embedding.features["high_res_feats"]]
    )


def test_embedding_matches_reference_features(embedding: ImageEmbedding, reference: Any) -> None:
    assert torch.equal(embedding.features["image_embed"], reference._features["image_embed"])
    for ours, theirs in zip(embedding.features["high_res_feats"], reference._features["high_res_feats"], strict=True):
        assert torch.equal(ours, theirs)


@pytest.mark.parametrize("multimask", [True, False])
def test_best_masks_are_bit_identical_to_the_reference(
    runner: Sam2ImageRunner, embedding: ImageEmbedding, reference: Any, multimask: bool
) -> None:
    result = runner.predict(embedding, PROMPTS, multimask, False)
    assert len(result) == len(PROMPTS)
    assert result.prompt_index.tolist() == list(range(len(PROMPTS)))
    assert result.masks.shape == (len(PROMPTS), HEIGHT, WIDTH)
    for i, prompt in enumerate(PROMPTS):
        masks, scores, logits = _reference_call(reference, prompt, multimask)
        best = int(np.argmax(scores))
        assert len(scores) == (3 if multimask else 1)
        assert np.array_equal(result.masks[i], masks[best])
        assert result.scores[i] == scores[best]
        assert np.array_equal(result.low_res_logits[i], logits[best])
    assert np.array_equal(result.boxes, boxes_from_masks(result.masks))
    assert result.masks.any()  # random weights, but not degenerate
    assert not result.masks.all()


def test_return_all_masks_gives_every_candidate(
    runner: Sam2ImageRunner, embedding: ImageEmbedding, reference: Any
) -> None:
    result = runner.predict(embedding, PROMPTS[:2], True, True)
    assert result.prompt_index.tolist() == [0, 0, 0, 1, 1, 1]
    for i, prompt in enumerate(PROMPTS[:2]):
        masks, scores, logits = _reference_call(reference, prompt, True)
        assert np.array_equal(result.masks[3 * i : 3 * i + 3], masks)
        assert np.array_equal(result.scores[3 * i : 3 * i + 3], scores)
        assert np.array_equal(result.low_res_logits[3 * i : 3 * i + 3], logits)


def test_mask_input_refinement_matches_the_reference(
    runner: Sam2ImageRunner, embedding: ImageEmbedding, reference: Any
) -> None:
    first = runner.predict(embedding, PROMPTS[:1], True, False)
    refine = VisualPrompt(
        point_coords=np.array([[80.0, 60.0], [120.0, 80.0]], np.float32),
        point_labels=np.array([1, 1], np.int32),
        mask_input=first.low_res_logits[0:1],
    )
    assert refine.mask_input is not None
    assert refine.mask_input.shape == (1, SIZE // 4, SIZE // 4)
    result = runner.predict(embedding, [refine], False, False)
    masks, scores, logits = _reference_call(reference, refine, False)
    assert np.array_equal(result.masks[0], masks[0])
    assert result.scores[0] == scores[0]
    assert np.array_equal(result.low_res_logits[0], logits[0])
    without_mask = runner.predict(
        embedding, [VisualPrompt(point_coords=refine.point_coords, point_labels=refine.point_labels)], False, False
    )
    assert not np.array_equal(without_mask.low_res_logits, result.low_res_logits)  # the mask input mattered


@pytest.mark.parametrize("multimask", [True, False])
def test_no_prompt_is_the_reference_predictor_called_with_no_prompt(
    runner: Sam2ImageRunner, embedding: ImageEmbedding, reference: Any, multimask: bool
) -> None:
    """An empty prompt asks for the most prominent mask: Meta's ``predict()`` with no points, box or mask."""
    result = runner.predict(embedding, [VisualPrompt()], multimask, False)
    masks, scores, logits = reference.predict(multimask_output=multimask, return_logits=False)
    best = int(np.argmax(scores))
    assert len(result) == 1
    assert np.array_equal(result.masks[0], masks[best].astype(bool))
    assert result.scores[0] == scores[best]
    assert np.array_equal(result.low_res_logits[0], logits[best])
    assert not np.array_equal(
        result.low_res_logits[0], runner.predict(embedding, PROMPTS[:1], multimask, False).low_res_logits[0]
    )


def test_logits_are_the_reference_predictors_own(
    runner: Sam2ImageRunner, embedding: ImageEmbedding, reference: Any
) -> None:
    """Output format ``logits`` (Roboflow's binary): the float masks Meta's predictor returns with
    ``return_logits=True``; the boolean masks stay those of the plain call."""
    result = runner.predict(embedding, PROMPTS, True, False, return_logits=True)
    plain = runner.predict(embedding, PROMPTS, True, False)
    assert plain.logits is None and result.logits is not None
    assert result.logits.shape == result.masks.shape and result.logits.dtype == np.float32
    assert np.array_equal(result.masks, plain.masks)
    for i, prompt in enumerate(PROMPTS):
        masks, scores, _ = reference.predict(
            point_coords=prompt.point_coords,
            point_labels=prompt.point_labels,
            box=prompt.box,
            multimask_output=True,
            return_logits=True,
        )
        assert np.array_equal(result.logits[i], masks[int(np.argmax(scores))])


def test_embedding_bytes_round_trip_predicts_identically(runner: Sam2ImageRunner, embedding: ImageEmbedding) -> None:
    restored = ImageEmbedding.from_bytes(embedding.to_bytes(), "cpu")
    assert restored.orig_hw == embedding.orig_hw
    assert restored.nbytes == embedding.nbytes
    direct = runner.predict(embedding, PROMPTS, True, True)
    again = runner.predict(restored, PROMPTS, True, True)
    assert np.array_equal(direct.masks, again.masks)
    assert np.array_equal(direct.scores, again.scores)
    assert np.array_equal(direct.low_res_logits, again.low_res_logits)


def test_garbage_bytes_are_not_an_embedding() -> None:
    with pytest.raises(ValueError, match="not a serialized image embedding"):
        ImageEmbedding.from_bytes(b"definitely not torch", "cpu")


def test_embedding_of_another_size_is_refused(runner: Sam2ImageRunner) -> None:
    features: Sam2Features = {
        "image_embed": torch.zeros(1, 256, 64, 64),
        "high_res_feats": [torch.zeros(1, 32, 256, 256), torch.zeros(1, 64, 128, 128)],
    }
    alien = ImageEmbedding.create(features, (HEIGHT, WIDTH))
    with pytest.raises(ValueError, match="another model or size"):
        runner.predict(alien, PROMPTS[:1], True, False)


@pytest.mark.parametrize(
    ("prompt", "fragment"),
    [
        (
            VisualPrompt(point_coords=np.array([[WIDTH, 10.0]], np.float32), point_labels=np.array([1], np.int32)),
            "point 0",
        ),
        (
            VisualPrompt(point_coords=np.array([[5.0, -1.0]], np.float32), point_labels=np.array([1], np.int32)),
            "point 0",
        ),
        (
            VisualPrompt(
                point_coords=np.array([[5.0, 5.0], [5.0, HEIGHT]], np.float32), point_labels=np.array([1, 0], np.int32)
            ),
            "point 1",
        ),
        (VisualPrompt(box=np.array([10.0, 10.0, WIDTH + 1, 50.0], np.float32)), "box"),
        (VisualPrompt(box=np.array([10.0, -5.0, 50.0, 50.0], np.float32)), "box"),
    ],
)
def test_prompts_outside_the_image_are_refused(
    runner: Sam2ImageRunner, embedding: ImageEmbedding, prompt: VisualPrompt, fragment: str
) -> None:
    with pytest.raises(PromptOutOfBoundsError, match=f"prompt 1: {fragment}"):
        runner.predict(embedding, [PROMPTS[0], prompt], True, False)


def test_box_on_the_image_border_is_accepted(runner: Sam2ImageRunner, embedding: ImageEmbedding) -> None:
    full = VisualPrompt(box=np.array([0.0, 0.0, WIDTH, HEIGHT], np.float32))
    assert len(runner.predict(embedding, [full], True, False)) == 1


def test_malformed_prompts_are_value_errors(runner: Sam2ImageRunner, embedding: ImageEmbedding) -> None:
    with pytest.raises(ValueError, match="mask_input must be"):
        runner.predict(embedding, [VisualPrompt(mask_input=np.zeros((1, 256, 256), np.float32))], True, False)
    with pytest.raises(ValueError, match="at least one prompt"):
        runner.predict(embedding, [], True, False)


def _state_digest(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def test_random_weights_are_identical_across_processes(runner: Sam2ImageRunner) -> None:
    code = (
        "import hashlib\n"
        "from worker.runners.sam2_image import Sam2ImageRunner\n"
        "from worker.settings import WorkerSettings\n"
        f"s = WorkerSettings(random_weights=True, image_size={SIZE}, device='cpu', seed=0)\n"
        f"model = Sam2ImageRunner.load('{MODEL}', s)._predictor.model\n"
        "digest = hashlib.sha256()\n"
        "for name, tensor in sorted(model.state_dict().items()):\n"
        "    digest.update(name.encode())\n"
        "    digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())\n"
        "print(digest.hexdigest())\n"
    )
    root = Path(__file__).resolve().parents[4]  # the repository
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False, cwd=root
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == _state_digest(runner._predictor.model)


def test_checkpoint_from_models_dir_is_loaded(tmp_path: Path, runner: Sam2ImageRunner) -> None:
    seeded = _reference_predictor(123)
    torch.save({"model": seeded.model.state_dict()}, tmp_path / "sam2.1_hiera_tiny.pt")
    settings = _settings(random_weights=False, models_dir=tmp_path, allow_download=False)
    loaded = Sam2ImageRunner.load(MODEL, settings)
    assert _state_digest(loaded._predictor.model) == _state_digest(seeded.model)

    result = loaded.predict(loaded.encode(IMAGE), PROMPTS, True, False)
    seeded.set_image(IMAGE)
    for i, prompt in enumerate(PROMPTS):
        masks, scores, _ = _reference_call(seeded, prompt, True)
        best = int(np.argmax(scores))
        assert np.array_equal(result.masks[i], masks[best])
        assert result.scores[i] == scores[best]
    seed0 = runner.predict(runner.encode(IMAGE), PROMPTS, True, False)
    assert not np.array_equal(result.scores, seed0.scores)


def test_missing_checkpoint_is_unavailable(tmp_path: Path) -> None:
    settings = _settings(random_weights=False, models_dir=tmp_path, allow_download=False)
    with pytest.raises(ModelUnavailableError, match=re.escape(str(tmp_path / "sam2.1_hiera_tiny.pt"))):
        Sam2ImageRunner.load(MODEL, settings)


@pytest.mark.parametrize("content", [b"not a checkpoint", None])
def test_unloadable_checkpoint_is_unavailable(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "sam2.1_hiera_tiny.pt"
    if content is None:
        torch.save({"model": {}}, path)  # a loadable file that is not this model
    else:
        path.write_bytes(content)
    settings = _settings(random_weights=False, models_dir=tmp_path, allow_download=False)
    with pytest.raises(ModelUnavailableError, match=r"cannot be loaded as sam2\.1_hiera_tiny"):
        Sam2ImageRunner.load(MODEL, settings)


def test_a_second_build_is_identical_even_after_hydra_was_cleared(embedding: ImageEmbedding) -> None:
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()  # as a test or another library might leave it
    again = Sam2ImageRunner.load(MODEL, _settings())
    assert GlobalHydra.instance().is_initialized()
    assert torch.equal(again.encode(IMAGE).features["image_embed"], embedding.features["image_embed"])

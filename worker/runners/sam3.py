"""SAM3 plumbing shared by the image runners (``sam3_concept``, ``sam3_tracker``) and the video runners
(``sam3_concept_video``, ``sam3_tracker_video``).

All run Hugging Face ``transformers`` (5.x) models: ``Sam3Model`` (text / exemplar-box concept detection),
``Sam3TrackerModel`` (SAM2-style points and boxes on the SAM3 backbone), and their video forms
``Sam3VideoModel`` (concept detection + tracking) and ``Sam3TrackerVideoModel`` (SAM2-style memory tracking). This
module builds them:

- Real weights: a Hugging Face checkpoint folder, ``<models_dir>/sam3/`` or a hub snapshot of ``facebook/sam3``
  (see :func:`worker.weights.resolve_pretrained_dir`). That checkpoint is a ``sam3_video`` one holding both models;
  each runner loads its own part (the tracker reuses the detector's ViT backbone weights, so two loaded runners hold
  two copies of it; the concept video runner loads the whole checkpoint). A checkpoint that leaves any weight of the
  model uninitialised is refused.
- Random weights (``SAMQ_RANDOM_WEIGHTS``, dev/test only): a SHRUNK configuration of the real architecture (small
  hidden sizes, one or two layers each, :data:`DEFAULT_RANDOM_IMAGE_SIZE` pixels unless ``SAMQ_IMAGE_SIZE`` says
  otherwise; the video models are :data:`VIDEO_WIDTH` wide), initialised after ``torch.manual_seed(settings.seed)``
  so every process gets the same weights, with the genuine CLIP tokenizer built offline from the BPE file that ships
  in the ``open_clip_torch`` wheel.

Input size: SAM3's ViT cuts the image into 14-pixel patches, so it runs at a multiple of 14 (1008 for the released
model). ``settings.image_size`` (shared with SAM2, which wants multiples of 32) is rounded DOWN to a multiple of 14:
``SAMQ_IMAGE_SIZE=256`` runs SAM3 at 252. See :func:`input_size`.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import logging
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError

from tasks.errors import ModelUnavailableError
from worker import torchvision_compat
from worker.settings import WorkerSettings
from worker.weights import resolve_pretrained_dir

# transformers' SAM3 image processor imports torchvision, which fails on CPU machines carrying the CUDA torchvision
# wheel unless the shim is installed first. Keep this call above the transformers imports.
torchvision_compat.install()

from transformers import (  # noqa: E402
    CLIPTextConfig,
    CLIPTokenizer,
    PretrainedConfig,
    Sam3Config,
    Sam3ImageProcessor,
    Sam3TrackerConfig,
    Sam3TrackerVideoConfig,
    Sam3VideoConfig,
    Sam3VisionConfig,
    Sam3ViTConfig,
)
from transformers.models.sam2_video import Sam2VideoVideoProcessor  # noqa: E402

logger = logging.getLogger(__name__)

CHECKPOINT_ID = "sam3"
"""The checkpoint folder (:data:`worker.weights.PRETRAINED_CATALOGUE`) every SAM3 runner loads its weights from."""
PATCH_SIZE = 14
"""Side of the ViT's square patches: SAM3 input sides are multiples of it."""
RELEASED_IMAGE_SIZE = 1008
DEFAULT_RANDOM_IMAGE_SIZE = 224
"""Input side of the shrunk random-weights models when ``settings.image_size`` is unset (a 16x16 patch grid)."""
CLIP_BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
CLIP_VOCAB_SIZE = 49408
_CLIP_MERGES = CLIP_VOCAB_SIZE - 256 - 256 - 2
"""CLIP keeps the first 48,894 merges of the BPE file: 256 byte tokens, their 256 end-of-word forms, the merges, and
the two special tokens make the 49,408-token vocabulary."""
VIDEO_WIDTH = 128
"""Feature width of the shrunk video models (the released model: 256). transformers' memory attention reads
64-channel memories (a hard-coded ``kv_in_dim``) and splits each object pointer into ``width / 64`` memory tokens; it
only stacks them when ``width > 64``, so the width must be a multiple of 64 above 64."""

Part = Literal["detector", "tracker", "video"]
"""What :func:`load_pretrained` reads from a ``sam3_video`` checkpoint: one sub-model, or the whole video model."""


def input_size(settings: WorkerSettings) -> int | None:
    """The SAM3 input side for these settings: ``image_size`` rounded down to a multiple of 14; ``None`` = the
    checkpoint's own (1008) for real weights, :data:`DEFAULT_RANDOM_IMAGE_SIZE` for random ones."""
    if settings.image_size is None:
        return DEFAULT_RANDOM_IMAGE_SIZE if settings.random_weights else None
    size = settings.image_size - settings.image_size % PATCH_SIZE
    if size != settings.image_size:
        logger.info("SAM3 runs at %d px (image_size %d rounded down to a multiple of 14)", size, settings.image_size)
    return size


@functools.cache
def clip_tokenizer() -> CLIPTokenizer:
    """The CLIP BPE tokenizer SAM3's text encoder was trained with, built offline (no hub) from the BPE merges file
    in the ``open_clip_torch`` wheel. Gives the genuine CLIP ids (``<|startoftext|>`` 49406, ``<|endoftext|>``
    49407). The vocabulary and merges are passed as a dict and a list of pairs: ``vocab_file=`` would silently give
    a 2-token vocabulary."""
    spec = importlib.util.find_spec("open_clip")  # located, not imported (open_clip imports torchvision at once)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    paths = [Path(location) / CLIP_BPE_FILE for location in locations]
    path = next((p for p in paths if p.is_file()), None)
    if path is None:
        raise ModelUnavailableError(
            f"the CLIP BPE file {CLIP_BPE_FILE} was not found: install the open_clip_torch package (a samq dependency)"
        )
    lines = gzip.decompress(path.read_bytes()).decode("utf-8").split("\n")
    merges = [(left, right) for left, right in (line.split() for line in lines[1 : _CLIP_MERGES + 1])]
    byte_tokens = list(_bytes_to_unicode().values())
    tokens = [*byte_tokens, *(token + "</w>" for token in byte_tokens), *(left + right for left, right in merges)]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    # transformers annotates merges as strings, but the tokenizers backend only accepts pairs.
    return CLIPTokenizer(vocab={token: i for i, token in enumerate(tokens)}, merges=merges)  # type: ignore[arg-type]


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP's reversible byte → printable character table."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return {byte: chr(code) for byte, code in zip(printable, codes, strict=True)}


def image_processor(size: int) -> Sam3ImageProcessor:
    """SAM3's preprocessing (resize to ``size``², rescale, normalise with mean = std = 0.5, as released)."""
    grid = size // PATCH_SIZE
    return Sam3ImageProcessor(size={"height": size, "width": size}, mask_size={"height": 4 * grid, "width": 4 * grid})


def video_processor(size: int) -> Sam2VideoVideoProcessor:
    """The video preprocessing that SAM3's video processors carry: :func:`image_processor`'s resize and mean = std =
    0.5 normalisation, applied to every frame of a whole video (transformers' non-streaming path)."""
    return Sam2VideoVideoProcessor(size={"height": size, "width": size}, image_mean=[0.5] * 3, image_std=[0.5] * 3)


def shrunk_vision_config(size: int, width: int = 32) -> Sam3VisionConfig:
    """The SAM3 ViT + FPN neck, shrunk (64-wide, 2 layers, 8-patch windows with one global layer; ``width``-wide FPN
    maps) for tests."""
    grid = size // PATCH_SIZE
    backbone = Sam3ViTConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=size,
        window_size=8,
        global_attn_indexes=[1],
        pretrain_image_size=8 * PATCH_SIZE,
    )
    return Sam3VisionConfig(
        backbone_config=backbone,
        fpn_hidden_size=width,
        backbone_feature_sizes=[[4 * grid, 4 * grid], [2 * grid, 2 * grid], [grid, grid]],
    )


def shrunk_concept_config(size: int, width: int = 32) -> Sam3Config:
    """``Sam3Model``'s architecture with every part shrunk (``width``-wide heads); the CLIP text encoder keeps its real
    vocabulary."""
    small = {"hidden_size": width, "num_attention_heads": 2, "intermediate_size": 2 * width}
    return Sam3Config(
        vision_config=shrunk_vision_config(size, width),
        text_config=CLIPTextConfig(
            vocab_size=CLIP_VOCAB_SIZE,
            hidden_size=32,
            intermediate_size=64,
            projection_dim=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=32,
            hidden_act="gelu",
        ),
        geometry_encoder_config={**small, "num_layers": 1},
        detr_encoder_config={**small, "num_layers": 1},
        detr_decoder_config={**small, "num_layers": 1, "num_queries": 32},
        mask_decoder_config={"hidden_size": width, "num_attention_heads": 2},
    )


def shrunk_tracker_config(size: int, width: int = 32) -> Sam3TrackerConfig:
    """``Sam3TrackerModel``'s architecture (SAM3 ViT + SAM2-style prompt encoder and mask decoder), shrunk."""
    return Sam3TrackerConfig(
        vision_config=shrunk_vision_config(size, width),
        prompt_encoder_config={"hidden_size": width, "image_size": size},
        mask_decoder_config=_shrunk_mask_decoder(width),
    )


def _shrunk_mask_decoder(width: int) -> dict[str, int]:
    """The SAM2-style mask decoder of the shrunk trackers."""
    return {"hidden_size": width, "mlp_dim": 2 * width, "num_attention_heads": 2, "iou_head_hidden_dim": width}


def shrunk_tracker_video_config(size: int) -> Sam3TrackerVideoConfig:
    """``Sam3TrackerVideoModel``'s architecture: the shrunk tracker at :data:`VIDEO_WIDTH` plus a one-layer memory
    attention, memory encoder and fuser. The memory bank keeps the released sizes (7 masks, 16 object pointers, 4
    conditioning frames), so sessions prune exactly as they do with the real model."""
    config = Sam3TrackerVideoConfig(
        vision_config=shrunk_vision_config(size, VIDEO_WIDTH),
        prompt_encoder_config={"hidden_size": VIDEO_WIDTH},
        mask_decoder_config=_shrunk_mask_decoder(VIDEO_WIDTH),
        memory_attention_hidden_size=VIDEO_WIDTH,
        memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=2 * VIDEO_WIDTH,
        memory_encoder_hidden_size=VIDEO_WIDTH,
        mask_downsampler_embed_dim=VIDEO_WIDTH,
        memory_fuser_num_layers=1,
        memory_fuser_embed_dim=VIDEO_WIDTH,
        memory_fuser_intermediate_dim=2 * VIDEO_WIDTH,
    )
    _resize(config, size)
    return config


def shrunk_video_config(size: int) -> Sam3VideoConfig:
    """``Sam3VideoModel``'s architecture: the shrunk detector and video tracker at :data:`VIDEO_WIDTH` (the tracker
    reads the detector's backbone through its own neck, so both must be as wide); the released heuristics."""
    return Sam3VideoConfig(
        detector_config=shrunk_concept_config(size, VIDEO_WIDTH),
        tracker_config=shrunk_tracker_video_config(size),
        low_res_mask_size=4 * (size // PATCH_SIZE),
    )


def build_random(model_cls: Any, config: PretrainedConfig, model_id: str, settings: WorkerSettings, device: str) -> Any:
    """``model_cls(config)`` with seeded random weights: the same weights in every process for the same seed."""
    logger.warning(
        "building %s (%s) with RANDOM weights (seed %d): dev/test only", model_id, model_cls.__name__, settings.seed
    )
    torch.manual_seed(settings.seed)  # right before the build
    return model_cls(config).to(device).eval()


def load_pretrained(
    model_cls: Any, config_cls: Any, part: Part, model_id: str, settings: WorkerSettings, size: int | None, device: str
) -> tuple[Any, Path]:
    """Load ``model_cls`` from the checkpoint folder for ``model_id``, at input side ``size`` (``None``: as saved).

    ``part`` picks the sub-configuration of a ``sam3_video`` checkpoint (``facebook/sam3``), which holds both the
    detector and the tracker (``"video"``: the whole checkpoint); a plain ``sam3`` / ``sam3_tracker`` checkpoint is
    used as it is. Raises :class:`ModelUnavailableError` when the folder is missing, unreadable, or does not cover
    every weight.
    """
    directory = resolve_pretrained_dir(model_id, settings)
    try:
        raw, _ = PretrainedConfig.get_config_dict(str(directory))
        sub = raw.get(f"{part}_config") if raw.get("model_type") == "sam3_video" and part != "video" else raw
        if not isinstance(sub, dict):
            raise ValueError(f"{directory / 'config.json'} has no {part}_config")
        config = config_cls.from_dict(sub)
        if size is not None:
            _resize(config, size)
        logger.info("loading %s (%s) from %s on %s", model_id, model_cls.__name__, directory, device)
        model, info = model_cls.from_pretrained(
            str(directory), config=config, dtype=torch.float32, output_loading_info=True, local_files_only=True
        )
    except torch.OutOfMemoryError:
        raise
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as e:
        raise ModelUnavailableError(
            f"the checkpoint in {directory} cannot be loaded as {model_id} ({type(e).__name__}: {e}); replace the "
            "folder in SAMQ_WORKER_MODELS_DIR"
        ) from e
    missing = sorted(info["missing_keys"]) + sorted(key for key, *_ in info["mismatched_keys"])
    if missing:
        raise ModelUnavailableError(
            f"the checkpoint in {directory} lacks {len(missing)} weights of {model_id} ({model_cls.__name__}), e.g. "
            f"{missing[:3]}; replace the folder in SAMQ_WORKER_MODELS_DIR"
        )
    return model.to(device).eval(), directory


def load_processor(processor_cls: Any, directory: Path, model_id: str, size: int | None) -> Any:
    """The checkpoint folder's processor (tokenizer, image preprocessing), resized to ``size`` when given."""
    overrides: dict[str, Any] = {} if size is None else {"size": {"height": size, "width": size}, "target_size": size}
    try:
        return processor_cls.from_pretrained(str(directory), local_files_only=True, **overrides)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelUnavailableError(
            f"the processor files in {directory} cannot be loaded for {model_id} ({type(e).__name__}: {e}); replace "
            "the folder in SAMQ_WORKER_MODELS_DIR"
        ) from e


def _resize(config: Any, size: int) -> None:
    """Set the input side of a ``Sam3Config``, ``Sam3TrackerConfig``, ``Sam3TrackerVideoConfig`` or
    ``Sam3VideoConfig`` (and the feature-map sizes it implies)."""
    grid = size // PATCH_SIZE
    if isinstance(config, Sam3VideoConfig):
        _resize(config.detector_config, size)
        _resize(config.tracker_config, size)
        config.low_res_mask_size = 4 * grid
        return
    if isinstance(config, Sam3TrackerVideoConfig):
        config.image_size = size  # its setter also resizes the feature maps and the memory attention's RoPE grid
        return
    config.vision_config.image_size = size
    config.vision_config.backbone_feature_sizes = [[4 * grid, 4 * grid], [2 * grid, 2 * grid], [grid, grid]]
    prompt_encoder = getattr(config, "prompt_encoder_config", None)
    if prompt_encoder is not None:
        prompt_encoder.image_size = size

"""Direct transformers SAM3 calls (the reference that samq's runners and jobs must equal), on shrunk seeded models."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from worker.runners.sam3 import clip_tokenizer, image_processor, shrunk_concept_config, shrunk_tracker_config

from transformers import Sam3Model, Sam3Processor, Sam3TrackerModel, Sam3TrackerProcessor  # isort: skip  (worker.runners.sam3 installs the torchvision shim)


def reference_concept(seed: int, size: int) -> tuple[Any, Any]:
    """transformers' own model and processor, built directly with the seed a samq worker uses."""
    torch.manual_seed(seed)
    model = Sam3Model(shrunk_concept_config(size)).eval()
    return model, Sam3Processor(image_processor=image_processor(size), tokenizer=clip_tokenizer())


def reference_detect(
    model: Any, processor: Any, image: np.ndarray, prompts: list[dict[str, Any]]
) -> dict[str, np.ndarray]:
    """The documented call per prompt (processor → model → post_process_instance_segmentation at threshold 0),
    merged and ranked by score as the runner ranks (ties: prompt, then model order); boxes clipped to the image."""
    height, width = image.shape[:2]
    scores, boxes, masks, index = [], [], [], []
    for i, prompt in enumerate(prompts):
        inputs = processor(images=image, return_tensors="pt", **prompt)
        with torch.inference_mode():
            outputs = model(**inputs)
        result = processor.post_process_instance_segmentation(
            outputs, threshold=0.0, mask_threshold=0.5, target_sizes=inputs["original_sizes"].tolist()
        )[0]
        scores.append(result["scores"].numpy())
        boxes.append(result["boxes"].numpy())
        masks.append(result["masks"].numpy().astype(bool))
        index.append(np.full(len(result["scores"]), i, np.int64))
    all_scores = np.concatenate(scores)
    order = np.lexsort((np.arange(len(all_scores)), -all_scores))
    clipped = np.clip(np.concatenate(boxes), 0, [width, height, width, height]).astype(np.float32)
    return {
        "scores": all_scores[order],
        "boxes": clipped[order],
        "masks": np.concatenate(masks)[order],
        "prompt_index": np.concatenate(index)[order],
    }


def reference_track(
    seed: int, size: int, image: np.ndarray, prompts: list[dict[str, Any]]
) -> list[tuple[np.ndarray, float]]:
    """Sam3TrackerModel + processor per prompt (multimask), the best mask by predicted IoU and its score."""
    torch.manual_seed(seed)
    model = Sam3TrackerModel(shrunk_tracker_config(size)).eval()
    processor = Sam3TrackerProcessor(image_processor=image_processor(size))
    best = []
    for prompt in prompts:
        points = prompt.get("points", [])
        box = prompt.get("box")
        inputs = processor(
            images=image,
            input_points=[[[[p["x"], p["y"]] for p in points]]] if points else None,
            input_labels=[[[int(p.get("positive", True)) for p in points]]] if points else None,
            input_boxes=[[[box["x0"], box["y0"], box["x1"], box["y1"]]]] if box else None,
            return_tensors="pt",
        )
        with torch.inference_mode():
            outputs = model(**inputs, multimask_output=True)
        masks = processor.post_process_masks(outputs.pred_masks, inputs["original_sizes"])[0][0].numpy()
        scores = outputs.iou_scores[0, 0].numpy()
        i = int(np.argmax(scores))
        best.append((masks[i].astype(bool), float(scores[i])))
    return best

"""Direct transformers SAM3 calls (the reference that samq's runners and jobs must equal), on shrunk seeded models."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from worker.runners.sam3 import (
    clip_tokenizer,
    image_processor,
    shrunk_concept_config,
    shrunk_tracker_config,
    shrunk_tracker_video_config,
    shrunk_video_config,
    video_processor,
)

from transformers import (  # isort: skip  (worker.runners.sam3 installs the torchvision shim)
    Sam3Model,
    Sam3Processor,
    Sam3TrackerModel,
    Sam3TrackerProcessor,
    Sam3TrackerVideoModel,
    Sam3TrackerVideoProcessor,
    Sam3VideoModel,
    Sam3VideoProcessor,
)


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


def reference_tracker_video(seed: int, size: int) -> tuple[Any, Any]:
    """transformers' video tracker and processor, built directly with the seed a samq worker uses."""
    torch.manual_seed(seed)
    model = Sam3TrackerVideoModel(shrunk_tracker_video_config(size))
    model.train(False)
    return model, Sam3TrackerVideoProcessor(
        image_processor=image_processor(size), video_processor=video_processor(size)
    )


def present_tracker_video(seed: int, size: int) -> tuple[Any, Any]:
    """:func:`reference_tracker_video` with a positive bias on the object-score head. Random initialisation leaves
    that score just below 0, so the tracker calls objects absent and their masks are a constant -1024 whatever its
    memory holds: tests could not tell right memory from wrong. Present objects get masks that depend on it."""
    model, processor = reference_tracker_video(seed, size)
    with torch.no_grad():
        model.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(2.0)
    return model, processor


def reference_track_video(
    model: Any,
    processor: Any,
    video: list[np.ndarray],
    prompts: list[tuple[int, int | list[int], dict[str, Any]]],
    stop: int | None = None,
) -> tuple[Any, list[tuple[list[int], np.ndarray, np.ndarray]]]:
    """The documented whole-video call: ``init_video_session(video)``; per ``(frame, obj_ids, inputs)`` prompt,
    ``add_inputs_to_inference_session`` and ``model(session, frame)``; then ``propagate_in_video_iterator`` from the
    first prompted frame (up to frame ``stop``), masks by ``post_process_masks`` > 0. Returns the session and, per
    frame, the object ids, (N, H, W) masks and sigmoid of the object score logits."""
    height, width = video[0].shape[:2]
    session = processor.init_video_session(video=video, inference_device="cpu")
    with torch.inference_mode():
        for frame, obj_ids, inputs in prompts:
            processor.add_inputs_to_inference_session(session, frame_idx=frame, obj_ids=obj_ids, **inputs)
            model(inference_session=session, frame_idx=frame)
    track = None if stop is None else stop - min(frame for frame, _, _ in prompts)
    outputs = model.propagate_in_video_iterator(session, max_frame_num_to_track=track)
    return session, [_tracked(processor, out, height, width) for out in outputs]


def continue_track_video(
    model: Any, processor: Any, session: Any, frame: int, obj_ids: list[int], inputs: dict[str, Any]
) -> list[tuple[list[int], np.ndarray, np.ndarray]]:
    """A prompt added on ``frame`` of a :func:`reference_track_video` session propagated up to it, run there, then
    the rest of the video propagated."""
    height, width = session.video_height, session.video_width
    with torch.inference_mode():
        processor.add_inputs_to_inference_session(session, frame_idx=frame, obj_ids=obj_ids, **inputs)
        first = _tracked(processor, model(inference_session=session, frame_idx=frame), height, width)
    rest = model.propagate_in_video_iterator(session, start_frame_idx=frame + 1)
    return [first, *(_tracked(processor, out, height, width) for out in rest)]


def _tracked(processor: Any, out: Any, height: int, width: int) -> tuple[list[int], np.ndarray, np.ndarray]:
    masks = processor.post_process_masks([out.pred_masks], original_sizes=[[height, width]], binarize=False)[0]
    scores = torch.sigmoid(out.object_score_logits).flatten()
    return list(out.object_ids), (masks[:, 0] > 0).numpy(), scores.numpy()


def concept_video_model(seed: int, size: int) -> tuple[Any, Any]:
    """A shrunk ``Sam3VideoModel`` (seeded like a samq worker's) that finds something with random weights, and its
    processor. Random detection scores sit near 0.25, so the released thresholds (0.5 to keep a detection, 0.7 to
    start a track) keep nothing; here the decoder has one query per phrase and every detection counts, so each
    frame starts a track per phrase unless it overlaps one, and transformers' hotstart removes most of them again."""
    config = shrunk_video_config(size)
    detector: Any = config.detector_config
    detector.detr_decoder_config.num_queries = 1
    config.score_threshold_detection = 0.0
    config.new_det_thresh = 0.0
    torch.manual_seed(seed)
    model = Sam3VideoModel(config)
    model.train(False)
    processor = Sam3VideoProcessor(
        image_processor=image_processor(size), video_processor=video_processor(size), tokenizer=clip_tokenizer()
    )
    return model, processor


def reference_concept_video(model: Any, processor: Any, video: list[np.ndarray], phrases: list[str]) -> list[Any]:
    """The documented whole-video call: ``init_video_session(video)`` → ``add_text_prompt`` →
    ``propagate_in_video_iterator``, each output post-processed as it comes (``postprocess_outputs``)."""
    session = processor.init_video_session(video=video, inference_device="cpu")
    processor.add_text_prompt(session, phrases)
    return [processor.postprocess_outputs(session, out) for out in model.propagate_in_video_iterator(session)]

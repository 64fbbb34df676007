"""The concept runner contract: every instance of a phrase (and/or of exemplar boxes) on one image.

A concept runner encodes an image once (``encode`` → a :class:`Sam3Embedding`) and runs any number of
:class:`ConceptQuery` against it (``detect`` → :class:`ConceptInstances`, whose masks are upsampled lazily, a few
at a time). ``Sam3ConceptRunner`` (``worker.runners.sam3_concept``) implements it.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt
import torch

from worker.results import expect_shape
from worker.runners.device import inference
from worker.runners.image import Encoder
from worker.runners.sam3_selection import upsample_masks

EMBEDDING_FORMAT = "samq.sam3_concept_embedding/1"


@dataclass(frozen=True)
class ConceptQuery:
    """One concept prompt: a phrase, exemplar boxes (original-image pixels, XYXY), or both.

    ``box_labels[i]`` says whether ``boxes[i]`` is a positive (True) or negative (False) exemplar. A query without
    text but with boxes runs with the text ``"visual"``, as transformers does.
    """

    text: str | None = None
    boxes: Sequence[tuple[float, float, float, float]] = field(default_factory=list)
    box_labels: Sequence[bool] = field(default_factory=list)
    threshold: float = 0.5

    def __post_init__(self) -> None:
        if self.text is not None and not self.text.strip():
            raise ValueError("a query's text must not be blank")
        if self.text is None and not self.boxes:
            raise ValueError("a query needs a text, exemplar boxes, or both")
        if len(self.box_labels) != len(self.boxes):
            raise ValueError(f"{len(self.boxes)} boxes but {len(self.box_labels)} box labels")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be within [0, 1], got {self.threshold}")


@dataclass(frozen=True)
class ConceptInstances:
    """N detected instances on one image, best score first. Masks are produced lazily, ``chunk_size`` at a time.

    - ``logits``: (N, r, r) low-res mask logits of the kept instances, on the runner's device (small: 100 × 288²
      floats is 33 MB); :meth:`iter_masks` upsamples them to the image in chunks, so the full-size masks of a job
      never need to exist at once (100 masks of a 4000×3000 image would be 1.2 GB as bool, 4.8 GB as float).
    - ``scores``: (N,) float32, detection scores in [0, 1].
    - ``boxes``: (N, 4) float32 XYXY original-image pixels, as predicted by the model (clipped to the image; not
      derived from the masks, so a box may differ slightly from its mask's extent).
    - ``prompt_index``: (N,) int64, the query that found each instance (its label is that query's text).
    """

    logits: torch.Tensor
    scores: npt.NDArray[np.float32]
    boxes: npt.NDArray[np.float32]
    prompt_index: npt.NDArray[np.int64]
    image_hw: tuple[int, int]
    device: str
    chunk_size: int = 8

    def __post_init__(self) -> None:
        count = int(self.logits.shape[0])
        if self.logits.ndim != 3 or self.logits.shape[1] != self.logits.shape[2]:
            raise ValueError(f"logits must be (N, r, r), got {tuple(self.logits.shape)}")
        expect_shape(self.scores, "scores", np.float32, 1, (count,))
        expect_shape(self.boxes, "boxes", np.float32, 2, (count, 4))
        expect_shape(self.prompt_index, "prompt_index", np.int64, 1, (count,))

    def __len__(self) -> int:
        return int(self.logits.shape[0])

    def iter_masks(self) -> Iterator[npt.NDArray[np.bool_]]:
        """Each instance's (H, W) bool mask in order, upsampled ``chunk_size`` at a time (sigmoid, bilinear, > 0.5:
        transformers' post-processing; channels are independent, so chunking does not change a mask)."""
        for start in range(0, len(self), self.chunk_size):
            with inference(self.device):
                block = upsample_masks(self.logits[start : start + self.chunk_size], self.image_hw).cpu().numpy()
            yield from block

    @property
    def masks(self) -> npt.NDArray[np.bool_]:
        """All masks as one (N, H, W) array: for small images and tests; jobs stream :meth:`iter_masks`."""
        return np.stack(list(self.iter_masks())) if len(self) else np.zeros((0, *self.image_hw), dtype=bool)


@dataclass(frozen=True)
class Sam3Embedding:
    """One image's SAM3 vision features (the FPN maps, 4 levels), enough to run any query without the image.

    ``nbytes``: tensor memory (about 113 MB in fp32 for the released 1008-pixel model). Position encodings are not
    stored: they depend only on the map sizes and are recomputed.
    """

    fpn_hidden_states: tuple[torch.Tensor, ...]
    orig_hw: tuple[int, int]
    nbytes: int

    @classmethod
    def create(cls, fpn_hidden_states: Sequence[torch.Tensor], orig_hw: tuple[int, int]) -> Sam3Embedding:
        maps = tuple(fpn_hidden_states)
        nbytes = sum(t.numel() * t.element_size() for t in maps)
        return cls(fpn_hidden_states=maps, orig_hw=(int(orig_hw[0]), int(orig_hw[1])), nbytes=nbytes)

    def to_bytes(self) -> bytes:
        """Serialize (CPU copies of) the tensors with ``torch.save``, for the shared cache tier."""
        payload = {
            "format": EMBEDDING_FORMAT,
            "fpn_hidden_states": [t.detach().cpu() for t in self.fpn_hidden_states],
            "orig_hw": list(self.orig_hw),
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, device: torch.device | str = "cpu") -> Sam3Embedding:
        """Inverse of :meth:`to_bytes` (``weights_only`` loading: no code runs). ``ValueError`` if unreadable."""
        try:
            payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            if payload["format"] != EMBEDDING_FORMAT:
                raise ValueError(f"format {payload['format']!r}")
            maps = list(payload["fpn_hidden_states"])
            height, width = (int(v) for v in payload["orig_hw"])
        except (RuntimeError, pickle.UnpicklingError, EOFError, OSError, KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not a serialized SAM3 concept embedding: {e}") from e
        if not maps or not all(isinstance(t, torch.Tensor) and t.dim() == 4 for t in maps):
            raise ValueError("not a serialized SAM3 concept embedding: 4-d tensors expected")
        return cls.create([t.to(device) for t in maps], (height, width))


class ConceptRunner(Encoder[Sam3Embedding], Protocol):
    """Phrases and exemplar boxes → every instance (``Sam3ConceptRunner``)."""

    def detect(
        self, embedding: Sam3Embedding, queries: Sequence[ConceptQuery], *, max_detections: int, nms_iou: float | None
    ) -> ConceptInstances: ...

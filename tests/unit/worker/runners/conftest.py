"""The SAM3 image runners (shrunk, seeded random weights), built once per session for the concept and tracker tests.
(``test_sam3_video.py`` defines its own ``tracker`` and ``concept``: the video runners.)"""

from __future__ import annotations

import pytest

from tests.support.sam3_images import IMAGE, KEEP_ALL, PHRASES, sam3_settings
from worker.runners.concept import ConceptInstances, ConceptQuery, Sam3Embedding
from worker.runners.image import ImageEmbedding
from worker.runners.sam3_concept import Sam3ConceptRunner
from worker.runners.sam3_tracker import Sam3TrackerRunner


@pytest.fixture(scope="session")
def concept() -> Sam3ConceptRunner:
    return Sam3ConceptRunner.load("sam3", sam3_settings())


@pytest.fixture(scope="session")
def concept_embedding(concept: Sam3ConceptRunner) -> Sam3Embedding:
    return concept.encode(IMAGE)


@pytest.fixture(scope="session")
def tracker() -> Sam3TrackerRunner:
    return Sam3TrackerRunner.load("sam3", sam3_settings())


@pytest.fixture(scope="session")
def tracker_embedding(tracker: Sam3TrackerRunner) -> ImageEmbedding:
    return tracker.encode(IMAGE)


@pytest.fixture(scope="session")
def full_result(concept: Sam3ConceptRunner, concept_embedding: Sam3Embedding) -> ConceptInstances:
    queries = [ConceptQuery(text, threshold=0.0) for text in PHRASES]
    return concept.detect(concept_embedding, queries, max_detections=KEEP_ALL, nms_iou=None)

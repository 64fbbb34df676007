"""The SAM3 video trackers, as the registry loads them (:func:`worker.registry.load_video_runner`).

- ``"sam3_tracker"``: :class:`~worker.runners.sam3_tracker_video.Sam3TrackerVideoRunner`, objects seeded by boxes
  and points (transformers' ``Sam3TrackerVideoModel``).
- ``"sam3"``: :class:`~worker.runners.sam3_concept_video.Sam3ConceptVideoRunner`, every instance of text phrases
  (transformers' ``Sam3VideoModel``).

Both feed transformers' inference sessions one lazily decoded frame at a time, prune what the model can no longer
read after every frame, and snapshot the rest so that a resumed session gives identical results.
"""

from worker.runners.sam3_concept_video import Sam3ConceptVideoRunner, Sam3ConceptVideoSession
from worker.runners.sam3_tracker_video import Sam3TrackerVideoRunner, Sam3TrackerVideoSession

__all__ = ["Sam3ConceptVideoRunner", "Sam3ConceptVideoSession", "Sam3TrackerVideoRunner", "Sam3TrackerVideoSession"]

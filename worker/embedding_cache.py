"""In-process LRU of image embeddings, bounded by their total size in bytes.

Keys are opaque strings chosen by the caller (e.g. model id + image size + image content hash: embeddings of
different models can have the same shapes, so the model id must be part of the key). The shared tier (object
storage, via the embeddings' ``to_bytes``) is wired by the pipeline, not here.
Not thread-safe: one job runs at a time per worker process.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Generic, Protocol

from typing_extensions import TypeVar

if TYPE_CHECKING:
    from worker.runners.image import ImageEmbedding


class SizedEmbedding(Protocol):
    """Anything cacheable: an embedding that knows its tensor memory (``ImageEmbedding``, ``Sam3Embedding``)."""

    @property
    def nbytes(self) -> int: ...


E = TypeVar("E", bound=SizedEmbedding, default="ImageEmbedding")


class EmbeddingCache(Generic[E]):
    """Least-recently-used embeddings whose ``nbytes`` sum to at most ``max_bytes``.

    Generic in the embedding type; a bare ``EmbeddingCache`` holds SAM2 / SAM3-tracker ``ImageEmbedding``s. One
    cache for several kinds: ``EmbeddingCache[ImageEmbedding | Sam3Embedding]``.
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, E] = OrderedDict()
        self._bytes = 0

    def get(self, key: str) -> E | None:
        """The cached embedding (now the most recently used), or ``None``."""
        embedding = self._items.get(key)
        if embedding is not None:
            self._items.move_to_end(key)
        return embedding

    def put(self, key: str, embedding: E) -> None:
        """Cache ``embedding`` under ``key``, evicting the least recently used ones to make room.

        An embedding larger than the whole budget is not cached (and a stale entry under ``key`` is dropped).
        """
        self.discard(key)
        if embedding.nbytes > self.max_bytes:
            return
        self._items[key] = embedding
        self._bytes += embedding.nbytes
        while self._bytes > self.max_bytes:
            _, evicted = self._items.popitem(last=False)
            self._bytes -= evicted.nbytes

    def discard(self, key: str) -> None:
        """Forget ``key`` if it is cached."""
        embedding = self._items.pop(key, None)
        if embedding is not None:
            self._bytes -= embedding.nbytes

    def clear(self) -> None:
        self._items.clear()
        self._bytes = 0

    @property
    def nbytes(self) -> int:
        """Total ``nbytes`` of the cached embeddings."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

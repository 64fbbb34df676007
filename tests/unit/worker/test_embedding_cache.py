from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from worker.embedding_cache import EmbeddingCache


def _embedding(nbytes: int) -> Any:
    return SimpleNamespace(nbytes=nbytes)


def test_get_returns_what_was_put() -> None:
    cache = EmbeddingCache(100)
    embedding = _embedding(10)
    cache.put("a", embedding)
    assert cache.get("a") is embedding
    assert cache.get("b") is None
    assert "a" in cache
    assert len(cache) == 1
    assert cache.nbytes == 10


def test_evicts_least_recently_used_to_stay_within_budget() -> None:
    cache = EmbeddingCache(100)
    for key in "abc":
        cache.put(key, _embedding(30))
    assert cache.get("a") is not None  # a is now the most recently used
    cache.put("d", _embedding(30))  # 120 > 100: evict b (oldest)
    assert "b" not in cache
    assert all(k in cache for k in "acd")
    assert cache.nbytes == 90
    cache.put("e", _embedding(70))  # needs 60 more bytes: evict c then a
    assert [k for k in "acde" if k in cache] == ["d", "e"]
    assert cache.nbytes == 100


def test_an_item_larger_than_the_budget_is_not_cached() -> None:
    cache = EmbeddingCache(100)
    cache.put("small", _embedding(40))
    cache.put("huge", _embedding(101))
    assert "huge" not in cache
    assert "small" in cache
    assert cache.nbytes == 40


def test_replacing_a_key_accounts_bytes_once() -> None:
    cache = EmbeddingCache(100)
    cache.put("a", _embedding(60))
    cache.put("a", _embedding(50))
    assert cache.nbytes == 50
    assert len(cache) == 1
    cache.put("a", _embedding(500))  # too big: the stale entry goes too
    assert "a" not in cache
    assert cache.nbytes == 0


def test_exact_budget_fits_and_zero_budget_caches_nothing() -> None:
    cache = EmbeddingCache(100)
    cache.put("a", _embedding(100))
    assert "a" in cache
    empty = EmbeddingCache(0)
    empty.put("a", _embedding(1))
    assert len(empty) == 0


def test_discard_and_clear() -> None:
    cache = EmbeddingCache(100)
    cache.put("a", _embedding(10))
    cache.put("b", _embedding(20))
    cache.discard("a")
    cache.discard("missing")
    assert cache.nbytes == 20
    cache.clear()
    assert len(cache) == 0
    assert cache.nbytes == 0


def test_negative_budget_is_refused() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        EmbeddingCache(-1)

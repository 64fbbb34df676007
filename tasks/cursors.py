"""Cursors of the job listing (``GET /v1/jobs?cursor=``): the creation time (unix seconds, in decimal) of the last
job of the page, where the next page starts. Opaque to clients; every string the pattern admits is a valid one,
so the OpenAPI schema says exactly what the server accepts."""

from __future__ import annotations

import re

from tasks.errors import InvalidCursorError

CURSOR_PATTERN = r"^[0-9]{1,20}(\.[0-9]{1,20})?$"


def encode_cursor(score: str) -> str:
    """``score``: a sorted-set score as Redis answers it (``repr`` of a float: creation times are plain decimals)."""
    if not re.fullmatch(CURSOR_PATTERN, score):
        score = f"{float(score):.6f}"
    return score


def decode_cursor(cursor: str) -> float:
    if not re.fullmatch(CURSOR_PATTERN, cursor):
        raise InvalidCursorError(f"invalid cursor {cursor!r}")
    return float(cursor)

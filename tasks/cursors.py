"""Opaque cursors of the job listing (``GET /v1/jobs?cursor=``): the score where the next page starts."""

from __future__ import annotations

import base64
import math

from tasks.errors import InvalidCursorError


def encode_cursor(score: str) -> str:
    return base64.urlsafe_b64encode(score.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> float:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        score = float(base64.urlsafe_b64decode(padded.encode()).decode())
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidCursorError(f"invalid cursor {cursor!r}") from e
    if math.isnan(score):  # Redis refuses "(nan" as a range bound
        raise InvalidCursorError(f"invalid cursor {cursor!r}")
    return score

"""Reading a finished job's result files as a client does: by their presigned URLs."""

from __future__ import annotations

import urllib.request
from typing import Any


def download(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        data: bytes = response.read()
        return data


def files_of(job: dict[str, Any]) -> dict[str, str]:
    """Result file name → its URL."""
    return {f["name"]: f["url"] for f in job["result"]["files"]}

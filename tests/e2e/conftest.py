"""The browser pages' deployment: a real stack (Redis, ``samq api``, one worker on every queue, local storage) with
API keys, so that the pages' key handling (``#key=…``, ``Authorization: Bearer``) is what runs; and a headless
Chromium."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.webdriver.remote.webdriver import WebDriver

from samq.embedded import redis_server
from tests.support.browser import chromium
from tests.support.stack import Stack, local_storage_env, stack_env

VIEWER_KEYS = {
    "viewer": "key-viewer",
    "clicker": "key-clicker",
    "exporter": "key-exporter",
    "other": "key-other",
}
"""Tenants of the pages' tests (each sees only its own jobs), and one that owns nothing."""


class Api:
    """The HTTP API as one tenant calls it (plain httpx: what is tested is the server and the pages)."""

    def __init__(self, url: str, key: str) -> None:
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=90)

    def get(self, path: str) -> Any:
        response = self.http.get(path)
        response.raise_for_status()
        return response.json()

    def upload(self, data: bytes, content_type: str) -> str:
        response = self.http.post("/v1/uploads", content=data, headers={"Content-Type": content_type})
        response.raise_for_status()
        return str(response.json()["id"])

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        response = self.http.post("/v1/jobs", json=body)
        response.raise_for_status()
        return self.wait(response.json()["id"])

    def wait(self, job_id: str, timeout: float = 300) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (job := self.get(f"/v1/jobs/{job_id}"))["status"] not in ("succeeded", "failed", "canceled"):
            assert time.monotonic() < deadline, f"job {job_id} still {job['status']}"
            time.sleep(0.2)
        return dict(job)


@pytest.fixture(scope="session")
def pages_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("pages-stack")
    keys = ",".join(f"{tenant}:{key}" for tenant, key in VIEWER_KEYS.items())
    with redis_server(root / "redis", appendonly=False) as redis_url:
        env = stack_env(redis_url, {**local_storage_env(root / "objects"), "SAMQ_API_KEYS": keys})
        stack = Stack(redis_url, env, logs=root)
        try:
            stack.start_api()
            stack.start_worker()
            yield stack
        finally:
            stack.stop()


@pytest.fixture
def downloads(tmp_path: Path) -> Path:
    folder = tmp_path / "downloads"
    folder.mkdir()
    return folder


@pytest.fixture
def browser(downloads: Path) -> Iterator[WebDriver]:
    with chromium(downloads) as driver:
        yield driver

from __future__ import annotations

import sys
from typing import Any

from worker.registry import ModelRegistry
from worker.settings import WorkerSettings


class _Loader:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, model_id: str, settings: WorkerSettings) -> Any:
        self.calls.append(model_id)
        return object()


def test_nothing_loads_until_first_use_then_stays_warm() -> None:
    loader = _Loader()
    registry = ModelRegistry(WorkerSettings(random_weights=True), loader=loader)
    assert loader.calls == []
    first = registry.get("sam2.1_hiera_tiny")
    assert registry.get("sam2.1_hiera_tiny") is first
    assert loader.calls == ["sam2.1_hiera_tiny"]
    assert "sam2.1_hiera_tiny" in registry


def test_least_recently_used_model_is_unloaded() -> None:
    loader = _Loader()
    registry = ModelRegistry(WorkerSettings(random_weights=True), loader=loader, max_models=2)
    registry.get("tiny")
    registry.get("small")
    registry.get("tiny")
    registry.get("large")  # evicts small
    assert registry.loaded() == ["tiny", "large"]
    registry.get("small")
    assert loader.calls == ["tiny", "small", "large", "small"]


def test_importing_the_registry_does_not_import_sam2() -> None:
    import subprocess

    code = "import sys, worker.registry; print('sam2' in sys.modules, 'torchvision' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.split() == ["False", "False"]

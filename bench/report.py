"""What every section prints with: percentiles, units, verdicts, the machine it ran on, table heads."""

from __future__ import annotations

import math
import os
import platform
from pathlib import Path
from typing import Any

GB = 1e9


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0–100), linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def ms(value: float) -> str:
    return f"{value:.1f} ms" if value < 1000 else f"{value / 1000:.2f} s"


def gb(value: float) -> str:
    return f"{value / GB:.3f} GB"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def load_average() -> str:
    """The 1/5/15-minute load averages, ``a/b/c``; other busy processes on these CPUs inflate every timing."""
    try:
        return "/".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def hardware() -> dict[str, Any]:
    """The CPU, torch and CUDA device this run measures (recorded under ``"hardware"`` in the JSON)."""
    import torch  # heavy: imported when measuring, not when the package is imported

    model_name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model_name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cuda = torch.cuda.is_available()
    return {
        "cpu": model_name,
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda_device": torch.cuda.get_device_name(0) if cuda else None,
        "python": platform.python_version(),
    }


def hardware_line(hw: dict[str, Any]) -> str:
    device = hw["cuda_device"] or "none (CPU)"
    return (
        f"- hardware: {hw['cpu']}, {hw['cpus_usable']}/{hw['cpu_count']} CPUs usable; torch {hw['torch']} with "
        f"{hw['torch_threads']} threads (default; SAMQ_WORKER_TORCH_THREADS unset); CUDA device: {device}"
    )


def print_title(hw: dict[str, Any]) -> None:
    """The run's title without the segment section's settings (which print their own, longer header)."""
    print("# samq benchmark")
    print()
    print(hardware_line(hw))
    print(f"- python {hw['python']}; load average (1/5/15 min) at start: {load_average()}")
    print(flush=True)


def print_table_head(title: str) -> None:
    """A section's results heading and the head of its metric/value/target/verdict table."""
    print(f"## {title}")
    print()
    print("| metric | value | target | pass/fail |")
    print("|---|---|---|---|")

"""The Roboflow section: what a blocking Roboflow-compatible call costs over the same native job, and the server
under many such calls at once.

(c1) ``/sam2/segment_image`` with a remembered ``image_id`` (the embedding is cached in the worker) against the same
     native ``segment`` job (``POST /v1/jobs``, ``Prefer: wait``), interleaved: the compat call's overhead.
(c2) ``--roboflow-calls`` (default 64) compat calls at once, each its own prompt, while one client polls
     ``GET /v1/jobs/{id}`` in a loop. Targets: every call answers 200; the polls' p99 ≤ 100 ms.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from bench.jobs import IMAGE_H, IMAGE_W, WAIT_SECONDS, BenchError, require_succeeded, synthetic_jpeg
from bench.report import load_average, ms, pct, print_table_head, verdict
from samq.client import Client
from tests.support.stack import Stack

POLL_P99_TARGET_MS = 100.0
IMAGE_ID = "bench-image"


@dataclass(frozen=True)
class RoboflowOptions:
    model: str
    repeats: int
    calls: int
    rounds: int


def measure_roboflow(options: RoboflowOptions, stack: Stack, hw: dict[str, Any]) -> dict[str, Any]:
    """(c1) and (c2) on the stack's ``interactive`` worker; prints the tables, returns the raw numbers."""
    client = Client(stack.api_url, timeout=WAIT_SECONDS + 10)
    version = options.model.removeprefix("sam2.1_").replace("base_plus", "b_plus")
    image = synthetic_jpeg(seed=7)
    started = time.perf_counter()
    embed = _call(stack, "/sam2/embed_image", {"image": _b64(image), "image_id": IMAGE_ID, "sam2_version_id": version})
    print(f"## Roboflow-compatible calls ({options.model})")
    print()
    print(
        f"- warm-up: /sam2/embed_image of a {IMAGE_W}×{IMAGE_H} JPEG as image_id {IMAGE_ID!r} "
        f"(model load + encode) {ms((time.perf_counter() - started) * 1000)}; then every call sends that image_id "
        "and one point, format rle; the native jobs name the same image by its content hash",
        flush=True,
    )
    [embed_job] = client.request("GET", "/v1/jobs?limit=1")["data"]
    content_hash = embed_job["result"]["summary"]["image_id"]
    compat, native = _interleaved(stack, client, options, version, content_hash)
    idle = []
    for _ in range(100):  # the floor: the same poll with nothing else running
        t0 = time.perf_counter()
        client.get(embed_job["id"])
        idle.append((time.perf_counter() - t0) * 1000)
    rounds = [_load_round(stack, client, version, options.calls, embed_job["id"], r) for r in range(options.rounds)]
    polls = [p for r in rounds for p in r["poll_ms"]]
    all_ok = all(r["ok"] == options.calls for r in rounds)
    poll_p99 = pct(polls, 99)
    overhead = pct(compat, 50) - pct(native, 50)
    print()
    print_table_head("Results")
    print(f"| (c1) compat call p50 (p90) | {ms(pct(compat, 50))} ({ms(pct(compat, 90))}) | | |")
    print(f"| (c1) same native job, Prefer: wait, p50 (p90) | {ms(pct(native, 50))} ({ms(pct(native, 90))}) | | |")
    print(f"| (c1) compat overhead (p50 difference) | {ms(overhead)} | | |")
    for r in rounds:
        print(
            f"| (c2) round {r['round']}: {options.calls} calls at once | {r['ok']} answered 200 in "
            f"{ms(r['wall_ms'])} (call p50 {ms(pct(r['call_ms'], 50))}, max {ms(max(r['call_ms']))}) "
            f"| all 200 | {verdict(r['ok'] == options.calls)} |"
        )
    print(
        f"| (c2) job-status GET during the calls, p50 / p99 ({len(polls)} polls) | {ms(pct(polls, 50))} / "
        f"{ms(poll_p99)} | p99 ≤ {POLL_P99_TARGET_MS:.0f} ms | {verdict(poll_p99 <= POLL_P99_TARGET_MS)} |"
    )
    print(f"| (c2) the same GET with nothing else running, p50 / p99 | {ms(pct(idle, 50))} / {ms(pct(idle, 99))} | | |")
    print()
    print(f"Load average (1/5/15 min) at the end: {load_average()} on {hw['cpus_usable']} CPUs.")
    return {
        "settings": {"model": options.model, "repeats": options.repeats, "calls": options.calls, "embed": embed},
        "c1": {"compat_ms": compat, "native_ms": native, "overhead_p50_ms": overhead},
        "c2": {
            "rounds": rounds,
            "poll_p50_ms": pct(polls, 50),
            "poll_p99_ms": poll_p99,
            "all_ok": all_ok,
            "idle_poll_ms": idle,
        },
    }


def _interleaved(
    stack: Stack, client: Client, options: RoboflowOptions, version: str, content_hash: str
) -> tuple[list[float], list[float]]:
    compat: list[float] = []
    native: list[float] = []
    for i in range(options.repeats + 3):  # the first three warm both paths up
        x, y = 300 + i % 40 * 10, 300 + i // 40 * 10
        body = {
            "image_id": IMAGE_ID,
            "sam2_version_id": version,
            "format": "rle",
            "prompts": [{"points": [{"x": x, "y": y, "positive": True}]}],
        }
        job = {
            "type": "segment",
            "model": options.model,
            "image": {"image_id": content_hash},
            "prompts": [{"points": [{"x": x, "y": y}]}],
        }
        started = time.perf_counter()
        _call(stack, "/sam2/segment_image", body)
        compat_ms = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        require_succeeded(client.submit(job, wait=WAIT_SECONDS))
        native_ms = (time.perf_counter() - started) * 1000
        if i >= 3:
            compat.append(compat_ms)
            native.append(native_ms)
    print(f"(c1): {options.repeats} compat calls and {options.repeats} native jobs, interleaved", flush=True)
    return compat, native


def _load_round(stack: Stack, client: Client, version: str, calls: int, poll_id: str, index: int) -> dict[str, Any]:
    """``calls`` compat calls at once (distinct prompts: no two share a job) and a poller until they are done."""
    done = threading.Event()
    poll_ms: list[float] = []

    def poll() -> None:
        while not done.is_set():
            started = time.perf_counter()
            client.get(poll_id)
            poll_ms.append((time.perf_counter() - started) * 1000)
            time.sleep(0.02)

    def one(i: int) -> float:
        body = {
            "image_id": IMAGE_ID,
            "sam2_version_id": version,
            "format": "rle",
            "prompts": [{"points": [{"x": 100 + i * 7 % 800, "y": 100 + index * 50 + i % 5, "positive": True}]}],
        }
        started = time.perf_counter()
        _call(stack, "/sam2/segment_image", body)
        return (time.perf_counter() - started) * 1000

    poller = threading.Thread(target=poll)
    poller.start()
    started = time.perf_counter()
    try:
        with ThreadPoolExecutor(max_workers=calls) as pool:
            outcomes = list(pool.map(_attempt(one), range(calls)))
    finally:
        done.set()
        poller.join()
    wall_ms = (time.perf_counter() - started) * 1000
    call_ms = [o for o in outcomes if isinstance(o, float)]
    errors = [o for o in outcomes if isinstance(o, str)]
    print(f"(c2) round {index}: {len(call_ms)}/{calls} answered 200 in {ms(wall_ms)}", flush=True)
    return {
        "round": index,
        "ok": len(call_ms),
        "errors": errors[:5],
        "wall_ms": wall_ms,
        "call_ms": call_ms,
        "poll_ms": poll_ms,
    }


def _attempt(function: Any) -> Any:
    def attempt(i: int) -> float | str:
        try:
            return float(function(i))
        except Exception as e:  # a failed call is counted, not raised: the round reports how many answered 200
            return f"{type(e).__name__}: {e}"

    return attempt


def _call(stack: Stack, route: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        stack.api_url + route, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=600) as response:
        if response.status != 200:
            raise BenchError(f"{route} answered {response.status}")
        answer: dict[str, Any] = json.loads(response.read())
        return answer


def _b64(data: bytes) -> dict[str, str]:
    import base64

    return {"type": "base64", "value": base64.b64encode(data).decode()}

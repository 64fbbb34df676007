"""A worker killed outright (kill -9 of parent and child) loses no job, and a job that always kills its worker
ends ``failed`` at the attempt cap instead of looping."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from samq.client import Client
from tests.support.images import b64, png_bytes, scene
from tests.support.stack import Stack

FULL_SIZE = {"SAMQ_IMAGE_SIZE": "1024"}  # hiera_tiny at 1024: seconds of work, a wide window to kill it in


def submit_slow_job(client: Client) -> str:
    job = client.submit(
        {
            "type": "segment",
            "image": {"base64": b64(png_bytes(scene(640, 480)))},
            "prompts": [{"points": [{"x": 300, "y": 200}]}],
        }
    )
    return str(job["id"])


def wait_for_attempt(
    client: Client, job_id: str, attempt: int, seen: list[str], timeout: float = 120
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(job_id)
        seen.append(job["status"])
        if job["status"] == "running" and job["attempts"] == attempt:
            return job
        assert job["status"] not in ("succeeded", "failed", "canceled"), job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never ran attempt {attempt}; saw {seen[-5:]}")


def result_objects(root: Path, job_id: str) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and job_id in p.parts)


def test_kill_9_mid_job_is_picked_up_by_a_new_worker_and_succeeds_once(bare_stack: Stack) -> None:
    client = bare_stack.client
    first = bare_stack.start_worker("interactive", FULL_SIZE)
    job_id = submit_slow_job(client)
    seen: list[str] = []
    wait_for_attempt(client, job_id, 1, seen)
    bare_stack.kill_worker(first)

    bare_stack.start_worker("interactive", FULL_SIZE)
    restarted = time.monotonic()
    done = client.wait(job_id, timeout=120, interval=0.05, on_update=lambda j: seen.append(j["status"]))
    picked_up_within = time.monotonic() - restarted

    assert done["status"] == "succeeded", done["error"]
    assert done["attempts"] == 2
    assert picked_up_within < 60, f"took {picked_up_within:.1f}s (the visibility timeout is far longer)"
    # Allowed path only: queued → running → (queued again when reaped) → running → succeeded.
    collapsed = [s for i, s in enumerate(seen) if i == 0 or seen[i - 1] != s]
    assert collapsed[-1] == "succeeded"
    assert set(collapsed) <= {"queued", "running", "succeeded"}
    objects = Path(bare_stack.env["SAMQ_STORAGE_DIR"])
    files = result_objects(objects, job_id)
    assert files == [f"default/jobs/{job_id}/low_res_logits.npy", f"default/jobs/{job_id}/result.json"]

    time.sleep(3 * float(bare_stack.env["SAMQ_REAP_INTERVAL_SECONDS"]) + float(bare_stack.env["SAMQ_LEASE_SECONDS"]))
    later = client.get(job_id)
    assert (later["status"], later["attempts"], later["finished_at"]) == ("succeeded", 2, done["finished_at"])


def test_a_job_that_kills_its_worker_every_time_fails_at_the_attempt_cap(bare_stack: Stack) -> None:
    client = bare_stack.client
    max_attempts = int(bare_stack.env["SAMQ_MAX_ATTEMPTS"])
    worker = bare_stack.start_worker("interactive", FULL_SIZE)
    job_id = submit_slow_job(client)
    seen: list[str] = []
    for attempt in range(1, max_attempts + 1):  # the test plays an OOM killer that strikes every attempt
        wait_for_attempt(client, job_id, attempt, seen)
        bare_stack.kill_worker(worker)
        worker = bare_stack.start_worker("interactive", FULL_SIZE)  # its reaper finds the lapsed lease
    done = client.wait(job_id, timeout=60)

    assert done["status"] == "failed"
    assert done["error"]["code"] == "worker_lost"
    assert done["attempts"] == max_attempts
    time.sleep(3 * float(bare_stack.env["SAMQ_REAP_INTERVAL_SECONDS"]))
    assert client.get(job_id)["status"] == "failed"

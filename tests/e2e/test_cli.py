"""The CLI as a user runs it: ``samq up`` (the embedded default), ``samq submit --wait``, ``samq demo``."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from samq.embedded import MODEL_QUEUES, free_port
from tests.support.images import png_bytes, scene
from tests.support.stack import model_env

SAMQ = [sys.executable, "-m", "samq.cli"]


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAMQ_")}
    return {**env, **model_env(), "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def samq_up(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str, Path]]:
    port = free_port()
    data_dir = tmp_path / "data"
    process = subprocess.Popen(
        [*SAMQ, "up", "--port", str(port), "--data-dir", str(data_dir)],
        env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    deadline = time.monotonic() + 120
    for line in process.stdout:
        if "samq is up at" in line:
            break
        assert time.monotonic() < deadline, "samq up did not come up"
    else:
        pytest.fail(f"samq up exited with {process.wait()}")
    supervised = psutil.Process(process.pid).children(recursive=True)
    try:
        yield process, f"http://127.0.0.1:{port}", data_dir
    finally:
        if process.poll() is None:  # stopped as a user stops it, so that it stops its children
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for child in supervised:  # whatever a supervisor that did not stop cleanly left behind
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()


def test_samq_up_serves_submit_and_stops_everything_on_sigterm(
    samq_up: tuple[subprocess.Popen[str], str, Path], tmp_path: Path
) -> None:
    process, url, data_dir = samq_up
    children = psutil.Process(process.pid).children(recursive=True)
    assert any("redis-server" in " ".join(c.cmdline()) for c in children)
    image = tmp_path / "scene.png"
    image.write_bytes(png_bytes(scene()))

    submit = subprocess.run(
        [*SAMQ, "submit", str(image), "--point", "120,118", "--point", "10,10,neg", "--box", "60,60,200,180",
         "--wait", "--url", url],
        env=cli_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert submit.returncode == 0, submit.stderr
    assert "succeeded" in submit.stdout
    result_line = next(line for line in submit.stdout.splitlines() if line.startswith("result: "))
    with urllib.request.urlopen(result_line.removeprefix("result: "), timeout=10) as response:
        document = json.loads(response.read())
    assert document["image"] == {"width": 320, "height": 240, "image_id": document["image"]["image_id"]}
    assert len(document["instances"]) == 1
    assert list((data_dir / "objects" / "default" / "jobs").iterdir()), "results are stored under the data dir"

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    time.sleep(0.5)
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]


def workers(up: psutil.Process) -> list[psutil.Process]:
    """The model workers ``samq up`` runs (not the io worker, nor the ones that already died)."""
    found = []
    for child in up.children():
        with contextlib.suppress(psutil.Error):  # a dead one may be a zombie until samq up reaps it
            if MODEL_QUEUES in child.cmdline() and child.status() != psutil.STATUS_ZOMBIE:
                found.append(child)
    return found


def test_samq_up_restarts_its_worker_and_takes_everything_with_it_when_killed(
    samq_up: tuple[subprocess.Popen[str], str, Path], tmp_path: Path
) -> None:
    process, url, _ = samq_up
    up = psutil.Process(process.pid)
    [worker] = workers(up)
    worker.send_signal(signal.SIGKILL)  # the worker dies (OOM killer, say): samq up starts another
    deadline = time.monotonic() + 30
    while not [c for c in workers(up) if c.pid != worker.pid]:
        assert time.monotonic() < deadline, "samq up did not restart its worker"
        time.sleep(0.2)
    image = tmp_path / "scene.png"
    image.write_bytes(png_bytes(scene()))
    submit = subprocess.run(
        [*SAMQ, "submit", str(image), "--point", "120,118", "--wait", "--url", url],
        env=cli_env(), capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert submit.returncode == 0 and "succeeded" in submit.stdout, submit.stdout + submit.stderr

    children = up.children(recursive=True)
    assert any("redis-server" in " ".join(c.cmdline()) for c in children)
    process.send_signal(signal.SIGKILL)  # samq up itself dies without a chance to stop anything
    process.wait(10)
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not [c for c in alive if c.status() != psutil.STATUS_ZOMBIE], [c.cmdline() for c in alive]


def test_samq_demo_runs_the_main_job_and_stops(tmp_path: Path) -> None:
    demo = subprocess.run(
        [*SAMQ, "demo", "--port", str(free_port()), "--data-dir", str(tmp_path / "data")],
        env=cli_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "succeeded" in demo.stdout
    assert "instance 0: score" in demo.stdout
    assert "stopping samq" in demo.stdout


def test_samq_batch_uploads_a_folder_shows_progress_and_downloads_the_export(
    samq_up: tuple[subprocess.Popen[str], str, Path], tmp_path: Path
) -> None:
    _, url, _ = samq_up
    folder = tmp_path / "dataset"
    for i in range(6):
        (folder / f"part{i % 2}").mkdir(parents=True, exist_ok=True)
        (folder / f"part{i % 2}" / f"{i}.png").write_bytes(png_bytes(scene(96 + 16 * i, 80, seed=i)))
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"

    batch = subprocess.run(
        [*SAMQ, "batch", str(folder), "--text", "red car", "--url", url, "--out", str(out)],
        env=cli_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip

    assert batch.returncode == 0, batch.stdout + batch.stderr
    assert "succeeded" in batch.stdout
    assert "6/6" in batch.stderr and "items/s" in batch.stderr  # the progress line
    from pycocotools.coco import COCO

    coco = COCO(str(out / "coco.json"))
    assert sorted(img["file_name"] for img in coco.imgs.values()) == sorted(f"part{i % 2}/{i}.png" for i in range(6))
    for ann in coco.anns.values():
        image = coco.imgs[ann["image_id"]]
        assert coco.annToMask(ann).shape == (image["height"], image["width"])
        assert coco.cats[ann["category_id"]]["name"] == "red car"
    document = json.loads((out / "result.json").read_text())
    assert (document["total"], document["succeeded"], document["failed"]) == (6, 6, 0)
    assert len((out / "items.jsonl").read_text().splitlines()) == 6

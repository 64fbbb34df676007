"""The CLI as a user runs it: ``samq up`` (the embedded default), ``samq submit --wait``, ``samq demo``."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import psutil
import pytest
from PIL import Image

from samq import samples
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
        env=cli_env(), capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "succeeded" in demo.stdout
    assert "instance 0: score" in demo.stdout
    assert "stopping samq" in demo.stdout
    [picture] = tmp_path.glob("samq-demo-job_*.png")
    assert f"annotated picture: {picture}" in demo.stdout
    with Image.open(picture) as annotated:
        assert annotated.size == (400, 300)
        assert not np.array_equal(np.asarray(annotated.convert("RGB")), samples.scene())  # the mask is drawn
    job_id = picture.stem.removeprefix("samq-demo-")
    assert re.search(rf"viewer: http://127\.0\.0\.1:\d+/view/jobs/{job_id}", demo.stdout)


def test_samq_samples_writes_the_readmes_media(tmp_path: Path) -> None:
    written = subprocess.run([*SAMQ, "samples", str(tmp_path / "s")], env=cli_env(), capture_output=True, text=True)
    assert written.returncode == 0, written.stderr
    assert len(written.stdout.splitlines()) == 10
    with Image.open(tmp_path / "s" / "scene.png") as scene_png:
        assert scene_png.size == (400, 300)
    with av.open(str(tmp_path / "s" / "clip.mp4")) as clip:
        frames = [frame.to_ndarray(format="rgb24") for frame in clip.decode(video=0)]
    assert len(frames) == 20 and frames[0].shape == (240, 320, 3)
    red = [abs(int(frame[55, 75, 0]) - 220) < 25 for frame in frames[:8]]
    assert red == [False, False, False, True, True, True, True, True]  # x 75 is inside 20+6k..60+6k from k=3


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


def run_in_tmux(tmp_path: Path, argv: list[str], columns: int = 80, timeout: float = 300) -> str:
    """Run ``argv`` in a detached tmux pane ``columns`` wide (a real terminal: rich draws live there) and return
    the pane's text once it exits, wrapped lines joined (``capture-pane -J``), so a wrapped line shows as longer
    than the pane."""
    script = tmp_path / "run.sh"
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in cli_env().items() if k.isidentifier())
    script.write_text(f"{exports}cd {shlex.quote(str(tmp_path))}\n{shlex.join(argv)}\necho EXIT=$?\nsleep 600\n")
    tmux = ["tmux", "-L", f"samq-test-{os.getpid()}", "-f", "/dev/null"]
    subprocess.run([*tmux, "new-session", "-d", "-x", str(columns), "-y", "50", f"bash {script}"], check=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            screen = subprocess.run(
                [*tmux, "capture-pane", "-p", "-J", "-S", "-200"], capture_output=True, text=True, check=True
            ).stdout
            if "EXIT=" in screen:
                return screen
            assert time.monotonic() < deadline, f"still running after {timeout} s:\n{screen}"
            time.sleep(0.5)
    finally:
        subprocess.run([*tmux, "kill-server"], check=False)


def test_batch_progress_fits_an_80_column_terminal_and_is_a_line_per_change_in_a_pipe(
    samq_up: tuple[subprocess.Popen[str], str, Path], tmp_path: Path
) -> None:
    _, url, _ = samq_up
    folder = tmp_path / "dataset"
    folder.mkdir()
    for i in range(8):
        (folder / f"{i}.png").write_bytes(png_bytes(scene(160, 120, seed=i)))
    argv = [*SAMQ, "batch", str(folder), "--box", "20,20,120,100", "--url", url]

    screen = run_in_tmux(tmp_path, [*argv, "--out", str(tmp_path / "tty")])
    lines = [line.rstrip() for line in screen.splitlines() if line.strip()]
    assert "EXIT=0" in lines, screen
    bars = [line for line in lines if "/s " in line]
    assert [bar.split()[0] for bar in bars] == ["uploading", "succeeded"], screen  # redrawn in place: no stale copies
    assert all(len(bar) <= 80 and "8/8" in bar for bar in bars), screen  # fitted to the width: nothing wrapped

    piped = subprocess.run(
        [*argv, "--out", str(tmp_path / "piped")], env=cli_env(), capture_output=True, text=True, timeout=300
    )
    assert piped.returncode == 0, piped.stderr
    assert "\r" not in piped.stderr and "\x1b" not in piped.stderr  # plain text: no redraws, no colours
    job_lines = [line for line in piped.stderr.splitlines() if line.startswith("job_")]
    assert job_lines and len(job_lines) == len(set(job_lines)), piped.stderr  # one line per change
    assert job_lines[-1].split()[1:3] == ["succeeded", "8/8"], piped.stderr
    assert [line for line in piped.stderr.splitlines() if line.startswith("upload ")][-1].startswith(
        "upload uploading 8/8 files"
    )


def test_ls_get_cancel_and_view_a_job(samq_up: tuple[subprocess.Popen[str], str, Path], tmp_path: Path) -> None:
    _, url, _ = samq_up
    image = tmp_path / "scene.png"
    image.write_bytes(png_bytes(scene()))

    def samq(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*SAMQ, *args, "--url", url], env=cli_env(), capture_output=True, text=True, timeout=120)

    submitted = samq("submit", str(image), "--box", "60,60,200,180", "--wait")
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.split()[1]

    listed = samq("ls", "--type", "segment")
    assert listed.returncode == 0 and listed.stdout.splitlines()[0].split("\t")[:3] == [job_id, "segment", "succeeded"]
    as_json = [json.loads(line) for line in samq("ls", "--json", "--limit", "5").stdout.splitlines()]
    assert [job["id"] for job in as_json] == [job_id]

    got = samq("get", job_id, "--out", str(tmp_path / "out"))
    assert got.returncode == 0 and json.loads(got.stdout)["id"] == job_id
    downloaded = json.loads((tmp_path / "out" / "result.json").read_text())
    assert len(downloaded["instances"]) == 1

    canceled = samq("cancel", job_id)
    assert canceled.returncode == 1 and "succeeded" in canceled.stderr  # it had ended: 409, said plainly

    view = samq("view", job_id)
    assert view.returncode == 0, view.stderr
    assert view.stdout.strip().startswith(url) and job_id in view.stdout
    with urllib.request.urlopen(view.stdout.strip(), timeout=10) as page:
        assert page.status == 200 and "text/html" in page.headers["Content-Type"]

    bad = samq("get", "job_doesnotexist")
    assert bad.returncode == 1 and "job_not_found" in bad.stderr

"""README.md's code blocks, run as written and in order, as a reader would paste them into a terminal: the quick
start, then ``samq up`` (the README's own server, in the background) and every block after it against that server.

A block is left out only where a marker just above it says why, with one of :data:`SKIPS`. Shell blocks run under
``bash -euo pipefail``, so a failing command fails the test; Python blocks run in the project's environment (or,
marked ``roboflow-sdk``, in ``.venv-roboflow`` with Roboflow's own client).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from samq.embedded import free_port
from tests.support.stack import model_env

ROOT = Path(__file__).resolve().parents[2]
MARKER = re.compile(r"<!-- readme-test: (?P<kind>[a-z-]+) \((?P<why>[^)]+)\) -->")
SKIPS = {
    "skip-docker": "needs Docker (and a GPU host)",
    "skip-ci": "the commands .ci/run runs itself",
    "skip-bench": "a benchmark, run by hand",
    "skip-lock": "rewrites the locks",
    "skip-fragment": "a Python fragment of a receiver (not a shell block)",
}
RUNNERS = {"bash", "python"}


@dataclass(frozen=True)
class Block:
    line: int
    language: str
    body: str
    kind: str | None  # the marker's kind, if any

    def __str__(self) -> str:
        return f"README.md:{self.line} ({self.language}{', ' + self.kind if self.kind else ''})"


def blocks(text: str) -> list[Block]:
    """Every fenced block, with the marker on the line just above it (blank lines between allowed)."""
    found, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        if lines[i].startswith("```"):
            language = lines[i][3:].strip()
            start, i = i, i + 1
            while not lines[i].startswith("```"):
                i += 1
            above = next((line for line in reversed(lines[:start]) if line.strip()), "")
            marker = MARKER.fullmatch(above.strip())
            found.append(Block(start + 1, language, "\n".join(lines[start + 1 : i]), marker and marker["kind"]))
        i += 1
    return found


def test_every_shell_block_runs_or_says_why_not() -> None:
    """The rule itself: no unmarked block is skipped, and a skip is one of the allowed reasons."""
    found = blocks((ROOT / "README.md").read_text())
    assert sum(b.language == "bash" for b in found) >= 10
    for block in found:
        if block.kind is not None:
            assert block.kind in {*SKIPS, "background", "roboflow-sdk"}, block
        if block.kind == "skip-fragment":
            assert block.language == "python", block
        if block.kind == "background":
            assert block.body.strip() == ".venv/bin/samq up", block


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """Where the reader stands: a directory whose ``.venv`` and ``scripts`` are the checkout's."""
    for name in (".venv", "scripts"):
        (tmp_path / name).symlink_to(ROOT / name)
    return tmp_path


@pytest.fixture
def environment() -> dict[str, str]:
    """A reader's environment with SAMQ_RANDOM_WEIGHTS exported (no weights here), on a free port."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAMQ_")}
    return (
        env
        | model_env()
        | {
            "SAMQ_API_PORT": str(port),
            "SAMQ_URL": f"http://127.0.0.1:{port}",
            "SAMQ_WORKER_TORCH_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )


def test_the_readme_runs_as_written(workdir: Path, environment: dict[str, str]) -> None:
    server: subprocess.Popen[bytes] | None = None
    ran: list[str] = []
    try:
        for block in blocks((ROOT / "README.md").read_text()):
            if block.language not in RUNNERS or block.kind in SKIPS:
                continue
            if block.kind == "background":
                server = start(block, workdir, environment)
            else:
                run(block, workdir, environment)
            ran.append(str(block))
    finally:
        if server is not None:
            stop(server)
    assert len(ran) >= 12, ran
    assert (workdir / "labels" / "coco.json").is_file()  # what the README's last job wrote


def run(block: Block, cwd: Path, env: dict[str, str]) -> None:
    if block.language == "bash":
        argv = ["bash", "-euo", "pipefail", "-c", block.body]
    elif block.kind == "roboflow-sdk":
        argv = [str(ROOT / ".venv-roboflow" / "bin" / "python"), "-c", block.body]
    else:
        argv = [str(cwd / ".venv" / "bin" / "python"), "-c", block.body]
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (
        f"{block} exited {done.returncode}\n{block.body}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    )


def start(block: Block, cwd: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A block that runs until stopped (``samq up``), in the background like a second terminal (its output in
    ``background.log``); ready when it says so."""
    log = cwd / "background.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["bash", "-c", block.body], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + 120
    while "samq is up at" not in log.read_text(errors="replace"):
        assert process.poll() is None, f"{block} exited with {process.returncode}:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"{block} did not come up:\n{log.read_text()}"
        time.sleep(0.2)
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    """Ctrl-C, as the README says; then whatever is left goes."""
    os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

"""``samq``: the user's door.

``up`` (the embedded default), ``api``, ``worker``, ``submit`` (one image), ``batch`` (a directory of images or
videos, or an ``s3://`` prefix: uploads, a progress bar, the export downloaded), ``wait``, ``demo``.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import mimetypes
import os
import signal
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any, TextIO

from api.client import TERMINAL, Client, ClientError
from api.embedded import ALL_QUEUES, StartupError

DEFAULT_URL = "http://127.0.0.1:8000"
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".mkv", ".webm", ".avi"})


class UsageError(Exception):
    """The command line asks for something that cannot be done (exit code 2)."""


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except UsageError as e:
        print(f"samq: {e}", file=sys.stderr)
        return 2
    except (ClientError, StartupError, OSError) as e:
        print(f"samq: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="samq", description="Asynchronous Segment Anything service.")
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="run Redis, one worker and the API locally (the embedded default)")
    up.add_argument("--port", type=int, default=8000)
    up.add_argument("--data-dir", type=Path, default=Path("samq-data"))
    up.set_defaults(run=cmd_up)

    api = commands.add_parser("api", help="serve the HTTP API (waitress)")
    api.add_argument("--host", default=None, help="default SAMQ_API_HOST (127.0.0.1)")
    api.add_argument("--port", type=int, default=None, help="default SAMQ_API_PORT (8000)")
    api.set_defaults(run=cmd_api)

    worker = commands.add_parser("worker", help="run a Celery worker (one process per GPU; CPU works too)")
    worker.add_argument(
        "--queues",
        default=ALL_QUEUES,
        help=f"comma-separated, default all: {ALL_QUEUES} (io delivers webhooks: some worker must take it)",
    )
    worker.add_argument("--concurrency", type=int, default=1)
    worker.add_argument("--loglevel", default="INFO")
    worker.set_defaults(run=cmd_worker)

    for name, helptext in (("submit", "segment an image"), ("demo", "samq up + a sample segment job, then stop")):
        sub = commands.add_parser(name, help=helptext)
        if name == "submit":
            sub.add_argument("image", type=Path)
            sub.add_argument("--url", default=os.environ.get("SAMQ_URL", DEFAULT_URL))
            sub.add_argument("--wait", action="store_true", help="wait for the job and show progress")
        else:
            sub.add_argument("--port", type=int, default=8000)
            sub.add_argument("--data-dir", type=Path, default=Path("samq-data"))
        _geometry_args(sub)
        sub.add_argument("--model", default="sam2.1_hiera_tiny")
        sub.add_argument("--api-key", default=os.environ.get("SAMQ_API_KEY"))
        sub.set_defaults(run=cmd_submit if name == "submit" else cmd_demo)

    batch = commands.add_parser(
        "batch", help="one prompt over a directory of images or videos (or an s3:// prefix); downloads the export"
    )
    batch.add_argument(
        "source", metavar="DIR_OR_PREFIX", help="a local directory (walked recursively) or s3://bucket/prefix"
    )
    batch.add_argument(
        "--text", action="append", default=[], help="a phrase (repeatable): SAM3 concepts on images, tracked in videos"
    )
    _geometry_args(batch)
    batch.add_argument(
        "--model", help="default sam3 with --text, else sam2.1_hiera_tiny (images) or sam2.1_hiera_small (videos)"
    )
    batch.add_argument(
        "--video", action="store_true", help="take videos (automatic for a directory with videos and no images)"
    )
    batch.add_argument("--threshold", type=float, help="score threshold of --text on images (server default 0.5)")
    batch.add_argument("--max-failure-rate", type=float, default=0.05, help="fail the batch above this (default 0.05)")
    batch.add_argument("--no-export", action="store_true", help="no coco.json (image batches export COCO by default)")
    batch.add_argument("--out", type=Path, help="where the result files go (default ./samq-batch-<job id>)")
    batch.add_argument("--no-wait", action="store_true", help="print the job id and exit")
    batch.add_argument("--url", default=os.environ.get("SAMQ_URL", DEFAULT_URL))
    batch.add_argument("--api-key", default=os.environ.get("SAMQ_API_KEY"))
    batch.set_defaults(run=cmd_batch)

    wait = commands.add_parser("wait", help="wait for a job and print it")
    wait.add_argument("job_id")
    wait.add_argument("--url", default=os.environ.get("SAMQ_URL", DEFAULT_URL))
    wait.add_argument("--api-key", default=os.environ.get("SAMQ_API_KEY"))
    wait.set_defaults(run=cmd_wait)
    return parser


def _geometry_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--point", action="append", default=[], help="x,y or x,y,neg (repeatable)")
    parser.add_argument("--box", help="x0,y0,x1,y1 in pixels")


def cmd_up(args: argparse.Namespace) -> int:
    from api.embedded import embedded

    _exit_on_sigterm()
    with embedded(args.data_dir, args.port) as (url, supervisor):
        print(f"samq is up at {url}  (data in {args.data_dir.resolve()}; Ctrl-C stops)", flush=True)
        try:
            while (exited := supervisor.first_exit()) is None:
                time.sleep(0.5)
        except KeyboardInterrupt:
            print("stopping…", flush=True)
            return 0
    name, code = exited
    print(f"samq: {name} exited with code {code}; stopped everything", file=sys.stderr)
    return 1


def cmd_api(args: argparse.Namespace) -> int:
    import waitress

    from api.app import create_app
    from api.auth import Tenants, check_binding
    from api.services import build_services
    from api.settings import ApiSettings

    settings = ApiSettings()
    host, port = args.host or settings.host, args.port or settings.port
    check_binding(host, Tenants.from_settings(settings))
    app = create_app(build_services(api=settings))
    _exit_on_sigterm()
    print(f"samq API on http://{host}:{port}", flush=True)
    waitress.serve(app, host=host, port=port, threads=settings.threads, ident="samq")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    # sam2's video predictor draws a tqdm bar per video; tqdm reads this when it is first imported (below).
    os.environ.setdefault("TQDM_DISABLE", "1")
    from worker.celery_app import create_celery

    app = create_celery()
    app.worker_main(
        [
            "worker",
            "--queues", args.queues,
            "--concurrency", str(args.concurrency),
            "--pool", "prefork",  # keeps time limits and max-memory-per-child; solo/threads lose them
            "--loglevel", args.loglevel,
            "--hostname", f"samq-{os.getpid()}@%h",
            "--without-gossip", "--without-mingle",
        ]
    )  # fmt: skip
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    client = Client(args.url, args.api_key)
    upload = client.upload(
        args.image.read_bytes(), mimetypes.guess_type(args.image.name)[0] or "application/octet-stream"
    )
    job = client.submit(_segment_job(args, {"upload": upload["id"]}))
    print(f"submitted {job['id']} ({args.url}/v1/jobs/{job['id']})", flush=True)
    if not args.wait:
        return 0
    return _follow(client, job["id"])


def cmd_wait(args: argparse.Namespace) -> int:
    return _follow(Client(args.url, args.api_key), args.job_id)


def cmd_demo(args: argparse.Namespace) -> int:
    """Start the embedded default, segment a generated sample image, print where the result is, stop."""
    from api.embedded import embedded

    _exit_on_sigterm()
    with embedded(args.data_dir, args.port) as (url, _):
        print(f"samq is up at {url}", flush=True)
        client = Client(url, args.api_key)
        upload = client.upload(_sample_image(), "image/png")
        if not args.point and not args.box:
            args.point, args.box = ["200,150"], "120,90,280,210"
        job = client.submit(_segment_job(args, {"upload": upload["id"]}))
        print(f"submitted {job['id']}", flush=True)
        code = _follow(client, job["id"])
        if code == 0:
            result = client.result(job["id"])
            for instance in result["instances"]:
                print(
                    f"  instance {instance['index']}: score {instance['score']:.3f} bbox {instance['bbox']} area {instance['area']}"
                )
        print("stopping samq", flush=True)
        return code


def cmd_batch(args: argparse.Namespace) -> int:
    s3 = args.source.startswith("s3://")
    root = Path(args.source)
    files, video = ([], args.video) if s3 else media_files(root, args.video)
    template = batch_template(args, video)  # before any upload: a bad prompt costs nothing
    client = Client(args.url, args.api_key)
    inputs = {"s3_prefix": args.source} if s3 else upload_inputs(client, root, files, StatusLine(sys.stderr))
    job = client.submit(batch_job(args, template, inputs))
    if args.no_wait:
        print(job["id"])
        return 0
    print(f"submitted {job['id']}", flush=True)
    try:
        job = watch_batch(client, job["id"], StatusLine(sys.stderr))
    except KeyboardInterrupt:
        print(f"\njob continues on the server: samq wait {job['id']}", file=sys.stderr)
        return 130
    return _batch_outcome(client, job, args.out or Path(f"samq-batch-{job['id']}"))


def media_files(root: Path, video: bool) -> tuple[list[Path], bool]:
    """The images (or videos) under ``root``, recursively, sorted by relative path, hidden files skipped; and
    whether they are videos: with ``video``, or when ``root`` holds videos and no images."""
    if not root.is_dir():
        raise UsageError(f"{root}: not a directory (nor an s3:// prefix)")
    found = sorted(
        (p.relative_to(root).as_posix(), p)
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    images = [p for _, p in found if p.suffix.lower() in IMAGE_SUFFIXES]
    videos = [p for _, p in found if p.suffix.lower() in VIDEO_SUFFIXES]
    video = video or (not images and bool(videos))
    if not (videos if video else images):
        kinds = VIDEO_SUFFIXES if video else IMAGE_SUFFIXES | VIDEO_SUFFIXES
        raise UsageError(f"{root}: no media files ({' '.join(sorted(kinds))})")
    return (videos if video else images), video


def batch_template(args: argparse.Namespace, video: bool) -> dict[str, Any]:
    """The job each item runs, from --text (concepts) or --box/--point (visual prompts), for images or videos."""
    if bool(args.text) == bool(args.box or args.point):
        raise UsageError("batch: give --text PHRASE or --box/--point (not both)")
    if args.threshold is not None and (video or not args.text):
        raise UsageError("batch: --threshold applies to --text on images")
    if args.text and video:
        return {"type": "track", "model": args.model or "sam3", "concepts": args.text}
    if args.text:
        threshold = {} if args.threshold is None else {"threshold": args.threshold}
        return {
            "type": "concept",
            "model": args.model or "sam3",
            "prompts": [{"text": t} for t in args.text],
            **threshold,
        }
    if video:
        return {
            "type": "track",
            "model": args.model or "sam2.1_hiera_small",
            "objects": [{"id": 1, "frame": 0, **_prompt(args)}],
        }
    return {"type": "segment", "model": args.model or "sam2.1_hiera_tiny", "prompts": [_prompt(args)]}


def batch_job(args: argparse.Namespace, template: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """The batch request; COCO export unless --no-export or tracking (track results are per video)."""
    export = [] if args.no_export or template["type"] == "track" else ["coco"]
    return {
        "type": "batch",
        "template": template,
        "inputs": inputs,
        "max_failure_rate": args.max_failure_rate,
        "export": export,
    }


def upload_inputs(client: Client, root: Path, files: list[Path], status: StatusLine) -> dict[str, Any]:
    """Upload every file, then a JSONL manifest naming each by its posix path relative to ``root``."""
    meter, lines = RateMeter(), []
    for done, path in enumerate(files, 1):
        upload = client.upload(path.read_bytes(), mimetypes.guess_type(path.name)[0] or "application/octet-stream")
        lines.append(json.dumps({"upload": upload["id"], "name": path.relative_to(root).as_posix()}) + "\n")
        meter.add(time.monotonic(), done)
        status.show(f"uploading {progress_line(done, len(files), meter.rate, unit='files')}", final=done == len(files))
    manifest = client.upload("".join(lines).encode(), "application/x-ndjson")
    return {"manifest": {"upload": manifest["id"]}}


def watch_batch(client: Client, job_id: str, status: StatusLine) -> dict[str, Any]:
    """Poll the job until it is terminal, drawing its progress line."""
    meter = RateMeter()

    def show(job: dict[str, Any]) -> None:
        progress = job["progress"]
        meter.add(time.monotonic(), progress["done"])
        line = progress_line(progress["done"], progress["total"], meter.rate, _failed(job))
        status.show(f"{job['status']:<9} {line}", final=job["status"] in TERMINAL)

    return client.wait(job_id, timeout=math.inf, interval=0.5, on_update=show)


def _failed(job: dict[str, Any]) -> int | None:
    """Failed items so far, where the job says (its progress while running, its summary at the end)."""
    summary = (job["result"] or {}).get("summary", {})
    failed = job["progress"].get("failed", summary.get("failed"))
    return failed if isinstance(failed, int) else None


def _batch_outcome(client: Client, job: dict[str, Any], out: Path) -> int:
    """Print the outcome and download the result files worth having locally (a failed batch's too)."""
    print(f"{job['id']}: {job['status']}")
    if job["error"]:
        print(f"error: {job['error']['code']}: {job['error']['message']}", file=sys.stderr)
    result = job["result"] or {"files": []}
    if "summary" in result:
        print(f"summary: {json.dumps(result['summary'])}")
    files = {file["name"]: file for file in result["files"]}
    for name in ("result.json", "items.jsonl", "coco.json"):  # result.json lists every failure
        if name in files:
            out.mkdir(parents=True, exist_ok=True)
            client.download(files[name]["url"], out / name)
            print(f"  {out / name}")
    return 0 if job["status"] == "succeeded" else 1


class RateMeter:
    """Progress per second over the samples of the last ``window`` seconds (not since the start)."""

    def __init__(self, window: float = 10.0) -> None:
        self.window = window
        self._samples: deque[tuple[float, int]] = deque()

    def add(self, at: float, done: int) -> None:
        self._samples.append((at, done))
        while len(self._samples) > 2 and at - self._samples[1][0] >= self.window:
            self._samples.popleft()  # the oldest kept sample is the last one at least a window old

    @property
    def rate(self) -> float | None:
        """None until two samples apart in time."""
        (t0, d0), (t1, d1) = self._samples[0], self._samples[-1]
        return (d1 - d0) / (t1 - t0) if t1 > t0 else None


def progress_line(
    done: int, total: int, rate: float | None, failed: int | None = None, width: int = 30, unit: str = "items"
) -> str:
    """``[#####.....] 12/40 items  3.20 items/s  ETA 0:00:09  1 failed``."""
    filled = min(width, width * done // total) if total > 0 else 0
    eta = max(total - done, 0) / rate if rate and rate > 0 and total > 0 else None
    speed = "--" if rate is None else f"{rate:.2f}" if rate < 10 else f"{rate:.0f}"
    line = f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {unit}  {speed} {unit}/s  ETA {format_eta(eta)}"
    return line if failed is None else f"{line}  {failed} failed"


def format_eta(seconds: float | None) -> str:
    """H:MM:SS, or ``--:--`` when unknown."""
    if seconds is None:
        return "--:--"
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02}:{s % 60:02}"


class StatusLine:
    """One status line on ``stream``: redrawn in place on a terminal; elsewhere (logs, pipes) printed as plain
    lines, at most one per ``every`` seconds, and always the final one."""

    def __init__(self, stream: TextIO, every: float = 5.0) -> None:
        self._stream, self._every = stream, every
        self._tty = stream.isatty()
        self._last, self._width = -math.inf, 0

    def show(self, line: str, final: bool = False) -> None:
        if self._tty:
            self._stream.write(f"\r{line.ljust(self._width)}" + ("\n" if final else ""))
            self._width = 0 if final else len(line)
        elif final or time.monotonic() - self._last >= self._every:
            self._stream.write(line + "\n")
            self._last = time.monotonic()
        self._stream.flush()


def _segment_job(args: argparse.Namespace, image: dict[str, str]) -> dict[str, Any]:
    return {"type": "segment", "model": args.model, "image": image, "prompts": [_prompt(args)]}


def _prompt(args: argparse.Namespace) -> dict[str, Any]:
    """--point/--box as one prompt (a segment prompt, or a tracked object's seed)."""
    prompt: dict[str, Any] = {"points": [_point(p) for p in args.point]}
    if args.box:
        try:
            x0, y0, x1, y1 = (float(v) for v in args.box.split(","))
        except ValueError as e:
            raise UsageError(f"--box {args.box!r}: expected x0,y0,x1,y1") from e
        prompt["box"] = {"x0": x0, "y0": y0, "x1": x1, "y1": y1}
    return prompt


def _point(text: str) -> dict[str, Any]:
    parts = text.split(",")
    try:
        if len(parts) < 2 or parts[2:] not in ([], ["pos"], ["neg"]):
            raise ValueError(text)
        return {"x": float(parts[0]), "y": float(parts[1]), "positive": parts[2:] != ["neg"]}
    except ValueError as e:
        raise UsageError(f"--point {text!r}: expected x,y or x,y,neg") from e


def _follow(client: Client, job_id: str) -> int:
    def show(job: dict[str, Any]) -> None:
        progress = job["progress"]
        print(
            f"\r{job_id}: {job['status']:<9} {progress['done']}/{progress['total']} {progress['unit']}",
            end="",
            flush=True,
        )

    job = client.wait(job_id, on_update=show)
    print(flush=True)
    if job["status"] != "succeeded":
        print(json.dumps(job["error"] or {"status": job["status"]}, indent=2), file=sys.stderr)
        return 1
    result = job["result"]
    print(f"result: {result['url']}")
    for file in result["files"]:
        print(f"  {file['name']} ({file['bytes']} bytes): {file['url']}")
    print(f"summary: {json.dumps(result['summary'])}")
    return 0


def _sample_image() -> bytes:
    """A 400×300 synthetic scene (an ellipse and a square on a gradient): something to segment offline."""
    import numpy as np
    from PIL import Image

    height, width = 300, 400
    yy, xx = np.mgrid[0:height, 0:width]
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[..., 0] = (xx * 255 // width).astype(np.uint8)
    pixels[..., 2] = (yy * 255 // height).astype(np.uint8)
    pixels[((xx - 200) / 80) ** 2 + ((yy - 150) / 60) ** 2 <= 1] = (240, 200, 30)
    pixels[40:100, 300:360] = (30, 200, 90)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def _exit_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so the children are stopped by the same ``finally``."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


if __name__ == "__main__":
    sys.exit(main())

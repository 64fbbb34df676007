"""``samq``: the user's door. ``up`` (embedded default), ``api``, ``worker``, ``submit``, ``wait``, ``demo``."""

from __future__ import annotations

import argparse
import io
import json
import mimetypes
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from api.client import Client, ClientError
from api.embedded import ALL_QUEUES, StartupError

DEFAULT_URL = "http://127.0.0.1:8000"


def main(argv: list[str] | None = None) -> int:
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
        sub.add_argument("--point", action="append", default=[], help="x,y or x,y,neg (repeatable)")
        sub.add_argument("--box", help="x0,y0,x1,y1 in pixels")
        sub.add_argument("--model", default="sam2.1_hiera_tiny")
        sub.add_argument("--api-key", default=os.environ.get("SAMQ_API_KEY"))
        sub.set_defaults(run=cmd_submit if name == "submit" else cmd_demo)

    wait = commands.add_parser("wait", help="wait for a job and print it")
    wait.add_argument("job_id")
    wait.add_argument("--url", default=os.environ.get("SAMQ_URL", DEFAULT_URL))
    wait.add_argument("--api-key", default=os.environ.get("SAMQ_API_KEY"))
    wait.set_defaults(run=cmd_wait)

    args = parser.parse_args(argv)
    try:
        code: int = args.run(args)
    except (ClientError, StartupError) as e:
        print(f"samq: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


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


def _segment_job(args: argparse.Namespace, image: dict[str, str]) -> dict[str, Any]:
    prompt: dict[str, Any] = {"points": [_point(p) for p in args.point]}
    if args.box:
        x0, y0, x1, y1 = (float(v) for v in args.box.split(","))
        prompt["box"] = {"x0": x0, "y0": y0, "x1": x1, "y1": y1}
    return {"type": "segment", "model": args.model, "image": image, "prompts": [prompt]}


def _point(text: str) -> dict[str, Any]:
    parts = text.split(",")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("neg", "pos")):
        raise SystemExit(f"--point {text!r}: expected x,y or x,y,neg")
    return {"x": float(parts[0]), "y": float(parts[1]), "positive": len(parts) == 2 or parts[2] == "pos"}


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

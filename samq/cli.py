"""``samq``: the user's door.

``up`` (the embedded default), ``api``, ``worker``, ``demo``; ``submit`` (one image), ``batch`` (a directory of
images or videos, or an ``s3://`` prefix: uploads, a progress bar, the export downloaded), ``wait``; ``ls``, ``get``,
``view``, ``cancel``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TypeAlias

import httpx

from samq.batch import cmd_batch
from samq.browse import cmd_cancel, cmd_get, cmd_ls, cmd_view
from samq.client import DEFAULT_URL
from samq.commands import UsageError, cmd_submit, cmd_wait, geometry_args
from samq.embedded import ALL_QUEUES, StartupError
from samq.errors import SamqError
from samq.serve import cmd_api, cmd_demo, cmd_samples, cmd_up, cmd_worker
from tasks.jobs import JobStatus
from tasks.names import JOB_TYPES


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except UsageError as e:
        print(f"samq: {e}", file=sys.stderr)
        return 2
    except (SamqError, StartupError, OSError) as e:
        print(f"samq: {e}", file=sys.stderr)
        return 1
    except httpx.TransportError as e:
        print(f"samq: cannot reach the API at {getattr(args, 'url', '?')}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="samq", description="Asynchronous Segment Anything service.")
    commands = parser.add_subparsers(dest="command", required=True)
    _serving_commands(commands)
    _client_commands(commands)
    _batch_command(commands)
    _job_commands(commands)
    return parser


Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _serving_commands(commands: Commands) -> None:
    """``up``, ``api``, ``worker``."""
    up = commands.add_parser("up", help="run Redis, one worker and the API locally (the embedded default)")
    _embedded_args(up)
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
    worker.add_argument(
        "--concurrency", type=int, default=None, help="processes (default 1); for --queues io alone, threads (16)"
    )
    worker.add_argument("--loglevel", default="INFO", help="Celery's log level (default INFO)")
    worker.set_defaults(run=cmd_worker)


def _client_commands(commands: Commands) -> None:
    """``submit``, ``demo``."""
    submit = commands.add_parser("submit", help="segment an image with a box and/or points")
    submit.add_argument("image", type=Path, help="the image file")
    _server_args(submit)
    submit.add_argument("--wait", action="store_true", help="wait for the job, showing progress, and print its result")
    demo = commands.add_parser(
        "demo", help="samq up + a sample segment job: writes an annotated picture and prints the viewer page"
    )
    _embedded_args(demo)
    demo.add_argument("--api-key", default=os.environ.get("SAMQ_API_KEY"), help="API key (default $SAMQ_API_KEY)")
    demo.add_argument("--out", type=Path, help="the annotated picture (default ./samq-demo-<job id>.png)")
    demo.add_argument("--serve", action="store_true", help="keep serving after the job, so the viewer page opens")
    sample = commands.add_parser("samples", help="write sample media: scene.png, clip.mp4, dataset/ (8 images)")
    sample.add_argument("out", type=Path, nargs="?", default=Path("samples"), help="the directory (default ./samples)")
    sample.set_defaults(run=cmd_samples)
    for sub, run in ((submit, cmd_submit), (demo, cmd_demo)):
        geometry_args(sub)
        sub.add_argument("--model", default="sam2.1_hiera_tiny", help="the model (default sam2.1_hiera_tiny)")
        sub.set_defaults(run=run)


def _batch_command(commands: Commands) -> None:
    batch = commands.add_parser(
        "batch", help="one prompt over a directory of images or videos (or an s3:// prefix); downloads the export"
    )
    batch.add_argument(
        "source", metavar="DIR_OR_PREFIX", help="a local directory (walked recursively) or s3://bucket/prefix"
    )
    batch.add_argument(
        "--text", action="append", default=[], help="a phrase (repeatable): SAM3 concepts on images, tracked in videos"
    )
    geometry_args(batch)
    batch.add_argument(
        "--everything",
        action="store_true",
        help="every object mask of each image, no prompt (pre-labelling; SAM2's automatic mask generator)",
    )
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
    _server_args(batch)
    batch.set_defaults(run=cmd_batch)


def _job_commands(commands: Commands) -> None:
    """``wait``, ``ls``, ``get``, ``view``, ``cancel``."""
    wait = commands.add_parser("wait", help="wait for a job, showing progress, and print its result")
    wait.add_argument("job_id", help="the job's id (job_…)")
    _server_args(wait)
    wait.set_defaults(run=cmd_wait)

    ls = commands.add_parser("ls", help="list jobs, newest first")
    ls.add_argument("--status", choices=[s.value for s in JobStatus], help="only jobs in this status")
    ls.add_argument("--type", choices=JOB_TYPES, help="only jobs of this type")
    ls.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")
    ls.add_argument("--json", action="store_true", help="one job object per line, as JSON")
    _server_args(ls)
    ls.set_defaults(run=cmd_ls)

    get = commands.add_parser("get", help="print a job as JSON; --out downloads its result files")
    get.add_argument("job_id", help="the job's id (job_…)")
    get.add_argument("--out", type=Path, help="download every result file into this directory")
    _server_args(get)
    get.set_defaults(run=cmd_get)

    view = commands.add_parser("view", help="print the job's page in the results viewer")
    view.add_argument("job_id", help="the job's id (job_…)")
    view.add_argument("--open", action="store_true", help="open it in the web browser")
    _server_args(view)
    view.set_defaults(run=cmd_view)

    cancel = commands.add_parser("cancel", help="cancel jobs (a running one stops at its next checkpoint)")
    cancel.add_argument("job_ids", nargs="+", metavar="JOB_ID", help="the jobs' ids (job_…)")
    _server_args(cancel)
    cancel.set_defaults(run=cmd_cancel)


def _server_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url", default=os.environ.get("SAMQ_URL", DEFAULT_URL), help=f"the API (default $SAMQ_URL or {DEFAULT_URL})"
    )
    parser.add_argument("--api-key", default=os.environ.get("SAMQ_API_KEY"), help="API key (default $SAMQ_API_KEY)")


def _embedded_args(parser: argparse.ArgumentParser) -> None:
    port = int(os.environ.get("SAMQ_API_PORT", "8000"))
    parser.add_argument(
        "--port", type=int, default=port, help="the API's port on 127.0.0.1 (default $SAMQ_API_PORT, else 8000)"
    )
    parser.add_argument(
        "--data-dir", type=Path, default=Path("samq-data"), help="where Redis and results live (default ./samq-data)"
    )


if __name__ == "__main__":
    sys.exit(main())

"""``samq``: the user's door.

``up`` (the embedded default), ``api``, ``worker``, ``submit`` (one image), ``batch`` (a directory of images or
videos, or an ``s3://`` prefix: uploads, a progress bar, the export downloaded), ``wait``, ``demo``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TypeAlias

from samq.batch import cmd_batch
from samq.client import ClientError
from samq.commands import UsageError, cmd_submit, cmd_wait, geometry_args
from samq.embedded import ALL_QUEUES, StartupError
from samq.serve import cmd_api, cmd_demo, cmd_up, cmd_worker

DEFAULT_URL = "http://127.0.0.1:8000"


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
    _serving_commands(commands)
    _client_commands(commands)
    _batch_command(commands)
    _wait_command(commands)
    return parser


Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _serving_commands(commands: Commands) -> None:
    """``up``, ``api``, ``worker``."""
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
    worker.add_argument(
        "--concurrency", type=int, default=None, help="processes (default 1); for --queues io alone, threads (16)"
    )
    worker.add_argument("--loglevel", default="INFO")
    worker.set_defaults(run=cmd_worker)


def _client_commands(commands: Commands) -> None:
    """``submit``, ``demo``."""
    for name, helptext in (("submit", "segment an image"), ("demo", "samq up + a sample segment job, then stop")):
        sub = commands.add_parser(name, help=helptext)
        if name == "submit":
            sub.add_argument("image", type=Path)
            sub.add_argument("--url", default=os.environ.get("SAMQ_URL", DEFAULT_URL))
            sub.add_argument("--wait", action="store_true", help="wait for the job and show progress")
        else:
            sub.add_argument("--port", type=int, default=8000)
            sub.add_argument("--data-dir", type=Path, default=Path("samq-data"))
        geometry_args(sub)
        sub.add_argument("--model", default="sam2.1_hiera_tiny")
        sub.add_argument("--api-key", default=os.environ.get("SAMQ_API_KEY"))
        sub.set_defaults(run=cmd_submit if name == "submit" else cmd_demo)


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


def _wait_command(commands: Commands) -> None:
    wait = commands.add_parser("wait", help="wait for a job and print it")
    wait.add_argument("job_id")
    wait.add_argument("--url", default=os.environ.get("SAMQ_URL", DEFAULT_URL))
    wait.add_argument("--api-key", default=os.environ.get("SAMQ_API_KEY"))
    wait.set_defaults(run=cmd_wait)


if __name__ == "__main__":
    sys.exit(main())

"""The commands that look at and steer existing jobs: ``samq ls``, ``samq get``, ``samq view``, ``samq cancel``."""

from __future__ import annotations

import argparse
import json
import sys
import webbrowser

from rich.console import Console
from rich.table import Table

from samq.client import Client
from samq.errors import ApiError
from samq.jobs import Job


def cmd_ls(args: argparse.Namespace) -> int:
    """Jobs newest first: a table on a terminal, else one tab-separated line per job (``--json``: JSON lines)."""
    jobs = list(Client(args.url, args.api_key).list_jobs(status=args.status, type=args.type, limit=args.limit))
    if args.json:
        for job in jobs:
            print(json.dumps(job))
        return 0
    rows = [(j.id, j["type"], j.status, _progress(j), j["created_at"], _error(j)) for j in jobs]
    if not sys.stdout.isatty():
        for row in rows:
            print("\t".join(row))
        return 0
    table = Table("id", "type", "status", "progress", "created", "error", box=None, pad_edge=False)
    for row in rows:
        table.add_row(*row)
    Console().print(table)
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    """The job object as JSON; with ``--out``, its result files downloaded there too."""
    job = Client(args.url, args.api_key).get(args.job_id)
    print(json.dumps(job, indent=2))
    if args.out is not None:
        for path in job.download(args.out):
            print(f"  {path}", file=sys.stderr)
    return 0


def cmd_view(args: argparse.Namespace) -> int:
    """Print the job's viewer page; ``--open`` opens it in the browser."""
    job = Client(args.url, args.api_key).get(args.job_id)
    if job.view_url is None:
        print(f"samq: the server links no viewer for {job.id}", file=sys.stderr)
        return 1
    print(job.view_url)
    if args.open:
        webbrowser.open(job.view_url)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    """Cancel jobs; a job that already ended is reported (exit 1), the others still canceled."""
    client, code = Client(args.url, args.api_key), 0
    for job_id in args.job_ids:
        try:
            job = client.cancel(job_id)
        except ApiError as e:
            if e.status != 409:
                raise
            print(f"{job_id}: {e.message}", file=sys.stderr)
            code = 1
            continue
        pending = " (cancel requested: it stops at its next checkpoint)" if not job.done else ""
        print(f"{job.id}: {job.status}{pending}")
    return code


def _progress(job: Job) -> str:
    progress = job["progress"]
    return f"{progress['done']}/{progress['total']} {progress['unit']}"


def _error(job: Job) -> str:
    error = job.get("error")
    return f"{error['code']}" if error else ""

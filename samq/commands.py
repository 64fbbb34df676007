"""The client commands: ``samq submit`` (one image) and ``samq wait``, and the prompt options they share with
``samq batch`` and ``samq demo``."""

from __future__ import annotations

import argparse
import json
import mimetypes
import sys
from typing import Any

from samq.client import Client


class UsageError(Exception):
    """The command line asks for something that cannot be done (exit code 2)."""


def geometry_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--point", action="append", default=[], help="x,y or x,y,neg (repeatable)")
    parser.add_argument("--box", help="x0,y0,x1,y1 in pixels")


def cmd_submit(args: argparse.Namespace) -> int:
    client = Client(args.url, args.api_key)
    upload = client.upload(
        args.image.read_bytes(), mimetypes.guess_type(args.image.name)[0] or "application/octet-stream"
    )
    job = client.submit(segment_job(args, {"upload": upload["id"]}))
    print(f"submitted {job['id']} ({args.url}/v1/jobs/{job['id']})", flush=True)
    if not args.wait:
        return 0
    return follow(client, job["id"])


def cmd_wait(args: argparse.Namespace) -> int:
    return follow(Client(args.url, args.api_key), args.job_id)


def segment_job(args: argparse.Namespace, image: dict[str, str]) -> dict[str, Any]:
    return {"type": "segment", "model": args.model, "image": image, "prompts": [prompt_of(args)]}


def prompt_of(args: argparse.Namespace) -> dict[str, Any]:
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


def follow(client: Client, job_id: str) -> int:
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

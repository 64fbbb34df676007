"""Serving processes: ``samq up`` (the embedded default), ``samq api``, ``samq worker``, and ``samq demo``."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from samq import samples
from samq.client import Client
from samq.commands import follow, segment_job
from samq.embedded import embedded
from tasks.names import Queue

IO_THREADS = 16
"""Deliveries an io worker makes at once (``samq worker --queues io``)."""


def cmd_up(args: argparse.Namespace) -> int:
    _exit_on_sigterm()
    with embedded(args.data_dir, args.port) as (url, supervisor):
        print(f"samq is up at {url}  (data in {args.data_dir.resolve()}; Ctrl-C stops)", flush=True)
        try:
            while True:
                time.sleep(0.5)
                exited = supervisor.first_exit()
                if exited is None:
                    continue
                name, code = exited
                if not name.endswith("worker") or not supervisor.restart_worker(name):
                    break
                print(f"samq: the {name} exited with code {code}; restarted it", file=sys.stderr, flush=True)
        except KeyboardInterrupt:
            print("stopping…", flush=True)
            return 0
    print(f"samq: {name} exited with code {code}; stopped everything", file=sys.stderr)
    return 1


def cmd_api(args: argparse.Namespace) -> int:
    # The servers are imported by their own command only: the client commands start without Flask or torch.
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
    threads = settings.threads + settings.roboflow_max_waiting  # blocking Roboflow calls never take the others'
    # waitress's default 100 connections would turn away polls while the Roboflow calls hold theirs
    waitress.serve(app, host=host, port=port, threads=threads, connection_limit=max(100, 2 * threads), ident="samq")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    # sam2's video predictor draws a tqdm bar per video; tqdm reads this when it is first imported (below).
    os.environ.setdefault("TQDM_DISABLE", "1")
    from worker.celery_app import create_celery

    app = create_celery()
    # Model work runs in prefork children (time limits, max-memory-per-child; solo/threads lose them). A worker of
    # the io queue alone (webhooks, batch finalizers) waits on the network: threads, many, so that one slow
    # receiver cannot hold up the others' deliveries.
    io_only = {q.strip() for q in args.queues.split(",")} == {Queue.IO.value}
    pool, concurrency = ("threads", args.concurrency or IO_THREADS) if io_only else ("prefork", args.concurrency or 1)
    app.worker_main(
        [
            "worker",
            "--queues", args.queues,
            "--concurrency", str(concurrency),
            "--pool", pool,
            "--loglevel", args.loglevel,
            "--hostname", f"samq-{os.getpid()}@%h",
            "--without-gossip", "--without-mingle",
        ]
    )  # fmt: skip
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Start the embedded default, segment a generated sample image, write the annotated picture, print the viewer
    page; then stop (or, with ``--serve``, keep serving until Ctrl-C, so that the page can be opened)."""
    _exit_on_sigterm()
    with embedded(args.data_dir, args.port) as (url, _):
        print(f"samq is up at {url}", flush=True)
        client = Client(url, args.api_key)
        if not args.point and not args.box:
            args.point, args.box = ["200,150"], "120,90,280,210"
        body = segment_job(args, client.media(samples.png(samples.scene())))
        job = client.submit(body | {"output": {"formats": ["rle"], "annotated": True}})
        print(f"submitted {job.id}", flush=True)
        code = follow(job)
        if code == 0:
            for instance in job.result()["instances"]:
                box = ", ".join(f"{v:g}" for v in instance["bbox"].values())
                print(
                    f"  instance {instance['index']}: score {instance['score']:.3f} bbox ({box}) area {instance['area']}"
                )
            picture = args.out or Path(f"samq-demo-{job.id}.png")
            picture.write_bytes(job.read("annotated.png"))
            print(f"annotated picture: {picture.resolve()}")
            print(f"viewer: {job.view_url}")
            if args.serve:
                print("serving until Ctrl-C", flush=True)
                try:
                    while True:
                        time.sleep(1)
                except KeyboardInterrupt:
                    pass
            else:
                print(
                    f"  (the page is served while samq runs: samq up --data-dir {args.data_dir}, or samq demo --serve)"
                )
        print("stopping samq", flush=True)
        return code


def _exit_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so the children are stopped by the same ``finally``."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def cmd_samples(args: argparse.Namespace) -> int:
    for path in samples.write_samples(args.out):
        print(path)
    return 0

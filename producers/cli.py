"""``videoq``: the command line (worker, submit, status, simulator, demo, and the operator
commands flower, metrics, health and sweep in ``producers.ops``).

Exit codes (``producers.exits``): 0 success; 1 the job ended without completing
(``submit --wait``), was not found (``status``), or the named worker did not answer
(``health``); 2 bad input; 3 Redis unreachable; 4 ``--wait`` timed out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from producers.arguments import build_parser
from producers.exits import (
    EXIT_INPUT,
    EXIT_JOB,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_UNAVAILABLE,
    print_error,
)
from worker.states import JobState


def _cmd_worker(args: argparse.Namespace, extra: list[str]) -> int:
    from worker.app import app

    settings = app.videoq_settings
    if not settings.aimlapi_key.get_secret_value():
        print_error("warning: AIMLAPI_KEY is not set; the upstream will refuse every create")
    queues = f"{settings.queue},{settings.tick_queue}"
    argv = ["worker", "--loglevel", args.loglevel or settings.log_level, "-Q", queues]
    return _run_celery(app, argv + extra)


def _run_celery(app: Any, argv: list[str]) -> int:
    """Run ``celery <argv>`` on ``app`` and return its exit code (``app.worker_main``
    drops it, so a worker that cannot start would exit 0)."""
    import click
    from celery.bin.celery import celery as celery_command

    celery_command.params[0].default = app
    try:
        code = celery_command.main(args=argv, standalone_mode=False)
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        return 130
    finally:
        celery_command.params[0].default = None
    return code if isinstance(code, int) else EXIT_OK


def _cmd_submit(args: argparse.Namespace) -> int:
    from producers.client import Client
    from producers.progress import Progress
    from worker.errors import RequestError, Unavailable

    options = {
        "negative_prompt": args.negative_prompt,
        "cfg_scale": args.cfg_scale,
        "static_mask": args.static_mask,
        "dynamic_masks": args.dynamic_masks,
        "camera_control": args.camera_control,
    }
    try:
        client = Client()
        job_id = client.submit(
            args.image_url,
            image=Path(args.image) if args.image else None,
            prompt=args.prompt,
            duration=args.duration,
            idempotency_key=args.idempotency_key,
            **options,
        )
    except RequestError as exc:
        print_error(f"invalid request: {exc}")
        return EXIT_INPUT
    except Unavailable as exc:
        print_error(str(exc))
        return EXIT_UNAVAILABLE
    print(job_id, flush=True)
    if not args.wait:
        print_error(f"accepted: job {job_id} (check with: videoq status {job_id})")
        return EXIT_OK
    progress = Progress()
    try:
        job = client.wait(job_id, args.timeout, on_update=lambda u: progress.update([u.job]))
    except TimeoutError as exc:
        print_error(str(exc))
        return EXIT_TIMEOUT
    except Unavailable as exc:
        print_error(
            f"job {job_id} was accepted; following it failed: {exc} "
            f"(check later with: videoq status {job_id})"
        )
        return EXIT_UNAVAILABLE
    if job.state is JobState.COMPLETED:
        print_error(f"completed: {job.video_url}")
        return EXIT_OK
    print_error(f"job {job.state.value}: {job.error.message if job.error else ''}")
    return EXIT_JOB


def _cmd_status(args: argparse.Namespace) -> int:
    from producers.client import Client
    from producers.progress import describe
    from worker.errors import JobNotFound, Unavailable

    try:
        job = Client().get(args.job_id)
    except JobNotFound as exc:
        print_error(str(exc))
        return EXIT_JOB
    except Unavailable as exc:
        print_error(str(exc))
        return EXIT_UNAVAILABLE
    if args.json:
        print(job.to_json())
        return EXIT_OK
    print(describe(job, time.time()))
    for name in ("generation_id", "video_url", "credits_used", "attempts", "polls"):
        value = getattr(job, name)
        if value is not None:
            print(f"  {name}: {value}")
    for name in ("created_at", "submitted_at", "finished_at", "deadline_at"):
        value = getattr(job, name)
        if value is not None:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(value))
            print(f"  {name}: {stamp} UTC")
    if job.error:
        print(f"  error: {job.error.kind}: {job.error.message}")
    print(f"  request: {json.dumps(job.request)[:300]}")
    return EXIT_OK


def _cmd_ops(args: argparse.Namespace, extra: list[str]) -> int:
    from producers import ops

    if args.command == "sweep":
        return ops.run_sweep(args.force)
    if args.command == "flower":
        return ops.run_flower(args.host, args.port, extra)
    if args.command == "metrics":
        return ops.run_metrics(args.host, args.port)
    if args.command == "serve":
        return ops.run_serve(args.host, args.port)
    return ops.run_health(args.worker, args.timeout)


def _cmd_simulator(args: argparse.Namespace) -> int:
    from simulator import Simulator

    try:
        sim = Simulator(
            args.host,
            args.port,
            state_file=args.state,
            api_key=args.api_key,
            generation_time=args.generation_time,
            latency=args.latency,
            never_finish=args.never_finish,
            fail_generations=args.fail,
            reject_create=args.reject_create,
        )
    except ValueError as exc:  # a state file that is not one
        print_error(str(exc))
        return EXIT_INPUT
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
    print_error(
        f"simulator listening on {args.host}:{sim.port}: "
        f"AIMLAPI_BASE_URL=http://{shown}:{sim.port}/v2 "
        f"(Bearer key {'any' if not args.api_key else repr(args.api_key)})"
    )
    with contextlib.suppress(KeyboardInterrupt):
        sim.serve_forever()
    return EXIT_OK


def settings_error(exc: ValidationError) -> str:
    """One line for refused settings, naming the variable (``VIDEOQ_<FIELD>``)."""
    first = exc.errors()[0]
    message = str(first["msg"]).removeprefix("Value error, ")
    if not first["loc"]:
        return f"invalid settings: {message}"
    name = str(first["loc"][0]).upper()
    variable = name if name.startswith("AIMLAPI_") else f"VIDEOQ_{name}"
    return f"invalid setting {variable}: {message}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command not in ("worker", "flower"):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return _run(args, extra)
    except ValidationError as exc:
        if exc.title != "Settings":
            raise
        print_error(settings_error(exc))
        return EXIT_INPUT


def _run(args: argparse.Namespace, extra: list[str]) -> int:
    if args.command == "worker":
        return _cmd_worker(args, extra)
    if args.command == "submit":
        return _cmd_submit(args)
    if args.command == "status":
        return _cmd_status(args)
    if args.command in ("sweep", "flower", "metrics", "health", "serve"):
        return _cmd_ops(args, extra)
    if args.command == "simulator":
        return _cmd_simulator(args)
    from producers.demo import run_demo

    return run_demo(args)


if __name__ == "__main__":
    sys.exit(main())

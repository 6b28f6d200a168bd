"""The job commands of ``videoq``: ``submit``, ``status``, ``cancel`` and ``list``.

Each takes its parsed arguments and returns the exit code (``producers.exits``). What
a script reads goes to stdout (a job id, a record, a table); progress and messages
go to stderr.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from worker.errors import JobNotFound, RequestError, Unavailable
from worker.job import Job
from worker.states import JobState

from .client import Client
from .exits import (
    EXIT_INPUT,
    EXIT_INTERRUPTED,
    EXIT_JOB,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_UNAVAILABLE,
    print_error,
)
from .progress import Progress, describe
from .updates import Update


def run(args: argparse.Namespace) -> int:
    """Run the job command ``args.command``. The errors every job command words the
    same way end it here: bad input 2, no such job 1, Redis unreachable 3."""
    command = {"submit": _submit, "status": _status, "cancel": _cancel, "list": _list}
    try:
        return command[args.command](args)
    except RequestError as exc:
        print_error(f"invalid request: {exc}" if exc.field != "job_id" else exc.message)
        return EXIT_INPUT
    except JobNotFound as exc:
        print_error(str(exc))
        return EXIT_JOB
    except Unavailable as exc:
        print_error(str(exc))
        return EXIT_UNAVAILABLE


def _submit(args: argparse.Namespace) -> int:
    options = {
        "negative_prompt": args.negative_prompt,
        "cfg_scale": args.cfg_scale,
        "static_mask": args.static_mask,
        "dynamic_masks": args.dynamic_masks,
        "camera_control": args.camera_control,
    }
    client = Client()
    job_id = client.submit(
        args.image_url,
        image=Path(args.image) if args.image else None,
        prompt=args.prompt,
        duration=args.duration,
        idempotency_key=args.idempotency_key,
        **options,
    )
    as_json = args.output == "json"
    try:
        if not as_json:
            print(job_id, flush=True)
        if not args.wait:
            if as_json:
                _print_record(client, job_id)
            print_error(f"accepted: job {job_id} (check with: videoq status {job_id})")
            return EXIT_OK
        return _wait(client, job_id, args.timeout, as_json)
    except KeyboardInterrupt:
        print_error(
            f"interrupted; job {job_id} keeps running (follow it with: videoq status {job_id}, "
            f"or stop it with: videoq cancel {job_id})"
        )
        return EXIT_INTERRUPTED


def _print_record(client: Client, job_id: str) -> None:
    """The record of a job just accepted, on stdout; if Redis fails to give it back,
    ``{"id": ...}`` (the job was accepted all the same: do not submit it again)."""
    try:
        print(client.get(job_id).to_json(), flush=True)
    except Unavailable as exc:
        print(json.dumps({"id": job_id}), flush=True)
        print_error(f"job {job_id} was accepted; reading its record back failed: {exc}")


def _wait(client: Client, job_id: str, timeout: float | None, as_json: bool) -> int:
    """``submit --wait``: follow the job on stderr until it ends; with ``as_json``,
    print the last record read on stdout (also on a timeout or Ctrl-C, not when
    Redis is lost)."""
    progress = Progress()
    last: list[Job] = []

    def shown(update: Update) -> None:
        last[:] = [update.job]
        progress.update([update])

    try:
        job = client.wait(job_id, timeout, on_update=shown)
    except TimeoutError as exc:
        print_error(str(exc))
        return EXIT_TIMEOUT
    except Unavailable as exc:
        last.clear()  # what was read before is stale: print only the id
        if as_json:
            print(json.dumps({"id": job_id}), flush=True)
        print_error(
            f"job {job_id} was accepted; following it failed: {exc} "
            f"(check later with: videoq status {job_id})"
        )
        return EXIT_UNAVAILABLE
    finally:
        if as_json and last:
            print(last[0].to_json(), flush=True)
    if job.state is JobState.COMPLETED:
        print_error(f"completed: {job.video_url}")
        return EXIT_OK
    print_error(f"job {job.state.value}: {job.error.message if job.error else ''}")
    return EXIT_JOB


def _status(args: argparse.Namespace) -> int:
    client = Client()
    job = client.find(args.job_id)
    if args.json:
        print(job.to_json())
        return EXIT_OK
    place = client.update_of(job).place_in_line
    print(describe(job, time.time(), place))
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


def _cancel(args: argparse.Namespace) -> int:
    """Cancel a job that has not ended. A job already cancelled: exit 0; one that had
    ended otherwise (completed, failed, timed out): exit 1, as the gateway's 409."""
    client = Client()
    found = client.find(args.job_id)
    job = client.cancel(found.id)
    print(job.to_json() if args.json else describe(job, time.time()))
    if job.state is JobState.CANCELLED:
        if found.state is JobState.CANCELLED:
            print_error(f"job {job.id} was already cancelled")
        return EXIT_OK
    print_error(f"job {job.id} had already ended ({job.state.value}); nothing to cancel")
    return EXIT_JOB


def _list(args: argparse.Namespace) -> int:
    state = JobState(args.state) if args.state else None
    jobs = Client().recent(state, args.limit)
    if args.json:
        print(json.dumps([job.to_dict() for job in jobs], sort_keys=True))
        return EXIT_OK
    if not jobs:
        print_error("no jobs" + (f" {state.value}" if state else ""))
        return EXIT_OK
    now = time.time()
    print(f"{'ID':<12}  {'STATE':<10} {'AGE':>5}  VIDEO OR ERROR")
    for job in jobs:
        print(f"{job.id[:12]:<12}  {job.state.value:<10} {_age(job, now):>5}  {_result(job)}")
    return EXIT_OK


def _age(job: Job, now: float) -> str:
    """Time since the job was accepted: ``42s``, ``7m``, ``3h``, ``2d``."""
    seconds = max(0.0, now - (job.created_at or now))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _result(job: Job) -> str:
    if job.video_url:
        return job.video_url
    if job.error:
        return f"{job.error.kind}: {job.error.message}"[:200]
    if job.last_error:
        return f"(retrying: {job.last_error})"[:200]
    return ""

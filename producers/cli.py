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
from typing import Any

from pydantic import ValidationError

from producers.exits import (
    EXIT_INPUT,
    EXIT_JOB,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_UNAVAILABLE,
    print_error,
)
from worker.settings import MODEL_ID
from worker.states import JobState


def _json_arg(field: str) -> Any:
    def parse(text: str) -> Any:
        try:
            return json.loads(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{field}: must be valid JSON") from None

    return parse


def _number(field: str) -> Any:
    def parse(text: str) -> float:
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{field}: must be a number") from None

    return parse


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse's own errors: exit 2, to stderr
        self.print_usage(sys.stderr)
        print_error(message)
        raise SystemExit(EXIT_INPUT)


def _server(sub: Any, name: str, port: int, help_text: str, description: str) -> None:
    """A subcommand that serves HTTP on --host (loopback by default) and --port."""
    parser = sub.add_parser(name, help=help_text, description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=port)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="videoq",
        description=f"A non-blocking Celery worker for {MODEL_ID} on the AI/ML API.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    w = sub.add_parser(
        "worker",
        help="run a Celery worker for videoq's queue",
        description="Run a Celery worker on videoq's queue. Options not listed here are "
        "passed to `celery worker` unchanged (e.g. --pool threads --concurrency 8 -n w1@%h).",
    )
    w.add_argument("--loglevel", "-l", default=None, help="log level (default VIDEOQ_LOG_LEVEL)")

    s = sub.add_parser(
        "submit",
        help="validate and enqueue one generation; prints the job id",
        description="Validate and enqueue one image-to-video generation. Prints only the job "
        "id on stdout; progress and messages go to stderr.",
    )
    s.add_argument("--image-url", required=True, help="http(s) URL or data:image/...;base64")
    s.add_argument("--prompt")
    s.add_argument("--duration", default="5", help="5 or 10 (seconds of video)")
    s.add_argument("--negative-prompt")
    s.add_argument("--cfg-scale", type=_number("cfg_scale"), help="0..1")
    s.add_argument("--static-mask", help="mask image URL")
    s.add_argument("--dynamic-masks", type=_json_arg("dynamic_masks"), help="JSON list")
    s.add_argument("--camera-control", type=_json_arg("camera_control"), help="JSON object")
    s.add_argument("--idempotency-key", help="same key, same job (within the retention)")
    s.add_argument(
        "--wait", action="store_true", help="wait until the job ends; exit 0 only when it completed"
    )
    s.add_argument("--timeout", type=float, default=None, help="with --wait: give up after S s")

    st = sub.add_parser("status", help="show a job's record", description="Show a job's record.")
    st.add_argument("job_id")
    st.add_argument("--json", action="store_true", help="print the record as one JSON object")

    sw = sub.add_parser(
        "sweep",
        help="resume stalled jobs once (workers also do this every VIDEOQ_SWEEP_INTERVAL)",
        description="Republish the next step of every job whose chain stalled (e.g. its "
        "worker was killed), then print what was done as JSON. Workers run the same sweep "
        "by themselves; this is for operators.",
    )
    sw.add_argument("--force", action="store_true", help="sweep even while the queue has a backlog")

    _server(
        sub,
        "serve",
        8080,
        "run the HTTP gateway (native /v1/jobs and the upstream's own API)",
        "Run the HTTP gateway: /v1/jobs (submit, get, list, cancel) and the "
        "upstream-compatible paths, behind Bearer tokens from VIDEOQ_API_TOKENS. OpenAPI "
        "at /openapi.json.",
    )
    _server(
        sub,
        "flower",
        5555,
        "run Flower on videoq's app (auth, persistent state, job columns)",
        "Run Flower on videoq's Celery app with basic auth from "
        "VIDEOQ_FLOWER_BASIC_AUTH and its state kept in VIDEOQ_FLOWER_DB. Refuses a "
        "non-loopback address without auth. Other options pass through to Flower.",
    )
    _server(
        sub,
        "metrics",
        9808,
        "serve job metrics for Prometheus",
        "Serve videoq's job-level metrics (jobs by state, completion latency, "
        "upstream errors, in-flight jobs, credits) on /metrics in Prometheus's format.",
    )

    he = sub.add_parser(
        "health",
        help="exit 0 if Redis (and optionally a worker) answers",
        description="Health check for probes: exit 0 when Redis answers and, with --worker, "
        "when that worker answers a ping; 3 when Redis is unreachable; 1 otherwise.",
    )
    he.add_argument("--worker", help="worker node name, e.g. w1@host")
    he.add_argument("--timeout", type=float, default=5.0)

    sim = sub.add_parser(
        "simulator",
        help="run the local stand-in for the upstream API",
        description="Run the local stand-in for the upstream API (both paths, Bearer auth, "
        "switchable faults; see simulator/server.py). Point AIMLAPI_BASE_URL at the URL "
        "it prints.",
    )
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8900)
    sim.add_argument("--api-key", default="sim-key", help="accepted Bearer key ('' = any)")
    sim.add_argument(
        "--generation-time",
        type=float,
        default=5.0,
        help="seconds a 5 s video takes (10 s videos take twice as long)",
    )
    sim.add_argument("--latency", type=float, default=0.0, help="delay before every answer")
    sim.add_argument("--never-finish", action="store_true", help="no job ever completes")
    sim.add_argument("--fail", action="store_true", help="every job ends in error")
    sim.add_argument(
        "--reject-create",
        type=int,
        default=0,
        metavar="STATUS",
        help="answer every create with this 4xx status",
    )

    d = sub.add_parser(
        "demo",
        help="run everything locally: Redis, simulator, worker, Flower, a few jobs",
        description="Start a private Redis (unless VIDEOQ_REDIS_URL is set), the simulator, "
        "a worker and Flower; submit a few jobs; show progress until all end; print the "
        "records; clean up.",
    )
    d.add_argument("--jobs", type=int, default=4, help="how many jobs (default 4)")
    d.add_argument(
        "--generation-time",
        type=float,
        default=8.0,
        help="simulated seconds per 5 s video (default 8)",
    )
    d.add_argument("--poll-interval", type=float, default=1.0, help="default 1")
    d.add_argument("--deadline", type=float, default=60.0, help="default 60")
    d.add_argument("--no-flower", action="store_true", help="do not start Flower")
    d.add_argument(
        "--keep-running",
        action="store_true",
        help="keep everything running after the jobs end, until Ctrl-C",
    )
    return parser


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
        job = client.wait(job_id, args.timeout, on_update=lambda j: progress.update([j]))
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

    sim = Simulator(
        args.host,
        args.port,
        api_key=args.api_key,
        generation_time=args.generation_time,
        latency=args.latency,
        never_finish=args.never_finish,
        fail_generations=args.fail,
        reject_create=args.reject_create,
    )
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

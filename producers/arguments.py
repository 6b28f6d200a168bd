"""The ``videoq`` command line's arguments: one parser, one function per subcommand.

``producers.cli`` runs the commands; argparse's own refusals exit 2 (``EXIT_INPUT``).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from producers.exits import EXIT_INPUT, print_error
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
    for add in (
        _worker,
        _submit,
        _status,
        _cancel,
        _list,
        _sweep,
        _servers,
        _health,
        _simulator,
        _demo,
    ):
        add(sub)
    return parser


def _worker(sub: Any) -> None:
    """``videoq worker``: the rest of the command line goes to Celery."""
    w = sub.add_parser(
        "worker",
        help="run a Celery worker for videoq's queue",
        description="Run a Celery worker on videoq's queue. Options not listed here are "
        "passed to `celery worker` unchanged (e.g. --pool threads --concurrency 8 -n w1@%h).",
    )
    w.add_argument("--loglevel", "-l", default=None, help="log level (default VIDEOQ_LOG_LEVEL)")


def _submit(sub: Any) -> None:
    """``videoq submit``: one generation's fields, and how to wait for it."""
    s = sub.add_parser(
        "submit",
        help="validate and enqueue one generation; prints the job id",
        description="Validate and enqueue one image-to-video generation. Prints only the job "
        "id on stdout; progress and messages go to stderr.",
    )
    first = s.add_mutually_exclusive_group(required=True)
    first.add_argument("--image-url", help="http(s) URL or data:image/...;base64")
    first.add_argument("--image", metavar="FILE", help="a local PNG or JPEG (sent inline)")
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
    s.add_argument(
        "--output",
        choices=("id", "json"),
        default="id",
        help="what stdout gets: the job id at once (id, the default), or the job's record "
        "as one JSON object (json): with --wait, the last one read, when the job ends "
        "(or at --timeout, or Ctrl-C)",
    )


_JOB_HELP = "the job's id, or the start of it (at least 8 characters, naming one job)"


def _status(sub: Any) -> None:
    """``videoq status``."""
    st = sub.add_parser("status", help="show a job's record", description="Show a job's record.")
    st.add_argument("job_id", metavar="JOB", help=_JOB_HELP)
    st.add_argument("--json", action="store_true", help="print the record as one JSON object")


def _cancel(sub: Any) -> None:
    """``videoq cancel``."""
    c = sub.add_parser(
        "cancel",
        help="cancel a job that has not ended",
        description="Cancel a job that has not ended and print its record's line (or, "
        "with --json, the record). Before the upstream create, none is made; during "
        "generation, polling stops (the upstream has no cancel call: its generation "
        "runs on and may be charged). Exit 0 when the job is cancelled (now or "
        "before), 1 when it had already ended otherwise or does not exist.",
    )
    c.add_argument("job_id", metavar="JOB", help=_JOB_HELP)
    c.add_argument("--json", action="store_true", help="print the record as one JSON object")


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError("must be a whole number from 1 to 1000")
    return value


def _list(sub: Any) -> None:
    """``videoq list``."""
    ls = sub.add_parser(
        "list",
        help="list the newest jobs",
        description="List the newest jobs, newest first (by acceptance time): id (its "
        "first 12 characters), state, age, and the video URL or the error. Reads every "
        "job record's time and state (at most 100000), so it is for people; a web app "
        "pages through GET /v1/jobs.",
    )
    ls.add_argument("--state", choices=[s.value for s in JobState], help="only jobs in this state")
    ls.add_argument("--limit", type=_limit, default=20, help="how many (1-1000, default 20)")
    ls.add_argument("--json", action="store_true", help="print one JSON array of the full records")


def _sweep(sub: Any) -> None:
    """``videoq sweep``."""
    sw = sub.add_parser(
        "sweep",
        help="resume stalled jobs once (workers also do this every VIDEOQ_SWEEP_INTERVAL)",
        description="Republish the next step of every job whose chain stalled (e.g. its "
        "worker was killed), then print what was done as JSON. Workers run the same sweep "
        "by themselves; this is for operators.",
    )
    sw.add_argument("--force", action="store_true", help="sweep even while the queue has a backlog")


def _servers(sub: Any) -> None:
    """``videoq serve``, ``flower`` and ``metrics``: HTTP on --host, --port."""
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


def _health(sub: Any) -> None:
    """``videoq health``."""
    he = sub.add_parser(
        "health",
        help="exit 0 if Redis (and optionally a worker) answers",
        description="Health check for probes: exit 0 when Redis answers and, with --worker, "
        "when that worker answers a ping; 3 when Redis is unreachable; 1 otherwise.",
    )
    he.add_argument("--worker", help="worker node name, e.g. w1@host")
    he.add_argument("--timeout", type=float, default=5.0)


def _simulator(sub: Any) -> None:
    """``videoq simulator``: the upstream stand-in and its faults."""
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
    sim.add_argument(
        "--state",
        metavar="FILE",
        help="keep the generations in FILE (rewritten after each create), so a restart "
        "forgets none",
    )


def _demo(sub: Any) -> None:
    """``videoq demo``."""
    d = sub.add_parser(
        "demo",
        help="run everything locally: Redis, simulator, worker, Flower, a few jobs",
        description="Start a private Redis (unless VIDEOQ_REDIS_URL is set), the simulator, "
        "a worker and Flower; submit a few jobs; show progress until all end; print a "
        "table of the jobs; clean up all but the logs, whose directory it prints last.",
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
        "--logs",
        metavar="DIR",
        help="where the worker's and Flower's logs go, kept after the demo (default: a "
        "new videoq-demo-<date>-<time>-... directory in the system's temporary directory)",
    )
    d.add_argument(
        "--keep-running",
        action="store_true",
        help="keep everything running after the jobs end, until Ctrl-C",
    )

"""``videoq demo``: the whole product on one machine in about a minute.

A private Redis (or ``VIDEOQ_REDIS_URL``), the simulator as upstream, one worker, Flower,
a few jobs with live progress, then a short table of the jobs on stdout, a summary, and
the directory that keeps the worker's and Flower's logs after the demo exits (its
last line). Everything else it started is stopped and removed.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from simulator import Simulator
from worker.job import Job
from worker.settings import load_settings

from .client import Client
from .local import RedisServer, free_port, start_flower, start_worker, stop_process
from .progress import Progress

IMAGE = (
    "https://raw.githubusercontent.com/aimlapi/api-docs/main/reference-files/mona_lisa_extended.jpg"
)
PROMPTS = [
    ("Mona Lisa puts on glasses with her hands.", 5),
    ("The camera slowly pulls back from the portrait.", 10),
    ("Mona Lisa smiles and waves.", 5),
    ("The background turns to night. [sim:error]", 5),
    ("Leaves drift across the frame.", 5),
    ("Mona Lisa winks.", 10),
]


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo; Ctrl-C or SIGTERM at any point stops it and cleans everything up
    but the logs, whose directory is the last line printed."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)
    logs = logs_dir(args.logs)
    try:
        return _run(args, logs)
    except KeyboardInterrupt:
        _say("videoq demo: interrupted; everything it started has been stopped.")
        return 130
    finally:
        names = ", ".join(sorted(p.name for p in logs.glob("*.log"))) or "none written"
        print(f"Logs: {logs}  ({names}; kept after the demo)", flush=True)


def logs_dir(wanted: str | None, now: float | None = None) -> Path:
    """Where the demo writes the worker's and Flower's logs, created now: ``wanted``,
    or a new ``videoq-demo-<date>-<time>-…`` directory in the system's temporary
    directory. It is not removed when the demo exits."""
    if wanted:
        path = Path(wanted).expanduser()
        path.mkdir(parents=True, exist_ok=True)
        return path.resolve()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    return Path(tempfile.mkdtemp(prefix=f"videoq-demo-{stamp}-"))


def _run(args: argparse.Namespace, logs: Path) -> int:
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="videoq-demo-")))
        redis_url = _redis(stack)
        if redis_url is None:
            return 3
        sim = _simulator(stack, args)
        queue = f"videoq-demo-{os.getpid()}"
        env = _worker_env(args, redis_url, sim, queue)
        worker_log_path = logs / "worker.log"
        worker_log = stack.enter_context(worker_log_path.open("wb"))
        worker = start_worker(env, worker_log, name="demo", concurrency=2)
        stack.callback(stop_process, worker)
        _say(f"Worker: pid {worker.pid}, prefork x2 (log: {worker_log_path})")
        if not args.no_flower:
            _flower(stack, env, workdir, logs)

        settings = load_settings(
            redis_url=redis_url,
            queue=queue,
            deadline=args.deadline,
            poll_interval=args.poll_interval,
        )
        client = Client(settings=settings)
        ids = []
        for i in range(args.jobs):
            prompt, duration = PROMPTS[i % len(PROMPTS)]
            ids.append(client.submit(IMAGE, prompt=prompt, duration=duration))
        _say(f"Submitted {len(ids)} jobs (deadline {args.deadline:g}s each); progress:")

        jobs = _follow(client, ids, worker, worker_log_path, args.deadline + 30)
        if jobs is None:
            return 1
        _report(jobs, sim)
        if args.keep_running:
            _keep_running()
        _say("Cleaning up.")
    return 0


def _redis(stack: ExitStack) -> str | None:
    """``VIDEOQ_REDIS_URL``, or a private redis-server's URL (None: it could not start)."""
    redis_url = os.environ.get("VIDEOQ_REDIS_URL")
    if redis_url:
        _say(f"Redis: using VIDEOQ_REDIS_URL ({redis_url.split('@')[-1]})")
        return redis_url
    try:
        server = RedisServer().start()
    except RuntimeError as exc:
        _say(f"videoq demo: {exc}")
        return None
    stack.callback(server.cleanup)
    _say(f"Redis: started a private redis-server at {server.url}")
    return server.url


def _simulator(stack: ExitStack, args: argparse.Namespace) -> Simulator:
    sim = Simulator(generation_time=args.generation_time).start()
    stack.callback(sim.stop)
    # Show retries: the first create is rate-limited with Retry-After.
    sim.add_fault(status=429, count=1, method="POST", retry_after=2, message="slow down")
    _say(f"Upstream: the simulator at {sim.base_url} ({args.generation_time:g}s per 5s video)")
    return sim


def _worker_env(
    args: argparse.Namespace, redis_url: str, sim: Simulator, queue: str
) -> dict[str, str]:
    return {
        "VIDEOQ_REDIS_URL": redis_url,
        "AIMLAPI_BASE_URL": sim.base_url,
        "AIMLAPI_KEY": "sim-key",
        "VIDEOQ_POLL_INTERVAL": str(args.poll_interval),
        "VIDEOQ_DEADLINE": str(args.deadline),
        "VIDEOQ_RETRY_BACKOFF": "1",
        "VIDEOQ_QUEUE": queue,
        "VIDEOQ_LOG_LEVEL": "INFO",
        "VIDEOQ_ALLOW_PRIVATE_URLS": "true",  # the simulator's videos are on 127.0.0.1
    }


def _flower(stack: ExitStack, env: dict[str, str], workdir: Path, logs: Path) -> None:
    port = free_port()
    flower_log = stack.enter_context((logs / "flower.log").open("wb"))
    flower = start_flower(env, flower_log, port, workdir / "flower.db")
    stack.callback(stop_process, flower)
    _say(f"Flower: http://127.0.0.1:{port}/tasks  (task events on)")


def _follow(
    client: Client,
    ids: list[str],
    worker: subprocess.Popen[bytes],
    worker_log_path: Path,
    limit: float,
) -> list[Job] | None:
    """Show progress until every job ends; None if the worker exits or ``limit`` s pass."""
    progress = Progress()
    give_up = time.monotonic() + limit
    while True:
        jobs = [client.get(job_id) for job_id in ids]
        progress.update(jobs)
        if all(job.is_terminal for job in jobs):
            return jobs
        if worker.poll() is not None:
            _say(f"videoq demo: the worker exited ({worker.returncode}); see {worker_log_path}")
            return None
        if time.monotonic() > give_up:
            _say("videoq demo: jobs did not finish in time")
            return None
        time.sleep(1.0)


def table(jobs: list[Job]) -> list[str]:
    """One line per job under a header: its id (12 characters), state, seconds from
    acceptance to its end, credits when the upstream said, and its video URL or its
    error (kind: message). ``videoq status JOB --json`` has the whole record."""
    rows = [("job", "state", "seconds", "credits", "video or error")]
    for job in jobs:
        seconds = (job.finished_at or 0.0) - (job.created_at or job.finished_at or 0.0)
        credits = "-" if job.credits_used is None else f"{job.credits_used:g}"
        if job.video_url:
            outcome = job.video_url
        elif job.error:
            outcome = f"{job.error.kind}: {job.error.message}"
        else:
            outcome = "-"
        rows.append((job.id[:12], job.state.value, f"{seconds:.1f}", credits, outcome))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return [
        f"{ident:<{widths[0]}}  {state:<{widths[1]}}  {seconds:>{widths[2]}}  "
        f"{credits:>{widths[3]}}  {outcome}"
        for ident, state, seconds, credits, outcome in rows
    ]


def _report(jobs: list[Job], sim: Simulator) -> None:
    """The jobs' table and what the upstream saw, on stdout."""
    print("\n".join(table(jobs)))
    log = sim.requests()
    creates = len(sim.creates())
    limited = sum(1 for r in log if r.status_code == 429)
    print(
        f"Done: {len(jobs)} jobs, {creates} upstream creates, {len(log)} upstream "
        f"requests in all, {limited} answered 429 and retried.",
        flush=True,
    )


def _keep_running() -> None:
    _say("Everything keeps running (Flower above); Ctrl-C to stop.")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass

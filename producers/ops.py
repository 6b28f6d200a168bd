"""Operator commands: ``videoq serve``, ``flower``, ``metrics``, ``health`` and ``sweep``.

Each returns a CLI exit code (see ``producers.exits``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import sys
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from producers.exits import (
    EXIT_INPUT,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_UNHEALTHY,
    print_error,
)
from worker.settings import Settings, load_settings

# What an operator wants to see in the task list: the kwargs carry the job id (first)
# and the step; a failed job's row says why in the exception (``JobEnded``).
FLOWER_COLUMNS = "name,uuid,state,kwargs,exception,received,started,runtime,worker"


def is_local(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def flower_command(settings: Settings, host: str, port: int, extra: list[str]) -> list[str]:
    """The ``celery flower`` command line (the credentials go through the environment)."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.app",
        "flower",
        f"--address={host}",
        f"--port={port}",
        "--persistent=True",
        f"--db={settings.flower_db}",
        "--state_save_interval=10000",
        f"--tasks_columns={FLOWER_COLUMNS}",
        *extra,
    ]


def flower_env(settings: Settings) -> dict[str, str]:
    auth = settings.flower_basic_auth.get_secret_value()
    env = dict(os.environ)
    if auth:
        env["FLOWER_BASIC_AUTH"] = auth  # not on the command line, where `ps` shows it
    return env


def run_flower(host: str, port: int, extra: list[str]) -> int:
    settings = load_settings()
    if not is_local(host) and not settings.flower_basic_auth.get_secret_value():
        print_error(
            f"refusing to serve Flower on {host} without authentication: set "
            "VIDEOQ_FLOWER_BASIC_AUTH=user:password (or bind to 127.0.0.1)"
        )
        return EXIT_INPUT
    command = flower_command(settings, host, port, extra)
    os.execve(command[0], command, flower_env(settings))  # noqa: S606 (replaces this process)
    return EXIT_OK  # not reached


def run_metrics(host: str, port: int) -> int:
    from worker.metrics import MetricsExporter
    from worker.store import JobStore, connect

    settings = load_settings()
    exporter = MetricsExporter(
        JobStore(connect(settings), settings), host, port, upstream_rate=settings.upstream_rate
    )
    print_error(f"serving job metrics on http://{host}:{exporter.port}/metrics")
    with contextlib.suppress(KeyboardInterrupt):
        exporter.serve_forever()
    return EXIT_OK


def run_health(worker: str | None, timeout: float) -> int:
    """Redis answers (and, with ``worker``, that worker answers a ping): exit 0."""
    from worker.app import app
    from worker.store import connect

    settings = app.videoq_settings
    try:
        connect(settings.model_copy(update={"redis_retries": 0})).ping()
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        print_error(f"unhealthy: Redis is unreachable ({type(exc).__name__})")
        return EXIT_UNAVAILABLE
    if worker:
        replies = app.control.ping([worker], timeout=timeout) or []
        if not any(worker in reply for reply in replies):
            print_error(f"unhealthy: worker {worker} did not answer a ping within {timeout}s")
            return EXIT_UNHEALTHY
    print("ok")
    return EXIT_OK


def run_serve(host: str, port: int) -> int:
    import uvicorn

    from producers.gateway import create_gateway

    settings = load_settings()
    if not settings.tokens:
        print_error("refusing to serve without tokens: set VIDEOQ_API_TOKENS=token1,token2")
        return EXIT_INPUT
    print_error(f"videoq gateway on http://{host}:{port} (OpenAPI: /openapi.json, docs: /docs)")
    uvicorn.run(create_gateway(settings), host=host, port=port, log_level="info", access_log=False)
    return EXIT_OK


def run_sweep(force: bool) -> int:
    from worker.app import app
    from worker.sweeper import queue_backlog, sweep

    rt = app.runtime()
    try:
        backlog = queue_backlog(rt.store.redis, rt.settings.queue)
        report = sweep(rt, 0 if force else backlog)
    except (RedisConnectionError, RedisTimeoutError) as exc:
        print_error(f"Redis is unreachable ({type(exc).__name__})")
        return EXIT_UNAVAILABLE
    report.backlog = backlog
    result: dict[str, Any] = report.as_dict()
    print(json.dumps(result))
    return EXIT_OK

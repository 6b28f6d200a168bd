"""``videoq``: the command line (worker, simulator, demo; the job commands submit,
status, cancel and list in ``producers.commands``; the operator commands flower,
metrics, health and sweep in ``producers.ops``).

Exit codes (``producers.exits``): 0 success; 1 the job ended without completing
(``submit --wait``), was not found (``status``, ``cancel``), had already ended
(``cancel``), or the named worker did not answer (``health``); 2 bad input; 3 Redis
unreachable; 4 ``--wait`` timed out; 130 interrupted (Ctrl-C); 141 stdout closed
early (a pipe into ``head``), quietly.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from producers.arguments import build_parser
from producers.exits import (
    EXIT_CLOSED_PIPE,
    EXIT_INPUT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    print_error,
)


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
        code = _run(args, extra)
        sys.stdout.flush()  # here, where a closed pipe is caught, not at exit
    except ValidationError as exc:
        if exc.title != "Settings":
            raise
        print_error(settings_error(exc))
        return EXIT_INPUT
    except KeyboardInterrupt:
        print_error("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        if not _stdout_closed():
            raise  # a pipe of the command's own (a peer, a child), not our reader's
        return _closed_pipe()
    return code


def _stdout_closed() -> bool:
    """Whether stdout is a pipe whose reader has gone (the kernel flags it POLLERR)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(event & (select.POLLERR | select.POLLHUP) for _, event in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no real stdout: nothing to protect
        return False


def entry() -> None:
    """The ``videoq`` command: :func:`main`, and after Ctrl-C, death by SIGINT itself
    once the command has said what it left running. A shell then sees the signal (``$?``
    is 130) and stops a loop or script that ran the command, as it would for any tool;
    a plain exit status of 130 would let the loop go on."""
    interrupted: list[int] = []

    def on_sigint(signum: int, _frame: object) -> None:
        interrupted.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)  # commands that install their own keep theirs
    code = main()
    if interrupted and code == EXIT_INTERRUPTED:
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()
            sys.stderr.flush()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    sys.exit(code)


def _closed_pipe() -> int:
    """stdout's reader went away (``videoq list | head -1``): stop quietly. What is
    still buffered goes to /dev/null, so the flush at exit cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    with contextlib.suppress(OSError, ValueError):
        os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_CLOSED_PIPE


def _run(args: argparse.Namespace, extra: list[str]) -> int:
    if args.command == "worker":
        return _cmd_worker(args, extra)
    if args.command in ("submit", "status", "cancel", "list"):
        from producers import commands

        return commands.run(args)
    if args.command in ("sweep", "flower", "metrics", "health", "serve"):
        return _cmd_ops(args, extra)
    if args.command == "simulator":
        return _cmd_simulator(args)
    from producers.demo import run_demo

    return run_demo(args)


if __name__ == "__main__":
    sys.exit(main())

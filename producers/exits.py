"""The CLI's exit codes and its one way of printing an error, shared by ``producers.cli``,
its job commands (``producers.commands``) and the operator commands in
``producers.ops`` (which import this, never each other's private parts).

Exit codes: 0 success; 1 the job ended without completing (``submit --wait``), was not
found (``status``, ``cancel``), had already ended otherwise than cancelled
(``cancel``), or the named worker did not answer (``health``); 2 bad input (also a job
id prefix that is too short or names several jobs); 3 Redis unreachable; 4 ``--wait``
timed out; 130 interrupted (Ctrl-C; the ``videoq`` command then ends by SIGINT
itself, which a shell reports as 130); 141 stdout was closed early (``videoq list |
head -1``): the command stops quietly, as a tool killed by SIGPIPE would.
"""

from __future__ import annotations

import sys

EXIT_OK = 0
EXIT_JOB = 1  # the job ended without completing, was not found, or (cancel) had ended
EXIT_UNHEALTHY = 1  # `videoq health`: Redis answers but the named worker does not
EXIT_INPUT = 2
EXIT_UNAVAILABLE = 3  # Redis unreachable
EXIT_TIMEOUT = 4  # `submit --wait` timed out
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
EXIT_CLOSED_PIPE = 141  # stdout's reader went away (128 + SIGPIPE)


def print_error(message: str) -> None:
    """One line on stderr, prefixed ``videoq:``."""
    print(f"videoq: {message}", file=sys.stderr)

"""The CLI's exit codes and its one way of printing an error, shared by ``producers.cli``
and the operator commands in ``producers.ops`` (which import this, never each other's
private parts).

Exit codes: 0 success; 1 the job ended without completing (``submit --wait``), was not
found (``status``), or the named worker did not answer (``health``); 2 bad input; 3 Redis
unreachable; 4 ``--wait`` timed out.
"""

from __future__ import annotations

import sys

EXIT_OK = 0
EXIT_JOB = 1  # the job ended without completing, or was not found
EXIT_UNHEALTHY = 1  # `videoq health`: Redis answers but the named worker does not
EXIT_INPUT = 2
EXIT_UNAVAILABLE = 3  # Redis unreachable
EXIT_TIMEOUT = 4  # `submit --wait` timed out


def print_error(message: str) -> None:
    """One line on stderr, prefixed ``videoq:``."""
    print(f"videoq: {message}", file=sys.stderr)

"""The Redis job store: every read and every atomic write of a job record.

Every write of a job record is one Lua script (``worker/lua/*.lua``), so it applies
whole or not at all; no other module writes a record. Each state change is a
compare-and-set (``transition.lua``): it applies only when the record is in one of the
expected states (and, where given, its fencing field matches), so a late or duplicate
task can never change a terminal record or race a live one. Writes retry on connection
errors (redis-py's ``Retry``) so a Redis blip does not lose a result.

- :mod:`.records`: :class:`JobStore`, the records (create, read, list, transition),
  the active set, the counters;
- :mod:`.books`: the claims of polls and creates, and batch mode's books;
- :mod:`.deliveries`: webhook leases, attempts and their schedule;
- :mod:`.budget`: ``VIDEOQ_MAX_IN_FLIGHT``'s slots and line (``JobStore.budget``);
- :mod:`.scripts`: the Lua scripts, read from their files;
- :mod:`.connection`: the Redis client, and what its errors mean;
- :mod:`.encoding`: field values, inline-image placeholders, fingerprints;
- :mod:`.calls`: the record scripts' arguments and answers, for both stores;
- :mod:`.aio`: :class:`~.aio.AsyncJobStore`, a producer's part of the store on asyncio
  (imported from there: not with this package).
"""

from __future__ import annotations

from .books import BookedPoll, ClaimedPoll, PollBooks
from .budget import Budget
from .calls import Fence, Outcome
from .connection import (
    REDIS_UNREACHABLE,
    connect,
    redis_unavailable,
    refuses_writes,
    write_refusal,
)
from .deliveries import Deliveries
from .encoding import placeholder
from .records import JobStore
from .scripts import lua_script, register

__all__ = [
    "REDIS_UNREACHABLE",
    "BookedPoll",
    "Budget",
    "ClaimedPoll",
    "Deliveries",
    "Fence",
    "JobStore",
    "Outcome",
    "PollBooks",
    "connect",
    "lua_script",
    "placeholder",
    "redis_unavailable",
    "refuses_writes",
    "register",
    "write_refusal",
]

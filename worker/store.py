"""The Redis job store: every read and every atomic write of a job record.

Each state change is a compare-and-set in one Lua script: it applies only when the
record is in one of the expected states (and, where given, its fencing field matches),
so a late or duplicate task can never change a terminal record or race a live one.
Writes retry on connection errors (redis-py's ``Retry``) so a Redis blip does not lose
a result.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Literal

import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from .errors import IdempotencyConflict
from .job import Job
from .keys import LATENCY_BUCKETS, Keys
from .request import GenerationRequest
from .settings import Settings
from .states import TERMINAL_STATES, ErrorKind, JobState

# Every script checks its inputs before its first write, so a bad value (a NaN, a
# missing number) fails the whole script and leaves nothing half-written. ``finite``
# is the check for numbers; it is prepended to the scripts that need it.
LUA_FINITE = """
local function finite(value, what)
  local n = tonumber(value)
  if n == nil or n ~= n or n == math.huge or n == -math.huge then
    error('videoq: ' .. what .. ' is not a finite number: ' .. tostring(value))
  end
  return n
end
"""

# KEYS[1] job, KEYS[2] idempotency key or "", KEYS[3] the active set, KEYS[4] stats,
# KEYS[5] the line for slots, KEYS[6] the full request's key or "" (when the record's
# request is the same as the full one), KEYS[7] the creates book or "" (batch mode:
# the job's create is due at once, with no message).
# KEYS[8] the request's key.
# ARGV: job id, ttl, fingerprint, job-key prefix, due time, "1" to join the line (the
# cap is on), acceptance time, the full request (JSON; "" with no KEYS[6]), the
# request as the record shows it (JSON), then field/value pairs.
# Returns "" when created, else "<existing job id> <fingerprint>". A job id that
# exists already (a redelivered message) is never overwritten.
_CREATE = (
    LUA_FINITE
    + """
finite(ARGV[2], 'ttl')
finite(ARGV[5], 'due time')
finite(ARGV[7], 'acceptance time')
if (#ARGV - 9) % 2 ~= 0 then error('videoq: fields must come in pairs') end
for i = 10, #ARGV, 2 do
  local name = ARGV[i]
  if name == 'created_at' or name == 'updated_at' or name == 'deadline_at' then
    finite(ARGV[i + 1], name)
  end
end
if redis.call('EXISTS', KEYS[1]) == 1 then return ARGV[1] .. ' ' .. ARGV[3] end
if KEYS[2] ~= '' then
  local existing = redis.call('GET', KEYS[2])
  if existing then
    local existing_id = string.match(existing, '^(%S+)')
    if redis.call('EXISTS', ARGV[4] .. existing_id) == 1 then return existing end
  end
end
redis.call('HSET', KEYS[1], unpack(ARGV, 10))
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('SET', KEYS[8], ARGV[9], 'EX', ARGV[2])
if KEYS[6] ~= '' then redis.call('SET', KEYS[6], ARGV[8], 'EX', ARGV[2]) end
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[1])
if ARGV[6] == '1' then redis.call('ZADD', KEYS[5], ARGV[7], ARGV[1]) end
if KEYS[7] ~= '' then redis.call('ZADD', KEYS[7], ARGV[7], ARGV[1]) end
redis.call('HINCRBY', KEYS[4], 'state:queued', 1)
if KEYS[2] ~= '' then
  redis.call('SET', KEYS[2], ARGV[1] .. ' ' .. ARGV[3], 'EX', ARGV[2])
end
return ''
"""
)

# KEYS[1] job, KEYS[2] the active set, KEYS[3] stats, KEYS[4] slots, KEYS[5] waiting,
# KEYS[6] webhooks, KEYS[7] polls, KEYS[8] creates (batch mode's books).
# ARGV: allowed states (comma list), new state, now, fence field, fence op (eq|lt),
#       fence value, ttl when the new state is terminal (0 otherwise), field to
#       increment by one (or ""), terminal states (comma list: never left, whatever
#       the caller allows), job id, due time of the next step (or ""), latency
#       buckets (comma list), then field/value pairs. A terminal state leaves the
#       active set, frees the job's slot (or its place in line), queues its webhook,
#       and is counted (state, error kind, credits, completion latency).
# Returns 1 applied, 0 refused (state or fence), -1 no such job.
_TRANSITION = (
    LUA_FINITE
    + """
local function member(list, value)
  for item in string.gmatch(list, '[^,]+') do
    if item == value then return true end
  end
  return false
end
local NUMERIC_FIELDS = 'credits_used,next_poll_at,submitted_at,claim_at,last_poll_at,poll_seq'
finite(ARGV[3], 'now')
finite(ARGV[7], 'ttl')
if ARGV[11] ~= '' then finite(ARGV[11], 'due time') end
if ARGV[5] == 'lt' then finite(ARGV[6], 'fence value') end
if (#ARGV - 12) % 2 ~= 0 then error('videoq: fields must come in pairs') end
for i = 13, #ARGV, 2 do
  if ARGV[i + 1] ~= '' and member(NUMERIC_FIELDS, ARGV[i]) then
    finite(ARGV[i + 1], ARGV[i])
  end
end
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return -1 end
if member(ARGV[9], state) then return 0 end
if not member(ARGV[1], state) then return 0 end
if ARGV[4] ~= '' then
  local current = redis.call('HGET', KEYS[1], ARGV[4]) or ''
  if ARGV[5] == 'eq' then
    if current ~= ARGV[6] then return 0 end
  else
    if (tonumber(current) or 0) >= tonumber(ARGV[6]) then return 0 end
  end
end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'updated_at', ARGV[3])
if #ARGV > 12 then redis.call('HSET', KEYS[1], unpack(ARGV, 13)) end
if ARGV[8] ~= '' then redis.call('HINCRBY', KEYS[1], ARGV[8], 1) end
if state ~= ARGV[2] then
  redis.call('HINCRBY', KEYS[3], 'state:' .. state, -1)
  redis.call('HINCRBY', KEYS[3], 'state:' .. ARGV[2], 1)
end
if tonumber(ARGV[7]) > 0 then
  redis.call('HSET', KEYS[1], 'finished_at', ARGV[3])
  redis.call('EXPIRE', KEYS[1], ARGV[7])
  redis.call('ZREM', KEYS[2], ARGV[10])
  redis.call('ZREM', KEYS[4], ARGV[10])
  redis.call('ZREM', KEYS[5], ARGV[10])
  redis.call('ZREM', KEYS[7], ARGV[10])
  redis.call('ZREM', KEYS[8], ARGV[10])
  local hook = redis.call('HGET', KEYS[1], 'webhook_url')
  if hook and hook ~= '' then
    redis.call('HSET', KEYS[1], 'webhook_state', 'pending')
    redis.call('ZADD', KEYS[6], ARGV[3], ARGV[10])
  end
  local kind = redis.call('HGET', KEYS[1], 'error_kind')
  if kind and kind ~= '' then redis.call('HINCRBY', KEYS[3], 'error_kind:' .. kind, 1) end
  local credits = tonumber(redis.call('HGET', KEYS[1], 'credits_used') or '')
  if credits and credits == credits and credits >= 0 and credits < math.huge then
    redis.call('HINCRBYFLOAT', KEYS[3], 'credits_used', credits)
  end
  if ARGV[2] == 'completed' then
    local created = tonumber(redis.call('HGET', KEYS[1], 'created_at')) or tonumber(ARGV[3])
    local took = tonumber(ARGV[3]) - created
    if took ~= took or took == math.huge or took == -math.huge then took = 0 end
    redis.call('HINCRBYFLOAT', KEYS[3], 'latency_sum', took)
    redis.call('HINCRBY', KEYS[3], 'latency_count', 1)
    for bound in string.gmatch(ARGV[12], '[^,]+') do
      if took <= tonumber(bound) then redis.call('HINCRBY', KEYS[3], 'latency_le:' .. bound, 1) end
    end
  end
elseif ARGV[11] ~= '' then
  redis.call('ZADD', KEYS[2], ARGV[11], ARGV[10])
end
return 1
"""
)
# KEYS[1] slots, KEYS[2] waiting. ARGV: job id, max, now, acceptance time.
# The line (``waiting``) is in acceptance order: producers put each job in it when the
# cap is on. A job takes a free slot only if fewer jobs are ahead of it in line than
# there are free slots; else it waits. Returns 1 (holds a slot) or 0 (waiting).
_ACQUIRE = (
    LUA_FINITE
    + """
finite(ARGV[2], 'max')
finite(ARGV[3], 'now')
finite(ARGV[4], 'acceptance time')
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 1 end
redis.call('ZADD', KEYS[2], 'NX', ARGV[4], ARGV[1])
local free = tonumber(ARGV[2]) - redis.call('ZCARD', KEYS[1])
if free > 0 and redis.call('ZRANK', KEYS[2], ARGV[1]) < free then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 1
end
return 0
"""
)

# KEYS[1] job, KEYS[2] webhooks. ARGV: attempt (JSON object), webhook state, next try
# time (or "" when done), job id, the lease the attempt was made under (or "").
# Appends the attempt to the record's list and ends the lease. Returns the number of
# attempts, 0 when the job is gone, -1 when the lease is no longer the record's
# (it ran out, and another delivery took the webhook): then nothing is written.
_WEBHOOK_ATTEMPT = (
    LUA_FINITE
    + """
local ok, attempt = pcall(cjson.decode, ARGV[1])
if not ok or type(attempt) ~= 'table' then error('videoq: the attempt is not a JSON object') end
if ARGV[3] ~= '' then finite(ARGV[3], 'next try') end
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[2], ARGV[4])
  return 0
end
if ARGV[5] ~= '' and (redis.call('HGET', KEYS[1], 'webhook_lease') or '') ~= ARGV[5] then
  return -1
end
local raw = redis.call('HGET', KEYS[1], 'webhook_attempts')
local attempts = {}
if raw and raw ~= '' then attempts = cjson.decode(raw) end
table.insert(attempts, attempt)
redis.call('HSET', KEYS[1], 'webhook_attempts', cjson.encode(attempts),
           'webhook_state', ARGV[2], 'webhook_lease', '0')
if ARGV[3] ~= '' then
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
else
  redis.call('ZREM', KEYS[2], ARGV[4])
end
return #attempts
"""
)

# KEYS[1] job, KEYS[2] webhooks. ARGV: now, lease end, job id.
# Takes the lease on a pending webhook's delivery unless another delivery holds it,
# and moves the webhook's due time (what the sweeper reads) to the lease's end.
# Returns 1 when taken, 0 when the webhook is not pending or a delivery holds it.
_CLAIM_WEBHOOK = (
    LUA_FINITE
    + """
local now = finite(ARGV[1], 'now')
finite(ARGV[2], 'lease end')
if redis.call('HGET', KEYS[1], 'webhook_state') ~= 'pending' then return 0 end
local held = tonumber(redis.call('HGET', KEYS[1], 'webhook_lease') or '') or 0
if held > now then return 0 end
redis.call('HSET', KEYS[1], 'webhook_lease', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
return 1
"""
)


def lua_script(name: str) -> str:
    """A script of ``worker/lua``, with the ``finite`` check before it."""
    return LUA_FINITE + (Path(__file__).parent / "lua" / f"{name}.lua").read_text()


_TERMINAL = ",".join(sorted(s.value for s in TERMINAL_STATES))
_BUCKETS = ",".join(str(b) for b in LATENCY_BUCKETS)


@dataclass(frozen=True)
class ClaimedPoll:
    """A poll its claim holds: the record's ``poll_seq`` already is ``seq``."""

    job_id: str
    deadline_at: float
    seq: int
    errors: int  # transient errors in a row (batch mode keeps them on the record)
    generation_id: str
    due_at: float = 0.0  # when it was due (its place in line in batch mode's book)


@dataclass(frozen=True)
class BookedPoll:
    """A poll to put in batch mode's book. ``seq``: the number of the poll step that
    books it; the booking then also notes on the record, if that step still holds the
    claim (``poll_seq == seq``), the next poll's time and ``last_error``, and moves the
    job's due time in the active set. None: a first poll, booked as it is."""

    job_id: str
    due_at: float
    errors: int = 0  # transient errors in a row, kept on the record
    seq: int | None = None
    last_error: str | None = ""  # None: the record's is kept


class Outcome(Enum):
    APPLIED = "applied"
    REFUSED = "refused"  # the record was not in an expected state, or the fence moved on
    MISSING = "missing"  # no such record (never existed, or expired)


@dataclass(frozen=True)
class Fence:
    """A condition on one field: equal to ``value``, or (``lt``) numerically below it."""

    field: str
    value: str
    op: Literal["eq", "lt"] = "eq"


def _fmt(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, Enum):
        return str(value.value)
    return str(value)


# Redis cannot serve a command now, though nothing is wrong with the command: it is
# unreachable or too slow, or it refuses writes (out of memory at maxmemory, a
# read-only replica, a failed RDB/AOF save).
REDIS_UNREACHABLE = (RedisConnectionError, RedisTimeoutError)


def write_refusal(exc: BaseException) -> str | None:
    """Why Redis refused a write that it will take again once it has memory, is a
    primary again, or can persist again (OOM, READONLY, MISCONF); None for any other
    error."""
    if not isinstance(exc, redis.exceptions.ResponseError):
        return None
    text = str(exc)
    if (
        isinstance(exc, redis.exceptions.OutOfMemoryError)
        or text.startswith("OOM")
        or ("OOM command not allowed" in text)
    ):
        return "out of memory (maxmemory reached)"
    if isinstance(exc, redis.exceptions.ReadOnlyError) or text.startswith("READONLY"):
        return "it is a read-only replica"
    if "MISCONF" in text[:200]:
        return "it cannot persist to disk (MISCONF)"
    return None


def refuses_writes(exc: BaseException) -> bool:
    """True when Redis refused a write it will take again later (:func:`write_refusal`)."""
    return write_refusal(exc) is not None


def redis_unavailable(exc: BaseException) -> bool:
    """Redis cannot serve videoq now (unreachable, or refusing writes): retry later."""
    return isinstance(exc, REDIS_UNREACHABLE) or refuses_writes(exc)


def connect(settings: Settings) -> redis.Redis:
    """A Redis client that retries commands through short connection blips."""
    return redis.Redis.from_url(
        settings.redis_url,
        decode_responses=True,
        socket_timeout=5,
        socket_connect_timeout=3,
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), settings.redis_retries),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )


class JobStore:
    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.redis = client
        self.keys = Keys(settings.key_prefix)
        self.retention = settings.retention
        self.stall_timeout = settings.stall_timeout
        self.max_in_flight = settings.max_in_flight
        self._create = client.register_script(_CREATE)
        self._transition = client.register_script(_TRANSITION)
        self._acquire = client.register_script(_ACQUIRE)
        self._webhook_attempt = client.register_script(_WEBHOOK_ATTEMPT)
        self._claim_webhook = client.register_script(_CLAIM_WEBHOOK)
        self._claim_polls = client.register_script(lua_script("claim_polls"))
        self._schedule_polls = client.register_script(lua_script("schedule_polls"))
        self._take_creates = client.register_script(lua_script("take_creates"))
        self._claim_creates = client.register_script(lua_script("claim_creates"))

    # --- creating and reading ------------------------------------------------------------

    def create(
        self,
        job_id: str,
        request: GenerationRequest,
        *,
        accepted_at: float,
        deadline_at: float,
        idempotency_key: str | None = None,
        due_at: float | None = None,
        webhook_url: str | None = None,
        owner: str | None = None,
        book: bool = False,
    ) -> tuple[str, bool]:
        """Store a new ``queued`` job. Returns ``(job id, created)``.

        With an idempotency key already in use (by the same ``owner``), returns the
        existing job's id and ``created=False``; a different request or webhook under
        the same key raises :class:`IdempotencyConflict`. The sweeper starts the job if
        its first step has not started by ``due_at`` (default: ``accepted_at`` + the
        stall timeout). Inline ``data:`` images are kept out of the record's
        ``request`` (see :meth:`full_request`). ``book``: batch mode, the create is
        put in the creates book in the same script (no message to lose).
        """
        stored = request.stored()
        fingerprint = _fingerprint(
            stored if webhook_url is None else {**stored, "webhook_url": webhook_url}
        )
        ttl = int(self.retention + max(0.0, deadline_at - accepted_at)) + 1
        shown = _without_inline_images(stored)
        full = json.dumps(stored, sort_keys=True)
        # The request has a key of its own: a record whose values are all short stays
        # in Redis's compact hash encoding (a listpack), about a third of the memory.
        fields: dict[str, object] = {
            "id": job_id,
            "state": JobState.QUEUED,
            "created_at": accepted_at,
            "updated_at": accepted_at,
            "deadline_at": deadline_at,
            "attempts": 0,
            "poll_seq": 0,
            "idempotency_key": idempotency_key,
        }
        if webhook_url:
            fields["webhook_url"] = webhook_url
        if owner:
            fields["owner"] = owner
        idem_key = self.keys.idempotency(idempotency_key, owner) if idempotency_key else ""
        payload_key = self.keys.payload(job_id) if shown != stored else ""
        existing = self._create(
            keys=[
                self.keys.job(job_id),
                idem_key,
                self.keys.active(),
                self.keys.stats(),
                self.keys.waiting(),
                payload_key,
                self.keys.creates() if book else "",
                self.keys.request(job_id),
            ],
            args=[
                job_id,
                ttl,
                fingerprint,
                self.keys.job(""),
                repr(accepted_at + self.stall_timeout if due_at is None else due_at),
                "1" if self.max_in_flight else "0",
                repr(accepted_at),
                full if payload_key else "",
                json.dumps(shown, sort_keys=True),
                *_pairs(fields),
            ],
        )
        if not existing:
            return job_id, True
        existing_id, _, existing_fp = str(existing).partition(" ")
        if existing_fp != fingerprint:
            raise IdempotencyConflict(idempotency_key or "", existing_id)
        return existing_id, False

    def create_failed(self, job_id: str, request: object, kind: ErrorKind, message: str) -> None:
        """Record a job refused by the worker (a foreign ``send_task`` with bad input)."""
        now = time.time()
        key = self.keys.job(job_id)
        fields = {
            "id": job_id,
            "state": JobState.FAILED,
            "request": json.dumps({"refused": str(request)[:500]}),
            "created_at": now,
            "updated_at": now,
            "finished_at": now,
            "deadline_at": now,
            "error_kind": kind,
            "error_message": message,
        }
        if not self.redis.hsetnx(key, "id", job_id):
            return  # a redelivery: the first delivery already recorded it
        self.redis.hset(key, mapping={k: _fmt(v) for k, v in fields.items()})
        self.redis.expire(key, self.retention)
        self.redis.hincrby(self.keys.stats(), "state:failed", 1)
        self.redis.hincrby(self.keys.stats(), f"error_kind:{_fmt(kind)}", 1)

    def get(self, job_id: str) -> Job | None:
        return self.get_many([job_id])[0]

    def full_request(self, job: Job) -> dict[str, Any]:
        """The job's request as submitted, inline images included: the payload key
        when the record holds placeholders, else the record's own ``request``."""
        raw = self.redis.get(self.keys.payload(job.id))
        if raw:
            full: dict[str, Any] = json.loads(raw)
            return full
        return job.request

    def create_claim(self, job_id: str) -> tuple[str, float]:
        """The token and time of the current create claim (``("", 0.0)`` if none)."""
        token, claim_at = self.redis.hmget(self.keys.job(job_id), ["claim_token", "claim_at"])
        return str(token or ""), float(claim_at or 0.0)

    def keep_generation_id(self, job_id: str, generation_id: str) -> bool:
        """On a job cancelled during its create, still record the upstream id."""
        key = self.keys.job(job_id)
        if self.redis.hget(key, "state") != JobState.CANCELLED.value:
            return False
        self.redis.hset(key, "generation_id", generation_id)  # terminal states are final
        return True

    def iter_ids(self, count: int = 500) -> Iterable[str]:
        cursor = 0
        while True:
            cursor, ids = self.scan_ids(cursor, count)
            yield from ids
            if cursor == 0:
                return

    def scan_ids(self, cursor: int, count: int) -> tuple[int, list[str]]:
        """One SCAN step over the job keys: (next cursor, 0 at the end; job ids)."""
        prefix_len = len(self.keys.job(""))
        following, keys = self.redis.scan(cursor, match=self.keys.job_pattern(), count=count)
        return int(following), [str(k)[prefix_len:] for k in keys]

    # --- the active set (what the sweeper reads) ---------------------------------------

    def overdue(self, now: float, limit: int) -> list[str]:
        """Ids of unfinished jobs whose next step should have started by ``now``."""
        return self._due_by(self.keys.active(), now, limit)

    def postpone(self, job_id: str, due_at: float) -> None:
        """Move a job's due time later (never earlier; never re-adds a finished job)."""
        self._later(self.keys.active(), job_id, due_at)

    def forget(self, job_id: str) -> None:
        """Drop a job from the active set (its record is gone or terminal)."""
        self.redis.zrem(self.keys.active(), job_id)

    # Both schedules (the active set, pending webhooks) are sorted sets of due times.

    def _due_by(self, schedule: str, now: float, limit: int) -> list[str]:
        ids = self.redis.zrangebyscore(schedule, "-inf", repr(now), start=0, num=limit)
        return [str(i) for i in ids]

    def _later(self, schedule: str, job_id: str, due_at: float) -> None:
        self.redis.zadd(schedule, {job_id: due_at}, xx=True, gt=True)

    def active_count(self) -> int:
        return int(self.redis.zcard(self.keys.active()))

    # --- the concurrency budget (VIDEOQ_MAX_IN_FLIGHT) ----------------------------------

    def acquire_slot(self, job_id: str, accepted_at: float, limit: int, now: float) -> bool:
        """Take a slot for this job (True), or wait in line for one (False)."""
        result = self._acquire(
            keys=[self.keys.slots(), self.keys.waiting()],
            args=[job_id, limit, repr(now), repr(accepted_at)],
        )
        return int(result) == 1

    def next_in_line(self, limit: int) -> list[Job]:
        """The waiting jobs that free slots are for, oldest first (stale entries dropped)."""
        free = limit - self.in_flight_slots()
        out: list[Job] = []
        while free > len(out):
            ids = self.redis.zrange(self.keys.waiting(), len(out), free - 1)
            if not ids:
                break
            for job_id in ids:
                job = self.get(str(job_id))
                if job is None or job.state is not JobState.QUEUED:
                    self.redis.zrem(self.keys.waiting(), str(job_id))
                    break  # re-read the line from where we are
                out.append(job)
        return out

    def in_flight_slots(self) -> int:
        return int(self.redis.zcard(self.keys.slots()))

    # --- webhooks --------------------------------------------------------------------------

    def webhook_attempt(
        self,
        job_id: str,
        attempt: Mapping[str, object],
        state: str,
        next_at: float | None,
        *,
        lease: str = "",
    ) -> int:
        """Record one delivery attempt made under ``lease`` (from :meth:`claim_webhook`);
        ``next_at`` None means no more tries. Returns -1, writing nothing, when the
        lease ran out and another delivery holds the webhook."""
        return int(
            self._webhook_attempt(
                keys=[self.keys.job(job_id), self.keys.webhooks()],
                args=[
                    json.dumps(attempt),
                    state,
                    "" if next_at is None else repr(next_at),
                    job_id,
                    lease,
                ],
            )
        )

    def claim_webhook(self, job_id: str, now: float, lease_until: float) -> str | None:
        """Take the lease on a pending webhook's delivery: the lease (to record the
        attempt under), or None when it is not pending or a delivery in progress holds
        it."""
        lease = repr(lease_until)
        result = self._claim_webhook(
            keys=[self.keys.job(job_id), self.keys.webhooks()],
            args=[repr(now), lease, job_id],
        )
        return lease if int(result) == 1 else None

    def webhooks_due(self, now: float, limit: int) -> list[str]:
        return self._due_by(self.keys.webhooks(), now, limit)

    def forget_webhook(self, job_id: str) -> None:
        self.redis.zrem(self.keys.webhooks(), job_id)

    def postpone_webhook(self, job_id: str, due_at: float) -> None:
        self._later(self.keys.webhooks(), job_id, due_at)

    # --- the claims, and batch mode's books ------------------------------------------

    def claim_poll(self, job_id: str, seq: int, now: float, due_at: float) -> ClaimedPoll | None:
        """Chain mode: claim poll ``seq`` of a generating job (None: the job is not
        generating, or this poll is a duplicate or stale one). ``due_at``: when the
        sweeper may take the job for lost."""
        claimed, _ = self._claim(now, due_at, due_at, ["ids", job_id, seq])
        return claimed[0] if claimed else None

    def claim_due_polls(
        self, horizon: float, limit: int, now: float, lease_until: float, due_at: float
    ) -> tuple[list[ClaimedPoll], int]:
        """Batch mode: claim up to ``limit`` polls due by ``horizon`` in the book (the
        same claim as :meth:`claim_poll`), leased in the book until ``lease_until``;
        also how many more are due."""
        return self._claim(now, lease_until, due_at, ["due", repr(horizon), limit])

    def _claim(
        self, now: float, lease_until: float, due_at: float, mode: list[str | int]
    ) -> tuple[list[ClaimedPoll], int]:
        raw = self._claim_polls(
            keys=[self.keys.polls(), self.keys.active()],
            args=[repr(now), repr(lease_until), repr(due_at), self.keys.job(""), *mode],
        )
        claimed = [
            ClaimedPoll(
                str(raw[i]),
                float(raw[i + 1] or 0),
                int(raw[i + 2]),
                int(raw[i + 3] or 0),
                str(raw[i + 4]),
                float(raw[i + 5]),
            )
            for i in range(1, len(raw), 6)
        ]
        return claimed, int(raw[0])

    def schedule_polls(self, polls: Iterable[BookedPoll], now: float) -> int:
        """Batch mode: book polls, in one script; those fenced by a poll number also
        note their step's outcome on the record (see :class:`BookedPoll`). Returns how
        many were booked (a fenced one whose record moved on is not)."""
        args: list[str | int] = [self.keys.job(""), repr(now), repr(self.stall_timeout)]
        for p in polls:
            args += [
                p.job_id,
                repr(p.due_at),
                p.errors,
                "" if p.seq is None else p.seq,
                "0" if p.last_error is None else "1",
                p.last_error or "",
            ]
        if len(args) == 3:
            return 0
        return int(self._schedule_polls(keys=[self.keys.polls(), self.keys.active()], args=args))

    def renew_poll_leases(self, job_ids: Iterable[str], lease_until: float, due_at: float) -> None:
        """Batch mode: a tick still waiting for these jobs' answers keeps its lease."""
        ids = list(job_ids)
        if ids:
            pipe = self.redis.pipeline(transaction=False)
            pipe.zadd(self.keys.polls(), dict.fromkeys(ids, lease_until), xx=True, gt=True)
            pipe.zadd(self.keys.active(), dict.fromkeys(ids, due_at), xx=True, gt=True)
            pipe.execute()

    def book_creates(self, creates: Mapping[str, float]) -> None:
        """Batch mode: book creates ``{job id: due time}`` (a retry, a job woken from
        the line, a resumed one)."""
        if creates:
            self.redis.zadd(self.keys.creates(), dict(creates))

    def unbook_create(self, job_id: str) -> None:
        self.redis.zrem(self.keys.creates(), job_id)

    def take_creates(self, horizon: float, limit: int, lease_until: float) -> tuple[list[str], int]:
        """Batch mode: lease up to ``limit`` creates due by ``horizon``; also how many
        more are due."""
        raw = self._take_creates(
            keys=[self.keys.creates()], args=[repr(horizon), limit, repr(lease_until)]
        )
        return [str(i) for i in raw[1:]], int(raw[0])

    def claim_creates(
        self, job_ids: Iterable[str], token: str, now: float, due_at: float
    ) -> set[str]:
        """The create claim (``queued -> submitting`` under ``token``) of each job still
        queued; the ids claimed. Both modes' one way to start an upstream create."""
        ids = list(job_ids)
        if not ids:
            return set()
        claimed = self._claim_creates(
            keys=[self.keys.active(), self.keys.stats(), self.keys.creates()],
            args=[repr(now), repr(due_at), self.keys.job(""), token, *ids],
        )
        return {str(i) for i in claimed}

    def get_many(self, job_ids: list[str]) -> list[Job | None]:
        """Several records (each with its request) in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hgetall(self.keys.job(job_id))
            pipe.get(self.keys.request(job_id))
        raw = pipe.execute()
        return [_job(raw[i], raw[i + 1]) for i in range(0, len(raw), 2)]

    # --- metrics -----------------------------------------------------------------------

    def note_upstream_error(self, kind: str) -> None:
        """Count one failed upstream call (``rate_limited``, ``timeout`` ...). Best
        effort: a counter Redis refuses must not decide what happens to the job."""
        with contextlib.suppress(redis.RedisError):
            self.redis.hincrby(self.keys.stats(), f"upstream_error:{kind}", 1)

    def stats(self) -> dict[str, float]:
        """The raw counters behind the metrics (see ``worker.metrics``)."""
        raw = self.redis.hgetall(self.keys.stats())
        return {str(k): float(v) for k, v in raw.items()}

    # --- the one atomic write ------------------------------------------------------------

    def transition(
        self,
        job_id: str,
        allowed: Iterable[JobState],
        new_state: JobState,
        fields: Mapping[str, object] | None = None,
        *,
        fence: Fence | None = None,
        increment: str | None = None,
        now: float | None = None,
        due_at: float | None = None,
    ) -> Outcome:
        """Move a job to ``new_state`` if it is in ``allowed`` (and the fence holds).

        ``due_at``: when the job's next step should have started; past it (plus the
        stall timeout, which the caller adds) the sweeper resumes the job.
        """
        now = time.time() if now is None else now
        ttl = self.retention if new_state.is_terminal else 0
        result = self._transition(
            keys=[
                self.keys.job(job_id),
                self.keys.active(),
                self.keys.stats(),
                self.keys.slots(),
                self.keys.waiting(),
                self.keys.webhooks(),
                self.keys.polls(),
                self.keys.creates(),
            ],
            args=[
                ",".join(s.value for s in allowed),
                new_state.value,
                repr(now),
                fence.field if fence else "",
                fence.op if fence else "eq",
                fence.value if fence else "",
                ttl,
                increment or "",
                _TERMINAL,
                job_id,
                "" if due_at is None else repr(due_at),
                _BUCKETS,
                *_pairs(fields or {}),
            ],
        )
        return {1: Outcome.APPLIED, 0: Outcome.REFUSED}.get(int(result), Outcome.MISSING)


def _job(raw: Mapping[Any, Any] | None, request: str | None) -> Job | None:
    """A record from its hash and its request's key (older records, and refused ones,
    keep the request in the hash)."""
    if not raw or "state" not in raw:
        return None
    fields = {str(k): str(v) for k, v in raw.items()}
    if request is not None and "request" not in fields:
        fields["request"] = str(request)
    return Job.from_hash(fields)


def _pairs(fields: Mapping[str, object]) -> list[str]:
    out: list[str] = []
    for name, value in fields.items():
        out.extend((name, _fmt(value)))
    return out


_IMAGE_FIELDS = ("image_url", "static_mask")


def _without_inline_images(stored: dict[str, Any]) -> dict[str, Any]:
    """``stored`` with each inline ``data:`` image replaced by a short placeholder."""
    shown = dict(stored)
    for name in _IMAGE_FIELDS:
        if isinstance(shown.get(name), str):
            shown[name] = placeholder(shown[name])
    masks = shown.get("dynamic_masks")
    if isinstance(masks, list):
        shown["dynamic_masks"] = [
            {**m, "mask": placeholder(m["mask"])}
            if isinstance(m, dict) and isinstance(m.get("mask"), str)
            else m
            for m in masks
        ]
    return shown


def placeholder(value: str) -> str:
    """A ``data:`` URL as the record shows it (its type, size and hash); anything
    else unchanged."""
    if not value.startswith("data:"):
        return value
    head = value.split(",", 1)[0][:100]
    digest = hashlib.sha256(value.encode()).hexdigest()[:8]
    return f"{head},\u2026 ({len(value.encode())} bytes, sha256 {digest}\u2026)"


def _fingerprint(stored: Mapping[str, object]) -> str:
    return hashlib.sha256(json.dumps(stored, sort_keys=True).encode()).hexdigest()[:32]

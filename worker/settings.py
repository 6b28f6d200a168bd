"""All of videoq's configuration, in one typed object.

Every value comes from the environment or a ``.env`` file. The names are part of the
product's contract (docs/configuration.md is generated from the field descriptions):
``AIMLAPI_KEY`` and ``AIMLAPI_BASE_URL`` talk about the upstream; everything else is
``VIDEOQ_``-prefixed.
"""

from __future__ import annotations

import base64
import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_BASE_URL = "https://api.aimlapi.com/v2"
MODEL_ID = "kling-video/v2.1/pro/image-to-video"
CALLER_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
REDIS_SCHEMES = ("redis", "rediss", "unix", "sentinel")
REDIS_DATABASES = 16  # Redis's default `databases`; a larger index is almost surely a typo


def check_redis_url(url: str) -> str:
    """Refuse a Redis URL that redis-py or kombu would misread; return it unchanged."""
    for part in url.split(";"):  # kombu's Sentinel form lists several URLs
        _check_one_redis_url(part.strip())
    return url


def _check_one_redis_url(url: str) -> None:
    parts = urlsplit(url)
    if not parts.scheme or "://" not in url:
        raise ValueError(
            f"{_shown(url)!r} has no scheme: write redis://host:port/db (or rediss://, "
            "unix://, sentinel://)"
        )
    if parts.scheme not in REDIS_SCHEMES:
        raise ValueError(f"unknown scheme {parts.scheme!r}: use one of {', '.join(REDIS_SCHEMES)}")
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError("unix:// needs a socket path, e.g. unix:///run/redis.sock")
        return
    try:
        port = parts.port
    except ValueError:
        raise ValueError("the port must be a number from 1 to 65535") from None
    if port == 0:
        raise ValueError("the port must be a number from 1 to 65535")
    if not parts.hostname:
        raise ValueError("has no host: write redis://host:port/db")
    db = parts.path.strip("/")
    if db and (not db.isdigit() or not 0 <= int(db) < REDIS_DATABASES):
        raise ValueError(
            f"the database index must be a number from 0 to {REDIS_DATABASES - 1}, not {db[:20]!r}"
        )


def _shown(url: str) -> str:
    """The URL without anything that may be a password (for an error message)."""
    return url.rpartition("@")[2][:100]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="VIDEOQ_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        hide_input_in_errors=True,  # a refused value may be a token or a key
    )

    # --- upstream -----------------------------------------------------------------------
    aimlapi_key: SecretStr = Field(
        default=SecretStr(""),
        validation_alias=AliasChoices("AIMLAPI_KEY", "aimlapi_key"),
        description="Bearer key for the AI/ML API. Never logged, never put in messages or job "
        "records; an upstream message echoing it is masked.",
    )
    aimlapi_base_url: str = Field(
        default=DEFAULT_BASE_URL,
        validation_alias=AliasChoices("AIMLAPI_BASE_URL", "aimlapi_base_url"),
        description="Upstream base URL (point it at `videoq simulator` for local work).",
    )
    upstream_path: Literal["legacy", "universal"] = Field(
        default="legacy",
        description="`legacy`: `/generate/video/kling/generation`; `universal`: "
        "`/video/generations`.",
    )
    http_connect_timeout: float = Field(
        default=5.0, gt=0, description="Connect timeout of every upstream call, in seconds."
    )
    http_read_timeout: float = Field(
        default=30.0, gt=0, description="Read timeout of every upstream call, in seconds."
    )
    http_total_timeout: float | None = Field(
        default=None,
        gt=0,
        description="Most seconds one upstream call may take in all: connect, send, headers "
        "and body (default: the connect plus the read timeout). A peer that trickles its "
        "answer under the read timeout is cut off here. A call is also cut short at its "
        "job's deadline.",
    )
    upstream_rate: float = Field(
        default=0.0,
        ge=0,
        allow_inf_nan=False,
        description="Most upstream calls per second (creates and status polls together) "
        "across every worker process and host, shared through Redis on Redis's clock (0: "
        "unlimited). Under contention creates and polls each get at least half; a call "
        "with no slot within a second is not sent but rescheduled (`Throttled`). Set the "
        "same value on every worker.",
    )

    # --- Redis ----------------------------------------------------------------------------
    redis_url: str = Field(
        default="redis://localhost:6379/0",
        description="Redis for both the Celery broker and the job records "
        "(`redis://host:port/db`). A malformed URL (no or unknown scheme, a database index "
        "outside 0-15, a bad port) is refused at start-up with one line naming this setting.",
    )
    key_prefix: str = Field(
        default="videoq",
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Prefix of every job-record key.",
    )
    queue: str = Field(
        default="videoq", pattern=r"^[A-Za-z0-9_.-]+$", description="Celery queue name."
    )
    redis_retries: int = Field(
        default=6,
        ge=0,
        description="Retries (exponential backoff) of a job-record read or write on a Redis "
        "connection error.",
    )

    # --- the chain ------------------------------------------------------------------------
    poll_interval: float = Field(default=10.0, gt=0, description="Seconds between status polls.")
    poll_mode: Literal["chain", "batch"] = Field(
        default="batch",
        description="`batch`: creates and polls are entries in Redis books, and one tick task "
        "takes every one due in a slot. `chain`: one Celery task per create and per poll, a "
        "row each in Flower; it falls behind at a few thousand jobs in flight. Set the same "
        "value on every worker and producer.",
    )
    poll_tick: float = Field(
        default=0.25,
        gt=0,
        le=5,
        description="Batch mode: width of a tick slot, in seconds. The pumps send at most one "
        "tick per slot and book for the whole fleet (more when a tick leaves work due).",
    )
    poll_batch: int = Field(
        default=200,
        ge=1,
        le=5000,
        description="Batch mode: most polls (or creates) one tick task claims; the rest goes "
        "to another tick at once, so pool slots and workers share a burst.",
    )
    poll_concurrency: int = Field(
        default=100,
        ge=1,
        le=1000,
        description="Batch mode: status calls one worker process makes at once, on one "
        "asyncio loop (and the HTTP connections it keeps alive).",
    )
    deadline: float = Field(
        default=1000.0,
        gt=0,
        description="Seconds from acceptance until a job ends `timed_out`.",
    )
    retry_backoff: float = Field(
        default=2.0,
        gt=0,
        description="First backoff after a transient upstream error, in seconds.",
    )
    retry_backoff_max: float = Field(
        default=60.0,
        gt=0,
        description="Largest backoff after transient upstream errors, in seconds (a longer "
        "`Retry-After` still wins).",
    )
    retention: int = Field(
        default=7 * 24 * 3600,
        gt=0,
        description="Seconds a finished job record is kept (7 days).",
    )
    visibility_timeout: int = Field(
        default=300,
        gt=0,
        description="Seconds before Redis redelivers an unacknowledged message. Must exceed "
        "the longest countdown plus one upstream call (`VIDEOQ_HTTP_TOTAL_TIMEOUT`); "
        "checked at start-up.",
    )
    eta_task_limit: int = Field(
        default=20000,
        gt=0,
        description="Most countdown tasks one worker process holds in memory (Celery's "
        "`worker_eta_task_limit`).",
    )
    stall_timeout: float = Field(
        default=60.0,
        gt=0,
        description=(
            "Seconds a job's next step may be late before the sweeper resumes the job "
            "from its record (a killed worker's held tasks are found this way)."
        ),
    )
    sweep_interval: float = Field(
        default=10.0,
        ge=0,
        description="Seconds between sweeps for stalled jobs. Every worker runs the sweeper; "
        "a Redis lock lets one of them sweep per interval. `0` turns it off in that worker.",
    )
    sweep_batch: int = Field(default=1000, gt=0, description="Most stalled jobs one sweep resumes.")
    log_level: str = Field(default="INFO", description="Worker log level.")
    log_format: Literal["logfmt", "json"] = Field(
        default="logfmt",
        description="Worker log lines: `logfmt` text, or `json`: one JSON object per line "
        "(Celery's own lines too), with `event`, `job_id`, `state` and `attempt` as keys.",
    )

    # --- web apps -------------------------------------------------------------------------
    api_tokens: SecretStr = Field(
        default=SecretStr(""),
        description=(
            "Comma-separated Bearer tokens that `videoq serve` accepts (it refuses to start "
            "without one). `name:token` names a caller (1-64 of `A-Z a-z 0-9 _ . -`): it "
            "sees, lists and cancels only its own jobs, and its idempotency keys are its own. "
            "Plain tokens see every job."
        ),
    )
    api_admins: str = Field(
        default="admin",
        description="Comma-separated caller names (from `VIDEOQ_API_TOKENS`) that see and "
        "cancel every job.",
    )
    max_request_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1024,
        description=(
            "Largest request accepted, in bytes: the gateway answers 413 past it without "
            "reading further, and `Client.submit` raises `RequestError` (field `request`) "
            "for a larger stored request."
        ),
    )
    max_in_flight: int = Field(
        default=0,
        ge=0,
        description=(
            "Most upstream generations in flight at once, across all workers (0: no cap). "
            "Jobs over the cap wait in `queued`, in acceptance order. Set the same value on "
            "producers and workers."
        ),
    )
    webhook_secret: SecretStr = Field(
        default=SecretStr(""),
        description=(
            "Signing secret for webhooks (`whsec_` + base64, Standard Webhooks). "
            "A `webhook_url` is refused without it."
        ),
    )
    webhook_window: float = Field(
        default=3600.0,
        gt=0,
        description="Seconds after a job ends during which a failed webhook is retried.",
    )
    webhook_timeout: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="Most seconds one webhook delivery may take in all (connect, send, "
        "answer); a slower receiver's attempt fails and is retried.",
    )
    allow_private_urls: bool = Field(
        default=False,
        description=(
            "Allow loopback and private hosts for `webhook_url` and for the upstream's video "
            "URLs (local set-ups, the simulator). `image_url` and masks must always be "
            "public: the upstream fetches them."
        ),
    )

    # --- operations -----------------------------------------------------------------------
    flower_basic_auth: SecretStr = Field(
        default=SecretStr(""),
        description="`user:password` (comma-separated for several) for `videoq flower`. "
        "Required for any address other than loopback.",
    )
    flower_db: str = Field(
        default="videoq-flower.db",
        description="File where `videoq flower` keeps its state, so a restart keeps recent "
        "task history.",
    )

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        return check_redis_url(value)

    @field_validator("webhook_secret")
    @classmethod
    def _webhook_secret(cls, value: SecretStr) -> SecretStr:
        raw = value.get_secret_value()
        if raw:
            try:
                key = base64.b64decode(raw.removeprefix("whsec_"), validate=True)
            except ValueError:
                key = b""
            if not key:
                raise ValueError("must be whsec_ followed by base64 (the signing key)")
        return value

    @field_validator("api_tokens")
    @classmethod
    def _api_tokens(cls, value: SecretStr) -> SecretStr:
        _parse_callers(value.get_secret_value())
        return value

    @field_validator("api_admins")
    @classmethod
    def _api_admins(cls, value: str) -> str:
        for name in (n.strip() for n in value.split(",")):
            if name and not CALLER_NAME.match(name):
                raise ValueError(f"caller names are 1-64 of A-Z a-z 0-9 _ . -, not {name!r}")
        return value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.retry_backoff_max < self.retry_backoff:
            raise ValueError("VIDEOQ_RETRY_BACKOFF_MAX must be >= VIDEOQ_RETRY_BACKOFF")
        longest_countdown = max(self.poll_interval, self.retry_backoff_max)
        if self.visibility_timeout <= longest_countdown + self.upstream_call_timeout:
            raise ValueError(
                "VIDEOQ_VISIBILITY_TIMEOUT must exceed the longest countdown plus one "
                "upstream call (VIDEOQ_HTTP_TOTAL_TIMEOUT), or Redis redelivers tasks that "
                "are still waiting"
            )
        return self

    @property
    def upstream_call_timeout(self) -> float:
        """The longest one upstream call can take (``VIDEOQ_HTTP_TOTAL_TIMEOUT``)."""
        if self.http_total_timeout is not None:
            return self.http_total_timeout
        return self.http_connect_timeout + self.http_read_timeout

    @property
    def tokens(self) -> list[str]:
        """Every accepted Bearer token (named or not)."""
        return [token for _, token in self.callers]

    @property
    def callers(self) -> list[tuple[str | None, str]]:
        """``(name, token)`` for each entry of VIDEOQ_API_TOKENS (name None: unnamed)."""
        return _parse_callers(self.api_tokens.get_secret_value())

    @property
    def admins(self) -> frozenset[str]:
        return frozenset(n.strip() for n in self.api_admins.split(",") if n.strip())

    @property
    def create_claim_timeout(self) -> float:
        """How long a create claim may stay unresolved before its outcome is unknown."""
        return self.upstream_call_timeout + 30.0

    @property
    def tick_queue(self) -> str:
        """Batch mode's tick messages: a queue of their own, so a backlog of creates
        never holds the polls of jobs already generating."""
        return f"{self.queue}.ticks"


def _parse_callers(text: str) -> list[tuple[str | None, str]]:
    callers: list[tuple[str | None, str]] = []
    for number, entry in enumerate((e.strip() for e in text.split(",")), start=1):
        if not entry:
            continue
        name, colon, token = entry.partition(":")
        if not colon:
            callers.append((None, entry))
            continue
        if not CALLER_NAME.match(name):  # never echo the entry: it holds a token
            raise ValueError(
                f"entry {number} is name:token, and a name must be 1-64 of A-Z a-z 0-9 _ . -"
            )
        if not token.strip():
            raise ValueError(f"entry {number} ({name}) has no token after the colon")
        callers.append((name, token.strip()))
    return callers


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment (and ``.env``), with explicit overrides."""
    return Settings(**overrides)  # type: ignore[arg-type]

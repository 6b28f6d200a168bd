"""All of videoq's configuration, in one typed object.

Every value comes from the environment or a ``.env`` file. The names are part of the
product's contract (see the README's configuration table): ``AIMLAPI_KEY`` and
``AIMLAPI_BASE_URL`` talk about the upstream; everything else is ``VIDEOQ_``-prefixed.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_BASE_URL = "https://api.aimlapi.com/v2"
MODEL_ID = "kling-video/v2.1/pro/image-to-video"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="VIDEOQ_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    # --- upstream -----------------------------------------------------------------------
    aimlapi_key: SecretStr = Field(
        default=SecretStr(""),
        validation_alias=AliasChoices("AIMLAPI_KEY", "aimlapi_key"),
        description="Bearer key for the AI/ML API. Never logged, never stored in jobs.",
    )
    aimlapi_base_url: str = Field(
        default=DEFAULT_BASE_URL,
        validation_alias=AliasChoices("AIMLAPI_BASE_URL", "aimlapi_base_url"),
        description="Upstream base URL (point it at `videoq simulator` for local work).",
    )
    upstream_path: Literal["legacy", "universal"] = Field(
        default="legacy",
        description="legacy: /generate/video/kling/generation; universal: /video/generations.",
    )
    http_connect_timeout: float = Field(default=5.0, gt=0)
    http_read_timeout: float = Field(
        default=30.0, gt=0, description="Read timeout of every upstream call, in seconds."
    )
    http_total_timeout: float | None = Field(
        default=None,
        gt=0,
        description="Most seconds one upstream call may take in all: connect, send, headers "
        "and body (default: the connect plus the read timeout). A call is also cut short "
        "at its job's deadline.",
    )

    # --- Redis ----------------------------------------------------------------------------
    redis_url: str = Field(default="redis://localhost:6379/0")
    key_prefix: str = Field(
        default="videoq", pattern=r"^[A-Za-z0-9_.-]+$", description="Prefix of every job key."
    )
    queue: str = Field(
        default="videoq", pattern=r"^[A-Za-z0-9_.-]+$", description="Celery queue name."
    )
    redis_retries: int = Field(
        default=6, ge=0, description="Retries of a job-record write on a Redis error."
    )

    # --- the chain ------------------------------------------------------------------------
    poll_interval: float = Field(default=10.0, gt=0, description="Seconds between polls.")
    poll_mode: Literal["chain", "batch"] = Field(
        default="chain",
        description="chain: one countdown task per poll; batch: one task polls every job "
        "due in a tick (see README, Performance).",
    )
    poll_tick: float = Field(
        default=0.25, gt=0, le=5,
        description="Batch mode: width of a tick in seconds; a poll runs at most this late.",
    )
    poll_batch: int = Field(
        default=200, ge=1, le=5000, description="Batch mode: most polls one tick task takes."
    )
    poll_concurrency: int = Field(
        default=100, ge=1, le=1000,
        description="Batch mode: status calls one worker process makes at once.",
    )
    deadline: float = Field(
        default=1000.0, gt=0, description="Seconds from acceptance until a job times out."
    )
    retry_backoff: float = Field(
        default=2.0, gt=0, description="First backoff after a transient upstream error."
    )
    retry_backoff_max: float = Field(
        default=60.0, gt=0, description="Largest backoff after transient upstream errors."
    )
    retention: int = Field(
        default=7 * 24 * 3600, gt=0, description="Seconds a finished job record is kept."
    )
    visibility_timeout: int = Field(
        default=300,
        gt=0,
        description="Seconds before Redis redelivers an unacknowledged message.",
    )
    eta_task_limit: int = Field(
        default=20000, gt=0, description="Most countdown tasks one worker holds in memory."
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
        description="Seconds between sweeps for stalled jobs (one worker sweeps; 0: off).",
    )
    sweep_batch: int = Field(
        default=1000, gt=0, description="Most stalled jobs one sweep resumes."
    )
    log_level: str = Field(default="INFO")
    log_format: Literal["logfmt", "json"] = Field(
        default="logfmt",
        description="Worker log lines: logfmt text, or one JSON object per line.",
    )

    # --- web apps -------------------------------------------------------------------------
    api_tokens: SecretStr = Field(
        default=SecretStr(""),
        description="Comma-separated Bearer tokens that `videoq serve` accepts.",
    )
    max_in_flight: int = Field(
        default=0,
        ge=0,
        description=(
            "Most upstream generations in flight at once, across all workers (0: no cap). "
            "Jobs over the cap wait in `queued`, in submission order."
        ),
    )
    webhook_secret: SecretStr = Field(
        default=SecretStr(""),
        description=(
            "Signing secret for webhooks (`whsec_` + base64, Standard Webhooks). "
            "Required to accept a `webhook_url`."
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
            "Allow loopback and private hosts for webhook_url and for fetching videos (local "
            "set-ups, the simulator). image_url and masks are always public: the upstream "
            "fetches them."
        ),
    )

    # --- operations -----------------------------------------------------------------------
    flower_basic_auth: SecretStr = Field(
        default=SecretStr(""),
        description="`user:password` (comma-separated for several) for `videoq flower`.",
    )
    flower_db: str = Field(
        default="videoq-flower.db",
        description="File where `videoq flower` keeps its state across restarts.",
    )

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
        return [t.strip() for t in self.api_tokens.get_secret_value().split(",") if t.strip()]

    @property
    def create_claim_timeout(self) -> float:
        """How long a create claim may stay unresolved before its outcome is unknown."""
        return self.upstream_call_timeout + 30.0

    @property
    def tick_queue(self) -> str:
        """Batch mode's tick messages: a queue of their own, so a backlog of creates
        never holds the polls of jobs already generating."""
        return f"{self.queue}.ticks"


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment (and ``.env``), with explicit overrides."""
    return Settings(**overrides)  # type: ignore[arg-type]

"""The HTTP gateway (``videoq serve``): videoq for apps that are not written in Python.

Two APIs on one ASGI app, both behind Bearer tokens from ``VIDEOQ_API_TOKENS``:

- the native API, ``/v1/jobs`` (submit with ``Idempotency-Key`` and ``webhook_url``,
  read, list, cancel);
- the upstream-compatible API, the AI/ML API's own paths and shapes, so that a client
  written for the upstream (the seed's script, say) works unchanged against videoq by
  changing only its base URL. The "generation id" it sees is videoq's job id.

Callers' tokens are checked here and never forwarded: the worker talks to the upstream
with its own ``AIMLAPI_KEY``. A named caller (``name:token``) sees only its own jobs
(another caller's job is a 404), unless ``VIDEOQ_API_ADMINS`` names it; unnamed tokens
see every job. Bodies over ``VIDEOQ_MAX_REQUEST_BYTES`` are answered 413 before they
are read. The OpenAPI document is at ``/openapi.json``.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from worker.errors import (
    IdempotencyConflict,
    JobNotFound,
    RequestError,
    RequestTooLarge,
    Unavailable,
)
from worker.job import Job
from worker.request import parse_request
from worker.settings import MODEL_ID, Settings
from worker.states import JobState

from .client import Client
from .schemas import (
    JobPage,
    JobRequest,
    Problem,
    UpstreamCreated,
    UpstreamFailure,
    UpstreamStatus,
    UpstreamVideo,
)

UPSTREAM_PATHS = ("/v2/generate/video/kling/generation", "/v2/video/generations")
# videoq's states in the upstream's words (the seed treats these as "still running").
UPSTREAM_STATUS = {
    JobState.QUEUED: "queued",
    JobState.SUBMITTING: "queued",
    JobState.GENERATING: "generating",
    JobState.COMPLETED: "completed",
}


_bearer = HTTPBearer(auto_error=False)
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "missing or unknown Bearer token"},
    413: {"model": Problem, "description": "the body is larger than VIDEOQ_MAX_REQUEST_BYTES"},
    503: {"model": Problem, "description": "Redis is unreachable or refuses writes"},
}


@dataclass(frozen=True)
class Caller:
    """Who called: the name from ``name:token`` (None for a plain token)."""

    name: str | None
    admin: bool

    @property
    def scope(self) -> str | None:
        """The owner whose jobs this caller may see (None: every job)."""
        return None if self.admin or self.name is None else self.name


class BodyTooLarge(StarletteHTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            f"the request body is larger than {limit} bytes (VIDEOQ_MAX_REQUEST_BYTES); "
            "nothing was read past that. Send large images by URL",
        )


class LimitBody:
    """Answer 413 to a body over ``limit`` bytes without reading more of it: a declared
    Content-Length over the limit before the app runs, and a chunked (or lying) body as
    soon as the bytes received pass the limit."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "").strip()
        if declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except BodyTooLarge:
            if started:
                raise
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = BodyTooLarge(self.limit)
        response = JSONResponse(
            status_code=413, content={"detail": error.detail}, headers={"Connection": "close"}
        )
        await response(scope, receive, send)


def _unprocessable(field: str, message: str) -> JSONResponse:
    loc = ["body", *field.split(".")] if field != "request" else ["body"]
    return JSONResponse(
        status_code=422, content={"detail": [{"loc": loc, "msg": message, "type": "value_error"}]}
    )


def _authorized(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    given = credentials.credentials.encode() if credentials else b""
    callers: list[Caller] = request.app.state.videoq_callers
    tokens: list[bytes] = request.app.state.videoq_tokens
    found: Caller | None = None
    for caller, token in zip(callers, tokens, strict=True):
        # every token is compared, so the time taken tells nothing about which matched
        if hmac.compare_digest(given, token) and given and found is None:
            found = caller
    if found is None:
        raise HTTPException(
            401, "missing or unknown Bearer token", headers={"WWW-Authenticate": "Bearer"}
        )
    return found


Authorized = Annotated[Caller, Depends(_authorized)]


def create_gateway(settings: Settings, client: Client | None = None) -> FastAPI:
    client = client or Client(settings=settings)
    app = FastAPI(
        title="videoq",
        version="0.1.0",
        description=f"Image-to-video jobs for {MODEL_ID}, queued, "
        "retried and tracked by videoq. Authenticate with `Authorization: Bearer <token>`.",
    )
    _add_body_limit(app, settings)
    _add_callers(app, settings)
    _add_exception_handlers(app)
    _add_health_route(app, client)
    _add_native_routes(app, client)
    _add_upstream_routes(app, client)
    return app


# --- middleware and callers -----------------------------------------------------------------


def _add_body_limit(app: FastAPI, settings: Settings) -> None:
    app.add_middleware(LimitBody, limit=settings.max_request_bytes)


def _add_callers(app: FastAPI, settings: Settings) -> None:
    """The tokens :func:`_authorized` checks, and who each one is."""
    app.state.videoq_callers = [
        Caller(name, admin=name is not None and name in settings.admins)
        for name, _ in settings.callers
    ]
    app.state.videoq_tokens = [token.encode() for _, token in settings.callers]


# --- exception handlers: each error type to its status, never by message text ---------------


def _refused(_: Request, exc: RequestError) -> JSONResponse:
    """A request refused by validation (``parse_request``) or the client: a 422 naming the
    field, like FastAPI's own validation errors."""
    return _unprocessable(exc.field, exc.message)


def _answer(status: int) -> Callable[[Request, Exception], JSONResponse]:
    def handler(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(status_code=status, content={"detail": str(exc)})

    return handler


def _unavailable(_: Request, exc: Unavailable) -> JSONResponse:
    """A 503, with the job id whenever the job may exist."""
    content: dict[str, Any] = {"detail": str(exc)}
    if exc.job_id:
        content["job_id"] = exc.job_id
    return JSONResponse(status_code=503, content=content)


async def _http(request: Request, exc: StarletteHTTPException) -> Response:
    if exc.status_code == 400:  # a body Starlette cannot even decode (not UTF-8)
        return _unprocessable("request", f"the body is not valid JSON: {exc.detail}")
    return await http_exception_handler(request, exc)


def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    return JSONResponse(status_code=422, content={"detail": errors})


# The most specific type wins (Starlette looks handlers up along the exception's MRO).
_HANDLERS: list[tuple[type[Exception], Callable[..., Any]]] = [
    (RequestError, _refused),
    (RequestTooLarge, _answer(413)),
    (IdempotencyConflict, _answer(409)),
    (JobNotFound, _answer(404)),
    (Unavailable, _unavailable),
    (StarletteHTTPException, _http),
    (RequestValidationError, _invalid),
]


def _add_exception_handlers(app: FastAPI) -> None:
    for kind, handler in _HANDLERS:
        app.add_exception_handler(kind, handler)


# --- routes ---------------------------------------------------------------------------------


def _add_health_route(app: FastAPI, client: Client) -> None:
    @app.get("/healthz", tags=["health"], responses={503: {"model": Problem}})
    def healthz() -> dict[str, str]:
        try:
            client.store.redis.ping()
        except Exception:
            raise HTTPException(503, "Redis is unreachable") from None
        return {"status": "ok"}


def _add_native_routes(app: FastAPI, client: Client) -> None:
    """``/v1/jobs``: submit, get, cancel, list."""

    def accepted(job_id: str, caller: Caller) -> Job:
        try:
            return client.get(job_id, owner=caller.scope)
        except Unavailable as exc:
            raise Unavailable(
                f"job {job_id} was accepted; reading its record failed: {exc}. Look it up "
                f"with GET /v1/jobs/{job_id}",
                job_id=job_id,
            ) from None

    @app.post(
        "/v1/jobs",
        status_code=202,
        tags=["jobs"],
        responses={
            **ERRORS,
            409: {"model": Problem, "description": "Idempotency-Key reused with a different body"},
        },
    )
    def submit(
        caller: Authorized,
        body: JobRequest,
        idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
    ) -> Job:
        """Accept a job. The same `Idempotency-Key` (from the same caller) returns the
        same job, never a second upstream generation."""
        options = body.model_dump(exclude_none=True)
        image_url = options.pop("image_url")
        webhook_url = options.pop("webhook_url", None)
        job_id = client.submit(
            image_url,
            idempotency_key=idempotency_key,
            webhook_url=webhook_url,
            owner=caller.name,
            **options,
        )
        return accepted(job_id, caller)

    @app.get("/v1/jobs/{job_id}", tags=["jobs"], responses={**ERRORS, 404: {"model": Problem}})
    def get_job(caller: Authorized, job_id: str) -> Job:
        return client.get(job_id, owner=caller.scope)

    @app.delete(
        "/v1/jobs/{job_id}",
        tags=["jobs"],
        responses={
            **ERRORS,
            404: {"model": Problem},
            409: {"model": Problem, "description": "the job had ended"},
        },
    )
    def cancel_job(caller: Authorized, job_id: str) -> Job:
        """Cancel a job. Before the upstream create, none is made; during generation,
        polling stops and the record keeps the upstream id (the upstream has no cancel
        call, so its generation runs on and may be charged)."""
        job = client.cancel(job_id, owner=caller.scope)
        if job.state is not JobState.CANCELLED:
            raise HTTPException(409, f"job {job_id} had already ended ({job.state.value})")
        return job

    @app.get("/v1/jobs", tags=["jobs"], responses=ERRORS)
    def list_jobs(
        caller: Authorized,
        state: JobState | None = None,
        cursor: Annotated[
            str, Query(max_length=30, description="next_cursor of the previous page (opaque)")
        ] = "0",
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> JobPage:
        jobs, following = client.list_jobs(state, cursor, limit, owner=caller.scope)
        return JobPage(jobs=jobs, next_cursor=following)


def upstream_status(job: Job) -> UpstreamStatus:
    """A job's record in the upstream's shape (its status words, ``video``, ``error``)."""
    status = UPSTREAM_STATUS.get(job.state, "error")
    answer = UpstreamStatus(id=job.id, status=status)
    if job.state is JobState.COMPLETED and job.video_url:
        answer.video = UpstreamVideo(url=job.video_url)
    if status == "error":
        kind = job.error.kind if job.error else job.state.value
        message = job.error.message if job.error else job.state.value
        answer.error = UpstreamFailure(name=kind, message=message)
    return answer


def _add_upstream_routes(app: FastAPI, client: Client) -> None:
    """The AI/ML API's own paths and shapes (create, status), on both of its path pairs."""

    def create_like_upstream(caller: Authorized, body: dict[str, Any]) -> UpstreamCreated:
        # parse_request checks the model, the fields and their values; its RequestError
        # (field, message) is the 422. A null "model" has always meant "not given" here.
        if "model" in body and body["model"] is None:
            body = {k: v for k, v in body.items() if k != "model"}
        job_id = client.submit_request(parse_request(body), owner=caller.name)
        return UpstreamCreated(id=job_id, status="queued")

    def status_like_upstream(caller: Authorized, generation_id: str) -> UpstreamStatus:
        return upstream_status(client.get(generation_id, owner=caller.scope))

    for path in UPSTREAM_PATHS:
        app.post(
            path,
            tags=["upstream-compatible"],
            responses={**ERRORS, 422: {"model": Problem}},
            summary="Create a generation (the upstream's shape)",
        )(create_like_upstream)
        app.get(
            path,
            tags=["upstream-compatible"],
            responses={**ERRORS, 404: {"model": Problem}},
            response_model_exclude_none=True,
            summary="A generation's status (the upstream's shape)",
        )(status_like_upstream)

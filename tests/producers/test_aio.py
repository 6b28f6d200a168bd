"""``AsyncClient`` on real Redis with no worker: the same records, checks and errors as
``Client``, awaited. The tests move records through the store's own state changes."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from producers import (
    AsyncClient,
    Client,
    JobFailed,
    JobNotFound,
    JobState,
    ModeUnsupported,
    RequestError,
    Unavailable,
    Update,
    WaitTimeout,
)
from producers.local import free_port
from tests.producers.conftest import IMG, Steps, booked_creates, end, job_keys, only_job
from tests.producers.test_images import png
from worker import urls
from worker.request import parse_request
from worker.settings import Settings

T = TypeVar("T")


def arun(settings: Settings, use: Callable[[AsyncClient], Awaitable[T]]) -> T:
    """``use`` an AsyncClient on a loop of its own; the client is closed after."""

    async def go() -> T:
        async with AsyncClient(settings=settings) as client:
            return await use(client)

    return asyncio.run(go())


def test_records_are_the_ones_the_client_writes(client: Client) -> None:
    options = {"prompt": "p", "duration": "10", "cfg_scale": 0.4, "idempotency_key": "same"}
    first = arun(client.settings, lambda a: a.submit(IMG, **options))  # type: ignore[arg-type]
    assert client.submit(IMG, **options) == first  # type: ignore[arg-type]  # same key, same job
    assert booked_creates(client) == [first]  # batch mode: booked with the record
    other = client.submit(IMG, prompt="p", duration="10", cfg_scale=0.4)
    ours, theirs = client.get(first).to_dict(), client.get(other).to_dict()
    for moving in ("id", "created_at", "updated_at", "deadline_at", "idempotency_key"):
        ours.pop(moving), theirs.pop(moving)
    assert ours == theirs
    with pytest.raises(RequestError, match="idempotency_key"):
        arun(client.settings, lambda a: a.submit(IMG, prompt="other", idempotency_key="same"))


def test_a_local_image_is_sent_as_the_sync_client_sends_it(client: Client, tmp_path: Path) -> None:
    picture = tmp_path / "cat.png"
    picture.write_bytes(png())
    ours = arun(client.settings, lambda a: a.submit(image=picture, prompt="p"))
    theirs = client.submit(image=(png(), "image/png"), prompt="p")
    assert client.get(ours).request == client.get(theirs).request
    assert client.get(ours).request["image_url"].startswith("data:image/png;base64,")
    with pytest.raises(RequestError) as info:
        arun(client.settings, lambda a: a.submit(image=(b"GIF89a...", "image/gif")))
    assert info.value.field == "image" and len(job_keys(client)) == 2  # nothing stored


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"duration": 6}, "duration"), ({"idempotency_key": "has space"}, "idempotency_key")],
)
def test_bad_input_names_the_field_and_stores_nothing(
    client: Client, kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(RequestError) as info:
        arun(client.settings, lambda a: a.submit(IMG, **kwargs))  # type: ignore[arg-type]
    assert info.value.field == field and job_keys(client) == []


def test_run_returns_the_completed_job_and_awaits_async_callbacks(client: Client) -> None:
    steps = Steps(lambda: end(client.store, only_job(client), JobState.COMPLETED, video_url="v"))
    called: list[JobState] = []

    async def on_update(update: Update) -> None:
        await asyncio.sleep(0)
        called.append(update.state)
        steps(update)

    job = arun(
        client.settings, lambda a: a.run(IMG, "hi", timeout=10, interval=0.01, on_update=on_update)
    )
    assert job.state is JobState.COMPLETED and job.video_url == "v"
    assert job.request["prompt"] == "hi"
    assert called == [JobState.QUEUED, JobState.COMPLETED]


def test_run_raises_job_failed_and_wait_timeout(client: Client) -> None:
    error = {"error_kind": "upstream_error", "error_message": "bad image"}
    fail = Steps(lambda: end(client.store, only_job(client), JobState.FAILED, **error))
    with pytest.raises(JobFailed) as info:
        arun(client.settings, lambda a: a.run(IMG, timeout=10, interval=0.01, on_update=fail))
    assert str(info.value) == f"job {info.value.job_id} failed: upstream_error: bad image"
    assert info.value.kind == "upstream_error" and info.value.job.state is JobState.FAILED
    with pytest.raises(WaitTimeout) as timed_out:
        arun(client.settings, lambda a: a.wait(client.submit(IMG), timeout=0.05, interval=0.01))
    assert isinstance(timed_out.value, TimeoutError) and "keeps running" in str(timed_out.value)
    assert client.get(timed_out.value.job_id).state is JobState.QUEUED


def test_updates_give_the_place_in_line_and_the_record(
    make_settings: Callable[..., Settings],
) -> None:
    """VIDEOQ_MAX_IN_FLIGHT=1, three queued jobs, the first holding the slot."""
    client = Client(settings=make_settings(max_in_flight=1, deadline=300.0))
    first, second, third = (client.submit(IMG, prompt=f"job {n}") for n in range(3))
    assert client.store.budget.acquire_slot(first, 0.0, 1, 0.0)

    async def places(a: AsyncClient) -> list[int | None]:
        return [(await a.update_of(await a.get(i))).place_in_line for i in (first, second, third)]

    assert arun(client.settings, places) == [None, 1, 2]
    on_update = Steps(
        lambda: client.store.transition(
            second, [JobState.QUEUED], JobState.GENERATING, {"poll_seq": 4, "last_error": "429"}
        ),
        lambda: end(client.store, second, JobState.COMPLETED, video_url="https://v/2"),
    )
    arun(client.settings, lambda a: a.wait(second, timeout=10, interval=0.02, on_update=on_update))
    seen = on_update.seen
    assert [u.state for u in seen] == ["queued", "generating", "completed"]
    assert [u.place_in_line for u in seen] == [1, None, None]
    assert (seen[1].polls, seen[1].last_error) == (4, "429")
    assert seen[0].seconds_left is not None and seen[1].seconds_left is not None
    assert 0 < seen[1].seconds_left < seen[0].seconds_left <= 300.0
    assert seen[2].seconds_left is None


def test_cancel_frees_the_slot_for_the_next_in_line(
    make_settings: Callable[..., Settings],
) -> None:
    client = Client(settings=make_settings(max_in_flight=1))
    first, second = client.submit(IMG), client.submit(IMG)
    assert client.store.budget.acquire_slot(first, 0.0, 1, 0.0)
    client.store.unbook_create(second)  # what a create tick does to a job in line
    client.store.unbook_create(first)
    job = arun(client.settings, lambda a: a.cancel(first))
    assert job.state is JobState.CANCELLED and job.error and job.error.kind == "cancelled"
    assert booked_creates(client) == [second]  # woken at once, not at the next sweep
    assert arun(client.settings, lambda a: a.cancel(first)).state is JobState.CANCELLED
    with pytest.raises(JobNotFound):
        arun(client.settings, lambda a: a.cancel("no-such-job"))
    with pytest.raises(JobNotFound):
        arun(client.settings, lambda a: a.cancel(second, owner="mallory"))
    assert client.get(second).state is JobState.QUEUED


@pytest.mark.parametrize("limit", [1, 7])
def test_listing_pages_resume_exactly(client: Client, limit: int) -> None:
    ids = {client.submit(IMG, prompt=f"list {i}") for i in range(9)}
    client.cancel(next(iter(ids)))

    async def all_pages(a: AsyncClient) -> list[str]:
        seen: list[str] = []
        cursor: str | None = "0"
        while cursor is not None:
            jobs, cursor = await a.list_jobs(cursor=cursor, limit=limit)
            assert len(jobs) <= limit and len(seen) < 100
            seen += [j.id for j in jobs]
        return seen

    assert sorted(arun(client.settings, all_pages)) == sorted(ids)
    cancelled, _ = arun(client.settings, lambda a: a.list_jobs(JobState.CANCELLED))
    assert [j.state for j in cancelled] == [JobState.CANCELLED]
    with pytest.raises(RequestError, match="cursor"):
        arun(client.settings, lambda a: a.list_jobs(cursor="1.2.3"))


def test_chain_mode_is_refused_at_construction(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ModeUnsupported, match="VIDEOQ_POLL_MODE=batch"):
        AsyncClient(settings=make_settings(poll_mode="chain"))


def test_redis_down_is_a_clear_error(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(redis_url=f"redis://:hunter2@127.0.0.1:{free_port()}/0")
    settings = settings.model_copy(update={"redis_retries": 1})
    with pytest.raises(Unavailable) as info:
        arun(settings, lambda a: a.submit(IMG))
    assert "nothing was enqueued" in str(info.value) and "hunter2" not in str(info.value)
    with pytest.raises(Unavailable, match=r"could not read job x: .* unreachable"):
        arun(settings, lambda a: a.get("x"))


WEBHOOK_SECRET = "whsec_" + "A" * 32
NAMES = ("cdn.example.org", "mask.example.net", "hooks.example.com")
SUBMIT = {
    "image_url": f"https://{NAMES[0]}/a.png",
    "static_mask": f"https://{NAMES[1]}/m.png",
    "webhook_url": f"https://{NAMES[2]}/done",
}


class Lookups:
    """Name lookups during a test: ``loop`` the event loop's (answered at once, a public
    address), ``blocking`` the synchronous ones (``socket.getaddrinfo``, which
    ``worker.urls`` calls in a thread the loop thread waits for)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, answer: str = "93.184.215.14") -> None:
        self.loop: list[str] = []
        self.blocking: list[tuple[str, str]] = []
        self.slow: list[str] = []  # asyncio debug's "Executing ... took" reports
        self.answer = answer
        real = socket.getaddrinfo

        def blocking(host: object, *args: object, **kwargs: object) -> object:
            if host not in NAMES:
                return real(host, *args, **kwargs)  # type: ignore[arg-type]
            self.blocking.append((threading.current_thread().name, str(host)))
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (self.answer, 0))]

        monkeypatch.setattr(socket, "getaddrinfo", blocking)
        monkeypatch.setattr(urls, "_cache", {})

    def run(self, settings: Settings, use: Callable[[AsyncClient], Awaitable[T]]) -> T:
        """``use`` an AsyncClient on a debug-mode loop that reports slow callbacks."""

        async def go() -> T:
            loop = asyncio.get_running_loop()
            loop.slow_callback_duration = 0.05
            real = loop.getaddrinfo

            async def getaddrinfo(host: object, *args: object, **kwargs: object) -> object:
                if host not in NAMES:
                    return await real(host, *args, **kwargs)  # type: ignore[arg-type]
                self.loop.append(str(host))
                return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (self.answer, 0))]

            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(loop, "getaddrinfo", getaddrinfo)
                async with AsyncClient(settings=settings) as client:
                    return await use(client)

        handler = _Slow(self.slow)
        logging.getLogger("asyncio").addHandler(handler)
        try:
            return asyncio.run(go(), debug=True)
        finally:
            logging.getLogger("asyncio").removeHandler(handler)


class _Slow(logging.Handler):
    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record.getMessage())


@pytest.mark.parametrize("cached", [0, urls.RESOLVE_CACHE_SIZE - 1])
def test_submit_never_looks_a_name_up_blocking_the_loop(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch, cached: int
) -> None:
    # cached: the reviewer's case, the shared cache one name short of full: resolving
    # the mask's host empties it, and the image host's answer is gone before its check.
    settings = make_settings(webhook_secret=WEBHOOK_SECRET, allow_private_urls=False)
    lookups = Lookups(monkeypatch)
    urls._cache.update({f"n{i}.example": (time.monotonic() + 60, []) for i in range(cached)})
    job_id = lookups.run(settings, lambda a: a.submit(**SUBMIT))  # type: ignore[arg-type]
    assert lookups.blocking == [], lookups.slow
    assert sorted(lookups.loop) == sorted(NAMES)  # each once, on the loop
    assert Client(settings=settings).get(job_id).webhook_url == SUBMIT["webhook_url"]


@pytest.mark.parametrize(
    ("overrides", "kwargs", "field", "looked_up"),
    [
        ({"webhook_secret": ""}, {}, "webhook_url", []),  # webhooks off: no lookup
        ({}, {"duration": 7}, "duration", []),  # a bad field: no lookup
        ({"allow_private_urls": True}, {}, None, list(NAMES[:2])),  # webhook: not checked
        ({}, {"answer": "10.0.0.7"}, "image_url", list(NAMES)),
    ],
)
def test_submit_resolves_only_what_the_checks_judge(
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    overrides: dict[str, object],
    kwargs: dict[str, object],
    field: str | None,
    looked_up: list[str],
) -> None:
    options = {"webhook_secret": WEBHOOK_SECRET, "allow_private_urls": False, **overrides}
    lookups = Lookups(monkeypatch, str(kwargs.pop("answer", "93.184.215.14")))
    submit = {**SUBMIT, **kwargs}
    if field is None:
        lookups.run(make_settings(**options), lambda a: a.submit(**submit))  # type: ignore[arg-type]
    else:
        with pytest.raises(RequestError) as info:
            lookups.run(make_settings(**options), lambda a: a.submit(**submit))  # type: ignore[arg-type]
        assert info.value.field == field
    assert sorted(lookups.loop) == sorted(looked_up) and lookups.blocking == []


def test_submit_request_checks_image_hosts_of_a_request_parsed_without_dns(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups = Lookups(monkeypatch, "10.0.0.7")
    request = parse_request({"image_url": SUBMIT["image_url"]}, resolve=None)
    assert lookups.loop == [] and lookups.blocking == []
    with pytest.raises(RequestError) as info:
        lookups.run(make_settings(), lambda a: a.submit_request(request))
    assert info.value.field == "image_url" and "-> 10.0.0.7" in str(info.value)
    assert lookups.loop == [NAMES[0]] and lookups.blocking == []


@pytest.mark.parametrize(("address", "refused"), [("93.184.215.14", False), ("10.0.0.7", True)])
def test_image_hosts_are_resolved_by_the_loop_not_by_a_blocking_lookup(
    client: Client, monkeypatch: pytest.MonkeyPatch, address: str, refused: bool
) -> None:
    blocking: list[str] = []

    def blocking_lookup(name: str) -> list[str]:
        blocking.append(name)
        return []

    monkeypatch.setattr(urls, "_getaddrinfo", blocking_lookup)
    monkeypatch.setattr(urls, "_cache", {})
    asked: list[str] = []

    async def getaddrinfo(host: str, *_: object, **__: object) -> list[tuple[object, ...]]:
        asked.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, 0))]

    async def submit(a: AsyncClient) -> str:
        monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", getaddrinfo)
        return await a.submit(
            "https://cdn.example.org/a.png", static_mask="https://m.example.org/m.png"
        )

    if refused:
        with pytest.raises(RequestError) as info:
            arun(client.settings, submit)
        assert info.value.field == "image_url" and "cdn.example.org -> 10.0.0.7" in str(info.value)
        assert job_keys(client) == []
    else:
        assert client.get(arun(client.settings, submit)).state is JobState.QUEUED
    assert blocking == [] and sorted(asked) == ["cdn.example.org", "m.example.org"]

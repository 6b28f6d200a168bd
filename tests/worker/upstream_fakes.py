"""The upstream client's test doubles: a scripted BoundedHttp, a client on it, and the
answers of a batch in the calls' order."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from multidict import CIMultiDict
from pydantic import SecretStr

from worker.answers import Status
from worker.errors import HttpFailure, UpstreamError
from worker.http import Answer, EventLoop
from worker.upstream import UpstreamClient

KEY = "sk-unit-secret-0123456789abcdef"

Reply = tuple[int, Any, dict[str, str]] | HttpFailure
LOOP = EventLoop()  # the fake's loop, for ``each_status``: started on first use


class FakeHttp:
    """A BoundedHttp stand-in: each call gets the next scripted reply, an
    ``(status, body, headers)`` Answer or an :class:`HttpFailure` to raise."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies)
        self.loop = LOOP
        self.headers: dict[str, str] = {}
        self.sent: list[dict[str, Any]] = []

    def _answer(self, method: str, url: str, kwargs: dict[str, Any]) -> Answer:
        self.sent.append({"method": method, "url": url, "headers": dict(self.headers), **kwargs})
        reply = self.replies.pop(0)
        if isinstance(reply, HttpFailure):
            raise reply
        code, body, headers = reply
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return Answer(code, "Reason", CIMultiDict(headers), data)

    def call(self, method: str, url: str, **kwargs: Any) -> Answer:
        return self._answer(method, url, kwargs)

    async def request(self, method: str, url: str, **kwargs: Any) -> Answer:
        return self._answer(method, url, kwargs)


def client_with(*replies: Reply, path: str = "legacy") -> tuple[UpstreamClient, FakeHttp]:
    http = FakeHttp(*replies)
    client = UpstreamClient(
        "http://upstream.test/v2/",
        SecretStr(KEY),
        http,  # type: ignore[arg-type]
        path=path,  # type: ignore[arg-type]
    )
    return client, http


def all_answers(
    client: UpstreamClient, calls: Sequence[tuple[str, float]]
) -> list[Status | UpstreamError]:
    """Every answer of a batch of status calls (``UpstreamClient.each_status``), in the
    calls' order: each call answered exactly once."""
    got: dict[int, Status | UpstreamError] = {}
    for item in client.each_status(calls):
        if item is not None:
            index, answer = item
            assert index not in got, f"call {index} answered twice"
            got[index] = answer
    assert sorted(got) == list(range(len(calls)))
    return [got[i] for i in range(len(calls))]

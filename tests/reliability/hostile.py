"""Misbehaving peers for the hostile-peer tests: an upstream front and webhook receivers.

Everything here listens on loopback only. Every misbehaviour is bounded in bytes and in
time, notices at once when the worker hangs up (the socket turns readable and a peek
finds the end of the stream), and stops when the peer is reset or stopped.

- :class:`HostileUpstream` sits in front of the simulator (``AIMLAPI_BASE_URL``). It
  forwards every request to the simulator first, so the simulator's request log stays
  the oracle for "one create per job"; then, for a job whose prompt carries
  ``[hostile:MODE@create]`` or ``[hostile:MODE@status]``, it answers that job's create
  or status calls in its own way instead of relaying the simulator's answer.
- :class:`HostileReceiver` is a webhook receiver whose path chooses its behaviour
  (``/ok``, ``/trickle``, ``/huge``, ``/chunked``, ``/redirect``). It records every
  delivery, the most deliveries in progress at once per ``webhook-id``, and whether
  anyone followed the redirect.

The bounded writes and the hostile answers themselves are in :mod:`tests.reliability.wire`;
:class:`tests.reliability.memory.TreeRSS` samples the worker's memory.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Generic, Protocol, Self, TypeVar
from urllib.parse import parse_qs, urlsplit

from tests.reliability.wire import STREAM_MAX, Wire, http_head, misbehave

ELSEWHERE = "/_hostile/elsewhere"  # where the redirects point

_TAG = re.compile(r"\[hostile:([a-z0-9_]+)@(create|status)\]")

# Status modes the front answers by rewriting the simulator's `completed` answer.
REWRITES: dict[str, Callable[[dict[str, Any]], None]] = {
    "url_javascript": lambda d: d.__setitem__("video", {"url": "javascript:alert(1)"}),
    "url_file": lambda d: d.__setitem__("video", {"url": "file:///etc/passwd"}),
    "url_data": lambda d: d.__setitem__("video", {"url": "data:video/mp4;base64,AAAA"}),
    "credits_nan": lambda d: d.__setitem__("meta", {"usage": {"credits_used": float("nan")}}),
    "credits_inf": lambda d: d.__setitem__("meta", {"usage": {"credits_used": float("inf")}}),
    "credits_negative": lambda d: d.__setitem__("meta", {"usage": {"credits_used": -5}}),
}


def hostile_tag(mode: str, where: str) -> str:
    """The prompt tag that makes the front misbehave: ``where`` is create or status."""
    return f"[hostile:{mode}@{where}]"


# --- the upstream front -----------------------------------------------------------------


@dataclass
class Misbehaviour:
    mode: str
    where: str  # create | status
    key: str  # the prompt (create) or the generation id (status)
    seconds: float
    sent: int
    ended: str


@dataclass
class FrontRecord:
    """What the front did between two resets."""

    stop: threading.Event = field(default_factory=threading.Event)
    status_modes: dict[str, str] = field(default_factory=dict)  # generation id -> mode
    done: list[Misbehaviour] = field(default_factory=list)
    redirect_hits: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def misbehaviours(self, where: str, key: str | None) -> list[Misbehaviour]:
        with self.lock:
            return [m for m in self.done if m.where == where and m.key == key]


class _FrontHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _PeerServer

    @property
    def front(self) -> HostileUpstream:
        peer = self.server.peer
        assert isinstance(peer, HostileUpstream)
        return peer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _relay(self, code: int, content_type: str, body: bytes) -> None:
        head = http_head(code, {"Content-Type": content_type, "Content-Length": str(len(body))})
        self.wfile.write(head + body)

    def _handle(self, method: str) -> None:
        front = self.front
        state = front.state  # a reset meanwhile must not move this request's record
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        if url.path == ELSEWHERE:
            with state.lock:
                state.redirect_hits.append(f"{method} {self.path}")
            return self._relay(200, "application/json", b"{}")
        code, content_type, answer = front.forward(method, self.path, dict(self.headers), body)
        mode = where = key = None
        if method == "POST":
            prompt = _prompt(body)
            tag = _TAG.search(prompt)
            if tag and code == 200:
                mode, where, key = tag.group(1), tag.group(2), prompt
                if where == "status":
                    gen_id = str(json.loads(answer).get("id"))
                    with state.lock:
                        state.status_modes[gen_id] = mode
                    mode = None
        else:
            gen_id = (parse_qs(url.query).get("generation_id") or [""])[0]
            with state.lock:
                mode = state.status_modes.get(gen_id)
            where, key = "status", gen_id
        if mode is None or where is None or key is None:
            return self._relay(code, content_type, answer)
        if mode in REWRITES:
            data = json.loads(answer)
            if isinstance(data, dict) and data.get("status") == "completed":
                REWRITES[mode](data)
                answer = json.dumps(data).encode()  # NaN and Infinity as raw tokens
            return self._relay(code, content_type, answer)
        self.close_connection = True
        wire = Wire(self.connection, state.stop, budget=STREAM_MAX + 5)
        try:
            misbehave(wire, mode, answer, front.url(ELSEWHERE))
        finally:
            with state.lock:
                state.done.append(
                    Misbehaviour(mode, where, key, round(wire.elapsed(), 2), wire.sent, wire.ended)
                )


def _prompt(body: bytes) -> str:
    try:
        data = json.loads(body or b"null")
    except ValueError:
        return ""
    return str(data.get("prompt") or "") if isinstance(data, dict) else ""


class _PeerServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, peer: object, handler: type[BaseHTTPRequestHandler]) -> None:
        self.peer = peer
        super().__init__(("127.0.0.1", 0), handler)


class _Record(Protocol):
    stop: threading.Event


R = TypeVar("R", bound=_Record)


class _Peer(Generic[R]):
    """A threaded HTTP server on 127.0.0.1 (the front and the receivers): its port,
    URLs, start and stop. ``state.stop`` ends whatever it is sending."""

    state: R

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._server = _PeerServer(self, handler)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> Self:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=type(self).__name__, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.state.stop.set()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(10)
            self._thread = None
        self._server.server_close()


class HostileUpstream(_Peer[FrontRecord]):
    """A front for the simulator that misbehaves for tagged jobs (see the module doc)."""

    def __init__(self, sim_port: int) -> None:
        self.sim_port = sim_port
        self.state = FrontRecord()
        super().__init__(_FrontHandler)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v2"

    def forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, str, bytes]:
        """The simulator's answer to the same request."""
        conn = http.client.HTTPConnection("127.0.0.1", self.sim_port, timeout=10)
        try:
            keep = {
                k: v for k, v in headers.items() if k.lower() in ("authorization", "content-type")
            }
            conn.request(method, path, body=body or None, headers=keep)
            resp = conn.getresponse()
            return resp.status, resp.getheader("Content-Type") or "", resp.read()
        finally:
            conn.close()

    def reset(self) -> FrontRecord:
        """Stop every misbehaviour in progress and forget the hostile jobs (their later
        calls are relayed unchanged). Returns the record since the last reset."""
        old, self.state = self.state, FrontRecord()
        old.stop.set()
        return old


# --- webhook receivers ------------------------------------------------------------------


@dataclass
class Delivery:
    webhook_id: str
    path: str
    started: float
    seconds: float = 0.0
    sent: int = 0
    ended: str = ""


@dataclass
class ReceiverRecord:
    """What the receivers saw between two resets."""

    stop: threading.Event = field(default_factory=threading.Event)
    deliveries: list[Delivery] = field(default_factory=list)
    in_progress: Counter[str] = field(default_factory=Counter)
    most_at_once: Counter[str] = field(default_factory=Counter)
    redirect_hits: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _ReceiverHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _PeerServer

    @property
    def receiver(self) -> HostileReceiver:
        peer = self.server.peer
        assert isinstance(peer, HostileReceiver)
        return peer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        state = self.receiver.state
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        path = urlsplit(self.path).path
        if path == "/elsewhere":
            with state.lock:
                state.redirect_hits.append(self.path)
            self.wfile.write(http_head(200, {"Content-Length": "0"}))
            return
        webhook_id = self.headers.get("webhook-id", "")
        delivery = Delivery(webhook_id, path, time.time())
        with state.lock:
            state.deliveries.append(delivery)
            state.in_progress[webhook_id] += 1
            state.most_at_once[webhook_id] = max(
                state.most_at_once[webhook_id], state.in_progress[webhook_id]
            )
        # /ok answers even after the brake (state.stop) stopped the hostile answers
        stop = threading.Event() if path == "/ok" else state.stop
        wire = Wire(self.connection, stop, budget=STREAM_MAX + 5)
        try:
            if path == "/ok":
                ok = {"Content-Type": "application/json", "Content-Length": "2"}
                wire.send(http_head(200, ok) + b"{}")
                wire.ended = "done"
            else:
                self.close_connection = True
                mode = {
                    "/trickle": "trickle_body",
                    "/huge": "huge",
                    "/chunked": "chunked",
                    "/redirect": "redirect_302",
                }.get(path, "")
                misbehave(wire, mode, b'{"ok": true}', self.receiver.url("/elsewhere"))
        finally:
            with state.lock:
                state.in_progress[webhook_id] -= 1
                delivery.seconds = round(wire.elapsed(), 2)
                delivery.sent = wire.sent
                delivery.ended = wire.ended


class HostileReceiver(_Peer[ReceiverRecord]):
    """Webhook receivers, one per path: /ok, /trickle, /huge, /chunked, /redirect."""

    def __init__(self) -> None:
        self.state = ReceiverRecord()
        super().__init__(_ReceiverHandler)

    def reset(self) -> ReceiverRecord:
        """Stop every answer in progress; returns the record since the last reset."""
        old, self.state = self.state, ReceiverRecord()
        old.stop.set()
        return old

"""The wire of the hostile peers (:mod:`tests.reliability.hostile`): bounded,
interruptible writes to one accepted socket, and the hostile ways to answer an HTTP
request on it (trickled, redirected, huge, endless).

Every misbehaviour is bounded in bytes and in time, notices at once when the peer
hangs up (the socket turns readable and a peek finds the end of the stream), and
stops when its ``stop`` event is set.
"""

from __future__ import annotations

import http.client
import select
import socket
import threading
import time
from collections.abc import Callable

TRICKLE_INTERVAL = 0.5  # seconds between two bytes of a trickled answer
TRICKLE_MAX = 40.0  # a trickle gives up (sends the rest at once) after this long
STREAM_MAX = 60.0  # a huge or endless answer stops after this long ...
HUGE_BYTES = 1_500_000_000  # ... or after this many bytes
CHUNK = 1 << 20


class Wire:
    """Bounded, interruptible writes to one accepted socket."""

    def __init__(self, sock: socket.socket, stop: threading.Event, budget: float) -> None:
        self.sock = sock
        self.stop = stop
        self.started = time.monotonic()
        self.until = self.started + budget
        self.sent = 0
        self.ended = ""  # why the writes stopped: done | peer_closed | stopped | budget
        sock.settimeout(0.2)

    def _over(self) -> bool:
        if self.stop.is_set():
            self.ended = "stopped"
        elif time.monotonic() > self.until:
            self.ended = "budget"
        return bool(self.ended)

    def peer_gone(self, wait: float = 0.0) -> bool:
        """True once the peer has closed (readable, and a peek finds end of stream)."""
        try:
            readable, _, _ = select.select([self.sock], [], [], wait)
            if readable and self.sock.recv(1, socket.MSG_PEEK) == b"":
                self.ended = "peer_closed"
        except (OSError, ValueError):
            self.ended = "peer_closed"
        return self.ended == "peer_closed"

    def send(self, data: bytes) -> bool:
        """Send all of ``data``; False (stop writing) if the peer left or time is up."""
        view = memoryview(data)
        while view:
            if self._over():
                return False
            try:
                n = self.sock.send(view)
            except TimeoutError:
                if self.peer_gone():
                    return False
                continue
            except OSError:
                self.ended = "peer_closed"
                return False
            view = view[n:]
            self.sent += n
        return True

    def pause(self, seconds: float) -> bool:
        """Wait ``seconds``, waking early if the peer hangs up; False if it did."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if self._over() or self.peer_gone(min(left, 0.1)):
                return False
        return not self._over()

    def trickle(
        self, data: bytes, interval: float = TRICKLE_INTERVAL, limit: float = TRICKLE_MAX
    ) -> bool:
        """One byte every ``interval`` for up to ``limit`` seconds, then the rest."""
        give_up = time.monotonic() + limit
        for i in range(len(data)):
            if time.monotonic() > give_up:
                return self.send(data[i:])
            if not self.send(data[i : i + 1]) or not self.pause(interval):
                return False
        return True

    def elapsed(self) -> float:
        return time.monotonic() - self.started


def http_head(code: int, headers: dict[str, str]) -> bytes:
    reason = http.client.responses.get(code, "")
    lines = [f"HTTP/1.1 {code} {reason}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def misbehave(wire: Wire, mode: str, answer: bytes, location: str) -> None:
    """Answer an HTTP request in one of the hostile ways. ``answer`` is a valid body
    (used where the mode keeps one: trickles and redirects)."""
    _answer_for(mode)(wire, mode, answer, location)
    if not wire.ended:
        wire.ended = "done"


Answer = Callable[[Wire, str, bytes, str], None]  # (wire, mode, answer, location)
_JSON = {"Content-Type": "application/json"}


def _answer_for(mode: str) -> Answer:
    if mode.startswith("redirect"):
        return _redirect
    answers: dict[str, Answer] = {
        "trickle_headers": _trickle_headers,
        "trickle": _trickle_body,
        "trickle_body": _trickle_body,
        "huge": _huge,
        "chunked": _chunked,
    }
    if mode not in answers:
        raise ValueError(f"unknown hostile mode {mode!r}")
    return answers[mode]


def _trickle_headers(wire: Wire, mode: str, answer: bytes, location: str) -> None:
    """The head one byte at a time, then the body."""
    if wire.trickle(http_head(200, {**_JSON, "Content-Length": str(len(answer))})):
        wire.send(answer)


def _trickle_body(wire: Wire, mode: str, answer: bytes, location: str) -> None:
    """The head at once, then the body one byte at a time."""
    # whitespace before the JSON keeps it valid and makes the trickle last
    padded = b" " * max(0, int(TRICKLE_MAX / TRICKLE_INTERVAL) - len(answer)) + answer
    if wire.send(http_head(200, {**_JSON, "Content-Length": str(len(padded))})):
        wire.trickle(padded)


def _redirect(wire: Wire, mode: str, answer: bytes, location: str) -> None:
    """``redirect_CODE`` (302 when no code is given), to ``location``."""
    code = int(mode.split("_")[1]) if "_" in mode else 302
    headers = {**_JSON, "Location": location, "Content-Length": str(len(answer))}
    wire.send(http_head(code, headers) + answer)


def _huge(wire: Wire, mode: str, answer: bytes, location: str) -> None:
    """A declared length of ``HUGE_BYTES``, and that many bytes (until stopped)."""
    if wire.send(http_head(200, {**_JSON, "Content-Length": str(HUGE_BYTES)})):
        block = b"x" * CHUNK
        left = HUGE_BYTES
        while left > 0 and wire.send(block[:left]):
            left -= min(left, CHUNK)


def _chunked(wire: Wire, mode: str, answer: bytes, location: str) -> None:
    """A chunked answer with no last chunk (until ``HUGE_BYTES`` or stopped)."""
    if wire.send(http_head(200, {**_JSON, "Transfer-Encoding": "chunked"})):
        size = 64 * 1024
        frame = f"{size:x}\r\n".encode() + b"x" * size + b"\r\n"
        while wire.sent < HUGE_BYTES and wire.send(frame):
            pass

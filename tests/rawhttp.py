"""Raw HTTP peers for tests: a tiny threaded TCP server on 127.0.0.1 and the ways it
answers (complete, trickled, silent, endless, huge). Every loop is bounded."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable

# What a connection handler is given: the accepted socket and the server (for its
# counters and its stop event). It answers however its mode says.
Handler = Callable[[socket.socket, "RawServer"], None]
TRICKLE_EVERY = 0.3
MAX_SENT = 64 * 1024 * 1024  # an "endless" answer stops here whatever happens


class RawServer:
    """A tiny threaded TCP server on 127.0.0.1 that answers every connection with
    ``handler``. It counts connections and the bytes it managed to send; every loop is
    bounded by ``stop`` (set at teardown) and by a socket timeout."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.connections = 0
        self.sent = 0
        self.requests: list[bytes] = []
        self.closed_by_peer = threading.Event()  # a send failed: the client hung up
        self.conns: list[socket.socket] = []
        self.threads: list[threading.Thread] = []
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            conn.settimeout(5.0)
            with self.lock:
                self.connections += 1
                self.conns.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            self.handler(conn, self)
        except OSError:
            self.closed_by_peer.set()

    def read_request(self, conn: socket.socket) -> bytes:
        """The request's head and (by Content-Length) body."""
        data = b""
        while b"\r\n\r\n" not in data and len(data) < 1 << 20:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(body) < length and not self.stop.is_set():
            chunk = conn.recv(65536)
            if not chunk:
                break
            body += chunk
        with self.lock:
            self.requests.append(head + b"\r\n\r\n" + body)
        return head + b"\r\n\r\n" + body

    def send(self, conn: socket.socket, data: bytes) -> None:
        conn.sendall(data)
        with self.lock:
            self.sent += len(data)

    def close(self) -> None:
        self.stop.set()
        self.acceptor.join(5)
        with self.lock:
            conns = list(self.conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        for thread in self.threads:
            thread.join(5)
        self.sock.close()


# --- modes -----------------------------------------------------------------------------------


def answer(
    status: str, body: bytes = b"", headers: dict[str, str] | None = None, delay: float = 0.0
) -> Handler:
    """A complete answer (after ``delay`` seconds), then close."""

    def handle(conn: socket.socket, server: RawServer) -> None:
        server.read_request(conn)
        if delay:
            server.stop.wait(delay)
        head = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", "Connection: close"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        server.send(conn, ("\r\n".join(head) + "\r\n\r\n").encode() + body)
        conn.close()

    return handle


def trickle_body(conn: socket.socket, server: RawServer) -> None:
    """Headers at once, then one byte of a 100-byte body every TRICKLE_EVERY seconds."""
    server.read_request(conn)
    server.send(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
    for _ in range(100):
        if server.stop.wait(TRICKLE_EVERY):
            return
        server.send(conn, b"x")


def trickle_headers(conn: socket.socket, server: RawServer) -> None:
    """The status line, then the headers one byte every TRICKLE_EVERY seconds."""
    server.read_request(conn)
    server.send(conn, b"HTTP/1.1 200 OK\r\n")
    for byte in b"X-Slow: " + b"a" * 100:
        if server.stop.wait(TRICKLE_EVERY):
            return
        server.send(conn, bytes([byte]))


def silent(conn: socket.socket, server: RawServer) -> None:
    """Accept, read the request, never answer."""
    server.read_request(conn)
    server.stop.wait(30)


def endless_chunked(conn: socket.socket, server: RawServer) -> None:
    """A chunked answer that never ends (until the client hangs up, or MAX_SENT)."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024)
    server.read_request(conn)
    server.send(conn, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n" % 16384 + b"x" * 16384 + b"\r\n"
    while not server.stop.is_set() and server.sent < MAX_SENT:
        server.send(conn, chunk)


def huge_content_length(conn: socket.socket, server: RawServer) -> None:
    """Content-Length says 50 MB, and the server tries to send them."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024)
    server.read_request(conn)
    size = 50 * 1024 * 1024
    server.send(conn, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
    block = b"x" * 16384
    while not server.stop.is_set() and server.sent < size:
        server.send(conn, block)

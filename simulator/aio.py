"""The simulator's upstream API on one asyncio loop, for benchmarks.

The threaded simulator (``simulator.server``) spends a thread per connection and
tops out at a few hundred requests a second on this machine's two cores; a
benchmark that keeps 10,000 generations in flight needs more than a thousand. This
front answers the same two API paths with the same :class:`Generation` model, status
names and Bearer check, over HTTP/1.1 keep-alive, from a single event loop. It has no
faults and no config changes: it is the well-behaved upstream that contenders race on.

Control (no auth): ``GET /_sim/requests`` and ``GET /_sim/generations`` return the
same shapes as the threaded simulator's, ``POST /_sim/reset`` forgets everything, and
``GET``/``HEAD /_sim/videos/<id>.mp4`` serves a completed generation's MP4.

Run it with ``python -m simulator.aio --port 8399 --generation-time 5``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from dataclasses import asdict
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .model import (
    API_PATHS,
    MODEL_ID,
    TIME_TAG,
    Generation,
    LoggedRequest,
    RateWindow,
    SimConfig,
    rate_limited,
)
from .videos import VideoAnswer, video_answer, video_id

_REASONS = {
    200: "OK",
    403: "Forbidden",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    429: "Too Many Requests",
}


class AioSimulator:
    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.generations: dict[str, Generation] = {}
        self.log: list[LoggedRequest] = []
        self.window = RateWindow()
        self.extra_headers: dict[str, str] = {}  # of the answer being written

    # --- HTTP plumbing ---------------------------------------------------------------------

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        key, _, value = line.partition(":")
                        headers[key.strip().lower()] = value.strip()
                length = int(headers.get("content-length") or 0)
                body = await reader.readexactly(length) if length else b""
                self.extra_headers = {}
                video = self.video(method, target)
                if video is not None:
                    code, data, extra_headers = video.status, video.body, video.headers
                else:
                    code, payload = self.route(method, target, headers, body)
                    data = json.dumps(payload).encode()
                    extra_headers = {"Content-Type": "application/json"}
                    extra_headers["Content-Length"] = str(len(data))
                    extra_headers.update(self.extra_headers)
                extra = "".join(f"{k}: {v}\r\n" for k, v in extra_headers.items())
                writer.write(
                    f"HTTP/1.1 {code} {_REASONS.get(code, '')}\r\n{extra}\r\n".encode() + data
                )
                if headers.get("connection", "").lower() == "close":
                    break
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    # --- routes ------------------------------------------------------------------------------

    def video(self, method: str, target: str) -> VideoAnswer | None:
        """The answer to a video URL (``GET``/``HEAD /_sim/videos/<id>.mp4``), else None."""
        url = urlsplit(target)
        gen_id = video_id(url.path)
        if gen_id is None or method not in ("GET", "HEAD"):
            return None
        gen = self.generations.get(gen_id)
        now = time.time()
        ready = gen is not None and gen.has_video(now, self.config.queued_fraction)
        expires = next(iter(parse_qs(url.query).get("expires") or []), None)
        return video_answer(method, ready, expires, now)

    def route(
        self, method: str, target: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, Any]:
        url = urlsplit(target)
        if url.path == "/_sim/requests":
            return 200, [asdict(r) for r in self.log]
        if url.path == "/_sim/generations":
            return 200, [asdict(g) for g in self.generations.values()]
        if url.path == "/_sim/reset" and method == "POST":
            self.generations.clear()
            self.log.clear()
            self.window = RateWindow()
            return 200, {"reset": True}
        entry = LoggedRequest(t=time.time(), method=method, path=url.path)
        self.log.append(entry)
        if not self.window.admit(entry.t, self.config.rate_limit):
            entry.status_code, payload, self.extra_headers = rate_limited(self.config)
            entry.fault = "rate_limit"
            return entry.status_code, payload
        if url.path not in API_PATHS:
            entry.status_code = 404
            return 404, {"message": f"no route {method} {url.path}"}
        token = headers.get("authorization", "").removeprefix("Bearer ").strip()
        entry.authorized = bool(token) and token == self.config.api_key
        if not entry.authorized:
            entry.status_code = 401
            return 401, {"message": "Unauthorized: invalid or missing API key"}
        if method == "POST":
            entry.status_code, payload = self._create(entry, raw)
            return entry.status_code, payload
        entry.generation_id = (parse_qs(url.query).get("generation_id") or [""])[0] or None
        entry.status_code, payload = self._status(entry, headers.get("host", "127.0.0.1"))
        return entry.status_code, payload

    def _create(self, entry: LoggedRequest, raw: bytes) -> tuple[int, Any]:
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = None
        if not isinstance(body, dict) or body.get("model") != MODEL_ID:
            return 400, {"message": "model: invalid or missing model"}
        if not body.get("image_url"):
            return 400, {"message": "image_url: Required"}
        entry.prompt = str(body.get("prompt") or "")
        duration = 10 if str(body.get("duration", "5")) == "10" else 5
        tag = TIME_TAG.search(entry.prompt)
        gen_time = float(tag.group(1)) if tag else self.config.generation_time * duration / 5
        gen = Generation(
            id=uuid.uuid4().hex,
            created_at=time.time(),
            generation_time=gen_time,
            behaviour="normal",
            duration=duration,
            prompt=entry.prompt,
        )
        self.generations[gen.id] = gen
        entry.generation_id = gen.id
        return 200, {"id": gen.id, "status": "queued"}

    def _status(self, entry: LoggedRequest, host: str) -> tuple[int, Any]:
        gen = self.generations.get(entry.generation_id or "")
        if gen is None:
            return 404, {"message": f"generation {entry.generation_id!r} not found"}
        status = gen.status(time.time(), self.config.queued_fraction)
        payload: dict[str, Any] = {"id": gen.id, "status": status}
        if status == "completed":
            payload["video"] = {"url": f"http://{host}/_sim/videos/{gen.id}.mp4"}
            payload["meta"] = {"usage": {"credits_used": 126000 * gen.duration // 5}}
        return 200, payload


async def serve(host: str, port: int, config: SimConfig) -> None:
    sim = AioSimulator(config)
    server = await asyncio.start_server(sim.handle, host, port, backlog=4096)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8399)
    parser.add_argument("--generation-time", type=float, default=5.0)
    parser.add_argument("--api-key", default="sim-key")
    parser.add_argument(
        "--rate-limit",
        type=float,
        default=0.0,
        help="API requests per second over which to answer 429 (0: none)",
    )
    args = parser.parse_args(argv)
    config = SimConfig(
        api_key=args.api_key, generation_time=args.generation_time, rate_limit=args.rate_limit
    )
    asyncio.run(serve(args.host, args.port, config))


if __name__ == "__main__":
    main()

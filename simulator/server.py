"""A local stand-in for the AI/ML API's Kling image-to-video endpoints.

It speaks the upstream's API on both paths (``/v2/generate/video/kling/generation`` and
``/v2/video/generations``), checks the Bearer key, reports the upstream's status names,
and can be made slow, failing, rate-limited or never finishing, so that tests and demos
need no key and no network.

Control (no auth; bind it to loopback):
- ``GET  /_sim/requests``   every request received, in order (the test oracle);
- ``POST /_sim/faults``     queue one-shot faults, e.g. ``{"status": 429, "count": 2,
  "retry_after": 1, "method": "POST"}``, ``{"kind": "disconnect", "count": 1}``,
  ``{"kind": "delay", "seconds": 3, "count": 1}``, ``{"kind": "body", "status": 200,
  "body": "<html>oops</html>", "size": 0}`` (a raw, hostile answer; ``size`` repeats it);
- ``POST /_sim/config``     change settings (``generation_time``, ``latency``, ...);
- ``POST /_sim/reset``      forget requests, generations and faults;
- ``GET|HEAD /_sim/videos/<id>.mp4`` a completed generation's video (a real MP4, see
  :mod:`simulator.videos`): the ``video.url`` that status calls report.

Per-job behaviour, chosen by a tag in the prompt: ``[sim:never]`` (never finishes),
``[sim:error]`` (ends in ``error``), ``[sim:unknown]`` (reports an unknown status),
``[sim:novideo]`` (``completed`` without a video URL), ``[sim:legacy]`` (reports
``waiting``/``active`` instead of ``queued``/``generating``), ``[sim:time=S]``
(generation takes S seconds).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .model import (
    API_PATHS,
    MODEL_ID,
    TIME_TAG,
    Fault,
    Generation,
    LoggedRequest,
    SimConfig,
    SimState,
    behaviour_for,
    rate_limited,
)
from .state import StateFile, load_generations
from .videos import video_answer, video_id


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # --- plumbing --------------------------------------------------------------------------

    def _send(self, code: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        head = [f"HTTP/1.1 {code} {self.responses.get(code, ('',))[0]}"]
        head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)  # one write
        self.wfile.flush()

    def _send_raw(self, code: int, text: str, content_type: str, size: int) -> None:
        body = text.encode()
        if size > len(body) and body:
            body = (body * (size // len(body) + 1))[:size]
        head = [f"HTTP/1.1 {code} {self.responses.get(code, ('',))[0]}"]
        head += [f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        self.wfile.flush()

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw or b"null")
        except ValueError:
            return None

    # --- routes ------------------------------------------------------------------------------

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if video_id(url.path) is not None:
            return self._video("GET", url.path, parse_qs(url.query))
        if url.path.startswith("/_sim/"):
            return self._control("GET", url.path, None)
        if url.path.startswith("/_sim"):
            return self._send(404, {"message": "not found"})
        return self._api("GET", url.path, parse_qs(url.query), None)

    def do_HEAD(self) -> None:
        url = urlsplit(self.path)
        if video_id(url.path) is not None:
            return self._video("HEAD", url.path, parse_qs(url.query))
        return self._send_raw(405, "", "text/plain", 0)

    def _video(self, method: str, path: str, query: dict[str, list[str]]) -> None:
        state = self.server.state
        with state.lock:
            gen = state.generations.get(video_id(path) or "")
            fraction = state.config.queued_fraction
        now = time.time()
        ready = gen is not None and gen.has_video(now, fraction)
        answer = video_answer(method, ready, next(iter(query.get("expires") or []), None), now)
        head = [f"HTTP/1.1 {answer.status} {self.responses.get(answer.status, ('',))[0]}"]
        head += [f"{k}: {v}" for k, v in answer.headers.items()]
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode() + answer.body)
        self.wfile.flush()

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        body = self._body()
        if url.path.startswith("/_sim/"):
            return self._control("POST", url.path, body)
        return self._api("POST", url.path, {}, body)

    def _control(self, method: str, path: str, body: Any) -> None:
        state = self.server.state
        if method == "GET" and path == "/_sim/requests":
            with state.lock:
                return self._send(200, [asdict(r) for r in state.log])
        if method == "GET" and path == "/_sim/generations":
            with state.lock:
                return self._send(200, [asdict(g) for g in state.generations.values()])
        if method == "POST" and path == "/_sim/faults":
            items = body if isinstance(body, list) else [body]
            try:
                faults = [Fault(**item) for item in items]
            except TypeError as exc:
                return self._send(400, {"message": f"bad fault: {exc}"})
            with state.lock:
                state.faults.extend(faults)
            return self._send(200, {"queued": len(faults)})
        if method == "POST" and path == "/_sim/config":
            with state.lock:
                for key, value in (body or {}).items():
                    setattr(state.config, key, value)
                return self._send(200, asdict(state.config))
        if method == "POST" and path == "/_sim/reset":
            with state.lock:
                state.faults.clear()
                state.generations.clear()
                state.log.clear()
            self.server.save()
            return self._send(200, {"reset": True})
        return self._send(404, {"message": "not found"})

    def _api(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> None:
        state = self.server.state
        entry = LoggedRequest(t=time.time(), method=method, path=path)
        if isinstance(body, dict):
            entry.prompt = str(body.get("prompt") or "")
        entry.generation_id = (query.get("generation_id") or [""])[0] or None
        with state.lock:
            state.log.append(entry)
            config = SimConfig(**asdict(state.config))
            admitted = state.window.admit(entry.t, config.rate_limit)
        if not admitted:
            entry.status_code, payload, headers = rate_limited(config)
            entry.fault = "rate_limit"
            return self._send(entry.status_code, payload, headers)
        if config.latency:
            time.sleep(config.latency)  # a slow upstream: this is the server, not a task
        fault = state.take_fault(method)
        if fault is not None:
            entry.fault = fault.kind
            if fault.kind == "disconnect":
                self.close_connection = True
                self.connection.shutdown(2)
                return
            if fault.kind == "delay":
                time.sleep(fault.seconds)
            elif fault.kind == "body":
                entry.status_code = fault.status
                return self._send_raw(fault.status, fault.body, fault.content_type, fault.size)
            else:
                headers = {}
                if fault.retry_after is not None:
                    headers["Retry-After"] = f"{fault.retry_after:g}"
                entry.status_code = fault.status
                return self._send(fault.status, {"message": fault.message}, headers)
        if path not in API_PATHS:
            entry.status_code = 404
            return self._send(404, {"message": f"no route {method} {path}"})
        auth = self.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else ""
        entry.authorized = bool(token) and (not config.api_key or token == config.api_key)
        if not entry.authorized:
            entry.status_code = 401
            return self._send(401, {"message": "Unauthorized: invalid or missing API key"})
        if method == "POST":
            return self._create(entry, body, config)
        return self._status(entry, query, config)

    def _create(self, entry: LoggedRequest, body: Any, config: SimConfig) -> None:
        if not isinstance(body, dict) or body.get("model") != MODEL_ID:
            entry.status_code = 400
            return self._send(400, {"message": "model: invalid or missing model"})
        prompt = entry.prompt or ""
        if not body.get("image_url"):
            entry.status_code = 400
            return self._send(400, {"message": "image_url: Required"})
        if config.reject_create:
            entry.status_code = config.reject_create
            return self._send(config.reject_create, {"message": "simulated rejection"})
        duration = 10 if str(body.get("duration", "5")) == "10" else 5
        tag = TIME_TAG.search(prompt)
        gen_time = float(tag.group(1)) if tag else config.generation_time * duration / 5
        gen = Generation(
            id=uuid.uuid4().hex,
            created_at=time.time(),
            generation_time=gen_time,
            behaviour=behaviour_for(prompt, config),
            duration=duration,
            prompt=prompt,
        )
        with self.server.state.lock:
            self.server.state.generations[gen.id] = gen
        self.server.save()
        entry.generation_id = gen.id
        entry.status_code = 200
        return self._send(200, {"id": gen.id, "status": "queued"})

    def _status(self, entry: LoggedRequest, query: dict[str, list[str]], cfg: SimConfig) -> None:
        gen_id = entry.generation_id or ""
        with self.server.state.lock:
            gen = self.server.state.generations.get(gen_id)
        if gen is None:
            entry.status_code = 404
            return self._send(404, {"message": f"generation {gen_id!r} not found"})
        entry.prompt = gen.prompt
        status = gen.status(time.time(), cfg.queued_fraction)
        payload: dict[str, Any] = {"id": gen.id, "status": status}
        if status == "completed" and gen.behaviour != "novideo":
            host = self.headers.get("Host", "127.0.0.1")
            expires = int(time.time()) + 3600
            payload["video"] = {"url": f"http://{host}/_sim/videos/{gen.id}.mp4?expires={expires}"}
        if status == "error":
            payload["error"] = {"name": "GenerationError", "message": "simulated failure"}
        if status in ("completed", "error"):
            payload["meta"] = {"usage": {"credits_used": 126000 * gen.duration // 5}}
        entry.status_code = 200
        return self._send(200, payload)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(
        self, address: tuple[str, int], state: SimState, state_file: StateFile | None
    ) -> None:
        self.state = state
        self.state_file = state_file
        super().__init__(address, _Handler)

    def save(self) -> None:
        """Write the generations to the state file, if there is one (after each change)."""
        if self.state_file is not None:
            self.state_file.save(self.state)


class Simulator:
    """The simulator as an object: ``start()`` in a background thread, ``stop()``.

    With ``state_file``, the generations are loaded from that file (when it exists) and
    written back after every create and reset (see :mod:`simulator.state`), so a
    restarted simulator still answers for them."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        state_file: str | Path | None = None,
        **config: Any,
    ) -> None:
        self.state = SimState(config=SimConfig(**config))
        saver = None
        if state_file is not None:
            saver = StateFile(Path(state_file))
            self.state.generations.update(load_generations(saver.path))
        self._server = _Server((host, port), self.state, saver)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """What to set ``AIMLAPI_BASE_URL`` to."""
        return f"http://127.0.0.1:{self.port}/v2"

    def start(self) -> Simulator:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="videoq-simulator", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        if self._thread is not None:  # shutdown() waits for a serve loop that must exist
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    # --- helpers for tests -----------------------------------------------------------------

    def requests(self) -> list[LoggedRequest]:
        with self.state.lock:
            return list(self.state.log)

    def creates(self, prompt: str | None = None) -> list[LoggedRequest]:
        return [
            r
            for r in self.requests()
            if r.method == "POST"
            and r.status_code == 200
            and (prompt is None or r.prompt == prompt)
        ]

    def polls(self, generation_id: str) -> list[LoggedRequest]:
        return [
            r for r in self.requests() if r.method == "GET" and r.generation_id == generation_id
        ]

    def add_fault(self, **fault: Any) -> None:
        with self.state.lock:
            self.state.faults.append(Fault(**fault))

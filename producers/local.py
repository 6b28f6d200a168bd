"""Local processes for the demo and the tests: a private Redis, a worker, Flower."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import redis

from producers.ops import flower_command
from worker.settings import load_settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process(proc: subprocess.Popen[bytes], grace: float = 10.0) -> int:
    """SIGTERM, then SIGKILL after ``grace`` seconds. Returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


@dataclass
class RedisServer:
    """A private ``redis-server`` on a free loopback port, in its own directory."""

    port: int = 0
    appendonly: bool = False
    directory: Path | None = None
    extra_args: list[str] = field(default_factory=list)  # e.g. ["--maxmemory", "2mb"]
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _tmp: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is not on PATH: install Redis (apt-get install redis-server) "
                "or set VIDEOQ_REDIS_URL to a running Redis"
            )
        if self.directory is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="videoq-redis-")
            self.directory = Path(self._tmp.name)
        self.port = self.port or free_port()
        args = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(self.directory),
            "--daemonize",
            "no",
            "--logfile",
            "redis.log",
        ]
        if self.appendonly:
            args += ["--appendonly", "yes", "--appendfsync", "everysec"]
        args += self.extra_args
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        give_up = time.monotonic() + timeout
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > give_up:
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.05)
        client.close()
        return self

    def stop(self, kill: bool = False) -> None:
        if self.proc is not None:
            if kill:
                self.proc.kill()
                self.proc.wait()
            else:
                stop_process(self.proc)
            self.proc = None

    def cleanup(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def start_worker(
    env: dict[str, str],
    log: IO[bytes],
    *,
    name: str = "videoq",
    concurrency: int = 1,
    extra: list[str] | None = None,
) -> subprocess.Popen[bytes]:
    """A ``videoq worker`` subprocess with ``env`` (settings) on top of ours."""
    args = [
        sys.executable,
        "-m",
        "producers",
        "worker",
        "-c",
        str(concurrency),
        "-n",
        f"{name}@%h",
        "--without-mingle",
        "--without-gossip",
        *(extra or []),
    ]
    return subprocess.Popen(
        args,
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def start_flower(
    env: dict[str, str], log: IO[bytes], port: int, db: Path
) -> subprocess.Popen[bytes]:
    """Flower on 127.0.0.1:``port`` as ``videoq flower`` runs it (the same command line,
    from :func:`producers.ops.flower_command`), its state kept in ``db``, with ``env``
    (settings) on top of ours."""
    args = flower_command(load_settings(flower_db=str(db)), "127.0.0.1", port, [])
    return subprocess.Popen(
        args,
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

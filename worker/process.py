"""Wires one worker process: the :class:`~worker.runtime.Runtime` its steps run with.

Each process (a prefork child, or the main process of a threads/solo pool) gets its own
Redis pool, event loop and HTTP clients, made on first use after the fork; pool
threads share their process's. The scheduler publishes the next steps by task name
(``worker.scheduling``), so nothing here imports the task code.
"""

from __future__ import annotations

import os
import random
import threading
import time

from .http import EventLoop
from .runtime import Runtime
from .scheduling import SendTask, scheduler_for
from .settings import Settings
from .store import JobStore, connect
from .upstream import UpstreamClient
from .webhooks import webhook_http


def build_runtime(settings: Settings, send_task: SendTask) -> Runtime:
    """A runtime with its own Redis pool, event loop and HTTP clients."""
    loop = EventLoop()
    store = JobStore(connect(settings), settings)
    return Runtime(
        settings=settings,
        store=store,
        # the rate limiter shares the store's Redis pool
        upstream=UpstreamClient.from_settings(settings, loop, redis_client=store.redis),
        scheduler=scheduler_for(settings, store, send_task),
        clock=time.time,
        rng=random.Random(),
        http=webhook_http(settings, loop),
    )


class ProcessRuntime:
    """This process's runtime, made once per process (after a fork, anew)."""

    def __init__(self, settings: Settings, send_task: SendTask) -> None:
        self.settings = settings
        self.send_task = send_task
        self._made: tuple[int, Runtime] | None = None
        self._locks: dict[int, threading.Lock] = {}

    def get(self) -> Runtime:
        pid = os.getpid()
        made = self._made
        if made is not None and made[0] == pid:
            return made[1]
        # Pool threads may ask at once; a lock per process (a forked child gets its own,
        # never one a parent's thread held at the fork).
        with self._locks.setdefault(pid, threading.Lock()):
            if self._made is None or self._made[0] != pid:
                self._made = (pid, build_runtime(self.settings, self.send_task))
            return self._made[1]

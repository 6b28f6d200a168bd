"""The pump: sends batch mode's tick messages when work in the books is due.

Batch mode keeps every due poll and create in Redis (``worker.ticks``,
``worker.intake``), not in messages. Every worker's main process runs a
:class:`PumpThread` that looks at the two books a few times a second (one script:
the earliest entry of each) and, when one has work due, sends a tick message for the
current ``VIDEOQ_POLL_TICK``-wide slot, at once, no countdown. A key per slot and book
makes that one message for the whole fleet, whichever pump saw it first.

So no worker holds scheduled messages in memory: a worker that dies takes nothing with
it but the ticks it was running, whose leases run out within seconds and whose work
the next slot's tick takes. The pump sleeps until the earliest entry is due (at most a
slot), so a lone poll is not late by more than the time to send and start its tick.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from celery import bootsteps

from . import logs
from .keys import CREATE_TICK_TASK, TICK_TASK, Keys
from .settings import Settings
from .store import connect, lua_script
from .ticks import tick_of

# Shortest pause between two looks at the books while work is due.
MIN_WAIT = 0.01


class Pump:
    """One look at the books: :meth:`once` sends the ticks due and says how long to
    wait before the next look."""

    def __init__(
        self,
        client: redis.Redis,
        settings: Settings,
        send: Callable[[str, float], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keys = Keys(settings.key_prefix)
        self.width = settings.poll_tick
        self.send = send  # send(task name, slot end)
        self.clock = clock
        self._script = client.register_script(lua_script("pump"))

    def once(self) -> float:
        now = self.clock()
        slot = tick_of(now, self.width)
        if slot <= now:  # exactly on a boundary: the slot that opens now
            slot += self.width
        poll, create, next_due = self._script(
            keys=[self.keys.polls(), self.keys.creates()],
            args=[
                repr(now),
                round(slot * 1000),
                self.keys.tick_prefix(),
                max(1000, round(self.width * 4000)),
            ],
        )
        if int(poll):
            self.send(TICK_TASK, slot)
        if int(create):
            self.send(CREATE_TICK_TASK, slot)
        if not next_due:
            return self.width
        wait = float(next_due) - now
        if wait <= 0:  # due, and this slot's tick is on its way: look when the next opens
            return max(MIN_WAIT, slot - now)
        return max(MIN_WAIT, min(wait, self.width))


class PumpThread(threading.Thread):
    """Runs the :class:`Pump` until stopped; a Redis or broker error costs one second."""

    def __init__(self, pump: Pump) -> None:
        super().__init__(name="videoq-pump", daemon=True)
        self.pump = pump
        self.stopping = threading.Event()

    def run(self) -> None:
        wait = 0.0
        while not self.stopping.wait(wait):
            try:
                wait = self.pump.once()
            except Exception as exc:  # Redis down, a publish failed: look again soon
                wait = 1.0
                logs.event(
                    "pump.failed", level=logging.WARNING, error=f"{type(exc).__name__}: {exc}"[:300]
                )

    def stop(self) -> None:
        self.stopping.set()


class PumpStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """A worker bootstep that runs the :class:`PumpThread` in the main process."""

    label = "videoq pump"

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.thread: PumpThread | None = None

    def start(self, parent: Any) -> None:
        app = parent.app
        settings: Settings = app.videoq_settings
        client = connect(settings)

        def send(task: str, slot: float) -> None:
            step = "tick" if task == TICK_TASK else "create-tick"
            app.send_task(
                task,
                kwargs={"tick": slot},
                queue=settings.tick_queue,
                kwargsrepr=repr({"step": step, "slot": round(slot, 3)}),
            )

        self.thread = PumpThread(Pump(client, settings, send))
        self.thread.start()

    def stop(self, parent: Any) -> None:
        if self.thread is not None:
            self.thread.stop()
            self.thread = None

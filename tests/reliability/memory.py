"""The resident memory of a process tree, sampled in a thread (the hostile-peer tests
check that a hostile peer never grows the worker's memory)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

import psutil


class TreeRSS:
    """Samples the summed RSS of a process and all its descendants every ``every``
    seconds. ``on_exceed`` is called once if growth passes ``safety_bytes`` (to stop a
    peer before it pushes the machine too far)."""

    def __init__(
        self,
        pid: int,
        every: float = 0.2,
        safety_bytes: int = 800 << 20,
        on_exceed: Callable[[], None] | None = None,
    ) -> None:
        self.pid = pid
        self.every = every
        self.safety_bytes = safety_bytes
        self.on_exceed = on_exceed
        self.baseline = self._sample()
        self.peak = self.baseline
        self.samples = 1
        self.tripped = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-rss", daemon=True)

    def _sample(self) -> int:
        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return 0
        total = 0
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return total

    def _run(self) -> None:
        give_up = time.monotonic() + 600  # bounded even if nobody stops it
        while not self._stop.wait(self.every) and time.monotonic() < give_up:
            rss = self._sample()
            self.samples += 1
            self.peak = max(self.peak, rss)
            if not self.tripped and rss - self.baseline > self.safety_bytes:
                self.tripped = True
                if self.on_exceed is not None:
                    self.on_exceed()

    def __enter__(self) -> TreeRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    @property
    def growth_mb(self) -> float:
        return round((self.peak - self.baseline) / 2**20, 1)

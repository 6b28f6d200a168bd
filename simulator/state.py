"""The simulator's generations kept in a file (``videoq simulator --state FILE``), so
that a restart does not forget them: a job in flight keeps polling and completes.

The file holds every generation (id, creation time, generation time, behaviour,
duration, prompt) as JSON. It is rewritten after every change (each create, and a
reset) by writing a temporary file beside it and renaming it over the old one, so it
is whole even when the simulator is killed mid-write, and nothing is lost to a
``kill -9``. A generation's status follows from its wall-clock creation time, so after
a restart it is wherever it would have been. The request log, queued faults and
config changes are not kept.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from .model import Generation, SimState

_FIELDS = {f.name for f in fields(Generation)}


def load_generations(path: Path) -> dict[str, Generation]:
    """The generations saved in ``path``; none when the file does not exist yet.
    Raises ``ValueError`` naming the file when it is not a simulator state file."""
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    try:
        items: Any = json.loads(raw)["generations"]
        generations = [Generation(**item) for item in items if set(item) == _FIELDS]
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"{path} is not a simulator state file ({exc})") from None
    if len(generations) != len(items):
        raise ValueError(f"{path} is not a simulator state file (unknown fields)")
    return {gen.id: gen for gen in generations}


class StateFile:
    """Writes the generations to one file, whole, one write at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def save(self, state: SimState) -> None:
        """Write ``state``'s generations; the snapshot is taken inside this object's
        lock, so a slower writer never puts back an older snapshot."""
        temp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with self._lock:
            with state.lock:
                items = [asdict(gen) for gen in state.generations.values()]
            data = json.dumps({"generations": items})
            with open(temp, "w", encoding="utf-8") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, self.path)

"""The mutation catalogue (scripts/mutants.toml): its mutants, and the edits that make
one, applied to the source and always undone. Used by scripts/mutants.py."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

# Unit tests quick enough for CI's mutation step: no worker processes are started.
FAST_TESTS = ("tests/worker/", "tests/producers/", "tests/test_static.py")
Expect = Literal["caught", "held"]


class CatalogueError(Exception):
    """The catalogue itself is malformed (not a single mutant's problem)."""


@dataclass(frozen=True)
class Edit:
    file: str  # relative to the root
    old: str  # exact text, found exactly once
    new: str


@dataclass(frozen=True)
class Mutant:
    id: str
    guard: str  # one line: the guard the edits remove
    edits: tuple[Edit, ...]
    tests: tuple[str, ...]  # pytest node ids (or files)
    expect: Expect = "caught"

    def tests_for(self, fast: bool) -> tuple[str, ...]:
        return tuple(t for t in self.tests if is_fast(t)) if fast else self.tests


def is_fast(test_id: str) -> bool:
    return test_id.startswith(FAST_TESTS)


# --- the catalogue -------------------------------------------------------------------------


def load_catalogue(path: Path) -> list[Mutant]:
    """The mutants of a TOML catalogue (see scripts/mutants.toml for the format)."""
    data = tomllib.loads(path.read_text())
    mutants: list[Mutant] = []
    for raw in data.get("mutant", []):
        ident = str(raw.get("id", "?"))
        try:
            edits = tuple(Edit(str(e["file"]), str(e["old"]), str(e["new"])) for e in raw["edit"])
            expect = raw.get("expect", "caught")
            if expect not in ("caught", "held"):
                raise CatalogueError(f"{ident}: expect must be 'caught' or 'held'")
            mutant = Mutant(
                id=ident,
                guard=str(raw["guard"]),
                edits=edits,
                tests=tuple(str(t) for t in raw["tests"]),
                expect=expect,
            )
        except KeyError as exc:
            raise CatalogueError(f"{ident}: missing {exc}") from None
        if not mutant.edits or not mutant.tests:
            raise CatalogueError(f"{ident}: needs at least one edit and one test")
        if any(not e.old for e in mutant.edits):
            raise CatalogueError(f"{ident}: an edit's old text is empty")
        mutants.append(mutant)
    ids = [m.id for m in mutants]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise CatalogueError(f"duplicate mutant ids: {', '.join(duplicates)}")
    return mutants


# Each file a mutant edits: (its original bytes, its mutated text).
Sources = dict[Path, tuple[bytes, str]]


def mutated_sources(root: Path, mutant: Mutant) -> Sources:
    """Each file the mutant edits: (its original bytes, its mutated text). Raises
    ValueError naming the edit when an edit's old text is not there exactly once, or
    when a mutated Python file no longer compiles."""
    out: Sources = {}
    for n, edit in enumerate(mutant.edits, 1):
        path = root / edit.file
        if not path.is_file():
            raise ValueError(f"edit {n}: no file {edit.file}")
        if path in out:  # a second edit of the same file
            original, text = out[path]
        else:
            original = path.read_bytes()
            text = original.decode()
        count = text.count(edit.old)
        if count != 1:
            where = "not found" if count == 0 else f"found {count} times"
            raise ValueError(f"edit {n}: old text {where} in {edit.file}: {edit.old[:60]!r}")
        out[path] = (original, text.replace(edit.old, edit.new))
    for path, (_, text) in out.items():
        if path.suffix == ".py":
            try:
                compile(text, str(path), "exec")
            except SyntaxError as exc:
                raise ValueError(f"the mutated {path.name} does not compile: {exc}") from None
    return out


@contextmanager
def applied(sources: Sources) -> Iterator[None]:
    """The mutated sources written for the duration; the original bytes (and times)
    always put back, then checked."""
    stats = {path: path.stat() for path in sources}
    try:
        for path, (_, text) in sources.items():
            path.write_text(text)
        yield
    finally:
        for path, (original, _) in sources.items():
            path.write_bytes(original)
            os.utime(path, ns=(stats[path].st_atime_ns, stats[path].st_mtime_ns))
        for path, (original, _) in sources.items():
            if path.read_bytes() != original:
                raise SystemExit(f"FATAL: {path} was not restored; check it by hand")

"""Producers import only what they need: the package, the CLI and the gateway bring in
none of the worker's own machinery, and no module of producers/ imports itself back.

The imports run in a fresh interpreter with ``VIDEOQ_VISIBILITY_TIMEOUT=5``, a setting
the worker refuses: whatever builds the Celery worker app on import (``worker.app``
does, from the environment's settings) makes the interpreter fail.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCERS = ROOT / "producers"

# The worker's own modules: task code, the tick and intake machinery, the upstream client,
# the aiohttp transport, and the Celery app that pulls them all in.
WORKER_ONLY = {
    "worker.app",
    "worker.chain",
    "worker.ticks",
    "worker.intake",
    "worker.sweeper",
    "worker.tasks",
    "worker.upstream",
    "worker.http",
}
LIST_MODULES = "import sys; print(sorted(m for m in sys.modules if m.startswith('worker.')))"
# Stands in for producers.client, to see what producers.gateway imports by itself.
STUB_CLIENT = (
    "import sys, types; stub = types.ModuleType('producers.client'); "
    "stub.Client = object; sys.modules['producers.client'] = stub"
)


def _imported(code: str) -> set[str]:
    """The worker.* modules imported after ``code`` runs in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", f"{code}; {LIST_MODULES}"],
        env={**os.environ, "VIDEOQ_VISIBILITY_TIMEOUT": "5"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    modules: list[str] = ast.literal_eval(done.stdout.strip().splitlines()[-1])
    return set(modules)


def test_the_package_and_the_cli_import_no_worker_machinery() -> None:
    imported = _imported("import producers, producers.cli")
    assert imported, "the probe saw no worker module at all"
    assert imported & WORKER_ONLY == set()


def test_the_gateway_by_itself_imports_no_worker_machinery() -> None:
    # producers.client is replaced by a stub here; the next test covers the real one.
    imported = _imported(f"{STUB_CLIENT}; import producers.gateway")
    assert "worker.request" in imported  # the probe did import the gateway
    assert imported & WORKER_ONLY == set()


def test_the_package_cli_and_gateway_with_the_real_client_import_no_worker_machinery() -> None:
    # The worker's Celery app refuses VIDEOQ_VISIBILITY_TIMEOUT=5 when it is built: the
    # import succeeds only if no producer builds it.
    imported = _imported("import producers, producers.cli, producers.gateway")
    assert imported & WORKER_ONLY == set()


def _node(path: Path) -> str:
    package = path.parent.name
    return package if path.stem == "__init__" else f"{package}.{path.stem}"


def _producers_imports(path: Path) -> set[str]:
    """The producers modules ``path`` imports, at its top or inside any function (the
    package itself is ``producers``, for its ``__init__``)."""
    package = path.parent.name
    modules = {_node(p) for p in path.parent.glob("*.py")}
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . import x, from .client import Client
                module = ".".join(filter(None, [package, node.module]))
            else:
                module = node.module or ""
            for alias in node.names:  # from producers import cli: the module cli
                submodule = f"{module}.{alias.name}"
                found.add(submodule if submodule in modules else module)
    return found & modules


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    def visit(node: str, trail: list[str]) -> list[str] | None:
        if node in trail:
            return [*trail[trail.index(node) :], node]
        for following in sorted(graph.get(node, ())):
            if found := visit(following, [*trail, node]):
                return found
        return None

    for start in sorted(graph):
        if found := visit(start, []):
            return found
    return None


def test_the_cycle_finder_finds_cycles() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_among_the_producers_modules() -> None:
    graph = {_node(p): _producers_imports(p) for p in PRODUCERS.glob("*.py")}
    assert graph["producers.cli"] >= {"producers.ops", "producers.exits"}  # the probe works
    assert _cycle(graph) is None

"""The house's rules, read from the source (docs/architecture.md states them):

- no import cycle among videoq's modules, counting imports inside functions and under
  ``TYPE_CHECKING``;
- the worker never imports the producers, and only the task bindings import the
  worker's Celery app; producers reach the worker's wiring only inside the commands
  that run a worker;
- only the job store touches job record keys;
- every error type is defined in ``worker/errors.py``, under ``VideoqError``;
- no module over 400 lines.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("worker", "producers", "simulator", "bench")
MAX_LINES = 400
# Framework-required exception classes that cannot share the root: aiohttp needs an
# OSError from a resolver, Starlette an HTTPException from a middleware.
FRAMEWORK_EXCEPTIONS = {("worker/http.py", "_Blocked"), ("producers/gateway.py", "BodyTooLarge")}


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _imports(name: str) -> Iterator[tuple[str, ast.AST]]:
    """The videoq modules ``name`` imports, anywhere in it, with the import node."""
    tree = ast.parse(MODULES[name].read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULES:
                    yield alias.name, node
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if _is_package(name) else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            for alias in node.names:
                if f"{target}.{alias.name}" in MODULES:  # ``from pkg import module``
                    yield f"{target}.{alias.name}", node
                elif target in MODULES:
                    yield target, node


GRAPH = {name: {target for target, _ in _imports(name)} - {name} for name in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_even_inside_functions() -> None:
    assert len(GRAPH) > 40  # the walk found the house
    assert _cycles(GRAPH) == []


def test_the_worker_never_imports_the_producers_or_the_bench() -> None:
    wrong = {
        (name, target)
        for name, targets in GRAPH.items()
        if name.startswith("worker")
        for target in targets
        if target.split(".")[0] in ("producers", "bench")
    }
    assert wrong == set()


def test_only_the_task_bindings_import_the_workers_app_and_no_one_imports_them() -> None:
    importers = {name for name, targets in GRAPH.items() if "worker.app" in targets}
    assert {n for n in importers if n.startswith("worker")} == {"worker.tasks"}
    assert not [name for name, targets in GRAPH.items() if "worker.tasks" in targets]


WIRING = {"worker.app", "worker.tasks", "worker.process", "worker.sweeper", "worker.pump"}


def test_producers_reach_the_workers_wiring_only_inside_a_function() -> None:
    at_top: list[tuple[str, str]] = []
    for name in MODULES:
        if not name.startswith("producers"):
            continue
        tree = ast.parse(MODULES[name].read_text())
        for node in tree.body:  # module level only: a function's imports run when called
            if isinstance(node, ast.Import | ast.ImportFrom):
                at_top += [(name, t) for t, n in _imports(name) if n is node and t in WIRING]
    assert at_top == []


RECORD_KEYS = re.compile(r"\bkeys\.(job|request|payload|idempotency|job_pattern)\(")


def test_only_the_job_store_touches_job_records() -> None:
    outside = [
        str(path.relative_to(ROOT))
        for name, path in MODULES.items()
        if not name.startswith("worker.store") and RECORD_KEYS.search(path.read_text())
    ]
    assert outside == []


def _exception_classes(path: Path) -> Iterator[str]:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            bases = [ast.unparse(b) for b in node.bases]
            if any(re.search(r"(Error|Exception|Failure)$", b) for b in bases):
                yield node.name


def test_every_error_type_lives_in_the_errors_module() -> None:
    elsewhere = {
        (str(path.relative_to(ROOT)), cls)
        for name, path in MODULES.items()
        if name != "worker.errors" and not name.startswith(("bench", "simulator"))
        for cls in _exception_classes(path)
    } - FRAMEWORK_EXCEPTIONS
    assert elsewhere == set()


def test_every_error_type_has_the_one_root() -> None:
    import worker.errors as errors

    classes = [
        value
        for value in vars(errors).values()
        if isinstance(value, type) and issubclass(value, BaseException)
    ]
    assert len(classes) > 10
    assert all(issubclass(c, errors.VideoqError) for c in classes)


@pytest.mark.parametrize(
    "path",
    sorted(
        p
        for folder in (*PACKAGES, "tests", "scripts")
        for p in (ROOT / folder).rglob("*.py")
        if (ROOT / folder).is_dir()
    ),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_no_module_is_over_400_lines(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= MAX_LINES

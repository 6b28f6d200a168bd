"""Break the code on purpose, one guard at a time, and check that the tests notice.

    python scripts/mutants.py             # every mutant in scripts/mutants.toml
    python scripts/mutants.py --fast      # only the fast unit tests (CI: scripts/test.sh)
    python scripts/mutants.py M2 R4       # some mutants
    python scripts/mutants.py --list      # what the catalogue holds

Each mutant in the catalogue (``scripts/mutants.toml``) removes one guard: it replaces
exact text in the source (each edit's ``old`` must occur exactly once) and names the
tests that must catch it. The run:

1. collects the named tests: a test id that pytest does not find is an error;
2. runs them on the unmutated code: each must pass, else its check means nothing;
3. for each mutant, edits the files, runs its tests, and restores the files from an
   in-memory copy (whatever happens), then checks they are byte for byte the original.

A mutant is CAUGHT when pytest exits 1 (tests failed) and at least one named test
failed in its body, not in a collection, import, syntax or Lua compile error (the
mutant is then broken: an ERROR). A mutant marked ``expect = "held"`` removes one of
two independent guards: its tests must still pass (HELD), the other guard holding.

``--fast`` runs each mutant with only its fast tests (:data:`FAST_TESTS`), and skips
the mutants that have none. Exit status 0 only when every mutant run was CAUGHT or
HELD; 1 when one SURVIVED (or BROKE a held guard) or was an ERROR; 2 on bad usage.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Literal

from mutation_catalogue import (
    CatalogueError,
    Mutant,
    Sources,
    applied,
    load_catalogue,
    mutated_sources,
)

ROOT = Path(__file__).resolve().parent.parent
CATALOGUE = Path(__file__).resolve().with_suffix(".toml")
# pytest plugins the named tests do not use, off to save seconds per run (a named test
# that needs one fails the baseline, and the run says so).
PYTEST_ARGS = ("-p", "no:schemathesis", "-p", "no:anyio", "-p", "no:cacheprovider", "-q")
# Per test (pytest-timeout; a hang is a failure): this many times the slowest named
# test's time on the unmutated code, at least MIN_TIMEOUT; the baseline gets BASE_TIMEOUT.
SLOWDOWN = 5.0
MIN_TIMEOUT = 15
BASE_TIMEOUT = 300
RUN_TIMEOUT = 1800  # seconds per pytest run: past it, the mutant is an ERROR
# A failure that says the mutated code did not load is the mutant's fault, not a catch.
BROKEN = re.compile(
    r"\b(SyntaxError|IndentationError|ImportError|ModuleNotFoundError)\b"
    r"|Error compiling script|user_script:\d+:"
)
PYTEST_EXIT = {
    2: "interrupted (collection error?)",
    3: "internal error",
    4: "usage error (a test id not found?)",
    5: "no tests collected",
}

Verdict = Literal["CAUGHT", "HELD", "SURVIVED", "BROKE", "ERROR", "SKIPPED"]
OK: frozenset[Verdict] = frozenset({"CAUGHT", "HELD", "SKIPPED"})


@dataclass
class Result:
    mutant: Mutant
    verdict: Verdict
    detail: str
    seconds: float = 0.0


@dataclass
class Outcomes:
    """What one pytest run did to each test, from its JUnit XML report."""

    passed: set[str] = field(default_factory=set)
    seconds: dict[str, float] = field(default_factory=dict)  # node id: time taken
    failed: dict[str, str] = field(default_factory=dict)  # node id: the exception raised
    other: dict[str, str] = field(default_factory=dict)  # skipped or errored: why


# --- running pytest ------------------------------------------------------------------------


def junit_id(root: Path, classname: str, name: str, file: str | None) -> str:
    """A pytest node id from a JUnit test case (``file`` when pytest gave it)."""
    parts = classname.split(".")
    if file:
        module = Path(file).with_suffix("").parts
        path, classes = file, parts[len(module) :]
    else:  # the longest dotted prefix that is a file under the root
        for cut in range(len(parts), 0, -1):
            candidate = "/".join(parts[:cut]) + ".py"
            if (root / candidate).is_file():
                path, classes = candidate, parts[cut:]
                break
        else:
            path, classes = "/".join(parts) + ".py", []
    return "::".join([path, *classes, name])


def matches(test_id: str, node_id: str) -> bool:
    """Whether ``node_id`` (one collected test) is ``test_id`` or falls under it: a
    file, a class, or every parameter set of a test function."""
    return node_id == test_id or node_id.startswith((test_id + "::", test_id + "["))


def pytest_command() -> list[str]:
    return [sys.executable, "-m", "pytest", *PYTEST_ARGS]


def child_env() -> dict[str, str]:
    # No bytecode is written: a mutated module's .pyc must never outlive the mutant.
    return {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}


def collect(root: Path, test_ids: Sequence[str]) -> set[str]:
    """The node ids pytest collects from the files of ``test_ids``."""
    files = sorted({t.split("::")[0] for t in test_ids})
    missing = [f for f in files if not (root / f).is_file()]
    proc = subprocess.run(
        [*pytest_command(), "--collect-only", *[f for f in files if f not in missing]],
        cwd=root,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    if proc.returncode not in (0, 5):
        tail = "\n".join(proc.stdout.strip().splitlines()[-15:])
        raise CatalogueError(f"collecting the named tests failed (exit {proc.returncode}):\n{tail}")
    return {line.strip() for line in proc.stdout.splitlines() if "::" in line}


def run_tests(
    root: Path, test_ids: Sequence[str], timeout: int, *, first_failure: bool = False
) -> tuple[int, Outcomes, str]:
    """Run the tests (each within ``timeout`` s; ``first_failure``: stop at the first
    that fails): pytest's exit code, each test's outcome, and pytest's last line."""
    with tempfile.TemporaryDirectory(prefix="mutants-") as tmp:
        report = Path(tmp) / "junit.xml"
        try:
            proc = subprocess.run(
                [
                    *pytest_command(),
                    f"--timeout={timeout}",
                    *(["-x"] if first_failure else []),
                    f"--junitxml={report}",
                    "-o",
                    "junit_family=xunit1",  # each test case names its file
                    *test_ids,
                ],
                cwd=root,
                env=child_env(),
                capture_output=True,
                text=True,
                timeout=RUN_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return -1, Outcomes(), f"pytest ran over {RUN_TIMEOUT}s"
        lines = [line for line in proc.stdout.splitlines() if line.strip()]
        last = lines[-1].strip("= ") if lines else proc.stderr.strip()[-200:]
        outcomes = read_junit(root, report) if report.is_file() else Outcomes()
    return proc.returncode, outcomes, last


def read_junit(root: Path, report: Path) -> Outcomes:
    out = Outcomes()
    # pytest wrote the report, a moment ago, in our own temporary directory
    for case in ET.parse(report).getroot().iter("testcase"):  # noqa: S314
        node = junit_id(root, case.get("classname", ""), case.get("name", ""), case.get("file"))
        out.seconds[node] = float(case.get("time") or 0.0)
        failure = case.find("failure")
        problems = [p for tag in ("error", "skipped") if (p := case.find(tag)) is not None]
        if problems:  # an error in setup or teardown, or a skip: not a test result
            p = problems[0]
            out.other[node] = f"{p.tag}: {p.get('message') or ''}"[:300]
        elif failure is not None:
            # the exception: the message, and the traceback's "E" lines (not the source)
            raised = [ln for ln in (failure.text or "").splitlines() if ln.startswith("E ")]
            out.failed[node] = "\n".join([failure.get("message") or "", *raised])
        else:
            out.passed.add(node)
    return out


# --- one mutant ----------------------------------------------------------------------------


def judge(mutant: Mutant, tests: Sequence[str], code: int, outcomes: Outcomes, last: str) -> Result:
    """What one mutant run means, from pytest's exit code and the tests' outcomes."""
    if code == 0:
        verdict: Verdict = "HELD" if mutant.expect == "held" else "SURVIVED"
        return Result(mutant, verdict, f"every named test passed ({last})")
    if code != 1:
        why = PYTEST_EXIT.get(code, f"exit {code}")
        return Result(mutant, "ERROR", f"pytest {why}: {last}")
    named = {
        node: text for node, text in outcomes.failed.items() if any(matches(t, node) for t in tests)
    }
    broken = {node: text for node, text in named.items() if BROKEN.search(text)}
    if broken:
        node, text = next(iter(broken.items()))
        found = BROKEN.search(text)
        return Result(
            mutant,
            "ERROR",
            f"the mutated code does not load ({found.group(0) if found else '?'} in {node})",
        )
    if not named:
        why = next(iter(outcomes.other.values()), last)
        return Result(mutant, "ERROR", f"no named test failed in its body ({why})")
    verdict = "BROKE" if mutant.expect == "held" else "CAUGHT"
    first = next(iter(named))
    return Result(mutant, verdict, f"{len(named)} failed, first {first}")


def run_mutant(
    root: Path, mutant: Mutant, sources: Sources, tests: Sequence[str], timeout: int
) -> Result:
    began = time.monotonic()
    with applied(sources):
        code, outcomes, last = run_tests(root, tests, timeout, first_failure=True)
    result = judge(mutant, tests, code, outcomes, last)
    result.seconds = time.monotonic() - began
    return result


# --- the whole run -------------------------------------------------------------------------


@dataclass
class Baseline:
    """The named tests on the unmutated code."""

    problems: dict[str, str] = field(default_factory=dict)  # test id: why it is unusable
    seconds: dict[str, float] = field(default_factory=dict)  # test id: its slowest test's time

    def timeout(self, tests: Sequence[str]) -> int:
        slowest = max((self.seconds.get(t, 0.0) for t in tests), default=0.0)
        return max(MIN_TIMEOUT, math.ceil(SLOWDOWN * slowest))


def check_tests(root: Path, test_ids: Sequence[str]) -> Baseline:
    """Collect the named tests, and run them on the unmutated code: each must be found
    and pass (a skip is not a pass)."""
    wanted = sorted(set(test_ids))
    base = Baseline()
    if not wanted:
        return base
    collected = collect(root, wanted)
    mine = {t: [n for n in collected if matches(t, n)] for t in wanted}
    base.problems = {t: "not collected (no such test)" for t in wanted if not mine[t]}
    present = [t for t in wanted if t not in base.problems]
    if not present:
        return base
    code, outcomes, last = run_tests(root, present, BASE_TIMEOUT)
    for t in present:
        failed = [n for n in mine[t] if n in outcomes.failed]
        other = [n for n in mine[t] if n in outcomes.other]
        unseen = [n for n in mine[t] if n not in outcomes.passed]
        if failed:
            base.problems[t] = f"fails on the unmutated code ({failed[0]})"
        elif other:
            base.problems[t] = f"does not pass on the unmutated code ({outcomes.other[other[0]]})"
        elif unseen:
            base.problems[t] = f"did not run on the unmutated code (pytest exit {code}: {last})"
        else:
            base.seconds[t] = max(outcomes.seconds.get(n, 0.0) for n in mine[t])
    return base


def run(root: Path, mutants: Sequence[Mutant], fast: bool) -> list[Result]:
    began = time.monotonic()
    base = check_tests(root, [t for m in mutants for t in m.tests_for(fast)])
    took = time.monotonic() - began
    print(f"baseline: the named tests found and passing on the unmutated code ({took:.0f}s)")
    results: list[Result] = []
    for mutant in mutants:
        tests = mutant.tests_for(fast)
        bad = [f"{t}: {base.problems[t]}" for t in tests if t in base.problems]
        try:  # every mutant's edits, even one not run now, must apply
            sources = mutated_sources(root, mutant)
        except ValueError as exc:
            result = Result(mutant, "ERROR", f"catalogue: {exc}")
        else:
            if not tests:
                result = Result(mutant, "SKIPPED", "its edits apply; no fast test to run")
            elif bad:
                result = Result(mutant, "ERROR", "; ".join(bad))
            else:
                result = run_mutant(root, mutant, sources, tests, base.timeout(tests))
        results.append(result)
        print(line(result), flush=True)
    return results


def line(result: Result) -> str:
    m = result.mutant
    took = f" [{result.seconds:.0f}s]" if result.seconds else ""
    return f"{result.verdict:<8} {m.id:<5} {m.guard} -- {result.detail}{took}"


def summary(results: Sequence[Result], seconds: float) -> str:
    counts = {
        v: sum(r.verdict == v for r in results)
        for v in ("CAUGHT", "HELD", "SURVIVED", "BROKE", "ERROR", "SKIPPED")
    }
    shown = ", ".join(f"{n} {v.lower()}" for v, n in counts.items() if n)
    failed = [r.mutant.id for r in results if r.verdict not in OK]
    verdict = f"FAILED: {' '.join(failed)}" if failed else "all good"
    return f"mutants: {shown or 'none run'} in {seconds:.0f}s -- {verdict}"


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(f"stopped by signal {signum}")  # so that the sources are restored


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("ids", nargs="*", help="run only these mutants (e.g. M2 R4)")
    parser.add_argument("--fast", action="store_true", help="only the fast unit tests (CI)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--catalogue", type=Path, default=CATALOGUE, help="a TOML catalogue")
    parser.add_argument("--root", type=Path, default=ROOT, help="where the files and tests are")
    args = parser.parse_args(argv)
    try:
        mutants = load_catalogue(args.catalogue)
    except (OSError, tomllib.TOMLDecodeError, CatalogueError) as exc:
        print(f"error: the catalogue {args.catalogue}: {exc}", file=sys.stderr)
        return 2
    unknown = sorted(set(args.ids) - {m.id for m in mutants})
    if unknown:
        print(f"error: no such mutant: {' '.join(unknown)}", file=sys.stderr)
        return 2
    chosen = [m for m in mutants if not args.ids or m.id in args.ids]
    if args.list:
        for m in chosen:
            fast = "fast" if m.tests_for(True) else "slow"
            print(f"{m.id:<5} {fast} {m.expect:<6} {m.guard}")
        return 0
    signal.signal(signal.SIGTERM, _terminate)
    began = time.monotonic()
    try:
        results = run(args.root.resolve(), chosen, args.fast)
    except CatalogueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(summary(results, time.monotonic() - began), flush=True)
    return 0 if all(r.verdict in OK for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

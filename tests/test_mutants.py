"""The mutation runner (scripts/mutants.py) itself, on a tiny throwaway project: what
it calls caught, survived, held and broken, and what it refuses as an error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

RUNNER = Path(__file__).resolve().parent.parent / "scripts" / "mutants.py"

GUARD = """\
def positive(x: int) -> bool:
    if x <= 0:
        return False
    return True
"""

TESTS = """\
from guard import positive


def test_refuses_zero():
    assert not positive(0)


def test_accepts_one():
    assert positive(1)


def test_wrong():
    assert positive(-1)
"""

LAZY = """\
def test_refuses_zero_lazily():
    from guard import positive

    assert not positive(0)
"""

# Each mutant's id says what the runner must make of it.
CATALOGUE = '''\
[[mutant]]
id = "CAUGHT1"
guard = "zero refused (a named test fails)"
tests = ["test_guard.py::test_refuses_zero", "test_guard.py::test_accepts_one"]
[[mutant.edit]]
file = "guard.py"
old = """    if x <= 0:"""
new = """    if x < 0:"""

[[mutant]]
id = "SURVIVED1"
guard = "zero refused, but the named test does not look at zero"
tests = ["test_guard.py::test_accepts_one"]
[[mutant.edit]]
file = "guard.py"
old = """    if x <= 0:"""
new = """    if x < 0:"""

[[mutant]]
id = "HELD1"
guard = "one of two guards (the tests still pass)"
expect = "held"
tests = ["test_guard.py::test_accepts_one"]
[[mutant.edit]]
file = "guard.py"
old = """    if x <= 0:"""
new = """    if x < 0:"""

[[mutant]]
id = "BROKE1"
guard = "a held guard whose tests fail"
expect = "held"
tests = ["test_guard.py::test_refuses_zero"]
[[mutant.edit]]
file = "guard.py"
old = """    if x <= 0:"""
new = """    if x < 0:"""

[[mutant]]
id = "ERROR_NOT_FOUND"
guard = "an edit whose text is not in the file"
tests = ["test_guard.py::test_refuses_zero"]
[[mutant.edit]]
file = "guard.py"
old = """    if x <= 100:"""
new = """    if False:"""

[[mutant]]
id = "ERROR_TWICE"
guard = "an edit whose text is in the file twice"
tests = ["test_guard.py::test_refuses_zero"]
[[mutant.edit]]
file = "guard.py"
old = """return"""
new = """return not"""

[[mutant]]
id = "ERROR_SECOND_EDIT"
guard = "the first edit applies, the second does not"
tests = ["test_guard.py::test_refuses_zero"]
[[mutant.edit]]
file = "guard.py"
old = """    if x <= 0:"""
new = """    if x < 0:"""
[[mutant.edit]]
file = "guard.py"
old = """    return 2"""
new = """    return 3"""

[[mutant]]
id = "ERROR_NO_TEST"
guard = "a test id that does not exist"
tests = ["test_guard.py::test_refuses_zero", "test_guard.py::test_nothing_like_it"]
[[mutant.edit]]
file = "guard.py"
old = """    if x <= 0:"""
new = """    if x < 0:"""

[[mutant]]
id = "ERROR_BASELINE"
guard = "a named test that fails on the unmutated code"
tests = ["test_guard.py::test_wrong"]
[[mutant.edit]]
file = "guard.py"
old = """    if x <= 0:"""
new = """    if x < 0:"""

[[mutant]]
id = "ERROR_SYNTAX"
guard = "a mutated module that does not compile"
tests = ["test_guard.py::test_refuses_zero"]
[[mutant.edit]]
file = "guard.py"
old = """    if x <= 0:"""
new = """    if x <= 0"""

[[mutant]]
id = "ERROR_IMPORT"
guard = "a mutated module that does not import (the tests fail to collect)"
tests = ["test_guard.py::test_refuses_zero"]
[[mutant.edit]]
file = "guard.py"
old = """def positive"""
new = """import no_such_module_anywhere


def positive"""

[[mutant]]
id = "ERROR_LAZY_IMPORT"
guard = "a mutated module that does not import (a test that imports it fails)"
tests = ["test_lazy.py::test_refuses_zero_lazily"]
[[mutant.edit]]
file = "guard.py"
old = """def positive"""
new = """import no_such_module_anywhere


def positive"""
'''


def _verdicts(stdout: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in stdout.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0].isupper() and words[0] != "FAILED:":
            out[words[1]] = words[0]
    return out


def _project(tmp_path: Path) -> Path:
    (tmp_path / "guard.py").write_text(GUARD)
    (tmp_path / "test_guard.py").write_text(TESTS)
    (tmp_path / "test_lazy.py").write_text(LAZY)
    (tmp_path / "mutants.toml").write_text(CATALOGUE)
    return tmp_path


def _run(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # The inner pytest runs need no plugin but pytest-timeout: not loading the others
    # (hypothesis, schemathesis ...) saves seconds a run.
    env = {
        **os.environ,
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
        "PYTEST_ADDOPTS": "-p pytest_timeout",
    }
    catalogue = str(root / "mutants.toml")
    return subprocess.run(
        [sys.executable, str(RUNNER), "--root", str(root), "--catalogue", catalogue, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )


def test_the_runner_tells_caught_from_survived_and_refuses_what_it_cannot_check(
    tmp_path: Path,
) -> None:
    root = _project(tmp_path)
    proc = _run(root)
    verdicts = _verdicts(proc.stdout)
    expected = {
        "CAUGHT1": "CAUGHT",
        "SURVIVED1": "SURVIVED",
        "HELD1": "HELD",
        "BROKE1": "BROKE",
        "ERROR_NOT_FOUND": "ERROR",
        "ERROR_TWICE": "ERROR",
        "ERROR_SECOND_EDIT": "ERROR",
        "ERROR_NO_TEST": "ERROR",
        "ERROR_BASELINE": "ERROR",
        "ERROR_SYNTAX": "ERROR",
        "ERROR_IMPORT": "ERROR",
        "ERROR_LAZY_IMPORT": "ERROR",
    }
    assert verdicts == expected, proc.stdout + proc.stderr
    assert proc.returncode == 1
    out = proc.stdout
    assert "not found in guard.py" in out and "found 2 times in guard.py" in out
    assert "edit 2: old text not found" in out
    assert "test_nothing_like_it: not collected" in out
    assert "fails on the unmutated code" in out
    assert "does not compile" in out
    assert "does not load (ModuleNotFoundError in test_lazy.py::test_refuses_zero_lazily)" in out
    summary = out.strip().splitlines()[-1]
    assert summary.startswith("mutants: 1 caught, 1 held, 1 survived, 1 broke, 8 error")
    for ident in ("SURVIVED1", "BROKE1", "ERROR_IMPORT"):
        assert ident in summary
    # Every file as it was, byte for byte, and no leftover bytecode of a mutant.
    assert (root / "guard.py").read_text() == GUARD
    assert not list(root.rglob("*.pyc"))


def test_only_good_outcomes_pass_and_a_selection_runs_alone(tmp_path: Path) -> None:
    root = _project(tmp_path)
    proc = _run(root, "CAUGHT1", "HELD1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _verdicts(proc.stdout) == {"CAUGHT1": "CAUGHT", "HELD1": "HELD"}
    assert proc.stdout.strip().splitlines()[-1].endswith("all good")
    assert _run(root, "NO_SUCH").returncode == 2
    assert _run(root, "SURVIVED1").returncode == 1


def test_fast_mode_runs_no_slow_test_but_still_checks_every_edit(tmp_path: Path) -> None:
    root = _project(tmp_path)
    # Outside tests/worker, tests/producers: nothing here is fast.
    proc = _run(root, "--fast", "CAUGHT1", "ERROR_NOT_FOUND")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert _verdicts(proc.stdout) == {"CAUGHT1": "SKIPPED", "ERROR_NOT_FOUND": "ERROR"}


def test_the_projects_catalogue_loads() -> None:
    proc = subprocess.run(
        [sys.executable, str(RUNNER), "--list"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    ids = [line.split()[0] for line in proc.stdout.splitlines()]
    assert len(ids) == len(set(ids)) >= 40


def test_every_edit_of_the_real_catalogue_still_applies_exactly_once() -> None:
    """The catalogue names code by its text: a change that moves a guarded line must
    update its mutant in the same commit (the runner would report it as an ERROR)."""
    code = (
        "import sys; from pathlib import Path; sys.path.insert(0, 'scripts')\n"
        "from mutation_catalogue import load_catalogue, mutated_sources\n"
        "root = Path('.')\n"
        "for m in load_catalogue(root / 'scripts' / 'mutants.toml'):\n"
        "    try:\n"
        "        mutated_sources(root, m)\n"
        "    except ValueError as exc:\n"
        "        print(m.id, exc)\n"
    )
    root = RUNNER.parent.parent
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "", f"mutants whose edits no longer apply:\n{done.stdout}"

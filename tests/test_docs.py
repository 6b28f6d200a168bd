"""The documentation: the generated configuration page, the README's size, the links.

The examples in README.md and docs/ are run by tests/test_examples.py.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_every_setting_has_a_description() -> None:
    from worker.settings import Settings

    missing = [n for n, f in Settings.model_fields.items() if not (f.description or "").strip()]
    assert missing == [], f"settings without a description: {missing}"


def _settings_doc() -> Any:
    spec = importlib.util.spec_from_file_location("settings_doc", ROOT / "scripts/settings_doc.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_configuration_page_is_what_the_script_generates() -> None:
    settings_doc = _settings_doc()
    page = (ROOT / "docs" / "configuration.md").read_text()
    assert page == settings_doc.render(), (
        "docs/configuration.md is stale: run python scripts/settings_doc.py"
    )


def test_the_scripts_check_mode_agrees() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "settings_doc.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def test_the_check_mode_finds_a_stale_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings_doc = _settings_doc()
    stale = tmp_path / "configuration.md"
    stale.write_text(settings_doc.render().replace("Seconds between status polls.", "old text"))
    monkeypatch.setattr(settings_doc, "PAGE", stale)
    monkeypatch.setattr(settings_doc, "ROOT", tmp_path)
    assert settings_doc.main(["--check"]) == 1
    assert settings_doc.main([]) == 0 and settings_doc.main(["--check"]) == 0


PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "deploy" / "README.md"]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """GitHub's anchors for a page's headings."""
    if page.suffix != ".md":
        return set()
    found = set()
    for line in page.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


def broken_links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        exists = resolved.exists()
        if not exists or (anchor and anchor not in anchors(resolved)):
            broken.append(target)
    return broken


def test_every_relative_link_resolves() -> None:
    broken = {str(p.relative_to(ROOT)): b for p in PAGES if (b := broken_links(p))}
    assert broken == {}


def test_the_link_check_finds_a_broken_link(tmp_path: Path) -> None:
    (tmp_path / "there.md").write_text("# A title\n")
    page = tmp_path / "page.md"
    page.write_text("[a](there.md) [b](gone.md) [c](there.md#a-title) [d](there.md#nope)\n")
    assert broken_links(page) == ["gone.md", "there.md#nope"]


def test_the_readme_is_a_front_door() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move detail to docs/"


def _layout_section() -> str:
    text = (ROOT / "docs/architecture.md").read_text()
    return text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]


def test_the_layout_names_every_module() -> None:
    """Every source module is in docs/architecture.md's Layout (a module in a package
    folder may be named by its file name under the folder's line)."""
    layout = _layout_section()
    named = set(re.findall(r"\]\(\.\./([^)#]+)\)", layout))
    missing = [
        str(path.relative_to(ROOT))
        for folder in ("worker", "producers", "simulator", "bench")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if path.name not in ("__init__.py", "__main__.py")
        and str(path.relative_to(ROOT)) not in named
    ]
    assert len(named) > 40
    assert missing == []

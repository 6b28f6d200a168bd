"""The documentation: the generated configuration page, the README's size, the links.

The examples in README.md and docs/ are run by tests/test_examples.py.
"""

from __future__ import annotations

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
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import settings_doc
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    return settings_doc


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

"""The Lua scripts' files (worker/lua): each says what it takes and returns, and a
snippet several share is included, never copied."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import worker
from worker.store import lua_script

LUA = sorted((Path(worker.__file__).parent / "lua").glob("*.lua"))


@pytest.mark.parametrize("path", LUA, ids=[p.stem for p in LUA])
def test_each_lua_file_says_what_it_takes_and_returns(path: Path) -> None:
    header: list[str] = []
    for line in path.read_text().splitlines():
        if not line.startswith("--"):
            break
        header.append(line)
    text = "\n".join(header)
    assert header[0].startswith(f"-- {path.name}: ")
    assert "\n-- KEYS" in text
    assert "\n-- ARGV" in text
    assert "\n-- Returns " in text or "\n-- Defines " in text


@pytest.mark.parametrize("path", LUA, ids=[p.stem for p in LUA])
def test_a_shared_snippet_is_included_not_copied(path: Path) -> None:
    if path.name == "finite.lua":
        return
    text = path.read_text()
    assert "local function finite" not in text
    script = lua_script(path.stem)
    uses = "finite(" in text
    assert script.count("local function finite(") == (1 if uses else 0)
    assert not re.search(r"^-- include:", script, re.MULTILINE)

"""The Lua scripts of ``worker/lua``, read from their files.

Each file starts with a header giving its KEYS and ARGV and what it returns. A snippet
several scripts share lives once, in a file of its own (``finite.lua``); a script takes
it in with a line ``-- include: <file>.lua``, which :func:`lua_script` replaces with
that file's text.
"""

from __future__ import annotations

import functools
import re
from importlib import resources

import redis
import redis.asyncio
from redis.commands.core import AsyncScript, Script

_INCLUDE = re.compile(r"^-- include: ([a-z_]+\.lua)[ \t]*$", re.MULTILINE)


def _read(filename: str) -> str:
    return resources.files("worker").joinpath("lua", filename).read_text("utf-8")


@functools.cache
def lua_script(name: str) -> str:
    """The text of ``worker/lua/<name>.lua``, each ``-- include:`` line replaced by the
    file it names (one level: an included file includes nothing)."""
    return _INCLUDE.sub(lambda m: _read(m.group(1)).rstrip("\n"), _read(f"{name}.lua"))


def register(client: redis.Redis, *names: str) -> dict[str, Script]:
    """The scripts ``names`` registered on ``client`` (each runs by its hash, loaded
    into Redis on first use), by name."""
    return {name: client.register_script(lua_script(name)) for name in names}


def register_async(client: redis.asyncio.Redis, *names: str) -> dict[str, AsyncScript]:
    """:func:`register` for an asyncio client: the same scripts, from the same files."""
    return {name: client.register_script(lua_script(name)) for name in names}

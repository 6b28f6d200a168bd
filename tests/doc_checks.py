"""The checks behind ``<!-- example: check -->`` and ``cli-synopsis`` blocks: every
command, option, setting and file a documented command names must exist."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent


def help_text(*command: str) -> str:
    done = subprocess.run(
        [sys.executable, *command, "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"{command} --help failed: {done.stderr[-1000:]}"
    return done.stdout


def known_env_names() -> set[str]:
    from worker.settings import Settings

    return {
        str(f.validation_alias.choices[0])  # type: ignore[union-attr]
        if f.validation_alias
        else f"VIDEOQ_{n.upper()}"
        for n, f in Settings.model_fields.items()
    }


def shell_commands(code: str, synopsis: bool = False) -> list[list[str]]:
    """Each command of a shell block as words: continuations joined, comments, ``&&``
    and a trailing ``&`` split off; a synopsis's indented lines continue the last."""
    text = code.replace("\\\n", " ")
    commands: list[str] = []
    for line in text.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line)
        if synopsis and line.startswith(" ") and commands:
            commands[-1] += line
        elif line.strip():
            commands.extend(part.strip().rstrip("&").strip() for part in line.split("&&"))
    return [shlex.split(c) for c in commands if c]


def options(words: list[str]) -> list[str]:
    return [w.strip("[]").split("=")[0] for w in words if w.strip("[").startswith("--")]


def check_videoq(words: list[str]) -> None:
    subcommands = [words[1]]
    rest = words[2:]
    while rest[:1] == ["|"]:  # videoq flower | metrics | health
        subcommands.append(rest[1])
        rest = rest[2:]
    for sub in subcommands:
        text = help_text("-m", "producers", sub)
        for option in options(rest):
            assert option in text, f"videoq {sub} has no {option}"


def check_python_m(args: list[str]) -> None:
    assert args[:1] == ["-m"], args
    if args[1] == "venv":
        return
    text = help_text("-m", args[1])
    for option in options(args[2:]):
        assert option in text, f"python -m {args[1]} has no {option}"


def check_pip(args: list[str]) -> None:
    assert args[:2] == ["install", "-e"], args
    extras = pyproject()["project"]["optional-dependencies"]
    for target in args[2:]:
        assert target.startswith(".")
        for extra in re.findall(r"[a-z]+", target.partition("[")[2]):
            assert extra in extras, f"no extra {extra!r} in pyproject.toml"


def check_test_command(args: list[str]) -> None:
    assert (ROOT / args[0]).is_file()
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert " ".join(["bash", *args]) == ci, "the documented test command is not what CI runs"


def check_docker(args: list[str]) -> None:
    assert args[:1] == ["compose"], args
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for scale in (a for a in args if "=" in a and not a.startswith("-")):
        assert scale.split("=")[0] in services, f"no service {scale}"
    if "--profile" in args:
        profile = args[args.index("--profile") + 1]
        assert any(profile in s.get("profiles", []) for s in services.values())


def check_kubectl(args: list[str]) -> None:
    assert args[:2] == ["apply", "-k"], args
    assert (ROOT / args[2] / "kustomization.yaml").is_file()


def check_activate(args: list[str]) -> None:
    assert args == [".venv/bin/activate"], args


CHECKS: dict[str, Callable[[list[str]], None]] = {
    "videoq": lambda args: check_videoq(["videoq", *args]),
    "python": check_python_m,
    "python3": check_python_m,
    "pip": check_pip,
    "bash": check_test_command,
    "docker": check_docker,
    "kubectl": check_kubectl,
    ".": check_activate,
}


def check_command(words: list[str]) -> None:
    while words and re.match(r"^[A-Z_]+=", words[0]):
        name = words.pop(0).split("=")[0]
        assert name in known_env_names(), f"{name} is not a setting"
    program, args = words[0], words[1:]
    assert program in CHECKS, f"no check for the command {program!r}: run it or add one"
    CHECKS[program](args)


def pyproject() -> dict[str, Any]:
    import tomllib

    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)

"""Checks on the source tree itself: no sleeping worker, valid compose file, typed packages."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _sleep_calls(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name == "sleep":
                lines.append(node.lineno)
        if isinstance(node, ast.ImportFrom) and any(a.name == "sleep" for a in node.names):
            lines.append(node.lineno)
    return lines


def test_sleep_detector_detects() -> None:
    assert _sleep_calls(ast.parse("import time\ntime.sleep(1)\n")) == [2]
    assert _sleep_calls(ast.parse("from time import sleep\n")) == [1]


def test_no_sleep_anywhere_in_the_worker() -> None:
    found = {
        str(path.relative_to(ROOT)): lines
        for path in sorted((ROOT / "worker").rglob("*.py"))
        if (lines := _sleep_calls(ast.parse(path.read_text())))
    }
    assert found == {}, f"the worker must never sleep: {found}"


def test_packages_are_typed() -> None:
    for package in ("worker", "producers", "simulator"):
        assert (ROOT / package / "py.typed").exists()


def test_docker_compose_is_valid() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"redis", "worker", "flower", "simulator"} <= set(services)
    redis_cmd = " ".join(map(str, services["redis"]["command"]))
    assert "--appendonly yes" in redis_cmd
    assert "healthcheck" in services["redis"]
    worker = services["worker"]
    assert "container_name" not in worker, "container_name breaks --scale worker=N"
    assert "ports" not in worker, "published ports break --scale worker=N"
    assert worker["command"][:2] == ["videoq", "worker"]
    env = worker["environment"]
    assert env["VIDEOQ_REDIS_URL"].startswith("redis://redis:6379")
    assert "AIMLAPI_KEY" in env and not str(env["AIMLAPI_KEY"]).startswith("sk-")
    for name, service in services.items():
        for dep in service.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown service {dep}"
    for volume in compose.get("volumes", {}):
        assert any(
            str(v).startswith(f"{volume}:") for s in services.values() for v in s.get("volumes", [])
        )


def test_every_setting_is_on_the_configuration_page_and_ci_runs_the_readme_command() -> None:
    from worker.settings import Settings

    page = (ROOT / "docs" / "configuration.md").read_text()
    for name, field in Settings.model_fields.items():
        env = (
            str(field.validation_alias.choices[0])  # type: ignore[union-attr]
            if field.validation_alias
            else f"VIDEOQ_{name.upper()}"
        )
        assert f"| `{env}` |" in page, f"{env} is missing from docs/configuration.md"
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert f"```sh\n{ci}\n```" in readme, "the README's test command and .ci/run differ"

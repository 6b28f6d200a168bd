"""Settings: the environment names are a contract (see SPEC and docs/configuration.md)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from worker.config import celery_config
from worker.settings import Settings


def test_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.chdir(tmp_path)  # type: ignore[arg-type]
    for name in (
        "AIMLAPI_KEY",
        "AIMLAPI_BASE_URL",
        "VIDEOQ_REDIS_URL",
        "VIDEOQ_POLL_INTERVAL",
        "VIDEOQ_DEADLINE",
    ):
        monkeypatch.delenv(name, raising=False)
    s = Settings()
    assert s.aimlapi_base_url == "https://api.aimlapi.com/v2"
    assert s.redis_url == "redis://localhost:6379/0"
    assert (s.poll_interval, s.deadline) == (10.0, 1000.0)
    assert s.aimlapi_key.get_secret_value() == ""


def test_contract_names_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIMLAPI_KEY", "sk-env")
    monkeypatch.setenv("AIMLAPI_BASE_URL", "http://127.0.0.1:9999/v2")
    monkeypatch.setenv("VIDEOQ_REDIS_URL", "redis://r:6379/3")
    monkeypatch.setenv("VIDEOQ_POLL_INTERVAL", "2.5")
    monkeypatch.setenv("VIDEOQ_DEADLINE", "60")
    monkeypatch.setenv("VIDEOQ_UPSTREAM_PATH", "universal")
    s = Settings()
    assert s.aimlapi_key.get_secret_value() == "sk-env"
    assert "sk-env" not in repr(s)
    assert s.aimlapi_base_url == "http://127.0.0.1:9999/v2"
    assert (s.redis_url, s.poll_interval, s.deadline) == ("redis://r:6379/3", 2.5, 60.0)
    assert s.upstream_path == "universal"


def test_dotenv_file(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    from pathlib import Path

    monkeypatch.delenv("VIDEOQ_DEADLINE", raising=False)
    monkeypatch.chdir(tmp_path)  # type: ignore[arg-type]
    Path(".env").write_text("VIDEOQ_DEADLINE=77\n")
    assert Settings().deadline == 77.0


@pytest.mark.parametrize(
    "overrides",
    [
        {"poll_interval": 0},
        {"deadline": -1},
        {"upstream_path": "other"},
        {"retry_backoff": 10, "retry_backoff_max": 5},
        {"visibility_timeout": 30, "poll_interval": 10, "http_read_timeout": 30},
        {"key_prefix": "has space"},
        {"webhook_secret": "whsec_not base64!"},
        {"webhook_secret": "whsec_"},
    ],
)
def test_bad_settings_are_refused(overrides: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings(**overrides)  # type: ignore[arg-type]


def test_celery_config_follows_the_settings() -> None:
    s = Settings(visibility_timeout=400, queue="vq", eta_task_limit=123)
    conf = celery_config(s)
    assert conf["broker_transport_options"]["visibility_timeout"] == 400
    assert conf["task_default_queue"] == "vq"
    assert conf["worker_eta_task_limit"] == 123
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"]
    assert conf["task_serializer"] == "json"


def test_request_size_and_tenant_settings() -> None:
    s = Settings()
    assert s.max_request_bytes == 16 * 1024 * 1024
    assert s.api_admins == "admin" and s.admins == frozenset({"admin"})
    with pytest.raises(ValidationError):
        Settings(max_request_bytes=1023)
    assert Settings(max_request_bytes=1024).max_request_bytes == 1024


def test_api_tokens_name_callers() -> None:
    plain = Settings(api_tokens="t1, t2")
    assert plain.tokens == ["t1", "t2"]
    assert plain.callers == [(None, "t1"), (None, "t2")]
    named = Settings(api_tokens="alice:a-tok,bob.x_1-2:b:tok,plain")
    assert named.callers == [("alice", "a-tok"), ("bob.x_1-2", "b:tok"), (None, "plain")]
    assert named.tokens == ["a-tok", "b:tok", "plain"]
    for bad in ("bad name:secret-1", "a" * 65 + ":secret-1", "alice:", "al/ice:secret-1"):
        with pytest.raises(ValidationError) as info:
            Settings(api_tokens=bad)
        assert "secret-1" not in str(info.value)  # a refused entry is never echoed
    with pytest.raises(ValidationError):
        Settings(api_admins="ok,not ok")


@pytest.mark.parametrize(
    "url",
    [
        "localhost:6379",
        "127.0.0.1:6379/0",
        "http://localhost:6379/0",
        "redis://localhost:6379/99999",
        "redis://localhost:6379/abc",
        "redis://localhost:6379/-1",
        "redis://localhost:99999/0",
        "redis://localhost:0/0",
        "redis://localhost:port/0",
        "redis:///0",
        "unix://",
    ],
)
def test_malformed_redis_urls_are_refused_naming_the_setting(url: str) -> None:
    from producers.cli import settings_error

    with pytest.raises(ValidationError) as info:
        Settings(redis_url=url)
    line = settings_error(info.value)
    assert line.startswith("invalid setting VIDEOQ_REDIS_URL: ") and "\n" not in line


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost:6379/0",
        "redis://:pw@redis:6379",
        "redis://user:pw@10.0.0.1:6380/15",
        "rediss://h.example:6380/1?ssl_cert_reqs=required",
        "unix:///run/redis.sock?db=2",
        "sentinel://h1:26379;sentinel://h2:26379",
        "redis://[::1]:6379/0",
    ],
)
def test_good_redis_urls_are_accepted(url: str) -> None:
    assert Settings(redis_url=url).redis_url == url

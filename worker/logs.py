"""Structured log lines (``event=... job_id=... state=... attempt=...``) and redaction.

Lines are logfmt by default; ``VIDEOQ_LOG_FORMAT=json`` makes every line (Celery's
own included) one JSON object, with an event's fields as keys.

The API key is never passed to a logger; :class:`RedactSecrets` is a second line of
defence that masks it in any record, including third-party libraries' messages.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import UTC, datetime

logger = logging.getLogger("videoq")


def _value(value: object) -> str:
    text = f"{value:.3f}" if isinstance(value, float) else str(value)
    if text == "" or any(c in text for c in ' "=\n'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


def event(name: str, *, level: int = logging.INFO, **fields: object) -> None:
    """Log one event as logfmt: ``event=<name> key=value ...`` (None values skipped)."""
    if not logger.isEnabledFor(level):
        return
    kept = {k: v for k, v in fields.items() if v is not None}
    parts = [f"event={name}"]
    parts.extend(f"{k}={_value(v)}" for k, v in kept.items())
    logger.log(level, " ".join(parts), extra={"videoq_event": name, "videoq_fields": kept})


def mask(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret (4 characters or longer) replaced by ``***``."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


class RedactSecrets(logging.Filter):
    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s and len(s) >= 4]

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        redacted = mask(message, self.secrets)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, process, message, event fields."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s and len(s) >= 4]

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "process": record.processName,
        }
        name = getattr(record, "videoq_event", None)
        if name:
            out["event"] = name
            for key, value in getattr(record, "videoq_fields", {}).items():
                out.setdefault(key, value if isinstance(value, int | float | bool) else str(value))
        else:
            out["message"] = record.getMessage()
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return mask(json.dumps(out), self.secrets)


def install_json_format(secrets: Iterable[str]) -> None:
    """Give every handler of the root logger the :class:`JsonFormatter`."""
    formatter = JsonFormatter(secrets)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter)


def install_redaction(secrets: Iterable[str]) -> None:
    """Mask ``secrets`` in every record that reaches any handler of the root logger."""
    redact = RedactSecrets(secrets)
    root = logging.getLogger()
    for handler in root.handlers:
        if not any(isinstance(f, RedactSecrets) for f in handler.filters):
            handler.addFilter(redact)

"""Structured log lines (``event=... job_id=... state=... attempt=...``) and redaction.

Lines are logfmt by default; ``VIDEOQ_LOG_FORMAT=json`` makes every line (Celery's
own included) one JSON object, with an event's fields as keys.

The API key is never passed to a logger; :class:`RedactSecrets` is a second line of
defence that masks it in any record, including third-party libraries' messages.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from datetime import UTC, datetime

logger = logging.getLogger("videoq")

# Control characters (C0, DEL, C1) and the Unicode line and paragraph separators: a
# peer's text with one of these could forge or split a log line.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# The shortest run of a secret that counts as a copy of it.
PARTIAL_SECRET = 8


def clean(text: str, limit: int = 500) -> str:
    """Untrusted text made safe to store and log: control characters escaped
    (``\\x0d``), and cut to ``limit`` characters with a note of how much was cut."""
    escaped = _CONTROL.sub(
        lambda m: (
            f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}"
        ),
        text,
    )
    if len(escaped) > limit:
        return f"{escaped[:limit]}... ({len(escaped) - limit} more characters)"
    return escaped


def _value(value: object) -> str:
    text = f"{value:.3f}" if isinstance(value, float) else clean(str(value), 2000)
    if text == "" or any(c in text for c in ' "='):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
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
    """``text`` with every secret (4 characters or longer) replaced by ``***``, in any
    letter case, and with every partial copy of one (a run of at least
    :data:`PARTIAL_SECRET` of its characters, as a peer that shortens keys echoes them)
    replaced too."""
    for secret in secrets:
        if not secret or len(secret) < 4:
            continue
        text = re.sub(re.escape(secret), "***", text, flags=re.IGNORECASE)
        if len(secret) > PARTIAL_SECRET:
            text = _mask_partial(text, secret.lower())
    return text


def _mask_partial(text: str, secret: str) -> str:
    """Mask every run of ``text`` that is also, ignoring case, a run of at least
    :data:`PARTIAL_SECRET` characters of ``secret``."""
    size = PARTIAL_SECRET
    grams = {secret[i : i + size] for i in range(len(secret) - size + 1)}
    lower = text.lower()
    hidden = [False] * len(text)
    for i in range(len(text) - size + 1):
        if lower[i : i + size] in grams:
            hidden[i : i + size] = [True] * size
    if not any(hidden):
        return text
    out: list[str] = []
    for i, char in enumerate(text):
        if not hidden[i]:
            out.append(char)
        elif i == 0 or not hidden[i - 1]:
            out.append("***")
    return "".join(out)


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

"""Structured log lines (``event=... job_id=... state=... attempt=...``) and redaction.

The API key is never passed to a logger; :class:`RedactSecrets` is a second line of
defence that masks it in any record, including third-party libraries' messages.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

logger = logging.getLogger("videoq")


def _value(value: object) -> str:
    text = f"{value:.3f}" if isinstance(value, float) else str(value)
    if text == "" or any(c in text for c in ' "=\n'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


def event(name: str, *, level: int = logging.INFO, **fields: object) -> None:
    """Log one event as logfmt: ``event=<name> key=value ...`` (None values skipped)."""
    parts = [f"event={name}"]
    parts.extend(f"{k}={_value(v)}" for k, v in fields.items() if v is not None)
    logger.log(level, " ".join(parts))


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


def install_redaction(secrets: Iterable[str]) -> None:
    """Mask ``secrets`` in every record that reaches any handler of the root logger."""
    redact = RedactSecrets(secrets)
    root = logging.getLogger()
    for handler in root.handlers:
        if not any(isinstance(f, RedactSecrets) for f in handler.filters):
            handler.addFilter(redact)

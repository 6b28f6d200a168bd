"""How a job record is written to and read from its Redis hash: field values as
strings, inline images as placeholders, the request's fingerprint."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from enum import Enum
from typing import Any

from ..job import Job


def fmt(value: object) -> str:
    """A field's value as the hash stores it (None: empty; floats in full)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, Enum):
        return str(value.value)
    return str(value)


def pairs(fields: Mapping[str, object]) -> list[str]:
    """``fields`` as a flat list of names and values, for a script's ARGV."""
    out: list[str] = []
    for name, value in fields.items():
        out.extend((name, fmt(value)))
    return out


def job_from(raw: Mapping[Any, Any] | None, request: str | None) -> Job | None:
    """A record from its hash and its request's key (older records, and refused ones,
    keep the request in the hash)."""
    if not raw or "state" not in raw:
        return None
    fields = {str(k): str(v) for k, v in raw.items()}
    if request is not None and "request" not in fields:
        fields["request"] = str(request)
    return Job.from_hash(fields)


_IMAGE_FIELDS = ("image_url", "static_mask")


def without_inline_images(stored: dict[str, Any]) -> dict[str, Any]:
    """``stored`` with each inline ``data:`` image replaced by a short placeholder."""
    shown = dict(stored)
    for name in _IMAGE_FIELDS:
        if isinstance(shown.get(name), str):
            shown[name] = placeholder(shown[name])
    masks = shown.get("dynamic_masks")
    if isinstance(masks, list):
        shown["dynamic_masks"] = [
            {**m, "mask": placeholder(m["mask"])}
            if isinstance(m, dict) and isinstance(m.get("mask"), str)
            else m
            for m in masks
        ]
    return shown


def placeholder(value: str) -> str:
    """A ``data:`` URL as the record shows it (its type, size and hash); anything
    else unchanged."""
    if not value.startswith("data:"):
        return value
    head = value.split(",", 1)[0][:100]
    digest = hashlib.sha256(value.encode()).hexdigest()[:8]
    return f"{head},\u2026 ({len(value.encode())} bytes, sha256 {digest}\u2026)"


def fingerprint(stored: Mapping[str, object]) -> str:
    """The hash an idempotency key keeps, to tell the same request from another."""
    return hashlib.sha256(json.dumps(stored, sort_keys=True).encode()).hexdigest()[:32]

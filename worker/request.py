"""The generation request: what a producer may ask for, validated before anything is enqueued.

Mirrors the upstream's schema for ``kling-video/v2.1/pro/image-to-video`` and refuses
anything else with an error that names the field.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from .errors import RequestError, UrlRefused
from .settings import MODEL_ID
from .urls import Resolver, check_url, resolve_host

MAX_URL_LENGTH = 4096
MAX_DATA_URL_BYTES = 10 * 1024 * 1024
MAX_PROMPT_LENGTH = 2500
_DATA_URL = re.compile(r"^data:image/[A-Za-z0-9.+-]+;base64,(?P<data>.*)$", re.DOTALL)


def _resolver(info: ValidationInfo) -> Resolver | None:
    """The ``resolve`` :func:`parse_request` was given (its validation context)."""
    context = info.context
    if isinstance(context, dict) and "resolve" in context:
        resolve: Resolver | None = context["resolve"]
        return resolve
    return resolve_host


def _check_image_ref(value: str, resolve: Resolver | None) -> str:
    if not value:
        raise ValueError("must not be empty")
    try:
        check_url(
            value,
            allow_private=False,
            resolve=resolve,
            allow_data_image=True,
            max_length=MAX_URL_LENGTH,
        )
    except UrlRefused as exc:
        raise ValueError(str(exc)) from None
    match = _DATA_URL.match(value)
    if match:
        data = match.group("data")
        if len(data) > MAX_DATA_URL_BYTES:
            raise ValueError(f"base64 image is larger than {MAX_DATA_URL_BYTES} bytes")
        try:
            base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("is a data: URL whose base64 payload is invalid") from None
        if not data:
            raise ValueError("is a data: URL with no image data")
    return value


def _finite(value: float) -> float:
    if isinstance(value, bool) or not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


CameraValue = Annotated[float, Field(ge=-10, le=10, strict=True)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CameraConfig(_Strict):
    horizontal: CameraValue | None = None
    vertical: CameraValue | None = None
    pan: CameraValue | None = None
    tilt: CameraValue | None = None
    roll: CameraValue | None = None
    zoom: CameraValue | None = None

    @field_validator("*", mode="after")
    @classmethod
    def _finite_values(cls, value: float | None) -> float | None:
        return None if value is None else _finite(value)


class CameraControl(_Strict):
    type: Literal["simple", "down_back", "forward_up", "right_turn_forward", "left_turn_forward"]
    config: CameraConfig | None = None


class Point(_Strict):
    x: StrictInt
    y: StrictInt


class DynamicMask(_Strict):
    mask: str
    trajectories: list[Point] = Field(min_length=2, max_length=77)

    @field_validator("mask")
    @classmethod
    def _mask(cls, value: str, info: ValidationInfo) -> str:
        return _check_image_ref(value, _resolver(info))


class GenerationRequest(_Strict):
    """A validated request. ``to_upstream()`` gives the body the upstream expects."""

    image_url: str
    prompt: str | None = Field(default=None, max_length=MAX_PROMPT_LENGTH)
    duration: Literal[5, 10] = 5
    negative_prompt: str | None = Field(default=None, max_length=MAX_PROMPT_LENGTH)
    cfg_scale: Annotated[float, Field(ge=0, le=1, strict=True)] | None = None
    static_mask: str | None = None
    dynamic_masks: list[DynamicMask] | None = Field(default=None, max_length=6)
    camera_control: CameraControl | None = None

    @field_validator("image_url", "static_mask")
    @classmethod
    def _image(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else _check_image_ref(value, _resolver(info))

    @field_validator("duration", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        # The upstream's own example sends the string "5"; accept "5"/"10" as well.
        if isinstance(value, bool):
            raise ValueError("must be 5 or 10")
        if isinstance(value, str) and value.strip() in ("5", "10"):
            return int(value.strip())
        if isinstance(value, float) and value in (5.0, 10.0):
            return int(value)
        if value not in (5, 10):
            raise ValueError("must be 5 or 10")
        return value

    @field_validator("cfg_scale", mode="before")
    @classmethod
    def _cfg(cls, value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value

    @field_validator("cfg_scale", mode="after")
    @classmethod
    def _cfg_finite(cls, value: float | None) -> float | None:
        return None if value is None else _finite(value)

    def to_upstream(self) -> dict[str, Any]:
        body: dict[str, Any] = {"model": MODEL_ID}
        body.update(self.model_dump(mode="json", exclude_none=True))
        return body

    def stored(self) -> dict[str, Any]:
        """The parameters as kept in the job record (never any secret)."""
        return self.model_dump(mode="json", exclude_none=True)


def _field_path(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc if not (isinstance(p, str) and p.startswith("function-"))]
    return ".".join(parts) if parts else "request"


def parse_request(payload: object, *, resolve: Resolver | None = resolve_host) -> GenerationRequest:
    """Validate a payload (a dict of upstream fields) or raise :class:`RequestError`.

    Image hosts are resolved with ``resolve`` (``check_url``'s); ``resolve=None`` checks
    everything but what names resolve to (then :func:`check_image_hosts`)."""
    if not isinstance(payload, dict):
        raise RequestError("request", "must be a JSON object of generation parameters")
    data = dict(payload)
    model = data.pop("model", MODEL_ID)
    if model != MODEL_ID:
        raise RequestError("model", f"must be {MODEL_ID!r} (videoq serves only this model)")
    try:
        return GenerationRequest.model_validate(data, context={"resolve": resolve})
    except ValidationError as exc:
        first = exc.errors()[0]
        field = _field_path(tuple(first["loc"]))
        message = first["msg"]
        if first["type"] == "extra_forbidden":
            message = "unknown field"
        elif first["type"] == "missing":
            message = "is required"
        message = message.removeprefix("Value error, ")
        raise RequestError(field, message) from None


def build_request(
    image_url: object,
    prompt: object = None,
    duration: object = 5,
    **upstream_options: object,
) -> GenerationRequest:
    """Validate keyword-style arguments, as :meth:`producers.Client.submit` takes them."""
    return parse_request(request_payload(image_url, prompt, duration, **upstream_options))


def request_payload(
    image_url: object,
    prompt: object = None,
    duration: object = 5,
    **upstream_options: object,
) -> dict[str, object]:
    """:func:`build_request`'s arguments as a payload for :func:`parse_request`."""
    payload: dict[str, object] = {"image_url": image_url, "duration": duration}
    if prompt is not None:
        payload["prompt"] = prompt
    payload.update({k: v for k, v in upstream_options.items() if v is not None})
    return payload


def image_refs(request: GenerationRequest) -> dict[str, str]:
    """The request's image URLs (the upstream fetches them) by field, as
    :class:`RequestError` names the field."""
    refs = {"image_url": request.image_url}
    if request.static_mask is not None:
        refs["static_mask"] = request.static_mask
    for i, mask in enumerate(request.dynamic_masks or ()):
        refs[f"dynamic_masks.{i}.mask"] = mask.mask
    return refs


def check_image_hosts(refs: dict[str, str], resolve: Resolver) -> None:
    """What ``parse_request(..., resolve=None)`` left out: refuse the request
    (:class:`RequestError`) if one of its images (:func:`image_refs`) has a host that
    resolves, with ``resolve``, to an internal address."""
    for field, url in refs.items():
        try:
            check_url(
                url,
                allow_private=False,
                resolve=resolve,
                allow_data_image=True,
                max_length=MAX_URL_LENGTH,
            )
        except UrlRefused as exc:
            raise RequestError(field, str(exc)) from None

"""Local images for ``Client.submit(image=...)``: a file or bytes becomes the
``data:image/...;base64,`` URL the upstream takes as ``image_url``, checked first.

The upstream (Kling) takes PNG and JPEG images of at most 10 MB. ``worker.request``
already bounds a data: URL's base64 payload at :data:`~worker.request.MAX_DATA_URL_BYTES`
(10 MB), which is the tighter bound: an image sent inline may be at most 3/4 of that,
7.5 MB, before encoding. A request must also fit ``VIDEOQ_MAX_REQUEST_BYTES``. Each
refusal is a :class:`~worker.errors.RequestError` with field ``image`` whose message
names the file, e.g. ``image: cat.jpg is 14.2 MB; ...``.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

from worker.errors import RequestError, RequestTooLarge
from worker.request import MAX_DATA_URL_BYTES

MB = 1024 * 1024
UPSTREAM_MAX_IMAGE_BYTES = 10 * MB  # the upstream's own limit on an image file
# The largest image whose base64 fits worker.request's limit on a data: URL's payload.
MAX_IMAGE_BYTES = min(UPSTREAM_MAX_IMAGE_BYTES, MAX_DATA_URL_BYTES // 4 * 3)
ACCEPTED = {"image/png": "PNG", "image/jpeg": "JPEG"}  # what the upstream takes
_ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg"}
_ACCEPTED_TEXT = " or ".join(ACCEPTED.values())


@dataclass(frozen=True)
class Image:
    """An image in memory: its bytes, its content type (``image/png`` or
    ``image/jpeg``) and a name for messages."""

    data: bytes
    content_type: str
    name: str = "the image"


ImageSource = Path | tuple[bytes, str] | Image


def _sniff(data: bytes) -> str | None:
    """The content type the bytes themselves show (their magic number), if known."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return None


def _megabytes(size: int) -> str:
    return f"{size / MB:.1f} MB"


def _too_large(name: str, size: int) -> RequestError:
    return RequestError(
        "image",
        f"{name} is {_megabytes(size)}; an image sent inline may be at most "
        f"{_megabytes(MAX_IMAGE_BYTES)} (its base64 at most {_megabytes(MAX_DATA_URL_BYTES)}, "
        "the upstream's limit); send a larger image by URL (image_url)",
    )


def _read(path: Path) -> Image:
    """The file's bytes, read no further than the limit allows."""
    name = path.name or str(path)
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_IMAGE_BYTES + 1)
            size = len(data)
            if size > MAX_IMAGE_BYTES:
                size = max(size, file.seek(0, 2))  # the real size, for the message
    except OSError as exc:
        raise RequestError("image", f"cannot read {name}: {exc.strerror or exc}") from None
    if size > MAX_IMAGE_BYTES:
        raise _too_large(name, size)
    sniffed = _sniff(data)
    return Image(data, sniffed or "application/octet-stream", name)


def _as_image(source: ImageSource) -> Image:
    if isinstance(source, Image):
        return source
    if isinstance(source, Path):
        return _read(source)
    if (
        isinstance(source, tuple)
        and len(source) == 2
        and isinstance(source[0], bytes | bytearray)
        and isinstance(source[1], str)
    ):
        return Image(bytes(source[0]), source[1])
    raise RequestError(
        "image", "must be a pathlib.Path, a (bytes, content type) pair or a producers.Image"
    )


def image_data_url(source: ImageSource, *, max_request_bytes: int) -> str:
    """``source`` as a ``data:image/...;base64,`` URL, or :class:`RequestError` (field
    ``image``) when it is unreadable, empty, not a PNG or JPEG, its bytes are not of
    its declared type, or it is too large for the upstream or for
    ``max_request_bytes`` (``VIDEOQ_MAX_REQUEST_BYTES``)."""
    image = _as_image(source)
    name = image.name
    if not image.data:
        raise RequestError("image", f"{name} is empty")
    if len(image.data) > MAX_IMAGE_BYTES:
        raise _too_large(name, len(image.data))
    declared = image.content_type.split(";")[0].strip().lower()
    declared = _ALIASES.get(declared, declared)
    sniffed = _sniff(image.data)
    if isinstance(source, Path):
        declared = sniffed or declared  # a file's type is what its bytes are
    if declared not in ACCEPTED:
        shown = (sniffed or "of an unknown format") if isinstance(source, Path) else ""
        shown = shown or f"declared {declared}"
        raise RequestError(
            "image", f"{name} is {shown}; the upstream accepts only {_ACCEPTED_TEXT} images"
        )
    if sniffed != declared:
        raise RequestError(
            "image",
            f"{name} is declared {declared} but its bytes are "
            f"{sniffed or 'not a known image format'}",
        )
    url = f"data:{declared};base64," + base64.b64encode(image.data).decode("ascii")
    if len(url) > max_request_bytes:
        raise RequestTooLarge(
            "image",
            f"{name} is {_megabytes(len(url))} as a data: URL, more than the "
            f"{_megabytes(max_request_bytes)} VIDEOQ_MAX_REQUEST_BYTES allows per request; "
            "send it by URL (image_url)",
        )
    return url


def resolve_image_url(
    image_url: str | None, image: ImageSource | None, max_request_bytes: int
) -> str:
    """The ``image_url`` to validate: the given URL, or ``image`` as a data: URL. Exactly
    one of the two must be given."""
    if image is None:
        if image_url is None:
            raise RequestError("image_url", "is required (or pass a local image as image=)")
        return image_url
    if image_url is not None:
        raise RequestError("image", "give image_url or image, not both")
    return image_data_url(image, max_request_bytes=max_request_bytes)

"""Local images: ``submit(image=Path | (bytes, type) | Image)`` sends a checked data: URL."""

from __future__ import annotations

import base64
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from producers import Client, RequestError
from producers.cli import main
from producers.images import MAX_IMAGE_BYTES, Image, image_data_url
from worker.errors import RequestTooLarge
from worker.request import MAX_DATA_URL_BYTES
from worker.settings import Settings
from worker.store.encoding import placeholder

from .conftest import IMG, job_keys


def png(width: int = 4, height: int = 4) -> bytes:
    """A small valid PNG (grey pixels)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 64
LIMIT = 16 * 1024 * 1024


def test_a_file_becomes_a_data_url_of_its_own_type(tmp_path: Path) -> None:
    path = tmp_path / "cat.png"
    path.write_bytes(png())
    url = image_data_url(path, max_request_bytes=LIMIT)
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == png()
    named_jpg = tmp_path / "dog.jpg"  # the bytes decide, not the suffix
    named_jpg.write_bytes(png())
    assert image_data_url(named_jpg, max_request_bytes=LIMIT).startswith("data:image/png;")


def test_bytes_with_a_type_and_the_dataclass() -> None:
    assert image_data_url((JPEG, "image/jpeg"), max_request_bytes=LIMIT).startswith(
        "data:image/jpeg;base64,"
    )
    assert image_data_url((JPEG, "image/jpg"), max_request_bytes=LIMIT).startswith(
        "data:image/jpeg;"
    )
    image = Image(png(), "image/png; charset=binary", name="frame.png")
    assert image_data_url(image, max_request_bytes=LIMIT).startswith("data:image/png;base64,")


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ((png(), "image/jpeg"), "the image is declared image/jpeg but its bytes are image/png"),
        ((b"hello", "image/png"), "its bytes are not a known image format"),
        ((b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"), "accepts only PNG or JPEG images"),
        ((b"GIF89a...", "image/gif"), "is declared image/gif; the upstream accepts only PNG"),
        ((png(), "text/plain"), "is declared text/plain; the upstream accepts only PNG or JPEG"),
        ((b"", "image/png"), "the image is empty"),
        (("cat.jpg", "image/jpeg"), "must be a pathlib.Path"),
        ("cat.jpg", "must be a pathlib.Path"),
    ],
)
def test_bad_images_are_refused_naming_the_field(source: object, message: str) -> None:
    with pytest.raises(RequestError) as info:
        image_data_url(source, max_request_bytes=LIMIT)  # type: ignore[arg-type]
    assert info.value.field == "image"
    assert message in str(info.value)


def test_unreadable_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(RequestError, match=r"image: cannot read missing\.png: No such file"):
        image_data_url(tmp_path / "missing.png", max_request_bytes=LIMIT)
    with pytest.raises(RequestError, match=r"cannot read .*: Is a directory"):
        image_data_url(tmp_path, max_request_bytes=LIMIT)
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(RequestError, match=r"notes\.txt is of an unknown format; the upstream"):
        image_data_url(tmp_path / "notes.txt", max_request_bytes=LIMIT)
    (tmp_path / "anim.webp").write_bytes(b"RIFF\x00\x00\x00\x00WEBPVP8 ")
    with pytest.raises(RequestError, match=r"anim\.webp is image/webp; the upstream accepts only"):
        image_data_url(tmp_path / "anim.webp", max_request_bytes=LIMIT)


def test_the_size_limit_is_the_data_url_rule_of_worker_request(tmp_path: Path) -> None:
    assert MAX_IMAGE_BYTES == MAX_DATA_URL_BYTES // 4 * 3  # its base64 fits, exactly
    at_limit = JPEG + b"\x00" * (MAX_IMAGE_BYTES - len(JPEG))
    url = image_data_url((at_limit, "image/jpeg"), max_request_bytes=LIMIT)
    assert len(url.split(",", 1)[1]) <= MAX_DATA_URL_BYTES
    big = tmp_path / "cat.jpg"
    big.write_bytes(JPEG + b"\x00" * int(14.2 * 1024 * 1024))
    with pytest.raises(RequestError) as info:
        image_data_url(big, max_request_bytes=LIMIT)
    assert str(info.value).startswith("image: cat.jpg is 14.2 MB; an image sent inline may be")
    assert "at most 7.5 MB" in str(info.value) and "image_url" in str(info.value)
    with pytest.raises(RequestError, match=r"the image is 7\.5 MB"):
        image_data_url((at_limit + b"\x00", "image/jpeg"), max_request_bytes=LIMIT)


def test_the_request_limit_is_checked_too() -> None:
    data = JPEG + b"\x00" * 3000
    with pytest.raises(RequestTooLarge) as info:
        image_data_url((data, "image/jpeg"), max_request_bytes=2048)
    assert info.value.field == "image" and "VIDEOQ_MAX_REQUEST_BYTES" in str(info.value)


def test_submit_takes_an_image_instead_of_a_url(client: Client, tmp_path: Path) -> None:
    path = tmp_path / "cat.png"
    path.write_bytes(png())
    job = client.get(client.submit(image=path, prompt="a cat"))
    # the record shows a data: URL by its type, size and hash
    assert job.request["image_url"] == placeholder(image_data_url(path, max_request_bytes=LIMIT))
    job = client.get(client.submit(image=(JPEG, "image/jpeg")))
    assert job.request["image_url"].startswith("data:image/jpeg;base64,")
    assert client.get(client.submit(IMG)).request["image_url"] == IMG  # positional, as before


def test_submit_wants_exactly_one_image(client: Client, tmp_path: Path) -> None:
    with pytest.raises(RequestError, match=r"give image_url or image, not both") as info:
        client.submit(IMG, image=(JPEG, "image/jpeg"))
    assert info.value.field == "image"
    with pytest.raises(RequestError, match=r"image_url: is required"):
        client.submit(prompt="nothing to animate")
    with pytest.raises(RequestError, match=r"image: cannot read"):
        client.submit(image=tmp_path / "gone.png")
    assert job_keys(client) == []  # nothing was stored


def test_the_cli_takes_image_file(
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = make_settings()
    for name in ("redis_url", "queue", "key_prefix"):
        monkeypatch.setenv(f"VIDEOQ_{name.upper()}", getattr(settings, name))
    path = tmp_path / "cat.png"
    path.write_bytes(png())
    assert main(["submit", "--image", str(path)]) == 0
    job_id = capsys.readouterr().out.strip()
    record = Client(settings=settings).get(job_id)
    assert record.request["image_url"].startswith("data:image/png;base64,")
    (tmp_path / "cat.txt").write_text("meow")
    assert main(["submit", "--image", str(tmp_path / "cat.txt")]) == 2
    assert "image: cat.txt is of an unknown format" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["submit", "--image", str(path), "--image-url", IMG])
    assert info.value.code == 2

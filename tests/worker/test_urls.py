"""The URL policy (worker/urls.py): internal names are refused, public hosts pass, DNS is
consulted within a bound, and the scheme and form rules always hold. Internal addresses
in every spelling: test_addresses.py."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from worker import urls
from worker.errors import UrlRefused
from worker.settings import Settings
from worker.urls import check_url, resolve_host, video_url_problem

INTERNAL_NAME_URLS = [
    "http://localhost/",
    "http://localhost./",
    "http://LOCALHOST/",
    "http://LocalHost:8080/",
    "http://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54/",  # full-width "localhost"
    "http://loc\u00adalhost/".replace("\u00ad", "%C2%AD"),  # escaped soft hyphen
    "http://%6c%6fcalhost/",
    "http://a.localhost/",
    "http://foo.internal/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://printer.local/",
    "http://box.localdomain/",
    "http://nas.home.arpa/",
    "http://example.com@localhost/",
]
PUBLIC_URLS = [
    "http://8.8.8.8/",
    "https://[2606:4700::1111]/",
    "https://example.com/cat.png",
    "HTTPS://Example.COM/cat.png?x=1#frag",
    "https://user:pw@example.com:8443/a",
    "http://[::ffff:8.8.8.8]/",
    "http://[64:ff9b::808:808]/",
    "https://b\u00fccher.example/",
    "https://my_bucket.s3.example.com/a.png",
    "https://localhost.example.com/",
    "https://internal.example.com/",
]


@pytest.mark.parametrize("url", INTERNAL_NAME_URLS)
def test_internal_names_are_refused(url: str) -> None:
    with pytest.raises(UrlRefused, match="internal host name"):
        check_url(url, allow_private=False, resolve=None)


@pytest.mark.parametrize("url", PUBLIC_URLS)
def test_public_urls_are_returned_unchanged(url: str) -> None:
    assert check_url(url, allow_private=False, resolve=None) == url


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "JavaScript:alert(1)",
        "file:///etc/passwd",
        "ftp://example.com/a",
        "gopher://example.com/",
        "data:image/png;base64,AAAA",
        "mailto:a@example.com",
        "//example.com/a.png",
        "example.com/a.png",
        "/a.png",
        "",
        "http://",
        "https:///a.png",
        "http://:80/",
    ],
)
def test_only_http_and_https_urls_with_a_host(url: str) -> None:
    with pytest.raises(UrlRefused, match="http"):
        check_url(url, allow_private=False, resolve=None)
    with pytest.raises(UrlRefused, match="http"):
        check_url(url, allow_private=True, resolve=None)


def test_data_image_urls_only_when_allowed() -> None:
    url = "data:image/png;base64,AAAA"
    assert check_url(url, allow_private=False, allow_data_image=True) == url
    with pytest.raises(UrlRefused):
        check_url("data:text/html;base64,AAAA", allow_private=False, allow_data_image=True)


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/\r\nX-Injected: 1",
        "http://example.com/a\nb",
        "http://exa\tmple.com/",
        "http://example.com/\x00",
        "http://example.com/\x7f",
        "http://example.com/a b",
        "http://example.com/\u200b",
        "http://example.com/\u202e",
        "http://example.com/\u2028",
        "http://127.0.0.1\\@example.com/",
        "\x00http://example.com/",
        " http://example.com/",
    ],
)
def test_whitespace_control_characters_and_backslashes_are_refused(url: str) -> None:
    with pytest.raises(UrlRefused):
        check_url(url, allow_private=True, resolve=None)


@pytest.mark.parametrize("value", [None, 42, b"http://example.com/", ["http://example.com/"]])
def test_a_url_must_be_a_string(value: object) -> None:
    with pytest.raises(UrlRefused, match="http"):
        check_url(value, allow_private=True, resolve=None)


def test_length_cap() -> None:
    url = "https://example.com/" + "a" * 100
    assert check_url(url, allow_private=False, resolve=None, max_length=len(url)) == url
    with pytest.raises(UrlRefused, match="longer than"):
        check_url(url + "a", allow_private=False, resolve=None, max_length=len(url))


@pytest.mark.parametrize(
    ("addresses", "word"),
    [
        (["127.0.0.1"], "loopback"),
        (["::ffff:10.0.0.1"], "private"),
        (["93.184.216.34", "10.0.0.1"], "private"),  # any address counts
        (["2606:4700::1111", "fe80::1%eth0"], "link-local"),
        (["169.254.169.254"], "link-local"),
    ],
)
def test_a_name_that_resolves_to_an_internal_address_is_refused(
    addresses: list[str], word: str
) -> None:
    asked: list[str] = []

    def resolve(name: str) -> list[str]:
        asked.append(name)
        return addresses

    with pytest.raises(UrlRefused, match=f"resolves to .*{word}"):
        check_url("https://rebind.example.com/a.png", allow_private=False, resolve=resolve)
    assert asked == ["rebind.example.com"]


def test_the_resolver_gets_the_normalised_name_and_public_answers_pass() -> None:
    asked: list[str] = []

    def resolve(name: str) -> list[str]:
        asked.append(name)
        return ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "not an address"]

    url = "https://B\u00fccher.Example./a.png"
    assert check_url(url, allow_private=False, resolve=resolve) == url
    assert asked == ["xn--bcher-kva.example"]


@pytest.mark.parametrize("answer", [[], OSError("no such name")])
def test_a_name_that_does_not_resolve_is_accepted(answer: object) -> None:
    def resolve(name: str) -> list[str]:
        if isinstance(answer, Exception):
            raise answer
        return []

    url = "https://nowhere.example/a.png"
    assert check_url(url, allow_private=False, resolve=resolve) == url


def test_literal_addresses_and_private_mode_never_resolve() -> None:
    asked: list[str] = []

    def resolve(name: str) -> list[str]:
        asked.append(name)
        return ["127.0.0.1"]

    assert check_url("http://8.8.8.8/", allow_private=False, resolve=resolve)
    assert check_url("http://db.internal/", allow_private=True, resolve=resolve)
    assert check_url("http://example.com/", allow_private=True, resolve=resolve)
    assert asked == []


def test_answers_are_looked_up_in_place_and_a_missing_name_is_a_bug(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Not through the bounded thread (whose limit of hung resolutions skips the check).
    monkeypatch.setattr(urls, "_pending", threading.BoundedSemaphore(1))
    assert urls._pending.acquire(blocking=False)
    answers = urls.Answers({"rebind.example.com": ["93.184.216.34", "10.0.0.1"]})
    with pytest.raises(UrlRefused, match=r"rebind\.example\.com -> 10\.0\.0\.1"):
        check_url("https://rebind.example.com/", allow_private=False, resolve=answers)
    with pytest.raises(LookupError, match=r"other\.example\.com was not resolved ahead"):
        check_url("https://other.example.com/", allow_private=False, resolve=answers)


def test_resolve_names_resolves_only_what_check_url_resolves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def resolve(name: str) -> list[str]:
        return [f"answer for {name}"]

    monkeypatch.setattr(urls, "resolve_host_async", resolve)
    given = [
        "https://A.example.com/1",
        "https://a.example.com/2",
        "data:image/png;base64,AA==",
        "http://10.0.0.1/",
        "http://db.internal/",
        "ftp://[bad",
        None,
        7,
        "https://b.example/",
    ]
    answers = asyncio.run(urls.resolve_names(given))
    assert answers == {
        "a.example.com": ["answer for a.example.com"],
        "b.example": ["answer for b.example"],
    }


@pytest.fixture
def hanging() -> Iterator[threading.Event]:
    release = threading.Event()
    yield release
    release.set()


def test_a_resolver_that_hangs_is_bounded_and_the_url_accepted(
    hanging: threading.Event, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert urls.RESOLVE_TIMEOUT <= 2.0
    monkeypatch.setattr(urls, "RESOLVE_TIMEOUT", 0.3)

    def resolve(name: str) -> list[str]:
        hanging.wait(60)
        return ["127.0.0.1"]

    started = time.monotonic()
    url = "https://slow.example.com/a.png"
    assert check_url(url, allow_private=False, resolve=resolve) == url
    assert time.monotonic() - started < 1.5


def test_resolve_host_uses_getaddrinfo_and_is_bounded(
    hanging: threading.Event, monkeypatch: pytest.MonkeyPatch
) -> None:
    def getaddrinfo(name: str, *args: object, **kwargs: object) -> list[tuple[object, ...]]:
        if name == "hang.resolve-host.test":
            hanging.wait(60)
        if name == "fail.resolve-host.test":
            raise socket.gaierror(-2, "Name or service not known")
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 0)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 0)),
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", 0, 0, 0)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(urls, "RESOLVE_TIMEOUT", 0.3)
    assert resolve_host("ok.resolve-host.test") == ["127.0.0.1", "::1"]
    assert resolve_host("fail.resolve-host.test") == []
    started = time.monotonic()
    assert resolve_host("hang.resolve-host.test") == []
    assert time.monotonic() - started < 1.5
    # the default resolver, through check_url: a DNS form of loopback
    with pytest.raises(UrlRefused, match="resolves to a loopback"):
        check_url("https://ok.resolve-host.test/", allow_private=False)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost:8080/hook",
        "http://[::1]:9/",
        "http://10.0.0.1/hook",
        "http://192.168.1.1/",
        "http://redis.internal/",
        "http://2130706433/",
    ],
)
def test_allow_private_lets_loopback_and_private_hosts_through(url: str) -> None:
    assert check_url(url, allow_private=True) == url
    with pytest.raises(UrlRefused):
        check_url(url, allow_private=False, resolve=None)


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/",
        "http://[fe80::1]/",
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "http://255.255.255.255/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://[2002:a9fe:a9fe::]/",
        "http://[::ffff:169.254.169.254]/",
    ],
)
def test_allow_private_still_refuses_what_is_never_a_local_service(url: str) -> None:
    with pytest.raises(UrlRefused):
        check_url(url, allow_private=True)


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "file:///etc/passwd",
        "data:video/mp4;base64,AAAA",
        "ftp://cdn.example.com/v.mp4",
        "/videos/v.mp4",
        "//cdn.example.com/v.mp4",
        "https://cdn.example.com/v\r\n.mp4",
    ],
)
def test_video_url_problem_refuses_what_is_not_http(url: str) -> None:
    assert video_url_problem(url, allow_private=False)
    assert video_url_problem(url, allow_private=True)


def test_video_url_problem_internal_hosts_only_when_private_is_allowed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def getaddrinfo(*args: object, **kwargs: object) -> object:
        raise AssertionError("video URLs are not resolved")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    for url in ("http://127.0.0.1:8000/_sim/videos/1.mp4", "http://[::ffff:7f00:1]/v.mp4"):
        problem = video_url_problem(url, allow_private=False)
        assert problem is not None and "loopback" in problem
        assert video_url_problem(url, allow_private=True) is None
    assert video_url_problem("https://cdn.example.com/v.mp4", allow_private=False) is None
    assert video_url_problem("http://simulator:8000/v.mp4", allow_private=False) is None


def test_the_setting_and_its_environment_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    monkeypatch.chdir(tmp_path)  # type: ignore[arg-type]
    monkeypatch.delenv("VIDEOQ_ALLOW_PRIVATE_URLS", raising=False)
    assert Settings().allow_private_urls is False
    monkeypatch.setenv("VIDEOQ_ALLOW_PRIVATE_URLS", "true")
    assert Settings().allow_private_urls is True

"""The URL policy (worker/urls.py): every spelling of an internal host is refused, public
hosts pass, DNS is consulted within a bound, and the scheme and form rules always hold."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from worker import urls
from worker.errors import UrlRefused
from worker.settings import Settings
from worker.urls import blocked_reason, check_url, parse_host, resolve_host, video_url_problem

# (URL, a word the refusal names). Hosts that are addresses in some spelling.
INTERNAL_ADDRESS_URLS = [
    ("http://2130706433/", "loopback"),
    ("http://0x7f000001/", "loopback"),
    ("http://0X7F000001/", "loopback"),
    ("http://0177.0.0.1/", "loopback"),
    ("http://0177.0000.0000.0001/", "loopback"),
    ("http://127.1/", "loopback"),
    ("http://10.1.1/", "private"),
    ("http://0x7f.1/", "loopback"),
    ("http://0x7f.0.0x0.1/", "loopback"),
    ("http://127.0.0.1./", "loopback"),
    ("http://\uff11\uff12\uff17\uff0e\uff10\uff0e\uff10\uff0e\uff11/", "loopback"),  # full-width
    ("http://127\u30020\u30020\u30021/", "loopback"),  # ideographic full stop
    ("http://127\uff610\uff610\uff611/", "loopback"),  # half-width ideographic full stop
    ("http://127\uff0e0\uff0e0\uff0e1/", "loopback"),  # full-width full stop
    ("http://%31%32%37.0.0.1/", "loopback"),  # percent-escaped
    ("http://[::ffff:127.0.0.1]/", "loopback"),
    ("http://[::ffff:7f00:1]/", "loopback"),
    ("http://[::127.0.0.1]/", "loopback"),
    ("http://[64:ff9b::7f00:1]/", "loopback"),
    ("http://[64:ff9b::a00:1]/", "private"),
    ("http://[64:ff9b:1::a00:1]/", "private"),
    ("http://[2002:7f00:1::]/", "loopback"),
    ("http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/", "loopback"),  # Teredo, client 127.0.0.1
    ("http://[::1]/", "loopback"),
    ("http://[0:0:0:0:0:0:0:1]/", "loopback"),
    ("http://[::]/", "unspecified"),
    ("http://[fe80::1%25eth0]/", "link-local"),
    ("http://[fe80::1%eth0]/", "link-local"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://[::ffff:169.254.169.254]/", "link-local"),
    ("http://100.64.0.1/", "CGNAT"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://0/", "unspecified"),
    ("http://224.0.0.1/", "multicast"),
    ("http://[ff02::1]/", "multicast"),
    ("http://255.255.255.255/", "broadcast"),
    ("http://240.0.0.1/", "reserved"),
    ("http://10.0.0.1/", "private"),
    ("http://172.16.0.1/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://[fc00::1]/", "private"),
    ("http://[fd12:3456::1]/", "private"),
    ("http://example.com@127.0.0.1/", "loopback"),
    ("http://127.0.0.1#@example.com/", "loopback"),
    ("http://user:pw@example.com:pw@10.0.0.1/", "private"),
    ("http://127.0.0.1:6379/", "loopback"),
]
# Hosts that are internal names.
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


@pytest.mark.parametrize(("url", "word"), INTERNAL_ADDRESS_URLS)
def test_internal_addresses_are_refused_in_every_spelling(url: str, word: str) -> None:
    with pytest.raises(UrlRefused, match=word):
        check_url(url, allow_private=False, resolve=None)


@pytest.mark.parametrize(
    ("url", "word"),
    [(u, w) for u, w in INTERNAL_ADDRESS_URLS if "@" not in u and "#" not in u],
)
def test_blocked_reason_names_each_internal_address(url: str, word: str) -> None:
    hostport = url.split("//", 1)[1].split("/", 1)[0]
    host = hostport if hostport.endswith("]") else hostport.rsplit(":", 1)[0]
    address = parse_host(host)
    assert not isinstance(address, str)
    reason = blocked_reason(address)
    assert reason is not None and word in reason


@pytest.mark.parametrize(
    "text",
    [
        "::ffff:127.0.0.1",
        "::ffff:7f00:1",
        "::127.0.0.1",
        "64:ff9b::7f00:1",
        "64:ff9b::a00:1",
        "2002:7f00:1::",
        "::1",
        "0:0:0:0:0:0:0:1",
        "fe80::1%eth0",
        "169.254.169.254",
        "100.64.0.1",
        "100.127.255.255",
        "0.0.0.0",
        "0.1.2.3",
        "224.0.0.1",
        "10.0.0.1",
        "172.16.0.1",
        "172.31.255.255",
        "192.168.1.1",
        "fc00::1",
        "127.255.255.254",
        "192.0.0.8",
        "192.0.2.1",
        "198.18.0.1",
        "203.0.113.9",
        "2001:db8::1",
        "100::1",
        "::",
        "::ffff:0.0.0.0",
        "::ffff:100.64.0.1",
        "2002:a9fe:a9fe::",
    ],
)
def test_blocked_reason_refuses(text: str) -> None:
    assert blocked_reason(ipaddress.ip_address(text)) is not None


@pytest.mark.parametrize(
    "text",
    [
        "8.8.8.8",
        "1.1.1.1",
        "93.184.216.34",
        "2606:4700::1111",
        "2a00:1450:4001:80b::200e",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",
        "2002:808:808::",
    ],
)
def test_blocked_reason_passes_public_addresses(text: str) -> None:
    assert blocked_reason(ipaddress.ip_address(text)) is None


def test_an_embedded_address_is_named_in_the_reason() -> None:
    reason = blocked_reason(ipaddress.ip_address("::ffff:7f00:1"))
    assert reason is not None and "127.0.0.1" in reason and "IPv4-mapped" in reason


@pytest.mark.parametrize("url", INTERNAL_NAME_URLS)
def test_internal_names_are_refused(url: str) -> None:
    with pytest.raises(UrlRefused, match="internal host name"):
        check_url(url, allow_private=False, resolve=None)


@pytest.mark.parametrize("url", PUBLIC_URLS)
def test_public_urls_are_returned_unchanged(url: str) -> None:
    assert check_url(url, allow_private=False, resolve=None) == url


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("10.1.1", "10.1.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0xc0.0250.1", "192.168.0.1"),
        ("4294967295", "255.255.255.255"),
        ("\uff11\uff12\uff17\uff0e\uff10\uff0e\uff10\uff0e\uff11", "127.0.0.1"),
        ("127\u30020\u30020\u30021", "127.0.0.1"),
        ("[::1]", "::1"),
        ("[0:0:0:0:0:0:0:1]", "::1"),
        ("fe80::1%eth0", "fe80::1"),
        ("[fe80::1%25eth0]", "fe80::1"),
        ("LOCALHOST.", "localhost"),
        ("B\u00fccher.Example", "xn--bcher-kva.example"),
        ("\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45\uff0e\uff43\uff4f\uff4d", "example.com"),
        ("example.com", "example.com"),
    ],
)
def test_parse_host_normalises(host: str, expected: str) -> None:
    assert str(parse_host(host)) == expected


@pytest.mark.parametrize(
    "host",
    [
        "",
        ".",
        "a..b",
        ".example.com",
        "-a.example.com",
        "a-.example.com",
        "exa mple.com",
        "x" * 64 + ".com",
        ("a" * 60 + ".") * 5 + "com",
        "1.2.3.4.5",
        "256.1.1.1",
        "1.256.1.1",
        "1.2.16777216",
        "127.0.0.08",
        "4294967296",
        "foo.123",
        "[::1",
        "1::2::3",
        "ex/ample.com",
        "ex@mple.com",
        "%zz.example.com",
        "%ff.example.com",
    ],
)
def test_parse_host_refuses_what_cannot_be_a_host(host: str) -> None:
    with pytest.raises(UrlRefused):
        parse_host(host)


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

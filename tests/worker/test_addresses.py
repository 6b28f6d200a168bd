"""Internal hosts in every spelling (worker/addresses.py, and host parsing in
worker/urls.py): each spelling of an internal address is parsed to the address and
refused, naming what it is; public addresses pass."""

from __future__ import annotations

import ipaddress

import pytest

from worker.addresses import blocked_reason
from worker.errors import UrlRefused
from worker.urls import check_url, parse_host

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

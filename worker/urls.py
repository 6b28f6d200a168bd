"""One URL policy for every URL videoq takes from a caller or from the upstream.

``image_url`` and the masks (the upstream fetches them), ``webhook_url`` (our worker
POSTs to it) and the upstream's ``video.url`` (callers download it) all go through
:func:`check_url` (or :func:`video_url_problem`). The rules:

- a ``str``, at most ``max_length`` characters, without whitespace, control or format
  characters and without a backslash;
- the scheme is ``http`` or ``https`` (any case), and there is a host; with
  ``allow_data_image``, a ``data:image/...;base64,`` URL is let through (its payload is
  the caller's to check);
- unless ``allow_private``: the host is not an internal name (``localhost``,
  ``*.localhost``, ``*.local``, ``*.internal``, ``*.localdomain``, ``*.home.arpa``) and
  not an internal address in any spelling (``2130706433``, ``0x7f.1``, ``127.1``,
  full-width digits, ``[::ffff:127.0.0.1]``, ``[64:ff9b::a00:1]``, ...), and no address
  its name resolves to is internal.

Which addresses are internal is :mod:`worker.addresses` (:func:`blocked_reason` judges
one address; the connect-time guard uses it too); here, URLs and hosts are parsed in
every spelling, and names resolved within a bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import socket
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable
from typing import TypeAlias
from urllib.parse import unquote, urlsplit

from .addresses import (
    IPAddress,
    blocked_reason,
    never_allowed,
    private_allowed_reason,
)
from .errors import UrlRefused

__all__ = [
    "Answers",
    "Resolver",
    "address_guard",
    "check_url",
    "parse_host",
    "resolve_host",
    "resolve_names",
    "video_url_problem",
]

#: How :func:`check_url` learns a name's addresses: a function of the name.
Resolver: TypeAlias = Callable[[str], list[str]]

#: Longest a resolution may take before :func:`check_url` goes on without it, seconds.
RESOLVE_TIMEOUT = 2.0
#: Most resolutions left running (hung) at once; past that, names are not resolved.
MAX_PENDING_RESOLUTIONS = 32
#: How long :func:`resolve_host` remembers an answer, seconds.
RESOLVE_CACHE_TTL = 30.0
#: Most names :func:`resolve_host` remembers; past that, it forgets them all.
RESOLVE_CACHE_SIZE = 1024

INTERNAL_NAMES = ("localhost",)
INTERNAL_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain", ".home.arpa")

_DATA_IMAGE = re.compile(r"data:image/[A-Za-z0-9.+-]+;base64,")
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_HEX = re.compile(r"0[xX][0-9a-fA-F]*")
_DECIMAL = re.compile(r"[0-9]+")
_OCTAL = re.compile(r"0[0-7]+")
# Full stops that IDNA (UTS #46) maps to "." (U+3002, U+FF0E, U+FF61; NFKC leaves U+3002).
_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})
# Unicode categories refused anywhere in a URL: controls, format characters (zero-width,
# bidi overrides), separators.
_BAD_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})


# --- hosts --------------------------------------------------------------------------------


def _ipv4_number(part: str) -> int | None:
    if _HEX.fullmatch(part):
        return int(part[2:] or "0", 16)
    if _OCTAL.fullmatch(part):
        return int(part, 8)
    if _DECIMAL.fullmatch(part) and not (len(part) > 1 and part.startswith("0")):
        return int(part)
    return None


def _ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The WHATWG/inet_aton IPv4 parser: None if ``host`` is not meant as a number."""
    parts = host.split(".")
    last = parts[-1]
    if not (_DECIMAL.fullmatch(last) or _HEX.fullmatch(last)):
        return None  # a name (a host that ends in a number must be a valid address)
    numbers = [_ipv4_number(p) for p in parts]
    if len(parts) > 4 or any(n is None for n in numbers):
        raise UrlRefused(f"has an invalid IPv4 address ({host[:100]})")
    values = [n for n in numbers if n is not None]
    if any(n > 255 for n in values[:-1]) or values[-1] >= 256 ** (5 - len(values)):
        raise UrlRefused(f"has an invalid IPv4 address ({host[:100]})")
    value = values[-1]
    for i, n in enumerate(values[:-1]):
        value += n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def _ascii_label(label: str) -> str:
    if not label.isascii():
        try:
            label = label.encode("idna").decode("ascii").lower()
        except UnicodeError:
            raise UrlRefused("has an invalid host name") from None
    if not _LABEL.fullmatch(label):
        raise UrlRefused("has an invalid host name")
    return label


def parse_host(host: str) -> str | IPAddress:
    """A URL's host, normalised: an address for any spelling of one, else the name.

    Names come back lower-case, IDNA-encoded (``xn--``), without a trailing dot.
    Percent-escapes are decoded, Unicode is NFKC-normalised (full-width digits; U+3002,
    U+FF0E, U+FF61 as dots), IPv6 brackets and zone ids are dropped, and every IPv4
    spelling that browsers and ``inet_aton`` accept becomes an address: ``2130706433``,
    ``0x7f000001``,
    ``0177.0.0.1``, ``127.1``, ``10.1.1``, ``0x7f.1``. Raises :class:`UrlRefused` for a
    host that cannot be valid.
    """
    text = host
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if ":" in text:
        try:
            return ipaddress.IPv6Address(text.split("%", 1)[0])
        except ValueError:
            raise UrlRefused(f"has an invalid IPv6 address ({text[:100]})") from None
    try:
        text = unquote(text, errors="strict")
    except UnicodeDecodeError:
        raise UrlRefused("has an invalid host name") from None
    text = unicodedata.normalize("NFKC", text)
    text = text.translate(_DOTS).lower()
    if text.endswith("."):
        text = text[:-1]
    if not text:
        raise UrlRefused("has no host")
    if len(text) > 253:
        raise UrlRefused("has a host name longer than 253 characters")
    name = ".".join(_ascii_label(label) for label in text.split("."))
    address = _ipv4(name)
    if address is not None:
        return address
    if len(name) > 253:
        raise UrlRefused("has a host name longer than 253 characters")
    return name


def _internal_name(name: str) -> bool:
    return name in INTERNAL_NAMES or name.endswith(INTERNAL_SUFFIXES)


# --- resolution ---------------------------------------------------------------------------

_pending = threading.BoundedSemaphore(MAX_PENDING_RESOLUTIONS)
_cache: dict[str, tuple[float, list[str]]] = {}


def _bounded(resolve: Resolver, name: str) -> list[str]:
    """``resolve(name)`` in a daemon thread, waiting at most :data:`RESOLVE_TIMEOUT`;
    [] if it fails, hangs, or too many earlier ones still hang."""
    if not _pending.acquire(blocking=False):
        return []
    box: list[list[str]] = []
    done = threading.Event()

    def run() -> None:
        try:
            with contextlib.suppress(Exception):  # a failed resolution is no answer
                box.append(list(resolve(name)))
        finally:
            _pending.release()
            done.set()

    threading.Thread(target=run, name="videoq-resolve", daemon=True).start()
    done.wait(RESOLVE_TIMEOUT)
    return box[0] if box else []


def _getaddrinfo(name: str) -> list[str]:
    infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def resolve_host(name: str) -> list[str]:
    """The addresses ``name`` resolves to (``getaddrinfo``), as strings; [] if it does not
    resolve within :data:`RESOLVE_TIMEOUT` seconds. Answers are kept for
    :data:`RESOLVE_CACHE_TTL` seconds."""
    now = time.monotonic()
    cached = _cache.get(name)
    if cached is not None and cached[0] > now:
        return list(cached[1])
    return _remember(name, now, _bounded(_getaddrinfo, name))


def _remember(name: str, now: float, addresses: list[str]) -> list[str]:
    if len(_cache) >= RESOLVE_CACHE_SIZE:
        _cache.clear()
    _cache[name] = (now + RESOLVE_CACHE_TTL, addresses)
    return list(addresses)


async def resolve_host_async(name: str) -> list[str]:
    """:func:`resolve_host` for asyncio callers: the same answers, bound and cache,
    resolved by the event loop's ``getaddrinfo``."""
    now = time.monotonic()
    cached = _cache.get(name)
    if cached is not None and cached[0] > now:
        return list(cached[1])
    addresses: list[str] = []
    with contextlib.suppress(OSError, UnicodeError, TimeoutError):  # no answer
        infos = await asyncio.wait_for(
            asyncio.get_running_loop().getaddrinfo(name, None, type=socket.SOCK_STREAM),
            RESOLVE_TIMEOUT,
        )
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    return _remember(name, now, addresses)


class Answers(dict[str, list[str]]):
    """Host names and the addresses they resolved to (:func:`resolve_names`), used as
    :func:`check_url`'s ``resolve``: looked up as they are, never resolved again, never
    from the shared cache, and without a thread. A name not among them is a bug of the
    caller's (it resolved other URLs than it checks): :class:`LookupError`."""

    def __call__(self, name: str) -> list[str]:
        try:
            return list(self[name])
        except KeyError:
            raise LookupError(f"{name} was not resolved ahead") from None


def _url_name(url: object) -> str | None:
    """The host name :func:`check_url` (``allow_private=False``) would resolve for
    ``url``, or None: not an http(s) URL with a public-looking name (a ``data:`` URL, an
    address, an internal name, a URL it refuses anyway)."""
    if not isinstance(url, str) or url.startswith("data:"):
        return None
    try:
        hostname = urlsplit(url).hostname
        host = parse_host(hostname) if hostname else None
    except (ValueError, UrlRefused):
        return None  # check_url refuses it, resolving nothing
    return host if isinstance(host, str) and not _internal_name(host) else None


async def resolve_names(urls: Iterable[object]) -> Answers:
    """Resolve the host names :func:`check_url` would resolve for ``urls`` (any values)
    on the event loop, all at once, each within :data:`RESOLVE_TIMEOUT`; the answers for
    ``check_url(..., resolve=answers)``, which then never blocks the loop."""
    names = list(dict.fromkeys(n for n in map(_url_name, urls) if n is not None))
    found = await asyncio.gather(*(resolve_host_async(name) for name in names))
    return Answers(zip(names, found, strict=True))


# --- URLs ---------------------------------------------------------------------------------


def _refuse_address(address: IPAddress, shown: str, *, allow_private: bool, verb: str) -> None:
    reason = blocked_reason(address)
    if reason is None:
        return
    if allow_private and not never_allowed(address):
        return
    raise UrlRefused(f"{verb} {reason} ({shown}), not a public host")


def check_url(
    url: object,
    *,
    allow_private: bool,
    resolve: Resolver | None = resolve_host,
    allow_data_image: bool = False,
    max_length: int = 4096,
) -> str:
    """Return ``url`` unchanged if the policy (see the module) accepts it, else raise
    :class:`UrlRefused` saying why.

    With ``resolve`` (default :func:`resolve_host`), a host name is resolved and refused
    if ANY of its addresses is internal. Resolution is bounded (:data:`RESOLVE_TIMEOUT`,
    in a daemon thread, even for a given ``resolve`` that hangs); if it fails or times
    out the URL is accepted: whoever fetches it decides then (the upstream for images,
    the worker's connect-time guard for webhooks). ``resolve=None`` skips it; an
    :class:`Answers` is looked up directly (asyncio callers: :func:`resolve_names`).

    ``allow_private`` lets loopback, private and shared addresses and internal names
    through (local set-ups, the simulator); the scheme and form rules still apply, and
    unspecified, multicast, broadcast and link-local addresses are still refused. Names
    are not resolved then.
    """
    http_only = "must be an http(s) URL"
    expected = f"{http_only} or a data:image/...;base64 URL" if allow_data_image else http_only
    if not isinstance(url, str):
        raise UrlRefused(f"{expected}, not {type(url).__name__}")
    if allow_data_image and _DATA_IMAGE.match(url):
        return url
    hostname = _http_hostname(url, expected, max_length)
    host = parse_host(hostname)
    if not isinstance(host, str):
        shown = str(host) if hostname == str(host) else f"{hostname} = {host}"
        _refuse_address(host, shown, allow_private=allow_private, verb="points at")
    elif not allow_private:
        _refuse_internal_name(host, resolve)
    return url


def _http_hostname(url: str, expected: str, max_length: int) -> str:
    """The host of an http(s) URL that keeps the form rules (see the module), as the
    URL spells it; else :class:`UrlRefused` naming the first rule broken."""
    if len(url) > max_length:
        raise UrlRefused(f"is longer than {max_length} characters")
    _refuse_bad_characters(url)
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
        _ = parts.port  # raises ValueError for a bad port
    except ValueError:
        raise UrlRefused(f"{expected}; this one does not parse") from None
    if parts.scheme not in ("http", "https"):
        got = f", not {parts.scheme}:" if parts.scheme else ""
        raise UrlRefused(f"{expected}{got}")
    if not hostname:
        raise UrlRefused(f"{expected} with a host")
    return hostname


def _refuse_bad_characters(url: str) -> None:
    for ch in url:
        if ch.isspace() or unicodedata.category(ch) in _BAD_CATEGORIES:
            raise UrlRefused(f"must not contain whitespace or control characters ({ch!r})")
    if "\\" in url:
        raise UrlRefused("must not contain a backslash")


def _refuse_internal_name(host: str, resolve: Resolver | None) -> None:
    """Refuse an internal host name, or one that resolves (with ``resolve``, bounded)
    to an internal address."""
    if _internal_name(host):
        raise UrlRefused(f"points at an internal host name ({host}), not a public host")
    if resolve is None:
        return
    direct = resolve is resolve_host or isinstance(resolve, Answers)
    found = resolve(host) if direct else _bounded(resolve, host)
    for text in found:
        try:
            address = ipaddress.ip_address(text.split("%", 1)[0])
        except ValueError:
            continue
        _refuse_address(address, f"{host} -> {text}", allow_private=False, verb="resolves to")


def video_url_problem(url: object, *, allow_private: bool) -> str | None:
    """Why the upstream's ``video.url`` cannot be handed to callers, or None if it can.

    Only http(s) URLs (never ``javascript:``, ``file:``, ``data:``...), and no internal
    host unless ``allow_private``. No DNS here: the name is the caller's to fetch.
    """
    try:
        check_url(url, allow_private=allow_private, resolve=None, max_length=16384)
    except UrlRefused as exc:
        return str(exc)
    return None


def address_guard(allow_private: bool) -> Callable[[str], str | None]:
    """The connect-time guard of :class:`~worker.http.BoundedHttp` (webhooks, video
    downloads): why a call must not go to a host (an address, or a name as in a URL),
    or None. Names are judged by what they resolve to (``BoundedHttp``'s resolver).
    With ``allow_private``, loopback and private addresses pass, link-local (the cloud
    metadata service) and the like still do not."""
    judge = private_allowed_reason if allow_private else blocked_reason

    def guard(host: str) -> str | None:
        try:
            parsed = parse_host(host)
        except UrlRefused as exc:
            return str(exc)
        if isinstance(parsed, ipaddress.IPv4Address | ipaddress.IPv6Address):
            return judge(parsed)
        return None

    return guard

"""HTTP protocol knowledge as pure functions (SPEC §3.2-3.4, §3.6, §6).

URL checks, ``Range``/``Content-Range``, ``Content-Length``, validators for
``If-Range``, ``Retry-After`` and HTTP-dates, which statuses are transient or redirects,
the redirect policy (where we may go, which headers we may carry there) and
the split of a body into ranges for parallel connections.

Pure functions: no sockets, no clock (``now`` is passed in), no environment.
"""

from __future__ import annotations

import base64
import collections
import re

# A plain URL is split with string methods (a property test holds it equal
# to urlsplit); urllib.parse is imported for the others.

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Final, Mapping, NamedTuple, TypeVar

    T = TypeVar("T")

__all__ = [
    "HIDDEN",
    "MAX_REDIRECTS",
    "REDIRECT_STATUSES",
    "TRANSIENT_STATUSES",
    "VALIDATORS",
    "ContentRange",
    "basic_auth_header",
    "bypasses_proxy",
    "changed_validator",
    "check_url",
    "format_content_range",
    "format_range",
    "headers_for_redirect",
    "is_redirect_status",
    "is_transient_status",
    "parse_content_length",
    "parse_content_range",
    "parse_http_date",
    "parse_retry_after",
    "plan_ranges",
    "proxies_from_env",
    "redact",
    "redact_url",
    "resolve_redirect",
    "same_origin",
    "split_plain",
    "split_url",
    "split_userinfo",
    "strong_validator",
]

#: Statuses worth retrying (SPEC §3.3): timeouts, throttling, server trouble.
TRANSIENT_STATUSES: Final = frozenset([408, 429, 500, 502, 503, 504])
#: Statuses we follow (SPEC §3.4); 308 included on every Python.
REDIRECT_STATUSES: Final = frozenset([301, 302, 303, 307, 308])
#: Redirects followed for one request before giving up (SPEC §3.4; curl's
#: default is 50, browsers use 20; archives chain at most a few).
MAX_REDIRECTS: Final = 10

_SCHEMES: Final = frozenset(["http", "https"])
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


# The patterns are strings, compiled by re (and kept in its cache) at their
# first use: a plain URL and a whole answer need none of them.
_CONTROL: Final = "[\x00-\x1f\x7f]"
# Characters no host name or IP literal has (RFC 3986 reg-name): seen in
# typos and injection attempts, and refused by DNS anyway.
_BAD_HOST: Final = r"[\s<>\"{}|\\^`/]"
#: The same, for an ASCII host (\s: the ASCII whitespace, \x1c-\x1f included).
_BAD_HOST_ASCII: Final = frozenset(' \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f<>"{}|\\^`/')
# What requests' requote_uri leaves alone: reserved characters and '%', so
# existing escapes survive and only spaces and non-ASCII get encoded.
_URL_SAFE: Final = "!#$%&'()*+,/:;=?@[]~"
#: Deletes what quote(text, safe=_URL_SAFE) leaves as it is: what remains needs quoting.
_QUOTE_FREE: Final = (
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~" + _URL_SAFE.encode()
)
_CONTENT_RANGE: Final = (
    r"(?i)\s*bytes\s+(?:(?P<start>[0-9]+)-(?P<end>[0-9]+)|\*)/(?P<total>[0-9]+|\*)\s*"
)
#: What a URL must not contain to be split without urllib.parse (see _split_plain).
_NOT_PLAIN: Final = b" \\#[]@"
# Dropped when a redirect leaves the origin (SPEC §3.4): credentials, S3
# signing headers, and Host, which would name the old server.
_CROSS_ORIGIN_DROP: Final = frozenset(["authorization", "cookie", "proxy-authorization", "host"])


def check_url(url: str) -> str:
    """Check that ``url`` is an absolute http(s) URL and return it ready to request.

    Parameters
    ----------
    url : str
        The URL as the user gave it.

    Returns
    -------
    str
        The URL to send: surrounding whitespace and the fragment removed,
        spaces and non-ASCII characters of the path and query percent-encoded
        (existing ``%XX`` escapes kept, as requests does), an
        internationalised host name IDNA-encoded.

    Raises
    ------
    TypeError
        When ``url`` is not a string.
    ValueError
        Naming the URL, when it contains control characters or a lone
        surrogate, cannot be parsed (bad port, unclosed ``[``), is not http/https, or
        has no host or an invalid one.

    Examples
    --------
    >>> check_url("https://example.com/a b.fits#frag")
    'https://example.com/a%20b.fits'
    >>> check_url("ftp://example.com/x")
    Traceback (most recent call last):
    ...
    ValueError: URL 'ftp://example.com/x' is not an http or https URL
    """
    if not isinstance(url, str):
        raise TypeError(f"URL {url!r} is not a string")
    if not url.isascii():
        try:
            url.encode("utf-8")
        except UnicodeEncodeError:
            # A lone surrogate (a file name decoded with surrogateescape, say)
            # cannot be percent-encoded as UTF-8.
            raise ValueError(f"URL {url!r} is not valid Unicode text (a lone surrogate)") from None
    text = url.strip()
    plain = split_plain(text)
    if plain is not None:
        scheme, netloc, path, query, hostname, _ = plain
        if scheme in _SCHEMES and hostname and not _BAD_HOST_ASCII.intersection(hostname):
            return f"{scheme}://{netloc}{_quoted(path)}{'?' if query else ''}{_quoted(query)}"
    return _check_url_in_full(url, text)


def check_download_url(url: object) -> tuple[str, tuple[str, str] | None]:
    """The URL of an http(s) download, ready to request, and the ``user:password`` in it.

    :func:`check_url` on the URL as given, so that a refusal quotes it as
    written (its password hidden); then :func:`split_userinfo`, so that the
    password is never printed or logged.

    Raises
    ------
    ValueError
        For anything but a string, for an ``s3://`` URI (saying what takes
        one), and for what :func:`check_url` refuses.

    Examples
    --------
    >>> check_download_url("https://astro:pw@archive.example/a.fits")
    ('https://archive.example/a.fits', ('astro', 'pw'))
    """
    if not isinstance(url, str):
        raise ValueError(f"url must be a string, not {url!r}")
    if url.lower().startswith("s3://"):
        raise ValueError(
            f"{url!r} is an s3:// URI: use aws_download(uri=...), or download(), "
            "which picks by the scheme"
        )
    return split_userinfo(check_url(url))


def _check_url_in_full(url: str, text: str) -> str:
    """check_url for any URL, with urllib.parse (and the exact reason for a refusal)."""
    from urllib.parse import urlsplit, urlunsplit  # noqa: PLC0415 - see the imports above

    if re.search(_CONTROL, text):
        raise ValueError(f"URL {redact_url(url)!r} contains control characters")
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - parsing the port is what raises for a bad one
    except ValueError as e:
        problem = _reason(e, text)
    else:
        problem = ""
    if problem:
        # Raised outside the handler: urllib's error may quote a password's piece.
        raise ValueError(f"malformed URL {redact_url(url)!r}: {problem}")
    if parts.scheme.lower() not in _SCHEMES:
        raise ValueError(f"URL {redact_url(url)!r} is not an http or https URL")
    hostname = parts.hostname
    if not hostname:
        raise ValueError(f"URL {redact_url(url)!r} has no host")
    if re.search(_BAD_HOST, hostname):
        raise ValueError(f"URL {redact_url(url)!r} has an invalid host {hostname!r}")
    netloc = parts.netloc if parts.netloc.isascii() else _ascii_netloc(url, parts.netloc)
    return urlunsplit((parts.scheme.lower(), netloc, _quoted(parts.path), _quoted(parts.query), ""))


def _reason(error: ValueError, url: str) -> str:
    """urllib's reason for refusing ``url``, unless it could quote a piece of a password.

    urlsplit names the port it could not read: ``'pa'`` of
    ``user:pa#ss@host``, the start of a password with a ``#`` in it.
    """
    if _userinfo_length(url.partition("://")[2]) < 0:
        return str(error)
    return "a password with '#', '?' or '/' in it must have them percent-encoded (%23, %3F, %2F)"


#: The last URLs split: one download splits its URL three times (the check,
#: the origin, the request), and a batch's URLs are each new.
_SPLITS: dict[str, tuple[str, str, str, str, str, int | None] | None] = {}
_MAX_SPLITS = 64


def _remembered(cache: dict[str, T], limit: int, url: str, compute: Callable[[str], T]) -> T:
    """``compute(url)``, remembered in ``cache`` (emptied when it holds ``limit``).

    A plain dict: its look-ups and stores are atomic between threads, and
    two threads computing the same answer at once store the same value.
    """
    try:
        return cache[url]
    except KeyError:
        pass
    answer = compute(url)
    if len(cache) >= limit:
        cache.clear()
    cache[url] = answer
    return answer


def split_plain(url: str) -> tuple[str, str, str, str, str, int | None] | None:
    """Split a plain URL as urllib.parse does; None for one that is not plain.

    Plain: printable ASCII, no space, backslash, fragment, IPv6 literal or
    ``user@``, and a port (if any) of digits up to 65535. For those,
    ``urlsplit`` and this agree (a property test checks it); everything
    else goes to ``urlsplit`` itself. Most URLs are plain, and this costs
    neither the import of urllib.parse nor its general parse.

    Returns
    -------
    tuple or None
        ``(scheme, netloc, path, query, hostname, port)``: the scheme and
        host name lower-cased, the port None when absent.

    Examples
    --------
    >>> split_plain("HTTPS://Archive.example:8443/data/a.fits?x=1")
    ('https', 'Archive.example:8443', '/data/a.fits', 'x=1', 'archive.example', 8443)
    >>> split_plain("https://user@archive.example/") is None
    True
    """
    return _remembered(_SPLITS, _MAX_SPLITS, url, _split_plain)


def _split_plain(url: str) -> tuple[str, str, str, str, str, int | None] | None:
    # Straight-line tests in C (bytes.translate deletes what is not plain,
    # two finds end the authority): a set's isdisjoint and a loop of finds
    # cost twice as much per URL, and every file of a batch splits its URL.
    if not (url.isascii() and url.isprintable()):
        return None
    raw = url.encode("ascii")
    if len(raw.translate(None, _NOT_PLAIN)) != len(raw):
        return None
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme.isalpha():
        return None
    end = rest.find("/")
    if end < 0:
        end = len(rest)
    query_at = rest.find("?", 0, end)
    if query_at >= 0:
        end = query_at
    netloc, tail = rest[:end], rest[end:]
    if "%" in netloc:
        return None  # a zone or an escape in the host: urlsplit's rules apply
    path, _, query = tail.partition("?")
    host, colon, port_text = netloc.partition(":")
    port = None
    if colon and port_text:
        if not port_text.isdigit() or int(port_text) > 65535:
            return None
        port = int(port_text)
    return scheme.lower(), netloc, path, query, host.lower(), port


def split_url(url: str) -> tuple[str, str, str, str, str, int | None]:
    """Split any URL as :func:`split_plain` does: plain ones fast, others with urllib.parse.

    Returns
    -------
    tuple
        ``(scheme, netloc, path, query, hostname, port)``: the scheme and
        host name lower-cased (``""`` for no host), the port None when absent.

    Raises
    ------
    ValueError
        From urlsplit, for a URL it cannot split or a bad port.

    Examples
    --------
    >>> split_url("http://[::1]:8080/x?y")
    ('http', '[::1]:8080', '/x', 'y', '::1', 8080)
    """
    plain = split_plain(url)
    if plain is not None:
        return plain
    from urllib.parse import urlsplit  # noqa: PLC0415 - see the imports above

    parts = urlsplit(url)
    hostname = (parts.hostname or "").lower()
    return parts.scheme, parts.netloc, parts.path, parts.query, hostname, parts.port


def _is_digits(text: str) -> bool:
    # int() alone would accept "+5", "1_000" and non-ASCII digits.
    return text.isascii() and text.isdigit()


def _quoted(text: str) -> str:
    # Most URLs need no quoting: deleting the characters quote() keeps says so
    # (from bytes, whose translate uses a table where str's looks up a dict
    # for each character).
    if text.isascii() and not text.encode("ascii").translate(None, _QUOTE_FREE):
        return text
    from urllib.parse import quote  # noqa: PLC0415 - see the imports above

    return quote(text, safe=_URL_SAFE)


def _ascii_netloc(url: str, netloc: str) -> str:
    userinfo, at, hostport = netloc.rpartition("@")
    host, colon, port = hostport.rpartition(":") if "]" not in hostport else (hostport, "", "")
    if not colon or not port.isdigit():
        host, colon, port = hostport, "", ""
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError as e:
        raise ValueError(f"malformed URL {redact_url(url)!r}: bad host name {host!r}") from e
    # IDNA's NFKC step can make what the raw host did not have: "¨" becomes
    # a space and a combining mark, a fullwidth solidus a slash. What gets
    # resolved is the result, so it is checked again.
    if _BAD_HOST_ASCII.intersection(ascii_host) or not ascii_host.isprintable():
        raise ValueError(
            f"URL {redact_url(url)!r} has an invalid host {host!r} (IDNA makes it {ascii_host!r})"
        )
    return _quoted(userinfo) + at + ascii_host + colon + port


if TYPE_CHECKING:

    class _ContentRangeFields(NamedTuple):
        start: int | None
        end: int | None
        total: int | None

else:
    # collections.namedtuple at run time (typing is not imported for it);
    # type checkers see the typed fields.
    _ContentRangeFields = collections.namedtuple("ContentRange", ["start", "end", "total"])


class ContentRange(_ContentRangeFields):
    """A parsed ``Content-Range`` header.

    Attributes
    ----------
    start, end : int or None
        The first and last byte (inclusive) of the part sent; both ``None``
        in the unsatisfied-range form ``bytes */N``.
    total : int or None
        The complete length, ``None`` when the server sent ``*``.
    """

    __slots__ = ()


def parse_content_range(value: str) -> ContentRange:
    """Parse a ``Content-Range`` header value.

    Parameters
    ----------
    value : str
        For example ``bytes 0-499/1234``, ``bytes 0-499/*`` or ``bytes */1234``.

    Returns
    -------
    ContentRange

    Raises
    ------
    ValueError
        Naming the value, for any other form or an inconsistent range
        (``end < start``, ``end >= total``, ``bytes */*``).

    Examples
    --------
    >>> parse_content_range("bytes 100-199/1000")
    ContentRange(start=100, end=199, total=1000)
    >>> parse_content_range("bytes */1000")
    ContentRange(start=None, end=None, total=1000)
    """
    match = re.fullmatch(_CONTENT_RANGE, value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"malformed Content-Range {value!r}")
    total = None if match.group("total") == "*" else int(match.group("total"))
    if match.group("start") is None:
        if total is None:
            raise ValueError(f"malformed Content-Range {value!r}: no range and no length")
        return ContentRange(None, None, total)
    start, end = int(match.group("start")), int(match.group("end"))
    if end < start or (total is not None and end >= total):
        raise ValueError(f"inconsistent Content-Range {value!r}")
    return ContentRange(start, end, total)


def format_content_range(start: int | None, end: int | None, total: int | None) -> str:
    """Format a ``Content-Range`` header value, the inverse of :func:`parse_content_range`.

    Parameters
    ----------
    start, end : int or None
        First and last byte, inclusive; both ``None`` for ``bytes */total``.
    total : int or None
        Complete length, ``None`` for ``*``.

    Returns
    -------
    str

    Examples
    --------
    >>> format_content_range(0, 499, 1234)
    'bytes 0-499/1234'
    >>> format_content_range(None, None, 1234)
    'bytes */1234'
    """
    length = "*" if total is None else str(total)
    if start is None or end is None:
        return f"bytes */{length}"
    return f"bytes {start}-{end}/{length}"


def format_range(start: int, end: int | None = None) -> str:
    """Format a ``Range`` request header value.

    Parameters
    ----------
    start : int
        First byte wanted.
    end : int, optional
        Last byte wanted, inclusive; omitted means "to the end".

    Returns
    -------
    str

    Raises
    ------
    ValueError
        When ``start`` is negative or ``end`` is before ``start``.

    Examples
    --------
    >>> format_range(1024)
    'bytes=1024-'
    >>> format_range(0, 0)
    'bytes=0-0'
    """
    if start < 0 or (end is not None and end < start):
        raise ValueError(f"invalid byte range start={start!r} end={end!r}")
    return f"bytes={start}-" if end is None else f"bytes={start}-{end}"


def parse_content_length(value: str | None) -> int | None:
    """Parse a ``Content-Length`` header value.

    Parameters
    ----------
    value : str or None
        The header value. Duplicated headers joined with commas
        (``"42, 42"``) are accepted when they agree (RFC 9110 §8.6).

    Returns
    -------
    int or None
        The length; ``None`` when missing, not a plain decimal number, or
        contradictory: such a length cannot be trusted to validate a file.

    Examples
    --------
    >>> parse_content_length("1234")
    1234
    >>> parse_content_length("10, 10")
    10
    >>> parse_content_length("10, 11") is None
    True
    """
    if value is None:
        return None
    if value.isdigit() and value.isascii():
        return _plain_int(value)  # the usual one number, without the general parse
    pieces = [piece.strip() for piece in value.split(",")]
    # int() alone would accept "+5", "1_000" and non-ASCII digits.
    if not all(_is_digits(piece) for piece in pieces):
        return None
    try:
        lengths = {int(piece) for piece in pieces}
    except ValueError:  # more digits than int() converts (3.11+): no length either
        return None
    return lengths.pop() if len(lengths) == 1 else None


def _plain_int(digits: str) -> int | None:
    try:
        return int(digits)
    except ValueError:  # more digits than int() converts (3.11+): no length
        return None


_MONTH_NAMES: Final = (
    "january", "february", "march", "april", "may", "june",
    "july", "august", "september", "october", "november", "december",
)  # fmt: skip
# RFC 9110 writes "Nov"; the full names are what email.utils also read.
_MONTHS: Final = {
    **{name[:3]: number for number, name in enumerate(_MONTH_NAMES, 1)},
    **{name: number for number, name in enumerate(_MONTH_NAMES, 1)},
}
_DAY_NAMES: Final = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
# Not checked against the date: RFC 9110 does not ask recipients to.
_WEEKDAYS: Final = frozenset([*_DAY_NAMES, *(name[:3] for name in _DAY_NAMES)])
# Hours east of UTC. HTTP sends only GMT; the other names are the zones
# email.utils knew (RFC 5322's obsolete ones, UTC and Z), read as before.
_ZONE_HOURS: Final = {
    "gmt": 0, "ut": 0, "utc": 0, "z": 0, "ast": -4, "adt": -3, "est": -5, "edt": -4,
    "cst": -6, "cdt": -5, "mst": -7, "mdt": -6, "pst": -8, "pdt": -7,
}  # fmt: skip
_DAYS_BEFORE_MONTH: Final = (0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334)
_DAYS_IN_MONTH: Final = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
#: Days from 0001-01-01 to 1970-01-01 in the proleptic Gregorian calendar.
_EPOCH_DAYS: Final = 719162


def parse_http_date(value: str) -> int | None:
    """Parse an HTTP-date into seconds since the epoch (RFC 9110 §5.6.7).

    The three forms recipients must accept: IMF-fixdate
    (``Sun, 06 Nov 1994 08:49:37 GMT``), the obsolete RFC 850 form
    (``Sunday, 06-Nov-94 08:49:37 GMT``) and asctime's
    (``Sun Nov  6 08:49:37 1994``, always GMT). With the latitude
    ``email.utils`` gave them, which this replaces: names in any case, short
    or long, any run of spaces, day and time fields of one or two digits,
    and besides ``GMT`` a ``+hhmm``/``-hhmm`` offset or an RFC 5322 zone
    name (``UT``, ``EST``...), ``UTC`` or ``Z``. A year of one or two digits
    (the RFC 850 form's) is 1969-1999 from ``69`` to ``99``, else 2000-2068,
    as ``email.utils`` and POSIX ``%y`` read it.

    Parameters
    ----------
    value : str
        The header value (a ``Retry-After``, ``Last-Modified``...).

    Returns
    -------
    int or None
        Exact seconds since 1970-01-01 00:00:00 UTC, for any year (no
        9999 limit: Python integers have none); ``None`` for anything else,
        including a day, hour, minute or second out of range (a leap second
        ``:60`` is accepted and counts as the next minute's first).

    Examples
    --------
    >>> parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT")
    784111777
    >>> parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT")
    784111777
    >>> parse_http_date("Sun Nov  6 08:49:37 1994")
    784111777
    >>> parse_http_date("Sun, 31 Nov 1994 08:49:37 GMT") is None
    True
    """
    parsed = _parse_http_date(value)
    return None if parsed is None else parsed[1]


def _parse_http_date(text: str) -> tuple[int, int] | None:
    """``(year, seconds since the epoch)`` of an HTTP-date, or ``None``."""
    words = text.split()
    if len(words) == 6 and words[0].endswith(","):
        weekday, day, month, year_text, clock, zone = words
        weekday = weekday[:-1]
    elif len(words) == 4 and words[0].endswith(",") and words[1].count("-") == 2:
        weekday, date, clock, zone = words
        weekday = weekday[:-1]
        day, month, year_text = date.split("-")
    elif len(words) == 5:
        weekday, month, day, clock, year_text = words
        zone = "GMT"
    else:
        return None
    month_number = _MONTHS.get(month.lower())
    offset = _zone_offset(zone)
    year = _decimal(year_text, len(year_text))
    if weekday.lower() not in _WEEKDAYS or month_number is None or offset is None or year is None:
        return None
    if len(year_text) <= 2:
        # email.utils' fixed pivot, kept. RFC 9110's rule (more than 50
        # years ahead means the past) needs the clock, and differs only for
        # the years the pivot puts in the past though they are at most 50
        # years ahead (69-75 in 2025): it would wait long instead of not.
        year += 1900 if year >= 69 else 2000
    numbers = [_decimal(piece, 2) for piece in (day, *clock.split(":"))]
    if len(numbers) != 4:
        return None
    day_number, hour, minute, second = numbers
    if day_number is None or hour is None or minute is None or second is None:
        return None
    if not (1 <= day_number <= _days_in_month(year, month_number)):
        return None
    if hour > 23 or minute > 59 or second > 60:
        return None
    days = _days_since_epoch(year, month_number, day_number)
    return year, ((days * 24 + hour) * 60 + minute) * 60 + second - offset


def _decimal(text: str, max_digits: int) -> int | None:
    # isdigit() alone would accept superscripts and other scripts' digits.
    if not (0 < len(text) <= max_digits and text.isascii() and text.isdigit()):
        return None
    try:
        return int(text)
    except ValueError:  # more digits than int() converts (3.11+): no date either
        return None


def _zone_offset(zone: str) -> int | None:
    """Seconds east of UTC of a zone name or ``+hhmm``/``-hhmm``, else ``None``."""
    hours = _ZONE_HOURS.get(zone.lower())
    if hours is not None:
        return hours * 3600
    if len(zone) != 5 or zone[0] not in ("+", "-"):
        return None
    hours, minutes = _decimal(zone[1:3], 2), _decimal(zone[3:], 2)
    if hours is None or minutes is None or minutes > 59:
        return None
    offset = hours * 3600 + minutes * 60
    return -offset if zone[0] == "-" else offset


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _days_in_month(year: int, month: int) -> int:
    return 29 if month == 2 and _is_leap(year) else _DAYS_IN_MONTH[month - 1]


def _days_since_epoch(year: int, month: int, day: int) -> int:
    # datetime.date.toordinal()'s count, without its year 9999 limit.
    past = year - 1
    days = past * 365 + past // 4 - past // 100 + past // 400
    days += _DAYS_BEFORE_MONTH[month - 1] + (month > 2 and _is_leap(year)) + day - 1
    return days - _EPOCH_DAYS


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Parse a ``Retry-After`` header value into seconds to wait.

    Parameters
    ----------
    value : str or None
        Delta-seconds (``"120"``) or an HTTP-date in any of the three forms
        RFC 9110 requires recipients to accept.
    now : float
        The current time in seconds since the epoch, for a date.

    Returns
    -------
    float or None
        Seconds, never negative (a date in the past gives 0.0); ``None`` for
        a missing or unparsable value. Absurdly large values are returned as
        they are (``inf`` for an overflowing number or a date after the year
        9999): capping is the retry policy's job.

    Examples
    --------
    >>> parse_retry_after("120", now=0.0)
    120.0
    >>> parse_retry_after("Thu, 01 Jan 1970 00:01:00 GMT", now=30.0)
    30.0
    >>> parse_retry_after("soon", now=0.0) is None
    True
    """
    if value is None:
        return None
    text = value.strip()
    if _is_digits(text):
        return float(text)
    parsed = _parse_http_date(text)
    if parsed is None:
        return None
    year, when = parsed
    if year > 9999:
        # As absurdly far ahead as an overflowing number of seconds, and
        # treated alike (email.utils and datetime stopped at 9999: kept).
        return float("inf")
    return max(0.0, float(when) - now)


def is_transient_status(status: int) -> bool:
    """Whether a response status is worth retrying (408, 429, 500, 502, 503, 504).

    Parameters
    ----------
    status : int

    Returns
    -------
    bool

    Examples
    --------
    >>> is_transient_status(503), is_transient_status(404)
    (True, False)
    """
    return status in TRANSIENT_STATUSES


def is_redirect_status(status: int) -> bool:
    """Whether a response status is a redirect we follow (301, 302, 303, 307, 308).

    Parameters
    ----------
    status : int

    Returns
    -------
    bool

    Examples
    --------
    >>> is_redirect_status(308), is_redirect_status(304)
    (True, False)
    """
    return status in REDIRECT_STATUSES


def resolve_redirect(base_url: str, location: str) -> str:
    """Resolve a ``Location`` header against the URL that answered with it.

    Parameters
    ----------
    base_url : str
        The URL that was requested.
    location : str
        The ``Location`` header value, absolute or relative.

    Returns
    -------
    str
        The absolute URL to request next, as :func:`check_url` returns it.
        Raw UTF-8 in the header (which arrives decoded as Latin-1) is read
        as UTF-8, as browsers and requests do.

    Raises
    ------
    ValueError
        Naming the location, when the target is not http/https (``file:``,
        ``ftp:``, ``javascript:``...), has no host or is malformed.

    Examples
    --------
    >>> resolve_redirect("https://a.example/x/y.fits", "../z.fits")
    'https://a.example/z.fits'
    >>> resolve_redirect("https://a.example/x", "file:///etc/passwd")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: refusing redirect from https://a.example/x to 'file:///etc/passwd': ...
    """
    from urllib.parse import urljoin  # noqa: PLC0415 - redirects are not the usual case

    try:
        return check_url(urljoin(base_url, _utf8_from_latin1(location.strip())))
    except ValueError as e:
        raise ValueError(f"refusing redirect from {base_url} to {location!r}: {e}") from e


def _utf8_from_latin1(text: str) -> str:
    # Header bytes reach us decoded as Latin-1 (http.client, requests); a
    # server that put raw UTF-8 in Location (nginx rewrites do) meant UTF-8.
    if text.isascii():
        return text
    try:
        return text.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return text


_ORIGINS: dict[str, tuple[str, str, int | None] | None] = {}
_MAX_ORIGINS = 256


def _origin(url: str) -> tuple[str, str, int | None] | None:
    # Every request compares its URL with the first one: remember the answers.
    return _remembered(_ORIGINS, _MAX_ORIGINS, url, _parse_origin)


def _parse_origin(url: str) -> tuple[str, str, int | None] | None:
    try:
        scheme, _, _, _, hostname, port = split_url(url)
    except ValueError:
        return None
    if not hostname:
        return None
    return scheme, hostname, port or _DEFAULT_PORTS.get(scheme)


def host_of(url: str) -> str:
    """The lower-case host name of ``url`` (``""`` when it has none).

    Examples
    --------
    >>> host_of("https://User@Example.ORG:8443/x")
    'example.org'
    """
    origin = _origin(url)
    return "" if origin is None else origin[1]


def same_origin(url_a: str, url_b: str) -> bool:
    """Whether two URLs share scheme, host and port (defaults 80/443 filled in).

    A URL that cannot be parsed or has no host shares no origin, so that
    credentials are dropped when in doubt.

    Parameters
    ----------
    url_a : str
        One URL.
    url_b : str
        The other.

    Returns
    -------
    bool

    Examples
    --------
    >>> same_origin("https://EXAMPLE.org/a", "https://example.org:443/b")
    True
    >>> same_origin("http://example.org/a", "https://example.org/a")
    False
    """
    origin = _origin(url_a)
    return origin is not None and (url_a == url_b or origin == _origin(url_b))


def headers_for_redirect(headers: Mapping[str, str], same_origin: bool) -> dict[str, str]:
    """Choose the request headers to send to a redirect target.

    Parameters
    ----------
    headers : Mapping[str, str]
        The headers of the request that was redirected.
    same_origin : bool
        Whether the target has the origin of the request (:func:`same_origin`).

    Returns
    -------
    dict
        A copy; when the origin changes, without ``Authorization``,
        ``Cookie``, ``Proxy-Authorization``, ``Host`` and any ``X-Amz-*``
        header (SigV4 signatures and tokens), whatever their case.

    Examples
    --------
    >>> headers_for_redirect({"authorization": "Basic eDp5", "Range": "bytes=0-"}, False)
    {'Range': 'bytes=0-'}
    """
    if same_origin:
        return dict(headers)
    return {
        name: value
        for name, value in headers.items()
        if name.lower() not in _CROSS_ORIGIN_DROP and not name.lower().startswith("x-amz-")
    }


def strong_validator(etag: str | None, last_modified: str | None) -> str | None:
    """Choose what to send in ``If-Range`` when resuming (SPEC §3.2).

    Parameters
    ----------
    etag : str or None
        The ``ETag`` header; a weak one (``W/"..."``) cannot be used.
    last_modified : str or None
        The ``Last-Modified`` header.

    Returns
    -------
    str or None
        The strong ETag, else the ``Last-Modified`` date, else ``None``
        (nothing can prove the object unchanged: a resume must restart).

    Examples
    --------
    >>> strong_validator('"abc"', "Wed, 21 Oct 2015 07:28:00 GMT")
    '"abc"'
    >>> strong_validator('W/"abc"', "Wed, 21 Oct 2015 07:28:00 GMT")
    'Wed, 21 Oct 2015 07:28:00 GMT'
    """
    tag = (etag or "").strip()
    # "W/" is case-sensitive in RFC 9110; treating "w/" as weak too is the
    # safe reading of a sloppy server.
    if tag and tag[:2].upper() != "W/":
        return tag
    date = (last_modified or "").strip()
    return date or None


#: The validators a range answer must repeat, as a state file records them.
VALIDATORS: Final = ("ETag", "Last-Modified")


def changed_validator(recorded: Mapping[str, str | None], headers: Mapping[str, str]) -> str | None:
    """Why a ``206`` is not a part of the object recorded; None when it is (SPEC §3.2).

    Many servers ignore ``If-Range`` (aiohttp's static handler for an ETag,
    tornado, twisted, CDNs, S3) and answer a resume with ``206`` and the
    validators of the object as it is *now*; tornado keeps a stale ETag
    while ``Last-Modified`` moves on. So every validator recorded must come
    back, unchanged, and none may appear that was not there: a missing one
    counts as changed.

    Parameters
    ----------
    recorded : Mapping[str, str or None]
        ``ETag`` and ``Last-Modified`` as the first answer gave them (None:
        it gave none).
    headers : Mapping[str, str]
        The ``206`` answer's headers.

    Returns
    -------
    str or None
        What differs, for messages.

    Examples
    --------
    >>> recorded = {"ETag": '"v1"', "Last-Modified": "Wed, 21 Oct 2015 07:28:00 GMT"}
    >>> changed_validator(recorded, {"ETag": '"v1"', "Last-Modified": "Wed, 21 Oct 2015 07:28:00 GMT"})
    >>> changed_validator(recorded, {"ETag": '"v1"', "Last-Modified": "Thu, 22 Oct 2015 07:28:00 GMT"})
    "Last-Modified is now 'Thu, 22 Oct 2015 07:28:00 GMT', not 'Wed, 21 Oct 2015 07:28:00 GMT'"
    >>> print(changed_validator(recorded, {"Last-Modified": "Wed, 21 Oct 2015 07:28:00 GMT"}))
    the ETag '"v1"' is missing
    """
    for name in VALIDATORS:
        before = (recorded.get(name) or "").strip()
        now = (headers.get(name) or "").strip()
        if before == now:
            continue
        if not now:
            return f"the {name} {before!r} is missing"
        if not before:
            return f"a {name} ({now!r}) came where there was none"
        return f"{name} is now {now!r}, not {before!r}"
    return None


def plan_ranges(size: int, parts: int) -> list[tuple[int, int]]:
    """Split ``[0, size)`` into inclusive byte ranges for parallel requests.

    Every range but the last has ``ceil(size / parts)`` bytes; the last has
    the rest. There are never empty ranges, so fewer than ``parts`` ranges
    come back when ``size`` is small.

    Parameters
    ----------
    size : int
        Length of the body in bytes, ``>= 0``.
    parts : int
        Wanted number of ranges, ``>= 1``.

    Returns
    -------
    list of (int, int)
        ``(start, end)`` pairs, inclusive, in order, covering every byte
        exactly once; ``[]`` for ``size == 0``.

    Raises
    ------
    ValueError
        When ``size`` is negative or ``parts`` is less than 1.

    Examples
    --------
    >>> plan_ranges(10, 3)
    [(0, 3), (4, 7), (8, 9)]
    >>> plan_ranges(2, 5)
    [(0, 0), (1, 1)]
    """
    if size < 0 or parts < 1:
        raise ValueError(f"cannot plan {parts!r} ranges over {size!r} bytes")
    if size == 0:
        return []
    chunk = -(-size // parts)
    return [(start, min(start + chunk, size) - 1) for start in range(0, size, chunk)]


def basic_auth_header(user: str, password: str) -> str:
    """Build the value of a Basic ``Authorization`` header (RFC 7617).

    Parameters
    ----------
    user : str
        The user name; it may not contain ``:``, which would move the split
        between name and password.
    password : str
        The password (any characters).

    Returns
    -------
    str
        ``"Basic "`` followed by the base64 of ``user:password`` in UTF-8.

    Raises
    ------
    ValueError
        If ``user`` contains ``:``.

    Examples
    --------
    >>> basic_auth_header("Aladdin", "open sesame")
    'Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=='
    """
    if ":" in user:
        # The password is not named: messages end up in logs.
        raise ValueError(f"a Basic auth user name cannot contain ':': {user!r}")
    token = base64.b64encode(f"{user}:{password}".encode())
    return "Basic " + token.decode("ascii")


def proxies_from_env(env: Mapping[str, str]) -> dict[str, str]:
    """Proxy URLs by scheme from ``*_proxy`` variables, as urllib reads them.

    Lower-case names win over upper-case ones; ``no_proxy`` is kept under
    ``"no"``. Under CGI (``REQUEST_METHOD`` set) ``HTTP_PROXY`` is ignored,
    since a client can set it through the ``Proxy:`` request header.

    Examples
    --------
    >>> proxies_from_env({"HTTPS_PROXY": "http://p:3128", "no_proxy": "localhost"})
    {'https': 'http://p:3128', 'no': 'localhost'}
    """
    proxies: dict[str, str] = {}
    for name, value in env.items():
        if value and name.lower().endswith("_proxy") and name.isupper():
            proxies[name[:-6].lower()] = value
    for name, value in env.items():
        if name.lower().endswith("_proxy") and not name.isupper():
            if value:
                proxies[name[:-6].lower()] = value
            else:
                proxies.pop(name[:-6].lower(), None)
    if "REQUEST_METHOD" in env:
        proxies.pop("http", None)
    return proxies


def bypasses_proxy(host: str, no_proxy: str | None) -> bool:
    """Whether ``host`` is exempt from proxying by a ``no_proxy`` list.

    ``*`` exempts every host; an entry matches the host itself and its
    subdomains (a leading ``.`` is optional), ports are ignored.

    Examples
    --------
    >>> bypasses_proxy("data.example.org", "localhost,.example.org")
    True
    >>> bypasses_proxy("example.com", "example.org")
    False
    """
    if not no_proxy:
        return False
    if no_proxy.strip() == "*":
        return True
    host = host.lower().strip("[]")
    for entry in no_proxy.split(","):
        name = _no_proxy_name(entry)
        if name and (host == name or host.endswith("." + name)):
            return True
    return False


def _no_proxy_name(entry: str) -> str:
    """A ``no_proxy`` entry as a bare host name: no leading dot, port or brackets."""
    name = entry.strip().lower().lstrip(".")
    if name.startswith("["):
        return name[1:].partition("]")[0]
    if name.count(":") == 1:
        name = name.partition(":")[0]
    return name


# -- passwords in URLs (SPEC §3.7, docs/security.md) ----------------------------------

#: What stands for a hidden password (or a user part with no ``:``, a token).
HIDDEN: Final = "***"
_URL_DELIMITERS: Final = "/?#"


def _authority_end(rest: str) -> int:
    """Where the authority of ``rest`` (a URL after ``://``) ends: at ``/``, ``?`` or ``#``."""
    end = len(rest)
    for mark in _URL_DELIMITERS:
        found = rest.find(mark, 0, end)
        if found >= 0:
            end = found
    return end


def _userinfo_length(rest: str) -> int:
    """Characters of ``rest`` (a URL after ``://``) that are ``user[:password]``; -1 for none.

    The authority ends at the first ``/``, ``?`` or ``#``, as every URL
    parser reads it, and a ``@`` in it ends the user information (the last
    one: a password may hold ``@``). But a password with an unescaped
    ``/``, ``?`` or ``#`` ends the authority too early for those parsers,
    and what is left cannot be told from a port and a path. So where a
    ``:`` comes before the first ``/`` and a ``@`` comes after the
    authority, the user information is taken to run to the last ``@``:
    that hides a little too much of a URL with a port and a ``@`` in its
    path (``https://archive.example:8443/obs@2020/`` shows as
    ``https://archive.example:***@2020/``), never too little.
    """
    end = _authority_end(rest)
    at = rest.rfind("@", 0, end)
    last = rest.rfind("@")
    if last >= end:
        slash = rest.find("/")
        colon = rest.find(":", 0, last if slash < 0 else min(slash, last))
        if colon >= 0:
            return last
    return at


def _hide_userinfo(userinfo: str) -> str:
    user, colon, _ = userinfo.partition(":")
    # A user part alone may be a token (https://TOKEN@host/): hidden whole.
    return f"{user}:{HIDDEN}" if colon else HIDDEN


def redact_url(url: str) -> str:
    """``url`` with its password (``user:password@``) replaced by ``***``.

    What every message, log record and progress line shows of a URL the
    caller gave: the URL as written, but for the secret.

    Parameters
    ----------
    url : str
        One URL (or any text starting with one).

    Returns
    -------
    str
        ``scheme://user:***@host/...``; a user part with no password (it may
        be a token) becomes ``***``; a URL without user information is
        returned as it is.

    Examples
    --------
    >>> redact_url("https://astro:s3cret@archive.example/a.fits")
    'https://astro:***@archive.example/a.fits'
    >>> redact_url("https://astro:pa#ss@archive.example/a.fits")
    'https://astro:***@archive.example/a.fits'
    >>> redact_url("https://archive.example/obs@2020/a.fits")
    'https://archive.example/obs@2020/a.fits'
    """
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    length = _userinfo_length(rest)
    if length < 0:
        return url
    return f"{scheme}{sep}{_hide_userinfo(rest[:length])}{rest[length:]}"


def redact(text: str) -> str:
    """``text`` with the password of every URL in it hidden (see :func:`redact_url`).

    The one filter at every boundary where text leaves the library:
    exceptions raised or returned, warnings, log records, ``verbose``
    lines and the command's output. A URL in the text runs from its
    ``scheme://`` to the next white space or quote.

    Examples
    --------
    >>> redact("HTTP 404 for 'http://u:pw@h/x' (after http://u:pw@h/y)")
    "HTTP 404 for 'http://u:***@h/x' (after http://u:***@h/y)"
    """
    if "@" not in text or "://" not in text:
        return text  # the usual case, at the cost of two scans
    pieces = []
    pos = 0
    while True:
        found = text.find("://", pos)
        if found < 0:
            break
        start = found
        while start > pos and (text[start - 1].isalnum() or text[start - 1] in "+.-"):
            start -= 1
        end = _url_end(text, start, found + 3)
        pieces.append(text[pos:start])
        pieces.append(redact_url(text[start:end]))
        pos = end
    pieces.append(text[pos:])
    return "".join(pieces)


def _url_end(text: str, start: int, after_scheme: int) -> int:
    """Where the URL that starts at ``start`` in ``text`` ends.

    A URL in quotes (a ``repr`` in a message) runs to the closing quote, so
    that a password with a space in it is hidden whole; any other, to the
    next white space or quote.
    """
    quote = text[start - 1] if start else ""
    if quote in ("'", '"'):
        closing = text.find(quote, after_scheme)
        if closing >= 0:
            return closing
    end = after_scheme
    while end < len(text) and not text[end].isspace() and text[end] not in "'\"<>`":
        end += 1
    return end


def split_userinfo(url: str) -> tuple[str, tuple[str, str] | None]:
    """``url`` without ``user:password@``, and that pair (percent-decoded).

    As curl and requests read it: the user information is what comes
    before the last ``@`` of the authority. A password with an unescaped
    ``/``, ``?`` or ``#`` is not read as one (no URL parser does); the URL
    is returned as it is, for :func:`check_url` to refuse, and every
    message shows it through :func:`redact_url`.

    Examples
    --------
    >>> split_userinfo("https://astro:s%40cret@archive.example/a.fits")
    ('https://archive.example/a.fits', ('astro', 's@cret'))
    >>> split_userinfo("https://archive.example/a.fits")
    ('https://archive.example/a.fits', None)
    """
    scheme, sep, rest = url.partition("://")
    end = _authority_end(rest)
    at = rest.rfind("@", 0, end)
    if not sep or at < 0:
        return url, None
    from urllib.parse import unquote  # noqa: PLC0415 - see the imports above

    user, _, password = rest[:at].partition(":")
    return f"{scheme}{sep}{rest[at + 1 :]}", (unquote(user), unquote(password))

"""Local file names from URLs, ``Content-Disposition`` headers and S3 keys.

SPEC §2.1 says how a name is derived when the caller gives no
``local_filepath``; SPEC §3.5 says that no name taken from the network may
place a file outside the target folder. Every function here returns either a
single, safe path component (or a path proven to stay inside a folder) or
``None``/``ValueError``: the server chooses bytes, never locations.

Pure functions: no file system access, no environment.
"""

from __future__ import annotations

import os
import re

from ._httputil import split_plain

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

__all__ = [
    "MAX_NAME_BYTES",
    "filename_from_content_disposition",
    "filename_from_s3_key",
    "filename_from_url",
    "safe_join",
    "sanitize_filename",
]

# 255 bytes is the usual limit for one component; the download also creates
# "<name>.part", "<name>.part.json" and "<name>.lock" beside the target, and
# eCryptfs home folders allow only 143. 200 leaves room for all of them.
MAX_NAME_BYTES: Final = 200

# Control characters (C0, DEL, C1), lone surrogates (unencodable on every
# file system), bidi overrides (a name that displays unlike what it is) and
# the characters Windows forbids: ':' there opens an NTFS alternate data
# stream. Replaced on every platform so a URL gives the same name everywhere.
#
# The patterns of this module are strings, compiled by re (and kept in its
# cache) at their first use: a usual name never needs them, and compiling
# this class of characters alone costs a process 4.5 M instructions.
_UNSAFE_CHARS: Final = '[\x00-\x1f\x7f-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069<>:"|?*]'
_SEPARATORS: Final = r"[/\\]"
#: What the two patterns above can touch in printable ASCII.
_SPECIAL_ASCII: Final = frozenset('<>:"|?*/\\')
# Windows opens a device for these names, with any extension, in any folder.
_DEVICE_NAMES: Final = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"{dev}{n}" for dev in ("COM", "LPT") for n in "123456789\u00b9\u00b2\u00b3"]
)
_WINDOWS: Final = os.name == "nt"
# A longer "extension" is more likely part of the name than a file type.
_MAX_EXTENSION_BYTES: Final = 16


def sanitize_filename(name: str) -> str | None:
    r"""Make one safe file name out of an untrusted name.

    Takes the base name (after the last ``/`` or ``\``); replaces control
    characters, NUL, bidi overrides and ``<>:"|?*`` with ``_``; strips
    leading whitespace and trailing whitespace and dots; prefixes ``_`` to a
    name that starts with a dot (so a server cannot write ``.bashrc``) or is
    a Windows device name (``CON``, ``nul.txt``, ``COM1``...); shortens a
    name longer than :data:`MAX_NAME_BYTES` (UTF-8), keeping its extension.

    Parameters
    ----------
    name : str
        A name from a URL, a header or an S3 key.

    Returns
    -------
    str or None
        A single path component, never ``.``, ``..``, empty, or containing a
        separator; ``None`` when nothing usable is left.

    Examples
    --------
    >>> sanitize_filename("../../etc/passwd")
    'passwd'
    >>> sanitize_filename("image.fits. ")
    'image.fits'
    >>> sanitize_filename("nul.txt")
    '_nul.txt'
    >>> sanitize_filename("..") is None
    True
    """
    if name.isascii() and name.isprintable() and _SPECIAL_ASCII.isdisjoint(name):
        base = name  # nothing for the patterns to do: the usual name
    else:
        base = re.split(_SEPARATORS, name)[-1]
        base = re.sub(_UNSAFE_CHARS, "_", base)
    base = _strip_trailing_junk(base.lstrip())
    if not base:
        return None
    if base.startswith(".") or _is_device_name(base):
        base = "_" + base
    return _shorten(base)


def _strip_trailing_junk(name: str) -> str:
    # Windows drops trailing dots and spaces, so "a.fits. " would not be the
    # name asked for. A loop, not the regex "[\s.]+$", which is quadratic on
    # a long run of dots and spaces followed by something else.
    end = len(name)
    while end and (name[end - 1] == "." or name[end - 1].isspace()):
        end -= 1
    return name[:end]


def _is_device_name(name: str) -> bool:
    # Windows ignores the extension and trailing spaces before it.
    return name.partition(".")[0].rstrip(" ").upper() in _DEVICE_NAMES


def _shorten(name: str) -> str:
    encoded = name.encode("utf-8")
    if len(encoded) <= MAX_NAME_BYTES:
        return name
    stem, dot, extension = name.rpartition(".")
    suffix = (
        dot + extension
        if stem and 0 < len(extension.encode("utf-8")) <= _MAX_EXTENSION_BYTES
        else ""
    )
    if not suffix:
        stem = name
    budget = MAX_NAME_BYTES - len(suffix.encode("utf-8"))
    # errors="ignore" drops a character cut in half at the byte limit.
    head = stem.encode("utf-8")[:budget].decode("utf-8", "ignore")
    return _strip_trailing_junk(head) + suffix


def _basename(value: str) -> str:
    return str(re.split(_SEPARATORS, value)[-1])


def filename_from_url(url: str) -> str | None:
    """Derive a local file name from a URL, as pyvo does, but safely.

    The last part of the path, percent-decoded. When it has no ``.``, the
    first query value whose base name has one (``?file=/location/myfile.pdf``
    gives ``myfile.pdf``); failing that, the last path part as it is. The
    result is passed through :func:`sanitize_filename`.

    Parameters
    ----------
    url : str
        An http(s) URL (any URL that ``urllib.parse.urlsplit`` accepts).

    Returns
    -------
    str or None
        A safe file name, or ``None`` when the URL names none (for example
        it ends with ``/`` and has no usable query value).

    Raises
    ------
    ValueError
        The URL cannot be parsed at all (for example an unclosed ``[``).

    Examples
    --------
    >>> filename_from_url("https://example.com/files/my%20file.fits?user=1")
    'my file.fits'
    >>> filename_from_url("http://example.com/service?file=/location/myfile.pdf&size=large")
    'myfile.pdf'
    >>> filename_from_url("https://example.com/files/") is None
    True
    """
    plain = split_plain(url)
    if plain is not None and not plain[3] and "%" not in plain[2]:
        # No query and no escapes: the name is the path's last part.
        last = plain[2].rpartition("/")[2]
        return sanitize_filename(last) if last else None
    from urllib.parse import parse_qsl, unquote, urlsplit  # noqa: PLC0415

    try:
        parts = urlsplit(url)
    except ValueError as e:
        raise ValueError(f"malformed URL {url!r}: {e}") from e
    last = unquote(parts.path.rpartition("/")[2])
    candidates = [last] if "." in last else []
    # parse_qsl percent-decodes (and turns '+' into a space) exactly once.
    for _, value in parse_qsl(parts.query):
        if "." in _basename(value):
            candidates.append(value)
    candidates.append(last)
    for candidate in candidates:
        name = sanitize_filename(candidate)
        if name is not None:
            return name
    return None


def filename_from_s3_key(key: str) -> str | None:
    """Derive a local file name from an S3 object key.

    Parameters
    ----------
    key : str
        The object key (everything after the bucket, ``?`` and ``#``
        included).

    Returns
    -------
    str or None
        The last ``/``-separated part of the key, sanitised; ``None`` when
        the key is empty or ends with ``/`` (a "folder").

    Examples
    --------
    >>> filename_from_s3_key("FTP/chandra/data/byobsid/2/3052/primary/acisf03052N004_cntr_img2.jpg")
    'acisf03052N004_cntr_img2.jpg'
    >>> filename_from_s3_key("what?is#this.fits")
    'what_is#this.fits'
    >>> filename_from_s3_key("prefix/") is None
    True
    """
    if not key or key.endswith("/"):
        return None
    return sanitize_filename(key.rpartition("/")[2])


# Inline flags ((?xs): VERBOSE, DOTALL): compiled at the first header parsed.
_PARAMETER: Final = r"""(?xs)\s*(?P<name>[^\s=;]*)\s*
    (?:=\s*(?P<value>"(?:[^"\\]|\\.)*"|[^;]*))?
    [^;]*(?:;|\Z)"""
_QUOTED_STRING: Final = r'(?s)"((?:[^"\\]|\\.)*)"'
_QUOTED_PAIR: Final = r"(?s)\\(.)"
_EXTENDED_VALUE: Final = r"(?s)(?P<charset>[^']*)'[^']*'(?P<text>.*)\Z"
_EXTENDED_CHARSETS: Final = frozenset(["utf-8", "iso-8859-1", "latin-1", "us-ascii"])


def _parameters(value: str) -> list[tuple[str, str]]:
    """Split a header value into ``(lower-case name, raw value)`` pairs."""
    pairs: list[tuple[str, str]] = []
    pattern = re.compile(_PARAMETER)  # from re's cache after the first header
    pos = 0
    while pos < len(value):
        match = pattern.match(value, pos)
        # The pattern can only match empty at the very end of the string.
        if match is None or match.end() == pos:
            break
        pos = match.end()
        if match.group("value") is not None and match.group("name"):
            pairs.append((match.group("name").lower(), match.group("value").strip()))
    return pairs


def _unquote_header(raw: str) -> str:
    match = re.fullmatch(_QUOTED_STRING, raw)
    if match is not None:
        return str(re.sub(_QUOTED_PAIR, r"\1", match.group(1)))
    return raw.strip('"')


def _decode_extended(raw: str) -> str | None:
    """Decode an RFC 5987 ``charset'language'percent-encoded`` value."""
    match = re.match(_EXTENDED_VALUE, _unquote_header(raw))
    if match is None:
        return None
    charset = match.group("charset").strip().lower()
    if charset not in _EXTENDED_CHARSETS:
        return None
    from urllib.parse import unquote  # noqa: PLC0415

    try:
        return unquote(match.group("text"), encoding=charset, errors="strict")
    except UnicodeDecodeError:
        return None


def _repair_mojibake(text: str) -> str:
    # Servers often put raw UTF-8 into filename=; http.client hands it over
    # decoded as Latin-1. Undo that when the bytes are valid UTF-8.
    if text.isascii() or max(text) > "\xff":
        return text
    try:
        return text.encode("latin-1").decode("utf-8")
    except UnicodeDecodeError:
        return text


def filename_from_content_disposition(value: str | None) -> str | None:
    """Take the file name out of a ``Content-Disposition`` header value.

    ``filename*=`` (RFC 6266 / RFC 5987, UTF-8 or ISO-8859-1) is preferred
    over ``filename=``, which may be a token or a quoted string with
    backslash escapes. Parameter names are case-insensitive; the first of a
    repeated parameter counts. The result is the sanitised base name.

    Parameters
    ----------
    value : str or None
        The header value, for example ``attachment; filename="a b.fits"``.

    Returns
    -------
    str or None
        A safe file name, or ``None`` when the header names none.

    Examples
    --------
    >>> filename_from_content_disposition('attachment; filename="a b.fits"')
    'a b.fits'
    >>> filename_from_content_disposition(
    ...     "attachment; filename=euro.fits; filename*=UTF-8''%E2%82%AC.fits")
    '€.fits'
    >>> filename_from_content_disposition('attachment; filename="../../.ssh/id_rsa"')
    'id_rsa'
    """
    if not value:
        return None
    found: dict[str, str] = {}
    for name, raw in _parameters(value):
        found.setdefault(name, raw)
    names: list[str | None] = []
    if "filename*" in found:
        names.append(_decode_extended(found["filename*"]))
    if "filename" in found:
        names.append(_repair_mojibake(_unquote_header(found["filename"])))
    for candidate in names:
        if candidate:
            safe = sanitize_filename(candidate)
            if safe is not None:
                return safe
    return None


def _component_problem(part: str, windows: bool = _WINDOWS) -> str | None:
    """Why ``part`` cannot be one folder or file name under the target, or None."""
    problems = [
        (part == "..", "a '..' component"),
        (os.sep in part or bool(os.altsep and os.altsep in part), "a separator in a component"),
        (os.path.isabs(part) or bool(os.path.splitdrive(part)[0]), "a drive or absolute part"),
    ]
    if windows:
        # Win32 drops trailing dots and spaces ("..." and ".. " mean ".."),
        # ':' opens an alternate data stream and device names open devices.
        problems += [
            (not part.rstrip(". "), "a component made only of dots and spaces"),
            ("\\" in part or ":" in part, "'\\' or ':' in a component"),
            (_is_device_name(part), "a Windows device name"),
        ]
    return next((reason for found, reason in problems if found), None)


def safe_join(dest_dir: str | os.PathLike[str], relative: str) -> str:
    """Join a ``/``-separated relative path under ``dest_dir``, refusing escapes.

    Used for the layout of a recursive S3 download (the key after the
    prefix). Empty and ``.`` components are dropped (``a//b`` and ``a/./b``
    are ``a/b``). The check is lexical: a symbolic link already inside
    ``dest_dir`` is followed like any folder.

    Parameters
    ----------
    dest_dir : str or os.PathLike
        The target folder (relative or absolute).
    relative : str
        A relative path with ``/`` separators.

    Returns
    -------
    str
        ``os.path.join(dest_dir, *parts)``, inside ``dest_dir``.

    Raises
    ------
    ValueError
        Naming ``relative``, when it is absolute, contains NUL, a ``..``
        component, a component that is a path of its own (a backslash or a
        drive on Windows), or names nothing.

    Examples
    --------
    >>> safe_join("out", "a//b/./c.fits") == os.path.join("out", "a", "b", "c.fits")
    True
    >>> safe_join("out", "a/../../etc/passwd")
    Traceback (most recent call last):
    ...
    ValueError: refusing path 'a/../../etc/passwd': it contains a '..' component
    """
    dest = os.fspath(dest_dir)
    parts = [part for part in relative.split("/") if part not in ("", ".")]
    problem = _relative_problem(relative, parts)
    if problem is not None:
        raise ValueError(f"refusing path {relative!r}: {problem}")
    path = os.path.join(dest, *parts)
    if not _is_inside(dest, path):  # pragma: no cover - guaranteed by the checks above
        raise ValueError(f"refusing path {relative!r}: it leaves {dest!r}")
    return path


def _relative_problem(relative: str, parts: list[str]) -> str | None:
    if "\x00" in relative:
        return "it contains a NUL character"
    if relative.startswith("/") or os.path.isabs(relative):
        return "it is absolute"
    for part in parts:
        reason = _component_problem(part)
        if reason is not None:
            return f"it contains {reason}"
    if not parts:
        return "it names no file"
    return None


def _is_inside(dest: str, path: str) -> bool:
    """Lexical proof that ``path`` is strictly below ``dest``."""
    base = os.path.normpath(dest)
    full = os.path.normpath(path)
    if full == base:
        return False
    if base == os.curdir:
        return not (
            os.path.isabs(full)
            or os.path.splitdrive(full)[0]
            or full == os.pardir
            or full.startswith(os.pardir + os.sep)
        )
    prefix = base if base.endswith(os.sep) else base + os.sep
    return full.startswith(prefix)

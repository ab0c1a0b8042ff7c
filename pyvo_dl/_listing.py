"""Directory listing pages, read as the web servers archives run write them (SPEC §2.3).

``recursive=True`` on an ``http(s)://…/`` URL walks the server's listing
pages: Apache's ``mod_autoindex`` (HEASARC's FTP area, with
``FancyIndexing``), nginx's ``autoindex``, lighttpd's ``mod_dirlisting``
and Python's ``http.server`` all write one ``<a href>`` per entry, a
folder's ending in ``/``. The links are taken with the standard library's
``html.parser``, and only those that name something strictly under the
page (same origin, path prefix, no ``.``/``..`` segment, no query: never
the parent, another host, or the sort links ``?C=N;O=D``) are entries.

Also the filters that trees and S3 prefixes share: ``include=`` /
``exclude=`` globs matched against the path relative to the starting
folder or prefix, and ``max_depth``.

Pure functions: no IO (the pages are passed in).
"""

from __future__ import annotations

import collections
from html.parser import HTMLParser
from urllib.parse import unquote, urljoin, urlsplit

from ._httputil import same_origin

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final, Iterable

__all__ = [
    "MAX_DEPTH",
    "Entry",
    "check_filters",
    "depth_of",
    "is_listing_type",
    "keep_path",
    "listing_entries",
    "listing_links",
]

#: How deep a walk goes when ``max_depth`` is not given: deeper than any
#: archive's layout, and the end of a loop of symbolic links (a folder
#: linking to itself is served as an endless chain of folders).
MAX_DEPTH: Final = 32

#: One entry of a listing page: its absolute URL, its path below the
#: starting folder (``/``-separated, percent-decoded), whether it is a
#: folder, and the reason it cannot be a local name (``None`` when it can).
Entry = collections.namedtuple("Entry", ["url", "relative", "is_folder", "problem"])

_LISTING_TYPES: Final = ("text/html", "application/xhtml+xml")


class _Links(HTMLParser):
    """Collects the ``href`` of every ``<a>``, in document order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            for name, value in attrs:
                if name == "href" and value is not None:
                    self.hrefs.append(value)
                    break


def listing_links(page: str) -> list[str]:
    """The ``href`` of every link of an HTML page, unescaped (``&amp;`` is ``&``).

    Examples
    --------
    >>> listing_links('<a href="?C=N;O=D">Name</a> <A HREF="a&amp;b.fits">a&amp;b</A>')
    ['?C=N;O=D', 'a&b.fits']
    """
    parser = _Links()
    parser.feed(page)
    parser.close()
    return parser.hrefs


def is_listing_type(content_type: str | None) -> bool:
    """Whether a ``Content-Type`` is one a listing page comes as (HTML).

    Examples
    --------
    >>> is_listing_type("text/html;charset=UTF-8"), is_listing_type("application/gzip")
    (True, False)
    """
    media = (content_type or "").partition(";")[0].strip().lower()
    return media in _LISTING_TYPES


def _decoded_segments(path: str) -> list[str] | None:
    """The ``/``-separated parts of a URL path, percent-decoded; None if not UTF-8."""
    try:
        return [unquote(part, errors="strict") for part in path.split("/")]
    except UnicodeDecodeError:
        return None


def listing_entries(page_url: str, root_url: str, hrefs: Iterable[str]) -> list[Any]:
    """The entries of a listing page: its links to what is strictly under it.

    Parameters
    ----------
    page_url : str
        The URL the page came from (after redirects): relative links are
        resolved against it.
    root_url : str
        The folder the walk started at (ending in ``/``): each entry's
        ``relative`` path is below it.
    hrefs : iterable of str
        The page's links (:func:`listing_links`).

    Returns
    -------
    list of Entry
        Each once, in page order. A link is left out unless it resolves to
        the page's origin, has no query, and its path is strictly under the
        page's and the root's with no empty, ``.`` or ``..`` segment (after
        percent-decoding: ``%2e%2e`` is ``..``). An entry whose name cannot
        be a local file name (not UTF-8, a ``/`` or NUL in it) keeps its
        ``problem``, so that it is reported rather than skipped.

    Examples
    --------
    >>> base = "https://h/FTP/obs/"
    >>> hrefs = ["?C=N;O=D", "/FTP/", "../", "a%20b.fits", "sub/", "http://other/x.fits"]
    >>> [tuple(e[1:3]) for e in listing_entries(base, base, hrefs)]
    [('a b.fits', False), ('sub', True)]
    """
    page, root = urlsplit(page_url), urlsplit(root_url)
    page_parts = _decoded_segments(page.path.rstrip("/"))
    root_parts = _decoded_segments(root.path.rstrip("/"))
    if page_parts is None or root_parts is None:
        return []
    entries: list[Any] = []
    seen: set[str] = set()
    for href in hrefs:
        entry = _entry(href, page_url, root_url, page_parts, root_parts)
        if entry is not None and entry.relative not in seen:
            seen.add(entry.relative)
            entries.append(entry)
    return entries


def _entry(
    href: str, page_url: str, root_url: str, page_parts: list[str], root_parts: list[str]
) -> Any:
    """The :data:`Entry` that ``href`` names, or None when it is not one."""
    href = href.strip()
    if not href or href.startswith(("#", "?")):
        return None
    url = urljoin(page_url, href).partition("#")[0]
    target = urlsplit(url)
    if target.query or not same_origin(url, root_url):
        return None
    is_folder = target.path.endswith("/")
    raw = target.path.rstrip("/").split("/")
    parts = _decoded_segments(target.path.rstrip("/"))
    if parts is None:
        below = raw[len(page_parts) :]
        name = "/".join(below)
        return Entry(url, name, is_folder, f"the name {name!r} is not UTF-8 once decoded")
    inside = len(parts) > len(page_parts) and parts[: len(page_parts)] == page_parts
    if not inside or parts[: len(root_parts)] != root_parts:
        return None
    below = parts[len(root_parts) :]
    if any(part in ("", ".", "..") for part in parts[len(page_parts) :]):
        return None
    relative = "/".join(below)
    bad = [part for part in below if "/" in part or "\\" in part or "\0" in part]
    problem = f"the name {bad[0]!r} holds a separator or NUL" if bad else None
    return Entry(url, relative, is_folder, problem)


# -- filters -------------------------------------------------------------------------


def check_filters(include: Any, exclude: Any, max_depth: Any) -> tuple[Any, Any, int | None]:
    """Check ``include=``, ``exclude=`` and ``max_depth=``; the patterns as tuples.

    Raises
    ------
    ValueError
        Naming the argument, for a pattern that is not a string (one, or a
        list of them) or a ``max_depth`` that is not a whole number >= 0.

    Examples
    --------
    >>> check_filters("*.fits", None, 2)
    (('*.fits',), (), 2)
    """
    if max_depth is not None and (
        isinstance(max_depth, bool) or not isinstance(max_depth, int) or max_depth < 0
    ):
        raise ValueError(f"max_depth must be a whole number >= 0 or None, not {max_depth!r}")
    return _patterns(include, "include"), _patterns(exclude, "exclude"), max_depth


def _patterns(value: Any, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    patterns = (value,) if isinstance(value, str) else value
    try:
        patterns = tuple(patterns)
    except TypeError:
        patterns = (value,)
    bad = [p for p in patterns if not isinstance(p, str) or not p]
    if bad:
        raise ValueError(
            f"{name} must be a glob pattern (a string like '*.fits') or a list of them, "
            f"not {value!r}"
        )
    return patterns


def keep_path(relative: str, include: tuple[str, ...], exclude: tuple[str, ...]) -> bool:
    """Whether a file at ``relative`` (below the starting folder or prefix) is kept.

    Kept when it matches one of ``include`` (or there are none) and none of
    ``exclude``. Patterns are ``fnmatch`` globs matched, case-sensitively,
    against the whole relative path, where ``*`` also matches ``/`` (as the
    AWS command line's ``--include``/``--exclude``): ``*.fits`` keeps FITS
    files at any depth, ``primary/*`` everything under ``primary/``.

    Examples
    --------
    >>> keep_path("primary/evt2.fits.gz", ("*.fits.gz",), ("*evt1*",))
    True
    >>> keep_path("secondary/evt1.fits.gz", ("*.fits.gz",), ("secondary/*",))
    False
    """
    from fnmatch import fnmatchcase  # noqa: PLC0415 - only with filters

    if include and not any(fnmatchcase(relative, p) for p in include):
        return False
    return not any(fnmatchcase(relative, p) for p in exclude)


def depth_of(relative: str) -> int:
    """How many folders below the starting one ``relative`` is in: 0 for its own files.

    Examples
    --------
    >>> depth_of("x.fits"), depth_of("a/b/x.fits")
    (0, 2)
    """
    return relative.count("/")

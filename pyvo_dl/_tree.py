"""An HTTP directory tree, walked through its listing pages, as ``wget -r -np`` would.

``walk(root_url, fetch_page, ...)`` reads the listing page of the starting
folder (ending in ``/``), descends into the folders it links to, and
returns one ``(file URL, local path or error)`` pair per file, keeping the
tree's layout under the target folder. The pairs become items of one
``download_many`` batch (shared connections, one progress display, one
shard of the whole list): the walk only lists, the engine downloads.

Pages come through ``fetch_page``, the engine's in-memory body path (its
retries, redirects, credentials and TLS settings); a page that is not HTML
is an error naming its URL. A folder the walk cannot read becomes one item
whose result is that error; the others go on.
"""

from __future__ import annotations

import os

from . import _listing, _names
from ._errors import DownloadError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

    from ._exchange import Document

__all__ = ["MAX_PAGES", "walk"]

#: Listing pages one walk reads at most: a tree of symbolic links that
#: point back up (each folder links to itself twice) doubles at every level.
MAX_PAGES = 10_000


def walk(
    root_url: str,
    fetch_page: Callable[[str], Document],
    *,
    folder: str = "",
    include: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
    max_depth: int | None = None,
) -> list[tuple[str, Any]]:
    """Every file under ``root_url``: ``(url, local path or the error for it)``.

    Parameters
    ----------
    root_url : str
        The starting folder, ending in ``/``.
    fetch_page : callable
        GETs one listing page into memory (``_exchange.fetch_document``
        with the call's options).
    folder : str
        Where the tree's layout goes (a relative path stays relative: the
        batch puts it under its ``dest_dir``).
    include, exclude : tuple of str
        Globs on the path below ``root_url`` (see ``_listing.keep_path``).
    max_depth : int, optional
        Folders below the starting one to descend into; 0 lists only its
        own files. None: up to :data:`~._listing.MAX_DEPTH`, where a deeper
        folder becomes an error item (a loop of symbolic links, probably).
    """
    found: list[tuple[str, Any]] = []
    pending: list[tuple[str, int]] = [(root_url, 0)]
    root = root_url
    pages = 0
    while pending:
        url, depth = pending.pop()
        pages += 1
        if pages > MAX_PAGES:
            found.append((url, DownloadError(_too_many_pages(root_url))))
            break
        try:
            document = _listing_page(url, fetch_page)
        except (DownloadError, ValueError) as exc:
            found.append((url, exc))
            continue
        if url == root_url:
            root = document.url  # a redirect of the start moves the root (http -> https)
        entries = _entries(document, root)
        folders = [e for e in entries if e.is_folder and e.problem is None]
        for entry in reversed(folders):  # a stack: the first folder is walked first
            _descend(entry, depth, max_depth, pending, found)
        for entry in entries:
            if not entry.is_folder or entry.problem is not None:
                _add_file(entry, folder, include, exclude, found)
    return found


def _listing_page(url: str, fetch_page: Callable[[str], Document]) -> Document:
    document = fetch_page(url)
    content_type = document.headers.get("Content-Type")
    if not _listing.is_listing_type(content_type):
        raise DownloadError(
            f"{url} is not a directory listing: it came as {content_type or 'no type'!r}, "
            "not text/html; recursive=True walks the listing pages of a web server "
            "(Apache, nginx, lighttpd); pass the folder's URL, ending in '/'"
        )
    return document


def _entries(document: Document, root: str) -> list[Any]:
    charset = _charset(document.headers.get("Content-Type"))
    try:
        text = document.body.decode(charset, "replace")
    except LookupError:  # a charset Python does not know
        text = document.body.decode("utf-8", "replace")
    return list(_listing.listing_entries(document.url, root, _listing.listing_links(text)))


def _charset(content_type: str | None) -> str:
    for parameter in (content_type or "").split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip():
            return value.strip().strip('"')
    return "utf-8"


def _descend(
    entry: Any,
    depth: int,
    max_depth: int | None,
    pending: list[tuple[str, int]],
    found: list[tuple[str, Any]],
) -> None:
    if max_depth is not None and depth >= max_depth:
        return  # the caller's bound: not an error
    if max_depth is None and depth >= _listing.MAX_DEPTH:
        found.append((entry.url, DownloadError(_too_deep(entry.url))))
        return
    pending.append((entry.url, depth + 1))


def _add_file(
    entry: Any,
    folder: str,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    found: list[tuple[str, Any]],
) -> None:
    if entry.problem is not None:
        found.append((entry.url, ValueError(f"refusing {entry.url}: {entry.problem}")))
        return
    if not _listing.keep_path(entry.relative, include, exclude):
        return
    try:
        local: Any = _names.safe_join(folder or ".", entry.relative)
        if not folder:
            local = os.path.normpath(local)  # "a/b.fits", not "./a/b.fits"
    except ValueError as exc:
        local = exc
    found.append((entry.url, local))


def _too_deep(url: str) -> str:
    return (
        f"{url} is more than {_listing.MAX_DEPTH} folders below the start; a loop of "
        "symbolic links on the server, probably; pass max_depth= to go deeper on purpose"
    )


def _too_many_pages(root_url: str) -> str:
    return (
        f"the walk of {root_url} read {MAX_PAGES} listing pages and stopped; a loop of "
        "symbolic links on the server, probably; bound it with max_depth="
    )

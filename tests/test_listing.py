"""Listing pages (``_listing``, row 1): which links are entries, and the filters.

Tables of hrefs as the four servers write them and as hostile pages might,
resolved against a page; the pages of the real servers are read in
tests/test_trees.py.
"""

from __future__ import annotations

import pytest

from pyvo_dl import _listing

PAGE = "https://archive.example/FTP/obs/3052/"


@pytest.mark.parametrize(
    ("href", "relative", "is_folder"),
    [
        ("a%20b.fits", "a b.fits", False),
        ("c+d.fits", "c+d.fits", False),  # a '+' in a path is a plus, not a space
        ("c%2Bd.fits", "c+d.fits", False),
        ("100%25.fits", "100%.fits", False),
        ("x%23y.fits", "x#y.fits", False),
        ("q%3fz.fits", "q?z.fits", False),
        ("%C3%BCn%C3%AF%E2%82%AC.fits", "\u00fcn\u00ef\u20ac.fits", False),
        ("primary/", "primary", True),
        ("sub%20dir/", "sub dir", True),
        ("/FTP/obs/3052/abs.fits", "abs.fits", False),  # an absolute path under the page
        ("https://archive.example/FTP/obs/3052/full.fits", "full.fits", False),
        ("HTTPS://ARCHIVE.EXAMPLE:443/FTP/obs/3052/case.fits", "case.fits", False),
        ("./dot.fits", "dot.fits", False),
        ("frag.fits#top", "frag.fits", False),
    ],
)
def test_entries(href: str, relative: str, is_folder: bool) -> None:
    (entry,) = _listing.listing_entries(PAGE, PAGE, [href])
    assert (entry.relative, entry.is_folder, entry.problem) == (relative, is_folder, None)


@pytest.mark.parametrize(
    "href",
    [
        "../",  # nginx, lighttpd: the parent
        "/FTP/obs/",  # Apache: "Parent Directory"
        "?C=N;O=D",  # Apache's sort links
        "?C=M;O=A",
        "#top",
        "",
        "./",
        "http://other.example/FTP/obs/3052/x.fits",  # another host
        "//other.example/x.fits",
        "http://archive.example/FTP/obs/3052/x.fits",  # another scheme: another origin
        "https://archive.example:8443/FTP/obs/3052/x.fits",  # another port
        "../3052-old/trap.fits",
        "/FTP/obs/3052-old/trap.fits",  # a sibling whose name starts like the page's
        "%2e%2e/outside.fits",  # '..' once decoded
        "sub/%2E%2E/%2e%2e/outside.fits",
        "primary/../../outside.fits",
        "x.fits?raw=1",
        "mailto:help@example.org",
        "javascript:alert(1)",
        "ftp://archive.example/FTP/obs/3052/x.fits",
    ],
)
def test_links_that_are_not_entries(href: str) -> None:
    assert _listing.listing_entries(PAGE, PAGE, [href]) == []


def test_names_that_cannot_be_local_names_keep_their_problem() -> None:
    slash, latin1 = _listing.listing_entries(PAGE, PAGE, ["a%2Fb.fits", "caf%E9.fits"])
    assert slash.problem == "the name 'a/b.fits' holds a separator or NUL"
    assert latin1.problem == "the name 'caf%E9.fits' is not UTF-8 once decoded"


def test_entries_of_a_sub_page_are_relative_to_the_root() -> None:
    page = PAGE + "primary/"
    entries = _listing.listing_entries(page, PAGE, ["../", "evt2.fits.gz", "deeper/"])
    assert [(e.relative, e.is_folder) for e in entries] == [
        ("primary/evt2.fits.gz", False),
        ("primary/deeper", True),
    ]


def test_each_entry_once_in_page_order() -> None:
    hrefs = ["b.fits", "a.fits", "b.fits", "./a.fits"]
    assert [e.relative for e in _listing.listing_entries(PAGE, PAGE, hrefs)] == ["b.fits", "a.fits"]


def test_links_of_real_listing_pages() -> None:
    apache = (
        '<tr><td><a href="?C=N;O=D">Name</a></td></tr>'
        '<tr><td><a href="/FTP/">Parent Directory</a></td></tr>'
        '<tr><td><a href="amp&amp;lt.fits">amp&amp;lt.fits</a></td></tr>'
        '<tr><td><a href="quote\'%22.fits">q</a></td></tr>'
    )
    assert _listing.listing_links(apache) == ["?C=N;O=D", "/FTP/", "amp&lt.fits", "quote'%22.fits"]


@pytest.mark.parametrize(
    ("relative", "include", "exclude", "kept"),
    [
        ("a/b/x.fits", (), (), True),
        ("a/b/x.fits", ("*.fits",), (), True),  # '*' crosses '/'
        ("a/b/x.fits.gz", ("*.fits",), (), False),
        ("a/b/x.fits", ("a/*",), ("*/b/*",), False),
        ("x.FITS", ("*.fits",), (), False),  # case-sensitive
        ("x.fits", ("*.gz", "*.fits"), (), True),
        ("primary/evt2.fits", (), ("secondary/*",), True),
    ],
)
def test_keep_path(
    relative: str, include: tuple[str, ...], exclude: tuple[str, ...], kept: bool
) -> None:
    assert _listing.keep_path(relative, include, exclude) is kept


@pytest.mark.parametrize(
    ("content_type", "html"),
    [
        ("text/html", True),
        ("TEXT/HTML; charset=ISO-8859-1", True),
        ("application/xhtml+xml", True),
        ("text/plain", False),
        (None, False),
        ("application/octet-stream", False),
    ],
)
def test_is_listing_type(content_type: str | None, html: bool) -> None:
    assert _listing.is_listing_type(content_type) is html

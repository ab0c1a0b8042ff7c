"""HTTP directory trees like ``wget -r -np``, against the real servers archives run (SPEC §2.3).

nginx (``autoindex``), Apache httpd (``mod_autoindex`` with FancyIndexing
and a header file, as HEASARC's FTP area) and lighttpd (``mod_dirlisting``
with a raw HTML header) from their Debian packages, and Python's
``http.server``, each serving the same tree: sub-folders, awkward names
(spaces, ``%``, ``+``, unicode, ``#``, ``?``, ``&``, quotes), symbolic links
to a file and to a folder, and beside the tree what must never be fetched
(its parent's listing, a sibling, a folder whose name starts like the
tree's). The header pages add links to another host, to ``../``, to
``%2e%2e/`` and to sort orders. Each test checks the download against the
tree byte for byte, the server's access log against the tree's URLs, and
the disk for anything written outside the target.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.parse

import pytest

import pyvo_dl
from pyvo_dl._cli import main
from servers import FaultServer
from webservers import PACKAGES, PythonServer, WebServer

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path
    from typing import Any

START = "/FTP/chandra/data/byobsid/2/3052/"
#: The tree under START: relative path -> bytes (symbolic links below).
FILES = {
    "oif.fits": b"observation index " * 100,
    "primary/acisf03052N004_evt2.fits.gz": b"events " * 5000,
    "primary/acisf03052N004_cntr_img2.jpg": b"jpeg " * 300,
    "secondary/acisf03052_000N004_evt1.fits.gz": b"level 1 " * 2000,
    "secondary/aux/pcad asol1.fits": b"aspect " * 50,
    "odd names/a b.fits": b"space",
    "odd names/100%.fits": b"percent",
    "odd names/c+d.fits": b"plus",
    "odd names/\u00fcn\u00ef\u20ac.fits": b"unicode",
    "odd names/x#y.fits": b"hash",
    "odd names/q?z.fits": b"question",
    "odd names/amp&lt.fits": b"ampersand",
    "odd names/quote'\".fits": b"quotes",
}
#: Symbolic links in the tree: path -> target (relative to the link's folder).
LINKS = {"primary/latest_evt2.fits.gz": "acisf03052N004_evt2.fits.gz", "secondary/same": "aux"}
#: Beside the tree, never to be fetched.
OUTSIDE = {
    "/FTP/chandra/data/byobsid/2/outside.fits": b"outside",
    "/FTP/chandra/data/byobsid/2/3052-old/trap.fits": b"a folder that starts like the tree",
    "/FTP/secret.fits": b"secret",
}
#: Links that a header puts into the tree's top listing page: none is followed.
HOSTILE_LINKS = (
    '<a href="http://other.example/FTP/x.fits">another host</a>'
    '<a href="//other.example/y.fits">another host, scheme-relative</a>'
    '<a href="../outside.fits">the parent</a>'
    '<a href="%2e%2e/outside.fits">the parent, escaped</a>'
    '<a href="primary/../../outside.fits">through a folder</a>'
    '<a href="/FTP/secret.fits">elsewhere on the server</a>'
    '<a href="?C=M;O=A">a sort order</a>'
    '<a href="mailto:help@example.org">mail</a>'
)


def expected_tree() -> dict[str, bytes]:
    """What the download must hold: the files, and what the links point at."""
    tree = dict(FILES)
    tree["primary/latest_evt2.fits.gz"] = FILES["primary/acisf03052N004_evt2.fits.gz"]
    tree["secondary/same/pcad asol1.fits"] = FILES["secondary/aux/pcad asol1.fits"]
    return tree


def build_docroot(kind: str) -> str:
    """A world-readable document root (Apache serves as www-data) holding the tree."""
    root = tempfile.mkdtemp(prefix="pyvo-dl-docroot-")
    start = os.path.join(root, *START.strip("/").split("/"))
    for relative, data in FILES.items():
        _write(os.path.join(start, *relative.split("/")), data)
    for relative, target in LINKS.items():
        os.symlink(target, os.path.join(start, *relative.split("/")))
    for path, data in OUTSIDE.items():
        _write(os.path.join(root, *path.strip("/").split("/")), data)
    # A header file of raw HTML above the listing, which each server hides from it.
    header = {"apache": "HEADER.html", "lighttpd": "HEADER.txt"}.get(kind)
    if header:
        _write(os.path.join(start, header), f"<p>See also {HOSTILE_LINKS}</p>".encode())
    for folder, _, files in os.walk(root):
        os.chmod(folder, 0o755)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o644)
    return root


def _write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def files_under(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder``: relative path -> bytes."""
    return {
        str(p.relative_to(folder)).replace(os.sep, "/"): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file()
    }


def _serve_tree(kind: str) -> Iterator[Any]:
    root = build_docroot(kind)
    server = PythonServer(root) if kind == "python" else WebServer(kind, root)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["apache", "nginx", "lighttpd", "python"])
def web(request: pytest.FixtureRequest) -> Iterator[Any]:
    """One real server serving the tree at START."""
    yield from _serve_tree(request.param)


@pytest.fixture
def apache() -> Iterator[Any]:
    """Apache httpd serving the tree, as HEASARC serves its FTP area."""
    yield from _serve_tree("apache")


@pytest.fixture
def nginx() -> Iterator[Any]:
    """nginx serving the tree."""
    yield from _serve_tree("nginx")


def _decoded(target: str) -> str:
    return urllib.parse.unquote(target.partition("?")[0])


def test_a_tree_downloads_whole_and_nothing_outside_it_is_fetched(web: Any, tmp_path: Path) -> None:
    out = tmp_path / "out"
    folder = pyvo_dl.http_download(web.url(START), out, recursive=True, progress=False)
    assert folder == str(out)
    assert files_under(out) == expected_tree()
    assert files_under(tmp_path) == {f"out/{k}": v for k, v in expected_tree().items()}
    requested = web.requested()
    outside = [target for _, target, _ in requested if not _decoded(target).startswith(START)]
    assert outside == [], f"fetched outside the tree: {outside}\n{web.logs()}"
    assert all(status == 200 for _, _, status in requested), requested
    gets = [_decoded(t) for m, t, _ in requested if m == "GET" and not t.endswith("/")]
    assert sorted(gets) == sorted(START + k for k in expected_tree())  # each file once


def test_a_rerun_transfers_nothing_then_only_what_changed(
    web: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    pyvo_dl.http_download(web.url(START), out, recursive=True, progress=False)
    web.clear_log()
    pyvo_dl.http_download(web.url(START), out, recursive=True, progress=False)
    file_gets = [t for m, t, _ in web.requested() if m == "GET" and not t.endswith("/")]
    assert file_gets == []  # listing pages and HEADs only: the files are in the cache
    changed = os.path.join(web.root, *START.strip("/").split("/"), "oif.fits")
    with open(changed, "ab") as f:
        f.write(b"a new row")
    web.clear_log()
    with pytest.warns(pyvo_dl.DownloadWarning, match="wrong size"):
        pyvo_dl.http_download(web.url(START), out, recursive=True, progress=False)
    file_gets = [t for m, t, _ in web.requested() if m == "GET" and not t.endswith("/")]
    assert file_gets == [START + "oif.fits"]
    assert (out / "oif.fits").read_bytes() == FILES["oif.fits"] + b"a new row"


def test_include_exclude_and_max_depth(web: Any, tmp_path: Path) -> None:
    results = pyvo_dl.download_many(
        [(web.url(START), "evt")], tmp_path, recursive=True, include="*.fits.gz",
        exclude=["*evt1*"], progress=False,
    )  # fmt: skip
    assert all(isinstance(r, str) for r in results), results
    assert sorted(files_under(tmp_path / "evt")) == [
        "primary/acisf03052N004_evt2.fits.gz", "primary/latest_evt2.fits.gz",
    ]  # fmt: skip
    web.clear_log()
    pyvo_dl.download_many(
        [(web.url(START), "top")], tmp_path, recursive=True, max_depth=0, progress=False
    )
    assert sorted(files_under(tmp_path / "top")) == ["oif.fits"]
    # max_depth=0: the start's own listing only; no sub-folder's page is read.
    assert [t for m, t, _ in web.requested() if t.endswith("/")] == [START]


def test_one_cli_command_mirrors_a_heasarc_like_tree_and_a_rerun_moves_nothing(
    apache: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    web = apache
    out = tmp_path / "obs3052"
    assert main(["--recursive", "-d", str(out), web.url(START)]) == 0
    assert files_under(out) == expected_tree()
    first = capsys.readouterr().err
    assert f"{len(expected_tree())} downloaded, 0 resumed, 0 already present, 0 failed" in first
    assert main(["--recursive", "-d", str(out), web.url(START)]) == 0
    again = capsys.readouterr().err
    assert f"0 downloaded, 0 resumed, {len(expected_tree())} already present, 0 failed" in again


def test_shards_of_a_tree_cover_it_once(nginx: Any, tmp_path: Path) -> None:
    web = nginx
    out = tmp_path / "out"
    for shard in ("1/3", "2/3", "3/3"):
        assert main(["-q", "--recursive", "--shard", shard, "-d", str(out), web.url(START)]) == 0
    assert files_under(out) == expected_tree()
    gets = [t for m, t, _ in web.requested() if m == "GET" and not t.endswith("/")]
    assert len(gets) == len(expected_tree())  # no file fetched by two shards


# -- the walk's edges, on Python's http.server and scripted pages --------------------------


@pytest.fixture
def python_tree(tmp_path: Path) -> Iterator[tuple[PythonServer, str]]:
    root = tmp_path / "root"
    (root / "t" / "a").mkdir(parents=True)
    (root / "t" / "x.fits").write_bytes(b"x")
    (root / "t" / "a" / "y.fits").write_bytes(b"y")
    server = PythonServer(str(root)).start()
    yield server, str(root)
    server.stop()


def test_a_loop_of_symbolic_links_ends_with_an_error_item(
    python_tree: tuple[PythonServer, str], tmp_path: Path
) -> None:
    server, root = python_tree
    os.symlink(".", os.path.join(root, "t", "a", "loop"))  # /t/a/loop/loop/loop/...
    results = pyvo_dl.download_many([server.url("/t/")], tmp_path / "o", recursive=True,
                                    progress=False)  # fmt: skip
    errors = [r for r in results if isinstance(r, Exception)]
    assert len(errors) == 1
    assert "more than 32 folders below the start" in str(errors[0])
    assert "pass max_depth=" in str(errors[0])
    bounded = pyvo_dl.download_many([server.url("/t/")], tmp_path / "b", recursive=True,
                                    max_depth=2, progress=False)  # fmt: skip
    assert not any(isinstance(r, Exception) for r in bounded)
    assert sorted(files_under(tmp_path / "b")) == [
        "a/loop/y.fits", "a/y.fits", "x.fits",
    ]  # fmt: skip


def test_the_cli_applies_its_repeated_filters_and_its_depth(
    python_tree: tuple[PythonServer, str], tmp_path: Path
) -> None:
    """Each --include and --exclude counts, as wget's -A/-R and s5cmd's do; --max-depth too."""
    server, root = python_tree
    for relative, data in {
        "x.txt": b"t", "old.txt": b"o", "readme.md": b"r", "a/z.fits": b"z",
        "a/b/deep.fits": b"d",
    }.items():  # fmt: skip
        _write(os.path.join(root, "t", *relative.split("/")), data)
    out = tmp_path / "o"
    args = ["--include", "*.fits", "--include", "*.txt", "--exclude", "a/z*", "--exclude", "old*"]
    assert main(["-q", "--recursive", *args, "--max-depth", "1", "-d", str(out),
                 server.url("/t/")]) == 0  # fmt: skip
    assert sorted(files_under(out)) == ["a/y.fits", "x.fits", "x.txt"]


def test_a_listing_that_is_not_html_is_an_error_naming_it(
    http_server: FaultServer, tmp_path: Path
) -> None:
    http_server.add_file("/data/", b"a.fits\nb.fits\n", content_type="text/plain")
    url = http_server.url("/data/")
    with pytest.raises(pyvo_dl.DownloadError, match="1 of 1 files under") as info:
        pyvo_dl.http_download(url, tmp_path, recursive=True, progress=False)
    assert f"{url} is not a directory listing: it came as 'text/plain'" in str(info.value)
    (result,) = pyvo_dl.download_many([url], tmp_path, recursive=True, progress=False)
    assert isinstance(result, pyvo_dl.DownloadError)
    assert url in str(result)


def test_a_folder_that_cannot_be_read_is_one_error_and_the_rest_goes_on(
    http_server: FaultServer, tmp_path: Path
) -> None:
    # Listing pages in the form of Apache's FancyIndexing (HTMLTable), by hand.
    page = (
        '<table><tr><th><a href="?C=N;O=D">Name</a></th></tr>'
        '<tr><td><a href="/d/">Parent Directory</a></td></tr>'
        '<tr><td><a href="ok.fits">ok.fits</a></td></tr>'
        '<tr><td><a href="closed/">closed/</a></td></tr></table>'
    )
    http_server.add_file("/d/t/", page.encode(), content_type="text/html;charset=UTF-8")
    http_server.add_file("/d/t/ok.fits", b"ok")
    http_server.add_file("/d/t/closed/", b"", content_type="text/html")
    http_server.set_fault("/d/t/closed/", status=403)
    results = pyvo_dl.download_many([http_server.url("/d/t/")], tmp_path, recursive=True,
                                    progress=False)  # fmt: skip
    assert results[0] == str(tmp_path / "ok.fits")
    assert isinstance(results[1], pyvo_dl.HTTPStatusError)
    assert results[1].status == 403


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"include": "*.fits"}, "include filter what recursive=True lists"),
        ({"max_depth": 1}, "max_depth filter what recursive=True lists"),
        ({"recursive": True, "max_depth": -1}, "max_depth must be a whole number >= 0"),
        ({"recursive": True, "include": 5}, "include must be a glob pattern"),
    ],
)
def test_filters_are_checked(kwargs: dict[str, Any], message: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=message):
        pyvo_dl.http_download("https://h/d/", tmp_path, **kwargs)
    with pytest.raises(ValueError, match=message):
        pyvo_dl.download_many(["https://h/d/"], tmp_path, **kwargs)


def test_recursive_takes_a_folder_url(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"ending in '/', not 'https://h/d'.*'https://h/d/'"):
        pyvo_dl.http_download("https://h/d", tmp_path, recursive=True)


def test_the_cli_refuses_filters_without_recursive(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--include", "*.fits", "https://h/d/"]) == 2
    assert "--include filter what --recursive lists" in capsys.readouterr().err


def test_ci_installs_the_servers() -> None:
    """.ci/run installs each server's Debian package, so that CI runs these tests."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, ".ci", "run"), encoding="utf-8") as f:
        script = f.read()
    for package in PACKAGES.values():
        assert f":{package} " in script or f":{package};" in script, package


def test_a_listing_page_past_the_limit_is_an_error_naming_it(
    http_server: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hostile or endless listing page is not read into memory past the limit."""
    from pyvo_dl import _api

    monkeypatch.setattr(_api, "_PAGE_LIMIT", 1000)
    page = "".join(f'<a href="f{i}.fits">f{i}.fits</a>\n' for i in range(200)).encode()
    http_server.add_file("/big/", page, content_type="text/html")
    (result,) = pyvo_dl.download_many([http_server.url("/big/")], tmp_path, recursive=True,
                                      progress=False)  # fmt: skip
    assert isinstance(result, pyvo_dl.DownloadError)
    assert f"{http_server.url('/big/')} sent more than 1000 bytes" in str(result)
    assert list(tmp_path.iterdir()) == []

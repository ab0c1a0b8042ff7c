"""http_download against a real loopback server: names, cache, errors, output.

pyvo's own test cases (SPEC §7) re-expressed against :class:`servers.FaultServer`
instead of mocks, plus the rest of SPEC §2.1, §2.4, §3.5-§3.7 and §4 that a
single well-behaved request exercises. Faults and retries are in
``test_http_resilience.py``; whole processes in ``test_resume_process.py``.
"""

from __future__ import annotations

import os
import pathlib

import pytest

import pyvo_dl
from pyvo_dl import DownloadError, DownloadWarning, HTTPStatusError, http_download

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from servers import FaultServer

DATA = bytes(range(256)) * 40  # 10 KiB, every offset distinguishable
PATH = "/data/image.fits"


def leftovers(target: pathlib.Path) -> list[str]:
    """The helper files a download may leave beside ``target``."""
    return [s for s in (".part", ".part.json", ".lock") if os.path.exists(str(target) + s)]


# ------------------------------------------------------------------ names ---


@pytest.mark.parametrize(
    ("served", "requested", "expected"),
    [
        ("/data/image.fits", "/data/image.fits", "image.fits"),
        ("/data/my file.fits", "/data/my%20file.fits", "my file.fits"),
        ("/data/image.fits", "/data/image.fits?user=1&token=x", "image.fits"),
        ("/data/\u00fc ber.fits", "/data/\u00fc ber.fits", "\u00fc ber.fits"),
        ("/service", "/service?file=/location/myfile.pdf", "myfile.pdf"),
        ("/service", "/service?file=/location/myfile.pdf&size=large", "myfile.pdf"),
        ("/service", "/service?id=3&file=..%2F..%2Fevil.pdf", "evil.pdf"),
    ],
)
def test_name_from_url(
    http_server: FaultServer, in_tmp: pathlib.Path, served: str, requested: str, expected: str
) -> None:
    """SPEC §2.1: last path part (decoded), else the first query value naming a file."""
    http_server.add_file(served, DATA)
    result = http_download(http_server.url(requested), progress=False)
    assert result == expected
    assert (in_tmp / expected).read_bytes() == DATA
    assert sorted(os.listdir(in_tmp)) == [expected]


@pytest.mark.parametrize(
    ("disposition", "expected"),
    [
        ('attachment; filename="served.fits"', "served.fits"),
        ("attachment; filename=token.fits", "token.fits"),
        ("attachment; filename*=UTF-8''caf%C3%A9.fits", "café.fits"),
        ('attachment; filename="../../etc/passwd"', "passwd"),
        ('attachment; filename="/etc/passwd"', "passwd"),
        ("attachment; filename=..\\..\\win.fits", "win.fits"),
        ("attachment; filename*=UTF-8''..%2F..%2Fescape.fits", "escape.fits"),
        ('attachment; filename="evil\x00.fits"', "evil_.fits"),
        ('attachment; filename=".bashrc"', "_.bashrc"),
    ],
)
def test_name_from_content_disposition(
    http_server: FaultServer, in_tmp: pathlib.Path, disposition: str, expected: str
) -> None:
    """SPEC §2.1 + §3.5: a URL with no name takes the server's, never outside the folder."""
    work = in_tmp / "work"
    work.mkdir()
    os.chdir(work)
    http_server.add_file("/download/", DATA)
    http_server.set_fault("/download/", content_disposition=disposition)
    result = http_download(http_server.url("/download/"), progress=False)
    assert result == expected
    assert os.path.dirname(result) == ""
    assert (work / expected).read_bytes() == DATA
    assert sorted(os.listdir(work)) == [expected]
    assert sorted(os.listdir(in_tmp)) == ["work"]
    # The name was learnt with HEAD: the body was sent once.
    assert [r.method for r in http_server.requests_for("/download/")] == ["HEAD", "GET"]


@pytest.mark.parametrize("disposition", [None, 'attachment; filename=".."', "inline"])
def test_url_without_name_needs_local_filepath(
    http_server: FaultServer, in_tmp: pathlib.Path, disposition: str | None
) -> None:
    """SPEC §2.1: a URL ending in '/' with no usable name is a clear error."""
    http_server.add_file("/download/", DATA)
    if disposition is not None:
        http_server.set_fault("/download/", content_disposition=disposition)
    with pytest.raises(ValueError, match="local_filepath"):
        http_download(http_server.url("/download/"), progress=False)
    assert os.listdir(in_tmp) == []
    assert http_server.requests_for("/download/", "GET") == []


@pytest.mark.parametrize("kind", [str, pathlib.Path])
def test_local_filepath_given(http_server: FaultServer, tmp_path: pathlib.Path, kind: type) -> None:
    """pyvo's case: local_filepath (str or os.PathLike) is where the file goes."""
    url = http_server.add_file(PATH, DATA)
    target = tmp_path / "renamed.dat"
    result = http_download(url, kind(target), progress=False)
    assert result == str(target)
    assert target.read_bytes() == DATA
    assert leftovers(target) == []


def test_missing_parent_folders_created(http_server: FaultServer, tmp_path: pathlib.Path) -> None:
    """SPEC §3.7: missing parent folders of local_filepath are created."""
    url = http_server.add_file(PATH, DATA)
    target = tmp_path / "a" / "b" / "c" / "image.fits"
    assert http_download(url, str(target), progress=False) == str(target)
    assert target.read_bytes() == DATA


def test_target_is_a_folder(http_server: FaultServer, tmp_path: pathlib.Path) -> None:
    """SPEC §3.7: a target that is a folder is a DownloadError naming it, before any GET."""
    url = http_server.add_file(PATH, DATA)
    folder = tmp_path / "image.fits"
    folder.mkdir()
    with pytest.raises(DownloadError, match="folder") as info:
        http_download(url, str(folder), progress=False)
    assert str(folder) in str(info.value)
    assert http_server.requests_for(PATH, "GET") == []
    assert folder.is_dir()
    assert os.listdir(folder) == []


def test_parent_is_a_file(http_server: FaultServer, tmp_path: pathlib.Path) -> None:
    """SPEC §3.7: a parent folder that cannot be made is a DownloadError naming it."""
    url = http_server.add_file(PATH, DATA)
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    with pytest.raises(DownloadError, match=r"notes\.txt"):
        http_download(url, str(tmp_path / "notes.txt" / "image.fits"), progress=False)
    assert http_server.requests == []


def test_ipv6_loopback(tmp_path: pathlib.Path) -> None:
    """A URL with an IPv6 literal host works, its file name from the path."""
    from servers import FaultServer

    try:
        server = FaultServer(host="::1").start()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        url = server.add_file(PATH, DATA)
        assert url.startswith("http://[::1]:")
        target = tmp_path / "image.fits"
        http_download(url, str(target), progress=False)
        assert target.read_bytes() == DATA
    finally:
        server.stop()


# ------------------------------------------------------------------ cache ---


def test_cache_hit_uses_head_only(
    http_server: FaultServer, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """pyvo's case: a cached file of the right size is returned, checked with HEAD only."""
    url = http_server.add_file(PATH, DATA)
    target = tmp_path / "image.fits"
    http_download(url, str(target), progress=False)
    capsys.readouterr()
    http_server.reset_log()

    assert http_download(url, str(target), verbose=True, progress=False) == str(target)

    assert f"Found cached file {target}." in capsys.readouterr().out
    assert [r.method for r in http_server.requests_for(PATH)] == ["HEAD"]
    assert http_server.bytes_sent(PATH) == 0
    assert target.read_bytes() == DATA


def test_cache_false_downloads_again(http_server: FaultServer, tmp_path: pathlib.Path) -> None:
    """cache=False: no size check, the file is fetched again."""
    url = http_server.add_file(PATH, DATA)
    target = tmp_path / "image.fits"
    target.write_bytes(b"x" * len(DATA))
    http_download(url, str(target), cache=False, progress=False)
    assert [r.method for r in http_server.requests_for(PATH)] == ["GET"]
    assert target.read_bytes() == DATA


@pytest.mark.parametrize("head_status", [405, 501, 403])
def test_cache_check_falls_back_to_range_get(
    http_server: FaultServer,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
    head_status: int,
) -> None:
    """SPEC §2.1: HEAD refused -> GET Range: bytes=0-0, and no body transferred."""
    url = http_server.add_file(PATH, DATA)
    http_server.set_fault(PATH, head_status=head_status)
    target = tmp_path / "image.fits"
    target.write_bytes(DATA)

    assert http_download(url, str(target), verbose=True, progress=False) == str(target)

    assert f"Found cached file {target}." in capsys.readouterr().out
    requests = http_server.requests_for(PATH)
    assert [(r.method, r.status) for r in requests] == [("HEAD", head_status), ("GET", 206)]
    assert requests[1].headers["range"] == "bytes=0-0"
    assert http_server.bytes_sent(PATH) <= 1


def test_cache_check_retries_a_transient_failure(
    http_server: FaultServer, tmp_path: pathlib.Path
) -> None:
    """SPEC §3.3: a 503 to the cache check's HEAD is retried like any request."""
    url = http_server.add_file(PATH, DATA)
    http_server.set_fault(PATH, status=503, methods=["HEAD"], times=1)
    target = tmp_path / "image.fits"
    target.write_bytes(DATA)
    assert http_download(url, str(target), progress=False) == str(target)
    assert [(r.method, r.status) for r in http_server.requests] == [("HEAD", 503), ("HEAD", 200)]


def test_cache_check_when_the_range_is_ignored(
    http_server: FaultServer, tmp_path: pathlib.Path
) -> None:
    """SPEC §2.1: a 200 to bytes=0-0 gives the length; its body is not read."""
    data = DATA * 3200  # 32 MiB: far more than the socket buffers hold
    url = http_server.add_file(PATH, data)
    http_server.set_fault(PATH, head_status=405)
    http_server.set_fault(PATH, ignore_range=True)
    target = tmp_path / "image.fits"
    target.write_bytes(data)
    assert http_download(url, str(target), progress=False) == str(target)
    (get,) = http_server.requests_for(PATH, "GET")
    assert get.status == 200
    assert get.bytes_sent < len(data) // 2


def test_wrong_size_cache_warns_and_overwrites(
    http_server: FaultServer, tmp_path: pathlib.Path
) -> None:
    """pyvo's case: a cached file of the wrong size warns (DownloadWarning) and is replaced."""
    url = http_server.add_file(PATH, DATA)
    target = tmp_path / "image.fits"
    target.write_bytes(b"stale")
    with pytest.warns(DownloadWarning, match="wrong size"):
        assert http_download(url, str(target), progress=False) == str(target)
    assert target.read_bytes() == DATA
    assert leftovers(target) == []


@pytest.mark.parametrize("shape", [{"no_length": True}, {"chunked": True}])
def test_no_length_never_validates_cache(
    http_server: FaultServer,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
    shape: dict[str, bool],
) -> None:
    """SPEC §2.1: a server that gives no length never validates a cached file by size."""
    url = http_server.add_file(PATH, DATA)
    http_server.set_fault(PATH, **shape)
    target = tmp_path / "image.fits"
    target.write_bytes(b"\0" * len(DATA))  # right size, wrong bytes

    assert http_download(url, str(target), verbose=True, progress=False) == str(target)

    assert "Found cached file" not in capsys.readouterr().out
    assert [r.method for r in http_server.requests_for(PATH)] == ["HEAD", "GET"]
    assert target.read_bytes() == DATA
    assert leftovers(target) == []


# ----------------------------------------------------------------- errors ---


def test_missing_file_is_http_status_error(
    http_server: FaultServer, tmp_path: pathlib.Path
) -> None:
    """pyvo's case + SPEC §2.4: 404 -> HTTPStatusError(.status, .url, .reason), 'not found'."""
    url = http_server.url("/data/missing.fits")
    target = tmp_path / "missing.fits"
    with pytest.raises(HTTPStatusError) as info:
        http_download(url, str(target), progress=False)
    error = info.value
    assert isinstance(error, DownloadError)
    assert isinstance(error, OSError)
    assert error.status == 404
    assert error.url == url
    assert error.reason == "Not Found"
    assert "not found" in str(error)
    assert url in str(error)
    assert not target.exists()
    assert leftovers(target) == []


def test_missing_file_drops_an_old_part(http_server: FaultServer, tmp_path: pathlib.Path) -> None:
    """A .part whose file is gone from the server (404) is not kept for ever."""
    url = http_server.add_file(PATH, DATA * 300)
    target = tmp_path / "image.fits"

    def interrupt(done: int, total: int | None) -> None:
        if done:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        http_download(url, str(target), progress=interrupt)
    assert leftovers(target) == [".part", ".part.json"]
    http_server.remove_file(PATH)
    with pytest.raises(HTTPStatusError, match="not found"):
        http_download(url, str(target), progress=False)
    assert leftovers(target) == []
    assert not target.exists()


@pytest.mark.parametrize(
    ("how", "ok"),
    [
        ("none", False),
        ("auth", True),
        ("wrong-auth", False),
        ("netrc", True),
        ("netrc-other-host", False),
    ],
)
def test_basic_auth(
    http_server: FaultServer,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
    ok: bool,
) -> None:
    """SPEC §2.1: auth=(user, password), else $NETRC; without credentials a 401."""
    url = http_server.add_file(PATH, DATA)
    http_server.set_fault(PATH, basic_auth=("astro", "s3cret"))
    kwargs: dict[str, object] = {}
    if how == "auth":
        kwargs["auth"] = ("astro", "s3cret")
    elif how == "wrong-auth":
        kwargs["auth"] = ("astro", "guess")
    elif how.startswith("netrc"):
        host = "127.0.0.1" if how == "netrc" else "archive.example.org"
        netrc = tmp_path / "netrc"
        netrc.write_text(f"machine {host} login astro password s3cret\n")
        monkeypatch.setenv("NETRC", str(netrc))
    target = tmp_path / "image.fits"
    if ok:
        http_download(url, str(target), progress=False, **kwargs)
        assert target.read_bytes() == DATA
    else:
        with pytest.raises(HTTPStatusError, match="auth") as info:
            http_download(url, str(target), progress=False, **kwargs)
        assert info.value.status == 401
        assert not target.exists()
        # A 401 is not transient: asked once, never retried.
        assert len(http_server.requests_for(PATH, "GET")) == 1


def test_request_headers(http_server: FaultServer, tmp_path: pathlib.Path) -> None:
    """SPEC §3.6 + issue 2: User-Agent pyvo-dl/<version>, Accept-Encoding: identity."""
    url = http_server.add_file(PATH, DATA)
    http_download(url, str(tmp_path / "x.fits"), progress=False, headers={"X-Trace": "t-1"})
    (request,) = http_server.requests_for(PATH)
    assert request.headers["user-agent"] == f"pyvo-dl/{pyvo_dl.__version__}"
    assert request.headers["accept-encoding"] == "identity"
    assert request.headers["x-trace"] == "t-1"


@pytest.mark.parametrize("case", [str.lower, str.upper, str.title])
def test_caller_headers_replace_defaults_case_insensitively(
    http_server: FaultServer, tmp_path: pathlib.Path, case: Callable[[str], str]
) -> None:
    """Header names are case-insensitive: one User-Agent goes out, and identity stays."""
    url = http_server.add_file(PATH, DATA)
    headers = {case("User-Agent"): "mine/1.0", case("Accept-Encoding"): "identity"}
    http_download(url, str(tmp_path / "x.fits"), progress=False, headers=headers)
    (request,) = http_server.requests_for(PATH)
    assert request.headers["user-agent"] == "mine/1.0"
    assert request.headers["accept-encoding"] == "identity"  # SPEC §3.6
    # Another encoding would make sizes and ranges mean compressed bytes.
    with pytest.raises(ValueError, match="Accept-Encoding"):
        http_download(url, str(tmp_path / "y.fits"), headers={case("Accept-Encoding"): "gzip"})
    assert len(http_server.requests_for(PATH)) == 1


@pytest.mark.parametrize(
    ("name", "content_type", "warns"),
    [
        ("image.fits", "text/html; charset=utf-8", True),
        ("events.gz", "text/html", True),
        ("page.html", "text/html", False),
        ("image.fits", "application/fits", False),
    ],
)
def test_html_answer_for_data_warns(
    http_server: FaultServer, tmp_path: pathlib.Path, name: str, content_type: str, warns: bool
) -> None:
    """SPEC §2.1: a 200 text/html answer for a data file is kept but warned about."""
    url = http_server.add_file("/get/" + name, DATA, content_type=content_type)
    target = tmp_path / name
    if warns:
        with pytest.warns(DownloadWarning, match="HTML"):
            http_download(url, str(target), progress=False)
    else:  # filterwarnings = error: any warning fails this branch
        http_download(url, str(target), progress=False)
    assert target.read_bytes() == DATA


# --------------------------------------------------------------- progress ---


def test_progress_line_when_not_a_terminal(
    http_server: FaultServer, in_tmp: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SPEC §4: off a terminal, one line in the seed's words."""
    url = http_server.add_file(PATH, DATA)
    path = http_download(url)
    captured = capsys.readouterr()
    assert captured.out == f"Downloading {url} to {path} ... [Done]\n"
    assert captured.err == ""


def test_progress_false_is_silent(
    http_server: FaultServer, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SPEC §4: progress=False prints nothing."""
    url = http_server.add_file(PATH, DATA)
    http_download(url, str(tmp_path / "x.fits"), progress=False)
    assert capsys.readouterr() == ("", "")


def test_progress_callable(
    http_server: FaultServer, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SPEC §4: a callable gets (done, total), monotonic, ending with (size, size)."""
    data = DATA * 300  # 3 MiB: several buffers
    url = http_server.add_file(PATH, data)
    calls: list[tuple[int, int | None]] = []
    http_download(url, str(tmp_path / "x.fits"), progress=lambda d, t: calls.append((d, t)))
    assert calls[0] == (0, len(data))
    assert calls[-1] == (len(data), len(data))
    assert len(calls) >= 3
    assert all(t == len(data) for _, t in calls)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert capsys.readouterr() == ("", "")


# --------------------------------------------------------------- arguments ---


@pytest.mark.parametrize(
    ("url", "kwargs", "named"),
    [
        ("ftp://127.0.0.1/x.fits", {}, "ftp://127.0.0.1/x.fits"),
        ("file:///etc/passwd", {}, "file:///etc/passwd"),
        ("127.0.0.1/x.fits", {}, "127.0.0.1/x.fits"),
        ("http:///x.fits", {}, "no host"),
        (None, {"timeout": 0}, "timeout"),
        (None, {"timeout": -1.5}, "timeout"),
        (None, {"timeout": "10"}, "timeout"),
        (None, {"retries": -1}, "retries"),
        (None, {"retries": 1.5}, "retries"),
        (None, {"checksum": "sha256:nothex"}, "checksum"),
        (None, {"checksum": "nosuchalgo:00"}, "checksum"),
        (None, {"checksum": "sha256"}, "checksum"),
        (None, {"checksum": "md5:abcd"}, "checksum"),
        (None, {"headers": {"X-Evil": "a\r\nInjected: yes"}}, "X-Evil"),
        (None, {"headers": {"X-Evil\n": "a"}}, "header"),
        (None, {"auth": "user:password"}, "auth"),
    ],
)
def test_bad_arguments(
    http_server: FaultServer,
    tmp_path: pathlib.Path,
    url: str | None,
    kwargs: dict[str, object],
    named: str,
) -> None:
    """SPEC §3.7: bad input is a ValueError naming it, before any request."""
    if url is None:
        url = http_server.add_file(PATH, DATA)
    with pytest.raises(ValueError, match=_escape(named)):
        http_download(url, str(tmp_path / "x.fits"), progress=False, **kwargs)
    assert http_server.requests == []
    assert os.listdir(tmp_path) == []


def _escape(text: str) -> str:
    import re

    return re.escape(text)

"""What one small file costs on the disk side (issue 14): the system calls of SPEC §3, no more.

A batch of small files is bound by the CPU of one core, and every system
call is also a release and a retake of the GIL: the count per file is the
cost that the lock file, the ``.part``, the state check and the commit add
to the standard library's own GET, read and write. These tests count the
``os`` calls a download makes on the target's folder (not their time).
"""

from __future__ import annotations

import collections
import os
import threading

import pytest

import pyvo_dl
from servers import FaultServer

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any, Callable, Counter

_COUNTED = (
    "access", "stat", "lstat", "fstat", "open", "write", "close", "replace", "rename", "unlink",
)  # fmt: skip


@pytest.fixture
def disk_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """The ``os`` calls of this thread on paths under ``tmp_path`` (and on descriptors)."""
    counts: Counter[str] = collections.Counter()
    folder = str(tmp_path)
    me = threading.get_ident()

    def counted(name: str, call: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            first = args[0] if args else None
            on_path = isinstance(first, (str, os.PathLike)) and os.fspath(first).startswith(folder)
            if threading.get_ident() == me and (on_path or isinstance(first, int)):
                counts[name] += 1
            return call(*args, **kwargs)

        return wrapper

    for name in _COUNTED:
        monkeypatch.setattr(os, name, counted(name, getattr(os, name)))
    return counts


def test_a_small_file_costs_thirteen_disk_calls(
    http_server: FaultServer, tmp_path: Path, disk_calls: Counter[str]
) -> None:
    body = os.urandom(16 * 1024)
    first = http_server.add_file("/s/first.dat", body)
    url = http_server.add_file("/s/f.dat", body)
    pyvo_dl.http_download(first, tmp_path / "first.dat", progress=False)  # imports, connection
    disk_calls.clear()
    pyvo_dl.http_download(url, tmp_path / "f.dat", progress=False)
    assert (tmp_path / "f.dat").read_bytes() == body
    assert sorted(os.listdir(tmp_path)) == ["f.dat", "first.dat"]  # no lock, .part or state left
    # access (nothing there): the target, so no stat asks whether it is a
    # file, a folder, a FIFO or cached; open/write/close: the lock; access
    # (nothing there): a state to resume, a .part without one (an access
    # that finds nothing costs a third of a failed open or lstat, which
    # raises); open/fstat/write/close: the .part, in one write; lstat: its
    # size and that it is the one written; replace; unlink: the lock, young
    # and so still this download's.
    assert dict(disk_calls) == {
        "access": 3,
        "open": 2,
        "write": 2,
        "close": 2,
        "lstat": 1,
        "fstat": 1,
        "replace": 1,
        "unlink": 1,
    }


def test_a_missing_folder_is_made_when_the_lock_cannot_be_created(
    http_server: FaultServer, tmp_path: Path
) -> None:
    url = http_server.add_file("/s/deep.dat", b"deep")
    target = tmp_path / "a" / "b" / "deep.dat"
    assert pyvo_dl.http_download(url, target, progress=False) == str(target)
    assert target.read_bytes() == b"deep"


def test_a_file_in_place_of_the_folder_is_named(http_server: FaultServer, tmp_path: Path) -> None:
    url = http_server.add_file("/s/x.dat", b"x")
    (tmp_path / "a").write_bytes(b"not a folder")
    with pytest.raises(pyvo_dl.DownloadError, match="create the folder") as caught:
        pyvo_dl.http_download(url, tmp_path / "a" / "x.dat", progress=False)
    assert str(tmp_path / "a") in str(caught.value)


def test_an_answers_headers_read_as_the_email_parsers_message(
    raw_server_factory: Callable[..., Any],
) -> None:
    """``AnswerHeaders``, made once per answer, gives what ``http.client``'s message gives."""
    import email.parser
    import http.client

    from pyvo_dl import _transport

    head = (
        b'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Twice: first\r\nETag: "e"\r\n'
        b"x-twice: second\r\nVia: a,\r\n b\r\n\r\nok"
    )

    def handler(conn: Any, request: bytes) -> None:
        conn.sendall(head)

    server = raw_server_factory(handler)
    transport = _transport.StdlibTransport(proxies={})
    response = transport.request("GET", server.url("/h"), {}, 5.0)
    try:
        headers = response.headers
        text = head.split(b"\r\n", 1)[1].split(b"\r\n\r\n")[0].decode("iso-8859-1")
        message = email.parser.Parser(_class=http.client.HTTPMessage).parsestr(text + "\r\n\r\n")
        for name in ("x-twice", "X-TWICE", "etag", "content-length", "missing"):
            assert headers.get(name) == message.get(name)
            assert headers[name] == message[name]
            assert headers.get_all(name) == message.get_all(name)
            assert (name in headers) == (name in message)
        assert headers.get("missing", "none") == "none"
        assert headers.get("via") == "a, b"  # obsolete folding: one space (RFC 9112 5.2)
        assert [n for n, _ in headers.items()] == [n for n, _ in message.items()]
        assert response.read() == b"ok"
    finally:
        response.close()
        transport.close()


def test_the_lock_is_written_as_json_dumps_writes_it(tmp_path: Path) -> None:
    """The lock's JSON, all but the token made once per process, is json.dumps's (and a child's own)."""
    import json

    from pyvo_dl import _partfile

    def expected(lock: _partfile.TargetLock) -> str:
        pid, host, _, started = _partfile._holder()
        content: dict[str, Any] = {"pyvo_dl": "lock", "host": host, "pid": pid}
        if started is not None:
            content["started"] = started
        content["token"] = lock._token
        return json.dumps(content)

    lock = _partfile.TargetLock(str(tmp_path / "x.fits"))
    assert lock._content() == expected(lock)
    assert json.loads(lock._content())["pid"] == os.getpid()
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child's verdict goes through the pipe
        try:
            mine = _partfile.TargetLock(str(tmp_path / "y.fits"))
            good = mine._content() == expected(mine)
            good = good and json.loads(mine._content())["pid"] == os.getpid()
            os.write(write, b"1" if good else b"0")
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    assert os.read(read, 1) == b"1"
    os.close(read)


def test_without_an_access_that_leaves_links_alone_helpers_are_looked_for_as_before(
    http_server: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pyvo_dl import _partfile

    def no_nofollow(path: str, mode: int, *, follow_symlinks: bool = True) -> bool:
        raise NotImplementedError("access: follow_symlinks unavailable on this platform")

    monkeypatch.setattr(os, "access", no_nofollow)
    monkeypatch.setattr(_partfile, "_NO_ACCESS_NOFOLLOW", [])
    (tmp_path / "x.dat.part").symlink_to(tmp_path / "elsewhere")
    url = http_server.add_file("/s/x.dat", b"data")
    with pytest.raises(pyvo_dl.DownloadError, match="symbolic link"):
        pyvo_dl.http_download(url, tmp_path / "x.dat", progress=False)
    assert not (tmp_path / "elsewhere").exists()
    assert _partfile._NO_ACCESS_NOFOLLOW == [True]  # asked once, then not again
    (tmp_path / "x.dat.part").unlink()
    assert pyvo_dl.http_download(url, tmp_path / "x.dat", progress=False) == str(tmp_path / "x.dat")

"""A FIFO or a character device as the target is written, never replaced (issue 12.7).

``pyvo-dl -o /dev/null URL`` is curl's habit for a speed test, and a named
pipe is how a download feeds another program. A ``.part`` moved over either
replaced it: as root, ``/dev/null`` became a regular file; a FIFO's reader
got nothing. Such a target is now written as the body arrives (no
``.part``, no rename, no lock, no resume), through the same request, retry
and body loops; a block device or a socket is refused.

A test that writes into a device as root uses a private node (``mknod``,
the same numbers as ``/dev/null``) in its temporary folder, never the
machine's: a regression would then replace that node, not ``/dev/null``.
"""

from __future__ import annotations

import hashlib
import os
import socket
import stat
import threading
import time

import pytest

import pyvo_dl
from pyvo_dl import DownloadError, _cli

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

    from servers import FaultServer

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs and devices")

MiB = 1024 * 1024
DATA = (hashlib.sha256(b"pipe").digest() * (3 * MiB // 32))[: 3 * MiB + 17]
PATH = "/data/stream.fits"
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


class Reader(threading.Thread):
    """Reads a FIFO to its end, as ``cat fifo > out`` would."""

    def __init__(self, path: Path, start: threading.Event | None = None) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.start_reading = start
        self.data = b""

    def run(self) -> None:
        if self.start_reading is not None:
            self.start_reading.wait(20)
        with open(self.path, "rb") as fifo:
            self.data = fifo.read()


def null_device(tmp_path: Path) -> Path:
    """A character device that discards what it is given: a private one as root."""
    if not IS_ROOT:
        return type(tmp_path)("/dev/null")  # not root: a regression can only fail here
    node = tmp_path / "null"
    os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    return node


def assert_untouched_device(node: Path, rdev: int) -> None:
    info = os.stat(node)
    assert stat.S_ISCHR(info.st_mode), f"{node} is no longer a character device"
    assert info.st_rdev == rdev
    for suffix in (".part", ".part.json", ".lock"):
        assert not os.path.exists(f"{node}{suffix}")


def test_a_fifo_is_fed_not_replaced(http_server: FaultServer, tmp_path: Path) -> None:
    url = http_server.add_file(PATH, DATA)
    fifo = tmp_path / "stream"
    os.mkfifo(fifo)
    reader = Reader(fifo)
    reader.start()
    assert pyvo_dl.http_download(url, str(fifo), progress=False) == str(fifo)
    reader.join(20)
    assert reader.data == DATA
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert sorted(os.listdir(tmp_path)) == ["stream"]


def test_a_fifo_whose_reader_comes_later_is_waited_for(
    http_server: FaultServer, tmp_path: Path
) -> None:
    """``mkfifo p; pyvo-dl -o p URL & reader < p``: the reader may open it second."""
    url = http_server.add_file(PATH, DATA)
    http_server.set_fault(PATH, stall=0.3, stall_after=0)  # the head, then a pause
    fifo = tmp_path / "stream"
    os.mkfifo(fifo)
    asked = threading.Event()
    reader = Reader(fifo, start=asked)
    reader.start()
    threading.Thread(target=lambda: (_wait_for_request(http_server), asked.set())).start()
    pyvo_dl.http_download(url, str(fifo), progress=False)
    reader.join(20)
    assert reader.data == DATA


def _wait_for_request(server: FaultServer) -> None:
    deadline = time.monotonic() + 20
    while not server.requests_for(PATH, "GET") and time.monotonic() < deadline:
        time.sleep(0.01)


def test_a_fifo_nobody_reads_is_a_clear_error(http_server: FaultServer, tmp_path: Path) -> None:
    url = http_server.add_file(PATH, DATA)
    fifo = tmp_path / "stream"
    os.mkfifo(fifo)
    with pytest.raises(DownloadError, match="no process read the FIFO") as info:
        pyvo_dl.http_download(url, str(fifo), progress=False, timeout=0.5)
    assert str(fifo) in str(info.value)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_a_drop_is_continued_into_the_fifo(http_server: FaultServer, tmp_path: Path) -> None:
    """The stream goes on from the byte reached: the reader sees one whole file."""
    url = http_server.add_file(PATH, DATA)
    http_server.set_fault(PATH, drop_after=MiB + 5, times=1)
    fifo = tmp_path / "stream"
    os.mkfifo(fifo)
    reader = Reader(fifo)
    reader.start()
    pyvo_dl.http_download(url, str(fifo), progress=False)
    reader.join(20)
    assert reader.data == DATA
    second = http_server.requests_for(PATH, "GET")[1]
    assert second.headers["range"].startswith("bytes=")
    assert second.headers["if-range"] == http_server.etag(PATH)


def test_a_changed_object_after_a_drop_is_an_error_not_a_stitch(
    http_server: FaultServer, tmp_path: Path
) -> None:
    url = http_server.add_file(PATH, DATA)
    http_server.set_fault(PATH, drop_after=MiB, times=1)
    http_server.set_fault(PATH, change_after=1, new_data=DATA[::-1])
    fifo = tmp_path / "stream"
    os.mkfifo(fifo)
    reader = Reader(fifo)
    reader.start()
    with pytest.raises(DownloadError, match="cannot follow them"):
        pyvo_dl.http_download(url, str(fifo), progress=False)
    reader.join(20)
    assert DATA.startswith(reader.data)  # what arrived is the old file's start, and only that


@pytest.mark.parametrize("scheme", ["http", "s3"])
def test_a_character_device_is_written_not_replaced(
    http_server: FaultServer, tmp_path: Path, scheme: str
) -> None:
    node = null_device(tmp_path)
    rdev = os.stat(node).st_rdev
    big = DATA * 4  # 12 MiB: an S3 object split at the default connections
    if scheme == "s3":
        from pyvo_dl._s3url import quote_key

        http_server.add_file(f"/bkt/{quote_key('a/big.fits')}", big)
        path = pyvo_dl.aws_download(
            "s3://bkt/a/big.fits", local_filepath=str(node), endpoint_url=http_server.base_url,
            progress=False,
        )  # fmt: skip
    else:
        url = http_server.add_file(PATH, big)
        path = pyvo_dl.http_download(url, str(node), progress=False, connections=4)
    assert path == str(node)
    assert_untouched_device(node, rdev)
    (request,) = [r for r in http_server.requests if r.method == "GET"]
    assert "range" not in request.headers
    assert request.bytes_sent == len(big)


def test_the_command_line_writes_to_a_device(
    http_server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    node = null_device(tmp_path)
    rdev = os.stat(node).st_rdev
    url = http_server.add_file(PATH, DATA)
    assert _cli.main(["-q", "-o", str(node), url]) == 0
    assert_untouched_device(node, rdev)


def test_a_socket_is_refused(http_server: FaultServer, tmp_path: Path) -> None:
    url = http_server.add_file(PATH, DATA)
    path = tmp_path / "sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        with pytest.raises(DownloadError, match="it is a socket"):
            pyvo_dl.http_download(url, str(path), progress=False)
    assert http_server.requests == []


@pytest.mark.skipif(not IS_ROOT, reason="making a block device node needs root")
def test_a_block_device_is_refused(http_server: FaultServer, tmp_path: Path) -> None:
    url = http_server.add_file(PATH, DATA)
    node = tmp_path / "disk"
    os.mknod(node, stat.S_IFBLK | 0o600, os.makedev(7, 200))  # a loop device number
    with pytest.raises(DownloadError, match="it is a block device"):
        pyvo_dl.http_download(url, str(node), progress=False)
    assert stat.S_ISBLK(os.stat(node).st_mode)

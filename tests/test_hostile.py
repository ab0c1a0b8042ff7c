"""Hostile and broken servers: what a server may send must never cost the user a file.

Byte-exact answers from :class:`servers.RawServer` (and the fault server
where it can say it): endless redirects, endless headers, a 10 GB
``Content-Length`` with a tiny body, a ``Content-Range`` that lies, CR/LF
and worse inside ``Content-Disposition``, a chunked body that runs past the
size the server declared, slow-loris trickles against the idle timeout, a
gzip bomb sent despite ``Accept-Encoding: identity``, an absurd
``Retry-After``, a password in the URL. Each ends in a correct file or a
clean ``DownloadError`` with no file at the target, quickly.
"""

from __future__ import annotations

import errno
import gc
import gzip
import hashlib
import os
import random
import re
import subprocess
import threading
import time
import warnings

import pytest

import pyvo_dl
from pyvo_dl import DownloadError, _retry
from pyvo_dl._httputil import MAX_REDIRECTS
from servers import build_response

TYPE_CHECKING = False
if TYPE_CHECKING:
    import pathlib
    import socket
    from collections.abc import Callable, Iterator

    from servers import FaultServer, RawHandler, RawServer

    Factory = Callable[[RawHandler], RawServer]

MiB = 1024 * 1024
GB10 = 10 * 1000**3
DATA = random.Random(6).getrandbits(8 * MiB).to_bytes(MiB, "little")
PATH = "/data/cube.fits"


def asked_range(request: bytes) -> tuple[int, int | None] | None:
    """The ``Range: bytes=a-b`` of a raw request, or None."""
    found = re.search(rb"(?im)^range:\s*bytes=(\d+)-(\d*)\s*$", request)
    if found is None:
        return None
    return int(found.group(1)), int(found.group(2)) if found.group(2) else None


def leftovers(target: pathlib.Path) -> list[str]:
    return [s for s in (".part", ".part.json", ".lock") if os.path.exists(str(target) + s)]


def allocated(path: str) -> int:
    """Bytes of disk the file really holds (blocks, not its apparent size)."""
    try:
        return os.stat(path).st_blocks * 512
    except OSError:
        return 0


def run(*command: str) -> bool:
    return subprocess.run(command, capture_output=True, check=False).returncode == 0


@pytest.fixture
def tmpfs(tmp_path: pathlib.Path) -> Iterator[pathlib.Path]:
    """A 64 MiB tmpfs (root only), so a lying size cannot fill the real disk."""
    folder = tmp_path / "disk"
    folder.mkdir()
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    if not run("mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(folder)):
        pytest.skip("mount -t tmpfs is not permitted here")
    try:
        yield folder
    finally:
        if not run("umount", str(folder)):
            run("umount", "-l", str(folder))


# -- redirects and headers ---------------------------------------------------------


@pytest.mark.parametrize("status", [302, 308])
@pytest.mark.parametrize("how", ["download", "name probe"])
def test_endless_redirects_stop_at_the_limit(
    raw_server_factory: Factory, in_tmp: pathlib.Path, status: int, how: str
) -> None:
    """SPEC §3.4: a server redirecting to a new URL forever gets 11 requests, no more."""
    seen: list[bytes] = []

    def handler(conn: socket.socket, request: bytes) -> None:
        seen.append(request)
        location = f"/hop/{len(seen)}/" + ("x" * len(seen))
        conn.sendall(build_response(status, headers={"Location": location}, body=b"moved"))

    server = raw_server_factory(handler)
    # Without a file name in the URL, the name is asked for with a HEAD first.
    url, local = (
        (server.url("/start.fits"), "cube.fits")
        if how == "download"
        else (server.url("/start/"), None)
    )
    started = time.monotonic()
    with pytest.raises(DownloadError, match="too many redirects"):
        pyvo_dl.http_download(url, local, progress=False)
    assert len(seen) == MAX_REDIRECTS + 1
    assert time.monotonic() - started < 2.0
    assert os.listdir(in_tmp) == []


@pytest.mark.parametrize(
    "headers",
    [b"X-Pad: y\r\n" * 5000, b"X-Long: " + b"y" * (1 << 20) + b"\r\n"],
    ids=["endless header lines", "one endless header"],
)
def test_endless_headers_are_a_clean_error(
    raw_server_factory: Factory, tmp_path: pathlib.Path, headers: bytes
) -> None:
    """More header than any real answer has (http.client's limits): a clean error, not retried.

    A malformed answer is not a transient fault (issue 11): the server sends
    the same again, so the caller hears at once what is wrong.
    """

    def handler(conn: socket.socket, request: bytes) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n" + headers + b"\r\ndata")
        conn.close()

    server = raw_server_factory(handler)
    target = tmp_path / "cube.fits"
    with pytest.raises(DownloadError, match="malformed answer"):
        pyvo_dl.http_download(server.url(PATH), str(target), progress=False, retries=1)
    assert server.connection_count == 1
    assert os.listdir(tmp_path) == []


# -- sizes that lie ------------------------------------------------------------------


def tiny_body_handler(seen: list[bytes], honour_range: bool) -> RawHandler:
    """Announce 10 GB, send 100 bytes, hang up; answer ranges with 206 if asked to."""

    def handler(conn: socket.socket, request: bytes) -> None:
        seen.append(request)
        wanted = asked_range(request)
        head = [("ETag", '"v1"'), ("Accept-Ranges", "bytes")]
        if wanted is not None and honour_range:
            start, end = wanted[0], GB10 - 1 if wanted[1] is None else wanted[1]
            head += [
                ("Content-Range", f"bytes {start}-{end}/{GB10}"),
                ("Content-Length", str(end - start + 1)),
            ]
            conn.sendall(build_response(206, headers=head, body=b"x" * 100))
        else:
            head.append(("Content-Length", str(GB10)))
            conn.sendall(build_response(200, headers=head, body=b"x" * 100))
        conn.close()

    return handler


def test_ten_gb_length_with_a_tiny_body_ends_quickly(
    raw_server_factory: Factory, tmp_path: pathlib.Path
) -> None:
    """Announce 10 GB, send 100 bytes, ignore Range: a clean error, and no 10 GB on disk."""
    seen: list[bytes] = []
    server = raw_server_factory(tiny_body_handler(seen, honour_range=False))
    target = tmp_path / "cube.fits"
    started = time.monotonic()
    with pytest.raises(DownloadError, match=r"keeps changing|gave up"):
        pyvo_dl.http_download(server.url(PATH), str(target), progress=False, retries=2)
    assert time.monotonic() - started < 5.0
    assert not target.exists()
    assert os.path.getsize(str(target) + ".part") <= 100  # resumable, never preallocated
    assert allocated(str(target) + ".part") < MiB
    assert len(seen) <= 2 * (2 + 2)


def test_ten_gb_length_trickled_per_connection_gives_up(
    raw_server_factory: Factory, tmp_path: pathlib.Path
) -> None:
    """A server that honours Range but sends 100 bytes per connection must not hold us forever."""
    seen: list[bytes] = []
    server = raw_server_factory(tiny_body_handler(seen, honour_range=True))
    target = tmp_path / "cube.fits"
    outcome: list[BaseException] = []

    def download() -> None:
        try:
            pyvo_dl.http_download(server.url(PATH), str(target), progress=False, retries=1)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=download, daemon=True)
    worker.start()
    worker.join(3.0)
    # The download goes on until the server stops (then it runs out of retries).
    assert not worker.is_alive(), f"still downloading after {len(seen)} requests"
    assert outcome
    assert isinstance(outcome[0], DownloadError)
    assert not target.exists()


def test_ten_gb_parallel_on_a_small_disk_fails_at_once(
    raw_server_factory: Factory, tmpfs: pathlib.Path
) -> None:
    """connections>1: the announced 10 GB are refused before any range is fetched."""
    seen: list[bytes] = []
    server = raw_server_factory(tiny_body_handler(seen, honour_range=True))
    target = tmpfs / "cube.fits"
    with pytest.raises(DownloadError) as info:
        pyvo_dl.http_download(server.url(PATH), str(target), progress=False, connections=4)
    assert info.value.errno == errno.ENOSPC
    assert "allocate" in str(info.value)
    del info
    gc.collect()  # a socket left open would warn now, in this test
    assert len(seen) == 1
    assert not target.exists()
    assert allocated(str(target) + ".part") < MiB


def test_a_lying_size_reserves_no_disk_it_never_fills(
    raw_server_factory: Factory, tmpfs: pathlib.Path
) -> None:
    """40 MiB announced, ranges never delivered: the failed .part must not hold 40 MiB."""
    size = 40 * MiB

    def handler(conn: socket.socket, request: bytes) -> None:
        start, end = asked_range(request) or (0, None)
        end = size - 1 if end is None else end
        head = [
            ("ETag", '"v1"'),
            ("Accept-Ranges", "bytes"),
            ("Content-Range", f"bytes {start}-{end}/{size}"),
            ("Content-Length", str(end - start + 1)),
        ]
        conn.sendall(build_response(206, headers=head, body=b""))
        conn.close()  # headers, then nothing: no range makes progress

    server = raw_server_factory(handler)
    target = tmpfs / "cube.fits"
    with pytest.raises(DownloadError):
        pyvo_dl.http_download(
            server.url(PATH), str(target), progress=False, connections=4, retries=0
        )
    gc.collect()
    assert not target.exists()
    assert allocated(str(target) + ".part") < 4 * MiB


LIES = {
    # name: Content-Range for a request of bytes a-b of an object of n bytes
    "start off by one": lambda a, b, n: f"bytes {a + 1}-{b}/{n}",
    "other total": lambda a, b, n: f"bytes {a}-{b}/{n + 1}",
    "unknown total": lambda a, b, n: f"bytes {a}-{b}/*",
    "end past the total": lambda a, b, n: f"bytes {a}-{n}/{n}",
    "garbage": lambda a, b, n: "bytes lots",
}


@pytest.mark.parametrize("always", [False, True], ids=["once", "always"])
@pytest.mark.parametrize("lie", list(LIES))
def test_lying_content_range_in_a_parallel_range(
    raw_server_factory: Factory, tmp_path: pathlib.Path, lie: str, always: bool
) -> None:
    """SPEC §3.3 for ranges: a 206 not starting where asked, or of another total, is never written."""
    size = 9 * MiB  # two ranges
    data = random.Random(9).getrandbits(8 * size).to_bytes(size, "little")
    lies: list[int] = []

    def handler(conn: socket.socket, request: bytes) -> None:
        start, end = asked_range(request) or (0, None)
        end = size - 1 if end is None else end
        content_range = f"bytes {start}-{end}/{size}"
        if start > 0 and (always or not lies):
            lies.append(start)
            content_range = LIES[lie](start, end, size)
        head = [
            ("ETag", '"v1"'),
            ("Accept-Ranges", "bytes"),
            ("Content-Range", content_range),
            ("Content-Length", str(end - start + 1)),
        ]
        conn.sendall(build_response(206, headers=head, body=data[start : end + 1]))

    server = raw_server_factory(handler)
    target = tmp_path / "cube.fits"
    if always:
        with pytest.raises(DownloadError, match="keeps changing"):
            pyvo_dl.http_download(
                server.url(PATH), str(target), progress=False, connections=4, retries=2
            )
        assert not target.exists()
    else:
        pyvo_dl.http_download(server.url(PATH), str(target), progress=False, connections=4)
        assert target.read_bytes() == data
        assert leftovers(target) == []
    assert lies


# -- bodies past the declared size ----------------------------------------------------

#: What a server pushes at most before giving up: far past any declared size.
ENDLESS = 24 * MiB


def endless_chunks(conn: socket.socket, head: bytes, first: bytes, sent: list[int]) -> None:
    """``head``, then ``first`` and garbage as chunks until ENDLESS bytes or a hang-up."""
    total = 0
    try:
        conn.sendall(head + b"%x\r\n" % len(first) + first + b"\r\n")
        total = len(first)
        chunk = b"%x\r\n" % (64 * 1024) + b"z" * (64 * 1024) + b"\r\n"
        while total < ENDLESS:
            conn.sendall(chunk)
            total += 64 * 1024
        conn.sendall(b"0\r\n\r\n")
    except OSError:
        pass  # the client hung up: what it should do
    sent.append(total)
    conn.close()


def chunked_head(status: int, extra: list[tuple[str, str]]) -> bytes:
    head = [("ETag", '"v1"'), ("Accept-Ranges", "bytes"), ("Transfer-Encoding", "chunked")]
    return build_response(status, headers=head + extra, content_length=False)


@pytest.mark.parametrize("case", ["resumed range", "first answer to bytes=0-"])
def test_chunked_body_past_the_known_size_is_cut(
    raw_server_factory: Factory, tmp_path: pathlib.Path, case: str
) -> None:
    """The size is known (Content-Length then Content-Range): no byte past it is written."""
    size = len(DATA)
    cut = size // 2
    sent: list[int] = []

    def handler(conn: socket.socket, request: bytes) -> None:
        wanted = asked_range(request)
        if case == "resumed range" and wanted is None:
            head = [("ETag", '"v1"'), ("Content-Length", str(size))]
            conn.sendall(build_response(200, headers=head, body=DATA[:cut]))
            conn.close()
            return
        start = wanted[0] if wanted else 0
        extra = [("Content-Range", f"bytes {start}-{size - 1}/{size}")]
        endless_chunks(conn, chunked_head(206, extra), DATA[start:], sent)

    server = raw_server_factory(handler)
    target = tmp_path / "cube.fits"
    done: list[tuple[int, int | None]] = []
    connections = 4 if case.startswith("first") else 1
    try:
        pyvo_dl.http_download(
            server.url(PATH), str(target), connections=connections, retries=1,
            progress=lambda d, t: done.append((d, t)),
            checksum="sha256:" + hashlib.sha256(DATA).hexdigest(),
        )  # fmt: skip
    except DownloadError:
        assert not target.exists()
    else:
        assert target.read_bytes() == DATA
    assert max(d for d, _ in done) <= size
    assert all(s < ENDLESS for s in sent), sent


# -- names from hostile headers ---------------------------------------------------------

DISPOSITIONS: dict[bytes, str | None] = {
    # raw header value: the name it must give (None: the answer is refused)
    b'attachment; filename="../../evil\r\n\t.fits"': "evil .fits",  # folded, then unfolded
    # A bare LF (or CR, which the email parser also ends lines at) ends the
    # header: 'b.fits"' is then a head line that is no field, behind which
    # http.client would not see the fields that follow (a Transfer-Encoding).
    b'attachment; filename="a\nb.fits"': None,
    b'attachment; filename="a\rb.fits"': None,
    b'attachment; filename="x\x00y.fits"': "x_y.fits",
    b'attachment; filename="..\\\\..\\\\win.fits"': "win.fits",
    b"attachment; filename*=UTF-8''..%2F..%2F.ssh%2Fauthorized_keys": "authorized_keys",
    b"attachment; filename*=UTF-8''%0D%0Aset-cookie.fits": "__set-cookie.fits",
    b'attachment; filename="CON.fits"': "_CON.fits",
    b'attachment; filename=".bashrc"': "_.bashrc",
    b'attachment; filename="/etc/cron.d/job.fits"': "job.fits",
}


@pytest.mark.parametrize("value", list(DISPOSITIONS), ids=lambda v: v.decode("latin-1")[:40])
def test_content_disposition_with_cr_lf_and_paths_is_sanitized(
    raw_server_factory: Factory, in_tmp: pathlib.Path, value: bytes
) -> None:
    """SPEC §3.5: whatever the header holds, one safe file lands in the current folder."""

    def handler(conn: socket.socket, request: bytes) -> None:
        head = b'HTTP/1.1 200 OK\r\nContent-Length: 4\r\nETag: "v1"\r\n'
        head += b"Content-Disposition: " + value + b"\r\n\r\n"
        conn.sendall(head + (b"data" if request.startswith(b"GET") else b""))

    server = raw_server_factory(handler)
    outside = sorted(os.listdir(in_tmp.parent))
    if DISPOSITIONS[value] is None:
        with pytest.raises(DownloadError, match="not a header field"):
            pyvo_dl.http_download(server.url("/download/"), progress=False)
        assert os.listdir(in_tmp) == []
        return
    path = pyvo_dl.http_download(server.url("/download/"), progress=False)
    assert path == DISPOSITIONS[value]
    assert not re.search(r"[\x00-\x1f\x7f/\\]", path)
    assert os.listdir(in_tmp) == [path]
    assert (in_tmp / path).read_bytes() == b"data"
    assert sorted(os.listdir(in_tmp.parent)) == outside


# -- slow servers ----------------------------------------------------------------------


def test_slow_loris_trickle_is_progress(http_server: FaultServer, tmp_path: pathlib.Path) -> None:
    """SPEC §2.1: timeout is time without progress: 1 byte per 0.3 s passes timeout=0.5."""
    url = http_server.add_file(PATH, b"SIMPLE=T")
    http_server.set_fault(PATH, trickle=(1, 0.3))
    target = tmp_path / "cube.fits"
    started = time.monotonic()
    pyvo_dl.http_download(url, str(target), progress=False, timeout=0.5, retries=0)
    assert time.monotonic() - started > 2.0  # longer in all than the timeout
    assert target.read_bytes() == b"SIMPLE=T"
    assert len(http_server.requests_for(PATH, "GET")) == 1


def test_a_stall_longer_than_the_timeout_fails(
    http_server: FaultServer, tmp_path: pathlib.Path
) -> None:
    """...while 1 s without a byte, with timeout=0.5 and no retry, is a timeout error."""
    url = http_server.add_file(PATH, b"SIMPLE=T")
    http_server.set_fault(PATH, trickle=(1, 0.3), stall=1.0, stall_after=3)
    target = tmp_path / "cube.fits"
    started = time.monotonic()
    with pytest.raises(DownloadError, match="timed out"):
        pyvo_dl.http_download(url, str(target), progress=False, timeout=0.5, retries=0)
    assert time.monotonic() - started < 2.5
    assert not target.exists()


# -- encodings ----------------------------------------------------------------------------

BOMB = gzip.compress(b"\0" * (64 * MiB), compresslevel=9)


@pytest.mark.parametrize("transport", ["stdlib", "requests session"])
def test_gzip_bomb_is_stored_as_sent(
    http_server: FaultServer, tmp_path: pathlib.Path, transport: str
) -> None:
    """SPEC §3.6: Content-Encoding: gzip despite identity: the bytes sent, never inflated."""
    url = http_server.add_file(
        "/bomb.fits.gz", BOMB, headers={"Content-Encoding": "gzip"}, content_type="application/gzip"
    )
    target = tmp_path / "bomb.fits.gz"
    done: list[tuple[int, int | None]] = []
    options: dict[str, object] = {
        "progress": lambda d, t: done.append((d, t)),
        "checksum": "sha256:" + hashlib.sha256(BOMB).hexdigest(),
    }
    if transport == "requests session":
        requests = pytest.importorskip("requests")
        with requests.Session() as session:
            pyvo_dl.http_download(url, str(target), session=session, **options)
    else:
        pyvo_dl.http_download(url, str(target), **options)
    assert os.path.getsize(target) == len(BOMB) < MiB
    assert target.read_bytes() == BOMB
    assert done[-1] == (len(BOMB), len(BOMB))
    assert http_server.requests[-1].headers["accept-encoding"] == "identity"


# -- Retry-After -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["Thu, 01 Jan 10000 00:00:00 GMT", "Sun Nov  6 08:49:37 99999999999999999999"]
)
def test_retry_after_beyond_year_9999_is_retried_not_a_crash(
    http_server: FaultServer, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """A 503 whose Retry-After no datetime can hold is a wait (capped), not a ValueError."""
    url = http_server.add_file(PATH, b"data")
    http_server.set_fault(PATH, status=503, retry_after=value, times=1)
    monkeypatch.setattr(_retry, "MAX_RETRY_AFTER", 0.0)  # the cap itself is not tested here
    target = tmp_path / "cube.fits"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pyvo_dl.http_download(url, str(target), progress=False)
    assert target.read_bytes() == b"data"
    assert len(http_server.requests_for(PATH, "GET")) == 2


# -- what is sent where ----------------------------------------------------------------


def test_raw_utf8_location_is_followed_as_utf8(
    raw_server_factory: Factory, tmp_path: pathlib.Path
) -> None:
    """A Location header in raw UTF-8 (nginx rewrites send it) reaches the path it names."""
    paths: list[bytes] = []

    def handler(conn: socket.socket, request: bytes) -> None:
        path = request.split(b" ")[1]
        paths.append(path)
        if path == b"/start.fits":
            location = "/a b/é€.fits".encode()
            conn.sendall(
                b"HTTP/1.1 302 Found\r\nLocation: " + location + b"\r\nContent-Length: 0\r\n\r\n"
            )
        else:
            conn.sendall(build_response(200, headers={"ETag": '"v1"'}, body=b"data"))

    server = raw_server_factory(handler)
    target = tmp_path / "x.fits"
    pyvo_dl.http_download(server.url("/start.fits"), str(target), progress=False)
    assert paths == [b"/start.fits", b"/a%20b/%C3%A9%E2%82%AC.fits"]
    assert target.read_bytes() == b"data"


def test_anonymous_s3_sends_no_credentials(
    http_server: FaultServer, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SPEC §2.2: an unsigned S3 GET carries no Authorization, even with a .netrc entry."""
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login me password secret\ndefault login any password pw\n")
    monkeypatch.setenv("NETRC", str(netrc))
    http_server.add_file("/bkt/k.fits", DATA)
    target = tmp_path / "k.fits"
    pyvo_dl.aws_download(
        bucket="bkt", key="k.fits", local_filepath=str(target),
        endpoint_url=http_server.base_url, progress=False,
    )  # fmt: skip
    assert target.read_bytes() == DATA
    for request in http_server.requests:
        assert "authorization" not in request.headers
        assert not [h for h in request.headers if h.startswith("x-amz-security")]


def test_credentials_in_the_url_are_sent_as_basic_auth(
    http_server: FaultServer, tmp_path: pathlib.Path
) -> None:
    """https://user:password@host/... authenticates, as it does with curl and requests."""
    url = http_server.add_file(PATH, DATA).replace("http://", "http://astro:s3cret@")
    http_server.set_fault(PATH, basic_auth=("astro", "s3cret"))
    target = tmp_path / "cube.fits"
    pyvo_dl.http_download(url, str(target), progress=False)
    assert target.read_bytes() == DATA


def test_a_password_in_the_url_is_never_shown(
    http_server: FaultServer,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Progress lines, verbose output, logs and errors never show the URL's password."""
    url = http_server.add_file(PATH, DATA).replace("http://", "http://astro:s3cret@")
    caplog.set_level("DEBUG", logger="pyvo_dl")
    pyvo_dl.http_download(url, str(tmp_path / "a.fits"), verbose=True)
    with pytest.raises(DownloadError) as info:
        pyvo_dl.http_download(url.replace(PATH, "/missing.fits"), str(tmp_path / "b.fits"))
    captured = capsys.readouterr()
    shown = captured.out + captured.err + caplog.text + str(info.value)
    assert "127.0.0.1" in shown
    assert "s3cret" not in shown

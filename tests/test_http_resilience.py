"""http_download under faults: retries, resume, restarts, redirects, TLS, proxies.

Each test switches one fault on a real loopback :class:`servers.FaultServer`
and asserts both the result on disk and what the server saw (requests,
``Range``/``If-Range`` headers, bytes sent, connections), so that every
guarantee of SPEC §3 that applies to HTTP fails here when it is broken.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import re
import time

import pytest

from pyvo_dl import (
    DownloadError,
    DownloadWarning,
    HTTPStatusError,
    IntegrityError,
    http_download,
)
from servers import build_response

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    import ssl
    from collections.abc import Callable

    from servers import FaultServer, RawHandler, RawServer, Request

DATA = bytes(range(256)) * 1200  # 300 KiB, every offset distinguishable
NEW = bytes(range(255, -1, -1)) * 1300  # differs from DATA at every offset, longer
PATH = "/data/events.fits"
MiB = 1024 * 1024
CUT = 100_000


def leftovers(target: pathlib.Path) -> list[str]:
    """The helper files a download may leave beside ``target``."""
    return [s for s in (".part", ".part.json", ".lock") if os.path.exists(str(target) + s)]


def gets(server: FaultServer, path: str = PATH) -> list[Request]:
    """The GETs ``server`` answered for ``path``, in order."""
    return server.requests_for(path, "GET")


def sha256(data: bytes) -> str:
    """The ``checksum=`` spec of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


# ------------------------------------------------------- drops and resume ---


@pytest.mark.parametrize("rst", [False, True])
def test_drop_mid_body_continues_from_byte_reached(
    http_server: FaultServer, tmp_path: pathlib.Path, rst: bool
) -> None:
    """SPEC §3.3: a connection lost mid-body is retried from the byte reached, not 0."""
    url = http_server.add_file(PATH, DATA)
    http_server.set_fault(PATH, drop_after=CUT, rst=rst, times=1)
    target = tmp_path / "events.fits"

    assert http_download(url, str(target), progress=False) == str(target)

    assert target.read_bytes() == DATA
    assert leftovers(target) == []
    first, second = gets(http_server)
    assert "range" not in first.headers
    if rst:  # a reset may discard bytes the client had not read yet
        reached = int(second.headers.get("range", "bytes=0-")[6:-1])
        assert reached <= CUT
    else:
        reached = CUT
        assert first.bytes_sent == CUT
    if reached:
        assert second.headers["range"] == f"bytes={reached}-"
        assert second.headers["if-range"] == http_server.etag(PATH)
        assert second.status == 206
    assert second.bytes_sent == len(DATA) - reached
    assert http_server.bytes_sent(PATH) <= len(DATA) + CUT


def test_repeated_drops_each_make_progress(
    http_server: FaultServer, tmp_path: pathlib.Path
) -> None:
    """Progress resets the retry budget: 4 drops with retries=1 still finish.

    Each try moves 70 000 bytes, more than the 64 KiB that count as progress
    (a few bytes per connection do not: tests/test_hostile.py).
    """
    step = 70_000
    url = http_server.add_file(PATH, DATA)
    http_server.set_fault(PATH, drop_after=step, times=4)
    target = tmp_path / "events.fits"
    http_download(url, str(target), progress=False, retries=1)
    assert target.read_bytes() == DATA
    ranges = [r.headers.get("range") for r in gets(http_server)]
    assert ranges == [None] + [f"bytes={k * step}-" for k in range(1, 5)]
    assert http_server.bytes_sent(PATH) == len(DATA)


def test_short_body_is_retried(http_server: FaultServer, tmp_path: pathlib.Path) -> None:
    """SPEC §3.3: a body shorter than Content-Length is a fault, continued from there."""
    url = http_server.add_file(PATH, DATA)
    http_server.set_fault(PATH, short_body=CUT, times=1)
    target = tmp_path / "events.fits"
    http_download(url, str(target), progress=False)
    assert target.read_bytes() == DATA
    assert [r.headers.get("range") for r in gets(http_server)] == [None, f"bytes={CUT}-"]
    assert http_server.bytes_sent(PATH) == len(DATA)


def test_server_ignoring_range_restarts_from_zero(
    http_server: FaultServer, tmp_path: pathlib.Path
) -> None:
    """SPEC §3.3: a 200 to a ranged request is never appended: it is the file, from byte 0.

    The 200 is kept as the new download (issue 12.1), not closed and asked for again.
    """
    url = http_server.add_file(PATH, DATA)
    http_server.set_fault(PATH, drop_after=CUT, times=1)
    http_server.set_fault(PATH, ignore_range=True)
    target = tmp_path / "events.fits"
    http_download(url, str(target), progress=False)
    assert target.read_bytes() == DATA
    _, second = gets(http_server)
    assert second.headers["range"] == f"bytes={CUT}-"
    assert (second.status, second.bytes_sent) == (200, len(DATA))
    assert leftovers(target) == []


def test_object_changed_between_requests_is_never_stitched(
    http_server: FaultServer, tmp_path: pathlib.Path
) -> None:
    """SPEC §3.2: If-Range fails (new ETag -> 200): the result is the new object entirely."""
    url = http_server.add_file(PATH, DATA)
    http_server.set_fault(PATH, drop_after=CUT, times=1)
    http_server.set_fault(PATH, change_after=1, new_data=NEW)
    target = tmp_path / "events.fits"
    calls: list[tuple[int, int | None]] = []
    http_download(url, str(target), progress=lambda d, t: calls.append((d, t)))
    assert target.read_bytes() == NEW
    requests = gets(http_server)
    assert requests[1].headers["if-range"] == hashlib_etag(DATA)
    assert requests[1].status == 200
    assert calls[-1] == (len(NEW), len(NEW))
    assert leftovers(target) == []


def hashlib_etag(data: bytes) -> str:
    """The ETag FaultServer gives ``data`` (its quoted MD5, as S3 does)."""
    return '"' + hashlib.md5(data).hexdigest() + '"'


def test_last_modified_is_the_validator_without_strong_etag(
    http_server: FaultServer, tmp_path: pathlib.Path
) -> None:
    """SPEC §3.2: with a weak ETag, If-Range carries Last-Modified; a change restarts."""
    url = http_server.add_file(PATH, DATA, etag='W/"v1"')
    http_server.set_fault(PATH, drop_after=CUT, times=1)
    http_server.set_fault(PATH, change_after=1, new_data=NEW)
    target = tmp_path / "events.fits"
    http_download(url, str(target), progress=False)
    assert target.read_bytes() == NEW
    second = gets(http_server)[1]
    assert second.headers["if-range"] == "Wed, 21 Oct 2015 07:28:00 GMT"
    assert second.status == 200


def test_no_validator_never_resumes(http_server: FaultServer, tmp_path: pathlib.Path) -> None:
    """SPEC §3.2: with nothing to prove the object unchanged, a retry starts from 0."""
    url = http_server.add_file(PATH, DATA, etag="", last_modified="")
    http_server.set_fault(PATH, drop_after=CUT, times=1)
    target = tmp_path / "events.fits"
    http_download(url, str(target), progress=False)
    assert target.read_bytes() == DATA
    assert [r.headers.get("range") for r in gets(http_server)] == [None, None]


RANGE_ANSWERS = {
    # name: (Content-Range or None, body of the 206, whether it may be appended)
    "exact": (f"bytes {CUT}-{len(DATA) - 1}/{len(DATA)}", DATA[CUT:], True),
    "from 0": (f"bytes 0-{len(DATA) - 1}/{len(DATA)}", DATA, False),
    "earlier start": (f"bytes {CUT - 10}-{len(DATA) - 1}/{len(DATA)}", DATA[CUT - 10 :], False),
    "other total": (f"bytes {CUT}-{len(DATA)}/{len(DATA) + 1}", DATA[CUT:] + b"!", False),
    "unknown total": (f"bytes {CUT}-{len(DATA) - 1}/*", DATA[CUT:], False),
    "no Content-Range": (None, DATA[CUT:], False),
}


@pytest.mark.parametrize("answer", list(RANGE_ANSWERS))
def test_resumed_body_appended_only_for_the_range_asked(
    raw_server_factory: Callable[[RawHandler], RawServer], tmp_path: pathlib.Path, answer: str
) -> None:
    """SPEC §3.3: append only a 206 starting at the byte asked with the recorded total."""
    content_range, partial, appendable = RANGE_ANSWERS[answer]
    asked: list[int | None] = []
    common = [("ETag", '"v1"'), ("Content-Type", "application/octet-stream")]

    def handler(conn: socket.socket, request: bytes) -> None:
        found = re.search(rb"(?im)^range:\s*bytes=(\d+)-", request)
        asked.append(int(found.group(1)) if found else None)
        if len(asked) == 1:  # the whole object announced, CUT bytes sent, then closed
            head = [*common, ("Content-Length", str(len(DATA)))]
            conn.sendall(build_response(200, headers=head, body=DATA[:CUT]))
            conn.close()
        elif found:
            extra = [("Content-Range", content_range)] if content_range else []
            conn.sendall(build_response(206, headers=common + extra, body=partial))
        else:
            conn.sendall(build_response(200, headers=common, body=DATA))

    server = raw_server_factory(handler)
    target = tmp_path / "events.fits"
    http_download(server.url(PATH), str(target), progress=False)
    assert target.read_bytes() == DATA
    assert asked == ([None, CUT] if appendable else [None, CUT, None])


def test_drop_in_a_chunked_body_restarts(http_server: FaultServer, tmp_path: pathlib.Path) -> None:
    """No length to check a Range answer against: a cut chunked body starts again."""
    url = http_server.add_file(PATH, DATA)
    http_server.set_fault(PATH, chunked=True)
    http_server.set_fault(PATH, drop_after=CUT, times=1)
    target = tmp_path / "events.fits"
    calls: list[tuple[int, int | None]] = []
    http_download(url, str(target), progress=lambda d, t: calls.append((d, t)))
    assert target.read_bytes() == DATA
    assert [r.headers.get("range") for r in gets(http_server)] == [None, None]
    assert calls[-1] == (len(DATA), len(DATA))


def interrupt_at(limit: int) -> Callable[[int, int | None], None]:
    """A progress callable that presses Ctrl-C once ``limit`` bytes are on disk."""

    def progress(done: int, total: int | None) -> None:
        if done >= limit:
            raise KeyboardInterrupt

    return progress


def test_ctrl_c_keeps_part_and_next_call_resumes(
    http_server: FaultServer, tmp_path: pathlib.Path
) -> None:
    """SPEC §3.1/§3.2: Ctrl-C leaves .part + state, no target; the next call continues."""
    data = DATA * 10  # 3 MiB: three buffers
    url = http_server.add_file(PATH, data)
    target = tmp_path / "events.fits"
    with pytest.raises(KeyboardInterrupt):
        http_download(url, str(target), progress=interrupt_at(MiB))
    assert not target.exists()
    assert leftovers(target) == [".part", ".part.json"]
    kept = os.path.getsize(str(target) + ".part")
    assert kept >= MiB
    http_server.reset_log()

    http_download(url, str(target), progress=False)

    assert target.read_bytes() == data
    (request,) = gets(http_server)
    assert request.headers["range"] == f"bytes={kept}-"
    assert request.headers["if-range"] == http_server.etag(PATH)
    assert request.bytes_sent == len(data) - kept
    assert leftovers(target) == []


def test_complete_part_is_committed_by_416(
    http_server: FaultServer, tmp_path: pathlib.Path
) -> None:
    """Interrupted after the last byte: the resume gets 416 for the full size, no body."""
    url = http_server.add_file(PATH, DATA)
    target = tmp_path / "events.fits"
    with pytest.raises(KeyboardInterrupt):
        http_download(url, str(target), progress=interrupt_at(len(DATA)))
    assert leftovers(target) == [".part", ".part.json"]
    http_server.reset_log()
    http_download(url, str(target), progress=False, checksum=sha256(DATA))
    assert target.read_bytes() == DATA
    (request,) = gets(http_server)
    assert (request.headers["range"], request.status) == (f"bytes={len(DATA)}-", 416)


@pytest.mark.parametrize("case", ["resume=False", "other URL"])
def test_part_not_resumed(http_server: FaultServer, tmp_path: pathlib.Path, case: str) -> None:
    """resume=False, or a .part made from another URL: start from byte 0."""
    data = DATA * 10
    url = http_server.add_file(PATH, data)
    other = http_server.add_file("/mirror/events.fits", data)
    target = tmp_path / "events.fits"
    with pytest.raises(KeyboardInterrupt):
        http_download(url, str(target), progress=interrupt_at(MiB))
    http_server.reset_log()
    if case == "resume=False":
        http_download(url, str(target), progress=False, resume=False)
        (request,) = gets(http_server)
    else:
        http_download(other, str(target), progress=False)
        (request,) = gets(http_server, "/mirror/events.fits")
    assert "range" not in request.headers
    assert target.read_bytes() == data
    assert leftovers(target) == []


# ------------------------------------------------------ transient statuses ---


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_transient_status_is_retried(
    http_server: FaultServer, tmp_path: pathlib.Path, status: int
) -> None:
    """SPEC §3.3: 408, 429, 500, 502, 503, 504 are retried."""
    url = http_server.add_file(PATH, DATA)
    http_server.set_fault(PATH, status=status, times=1)
    target = tmp_path / "events.fits"
    http_download(url, str(target), progress=False)
    assert target.read_bytes() == DATA
    assert [r.status for r in gets(http_server)] == [status, 200]


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_a_minimum(
    http_server: FaultServer, tmp_path: pathlib.Path, status: int
) -> None:
    """SPEC §3.3: Retry-After is waited at least, whatever the jitter says."""
    url = http_server.add_file(PATH, DATA)
    http_server.set_fault(PATH, status=status, retry_after="1", times=1)
    target = tmp_path / "events.fits"
    started = time.monotonic()
    http_download(url, str(target), progress=False)
    assert time.monotonic() - started >= 1.0
    assert target.read_bytes() == DATA


def test_persistent_transient_status_gives_up(
    http_server: FaultServer, tmp_path: pathlib.Path
) -> None:
    """After `retries` retries the fault surfaces as a DownloadError naming it."""
    url = http_server.add_file(PATH, DATA)
    http_server.set_fault(PATH, status=503)
    target = tmp_path / "events.fits"
    with pytest.raises(DownloadError, match="503") as info:
        http_download(url, str(target), progress=False, retries=2)
    assert url in str(info.value)
    assert len(gets(http_server)) == 3
    assert not target.exists()
    assert leftovers(target) == []


def test_retries_zero_means_one_attempt(http_server: FaultServer, tmp_path: pathlib.Path) -> None:
    """retries=0: the first transient fault is final."""
    url = http_server.add_file(PATH, DATA)
    http_server.set_fault(PATH, status=500)
    with pytest.raises(DownloadError):
        http_download(url, str(tmp_path / "x.fits"), progress=False, retries=0)
    assert len(gets(http_server)) == 1


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 410, 451])
def test_client_errors_are_not_retried(
    http_server: FaultServer, tmp_path: pathlib.Path, status: int
) -> None:
    """SPEC §3.3: a 4xx other than 408/429 is final: exactly one GET."""
    url = http_server.add_file(PATH, DATA)
    http_server.set_fault(PATH, status=status)
    target = tmp_path / "events.fits"
    with pytest.raises(HTTPStatusError) as info:
        http_download(url, str(target), progress=False)
    assert info.value.status == status
    assert info.value.url == url
    assert len(gets(http_server)) == 1
    assert not target.exists()
    assert leftovers(target) == []


# ----------------------------------------------------------------- stalls ---


def test_stall_longer_than_timeout_is_retried(
    http_server: FaultServer, tmp_path: pathlib.Path
) -> None:
    """SPEC §2.1/§3.3: timeout is idle time; a stalled body is retried from the byte reached."""
    url = http_server.add_file(PATH, DATA)
    http_server.set_fault(PATH, stall=5.0, stall_after=CUT, times=1)
    target = tmp_path / "events.fits"
    started = time.monotonic()
    http_download(url, str(target), progress=False, timeout=0.5)
    assert time.monotonic() - started < 3.0
    assert target.read_bytes() == DATA
    assert gets(http_server)[1].headers["range"] == f"bytes={CUT}-"


def test_timeout_is_idle_time_not_total(http_server: FaultServer, tmp_path: pathlib.Path) -> None:
    """SPEC §2.1: a slow but steady body taking longer than timeout= in all is not cut."""
    url = http_server.add_file(PATH, DATA)
    http_server.set_fault(PATH, trickle=(32 * 1024, 0.1))  # ~1 s in all
    target = tmp_path / "events.fits"
    started = time.monotonic()
    http_download(url, str(target), progress=False, timeout=0.5)
    assert time.monotonic() - started > 0.5
    assert target.read_bytes() == DATA
    assert len(gets(http_server)) == 1


def test_timeout_applies_to_a_reused_connection(
    http_server: FaultServer, tmp_path: pathlib.Path
) -> None:
    """A keep-alive connection opened with the default timeout obeys the next call's."""
    first = http_server.add_file("/data/first.fits", DATA)
    url = http_server.add_file(PATH, DATA)
    http_download(first, str(tmp_path / "first.fits"), progress=False)
    http_server.set_fault(PATH, stall=5.0, stall_after=CUT, times=1)
    target = tmp_path / "events.fits"
    started = time.monotonic()
    http_download(url, str(target), progress=False, timeout=0.5)
    assert time.monotonic() - started < 3.0
    assert target.read_bytes() == DATA
    assert http_server.connection_count == 2  # the reused one, then one after the stall


@pytest.mark.parametrize("where", ["before the status line", "before the first byte"])
def test_persistent_stall_gives_up(
    http_server: FaultServer, tmp_path: pathlib.Path, where: str
) -> None:
    """A server that never answers in time ends in a DownloadError, never a hang."""
    url = http_server.add_file(PATH, DATA)
    if where == "before the status line":
        http_server.set_fault(PATH, delay=10.0)
    else:
        http_server.set_fault(PATH, stall=10.0, stall_after=0)
    target = tmp_path / "events.fits"
    started = time.monotonic()
    with pytest.raises(DownloadError, match="timed out"):
        http_download(url, str(target), progress=False, timeout=0.3, retries=1)
    assert time.monotonic() - started < 4.0
    assert len(gets(http_server)) == 2
    assert not target.exists()


# --------------------------------------------------------------- checksum ---


@pytest.mark.parametrize("drop", [False, True])
@pytest.mark.parametrize("algorithm", ["sha256", "md5", "sha1"])
def test_checksum_correct(
    http_server: FaultServer, tmp_path: pathlib.Path, algorithm: str, drop: bool
) -> None:
    """SPEC §2.1: a matching checksum passes, also across a resumed body."""
    url = http_server.add_file(PATH, DATA)
    if drop:
        http_server.set_fault(PATH, drop_after=CUT, times=1)
    target = tmp_path / "events.fits"
    spec = f"{algorithm}:{hashlib.new(algorithm, DATA).hexdigest()}"
    http_download(url, str(target), progress=False, checksum=spec)
    assert target.read_bytes() == DATA


def test_checksum_checked_over_a_part_from_an_earlier_call(
    http_server: FaultServer, tmp_path: pathlib.Path
) -> None:
    """The bytes kept by an interrupted call are hashed too, not only the new ones."""
    data = DATA * 10
    url = http_server.add_file(PATH, data)
    target = tmp_path / "events.fits"
    with pytest.raises(KeyboardInterrupt):
        http_download(url, str(target), progress=interrupt_at(MiB))
    part = pathlib.Path(str(target) + ".part")
    corrupted = bytearray(part.read_bytes())
    corrupted[10] ^= 0xFF
    part.write_bytes(bytes(corrupted))
    with pytest.raises(IntegrityError):
        http_download(url, str(target), progress=False, checksum=sha256(data))
    assert not target.exists()
    assert leftovers(target) == []


@pytest.mark.parametrize("drop", [False, True])
def test_checksum_mismatch(http_server: FaultServer, tmp_path: pathlib.Path, drop: bool) -> None:
    """SPEC §2.1/§3.1: a wrong checksum is an IntegrityError and leaves no file, no .part."""
    url = http_server.add_file(PATH, DATA)
    if drop:
        http_server.set_fault(PATH, drop_after=CUT, times=1)
    target = tmp_path / "events.fits"
    wrong = sha256(b"something else")
    with pytest.raises(IntegrityError) as info:
        http_download(url, str(target), progress=False, checksum=wrong)
    error = info.value
    assert error.expected == wrong.split(":")[1]
    assert error.actual == hashlib.sha256(DATA).hexdigest()
    assert str(target) in str(error)
    assert not target.exists()
    assert leftovers(target) == []


def test_checksum_mismatch_keeps_an_existing_file(
    http_server: FaultServer, tmp_path: pathlib.Path
) -> None:
    """SPEC §3.1: a failed download never touches what is already at the target."""
    url = http_server.add_file(PATH, DATA)
    target = tmp_path / "events.fits"
    target.write_bytes(b"previous version")
    with pytest.warns(DownloadWarning, match="wrong size"), pytest.raises(IntegrityError):
        http_download(url, str(target), progress=False, checksum=sha256(b"x"))
    assert target.read_bytes() == b"previous version"


# -------------------------------------------------------------- redirects ---


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirect_statuses_followed(
    http_server: FaultServer, tmp_path: pathlib.Path, status: int
) -> None:
    """SPEC §3.4: every redirect status is followed (308 included, on every Python)."""
    http_server.add_file(PATH, DATA)
    url = http_server.add_redirect("/old/events.fits", PATH, status=status)
    target = tmp_path / "events.fits"
    http_download(url, str(target), progress=False)
    assert target.read_bytes() == DATA


def test_relative_redirect(http_server: FaultServer, tmp_path: pathlib.Path) -> None:
    """A relative Location is resolved against the URL that answered it."""
    http_server.add_file(PATH, DATA)
    url = http_server.add_redirect("/data/old/x.fits", "../events.fits")
    http_download(url, str(tmp_path / "x.fits"), progress=False)
    assert (tmp_path / "x.fits").read_bytes() == DATA


def test_ten_redirects_followed(http_server: FaultServer, tmp_path: pathlib.Path) -> None:
    """SPEC §3.4: a chain of 10 redirects is followed."""
    http_server.add_file(PATH, DATA)
    url = http_server.add_redirect_chain("/hop", 10, PATH)
    target = tmp_path / "events.fits"
    http_download(url, str(target), progress=False)
    assert target.read_bytes() == DATA
    assert len(http_server.requests) == 11


@pytest.mark.parametrize("kind", ["eleven", "loop"])
def test_too_many_redirects(http_server: FaultServer, tmp_path: pathlib.Path, kind: str) -> None:
    """SPEC §3.4: an 11th redirect, or a loop, is a DownloadError after 11 requests."""
    http_server.add_file(PATH, DATA)
    if kind == "eleven":
        url = http_server.add_redirect_chain("/hop", 11, PATH)
    else:
        url = http_server.add_redirect_loop("/a", "/b")
    target = tmp_path / "events.fits"
    with pytest.raises(DownloadError, match="redirect"):
        http_download(url, str(target), progress=False)
    assert len(http_server.requests) == 11
    assert http_server.requests_for(PATH) == []
    assert not target.exists()


@pytest.mark.parametrize(
    "location", ["file:///etc/passwd", "ftp://127.0.0.1/x.fits", "javascript:alert(1)"]
)
def test_redirect_to_other_scheme_refused(
    http_server: FaultServer, tmp_path: pathlib.Path, location: str
) -> None:
    """SPEC §3.4: only http and https are followed."""
    url = http_server.add_redirect("/x.fits", location)
    target = tmp_path / "x.fits"
    with pytest.raises(DownloadError, match="redirect") as info:
        http_download(url, str(target), progress=False)
    assert location in str(info.value)
    assert not target.exists()


def test_cross_origin_redirect_drops_credentials(
    http_server: FaultServer,
    other_server: FaultServer,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SPEC §3.4: Authorization and Cookie stay with their origin; .netrc is asked again."""
    other_server.add_file(PATH, DATA)
    final = other_server.url(PATH, host="localhost")
    url = http_server.add_redirect("/start.fits", final)
    netrc = tmp_path / "netrc"
    netrc.write_text("machine localhost login other password pw2\n")
    monkeypatch.setenv("NETRC", str(netrc))
    headers = {"Cookie": "session=abc", "X-Trace": "t-1"}
    target = tmp_path / "events.fits"

    http_download(url, str(target), progress=False, auth=("me", "pw1"), headers=headers)

    assert target.read_bytes() == DATA
    (first,) = http_server.requests
    assert first.headers["authorization"] == "Basic bWU6cHcx"  # me:pw1
    assert first.headers["cookie"] == "session=abc"
    (second,) = other_server.requests
    assert second.headers["authorization"] == "Basic b3RoZXI6cHcy"  # other:pw2, from .netrc
    assert "cookie" not in second.headers
    assert second.headers["x-trace"] == "t-1"


def test_cross_origin_redirect_without_netrc_sends_no_authorization(
    http_server: FaultServer, other_server: FaultServer, tmp_path: pathlib.Path
) -> None:
    """SPEC §3.4: caller-given Authorization and Cookie headers stay with their origin."""
    other_server.add_file(PATH, DATA)
    url = http_server.add_redirect("/start.fits", other_server.url(PATH))
    headers = {"Authorization": "Bearer token", "Cookie": "session=abc"}
    http_download(url, str(tmp_path / "x.fits"), progress=False, headers=headers)
    (second,) = other_server.requests
    assert "authorization" not in second.headers
    assert "cookie" not in second.headers


def test_same_origin_redirect_keeps_credentials(
    http_server: FaultServer, tmp_path: pathlib.Path
) -> None:
    """SPEC §3.4: within one origin the credentials follow the redirect."""
    http_server.add_file(PATH, DATA)
    url = http_server.add_redirect("/start.fits", PATH)
    http_download(
        url,
        str(tmp_path / "x.fits"),
        progress=False,
        auth=("me", "pw1"),
        headers={"Cookie": "session=abc"},
    )
    (final,) = http_server.requests_for(PATH)
    assert final.headers["authorization"] == "Basic bWU6cHcx"
    assert final.headers["cookie"] == "session=abc"


# -------------------------------------------------------------------- TLS ---


def test_https_verified_by_default(https_server: FaultServer, tmp_path: pathlib.Path) -> None:
    """SPEC §3.6: a certificate from an unknown CA is refused, and not retried."""
    url = https_server.add_file(PATH, DATA)
    target = tmp_path / "events.fits"
    with pytest.raises(DownloadError, match="certificate verification"):
        http_download(url, str(target), progress=False)
    assert https_server.requests == []
    assert https_server.connection_count == 1
    assert not target.exists()
    assert leftovers(target) == []


def test_https_with_ssl_context(
    https_server: FaultServer,
    client_ssl_context: ssl.SSLContext,
    tmp_path: pathlib.Path,
) -> None:
    """SPEC §2.1: ssl_context= trusts a private CA; resume works over TLS too."""
    url = https_server.add_file(PATH, DATA)
    https_server.set_fault(PATH, drop_after=CUT, times=1)
    target = tmp_path / "events.fits"
    http_download(url, str(target), progress=False, ssl_context=client_ssl_context)
    assert target.read_bytes() == DATA
    assert gets(https_server)[1].headers["range"] == f"bytes={CUT}-"


# ------------------------------------------------------------- keep-alive ---


def test_keep_alive_across_calls(http_server: FaultServer, tmp_path: pathlib.Path) -> None:
    """Issue 2: successive calls reuse one connection, cache checks (HEAD) included."""
    urls = [http_server.add_file(f"/data/f{i}.fits", DATA[: 1000 + i]) for i in range(20)]
    for i, url in enumerate(urls):
        http_download(url, str(tmp_path / f"f{i}.fits"), progress=False)
    assert http_server.connection_count <= 2
    for i, url in enumerate(urls):  # every one a cache hit, checked with HEAD
        http_download(url, str(tmp_path / f"f{i}.fits"), progress=False)
    assert [r.method for r in http_server.requests].count("HEAD") == 20
    assert http_server.connection_count <= 2


# ---------------------------------------------------------------- proxies ---


def test_http_proxy_gets_absolute_form(
    http_server: FaultServer,
    other_server: FaultServer,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 2: HTTP_PROXY is honoured; the proxy receives the absolute URL."""
    url = http_server.add_file(PATH, DATA)
    other_server.add_file(PATH, DATA)  # the "proxy" answers for the origin
    proxy = other_server.base_url.replace("http://", "http://puser:ppw@")
    monkeypatch.setenv("http_proxy", proxy)
    target = tmp_path / "events.fits"
    http_download(url, str(target), progress=False)
    assert target.read_bytes() == DATA
    assert http_server.requests == []
    (request,) = other_server.requests
    assert request.path == url
    assert request.headers["proxy-authorization"] == "Basic cHVzZXI6cHB3"  # puser:ppw


@pytest.mark.parametrize("no_proxy", ["127.0.0.1", "*", "localhost,127.0.0.1"])
def test_no_proxy_bypasses(
    http_server: FaultServer,
    other_server: FaultServer,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    no_proxy: str,
) -> None:
    """Issue 2: NO_PROXY hosts are reached directly."""
    url = http_server.add_file(PATH, DATA)
    monkeypatch.setenv("http_proxy", other_server.base_url)
    monkeypatch.setenv("no_proxy", no_proxy)
    http_download(url, str(tmp_path / "x.fits"), progress=False)
    assert other_server.requests == []
    (request,) = http_server.requests
    assert request.path == PATH


def test_https_proxy_tunnels_with_connect(
    https_server: FaultServer,
    client_ssl_context: ssl.SSLContext,
    raw_server_factory: Callable[[RawHandler], RawServer],
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """docs/security.md: https through a proxy is a CONNECT tunnel.

    The proxy gets its credentials in the CONNECT only and sees no
    plaintext; the origin never sees the proxy's credentials.
    """

    from servers import relay_tunnel

    url = https_server.add_file(PATH, DATA)
    relayed: list[bytes] = []

    def tunnel(conn: socket.socket, head: bytes) -> None:
        relay_tunnel(conn, https_server.port, relayed)

    proxy = raw_server_factory(tunnel)
    monkeypatch.setenv("https_proxy", f"http://puser:ppw@127.0.0.1:{proxy.port}")
    target = tmp_path / "events.fits"
    http_download(url, str(target), progress=False, ssl_context=client_ssl_context)
    assert target.read_bytes() == DATA
    (connect,) = proxy.requests
    host = f"127.0.0.1:{https_server.port}"
    # http.client writes CONNECT as HTTP/1.0 before Python 3.12, as HTTP/1.1 since.
    assert connect.startswith(f"CONNECT {host} HTTP/1.".encode())
    assert b"Proxy-Authorization: Basic cHVzZXI6cHB3\r\n" in connect  # puser:ppw
    assert DATA[:4096] not in b"".join(relayed)  # TLS end to end: no plaintext
    (request,) = gets(https_server)
    assert "proxy-authorization" not in request.headers


# ---------------------------------------------------------------- session ---


def test_requests_session(http_server: FaultServer, tmp_path: pathlib.Path) -> None:
    """SPEC §2.1: a requests.Session is the transport; identity encoding, resume, retries."""
    requests = pytest.importorskip("requests")
    url = http_server.add_file(PATH, DATA)
    http_server.set_fault(PATH, drop_after=CUT, times=1)
    http_server.set_fault(PATH, status=503, after=1, times=1)
    target = tmp_path / "events.fits"
    with requests.Session() as session:
        session.headers["X-Session"] = "yes"
        http_download(url, str(target), progress=False, session=session)
    assert target.read_bytes() == DATA
    seen = gets(http_server)
    assert [r.status for r in seen] == [200, 503, 206]
    for request in seen:
        assert request.headers["accept-encoding"] == "identity"
        assert request.headers["x-session"] == "yes"
    assert seen[2].headers["range"] == f"bytes={CUT}-"


@pytest.mark.parametrize("credentials", ["auth=", "session.auth", "session.headers", "netrc"])
def test_requests_session_cross_origin_redirect(
    http_server: FaultServer,
    other_server: FaultServer,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    credentials: str,
) -> None:
    """SPEC §3.4 with session=: the session's own credentials stay at home too."""
    requests = pytest.importorskip("requests")
    other_server.add_file(PATH, DATA)
    url = http_server.add_redirect("/start.fits", other_server.url(PATH, host="localhost"))
    netrc = tmp_path / "netrc"
    netrc.write_text("machine localhost login other password pw2\n")
    monkeypatch.setenv("NETRC", str(netrc))
    kwargs: dict[str, object] = {}
    with requests.Session() as session:
        session.cookies.set("session", "abc")  # for any domain
        if credentials == "auth=":
            kwargs["auth"] = ("me", "pw1")
        elif credentials == "session.auth":
            session.auth = ("me", "pw1")
        elif credentials == "session.headers":
            session.headers["Authorization"] = "Basic bWU6cHcx"
        target = tmp_path / "x.fits"
        http_download(url, str(target), progress=False, session=session, **kwargs)
    assert target.read_bytes() == DATA
    (first,) = http_server.requests
    assert first.headers["cookie"] == "session=abc"
    if credentials != "netrc":
        assert first.headers["authorization"] == "Basic bWU6cHcx"  # me:pw1
    (second,) = other_server.requests
    assert second.headers["authorization"] == "Basic b3RoZXI6cHcy"  # other:pw2, from .netrc
    assert "cookie" not in second.headers


def test_requests_session_cross_origin_without_netrc(
    http_server: FaultServer, other_server: FaultServer, tmp_path: pathlib.Path
) -> None:
    """With nothing for the new host, no Authorization and no Cookie at all."""
    requests = pytest.importorskip("requests")
    other_server.add_file(PATH, DATA)
    url = http_server.add_redirect("/start.fits", other_server.url(PATH))
    with requests.Session() as session:
        session.auth = ("me", "pw1")
        session.headers["Cookie"] = "session=abc"
        http_download(url, str(tmp_path / "x.fits"), progress=False, session=session)
    assert http_server.requests[0].headers["authorization"] == "Basic bWU6cHcx"
    (second,) = other_server.requests
    assert "authorization" not in second.headers
    assert "cookie" not in second.headers

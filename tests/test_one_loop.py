"""One body loop, one retry loop (issue 11 item 3).

Every body (the whole file, a resumed one, each parallel range, a small
file of a batch, an S3 listing page) goes through ``_exchange.read_body``,
and every request through ``_exchange.retrying``. What that must show from
outside: a listing costs at most ``retries + 1`` requests whatever fails
(it nested two loops: 36 at ``retries=5``), and a parallel download stops
all its ranges at once when one fails or on Ctrl-C, instead of waiting for
each to end by itself.

The servers are :class:`servers.RawServer` scripts: an S3-like listing
endpoint that answers 503 and cut bodies in turn (what S3 does under
throttling and a flaky network), and a ranged server whose ranges stall
(a stuck S3 connection) while one is refused.
"""

from __future__ import annotations

import os
import random
import re
import threading
import time

import pytest

import pyvo_dl
from pyvo_dl import DownloadError, HTTPStatusError, _parallel
from servers import build_response

TYPE_CHECKING = False
if TYPE_CHECKING:
    import pathlib
    import socket
    from collections.abc import Callable

    from servers import RawHandler, RawServer

    Factory = Callable[[RawHandler], RawServer]

MIB = 1024 * 1024
ETAG = '"v1"'


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Full jitter draws 0: retries follow at once (the retry count is what is tested)."""
    monkeypatch.setattr(random, "random", lambda: 0.0)


def test_a_listing_costs_at_most_retries_plus_one_requests(
    raw_server_factory: Factory, tmp_path: pathlib.Path, no_backoff: None
) -> None:
    """503, then a body cut short, in turn: before, 503s were retried inside each body retry."""
    seen: list[bytes] = []

    def handler(conn: socket.socket, request: bytes) -> None:
        seen.append(request)
        if len(seen) % 2:
            conn.sendall(build_response(503, headers={"Content-Length": "0"}))
        else:
            conn.sendall(build_response(200, headers={"Content-Length": "500"}, body=b"<List"))
            conn.close()

    server = raw_server_factory(handler)
    with pytest.raises((DownloadError, HTTPStatusError)):
        pyvo_dl.aws_download(
            uri="s3://bucket/prefix/", local_filepath=str(tmp_path), recursive=True,
            endpoint_url=server.base_url, retries=5, progress=False,
        )  # fmt: skip
    assert len(seen) == 6
    assert all(b"list-type=2" in r for r in seen)


# -- a parallel download stops every range at once --------------------------------

SIZE = 16 * MIB  # four ranges of 4 MiB


def _asked(request: bytes, size: int) -> tuple[int, int]:
    found = re.search(rb"(?im)^range:\s*bytes=(\d+)-(\d*)", request)
    assert found is not None
    return int(found.group(1)), int(found.group(2)) if found.group(2) else size - 1


def _ranged(refuse_from: int, stall: threading.Event) -> RawHandler:
    """An object of SIZE bytes: the first part at once, the others stalled, one refused.

    ``refuse_from``: the range starting there is refused (403); stalled
    answers send their head and a first chunk, then nothing until ``stall``
    is set (30 s at most).
    """
    chunk = bytes(64 * 1024)

    def handler(conn: socket.socket, request: bytes) -> None:
        start, end = _asked(request, SIZE)
        if start == refuse_from:
            conn.sendall(build_response(403, headers={"Content-Length": "0"}))
            return
        head = build_response(206, headers={
            "Content-Range": f"bytes {start}-{end}/{SIZE}", "ETag": ETAG,
            "Content-Length": str(end + 1 - start),
        })  # fmt: skip
        if start == 0:
            conn.sendall(head + bytes(end + 1))
            return
        conn.sendall(head + chunk)
        stall.wait(30)
        conn.close()

    return handler


def test_one_range_failing_stops_the_others_at_once(
    raw_server_factory: Factory, tmp_path: pathlib.Path
) -> None:
    """Before, each range was waited for in turn: a stalled one held the error for its timeout."""
    stall = threading.Event()
    server = raw_server_factory(_ranged(4 * MIB, stall))
    started = time.monotonic()
    try:
        with pytest.raises(HTTPStatusError) as raised:
            pyvo_dl.http_download(server.url("/cube.fits"), str(tmp_path / "cube.fits"),
                                  connections=4, timeout=30, retries=0, progress=False)  # fmt: skip
        elapsed = time.monotonic() - started
    finally:
        stall.set()
    assert raised.value.status == 403
    assert elapsed < 10.0  # the stalled ranges would hold it 30 s
    assert not (tmp_path / "cube.fits").exists()


def test_ctrl_c_stops_every_range_at_once(
    raw_server_factory: Factory, tmp_path: pathlib.Path
) -> None:
    """Ctrl-C in the waiting caller (a notebook's interrupt) ends the ranges too."""
    import signal

    stall = threading.Event()
    server = raw_server_factory(_ranged(-1, stall))
    interrupted = threading.Event()

    def progress(done: int, total: int | None) -> None:
        if done >= 4 * MIB and not interrupted.is_set():  # the first range is in
            interrupted.set()
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, as a terminal sends it

    # A shell without job control starts background commands with SIGINT
    # ignored, and Python keeps an inherited SIG_IGN: the Ctrl-C below would
    # then do nothing and the stalled ranges hold the test for minutes.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            pyvo_dl.http_download(server.url("/cube.fits"), str(tmp_path / "cube.fits"),
                                  connections=4, timeout=30, retries=0, progress=progress)  # fmt: skip
        elapsed = time.monotonic() - started
    finally:
        stall.set()
        signal.signal(signal.SIGINT, previous)
    assert elapsed < 10.0
    assert not (tmp_path / "cube.fits").exists()
    # The part map is kept: a later call resumes what had arrived.
    assert (tmp_path / "cube.fits.part.json").exists()


def test_parallel_first_answer_continues_without_a_retry(
    raw_server_factory: Factory, tmp_path: pathlib.Path
) -> None:
    """The first range's rest is asked for at once: no backoff, no retry spent (retries=0)."""
    size = 24 * MIB  # two ranges of 12 MiB: the first answer (8 MiB) covers part of one
    body = os.urandom(size)
    first = _parallel.FIRST_PART

    def handler(conn: socket.socket, request: bytes) -> None:
        start, end = _asked(request, size)
        conn.sendall(build_response(206, headers={
            "Content-Range": f"bytes {start}-{end}/{size}", "ETag": ETAG,
        }, body=body[start : end + 1]))  # fmt: skip

    server = raw_server_factory(handler)
    target = tmp_path / "cube.fits"
    pyvo_dl.http_download(server.url("/cube.fits"), str(target), connections=2, retries=0,
                          progress=False)  # fmt: skip
    assert target.read_bytes() == body
    asked = sorted(_asked(r, size) for r in server.requests)
    half = size // 2
    assert asked == [(0, first - 1), (first, half - 1), (half, size - 1)]

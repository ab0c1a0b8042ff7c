"""Every ``206`` must carry the recorded validators (SPEC §3.2; issue 12.1).

A resumed download asks for the rest with ``If-Range``; a server that honours
it (nginx, Apache httpd, lighttpd) answers ``200`` with the whole new object
when the file changed. Many do not: aiohttp's static handler ignores an ETag
in ``If-Range``, tornado's ``StaticFileHandler`` and twisted's ``twist web``
ignore ``If-Range`` altogether, and so do many CDNs and proxies. They answer
``206`` with the *current* validators, and a client that appends that body
stitches the old prefix to the new tail. tornado even keeps a stale ``ETag``
while its ``Last-Modified`` moves on. So the client records both validators,
and accepts a ``206`` (one stream or each parallel range) only when every
validator it recorded is there and equal, checked before a byte is written;
anything else starts over from byte 0. A ``200`` to a resume is kept as the
new download, not asked for again.

The fault server plays each of these servers (``ignore_if_range``,
``omit_headers``, ``replace_file(etag=...)``), one connection and four.
"""

from __future__ import annotations

import hashlib
import json

import pytest

import pyvo_dl
from pyvo_dl import _parallel
from servers import DEFAULT_LAST_MODIFIED

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any, Callable, Dict

    Options = Dict[str, Any]

    from servers import FaultServer

MiB = 1024 * 1024
PATH = "/archive/cube.fits"


def data(size: int, seed: bytes) -> bytes:
    block = hashlib.sha256(seed).digest() * (MiB // 32)
    return (block * (size // len(block) + 1))[:size]


class Interrupted(Exception):
    """Raised by a progress callable: a caller that gave up (Ctrl-C) part-way."""


def interrupt_at(limit: int) -> Callable[[int, int | None], None]:
    def progress(done: int, total: int | None) -> None:
        if done >= limit:
            raise Interrupted(done)

    return progress


def start_and_stop(url: str, target: Path, connections: int, size: int) -> int:
    """Download part of ``url`` and stop there; return the bytes the state says are kept."""
    with pytest.raises(Interrupted):
        pyvo_dl.http_download(
            url, str(target), progress=interrupt_at(size // 2), connections=connections
        )
    state = json.loads(target.with_name(target.name + ".part.json").read_text())
    if state.get("parts"):
        return sum(p[2] for p in state["parts"])
    return target.with_name(target.name + ".part").stat().st_size


#: Servers that answer a resume with a 206 whatever If-Range says, and how the
#: object and its answers look once it is replaced (same size): server options
#: before, replace_file options, server options after.
IGNORING_SERVERS: dict[str, tuple[Options, Callable[[FaultServer], Options], Options]] = {
    # aiohttp's static handler (an ETag in If-Range), twisted's twist web, CDNs:
    # a new ETag and a new Last-Modified.
    "new validators": ({"ignore_if_range": True}, lambda server: {}, {}),
    # tornado's StaticFileHandler: its ETag is a hash cached per path, so it
    # stays stale while Last-Modified moves on.
    "stale ETag, new Last-Modified": (
        {"ignore_if_range": True},
        lambda server: {"etag": server.etag(PATH)},
        {},
    ),
    # A server without ETags (Apache with FileETag None): Last-Modified only.
    "Last-Modified only": (
        {"ignore_if_range": True, "omit_headers": ("ETag",)},
        lambda server: {},
        {},
    ),
    # The ETag recorded is gone (the files now behind a proxy that hides it,
    # nginx's proxy_hide_header ETag) and Last-Modified is the same: only the
    # missing validator tells.
    "ETag gone, same Last-Modified": (
        {"ignore_if_range": True},
        lambda server: {"last_modified": DEFAULT_LAST_MODIFIED},
        {"omit_headers": ("ETag",)},
    ),
}


@pytest.mark.parametrize("connections", [1, 4])
@pytest.mark.parametrize("server_kind", list(IGNORING_SERVERS))
def test_a_server_ignoring_if_range_never_gets_a_file_stitched(
    http_server: FaultServer, tmp_path: Path, connections: int, server_kind: str
) -> None:
    size = 3 * _parallel.MIN_PART_SIZE  # split in three ranges with connections=4
    old, new = data(size, b"old"), data(size, b"new")  # the same size: only validators tell
    before, replaced, after = IGNORING_SERVERS[server_kind]
    url = http_server.add_file(PATH, old)
    http_server.set_fault(PATH, **before)
    target = tmp_path / "cube.fits"
    kept = start_and_stop(url, target, connections, size)
    assert 0 < kept < size
    http_server.replace_file(PATH, new, **replaced(http_server))
    if after:
        http_server.set_fault(PATH, **after)
    http_server.reset_log()

    pyvo_dl.http_download(url, str(target), progress=False, connections=connections)

    assert target.read_bytes() == new
    resumed = http_server.requests_for(PATH, "GET")[0]
    assert resumed.status == 206  # the server did ignore If-Range
    assert not list(tmp_path.glob("*.part*"))


@pytest.mark.parametrize("connections", [1, 4])
def test_an_unchanged_object_is_resumed_by_a_server_ignoring_if_range(
    http_server: FaultServer, tmp_path: Path, connections: int
) -> None:
    """The check costs nothing when nothing changed: only the missing bytes are sent."""
    size = 3 * _parallel.MIN_PART_SIZE
    url = http_server.add_file(PATH, data(size, b"same"))
    http_server.set_fault(PATH, ignore_if_range=True)
    target = tmp_path / "cube.fits"
    kept = start_and_stop(url, target, connections, size)
    http_server.reset_log()

    pyvo_dl.http_download(url, str(target), progress=False, connections=connections)

    assert target.read_bytes() == data(size, b"same")
    assert http_server.bytes_sent(PATH) == size - kept


def test_a_200_to_a_resume_is_kept_as_the_new_download(
    http_server: FaultServer, tmp_path: Path
) -> None:
    """nginx answers If-Range for a changed file with 200 and all of it: one request, not two."""
    size = 3 * MiB
    url = http_server.add_file(PATH, data(size, b"old"))
    target = tmp_path / "cube.fits"
    start_and_stop(url, target, 1, size)
    http_server.replace_file(PATH, data(size, b"new"))
    http_server.reset_log()

    pyvo_dl.http_download(url, str(target), progress=False)

    assert target.read_bytes() == data(size, b"new")
    (only,) = http_server.requests_for(PATH, "GET")
    assert only.headers["range"].startswith("bytes=")
    assert (only.status, only.bytes_sent) == (200, size)

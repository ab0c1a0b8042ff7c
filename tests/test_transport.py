"""The HTTP/1.1 wire format of the built-in transport (pyvo_dl._transport).

The answers come through real sockets (``socket.socketpair``) or, for the
head parser, a buffered reader over bytes: the parsing is checked on its
own here, and end to end against loopback servers in test_http_*.py and
test_hostile.py.
"""

from __future__ import annotations

import io
import socket
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyvo_dl._transport import (
    ProtocolError,
    StdlibResponse,
    _Connection,
    parse_header_lines,
    read_head,
    read_status,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


def _reader(data: bytes, size: int = 65536) -> io.BufferedReader:
    return io.BufferedReader(io.BytesIO(data), buffer_size=size)  # type: ignore[arg-type]


def _line_by_line(data: bytes) -> tuple[tuple[int, int, str], dict[str, str], bytes]:
    fp = _reader(data)
    status = read_status(fp)  # type: ignore[arg-type]
    headers = parse_header_lines(fp)  # type: ignore[arg-type]
    return status, dict(headers), fp.read()


_NAMES = st.sampled_from(["Content-Length", "content-length", "ETag", "X-A", "Set-Cookie", "Via"])
_VALUES = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"))
_FIELD = st.tuples(_NAMES, st.sampled_from([":", ": ", " : ", ":\t"]), _VALUES)
_LINE = st.one_of(
    _FIELD.map(lambda f: f"{f[0]}{f[1]}{f[2]}"),
    _VALUES.map(lambda v: " " + v),  # a continuation line
    st.just("not a field"),
)


@given(st.lists(_LINE, max_size=20), st.binary(max_size=64), st.sampled_from([8, 64, 65536]))
def test_one_pass_head_equals_line_by_line(lines: list[str], body: bytes, size: int) -> None:
    """read_head's one-pass parse gives what the line-by-line parse gives, and stops at the body."""
    head = "\r\n".join(["HTTP/1.1 200 OK", *lines]).encode("latin-1") + b"\r\n\r\n"
    fp = _reader(head + body, size)
    version, status, reason, headers = read_head(fp)  # type: ignore[arg-type]
    expected_status, expected_headers, expected_body = _line_by_line(head + body)
    assert (version, status, reason) == expected_status
    assert dict(headers) == expected_headers
    assert fp.read() == body == expected_body


def test_head_with_bare_line_feeds_is_read_line_by_line() -> None:
    fp = _reader(b"HTTP/1.0 404 Not Found\nContent-Length: 3\nX: a\r\n\r\nabc")
    version, status, reason, headers = read_head(fp)  # type: ignore[arg-type]
    assert (version, status, reason) == (10, 404, "Not Found")
    assert headers["content-length"] == "3"
    assert headers.get("X") == "a"
    assert fp.read() == b"abc"


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/2 200 OK\r\n\r\n",
        b"ICY 200 OK\r\n\r\n",
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 101 + b"\r\n",
        b"HTTP/1.1 200 OK\r\nX: " + b"y" * 70000 + b"\r\n\r\n",
    ],
)
def test_broken_heads_are_protocol_errors(head: bytes) -> None:
    for size in (16, 65536):  # head in the buffer, or not
        with pytest.raises(ProtocolError):
            read_head(_reader(head, size))  # type: ignore[arg-type]


# -- bodies, through a socket pair --------------------------------------------


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.settimeout(5)
    yield a, b
    a.close()
    b.close()


def _response(sock: socket.socket, method: str = "GET") -> tuple[StdlibResponse, list[_Connection]]:
    conn = _Connection(sock, ("http", "h", 80, None))
    version, status, reason, headers = read_head(conn.fp)
    released: list[_Connection] = []
    response = StdlibResponse(
        conn, status, reason, version, headers, method, "http://h/x", released.append
    )
    return response, released


def _send_later(peer: socket.socket, *parts: bytes) -> threading.Thread:
    def send() -> None:
        for part in parts:
            peer.sendall(part)

    thread = threading.Thread(target=send)
    thread.start()
    return thread


def test_chunked_body_with_extensions_and_trailers(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, peer = pair
    thread = _send_later(
        peer,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"5;ext=1\r\nhello\r\n",
        b"1\r\n \r\n6\r\nworld!\r\n",
        b"0\r\nX-Trailer: t\r\n\r\n",
    )
    response, released = _response(ours)
    assert response.read(1000) == b"hello world!"
    response.release()
    thread.join()
    assert len(released) == 1  # the body ended cleanly: the connection is kept


def test_body_cut_short_hands_over_what_came_then_fails(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, peer = pair
    peer.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabcd")
    peer.shutdown(socket.SHUT_WR)
    response, released = _response(ours)
    buffer = bytearray(10)
    assert response.readinto(buffer) == 4
    from pyvo_dl._transport import ConnectionFault

    with pytest.raises(ConnectionFault, match="closed early"):
        response.readinto(memoryview(buffer)[4:])
    response.release()
    assert released == []


def test_answer_to_head_with_a_body_is_not_reused(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, peer = pair
    peer.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray")
    response, released = _response(ours, method="HEAD")
    assert response.readinto(bytearray(10)) == 0
    response.release()
    assert released == []  # out of step: closed rather than kept


def test_body_until_close(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, peer = pair
    peer.sendall(b"HTTP/1.0 200 OK\r\n\r\nall of it")
    peer.shutdown(socket.SHUT_WR)
    response, released = _response(ours)
    assert response.read(100) == b"all of it"
    response.release()
    assert released == []  # HTTP/1.0 without keep-alive: closed


# -- splicing a body into a file (Linux, Python 3.10+) ---------------------------

needs_splice = pytest.mark.skipif(
    not hasattr(__import__("os"), "splice"), reason="os.splice: Linux, Python 3.10+"
)


@needs_splice
def test_splice_moves_a_sized_body_into_the_file(
    pair: tuple[socket.socket, socket.socket], tmp_path: Path
) -> None:
    import os

    ours, peer = pair
    body = os.urandom(3 * 1024 * 1024 + 17)
    thread = _send_later(peer, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body), body)
    response, released = _response(ours)
    assert response.can_splice()
    with open(tmp_path / "out", "wb") as f:
        while response.splice_into(f.fileno(), 1024 * 1024):
            pass
    thread.join()
    response.release()
    assert (tmp_path / "out").read_bytes() == body
    assert len(released) == 1


@needs_splice
def test_splice_hands_over_what_came_before_a_cut(
    pair: tuple[socket.socket, socket.socket], tmp_path: Path
) -> None:
    from pyvo_dl._transport import ConnectionFault

    ours, peer = pair
    peer.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 500000\r\n\r\n" + b"x" * 200_000)
    peer.shutdown(socket.SHUT_WR)
    response, _ = _response(ours)
    moved = []
    with open(tmp_path / "out", "wb") as f:

        def splice_until_it_fails() -> None:
            while True:
                moved.append(response.splice_into(f.fileno(), 1024 * 1024))

        with pytest.raises(ConnectionFault, match="closed early"):
            splice_until_it_fails()
    assert sum(moved) == 200_000
    assert (tmp_path / "out").read_bytes() == b"x" * 200_000


def test_chunked_and_tls_bodies_are_not_spliced(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, peer = pair
    peer.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    response, _ = _response(ours)
    assert not response.can_splice()

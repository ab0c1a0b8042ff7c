"""The built-in transport (pyvo_dl._transport) byte by byte, against scripted sockets.

Every answer here comes from :class:`servers.RawServer`, which sends the
bytes a test scripts (urllib3's ``SocketDummyServerTestCase``): the framing
cases of issue 11 that http.client lets through, the response cases of
CPython's own ``Lib/test/test_httplib.py`` re-expressed end to end (what
CPython accepts is accepted, except where this library refuses on purpose,
said beside each), heads cut at every byte, trickled heads, interim answers,
stray bytes after a body, and the keep-alive pool's rules. Each download goes
through ``http_download`` as a user's does.

The fake servers imitate, case by case, what broken or hostile real servers
and proxies send; no real server sends these on purpose (nginx, Apache and
lighttpd frame their answers correctly), which is why a script is needed.
"""

from __future__ import annotations

import http.client
import os
import socket
import threading
import time

import pytest

import pyvo_dl
from pyvo_dl import DownloadError, _transport
from servers import build_response

TYPE_CHECKING = False
if TYPE_CHECKING:
    import pathlib
    from collections.abc import Callable

    from servers import RawHandler, RawServer

    Factory = Callable[[RawHandler], RawServer]

PATH = "/data/cube.fits"
BODY = b"0123456789"


def leftovers(folder: pathlib.Path) -> list[str]:
    return sorted(os.listdir(folder))


def serve(factory: Factory, *answers: bytes, close: bool = False) -> RawServer:
    """A server that sends ``answers`` in turn, one per request (the last one again after)."""
    sent: list[int] = []

    def handler(conn: socket.socket, request: bytes) -> None:
        conn.sendall(answers[min(len(sent), len(answers) - 1)])
        sent.append(1)
        if close:
            conn.close()

    return factory(handler)


def download(
    server: RawServer, folder: pathlib.Path, name: str = "cube.fits", **kw: object
) -> bytes:
    kw.setdefault("retries", 0)
    kw.setdefault("timeout", 5)
    path = pyvo_dl.http_download(server.url(PATH), str(folder / name), progress=False, **kw)  # type: ignore[arg-type]
    with open(path, "rb") as f:
        return f.read()


# -- the private parts of the standard library that the transport builds on ----------


def test_the_private_names_used_exist_on_this_python() -> None:
    """http.client's internals that _transport extends or calls (run on 3.8 and 3.13 in CI).

    A Python that renamed one of these would break the transport; this test
    says which, instead of a download failing somewhere.
    """
    for name in ("_read_status", "_read_next_chunk_size", "_check_close", "_close_conn"):
        assert callable(getattr(http.client.HTTPResponse, name)), name
    assert callable(http.client._read_headers)  # type: ignore[attr-defined]
    assert callable(http.client.HTTPMessage.raw_items)  # the fields as parsed
    import io

    assert http.client.parse_headers(io.BytesIO(b"\r\n"))._payload == ""  # type: ignore[attr-defined]
    conn = http.client.HTTPConnection("127.0.0.1", 9)
    assert callable(conn._create_connection)  # type: ignore[attr-defined]
    assert conn.response_class is http.client.HTTPResponse
    # The CONNECT of a tunnel is read with the connection's response_class.
    import inspect

    assert "response_class" in inspect.getsource(http.client.HTTPConnection._tunnel)  # type: ignore[attr-defined]
    assert "_create_connection" in inspect.getsource(http.client.HTTPConnection.connect)


# -- framing that RFC 9112 calls an error: refused, not retried ----------------------

REFUSED = {
    # the case: chunked body of 10 bytes, Content-Length 5 (a 5-byte file, "success")
    "both framing headers": (
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
            b"a\r\n0123456789\r\n0\r\n\r\n"
        ),
        "both Transfer-Encoding and Content-Length",
    ),
    "other coding": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        "only chunked",
    ),
    "chunked twice": (
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"0\r\n\r\n"
        ),
        "only chunked",
    ),
    "chunked as a substring": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: xchunked\r\n\r\n" + BODY,
        "only chunked",
    ),
    "lengths that disagree": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 5, 10\r\n\r\n" + BODY,
        "disagree",
    ),
    "two length fields": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nContent-Length: 5\r\n\r\n" + BODY,
        "disagree",
    ),
    "signed length": (b"HTTP/1.1 200 OK\r\nContent-Length: +10\r\n\r\n" + BODY, "not a length"),
    "hex length": (b"HTTP/1.1 200 OK\r\nContent-Length: 0xa\r\n\r\n" + BODY, "not a length"),
    "underscore length": (b"HTTP/1.1 200 OK\r\nContent-Length: 1_0\r\n\r\n" + BODY, "not a length"),
    # CPython's test_negative_content_length reads such a body until close.
    "negative length": (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n" + BODY, "not a length"),
    "Arabic-Indic digits": (
        "HTTP/1.1 200 OK\r\nContent-Length: \u0661\u0660\r\n\r\n".encode("utf-8") + BODY,
        "not a length",
    ),
    "19 digits": (b"HTTP/1.1 200 OK\r\nContent-Length: " + b"1" * 19 + b"\r\n\r\n", "not a length"),
    # int() of 5000 digits raises ValueError about sys.set_int_max_str_digits (3.11+).
    "5000 digits": (
        b"HTTP/1.1 200 OK\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n",
        "not a length",
    ),
    "empty length": (b"HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n" + BODY, "not a length"),
    # The email parser ends the header fields here: http.client never sees the
    # Transfer-Encoding and would write the chunk size lines into the file.
    "space before a colon": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding : chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "not a header field",
    ),
    "a line without a colon": (
        (
            b"HTTP/1.1 200 OK\r\nX-A: 1\r\nnot a field\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\n\r\n"
        ),
        "not a header field",
    ),
    # The email parser takes a lone CR as the end of the fields, with no defect.
    "a lone CR": (
        (
            b"HTTP/1.1 200 OK\r\nX-A: 1\r\n\rTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\n\r\n"
        ),
        "not a header field",
    ),
    "first field folded": (
        b"HTTP/1.1 200 OK\r\n folded: x\r\nContent-Length: 10\r\n\r\n" + BODY,
        "not a header field",
    ),
    "From line": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nFrom nobody\r\n\r\n" + BODY,
        "not a header field",
    ),
    "signed chunk size": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n",
        "chunk size",
    ),
    "0x chunk size": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
        "chunk size",
    ),
    "underscore chunk size": (
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1_0\r\n0123456789abcdef\r\n"
            b"0\r\n\r\n"
        ),
        "chunk size",
    ),
    # CPython's test_chunked, 'foo' after the chunks: IncompleteRead there.
    "a word for a chunk size": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\nhello worl\r\nfoo\r\n",
        "chunk size",
    ),
    "space before a chunk size": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n 5\r\nhello\r\n0\r\n\r\n",
        "chunk size",
    ),
    "17 hex digits": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"0" * 16 + b"5\r\nhello\r\n",
        "chunk size",
    ),
    # A status code is three ASCII digits: int() takes these.
    "Arabic-Indic status": (
        "HTTP/1.1 \u0662\u0660\u0660 OK\r\nContent-Length: 10\r\n\r\n".encode("utf-8") + BODY,
        "status line",
    ),
    "superscript status": (
        "HTTP/1.1 \u00b2\u2070\u2070 OK\r\nContent-Length: 10\r\n\r\n".encode("utf-8") + BODY,
        "status line",
    ),
    "four-digit status": (b"HTTP/1.1 2000 OK\r\nContent-Length: 10\r\n\r\n" + BODY, "status line"),
    "tab-separated status": (
        b"HTTP/1.1\t200\tOK\r\nContent-Length: 10\r\n\r\n" + BODY,
        "status line",
    ),
    # CPython's test_status_lines.
    "400.100": (b"HTTP/1.1 400.100 Not Ok\r\n\r\nText", "status line"),
    "not HTTP": (b"SSH-2.0-OpenSSH_9.2\r\n", "status line"),
    "HTTP/2": (b"HTTP/2.0 200 OK\r\nContent-Length: 10\r\n\r\n" + BODY, "protocol"),
    "21 interim answers": (
        b"HTTP/1.1 100 Continue\r\n\r\n" * 21
        + b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
        + BODY,
        "interim",
    ),
    # CPython's test_too_many_headers, test_overflowing_*: http.client's limits.
    "101 headers": (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 101 + b"\r\n", "got more than 100"),
    "long status line": (b"HTTP/1.1 200 Ok" + b"k" * 65536 + b"\r\n", "status line"),
    "long header line": (b"HTTP/1.1 200 OK\r\nX-Foo: bar" + b"r" * 65536 + b"\r\n\r\n", "header"),
    "too many headers after 100": (b"HTTP/1.1 100 OK\r\n" + b"r\n" * 32768, "got more than"),
    "long chunk size line": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"0" * 65536
        + b"a\r\nhello world\r\n0\r\n\r\n",
        "chunk size",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_broken_framing_is_refused_at_once(
    raw_server_factory: Factory, tmp_path: pathlib.Path, case: str
) -> None:
    """Issue 11: a clear DownloadError naming what is wrong, no retry, no file."""
    answer, reason = REFUSED[case]
    server = serve(raw_server_factory, answer, close=True)
    with pytest.raises(DownloadError, match="malformed answer") as raised:
        download(server, tmp_path, retries=3)
    assert reason in str(raised.value)
    assert not isinstance(raised.value, _transport.ConnectionFault)
    assert server.connection_count == 1  # not retried: it would say the same again
    assert not (tmp_path / "cube.fits").exists()


ACCEPTED = {
    # Lengths that agree are one length (RFC 9110 section 8.6); int() refuses "10, 10".
    "lengths that agree": b"HTTP/1.1 200 OK\r\nContent-Length: 10, 10\r\n\r\n" + BODY,
    "two equal length fields": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\ncontent-length: 10\r\n\r\n" + BODY
    ),
    "Chunked in capitals": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\na\r\n0123456789\r\n0\r\n\r\n"
    ),
    # RFC 9112: BWS before a chunk extension; CPython's test_chunked_extension.
    "chunk extensions": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'3;foo=bar\r\n012\r\n7 ; x="y"\r\n3456789\r\n0;foo=bar\r\n\r\n'
    ),
    "trailers": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n0\r\n"
        b"X-Dummy: foo\r\nX-Dumm2: bar\r\n\r\n"
    ),
    "upper-case hex": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n"
    ),
    # CPython's test_blank_line_forms: a bare LF ends the head too.
    "bare LF blank line": b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\n" + BODY,
    "bare LF lines": b"HTTP/1.1 200 OK\nContent-Length: 10\n\n" + BODY,
    "no reason phrase": b"HTTP/1.1 200\r\nContent-Length: 10\r\n\r\n" + BODY,
    # CPython's test_malformed_headers_coped_with.
    "empty field name": (
        b"HTTP/1.1 200 OK\r\nFirst: val\r\n: nval\r\nContent-Length: 10\r\n\r\n" + BODY
    ),
    # CPython's test_parse_all_octets (obs-fold unfolded, RFC 9112 section 5.2).
    "all octets": (
        b"HTTP/1.1 200 OK\r\n!#$%&'*+-.^_`|~: value\r\nVCHAR: "
        + bytes(range(0x21, 0x7F))
        + b"\r\nobs-text: "
        + bytes(range(0x80, 0x100))
        + b"\r\nobs-fold: text\r\n"
        b" folded with space\r\n\tfolded with tab\r\nContent-Length: 10\r\n\r\n" + BODY
    ),
    "multipart content type": (
        b"HTTP/1.1 200 OK\r\nContent-Type: multipart/mixed\r\nContent-Length: 10\r\n\r\n" + BODY
    ),
    # 103 Early Hints, 102 Processing, 100 Continue: http.client returns the 103 as the answer.
    "early hints": (
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n" + BODY
    ),
    "20 interim answers": (
        b"HTTP/1.1 100 Continue\r\n\r\n" * 20
        + b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
        + BODY
    ),
    # CPython's test_chunked_missing_end: "some servers may serve up a short chunked stream".
    "no CRLF after the last chunk": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n0\r\n"
    ),
    # HTTP/1.0 without a length: the body ends with the connection.
    "until close": b"HTTP/1.0 200 OK\r\n\r\n" + BODY,
}


@pytest.mark.parametrize("case", list(ACCEPTED))
def test_framing_that_rfc_9112_allows_is_read(
    raw_server_factory: Factory, tmp_path: pathlib.Path, case: str
) -> None:
    server = serve(raw_server_factory, ACCEPTED[case], close=True)
    assert download(server, tmp_path) == BODY
    assert leftovers(tmp_path) == ["cube.fits"]


def test_header_fields_reach_the_caller_as_http_client_decodes_them(
    raw_server_factory: Factory,
) -> None:
    """Values of any byte (ISO-8859-1), repeated names, names in any case: as ``items()``."""
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nX-Name: caf\xe9 \xff\x80\r\n"
        b'x-name: second\r\nETag: "abc"\r\n\r\n'
    )
    server = serve(raw_server_factory, head + BODY)
    transport = _transport.StdlibTransport(proxies={})
    try:
        response = transport.request("GET", server.url(PATH), {}, 5.0)
        assert response.read() == BODY
        response.release()
    finally:
        transport.close()
    fields = [("Content-Length", "10"), ("X-Name", "caf\xe9 \xff\x80")]
    fields += [("x-name", "second"), ("ETag", '"abc"')]
    assert response.headers.items() == fields
    assert response.headers.get("X-NAME") == "caf\xe9 \xff\x80"
    assert response.headers.get_all("x-Name") == ["caf\xe9 \xff\x80", "second"]


def test_cpython_chunked_case_reads_the_whole_body(
    raw_server_factory: Factory, tmp_path: pathlib.Path
) -> None:
    """CPython's test_chunked: chunks of 10, 3, 8 and 34 bytes."""
    answer = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\nhello worl\r\n3\r\nd! \r\n"
        b"8\r\nand now \r\n22\r\nfor something completely different\r\n0\r\n\r\n"
    )
    server = serve(raw_server_factory, answer)
    expected = b"hello world! and now for something completely different"
    assert download(server, tmp_path) == expected


@pytest.mark.parametrize(
    "answer",
    [
        # CPython's test_chunked with nothing after the chunks, then EOF.
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\nhello worl\r\n",
        # CPython's test_incomplete_read.
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nHello\r\n",
        # A chunk cut short.
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\nhello",
        # The connection ended inside a chunk size line.
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\nhello worl\r\n1",
    ],
    ids=["after a chunk", "short sized body", "inside a chunk", "in a size"],
)
def test_a_body_cut_short_is_a_network_fault_and_retried(
    raw_server_factory: Factory, tmp_path: pathlib.Path, answer: bytes
) -> None:
    server = serve(raw_server_factory, answer, close=True)
    with pytest.raises(DownloadError, match="closed early") as raised:
        download(server, tmp_path, retries=1)
    assert isinstance(raised.value.__cause__, _transport.ConnectionFault)
    assert server.connection_count == 2  # retried: a cut is transient
    assert not (tmp_path / "cube.fits").exists()


# -- heads cut, trickled, endless ----------------------------------------------------


ANSWER = (
    b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nETag: "v1"\r\n\r\n'
    b"a\r\n0123456789\r\n0\r\n\r\n"
)
SIZED = b"HTTP/1.0 200 OK\r\nContent-Length: 10\r\nContent-Type: text/plain\r\n\r\n" + BODY


@pytest.mark.parametrize("answer", [ANSWER, SIZED, b"HTTP/1.0 200 OK\r\nX-A: b\r\n\r\n" + BODY],
                         ids=["chunked", "sized", "until close"])  # fmt: skip
def test_a_head_cut_at_any_byte_never_commits_a_file(
    raw_server_factory: Factory, tmp_path: pathlib.Path, answer: bytes
) -> None:
    """Issue 11: after 'HTTP/1.1 200 OK\\r\\n', or inside 'Transfer-Encoding: chu', no file.

    http.client takes what came before the end of the connection as the
    whole head (CPython's test_early_eof reads "HTTP/1.1 200 Ok" as an empty
    answer): an until-close body of 0 bytes, committed as complete.
    """
    head_end = answer.index(b"\r\n\r\n") + 4
    cut = [0]

    def handler(conn: socket.socket, request: bytes) -> None:
        conn.sendall(answer[: cut[0]])
        conn.close()

    server = raw_server_factory(handler)
    for cut[0] in range(head_end):
        with pytest.raises(DownloadError, match=r"closed|without answering") as raised:
            download(server, tmp_path)
        assert isinstance(raised.value.__cause__, _transport.ConnectionFault), cut[0]
        assert leftovers(tmp_path) == [], cut[0]
    cut[0] = len(answer)
    assert download(server, tmp_path) == BODY


def _trickle(parts: list[bytes], pause: float, stop: threading.Event) -> RawHandler:
    def handler(conn: socket.socket, request: bytes) -> None:
        for part in parts:
            if stop.wait(pause):
                return
            conn.sendall(part)

    return handler


@pytest.mark.parametrize("how", ["a byte every 0.3 s", "100 Continue every 0.2 s"])
def test_a_trickled_head_or_endless_interim_answers_end_at_the_timeout(
    raw_server_factory: Factory, tmp_path: pathlib.Path, how: str
) -> None:
    """Issue 11: the whole head within ``timeout`` of the request, whatever arrives meanwhile.

    Each piece alone comes well within the timeout, so only a deadline for
    the whole head ends this; without one the call waits until the server
    has sent its 100 pieces (30 s, 20 s).
    """
    stop = threading.Event()
    if how.startswith("a byte"):
        parts = [bytes([b]) for b in SIZED[:100]]
        pause = 0.3
    else:
        parts = [b"HTTP/1.1 100 Continue\r\n\r\n"] * 100
        pause = 0.2
    server = raw_server_factory(_trickle(parts, pause, stop))
    started = time.monotonic()
    try:
        with pytest.raises(DownloadError, match="timed out"):
            download(server, tmp_path, timeout=1.5)
    finally:
        stop.set()
    assert time.monotonic() - started < 10.0
    assert leftovers(tmp_path) == []


def test_interim_answers_within_the_timeout_pass(
    raw_server_factory: Factory, tmp_path: pathlib.Path
) -> None:
    stop = threading.Event()
    parts = [b"HTTP/1.1 103 Early Hints\r\n\r\n"] * 3 + [SIZED]
    server = raw_server_factory(_trickle(parts, 0.1, stop))
    assert download(server, tmp_path, timeout=5) == BODY


def test_101_is_the_final_answer(raw_server_factory: Factory, tmp_path: pathlib.Path) -> None:
    """101 Switching Protocols is an answer, not an interim one: never asked for, an error."""
    answer = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n"
    server = serve(raw_server_factory, answer, close=True)
    with pytest.raises(pyvo_dl.HTTPStatusError) as raised:
        download(server, tmp_path)
    assert raised.value.status == 101


def test_a_100_then_the_end_is_a_network_fault(
    raw_server_factory: Factory, tmp_path: pathlib.Path
) -> None:
    """CPython's test_100_close: a 100 Continue and no answer."""
    server = serve(raw_server_factory, b"HTTP/1.1 100 Continue\r\n\r\n", close=True)
    with pytest.raises(DownloadError, match="without answering"):
        download(server, tmp_path, retries=1)
    assert server.connection_count == 2


# -- keep-alive: what is reused, and what never is ------------------------------------


def _numbered(body_of: Callable[[int], bytes], *, extra: bytes = b"") -> RawHandler:
    count = [0]

    def handler(conn: socket.socket, request: bytes) -> None:
        count[0] += 1
        body = body_of(count[0])
        conn.sendall(build_response(200, headers={"Content-Length": str(len(body))}, body=body)
                     + extra)  # fmt: skip

    return handler


def test_stray_bytes_after_a_body_never_reach_the_next_download(
    raw_server_factory: Factory, tmp_path: pathlib.Path
) -> None:
    """Issue 11: 'Content-Length: 5', five bytes, then a complete second answer.

    Pooled with those bytes waiting, the connection would hand the stray
    answer to the next GET as its own, and every later file on it would be
    shifted by one, each "verified".
    """
    stray = build_response(200, headers={"Content-Length": "5"}, body=b"WRONG")
    server = raw_server_factory(_numbered(lambda n: b"file%d" % n, extra=stray))
    for n in range(1, 5):
        assert download(server, tmp_path, f"f{n}.fits") == b"file%d" % n
    assert server.connection_count == 4  # none of them reused


def test_stray_bytes_after_a_chunked_body_never_reach_the_next_download(
    raw_server_factory: Factory, tmp_path: pathlib.Path
) -> None:
    """CPython's test_chunked_sync: 'extradata' after the last chunk."""
    count = [0]

    def handler(conn: socket.socket, request: bytes) -> None:
        count[0] += 1
        body = b"file%d" % count[0]
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n" + body
            + b"\r\n0\r\nX-Dummy: foo\r\n\r\nextradata"
        )  # fmt: skip

    server = raw_server_factory(handler)
    for n in range(1, 4):
        assert download(server, tmp_path, f"f{n}.fits") == b"file%d" % n
    assert server.connection_count == 3


def test_a_clean_connection_is_reused(raw_server_factory: Factory, tmp_path: pathlib.Path) -> None:
    server = raw_server_factory(_numbered(lambda n: b"file%d" % n))
    for n in range(1, 5):
        assert download(server, tmp_path, f"f{n}.fits") == b"file%d" % n
    assert server.connection_count == 1


@pytest.mark.parametrize(
    ("version", "header", "reused"),
    [
        ("1.0", "", False),
        ("1.0", "Connection: keep-alive\r\n", True),
        ("1.1", "", True),
        ("1.1", "Connection: close\r\n", False),
        ("1.0", "Connection: keep-ALIVE\r\n", True),
        ("1.1", "Connection: cloSE\r\n", False),
    ],
)
def test_reuse_or_reconnect_as_the_server_says(
    raw_server_factory: Factory, tmp_path: pathlib.Path, version: str, header: str, reused: bool
) -> None:
    """CPython's test_reuse_reconnect, end to end."""
    answer = f"HTTP/{version} 200 OK\r\n{header}Content-Length: 10\r\n\r\n".encode() + BODY
    server = serve(raw_server_factory, answer)
    assert download(server, tmp_path, "a.fits") == BODY
    assert download(server, tmp_path, "b.fits") == BODY
    assert server.connection_count == (1 if reused else 2)


def test_an_answer_to_head_with_a_body_is_not_reused(
    raw_server_factory: Factory, tmp_path: pathlib.Path
) -> None:
    """CPython's test_read_head: no byte of a body is read after HEAD; here one comes anyway."""

    def handler(conn: socket.socket, request: bytes) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n" + BODY)

    server = raw_server_factory(handler)
    (tmp_path / "cube.fits").write_bytes(BODY)
    for _ in range(3):  # cache checks with HEAD: each answered with a body as well
        assert download(server, tmp_path, cache=True) == BODY
    assert [r.split(b" ")[0] for r in server.requests] == [b"HEAD"] * 3
    assert server.connection_count == 3


def test_a_connection_closed_while_idle_is_replaced(
    raw_server_factory: Factory, tmp_path: pathlib.Path
) -> None:
    """The keep-alive race: the server closes an idle connection; the next GET still works.

    Either the pool sees the close before reuse, or the request meets it
    before any byte of an answer and is sent again on a new connection.
    """
    server = raw_server_factory(_numbered(lambda n: b"file%d" % n))
    assert download(server, tmp_path, "a.fits") == b"file1"

    def close_after_answer(conn: socket.socket, request: bytes) -> None:
        conn.sendall(build_response(200, headers={"Content-Length": "5"}, body=b"file2"))
        conn.close()

    server.handler = close_after_answer
    assert download(server, tmp_path, "b.fits") == b"file2"  # on the first connection
    server.handler = _numbered(lambda n: b"file%d" % (n + 2))
    assert download(server, tmp_path, "c.fits") == b"file3"
    assert server.connection_count == 2


def test_a_request_the_reused_connection_drops_is_sent_once_more(
    raw_server_factory: Factory, tmp_path: pathlib.Path
) -> None:
    """The server reads the request on the reused connection and closes without a byte."""
    seen: list[int] = []

    def handler(conn: socket.socket, request: bytes) -> None:
        seen.append(server.connection_count)
        if len(seen) == 2:
            conn.close()  # the race, lost: no answer at all
            return
        conn.sendall(build_response(200, headers={"Content-Length": "10"}, body=BODY))

    server = raw_server_factory(handler)
    assert download(server, tmp_path, "a.fits") == BODY
    assert download(server, tmp_path, "b.fits", retries=0) == BODY  # no retry needed
    assert seen == [1, 1, 2]


def test_a_fresh_connection_that_answers_nothing_is_a_fault(
    raw_server_factory: Factory, tmp_path: pathlib.Path
) -> None:
    """Only a reused connection is given the benefit of the doubt; then retries apply."""
    server = serve(raw_server_factory, b"", close=True)
    with pytest.raises(DownloadError, match="without answering"):
        download(server, tmp_path, retries=2)
    assert server.connection_count == 3


def test_an_idle_connection_past_its_age_is_not_reused(
    raw_server_factory: Factory, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = raw_server_factory(_numbered(lambda n: b"file%d" % n))
    monkeypatch.setattr(_transport, "MAX_IDLE_SECONDS", 0.0)
    assert download(server, tmp_path, "a.fits") == b"file1"
    assert download(server, tmp_path, "b.fits") == b"file2"
    assert server.connection_count == 2


@pytest.mark.parametrize("kept", [False, True], ids=["new poll", "kept poll"])
def test_waiting_input_is_seen_without_reading_it(kept: bool) -> None:
    """The check before reuse (urllib3's is_connection_dropped): stray bytes, EOF, nothing."""
    ours, peer = socket.socketpair()
    poller = _transport._poller(ours.fileno()) if kept else None
    with ours, peer:
        assert not _transport._has_input(ours, poller)
        peer.sendall(b"HTTP/1.1 200 OK\r\n")
        assert _transport._has_input(ours, poller)
        assert ours.recv(100) == b"HTTP/1.1 200 OK\r\n"  # nothing was consumed
        assert not _transport._has_input(ours, poller)
        peer.close()
        assert _transport._has_input(ours, poller)  # EOF
    assert _transport._has_input(ours, poller)  # closed


# -- name resolution ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "retried"),
    [(socket.EAI_AGAIN, True), (socket.EAI_NONAME, False)],
    ids=["EAI_AGAIN", "EAI_NONAME"],
)
def test_only_a_temporary_resolver_failure_is_retried(
    raw_server_factory: Factory,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    code: int,
    retried: bool,
) -> None:
    """Issue 11: EAI_AGAIN (the resolver did not answer) is transient; 'no such host' is not.

    A resolver that fails on purpose cannot run here (the tests never leave
    loopback), so getaddrinfo fails twice, as a timing-out DNS server makes it.
    """
    server = serve(raw_server_factory, build_response(200, body=BODY))
    real = socket.getaddrinfo
    calls: list[object] = []

    def getaddrinfo(host: object, *args: object, **kwargs: object) -> object:
        calls.append(host)
        if len(calls) <= 2:
            raise socket.gaierror(code, "resolver says no")
        return real(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    url = f"http://localhost:{server.port}{PATH}"
    target = tmp_path / "cube.fits"
    if retried:
        pyvo_dl.http_download(url, str(target), progress=False, retries=3,
                              timeout=5)  # fmt: skip
        assert target.read_bytes() == BODY
        assert len(calls) == 3
    else:
        with pytest.raises(DownloadError, match="cannot resolve host 'localhost'"):
            pyvo_dl.http_download(url, str(target), progress=False, retries=3, timeout=5)
        assert len(calls) == 1

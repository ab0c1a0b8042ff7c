"""Loopback servers for pyvo_dl's integration tests (STYLE §6.4).

Three kinds of server, all bound to 127.0.0.1 (or ::1) and nothing else:

- :class:`FaultServer`, a real ``http.server.ThreadingHTTPServer`` speaking
  HTTP/1.1 with keep-alive, Range, If-Range and If-Match, whose faults are
  switched per path with :meth:`FaultServer.set_fault`, and which records
  every request it answers;
- :class:`RawServer`, a raw-socket server handing each request's bytes to a
  test function, for byte-exact faults that ``http.server`` cannot produce;
- :class:`MotoServer`, moto's S3 server mode in a subprocess, with helpers
  to populate it through boto3 and to turn its IAM authentication on.

Also :class:`LoopbackGuard`, which refuses every socket that would leave the
machine. This module imports only the standard library at import time:
boto3 is imported inside the helpers that need it, so the ``nobotocore``
tox environment can still import it.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import http.client
import http.server
import ipaddress
import json
import os
import re
import socket
import socketserver
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field, fields

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ssl
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from types import TracebackType
    from typing import Any, Tuple, Union

    import pytest

    RangeResult = Union[Tuple[int, int], str, None]
    RawHandler = Callable[[socket.socket, bytes], None]

__all__ = [
    "DEFAULT_LAST_MODIFIED",
    "S3_READ_POLICY",
    "AwsKeys",
    "Budget",
    "Fault",
    "FaultServer",
    "LoopbackGuard",
    "MotoServer",
    "NonLoopbackError",
    "RawServer",
    "Request",
    "assume_moto_role",
    "aws_client_for",
    "build_response",
    "candidate_keys",
    "create_moto_user",
    "disable_moto_auth",
    "enable_moto_auth",
    "free_port",
    "parse_range_header",
    "relay_tunnel",
    "reset_moto",
    "s3_client_for",
]

#: Body bytes per ``write`` call: the size real servers and S3 use.
CHUNK_SIZE = 64 * 1024
#: ``Last-Modified`` of a file added without one.
DEFAULT_LAST_MODIFIED = "Wed, 21 Oct 2015 07:28:00 GMT"
_DEFAULT_MTIME = 1445412480.0  # DEFAULT_LAST_MODIFIED as a POSIX time
#: Seconds a TLS client gets to finish its handshake.
_HANDSHAKE_TIMEOUT = 10.0
#: Seconds an idle keep-alive connection is kept open.
_IDLE_TIMEOUT = 60.0
_UNSATISFIABLE = "unsatisfiable"
_RANGE_SPEC = re.compile(r"(\d*)-(\d*)", re.ASCII)
_DUMMY_KEY = "testing"
_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")

#: IAM policy that lets a principal read every bucket and object.
S3_READ_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": ["s3:Get*", "s3:List*"], "Resource": "*"}],
}


def _http_date(timestamp: float) -> str:
    return email.utils.formatdate(timestamp, usegmt=True)


def _quoted_md5(data: bytes) -> str:
    # S3's ETag for a single-part upload, which is what most tests want.
    return '"' + hashlib.md5(data).hexdigest() + '"'


def _host_url(scheme: str, host: str, port: int) -> str:
    if ":" in host:
        host = "[" + host + "]"
    return f"{scheme}://{host}:{port}"


def candidate_keys(target: str) -> list[str]:
    """Return the path keys a request target may match, in lookup order.

    Parameters
    ----------
    target : str
        The request target as received (origin form ``/a%20b?x=1`` or
        absolute form ``http://host/a``, as proxies receive it).

    Returns
    -------
    list of str
        The raw target, the raw path without its query, then both
        percent-decoded; duplicates removed. The first two are the "raw"
        forms that an ``exact`` file matches.

    Examples
    --------
    >>> candidate_keys("/b/a%3Fb?x=1")
    ['/b/a%3Fb?x=1', '/b/a%3Fb', '/b/a?b?x=1', '/b/a?b']
    """
    raw = _raw_keys(target)
    keys: list[str] = []
    for key in raw + [urllib.parse.unquote(k) for k in raw]:
        if key not in keys:
            keys.append(key)
    return keys


def _raw_keys(target: str) -> list[str]:
    """The target in origin form, with and without its query, not decoded."""
    if target.startswith(("http://", "https://")):
        parts = urllib.parse.urlsplit(target)
        target = (parts.path or "/") + ("?" + parts.query if parts.query else "")
    return [target, target.partition("?")[0]]


def parse_range_header(value: str | None, size: int) -> RangeResult:
    """Interpret a ``Range`` header against an object of ``size`` bytes.

    Parameters
    ----------
    value : str or None
        The header, for example ``bytes=0-99``, ``bytes=100-`` or ``bytes=-5``.
    size : int
        The object's length.

    Returns
    -------
    tuple of int, str or None
        ``(first, last)`` inclusive; ``"unsatisfiable"`` for a 416; ``None``
        when the header is absent, malformed or asks for several ranges, in
        which case the server answers the whole object (RFC 9110 §14.2).

    Examples
    --------
    >>> parse_range_header("bytes=-3", 10), parse_range_header("bytes=10-", 10)
    ((7, 9), 'unsatisfiable')
    """
    if value is None:
        return None
    unit, sep, spec = value.partition("=")
    match = _RANGE_SPEC.fullmatch(spec.strip())
    if unit.strip().lower() != "bytes" or not sep or match is None:
        return None
    first, last = match.groups()
    if not first:
        if not last:
            return None
        suffix = int(last)
        if suffix == 0 or size == 0:
            return _UNSATISFIABLE
        return (max(0, size - suffix), size - 1)
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None
    if start >= size:
        return _UNSATISFIABLE
    return (start, min(end, size - 1))


# ---------------------------------------------------------------- records ---


@dataclass
class Request:
    """One request a server answered, as the test asserts on it.

    Attributes
    ----------
    method : str
    path : str
        The request target exactly as received (still percent-encoded).
    headers : dict
        Request headers, names lower-cased, repeated headers joined by ``", "``.
    connection_id : int
        1 for the server's first accepted connection, 2 for the next...
    status : int
        Status sent (0 until the status line is written).
    bytes_sent : int
        Body bytes handed to the socket (updated while the body streams).
    """

    method: str
    path: str
    headers: dict[str, str]
    connection_id: int
    status: int = 0
    bytes_sent: int = 0


@dataclass
class _Object:
    data: bytes
    etag: str
    last_modified: str
    content_type: str
    headers: dict[str, str]
    exact: bool


class Budget:
    """Body bytes a fault lets out over all the answers it applies to (``set_fault(budget=)``).

    Once spent, every answer holds where it is until the server stops: a
    client that then received exactly ``total`` bytes (and had the time to
    write them) can be killed at an exact point of a parallel download.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.left = total
        self._lock = threading.Lock()

    def take(self, wanted: int) -> int:
        """Up to ``wanted`` bytes from what is left: what may be sent now."""
        with self._lock:
            granted = min(wanted, self.left)
            self.left -= granted
            return granted


@dataclass
class Fault:
    """A fault switched on for one path; see :meth:`FaultServer.set_fault`.

    ``seen`` counts the requests of ``methods`` that reached the path since
    the fault was set; ``hits`` those it was applied to.
    """

    methods: tuple[str, ...] = ()
    times: int | None = None
    after: int = 0
    status: tuple[int, str | None, bytes | None] | None = None
    drop: tuple[int, bool] | None = None
    short_body: int | None = None
    ignore_range: bool = False
    ignore_if_range: bool = False
    omit_headers: tuple[str, ...] = ()
    change: tuple[int, bytes] | None = None
    stall: tuple[float, int] | None = None
    trickle: tuple[int, float] | None = None
    delay: float | None = None
    gate: threading.Event | None = None
    gate_after: int = 0
    budget: Budget | None = None
    head_status: int | None = None
    content_type: str | None = None
    content_disposition: str | None = None
    no_length: bool = False
    chunked: bool = False
    redirect: tuple[int, str] | None = None
    basic_auth: tuple[str, str] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    seen: int = 0
    hits: int = 0


# Options that only shape an answer's headers apply to HEAD as well as GET.
_SHAPING_OPTIONS = frozenset(
    {
        "ignore_range",
        "ignore_if_range",
        "omit_headers",
        "content_type",
        "content_disposition",
        "no_length",
        "chunked",
        "redirect",
        "basic_auth",
        "headers",
    }
)
_BOOKKEEPING = frozenset({"methods", "times", "after", "seen", "hits", "change"})


def _merge(faults: Iterable[Fault]) -> Fault:
    """Combine the faults active for one request: first set wins, headers add up."""
    merged = Fault()
    names = [f.name for f in fields(Fault) if f.name not in _BOOKKEEPING]
    for fault in faults:
        for name in names:
            value = getattr(fault, name)
            if name == "headers":
                merged.headers.update(value)
            elif name == "omit_headers":
                merged.omit_headers += value
            elif getattr(merged, name) in (None, False) and value not in (None, False):
                setattr(merged, name, value)
    return merged


# ------------------------------------------------------------ FaultServer ---


class _StopResponse(Exception):
    """Raised inside a handler to abandon the current response silently."""


class _FaultHandler(http.server.BaseHTTPRequestHandler):
    """Answers one connection's requests from the owning FaultServer's state."""

    protocol_version = "HTTP/1.1"
    timeout = _IDLE_TIMEOUT
    # Headers and body go out in separate writes; with Nagle on, the body
    # waits for the client's delayed ACK: about 40 ms per small request.
    disable_nagle_algorithm = True
    server: _HTTPServer
    record: Request

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet; requests are in ``FaultServer.requests``."""

    def handle_one_request(self) -> None:
        """Start each request with a blank record (for errors sent before ``_begin``)."""
        self.record = Request("", "", {}, 0)
        super().handle_one_request()

    def send_response(self, code: int, message: str | None = None) -> None:
        """Record the status, then send it as usual."""
        self.record.status = code
        super().send_response(code, message)

    def do_GET(self) -> None:
        """Answer a GET."""
        self._answer("GET")

    def do_HEAD(self) -> None:
        """Answer a HEAD."""
        self._answer("HEAD")

    def do_PUT(self) -> None:
        """Refuse uploads (read-only server) after reading the body."""
        self._refuse("PUT")

    def do_POST(self) -> None:
        """Refuse POST after reading the body."""
        self._refuse("POST")

    def do_DELETE(self) -> None:
        """Refuse DELETE."""
        self._refuse("DELETE")

    # -- request flow ------------------------------------------------------

    def _begin(self, method: str) -> FaultServer:
        owner = self.server.owner
        self.record = owner._log(method, self.path, self.headers, owner._local.connection_id)
        return owner

    def _refuse(self, method: str) -> None:
        self._begin(method)
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self._simple(405, b"method not allowed\n", {"Allow": "GET, HEAD"}, method)

    def _answer(self, method: str) -> None:
        owner = self._begin(method)
        effects = _merge(owner._active_faults(self.path, method))
        obj = owner._lookup(self.path)
        try:
            if effects.gate is not None and effects.gate_after == 0:
                self._wait_for(effects.gate)
            if effects.delay:
                self._wait(effects.delay)
            if not self._answer_early(effects, obj, method) and obj is not None:
                self._serve(obj, effects, method)
        except _StopResponse:
            self.close_connection = True

    def _answer_early(self, fx: Fault, obj: _Object | None, method: str) -> bool:
        """Answer anything but the object itself; return whether it did."""
        if fx.basic_auth is not None and not self._authorized(fx.basic_auth):
            challenge = {"WWW-Authenticate": 'Basic realm="pyvo_dl tests", charset="UTF-8"'}
            self._simple(401, b"authentication required\n", challenge, method)
        elif fx.redirect is not None:
            status, location = fx.redirect
            self._simple(status, b"moved\n", {"Location": location}, method)
        elif method == "HEAD" and fx.head_status is not None:
            self._simple(fx.head_status, b"", {"Allow": "GET"}, method)
        elif fx.status is not None:
            status, retry_after, body = fx.status
            extra = {"Retry-After": retry_after} if retry_after is not None else {}
            extra.update(fx.headers)
            default = f"{status} {http.client.responses.get(status, 'fault')}\n".encode()
            self._simple(status, default if body is None else body, extra, method)
        elif obj is None:
            self._simple(404, b"not found\n", {}, method)
        elif not _etag_matches(self.headers.get("If-Match"), obj.etag):
            self._simple(412, b"precondition failed\n", {"ETag": obj.etag}, method)
        else:
            return False
        return True

    def _authorized(self, credentials: tuple[str, str]) -> bool:
        token = base64.b64encode(":".join(credentials).encode()).decode("ascii")
        return self.headers.get("Authorization", "") == "Basic " + token

    def _serve(self, obj: _Object, fx: Fault, method: str) -> None:
        size = len(obj.data)
        wanted = None if fx.ignore_range else parse_range_header(self.headers.get("Range"), size)
        # S3 ignores If-Range (its resumes are kept honest by If-Match).
        ignore_if_range = fx.ignore_if_range or self.server.owner.s3_semantics
        if_range = None if ignore_if_range else self.headers.get("If-Range")
        if wanted is not None and not _if_range_holds(if_range, obj):
            wanted = None
        if wanted == _UNSATISFIABLE:
            self._simple(416, b"", {"Content-Range": f"bytes */{size}"}, method)
            return
        first, last = wanted if isinstance(wanted, tuple) else (0, size - 1)
        self.send_response(206 if wanted else 200)
        self._object_headers(obj, fx, method, size, first, last)
        if wanted:
            self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        elif not fx.ignore_range:
            # As nginx: only a whole answer advertises ranges; a 206 is proof enough.
            self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if method == "GET":
            self._stream(memoryview(obj.data)[first : last + 1], fx)

    def _object_headers(
        self, obj: _Object, fx: Fault, method: str, size: int, first: int, last: int
    ) -> None:
        self.send_header("Content-Type", fx.content_type or obj.content_type)
        if fx.chunked:
            self.send_header("Transfer-Encoding", "chunked")
        elif not fx.no_length:
            self.send_header("Content-Length", str(last - first + 1))
        elif method == "GET":
            # No length and no chunking: only the close can end the body.
            self.send_header("Connection", "close")
            self.close_connection = True
        omitted = {name.lower() for name in fx.omit_headers}
        for name, value in (("ETag", obj.etag), ("Last-Modified", obj.last_modified)):
            if name.lower() not in omitted:
                self.send_header(name, value)
        if fx.content_disposition is not None:
            self.send_header("Content-Disposition", fx.content_disposition)
        for name, value in {**obj.headers, **fx.headers}.items():
            if not self._s3_withholds(name):
                self.send_header(name, value)

    def _s3_withholds(self, name: str) -> bool:
        """Whether S3 leaves header ``name`` out of the answer to this request.

        Real S3 sends ``x-amz-checksum-*`` (and ``x-amz-checksum-type``) only
        to a HEAD or a GET of the whole object that asked for them with
        ``x-amz-checksum-mode: ENABLED``; never to a GET with ``Range``,
        even one that covers the whole object. (moto sends them on every
        answer, ranged or not; so does this server outside ``s3_semantics``.)
        """
        if not self.server.owner.s3_semantics or not name.lower().startswith("x-amz-checksum-"):
            return False
        asked = self.headers.get("x-amz-checksum-mode", "").strip().upper() == "ENABLED"
        return not asked or "Range" in self.headers

    def _simple(self, status: int, body: bytes, headers: Mapping[str, str], method: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if method != "HEAD" and body:
            self._write(memoryview(body), chunked=False)

    # -- body --------------------------------------------------------------

    def _stream(self, body: memoryview, fx: Fault) -> None:
        """Send ``body`` in CHUNK_SIZE writes, applying the body faults."""
        limit = len(body)
        for cut in (fx.drop[0] if fx.drop else None, fx.short_body):
            if cut is not None:
                limit = min(limit, cut)
        stall_at = fx.stall[1] if fx.stall else None
        gate_at = fx.gate_after if fx.gate is not None and fx.gate_after else None
        step = fx.trickle[0] if fx.trickle else CHUNK_SIZE
        pos = 0
        while True:
            if stall_at is not None and pos >= stall_at:
                self._wait(fx.stall[0] if fx.stall else 0.0)
                stall_at = None
            if gate_at is not None and pos >= gate_at and fx.gate is not None:
                self.wfile.flush()
                self._wait_for(fx.gate)
                gate_at = None
            if pos >= limit:
                break
            stop = min(pos + step, limit, stall_at if stall_at is not None else limit)
            if gate_at is not None:
                stop = min(stop, gate_at)
            if fx.budget is not None:
                stop = pos + fx.budget.take(stop - pos)
                if stop == pos:
                    self.wfile.flush()
                    self._hold()
            self._write(body[pos:stop], chunked=fx.chunked)
            pos = stop
            if fx.trickle:
                self._wait(fx.trickle[1])
        if limit < len(body):
            self._cut(rst=bool(fx.drop and fx.drop[1]), abrupt=fx.drop is not None)
        elif fx.chunked:
            self.wfile.write(b"0\r\n\r\n")

    def _write(self, view: memoryview, *, chunked: bool) -> None:
        # Counted before the write: once sendall returns the client may
        # already have read everything and be asserting on the count.
        self.record.bytes_sent += len(view)
        try:
            if chunked:
                self.wfile.write(b"%x\r\n" % len(view) + view.tobytes() + b"\r\n")
            else:
                self.wfile.write(view)
        except OSError as e:  # the client went away; nothing left to do
            raise _StopResponse from e

    def _wait(self, seconds: float) -> None:
        if self.server.owner.stopping.wait(seconds):
            raise _StopResponse

    def _hold(self) -> None:
        """Send nothing more, until stop() (a budget spent)."""
        while True:
            self._wait(1.0)

    def _wait_for(self, gate: threading.Event) -> None:
        """Hold the answer until the test opens ``gate`` (20 s at most, or stop())."""
        deadline = time.monotonic() + 20
        while not gate.is_set() and time.monotonic() < deadline:
            self._wait(0.01)

    def _cut(self, *, rst: bool, abrupt: bool) -> None:
        """End the connection mid-body: FIN (or RST) and no more bytes."""
        self.close_connection = True
        if not abrupt:
            return  # socketserver closes it gracefully after this request
        try:
            if rst:
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
            else:
                socket.socket.shutdown(self.connection, socket.SHUT_RDWR)
            self.rfile.close()
            self.connection.close()
        except OSError:
            pass


def _etag_matches(if_match: str | None, etag: str) -> bool:
    """Evaluate ``If-Match`` with the strong comparison RFC 9110 requires."""
    if if_match is None or if_match.strip() == "*":
        return True
    if etag.startswith("W/"):
        return False
    return etag in (tag.strip() for tag in if_match.split(","))


def _if_range_holds(if_range: str | None, obj: _Object) -> bool:
    """Whether a Range may be honoured under ``If-Range`` (else send 200)."""
    if if_range is None:
        return True
    value = if_range.strip()
    if value.startswith(('"', "W/")):
        return not value.startswith("W/") and not obj.etag.startswith("W/") and value == obj.etag
    return value == obj.last_modified


class _HTTPServer(http.server.ThreadingHTTPServer):
    """ThreadingHTTPServer that counts connections and can close them all."""

    daemon_threads = True
    # socketserver's default backlog of 5 drops SYNs when parallel ranged
    # GETs or download_many workers connect at once (1 s retransmit each).
    request_queue_size = 128

    def __init__(self, owner: FaultServer, address: tuple[str, int], family: int) -> None:
        self.address_family = family
        self.owner = owner
        super().__init__(address, _FaultHandler)

    def server_bind(self) -> None:
        """Bind without HTTPServer's ``getfqdn``, a reverse DNS lookup."""
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve each accepted connection in its own daemon thread."""
        connection_id = self.owner._accepted(request)
        thread = threading.Thread(
            target=self._serve_connection,
            args=(request, client_address, connection_id),
            name=f"FaultServer-conn-{connection_id}",
            daemon=True,
        )
        self.owner._threads.append(thread)
        thread.start()

    def _serve_connection(self, request: Any, client_address: Any, connection_id: int) -> None:
        self.owner._local.connection_id = connection_id
        conn = None
        try:
            conn = self.owner._handshake(request)
            if conn is not None:
                self.finish_request(conn, client_address)
        except Exception:
            self.handle_error(conn, client_address)
        finally:
            self.owner._forget(request, conn)
            if conn is not None:
                self.shutdown_request(conn)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Keep handler bugs (not client disconnects) for the fixture to report."""
        error = sys.exc_info()[1]
        if error is not None and not isinstance(error, OSError):
            self.owner.errors.append(error)


class FaultServer:
    """An HTTP/1.1 server on loopback whose faults tests switch per path.

    Parameters
    ----------
    host : str
        Loopback address to bind (``127.0.0.1`` or ``::1``).
    ssl_context : ssl.SSLContext, optional
        Server-side context: the server speaks HTTPS (the handshake runs in
        each connection's thread, so a client that never completes it does
        not block the others).
    s3_semantics : bool
        Behave as real S3 does where moto (and this server by default) does
        not: ``x-amz-checksum-*`` headers (an object's ``headers=``) only on
        a HEAD or a whole-object GET sent with ``x-amz-checksum-mode:
        ENABLED``, never on a ranged GET; ``If-Range`` ignored (a ``206``
        whatever it says); ``If-Match`` honoured (``412``), as always here.
        Python's http.server speaks HTTP/1.0 by default; this one 1.1 with
        keep-alive, as S3.

    Notes
    -----
    Files are matched on the request target as received and on its
    percent-decoded form, with and without the query string (see
    :func:`candidate_keys`), so ``/bucket/a b`` serves ``/bucket/a%20b`` and
    the server can stand in for a path-style S3 ``endpoint_url``. Check
    ``requests[-1].path`` to assert how a client encoded a key.

    Examples
    --------
    >>> with FaultServer() as server:
    ...     url = server.add_file("/data/x.fits", b"SIMPLE")
    ...     fault = server.set_fault("/data/x.fits", status=503, times=1)
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        ssl_context: ssl.SSLContext | None = None,
        s3_semantics: bool = False,
    ):
        self.host = host
        self.ssl_context = ssl_context
        self.s3_semantics = s3_semantics
        self.port = 0
        #: Handler exceptions other than OSError; the fixtures fail on any.
        self.errors: list[BaseException] = []
        #: Set by stop(); every stall and trickle wait ends when it is set.
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._local = threading.local()
        self._files: dict[str, _Object] = {}
        self._faults: dict[str, list[Fault]] = {}
        self._requests: list[Request] = []
        self._connection_count = 0
        self._next_connection_id = 0
        self._open: set[Any] = set()
        self._threads: list[threading.Thread] = []
        self._version = 0
        self._httpd: _HTTPServer | None = None
        self._serve_thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> FaultServer:
        """Bind port 0 on ``host`` and serve in a background thread."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._httpd = _HTTPServer(self, (self.host, 0), family)
        self.port = self._httpd.server_port
        self._serve_thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"FaultServer-{self.port}",
            daemon=True,
        )
        self._serve_thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, end every open connection and join the threads."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self.stopping.set()
        httpd.shutdown()
        with self._lock:
            still_open = list(self._open)
        for sock in still_open:
            try:
                # The plain socket's shutdown wakes a thread blocked in recv
                # or sendall, TLS or not; SSLSocket.shutdown is not thread-safe.
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:
                pass
        httpd.server_close()
        if self._serve_thread is not None:
            self._serve_thread.join(5)
        for thread in self._threads:
            thread.join(5)

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (``https`` with an ``ssl_context``)."""
        return _host_url("https" if self.ssl_context else "http", self.host, self.port)

    def url(self, path: str, *, host: str | None = None) -> str:
        """Return the absolute URL of ``path`` (``host`` replaces the address, e.g. localhost)."""
        if not path.startswith("/"):
            raise ValueError(f"path must start with '/': {path!r}")
        if host is None:
            return self.base_url + path
        return _host_url("https" if self.ssl_context else "http", host, self.port) + path

    # -- objects -------------------------------------------------------------

    def add_file(
        self,
        path: str,
        data: bytes,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
        content_type: str = "application/octet-stream",
        headers: Mapping[str, str] | None = None,
        exact: bool = False,
    ) -> str:
        """Serve ``data`` at ``path`` and return its URL.

        Parameters
        ----------
        path : str
            Request path, matched raw or percent-decoded (``exact=True``:
            only as written, for tests of how a client quotes keys).
        data : bytes
        etag : str, optional
            Defaults to the quoted MD5 of ``data``, as S3 sends it.
        last_modified : str, optional
            HTTP-date; defaults to :data:`DEFAULT_LAST_MODIFIED`.
        content_type : str
        headers : mapping, optional
            Extra response headers for 200/206/HEAD answers.
        exact : bool
        """
        obj = _Object(
            data=bytes(data),
            etag=_quoted_md5(data) if etag is None else etag,
            last_modified=DEFAULT_LAST_MODIFIED if last_modified is None else last_modified,
            content_type=content_type,
            headers=dict(headers or {}),
            exact=exact,
        )
        with self._lock:
            self._files[path] = obj
        return self.url(path) if path.startswith("/") else self.base_url + "/" + path

    def replace_file(
        self,
        path: str,
        data: bytes,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Replace the object at ``path``: new bytes, new ETag, a later Last-Modified.

        ``headers`` replaces the extra headers (kept when omitted: pass new
        ``x-amz-checksum-*`` values along with new data).
        """
        with self._lock:
            self._replace_locked(path, data, etag, last_modified, headers)

    def _replace_locked(
        self,
        path: str,
        data: bytes,
        etag: str | None = None,
        last_modified: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        old = self._files[path]
        self._version += 1
        self._files[path] = _Object(
            data=bytes(data),
            etag=_quoted_md5(data) if etag is None else etag,
            last_modified=(
                _http_date(_DEFAULT_MTIME + 3600 * self._version)
                if last_modified is None
                else last_modified
            ),
            content_type=old.content_type,
            headers=old.headers if headers is None else dict(headers),
            exact=old.exact,
        )

    def remove_file(self, path: str) -> None:
        """Stop serving ``path`` (requests then get 404)."""
        with self._lock:
            del self._files[path]

    def file_data(self, path: str) -> bytes:
        """Return the bytes currently served at ``path``."""
        with self._lock:
            return self._files[path].data

    def etag(self, path: str) -> str:
        """Return the ETag currently served for ``path``."""
        with self._lock:
            return self._files[path].etag

    def _lookup(self, target: str) -> _Object | None:
        found = self._lookup_key(target)
        return None if found is None else self._files[found]

    def _lookup_key(self, target: str) -> str | None:
        raw = _raw_keys(target)
        with self._lock:
            for key in candidate_keys(target):
                obj = self._files.get(key)
                if obj is not None and (key in raw or not obj.exact):
                    return key
        return None

    # -- faults --------------------------------------------------------------

    def set_fault(
        self,
        path: str,
        *,
        times: int | None = None,
        after: int = 0,
        methods: Sequence[str] | None = None,
        status: int | None = None,
        retry_after: str | None = None,
        body: bytes | None = None,
        drop_after: int | None = None,
        rst: bool = False,
        short_body: int | None = None,
        ignore_range: bool = False,
        ignore_if_range: bool = False,
        omit_headers: Sequence[str] = (),
        change_after: int | None = None,
        new_data: bytes | None = None,
        stall: float | None = None,
        stall_after: int = 0,
        trickle: tuple[int, float] | None = None,
        delay: float | None = None,
        gate: threading.Event | None = None,
        gate_after: int = 0,
        budget: int | None = None,
        head_status: int | None = None,
        content_type: str | None = None,
        content_disposition: str | None = None,
        no_length: bool = False,
        chunked: bool = False,
        redirect: tuple[int, str] | None = None,
        basic_auth: tuple[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Fault:
        """Switch a fault on for ``path``; several may be set, each counted apart.

        Parameters
        ----------
        path : str
            Matched like :meth:`add_file` paths; the path needs no file.
        times, after : int
            The fault applies to matching requests number ``after`` to
            ``after + times - 1`` (0-based) since it was set; ``times=None``:
            forever. Use ``after`` to script sequences (503, then a drop...).
        methods : sequence of str, optional
            Which requests match and are counted. Default: GET and HEAD when
            the fault only shapes headers (``ignore_range``, ``ignore_if_range``,
            ``omit_headers``, ``content_type``,
            ``content_disposition``, ``no_length``, ``chunked``, ``redirect``,
            ``basic_auth``, ``headers``); HEAD for ``head_status`` alone; GET
            otherwise.
        status, retry_after, body
            Answer ``status`` (with ``Retry-After: retry_after`` and ``body``,
            default a short text) instead of the object.
        drop_after, rst
            Send the headers and ``drop_after`` body bytes, then shutdown and
            close the socket (``rst=True``: a TCP reset via SO_LINGER 0,
            which may discard bytes still in flight).
        short_body
            Declare the full length, send ``short_body`` bytes, close.
        ignore_range
            Answer every Range request with 200 and the whole object.
        ignore_if_range
            Honour ``Range`` but not ``If-Range``: a ``206`` with the
            object's *current* ``ETag`` and ``Last-Modified``, whatever
            ``If-Range`` says. What aiohttp's static handler does with an
            ETag in ``If-Range``, what tornado's ``StaticFileHandler`` and
            twisted's ``twist web`` do with any, and many CDNs and proxies:
            the case where only the client's check of the validators keeps
            a file from being stitched. (S3 too: see ``s3_semantics``.)
        omit_headers
            Leave these of ``ETag`` and ``Last-Modified`` out of the
            object's answers: the same file behind a proxy that hides them
            (nginx's ``proxy_hide_header ETag``), a validator that vanished.
        change_after, new_data
            When GET number ``change_after`` arrives (0-based: after
            ``change_after`` GETs), replace the object with ``new_data``
            (new ETag and Last-Modified) before answering. Happens once.
        stall, stall_after
            Wait ``stall`` seconds after ``stall_after`` body bytes
            (``stall_after=0``: time to first byte). stop() ends the wait.
        trickle
            ``(bytes_per_step, seconds_per_step)``: a slow-loris body.
        delay
            Wait ``delay`` seconds before the status line.
        gate, gate_after
            Hold the answer until the test sets ``gate`` (a
            ``threading.Event``; 20 s at most): before the status line, or
            after ``gate_after`` body bytes. What lets a test act (remove a
            file, replace one) at an exact point of a download, where a
            real server would just be slow.
        budget
            Send at most this many body bytes in all, over every answer the
            fault applies to (the parallel ranges of a download together),
            then hold each answer until stop(): a slow server that stopped
            sending, at an exact point of the whole object. The
            :class:`Budget` is the returned fault's ``budget``.
        head_status
            Answer HEAD with this status and no body (405: HEAD refused).
        content_type, content_disposition
            Override or add these headers on the object's answers.
        no_length, chunked
            Omit Content-Length and end the body by closing the connection
            (``no_length``) or with ``Transfer-Encoding: chunked``.
        redirect
            ``(status, location)``: answer a redirect; ``location`` is sent
            as given (relative, another server's URL, ``file:///etc/passwd``).
        basic_auth
            ``(user, password)``: 401 with ``WWW-Authenticate: Basic`` unless
            that ``Authorization`` arrives.
        headers
            Extra response headers (``x-amz-bucket-region``...), on every
            answer of the object, not on error answers.

        Returns
        -------
        Fault
            Its ``seen`` and ``hits`` counters show what it did.
        """
        if change_after is not None and new_data is None:
            raise ValueError("change_after needs new_data")
        fault = Fault(
            times=times,
            after=after,
            status=None if status is None else (status, retry_after, body),
            drop=None if drop_after is None else (drop_after, rst),
            short_body=short_body,
            ignore_range=ignore_range,
            ignore_if_range=ignore_if_range,
            omit_headers=tuple(omit_headers),
            change=None if change_after is None else (change_after, bytes(new_data or b"")),
            stall=None if stall is None else (stall, stall_after),
            trickle=trickle,
            delay=delay,
            gate=gate,
            gate_after=gate_after,
            budget=None if budget is None else Budget(budget),
            head_status=head_status,
            content_type=content_type,
            content_disposition=content_disposition,
            no_length=no_length,
            chunked=chunked,
            redirect=redirect,
            basic_auth=basic_auth,
            headers=dict(headers or {}),
        )
        fault.methods = tuple(m.upper() for m in methods) if methods else _default_methods(fault)
        with self._lock:
            self._faults.setdefault(path, []).append(fault)
        return fault

    def clear_faults(self, path: str | None = None) -> None:
        """Remove the faults of ``path``, or of every path."""
        with self._lock:
            if path is None:
                self._faults.clear()
            else:
                self._faults.pop(path, None)

    def add_redirect(self, path: str, location: str, status: int = 302) -> str:
        """Make ``path`` redirect to ``location``; return the URL of ``path``."""
        self.set_fault(path, redirect=(status, location))
        return self.url(path)

    def add_redirect_chain(self, prefix: str, n: int, final: str, status: int = 302) -> str:
        """Chain ``n`` redirects ``prefix0 -> prefix1 -> ... -> final``; return the first URL.

        ``final`` is a path on this server or an absolute URL. ``n=11``
        exceeds SPEC §3.4's limit of 10.
        """
        for i in range(n):
            target = f"{prefix}{i + 1}" if i + 1 < n else final
            self.set_fault(f"{prefix}{i}", redirect=(status, target))
        return self.url(f"{prefix}0")

    def add_redirect_loop(self, path_a: str, path_b: str, status: int = 302) -> str:
        """Make ``path_a`` and ``path_b`` redirect to each other; return the URL of ``path_a``."""
        self.set_fault(path_a, redirect=(status, path_b))
        self.set_fault(path_b, redirect=(status, path_a))
        return self.url(path_a)

    def _active_faults(self, target: str, method: str) -> list[Fault]:
        file_key = self._lookup_key(target)
        keys = candidate_keys(target)
        with self._lock:
            found = next((self._faults[k] for k in keys if k in self._faults), [])
            active = []
            for fault in found:
                if method not in fault.methods:
                    continue
                index = fault.seen
                fault.seen += 1
                if fault.change is not None and index == fault.change[0]:
                    self._change_locked(file_key or keys[0], fault.change[1])
                if index >= fault.after and (
                    fault.times is None or index < fault.after + fault.times
                ):
                    fault.hits += 1
                    active.append(fault)
        return active

    def _change_locked(self, key: str, data: bytes) -> None:
        if key in self._files:
            self._replace_locked(key, data)
        else:
            self._files[key] = _Object(
                data, _quoted_md5(data), DEFAULT_LAST_MODIFIED, "", {}, False
            )

    # -- request log ---------------------------------------------------------

    @property
    def requests(self) -> list[Request]:
        """A snapshot of every request received, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def connection_count(self) -> int:
        """TCP connections accepted since start (or the last reset_log)."""
        with self._lock:
            return self._connection_count

    def requests_for(self, path: str, method: str | None = None) -> list[Request]:
        """Requests whose target matches ``path`` (as files match), optionally of one method."""
        return [
            r
            for r in self.requests
            if path in candidate_keys(r.path) and (method is None or r.method == method)
        ]

    def bytes_sent(self, path: str) -> int:
        """Body bytes sent for ``path``, over all its requests."""
        return sum(r.bytes_sent for r in self.requests_for(path))

    def reset_log(self) -> None:
        """Forget recorded requests and zero connection_count (ids keep growing)."""
        with self._lock:
            self._requests.clear()
            self._connection_count = 0

    def _log(self, method: str, path: str, headers: Any, connection_id: int) -> Request:
        lowered: dict[str, str] = {}
        for name, value in headers.items():
            key = name.lower()
            lowered[key] = lowered[key] + ", " + value if key in lowered else value
        record = Request(method, path, lowered, connection_id)
        with self._lock:
            self._requests.append(record)
        return record

    def _accepted(self, sock: Any) -> int:
        with self._lock:
            self._connection_count += 1
            self._next_connection_id += 1
            self._open.add(sock)
            return self._next_connection_id

    def _forget(self, *socks: Any) -> None:
        with self._lock:
            for sock in socks:
                self._open.discard(sock)

    def _handshake(self, sock: socket.socket) -> Any:
        if self.ssl_context is None:
            return sock
        sock.settimeout(_HANDSHAKE_TIMEOUT)
        try:
            tls = self.ssl_context.wrap_socket(sock, server_side=True)
        except OSError:  # ssl.SSLError included: a client that failed to verify us
            sock.close()
            return None
        with self._lock:
            self._open.add(tls)
        return tls


def _default_methods(fault: Fault) -> tuple[str, ...]:
    default = Fault()
    options = {
        f.name
        for f in fields(Fault)
        if f.name not in _BOOKKEEPING and getattr(fault, f.name) != getattr(default, f.name)
    }
    if fault.change is not None:
        options.add("change")
    if options == {"head_status"}:
        return ("HEAD",)
    if options and options <= _SHAPING_OPTIONS:
        return ("GET", "HEAD")
    return ("GET",)


# -------------------------------------------------------------- RawServer ---


def build_response(
    status: int = 200,
    reason: str | None = None,
    headers: Mapping[str, str] | Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    *,
    content_length: bool = True,
) -> bytes:
    """Build response bytes exactly as given, for :class:`RawServer` handlers.

    Parameters
    ----------
    status : int
    reason : str, optional
        Defaults to the standard phrase.
    headers : mapping or sequence of (name, value)
        Sent verbatim, in order, repeats allowed: CR/LF inside a value is
        written as is (to test a client's header-injection defences).
    body : bytes
    content_length : bool
        Add ``Content-Length: len(body)`` unless ``headers`` has one.

    Examples
    --------
    >>> build_response(206, headers={"Content-Range": "bytes 0-1/9"}, body=b"ab")
    b'HTTP/1.1 206 Partial Content\\r\\nContent-Range: bytes 0-1/9\\r\\nContent-Length: 2\\r\\n\\r\\nab'
    """
    items = list(headers.items()) if hasattr(headers, "items") else list(headers)
    if content_length and not any(name.lower() == "content-length" for name, _ in items):
        items.append(("Content-Length", str(len(body))))
    phrase = http.client.responses.get(status, "Unknown") if reason is None else reason
    lines = [f"HTTP/1.1 {status} {phrase}"] + [f"{name}: {value}" for name, value in items]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class RawServer:
    """A raw-socket server for byte-exact faults (urllib3's SocketDummyServer).

    Parameters
    ----------
    handler : callable
        ``handler(conn, request_bytes)`` is called for each request (its
        bytes up to and including the blank line; bodies are not read). It
        writes whatever it likes with ``conn.sendall``. When it returns with
        ``conn`` still open the server waits for the next request on it
        (keep-alive); ``conn.close()`` ends the connection.
    host : str
        Loopback address to bind.
    ssl_context : ssl.SSLContext, optional
        Speak TLS on every connection (an ``https://`` proxy, say); the
        handler then gets the ``ssl.SSLSocket``.

    Attributes
    ----------
    requests : list of bytes
        Every request's bytes, in arrival order.
    connection_count : int
        Connections accepted.
    errors : list of BaseException
        Exceptions raised by ``handler`` (other than OSError).
    """

    def __init__(
        self,
        handler: RawHandler,
        *,
        host: str = "127.0.0.1",
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.handler = handler
        self.host = host
        self.ssl_context = ssl_context
        self.port = 0
        self.requests: list[bytes] = []
        self.connection_count = 0
        self.errors: list[BaseException] = []
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._listener: socket.socket | None = None

    def start(self) -> RawServer:
        """Listen on port 0 and accept in a background thread."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.bind((self.host, 0))
        listener.listen(128)
        # Polling accept: closing a socket does not wake accept() on Linux.
        listener.settimeout(0.05)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._start_thread(self._accept_loop, "RawServer-accept")
        return self

    def stop(self) -> None:
        """Stop accepting, end open connections and join the threads."""
        if self._listener is None:
            return
        self._stopping.set()
        with self._lock:
            still_open = list(self._open)
        for conn in still_open:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in self._threads:
            thread.join(5)
        self._listener.close()
        self._listener = None

    def __enter__(self) -> RawServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return _host_url("http", self.host, self.port)

    def url(self, path: str = "/") -> str:
        """Return the absolute URL of ``path``."""
        return self.base_url + path

    def _start_thread(self, target: Callable[..., None], name: str, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.settimeout(_IDLE_TIMEOUT)
            # Handlers often send a response in several sendall calls.
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self.connection_count += 1
                self._open.add(conn)
            self._start_thread(self._serve, f"RawServer-conn-{self.connection_count}", conn)

    def _serve(self, conn: socket.socket) -> None:
        try:
            if self.ssl_context is not None:
                conn = self.ssl_context.wrap_socket(conn, server_side=True)
                with self._lock:
                    self._open.add(conn)
            with conn:
                self._serve_requests(conn)
        except OSError:
            pass
        except Exception as e:
            self.errors.append(e)
        finally:
            with self._lock:
                self._open.discard(conn)

    def _serve_requests(self, conn: socket.socket) -> None:
        pending = b""
        while not self._stopping.is_set():
            while b"\r\n\r\n" not in pending:
                data = conn.recv(CHUNK_SIZE)
                if not data:
                    return
                pending += data
            head, _, pending = pending.partition(b"\r\n\r\n")
            request = head + b"\r\n\r\n"
            with self._lock:
                self.requests.append(request)
            self.handler(conn, request)
            if conn.fileno() == -1:
                return


def relay_tunnel(client: socket.socket, port: int, seen: list[bytes]) -> None:
    """Answer a CONNECT with 200 and carry bytes both ways to 127.0.0.1:``port``.

    What squid and tinyproxy do once a tunnel is granted; every relayed
    chunk is appended to ``seen``. Bounded: it gives up after 20 s.
    """
    import select

    upstream = socket.create_connection(("127.0.0.1", port), timeout=10)
    client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
    deadline = time.monotonic() + 20
    with upstream:
        while time.monotonic() < deadline:
            # A TLS client socket may hold decrypted bytes that select() cannot see.
            pending = getattr(client, "pending", lambda: 0)()
            ready = [client] if pending else select.select([client, upstream], [], [], 0.5)[0]
            for sock in ready:
                data = sock.recv(65536)
                if not data:
                    client.close()
                    return
                seen.append(data)
                (upstream if sock is client else client).sendall(data)
    client.close()


# ----------------------------------------------------------- socket guard ---


class NonLoopbackError(RuntimeError):
    """A test tried to reach an address outside the machine.

    Not an ``OSError``: a client must not mistake it for a network fault and
    retry it; it must surface at once.
    """


def _is_loopback_host(host: Any) -> bool:
    if host is None or host == "":
        return True  # passive (bind) look-ups and "this host"
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return False
    name = host.strip("[]").split("%", 1)[0].rstrip(".").lower()
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False  # any other name would need DNS, which is the network
    mapped = getattr(address, "ipv4_mapped", None)
    return bool(address.is_loopback or (mapped is not None and mapped.is_loopback))


class LoopbackGuard:
    """Refuses name look-ups and connections that would leave the machine.

    Installed by conftest's autouse fixture on ``socket.getaddrinfo``,
    ``socket.socket.connect`` and ``connect_ex``: the check runs before any
    system call, so no packet is sent. Allowed: 127.0.0.0/8, ::1 (and
    ::ffff:127.x), ``localhost``, Unix sockets. Each refusal is kept in
    :attr:`refused`; the fixture fails the test if any is left at teardown,
    so a client that swallows the error is still caught (a test that
    provokes refusals on purpose clears the list).
    """

    def __init__(self) -> None:
        self.refused: list[tuple[str, Any]] = []

    def check(self, what: str, host: Any) -> None:
        """Raise :class:`NonLoopbackError` unless ``host`` is loopback."""
        if not _is_loopback_host(host):
            self.refused.append((what, host))
            raise NonLoopbackError(f"tests may only reach loopback; {what} refused for {host!r}")

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Patch the socket module for the current test."""
        real_getaddrinfo = socket.getaddrinfo
        real_connect = socket.socket.connect
        real_connect_ex = socket.socket.connect_ex
        guard = self

        def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
            guard.check("getaddrinfo", host)
            return real_getaddrinfo(host, *args, **kwargs)

        def connect(sock: socket.socket, address: Any) -> Any:
            guard._check_address(sock, address)
            return real_connect(sock, address)

        def connect_ex(sock: socket.socket, address: Any) -> Any:
            guard._check_address(sock, address)
            return real_connect_ex(sock, address)

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        monkeypatch.setattr(socket.socket, "connect", connect)
        monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)

    def _check_address(self, sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            self.check("connect", address[0] if isinstance(address, tuple) else address)


# ------------------------------------------------------------------- moto ---


def free_port(host: str = "127.0.0.1") -> int:
    """Return a port that was free a moment ago on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _moto_env() -> dict[str, str]:
    """Environment for a moto subprocess: dummy credentials, no proxy, no AWS config."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AWS_") and k.lower() not in _PROXY_VARIABLES
    }
    env.update(
        AWS_ACCESS_KEY_ID=_DUMMY_KEY,
        AWS_SECRET_ACCESS_KEY=_DUMMY_KEY,
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        NO_PROXY="*",
    )
    return env


def _moto_api(base_url: str, path: str, body: bytes = b"") -> bytes:
    """POST to moto's control API with the standard library only."""
    parts = urllib.parse.urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    try:
        conn.request("POST", path, body=body)
        response = conn.getresponse()
        payload = response.read()
    finally:
        conn.close()
    if response.status != 200:
        raise RuntimeError(f"moto {path} answered {response.status}: {payload[:200]!r}")
    return payload


def reset_moto(base_url: str) -> None:
    """Delete every bucket, object, IAM user... of the moto server at ``base_url``."""
    _moto_api(base_url, "/moto-api/reset")


def enable_moto_auth(base_url: str) -> None:
    """Make moto at ``base_url`` authenticate and authorize every request from now on.

    This is ``POST /moto-api/reset-auth`` with body ``0``: moto's
    ``INITIAL_NO_AUTH_ACTION_COUNT`` becomes 0 and its counter is reset. From
    then on a request needs a SigV4 signature by a key that exists in moto's
    IAM and a policy allowing the action. Populate the server before, with
    auth off (:func:`s3_client_for`), and create the principals before too:

    1. ``create_moto_user(url)``: IAM ``create_user``, ``put_user_policy``
       (:data:`S3_READ_POLICY`), ``create_access_key`` -> long-term keys;
    2. ``assume_moto_role(url)``: IAM ``create_role`` + ``put_role_policy``,
       then STS ``assume_role`` -> temporary keys with a session token.

    STS ``get_session_token`` does give a token, but moto's authenticator
    only knows IAM users' keys and assumed roles, so its credentials are
    refused (``InvalidAccessKeyId``); use ``assume_role`` for temporary
    credentials. :func:`disable_moto_auth` turns checking off again.
    """
    _moto_api(base_url, "/moto-api/reset-auth", b"0")


def disable_moto_auth(base_url: str) -> None:
    """Stop moto at ``base_url`` from checking credentials (its default)."""
    _moto_api(base_url, "/moto-api/reset-auth", b"inf")


class MotoServer:
    """``python -m moto.server`` on 127.0.0.1, as a subprocess.

    Parameters
    ----------
    log_path : str
        File receiving the server's output (read back if it fails to start).
    """

    def __init__(self, log_path: str) -> None:
        self.log_path = log_path
        self.url = ""
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> MotoServer:
        """Start moto and wait until it answers; retry once if the port was taken."""
        for _ in range(3):
            port = free_port()
            self._spawn(port)
            if self._wait_ready(port, time.monotonic() + timeout):
                self.url = f"http://127.0.0.1:{port}"
                return self
            self.stop()
        raise RuntimeError(f"moto server did not start; its output:\n{self._log_tail()}")

    def stop(self) -> None:
        """Terminate the server process (kill it after 10 s) and reap it."""
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _spawn(self, port: int) -> None:
        command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=_moto_env()
            )

    def _wait_ready(self, port: int, deadline: float) -> bool:
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            try:
                conn.request("GET", "/moto-api/data.json")
                conn.getresponse().read()
                return True
            except OSError:
                time.sleep(0.1)
            finally:
                conn.close()
        return False

    def _log_tail(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as log:
                return log.read()[-4000:]
        except OSError:
            return "(no output)"


@dataclass(frozen=True)
class AwsKeys:
    """Credentials made in moto's IAM, to sign requests with."""

    access_key: str
    secret_key: str
    token: str | None = None


def aws_client_for(
    base_url: str,
    service: str,
    *,
    keys: AwsKeys | None = None,
    region: str = "us-east-1",
    **config: Any,
) -> Any:
    """Return a boto3 client for ``service`` at ``base_url`` (boto3 imported here).

    Parameters
    ----------
    base_url : str
        The moto server's URL.
    service : str
        ``"s3"``, ``"iam"``, ``"sts"``...
    keys : AwsKeys, optional
        Defaults to dummy keys (``testing``), fine while auth is off.
    region : str
    **config
        Extra ``botocore.config.Config`` arguments.
    """
    import boto3
    from botocore.config import Config

    keys = keys or AwsKeys(_DUMMY_KEY, _DUMMY_KEY)
    if service == "s3":
        # Virtual-host style would turn the bucket into a host name to resolve.
        config.setdefault("s3", {"addressing_style": "path"})
    return boto3.client(
        service,
        endpoint_url=base_url,
        region_name=region,
        aws_access_key_id=keys.access_key,
        aws_secret_access_key=keys.secret_key,
        aws_session_token=keys.token,
        config=Config(**config),
    )


def s3_client_for(base_url: str, **kwargs: Any) -> Any:
    """Return a path-style boto3 S3 client for the moto server at ``base_url``.

    Dummy credentials and region us-east-1 unless ``keys=``/``region=`` are
    given. Note that moto, like S3, refuses anonymous GETs of a private
    object: upload with ``ACL="public-read"`` what anonymous clients fetch.
    """
    return aws_client_for(base_url, "s3", **kwargs)


def create_moto_user(
    base_url: str,
    *,
    user_name: str = "pyvo-dl-reader",
    policy: Mapping[str, Any] | None = None,
) -> AwsKeys:
    """Create an IAM user with ``policy`` and an access key, before auth is on.

    IAM ``create_user``, ``put_user_policy`` (default :data:`S3_READ_POLICY`)
    and ``create_access_key`` through boto3; see :func:`enable_moto_auth`.
    """
    iam = aws_client_for(base_url, "iam")
    iam.create_user(UserName=user_name)
    iam.put_user_policy(
        UserName=user_name,
        PolicyName="pyvo-dl-test",
        PolicyDocument=json.dumps(policy or S3_READ_POLICY),
    )
    key = iam.create_access_key(UserName=user_name)["AccessKey"]
    return AwsKeys(key["AccessKeyId"], key["SecretAccessKey"])


def assume_moto_role(
    base_url: str,
    *,
    role_name: str = "pyvo-dl-role",
    policy: Mapping[str, Any] | None = None,
) -> AwsKeys:
    """Create a role with ``policy`` and assume it: temporary keys with a session token.

    IAM ``create_role`` and ``put_role_policy``, then STS ``assume_role``,
    before auth is on; see :func:`enable_moto_auth`.
    """
    iam = aws_client_for(base_url, "iam")
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    role = iam.create_role(RoleName=role_name, AssumeRolePolicyDocument=json.dumps(trust))
    iam.put_role_policy(
        RoleName=role_name,
        PolicyName="pyvo-dl-test",
        PolicyDocument=json.dumps(policy or S3_READ_POLICY),
    )
    sts = aws_client_for(base_url, "sts")
    credentials = sts.assume_role(RoleArn=role["Role"]["Arn"], RoleSessionName="pyvo-dl-test")
    creds = credentials["Credentials"]
    return AwsKeys(creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"])

"""HTTP transports: the standard library's http.client, or a requests-like session.

This is the one module that knows socket, ssl and http.client: it turns every
network fault into :class:`ConnectionFault` (retryable) or
:class:`~pyvo_dl.DownloadError` (not), chained with ``from``.

:class:`StdlibTransport` is ``http.client.HTTPConnection`` and
``HTTPSConnection`` with a keep-alive pool per origin, as urllib3 builds on
them. CPython reads the answers (so a copy of pyvo_dl vendored on an HPC node
gets the interpreter's protocol fixes); this module only adds, at the edges,
what http.client lets through and a download cannot accept:

- every interim ``1xx`` answer but ``101`` is skipped, at most
  :data:`MAX_INTERIM_ANSWERS` of them (http.client skips ``100`` only and
  returns ``103 Early Hints`` as the answer);
- a status code is three ASCII digits (``int()`` also takes other scripts' digits);
- the whole head must arrive within ``timeout`` of the request (a head
  trickled a byte at a time, or an endless stream of ``100 Continue``, ends
  there); after the head, ``timeout`` is the idle time allowed per read;
- a head cut by the end of the connection is a network fault (http.client
  takes whatever came as the whole head: an empty file, "complete");
- framing that RFC 9112 calls an error is refused with a clear
  :class:`~pyvo_dl.DownloadError` and not retried (a server that frames its
  answers wrongly does so again): ``Transfer-Encoding`` with
  ``Content-Length``, a transfer coding other than ``chunked``, lengths
  that disagree or are not 1 to 18 ASCII digits, header lines that are not
  fields (``Transfer-Encoding : chunked``), chunk sizes that are not plain
  hex digits (``+5``, ``0x5``, ``1_0``);
- a connection goes back to the pool only when its answer was read to the
  end with no byte left over, and is taken again only if it was idle less
  than :data:`MAX_IDLE_SECONDS` and nothing waits to be read on it (a peer
  that closed, stray bytes); a request that fails on a reused connection
  before any byte of the answer is sent once more on a new one (the
  keep-alive race every client meets);
- a forked child never uses its parent's connections.

:class:`SessionTransport` adapts a ``requests.Session``-like object so that
pyvo's authenticated sessions keep working.
"""

from __future__ import annotations

import email.errors
import http.client
import io
import os
import select
import socket
import threading
import time
import weakref

from . import _httputil
from ._errors import DownloadError

try:
    import ssl
except ImportError:  # a Python built without OpenSSL: plain http still works
    ssl = None  # type: ignore[assignment]

TYPE_CHECKING = False
if TYPE_CHECKING:
    import urllib.parse
    from typing import Any, Callable, Iterator, Mapping, Optional, Tuple, Union

    Headers = Mapping[str, str]
    PoolKey = Tuple[str, str, int, Optional[str]]

#: A read hands over what it has after this long, full buffer or not.
_MAX_FILL_SECONDS = 0.2
#: Idle connections kept per origin; enough for the workers of download_many.
MAX_IDLE_PER_ORIGIN = 16
#: An idle connection older than this is closed, not reused: servers close
#: theirs after a while (Apache after 5 s, nginx 75 s) and NAT boxes forget
#: them silently, which would cost a whole timeout to find out.
MAX_IDLE_SECONDS = 30.0
_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 0) | getattr(os, "SPLICE_F_NONBLOCK", 0)
#: Interim (1xx) answers skipped before the real one; more is a broken server.
MAX_INTERIM_ANSWERS = 20
#: Error bodies are read up to this size only (S3's XML errors are tiny).
MAX_ERROR_BODY = 64 * 1024
#: A Content-Length of more digits than this (an exabyte) is not a length.
_MAX_LENGTH_DIGITS = 18
#: Nor is a chunk size of more hex digits than this.
_MAX_CHUNK_DIGITS = 16
#: As http.client: a longer line is a broken answer.
_MAX_LINE = 65536
#: The buffer a head is read through: it and a small body arrive in one read.
_READ_BUFFER = 64 * 1024
#: Origins whose routes are remembered (a crawl over many hosts starts over).
_MAX_ROUTES = 1024
_DEFAULT_PORTS = {"http": 80, "https": 443}
_HEX_DIGITS = b"0123456789abcdefABCDEF"
#: Defects of the email parser that mean a head line was not a header field.
_NOT_A_FIELD = (
    email.errors.MissingHeaderBodySeparatorDefect,
    email.errors.FirstHeaderLineIsContinuationDefect,
    email.errors.MisplacedEnvelopeHeaderDefect,
)


class ConnectionFault(DownloadError):
    """A transient network fault: refused, reset, timed out, truncated.

    The engine retries these; after the last retry the fault itself reaches
    the caller as a :class:`~pyvo_dl.DownloadError`.
    """


class TimeoutFault(ConnectionFault):
    """No byte arrived (or no connection was made) within ``timeout`` seconds."""


class _Refused(http.client.HTTPException):
    """The answer breaks HTTP/1.1 framing in a way that RFC 9112 calls an error."""


class _CutHead(http.client.HTTPException):
    """The connection ended in the middle of the answer's head."""


class _StaleConnection(Exception):
    """A reused keep-alive connection failed before any byte of an answer."""


class _TunnelRefused(OSError):
    """The proxy answered CONNECT with something else than 200."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


# -- errors -------------------------------------------------------------------


def _translate(exc: BaseException, url: str, action: str) -> DownloadError:
    """Map a low-level exception to ConnectionFault (retryable) or DownloadError."""
    if isinstance(exc, DownloadError):
        return exc
    if ssl is not None and isinstance(exc, ssl.SSLCertVerificationError):
        return DownloadError(
            f"TLS certificate verification failed for {url}: {exc.verify_message}. "
            "If the server uses a private CA, pass ssl_context= with that CA loaded "
            "(ssl.create_default_context(cafile=...)) or set SSL_CERT_FILE."
        )
    if isinstance(exc, socket.gaierror):
        return _resolution_error(exc, _httputil.host_of(url), url)
    if isinstance(exc, socket.timeout):
        return TimeoutFault(f"timed out while {action} {url}")
    if isinstance(exc, http.client.IncompleteRead):
        return ConnectionFault(f"connection closed early while {action} {url}: {exc!r}")
    if isinstance(exc, _CutHead):
        return ConnectionFault(f"connection closed early while {action} {url}: {exc}")
    if isinstance(exc, http.client.RemoteDisconnected):
        return ConnectionFault(f"the server closed the connection without answering {url}")
    if isinstance(exc, OSError):
        return ConnectionFault(f"network error while {action} {url}: {exc!r}")
    if isinstance(exc, http.client.HTTPException):
        # BadStatusLine, LineTooLong, UnknownProtocol, too many headers, _Refused.
        return DownloadError(
            f"the server sent a malformed answer while {action} {url} ({_describe(exc)}); "
            "refused: an answer framed wrongly cannot be trusted with the file's bytes"
        )
    return DownloadError(f"unexpected error while {action} {url}: {exc!r}")


def _describe(exc: http.client.HTTPException) -> str:
    # Both keep what they refused as their only argument.
    if isinstance(exc, http.client.BadStatusLine):
        return f"not an HTTP/1.x status line: {str(exc.args[0])[:80]!r}"
    if isinstance(exc, http.client.UnknownProtocol):
        return f"unknown protocol version {exc.args[0]!r}"
    return str(exc)


def _resolution_error(exc: socket.gaierror, host: str, url: str) -> DownloadError:
    # EAI_AGAIN: the resolver could not answer now (a DNS server timing out).
    if exc.errno == getattr(socket, "EAI_AGAIN", None):
        return ConnectionFault(f"temporary failure resolving host {host!r} of {url}: {exc}")
    return DownloadError(f"cannot resolve host {host!r} of {url}: {exc}")


# -- reading answers ----------------------------------------------------------


class _HeadTimedStream(io.RawIOBase):
    """The socket under one answer, with a deadline for the whole head.

    Until :meth:`end_head`, each read gets only the time left until the
    deadline (the first one the socket's own timeout, which is that much):
    a server cannot hold a request by trickling its head or by sending
    ``100 Continue`` forever. It also records whether the connection ended
    during the head and how many bytes came.

    Parameters
    ----------
    sock : socket
        The connected socket (plain or TLS).
    deadline : float or None
        ``time.monotonic()`` by which the head must have arrived.
    """

    #: Set first thing in __init__; None if that was interrupted (Ctrl-C).
    _io: Any = None
    # Class-level starting values: an instance sets only those that change.
    _reads = 0
    received = 0
    #: Whether the connection ended before the head did.
    ended_in_head = False
    #: While True, reads answer "nothing yet" without touching the socket.
    holding = False

    def __init__(self, sock: Any, deadline: float | None) -> None:
        # makefile(buffering=0): socket.SocketIO, which keeps the socket open
        # until this stream is closed even when http.client closes the
        # connection (Connection: close hands the socket to the answer).
        self._io = sock.makefile("rb", buffering=0)
        self._sock = sock
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        if self.holding:
            return None
        deadline = self._deadline
        if deadline is not None and self._reads:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("the head of the answer did not arrive in time")
            self._sock.settimeout(left)
        self._reads += 1
        n: int | None = self._io.readinto(buffer)
        if n:
            self.received += n
        elif n == 0 and deadline is not None:
            self.ended_in_head = True
        return n

    def shutdown(self) -> None:
        """End the connection now, from any thread: a read blocked on it returns."""
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except (OSError, AttributeError):
            pass  # closed already

    def end_head(self, timeout: float) -> None:
        """From now on, ``timeout`` is the idle time allowed per read."""
        if self._deadline is not None and self._reads > 1:
            self._sock.settimeout(timeout)
        self._deadline = None

    def fileno(self) -> int:
        return int(self._io.fileno())

    def close(self) -> None:
        if not self.closed and self._io is not None:
            self._io.close()
        super().close()


class _AnswerReader(io.BufferedReader):
    """The buffered reader http.client reads one answer through.

    Besides a ``BufferedReader``'s work it notices at close whether bytes
    were left in its buffer (stray bytes after a body), and, for a
    body that is not chunked, hands over what arrived within 0.2 s or before
    a fault instead of waiting for the whole buffer: a slow link still moves
    the progress display, and a fault never throws received bytes away (it
    is raised by the next read).
    """

    raw: _HeadTimedStream

    def __init__(self, raw: _HeadTimedStream) -> None:
        super().__init__(raw, _READ_BUFFER)
        #: Whether bytes were still buffered when the answer was closed.
        self.leftover = False
        #: A sized or until-close body: partial reads are handed over.
        self.hand_over = False
        #: A fault met after some bytes were handed over; raised by the next read.
        self.fault: BaseException | None = None

    def readinto(self, buffer: Any) -> int:
        if not self.hand_over:
            # Chunked: http.client reads each chunk whole (_safe_readinto).
            return super().readinto(buffer)
        fault, self.fault = self.fault, None
        if fault is not None:
            raise fault
        view = memoryview(buffer)
        size = view.nbytes
        done = 0
        deadline = time.monotonic() + _MAX_FILL_SECONDS
        readinto1 = self.readinto1
        while done < size:
            try:
                n = readinto1(view[done:])
            except OSError as exc:
                if not done:
                    raise
                self.fault = exc
                break
            if not n:
                break
            done += n
            if time.monotonic() >= deadline:
                break
        return done

    def close(self) -> None:
        try:
            if not self.closed:
                self.leftover = self._buffered()
        finally:
            super().close()

    def _buffered(self) -> bool:
        """Whether the buffer holds bytes, found without reading the socket."""
        self.raw.holding = True
        try:
            return bool(self.peek(1))
        except (OSError, ValueError):
            return True  # unknown: do not reuse
        finally:
            self.raw.holding = False


class _AnswerSource:
    """What :class:`_Response` is built on: ``makefile`` gives the reader of one answer."""

    def __init__(self, sock: Any, deadline: float | None) -> None:
        self._sock = sock
        self._deadline = deadline

    def makefile(self, mode: str = "rb") -> _AnswerReader:
        return _AnswerReader(_HeadTimedStream(self._sock, self._deadline))


class _Response(http.client.HTTPResponse):
    """CPython's answer parser, stricter at the status line and the chunk sizes."""

    #: Set by HTTPResponse.__init__; None until then (a close before it, by
    #: the finaliser of an answer whose construction Ctrl-C interrupted).
    fp: _AnswerReader = None  # type: ignore[assignment]

    def __init__(
        self, sock: Any, debuglevel: int = 0, method: str | None = None, url: str | None = None
    ) -> None:
        super().__init__(sock, debuglevel, method, url)
        # Kept: http.client drops self.fp when it closes the answer.
        self.reader = self.fp
        self.stream = self.fp.raw
        #: The final status line, once read (for a refused CONNECT).
        self.final_status: tuple[int, str] | None = None

    def _read_status(self) -> tuple[str, int, str]:
        """The first status line that is not an interim 1xx answer (101 is final)."""
        for _ in range(MAX_INTERIM_ANSWERS + 1):
            version, status, reason = self._read_one_status()
            if not 100 <= status < 200 or status == 101:
                self.final_status = (status, reason.strip())
                return version, status, reason
            # 100 Continue, 102 Processing, 103 Early Hints: the answer follows.
            http.client._read_headers(self.fp)  # type: ignore[attr-defined]
        raise _Refused(f"more than {MAX_INTERIM_ANSWERS} interim (1xx) answers")

    def _read_one_status(self) -> tuple[str, int, str]:
        line = self.fp.readline(_MAX_LINE + 1)
        cut = bool(line) and not line.endswith(b"\n")
        try:
            version, status, reason = self._parse_status(line)
        except http.client.BadStatusLine as exc:
            if cut and not isinstance(exc, http.client.RemoteDisconnected):
                raise _CutHead(f"the status line ended early: {line[:80]!r}") from exc
            raise
        if cut:
            raise _CutHead(f"the status line ended early: {line[:80]!r}")
        # RFC 9112: HTTP-version SP 3DIGIT SP reason; int() takes other scripts' digits and "1_00".
        parts = line.rstrip(b"\r\n").split(b" ", 2)
        if len(parts) < 2 or len(parts[1]) != 3 or not parts[1].isdigit():
            raise http.client.BadStatusLine(line.decode("iso-8859-1"))
        return str(version), int(status), str(reason)

    def _parse_status(self, line: bytes) -> tuple[str, int, str]:
        """http.client's own reading of the status line ``line``, read here already.

        Its ``_read_status`` reads one line from ``self.fp``: it is given that
        line alone. So the line is at hand for the checks above without a
        Python ``readline`` wrapped around every line of the head.
        """
        reader = self.fp
        try:
            self.fp = io.BytesIO(line)  # type: ignore[assignment]
            return super()._read_status()  # type: ignore[misc,no-any-return]
        finally:
            swapped: Any = self.fp
            if swapped is None:  # http.client closed "the connection": close the real one
                reader.close()
            else:
                self.fp = reader

    def _read_next_chunk_size(self) -> int:
        """The next chunk's size: hex digits only (``+5``, ``0x5``, ``1_0`` refused)."""
        line = self.fp.readline(_MAX_LINE + 1)
        if len(line) > _MAX_LINE:
            raise http.client.LineTooLong("chunk size")
        if not line.endswith(b"\n"):
            raise http.client.IncompleteRead(b"")  # the connection ended in the line
        digits = line.split(b";", 1)[0].rstrip(b" \t\r\n")  # RFC 9112: BWS before ";"
        if not 0 < len(digits) <= _MAX_CHUNK_DIGITS or digits.translate(None, _HEX_DIGITS):
            raise _Refused(f"a chunk size line that is not hex digits: {line[:40]!r}")
        return int(digits, 16)


def _check_answer(raw: _Response, timeout: float) -> AnswerHeaders:
    """After ``begin()``: the head was whole, and its framing is one RFC 9112 allows.

    Returns the header fields (obsolete line folding replaced by a space),
    read once from the email parser's message.

    Raises
    ------
    _CutHead
        When the connection ended before the blank line that ends a head.
    _Refused
        For framing that RFC 9112 calls an error and http.client accepts.
    """
    stream = raw.stream
    if stream.ended_in_head:
        raise _CutHead("the connection ended in the middle of the head")
    stream.end_head(timeout)
    message = raw.msg
    stray = _stray_line(message)
    if stray is not None:
        raise _Refused(f"a head line that is not a header field: {stray[:80]!r}")
    # raw_items(), not items(): items() looks for surrogate escapes in each
    # value, which a head decoded as ISO-8859-1 (as http.client does) never has.
    headers = AnswerHeaders(list(message.raw_items()))
    codings = headers.get_all("Transfer-Encoding", [])
    lengths = headers.get_all("Content-Length", [])
    if codings and lengths:
        raise _Refused("both Transfer-Encoding and Content-Length (RFC 9112 section 6.3)")
    if codings:
        names = [name.strip().lower() for value in codings for name in value.split(",")]
        if names != ["chunked"]:
            raise _Refused(f"Transfer-Encoding {', '.join(codings)!r}: only chunked is understood")
    if lengths:
        length = _content_length(lengths)
        if raw.length is None and not raw.chunked:
            # "5, 5" is one length (RFC 9110 section 8.6), which int() refused.
            raw.length = length
            raw.will_close = raw._check_close()  # type: ignore[attr-defined]
    return _unfold(message) if headers.folded else headers


def _stray_line(message: http.client.HTTPMessage) -> str | None:
    """A head line that the email parser did not take as a header field, if any."""
    for defect in message.defects:
        if isinstance(defect, _NOT_A_FIELD):
            line = getattr(defect, "line", None)
            payload = message.get_payload()
            if line is None and isinstance(payload, str):
                line = payload.partition("\n")[0]
            return str(line or type(defect).__name__)
    envelope = message.get_unixfrom()
    if envelope:
        return str(envelope)
    # The parsed payload as it is: get_payload() would look up a
    # Content-Transfer-Encoding among all the fields first.
    payload = message._payload  # type: ignore[attr-defined]
    if isinstance(payload, str) and payload:
        return payload.partition("\n")[0]
    return None


def _content_length(values: list[str]) -> int:
    """The one length that every ``Content-Length`` value gives, or refuse."""
    if len(values) == 1:
        value = values[0]
        if 0 < len(value) <= _MAX_LENGTH_DIGITS and value.isascii() and value.isdigit():
            return int(value)  # the usual one: one field, one plain length
    pieces = [piece.strip() for value in values for piece in value.split(",")]
    for piece in pieces:
        # int() would take "+5", " 5", "5_0", Arabic-Indic digits and numbers of any size.
        if not (0 < len(piece) <= _MAX_LENGTH_DIGITS and piece.isascii() and piece.isdigit()):
            raise _Refused(f"Content-Length {', '.join(values)[:80]!r} is not a length")
    if len(set(map(int, pieces))) != 1:
        raise _Refused(f"Content-Lengths that disagree: {', '.join(values)[:80]!r}")
    return int(pieces[0])


def _unfold(message: http.client.HTTPMessage) -> AnswerHeaders:
    """Replace obsolete line folding in field values by a space (RFC 9112 section 5.2)."""
    items = message.items()
    for name in {name for name, _ in items}:
        del message[name]
    for name, value in items:
        # Only CR LF and LF: splitlines() would also cut at NEL and other obs-text.
        parts = value.replace("\r\n", "\n").split("\n")
        message[name] = " ".join(part.strip(" \t") for part in parts)
    return AnswerHeaders(message.items())


class AnswerHeaders:
    """An answer's header fields, looked up by name in any case.

    Built once per answer from the fields the email parser found (its
    ``Message.get`` walks every field and lowers its name at each look-up,
    a dozen times per small file). As ``Message``, :meth:`get` gives the
    first of repeated fields, and :meth:`items` every field in order.

    Parameters
    ----------
    fields : list of (str, str)
        Name and value of each field, in the order received.
    """

    __slots__ = ("_fields", "_first", "_repeated", "folded")

    def __init__(self, fields: list[tuple[str, str]]) -> None:
        self._fields = fields
        first: dict[str, str] = {}
        folded = False
        for name, value in fields:
            first.setdefault(name.lower(), value)
            if "\n" in value:
                folded = True
        self._first = first
        # Most answers name each field once: get_all() then needs no scan.
        self._repeated = len(first) != len(fields)
        #: Whether a value holds obsolete line folding (a line break).
        self.folded = folded

    def get(self, name: str, default: Any = None) -> Any:
        """The value of the first field called ``name`` (any case), else ``default``."""
        return self._first.get(name.lower(), default)

    def __getitem__(self, name: str) -> str | None:
        # As email.message.Message: None, not KeyError, for a missing field.
        return self._first.get(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._first

    def get_all(self, name: str, default: Any = None) -> Any:
        """Every value of the fields called ``name``, in order; ``default`` when there is none."""
        key = name.lower()
        if self._repeated:
            values = [value for field, value in self._fields if field.lower() == key]
        else:
            value = self._first.get(key)
            values = [] if value is None else [value]
        return values or default

    def items(self) -> list[tuple[str, str]]:
        """Every field, as (name, value), in the order received."""
        return list(self._fields)

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __repr__(self) -> str:
        return f"AnswerHeaders({self._fields!r})"


# -- connections ----------------------------------------------------------------


def _create_connection(
    address: tuple[str, int], timeout: float | None, source_address: Any
) -> socket.socket:
    """``socket.create_connection``, with an ASCII host handed to it as bytes.

    ``getaddrinfo`` encodes a str host with the ``idna`` codec, whose first
    use imports ``encodings.idna``, ``stringprep`` and ``unicodedata``: 5.4 M
    of the 216.8 M instructions of a one-file 1 MiB download process. A URL's host
    is ASCII here already (IDNA is applied when the URL is checked); bytes
    are resolved as they are.
    """
    host, port = address
    if host.isascii():
        resolved_as: Any = (host.encode("ascii"), port)
        return socket.create_connection(resolved_as, timeout, source_address)
    return socket.create_connection(address, timeout, source_address)


class _Connection(http.client.HTTPConnection):
    """An ``HTTPConnection`` whose answers are read by :class:`_Response`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Called by getresponse() and by the CONNECT of a tunnel.
        self.response_class = self._new_response  # type: ignore[assignment]
        #: When the head of the answer being read must be complete.
        self.head_deadline: float | None = None
        self.last_response: _Response | None = None
        self.pool_key: PoolKey | None = None
        self.idle_since = 0.0
        #: The descriptor and a poll object watching it, for the check before reuse.
        self.poller: tuple[int, Any] | None = None
        self._create_connection = _create_connection

    def _new_response(
        self, sock: Any, debuglevel: int = 0, method: str | None = None, url: str | None = None
    ) -> _Response:
        response = _Response(_AnswerSource(sock, self.head_deadline), debuglevel, method, url)
        self.last_response = response
        return response

    def connect(self) -> None:
        """Connect (through the proxy's tunnel when one is set)."""
        try:
            # HTTPConnection's, also for HTTPS: TLS is added by _HTTPSConnection.
            http.client.HTTPConnection.connect(self)
        except OSError as exc:
            refusal = self._tunnel_refusal()
            if refusal is None:
                raise
            raise refusal from exc
        # The answer to a tunnel's CONNECT, which http.client leaves open
        # before 3.12: it holds the socket (TLS to an https:// proxy) open.
        answer, self.last_response = self.last_response, None
        if answer is not None:
            answer.close()

    def _tunnel_refusal(self) -> _TunnelRefused | None:
        answer = self.last_response
        status = None if answer is None else answer.final_status
        if status is not None and status[0] != 200:
            return _TunnelRefused(*status)
        return None

    def abandon(self) -> None:
        """Close the connection and the answer being read on it.

        http.client hands the socket to an answer that ends with the
        connection (``Connection: close``); closing only the connection
        would leave it open until the answer is collected.
        """
        answer, self.last_response = self.last_response, None
        try:
            if answer is not None:
                answer.close()
        finally:
            self.close()

    def use_timeout(self, timeout: float) -> None:
        """Apply this request's timeout to a connection opened with another."""
        self.timeout = timeout
        if self.sock is not None and self.sock.gettimeout() != timeout:
            self.sock.settimeout(timeout)  # a system call: only when it changes


class _HTTPSConnection(_Connection, http.client.HTTPSConnection):
    """HTTPS, with TLS to an ``https://`` proxy and TLS to the origin inside it."""

    def __init__(self, host: str, port: int, *, timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._tls = context
        self._tunnel_to: str | None = None
        self._tls_proxy = False

    def tunnel_to(self, host: str, port: int, headers: dict[str, str], tls_proxy: bool) -> None:
        """CONNECT through the proxy this connection goes to; ``tls_proxy``: an https:// one."""
        self.set_tunnel(host, port, headers=headers)
        self._tunnel_to = host
        if tls_proxy:
            self._tls_proxy = True
            # http.client's way to the proxy, with TLS to the proxy added.
            self._create_connection = self._connect_tls_proxy

    def _connect_tls_proxy(
        self, address: tuple[str, int], timeout: Any = None, source_address: Any = None
    ) -> ssl.SSLSocket:
        sock = _create_connection(address, timeout, source_address)
        try:
            return self._tls.wrap_socket(sock, server_hostname=address[0])
        except BaseException:
            sock.close()
            raise

    def connect(self) -> None:
        """TCP (or TLS to the proxy), the tunnel if any, then TLS to the origin."""
        _Connection.connect(self)  # http.client's HTTPConnection.connect, refusal mapped
        hostname = self._tunnel_to or self.host
        if self._tls_proxy:
            self.sock = _TLSInTLS(self.sock, self._tls, hostname)
        else:
            self.sock = self._tls.wrap_socket(self.sock, server_hostname=hostname)


class _TLSInTLS:
    """TLS to the origin inside the TLS connection to an ``https://`` proxy.

    An ``ssl.SSLSocket`` cannot be wrapped again, so the inner TLS runs on an
    ``ssl.SSLObject`` over memory buffers, fed from the outer socket (as
    urllib3's ``SSLTransport`` does). It offers what http.client and this
    module use of a socket.
    """

    def __init__(self, outer: ssl.SSLSocket, context: ssl.SSLContext, hostname: str) -> None:
        self._outer = outer
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_hostname=hostname)
        self._streams = 0
        self._closed = False
        self._run(self._tls.do_handshake)

    def _run(self, step: Callable[..., Any], *args: Any) -> Any:
        while True:
            try:
                result = step(*args)
            except ssl.SSLWantReadError:
                self._flush()
                data = self._outer.recv(_READ_BUFFER)
                if data:
                    self._incoming.write(data)
                else:
                    self._incoming.write_eof()
                continue
            self._flush()
            return result

    def _flush(self) -> None:
        data = self._outgoing.read()
        if data:
            self._outer.sendall(data)

    def sendall(self, data: Any) -> None:
        view = memoryview(data).cast("B")
        while view:
            view = view[self._run(self._tls.write, view) :]

    def recv_into(self, buffer: Any, nbytes: int = 0) -> int:
        try:
            return int(self._run(self._tls.read, nbytes or len(buffer), buffer))
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            return 0  # closed, with or without close_notify (as SSLSocket reads it)

    def recv(self, size: int) -> bytes:
        buffer = bytearray(size)
        return bytes(buffer[: self.recv_into(buffer)])

    def makefile(self, mode: str = "rb", buffering: int | None = None) -> _TunnelIO:
        self._streams += 1
        return _TunnelIO(self)

    def settimeout(self, timeout: float | None) -> None:
        self._outer.settimeout(timeout)

    def gettimeout(self) -> float | None:
        return self._outer.gettimeout()

    def fileno(self) -> int:
        return self._outer.fileno()

    def pending(self) -> int:
        return int(self._tls.pending()) + self._incoming.pending + self._outer.pending()

    def setsockopt(self, *args: Any) -> None:
        self._outer.setsockopt(*args)

    def shutdown(self, how: int) -> None:
        self._outer.shutdown(how)

    def stream_closed(self) -> None:
        self._streams -= 1
        if self._closed and self._streams <= 0:
            self._outer.close()

    def close(self) -> None:
        self._closed = True
        if self._streams <= 0:
            self._outer.close()


class _TunnelIO(io.RawIOBase):
    """``makefile("rb", buffering=0)`` of a :class:`_TLSInTLS`."""

    def __init__(self, sock: _TLSInTLS) -> None:
        super().__init__()
        self._sock = sock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self._sock.recv_into(buffer)

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        if not self.closed:
            self._sock.stream_closed()
        super().close()


def _has_input(sock: Any, poller: tuple[int, Any] | None = None) -> bool:
    """Whether something waits to be read on an idle connection (or it is closed).

    An idle keep-alive connection has nothing to say: readable means the
    peer closed it (EOF) or sent bytes that belong to no request; either way
    it must not carry the next request (urllib3's ``is_connection_dropped``).
    ``poller``, from :func:`_poller`, saves making a poll object each time.
    """
    if sock is None:
        return True
    pending = getattr(sock, "pending", None)
    if pending is not None and pending():
        return True  # decrypted bytes already waiting in the TLS layer
    try:
        fd = sock.fileno()
    except OSError:
        return True
    if fd < 0:
        return True
    if poller is None or poller[0] != fd:
        poller = _poller(fd)
    if poller is not None:
        return bool(poller[1].poll(0))
    readable, _, _ = select.select([fd], [], [], 0)
    return bool(readable)


def _poller(fd: int) -> tuple[int, Any] | None:
    """``fd`` and a poll object watching it for input; None without poll (Windows)."""
    if fd < 0 or not hasattr(select, "poll"):
        return None
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return fd, poller


# -- responses ---------------------------------------------------------------------


class StdlibResponse:
    """An answer read through http.client.

    Parameters
    ----------
    conn : _Connection
        The connection it came on; returned to the pool when the body was
        read to its end with nothing left over.
    raw : _Response
        The answer, its head read.
    url : str
        The URL requested, for messages.
    release_to : callable
        Called with the connection when it can be reused.
    headers : AnswerHeaders
        Its header fields.
    """

    def __init__(
        self,
        conn: _Connection,
        raw: _Response,
        url: str,
        release_to: Callable[[_Connection], None],
        headers: AnswerHeaders,
    ) -> None:
        self._conn: _Connection | None = conn
        self._raw = raw
        self._reader = raw.fp
        self._release_to = release_to
        self.url = url
        self.status: int = raw.status
        self.reason: str = raw.reason
        self.headers: Any = headers
        self._reader.hand_over = not raw.chunked
        self._spliced = False

    def readinto(self, buffer: Any) -> int:
        """Read body bytes into ``buffer``; 0 at the end of the body.

        Raises
        ------
        ConnectionFault
            When the connection ends before the body does, or fails.
        DownloadError
            When the body's framing is malformed (a bad chunk size).
        """
        raw = self._raw
        try:
            n = raw.readinto(buffer)
        except Exception as exc:
            self.close()
            raise _translate(exc, self.url, "reading the body of") from exc
        except BaseException:
            self.close()  # Ctrl-C mid-body: the connection can never be reused
            raise
        if not n and raw.length and len(buffer):
            # http.client returns 0 here where it "ideally would raise IncompleteRead".
            left = raw.length
            self.close()
            raise ConnectionFault(
                f"connection closed early while reading the body of {self.url}: "
                f"{left} more bytes expected"
            )
        return n

    def read(self, size: int = MAX_ERROR_BODY) -> bytes:
        """Read up to ``size`` bytes of the body (for small error bodies and listings)."""
        buffer = bytearray(size)
        view = memoryview(buffer)
        done = 0
        while done < size:
            n = self.readinto(view[done:])
            if not n:
                break
            done += n
        del view
        del buffer[done:]
        return bytes(buffer)

    def release(self) -> None:
        """Finish with the response; keep the connection if the body was consumed."""
        conn = self._conn
        if conn is None:
            return
        raw = self._raw
        try:
            if not raw.isclosed() and raw.length == 0:
                # HEAD, 204, Content-Length: 0: http.client finishes an empty
                # body only when it is read.
                raw.read()
            reusable = (
                raw.isclosed()
                and not self._spliced
                and not raw.will_close
                and not self._reader.leftover
                and self._reader.fault is None
            )
        except BaseException:
            self.close()
            raise
        self._conn = None
        if reusable:
            try:
                self._release_to(conn)
            except BaseException:
                conn.close()
                raise
        else:
            raw.close()
            conn.close()

    def buffered(self) -> int:
        """Bytes of the body that have arrived with the head, held by http.client's reader."""
        reader = self._reader
        if reader.closed or self._raw.length is None:
            return 0
        reader.raw.holding = True
        try:
            return min(len(reader.peek(1)), self._raw.length)
        finally:
            reader.raw.holding = False

    def splice_source(self) -> int | None:
        """The socket's descriptor if the rest of a sized body may be spliced from it, else None.

        Only a plain socket (TLS decrypts in user space) and a body of known
        length that is not chunked; the bytes already buffered (:meth:`buffered`)
        must be read first.
        """
        raw = self._raw
        if raw.chunked or raw.length is None or self._reader.closed or self._reader.fault:
            return None
        sock = raw.stream._sock
        if not isinstance(sock, socket.socket) or (
            ssl is not None and isinstance(sock, ssl.SSLSocket)
        ):
            return None
        return sock.fileno()

    def splice_into(self, pipe: int, limit: int) -> int:
        """Move up to ``limit`` body bytes from the socket into the pipe ``pipe``, waiting for some.

        After this the answer is never pooled: http.client's count of the
        body is behind what was moved. The caller stops at the body's length.

        Raises
        ------
        ConnectionFault
            When the connection ends, fails, or stays silent for ``timeout``.
        """
        self._spliced = True
        sock = self._raw.stream._sock
        fd = sock.fileno()
        timeout = sock.gettimeout()
        wait_ms = -1 if timeout is None else max(1, int(timeout * 1000))
        try:
            while True:
                try:
                    return int(os.splice(fd, pipe, limit, flags=_SPLICE_FLAGS))
                except BlockingIOError:
                    poller = select.poll()
                    poller.register(fd, select.POLLIN)
                    if not poller.poll(wait_ms):
                        raise socket.timeout("timed out") from None
        except Exception as exc:
            self.close()
            raise _translate(exc, self.url, "reading the body of") from exc

    def abort(self) -> None:
        """From another thread: cut this answer now; the reader gets a network fault.

        Closing a socket does not wake a thread blocked reading it; shutting
        it down does. The reading thread then closes the response itself.
        """
        self._raw.stream.shutdown()

    def close(self) -> None:
        """Abandon the response and its connection."""
        conn, self._conn = self._conn, None
        try:
            self._raw.close()
        finally:
            if conn is not None:
                conn.close()


# -- the transport -----------------------------------------------------------------

#: Every StdlibTransport, so that a forked child can drop the connections it
#: inherited (they are its parent's: two processes on one TCP stream swap
#: each other's bytes).
_TRANSPORTS: weakref.WeakSet[StdlibTransport] = weakref.WeakSet()


def _forget_inherited_connections() -> None:
    for transport in list(_TRANSPORTS):
        transport._forget_connections()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_inherited_connections)


class _Proxy:
    """A proxy from the environment: where it is, its credentials, its name in messages."""

    def __init__(self, url: str) -> None:
        import urllib.parse

        parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
        self.scheme = parts.scheme.lower()
        self.host = parts.hostname or ""
        try:
            port = parts.port
        except ValueError:
            port = None
        self.port = port or _DEFAULT_PORTS.get(self.scheme, 8080)
        #: Never with the password: messages end up in logs.
        self.label = f"{self.scheme}://{self.host}:{self.port}"
        self.headers = _proxy_auth_headers(parts)
        if self.scheme not in _DEFAULT_PORTS:
            raise DownloadError(
                f"the proxy {self.label} from the environment (HTTP_PROXY, HTTPS_PROXY, "
                "ALL_PROXY) is not an http:// or https:// proxy, the only kinds supported; "
                "unset it, or list the hosts to reach directly in NO_PROXY"
            )


class StdlibTransport:
    """HTTP(S) on http.client with a keep-alive pool per origin.

    Parameters
    ----------
    ssl_context : ssl.SSLContext, optional
        Used for https (and for an ``https://`` proxy); default:
        ``ssl.create_default_context()`` (verified).
    proxies : dict, optional
        Scheme (``http``, ``https``, ``all``, and ``no`` for the hosts to
        reach directly) to proxy URL, as
        :func:`~pyvo_dl._httputil.proxies_from_env` reads them; default:
        from the environment.
    """

    def __init__(
        self,
        ssl_context: ssl.SSLContext | None = None,
        proxies: dict[str, str] | None = None,
    ) -> None:
        self._ssl_context = ssl_context
        self._proxies = _httputil.proxies_from_env(os.environ) if proxies is None else dict(proxies)
        self._idle: dict[PoolKey, list[_Connection]] = {}
        self._routes: dict[tuple[str, str], tuple[PoolKey, str, bool]] = {}
        self._proxy_objects: dict[str, _Proxy] = {}
        self._lock = threading.Lock()
        self._closed = False
        _TRANSPORTS.add(self)

    # -- pool ---------------------------------------------------------------

    def _context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            if ssl is None:
                raise DownloadError("https needs the ssl module, which this Python lacks")
            context = ssl.create_default_context()
            context.set_alpn_protocols(["http/1.1"])
            self._ssl_context = context
        return self._ssl_context

    def _proxy_for(self, scheme: str, host: str) -> str | None:
        proxy = self._proxies.get(scheme) or self._proxies.get("all")
        if not proxy or _httputil.bypasses_proxy(host, self._proxies.get("no")):
            return None
        return proxy

    def _proxy(self, url: str) -> _Proxy:
        proxy = self._proxy_objects.get(url)
        if proxy is None:
            proxy = self._proxy_objects[url] = _Proxy(url)
        return proxy

    def _route(self, scheme: str, netloc: str) -> tuple[PoolKey, str, bool]:
        """The pool key, the Host header, and whether the request goes to a proxy as is.

        Remembered per origin: host, port and proxy rules are worked out once,
        not again for each of a few thousand small files.
        """
        route = self._routes.get((scheme, netloc))
        if route is None:
            _, _, _, _, host, port = _httputil.split_url(f"{scheme}://{netloc}")
            port = port or _DEFAULT_PORTS[scheme]
            proxy = self._proxy_for(scheme, host)
            if proxy is not None:
                self._proxy(proxy)  # refuses an unsupported one now
            key: PoolKey = (scheme, host, port, proxy)
            if len(self._routes) >= _MAX_ROUTES:
                self._routes.clear()
            forwarded = proxy is not None and scheme == "http"
            route = (key, _host_header(host, port, scheme), forwarded)
            self._routes[(scheme, netloc)] = route
        return route

    def _take_idle(self, key: PoolKey) -> _Connection | None:
        while True:
            with self._lock:
                idle = self._idle.get(key)
                conn = idle.pop() if idle else None
            if conn is None:
                return None
            try:
                fresh = time.monotonic() - conn.idle_since < MAX_IDLE_SECONDS
                if fresh and not _has_input(conn.sock, conn.poller):
                    return conn
            except BaseException:
                conn.close()
                raise
            conn.close()

    def _put_idle(self, conn: _Connection) -> None:
        key = conn.pool_key
        if key is None:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        conn.last_response = None
        if conn.poller is None and conn.sock is not None:
            conn.poller = _poller(conn.sock.fileno())  # once per connection, not per reuse
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < MAX_IDLE_PER_ORIGIN and not self._closed:
                idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        """Close every idle connection, and each one in use when its answer is done."""
        with self._lock:
            self._closed = True
            pools, self._idle = self._idle, {}
        for conns in pools.values():
            for conn in conns:
                conn.close()

    def _forget_connections(self) -> None:
        """In a forked child: drop (and close this process's copy of) every idle connection."""
        self._lock = threading.Lock()  # the parent's may have been held at the fork
        pools, self._idle = self._idle, {}
        for conns in pools.values():
            for conn in conns:
                conn.close()

    def _new_connection(self, key: PoolKey, timeout: float) -> _Connection:
        scheme, host, port, proxy_url = key
        if proxy_url is None:
            if scheme == "https":
                return _HTTPSConnection(host, port, timeout=timeout, context=self._context())
            return _Connection(host, port, timeout=timeout)
        proxy = self._proxy(proxy_url)
        if scheme == "http":  # the request goes to the proxy as it is
            if proxy.scheme == "https":
                return _HTTPSConnection(
                    proxy.host, proxy.port, timeout=timeout, context=self._context()
                )
            return _Connection(proxy.host, proxy.port, timeout=timeout)
        conn = _HTTPSConnection(proxy.host, proxy.port, timeout=timeout, context=self._context())
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        headers = {"Host": authority, **proxy.headers}
        conn.tunnel_to(host, port, headers, tls_proxy=proxy.scheme == "https")
        return conn

    def _connect(self, key: PoolKey, timeout: float, url: str) -> _Connection:
        conn = self._new_connection(key, timeout)
        conn.pool_key = key
        conn.head_deadline = time.monotonic() + timeout  # for a tunnel's CONNECT
        try:
            conn.connect()
        except Exception as exc:
            conn.abandon()
            raise self._connect_error(exc, key, url) from exc
        except BaseException:
            conn.abandon()
            raise
        return conn

    def _connect_error(self, exc: Exception, key: PoolKey, url: str) -> DownloadError:
        proxy_url = key[3]
        if proxy_url is None:
            return _translate(exc, url, "connecting to")
        proxy = self._proxy(proxy_url)
        if isinstance(exc, _TunnelRefused):
            hint = ": check the user and password in the proxy URL" if exc.status == 407 else ""
            return DownloadError(
                f"the proxy {proxy.label} refused a tunnel to {key[1]}:{key[2]} for {url}: "
                f"{exc.status} {exc.reason}{hint}"
            )
        if isinstance(exc, socket.gaierror):
            return _resolution_error(exc, proxy.host, f"the proxy {proxy.label} (for {url})")
        return _translate(exc, url, f"connecting through the proxy {proxy.label} to")

    # -- requests -----------------------------------------------------------

    def request(self, method: str, url: str, headers: Headers, timeout: float) -> StdlibResponse:
        """Send one request and return its response (headers read, body not).

        Parameters
        ----------
        method : str
            ``GET`` or ``HEAD``.
        url : str
            An absolute http(s) URL.
        headers : mapping
            Request headers (``Host`` is added here).
        timeout : float
            Seconds allowed for connecting, for the whole head of the answer,
            and then for each read of its body.

        Raises
        ------
        ConnectionFault
            For retryable network faults.
        DownloadError
            For faults that a retry cannot mend (TLS verification, DNS, a
            proxy that refuses, a malformed answer).
        ValueError
            For a URL or header that cannot be put in a request.
        """
        scheme, netloc, path, query, _, _ = _httputil.split_url(url)
        key, host_header, forwarded = self._route(scheme, netloc)
        target = path or "/"
        if query:
            target += "?" + query
        send_headers = {"Host": host_header}
        send_headers.update(headers)
        if forwarded:
            assert key[3] is not None  # forwarded only through a proxy
            target = f"{scheme}://{netloc}{target}"
            send_headers.update(self._proxy(key[3]).headers)

        conn = self._take_idle(key)
        if conn is not None:
            try:
                conn.use_timeout(timeout)
                return self._exchange(conn, method, target, send_headers, url, timeout, True)
            except _StaleConnection:
                pass  # the server closed it while idle: once more on a new one
            except BaseException:
                conn.abandon()  # closed already, unless Ctrl-C came before the exchange
                raise
        conn = self._connect(key, timeout, url)
        try:
            return self._exchange(conn, method, target, send_headers, url, timeout, False)
        except BaseException:
            conn.abandon()
            raise

    def _exchange(
        self,
        conn: _Connection,
        method: str,
        target: str,
        headers: dict[str, str],
        url: str,
        timeout: float,
        reused: bool,
    ) -> StdlibResponse:
        conn.last_response = None
        try:
            conn.request(method, target, headers=headers)
            conn.head_deadline = time.monotonic() + timeout
            raw = conn.getresponse()
            answer_headers = _check_answer(raw, timeout)  # type: ignore[arg-type]
        except Exception as exc:
            stale = reused and _before_any_answer(conn, exc)
            conn.abandon()
            if stale:
                raise _StaleConnection() from exc
            raise _translate(exc, url, "requesting") from exc
        except BaseException:
            conn.abandon()
            raise
        return StdlibResponse(conn, raw, url, self._put_idle, answer_headers)  # type: ignore[arg-type]


def _before_any_answer(conn: _Connection, exc: Exception) -> bool:
    """Whether a reused connection failed as one the server had closed meanwhile does.

    Nothing of an answer came (the send failed, or the connection ended or
    was reset before the first byte), or what came was no status line at
    all (bytes left from an earlier answer): sending the request again on a
    new connection is safe, and what every client does.
    """
    if isinstance(exc, socket.timeout):
        return False  # a slow server, not a closed connection: no second wait
    answer = conn.last_response
    if answer is None or answer.stream.received == 0:
        return isinstance(exc, (OSError, http.client.HTTPException))
    return isinstance(exc, http.client.BadStatusLine) and not isinstance(exc, _CutHead)


def _host_header(host: str, port: int, scheme: str) -> str:
    name = f"[{host}]" if ":" in host else host
    return name if port == _DEFAULT_PORTS[scheme] else f"{name}:{port}"


def _proxy_auth_headers(proxy: urllib.parse.SplitResult) -> dict[str, str]:
    if proxy.username is None:
        return {}
    import urllib.parse

    user = urllib.parse.unquote(proxy.username)
    password = urllib.parse.unquote(proxy.password or "")
    return {"Proxy-Authorization": _httputil.basic_auth_header(user, password)}


# -- requests-like sessions ---------------------------------------------------

#: Exception class names (anywhere in the MRO) of requests, urllib3 and the
#: standard library that mean a fault a retry may mend; matched by name so
#: that requests is never imported.
_TRANSIENT_NAMES = frozenset(
    {
        "ConnectionError",  # requests' and the builtin one (resets, refusals)
        "Timeout",  # requests: ConnectTimeout, ReadTimeout
        "TimeoutError",
        "timeout",  # socket.timeout before Python 3.10
        "ChunkedEncodingError",
        "ProtocolError",  # urllib3
        "ReadTimeoutError",
        "IncompleteRead",
        "RemoteDisconnected",
    }
)
#: Names that make an exception permanent even when a transient name is in
#: its MRO too (requests' SSLError is a ConnectionError; InvalidURL a ValueError).
_PERMANENT_NAMES = frozenset(
    {
        "SSLError",
        "CertificateError",
        "InvalidURL",
        "InvalidSchema",
        "MissingSchema",
        "InvalidHeader",
        "InvalidProxyURL",
        "TooManyRedirects",
        "URLRequired",
    }
)


def is_transient_session_error(exc: BaseException) -> bool:
    """Whether a requests-like session's exception is worth a retry.

    Parameters
    ----------
    exc : BaseException
        What ``session.request`` or reading the body raised.

    Returns
    -------
    bool
        True for connection and timeout errors (requests', urllib3's, the
        standard library's); False for TLS, URL, header and redirect errors
        and anything unknown.
    """
    names = {cls.__name__ for cls in type(exc).__mro__}
    return not names & _PERMANENT_NAMES and bool(names & _TRANSIENT_NAMES)


def _translate_session(exc: BaseException, url: str, action: str) -> DownloadError:
    if is_transient_session_error(exc):
        return ConnectionFault(f"network error while {action} {url}: {exc!r}")
    return DownloadError(f"error while {action} {url}: {exc!r}")


class SessionResponse:
    """A response from a requests-like session, read as raw bytes."""

    def __init__(self, resp: Any, url: str) -> None:
        self._resp = resp
        self.url = url
        self.status: int = int(resp.status_code)
        self.reason: str = str(getattr(resp, "reason", "") or "")
        self.headers: Any = resp.headers
        raw = getattr(resp, "raw", None)
        self._readinto = getattr(raw, "readinto", None)
        self._chunks: Any = None
        self._pending = b""

    def readinto(self, buffer: Any) -> int:
        """Read body bytes into ``buffer``; 0 at the end of the body."""
        try:
            if self._readinto is not None:
                return int(self._readinto(buffer))
            return self._readinto_from_chunks(buffer)
        except Exception as exc:
            self.close()
            raise _translate_session(exc, self.url, "reading the body of") from exc

    def _readinto_from_chunks(self, buffer: Any) -> int:
        if not self._pending:
            if self._chunks is None:
                self._chunks = iter(self._resp.iter_content(len(buffer)))
            self._pending = next(self._chunks, b"")
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def read(self, size: int = MAX_ERROR_BODY) -> bytes:
        """Read up to ``size`` bytes of the body (for small error bodies)."""
        buf = bytearray(size)
        n = self.readinto(memoryview(buf))
        return bytes(buf[:n])

    def release(self) -> None:
        """Finish with the response."""
        self._resp.close()

    def abort(self) -> None:
        """From another thread: cut the answer (as far as the session lets it be cut)."""
        self._resp.close()

    def close(self) -> None:
        """Abandon the response."""
        self._resp.close()


class _OnlyTheseCredentials:
    """A requests auth hook that leaves only the given credentials on a request.

    requests adds ``session.auth`` and ``session.headers`` to every request,
    to any host; after a redirect to another origin that would hand the
    first origin's credentials to the second. Applied last by requests, this
    replaces ``Authorization`` and ``Cookie`` with those the engine chose
    for the new host (a ``.netrc`` entry), or none.
    """

    _NAMES = ("Authorization", "Cookie")

    def __init__(self, headers: Headers) -> None:
        names = {name.lower() for name in self._NAMES}
        self._given = {k: v for k, v in headers.items() if k.lower() in names}

    def __call__(self, prepared: Any) -> Any:
        for name in self._NAMES:
            prepared.headers.pop(name, None)  # a CaseInsensitiveDict
        prepared.headers.update(self._given)
        return prepared


class SessionTransport:
    """Send requests through a ``requests.Session``-like object.

    Parameters
    ----------
    session : object
        Anything with ``.request(method, url, headers=..., stream=True,
        timeout=...)`` returning an object with ``status_code``, ``headers``
        and ``raw`` (or ``iter_content``).
    auth : object, optional
        Passed through as ``auth=`` (a requests auth object).
    origin : str, optional
        The download's first URL: a request to another origin (after a
        redirect) leaves the session's own credentials behind (SPEC §3.4).
    """

    def __init__(self, session: Any, auth: Any = None, origin: str = "") -> None:
        self._session = session
        self._auth = auth
        self._origin = origin
        self._redirect_kw = True

    def request(self, method: str, url: str, headers: Headers, timeout: float) -> SessionResponse:
        """Send one request through the session; see :meth:`StdlibTransport.request`.

        When ``url`` is not on the origin's (a redirect left it), the
        session's own credentials (``session.auth``, an ``Authorization``
        or ``Cookie`` in ``session.headers``, its cookies) and the ``auth``
        object stay behind: only those in ``headers`` go out.
        """
        kwargs: dict[str, Any] = {"headers": dict(headers), "stream": True, "timeout": timeout}
        if self._origin and not _httputil.same_origin(url, self._origin):
            kwargs["auth"] = _OnlyTheseCredentials(headers)
        elif self._auth is not None:
            kwargs["auth"] = self._auth
        try:
            try:
                resp = self._send(method, url, kwargs)
            except TypeError:
                if not isinstance(kwargs.get("auth"), _OnlyTheseCredentials):
                    raise
                # A minimal session without auth=: it has no session auth to strip.
                del kwargs["auth"]
                resp = self._send(method, url, kwargs)
        except Exception as exc:
            raise _translate_session(exc, url, "requesting") from exc
        return SessionResponse(resp, url)

    def _send(self, method: str, url: str, kwargs: dict[str, Any]) -> Any:
        if self._redirect_kw:
            try:
                # Redirects are followed by the engine, under its policy.
                return self._session.request(method, url, allow_redirects=False, **kwargs)
            except TypeError:
                self._redirect_kw = False
        return self._session.request(method, url, **kwargs)

    def close(self) -> None:
        """Nothing to close: the session belongs to the caller."""


if TYPE_CHECKING:
    Response = Union[StdlibResponse, SessionResponse]
    Transport = Union[StdlibTransport, SessionTransport]

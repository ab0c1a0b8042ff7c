"""HTTP transports: HTTP/1.1 on plain sockets, or a requests-like session.

This is the one module that knows sockets and ssl: it turns every network
fault into :class:`ConnectionFault` (retryable) or
:class:`~pyvo_dl.DownloadError` (not), chained with ``from``.

:class:`StdlibTransport` speaks HTTP/1.1 itself, on the standard library's
sockets: a download sends GET and HEAD with a handful of headers and reads
one answer at a time, which takes a fraction of the code (and of the time
per request) of ``http.client`` and its ``email`` header parser. It keeps
idle keep-alive connections per origin and reuses them; a request sent on a
reused connection that the server closed in the meantime (the keep-alive
race every client meets) is sent again once on a fresh connection.
:class:`SessionTransport` adapts a ``requests.Session``-like object so that
pyvo's authenticated sessions keep working.
"""

from __future__ import annotations

# _socket, not socket: the socket module builds enums and imports selectors,
# which a plain-http download does not need (TLS and proxies import it).
import _socket
import io
import os
import select
import sys
import time
from _thread import _local, allocate_lock

from . import _httputil
from ._errors import DownloadError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    import ssl
    import urllib.parse
    from typing import Any, BinaryIO, Mapping, Optional, Tuple, Union

    Headers = Mapping[str, str]
    PoolKey = Tuple[str, str, int, Optional[str]]

#: A read hands over what it has after this long, full buffer or not.
_MAX_FILL_SECONDS = 0.2
#: Idle connections kept per origin; enough for the workers of download_many.
MAX_IDLE_PER_ORIGIN = 16
#: Error bodies are read up to this size only (S3's XML errors are tiny).
MAX_ERROR_BODY = 64 * 1024
#: As http.client: more header lines, or a longer line, is a broken answer.
_MAX_HEADERS = 100
_MAX_LINE = 65536

_DEFAULT_PORTS = {"http": 80, "https": 443}
_READ_BUFFER = 64 * 1024
#: Origins whose routes are remembered (a crawl over many hosts starts over).
_MAX_ROUTES = 1024


class ConnectionFault(DownloadError):
    """A transient network fault: refused, reset, timed out, truncated.

    The engine retries these; after the last retry the fault itself reaches
    the caller as a :class:`~pyvo_dl.DownloadError`.
    """


class TimeoutFault(ConnectionFault):
    """No byte arrived (or no connection was made) within ``timeout`` seconds."""


class ProtocolError(Exception):
    """The server's answer is not HTTP/1.x as it must be (a transient fault)."""


class IncompleteBody(ProtocolError):
    """The connection ended before the body did."""

    def __init__(self, received: int, expected: int | None) -> None:
        more = "" if expected is None else f", {expected} more expected"
        super().__init__(f"the body ended after {received} bytes of this read{more}")


class LocalWriteError(Exception):
    """Writing a spliced body into the file failed: the disk's fault, not the network's.

    Parameters
    ----------
    error : OSError
        What the write raised; the engine reports it against the file.
    """

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


#: os.splice (Linux, Python 3.10+) moves a body from the socket to the file
#: through a pipe inside the kernel, one copy fewer than through a buffer.
_SPLICE = getattr(os, "splice", None) if sys.platform.startswith("linux") else None
_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 0) | getattr(os, "SPLICE_F_NONBLOCK", 0)
_PIPE_SIZE = 1024 * 1024
_F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ, named only from Python 3.10 on
_pipes = _local()


def _pipe() -> tuple[int, int]:
    """This thread's pipe for splicing (1 MiB where the system allows)."""
    pipe: tuple[int, int] | None = getattr(_pipes, "pipe", None)
    if pipe is None:
        pipe = os.pipe()
        try:
            import fcntl  # Linux only, and only for large bodies

            fcntl.fcntl(pipe[1], _F_SETPIPE_SZ, _PIPE_SIZE)
        except OSError:
            pass  # the default 64 KiB works, with more system calls
        _pipes.pipe = pipe
    return pipe


def _drop_pipe() -> None:
    """Close this thread's pipe (it may hold bytes of an abandoned body)."""
    pipe = getattr(_pipes, "pipe", None)
    _pipes.pipe = None
    if pipe is not None:
        os.close(pipe[0])
        os.close(pipe[1])


def _write_file(fd: int, data: bytes) -> None:
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view) :]
    except OSError as exc:
        raise LocalWriteError(exc) from exc


class _StaleConnection(Exception):
    """A reused keep-alive connection was closed by the server before answering."""


def _is_certificate_error(exc: BaseException) -> bool:
    # ssl is imported only for https; without it no certificate was checked.
    # Imported, not taken from sys.modules: another thread may still be
    # importing it (a half-made module, issue 13 item 1).
    if "ssl" not in sys.modules:
        return False
    import ssl

    return isinstance(exc, ssl.SSLCertVerificationError)


def _translate(exc: BaseException, url: str, action: str) -> DownloadError:
    """Map a low-level exception to ConnectionFault (retryable) or DownloadError."""
    if _is_certificate_error(exc):
        return DownloadError(
            f"TLS certificate verification failed for {url}: {exc.verify_message}. "  # type: ignore[attr-defined]
            "If the server uses a private CA, pass ssl_context= with that CA loaded "
            "(ssl.create_default_context(cafile=...)) or set SSL_CERT_FILE."
        )
    if isinstance(exc, _socket.gaierror):
        host = _httputil.host_of(url)
        return DownloadError(f"cannot resolve host {host!r} of {url}: {exc}")
    if isinstance(exc, _socket.timeout):
        return TimeoutFault(f"timed out while {action} {url}")
    if isinstance(exc, IncompleteBody):
        return ConnectionFault(f"connection closed early while {action} {url}: {exc}")
    if isinstance(exc, (OSError, ProtocolError)):
        return ConnectionFault(f"network error while {action} {url}: {exc!r}")
    return DownloadError(f"unexpected error while {action} {url}: {exc!r}")


class _Headers(dict):  # type: ignore[type-arg]
    """Response headers: names case-insensitive, repeated fields joined by ", ".

    The part of ``http.client.HTTPMessage``'s interface that pyvo_dl uses,
    without the email package behind it.
    """

    def get(self, name: str, default: Any = None) -> Any:
        return dict.get(self, name.lower(), default)

    def __getitem__(self, name: str) -> str:
        return str(dict.__getitem__(self, name.lower()))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and dict.__contains__(self, name.lower())

    def get_all(self, name: str, failobj: Any = None) -> Any:
        value = self.get(name)
        return failobj if value is None else [value]


def _read_line(fp: BinaryIO) -> bytes:
    line = fp.readline(_MAX_LINE + 1)
    if len(line) > _MAX_LINE:
        raise ProtocolError(f"a header line longer than {_MAX_LINE} bytes")
    return line


def parse_header_lines(fp: BinaryIO) -> _Headers:
    """Read header lines up to the blank line into :class:`_Headers`.

    Values are decoded as ISO-8859-1 (as http.client does) and continuation
    lines (obsolete folding) are joined to the field before them.

    Raises
    ------
    ProtocolError
        For a line over 64 KiB or more than 100 fields.
    """
    headers = _Headers()
    name = ""
    for _ in range(_MAX_HEADERS + 1):
        line = _read_line(fp)
        if line in (b"\r\n", b"\n", b""):
            return headers
        name = _add_field(headers, name, line.decode("iso-8859-1").rstrip("\r\n"))
    raise ProtocolError(f"got more than {_MAX_HEADERS} headers")


def _add_field(headers: _Headers, last: str, text: str) -> str:
    """Add one header line to ``headers``; return the name it belongs to."""
    if text[:1] in (" ", "\t") and last:
        headers[last] = f"{dict.__getitem__(headers, last)} {text.strip()}"
        return last
    field, colon, value = text.partition(":")
    if not colon:
        return last  # not a header line: ignored, as the email parser does
    name = field.strip().lower()
    value = value.strip()
    old = dict.get(headers, name)
    headers[name] = value if old is None else f"{old}, {value}"
    return name


def read_head(fp: BinaryIO) -> tuple[int, int, str, _Headers]:
    """Read an answer's status line and header fields: ``(version, status, reason, headers)``.

    A head that has arrived whole (the usual case: a few hundred bytes in
    one segment) is parsed from the reader's buffer in one pass; otherwise,
    or when its lines end in a bare LF, line by line.

    Raises
    ------
    _StaleConnection
        When the connection ended before any byte of an answer (a reused
        keep-alive connection that the server had closed).
    ProtocolError
        For anything that is not an HTTP/1.x head within http.client's limits.
    """
    buffered = fp.peek(1)  # type: ignore[attr-defined]
    end = buffered.find(b"\r\n\r\n")
    if end < 0 or buffered.count(b"\n", 0, end) != buffered.count(b"\r\n", 0, end):
        version, status, reason = read_status(fp)
        return version, status, reason, parse_header_lines(fp)
    lines = fp.read(end + 4)[:end].decode("iso-8859-1").split("\r\n")
    if len(lines) > _MAX_HEADERS + 1:
        raise ProtocolError(f"got more than {_MAX_HEADERS} headers")
    if max(map(len, lines)) > _MAX_LINE:
        raise ProtocolError(f"a header line longer than {_MAX_LINE} bytes")
    version, status, reason = _parse_status(lines[0])
    headers = _Headers()
    name = ""
    for text in lines[1:]:
        field, colon, value = text.partition(":")
        if colon and text[:1] not in (" ", "\t"):
            key = field.strip().lower()
            if not dict.__contains__(headers, key):
                # The usual line, inline (this runs for every line of every answer).
                dict.__setitem__(headers, key, value.strip())
                name = key
                continue
        name = _add_field(headers, name, text)
    return version, status, reason, headers


def read_status(fp: BinaryIO) -> tuple[int, int, str]:
    """Read a status line: ``(version, status, reason)``, version 10 or 11.

    Raises
    ------
    _StaleConnection
        When the connection ended before any byte of an answer.
    ProtocolError
        For anything that is not an HTTP/1.x status line.
    """
    line = _read_line(fp)
    if not line:
        raise _StaleConnection()
    return _parse_status(line.decode("iso-8859-1").rstrip("\r\n"))


def _parse_status(text: str) -> tuple[int, int, str]:
    version, _, rest = text.partition(" ")
    code, _, reason = rest.partition(" ")
    if version in ("HTTP/1.1", "HTTP/1.0"):
        number = 11 if version == "HTTP/1.1" else 10
    elif version.startswith("HTTP/1."):
        number = 11
    else:
        raise ProtocolError(f"not an HTTP/1.x status line: {text[:80]!r}")
    if len(code) != 3 or not code.isdigit() or code < "100":
        raise ProtocolError(f"bad status code in {text[:80]!r}")
    return number, int(code), reason.strip()


def _will_close(version: int, headers: _Headers) -> bool:
    """Whether the server closes the connection after this answer (as http.client decides)."""
    connection = (headers.get("connection") or "").lower()
    if version == 11:
        return "close" in connection
    if "keep-alive" in connection or headers.get("keep-alive"):
        return False
    return "keep-alive" not in (headers.get("proxy-connection") or "").lower()


class _SocketReader(io.RawIOBase):
    """A socket as a raw byte stream (what ``socket.makefile`` makes, for ``_socket`` too)."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        try:
            return int(self._sock.recv_into(buffer))
        except BlockingIOError:
            return None  # nothing yet on a socket told not to wait (in_step)

    def fileno(self) -> int:
        return int(self._sock.fileno())


def _open_plain(host: str, port: int, timeout: float) -> Any:
    """A TCP connection to ``host:port`` (each address in turn, as socket.create_connection)."""
    error: OSError | None = None
    for family, kind, proto, _, address in _socket.getaddrinfo(
        _resolvable(host), port, 0, _socket.SOCK_STREAM
    ):
        sock = _socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(address)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        return sock
    raise error if error is not None else OSError(f"no address found for {host!r}")


class _Connection:
    """One HTTP/1.1 connection: its socket, the reader over it, the pool key.

    Parameters
    ----------
    sock : socket
        Connected: a ``_socket.socket`` for http, an ``ssl.SSLSocket`` for https.
    key : tuple
        ``(scheme, host, port, proxy)``: where it may be reused.
    """

    def __init__(self, sock: Any, key: PoolKey) -> None:
        self.sock = sock
        self.key = key
        # One buffered reader for the connection's life: status lines and
        # headers are read through it; bodies go past its buffer straight
        # into the caller's (readinto1 with a larger buffer).
        # 64 KiB: the head and a small body arrive in one system call.
        self.fp: BinaryIO = io.BufferedReader(_SocketReader(sock), _READ_BUFFER)

    def settimeout(self, timeout: float) -> None:
        if self.sock.gettimeout() != timeout:  # settimeout is a system call
            self.sock.settimeout(timeout)

    def in_step(self) -> bool:
        """Whether nothing is waiting to be read, as after a complete answer.

        Bytes already there (a body sent with the answer to HEAD, a server
        that sent more than its Content-Length) would be read as the next
        answer's status line: such a connection is closed, not reused.
        """
        timeout = self.sock.gettimeout()
        self.sock.settimeout(0.0)  # look, do not wait
        try:
            return not self.fp.peek(1)  # type: ignore[attr-defined]
        except OSError as exc:
            # TLS says "nothing yet" with an exception of its own.
            if "ssl" not in sys.modules:
                return False
            import ssl

            return isinstance(exc, ssl.SSLWantReadError)
        except ValueError:
            return False  # closed
        finally:
            self.sock.settimeout(timeout)

    def close(self) -> None:
        """Close the reader and the socket (both: the reader holds a reference)."""
        try:
            self.fp.close()
        finally:
            self.sock.close()


class StdlibResponse:
    """An answer read from a :class:`_Connection`.

    The body is framed as HTTP/1.1 says: by Content-Length, by chunked
    transfer coding, or by the end of the connection; once it has been read
    to its end on a connection that stays open, :meth:`release` puts the
    connection back in the pool.

    Parameters
    ----------
    conn : _Connection
        The connection the answer came on.
    status, reason, version, headers
        What :func:`read_status` and :func:`parse_header_lines` read.
    method : str
        The request's method: the answer to HEAD has no body.
    url : str
        The URL requested, for messages.
    release_to : callable
        Called with the connection when it can be reused.
    """

    def __init__(
        self,
        conn: _Connection,
        status: int,
        reason: str,
        version: int,
        headers: _Headers,
        method: str,
        url: str,
        release_to: Any,
    ) -> None:
        self._conn: _Connection | None = conn
        self._fp = conn.fp
        self._release_to = release_to
        self.url = url
        self.status = status
        self.reason = reason
        self.headers: Any = headers
        #: A fault met after some bytes were handed over; raised by the next read.
        self._fault: Exception | None = None
        self._chunked = "chunked" in (headers.get("transfer-encoding") or "").lower()
        self._chunk_left = 0
        #: Bytes of body still to come; None: until the connection ends.
        self._left: int | None = None
        self.will_close = _will_close(version, headers)
        if status in (204, 304) or status < 200 or method == "HEAD":
            self._left = 0
            self._chunked = False
        elif not self._chunked:
            self._left = _httputil.parse_content_length(headers.get("content-length"))
            if self._left is None:
                self.will_close = True
        self._ended = self._bodiless = self._left == 0
        #: Whether the reader's buffer has been emptied for splicing.
        self._drained = False

    # -- body ---------------------------------------------------------------

    def readinto(self, buffer: Any) -> int:
        """Read body bytes into ``buffer``; 0 at the end of the body.

        The buffer is filled by as many reads as it takes (each one system
        call, straight into the buffer), up to the end of the body or for
        at most 0.2 s, so that a slow link still moves the progress display.
        A fault after some bytes hands those bytes over first and is raised
        by the next call: progress is never thrown away with the exception.
        """
        fault, self._fault = self._fault, None
        if fault is not None:
            self.close()
            raise _translate(fault, self.url, "reading the body of") from fault
        if self._ended:
            return 0
        try:
            if self._chunked:
                return self._read_chunked(memoryview(buffer))
            return self._read_plain(memoryview(buffer))
        except Exception as exc:
            self.close()
            raise _translate(exc, self.url, "reading the body of") from exc

    def can_splice(self) -> bool:
        """Whether :meth:`splice_into` can carry this body (a sized body on a plain socket)."""
        if _SPLICE is None or self._chunked or self._left is None or self._conn is None:
            return False
        if "ssl" in sys.modules:
            import ssl

            if isinstance(self._conn.sock, ssl.SSLSocket):
                return False  # TLS decrypts in user space
        try:
            _pipe()
        except OSError:
            return False  # out of file descriptors, say: the buffer path still works
        return True

    def splice_into(self, fd: int, limit: int) -> int:
        """Move up to ``limit`` body bytes into the file ``fd`` at its position; 0 at the end.

        Like :meth:`readinto`, but the bytes go from the socket to the file
        through a pipe inside the kernel, never through Python. It moves
        what comes within 0.2 s (for the progress display); a network fault
        after some bytes hands those over and is raised by the next call.

        Raises
        ------
        ConnectionFault
            For the network, as :meth:`readinto`.
        LocalWriteError
            When the file cannot be written (a full disk).
        """
        fault, self._fault = self._fault, None
        if fault is not None:
            self.close()
            raise _translate(fault, self.url, "reading the body of") from fault
        left = self._left
        if self._ended or left is None:
            return 0
        limit = min(limit, left)
        try:
            if not self._drained:
                # The body's first bytes came with the head, into the reader's
                # buffer; a read1 of a buffer's size takes them all, after
                # which the socket holds the rest.
                self._drained = True
                data = self._fp.read1(min(limit, _READ_BUFFER))  # type: ignore[attr-defined]
                if not data:
                    raise IncompleteBody(0, left)
                _write_file(fd, data)
                done = len(data)
            else:
                done = self._splice(fd, limit)
        except LocalWriteError:
            self.close()
            raise
        except Exception as exc:
            self.close()
            raise _translate(exc, self.url, "reading the body of") from exc
        self._left = left - done
        if not self._left:
            self._ended = True
        return done

    def _splice(self, fd: int, limit: int) -> int:
        assert self._conn is not None  # checked by can_splice
        assert _SPLICE is not None  # checked by can_splice
        sock = self._conn.sock
        source = sock.fileno()
        timeout = sock.gettimeout()
        wait_ms = None if timeout is None else max(1, int(timeout * 1000))
        poller = select.poll()
        poller.register(source, select.POLLIN)
        read_end, write_end = _pipe()
        done = 0
        deadline = time.monotonic() + _MAX_FILL_SECONDS
        error: Exception
        while done < limit:
            try:
                n = _SPLICE(source, write_end, min(limit - done, _PIPE_SIZE), flags=_SPLICE_FLAGS)
            except BlockingIOError:
                if poller.poll(wait_ms):
                    continue
                n, error = -1, _socket.timeout("timed out")
            except OSError as exc:
                n, error = -1, exc
            if n <= 0:
                if n == 0:
                    error = IncompleteBody(done, (self._left or 0) - done)  # it ended
                if not done:
                    raise error
                self._fault = error
                break
            moved = 0
            try:
                while moved < n:
                    moved += _SPLICE(read_end, fd, n - moved)
            except OSError as exc:
                _drop_pipe()
                raise LocalWriteError(exc) from exc
            done += n
            if time.monotonic() >= deadline:
                break
        return done

    def _fill(self, view: memoryview) -> int:
        """Read into ``view`` until full, the end of the stream, a fault or the deadline."""
        size = view.nbytes
        done = 0
        deadline = time.monotonic() + _MAX_FILL_SECONDS
        readinto1 = self._fp.readinto1  # type: ignore[attr-defined]
        while done < size:
            try:
                n = readinto1(view[done:])
            except OSError as exc:
                if not done:
                    raise
                self._fault = exc
                break
            if not n:
                break
            done += n
            if time.monotonic() >= deadline:
                break
        return done

    def _read_plain(self, view: memoryview) -> int:
        left = self._left
        if left is not None and left < view.nbytes:
            view = view[:left]
        n = self._fill(view)
        if left is None:
            if not n and self._fault is None:
                self._ended = True  # the connection ended: so did the body
            return n
        if not n and self._fault is None:
            raise IncompleteBody(0, left)
        self._left = left - n
        if not self._left:
            self._ended = True
        return n

    def _read_chunked(self, view: memoryview) -> int:
        done = 0
        while done < view.nbytes and self._fault is None:
            if not self._chunk_left:
                try:
                    size = self._next_chunk_size()
                except (OSError, ProtocolError) as exc:
                    if not done:
                        raise
                    self._fault = exc
                    break
                if size == 0:
                    self._ended = True
                    break
                self._chunk_left = size
            room = min(view.nbytes - done, self._chunk_left)
            n = self._fill(view[done : done + room])
            if not n:
                if self._fault is None and not done:
                    raise IncompleteBody(0, self._chunk_left)
                if self._fault is None:
                    self._fault = IncompleteBody(done, self._chunk_left)
                break
            done += n
            self._chunk_left -= n
            if n < room:
                break  # the deadline, or a fault kept for the next call
        return done

    def _next_chunk_size(self) -> int:
        """Read the next chunk-size line (after the CRLF ending the last chunk's data)."""
        if self._chunk_started and _read_line(self._fp) not in (b"\r\n", b"\n"):
            raise ProtocolError("a chunk's data did not end with CRLF")
        self._chunk_started = True
        line = _read_line(self._fp)
        if not line:
            raise IncompleteBody(0, None)
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise ProtocolError(f"bad chunk size line {line[:40]!r}") from None
        if size < 0:
            raise ProtocolError(f"bad chunk size line {line[:40]!r}")
        if size == 0:
            # Trailer fields up to the blank line: read and dropped.
            for _ in range(_MAX_HEADERS + 1):
                if _read_line(self._fp) in (b"\r\n", b"\n", b""):
                    break
            else:
                raise ProtocolError("too many trailer fields")
        return size

    _chunk_started = False

    def read(self, size: int = MAX_ERROR_BODY) -> bytes:
        """Read up to ``size`` bytes of the body (for small error bodies and listings)."""
        buf = bytearray(size)
        view = memoryview(buf)
        done = 0
        while done < size:
            n = self.readinto(view[done:])
            if not n:
                break
            done += n
        del view
        del buf[done:]
        return bytes(buf)

    # -- the connection -------------------------------------------------------

    def release(self) -> None:
        """Finish with the response; keep the connection if the body was consumed."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        # After an answer without a body (HEAD, 304), stray bytes are the
        # usual fault (a body sent anyway): looked for before reuse. After a
        # body read to its end they are rare, and a reused connection whose
        # next answer does not parse is replaced by a new one (request()).
        if (
            self._ended
            and not self.will_close
            and self._fault is None
            and (not self._bodiless or conn.in_step())
        ):
            self._release_to(conn)
        else:
            conn.close()

    def close(self) -> None:
        """Abandon the response and its connection."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def _resolvable(host: str) -> str | bytes:
    """``host`` for getaddrinfo: bytes when ASCII, which skips the IDNA codec.

    getaddrinfo encodes a str host with the "idna" codec, whose import
    (stringprep, unicodedata) costs more than a small download.
    """
    return host.encode("ascii") if host.isascii() else host


def _host_header(host: str, port: int, scheme: str) -> str:
    name = f"[{host}]" if ":" in host else host
    try:
        name.encode("ascii")
    except UnicodeEncodeError:
        name = name.encode("idna").decode("ascii")
    return name if port == _DEFAULT_PORTS[scheme] else f"{name}:{port}"


def _serialize(method: str, target: str, headers: Mapping[str, str]) -> bytes:
    """The request head, as bytes; refuses a target or field that would split it."""
    # As http.client refuses: what would end the request line early.
    if " " in target or not (target.isascii() and target.isprintable()):
        raise ValueError(f"the request target {target!r} contains spaces or control characters")
    lines = [f"{method} {target} HTTP/1.1"]
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
            raise ValueError(f"header {name!r} would split the request")
        lines.append(f"{name}: {value}")
    lines.append("\r\n")
    try:
        return "\r\n".join(lines).encode("latin-1")
    except UnicodeEncodeError as exc:
        raise ValueError(f"a request header is not Latin-1 text: {exc}") from None


class StdlibTransport:
    """HTTP(S)/1.1 on the standard library's sockets, with a keep-alive pool per origin.

    Parameters
    ----------
    ssl_context : ssl.SSLContext, optional
        Used for https; default: ``ssl.create_default_context()`` (verified).
    proxies : dict, optional
        Scheme to proxy URL; default: from the environment
        (``HTTP_PROXY``, ``HTTPS_PROXY``, ``NO_PROXY``).
    """

    def __init__(
        self,
        ssl_context: ssl.SSLContext | None = None,
        proxies: dict[str, str] | None = None,
    ) -> None:
        self._ssl_context = ssl_context
        self._proxies = _httputil.proxies_from_env(os.environ) if proxies is None else dict(proxies)
        self._idle: dict[PoolKey, list[_Connection]] = {}
        self._routes: dict[tuple[str, str], tuple[PoolKey, str]] = {}
        self._lock = allocate_lock()

    # -- pool ---------------------------------------------------------------

    def _context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            import ssl  # only for https: plain http never pays for it

            context = ssl.create_default_context()
            context.set_alpn_protocols(["http/1.1"])
            self._ssl_context = context
        return self._ssl_context

    def _proxy_for(self, scheme: str, host: str) -> str | None:
        proxy = self._proxies.get(scheme)
        if not proxy:
            return None
        if _httputil.bypasses_proxy(host, self._proxies.get("no")):
            return None
        return proxy if "://" in proxy else f"http://{proxy}"

    def _route(self, scheme: str, netloc: str) -> tuple[PoolKey, str]:
        """The pool key (with the proxy to use, if any) and Host header for an origin.

        Remembered per origin: host, port and proxy rules are worked out once,
        not again for each of a few thousand small files.
        """
        route = self._routes.get((scheme, netloc))
        if route is None:
            _, _, _, _, host, port = _httputil.split_url(f"{scheme}://{netloc}")
            port = port or _DEFAULT_PORTS[scheme]
            key: PoolKey = (scheme, host, port, self._proxy_for(scheme, host))
            if len(self._routes) >= _MAX_ROUTES:
                self._routes.clear()
            route = self._routes[(scheme, netloc)] = (key, _host_header(host, port, scheme))
        return route

    def _take_idle(self, key: PoolKey) -> _Connection | None:
        with self._lock:
            idle = self._idle.get(key)
            return idle.pop() if idle else None

    def _put_idle(self, conn: _Connection) -> None:
        with self._lock:
            idle = self._idle.setdefault(conn.key, [])
            if len(idle) < MAX_IDLE_PER_ORIGIN:
                idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        """Close every idle connection."""
        with self._lock:
            pools, self._idle = self._idle, {}
        for conns in pools.values():
            for conn in conns:
                conn.close()

    def _connect(self, key: PoolKey, timeout: float) -> _Connection:
        scheme, host, port, proxy = key
        if proxy is None:
            address = (host, port)
        else:
            import urllib.parse  # only with a proxy

            parts = urllib.parse.urlsplit(proxy)
            address = (parts.hostname or "", parts.port or _DEFAULT_PORTS.get(parts.scheme, 8080))
        sock = _open_plain(*address, timeout)
        try:
            # Requests go out in one send each; Nagle would only delay them.
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            if scheme == "https":
                sock = self._wrap_tls(sock, host, port, proxy)
        except BaseException:
            sock.close()
            raise
        return _Connection(sock, key)

    def _wrap_tls(self, raw: Any, host: str, port: int, proxy: str | None) -> Any:
        """TLS to ``host`` over ``raw`` (through a CONNECT tunnel when there is a proxy)."""
        import socket  # ssl wraps socket.socket objects, not _socket ones

        timeout = raw.gettimeout()
        sock = socket.socket(fileno=raw.detach())
        try:
            sock.settimeout(timeout)
            if proxy is not None:
                import urllib.parse  # only with a proxy

                _open_tunnel(sock, host, port, urllib.parse.urlsplit(proxy))
            return self._context().wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise

    # -- requests -----------------------------------------------------------

    def request(
        self,
        method: str,
        url: str,
        headers: Headers,
        timeout: float,
        same_origin: bool = True,
    ) -> StdlibResponse:
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
            Seconds without progress allowed for connecting and each read.
        same_origin : bool
            Whether ``url`` has the origin of the download's first URL.
            Unused here: this transport adds no credentials of its own.

        Raises
        ------
        ConnectionFault
            For retryable network faults.
        DownloadError
            For faults that a retry cannot mend (TLS verification, DNS).
        ValueError
            For a URL or header that cannot be put in a request.
        """
        scheme, netloc, path, query, _, _ = _httputil.split_url(url)
        key, host_header = self._route(scheme, netloc)
        target = path or "/"
        if query:
            target += "?" + query
        send_headers = {"Host": host_header}
        send_headers.update(headers)
        proxy = key[3]
        if proxy is not None and scheme == "http":
            import urllib.parse  # only with a proxy

            target = urllib.parse.urlunsplit((scheme, netloc, target, "", ""))
            send_headers.update(_proxy_auth_headers(urllib.parse.urlsplit(proxy)))
        head = _serialize(method, target, send_headers)

        conn = self._take_idle(key)
        if conn is not None:
            conn.settimeout(timeout)  # this call's timeout, not the one it was opened with
            try:
                return self._exchange(conn, method, head, url, reused=True)
            except _StaleConnection:
                pass  # the server closed it while idle: once more on a new one
        try:
            conn = self._connect(key, timeout)
        except Exception as exc:
            raise _translate(exc, url, "connecting to") from exc
        try:
            return self._exchange(conn, method, head, url, reused=False)
        except _StaleConnection as exc:
            raise ConnectionFault(
                f"network error while requesting {url}: the server closed the connection "
                "without answering"
            ) from exc

    def _exchange(
        self, conn: _Connection, method: str, head: bytes, url: str, reused: bool
    ) -> StdlibResponse:
        try:
            conn.sock.sendall(head)
            fp = conn.fp
            while True:
                version, status, reason, headers = read_head(fp)
                # 100 Continue, 103 Early Hints: the real answer follows.
                if status >= 200 or status == 101:
                    break
        except (
            _StaleConnection,
            ProtocolError,
            ConnectionResetError,
            BrokenPipeError,
            ConnectionAbortedError,
        ) as exc:
            conn.close()
            if reused:
                raise _StaleConnection() from exc
            if isinstance(exc, _StaleConnection):
                raise
            # A fresh connection: the fault is the server's, retried as such.
            raise _translate(exc, url, "requesting") from exc
        except Exception as exc:
            conn.close()
            raise _translate(exc, url, "requesting") from exc
        return StdlibResponse(conn, status, reason, version, headers, method, url, self._put_idle)


def _open_tunnel(
    sock: socket.socket, host: str, port: int, proxy: urllib.parse.SplitResult
) -> None:
    """Ask an HTTP proxy for a tunnel to ``host:port`` (CONNECT) on ``sock``.

    The proxy's credentials go in this request only; TLS then runs end to
    end through the tunnel, so the proxy never sees the origin's traffic.
    """
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    headers = {"Host": authority, **_proxy_auth_headers(proxy)}
    sock.sendall(_serialize("CONNECT", authority, headers))
    fp = sock.makefile("rb")
    try:
        _, status, reason = read_status(fp)
        parse_header_lines(fp)
    except _StaleConnection:
        raise ProtocolError("the proxy closed the connection instead of opening a tunnel") from None
    finally:
        fp.close()  # the socket stays open: TLS goes on over it
    if not 200 <= status < 300:
        raise ProtocolError(f"the proxy refused a tunnel to {authority}: {status} {reason}")


def _proxy_auth_headers(proxy: urllib.parse.SplitResult) -> dict[str, str]:
    if proxy.username is None:
        return {}
    import urllib.parse  # only with a proxy

    user = urllib.parse.unquote(proxy.username)
    password = urllib.parse.unquote(proxy.password or "")
    return {"Proxy-Authorization": _httputil.basic_auth_header(user, password)}


# -- requests-like sessions ---------------------------------------------------

#: Exception class names (anywhere in the MRO) of requests/urllib3 that mean a
#: transient network fault; matched by name so requests is never imported.
_TRANSIENT_NAMES = frozenset(
    {
        "ConnectionError",
        "Timeout",
        "ChunkedEncodingError",
        "ProtocolError",
        "ReadTimeoutError",
        "IncompleteRead",
    }
)


def _is_transient_session_error(exc: BaseException) -> bool:
    network: tuple[type[BaseException], ...] = (OSError,)
    if "http.client" in sys.modules:  # imported when requests is in use
        import http.client

        network = (OSError, http.client.HTTPException)
    if isinstance(exc, network) and not _is_certificate_error(exc):
        return True
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(names & _TRANSIENT_NAMES) and "SSLError" not in names


def _translate_session(exc: BaseException, url: str, action: str) -> DownloadError:
    if _is_transient_session_error(exc):
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
    """

    def __init__(self, session: Any, auth: Any = None) -> None:
        self._session = session
        self._auth = auth
        self._redirect_kw = True

    def request(
        self,
        method: str,
        url: str,
        headers: Headers,
        timeout: float,
        same_origin: bool = True,
    ) -> SessionResponse:
        """Send one request through the session; see :meth:`StdlibTransport.request`.

        With ``same_origin=False`` (a redirect left the origin) the session's
        own credentials (``session.auth``, an ``Authorization`` or ``Cookie``
        in ``session.headers``, its cookies) and the ``auth`` object stay
        behind (SPEC §3.4): only those in ``headers`` go out.
        """
        kwargs: dict[str, Any] = {"headers": dict(headers), "stream": True, "timeout": timeout}
        if not same_origin:
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

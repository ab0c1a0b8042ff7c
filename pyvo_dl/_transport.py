"""HTTP transports: the standard library's http.client, or a requests-like session.

This is the one module that knows socket, ssl and http.client exceptions: it
turns every network fault into :class:`ConnectionFault` (retryable) or
:class:`~pyvo_dl.DownloadError` (not), chained with ``from``.

:class:`StdlibTransport` keeps idle keep-alive connections per origin and
reuses them; a request sent on a reused connection that the server closed in
the meantime (the keep-alive race every client meets) is sent again once on a
fresh connection. :class:`SessionTransport` adapts a ``requests.Session``-like
object so that pyvo's authenticated sessions keep working.
"""

from __future__ import annotations

import http.client
import os
import socket
import sys
import threading
import time
import urllib.parse

from . import _httputil
from ._errors import DownloadError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ssl
    from typing import Any, Mapping, Optional, Tuple, Union

    Headers = Mapping[str, str]
    PoolKey = Tuple[str, str, int, Optional[str]]

#: A read hands over what it has after this long, full buffer or not.
_MAX_FILL_SECONDS = 0.2
#: Idle connections kept per origin; enough for the workers of download_many.
MAX_IDLE_PER_ORIGIN = 16
#: Error bodies are read up to this size only (S3's XML errors are tiny).
MAX_ERROR_BODY = 64 * 1024

_DEFAULT_PORTS = {"http": 80, "https": 443}


class ConnectionFault(DownloadError):
    """A transient network fault: refused, reset, timed out, truncated.

    The engine retries these; after the last retry the fault itself reaches
    the caller as a :class:`~pyvo_dl.DownloadError`.
    """


class TimeoutFault(ConnectionFault):
    """No byte arrived (or no connection was made) within ``timeout`` seconds."""


class _StaleConnection(Exception):
    """A reused keep-alive connection was closed by the server before answering."""


def _is_certificate_error(exc: BaseException) -> bool:
    # ssl is imported only for https; without it no certificate was checked.
    ssl = sys.modules.get("ssl")
    return ssl is not None and isinstance(exc, ssl.SSLCertVerificationError)


def _translate(exc: BaseException, url: str, action: str) -> DownloadError:
    """Map a low-level exception to ConnectionFault (retryable) or DownloadError."""
    if _is_certificate_error(exc):
        return DownloadError(
            f"TLS certificate verification failed for {url}: {exc.verify_message}. "
            "If the server uses a private CA, pass ssl_context= with that CA loaded "
            "(ssl.create_default_context(cafile=...)) or set SSL_CERT_FILE."
        )
    if isinstance(exc, socket.gaierror):
        host = urllib.parse.urlsplit(url).hostname
        return DownloadError(f"cannot resolve host {host!r} of {url}: {exc}")
    if isinstance(exc, socket.timeout):
        return TimeoutFault(f"timed out while {action} {url}")
    if isinstance(exc, http.client.IncompleteRead):
        return ConnectionFault(f"connection closed early while {action} {url}: {exc!r}")
    if isinstance(exc, (OSError, http.client.HTTPException)):
        return ConnectionFault(f"network error while {action} {url}: {exc!r}")
    return DownloadError(f"unexpected error while {action} {url}: {exc!r}")


class _PartialReader:
    """A response's socket file that hands over what arrived before a fault.

    ``BufferedReader.readinto`` fills the whole buffer in one call; when the
    connection times out or is reset part-way, the bytes already received
    are in the buffer but their count is lost with the exception, so up to a
    buffer (1 MiB) of progress would be thrown away at every fault, and a
    server that stalls within the first megabyte would never be passed.
    Here the buffer is filled by ``readinto1`` calls (one system call each,
    straight into the caller's buffer: no extra copy) and a fault after some
    bytes returns those bytes; the next call raises it.

    Parameters
    ----------
    fp : io.BufferedReader
        ``HTTPResponse.fp``; every other method is delegated to it.
    """

    def __init__(self, fp: Any) -> None:
        self._fp = fp
        self._fault: OSError | None = None

    def readinto(self, buffer: Any) -> int:
        """Fill ``buffer`` up to the end of the stream or the first fault."""
        fault, self._fault = self._fault, None
        if fault is not None:
            raise fault
        view = memoryview(buffer)
        size = view.nbytes
        done = 0
        # Hand over what came after a while even if the buffer is not full,
        # so that a slow link still moves the progress display.
        deadline = time.monotonic() + _MAX_FILL_SECONDS
        while done < size:
            try:
                n = self._fp.readinto1(view[done:])
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

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fp, name)


#: As http.client: more header lines, or a longer line, is a broken answer.
_MAX_HEADERS = 100
_MAX_LINE = 65536


class _Headers(dict):  # type: ignore[type-arg]
    """Response headers: names case-insensitive, repeated fields joined by ", ".

    What http.client builds with the email package (an ``HTTPMessage``)
    costs more than a small download; this is the part of its interface
    that HTTPResponse and pyvo_dl use.
    """

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return dict.get(self, name.lower(), default)

    def __getitem__(self, name: str) -> str:
        return str(dict.__getitem__(self, name.lower()))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and dict.__contains__(self, name.lower())

    def get_all(self, name: str, failobj: Any = None) -> Any:
        value = self.get(name)
        return failobj if value is None else [value]


def parse_header_lines(fp: Any) -> _Headers:
    """Read header lines up to the blank line into :class:`_Headers`.

    Values are decoded as ISO-8859-1 (as http.client does) and continuation
    lines (obsolete folding) are joined to the field before them.

    Raises
    ------
    http.client.HTTPException
        For a line over 64 KiB or more than 100 fields.
    """
    headers = _Headers()
    name = ""
    for _ in range(_MAX_HEADERS + 1):
        line = fp.readline(_MAX_LINE + 1)
        if len(line) > _MAX_LINE:
            raise http.client.LineTooLong("header line")
        if line in (b"\r\n", b"\n", b""):
            return headers
        text = line.decode("iso-8859-1").rstrip("\r\n")
        if text[:1] in (" ", "\t") and name:
            headers[name] = f"{dict.__getitem__(headers, name)} {text.strip()}"
            continue
        field, colon, value = text.partition(":")
        if not colon:
            continue  # not a header line: ignored, as the email parser does
        name = field.strip().lower()
        value = value.strip()
        old = dict.get(headers, name)
        headers[name] = value if old is None else f"{old}, {value}"
    raise http.client.HTTPException(f"got more than {_MAX_HEADERS} headers")


class _Response(http.client.HTTPResponse):
    """An HTTPResponse whose headers are parsed without the email package."""

    def begin(self) -> None:
        """Read the status line and headers (CPython's ``begin``, lighter headers)."""
        if self.headers is not None:
            return
        while True:
            version, status, reason = self._read_status()  # type: ignore[attr-defined]
            if status != http.client.CONTINUE:
                break
            parse_header_lines(self.fp)  # the headers of a 100 Continue
        self.code = self.status = status
        self.reason = reason.strip()
        if version in ("HTTP/1.0", "HTTP/0.9"):
            self.version = 10
        elif version.startswith("HTTP/1."):
            self.version = 11
        else:
            raise http.client.UnknownProtocol(version)
        self.headers = self.msg = parse_header_lines(self.fp)  # type: ignore[assignment]
        encoding = self.headers.get("transfer-encoding")
        self.chunked = bool(encoding) and encoding.lower() == "chunked"
        self.chunk_left = None
        self.will_close = self._check_close()  # type: ignore[attr-defined]
        self.length = None
        length = self.headers.get("content-length")
        if length and not self.chunked:
            try:
                self.length = int(length)
            except ValueError:
                self.length = None
            else:
                if self.length < 0:
                    self.length = None
        method = self._method  # type: ignore[attr-defined]
        if status in (204, 304) or 100 <= status < 200 or method == "HEAD":
            self.length = 0
        if not self.will_close and not self.chunked and self.length is None:
            self.will_close = True


class StdlibResponse:
    """An answer read through http.client.

    Parameters
    ----------
    conn : http.client.HTTPConnection
        The connection it came on; returned to the pool when the body was
        read to its end.
    raw : http.client.HTTPResponse
        The response.
    url : str
        The URL requested, for messages.
    release_to : callable
        Called with the connection when it can be reused.
    """

    def __init__(
        self,
        conn: http.client.HTTPConnection,
        raw: http.client.HTTPResponse,
        url: str,
        release_to: Any,
    ) -> None:
        self._conn: http.client.HTTPConnection | None = conn
        if raw.fp is not None:
            raw.fp = _PartialReader(raw.fp)
        self._raw = raw
        self._release_to = release_to
        self.url = url
        self.status: int = raw.status
        self.reason: str = raw.reason
        self.headers: Any = raw.headers

    def readinto(self, buffer: Any) -> int:
        """Read body bytes into ``buffer``; 0 at the end of the body."""
        try:
            return self._raw.readinto(buffer)
        except Exception as exc:
            self.close()
            raise _translate(exc, self.url, "reading the body of") from exc

    def read(self, size: int = MAX_ERROR_BODY) -> bytes:
        """Read up to ``size`` bytes of the body (for small error bodies)."""
        try:
            return self._raw.read(size)
        except Exception as exc:
            self.close()
            raise _translate(exc, self.url, "reading the body of") from exc

    def release(self) -> None:
        """Finish with the response; keep the connection if the body was consumed."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if not self._raw.isclosed() and self._raw.length == 0:
            # HEAD, 204, Content-Length: 0: http.client finishes an empty body
            # only when it is read, and until then the connection looks busy.
            self._raw.read()
        if self._raw.isclosed() and not self._raw.will_close:
            self._release_to(conn)
        else:
            self._raw.close()
            conn.close()

    def close(self) -> None:
        """Abandon the response and its connection."""
        conn, self._conn = self._conn, None
        self._raw.close()
        if conn is not None:
            conn.close()


class StdlibTransport:
    """HTTP(S) on http.client with a keep-alive pool per origin.

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
        self._idle: dict[PoolKey, list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()

    # -- pool ---------------------------------------------------------------

    def _context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            import ssl  # only for https: plain http never pays for it

            self._ssl_context = ssl.create_default_context()
        return self._ssl_context

    def _proxy_for(self, scheme: str, host: str) -> str | None:
        proxy = self._proxies.get(scheme)
        if not proxy:
            return None
        if _httputil.bypasses_proxy(host, self._proxies.get("no")):
            return None
        return proxy if "://" in proxy else f"http://{proxy}"

    def _take_idle(self, key: PoolKey) -> http.client.HTTPConnection | None:
        with self._lock:
            idle = self._idle.get(key)
            return idle.pop() if idle else None

    def _put_idle(self, key: PoolKey, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
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

    def _new_connection(
        self, scheme: str, host: str, port: int, proxy: str | None, timeout: float
    ) -> http.client.HTTPConnection:
        conn = self._connection(scheme, host, port, proxy, timeout)
        conn.response_class = _Response
        return conn

    def _connection(
        self, scheme: str, host: str, port: int, proxy: str | None, timeout: float
    ) -> http.client.HTTPConnection:
        if proxy is None:
            if scheme == "https":
                return http.client.HTTPSConnection(
                    host, port, timeout=timeout, context=self._context()
                )
            return http.client.HTTPConnection(host, port, timeout=timeout)
        parts = urllib.parse.urlsplit(proxy)
        proxy_host = parts.hostname or ""
        proxy_port = parts.port or _DEFAULT_PORTS.get(parts.scheme, 8080)
        if scheme == "https":
            tunnel = http.client.HTTPSConnection(
                proxy_host, proxy_port, timeout=timeout, context=self._context()
            )
            tunnel.set_tunnel(host, port, headers=_proxy_auth_headers(parts))
            return tunnel
        return http.client.HTTPConnection(proxy_host, proxy_port, timeout=timeout)

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
            Request headers (``Host`` is added by http.client).
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
        """
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme
        host = parts.hostname or ""
        port = parts.port or _DEFAULT_PORTS[scheme]
        proxy = self._proxy_for(scheme, host)
        key: PoolKey = (scheme, host, port, proxy)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        send_headers = dict(headers)
        if proxy is not None and scheme == "http":
            target = urllib.parse.urlunsplit((scheme, parts.netloc, target, "", ""))
            send_headers.update(_proxy_auth_headers(urllib.parse.urlsplit(proxy)))

        conn = self._take_idle(key)
        if conn is not None:
            # The socket keeps the timeout it was opened with; this call's applies.
            conn.timeout = timeout
            if conn.sock is not None:
                conn.sock.settimeout(timeout)
            try:
                return self._exchange(conn, key, method, target, send_headers, url, reused=True)
            except _StaleConnection:
                pass  # the server closed it while idle: once more on a new one
        conn = self._new_connection(scheme, host, port, proxy, timeout)
        return self._exchange(conn, key, method, target, send_headers, url, reused=False)

    def _exchange(
        self,
        conn: http.client.HTTPConnection,
        key: PoolKey,
        method: str,
        target: str,
        headers: dict[str, str],
        url: str,
        reused: bool,
    ) -> StdlibResponse:
        try:
            conn.request(method, target, headers=headers)
            raw = conn.getresponse()
        except (
            http.client.RemoteDisconnected,
            ConnectionResetError,
            BrokenPipeError,
            ConnectionAbortedError,
        ) as exc:
            conn.close()
            if reused:
                raise _StaleConnection() from exc
            raise _translate(exc, url, "requesting") from exc
        except Exception as exc:
            conn.close()
            raise _translate(exc, url, "requesting") from exc

        def release(c: http.client.HTTPConnection) -> None:
            self._put_idle(key, c)

        return StdlibResponse(conn, raw, url, release)


def _proxy_auth_headers(proxy: urllib.parse.SplitResult) -> dict[str, str]:
    if proxy.username is None:
        return {}
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
    if isinstance(exc, (OSError, http.client.HTTPException)) and not _is_certificate_error(exc):
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

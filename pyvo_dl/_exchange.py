"""One request and its answer: headers, redirects, retries, probes, commit.

The request-level machinery that the single-stream download (``_engine``)
and the parallel ranged download (``_parallel``) share: the
:class:`FetchRequest` value, headers and credentials per origin, redirects
under SPEC §3.4, retries with backoff (§3.3), the HEAD / ``Range: bytes=0-0``
probe, and the final size and checksum check before ``os.replace`` (§3.1).
"""

from __future__ import annotations

import mmap
import os
import sys
import threading
import time
import warnings

from . import _auth, _httputil, _integrity, _partfile, _progress
from ._errors import DownloadError, DownloadWarning, HTTPStatusError, IntegrityError
from ._partfile import PartFile, PartState, disk_error, pause
from ._records import Record
from ._retry import DEFAULT_RETRIES, RetryPolicy
from ._transport import ConnectionFault, TimeoutFault

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Mapping, Protocol, TypeVar

    from ._integrity import Checksum, Verifier
    from ._partfile import Writer
    from ._transport import Response, StdlibResponse, Transport

    T = TypeVar("T")
    Signer = Callable[[str, str, Dict[str, str]], Dict[str, str]]

    class Sink(Protocol):
        def write(self, chunk: memoryview) -> None: ...

    ErrorFactory = Callable[["Response", str, bytes], DownloadError]

#: One read/write/hash buffer per thread, reused for every file.
BUFFER_SIZE = 1024 * 1024
#: A try that kept at least this much starts the count of retries again;
#: less does not, so a server that sends a few bytes per connection cannot
#: hold a download for ever.
MIN_PROGRESS = 64 * 1024
DEFAULT_TIMEOUT = 60.0

_PACKAGE = __name__.rpartition(".")[0] or __name__


def log(level: int, message: str, *args: Any) -> None:
    """Log on the package logger (``pyvo_dl``), if logging is in use at all.

    Nobody can listen before ``logging`` is imported, so a process that
    never imports it does not pay for it (10 ms, SPEC §6). Once it is in
    ``sys.modules`` it is imported, not taken from there: another thread may
    still be running its import (``concurrent.futures`` imports it), and the
    import statement waits for that to finish where ``sys.modules`` would
    hand over a half-made module. The logger is then kept: each download
    logs, and an import statement and ``getLogger`` (a lock) per message
    cost more than a small file's other steps.
    """
    if not _LOGGER:
        if "logging" not in sys.modules:
            return
        import logging  # noqa: PLC0415 - see above

        _LOGGER.append(logging.getLogger(_PACKAGE))
    logger = _LOGGER[0]
    if logger.isEnabledFor(level):
        # Formatted here, so that no URL password reaches a handler (SPEC §3.7).
        logger.log(level, "%s", _httputil.redact(message % args if args else message))


#: The package logger, once logging is in use (see log).
_LOGGER: list[Any] = []


_INFO, _DEBUG = 20, 10

_buffers = threading.local()
#: Per thread, what the download_many call whose items it runs fixes for all
#: of them (transports, the AWS context); read and set by ``_api``.
BATCH = threading.local()


def buffer() -> memoryview:
    """This thread's read/write/hash buffer (BUFFER_SIZE bytes, page-aligned).

    Page-aligned memory (an anonymous mmap) is measurably faster to copy
    into and out of than a bytearray, whose data starts 16 bytes into a
    page: 0.42 s against 0.60 s for 256 MiB from a loopback nginx.
    """
    view = getattr(_buffers, "view", None)
    if view is None:
        view = memoryview(mmap.mmap(-1, BUFFER_SIZE, **_PRIVATE))
        _buffers.view = view
    return view


# Private, not the default MAP_SHARED: a forked child (a process pool) keeps
# the buffer of the thread that forked, and with shared pages the parent's
# next download and the child's would write into each other's bytes.
_PRIVATE = {"flags": mmap.MAP_PRIVATE} if hasattr(mmap, "MAP_PRIVATE") else {}


class FetchRequest(Record):
    """Everything the engine needs to download one object to one file.

    Attributes
    ----------
    url : str
        The first URL to request.
    target : str
        The local path of the finished file.
    label : str
        What progress lines call the source (the URL, or the S3 key).
    identity : str
        What a ``.part`` must have been made from to be resumed (the URL or
        ``s3://bucket/key``); defaults to ``url``.

    The other fields are the download's options, as ``http_download`` and
    ``aws_download`` take them, and what differs between HTTP and S3: the
    class attributes below are their defaults, each given by its name.
    """

    url: str
    target: str
    label: str = ""
    identity: str = ""
    cache: bool = False
    resume: bool = True
    retries: int = DEFAULT_RETRIES
    timeout: float = DEFAULT_TIMEOUT
    headers: dict[str, str]
    checksums: list[Checksum]
    progress: Any = True
    verbose: bool = False
    auth: tuple[str, str] | None = None
    use_netrc: bool = True
    #: Adds signing headers to a request: ``signer(method, url, headers)``.
    signer: Signer | None = None
    #: Builds the error for a refused request: ``(response, url, body)``.
    error_factory: ErrorFactory | None = None
    #: Checksums the server announces in its headers (S3's ETag, x-amz-checksum-*).
    server_checksums: Callable[[Mapping[str, str]], list[Checksum]] | None = None
    #: ``"if-range"`` (HTTP) or ``"if-match"`` (S3, SPEC §2.2) on ranged requests.
    conditional: str = "if-range"
    #: S3 answers a wrong region with a redirect that the S3 layer handles itself.
    follow_redirects: bool = True
    #: Parallel ranged connections for one large object (None: 1).
    connections: int | None = None
    #: The first request of a download that may be split asks for the whole
    #: object, not for its first part: S3 sends the object's checksums
    #: (``x-amz-checksum-*``) only to a GET of the whole object. A large
    #: object's first range is then the start of that answer (SPEC §2.2).
    whole_first: bool = False
    user_agent: str = "pyvo-dl"
    #: A stop (SIGTERM, Ctrl-C: ``_partfile.interrupt``) cuts this sleep short.
    sleep: Callable[[float], None]  # pause (set per request: a function here would bind)
    rng: Callable[[], float] | None = None
    #: Host to ``.netrc`` credentials, shared by the items of one
    #: download_many call so that the file is looked for once per host.
    netrc_cache: dict[str, tuple[str, str] | None] | None = None

    def __init__(self, url: str, target: str, **options: Any) -> None:
        if not _REQUEST_OPTIONS.issuperset(options):
            unknown = ", ".join(sorted(set(options) - _REQUEST_OPTIONS))
            raise TypeError(f"FetchRequest() got unknown options: {unknown}")
        self.url = url
        self.target = target
        self.headers = {}
        self.checksums = []
        self.sleep = pause
        self.__dict__.update(options)
        self.label = self.label or url
        self.identity = self.identity or url

    def for_item(
        self, url: str, target: str, progress: Any, checksums: list[Checksum]
    ) -> FetchRequest:
        """This request's options for another URL and target (the items of one batch).

        Its label and identity are the new URL, as for a request made with it.
        """
        item: FetchRequest = object.__new__(FetchRequest)
        fields = item.__dict__
        fields.update(self.__dict__)
        fields["url"] = fields["label"] = fields["identity"] = url
        fields["target"] = target
        fields["progress"] = progress
        fields["checksums"] = checksums
        fields["headers"] = dict(self.headers)
        return item


#: Every field of FetchRequest, in order (its annotations), and its options.
FetchRequest._fields = tuple(FetchRequest.__annotations__)
_REQUEST_OPTIONS = frozenset(FetchRequest._fields[2:])


class ObjectInfo(Record):
    """What a HEAD (or ``Range: bytes=0-0``) probe learnt about the object."""

    _fields = ("size", "headers", "url")

    def __init__(self, size: int | None, headers: Mapping[str, str], url: str) -> None:
        self.size = size
        self.headers = headers
        self.url = url


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def warn_caller(message: str) -> None:
    """Warn (:class:`~pyvo_dl.DownloadWarning`) at the caller's line, outside this package."""
    frame = sys._getframe(1)
    level = 2  # 1 is this function, 2 the one that called it
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back
        level += 1
    warnings.warn(_httputil.redact(message), DownloadWarning, stacklevel=level)


def log_and_print_for(request: FetchRequest, message: str) -> None:
    """Log a decision, and print it too when the caller asked for ``verbose``."""
    log_and_print(request.verbose, message)


def log_and_print(verbose: bool, message: str) -> None:
    """Log ``message`` on the package logger; print it too under ``verbose``."""
    log(_INFO, message)
    if verbose:
        _progress.clear_line()
        print(_httputil.redact(message), flush=True)


# -- requests and redirects ------------------------------------------------------


def _request_headers(
    request: FetchRequest, method: str, url: str, extra: Mapping[str, str]
) -> dict[str, str]:
    on_origin = _httputil.same_origin(url, request.url)
    if request.headers:
        headers = {"User-Agent": request.user_agent}
        _merge_headers(headers, _httputil.headers_for_redirect(request.headers, on_origin))
        # Never the caller's: identity keeps sizes and ranges in bytes on disk
        # (SPEC §3.6), and Range/If-Range are the resume's.
        _merge_headers(headers, {"Accept-Encoding": "identity", **extra})
    else:
        # No caller's headers (the usual request): the same, with less to merge.
        headers = {"User-Agent": request.user_agent, "Accept-Encoding": "identity"}
        if extra:
            _merge_headers(headers, extra)
    given = request.headers or extra  # where an Authorization of the caller's could be
    if not (given and any(k.lower() == "authorization" for k in headers)):
        credentials = request.auth if on_origin else None
        if credentials is None and request.use_netrc:
            credentials = _netrc_credentials(request, url)
        if credentials is not None:
            headers["Authorization"] = _auth.basic_auth_header(*credentials)
    if request.signer is not None and on_origin:
        headers.update(request.signer(method, url, headers))
    return headers


def _netrc_credentials(request: FetchRequest, url: str) -> tuple[str, str] | None:
    host = _httputil.host_of(url)
    cache = request.netrc_cache
    if cache is None:
        return _auth.netrc_credentials(host)
    if host not in cache:
        cache[host] = _auth.netrc_credentials(host)
    return cache[host]


def _merge_headers(headers: dict[str, str], new: Mapping[str, str]) -> None:
    """``headers.update(new)``, names compared case-insensitively as HTTP does.

    A caller's ``user-agent`` replaces ours instead of going out beside it
    (two User-Agent or Range lines are malformed requests).
    """
    for name, value in new.items():
        for old in [k for k in headers if k.lower() == name.lower()]:
            del headers[old]
        headers[name] = value


def drain(response: Response) -> None:
    try:
        response.read()
    except DownloadError:
        return
    response.release()


def open_url(
    request: FetchRequest, transport: Transport, method: str, extra: Mapping[str, str]
) -> Response:
    """Send ``method`` for ``request.url``, following redirects (SPEC §3.4).

    Returns the first answer that is not a redirect. At most
    :data:`~pyvo_dl._httputil.MAX_REDIRECTS` are followed, only to http(s);
    credentials and signing headers stay with the original origin.
    """
    url = request.url
    for _ in range(_httputil.MAX_REDIRECTS + 1):
        headers = _request_headers(request, method, url, extra)
        response = transport.request(method, url, headers, request.timeout)
        try:
            location = response.headers.get("Location")
            redirected = (
                request.follow_redirects
                and _httputil.is_redirect_status(response.status)
                and location
            )
        except BaseException:
            response.close()  # Ctrl-C before the caller holds the answer
            raise
        if not redirected:
            return response
        drain(response)
        try:
            url = _httputil.resolve_redirect(url, location)
        except ValueError as exc:
            raise DownloadError(
                f"{request.url} redirected to {location!r}, which is not followed: {exc}"
            ) from exc
        log(_DEBUG, "redirected to %s", url)
    raise DownloadError(
        f"too many redirects (more than {_httputil.MAX_REDIRECTS}) for {request.url}; "
        f"the last was to {url}"
    )


def error_for(request: FetchRequest, response: Response) -> DownloadError:
    try:
        body = response.read() if response.status != 204 else b""
    except DownloadError:
        body = b""
    response.close()
    if request.error_factory is not None:
        return request.error_factory(response, response.url, body)
    return http_status_error(response, response.url)


def http_status_error(response: Response, url: str) -> HTTPStatusError:
    """The :class:`HTTPStatusError` for a refused plain HTTP request, with a hint."""
    hints = {
        401: "the server wants credentials: pass auth=(user, password), "
        "a logged-in session=, or add the host to ~/.netrc",
        403: "the server refused access: check the URL, or log in (auth=, session=)",
        404: "check the URL",
        410: "the file was removed from the server",
    }
    return HTTPStatusError(response.status, url, response.reason, hints.get(response.status, ""))


# -- probing (cache check) ---------------------------------------------------------


def probe(request: FetchRequest, transport: Transport) -> ObjectInfo:
    """Learn the object's size without transferring its body.

    HEAD first; where HEAD is refused (405, 501, or a 403 from URLs signed
    for GET only), ``GET`` with ``Range: bytes=0-0``, closing the connection
    if the server ignores the range. Each of the two is retried as any
    request is (:func:`retrying`).
    """
    response = retrying(request, lambda: open_url_or_transient(request, transport, "HEAD", {}))
    if response.status < 300:
        response.release()
        return ObjectInfo(length_of(response), response.headers, response.url)
    if response.status not in (403, 405, 501):
        raise error_for(request, response)
    response.close()
    first_byte = {"Range": _httputil.format_range(0, 0)}
    response = retrying(
        request, lambda: open_url_or_transient(request, transport, "GET", first_byte)
    )
    if response.status == 206:
        size = content_range(response).total
        drain(response)
        return ObjectInfo(size, response.headers, response.url)
    if response.status == 200:
        response.close()  # the server ignored the range: do not read the body
        return ObjectInfo(length_of(response), response.headers, response.url)
    raise error_for(request, response)


def open_url_or_transient(
    request: FetchRequest, transport: Transport, method: str, extra: Mapping[str, str]
) -> Response:
    """:func:`open_url`, with a transient status (SPEC §3.3) raised as :class:`TransientStatus`."""
    response = open_url(request, transport, method, extra)
    if _httputil.is_transient_status(response.status):
        raise transient_status(request, response)
    return response


def length_of(response: Response) -> int | None:
    return _httputil.parse_content_length(response.headers.get("Content-Length"))


def content_range(response: Response) -> _httputil.ContentRange:
    try:
        return _httputil.parse_content_range(response.headers.get("Content-Range", ""))
    except ValueError:
        return _httputil.ContentRange(None, None, None)


# -- the one retry loop ------------------------------------------------------------


def _no_progress() -> int:
    return 0


def retrying(
    request: FetchRequest,
    attempt: Callable[[], T],
    progress: Callable[[], int] = _no_progress,
    sleep: Callable[[float], object] | None = None,
) -> T:
    """Call ``attempt`` until it succeeds, retrying transient faults (SPEC §3.3).

    The one retry policy of every request: the whole file, a resumed one,
    each parallel range, a probe, a listing page. ``attempt`` raises
    :class:`~pyvo_dl._transport.ConnectionFault` for a network fault and
    :class:`TransientStatus` for a 408/429/5xx answer; anything else ends
    the loop at once. Before each retry it sleeps with exponential backoff
    and full jitter (``Retry-After`` as a minimum); after the last, the fault
    (or the status's :class:`~pyvo_dl.HTTPStatusError`) is raised.

    Parameters
    ----------
    request : FetchRequest
        Its ``retries``, ``rng``, ``sleep`` and ``verbose``.
    attempt : callable
        One try; its result is returned.
    progress : callable, optional
        Bytes kept so far (where a retry resumes from). A try that kept at
        least :data:`MIN_PROGRESS` more starts the count of retries again;
        less does not, so a server that sends a few bytes per connection
        cannot hold a download for ever.
    sleep : callable, optional
        Waits that many seconds (default ``request.sleep``); a parallel
        range passes one that wakes when another range failed.
    """
    policy = _POLICIES.get(request.retries) or _policy(request.retries)
    tries = 0
    while True:
        before = progress()
        try:
            return attempt()
        except ConnectionFault as fault:
            if progress() - before >= MIN_PROGRESS:
                tries = 0
            tries = backoff(request, policy, tries, fault, None, sleep=sleep)
        except TransientStatus as status:
            tries = backoff(
                request, policy, tries, status.fault, status.retry_after, status.error, sleep
            )


#: The policy of each number of retries: immutable, so shared by every request.
_POLICIES: dict[int, RetryPolicy] = {}


def _policy(retries: int) -> RetryPolicy:
    policy = _POLICIES[retries] = RetryPolicy(retries)
    return policy


def status_fault(response: Response) -> ConnectionFault:
    return ConnectionFault(f"HTTP {response.status} {response.reason} for {response.url}")


def retry_after_of(response: Response) -> float | None:
    return _httputil.parse_retry_after(response.headers.get("Retry-After"), time.time())


def backoff(
    request: FetchRequest,
    policy: RetryPolicy,
    attempt: int,
    fault: DownloadError,
    retry_after: float | None,
    final: DownloadError | None = None,
    sleep: Callable[[float], object] | None = None,
) -> int:
    """Sleep before the next attempt; when none is left, raise ``final`` (or ``fault``).

    ``final`` is the error the server's last answer stands for (an
    ``HTTPStatusError`` for a 503 that never went away), so that the caller
    sees the status and not only that retries ran out.
    """
    attempt += 1
    if policy.exhausted(attempt):
        if final is not None:
            if isinstance(final, HTTPStatusError) and not final.hint:
                tries = "1 attempt" if attempt == 1 else f"{attempt} attempts"
                final.add_hint(f"still failing after {tries}; try again later")
            raise final from fault
        raise DownloadError(_gave_up(request, attempt, fault)) from fault
    delay = policy.delay(attempt - 1, request.rng, retry_after)
    log_and_print_for(request, f"Retry {attempt} of {policy.retries} in {delay:.1f} s: {fault}")
    (sleep or request.sleep)(delay)
    return attempt


def _gave_up(request: FetchRequest, attempts: int, fault: DownloadError) -> str:
    tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
    if isinstance(fault, TimeoutFault):
        return (
            f"{fault} (nothing for {request.timeout:g} s, {tries}); if the server is just "
            "slow, give it longer with timeout="
        )
    return f"{fault} (gave up after {tries})"


class TransientStatus(Exception):
    """A transient status (SPEC §3.3) to retry, with the error it ends as if it persists."""

    def __init__(
        self, fault: ConnectionFault, retry_after: float | None, error: DownloadError
    ) -> None:
        super().__init__(str(fault))
        self.fault = fault
        self.retry_after = retry_after
        self.error = error


def transient_status(request: FetchRequest, response: Response) -> TransientStatus:
    """Turn a 408/429/5xx answer into :class:`TransientStatus`, consuming it."""
    fault, retry_after = status_fault(response), retry_after_of(response)
    return TransientStatus(fault, retry_after, error_for(request, response))


# -- the one body loop -------------------------------------------------------------


class Stopped(Exception):
    """The body loop was told to stop (another parallel range failed)."""


class MemorySink:
    """A body kept in memory, up to ``limit`` bytes (a listing page, a small document)."""

    def __init__(self, limit: int, source: str) -> None:
        self._chunks: list[bytes] = []
        self._size = 0
        self._limit = limit
        self._source = source

    def write(self, chunk: memoryview) -> None:
        """Keep ``chunk``; refuse past the limit."""
        self._size += len(chunk)
        if self._size > self._limit:
            raise DownloadError(f"{self._source} sent more than {self._limit} bytes")
        self._chunks.append(bytes(chunk))

    @property
    def size(self) -> int:
        """Bytes kept so far."""
        return sum(map(len, self._chunks))

    def getvalue(self) -> bytes:
        """Everything written, in one piece."""
        return b"".join(self._chunks)


def read_body(
    response: Response,
    sink: Sink,
    length: int | None,
    on_bytes: Callable[[int], None],
    verifier: Verifier | None = None,
    stop: Callable[[], bool] | None = None,
) -> None:
    """Read ``response``'s body into ``sink``: the one loop every body goes through.

    The whole file and a resumed one (a :class:`~._partfile.Writer` at the
    offset), each parallel range (a writer at the range's start), a small
    file of a batch (the same, in one read and one write), a listing page
    (a :class:`MemorySink`). Bytes go through this thread's page-aligned
    buffer; ``readinto`` fills it (or hands over what came within 0.2 s).

    Parameters
    ----------
    response : Response
        Its head read; its body not.
    sink : object
        ``sink.write(memoryview)`` takes each chunk.
    length : int or None
        Bytes to read; never more (a body that goes on past a known size is
        cut there). None: to the end of the body.
    on_bytes : callable
        Called with the size of each chunk once written (progress, locks).
    verifier : Verifier, optional
        Fed each chunk after it is written.
    stop : callable, optional
        Checked before each read; True raises :class:`Stopped`.

    Raises
    ------
    ConnectionFault
        When the body ends before ``length`` bytes (or the network fails).
    Stopped
        When ``stop()`` said so.
    """
    if verifier is None and length is not None and would_splice(response, sink, length):
        # The bytes that came with the head go through the buffer; the rest
        # straight from the socket into the file, inside the kernel. Not for
        # less than a buffer: the pipe's system calls would cost more.
        head = response.buffered()  # type: ignore[union-attr]
        _copy_body(response, sink, head, on_bytes, None, stop)
        _splice_body(response, sink, length - head, on_bytes, stop)  # type: ignore[arg-type]
        return
    _copy_body(response, sink, length, on_bytes, verifier, stop)


def _copy_body(
    response: Response,
    sink: Sink,
    length: int | None,
    on_bytes: Callable[[int], None],
    verifier: Verifier | None,
    stop: Callable[[], bool] | None,
) -> None:
    """:func:`read_body` through this thread's buffer."""
    view = buffer()
    full = len(view)
    readinto = response.readinto
    write = sink.write
    left = length
    while left is None or left > 0:
        if stop is not None and stop():
            raise Stopped()
        n = readinto(view if left is None or left >= full else view[:left])
        if not n:
            if left is not None:
                raise ConnectionFault(f"the body of {response.url} ended {left} bytes early")
            return
        chunk = view[:n]
        write(chunk)
        if verifier is not None:
            verifier.update(chunk)
        if left is not None:
            left -= n
        on_bytes(n)


def would_splice(response: Response, sink: Any, length: int | None) -> bool:
    """Whether :func:`read_body` without a verifier moves this body inside the kernel.

    Socket -> pipe -> file with ``os.splice`` (Linux, Python 3.10+): a plain
    socket, a sized body of at least one buffer, a sink that is a file.
    """
    splice_source = getattr(response, "splice_source", None)  # a session's answer cannot
    return (
        length is not None
        and length >= BUFFER_SIZE
        and splice_source is not None
        and callable(getattr(sink, "splice_pipe", None))
        and _partfile.can_splice()
        and splice_source() is not None
    )


def _splice_body(
    response: StdlibResponse,
    sink: Writer,
    length: int,
    on_bytes: Callable[[int], None],
    stop: Callable[[], bool] | None,
) -> None:
    """:func:`read_body` inside the kernel: a pipe of this body's own, closed with it."""
    pipe = sink.splice_pipe()
    assert pipe is not None  # would_splice said so
    left = length
    with pipe:
        while left > 0:
            if stop is not None and stop():
                raise Stopped()
            n = response.splice_into(pipe.write_fd, min(left, pipe.size))
            if not n:
                raise ConnectionFault(f"the body of {response.url} ended {left} bytes early")
            pipe.drain(n)
            left -= n
            on_bytes(n)


def hash_prefix(verifier: Verifier, path: str, length: int) -> None:
    """Feed the first ``length`` bytes of ``path`` to ``verifier``."""
    view = buffer()
    try:
        with open(path, "rb", buffering=0) as f:
            remaining = length
            while remaining:
                n = f.readinto(view[: min(remaining, len(view))])
                if not n:
                    break
                verifier.update(view[:n])
                remaining -= n
    except OSError as exc:
        raise disk_error(exc, path, "read") from exc


class Document:
    """A body read into memory, with the headers and the URL of the answer it came in.

    Attributes
    ----------
    body : bytes
    headers : Mapping[str, str]
    url : str
        The URL that answered (after redirects): where relative links point from.
    """

    def __init__(self, body: bytes, headers: Mapping[str, str], url: str) -> None:
        self.body = body
        self.headers = headers
        self.url = url


def fetch_document(
    request: FetchRequest, transport: Transport, limit: int = 64 * 1024 * 1024
) -> Document:
    """GET ``request.url`` into memory (listings, small documents), with retries.

    One :func:`retrying` loop around request and body: at most
    ``retries + 1`` requests, whatever fails.

    Raises
    ------
    DownloadError
        As :func:`fetch` does for a refused request or a body over ``limit``.
    """

    def attempt() -> Document:
        response = open_url_or_transient(request, transport, "GET", {})
        if response.status != 200:
            raise error_for(request, response)
        sink = MemorySink(limit, request.url)
        try:
            read_body(response, sink, length_of(response), _ignore)
            response.release()
        except BaseException:
            response.close()
            raise
        return Document(sink.getvalue(), response.headers, response.url)

    return retrying(request, attempt)


def fetch_bytes(
    request: FetchRequest, transport: Transport, limit: int = 64 * 1024 * 1024
) -> bytes:
    """The body of :func:`fetch_document` (an S3 listing page)."""
    return fetch_document(request, transport, limit).body


def _ignore(n: int) -> None:
    pass


def make_sink(request: FetchRequest) -> Any:
    """The progress sink for one file of ``request`` (SPEC §4)."""
    return _progress.make_sink(request.progress, request.label, request.target)


def announced_checksums(request: FetchRequest, state: PartState | None) -> list[Checksum]:
    """The caller's checksum plus those the server announced (kept in ``state``)."""
    if state is None or not state.checksums:
        return list(request.checksums)  # the usual case: no comprehension to run
    return list(request.checksums) + [_integrity.Checksum(a, h) for a, h in state.checksums]


def conditional_range(
    request: FetchRequest, state: PartState, start: int, end: int | None = None
) -> dict[str, str]:
    """``Range`` from ``start`` with what proves it is the same object (SPEC §3.2).

    ``If-Range`` with the validator (HTTP), or ``If-Match`` with the ETag
    (S3, which ignores ``If-Range``).
    """
    headers = {"Range": _httputil.format_range(start, end)}
    if request.conditional == "if-match":
        headers["If-Match"] = state.etag or ""
    else:
        headers["If-Range"] = state.validator or ""
    return headers


def checksum_error(request: FetchRequest, verifier: Verifier) -> IntegrityError | None:
    """The :class:`IntegrityError` for the first digest that does not match, if any."""
    mismatches = verifier.mismatches()
    if not mismatches:
        return None
    checksum, actual = mismatches[0]
    return IntegrityError(
        request.label, request.target, checksum.algorithm, checksum.expected, actual
    )


def verify_and_commit(
    request: FetchRequest, part: PartFile, state: PartState, verifier: Verifier | None
) -> None:
    """Check the ``.part``'s size and checksums, then move it onto the target.

    ``verifier`` holds digests already taken while streaming; without one
    the file is read back. On a mismatch the ``.part`` is removed and
    :class:`IntegrityError` raised: nothing is left at the target.
    """
    found = part.examine()
    size = 0 if found is None else found.st_size
    expected = state.size
    if expected is not None and size != expected:
        part.discard()
        raise IntegrityError(request.label, request.target, "size", str(expected), str(size))
    checksums = announced_checksums(request, state)
    if checksums:
        if verifier is None:
            verifier = _integrity.Verifier(checksums)
            hash_prefix(verifier, part.path, size)
            found = None  # time passed: the commit looks again
        error = checksum_error(request, verifier)
        if error is not None:
            part.discard()
            raise error
    part.commit(found)
    log(_INFO, "downloaded %s to %s (%d bytes)", request.label, request.target, size)

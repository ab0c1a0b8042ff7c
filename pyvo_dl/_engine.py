"""The one download loop that HTTP and S3 share.

``fetch(request, transport)`` runs: lock the target → check the cache (HEAD,
or ``GET Range: bytes=0-0`` where HEAD is refused) → stream the body into
``<target>.part`` with one reused buffer → verify size and checksums →
``os.replace`` onto the target. A ``.part`` left by an earlier call is
continued with ``Range`` plus ``If-Range`` (S3: ``If-Match``); transient
faults are retried with backoff from the byte reached; redirects are followed
under the policy of SPEC §3.4.

What differs between HTTP and S3 (signing, error bodies, checksums the server
announces) comes in as callables on :class:`FetchRequest`.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
import urllib.parse
import warnings
from dataclasses import dataclass, field

from . import _auth, _httputil, _integrity, _progress
from ._errors import DownloadError, DownloadWarning, HTTPStatusError, IntegrityError
from ._partfile import PartFile, TargetLock, disk_error, prepare_target
from ._retry import DEFAULT_RETRIES, RetryPolicy
from ._transport import ConnectionFault

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Mapping

    from ._integrity import Checksum, Verifier
    from ._transport import Response, Transport

    Signer = Callable[[str, str, Dict[str, str]], Dict[str, str]]
    ErrorFactory = Callable[["Response", str, bytes], DownloadError]

#: One read/write/hash buffer per thread, reused for every file.
BUFFER_SIZE = 1024 * 1024
DEFAULT_TIMEOUT = 60.0

_PACKAGE = __name__.rpartition(".")[0] or __name__
logger = logging.getLogger(_PACKAGE)

# A name with one of these endings is data; an HTML answer for it is
# probably an archive's error page served with status 200.
_DATA_SUFFIXES = (
    ".fits", ".fit", ".fts", ".fz", ".gz", ".bz2", ".xz", ".zip", ".tar", ".tgz",
    ".hdf5", ".h5", ".hdf", ".nc", ".cdf", ".evt", ".img", ".lc", ".pha", ".rmf",
    ".arf", ".asdf", ".parquet", ".npy", ".jpg", ".jpeg", ".png", ".pdf", ".vot",
)  # fmt: skip

_buffers = threading.local()


def _buffer() -> memoryview:
    view = getattr(_buffers, "view", None)
    if view is None:
        view = memoryview(bytearray(BUFFER_SIZE))
        _buffers.view = view
    return view


@dataclass
class FetchRequest:
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
    """

    url: str
    target: str
    label: str = ""
    identity: str = ""
    cache: bool = False
    resume: bool = True
    retries: int = DEFAULT_RETRIES
    timeout: float = DEFAULT_TIMEOUT
    headers: dict[str, str] = field(default_factory=dict)
    checksums: list[Checksum] = field(default_factory=list)
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
    #: Parallel ranged connections for one large object (None: the default, 1).
    connections: int | None = None
    user_agent: str = "pyvo-dl"
    sleep: Callable[[float], None] = time.sleep
    rng: Callable[[], float] = random.random

    def __post_init__(self) -> None:
        self.label = self.label or self.url
        self.identity = self.identity or self.url


class ObjectInfo:
    """What a HEAD (or ``Range: bytes=0-0``) probe learnt about the object."""

    def __init__(self, size: int | None, headers: Mapping[str, str], url: str) -> None:
        self.size = size
        self.headers = headers
        self.url = url


def report(request: FetchRequest, message: str) -> None:
    """Log a decision, and print it too when the caller asked for ``verbose``."""
    logger.info(message)
    if request.verbose:
        print(message, flush=True)


# -- requests and redirects ------------------------------------------------------


def _request_headers(
    request: FetchRequest, method: str, url: str, extra: Mapping[str, str]
) -> dict[str, str]:
    on_origin = _httputil.same_origin(url, request.url)
    headers = {"User-Agent": request.user_agent}
    _merge_headers(headers, _httputil.headers_for_redirect(request.headers, on_origin))
    # Never the caller's: identity keeps sizes and ranges in bytes on disk
    # (SPEC §3.6), and Range/If-Range are the resume's.
    _merge_headers(headers, {"Accept-Encoding": "identity", **extra})
    if not any(k.lower() == "authorization" for k in headers):
        credentials = request.auth if on_origin else None
        if credentials is None and request.use_netrc:
            credentials = _auth.netrc_credentials(urllib.parse.urlsplit(url).hostname or "")
        if credentials is not None:
            headers["Authorization"] = _auth.basic_auth_header(*credentials)
    if request.signer is not None and on_origin:
        headers.update(request.signer(method, url, headers))
    return headers


def _merge_headers(headers: dict[str, str], new: Mapping[str, str]) -> None:
    """``headers.update(new)``, names compared case-insensitively as HTTP does.

    A caller's ``user-agent`` replaces ours instead of going out beside it
    (two User-Agent or Range lines are malformed requests).
    """
    for name, value in new.items():
        for old in [k for k in headers if k.lower() == name.lower()]:
            del headers[old]
        headers[name] = value


def _drain(response: Response) -> None:
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
        on_origin = _httputil.same_origin(url, request.url)
        response = transport.request(method, url, headers, request.timeout, on_origin)
        location = response.headers.get("Location")
        if not (
            request.follow_redirects and _httputil.is_redirect_status(response.status) and location
        ):
            return response
        _drain(response)
        try:
            url = _httputil.resolve_redirect(url, location)
        except ValueError as exc:
            raise DownloadError(
                f"{request.url} redirected to {location!r}, which is not followed: {exc}"
            ) from exc
        logger.debug("redirected to %s", url)
    raise DownloadError(
        f"too many redirects (more than {_httputil.MAX_REDIRECTS}) for {request.url}; "
        f"the last was to {url}"
    )


def _error_for(request: FetchRequest, response: Response) -> DownloadError:
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
    if the server ignores the range.
    """
    response = _with_retries(request, lambda: open_url(request, transport, "HEAD", {}))
    if response.status < 300:
        response.release()
        return ObjectInfo(_length_of(response), response.headers, response.url)
    if response.status not in (403, 405, 501):
        raise _error_for(request, response)
    response.close()
    response = _with_retries(
        request,
        lambda: open_url(request, transport, "GET", {"Range": _httputil.format_range(0, 0)}),
    )
    if response.status == 206:
        size = _content_range(response).total
        _drain(response)
        return ObjectInfo(size, response.headers, response.url)
    if response.status == 200:
        response.close()  # the server ignored the range: do not read the body
        return ObjectInfo(_length_of(response), response.headers, response.url)
    raise _error_for(request, response)


def _length_of(response: Response) -> int | None:
    return _httputil.parse_content_length(response.headers.get("Content-Length"))


def _content_range(response: Response) -> _httputil.ContentRange:
    try:
        return _httputil.parse_content_range(response.headers.get("Content-Range", ""))
    except ValueError:
        return _httputil.ContentRange(None, None, None)


def _with_retries(request: FetchRequest, send: Callable[[], Response]) -> Response:
    """Call ``send`` until it returns an answer that is not a transient failure."""
    policy = RetryPolicy(request.retries)
    attempt = 0
    while True:
        try:
            response = send()
        except ConnectionFault as fault:
            attempt = _backoff(request, policy, attempt, fault, None)
            continue
        if not _httputil.is_transient_status(response.status):
            return response
        fault = _status_fault(response)
        retry_after = _retry_after(response)
        if policy.exhausted(attempt + 1):
            return response
        _drain(response)
        attempt = _backoff(request, policy, attempt, fault, retry_after)


def _status_fault(response: Response) -> ConnectionFault:
    return ConnectionFault(f"HTTP {response.status} {response.reason} for {response.url}")


def _retry_after(response: Response) -> float | None:
    return _httputil.parse_retry_after(response.headers.get("Retry-After"), time.time())


def _backoff(
    request: FetchRequest,
    policy: RetryPolicy,
    attempt: int,
    fault: DownloadError,
    retry_after: float | None,
) -> int:
    """Sleep before the next attempt, or raise ``fault`` when none is left."""
    attempt += 1
    if policy.exhausted(attempt):
        raise DownloadError(
            f"giving up on {request.label} after {attempt} attempts: {fault}"
        ) from fault
    delay = policy.delay(attempt - 1, request.rng, retry_after)
    report(request, f"Retrying {request.label} in {delay:.1f} s ({fault})")
    request.sleep(delay)
    return attempt


# -- the download ------------------------------------------------------------------


def fetch(request: FetchRequest, transport: Transport) -> str:
    """Download ``request.url`` to ``request.target``; return the target path.

    Raises
    ------
    DownloadError
        And its subclasses, as SPEC §2.4 lists them.
    """
    prepare_target(request.target)
    lock = TargetLock(request.target)
    started = time.time()
    lock.acquire(
        on_wait=lambda path: report(request, f"Waiting for {path}, held by another download")
    )
    try:
        if lock.waited and _finished_since(request.target, started):
            report(request, f"Found {request.target}, just downloaded by another process.")
            return request.target
        if request.cache and os.path.isfile(request.target) and _cache_is_valid(request, transport):
            return request.target
        return _Download(request, transport, lock).run()
    finally:
        lock.release()


def _finished_since(path: str, since: float) -> bool:
    try:
        return os.stat(path).st_mtime >= since - 1.0
    except OSError:
        return False


def _cache_is_valid(request: FetchRequest, transport: Transport) -> bool:
    info = probe(request, transport)
    local = os.path.getsize(request.target)
    if info.size is not None and info.size == local:
        report(request, f"Found cached file {request.target}.")
        return True
    if info.size is None:
        report(
            request,
            f"{request.url} gives no length: cannot validate {request.target}, downloading again",
        )
    else:
        warnings.warn(
            f"Found cached file {request.target} but it has the wrong size "
            f"({local} bytes, the server has {info.size}). Overwriting ...",
            DownloadWarning,
            stacklevel=4,
        )
    return False


class _Restart(Exception):
    """The server's answer cannot continue the ``.part``: start again from byte 0."""


class _Download:
    """One streaming download into a ``.part``, with resume and retries."""

    def __init__(self, request: FetchRequest, transport: Transport, lock: TargetLock) -> None:
        self.request = request
        self.transport = transport
        self.lock = lock
        self.part = PartFile(request.target)
        self.policy = RetryPolicy(request.retries)
        self.state: dict[str, Any] = {}
        self.offset = 0
        self.verifier: Verifier | None = None
        self.sink: Any = None
        self.restarts = 0

    # -- state --------------------------------------------------------------

    def _load_resumable(self) -> None:
        if not self.request.resume:
            self.part.discard()
            return
        state = self.part.load_state()
        size = self.part.size()
        if (
            state is None
            or state.get("identity") != self.request.identity
            or not state.get("validator")
            or not isinstance(state.get("size"), int)
            or size > state["size"]
        ):
            self.part.discard()
            return
        self.state = state
        self.offset = size
        if size:
            report(self.request, f"Resuming {self.request.label} at byte {size} of {state['size']}")

    def _checksums(self) -> list[Checksum]:
        announced = [_integrity.Checksum(a, h) for a, h in self.state.get("checksums", [])]
        return list(self.request.checksums) + announced

    def _ranged_headers(self) -> dict[str, str]:
        if self.offset == 0:
            return {}
        headers = {"Range": _httputil.format_range(self.offset)}
        if self.request.conditional == "if-match":
            headers["If-Match"] = self.state["etag"]
        else:
            headers["If-Range"] = self.state["validator"]
        return headers

    def _restart_from_zero(self, why: str) -> None:
        self.restarts += 1
        if self.restarts > self.request.retries + 1:
            raise DownloadError(
                f"{self.request.label} keeps changing on the server ({why}); giving up"
            )
        report(self.request, f"Restarting {self.request.label} from byte 0: {why}")
        self.part.discard()
        self.state = {}
        self.offset = 0
        self.verifier = None

    # -- answers ------------------------------------------------------------

    def _record_new_object(self, response: Response, total: int | None) -> None:
        headers = response.headers
        etag = headers.get("ETag")
        validator = _httputil.strong_validator(etag, headers.get("Last-Modified"))
        if self.request.conditional == "if-match":
            validator = etag
        announced = self.request.server_checksums(headers) if self.request.server_checksums else []
        self.state = {
            "identity": self.request.identity,
            "url": response.url,
            "validator": validator,
            "etag": etag,
            "size": total,
            "checksums": [[c.algorithm, c.expected] for c in announced],
        }
        if validator and total is not None and self.request.resume:
            self.part.save_state(self.state)
        self._warn_if_html(headers)

    def _warn_if_html(self, headers: Mapping[str, str]) -> None:
        content_type = (headers.get("Content-Type") or "").lower()
        if content_type.startswith("text/html") and self.request.target.lower().endswith(
            _DATA_SUFFIXES
        ):
            warnings.warn(
                f"{self.request.url} answered with an HTML page for {self.request.target}; "
                "archives often report errors this way, check the file",
                DownloadWarning,
                stacklevel=5,
            )

    def _accept(self, response: Response) -> int:
        """Where to write this answer's body, or raise :class:`_Restart`."""
        if response.status == 200:
            if self.offset:
                response.close()
                raise _Restart("the server sent the whole object (it changed, or ignores Range)")
            self._record_new_object(response, _length_of(response))
            return 0
        content_range = _content_range(response)
        if (
            self.offset
            and content_range.start == self.offset
            and content_range.total == self.state.get("size")
        ):
            return self.offset
        response.close()
        raise _Restart(f"unexpected Content-Range {response.headers.get('Content-Range')!r}")

    def _complete_by_416(self, response: Response) -> bool:
        total = _content_range(response).total
        _drain(response)
        return bool(self.offset) and total == self.offset == self.state.get("size")

    # -- the loop -----------------------------------------------------------

    def run(self) -> str:
        """Download, verify and commit; return the target path."""
        self._load_resumable()
        attempt = 0
        try:
            while True:
                # Taken before the try: _stream moves self.offset as bytes land.
                before = self.offset
                try:
                    if self._attempt():
                        break
                    attempt = 0
                except _Restart as restart:
                    self._restart_from_zero(str(restart))
                except ConnectionFault as fault:
                    progressed = self._sync_offset(before)
                    attempt = 0 if progressed else attempt
                    attempt = _backoff(self.request, self.policy, attempt, fault, None)
                except _TransientStatus as status:
                    attempt = _backoff(
                        self.request, self.policy, attempt, status.fault, status.retry_after
                    )
            self._verify_and_commit()
        except BaseException:
            if self.sink is not None:
                self.sink.finish(False)
            raise
        if self.sink is not None:
            self.sink.finish(True)
        return self.request.target

    def _sync_offset(self, before: int) -> bool:
        """After a fault, continue from what is on disk; whether it passed ``before``."""
        resumable = bool(self.state.get("validator")) and self.state.get("size") is not None
        self.offset = self.part.size() if resumable else 0
        if not resumable:
            self.verifier = None
        return self.offset > before

    def _attempt(self) -> bool:
        """One request; True when the body is complete on disk."""
        response = open_url(self.request, self.transport, "GET", self._ranged_headers())
        status = response.status
        if status == 416 and self.offset:
            if self._complete_by_416(response):
                return True
            raise _Restart("the server refused the range")
        if status == 412 and self.offset:
            _drain(response)
            raise _Restart("the object changed on the server")
        if _httputil.is_transient_status(status):
            fault, retry_after = _status_fault(response), _retry_after(response)
            _drain(response)
            raise _TransientStatus(fault, retry_after)
        if status not in (200, 206):
            error = _error_for(self.request, response)
            if status in (404, 410):
                self.part.discard()
            raise error
        start = self._accept(response)
        self._stream(response, start)
        size = self.state.get("size")
        if size is not None and self.offset != size:
            raise ConnectionFault(
                f"{self.request.label}: body ended at byte {self.offset} of {size}"
            )
        return True

    def _stream(self, response: Response, start: int) -> None:
        try:
            self._stream_body(response, start)
        except BaseException:
            # Ctrl-C, a full disk, a progress callable that raised: the
            # connection is mid-body and can never be reused.
            response.close()
            raise
        response.release()

    def _stream_body(self, response: Response, start: int) -> None:
        total = self.state.get("size")
        if self.sink is None:
            self.sink = _progress.make_sink(
                self.request.progress, self.request.label, self.request.target
            )
        # Again on every try: a restart (new object, new size) or a resume
        # moves the starting point, and sinks count from it (SPEC §4).
        self.sink.start(total, start)
        checksums = self._checksums()
        if checksums and (self.verifier is None or start == 0):
            self.verifier = _integrity.Verifier(checksums)
            if start:
                _hash_prefix(self.verifier, self.part.path, start)
        verifier = self.verifier
        view = _buffer()
        done = start
        sink_update = self.sink.update
        refresh = self.lock.refresh
        readinto = response.readinto
        f = self.part.open(start)
        try:
            while True:
                n = readinto(view)
                if not n:
                    break
                chunk = view[:n]
                _write_all(f, chunk, self.part.path)
                if verifier is not None:
                    verifier.update(chunk)
                done += n
                sink_update(done)
                refresh(time.time())
        finally:
            self.offset = done
            f.close()

    def _verify_and_commit(self) -> None:
        request = self.request
        size = self.part.size()
        expected = self.state.get("size")
        if expected is not None and size != expected:
            self.part.discard()
            raise IntegrityError(request.label, request.target, "size", str(expected), str(size))
        checksums = self._checksums()
        if checksums:
            verifier = self.verifier
            if verifier is None:
                verifier = _integrity.Verifier(checksums)
                _hash_prefix(verifier, self.part.path, size)
            mismatches = verifier.mismatches()
            if mismatches:
                self.part.discard()
                checksum, actual = mismatches[0]
                raise IntegrityError(
                    request.label, request.target, checksum.algorithm, checksum.expected, actual
                )
        self.part.commit()
        logger.info("downloaded %s to %s (%d bytes)", request.label, request.target, size)


class _TransientStatus(Exception):
    def __init__(self, fault: ConnectionFault, retry_after: float | None) -> None:
        super().__init__(str(fault))
        self.fault = fault
        self.retry_after = retry_after


def _write_all(f: Any, chunk: memoryview, path: str) -> None:
    try:
        written = f.write(chunk)
        while written < len(chunk):
            written += f.write(chunk[written:])
    except OSError as exc:
        raise disk_error(exc, path, "write") from exc


def _hash_prefix(verifier: Verifier, path: str, length: int) -> None:
    """Feed the first ``length`` bytes of ``path`` to ``verifier``."""
    view = _buffer()
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


def fetch_bytes(
    request: FetchRequest, transport: Transport, limit: int = 64 * 1024 * 1024
) -> bytes:
    """GET ``request.url`` into memory (listings, small documents), with retries.

    Raises
    ------
    DownloadError
        As :func:`fetch` does for a refused request or a body over ``limit``.
    """
    policy = RetryPolicy(request.retries)
    attempt = 0
    while True:
        response = _with_retries(request, lambda: open_url(request, transport, "GET", {}))
        if response.status != 200:
            raise _error_for(request, response)
        chunks: list[bytes] = []
        size = 0
        try:
            while True:
                chunk = response.read(1024 * 1024)
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    response.close()
                    raise DownloadError(f"{request.url} sent more than {limit} bytes")
                chunks.append(chunk)
        except ConnectionFault as fault:
            attempt = _backoff(request, policy, attempt, fault, None)
            continue
        response.release()
        return b"".join(chunks)

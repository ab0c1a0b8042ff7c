"""Downloading one object to one file: the loop that HTTP and S3 share.

``fetch(request, transport)`` runs: lock the target → check the cache (HEAD,
or ``GET Range: bytes=0-0`` where HEAD is refused) → stream the body into
``<target>.part`` with one reused buffer, or fetch equal ranges of it in
parallel (``connections``) → verify size and checksums → ``os.replace``
onto the target. A ``.part`` left by an earlier call is continued with
``Range`` plus ``If-Range`` (S3: ``If-Match``); transient faults are retried
with backoff from the byte reached.

What differs between HTTP and S3 (signing, error bodies, checksums the server
announces) comes in as callables on :class:`~._exchange.FetchRequest`.
"""

from __future__ import annotations

import os
import time
import warnings

from . import _exchange, _httputil, _integrity, _parallel
from ._errors import DownloadError, DownloadWarning
from ._exchange import FetchRequest, report
from ._partfile import PartFile, TargetLock, prepare_target, write_new_file
from ._retry import RetryPolicy
from ._transport import ConnectionFault

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Mapping

    from ._integrity import Checksum, Verifier
    from ._transport import Response, Transport

__all__ = ["FetchRequest", "fetch", "fetch_small"]

_INFO = 20  # logging.INFO, without importing logging

# A name with one of these endings is data; an HTML answer for it is
# probably an archive's error page served with status 200.
_DATA_SUFFIXES = (
    ".fits", ".fit", ".fts", ".fz", ".gz", ".bz2", ".xz", ".zip", ".tar", ".tgz",
    ".hdf5", ".h5", ".hdf", ".nc", ".cdf", ".evt", ".img", ".lc", ".pha", ".rmf",
    ".arf", ".asdf", ".parquet", ".npy", ".jpg", ".jpeg", ".png", ".pdf", ".vot",
)  # fmt: skip


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


def fetch_small(request: FetchRequest, transport: Transport) -> str:
    """:func:`fetch` for a file that is probably small and new (download_many's items).

    The same guarantees as :func:`fetch`, with less work when the object
    comes whole in the first answer: one GET, the body read into memory
    (at most one buffer), checked, written to the ``.part`` in one call and
    moved onto the target. Anything else (a ``.part`` to resume, a target
    already there, an error, a larger or unsized body, a network fault)
    continues in :func:`fetch`'s machinery from where it stands, so nothing
    is requested twice.
    """
    target = request.target
    lock = TargetLock(target)
    try:
        locked = lock.try_acquire()
    except DownloadError:
        locked = False  # no folder yet, say: fetch creates it and reports the rest
    if not locked:
        return fetch(request, transport)
    try:
        # Something to resume, to check against the cache or to refuse: the
        # long way, which looks at all of that.
        long_way = (
            request.connections not in (None, 1)
            or os.path.lexists(target + ".part")
            or os.path.lexists(target)
        )
        if not long_way:
            download = _Download(request, transport, lock)
            try:
                response = _exchange.open_url(request, transport, "GET", {})
                if _write_whole(download, response):
                    return target
                download.first = response
            except ConnectionFault as fault:
                download.first = fault  # the first attempt's fault: retried as usual
            return download.run()
    finally:
        lock.release()
    return fetch(request, transport)


def _write_whole(download: _Download, response: Response) -> bool:
    """Commit ``response`` if it is a ``200`` whose body fits one buffer; whether it did.

    Otherwise the response is left unread for ``download`` to continue. A
    network fault while reading the body is raised with the progress sink
    handed to ``download``, whose retry starts it again.
    """
    request = download.request
    if response.status != 200:
        return False
    size = _exchange.length_of(response)
    view = _exchange.buffer()
    if size is None or size > len(view):
        return False
    headers = response.headers
    announce = request.server_checksums
    checksums = list(request.checksums) + (announce(headers) if announce else [])
    sink = download.sink = _exchange.make_sink(request)
    sink.start(size, 0)
    view = view[:size]
    done = 0
    try:
        while done < size:
            n = response.readinto(view[done:])
            if not n:
                raise ConnectionFault(f"{request.label}: body ended at byte {done} of {size}")
            done += n
            sink.update(done)
        response.release()
        _warn_if_html(request, headers, stacklevel=5)
        if checksums:
            verifier = _integrity.Verifier(checksums)
            verifier.update(view)
            error = _exchange.checksum_error(request, verifier)
            if error is not None:
                raise error  # before anything is written: nothing to remove
        write_new_file(request.target + ".part", view)
        PartFile(request.target).commit()
    except ConnectionFault:
        response.close()
        if done:
            download.keep_received(response, view[:done])
        raise
    except BaseException:
        response.close()
        download.sink = None
        sink.finish(False)
        raise
    download.sink = None
    sink.finish(True)
    _exchange.log(_INFO, "downloaded %s to %s (%d bytes)", request.label, request.target, size)
    return True


def _warn_if_html(request: FetchRequest, headers: Mapping[str, str], stacklevel: int) -> None:
    """Warn when an HTML page came for a data file name (an archive's error page, probably)."""
    content_type = (headers.get("Content-Type") or "").lower()
    if content_type.startswith("text/html") and request.target.lower().endswith(_DATA_SUFFIXES):
        warnings.warn(
            f"{request.url} answered with an HTML page for {request.target}; "
            "archives often report errors this way, check the file",
            DownloadWarning,
            stacklevel=stacklevel,
        )


def _finished_since(path: str, since: float) -> bool:
    try:
        return os.stat(path).st_mtime >= since - 1.0
    except OSError:
        return False


def _cache_is_valid(request: FetchRequest, transport: Transport) -> bool:
    info = _exchange.probe(request, transport)
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
        self.committed = False
        self.no_probe_range = False
        #: The answer (or fault) to the first request, when fetch_small sent it.
        self.first: Response | ConnectionFault | None = None

    # -- state --------------------------------------------------------------

    def _load_resumable(self) -> None:
        if not self.request.resume:
            self.part.discard()
            return
        state = self.part.load_state()
        size = self.part.size()
        if state is None and not size:
            return  # nothing to resume and nothing to clean: the usual case
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

    def keep_received(self, response: Response, received: memoryview) -> None:
        """Keep what fetch_small received before a fault, so that the retry resumes there.

        As the streaming path would have it: the bytes in the ``.part``, the
        object's state in memory (written to ``.part.json`` if the call fails).
        """
        if not self.request.resume:
            return
        self._new_state(response.headers, _exchange.length_of(response), response.url)
        if not self.state["validator"]:
            self.state = {}  # nothing to resume against: the retry starts over
            return
        try:
            write_new_file(self.part.path, received)
        except DownloadError:
            self.state = {}  # the fault being retried matters more than this
            return
        self.offset = len(received)

    def _checksums(self) -> list[Checksum]:
        return _exchange.announced_checksums(self.request, self.state)

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

    def _new_state(self, headers: Mapping[str, str], total: int | None, url: str) -> None:
        """Start over on the object these headers describe."""
        etag = headers.get("ETag")
        validator = _httputil.strong_validator(etag, headers.get("Last-Modified"))
        if self.request.conditional == "if-match":
            validator = etag
        announce = self.request.server_checksums
        announced = announce(headers) if announce else []
        self.state = {
            "identity": self.request.identity,
            "url": url,
            "validator": validator,
            "etag": etag,
            "size": total,
            "checksums": [[c.algorithm, c.expected] for c in announced],
        }

    def _record_new_object(self, response: Response, total: int | None) -> None:
        self._new_state(response.headers, total, response.url)
        # A body that fits in one buffer gets its state file only if the call
        # fails (_keep_for_resume): a kill loses at most that much, and the
        # file costs three system calls per download.
        worth_resuming = total is not None and total > _exchange.BUFFER_SIZE
        if self.state["validator"] and worth_resuming and self.request.resume:
            self.part.save_state(self.state)
        self._warn_if_html(response.headers)

    def _warn_if_html(self, headers: Mapping[str, str]) -> None:
        _warn_if_html(self.request, headers, stacklevel=6)

    def _accept(self, response: Response) -> int:
        """Where to write this answer's body, or raise :class:`_Restart`."""
        if response.status == 200:
            if self.offset:
                response.close()
                raise _Restart("the server sent the whole object (it changed, or ignores Range)")
            self._record_new_object(response, _exchange.length_of(response))
            return 0
        content_range = _exchange.content_range(response)
        if (
            self.offset
            and content_range.start == self.offset
            and content_range.total == self.state.get("size")
        ):
            return self.offset
        response.close()
        raise _Restart(f"unexpected Content-Range {response.headers.get('Content-Range')!r}")

    def _complete_by_416(self, response: Response) -> bool:
        total = _exchange.content_range(response).total
        _exchange.drain(response)
        return bool(self.offset) and total == self.offset == self.state.get("size")

    # -- parallel ranges ------------------------------------------------------

    def _splitting(self) -> bool:
        """Whether the first request should ask for the first part only, to learn the size.

        One request either way: a small object comes whole in the answer,
        a large one tells its size and validator, and is then split.
        """
        connections = self.request.connections or 1
        return connections > 1 and not self.offset and not self.no_probe_range

    def _split_or_stream(self, response: Response) -> None:
        """Continue the ``206`` answer to the first part: split the object, or stream it.

        The answer holds the whole object when it is small; a larger one is
        split into equal ranges (the first continues this answer), or, when
        it cannot be (no validator), asked for again whole.
        """
        content_range = _exchange.content_range(response)
        if content_range.start != 0 or content_range.total is None:
            response.close()
            raise _Restart(f"unexpected Content-Range {response.headers.get('Content-Range')!r}")
        total = content_range.total
        self._record_new_object(response, total)
        if content_range.end is not None and content_range.end + 1 >= total:
            self._stream(response, 0)  # the whole object
            return
        connections = self.request.connections or 1
        if _parallel.can_split(total, self.state["validator"], connections):
            self.state["parts"] = _parallel.plan_parts(total, connections)
            self._run_parallel(response)
            return
        response.close()
        self.no_probe_range = True
        raise _Restart("the object cannot be fetched in ranges (no validator): asking for it whole")

    def _run_parallel(self, first: Response | None = None) -> None:
        """Fetch the missing ranges of the part map, then verify and commit."""
        download = _parallel.ParallelDownload(self.request, self.transport, self.lock, self.state)
        download.run(first)
        self.committed = True

    # -- the loop -----------------------------------------------------------

    def run(self) -> str:
        """Download, verify and commit; return the target path."""
        if not self.state:  # fetch_small may have started it
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
                except (_Restart, _parallel.ObjectChanged) as restart:
                    self._restart_from_zero(str(restart))
                except ConnectionFault as fault:
                    progressed = self._sync_offset(before)
                    attempt = 0 if progressed else attempt
                    attempt = _exchange.backoff(self.request, self.policy, attempt, fault, None)
                except _exchange.TransientStatus as status:
                    attempt = _exchange.backoff(
                        self.request,
                        self.policy,
                        attempt,
                        status.fault,
                        status.retry_after,
                        status.error,
                    )
            if not self.committed:
                self._verify_and_commit()
        except BaseException:
            self._keep_for_resume()
            if self.sink is not None:
                self.sink.finish(False)
            raise
        if self.sink is not None:
            self.sink.finish(True)
        return self.request.target

    def _keep_for_resume(self) -> None:
        """On the way out of a failed call, make sure the next one can resume.

        Small bodies skip the state file while all goes well (see
        :meth:`_record_new_object`); a call that ends in an error writes it.
        """
        state = self.state
        if self.part.has_state or not (self.request.resume and state.get("validator")):
            return
        if state.get("size") is None or not self.part.size():
            return
        try:
            self.part.save_state(state)
        except DownloadError:
            pass  # the original error matters more; the next call starts over

    def _sync_offset(self, before: int) -> bool:
        """After a fault, continue from what is on disk; whether that was real progress."""
        resumable = bool(self.state.get("validator")) and self.state.get("size") is not None
        self.offset = self.part.size() if resumable else 0
        if not resumable:
            self.verifier = None
        return self.offset - before >= _parallel.MIN_PROGRESS

    def _attempt(self) -> bool:
        """One request; True when the body is complete on disk (or committed)."""
        if self.state.get("parts"):
            self._run_parallel()  # an earlier parallel run left its map: finish it
            return True
        splitting = self._splitting()
        response = self._send(splitting)
        try:
            return self._answer(response, splitting)
        except BaseException:
            # Whatever stopped this answer (Ctrl-C included) ends its connection;
            # closing one already released or closed does nothing.
            response.close()
            raise

    def _answer(self, response: Response, splitting: bool) -> bool:
        """Act on the answer to this attempt's request (see :meth:`_attempt`)."""
        status = response.status
        if status == 416 and splitting:
            # An empty object has no byte 0 to range over: ask plainly.
            _exchange.drain(response)
            self.no_probe_range = True
            raise _Restart("the object is empty")
        if splitting and status == 206:
            self._split_or_stream(response)
            if self.committed:
                return True
            return self._check_complete()
        if status == 416 and self.offset:
            if self._complete_by_416(response):
                return True
            raise _Restart("the server refused the range")
        if status == 412 and self.offset:
            _exchange.drain(response)
            raise _Restart("the object changed on the server")
        if _httputil.is_transient_status(status):
            raise _exchange.transient_status(self.request, response)
        if status not in (200, 206):
            error = _exchange.error_for(self.request, response)
            if status in (404, 410):
                self.part.discard()
            raise error
        start = self._accept(response)
        self._stream(response, start)
        return self._check_complete()

    def _send(self, splitting: bool) -> Response:
        """This attempt's answer: to a new request, or the one fetch_small already had."""
        first, self.first = self.first, None
        if isinstance(first, ConnectionFault):
            raise first
        if first is not None:
            return first
        first_part = _httputil.format_range(0, _parallel.FIRST_PART - 1)
        headers = {"Range": first_part} if splitting else self._ranged_headers()
        return _exchange.open_url(self.request, self.transport, "GET", headers)

    def _check_complete(self) -> bool:
        """True once the body ended at its full size; a short one is a fault to retry."""
        size = self.state.get("size")
        if size is not None and self.offset != size:
            raise ConnectionFault(
                f"{self.request.label}: body ended at byte {self.offset} of {size}"
            )
        return True

    def _stream(self, response: Response, start: int) -> None:
        try:
            self._stream_body(response, start)
            response.release()
        except BaseException:
            # Ctrl-C, a full disk, a progress callable that raised: the
            # connection is mid-body and can never be reused.
            response.close()
            raise

    def _stream_body(self, response: Response, start: int) -> None:
        total = self.state.get("size")
        if self.sink is None:
            self.sink = _exchange.make_sink(self.request)
        # Again on every try: a restart (new object, new size) or a resume
        # moves the starting point, and sinks count from it (SPEC §4).
        self.sink.start(total, start)
        checksums = self._checksums()
        if checksums and (self.verifier is None or start == 0):
            self.verifier = _integrity.Verifier(checksums)
            if start:
                _exchange.hash_prefix(self.verifier, self.part.path, start)
        verifier = self.verifier
        self.offset = start
        # Never past the known size: a body that goes on (a chunked answer
        # that never ends) is cut there and its connection dropped.
        end = total if total is not None else -1
        f = self.part.open(start)
        try:
            self._copy_body(response, f, end, verifier)
        finally:
            f.close()

    def _copy_body(self, response: Response, f: Any, end: int, verifier: Verifier | None) -> None:
        """Read the body into this thread's buffer and write it out (and hash it)."""
        view = _exchange.buffer()
        done = self.offset
        sink_update = self.sink.update
        refresh = self.lock.refresh
        readinto = response.readinto
        full = len(view)
        while True:
            room = end - done
            if end >= 0 and room < full:
                if room <= 0:
                    break
                n = readinto(view[:room])
            else:
                n = readinto(view)
            if not n:
                break
            chunk = view[:n]
            _exchange.write_all(f, chunk, self.part.path)
            if verifier is not None:
                verifier.update(chunk)
            done += n
            self.offset = done
            sink_update(done)
            refresh(time.time())

    def _verify_and_commit(self) -> None:
        _exchange.verify_and_commit(self.request, self.part, self.state, self.verifier)

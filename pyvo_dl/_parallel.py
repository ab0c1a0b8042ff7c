"""Parallel ranged downloads of one object (``connections=``, SPEC §6).

The object is split into as many equal ranges as connections, so that all
finish together (a queue of small parts leaves connections idle in its last
wave). Each range is one ranged GET written into a preallocated ``.part``
with ``os.pwrite``, retried on its own from the byte it reached. The part
map in ``.part.json`` records how far each range got, so an interrupted
download resumes only what is missing; ``If-Range`` (S3: ``If-Match``) on
every request makes sure no range comes from another version of the object.
"""

from __future__ import annotations

import os
import time

from . import _exchange, _httputil
from ._errors import DownloadError
from ._partfile import _NOFOLLOW, PartFile, disk_error
from ._retry import RetryPolicy
from ._transport import ConnectionFault

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ._exchange import FetchRequest
    from ._partfile import TargetLock
    from ._transport import Response, Transport

#: Objects smaller than this are not split: the extra requests cost more
#: than they bring.
MIN_PART_SIZE = 4 * 1024 * 1024
#: The engine's first request asks for this much from byte 0: a smaller
#: object comes whole in one answer, a larger one tells its size and is split.
FIRST_PART = 8 * 1024 * 1024
#: A try that moved at least this much resets the retry count (here and in
#: the single stream); less does not, so a server that sends a few bytes per
#: connection cannot hold a download forever.
MIN_PROGRESS = 64 * 1024
#: How often (bytes per range) the part map is written to disk.
_SAVE_EVERY = 8 * 1024 * 1024


class _Aborted(Exception):
    """Another range failed: stop this one (its connection is closed)."""


class ObjectChanged(Exception):
    """A range came back from another version of the object: start again."""


def plan_parts(size: int, connections: int) -> list[list[int]]:
    """``[start, end, done]`` per range: equal ranges, none under MIN_PART_SIZE."""
    parts = max(1, min(connections, size // MIN_PART_SIZE))
    return [[start, end, 0] for start, end in _httputil.plan_ranges(size, parts)]


def can_split(size: int | None, validator: str | None, connections: int) -> bool:
    """Whether an object of ``size`` is worth, and able to be, split.

    Called on a ``206`` answer, which proves the server serves ranges (a
    ``206`` need not repeat ``Accept-Ranges``). The object must be large
    enough for two parts, and there must be a validator to keep every range
    from the same version of the object.
    """
    return connections > 1 and size is not None and size >= 2 * MIN_PART_SIZE and bool(validator)


class ParallelDownload:
    """Fetch the missing ranges of ``.part`` concurrently, then verify and commit.

    Parameters
    ----------
    request : FetchRequest
        What to download.
    transport : Transport
        Shared by the range workers (its pool is thread-safe).
    lock : TargetLock
        Held for the target; refreshed while data arrives.
    state : dict
        The ``.part.json`` state, with ``size``, ``validator`` and ``parts``.
    """

    def __init__(
        self, request: FetchRequest, transport: Transport, lock: TargetLock, state: dict[str, Any]
    ) -> None:
        self.request = request
        self.transport = transport
        self.lock = lock
        self.part = PartFile(request.target)
        self.state = state
        self.size: int = state["size"]
        self.parts: list[list[int]] = state["parts"]
        import threading  # only large files are split: small ones never pay for it

        self._lock = threading.Lock()
        self._abort = threading.Event()
        self._unsaved = 0
        self._done = sum(p[2] for p in self.parts)
        self.sink: Any = None

    # -- setup ----------------------------------------------------------------

    def _open(self) -> int:
        """Open (creating and preallocating if new) the ``.part``; return its fd."""
        fresh = not os.path.exists(self.part.path)
        try:
            # Never through a link planted in place of the .part.
            fd = os.open(self.part.path, os.O_WRONLY | os.O_CREAT | _NOFOLLOW, 0o666)
        except OSError as exc:
            raise disk_error(exc, self.part.path, "create") from exc
        if fresh or os.fstat(fd).st_size != self.size:
            try:
                _preallocate(fd, self.size)
            except OSError as exc:
                os.close(fd)
                raise disk_error(exc, self.part.path, "allocate") from exc
        return fd

    # -- the run --------------------------------------------------------------

    def run(self, first: Response | None = None) -> None:
        """Download every missing range, then verify and commit; raise on failure.

        ``first`` is an open answer for the start of the object (the
        engine's ``Range: bytes=0-`` + FIRST_PART - 1): it serves the start of
        the first range, whose rest is asked for on the same connection.
        """
        from concurrent.futures import ThreadPoolExecutor

        try:
            self.part.save_state(self.state)
            fd = self._open()
        except BaseException:
            if first is not None:
                first.close()
            raise
        self.sink = _exchange.make_sink(self.request)
        self.sink.start(self.size, self._done)
        todo = [p for p in self.parts if p[0] + p[2] <= p[1]]
        ok = False
        try:
            with ThreadPoolExecutor(max_workers=max(1, len(todo))) as pool:
                futures = [
                    pool.submit(self._fetch_range, fd, p, first if p[0] == 0 else None)
                    for p in todo
                ]
                errors = []
                for future in futures:
                    try:
                        future.result()
                    except BaseException as exc:
                        self._abort.set()
                        errors.append(exc)
            self._save()
            if errors:
                raise _first_cause(errors)
            os.close(fd)
            fd = -1
            self._verify_and_commit()
            ok = True
        finally:
            if fd >= 0:
                os.close(fd)
            if not ok and not self._done:
                # Not one byte arrived: keep no reservation of the announced
                # size (it may be a lie) and nothing to resume.
                self.part.discard()
            self.sink.finish(ok)

    def _save(self) -> None:
        with self._lock:
            self._unsaved = 0
            self.part.save_state(self.state)

    def _progress(self, n: int) -> None:
        with self._lock:
            self._done += n
            self._unsaved += n
            self.sink.update(self._done)
            save = self._unsaved >= _SAVE_EVERY
        if save:
            self._save()
        self.lock.refresh(time.time())

    # -- one range --------------------------------------------------------------

    def _fetch_range(self, fd: int, part: list[int], first: Response | None) -> None:
        policy = RetryPolicy(self.request.retries)
        attempt = 0
        while part[0] + part[2] <= part[1]:
            if self._abort.is_set():
                if first is not None:
                    first.close()
                return
            before = part[2]
            try:
                response, first = first, None
                self._stream_range(fd, part, response)
            except _Aborted:
                return
            except ConnectionFault as fault:
                attempt = 0 if part[2] - before >= MIN_PROGRESS else attempt
                attempt = _exchange.backoff(self.request, policy, attempt, fault, None)
            except _exchange.TransientStatus as status:
                attempt = _exchange.backoff(
                    self.request, policy, attempt, status.fault, status.retry_after, status.error
                )

    def _range_headers(self, part: list[int]) -> dict[str, str]:
        headers = {"Range": _httputil.format_range(part[0] + part[2], part[1])}
        if self.request.conditional == "if-match":
            headers["If-Match"] = self.state["etag"]
        else:
            headers["If-Range"] = self.state["validator"]
        return headers

    def _stream_range(self, fd: int, part: list[int], response: Response | None) -> None:
        start = part[0] + part[2]
        if response is None:
            headers = self._range_headers(part)
            response = _exchange.open_url(self.request, self.transport, "GET", headers)
        status = response.status
        if _httputil.is_transient_status(status):
            raise _exchange.transient_status(self.request, response)
        if status in (200, 412, 416):
            response.close()
            raise ObjectChanged(f"HTTP {status} for a range of {self.request.label}")
        if status != 206:
            raise _exchange.error_for(self.request, response)
        content_range = _exchange.content_range(response)
        if (
            content_range.start != start
            or content_range.total != self.size
            or content_range.end is None
            or content_range.end < start
        ):
            response.close()
            raise ObjectChanged(
                f"unexpected Content-Range {response.headers.get('Content-Range')!r}"
            )
        # An answer may cover less than the range (the engine's first one
        # does): read what it covers; the caller asks for the rest.
        end = min(part[1], content_range.end)
        try:
            self._read_range(fd, part, response, start, end)
        except BaseException:
            response.close()  # mid-body: the connection cannot be reused
            raise
        response.release()

    def _read_range(
        self, fd: int, part: list[int], response: Response, start: int, end: int
    ) -> None:
        view = _exchange.buffer()
        remaining = end + 1 - start
        position = start
        while remaining > 0:
            if self._abort.is_set():
                raise _Aborted()
            n = response.readinto(view[: min(len(view), remaining)])
            if not n:
                raise ConnectionFault(f"{self.request.label}: range ended at byte {position}")
            _pwrite_all(fd, view[:n], position, self.part.path)
            position += n
            remaining -= n
            part[2] += n
            self._progress(n)

    # -- the end ----------------------------------------------------------------

    def _verify_and_commit(self) -> None:
        if any(p[0] + p[2] <= p[1] for p in self.parts):
            raise DownloadError(f"{self.request.label}: ranges still missing")
        _exchange.verify_and_commit(self.request, self.part, self.state, None)


def _first_cause(errors: list[BaseException]) -> BaseException:
    """The error to raise: a restart first, then the first real one."""
    for error in errors:
        if isinstance(error, ObjectChanged):
            return error
    for error in errors:
        if not isinstance(error, ConnectionFault):
            return error
    return errors[0]


def _preallocate(fd: int, size: int) -> None:
    # Reserving the space up front turns a full disk into an error now,
    # not at 90 %; where the file system cannot, a sparse file will do.
    fallocate = getattr(os, "posix_fallocate", None)
    if fallocate is not None:
        try:
            fallocate(fd, 0, size)
            return
        except OSError as exc:
            if exc.errno not in (95, 22):  # EOPNOTSUPP, EINVAL: not supported here
                raise
    os.ftruncate(fd, size)


def _pwrite_all(fd: int, chunk: memoryview, position: int, path: str) -> None:
    try:
        while chunk:
            written = os.pwrite(fd, chunk, position)
            chunk = chunk[written:]
            position += written
    except OSError as exc:
        raise disk_error(exc, path, "write") from exc

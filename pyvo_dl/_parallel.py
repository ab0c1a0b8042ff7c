"""Parallel ranged downloads of one object (``connections=``, SPEC §6).

The object is split into as many equal ranges as connections, so that all
finish together (a queue of small parts leaves connections idle in its last
wave). Each range is one ranged GET whose body the engine's body loop
writes into a preallocated ``.part`` at the range's place, retried by the
one retry loop from the byte it reached. The part map in ``.part.json``
records how far each range got, rewritten in place after every chunk
(:class:`~._partfile.PartProgress`), so a download killed at any point
resumes only what is missing, less at most one chunk per range;
``If-Range`` (S3: ``If-Match``) on every request, and the validators every
``206`` must repeat, make sure no range comes from another version of the
object. When one range
fails, the others stop at once: their answers are cut, their waits end.
"""

from __future__ import annotations

import os
import time

from . import _exchange, _httputil, _integrity
from ._errors import DownloadError
from ._exchange import Stopped
from ._partfile import PartFile, PartProgress, PartRange, PartVanished, Writer
from ._transport import ConnectionFault

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ._exchange import FetchRequest
    from ._partfile import PartState, TargetLock
    from ._transport import Response, Transport

#: Objects smaller than this are not split: the extra requests cost more
#: than they bring.
MIN_PART_SIZE = 4 * 1024 * 1024
#: The engine's first request asks for this much from byte 0: a smaller
#: object comes whole in one answer, a larger one tells its size and is split.
FIRST_PART = 8 * 1024 * 1024


class ObjectChanged(Exception):
    """A range came back from another version of the object: start again.

    ``answer`` is the ``200`` that said so, unread, when it did: the new
    object whole (``If-Range`` failed: nginx, Apache), which the engine
    makes its new download instead of asking again (issue 12.1); else None.
    """

    def __init__(self, message: str, answer: Response | None = None) -> None:
        super().__init__(message)
        self.answer = answer


def plan_parts(size: int, connections: int) -> list[PartRange]:
    """Equal ranges of an object of ``size`` bytes, one per connection, none under MIN_PART_SIZE."""
    parts = max(1, min(connections, size // MIN_PART_SIZE))
    return [PartRange(start, end) for start, end in _httputil.plan_ranges(size, parts)]


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
    state : PartState
        The ``.part.json`` state, with ``size``, ``validator`` and ``parts``.
    """

    def __init__(
        self, request: FetchRequest, transport: Transport, lock: TargetLock, state: PartState
    ) -> None:
        self.request = request
        self.transport = transport
        self.lock = lock
        self.part = PartFile(request.target)
        self.state = state
        assert state.size is not None  # only a known size is split
        self.size: int = state.size
        self.parts = state.parts
        import threading  # only large files are split: small ones never pay for it

        self._lock = threading.Lock()
        self._stop = threading.Event()
        #: The answers being read now, cut when a range fails.
        self._reading: set[Response] = set()
        self._done = sum(p.done for p in self.parts)
        self.sink: Any = None
        #: The engine's first answer when it is the whole object (S3's first GET).
        self._whole_answer: Response | None = None
        #: Keeps the part map on disk current, from the first byte on.
        self.progress: PartProgress | None = None
        #: Each range's CRC as its bytes arrive, when the object's checksum is a
        #: CRC and no range was begun by an earlier run: then the file is not
        #: read back to verify it. Not where a body goes socket -> file inside
        #: the kernel (plain http): that costs less than the copies the CRC
        #: needs, and the file is read back once instead.
        self._crcs = (
            None
            if self._done
            else _integrity.RangeCrcs.for_download(
                _exchange.announced_checksums(request, state),
                [(p.start, p.end) for p in self.parts],
            )
        )

    # -- the run --------------------------------------------------------------

    def run(self, first_answer: Response | None = None) -> None:
        """Download every missing range, then verify and commit; raise on failure.

        ``first_answer`` is an open answer for the start of the object: the
        engine's ``Range: bytes=0-`` + FIRST_PART - 1, whose body serves the
        start of the first range (the rest is asked for on the same
        connection), or a ``200`` with the whole object (``whole_first``),
        read to the first range's end and then closed.
        """
        from concurrent.futures import ThreadPoolExecutor

        if first_answer is not None and first_answer.status == 200:
            self._whole_answer = first_answer

        progress = None
        try:
            progress = self.progress = self.part.save_progress(self.state)
            fd = self.part.open_preallocated(self.size, kept=self._done)
        except BaseException:
            if progress is not None:
                progress.close()
            if first_answer is not None:
                first_answer.close()
            raise
        self.sink = _exchange.make_sink(self.request)
        self.sink.start(self.size, self._done)
        todo = [p for p in self.parts if p.missing]
        ok = False
        try:
            errors = self._run_ranges(ThreadPoolExecutor(max_workers=max(1, len(todo))), fd, todo,
                                      first_answer)  # fmt: skip
            progress.close()  # every count is on disk; the commit removes the file
            progress = None
            if errors:
                raise _first_cause(errors)  # closes the answers of the others
            os.close(fd)
            fd = -1
            self._verify_and_commit()
            ok = True
        finally:
            if fd >= 0:
                os.close(fd)
            if progress is not None:
                progress.close()
            if not ok and not self._done:
                # Not one byte arrived: keep no reservation of the announced
                # size (it may be a lie) and nothing to resume.
                self.part.discard()
            self.sink.finish(ok)

    def _run_ranges(
        self, pool: Any, fd: int, todo: list[PartRange], first_answer: Response | None
    ) -> list[BaseException]:
        """Run each range on ``pool``; the errors they ended with.

        Whatever stops the caller meanwhile (Ctrl-C, at any point: while the
        ranges are handed out too) stops every range at once, before the
        pool is waited for.
        """
        errors: list[BaseException] = []
        futures = []
        try:
            for part in todo:
                given = first_answer if part.start == 0 else None
                futures.append(pool.submit(self._fetch_range, fd, part, given))
                if given is not None:
                    first_answer = None  # the range's own now: it closes it
            for future in futures:
                try:
                    future.result()
                except Exception as exc:
                    errors.append(exc)
        except BaseException:
            self._stop_all()
            if first_answer is not None:
                first_answer.close()  # stopped before it was handed out
            raise
        finally:
            pool.shutdown(wait=True)
        return errors

    def _progress(self, part: PartRange, n: int) -> None:
        """``n`` more bytes of ``part`` are in the ``.part``: say so on disk, then to the sink."""
        part.done += n
        assert self.progress is not None  # run() made it before any range started
        self.progress.record(part)
        with self._lock:
            self._done += n
            self.sink.update(self._done)
        self.lock.refresh(time.time())

    def _stop_all(self) -> None:
        """Another range failed: end every range now (their reads and their waits)."""
        self._stop.set()
        with self._lock:
            reading = list(self._reading)
        for response in reading:
            response.abort()

    # -- one range --------------------------------------------------------------

    def _fetch_range(self, fd: int, part: PartRange, first_answer: Response | None) -> None:
        """One range, retried from the byte it reached, until it is on disk or stopped."""
        pending = [first_answer] if first_answer is not None else []

        def attempt() -> None:
            # An answer may cover less than the range (the engine's first one
            # does): the rest is asked for at once, on the same connection.
            while part.missing:
                response = pending.pop() if pending else None
                self._attempt_range(fd, part, response)

        try:
            _exchange.retrying(
                self.request, attempt, progress=lambda: part.done, sleep=self._stop.wait
            )
        except Stopped:
            pass
        except BaseException:
            self._stop_all()
            raise
        finally:
            for response in pending:
                response.close()  # never used: stopped before its first try

    def _attempt_range(self, fd: int, part: PartRange, response: Response | None) -> None:
        if self._stop.is_set():
            if response is not None:
                response.close()
            raise Stopped()
        if response is None:
            headers = _exchange.conditional_range(
                self.request, self.state, part.next_byte, part.end
            )
            response = _exchange.open_url(self.request, self.transport, "GET", headers)
        with self._lock:
            self._reading.add(response)
        try:
            self._read_range(fd, part, response)
            response.release()
        except ObjectChanged as changed:
            if changed.answer is None:
                response.close()
            raise  # a 200 goes to the engine unread: the new object's download
        except BaseException:
            response.close()  # mid-body or refused: the connection cannot be reused
            raise
        finally:
            with self._lock:
                self._reading.discard(response)

    def _read_range(self, fd: int, part: PartRange, response: Response) -> None:
        start = part.next_byte
        end = self._end_of(part, response)
        self.part.check_still_there()  # the fd's file, after however long a wait
        writer = Writer(fd, start, self.part.path)
        crcs = self._crcs
        if crcs is not None and _exchange.would_splice(response, writer, end + 1 - start):
            self._crcs = crcs = None  # this body goes by the kernel: the file is read back
        _exchange.read_body(
            response,
            writer,
            end + 1 - start,
            lambda n: self._progress(part, n),
            None if crcs is None else crcs.hasher(part.start),
            stop=self._stop.is_set,
        )

    def _end_of(self, part: PartRange, response: Response) -> int:
        """The last byte of ``part`` that ``response`` brings, or raise if it brings none."""
        start = part.next_byte
        status = response.status
        if status == 200 and response is self._whole_answer and start == 0:
            # The state was made from this answer: same object, same size.
            # Its body goes on past the range; the connection is closed after.
            return part.end
        if _httputil.is_transient_status(status):
            raise _exchange.transient_status(self.request, response)
        if status in (200, 412, 416):
            answer = response if status == 200 else None
            raise ObjectChanged(f"HTTP {status} for a range of {self.request.label}", answer)
        if status != 206:
            raise _exchange.error_for(self.request, response)
        content_range = _exchange.content_range(response)
        if (
            content_range.start != start
            or content_range.total != self.size
            or content_range.end is None
            or content_range.end < start
        ):
            raise ObjectChanged(
                f"unexpected Content-Range {response.headers.get('Content-Range')!r}"
            )
        # Before a byte is written: a server that ignores If-Range sends the
        # new object's range with the new object's validators (SPEC §3.2).
        changed = _httputil.changed_validator(self.state.validators(), response.headers)
        if changed is not None:
            raise ObjectChanged(f"the object changed on the server ({changed})")
        return min(part.end, content_range.end)

    # -- the end ----------------------------------------------------------------

    def _verify_and_commit(self) -> None:
        if any(p.missing for p in self.parts):
            raise DownloadError(f"{self.request.label}: ranges still missing")
        self.lock.check_held()  # no commit by a download whose lock was taken over
        verifier = None if self._crcs is None else self._crcs.verifier()
        _exchange.verify_and_commit(self.request, self.part, self.state, verifier)


def _first_cause(errors: list[BaseException]) -> BaseException:
    """The error to raise: a restart first, then the first real one.

    The ``200`` answers that other ranges' errors hold are closed: one new
    download at most is made of them.
    """
    cause = _pick_cause(errors)
    for error in errors:
        if error is not cause and isinstance(error, ObjectChanged) and error.answer is not None:
            error.answer.close()
    return cause


def _pick_cause(errors: list[BaseException]) -> BaseException:
    for error in errors:
        if isinstance(error, ObjectChanged) and error.answer is not None:
            return error
    for error in errors:
        if isinstance(error, (ObjectChanged, PartVanished)):
            return error
    for error in errors:
        if not isinstance(error, (ConnectionFault, Stopped)):
            return error
    return errors[0]

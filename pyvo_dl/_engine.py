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
import stat
import time

from . import _exchange, _httputil, _integrity, _parallel
from ._errors import DownloadError, IntegrityError
from ._exchange import FetchRequest, log_and_print_for
from ._partfile import (
    ForeignFile,
    PartFile,
    PartState,
    PartVanished,
    StreamWriter,
    TargetLock,
    check_not_a_helper,
    foreign_file_error,
    open_special,
    prepare_target,
    special_kind,
    target_mode,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Mapping

    from ._integrity import Checksum, Verifier
    from ._transport import Response, Transport

__all__ = ["FetchRequest", "fetch"]

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
    mode = target_mode(request.target)  # one stat for all three questions
    special = special_kind(request.target, mode)
    if special is not None:
        return _DirectDownload(request, transport, special).run()
    prepare_target(request.target, mode)
    check_not_a_helper(request.target)
    lock = TargetLock(request.target)
    started = time.time()
    lock.acquire(
        on_wait=lambda path: log_and_print_for(
            request, f"Waiting for {path}, held by another download"
        )
    )
    try:
        if lock.waited and _finished_since(request.target, started):
            log_and_print_for(
                request, f"Found {request.target}, just downloaded by another process."
            )
            return request.target
        # Seen before the lock was taken; again only if the lock was waited for.
        present = os.path.isfile(request.target) if lock.waited else _is_file(mode)
        if request.cache and present and _cache_is_valid(request, transport):
            return request.target
        return _Download(request, transport, lock).run()
    finally:
        lock.release()


def _is_file(mode: int | None) -> bool:
    return mode is not None and stat.S_ISREG(mode)


def _warn_if_html(request: FetchRequest, headers: Mapping[str, str]) -> None:
    """Warn when an HTML page came for a data file name (an archive's error page, probably)."""
    content_type = (headers.get("Content-Type") or "").lower()
    if content_type.startswith("text/html") and request.target.lower().endswith(_DATA_SUFFIXES):
        _exchange.warn_caller(
            f"{request.url} answered with an HTML page for {request.target}; "
            "archives often report errors this way, check the file"
        )


def _finished_since(path: str, since: float) -> bool:
    try:
        return os.stat(path).st_mtime >= since - 1.0
    except OSError:
        return False


def _cache_is_valid(request: FetchRequest, transport: Transport) -> bool:
    info = _exchange.probe(request, transport)
    try:
        local = os.path.getsize(request.target)
    except OSError:
        return False  # removed since it was seen: download it
    if info.size is not None and info.size == local:
        log_and_print_for(request, f"Found cached file {request.target}.")
        return True
    if info.size is None:
        log_and_print_for(
            request,
            f"{request.url} gives no length: cannot validate {request.target}, downloading again",
        )
    else:
        _exchange.warn_caller(
            f"Found cached file {request.target} but it has the wrong size "
            f"({local} bytes, the server has {info.size}). Overwriting ..."
        )
    return False


def state_of(
    request: FetchRequest, headers: Mapping[str, str], total: int | None, url: str
) -> PartState:
    """What the answer with these headers says of the object: validators, size, checksums."""
    etag = headers.get("ETag")
    last_modified = headers.get("Last-Modified")
    validator = _httputil.strong_validator(etag, last_modified)
    if request.conditional == "if-match":
        validator = etag
    announce = request.server_checksums
    announced = announce(headers) if announce else []
    return PartState(
        identity=request.identity,
        url=url,
        validator=validator,
        etag=etag,
        size=total,
        last_modified=last_modified,
        checksums=[(c.algorithm, c.expected) for c in announced],
    )


def _in_memory(total: int | None) -> bool:
    """Whether a body of ``total`` bytes is read into memory before it is written."""
    return total is not None and total <= _exchange.BUFFER_SIZE


class _Restart(Exception):
    """The server's answer cannot continue the ``.part``: start again from byte 0."""


class _Download:
    """One streaming download into a ``.part``, with resume and retries."""

    def __init__(self, request: FetchRequest, transport: Transport, lock: TargetLock) -> None:
        self.request = request
        self.transport = transport
        self.lock = lock
        self.part = PartFile(request.target)
        #: The object being downloaded, once an answer (or a .part.json) told.
        self.state: PartState | None = None
        self.offset = 0
        self.verifier: Verifier | None = None
        self.sink: Any = None
        self.restarts = 0
        self.committed = False
        self.no_probe_range = False
        #: A body of at most one buffer, as it arrives (see _read_whole).
        self.memory: _exchange.MemorySink | None = None
        #: Whether a body read into memory was written as the .part (no state names it).
        self.wrote_whole = False
        #: A 200 that a range of a split resume got (the new object), to continue.
        self.new_object: Response | None = None

    # -- state --------------------------------------------------------------

    def _load_resumable(self) -> None:
        """Take up what an earlier call left beside the target, if it is pyvo_dl's to take.

        A ``.part`` is ours when a state file of ours names it; one of ours
        that does not validate is discarded, with a ``verbose`` note; a file
        of someone else's at either name refuses the target (docs/security.md).
        """
        if self.lock.took_over is not None:
            self._remove_stray_states()
        try:
            state = self.part.load_state()
            size = self.part.size_on_disk()
        except ForeignFile as foreign:
            raise foreign_file_error(self.request.target, foreign) from None
        if size is not None and not self.part.has_state:
            if self._left_by_a_killed_download(size):
                return
            unnamed = ForeignFile(self.part.path, "no state file of a download names it")
            raise foreign_file_error(self.request.target, unnamed)
        if self.part.problem is not None:
            log_and_print_for(
                self.request,
                f"Discarded {self.part.state_path}: {self.part.problem}; starting over",
            )
        if not self.part.has_state:
            return  # nothing to resume and nothing to clean: the usual case
        if (
            not self.request.resume
            or state is None
            or state.identity != self.request.identity
            or not state.validator
            or state.size is None
            or size is None
            or size > state.size
        ):
            self.part.discard()
            return
        self.state = state
        self.offset = size
        if size:
            log_and_print_for(
                self.request, f"Resuming {self.request.label} at byte {size} of {state.size}"
            )

    def _remove_stray_states(self) -> None:
        """Remove what the holder this lock was taken over from left of a state file it was writing."""
        holder = self.lock.took_over or {}
        for path in self.part.remove_stray_states():
            log_and_print_for(
                self.request,
                f"Removed {path}: a state file that a download (process {holder.get('pid')} "
                f"on {holder.get('host')}) was writing when it ended",
            )

    def _left_by_a_killed_download(self, size: int) -> bool:
        """Remove a stateless ``.part`` that a killed download wrote whole; whether it was.

        A body of at most one buffer has no state file: it is read into
        memory, written as the ``.part`` and moved onto the target at once.
        A download killed between those two steps leaves that ``.part`` and
        its lock; the lock of pyvo_dl's that this call took over from a
        holder that is gone, with a ``.part`` of at most that size, proves
        whose it was (docs/security.md).
        """
        holder = self.lock.took_over
        if holder is None or size > _exchange.BUFFER_SIZE:
            return False
        log_and_print_for(
            self.request,
            f"Removed {self.part.path}: the whole body of a download (process "
            f"{holder.get('pid')} on {holder.get('host')}) that ended before moving it into place",
        )
        self.part.discard()
        return True

    def _checksums(self) -> list[Checksum]:
        return _exchange.announced_checksums(self.request, self.state)

    def _ranged_headers(self) -> dict[str, str]:
        if self.offset == 0 or self.state is None:
            return {}
        return _exchange.conditional_range(self.request, self.state, self.offset)

    def _restart_without(self, vanished: PartVanished) -> None:
        """The ``.part`` being continued is gone: start again, if this is still our download.

        Gone while this process waited (a 503's Retry-After, a suspended
        process): another that took the lock over may have finished it. The
        lock says whether the target is still ours; a ``.part`` replaced by
        another file is not ours to remove.
        """
        self.lock.check_held()  # raises if another process took the lock over
        if vanished.replaced:
            raise DownloadError(
                f"{vanished}: it is not this download's any more, and was left alone; "
                f"nothing was moved onto {self.request.target}"
            )
        self._restart_from_zero(str(vanished))

    def _restart_from_zero(self, why: str) -> None:
        self.restarts += 1
        if self.restarts > self.request.retries + 1:
            raise DownloadError(
                f"{self.request.label} keeps changing on the server ({why}); giving up"
            )
        log_and_print_for(self.request, f"Restarting {self.request.label} from byte 0: {why}")
        self.part.discard()
        self.state = None
        self.offset = 0
        self.verifier = None
        self.memory = None
        self.wrote_whole = False

    # -- answers ------------------------------------------------------------

    def _new_state(self, headers: Mapping[str, str], total: int | None, url: str) -> PartState:
        """Start over on the object these headers describe."""
        self.state = state_of(self.request, headers, total, url)
        return self.state

    def _record_new_object(self, response: Response, total: int | None) -> PartState:
        state = self._new_state(response.headers, total, response.url)
        # The state file is written before any .part it describes: it is what
        # makes that .part pyvo_dl's (docs/security.md), resumable or not. A
        # body that fits in one buffer needs none: it is read into memory and
        # written whole (_read_whole), so no .part of it waits on the network.
        if not _in_memory(total):
            self.part.save_state(state)
        _warn_if_html(self.request, response.headers)
        return state

    def _accept(self, response: Response) -> int:
        """Where to write this answer's body, or raise :class:`_Restart`.

        A ``206`` continues the ``.part`` only if it starts at the byte
        asked, for the size recorded, and repeats every validator recorded
        (SPEC §3.2: servers that ignore ``If-Range`` answer with the new
        object's); all is checked before a byte is written. A ``200`` to a
        resume (``If-Range`` failed: nginx, Apache) is the new object whole,
        and becomes the download.
        """
        if response.status == 200:
            if self.offset:
                self._restart_from_zero("the server sent the whole object (it changed)")
            self._record_new_object(response, _exchange.length_of(response))
            return 0
        content_range = _exchange.content_range(response)
        if (
            not self.offset
            or self.state is None
            or content_range.start != self.offset
            or content_range.total != self.state.size
        ):
            response.close()
            raise _Restart(f"unexpected Content-Range {response.headers.get('Content-Range')!r}")
        changed = _httputil.changed_validator(self.state.validators(), response.headers)
        if changed is not None:
            response.close()
            raise _Restart(f"the object changed on the server ({changed})")
        return self.offset

    def _complete_by_416(self, response: Response) -> bool:
        total = _exchange.content_range(response).total
        _exchange.drain(response)
        size = None if self.state is None else self.state.size
        return bool(self.offset) and total == self.offset == size

    # -- parallel ranges ------------------------------------------------------

    def _splitting(self) -> bool:
        """Whether the answer to the first request may be split, once its size is known.

        One request either way: a small object comes whole in the answer,
        a large one tells its size and validator, and is then split. The
        request asks for the first part only (``Range``), or for the whole
        object (``whole_first``: S3, whose checksums come only then).
        """
        connections = self.request.connections or 1
        return connections > 1 and not self.offset and not self.no_probe_range

    def _first_headers(self, splitting: bool) -> dict[str, str]:
        if not splitting:
            return self._ranged_headers()
        if self.request.whole_first:
            return {}
        return {"Range": _httputil.format_range(0, _parallel.FIRST_PART - 1)}

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
        state = self._record_new_object(response, total)
        if content_range.end is not None and content_range.end + 1 >= total:
            self._stream(response, 0)  # the whole object
            return
        connections = self.request.connections or 1
        if _parallel.can_split(total, state.validator, connections):
            state.parts = _parallel.plan_parts(total, connections)
            self._run_parallel(state, response)
            return
        response.close()
        self.no_probe_range = True
        raise _Restart("the object cannot be fetched in ranges (no validator): asking for it whole")

    def _split_whole(self, response: Response) -> None:
        """Continue a ``200`` answer with the whole object: split it, or stream it.

        The answer to a first GET of the whole object (S3), or the ``200``
        that a range of a split resume got (the object changed).

        A large object is split into equal ranges; the first is the start of
        this answer's body, whose connection is closed once that range is
        read (the rest of the body is not wanted). A smaller one, or one
        without a validator, is this answer.
        """
        total = _exchange.length_of(response)
        state = self._record_new_object(response, total)
        connections = self.request.connections or 1
        if total is not None and _parallel.can_split(total, state.validator, connections):
            state.parts = _parallel.plan_parts(total, connections)
            self._run_parallel(state, response)
            return
        self._stream(response, 0)

    def _run_parallel(self, state: PartState, first_answer: Response | None = None) -> None:
        """Fetch the missing ranges of the part map, then verify and commit."""
        download = _parallel.ParallelDownload(self.request, self.transport, self.lock, state)
        download.run(first_answer)
        self.committed = True

    # -- the loop -----------------------------------------------------------

    def run(self) -> str:
        """Download, verify and commit; return the target path."""
        self._load_resumable()
        try:
            _exchange.retrying(self.request, self._until_complete, progress=self._resume_point)
            if not self.committed:
                self._verify_and_commit()
        except BaseException:
            if self.wrote_whole and not self.committed:
                self.part.discard()  # ours, and refused or not moved: nothing to resume
            else:
                self._keep_for_resume()
            if self.sink is not None:
                self.sink.finish(False)
            raise
        if self.sink is not None:
            self.sink.finish(True)
        return self.request.target

    def _until_complete(self) -> None:
        """Attempts until the body is complete on disk; a restart from byte 0 is no retry.

        An object that changed (or a server that ignores the range) starts
        the file again at once; :meth:`_restart_from_zero` bounds how often.
        """
        while True:
            try:
                self._attempt()
                return
            except (_Restart, _parallel.ObjectChanged) as restart:
                answer = getattr(restart, "answer", None)
                try:
                    self._restart_from_zero(str(restart))
                except BaseException:
                    if answer is not None:
                        answer.close()
                    raise
                self.new_object = answer
            except PartVanished as vanished:
                self._restart_without(vanished)

    def _keep_for_resume(self) -> None:
        """On the way out of a failed call, write what a small body got, for the next to resume.

        A body read into memory (:meth:`_read_whole`) has nothing on disk: its
        state, then its bytes, are written now, so that a call that fails
        (or is interrupted) part-way costs the next one only the rest.
        """
        state, memory = self.state, self.memory
        if memory is None or not memory.size or self.wrote_whole:
            return
        if state is None or not (self.request.resume and state.validator) or state.size is None:
            return
        try:
            self.part.save_state(state)
            self.part.write_new(memory.getvalue())
        except DownloadError:
            pass  # the original error matters more; the next call starts over

    def _resume_point(self) -> int:
        """Where the next try starts: the bytes kept (in memory or on disk), if resumable, else 0."""
        state = self.state
        resumable = state is not None and bool(state.validator) and state.size is not None
        if resumable and self.offset:
            self.offset = self.memory.size if self.memory is not None else self.part.size()
        else:
            self.offset = 0  # nothing kept to resume from: no stat of the .part
        if not resumable:
            self.verifier = None
            self.memory = None
        return self.offset

    def _attempt(self) -> None:
        """One request; returns when the body is complete on disk (or committed)."""
        answer, self.new_object = self.new_object, None
        if answer is not None:
            # A 200 to a range of a split resume: the new object whole, kept.
            try:
                self._split_whole(answer)
            except BaseException:
                answer.close()
                raise
            return
        if self.state is not None and self.state.parts:
            self._run_parallel(self.state)  # an earlier parallel run left its map: finish it
            return
        splitting = self._splitting()
        headers = self._first_headers(splitting)
        response = _exchange.open_url(self.request, self.transport, "GET", headers)
        try:
            self._answer(response, splitting)
        except BaseException:
            # Whatever stopped this answer (Ctrl-C included) ends its connection;
            # closing one already released or closed does nothing.
            response.close()
            raise

    def _answer(self, response: Response, splitting: bool) -> None:
        """Act on the answer to this attempt's request (see :meth:`_attempt`)."""
        status = response.status
        if status == 416 and splitting:
            # An empty object has no byte 0 to range over: ask plainly.
            _exchange.drain(response)
            self.no_probe_range = True
            raise _Restart("the object is empty")
        if splitting and status == 206:
            self._split_or_stream(response)
            return
        if splitting and status == 200 and self.request.whole_first:
            self._split_whole(response)
            return
        if status == 416 and self.offset:
            if self._complete_by_416(response):
                return
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
        total = None if self.state is None else self.state.size
        if self.sink is None:
            self.sink = _exchange.make_sink(self.request)
        # Again on every try: a restart (new object, new size) or a resume
        # moves the starting point, and sinks count from it (SPEC §4).
        self.sink.start(total, start)
        checksums = self._checksums()
        if start == 0 and _in_memory(total):
            self.memory = _exchange.MemorySink(total or 0, self.request.url)
        if checksums and (self.verifier is None or start == 0):
            self.verifier = _integrity.Verifier(checksums)
            if start and self.memory is not None:
                self.verifier.update(self.memory.getvalue())
            elif start:
                _exchange.hash_prefix(self.verifier, self.part.path, start)
        self.offset = start
        if self.memory is not None:
            self._read_whole(response, total or 0, start)
            return
        writer = self.part.open_at(start)
        try:
            # Never past the known size: a body that goes on (a chunked
            # answer that never ends) is cut there and its connection dropped.
            length = None if total is None else total - start
            _exchange.read_body(response, writer, length, self._moved, self.verifier)
        finally:
            writer.close()

    def _read_whole(self, response: Response, total: int, start: int) -> None:
        """A body of at most one buffer: into memory (a retry continues it), then a new ``.part``."""
        assert self.memory is not None
        _exchange.read_body(response, self.memory, total - start, self._moved, self.verifier)
        self.wrote_whole = True
        self.part.write_new(self.memory.getvalue())

    def _moved(self, n: int) -> None:
        self.offset += n
        self.sink.update(self.offset)
        self.lock.refresh()

    def _verify_and_commit(self) -> None:
        assert self.state is not None  # an answer came before any body did
        self.lock.check_held()  # no commit by a download whose lock was taken over
        _exchange.verify_and_commit(self.request, self.part, self.state, self.verifier)


class _DirectDownload:
    """A target that is a FIFO or a character device (``-o /dev/null``), written as it arrives.

    No ``.part``, no rename, no lock, no cache check: the bytes go straight
    to the target, through the same request, retry and body loops as any
    download. A retry continues the stream from the byte reached (``Range``
    with the validators, which every ``206`` must repeat); what cannot be
    continued (a ``200``, another object) is an error, since what was
    written cannot be taken back. Checksums are checked at the end, when
    the bytes are already out.
    """

    def __init__(self, request: FetchRequest, transport: Transport, kind: str) -> None:
        self.request = request
        self.transport = transport
        self.kind = kind
        self.state: PartState | None = None
        self.writer: StreamWriter | None = None
        self.verifier: Verifier | None = None
        self.sink: Any = None

    def run(self) -> str:
        """Download into the target; return its path."""
        ok = False
        self.sink = _exchange.make_sink(self.request)
        try:
            _exchange.retrying(self.request, self._attempt, progress=self._written)
            self._verify()
            ok = True
        finally:
            if self.writer is not None:
                self.writer.close()
            self.sink.finish(ok)
        log_and_print_for(
            self.request, f"Wrote {self._written()} bytes to {self.request.target} ({self.kind})"
        )
        return self.request.target

    def _written(self) -> int:
        return 0 if self.writer is None else self.writer.written

    def _attempt(self) -> None:
        written = self._written()
        headers = {}
        if written and self.state is not None:
            headers = _exchange.conditional_range(self.request, self.state, written)
        response = _exchange.open_url(self.request, self.transport, "GET", headers)
        try:
            self._check(response, written)
            self._body(response, written)
            response.release()
        except BaseException:
            response.close()
            raise

    def _check(self, response: Response, written: int) -> None:
        """Raise unless this answer continues the stream at byte ``written``."""
        status = response.status
        if _httputil.is_transient_status(status):
            raise _exchange.transient_status(self.request, response)
        if status not in (200, 206):
            raise _exchange.error_for(self.request, response)
        if not written:
            self._record(response)
            return
        state = self.state
        assert state is not None
        content_range = _exchange.content_range(response)
        changed = _httputil.changed_validator(state.validators(), response.headers)
        if status != 206 or content_range.start != written or content_range.total != state.size:
            changed = changed or "the server cannot continue it from that byte"
        if changed is not None:
            raise DownloadError(
                f"{self.request.label}: {written} bytes went to {self.request.target} (a "
                f"{self.kind}) before the connection failed, and the rest cannot follow "
                f"them: {changed}; nothing more was written"
            )

    def _record(self, response: Response) -> None:
        total = _exchange.length_of(response)
        self.state = state_of(self.request, response.headers, total, response.url)
        checksums = _exchange.announced_checksums(self.request, self.state)
        self.verifier = _integrity.Verifier(checksums) if checksums else None

    def _body(self, response: Response, written: int) -> None:
        state = self.state
        assert state is not None
        if self.writer is None:
            # Opened at the first answer that is the file, as curl does: an
            # error from the server leaves the FIFO's reader waiting, not fed.
            self.writer = open_special(self.request.target, self.request.timeout)
        self.sink.start(state.size, written)
        length = None if state.size is None else state.size - written
        _exchange.read_body(response, self.writer, length, self._moved, self.verifier)

    def _moved(self, n: int) -> None:
        self.sink.update(self._written())

    def _verify(self) -> None:
        state, written = self.state, self._written()
        assert state is not None
        if state.size is not None and written != state.size:
            raise IntegrityError(
                self.request.label, self.request.target, "size", str(state.size), str(written)
            )
        if self.verifier is not None:
            error = _exchange.checksum_error(self.request, self.verifier)
            if error is not None:
                raise error

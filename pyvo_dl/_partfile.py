"""The files beside a target: ``.part`` data, ``.part.json`` state, ``.lock``.

Data is written to ``<target>.part`` and moved onto the target with
``os.replace`` only once verified (SPEC §3.1). Beside it, ``<target>.part.json``
records what a later call needs to resume safely (§3.2): the URL, the
validator (ETag or Last-Modified), the total size and the checksums learnt
from the server. ``<target>.lock``, made with ``O_CREAT | O_EXCL`` and
holding host, PID and a token, keeps two processes from writing one target
(§3.8); it works on NFS and Lustre, where ``fcntl`` locks may not. A
heartbeat thread touches the locks a process holds; a lock whose holder is
gone (dead, a zombie, a reused PID, or a heartbeat stopped on another host:
:func:`_abandoned`) is broken by one process at a time, the one that
creates ``<target>.lock.break`` (also with ``O_EXCL``). When the process is
being stopped (:func:`interrupt`), every holder stops at its next chunk.

This is the module that translates local ``OSError`` into
:class:`~pyvo_dl.DownloadError`, keeping ``errno`` and ``filename``.
"""

from __future__ import annotations

import _thread
import errno
import itertools
import json
import os
import time
from dataclasses import dataclass, field
from socket import gethostname

from ._errors import DownloadError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

#: Seconds between two touches of a held lock by its holder's heartbeat.
LOCK_HEARTBEAT = 5.0
#: A lock whose heartbeat stopped this long ago is abandoned, where its
#: holder cannot be checked otherwise (another host; no ``/proc``).
LOCK_STALE_AFTER = 30.0
#: ... and only once a waiter has itself seen it stand still this long
#: (another host's lock: proof against clocks that disagree).
LOCK_OBSERVE = 2 * LOCK_HEARTBEAT
#: Locks written by an older pyvo_dl (no start time, refreshed only while
#: data arrived) keep the rule they were written under.
LOCK_LEGACY_STALE_AFTER = 120.0
#: A waiter gives up (DownloadError naming the holder) when the holder's
#: ``.part`` has not changed for this long.
LOCK_WAIT_LIMIT = 600.0
LOCK_POLL_INTERVAL = 0.2

_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
#: Unique names for files moved aside, within this process.
_ASIDE_NUMBERS = itertools.count()
#: A symbolic link planted where a .part or a state file goes (in a folder
#: others can write to) would make the download write wherever it points.
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def disk_error(exc: OSError, path: str, action: str) -> DownloadError:
    """A :class:`DownloadError` for a local file problem, naming the path."""
    if exc.errno in _DISK_FULL:
        why = "the disk is full (or a quota or file size limit was reached)"
        hint = "free some space and call again: what was written is kept and resumed"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = "permission denied"
        hint = "choose a folder you can write to (local_filepath=)"
    elif exc.errno == errno.EISDIR:
        why = "it is a folder"
        hint = "give a file path, for example os.path.join(folder, name)"
    elif exc.errno == errno.ELOOP:
        why = "it is a symbolic link, which a download never writes through"
        hint = "remove it; and check who else can write to this folder"
    else:
        why = exc.strerror or str(exc)
        hint = ""
    message = f"cannot {action} {path}: {why}"
    if hint:
        message += f"; {hint}"
    return DownloadError(message, exc.errno, path)


def prepare_target(path: str) -> None:
    """Check that ``path`` can be a file and create its missing parent folders.

    Raises
    ------
    DownloadError
        When ``path`` is a folder or its folder cannot be created.
    """
    if os.path.isdir(path):
        raise disk_error(IsADirectoryError(errno.EISDIR, "Is a directory"), path, "write to")
    parent = os.path.dirname(path)
    if not parent or os.path.isdir(parent):
        return  # the usual case, one stat: many small files pass here
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as exc:
        raise disk_error(exc, parent, "create the folder") from exc


@dataclass
class PartRange:
    """One range of a parallel download: ``start`` to ``end`` (inclusive), ``done`` bytes in.

    In ``.part.json`` as ``[start, end, done]``.
    """

    start: int
    end: int
    done: int = 0

    @property
    def next_byte(self) -> int:
        """The first byte still missing."""
        return self.start + self.done

    @property
    def missing(self) -> bool:
        """Whether bytes of the range are still missing."""
        return self.start + self.done <= self.end


@dataclass
class PartState:
    """What a ``.part`` was made from: enough for a later call to resume it safely (SPEC §3.2).

    Written to ``<target>.part.json`` as a JSON object with these names
    (``checksums`` as ``[algorithm, hex]`` pairs, ``parts`` as
    :class:`PartRange` triples).

    Attributes
    ----------
    identity : str
        The URL or ``s3://bucket/key`` the download was asked for.
    url : str
        Where the bytes came from (after redirects).
    validator : str or None
        What ``If-Range`` (S3: ``If-Match``) sends: a strong ETag or a date.
    etag : str or None
        The ETag as the server sent it.
    size : int or None
        The object's length.
    last_modified : str or None
        The ``Last-Modified`` date as the server sent it. With ``etag``,
        what every later ``206`` must repeat (:meth:`validators`).
    checksums : list of (str, str)
        ``(algorithm, hex)`` the server announced (S3's ETag, x-amz-checksum-*).
    parts : list of PartRange
        The ranges of a parallel download; empty for one stream.
    """

    identity: str
    url: str
    validator: str | None
    etag: str | None
    size: int | None
    last_modified: str | None = None
    checksums: list[tuple[str, str]] = field(default_factory=list)
    parts: list[PartRange] = field(default_factory=list)

    def to_json(self) -> str:
        """The JSON text of ``.part.json``."""
        fields = {
            "identity": self.identity, "url": self.url, "validator": self.validator,
            "etag": self.etag, "size": self.size, "last_modified": self.last_modified,
            "checksums": [list(c) for c in self.checksums],
            "parts": [[p.start, p.end, p.done] for p in self.parts],
        }  # fmt: skip
        return json.dumps(fields)

    @classmethod
    def from_json(cls, data: Any) -> PartState | None:
        """The state a ``.part.json`` holds; None when it is not one (torn, edited, older)."""
        try:
            state = cls(
                identity=_typed(data["identity"], str),
                url=_typed(data["url"], str),
                validator=_typed(data["validator"], str, None),
                etag=_typed(data["etag"], str, None),
                size=_typed(data["size"], int, None),
                last_modified=_typed(data.get("last_modified"), str, None),
                checksums=[(_typed(a, str), _typed(h, str)) for a, h in data.get("checksums", [])],
                parts=[
                    PartRange(_typed(s, int), _typed(e, int), _typed(d, int))
                    for s, e, d in data.get("parts", [])
                ],
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            return None
        return state

    def validators(self) -> dict[str, str | None]:
        """``ETag`` and ``Last-Modified`` as recorded: what a ``206`` must repeat (SPEC §3.2)."""
        return {"ETag": self.etag, "Last-Modified": self.last_modified}


def _typed(value: Any, kind: type, *optional: None) -> Any:
    """``value`` if it is a ``kind`` (bool is no int here), or None when allowed; else TypeError."""
    if value is None and optional:
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise TypeError(f"{value!r} is not a {kind.__name__}")
    return value


class PartFile:
    """The ``.part`` file of a target and its ``.part.json`` state.

    Parameters
    ----------
    target : str
        The path where the complete file will be.
    """

    def __init__(self, target: str) -> None:
        self.target = target
        self.path = target + ".part"
        self.state_path = target + ".part.json"
        #: Whether a state file may exist (loaded or saved by this object).
        self.has_state = False

    def size(self) -> int:
        """Bytes in the ``.part`` file, 0 when there is none."""
        try:
            return os.stat(self.path).st_size
        except FileNotFoundError:
            return 0

    def load_state(self) -> PartState | None:
        """The recorded state, or ``None`` when there is none or it is unreadable."""
        data = _read_json(self.state_path)
        self.has_state = data is not None
        return None if data is None else PartState.from_json(data)

    def save_state(self, state: PartState) -> None:
        """Record ``state`` atomically (write aside, then replace)."""
        tmp = f"{self.state_path}.{os.getpid()}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _NOFOLLOW
        try:
            with os.fdopen(os.open(tmp, flags, 0o666), "w", encoding="utf-8") as f:
                f.write(state.to_json())
            os.replace(tmp, self.state_path)
            self.has_state = True
        except OSError as exc:
            _remove(tmp)
            raise disk_error(exc, self.state_path, "write") from exc

    def open_at(self, offset: int) -> Writer:
        """Open the ``.part`` for writing from ``offset`` on (cut there: what follows is stale)."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | _NOFOLLOW, 0o666)
        except OSError as exc:
            raise disk_error(exc, self.path, "create") from exc
        try:
            # Only when needed: truncating a file (even a new, empty one)
            # makes ext4 flush all of it to disk when it is closed.
            if os.fstat(fd).st_size != offset:
                os.ftruncate(fd, offset)
            if _PWRITE is None:
                os.lseek(fd, offset, os.SEEK_SET)
        except OSError as exc:
            os.close(fd)
            raise disk_error(exc, self.path, "write") from exc
        return Writer(fd, offset, self.path)

    def open_preallocated(self, size: int) -> int:
        """Open (creating it if new) the ``.part`` of an object of ``size`` bytes; its fd.

        The space is reserved up front where the file system can: a full
        disk is an error now, not at 90 %; elsewhere a sparse file will do.
        Ranges are then written into it with :class:`Writer`.
        """
        fresh = not os.path.exists(self.path)
        try:
            # Never through a link planted in place of the .part.
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | _NOFOLLOW, 0o666)
        except OSError as exc:
            raise disk_error(exc, self.path, "create") from exc
        try:
            if fresh or os.fstat(fd).st_size != size:
                _preallocate(fd, size)
        except OSError as exc:
            os.close(fd)
            raise disk_error(exc, self.path, "allocate") from exc
        return fd

    def discard(self) -> None:
        """Remove the ``.part`` file and its state."""
        _remove(self.path)
        _remove(self.state_path)

    def commit(self) -> None:
        """Move the verified ``.part`` onto the target and drop the state."""
        try:
            os.replace(self.path, self.target)
        except OSError as exc:
            raise disk_error(exc, self.target, "move the finished download to") from exc
        if self.has_state:
            _remove(self.state_path)


#: os.pwrite: every POSIX system; elsewhere (Windows) a sequential writer seeks once.
_PWRITE = getattr(os, "pwrite", None)


class Writer:
    """Writes a body into a ``.part`` from ``position`` on: the disk end of the body loop.

    Parameters
    ----------
    fd : int
        Open for writing; several writers may share it (parallel ranges):
        each writes at its own position with ``os.pwrite``.
    position : int
        Where the next byte goes.
    path : str
        The ``.part``, for messages.
    """

    def __init__(self, fd: int, position: int, path: str) -> None:
        self.fd = fd
        self.position = position
        self.path = path

    def write(self, chunk: memoryview) -> None:
        """Write all of ``chunk`` at the current position and move past it.

        Raises
        ------
        DownloadError
            Naming the ``.part`` (a full disk keeps ``errno``).
        """
        fd, position = self.fd, self.position
        try:
            while chunk:
                if _PWRITE is not None:
                    written = _PWRITE(fd, chunk, position)
                else:
                    written = os.write(fd, chunk)
                chunk = chunk[written:]
                position += written
        except OSError as exc:
            raise disk_error(exc, self.path, "write") from exc
        finally:
            self.position = position

    def close(self) -> None:
        """Close the file (a writer that shares its fd leaves that to the owner)."""
        os.close(self.fd)


def _preallocate(fd: int, size: int) -> None:
    fallocate = getattr(os, "posix_fallocate", None)
    if fallocate is not None:
        try:
            fallocate(fd, 0, size)
            return
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # not supported here
                raise
    os.ftruncate(fd, size)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        pass  # best effort: a leftover sidecar is harmless, the data is safe


# -- the process as a lock holder ---------------------------------------------------

_HOLDER: tuple[int, str, str, str | None] | None = None


def _holder() -> tuple[int, str, str, str | None]:
    """This process as a lock holder, found once per process.

    ``(pid, host, "host:pid", its start from /proc or None)``:
    getpid is a system call; a forked child forgets the parent's answer
    (os.register_at_fork below) instead of asking at every lock.
    """
    global _HOLDER
    if _HOLDER is None:
        pid = os.getpid()
        host = gethostname()
        stat = _proc_stat(pid)
        _HOLDER = (pid, host, f"{host}:{pid}", stat[1] if stat is not None else None)
    return _HOLDER


_BOOT_ID: list[str] = []


def _boot_id() -> str:
    """This boot's id: a start time in clock ticks means nothing across a reboot."""
    if not _BOOT_ID:
        try:
            with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
                _BOOT_ID.append(f.read().strip())
        except OSError:
            _BOOT_ID.append("")
    return _BOOT_ID[0]


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """A process's state letter and start (``boot:ticks``) from ``/proc``; None without one.

    The start time tells a process from a later one that got the same PID;
    the state tells a zombie (``Z``: dead, not yet reaped, yet ``kill(pid,
    0)`` succeeds) from a live process.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
        # The command name (field 2) is in parentheses and may hold anything.
        fields = raw[raw.rindex(b")") + 2 :].split()
        return fields[0].decode("ascii"), f"{_boot_id()}:{fields[19].decode('ascii')}"
    except (OSError, ValueError, IndexError):
        return None


_HAS_PROC: list[bool] = []


def _has_proc() -> bool:
    """Whether this system describes its processes in ``/proc`` (Linux)."""
    if not _HAS_PROC:
        _HAS_PROC.append(_proc_stat(os.getpid()) is not None)
    return _HAS_PROC[0]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return True
    return True


# -- stopping: a signal, and the locks that notice it -------------------------------


class Interrupted(BaseException):
    """The process is being stopped (SIGTERM, Ctrl-C): a download under way ends now.

    Raised in every thread that holds a lock, at its next chunk (or in its
    next wait), so that each download unwinds as on any failure: its
    ``.part`` and state kept for the next call, its lock released. A
    ``BaseException``, as ``KeyboardInterrupt`` is: nothing that catches a
    download's failures (``except Exception``) may swallow it.
    """


_STOPPING: list[str] = []


def interrupt(reason: str) -> None:
    """Make every download of this process stop at its next chunk or wait."""
    if not _STOPPING:
        _STOPPING.append(reason)


def clear_interrupt() -> None:
    """Let downloads run again (the interrupted call has ended)."""
    _STOPPING.clear()


def check_interrupt() -> None:
    """Raise :class:`Interrupted` if the process is being stopped."""
    if _STOPPING:
        raise Interrupted(_STOPPING[0])


def pause(seconds: float) -> None:
    """``time.sleep(seconds)`` (a retry's backoff) that a stop cuts short."""
    end = time.monotonic() + seconds
    while True:
        check_interrupt()
        left = end - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.1))


# -- the heartbeat ------------------------------------------------------------------

#: The locks this process holds, by id; the heartbeat touches each.
_HELD: dict[int, TargetLock] = {}
_HELD_LOCK = _thread.allocate_lock()
_BEATING: list[bool] = []


def _hold(lock: TargetLock) -> None:
    with _HELD_LOCK:
        _HELD[id(lock)] = lock
        if not _BEATING:
            _BEATING.append(True)
            # A bare _thread, not threading.Thread: threading (with the
            # functools and collections it imports) costs 3.7 ms here, a
            # tenth of a small file's first download.
            _thread.start_new_thread(_beat, ())


def _let_go(lock: TargetLock) -> None:
    with _HELD_LOCK:
        _HELD.pop(id(lock), None)


def held_locks() -> list[str]:
    """The paths of the locks this process holds (what its heartbeat keeps fresh)."""
    with _HELD_LOCK:
        return [lock.path for lock in _HELD.values()]


def _beat() -> None:
    """Touch every held lock every ``LOCK_HEARTBEAT`` seconds; end when none is left."""
    last = time.monotonic()
    while True:
        # Short naps: a changed LOCK_HEARTBEAT (a test's) applies within one.
        time.sleep(min(LOCK_HEARTBEAT, 1.0))
        with _HELD_LOCK:
            locks = list(_HELD.values())
            if not locks:
                _BEATING.clear()
                return
        if time.monotonic() - last >= LOCK_HEARTBEAT:
            last = time.monotonic()
            for lock in locks:
                lock.heartbeat()


def _after_fork_in_child() -> None:
    # A forked child holds none of its parent's locks (their downloads run
    # in threads the child does not have) and has no heartbeat thread;
    # a lock held by another thread at the fork would never be released.
    global _HOLDER, _HELD_LOCK
    _HOLDER = None
    _HELD_LOCK = _thread.allocate_lock()
    _HELD.clear()
    _BEATING.clear()
    _STOPPING.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# -- the lock -----------------------------------------------------------------------


class TargetLock:
    """An inter-process lock on one target, as a ``<target>.lock`` file.

    The file holds the holder's host, PID, process start time and a token;
    while it is held, the holder's heartbeat thread touches it every
    :data:`LOCK_HEARTBEAT` seconds. A waiter takes it over when its holder
    is gone (:func:`_abandoned` has the rules) and gives up with a
    :class:`DownloadError` naming the lock and its holder when the holder's
    ``.part`` has not moved for :data:`LOCK_WAIT_LIMIT` seconds.

    Parameters
    ----------
    target : str
        The path whose download is guarded.
    clock : callable, optional
        Seconds since the epoch (``time.time``), injectable for tests.
    """

    def __init__(self, target: str, clock: Callable[[], float] = time.time) -> None:
        self.path = target + ".lock"
        self._clock = clock
        self._token = f"{_holder()[2]}:{id(self)}:{clock()}"
        self._held = False
        self._owner = 0
        self._inode = -1
        self.waited = False
        #: Set by the heartbeat when the file is no longer this lock's (it was
        #: broken as stale while this process was suspended, say).
        self.lost = False
        #: (token, mtime) of another host's lock and when this waiter first saw it.
        self._seen: tuple[Any, float, float] | None = None

    def _content(self) -> str:
        pid, host, _, started = _holder()
        content: dict[str, Any] = {"host": host, "pid": pid}
        if started is not None:
            content["started"] = started
        content["token"] = self._token
        return json.dumps(content)

    def try_acquire(self) -> bool:
        """Take the lock if it is free (or stale); return whether it was taken."""
        # A stale lock (its process is gone) is broken and taken at once.
        return self._create() or (self._break_if_stale() and self._create())

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        except OSError as exc:
            raise disk_error(exc, self.path, "create the lock file") from exc
        try:
            os.write(fd, self._content().encode())
            self._inode = os.fstat(fd).st_ino
        except OSError as exc:
            _remove(self.path)  # a full disk, say: no lock with nobody in it
            raise disk_error(exc, self.path, "write the lock file") from exc
        finally:
            os.close(fd)
        self._held = True
        self._owner = _holder()[0]
        _hold(self)
        return True

    def acquire(
        self,
        on_wait: Callable[[str], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Wait until the lock is taken, reporting once through ``on_wait``.

        Raises
        ------
        DownloadError
            Naming the lock and its holder, when the holder's ``.part`` has
            not changed for :data:`LOCK_WAIT_LIMIT` seconds.
        Interrupted
            When the process is being stopped.
        """
        watch = _Watch(self.path[: -len(".lock")])
        while not self.try_acquire():
            check_interrupt()
            if watch.stalled_for() > LOCK_WAIT_LIMIT:
                raise self._wait_error()
            if not self.waited and on_wait is not None:
                on_wait(self.path)
            self.waited = True
            sleep(LOCK_POLL_INTERVAL)

    def _wait_error(self) -> DownloadError:
        found = _read_lock(self.path)
        data = found[0] if found is not None else None
        holder = "an unknown holder"
        if data is not None:
            holder = f"process {data.get('pid')} on host {data.get('host')}"
        target = self.path[: -len(".lock")]
        return DownloadError(
            f"gave up waiting for {self.path}: {target} is being downloaded by {holder}, "
            f"whose {target}.part has not changed for {LOCK_WAIT_LIMIT:g} s; if that "
            f"process is stuck, stop it (or remove {self.path} once it is gone) and call again"
        )

    def refresh(self, now: float = 0.0) -> None:
        """Called by the holder as data arrives: stop here if the download must.

        The heartbeat keeps the lock fresh; what the holder checks at each
        chunk is whether the process is being stopped (:func:`interrupt`)
        or the lock was lost.

        Raises
        ------
        Interrupted
            When the process is being stopped.
        DownloadError
            When the lock is no longer this process's.
        """
        check_interrupt()
        if self.lost:
            raise DownloadError(
                f"lost the lock {self.path}: another process took it over as abandoned "
                f"(its heartbeat had stopped for over {LOCK_STALE_AFTER:g} s: was this "
                "process suspended?); this download stops so that two never write one file"
            )

    def heartbeat(self) -> None:
        """Touch the lock file (the heartbeat thread calls this), noticing if it was lost."""
        if not self._held or self.lost:
            return
        # The token, not the inode: a lock removed and made again by another
        # process may get the freed inode number back at once.
        found = _read_lock(self.path)
        if found is None or _token(found) != self._token:
            self.lost = found is not None or not os.path.lexists(self.path)
            return
        try:
            os.utime(self.path)
        except OSError:
            pass  # a passing NFS hiccup: the next beat tries again

    def release(self) -> None:
        """Give the lock back (only if this object holds it, in this process)."""
        if not self._held:
            return
        self._held = False
        _let_go(self)
        if self._owner != _holder()[0] or self.lost:
            return  # a forked child's copy (the lock is its parent's), or another's now
        # Still ours (not broken as stale and retaken meanwhile)? The same
        # inode says so with one stat instead of reading it back.
        try:
            if os.stat(self.path).st_ino == self._inode:
                _remove(self.path)
        except OSError:
            pass

    def _is_stale(self, found: tuple[dict[str, Any] | None, float] | None) -> bool:
        return found is not None and _abandoned(found, self._clock, self._observed)

    def _observed(self, token: Any, mtime: float) -> float:
        """Seconds this waiter has seen another host's lock unchanged (``token``, ``mtime``)."""
        now = time.monotonic()
        if self._seen is None or self._seen[:2] != (token, mtime):
            self._seen = (token, mtime, now)
        return now - self._seen[2]

    def _break_if_stale(self) -> bool:
        """Remove the lock if its holder is gone; whether it was removed.

        Breakers take turns: only the one that creates ``<target>.lock.break``
        (with ``O_EXCL`` too) may remove the lock, after checking during its
        turn that the lock is still the abandoned one it read. Without turns a
        breaker could move aside a lock that another process had just taken
        while a third took the free path: two holders writing one ``.part``,
        or a lock left behind with the token of one that had let go.
        """
        found = _read_lock(self.path)
        if not self._is_stale(found):
            return False
        turn = self.path + ".break"
        if not self._take_turn(turn):
            return False
        try:
            current = _read_lock(self.path)
            if _token(current) != _token(found) or not self._is_stale(current):
                return False  # broken and taken again since it was read
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                return False
            return True
        finally:
            _remove(turn)

    def _take_turn(self, turn: str) -> bool:
        try:
            fd = os.open(turn, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            # Another breaker's turn, or the turn of one killed during it (a
            # window of microseconds): clear that for the next poll.
            _remove_if_abandoned(turn, self._clock)
            return False
        except OSError as exc:
            raise disk_error(exc, turn, "create the lock file") from exc
        with os.fdopen(fd, "w") as f:
            f.write(self._content())
        return True


class _Watch:
    """Whether the download a waiter waits for moves: its lock's owner, its ``.part``."""

    def __init__(self, target: str) -> None:
        self._target = target
        self._last = self._signature()
        self._since = time.monotonic()

    def _signature(self) -> tuple[Any, ...]:
        marks: list[Any] = []
        for suffix in (".lock", ".part", ".part.json"):
            try:
                st = os.stat(self._target + suffix)
            except OSError:
                marks.append(None)
                continue
            # The lock's mtime is its heartbeat, not progress: its inode only.
            marks.append(st.st_ino if suffix == ".lock" else (st.st_size, st.st_mtime_ns))
        return tuple(marks)

    def stalled_for(self) -> float:
        """Seconds since anything changed."""
        now = time.monotonic()
        signature = self._signature()
        if signature != self._last:
            self._last, self._since = signature, now
        return now - self._since


def _token(found: tuple[dict[str, Any] | None, float] | None) -> Any:
    data = found[0] if found is not None else None
    return None if data is None else data.get("token")


def _read_lock(path: str) -> tuple[dict[str, Any] | None, float] | None:
    """A lock file's content (None if torn or empty) and mtime; None when there is none.

    Opened before its mtime is taken: on NFS, opening revalidates a file's
    cached attributes (close-to-open consistency), so another host's
    heartbeat is seen.
    """
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError:
        # A link planted as the lock: judged by the link itself.
        try:
            return None, os.lstat(path).st_mtime
        except OSError:
            return None
    try:
        mtime = os.fstat(fd).st_mtime
        raw = _read_all(fd)
    except OSError:
        return None
    finally:
        os.close(fd)
    return _parse_json(raw), mtime


def _abandoned(
    found: tuple[dict[str, Any] | None, float],
    clock: Callable[[], float],
    observed: Callable[[Any, float], float] | None = None,
) -> bool:
    """Whether the holder that wrote a lock (or a breaker's turn) is gone.

    - On this host, with ``/proc`` (Linux): gone when its PID is not
      there, is a zombie (``Z``: dead, not yet reaped by its parent), or
      has another start time than the one the lock recorded (the PID now
      belongs to a later process). A live holder is never taken over,
      even if suspended. A lock without a start time (written by an older
      pyvo_dl) is also gone once not touched for ``LOCK_LEGACY_STALE_AFTER``.
    - On this host without ``/proc``: gone when ``kill(pid, 0)`` finds no
      process, or the heartbeat stopped ``LOCK_STALE_AFTER`` ago.
    - On another host: gone when the heartbeat stopped ``LOCK_STALE_AFTER``
      ago by this host's clock, and this waiter has itself seen it stand
      still for ``LOCK_OBSERVE`` seconds (``observed``), so that a clock
      that differs between the hosts cannot break a live lock.
    """
    data, mtime = found
    age = clock() - mtime
    if data is None:
        # Empty or torn: a holder writes its content right after creating
        # the file, so only an old one is abandoned.
        return age > LOCK_STALE_AFTER
    if data.get("host") != gethostname():
        still = observed(data.get("token"), mtime) if observed is not None else LOCK_OBSERVE
        return age > LOCK_STALE_AFTER and still >= LOCK_OBSERVE
    pid = data.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return age > LOCK_STALE_AFTER
    if not _has_proc():
        return not _pid_alive(pid) or age > LOCK_STALE_AFTER
    stat = _proc_stat(pid)
    if stat is None or stat[0] in ("Z", "X"):
        return True
    recorded = data.get("started")
    if recorded is None:
        return age > LOCK_LEGACY_STALE_AFTER
    return bool(recorded != stat[1])


def _remove_if_abandoned(path: str, clock: Callable[[], float]) -> bool:
    """Remove ``path`` (a breaker's turn) if its holder is gone; whether it was."""
    found = _read_lock(path)
    if found is None or not _abandoned(found, clock):
        return False
    # Rename, not unlink: of several processes clearing it only one rename
    # succeeds; if what was moved aside is a fresh turn (taken in between),
    # it is put back. That can still go wrong, but only after a breaker was
    # killed inside its turn and while two others clear it.
    aside = f"{path}.stale.{os.getpid()}.{next(_ASIDE_NUMBERS)}"
    try:
        os.rename(path, aside)
    except OSError:
        return False
    removed = bool(_token(_read_lock(aside)) == _token(found))
    if not removed:
        try:
            os.link(aside, path)
        except OSError:
            pass
    _remove(aside)
    return removed


def _read_json(path: str) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when there is none (the usual case) or it is torn."""
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
    except OSError:
        return None
    try:
        raw = _read_all(fd)
    except OSError:
        return None
    finally:
        os.close(fd)
    return _parse_json(raw)


def _read_all(fd: int) -> bytes:
    chunks: list[bytes] = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _parse_json(raw: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(raw.decode("utf-8"))
    except ValueError:
        return None
    return data if isinstance(data, dict) else None

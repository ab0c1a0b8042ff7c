"""The files beside a target: ``.part`` data, ``.part.json`` state, ``.lock``.

Data is written to ``<target>.part`` and moved onto the target with
``os.replace`` only once verified (SPEC §3.1). Beside it, ``<target>.part.json``
records what a later call needs to resume safely (§3.2): the URL, the
validator (ETag or Last-Modified), the total size and the checksums learnt
from the server. ``<target>.lock``, made with ``O_CREAT | O_EXCL`` and
holding host, PID and a token, keeps two processes from writing one target
(§3.8); it works on NFS and Lustre, where ``fcntl`` locks may not. A lock
whose holder is gone is broken by one process at a time, the one that
creates ``<target>.lock.break`` (also with ``O_EXCL``).

This is the module that translates local ``OSError`` into
:class:`~pyvo_dl.DownloadError`, keeping ``errno`` and ``filename``.
"""

from __future__ import annotations

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

#: A lock whose holder cannot be checked (another host) is taken as stale
#: when it has not been refreshed for this long; holders refresh it often.
LOCK_STALE_AFTER = 120.0
LOCK_REFRESH_EVERY = 15.0
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
    checksums: list[tuple[str, str]] = field(default_factory=list)
    parts: list[PartRange] = field(default_factory=list)

    def to_json(self) -> str:
        """The JSON text of ``.part.json``."""
        fields = {
            "identity": self.identity, "url": self.url, "validator": self.validator,
            "etag": self.etag, "size": self.size, "checksums": [list(c) for c in self.checksums],
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
                checksums=[(_typed(a, str), _typed(h, str)) for a, h in data.get("checksums", [])],
                parts=[
                    PartRange(_typed(s, int), _typed(e, int), _typed(d, int))
                    for s, e, d in data.get("parts", [])
                ],
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            return None
        return state


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


_HOLDER: tuple[int, str, str] | None = None


def _holder() -> tuple[int, str, str]:
    """This process as a lock holder: (pid, host, ``host:pid``), found once per process.

    getpid is a system call; a forked child forgets the parent's answer
    (os.register_at_fork below) instead of asking at every lock.
    """
    global _HOLDER
    if _HOLDER is None:
        pid = os.getpid()
        host = gethostname()
        _HOLDER = (pid, host, f"{host}:{pid}")
    return _HOLDER


def _forget_holder() -> None:
    global _HOLDER
    _HOLDER = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_holder)


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


class TargetLock:
    """An inter-process lock on one target, as a ``<target>.lock`` file.

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
        self._inode = -1
        self._last_refresh = 0.0
        self.waited = False

    def _content(self) -> str:
        pid, host, _ = _holder()
        return json.dumps({"host": host, "pid": pid, "token": self._token})

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
        self._last_refresh = self._clock()
        return True

    def acquire(
        self,
        on_wait: Callable[[str], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Wait until the lock is taken, reporting once through ``on_wait``."""
        while not self.try_acquire():
            if not self.waited and on_wait is not None:
                on_wait(self.path)
            self.waited = True
            sleep(LOCK_POLL_INTERVAL)

    def refresh(self, now: float) -> None:
        """Touch the lock now and then so other hosts do not take it as stale."""
        if self._held and now - self._last_refresh >= LOCK_REFRESH_EVERY:
            self._last_refresh = now
            try:
                os.utime(self.path)
            except OSError:
                pass

    def release(self) -> None:
        """Give the lock back (only if this object holds it)."""
        if self._held:
            self._held = False
            # Still ours (not broken as stale and retaken meanwhile)? The
            # same inode says so with one stat instead of reading it back.
            try:
                if os.stat(self.path).st_ino == self._inode:
                    _remove(self.path)
            except OSError:
                pass

    def _read(self) -> dict[str, Any] | None:
        return _read_json(self.path)

    def _read_token(self) -> str | None:
        data = self._read()
        return None if data is None else str(data.get("token"))

    def _is_stale(self, data: dict[str, Any] | None) -> bool:
        return _abandoned(self.path, data, self._clock)

    def _break_if_stale(self) -> bool:
        """Remove the lock if its holder is gone; whether it was removed.

        Breakers take turns: only the one that creates ``<target>.lock.break``
        (with ``O_EXCL`` too) may remove the lock, after checking during its
        turn that the lock is still the abandoned one it read. Without turns a
        breaker could move aside a lock that another process had just taken
        while a third took the free path: two holders writing one ``.part``,
        or a lock left behind with the token of one that had let go.
        """
        data = self._read()
        if not self._is_stale(data):
            return False
        turn = self.path + ".break"
        if not self._take_turn(turn):
            return False
        try:
            current = self._read()
            if _token(current) != _token(data) or not self._is_stale(current):
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


def _token(data: dict[str, Any] | None) -> Any:
    return None if data is None else data.get("token")


def _abandoned(path: str, data: dict[str, Any] | None, clock: Callable[[], float]) -> bool:
    """Whether the holder that wrote ``data`` into the file ``path`` is gone."""
    try:
        age = clock() - os.stat(path).st_mtime
    except FileNotFoundError:
        return False
    if data is None:
        # Empty or torn: a holder writes its content right after creating
        # the file, so only an old one is abandoned.
        return age > LOCK_STALE_AFTER
    if data.get("host") == gethostname():
        pid = data.get("pid")
        return not (isinstance(pid, int) and _pid_alive(pid))
    return age > LOCK_STALE_AFTER


def _remove_if_abandoned(path: str, clock: Callable[[], float]) -> bool:
    """Remove ``path`` (a breaker's turn) if its holder is gone; whether it was."""
    data = _read_json(path)
    if not _abandoned(path, data, clock):
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
    removed = bool(_token(_read_json(aside)) == _token(data))
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
    chunks = []
    try:
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        data = json.loads(b"".join(chunks).decode("utf-8"))
    except ValueError:
        return None
    return data if isinstance(data, dict) else None

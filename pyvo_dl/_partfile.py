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

Those names may be a user's own files (``Gemfile.lock`` beside ``Gemfile``),
so a helper is pyvo_dl's only when it can prove it (docs/security.md): the
state and lock files hold a marker (``"pyvo_dl"``), a ``.part`` is pyvo_dl's
when such a state file names it, and every helper must be a regular file
(opened with ``O_NOFOLLOW | O_NONBLOCK``, so a FIFO or a link is never
followed or waited on). Anything else at those names is left alone and the
target refused (:func:`foreign_file_error`).

This is the module that translates local ``OSError`` into
:class:`~pyvo_dl.DownloadError`, keeping ``errno`` and ``filename``.
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import stat
import sys
import threading
import time
from socket import gethostname

try:
    import fcntl
except ImportError:  # Windows: no splice either
    fcntl = None  # type: ignore[assignment]

from ._errors import DownloadError
from ._records import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Final

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

#: The key of every state and lock file pyvo_dl writes: what makes one its own.
MARKER: Final = "pyvo_dl"
#: The value of MARKER in a ``.part.json``: the format of this state.
STATE_FORMAT: Final = 1
#: The value of MARKER in a ``.lock`` (and in a ``.lock.break`` turn).
LOCK_MARK: Final = "lock"
#: The names a download gives the files beside its target.
HELPER_SUFFIXES: Final = (".part", ".part.json", ".lock")
#: A state or lock file larger than this was not written by pyvo_dl.
_MAX_HELPER_SIZE = 1 << 20
#: Opening a helper never follows a link nor waits (a FIFO without a writer).
_HELPER_FLAGS = getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)

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


class PartVanished(Exception):
    """The ``.part`` a download continues is gone (start again), or another file now."""

    def __init__(self, message: str, replaced: bool = False) -> None:
        super().__init__(message)
        #: Another file is at the path (not ours to remove), rather than none.
        self.replaced = replaced


class ForeignFile(Exception):
    """A helper's name is taken by a file pyvo_dl cannot prove it made."""

    def __init__(self, path: str, why: str) -> None:
        super().__init__(path, why)
        self.path = path
        self.why = why


def foreign_file_error(target: str, foreign: ForeignFile) -> DownloadError:
    """The error for a target whose helper name is taken by someone else's file.

    Parameters
    ----------
    target : str
        The file to download.
    foreign : ForeignFile
        Which helper name is taken, and by what.
    """
    if foreign.why == "link":
        return disk_error(OSError(errno.ELOOP, "Too many levels of symbolic links"), foreign.path,
                          f"download {target}: the helper file")  # fmt: skip
    return DownloadError(
        f"cannot download {target}: {foreign.path} exists and was not made by pyvo_dl "
        f"({foreign.why}), and a download keeps its {_role(foreign.path)} there; move it "
        "away, or choose another local_filepath",
        errno.EEXIST,
        foreign.path,
    )


def _role(path: str) -> str:
    if path.endswith(".part.json"):
        return "resume state"
    if path.endswith(".part"):
        return "partial file"
    return "lock"


def read_helper(path: str) -> bytes | None:
    """The bytes of a helper file; None when there is none.

    Opened without following a link or waiting for a writer, and read only
    if it is a regular file of a plausible size.

    Raises
    ------
    ForeignFile
        When ``path`` is a link, a FIFO, a device, a folder, or too large.
    """
    if not _may_exist(path):
        return None
    try:
        fd = os.open(path, os.O_RDONLY | _HELPER_FLAGS)
    except FileNotFoundError:
        return None
    except OSError as exc:
        why = "link" if exc.errno == errno.ELOOP else f"it cannot be read: {exc.strerror}"
        raise ForeignFile(path, why) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ForeignFile(path, "it is not a regular file")
        if info.st_size > _MAX_HELPER_SIZE:
            raise ForeignFile(path, f"{info.st_size} bytes, larger than any of its own")
        return _read_all(fd)
    except OSError as exc:
        raise ForeignFile(path, f"it cannot be read: {exc.strerror}") from None
    finally:
        os.close(fd)


def _may_exist(path: str) -> bool:
    """Whether anything (a link itself included) may be at ``path``: False when nothing is.

    ``os.access`` answers "nothing" with False where a failed ``open`` or
    ``stat`` raises an exception, which costs three times as much; most
    helper files and new targets are not there. True tells nothing (the
    caller looks as before), and so does any error but "no such file".
    """
    if _NO_ACCESS_NOFOLLOW:
        return True
    try:
        return os.access(path, os.F_OK, follow_symlinks=False)
    except NotImplementedError:  # Windows: no access() that leaves a link alone
        _NO_ACCESS_NOFOLLOW.append(True)
        return True


_NO_ACCESS_NOFOLLOW: list[bool] = []


def target_mode(path: str) -> int | None:
    """The ``st_mode`` of what ``path`` names (a link followed), None when nothing is there.

    One ``stat`` that :func:`special_kind`, :func:`prepare_target` and the
    cache check share: a batch of small files pays it once per file.
    """
    if not _may_exist(path):
        return None  # a new target: no stat, nor the exception of a failed one
    try:
        return os.stat(path).st_mode
    except OSError:
        return None


_UNKNOWN = -1


def special_kind(path: str, mode: int | None = _UNKNOWN) -> str | None:
    """What ``path`` is when it is not a file to replace: ``"FIFO"``, ``"character device"``.

    ``-o /dev/null`` (curl's habit), ``-o /dev/stdout`` or a named pipe is
    written as the body arrives, never replaced by a ``.part`` moved over
    it: as root, that deleted ``/dev/null``. None for a regular file, a
    folder or nothing (the usual download).

    Raises
    ------
    DownloadError
        For a block device or a socket: writing either is never what a
        download means.
    """
    if mode == _UNKNOWN:
        mode = target_mode(path)  # a link (/dev/stdout) is judged by what it names
    if mode is None:
        return None
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISBLK(mode) or stat.S_ISSOCK(mode):
        kind = "a block device" if stat.S_ISBLK(mode) else "a socket"
        raise DownloadError(
            f"cannot download to {path}: it is {kind}; give a file path (local_filepath=)",
            errno.EEXIST,
            path,
        )
    return None


def open_special(path: str, timeout: float) -> StreamWriter:
    """Open a FIFO or character device for writing, as it is (no ``.part``, no truncation).

    A FIFO is opened without waiting, again and again for up to ``timeout``
    seconds until a process reads it (``mkfifo p; reader < p &`` may start
    its reader just after the download).

    Raises
    ------
    DownloadError
        When it cannot be opened, or no process reads the FIFO in time.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | getattr(os, "O_NONBLOCK", 0))
            break
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: a FIFO nobody reads yet
                raise disk_error(exc, path, "write to") from exc
            if time.monotonic() > deadline:
                raise DownloadError(
                    f"no process read the FIFO {path} within {timeout:g} s; start its "
                    "reader (or give it longer with timeout=)",
                    errno.ENXIO,
                    path,
                ) from None
            check_interrupt()
            time.sleep(0.05)
    os.set_blocking(fd, True)  # the reader takes its time: writes wait for it
    return StreamWriter(fd, path)


class StreamWriter:
    """Writes a body to a FIFO or a device, in order, as it arrives (no position to seek).

    Parameters
    ----------
    fd : int
        Open for writing.
    path : str
        The target, for messages.
    """

    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd
        self.path = path
        #: Bytes written so far.
        self.written = 0

    def write(self, chunk: memoryview) -> None:
        """Write all of ``chunk``; a reader that went away is a clear error."""
        try:
            while chunk:
                n = os.write(self.fd, chunk)
                chunk = chunk[n:]
                self.written += n
        except BrokenPipeError as exc:
            raise DownloadError(
                f"the reader of {self.path} went away after {self.written} bytes",
                errno.EPIPE,
                self.path,
            ) from exc
        except OSError as exc:
            raise disk_error(exc, self.path, "write to") from exc

    def close(self) -> None:
        """Close it (the reader of a FIFO then sees the end)."""
        os.close(self.fd)


def check_not_a_helper(target: str) -> None:
    """Refuse a target that is the ``.part``, state or lock of another download's target.

    ``download_many`` refuses such pairs in one call; this catches a target
    like ``x.fits.part`` while a download of ``x.fits`` (its lock, or its
    state left to resume) is there.

    Raises
    ------
    DownloadError
        Naming the other download's file.
    """
    if not target.endswith(HELPER_SUFFIXES):
        return  # one test in C for the usual name
    for suffix in HELPER_SUFFIXES:
        if not target.endswith(suffix) or len(target) == len(suffix):
            continue
        base = target[: -len(suffix)]
        for helper, mark in ((base + ".lock", LOCK_MARK), (base + ".part.json", STATE_FORMAT)):
            if _holds_marker(helper, mark):
                raise DownloadError(
                    f"cannot download to {target}: it is the {_role(target)} of a download "
                    f"of {base} ({helper} is there); choose another local_filepath",
                    errno.EEXIST,
                    target,
                )


def _holds_marker(path: str, mark: object) -> bool:
    try:
        raw = read_helper(path)
    except ForeignFile:
        return False
    data = None if raw is None else _parse_json(raw)
    return data is not None and data.get(MARKER) == mark


def prepare_target(path: str, mode: int | None = _UNKNOWN) -> None:
    """Check that ``path`` can be a file (it is not a folder).

    ``mode`` is :func:`target_mode`'s answer, when the caller has it. The
    folders above ``path`` are made by :class:`TargetLock` when the lock,
    the first file of a download, cannot be created for want of them: the
    usual folder that exists costs no ``stat``.

    Raises
    ------
    DownloadError
        When ``path`` is a folder.
    """
    if mode == _UNKNOWN:
        mode = target_mode(path)
    if mode is not None and stat.S_ISDIR(mode):
        raise disk_error(IsADirectoryError(errno.EISDIR, "Is a directory"), path, "write to")


def make_parent_folders(path: str) -> None:
    """Create the folders above ``path`` that are missing.

    Raises
    ------
    DownloadError
        Naming the folder, when it cannot be created.
    """
    parent = os.path.dirname(path)
    if not parent or os.path.isdir(parent):
        return
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as exc:
        raise disk_error(exc, parent, "create the folder") from exc


#: Characters of a part's ``done`` count in ``.part.json`` (any int64 fits).
DONE_WIDTH: Final = 20
#: A count never crosses a multiple of this (the smallest page size): its
#: in-place rewrite is then one page's copy, never cut by a kill.
_SLOT_PAGE = 4096


def format_done(done: int) -> str:
    """A part's ``done`` count as its fixed-width field in ``.part.json``."""
    return f"{done:>{DONE_WIDTH}}"


class PartRange(Record):
    """One range of a parallel download: ``start`` to ``end`` (inclusive), ``done`` bytes in.

    In ``.part.json`` as ``[start, end, done]``.
    """

    _fields = ("start", "end", "done")

    def __init__(self, start: int, end: int, done: int = 0) -> None:
        self.start = start
        self.end = end
        self.done = done

    @property
    def next_byte(self) -> int:
        """The first byte still missing."""
        return self.start + self.done

    @property
    def missing(self) -> bool:
        """Whether bytes of the range are still missing."""
        return self.start + self.done <= self.end


class PartState(Record):
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

    _fields = (
        "identity", "url", "validator", "etag", "size", "last_modified", "checksums", "parts",
    )  # fmt: skip

    def __init__(
        self,
        identity: str,
        url: str,
        validator: str | None,
        etag: str | None,
        size: int | None,
        last_modified: str | None = None,
        checksums: list[tuple[str, str]] | None = None,
        parts: list[PartRange] | None = None,
    ) -> None:
        self.identity = identity
        self.url = url
        self.validator = validator
        self.etag = etag
        self.size = size
        self.last_modified = last_modified
        self.checksums: list[tuple[str, str]] = [] if checksums is None else checksums
        self.parts: list[PartRange] = [] if parts is None else parts

    def to_json(self) -> str:
        """The JSON text of ``.part.json``, with the marker that makes it pyvo_dl's."""
        return self.to_json_with_slots()[0]

    def to_json_with_slots(self) -> tuple[str, dict[int, int]]:
        """The JSON text, and where in it each part's ``done`` count is (by the part's start).

        Each count is a right-aligned field of :data:`DONE_WIDTH` characters
        (JSON allows the spaces) that never crosses a 4 KiB boundary, so
        that :class:`PartProgress` can rewrite it in place with one small
        write, which a killed process cannot leave half done. The text is
        ASCII (``json.dumps`` escapes the rest): characters are bytes.
        """
        fields = {
            MARKER: STATE_FORMAT, "identity": self.identity, "url": self.url,
            "validator": self.validator, "etag": self.etag, "size": self.size,
            "last_modified": self.last_modified,
            "checksums": [list(c) for c in self.checksums],
        }  # fmt: skip
        pieces = [json.dumps(fields)[:-1], ', "parts": [']
        length = sum(map(len, pieces))
        slots: dict[int, int] = {}
        for i, part in enumerate(self.parts):
            head = f"{', ' if i else ''}[{part.start}, {part.end}, "
            length += len(head)
            pad = _SLOT_PAGE - length % _SLOT_PAGE
            if pad < DONE_WIDTH:
                head += " " * pad  # the count starts the next page
                length += pad
            slots[part.start] = length
            pieces += [head, format_done(part.done), "]"]
            length += DONE_WIDTH + 1
        pieces.append("]}")
        return "".join(pieces), slots

    @classmethod
    def from_json(cls, data: Any) -> PartState:
        """The state a ``.part.json`` of pyvo_dl's holds, checked as untrusted input.

        The values end up in request headers (validators), in hash
        constructors (checksums) and in the ranges written: a file edited by
        hand, by a newer version or by a broken disk must not get that far.

        Raises
        ------
        ValueError
            Saying what does not validate: a value of the wrong type, an
            unknown format, a validator with a line break or control
            character, an unknown algorithm or a digest that is not its hex,
            a part map that does not cover the object exactly once.
        """
        if not isinstance(data, dict) or data.get(MARKER) != STATE_FORMAT:
            found = data.get(MARKER) if isinstance(data, dict) else None
            raise ValueError(f"format {found!r}, not {STATE_FORMAT} (another version's?)")
        try:
            size = _typed(data["size"], int, None)
            state = cls(
                identity=_typed(data["identity"], str),
                url=_typed(data["url"], str),
                validator=_header_value(data["validator"], "validator"),
                etag=_header_value(data["etag"], "etag"),
                size=size,
                last_modified=_header_value(data.get("last_modified"), "last_modified"),
                checksums=_checksums(data.get("checksums", [])),
                parts=_parts(data.get("parts", []), size),
            )
        except KeyError as exc:
            raise ValueError(f"no {exc.args[0]!r}") from None
        except TypeError as exc:
            raise ValueError(str(exc)) from None
        if state.size is not None and state.size < 0:
            raise ValueError(f"a negative size ({state.size})")
        if state.validator not in (None, state.etag, state.last_modified):
            raise ValueError("a validator that is neither its ETag nor its Last-Modified")
        return state

    def validators(self) -> dict[str, str | None]:
        """``ETag`` and ``Last-Modified`` as recorded: what a ``206`` must repeat (SPEC §3.2)."""
        return {"ETag": self.etag, "Last-Modified": self.last_modified}


def _is_format(value: Any) -> bool:
    """Whether ``value`` is a state format number (of this version or another)."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _header_value(value: Any, name: str) -> str | None:
    """A validator as a state file holds it: None, or text fit for a request header."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name} {value!r} is not text")
    # Sent back in If-Range / If-Match: a line break would be a second header,
    # a character outside Latin-1 an error deep in http.client.
    if not value.isprintable() or max(map(ord, value), default=0) > 255 or len(value) > 8192:
        raise TypeError(f"{name} {value!r} is not a header value")
    return value


def _checksums(value: Any) -> list[tuple[str, str]]:
    """The ``[algorithm, hex]`` pairs of a state file, each one a known, well-formed digest."""
    from ._integrity import Checksum  # noqa: PLC0415 - only a state with checksums needs it

    if not isinstance(value, list):
        raise TypeError(f"checksums {value!r} is not a list")
    pairs = []
    for entry in value:
        if not (
            isinstance(entry, list) and len(entry) == 2 and all(isinstance(x, str) for x in entry)
        ):
            raise TypeError(f"checksum {entry!r} is not an [algorithm, hex] pair")
        try:
            checksum = Checksum.parse(f"{entry[0]}:{entry[1]}")
        except ValueError as exc:
            raise TypeError(str(exc)) from None
        if (checksum.algorithm, checksum.expected) != (entry[0], entry[1]):
            raise TypeError(f"checksum {entry!r} is not as pyvo_dl writes it")
        pairs.append((checksum.algorithm, checksum.expected))
    return pairs


def _parts(value: Any, size: int | None) -> list[PartRange]:
    """A part map: ranges that cover ``[0, size)`` in order, exactly once, none done past its end."""
    if not isinstance(value, list):
        raise TypeError(f"parts {value!r} is not a list")
    parts = []
    for entry in value:
        if not (isinstance(entry, list) and len(entry) == 3):
            raise TypeError(f"part {entry!r} is not [start, end, done]")
        parts.append(PartRange(*(_typed(x, int) for x in entry)))
    if not parts:
        return parts
    if size is None:
        raise TypeError("a part map for an object of no known size")
    expected = 0
    for part in parts:
        if part.start != expected or part.end < part.start:
            raise TypeError(f"the parts do not follow each other at byte {expected}")
        if not 0 <= part.done <= part.end - part.start + 1:
            raise TypeError(f"a part has {part.done} bytes done of {part.end - part.start + 1}")
        expected = part.end + 1
    if expected != size:
        raise TypeError(f"the parts cover {expected} bytes of {size}")
    return parts


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
        #: Whether a state file of pyvo_dl's may exist (loaded or saved by this object).
        self.has_state = False
        #: Why the state file found was discarded (it did not validate), if it was.
        self.problem: str | None = None
        #: (device, inode) of the .part this object wrote or examined: what
        #: must still be at the path when it is committed.
        self.identity: tuple[int, int] | None = None

    def size(self) -> int:
        """Bytes in the ``.part`` file, 0 when there is none."""
        try:
            return os.stat(self.path).st_size
        except FileNotFoundError:
            return 0

    def size_on_disk(self) -> int | None:
        """Bytes in the ``.part``, None when there is none.

        Raises
        ------
        ForeignFile
            When the ``.part`` is a link, a FIFO or anything but a regular file.
        """
        if not _may_exist(self.path):
            return None
        try:
            info = os.lstat(self.path)
        except FileNotFoundError:
            return None
        if stat.S_ISLNK(info.st_mode):
            raise ForeignFile(self.path, "link")
        if not stat.S_ISREG(info.st_mode):
            raise ForeignFile(self.path, "it is not a regular file")
        self.identity = (info.st_dev, info.st_ino)
        return info.st_size

    def load_state(self) -> PartState | None:
        """The recorded state; None when there is none, or when it did not validate.

        A state file is pyvo_dl's when it is a JSON object with the marker
        (:data:`MARKER`); one of its own that does not validate is None,
        with :attr:`problem` saying why (the caller discards it).

        Raises
        ------
        ForeignFile
            When the file at the state's name is someone else's.
        """
        self.problem = None
        raw = read_helper(self.state_path)
        if raw is None:
            self.has_state = False
            return None
        data = _parse_json(raw)
        if data is None or MARKER not in data or not _is_format(data[MARKER]):
            raise ForeignFile(self.state_path, "it is not a download's state")
        self.has_state = True
        try:
            return PartState.from_json(data)
        except ValueError as exc:
            self.problem = str(exc)
            return None

    def save_state(self, state: PartState) -> None:
        """Record ``state`` atomically (write aside under a name no one else has, then replace)."""
        os.close(self._save(state.to_json()))

    def save_progress(self, state: PartState) -> PartProgress:
        """Record ``state`` (with its part map) atomically; what then keeps its counts current.

        The returned :class:`PartProgress` holds the state file open and
        rewrites each part's ``done`` count in place as its bytes are
        written: a process killed at any point leaves a map that is behind
        the ``.part`` by at most the chunk each range was writing, at the
        cost of one small ``pwrite`` per chunk (a whole new state file per
        chunk, written aside and renamed, costs a hundred times more).
        """
        text, slots = state.to_json_with_slots()
        return PartProgress(self._save(text), slots, self.state_path)

    def _save(self, text: str) -> int:
        """Write ``text`` aside, move it to the state's name; its fd, open for writing."""
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | _NOFOLLOW
        tmp = ""
        fd = -1
        try:
            for _ in range(5):
                tmp = f"{self.state_path}.{os.getpid()}-{os.urandom(4).hex()}.tmp"
                try:
                    fd = os.open(tmp, flags, 0o666)
                    break
                except FileExistsError:
                    continue
            else:
                raise FileExistsError(errno.EEXIST, "no free name for the state", tmp)
            view = memoryview(text.encode("utf-8"))
            while view:
                view = view[os.write(fd, view) :]
            os.replace(tmp, self.state_path)
            self.has_state = True
            return fd
        except BaseException as exc:
            # A disk error, or Ctrl-C's or SIGTERM's exception between the
            # create and the replace: nothing half-made is left either way.
            if fd >= 0:
                os.close(fd)
            _remove(tmp)
            if isinstance(exc, OSError):
                raise disk_error(exc, self.state_path, "write") from exc
            raise

    def remove_stray_states(self) -> list[str]:
        """Remove the state files that a killed writer left half-made; their names.

        :meth:`_save` writes ``<state>.<pid>-<8 hex>.tmp`` and renames it
        onto the state's name; a process killed in between leaves it. Only
        the lock's holder writes a target's state, so once the lock was taken
        over from a holder that is gone, every such file is that holder's.
        Regular files with exactly that name only (a link is left alone).
        """
        folder, name = os.path.split(self.state_path)
        prefix = name + "."
        removed: list[str] = []
        try:
            names = os.listdir(folder or ".")
        except OSError:
            return removed
        for entry in names:
            if not (entry.startswith(prefix) and _is_state_temporary(entry[len(prefix) :])):
                continue
            path = os.path.join(folder, entry)
            try:
                if not stat.S_ISREG(os.lstat(path).st_mode):
                    continue
                os.unlink(path)
            except OSError:
                continue  # gone already, or not ours to remove: left as it is
            removed.append(path)
        return removed

    def write_new(self, data: bytes) -> None:
        """Write ``data`` as a new ``.part`` (never over a file, never through a link).

        Raises
        ------
        DownloadError
            Naming the ``.part``; nothing is left of it then.
        """
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o666)
        except OSError as exc:
            raise disk_error(exc, self.path, "create") from exc
        try:
            self._hold(fd)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except OSError as exc:
            os.close(fd)
            _remove(self.path)  # the caller still holds every byte: nothing is lost
            raise disk_error(exc, self.path, "write") from exc
        os.close(fd)

    def _hold(self, fd: int) -> None:
        """Note which file ``fd`` is: the one to find at the path when committing.

        Raises
        ------
        PartVanished
            When it is not the file this object examined or wrote before.
        """
        info = os.fstat(fd)
        identity = (info.st_dev, info.st_ino)
        if self.identity is not None and identity != self.identity:
            os.close(fd)
            raise PartVanished(f"{self.path} was replaced by another file", replaced=True)
        self.identity = identity

    def check_still_there(self) -> None:
        """Raise :class:`PartVanished` unless the path still names the file opened.

        What a parallel range checks before it writes through the file
        descriptor opened at the start: after a long wait, the ``.part`` may
        have been finished and moved elsewhere by another process.
        """
        try:
            info = os.lstat(self.path)
        except FileNotFoundError:
            raise PartVanished(f"{self.path} is gone") from None
        if (info.st_dev, info.st_ino) != self.identity:
            raise PartVanished(f"{self.path} was replaced by another file", replaced=True)

    def _open_to_continue(self, offset: int) -> int:
        """Open the ``.part`` for writing: created only when nothing is kept in it yet.

        A writer never creates a ``.part`` it believes it is continuing: the
        one it continued may have been finished and moved onto the target by
        another process (that took the lock as abandoned) while this one
        waited; creating it again, zeros up to ``offset``, would then
        commit a file that starts with zeros (issue 12.5).
        """
        flags = os.O_WRONLY | _HELPER_FLAGS | (0 if offset else os.O_CREAT)
        try:
            fd = os.open(self.path, flags, 0o666)
        except FileNotFoundError:
            if not offset:
                raise
            raise PartVanished(f"{self.path} is gone") from None
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # a FIFO put there: never a .part
                raise ForeignFile(self.path, "it is not a regular file") from None
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise ForeignFile(self.path, "it is not a regular file")
        self._hold(fd)
        return fd

    def open_at(self, offset: int) -> Writer:
        """Open the ``.part`` for writing from ``offset`` on (cut there: what follows is stale).

        Raises
        ------
        PartVanished
            When continuing (``offset`` > 0) a ``.part`` that is gone or replaced.
        """
        try:
            fd = self._open_to_continue(offset)
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

    def open_preallocated(self, size: int, kept: int = 0) -> int:
        """Open (creating it if new) the ``.part`` of an object of ``size`` bytes; its fd.

        The space is reserved up front where the file system can: a full
        disk is an error now, not at 90 %; elsewhere a sparse file will do.
        Ranges are then written into it with :class:`Writer`. With ``kept``
        bytes of ranges already in it, the ``.part`` must be there.

        Raises
        ------
        PartVanished
            When it is gone or replaced although ``kept`` bytes are in it.
        """
        fresh = not os.path.exists(self.path)
        try:
            # Never through a link planted in place of the .part.
            fd = self._open_to_continue(kept)
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
        self.identity = None

    def examine(self) -> os.stat_result | None:
        """``lstat`` of the ``.part`` (None when there is none): its size, and what :meth:`commit` checks."""
        try:
            return os.lstat(self.path)
        except FileNotFoundError:
            return None

    def commit(self, found: os.stat_result | None = None) -> None:
        """Move the verified ``.part`` onto the target and drop the state.

        Only if the file at the ``.part``'s path is still the one this
        object wrote (same device and inode): another process that took the
        lock over, while this one was suspended, may have replaced it.
        ``found``: what :meth:`examine` said just before, nothing done since
        (a small file's size check and commit share one ``lstat``).

        Raises
        ------
        DownloadError
            When the ``.part`` was replaced (nothing is committed) or the
            move fails.
        """
        try:
            info = os.lstat(self.path) if found is None else found
        except OSError as exc:
            raise disk_error(exc, self.path, "find the finished download") from exc
        if self.identity is not None and (info.st_dev, info.st_ino) != self.identity:
            raise DownloadError(
                f"{self.path} is no longer the file this download wrote: another process "
                "replaced it (did it take this download's lock over as abandoned?); "
                f"nothing was moved onto {self.target}",
                errno.ESTALE,
                self.path,
            )
        try:
            os.replace(self.path, self.target)
        except OSError as exc:
            raise disk_error(exc, self.target, "move the finished download to") from exc
        if self.has_state:
            _remove(self.state_path)


#: os.pwrite: every POSIX system; elsewhere (Windows) a sequential writer seeks once.
_PWRITE = getattr(os, "pwrite", None)

# A body goes into its .part in writes (and splices) as large as the buffer
# or the pipe holds, up to 1 MiB, so that Linux's page cache takes large
# folios for it. In writes of 64 KiB, 256 MiB from a loopback nginx into ext4
# (Linux 6.18, KVM) took 0.25-0.27 s against 0.19-0.21 s, the difference the
# kernel's per-folio work (perf: allocation, page-cache insertion, LRU,
# dirtying). One other VM, whose host took back free memory, paid a host fault
# per new large folio instead (0.69-0.78 s against 0.16-0.30 s in 64 KiB
# writes); docs/benchmarks.md weighs the two.


class PartProgress:
    """The ``done`` counts of a saved part map, rewritten in place as ranges advance.

    Made by :meth:`PartFile.save_progress`. Each range calls :meth:`record`
    after writing a chunk, so the map on disk never claims a byte that is
    not in the ``.part`` (both writes are in the page cache, in that order,
    when a process is killed) and is behind it by at most that chunk. A
    state file replaced meanwhile (by a process that took the lock over)
    is not written to: the writes go to the file this one saved.

    Parameters
    ----------
    fd : int
        The state file, open for writing.
    slots : dict
        Byte offset of each part's count in it, by the part's start.
    path : str
        The state file, for messages.
    """

    def __init__(self, fd: int, slots: dict[int, int], path: str) -> None:
        self.fd = fd
        self.slots = slots
        self.path = path
        if _PWRITE is None:  # seek and write must then not interleave
            import threading  # noqa: PLC0415 - only where there is no pwrite

            self._seeking: Any = threading.Lock()

    def record(self, part: PartRange) -> None:
        """Write ``part.done`` into its slot (after its bytes are in the ``.part``).

        Raises
        ------
        DownloadError
            Naming the state file.
        """
        field = format_done(part.done).encode("ascii")
        offset = self.slots[part.start]
        try:
            if _PWRITE is not None:
                _PWRITE(self.fd, field, offset)
            else:
                with self._seeking:
                    os.lseek(self.fd, offset, os.SEEK_SET)
                    os.write(self.fd, field)
        except OSError as exc:
            raise disk_error(exc, self.path, "write") from exc

    def close(self) -> None:
        """Close the state file (its counts stay as last recorded)."""
        os.close(self.fd)


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
            # The whole chunk (up to the 1 MiB buffer) in one call: Linux's
            # page cache then takes large folios for it (docs/benchmarks.md).
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

    def splice_pipe(self) -> SplicePipe | None:
        """A pipe to move a body into this file inside the kernel, where os.splice exists."""
        return SplicePipe(self) if _SPLICE is not None else None


#: os.splice (Linux, Python 3.10+): a body goes socket -> pipe -> file inside
#: the kernel, one copy fewer than through a buffer in Python.
_SPLICE = getattr(os, "splice", None) if sys.platform.startswith("linux") else None
#: A pipe holds this much where the system allows (the default is 64 KiB).
PIPE_SIZE = 1024 * 1024


def can_splice() -> bool:
    """Whether bodies can be moved into files with os.splice here."""
    return _SPLICE is not None


class SplicePipe:
    """The pipe that one body goes through on its way into a ``.part``, and only that body.

    Made for the body and closed with it (``with``): whatever an interrupted
    body left in it (Ctrl-C between the socket and the file) goes with it,
    never into the next download. Bytes count as written only once in the
    file.

    Parameters
    ----------
    writer : Writer
        Where the bytes go (its position moves as they land).
    """

    def __init__(self, writer: Writer) -> None:
        self._writer = writer
        self.read_fd = self.write_fd = -1
        self.size = 64 * 1024

    def __enter__(self) -> SplicePipe:
        self.read_fd, self.write_fd = os.pipe()
        try:
            self.size = fcntl.fcntl(self.write_fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        except (OSError, AttributeError):
            pass  # the default size works, with more system calls
        return self

    def __exit__(self, *exc_info: object) -> None:
        for fd in (self.read_fd, self.write_fd):
            if fd >= 0:
                os.close(fd)
        self.read_fd = self.write_fd = -1

    def drain(self, count: int) -> None:
        """Move the ``count`` bytes waiting in the pipe into the file at the writer's position.

        Raises
        ------
        DownloadError
            Naming the ``.part``, for a write that fails (a full disk).
        """
        assert _SPLICE is not None  # a SplicePipe exists only where splice does
        writer = self._writer
        try:
            while count:
                moved = _SPLICE(self.read_fd, writer.fd, count, offset_dst=writer.position)
                count -= moved
                writer.position += moved
        except OSError as exc:
            raise disk_error(exc, writer.path, "write") from exc


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


def _is_state_temporary(tail: str) -> bool:
    """Whether ``tail`` is what :meth:`PartFile._save` puts after the state's name: ``<pid>-<8 hex>.tmp``."""
    pid, dash, rest = tail.partition("-")
    token = rest[:-4]
    return (
        bool(dash)
        and pid.isdigit()
        and pid.isascii()
        and rest.endswith(".tmp")
        and len(token) == 8
        and all(c in "0123456789abcdef" for c in token)
    )


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


_HOLDER_JSON: list[str] = []


def _holder_json() -> str:
    """The lock file's JSON up to its token's value: ``{"pyvo_dl": "lock", ..., "token":``."""
    if not _HOLDER_JSON:
        pid, host, _, started = _holder()
        content: dict[str, Any] = {MARKER: LOCK_MARK, "host": host, "pid": pid}
        if started is not None:
            content["started"] = started
        _HOLDER_JSON.append(json.dumps(content)[:-1] + ', "token": ')
    return _HOLDER_JSON[0]


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
_HELD_LOCK = threading.Lock()
_BEATING: list[bool] = []


def _hold(lock: TargetLock) -> None:
    with _HELD_LOCK:
        _HELD[id(lock)] = lock
        if not _BEATING:
            _BEATING.append(True)
            # A daemon: the interpreter's exit does not wait out its nap.
            threading.Thread(target=_beat, name="pyvo_dl lock heartbeat", daemon=True).start()


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
    _HOLDER_JSON.clear()
    _HELD_LOCK = threading.Lock()
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
        self.target = target
        self.path = target + ".lock"
        self._clock = clock
        # Unique to this lock: the holder, this object, the time in integer
        # nanoseconds (a float's repr costs three times as much per file).
        self._token = f"{_holder()[2]}:{id(self)}:{time.time_ns()}"
        self._held = False
        self._owner = 0
        #: When this process took it (monotonic and wall clock).
        self._taken = (0.0, 0.0)
        self.waited = False
        #: Set by the heartbeat when the file is no longer this lock's (it was
        #: broken as stale while this process was suspended, say).
        self.lost = False
        #: (token, mtime) of another host's lock and when this waiter first saw it.
        self._seen: tuple[Any, float, float] | None = None
        #: The lock of pyvo_dl's this one replaced, its holder gone (host, pid...).
        self.took_over: dict[str, Any] | None = None

    def _content(self) -> str:
        # The same JSON as json.dumps of {marker, host, pid, started, token}:
        # all but the token is this process's, written out once.
        return f"{_holder_json()}{json.encoder.encode_basestring_ascii(self._token)}}}"

    def try_acquire(self) -> bool:
        """Take the lock if it is free (or stale); return whether it was taken.

        Raises
        ------
        DownloadError
            When the lock's name (or its break turn's) is taken by a file
            that is not a lock of pyvo_dl's (``Gemfile.lock``, a link, a FIFO).
        """
        # A stale lock (its process is gone) is broken and taken at once.
        try:
            return self._create() or (self._break_if_stale() and self._create())
        except ForeignFile as foreign:
            raise foreign_file_error(self.target, foreign) from None

    def _create(self) -> bool:
        try:
            fd = self._open_new()
        except FileExistsError:
            return False
        except OSError as exc:
            raise disk_error(exc, self.path, "create the lock file") from exc
        try:
            os.write(fd, self._content().encode())
        except OSError as exc:
            _remove(self.path)  # a full disk, say: no lock with nobody in it
            raise disk_error(exc, self.path, "write the lock file") from exc
        finally:
            os.close(fd)
        self._held = True
        self._owner = _holder()[0]
        self._taken = (time.monotonic(), time.time())
        _hold(self)
        return True

    def _open_new(self) -> int:
        """``O_CREAT | O_EXCL`` the lock file, making the folders above it if missing."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        try:
            return os.open(self.path, flags, 0o644)
        except (FileNotFoundError, NotADirectoryError):
            make_parent_folders(self.path)  # raises, naming the folder, if it cannot be made
        return os.open(self.path, flags, 0o644)

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
        watch: _Watch | None = None
        while not self.try_acquire():
            check_interrupt()
            if watch is None:
                # Only once the lock is found taken: the usual free lock
                # costs no stat of the files a waiter watches.
                watch = _Watch(self.path[: -len(".lock")])
            if watch.stalled_for() > LOCK_WAIT_LIMIT:
                raise self._wait_error()
            if not self.waited and on_wait is not None:
                on_wait(self.path)
            self.waited = True
            sleep(LOCK_POLL_INTERVAL)

    def _wait_error(self) -> DownloadError:
        try:
            found = _read_lock(self.path)
        except ForeignFile:
            found = None
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

    def check_held(self) -> None:
        """Make sure, now, that the lock file is still this lock's (the heartbeat's check).

        A lock taken less than a heartbeat ago by both clocks cannot have
        been taken over (that needs :data:`LOCK_STALE_AFTER` of silence), so
        a small file's commit costs no read of it.

        Raises
        ------
        DownloadError
            When it is not: another process took it over.
        """
        if not self._young():
            self.heartbeat()
        self.refresh()

    def _young(self) -> bool:
        """Taken less than a heartbeat ago by both clocks: no other process can have taken it over.

        Taking a lock over needs :data:`LOCK_STALE_AFTER` of silence or a
        holder that is gone; neither can be true of this process's lock so soon.
        """
        since_mono, since_wall = self._taken
        return (
            time.monotonic() - since_mono < LOCK_HEARTBEAT
            and abs(time.time() - since_wall) < LOCK_HEARTBEAT
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
        try:
            found = _read_lock(self.path)
        except ForeignFile:
            self.lost = True  # replaced by something that is not a lock at all
            return
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
        # Still ours (not broken as stale and retaken meanwhile)? A young
        # lock is (a small file's release is one unlink); an older one's
        # token says so.
        if not self._young():
            try:
                found = _read_lock(self.path)
            except ForeignFile:
                return
            if found is None or _token(found) != self._token:
                return
        _remove(self.path)

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
            self.took_over = current[0] if current is not None else None
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
    """A lock file's content (None while it is being written) and mtime; None when there is none.

    Opened before its mtime is taken: on NFS, opening revalidates a file's
    cached attributes (close-to-open consistency), so another host's
    heartbeat is seen. Opened without following a link or waiting (a
    FIFO), and read only if it is a regular file.

    A holder creates its lock, then writes it: for a moment it is empty or
    a torn ``{...``, and the content is None. One that stays so for longer
    than :data:`LOCK_STALE_AFTER`, and anything but a lock of pyvo_dl's (the
    marker, or the ``host``/``pid``/``token`` of one written before the
    marker), cannot be proved pyvo_dl's: :class:`ForeignFile`.
    """
    try:
        fd = os.open(path, os.O_RDONLY | _HELPER_FLAGS)
    except FileNotFoundError:
        return None
    except OSError as exc:
        why = "link" if exc.errno == errno.ELOOP else f"it cannot be read: {exc.strerror}"
        raise ForeignFile(path, why) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > _MAX_HELPER_SIZE:
            raise ForeignFile(path, "it is not a regular file of a lock's size")
        raw = _read_all(fd)
    except OSError:
        return None
    finally:
        os.close(fd)
    data = _parse_json(raw)
    if data is not None:
        if not _is_lock(data):
            raise ForeignFile(path, "it is not a download's lock")
        return data, info.st_mtime
    if raw.strip() and not raw.lstrip().startswith(b"{"):
        raise ForeignFile(path, "it is not a download's lock")
    if time.time() - info.st_mtime > LOCK_STALE_AFTER:
        # A holder killed between creating and writing it (microseconds), or
        # someone's empty file: nothing proves it ours, so it is not removed.
        raise ForeignFile(path, "it has been empty or torn for a long time")
    return None, info.st_mtime


def _is_lock(data: dict[str, Any]) -> bool:
    """Whether ``data`` is what pyvo_dl writes in a lock (or wrote, before its marker)."""
    if data.get(MARKER) == LOCK_MARK:
        return True
    return (
        set(data) <= {"host", "pid", "started", "token"}
        and isinstance(data.get("host"), str)
        and isinstance(data.get("pid"), int)
        and isinstance(data.get("token"), str)
    )


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
        return False  # being written (an old empty one is refused: _read_lock)
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
    try:
        removed = bool(_token(_read_lock(aside)) == _token(found))
    except ForeignFile:
        removed = False
    if not removed:
        try:
            os.link(aside, path)
        except OSError:
            pass
    _remove(aside)
    return removed


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

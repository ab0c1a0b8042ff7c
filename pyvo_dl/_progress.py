"""Progress display for downloads (SPEC §4).

The top of the file holds pure formatters (bytes, rate, ETA, one bar line of
an exact width); below them are the *sinks*, one object per file download,
that the engine feeds with the same three calls whatever is shown:

``start(total, initial=0)``
    The body is about to be streamed; ``total`` is the full size in bytes
    (``None`` when the server gives none) and ``initial`` the bytes already
    on disk (a resumed ``.part``). May be called again when a download
    restarts or resumes after a retry.
``update(done)``
    ``done`` is the absolute number of bytes of the file present so far.
    Called once per received buffer, so every sink keeps it cheap: at most
    one clock read, and at most ~10 redraws a second.
``finish(ok)``
    The download ended, verified (``ok=True``) or failed. Later calls are
    ignored.

A sink never raises because of its output: a closed or broken stream turns
it silent, and characters the stream cannot encode are replaced. Per-file
sinks are not thread-safe (one thread drives one file); :class:`AggregateSink`
is. Nothing here uses colours or escape sequences other than ``\\r``.
"""

from __future__ import annotations

import math
import os
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any, Final, TextIO

__all__ = [
    "DOWNLOADED",
    "FAILED",
    "PRESENT",
    "RESUMED",
    "AggregateSink",
    "BarSink",
    "CallbackSink",
    "ItemTally",
    "LineSink",
    "NullAggregate",
    "NullSink",
    "classify_item",
    "format_aggregate_line",
    "format_bar_line",
    "format_batch_summary",
    "format_bytes",
    "format_duration",
    "format_eta",
    "format_log_line",
    "format_rate",
    "is_terminal",
    "make_aggregate",
    "make_sink",
    "terminal_columns",
    "wrap_words",
]

#: Seconds between two redraws of a live bar: smooth to the eye, and cheap
#: next to the ~1000 buffers a second a fast download delivers.
REDRAW_INTERVAL: Final = 0.1
#: Seconds of history behind the displayed rate: long enough to smooth TCP
#: bursts, short enough to follow a real change of speed.
RATE_WINDOW: Final = 5.0
#: ETAs beyond this many seconds (100 hours) carry no information.
MAX_ETA: Final = 100 * 3600
#: Outside a terminal (a log, a notebook, a pipe) a progress line is printed
#: when both this many seconds have passed and this fraction more is done
#: since the last one: every 10 % or every 30 s, whichever is rarer. A log
#: gets a line a minute at most for a slow file and ten for a fast one.
LOG_INTERVAL: Final = 30.0
LOG_STEP: Final = 0.1

# ASCII, not "…": a stream with a legacy encoding (LANG=C on an HPC node)
# must never fail on the progress display.
_ELLIPSIS: Final = "..."
_MIN_LABEL: Final = 12
#: The narrowest bar worth drawing: below it the statistics give up parts
#: (the total, then the rate) before the bar does, so that a 60-column
#: terminal still shows one.
_MIN_BAR: Final = 8
_MAX_BAR: Final = 30
_UNITS: Final = ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
# Width of format_bytes() and format_rate() at their widest ("9.99 KiB"),
# so that numbers changing length do not make the bar jump.
_BYTES_WIDTH: Final = 8
_RATE_WIDTH: Final = 10


# --------------------------------------------------------------------------
# Pure formatters


def format_bytes(n: int) -> str:
    """Format a byte count with binary units and three significant digits.

    Parameters
    ----------
    n : int
        A number of bytes, at least 0.

    Returns
    -------
    str
        At most 8 characters: plain bytes below 1000, otherwise KiB, MiB,
        ... with as many decimals as keep three significant digits.

    Raises
    ------
    ValueError
        If ``n`` is negative.

    Examples
    --------
    >>> format_bytes(999)
    '999 B'
    >>> format_bytes(1024)
    '1.00 KiB'
    >>> format_bytes(12_900_000)
    '12.3 MiB'
    >>> format_bytes(3 * 1024**3 // 2)
    '1.50 GiB'
    """
    if n < 0:
        raise ValueError(f"a byte count cannot be negative: {n!r}")
    if n < 1000:
        return f"{int(n)} B"
    value = float(n)
    for unit in _UNITS:
        value /= 1024.0
        # round() and the f-string round the same way, so the test matches
        # what is printed ("9.996" must not print as "10.00").
        for limit, decimals in ((10, 2), (100, 1), (1000, 0)):
            if round(value, decimals) < limit:
                return f"{value:.{decimals}f} {unit}"
    return f"{value:.0f} {_UNITS[-1]}"


def format_rate(bytes_per_s: float | None) -> str:
    """Format a transfer rate.

    Parameters
    ----------
    bytes_per_s : float or None
        Bytes per second; ``None``, negative or non-finite means unknown.

    Returns
    -------
    str
        For example ``'4.56 MiB/s'``, or ``'-- B/s'`` when unknown.

    Examples
    --------
    >>> format_rate(2.5 * 1024**2)
    '2.50 MiB/s'
    >>> format_rate(None)
    '-- B/s'
    """
    if bytes_per_s is None or not math.isfinite(bytes_per_s) or bytes_per_s < 0:
        return "-- B/s"
    return format_bytes(round(bytes_per_s)) + "/s"


def _clock_text(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes:02d}:{secs:02d}"


def format_eta(seconds: float | None) -> str:
    """Format an estimated time to completion.

    Parameters
    ----------
    seconds : float or None
        Seconds left; ``None``, negative, non-finite or 100 hours and more
        mean unknown. Rounded up, so a download never shows ``00:00`` while
        it still has bytes to go.

    Returns
    -------
    str
        ``'MM:SS'`` below an hour, ``'H:MM:SS'`` above, ``'--:--'`` unknown.

    Examples
    --------
    >>> format_eta(61.2)
    '01:02'
    >>> format_eta(3725)
    '1:02:05'
    >>> format_eta(None)
    '--:--'
    """
    if seconds is None or not math.isfinite(seconds) or not 0 <= seconds < MAX_ETA:
        return "--:--"
    return _clock_text(math.ceil(seconds))


def format_duration(seconds: float) -> str:
    """Format an elapsed time for a summary line.

    Parameters
    ----------
    seconds : float
        Elapsed seconds (negative counts as 0).

    Returns
    -------
    str
        ``'12.3 s'`` below a minute, else ``'M:SS'`` or ``'H:MM:SS'``.

    Examples
    --------
    >>> format_duration(2.345)
    '2.3 s'
    >>> format_duration(75)
    '01:15'
    """
    seconds = max(seconds, 0.0)
    if seconds < 59.95:
        return f"{seconds:.1f} s"
    return _clock_text(round(seconds))


def _printable(text: str) -> str:
    # File names and S3 keys may hold control characters; written raw they
    # would break the line or drive the terminal.
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _char_width(char: str) -> int:
    import unicodedata  # noqa: PLC0415 - only non-ASCII labels need it

    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in "WF" else 1


def _cell_width(text: str) -> int:
    if text.isascii():
        return len(text)
    return sum(_char_width(c) for c in text)


def _take_left(text: str, cells: int) -> str:
    if text.isascii():
        return text[:cells]
    used = 0
    for i, char in enumerate(text):
        used += _char_width(char)
        if used > cells:
            return text[:i]
    return text


def _take_right(text: str, cells: int) -> str:
    return _take_left(text[::-1], cells)[::-1]


def _truncate_middle(text: str, cells: int) -> str:
    if _cell_width(text) <= cells:
        return text
    if cells <= len(_ELLIPSIS) + 1:
        return _take_left(text, cells)
    keep = cells - len(_ELLIPSIS)
    # The end of a name (extension, last path part) tells files apart best.
    left = keep // 2
    return _take_left(text, left) + _ELLIPSIS + _take_right(text, keep - left)


def _bar(fraction: float, inner: int) -> str:
    filled = int(fraction * inner)
    return "[" + "#" * filled + " " * (inner - filled) + "]"


def _pad(line: str, width: int) -> str:
    gap = width - _cell_width(line)
    if gap < 0:
        return _take_left(line, width)
    return line + " " * gap


def _layout(label: str, fraction: float | None, variants: list[str], width: int) -> str:
    """Fit ``label [bar] stats`` into ``width`` cells.

    ``variants`` are the statistics, most complete first. With a bar, each
    variant is tried in turn: with the whole label, then with the label cut
    in the middle down to ``_MIN_LABEL``, the bar never narrower than
    ``_MIN_BAR``. Only when no variant leaves room for a usable bar does the
    bar go; then the label and the statistics share the line as before, and
    last the label is cut to whatever remains.
    """
    if width <= 0:
        return ""
    label_width = _cell_width(label)
    min_label = min(label_width, _MIN_LABEL)
    if fraction is not None:
        for stats in variants:
            # label, " [", inner, "] ", stats
            room = width - len(stats) - 4
            inner = min(_MAX_BAR, room - label_width)
            if inner >= _MIN_BAR:
                return _pad(f"{label} {_bar(fraction, inner)} {stats}", width)
            if room - _MIN_BAR >= min_label:
                short = _truncate_middle(label, room - _MIN_BAR)
                return _pad(f"{short} {_bar(fraction, _MIN_BAR)} {stats}", width)
    for stats in variants:
        room = width - len(stats) - 1
        if room >= min_label:
            return _pad(f"{_truncate_middle(label, room)} {stats}", width)
    stats = variants[-1]
    room = width - len(stats) - 1
    if room > len(_ELLIPSIS) + 1:
        return _pad(f"{_truncate_middle(label, room)} {stats}", width)
    return _pad(stats, width)


def format_bar_line(
    label: str,
    done: int,
    total: int | None,
    rate: float | None,
    eta: float | None,
    *,
    width: int,
) -> str:
    """Format one line of a live progress bar, exactly ``width`` cells wide.

    Parameters
    ----------
    label : str
        What is downloaded (an S3 key or a URL); cut in the middle with
        ``...`` when space is short. Control characters are escaped.
    done : int
        Bytes of the file present so far.
    total : int or None
        The file's size; ``None`` shows bytes and rate only (no bar, no
        percentage, no ETA).
    rate : float or None
        Current rate in bytes per second, ``None`` when not known yet.
    eta : float or None
        Seconds left, ``None`` when unknown.
    width : int
        Terminal cells available. The result is padded with spaces (so it
        overwrites a longer previous line after ``\\r``) and never longer.

    Returns
    -------
    str
        ``label [####      ]  45% 12.3 MiB/27.3 MiB 4.56 MiB/s ETA 00:03``;
        as space shrinks the bar shrinks first, then the label, then the
        bar goes, then ETA, rate and sizes.

    Examples
    --------
    >>> format_bar_line("a.fits", 512, 1024, 256.0, 2.0, width=70)
    'a.fits [########         ]  50%    512 B/1.00 KiB    256 B/s ETA 00:02'
    >>> format_bar_line("a.fits", 512, 1024, 256.0, 2.0, width=60)
    'a.fits [########        ]  50%    512 B    256 B/s ETA 00:02'
    >>> format_bar_line("a.fits", 512, None, None, None, width=30)
    'a.fits    512 B     -- B/s    '
    """
    label = _printable(label)
    done_text = format_bytes(max(done, 0)).rjust(_BYTES_WIDTH)
    rate_text = format_rate(rate).rjust(_RATE_WIDTH)
    if total is None:
        return _layout(label, None, [f"{done_text} {rate_text}", done_text.lstrip()], width)
    fraction = 1.0 if total <= 0 else min(max(done / total, 0.0), 1.0)
    percent = f"{int(fraction * 100):3d}%"
    head = f"{percent} {done_text}/{format_bytes(max(total, 0))}"
    eta_text = f"ETA {format_eta(eta)}"
    # The total goes first, then the rate: the bar and the percentage already
    # say how far it is, and the ETA is what a waiting user reads.
    variants = [
        f"{head} {rate_text} {eta_text}",
        f"{percent} {done_text} {rate_text} {eta_text}",
        f"{percent} {done_text} {eta_text}",
        f"{percent} {eta_text}",
        percent,
    ]
    return _layout(label, fraction, variants, width)


def format_aggregate_line(
    finished: int,
    count: int | None,
    failed: int,
    done_bytes: int,
    rate: float | None,
    eta: float | None = None,
    *,
    width: int,
) -> str:
    """Format the live line of a many-file download, ``width`` cells wide.

    Parameters
    ----------
    finished : int
        Files finished, failed ones included.
    count : int or None
        Files in the whole batch; ``None`` when not known (no bar).
    failed : int
        Files that failed.
    done_bytes : int
        Bytes transferred so far, all files together.
    rate : float or None
        Current aggregate rate in bytes per second.
    eta : float or None, optional
        Seconds left for the whole batch (an estimate), ``None`` when unknown.
    width : int
        Terminal cells available.

    Returns
    -------
    str
        ``12/200 files [##        ] 1 failed 345 MiB 12.3 MiB/s ETA 03:10``
        fitted as in :func:`format_bar_line` (the ETA goes first, then the
        rate).

    Examples
    --------
    >>> format_aggregate_line(1, 4, 0, 2048, None, width=60)
    '1/4 files [####              ] 2.00 KiB     -- B/s ETA --:--'
    """
    label = f"{finished}/{count} files" if count is not None else f"{finished} files"
    fraction = None
    if count is not None:
        fraction = 1.0 if count <= 0 else min(max(finished / count, 0.0), 1.0)
    failed_text = f"{failed} failed " if failed else ""
    size = format_bytes(max(done_bytes, 0))
    # Fixed-width numbers keep the bar from jumping as they grow.
    padded = failed_text + size.rjust(_BYTES_WIDTH)
    rate_text = format_rate(rate).rjust(_RATE_WIDTH)
    variants = [
        f"{padded} {rate_text} ETA {format_eta(eta)}",
        f"{padded} {rate_text}",
        padded,
        failed_text.strip() or size,
    ]
    return _layout(label, fraction, variants, width)


def format_batch_summary(
    downloaded: int, resumed: int, present: int, failed: int, moved: int, elapsed: float
) -> str:
    """Format the one summary line of a batch (``download_many``, the command line).

    Parameters
    ----------
    downloaded : int
        Files transferred whole in this run.
    resumed : int
        Files completed from a ``.part`` an earlier run left.
    present : int
        Files already in place, nothing transferred (a cache hit, or one that
        another process just downloaded).
    failed : int
        Items that failed.
    moved : int
        Bytes actually transferred in this run, all items together (bytes
        already on disk not counted).
    elapsed : float
        Seconds the batch took; the rate is ``moved / elapsed``.

    Returns
    -------
    str
        One line.

    Examples
    --------
    >>> format_batch_summary(3, 1, 1, 0, 3 * 1024**2, 1.5)
    '3 downloaded, 1 resumed, 1 already present, 0 failed; 3.00 MiB in 1.5 s (2.00 MiB/s)'
    >>> format_batch_summary(0, 0, 2, 1, 0, 0.25)
    '0 downloaded, 0 resumed, 2 already present, 1 failed; nothing transferred (0.2 s)'
    """
    counts = (
        f"{downloaded} downloaded, {resumed} resumed, {present} already present, {failed} failed"
    )
    if moved <= 0:
        return f"{counts}; nothing transferred ({format_duration(elapsed)})"
    rate = format_rate(moved / elapsed) if elapsed > 0 else format_rate(None)
    return f"{counts}; {format_bytes(moved)} in {format_duration(elapsed)} ({rate})"


# Joins a number to its unit in the final line, so that wrap_words never
# breaks "12.0 MiB" across two lines.
_GLUE: Final = "\x00"
#: What follows a number as its unit: never put on the next line without it.
_UNIT_WORDS: Final = frozenset(("B", "s", *_UNITS))


def wrap_words(text: str, width: int) -> str:
    """Break ``text`` at spaces so that a terminal ``width`` cells wide splits no word.

    A word longer than a whole line (a long URL) is left to the terminal to
    wrap, which splits only that word; a number is never split from its
    unit (they are joined by ``_GLUE`` until here).

    Examples
    --------
    >>> wrap_words("Downloading http://h/a.fits to a.fits ... [Done]", 30)
    'Downloading http://h/a.fits to\\na.fits ... [Done]'
    >>> wrap_words("1 failed; 200 MiB in 40.3 s (4.96 MiB/s)", 24)
    '1 failed; 200 MiB in\\n40.3 s (4.96 MiB/s)'
    """
    words: list[str] = []
    for word in text.split(" "):
        if (
            words
            and words[-1][-1:].isdigit()
            and word.rstrip(",;)").partition("/")[0] in _UNIT_WORDS
        ):
            words[-1] += _GLUE + word  # "36.4 s", "12.0 MiB/s," stay together
        else:
            words.append(word)
    out: list[str] = []
    column = 0  # where the terminal's cursor is, its own wrapping included
    for word in words:
        cells = _cell_width(word)
        if column and column + 1 + cells > width and cells <= width:
            out.append("\n")
            column = 0
        elif out:
            out.append(" ")
            column += 1
        out.append(word)
        column += cells
        if column > width > 0:
            column %= width  # the terminal wrapped the long word itself
    return "".join(out).replace(_GLUE, " ")


def _glued(text: str) -> str:
    return text.replace(" ", _GLUE)


def _done_suffix(done: int, total: int | None, elapsed: float, moved: int, ok: bool) -> str:
    """`` [Done] (...)``: the size, and what this run moved where it differs (a resume)."""
    size = _glued(format_bytes(max(done, 0)))
    if not ok:
        of = f" of {_glued(format_bytes(total))}" if total is not None else ""
        return f" [Failed] ({size}{of})"
    if moved <= 0 or elapsed <= 0:
        return f" [Done] ({size})"
    took = _glued(f"in {format_duration(elapsed)}")
    rate = _glued(format_rate(moved / elapsed))
    if moved < done:
        return f" [Done] ({size}, resumed: {_glued(format_bytes(moved))} {took}, {rate})"
    return f" [Done] ({size} {took}, {rate})"


# --------------------------------------------------------------------------
# Sinks


def _is_terminal(stream: Any, env: Mapping[str, str] | None = None) -> bool:
    if env is None:
        env = os.environ
    if env.get("TERM") == "dumb":
        # Emacs shell buffers and similar set TERM=dumb and render "\r" badly.
        return False
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if isatty is not None else False
    except (OSError, ValueError):
        return False


def is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is a terminal that takes ``\\r`` redraws (not ``TERM=dumb``)."""
    return _is_terminal(stream)


def terminal_columns(stream: Any = None) -> int:
    """The cells a line may use on ``stream``'s terminal: its width less one (see ``_columns``).

    ``stream`` (default stdout) is asked itself: stderr may be a terminal
    while stdout is a pipe (``pyvo-dl ... | cat``).
    """
    try:
        columns = os.get_terminal_size(stream.fileno()).columns if stream is not None else None
    except (AttributeError, OSError, ValueError):
        columns = None
    if columns is None:
        return _columns(None)
    return _columns(lambda: columns)


def _columns(width_fn: Callable[[], Any] | None) -> int:
    if width_fn is None:
        import shutil  # noqa: PLC0415 - only a live bar needs it

        columns = shutil.get_terminal_size().columns
    else:
        size = width_fn()
        columns = size if isinstance(size, int) else int(size.columns)
    # One cell short of the edge: some terminals (Windows consoles) wrap as
    # soon as the last column is written, and "\r" would then redraw below.
    return max(columns - 1, 1)


# The sink whose line is open on the screen (a LineSink between its start
# and finish, a bar being redrawn), so that a message printed meanwhile can
# first move it out of the way instead of landing in the middle of it.
_open_line: Any = None


def clear_line() -> None:
    """Make room for a message line: end or erase the progress line on screen."""
    global _open_line
    sink, _open_line = _open_line, None
    if sink is not None:
        sink._interrupt()


def _set_open(sink: Any) -> None:
    global _open_line
    _open_line = sink


def _set_closed(sink: Any) -> None:
    global _open_line
    if _open_line is sink:
        _open_line = None


class _StreamSink:
    """Base of the sinks that print: output never fails a download."""

    def _interrupt(self) -> None:
        """A message is about to be printed: get the progress line out of its way."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._broken = False

    def _write(self, text: str) -> None:
        if self._broken:
            return
        try:
            try:
                self._stream.write(text)
            except UnicodeEncodeError:
                encoding = getattr(self._stream, "encoding", None) or "ascii"
                self._stream.write(text.encode(encoding, "replace").decode(encoding))
            self._stream.flush()
        except (OSError, ValueError, LookupError):
            # A closed stdout or a broken pipe (`pyvo-dl ... | head`): go
            # silent, the download itself goes on.
            self._broken = True


class NullSink:
    """A sink that shows nothing (``progress=False``).

    Examples
    --------
    >>> sink = NullSink()
    >>> sink.start(10); sink.update(10); sink.finish(True)
    """

    __slots__ = ()

    def for_file(self, label: str, path: str) -> NullSink:
        """Called by :func:`make_sink`: itself, at once (no check of what it is per file)."""
        return self

    def start(self, total: int | None, initial: int = 0) -> None:
        """Do nothing; see the module docstring for the protocol."""

    def update(self, done: int) -> None:
        """Do nothing; see the module docstring for the protocol."""

    def finish(self, ok: bool) -> None:
        """Do nothing; see the module docstring for the protocol."""


class CallbackSink:
    """A sink that reports to a caller's function (``progress=fn``).

    Parameters
    ----------
    fn : callable
        Called as ``fn(done, total)`` with bytes present so far and the size
        (``None`` when unknown): once at ``start`` (with the resumed byte
        count), at every ``update`` (not throttled: up to ~1000 calls a
        second) and, when the download succeeded, a last time as
        ``fn(total, total)`` unless that was already the last call. When the
        size was unknown that last call is ``fn(done, done)``. An exception
        raised by ``fn`` propagates, which lets a caller abort a download.

    Examples
    --------
    >>> calls = []
    >>> sink = CallbackSink(lambda done, total: calls.append((done, total)))
    >>> sink.start(4); sink.update(4); sink.finish(True)
    >>> calls
    [(0, 4), (4, 4)]
    """

    __slots__ = ("_done", "_finished", "_fn", "_total")

    def __init__(self, fn: Callable[[int, int | None], object]) -> None:
        self._fn = fn
        self._total: int | None = None
        self._done = 0
        self._finished = False

    def start(self, total: int | None, initial: int = 0) -> None:
        """Record the size and report the starting point."""
        self._total = total
        self._done = initial
        self._fn(initial, total)

    def update(self, done: int) -> None:
        """Report ``(done, total)``."""
        self._done = done
        self._fn(done, self._total)

    def finish(self, ok: bool) -> None:
        """On success make sure the last report is ``(total, total)``."""
        if self._finished:
            return
        self._finished = True
        if not ok:
            return
        final = self._total if self._total is not None else self._done
        if self._done != final or self._total != final:
            self._fn(final, final)


class _LogSchedule:
    """When a progress line is due outside a terminal: every 10 % or 30 s, whichever is rarer."""

    __slots__ = ("_at", "_fraction")

    def __init__(self, now: float) -> None:
        self._at = now
        self._fraction = 0.0

    def due(self, now: float, fraction: float | None) -> bool:
        """Whether to print now; ``fraction`` done so far (``None``: unknown, time alone)."""
        if now - self._at < LOG_INTERVAL:
            return False
        if fraction is not None:
            if fraction - self._fraction < LOG_STEP:
                return False
            self._fraction = fraction
        self._at = now
        return True


def format_log_line(
    label: str, done: int, total: int | None, rate: float | None, eta: float | None
) -> str:
    """Format a progress line for a log (no bar, no padding).

    Examples
    --------
    >>> format_log_line("x.fits", 512, 1024, 256.0, 2.0)
    'x.fits  50% 512 B of 1.00 KiB, 256 B/s, ETA 00:02'
    >>> format_log_line("x.fits", 512, None, None, None)
    'x.fits 512 B, -- B/s'
    """
    if total is None:
        return f"{_printable(label)} {format_bytes(max(done, 0))}, {format_rate(rate)}"
    fraction = 1.0 if total <= 0 else min(max(done / total, 0.0), 1.0)
    return (
        f"{_printable(label)} {int(fraction * 100):3d}% {format_bytes(max(done, 0))} of "
        f"{format_bytes(max(total, 0))}, {format_rate(rate)}, ETA {format_eta(eta)}"
    )


class LineSink(_StreamSink):
    """One line per file, for logs, notebooks and pipes.

    Writes ``Downloading {label} to {path} ...`` at ``start`` and
    `` [Done]`` or `` [Failed]`` plus a newline at ``finish``: the line of
    pyvo's documentation (``Downloading <key> to <file> ... [Done]``). A
    long download also gets progress lines in between, every 10 % or every
    30 s, whichever is rarer (``LOG_STEP``, ``LOG_INTERVAL``), never one per
    buffer; it then ends with the whole line again, so that the outcome is
    on one line with the source and the path.

    Parameters
    ----------
    label : str
        What is downloaded: the S3 key or the URL.
    path : str
        The local path written.
    stream : file-like
        A text stream with ``write`` and ``flush``.
    clock : callable, optional
        Monotonic seconds; default ``time.monotonic`` (injected in tests).

    Examples
    --------
    >>> import io
    >>> out = io.StringIO()
    >>> sink = LineSink("data/x.fits", "x.fits", out)
    >>> sink.start(100); sink.update(100); sink.finish(True)
    >>> out.getvalue()
    'Downloading data/x.fits to x.fits ... [Done]\\n'
    """

    def __init__(
        self, label: str, path: str, stream: TextIO, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(stream)
        path = _printable(os.fspath(path))
        self._head = f"Downloading {_printable(label)} to {path} ..."
        self._short = os.path.basename(path) or _printable(label)
        self._clock = clock
        self._started = False
        self._finished = False
        self._total: int | None = None
        self._initial = 0
        self._began = 0.0
        self._schedule: _LogSchedule | None = None
        # Below this many bytes no progress line can be due: no clock read.
        self._next_check = 0

    def start(self, total: int | None, initial: int = 0) -> None:
        """Write the start of the line, once; (re)start counting from ``initial``."""
        now = self._clock()
        self._total = total
        self._initial = initial
        self._began = now
        if self._schedule is None:
            self._schedule = _LogSchedule(now)
        self._set_next_check(initial)
        if not self._started:
            self._started = True
            self._write(self._head)
            _set_open(self)

    def _set_next_check(self, done: int) -> None:
        total = self._total
        self._next_check = done + int(LOG_STEP * total) if total else 0

    def _interrupt(self) -> None:
        # End the open line; finish() then writes the whole line again.
        if self._started and not self._finished:
            self._write("\n")
            self._started = False

    def update(self, done: int) -> None:
        """Print a progress line when one is due (see the class docstring)."""
        if done < self._next_check or self._schedule is None:
            return
        now = self._clock()
        total = self._total
        fraction = done / total if total else None
        if not self._schedule.due(now, fraction):
            if total:
                # Not yet 30 s: look again 1 % further on, not at every buffer.
                self._next_check = done + max(total // 100, 1)
            return
        self._set_next_check(done)
        elapsed = now - self._began
        moved = done - self._initial
        rate = moved / elapsed if elapsed > 0 and moved > 0 else None
        eta = (total - done) / rate if rate and total is not None else None
        if self._started:
            self._write("\n")  # end "Downloading ... ..." before the first progress line
            self._started = False
            _set_closed(self)
        self._write("  " + format_log_line(self._short, done, total, rate, eta) + "\n")

    def finish(self, ok: bool) -> None:
        """End the line with `` [Done]`` or `` [Failed]``."""
        if self._finished:
            return
        self._finished = True
        _set_closed(self)
        end = " [Done]\n" if ok else " [Failed]\n"
        if self._started:
            self._write(end)
        else:
            self._started = True
            self._write(self._head + end)


class _RateMeter:
    """Rate over the last ``RATE_WINDOW`` seconds, from redraw-time samples."""

    __slots__ = ("_samples",)

    def __init__(self) -> None:
        # A list: collections.deque is not worth its import for a few samples.
        self._samples: list[tuple[float, int]] = []

    def reset(self, now: float, done: int) -> None:
        self._samples.clear()
        self._samples.append((now, done))

    def add(self, now: float, done: int) -> None:
        samples = self._samples
        samples.append((now, done))
        while len(samples) > 2 and now - samples[1][0] >= RATE_WINDOW:
            del samples[0]

    def rate(self) -> float | None:
        if len(self._samples) < 2:
            return None
        (t0, d0), (t1, d1) = self._samples[0], self._samples[-1]
        if t1 <= t0:
            return None
        return max(d1 - d0, 0) / (t1 - t0)


class BarSink(_StreamSink):
    """A live bar redrawn in place on a terminal.

    Shows the label, a bar, percentage, bytes done and total, the rate over
    the last few seconds and the ETA, redrawn with ``\\r`` at most
    ``1 / REDRAW_INTERVAL`` times a second, no colours. ``finish`` replaces
    it with ``Downloading {label} to {path} ... [Done] (size in time,
    average rate)`` and a newline.

    Parameters
    ----------
    label : str
        What is downloaded: the S3 key or the URL.
    path : str
        The local path written.
    stream : file-like
        A terminal text stream.
    width_fn : callable, optional
        Returns the terminal size (an object with ``.columns``, or an int);
        default ``shutil.get_terminal_size``. Asked at every redraw, so a
        resized window is followed. One column is left free.
    clock : callable, optional
        Monotonic seconds; default ``time.monotonic`` (injected in tests).
    """

    def __init__(
        self,
        label: str,
        path: str,
        stream: TextIO,
        width_fn: Callable[[], Any] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(stream)
        self._label = _printable(label)
        self._path = _printable(os.fspath(path))
        # The bar names the file, which fits; the last line names the source.
        self._short = os.path.basename(self._path) or self._label
        self._width_fn = width_fn
        self._clock = clock
        self._meter = _RateMeter()
        self._total: int | None = None
        self._done = 0
        self._segment_start = 0
        self._moved = 0
        self._started_at: float | None = None
        self._next_draw = 0.0
        self._finished = False

    def start(self, total: int | None, initial: int = 0) -> None:
        """Start (or restart after a retry) at ``initial`` bytes and draw."""
        now = self._clock()
        if self._started_at is None:
            self._started_at = now
        else:
            self._moved += max(self._done - self._segment_start, 0)
        self._total = total
        self._done = self._segment_start = initial
        self._meter.reset(now, initial)
        self._draw(now)

    def update(self, done: int) -> None:
        """Record progress; redraw when the last redraw is old enough."""
        self._done = done
        now = self._clock()
        if now >= self._next_draw:
            self._meter.add(now, done)
            self._draw(now)

    def _draw(self, now: float) -> None:
        self._next_draw = now + REDRAW_INTERVAL
        rate = self._meter.rate()
        eta = None
        if self._total is not None and rate:
            eta = max(self._total - self._done, 0) / rate
        width = _columns(self._width_fn)
        line = format_bar_line(self._short, self._done, self._total, rate, eta, width=width)
        self._write("\r" + line)
        _set_open(self)

    def _interrupt(self) -> None:
        # Erase the bar; the next update draws it again below the message.
        self._write("\r" + " " * _columns(self._width_fn) + "\r")
        self._next_draw = 0.0

    def finish(self, ok: bool) -> None:
        """Replace the bar with the summary line and end it."""
        if self._finished:
            return
        self._finished = True
        _set_closed(self)
        now = self._clock()
        started = self._started_at if self._started_at is not None else now
        moved = self._moved + max(self._done - self._segment_start, 0)
        suffix = _done_suffix(self._done, self._total, now - started, moved, ok)
        width = _columns(self._width_fn)
        # Broken at spaces to the terminal's width, so that the terminal never
        # wraps it in the middle of a number.
        line = wrap_words(f"Downloading {self._label} to {self._path} ...{suffix}", width)
        self._write(f"\r{' ' * width}\r{line}\n")


def make_sink(
    progress: bool | Callable[[int, int | None], object] | None,
    label: str,
    path: str,
    stream: TextIO | None = None,
) -> NullSink | CallbackSink | LineSink | BarSink:
    """Choose the sink for one file download.

    Parameters
    ----------
    progress : bool, None, callable or sink
        ``False``/``None``: silent. A callable: :class:`CallbackSink`.
        ``True``: :class:`BarSink` on a terminal (``stream.isatty()`` and
        ``TERM`` is not ``dumb``), :class:`LineSink` elsewhere. An object
        with ``start``, ``update`` and ``finish`` (such as
        ``AggregateSink.child()``) is returned as it is.
    label : str
        What is downloaded: the S3 key or the URL.
    path : str
        The local path written.
    stream : file-like, optional
        Where to print; default ``sys.stdout`` as it is at this call (so
        doctest and ``contextlib.redirect_stdout`` capture it). With no
        stdout at all (``pythonw``) the sink is silent.

    Returns
    -------
    NullSink, CallbackSink, BarSink or LineSink

    Examples
    --------
    >>> import io
    >>> type(make_sink(True, "k", "f", io.StringIO())).__name__
    'LineSink'
    >>> type(make_sink(False, "k", "f")).__name__
    'NullSink'
    """
    for_file = getattr(progress, "for_file", None)
    if for_file is not None:
        # A child of download_many's aggregate, told which file it shows.
        return for_file(label, path)  # type: ignore[no-any-return]
    if all(hasattr(progress, name) for name in ("start", "update", "finish")):
        # Already a sink (an ItemTally, say).
        return progress  # type: ignore[return-value]
    if callable(progress):
        return CallbackSink(progress)
    if not progress:
        return NullSink()
    if stream is None:
        stream = sys.stdout
        if stream is None:
            return NullSink()
    if _is_terminal(stream):
        return BarSink(label, path, stream)
    return LineSink(label, path, stream)


#: What became of one item of a batch, as the summary counts it.
DOWNLOADED: Final = "downloaded"
RESUMED: Final = "resumed"
PRESENT: Final = "already present"
FAILED: Final = "failed"


def classify_item(ok: bool, started: bool, initial: int) -> str:
    """Say what became of one item, from what its progress sink saw.

    Parameters
    ----------
    ok : bool
        The item ended with its file in place.
    started : bool
        A body transfer started (``start`` was called): a cache hit, or a
        file another process had just downloaded, never starts one.
    initial : int
        The bytes already on disk at the first ``start``: more than 0 is a
        ``.part`` left by an earlier run, continued.

    Returns
    -------
    str
        ``DOWNLOADED``, ``RESUMED``, ``PRESENT`` or ``FAILED``.

    Examples
    --------
    >>> classify_item(True, False, 0)
    'already present'
    >>> classify_item(True, True, 4096)
    'resumed'
    """
    if not ok:
        return FAILED
    if not started:
        return PRESENT
    return RESUMED if initial > 0 else DOWNLOADED


class AggregateSink(_StreamSink):
    """One display and one tally for many concurrent file downloads (``download_many``).

    Thread-safe: every method takes an internal lock. Each item is counted
    once, by the caller, with :meth:`item_done`: downloaded, resumed,
    already present or failed (:func:`classify_item`); bytes come from the
    per-file sinks made by :meth:`child`, and count only what this run
    transferred (bytes resumed from a ``.part`` do not). On a terminal it
    keeps one live line (files finished/count, a bar over files, failures,
    bytes, rate, ETA), redrawn at most ``1 / REDRAW_INTERVAL`` times a
    second; elsewhere it prints a progress line every 10 % or every 30 s,
    whichever is rarer. :meth:`close` prints the summary line
    (:func:`format_batch_summary`) unless ``summary=False`` (the command
    line prints its own, on stderr).

    A batch of one item shows that file's own display instead (its bar, or
    its ``Downloading ... [Done]`` line), as a single download would.

    Parameters
    ----------
    count : int, optional
        Items in the batch, when known (:meth:`begin` sets it later).
    stream : file-like, optional
        Default ``sys.stdout`` as it is at construction.
    tty : bool, optional
        Force the live display on or off; default: the stream is a terminal
        and ``TERM`` is not ``dumb``.
    width_fn : callable, optional
        As for :class:`BarSink`.
    clock : callable, optional
        Monotonic seconds; default ``time.monotonic``.
    callback : callable, optional
        Called as ``callback(files_finished, count)`` whenever items are
        counted, under the lock (so never concurrently). With a callback
        nothing is printed.
    summary : bool, optional
        Print the summary line at :meth:`close` (default True).

    Attributes
    ----------
    files_started, files_downloaded, files_resumed, files_present, files_failed : int
        Transfers started; items by outcome.
    bytes_done : int
        Bytes transferred in this run, all items together.
    bytes_expected : int
        Bytes still to transfer of the started files whose size is known.

    Examples
    --------
    >>> import io
    >>> out = io.StringIO()
    >>> agg = AggregateSink(2, out, clock=lambda: 0.0)
    >>> for ok in (True, False):
    ...     child = agg.child()
    ...     child.start(10); child.update(10); child.finish(ok)
    ...     agg.item_done(ok, child)
    >>> agg.close()
    >>> out.getvalue()
    '1 downloaded, 0 resumed, 0 already present, 1 failed; 20 B in 0.0 s (-- B/s)\\n'
    """

    def __init__(
        self,
        count: int | None = None,
        stream: TextIO | None = None,
        *,
        tty: bool | None = None,
        width_fn: Callable[[], Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        callback: Callable[[int, int | None], object] | None = None,
        summary: bool = True,
    ) -> None:
        import threading  # noqa: PLC0415 - kept off the import path (SPEC §6)

        if stream is None:
            stream = sys.stdout
        super().__init__(stream)
        if stream is None or callback is not None:
            self._broken = True
        self._live = not self._broken and (_is_terminal(stream) if tty is None else tty)
        self._lock = threading.Lock()
        self._count = count
        self._callback = callback
        self._summary = summary
        self._width_fn = width_fn
        self._clock = clock
        self._started_at = clock()
        self._meter = _RateMeter()
        self._meter.reset(self._started_at, 0)
        self._next_draw = self._started_at
        self._schedule = _LogSchedule(self._started_at)
        self._next_log_bytes = 0
        self._closed = False
        self.files_started = 0
        self.files_downloaded = 0
        self.files_resumed = 0
        self.files_present = 0
        self.files_failed = 0
        self._started_and_done = 0
        self._sized_started = 0
        self._sized_total = 0
        self.bytes_done = 0
        self.bytes_expected = 0

    @property
    def files_finished(self) -> int:
        """Items counted so far, whatever their outcome."""
        return self.files_downloaded + self.files_resumed + self.files_present + self.files_failed

    def begin(self, count: int) -> None:
        """Set the number of items, once the batch knows it (after listing prefixes)."""
        with self._lock:
            self._count = count

    def file_started(self, total: int | None, initial: int = 0) -> None:
        """Note a transfer that starts, of ``total`` bytes with ``initial`` on disk."""
        with self._lock:
            self.files_started += 1
            if total is not None:
                self.bytes_expected += max(total - initial, 0)
                self._sized_started += 1
                self._sized_total += total

    def file_progress(self, delta_bytes: int) -> None:
        """Add ``delta_bytes`` newly received bytes (any file)."""
        with self._lock:
            self.bytes_done += delta_bytes
            if self._live:
                self._maybe_draw()
            elif self.bytes_done >= self._next_log_bytes:
                self._maybe_log()

    def item_done(self, ok: bool, child: Any = None, moved: int = 0) -> None:
        """Count one finished item.

        Parameters
        ----------
        ok : bool
            It ended with its file in place.
        child : optional
            The sink :meth:`child` gave it, or any object with ``started``
            and ``initial`` (an executor's worker sends those back); None for
            an item that never reached a download.
        moved : int, optional
            Bytes it transferred that no child reported here (a worker in
            another process).
        """
        started = bool(getattr(child, "started", False))
        outcome = classify_item(ok, started, getattr(child, "initial", 0))
        with self._lock:
            if moved:
                self.bytes_done += moved
            if started:
                self._started_and_done += 1
            if outcome == DOWNLOADED:
                self.files_downloaded += 1
            elif outcome == RESUMED:
                self.files_resumed += 1
            elif outcome == PRESENT:
                self.files_present += 1
            else:
                self.files_failed += 1
            if self._callback is not None:
                self._callback(self.files_finished, self._count)
            if self._live:
                self._maybe_draw()
            else:
                self._maybe_log()

    def child(self) -> _AggregateChild:
        """Return a per-file sink (``start``/``update``/``finish``) feeding the bytes.

        Each child is driven by one thread; any number run at once. Its
        ``finish`` does not count the file: the caller does, once per item,
        with :meth:`item_done`. In a batch of one item the child also drives
        that file's own display, made when :func:`make_sink` tells it the
        file's label and path.
        """
        return _AggregateChild(self)

    def _own_display(self, label: str, path: str) -> Any:
        if self._count != 1 or self._broken:
            return None
        return make_sink(True, label, path, self._stream)

    def _eta(self, rate: float | None) -> float | None:
        """Seconds left for the batch, at ``rate``: known sizes, the mean size for the rest."""
        if not rate or self._count is None:
            return None
        in_flight = self.files_started - self._started_and_done
        unstarted = max(self._count - self.files_finished - in_flight, 0)
        remaining = max(self.bytes_expected - self.bytes_done, 0)
        if unstarted:
            if not self._sized_started:
                return None
            remaining += unstarted * self._sized_total // self._sized_started
        return remaining / rate

    def _fraction(self) -> float | None:
        if not self._count:
            return None
        return self.files_finished / self._count

    def _maybe_draw(self) -> None:
        now = self._clock()
        if now < self._next_draw or self._closed or self._count == 1:
            return
        self._next_draw = now + REDRAW_INTERVAL
        self._meter.add(now, self.bytes_done)
        rate = self._meter.rate()
        line = format_aggregate_line(
            self.files_finished,
            self._count,
            self.files_failed,
            self.bytes_done,
            rate,
            self._eta(rate),
            width=_columns(self._width_fn),
        )
        self._write("\r" + line)

    def _maybe_log(self) -> None:
        # Outside a terminal: a line every 10 % of the items or 30 s, the rarer.
        self._next_log_bytes = self.bytes_done + (1 << 20)  # no clock read per buffer
        if self._broken or self._closed or self._count == 1:
            return
        now = self._clock()
        if not self._schedule.due(now, self._fraction()):
            return
        elapsed = now - self._started_at
        rate = self.bytes_done / elapsed if elapsed > 0 and self.bytes_done else None
        count = "?" if self._count is None else str(self._count)
        text = f"{self.files_finished}/{count} files"
        if self.files_failed:
            text += f", {self.files_failed} failed"
        text += f", {format_bytes(self.bytes_done)}, {format_rate(rate)}"
        text += f", ETA {format_eta(self._eta(rate))}"
        self._write(text + "\n")

    def summary(self) -> str:
        """The summary line of what was counted so far (:func:`format_batch_summary`)."""
        with self._lock:
            return format_batch_summary(
                self.files_downloaded,
                self.files_resumed,
                self.files_present,
                self.files_failed,
                self.bytes_done,
                self._clock() - self._started_at,
            )

    def close(self) -> None:
        """Clear the live line and print the summary line (unless told not to); idempotent."""
        text = self.summary() + "\n" if self._summary else ""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._broken:
                return
            if self._live and self._count != 1:
                text = "\r" + " " * _columns(self._width_fn) + "\r" + text
            if text:
                self._write(text)


class _AggregateChild:
    """Per-file sink of an :class:`AggregateSink`: turns absolute counts into deltas.

    It also keeps what :func:`classify_item` needs: whether a transfer
    started, and the bytes already on disk when it first did.
    """

    __slots__ = ("_last", "_own", "_parent", "initial", "started")

    def __init__(self, parent: AggregateSink) -> None:
        self._parent = parent
        self._own: Any = None
        self._last = 0
        self.started = False
        self.initial = 0

    def for_file(self, label: str, path: str) -> _AggregateChild:
        """Called by :func:`make_sink` with the file's label and path: itself."""
        if self._own is None:
            self._own = self._parent._own_display(label, path)
        return self

    def start(self, total: int | None, initial: int = 0) -> None:
        """Note the transfer once; a restart only resets the byte baseline."""
        if not self.started:
            self.started = True
            self.initial = initial
            self._parent.file_started(total, initial)
        # Resumed bytes were not transferred now: they do not count.
        self._last = initial
        if self._own is not None:
            self._own.start(total, initial)

    def update(self, done: int) -> None:
        """Pass the bytes received since the last call to the aggregate."""
        delta = done - self._last
        self._last = done
        if delta > 0:
            self._parent.file_progress(delta)
        if self._own is not None:
            self._own.update(done)

    def finish(self, ok: bool) -> None:
        """End the file's own display, if any; the caller counts the item."""
        if self._own is not None:
            self._own.finish(ok)


class ItemTally:
    """A sink that only notes what :func:`classify_item` needs, and the bytes moved.

    What a worker of ``download_many(executor=...)`` runs each item with: it
    crosses back to the caller (as plain attributes) where the display is.

    Examples
    --------
    >>> tally = ItemTally()
    >>> tally.start(100, 40); tally.update(70); tally.start(100, 0); tally.update(100)
    >>> (tally.started, tally.initial, tally.moved)
    (True, 40, 130)
    """

    __slots__ = ("_last", "initial", "moved", "started")

    def __init__(self) -> None:
        self.started = False
        self.initial = 0
        self.moved = 0
        self._last = 0

    def start(self, total: int | None, initial: int = 0) -> None:
        """Note the first start's bytes on disk; count from ``initial``."""
        if not self.started:
            self.started = True
            self.initial = initial
        self._last = initial

    def update(self, done: int) -> None:
        """Add what arrived since the last call."""
        if done > self._last:
            self.moved += done - self._last
        self._last = done

    def finish(self, ok: bool) -> None:
        """Do nothing: the caller reads the attributes."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_tally_from, (self.started, self.initial, self.moved))


def _tally_from(started: bool, initial: int, moved: int) -> ItemTally:
    tally = ItemTally()
    tally.started, tally.initial, tally.moved = started, initial, moved
    return tally


class NullAggregate:
    """The silent aggregate (``download_many(progress=False)``).

    Examples
    --------
    >>> agg = NullAggregate()
    >>> type(agg.child()).__name__
    'NullSink'
    """

    __slots__ = ()

    def begin(self, count: int) -> None:
        """Do nothing."""

    def file_started(self, total: int | None, initial: int = 0) -> None:
        """Do nothing."""

    def file_progress(self, delta_bytes: int) -> None:
        """Do nothing."""

    def item_done(self, ok: bool, child: Any = None, moved: int = 0) -> None:
        """Do nothing."""

    def child(self) -> NullSink:
        """Return a :class:`NullSink`: no cost per received buffer (one for all: it has no state)."""
        return _NULL_SINK

    def close(self) -> None:
        """Do nothing."""


_NULL_SINK: Final = NullSink()


def make_aggregate(
    progress: bool | Callable[[int, int | None], object] | AggregateSink | NullAggregate | None,
    count: int | None,
    stream: TextIO | None = None,
) -> AggregateSink | NullAggregate:
    """Choose the aggregate display of a many-file download.

    Parameters
    ----------
    progress : bool, None, callable or aggregate
        ``False``/``None``: :class:`NullAggregate`. A callable: a silent
        :class:`AggregateSink` calling ``progress(files_finished, count)``
        as items finish. ``True``: an :class:`AggregateSink` printing to
        ``stream`` (live on a terminal, progress lines elsewhere, then a
        summary line). An :class:`AggregateSink` or :class:`NullAggregate`
        is used as it is, its count set (the command line's, which reads
        its tally afterwards).
    count : int or None
        Items in the batch.
    stream : file-like, optional
        Default ``sys.stdout`` as it is at this call.

    Returns
    -------
    AggregateSink or NullAggregate

    Examples
    --------
    >>> calls = []
    >>> agg = make_aggregate(lambda done, total: calls.append((done, total)), 3)
    >>> agg.item_done(False); agg.item_done(True); agg.close()
    >>> calls
    [(1, 3), (2, 3)]
    """
    if isinstance(progress, (AggregateSink, NullAggregate)):
        progress.begin(count if count is not None else 0)
        return progress  # the command line's own, which it reads afterwards
    if callable(progress):
        return AggregateSink(count, stream, callback=progress)
    if not progress:
        return NullAggregate()
    return AggregateSink(count, stream)

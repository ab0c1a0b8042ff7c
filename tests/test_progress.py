"""Tests for pyvo_dl._progress: pure formatters by table, sinks on in-memory streams."""

from __future__ import annotations

import io
import os
import pickle
import re
import sys
import threading
import time
import unicodedata

import pytest

from pyvo_dl import _progress
from pyvo_dl._progress import (
    AggregateSink,
    BarSink,
    CallbackSink,
    LineSink,
    NullAggregate,
    NullSink,
    format_aggregate_line,
    format_bar_line,
    format_bytes,
    format_duration,
    format_eta,
    format_rate,
    make_aggregate,
    make_sink,
)

KEY = "chandra/data/byobsid/2/3052/primary/acisf03052N004_cntr_img2.jpg"
FILE = "acisf03052N004_cntr_img2.jpg"
# The line of the seed page (pyvo's "Download Utilities"), verbatim.
SEED_LINE = (
    "Downloading chandra/data/byobsid/2/3052/primary/acisf03052N004_cntr_img2.jpg"
    " to acisf03052N004_cntr_img2.jpg ... [Done]"
)
MiB = 1024 * 1024


class FakeTTY(io.StringIO):
    """A terminal stand-in that counts writes and flushes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.flushes = 0

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


class FakeClock:
    """Advances by ``step`` seconds at every reading and counts readings."""

    def __init__(self, step: float = 0.0, start: float = 1000.0) -> None:
        self.now = start
        self.step = step
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        self.now += self.step
        return self.now


def cells(text: str) -> int:
    """Terminal cells of ``text``, computed independently of the module."""
    total = 0
    for char in text:
        if unicodedata.combining(char):
            continue
        total += 2 if unicodedata.east_asian_width(char) in "WF" else 1
    return total


def redraws(output: str) -> list[str]:
    """The pieces written after each "\\r" except the final summary line."""
    pieces = output.split("\r")
    return pieces[1:-1]


def last_redraw(output: str) -> str:
    """The last piece written after a "\r" (for a sink not finished yet)."""
    return output.rsplit("\r", maxsplit=1)[-1]


# --------------------------------------------------------------------------
# Formatters


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, "0 B"),
        (1, "1 B"),
        (999, "999 B"),
        (1000, "0.98 KiB"),
        (1023, "1.00 KiB"),
        (1024, "1.00 KiB"),
        (1536, "1.50 KiB"),
        (10 * 1024 - 1, "10.0 KiB"),
        (12_900_000, "12.3 MiB"),
        (999 * 1024, "999 KiB"),
        (int(999.5 * 1024), "0.98 MiB"),
        (3 * 1024**3 // 2, "1.50 GiB"),
        (256 * MiB, "256 MiB"),
        (1024**4, "1.00 TiB"),
        (1024**6, "1.00 EiB"),
        (1024**7, "1024 EiB"),
    ],
)
def test_format_bytes(n: int, expected: str) -> None:
    assert format_bytes(n) == expected


def test_format_bytes_is_at_most_eight_characters() -> None:
    values = {0, 1}
    for power in range(61):
        for factor in (0.9765, 0.99, 0.999, 0.9999, 1, 1.001, 9.99, 9.995, 9.999, 99.95, 999.5):
            values.add(int(factor * 2**power))
    for n in sorted(values):
        assert len(format_bytes(n)) <= 8, n


def test_format_bytes_refuses_negative() -> None:
    with pytest.raises(ValueError, match="-1"):
        format_bytes(-1)


@pytest.mark.parametrize(
    ("rate", "expected"),
    [
        (None, "-- B/s"),
        (float("nan"), "-- B/s"),
        (float("inf"), "-- B/s"),
        (-1.0, "-- B/s"),
        (0.0, "0 B/s"),
        (999.4, "999 B/s"),
        (2.5 * MiB, "2.50 MiB/s"),
        (123.4 * MiB, "123 MiB/s"),
    ],
)
def test_format_rate(rate: float | None, expected: str) -> None:
    assert format_rate(rate) == expected


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (None, "--:--"),
        (-1.0, "--:--"),
        (float("nan"), "--:--"),
        (float("inf"), "--:--"),
        (0, "00:00"),
        (0.2, "00:01"),
        (59, "00:59"),
        (59.5, "01:00"),
        (61.2, "01:02"),
        (3599, "59:59"),
        (3600, "1:00:00"),
        (3725, "1:02:05"),
        (100 * 3600 - 1, "99:59:59"),
        (100 * 3600, "--:--"),
    ],
)
def test_format_eta(seconds: float | None, expected: str) -> None:
    assert format_eta(seconds) == expected


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (-1, "0.0 s"),
        (0, "0.0 s"),
        (2.345, "2.3 s"),
        (59.9, "59.9 s"),
        (75, "01:15"),
        (3725, "1:02:05"),
    ],
)
def test_format_duration(seconds: float, expected: str) -> None:
    assert format_duration(seconds) == expected


LINE_CASES = [
    pytest.param(KEY, 5_000_000, 12_000_000, 1.5e6, 4.7, id="known-total"),
    pytest.param(KEY, 5_000_000, None, 1.5e6, None, id="unknown-total"),
    pytest.param("a.fits", 0, 0, None, None, id="empty-file"),
    pytest.param("a.fits", 20, 10, 1.0, 0.0, id="more-than-total"),
    pytest.param("", 10, 100, None, None, id="empty-label"),
    pytest.param("日本語のファイル名がとても長い場合のテスト.fits", 5, 10, 3.0, 2.0, id="wide"),
    pytest.param("e\u0301te\u0301/" * 10 + "x.fits", 5, 10, 3.0, 2.0, id="combining"),
    pytest.param("bad\nname\x1b[31m.fits", 5, 10, None, None, id="control"),
]


@pytest.mark.parametrize(("label", "done", "total", "rate", "eta"), LINE_CASES)
def test_format_bar_line_fills_width_exactly(
    label: str, done: int, total: int | None, rate: float | None, eta: float | None
) -> None:
    for width in range(160):
        line = format_bar_line(label, done, total, rate, eta, width=width)
        assert cells(line) == width, (width, line)
        assert "\n" not in line
        assert "\r" not in line
        assert "\x1b" not in line


def test_format_bar_line_full() -> None:
    line = format_bar_line("a.fits", 512, 1024, 256.0, 2.0, width=100)
    assert line.rstrip() == (
        "a.fits [###############               ]  50%    512 B/1.00 KiB    256 B/s ETA 00:02"
    )


def _bar_inner(line: str) -> int | None:
    start = line.find(" [")
    end = line.find("] ")
    if start < 0 or end < 0:
        return None
    return end - start - 2


def test_format_bar_line_shrinks_the_bar_before_the_label() -> None:
    seen_bar_sizes = set()
    for width in range(200, 0, -1):
        line = format_bar_line(KEY, 5_000_000, 12_000_000, 1.5e6, 4.7, width=width)
        inner = _bar_inner(line)
        if inner is not None:
            seen_bar_sizes.add(inner)
            if inner > _progress._MIN_BAR:
                assert line.startswith(KEY + " ["), width
        if not line.startswith(KEY):
            # Once the label is cut, the bar is at its minimum or gone.
            assert inner in (None, _progress._MIN_BAR), width
    assert max(seen_bar_sizes) == _progress._MAX_BAR
    assert _progress._MIN_BAR in seen_bar_sizes


def test_format_bar_line_cuts_the_label_in_the_middle() -> None:
    label = "a" * 30 + "MIDDLE" + "b" * 30
    line = format_bar_line(label, 5, 10, 1.0, 5.0, width=70)
    assert line.startswith("aaa")
    assert "..." in line
    assert "MIDDLE" not in line
    assert line.split("...")[1].startswith("bbb")
    assert "ETA 00:05" in line


def test_format_bar_line_drops_details_before_the_bar() -> None:
    """The total goes, then the rate, then the ETA: the bar stays (issue 16.11)."""
    lines = {}
    for width in (120, 62, 50, 40, 30, 10, 6):
        lines[width] = format_bar_line(KEY, 5_000_000, 12_000_000, 1.5e6, 4.7, width=width)
    assert "4.77 MiB/11.4 MiB 1.43 MiB/s ETA 00:05" in lines[120]
    assert lines[62].endswith("] 41% 4.77 MiB 1.43 MiB/s ETA 00:05".replace("] ", "]  "))
    assert lines[50].endswith("]  41% 4.77 MiB ETA 00:05")
    assert lines[40].endswith("]  41% ETA 00:05")
    assert lines[30].endswith("]  41%")
    for width in (62, 50, 40, 30):
        assert _bar_inner(lines[width]) == _progress._MIN_BAR, width
    assert lines[10] == "c...g  41%"
    assert lines[6] == " 41%  "


@pytest.mark.parametrize("width", range(30, 121))
def test_format_bar_line_keeps_a_usable_bar_from_30_columns(width: int) -> None:
    line = format_bar_line(KEY, 5_000_000, 12_000_000, 1.5e6, 4.7, width=width)
    assert len(line) == width
    inner = _bar_inner(line)
    assert inner is not None
    assert inner >= _progress._MIN_BAR >= 8


@pytest.mark.parametrize("width", [80, 40, 20])
def test_format_bar_line_without_total_has_no_bar_or_percentage(width: int) -> None:
    line = format_bar_line(KEY, 5_000_000, None, 1.5e6, None, width=width)
    assert "[" not in line
    assert "%" not in line
    assert "ETA" not in line
    assert "4.77 MiB" in line


def test_format_bar_line_escapes_control_characters() -> None:
    line = format_bar_line("bad\nname\x1b.fits", 5, 10, None, None, width=80)
    assert line.startswith("bad\\nname\\x1b.fits [")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((1, 4, 0, 2048, None, None, 50), "1/4 files [##      ] 2.00 KiB     -- B/s ETA --:--"),
        ((1, 4, 0, 2048, None, None, 40), "1/4 files [##      ] 2.00 KiB     -- B/s"),
        (
            (1, 4, 0, 2048, 1024.0, 6.0, 60),
            "1/4 files [####              ] 2.00 KiB 1.00 KiB/s ETA 00:06",
        ),
        ((0, None, 0, 0, None, None, 20), "0 files      0 B    "),
        ((3, None, 1, 1024, 1024.0, None, 40), "3 files 1 failed 1.00 KiB 1.00 KiB/s".ljust(40)),
    ],
)
def test_format_aggregate_line(args: tuple, expected: str) -> None:
    *values, width = args
    assert format_aggregate_line(*values, width=width) == expected


def test_format_aggregate_line_fills_width_exactly() -> None:
    for width in range(120):
        line = format_aggregate_line(12, 200, 3, 345 * MiB, 12.3 * MiB, width=width)
        assert len(line) == width


# --------------------------------------------------------------------------
# NullSink, CallbackSink, LineSink


def test_null_sink_does_nothing() -> None:
    sink = NullSink()
    sink.start(None)
    sink.start(10, initial=5)
    sink.update(10)
    sink.finish(True)
    sink.finish(False)


def test_null_sink_is_its_own_sink_for_any_file() -> None:
    # make_sink asks a sink for its file's sink first: a NullSink answers at
    # once, where the check that it is a sink (three hasattr) cost per file.
    sink = NullSink()
    assert sink.for_file("label", "path") is sink
    assert make_sink(sink, "label", "path") is sink


@pytest.mark.parametrize(
    ("total", "initial", "updates", "ok", "expected"),
    [
        (100, 0, [50, 100], True, [(0, 100), (50, 100), (100, 100)]),
        (100, 0, [50], True, [(0, 100), (50, 100), (100, 100)]),
        (100, 40, [70, 100], True, [(40, 100), (70, 100), (100, 100)]),
        (None, 0, [4, 10], True, [(0, None), (4, None), (10, None), (10, 10)]),
        (0, 0, [], True, [(0, 0)]),
        (100, 0, [50], False, [(0, 100), (50, 100)]),
    ],
)
def test_callback_sink(
    total: int | None, initial: int, updates: list[int], ok: bool, expected: list[tuple]
) -> None:
    calls: list[tuple] = []
    sink = CallbackSink(lambda done, size: calls.append((done, size)))
    sink.start(total, initial)
    for done in updates:
        sink.update(done)
    sink.finish(ok)
    sink.finish(ok)
    assert calls == expected


def test_callback_sink_exception_propagates() -> None:
    def cancel(done: int, total: int | None) -> None:
        if done > 10:
            raise KeyboardInterrupt

    sink = CallbackSink(cancel)
    sink.start(100)
    with pytest.raises(KeyboardInterrupt):
        sink.update(11)


def test_line_sink_matches_the_seed_line() -> None:
    out = FakeTTY()
    sink = LineSink(KEY, FILE, out)
    sink.start(1000)
    # The start of the line is visible (flushed) before any data arrives.
    assert out.getvalue() == f"Downloading {KEY} to {FILE} ..."
    assert out.flushes >= 1
    for done in range(0, 1001, 100):
        sink.update(done)
    sink.finish(True)
    assert out.getvalue() == SEED_LINE + "\n"


@pytest.mark.parametrize(
    ("calls", "expected"),
    [
        (["start", "finish_ok"], "Downloading k to f ... [Done]\n"),
        (["start", "finish_fail"], "Downloading k to f ... [Failed]\n"),
        (["start", "start", "finish_ok", "finish_ok"], "Downloading k to f ... [Done]\n"),
        (["finish_fail"], "Downloading k to f ... [Failed]\n"),
        (["start"], "Downloading k to f ..."),
    ],
)
def test_line_sink_sequences(calls: list[str], expected: str) -> None:
    out = io.StringIO()
    sink = LineSink("k", "f", out)
    for call in calls:
        if call == "start":
            sink.start(None)
        else:
            sink.finish(call == "finish_ok")
    assert out.getvalue() == expected


class BrokenStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0

    def write(self, text: str) -> int:
        self.attempts += 1
        raise BrokenPipeError(32, "Broken pipe")


@pytest.mark.parametrize("make", [LineSink, BarSink])
def test_a_broken_stream_never_fails_the_download(make: type) -> None:
    out = BrokenStream()
    sink = make("k", "f", out)
    sink.start(10)
    sink.update(5)
    sink.finish(True)
    assert out.attempts == 1


def test_closed_stream_is_ignored() -> None:
    out = io.StringIO()
    out.close()
    sink = LineSink("k", "f", out)
    sink.start(10)
    sink.finish(True)


def test_unencodable_characters_are_replaced() -> None:
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="ascii")
    sink = LineSink("données/é.fits", "é.fits", out)
    sink.start(10)
    sink.finish(True)
    out.flush()
    assert raw.getvalue() == b"Downloading donn?es/?.fits to ?.fits ... [Done]\n"


def test_line_sink_escapes_control_characters() -> None:
    out = io.StringIO()
    sink = LineSink("evil\r\x1b[2Jkey", "f", out)
    sink.start(1)
    sink.finish(True)
    assert out.getvalue() == "Downloading evil\\r\\x1b[2Jkey to f ... [Done]\n"


@pytest.mark.parametrize(
    ("seconds_per_percent", "expected_lines"),
    [
        # Fast (100 s in all): 10 % every 10 s, so the 30 s rule is the rarer.
        (1.0, 3),
        # Slow (1000 s in all): 30 s every 3 %, so the 10 % rule is the rarer.
        (10.0, 9),
    ],
)
def test_line_sink_prints_progress_every_10_percent_or_30_s_whichever_is_rarer(
    seconds_per_percent: float, expected_lines: int
) -> None:
    """In a log (here a real pipe): a few progress lines, never one per buffer (issue 16.11)."""
    read_fd, write_fd = os.pipe()
    with os.fdopen(write_fd, "w") as writer, os.fdopen(read_fd) as reader:
        clock = FakeClock(step=0.0)
        sink = LineSink("http://h/big.fits", "big.fits", writer, clock=clock)
        sink.start(100 * MiB)
        for percent in range(1, 101):
            clock.now += seconds_per_percent
            for part in range(1, 11):  # ten buffers per percent
                sink.update((percent - 1) * MiB + part * MiB // 10)
        sink.finish(True)
        writer.close()
        lines = reader.read().splitlines()
    assert lines[0] == "Downloading http://h/big.fits to big.fits ..."
    assert lines[-1] == "Downloading http://h/big.fits to big.fits ... [Done]"
    progress = lines[1:-1]
    assert len(progress) == expected_lines, progress
    for line in progress:
        assert re.fullmatch(r"  big\.fits +\d+% \S+ \S+ of 100 MiB, \S+ \S+/s, ETA \S+", line), line
    # At most about one clock read per 1 % of the file, not one per buffer (1000).
    assert clock.calls <= 2 + 100 + expected_lines


def test_line_sink_of_a_short_download_stays_one_line() -> None:
    out = io.StringIO()
    clock = FakeClock(step=0.0)
    sink = LineSink("k", "f", out, clock=clock)
    sink.start(1000)
    for done in range(0, 1001, 10):
        clock.now += 0.2  # 20 s in all: never 30 s since the start
        sink.update(done)
    sink.finish(True)
    assert out.getvalue() == "Downloading k to f ... [Done]\n"


def test_line_sink_without_a_size_prints_every_30_s() -> None:
    out = io.StringIO()
    clock = FakeClock(step=0.0)
    sink = LineSink("k", "f.fits", out, clock=clock)
    sink.start(None)
    for second in range(1, 101):
        clock.now += 1.0
        sink.update(second * 1000)
    sink.finish(True)
    lines = out.getvalue().splitlines()
    assert lines[1:-1] == [f"  f.fits {size} KiB, 0.98 KiB/s" for size in ("29.3", "58.6", "87.9")]


# --------------------------------------------------------------------------
# BarSink


def test_bar_sink_redraws_in_place_and_ends_with_a_summary() -> None:
    out = FakeTTY()
    clock = FakeClock(step=0.001)
    sink = BarSink(KEY, FILE, out, width_fn=lambda: 60, clock=clock)
    sink.start(MiB)
    for done in range(0, MiB + 1, 1024):
        sink.update(done)
    sink.finish(True)
    text = out.getvalue()
    assert text.startswith("\r")
    assert text.endswith("\n")
    assert "\n" not in text.rsplit("\r", 1)[0]  # the redraws stay on one line
    pieces = redraws(text)
    assert len(pieces) > 5
    for piece in pieces:
        assert len(piece) <= 59
    final = text.split("\r")[-1].replace("\n", " ", text.count("\n") - 1)
    assert re.fullmatch(re.escape(SEED_LINE) + r" \(1\.00 MiB in 1\.0 s, \d+ KiB/s\)\n", final)
    assert "%" in pieces[-2]
    assert "ETA" in pieces[-2]


def test_bar_sink_throttles_redraws_with_the_real_clock() -> None:
    out = FakeTTY()
    sink = BarSink("k", "f", out, width_fn=lambda: 80)
    sink.start(10_000 * 1024)
    t0 = time.monotonic()
    for i in range(1, 10_001):
        sink.update(i * 1024)
    elapsed = time.monotonic() - t0
    sink.finish(True)
    assert out.writes <= 3 + elapsed / _progress.REDRAW_INTERVAL + 1
    assert out.writes < 100


def test_bar_sink_reads_the_clock_once_per_update() -> None:
    clock = FakeClock(step=0.0005)
    sink = BarSink("k", "f", FakeTTY(), width_fn=lambda: 80, clock=clock)
    sink.start(10_000)
    before = clock.calls
    for done in range(10_000):
        sink.update(done)
    assert clock.calls - before == 10_000


def test_bar_sink_redraws_at_most_ten_times_a_second() -> None:
    out = FakeTTY()
    clock = FakeClock(step=0.001)  # 10 000 updates span 10 s
    sink = BarSink("k", "f", out, width_fn=lambda: 80, clock=clock)
    sink.start(10_000)
    for done in range(10_000):
        sink.update(done)
    assert 90 <= out.writes <= 102


def test_bar_sink_shows_rate_and_eta() -> None:
    out = FakeTTY()
    clock = FakeClock(step=0.0)
    sink = BarSink("k.fits", "f", out, width_fn=lambda: 100, clock=clock)
    sink.start(10 * MiB)
    for second in range(1, 5):
        clock.now += 1.0
        sink.update(second * MiB)
    line = last_redraw(out.getvalue())
    assert "1.00 MiB/s" in line
    assert "ETA 00:06" in line
    assert " 40% " in line


def test_bar_sink_rate_forgets_old_samples() -> None:
    out = FakeTTY()
    clock = FakeClock(step=0.0)
    sink = BarSink("k", "f", out, width_fn=lambda: 100, clock=clock)
    sink.start(None)
    done = 0
    for _ in range(20):  # 10 s at 10 MiB/s
        clock.now += 0.5
        done += 5 * MiB
        sink.update(done)
    for _ in range(20):  # then 10 s at 1 MiB/s
        clock.now += 0.5
        done += MiB // 2
        sink.update(done)
    assert "1.00 MiB/s" in last_redraw(out.getvalue())


def test_bar_sink_summary_counts_only_transferred_bytes() -> None:
    out = FakeTTY()
    clock = FakeClock(step=0.0)
    sink = BarSink("k", "f", out, width_fn=lambda: 80, clock=clock)
    sink.start(1000, initial=600)  # resumed: 600 bytes already on disk
    clock.now += 2.0
    sink.update(800)
    sink.start(1000, initial=800)  # a retry continues from the byte reached
    clock.now += 2.0
    sink.update(1000)
    sink.finish(True)
    # 1000 bytes in place, 400 of them transferred by this run.
    assert out.getvalue().endswith(
        "Downloading k to f ... [Done] (0.98 KiB, resumed: 400 B in 4.0 s, 100 B/s)\n"
    )


def test_bar_sink_after_a_fresh_start_names_size_time_and_rate() -> None:
    out = FakeTTY()
    clock = FakeClock(step=0.0)
    sink = BarSink("k", "f", out, width_fn=lambda: 80, clock=clock)
    sink.start(1000)
    clock.now += 4.0
    sink.update(1000)
    sink.finish(True)
    assert out.getvalue().endswith("Downloading k to f ... [Done] (0.98 KiB in 4.0 s, 250 B/s)\n")


LONG_URL = "http://127.0.0.1:35321/FTP/chandra/data/byobsid/2/3052/primary/acisf03052N004_evt2.fits"


@pytest.mark.parametrize("columns", [40, 60, 61, 80, 100])
def test_bar_sink_final_line_never_wraps_inside_a_number(columns: int) -> None:
    """A terminal of ``columns`` wraps only inside the long URL, never a number (issue 16.11)."""
    out = FakeTTY()
    clock = FakeClock(step=0.0)
    sink = BarSink(LONG_URL, "acisf03052N004_evt2.fits", out, width_fn=lambda: columns, clock=clock)
    sink.start(60 * MiB, 10 * MiB)
    clock.now += 12.0
    sink.update(60 * MiB)
    sink.finish(True)
    final = out.getvalue().rsplit("\r", 1)[-1]
    lines = final.rstrip("\n").split("\n")
    for line in lines:
        # Where the terminal itself cuts this line: only inside the URL.
        url_at = line.find(LONG_URL)
        for cut in range(columns, len(line), columns):
            assert url_at >= 0, (columns, lines)
            assert url_at < cut < url_at + len(LONG_URL), (columns, cut, lines)
    assert " ".join(lines) == (
        f"Downloading {LONG_URL} to acisf03052N004_evt2.fits ... "
        "[Done] (60.0 MiB, resumed: 50.0 MiB in 12.0 s, 4.17 MiB/s)"
    )


def test_bar_sink_failure_line() -> None:
    out = FakeTTY()
    sink = BarSink("k", "f", out, width_fn=lambda: 80, clock=FakeClock(step=0.01))
    sink.start(MiB)
    sink.update(MiB // 2)
    sink.finish(False)
    sink.finish(True)
    assert out.getvalue().endswith("Downloading k to f ... [Failed] (512 KiB of 1.00 MiB)\n")
    assert out.getvalue().count("\n") == 1


@pytest.mark.parametrize("size", [40, os.terminal_size((40, 24))])
def test_bar_sink_width_from_int_or_terminal_size(size: object) -> None:
    out = FakeTTY()
    sink = BarSink(KEY, FILE, out, width_fn=lambda: size, clock=FakeClock(step=0.2))
    sink.start(100)
    sink.update(50)
    for piece in redraws(out.getvalue() + "\r"):
        assert len(piece) == 39  # one column left free


def test_bar_sink_follows_a_resized_terminal() -> None:
    widths = iter([80, 80, 30, 30, 30])
    out = FakeTTY()
    sink = BarSink(KEY, FILE, out, width_fn=lambda: next(widths), clock=FakeClock(step=0.2))
    sink.start(100)
    sink.update(50)
    sink.update(60)
    assert [len(p) for p in redraws(out.getvalue() + "\r")] == [79, 79, 29]


def test_bar_sink_default_width_fn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "50")
    out = FakeTTY()
    sink = BarSink("k", "f", out, clock=FakeClock(step=0.2))
    sink.start(100)
    assert len(redraws(out.getvalue() + "\r")[0]) == 49


# --------------------------------------------------------------------------
# make_sink


@pytest.mark.parametrize(
    ("progress", "stream", "term", "expected"),
    [
        (False, "tty", "xterm", NullSink),
        (None, "tty", "xterm", NullSink),
        (print, "tty", "xterm", CallbackSink),
        (True, "tty", "xterm", BarSink),
        (True, "tty", None, BarSink),
        (True, "tty", "dumb", LineSink),
        (True, "file", "xterm", LineSink),
        (True, "object", "xterm", LineSink),
    ],
)
def test_make_sink_choices(
    monkeypatch: pytest.MonkeyPatch,
    progress: object,
    stream: str,
    term: str | None,
    expected: type,
) -> None:
    if term is None:
        monkeypatch.delenv("TERM", raising=False)
    else:
        monkeypatch.setenv("TERM", term)
    streams = {"tty": FakeTTY(), "file": io.StringIO(), "object": NoIsatty()}
    assert type(make_sink(progress, "k", "f", streams[stream])) is expected


class NoIsatty:
    """A minimal writable object without isatty()."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, text: str) -> int:
        self.parts.append(text)
        return len(text)

    def flush(self) -> None:
        pass


def test_make_sink_uses_stdout_at_call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "xterm")
    fake = FakeTTY()
    monkeypatch.setattr(sys, "stdout", fake)
    sink = make_sink(True, "k", "f")
    assert isinstance(sink, BarSink)
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    sink = make_sink(True, "k", "f")
    assert isinstance(sink, LineSink)
    sink.start(1)
    sink.finish(True)
    assert sys.stdout.getvalue() == "Downloading k to f ... [Done]\n"


def test_make_sink_output_is_captured(capsys: pytest.CaptureFixture[str]) -> None:
    sink = make_sink(True, KEY, FILE)
    sink.start(3)
    sink.update(3)
    sink.finish(True)
    assert capsys.readouterr().out == SEED_LINE + "\n"


def test_make_sink_without_stdout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdout", None)
    assert isinstance(make_sink(True, "k", "f"), NullSink)


# --------------------------------------------------------------------------
# AggregateSink, NullAggregate, make_aggregate


def test_aggregate_sink_counts_across_threads() -> None:
    out = io.StringIO()
    agg = AggregateSink(16, out, clock=FakeClock(step=0.0))

    def one_file(index: int) -> None:
        child = agg.child()
        child.start(10_000)
        for done in range(0, 10_001, 100):
            child.update(done)
        ok = index % 4 != 0
        child.finish(ok)
        agg.item_done(ok, child)

    threads = [threading.Thread(target=one_file, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (agg.files_started, agg.files_downloaded, agg.files_failed) == (16, 12, 4)
    assert agg.bytes_done == 16 * 10_000
    assert agg.bytes_expected == 16 * 10_000
    # Not a terminal, and no time passed: nothing until the summary.
    assert out.getvalue() == ""
    agg.close()
    agg.close()
    assert out.getvalue() == (
        "12 downloaded, 0 resumed, 0 already present, 4 failed; 156 KiB in 0.0 s (-- B/s)\n"
    )


def test_aggregate_tells_downloaded_resumed_present_and_failed_apart() -> None:
    """What the summary says is what moved (issue 16.6)."""
    clock = FakeClock(step=0.0)
    out = io.StringIO()
    agg = AggregateSink(6, out, clock=clock)
    agg.item_done(False)  # refused before any request
    fresh = agg.child()
    fresh.start(1000)
    fresh.update(1000)
    agg.item_done(True, fresh)
    resumed = agg.child()
    resumed.start(1000, 600)  # a .part of 600 bytes from an earlier run
    resumed.update(1000)
    agg.item_done(True, resumed)
    cached = agg.child()  # a cache hit never starts a transfer
    agg.item_done(True, cached)
    retried = agg.child()
    retried.start(1000)
    retried.update(300)
    retried.start(1000, 300)  # a retry in this run continues: not a resume
    retried.update(1000)
    agg.item_done(True, retried)
    broken = agg.child()
    broken.start(1000)
    broken.update(200)
    agg.item_done(False, broken)
    assert (agg.files_downloaded, agg.files_resumed, agg.files_present, agg.files_failed) == (
        2, 1, 1, 2,
    )  # fmt: skip
    assert agg.bytes_done == 1000 + 400 + 1000 + 200
    clock.now += 2.0
    agg.close()
    assert out.getvalue() == (
        "2 downloaded, 1 resumed, 1 already present, 2 failed; 2.54 KiB in 2.0 s (1.27 KiB/s)\n"
    )


def test_aggregate_counts_what_an_executor_worker_sends_back() -> None:
    agg = AggregateSink(2, io.StringIO(), clock=FakeClock())
    tally = _progress.ItemTally()
    tally.start(100, 40)
    tally.update(100)
    copy = pickle.loads(pickle.dumps(tally))
    agg.item_done(True, copy, copy.moved)
    agg.item_done(True, pickle.loads(pickle.dumps(_progress.ItemTally())), 0)
    assert (agg.files_resumed, agg.files_present, agg.bytes_done) == (1, 1, 60)


def test_aggregate_sink_summary_with_rate() -> None:
    out = io.StringIO()
    clock = FakeClock(step=0.0)
    agg = AggregateSink(None, out, clock=clock)
    child = agg.child()
    child.start(None)
    child.update(2 * MiB)
    child.finish(True)
    agg.item_done(True, child)
    clock.now += 2.0
    agg.close()
    assert out.getvalue() == (
        "1 downloaded, 0 resumed, 0 already present, 0 failed; 2.00 MiB in 2.0 s (1.00 MiB/s)\n"
    )


def test_aggregate_sink_without_its_summary_prints_nothing_at_close() -> None:
    out = io.StringIO()
    agg = AggregateSink(2, out, clock=FakeClock(), summary=False)
    agg.item_done(True)
    agg.close()
    assert out.getvalue() == ""
    assert agg.summary().startswith("0 downloaded, 0 resumed, 1 already present, 0 failed;")


def test_aggregate_outside_a_terminal_prints_a_line_every_10_percent_or_30_s() -> None:
    """The rarer of the two, never one per buffer (issue 16.11)."""
    out = io.StringIO()
    clock = FakeClock(step=0.0)
    agg = AggregateSink(100, out, clock=clock)
    for _ in range(100):  # 100 files, 5 s each: 10 % every 50 s, 30 s every 6 files
        clock.now += 5.0
        child = agg.child()
        child.start(MiB)
        for done in range(0, MiB + 1, 64 * 1024):
            child.update(done)
        agg.item_done(True, child)
    lines = out.getvalue().splitlines()
    assert len(lines) == 9  # at 10 %, 20 %, ... 90 %: 50 s apart, more than 30 s
    assert lines[0].startswith("10/100 files, 10.0 MiB, 205 KiB/s, ETA ")
    agg.close()
    assert out.getvalue().splitlines()[-1].startswith("100 downloaded,")


def test_aggregate_outside_a_terminal_is_quiet_for_a_short_batch() -> None:
    out = io.StringIO()
    clock = FakeClock(step=0.0)
    agg = AggregateSink(10, out, clock=clock)
    for _ in range(10):
        clock.now += 2.0  # 20 s in all: never 30 s since the start
        agg.item_done(True)
    assert out.getvalue() == ""


def test_aggregate_eta_from_known_sizes_and_the_mean_for_the_rest() -> None:
    agg = AggregateSink(4, io.StringIO(), clock=FakeClock())
    first = agg.child()
    first.start(1000)
    first.update(1000)
    agg.item_done(True, first)
    second = agg.child()
    second.start(3000)
    second.update(1000)
    # Left: 2000 of the second, and two files of the mean size (2000) each.
    assert agg._eta(1000.0) == pytest.approx(6.0)


@pytest.mark.parametrize(
    ("steps", "expected_bytes"),
    [
        ([("start", 100, 0), ("update", 100)], 100),
        ([("start", 100, 40), ("update", 100)], 60),
        ([("start", 100, 0), ("update", 50), ("start", 100, 0), ("update", 100)], 150),
        ([("start", 100, 0), ("update", 50), ("start", 100, 50), ("update", 100)], 100),
        ([("start", 100, 0), ("update", 50), ("update", 50)], 50),
        ([("start", 100, 0), ("update", 50), ("update", 0), ("update", 100)], 150),
    ],
)
def test_aggregate_child_turns_absolute_counts_into_deltas(
    steps: list[tuple], expected_bytes: int
) -> None:
    agg = AggregateSink(1, io.StringIO(), clock=FakeClock())
    child = agg.child()
    for step in steps:
        if step[0] == "start":
            child.start(step[1], step[2])
        else:
            child.update(step[1])
    child.finish(True)
    assert agg.bytes_done == expected_bytes
    first_initial = steps[0][2]
    assert (agg.files_started, agg.bytes_expected) == (1, 100 - first_initial)


def test_aggregate_sink_live_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "xterm")
    out = FakeTTY()
    clock = FakeClock(step=0.01)
    agg = AggregateSink(4, out, width_fn=lambda: 50, clock=clock)
    for _ in range(4):
        child = agg.child()
        child.start(1000)
        for done in range(0, 1001, 10):
            child.update(done)
        child.finish(True)
        agg.item_done(True, child)
    agg.close()
    text = out.getvalue()
    pieces = redraws(text)
    assert len(pieces) > 4
    assert all(len(piece) <= 49 for piece in pieces)
    assert any(piece.startswith("3/4 files [") for piece in pieces)
    summary = text.split("\r")[-1]
    assert re.fullmatch(
        r"4 downloaded, 0 resumed, 0 already present, 0 failed; 3\.91 KiB in [\d.]+ s "
        r"\(\d+ B/s\)\n",
        summary,
    )
    # Numbers of changing length do not move the bar.
    assert len({piece.index("]") for piece in pieces if "]" in piece}) == 1


def test_aggregate_sink_tty_can_be_forced_off() -> None:
    out = FakeTTY()
    agg = AggregateSink(1, out, tty=False, clock=FakeClock(step=0.5))
    child = agg.child()
    child.start(10)
    child.update(10)
    agg.item_done(True, child)
    assert out.getvalue() == ""
    agg.close()
    assert out.getvalue() == (
        "1 downloaded, 0 resumed, 0 already present, 0 failed; 10 B in 0.5 s (20 B/s)\n"
    )


def test_aggregate_sink_default_stream_is_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    agg = AggregateSink(0, clock=FakeClock())
    agg.close()
    assert capsys.readouterr().out == (
        "0 downloaded, 0 resumed, 0 already present, 0 failed; nothing transferred (0.0 s)\n"
    )


def test_child_of_an_aggregate_passes_through_make_sink() -> None:
    agg = AggregateSink(2, io.StringIO(), clock=FakeClock())
    child = agg.child()
    assert make_sink(child, "k", "f") is child
    sink = NullSink()
    assert make_sink(sink, "k", "f") is sink


@pytest.mark.parametrize(
    ("progress", "stream", "expected"),
    [
        (False, "tty", NullAggregate),
        (None, "tty", NullAggregate),
        (True, "tty", AggregateSink),
        (True, "file", AggregateSink),
        (print, "file", AggregateSink),
    ],
)
def test_make_aggregate_choices(progress: object, stream: str, expected: type) -> None:
    streams = {"tty": FakeTTY(), "file": io.StringIO()}
    assert type(make_aggregate(progress, 3, streams[stream])) is expected


def test_null_aggregate_gives_null_children() -> None:
    agg = make_aggregate(False, 2)
    child = agg.child()
    assert isinstance(child, NullSink)
    child.start(10)
    child.update(10)
    child.finish(True)
    agg.begin(2)
    agg.file_started(10)
    agg.file_progress(10)
    agg.item_done(False)
    agg.item_done(True, child)
    agg.close()


def test_make_aggregate_with_a_callable_reports_files_and_prints_nothing() -> None:
    out = FakeTTY()
    calls: list[tuple] = []
    agg = make_aggregate(lambda done, total: calls.append((done, total)), 3, out)
    agg.item_done(False)
    child = agg.child()
    child.start(100)
    child.update(100)
    agg.item_done(True, child)
    agg.item_done(False)
    agg.close()
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert out.getvalue() == ""
    assert out.writes == 0


def test_make_aggregate_uses_stdout_at_call_time(capsys: pytest.CaptureFixture[str]) -> None:
    agg = make_aggregate(True, 1)
    agg.item_done(True)
    agg.close()
    assert capsys.readouterr().out.startswith("0 downloaded, 0 resumed, 1 already present")


def test_make_aggregate_takes_an_aggregate_as_it_is() -> None:
    agg = AggregateSink(None, io.StringIO(), clock=FakeClock(), summary=False)
    assert make_aggregate(agg, 7) is agg
    assert agg._count == 7


def test_a_batch_of_one_shows_that_files_own_line() -> None:
    out = io.StringIO()
    agg = AggregateSink(1, out, clock=FakeClock())
    child = agg.child()
    sink = make_sink(child, "http://h/x.fits", "x.fits")
    assert sink is child
    sink.start(10)
    sink.update(10)
    sink.finish(True)
    agg.item_done(True, child)
    agg.close()
    assert out.getvalue().splitlines() == [
        "Downloading http://h/x.fits to x.fits ... [Done]",
        "1 downloaded, 0 resumed, 0 already present, 0 failed; 10 B in 0.0 s (-- B/s)",
    ]


@pytest.mark.parametrize("width", range(12, 100))
def test_wrap_words_never_parts_a_number_from_its_unit(width: int) -> None:
    text = (
        "pyvo-dl: 0 downloaded, 1 resumed, 0 already present, 0 failed; "
        "180 MiB in 36.4 s (4.95 MiB/s)"
    )
    lines = _progress.wrap_words(text, width).split("\n")
    assert " ".join(lines) == text
    units = {"s", "MiB", "MiB/s"}
    for before, after in zip(lines, lines[1:]):
        unit = after.split(" ")[0].rstrip(",;)")
        assert not (before[-1:].isdigit() and unit in units), (width, lines)
    for line in lines:
        assert len(line) <= width or " " not in line

"""Stale-lock rules that survive zombies, PID reuse and other hosts; the heartbeat.

Issue 13 items 3 and 4 (SPEC §3.8). A lock's holder is gone when its PID
is not there, is a zombie (dead, not yet reaped: ``kill(pid, 0)`` still
succeeds), or now belongs to a later process (its start time differs from
the one the lock recorded); on another host, when its heartbeat stopped
``LOCK_STALE_AFTER`` ago and the waiter saw it stand still. No wait is
unbounded: a holder whose ``.part`` does not move for ``LOCK_WAIT_LIMIT``
is an error naming the lock and the holder. The heartbeat keeps a lock
fresh while its download sleeps (a ``Retry-After``), and a forked child
never takes its parent's locks for its own. Every holder here is a real
process (``subprocess``, ``os.fork``).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings

import pytest

import pyvo_dl
from pyvo_dl import _partfile
from pyvo_dl._partfile import TargetLock

TYPE_CHECKING = False
if TYPE_CHECKING:
    import pathlib
    from collections.abc import Callable, Iterator

    from servers import FaultServer

pytestmark = pytest.mark.skipif(
    not os.path.isdir("/proc/self"), reason="the same-host rules read /proc (Linux)"
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(pyvo_dl.__file__)))

# A real holder: takes the lock, says so, then waits for its fate.
HOLDER = """
import os, sys, time
from pyvo_dl._partfile import TargetLock
lock = TargetLock(sys.argv[1])
assert lock.try_acquire()
print("held", flush=True)
if sys.argv[2] == "die":
    os._exit(0)  # gone without releasing, as a killed process is
time.sleep(60)
"""


def _holder(target: pathlib.Path, fate: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(target), fate],
        stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=ROOT),
    )  # fmt: skip
    assert process.stdout is not None
    with process.stdout:
        assert process.stdout.readline() == "held\n"
    return process


def _poll_until(seconds: float) -> Callable[[float], None]:
    """A ``sleep`` for ``TargetLock.acquire`` that gives up after ``seconds``."""
    deadline = time.monotonic() + seconds

    def poll(interval: float) -> None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"still waiting after {seconds} s")
        time.sleep(interval)

    return poll


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat", "rb") as f:
        raw = f.read()
    return raw[raw.rindex(b")") + 2 :].split()[0].decode()


@pytest.fixture
def target(tmp_path: pathlib.Path) -> pathlib.Path:
    return tmp_path / "events.fits"


def test_a_zombie_holder_is_gone(target: pathlib.Path) -> None:
    # The deadlock: a parent waits for its children in order, so a
    # child killed meanwhile stays a zombie while a sibling waits for its lock.
    zombie = _holder(target, "die")
    try:
        deadline = time.monotonic() + 10
        while _state(zombie.pid) != "Z":
            assert time.monotonic() < deadline, "the holder did not become a zombie"
            time.sleep(0.01)
        os.kill(zombie.pid, 0)  # a zombie still "exists" for kill()
        lock = TargetLock(str(target))
        started = time.monotonic()
        lock.acquire(sleep=_poll_until(5))
        assert time.monotonic() - started < 2
        lock.release()
    finally:
        zombie.wait()
    assert not os.path.exists(str(target) + ".lock")


def _lock_file(target: pathlib.Path, **fields: object) -> None:
    data = {"host": socket.gethostname(), "token": "written-by-the-test", **fields}
    (target.parent / (target.name + ".lock")).write_text(json.dumps(data))


@pytest.fixture
def other_program() -> Iterator[int]:
    """The PID of a live process that is not a pyvo_dl holder."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process.pid
    process.kill()
    process.wait()


def test_a_reused_pid_is_not_the_holder(target: pathlib.Path, other_program: int) -> None:
    # The lock recorded a start time; the PID now belongs to a later process.
    _lock_file(target, pid=other_program, started="an-earlier-boot:12345")
    lock = TargetLock(str(target))
    lock.acquire(sleep=_poll_until(5))
    lock.release()


def test_an_old_lock_without_a_start_time_ages_out(
    target: pathlib.Path, other_program: int
) -> None:
    # Written by an older pyvo_dl (no start time): an hour old, and its PID
    # belongs to some other program now.
    _lock_file(target, pid=other_program)
    hour_ago = time.time() - 3600
    os.utime(str(target) + ".lock", (hour_ago, hour_ago))
    lock = TargetLock(str(target))
    lock.acquire(sleep=_poll_until(5))
    lock.release()


def test_a_live_holder_is_waited_for_but_not_forever(
    target: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_partfile, "LOCK_WAIT_LIMIT", 1.0)
    holder = _holder(target, "live")
    try:
        lock = TargetLock(str(target))
        started = time.monotonic()
        with pytest.raises(pyvo_dl.DownloadError) as info:
            lock.acquire(sleep=_poll_until(10))
        waited = time.monotonic() - started
    finally:
        holder.kill()
        holder.wait()
    assert 1.0 <= waited < 5
    message = str(info.value)
    assert f"{target}.lock" in message
    assert f"process {holder.pid} on host {socket.gethostname()}" in message
    assert "has not changed for 1 s" in message


def test_a_holder_that_makes_progress_is_waited_for(
    target: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The limit is on silence, not on waiting: a .part that grows keeps a
    # waiter waiting past it, and the waiter then takes the free lock.
    monkeypatch.setattr(_partfile, "LOCK_WAIT_LIMIT", 0.5)
    holder = TargetLock(str(target))
    assert holder.try_acquire()

    def download_slowly() -> None:
        with open(str(target) + ".part", "ab") as part:
            for _ in range(15):
                part.write(b"x" * 1000)
                part.flush()
                time.sleep(0.1)
        holder.release()

    writer = threading.Thread(target=download_slowly)
    writer.start()
    waiter = TargetLock(str(target))
    waiter.acquire(sleep=_poll_until(10))
    writer.join()
    waiter.release()


class Heartbeat:
    """Another host's holder: touches its lock file every 0.1 s until stopped."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat)
        self.thread.start()

    def _beat(self) -> None:
        while not self.stop.wait(0.1):
            os.utime(self.path)

    def end(self) -> None:
        self.stop.set()
        self.thread.join()


def test_another_hosts_lock_whose_heartbeat_stopped_is_taken(
    target: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_partfile, "LOCK_OBSERVE", 0.5)
    _lock_file(target, host="node-17.cluster.example", pid=4242, started="b:1")
    stopped = time.time() - _partfile.LOCK_STALE_AFTER - 5
    os.utime(str(target) + ".lock", (stopped, stopped))
    lock = TargetLock(str(target))
    started = time.monotonic()
    lock.acquire(sleep=_poll_until(5))  # before: 120 s
    assert 0.5 <= time.monotonic() - started < 3
    lock.release()


def test_another_hosts_live_lock_is_kept_whatever_the_clocks_say(
    target: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This host's clock is 100 s ahead of the file server's: by the clock
    # alone the lock looks abandoned, but its heartbeat is seen moving.
    monkeypatch.setattr(_partfile, "LOCK_OBSERVE", 0.5)
    _lock_file(target, host="node-17.cluster.example", pid=4242, started="b:1")
    beat = Heartbeat(str(target) + ".lock")
    try:
        lock = TargetLock(str(target), clock=lambda: time.time() + 100)
        with pytest.raises(TimeoutError):
            lock.acquire(sleep=_poll_until(2))
    finally:
        beat.end()
    assert json.loads((target.parent / (target.name + ".lock")).read_text())["pid"] == 4242


def test_the_heartbeat_keeps_a_lock_fresh_while_its_download_sleeps(
    http_server: FaultServer, target: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 12 item 5: a Retry-After sleep (here 2 s) moves no data, yet
    # the lock must stay fresh for the other hosts that wait for it.
    monkeypatch.setattr(_partfile, "LOCK_HEARTBEAT", 0.2)
    url = http_server.add_file("/slow/events.fits", b"E" * 100_000)
    http_server.set_fault("/slow/events.fits", status=503, retry_after="2", times=1)
    seen: set[float] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            try:
                seen.add(os.stat(str(target) + ".lock").st_mtime)
            except FileNotFoundError:
                pass
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        pyvo_dl.http_download(url, str(target), progress=False)
    finally:
        done.set()
        watcher.join()
    assert target.read_bytes() == b"E" * 100_000
    assert len(seen) >= 4, seen  # before: touched only as data arrived


def test_a_forked_child_holds_none_of_its_parents_locks(
    target: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_partfile, "LOCK_HEARTBEAT", 0.1)
    lock = TargetLock(str(target))
    assert lock.try_acquire()
    assert _partfile.held_locks() == [str(target) + ".lock"]
    read, write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12: fork with threads
        pid = os.fork()
    if pid == 0:  # the child: report, never return into pytest
        try:
            held = _partfile.held_locks()
            lock.release()  # its copy of the parent's lock object
            mine = TargetLock(str(target.parent / "child.fits"))
            took = mine.try_acquire()
            mine.release()
            os.write(write, json.dumps([held, took]).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        held, took = json.loads(pipe.read())
    os.waitpid(pid, 0)
    assert held == []
    assert took is True
    # The parent's lock is still there, still its own, still beating.
    before = os.stat(str(target) + ".lock").st_mtime
    time.sleep(1.5)
    assert os.stat(str(target) + ".lock").st_mtime > before
    lock.release()
    assert not os.path.exists(str(target) + ".lock")


def test_a_lost_lock_stops_its_download(
    target: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Taken over while this process was suspended (by another host that saw
    # the heartbeat stop): the holder notices at its next heartbeat and stops.
    monkeypatch.setattr(_partfile, "LOCK_HEARTBEAT", 0.1)
    lock = TargetLock(str(target))
    assert lock.try_acquire()
    os.unlink(str(target) + ".lock")
    _lock_file(target, host="node-17.cluster.example", pid=4242, started="b:1")
    deadline = time.monotonic() + 5
    while not lock.lost:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    with pytest.raises(pyvo_dl.DownloadError, match="lost the lock"):
        lock.refresh()
    lock.release()
    assert json.loads((target.parent / (target.name + ".lock")).read_text())["pid"] == 4242


def test_the_lock_records_the_holders_start(target: pathlib.Path) -> None:
    lock = TargetLock(str(target))
    assert lock.try_acquire()
    data = json.loads((target.parent / (target.name + ".lock")).read_text())
    lock.release()
    with open("/proc/self/stat", "rb") as f:
        raw = f.read()
    ticks = raw[raw.rindex(b")") + 2 :].split()[19].decode()
    assert data["pid"] == os.getpid()
    assert data["started"].endswith(":" + ticks)


def test_a_killed_holder_is_gone_at_once(target: pathlib.Path) -> None:
    holder = _holder(target, "live")
    holder.send_signal(signal.SIGKILL)
    holder.wait()  # reaped: no such PID any more
    lock = TargetLock(str(target))
    lock.acquire(sleep=_poll_until(5))
    lock.release()


def test_a_locks_token_ends_in_whole_numbers(tmp_path: pathlib.Path) -> None:
    # The time in it is integer nanoseconds: a float's repr cost more per file.
    lock = _partfile.TargetLock(str(tmp_path / "x.fits"))
    assert re.fullmatch(r".+:\d+:\d+", lock._token)

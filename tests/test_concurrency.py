"""Processes and threads that want the same target at once (SPEC §3.8).

Extends ``test_resume_process.py`` (two processes, a dead PID's lock, a live
holder that never downloads): here two and eight real processes race for one
target, with and without a stale lock to break first; a holder's ``.part`` is
never touched by a waiter, even one called with ``resume=False``; a waiter
takes over from a holder killed with SIGKILL and continues its ``.part``;
and many contenders breaking one stale lock at once never hold it together
(threads, with random pauses injected between the lock's system calls).
"""

from __future__ import annotations

import json
import os
import random
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

import pyvo_dl
from pyvo_dl import _partfile
from pyvo_dl._partfile import TargetLock
from servers import build_response

TYPE_CHECKING = False
if TYPE_CHECKING:
    import pathlib
    from collections.abc import Callable
    from typing import Any

    from servers import FaultServer, RawHandler, RawServer

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")

MiB = 1024 * 1024
SIZE = 4 * MiB
DATA = bytes((i * 7 + i // 251) % 256 for i in range(256 * 1024)) * (SIZE // (256 * 1024))
PATH = "/archive/events.fits"

SCRIPT = """
import json, sys
from pyvo_dl import http_download
http_download(sys.argv[1], sys.argv[2], progress=False, verbose=True, **json.loads(sys.argv[3]))
"""


def spawn(url: str, target: pathlib.Path, **options: Any) -> subprocess.Popen[str]:
    """Start ``http_download(url, target, **options)`` in a new Python process."""
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(pyvo_dl.__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, url, str(target), json.dumps(options)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def read_line(process: subprocess.Popen[str], timeout: float = 30.0) -> str:
    """The next line ``process`` prints, waiting at most ``timeout`` seconds."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, "the process printed nothing in time"
    return process.stdout.readline()


def finish(processes: list[subprocess.Popen[str]]) -> list[tuple[str, str]]:
    """Wait for every process; kill the ones still running after 60 s."""
    outputs = []
    for process in processes:
        try:
            outputs.append(process.communicate(timeout=60))
        except subprocess.TimeoutExpired:
            process.kill()
            outputs.append(process.communicate())
    return outputs


def first_lines(processes: list[subprocess.Popen[str]], wanted: int) -> dict[int, str]:
    """The first line of each process that prints one, until ``wanted`` have."""
    lines: dict[int, str] = {}
    deadline = time.monotonic() + 30
    while len(lines) < wanted and time.monotonic() < deadline:
        pending = {p.stdout: i for i, p in enumerate(processes) if i not in lines and p.stdout}
        ready, _, _ = select.select(list(pending), [], [], 0.05)
        for stream in ready:
            lines[pending[stream]] = stream.readline().split(",")[0].strip()
    return lines


def kill_all(processes: list[subprocess.Popen[str]]) -> None:
    for process in processes:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.communicate()


def size_of(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def leftovers(folder: pathlib.Path, name: str) -> list[str]:
    """Every file in ``folder`` but the finished ``name``."""
    return sorted(f for f in os.listdir(folder) if f != name)


def dead_pid() -> int:
    """The PID of a process of ours that has exited and been reaped."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def write_stale_lock(target: pathlib.Path) -> None:
    lock = {
        "pyvo_dl": "lock", "host": socket.gethostname(), "pid": dead_pid(),
        "token": "killed-long-ago",
    }  # fmt: skip
    (target.parent / (target.name + ".lock")).write_text(json.dumps(lock))


class GatedServer:
    """A RawServer handler: half the body, then the rest once the gate opens.

    Keeps the first process inside its download (lock held, ``.part`` half
    written) for as long as the test needs, without timing assumptions.
    """

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gets: list[bytes] = []

    def __call__(self, conn: socket.socket, request: bytes) -> None:
        if not request.startswith(b"GET"):
            conn.sendall(build_response(405))
            return
        self.gets.append(request)
        headers = {"ETag": '"v1"', "Content-Length": str(SIZE), "Accept-Ranges": "bytes"}
        conn.sendall(build_response(200, headers=headers, body=DATA[: SIZE // 2]))
        self.gate.wait(60)
        conn.sendall(DATA[SIZE // 2 :])


class PartWatcher:
    """Samples the ``.part`` size in a thread: a holder's file must only grow."""

    def __init__(self, part: str) -> None:
        self.part = part
        self.shrank: list[tuple[int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        last = 0
        while not self._stop.is_set():
            size = size_of(self.part)
            if os.path.exists(self.part) and size < last:
                self.shrank.append((last, size))
            last = size if os.path.exists(self.part) else last
            time.sleep(0.001)

    def stop(self) -> list[tuple[int, int]]:
        self._stop.set()
        self._thread.join()
        return self.shrank


@pytest.mark.parametrize("stale_lock", [False, True], ids=["free", "stale lock first"])
@pytest.mark.parametrize("count", [2, 8])
def test_processes_racing_for_one_target(
    raw_server_factory: Callable[[RawHandler], RawServer],
    tmp_path: pathlib.Path,
    count: int,
    stale_lock: bool,
) -> None:
    """SPEC §3.8: N processes at once, one download, one correct file, no crash."""
    handler = GatedServer()
    url = raw_server_factory(handler).url(PATH)
    target = tmp_path / "events.fits"
    if stale_lock:
        write_stale_lock(target)
    watcher = PartWatcher(str(target) + ".part")
    processes = [spawn(url, target) for _ in range(count)]
    try:
        wait_for(lambda: size_of(str(target) + ".part") >= SIZE // 2, "the holder's .part")
        # Everyone else must be waiting on the lock before the holder may finish.
        lines = first_lines(processes, count - 1)
        handler.gate.set()
        outputs = finish(processes)
    finally:
        handler.gate.set()
        kill_all(processes)
        shrank = watcher.stop()
    assert [p.returncode for p in processes] == [0] * count, outputs
    assert sorted(lines.values()) == [f"Waiting for {target}.lock"] * (count - 1), lines
    assert not any("Traceback" in err for _, err in outputs), outputs
    assert target.read_bytes() == DATA
    assert leftovers(tmp_path, "events.fits") == []
    assert len(handler.gets) == 1  # the others reused the holder's result
    assert shrank == []
    reused = sum("just downloaded by another process" in out for out, _ in outputs)
    assert reused == count - 1, outputs


def test_a_live_holders_part_is_not_stolen(
    raw_server_factory: Callable[[RawHandler], RawServer], tmp_path: pathlib.Path
) -> None:
    """SPEC §3.8: even resume=False, cache=False waits; it never truncates the holder's .part."""
    handler = GatedServer()
    url = raw_server_factory(handler).url(PATH)
    target = tmp_path / "events.fits"
    part = str(target) + ".part"
    watcher = PartWatcher(part)
    processes = [spawn(url, target)]
    try:
        wait_for(lambda: size_of(part) >= SIZE // 2, "the holder's .part")
        processes.append(spawn(url, target, resume=False, cache=False))
        assert read_line(processes[1]).startswith(f"Waiting for {target}.lock")
        time.sleep(0.5)  # two more of the waiter's polls: it must keep its hands off
        assert size_of(part) == SIZE // 2
        assert os.path.exists(part + ".json")
        handler.gate.set()
        outputs = finish(processes)
    finally:
        handler.gate.set()
        kill_all(processes)
        shrank = watcher.stop()
    assert [p.returncode for p in processes] == [0, 0], outputs
    assert shrank == []
    assert "just downloaded by another process" in outputs[1][0]
    assert target.read_bytes() == DATA
    assert len(handler.gets) == 1
    assert leftovers(tmp_path, "events.fits") == []


def test_a_waiter_takes_over_from_a_killed_holder(
    http_server: FaultServer, tmp_path: pathlib.Path
) -> None:
    """SPEC §3.2/§3.8: kill -9 the holder; the waiter breaks its lock and continues its .part."""
    url = http_server.add_file(PATH, DATA)
    http_server.set_fault(PATH, trickle=(64 * 1024, 0.02), times=1)  # ~3 MiB/s
    target = tmp_path / "events.fits"
    part = str(target) + ".part"
    holder = spawn(url, target)
    waiter = None
    try:
        wait_for(lambda: size_of(part) >= MiB, "the holder's first MiB")
        waiter = spawn(url, target)
        assert read_line(waiter).startswith(f"Waiting for {target}.lock")
        os.kill(holder.pid, signal.SIGKILL)
        holder.communicate()  # reaped: a zombie would still look alive
        killed_at = time.monotonic()
        kept = size_of(part)
        out, err = waiter.communicate(timeout=60)
        took = time.monotonic() - killed_at
    finally:
        kill_all([p for p in (holder, waiter) if p is not None])
    assert waiter.returncode == 0, (out, err)
    assert target.read_bytes() == DATA
    assert leftovers(tmp_path, "events.fits") == []
    assert f"Resuming {url} at byte {kept}" in out
    first, second = http_server.requests_for(PATH, "GET")
    assert "range" not in first.headers
    assert second.headers["range"] == f"bytes={kept}-"
    assert took < 5.0  # a poll (0.2 s) and the rest of the file, not a stale-age timeout


# -- breaking a stale lock, many at once ---------------------------------------------


class JitteryOS:
    """``os`` for ``_partfile`` only, pausing up to ``pause`` seconds around each call.

    Stretches the gaps between the lock's system calls so that interleavings
    which real processes meet rarely happen in every round.
    """

    def __init__(self, rng: random.Random, pause: float = 0.001) -> None:
        self._rng = rng
        self._pause = pause

    def __getattr__(self, name: str) -> Any:
        value = getattr(os, name)
        if not callable(value) or isinstance(value, type):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            time.sleep(self._rng.random() * self._pause)
            try:
                return value(*args, **kwargs)
            finally:
                time.sleep(self._rng.random() * self._pause)

        return call


class Holders:
    """Counts the contenders inside the lock at once."""

    def __init__(self) -> None:
        self.guard = threading.Lock()
        self.now = 0
        self.most = 0
        self.errors: list[BaseException] = []

    def contend(self, target: str, start: threading.Barrier, deadline: float) -> None:
        def poll(seconds: float) -> None:
            if time.monotonic() > deadline:
                raise TimeoutError("still waiting for a lock nobody holds")
            time.sleep(0.0005)

        lock = TargetLock(target)
        try:
            start.wait()
            lock.acquire(sleep=poll)
            with self.guard:
                self.now += 1
                self.most = max(self.most, self.now)
            time.sleep(0.002)
            with self.guard:
                self.now -= 1
            lock.release()
        except BaseException as exc:
            self.errors.append(exc)


def test_breaking_a_stale_lock_is_mutually_exclusive(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SPEC §3.8: contenders breaking one stale lock never hold it together, nor strand it."""
    monkeypatch.setattr(_partfile, "os", JitteryOS(random.Random(6)))
    target = str(tmp_path / "events.fits")
    pid = dead_pid()
    for round_ in range(25):
        lock = {
            "pyvo_dl": "lock",
            "host": socket.gethostname(),
            "pid": pid,
            "token": f"stale-{round_}",
        }
        with open(target + ".lock", "w") as f:
            json.dump(lock, f)
        holders = Holders()
        start = threading.Barrier(6)
        deadline = time.monotonic() + 10
        threads = [
            threading.Thread(target=holders.contend, args=(target, start, deadline))
            for _ in range(6)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert holders.errors == [], f"round {round_}"
        assert holders.most == 1, f"round {round_}: {holders.most} holders at once"
        assert os.listdir(tmp_path) == [], f"round {round_}"


def test_a_lock_file_names_its_holder(tmp_path: pathlib.Path) -> None:
    """What a waiter (or a person) reads in the lock: host, PID, a token."""
    lock = TargetLock(str(tmp_path / "t.fits"))
    assert lock.try_acquire()
    data = json.loads((tmp_path / "t.fits.lock").read_text())
    assert data["host"] == socket.gethostname()
    assert data["pid"] == os.getpid()
    assert re.match(r".+:\d+:", data["token"])
    other = TargetLock(str(tmp_path / "t.fits"))
    assert not other.try_acquire()  # our PID is alive: not stale
    lock.release()
    assert other.try_acquire()
    other.release()
    assert os.listdir(tmp_path) == []


def test_a_lock_that_is_a_link_is_never_written_through(
    http_server: FaultServer, tmp_path: pathlib.Path
) -> None:
    """A link planted as the lock: O_EXCL refuses it, and it is not pyvo_dl's to remove.

    Neither the link nor its target is touched, however old (issue 12.6):
    the download is refused, naming the link.
    """
    url = http_server.add_file(PATH, DATA[:MiB])
    target = tmp_path / "shared" / "events.fits"
    target.parent.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    old = time.time() - 2 * _partfile.LOCK_STALE_AFTER
    os.utime(victim, (old, old))
    os.symlink(str(victim), str(target) + ".lock")
    with pytest.raises(pyvo_dl.DownloadError, match="symbolic link") as info:
        pyvo_dl.http_download(url, str(target), progress=False)
    assert f"{target}.lock" in str(info.value)
    assert victim.read_text() == "precious"
    assert os.path.islink(str(target) + ".lock")
    assert os.listdir(target.parent) == ["events.fits.lock"]

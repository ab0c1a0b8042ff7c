"""Whole-process guarantees: SIGKILL and resume, concurrent processes, stale locks.

SPEC §3.1, §3.2 and §3.8 as a user meets them: a download process killed
part-way (kill -9, an HPC job over its wall time) leaves a ``.part`` that the
next run continues byte-exactly, or restarts when the object changed; two
processes asked for one file end with one correct file; a lock left by a dead
process does not block anyone. The processes are real (``subprocess``), the
server a trickling loopback :class:`servers.FaultServer`.
"""

from __future__ import annotations

import errno
import json
import os
import select
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import pyvo_dl
from pyvo_dl import http_download
from servers import build_response

TYPE_CHECKING = False
if TYPE_CHECKING:
    import pathlib
    from collections.abc import Callable
    from typing import Any

    from servers import FaultServer, RawHandler, RawServer

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")

MiB = 1024 * 1024
#: The engine's read buffer: what a killed process may have received unsaved.
BUFFER = 1024 * 1024
#: What the server may have handed to its socket that the client had not read
#: when it was killed (a few trickle steps in the kernel's buffers).
IN_FLIGHT = 256 * 1024
SIZE = 8 * MiB
DATA = (bytes(range(256)) * (SIZE // 256))[:SIZE]
NEW = bytes(255 - b for b in DATA[:256]) * (SIZE // 256)  # differs at every offset
PATH = "/archive/events.fits"
#: 64 KiB every 10 ms: about 6 MiB/s, so a kill lands well inside the file.
TRICKLE = (64 * 1024, 0.01)

SCRIPT = """
import sys
from pyvo_dl import http_download
http_download(sys.argv[1], sys.argv[2], progress=False, verbose=True)
"""


#: The same with the file size limited (RLIMIT_FSIZE): writes fail as on a full disk.
FULL_DISK_SCRIPT = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
limit = int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from pyvo_dl import DownloadError, http_download
try:
    http_download(sys.argv[1], sys.argv[2], progress=False)
except DownloadError as e:
    print(e.errno, e.filename)
    print(e)
    sys.exit(3)
"""


def spawn(
    url: str, target: pathlib.Path, script: str = SCRIPT, *args: str
) -> subprocess.Popen[str]:
    """Start a download of ``url`` to ``target`` in a new Python process."""
    env = dict(os.environ)
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(pyvo_dl.__file__)))
    env["PYTHONPATH"] = package_root + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.Popen(
        [sys.executable, "-c", script, url, str(target), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Poll ``condition`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def size_of(path: str) -> int:
    """The size of ``path``, 0 when it does not exist."""
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def kill_part_way(
    server: FaultServer, url: str, target: pathlib.Path, at_least: int = 2 * MiB
) -> int:
    """Run a download in a process, SIGKILL it once ``at_least`` bytes are in the .part."""
    part = str(target) + ".part"
    sigkill_when(spawn(url, target), lambda: size_of(part) >= at_least, "the .part")
    return size_of(part)


def sigkill_when(process: subprocess.Popen[Any], condition: Callable[[], bool], what: str) -> None:
    """SIGKILL ``process`` once ``condition()`` holds; it must still be running then."""
    try:
        wait_for(lambda: condition() or process.poll() is not None, what)
        assert process.poll() is None, process.communicate()
        os.kill(process.pid, signal.SIGKILL)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.communicate()
    assert process.returncode == -signal.SIGKILL


def leftovers(target: pathlib.Path) -> list[str]:
    """The helper files a download may leave beside ``target``."""
    return [s for s in (".part", ".part.json", ".lock") if os.path.exists(str(target) + s)]


def test_sigkill_then_resume_is_byte_identical(
    http_server: FaultServer, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SPEC §3.1/§3.2: kill -9 leaves .part + state, no target; the rerun sends only the rest."""
    url = http_server.add_file(PATH, DATA)
    http_server.set_fault(PATH, trickle=TRICKLE, times=1)
    target = tmp_path / "events.fits"

    kept = kill_part_way(http_server, url, target)

    assert not target.exists()
    assert leftovers(target) == [".part", ".part.json", ".lock"]
    assert 2 * MiB <= kept < SIZE
    # Nothing half-written: the .part holds the file's own first bytes. Not
    # whole buffers: a read hands over what came within 0.2 s, and on a
    # loaded machine the trickle can fill less than a buffer in that time.
    assert (tmp_path / "events.fits.part").read_bytes() == DATA[:kept]
    state = json.loads((tmp_path / "events.fits.part.json").read_text())
    assert state["size"] == SIZE
    first_sent = http_server.requests_for(PATH, "GET")[0].bytes_sent
    assert kept <= first_sent < kept + BUFFER + IN_FLIGHT

    assert http_download(url, str(target), progress=False, verbose=True) == str(target)

    assert target.read_bytes() == DATA
    assert leftovers(target) == []
    assert f"at byte {kept}" in capsys.readouterr().out
    _, second = http_server.requests_for(PATH, "GET")
    assert second.headers["range"] == f"bytes={kept}-"
    assert second.headers["if-range"] == http_server.etag(PATH)
    assert (second.status, second.bytes_sent) == (206, SIZE - kept)
    assert http_server.bytes_sent(PATH) < SIZE + BUFFER + IN_FLIGHT


def test_sigkill_then_object_replaced_gives_the_new_object(
    http_server: FaultServer, tmp_path: pathlib.Path
) -> None:
    """SPEC §3.2: the object changed while nobody was downloading: never a mix."""
    url = http_server.add_file(PATH, DATA)
    http_server.set_fault(PATH, trickle=TRICKLE, times=1)
    target = tmp_path / "events.fits"
    kept = kill_part_way(http_server, url, target)
    old_etag = http_server.etag(PATH)
    http_server.replace_file(PATH, NEW)

    http_download(url, str(target), progress=False)

    assert target.read_bytes() == NEW
    assert leftovers(target) == []
    resumed = http_server.requests_for(PATH, "GET")[1]
    assert resumed.headers["range"] == f"bytes={kept}-"
    assert resumed.headers["if-range"] == old_etag
    assert resumed.status == 200


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs RLIMIT_FSIZE")
def test_full_disk_is_reported_and_resumed(
    http_server: FaultServer, tmp_path: pathlib.Path
) -> None:
    """SPEC §3.7: a full disk is a DownloadError naming the path; what was written is resumed."""
    limit = 3 * MiB // 2
    url = http_server.add_file(PATH, DATA)
    target = tmp_path / "events.fits"
    process = spawn(url, target, FULL_DISK_SCRIPT, str(limit))
    out, err = process.communicate(timeout=60)
    assert process.returncode == 3, (out, err)
    errno_line, message = out.splitlines()[:2]
    assert errno_line == f"{errno.EFBIG} {target}.part"
    assert "disk is full" in message
    assert str(target) in message
    assert not target.exists()
    assert leftovers(target) == [".part", ".part.json"]
    assert size_of(str(target) + ".part") == limit

    http_download(url, str(target), progress=False)

    assert target.read_bytes() == DATA
    resumed = http_server.requests_for(PATH, "GET")[-1]
    assert resumed.headers["range"] == f"bytes={limit}-"


def read_line(process: subprocess.Popen[str], timeout: float = 20.0) -> str:
    """The next line the process prints, waiting at most ``timeout`` seconds."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, "the process printed nothing in time"
    return process.stdout.readline()


def test_two_processes_one_target(
    raw_server_factory: Callable[[RawHandler], RawServer], tmp_path: pathlib.Path
) -> None:
    """SPEC §3.8: the second process waits for the first and reuses its result."""
    data = DATA[: 2 * MiB]
    gate = threading.Event()
    gets: list[bytes] = []

    def handler(conn: socket.socket, request: bytes) -> None:
        # Half the body, then hold the rest until the second process waits.
        gets.append(request)
        headers = {"ETag": '"v1"', "Content-Length": str(len(data))}
        conn.sendall(build_response(200, headers=headers, body=data[:MiB]))
        gate.wait(30)
        conn.sendall(data[MiB:])

    url = raw_server_factory(handler).url(PATH)
    target = tmp_path / "events.fits"
    processes = [spawn(url, target)]
    try:
        wait_for(lambda: size_of(str(target) + ".part") >= MiB, "the first process's .part")
        processes.append(spawn(url, target))
        waiting = read_line(processes[1])
        gate.set()
        outputs = [p.communicate(timeout=30) for p in processes]
    finally:
        gate.set()
        for process in processes:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
                process.communicate()
    assert [p.returncode for p in processes] == [0, 0], outputs
    assert waiting.startswith(f"Waiting for {target}.lock")
    assert "just downloaded by another process" in outputs[1][0]
    assert "Waiting for" not in outputs[0][0]
    assert target.read_bytes() == data
    assert leftovers(target) == []
    assert len(gets) == 1
    assert os.listdir(tmp_path) == ["events.fits"]


def dead_pid() -> int:
    """The PID of a process of ours that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def write_lock(target: pathlib.Path, pid: int) -> None:
    """Write the lock file a process ``pid`` on this host would hold."""
    lock = {"pyvo_dl": "lock", "host": socket.gethostname(), "pid": pid, "token": f"test:{pid}"}
    (target.parent / (target.name + ".lock")).write_text(json.dumps(lock))


def test_stale_lock_from_dead_pid_is_recovered(
    http_server: FaultServer, tmp_path: pathlib.Path
) -> None:
    """SPEC §3.8: a lock whose holder on this host is dead is taken over at once."""
    url = http_server.add_file(PATH, DATA[:MiB])
    target = tmp_path / "events.fits"
    write_lock(target, dead_pid())
    started = time.monotonic()
    http_download(url, str(target), progress=False)
    assert time.monotonic() - started < 2.0
    assert target.read_bytes() == DATA[:MiB]
    assert leftovers(target) == []


def test_live_lock_is_waited_for(http_server: FaultServer, tmp_path: pathlib.Path) -> None:
    """SPEC §3.8: a lock held by a live process blocks until that process is gone."""
    url = http_server.add_file(PATH, DATA[:MiB])
    target = tmp_path / "events.fits"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        write_lock(target, holder.pid)
        timer = threading.Timer(0.5, lambda: os.kill(holder.pid, signal.SIGKILL))
        timer.start()
        # The holder dies but is not reaped yet: a zombie still "exists"; reap it.
        reaper = threading.Thread(target=holder.wait)
        reaper.start()
        started = time.monotonic()
        http_download(url, str(target), progress=False)
        elapsed = time.monotonic() - started
        timer.join()
        reaper.join()
    finally:
        if holder.poll() is None:
            os.kill(holder.pid, signal.SIGKILL)
            holder.wait()
    assert elapsed >= 0.5
    assert http_server.requests_for(PATH, "GET")  # it did download, after the wait
    assert target.read_bytes() == DATA[:MiB]
    assert leftovers(target) == []


def test_a_kill_inside_a_state_write_leaves_nothing_after_the_next_run(
    http_server: FaultServer, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A process SIGKILLed between writing its state aside and renaming it: the next run cleans up.

    The child kills itself at the exact point (the rename of the state's
    temporary file), as a kill -9 there would; the next download takes its
    lock over and removes the half-made state file, and only that.
    """
    url = http_server.add_file(PATH, DATA)
    target = tmp_path / "events.fits"
    code = textwrap.dedent(
        f"""
        import os, signal
        from pyvo_dl import http_download
        replace = os.replace
        def replace_or_die(src, dst):
            if str(src).endswith(".tmp"):
                os.kill(os.getpid(), signal.SIGKILL)
            replace(src, dst)
        os.replace = replace_or_die
        http_download({url!r}, {str(target)!r}, progress=False)
        """
    )
    child = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    stray = [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    assert len(stray) == 1, os.listdir(tmp_path)
    assert stray[0].startswith("events.fits.part.json."), stray
    # Not the state's temporary files: a link with such a name, and other names.
    (tmp_path / "events.fits.part.json.1-0123abcd.tmp").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "events.fits.part.json.mine.tmp").write_text("a user's file")
    (tmp_path / "other.fits.part.json.1-0123abcd.tmp").write_text("another target's")

    assert http_download(url, str(target), progress=False, verbose=True) == str(target)

    assert target.read_bytes() == DATA
    assert leftovers(target) == []
    assert sorted(os.listdir(tmp_path)) == [
        "events.fits",
        "events.fits.part.json.1-0123abcd.tmp",
        "events.fits.part.json.mine.tmp",
        "other.fits.part.json.1-0123abcd.tmp",
    ]
    assert f"Removed {tmp_path / stray[0]}: a state file that a download" in capsys.readouterr().out


def test_a_download_that_took_no_lock_over_lists_no_folder(
    http_server: FaultServer, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The search for half-made state files is only for a lock taken over: no listdir per file."""
    url = http_server.add_file(PATH, DATA[:MiB])
    listed: list[str] = []
    listdir = os.listdir
    monkeypatch.setattr(os, "listdir", lambda path=".": listed.append(str(path)) or listdir(path))
    http_download(url, str(tmp_path / "events.fits"), progress=False)
    assert listed == []

"""A writer never recreates a ``.part`` it is continuing, nor commits one it did not write (12.5).

The race of issue 12.5: a download waits (a ``503 Retry-After``, a
suspended process); another process takes its lock as abandoned, finishes
the same ``.part`` and moves it onto the target. The first wakes and
continues: it re-created ``<target>.part`` with ``O_CREAT``, zeros up to its
old offset, appended the tail and moved that over the good file; both
reported success and the target started with zeros. Now a writer opens a
``.part`` it continues without ``O_CREAT`` (gone: it checks its lock and
starts over), checks before committing that the file at the path is the one
it wrote (same device and inode), and its lock is kept fresh while it
sleeps by the heartbeat (``test_locks.py``).

The other process is played by the test, at an exact point of the download:
the fault server holds the answer (``gate``) until the test has acted.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time

import pytest

import pyvo_dl
from pyvo_dl import DownloadError, _parallel

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any, Callable

    from servers import FaultServer

MiB = 1024 * 1024
PATH = "/data/cube.fits"


def data(size: int, seed: bytes = b"cube") -> bytes:
    block = hashlib.sha256(seed).digest() * (MiB // 32)
    return (block * (size // len(block) + 1))[:size]


def in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 20
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def finish_as_another_process(target: Path, whole: bytes) -> None:
    """What the process that took the lock over does: finish the .part, move it into place."""
    part = target.with_name(target.name + ".part")
    with open(part, "r+b") as f:
        f.seek(0)
        f.write(whole)
    os.replace(part, target)
    os.unlink(target.with_name(target.name + ".part.json"))


@pytest.mark.parametrize("connections", [1, 4])
def test_a_part_finished_elsewhere_is_never_recreated(
    http_server: FaultServer, tmp_path: Path, connections: int
) -> None:
    size = 3 * _parallel.MIN_PART_SIZE
    whole = data(size)
    url = http_server.add_file(PATH, whole)
    target = tmp_path / "cube.fits"
    # First call: cut part-way, leaving the .part and its state to resume.
    http_server.set_fault(PATH, drop_after=MiB, times=connections)
    with pytest.raises(DownloadError):
        pyvo_dl.http_download(url, str(target), progress=False, retries=0, connections=connections)
    http_server.clear_faults(PATH)
    gate = threading.Event()
    http_server.set_fault(PATH, gate=gate, times=1)
    requests_before = len(http_server.requests_for(PATH, "GET"))

    # Second call: its resumed request waits at the server while another
    # process finishes the .part and commits it.
    thread, outcome = in_thread(
        lambda: pyvo_dl.http_download(url, str(target), progress=False, connections=connections)
    )
    wait_for(lambda: len(http_server.requests_for(PATH, "GET")) > requests_before, "the resume")
    finish_as_another_process(target, whole)
    gate.set()
    thread.join(30)

    assert outcome == [str(target)]
    assert target.read_bytes() == whole  # not zeros where the .part was
    assert sorted(os.listdir(tmp_path)) == ["cube.fits"]


def test_a_part_replaced_under_the_writer_is_not_committed(
    http_server: FaultServer, tmp_path: Path
) -> None:
    """The .part at the path is another file when the body ends: nothing is moved onto the target."""
    size = 3 * MiB
    url = http_server.add_file(PATH, data(size))
    target = tmp_path / "cube.fits"
    part = tmp_path / "cube.fits.part"
    gate = threading.Event()
    http_server.set_fault(PATH, gate=gate, gate_after=MiB, times=1)

    thread, outcome = in_thread(lambda: pyvo_dl.http_download(url, str(target), progress=False))
    wait_for(lambda: part.exists() and part.stat().st_size >= MiB, "the first MiB")
    os.rename(part, tmp_path / "moved-aside")
    part.write_bytes(b"\xff" * size)  # the same size: only its identity tells
    gate.set()
    thread.join(30)

    (error,) = outcome
    assert isinstance(error, DownloadError), error
    assert "no longer the file this download wrote" in str(error)
    assert not target.exists()
    assert part.read_bytes() == b"\xff" * size  # not ours: left alone

"""Parallel ranged downloads of one object (``connections=``, issue 4 item 1).

Against the loopback fault server: the ranges in the server's log, a drop in
one range retried on its own, a server that ignores Range, an object that
changes mid-way, and a SIGKILLed parallel download resumed from its part map.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import pyvo_dl
from pyvo_dl import _parallel
from servers import FaultServer

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

MIB = 1024 * 1024
PATH = "/big/cube.fits"


def _data(size: int, seed: bytes = b"cube") -> bytes:
    block = hashlib.sha256(seed).digest() * (MIB // 32)
    return (block * (size // len(block) + 1))[:size]


def _ranges(server: FaultServer, path: str = PATH) -> list[str]:
    return sorted(r.headers.get("range", "") for r in server.requests_for(path, "GET"))


@pytest.mark.parametrize("size", [1, 2 * _parallel.MIN_PART_SIZE - 1, _parallel.FIRST_PART])
def test_small_objects_are_not_split(http_server: FaultServer, in_tmp: Path, size: int) -> None:
    data = _data(size)
    url = http_server.add_file(PATH, data)
    pyvo_dl.http_download(url, connections=4, progress=False)
    assert (in_tmp / "cube.fits").read_bytes() == data
    # One request: the first part (8 MiB) holds the whole object.
    assert _ranges(http_server) == [f"bytes=0-{_parallel.FIRST_PART - 1}"]


def test_ranges_cover_the_object_once(http_server: FaultServer, in_tmp: Path) -> None:
    data = _data(40 * MIB + 12345)
    url = http_server.add_file(PATH, data)
    pyvo_dl.http_download(url, connections=4, checksum="sha256:" + hashlib.sha256(data).hexdigest())
    assert (in_tmp / "cube.fits").read_bytes() == data
    requests = http_server.requests_for(PATH, "GET")
    quarter = -(-len(data) // 4)
    first = _parallel.FIRST_PART
    # The first GET asked for the first part only and learnt the size; the
    # first quarter's rest went on the same connection, three more in parallel.
    assert _ranges(http_server) == sorted(
        [f"bytes=0-{first - 1}", f"bytes={first}-{quarter - 1}"]
        + [f"bytes={i * quarter}-{min(len(data), (i + 1) * quarter) - 1}" for i in (1, 2, 3)]
    )
    for request in requests[1:]:
        assert request.headers["if-range"] == http_server.etag(PATH)
    assert sum(r.bytes_sent for r in requests) == len(data)  # not one byte twice
    assert not list(in_tmp.glob("*.part*"))


def test_default_http_is_one_connection(http_server: FaultServer, in_tmp: Path) -> None:
    data = _data(20 * MIB)
    url = http_server.add_file(PATH, data)
    pyvo_dl.http_download(url, progress=False)
    assert _ranges(http_server) == [""]


def test_a_dropped_range_is_retried_on_its_own(http_server: FaultServer, in_tmp: Path) -> None:
    data = _data(32 * MIB)
    url = http_server.add_file(PATH, data)
    # The second GET (the first ranged worker) is cut after 1 MiB.
    http_server.set_fault(PATH, drop_after=MIB, after=1, times=1)
    pyvo_dl.http_download(url, connections=4, progress=False)
    assert (in_tmp / "cube.fits").read_bytes() == data
    requests = http_server.requests_for(PATH, "GET")
    assert len(requests) == 5
    retried = requests[-1].headers["range"]
    start, end = (int(x) for x in retried.split("=")[1].split("-"))
    assert end - start + 1 < 8 * MIB  # only the rest of that one range


def test_server_ignoring_range_falls_back_to_one_stream(
    http_server: FaultServer, in_tmp: Path
) -> None:
    data = _data(20 * MIB)
    url = http_server.add_file(PATH, data)
    http_server.set_fault(PATH, ignore_range=True)
    pyvo_dl.http_download(url, connections=8, progress=False)
    assert (in_tmp / "cube.fits").read_bytes() == data
    assert [r.status for r in http_server.requests_for(PATH, "GET")] == [200]


def test_object_changed_mid_way_restarts_never_stitches(
    http_server: FaultServer, in_tmp: Path
) -> None:
    old, new = _data(24 * MIB, b"old"), _data(24 * MIB + 7, b"new")
    url = http_server.add_file(PATH, old)
    http_server.set_fault(PATH, change_after=2, new_data=new)  # while the ranges run
    pyvo_dl.http_download(url, connections=3, progress=False)
    assert (in_tmp / "cube.fits").read_bytes() == new


def test_progress_callable_ends_at_the_size(http_server: FaultServer, in_tmp: Path) -> None:
    data = _data(16 * MIB)
    url = http_server.add_file(PATH, data)
    seen: list[tuple[int, int | None]] = []
    pyvo_dl.http_download(url, connections=4, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (len(data), len(data))
    assert all(t == len(data) for _, t in seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_sigkill_then_resume_fetches_only_missing_parts(
    http_server: FaultServer, tmp_path: Path
) -> None:
    data = _data(24 * MIB)
    url = http_server.add_file(PATH, data)
    http_server.set_fault(PATH, trickle=(256 * 1024, 0.05), times=4)  # ~5 MB/s per range
    target = tmp_path / "cube.fits"
    code = textwrap.dedent(
        f"""
        import pyvo_dl
        pyvo_dl.http_download({url!r}, {str(target)!r}, connections=4, progress=False)
        """
    )
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(pyvo_dl.__file__)))
    child = subprocess.Popen([sys.executable, "-c", code], env=env)
    state_path = tmp_path / "cube.fits.part.json"
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            state = json.loads(state_path.read_text()) if state_path.exists() else None
            if state and sum(p[2] for p in state.get("parts", [])) >= 8 * MIB:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the child never wrote its part map")
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert not target.exists()
    state = json.loads(state_path.read_text())
    recorded = sum(p[2] for p in state["parts"])
    assert 0 < recorded < len(data)
    http_server.clear_faults(PATH)
    http_server.reset_log()
    pyvo_dl.http_download(url, str(target), connections=4, progress=False)
    assert target.read_bytes() == data
    resent = sum(r.bytes_sent for r in http_server.requests_for(PATH, "GET"))
    assert resent <= len(data) - recorded + 4 * 64 * 1024
    for request in http_server.requests_for(PATH, "GET"):
        assert not request.headers["range"].startswith("bytes=0-")
        assert request.headers["if-range"] == http_server.etag(PATH)
    assert not state_path.exists()


def test_plan_parts_are_equal_and_cover_once() -> None:
    from pyvo_dl._partfile import PartRange

    parts = _parallel.plan_parts(100 * MIB + 3, 8)
    assert len(parts) == 8
    assert parts[0].start == 0
    assert parts[-1].end == 100 * MIB + 2
    sizes = [p.end - p.start + 1 for p in parts]
    assert max(sizes) - min(sizes) <= 8
    assert all(a.end + 1 == b.start for a, b in zip(parts, parts[1:]))
    assert all(p.done == 0 and p.missing for p in parts)
    assert _parallel.plan_parts(5 * MIB, 8) == [PartRange(0, 5 * MIB - 1, 0)]

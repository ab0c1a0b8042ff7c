"""The files beside a target are pyvo_dl's only when it can prove it (issue 12.6, 12.9).

``<target>.part``, ``<target>.part.json`` and ``<target>.lock`` are names a
user's own files may have: ``Gemfile.lock`` beside a downloaded ``Gemfile``, a
data file ``cat.part.json`` beside ``cat``, another item's target
``x.fits.part`` beside ``x.fits``. pyvo_dl writes a marker in its state and
lock files, and a ``.part`` is its own only when its state file names it;
anything else at those names is left alone and the target refused with an
error naming the file. A state file of its own that does not validate
(wrong types, an unknown algorithm, a line break in a validator, a part
map that does not cover the object) is discarded with a ``verbose`` note;
a helper that is not a regular file (a FIFO, which would block ``open``
for ever) is refused without being opened for reading or writing.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time

import pytest

import pyvo_dl
from pyvo_dl import DownloadError, _parallel

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

    from servers import FaultServer

MiB = 1024 * 1024
PATH = "/data/cube.fits"
SIZE = 3 * MiB
DATA = (hashlib.sha256(b"cube").digest() * (SIZE // 32 + 1))[:SIZE]
DAY = 86400.0


def old(path: Path) -> Path:
    """Make ``path`` look untouched for a day (older than any stale-lock limit)."""
    past = time.time() - DAY
    os.utime(path, (past, past))
    return path


# -- foreign files at a helper's name (12.6) ------------------------------------------


@pytest.mark.parametrize("age", ["fresh", "a day old"])
def test_a_users_lock_file_is_left_alone(
    http_server: FaultServer, tmp_path: Path, age: str
) -> None:
    """Downloading ``Gemfile`` into a project folder must not delete ``Gemfile.lock``."""
    url = http_server.add_file("/repo/Gemfile", b"source 'https://rubygems.org'\n")
    lock = tmp_path / "Gemfile.lock"
    lock.write_text("GEM\n  specs:\n    rake (13.0.6)\n")
    if age != "fresh":
        old(lock)
    with pytest.raises(DownloadError) as info:
        pyvo_dl.http_download(url, str(tmp_path / "Gemfile"), progress=False, timeout=5)
    assert str(lock) in str(info.value)
    assert "not made by pyvo_dl" in str(info.value)
    assert lock.read_text() == "GEM\n  specs:\n    rake (13.0.6)\n"
    assert not (tmp_path / "Gemfile").exists()
    assert http_server.requests_for("/repo/Gemfile") == []


@pytest.mark.parametrize(
    "content",
    [b'{"name": "cat", "lives": 9}', b"just some text", b"", b'{"pyvo_dl": "something else"}'],
)
def test_a_users_file_named_like_a_state_file_is_left_alone(
    http_server: FaultServer, tmp_path: Path, content: bytes
) -> None:
    url = http_server.add_file("/pets/cat", DATA)
    state = tmp_path / "cat.part.json"
    state.write_bytes(content)
    with pytest.raises(DownloadError, match="not made by pyvo_dl") as info:
        pyvo_dl.http_download(url, str(tmp_path / "cat"), progress=False)
    assert str(state) in str(info.value)
    assert state.read_bytes() == content
    assert not (tmp_path / "cat").exists()


def test_a_part_that_no_state_names_is_left_alone(http_server: FaultServer, tmp_path: Path) -> None:
    """A user's ``x.fits.part`` (an earlier download's result, say) is not ours to delete."""
    url = http_server.add_file(PATH, DATA)
    part = tmp_path / "cube.fits.part"
    part.write_bytes(b"the user's own file")
    with pytest.raises(DownloadError, match="not made by pyvo_dl"):
        pyvo_dl.http_download(url, str(tmp_path / "cube.fits"), progress=False)
    assert part.read_bytes() == b"the user's own file"


@pytest.mark.parametrize("order", ["part first", "target first"])
def test_download_many_refuses_a_target_that_is_another_items_part(
    http_server: FaultServer, tmp_path: Path, order: str
) -> None:
    first = http_server.add_file("/a/first.fits", DATA)
    second = http_server.add_file("/b/second.fits", DATA[::-1])
    items = [(first, "x.fits.part"), (second, "x.fits")]
    if order != "part first":
        items.reverse()
    results = pyvo_dl.download_many(items, tmp_path, progress=False)
    by_name = {os.path.basename(str(path)): result for (_, path), result in zip(items, results)}
    assert by_name["x.fits"] == str(tmp_path / "x.fits")
    assert (tmp_path / "x.fits").read_bytes() == DATA[::-1]
    refused = by_name["x.fits.part"]
    assert isinstance(refused, ValueError)
    assert "x.fits.part would hold the partial download of item" in str(refused)
    assert sorted(os.listdir(tmp_path)) == ["x.fits"]


def test_a_target_that_is_the_part_of_a_download_under_way_is_refused(
    http_server: FaultServer, tmp_path: Path
) -> None:
    """Across calls too: ``x.fits.part`` while a download of ``x.fits`` holds its lock."""
    url = http_server.add_file(PATH, DATA)
    holder = pyvo_dl._partfile.TargetLock(str(tmp_path / "x.fits"))
    assert holder.try_acquire()
    try:
        with pytest.raises(DownloadError, match=r"x\.fits\.lock"):
            pyvo_dl.http_download(url, str(tmp_path / "x.fits.part"), progress=False)
    finally:
        holder.release()
    assert sorted(os.listdir(tmp_path)) == []


def test_our_own_leftovers_are_still_ours(http_server: FaultServer, tmp_path: Path) -> None:
    """The files a failed call left (state, .part, a dead holder's lock) are continued or cleared."""
    url = http_server.add_file(PATH, DATA)
    http_server.set_fault(PATH, drop_after=SIZE // 2, times=1)
    target = tmp_path / "cube.fits"
    with pytest.raises(DownloadError):
        pyvo_dl.http_download(url, str(target), progress=False, retries=0)
    assert sorted(os.listdir(tmp_path)) == ["cube.fits.part", "cube.fits.part.json"]
    pyvo_dl.http_download(url, str(target), progress=False)
    assert target.read_bytes() == DATA
    requests = http_server.requests_for(PATH, "GET")
    assert requests[-1].headers["range"] == f"bytes={SIZE // 2}-"


# -- state files that do not validate (12.9) -------------------------------------------


def own_state(url: str, **fields: Any) -> dict[str, Any]:
    """A state file as pyvo_dl writes it for ``url`` (DATA), with ``fields`` changed."""
    state = {
        "pyvo_dl": 1, "identity": url, "url": url, "validator": '"v"', "etag": '"v"',
        "size": SIZE, "last_modified": None, "checksums": [], "parts": [],
    }  # fmt: skip
    state.update(fields)
    return state


BAD_STATES: dict[str, dict[str, Any]] = {
    "checksums of the wrong type": {"checksums": 5},
    "an unknown algorithm": {"checksums": [["nosuch", "00"]]},
    "a digest that is not hex": {"checksums": [["md5", "z" * 32]]},
    "a line break in the validator": {"validator": '"v"\r\nX-Injected: 1'},
    "a line break in the ETag": {"etag": '"v"\nX-Injected: 1'},
    "a part of two numbers": {"parts": [[0, 10]]},
    "parts that do not cover the object": {"parts": [[0, SIZE // 2 - 1, 10]]},
    "a part done past its end": {"parts": [[0, SIZE // 2 - 1, SIZE], [SIZE // 2, SIZE - 1, 0]]},
    "a negative size": {"size": -5},
    "a size that is a bool": {"size": True},
    "a newer format": {"pyvo_dl": 99},
}


@pytest.mark.parametrize("bad", list(BAD_STATES))
@pytest.mark.parametrize("connections", [1, 4])
def test_a_state_file_that_does_not_validate_is_discarded(
    http_server: FaultServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    bad: str,
    connections: int,
) -> None:
    size = 3 * _parallel.MIN_PART_SIZE
    data = (DATA * (size // SIZE + 1))[:size]
    url = http_server.add_file(PATH, data, etag='"v"')
    target = tmp_path / "cube.fits"
    fields = dict(BAD_STATES[bad])
    fields.setdefault("size", size)
    for part in fields.get("parts", []) if isinstance(fields.get("parts"), list) else []:
        if len(part) == 3 and part[1] == SIZE // 2 - 1:
            part[1] = size // 2 - 1
    (tmp_path / "cube.fits.part.json").write_text(json.dumps(own_state(url, **fields)))
    (tmp_path / "cube.fits.part").write_bytes(b"\0" * 1000)

    pyvo_dl.http_download(url, str(target), progress=False, verbose=True, connections=connections)

    assert target.read_bytes() == data
    out = capsys.readouterr().out
    assert f"Discarded {target}.part.json" in out
    assert sorted(os.listdir(tmp_path)) == ["cube.fits"]
    for request in http_server.requests_for(PATH, "GET"):
        assert "x-injected" not in request.headers


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("helper", [".part.json", ".lock", ".part", ".lock.break"])
def test_a_helper_that_is_a_fifo_is_refused_without_blocking(
    http_server: FaultServer, tmp_path: Path, helper: str
) -> None:
    url = http_server.add_file(PATH, DATA)
    target = tmp_path / "cube.fits"
    pipe = fifo(tmp_path / f"cube.fits{helper}")
    if helper == ".lock.break":
        # A dead holder's lock, so that the break turn is what is looked at.
        (tmp_path / "cube.fits.lock").write_text(
            json.dumps({"pyvo_dl": "lock", "host": "elsewhere", "pid": 1, "token": "t"})
        )
        old(tmp_path / "cube.fits.lock")
    outcome: list[BaseException | str] = []

    def run() -> None:
        try:
            outcome.append(pyvo_dl.http_download(url, str(target), progress=False))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(20)
    if thread.is_alive():
        # Unblock it (a writer or a reader at the other end) before failing.
        fd = os.open(pipe, os.O_RDWR | os.O_NONBLOCK)
        thread.join(20)
        os.close(fd)
        pytest.fail(f"the download blocked on the FIFO at {pipe}")
    (error,) = outcome
    assert isinstance(error, DownloadError), error
    assert str(pipe) in str(error)
    assert os.path.exists(pipe)

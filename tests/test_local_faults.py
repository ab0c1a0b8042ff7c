"""Local faults: a full disk, a read-only folder, a target that is a folder (SPEC §3.7).

The full disk is a real one: a 2 MiB tmpfs mounted for the test (root only;
skipped where mounting is not permitted), then grown with ``remount`` to
stand for the user freeing space. ``RLIMIT_FSIZE`` in a subprocess gives
the same for parallel downloads, whose preallocation must fail before any
range is fetched. In every case: a ``DownloadError`` naming the path and
saying that the ``.part`` is kept, the ``.part`` there to resume from, and
never a file at the target.
"""

from __future__ import annotations

import errno
import functools
import gc
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import warnings

import pytest

import pyvo_dl
from pyvo_dl import DownloadError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import pathlib
    from collections.abc import Callable, Iterator
    from typing import TypeVar

    from servers import FaultServer

    E = TypeVar("E", bound=BaseException)

MiB = 1024 * 1024
SMALL = 4 * MiB  # twice the disk
BIG = 12 * MiB  # three parallel ranges of 4 MiB
BUCKET = "bkt"


@functools.lru_cache(maxsize=None)
def payload(size: int) -> bytes:
    """``size`` bytes that differ at every offset (a shifted resume would show)."""
    return random.Random(size).getrandbits(8 * size).to_bytes(size, "little")


def run(*command: str) -> bool:
    return subprocess.run(command, capture_output=True, check=False).returncode == 0


class Mount:
    """A tmpfs mounted on a folder: its size and its write access can be changed."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path

    def remount(self, options: str) -> None:
        assert run("mount", "-o", f"remount,{options}", str(self.path)), options


@pytest.fixture
def small_disk(tmp_path: pathlib.Path) -> Iterator[Mount]:
    """A 2 MiB tmpfs at ``tmp_path / "disk"``, unmounted after the test."""
    folder = tmp_path / "disk"
    folder.mkdir()
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    if not run("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)):
        pytest.skip("mount -t tmpfs is not permitted here (no CAP_SYS_ADMIN?)")
    try:
        yield Mount(folder)
    finally:
        if not run("umount", str(folder)):
            run("umount", "-l", str(folder))


def leftovers(target: pathlib.Path) -> list[str]:
    return [s for s in (".part", ".part.json", ".lock") if os.path.exists(str(target) + s)]


def assert_disk_full_error(error: DownloadError, path: pathlib.Path) -> None:
    """What a full disk must say: which file, that the disk is full, that it is kept."""
    assert error.errno in (errno.ENOSPC, errno.EFBIG)
    assert error.filename == str(path) + ".part"
    text = str(error)
    assert str(path) in text
    assert "disk is full" in text
    assert "kept" in text


def fetcher(server: FaultServer, scheme: str, data: bytes) -> Callable[..., str]:
    """A function downloading ``data`` from ``server`` to a target, over HTTP or S3."""
    if scheme == "http":
        url = server.add_file("/d/cube.fits", data)
        return lambda target, **kw: pyvo_dl.http_download(url, str(target), progress=False, **kw)
    server.add_file(f"/{BUCKET}/d/cube.fits", data)

    def fetch(target: pathlib.Path, **kw: object) -> str:
        return pyvo_dl.aws_download(
            bucket=BUCKET, key="d/cube.fits", local_filepath=str(target),
            endpoint_url=server.base_url, progress=False, **kw,
        )  # fmt: skip

    return fetch


def gets(server: FaultServer) -> list[object]:
    return [r for r in server.requests if r.method == "GET"]


@pytest.mark.parametrize("scheme", ["http", "s3"])
def test_full_disk_keeps_the_part_and_resumes_once_freed(
    http_server: FaultServer, small_disk: Mount, scheme: str
) -> None:
    """SPEC §3.1/§3.2/§3.7: ENOSPC is a clear error; the .part resumes after space is freed."""
    data = payload(SMALL)
    fetch = fetcher(http_server, scheme, data)
    target = small_disk.path / "cube.fits"

    with pytest.raises(DownloadError) as info:
        fetch(target, connections=1)

    assert_disk_full_error(info.value, target)
    assert not target.exists()
    assert leftovers(target) == [".part", ".part.json"]
    kept = os.path.getsize(str(target) + ".part")
    assert MiB < kept <= 2 * MiB
    assert len(gets(http_server)) == 1  # a full disk is not retried

    small_disk.remount("size=16m")
    assert fetch(target, connections=1) == str(target)

    assert target.read_bytes() == data
    assert leftovers(target) == []
    resumed = gets(http_server)[-1]
    assert resumed.headers["range"] == f"bytes={kept}-"  # type: ignore[attr-defined]


def fail_without_traces(fetch: Callable[..., str], target: pathlib.Path, **kw: object) -> str:
    """The message of the DownloadError ``fetch`` raises, with the error itself dropped.

    Collecting the error's frames at once turns a connection the failed
    download left open into a ResourceWarning inside this test, not a later one.
    """
    try:
        fetch(target, **kw)
    except DownloadError as error:
        assert_disk_full_error(error, target)
        message = str(error)
    else:
        raise AssertionError("no DownloadError")
    gc.collect()
    return message


@pytest.mark.parametrize("scheme", ["http", "s3"])
def test_full_disk_fails_a_parallel_download_before_any_range(
    http_server: FaultServer, small_disk: Mount, scheme: str
) -> None:
    """Preallocation turns a full disk into an error at once, not at 90 %."""
    data = payload(BIG)
    fetch = fetcher(http_server, scheme, data)
    target = small_disk.path / "cube.fits"

    message = fail_without_traces(fetch, target, connections=4)

    assert "allocate" in message
    assert not target.exists()
    assert len(gets(http_server)) == 1  # the size probe only; no range was asked
    assert os.path.getsize(str(target) + ".part") < MiB

    small_disk.remount("size=32m")
    fetch(target, connections=4)
    assert target.read_bytes() == data
    assert leftovers(target) == []


def test_failed_preallocation_closes_the_first_answer(
    http_server: FaultServer, small_disk: Mount
) -> None:
    """A parallel download that cannot start closes the connection it opened (a leak once)."""
    fetch = fetcher(http_server, "http", payload(BIG))
    target = small_disk.path / "cube.fits"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        fail_without_traces(fetch, target, connections=4)
    leaks = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaks == []


PARALLEL_FSIZE_SCRIPT = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (2 * 1024 * 1024, 2 * 1024 * 1024))
from pyvo_dl import DownloadError, http_download
try:
    http_download(sys.argv[1], sys.argv[2], progress=False, connections=4)
except DownloadError as e:
    print(e.errno, e.filename)
    print(e)
    sys.exit(3)
"""


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs RLIMIT_FSIZE")
def test_file_size_limit_fails_a_parallel_download_cleanly(
    http_server: FaultServer, tmp_path: pathlib.Path
) -> None:
    """RLIMIT_FSIZE (an HPC job's file size limit): EFBIG at preallocation, named, no target."""
    data = payload(BIG)
    url = http_server.add_file("/d/cube.fits", data)
    target = tmp_path / "cube.fits"
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(pyvo_dl.__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    process = subprocess.run(
        [sys.executable, "-c", PARALLEL_FSIZE_SCRIPT, url, str(target)],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert process.returncode == 3, (process.stdout, process.stderr)
    errno_line, message = process.stdout.splitlines()[:2]
    assert errno_line == f"{errno.EFBIG} {target}.part"
    assert "disk is full" in message
    assert "kept" in message
    assert not target.exists()
    assert len(gets(http_server)) == 1

    pyvo_dl.http_download(url, str(target), progress=False, connections=4)
    assert target.read_bytes() == data


@pytest.mark.parametrize("missing_parent", [False, True], ids=["folder", "missing subfolder"])
def test_read_only_folder_is_a_clear_error_before_any_request(
    http_server: FaultServer, small_disk: Mount, missing_parent: bool
) -> None:
    """SPEC §3.7: a folder nobody can write to (read-only mount; root ignores modes)."""
    url = http_server.add_file("/d/cube.fits", payload(MiB))
    small_disk.remount("ro")
    target = small_disk.path / ("new" if missing_parent else "") / "cube.fits"

    with pytest.raises(DownloadError) as info:
        pyvo_dl.http_download(url, str(target), progress=False)

    assert info.value.errno == errno.EROFS
    text = str(info.value)
    assert str(target.parent) in text
    assert "choose a folder you can write to" in text
    assert gets(http_server) == []
    assert os.listdir(small_disk.path) == []


@pytest.mark.parametrize("entry", ["aws_download", "connections=4", "download_many"])
def test_target_that_is_a_folder(
    http_server: FaultServer, tmp_path: pathlib.Path, entry: str
) -> None:
    """SPEC §3.7: a folder at the target is named, untouched, and nothing is fetched."""
    data = payload(BIG)
    url = http_server.add_file("/d/cube.fits", data)
    http_server.add_file(f"/{BUCKET}/d/cube.fits", data)
    folder = tmp_path / "cube.fits"
    folder.mkdir()
    (folder / "inside.txt").write_text("mine")
    if entry == "aws_download":
        with pytest.raises(DownloadError) as info:
            pyvo_dl.aws_download(
                bucket=BUCKET, key="d/cube.fits", local_filepath=str(folder),
                endpoint_url=http_server.base_url, progress=False,
            )  # fmt: skip
        error: BaseException = info.value
    elif entry == "connections=4":
        with pytest.raises(DownloadError) as info:
            pyvo_dl.http_download(url, str(folder), progress=False, connections=4)
        error = info.value
    else:
        [error] = pyvo_dl.download_many([(url, str(folder))], progress=False)
    assert isinstance(error, DownloadError)
    assert error.errno == errno.EISDIR
    assert str(folder) in str(error)
    assert "folder" in str(error)
    assert gets(http_server) == []
    assert os.listdir(folder) == ["inside.txt"]
    assert sorted(os.listdir(tmp_path)) == ["cube.fits"]


# -- links planted beside the target ------------------------------------------------


def raised(kind: type[E], call: Callable[..., object], *args: object, **kw: object) -> E | None:
    """The ``kind`` error ``call(*args, **kw)`` raised, or None when it returned."""
    try:
        call(*args, **kw)
    except kind as error:
        return error
    return None


def plant(
    target: pathlib.Path, victim: pathlib.Path, url: str, data: bytes, **state: object
) -> None:
    """What someone who can write to the folder leaves: a .part link and a matching state.

    The state names the real URL, ETag and size (anyone can learn them with
    a HEAD), so the next download resumes into the link.
    """
    victim.write_bytes(b"precious, not to be overwritten")
    os.symlink(str(victim), str(target) + ".part")
    fields = {
        "pyvo_dl": 1, "identity": url, "url": url, "validator": '"' + hashlib.md5(data).hexdigest() + '"',
        "etag": '"' + hashlib.md5(data).hexdigest() + '"', "size": len(data), "checksums": [],
        **state,
    }  # fmt: skip
    (target.parent / (target.name + ".part.json")).write_text(json.dumps(fields))


def test_a_part_that_is_a_link_is_never_written_through(
    http_server: FaultServer, tmp_path: pathlib.Path
) -> None:
    """SPEC §3.5: a .part planted as a symbolic link does not redirect the download's writes."""
    data = payload(SMALL)
    url = http_server.add_file("/d/cube.fits", data)
    target = tmp_path / "shared" / "cube.fits"
    target.parent.mkdir()
    victim = tmp_path / "victim.txt"
    plant(target, victim, url, data)
    error = raised(DownloadError, pyvo_dl.http_download, url, str(target), progress=False)
    if error is not None:
        assert error.errno == errno.ELOOP
        assert "symbolic link" in str(error)
        assert not target.exists()
    else:
        assert target.read_bytes() == data
        assert not os.path.islink(target)
    assert victim.read_bytes() == b"precious, not to be overwritten"


def test_a_parallel_part_that_is_a_link_is_never_written_through(
    http_server: FaultServer, tmp_path: pathlib.Path
) -> None:
    """The same with a part map: the ranges must not land in the link's target either."""
    data = payload(BIG)
    url = http_server.add_file("/d/cube.fits", data)
    target = tmp_path / "shared" / "cube.fits"
    target.parent.mkdir()
    victim = tmp_path / "victim.txt"
    parts = [[start, end, 0] for start, end in ((0, BIG // 2 - 1), (BIG // 2, BIG - 1))]
    plant(target, victim, url, data, parts=parts)
    if raised(
        DownloadError, pyvo_dl.http_download, url, str(target), progress=False, connections=2
    ):
        assert not target.exists()
    else:
        assert not os.path.islink(target)
    assert victim.read_bytes() == b"precious, not to be overwritten"

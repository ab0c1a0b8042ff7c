"""SIGTERM and Ctrl-C part-way through a run (issue 13 item 3).

A job scheduler's time limit or ``scancel`` sends SIGTERM. The command line
and ``download_many`` then stop: nothing new starts, each download under way
stops at its next chunk with its ``.part`` and state kept, every lock is
released, one line says what was interrupted, and the exit status is 143
(130 for Ctrl-C). Running the same command again resumes. Each test runs a
real process and sends it the real signal; the server trickles its bytes
so that the signal lands mid-body.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

import pyvo_dl

TYPE_CHECKING = False
if TYPE_CHECKING:
    import pathlib
    from collections.abc import Iterator

    from servers import FaultServer

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGTERM"), reason="POSIX signals")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(pyvo_dl.__file__)))
MiB = 1024 * 1024
FILES = 6
SIZE = 3 * MiB
#: 16 KiB every 20 ms: a 3 MiB file takes about 4 s.
SLOW = (16384, 0.02)


def _data(i: int) -> bytes:
    return bytes((j * 31 + i) % 251 for j in range(65536)) * (SIZE // 65536)


@pytest.fixture
def files(http_server: FaultServer) -> list[str]:
    urls = []
    for i in range(FILES):
        path = f"/run/obs{i}.fits"
        urls.append(http_server.add_file(path, _data(i)))
        http_server.set_fault(path, trickle=SLOW, methods=["GET"])
    return urls


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    return env


def _start(args: list[str], cwd: pathlib.Path) -> subprocess.Popen[str]:
    # A shell without job control starts background commands with SIGINT
    # ignored, and that is inherited across exec: give the child the default.
    ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        return subprocess.Popen(
            [sys.executable, *args], cwd=str(cwd), env=_env(),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
    finally:
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def _wait_for_parts(folder: pathlib.Path, count: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        parts = (
            [p for p in folder.glob("*.part") if p.stat().st_size > 0] if folder.exists() else []
        )
        if len(parts) >= count:
            return
        assert time.monotonic() < deadline, f"only {len(parts)} .part files began"
        time.sleep(0.02)


def _stop(child: subprocess.Popen[str], signum: int) -> tuple[int, str, float]:
    sent = time.monotonic()
    child.send_signal(signum)
    try:
        _, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return child.returncode, err, time.monotonic() - sent


def _leftovers(folder: pathlib.Path, suffix: str) -> list[str]:
    return sorted(p.name for p in folder.rglob(f"*{suffix}"))


@pytest.fixture
def listing(files: list[str], tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "list.txt"
    path.write_text("\n".join(files) + "\n")
    return path


STOPPED = re.compile(
    r"pyvo-dl: (?P<what>terminated by SIGTERM|interrupted): (?P<stopped>\d+) downloads? stopped "
    r"\((its \.part is|their \.part files are) kept for the next call\), (?P<waiting>\d+) not "
    r"started, (?P<done>\d+) done; run the same command again to resume"
)


@pytest.mark.parametrize(
    ("signum", "status", "what"),
    [(signal.SIGTERM, 143, "terminated by SIGTERM"), (signal.SIGINT, 130, "interrupted")],
    ids=["SIGTERM", "SIGINT"],
)
def test_a_stopped_run_keeps_its_parts_releases_its_locks_and_resumes(
    http_server: FaultServer,
    files: list[str],
    listing: pathlib.Path,
    tmp_path: pathlib.Path,
    signum: int,
    status: int,
    what: str,
) -> None:
    out = tmp_path / "out"
    child = _start(["-m", "pyvo_dl", "-q", "-j", "3", "-i", str(listing), "-d", str(out)], tmp_path)
    _wait_for_parts(out, 3)
    code, err, took = _stop(child, signum)
    assert code == status, err
    assert took < 15  # each download stops at its next chunk, not at its end
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    match = STOPPED.fullmatch(lines[0])
    assert match, lines[0]
    assert match["what"] == what
    assert int(match["stopped"]) == 3
    assert int(match["waiting"]) == FILES - 3 - int(match["done"])
    # Each download under way kept its .part and its state; no lock is left.
    assert _leftovers(out, ".lock") == []
    parts = _leftovers(out, ".part")
    assert len(parts) == 3
    assert _leftovers(out, ".part.json") == [name + ".json" for name in parts]
    # The same command again: the parts are continued, not started over.
    http_server.clear_faults()
    http_server.reset_log()
    again = subprocess.run(
        [sys.executable, "-m", "pyvo_dl", "-q", "-j", "3", "-i", str(listing), "-d", str(out)],
        cwd=str(tmp_path), env=_env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    for i in range(FILES):
        assert (out / f"obs{i}.fits").read_bytes() == _data(i)
    resumed = [
        r for r in http_server.requests if (r.headers.get("range") or "").startswith("bytes=")
    ]
    assert len(resumed) == 3, [r.headers.get("range") for r in http_server.requests]
    assert sorted(os.listdir(out)) == [f"obs{i}.fits" for i in range(FILES)]


def test_one_file_says_which_and_exits_143(files: list[str], tmp_path: pathlib.Path) -> None:
    child = _start(["-m", "pyvo_dl", "-q", files[0]], tmp_path)
    _wait_for_parts(tmp_path, 1)
    code, err, _ = _stop(child, signal.SIGTERM)
    assert code == 143, err
    assert err.strip() == (
        f"pyvo-dl: terminated by SIGTERM during {files[0]} (its .part is kept for the next "
        "call); run the same command again to resume"
    )
    assert _leftovers(tmp_path, ".lock") == []
    assert _leftovers(tmp_path, ".part") == ["obs0.fits.part"]


def test_a_retry_after_sleep_is_cut_short(http_server: FaultServer, tmp_path: pathlib.Path) -> None:
    url = http_server.add_file("/busy/obs.fits", b"x" * 5000)
    http_server.set_fault("/busy/obs.fits", status=503, retry_after="60")
    child = _start(["-m", "pyvo_dl", "-q", url], tmp_path)
    deadline = time.monotonic() + 20
    while not http_server.requests_for("/busy/obs.fits"):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.3)  # into the 60 s sleep
    code, err, took = _stop(child, signal.SIGTERM)
    assert code == 143, err
    assert took < 5
    assert _leftovers(tmp_path, ".lock") == []


LIBRARY = """
import sys
from pyvo_dl import download_many
results = download_many(sys.argv[2:], sys.argv[1], progress=False, workers=3)
print("returned", flush=True)
"""


def test_download_many_in_a_script_stops_cleanly_on_sigterm(
    files: list[str], tmp_path: pathlib.Path
) -> None:
    out = tmp_path / "out"
    child = _start(["-c", LIBRARY, str(out), *files], tmp_path)
    _wait_for_parts(out, 3)
    code, err, took = _stop(child, signal.SIGTERM)
    assert code == 143, err
    assert took < 15
    assert "Traceback" not in err
    assert re.fullmatch(
        r"pyvo_dl: terminated by SIGTERM: 3 downloads stopped \(their \.part files are kept "
        r"for the next call\), \d+ not started, \d+ done",
        err.strip(),
    ), err
    assert _leftovers(out, ".lock") == []
    assert len(_leftovers(out, ".part")) == 3


def test_a_program_that_handles_sigterm_keeps_its_handler(
    files: list[str], tmp_path: pathlib.Path
) -> None:
    script = "import signal, sys\nsignal.signal(signal.SIGTERM, lambda *a: sys.exit(7))\n" + LIBRARY
    out = tmp_path / "out"
    child = _start(["-c", script, str(out), *files[:3]], tmp_path)
    _wait_for_parts(out, 1)
    code, err, _ = _stop(child, signal.SIGTERM)
    assert code == 7, err  # the program's own handler ran, not download_many's
    assert "pyvo_dl: terminated" not in err


@pytest.fixture
def no_interrupt() -> Iterator[None]:
    from pyvo_dl import _partfile

    yield
    _partfile.clear_interrupt()


def test_an_interrupted_call_lets_the_next_one_run(
    http_server: FaultServer, tmp_path: pathlib.Path, no_interrupt: None
) -> None:
    # In a notebook, Ctrl-C ends one call; the next download must work.
    from pyvo_dl import _partfile

    url = http_server.add_file("/after/obs.fits", b"y" * 5000)
    _partfile.interrupt("a test")
    with pytest.raises(_partfile.Interrupted):
        _partfile.pause(1.0)
    _partfile.clear_interrupt()
    assert pyvo_dl.http_download(url, str(tmp_path / "obs.fits"), progress=False)

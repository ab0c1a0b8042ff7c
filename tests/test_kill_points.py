"""Resume from any kill point (issue 12.3): only what is missing is fetched again.

A download process is SIGKILLed at a point of the object (inside the first
part, during the split, in any range, near the end), on one connection and
on eight, over HTTP and over S3, and the rerun must fetch only what is
missing, byte-identical; with the object replaced in between (same size),
the rerun's result is the new object, never a mix (SPEC §3.2).

The server is the stdlib :class:`servers.FaultServer`, over HTTP and as a
path-style S3 endpoint (``If-Match``, as S3 answers a resume). Its
``budget`` sends exactly so many bytes of the object in all (every range
together), then holds every answer, as a server that stopped sending; the
client hands what it received to the file within 0.2 s, and is killed once
it is there, so the rerun must ask for exactly the rest (less at most the
buffer each connection was filling, where a body is hashed on its way). A
kill at any moment (a trickling server, killed while bytes arrive) loses
what was in the client's buffers and sockets, which a busy machine lets
grow: there the rerun must ask for exactly what the file does not hold.
The modes: a server that honours ``If-Range`` (nginx,
Apache: a ``200`` when it fails), one that ignores it (aiohttp, tornado,
twisted, many CDNs: a ``206`` with the new validators), and S3's
``If-Match`` (a ``412``) with the object's SHA-256 sent on every answer
(``s3``, as moto and older MinIO) or only on a whole-object GET, with
``If-Range`` ignored (``s3-semantics``, as S3).

The sweep runs a few points in the default run and the whole grid under
the ``scale`` marker (``pytest -m scale tests/test_kill_points.py``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys

import pytest

import pyvo_dl
from servers import FaultServer
from test_resume_process import BUFFER, MiB, dead_pid, sigkill_when, wait_for, write_lock

TYPE_CHECKING = False
if TYPE_CHECKING:
    import pathlib
    from collections.abc import Callable, Iterator

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")

#: Eight parts of 4 MiB at eight connections; the first request asks for 8 MiB.
SIZE = 32 * MiB
#: The old object and the new one, which differs from it at every offset.
DATA = (bytes(range(256)) * (SIZE // 256))[:SIZE]
NEW = bytes(255 - b for b in DATA[:256]) * (SIZE // 256)
BUCKET = "bkt"
KEY = "cube.fits"
PATH = f"/{BUCKET}/{KEY}"
#: 256 KiB every 10 ms per connection: a kill lands while bytes arrive.
TRICKLE = (256 * 1024, 0.01)

#: How each mode's server answers a resume of a replaced object.
MODES = {
    "http": "a 200 (If-Range failed), kept as the new download",
    "http-ignore-if-range": "a 206 with the new validators, refused before a byte is written",
    "s3": "a 412 (If-Match failed)",
    "s3-semantics": "a 412 (If-Match failed; If-Range ignored, checksums on whole GETs only)",
}
#: Kill points (bytes of the object received in all), spread over the whole object.
POINTS: list[int | None] = [
    0,
    1 * MiB + 512 * 1024,
    5 * MiB + 512 * 1024,
    12 * MiB,
    20 * MiB,
    SIZE - 512 * 1024,
]
#: The cases of the default run (issue 12.3's own first); the whole grid is marked ``scale``.
QUICK = {
    "test_rerun_fetches_only_what_is_missing": {
        "s3-semantics-c8-5.5MiB", "s3-c1-5.5MiB", "http-c8-0MiB", "http-c8-20MiB",
    },
    "test_rerun_after_the_object_changed_gives_the_new_object": {
        "http-c1-1.5MiB", "s3-semantics-c8-20MiB", "http-ignore-if-range-c8-20MiB",
    },
    "test_kill_while_bytes_arrive_resumes_from_what_was_kept": {
        "http-c8", "s3-semantics-c8",
    },
}  # fmt: skip

SCRIPT = """
import sys
import pyvo_dl
mode, source, endpoint, target, connections = sys.argv[1:]
if mode.startswith("s3"):
    pyvo_dl.aws_download(source, local_filepath=target, endpoint_url=endpoint,
                         connections=int(connections), progress=False)
else:
    pyvo_dl.http_download(source, target, connections=int(connections), progress=False)
"""


def _grid(test: str, points: list[int | None]) -> list[object]:
    """Every mode, one and eight connections, each point; out of the default run unless QUICK."""
    cases = []
    for mode in MODES:
        for connections in (1, 8):
            for point in points:
                name = f"{mode}-c{connections}"
                if point is not None:
                    name += f"-{point / MiB:g}MiB"
                marks = () if name in QUICK[test] else (pytest.mark.scale,)
                values = (mode, connections) if point is None else (mode, connections, point)
                cases.append(pytest.param(*values, marks=marks, id=name))
    return cases


def checksum_headers(mode: str, data: bytes) -> dict[str, str]:
    """An S3 object's stored SHA-256, which S3 sends only with a whole-object GET."""
    if not mode.startswith("s3"):
        return {}
    digest = base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")
    return {"x-amz-checksum-sha256": digest, "x-amz-checksum-type": "FULL_OBJECT"}


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[FaultServer]:
    """The fault server of the test's mode: S3's own ways for ``s3-semantics``."""
    mode = request.node.callspec.params["mode"]
    with FaultServer(s3_semantics=mode == "s3-semantics") as started:
        yield started
    assert not started.errors


class Case:
    """One object on the fault server, downloaded in one of the modes."""

    def __init__(self, server: FaultServer, mode: str, connections: int, tmp: pathlib.Path):
        self.server = server
        self.mode = mode
        self.connections = connections
        self.target = tmp / KEY
        server.add_file(PATH, DATA, headers=checksum_headers(mode, DATA))
        if mode == "http-ignore-if-range":
            server.set_fault(PATH, ignore_if_range=True)
        self.source = f"s3://{BUCKET}/{KEY}" if mode.startswith("s3") else server.url(PATH)

    def spawn(self) -> subprocess.Popen[bytes]:
        """The download in a new process."""
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.abspath(pyvo_dl.__file__)))
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        args = [self.mode, self.source, self.server.base_url, str(self.target)]
        return subprocess.Popen(
            [sys.executable, "-c", SCRIPT, *args, str(self.connections)],
            env=env,
            stderr=subprocess.PIPE,
        )

    def download(self) -> None:
        """The rerun, in this process."""
        if self.mode.startswith("s3"):
            pyvo_dl.aws_download(
                self.source,
                local_filepath=str(self.target),
                endpoint_url=self.server.base_url,
                connections=self.connections,
                progress=False,
            )
        else:
            pyvo_dl.http_download(
                self.source, str(self.target), connections=self.connections, progress=False
            )

    def state(self) -> dict[str, object] | None:
        """The ``.part.json`` beside the target, None when there is none (or it is being moved)."""
        try:
            with open(str(self.target) + ".part.json", encoding="utf-8") as f:
                found = json.load(f)
        except (OSError, ValueError):
            return None
        return found if isinstance(found, dict) else None

    def kept(self) -> int:
        """Bytes the interrupted download kept: its part map's counts, or its ``.part``'s size."""
        state = self.state()
        if state is None:
            return 0
        parts = state.get("parts")
        if isinstance(parts, list) and parts:
            return sum(p[2] for p in parts)
        try:
            return os.path.getsize(str(self.target) + ".part")
        except OSError:
            return 0

    def split(self) -> bool:
        """Whether the download has got as far as its part map (or its stream)."""
        state = self.state()
        return state is not None and (self.connections == 1 or bool(state.get("parts")))

    def sent(self) -> int:
        """Body bytes the server sent for the object since its log was reset."""
        return self.server.bytes_sent(PATH)

    def unwritten_allowance(self) -> int:
        """What the client may hold unwritten once the server stopped sending.

        Nothing where each body goes from the socket to the file as it
        arrives (``os.splice``: Linux, Python 3.10+, a body not hashed on
        the way, as parallel ranges and plain HTTP are); else the buffer
        each connection was filling.
        """
        spliced = hasattr(os, "splice") and sys.platform.startswith("linux")
        if spliced and (self.connections > 1 or not self.mode.startswith("s3")):
            return 0
        return self.connections * BUFFER

    def surplus(self) -> int:
        """Bytes sent past the first range on the first request, which were not kept.

        The first request of a download that may be split asks for the
        first 8 MiB (HTTP) or the whole object (S3, whose checksums come
        only with that); at eight connections the first range is 4 MiB,
        and what the server sent beyond it before the answer was closed
        is not kept.
        """
        first_range = SIZE // 8 if self.connections == 8 else SIZE
        return sum(
            max(0, r.bytes_sent - first_range)
            for r in self.server.requests_for(PATH, "GET")
            if r.headers.get("range", "bytes=0-").startswith("bytes=0-")
        )

    def log(self) -> list[tuple[str, str, int, int]]:
        """The GETs since the log was reset: range, condition, status, bytes sent (for messages)."""
        return [
            (r.headers.get("range", ""), r.headers.get("if-range", r.headers.get("if-match", "")),
             r.status, r.bytes_sent)
            for r in self.server.requests_for(PATH, "GET")
        ]  # fmt: skip

    def leftovers(self) -> list[str]:
        """Helper files beside the target."""
        names = (".part", ".part.json", ".lock")
        return [s for s in names if os.path.exists(str(self.target) + s)]


def kill_when(
    case: Case, process: subprocess.Popen[bytes], condition: Callable[[], bool], what: str
) -> None:
    """SIGKILL ``process`` once ``condition`` holds (it must not have ended before).

    Then wait for the server to settle, its faults still on: a request the
    dead process sent that the server reads only now must not be counted
    as the rerun's (a spent budget holds it; a trickle keeps it small).
    """
    sigkill_when(process, condition, what)
    seen: list[object] = []

    def settled() -> bool:
        seen.append(case.log())
        if len(seen) < 60:  # 0.3 s at least
            return False
        return all(log == seen[-1] for log in seen[-60:])

    wait_for(settled, "the server to settle")


def kill_at(case: Case, point: int) -> int:
    """Let ``point`` bytes of the object through, kill the download once it holds them; kept.

    What the server sent is on disk and counted in the part map, less what
    a connection still held in its buffer: a body that is being verified
    while it streams is written a whole buffer at a time, or when the
    connection fails (one that is not goes from the socket to the file as
    it arrives).
    """
    fault = case.server.set_fault(PATH, budget=point, methods=["GET"])
    process = case.spawn()
    slack = case.unwritten_allowance()
    kill_when(
        case,
        process,
        lambda: case.split() and case.kept() + case.surplus() + slack >= point,
        f"{point} bytes in the .part",
    )
    case.server.clear_faults(PATH)
    if case.mode == "http-ignore-if-range":
        case.server.set_fault(PATH, ignore_if_range=True)
    assert not case.target.exists()
    assert fault.budget is not None
    assert case.sent() == point - fault.budget.left
    kept = case.kept()
    assert point - case.surplus() - slack <= kept <= case.sent() - case.surplus()
    case.server.reset_log()
    return kept


@pytest.mark.parametrize(
    ("mode", "connections", "point"), _grid("test_rerun_fetches_only_what_is_missing", POINTS)
)
def test_rerun_fetches_only_what_is_missing(
    server: FaultServer, tmp_path: pathlib.Path, mode: str, connections: int, point: int
) -> None:
    """Killed once ``point`` bytes are sent: the rerun asks for exactly what was not kept."""
    case = Case(server, mode, connections, tmp_path)
    kept = kill_at(case, point)

    case.download()

    assert case.target.read_bytes() == DATA
    assert case.leftovers() == []
    assert case.sent() - case.surplus() == SIZE - kept, case.log()
    gets = server.requests_for(PATH, "GET")
    # Nothing kept (the killed process had not written a byte of what was
    # sent: it was still in its socket buffers) is a fresh download, whose
    # first answer may be a 200: the stream, or S3's whole first GET.
    assert all(r.status == 206 for r in gets) or kept == 0, case.log()
    if kept and connections == 1:
        assert [r.headers["range"] for r in gets] == [f"bytes={kept}-"]


@pytest.mark.parametrize(
    ("mode", "connections", "point"),
    _grid(
        "test_rerun_after_the_object_changed_gives_the_new_object",
        [1 * MiB + 512 * 1024, 20 * MiB],
    ),
)
def test_rerun_after_the_object_changed_gives_the_new_object(
    server: FaultServer, tmp_path: pathlib.Path, mode: str, connections: int, point: int
) -> None:
    """Killed, then the object replaced (same size): the rerun's file is the new object."""
    case = Case(server, mode, connections, tmp_path)
    kill_at(case, point)
    server.replace_file(PATH, NEW, headers=checksum_headers(mode, NEW))

    case.download()

    assert case.target.read_bytes() == NEW
    assert case.leftovers() == []
    first = server.requests_for(PATH, "GET")[0]
    if "if-range" in first.headers or "if-match" in first.headers:
        # Not when the kill came before the .part was made: nothing to resume.
        expected = {"http": 200, "http-ignore-if-range": 206}.get(mode, 412)
        assert first.status == expected, MODES[mode]
        if mode == "http":
            # Issue 12.1: a 200 to a resume (of the stream, of a range) is the
            # new object, kept: it is never asked for again without If-Range.
            gets = server.requests_for(PATH, "GET")
            assert [r.headers.get("range") for r in gets if "if-range" not in r.headers] == []
        if mode == "http" and connections == 1:
            assert [r.status for r in server.requests_for(PATH, "GET")] == [200]
            assert case.sent() == SIZE


@pytest.mark.parametrize(
    ("mode", "connections"),
    _grid("test_kill_while_bytes_arrive_resumes_from_what_was_kept", [None]),
)
def test_kill_while_bytes_arrive_resumes_from_what_was_kept(
    server: FaultServer, tmp_path: pathlib.Path, mode: str, connections: int
) -> None:
    """Killed at a moment bytes are arriving: the rerun asks for exactly what was not kept."""
    case = Case(server, mode, connections, tmp_path)
    server.set_fault(PATH, trickle=TRICKLE, methods=["GET"])
    process = case.spawn()
    kill_when(case, process, lambda: case.sent() >= SIZE // 3, "a third of the object sent")
    server.clear_faults(PATH)
    if mode == "http-ignore-if-range":
        server.set_fault(PATH, ignore_if_range=True)
    kept = case.kept()
    assert kept <= case.sent() - case.surplus()  # never a byte it did not get
    server.reset_log()

    case.download()

    assert case.target.read_bytes() == DATA
    assert case.leftovers() == []
    assert case.sent() - case.surplus() == SIZE - kept


@pytest.mark.parametrize(
    ("lock", "size", "removed"),
    [("dead", BUFFER, True), (None, BUFFER, False), ("dead", BUFFER + 1, False)],
    ids=["killed-before-the-rename", "no-lock", "larger-than-a-buffer"],
)
def test_small_body_killed_before_its_rename(
    http_server: FaultServer,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
    lock: str | None,
    size: int,
    removed: bool,
) -> None:
    """A body of at most a buffer has no state: killed between its .part and the rename.

    What such a kill leaves (the soak met it): the whole body as ``.part``,
    no ``.part.json``, the dead process's lock. The lock of pyvo_dl's taken
    over proves the ``.part`` was that download's; without it, or larger
    than such a body can be, the ``.part`` is someone else's and is kept.
    """
    data = DATA[: BUFFER // 2]
    url = http_server.add_file(PATH, data)
    target = tmp_path / KEY
    part = tmp_path / (KEY + ".part")
    part.write_bytes(b"\0" * size)
    if lock == "dead":
        write_lock(target, dead_pid())

    if removed:
        pyvo_dl.http_download(url, str(target), progress=False, verbose=True)
        assert target.read_bytes() == data
        assert not part.exists()
        assert f"Removed {part}" in capsys.readouterr().out
    else:
        with pytest.raises(pyvo_dl.DownloadError, match="not made by pyvo_dl"):
            pyvo_dl.http_download(url, str(target), progress=False)
        assert part.read_bytes() == b"\0" * size
        assert not target.exists()

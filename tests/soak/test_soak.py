"""A seeded fault soak: hundreds of downloads against one loopback fault server.

Every download draws its faults from one seeded generator (SPEC §3.1-§3.3):
drops at random offsets (FIN or RST), 408/429/5xx bursts with
``Retry-After: 0``, short bodies, stalls longer than the timeout, a server
that ignores ``Range``, the object replaced mid-way. About one in ten draws
a fatal fault instead: a missing object, a 503 that never ends, a body that
never starts, a checksum (or S3 ETag) that cannot match. Downloads are HTTP
and S3 (the fault server as a path-style ``endpoint_url``), on one
connection or four, alone (``http_download`` / ``aws_download``, some cut
short by their progress callable and called again, some killed with
SIGKILL in a process of their own at a drawn byte and run again) or in
``download_many`` batches; eight jobs run at once. Servers behave in three
ways (issue 12): honouring ``If-Range`` (a ``200`` when it fails), ignoring
it for a path (a ``206`` with the new validators: aiohttp, tornado, CDNs),
or as S3 does (a second server in ``s3_semantics``: checksums only on a
whole-object GET, ``If-Range`` ignored) for a whole job.

Each outcome must be a file byte-identical to what the server served last
(the new bytes, for a replaced object; a file of the old object's start
and the new one's end counts as stitched) or a clean ``DownloadError`` with
no file at the target. Afterwards no ``.part`` is left beside a finished file,
no ``.lock`` anywhere, and nothing else. The tally is printed (``-s``)::

    pytest tests/soak -m soak -s                           # 1000 downloads
    PYVO_DL_SOAK=5000 PYVO_DL_SOAK_SEED=7 pytest tests/soak -m soak -s

The same code runs 60 downloads in the default run (``test_short_soak``).
A seed fixes every plan (sizes, bytes, faults and the request they hit);
which of four parallel ranges meets a fault depends on thread timing.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest

import pyvo_dl
from pyvo_dl import DownloadError, _parallel
from pyvo_dl._s3url import quote_key
from servers import FaultServer

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any, Callable, Iterator

    from servers import Fault

MiB = 1024 * 1024
SHORT_SOAK = 60
LONG_SOAK = int(os.environ.get("PYVO_DL_SOAK", "1000"))
SEED = int(os.environ.get("PYVO_DL_SOAK_SEED", "20240611"))
#: Jobs running at once (each a download or a download_many batch).
JOBS_AT_ONCE = 8
BUCKET = "soak-bucket"
#: Seconds without progress before a try is abandoned; STALL is well past it.
TIMEOUT = 0.5
STALL = 1.5
#: Retries of a download drawn to succeed; downloads drawn to fail get one,
#: so that their backoff (0.5 s doubling, full jitter) stays short.
RETRIES = 4
TRANSIENT = (408, 429, 500, 502, 503, 504)
#: How often each recoverable fault is drawn.
FAULT_WEIGHTS = {
    "drop": 30,
    "status": 20,
    "short": 15,
    "ignore_range": 10,
    "change": 12,
    "stall": 6,
}
FATAL_KINDS = ("missing", "endless 503", "no body", "bad checksum")
#: How a job's server behaves: as most, or as S3 (``s3_semantics``).
SERVER_MODES = ("plain", "s3-semantics")
#: Share of single downloads killed (SIGKILL, in a process of their own) part-way.
KILL_SHARE = 0.15
#: Seconds a killed download's process may take to reach its kill point.
KILL_WAIT = 20.0
#: Awkward characters for S3 keys (quoted by the client, decoded by the server).
KEY_PARTS = ("a b", "x+y", "é", "100%", "~t", "a=b&c", "(1)")


class Interrupted(Exception):
    """Raised by a progress callable: the caller gave up part-way (Ctrl-C)."""


@dataclass
class Item:
    """One download of the soak: where from, where to, and what goes wrong."""

    number: int
    scheme: str
    path: str
    source: str
    target: str
    size: int
    seed: int
    faults: list[dict[str, Any]] = field(default_factory=list)
    fatal: str | None = None
    checksum: str | None = None
    interrupt_at: int | None = None
    kill_at: int | None = None
    ignore_if_range: bool = False
    #: Bytes the server had sent when the killed process died (None: not killed).
    killed_at: int | None = None


@dataclass
class Job:
    """A single download or a download_many batch, with shared options."""

    items: list[Item]
    connections: int
    retries: int
    many: bool
    server_mode: str = "plain"


@dataclass
class Tally:
    """What the soak counts; the last seven must end at 0."""

    downloads: int = 0
    http: int = 0
    s3: int = 0
    parallel: int = 0
    in_batches: int = 0
    interrupted: int = 0
    killed: int = 0
    #: Where the kills landed: "first 8 MiB", "later", "after it had finished".
    kill_points: dict[str, int] = field(default_factory=dict)
    modes: dict[str, int] = field(default_factory=dict)
    succeeded: int = 0
    failed_as_drawn: int = 0
    faults_applied: int = 0
    requests: int = 0
    retries: int = 0
    corrupt: int = 0
    stitched: int = 0
    file_after_failure: int = 0
    part_after_success: int = 0
    locks_left: int = 0
    stray_files: int = 0
    unclean_errors: int = 0
    undetected_fatal: int = 0
    unexpected_failures: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    ideal_requests: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def zeros(self) -> dict[str, int]:
        """The counts that must be 0."""
        return {
            "corrupt": self.corrupt,
            "stitched": self.stitched,
            "files at a target after a failed download": self.file_after_failure,
            "leftover .part after success": self.part_after_success,
            "leftover .lock": self.locks_left,
            "stray files": self.stray_files,
            "errors that are not DownloadError": self.unclean_errors,
            "fatal faults not reported": self.undetected_fatal,
        }

    def line(self, seed: int, elapsed: float) -> str:
        """The printed tally."""
        failed = self.downloads - self.succeeded
        zeros = ", ".join(f"{name} {count}" for name, count in self.zeros().items())
        modes = ", ".join(f"{name} {count}" for name, count in sorted(self.modes.items()))
        kills = ", ".join(f"{name} {count}" for name, count in sorted(self.kill_points.items()))
        return (
            f"soak seed={seed}: {self.downloads} downloads (http {self.http}, s3 {self.s3}; "
            f"parallel {self.parallel}; in download_many {self.in_batches}; "
            f"interrupted and resumed {self.interrupted}; killed and rerun {self.killed}: "
            f"{kills or 'none'}; modes: {modes}) in {elapsed:.1f} s; "
            f"succeeded {self.succeeded}, failed {failed} "
            f"({self.failed_as_drawn} drawn to fail, {len(self.unexpected_failures)} not); "
            f"faults injected {self.faults_applied}, requests {self.requests}, "
            f"retries {self.retries}; {zeros}"
        )


# -- drawing the plan -------------------------------------------------------------


def payload(seed: int, size: int) -> bytes:
    """``size`` seeded random bytes: every offset distinguishable, so a shift shows."""
    if size == 0:
        return b""
    return random.Random(seed).getrandbits(8 * size).to_bytes(size, "little")


def draw_size(rng: random.Random, connections: int) -> int:
    """An object size: empty, tiny, small, or (for four connections) worth splitting."""
    if connections > 1 and rng.random() < 0.6:
        # Big enough to be split, into two to four ranges of at least 4 MiB.
        low = 2 * _parallel.MIN_PART_SIZE
        return rng.randint(low, 2 * low + MiB)
    return rng.choice([0, 1, rng.randint(2, 64 * 1024), rng.randint(64 * 1024, 2 * MiB)])


def draw_fault(rng: random.Random, kind: str, slot: int, size: int) -> dict[str, Any]:
    """``set_fault`` arguments for one recoverable fault hitting GET number ``slot``."""
    offset = rng.randrange(max(1, size))
    once = {"after": slot, "times": 1}
    if kind == "drop":
        return dict(once, drop_after=offset, rst=rng.random() < 0.3)
    if kind == "status":
        burst = {"after": slot, "times": rng.randint(1, 2)}
        return dict(burst, status=rng.choice(TRANSIENT), retry_after=rng.choice(["0", None]))
    if kind == "short":
        return dict(once, short_body=offset)
    if kind == "stall":
        return dict(once, stall=STALL, stall_after=offset)
    if kind == "ignore_range":
        return dict(once, ignore_range=True)
    # Same size most often: the case where only a validator can tell.
    new_size = max(0, size + rng.choice([0, 0, 0, rng.randint(-4096, 4096)]))
    return {"change_after": slot, "new_size": new_size, "new_seed": rng.getrandbits(64)}


def draw_faults(rng: random.Random, size: int) -> list[dict[str, Any]]:
    """Up to three recoverable faults, on consecutive GETs from the first on.

    A replacement comes with a drop on the GET before it, so that it lands
    while the download is under way: the resume asks for the rest of an
    object that is no longer there (one replacement per download at most).
    At most RETRIES requests fail in all, so that the download can always
    succeed, even when no failed try moved enough to count as progress.
    """
    kinds, weights = zip(*FAULT_WEIGHTS.items())
    faults: list[dict[str, Any]] = []
    changed = False
    slot = 0
    for _ in range(rng.choice([0, 1, 1, 2, 2, 3])):
        kind = rng.choices(kinds, weights)[0]
        if kind == "change" and changed:
            kind = "drop"
        if kind == "change":
            if slot + 1 > RETRIES:
                break
            changed = True
            faults.append(draw_fault(rng, "drop", slot, size))
            slot += 1
        elif slot + 1 > RETRIES:
            break
        fault = draw_fault(rng, kind, slot, size)
        if "times" in fault:
            fault["times"] = min(fault["times"], RETRIES - slot)
        faults.append(fault)
        slot += fault.get("times", 0)
    return faults


def draw_fatal(rng: random.Random, item: Item, many: bool) -> str:
    """A fault no retry can mend, among those this item can meet."""
    kinds = list(FATAL_KINDS)
    if many and item.scheme == "http":
        kinds.remove("bad checksum")  # download_many takes no checksum=
    if item.size == 0:
        kinds.remove("no body")  # an empty body cannot be cut short
    return rng.choice(kinds)


def draw_item(rng: random.Random, number: int, folder: Path, server: FaultServer, job: Job) -> Item:
    """One download: HTTP or S3, its size, its name (awkward characters), its faults."""
    scheme = rng.choice(["http", "s3"])
    size = draw_size(rng, job.connections)
    name = f"{number:05d}-{rng.choice(KEY_PARTS)}.fits"
    if scheme == "s3":
        key = f"soak/{number:05d}/{name}"
        path = f"/{BUCKET}/{quote_key(key)}"
        source = f"s3://{BUCKET}/{key}"
    else:
        path = f"/soak/{number:05d}/{quote_key(name)}"
        source = server.url(path)
    target = str(folder / f"{number:05d}" / name)
    item = Item(number, scheme, path, source, target, size, rng.getrandbits(64))
    if scheme == "http" and job.server_mode == "plain":
        item.ignore_if_range = rng.random() < 0.3
    if rng.random() < 0.1:
        item.fatal = draw_fatal(rng, item, job.many)
    else:
        item.faults = draw_faults(rng, size)
        if not job.many and size > 1 and rng.random() < 0.25:
            item.interrupt_at = rng.randrange(1, size)
        if not job.many and size > 1 and rng.random() < KILL_SHARE:
            item.kill_at = rng.randrange(0, size)  # anywhere: the first part, the split...
    return item


def mode_of(item: Item, job: Job) -> str:
    """How the item's server answers it, for the tally."""
    if item.scheme == "s3":
        return "s3 as S3" if job.server_mode == "s3-semantics" else "s3 checksums everywhere"
    if item.ignore_if_range or job.server_mode == "s3-semantics":
        return "http ignoring If-Range"
    return "http"


def draw_plan(count: int, seed: int, folder: Path, servers: dict[str, FaultServer]) -> list[Job]:
    """Jobs holding ``count`` downloads in all, every choice drawn from ``seed``."""
    rng = random.Random(seed)
    jobs: list[Job] = []
    number = 0
    while number < count:
        many = rng.random() < 0.15
        batch = min(rng.randint(3, 6), count - number) if many else 1
        job = Job([], rng.choice([1, 4]), RETRIES, many, rng.choice(SERVER_MODES))
        server = servers[job.server_mode]
        job.items = [draw_item(rng, number + i, folder, server, job) for i in range(batch)]
        if not many and job.items[0].fatal:
            job.retries = 1
        number += batch
        jobs.append(job)
    return jobs


# -- running ----------------------------------------------------------------------


def serve(server: FaultServer, item: Item) -> list[Fault]:
    """Put the item's object and faults on the server; return the faults set."""
    data = payload(item.seed, item.size)
    if item.fatal == "bad checksum":
        if item.scheme == "s3":
            server.add_file(item.path, data, etag='"' + hashlib.md5(b"other").hexdigest() + '"')
        else:
            server.add_file(item.path, data)
            item.checksum = "sha256:" + hashlib.sha256(data + b"!").hexdigest()
        return []
    if item.fatal == "missing":
        return []
    server.add_file(item.path, data)
    if item.ignore_if_range:  # not counted among the faults: a way of serving
        server.set_fault(item.path, ignore_if_range=True)
    if item.fatal == "endless 503":
        return [server.set_fault(item.path, status=503, retry_after="0")]
    if item.fatal == "no body":
        return [server.set_fault(item.path, drop_after=0)]
    faults = []
    for spec in item.faults:
        kwargs = dict(spec)
        if "new_size" in kwargs:
            kwargs["new_data"] = payload(kwargs.pop("new_seed"), kwargs.pop("new_size"))
        faults.append(server.set_fault(item.path, **kwargs))
    return faults


def interrupter(limit: int) -> Callable[[int, int | None], None]:
    """A progress callable that gives up once ``limit`` bytes are in."""

    def progress(done: int, total: int | None) -> None:
        if done >= limit:
            raise Interrupted(f"interrupted at byte {done}")

    return progress


def download_one(item: Item, job: Job, server: FaultServer, progress: Any) -> None:
    """``http_download`` or ``aws_download`` (the server as ``endpoint_url``) of one item."""
    options: dict[str, Any] = {
        "progress": progress,
        "retries": job.retries,
        "timeout": TIMEOUT,
        "connections": job.connections,
        "checksum": item.checksum,
    }
    if item.scheme == "s3":
        pyvo_dl.aws_download(
            uri=item.source, local_filepath=item.target, endpoint_url=server.base_url, **options
        )
    else:
        pyvo_dl.http_download(item.source, item.target, cache=False, **options)


KILLED_SCRIPT = """
import sys
import pyvo_dl
scheme, source, target, endpoint, connections, retries, timeout = sys.argv[1:]
options = dict(progress=False, connections=int(connections), retries=int(retries),
               timeout=float(timeout))
if scheme == "s3":
    pyvo_dl.aws_download(uri=source, local_filepath=target, endpoint_url=endpoint, **options)
else:
    pyvo_dl.http_download(source, target, cache=False, **options)
"""


def kill_part_way(item: Item, job: Job, server: FaultServer) -> None:
    """Download the item in a process of its own, SIGKILL it at ``item.kill_at`` bytes sent."""
    assert item.kill_at is not None
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(pyvo_dl.__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    args = [item.scheme, item.source, item.target, server.base_url]
    args += [str(job.connections), str(job.retries), str(TIMEOUT)]
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_SCRIPT, *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + KILL_WAIT
    try:
        while process.poll() is None and time.monotonic() < deadline:
            if server.bytes_sent(item.path) >= item.kill_at:
                break
            time.sleep(0.01)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait()
    if process.returncode == -signal.SIGKILL:
        item.killed_at = server.bytes_sent(item.path)


def kill_point(item: Item) -> str:
    """Where a kill landed, for the tally."""
    if item.killed_at is None:
        return "after it had ended"
    if item.killed_at < _parallel.FIRST_PART:
        return "in the first 8 MiB"
    return "after the first 8 MiB"


def run_job(job: Job, server: FaultServer) -> list[BaseException | None]:
    """Run one job; return each item's error (None for success)."""
    if job.many:
        results = pyvo_dl.download_many(
            [(item.source, item.target) for item in job.items],
            workers=4,
            progress=False,
            retries=job.retries,
            timeout=TIMEOUT,
            connections=job.connections,
            endpoint_url=server.base_url,
        )
        return [r if isinstance(r, BaseException) else None for r in results]
    item = job.items[0]
    if item.kill_at is not None:
        kill_part_way(item, job, server)  # then run again below, as after a job killed
    if item.interrupt_at is not None:
        try:
            download_one(item, job, server, interrupter(item.interrupt_at))
        except (Interrupted, DownloadError):
            pass  # called again below, as a user would after Ctrl-C
    try:
        download_one(item, job, server, False)
    except Exception as exc:  # judged below: it must be a DownloadError
        return [exc]
    return [None]


def served_last(server: FaultServer, item: Item) -> bytes | None:
    """What the server serves for the item now (the new bytes if it was replaced)."""
    try:
        return server.file_data(item.path)
    except KeyError:
        return None


def ideal_requests(size: int, connections: int) -> int:
    """GETs a fault-free download of ``size`` bytes makes: one per range, or one."""
    whole_in_first = size <= getattr(_parallel, "FIRST_PART", 0)
    if connections > 1 and size >= 2 * _parallel.MIN_PART_SIZE and not whole_in_first:
        return len(_parallel.plan_parts(size, connections))
    return 1


def read(path: str) -> bytes:
    """The bytes of the file at ``path``."""
    with open(path, "rb") as f:
        return f.read()


def judge(item: Item, error: BaseException | None, server: FaultServer, tally: Tally) -> None:
    """Count one outcome: a byte-identical file, or a clean error with nothing at the target."""
    expected = served_last(server, item)
    at_target = os.path.exists(item.target)
    if error is None:
        tally.succeeded += 1
        if item.fatal:
            tally.undetected_fatal += 1
            tally.problems.append(f"{item.source}: drawn to fail ({item.fatal}) but succeeded")
        found = read(item.target) if at_target else None
        if found != expected:
            tally.corrupt += 1
            tally.problems.append(f"{item.source}: {item.target} differs from the server's")
            if found is not None and expected is not None and stitched(item, found, expected):
                tally.stitched += 1
                tally.problems.append(f"{item.source}: {item.target} is stitched")
        for suffix in (".part", ".part.json"):
            if os.path.exists(item.target + suffix):
                tally.part_after_success += 1
                tally.problems.append(f"{item.target}{suffix} left after success")
        return
    if not isinstance(error, DownloadError):
        tally.unclean_errors += 1
        tally.problems.append(f"{item.source}: {type(error).__name__}: {error}")
    if at_target:
        tally.file_after_failure += 1
        tally.problems.append(f"{item.source}: {item.target} exists after {error!r}")
    if item.fatal:
        tally.failed_as_drawn += 1
    else:
        tally.unexpected_failures.append(f"{item.source} {item.faults!r}: {error!r}")


def stitched(item: Item, found: bytes, new: bytes) -> bool:
    """Whether ``found`` is the start of the item's first object and the end of the new one."""
    old = payload(item.seed, item.size)
    if len(found) != len(new) or found == old:
        return False
    cut = next((i for i, (a, b) in enumerate(zip(found, old)) if a != b), len(old))
    return cut > 0 and found[cut:] == new[cut:]


def count_faults(faults: list[Fault], specs: list[dict[str, Any]]) -> int:
    """Faults the server applied (a replacement counts once, when it happened)."""
    applied = 0
    for fault, spec in zip(faults, specs):
        if "change_after" in spec:
            applied += int(fault.seen > spec["change_after"])
        else:
            applied += fault.hits
    return applied


def run_and_judge(job: Job, servers: dict[str, FaultServer], tally: Tally) -> None:
    """Serve, download, judge; then drop the objects (the long soak holds no data)."""
    server = servers[job.server_mode]
    faults = {item.number: serve(server, item) for item in job.items}
    errors = run_job(job, server)
    for item, error in zip(job.items, errors):
        final = served_last(server, item)
        with tally.lock:
            judge(item, error, server, tally)
            if item.kill_at is not None:
                tally.killed += item.killed_at is not None
                where = kill_point(item)
                tally.kill_points[where] = tally.kill_points.get(where, 0) + 1
            ideal = ideal_requests(len(final or b""), job.connections)
            tally.ideal_requests[item.path] = ideal
            specs = item.faults if not item.fatal else [{}]
            tally.faults_applied += count_faults(faults[item.number], specs)
        if final is not None:
            server.remove_file(item.path)
        server.clear_faults(item.path)


def count_kinds(jobs: list[Job], tally: Tally) -> None:
    """Count the downloads of each kind the plan holds."""
    for job in jobs:
        for item in job.items:
            tally.downloads += 1
            tally.http += item.scheme == "http"
            tally.s3 += item.scheme == "s3"
            tally.parallel += ideal_requests(item.size, job.connections) > 1
            tally.in_batches += job.many
            tally.interrupted += item.interrupt_at is not None
            mode = mode_of(item, job)
            tally.modes[mode] = tally.modes.get(mode, 0) + 1


def count_requests(servers: dict[str, FaultServer], tally: Tally) -> None:
    """Requests and retries (GETs beyond a fault-free download's) from the servers' logs."""
    per_path: dict[str, int] = {}
    for server in servers.values():
        for request in server.requests:
            per_path[request.path] = per_path.get(request.path, 0) + 1
    tally.requests = sum(per_path.values())
    tally.retries = sum(
        max(0, per_path.get(path, 0) - ideal) for path, ideal in tally.ideal_requests.items()
    )


def scan_folder(folder: Path, jobs: list[Job], tally: Tally) -> None:
    """Every file under ``folder`` must be a finished target or a failed one's .part."""
    allowed = set()
    for job in jobs:
        for item in job.items:
            allowed.update({item.target, item.target + ".part", item.target + ".part.json"})
    for root, _dirs, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            if name.endswith(".lock"):
                tally.locks_left += 1
                tally.problems.append(f"{path} left")
            elif path not in allowed:
                tally.stray_files += 1
                tally.problems.append(f"stray file {path}")


def run_soak(servers: dict[str, FaultServer], folder: Path, count: int, seed: int) -> Tally:
    """Draw, run and judge ``count`` downloads; print and return the tally."""
    started = time.monotonic()
    jobs = draw_plan(count, seed, folder, servers)
    tally = Tally()
    count_kinds(jobs, tally)
    with ThreadPoolExecutor(JOBS_AT_ONCE) as pool:
        for future in [pool.submit(run_and_judge, job, servers, tally) for job in jobs]:
            future.result()
    count_requests(servers, tally)
    scan_folder(folder, jobs, tally)
    print()
    print(tally.line(seed, time.monotonic() - started))
    for failure in tally.unexpected_failures:
        print("  failed although its faults were recoverable:", failure)
    return tally


def check(tally: Tally) -> None:
    """The soak's verdict: faults were injected, and every count that must be 0 is.

    Recoverable faults may still exhaust a download's retries now and then
    (a busy machine stretches a pause past the timeout): a clean error, so
    allowed, but only rarely; more means the retries themselves broke.
    """
    assert tally.faults_applied > tally.downloads // 2, "the soak injected too few faults"
    assert tally.zeros() == dict.fromkeys(tally.zeros(), 0), tally.problems
    allowed = max(1, tally.downloads // 50)
    assert len(tally.unexpected_failures) <= allowed, tally.unexpected_failures


@pytest.fixture
def servers(http_server: FaultServer) -> Iterator[dict[str, FaultServer]]:
    """The two servers a job may draw: one as most servers are, one as S3 is."""
    with FaultServer(s3_semantics=True) as s3_like:
        yield {"plain": http_server, "s3-semantics": s3_like}
    assert not s3_like.errors


def test_short_soak(servers: dict[str, FaultServer], tmp_path: Path) -> None:
    """SPEC §3.1-§3.3 under 60 seeded faulty downloads (the default run's soak)."""
    check(run_soak(servers, tmp_path, SHORT_SOAK, SEED))


@pytest.mark.soak
def test_soak(servers: dict[str, FaultServer], tmp_path: Path) -> None:
    """The same with ``PYVO_DL_SOAK`` downloads (default 1000): ``pytest -m soak -s``."""
    check(run_soak(servers, tmp_path, LONG_SOAK, SEED))

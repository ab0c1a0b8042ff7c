"""Threads whose first download imports a module at once (issue 13 item 1).

pyvo_dl imports what a download needs when it first needs it (SPEC §6), so
the first downloads of a process import ``concurrent.futures``,
``logging``, ``ssl``, ``hashlib``, ``xml``... from whichever threads reach
them first. A module is in ``sys.modules`` while its import is still
running: code that takes it from there instead of importing it gets a
half-made module (``partially initialized module 'logging' has no
attribute 'getLogger'``), which made whole batches of a ``download_many``
call fail at random.

Each run is a fresh interpreter whose threads start their first download
at one barrier, every kind at once: plain http, a split http file, https, a
checksum, a retried 503, ``.netrc``, S3 objects small and split, an S3
listing, a ``download_many`` inside a thread. ``test_slowed_imports`` makes
every import of the run slow (a finder that sleeps before each module's
code runs), so that each module stays half-made long enough for any thread
that peeks at it to be caught; ``test_many_fresh_processes`` repeats the
plain race (no slowing) in many processes, as a user's runs meet it.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import pathlib
import subprocess
import sys

import pytest

import pyvo_dl
from servers import s3_client_for

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    import trustme

    from servers import FaultServer

MiB = 1024 * 1024
PACKAGE = pathlib.Path(pyvo_dl.__file__).parent
ROOT = PACKAGE.parent

# The run in the child: ``spec`` (JSON in argv[1]) lists the jobs; each
# thread runs one job's downloads after the barrier and reports.
CHILD = r"""
import json, os, sys, threading, time, traceback

spec = json.loads(sys.argv[1])
if spec["slow"]:
    import importlib.abc

    class SlowLoader(importlib.abc.Loader):
        # Delegates to the real loader, but sleeps first: the module sits in
        # sys.modules, empty, for that long (as a big module does on a slow disk).
        def __init__(self, loader):
            self._loader = loader
        def create_module(self, spec):
            return self._loader.create_module(spec)
        def exec_module(self, module):
            time.sleep(spec_delay)
            self._loader.exec_module(module)
        def __getattr__(self, name):
            return getattr(self._loader, name)

    class SlowFinder(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                found = finder.find_spec(name, path, target)
                if found is not None:
                    if found.loader is not None and hasattr(found.loader, "exec_module"):
                        found.loader = SlowLoader(found.loader)
                    return found
            return None

    spec_delay = spec["slow"]
import pyvo_dl  # before the slowing: what import pyvo_dl loads is not raced
if spec["slow"]:
    sys.meta_path.insert(0, SlowFinder())

barrier = threading.Barrier(len(spec["jobs"]))
failures = []

def run(job):
    barrier.wait()
    try:
        for call in job:
            kind, args, kwargs = call
            if kind == "many":
                results = pyvo_dl.download_many(args, **kwargs)
                bad = [r for r in results if isinstance(r, BaseException)]
                if bad:
                    raise bad[0]
            else:
                getattr(pyvo_dl, kind)(*args, **kwargs)
    except BaseException:
        failures.append(traceback.format_exc())

threads = [threading.Thread(target=run, args=(job,)) for job in spec["jobs"]]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(json.dumps(failures))
"""


def _data(size: int, seed: int) -> bytes:
    block = hashlib.sha256(str(seed).encode()).digest() * 2048
    return (block * (size // len(block) + 1))[:size]


class Scene:
    """The servers and files of one race, and the jobs that fetch them."""

    def __init__(
        self,
        http: FaultServer,
        https: FaultServer,
        s3: str,
        ca: trustme.CA,
        folder: pathlib.Path,
    ) -> None:
        self.folder = folder
        self.expected: dict[str, bytes] = {}
        self.env = dict(os.environ, PYTHONPATH=str(ROOT))
        ca_file = folder / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        # https's default context then trusts the test CA (as an institute's
        # nodes do with their bundle), without the child importing ssl first.
        self.env["SSL_CERT_FILE"] = str(ca_file)
        netrc = folder / "netrc"
        netrc.write_text("machine 127.0.0.1 login reader password secret\n")
        self.env["NETRC"] = str(netrc)
        self.env["AWS_ENDPOINT_URL_S3"] = s3
        self.http, self.https = http, https
        self.small = [http.add_file(f"/small/{i}.fits", _data(3000 + i, i)) for i in range(40)]
        self.big = http.add_file("/big/split.fits", _data(9 * MiB, 100))
        self.secure = [https.add_file(f"/tls/{i}.fits", _data(5000, 200 + i)) for i in range(6)]
        self.flaky = http.add_file("/flaky/retried.fits", _data(4000, 300))
        self.sums = http.add_file("/sums/checked.fits", _data(6000, 301))
        client = s3_client_for(s3)
        client.create_bucket(Bucket="race-bucket", ACL="public-read")
        self.s3_data = {
            "obs/a.fits": _data(7000, 400),
            "obs/b.fits": _data(7100, 401),
            "obs/deep/c.fits": _data(7200, 402),
            "large/d.fits": _data(9 * MiB, 403),
        }
        for key, body in self.s3_data.items():
            client.put_object(Bucket="race-bucket", Key=key, Body=body, ACL="public-read")

    def _to(self, run: str, name: str, data: bytes) -> str:
        path = str(self.folder / run / name)
        self.expected[path] = data
        return path

    def jobs(self, run: str) -> list[list[Any]]:
        """One list of calls per thread, every kind of first download among them."""
        http, quiet = self.http, {"progress": False}
        jobs: list[list[Any]] = []
        for n in range(8):  # small files: each commit logs
            calls = []
            for url in self.small[n * 5 : n * 5 + 5]:
                name = url.rsplit("/", 1)[1]
                path = self._to(run, f"small-{n}-{name}", http.file_data(url[len(http.base_url) :]))
                calls.append(["http_download", [url, path], quiet])
            jobs.append(calls)
        big = self._to(run, "split.fits", http.file_data("/big/split.fits"))
        jobs.append([["http_download", [self.big, big], dict(quiet, connections=2)]])
        for n, url in enumerate(self.secure[:3]):
            path = self._to(
                run, f"tls-{n}.fits", self.https.file_data(url[len(self.https.base_url) :])
            )
            jobs.append([["http_download", [url, path], quiet]])
        digest = "sha256:" + hashlib.sha256(http.file_data("/sums/checked.fits")).hexdigest()
        sums = self._to(run, "checked.fits", http.file_data("/sums/checked.fits"))
        jobs.append([["http_download", [self.sums, sums], dict(quiet, checksum=digest)]])
        flaky = self._to(run, "retried.fits", http.file_data("/flaky/retried.fits"))
        jobs.append([["http_download", [self.flaky, flaky], quiet]])
        s3_calls = []
        for key in ("obs/a.fits", "large/d.fits"):
            path = self._to(run, "s3-" + key.replace("/", "-"), self.s3_data[key])
            s3_calls.append(["aws_download", [f"s3://race-bucket/{key}", None, None, path], quiet])
        jobs.append(s3_calls)
        listed = str(self.folder / run / "listed")
        for key in ("obs/a.fits", "obs/b.fits", "obs/deep/c.fits"):
            self.expected[os.path.join(listed, key[len("obs/") :])] = self.s3_data[key]
        jobs.append(
            [["aws_download", ["s3://race-bucket/obs/", None, None, listed],
              dict(quiet, recursive=True)]]
        )  # fmt: skip
        many = [[url, self._to(run, f"many-{i}.fits", self.https.file_data(url[len(self.https.base_url) :]))] for i, url in enumerate(self.secure[3:])]  # fmt: skip
        jobs.append([["many", many, {"dest_dir": str(self.folder / run), "progress": False}]])
        return jobs

    def run(self, run: str, slow: float) -> list[str]:
        """Start one fresh interpreter on the jobs; its failures (tracebacks)."""
        self.http.set_fault("/flaky/retried.fits", status=503, retry_after="0", times=1)
        spec = {"slow": slow, "jobs": self.jobs(run)}
        done = subprocess.run(
            [sys.executable, "-c", CHILD, json.dumps(spec)],
            check=False, capture_output=True, text=True, env=self.env, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return list(json.loads(done.stdout.strip().splitlines()[-1]))

    def check_files(self) -> None:
        for path, data in self.expected.items():
            assert pathlib.Path(path).read_bytes() == data, path


@pytest.fixture
def scene(
    http_server: FaultServer,
    https_server: FaultServer,
    s3_endpoint: str,
    ca: trustme.CA,
    tmp_path: pathlib.Path,
) -> Scene:
    return Scene(http_server, https_server, s3_endpoint, ca, tmp_path)


def test_slowed_imports(scene: Scene) -> None:
    # Three fresh processes, each import 20 ms slower than it is: on the code
    # before the fix every run had failures.
    for run in range(3):
        failures = scene.run(f"run{run}", slow=0.02)
        assert not failures, failures[0]
    scene.check_files()


@pytest.mark.scale
def test_many_fresh_processes(scene: Scene) -> None:
    # The race as users meet it: 30 fresh processes of 16 threads, no slowing.
    failed = []
    for run in range(30):
        failed += scene.run(f"run{run}", slow=0)
    assert not failed, f"{len(failed)} failed; the first: {failed[0]}"
    scene.check_files()


def _module_peeks(tree: ast.AST) -> list[int]:
    """Lines that read a module out of ``sys.modules`` (``.get``, ``[...]``)."""
    lines = []
    for node in ast.walk(tree):
        target = node.value if isinstance(node, ast.Subscript) else None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            target = node.func.value if node.func.attr in ("get", "pop", "setdefault") else None
        if (
            isinstance(target, ast.Attribute)
            and target.attr == "modules"
            and isinstance(target.value, ast.Name)
            and target.value.id == "sys"
        ):
            lines.append(node.lineno)
    return lines


def test_no_module_is_taken_from_sys_modules() -> None:
    # ``"x" in sys.modules`` (has it been imported at all?) is fine; using
    # what is stored there is not: it may be half-made.
    peeks = {
        path.name: lines
        for path in sorted(PACKAGE.glob("*.py"))
        if (lines := _module_peeks(ast.parse(path.read_text(encoding="utf-8"))))
    }
    assert not peeks, peeks

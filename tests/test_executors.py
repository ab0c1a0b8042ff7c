"""download_many on executors: process pools, Dask, MPI (issue 13 items 5 and 10).

Items run as ``download(source, path)`` calls in the executor's workers,
whose current folder is not the caller's (Dask's and MPI's workers keep the
folder they started in): targets are made absolute before they are sent,
and the caller gets the paths it planned. Ctrl-C cancels the items not yet
begun; a boto3 session, which cannot cross processes, is one ``ValueError``
before anything is sent; ``workers=``/``max_per_host=``, which size
download_many's own threads, are refused with an executor; credentials are
looked up once per worker process, not once per item.

The real engines (a Dask ``LocalCluster`` of processes, ``mpiexec`` with
``mpi4py.futures``) are marked ``scale``: CI runs them, the default run
does not.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import pytest

import pyvo_dl
from servers import create_moto_user, enable_moto_auth, s3_client_for

TYPE_CHECKING = False
if TYPE_CHECKING:
    import pathlib
    from collections.abc import Iterator

    from servers import FaultServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(pyvo_dl.__file__)))


def _body(i: int) -> bytes:
    return (f"item {i} ".encode() * 700)[: 5000 + i]


@pytest.fixture
def urls(http_server: FaultServer) -> list[str]:
    return [http_server.add_file(f"/obs/f{i}.fits", _body(i)) for i in range(6)]


def _elsewhere_pool(folder: pathlib.Path, workers: int = 2) -> ProcessPoolExecutor:
    """A process pool whose workers work in ``folder``, as Dask's and MPI's do in theirs."""
    return ProcessPoolExecutor(max_workers=workers, initializer=os.chdir, initargs=(str(folder),))


def _check_landed(results: list[object], here: pathlib.Path, folder: str = "out") -> None:
    assert results == [os.path.join(folder, f"f{i}.fits") for i in range(6)], results
    for i in range(6):
        assert (here / folder / f"f{i}.fits").read_bytes() == _body(i)


def test_a_relative_dest_dir_is_the_callers(urls: list[str], in_tmp: pathlib.Path) -> None:
    elsewhere = in_tmp / "worker-folder"
    elsewhere.mkdir()
    with _elsewhere_pool(elsewhere) as pool:
        results = pyvo_dl.download_many(urls, "out", executor=pool)
    _check_landed(results, in_tmp)
    assert os.listdir(elsewhere) == []  # before: the files went here


def test_ctrl_c_cancels_the_items_not_begun(
    http_server: FaultServer, in_tmp: pathlib.Path, request: pytest.FixtureRequest
) -> None:
    import _thread

    # Each answer takes 0.3 s; one worker: Ctrl-C during the first item.
    slow = []
    for i in range(10):
        slow.append(http_server.add_file(f"/slow/s{i}.fits", _body(i)))
        http_server.set_fault(f"/slow/s{i}.fits", delay=0.3)
    # interrupt_main() acts only where Python handles SIGINT (a background
    # shell may have set it to SIG_IGN).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, previous))

    def press_ctrl_c() -> None:
        while not http_server.requests:
            time.sleep(0.01)
        _thread.interrupt_main()

    presser = threading.Thread(target=press_ctrl_c)
    presser.start()
    with ThreadPoolExecutor(max_workers=1) as pool, pytest.raises(
        KeyboardInterrupt, match=r"interrupted: 1 download stopped"
    ):
        pyvo_dl.download_many(slow, "out", executor=pool)
    presser.join()
    asked = {r.path for r in http_server.requests if r.method == "GET"}
    assert len(asked) <= 2, asked  # before: the pool ran all ten
    assert not list(in_tmp.rglob("*.lock"))


def test_a_boto3_session_with_a_process_pool_is_one_clear_error(
    s3_endpoint: str, in_tmp: pathlib.Path
) -> None:
    import boto3

    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    items = [f"s3://no-such-bucket/k{i}.fits" for i in range(4)]
    refused = pytest.raises(ValueError, match=r"session= cannot be sent.*aws_profile=")
    with ProcessPoolExecutor(max_workers=2) as pool, refused:
        pyvo_dl.download_many(
            items, "out", executor=pool, session=session, endpoint_url=s3_endpoint
        )
    assert not (in_tmp / "out").exists()


@pytest.mark.parametrize(("option", "value"), [("workers", 4), ("max_per_host", 2)])
def test_thread_options_with_an_executor_are_refused(
    urls: list[str], in_tmp: pathlib.Path, option: str, value: int
) -> None:
    refused = pytest.raises(ValueError, match=rf"{option}={value} applies to download_many's own")
    with ThreadPoolExecutor(max_workers=2) as pool, refused:
        pyvo_dl.download_many(urls, "out", executor=pool, **{option: value})


def test_a_thread_pool_takes_what_does_not_pickle(urls: list[str], in_tmp: pathlib.Path) -> None:
    # In-process executors need no pickling: a mapping of a local class
    # (which pickle cannot find by name) passes.
    from collections.abc import Mapping

    class Headers(Mapping):  # type: ignore[type-arg]
        def __getitem__(self, key: str) -> str:
            return {"X-Project": "pyvo-dl-tests"}[key]

        def __iter__(self) -> Iterator[str]:
            return iter(["X-Project"])

        def __len__(self) -> int:
            return 1

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = pyvo_dl.download_many(urls, "out", executor=pool, headers=Headers())
    _check_landed(results, in_tmp)
    with ProcessPoolExecutor(max_workers=1) as pool, pytest.raises(
        ValueError, match="headers= cannot be sent"
    ):
        pyvo_dl.download_many(urls, "out2", executor=pool, headers=Headers())


COUNTING_PROCESS = r"""
import json, sys
with open(sys.argv[1], "a") as f:
    f.write("run\n")
print(json.dumps({"Version": 1, "AccessKeyId": sys.argv[2], "SecretAccessKey": sys.argv[3]}))
"""


@pytest.fixture
def counted_profile(
    moto_auth_server: str, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, pathlib.Path]:
    """A private bucket of 12 objects, and a profile whose credential_process counts its runs."""
    pytest.importorskip("botocore")
    client = s3_client_for(moto_auth_server)
    client.create_bucket(Bucket="team-data")
    for i in range(12):
        client.put_object(Bucket="team-data", Key=f"run/f{i}.fits", Body=_body(i))
    keys = create_moto_user(moto_auth_server)
    enable_moto_auth(moto_auth_server)
    script, log = tmp_path / "process.py", tmp_path / "runs.log"
    script.write_text(COUNTING_PROCESS)
    command = f"{sys.executable} {script} {log} {keys.access_key} {keys.secret_key}"
    (tmp_path / "config").write_text(f"[profile team]\ncredential_process = {command}\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    return moto_auth_server, log


def test_credentials_once_per_worker_process(
    counted_profile: tuple[str, pathlib.Path], in_tmp: pathlib.Path
) -> None:
    url, log = counted_profile
    items = [f"s3://team-data/run/f{i}.fits" for i in range(12)]
    with ProcessPoolExecutor(max_workers=2) as pool:
        results = pyvo_dl.download_many(
            items, "out", executor=pool, aws_profile="team", endpoint_url=url
        )
    assert results == [os.path.join("out", f"f{i}.fits") for i in range(12)], results
    assert 1 <= len(log.read_text().splitlines()) <= 2  # before: one per object


# -- the real engines (marker "scale") ---------------------------------------------


@pytest.mark.scale
def test_dask_local_cluster(urls: list[str], in_tmp: pathlib.Path) -> None:
    distributed = pytest.importorskip("distributed", reason="needs dask[distributed]")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=2, processes=True, dashboard_address=None
    ) as cluster, distributed.Client(cluster) as client:
        # The caller moves after the workers started, as a notebook does.
        moved = in_tmp / "analysis"
        moved.mkdir()
        os.chdir(moved)
        results = pyvo_dl.download_many(urls, "out", executor=client.get_executor())
    _check_landed(results, moved)
    assert not (in_tmp / "out").exists()


@pytest.mark.scale
def test_dask_credentials_once_per_worker(
    counted_profile: tuple[str, pathlib.Path], in_tmp: pathlib.Path
) -> None:
    distributed = pytest.importorskip("distributed", reason="needs dask[distributed]")
    url, log = counted_profile
    items = [f"s3://team-data/run/f{i}.fits" for i in range(12)]
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=3, processes=True, dashboard_address=None
    ) as cluster, distributed.Client(cluster) as client:
        results = pyvo_dl.download_many(
            items, "out", executor=client.get_executor(), aws_profile="team", endpoint_url=url
        )
    assert results == [os.path.join("out", f"f{i}.fits") for i in range(12)], results
    assert 1 <= len(log.read_text().splitlines()) <= 2


MPI_SCRIPT = """
import os, sys
from mpi4py.futures import MPIPoolExecutor
from pyvo_dl import download_many

if __name__ == "__main__":
    with MPIPoolExecutor() as pool:
        os.chdir(sys.argv[1])  # the ranks stay where mpiexec started them
        results = download_many(sys.argv[2:], "out", executor=pool, progress=False)
    bad = [r for r in results if isinstance(r, BaseException)]
    print(len(results), len(bad), results[0])
"""


def _mpi_usable() -> str | None:
    """Why MPI cannot run here, or None."""
    if shutil.which("mpiexec") is None:
        return "no mpiexec (Debian: apt-get install mpich)"
    check = subprocess.run(
        [sys.executable, "-c", "from mpi4py import MPI"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if check.returncode:
        return f"mpi4py does not load: {check.stderr.strip().splitlines()[-1]}"
    return None


@pytest.mark.scale
def test_mpi_pool_executor(urls: list[str], tmp_path: pathlib.Path) -> None:
    why = _mpi_usable()
    if why:
        pytest.skip(why)
    script = tmp_path / "fetch_mpi.py"
    script.write_text(MPI_SCRIPT)
    moved = tmp_path / "analysis"
    moved.mkdir()
    env = dict(os.environ, PYTHONPATH=ROOT)
    done = subprocess.run(
        ["mpiexec", "-n", "3", sys.executable, "-m", "mpi4py.futures", str(script),
         str(moved), *urls],
        cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["6", "0", os.path.join("out", "f0.fits")], done.stdout
    _check_landed([os.path.join("out", f"f{i}.fits") for i in range(6)], moved)
    assert not (tmp_path / "out").exists()

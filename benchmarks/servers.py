"""The loopback servers the suite starts, and stops, itself.

One nginx process (``daemon off``, its own config, pid file, error log and
access logs in a temp folder, one worker) with two server blocks on free
127.0.0.1 ports, both serving the data folder at ``/bench/<key>`` (which is
also the path-style S3 address of bucket ``bench``), with sendfile,
keep-alive, ETag, Range, If-Range and If-Match as nginx's static module does:

- ``fast``: as fast as nginx goes;
- ``capped``: each request waits 10 ms before its first byte (``echo_sleep``
  from the echo module that Debian's nginx-light ships, then ``echo_exec`` to
  the static handler) and is sent at ``limit_rate 40m`` (40 MiB/s), as one S3
  connection behaves.

And moto's S3 server, for one small signed run. Every server is a process
this module started, stopped by its PID.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from typing import NamedTuple

from .environment import ECHO_MODULE

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, List, Optional

#: The per-request rate and first-byte delay of the capped server.
CAPPED_RATE = "40m"
CAPPED_RATE_BYTES = 40 * 1024 * 1024
CAPPED_DELAY = 0.010
#: The most nginx sends at once under limit_rate before it waits for the
#: rate to catch up. Each request gets its first chunk at full speed, so
#: with nginx's default (2 MiB) a connection moved 8 MiB parts (boto3's) at
#: 52 MiB/s, 32 MiB ranges at 41 MiB/s and 1 MiB ones at once: the server
#: rewarded small parts. With 256 KiB: 40.8, 40.5 and 52 MiB/s
#: (docs/benchmarks.md).
CAPPED_CHUNK = os.environ.get("BENCH_CAPPED_CHUNK", "256k")

_LOG_FORMAT = (
    "$msec $connection $connection_requests $request_method $status "
    '$body_bytes_sent $bytes_sent "$uri" "$http_range" $request_time'
)

_NGINX_CONF = """\
load_module {echo_module};
daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    log_format bench '{log_format}';
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    types {{ }}
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    open_file_cache max=10000 inactive=300s;
    server {{
        listen 127.0.0.1:{fast_port};
        access_log {tmp}/fast.log bench;
        location /bench/ {{ root {root}; }}
    }}
    server {{
        listen 127.0.0.1:{capped_port};
        access_log {tmp}/capped.log bench;
        location /bench/ {{
            echo_sleep {delay};
            echo_exec @file;
        }}
        location @file {{
            root {root};
            limit_rate {rate};
            sendfile_max_chunk {chunk};
        }}
    }}
}}
"""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait until something accepts on ``port``, or raise if ``proc`` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def stop_process(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> None:
    """Stop one process this suite started, by its PID: ``sig``, then SIGKILL."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.kill(proc.pid, sig)
        proc.wait(timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except OSError:
            return
        proc.wait(timeout=5)


class LogEntry(NamedTuple):
    """One request in an nginx access log (the ``bench`` format)."""

    connection: int
    method: str
    status: int
    body_bytes: int
    uri: str
    range: str | None
    seconds: float


class AccessLog:
    """An nginx access log in the ``bench`` format, read from a remembered offset."""

    def __init__(self, path: str) -> None:
        self.path = path

    def offset(self) -> int:
        """The current end of the log."""
        try:
            return os.path.getsize(self.path)
        except OSError:
            return 0

    def entries(self, start: int, end: int | None = None) -> list[LogEntry]:
        """The requests logged between two offsets."""
        try:
            with open(self.path, "rb") as f:
                f.seek(start)
                data = f.read() if end is None else f.read(max(0, end - start))
        except OSError:
            return []
        parsed = (_parse_line(line) for line in data.decode().splitlines())
        return [entry for entry in parsed if entry is not None]


def _parse_line(line: str) -> LogEntry | None:
    parts = line.split(" ", 7)
    if len(parts) < 8:
        return None
    uri, _, rest = parts[7].partition('" "')
    quoted_range, _, seconds = rest.rpartition(" ")
    return LogEntry(
        connection=int(parts[1]),
        method=parts[3],
        status=int(parts[4]),
        body_bytes=int(parts[5]),
        uri=uri.strip('"'),
        range=quoted_range.rstrip('"').strip("-") or None,
        seconds=float(seconds),
    )


def summarize(entries: list[LogEntry]) -> dict[str, int]:
    """Requests, GETs, HEADs, distinct TCP connections and body bytes of some log entries."""
    return {
        "requests": len(entries),
        "gets": sum(1 for e in entries if e.method == "GET"),
        "heads": sum(1 for e in entries if e.method == "HEAD"),
        "connections": len({e.connection for e in entries}),
        "body_bytes": sum(e.body_bytes for e in entries),
    }


class Nginx:
    """nginx serving ``data_dir`` at ``/bench/<key>`` on a fast and a capped port.

    Parameters
    ----------
    data_dir : str
        The folder served; ``/bench/x`` is ``data_dir/x``.
    tmp : str
        A folder for the config, pid file and logs.
    prefix : list of str
        Command prefix (``taskset -c 0``) that pins the server.
    """

    def __init__(self, nginx: str, data_dir: str, tmp: str, prefix: list[str]) -> None:
        self.nginx = nginx
        self.tmp = os.path.join(tmp, "nginx")
        self.prefix = prefix
        self.fast_port = free_port()
        self.capped_port = free_port()
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.root = os.path.join(self.tmp, "root")
        os.makedirs(self.root, exist_ok=True)
        # The location is /bench/, so the root must hold a "bench" entry.
        os.symlink(data_dir, os.path.join(self.root, "bench"))
        self.fast_log = AccessLog(os.path.join(self.tmp, "fast.log"))
        self.capped_log = AccessLog(os.path.join(self.tmp, "capped.log"))

    @property
    def fast_url(self) -> str:
        """``http://127.0.0.1:PORT`` of the fast server."""
        return f"http://127.0.0.1:{self.fast_port}"

    @property
    def capped_url(self) -> str:
        """``http://127.0.0.1:PORT`` of the capped server."""
        return f"http://127.0.0.1:{self.capped_port}"

    def start(self) -> None:
        """Write the config, start nginx in the foreground, wait for both ports."""
        conf = os.path.join(self.tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write(
                _NGINX_CONF.format(
                    echo_module=ECHO_MODULE,
                    tmp=self.tmp,
                    log_format=_LOG_FORMAT,
                    root=self.root,
                    fast_port=self.fast_port,
                    capped_port=self.capped_port,
                    delay=f"{CAPPED_DELAY:.3f}",
                    rate=CAPPED_RATE,
                    chunk=CAPPED_CHUNK,
                )
            )
        error_log = os.path.join(self.tmp, "error.log")
        command = [*self.prefix, self.nginx, "-e", error_log, "-p", self.tmp, "-c", conf]
        with open(error_log, "ab") as stderr:
            self.proc = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stderr=stderr, start_new_session=True
            )
        try:
            wait_for_port(self.fast_port, self.proc, 10)
            wait_for_port(self.capped_port, self.proc, 10)
        except RuntimeError as exc:
            raise RuntimeError(f"nginx did not start: {exc}; see {error_log}") from exc

    def stop(self) -> None:
        """Stop nginx (SIGQUIT: graceful) by the PID it was started with."""
        stop_process(self.proc, signal.SIGQUIT)

    def errors(self) -> list[str]:
        """Lines of nginx's error log at level error or worse."""
        try:
            with open(os.path.join(self.tmp, "error.log")) as f:
                levels = ("[error]", "[crit]", "[alert]", "[emerg]")
                return [line.rstrip() for line in f if any(level in line for level in levels)]
        except OSError:
            return []


class Moto:
    """moto's S3 server from the benchmark venv, for the signed run."""

    def __init__(self, python: str, tmp: str, prefix: list[str], env: Dict[str, str]) -> None:
        self.python = python
        self.port = free_port()
        self.prefix = prefix
        self.env = env
        self.log_path = os.path.join(tmp, "moto.log")
        self.proc: Optional[subprocess.Popen[bytes]] = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` of moto's server."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start ``moto.server`` on 127.0.0.1 and wait for it."""
        command: List[str] = [
            *self.prefix, self.python, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port),
        ]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=self.env,
                start_new_session=True,
            )
        wait_for_port(self.port, self.proc, 60)

    def put_object(self, bucket: str, key: str, path: str, profile: str) -> None:
        """Create ``bucket`` and upload ``path`` as ``key``, signed with ``profile``."""
        code = (
            "import sys, boto3\n"
            "s3 = boto3.Session(profile_name=sys.argv[2]).client('s3', endpoint_url=sys.argv[1])\n"
            "s3.create_bucket(Bucket=sys.argv[3])\n"
            "s3.upload_file(sys.argv[5], sys.argv[3], sys.argv[4])\n"
        )
        subprocess.run(
            [self.python, "-c", code, self.url, profile, bucket, key, path],
            env=self.env,
            check=True,
            timeout=300,
        )

    def stop(self) -> None:
        """Stop moto's server by its PID."""
        stop_process(self.proc)

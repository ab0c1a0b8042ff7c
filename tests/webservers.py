"""The web servers archives run, started on loopback from a generated config.

nginx (``autoindex on``), Apache httpd (``mod_autoindex`` with
``FancyIndexing``, as HEASARC serves its FTP area over HTTPS) and lighttpd
(``mod_dirlisting``), from their Debian packages, each serving a folder on
a free 127.0.0.1 port as a non-daemon child process that :meth:`stop` ends
by its PID. Each writes an access log of request lines, so that a test can
assert what was fetched (``requested``). Python's own
``http.server.SimpleHTTPRequestHandler`` (HTTP/1.0, its own listing page)
is the fourth, run in a thread.

These are the real servers, not imitations: only the configuration is ours
(listening address, document root, logs, listings on).
"""

from __future__ import annotations

import http.server
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from functools import partial

import pytest

from servers import free_port

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: Where Debian installs each server, and the package that does.
BINARIES = {
    "nginx": "/usr/sbin/nginx",
    "apache": "/usr/sbin/apache2",
    "lighttpd": "/usr/sbin/lighttpd",
}
PACKAGES = {"nginx": "nginx-light", "apache": "apache2", "lighttpd": "lighttpd"}
#: Seconds a server may take to listen.
_START_TIMEOUT = 15.0
#: The path of the marker requests that tell the end of an access log.
_MARK = "pyvo-dl-log-mark-"

_NGINX = """\
daemon off;
master_process on;
worker_processes 1;
user root;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 64; }}
http {{
    types {{ text/html html; text/plain txt; application/octet-stream fits gz; }}
    default_type application/octet-stream;
    log_format lines '$request $status';
    access_log {tmp}/access.log lines;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{ autoindex on; }}
    }}
}}
"""

_APACHE = """\
ServerRoot "{tmp}"
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
PidFile "{tmp}/apache.pid"
Mutex file:{tmp} default
DefaultRuntimeDir "{tmp}"
User {user}
Group {group}
LoadModule mpm_event_module {modules}/mod_mpm_event.so
LoadModule authz_core_module {modules}/mod_authz_core.so
LoadModule dir_module {modules}/mod_dir.so
LoadModule mime_module {modules}/mod_mime.so
LoadModule autoindex_module {modules}/mod_autoindex.so
ErrorLog "{tmp}/error.log"
LogFormat "%r %>s" lines
CustomLog "{tmp}/access.log" lines
TypesConfig /dev/null
AddType text/html .html
AddType application/octet-stream .fits .gz
StartServers 1
ServerLimit 1
ThreadsPerChild 16
MaxRequestWorkers 16
DocumentRoot "{root}"
<Directory "{root}">
    Options Indexes FollowSymLinks
    AllowOverride None
    Require all granted
    # As HEASARC's FTP area: fancy listings with a header file above them.
    IndexOptions FancyIndexing HTMLTable NameWidth=* Charset=UTF-8
    HeaderName HEADER.html
    IndexIgnore HEADER.html
</Directory>
"""

_LIGHTTPD = """\
server.document-root = "{root}"
server.bind = "127.0.0.1"
server.port = {port}
server.pid-file = "{tmp}/lighttpd.pid"
server.errorlog = "{tmp}/error.log"
server.modules = ("mod_dirlisting", "mod_accesslog")
accesslog.filename = "{tmp}/access.log"
accesslog.format = "%r %s"
# lighttpd keeps a file's stat() for a second or so by default: a file changed
# between two runs of a test would still be served with its old size.
server.stat-cache-engine = "disable"
dir-listing.activate = "enable"
dir-listing.encoding = "utf-8"
dir-listing.show-header = "enable"
dir-listing.encode-header = "disable"
dir-listing.hide-header-file = "enable"
mimetype.assign = (".html" => "text/html", ".txt" => "text/plain", "" => "application/octet-stream")
"""


class WebServer:
    """One of nginx, Apache httpd or lighttpd serving ``root`` on 127.0.0.1.

    Parameters
    ----------
    kind : str
        ``"nginx"``, ``"apache"`` or ``"lighttpd"``.
    root : str
        The document root; it must be readable by the server's user
        (Apache never runs as root).
    """

    def __init__(self, kind: str, root: str) -> None:
        self.kind = kind
        self.root = root
        self.binary = BINARIES[kind]
        self.tmp = tempfile.mkdtemp(prefix=f"pyvo-dl-{kind}-")
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._marks = 0

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        """The absolute URL of ``path`` (already percent-encoded)."""
        return self.base_url + path

    def _config(self) -> tuple[str, list[str]]:
        values: dict[str, Any] = {"tmp": self.tmp, "port": self.port, "root": self.root}
        if self.kind == "nginx":
            return _NGINX.format(**values), ["-e", f"{self.tmp}/error.log", "-p", self.tmp, "-c"]
        if self.kind == "apache":
            user, group = _unprivileged_user()
            values.update(user=user, group=group, modules="/usr/lib/apache2/modules")
            return _APACHE.format(**values), ["-DFOREGROUND", "-f"]
        return _LIGHTTPD.format(**values), ["-D", "-f"]

    def start(self) -> WebServer:
        """Write the config, start the server in the foreground, wait until it listens."""
        if not os.path.exists(self.binary):
            pytest.skip(f"{self.binary} is not installed (apt-get install {PACKAGES[self.kind]})")
        text, arguments = self._config()
        conf = os.path.join(self.tmp, f"{self.kind}.conf")
        with open(conf, "w", encoding="utf-8") as f:
            f.write(text)
        with open(os.path.join(self.tmp, "stderr.log"), "ab") as stderr:
            self.proc = subprocess.Popen(
                [self.binary, *arguments, conf],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,
            )
        try:
            self._wait_listening()
        except BaseException:
            self.stop()  # the process, if any, and the folder of its files
            raise
        return self

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited at start: {self.logs()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        message = f"{self.kind} did not listen within {_START_TIMEOUT} s: {self.logs()}"
        self.stop()
        raise RuntimeError(message)

    def logs(self) -> str:
        """The server's error log and standard error, for failure messages."""
        texts = []
        for name in ("stderr.log", "error.log"):
            try:
                with open(os.path.join(self.tmp, name), encoding="utf-8", errors="replace") as f:
                    texts.append(f.read()[-2000:])
            except OSError:
                pass
        return "\n".join(texts)

    def requested(self) -> list[tuple[str, str, int]]:
        """``(method, target, status)`` of every request in the access log, in order.

        Servers write a request's line after answering it, lighttpd only
        every few seconds: a marker request is sent (and lighttpd told to
        flush, with SIGHUP), and the log read once the marker is in it.
        """
        self._marks += 1
        mark = f"/{_MARK}{self._marks}"
        try:
            urllib.request.urlopen(self.url(mark), timeout=10).close()
        except urllib.error.HTTPError:
            pass  # 404, as expected
        if self.kind == "lighttpd" and self.proc is not None:
            os.kill(self.proc.pid, signal.SIGHUP)  # it flushes its log when told to reopen it
        deadline = time.monotonic() + 10
        path = os.path.join(self.tmp, "access.log")
        while True:
            with open(path, encoding="utf-8", errors="replace") as f:
                lines = [_request_line(line) for line in f.read().splitlines() if line.strip()]
            if any(target == mark for _, target, _ in lines) or time.monotonic() > deadline:
                return [line for line in lines if _MARK not in line[1]]
            time.sleep(0.02)

    def clear_log(self) -> None:
        """Forget the requests logged so far (the server appends: it writes on from 0)."""
        self.requested()  # everything so far written out (lighttpd buffers its log)
        path = os.path.join(self.tmp, "access.log")
        if os.path.exists(path):
            with open(path, "r+b") as f:
                f.truncate(0)

    def stop(self) -> None:
        """End the server's process group (it started it) and remove its files."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            # SIGTERM to the group: the master and the workers it forked.
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        shutil.rmtree(self.tmp, ignore_errors=True)


def _request_line(line: str) -> tuple[str, str, int]:
    # "%r %s": METHOD TARGET PROTOCOL STATUS (lighttpd and nginx log the target raw).
    parts = line.split()
    return parts[0], parts[1], int(parts[-1])


def _unprivileged_user() -> tuple[str, str]:
    """A user and group for Apache, which refuses to serve as root."""
    for user, group in (("www-data", "www-data"), ("nobody", "nogroup")):
        try:
            pwd.getpwnam(user)
        except KeyError:
            continue
        return user, group
    pytest.skip("no unprivileged user (www-data, nobody) for Apache to run as")
    raise AssertionError  # pragma: no cover - skip raises


class PythonServer:
    """Python's ``http.server`` serving a folder (its own listing pages, HTTP/1.0)."""

    kind = "python"

    def __init__(self, root: str) -> None:
        self.root = root
        self.lines: list[tuple[str, str, int]] = []
        owner = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_request(self, code: Any = "-", size: Any = "-") -> None:
                owner.lines.append((self.command, self.path, int(code)))

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), partial(Handler, directory=root)
        )
        self.port = self._httpd.server_port
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        """The absolute URL of ``path``."""
        return self.base_url + path

    def start(self) -> PythonServer:
        """Serve in a thread."""
        self._thread.start()
        return self

    def requested(self) -> list[tuple[str, str, int]]:
        """``(method, target, status)`` of every request so far."""
        return list(self.lines)

    def clear_log(self) -> None:
        """Forget the requests so far."""
        self.lines.clear()

    def stop(self) -> None:
        """Stop serving and join the thread."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)

    def logs(self) -> str:
        """Nothing to add: the server runs in this process."""
        return ""

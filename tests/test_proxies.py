"""Proxies from the environment, as curl and urllib read them (issue 11).

``HTTP_PROXY`` / ``HTTPS_PROXY`` / ``ALL_PROXY`` / ``NO_PROXY``; an http URL
goes to the proxy in absolute form, an https one through a ``CONNECT``
tunnel (http.client's ``set_tunnel``) with the proxy's credentials in the
``CONNECT`` only; an ``https://`` proxy is spoken to in TLS, and TLS to the
origin runs inside that. The proxies are :class:`servers.RawServer` scripts
imitating squid and tinyproxy: the answers to ``CONNECT`` (200, 407, 403)
are theirs; a real proxy would also filter and log, which nothing here needs.
"""

from __future__ import annotations

import socket
import ssl

import pytest

import pyvo_dl
from pyvo_dl import DownloadError
from servers import build_response, free_port, relay_tunnel

TYPE_CHECKING = False
if TYPE_CHECKING:
    import pathlib
    from collections.abc import Callable

    import trustme

    from servers import FaultServer, RawHandler, RawServer

    Factory = Callable[[RawHandler], RawServer]

DATA = bytes(range(256)) * 64
PATH = "/data/events.fits"
CREDENTIALS = "puser:ppw@"
BASIC = b"Proxy-Authorization: Basic cHVzZXI6cHB3\r\n"  # puser:ppw


def tunnel_to(port: int, seen: list[bytes]) -> RawHandler:
    def handler(conn: socket.socket, request: bytes) -> None:
        assert request.startswith(b"CONNECT ")
        relay_tunnel(conn, port, seen)

    return handler


@pytest.fixture
def tls_proxy_factory(
    ca: trustme.CA, raw_server_factory: Callable[..., RawServer]
) -> Callable[[RawHandler], RawServer]:
    """RawServers that speak TLS (an ``https://`` proxy), with a certificate for 127.0.0.1."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return lambda handler: raw_server_factory(handler, context)


def test_https_through_an_https_proxy_is_tls_inside_tls(
    https_server: FaultServer,
    client_ssl_context: ssl.SSLContext,
    tls_proxy_factory: Callable[[RawHandler], RawServer],
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 11: the CONNECT (with the proxy's password) goes to an https:// proxy in TLS.

    Before, it went out in clear text. The proxy here only speaks TLS, so a
    clear-text CONNECT would fail its handshake; the tunnel it relays
    carries the origin's TLS, never the file's bytes.
    """
    url = https_server.add_file(PATH, DATA)
    seen: list[bytes] = []
    proxy = tls_proxy_factory(tunnel_to(https_server.port, seen))
    monkeypatch.setenv("https_proxy", f"https://{CREDENTIALS}127.0.0.1:{proxy.port}")
    target = tmp_path / "events.fits"
    pyvo_dl.http_download(url, str(target), progress=False, ssl_context=client_ssl_context)
    assert target.read_bytes() == DATA
    (connect,) = proxy.requests
    assert connect.startswith(f"CONNECT 127.0.0.1:{https_server.port} HTTP/1.".encode())
    assert BASIC in connect
    assert seen
    assert DATA[:4096] not in b"".join(seen)
    (request,) = [r for r in https_server.requests if r.method == "GET"]
    assert "proxy-authorization" not in request.headers
    # The tunnel is kept alive and reused like any connection.
    pyvo_dl.http_download(url, str(tmp_path / "again.fits"), progress=False,
                          ssl_context=client_ssl_context)  # fmt: skip
    assert proxy.connection_count == 1


def test_http_through_an_https_proxy_is_sent_in_tls(
    client_ssl_context: ssl.SSLContext,
    tls_proxy_factory: Callable[[RawHandler], RawServer],
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An http:// URL through an https:// proxy: the absolute-form GET, inside TLS to the proxy."""

    def answer(conn: socket.socket, request: bytes) -> None:
        conn.sendall(build_response(200, headers={"Content-Length": str(len(DATA))}, body=DATA))

    proxy = tls_proxy_factory(answer)
    monkeypatch.setenv("http_proxy", f"https://{CREDENTIALS}127.0.0.1:{proxy.port}")
    target = tmp_path / "events.fits"
    url = "http://127.0.0.1:9/data/events.fits"  # nothing listens there: only the proxy answers
    pyvo_dl.http_download(url, str(target), progress=False, ssl_context=client_ssl_context)
    assert target.read_bytes() == DATA
    (request,) = proxy.requests
    assert request.startswith(f"GET {url} HTTP/1.1\r\n".encode())
    assert BASIC in request


@pytest.mark.parametrize(
    ("status", "hint"), [(407, "check the user and password"), (403, "403 Forbidden")]
)
def test_a_refused_tunnel_is_a_clear_error_naming_the_proxy(
    raw_server_factory: Factory,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    status: int,
    hint: str,
) -> None:
    """Issue 11: 407/403 to CONNECT is not a network fault: no retry, the proxy named."""

    def refuse(conn: socket.socket, request: bytes) -> None:
        headers = {"Proxy-Authenticate": 'Basic realm="squid"', "Content-Length": "0"}
        conn.sendall(build_response(status, headers=headers))

    proxy = raw_server_factory(refuse)
    monkeypatch.setenv("HTTPS_PROXY", f"http://{CREDENTIALS}127.0.0.1:{proxy.port}")
    with pytest.raises(DownloadError) as raised:
        pyvo_dl.http_download("https://127.0.0.1:9/x.fits", str(tmp_path / "x.fits"),
                              progress=False, retries=3)  # fmt: skip
    message = str(raised.value)
    assert f"the proxy http://127.0.0.1:{proxy.port} refused a tunnel to 127.0.0.1:9" in message
    assert hint in message
    assert "ppw" not in message  # never the password
    assert proxy.connection_count == 1
    assert list(tmp_path.iterdir()) == []


def test_a_dead_proxy_is_named(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    monkeypatch.setenv("http_proxy", f"http://{CREDENTIALS}127.0.0.1:{port}")
    with pytest.raises(DownloadError) as raised:
        pyvo_dl.http_download("http://127.0.0.1:9/x.fits", str(tmp_path / "x.fits"),
                              progress=False, retries=0)  # fmt: skip
    message = str(raised.value)
    assert f"the proxy http://127.0.0.1:{port}" in message
    assert "ppw" not in message


def test_all_proxy_is_used_when_no_scheme_has_its_own(
    raw_server_factory: Factory, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 11: ALL_PROXY was read and then never used (curl uses it)."""

    def answer(conn: socket.socket, request: bytes) -> None:
        conn.sendall(build_response(200, headers={"Content-Length": "4"}, body=b"data"))

    proxy = raw_server_factory(answer)
    monkeypatch.setenv("ALL_PROXY", f"http://127.0.0.1:{proxy.port}")
    target = tmp_path / "x.fits"
    pyvo_dl.http_download("http://127.0.0.1:9/x.fits", str(target), progress=False)
    assert target.read_bytes() == b"data"
    assert proxy.requests[0].startswith(b"GET http://127.0.0.1:9/x.fits HTTP/1.1\r\n")


def test_all_proxy_yields_to_no_proxy(
    http_server: FaultServer, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = http_server.add_file(PATH, DATA)
    monkeypatch.setenv("all_proxy", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    target = tmp_path / "x.fits"
    pyvo_dl.http_download(url, str(target), progress=False)
    assert target.read_bytes() == DATA


def test_a_socks_proxy_is_refused_clearly(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A socks5:// ALL_PROXY (for curl) is not silently bypassed: the traffic was meant for it."""
    monkeypatch.setenv("ALL_PROXY", "socks5://user:secret@127.0.0.1:1080")
    with pytest.raises(DownloadError, match="not an http:// or https:// proxy") as raised:
        pyvo_dl.http_download("http://127.0.0.1:9/x.fits", str(tmp_path / "x.fits"),
                              progress=False)  # fmt: skip
    assert "socks5://127.0.0.1:1080" in str(raised.value)
    assert "secret" not in str(raised.value)

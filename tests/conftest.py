"""Fixtures shared by every test: loopback servers, moto, TLS, and the guards.

Autouse, for every test:

- ``loopback_guard``: any name look-up or connection outside 127.0.0.0/8,
  ::1 and ``localhost`` raises :class:`servers.NonLoopbackError` before a
  packet leaves, and fails the test at teardown even if the client
  swallowed the error;
- ``isolated_env``: no proxy variables, no ``AWS_*`` variables, no AWS
  config files, no instance-metadata look-ups, no ``~/.netrc`` (``NETRC``
  points to a file that does not exist), so what a developer has set never
  leaks into a test. Tests set what they need with ``monkeypatch``.

Server fixtures: ``http_server``, ``s3_server`` (the same as an S3
endpoint, in two S3 servers' ways), ``other_server``, ``https_server`` (+
``ca``, ``client_ssl_context``), ``raw_server_factory``; moto:
``moto_server`` (one process per session), ``s3_endpoint`` (the same,
emptied for this test), ``moto_auth_server`` (a second process whose auth a
test switches on with ``servers.enable_moto_auth``); ``in_tmp``.
"""

from __future__ import annotations

import os
import ssl

import pytest

from servers import (
    FaultServer,
    LoopbackGuard,
    MotoServer,
    RawServer,
    disable_moto_auth,
    reset_moto,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    import trustme

    from servers import RawHandler

try:
    from hypothesis import settings as _hypothesis_settings
except ImportError:  # the nobotocore env may run without it
    _hypothesis_settings = None
if _hypothesis_settings is not None:
    # In CI the same examples every run: a failure there is reproducible.
    _hypothesis_settings.register_profile("ci", derandomize=True, deadline=None)
    # .ci/run's second, short pass: a few fresh random examples under the seed
    # it prints (--hypothesis-seed), with no example database to replay from.
    _hypothesis_settings.register_profile(
        "fresh", derandomize=False, max_examples=100, deadline=None, database=None
    )
    _profile = os.environ.get("PYVO_DL_HYPOTHESIS_PROFILE") or (
        "ci" if os.environ.get("CI") else ""
    )
    if _profile:
        _hypothesis_settings.load_profile(_profile)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every hypothesis test ``property``, so that ``-m property`` selects them all."""
    for item in items:
        if getattr(getattr(item, "obj", None), "is_hypothesis_test", False):
            item.add_marker(pytest.mark.property)


_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "ftp_proxy")


# ------------------------------------------------------------------ guards ---


@pytest.fixture(autouse=True)
def loopback_guard(monkeypatch: pytest.MonkeyPatch) -> Iterator[LoopbackGuard]:
    """Refuse every socket that would leave the machine (STYLE §6.4).

    A test that provokes refusals on purpose asserts on ``guard.refused``
    and then clears it.
    """
    guard = LoopbackGuard()
    guard.install(monkeypatch)
    yield guard
    if guard.refused:
        pytest.fail(f"the test tried to leave loopback: {guard.refused}")


@pytest.fixture(scope="session")
def _nowhere(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A path under the session's temporary folder where no file will ever be."""
    return tmp_path_factory.mktemp("isolated") / "does-not-exist"


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, _nowhere: Path) -> None:
    """Hide the developer's proxies, AWS settings and .netrc from the test."""
    for name in list(os.environ):
        if name.startswith("AWS_") or name.lower() in _PROXY_VARIABLES:
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(_nowhere))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(_nowhere))
    monkeypatch.setenv("NETRC", str(_nowhere))


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run the test in ``tmp_path``: pyvo-style calls write to the current folder."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


# ------------------------------------------------------------ HTTP servers ---


def _serve(server: FaultServer) -> Iterator[FaultServer]:
    server.start()
    try:
        yield server
    finally:
        server.stop()
    if server.errors:
        pytest.fail(f"FaultServer handler raised: {server.errors!r}")


@pytest.fixture
def http_server() -> Iterator[FaultServer]:
    """A fresh :class:`servers.FaultServer` on 127.0.0.1 for this test."""
    yield from _serve(FaultServer())


@pytest.fixture(params=[False, True], ids=["checksums-everywhere", "s3-semantics"])
def s3_server(request: pytest.FixtureRequest) -> Iterator[FaultServer]:
    """A FaultServer standing in for an S3 endpoint, in two S3 servers' ways.

    ``checksums-everywhere``: an object's ``x-amz-checksum-*`` headers on
    every answer, ranged or not (MinIO before its 2023 release that removed
    them from ranged answers); ``s3-semantics``: only on a HEAD or a
    whole-object GET with ``x-amz-checksum-mode: ENABLED``, and ``If-Range``
    ignored, as S3 does (``FaultServer(s3_semantics=True)``; moto 5.2 sends
    checksums as S3 does too, ``test_servers.py``).
    """
    yield from _serve(FaultServer(s3_semantics=request.param))


@pytest.fixture
def other_server() -> Iterator[FaultServer]:
    """A second origin (another port), for cross-origin redirects."""
    yield from _serve(FaultServer())


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    """A throw-away certificate authority (one per session: key generation costs)."""
    import trustme

    return trustme.CA()


@pytest.fixture
def https_server(ca: trustme.CA) -> Iterator[FaultServer]:
    """A FaultServer speaking TLS with a certificate for 127.0.0.1, localhost and ::1."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost", "::1").configure_cert(context)
    yield from _serve(FaultServer(ssl_context=context))


@pytest.fixture
def client_ssl_context(ca: trustme.CA) -> ssl.SSLContext:
    """A verifying client context that trusts ``ca`` (and nothing else)."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture
def raw_server_factory() -> Iterator[Callable[..., RawServer]]:
    """Start :class:`servers.RawServer` instances; all are stopped after the test.

    ``start(handler, ssl_context=None)``: with a context, the server speaks TLS.
    """
    started: list[RawServer] = []

    def start(handler: RawHandler, ssl_context: ssl.SSLContext | None = None) -> RawServer:
        server = RawServer(handler, ssl_context=ssl_context).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
    errors = [e for server in started for e in server.errors]
    if errors:
        pytest.fail(f"RawServer handler raised: {errors!r}")


# -------------------------------------------------------------------- moto ---


def _moto(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[str]:
    pytest.importorskip("moto.server", reason="moto[server] is not installed")
    log = tmp_path_factory.mktemp(name) / "moto.log"
    with MotoServer(str(log)) as moto:
        yield moto.url


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a moto S3 server process shared by the session.

    State persists between tests: use unique bucket names, or ``s3_endpoint``.
    """
    yield from _moto(tmp_path_factory, "moto")


@pytest.fixture
def s3_endpoint(moto_server: str) -> str:
    """Base URL of ``moto_server``, emptied (``/moto-api/reset``) for this test."""
    reset_moto(moto_server)
    return moto_server


@pytest.fixture(scope="session")
def _moto_auth_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from _moto(tmp_path_factory, "moto-auth")


@pytest.fixture
def moto_auth_server(_moto_auth_process: str) -> Iterator[str]:
    """Base URL of a second moto process, emptied and with auth off for this test.

    Populate it (``s3_client_for``), create principals (``create_moto_user``,
    ``assume_moto_role``), then ``enable_moto_auth(url)``: from there on
    only requests signed by those principals pass. Auth is turned off again
    after the test.
    """
    disable_moto_auth(_moto_auth_process)
    reset_moto(_moto_auth_process)
    yield _moto_auth_process
    disable_moto_auth(_moto_auth_process)

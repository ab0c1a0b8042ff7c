"""Edges of the public API met in review: output order, final errors, owned headers."""

from __future__ import annotations

import json
import os
import re
import socket
import ssl

import pytest

import pyvo_dl
from servers import FaultServer

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

DATA = bytes(range(256)) * 4000


def test_verbose_messages_do_not_land_inside_the_progress_line(
    http_server: FaultServer, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = http_server.add_file("/v/x.fits", DATA)
    http_server.set_fault("/v/x.fits", drop_after=100_000, times=1)
    pyvo_dl.http_download(url, verbose=True)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"Downloading {url} to x.fits ..."
    assert lines[1].startswith("Retry 1 of 5 in ")
    assert lines[1].count(url) == 1
    assert lines[-1] == f"Downloading {url} to x.fits ... [Done]"


def test_a_persistent_503_ends_as_http_status_error(http_server: FaultServer, in_tmp: Path) -> None:
    url = http_server.add_file("/busy.fits", DATA)
    http_server.set_fault("/busy.fits", status=503, retry_after="0")
    with pytest.raises(pyvo_dl.HTTPStatusError) as info:
        pyvo_dl.http_download(url, retries=2, progress=False)
    assert info.value.status == 503
    assert "after 3 attempts" in str(info.value)
    assert len(http_server.requests_for("/busy.fits", "GET")) == 3


def test_stale_lock_is_taken_without_waiting(
    http_server: FaultServer, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = http_server.add_file("/l/x.fits", DATA)
    dead = {"pyvo_dl": "lock", "host": socket.gethostname(), "pid": 2**22 + 12345, "token": "dead"}
    (in_tmp / "x.fits.lock").write_text(json.dumps(dead))
    pyvo_dl.http_download(url, verbose=True)
    assert "Waiting" not in capsys.readouterr().out
    assert not (in_tmp / "x.fits.lock").exists()
    assert (in_tmp / "x.fits").read_bytes() == DATA


@pytest.mark.parametrize("name", ["Range", "if-range", "If-Match", "Host", "Accept-Encoding"])
def test_headers_the_library_owns_are_refused(name: str, in_tmp: Path) -> None:
    with pytest.raises(ValueError, match=name):
        pyvo_dl.http_download("http://127.0.0.1:9/x.fits", headers={name: "bytes=5-"})


def test_ssl_context_with_session_is_refused(in_tmp: Path) -> None:
    requests = pytest.importorskip("requests")
    with pytest.raises(ValueError, match="ssl_context"):
        pyvo_dl.http_download(
            "https://127.0.0.1:9/x.fits", session=requests.Session(),
            ssl_context=ssl.create_default_context(),
        )  # fmt: skip


def test_no_resource_warning_at_exit(http_server: FaultServer, tmp_path: Path) -> None:
    import subprocess
    import sys

    url = http_server.add_file("/exit.fits", DATA)
    code = f"import pyvo_dl; pyvo_dl.http_download({url!r}, progress=False)"
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(pyvo_dl.__file__)))
    result = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error::ResourceWarning", "-c", code],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "ResourceWarning" not in result.stderr


def test_batch_request_builder_takes_http_downloads_parameters() -> None:
    """download_many's items build requests with http_download's own defaults.

    _http_request repeats http_download's signature (the public one must be
    spelled out for pyvo's users and the docs); this keeps the two equal. Its
    one extra, last, ``name_folder``, is where download_many names a file;
    the tree options (``recursive`` and its filters, last in http_download)
    make many requests, never one, and are not the builder's.
    """
    import inspect

    from pyvo_dl import _api

    public = dict(inspect.signature(_api.http_download).parameters)
    tree = [public.pop(name) for name in ("recursive", "include", "exclude", "max_depth")]
    assert all(p.kind == inspect.Parameter.KEYWORD_ONLY for p in tree)
    assert list(public)[-1] == "ssl_context"
    builder = dict(inspect.signature(_api._http_request).parameters)
    extra = builder.pop("name_folder")
    assert (extra.kind, extra.default) == (inspect.Parameter.KEYWORD_ONLY, None)
    assert [(p.name, p.kind, p.default) for p in builder.values()] == [
        (p.name, p.kind, p.default) for p in public.values()
    ]


def test_a_forgotten_keep_alive_pool_closes_its_idle_sockets(
    https_server: Any, ca: Any, tmp_path: Any
) -> None:
    """Each new TLS context gets a pool; past eight the oldest goes, its sockets closed.

    Before, the oldest pool was only dropped: its idle TLS sockets were left
    to the garbage collector (a ResourceWarning, an error in this suite),
    which a long-lived process with one context per run (pyvo-dl
    --ca-bundle, called again and again) met.
    """
    import gc
    import ssl
    import warnings

    import pyvo_dl

    url = https_server.add_file("/pool/x.fits", b"x" * 100)
    contexts = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        for i in range(10):
            context = ssl.create_default_context()
            ca.configure_trust(context)
            contexts.append(context)
            target = str(tmp_path / f"{i}.fits")
            pyvo_dl.http_download(url, target, ssl_context=context, progress=False)
        del contexts
        gc.collect()
    leaked = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaked == []


# -- numbers and text at the edges (issue 16.9) ---------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timeout": float("inf")}, "timeout must be a number of seconds above 0 and at most"),
        ({"timeout": 1e308}, "not 1e+308"),
        ({"timeout": 10**400}, "timeout must be a number of seconds"),
        ({"timeout": float("nan")}, "not nan"),
        ({"timeout": 0}, "not 0"),
        ({"timeout": -1.0}, "not -1.0"),
        ({"timeout": "60"}, "not '60'"),
        ({"retries": 10**400}, "retries must be a whole number from 0 to 100"),
        ({"retries": 101}, "not 101"),
        ({"retries": -1}, "not -1"),
        ({"connections": 10**6}, "connections must be a whole number from 1 to 64 or None"),
        ({"connections": 0}, "not 0"),
    ],
)
@pytest.mark.parametrize("function", ["http_download", "aws_download"])
def test_numbers_out_of_range_are_value_errors_naming_them(
    function: str, kwargs: dict[str, object], message: str, in_tmp: Path
) -> None:
    """Never a raw OverflowError, nor "unexpected error" at the first read."""
    source = "http://127.0.0.1:9/x.fits" if function == "http_download" else "s3://bkt/x.fits"
    with pytest.raises(ValueError, match=re.escape(message)):
        getattr(pyvo_dl, function)(source, progress=False, **kwargs)


def test_the_largest_timeout_is_accepted(http_server: FaultServer, in_tmp: Path) -> None:
    url = http_server.add_file("/t/x.fits", DATA)
    assert pyvo_dl.http_download(url, timeout=7 * 24 * 3600, progress=False) == "x.fits"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"workers": 10**6}, "workers must be a whole number from 1 to 256"),
        ({"workers": 0}, "workers must be a whole number from 1 to 256"),
        ({"max_per_host": 10**400}, "max_per_host must be a whole number from 1 to 256"),
    ],
)
def test_download_many_numbers_out_of_range(
    kwargs: dict[str, object], message: str, http_server: FaultServer, in_tmp: Path
) -> None:
    url = http_server.add_file("/n/x.fits", DATA)
    with pytest.raises(ValueError, match=re.escape(message)):
        pyvo_dl.download_many([url], progress=False, **kwargs)
    assert http_server.requests == []


def test_download_many_item_options_out_of_range_are_each_items_error(
    http_server: FaultServer, in_tmp: Path
) -> None:
    url = http_server.add_file("/n/y.fits", DATA)
    (result,) = pyvo_dl.download_many([url], progress=False, timeout=float("inf"))
    assert isinstance(result, ValueError)
    assert "timeout must be a number of seconds" in str(result)
    assert http_server.requests == []


@pytest.mark.parametrize("function", ["http_download", "download"])
def test_a_url_with_a_lone_surrogate_is_a_value_error_naming_it(function: str) -> None:
    url = "http://127.0.0.1:9/obs\udc80.fits"
    with pytest.raises(ValueError, match="lone surrogate") as info:
        getattr(pyvo_dl, function)(url, progress=False)
    assert repr(url) in str(info.value)


@pytest.mark.parametrize(
    "name", ["", "X Custom", "X-Custom:", "X:Custom", "X\tTab", "X\x01", "Caf\u00e9", " X"]
)
def test_header_names_must_be_tokens(name: str, http_server: FaultServer, in_tmp: Path) -> None:
    url = http_server.add_file("/h/x.fits", DATA)
    with pytest.raises(ValueError, match="is not a valid field name") as info:
        pyvo_dl.http_download(url, headers={name: "1"}, progress=False)
    assert repr(name) in str(info.value)
    assert http_server.requests == []


@pytest.mark.parametrize("value", ["a\r\nX-Evil: 1", "a\x00", "a\x07b"])
def test_header_values_without_controls(value: str, in_tmp: Path) -> None:
    with pytest.raises(ValueError, match="control character"):
        pyvo_dl.http_download("http://127.0.0.1:9/x.fits", headers={"X-A": value}, progress=False)


def test_a_header_value_may_hold_tabs_and_spaces(http_server: FaultServer, in_tmp: Path) -> None:
    url = http_server.add_file("/h/ok.fits", DATA)
    pyvo_dl.http_download(url, headers={"X-Note": "a b\tc"}, progress=False)
    (request,) = http_server.requests_for("/h/ok.fits", "GET")
    assert request.headers["x-note"] == "a b\tc"

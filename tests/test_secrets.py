"""Passwords are never shown (SPEC §3.7, docs/security.md; issue 12.8).

A password in a URL (``http://user:password@host/``), in an
``endpoint_url=``, in ``auth=`` or in an ``Authorization`` header is sent
where it belongs and nowhere else: not in an error message, its attributes,
its chained causes or its traceback, not in a warning, a log record, a
``verbose`` line, a ``download_many`` result or a line of the command. Every
failing case below runs against a loopback server (or a port where nothing
listens), and everything it produced is searched for the password, plain,
percent-encoded and inside a Basic header.
"""

from __future__ import annotations

import base64
import os
import pickle
import subprocess
import sys
import traceback
import urllib.parse
import warnings

import pytest

import pyvo_dl
from pyvo_dl import _cli

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path
    from typing import Any

    from servers import FaultServer

SECRET = "Sup3r-Secret-77"
DATA = bytes(range(256)) * 8
PATH = "/data/image.fits"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Passwords that no URL parser accepts unescaped (urllib, urllib3, curl and
#: browsers all end the host at '#', '?' or '/'): refused, and still hidden.
AWKWARD = [f"pa#{SECRET}", f"pa?{SECRET}", f"pa/{SECRET}", f"{SECRET}@x", f"x y{SECRET}"]


def forbidden(password: str) -> list[str]:
    """Every form of ``password`` that must not be seen."""
    basic = base64.b64encode(f"astro:{password}".encode()).decode()
    forms = {password, urllib.parse.quote(password, safe=""), basic, SECRET}
    return sorted(forms)


def exception_texts(exc: BaseException) -> list[str]:
    """What a user can see of an exception: message, repr, traceback, attributes, pickle."""
    texts = [str(exc), repr(exc), "".join(traceback.format_exception(type(exc), exc, None))]
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        texts.append("".join(traceback.format_exception(type(current), current, None)))
        texts.extend(repr(v) for v in vars(current).values())
        texts.extend(repr(a) for a in current.args)
        current = current.__cause__ or current.__context__
    try:
        texts.append(repr(pickle.loads(pickle.dumps(exc))))
    except Exception as e:  # a public exception must pickle; others may not
        texts.append(repr(e))
    return texts


class Seen:
    """Everything one failing case printed, logged, warned and raised."""

    def __init__(
        self,
        capsys: pytest.CaptureFixture[str] | None = None,
        caplog: pytest.LogCaptureFixture | None = None,
        caught: list[warnings.WarningMessage] | None = None,
    ) -> None:
        self.texts: list[str] = []
        self._capsys = capsys
        self._caplog = caplog
        self._caught = caught if caught is not None else []

    def add(self, *texts: str) -> None:
        self.texts.extend(texts)

    def _collect(self) -> None:
        if self._capsys is not None:
            out, err = self._capsys.readouterr()
            self.add(out, err)
        if self._caplog is not None:
            self.add(self._caplog.text)
            self._caplog.clear()
        self.add(*(str(w.message) for w in self._caught))
        del self._caught[:]

    def check(self, password: str) -> None:
        self._collect()
        everything = "\n".join(self.texts)
        assert everything.strip(), "the case produced nothing to search"
        for form in forbidden(password):
            assert form not in everything, f"{form!r} shown in:\n{everything}"


@pytest.fixture
def seen(capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> Iterator[Seen]:
    caplog.set_level("DEBUG", logger="pyvo_dl")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield Seen(capsys, caplog, caught)


def run(seen: Seen, call: Callable[[], Any]) -> Any:
    """Run ``call``; keep what it returned or raised for the search."""
    try:
        result = call()
    except Exception as exc:
        seen.add(*exception_texts(exc))
        return exc
    if isinstance(result, list):
        for item in result:
            if isinstance(item, BaseException):
                seen.add(*exception_texts(item))
            else:
                seen.add(repr(item))
    else:
        seen.add(repr(result))
    return result


def with_password(url: str, password: str = SECRET) -> str:
    return url.replace("http://", f"http://astro:{password}@", 1)


def test_missing_file(http_server: FaultServer, tmp_path: Path, seen: Seen) -> None:
    url = with_password(http_server.url("/missing.fits"))
    error = run(seen, lambda: pyvo_dl.http_download(url, str(tmp_path / "a"), verbose=True))
    assert isinstance(error, pyvo_dl.HTTPStatusError)
    seen.check(SECRET)


def test_nothing_listening(tmp_path: Path, seen: Seen) -> None:
    url = f"http://astro:{SECRET}@127.0.0.1:1/x.fits"
    error = run(seen, lambda: pyvo_dl.http_download(url, str(tmp_path / "a"), retries=0))
    assert isinstance(error, pyvo_dl.DownloadError)
    assert "127.0.0.1:1" in str(error)
    seen.check(SECRET)


@pytest.mark.parametrize("password", AWKWARD)
def test_unescaped_characters_in_the_password(
    http_server: FaultServer, tmp_path: Path, seen: Seen, password: str
) -> None:
    url = with_password(http_server.add_file(PATH, DATA), password)
    run(seen, lambda: pyvo_dl.http_download(url, str(tmp_path / "a"), retries=0, verbose=True))
    seen.check(password)


@pytest.mark.parametrize("password", [SECRET, *AWKWARD])
def test_download_of_another_scheme(tmp_path: Path, seen: Seen, password: str) -> None:
    error = run(seen, lambda: pyvo_dl.download(f"ftp://astro:{password}@127.0.0.1/x.fits"))
    assert isinstance(error, ValueError)
    assert "ftp://astro:" in str(error)  # the URL is named, its password is not
    seen.check(password)


def test_download_many_items(http_server: FaultServer, tmp_path: Path, seen: Seen) -> None:
    good = with_password(http_server.add_file(PATH, DATA))
    items: list[Any] = [
        good,
        with_password(http_server.url("/missing.fits")),
        with_password(http_server.url("/folder/")),
        (with_password(http_server.url("/x.fits"), f"pa#{SECRET}"), "x.fits"),
        {"source": good, "local_filepath": "c.fits", "checksum": "md5:" + "0" * 32},
        {"source": good, "bad key": 1},
        (good, "image.fits"),  # the same target as the first item
    ]
    results = run(seen, lambda: pyvo_dl.download_many(items, tmp_path, retries=0, verbose=True))
    assert results[0] == str(tmp_path / "image.fits")
    assert all(isinstance(r, Exception) for r in results[1:]), results
    seen.check(SECRET)


@pytest.mark.parametrize(
    "endpoint",
    [
        f"http://astro:{SECRET}@127.0.0.1:1",
        f"http://astro:pa#{SECRET}@127.0.0.1:1",
        f"ftp://astro:{SECRET}@127.0.0.1:1",
    ],
)
def test_endpoint_url_with_credentials(
    tmp_path: Path, seen: Seen, monkeypatch: pytest.MonkeyPatch, endpoint: str
) -> None:
    target = str(tmp_path / "a")
    error = run(seen, lambda: pyvo_dl.aws_download("s3://bkt/k", target, endpoint_url=endpoint))
    assert isinstance(error, ValueError)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
    error = run(seen, lambda: pyvo_dl.aws_download("s3://bkt/k", target, verbose=True))
    assert isinstance(error, ValueError)
    seen.check(endpoint.split(":")[2].rpartition("@")[0])


@pytest.mark.parametrize(
    "auth", [("astro", SECRET.encode()), ("astro", SECRET, "extra"), ("as:tro", SECRET)]
)
def test_a_malformed_auth_is_not_repeated(tmp_path: Path, seen: Seen, auth: Any) -> None:
    error = run(seen, lambda: pyvo_dl.http_download("http://127.0.0.1:1/x", "a", auth=auth))
    assert isinstance(error, ValueError)
    seen.check(SECRET)


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": b"Basic " + base64.b64encode(f"astro:{SECRET}".encode())},
        {"Authorization": f"Bearer {SECRET}\r\nX-Evil: 1"},
        {"Cookie": ("session", SECRET)},
    ],
)
def test_a_malformed_credential_header_is_not_repeated(
    tmp_path: Path, seen: Seen, headers: Any
) -> None:
    error = run(seen, lambda: pyvo_dl.http_download("http://127.0.0.1:1/x", "a", headers=headers))
    assert isinstance(error, ValueError)
    seen.check(SECRET)


def test_checksum_mismatch_and_warnings(
    http_server: FaultServer, tmp_path: Path, seen: Seen
) -> None:
    url = with_password(http_server.add_file(PATH, DATA, content_type="text/html"))
    (tmp_path / "image.fits").write_bytes(b"old")
    error = run(
        seen,
        lambda: pyvo_dl.http_download(
            url, str(tmp_path / "image.fits"), checksum="md5:" + "0" * 32, verbose=True
        ),
    )
    assert isinstance(error, pyvo_dl.IntegrityError)
    seen.check(SECRET)


# -- the command line ---------------------------------------------------------------


def cli(seen: Seen, argv: list[str]) -> int:
    code = _cli.main(argv)
    seen.add(f"exit {code}")
    return code


def test_command_line_failures(
    http_server: FaultServer, tmp_path: Path, seen: Seen, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    good = with_password(http_server.add_file(PATH, DATA))
    missing = with_password(http_server.url("/missing.fits"))
    awkward = with_password(http_server.url("/x.fits"), f"pa#{SECRET}")
    listing = tmp_path / "list.txt"
    listing.write_text(f"{good}\tout/a.fits\n{missing}\n{awkward}\tout/b.fits\n")
    assert cli(seen, ["-v", missing]) == 1
    assert cli(seen, ["-v", "--retries", "0", "-i", str(listing), "-d", "got"]) == 1
    assert cli(seen, ["-v", awkward]) in (1, 2)
    assert cli(seen, [f"ftp://astro:{SECRET}@127.0.0.1/x.fits"]) == 2
    assert cli(seen, ["-v", "--endpoint-url", f"http://a:{SECRET}@127.0.0.1:1", "s3://bkt/k"]) in (
        1,
        2,
    )
    assert cli(seen, ["--no-such-option", good]) == 2
    seen.check(SECRET)
    seen.check(f"pa#{SECRET}")


def test_the_installed_command_with_verbose_logging(
    http_server: FaultServer, tmp_path: Path
) -> None:
    """The real entry point, with -vv (every log record) and a traceback-free exit."""
    missing = with_password(http_server.url("/missing.fits"))
    redirect = with_password(http_server.add_redirect("/moved.fits", "/missing.fits"))
    env = dict(os.environ, PYTHONPATH=ROOT)
    done = subprocess.run(
        [sys.executable, "-m", "pyvo_dl", "-vv", "-d", str(tmp_path), missing, redirect],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    record = Seen()
    record.add(done.stdout, done.stderr)
    record.check(SECRET)

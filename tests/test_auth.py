"""Tests for pyvo_dl._auth: the Basic header and .netrc lookup from real files."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest

from pyvo_dl import _auth
from pyvo_dl._auth import basic_auth_header, netrc_credentials

NETRC = """\
machine archive.example.org
    login alice
    password s3cret

machine Mixed.Example.ORG login carol password pw3

machine ::1 login ipv6 password pw6

default login anonymous password guest@example.org
"""

NO_DEFAULT = "machine archive.example.org login alice password s3cret\n"

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")


def write_netrc(path: Path | str, text: str, mode: int = 0o600) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(path, mode)
    return os.fspath(path)


@pytest.mark.parametrize(
    ("user", "password", "expected"),
    [
        ("Aladdin", "open sesame", "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
        ("user", "", "Basic dXNlcjo="),
        ("", "pw", "Basic OnB3"),
        ("user", "pa:ss", "Basic dXNlcjpwYTpzcw=="),
        ("ü", "pässwörd", "Basic w7w6cMOkc3N3w7ZyZA=="),
    ],
)
def test_basic_auth_header(user: str, password: str, expected: str) -> None:
    assert basic_auth_header(user, password) == expected


def test_basic_auth_header_refuses_colon_in_user_without_showing_password() -> None:
    with pytest.raises(ValueError, match="'a:b'") as info:
        basic_auth_header("a:b", "topsecret")
    assert "topsecret" not in str(info.value)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("archive.example.org", ("alice", "s3cret")),
        ("archive.example.org:8443", ("alice", "s3cret")),
        ("ARCHIVE.example.org", ("alice", "s3cret")),
        ("mixed.example.org", ("carol", "pw3")),
        ("Mixed.Example.ORG:80", ("carol", "pw3")),
        ("[::1]:8080", ("ipv6", "pw6")),
        ("::1", ("ipv6", "pw6")),
        ("other.example.org", ("anonymous", "guest@example.org")),
        ("127.0.0.1:8000", ("anonymous", "guest@example.org")),
    ],
)
def test_netrc_from_env_with_default_fallback(
    tmp_path: Path, host: str, expected: tuple[str, str]
) -> None:
    path = write_netrc(tmp_path / "netrc", NETRC)
    assert netrc_credentials(host, env={"NETRC": path}) == expected


def test_netrc_without_matching_entry_or_default(tmp_path: Path) -> None:
    path = write_netrc(tmp_path / "netrc", NO_DEFAULT)
    assert netrc_credentials("archive.example.org", env={"NETRC": path}) == ("alice", "s3cret")
    assert netrc_credentials("other.example.org", env={"NETRC": path}) is None


def test_netrc_default_from_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_netrc(tmp_path / "netrc", NO_DEFAULT)
    monkeypatch.setenv("NETRC", path)
    assert netrc_credentials("archive.example.org") == ("alice", "s3cret")


def test_netrc_in_home(tmp_path: Path) -> None:
    write_netrc(tmp_path / ".netrc", NO_DEFAULT)
    home = os.fspath(tmp_path)
    assert netrc_credentials("archive.example.org", env={}, home=home) == ("alice", "s3cret")
    # An empty $NETRC counts as unset.
    assert netrc_credentials("archive.example.org", env={"NETRC": ""}, home=home) == (
        "alice",
        "s3cret",
    )


@pytest.mark.parametrize(
    ("env", "files"),
    [
        ({"NETRC": "{tmp}/does-not-exist"}, []),
        ({}, []),
        ({}, ["_netrc"]),  # _netrc is a Windows name only
        ({"NETRC": "{tmp}/a-folder"}, []),
    ],
)
def test_missing_netrc_gives_none(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, env: dict[str, str], files: list[str]
) -> None:
    tmp = os.fspath(tmp_path)
    os.mkdir(os.path.join(tmp, "a-folder"))
    for name in files:
        write_netrc(os.path.join(tmp, name), NETRC)
    env = {k: v.format(tmp=tmp) for k, v in env.items()}
    with caplog.at_level(logging.DEBUG):
        assert netrc_credentials("archive.example.org", env=env, home=tmp) is None


@pytest.mark.parametrize(
    ("os_name", "files", "expected"),
    [
        ("posix", [".netrc"], ".netrc"),
        ("posix", ["_netrc"], None),
        ("nt", [".netrc"], ".netrc"),
        ("nt", ["_netrc"], "_netrc"),
        ("nt", [".netrc", "_netrc"], ".netrc"),
        ("nt", [], None),
    ],
)
def test_netrc_file_names(
    tmp_path: Path, os_name: str, files: list[str], expected: str | None
) -> None:
    home = os.fspath(tmp_path)
    for name in files:
        write_netrc(os.path.join(home, name), NETRC)
    found = _auth._netrc_path({}, home, os_name)
    assert found == (os.path.join(home, expected) if expected else None)


def test_netrc_env_path_expands_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = os.fspath(tmp_path)
    monkeypatch.setenv("HOME", home)
    monkeypatch.setenv("USERPROFILE", home)
    assert _auth._netrc_path({"NETRC": "~/my.netrc"}, None) == os.path.join(home, "my.netrc")


@pytest.mark.parametrize(
    "text",
    [
        "this is not a netrc file\n",
        "machine h login u frobnicate x\n",
        "machine\n",
    ],
)
def test_malformed_netrc_gives_none_and_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, text: str
) -> None:
    path = write_netrc(tmp_path / "netrc", text)
    with caplog.at_level(logging.WARNING, logger="pyvo_dl"):
        assert netrc_credentials("h", env={"NETRC": path}) is None
        assert netrc_credentials("h", env={"NETRC": path}) is None
    records = [r for r in caplog.records if r.name == "pyvo_dl"]
    # Once per version of the file, not once per request.
    assert len(records) == 1
    assert path in records[0].getMessage()
    assert records[0].levelno == logging.WARNING


def test_undecodable_netrc_does_not_raise(tmp_path: Path) -> None:
    path = os.fspath(tmp_path / "netrc")
    with open(path, "wb") as f:
        f.write(b"machine h login u password \xff\xfe\xfa\n")
    os.chmod(path, 0o600)
    result = netrc_credentials("h", env={"NETRC": path})
    assert result is None or result[0] == "u"


@posix_only
@pytest.mark.parametrize("mode", [0o600, 0o640, 0o644])
@pytest.mark.parametrize("via", ["NETRC", "home"])
def test_netrc_permissions_do_not_matter(tmp_path: Path, mode: int, via: str) -> None:
    # The stdlib refuses a group/world-readable ~/.netrc holding a password
    # when called without a path (3.8-3.10 always, 3.11+ unless the login is
    # "anonymous"); we always pass the path, as requests does and curl does.
    home = os.fspath(tmp_path)
    path = write_netrc(os.path.join(home, ".netrc"), NO_DEFAULT, mode)
    env = {"NETRC": path} if via == "NETRC" else {}
    assert netrc_credentials("archive.example.org", env=env, home=home) == ("alice", "s3cret")


def test_parsed_files_are_cached_by_mtime_and_size(tmp_path: Path) -> None:
    path = write_netrc(tmp_path / "netrc", "machine h login aaaa password pppp\n")
    env = {"NETRC": path}
    st = os.stat(path)
    assert netrc_credentials("h", env=env) == ("aaaa", "pppp")
    # Same size and modification time: the cached result is used.
    write_netrc(path, "machine h login bbbb password qqqq\n")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert netrc_credentials("h", env=env) == ("aaaa", "pppp")
    # A new modification time: the file is read again.
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert netrc_credentials("h", env=env) == ("bbbb", "qqqq")
    # A new size: read again too.
    write_netrc(path, "machine h login cc password rr\n")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert netrc_credentials("h", env=env) == ("cc", "rr")


def test_a_fixed_file_is_read_again(tmp_path: Path) -> None:
    path = write_netrc(tmp_path / "netrc", "garbage\n")
    env = {"NETRC": path}
    assert netrc_credentials("h", env=env) is None
    write_netrc(path, "machine h login u password p\n")
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert netrc_credentials("h", env=env) == ("u", "p")


@pytest.mark.skipif(sys.version_info < (3, 11), reason="3.8-3.10 refuse entries without password")
def test_entry_without_password(tmp_path: Path) -> None:
    path = write_netrc(tmp_path / "netrc", "machine h login u\nmachine e\n")
    assert netrc_credentials("h", env={"NETRC": path}) == ("u", "")
    assert netrc_credentials("e", env={"NETRC": path}) is None

"""The ``pyvo-dl`` command line (SPEC §5) against real loopback servers.

Most tests call ``main([...])`` in this process and read what it printed
with ``capsys``; a few run ``python -m pyvo_dl`` (and the console script's
``sys.exit(main())``) as a subprocess, to prove the real entry points, their
exit statuses, standard input and Ctrl-C.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import logging
import os
import re
import signal
import subprocess
import sys
import time

import pytest

import pyvo_dl
from pyvo_dl import _api, _cli
from pyvo_dl._cli import format_failure, main, parse_list_line, parse_shard
from servers import s3_client_for

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

    from servers import FaultServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = bytes(range(256)) * 40  # 10 KiB, every offset distinguishable
PATH = "/data/image.fits"
BUCKET = "cli-bucket"
SUMMARY = re.compile(
    r"^pyvo-dl: (?P<downloaded>\d+) downloaded, (?P<resumed>\d+) resumed, "
    r"(?P<present>\d+) already present, (?P<failed>\d+) failed; "
    r"(?:nothing transferred \(\S+( s)?\)|(?P<size>\S+ \S+) in \S+( s)? \(\S+ \S+/s\))$",
    re.M,
)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def counts(stderr: str) -> dict[str, Any]:
    """The summary line's numbers; it must be the last line, and the only one."""
    matches = list(SUMMARY.finditer(stderr))
    assert len(matches) == 1, f"not one summary line in {stderr!r}"
    match = matches[0]
    assert stderr.endswith(match.group(0) + "\n"), "the summary is not the last line"
    names = ("downloaded", "resumed", "present", "failed")
    found: dict[str, Any] = {name: int(match.group(name)) for name in names}
    found["size"] = match.group("size") or "0 B"
    return found


def failure_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("pyvo-dl: failed: ")]


def assert_names_once(line: str, source: str) -> None:
    """A failure line names its source exactly once (issue 16.8)."""
    assert line.startswith("pyvo-dl: failed: "), line
    assert line.count(source) == 1, line


def summary(stderr: str) -> tuple[int, str, int]:
    """``(files in place, bytes transferred, failed)`` from the one summary line."""
    found = counts(stderr)
    in_place = found["downloaded"] + found["resumed"] + found["present"]
    return in_place, found["size"], found["failed"]


def add_files(server: FaultServer, count: int, prefix: str = "/data/f") -> list[str]:
    """Serve ``count`` distinct files; return their URLs in order."""
    return [server.add_file(f"{prefix}{i:02d}.fits", DATA + bytes([i])) for i in range(count)]


def run_cli(
    args: list[str], cwd: Path, *, input: str | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """``python -m pyvo_dl ARGS`` in ``cwd``, with this checkout first on the path."""
    return subprocess.run(
        [sys.executable, "-m", "pyvo_dl", *args],
        cwd=str(cwd), env=_child_env(), input=input,
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    return env


# --------------------------------------------------------- pure helpers ---


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("https://h/a.fits\n", ("https://h/a.fits", None, None)),
        ("  https://h/a.fits  \r\n", ("https://h/a.fits", None, None)),
        ("https://h/a.fits out/b.fits", ("https://h/a.fits", "out/b.fits", None)),
        ("https://h/a.fits \t out/b c.fits", ("https://h/a.fits", "out/b c.fits", None)),
        ("s3://b/obs 3052/notes.txt", ("s3://b/obs 3052/notes.txt", None, None)),
        ("s3://b/obs 3052/notes.txt\tnotes.txt", ("s3://b/obs 3052/notes.txt", "notes.txt", None)),
        ("S3://b/k#1.fits", ("S3://b/k#1.fits", None, None)),
        ("https://h/a.fits#frag", ("https://h/a.fits#frag", None, None)),
        # SOURCE [PATH] [ALG:HEX] (issue 12.4): the last field, when it is a checksum.
        (
            "https://h/a.fits out/a.fits sha256:" + "ab" * 32,
            ("https://h/a.fits", "out/a.fits", "sha256:" + "ab" * 32),
        ),
        ("https://h/a.fits\tMD5:" + "0" * 32, ("https://h/a.fits", None, "MD5:" + "0" * 32)),
        (
            "s3://b/obs 3052/n.txt\tn.txt\tcrc32c:e3069283",
            ("s3://b/obs 3052/n.txt", "n.txt", "crc32c:e3069283"),
        ),
        ("s3://b/obs 3052/n.txt crc32:e3069283", ("s3://b/obs 3052/n.txt", None, "crc32:e3069283")),
        # A bad digest with a known algorithm is still the checksum (and that item's error).
        ("https://h/a.fits sha256:zz", ("https://h/a.fits", None, "sha256:zz")),
        # Not an algorithm, or a path: the local path.
        ("https://h/a.fits out:a.fits", ("https://h/a.fits", "out:a.fits", None)),
        ("https://h/a.fits md5:x/y", ("https://h/a.fits", "md5:x/y", None)),
        ("", None),
        ("   \n", None),
        ("# comment", None),
        ("   # indented comment https://h/a.fits", None),
    ],
)
def test_parse_list_line(line: str, expected: tuple[str, str | None, str | None] | None) -> None:
    assert parse_list_line(line) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1/1", (1, 1)), ("1/3", (1, 3)), ("3/3", (3, 3)), ("10/64", (10, 64))],
)
def test_parse_shard(text: str, expected: tuple[int, int]) -> None:
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text", ["0/3", "4/3", "x", "1/0", "-1/3", "1/", "/3", "1/3/5", ""])
def test_parse_shard_refuses(text: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(text))):
        parse_shard(text)


@pytest.mark.parametrize(
    ("source", "message", "expected"),
    [
        (
            "https://h/a.fits",
            "HTTP 404 (not found) for https://h/a.fits",
            "failed: HTTP 404 (not found) for https://h/a.fits",
        ),
        ("https://h/a.fits", "no space\nleft", "failed: https://h/a.fits: no space left"),
        (
            "s3://b/k.fits",
            "NoSuchKey: s3://b/k.fits does not exist",
            "failed: NoSuchKey: s3://b/k.fits does not exist",
        ),
    ],
)
def test_format_failure_names_the_source_once(source: str, message: str, expected: str) -> None:
    assert format_failure(source, OSError(message)) == expected


# ------------------------------------------------------- help and version ---


EXAMPLES = [
    "pyvo-dl https://heasarc.gsfc.nasa.gov/FTP/chandra/",
    "pyvo-dl -d data s3://nasa-heasarc/chandra/",
    "pyvo-dl -i urls.txt -j 16 -d data",
    "--shard $((SLURM_ARRAY_TASK_ID+1))/$SLURM_ARRAY_TASK_COUNT",
    "pyvo-dl --endpoint-url https://s3.example.org --profile",
    "pyvo-dl --recursive -d obs3052 s3://",
]


def test_help_has_every_option_and_the_examples(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.startswith("usage: pyvo-dl ")
    for option in (
        "-i, --input FILE", "-o, --output PATH", "-d, --dest-dir DIR", "--shard I/N",
        "--recursive", "-j, --jobs N", "--connections N", "--checksum ALGO:HEX",
        "--no-resume", "--timeout SECONDS", "--retries N", "--profile NAME",
        "--endpoint-url URL", "--region NAME", "-q, --quiet", "-v, --verbose",
        "--version", "-h, --help",
    ):  # fmt: skip
        assert option in out
    for example in EXAMPLES:
        assert example in out
    wrapped = [line for line in out.splitlines() if not line.startswith("  pyvo-dl ")]
    assert max(len(line) for line in wrapped) <= _cli.HELP_WIDTH


def test_help_ignores_the_terminal_width(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    main(["--help"])
    wide = capsys.readouterr().out
    monkeypatch.setenv("COLUMNS", "40")
    main(["-h"])
    assert capsys.readouterr().out == wide


def test_docs_cli_md_is_current() -> None:
    """docs/cli.md is docs/gen_cli.py's rendering of today's --help."""
    spec = importlib.util.spec_from_file_location(
        "gen_cli", os.path.join(ROOT, "docs", "gen_cli.py")
    )
    assert spec is not None
    assert spec.loader is not None
    gen_cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen_cli)
    with open(os.path.join(ROOT, "docs", "cli.md"), encoding="utf-8") as f:
        current = f.read()
    assert current == gen_cli.render(), "docs/cli.md is out of date: run python docs/gen_cli.py"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr() == (f"pyvo-dl {pyvo_dl.__version__}\n", "")


# ---------------------------------------------------------- usage errors ---


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "no source given"),
        (["-q"], "no source given"),
        (["-i", "{empty}"], "no source given"),
        (["-i", "{missing}"], "cannot read the list"),
        (["-o", "x.fits", "{url}", "{url2}"], "-o names one file, but 2 sources"),
        (["-o", "x.fits", "-i", "{two}"], "-o names one file, but 2 sources"),
        (["-o", "x.fits", "--shard", "1/2", "{url}", "{url2}"], "-o names one file, but 2"),
        (["--shard", "0/3", "{url}"], "argument --shard: '0/3'"),
        (["--shard", "4/3", "{url}"], "argument --shard: '4/3'"),
        (["--shard", "x", "{url}"], "argument --shard: 'x'"),
        (["--shard", "1/0", "{url}"], "argument --shard: '1/0'"),
        (["--checksum", "sha256:zz", "{url}"], "--checksum: checksum 'sha256:zz'"),
        (["--checksum", "nosuchalgo:00", "{url}"], "unknown algorithm 'nosuchalgo'"),
        (["--checksum", "sha256", "{url}"], "not of the form 'algorithm:hexdigest'"),
        (["--checksum", "md5:" + "0" * 32, "{url}", "{url2}"], "give exactly one source"),
        (["-j", "0", "{url}"], "argument -j/--jobs: the value must be at least 1"),
        (["-j", "many", "{url}"], "argument -j/--jobs: the value must be a whole number"),
        (["--connections", "0", "{url}"], "argument --connections"),
        (["--timeout", "0", "{url}"], "argument --timeout: must be a number of seconds above 0"),
        (["--timeout", "1e308", "{url}"], "at most 604800 (a week), not '1e308'"),
        (["-j", "100000", "{url}"], "argument -j/--jobs: the value must be at most 256"),
        (["--connections", "65", "{url}"], "argument --connections: the value must be at most 64"),
        (["--retries", "1000", "{url}"], "argument --retries: the value must be at most 100"),
        (["--timeout", "nan", "{url}"], "argument --timeout"),
        (["--timeout", "inf", "{url}"], "argument --timeout"),
        (["--retries", "-1", "{url}"], "argument --retries: the value must be at least 0"),
        (["-q", "-v", "{url}"], "not allowed with argument"),
        (["--no-such-option", "{url}"], "unrecognized arguments"),
        # Abbreviations are refused: --time could mean --timeout today and
        # something else tomorrow (issue 16.8).
        (["--time", "5", "{url}"], "unrecognized arguments: --time"),
        (["--rec", "{url}"], "unrecognized arguments: --rec"),
        # A bad or missing scheme: exit 2 before any request, with a suggestion.
        (
            ["ftp://127.0.0.1/x.fits"],
            (
                "'ftp://127.0.0.1/x.fits' is not an http(s):// URL or s3:// URI; "
                "did you mean 'https://127.0.0.1/x.fits'?"
            ),
        ),
        (
            ["heasarc.gsfc.nasa.gov/FTP/x.fits"],
            "did you mean 'https://heasarc.gsfc.nasa.gov/FTP/x.fits'?",
        ),
        (["htps://127.0.0.1/x.fits", "{url}"], "did you mean 'https://127.0.0.1/x.fits'?"),
        (["-i", "{bad}"], "'127.0.0.1/x.fits' (line 3 of bad.txt) is not an http(s):// URL"),
        (["--ca-bundle", "missing.pem", "{url}"], "--ca-bundle: cannot use 'missing.pem'"),
        (["--ca-bundle", "empty.txt", "{url}"], "--ca-bundle: cannot use 'empty.txt'"),
    ],
)
def test_usage_errors_exit_2(
    http_server: FaultServer,
    in_tmp: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    url = http_server.add_file(PATH, DATA)
    (in_tmp / "empty.txt").write_text("# nothing here\n\n")
    (in_tmp / "two.txt").write_text(f"{url}\n{url}?copy=2\n")
    (in_tmp / "bad.txt").write_text(f"{url}\n# a comment\n127.0.0.1/x.fits\n")
    names = {
        "url": url, "url2": http_server.add_file("/data/other.fits", DATA),
        "empty": "empty.txt", "missing": "missing.txt", "two": "two.txt", "bad": "bad.txt",
    }  # fmt: skip
    assert main([a.format(**names) for a in args]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "usage: pyvo-dl" in err
    assert message in err
    assert err.rstrip("\n").splitlines()[-1].startswith("pyvo-dl: error: ")
    assert http_server.requests == []
    assert sorted(os.listdir(in_tmp)) == ["bad.txt", "empty.txt", "two.txt"]


# ------------------------------------------------------------ one source ---


def test_one_url_into_the_current_folder(
    http_server: FaultServer, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = http_server.add_file(PATH, DATA)
    assert main([url]) == 0
    assert (in_tmp / "image.fits").read_bytes() == DATA
    out, err = capsys.readouterr()
    assert out == f"Downloading {url} to image.fits ... [Done]\n"
    assert summary(err) == (1, "10.0 KiB", 0)
    assert err.count("\n") == 1


def test_dest_dir_for_one_source(
    http_server: FaultServer, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """-d DIR is created; the name still comes from the server when the URL has none."""
    http_server.add_file("/cutout", DATA)
    http_server.set_fault("/cutout", content_disposition='attachment; filename="cut.fits"')
    assert main(["-d", "out/sub", http_server.url("/cutout?ra=10&dec=20")]) == 0
    assert (in_tmp / "out" / "sub" / "cut.fits").read_bytes() == DATA
    assert os.getcwd() == str(in_tmp)
    assert summary(capsys.readouterr().err) == (1, "10.0 KiB", 0)


@pytest.mark.parametrize(
    ("args", "written"),
    [
        (["-o", "named.fits"], "named.fits"),
        (["-o", "new/dir/named.fits"], "new/dir/named.fits"),
        (["-o", "named.fits", "-d", "out"], "out/named.fits"),
        (["-o", "{abs}", "-d", "out"], "abs.fits"),
    ],
)
def test_output_path(http_server: FaultServer, in_tmp: Path, args: list[str], written: str) -> None:
    url = http_server.add_file(PATH, DATA)
    args = [a.format(abs=in_tmp / "abs.fits") for a in args]
    assert main(["-q", *args, url]) == 0
    assert (in_tmp / written).read_bytes() == DATA
    assert not (in_tmp / "image.fits").exists()


def test_checksum_good(http_server: FaultServer, in_tmp: Path) -> None:
    url = http_server.add_file(PATH, DATA)
    assert main(["-q", "--checksum", sha256(DATA), url]) == 0
    assert (in_tmp / "image.fits").read_bytes() == DATA


def test_checksum_bad_is_a_failure(
    http_server: FaultServer, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = http_server.add_file(PATH, DATA)
    assert main(["--checksum", sha256(b"other bytes"), url]) == 1
    err = capsys.readouterr().err
    (line,) = failure_lines(err)
    assert_names_once(line, url)
    assert "sha256 mismatch" in line
    # The bytes did move: the summary says so, and that nothing is in place.
    assert summary(err) == (0, "10.0 KiB", 1)
    assert not (in_tmp / "image.fits").exists()


@pytest.mark.parametrize(
    ("path", "source", "reason"),
    [
        (PATH, "{base}/data/missing.fits", "not found"),
        ("/data/", "{base}/data/", "cannot derive a file name"),
    ],
)
def test_one_failure_exits_1(
    http_server: FaultServer,
    in_tmp: Path,
    capsys: pytest.CaptureFixture[str],
    path: str,
    source: str,
    reason: str,
) -> None:
    """A refused download, and a ValueError of the library for one item, are failures."""
    http_server.add_file(path, DATA)
    source = source.format(base=http_server.base_url)
    assert main([source]) == 1
    err = capsys.readouterr().err
    (line,) = failure_lines(err)
    assert_names_once(line, source)
    assert reason in line
    assert summary(err) == (0, "0 B", 1)
    assert "Traceback" not in err
    assert os.listdir(in_tmp) == []


# ------------------------------------------------------- several sources ---


def test_several_sources_into_dest_dir(
    http_server: FaultServer, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    urls = add_files(http_server, 3)
    assert main(["-d", "out", *urls]) == 0
    assert sorted(os.listdir(in_tmp / "out")) == ["f00.fits", "f01.fits", "f02.fits"]
    for i in range(3):
        assert (in_tmp / "out" / f"f{i:02d}.fits").read_bytes() == DATA + bytes([i])
    assert summary(capsys.readouterr().err) == (3, "30.0 KiB", 0)


def test_failures_are_named_and_the_others_succeed(
    http_server: FaultServer, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = add_files(http_server, 2)
    missing = http_server.url("/data/missing.fits")
    refused = http_server.add_file("/data/refused.fits", DATA)
    http_server.set_fault("/data/refused.fits", status=403)
    assert main([good[0], missing, good[1], refused]) == 1
    err = capsys.readouterr().err
    failed = [x for x in err.splitlines() if x.startswith("pyvo-dl: failed: ")]
    assert len(failed) == 2
    assert_names_once(failed[0], missing)
    assert "not found" in failed[0]
    assert_names_once(failed[1], refused)
    assert "403" in failed[1]
    assert summary(err) == (2, "20.0 KiB", 2)
    assert sorted(os.listdir(in_tmp)) == ["f00.fits", "f01.fits"]


def test_two_sources_of_one_name_say_which_took_it(
    http_server: FaultServer, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The second is refused naming the first by its URL, not by a 0-based index alone."""
    first = http_server.add_file("/a/image.fits", DATA)
    second = http_server.add_file("/b/image.fits", DATA[::-1])
    assert main([first, second]) == 1
    err = capsys.readouterr().err
    (line,) = failure_lines(err)
    assert_names_once(line, second)
    assert f"would be written to image.fits, as {first!r} (item 0) is" in line
    assert (in_tmp / "image.fits").read_bytes() == DATA


def test_list_file_with_comments_blank_lines_and_local_paths(
    http_server: FaultServer, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    urls = add_files(http_server, 4)
    (in_tmp / "list.txt").write_text(
        "# data for run 7\n"
        "\n"
        f"{urls[0]}\n"
        f"   {urls[1]}   \n"
        "   # commented out: https://example.invalid/never.fits\n"
        f"{urls[2]}\tnamed/two.fits\n"
        f"{urls[3]}    three.fits\n"
        "\n",
        encoding="utf-8",
    )
    assert main(["-i", "list.txt", "-d", "out"]) == 0
    out_dir = in_tmp / "out"
    assert sorted(os.listdir(out_dir)) == ["f00.fits", "f01.fits", "named", "three.fits"]
    assert (out_dir / "named" / "two.fits").read_bytes() == DATA + b"\x02"
    assert (out_dir / "three.fits").read_bytes() == DATA + b"\x03"
    assert summary(capsys.readouterr().err)[0] == 4
    assert len(http_server.requests_for("/data/f00.fits", "GET")) == 1


def test_arguments_and_lists_add_up(http_server: FaultServer, in_tmp: Path) -> None:
    urls = add_files(http_server, 3)
    (in_tmp / "a.txt").write_text(urls[1] + "\n")
    (in_tmp / "b.txt").write_text(urls[2] + "\n")
    assert main(["-q", urls[0], "-i", "a.txt", "--input", "b.txt"]) == 0
    assert sorted(os.listdir(in_tmp)) == ["a.txt", "b.txt", "f00.fits", "f01.fits", "f02.fits"]


def test_list_from_stdin_in_process(
    http_server: FaultServer, in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    urls = add_files(http_server, 2)
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(urls) + "\n"))
    assert main(["-q", "-i", "-"]) == 0
    assert sorted(os.listdir(in_tmp)) == ["f00.fits", "f01.fits"]


def test_one_source_from_a_list_goes_to_its_local_path(
    http_server: FaultServer, in_tmp: Path
) -> None:
    url = http_server.add_file(PATH, DATA)
    (in_tmp / "one.txt").write_text(f"{url}\tkept/as.fits\n")
    assert main(["-q", "-i", "one.txt", "-d", "out", "--checksum", sha256(DATA)]) == 0
    assert (in_tmp / "out" / "kept" / "as.fits").read_bytes() == DATA


def test_a_manifest_names_each_files_checksum(
    http_server: FaultServer, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``SOURCE [PATH] [ALG:HEX]``: a mismatch fails that file only (issue 12.4)."""
    good = http_server.add_file("/m/good.fits", b"good bytes")
    bad = http_server.add_file("/m/bad.fits", b"not what the manifest says")
    plain = http_server.add_file("/m/plain.fits", b"plain")
    (in_tmp / "manifest.txt").write_text(
        f"{good} kept/good.fits {sha256(b'good bytes')}\n"
        f"{bad}\t{sha256(b'the published bytes')}\n"
        f"{plain}\n"
    )
    assert main(["-i", "manifest.txt", "-d", "out"]) == 1
    assert (in_tmp / "out" / "kept" / "good.fits").read_bytes() == b"good bytes"
    assert (in_tmp / "out" / "plain.fits").read_bytes() == b"plain"
    assert not (in_tmp / "out" / "bad.fits").exists()
    assert sorted(os.listdir(in_tmp / "out")) == ["kept", "plain.fits"]
    err = capsys.readouterr().err
    (failure,) = [line for line in err.splitlines() if "failed:" in line]
    assert "sha256 mismatch for " + bad in failure
    assert "2 downloaded, 0 resumed, 0 already present, 1 failed" in err


def test_a_bad_checksum_in_a_manifest_is_that_lines_error(
    http_server: FaultServer, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    urls = add_files(http_server, 2)
    (in_tmp / "list.txt").write_text(f"{urls[0]} sha256:abc\n{urls[1]}\n")
    assert main(["-q", "-i", "list.txt"]) == 1
    assert os.path.exists(in_tmp / "f01.fits")
    assert not os.path.exists(in_tmp / "f00.fits")
    err = capsys.readouterr().err
    assert f"failed: {urls[0]}: item 0: checksum 'sha256:abc'" in err


def test_checksum_option_and_a_listed_checksum_must_agree(
    http_server: FaultServer, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = http_server.add_file(PATH, DATA)
    (in_tmp / "one.txt").write_text(f"{url} {sha256(b'other')}\n")
    assert main(["-q", "-i", "one.txt", "--checksum", sha256(DATA)]) == 2
    assert "differs from" in capsys.readouterr().err
    assert http_server.requests == []


# ----------------------------------------------------------------- shards ---


def test_shards_cover_the_list_exactly_once(
    http_server: FaultServer, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    urls = add_files(http_server, 10)
    (in_tmp / "urls.txt").write_text("# ten files\n" + "\n".join(urls) + "\n")
    taken: dict[int, list[str]] = {}
    for shard in (1, 2, 3):
        assert main(["-i", "urls.txt", "-d", f"out{shard}", "--shard", f"{shard}/3"]) == 0
        taken[shard] = sorted(os.listdir(in_tmp / f"out{shard}"))
        assert summary(capsys.readouterr().err)[0] == len(taken[shard])
    names = [f"f{i:02d}.fits" for i in range(10)]
    assert taken == {1: names[0::3], 2: names[1::3], 3: names[2::3]}
    for i, url in enumerate(urls):
        path = url[len(http_server.base_url) :]
        assert len(http_server.requests_for(path, "GET")) == 1, url
        assert (in_tmp / f"out{i % 3 + 1}" / names[i]).read_bytes() == DATA + bytes([i])


def test_a_shard_past_the_end_of_the_list_has_nothing_to_do(
    http_server: FaultServer, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    urls = add_files(http_server, 3)
    assert main(["--shard", "5/8", *urls]) == 0
    assert summary(capsys.readouterr().err) == (0, "0 B", 0)
    assert http_server.requests == []
    assert os.listdir(in_tmp) == []


def test_a_shard_of_one_source(http_server: FaultServer, in_tmp: Path) -> None:
    """Shard 2/2 of two sources is one download (-o still counts the whole list)."""
    urls = add_files(http_server, 2)
    assert main(["-q", "--shard", "2/2", *urls]) == 0
    assert os.listdir(in_tmp) == ["f01.fits"]


# ---------------------------------------------------------- other options ---


def _interrupted_part(server: FaultServer, in_tmp: Path) -> str:
    """Leave image.fits.part behind: the connection drops and --retries 0 gives up."""
    url = server.add_file(PATH, DATA * 10)
    server.set_fault(PATH, drop_after=50_000, times=1)
    assert main(["-q", "--retries", "0", url]) == 1
    assert os.path.getsize(in_tmp / "image.fits.part") == 50_000
    server.reset_log()
    return url


@pytest.mark.parametrize(("flags", "resumed"), [([], True), (["--no-resume"], False)])
def test_no_resume(
    http_server: FaultServer,
    in_tmp: Path,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    resumed: bool,
) -> None:
    url = _interrupted_part(http_server, in_tmp)
    capsys.readouterr()
    assert main(["-q", *flags, url]) == 0
    assert (in_tmp / "image.fits").read_bytes() == DATA * 10
    (get,) = http_server.requests_for(PATH, "GET")
    assert ("range" in get.headers) is resumed
    if resumed:
        assert get.headers["range"] == "bytes=50000-"
    assert get.bytes_sent == len(DATA) * 10 - (50_000 if resumed else 0)


def test_quiet_prints_nothing_but_errors(
    http_server: FaultServer, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    urls = add_files(http_server, 2)
    assert main(["-q", urls[0]]) == 0
    assert capsys.readouterr() == ("", "")
    assert main(["--quiet", *urls, http_server.url("/data/missing.fits")]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("pyvo-dl: failed: ")
    assert err.count("\n") == 1


def test_verbose_logs_decisions_to_stderr(
    http_server: FaultServer, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = http_server.add_file(PATH, DATA)
    logger = logging.getLogger("pyvo_dl")
    before = (list(logger.handlers), logger.level)
    assert main(["-q", url]) == 0
    assert main(["-v", url]) == 0
    out, err = capsys.readouterr()
    assert "pyvo-dl: Found cached file image.fits." in err.splitlines()
    assert "Found cached" not in out  # stdout is for progress only
    assert (list(logger.handlers), logger.level) == before


def test_timeout_and_retries(
    http_server: FaultServer, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = http_server.add_file(PATH, DATA)
    http_server.set_fault(PATH, stall=5.0)  # no first byte: no progress to reset the count
    started = time.monotonic()
    assert main(["--timeout", "0.3", "--retries", "1", url]) == 1
    assert time.monotonic() - started < 4.0
    err = capsys.readouterr().err
    (line,) = failure_lines(err)
    assert_names_once(line, url)
    assert len(http_server.requests_for(PATH, "GET")) == 2  # the first try and one retry


@pytest.mark.parametrize(("jobs", "connections"), [("1", 1), ("4", 4)])
def test_jobs(http_server: FaultServer, in_tmp: Path, jobs: str, connections: int) -> None:
    """-j N downloads N files at once: as many connections, each kept alive."""
    urls = add_files(http_server, 4)
    for i in range(4):
        http_server.set_fault(f"/data/f{i:02d}.fits", delay=0.3)
    assert main(["-q", "-j", jobs, *urls]) == 0
    assert len(os.listdir(in_tmp)) == 4
    assert http_server.connection_count == connections


def test_connections_fetches_ranges_in_parallel(http_server: FaultServer, in_tmp: Path) -> None:
    data = DATA * 1700  # about 17 MB: four ranges of more than 4 MiB
    url = http_server.add_file(PATH, data)
    assert main(["-q", "--connections", "4", url]) == 0
    assert (in_tmp / "image.fits").read_bytes() == data
    ranged = [r for r in http_server.requests_for(PATH, "GET") if "range" in r.headers]
    assert len(ranged) == 4


# --------------------------------------------------------------------- S3 ---


def _bucket(endpoint: str, objects: dict[str, bytes], acl: str = "public-read") -> None:
    client = s3_client_for(endpoint)
    client.create_bucket(Bucket=BUCKET)
    for key, body in objects.items():
        client.put_object(Bucket=BUCKET, Key=key, Body=body, ACL=acl)


def test_s3_uri_with_endpoint_url(
    s3_endpoint: str, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _bucket(s3_endpoint, {"obs 3052/primary/img.fits": DATA})
    uri = f"s3://{BUCKET}/obs 3052/primary/img.fits"
    args = ["--endpoint-url", s3_endpoint, "--region", "us-east-1", "-d", "s3", uri]
    assert main(args) == 0
    assert (in_tmp / "s3" / "img.fits").read_bytes() == DATA
    out, err = capsys.readouterr()
    assert (
        out
        == f"Downloading obs 3052/primary/img.fits to {os.path.join('s3', 'img.fits')} ... [Done]\n"
    )
    assert summary(err) == (1, "10.0 KiB", 0)


def test_mixed_list_gets_the_s3_options_only_for_s3(
    s3_endpoint: str, http_server: FaultServer, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _bucket(s3_endpoint, {"a/one.fits": DATA + b"1", "a/two.fits": DATA + b"2"})
    url = http_server.add_file(PATH, DATA)
    (in_tmp / "list.txt").write_text(
        f"s3://{BUCKET}/a/one.fits\n{url}\ns3://{BUCKET}/a/two.fits\tsub/two.fits\n"
    )
    assert main(["-i", "list.txt", "--endpoint-url", s3_endpoint, "-d", "out"]) == 0
    assert (in_tmp / "out" / "one.fits").read_bytes() == DATA + b"1"
    assert (in_tmp / "out" / "sub" / "two.fits").read_bytes() == DATA + b"2"
    assert (in_tmp / "out" / "image.fits").read_bytes() == DATA
    assert summary(capsys.readouterr().err) == (3, "30.0 KiB", 0)


def test_s3_missing_key_is_named(
    s3_endpoint: str, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _bucket(s3_endpoint, {"here.fits": DATA})
    uri = f"s3://{BUCKET}/not-here.fits"
    assert main(["--endpoint-url", s3_endpoint, uri]) == 1
    err = capsys.readouterr().err
    (line,) = failure_lines(err)
    assert_names_once(line, uri)
    assert "NoSuchKey" in line


@pytest.mark.parametrize("profile", [True, False])
def test_profile_signs_requests(
    s3_endpoint: str,
    in_tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    profile: bool,
) -> None:
    """A private object: refused anonymously, read with --profile's credentials."""
    pytest.importorskip("botocore")
    _bucket(s3_endpoint, {"private.fits": DATA}, acl="private")
    credentials = in_tmp.parent / "credentials"
    credentials.write_text("[ceph]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    uri = f"s3://{BUCKET}/private.fits"
    flags = ["--profile", "ceph"] if profile else []
    status = main(["-q", "--endpoint-url", s3_endpoint, "--region", "us-east-1", *flags, uri])
    err = capsys.readouterr().err
    if profile:
        assert (status, err) == (0, "")
        assert (in_tmp / "private.fits").read_bytes() == DATA
    else:
        assert status == 1
        (line,) = failure_lines(err)
        assert_names_once(line, uri)
        assert "AccessDenied" in err


def files_under(folder: Path) -> list[str]:
    """Every file under ``folder``, as sorted '/'-separated relative paths."""
    return sorted(
        os.path.relpath(os.path.join(top, name), str(folder)).replace(os.sep, "/")
        for top, _, names in os.walk(str(folder))
        for name in names
    )


def test_recursive(
    s3_endpoint: str,
    http_server: FaultServer,
    in_tmp: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each prefix's layout under -d; an http URL in the same run is one file."""
    _bucket(
        s3_endpoint,
        {
            "obs/3052/a.fits": DATA + b"a",
            "obs/3052/sub/b.fits": DATA + b"b",
            "obs/3053/c.fits": DATA + b"c",
        },
    )
    url = http_server.add_file(PATH, DATA)
    prefix = f"s3://{BUCKET}/obs/3052/"
    args = ["--recursive", "--endpoint-url", s3_endpoint, "-d", "out", prefix, url]
    assert main(args) == 0
    assert files_under(in_tmp) == ["out/a.fits", "out/image.fits", "out/sub/b.fits"]
    assert (in_tmp / "out" / "sub" / "b.fits").read_bytes() == DATA + b"b"
    assert summary(capsys.readouterr().err)[::2] == (3, 0)


# ------------------------------------------------- messages in the command's terms ---

#: The library's parameters, as a message would name them (``timeout=``).
PYTHON_PARAMETER = re.compile(
    r"\b(local_filepath|aws_profile|session|auth|ssl_context|recursive|timeout|retries"
    r"|connections|endpoint_url|region|requester_pays|checksum|headers)="
)


def test_failures_name_options_not_parameters(
    http_server: FaultServer,
    https_server: FaultServer,
    s3_endpoint: str,
    in_tmp: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """From the command line, messages name -o, --profile, --timeout, --ca-bundle (issue 16.8)."""
    _bucket(s3_endpoint, {"private.fits": DATA}, acl="private")
    folder = http_server.url("/data/")
    http_server.add_file("/slow.fits", DATA)
    http_server.set_fault("/slow.fits", stall=2.0)
    untrusted = https_server.add_file("/tls.fits", DATA)
    cases = {
        folder: "give -o PATH (or a path after the source in the -i list)",
        http_server.url("/slow.fits"): "give it longer with --timeout SECONDS",
        untrusted: "pass --ca-bundle FILE with that CA (PEM)",
    }
    for source, wanted in cases.items():
        assert main(["--timeout", "0.3", "--retries", "0", source]) == 1
        err = capsys.readouterr().err
        (line,) = failure_lines(err)
        assert wanted in line, line
        assert not PYTHON_PARAMETER.search(err), err
        assert_names_once(line, source)
    private = f"s3://{BUCKET}/private.fits"
    assert main(["--endpoint-url", s3_endpoint, private]) == 1
    err = capsys.readouterr().err
    assert "pass --profile NAME (a profile in ~/.aws/credentials)" in err
    assert not PYTHON_PARAMETER.search(err), err


def test_ca_bundle_trusts_a_private_ca_for_https(
    https_server: FaultServer, ca: Any, in_tmp: Path
) -> None:
    url = https_server.add_file("/tls/a.fits", DATA)
    ca.cert_pem.write_to_path(str(in_tmp / "ca.pem"))
    assert main(["-q", "--ca-bundle", "ca.pem", url]) == 0
    assert (in_tmp / "a.fits").read_bytes() == DATA


def test_ca_bundle_serves_s3_endpoints_too(
    https_server: FaultServer, ca: Any, in_tmp: Path
) -> None:
    """An S3-compatible server behind a private CA (path-style GET of a public object).

    The FaultServer imitates an S3-compatible server's answer to an
    anonymous path-style GET of a public object: the bytes, with a length.
    """
    https_server.add_file("/bkt/run/x.fits", DATA)
    ca.cert_pem.write_to_path(str(in_tmp / "ca.pem"))
    args = ["--endpoint-url", https_server.base_url, "--region", "us-east-1", "s3://bkt/run/x.fits"]
    assert main(["-q", "--ca-bundle", "ca.pem", *args]) == 0
    assert (in_tmp / "x.fits").read_bytes() == DATA
    os.remove(in_tmp / "x.fits")
    assert main(["-q", *args]) == 1  # without it, the private CA is not trusted


# ------------------------------------- one batch, one summary that tells the truth ---


def test_a_resume_counts_only_the_bytes_this_run_moved(
    http_server: FaultServer, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """50 000 of 102 400 bytes were on disk: the summary says resumed, 51.2 KiB (issue 16.6)."""
    url = _interrupted_part(http_server, in_tmp)
    capsys.readouterr()
    assert main([url]) == 0
    out, err = capsys.readouterr()
    assert counts(err) == {
        "downloaded": 0, "resumed": 1, "present": 0, "failed": 0, "size": "51.2 KiB",
    }  # fmt: skip
    assert out == f"Downloading {url} to image.fits ... [Done]\n"


def test_a_file_already_in_place_is_not_counted_as_transferred(
    http_server: FaultServer, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = http_server.add_file(PATH, DATA)
    assert main([url]) == 0
    capsys.readouterr()
    assert main([url]) == 0
    out, err = capsys.readouterr()
    assert counts(err) == {"downloaded": 0, "resumed": 0, "present": 1, "failed": 0, "size": "0 B"}
    assert "nothing transferred" in err
    assert out == ""  # nothing was downloaded, so no "Downloading ... [Done]"


def test_a_mixed_list_is_one_batch_with_one_summary(
    http_server: FaultServer,
    s3_endpoint: str,
    in_tmp: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """HTTP and S3 items share one pool, one display and one summary (issue 16.7)."""
    _bucket(s3_endpoint, {"obs/x.fits": DATA + b"x", "obs/y.fits": DATA + b"y"})
    urls = add_files(http_server, 2)
    batches: list[int] = []
    real = _api.run_batch

    def counting(items: list[Any], *args: Any, **kwargs: Any) -> Any:
        batches.append(len(items))
        return real(items, *args, **kwargs)

    monkeypatch.setattr(_api, "run_batch", counting)
    sources = [urls[0], f"s3://{BUCKET}/obs/x.fits", urls[1], f"s3://{BUCKET}/obs/y.fits"]
    assert main(["--endpoint-url", s3_endpoint, "-j", "3", "-d", "out", *sources]) == 0
    assert batches == [4]
    assert files_under(in_tmp / "out") == ["f00.fits", "f01.fits", "x.fits", "y.fits"]
    out, err = capsys.readouterr()
    assert out == ""  # not a terminal, and short: no progress line, no second summary
    assert counts(err) == {
        "downloaded": 4, "resumed": 0, "present": 0, "failed": 0, "size": "40.0 KiB",
    }  # fmt: skip


def test_shards_of_a_recursive_prefix_cover_it_exactly_once(
    s3_endpoint: str, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The shard is taken after the prefix is listed (issue 13.7)."""
    keys = [f"run/{name}.fits" for name in "abcdefg"]
    _bucket(s3_endpoint, {key: DATA + key.encode() for key in keys})
    taken: dict[int, list[str]] = {}
    for shard in (1, 2, 3):
        args = ["--recursive", "--endpoint-url", s3_endpoint, "-d", f"out{shard}"]
        assert main([*args, "--shard", f"{shard}/3", f"s3://{BUCKET}/run/"]) == 0
        taken[shard] = files_under(in_tmp / f"out{shard}")
        assert summary(capsys.readouterr().err)[0] == len(taken[shard])
    names = [key[len("run/") :] for key in keys]
    assert taken == {1: names[0::3], 2: names[1::3], 3: names[2::3]}


def _run_on_a_terminal(args: list[str], cwd: Path, columns: int) -> str:
    """``python -m pyvo_dl ARGS`` with stdout and stderr on a real pty ``columns`` wide."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {k: v for k, v in _child_env().items() if k not in ("COLUMNS", "LINES")}
    env["TERM"] = "xterm"
    child = subprocess.Popen(
        [sys.executable, "-m", "pyvo_dl", *args], cwd=str(cwd), env=env,
        stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
    )  # fmt: skip
    os.close(slave)
    chunks = []
    try:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        assert child.wait(timeout=60) == 0
    finally:
        os.close(master)
        if child.poll() is None:
            child.kill()
            child.wait()
    return b"".join(chunks).decode().replace("\r\n", "\n")


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pty")
def test_at_60_columns_the_bar_stays_and_no_number_is_wrapped(
    http_server: FaultServer, tmp_path: Path
) -> None:
    """On a real 60-column terminal (issue 16.11): the summary on stderr too."""
    path = "/FTP/chandra/data/byobsid/2/3052/primary/acisf03052N004_evt2.fits"
    url = http_server.add_file(path, DATA * 200)
    http_server.set_fault(path, trickle=(64 * 1024, 0.05))
    text = _run_on_a_terminal([url], tmp_path, 60)
    *redraws, final = text.split("\r")
    bars = [piece for piece in redraws if "%" in piece]
    assert bars, text
    for piece in bars:
        assert len(piece) <= 59, piece
        inner = piece[piece.index(" [") + 2 : piece.index("] ")]
        assert len(inner) >= 8, piece
        assert "ETA" in piece, piece
    # The last line and the summary after it, as the terminal shows them.
    lines = final.rstrip("\n").split("\n")
    joined = " ".join(lines)
    assert "pyvo-dl: 1 downloaded, 0 resumed, 0 already present, 0 failed; 1.95 MiB in" in joined
    for line in lines:
        url_at = line.find(url)
        for cut in range(60, len(line), 60):  # where the terminal wraps this line
            assert url_at >= 0, (cut, lines)
            assert url_at < cut < url_at + len(url), (cut, lines)
    assert joined.startswith(f"Downloading {url} to acisf03052N004_evt2.fits ... [Done]")


def test_recursive_failure_names_the_prefix(
    s3_endpoint: str, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _bucket(s3_endpoint, {"obs/a.fits": DATA})
    good, bad = f"s3://{BUCKET}/obs/", "s3://no-such-bucket/obs/"
    assert main(["--recursive", "--endpoint-url", s3_endpoint, "-d", "out", good, bad]) == 1
    err = capsys.readouterr().err
    assert re.search(rf"^pyvo-dl: failed: {re.escape(bad)}: .*NoSuchBucket", err, re.M)
    assert summary(err)[::2] == (1, 1)
    assert files_under(in_tmp) == ["out/a.fits"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--recursive", "-o", "x", "s3://bucket/prefix/"], "-o names one file"),
        (["--recursive", "--checksum", "md5:" + "0" * 32, "s3://b/p/"], "--checksum names"),
    ],
)
def test_recursive_refuses_one_file_options(
    in_tmp: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(args) == 2
    assert message in capsys.readouterr().err


# ---------------------------------------------------- the real entry points ---


@pytest.mark.parametrize(
    ("args", "status", "stderr"),
    [
        (["{url}"], 0, "pyvo-dl: 1 downloaded, 0 resumed, 0 already present, 0 failed; 10.0 KiB"),
        (["-q", "{url}", "{missing}"], 1, "pyvo-dl: failed: HTTP 404 (not found) for {missing}"),
        ([], 2, "pyvo-dl: error: no source given"),
        (["--shard", "4/3", "{url}"], 2, "pyvo-dl: error: argument --shard"),
        (["--version"], 0, ""),
    ],
)
def test_python_dash_m_exit_status(
    http_server: FaultServer, tmp_path: Path, args: list[str], status: int, stderr: str
) -> None:
    names = {"url": http_server.add_file(PATH, DATA), "missing": http_server.url("/nope.fits")}
    result = run_cli([a.format(**names) for a in args], tmp_path)
    assert result.returncode == status, result.stderr
    assert stderr.format(**names) in result.stderr
    assert "Traceback" not in result.stderr
    if args == ["--version"]:
        assert result.stdout == f"pyvo-dl {pyvo_dl.__version__}\n"


def test_console_script_wrapper(http_server: FaultServer, tmp_path: Path) -> None:
    """What the ``pyvo-dl`` script runs: ``sys.exit(main())`` with sys.argv."""
    url = http_server.url("/missing.fits")
    code = "import sys; from pyvo_dl._cli import main; sys.exit(main())"
    result = subprocess.run(
        [sys.executable, "-c", code, "-q", url],
        cwd=str(tmp_path), env=_child_env(), capture_output=True, text=True, timeout=30,
        check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith("pyvo-dl: failed: ")
    assert_names_once(result.stderr.splitlines()[0], url)


def test_list_from_stdin(http_server: FaultServer, tmp_path: Path) -> None:
    urls = add_files(http_server, 3)
    listing = "# from a pipe\n" + "\n".join(urls) + "\n\n"
    result = run_cli(["-i", "-", "-d", "got"], tmp_path, input=listing)
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(tmp_path / "got")) == ["f00.fits", "f01.fits", "f02.fits"]
    # Not a terminal and short: no progress line, and the one summary on stderr.
    assert result.stdout == ""
    assert counts(result.stderr) == {
        "downloaded": 3, "resumed": 0, "present": 0, "failed": 0, "size": "30.0 KiB",
    }  # fmt: skip


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process is POSIX")
def test_ctrl_c_exits_130_without_traceback(http_server: FaultServer, tmp_path: Path) -> None:
    url = http_server.add_file(PATH, DATA * 100)
    http_server.set_fault(PATH, trickle=(8192, 0.05))
    # A shell without job control starts background commands with SIGINT
    # ignored, and an ignored signal stays ignored across exec: the child
    # would never see this Ctrl-C when the suite runs in the background.
    # (Only SIG_IGN is inherited; a handler is not, so nothing else changes.)
    ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        child = subprocess.Popen(
            [sys.executable, "-m", "pyvo_dl", url],
            cwd=str(tmp_path), env=_child_env(),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
    finally:
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        deadline = time.monotonic() + 10
        while http_server.bytes_sent(PATH) == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=15)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 130, err
    assert "Traceback" not in err
    # One line, saying what was interrupted and how to go on.
    last = err.rstrip().splitlines()[-1]
    assert last == (
        f"pyvo-dl: interrupted during {url} (its .part is kept for the next call); "
        "run the same command again to resume"
    )
    assert not (tmp_path / "image.fits").exists()

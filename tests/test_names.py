"""File names derived from untrusted input (SPEC §2.1, §3.5): tables and properties."""

from __future__ import annotations

import os
import pathlib
import re
import time
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyvo_dl import _names
from pyvo_dl._names import (
    MAX_NAME_BYTES,
    filename_from_content_disposition,
    filename_from_s3_key,
    filename_from_url,
    safe_join,
    sanitize_filename,
)


def is_safe_name(name: str) -> bool:
    """What every returned name must satisfy (SPEC §3.5)."""
    return (
        name not in ("", ".", "..")
        and "/" not in name
        and "\\" not in name
        and not name.startswith(".")
        and name == name.strip()
        and not name.endswith(".")
        and not re.search("[\x00-\x1f\x7f:]", name)
        and len(name.encode("utf-8")) <= MAX_NAME_BYTES
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("image.fits", "image.fits"),
        ("a b.fits", "a b.fits"),
        ("€.fits", "€.fits"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\win.ini", "win.ini"),
        ("/abs/path.fits", "path.fits"),
        ("dir/", None),
        ("", None),
        (".", None),
        ("..", None),
        ("...", None),
        ("   ", None),
        (" . . ", None),
        ("  name.fits  ", "name.fits"),
        ("name.fits...", "name.fits"),
        ("name.fits. . ", "name.fits"),
        ("evil.fits\x00.txt", "evil.fits_.txt"),
        ("tab\there", "tab_here"),
        ("line\nbreak", "line_break"),
        ("del\x7f", "del_"),
        ("c1\x85", "c1_"),
        ("stream.fits:hidden", "stream.fits_hidden"),
        ('q"u<o>t|e?s*', "q_u_o_t_e_s_"),
        ("file\u202egnp.exe", "file_gnp.exe"),
        ("\ud800.fits", "_.fits"),
        (".bashrc", "_.bashrc"),
        ("..hidden", "_..hidden"),
        ("CON", "_CON"),
        ("con.txt", "_con.txt"),
        ("Nul.tar.gz", "_Nul.tar.gz"),
        ("CON .txt", "_CON .txt"),
        ("COM1", "_COM1"),
        ("lpt9.fits", "_lpt9.fits"),
        ("COM\u00b9", "_COM\u00b9"),
        ("conin$", "_conin$"),
        ("CONSOLE.txt", "CONSOLE.txt"),
        ("COM10", "COM10"),
        ("COM0", "COM0"),
        ("nullify.fits", "nullify.fits"),
        ("a..b.fits", "a..b.fits"),
    ],
)
def test_sanitize_filename(name: str, expected: str | None) -> None:
    assert sanitize_filename(name) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("x" * 300 + ".fits", "x" * (MAX_NAME_BYTES - 5) + ".fits"),
        ("\u00e9" * 150 + ".fits", "\u00e9" * ((MAX_NAME_BYTES - 5) // 2) + ".fits"),
        ("a" * 250, "a" * MAX_NAME_BYTES),
        ("a." + "b" * 300, ("a." + "b" * 300)[:MAX_NAME_BYTES]),
        ("x" * (MAX_NAME_BYTES - 5) + ".fits", "x" * (MAX_NAME_BYTES - 5) + ".fits"),
        ("y" * 150 + " . " + "z" * 100, ("y" * 150 + " . " + "z" * 100)[:MAX_NAME_BYTES]),
    ],
)
def test_sanitize_filename_shortens_long_names(name: str, expected: str) -> None:
    assert sanitize_filename(name) == expected
    assert len(expected.encode("utf-8")) <= MAX_NAME_BYTES


@pytest.mark.parametrize("name", [". " * 100_000 + "a", "a" + ". " * 100_000, "\t." * 100_000])
def test_sanitize_filename_is_linear_on_runs_of_dots_and_spaces(name: str) -> None:
    # A regex like "[\s.]+$" took 30 s on 60 kB of ". " from a hostile URL.
    started = time.perf_counter()
    result = sanitize_filename(name)
    assert time.perf_counter() - started < 1.0
    assert result is None or is_safe_name(result)


def test_shortening_never_ends_on_a_dot_or_space() -> None:
    name = "x" * (MAX_NAME_BYTES - 2) + " ." + "y" * 50
    assert sanitize_filename(name) == "x" * (MAX_NAME_BYTES - 2)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        # The three forms of pyvo's _filename_from_url docstring.
        ("https://example.com/files/myfile.pdf?user_id=123", "myfile.pdf"),
        ("https://example.com/files/myfile.pdf", "myfile.pdf"),
        ("http://example.com/service?file=/location/myfile.pdf&size=large", "myfile.pdf"),
        # Percent-decoding of the path (pyvo does not decode it).
        ("https://example.com/files/my%20file.fits", "my file.fits"),
        ("https://example.com/files/%E2%82%AC.fits", "€.fits"),
        ("https://example.com/files/bad%FFbyte.fits", "bad\ufffdbyte.fits"),
        # The path part wins when it has a '.', else the first query value with one.
        ("https://example.com/a.fits?file=b.fits", "a.fits"),
        ("https://example.com/service?x=1&file=data%2Fimage.fits", "image.fits"),
        ("https://example.com/service?file=C:%5Cdata%5Cimage.fits", "image.fits"),
        ("https://example.com/service?a=noext&b=second.fits&c=third.fits", "second.fits"),
        ("https://example.com/service?name=a+b.fits", "a b.fits"),
        ("https://example.com/service?file=/dir.d/data", "service"),
        ("https://example.com/getfile", "getfile"),
        ("https://example.com/getfile?id=123", "getfile"),
        ("https://example.com/service?file=&other=x", "service"),
        ("https://example.com/x.fits#frag.txt", "x.fits"),
        # Nothing to name the file after.
        ("https://example.com/files/", None),
        ("https://example.com/", None),
        ("https://example.com", None),
        ("https://example.com/files/?user=1", None),
        ("https://example.com/dir/..", None),
        # Hostile names are neutralised, never followed.
        ("https://example.com/a/b%2F..%2F..%2Fetc%2Fpasswd", "passwd"),
        ("https://example.com/x/..%2F..%2F.bashrc", "_.bashrc"),
        ("https://example.com/evil%00.fits", "evil_.fits"),
        ("https://example.com/CON", "_CON"),
        ("https://example.com/service?file=../../.ssh/authorized_keys", "service"),
        ("https://example.com/dir/..?file=ok.fits", "ok.fits"),
    ],
)
def test_filename_from_url(url: str, expected: str | None) -> None:
    assert filename_from_url(url) == expected


def test_filename_from_url_names_a_malformed_url() -> None:
    with pytest.raises(ValueError, match=re.escape(repr("http://[::1/x.fits"))):
        filename_from_url("http://[::1/x.fits")


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("FTP/chandra/data/byobsid/2/3052/primary/acisf03052N004_cntr_img2.jpg",
         "acisf03052N004_cntr_img2.jpg"),
        ("top.fits", "top.fits"),
        ("dir/a b+c.fits", "a b+c.fits"),
        ("what?is#this.fits", "what_is#this.fits"),
        ("dir/%41.fits", "%41.fits"),
        ("dir/..", None),
        ("prefix/", None),
        ("", None),
        ("/", None),
        ("a/../../..", None),
        ("dir/.hidden", "_.hidden"),
    ],
)  # fmt: skip
def test_filename_from_s3_key(key: str, expected: str | None) -> None:
    assert filename_from_s3_key(key) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('attachment; filename="a b.fits"', "a b.fits"),
        ("attachment; filename=plain.fits", "plain.fits"),
        ("attachment;filename=nospace.fits", "nospace.fits"),
        ('attachment; filename = "spaced.fits" ', "spaced.fits"),
        ('inline; FILENAME="upper.fits"', "upper.fits"),
        ('filename="no-type.fits"', "no-type.fits"),
        ('attachment; filename="a;b.fits"; size=3', "a;b.fits"),
        ('attachment; filename="say \\"hi\\".fits"', "say _hi_.fits"),
        ('attachment; filename="back\\\\slash.fits"', "slash.fits"),
        ("attachment; filename=a.fits; filename=b.fits", "a.fits"),
        # RFC 5987 / 6266: filename* is preferred, wherever it stands.
        ("attachment; filename*=UTF-8''%E2%82%AC.fits", "€.fits"),
        ("attachment; filename=\"e.fits\"; filename*=UTF-8''%E2%82%AC.fits", "€.fits"),
        ("attachment; filename*=utf-8''%E2%82%AC.fits; filename=\"e.fits\"", "€.fits"),
        ("attachment; filename*=iso-8859-1'en'%A3%20rates.fits", "£ rates.fits"),
        ("attachment; filename*=\"UTF-8''quoted.fits\"", "quoted.fits"),
        ("attachment; filename*=UTF-8''%FF.fits; filename=ok.fits", "ok.fits"),
        ("attachment; filename*=KOI8-R''x.fits; filename=ok.fits", "ok.fits"),
        ("attachment; filename*=no-quotes.fits; filename=ok.fits", "ok.fits"),
        ("attachment; filename*=UTF-8''..; filename=ok.fits", "ok.fits"),
        # Raw UTF-8 that http.client decoded as Latin-1; real Latin-1 kept.
        ('attachment; filename="caf\xc3\xa9.fits"', "café.fits"),
        ('attachment; filename="caf\xe9.fits"', "café.fits"),
        ('attachment; filename="unterminated.fits', "unterminated.fits"),
        # Hostile names.
        ('attachment; filename="../../.ssh/id_rsa"', "id_rsa"),
        ('attachment; filename="C:\\\\Windows\\\\evil.dll"', "evil.dll"),
        ("attachment; filename*=UTF-8''..%2F..%2Fevil.sh", "evil.sh"),
        ('attachment; filename=".profile"', "_.profile"),
        ('attachment; filename="nul"', "_nul"),
        # No usable name.
        ('attachment; filename=".."', None),
        ('attachment; filename=""', None),
        ("attachment; filename*=UTF-8''", None),
        ("attachment", None),
        ("attachment; size=12", None),
        ("", None),
        (None, None),
    ],
)
def test_filename_from_content_disposition(value: str | None, expected: str | None) -> None:
    assert filename_from_content_disposition(value) == expected


@pytest.mark.parametrize(
    ("dest", "relative", "parts"),
    [
        ("out", "a/b.fits", ["a", "b.fits"]),
        ("out", "a//b/./c.fits", ["a", "b", "c.fits"]),
        ("out", "a/", ["a"]),
        ("out", "x..y/z", ["x..y", "z"]),
        ("out", "a b/c+d?e#f.fits", ["a b", "c+d?e#f.fits"]),
        ("/abs/out", "deep/er/file", ["deep", "er", "file"]),
        (".", "a/b", ["a", "b"]),
        ("", "a", ["a"]),
        ("../sibling", "a", ["a"]),
    ],
)
def test_safe_join(dest: str, relative: str, parts: list[str]) -> None:
    assert safe_join(dest, relative) == os.path.join(dest, *parts)


def test_safe_join_accepts_a_path_object(tmp_path: pathlib.Path) -> None:
    assert safe_join(tmp_path, "a/b") == os.path.join(str(tmp_path), "a", "b")


@pytest.mark.parametrize(
    ("relative", "reason"),
    [
        ("/etc/passwd", "absolute"),
        ("//server/share", "absolute"),
        ("..", "'..'"),
        ("../x", "'..'"),
        ("a/../../b", "'..'"),
        ("a/..", "'..'"),
        ("a/b/../../..", "'..'"),
        ("a\x00b", "NUL"),
        ("", "names no file"),
        ("/", "absolute"),
        ("./.", "names no file"),
        ("//", "absolute"),
    ],
)
def test_safe_join_refuses(relative: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(relative))) as info:
        safe_join("out", relative)
    assert reason in str(info.value)


@pytest.mark.parametrize(
    ("part", "windows", "refused"),
    [
        ("a.txt", True, False),
        ("...", True, True),
        (".. ", True, True),
        ("a:b", True, True),
        ("a\\b", True, True),
        ("CON", True, True),
        ("nul.txt", True, True),
        ("...", False, False),
        ("a:b", False, False),
        ("CON", False, False),
        ("..", False, True),
    ],
)
def test_component_checks_for_windows(part: str, windows: bool, refused: bool) -> None:
    # Windows rules are exercised on every platform through the flag.
    assert (_names._component_problem(part, windows=windows) is not None) == refused


# -- properties ------------------------------------------------------------------

_PATHY = st.text(alphabet=st.sampled_from(list("ab./\\: \x00\u202e\u00e9C")), max_size=30)


@pytest.mark.property
@given(st.one_of(st.text(), _PATHY))
def test_sanitize_filename_is_safe_and_idempotent(name: str) -> None:
    result = sanitize_filename(name)
    if result is not None:
        assert is_safe_name(result)
        assert sanitize_filename(result) == result


@pytest.mark.property
@given(st.sampled_from(["out", "/abs/out", ".", "", "../up", "a/b/"]), st.one_of(_PATHY, st.text()))
def test_safe_join_never_leaves_dest_dir(dest: str, relative: str) -> None:
    try:
        joined = safe_join(dest, relative)
    except ValueError:
        return
    inside = os.path.relpath(os.path.abspath(joined), os.path.abspath(dest or os.curdir))
    assert inside != os.curdir
    assert inside.split(os.sep)[0] != os.pardir
    assert not os.path.isabs(inside)


@pytest.mark.property
@given(st.one_of(st.text(), _PATHY))
def test_filename_from_url_is_always_safe(tail: str) -> None:
    result = filename_from_url("https://example.com/" + tail)
    assert result is None or is_safe_name(result)


@pytest.mark.property
@given(st.one_of(st.text(), st.from_regex(r"attachment; filename\*?=.*", fullmatch=True)))
def test_content_disposition_never_fails_and_is_safe(value: str) -> None:
    result = filename_from_content_disposition(value)
    assert result is None or is_safe_name(result)


_SAFE_NAMES = st.text(min_size=1, max_size=40).map(lambda t: sanitize_filename(t + ".fits"))


@pytest.mark.property
@given(_SAFE_NAMES)
def test_url_quoting_round_trips(name: str | None) -> None:
    # Inverse pair: quoting a safe name into a URL path gives it back.
    if name is None:
        return
    assert filename_from_url("https://example.com/dir/" + quote(name)) == name


@pytest.mark.property
@given(_SAFE_NAMES)
def test_content_disposition_round_trips(name: str | None) -> None:
    if name is None:
        return
    extended = "attachment; filename*=UTF-8''" + quote(name, safe="")
    assert filename_from_content_disposition(extended) == name
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    plain = f'attachment; filename="{escaped}"'
    if name.isascii():
        assert filename_from_content_disposition(plain) == name


@given(st.text(st.characters(max_codepoint=0x7F)))
def test_plain_names_skip_patterns_that_would_not_change_them(name: str) -> None:
    """sanitize_filename's shortcut: a name it skips the patterns for is one they leave alone."""
    from pyvo_dl._names import _SEPARATORS, _SPECIAL_ASCII, _UNSAFE_CHARS

    if name.isascii() and name.isprintable() and _SPECIAL_ASCII.isdisjoint(name):
        assert re.split(_SEPARATORS, name)[-1] == name
        assert re.sub(_UNSAFE_CHARS, "_", name) == name


_PATH_PIECES = st.sampled_from(["a", "B.fits", ".", "..", "/", "x.tar.gz", "%41", "-", "_", "~"])


@given(st.lists(_PATH_PIECES, max_size=8).map(lambda p: "https://h.example/" + "".join(p)))
def test_plain_url_names_as_urllib_gives_them(url: str) -> None:
    """filename_from_url's shortcut (no query, no escape) gives what the urllib.parse path gives."""
    from urllib.parse import unquote, urlsplit

    expected = sanitize_filename(unquote(urlsplit(url).path.rpartition("/")[2]))
    assert filename_from_url(url) == expected

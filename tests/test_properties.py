"""Invariants of every parser and builder that reads what a server or a user sends.

Hypothesis properties (marker ``property``) for what the per-module tables
and properties do not already cover: URL checking as a server receives it,
``s3://`` parsing on any text, the bucket rule, key quoting round-tripped
through a real loopback server, ``Content-Range`` / ``Content-Length`` /
``Retry-After`` on hostile values, file names from every source (SPEC §3.5),
and S3's XML answers, malformed or carrying a document type declaration (no
entity is ever expanded: a billion-laughs body is refused at once).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
import zlib
from urllib.parse import quote, unquote, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pyvo_dl
from pyvo_dl import DownloadError, S3Error
from pyvo_dl._httputil import (
    check_url,
    parse_content_length,
    parse_content_range,
    parse_retry_after,
    plan_ranges,
)
from pyvo_dl._names import (
    filename_from_content_disposition,
    filename_from_s3_key,
    filename_from_url,
    safe_join,
)
from pyvo_dl._s3url import (
    S3Location,
    check_bucket_name,
    parse_error_xml,
    parse_list_objects_v2,
    parse_s3_uri,
    quote_key,
)
from servers import FaultServer

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any, TypeVar

    from servers import LoopbackGuard

    T = TypeVar("T")

BUCKET = "prop-bucket"
NOW = 1_700_000_000.0
#: SPEC §2.2's bucket rule, written out independently of the library's.
BUCKET_RULE = re.compile(r"[A-Za-z0-9._-]{3,255}")
#: Names Windows opens as devices, whatever the extension (SPEC §3.5).
DEVICES = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"{d}{n}" for d in ("COM", "LPT") for n in "123456789\u00b9\u00b2\u00b3"]
)
#: Each example of the server properties is a real download: fewer of them.
SERVER_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

TEXT = st.text(st.characters(exclude_categories=("Cs",)))
HOSTS = st.sampled_from(
    ["example.com", "127.0.0.1", "[::1]", "xn--bcher-kva.example", "bücher.example", "", "a b"]
)
PORTS = st.sampled_from(["", ":80", ":8080", ":0", ":99999", ":x", ":"])
URLISH = st.one_of(
    TEXT,
    st.builds(
        "{}://{}{}{}{}".format,
        st.sampled_from(["http", "https", "HTTP", "hTtPs", "ftp", "file", "s3", ""]),
        st.one_of(st.just(""), st.sampled_from(["user@", "u:p@", "a%40b@"])),
        HOSTS,
        PORTS,
        TEXT,
    ),
)


def outcome(
    call: Callable[..., T], *args: Any, errors: type[BaseException] = ValueError
) -> tuple[T | None, BaseException | None]:
    """``(result, None)``, or ``(None, error)`` when ``call`` raised one of ``errors``."""
    try:
        return call(*args), None
    except errors as error:
        return None, error


def is_device_name(name: str) -> bool:
    """Whether Windows would open a device for ``name`` (the stem decides)."""
    return name.partition(".")[0].rstrip(" ").upper() in DEVICES


def lands_in(folder: str, name: str) -> bool:
    """Whether ``name`` joined to ``folder`` is a file directly inside it."""
    joined = os.path.normpath(os.path.join(folder, name))
    return os.path.dirname(joined) == os.path.normpath(folder) and joined != folder


# -- URLs -------------------------------------------------------------------------


@pytest.mark.property
@given(URLISH)
def test_check_url_accepts_only_http_urls_and_is_idempotent(url: str) -> None:
    try:
        checked = check_url(url)
    except ValueError:
        return
    parts = urlsplit(checked)
    assert parts.scheme in ("http", "https")
    assert parts.hostname
    assert checked.isascii()
    assert not re.search(r"[\x00-\x20\x7f#]", checked)
    assert check_url(checked) == checked
    filename_from_url(checked)  # never raises for a URL that passed the check


@pytest.mark.property
@given(URLISH)
def test_filename_from_url_raises_only_value_error(url: str) -> None:
    try:
        name = filename_from_url(url)
    except ValueError:
        return
    assert name is None or (name and not is_device_name(name) and lands_in("out", name))


# -- s3:// URIs and buckets -----------------------------------------------------------


@pytest.mark.property
@given(
    st.one_of(TEXT, st.builds("s3://{}".format, TEXT), st.builds("S3://{}/{}".format, TEXT, TEXT))
)
def test_parse_s3_uri_on_any_text(uri: str) -> None:
    location, error = outcome(parse_s3_uri, uri)
    if error is not None:
        assert repr(uri) in str(error)  # the message names the input (SPEC §3.7)
        return
    assert location is not None
    assert BUCKET_RULE.fullmatch(location.bucket)
    assert uri[5:] == f"{location.bucket}/{location.key}" or uri[5:] == location.bucket
    assert parse_s3_uri(location.uri) == location


@pytest.mark.property
@given(st.one_of(TEXT, st.from_regex(r"[A-Za-z0-9._\-]{0,300}", fullmatch=True)))
def test_bucket_rule_is_exactly_the_spec(name: str) -> None:
    valid = BUCKET_RULE.fullmatch(name) is not None
    checked, error = outcome(check_bucket_name, name)
    if error is not None:
        assert not valid
        assert repr(name) in str(error)
        return
    assert valid
    assert checked == name
    assert S3Location.parse(f"s3://{name}/k") == S3Location(name, "k")


# -- through a real server -------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[FaultServer]:
    """One loopback server for every example (hypothesis reruns a test many times)."""
    with FaultServer() as started:
        yield started
    assert not started.errors


@pytest.fixture(scope="module")
def folder() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="pyvo-dl-prop-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.property
@SERVER_SETTINGS
@given(TEXT.filter(bool))
def test_s3_key_round_trips_through_a_server(
    server: FaultServer, folder: str, loopback_guard: LoopbackGuard, key: str
) -> None:
    """SPEC §2.2: what the server decodes from the request path is the key, exactly."""
    data = key.encode("utf-8") + b"\x00payload"
    server.add_file(f"/{BUCKET}/{key}", data)
    target = os.path.join(folder, "object")
    try:
        pyvo_dl.aws_download(
            bucket=BUCKET, key=key, local_filepath=target, endpoint_url=server.base_url,
            progress=False, retries=0, connections=1,
        )  # fmt: skip
        raw = server.requests[-1].path
        with open(target, "rb") as f:
            assert f.read() == data
    finally:
        server.remove_file(f"/{BUCKET}/{key}")
        if os.path.exists(target):
            os.remove(target)
    assert raw.startswith(f"/{BUCKET}/")
    sent = raw[len(BUCKET) + 2 :]
    assert unquote(sent, errors="strict") == key
    assert re.fullmatch(r"[A-Za-z0-9\-_.~/%]*", sent)
    assert sent == quote_key(key)


PATH_TEXT = st.text(
    st.characters(exclude_categories=("Cs", "Cc"), exclude_characters="%?#\\"), min_size=1
)


@pytest.mark.property
@SERVER_SETTINGS
@given(PATH_TEXT)
def test_url_path_round_trips_through_a_server(
    server: FaultServer, folder: str, loopback_guard: LoopbackGuard, path: str
) -> None:
    """A URL with spaces or non-ASCII characters reaches the server as the path it names."""
    wanted = "/h/" + path.strip()
    server.add_file(wanted, b"x")
    target = os.path.join(folder, "page")
    try:
        pyvo_dl.http_download(
            server.base_url + wanted, target, cache=False, progress=False, retries=0
        )
        raw = server.requests[-1].path
    finally:
        server.remove_file(wanted)
        if os.path.exists(target):
            os.remove(target)
    assert raw.isascii()
    assert unquote(raw, errors="strict") == wanted


# -- headers ---------------------------------------------------------------------------

DIGITS = st.integers(0, 10**30).map(str)
CONTENT_RANGES = st.one_of(
    TEXT,
    st.builds(
        "{}{}-{}/{}".format,
        st.sampled_from(["bytes ", "BYTES  ", " bytes\t", "bits ", "bytes=", ""]),
        st.one_of(DIGITS, st.sampled_from(["", "-1", "+1", "٣", "1_0", "*"])),
        st.one_of(DIGITS, st.sampled_from(["", "-1", "0x10"])),
        st.one_of(DIGITS, st.sampled_from(["*", "", "-5", "1e3"])),
    ),
)


@pytest.mark.property
@given(CONTENT_RANGES)
def test_content_range_raises_only_value_error(value: str) -> None:
    try:
        parsed = parse_content_range(value)
    except ValueError:
        return
    assert (parsed.start is None) == (parsed.end is None)
    if parsed.start is None:
        assert parsed.total is not None
    else:
        assert 0 <= parsed.start <= parsed.end
        assert parsed.total is None or parsed.end < parsed.total


@pytest.mark.property
@given(st.one_of(TEXT, st.lists(st.one_of(DIGITS, TEXT), max_size=4).map(", ".join)))
def test_content_length_never_raises(value: str) -> None:
    length = parse_content_length(value)
    assert length is None or (isinstance(length, int) and length >= 0)


YEARS = st.one_of(st.integers(0, 12000), st.integers(0, 10**40)).map(str)
HTTP_DATES = st.one_of(
    st.builds(
        "{}, {:02d} {} {} {:02d}:{:02d}:{:02d} {}".format,
        st.sampled_from(["Thu", "Sun", "Xyz"]),
        st.integers(0, 99),
        st.sampled_from(["Jan", "Feb", "Dec", "Foo"]),
        YEARS,
        st.integers(0, 99),
        st.integers(0, 99),
        st.integers(0, 99),
        st.sampled_from(["GMT", "UTC", "+0000", "-9999", "+99999", "PST", ""]),
    ),
    st.builds("Sun Nov  6 08:49:37 {}".format, YEARS),
    st.builds("Sunday, 06-Nov-{} 08:49:37 GMT".format, YEARS),
)


@pytest.mark.property
@given(st.one_of(TEXT, DIGITS, HTTP_DATES))
def test_retry_after_never_raises_nor_goes_negative(value: str) -> None:
    """A 503's Retry-After, however absurd, is a number of seconds or None, never a crash."""
    delay = parse_retry_after(value, NOW)
    assert delay is None or delay >= 0.0


# -- file names ------------------------------------------------------------------------

HOSTILE_PIECES = [
    *"ab.~/\\:*?\"<>| \t\r\n\x00\x7f\u202e\u2066\u00e9\u0085",
    "CON", "nul", "COM1", "LPT\u00b9", "aux ", "..", "%2e", "%2F", "%00",
]  # fmt: skip
HOSTILE_NAME = st.lists(st.sampled_from(HOSTILE_PIECES), max_size=12).map("".join)
DISPOSITIONS = st.one_of(
    TEXT,
    st.builds('attachment; filename="{}"'.format, HOSTILE_NAME),
    st.builds("attachment; filename={}".format, HOSTILE_NAME),
    st.builds("attachment; filename*=UTF-8''{}".format, HOSTILE_NAME.map(quote)),
    st.builds(
        "inline; filename*={}''{}".format,
        st.sampled_from(["utf-8", "latin-1", "koi8-r", ""]),
        HOSTILE_NAME,
    ),
)


def check_name(name: str | None) -> None:
    """SPEC §3.5 for a derived name: None, or one safe component inside the folder."""
    if name is None:
        return
    assert name.strip()
    assert name not in (".", "..")
    assert not is_device_name(name)
    assert not re.search(r"[\x00-\x1f\x7f/\\]", name)
    assert lands_in("out", name)
    assert lands_in(os.path.abspath("out"), name)


@pytest.mark.property
@given(DISPOSITIONS)
def test_content_disposition_names_stay_in_the_folder(value: str) -> None:
    check_name(filename_from_content_disposition(value))


@pytest.mark.property
@given(st.one_of(TEXT, HOSTILE_NAME, st.lists(HOSTILE_NAME, max_size=4).map("/".join)))
def test_s3_key_names_stay_in_the_folder(key: str) -> None:
    check_name(filename_from_s3_key(key))


@pytest.mark.property
@given(st.one_of(HOSTILE_NAME.map(quote), HOSTILE_NAME, TEXT))
def test_url_names_stay_in_the_folder(tail: str) -> None:
    check_name(filename_from_url("https://example.com/d/" + tail))
    check_name(filename_from_url("https://example.com/d/x?file=" + tail))


@pytest.mark.property
@given(st.lists(st.one_of(HOSTILE_NAME, TEXT), min_size=1, max_size=5).map("/".join))
def test_safe_join_of_s3_layouts_stays_below_the_folder(relative: str) -> None:
    folder = os.path.abspath("out")
    joined, error = outcome(safe_join, folder, relative)
    if error is not None:
        assert repr(relative) in str(error)
        return
    assert os.path.normpath(str(joined)).startswith(folder + os.sep)


# -- S3 XML ------------------------------------------------------------------------------

XML_PIECES = st.sampled_from(
    [
        "<ListBucketResult>", "</ListBucketResult>", "<Contents>", "</Contents>",
        "<Key>", "</Key>", "<Size>", "</Size>", "12", "-1", "1e3",
        "<IsTruncated>", "</IsTruncated>", "true", "false", "maybe",
        "<NextContinuationToken>", "</NextContinuationToken>",
        "<EncodingType>url</EncodingType>", "%ff", "%", "+", "&amp;", "&lt;", "&#0;",
        "&#x110000;", "&x;", "<!DOCTYPE x [<!ENTITY x 'y'>]>", "<!ENTITY z 'w'>",
        "<?xml version='1.0' encoding='utf-16'?>", "<?xml version='1.0'?>", "<![CDATA[<]]>",
        "<Error>", "</Error>", "<Code>", "</Code>", "\x00", "é", "<", ">",
        "<CommonPrefixes>", "<Prefix>", "</Prefix>", "</CommonPrefixes>",
    ]
)  # fmt: skip
XMLISH = st.one_of(
    st.binary(max_size=300),
    st.lists(st.one_of(XML_PIECES, TEXT), max_size=16).map(lambda parts: "".join(parts).encode()),
)


@pytest.mark.property
@given(XMLISH)
def test_listing_parser_raises_only_s3_errors(body: bytes) -> None:
    """Malformed listings are an S3Error (a DownloadError), never an ExpatError."""
    page, error = outcome(
        parse_list_objects_v2, body, BUCKET, "http://127.0.0.1/list", errors=S3Error
    )
    if error is not None:
        assert isinstance(error, DownloadError)
        return
    assert page is not None
    assert all(obj.size >= 0 for obj in page.keys)
    assert page.is_truncated == (page.next_token is not None)


@pytest.mark.property
@given(XMLISH, st.sampled_from([301, 400, 403, 404, 409, 500, 503]))
def test_error_parser_never_raises(body: bytes, status: int) -> None:
    error = parse_error_xml(body, status, BUCKET, "k")
    assert isinstance(error, S3Error)
    assert error.status == status
    assert error.code


LAUGHS = "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10 if i else "lol"}">' for i in range(10))
BILLION_LAUGHS = {
    "internal entities": f"<?xml version='1.0'?><!DOCTYPE x [{LAUGHS}]>"
    "<ListBucketResult><Contents><Key>&lol9;</Key><Size>1</Size></Contents>"
    "</ListBucketResult>".encode(),
    "external entity": b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY e SYSTEM 'file:///etc/passwd'>]>"
    b"<ListBucketResult><Contents><Key>&e;</Key><Size>1</Size></Contents></ListBucketResult>",
    "UTF-16 with a BOM": (
        "\ufeff<?xml version='1.0' encoding='utf-16'?><!DOCTYPE x [" + LAUGHS + "]>"
        "<ListBucketResult><Contents><Key>&lol9;</Key><Size>1</Size></Contents>"
        "</ListBucketResult>"
    ).encode("utf-16-le"),
    "error document": f"<!DOCTYPE Error [{LAUGHS}]><Error><Code>&lol9;</Code></Error>".encode(),
}


@pytest.mark.parametrize("case", list(BILLION_LAUGHS))
def test_entity_bombs_are_refused_unexpanded(case: str) -> None:
    """A document type declaration is refused outright: nothing expands, at once."""
    body = BILLION_LAUGHS[case]
    started = time.perf_counter()
    with pytest.raises(S3Error) as info:
        parse_list_objects_v2(body, BUCKET, "http://127.0.0.1/list")
    error = parse_error_xml(body, 403, BUCKET, "k")
    assert time.perf_counter() - started < 0.5
    assert info.value.code == "MalformedListing"
    assert error.code == "AccessDenied"  # from the status: the body was not read
    assert "lol" not in str(info.value) + str(error)


def test_entity_bomb_listing_from_a_server_is_a_clean_error(
    http_server: FaultServer, tmp_path: os.PathLike[str]
) -> None:
    """A recursive download whose listing is a billion laughs fails fast, writing nothing."""
    http_server.add_file(
        f"/{BUCKET}", BILLION_LAUGHS["internal entities"], content_type="application/xml"
    )
    started = time.perf_counter()
    with pytest.raises(DownloadError, match=r"MalformedListing|could not be read"):
        pyvo_dl.aws_download(
            uri=f"s3://{BUCKET}/data/", local_filepath=os.fspath(tmp_path), recursive=True,
            endpoint_url=http_server.base_url, progress=False,
        )  # fmt: skip
    assert time.perf_counter() - started < 2.0
    assert os.listdir(tmp_path) == []


def test_entity_bomb_error_body_from_a_server_is_a_clean_error(
    http_server: FaultServer, tmp_path: os.PathLike[str]
) -> None:
    """An S3 error answer holding a billion laughs gives the status's error, unexpanded."""
    http_server.set_fault(f"/{BUCKET}/k.fits", status=403, body=BILLION_LAUGHS["error document"])
    target = os.path.join(os.fspath(tmp_path), "k.fits")
    with pytest.raises(S3Error) as info:
        pyvo_dl.aws_download(
            bucket=BUCKET, key="k.fits", local_filepath=target,
            endpoint_url=http_server.base_url, progress=False,
        )  # fmt: skip
    assert info.value.code == "AccessDenied"
    assert "lol" not in str(info.value)
    assert not os.path.exists(target)


_TEXT = st.text()
_HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
_SIZES = st.integers(min_value=0, max_value=2**62)


@st.composite
def _states(draw: st.DrawFn) -> Any:
    """States as pyvo_dl writes them: header-safe validators, real digests, a whole part map."""
    import hashlib

    from pyvo_dl._partfile import PartRange, PartState

    etag = draw(st.none() | _HEADER_TEXT)
    last_modified = draw(st.none() | _HEADER_TEXT)
    size = draw(st.none() | _SIZES)
    data = draw(st.binary(max_size=32))
    checksums = draw(
        st.lists(
            st.sampled_from(
                [("md5", hashlib.md5(data).hexdigest()),
                 ("sha256", hashlib.sha256(data).hexdigest()),
                 ("crc32", format(zlib.crc32(data), "08x"))]
            ),
            max_size=3,
        )
    )  # fmt: skip
    parts = []
    if size and draw(st.booleans()):
        for start, end in plan_ranges(size, draw(st.integers(1, 8))):
            parts.append(PartRange(start, end, draw(st.integers(0, end - start + 1))))
    return PartState(
        draw(_TEXT), draw(_TEXT), draw(st.sampled_from([None, etag, last_modified])), etag,
        size, last_modified=last_modified, checksums=checksums, parts=parts,
    )  # fmt: skip


@given(_states())
def test_part_state_survives_its_file(state: Any) -> None:
    """A .part.json read back is the state that was written (any text, any size)."""
    import json

    from pyvo_dl._partfile import PartState

    assert PartState.from_json(json.loads(state.to_json())) == state


@given(_states(), st.data())
def test_part_counts_rewritten_in_place_are_read_back(state: Any, data: Any) -> None:
    """Each part's count rewritten at its slot is what the state file then says (issue 12.3)."""
    import json

    from pyvo_dl._partfile import DONE_WIDTH, PartState, format_done

    text, slots = state.to_json_with_slots()
    assert text == state.to_json()
    raw = bytearray(text.encode("ascii"))
    for part in state.parts:
        offset = slots[part.start]
        assert offset // 4096 == (offset + DONE_WIDTH - 1) // 4096  # one page
        part.done = data.draw(st.integers(0, part.end - part.start + 1))
        raw[offset : offset + DONE_WIDTH] = format_done(part.done).encode("ascii")
    assert PartState.from_json(json.loads(bytes(raw))) == state


@pytest.mark.parametrize("length", range(4000, 4100, 7))
def test_no_part_count_crosses_a_page(length: int) -> None:
    """A long URL pushes the counts across 4 KiB: each is moved to start the next page."""
    from pyvo_dl._partfile import DONE_WIDTH, PartRange, PartState

    parts = [PartRange(i * 100, i * 100 + 99, i) for i in range(8)]
    state = PartState("u" * length, "u", None, '"e"', 800, parts=parts)
    text, slots = state.to_json_with_slots()
    for part in parts:
        offset = slots[part.start]
        assert offset // 4096 == (offset + DONE_WIDTH - 1) // 4096
        assert int(text[offset : offset + DONE_WIDTH]) == part.done


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
_STATE_KEYS = [
    "identity",
    "url",
    "validator",
    "etag",
    "size",
    "last_modified",
    "checksums",
    "parts",
]


@given(st.dictionaries(st.sampled_from(_STATE_KEYS), _JSON), st.sampled_from([1, 2, "1", None]))
def test_a_state_file_is_a_state_or_a_value_error(fields: dict[str, Any], marker: object) -> None:
    """Whatever a .part.json holds, reading it is a state or a ValueError saying why (12.9)."""
    from pyvo_dl._partfile import PartState

    try:
        state = PartState.from_json({"pyvo_dl": marker, **fields})
    except ValueError:
        return
    assert isinstance(state, PartState)
    assert state.size is None or state.size >= 0
    assert all(v is None or v.isprintable() for v in (state.validator, state.etag))


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"identity": "u", "url": "u", "validator": None, "etag": None, "size": 1},  # no marker
        {"pyvo_dl": 1, "identity": "u", "url": "u", "validator": None, "etag": None, "size": True},
        {"pyvo_dl": 1, "identity": "u", "url": "u", "validator": 5, "etag": None, "size": 1},
        {"pyvo_dl": 1, "identity": "u", "url": "u", "validator": None, "etag": None, "size": 1,
         "parts": [[0, 1]]},
        {"pyvo_dl": 1, "identity": "u", "url": "u", "validator": None, "etag": None, "size": 1,
         "checksums": [["md5"]]},
        [],
        "text",
    ],
)  # fmt: skip
def test_part_state_refuses_what_it_did_not_write(data: object) -> None:
    """A torn, edited or foreign .part.json is no state: a ValueError says why."""
    from pyvo_dl._partfile import PartState

    with pytest.raises(ValueError):  # noqa: PT011 - any reason: the point is no other error
        PartState.from_json(data)

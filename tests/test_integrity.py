"""Checksums (SPEC §2.1, §2.2, §3.1): parsing, S3 headers, verification."""

from __future__ import annotations

import ast
import base64
import email.message
import hashlib
import importlib.util
import os
import pathlib
import pickle
import re
import struct
import subprocess
import sys
import textwrap
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyvo_dl import _integrity
from pyvo_dl._integrity import (
    FILE_BUFFER_SIZE,
    Checksum,
    RangeCrcs,
    Verifier,
    checksums_from_s3_headers,
    crc32c,
    crc_combine,
    file_digests,
    has_fast_crc32c,
    unverified_s3_checksums,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    import random
    from typing import Mapping

DATA = b"123456789"
MD5 = hashlib.md5(DATA).hexdigest()
SHA1 = hashlib.sha1(DATA).hexdigest()
SHA256 = hashlib.sha256(DATA).hexdigest()
CRC32 = "cbf43926"  # the CRC catalogue's check value
CRC32C = "e3069283"  # RFC 3720 / the CRC catalogue's check value


def b64(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode("ascii")


# -- crc32c ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", 0x00000000),
        (b"123456789", 0xE3069283),
        (b"a", 0xC1D04330),
        # RFC 3720, appendix B.4.
        (bytes(32), 0x8A9136AA),
        (b"\xff" * 32, 0x62A8AB43),
        (bytes(range(32)), 0x46DD794E),
        (bytes(range(31, -1, -1)), 0x113FDB5C),
    ],
)
@pytest.mark.parametrize("implementation", ["selected", "pure-python"])
def test_crc32c_vectors(data: bytes, expected: int, implementation: str) -> None:
    if implementation == "selected":
        assert crc32c(data) == expected
        assert crc32c(memoryview(bytearray(data))) == expected
    else:
        assert _integrity._crc32c_python(0, data) == expected
        assert _integrity._crc32c_python(0, memoryview(bytearray(data))) == expected


def test_crc32c_continues_from_a_previous_value() -> None:
    assert crc32c(b"56789", crc32c(b"1234")) == 0xE3069283


def test_has_fast_crc32c_tells_whether_an_extension_is_used() -> None:
    installed = any(importlib.util.find_spec(name) for name in ("crc32c", "google_crc32c"))
    assert has_fast_crc32c() is installed


# -- Checksum.parse ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("sha256:" + SHA256, Checksum("sha256", SHA256)),
        ("SHA256:" + SHA256.upper(), Checksum("sha256", SHA256)),
        ("SHA-256:" + SHA256, Checksum("sha256", SHA256)),
        (" sha256 : " + SHA256 + " ", Checksum("sha256", SHA256)),
        ("md5:" + MD5, Checksum("md5", MD5)),
        ("sha1:" + SHA1, Checksum("sha1", SHA1)),
        ("crc32:" + CRC32, Checksum("crc32", CRC32)),
        ("CRC32C:" + CRC32C.upper(), Checksum("crc32c", CRC32C)),
        ("CRC-32C:" + CRC32C, Checksum("crc32c", CRC32C)),
        ("sha3-256:" + "ab" * 32, Checksum("sha3_256", "ab" * 32)),
        ("sha3_512:" + "ab" * 64, Checksum("sha3_512", "ab" * 64)),
        ("blake2b:" + "cd" * 64, Checksum("blake2b", "cd" * 64)),
        ("shake_128:" + "ef" * 16, Checksum("shake_128", "ef" * 16)),
    ],
)
def test_checksum_parse(spec: str, expected: Checksum) -> None:
    assert Checksum.parse(spec) == expected


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("sha256", "not of the form"),
        ("", "not of the form"),
        (":" + SHA256, "not of the form"),
        (SHA256, "not of the form"),
        ("sha256:", "not hexadecimal"),
        ("sha256:" + "g" * 64, "not hexadecimal"),
        ("sha256:0x" + SHA256[2:], "not hexadecimal"),
        ("sha256:" + SHA256[:-1], "64 hex digits, not 63"),
        ("md5:" + SHA256, "32 hex digits, not 64"),
        ("crc32:123", "8 hex digits, not 3"),
        ("crc32c:" + CRC32C + "00", "8 hex digits, not 10"),
        ("shake_128:abc", "odd number"),
        ("nosuch:abcd", "unknown algorithm 'nosuch'"),
        ("sha256sum:" + SHA256, "unknown algorithm"),
    ],
)
def test_checksum_parse_refuses(spec: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(spec))) as info:
        Checksum.parse(spec)
    assert reason in str(info.value)


def test_checksum_parse_refuses_a_non_string() -> None:
    with pytest.raises(TypeError, match="None"):
        Checksum.parse(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "spec",
    ["sha256:" + SHA256, "md5:" + MD5, "crc32:" + CRC32, "crc32c:" + CRC32C, "shake_256:0a0b"],
)
def test_checksum_round_trips(spec: str) -> None:
    checksum = Checksum.parse(spec)
    assert str(checksum) == spec
    assert Checksum.parse(str(checksum)) == checksum


def test_checksum_is_a_named_tuple() -> None:
    checksum = Checksum("md5", MD5)
    assert checksum == ("md5", MD5)
    assert (checksum.algorithm, checksum.expected) == ("md5", MD5)
    assert repr(checksum) == f"Checksum(algorithm='md5', expected='{MD5}')"
    assert Checksum._fields == ("algorithm", "expected")
    assert type(checksum._replace(expected="0" * 32)) is Checksum
    assert pickle.loads(pickle.dumps(checksum)) == checksum
    assert hash(checksum) == hash(("md5", MD5))
    assert not hasattr(checksum, "__dict__")


def test_hashlib_is_imported_only_for_a_hashlib_checksum() -> None:
    """OpenSSL costs milliseconds to load: no checksum or a CRC never loads it."""
    code = textwrap.dedent(
        """
        import sys
        BEFORE = set(sys.modules)
        from pyvo_dl._integrity import Checksum, Verifier, file_digests
        LAZY = ("hashlib", "zlib", "base64", "typing")
        def loaded():
            return sorted(m for m in LAZY if m in set(sys.modules) - BEFORE)
        verifier = Verifier([])
        verifier.update(b"123456789")
        assert verifier.mismatches() == [] and file_digests("no such file", []).checksums == ()
        print(loaded())
        verifier = Verifier([Checksum.parse("crc32c:e3069283")])
        verifier.update(b"123456789")
        assert verifier.mismatches() == []
        print(loaded())
        verifier = Verifier([Checksum.parse("crc32:cbf43926")])
        verifier.update(b"123456789")
        assert verifier.mismatches() == []
        print(loaded())
        Checksum.parse("sha256:" + "0" * 64)
        print(loaded())
        """
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # -S: a site-packages .pth hook may import hashlib or typing before us.
    result = subprocess.run(
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    phases = [ast.literal_eval(line) for line in result.stdout.splitlines()]
    no_checksum, crc32c_only, crc32_only, sha256 = phases
    assert no_checksum == crc32c_only == []
    assert "hashlib" not in crc32_only
    assert "hashlib" in sha256


# -- checksums_from_s3_headers -------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"ETag": f'"{MD5}"'}, [Checksum("md5", MD5)]),
        ({"etag": f'"{MD5.upper()}"'}, [Checksum("md5", MD5)]),
        ({"ETag": MD5}, [Checksum("md5", MD5)]),
        ({"ETag": f'"{MD5}-3"'}, []),
        ({"ETag": f'W/"{MD5}"'}, []),
        ({"ETag": '"not-an-md5"'}, []),
        ({"ETag": f'"{MD5}"', "x-amz-server-side-encryption": "AES256"}, [Checksum("md5", MD5)]),
        ({"ETag": f'"{MD5}"', "x-amz-server-side-encryption": "aws:kms"}, []),
        ({"ETag": f'"{MD5}"', "x-amz-server-side-encryption": "aws:kms:dsse"}, []),
        ({"ETag": f'"{MD5}"', "x-amz-server-side-encryption-customer-algorithm": "AES256"}, []),
        ({"x-amz-checksum-crc32": "y/Q5Jg=="}, [Checksum("crc32", CRC32)]),
        ({"X-Amz-Checksum-CRC32C": b64(CRC32C)}, [Checksum("crc32c", CRC32C)]),
        ({"x-amz-checksum-sha1": b64(SHA1)}, [Checksum("sha1", SHA1)]),
        ({"x-amz-checksum-sha256": b64(SHA256)}, [Checksum("sha256", SHA256)]),
        (
            {
                "x-amz-checksum-sha256": b64(SHA256),
                "x-amz-checksum-crc32": b64(CRC32),
                "ETag": f'"{MD5}"',
                "x-amz-checksum-type": "FULL_OBJECT",
            },
            [Checksum("md5", MD5), Checksum("crc32", CRC32), Checksum("sha256", SHA256)],
        ),
        # Composite checksums are of the parts, not of the object.
        ({"x-amz-checksum-crc32": "y/Q5Jg==-3"}, []),
        ({"x-amz-checksum-sha256": b64(SHA256), "x-amz-checksum-type": "COMPOSITE"}, []),
        ({"x-amz-checksum-sha256": b64(SHA256), "x-amz-checksum-type": "composite"}, []),
        # A multipart upload's value is the object's only when S3 says so
        # (moto's HEAD leaves the type and the part count out of a composite).
        ({"x-amz-checksum-sha256": b64(SHA256), "ETag": f'"{MD5}-2"'}, []),
        # nginx's ETag (mtime-size in hex) is no multipart one, even all digits.
        (
            {"x-amz-checksum-sha256": b64(SHA256), "ETag": '"6565e4a1-10000000"'},
            [Checksum("sha256", SHA256)],
        ),
        (
            {
                "x-amz-checksum-crc32": b64(CRC32),
                "ETag": f'"{MD5}-2"',
                "x-amz-checksum-type": "FULL_OBJECT",
            },
            [Checksum("crc32", CRC32)],
        ),
        # Malformed values are skipped, never an error.
        ({"x-amz-checksum-crc32": "not base64!"}, []),
        ({"x-amz-checksum-crc32": b64("abcdef")}, []),
        ({"x-amz-checksum-sha256": b64(SHA1)}, []),
        ({"x-amz-checksum-crc32": ""}, []),
        ({"x-amz-checksum-crc64nvme": "AAAAAAAAAAA="}, []),
        ({}, []),
    ],
)
def test_checksums_from_s3_headers(headers: Mapping[str, str], expected: list[Checksum]) -> None:
    assert checksums_from_s3_headers(headers) == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x-amz-checksum-crc32": "y/Q5Jg==-3", "x-amz-checksum-type": "COMPOSITE"},
         ["x-amz-checksum-crc32 (COMPOSITE: of the parts, not of the object)"]),
        ({"x-amz-checksum-crc32": "y/Q5Jg==-3"},
         ["x-amz-checksum-crc32 (COMPOSITE: of the parts, not of the object)"]),
        ({"x-amz-checksum-sha256": b64(SHA256), "ETag": f'"{MD5}-2"'},
         [("x-amz-checksum-sha256 (of a multipart upload, and no x-amz-checksum-type: "
           "FULL_OBJECT says it is of the whole object)")]),
        ({"x-amz-checksum-crc64nvme": "AAAAAAAAAAA="},
         ["x-amz-checksum-crc64nvme (not an algorithm pyvo_dl computes)"]),
        ({"x-amz-checksum-crc32": "not base64!"},
         ["x-amz-checksum-crc32 (malformed: 'not base64!')"]),
        # What is verified, and what only describes the upload, is not listed.
        ({"x-amz-checksum-crc32": b64(CRC32), "x-amz-checksum-type": "FULL_OBJECT",
          "x-amz-checksum-algorithm": "CRC32", "ETag": f'"{MD5}-2"'}, []),
        ({"ETag": f'"{MD5}-2"'}, []),
    ],
)  # fmt: skip
def test_unverified_s3_checksums_say_why(headers: Mapping[str, str], expected: list[str]) -> None:
    assert unverified_s3_checksums(headers) == expected
    listed = {phrase.split(" ")[0] for phrase in expected}
    verified = {"x-amz-checksum-" + c.algorithm for c in checksums_from_s3_headers(headers)}
    assert not listed & verified


def test_checksums_from_s3_headers_reads_an_http_message() -> None:
    # http.client hands over an email.message.Message subclass.
    message = email.message.Message()
    message["ETag"] = f'"{MD5}"'
    message["x-amz-checksum-crc32c"] = b64(CRC32C)
    assert checksums_from_s3_headers(message) == [  # type: ignore[arg-type]
        Checksum("md5", MD5),
        Checksum("crc32c", CRC32C),
    ]


def test_s3_checksums_verify_the_object_they_describe() -> None:
    headers = {
        "ETag": f'"{MD5}"',
        "x-amz-checksum-crc32": b64(format(zlib.crc32(DATA), "08x")),
        "x-amz-checksum-crc32c": base64.b64encode(struct.pack(">I", crc32c(DATA))).decode(),
        "x-amz-checksum-sha1": b64(SHA1),
        "x-amz-checksum-sha256": b64(SHA256),
    }
    verifier = Verifier(checksums_from_s3_headers(headers))
    verifier.update(DATA)
    assert len(verifier.checksums) == 5
    assert verifier.mismatches() == []


# -- Verifier -------------------------------------------------------------------------------


ALL_GOOD = [
    Checksum("md5", MD5),
    Checksum("sha1", SHA1),
    Checksum("sha256", SHA256),
    Checksum("crc32", CRC32),
    Checksum("crc32c", CRC32C),
    Checksum("blake2b", hashlib.blake2b(DATA).hexdigest()),
    Checksum("sha3_256", hashlib.sha3_256(DATA).hexdigest()),
    Checksum("shake_128", hashlib.shake_128(DATA).hexdigest(16)),
]


@pytest.mark.parametrize("checksum", ALL_GOOD, ids=lambda checksum: checksum.algorithm)
@pytest.mark.parametrize(
    "pieces",
    [
        [DATA],
        [b"1234", b"56789"],
        [memoryview(b"12"), bytearray(b"345"), b"", memoryview(bytearray(b"6789"))],
        [bytes([byte]) for byte in DATA],
    ],
    ids=["whole", "two", "mixed-types", "bytewise"],
)
def test_verifier_matches(checksum: Checksum, pieces: list[bytes]) -> None:
    verifier = Verifier([checksum])
    for piece in pieces:
        verifier.update(piece)
    assert verifier.mismatches() == []
    assert verifier.verify() == []
    assert verifier.digests() == {checksum.algorithm: checksum.expected}


@pytest.mark.parametrize("good", ALL_GOOD, ids=lambda checksum: checksum.algorithm)
def test_verifier_reports_the_actual_digest(good: Checksum) -> None:
    wrong = Checksum(good.algorithm, "0" * len(good.expected))
    verifier = Verifier([wrong])
    verifier.update(DATA)
    assert verifier.mismatches() == [(wrong, good.expected)]


def test_verifier_shares_one_hash_per_algorithm() -> None:
    right, wrong = Checksum("md5", MD5), Checksum("md5", "f" * 32)
    verifier = Verifier([right, wrong, Checksum("sha256", SHA256)])
    verifier.update(DATA)
    assert verifier.mismatches() == [(wrong, MD5)]
    assert verifier.digests() == {"md5": MD5, "sha256": SHA256}
    assert len(verifier._updates) == 2


def test_verifier_without_checksums_accepts_anything() -> None:
    verifier = Verifier([])
    verifier.update(b"anything")
    assert verifier.mismatches() == []
    assert verifier.digests() == {}


def test_verifier_creates_hashes_lazily() -> None:
    verifier = Verifier([Checksum("sha256", SHA256)])
    assert verifier._hashers is None
    verifier.update(b"")
    assert verifier._hashers is not None


def test_verifier_does_not_keep_the_callers_buffer() -> None:
    buffer = bytearray(DATA)
    verifier = Verifier([Checksum("sha256", SHA256), Checksum("crc32c", CRC32C)])
    verifier.update(memoryview(buffer))
    buffer[:] = bytes(len(buffer))
    assert verifier.mismatches() == []


def test_digests_can_be_read_midway() -> None:
    verifier = Verifier([Checksum("sha256", SHA256)])
    verifier.update(b"1234")
    assert verifier.digests() == {"sha256": hashlib.sha256(b"1234").hexdigest()}
    verifier.update(b"56789")
    assert verifier.mismatches() == []


# -- file_digests ------------------------------------------------------------------


def payload(size: int) -> bytes:
    return (bytes(range(256)) * (size // 256 + 1))[:size]


@pytest.mark.parametrize(
    ("size", "start"),
    [
        (0, 0),
        (1, 0),
        (FILE_BUFFER_SIZE, 0),
        (FILE_BUFFER_SIZE + 1, 0),
        (2 * FILE_BUFFER_SIZE + 123, 0),
        (2 * FILE_BUFFER_SIZE + 123, 1000),
        (2 * FILE_BUFFER_SIZE + 123, FILE_BUFFER_SIZE + 5),
        (100, 100),
        (100, 500),
    ],
)
def test_file_digests(tmp_path: pathlib.Path, size: int, start: int) -> None:
    data = payload(size)
    path = tmp_path / "file.fits"
    path.write_bytes(data)
    expected = [
        Checksum("md5", hashlib.md5(data[start:]).hexdigest()),
        Checksum("sha256", hashlib.sha256(data[start:]).hexdigest()),
        Checksum("crc32", format(zlib.crc32(data[start:]), "08x")),
    ]
    assert file_digests(path, expected, start=start).mismatches() == []
    assert file_digests(str(path), expected[:1], start).mismatches() == []


def test_file_digests_then_update_continues_a_resumed_body(tmp_path: pathlib.Path) -> None:
    part = tmp_path / "file.fits.part"
    part.write_bytes(DATA[:4])
    verifier = file_digests(part, [Checksum("crc32c", CRC32C), Checksum("md5", MD5)])
    verifier.update(memoryview(DATA[4:]))
    assert verifier.mismatches() == []


def test_file_digests_reports_a_mismatch(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "file.fits"
    path.write_bytes(b"12345678X")
    wrong = Checksum("md5", MD5)
    assert file_digests(path, [wrong]).mismatches() == [
        (wrong, hashlib.md5(b"12345678X").hexdigest())
    ]


def test_file_digests_missing_file_is_an_os_error(tmp_path: pathlib.Path) -> None:
    with pytest.raises(FileNotFoundError):
        file_digests(tmp_path / "missing", [Checksum("md5", MD5)])


def test_file_digests_without_checksums_does_not_read(tmp_path: pathlib.Path) -> None:
    assert file_digests(tmp_path / "missing", []).mismatches() == []


# -- properties ------------------------------------------------------------------------


@pytest.mark.property
@given(st.binary(max_size=2048), st.lists(st.integers(0, 2048), max_size=6))
def test_verifier_is_independent_of_chunking(data: bytes, cuts: list[int]) -> None:
    checksums = [
        Checksum("md5", hashlib.md5(data).hexdigest()),
        Checksum("sha256", hashlib.sha256(data).hexdigest()),
        Checksum("crc32", format(zlib.crc32(data), "08x")),
        Checksum("crc32c", format(_integrity._crc32c_python(0, data), "08x")),
    ]
    verifier = Verifier(checksums)
    edges = [0, *sorted(cut for cut in cuts if cut <= len(data)), len(data)]
    view = memoryview(data)
    for begin, end in zip(edges, edges[1:]):
        verifier.update(view[begin:end])
    assert verifier.mismatches() == []


@pytest.mark.property
@given(st.binary(max_size=4096), st.binary(max_size=512))
def test_crc32c_implementations_agree_and_extend(head: bytes, tail: bytes) -> None:
    # With the crc32c or google_crc32c package installed this compares the
    # extension with the pure-Python table; without, it checks extension.
    whole = _integrity._crc32c_python(0, head + tail)
    assert crc32c(head + tail) == whole
    assert crc32c(tail, crc32c(head)) == whole


@pytest.mark.property
@given(st.sampled_from(sorted(["md5", "sha1", "sha256", "crc32", "crc32c", "sha512"])), st.binary())
def test_parse_accepts_every_real_digest(algorithm: str, data: bytes) -> None:
    verifier = Verifier([Checksum(algorithm, "")])
    verifier.update(data)
    actual = verifier.digests()[algorithm]
    assert Checksum.parse(f"{algorithm}:{actual}") == Checksum(algorithm, actual)
    assert Checksum.parse(f"{algorithm.upper()}:{actual.upper()}") == Checksum(algorithm, actual)


# -- CRCs of a split download, combined (no second pass over the file) ------------------


def _crc(algorithm: str, data: bytes) -> int:
    return zlib.crc32(data) if algorithm == "crc32" else _integrity._crc32c_python(0, data)


@pytest.mark.property
@given(st.sampled_from(["crc32", "crc32c"]), st.binary(max_size=2048), st.binary(max_size=2048))
def test_crc_combine_is_the_crc_of_the_concatenation(algorithm: str, a: bytes, b: bytes) -> None:
    combined = crc_combine(algorithm, _crc(algorithm, a), _crc(algorithm, b), len(b))
    assert combined == _crc(algorithm, a + b)


def test_crc_combine_over_a_large_second_piece() -> None:
    # Lengths of hundreds of MiB are what a split download combines.
    a, b = b"head", bytes(40 * 1024 * 1024 + 7)
    assert crc_combine("crc32", zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)


@pytest.mark.property
@given(
    st.sampled_from(["crc32", "crc32c"]),
    st.binary(min_size=1, max_size=4096),
    st.lists(st.integers(min_value=1, max_value=4095), max_size=6),
    st.randoms(use_true_random=False),
)
def test_range_crcs_verify_a_body_fed_range_by_range_in_any_order(
    algorithm: str, data: bytes, cuts: list[int], rng: random.Random
) -> None:
    edges = sorted({0, *(c for c in cuts if c < len(data)), len(data)})
    ranges = [(first, end - 1) for first, end in zip(edges, edges[1:])]
    good = Checksum(algorithm, format(_crc(algorithm, data), "08x"))
    crcs = RangeCrcs.for_download([good], ranges)
    assert crcs is not None
    for first, last in rng.sample(ranges, len(ranges)):
        crcs.hasher(first).update(memoryview(data)[first : last + 1])
    assert crcs.verifier().mismatches() == []
    wrong = Checksum(algorithm, format(_crc(algorithm, data) ^ 1, "08x"))
    bad = RangeCrcs.for_download([wrong], ranges)
    assert bad is not None
    for first, last in ranges:
        bad.hasher(first).update(data[first : last + 1])
    assert bad.verifier().mismatches() == [(wrong, good.expected)]


@pytest.mark.parametrize(
    "checksums",
    [
        [Checksum("sha256", "0" * 64)],
        [Checksum("crc32", "0" * 8), Checksum("md5", "0" * 32)],
        [Checksum("crc32", "0" * 8), Checksum("crc32c", "0" * 8)],
        [],
    ],
)
def test_range_crcs_only_for_one_crc(checksums: list[Checksum]) -> None:
    """What cannot be combined (a SHA-256, an MD5, two CRCs) is read back in one pass."""
    assert RangeCrcs.for_download(checksums, [(0, 9), (10, 19)]) is None

"""Checksums: parsing, S3's expected values, and incremental verification.

SPEC §2.1 (``checksum="sha256:<hex>"``), §2.2 (the object's MD5 from a plain
ETag, ``x-amz-checksum-*``) and §3.1 (nothing unverified reaches the
target). Besides every ``hashlib`` algorithm, ``crc32`` (zlib) and
``crc32c`` (Castagnoli, which S3 uses) are supported.

Pure except :func:`file_digests`, which reads the file it is given.
"""

from __future__ import annotations

import collections
import sys

# hashlib (OpenSSL) and zlib are imported where a checksum is parsed or
# computed: a download without one never loads them (SPEC §6).

TYPE_CHECKING = False
if TYPE_CHECKING:
    import os
    from typing import Any, Callable, Final, Iterable, Mapping, NamedTuple, Union

    _Buffer = Union[bytes, bytearray, memoryview]

__all__ = [
    "FILE_BUFFER_SIZE",
    "Checksum",
    "RangeCrcs",
    "Verifier",
    "checksums_from_s3_headers",
    "crc32c",
    "crc_combine",
    "file_digests",
    "has_fast_crc32c",
    "is_algorithm",
    "unverified_s3_checksums",
]

#: Bytes read at a time by :func:`file_digests` (one buffer, reused).
FILE_BUFFER_SIZE: Final = 1 << 20
# Digest sizes in bytes of the algorithms hashlib does not have.
_CRC_SIZES: Final = {"crc32": 4, "crc32c": 4}
_HEX_DIGITS: Final = frozenset("0123456789abcdefABCDEF")
# Checksums S3 may send, with their digest sizes.
_S3_CHECKSUMS: Final = (("crc32", 4), ("crc32c", 4), ("sha1", 20), ("sha256", 32))
# With these the ETag is not an MD5 of the data (SSE-KMS, DSSE-KMS).
_KMS_ENCRYPTION: Final = frozenset(["aws:kms", "aws:kms:dsse"])
# Integrity is not a security use: lets md5 work on FIPS-mode systems (3.9+).
_HASH_KWARGS: Final[dict[str, Any]] = (
    {"usedforsecurity": False} if sys.version_info >= (3, 9) else {}
)
_CRC32C_POLYNOMIAL: Final = 0x82F63B78  # reflected Castagnoli
_CRC32C_CHECK: Final = 0xE3069283  # crc32c(b"123456789"), RFC 3720 / the CRC catalogue


def _new_hash(algorithm: str) -> Any:
    if algorithm == "crc32":
        return _Crc(_zlib_crc32())
    if algorithm == "crc32c":
        return _Crc(_crc32c_function())
    import hashlib

    return hashlib.new(algorithm, **_HASH_KWARGS)


def _canonical_algorithm(name: str) -> str | None:
    lowered = name.strip().lower()
    # "SHA-256" and "sha3-256" are how people (and RFC 3230) spell them.
    candidates = (lowered, lowered.replace("-", ""), lowered.replace("-", "_"))
    # The CRCs first, so that a crc32c-only download never loads OpenSSL.
    for candidate in candidates:
        if candidate in _CRC_SIZES:
            return candidate
    import hashlib

    known = {algorithm.lower(): algorithm for algorithm in hashlib.algorithms_available}
    for candidate in candidates:
        if candidate in known:
            return known[candidate]
    return None


def is_algorithm(name: str) -> bool:
    """Whether ``name`` is a checksum algorithm that ``Checksum.parse`` knows.

    Examples
    --------
    >>> is_algorithm("SHA-256"), is_algorithm("crc32c"), is_algorithm("out")
    (True, True, False)
    """
    return bool(name.strip()) and _canonical_algorithm(name) is not None


def _digest_size(spec: str, algorithm: str) -> int:
    if algorithm in _CRC_SIZES:
        return _CRC_SIZES[algorithm]
    try:
        return int(_new_hash(algorithm).digest_size)
    except ValueError as e:
        # Listed by hashlib yet refused by OpenSSL (md4 under OpenSSL 3...).
        raise ValueError(f"checksum {spec!r}: algorithm {algorithm!r} is not usable: {e}") from e


if TYPE_CHECKING:

    class _ChecksumFields(NamedTuple):
        algorithm: str
        expected: str

else:
    # collections.namedtuple at run time (typing is not imported for it);
    # type checkers see the typed fields.
    _ChecksumFields = collections.namedtuple("Checksum", ["algorithm", "expected"])


class Checksum(_ChecksumFields):
    """An expected digest: the algorithm and its value in lower-case hex.

    Attributes
    ----------
    algorithm : str
        A ``hashlib`` name (``sha256``, ``md5``, ``blake2b``...), ``crc32``
        or ``crc32c``.
    expected : str
        The expected digest in lower-case hex (CRCs: 8 digits, big-endian).
    """

    __slots__ = ()

    @classmethod
    def parse(cls, spec: str) -> Checksum:
        """Parse ``"algorithm:hexdigest"``, the form of ``checksum=`` (SPEC §2.1).

        Parameters
        ----------
        spec : str
            For example ``"sha256:e3b0c442..."`` or ``"MD5:D41D8CD9..."``;
            the algorithm is case-insensitive and may be spelled ``SHA-256``.

        Returns
        -------
        Checksum
            With a canonical algorithm name and lower-case hex.

        Raises
        ------
        TypeError
            When ``spec`` is not a string.
        ValueError
            Naming the spec, for a missing ``:``, an unknown algorithm,
            digits that are not hex, or the wrong number of them.

        Examples
        --------
        >>> Checksum.parse("MD5:D41D8CD98F00B204E9800998ECF8427E")
        Checksum(algorithm='md5', expected='d41d8cd98f00b204e9800998ecf8427e')
        >>> str(Checksum.parse("crc32c:e3069283"))
        'crc32c:e3069283'
        """
        if not isinstance(spec, str):
            raise TypeError(f"checksum {spec!r} is not a string like 'sha256:<hex digest>'")
        name, colon, digest = spec.partition(":")
        digest = digest.strip()
        if not colon or not name.strip():
            raise ValueError(
                f"checksum {spec!r} is not of the form 'algorithm:hexdigest' "
                "(for example 'sha256:<64 hex digits>')"
            )
        algorithm = _canonical_algorithm(name)
        if algorithm is None:
            import hashlib

            choices = ", ".join(sorted(hashlib.algorithms_guaranteed | set(_CRC_SIZES)))
            raise ValueError(f"checksum {spec!r}: unknown algorithm {name!r}; use one of {choices}")
        if not _is_hex(digest):
            raise ValueError(f"checksum {spec!r}: the digest is not hexadecimal")
        size = _digest_size(spec, algorithm)
        # shake_* have no fixed size (0): any whole number of bytes will do.
        if size and len(digest) != 2 * size:
            raise ValueError(
                f"checksum {spec!r}: {algorithm} digests have {2 * size} hex digits, "
                f"not {len(digest)}"
            )
        if len(digest) % 2:
            raise ValueError(f"checksum {spec!r}: an odd number of hex digits")
        return cls(algorithm, digest.lower())

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.expected}"


def checksums_from_s3_headers(headers: Mapping[str, str]) -> list[Checksum]:
    """List the checksums an S3 response promises for the whole object.

    Parameters
    ----------
    headers : Mapping[str, str]
        Response headers of a GET or HEAD, any case.

    Returns
    -------
    list of Checksum
        ``md5`` from an ETag that is a plain MD5 (32 hex digits: not a
        multipart ``...-N`` ETag, not a weak one, not an SSE-KMS or SSE-C
        object), then ``crc32``, ``crc32c``, ``sha1``, ``sha256`` from
        ``x-amz-checksum-*`` (base64 of the big-endian digest, returned as
        hex). Composite checksums (of the parts, not of the object:
        ``x-amz-checksum-type: COMPOSITE`` or a value ending in ``-N``),
        those of a multipart upload (an ETag ending in ``-N``) that no
        ``x-amz-checksum-type: FULL_OBJECT`` says are of the whole object
        (moto 5.2's HEAD sends a composite SHA-256 that way), and malformed values
        are left out.

    Examples
    --------
    >>> checksums_from_s3_headers({"ETag": '"d41d8cd98f00b204e9800998ecf8427e"',
    ...                            "x-amz-checksum-crc32": "AAAAAA=="})
    [Checksum(algorithm='md5', expected='d41d8cd98f00b204e9800998ecf8427e'), \
Checksum(algorithm='crc32', expected='00000000')]
    """
    lower = {name.lower(): value.strip() for name, value in headers.items()}
    found = []
    etag = lower.get("etag", "").strip('"')
    encrypted = (
        lower.get("x-amz-server-side-encryption", "").lower() in _KMS_ENCRYPTION
        or "x-amz-server-side-encryption-customer-algorithm" in lower
    )
    # The ETag of a single-part, unencrypted (or SSE-S3) upload is its MD5.
    if len(etag) == 32 and _is_hex(etag) and not encrypted:
        found.append(Checksum("md5", etag.lower()))
    if _maybe_composite(lower):
        return found
    for algorithm, size in _S3_CHECKSUMS:
        value = lower.get("x-amz-checksum-" + algorithm)
        if not value or _ends_with_part_count(value):
            continue
        digest = _s3_digest(value, size)
        if digest is not None:
            found.append(Checksum(algorithm, digest.hex()))
    return found


def _s3_digest(value: str, size: int) -> bytes | None:
    """The digest an ``x-amz-checksum-*`` value holds (base64), if it is one of ``size`` bytes."""
    import base64
    import binascii

    try:
        digest = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return digest if len(digest) == size else None


def _maybe_composite(lower: Mapping[str, str]) -> bool:
    """Whether the ``x-amz-checksum-*`` values may be of the parts, not of the object.

    S3 says which with ``x-amz-checksum-type`` (and ends a composite value
    with the part count); without that header, a multipart upload's (its
    ETag ends with the part count) is not trusted to be of the whole object.
    """
    kind = lower.get("x-amz-checksum-type", "").upper()
    if kind == "COMPOSITE":
        return True
    return kind != "FULL_OBJECT" and _is_multipart_etag(lower.get("etag", ""))


def _is_multipart_etag(etag: str) -> bool:
    # S3's: the MD5 of the parts' MD5s, "-", the part count. Not nginx's
    # "<mtime hex>-<size hex>", whose size may well be all decimal digits.
    digest, dash, count = etag.strip('"').partition("-")
    return len(digest) == 32 and _is_hex(digest) and bool(dash) and count.isdigit()


def unverified_s3_checksums(headers: Mapping[str, str]) -> list[str]:
    """The ``x-amz-checksum-*`` headers that :func:`checksums_from_s3_headers` leaves out, and why.

    ``headers`` are those of a GET or HEAD (any case); the result has one
    phrase per header left out: a composite checksum (of the parts of a
    multipart upload, not of the object), an algorithm this library does
    not compute (CRC-64/NVME), a malformed value.

    Examples
    --------
    >>> unverified_s3_checksums({"x-amz-checksum-crc32": "AAAAAA==-3",
    ...                          "x-amz-checksum-type": "COMPOSITE"})
    ['x-amz-checksum-crc32 (COMPOSITE: of the parts, not of the object)']
    """
    lower = {name.lower(): value.strip() for name, value in headers.items()}
    composite = _maybe_composite(lower)
    untyped = composite and lower.get("x-amz-checksum-type", "").upper() != "COMPOSITE"
    sizes = dict(_S3_CHECKSUMS)
    found = []
    for name, value in lower.items():
        algorithm = name[len("x-amz-checksum-") :]
        # type and algorithm describe the upload; mode is the request's.
        if not name.startswith("x-amz-checksum-") or algorithm in ("type", "mode", "algorithm"):
            continue
        if algorithm not in sizes:
            found.append(f"{name} (not an algorithm pyvo_dl computes)")
        elif untyped and not _ends_with_part_count(value):
            found.append(
                f"{name} (of a multipart upload, and no x-amz-checksum-type: FULL_OBJECT "
                "says it is of the whole object)"
            )
        elif composite or _ends_with_part_count(value):
            found.append(f"{name} (COMPOSITE: of the parts, not of the object)")
        elif _s3_digest(value, sizes[algorithm]) is None:
            found.append(f"{name} (malformed: {value!r})")
    return found


class _Crc:
    """hashlib-like wrapper of a ``(crc, data) -> crc`` function."""

    __slots__ = ("_extend", "_value")
    digest_size = 4

    def __init__(self, extend: Callable[[int, _Buffer], int], value: int = 0) -> None:
        self._extend = extend
        self._value = value

    def update(self, data: _Buffer) -> None:
        self._value = self._extend(self._value, data)

    def hexdigest(self) -> str:
        return format(self._value, "08x")


# The reflected polynomials, for crc_combine.
_CRC_POLYNOMIALS: Final = {"crc32": 0xEDB88320, "crc32c": _CRC32C_POLYNOMIAL}


def _gf2_times(matrix: list[int], vector: int) -> int:
    total = 0
    for row in matrix:
        if not vector:
            break
        if vector & 1:
            total ^= row
        vector >>= 1
    return total


def _gf2_square(matrix: list[int]) -> list[int]:
    return [_gf2_times(matrix, row) for row in matrix]


def crc_combine(algorithm: str, crc1: int, crc2: int, length2: int) -> int:
    """The CRC of ``A + B`` from ``crc(A)``, ``crc(B)`` and ``len(B)`` (zlib's crc32_combine).

    Python's ``zlib`` does not expose it. It applies ``length2`` zero bytes
    to ``crc1`` by squaring the one-zero-bit operator (32 x 32 bits over
    GF(2)): about ``2 log2(length2)`` squarings, a few milliseconds.

    Parameters
    ----------
    algorithm : str
        ``"crc32"`` or ``"crc32c"``.
    crc1, crc2 : int
        The CRCs of the first and the second piece.
    length2 : int
        The length of the second piece in bytes.

    Returns
    -------
    int

    Examples
    --------
    >>> import zlib
    >>> crc_combine("crc32", zlib.crc32(b"1234"), zlib.crc32(b"56789"), 5) == zlib.crc32(b"123456789")
    True
    >>> hex(crc_combine("crc32c", crc32c(b"12"), crc32c(b"3456789"), 7))
    '0xe3069283'
    """
    if length2 <= 0:
        return crc1
    odd = [_CRC_POLYNOMIALS[algorithm]] + [1 << n for n in range(31)]  # one zero bit
    even = _gf2_square(odd)  # two zero bits
    odd = _gf2_square(even)  # four
    while True:
        even = _gf2_square(odd)  # first time round: one zero byte
        if length2 & 1:
            crc1 = _gf2_times(even, crc1)
        length2 >>= 1
        if not length2:
            break
        odd = _gf2_square(even)
        if length2 & 1:
            crc1 = _gf2_times(odd, crc1)
        length2 >>= 1
        if not length2:
            break
    return crc1 ^ crc2


class RangeCrcs:
    """The CRC of an object fetched in ranges, from each range's own: no second pass over it.

    Each range's bytes go through its own CRC as they arrive (in any order
    between ranges, in order within one); :meth:`verifier` combines them
    (:func:`crc_combine`). Only for a download whose every checksum is the
    same CRC: a SHA-256 or an MD5 cannot be combined, so the file is read
    back once instead.

    Parameters
    ----------
    checksums : list of Checksum
        What the object must match (all of one CRC algorithm).
    ranges : list of (int, int)
        ``(first, last)`` byte of each range, covering the object in order.
    """

    def __init__(self, checksums: list[Checksum], ranges: list[tuple[int, int]]) -> None:
        self.checksums = checksums
        self.algorithm = checksums[0].algorithm
        self.ranges = sorted(ranges)
        self._verifiers = {first: Verifier(checksums) for first, _ in self.ranges}

    @classmethod
    def for_download(
        cls, checksums: list[Checksum], ranges: list[tuple[int, int]]
    ) -> RangeCrcs | None:
        """The range CRCs of a download that ``checksums`` verify, if they can be combined."""
        algorithms = {c.algorithm for c in checksums}
        if len(algorithms) != 1 or not algorithms <= set(_CRC_POLYNOMIALS) or not ranges:
            return None
        return cls(checksums, ranges)

    def hasher(self, first: int) -> Verifier:
        """The CRC of the range that starts at byte ``first``, to feed its bytes."""
        return self._verifiers[first]

    def _crc_of(self, first: int) -> int:
        return int(self._verifiers[first].digests()[self.algorithm], 16)

    def verifier(self) -> Verifier:
        """A :class:`Verifier` holding the whole object's CRC, combined from the ranges'."""
        (first, _), *rest = self.ranges
        total = self._crc_of(first)
        for start, last in rest:
            total = crc_combine(self.algorithm, total, self._crc_of(start), last + 1 - start)
        verifier = Verifier(self.checksums)
        verifier._hashers = {self.algorithm: _Crc(_zlib_crc32(), total)}
        return verifier


def _zlib_crc32() -> Callable[[int, _Buffer], int]:
    """zlib's CRC-32 as a ``(crc, data) -> crc`` function."""
    from zlib import crc32

    return lambda crc, data: crc32(data, crc)


def _is_hex(text: str) -> bool:
    return bool(text) and _HEX_DIGITS.issuperset(text)


def _ends_with_part_count(value: str) -> bool:
    # A composite (per-part) checksum ends with the part count: "<base64>-12".
    _, dash, count = value.rpartition("-")
    return bool(dash) and count.isascii() and count.isdigit()


_CRC32C_TABLE: list[tuple[int, ...]] = []


def _crc32c_table() -> tuple[int, ...]:
    if _CRC32C_TABLE:
        return _CRC32C_TABLE[0]
    table = []
    for byte in range(256):
        value = byte
        for _ in range(8):
            value = (value >> 1) ^ _CRC32C_POLYNOMIAL if value & 1 else value >> 1
        table.append(value)
    _CRC32C_TABLE.append(tuple(table))
    return _CRC32C_TABLE[0]


def _crc32c_python(crc: int, data: _Buffer) -> int:
    """Table-driven CRC32C in pure Python (a few MB/s: the last resort)."""
    table = _crc32c_table()
    crc ^= 0xFFFFFFFF
    # Iterating bytes is much faster than iterating a memoryview.
    for byte in data if isinstance(data, bytes) else bytes(data):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _optional_module(name: str) -> Any:
    # Looked up by name at first use, so that no third-party import happens
    # unless a crc32c is actually checked; any failure means "not there".
    # __import__, not importlib.import_module: the same for a top-level
    # name, without importing importlib.
    try:
        return __import__(name)
    except Exception:
        return None


def _passes_check(extend: Callable[[int, _Buffer], int]) -> bool:
    try:
        return extend(extend(0, b"1234"), memoryview(b"56789")) == _CRC32C_CHECK
    except Exception:  # an API we do not understand: do not use it
        return False


_CRC32C_FUNCTION: list[Callable[[int, _Buffer], int]] = []


def _crc32c_function() -> Callable[[int, _Buffer], int]:
    """The fastest working CRC32C: an optional C extension, else pure Python (found once)."""
    if not _CRC32C_FUNCTION:
        _CRC32C_FUNCTION.append(_find_crc32c_function())
    return _CRC32C_FUNCTION[0]


def _find_crc32c_function() -> Callable[[int, _Buffer], int]:
    candidates: list[Callable[[int, _Buffer], int]] = []
    module = _optional_module("crc32c")
    if module is not None:
        candidates.append(lambda crc, data: int(module.crc32c(data, crc)))
    google = _optional_module("google_crc32c")
    # Its own pure-Python fallback is no faster than ours.
    if google is not None and getattr(google, "implementation", "c") == "c":
        candidates.append(lambda crc, data: int(google.extend(crc, bytes(data))))
    return next((extend for extend in candidates if _passes_check(extend)), _crc32c_python)


def has_fast_crc32c() -> bool:
    """Whether CRC-32C runs in C (``crc32c`` or ``google_crc32c`` installed).

    The pure-Python fallback manages only a few MB/s: a caller with another
    checksum for the same object may prefer to skip ``crc32c`` without one.

    Returns
    -------
    bool
    """
    return _crc32c_function() is not _crc32c_python


def crc32c(data: _Buffer, crc: int = 0) -> int:
    """CRC-32C (Castagnoli) of ``data``, continuing from ``crc``.

    Uses the ``crc32c`` or ``google_crc32c`` package when one is installed,
    else a table-driven pure-Python loop.

    Parameters
    ----------
    data : bytes-like
        The bytes.
    crc : int, optional
        The CRC of the preceding bytes, to extend it.

    Returns
    -------
    int

    Examples
    --------
    >>> hex(crc32c(b"123456789"))
    '0xe3069283'
    >>> crc32c(b"56789", crc32c(b"1234")) == crc32c(b"123456789")
    True
    """
    return _crc32c_function()(crc, data)


def _hexdigest(hasher: Any, checksum: Checksum) -> str:
    # shake_* need the length; every other hexdigest() takes no argument.
    if getattr(hasher, "digest_size", 1) == 0:
        return str(hasher.hexdigest(len(checksum.expected) // 2))
    return str(hasher.hexdigest())


class Verifier:
    """Computes several digests over one stream and compares them.

    One hash object per distinct algorithm, created at the first
    :meth:`update` (a verifier that is never fed costs nothing).

    Parameters
    ----------
    checksums : iterable of Checksum
        The expected values; may be empty (then :meth:`update` does nothing).

    Attributes
    ----------
    checksums : tuple of Checksum

    Examples
    --------
    >>> verifier = Verifier([Checksum("crc32c", "e3069283"), Checksum("md5", "0" * 32)])
    >>> verifier.update(b"1234"); verifier.update(memoryview(b"56789"))
    >>> [(c.algorithm, actual) for c, actual in verifier.mismatches()]
    [('md5', '25f9e794323b453885f5181f1b624d0b')]
    """

    def __init__(self, checksums: Iterable[Checksum]) -> None:
        self.checksums: tuple[Checksum, ...] = tuple(checksums)
        self._hashers: dict[str, Any] | None = None
        self._updates: tuple[Callable[[_Buffer], None], ...] = ()

    def _start(self) -> dict[str, Any]:
        hashers = {}
        for checksum in self.checksums:
            if checksum.algorithm not in hashers:
                hashers[checksum.algorithm] = _new_hash(checksum.algorithm)
        self._hashers = hashers
        self._updates = tuple(hasher.update for hasher in hashers.values())
        return hashers

    def update(self, data: _Buffer) -> None:
        """Feed the next bytes of the stream.

        Parameters
        ----------
        data : bytes, bytearray or memoryview
            Not kept: the caller may reuse its buffer at once.
        """
        if self._hashers is None:
            self._start()
        for update in self._updates:
            update(data)

    def digests(self) -> dict[str, str]:
        """Return the digests of the bytes fed so far, by algorithm, in hex.

        Returns
        -------
        dict
            ``{algorithm: hex}``; more bytes may still be fed afterwards.
        """
        hashers = self._hashers if self._hashers is not None else self._start()
        actual: dict[str, str] = {}
        for checksum in self.checksums:
            actual.setdefault(checksum.algorithm, _hexdigest(hashers[checksum.algorithm], checksum))
        return actual

    def mismatches(self) -> list[tuple[Checksum, str]]:
        """Return the expected checksums that the bytes fed so far do not match.

        Returns
        -------
        list of (Checksum, str)
            Each failing checksum with the actual hex digest; empty when all
            match.
        """
        hashers = self._hashers if self._hashers is not None else self._start()
        failed = []
        for checksum in self.checksums:
            actual = _hexdigest(hashers[checksum.algorithm], checksum)
            if actual != checksum.expected:
                failed.append((checksum, actual))
        return failed

    #: The name ``docs/architecture.md`` uses.
    verify = mismatches


def file_digests(
    path: str | os.PathLike[str],
    checksums: Iterable[Checksum],
    start: int = 0,
) -> Verifier:
    """Hash a file on disk, for a body that was not streamed in one piece.

    After a resumed or parallel download the bytes did not all pass through
    one :class:`Verifier` in order; this reads them back with a single
    reused 1 MiB buffer.

    Parameters
    ----------
    path : str or os.PathLike
        The file to read.
    checksums : iterable of Checksum
        The expected values; with none the file is not read.
    start : int, optional
        Offset of the first byte to hash (the file is hashed to its end).

    Returns
    -------
    Verifier
        Fed with the bytes from ``start`` to the end; call
        :meth:`Verifier.mismatches`, or feed it further bytes first.

    Raises
    ------
    OSError
        When the file cannot be read.
    """
    verifier = Verifier(checksums)
    if not verifier.checksums:
        return verifier
    buffer = bytearray(FILE_BUFFER_SIZE)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as stream:
        if start:
            stream.seek(start)
        while True:
            count = stream.readinto(buffer)
            if not count:
                break
            verifier.update(view[:count])
    return verifier

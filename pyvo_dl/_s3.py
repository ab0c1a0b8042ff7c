"""S3 on top of the engine: access modes, region switch, signed fallback.

Anonymous reads are plain unsigned REST GETs built by ``_s3url``; signed
ones add SigV4 headers per request through ``_signing``. The engine does the
transfer (resume, retries, integrity) exactly as for HTTP.
"""

from __future__ import annotations

import os

from . import _engine, _exchange, _integrity, _s3url, _signing
from ._errors import S3Error

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Mapping

    from ._exchange import FetchRequest
    from ._integrity import Checksum
    from ._transport import Response, Transport

_GLOBAL_REGION = "us-east-1"
#: Parallel ranged GETs for a large object by default. One S3 connection
#: delivers a few tens of MB/s; boto3 uses 10. Objects under two parts
#: (``_parallel.MIN_PART_SIZE``) are fetched on one connection.
DEFAULT_CONNECTIONS = 8
#: Keys per ListObjectsV2 page; None lets the server choose (S3: 1000).
LIST_PAGE_SIZE: int | None = None


class S3Target:
    """Where an object is and how to reach it.

    Parameters
    ----------
    bucket, key : str
        The object.
    endpoint : _s3url.Endpoint
        Where requests go (AWS for a region, or a custom server).
    requester_pays : bool
        Whether to send ``x-amz-request-payer: requester``.
    """

    def __init__(
        self, bucket: str, key: str, endpoint: _s3url.Endpoint, requester_pays: bool
    ) -> None:
        self.bucket = bucket
        self.key = key
        self.endpoint = endpoint
        self.requester_pays = requester_pays

    @property
    def region(self) -> str | None:
        """The region addressed (None: the global endpoint, us-east-1)."""
        return self.endpoint.region

    def url(self) -> str:
        """The object's URL at the current endpoint."""
        return self.endpoint.object_url(self.bucket, self.key)


class Access:
    """The access mode: anonymous, or signed with a session's credentials."""

    def __init__(self, signer: _signing.Signer | None, description: str) -> None:
        self.signer = signer
        self.description = description

    @classmethod
    def choose(cls, aws_profile: str | None, session: Any, region: str) -> Access:
        """The mode the caller asked for (pyvo: session wins over profile)."""
        if session is not None:
            botocore_session = getattr(session, "_session", session)
            if not callable(getattr(botocore_session, "get_credentials", None)):
                raise ValueError(
                    "session must be a boto3.session.Session or botocore.session.Session, "
                    f"not {session!r}"
                )
            return cls(
                _signing.Signer(session, region, "Access with session"), "Access with session"
            )
        if aws_profile is not None:
            description = f"Access with profile ({aws_profile})"
            profile = _signing.profile_session(aws_profile)
            return cls(_signing.Signer(profile, region, description), description)
        return cls(None, "Anonymous access")

    def for_region(self, region: str) -> Access:
        """The same mode, signing for ``region``."""
        signer = self.signer.for_region(region) if self.signer is not None else None
        return Access(signer, self.description)


def _error_factory(target: S3Target) -> Callable[[Response, str, bytes], S3Error]:
    def make(response: Response, url: str, body: bytes) -> S3Error:
        return _s3url.parse_error_xml(
            body,
            response.status,
            target.bucket,
            target.key,
            url=url,
            region_header=_s3url.region_from_headers(response.headers),
        )

    return make


def build_request(
    target: S3Target, access: Access, local_path: str, options: dict[str, Any]
) -> FetchRequest:
    """The engine request for one object under one access mode."""
    options = dict(options)
    if options.get("connections") is None:
        options["connections"] = DEFAULT_CONNECTIONS
    headers = {"x-amz-checksum-mode": "ENABLED"}
    if target.requester_pays:
        headers["x-amz-request-payer"] = "requester"
    return _exchange.FetchRequest(
        url=target.url(),
        target=local_path,
        label=target.key,
        identity=f"s3://{target.bucket}/{target.key}",
        headers=headers,
        signer=access.signer,
        error_factory=_error_factory(target),
        server_checksums=announced_checksums,
        conditional="if-match",
        follow_redirects=False,
        use_netrc=False,
        **options,
    )


# Each checksum is one more pass of the CPU over every byte, and one is enough
# to catch corruption: the cheapest of those the uploader stored, else the
# ETag's MD5. Pure-Python CRC32C (a few MB/s) is never worth it.
_CHEAPEST_FIRST = ("crc32", "crc32c", "md5", "sha1", "sha256")


def announced_checksums(headers: Mapping[str, str]) -> list[Checksum]:
    """The one checksum to verify for an object, from its response headers."""
    found = [
        c
        for c in _integrity.checksums_from_s3_headers(headers)
        if c.algorithm in _CHEAPEST_FIRST
        and (c.algorithm != "crc32c" or _integrity.has_fast_crc32c())
    ]
    stored = [c for c in found if c.algorithm != "md5"] or found
    stored.sort(key=lambda c: _CHEAPEST_FIRST.index(c.algorithm))
    return stored[:1]


def _wrong_region(error: S3Error, target: S3Target) -> str | None:
    """The region to switch to, when ``error`` says the bucket lives elsewhere."""
    says_elsewhere = error.status in (301, 307, 400, 403) or error.code in (
        "PermanentRedirect",
        "AuthorizationHeaderMalformed",
        "IllegalLocationConstraintException",
    )
    if says_elsewhere and error.region and error.region != (target.region or _GLOBAL_REGION):
        return error.region
    return None


def fetch_object(
    target: S3Target,
    access: Access,
    local_path: str,
    options: dict[str, Any],
    transport: Transport,
) -> str:
    """Download one object: region switch once, signed fallback once (pyvo's)."""
    request = build_request(target, access, local_path, options)
    _exchange.report(request, f"bucket: {target.bucket}, key: {target.key}")
    _exchange.report(request, access.description)
    switched_region = fell_back = False
    while True:
        try:
            return _engine.fetch(request, transport)
        except S3Error as error:
            region = None if switched_region else _wrong_region(error, target)
            if region is not None:
                switched_region = True
                _exchange.report(
                    request, f"Bucket {target.bucket} is in region {region}; retrying there"
                )
                target.endpoint = target.endpoint.with_region(region)
                access = access.for_region(region)
            elif not fell_back and _may_fall_back(error, access, target):
                fell_back = True
                access = _system_access(target.region or _GLOBAL_REGION)
                _exchange.report(
                    request, "Anonymous access refused; retrying with system credentials"
                )
            else:
                _add_hint(error, access)
                raise
            request = build_request(target, access, local_path, options)


def _may_fall_back(error: S3Error, access: Access, target: S3Target) -> bool:
    if error.status != 403 or access.signer is not None:
        return False
    if not _signing.botocore_available():
        return False
    return _signing.has_credentials(_signing.default_session())


def _system_access(region: str) -> Access:
    description = "Access with system credentials"
    return Access(_signing.Signer(_signing.default_session(), region, description), description)


def _add_hint(error: S3Error, access: Access) -> None:
    if error.hint:
        return
    if error.status == 403 and access.signer is None:
        hint = (
            "the object is not public: pass aws_profile= (a profile in ~/.aws/credentials) "
            "or session= with credentials that may read it"
        )
        if not _signing.botocore_available():
            hint += ', after pip install "pyvo-dl[s3]"'
        error.add_hint(hint)
    elif error.code == "NoSuchBucket":
        error.add_hint("check the bucket name")
    elif error.code == "NoSuchKey":
        error.add_hint("check the key (S3 keys are case-sensitive)")


def environment() -> Any:
    """The process environment, read at call time (endpoint and region settings)."""
    return os.environ


def list_prefix(
    target: S3Target, access: Access, options: dict[str, Any], transport: Transport
) -> list[tuple[str, int]]:
    """Every ``(key, size)`` under ``target.key`` (a prefix), following each page.

    ListObjectsV2 with ``encoding-type=url`` (keys that XML cannot carry
    come through), signed or not like the downloads; a wrong region is
    switched once, as for objects.
    """
    listed: list[tuple[str, int]] = []
    token: str | None = None
    switched = False
    while True:
        url = target.endpoint.list_objects_url(
            target.bucket, target.key, token, encoding_type="url", max_keys=LIST_PAGE_SIZE
        )
        request = build_request(target, access, "", dict(options, progress=False))
        request.url = url
        request.headers.pop("x-amz-checksum-mode", None)
        request.error_factory = _error_factory(S3Target(target.bucket, "", target.endpoint, False))
        try:
            body = _exchange.fetch_bytes(request, transport)
        except S3Error as error:
            region = None if switched else _wrong_region(error, target)
            if region is None:
                raise
            switched = True
            target.endpoint = target.endpoint.with_region(region)
            access = access.for_region(region)
            continue
        page = _s3url.parse_list_objects_v2(body, target.bucket, url)
        listed.extend((obj.key, obj.size) for obj in page.keys)
        if not page.is_truncated:
            return listed
        token = page.next_token

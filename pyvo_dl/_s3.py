"""S3 on top of the engine: access modes, region switch, signed fallback.

Anonymous reads are plain unsigned REST GETs built by ``_s3url``; signed
ones add SigV4 headers per request through ``_signing``. The engine does the
transfer (resume, retries, integrity) exactly as for HTTP.
"""

from __future__ import annotations

import os
import threading

from . import _awsconfig, _engine, _exchange, _integrity, _s3url, _signing
from ._errors import _S3_EXTRA_HINT, S3Error

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Mapping

    from ._exchange import FetchRequest
    from ._integrity import Checksum
    from ._transport import Response, Transport

_GLOBAL_REGION = "us-east-1"
#: Parallel ranged GETs for a large object by default. One S3 connection
#: delivers a few tens of MB/s (boto3 uses 10, s5cmd's tuned ``-c 16``
#: 16): through the benchmark's server capped at 40 MiB/s per connection
#: with 10 ms to first byte, 256 MiB took 1.05 s at 8 and 0.67 s at 16, in
#: 25 MiB of memory (docs/benchmarks.md). Parts are never under
#: ``_parallel.MIN_PART_SIZE``: an object under 64 MiB uses fewer, one
#: under 8 MiB one.
DEFAULT_CONNECTIONS = 16
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

    def for_region(self, region: str) -> Access:
        """The same mode, signing for ``region``."""
        signer = self.signer.for_region(region) if self.signer is not None else None
        return Access(signer, self.description)


ANONYMOUS = Access(None, "Anonymous access")


class AwsContext:
    """What one call learns about AWS once, for all of its objects.

    The shared files (``~/.aws/config``, ``~/.aws/credentials``), each
    profile's and each session's credentials, and the default credential
    chain (the anonymous-403 fallback) are looked up at most once per
    context; a ``download_many`` call, a recursive download and a command
    line run each use one. Thread-safe.

    Parameters
    ----------
    env : Mapping[str, str], optional
        The environment (default: ``os.environ`` as it is now).
    """

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env = os.environ if env is None else env
        self._lock = threading.Lock()
        self._config: _awsconfig.AwsConfig | None = None
        self._credentials: dict[Any, tuple[Any, _signing.Credentials]] = {}
        self._system: _signing.Credentials | None = None
        self._system_checked = False
        #: Why the default credentials could not be had, when a lookup failed.
        self.system_failure: str | None = None
        #: Buckets whose anonymous reads were refused and signed ones with
        #: the default credentials worked: their next objects start signed.
        self.signed_buckets: set[str] = set()

    def config(self) -> _awsconfig.AwsConfig:
        """The shared files, read at the first need."""
        with self._lock:
            if self._config is None:
                self._config = read_aws_config(self.env)
            return self._config

    def access(self, aws_profile: str | None, session: Any, region: str) -> Access:
        """The mode the caller asked for (pyvo: session wins over profile)."""
        if session is not None:
            botocore_session = getattr(session, "_session", session)
            if not callable(getattr(botocore_session, "get_credentials", None)):
                raise ValueError(
                    "session must be a boto3.session.Session or botocore.session.Session, "
                    f"not {session!r}"
                )
            credentials = self._credentials_for(
                ("session", id(session)), lambda: session, "the session given as session="
            )
            description = "Access with session"
        elif aws_profile is not None:
            credentials = self._credentials_for(
                ("profile", aws_profile),
                lambda: _signing.profile_session(aws_profile),
                f"AWS profile {aws_profile!r}",
            )
            description = f"Access with profile ({aws_profile})"
        else:
            return ANONYMOUS
        return Access(_signing.Signer(credentials, region, description), description)

    def _credentials_for(
        self, key: Any, make_session: Callable[[], Any], owner: str
    ) -> _signing.Credentials:
        with self._lock:
            entry = self._credentials.get(key)
            if entry is None:
                session = make_session()  # ValueError for an unknown profile: not kept
                # The session is kept in the entry too, so that id(session) is not reused.
                entry = self._credentials[key] = (session, _signing.Credentials(session, owner))
        return entry[1]

    def system_credentials(self) -> _signing.Credentials | None:
        """The default chain's credentials (environment, files, instance role), if any.

        Looked for once per context: on a machine whose instance-metadata
        endpoint does not answer, each look costs seconds.
        """
        with self._lock:
            if not self._system_checked:
                self._system_checked = True
                if _signing.botocore_available():
                    found = _signing.Credentials(
                        _signing.default_session(), "this machine's default AWS credentials"
                    )
                    self._system = found if found.available() else None
                    self.system_failure = found.failure
            return self._system

    def system_access(self, region: str) -> Access | None:
        """Signed access with the default chain's credentials, if it has any."""
        credentials = self.system_credentials()
        if credentials is None:
            return None
        description = "Access with system credentials"
        return Access(_signing.Signer(credentials, region, description), description)


#: Guards the lazy creation of a call's context and the per-call registry.
CONTEXT_LOCK = threading.Lock()
#: The contexts of download_many calls whose items run on an executor, by
#: call, in this (worker) process; the latest few only.
_CALL_CONTEXTS: dict[str, AwsContext] = {}
_MAX_CALL_CONTEXTS = 4


def context_for_call(call: str) -> AwsContext:
    """The AWS context shared by the items of one executor-run call in this process."""
    with CONTEXT_LOCK:
        context = _CALL_CONTEXTS.get(call)
        if context is None:
            while len(_CALL_CONTEXTS) >= _MAX_CALL_CONTEXTS:
                del _CALL_CONTEXTS[next(iter(_CALL_CONTEXTS))]  # the oldest call
            context = _CALL_CONTEXTS[call] = AwsContext()
        return context


def _forget_contexts_after_fork() -> None:
    # A forked child (a process pool's worker) starts with no context and
    # fresh locks: one held by another thread at the fork would never be
    # released there, and credentials are not shared across processes.
    global CONTEXT_LOCK
    CONTEXT_LOCK = threading.Lock()
    _CALL_CONTEXTS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_contexts_after_fork)


def read_aws_config(env: Mapping[str, str]) -> _awsconfig.AwsConfig:
    """Read the AWS config and credentials files named by ``env`` (or the default paths).

    Raises
    ------
    ValueError
        When a file exists but cannot be read as INI text.
    """
    texts = []
    for variable, default in (
        ("AWS_CONFIG_FILE", "~/.aws/config"),
        ("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"),
    ):
        path = os.path.expanduser(os.path.expandvars(env.get(variable) or default))
        try:
            with open(path, encoding="utf-8") as f:
                texts.append(f.read())
        except FileNotFoundError:
            texts.append("")
        except (OSError, UnicodeDecodeError) as exc:
            if os.path.isdir(path):
                texts.append("")  # botocore skips what is not a file too
                continue
            raise ValueError(f"cannot read the AWS settings file {path}: {exc}") from None
    return _awsconfig.parse_config(texts[0], texts[1])


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
    request = _exchange.FetchRequest(
        url=target.url(),
        target=local_path,
        label=target.key,
        identity=f"s3://{target.bucket}/{target.key}",
        headers=headers,
        signer=access.signer,
        error_factory=_error_factory(target),
        conditional="if-match",
        whole_first=True,
        follow_redirects=False,
        use_netrc=False,
        **options,
    )
    request.server_checksums = lambda headers: _checksums_to_verify(request, headers)
    return request


def _checksums_to_verify(request: FetchRequest, headers: Mapping[str, str]) -> list[Checksum]:
    """:func:`announced_checksums`, saying under ``verbose`` what S3 announced and is not verified."""
    chosen = announced_checksums(headers)
    skipped = _integrity.unverified_s3_checksums(headers)
    crc32c = "x-amz-checksum-crc32c"
    if (
        any(name.lower() == crc32c for name in headers)
        and not any(phrase.startswith(crc32c + " ") for phrase in skipped)
        and not _integrity.has_fast_crc32c()
    ):
        skipped.append(f"{crc32c} (no fast CRC-32C here: install crc32c for it)")
    if skipped:
        verifying = " and ".join(c.algorithm for c in chosen) or "nothing but the size"
        _exchange.log_and_print_for(
            request, f"Not verified: {'; '.join(skipped)}. Verifying {verifying}"
        )
    return chosen


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
    context: AwsContext,
) -> str:
    """Download one object: region switch once, signed fallback once (pyvo's)."""
    if access.signer is None and target.bucket in context.signed_buckets:
        access = context.system_access(target.region or _GLOBAL_REGION) or access
    request = build_request(target, access, local_path, options)
    _exchange.log_and_print_for(request, f"bucket: {target.bucket}, key: {target.key}")
    _exchange.log_and_print_for(request, access.description)
    switched_region = fell_back = False
    while True:
        try:
            path = _engine.fetch(request, transport)
        except S3Error as error:
            region = None if switched_region else _wrong_region(error, target)
            system = None
            if region is None and not fell_back and _may_fall_back(error, access):
                system = context.system_access(target.region or _GLOBAL_REGION)
            if region is not None:
                switched_region = True
                _exchange.log_and_print_for(
                    request, f"Bucket {target.bucket} is in region {region}; retrying there"
                )
                target.endpoint = target.endpoint.with_region(region)
                access = access.for_region(region)
            elif system is not None:
                fell_back = True
                access = system
                _exchange.log_and_print_for(
                    request, "Anonymous access refused; retrying with system credentials"
                )
            else:
                _add_hint(error, access, target, context, fell_back)
                raise
            request = build_request(target, access, local_path, options)
            continue
        if fell_back:
            context.signed_buckets.add(target.bucket)
        return path


def _may_fall_back(error: S3Error, access: Access) -> bool:
    return error.status == 403 and access.signer is None


def _add_hint(
    error: S3Error, access: Access, target: S3Target, context: AwsContext, fell_back: bool
) -> None:
    if error.hint:
        return
    payer = (
        ""
        if target.requester_pays
        else "; if the bucket is requester-pays, also pass requester_pays=True"
    )
    if error.status == 403 and fell_back and access.signer is not None:
        tried = _signing.describe_method(access.signer.credentials.method)
        error.add_hint(
            "the object is not public, and this machine's default credentials "
            f"(found in {tried}) were refused too: pass aws_profile= or session= with "
            f"credentials that may read it{payer}"
        )
    elif error.status == 403 and access.signer is None:
        hint = (
            "the object is not public: pass aws_profile= (a profile in ~/.aws/credentials) "
            "or session= with credentials that may read it"
        )
        if not _signing.botocore_available():
            hint += f", after {_S3_EXTRA_HINT}"
        elif context.system_failure:
            hint += f" (retrying with this machine's credentials failed: {context.system_failure})"
        else:
            hint += (
                " (no credentials were found on this machine to retry with: none in the "
                "environment, the AWS files or an instance role)"
            )
        error.add_hint(hint + payer)
    elif error.status == 403:
        error.add_hint(
            f"{access.description.lower()} was refused: check that these credentials may "
            f"read s3://{target.bucket}/{target.key}{payer}"
        )
    elif error.code == "NoSuchBucket":
        error.add_hint("check the bucket name")
    elif error.code == "NoSuchKey":
        error.add_hint("check the key (S3 keys are case-sensitive)")


def environment() -> Any:
    """The process environment, read at call time (endpoint and region settings)."""
    return os.environ


def list_prefix(
    target: S3Target,
    access: Access,
    options: dict[str, Any],
    transport: Transport,
    source: str = "",
) -> list[tuple[str, int]]:
    """Every ``(key, size)`` under ``target.key`` (a prefix), following each page.

    ListObjectsV2 with ``encoding-type=url`` (keys that XML cannot carry
    come through), signed or not like the downloads; a wrong region is
    switched once, as for objects. A listing that goes round in circles
    (a token or the keys again) ends in an ``S3Error`` naming ``source``,
    the prefix as the caller wrote it.
    """
    listed: list[tuple[str, int]] = []
    token: str | None = None
    switched = False
    progress = _s3url.ListingProgress(target.bucket, source or f"s3://{target.bucket}/{target.key}")
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
        progress.check(page, url)
        listed.extend((obj.key, obj.size) for obj in page.keys)
        if not page.is_truncated:
            return listed
        token = page.next_token

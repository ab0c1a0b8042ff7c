"""S3 addressing and S3's XML answers, with no IO (SPEC §2.2, §2.3, §2.4).

Everything here is a pure function of its arguments: ``s3://`` URIs, bucket
name rules, key percent-encoding, the choice of endpoint (the environment is
passed in as a mapping, never read from ``os.environ``), object, bucket and
ListObjectsV2 URLs, and the parsing of S3's XML error and listing documents.
``_s3.py`` puts these together with the transport.

This module is imported at the first S3 download, not by ``import pyvo_dl``,
so it may import ``typing`` and ``xml.etree`` at its top.
"""

from __future__ import annotations

import re
from typing import NamedTuple
from urllib.parse import quote, unquote, unquote_plus, urlsplit
from xml.etree import ElementTree

from ._awsconfig import AwsConfig, is_true, profile_name
from ._errors import S3Error

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Final, Mapping

__all__ = [
    "S3_NAMESPACE",
    "Endpoint",
    "ListPage",
    "ListedObject",
    "ListingProgress",
    "S3Location",
    "bucket_url",
    "check_bucket_name",
    "choose_endpoint",
    "is_dns_compatible",
    "list_objects_url",
    "object_url",
    "parse_error_xml",
    "parse_list_objects_v2",
    "parse_s3_uri",
    "quote_key",
    "region_from_headers",
    "unquote_key",
]

S3_NAMESPACE: Final = "http://s3.amazonaws.com/doc/2006-03-01/"

# SPEC §2.2: what any S3 (AWS's legacy us-east-1 rules included) can serve.
_BUCKET_RE: Final = re.compile(r"[A-Za-z0-9._-]{3,255}")
_DNS_LABEL: Final = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
_DNS_BUCKET_RE: Final = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*")
_IPV4_RE: Final = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+")
# botocore's validate_region_name: one DNS label that is not all digits. A
# region becomes part of a host name, so nothing else may pass.
_REGION_RE: Final = re.compile(r"(?![0-9]+\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_HOST_RE: Final = re.compile(r"[A-Za-z0-9._-]+|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*")

# botocore renders the greedy {Key+} label with percent_encode(key, safe="/~"):
# unreserved characters and "/" stay, every other UTF-8 byte becomes %XX.
_KEY_SAFE: Final = "/~"
# SigV4's canonical query string encodes everything but the unreserved set.
_QUERY_SAFE: Final = "-_.~"

_ENDPOINT_VARIABLES: Final = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
_REGION_VARIABLES: Final = ("AWS_REGION", "AWS_DEFAULT_REGION")
_IGNORE_ENDPOINTS: Final = "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"

# Codes S3 itself uses for these statuses, for answers that carry no XML
# (every HEAD answer). 404 is decided in _code_for_status.
_CODES_BY_STATUS: Final = {
    301: "PermanentRedirect",
    307: "TemporaryRedirect",
    400: "BadRequest",
    403: "AccessDenied",
    412: "PreconditionFailed",
    416: "InvalidRange",
}


# --------------------------------------------------------------------------
# s3:// URIs and bucket names


class S3Location(NamedTuple):
    """A bucket and a key, as named by ``s3://bucket/key``.

    Attributes
    ----------
    bucket : str
        The bucket name, checked with :func:`check_bucket_name`.
    key : str
        The object key, verbatim (``?`` and ``#`` included); empty for the
        bucket root.

    Examples
    --------
    >>> S3Location.parse("s3://nasa-heasarc/chandra/data/")
    S3Location(bucket='nasa-heasarc', key='chandra/data/')
    >>> S3Location("stpubdata", "hst/a b.fits").uri
    's3://stpubdata/hst/a b.fits'
    """

    bucket: str
    key: str

    @classmethod
    def parse(cls, uri: str) -> S3Location:
        """Parse an ``s3://bucket/key`` URI; see :func:`parse_s3_uri`."""
        return parse_s3_uri(uri)

    @property
    def uri(self) -> str:
        """The ``s3://bucket/key`` URI that :meth:`parse` reads back."""
        return f"s3://{self.bucket}/{self.key}"


def parse_s3_uri(uri: str) -> S3Location:
    """Split an ``s3://bucket/key`` URI into its bucket and key.

    Everything after the first ``/`` that follows the bucket is the key,
    verbatim: ``?``, ``#``, ``%``, spaces and repeated slashes are part of S3
    keys, so the URI is not parsed as a URL. The scheme is matched without
    regard to case.

    Parameters
    ----------
    uri : str
        The URI, for example ``"s3://nasa-heasarc/chandra/x.fits"``.

    Returns
    -------
    S3Location
        The bucket and the key; the key is empty for ``s3://bucket`` and
        ``s3://bucket/``.

    Raises
    ------
    ValueError
        Naming the URI, when the scheme is not ``s3://``, the bucket is
        missing, or the bucket name is invalid.

    Examples
    --------
    >>> parse_s3_uri("s3://nasa-heasarc/data/x.fits?v=2#1")
    S3Location(bucket='nasa-heasarc', key='data/x.fits?v=2#1')
    >>> parse_s3_uri("s3://nasa-heasarc")
    S3Location(bucket='nasa-heasarc', key='')
    """
    if not isinstance(uri, str):
        raise TypeError(f"an S3 URI must be a str, not {type(uri).__name__}: {uri!r}")
    if uri[:5].lower() != "s3://":
        raise ValueError(f"not an S3 URI: {uri!r} (expected 's3://bucket/key')")
    bucket, _, key = uri[5:].partition("/")
    if not bucket:
        raise ValueError(f"invalid S3 URI {uri!r}: no bucket name (expected 's3://bucket/key')")
    if not _BUCKET_RE.fullmatch(bucket):
        raise ValueError(f"invalid S3 URI {uri!r}: {_bucket_problem(bucket)}")
    return S3Location(bucket, key)


def _bucket_problem(name: str) -> str:
    return (
        f"invalid S3 bucket name {name!r}: a bucket name has 3 to 255 characters, "
        "each a letter, a digit, '.', '-' or '_'"
    )


def check_bucket_name(name: str) -> str:
    """Return ``name`` if some S3 can serve a bucket of that name.

    The rule is SPEC §2.2's: 3 to 255 characters among ``A-Z a-z 0-9 . _ -``.
    Legacy us-east-1 names (uppercase, ``_``, longer than 63) pass, and are
    addressed path-style (:func:`is_dns_compatible`).

    Parameters
    ----------
    name : str
        The bucket name.

    Returns
    -------
    str
        ``name``, unchanged.

    Raises
    ------
    ValueError
        Naming the bucket, when no S3 can serve it.

    Examples
    --------
    >>> check_bucket_name("Legacy_Bucket")
    'Legacy_Bucket'
    >>> check_bucket_name("a/b")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: invalid S3 bucket name 'a/b': a bucket name has 3 to 255 characters, ...
    """
    if not isinstance(name, str):
        raise TypeError(f"an S3 bucket name must be a str, not {type(name).__name__}: {name!r}")
    if not _BUCKET_RE.fullmatch(name):
        raise ValueError(_bucket_problem(name))
    return name


def is_dns_compatible(name: str) -> bool:
    """Tell whether a bucket name can be a DNS host name label sequence.

    True for 3 to 63 characters of lowercase letters, digits, ``-`` and
    ``.``, in dot-separated labels that neither start nor end with ``-``,
    and not shaped like an IPv4 address. Only such buckets can be addressed
    virtual-hosted style (``bucket.s3.amazonaws.com``); a name with dots is
    DNS-compatible but still addressed path-style, because AWS's wildcard
    TLS certificate covers one label only.

    Parameters
    ----------
    name : str
        The bucket name.

    Returns
    -------
    bool

    Examples
    --------
    >>> is_dns_compatible("nasa-heasarc"), is_dns_compatible("Legacy_Bucket")
    (True, False)
    """
    return (
        3 <= len(name) <= 63
        and _DNS_BUCKET_RE.fullmatch(name) is not None
        and _IPV4_RE.fullmatch(name) is None
    )


# --------------------------------------------------------------------------
# Keys


def quote_key(key: str) -> str:
    """Percent-encode an S3 key for a request path, as botocore does.

    ``A-Z a-z 0-9 - _ . ~`` and ``/`` stay as they are (so ``//`` stays
    ``//``); every other character is encoded as its UTF-8 bytes in ``%XX``
    form (space ``%20``, ``+`` ``%2B``, ``%`` ``%25``, ``?`` ``%3F``, ``#``
    ``%23``, ``=`` ``%3D``). This is also the form SigV4 signs for S3, which
    does not encode the path twice.

    Parameters
    ----------
    key : str
        The object key, verbatim.

    Returns
    -------
    str
        The encoded key, without a leading ``/``.

    Raises
    ------
    ValueError
        Naming the key, when it cannot be encoded as UTF-8 (a lone
        surrogate, as ``os.fsdecode`` makes from undecodable bytes).

    Examples
    --------
    >>> quote_key("data/a b+c%d?e#f=g~h/é.fits")
    'data/a%20b%2Bc%25d%3Fe%23f%3Dg~h/%C3%A9.fits'
    """
    try:
        return quote(key, safe=_KEY_SAFE)
    except UnicodeEncodeError as e:
        raise ValueError(f"S3 key {key!r} is not valid Unicode text") from e


def unquote_key(quoted: str) -> str:
    """Decode a percent-encoded key: the inverse of :func:`quote_key`.

    ``+`` is kept as ``+`` (it is not a space in a path).

    Parameters
    ----------
    quoted : str
        A key as :func:`quote_key` writes it.

    Returns
    -------
    str
        The key.

    Raises
    ------
    ValueError
        When the ``%XX`` sequences are not UTF-8.

    Examples
    --------
    >>> unquote_key("a%20b+c/%C3%A9")
    'a b+c/é'
    """
    try:
        return unquote(quoted, errors="strict")
    except UnicodeDecodeError as e:
        raise ValueError(f"encoded S3 key {quoted!r} does not decode as UTF-8") from e


# --------------------------------------------------------------------------
# Endpoints and URLs


class Endpoint(NamedTuple):
    """Where S3 requests go, and how buckets are addressed there.

    Made by :func:`choose_endpoint`. Its methods build the URLs.

    Attributes
    ----------
    scheme : str
        ``"https"`` for AWS; ``"http"`` or ``"https"`` for a custom endpoint.
    host : str
        ``s3.amazonaws.com``, ``s3.<region>.amazonaws.com`` (``.com.cn``
        for ``cn-*`` regions), or the custom endpoint's host (an IPv6
        address without brackets).
    port : int or None
        The port of a custom endpoint, where its URL gives one.
    path_style : bool
        True for a custom endpoint: every bucket goes in the path. False for
        AWS, where a bucket goes in the host name unless
        :meth:`uses_path_style` says otherwise.
    region : str or None
        The region to sign for; None means the global endpoint
        (us-east-1).
    path : str
        A custom endpoint's path prefix without its final ``/`` (``""``
        for none), kept before the bucket.

    Examples
    --------
    >>> e = choose_endpoint("eu-west-1", None, {})
    >>> e.object_url("my-bucket", "a b.fits")
    'https://my-bucket.s3.eu-west-1.amazonaws.com/a%20b.fits'
    >>> e.object_url("my.bucket", "a b.fits")
    'https://s3.eu-west-1.amazonaws.com/my.bucket/a%20b.fits'
    """

    scheme: str
    host: str
    port: int | None
    path_style: bool
    region: str | None
    path: str = ""

    @property
    def base_url(self) -> str:
        """``scheme://host[:port][path]``, with no final ``/``."""
        return f"{self.scheme}://{self._netloc(self.host)}{self.path}"

    def _netloc(self, host: str) -> str:
        if ":" in host:
            host = f"[{host}]"
        return host if self.port is None else f"{host}:{self.port}"

    def uses_path_style(self, bucket: str) -> bool:
        """Tell whether ``bucket`` goes in the path rather than the host.

        Always for a custom endpoint; on AWS for names that are not
        DNS-compatible (legacy names) or that hold a dot (the wildcard TLS
        certificate ``*.s3.amazonaws.com`` covers a single label).
        """
        return self.path_style or "." in bucket or not is_dns_compatible(bucket)

    def _bucket_base(self, bucket: str) -> str:
        # The URL that the bucket's object paths hang from, no final "/".
        check_bucket_name(bucket)
        if self.uses_path_style(bucket):
            return f"{self.base_url}/{bucket}"
        return f"{self.scheme}://{self._netloc(bucket + '.' + self.host)}{self.path}"

    def bucket_url(self, bucket: str) -> str:
        """The bucket's URL: see the module function :func:`bucket_url`."""
        base = self._bucket_base(bucket)
        return base if self.uses_path_style(bucket) else base + "/"

    def object_url(self, bucket: str, key: str) -> str:
        """An object's URL: see the module function :func:`object_url`."""
        if not key:
            raise ValueError(f"no key given for s3://{bucket}/: an S3 object needs a non-empty key")
        return f"{self._bucket_base(bucket)}/{quote_key(key)}"

    def list_objects_url(
        self,
        bucket: str,
        prefix: str = "",
        continuation_token: str | None = None,
        *,
        max_keys: int | None = None,
        delimiter: str | None = None,
        encoding_type: str | None = None,
    ) -> str:
        """A ListObjectsV2 URL: see the module function :func:`list_objects_url`."""
        if encoding_type not in (None, "", "url"):
            raise ValueError(f"encoding_type must be 'url' or None, not {encoding_type!r}")
        optional = {
            "prefix": prefix,
            "continuation-token": continuation_token,
            "delimiter": delimiter,
            "encoding-type": encoding_type,
        }
        params = {name: value for name, value in optional.items() if value}
        params["list-type"] = "2"
        if max_keys is not None:
            params["max-keys"] = str(_check_max_keys(max_keys))
        return f"{self.bucket_url(bucket)}?{_format_query(params)}"

    def with_region(self, region: str | None) -> Endpoint:
        """The same endpoint for another region (after S3 named the bucket's).

        An AWS endpoint changes host; a custom endpoint keeps its host and
        only changes the region it is signed for.

        Raises
        ------
        ValueError
            Naming the region, when it is not a valid region name.
        """
        region = _check_region(region, "region") if region else None
        if self.host == _aws_host(self.region):
            return self._replace(host=_aws_host(region), region=region)
        return self._replace(region=region)


def _check_max_keys(max_keys: int) -> int:
    if isinstance(max_keys, bool) or not isinstance(max_keys, int) or max_keys < 1:
        raise ValueError(f"max_keys must be a positive integer, not {max_keys!r}")
    return max_keys


def _format_query(params: Mapping[str, str]) -> str:
    # SigV4 sorts the canonical query by encoded name; sending the same order
    # keeps the URL and the signed string visibly identical.
    try:
        pairs = sorted(
            (quote(k, safe=_QUERY_SAFE), quote(v, safe=_QUERY_SAFE)) for k, v in params.items()
        )
    except UnicodeEncodeError as e:
        raise ValueError(f"query values {dict(params)!r} are not valid Unicode text") from e
    return "&".join(f"{k}={v}" for k, v in pairs)


def _aws_host(region: str | None) -> str:
    if region is None:
        return "s3.amazonaws.com"
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"s3.{region}.{suffix}"


def _check_region(region: str, source: str) -> str:
    if not isinstance(region, str) or not _REGION_RE.fullmatch(region):
        raise ValueError(
            f"invalid AWS region {region!r} (from {source}): expected a name such as 'us-east-1'"
        )
    return region


def _choose_region(
    region: str | None, env: Mapping[str, str], settings: Mapping[str, object], profile: str
) -> str | None:
    if region:
        return _check_region(region, "region")
    for name in _REGION_VARIABLES:
        value = env.get(name, "").strip()
        if value:
            return _check_region(value, name)
    configured = settings.get("region")
    if isinstance(configured, str) and configured.strip():
        return _check_region(configured.strip(), f"the region of AWS profile {profile!r}")
    return None


def _configured_endpoint_url(
    env: Mapping[str, str], config: AwsConfig | None, profile: str
) -> tuple[str | None, str]:
    """The configured endpoint and where it came from (for an error naming its source)."""
    settings = config.settings(profile) if config is not None else {}
    # botocore's switch: the variable when it is set at all, else the profile's.
    switch = _IGNORE_ENDPOINTS
    ignore = env[switch] if switch in env else settings.get("ignore_configured_endpoint_urls")
    if is_true(ignore):
        return None, ""
    for name in _ENDPOINT_VARIABLES:
        value = env.get(name, "").strip()
        if value:
            return value, name
    if config is None:
        return None, ""
    candidates = (
        (config.s3_settings(profile).get("endpoint_url"),
         f"the services section of AWS profile {profile!r}"),
        (settings.get("endpoint_url"), f"AWS profile {profile!r}"),
    )  # fmt: skip
    for configured, source in candidates:
        if isinstance(configured, str) and configured.strip():
            return configured.strip(), source
    return None, ""


def _parse_endpoint_url(url: str, region: str | None, source: str) -> Endpoint:
    what = f"S3 endpoint {url!r} (from {source})"
    usage = "expected an http or https URL such as 'http://127.0.0.1:9000'"
    if not isinstance(url, str) or not url.isascii() or not url.isprintable() or " " in url:
        raise ValueError(f"invalid {what}: {usage}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise ValueError(f"invalid {what}: {e}; {usage}") from e
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    if scheme not in ("http", "https") or not _HOST_RE.fullmatch(host):
        raise ValueError(f"invalid {what}: {usage}")
    if "@" in parts.netloc or parts.query or parts.fragment:
        raise ValueError(
            f"invalid {what}: an endpoint holds only a scheme, a host, a port and a path"
        )
    return Endpoint(scheme, host, port, True, region, parts.path.rstrip("/"))


def choose_endpoint(
    region: str | None,
    endpoint_url: str | None,
    env: Mapping[str, str],
    config: AwsConfig | None = None,
    profile: str | None = None,
) -> Endpoint:
    """Choose where S3 requests go, as the AWS tools do (botocore 1.31+).

    The endpoint is ``endpoint_url``, else the configured one:
    ``$AWS_ENDPOINT_URL_S3``, ``$AWS_ENDPOINT_URL``, the ``endpoint_url`` of
    the ``s3`` block of the profile's ``services`` section, the profile's
    own ``endpoint_url``; configured ones are all ignored when
    ``$AWS_IGNORE_CONFIGURED_ENDPOINT_URLS`` (else the profile's
    ``ignore_configured_endpoint_urls``) is ``true``. Else AWS. A custom
    endpoint is always addressed path-style. The region is ``region``, else
    ``$AWS_REGION``, ``$AWS_DEFAULT_REGION``, the profile's ``region``, else
    None (the global endpoint ``s3.amazonaws.com``, us-east-1). Empty values
    count as unset; values are stripped of surrounding whitespace.

    Parameters
    ----------
    region : str or None
        The region asked for.
    endpoint_url : str or None
        An S3-compatible server, ``http(s)://host[:port][/path]``.
    env : Mapping[str, str]
        The environment (``os.environ`` in real use; ``{}`` to ignore it).
    config : AwsConfig, optional
        The AWS shared files (``_awsconfig.parse_config``); None: none.
    profile : str, optional
        The profile whose settings apply (default: ``$AWS_DEFAULT_PROFILE``,
        ``$AWS_PROFILE``, ``default``).

    Returns
    -------
    Endpoint
        Never None: AWS is an endpoint like any other.

    Raises
    ------
    ValueError
        Naming the URL and its source (argument or variable) for a malformed
        endpoint, or the region and its source for an invalid region.

    Examples
    --------
    >>> choose_endpoint(None, None, {"AWS_DEFAULT_REGION": "us-west-2"})
    Endpoint(scheme='https', host='s3.us-west-2.amazonaws.com', port=None, \
path_style=False, region='us-west-2', path='')
    >>> choose_endpoint(None, None, {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000/s3/"})
    Endpoint(scheme='http', host='127.0.0.1', port=9000, path_style=True, region=None, path='/s3')
    """
    profile = profile or profile_name(env)
    settings = config.settings(profile) if config is not None else {}
    chosen_region = _choose_region(region, env, settings, profile)
    url, source = endpoint_url, "endpoint_url"
    if not url:
        url, source = _configured_endpoint_url(env, config, profile)
    if url is not None:
        return _parse_endpoint_url(url, chosen_region, source)
    return Endpoint("https", _aws_host(chosen_region), None, False, chosen_region)


def object_url(
    bucket: str,
    key: str,
    region: str | None = None,
    endpoint_url: str | None = None,
) -> str:
    """The URL of an object, for an unsigned or a signed GET/HEAD.

    On AWS, virtual-hosted: ``https://<bucket>.s3.amazonaws.com/<key>``
    (``https://<bucket>.s3.<region>.amazonaws.com/<key>`` with a region);
    path-style (``https://s3[.<region>].amazonaws.com/<bucket>/<key>``) for
    buckets with a dot or not DNS-compatible. With ``endpoint_url``:
    ``<endpoint_url>/<bucket>/<key>``, any path of the endpoint kept. The
    key is encoded with :func:`quote_key`. The environment is not consulted:
    use :func:`choose_endpoint` and :meth:`Endpoint.object_url` for that.

    Parameters
    ----------
    bucket : str
        The bucket name.
    key : str
        The object key, verbatim; not empty.
    region : str, optional
        The bucket's region; None for the global endpoint.
    endpoint_url : str, optional
        An S3-compatible server.

    Returns
    -------
    str

    Raises
    ------
    ValueError
        For an invalid bucket name, an empty key, a malformed
        ``endpoint_url`` or an invalid region, naming it.

    Examples
    --------
    >>> object_url("nasa-heasarc", "a b/c?d#e")
    'https://nasa-heasarc.s3.amazonaws.com/a%20b/c%3Fd%23e'
    >>> object_url("Legacy_Bucket", "k", region="us-east-1")
    'https://s3.us-east-1.amazonaws.com/Legacy_Bucket/k'
    >>> object_url("b-1", "x/y.fits", endpoint_url="http://127.0.0.1:9000/minio/")
    'http://127.0.0.1:9000/minio/b-1/x/y.fits'
    """
    return choose_endpoint(region, endpoint_url, {}).object_url(bucket, key)


def bucket_url(bucket: str, region: str | None = None, endpoint_url: str | None = None) -> str:
    """The URL of a bucket itself, for listings and region probes.

    Virtual-hosted ``https://<bucket>.s3[.<region>].amazonaws.com/`` (with
    its ``/``), or path-style ``<base>/<bucket>`` (without one, as botocore
    sends it), under the same rules as :func:`object_url`.

    Parameters
    ----------
    bucket : str
        The bucket name.
    region : str, optional
        The bucket's region; None for the global endpoint.
    endpoint_url : str, optional
        An S3-compatible server.

    Returns
    -------
    str

    Raises
    ------
    ValueError
        For an invalid bucket name, a malformed ``endpoint_url`` or an
        invalid region, naming it.

    Examples
    --------
    >>> bucket_url("nasa-heasarc", "us-east-1")
    'https://nasa-heasarc.s3.us-east-1.amazonaws.com/'
    >>> bucket_url("my.bucket")
    'https://s3.amazonaws.com/my.bucket'
    """
    return choose_endpoint(region, endpoint_url, {}).bucket_url(bucket)


def list_objects_url(
    bucket: str,
    prefix: str,
    continuation_token: str | None = None,
    *,
    region: str | None = None,
    endpoint_url: str | None = None,
    max_keys: int | None = None,
    delimiter: str | None = None,
    encoding_type: str | None = None,
) -> str:
    """The URL of one ListObjectsV2 page.

    :func:`bucket_url` with a query of ``list-type=2`` and the given
    parameters (empty or None ones left out), sorted by name and encoded
    with everything but ``A-Z a-z 0-9 - _ . ~`` as ``%XX``: the SigV4
    canonical form, so the URL can be signed as it is.

    Parameters
    ----------
    bucket : str
        The bucket name.
    prefix : str
        Only keys starting with it are listed (verbatim, not encoded).
    continuation_token : str, optional
        The previous page's ``NextContinuationToken``.
    region, endpoint_url : str, optional
        As for :func:`object_url`.
    max_keys : int, optional
        At most this many keys per page (S3 caps it at 1000).
    delimiter : str, optional
        Group keys sharing a prefix up to it into ``CommonPrefixes``.
    encoding_type : {"url", None}, optional
        ``"url"`` asks S3 to percent-encode keys in the answer, which is
        needed for keys holding characters XML 1.0 cannot carry;
        :func:`parse_list_objects_v2` decodes them.

    Returns
    -------
    str

    Raises
    ------
    ValueError
        For an invalid bucket name, endpoint, region, ``max_keys`` or
        ``encoding_type``.

    Examples
    --------
    >>> list_objects_url("nasa-heasarc", "chandra/data/", "1/a+b=", max_keys=500)
    'https://nasa-heasarc.s3.amazonaws.com/?continuation-token=1%2Fa%2Bb%3D&list-type=2\
&max-keys=500&prefix=chandra%2Fdata%2F'
    """
    endpoint = choose_endpoint(region, endpoint_url, {})
    return endpoint.list_objects_url(
        bucket,
        prefix,
        continuation_token,
        max_keys=max_keys,
        delimiter=delimiter,
        encoding_type=encoding_type,
    )


def region_from_headers(headers: Mapping[str, str]) -> str | None:
    """The bucket's region from an S3 answer's ``x-amz-bucket-region``.

    The header name is matched without regard to case, so a plain ``dict``
    works as well as ``http.client.HTTPMessage``.

    Parameters
    ----------
    headers : Mapping[str, str]
        The response headers.

    Returns
    -------
    str or None
        The region, or None when the header is absent or not a valid region
        name (it is about to become part of a host name).

    Examples
    --------
    >>> region_from_headers({"X-Amz-Bucket-Region": "eu-west-1"})
    'eu-west-1'
    """
    for name, value in headers.items():
        if name.lower() == "x-amz-bucket-region":
            return _valid_region_or_none(value)
    return None


def _valid_region_or_none(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value if _REGION_RE.fullmatch(value) else None


# --------------------------------------------------------------------------
# S3's XML answers


def _as_bytes(body: object) -> bytes:
    # "Never raises": a transport may hand over None for "no body", or a
    # bytearray/memoryview.
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body)
    if isinstance(body, str):
        return body.encode("utf-8", "surrogatepass")
    return b""


def _parse_xml(body: bytes) -> ElementTree.Element | None:
    """The root element of ``body``, or None when it is not safe, plain XML.

    A document type declaration is refused outright, so no entity is ever
    defined, let alone expanded. The check is made on the decoded text and
    the parser is fed that same text: handing expat a ``str`` makes it
    ignore the document's declared encoding, so no other encoding can hide
    a declaration from the check.
    """
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    if not text.strip() or "<!DOCTYPE" in text or "<!ENTITY" in text:
        return None
    try:
        return ElementTree.fromstring(text)
    except (ElementTree.ParseError, ValueError):
        return None


def _local_name(tag: object) -> str:
    # "{http://s3.amazonaws.com/doc/2006-03-01/}Key" -> "Key"; S3 answers
    # with that namespace or none, S3-compatible servers with either.
    return tag.rpartition("}")[2] if isinstance(tag, str) else ""


def _children_text(element: ElementTree.Element) -> dict[str, str]:
    # The text of each direct child, first occurrence winning; not stripped,
    # since keys may begin or end with spaces.
    fields: dict[str, str] = {}
    for child in element:
        fields.setdefault(_local_name(child.tag), "".join(child.itertext()))
    return fields


def _error_element(
    root: ElementTree.Element | None,
) -> ElementTree.Element | None:
    if root is None:
        return None
    if _local_name(root.tag) == "Error":
        return root
    # Some S3-compatible servers wrap it: <ErrorResponse><Error>...</Error>.
    for child in root:
        if _local_name(child.tag) == "Error":
            return child
    return None


def _code_for_status(status: int, key: str) -> str:
    if status == 404:
        # A HEAD answer has no body, so a missing bucket cannot be told from
        # a missing key: for a key, say NoSuchKey (SPEC §2.2: a 404 stays
        # NoSuchKey); the message says the bucket may be missing too.
        return "NoSuchKey" if key else "NoSuchBucket"
    return _CODES_BY_STATUS.get(status, f"HTTP{status}")


def _synthesised_message(status: int, key: str, body: bytes) -> str:
    detail = (
        "the answer had no error body"
        if not body.strip()
        else "the answer was not an S3 XML error document"
    )
    if status == 404 and key:
        return f"not found ({detail}, so a missing bucket looks the same)"
    return detail


def parse_error_xml(
    body: bytes,
    status: int,
    bucket: str,
    key: str,
    *,
    url: str = "",
    region_header: str | None = None,
    hint: str = "",
) -> S3Error:
    """Turn an S3 error answer into an :class:`~pyvo_dl.S3Error`.

    Reads ``<Error><Code/><Message/><RequestId/><Region/><BucketRegion/>
    </Error>`` in S3's namespace or none. Where the body is empty (every
    HEAD answer), malformed, not an error document, or holds a document
    type declaration (refused, never expanded), the code comes from the
    status: 404 gives ``NoSuchKey`` when a key was asked for, else
    ``NoSuchBucket`` (a bodiless 404 cannot tell a missing bucket from a
    missing key, and the message says so); 301 ``PermanentRedirect``, 307
    ``TemporaryRedirect``, 400 ``BadRequest``, 403 ``AccessDenied``, 412
    ``PreconditionFailed``, 416 ``InvalidRange``; any other ``HTTP<status>``.
    Never raises for any body.

    Parameters
    ----------
    body : bytes
        The response body (possibly empty).
    status : int
        The HTTP status.
    bucket, key : str
        What was asked for (``key`` empty for bucket-level requests).
    url : str, optional
        The URL requested.
    region_header : str, optional
        The ``x-amz-bucket-region`` header (see :func:`region_from_headers`);
        preferred over the ``<Region>`` and ``<BucketRegion>`` of the body.
    hint : str, optional
        What the user can do, appended to the message.

    Returns
    -------
    S3Error
        To be raised by the caller.

    Examples
    --------
    >>> e = parse_error_xml(b"<Error><Code>NoSuchBucket</Code></Error>", 404, "b-1", "k")
    >>> e.code, e.status
    ('NoSuchBucket', 404)
    >>> parse_error_xml(b"", 403, "b-1", "k").code
    'AccessDenied'
    """
    body = _as_bytes(body)
    element = _error_element(_parse_xml(body))
    fields = _children_text(element) if element is not None else {}
    code = fields.get("Code", "").strip()
    message = " ".join(fields.get("Message", "").split())
    if not code:
        code = _code_for_status(status, key)
        message = message or _synthesised_message(status, key, body)
    region = (
        _valid_region_or_none(region_header)
        or _valid_region_or_none(fields.get("Region"))
        or _valid_region_or_none(fields.get("BucketRegion"))
    )
    request_id = fields.get("RequestId", "").strip() or None
    return S3Error(code, status, bucket, key, message, region, request_id, url, hint)


class ListedObject(NamedTuple):
    """One object of a ListObjectsV2 page.

    Attributes
    ----------
    key : str
        The key, decoded.
    size : int
        The object's size in bytes.
    etag : str or None
        The ETag as S3 lists it, quotes included (the form ``If-Match``
        takes); None when the listing gives none.
    """

    key: str
    size: int
    etag: str | None


class ListPage(NamedTuple):
    """One page of a ListObjectsV2 answer.

    Attributes
    ----------
    keys : list of ListedObject
        The objects, as ``(key, size, etag)`` tuples, in S3's order.
    next_token : str or None
        The ``continuation_token`` for the next page; None on the last page.
    is_truncated : bool
        True when more pages follow.
    common_prefixes : tuple of str
        The ``CommonPrefixes`` of a listing made with a delimiter.
    """

    keys: list[ListedObject]
    next_token: str | None
    is_truncated: bool
    common_prefixes: tuple[str, ...] = ()


def _malformed_listing(bucket: str, url: str, why: str) -> S3Error:
    return S3Error(
        "MalformedListing",
        200,
        bucket,
        "",
        f"the ListObjectsV2 answer could not be read: {why}",
        url=url,
    )


def _listed_object(
    element: ElementTree.Element, decode: Callable[[str], str], bucket: str, url: str
) -> ListedObject:
    fields = _children_text(element)
    if "Key" not in fields or "Size" not in fields:
        raise _malformed_listing(bucket, url, "an entry has no Key or no Size")
    try:
        size = int(fields["Size"].strip())
    except ValueError:
        size = -1
    if size < 0:
        raise _malformed_listing(bucket, url, f"invalid Size {fields['Size']!r}")
    return ListedObject(decode(fields["Key"]), size, fields.get("ETag"))


def _key_decoder(encoded: bool, bucket: str, url: str) -> Callable[[str], str]:
    def decode(value: str) -> str:
        if not encoded:
            return value
        # S3's encoding-type=url writes a space as "+" (botocore decodes it
        # with unquote_plus); a real "+" arrives as %2B.
        try:
            return unquote_plus(value, errors="strict")
        except UnicodeDecodeError:
            raise _malformed_listing(bucket, url, f"key {value!r} is not UTF-8") from None

    return decode


def _is_truncated(fields: Mapping[str, str], bucket: str, url: str) -> bool:
    value = fields.get("IsTruncated", "false").strip().lower()
    if value not in ("true", "false"):
        raise _malformed_listing(bucket, url, f"IsTruncated is {value!r}")
    return value == "true"


def parse_list_objects_v2(body: bytes, bucket: str, url: str = "") -> ListPage:
    """Read one ListObjectsV2 page.

    Namespace-aware (S3's or none). Keys and common prefixes come back
    decoded: as listed, or URL-decoded where the answer says
    ``<EncodingType>url</EncodingType>``.

    Parameters
    ----------
    body : bytes
        The ``200`` answer's body.
    bucket : str
        The bucket listed, for error messages.
    url : str, optional
        The URL requested, for error messages.

    Returns
    -------
    ListPage

    Raises
    ------
    S3Error
        Code ``MalformedListing`` with status 200 for a body that is not a
        well-formed ``ListBucketResult`` (bad XML, a document type
        declaration, an entry without ``Key`` or ``Size``, a bad size, a
        truncated page without ``NextContinuationToken``); an ``S3Error``
        is a ``DownloadError``, so callers handle it like any failed
        request. An ``<Error>`` document is raised as the error it
        describes.

    Examples
    --------
    >>> page = parse_list_objects_v2(
    ...     b"<ListBucketResult><IsTruncated>false</IsTruncated>"
    ...     b"<Contents><Key>a b</Key><Size>3</Size><ETag>&quot;x&quot;</ETag></Contents>"
    ...     b"</ListBucketResult>", "b-1")
    >>> page.keys, page.next_token, page.is_truncated
    ([ListedObject(key='a b', size=3, etag='"x"')], None, False)
    """
    body = _as_bytes(body)
    root = _parse_xml(body)
    if root is None:
        raise _malformed_listing(bucket, url, "not well-formed XML")
    if _local_name(root.tag) == "Error":
        raise parse_error_xml(body, 200, bucket, "", url=url)
    if _local_name(root.tag) != "ListBucketResult":
        raise _malformed_listing(bucket, url, f"unexpected root element {root.tag!r}")
    fields = _children_text(root)
    decode = _key_decoder(fields.get("EncodingType", "").strip() == "url", bucket, url)
    objects: list[ListedObject] = []
    prefixes: list[str] = []
    for child in root:
        name = _local_name(child.tag)
        if name == "Contents":
            objects.append(_listed_object(child, decode, bucket, url))
        elif name == "CommonPrefixes":
            prefixes.extend(decode(p) for n, p in _children_text(child).items() if n == "Prefix")
    truncated = _is_truncated(fields, bucket, url)
    token = fields.get("NextContinuationToken", "").strip() or None
    if truncated and token is None:
        raise _malformed_listing(bucket, url, "IsTruncated is true but no NextContinuationToken")
    return ListPage(objects, token if truncated else None, truncated, tuple(prefixes))


#: Empty truncated pages in a row that a listing may send (S3 Express
#: directory buckets send some) before it counts as going nowhere.
MAX_EMPTY_PAGES: Final = 1000


class ListingProgress:
    """Stops a ListObjectsV2 listing that goes round in circles (botocore does too).

    S3 never sends a continuation token twice in one listing, nor a key it
    listed already. A server or a cache in front of it that ignores the
    token (one keyed on the path alone) sends the first page for ever, and
    a client that believes it lists for ever. botocore refuses the same
    token twice in a row; this refuses any token seen before (tokens that
    take turns), a page that brings only keys already listed, and more
    than :data:`MAX_EMPTY_PAGES` empty pages in a row.

    Parameters
    ----------
    bucket : str
        The bucket listed.
    source : str
        The prefix's ``s3://`` URI, as the caller wrote it, for messages.

    Examples
    --------
    >>> progress = ListingProgress("b-1", "s3://b-1/p/")
    >>> progress.check(ListPage([ListedObject("p/a", 1, None)], "t1", True))
    >>> progress.check(ListPage([ListedObject("p/b", 1, None)], "t1", True))
    Traceback (most recent call last):
    ...
    pyvo_dl.S3Error: S3 ListingLoop (HTTP 200) for s3://b-1/: the listing of s3://b-1/p/ \
sent the continuation token 't1' a second time; the server (or a cache in front of it) \
ignores continuation-token
    """

    def __init__(self, bucket: str, source: str) -> None:
        self._bucket = bucket
        self._source = source
        self._tokens: set[str] = set()
        self._keys: set[str] = set()
        self._empty = 0

    def check(self, page: ListPage, url: str = "") -> None:
        """Take the next page, or raise :class:`~pyvo_dl.S3Error` (``ListingLoop``).

        Parameters
        ----------
        page : ListPage
            The page just read, in order.
        url : str, optional
            The URL that answered it.
        """
        names = [obj.key for obj in page.keys] + list(page.common_prefixes)
        if names and self._keys.issuperset(names):
            self._loop(url, f"sent {names[0]!r} again, with nothing new")
        self._keys.update(names)
        self._empty = 0 if names else self._empty + 1
        if self._empty > MAX_EMPTY_PAGES:
            self._loop(url, f"sent {self._empty} empty pages in a row")
        token = page.next_token
        if token is None:
            return
        if token in self._tokens:
            self._loop(url, f"sent the continuation token {token!r} a second time")
        self._tokens.add(token)

    def _loop(self, url: str, what: str) -> None:
        raise S3Error(
            "ListingLoop",
            200,
            self._bucket,
            "",
            f"the listing of {self._source} {what}; the server (or a cache in front of it) "
            "ignores continuation-token",
            url=url,
        )

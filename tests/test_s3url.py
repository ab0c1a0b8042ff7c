"""Tests for pyvo_dl._s3url: S3 addressing and S3's XML answers (pure, no IO)."""

from __future__ import annotations

import ast
import doctest
import http.client
import inspect
import io
import pickle
import re
from urllib.parse import parse_qsl, quote, urlsplit
from xml.sax.saxutils import escape

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyvo_dl import _s3url
from pyvo_dl._errors import DownloadError, S3Error
from pyvo_dl._s3url import (
    S3_NAMESPACE,
    Endpoint,
    ListedObject,
    ListPage,
    S3Location,
    bucket_url,
    check_bucket_name,
    choose_endpoint,
    is_dns_compatible,
    list_objects_url,
    object_url,
    parse_error_xml,
    parse_list_objects_v2,
    parse_s3_uri,
    quote_key,
    region_from_headers,
    unquote_key,
)

SEED_KEY = "chandra/data/byobsid/2/3052/primary/acisf03052N004_cntr_img2.jpg"


def test_doctests() -> None:
    failed, attempted = doctest.testmod(_s3url)
    assert attempted > 20
    assert failed == 0


def test_imports_only_stdlib_and_errors() -> None:
    # Row 1 of docs/architecture.md: no IO modules, no os.environ.
    tree = ast.parse(inspect.getsource(_s3url))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add("." * node.level + (node.module or ""))
    assert imported <= {
        "__future__", "re", "typing", "urllib.parse", "xml.etree", "._errors", "._awsconfig"
    }  # fmt: skip


# --------------------------------------------------------------------------
# s3:// URIs

PARSE_OK = [
    ("s3://nasa-heasarc/" + SEED_KEY, "nasa-heasarc", SEED_KEY),
    ("s3://b-1/a b?c=d#e", "b-1", "a b?c=d#e"),
    ("s3://b-1/file.fits?", "b-1", "file.fits?"),
    ("s3://b-1/#", "b-1", "#"),
    ("s3://b-1/dir//x", "b-1", "dir//x"),
    ("s3://b-1//lead", "b-1", "/lead"),
    ("s3://b-1/%41+%2F", "b-1", "%41+%2F"),
    ("s3://b-1/prefix/", "b-1", "prefix/"),
    ("s3://b-1/", "b-1", ""),
    ("s3://b-1", "b-1", ""),
    ("S3://b-1/k", "b-1", "k"),
    ("s3://Legacy_Bucket/k", "Legacy_Bucket", "k"),
    ("s3://my.dotted.bucket/k", "my.dotted.bucket", "k"),
    ("s3://b-1/é/日本.fits", "b-1", "é/日本.fits"),
    ("s3://b-1/trailing space ", "b-1", "trailing space "),
    ("s3://b-1/..", "b-1", ".."),
]


@pytest.mark.parametrize(("uri", "bucket", "key"), PARSE_OK)
def test_parse_s3_uri(uri: str, bucket: str, key: str) -> None:
    assert parse_s3_uri(uri) == S3Location(bucket, key)
    assert S3Location.parse(uri) == (bucket, key)


@pytest.mark.parametrize(("uri", "bucket", "key"), PARSE_OK)
def test_s3_location_uri_round_trip(uri: str, bucket: str, key: str) -> None:
    location = S3Location(bucket, key)
    assert parse_s3_uri(location.uri) == location
    assert location.uri == f"s3://{bucket}/{key}"


PARSE_BAD = [
    ("", "not an S3 URI"),
    ("http://b-1/k", "not an S3 URI"),
    ("s3:/b-1/k", "not an S3 URI"),
    ("s3:b-1/k", "not an S3 URI"),
    (" s3://b-1/k", "not an S3 URI"),
    ("s3://", "no bucket"),
    ("s3:///k", "no bucket"),
    ("s3://ab/k", "invalid S3 bucket name 'ab'"),
    ("s3://a b/k", "invalid S3 bucket name 'a b'"),
    ("s3://user@bucket/k", "invalid S3 bucket name"),
    ("s3://bucket:443/k", "invalid S3 bucket name"),
    ("s3://bucket?x", "invalid S3 bucket name 'bucket?x'"),
    ("s3://" + "a" * 256 + "/k", "invalid S3 bucket name"),
]


@pytest.mark.parametrize(("uri", "message"), PARSE_BAD)
def test_parse_s3_uri_rejects(uri: str, message: str) -> None:
    with pytest.raises(ValueError, match=r"s3://bucket/key|bucket name") as info:
        parse_s3_uri(uri)
    assert repr(uri) in str(info.value)
    assert message in str(info.value)


def test_parse_s3_uri_wrong_type() -> None:
    with pytest.raises(TypeError, match="str"):
        parse_s3_uri(b"s3://b-1/k")  # type: ignore[arg-type]


# --------------------------------------------------------------------------
# Bucket names

BUCKETS = [
    # name, valid (SPEC §2.2), DNS-compatible
    ("nasa-heasarc", True, True),
    ("stpubdata", True, True),
    ("abc", True, True),
    ("a" * 63, True, True),
    ("a" * 64, True, False),
    ("a" * 255, True, False),
    ("a" * 256, False, False),
    ("ab", False, False),
    ("", False, False),
    ("my.bucket", True, True),
    ("my.a.bucket", True, True),
    ("my..bucket", True, False),
    (".bucket", True, False),
    ("bucket.", True, False),
    ("-bucket", True, False),
    ("bucket-", True, False),
    ("my.-bucket", True, False),
    ("my-.bucket", True, False),
    ("Legacy_Bucket", True, False),
    ("UPPER", True, False),
    ("under_score", True, False),
    ("192.168.5.4", True, False),
    ("192.168.5.4a", True, True),
    ("1.2.3", True, True),
    ("a/b", False, False),
    ("a b", False, False),
    ("abc\n", False, False),
    ("abc:", False, False),
    ("arn:aws:s3:us-east-1:1:accesspoint/x", False, False),
    ("bücket", False, False),
]


@pytest.mark.parametrize(("name", "valid", "dns"), BUCKETS)
def test_bucket_rules(name: str, valid: bool, dns: bool) -> None:
    assert is_dns_compatible(name) is dns
    if valid:
        assert check_bucket_name(name) == name
    else:
        with pytest.raises(ValueError, match="invalid S3 bucket name") as info:
            check_bucket_name(name)
        assert repr(name) in str(info.value)


def test_check_bucket_name_wrong_type() -> None:
    with pytest.raises(TypeError):
        check_bucket_name(None)  # type: ignore[arg-type]


# --------------------------------------------------------------------------
# Keys: quote_key and unquote_key are inverse pairs, tested both ways

KEYS = [
    ("plain/key.fits", "plain/key.fits"),
    ("a b", "a%20b"),
    ("a+b", "a%2Bb"),
    ("100%", "100%25"),
    ("%41", "%2541"),
    ("q?x", "q%3Fx"),
    ("h#1", "h%231"),
    ("k=v&w", "k%3Dv%26w"),
    ("dir//x", "dir//x"),
    ("/lead", "/lead"),
    ("~user/-_.", "~user/-_."),
    ("é", "%C3%A9"),
    ("日本", "%E6%97%A5%E6%9C%AC"),
    ("star😀", "star%F0%9F%98%80"),
    ("a:b@c;d,e$f!g'h(i)j*", "a%3Ab%40c%3Bd%2Ce%24f%21g%27h%28i%29j%2A"),
    ('"<>[]{}|^`', "%22%3C%3E%5B%5D%7B%7D%7C%5E%60"),
    ("tab\tnl\ncr\r", "tab%09nl%0Acr%0D"),
    ("back\\slash", "back%5Cslash"),
    ("nul\x00", "nul%00"),
    ("..", ".."),
    (SEED_KEY, SEED_KEY),
]


@pytest.mark.parametrize(("key", "quoted"), KEYS)
def test_quote_key(key: str, quoted: str) -> None:
    assert quote_key(key) == quoted


@pytest.mark.parametrize(("key", "quoted"), KEYS)
def test_unquote_key(key: str, quoted: str) -> None:
    assert unquote_key(quoted) == key


def test_unquote_key_keeps_plus() -> None:
    assert unquote_key("a+b") == "a+b"


def test_quote_key_refuses_lone_surrogate() -> None:
    key = "bad\udcff.fits"
    with pytest.raises(ValueError, match="not valid Unicode") as info:
        quote_key(key)
    assert repr(key) in str(info.value)


def test_unquote_key_refuses_bad_utf8() -> None:
    with pytest.raises(ValueError, match="UTF-8"):
        unquote_key("%FF")


# --------------------------------------------------------------------------
# Endpoint choice

AWS = Endpoint("https", "s3.amazonaws.com", None, False, None)

ENDPOINTS = [
    (None, None, {}, AWS),
    ("", "", {}, AWS),
    (
        "eu-west-1",
        None,
        {},
        Endpoint("https", "s3.eu-west-1.amazonaws.com", None, False, "eu-west-1"),
    ),
    (
        None,
        None,
        {"AWS_REGION": "us-west-2", "AWS_DEFAULT_REGION": "eu-west-1"},
        Endpoint("https", "s3.us-west-2.amazonaws.com", None, False, "us-west-2"),
    ),
    (
        None,
        None,
        {"AWS_DEFAULT_REGION": "eu-west-1"},
        Endpoint("https", "s3.eu-west-1.amazonaws.com", None, False, "eu-west-1"),
    ),
    (
        None,
        None,
        {"AWS_REGION": "", "AWS_DEFAULT_REGION": " eu-west-1\n"},
        Endpoint("https", "s3.eu-west-1.amazonaws.com", None, False, "eu-west-1"),
    ),
    (
        "ap-south-1",
        None,
        {"AWS_REGION": "us-west-2"},
        Endpoint("https", "s3.ap-south-1.amazonaws.com", None, False, "ap-south-1"),
    ),
    (
        "cn-north-1",
        None,
        {},
        Endpoint("https", "s3.cn-north-1.amazonaws.com.cn", None, False, "cn-north-1"),
    ),
    (None, "http://127.0.0.1:9000", {}, Endpoint("http", "127.0.0.1", 9000, True, None)),
    (None, "http://127.0.0.1:9000/", {}, Endpoint("http", "127.0.0.1", 9000, True, None)),
    (
        None,
        "https://s3.example.org/pre/fix/",
        {},
        Endpoint("https", "s3.example.org", None, True, None, "/pre/fix"),
    ),
    (None, "HTTP://LocalHost:9000", {}, Endpoint("http", "localhost", 9000, True, None)),
    (None, "http://[::1]:9000", {}, Endpoint("http", "::1", 9000, True, None)),
    (None, "http://minio_1:9000", {}, Endpoint("http", "minio_1", 9000, True, None)),
    (
        None,
        None,
        {"AWS_ENDPOINT_URL": "http://127.0.0.1:1"},
        Endpoint("http", "127.0.0.1", 1, True, None),
    ),
    (
        None,
        None,
        {"AWS_ENDPOINT_URL": "http://a:1", "AWS_ENDPOINT_URL_S3": "http://b:2"},
        Endpoint("http", "b", 2, True, None),
    ),
    (
        None,
        None,
        {"AWS_ENDPOINT_URL": "http://a:1", "AWS_ENDPOINT_URL_S3": ""},
        Endpoint("http", "a", 1, True, None),
    ),
    (
        "us-east-1",
        "http://x:1",
        {"AWS_ENDPOINT_URL_S3": "http://b:2"},
        Endpoint("http", "x", 1, True, "us-east-1"),
    ),
    (
        None,
        None,
        {"AWS_ENDPOINT_URL_S3": "http://b:2", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "True"},
        AWS,
    ),
    (
        None,
        "http://x:1",
        {"AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true"},
        Endpoint("http", "x", 1, True, None),
    ),
    (
        None,
        None,
        {"AWS_ENDPOINT_URL_S3": "http://b:2", "AWS_REGION": "eu-west-1"},
        Endpoint("http", "b", 2, True, "eu-west-1"),
    ),
]


@pytest.mark.parametrize(("region", "endpoint_url", "env", "expected"), ENDPOINTS)
def test_choose_endpoint(
    region: str | None, endpoint_url: str | None, env: dict[str, str], expected: Endpoint
) -> None:
    assert choose_endpoint(region, endpoint_url, env) == expected


BAD_ENDPOINTS = [
    "localhost:9000",
    "127.0.0.1:9000",
    "ftp://h",
    "http://",
    "http:///path",
    "http://h:99999",
    "http://h:port",
    "http://u:p@h",
    "http://h/?q=1",
    "http://h/#f",
    "http://h /x",
    "http://h\t/x",
    "http://[::1",
    "http://hé",
    "http://h/é",
    "   ",
]


@pytest.mark.parametrize("url", BAD_ENDPOINTS)
def test_choose_endpoint_rejects_malformed_url(url: str) -> None:
    with pytest.raises(ValueError, match="invalid S3 endpoint") as info:
        choose_endpoint(None, url, {})
    assert repr(url) in str(info.value)
    assert "endpoint_url" in str(info.value)


@pytest.mark.parametrize("variable", ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"])
def test_choose_endpoint_names_the_variable(variable: str) -> None:
    with pytest.raises(ValueError, match=variable):
        choose_endpoint(None, None, {variable: "localhost:9000"})


BAD_REGIONS = ["us east 1", "evil.com/", "a.b", "-us", "us-", "123", "a" * 64, "é"]


@pytest.mark.parametrize("region", BAD_REGIONS)
def test_choose_endpoint_rejects_bad_region(region: str) -> None:
    with pytest.raises(ValueError, match="invalid AWS region") as info:
        choose_endpoint(region, None, {})
    assert repr(region) in str(info.value)
    with pytest.raises(ValueError, match="AWS_DEFAULT_REGION"):
        choose_endpoint(None, None, {"AWS_DEFAULT_REGION": region})


WITH_REGION = [
    (AWS, "eu-west-1", Endpoint("https", "s3.eu-west-1.amazonaws.com", None, False, "eu-west-1")),
    (
        Endpoint("https", "s3.eu-west-1.amazonaws.com", None, False, "eu-west-1"),
        "cn-northwest-1",
        Endpoint("https", "s3.cn-northwest-1.amazonaws.com.cn", None, False, "cn-northwest-1"),
    ),
    (Endpoint("https", "s3.eu-west-1.amazonaws.com", None, False, "eu-west-1"), None, AWS),
    (
        Endpoint("http", "127.0.0.1", 9000, True, None, "/p"),
        "eu-west-1",
        Endpoint("http", "127.0.0.1", 9000, True, "eu-west-1", "/p"),
    ),
]


@pytest.mark.parametrize(("endpoint", "region", "expected"), WITH_REGION)
def test_endpoint_with_region(endpoint: Endpoint, region: str | None, expected: Endpoint) -> None:
    assert endpoint.with_region(region) == expected


def test_endpoint_with_region_rejects_bad_region() -> None:
    with pytest.raises(ValueError, match=re.escape("'evil.com/'")):
        AWS.with_region("evil.com/")


# --------------------------------------------------------------------------
# URLs

LOCAL = "http://127.0.0.1:9000"

OBJECT_URLS = [
    (
        "nasa-heasarc",
        SEED_KEY,
        None,
        None,
        "https://nasa-heasarc.s3.amazonaws.com/" + SEED_KEY,
    ),
    (
        "nasa-heasarc",
        SEED_KEY,
        "us-west-2",
        None,
        "https://nasa-heasarc.s3.us-west-2.amazonaws.com/" + SEED_KEY,
    ),
    ("my.bucket", "k", None, None, "https://s3.amazonaws.com/my.bucket/k"),
    ("my.bucket", "k", "eu-west-1", None, "https://s3.eu-west-1.amazonaws.com/my.bucket/k"),
    ("Legacy_Bucket", "k", None, None, "https://s3.amazonaws.com/Legacy_Bucket/k"),
    ("UPPER", "k", "us-east-1", None, "https://s3.us-east-1.amazonaws.com/UPPER/k"),
    ("a" * 64, "k", None, None, "https://s3.amazonaws.com/" + "a" * 64 + "/k"),
    ("192.168.1.1", "k", None, None, "https://s3.amazonaws.com/192.168.1.1/k"),
    ("b-1", "k", "cn-north-1", None, "https://b-1.s3.cn-north-1.amazonaws.com.cn/k"),
    ("b-1", "a b/c?d#e%f+g", None, None, "https://b-1.s3.amazonaws.com/a%20b/c%3Fd%23e%25f%2Bg"),
    ("b-1", "//x", None, None, "https://b-1.s3.amazonaws.com///x"),
    ("b-1", "dir/", None, None, "https://b-1.s3.amazonaws.com/dir/"),
    ("b-1", "é", None, None, "https://b-1.s3.amazonaws.com/%C3%A9"),
    ("b-1", "x/y.fits", None, LOCAL, LOCAL + "/b-1/x/y.fits"),
    ("b-1", "x/y.fits", "eu-west-1", LOCAL, LOCAL + "/b-1/x/y.fits"),
    ("b-1", "a b", None, LOCAL + "/minio/", LOCAL + "/minio/b-1/a%20b"),
    ("b-1", "k", None, "http://[::1]:9000", "http://[::1]:9000/b-1/k"),
    (
        "Legacy_Bucket",
        "k",
        None,
        "https://s3.example.org",
        "https://s3.example.org/Legacy_Bucket/k",
    ),
]


@pytest.mark.parametrize(("bucket", "key", "region", "endpoint_url", "expected"), OBJECT_URLS)
def test_object_url(
    bucket: str, key: str, region: str | None, endpoint_url: str | None, expected: str
) -> None:
    assert object_url(bucket, key, region, endpoint_url) == expected
    endpoint = choose_endpoint(region, endpoint_url, {})
    assert endpoint.object_url(bucket, key) == expected


def test_object_url_ignores_the_environment_but_endpoint_does_not() -> None:
    env = {"AWS_ENDPOINT_URL_S3": LOCAL}
    assert object_url("b-1", "k") == "https://b-1.s3.amazonaws.com/k"
    assert choose_endpoint(None, None, env).object_url("b-1", "k") == LOCAL + "/b-1/k"


@pytest.mark.parametrize(
    ("bucket", "key", "region", "message"),
    [
        ("b-1", "", None, "non-empty key"),
        ("a/b", "k", None, "invalid S3 bucket name 'a/b'"),
        ("ab", "k", None, "invalid S3 bucket name 'ab'"),
        ("b-1", "k", "evil.com/", "invalid AWS region 'evil.com/'"),
        ("b-1", "bad\udcff", None, "not valid Unicode"),
    ],
)
def test_object_url_rejects(bucket: str, key: str, region: str | None, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        object_url(bucket, key, region)


BUCKET_URLS = [
    ("nasa-heasarc", None, None, "https://nasa-heasarc.s3.amazonaws.com/"),
    ("nasa-heasarc", "us-east-1", None, "https://nasa-heasarc.s3.us-east-1.amazonaws.com/"),
    ("my.bucket", None, None, "https://s3.amazonaws.com/my.bucket"),
    ("Legacy_Bucket", "us-east-1", None, "https://s3.us-east-1.amazonaws.com/Legacy_Bucket"),
    ("b-1", None, LOCAL, LOCAL + "/b-1"),
    ("b-1", None, LOCAL + "/pre/", LOCAL + "/pre/b-1"),
]


@pytest.mark.parametrize(("bucket", "region", "endpoint_url", "expected"), BUCKET_URLS)
def test_bucket_url(
    bucket: str, region: str | None, endpoint_url: str | None, expected: str
) -> None:
    assert bucket_url(bucket, region, endpoint_url) == expected


def test_bucket_url_rejects_bad_bucket() -> None:
    with pytest.raises(ValueError, match="'a b'"):
        bucket_url("a b")


LIST_URLS = [
    (("b-1", ""), {}, "https://b-1.s3.amazonaws.com/?list-type=2"),
    (
        ("nasa-heasarc", "chandra/data/"),
        {},
        "https://nasa-heasarc.s3.amazonaws.com/?list-type=2&prefix=chandra%2Fdata%2F",
    ),
    (
        ("b-1", "p/", "1/a+b= c"),
        {},
        "https://b-1.s3.amazonaws.com/?continuation-token=1%2Fa%2Bb%3D%20c&list-type=2&prefix=p%2F",
    ),
    (
        ("b-1", "a b/"),
        {"endpoint_url": LOCAL, "delimiter": "/", "max_keys": 1000},
        LOCAL + "/b-1?delimiter=%2F&list-type=2&max-keys=1000&prefix=a%20b%2F",
    ),
    (
        ("my.bucket", "é~-_."),
        {"region": "eu-west-1", "encoding_type": "url"},
        (
            "https://s3.eu-west-1.amazonaws.com/my.bucket?encoding-type=url&list-type=2"
            "&prefix=%C3%A9~-_."
        ),
    ),
    (("b-1", "", None), {"max_keys": 1}, "https://b-1.s3.amazonaws.com/?list-type=2&max-keys=1"),
    (("b-1", "", ""), {"delimiter": ""}, "https://b-1.s3.amazonaws.com/?list-type=2"),
]


@pytest.mark.parametrize(("args", "kwargs", "expected"), LIST_URLS)
def test_list_objects_url(args: tuple, kwargs: dict, expected: str) -> None:
    assert list_objects_url(*args, **kwargs) == expected


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_keys": 0},
        {"max_keys": -1},
        {"max_keys": True},
        {"max_keys": "5"},
        {"max_keys": 1.5},
        {"encoding_type": "xml"},
    ],
)
def test_list_objects_url_rejects(kwargs: dict) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(next(iter(kwargs.values()))))):
        list_objects_url("b-1", "", **kwargs)


# --------------------------------------------------------------------------
# region_from_headers


def _http_message(text: str) -> http.client.HTTPMessage:
    return http.client.parse_headers(io.BytesIO(text.encode("latin-1") + b"\r\n"))


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x-amz-bucket-region": "eu-west-1"}, "eu-west-1"),
        ({"X-Amz-Bucket-Region": " us-east-2 "}, "us-east-2"),
        ({"X-AMZ-BUCKET-REGION": "cn-north-1"}, "cn-north-1"),
        ({"Content-Type": "application/xml"}, None),
        ({}, None),
        ({"x-amz-bucket-region": ""}, None),
        ({"x-amz-bucket-region": "evil.com/x"}, None),
        (_http_message("X-Amz-Bucket-Region: ap-south-1\r\n"), "ap-south-1"),
        (_http_message("Server: AmazonS3\r\n"), None),
    ],
)
def test_region_from_headers(headers: dict, expected: str | None) -> None:
    assert region_from_headers(headers) == expected


# --------------------------------------------------------------------------
# Error documents

NO_SUCH_KEY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b"<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message>"
    b"<Key>a b.fits</Key><RequestId>4442587FB7D0A2F9</RequestId>"
    b"<HostId>abc=</HostId></Error>"
)

ERROR_DOCUMENTS = [
    # body, status, region header, expected (code, message, region, request id)
    (
        NO_SUCH_KEY,
        404,
        None,
        ("NoSuchKey", "The specified key does not exist.", None, "4442587FB7D0A2F9"),
    ),
    (
        f'<Error xmlns="{S3_NAMESPACE}"><Code>NoSuchBucket</Code>'
        "<Message>The specified bucket does not exist</Message>"
        "<BucketName>b-1</BucketName><RequestId>R1</RequestId></Error>".encode(),
        404,
        None,
        ("NoSuchBucket", "The specified bucket does not exist", None, "R1"),
    ),
    (
        (
            b"<Error><Code>PermanentRedirect</Code><Message>The bucket you are attempting to access "
            b"must be addressed using the specified endpoint.</Message>"
            b"<Endpoint>b-1.s3.eu-west-1.amazonaws.com</Endpoint><Bucket>b-1</Bucket></Error>"
        ),
        301,
        "eu-west-1",
        (
            "PermanentRedirect",
            (
                "The bucket you are attempting to access must be addressed using the "
                "specified endpoint."
            ),
            "eu-west-1",
            None,
        ),
    ),
    (
        (
            b"<Error><Code>AuthorizationHeaderMalformed</Code><Message>the region 'us-east-1' is "
            b"wrong; expecting 'eu-central-1'</Message><Region>eu-central-1</Region></Error>"
        ),
        400,
        None,
        (
            "AuthorizationHeaderMalformed",
            "the region 'us-east-1' is wrong; expecting 'eu-central-1'",
            "eu-central-1",
            None,
        ),
    ),
    (
        (
            b"<Error><Code>IllegalLocationConstraintException</Code><Message>m</Message>"
            b"<BucketRegion>ap-south-1</BucketRegion></Error>"
        ),
        400,
        None,
        ("IllegalLocationConstraintException", "m", "ap-south-1", None),
    ),
    (
        b"<Error><Code>X</Code><Region>eu-central-1</Region></Error>",
        400,
        "us-west-2",
        ("X", "", "us-west-2", None),
    ),
    (
        b"<Error><Code>X</Code><Region>evil.com/</Region></Error>",
        400,
        "not a region",
        ("X", "", None, None),
    ),
    (
        b"<Error>\n  <Code> AccessDenied </Code>\n  <Message>Access\n    Denied</Message>\n</Error>",
        403,
        None,
        ("AccessDenied", "Access Denied", None, None),
    ),
    (
        (
            b"\xef\xbb\xbf<Error><Code>SlowDown</Code><Message>Reduce your request rate.</Message>"
            b"</Error>"
        ),
        503,
        None,
        ("SlowDown", "Reduce your request rate.", None, None),
    ),
    (
        (
            b"<ErrorResponse><Error><Code>InvalidAccessKeyId</Code><Message>m</Message></Error>"
            b"<RequestId>R2</RequestId></ErrorResponse>"
        ),
        403,
        None,
        ("InvalidAccessKeyId", "m", None, None),
    ),
    (
        b"<Error><Code>A&amp;B</Code><Message>&lt;x&gt; &#233;</Message></Error>",
        400,
        None,
        ("A&B", "<x> é", None, None),
    ),
]


@pytest.mark.parametrize(("body", "status", "region_header", "expected"), ERROR_DOCUMENTS)
def test_parse_error_xml(
    body: bytes, status: int, region_header: str | None, expected: tuple
) -> None:
    error = parse_error_xml(
        body, status, "b-1", "a b.fits", url="https://u/", region_header=region_header
    )
    assert isinstance(error, S3Error)
    assert isinstance(error, DownloadError)
    assert (error.code, error.reason, error.region, error.request_id) == expected
    assert (error.status, error.bucket, error.key, error.url) == (
        status,
        "b-1",
        "a b.fits",
        "https://u/",
    )
    assert error.code in str(error)
    assert pickle.loads(pickle.dumps(error)).code == error.code


BILLION_LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
    b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
    b"<Error><Code>&lol3;</Code></Error>"
)
EXTERNAL_ENTITY = (
    b'<!DOCTYPE Error [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    b"<Error><Code>&x;</Code><Message>&x;</Message></Error>"
)

SYNTHESISED = [
    # body, status, key, expected code
    (b"", 404, "k", "NoSuchKey"),
    (b"", 404, "", "NoSuchBucket"),
    (b"", 403, "k", "AccessDenied"),
    (b"", 301, "k", "PermanentRedirect"),
    (b"", 307, "", "TemporaryRedirect"),
    (b"", 400, "k", "BadRequest"),
    (b"", 412, "k", "PreconditionFailed"),
    (b"", 416, "k", "InvalidRange"),
    (b"", 500, "k", "HTTP500"),
    (b"", 503, "k", "HTTP503"),
    (b"  \r\n", 403, "k", "AccessDenied"),
    (None, 404, "k", "NoSuchKey"),
    (b"<Error><Code>NoSuchKey", 404, "k", "NoSuchKey"),
    (b"<Error><Code></Code></Error>", 403, "k", "AccessDenied"),
    (b"<Error><Message>only</Message></Error>", 403, "k", "AccessDenied"),
    (b"not xml at all", 500, "k", "HTTP500"),
    (b"<html><body><h1>403 Forbidden</h1></body></html>", 403, "k", "AccessDenied"),
    (b"<Error><Code>\xff\xfe</Code></Error>", 400, "k", "BadRequest"),
    ("<Error><Code>X</Code></Error>".encode("utf-16"), 400, "k", "BadRequest"),
    (b"<Error><Code>X</Code></Error><Error/>", 400, "k", "BadRequest"),
    (b"<Error><Code>&undefined;</Code></Error>", 400, "k", "BadRequest"),
    (BILLION_LAUGHS, 403, "k", "AccessDenied"),
    (EXTERNAL_ENTITY, 404, "k", "NoSuchKey"),
    (
        '<!DOCTYPE Error [<!ENTITY x "y">]><Error><Code>&x;</Code></Error>'.encode("utf-16"),
        400,
        "k",
        "BadRequest",
    ),
]


@pytest.mark.parametrize(("body", "status", "key", "code"), SYNTHESISED)
def test_parse_error_xml_synthesises_code(
    body: bytes | None, status: int, key: str, code: str
) -> None:
    error = parse_error_xml(body, status, "b-1", key)  # type: ignore[arg-type]
    assert (error.code, error.status, error.bucket, error.key) == (code, status, "b-1", key)
    assert "lol" not in str(error)
    assert "root:" not in str(error)


def test_parse_error_xml_bodiless_404_says_the_bucket_may_be_missing() -> None:
    error = parse_error_xml(b"", 404, "b-1", "k.fits", url="https://b-1.s3.amazonaws.com/k.fits")
    assert error.code == "NoSuchKey"
    assert "missing bucket" in str(error)
    assert "s3://b-1/k.fits" in str(error)


def test_parse_error_xml_ignores_declared_encoding() -> None:
    # Fed as text, expat ignores the declared encoding, so UTF-7 cannot
    # smuggle markup ("+ADw-" is "<" in UTF-7) past the DOCTYPE check.
    body = b'<?xml version="1.0" encoding="UTF-7"?><Error><Code>+ADw-!DOCTYPE</Code></Error>'
    assert parse_error_xml(body, 400, "b-1", "k").code == "+ADw-!DOCTYPE"


def test_parse_error_xml_hint_and_url() -> None:
    error = parse_error_xml(b"", 403, "b-1", "k", url="https://u/k", hint="Try aws_profile=")
    assert error.hint == "Try aws_profile="
    assert str(error).endswith(". Try aws_profile=")
    assert error.url == "https://u/k"


def test_parse_error_xml_accepts_bytearray() -> None:
    assert parse_error_xml(bytearray(NO_SUCH_KEY), 404, "b-1", "k").code == "NoSuchKey"


# --------------------------------------------------------------------------
# ListObjectsV2 pages


def _listing(*parts: str, ns: str = S3_NAMESPACE) -> bytes:
    xmlns = f' xmlns="{ns}"' if ns else ""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult{xmlns}>'
        + "".join(parts)
        + "</ListBucketResult>"
    ).encode()


def _contents(key: str, size: int | str = 1, etag: str | None = '"e"') -> str:
    etag_xml = f"<ETag>{escape(etag, {chr(34): '&quot;'})}</ETag>" if etag is not None else ""
    return (
        f"<Contents><Key>{escape(key)}</Key><LastModified>2024-01-01T00:00:00.000Z</LastModified>"
        f"{etag_xml}<Size>{size}</Size><StorageClass>STANDARD</StorageClass></Contents>"
    )


LISTINGS = [
    (
        _listing(
            "<Name>b-1</Name><Prefix>data/</Prefix><KeyCount>2</KeyCount><MaxKeys>2</MaxKeys>",
            "<IsTruncated>true</IsTruncated>",
            _contents("data/a.fits", 10, '"9e107d9d372bb6826bd81d3542a419d6"'),
            _contents("data/b c?.fits", 0, '"d41d8cd98f00b204e9800998ecf8427e-2"'),
            "<NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken>",
        ),
        ListPage(
            [
                ListedObject("data/a.fits", 10, '"9e107d9d372bb6826bd81d3542a419d6"'),
                ListedObject("data/b c?.fits", 0, '"d41d8cd98f00b204e9800998ecf8427e-2"'),
            ],
            "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=",
            True,
        ),
    ),
    (
        _listing(
            "<IsTruncated>false</IsTruncated>",
            _contents("k", 5),
            "<NextContinuationToken>ignored</NextContinuationToken>",
        ),
        ListPage([ListedObject("k", 5, '"e"')], None, False),
    ),
    (
        _listing("<Name>b-1</Name><KeyCount>0</KeyCount><IsTruncated>false</IsTruncated>"),
        ListPage([], None, False),
    ),
    (
        _listing("<IsTruncated>false</IsTruncated>", _contents("k", 5), ns=""),
        ListPage([ListedObject("k", 5, '"e"')], None, False),
    ),
    (
        _listing(_contents("no-truncated-element", 1, None)),
        ListPage([ListedObject("no-truncated-element", 1, None)], None, False),
    ),
    (
        _listing(
            "<IsTruncated>false</IsTruncated>",
            _contents(" spaced key ", 12345678901234),
            _contents("a&b<c>'\"", 1),
        ),
        ListPage(
            [
                ListedObject(" spaced key ", 12345678901234, '"e"'),
                ListedObject("a&b<c>'\"", 1, '"e"'),
            ],
            None,
            False,
        ),
    ),
    (
        _listing(
            "<EncodingType>url</EncodingType><IsTruncated>false</IsTruncated>",
            _contents("a+b%2Bc%3F%0D%01/%C3%A9", 2),
            "<CommonPrefixes><Prefix>dir+1%2F/</Prefix></CommonPrefixes>",
        ),
        ListPage([ListedObject("a b+c?\r\x01/é", 2, '"e"')], None, False, ("dir 1//",)),
    ),
    (
        _listing(
            "<Delimiter>/</Delimiter><IsTruncated>false</IsTruncated>",
            _contents("top.fits", 3),
            "<CommonPrefixes><Prefix>a/</Prefix></CommonPrefixes>",
            "<CommonPrefixes><Prefix>b c+/</Prefix></CommonPrefixes>",
        ),
        ListPage([ListedObject("top.fits", 3, '"e"')], None, False, ("a/", "b c+/")),
    ),
    (
        _listing(
            "<IsTruncated> TRUE </IsTruncated>", "<NextContinuationToken>t</NextContinuationToken>"
        ),
        ListPage([], "t", True),
    ),
]


@pytest.mark.parametrize(("body", "expected"), LISTINGS)
def test_parse_list_objects_v2(body: bytes, expected: ListPage) -> None:
    page = parse_list_objects_v2(body, "b-1")
    assert page == expected
    for key, size, etag in page.keys:
        assert isinstance(key, str)
        assert isinstance(size, int)
        assert etag is None or isinstance(etag, str)


MALFORMED_LISTINGS = [
    (b"", "not well-formed XML"),
    (b"garbage", "not well-formed XML"),
    (b"<ListBucketResult><Contents>", "not well-formed XML"),
    (b"\xff\xfe\x00", "not well-formed XML"),
    (
        (
            b'<!DOCTYPE x [<!ENTITY k "evil">]><ListBucketResult>'
            b"<Contents><Key>&k;</Key><Size>1</Size></Contents></ListBucketResult>"
        ),
        "not well-formed XML",
    ),
    (b"<ListAllMyBucketsResult/>", "unexpected root element"),
    (_listing("<Contents><Key>k</Key></Contents>"), "no Key or no Size"),
    (_listing("<Contents><Size>1</Size></Contents>"), "no Key or no Size"),
    (_listing(_contents("k", "x")), "invalid Size 'x'"),
    (_listing(_contents("k", -1)), "invalid Size '-1'"),
    (_listing("<IsTruncated>maybe</IsTruncated>"), "IsTruncated is 'maybe'"),
    (_listing("<IsTruncated>true</IsTruncated>"), "no NextContinuationToken"),
    (
        _listing("<EncodingType>url</EncodingType>", _contents("%FF", 1)),
        "key '%FF' is not UTF-8",
    ),
]


@pytest.mark.parametrize(("body", "message"), MALFORMED_LISTINGS)
def test_parse_list_objects_v2_malformed(body: bytes, message: str) -> None:
    with pytest.raises(S3Error) as info:
        parse_list_objects_v2(body, "b-1", "https://b-1.s3.amazonaws.com/?list-type=2")
    error = info.value
    assert (error.code, error.status, error.bucket, error.key) == (
        "MalformedListing",
        200,
        "b-1",
        "",
    )
    assert error.url == "https://b-1.s3.amazonaws.com/?list-type=2"
    assert message in str(error)
    assert isinstance(error, DownloadError)


def test_parse_list_objects_v2_raises_an_error_document() -> None:
    body = b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
    with pytest.raises(S3Error) as info:
        parse_list_objects_v2(body, "b-1")
    assert (info.value.code, info.value.status, info.value.reason) == (
        "AccessDenied",
        200,
        "Access Denied",
    )


def test_list_page_unpacks_as_key_size_etag() -> None:
    page = parse_list_objects_v2(_listing(_contents("k", 7)), "b-1")
    [(key, size, etag)] = page.keys
    assert (key, size, etag) == ("k", 7, '"e"')
    _keys, next_token, is_truncated, prefixes = page
    assert (next_token, is_truncated, prefixes) == (None, False, ())


# --------------------------------------------------------------------------
# Properties (opt-in: -m property)

TEXT = st.text(st.characters(exclude_categories=("Cs",)))
BUCKET = st.from_regex(r"[A-Za-z0-9._-]{3,70}", fullmatch=True)
DNS_BUCKET = st.from_regex(r"[a-z0-9][a-z0-9-]{1,40}[a-z0-9]", fullmatch=True)


@pytest.mark.property
@given(TEXT)
def test_property_quote_key_round_trips(key: str) -> None:
    quoted = quote_key(key)
    assert unquote_key(quoted) == key
    assert quote_key(unquote_key(quoted)) == quoted


@pytest.mark.property
@given(TEXT)
def test_property_quoted_key_is_plain_ascii(key: str) -> None:
    quoted = quote_key(key)
    stripped = quoted.replace("%", "")
    assert all(c.isascii() and (c.isalnum() or c in "-_.~/") for c in stripped)
    for i, c in enumerate(quoted):
        if c == "%":
            assert quoted[i + 1 : i + 3] in {f"{b:02X}" for b in range(256)}
    assert quoted.count("/") == key.count("/")


@pytest.mark.property
@given(BUCKET, TEXT)
def test_property_parse_s3_uri_inverts_uri(bucket: str, key: str) -> None:
    location = S3Location(bucket, key)
    assert parse_s3_uri(location.uri) == location


@pytest.mark.property
@given(BUCKET)
def test_property_dns_compatible_names_are_valid_lowercase(bucket: str) -> None:
    if is_dns_compatible(bucket):
        assert check_bucket_name(bucket) == bucket
        assert bucket == bucket.lower()
        assert 3 <= len(bucket) <= 63


@pytest.mark.property
@given(BUCKET, TEXT.filter(bool), st.sampled_from([None, "eu-west-1", "cn-north-1"]))
def test_property_object_url_carries_the_key_in_the_path(
    bucket: str, key: str, region: str | None
) -> None:
    parts = urlsplit(object_url(bucket, key, region))
    assert parts.scheme == "https"
    assert (parts.query, parts.fragment) == ("", "")
    if choose_endpoint(region, None, {}).uses_path_style(bucket):
        assert parts.path == f"/{bucket}/{quote_key(key)}"
    else:
        assert parts.hostname == f"{bucket}.{choose_endpoint(region, None, {}).host}"
        assert unquote_key(parts.path[1:]) == key


@pytest.mark.property
@given(DNS_BUCKET, TEXT, st.one_of(st.none(), TEXT), st.one_of(st.none(), TEXT))
def test_property_list_query_round_trips(
    bucket: str, prefix: str, token: str | None, delimiter: str | None
) -> None:
    url = list_objects_url(bucket, prefix, token, delimiter=delimiter)
    pairs = parse_qsl(urlsplit(url).query, keep_blank_values=True)
    expected = {"list-type": "2", "prefix": prefix, "continuation-token": token}
    expected["delimiter"] = delimiter
    assert dict(pairs) == {k: v for k, v in expected.items() if v}
    names = [name for name, _ in pairs]
    assert names == sorted(names)
    assert all(c.isascii() and c not in " /+" for c in urlsplit(url).query)


@pytest.mark.property
@given(st.lists(st.tuples(TEXT.filter(bool), st.integers(0, 2**63)), max_size=5))
def test_property_url_encoded_listing_round_trips(objects: list) -> None:
    # What S3 sends for encoding-type=url: keys quote_plus-encoded.
    contents = [_contents(quote(key, safe="/").replace("%20", "+"), size) for key, size in objects]
    body = _listing("<EncodingType>url</EncodingType><IsTruncated>false</IsTruncated>", *contents)
    page = parse_list_objects_v2(body, "b-1")
    assert [(o.key, o.size) for o in page.keys] == objects


@pytest.mark.property
@given(st.binary(max_size=300), st.sampled_from([200, 301, 400, 403, 404, 500]), TEXT)
def test_property_parse_error_xml_never_raises(body: bytes, status: int, key: str) -> None:
    error = parse_error_xml(body, status, "b-1", key)
    assert isinstance(error, S3Error)
    assert error.status == status
    assert error.code


@pytest.mark.property
@given(
    st.lists(
        st.sampled_from(
            ["<Error>", "</Error>", "<Code>", "</Code>", "<!DOCTYPE x>", "&amp;", "&x;", "<", "é"]
        )
        | TEXT,
        max_size=12,
    ),
    st.sampled_from([403, 404]),
)
def test_property_parse_error_xml_never_raises_on_xmlish(parts: list, status: int) -> None:
    body = "".join(parts).encode("utf-8")
    assert parse_error_xml(body, status, "b-1", "k").status == status

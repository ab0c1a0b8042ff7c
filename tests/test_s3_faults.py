"""aws_download against the stdlib fault server acting as an S3 endpoint.

What moto cannot show: region discovery from a 301, resume with
``If-Match``, retries, checksum mismatches, requester pays, checksums only
on whole-object answers as real S3 sends them (the ``s3_server`` fixture
runs each such test that way and with checksums on every answer), and SigV4
signatures over keys that moto 5.2's checker wrongly refuses — verified here
with botocore's own signer over the request as the server received it.
"""

from __future__ import annotations

import base64
import hashlib
import re
import socket
import ssl

import pytest

import pyvo_dl
from servers import FaultServer, build_response

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    import trustme

    from servers import RawServer, Request

BUCKET = "bkt"
SIGNED_KEYS = [
    "plus+sign/a+b.fits",
    "percent%/100%.fits",
    "ünïcødé/星.fits",
    "chars=&;:,@$'()*!/x.fits",
    "space and ?query#hash/~.fits",
]


def _data(n: int) -> bytes:
    return (hashlib.sha256(b"s3").digest() * (n // 32 + 1))[:n]


def _serve_object(server: FaultServer, key: str, body: bytes, **kwargs: object) -> str:
    from pyvo_dl._s3url import quote_key

    server.add_file(f"/{BUCKET}/{quote_key(key)}", body, **kwargs)  # type: ignore[arg-type]
    return f"/{BUCKET}/{quote_key(key)}"


def _gets(server: FaultServer, path: str) -> list[Request]:
    return server.requests_for(path, "GET")


def _session(region: str = "us-east-1") -> object:
    botocore_session = pytest.importorskip("botocore.session")
    session = botocore_session.Session()
    session.set_credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "tok")
    session.set_config_variable("region", region)
    return session


def _verify_sigv4(server: FaultServer, request: Request, secret: str) -> None:
    """Recompute the signature over what the server received, with botocore's signer."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    authorization = request.headers["authorization"]
    match = re.match(
        r"AWS4-HMAC-SHA256 Credential=([^/]+)/\d{8}/([^/]+)/s3/aws4_request, "
        r"SignedHeaders=([^,]+), Signature=([0-9a-f]{64})$",
        authorization,
    )
    assert match, authorization
    access_key, region, signed_names, signature = match.groups()
    headers = {name: request.headers[name] for name in signed_names.split(";")}
    received = AWSRequest(
        method=request.method, url=server.base_url + request.path, headers=headers
    )
    received.context["timestamp"] = request.headers["x-amz-date"]
    token = request.headers.get("x-amz-security-token")
    auth = S3SigV4Auth(Credentials(access_key, secret, token), "s3", region)
    expected = auth.signature(
        auth.string_to_sign(received, auth.canonical_request(received)), received
    )
    assert signature == expected


@pytest.mark.parametrize("key", SIGNED_KEYS)
def test_signature_over_awkward_keys_is_valid(
    http_server: FaultServer, in_tmp: Path, key: str
) -> None:
    body = _data(5000)
    path = _serve_object(http_server, key, body)
    pyvo_dl.aws_download(
        bucket=BUCKET, key=key, session=_session(), endpoint_url=http_server.base_url,
        local_filepath="x.fits",
    )  # fmt: skip
    assert (in_tmp / "x.fits").read_bytes() == body
    (request,) = _gets(http_server, path)
    assert request.headers["x-amz-security-token"] == "tok"
    _verify_sigv4(http_server, request, "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")


def test_ranged_resume_is_signed_and_conditional(s3_server: FaultServer, in_tmp: Path) -> None:
    body = _data(300_000)
    path = _serve_object(s3_server, "r/obj.fits", body)
    s3_server.set_fault(path, drop_after=100_000, times=1)
    pyvo_dl.aws_download(
        uri=f"s3://{BUCKET}/r/obj.fits", session=_session(), endpoint_url=s3_server.base_url
    )
    assert (in_tmp / "obj.fits").read_bytes() == body
    first, second = _gets(s3_server, path)
    # The first GET asks for the whole object: S3 sends its checksums only
    # then; its size decides on parallel ranges in the same trip.
    assert "range" not in first.headers
    assert first.headers["x-amz-checksum-mode"] == "ENABLED"
    assert "if-match" not in first.headers
    start = int(second.headers["range"].split("=")[1].rstrip("-"))
    assert 0 < start <= 100_000
    assert second.headers["if-match"] == s3_server.etag(path)
    assert "if-range" not in second.headers
    assert "range" in second.headers["authorization"].split("SignedHeaders=")[1].split(",")[0]
    _verify_sigv4(s3_server, second, "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")


def test_object_replaced_mid_download_restarts(s3_server: FaultServer, in_tmp: Path) -> None:
    old, new = _data(200_000), _data(210_000)[::-1]
    path = _serve_object(s3_server, "c/obj.fits", old)
    s3_server.set_fault(path, drop_after=50_000, times=1)
    s3_server.set_fault(path, change_after=1, new_data=new)
    pyvo_dl.aws_download(f"s3://{BUCKET}/c/obj.fits", endpoint_url=s3_server.base_url)
    assert (in_tmp / "obj.fits").read_bytes() == new
    statuses = [r.status for r in _gets(s3_server, path)]
    assert 412 in statuses


def test_transient_errors_are_retried(s3_server: FaultServer, in_tmp: Path) -> None:
    body = _data(10_000)
    path = _serve_object(s3_server, "t.fits", body)
    s3_server.set_fault(path, status=503, retry_after="0", times=2)
    pyvo_dl.aws_download(f"s3://{BUCKET}/t.fits", endpoint_url=s3_server.base_url)
    assert (in_tmp / "t.fits").read_bytes() == body
    assert [r.status for r in _gets(s3_server, path)] == [503, 503, 200]


def test_region_discovered_from_301(
    http_server: FaultServer, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = _data(1000)
    path = _serve_object(http_server, "far/away.fits", body)
    error_xml = (
        b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>PermanentRedirect</Code>"
        b"<Message>The bucket you are attempting to access must be addressed using the "
        b"specified endpoint.</Message><Endpoint>bkt.s3.eu-west-3.amazonaws.com</Endpoint>"
        b"</Error>"
    )
    http_server.set_fault(
        path, status=301, body=error_xml, headers={"x-amz-bucket-region": "eu-west-3"}, times=1
    )
    pyvo_dl.aws_download(
        f"s3://{BUCKET}/far/away.fits", session=_session("us-east-1"),
        endpoint_url=http_server.base_url, verbose=True,
    )  # fmt: skip
    assert (in_tmp / "away.fits").read_bytes() == body
    first, second = _gets(http_server, path)
    assert "/us-east-1/s3/" in first.headers["authorization"]
    assert "/eu-west-3/s3/" in second.headers["authorization"]
    assert "region eu-west-3" in capsys.readouterr().out


def test_region_switch_happens_once(http_server: FaultServer, in_tmp: Path) -> None:
    path = _serve_object(http_server, "loop.fits", b"x")
    http_server.set_fault(path, status=301, headers={"x-amz-bucket-region": "eu-west-3"})
    with pytest.raises(pyvo_dl.S3Error) as info:
        pyvo_dl.aws_download(f"s3://{BUCKET}/loop.fits", endpoint_url=http_server.base_url)
    assert info.value.status == 301
    assert info.value.region == "eu-west-3"
    assert len(_gets(http_server, path)) == 2


@pytest.mark.parametrize("header", ["x-amz-checksum-sha256", "x-amz-checksum-crc32"])
def test_announced_checksum_mismatch(s3_server: FaultServer, in_tmp: Path, header: str) -> None:
    body = _data(50_000)
    wrong = hashlib.sha256(b"other").digest() if header.endswith("256") else b"\0\0\0\1"
    path = _serve_object(
        s3_server, "bad.fits", body, headers={header: base64.b64encode(wrong).decode()}
    )
    with pytest.raises(pyvo_dl.IntegrityError) as info:
        pyvo_dl.aws_download(f"s3://{BUCKET}/bad.fits", endpoint_url=s3_server.base_url)
    assert info.value.what == header.rsplit("-", 1)[1]
    assert list(in_tmp.iterdir()) == []
    assert (s3_server.requests_for(path, "GET")[0].headers["x-amz-checksum-mode"]) == "ENABLED"


def test_announced_checksums_that_match_pass(s3_server: FaultServer, in_tmp: Path) -> None:
    body = _data(70_000)
    _serve_object(s3_server, "good.fits", body, headers=_checksum_headers(body, "sha256", "crc32"))
    pyvo_dl.aws_download(f"s3://{BUCKET}/good.fits", endpoint_url=s3_server.base_url)
    assert (in_tmp / "good.fits").read_bytes() == body


def test_etag_md5_mismatch(s3_server: FaultServer, in_tmp: Path) -> None:
    body = _data(40_000)
    wrong_etag = '"' + hashlib.md5(b"not the body").hexdigest() + '"'
    _serve_object(s3_server, "md5.fits", body, etag=wrong_etag)
    with pytest.raises(pyvo_dl.IntegrityError) as info:
        pyvo_dl.aws_download(f"s3://{BUCKET}/md5.fits", endpoint_url=s3_server.base_url)
    assert info.value.what == "md5"
    assert list(in_tmp.iterdir()) == []


def test_multipart_etag_is_not_taken_for_md5(s3_server: FaultServer, in_tmp: Path) -> None:
    body = _data(40_000)
    _serve_object(s3_server, "mp.fits", body, etag=MULTIPART_ETAG)
    pyvo_dl.aws_download(f"s3://{BUCKET}/mp.fits", endpoint_url=s3_server.base_url)
    assert (in_tmp / "mp.fits").read_bytes() == body


# -- checksums as real S3 serves them (issue 12.2) ----------------------------------

#: The ETag of a multipart upload: no MD5 of the object, so only a stored
#: checksum can verify it.
MULTIPART_ETAG = '"' + "a" * 32 + '-3"'
MIB = 1024 * 1024


def _checksum_headers(body: bytes, *algorithms: str) -> dict[str, str]:
    """``x-amz-checksum-<alg>`` of the whole ``body`` (FULL_OBJECT), as S3 stores them."""
    import zlib

    digests = {
        "sha256": lambda: hashlib.sha256(body).digest(),
        "sha1": lambda: hashlib.sha1(body).digest(),
        "crc32": lambda: zlib.crc32(body).to_bytes(4, "big"),
    }
    headers = {"x-amz-checksum-type": "FULL_OBJECT"}
    for algorithm in algorithms:
        headers[f"x-amz-checksum-{algorithm}"] = base64.b64encode(digests[algorithm]()).decode()
    return headers


def _corrupted(body: bytes, at: int) -> bytes:
    return body[:at] + bytes([body[at] ^ 0x01]) + body[at + 1 :]


@pytest.mark.parametrize("algorithm", ["sha256", "crc32"])
@pytest.mark.parametrize(
    ("size", "connections"),
    [pytest.param(300_000, None, id="one stream"), pytest.param(20 * MIB + 5, 4, id="split")],
)
def test_a_multipart_upload_is_verified_by_its_stored_checksum(
    s3_server: FaultServer, in_tmp: Path, algorithm: str, size: int, connections: int | None
) -> None:
    body = _data(size)
    headers = _checksum_headers(body, algorithm)
    good = _serve_object(s3_server, "ok.fits", body, etag=MULTIPART_ETAG, headers=headers)
    bad = _serve_object(
        s3_server, "bad.fits", _corrupted(body, size - 3), etag=MULTIPART_ETAG, headers=headers
    )
    pyvo_dl.aws_download(
        f"s3://{BUCKET}/ok.fits", endpoint_url=s3_server.base_url, connections=connections,
        progress=False,
    )  # fmt: skip
    assert (in_tmp / "ok.fits").read_bytes() == body
    with pytest.raises(pyvo_dl.IntegrityError) as info:
        pyvo_dl.aws_download(
            f"s3://{BUCKET}/bad.fits", endpoint_url=s3_server.base_url, connections=connections,
            progress=False,
        )  # fmt: skip
    assert info.value.what == algorithm
    assert sorted(p.name for p in in_tmp.iterdir()) == ["ok.fits"]
    for path in (good, bad):
        first, *rest = _gets(s3_server, path)
        assert "range" not in first.headers  # the whole object: its checksums come with it
        for request in rest:
            assert request.headers["if-match"] == MULTIPART_ETAG
            assert "if-range" not in request.headers


def test_a_resumed_download_is_verified_by_the_checksum_first_announced(
    s3_server: FaultServer, in_tmp: Path
) -> None:
    body = _data(300_000)
    headers = _checksum_headers(body, "sha256")
    path = _serve_object(s3_server, "r.fits", _corrupted(body, 250_000), etag=MULTIPART_ETAG,
                         headers=headers)  # fmt: skip
    s3_server.set_fault(path, drop_after=100_000, times=1)
    with pytest.raises(pyvo_dl.IntegrityError) as info:
        pyvo_dl.aws_download(f"s3://{BUCKET}/r.fits", endpoint_url=s3_server.base_url)
    assert info.value.what == "sha256"
    assert list(in_tmp.iterdir()) == []
    _, second = _gets(s3_server, path)
    assert second.headers["range"].startswith("bytes=")  # the rest, without checksums on S3


def test_a_composite_checksum_is_not_verified_and_verbose_says_so(
    s3_server: FaultServer, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = _data(60_000)
    composite = {
        "x-amz-checksum-sha256": base64.b64encode(hashlib.sha256(b"parts").digest()).decode()
        + "-3",
        "x-amz-checksum-type": "COMPOSITE",
    }
    _serve_object(s3_server, "c.fits", body, etag=MULTIPART_ETAG, headers=composite)
    pyvo_dl.aws_download(f"s3://{BUCKET}/c.fits", endpoint_url=s3_server.base_url, verbose=True)
    assert (in_tmp / "c.fits").read_bytes() == body
    out = capsys.readouterr().out
    assert (
        "Not verified: x-amz-checksum-sha256 (COMPOSITE: of the parts, not of the object). "
        "Verifying nothing but the size" in out
    )


def test_a_split_download_asks_for_the_whole_object_first(
    s3_server: FaultServer, in_tmp: Path
) -> None:
    body = _data(32 * MIB)
    path = _serve_object(s3_server, "big.fits", body, headers=_checksum_headers(body, "crc32"))
    pyvo_dl.aws_download(
        f"s3://{BUCKET}/big.fits", endpoint_url=s3_server.base_url, connections=4, progress=False
    )
    assert (in_tmp / "big.fits").read_bytes() == body
    first, *ranges = _gets(s3_server, path)
    assert first.status == 200
    assert "range" not in first.headers
    # The first quarter is the start of that answer; the other three are ranges.
    quarter = 8 * MIB
    assert sorted(r.headers["range"] for r in ranges) == sorted(
        f"bytes={i * quarter}-{(i + 1) * quarter - 1}" for i in (1, 2, 3)
    )
    assert all(r.status == 206 for r in ranges)
    assert not list(in_tmp.glob("*.part*"))


@pytest.mark.parametrize(
    ("size_mib", "parts"), [(64, 16), (32, 8), (7, 1)], ids=["64MiB", "32MiB", "7MiB"]
)
def test_at_its_defaults_an_object_is_split_in_up_to_sixteen_parts_of_4_mib_or_more(
    s3_server: FaultServer, in_tmp: Path, size_mib: int, parts: int
) -> None:
    """The default connections (16, from the benchmark's curve), never a part under 4 MiB."""
    body = _data(size_mib * MIB)
    path = _serve_object(s3_server, "d.fits", body)
    pyvo_dl.aws_download(f"s3://{BUCKET}/d.fits", endpoint_url=s3_server.base_url, progress=False)
    assert (in_tmp / "d.fits").read_bytes() == body
    first, *ranges = _gets(s3_server, path)
    assert "range" not in first.headers
    assert len(ranges) == parts - 1
    assert all(r.status == 206 for r in ranges)


def test_requester_pays_header_is_sent_and_signed(http_server: FaultServer, in_tmp: Path) -> None:
    path = _serve_object(http_server, "rp.fits", b"paid")
    pyvo_dl.aws_download(
        f"s3://{BUCKET}/rp.fits", endpoint_url=http_server.base_url, requester_pays=True,
        session=_session(),
    )  # fmt: skip
    (request,) = _gets(http_server, path)
    assert request.headers["x-amz-request-payer"] == "requester"
    assert "x-amz-request-payer" in request.headers["authorization"]
    _verify_sigv4(http_server, request, "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")


def test_no_requester_pays_header_by_default(http_server: FaultServer, in_tmp: Path) -> None:
    path = _serve_object(http_server, "free.fits", b"free")
    pyvo_dl.aws_download(f"s3://{BUCKET}/free.fits", endpoint_url=http_server.base_url)
    (request,) = _gets(http_server, path)
    assert "x-amz-request-payer" not in request.headers
    assert "authorization" not in request.headers


def test_403_anonymous_without_credentials_suggests_profile(
    http_server: FaultServer, in_tmp: Path
) -> None:
    path = _serve_object(http_server, "deny.fits", b"x")
    body = b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
    http_server.set_fault(path, status=403, body=body)
    with pytest.raises(pyvo_dl.S3Error) as info:
        pyvo_dl.aws_download(f"s3://{BUCKET}/deny.fits", endpoint_url=http_server.base_url)
    assert info.value.code == "AccessDenied"
    assert "aws_profile=" in str(info.value)
    assert len(_gets(http_server, path)) == 1


# -- listings that never end (issue 12.10) ------------------------------------------

#: Pages a looping test server sends before it gives in and ends the listing, so
#: that a client without the check ends too (and the test fails, not hangs).
LOOP_PAGES = 200


def _listing_page(keys: list[str], token: str | None) -> bytes:
    contents = "".join(f"<Contents><Key>{k}</Key><Size>1</Size></Contents>" for k in keys)
    more = f"<NextContinuationToken>{token}</NextContinuationToken>" if token else ""
    truncated = "true" if token else "false"
    return (
        "<?xml version='1.0' encoding='UTF-8'?>"
        "<ListBucketResult xmlns='http://s3.amazonaws.com/doc/2006-03-01/'>"
        f"<Name>loop</Name><Prefix>p/</Prefix><IsTruncated>{truncated}</IsTruncated>"
        f"{contents}{more}</ListBucketResult>"
    ).encode()


def _looping_lister(
    next_page: Callable[[int], tuple[list[str], str | None]],
) -> Callable[[socket.socket, bytes], None]:
    """A ListObjectsV2 server whose page ``n`` is ``next_page(n)``, up to LOOP_PAGES."""
    served = [0]

    def handler(conn: socket.socket, request: bytes) -> None:
        n = served[0]
        served[0] += 1
        keys, token = next_page(n) if n < LOOP_PAGES else (["p/last"], None)
        body = _listing_page(keys, token)
        conn.sendall(build_response(200, headers={"Content-Type": "application/xml"}, body=body))

    return handler


@pytest.mark.parametrize(
    "pages",
    [
        # A cache in front of the server keyed on the path alone (nginx's
        # proxy_cache_key without $args): the first page, and its token, again
        # and again. This is the loop the issue measured.
        pytest.param(lambda n: (["p/a", "p/b"], "token-1"), id="same token"),
        # Tokens that take turns: botocore's check (the same token twice in a
        # row) misses this one.
        pytest.param(lambda n: ([f"p/{n % 2}"], f"token-{n % 2}"), id="cycling tokens"),
        # A server that ignores continuation-token (a V1-only S3 imitation
        # such as an old Ceph RGW) but writes a fresh token on every page: the
        # same keys for ever.
        pytest.param(lambda n: (["p/a", "p/b"], f"fresh-{n}"), id="same keys, fresh tokens"),
    ],
)
def test_a_listing_that_makes_no_progress_stops_with_an_s3_error(
    raw_server_factory: Callable[..., RawServer],
    tmp_path: Path,
    pages: Callable[[int], tuple[list[str], str | None]],
) -> None:
    server = raw_server_factory(_looping_lister(pages))
    with pytest.raises(pyvo_dl.S3Error) as info:
        pyvo_dl.aws_download(
            "s3://loop/p/", endpoint_url=server.base_url, recursive=True,
            local_filepath=str(tmp_path / "in"), progress=False,
        )  # fmt: skip
    assert info.value.code == "ListingLoop"
    assert "s3://loop/p/" in str(info.value)
    assert len(server.requests) <= 3
    assert not (tmp_path / "in").exists()


def test_empty_pages_with_fresh_tokens_are_followed(
    raw_server_factory: Callable[..., RawServer], tmp_path: Path
) -> None:
    """S3 Express directory buckets may send empty truncated pages: not a loop."""

    def pages(n: int) -> tuple[list[str], str | None]:
        return ([], f"t{n}") if n < 5 else (["p/x"], None)

    server = raw_server_factory(_looping_lister(pages))
    (tmp_path / "in").mkdir()
    results = pyvo_dl.download_many(
        ["s3://loop/p/"], tmp_path / "in", endpoint_url=server.base_url, recursive=True,
        progress=False,
    )  # fmt: skip
    assert len(results) == 1  # p/x (whose "data" is this server's XML: it only lists)
    assert len([r for r in server.requests if b"list-type=2" in r]) == 6


@pytest.mark.parametrize("scheme", ["http", "https"])
@pytest.mark.parametrize("algorithm", ["crc32", "sha256"])
def test_a_split_download_combines_range_crcs_and_reads_back_only_what_cannot_be(
    ca: trustme.CA, client_ssl_context: ssl.SSLContext, in_tmp: Path,
    monkeypatch: pytest.MonkeyPatch, algorithm: str, scheme: str,
) -> None:  # fmt: skip
    """A CRC is combined from the ranges' (crc_combine); a SHA-256 needs the file read once.

    So does a CRC where the bodies go socket -> file inside the kernel
    (plain http on Linux): the CRC would cost the copies that this saves.
    Real S3 is https.
    """
    from pyvo_dl import _exchange, _partfile

    reads: list[int] = []
    original = _exchange.hash_prefix

    def counting(verifier: object, path: str, length: int) -> None:
        reads.append(length)
        original(verifier, path, length)  # type: ignore[arg-type]

    monkeypatch.setattr(_exchange, "hash_prefix", counting)
    context = None
    if scheme == "https":
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(context)
    with FaultServer(s3_semantics=True, ssl_context=context) as server:
        body = _data(24 * MIB + 3)
        headers = _checksum_headers(body, algorithm)
        _serve_object(server, "ok.fits", body, etag=MULTIPART_ETAG, headers=headers)
        _serve_object(server, "bad.fits", _corrupted(body, 13 * MIB), etag=MULTIPART_ETAG,
                      headers=headers)  # fmt: skip
        options = {"endpoint_url": server.base_url, "connections": 3, "progress": False,
                   "ssl_context": client_ssl_context}  # fmt: skip
        pyvo_dl.aws_download(f"s3://{BUCKET}/ok.fits", **options)  # type: ignore[arg-type]
        assert (in_tmp / "ok.fits").read_bytes() == body
        spliced = scheme == "http" and _partfile.can_splice()
        assert reads == ([len(body)] if algorithm == "sha256" or spliced else [])
        with pytest.raises(pyvo_dl.IntegrityError) as info:
            pyvo_dl.aws_download(f"s3://{BUCKET}/bad.fits", **options)  # type: ignore[arg-type]
    assert not server.errors
    assert info.value.what == algorithm
    assert sorted(p.name for p in in_tmp.iterdir()) == ["ok.fits"]

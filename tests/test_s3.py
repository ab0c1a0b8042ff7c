"""aws_download against a real S3 server (moto in server mode) on loopback.

SPEC §2.2 and the S3 side of §2.4, §3 and §4: anonymous unsigned reads,
awkward keys, large objects, pyvo's own test cases, integrity, the signed
modes (profile, session, temporary credentials) against a moto whose
authentication is switched on, and the anonymous → signed fallback.
"""

from __future__ import annotations

import hashlib
import pickle
import re
import warnings

import pytest

import pyvo_dl
from servers import (
    assume_moto_role,
    create_moto_user,
    enable_moto_auth,
    s3_client_for,
)

pytest.importorskip("boto3")

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

BUCKET = "public-data"
AWKWARD_KEYS = [
    "dir with space/file name.fits",
    "plus+sign/a+b.fits",
    "percent%25/100%.fits",
    "question?mark/what?.fits",
    "hash#tag/#1.fits",
    "tilde~/~home.fits",
    "unicode/ünïcødé-星.fits",
    "double//slash/x.fits",
    "equals=and&amp;semi;colon:comma,at@dollar$/quote'(paren)*star!.fits",
]


def _data(n: int, seed: int = 0) -> bytes:
    block = hashlib.sha256(str(seed).encode()).digest() * 2048  # 64 KiB pattern
    return (block * (n // len(block) + 1))[:n]


def _public_bucket(endpoint: str, objects: dict[str, bytes], bucket: str = BUCKET) -> None:
    client = s3_client_for(endpoint)
    client.create_bucket(Bucket=bucket)
    for key, body in objects.items():
        client.put_object(Bucket=bucket, Key=key, Body=body, ACL="public-read")


@pytest.mark.parametrize("key", AWKWARD_KEYS)
def test_awkward_keys_round_trip(s3_endpoint: str, in_tmp: Path, key: str) -> None:
    body = _data(70_000, seed=len(key))
    _public_bucket(s3_endpoint, {key: body})
    path = pyvo_dl.aws_download(
        uri=f"s3://{BUCKET}/{key}", endpoint_url=s3_endpoint, local_filepath="out.fits"
    )
    assert path == "out.fits"
    assert (in_tmp / "out.fits").read_bytes() == body


def test_default_name_is_last_part_of_key(s3_endpoint: str, in_tmp: Path) -> None:
    key = "chandra/data/byobsid/2/3052/primary/acisf03052N004_cntr_img2.jpg"
    _public_bucket(s3_endpoint, {key: b"jpeg bytes"})
    path = pyvo_dl.aws_download(uri=f"s3://{BUCKET}/{key}", endpoint_url=s3_endpoint)
    assert path == "acisf03052N004_cntr_img2.jpg"
    assert (in_tmp / path).read_bytes() == b"jpeg bytes"


def test_bucket_and_key_and_alias(s3_endpoint: str, in_tmp: Path) -> None:
    _public_bucket(s3_endpoint, {"nested/deeper/still/x.fits": b"abc"})
    a = pyvo_dl.aws_download(
        bucket_name=BUCKET, key="nested/deeper/still/x.fits", endpoint_url=s3_endpoint,
        local_filepath="a.fits",
    )  # fmt: skip
    b = pyvo_dl.aws_download(
        bucket=BUCKET, key="nested/deeper/still/x.fits", endpoint_url=s3_endpoint,
        local_filepath="sub/dir/b.fits",
    )  # fmt: skip
    assert (in_tmp / a).read_bytes() == (in_tmp / b).read_bytes() == b"abc"


def test_large_object_integrity_and_output(
    s3_endpoint: str, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = _data(33 * 1024 * 1024 + 123, seed=7)
    client = s3_client_for(s3_endpoint)
    client.create_bucket(Bucket=BUCKET)
    client.put_object(
        Bucket=BUCKET, Key="big/obj.fits", Body=body, ACL="public-read",
        ChecksumAlgorithm="SHA256",
    )  # fmt: skip
    path = pyvo_dl.aws_download(uri=f"s3://{BUCKET}/big/obj.fits", endpoint_url=s3_endpoint)
    assert hashlib.sha256((in_tmp / path).read_bytes()).digest() == hashlib.sha256(body).digest()
    out = capsys.readouterr().out
    assert out == "Downloading big/obj.fits to obj.fits ... [Done]\n"
    assert not list(in_tmp.glob("*.part*"))
    assert not list(in_tmp.glob("*.lock"))


def _multipart_upload(endpoint: str, key: str, parts: list[bytes], **kwargs: str) -> None:
    client = s3_client_for(endpoint)
    client.create_bucket(Bucket=BUCKET)
    algorithm = kwargs["ChecksumAlgorithm"]
    upload = client.create_multipart_upload(Bucket=BUCKET, Key=key, ACL="public-read", **kwargs)
    done = []
    for number, body in enumerate(parts, 1):
        answer = client.upload_part(
            Bucket=BUCKET, Key=key, UploadId=upload["UploadId"], PartNumber=number, Body=body,
            ChecksumAlgorithm=algorithm,
        )  # fmt: skip
        done.append({"PartNumber": number, "ETag": answer["ETag"],
                     f"Checksum{algorithm}": answer[f"Checksum{algorithm}"]})  # fmt: skip
    client.complete_multipart_upload(
        Bucket=BUCKET, Key=key, UploadId=upload["UploadId"], MultipartUpload={"Parts": done}
    )


def _checksum_headers_of(endpoint: str, key: str) -> dict[str, str]:
    """The ``x-amz-checksum-*`` headers moto sends to a whole-object GET that asks for them.

    What moto sends for a multipart upload differs by version: 5.2 marks a
    composite value with ``-N`` and keeps ``ChecksumType=FULL_OBJECT``; 5.1
    sends the composite value unmarked, without ``x-amz-checksum-type``; 5.0
    (the last for Python 3.8) sends none. The tests below check pyvo_dl's
    answer to what was sent, and skip where nothing was.
    """
    import urllib.request

    request = urllib.request.Request(
        f"{endpoint}/{BUCKET}/{key}", headers={"x-amz-checksum-mode": "ENABLED"}
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        headers = {name.lower(): value for name, value in answer.headers.items()}
    return {name: value for name, value in headers.items() if name.startswith("x-amz-checksum-")}


def _skip_without(headers: dict[str, str], name: str, value: str | None = None) -> None:
    if name not in headers or (value is not None and headers[name].upper() != value):
        import moto

        pytest.skip(f"moto {moto.__version__} sends no {name}{': ' + value if value else ''} "
                    "to a GET of this multipart upload")  # fmt: skip


@pytest.mark.parametrize("connections", [1, 4])
def test_a_multipart_upload_with_a_checksum_of_its_parts_is_not_refused(
    s3_endpoint: str, in_tmp: Path, capsys: pytest.CaptureFixture[str], connections: int
) -> None:
    """A multipart upload's SHA-256 is of its parts' SHA-256s (COMPOSITE): not verified, said so."""
    parts = [_data(5 * 1024 * 1024, seed=1), _data(4 * 1024 * 1024, seed=2)]
    _multipart_upload(s3_endpoint, "mp/obj.fits", parts, ChecksumAlgorithm="SHA256")
    _skip_without(_checksum_headers_of(s3_endpoint, "mp/obj.fits"), "x-amz-checksum-sha256")
    path = pyvo_dl.aws_download(
        uri=f"s3://{BUCKET}/mp/obj.fits", endpoint_url=s3_endpoint, connections=connections,
        verbose=True, progress=False,
    )  # fmt: skip
    assert (in_tmp / path).read_bytes() == b"".join(parts)
    out = capsys.readouterr().out
    # Either reason is right: marked COMPOSITE (moto 5.2, S3), or a multipart
    # upload's value that nothing says is of the whole object (moto 5.1).
    assert re.search(
        r"Not verified: x-amz-checksum-sha256 \((COMPOSITE: of the parts|of a multipart upload)",
        out,
    ), out


def test_a_multipart_upload_with_a_full_object_crc32_is_verified(
    s3_endpoint: str, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parts = [_data(5 * 1024 * 1024, seed=3), _data(4 * 1024 * 1024, seed=4)]
    _multipart_upload(
        s3_endpoint, "full/obj.fits", parts, ChecksumAlgorithm="CRC32", ChecksumType="FULL_OBJECT"
    )
    _skip_without(
        _checksum_headers_of(s3_endpoint, "full/obj.fits"), "x-amz-checksum-type", "FULL_OBJECT"
    )
    path = pyvo_dl.aws_download(
        uri=f"s3://{BUCKET}/full/obj.fits", endpoint_url=s3_endpoint, connections=4,
        verbose=True, progress=False,
    )  # fmt: skip
    assert (in_tmp / path).read_bytes() == b"".join(parts)
    assert "Not verified" not in capsys.readouterr().out


def test_endpoint_from_environment(
    s3_endpoint: str, in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _public_bucket(s3_endpoint, {"k.fits": b"via env"})
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9/never-used")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_endpoint)  # wins over AWS_ENDPOINT_URL
    assert pyvo_dl.aws_download(uri=f"s3://{BUCKET}/k.fits") == "k.fits"
    assert (in_tmp / "k.fits").read_bytes() == b"via env"


# -- pyvo's own test cases, re-expressed ------------------------------------------


def test_pyvo_case_no_path_and_with_path(s3_endpoint: str, in_tmp: Path) -> None:
    _public_bucket(s3_endpoint, {"some/key/file.txt": b"hello"})
    assert pyvo_dl.aws_download(f"s3://{BUCKET}/some/key/file.txt", endpoint_url=s3_endpoint) == (
        "file.txt"
    )
    target = str(in_tmp / "elsewhere" / "file2.txt")
    assert (
        pyvo_dl.aws_download(
            f"s3://{BUCKET}/some/key/file.txt", local_filepath=target, endpoint_url=s3_endpoint
        )
        == target
    )
    assert (in_tmp / "elsewhere" / "file2.txt").read_bytes() == b"hello"


def test_pyvo_case_missing_key(s3_endpoint: str, in_tmp: Path) -> None:
    _public_bucket(s3_endpoint, {"present.txt": b"x"})
    with pytest.raises(pyvo_dl.S3Error) as info:
        pyvo_dl.aws_download(f"s3://{BUCKET}/absent.txt", endpoint_url=s3_endpoint)
    error = info.value
    assert error.code == "NoSuchKey"
    assert error.status == 404
    assert (error.bucket, error.key) == (BUCKET, "absent.txt")
    assert "NoSuchKey" in str(error)
    assert f"s3://{BUCKET}/absent.txt" in str(error)
    assert isinstance(error, pyvo_dl.DownloadError)
    assert isinstance(error, OSError)
    assert not (in_tmp / "absent.txt").exists()
    assert list(in_tmp.iterdir()) == []
    clone = pickle.loads(pickle.dumps(error))
    assert (clone.code, clone.status, clone.bucket, clone.key) == (
        "NoSuchKey",
        404,
        BUCKET,
        "absent.txt",
    )


def test_pyvo_case_missing_bucket(s3_endpoint: str, in_tmp: Path) -> None:
    with pytest.raises(pyvo_dl.S3Error) as info:
        pyvo_dl.aws_download("s3://no-such-bucket-here/file.txt", endpoint_url=s3_endpoint)
    assert info.value.code == "NoSuchBucket"
    assert "bucket" in str(info.value).lower()


def test_pyvo_case_cache(
    s3_endpoint: str, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _public_bucket(s3_endpoint, {"c.txt": b"0123456789"})
    (in_tmp / "c.txt").write_bytes(b"0123456789")
    pyvo_dl.aws_download(f"s3://{BUCKET}/c.txt", endpoint_url=s3_endpoint, cache=True, verbose=True)
    assert "Found cached file c.txt." in capsys.readouterr().out
    (in_tmp / "c.txt").write_bytes(b"short")
    with pytest.warns(pyvo_dl.DownloadWarning, match="wrong size"):
        pyvo_dl.aws_download(f"s3://{BUCKET}/c.txt", endpoint_url=s3_endpoint, cache=True)
    assert (in_tmp / "c.txt").read_bytes() == b"0123456789"


def test_cache_false_downloads_again(s3_endpoint: str, in_tmp: Path) -> None:
    _public_bucket(s3_endpoint, {"c.txt": b"server copy"})
    (in_tmp / "c.txt").write_bytes(b"local copy!")  # same size, cache=False (pyvo's default)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pyvo_dl.aws_download(f"s3://{BUCKET}/c.txt", endpoint_url=s3_endpoint)
    assert (in_tmp / "c.txt").read_bytes() == b"server copy"


# -- verbose output -----------------------------------------------------------------


def test_verbose_reports_bucket_key_and_mode(
    s3_endpoint: str, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _public_bucket(s3_endpoint, {"v/x.fits": b"1"})
    pyvo_dl.aws_download(f"s3://{BUCKET}/v/x.fits", endpoint_url=s3_endpoint, verbose=True)
    out = capsys.readouterr().out.splitlines()
    assert f"bucket: {BUCKET}, key: v/x.fits" in out
    assert "Anonymous access" in out
    assert "Downloading v/x.fits to x.fits ... [Done]" in out


# -- arguments ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "uri="),
        ({"bucket_name": BUCKET}, "key="),
        ({"uri": "http://example/x"}, "s3://"),
        ({"uri": "s3://ab/key"}, "'ab'"),
        ({"uri": "s3://bad*name/key"}, "bad\\*name"),
        ({"bucket_name": "x" * 256, "key": "k"}, "xxxx"),
        ({"uri": f"s3://{BUCKET}/"}, "key"),
        ({"uri": f"s3://{BUCKET}/dir/"}, "local_filepath"),
        ({"bucket_name": "a-bucket", "bucket": "other", "key": "k"}, "disagree"),
        ({"uri": f"s3://{BUCKET}/k", "timeout": 0}, "timeout"),
        ({"uri": f"s3://{BUCKET}/k", "endpoint_url": "ftp://127.0.0.1/"}, "ftp://"),
        ({"uri": f"s3://{BUCKET}/k", "checksum": "nope:00"}, "nope"),
    ],
)
def test_bad_arguments_name_the_input(kwargs: dict[str, object], match: str, in_tmp: Path) -> None:
    with pytest.raises(ValueError, match=match):
        pyvo_dl.aws_download(**kwargs)  # type: ignore[arg-type]


def test_legacy_bucket_names_are_valid_and_path_style(s3_endpoint: str, in_tmp: Path) -> None:
    from pyvo_dl._s3url import object_url

    assert object_url("Legacy_Bucket", "k") == "https://s3.amazonaws.com/Legacy_Bucket/k"
    assert object_url("dotted.bucket.name", "k") == "https://s3.amazonaws.com/dotted.bucket.name/k"
    assert object_url("plain-bucket", "k") == "https://plain-bucket.s3.amazonaws.com/k"


# -- signed access, proven against a moto that checks signatures ---------------------


@pytest.fixture
def private_server(moto_auth_server: str) -> dict[str, object]:
    """A moto with auth on, a private object, a user's keys and a role's temporary keys."""
    client = s3_client_for(moto_auth_server)
    client.create_bucket(Bucket="private-data")
    body = _data(200_000, seed=3)
    client.put_object(Bucket="private-data", Key="secret/obs.fits", Body=body)
    user = create_moto_user(moto_auth_server)
    role = assume_moto_role(moto_auth_server)
    enable_moto_auth(moto_auth_server)
    return {"url": moto_auth_server, "body": body, "user": user, "role": role}


def _write_profile(tmp: Path, monkeypatch: pytest.MonkeyPatch, name: str, keys: object) -> None:
    credentials = tmp / "aws-credentials"
    config = tmp / "aws-config"
    token = f"aws_session_token = {keys.token}\n" if keys.token else ""  # type: ignore[attr-defined]
    credentials.write_text(
        f"[{name}]\naws_access_key_id = {keys.access_key}\n"  # type: ignore[attr-defined]
        f"aws_secret_access_key = {keys.secret_key}\n{token}"  # type: ignore[attr-defined]
    )
    config.write_text(f"[profile {name}]\nregion = us-east-1\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))


def test_anonymous_refused_on_private_object(
    private_server: dict[str, object], in_tmp: Path
) -> None:
    with pytest.raises(pyvo_dl.S3Error) as info:
        pyvo_dl.aws_download(
            "s3://private-data/secret/obs.fits", endpoint_url=private_server["url"]
        )
    assert info.value.status == 403
    assert "aws_profile=" in str(info.value)
    assert not (in_tmp / "obs.fits").exists()


@pytest.mark.parametrize("principal", ["user", "role"])
def test_profile_signs_requests(
    private_server: dict[str, object],
    in_tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    principal: str,
) -> None:
    _write_profile(in_tmp, monkeypatch, "aws_user", private_server[principal])
    path = pyvo_dl.aws_download(
        bucket="private-data", key="secret/obs.fits", aws_profile="aws_user",
        endpoint_url=private_server["url"], verbose=True,
    )  # fmt: skip
    assert (in_tmp / path).read_bytes() == private_server["body"]
    assert "Access with profile (aws_user)" in capsys.readouterr().out


@pytest.mark.parametrize("kind", ["boto3", "botocore"])
@pytest.mark.parametrize("principal", ["user", "role"])
def test_session_signs_requests(
    private_server: dict[str, object], in_tmp: Path, kind: str, principal: str
) -> None:
    keys = private_server[principal]
    if kind == "boto3":
        import boto3

        session = boto3.session.Session(
            aws_access_key_id=keys.access_key,  # type: ignore[attr-defined]
            aws_secret_access_key=keys.secret_key,  # type: ignore[attr-defined]
            aws_session_token=keys.token,  # type: ignore[attr-defined]
            region_name="us-east-1",
        )
    else:
        import botocore.session

        session = botocore.session.Session()
        session.set_credentials(keys.access_key, keys.secret_key, keys.token)  # type: ignore[attr-defined]
    path = pyvo_dl.aws_download(
        uri="s3://private-data/secret/obs.fits", session=session,
        endpoint_url=private_server["url"], local_filepath="signed.fits",
    )  # fmt: skip
    assert (in_tmp / path).read_bytes() == private_server["body"]


def test_wrong_secret_is_refused(private_server: dict[str, object], in_tmp: Path) -> None:
    import boto3

    user = private_server["user"]
    session = boto3.session.Session(
        aws_access_key_id=user.access_key,  # type: ignore[attr-defined]
        aws_secret_access_key="not-the-secret",
        region_name="us-east-1",
    )
    with pytest.raises(pyvo_dl.S3Error) as info:
        pyvo_dl.aws_download(
            uri="s3://private-data/secret/obs.fits", session=session,
            endpoint_url=private_server["url"],
        )  # fmt: skip
    assert info.value.code in ("SignatureDoesNotMatch", "InvalidAccessKeyId")
    assert not (in_tmp / "obs.fits").exists()


def test_unknown_key_id_is_refused(private_server: dict[str, object], in_tmp: Path) -> None:
    import boto3

    session = boto3.session.Session(
        aws_access_key_id="AKIAUNKNOWNKEY000000", aws_secret_access_key="x",
        region_name="us-east-1",
    )  # fmt: skip
    with pytest.raises(pyvo_dl.S3Error) as info:
        pyvo_dl.aws_download(
            uri="s3://private-data/secret/obs.fits", session=session,
            endpoint_url=private_server["url"],
        )  # fmt: skip
    assert info.value.code in ("InvalidAccessKeyId", "SignatureDoesNotMatch")


def test_fallback_to_system_credentials(
    private_server: dict[str, object],
    in_tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    user = private_server["user"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", user.access_key)  # type: ignore[attr-defined]
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", user.secret_key)  # type: ignore[attr-defined]
    path = pyvo_dl.aws_download(
        "s3://private-data/secret/obs.fits", endpoint_url=private_server["url"], verbose=True
    )
    assert (in_tmp / path).read_bytes() == private_server["body"]
    out = capsys.readouterr().out
    assert "Anonymous access" in out
    assert "retrying with system credentials" in out


def test_missing_profile_is_a_value_error(in_tmp: Path) -> None:
    with pytest.raises(ValueError, match="nobody-has-this"):
        pyvo_dl.aws_download("s3://some-bucket/k.fits", aws_profile="nobody-has-this")


def test_session_of_wrong_type(in_tmp: Path) -> None:
    with pytest.raises(ValueError, match="session"):
        pyvo_dl.aws_download("s3://some-bucket/k.fits", session=object())

"""Error messages, as a new user meets them (issue 7, item 5).

Each test provokes one error for real, against loopback servers (moto for
S3 semantics), and checks that the message names the input (the URL, the
``s3://`` URI, the bucket, the local path) and says what to do about it.
A message that falls short is pinned as it should read, marked
``xfail(strict=True)`` with the reason: once the library is fixed the test
passes, strict xfail turns that into a failure, and the mark is removed.
docs/troubleshooting.md shows the same messages to users.
"""

from __future__ import annotations

import importlib.abc
import os
import re
import sys

import pytest

import pyvo_dl
from servers import s3_client_for

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from servers import FaultServer

OBS = "chandra/data/byobsid/2/3052/primary/"
IMAGE = bytes(range(256)) * 200  # 50 KiB, every offset distinguishable
BUCKET = "nasa-heasarc"
PRIVATE_BUCKET = "my-team-bucket"
PRIVATE_KEY = "ngc1068/acisf00344N004_evt2.fits"


def message(excinfo: pytest.ExceptionInfo[BaseException]) -> str:
    """The message a user reads: ``str(error)``, which must be one clean line."""
    text = str(excinfo.value)
    assert "\n" not in text, f"a multi-line message: {text!r}"
    return text


@pytest.fixture
def bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """moto as S3 (through AWS_ENDPOINT_URL): a public bucket, and a private one."""
    client = s3_client_for(s3_endpoint)
    client.create_bucket(Bucket=BUCKET, ACL="public-read")
    client.put_object(
        Bucket=BUCKET, Key=OBS + "acisf03052N004_cntr_img2.jpg", Body=IMAGE, ACL="public-read"
    )
    client.create_bucket(Bucket=PRIVATE_BUCKET)
    client.put_object(Bucket=PRIVATE_BUCKET, Key=PRIVATE_KEY, Body=IMAGE)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    return s3_endpoint


class _HideBotocore(importlib.abc.MetaPathFinder):
    """Makes botocore and boto3 unimportable, as in an install without the extra."""

    def find_spec(self, name: str, path: object, target: object = None) -> None:
        if name.split(".", maxsplit=1)[0] in ("botocore", "boto3", "s3transfer"):
            raise ImportError(f"{name} is hidden by the test")


@pytest.fixture
def no_botocore(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Hide botocore for the test (tests/test_nobotocore.py does the same)."""
    for name in list(sys.modules):
        if name.split(".")[0] in ("botocore", "boto3", "s3transfer"):
            monkeypatch.delitem(sys.modules, name)
    blocker = _HideBotocore()
    sys.meta_path.insert(0, blocker)
    yield
    sys.meta_path.remove(blocker)


# -------------------------------------------------------------------- HTTP ---


def test_404_names_the_url_and_says_not_found(http_server: FaultServer, in_tmp: Path) -> None:
    url = http_server.url("/FTP/" + OBS + "acisf03052N004_evt3.fits.gz")
    with pytest.raises(pyvo_dl.HTTPStatusError) as info:
        pyvo_dl.http_download(url, progress=False)
    text = message(info)
    assert url in text
    assert "not found" in text
    assert "check the url" in text.lower()
    assert info.value.status == 404
    assert not os.listdir(in_tmp), "a failed download left files behind"


def test_401_suggests_auth_and_netrc(http_server: FaultServer, in_tmp: Path) -> None:
    url = http_server.add_file("/proprietary/obs1234_evt2.fits", IMAGE)
    http_server.set_fault("/proprietary/obs1234_evt2.fits", basic_auth=("alice", "secret"))
    with pytest.raises(pyvo_dl.HTTPStatusError) as info:
        pyvo_dl.http_download(url, progress=False)
    text = message(info)
    assert url in text
    assert "auth=" in text
    assert ".netrc" in text
    assert "session=" in text


def test_403_http_suggests_logging_in(http_server: FaultServer, in_tmp: Path) -> None:
    url = http_server.url("/embargoed/obs5678_evt2.fits")
    http_server.set_fault("/embargoed/obs5678_evt2.fits", status=403)
    with pytest.raises(pyvo_dl.HTTPStatusError) as info:
        pyvo_dl.http_download(url, progress=False)
    text = message(info)
    assert url in text
    assert "auth=" in text


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("heasarc.gsfc.nasa.gov/FTP/x.fits", "not an http or https URL"),
        ("ftp://heasarc.gsfc.nasa.gov/FTP/x.fits", "not an http or https URL"),
        ("https:///FTP/x.fits", "no host"),
        ("https://heasarc.gsfc.nasa.gov:99999/FTP/x.fits", "Port out of range"),
    ],
)
def test_malformed_url_is_named(url: str, says: str, in_tmp: Path) -> None:
    with pytest.raises(ValueError, match=re.escape(says)) as info:
        pyvo_dl.http_download(url, progress=False)
    assert repr(url) in message(info)


def test_s3_uri_given_to_http_download_points_to_aws_download(in_tmp: Path) -> None:
    uri = f"s3://{BUCKET}/{OBS}acisf03052N004_cntr_img2.jpg"
    with pytest.raises(ValueError, match="aws_download") as info:
        pyvo_dl.http_download(uri, progress=False)
    text = message(info)
    assert uri in text
    assert "aws_download" in text


def test_unknown_scheme_in_download_says_what_is_expected(in_tmp: Path) -> None:
    source = "heasarc.gsfc.nasa.gov/FTP/x.fits"
    with pytest.raises(ValueError, match="unsupported source") as info:
        pyvo_dl.download(source, progress=False)
    text = message(info)
    assert repr(source) in text
    assert "http(s)://" in text
    assert "s3://" in text


def test_url_without_a_file_name_asks_for_local_filepath(
    http_server: FaultServer, in_tmp: Path
) -> None:
    url = http_server.add_file("/FTP/" + OBS, b"<html>listing</html>", content_type="text/html")
    with pytest.raises(ValueError, match="cannot derive a file name") as info:
        pyvo_dl.http_download(url, progress=False)
    text = message(info)
    assert repr(url) in text
    assert "local_filepath=" in text


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("sha256:abc", "64 hex digits"),
        ("sha3000:" + "0" * 64, "unknown algorithm"),
    ],
)
def test_bad_checksum_spec_is_named(spec: str, says: str, in_tmp: Path) -> None:
    with pytest.raises(ValueError, match="checksum") as info:
        pyvo_dl.http_download("https://heasarc.gsfc.nasa.gov/FTP/x.fits", checksum=spec)
    text = message(info)
    assert repr(spec) in text
    assert says in text


def test_connection_refused_names_the_url(in_tmp: Path) -> None:
    url = "http://127.0.0.1:9/FTP/x.fits"  # the discard port: nothing listens here
    with pytest.raises(pyvo_dl.DownloadError) as info:
        pyvo_dl.http_download(url, retries=0, progress=False)
    text = message(info)
    assert url in text
    assert "refused" in text.lower()


# ----------------------------------------------------------- timeouts, 5xx ---


def _stalled(server: FaultServer) -> str:
    url = server.add_file("/slow/cube.fits", IMAGE)
    server.set_fault("/slow/cube.fits", stall=30)  # stop() ends the wait
    return url


def test_timeout_names_the_url(http_server: FaultServer, in_tmp: Path) -> None:
    url = _stalled(http_server)
    with pytest.raises(pyvo_dl.DownloadError) as info:
        pyvo_dl.http_download(url, timeout=0.3, retries=0, progress=False)
    text = message(info)
    assert url in text
    assert "timed out" in text


def test_timeout_says_how_long_and_suggests_timeout(http_server: FaultServer, in_tmp: Path) -> None:
    url = _stalled(http_server)
    with pytest.raises(pyvo_dl.DownloadError) as info:
        pyvo_dl.http_download(url, timeout=0.3, retries=0, progress=False)
    text = message(info)
    assert "0.3 s" in text
    assert "timeout=" in text


def test_giving_up_counts_attempts_in_english(http_server: FaultServer, in_tmp: Path) -> None:
    url = _stalled(http_server)
    with pytest.raises(pyvo_dl.DownloadError) as info:
        pyvo_dl.http_download(url, timeout=0.3, retries=0, progress=False)
    text = message(info)
    assert "1 attempts" not in text
    assert text.count(url) == 1


def test_server_busy_after_retries_suggests_later(http_server: FaultServer, in_tmp: Path) -> None:
    url = http_server.add_file("/busy/catalog.fits", IMAGE)
    http_server.set_fault("/busy/catalog.fits", status=503)
    with pytest.raises(pyvo_dl.HTTPStatusError) as info:
        pyvo_dl.http_download(url, retries=1, progress=False)
    text = message(info)
    assert url in text
    assert "503" in text
    assert "try again later" in text


# --------------------------------------------------------------------- TLS ---


def test_tls_failure_suggests_ssl_context(https_server: FaultServer, in_tmp: Path) -> None:
    url = https_server.add_file("/data/obs42/image.fits", IMAGE)
    with pytest.raises(pyvo_dl.DownloadError) as info:
        pyvo_dl.http_download(url, progress=False)
    text = message(info)
    assert url in text
    assert "certificate" in text
    assert "ssl_context=" in text
    assert "SSL_CERT_FILE" in text


# --------------------------------------------------------------- integrity ---


def test_integrity_mismatch_names_expected_and_actual(
    http_server: FaultServer, in_tmp: Path
) -> None:
    import hashlib

    url = http_server.add_file("/FTP/" + OBS + "acisf03052N004_cntr_img2.jpg", IMAGE)
    expected = "0" * 64
    with pytest.raises(pyvo_dl.IntegrityError) as info:
        pyvo_dl.http_download(url, "copy.jpg", checksum="sha256:" + expected, progress=False)
    text = message(info)
    actual = hashlib.sha256(IMAGE).hexdigest()
    assert url in text
    assert "copy.jpg" in text
    assert expected in text
    assert actual in text
    assert (info.value.expected, info.value.actual) == (expected, actual)
    assert not (in_tmp / "copy.jpg").exists()


# ------------------------------------------------------------- local files ---


def test_target_that_is_a_folder_is_named(http_server: FaultServer, in_tmp: Path) -> None:
    url = http_server.add_file("/FTP/" + OBS + "acisf03052N004_cntr_img2.jpg", IMAGE)
    (in_tmp / "obs3052").mkdir()
    with pytest.raises(pyvo_dl.DownloadError) as info:
        pyvo_dl.http_download(url, "obs3052", progress=False)
    text = message(info)
    assert "obs3052" in text
    assert "folder" in text
    assert "file path" in text


def test_target_ending_in_a_separator_is_called_a_folder(
    http_server: FaultServer, in_tmp: Path
) -> None:
    url = http_server.add_file("/FTP/" + OBS + "acisf03052N004_cntr_img2.jpg", IMAGE)
    target = "newdir" + os.sep
    with pytest.raises((pyvo_dl.DownloadError, ValueError)) as info:
        pyvo_dl.http_download(url, target, progress=False)
    text = message(info)
    assert repr(target) in text or f"{target}:" in text
    assert ".lock" not in text
    assert "folder" in text
    assert "file path" in text or "file name" in text


def _permissions_enforced(folder: Path) -> bool:
    probe = folder / "probe"
    try:
        probe.write_bytes(b"")
    except PermissionError:
        return True
    probe.unlink()
    return False


def test_unwritable_folder_is_named(http_server: FaultServer, in_tmp: Path) -> None:
    url = http_server.add_file("/FTP/" + OBS + "acisf03052N004_cntr_img2.jpg", IMAGE)
    folder = in_tmp / "readonly"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if not _permissions_enforced(folder):
            pytest.skip(
                "this process may write to a 0o500 folder (root, or CAP_DAC_OVERRIDE): "
                "file permissions are not enforced for it"
            )
        with pytest.raises(pyvo_dl.DownloadError) as info:
            pyvo_dl.http_download(url, str(folder / "preview.jpg"), progress=False)
    finally:
        folder.chmod(0o700)
    text = message(info)
    assert str(folder) in text
    assert "permission denied" in text
    assert "local_filepath=" in text


# ---------------------------------------------------------------------- S3 ---


def test_no_such_key_names_bucket_and_key(bucket: str, in_tmp: Path) -> None:
    uri = f"s3://{BUCKET}/{OBS}acisf03052N004_evt3.fits.gz"
    with pytest.raises(pyvo_dl.S3Error) as info:
        pyvo_dl.aws_download(uri=uri, progress=False)
    text = message(info)
    assert uri in text
    assert "NoSuchKey" in text
    assert "check the key" in text.lower()
    assert info.value.code == "NoSuchKey"


def test_no_such_bucket_names_the_bucket(bucket: str, in_tmp: Path) -> None:
    uri = f"s3://nasa-heasarcc/{OBS}acisf03052N004_cntr_img2.jpg"
    with pytest.raises(pyvo_dl.S3Error) as info:
        pyvo_dl.aws_download(uri=uri, progress=False)
    text = message(info)
    assert "nasa-heasarcc" in text
    assert "NoSuchBucket" in text
    assert "check the bucket name" in text.lower()


def test_403_anonymous_s3_suggests_aws_profile(bucket: str, in_tmp: Path) -> None:
    uri = f"s3://{PRIVATE_BUCKET}/{PRIVATE_KEY}"
    with pytest.raises(pyvo_dl.S3Error) as info:
        pyvo_dl.aws_download(uri=uri, progress=False)
    text = message(info)
    assert uri in text
    assert info.value.code == "AccessDenied"
    assert "not public" in text
    assert "aws_profile=" in text
    assert "pyvo-dl[s3]" not in text, "botocore is installed: no extra to suggest"


def test_403_anonymous_s3_without_botocore_names_the_extra(
    bucket: str, no_botocore: None, in_tmp: Path
) -> None:
    uri = f"s3://{PRIVATE_BUCKET}/{PRIVATE_KEY}"
    with pytest.raises(pyvo_dl.S3Error) as info:
        pyvo_dl.aws_download(uri=uri, progress=False)
    text = message(info)
    assert "aws_profile=" in text
    assert 'pip install "pyvo-dl[s3]"' in text


def test_missing_botocore_names_the_extra(no_botocore: None, in_tmp: Path) -> None:
    with pytest.raises(pyvo_dl.MissingDependencyError) as info:
        pyvo_dl.aws_download(
            bucket=BUCKET, key=OBS + "acisf03052N004_evt2.fits.gz", aws_profile="aws_user"
        )
    text = message(info)
    assert 'pip install "pyvo-dl[s3]"' in text
    assert "botocore" in text
    assert "aws_profile=" in text
    assert isinstance(info.value, ImportError)


def test_unknown_profile_is_named(in_tmp: Path) -> None:
    pytest.importorskip("botocore")
    with pytest.raises(ValueError, match="profile") as info:
        pyvo_dl.aws_download(
            bucket=BUCKET, key=OBS + "acisf03052N004_evt2.fits.gz", aws_profile="aws_usr"
        )
    text = message(info)
    assert "'aws_usr'" in text
    assert "credentials" in text


@pytest.mark.parametrize(
    "name", ["nasa heasarc", "ab", "nasa-heasarc/chandra", "x" * 256, "nasa:heasarc"]
)
def test_bad_bucket_name_is_named(name: str, in_tmp: Path) -> None:
    with pytest.raises(ValueError, match="invalid S3 bucket name") as info:
        pyvo_dl.aws_download(bucket_name=name, key=OBS + "acisf03052N004_evt2.fits.gz")
    text = message(info)
    assert repr(name) in text
    assert "bucket name" in text


@pytest.mark.parametrize("uri", ["s3:/nasa-heasarc/x.fits", "s3://", "nasa-heasarc/x.fits"])
def test_malformed_s3_uri_is_named(uri: str, in_tmp: Path) -> None:
    with pytest.raises(ValueError, match="S3 URI") as info:
        pyvo_dl.aws_download(uri=uri)
    text = message(info)
    assert repr(uri) in text
    assert "s3://bucket/key" in text


@pytest.mark.parametrize(
    ("call", "quoted"),
    [
        (lambda: pyvo_dl.aws_download(uri="s3://bucket-only"), "s3://bucket-only"),
        (lambda: pyvo_dl.aws_download(uri="s3://bucket-only/"), "s3://bucket-only/"),
        (lambda: pyvo_dl.aws_download(uri="S3://Bucket_Only"), "S3://Bucket_Only"),
        (lambda: pyvo_dl.download("s3://bucket-only"), "s3://bucket-only"),
        (lambda: pyvo_dl.aws_download(uri="s3://ab/x.fits"), "s3://ab/x.fits"),
        (lambda: pyvo_dl.aws_download(uri="s3:/nasa-heasarc/x"), "s3:/nasa-heasarc/x"),
        (lambda: pyvo_dl.aws_download(uri="s3://nasa-heasarc/obs/"), "s3://nasa-heasarc/obs/"),
        (
            lambda: pyvo_dl.aws_download("s3://nasa-heasarc/x", endpoint_url="ftp://127.0.0.1:9"),
            "ftp://127.0.0.1:9",
        ),
        (lambda: pyvo_dl.http_download("htp://127.0.0.1/x.fits"), "htp://127.0.0.1/x.fits"),
        (lambda: pyvo_dl.http_download("http:///x.fits"), "http:///x.fits"),
        (lambda: pyvo_dl.download("ftp://127.0.0.1/x.fits"), "ftp://127.0.0.1/x.fits"),
        # The user part is kept, the password hidden (issue 12.8).
        (
            lambda: pyvo_dl.http_download("http://astro:pw@127.0.0.1:99999/x.fits"),
            "http://astro:***@127.0.0.1:99999/x.fits",
        ),
        (
            lambda: pyvo_dl.http_download("http://astro@127.0.0.1:99999/x.fits"),
            "http://***@127.0.0.1:99999/x.fits",
        ),
    ],
)
def test_a_refused_uri_or_url_is_quoted_as_written(
    call: Callable[[], object], quoted: str, in_tmp: Path
) -> None:
    """SPEC §3.7, issue 12.12: the message quotes what the caller wrote, not a normal form."""
    with pytest.raises(ValueError, match=re.escape(repr(quoted))) as info:
        call()
    assert repr(quoted) in message(info)


def test_a_refused_item_of_download_many_is_quoted_as_written(tmp_path: Path) -> None:
    (result,) = pyvo_dl.download_many(["s3://bucket-only"], tmp_path, progress=False)
    assert isinstance(result, ValueError)
    assert "'s3://bucket-only'" in str(result)


def test_prefix_without_recursive_suggests_recursive(in_tmp: Path) -> None:
    with pytest.raises(ValueError, match="cannot derive a file name") as info:
        pyvo_dl.aws_download(uri=f"s3://{BUCKET}/{OBS}")
    text = message(info)
    assert repr(f"s3://{BUCKET}/{OBS}") in text  # the URI as written (issue 12.12)
    assert "recursive=True" in text
    assert "local_filepath=" in text


def test_missing_arguments_say_what_is_needed(in_tmp: Path) -> None:
    with pytest.raises(ValueError, match="aws_download needs") as info:
        pyvo_dl.aws_download(key=OBS + "acisf03052N004_evt2.fits.gz")
    text = message(info)
    assert "uri=" in text
    assert "bucket_name=" in text


# ---------------------------------------------------------------- warnings ---


def test_cached_file_of_wrong_size_warning_names_file_and_sizes(
    http_server: FaultServer, in_tmp: Path
) -> None:
    url = http_server.add_file("/FTP/" + OBS + "acisf03052N004_cntr_img2.jpg", IMAGE)
    (in_tmp / "acisf03052N004_cntr_img2.jpg").write_bytes(b"truncated")
    with pytest.warns(pyvo_dl.DownloadWarning) as record:
        pyvo_dl.http_download(url, progress=False)
    text = str(record[0].message)
    assert "acisf03052N004_cntr_img2.jpg" in text
    assert "9 bytes" in text
    assert str(len(IMAGE)) in text


def test_html_for_a_data_file_warning_names_url_and_file(
    http_server: FaultServer, in_tmp: Path
) -> None:
    url = http_server.add_file(
        "/FTP/" + OBS + "acisf03052N004_evt2.fits.gz",
        b"<html><body>Please log in</body></html>",
        content_type="text/html",
    )
    with pytest.warns(pyvo_dl.DownloadWarning) as record:
        pyvo_dl.http_download(url, progress=False)
    text = str(record[0].message)
    assert url in text
    assert "HTML" in text
    assert "acisf03052N004_evt2.fits.gz" in text

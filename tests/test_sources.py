"""Several sources for one file: fallback, preference, and tables as input (SPEC §2.3).

Real servers on loopback: two FaultServers stand for an archive's web
server and its mirror, moto for the S3 copy (the same bytes in all).
Each fallback case makes the first source fail in one way a real archive
does (404, 403, a connection cut on every try, another version of the
file) and checks that the next one served the file, that the result says
which, and that nothing of the first was stitched into it.
"""

from __future__ import annotations

import hashlib
import json
import os

import pytest

import pyvo_dl
from servers import FaultServer, s3_client_for

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

DATA = bytes(range(256)) * 4096  # 1 MiB: every offset distinguishable
KEY = "chandra/data/byobsid/2/3052/primary/acisf03052N004_evt2.fits.gz"
NAME = "acisf03052N004_evt2.fits.gz"


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def bucket(s3_endpoint: str) -> str:
    """``s3://nasa-heasarc`` on moto with the file at KEY; returns the endpoint."""
    pytest.importorskip("boto3")
    client = s3_client_for(s3_endpoint)
    client.create_bucket(Bucket="nasa-heasarc")
    client.put_object(Bucket="nasa-heasarc", Key=KEY, Body=DATA, ACL="public-read")
    return s3_endpoint


def _serve(server: FaultServer) -> str:
    return server.add_file("/FTP/" + KEY, DATA, content_type="application/gzip")


def test_a_404_hands_over_to_the_next_source(
    http_server: FaultServer, other_server: FaultServer, in_tmp: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    first = http_server.url("/FTP/" + KEY)  # nothing there
    second = _serve(other_server)
    path = pyvo_dl.download([first, second], progress=False, verbose=True)
    assert path == NAME
    assert isinstance(path, pyvo_dl.DownloadedPath)
    assert path.source == second
    assert (in_tmp / NAME).read_bytes() == DATA
    out = capsys.readouterr().out
    assert f"{first} failed (HTTP 404 (not found) for {first}" in out
    assert f"trying source 2 of 2: {second}" in out
    assert f"{NAME}: served by {second} (source 2 of 2)" in out


def test_a_403_hands_over_to_the_s3_copy(
    http_server: FaultServer, bucket: str, in_tmp: Path
) -> None:
    url = _serve(http_server)
    http_server.set_fault("/FTP/" + KEY, status=403)
    path = pyvo_dl.download([url, f"s3://nasa-heasarc/{KEY}"], endpoint_url=bucket, progress=False)
    assert (path, path.source) == (NAME, f"s3://nasa-heasarc/{KEY}")
    assert (in_tmp / NAME).read_bytes() == DATA


def test_a_cut_that_outlasts_the_retries_hands_over_and_is_not_stitched(
    http_server: FaultServer, other_server: FaultServer, in_tmp: Path
) -> None:
    """The first source's .part is never continued from the second: it starts at byte 0."""
    first = _serve(http_server)
    # Another version of the file, same size, same name: a stitch would show.
    http_server.replace_file("/FTP/" + KEY, bytes(reversed(DATA)))
    # A cut after 300 KB, then cuts before any byte: the retries make no
    # progress and run out, with 300 KB of the first source in the .part.
    http_server.set_fault("/FTP/" + KEY, drop_after=300_000, times=1)
    http_server.set_fault("/FTP/" + KEY, drop_after=0, after=1)
    second = _serve(other_server)
    path = pyvo_dl.download([first, second], progress=False, retries=2)
    assert path.source == second
    assert (in_tmp / NAME).read_bytes() == DATA
    gets = http_server.requests_for("/FTP/" + KEY, "GET")
    assert [r.headers.get("range") for r in gets] == [None] + ["bytes=300000-"] * 2
    (get,) = other_server.requests_for("/FTP/" + KEY, "GET")
    assert "range" not in get.headers  # from byte 0, not from where the first one stopped
    assert sorted(os.listdir(in_tmp)) == [NAME]


def test_a_copy_of_another_size_fails_its_checksum_and_hands_over(
    http_server: FaultServer, other_server: FaultServer, tmp_path: Path
) -> None:
    http_server.add_file("/FTP/" + KEY, DATA[:-1000])  # a stale, shorter copy
    first, second = http_server.url("/FTP/" + KEY), _serve(other_server)
    (result,) = pyvo_dl.download_many(
        [{"source": [first, second], "checksum": _sha256(DATA)}], tmp_path, progress=False
    )
    assert result == str(tmp_path / NAME)
    assert result.source == second
    assert (tmp_path / NAME).read_bytes() == DATA


def test_when_every_source_fails_one_error_names_each(
    http_server: FaultServer, other_server: FaultServer, bucket: str, tmp_path: Path
) -> None:
    first = http_server.url("/FTP/" + KEY)  # 404
    other_server.add_file("/FTP/" + KEY, DATA)
    other_server.set_fault("/FTP/" + KEY, status=503, retry_after="0")
    third = f"s3://nasa-heasarc/{KEY}.missing"
    target = tmp_path / "x.fits"
    with pytest.raises(pyvo_dl.AllSourcesFailedError) as info:
        pyvo_dl.download(
            [first, other_server.url("/FTP/" + KEY), third], target,
            endpoint_url=bucket, retries=1, progress=False,
        )  # fmt: skip
    error = info.value
    assert isinstance(error, pyvo_dl.DownloadError)
    assert [type(e) for _, e in error.failures] == [
        pyvo_dl.HTTPStatusError, pyvo_dl.HTTPStatusError, pyvo_dl.S3Error,
    ]  # fmt: skip
    message = str(error)
    assert message.startswith(f"all 3 sources of {target} failed: ")
    assert f"{first}: HTTP 404 (not found) for {first}" in message
    assert "HTTP 503 (Service Unavailable)" in message
    assert f"{third}: S3 NoSuchKey" in message
    assert not target.exists()


def test_an_argument_error_ends_the_call_before_any_request(
    http_server: FaultServer, tmp_path: Path
) -> None:
    url = _serve(http_server)
    with pytest.raises(ValueError, match=r"unsupported source 'ftp://archive/x\.fits'"):
        pyvo_dl.download([url, "ftp://archive/x.fits"], tmp_path / "x.fits", progress=False)
    with pytest.raises(ValueError, match="no key given in 's3://bucket-only'"):
        pyvo_dl.download([url, "s3://bucket-only"], tmp_path / "x.fits", progress=False)
    assert http_server.requests == []


def test_a_local_disk_error_does_not_try_the_next_source(
    http_server: FaultServer, other_server: FaultServer, tmp_path: Path
) -> None:
    (tmp_path / "x.fits").mkdir()  # the target is a folder: every source would meet it
    with pytest.raises(pyvo_dl.DownloadError, match="it is a folder") as info:
        pyvo_dl.download(
            [_serve(http_server), _serve(other_server)], tmp_path / "x.fits", progress=False
        )
    assert not isinstance(info.value, pyvo_dl.AllSourcesFailedError)
    assert other_server.requests == []


# -- preference ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefer", "env", "served"),
    [
        ("cloud", None, "s3"),
        ("on-prem", None, "http"),
        (None, "cloud", "s3"),
        ("on-prem", "cloud", "http"),  # the argument wins over the variable
        (None, None, "http"),  # the caller's order
    ],
)
def test_prefer_reorders_cloud_and_on_prem(
    prefer: str | None, env: str | None, served: str, http_server: FaultServer, bucket: str,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    if env is not None:
        monkeypatch.setenv("PYVO_DL_PREFER", env)
    url, uri = _serve(http_server), f"s3://nasa-heasarc/{KEY}"
    kwargs = {} if prefer is None else {"prefer": prefer}
    (result,) = pyvo_dl.download_many(
        [[url, uri]], tmp_path, endpoint_url=bucket, progress=False, **kwargs
    )
    assert result.source == (uri if served == "s3" else url)
    assert (tmp_path / NAME).read_bytes() == DATA
    assert bool(http_server.requests) == (served == "http")


def test_a_bad_preference_is_refused_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match=r"prefer must be 'cloud'.*not 'aws'"):
        pyvo_dl.download(["https://h/x.fits", "s3://b/x.fits"], prefer="aws")
    monkeypatch.setenv("PYVO_DL_PREFER", "nearest")
    with pytest.raises(ValueError, match=r"\$PYVO_DL_PREFER must be .*not 'nearest'"):
        pyvo_dl.download_many(["https://h/x.fits"], tmp_path)


# -- tables -------------------------------------------------------------------------------


def test_table_rows_as_items(
    http_server: FaultServer, bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """access_url only, with cloud_access JSON, with an aws column, with neither."""
    url = _serve(http_server)
    client = s3_client_for(bucket)
    client.put_object(
        Bucket="nasa-heasarc", Key="irsa/only-in-s3.fits", Body=b"s3", ACL="public-read"
    )
    client.put_object(Bucket="nasa-heasarc", Key="heasarc/b.fits", Body=b"b", ACL="public-read")
    cloud = {
        "aws": {"bucket_name": "nasa-heasarc", "key": "irsa/only-in-s3.fits", "region": "us-east-1"}
    }
    rows = [
        {"obs_id": "1", "access_url": url},
        {"obs_id": "2", "access_url": http_server.url("/gone/only-in-s3.fits"),
         "cloud_access": json.dumps(cloud)},
        {"obs_id": "3", "access_url": "", "aws": "s3://nasa-heasarc/heasarc/b.fits"},
        {"obs_id": "4", "access_url": None, "cloud_access": "", "aws": ""},
        {"obs_id": "5", "access_url": http_server.url("/gone/e.fits"), "cloud_access": "{oops"},
    ]  # fmt: skip
    results = pyvo_dl.download_many(
        rows, tmp_path, endpoint_url=bucket, progress=False, verbose=True
    )
    assert results[0] == str(tmp_path / NAME)
    assert results[0].source == url
    assert results[1] == str(tmp_path / "only-in-s3.fits")
    assert results[1].source == "s3://nasa-heasarc/irsa/only-in-s3.fits"
    assert results[2] == str(tmp_path / "b.fits")
    assert results[2].source == "s3://nasa-heasarc/heasarc/b.fits"
    assert isinstance(results[3], ValueError)
    assert "row 3 has no usable source" in str(results[3])
    assert isinstance(results[4], pyvo_dl.HTTPStatusError)  # its only usable source: its own error
    assert (tmp_path / "only-in-s3.fits").read_bytes() == b"s3"
    out = capsys.readouterr().out
    assert "item 4 (" in out
    assert "cloud_access '{oops' is not JSON; left out" in out


def test_a_rows_region_signs_its_requests(
    http_server: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The region in cloud_access is the one the S3 requests are made for (SigV4 scope)."""
    pytest.importorskip("botocore")
    credentials = tmp_path / "credentials"
    credentials.write_text("[team]\naws_access_key_id = AKIDTEST\naws_secret_access_key = x\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    http_server.add_file("/nasa-irsa-wise/wise/b.fits", b"wise")  # path-style, as S3
    cloud = {"aws": {"bucket_name": "nasa-irsa-wise", "key": "wise/b.fits", "region": "us-west-2"}}
    (result,) = pyvo_dl.download_many(
        [{"cloud_access": json.dumps(cloud)}], tmp_path, endpoint_url=http_server.base_url,
        aws_profile="team", progress=False,
    )  # fmt: skip
    assert result == str(tmp_path / "b.fits")
    (get,) = http_server.requests_for("/nasa-irsa-wise/wise/b.fits", "GET")
    assert "/us-west-2/s3/aws4_request" in get.headers["authorization"]


def test_an_astropy_table_is_one_call(
    http_server: FaultServer, bucket: str, tmp_path: Path
) -> None:
    table_module = pytest.importorskip("astropy.table", reason="astropy is not installed")
    url = _serve(http_server)
    http_server.set_fault("/FTP/" + KEY, status=404)
    table = table_module.Table(
        {
            "access_url": [url, http_server.url("/none.fits")],
            "aws": [f"s3://nasa-heasarc/{KEY}", ""],
        }
    )
    results = pyvo_dl.download_many(table, tmp_path, endpoint_url=bucket, progress=False)
    assert results[0] == str(tmp_path / NAME)
    assert results[0].source == f"s3://nasa-heasarc/{KEY}"
    assert isinstance(results[1], pyvo_dl.HTTPStatusError)
    with pytest.raises(TypeError, match="not one Row"):
        pyvo_dl.download_many(table[0], tmp_path)


def test_several_sources_on_a_process_pool(
    http_server: FaultServer, other_server: FaultServer, tmp_path: Path
) -> None:
    """The fallback runs in the worker; the result comes back with its source."""
    from concurrent.futures import ProcessPoolExecutor

    missing = http_server.url("/FTP/" + KEY)
    good = _serve(other_server)
    with ProcessPoolExecutor(max_workers=2) as pool:
        results = pyvo_dl.download_many(
            [[missing, good], ([missing, http_server.url("/none.fits")], "other.fits")], tmp_path,
            executor=pool, progress=False,
        )  # fmt: skip
    assert results[0] == str(tmp_path / NAME)
    assert isinstance(results[0], pyvo_dl.DownloadedPath)
    assert results[0].source == good
    assert isinstance(results[1], pyvo_dl.AllSourcesFailedError)
    assert [type(e) for _, e in results[1].failures] == [pyvo_dl.HTTPStatusError] * 2

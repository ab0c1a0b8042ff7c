"""download / download_many and recursive S3 prefixes (SPEC §2.3).

Real loopback servers: hundreds of small files through one keep-alive pool,
a mix of good and failing items, a process pool as the executor, and
ListObjectsV2 paging against moto.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ProcessPoolExecutor

import pytest

import pyvo_dl
from servers import FaultServer, s3_client_for

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any


def _body(i: int, size: int = 4096) -> bytes:
    return (f"file {i:05d} ".encode() * (size // 10 + 1))[:size]


def test_download_dispatches_on_scheme(http_server: FaultServer, in_tmp: Path) -> None:
    http_server.add_file("/d/a.fits", b"http bytes")
    http_server.add_file("/bkt/k/b.fits", b"s3 bytes")
    assert pyvo_dl.download(http_server.url("/d/a.fits"), progress=False) == "a.fits"
    path = pyvo_dl.download("s3://bkt/k/b.fits", endpoint_url=http_server.base_url, progress=False)
    assert (in_tmp / path).read_bytes() == b"s3 bytes"
    with pytest.raises(ValueError, match="ftp://"):
        pyvo_dl.download("ftp://host/file")


def test_many_small_files_reuse_connections(http_server: FaultServer, tmp_path: Path) -> None:
    count = 500
    urls = [http_server.add_file(f"/many/f{i:04d}.dat", _body(i)) for i in range(count)]
    results = pyvo_dl.download_many(urls, tmp_path / "out", workers=8, progress=False)
    assert results == [str(tmp_path / "out" / f"f{i:04d}.dat") for i in range(count)]
    for i in range(count):
        assert (tmp_path / "out" / f"f{i:04d}.dat").read_bytes() == _body(i)
    # Connections are kept alive and shared: at most one per worker, not one per file.
    assert http_server.connection_count <= 16
    assert len(http_server.requests) == count


def test_mixed_results_never_stop_at_the_first_failure(
    http_server: FaultServer, tmp_path: Path
) -> None:
    good = http_server.add_file("/m/good.fits", b"good")
    items = [
        http_server.url("/m/missing.fits"),
        good,
        (http_server.url("/m/good.fits"), "renamed/copy.fits"),
        "ftp://nowhere/x.fits",
        http_server.url("/m/dir/"),
        good,  # same target as item 1
        42,
    ]
    results = pyvo_dl.download_many(items, tmp_path, progress=False)  # type: ignore[arg-type]
    assert isinstance(results[0], pyvo_dl.HTTPStatusError)
    assert results[0].status == 404
    assert results[1] == str(tmp_path / "good.fits")
    assert results[2] == str(tmp_path / "renamed" / "copy.fits")
    assert isinstance(results[3], ValueError)
    assert isinstance(results[4], ValueError)
    assert isinstance(results[5], ValueError)
    assert f"as {good!r} (item 1) is" in str(results[5])
    assert isinstance(results[6], ValueError)
    assert (tmp_path / "renamed" / "copy.fits").read_bytes() == b"good"


def test_mixed_http_and_s3_options(http_server: FaultServer, tmp_path: Path) -> None:
    http_server.add_file("/h/x.fits", b"x")
    http_server.add_file("/bkt/y.fits", b"y")
    results = pyvo_dl.download_many(
        [http_server.url("/h/x.fits"), "s3://bkt/y.fits"], tmp_path,
        endpoint_url=http_server.base_url, headers={"X-Test": "1"}, progress=False,
    )  # fmt: skip
    assert results == [str(tmp_path / "x.fits"), str(tmp_path / "y.fits")]
    (http_get,) = http_server.requests_for("/h/x.fits", "GET")
    (s3_get,) = http_server.requests_for("/bkt/y.fits", "GET")
    assert http_get.headers["x-test"] == "1"
    assert "x-test" not in s3_get.headers


def test_process_pool_executor_gives_the_same_results(
    http_server: FaultServer, tmp_path: Path
) -> None:
    urls = [http_server.add_file(f"/pp/f{i}.dat", _body(i)) for i in range(12)]
    urls.append(http_server.url("/pp/missing.dat"))
    with ProcessPoolExecutor(max_workers=2) as pool:
        results = pyvo_dl.download_many(urls, tmp_path, executor=pool, progress=False)
    assert results[:12] == [str(tmp_path / f"f{i}.dat") for i in range(12)]
    assert isinstance(results[12], pyvo_dl.HTTPStatusError)
    assert results[12].status == 404  # the exception crossed the process boundary intact


def test_process_pool_summary_counts_the_bytes_the_workers_moved(
    http_server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The workers send back what they transferred: not "0 B" (issue 13.10)."""
    urls = [http_server.add_file(f"/ps/f{i}.dat", b"x" * 10_240) for i in range(4)]
    (tmp_path / "f3.dat").write_bytes(b"x" * 10_240)  # already there: cache=True finds it
    with ProcessPoolExecutor(max_workers=2) as pool:
        results = pyvo_dl.download_many(urls, tmp_path, executor=pool)
    assert not any(isinstance(r, Exception) for r in results)
    out = capsys.readouterr().out
    assert out.startswith("3 downloaded, 0 resumed, 1 already present, 0 failed; 30.0 KiB in ")


def test_mapping_items_carry_their_own_checksum(http_server: FaultServer, tmp_path: Path) -> None:
    good = http_server.add_file("/mc/good.dat", b"good")
    bad = http_server.add_file("/mc/bad.dat", b"bad")
    items = [
        {"source": good, "checksum": "sha256:" + hashlib.sha256(b"good").hexdigest()},
        {"source": bad, "local_filepath": "b.dat", "checksum": "md5:" + "0" * 32},
        {"source": good, "local_filepath": "g2.dat", "size": 4},
        {"local_filepath": "x.dat"},
    ]
    results = pyvo_dl.download_many(items, tmp_path, progress=False)
    assert results[0] == str(tmp_path / "good.dat")
    assert isinstance(results[1], pyvo_dl.IntegrityError)
    assert not (tmp_path / "b.dat").exists()
    assert isinstance(results[2], ValueError)
    assert "unknown key 'size'" in str(results[2])
    assert isinstance(results[3], ValueError)
    assert "no 'source'" in str(results[3])


class _BrokenRow:
    """A row whose keys() fails (a table closed under it)."""

    def keys(self) -> list[str]:
        raise RuntimeError("gone")


@pytest.mark.parametrize("recursive", [False, True])
def test_every_malformed_item_is_its_own_result(
    http_server: FaultServer, tmp_path: Path, recursive: bool
) -> None:
    """``download_many(["good", (url, 5)])`` used to raise TypeError and lose "good" (issue 12.11)."""
    good = http_server.add_file("/mal/good.fits", b"good")
    other = http_server.add_file("/mal/other.fits", b"other")
    items = [
        good, (other, 5), 42, None, b"bytes", ("a", "b", "c"), (), {"source": 5},
        [good, 7], _BrokenRow(), {"access_url": None}, (other, "renamed.fits"),
    ]  # fmt: skip
    results = pyvo_dl.download_many(items, tmp_path, progress=False, recursive=recursive)
    assert len(results) == len(items)
    assert results[0] == str(tmp_path / "good.fits")
    assert results[-1] == str(tmp_path / "renamed.fits")
    for index, result in enumerate(results[1:-1], 1):
        assert isinstance(result, ValueError), (index, result)
        assert f"item {index}" in str(result) or f"row {index}" in str(result), result
    assert sorted(os.listdir(tmp_path)) == ["good.fits", "renamed.fits"]


def test_one_row_or_mapping_is_not_an_iterable_of_items(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="not one dict"):
        pyvo_dl.download_many({"source": "https://h/x.fits"}, tmp_path)  # type: ignore[arg-type]


def test_progress_callable_counts_files(http_server: FaultServer, tmp_path: Path) -> None:
    urls = [http_server.add_file(f"/pc/f{i}.dat", b"x") for i in range(5)]
    calls: list[tuple[int, int | None]] = []
    pyvo_dl.download_many(urls, tmp_path, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (5, 5)


def test_aggregate_line_not_one_per_file(
    http_server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    urls = [http_server.add_file(f"/ag/f{i}.dat", b"x" * 100) for i in range(30)]
    pyvo_dl.download_many(urls, tmp_path)
    out = capsys.readouterr().out
    assert out.splitlines() == [out.splitlines()[0]]
    assert out.startswith("30 downloaded, 0 resumed, 0 already present, 0 failed; 2.93 KiB in ")


@pytest.mark.parametrize(
    "items",
    ["https://archive.example/one.fits", b"https://archive.example/one.fits", "s3://b/k"],
)
def test_one_string_is_not_an_iterable_of_items(
    items: object, http_server: FaultServer, tmp_path: Path
) -> None:
    """A string would be iterated character by character: 91 failed items (issue 16.3)."""
    with pytest.raises(TypeError, match=r"not one (str|bytes): ") as info:
        pyvo_dl.download_many(items, tmp_path)  # type: ignore[arg-type]
    assert repr(items) in str(info.value)
    assert "download()" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_one_path_is_not_an_iterable_of_items(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"not one (Posix|Windows)Path"):
        pyvo_dl.download_many(tmp_path / "urls.txt", tmp_path)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0, -1, True, "4"])
def test_workers_must_be_positive(bad: object, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="workers"):
        pyvo_dl.download_many([], tmp_path, workers=bad)  # type: ignore[arg-type]


# -- recursive S3 prefixes -------------------------------------------------------------


@pytest.fixture
def tree(s3_endpoint: str) -> dict[str, bytes]:
    pytest.importorskip("boto3")
    client = s3_client_for(s3_endpoint)
    client.create_bucket(Bucket="tree")
    objects = {f"obs/0042/sub{i % 3}/file {i}.fits": _body(i, 1000 + i) for i in range(23)}
    objects["obs/0042/"] = b""  # a folder marker
    objects["obs/0042-other/not-me.fits"] = b"outside the prefix"
    for key, body in objects.items():
        client.put_object(Bucket="tree", Key=key, Body=body, ACL="public-read")
    return objects


def _expected(tree: dict[str, bytes]) -> dict[str, bytes]:
    return {
        k[len("obs/0042/") :]: v
        for k, v in tree.items()
        if k.startswith("obs/0042/") and not k.endswith("/")
    }


def _files_under(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)).replace(os.sep, "/"): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file()
    }


def test_recursive_aws_download_pages_and_layout(
    tree: dict[str, bytes], s3_endpoint: str, in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pyvo_dl import _s3

    monkeypatch.setattr(_s3, "LIST_PAGE_SIZE", 5)  # several ListObjectsV2 pages
    folder = pyvo_dl.aws_download(
        "s3://tree/obs/0042", endpoint_url=s3_endpoint, recursive=True,
        local_filepath="mirror", progress=False,
    )  # fmt: skip
    assert folder == "mirror"
    assert _files_under(in_tmp / "mirror") == _expected(tree)


def test_recursive_download_many_relative_dest(
    tree: dict[str, bytes], s3_endpoint: str, in_tmp: Path
) -> None:
    results = pyvo_dl.download_many(
        ["s3://tree/obs/0042/", ("s3://tree/obs/0042/", "copy2")], "dest",
        endpoint_url=s3_endpoint, recursive=True, progress=False,
    )  # fmt: skip
    assert len(results) == 2 * len(_expected(tree))
    assert all(isinstance(r, str) for r in results), results
    assert not (in_tmp / "dest" / "dest").exists()
    files = _files_under(in_tmp / "dest")
    expected = _expected(tree)
    assert {k: v for k, v in files.items() if not k.startswith("copy2/")} == expected
    assert {k[6:]: v for k, v in files.items() if k.startswith("copy2/")} == expected


def test_recursive_prefix_filters_as_an_http_tree(
    tree: dict[str, bytes], s3_endpoint: str, tmp_path: Path
) -> None:
    """include/exclude match the key after the prefix; max_depth counts its folders."""
    results = pyvo_dl.download_many(
        ["s3://tree/obs/0042/"], tmp_path, endpoint_url=s3_endpoint, recursive=True,
        include="sub1/*", exclude=["*7.fits"], progress=False,
    )  # fmt: skip
    expected = {
        k: v
        for k, v in _expected(tree).items()
        if k.startswith("sub1/") and not k.endswith("7.fits")
    }
    assert len(results) == len(expected) == 7
    assert _files_under(tmp_path) == expected
    folder = pyvo_dl.aws_download(
        "s3://tree/obs/0042/", endpoint_url=s3_endpoint, recursive=True, max_depth=0,
        local_filepath=str(tmp_path / "top"), progress=False,
    )  # fmt: skip
    assert folder == str(tmp_path / "top")
    assert not (tmp_path / "top").exists()  # every object is one folder down
    with pytest.raises(ValueError, match="include filter what recursive=True lists"):
        pyvo_dl.aws_download("s3://tree/obs/0042/x.fits", include="*.fits")


def test_recursive_refuses_keys_that_escape(http_server: FaultServer, tmp_path: Path) -> None:
    listing = (
        b"<?xml version='1.0' encoding='UTF-8'?>"
        b"<ListBucketResult xmlns='http://s3.amazonaws.com/doc/2006-03-01/'>"
        b"<Name>evil</Name><Prefix>p/</Prefix><KeyCount>2</KeyCount><IsTruncated>false</IsTruncated>"
        b"<EncodingType>url</EncodingType>"
        b"<Contents><Key>p/ok.fits</Key><Size>2</Size></Contents>"
        b"<Contents><Key>p/../../../escape.fits</Key><Size>2</Size></Contents>"
        b"</ListBucketResult>"
    )
    http_server.add_file("/evil", listing, content_type="application/xml")
    http_server.add_file("/evil/p/ok.fits", b"ok")
    http_server.add_file("/evil/p/../../../escape.fits", b"no", exact=True)
    with pytest.raises(pyvo_dl.DownloadError, match="1 of 2"):
        pyvo_dl.aws_download(
            "s3://evil/p/", endpoint_url=http_server.base_url, recursive=True,
            local_filepath=str(tmp_path / "in"), progress=False,
        )  # fmt: skip
    assert (tmp_path / "in" / "ok.fits").read_bytes() == b"ok"
    assert not list(tmp_path.rglob("escape.fits"))
    assert not (tmp_path.parent / "escape.fits").exists()


def test_recursive_missing_bucket_is_one_failed_item(s3_endpoint: str, tmp_path: Path) -> None:
    results = pyvo_dl.download_many(
        ["s3://no-such-bucket-xyz/prefix/"], tmp_path, endpoint_url=s3_endpoint,
        recursive=True, progress=False,
    )  # fmt: skip
    assert len(results) == 1
    assert isinstance(results[0], pyvo_dl.S3Error)
    assert results[0].code == "NoSuchBucket"


# -- download_many's small new files: one GET, one read, one write, one rename --


def _one(http_server: FaultServer, tmp_path: Path, path: str, **kwargs: object) -> object:
    (result,) = pyvo_dl.download_many(
        [(http_server.url(path), "out.fits")], tmp_path, progress=False, **kwargs
    )
    return result


def test_small_path_writes_through_a_part_and_leaves_nothing(
    http_server: FaultServer, tmp_path: Path
) -> None:
    http_server.add_file("/s/a.fits", _body(1))
    assert _one(http_server, tmp_path, "/s/a.fits") == str(tmp_path / "out.fits")
    assert sorted(os.listdir(tmp_path)) == ["out.fits"]  # no .part, .part.json or .lock
    assert (tmp_path / "out.fits").read_bytes() == _body(1)
    (request,) = http_server.requests
    assert request.method == "GET"
    assert "range" not in request.headers


def test_small_path_hands_a_large_body_on_without_asking_twice(
    http_server: FaultServer, tmp_path: Path
) -> None:
    """A body over one buffer (1 MiB) is streamed from the same answer: one GET."""
    data = os.urandom(3 * 1024 * 1024 + 5)
    http_server.add_file("/s/big.fits", data)
    assert _one(http_server, tmp_path, "/s/big.fits") == str(tmp_path / "out.fits")
    assert (tmp_path / "out.fits").read_bytes() == data
    assert [r.method for r in http_server.requests] == ["GET"]


def test_small_path_retries_a_transient_status_once_per_attempt(
    http_server: FaultServer, tmp_path: Path
) -> None:
    """503 then 200: two requests (the 503 counts as attempt 1)."""
    http_server.add_file("/s/b.fits", _body(2))
    http_server.set_fault("/s/b.fits", status=503, retry_after="0", times=1)
    assert _one(http_server, tmp_path, "/s/b.fits", retries=1) == str(tmp_path / "out.fits")
    assert [r.status for r in http_server.requests] == [503, 200]
    http_server.reset_log()
    http_server.set_fault("/s/b.fits", status=503, retry_after="0", times=5)
    error = _one(http_server, tmp_path / "again", "/s/b.fits", retries=1)
    assert isinstance(error, pyvo_dl.HTTPStatusError)
    assert error.status == 503
    assert [r.status for r in http_server.requests] == [503, 503]  # retries=1: two attempts


def test_small_path_retries_a_body_cut_short(http_server: FaultServer, tmp_path: Path) -> None:
    http_server.add_file("/s/c.fits", _body(3, 100_000))
    http_server.set_fault("/s/c.fits", drop_after=40_000, times=1)
    assert _one(http_server, tmp_path, "/s/c.fits") == str(tmp_path / "out.fits")
    assert (tmp_path / "out.fits").read_bytes() == _body(3, 100_000)
    assert sorted(os.listdir(tmp_path)) == ["out.fits"]
    _first, second = http_server.requests
    assert second.headers["range"] == "bytes=40000-"  # resumed from the byte reached


def test_small_path_follows_redirects_and_reports_errors(
    http_server: FaultServer, tmp_path: Path
) -> None:
    http_server.add_file("/s/real.fits", _body(4))
    http_server.add_redirect("/s/moved.fits", "/s/real.fits")
    assert _one(http_server, tmp_path, "/s/moved.fits") == str(tmp_path / "out.fits")
    assert (tmp_path / "out.fits").read_bytes() == _body(4)
    error = _one(http_server, tmp_path / "404", "/s/missing.fits")
    assert isinstance(error, pyvo_dl.HTTPStatusError)
    assert error.status == 404
    assert not (tmp_path / "404").exists() or os.listdir(tmp_path / "404") == []


def test_small_path_leaves_resume_and_cache_to_the_long_way(
    http_server: FaultServer, tmp_path: Path
) -> None:
    data = _body(5, 50_000)
    http_server.add_file("/s/d.fits", data)
    # A .part left by a call cut short (here: a dropped connection, no
    # retries) is continued with a range.
    http_server.set_fault("/s/d.fits", drop_after=20_000, times=1)
    error = _one(http_server, tmp_path, "/s/d.fits", retries=0)
    assert isinstance(error, pyvo_dl.DownloadError)
    assert (tmp_path / "out.fits.part").stat().st_size == 20_000
    http_server.reset_log()
    assert _one(http_server, tmp_path, "/s/d.fits") == str(tmp_path / "out.fits")
    assert (tmp_path / "out.fits").read_bytes() == data
    (request,) = http_server.requests
    assert request.headers["range"] == "bytes=20000-"
    # A file already there is checked with HEAD (cache=True by default): no GET.
    http_server.reset_log()
    assert _one(http_server, tmp_path, "/s/d.fits") == str(tmp_path / "out.fits")
    assert [r.method for r in http_server.requests] == ["HEAD"]


def test_small_path_warns_about_an_html_page_for_a_data_name(
    http_server: FaultServer, tmp_path: Path
) -> None:
    http_server.add_file("/s/e.fits", b"<html>error</html>", content_type="text/html")
    with pytest.warns(pyvo_dl.DownloadWarning, match="HTML page"):
        assert _one(http_server, tmp_path, "/s/e.fits") == str(tmp_path / "out.fits")


def test_the_calls_options_are_checked_once_not_per_item(
    http_server: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pyvo_dl import _api

    checks: list[object] = []
    check_common = _api._check_common

    def counted(*args: object) -> float:
        checks.append(args)
        return check_common(*args)

    monkeypatch.setattr(_api, "_check_common", counted)
    urls = [http_server.add_file(f"/once/f{i}.dat", _body(i)) for i in range(5)]
    results = pyvo_dl.download_many(
        urls, tmp_path, workers=2, progress=False, timeout=30, headers={"X-Asked": "yes"}
    )
    assert results == [str(tmp_path / f"f{i}.dat") for i in range(5)]
    assert [(tmp_path / f"f{i}.dat").read_bytes() for i in range(5)] == [_body(i) for i in range(5)]
    # The items after the first copy its checked request, headers included.
    assert len(checks) <= 2  # the first item of each of the two threads, at most
    assert [r.headers.get("x-asked") for r in http_server.requests] == ["yes"] * 5


def test_an_item_with_credentials_in_its_url_sends_them_alone(
    http_server: FaultServer, tmp_path: Path
) -> None:
    plain = [http_server.add_file(f"/cred/f{i}.dat", _body(i)) for i in range(3)]
    secret = plain[1].replace("://", "://astro:s3cret@", 1)
    items = [plain[0], secret, plain[2]]
    results = pyvo_dl.download_many(items, tmp_path, workers=1, progress=False)
    assert results == [str(tmp_path / f"f{i}.dat") for i in range(3)]
    sent = [r.headers.get("authorization") for r in http_server.requests]
    assert sent[0] is None
    assert sent[2] is None
    assert (sent[1] or "").startswith("Basic ")


def test_a_plain_item_runs_no_import_statement(
    http_server: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import builtins

    imports: list[str] = []
    real_import = builtins.__import__

    def counted(name: str, globals: Any = None, *args: Any, **kwargs: Any) -> Any:
        if (globals or {}).get("__name__", "").startswith("pyvo_dl"):
            imports.append(name)  # not the test server's
        return real_import(name, globals, *args, **kwargs)

    def imports_for(count: int, folder: str) -> list[str]:
        urls = [http_server.add_file(f"/imp/{folder}/f{i}.dat", _body(i)) for i in range(count)]
        imports.clear()
        monkeypatch.setattr(builtins, "__import__", counted)
        try:
            pyvo_dl.download_many(urls, tmp_path / folder, workers=1, progress=False)
        finally:
            monkeypatch.setattr(builtins, "__import__", real_import)
        return list(imports)

    imports_for(2, "warm")  # the first download's own imports
    # An import statement per item costs as much as its checks: the items
    # after the first run none (their checks are bound once per call).
    assert imports_for(6, "six") == imports_for(3, "three")


def test_one_retry_policy_per_number_of_retries(
    http_server: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pyvo_dl import _exchange

    made: list[int] = []

    class Counted(_exchange.RetryPolicy):
        __slots__ = ()

        def __init__(self, retries: int) -> None:
            made.append(retries)
            super().__init__(retries)

    monkeypatch.setattr(_exchange, "RetryPolicy", Counted)
    monkeypatch.setattr(_exchange, "_POLICIES", {})
    urls = [http_server.add_file(f"/pol/f{i}.dat", _body(i)) for i in range(4)]
    pyvo_dl.download_many(urls, tmp_path, workers=1, progress=False, retries=7)
    assert made == [7]  # immutable: shared by every request, not made per file


def test_the_planner_makes_each_targets_absolute_path_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pyvo_dl import _many

    made: list[str] = []
    abspath = os.path.abspath

    def counted(path: str) -> str:
        made.append(path)
        return abspath(path)

    monkeypatch.setattr(os.path, "abspath", counted)
    urls = [f"https://h.example/d/f{i}.fits" for i in range(5)]
    items = [*urls, (urls[0], "f1.fits.part")]  # the .part of item 1: refused
    planned = _many.plan_items(items, str(tmp_path))
    assert [target for _, target, _ in planned[:5]] == [
        str(tmp_path / f"f{i}.fits") for i in range(5)
    ]
    assert "partial download of item 1" in str(planned[5][1])
    # Once per target (duplicates and helpers are found from that key): a
    # batch of small files pays the planning per file.
    assert len(made) == 6

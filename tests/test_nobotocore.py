"""The standard-library-only install: no botocore (SPEC §1, §2.4).

Run by the ``nobotocore`` tox env, where botocore is not installed at all,
and in every other env with botocore hidden by an import blocker, so both
situations are proven: anonymous S3 reads work, and anything that needs a
signature raises MissingDependencyError naming the extra.
"""

from __future__ import annotations

import importlib.abc
import sys

import pytest

import pyvo_dl
from servers import FaultServer

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

_BLOCKED = ("botocore", "boto3", "s3transfer")


class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: object, target: object = None) -> None:
        if name.split(".", maxsplit=1)[0] in _BLOCKED:
            raise ImportError(f"{name} is hidden by the test")


@pytest.fixture(autouse=True)
def no_botocore(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Hide botocore (already absent in the nobotocore env)."""
    for name in list(sys.modules):
        if name.split(".")[0] in _BLOCKED:
            monkeypatch.delitem(sys.modules, name)
    blocker = _Blocker()
    sys.meta_path.insert(0, blocker)
    yield
    sys.meta_path.remove(blocker)


def test_anonymous_read_needs_no_botocore(http_server: FaultServer, in_tmp: Path) -> None:
    http_server.add_file("/bkt/dir/obs.fits", b"public bytes")
    path = pyvo_dl.aws_download("s3://bkt/dir/obs.fits", endpoint_url=http_server.base_url)
    assert (in_tmp / path).read_bytes() == b"public bytes"
    assert "botocore" not in sys.modules


def test_profile_without_botocore_names_the_extra(in_tmp: Path) -> None:
    with pytest.raises(pyvo_dl.MissingDependencyError) as info:
        pyvo_dl.aws_download("s3://bkt/x.fits", aws_profile="someone")
    assert 'pip install "pyvo-dl[s3]"' in str(info.value)
    assert isinstance(info.value, ImportError)


def test_session_without_botocore_names_the_extra(in_tmp: Path) -> None:
    class FakeBoto3Session:
        def get_credentials(self) -> None:
            return None

    with pytest.raises(pyvo_dl.MissingDependencyError, match=r"pyvo-dl\[s3\]"):
        pyvo_dl.aws_download("s3://bkt/x.fits", session=FakeBoto3Session())


def test_403_without_botocore_suggests_profile_and_extra(
    http_server: FaultServer, in_tmp: Path
) -> None:
    http_server.set_fault(
        "/bkt/private.fits", status=403,
        body=b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>",
    )  # fmt: skip
    with pytest.raises(pyvo_dl.S3Error) as info:
        pyvo_dl.aws_download("s3://bkt/private.fits", endpoint_url=http_server.base_url)
    message = str(info.value)
    assert info.value.code == "AccessDenied"
    assert "aws_profile=" in message
    assert 'pip install "pyvo-dl[s3]"' in message

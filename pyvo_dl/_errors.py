"""The exceptions and warnings that pyvo_dl raises (SPEC §2.4).

Every error a download can end in derives from :class:`DownloadError`, an
``OSError``, so ``except OSError`` written around pyvo's functions keeps
working. Each class builds its message from its attributes and defines
``__reduce__``, so that it survives ``pickle`` (results cross process
boundaries in ``download_many(executor=...)``) with its data intact.

This module imports nothing from pyvo_dl and nothing heavy: it is loaded by
``import pyvo_dl``.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "AllSourcesFailedError",
    "DownloadError",
    "DownloadWarning",
    "HTTPStatusError",
    "IntegrityError",
    "MissingDependencyError",
    "S3Error",
]

#: How to get botocore: the extra of the installed package; a vendored copy
#: (imported under another name, mytool._vendor.pyvo_dl) has no extra.
_S3_EXTRA_HINT = (
    'pip install "pyvo-dl[s3]"'
    if __name__.rpartition(".")[0] == "pyvo_dl"
    else "pip install botocore"
)


class DownloadError(OSError):
    """A download could not be completed.

    The base of every error pyvo_dl raises for a failed download. It is an
    ``OSError``; for a local disk problem (a full disk, a folder that cannot
    be written) ``.errno`` and ``.filename`` are those of the underlying
    error.

    Parameters
    ----------
    message : str
        What went wrong, naming the URL or URI and the local path.
    errno : int, optional
        The ``errno`` of a local ``OSError`` this error stands for.
    filename : str, optional
        The local path concerned, with ``errno``.
    """

    def __init__(
        self,
        message: str,
        errno: int | None = None,
        filename: str | None = None,
    ) -> None:
        if errno is None:
            # One argument only: OSError reads two as (errno, strerror).
            super().__init__(message)
        else:
            super().__init__(errno, message, filename)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.message, self.errno, self.filename))


class HTTPStatusError(DownloadError):
    """The server answered with an HTTP error status.

    Parameters
    ----------
    status : int
        The HTTP status code, for example 404.
    url : str
        The URL that was requested (after redirects).
    reason : str, optional
        The reason phrase or a short explanation from the server.
    hint : str, optional
        What the user can do about it, appended to the message.

    Attributes
    ----------
    status, url, reason, hint
        As given.
    """

    def __init__(self, status: int, url: str, reason: str = "", hint: str = "") -> None:
        self.status = status
        self.url = url
        self.reason = reason
        self.hint = hint
        super().__init__(self._format())

    def add_hint(self, hint: str) -> None:
        """Set advice for the user; the message is rebuilt from the attributes."""
        self.hint = hint
        self.message = self._format()
        self.args = (self.message,)

    def _format(self) -> str:
        what = "not found" if self.status == 404 else (self.reason or "error")
        message = f"HTTP {self.status} ({what}) for {self.url}"
        if self.hint:
            message += f". {self.hint[:1].upper()}{self.hint[1:]}"
        return message

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.status, self.url, self.reason, self.hint))


class S3Error(HTTPStatusError):
    """S3 refused a request, with the error code from its XML body.

    Parameters
    ----------
    code : str
        The S3 error code: ``NoSuchKey``, ``NoSuchBucket``, ``AccessDenied``,
        ``SignatureDoesNotMatch``, ...
    status : int
        The HTTP status code.
    bucket : str
        The bucket asked for.
    key : str, optional
        The key asked for (empty for bucket-level requests such as listings).
    message : str, optional
        S3's own message text.
    region : str, optional
        The bucket's region where S3 told it.
    request_id : str, optional
        S3's request id, useful in a support request.
    url : str, optional
        The URL requested.
    hint : str, optional
        What the user can do about it, appended to the message.

    Attributes
    ----------
    code, status, bucket, key, region, request_id, url, hint
        As given; ``reason`` holds S3's message text.
    """

    def __init__(
        self,
        code: str,
        status: int,
        bucket: str,
        key: str = "",
        message: str = "",
        region: str | None = None,
        request_id: str | None = None,
        url: str = "",
        hint: str = "",
    ) -> None:
        self.code = code
        self.bucket = bucket
        self.key = key
        self.region = region
        self.request_id = request_id
        super().__init__(status, url, message, hint)

    def _format(self) -> str:
        where = f"s3://{self.bucket}/{self.key}"
        message = f"S3 {self.code} (HTTP {self.status}) for {where}"
        if self.reason:
            message += f": {self.reason.rstrip('.')}"
        if self.region:
            message += f" [region {self.region}]"
        if self.hint:
            message += f". {self.hint[:1].upper()}{self.hint[1:]}"
        return message

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            type(self),
            (
                self.code,
                self.status,
                self.bucket,
                self.key,
                self.reason,
                self.region,
                self.request_id,
                self.url,
                self.hint,
            ),
        )


class IntegrityError(DownloadError):
    """The downloaded bytes are not what the server or the caller promised.

    Raised for a size or checksum mismatch; the bad data is not left at the
    target path.

    Parameters
    ----------
    source : str
        The URL or URI downloaded.
    path : str
        The local path that was to be written.
    what : str
        What was checked: ``"size"``, ``"sha256"``, ``"md5"``, ``"crc32"``, ...
    expected, actual : str
        The expected and the computed values.
    """

    def __init__(self, source: str, path: str, what: str, expected: str, actual: str) -> None:
        self.source = source
        self.path = path
        self.what = what
        self.expected = expected
        self.actual = actual
        message = (
            f"{what} mismatch for {source} (to {path}): expected {expected}, got {actual}. "
            "The file was not kept; the server's copy may be changing or corrupt, "
            "try again later."
        )
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.source, self.path, self.what, self.expected, self.actual))


class AllSourcesFailedError(DownloadError):
    """Every source of one file failed (SPEC §2.3: several sources, tried in order).

    Parameters
    ----------
    target : str
        The local path that was to be written.
    failures : list of (str, Exception)
        Each source as tried, in order, with the error it ended in.

    Attributes
    ----------
    target, failures
        As given; the message names each source and why it failed.
    """

    def __init__(self, target: str, failures: list[tuple[str, BaseException]]) -> None:
        self.target = target
        self.failures = list(failures)
        reasons = "; ".join(
            f"{source}: {' '.join(str(error).split()) or type(error).__name__}"
            for source, error in self.failures
        )
        super().__init__(f"all {len(self.failures)} sources of {target} failed: {reasons}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.target, self.failures))


class MissingDependencyError(ImportError):
    """An optional dependency needed for this request is not installed.

    An ``ImportError`` (not a :class:`DownloadError`: Python cannot make one
    class both an ``OSError`` and an ``ImportError``), raised for example when
    a signed S3 request is asked for and botocore is missing.

    Parameters
    ----------
    package : str
        The missing package.
    purpose : str
        What it was needed for.
    extra : str, optional
        The pip install command that provides it.
    """

    def __init__(self, package: str, purpose: str, extra: str = _S3_EXTRA_HINT) -> None:
        self.package = package
        self.purpose = purpose
        self.extra = extra
        super().__init__(f"{package} is needed for {purpose}; install it with: {extra}")
        self.name = package

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.package, self.purpose, self.extra))


class DownloadWarning(UserWarning):
    """Something about a download deserves attention but did not stop it.

    For example a cached file whose size differs from the server's, or an
    HTML page served where a data file was expected.
    """


def _fix_module_names() -> None:
    # Public classes print and pickle under the package's own name, which is
    # not "pyvo_dl" in a vendored copy.
    package = __name__.rpartition(".")[0] or __name__
    for cls in (
        AllSourcesFailedError,
        DownloadError,
        HTTPStatusError,
        S3Error,
        IntegrityError,
        MissingDependencyError,
        DownloadWarning,
    ):
        cls.__module__ = package


_fix_module_names()

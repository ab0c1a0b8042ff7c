"""Fast, resumable, verified downloads from HTTP(S) archives and S3 buckets, on the standard library."""

# This file and __main__.py parse on any Python 3 (no annotations future, no
# walrus), so that an older interpreter (RHEL 8's python3 is 3.6) gets this
# sentence rather than a SyntaxError from a module below.
import sys as _sys

if _sys.version_info < (3, 8):  # noqa: UP036 - the check is for interpreters below the floor
    _NEEDS = "{} needs Python 3.8 or newer; this is {}".format(
        __name__.rpartition(".")[2], _sys.version.split()[0]
    )
    if _sys.argv[:1] == ["-m"]:
        # `python3 -m pyvo_dl` imports this package first: one line, no traceback.
        raise SystemExit(_NEEDS)
    raise ImportError(_NEEDS)

from ._api import DownloadedPath, aws_download, download, download_many, http_download
from ._errors import (
    AllSourcesFailedError,
    DownloadError,
    DownloadWarning,
    HTTPStatusError,
    IntegrityError,
    MissingDependencyError,
    S3Error,
)

__all__ = [
    "AllSourcesFailedError",
    "DownloadError",
    "DownloadWarning",
    "DownloadedPath",
    "HTTPStatusError",
    "IntegrityError",
    "MissingDependencyError",
    "S3Error",
    "aws_download",
    "download",
    "download_many",
    "http_download",
]

__version__ = "0.1.0"

# Public objects print and pickle under the package's own name, which is not
# "pyvo_dl" in a vendored copy (tomli and trio do the same).
for _name in __all__:
    globals()[_name].__module__ = __name__
del _name, _sys

"""Fast, resumable, verified downloads from HTTP(S) archives and S3 buckets, on the standard library."""

from ._api import aws_download, download, download_many, http_download
from ._errors import (
    DownloadError,
    DownloadWarning,
    HTTPStatusError,
    IntegrityError,
    MissingDependencyError,
    S3Error,
)

__all__ = [
    "DownloadError",
    "DownloadWarning",
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
del _name

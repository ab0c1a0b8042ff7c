"""SigV4 signing through botocore, the only module that names it.

botocore (the extra ``pyvo-dl[s3]``) is imported on the first signed request
only. Credentials are asked for on every request, so refreshable credentials
(SSO, assumed roles, instance profiles) are refreshed when they expire.
"""

from __future__ import annotations

from ._errors import MissingDependencyError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_PURPOSE = "signed S3 requests (aws_profile=, session=, or non-public objects)"


def import_botocore() -> Any:
    """Import botocore's session module, or raise :class:`MissingDependencyError`."""
    try:
        import botocore.auth
        import botocore.awsrequest
        import botocore.exceptions
        import botocore.session
    except ImportError as exc:
        raise MissingDependencyError("botocore", _PURPOSE) from exc
    return botocore


def botocore_available() -> bool:
    """Whether botocore can be imported (without importing it twice)."""
    try:
        import_botocore()
    except MissingDependencyError:
        return False
    return True


def profile_session(profile: str) -> Any:
    """A botocore session for ``profile`` (``~/.aws/config`` and ``credentials``).

    Raises
    ------
    ValueError
        When no such profile exists.
    """
    botocore = import_botocore()
    session = botocore.session.Session(profile=profile)
    try:
        session.get_scoped_config()
    except botocore.exceptions.ProfileNotFound:
        raise ValueError(
            f"AWS profile {profile!r} not found in the AWS config or credentials files "
            "(~/.aws/config, ~/.aws/credentials, or AWS_CONFIG_FILE / AWS_SHARED_CREDENTIALS_FILE)"
        ) from None
    return session


def default_session() -> Any:
    """A botocore session with the default credential chain (environment, files, roles)."""
    return import_botocore().session.Session()


def session_region(session: Any) -> str | None:
    """The region a boto3 or botocore session is configured with, if any."""
    region = getattr(session, "region_name", None)
    if region:
        return str(region)
    get = getattr(session, "get_config_variable", None)
    if callable(get):
        value = get("region")
        return str(value) if value else None
    return None


def has_credentials(session: Any) -> bool:
    """Whether ``session`` resolves to some credentials."""
    try:
        return session.get_credentials() is not None
    except Exception:  # any provider failure means: none usable here
        return False


class Signer:
    """Adds SigV4 headers to each request, with credentials from a session.

    Parameters
    ----------
    session : boto3.session.Session or botocore.session.Session
        Where the credentials come from.
    region : str
        The region to sign for.
    description : str
        How the access mode is reported (``Access with profile (NAME)``).
    """

    def __init__(self, session: Any, region: str, description: str) -> None:
        self.session = session
        self.region = region
        self.description = description
        self._botocore = import_botocore()

    def for_region(self, region: str) -> Signer:
        """The same credentials, signing for another region."""
        return Signer(self.session, region, self.description)

    def _frozen_credentials(self) -> Any:
        credentials = self.session.get_credentials()
        if credentials is None:
            from ._errors import DownloadError

            raise DownloadError(
                f"no AWS credentials found for {self.description.lower()}: configure them "
                "(aws configure), or drop aws_profile=/session= for public data"
            )
        return credentials.get_frozen_credentials()

    def __call__(self, method: str, url: str, headers: dict[str, str]) -> dict[str, str]:
        """The signing headers for this request (``Authorization``, ``X-Amz-*``)."""
        botocore = self._botocore
        request = botocore.awsrequest.AWSRequest(method=method, url=url, headers=dict(headers))
        auth = botocore.auth.S3SigV4Auth(self._frozen_credentials(), "s3", self.region)
        auth.add_auth(request)
        signed = {}
        for name in ("Authorization", "X-Amz-Date", "X-Amz-Content-SHA256", "X-Amz-Security-Token"):
            value = request.headers.get(name)
            if value is not None:
                signed[name] = value
        return signed

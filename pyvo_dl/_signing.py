"""SigV4 signing through botocore, the only module that names it.

botocore (the extra ``pyvo-dl[s3]``) is imported on the first signed request
only. A session's credentials are resolved once (:class:`Credentials`: one
STS call, one ``credential_process`` run, one MFA prompt however many files
a call downloads) and kept as botocore's object, which refreshes itself
when temporary credentials near their expiry (SSO, assumed roles, instance
profiles). botocore's errors become :class:`~pyvo_dl.DownloadError`
naming the profile or session and the cause.
"""

from __future__ import annotations

import threading

from ._errors import DownloadError, MissingDependencyError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_PURPOSE = "signed S3 requests (aws_profile=, session=, or non-public objects)"

#: How botocore's credential ``method`` reads in a message.
_METHODS = {
    "env": "the environment variables AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY",
    "shared-credentials-file": "the shared credentials file (~/.aws/credentials)",
    "config-file": "the AWS config file (~/.aws/config)",
    "custom-process": "a credential_process",
    "assume-role": "an assumed role",
    "assume-role-with-web-identity": "a web identity role",
    "iam-role": "the instance's role (instance metadata)",
    "container-role": "the container's role",
    "sso": "AWS SSO",
    "explicit": "keys set on the session",
}


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
        try:
            value = get("region")
        except Exception:  # a broken config: the credentials lookup will say so
            return None
        return str(value) if value else None
    return None


def session_profile(session: Any) -> str | None:
    """The profile a boto3 or botocore session reads its settings from, if named."""
    name = getattr(session, "profile_name", None) or getattr(session, "profile", None)
    return str(name) if isinstance(name, str) and name else None


def describe_method(method: str | None) -> str:
    """Where botocore found credentials, in words (``env`` -> the variables...)."""
    if not method:
        return "credentials of unknown origin"
    return _METHODS.get(method, f"credentials from {method}")


class Credentials:
    """One session's credentials, resolved at most once, by one thread.

    Parameters
    ----------
    session : boto3.session.Session or botocore.session.Session
        Where the credentials come from.
    owner : str
        Whose they are, for messages: ``AWS profile 'NAME'``, ``the session
        given as session=``, ``this machine's default credentials``.

    Notes
    -----
    botocore's ``Session.get_credentials()`` is not safe to call from many
    threads at once (each may run the whole provider chain); the first
    resolution here takes a lock, and its outcome, credentials or error, is
    kept for every later request of the call. The credentials object is
    botocore's own, so refreshable ones refresh themselves (under their own
    lock) when they near their expiry.
    """

    def __init__(self, session: Any, owner: str) -> None:
        self.session = session
        self.owner = owner
        self._lock = threading.Lock()
        self._resolved = False
        self._credentials: Any = None
        self._failure: tuple[str, BaseException | None] | None = None

    def _resolve(self) -> Any:
        with self._lock:
            if not self._resolved:
                botocore = import_botocore()
                try:
                    credentials = self.session.get_credentials()
                    if credentials is not None:
                        # Deferred ones (assumed roles) call STS only here:
                        # within the lock, so that one thread does.
                        credentials.get_frozen_credentials()
                    self._credentials = credentials
                except _botocore_errors(botocore) as exc:
                    self._failure = (f"cannot get the credentials of {self.owner}: {exc}", exc)
                self._resolved = True
        if self._failure is not None:
            message, cause = self._failure
            raise DownloadError(message) from cause
        return self._credentials

    def available(self) -> bool:
        """Whether this session resolves to some credentials (failures count as none)."""
        try:
            return self._resolve() is not None
        except DownloadError:
            return False

    @property
    def failure(self) -> str | None:
        """Why the lookup failed, once it has (None: it did not, or not yet)."""
        return self._failure[0] if self._failure is not None else None

    @property
    def method(self) -> str | None:
        """botocore's name for where the credentials came from (``env``...), once resolved."""
        credentials = self._credentials
        return getattr(credentials, "method", None) if credentials is not None else None

    def frozen(self) -> Any:
        """The current key, secret and token (refreshed first when near expiry).

        Raises
        ------
        DownloadError
            When there are none, or botocore cannot get them (a failing
            ``credential_process``, an STS refusal, an expired SSO token...).
        """
        credentials = self._resolve()
        if credentials is None:
            raise DownloadError(
                f"no AWS credentials found for {self.owner}: configure them "
                "(aws configure), or drop aws_profile=/session= for public data"
            )
        botocore = import_botocore()
        try:
            return credentials.get_frozen_credentials()
        except _botocore_errors(botocore) as exc:
            # Deferred (assumed roles) and refreshing credentials call STS here.
            raise DownloadError(f"cannot get the credentials of {self.owner}: {exc}") from exc


def _botocore_errors(botocore: Any) -> tuple[type[BaseException], ...]:
    return (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError)


class Signer:
    """Adds SigV4 headers to each request, with credentials from a session.

    Parameters
    ----------
    credentials : Credentials
        Where the keys come from, shared by every request of the call.
    region : str
        The region to sign for.
    description : str
        How the access mode is reported (``Access with profile (NAME)``).
    """

    def __init__(self, credentials: Credentials, region: str, description: str) -> None:
        self.credentials = credentials
        self.region = region
        self.description = description
        self._botocore = import_botocore()

    @property
    def session(self) -> Any:
        """The boto3 or botocore session the credentials come from."""
        return self.credentials.session

    def for_region(self, region: str) -> Signer:
        """The same credentials, signing for another region."""
        return Signer(self.credentials, region, self.description)

    def __call__(self, method: str, url: str, headers: dict[str, str]) -> dict[str, str]:
        """The signing headers for this request (``Authorization``, ``X-Amz-*``)."""
        botocore = self._botocore
        request = botocore.awsrequest.AWSRequest(method=method, url=url, headers=dict(headers))
        auth = botocore.auth.S3SigV4Auth(self.credentials.frozen(), "s3", self.region)
        auth.add_auth(request)
        signed = {}
        for name in ("Authorization", "X-Amz-Date", "X-Amz-Content-SHA256", "X-Amz-Security-Token"):
            value = request.headers.get(name)
            if value is not None:
                signed[name] = value
        return signed

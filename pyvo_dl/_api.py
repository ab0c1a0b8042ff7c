"""The public functions, with pyvo's signatures (SPEC §2).

This module is imported by ``import pyvo_dl`` and so stays light: everything
heavy (http.client, ssl, logging, threads, XML, botocore) is imported inside
the function bodies, at the first download.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Iterable, Mapping, Union

    from ._exchange import FetchRequest
    from ._transport import Transport

    PathLike = Union[str, "os.PathLike[str]"]

#: Retries of transient faults per download, by default.
DEFAULT_RETRIES = 5

# Keep-alive pools shared by successive calls, one per TLS context and proxy
# setting; the entry keeps its context alive so that its id is not reused.
_transports: dict[Any, Any] = {}
_MAX_TRANSPORTS = 8
_PROXY_VARIABLES = tuple(
    f"{scheme}_{case}"
    for scheme in ("http", "https", "all", "no", "HTTP", "HTTPS", "ALL", "NO")
    for case in (("proxy",) if scheme.islower() else ("PROXY",))
)


_USER_AGENT: list[str] = []


def _version_agent() -> str:
    if not _USER_AGENT:
        from . import __version__

        _USER_AGENT.append(f"pyvo-dl/{__version__}")
    return _USER_AGENT[0]


#: The ranges the numeric arguments must be in (issue 16.9). A larger
#: timeout is "wait forever" in practice and overflows the socket layer
#: (inf, 1e308, 10**400); more retries or connections than these are typos.
MAX_TIMEOUT = 7 * 24 * 3600.0
MAX_RETRIES = 100
MAX_CONNECTIONS = 64


def _whole_in_range(name: str, value: Any, low: int, high: int, none_ok: bool = False) -> None:
    """Refuse anything but a whole number from ``low`` to ``high``, naming ``name``."""
    if none_ok and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        also = " or None" if none_ok else ""
        raise ValueError(f"{name} must be a whole number from {low} to {high}{also}, not {value!r}")


def _check_common(timeout: Any, retries: Any, connections: Any) -> float:
    """Validate the shared keyword arguments; return the timeout in seconds."""
    if timeout is None:
        from ._exchange import DEFAULT_TIMEOUT

        timeout = DEFAULT_TIMEOUT
    # Compared before float(): 10**400 is an int float() cannot hold.
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not 0 < timeout <= MAX_TIMEOUT
    ):
        raise ValueError(
            f"timeout must be a number of seconds above 0 and at most {MAX_TIMEOUT:g} "
            f"(a week), or None for 60, not {timeout!r}"
        )
    _whole_in_range("retries", retries, 0, MAX_RETRIES)
    _whole_in_range("connections", connections, 1, MAX_CONNECTIONS, none_ok=True)
    return float(timeout)


def _parse_checksum(checksum: Any) -> list[Any]:
    if checksum is None:
        return []
    from ._integrity import Checksum

    if not isinstance(checksum, str):
        raise ValueError(f"checksum must be a string like 'sha256:<hex>', not {checksum!r}")
    return [Checksum.parse(checksum)]


def _local_path(local_filepath: Any, folder: bool = False) -> str | None:
    from ._items import check_target_path

    return check_target_path(local_filepath, folder)


def _batch() -> Any:
    """This thread's settings of the download_many call whose items it runs.

    A ``threading.local`` made in ``_exchange``: ``import pyvo_dl`` stays
    without threading, and the first import of ``_exchange`` (under the
    import lock) makes it once for every thread.
    """
    from ._exchange import BATCH

    return BATCH


def _stdlib_transport(ssl_context: Any) -> Transport:
    """A shared keep-alive transport per TLS context and proxy setting.

    Within a download_many call the proxy settings are read once, at its
    first item, not at every item: looking at the environment costs more
    than a small download.
    """
    pinned: dict[int, Any] | None = getattr(_batch(), "transports", None)
    if pinned is None:
        return _shared_transport(ssl_context)
    entry = pinned.get(id(ssl_context))
    if entry is None or entry[0] is not ssl_context:
        entry = pinned[id(ssl_context)] = (ssl_context, _shared_transport(ssl_context))
    return entry[1]


def _shared_transport(ssl_context: Any) -> Transport:
    from . import _httputil
    from ._transport import StdlibTransport

    key = (id(ssl_context), tuple(os.environ.get(name) for name in _PROXY_VARIABLES))
    entry = _transports.get(key)
    if entry is None or entry[0] is not ssl_context:
        if not _transports:
            import atexit

            # Idle keep-alive sockets are closed at exit, not left to the GC.
            atexit.register(_close_transports)
        if len(_transports) >= _MAX_TRANSPORTS:
            # Forget the oldest pool (dicts keep insertion order), closing its
            # idle connections; one in use by another thread closes when done.
            _, oldest = _transports.pop(next(iter(_transports)))
            oldest.close()
        # Read all of them only now: scanning the environment costs more than a
        # small download, so the key above looks at the usual names only.
        proxies = _httputil.proxies_from_env(os.environ)
        entry = (ssl_context, StdlibTransport(ssl_context=ssl_context, proxies=proxies))
        _transports[key] = entry
    return entry[1]


def _close_transports() -> None:
    for _, transport in list(_transports.values()):
        transport.close()


def _http_transport(session: Any, auth: Any, ssl_context: Any, url: str) -> tuple[Transport, Any]:
    """The transport to use and the ``(user, password)`` the engine should send."""
    basic = auth if _is_user_password(auth) else None
    if session is not None and ssl_context is not None:
        raise ValueError(
            "ssl_context= configures the built-in transport; with session=, set TLS on the "
            "session instead (session.verify = '/path/to/ca.pem')"
        )
    if session is not None:
        from ._transport import SessionTransport

        if not callable(getattr(session, "request", None)):
            raise ValueError(
                f"session must be a requests.Session-like object with .request(), not {session!r}"
            )
        return SessionTransport(session, None if basic else auth, origin=url), basic
    if auth is not None and basic is None:
        raise ValueError(
            "auth must be a (user, password) pair of strings; other auth objects need "
            f"session= (a requests.Session), got {_describe_secret(auth)}"
        )
    return _stdlib_transport(ssl_context), basic


def _describe_secret(value: Any) -> str:
    """What ``value`` is, never what it holds: it may be a password (SPEC §3.7)."""
    kind = type(value).__name__
    if isinstance(value, (tuple, list)):
        inside = ", ".join(type(item).__name__ for item in value)
        return f"a {kind} of {len(value)} ({inside})"
    return f"a {kind}"


def _is_user_password(auth: Any) -> bool:
    return (
        isinstance(auth, (tuple, list))
        and len(auth) == 2
        and all(isinstance(part, str) for part in auth)
    )


def _check_headers(headers: Any) -> dict[str, str]:
    if headers is None:
        return {}
    try:
        items = dict(headers)
    except (TypeError, ValueError):
        raise ValueError(f"headers must be a mapping of str to str, not {headers!r}") from None
    for name, value in items.items():
        if not isinstance(name, str) or not isinstance(value, str):
            # The value is not shown: it may be a credential (Authorization, Cookie).
            raise ValueError(
                f"headers must map str to str; the entry {name!r} is {_describe_secret(value)}"
            )
        if not name or name.strip(_TOKEN_CHARS):
            # RFC 9110 §5.1: a field name is a token; a space, a colon or a
            # control character would make a malformed or a second header line.
            raise ValueError(
                f"header name {name!r} is not a valid field name: use letters, digits "
                "and !#$%&'*+-.^_`|~ only (no spaces, colons or control characters)"
            )
        if any(c in value for c in "\r\n\0") or not (value.replace("\t", " ")).isprintable():
            raise ValueError(f"header {name!r} has a line break or control character in its value")
        asks_identity = name.lower() == "accept-encoding" and value.strip().lower() == "identity"
        if name.lower() in _OWNED_HEADERS and not asks_identity:
            raise ValueError(
                f"header {name!r} is set by pyvo_dl itself (ranges, resume and "
                "Accept-Encoding: identity keep sizes exact); leave it out of headers="
            )
    return items


#: The characters of an RFC 9110 token (a header field name).
_TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

#: Headers the download machinery owns; a caller's would break resume or sizes.
_OWNED_HEADERS = frozenset(
    {"range", "if-range", "if-match", "accept-encoding", "host", "content-length",
     "transfer-encoding", "connection"}
)  # fmt: skip


def _hide_passwords(exc: BaseException) -> BaseException:
    """Hide every URL password in ``exc``, its attributes and its causes; return it.

    The boundary filter of SPEC §3.7 for what the public functions raise or
    return: the message and every text attribute (``url``, ``source``,
    ``reason``, ...) go through ``_httputil.redact``, and so do the chained
    exceptions a traceback shows. Messages are written with the URL as the
    caller gave it; this is what keeps its password out of them.
    """
    from ._httputil import redact

    todo: list[BaseException | None] = [exc]
    seen: set[int] = set()
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        try:
            current.args = tuple(redact(a) if isinstance(a, str) else a for a in current.args)
        except (AttributeError, TypeError):
            pass  # an exception type that keeps its args read-only
        for name, value in list(getattr(current, "__dict__", {}).items()):
            if isinstance(value, str):
                setattr(current, name, redact(value))
            elif isinstance(value, list):
                # __notes__, and AllSourcesFailedError.failures: (source, error) pairs.
                value[:] = [_hidden_in(entry, redact, todo) for entry in value]
        if isinstance(current, OSError) and isinstance(current.strerror, str):
            current.strerror = redact(current.strerror)
        todo.extend((current.__cause__, current.__context__))
    return exc


def _hidden_in(entry: Any, redact: Any, todo: list[BaseException | None]) -> Any:
    """One entry of a list attribute of an exception, its texts redacted, its errors queued."""
    if isinstance(entry, str):
        return redact(entry)
    if isinstance(entry, BaseException):
        todo.append(entry)
    elif isinstance(entry, tuple):
        return tuple(_hidden_in(part, redact, todo) for part in entry)
    return entry


def _name_for_url(url: str, request: FetchRequest, transport: Transport) -> str:
    """The file name for a URL (SPEC §2.1): path, query value, Content-Disposition."""
    from . import _exchange, _names

    name = _names.filename_from_url(url)
    if name and "." in name:
        return name
    info = _exchange.probe(request, transport)
    disposition = info.headers.get("Content-Disposition")
    from_server = _names.filename_from_content_disposition(disposition) if disposition else None
    if from_server:
        return from_server
    if name:
        return name
    raise ValueError(
        f"cannot derive a file name from {url!r} (no name in its path or query and no "
        "Content-Disposition from the server); pass local_filepath="
    )


def http_download(
    url: str,
    local_filepath: PathLike | None = None,
    cache: bool = True,
    timeout: float | None = None,
    session: Any = None,
    auth: Any = None,
    verbose: bool = False,
    *,
    resume: bool = True,
    retries: int = DEFAULT_RETRIES,
    checksum: str | None = None,
    headers: Mapping[str, str] | None = None,
    progress: Any = True,
    connections: int | None = None,
    ssl_context: Any = None,
    recursive: bool = False,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    max_depth: int | None = None,
) -> str:
    """Download a file from an http(s) URL, or a whole folder of a web server.

    A drop-in for pyvo's ``http_download``: same parameters, defaults and
    return value, plus keyword-only extras. The data goes to
    ``<local_filepath>.part`` and is moved into place only once its size (and
    checksum, where known) is verified; an interrupted download is resumed by
    the next call.

    Parameters
    ----------
    url : str
        The URL of the file to download.
    local_filepath : str or os.PathLike, optional
        Where to write the file. By default, a file in the current folder
        named after the URL: the last path part, else the first query value
        that looks like a file name, else the server's
        ``Content-Disposition`` name.
    cache : bool, optional
        If True (the default) and the file exists with the size the server
        reports, it is returned without downloading.
    timeout : float, optional
        Seconds without progress (connecting or reading) before a try is
        abandoned, above 0 and at most a week (604800); None means 60 s.
    session : requests.Session, optional
        A requests-like session to send the requests through (pyvo's
        authenticated sessions); by default the standard library is used.
    auth : tuple of str, optional
        ``(user, password)`` for HTTP Basic authentication. Without it,
        credentials for the host in ``~/.netrc`` (or ``$NETRC``) are used.
    verbose : bool, optional
        If True, print what was decided (cache hit, resume, retries).
    resume : bool, optional
        Continue a ``.part`` left by an interrupted call (default True).
    retries : int, optional
        How many times a transient fault is retried, 0 to 100 (default 5).
    checksum : str, optional
        ``"sha256:<hex>"``, ``"md5:<hex>"``, or any ``hashlib`` name; a
        mismatch raises `~pyvo_dl.IntegrityError` and keeps no file.
    headers : dict, optional
        Extra request headers: names are RFC 9110 tokens (no spaces, colons
        or control characters), values have no line breaks or controls.
    progress : bool or callable, optional
        True (default): a bar on a terminal, one line elsewhere; False:
        silent; a callable is called with ``(bytes_done, total_or_None)``.
    connections : int, optional
        Parallel ranged connections for one large file, 1 to 64 (default:
        1, as archive servers are shared). A file of at least two parts (4 MiB
        each) from a server that serves ranges is split into ``connections``
        equal ranges, fetched at once and resumed range by range.
    ssl_context : ssl.SSLContext, optional
        TLS settings (a private CA, for example); verified by default.
    recursive : bool, optional
        Treat ``url`` (ending in ``/``) as a folder, as ``wget -r -np``
        does: read the server's directory listing pages (Apache
        ``mod_autoindex``, nginx ``autoindex``, lighttpd, Python's
        ``http.server``), descend into the sub-folders, and download every
        file into ``local_filepath`` (a folder, default the current one)
        keeping the relative layout. Only links to what is under ``url``
        are followed (same host, path prefix: never ``../``, another host
        or a sort link). Returns the folder; raises
        `~pyvo_dl.DownloadError` naming the failures after trying every
        file.
    include, exclude : str or list of str, optional
        With ``recursive``: ``fnmatch`` globs on each file's path below
        ``url`` (``*`` matches ``/`` too: ``"*.fits"`` at any depth,
        ``"primary/*"``); a file is kept when it matches an ``include``
        (or none is given) and no ``exclude``.
    max_depth : int, optional
        With ``recursive``: how many folder levels below ``url`` to descend
        (0: only its own files). Default: no bound but a guard at 32 levels
        (a loop of symbolic links), reported as an error.

    Returns
    -------
    local_filepath : str
        The path of the downloaded file (the folder, with ``recursive``).

    Raises
    ------
    ValueError
        For a malformed URL or argument (``include``, ``exclude`` or
        ``max_depth`` without ``recursive`` included).
    pyvo_dl.HTTPStatusError
        When the server refuses (404 and the like).
    pyvo_dl.IntegrityError
        When the size or checksum does not match.
    pyvo_dl.DownloadError
        For any other failure (network down after retries, disk full).
    """
    from . import _engine

    try:
        filters = _tree_filters(recursive, include, exclude, max_depth)
        if recursive:
            options = {
                "cache": cache, "timeout": timeout, "session": session, "auth": auth,
                "verbose": verbose, "resume": resume, "retries": retries, "headers": headers,
                "connections": connections, "ssl_context": ssl_context,
            }  # fmt: skip
            if checksum is not None:
                raise ValueError(
                    "checksum= names one file; with recursive=True it has no file to name"
                )
            return _http_tree_download(url, local_filepath, options, filters, progress)
        request, transport = _http_request(
            url, local_filepath, cache, timeout, session, auth, verbose, resume=resume,
            retries=retries, checksum=checksum, headers=headers, progress=progress,
            connections=connections, ssl_context=ssl_context,
        )  # fmt: skip
        return _engine.fetch(request, transport)
    except BaseException as exc:
        _hide_passwords(exc)
        raise


def _tree_filters(recursive: Any, include: Any, exclude: Any, max_depth: Any) -> tuple[Any, ...]:
    """``include``, ``exclude``, ``max_depth`` checked; refused without ``recursive``."""
    given = [n for n, v in (("include", include), ("exclude", exclude),
                            ("max_depth", max_depth)) if v is not None]  # fmt: skip
    if not recursive:
        if given:
            raise ValueError(
                f"{', '.join(given)} filter what recursive=True lists; without it there is "
                "nothing to filter"
            )
        # What check_filters(None, None, None) gives, without importing
        # _listing (and html.parser, 18 M instructions) for one file.
        return (), (), None
    from . import _listing

    return _listing.check_filters(include, exclude, max_depth)


#: Options of a listing page's request: those of the call, without a file's.
_PAGE_OPTIONS = frozenset({"timeout", "session", "auth", "verbose", "retries", "headers",
                           "ssl_context"})  # fmt: skip
#: The largest listing page read into memory, as for an S3 listing page: an
#: Apache FancyIndexing row is about 250 bytes, so some 250,000 entries.
_PAGE_LIMIT = 64 * 1024 * 1024


def _http_tree_items(
    url: str, kwargs: dict[str, Any], folder: str, filters: tuple[Any, ...]
) -> list[tuple[str, Any]]:
    """``(file URL, local path or error)`` for every file under the folder ``url``."""
    from . import _exchange, _httputil, _tree

    shown = _httputil.redact_url(url)
    if not _httputil.check_url(url).endswith("/"):
        raise ValueError(
            f"recursive=True takes a folder URL ending in '/', not {shown!r}: "
            f"did you mean {shown + '/'!r}?"
        )
    options = {k: v for k, v in _http_options(kwargs).items() if k in _PAGE_OPTIONS}

    def fetch_page(page_url: str) -> Any:
        request, transport = _http_request(page_url, "index.html", progress=False, **options)
        return _exchange.fetch_document(request, transport, _PAGE_LIMIT)

    include, exclude, max_depth = filters
    items = _tree.walk(
        url, fetch_page, folder=folder, include=include, exclude=exclude, max_depth=max_depth
    )
    files = sum(1 for _, local in items if not isinstance(local, Exception))
    _exchange.log_and_print(bool(kwargs.get("verbose")), f"Listed {files} files under {shown}")
    return items


def _http_tree_download(
    url: str, local_filepath: Any, options: dict[str, Any], filters: tuple[Any, ...], progress: Any
) -> str:
    """`http_download` with ``recursive=True``: the tree's files as one batch."""
    if not isinstance(url, str):
        raise ValueError(f"url must be a string, not {url!r}")
    folder = _local_path(local_filepath, folder=True) or "."
    items = _http_tree_items(url, options, "", filters)
    results = download_many(items, folder, progress=progress, **options)
    from ._httputil import redact_url

    _raise_for_failures(redact_url(url), results)
    return folder


def _http_request(
    url: str,
    local_filepath: PathLike | None = None,
    cache: bool = True,
    timeout: float | None = None,
    session: Any = None,
    auth: Any = None,
    verbose: bool = False,
    *,
    resume: bool = True,
    retries: int = DEFAULT_RETRIES,
    checksum: str | None = None,
    headers: Mapping[str, str] | None = None,
    progress: Any = True,
    connections: int | None = None,
    ssl_context: Any = None,
    name_folder: str | None = None,
) -> tuple[FetchRequest, Transport]:
    """Check `http_download`'s arguments; the engine's request and the transport for it.

    ``name_folder``: without ``local_filepath``, the derived name goes in
    this folder rather than the current one (download_many's items).
    """
    from . import _exchange, _httputil

    url, from_url = _httputil.check_download_url(url)
    if auth is None and from_url is not None:
        auth = from_url  # user:password@ in the URL, as curl and requests take it
    seconds = _check_common(timeout, retries, connections)
    transport, basic = _http_transport(session, auth, ssl_context, url)
    path = _local_path(local_filepath)
    request = _exchange.FetchRequest(
        url=url,
        target=path or "",
        cache=bool(cache),
        resume=bool(resume),
        retries=retries,
        timeout=seconds,
        headers=_check_headers(headers),
        checksums=_parse_checksum(checksum),
        progress=progress,
        verbose=bool(verbose),
        auth=tuple(basic) if basic else None,
        connections=connections,
        user_agent=_version_agent(),
    )
    if path is None:
        name = _name_for_url(url, request, transport)
        if name_folder and name_folder != ".":
            name = os.path.join(name_folder, name)
        request.target = name
    return request, transport


# Options that only one kind of source takes: download() and download_many()
# accept both kinds in one call and hand each item only its own.
_S3_ONLY = frozenset(
    {
        "aws_profile",
        "bucket",
        "bucket_name",
        "endpoint_url",
        "region",
        "requester_pays",
    }
)
_HTTP_ONLY = frozenset({"auth", "headers"})
#: Options of the item, not of one source's download: the caller's order.
_ITEM_ONLY = frozenset({"prefer"})
_NOT_HTTP = _S3_ONLY | _ITEM_ONLY


def _drop(kwargs: dict[str, Any], names: frozenset[str]) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if k not in names}


def _http_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The options of a mixed list that an http(s) item takes."""
    options = _drop(kwargs, _NOT_HTTP)
    if not callable(getattr(options.get("session"), "request", None)):
        options.pop("session", None)  # a boto3 session is for the s3 items
    return options


#: The environment variable that sets ``prefer=`` for every call that does not
#: pass it: ``cloud`` on a cloud VM next to the buckets, ``on-prem`` on an
#: HPC node whose site mirrors the archive.
PREFER_VARIABLE = "PYVO_DL_PREFER"


class DownloadedPath(str):
    """The path of a downloaded file (a ``str``), which also says where it came from.

    What `download` and `download_many` return for each file: the path
    written, as pyvo's functions return it (it compares, joins and opens as
    the plain string it is), plus the source that served it, which tells a
    list of equivalent sources apart after the fact.

    Parameters
    ----------
    path : str
        The local path.
    source : str
        The URL or ``s3://`` URI that served the file (or that found it
        already there, for a cache hit).

    Attributes
    ----------
    source : str
        As given, with a URL's password shown as ``***`` (SPEC §3.7).

    Examples
    --------
    >>> from pyvo_dl import DownloadedPath
    >>> path = DownloadedPath("x.fits", "s3://bucket/x.fits")
    >>> path == "x.fits", path.source
    (True, 's3://bucket/x.fits')
    """

    source: str

    def __new__(cls, path: str, source: str) -> DownloadedPath:
        """Make the path string and attach its source (its password hidden)."""
        self = super().__new__(cls, path)
        if "@" in source:  # the only URLs redact_url changes: import it for those only
            from ._httputil import redact_url

            source = redact_url(source)
        self.source = source
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        # Results cross process boundaries in download_many(executor=...).
        return (type(self), (str(self), self.source))


def resolve_prefer(prefer: Any) -> str | None:
    """``prefer=`` as given, else the environment variable's value, checked."""
    from . import _items

    if prefer is not None:
        return _items.parse_prefer(prefer)
    return _items.parse_prefer(os.environ.get(PREFER_VARIABLE), f"${PREFER_VARIABLE}")


def download(
    source: str | list[str],
    local_filepath: PathLike | None = None,
    *,
    prefer: str | None = None,
    **kwargs: Any,
) -> str:
    """Download an ``http(s)://`` URL or an ``s3://`` URI, or the first of several that works.

    Parameters
    ----------
    source : str or list of str
        The URL or URI; or a list of equivalent sources of one file (an
        archive's HTTPS copy and its S3 copy), tried in order. A source
        that fails in a way another copy may not (a network fault once its
        retries are spent, an HTTP error status, an `~pyvo_dl.S3Error`, an
        `~pyvo_dl.IntegrityError`, a missing botocore) hands over to the
        next; an argument error or a local disk error ends the call. A
        ``.part`` left by one source is never continued from another:
        the next source starts the file from byte 0.
    local_filepath : str or os.PathLike, optional
        Where to write the file (see `http_download` and `aws_download`);
        for several sources, by default the first file name among theirs
        (an S3 key's last part, a URL's path or query value), in the
        current folder.
    prefer : {"cloud", "on-prem"}, optional
        Try the ``s3://`` sources first (``"cloud"``) or last
        (``"on-prem"``), each kind in the given order. Default: the
        ``PYVO_DL_PREFER`` environment variable, else the given order.
    **kwargs
        Passed on to `http_download` or `aws_download`; options that only
        the other one takes (``aws_profile``, ``endpoint_url``, ``auth``,
        ``headers``, ...) are left out, so one set serves mixed lists.

    Returns
    -------
    local_filepath : DownloadedPath
        The path of the downloaded file (a ``str``); its ``.source`` is the
        source that served it. ``verbose=True`` also prints it.

    Raises
    ------
    ValueError
        For a source that is not an http(s) URL or s3:// URI, or a bad
        argument.
    pyvo_dl.AllSourcesFailedError
        When every one of several sources failed; the message names each
        source and why, ``.failures`` holds ``(source, exception)`` pairs.
    pyvo_dl.DownloadError
        As `http_download` and `aws_download` raise, for one source.
    """
    try:
        order = resolve_prefer(prefer)
        if isinstance(source, (list, tuple)):
            from . import _items

            sources = _items.parse_sources(source, "source")
            return download_sources(sources, local_filepath, order, kwargs, _download_one)
        return DownloadedPath(_download_one(source, local_filepath, kwargs), source)
    except BaseException as exc:
        _hide_passwords(exc)
        raise


def _download_one(source: str, local_filepath: Any, kwargs: dict[str, Any]) -> str:
    """`download` of one source, choosing by the scheme."""
    if not isinstance(source, str):
        raise _hide_passwords(
            ValueError(f"source must be a URL or s3:// URI string, not {source!r}")
        )
    scheme = source.split(":", 1)[0].lower() if ":" in source else ""
    if scheme == "s3":
        kwargs = _drop(kwargs, _HTTP_ONLY | _ITEM_ONLY)
        if not callable(getattr(kwargs.get("session"), "get_credentials", None)):
            kwargs.pop("session", None)  # a requests session is for the http items
        return aws_download(uri=source, local_filepath=local_filepath, **kwargs)
    if scheme in ("http", "https"):
        return http_download(source, local_filepath, **_http_options(kwargs))
    raise _hide_passwords(
        ValueError(f"unsupported source {source!r}: expected an http(s):// URL or s3:// URI")
    )


def download_sources(
    sources: Any,
    local_filepath: Any,
    prefer: str | None,
    kwargs: dict[str, Any],
    one: Any,
) -> DownloadedPath:
    """Try the sources of one file in turn (SPEC §2.3); ``one(uri, path, kwargs)`` tries one.

    Every source is checked before the first is tried, and the target is
    fixed first, so that whichever source serves the file writes the same
    path. A ``.part`` left by a source that failed is never continued by
    the next: its state names the source it came from (its identity, the
    URL or ``s3://bucket/key``), and the engine starts over from byte 0 for
    a request of another identity.
    """
    from . import _exchange, _httputil, _items

    for source in sources:
        _check_source(source.uri)
    if local_filepath is None:
        local_filepath = _items.name_for_sources(sources)
        if not local_filepath:
            given = [_httputil.redact_url(s.uri) for s in sources]
            raise ValueError(f"cannot derive a file name from {given}; pass local_filepath=")
    ordered = _items.order_sources(sources, prefer)
    verbose = bool(kwargs.get("verbose"))
    failures: list[tuple[str, BaseException]] = []
    for number, source in enumerate(ordered, 1):
        shown = _httputil.redact_url(source.uri)
        options = kwargs
        if source.region is not None:
            # The table's region for its bucket: more precise than a call's region=.
            options = dict(kwargs, region=source.region)
        try:
            path = one(source.uri, local_filepath, options)
        except Exception as exc:
            if not _another_copy_may_work(exc):
                raise
            failures.append((shown, exc))
            if number < len(ordered):
                following = _httputil.redact_url(ordered[number].uri)
                _exchange.log_and_print(
                    verbose,
                    f"{shown} failed ({' '.join(str(exc).split())}); trying source "
                    f"{number + 1} of {len(ordered)}: {following}",
                )
            continue
        if len(ordered) > 1:
            _exchange.log_and_print(
                verbose, f"{path}: served by {shown} (source {number} of {len(ordered)})"
            )
        return DownloadedPath(path, source.uri)
    if len(failures) == 1:
        raise failures[0][1]  # one source: its own error, as for a plain string
    from ._errors import AllSourcesFailedError

    raise AllSourcesFailedError(os.fspath(local_filepath), failures) from failures[-1][1]


def _check_source(uri: str) -> None:
    """Refuse, before any request, a source that no download function takes."""
    if not isinstance(uri, str):
        raise ValueError(f"source must be a URL or s3:// URI string, not {uri!r}")
    from . import _httputil, _items, _s3url

    if _items.is_s3(uri):
        location = _s3url.parse_s3_uri(uri)
        if not location.key:
            raise ValueError(f"no key given in {uri!r}: name the object to download")
        return
    if uri[:8].lower().startswith(("http://", "https://")):
        _httputil.check_url(uri)
        return
    raise ValueError(f"unsupported source {uri!r}: expected an http(s):// URL or s3:// URI")


def _another_copy_may_work(error: BaseException) -> bool:
    """Whether another source of the same file may succeed where this one failed.

    Yes for what is the source's own trouble: its server's answers (HTTP
    errors, S3 errors), its bytes (an integrity mismatch), its network
    (faults left after the retries), its access (credentials, a missing
    botocore for signing). No for what every source would meet again: a
    bad argument (``ValueError``) or the local disk (a ``DownloadError``
    with an ``errno``).
    """
    from ._errors import DownloadError, MissingDependencyError

    if isinstance(error, MissingDependencyError):
        return True
    return isinstance(error, DownloadError) and error.errno is None


def _s3_location(uri: Any, bucket: Any, key: Any, recursive: bool = False) -> tuple[str, str]:
    """The bucket and key from ``uri`` or from ``bucket``/``key`` (SPEC §2.2)."""
    from . import _s3url

    if uri is not None:
        if not isinstance(uri, str):
            raise ValueError(f"uri must be an s3:// URI string, not {uri!r}")
        location = _s3url.parse_s3_uri(uri)
        bucket, key = location.bucket, location.key
    elif bucket is None or (key is None and not recursive):
        raise ValueError(
            "aws_download needs uri='s3://bucket/key', or both bucket_name= (or bucket=) and key="
        )
    if key is None:
        key = ""
    if not isinstance(bucket, str) or not isinstance(key, str):
        raise ValueError(f"bucket and key must be strings, not {bucket!r} and {key!r}")
    _s3url.check_bucket_name(bucket)
    if not key and not recursive:
        named = repr(uri) if uri is not None else f"bucket_name={bucket!r} with no key"
        raise ValueError(
            f"{named} names a bucket but no object: give its key "
            f"('s3://{bucket}/KEY'), or recursive=True for everything in it"
        )
    return bucket, key


def aws_download(
    uri: str | None = None,
    bucket_name: str | None = None,
    key: str | None = None,
    local_filepath: PathLike | None = None,
    cache: bool = False,
    timeout: float | None = None,
    aws_profile: str | None = None,
    session: Any = None,
    verbose: bool = False,
    *,
    bucket: str | None = None,
    endpoint_url: str | None = None,
    region: str | None = None,
    requester_pays: bool = False,
    resume: bool = True,
    retries: int = DEFAULT_RETRIES,
    checksum: str | None = None,
    progress: Any = True,
    connections: int | None = None,
    recursive: bool = False,
    ssl_context: Any = None,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    max_depth: int | None = None,
) -> str:
    """Download an object from Amazon S3 (or an S3-compatible server).

    A drop-in for pyvo's ``aws_download``. Public objects are read with
    plain unsigned HTTPS GETs, with no dependency; with ``aws_profile=`` or
    ``session=`` the requests are signed (SigV4) by botocore, the optional
    extra ``pyvo-dl[s3]``. If anonymous access is refused and botocore finds
    credentials on this machine, the request is retried signed, as pyvo does.

    Parameters
    ----------
    uri : str, optional
        ``s3://bucket-name/key``. If given, ``bucket_name`` and ``key`` are
        ignored; everything after the bucket is the key (``?`` and ``#``
        included).
    bucket_name : str, optional
        The bucket (``bucket=`` is an alias), with ``key``.
    key : str, optional
        The object's key in the bucket.
    local_filepath : str or os.PathLike, optional
        Where to write the file; by default the key's last part, in the
        current folder.
    cache : bool, optional
        If True and the file exists with the object's size, return it
        without downloading (default False, as in pyvo).
    timeout : float, optional
        Seconds without progress before a try is abandoned, at most a week;
        None means 60 s.
    aws_profile : str, optional
        A profile in ``~/.aws/config`` / ``~/.aws/credentials`` to sign with.
    session : boto3.session.Session or botocore.session.Session, optional
        A session whose credentials sign the requests (wins over
        ``aws_profile``).
    verbose : bool, optional
        If True, print the bucket, key, access mode and what was decided.
    bucket : str, optional
        Alias of ``bucket_name``.
    endpoint_url : str, optional
        An S3-compatible server (path-style addressing); default from
        ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``, else AWS.
    region : str, optional
        The bucket's region; default from ``AWS_REGION`` /
        ``AWS_DEFAULT_REGION`` or the profile, else discovered.
    requester_pays : bool, optional
        Accept the charges of a requester-pays bucket.
    resume, retries, checksum, progress
        As for `http_download`.
    connections : int, optional
        Parallel ranged GETs for one large object, 1 to 64 (default: 16,
        in parts of at least 4 MiB: an object under 64 MiB uses fewer, one
        under 8 MiB one).
    recursive : bool, optional
        Treat the key as a prefix (``s3://bucket/prefix/``): list it and
        download every object under it into ``local_filepath`` (a folder,
        default the current one), keeping the relative layout. Returns the
        folder; raises `~pyvo_dl.DownloadError` naming the failures after
        trying every object.
    ssl_context : ssl.SSLContext, optional
        TLS settings for the S3 endpoint (an S3-compatible server behind a
        private CA, for example); verified by default. botocore's own
        requests (STS, SSO) follow botocore's settings (``AWS_CA_BUNDLE``).
    include, exclude, max_depth
        With ``recursive``, as for `http_download`: globs on each key after
        the prefix, and how many ``/``-separated levels below it to keep.

    Returns
    -------
    local_filepath : str
        The path of the downloaded file (the folder, with ``recursive``).

    Raises
    ------
    ValueError
        For a malformed URI, an invalid bucket name or missing arguments.
    pyvo_dl.S3Error
        When S3 refuses (``.code`` is ``NoSuchKey``, ``NoSuchBucket``,
        ``AccessDenied``, ...).
    pyvo_dl.MissingDependencyError
        When signing is needed and botocore is not installed.
    pyvo_dl.DownloadError
        For any other failure.
    """
    try:
        if bucket_name is None:
            bucket_name = bucket
        elif bucket is not None and bucket != bucket_name:
            raise ValueError(f"bucket_name={bucket_name!r} and bucket={bucket!r} disagree")
        bucket_name, key = _s3_location(uri, bucket_name, key, recursive)
        seconds = _check_common(timeout, retries, connections)
        filters = _tree_filters(recursive, include, exclude, max_depth)
        path = _local_path(local_filepath, folder=recursive)
        with _AwsScope() as aws:
            return _aws_download(
                aws.context(), bucket_name, key, path, cache, seconds, aws_profile, session,
                verbose, endpoint_url=endpoint_url, region=region,
                requester_pays=requester_pays, resume=resume, retries=retries,
                checksum=checksum, progress=progress, connections=connections,
                recursive=recursive, timeout_given=timeout, ssl_context=ssl_context,
                filters=filters,
            )  # fmt: skip
    except BaseException as exc:
        _hide_passwords(exc)
        raise


def _aws_download(
    context: Any,
    bucket_name: str,
    key: str,
    path: str | None,
    cache: bool,
    seconds: float,
    aws_profile: str | None,
    session: Any,
    verbose: bool,
    *,
    endpoint_url: str | None,
    region: str | None,
    requester_pays: bool,
    resume: bool,
    retries: int,
    checksum: str | None,
    progress: Any,
    connections: int | None,
    recursive: bool,
    timeout_given: float | None,
    ssl_context: Any = None,
    filters: tuple[Any, ...] = ((), (), None),
) -> str:
    """`aws_download` once its arguments are checked, within the call's AWS context."""
    from . import _names, _s3

    target, access = _s3_target(bucket_name, key, endpoint_url, region, aws_profile, session,
                                requester_pays, context)  # fmt: skip
    options = {
        "cache": bool(cache),
        "resume": bool(resume),
        "retries": retries,
        "timeout": seconds,
        "checksums": _parse_checksum(checksum),
        "progress": progress,
        "verbose": bool(verbose),
        "connections": connections,
        "user_agent": _version_agent(),
    }
    if recursive:
        folder = path or "."
        items = _s3_prefix_items(target, access, options, "", ssl_context, filters)
        kwargs = {
            "cache": cache, "timeout": timeout_given, "aws_profile": aws_profile,
            "session": session,
            "verbose": verbose, "endpoint_url": endpoint_url, "region": target.region,
            "requester_pays": requester_pays, "resume": resume, "retries": retries,
            "connections": connections, "ssl_context": ssl_context,
        }  # fmt: skip
        results = download_many(items, folder, progress=progress, **kwargs)
        _raise_for_failures(f"s3://{bucket_name}/{key}", results)
        return folder
    if path is None:
        path = _names.filename_from_s3_key(key)
        if not path:
            raise ValueError(
                f"cannot derive a file name from 's3://{bucket_name}/{key}' (a prefix?): "
                "pass local_filepath=, or recursive=True to download everything under it"
            )
    transport = _stdlib_transport(ssl_context)
    return _s3.fetch_object(target, access, path, options, transport, context)


def _s3_target(
    bucket: str,
    key: str,
    endpoint_url: str | None,
    region: str | None,
    aws_profile: str | None,
    session: Any,
    requester_pays: bool,
    context: Any,
) -> tuple[Any, Any]:
    """Where the object is and the access mode, with the region settled (SPEC §2.2)."""
    from . import _s3, _s3url, _signing

    profile = aws_profile or (_signing.session_profile(session) if session is not None else None)
    # The shared files only when they can matter: both given, neither can.
    config = context.config() if not (endpoint_url and region) else None
    endpoint = _s3url.choose_endpoint(region, endpoint_url, context.env, config, profile)
    access = context.access(aws_profile, session, endpoint.region or "us-east-1")
    if endpoint.region is None and access.signer is not None:
        session_region = _signing.session_region(access.signer.session)
        if session_region:
            endpoint = endpoint.with_region(session_region)
            access = access.for_region(session_region)
    return _s3.S3Target(bucket, key, endpoint, bool(requester_pays)), access


def _s3_prefix_items(
    target: Any,
    access: Any,
    options: dict[str, Any],
    folder: str = "",
    ssl_context: Any = None,
    filters: tuple[Any, ...] = ((), (), None),
) -> list[tuple[str, Any]]:
    """``(s3 URI, relative local path)`` for every object under the prefix.

    The path is the key after the prefix, under the relative ``folder``; a
    key that would land outside it (``..``, absolute) becomes an item whose
    local path is the ``ValueError`` saying so. ``filters`` (``include``,
    ``exclude``, ``max_depth``) keep some keys only, judged on the key after
    the prefix, as for an HTTP tree.
    """
    from . import _exchange, _listing, _names, _s3

    include, exclude, max_depth = filters

    prefix = target.key
    if prefix and not prefix.endswith("/"):
        prefix += "/"  # s3://b/data means the folder data/, not data-old/ too
        target.key = prefix
    items: list[tuple[str, Any]] = []
    listing = _s3.list_prefix(target, access, options, _stdlib_transport(ssl_context))
    for key, _size in listing:
        if key.endswith("/"):
            continue  # a folder marker, not a file
        relative = key[len(prefix) :]
        if max_depth is not None and _listing.depth_of(relative) > max_depth:
            continue
        if not _listing.keep_path(relative, include, exclude):
            continue
        try:
            local: Any = _names.safe_join(folder or ".", relative)
        except ValueError as exc:
            local = exc
        items.append((f"s3://{target.bucket}/{key}", local))
    _exchange.log_and_print(
        bool(options.get("verbose")),
        f"Listed {len(items)} objects under s3://{target.bucket}/{prefix}",
    )
    return items


def _raise_for_failures(source: str, results: list[Any]) -> None:
    from ._errors import DownloadError

    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        raise DownloadError(
            f"{len(failures)} of {len(results)} files under {source} failed; "
            f"the first: {failures[0]}"
        ) from failures[0]


def download_many(
    items: Iterable[Any],
    dest_dir: PathLike = ".",
    *,
    workers: int = 8,
    max_per_host: int | None = None,
    executor: Any = None,
    progress: Any = True,
    **kwargs: Any,
) -> list[Any]:
    """Download many URLs and ``s3://`` URIs concurrently.

    Parameters
    ----------
    items : iterable
        One entry per file, each of these:

        - a URL or ``s3://`` URI;
        - a list of equivalent sources of one file (an archive's HTTPS copy
          and its S3 copy), tried in order as `download` tries them;
        - a ``(source, local_path)`` pair, ``source`` a URL, a URI or such
          a list; a relative ``local_path`` is under ``dest_dir``;
        - a mapping ``{"source": str or list, "local_filepath": path,
          "checksum": "alg:hex"}`` (the last two optional; any other key is
          that item's ``ValueError``), as a manifest gives them: a file
          that does not match its checksum is that item's
          `~pyvo_dl.IntegrityError`;
        - a row of a query result: a pyvo ``Record`` (its
          ``getdataurl()``), an astropy ``Row`` or any mapping with an
          ``access_url`` column (whatever its other columns: a catalogue's
          ``source`` column does not make it a manifest entry); its
          ``cloud_access`` JSON
          (``{"aws": {"bucket_name": ..., "key": ..., "region": ...}}`` or
          a list of those) and its ``aws`` column (an ``s3://`` URI) are
          further sources of the same file, the region used for the
          bucket. A whole table (an astropy ``Table``, pyvo's results) is
          an iterable of rows.

        Without a local path, the name comes from the URL or key (the
        first name with a ``.`` among several sources). An item that
        cannot be downloaded, whatever its type, is its own error result.
    dest_dir : str or os.PathLike, optional
        The folder for the files (default: the current folder).
    workers : int, optional
        Downloads running at once, 1 to 256 (default 8), on download_many's
        threads.
    max_per_host : int, optional
        Downloads running at once against one host (default: ``workers``).
    executor : concurrent.futures.Executor, optional
        Runs the items instead of an internal thread pool: a
        ``ProcessPoolExecutor``, ``dask.distributed.Client.get_executor()``,
        or ``mpi4py.futures.MPIPoolExecutor``. The executor's size decides
        how many run at once: ``workers`` and ``max_per_host`` other than
        their defaults are a ``ValueError`` with it. Targets are made
        absolute before they are sent (a worker's folder is not the
        caller's); the keyword arguments must pickle (a boto3 session does
        not: pass ``aws_profile=``), which is checked before any item is
        sent, except for a ``ThreadPoolExecutor``.
    progress : bool or callable, optional
        True: one aggregate display (files done/total, bytes, rate); False:
        silent; a callable gets ``(files_done, files_total)``.
    **kwargs
        Passed to `http_download` / `aws_download` for every item
        (``cache``, ``timeout``, ``retries``, ``endpoint_url``, ...), and
        ``prefer=`` as `download` takes it (checked before any request;
        default ``$PYVO_DL_PREFER``). A row's own region wins over
        ``region=`` for its bucket's objects. With
        ``recursive=True``, each ``s3://bucket/prefix/`` item and each
        ``http(s)://…/`` item (a web server's folder, walked through its
        listing pages as `http_download` does) is replaced by the files
        under it, their layout kept under ``dest_dir`` (or under the folder
        of a ``(source, folder)`` pair); ``include=``, ``exclude=`` and
        ``max_depth=`` filter them as for `http_download`.

    Returns
    -------
    list
        One entry per item (per object found, for prefixes), in order: the
        path written (a `DownloadedPath`, whose ``.source`` is the source
        that served it), or the exception that item ended with (an
        `~pyvo_dl.AllSourcesFailedError` when each of its sources failed).
        It never stops at the first failure.

    Raises
    ------
    TypeError
        When ``items`` is one item rather than an iterable of them: a
        string, bytes or path (``download_many("https://...")`` would
        otherwise iterate its characters), one mapping or one table row;
        use ``download_many([url])`` or `download`.
    ValueError
        For a bad ``workers``, ``max_per_host``, ``prefer`` or keyword
        argument.
    KeyboardInterrupt, SystemExit
        Ctrl-C, or SIGTERM (exit status 143), saying what was interrupted.

    Notes
    -----
    The proxy variables and ``~/.netrc`` are read once per call (per host
    for ``.netrc``), not once per item; so are AWS credentials, per profile
    or session (with an executor: once per worker process).

    On Ctrl-C, and on SIGTERM where the program has no handler of its own
    (a batch scheduler's time limit), nothing new starts and each download
    under way stops at its next chunk, its ``.part`` kept for the next call
    and its lock released (within 10 s; one stuck in a silent read is left
    to its timeout); with an executor, the items not begun are cancelled.
    Then ``KeyboardInterrupt``, or ``SystemExit(143)`` after one line on
    stderr, tells what was stopped.
    """
    pairs = run_batch(
        items, dest_dir, workers=workers, max_per_host=max_per_host, executor=executor,
        progress=progress, **kwargs,
    )  # fmt: skip
    return [result for _, result in pairs]


def run_batch(
    items: Iterable[Any],
    dest_dir: PathLike = ".",
    *,
    workers: int = 8,
    max_per_host: int | None = None,
    executor: Any = None,
    progress: Any = True,
    shard: tuple[int, int] | None = None,
    **kwargs: Any,
) -> list[tuple[str, Any]]:
    """`download_many` for the command line: ``(source, result)`` pairs, and ``shard=``.

    Prefixes are expanded first (``recursive=True``), then ``shard=(I, N)``
    keeps items I, I+N, ... of the whole list, so that N processes given
    the same arguments cover it exactly once. Each result comes with its
    source (an object's own ``s3://`` URI for an expanded prefix).
    """
    from . import _many

    try:
        _check_items(items)
        kwargs["prefer"] = resolve_prefer(kwargs.get("prefer"))  # a bad value: before any request
        recursive = kwargs.pop("recursive", False)
        filters = _tree_filters(
            recursive, kwargs.pop("include", None), kwargs.pop("exclude", None),
            kwargs.pop("max_depth", None),
        )  # fmt: skip
        batch = _BatchDownload(getattr(_batch(), "aws", None))
        if recursive:
            items = _expand_trees(items, kwargs, batch.aws_context, filters)
        pairs = _many.download_many(
            _ExecutorDownload() if executor is not None else batch, items, dest_dir,
            workers=workers, max_per_host=max_per_host, executor=executor,
            progress=progress, shard=shard, **kwargs,
        )  # fmt: skip
    except BaseException as exc:
        _hide_passwords(exc)
        raise
    for _, result in pairs:
        if isinstance(result, BaseException):
            _hide_passwords(result)  # also those that came back from an executor
    return pairs


def _item_download(source: Any, local_filepath: Any = None, **kwargs: Any) -> str:
    """`download` for one planned item, in any process: a ``NameIn`` target is named here.

    ``source`` is a URL or URI, or a tuple of ``_items.Source`` (several
    sources, or an S3 copy with its region from a table row).
    """
    from . import _engine, _many

    if isinstance(local_filepath, _many.NameIn):
        request, transport = _http_request(
            source, None, name_folder=str(local_filepath), **_http_options(kwargs)
        )
        return DownloadedPath(_engine.fetch(request, transport), source)
    if not isinstance(source, str):
        prefer = kwargs.pop("prefer", None)
        return download_sources(source, local_filepath, prefer, kwargs, _download_one)
    return download(source, local_filepath, **kwargs)


def _check_items(items: Any) -> None:
    from . import _items

    if _items.is_one_item(items):
        kind = type(items).__name__
        raise TypeError(
            f"download_many takes an iterable of items, not one {kind}: {_items.shown(items)}; "
            f"pass a list ([{_items.shown(items)}]), or use download() for one file"
        )


class _AwsHolder:
    """The ``_s3.AwsContext`` of one call or run, made at its first S3 need.

    A command-line run or a download_many call over plain URLs never
    imports the S3 modules.
    """

    def __init__(self, context: Any = None) -> None:
        self._context = context

    def context(self) -> Any:
        """The context (credentials, shared files, default chain), made on first use."""
        if self._context is None:
            from . import _s3

            with _s3.CONTEXT_LOCK:
                if self._context is None:
                    self._context = _s3.AwsContext()
        return self._context


class _AwsScope:
    """Within the block, S3 calls in this thread share one AWS context.

    The holder already active in the thread (a command-line run, a
    recursive download, a download_many item), else ``holder``, else a new
    one; the one active before is restored at the end.
    """

    def __init__(self, holder: _AwsHolder | None = None) -> None:
        self._holder = holder
        self._saved: _AwsHolder | None = None

    def __enter__(self) -> _AwsHolder:
        self._saved = getattr(_batch(), "aws", None)
        holder = self._saved or self._holder or _AwsHolder()
        _batch().aws = holder
        return holder

    def __exit__(self, *exc_info: object) -> None:
        _batch().aws = self._saved


class _BatchDownload:
    """`download` for the threads of one download_many call.

    One transport per TLS context, one ``.netrc`` look-up per host, and
    one AWS context (credentials looked up once per profile or session,
    the default chain probed once) for all the items.
    """

    def __init__(self, aws: _AwsHolder | None = None) -> None:
        from . import _engine, _many

        self._transports: dict[int, Any] = {}
        self._netrc: dict[str, Any] = {}
        self._aws = aws or _AwsHolder()
        self._fetch = _engine.fetch
        self._name_in = _many.NameIn
        #: The call's plain http(s) items' shared request, once one has run.
        self._http: _HttpItems | None = None

    def aws_context(self) -> Any:
        """The call's AWS context, made at its first S3 item."""
        return self._aws.context()

    def __call__(self, source: Any, local_filepath: PathLike | None = None, **kwargs: Any) -> str:
        if isinstance(source, str):
            return self._one(source, local_filepath, kwargs)
        prefer = kwargs.pop("prefer", None)
        return download_sources(source, local_filepath, prefer, kwargs, self._one)

    def _one(self, source: str, local_filepath: Any, kwargs: dict[str, Any]) -> str:
        """One source of an item, on the call's transports and AWS context."""
        plain = (
            local_filepath is not None
            and not isinstance(local_filepath, self._name_in)
            and source[:6].lower() in ("http:/", "https:")
        )
        shared = self._http
        if plain and shared is not None:
            request = shared.request_for(source, local_filepath, kwargs)
            if request is not None:
                return DownloadedPath(self._fetch(request, shared.transport), source)
        _batch().transports = self._transports
        try:
            if not plain:
                with _AwsScope(self._aws):
                    return _item_download(source, local_filepath, **kwargs)
            # The engine as for one call, with the call's .netrc answers.
            request, transport = _http_request(source, local_filepath, **_http_options(kwargs))
            request.netrc_cache = self._netrc
            if _HttpItems.can_share(source, transport):
                self._http = _HttpItems(kwargs, request, transport)
            return DownloadedPath(self._fetch(request, transport), source)
        finally:
            _batch().transports = None


#: What one item of a download_many call has of its own among the options
#: passed to its download: the call's other options are those of every item.
_PER_ITEM = frozenset({"progress", "checksum", "prefer", "region"})
_ABSENT = object()


class _HttpItems:
    """The request every plain http(s) item of one download_many call starts from.

    The call's options (timeout, retries, headers, auth, TLS, ...) are the
    same for each of its items: checked once, at the first item (by
    `_http_request`, as for any call), and then copied into each item's
    request with its own URL, path, progress sink and checksum. Checking
    them again costs more than a small file's download.

    Parameters
    ----------
    kwargs : dict
        The first item's options, as the batch passed them.
    request : FetchRequest
        The first item's request, made from them.
    transport : Transport
        Its transport: the call's built-in one (a session's is made per origin).
    """

    def __init__(self, kwargs: dict[str, Any], request: FetchRequest, transport: Transport) -> None:
        from . import _httputil, _items

        # Once here, not per item: a function's import statement costs as
        # much as the checks it imports for.
        self._check_url = _httputil.check_download_url
        self._check_path = _items.check_target_path
        self.shared = {k: v for k, v in kwargs.items() if k not in _PER_ITEM}
        self.request = request.for_item(request.url, request.target, request.progress, [])
        self.transport = transport

    @staticmethod
    def can_share(source: str, transport: Transport) -> bool:
        """Whether the other items' requests may copy the request of ``source``.

        Not with a session's transport (one per origin), nor with
        credentials from the URL (``user:password@``).
        """
        from ._transport import SessionTransport

        return "@" not in source and not isinstance(transport, SessionTransport)

    def request_for(
        self, url: str, local_filepath: Any, kwargs: dict[str, Any]
    ) -> FetchRequest | None:
        """The request of one item with these options; None when it needs one of its own.

        Its URL and path are checked here, as `_http_request` checks them;
        the other options must be the very objects the first item had.
        """
        shared = self.shared
        count = 0
        for name, value in kwargs.items():
            if name in _PER_ITEM:
                continue
            if shared.get(name, _ABSENT) is not value:
                return None
            count += 1
        if count != len(shared):
            return None
        url, from_url = self._check_url(url)
        if from_url is not None:
            return None  # its own credentials: its own request
        path = self._check_path(local_filepath)
        checksums = _parse_checksum(kwargs.get("checksum"))
        return self.request.for_item(url, path or "", kwargs.get("progress", True), checksums)


def _has_s3(source: Any) -> bool:
    """Whether a planned source (a URL, or a tuple of sources) names S3."""
    if isinstance(source, str):
        return source[:5].lower() == "s3://"
    return any(part.uri[:5].lower() == "s3://" for part in source)


class _ExecutorDownload:
    """`download` for the items of one download_many call on an executor.

    Pickled to the executor's workers; there, the items of one call share
    one AWS context per process (``_s3.context_for_call``), so credentials
    are looked up once per worker process, not once per item.
    """

    def __init__(self) -> None:
        self.call = os.urandom(8).hex()

    def __call__(self, source: Any, local_filepath: PathLike | None = None, **kwargs: Any) -> str:
        if not _has_s3(source):
            return _item_download(source, local_filepath, **kwargs)
        from . import _s3

        with _AwsScope(_AwsHolder(_s3.context_for_call(self.call))):
            return _item_download(source, local_filepath, **kwargs)


def _tree_item(item: Any, index: int) -> tuple[str, str] | None:
    """``(source, folder)`` when ``item`` may name a tree: a plain source or a pair."""
    from . import _items

    if isinstance(item, str):
        return item, ""
    if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str)):
        return None
    if _items.looks_like_source(item[1]):
        return None  # two equivalent sources of one file
    parsed = _items.parse_item(item, index)
    if parsed.error is not None:
        return None  # the planner reports it
    return item[0], parsed.local or ""


def _expand_trees(
    items: Iterable[Any], kwargs: dict[str, Any], aws_context: Any, filters: tuple[Any, ...]
) -> list[Any]:
    """Replace each ``s3://bucket/prefix/`` and ``http(s)://…/`` item by the files under it.

    Only a plain URI or URL or a ``(source, folder)`` pair names a tree
    (it lands under that folder); a mapping, a table row or a list of
    sources names one file, and so does an http(s) URL not ending in
    ``/``. A listing that fails becomes one item whose result is its error;
    a malformed item is left for the planner, whose error it gets.
    """
    from . import _items

    expanded: list[Any] = []
    for index, item in enumerate(items):
        tree = _tree_item(item, index)
        if tree is None:
            expanded.append(item)
            continue
        source, folder = tree
        try:
            if _items.is_s3(source):
                expanded.extend(_s3_tree_items(source, folder, kwargs, aws_context(), filters))
            elif source.endswith("/"):
                expanded.extend(_http_tree_items(source, kwargs, folder, filters))
            else:
                expanded.append(item)
        except (ValueError, OSError, ImportError) as exc:
            expanded.append((source, exc))
    return expanded


def _s3_tree_items(
    source: str, folder: str, kwargs: dict[str, Any], context: Any, filters: tuple[Any, ...]
) -> list[tuple[str, Any]]:
    """The objects under one ``s3://`` prefix of a download_many call."""
    bucket, key = _s3_location(source, None, None, recursive=True)
    target, access = _s3_target(
        bucket, key, kwargs.get("endpoint_url"), kwargs.get("region"),
        kwargs.get("aws_profile"), kwargs.get("session"),
        bool(kwargs.get("requester_pays")), context,
    )  # fmt: skip
    options = {
        "retries": kwargs.get("retries", DEFAULT_RETRIES),
        "timeout": _check_common(kwargs.get("timeout"), kwargs.get("retries", 0), None),
        "verbose": bool(kwargs.get("verbose")),
        "user_agent": _version_agent(),
    }
    return _s3_prefix_items(target, access, options, folder, kwargs.get("ssl_context"), filters)

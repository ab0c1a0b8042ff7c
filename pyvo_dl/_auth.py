"""Credentials from ``.netrc`` and the Basic ``Authorization`` header (SPEC §2.1).

Without ``auth=``, a download uses the credentials that ``$NETRC`` (else
``~/.netrc``, and ``~/_netrc`` on Windows) holds for the server's host, as
curl ``-n`` and requests do; the ``default`` entry is the fallback. The
engine asks again after a redirect to another host (§3.4).

A ``.netrc`` that cannot be read or parsed never fails a download: it counts
as "no credentials" and a warning goes to the package logger. Parsed files
are cached by path, modification time and size, so ``download_many`` over
thousands of files reads each file once.
"""

from __future__ import annotations

import os

from ._httputil import basic_auth_header

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["basic_auth_header", "netrc_credentials"]

# path -> ((st_mtime_ns, st_size), hosts or None for a bad file), where hosts
# maps a machine name to (login, account, password) as netrc.netrc().hosts.
# One entry per path, replaced when the file changes. Threads may race to
# fill it; both parse the same file and either result is right.
_CACHE: dict[str, tuple[tuple[int, int], dict[str, tuple[str, str | None, str | None]] | None]] = {}


def _host_only(host: str) -> str:
    """``host[:port]`` or ``[v6]:port`` -> the bare, lower-case host name."""
    if host.startswith("["):
        return host[1:].partition("]")[0].lower()
    if host.count(":") == 1:
        host = host.partition(":")[0]
    return host.lower()


def _netrc_path(env: Mapping[str, str], home: str | None, os_name: str = os.name) -> str | None:
    """The netrc file to read: ``$NETRC``, else the first that exists in home."""
    explicit = env.get("NETRC")
    if explicit:
        return os.path.expanduser(explicit)
    if home is None:
        home = os.path.expanduser("~")
    # curl on Windows reads .netrc, then _netrc (the traditional name there).
    names = (".netrc", "_netrc") if os_name == "nt" else (".netrc",)
    for name in names:
        path = os.path.join(home, name)
        if os.path.isfile(path):
            return path
    return None


def _warn(message: str, *args: object) -> None:
    import logging  # noqa: PLC0415 - at first use only: import pyvo_dl stays cheap

    logging.getLogger(__package__ or "pyvo_dl").warning(message, *args)


def _parse(path: str) -> dict[str, tuple[str, str | None, str | None]] | None:
    import netrc  # noqa: PLC0415 - shlex with it on 3.8-3.10; needed only with a file

    try:
        # The path is always passed explicitly, as requests does: the
        # stdlib then skips its owner/permission check, which applies only
        # to netrc() without argument and differs between Python versions
        # (3.8-3.10 refuse any group/world-readable file with a password).
        return dict(netrc.netrc(path).hosts)
    except (netrc.NetrcParseError, OSError, ValueError) as e:
        # ValueError covers UnicodeDecodeError (3.8/3.9 read with the
        # locale's encoding) and shlex's "No closing quotation".
        _warn("ignoring the netrc file %s, which cannot be used: %s", path, e)
        return None


def _hosts_of(path: str) -> dict[str, tuple[str, str | None, str | None]] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    key = (st.st_mtime_ns, st.st_size)
    cached = _CACHE.get(path)
    if cached is not None and cached[0] == key:
        return cached[1]
    hosts = _parse(path)
    _CACHE[path] = (key, hosts)
    return hosts


def _lookup(
    hosts: dict[str, tuple[str, str | None, str | None]], host: str
) -> tuple[str, str | None, str | None] | None:
    entry = hosts.get(host)
    if entry is None:
        # Host names are case-insensitive; curl compares them so too.
        for name, value in hosts.items():
            if name.lower() == host and name != "default":
                return value
        entry = hosts.get("default")
    return entry


def netrc_credentials(
    host: str,
    env: Mapping[str, str] | None = None,
    home: str | None = None,
) -> tuple[str, str] | None:
    """Return the ``(login, password)`` that the netrc file holds for a host.

    Parameters
    ----------
    host : str
        The server's host, with or without ``:port`` (``[v6]:port`` too);
        compared without the port and case-insensitively.
    env : mapping, optional
        The environment to read ``NETRC`` from; default ``os.environ``.
    home : str, optional
        The home folder holding ``.netrc`` (and ``_netrc`` on Windows);
        default ``~``.

    Returns
    -------
    tuple of (str, str) or None
        The entry for ``host``, else the ``default`` entry; a missing
        password is ``""``. ``None`` when there is no file, no matching
        entry, or the file cannot be read or parsed (then a warning is
        logged to the package logger, once per version of the file).

    Examples
    --------
    >>> netrc_credentials("example.org", env={"NETRC": "/nonexistent"}) is None
    True
    """
    if env is None:
        env = os.environ
    path = _netrc_path(env, home)
    if path is None:
        return None
    hosts = _hosts_of(path)
    if not hosts:
        return None
    entry = _lookup(hosts, _host_only(host))
    if entry is None:
        return None
    login, _account, password = entry
    if not login and not password:
        # 3.11+ accepts a bare "machine h" line; it gives nothing to send.
        return None
    return login or "", password or ""

"""What one item of ``download_many`` means: its sources, target and checksum (SPEC §2.3).

The caller may pass, per item: a URL or ``s3://`` URI; a list of equivalent
sources (an archive's HTTPS copy and its S3 copy); a ``(source,
local_path)`` pair; a manifest mapping ``{"source": str or list,
"local_filepath": ..., "checksum": "alg:hex"}``; or a row of a query
result: a pyvo ``Record`` (its ``getdataurl()``), an astropy ``Row`` or any
mapping with an ``access_url`` column, whose ``cloud_access`` JSON (pyvo's
cloud-access prototype, IRSA's services: ``{"aws": {"bucket_name", "key",
"region"}}`` or a list of those) and ``aws`` column (an ``s3://`` URI, as
HEASARC's ``locate_data`` gives) become further sources of the same file.

:func:`parse_item` turns any of these into one :data:`Item`, never
raising: an item that cannot be used carries the ``ValueError`` that says
why, and becomes that item's result. Duck typing only: neither astropy nor
pyvo is imported.

Pure functions: no IO, no environment (the preference is passed in).
"""

from __future__ import annotations

import collections
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final, Iterable, Sequence

__all__ = [
    "ITEM_KEYS",
    "PREFER_CHOICES",
    "Item",
    "Source",
    "check_local_path",
    "is_one_item",
    "is_s3",
    "looks_like_source",
    "name_for_sources",
    "order_sources",
    "parse_item",
    "parse_prefer",
    "parse_sources",
    "shown",
]

#: One source of a file: the URL or URI, and the S3 region where the
#: table said it (``None``: not known, or not S3).
Source = collections.namedtuple("Source", ["uri", "region"])

#: One item, ready to plan: ``sources`` (a tuple of :data:`Source`, in the
#: caller's order), ``local`` (the local path as given, or ``None``),
#: ``checksum`` (``"alg:hex"`` or ``None``), ``error`` (the ``ValueError``
#: this item ends with, or ``None``), ``label`` (what messages call it: its
#: first source, or the item's repr), ``notes`` (what was left out of a
#: table row and why, for ``verbose``).
Item = collections.namedtuple("Item", ["sources", "local", "checksum", "error", "label", "notes"])

#: The keys a manifest mapping may have (SPEC §2.3).
ITEM_KEYS: Final = ("source", "local_filepath", "checksum")
#: The columns of a table row that name sources.
_ROW_COLUMNS: Final = ("access_url", "cloud_access", "aws")
#: ``prefer=`` values, and what each puts first.
PREFER_CHOICES: Final = ("cloud", "on-prem")
_SCHEMES: Final = ("http://", "https://", "s3://")
_ITEM_FORMS: Final = (
    "a URL, an s3:// URI, a list of equivalent sources, a (source, local_path) pair, "
    "a mapping with 'source', or a table row with 'access_url'"
)


def is_s3(uri: str) -> bool:
    """Whether ``uri`` is an ``s3://`` URI (the scheme in any case).

    Examples
    --------
    >>> is_s3("S3://bucket/key"), is_s3("https://host/key")
    (True, False)
    """
    return uri[:5].lower() == "s3://"


def looks_like_source(value: object) -> bool:
    """Whether ``value`` is a string with a download scheme (http, https, s3).

    What tells a list of equivalent sources (``[url, s3_uri]``) from a
    ``(source, local_path)`` pair: a local path never starts with a scheme.

    Examples
    --------
    >>> looks_like_source("s3://b/k"), looks_like_source("out/k.fits")
    (True, False)
    """
    return isinstance(value, str) and value[:8].lower().startswith(_SCHEMES)


def is_one_item(items: object) -> bool:
    """Whether ``items``, given where an iterable of items is expected, is one item.

    A string, bytes or path (iterating it gives characters), a table row (a
    pyvo ``Record``, an astropy ``Row``: iterating gives its values) or a
    mapping (iterating gives its keys). A table (astropy ``Table``, which
    has ``keys()`` too, or pyvo's results) is an iterable of rows.

    Examples
    --------
    >>> is_one_item("https://h/x.fits"), is_one_item({"source": "s3://b/k"})
    (True, True)
    >>> is_one_item(["https://h/x.fits"])
    False
    """
    if isinstance(items, (str, bytes, os.PathLike)):
        return True
    if callable(getattr(items, "getdataurl", None)):
        return True  # a pyvo Record
    if hasattr(items, "table") and hasattr(items, "colnames"):
        return True  # an astropy Row
    return callable(getattr(items, "keys", None)) and not hasattr(items, "columns")


# -- preference ----------------------------------------------------------------------


def parse_prefer(value: object, where: str = "prefer") -> str | None:
    """Check a ``prefer=`` value (or the environment variable's): ``"cloud"``, ``"on-prem"``.

    Parameters
    ----------
    value : object
        As given; ``None`` or an empty string means no preference.
    where : str
        What to call the setting in the error (``prefer`` or the variable).

    Returns
    -------
    str or None
        ``"cloud"``, ``"on-prem"`` or ``None``.

    Raises
    ------
    ValueError
        Naming the setting and the value, for anything else.

    Examples
    --------
    >>> parse_prefer("Cloud"), parse_prefer(""), parse_prefer(None)
    ('cloud', None, None)
    """
    if value is None or value == "":
        return None
    text = value.strip().lower() if isinstance(value, str) else None
    if text not in PREFER_CHOICES:
        raise ValueError(
            f"{where} must be 'cloud' (s3:// sources first) or 'on-prem' "
            f"(http(s):// sources first), not {value!r}"
        )
    return text


def order_sources(sources: Sequence[Any], prefer: str | None) -> list[Any]:
    """The sources in the order to try them: the caller's, or S3 first or last.

    The sort is stable: within each kind, the caller's order is kept.

    Examples
    --------
    >>> order_sources([Source("https://h/x", None), Source("s3://b/x", None)], "cloud")
    [Source(uri='s3://b/x', region=None), Source(uri='https://h/x', region=None)]
    """
    if prefer is None:
        return list(sources)
    cloud_first = prefer == "cloud"
    return sorted(sources, key=lambda source: is_s3(source.uri) != cloud_first)


# -- items ---------------------------------------------------------------------------


def parse_item(item: object, index: int) -> Any:
    """Read one caller item into an :data:`Item`; never raises.

    Parameters
    ----------
    item : object
        Anything the caller put in the list (see the module's docstring).
    index : int
        Its position, for messages.

    Returns
    -------
    Item
        With ``error`` set (a ``ValueError`` naming the item and the
        problem) when the item cannot be downloaded; whatever the item's
        type, a malformed one is its own error, never a raise.

    Examples
    --------
    >>> parse_item(("https://h/x.fits", "out/x.fits"), 0).local
    'out/x.fits'
    >>> print(parse_item(("https://h/x.fits", 5), 3).error)
    item 3: local path 5 is not a path (str or os.PathLike)
    """
    if isinstance(item, str):
        return Item((Source(item, None),), None, None, None, item, ())
    try:
        return _parse(item, index)
    except Exception as exc:  # a row whose own methods fail is that item's error
        if not isinstance(exc, ValueError):
            exc = ValueError(f"item {index} ({shown(item)}) cannot be read: {exc!r}")
        return Item((), None, None, exc, shown(item), ())


def _parse(item: object, index: int) -> Any:
    if callable(getattr(item, "keys", None)) or callable(getattr(item, "getdataurl", None)):
        return _parse_mapping(item, index)
    if isinstance(item, (list, tuple)):
        return _parse_sequence(item, index)
    raise ValueError(f"item {index} must be {_ITEM_FORMS}, not {shown(item)}")


def shown(item: object) -> str:
    """``repr(item)``, cut to 200 characters for a message."""
    text = repr(item)
    return text if len(text) <= 200 else text[:197] + "..."


def _parse_sequence(item: list[Any] | tuple[Any, ...], index: int) -> Any:
    if item and all(looks_like_source(part) for part in item):
        sources = parse_sources(item, f"item {index}")
        return Item(sources, None, None, None, sources[0].uri, ())
    if len(item) != 2:
        raise ValueError(f"item {index} must be {_ITEM_FORMS}, not {shown(item)}")
    given, local = item
    sources = parse_sources(given, f"item {index}")
    if isinstance(local, Exception):
        # In place of the path, the reason there is none: a key of a listed
        # prefix that would land outside the folder, a prefix whose listing failed.
        return Item(sources, None, None, local, sources[0].uri, ())
    return Item(sources, _local_path(local, index), None, None, sources[0].uri, ())


def parse_sources(given: object, where: str) -> tuple[Any, ...]:
    """The sources of one file: a URL or URI, or a non-empty list of them.

    Raises
    ------
    ValueError
        Naming ``where`` and the bad value, for anything but strings.

    Examples
    --------
    >>> parse_sources(["https://h/x.fits", "s3://b/x.fits"], "item 0")[1]
    Source(uri='s3://b/x.fits', region=None)
    """
    if isinstance(given, str):
        return (Source(given, None),)
    if isinstance(given, (list, tuple)) and given:
        bad = [part for part in given if not isinstance(part, str)]
        if not bad:
            return tuple(Source(part, None) for part in given)
        raise ValueError(f"{where}: a source must be a URL or s3:// URI string, not {bad[0]!r}")
    raise ValueError(
        f"{where}: the source must be a URL or s3:// URI string, or a non-empty list of "
        f"them, not {given!r}"
    )


def _local_path(local: object, index: int) -> str | None:
    return check_local_path(local, f"item {index}: local path")


def check_target_path(local: object, folder: bool = False) -> str | None:
    """``local_filepath`` as a path, or None; ``ValueError`` for a folder's unless ``folder``.

    Examples
    --------
    >>> check_target_path("out/")
    Traceback (most recent call last):
    ...
    ValueError: local_filepath 'out/' names a folder; give a file path, for example os.path.join('out/', name)
    """
    path = check_local_path(local, "local_filepath")
    if path is None:
        return None
    if path.endswith(("/", os.sep)) and not folder:
        raise ValueError(
            f"local_filepath {path!r} names a folder; give a file path, for example "
            f"os.path.join({path!r}, name)"
        )
    return path


def check_local_path(local: object, what: str) -> str | None:
    """``os.fspath(local)``, or None; ``ValueError`` starting with ``what`` for a bad one.

    Examples
    --------
    >>> check_local_path("out/x.fits", "local_filepath")
    'out/x.fits'
    >>> check_local_path(5, "local_filepath")
    Traceback (most recent call last):
    ...
    ValueError: local_filepath 5 is not a path (str or os.PathLike)
    """
    if local is None:
        return None
    try:
        path = os.fspath(local)  # type: ignore[call-overload]
    except TypeError:
        raise ValueError(f"{what} {local!r} is not a path (str or os.PathLike)") from None
    if not isinstance(path, str) or not path or "\0" in path:
        raise ValueError(f"{what} {local!r} is not a usable path")
    return path


def _keys(mapping: Any) -> list[str]:
    # keys(), never iteration or ``in``: an astropy Row iterates (and tests
    # membership among) its values.
    keys = getattr(mapping, "keys", None)
    return [key for key in keys() if isinstance(key, str)] if callable(keys) else []


def _parse_mapping(item: Any, index: int) -> Any:
    keys = _keys(item)
    # A row first: a catalogue may well have a column named "source" (the
    # source's name) beside its access_url.
    lower = {key.lower() for key in keys}
    if callable(getattr(item, "getdataurl", None)) or lower.intersection(_ROW_COLUMNS):
        return _parse_row(item, keys, index)
    if "source" in keys:
        return _parse_manifest(item, keys, index)
    raise ValueError(
        f"item {index} ({shown(item)}): no 'source' (a manifest item has 'source' and "
        "optionally 'local_filepath' and 'checksum') and no 'access_url' (a table row)"
    )


def _parse_manifest(item: Any, keys: list[str], index: int) -> Any:
    unknown = [key for key in keys if key not in ITEM_KEYS]
    if unknown:
        raise ValueError(
            f"item {index} ({shown(item)}): unknown key {unknown[0]!r}; a mapping item has "
            "'source' and optionally 'local_filepath' and 'checksum'"
        )
    sources = parse_sources(item["source"], f"item {index}")
    local = _local_path(item["local_filepath"], index) if "local_filepath" in keys else None
    checksum = item["checksum"] if "checksum" in keys else None
    error = _checksum_problem(checksum, index) if checksum is not None else None
    return Item(sources, local, checksum, error, sources[0].uri, ())


def _checksum_problem(checksum: object, index: int) -> ValueError | None:
    """The error for a checksum that ``Checksum.parse`` refuses, naming the item."""
    from ._integrity import Checksum  # noqa: PLC0415 - hashlib, only for a checksum

    if not isinstance(checksum, str):
        return ValueError(
            f"item {index}: checksum must be a string like 'sha256:<hex>', not {checksum!r}"
        )
    try:
        Checksum.parse(checksum)
    except ValueError as exc:
        return ValueError(f"item {index}: {exc}")
    return None


# -- table rows ------------------------------------------------------------------------


def _parse_row(row: Any, keys: list[str], index: int) -> Any:
    """A row's sources: its access URL, then its cloud_access entries, then its aws URI."""
    notes: list[str] = []
    found: list[Any] = []
    url = _access_url(row, keys, notes)
    if url is not None:
        found.append(Source(url, None))
    found.extend(_cloud_access(_cell(row, keys, "cloud_access"), notes))
    aws = _text(_cell(row, keys, "aws"))
    if aws is not None:
        if is_s3(aws):
            found.append(Source(aws, None))
        else:
            notes.append(f"aws column {aws!r} is not an s3:// URI")
    sources = _without_repeats(found)
    if not sources:
        why = "; ".join(notes) if notes else "no access_url, cloud_access or aws value"
        raise ValueError(f"row {index} has no usable source ({why})")
    return Item(tuple(sources), None, None, None, sources[0].uri, tuple(notes))


def _access_url(row: Any, keys: list[str], notes: list[str]) -> str | None:
    getdataurl = getattr(row, "getdataurl", None)
    if callable(getdataurl):
        url = _text(getdataurl())
        if url is not None:
            return url
    url = _text(_cell(row, keys, "access_url"))
    if url is not None and not looks_like_source(url):
        notes.append(f"access_url {url!r} is not an http(s):// URL or s3:// URI")
        return None
    return url


def _cell(row: Any, keys: list[str], name: str) -> Any:
    """The value of column ``name`` (its case as the table has it), or None."""
    if name in keys:
        return row[name]
    for key in keys:
        if key.lower() == name:
            return row[key]
    return None


def _text(value: Any) -> str | None:
    """A cell as text: None for an empty, masked or missing one."""
    if value is None or _is_masked(value):
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")  # VOTable char columns may come as bytes
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value or None


def _is_masked(value: Any) -> bool:
    """Whether a cell is masked (numpy's ``masked``, whose ``mask`` is ``numpy.True_``)."""
    try:
        return bool(getattr(value, "mask", False))
    except (TypeError, ValueError):  # an array's mask has no single truth value
        return False


def _cloud_access(value: Any, notes: list[str]) -> list[Any]:
    """The S3 sources in a ``cloud_access`` cell (JSON text, a dict, or a list of dicts)."""
    if isinstance(value, (str, bytes)):
        text = _text(value)
        if text is None:
            return []
        import json  # noqa: PLC0415 - only for a row with cloud_access

        try:
            value = json.loads(text)
        except ValueError:
            notes.append(f"cloud_access {text[:80]!r} is not JSON")
            return []
    elif value is None or _is_masked(value):
        return []
    entries = value if isinstance(value, list) else [value]
    found = []
    for entry in entries:
        aws = entry.get("aws") if isinstance(entry, dict) else None
        for place in aws if isinstance(aws, list) else [aws]:
            source = _aws_place(place)
            if source is None:
                notes.append(f"cloud_access entry {entry!r} names no AWS bucket and key")
            else:
                found.append(source)
    return found


def _aws_place(place: Any) -> Any:
    """A :data:`Source` for ``{"bucket_name": ..., "key": ..., "region": ...}``, or None."""
    if not isinstance(place, dict):
        return None
    bucket, key, region = place.get("bucket_name"), place.get("key"), place.get("region")
    if not (isinstance(bucket, str) and bucket and isinstance(key, str) and key):
        return None
    region = region.strip() if isinstance(region, str) and _is_region(region.strip()) else None
    return Source(f"s3://{bucket}/{key}", region)


def _is_region(name: str) -> bool:
    """One DNS label that is not all digits (botocore's rule, as ``_s3url`` checks it)."""
    core = name.replace("-", "")
    return (
        0 < len(name) <= 63
        and name.isascii()
        and core.isalnum()
        and name[0] != "-"
        and name[-1] != "-"
        and not name.isdigit()
    )


def _without_repeats(sources: Iterable[Any]) -> list[Any]:
    """The sources once each, a region-less repeat folded into the one with a region."""
    kept: dict[str, Any] = {}
    for source in sources:
        earlier = kept.get(source.uri)
        if earlier is None or (earlier.region is None and source.region is not None):
            kept[source.uri] = source
    return list(kept.values())


# -- names -----------------------------------------------------------------------------


def name_for_sources(sources: Sequence[Any]) -> str | None:
    """The file name shared by several sources of one file, or None.

    The first name with a ``.`` among the sources' (an S3 key's last part,
    a URL's path or query value), in the caller's order, else the first
    name at all: every source of a file writes the same target, whichever
    one serves it.

    Examples
    --------
    >>> name_for_sources([Source("https://h/datalink?ID=7", None),
    ...                   Source("s3://b/obs/7/image.fits", None)])
    'image.fits'
    """
    names = [_name_of(source.uri) for source in sources]
    dotted = [name for name in names if name and "." in name]
    plain = [name for name in names if name]
    found = dotted or plain
    return found[0] if found else None


def _name_of(uri: str) -> str | None:
    from . import _names  # noqa: PLC0415 - only for items of several sources

    try:
        if is_s3(uri):
            _, _, key = uri[5:].partition("/")
            return _names.filename_from_s3_key(key)
        return _names.filename_from_url(uri)
    except ValueError:
        return None

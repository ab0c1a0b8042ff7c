"""The ``pyvo-dl`` command line (SPEC §5), also run by ``python -m pyvo_dl``.

It parses the arguments, reads the list of sources and hands them, as one
batch, to the library (``download_many``'s runner, which also expands
``--recursive`` prefixes and takes this process's ``--shard`` of the
expanded list). It adds no download logic of its own: what it prints
besides the library's progress is one line per failure and one summary
line, on stderr.

Exit status: 0 when every download succeeded, 1 when any failed, 2 for a
usage error (including "no source given"), 130 when interrupted (Ctrl-C),
143 when terminated (SIGTERM).
``argparse`` is imported inside :func:`main`, so importing this module stays
cheap.
"""

from __future__ import annotations

import sys

from . import _api, _httputil, _progress

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any, Final, NoReturn, Optional, Sequence, Tuple

    #: One line of a list: the source, the local path, the checksum.
    Item = Tuple[str, Optional[str], Optional[str]]

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "PROG",
    "format_failure",
    "in_cli_terms",
    "main",
    "parse_list_line",
    "parse_shard",
    "suggest_source",
]

#: The command's name in messages and in ``--help``, however it was started
#: (``python -m`` would otherwise show ``__main__.py``).
PROG: Final = "pyvo-dl"
EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
#: 128 + SIGINT, what shells report for a command stopped by Ctrl-C.
EXIT_INTERRUPTED: Final = 130
#: 128 + SIGTERM, what schedulers report for a job stopped at its time limit.
EXIT_TERMINATED: Final = 143

#: Fixed, so that ``--help`` (and docs/cli.md made from it) does not depend
#: on the terminal's width.
HELP_WIDTH: Final = 79

_PACKAGE: Final = __name__.rpartition(".")[0] or __name__

_USAGE: Final = f"""\
{PROG} [options] SOURCE [SOURCE ...]
       {PROG} [options] -i FILE
       {PROG} demo [--quick] [--keep]"""

_DESCRIPTION: Final = """\
Download files from http(s) URLs and s3:// URIs: resumable, verified, in
parallel. A .part file left by an interrupted run is continued by the next
one; a file is only put in place once its size (and checksum) is verified.

'pyvo-dl demo' shows all of this against HTTP and S3 servers it starts on
127.0.0.1 (nothing leaves the machine); 'pyvo-dl demo --help' for more."""

_EPILOG: Final = """\
list files (-i):
  One file per line: SOURCE [PATH] [ALG:HEX]. Blank lines and lines starting
  with '#' are skipped. The local PATH follows the source after a TAB (or,
  after an http(s) URL, after spaces: an S3 key may itself contain spaces);
  a relative PATH is under -d DIR. A last field ALG:HEX (sha256:..., md5:...,
  any hashlib name, crc32c) is the file's checksum: a file that does not
  match it is not kept and counts as failed.

exit status:
  0 all downloads succeeded, 1 any failed (each failure is named on stderr),
  2 usage error, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM); after
  either, the same command resumes what was cut short.

examples:
  # one file from an archive, into the current folder
  pyvo-dl https://heasarc.gsfc.nasa.gov/FTP/chandra/data/byobsid/2/3052/primary/acisf03052N004_cntr_img2.jpg

  # one object from a public S3 bucket (no credentials needed), into data/
  pyvo-dl -d data s3://nasa-heasarc/chandra/data/byobsid/2/3052/primary/acisf03052N004_cntr_img2.jpg

  # every URL or URI listed in urls.txt, 16 at a time
  pyvo-dl -i urls.txt -j 16 -d data

  # everything under an S3 prefix, keeping its layout under obs3052/
  pyvo-dl --recursive -d obs3052 s3://nasa-heasarc/chandra/data/byobsid/2/3052/

  # the same folder from the archive's web server (its directory listings,
  # as wget -r -np -nH --cut-dirs=6 would), the event files only
  pyvo-dl --recursive --include '*evt2*' -d obs3052 https://heasarc.gsfc.nasa.gov/FTP/chandra/data/byobsid/2/3052/

  # a SLURM job array (sbatch --array=0-9): task k takes items k+1, k+11, ...
  pyvo-dl -i urls.txt -d data --shard $((SLURM_ARRAY_TASK_ID+1))/$SLURM_ARRAY_TASK_COUNT

  # an S3-compatible server (Ceph, MinIO) with credentials from a profile
  pyvo-dl --endpoint-url https://s3.example.org --profile ceph s3://bucket/run1/x.fits"""


class _UsageError(Exception):
    """A usage error found after parsing; reported like argparse's own."""


# -- argument types ----------------------------------------------------------------


def _whole(text: str, minimum: int, maximum: int) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"the value must be a whole number, not {text!r}"
        ) from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"the value must be at least {minimum}, not {text!r}")
    if value > maximum:
        raise argparse.ArgumentTypeError(f"the value must be at most {maximum}, not {text!r}")
    return value


def _jobs(text: str) -> int:
    from ._many import MAX_WORKERS

    return _whole(text, 1, MAX_WORKERS)


def _connections(text: str) -> int:
    return _whole(text, 1, _api.MAX_CONNECTIONS)


def _retries(text: str) -> int:
    return _whole(text, 0, _api.MAX_RETRIES)


def _depth(text: str) -> int:
    from ._listing import MAX_DEPTH

    return _whole(text, 0, 10 * MAX_DEPTH)


def _seconds(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    # "not value > 0" also refuses nan; inf would mean "wait forever" (SPEC §2.1).
    if not 0 < value <= _api.MAX_TIMEOUT:
        raise argparse.ArgumentTypeError(
            f"must be a number of seconds above 0 and at most {_api.MAX_TIMEOUT:g} "
            f"(a week), not {text!r}"
        )
    return value


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``--shard I/N``: this process's part of the list.

    Parameters
    ----------
    text : str
        ``"I/N"`` with whole numbers ``1 <= I <= N``.

    Returns
    -------
    tuple of int
        ``(I, N)``.

    Raises
    ------
    ValueError
        Naming ``text``, when it is not of that form.

    Examples
    --------
    >>> parse_shard("2/3")
    (2, 3)
    >>> parse_shard("0/3")
    Traceback (most recent call last):
    ...
    ValueError: '0/3': I must be from 1 to N (I/N, for example 1/4)
    """
    first, slash, second = text.partition("/")
    try:
        index, count = int(first), int(second)
    except ValueError:
        index = count = 0
    if not slash or count < 1:
        raise ValueError(f"{text!r} is not of the form I/N with whole numbers, N >= 1")
    if not 1 <= index <= count:
        raise ValueError(f"{text!r}: I must be from 1 to N (I/N, for example 1/4)")
    return index, count


def _shard(text: str) -> tuple[int, int]:
    import argparse

    try:
        return parse_shard(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# -- the parser --------------------------------------------------------------------


def _formatter(prog: str) -> argparse.HelpFormatter:
    import argparse

    class Formatter(argparse.RawDescriptionHelpFormatter):
        # Python 3.13 shows "-o, --output PATH" where older ones repeat the
        # metavar; one spelling keeps --help (and docs/cli.md) the same everywhere.
        def _format_action_invocation(self, action: argparse.Action) -> str:
            if not action.option_strings or action.nargs == 0:
                return super()._format_action_invocation(action)
            metavar = self._format_args(action, self._get_default_metavar_for_optional(action))
            return ", ".join(action.option_strings) + " " + metavar

    return Formatter(prog, max_help_position=26, width=HELP_WIDTH)


def build_parser() -> argparse.ArgumentParser:
    """Return the ``argparse`` parser of ``pyvo-dl``.

    Returns
    -------
    argparse.ArgumentParser
        Its groups carry their own titles, and ``-h`` is added by hand, so
        that no Python version's default title ("optional arguments:" up to
        3.9, "options:" after) appears in ``--help``.
    """
    import argparse

    from . import __version__

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> NoReturn:
            # argparse quotes the arguments it refuses: a URL's password with them.
            super().error(_httputil.redact(message))

    parser = Parser(
        prog=PROG,
        usage=_USAGE,
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=_formatter,
        add_help=False,
        # --time for --timeout, --re for --recursive/--retries/--region: a
        # prefix that works today would mean something else tomorrow.
        allow_abbrev=False,
    )
    sources = parser.add_argument_group("sources and destination")
    sources.add_argument(
        "sources", nargs="*", metavar="SOURCE", help="an http(s):// URL or an s3://bucket/key URI"
    )
    sources.add_argument(
        "-i", "--input", metavar="FILE", action="append", default=[],
        help="read sources from FILE, one a line ('-': standard input); may be repeated",
    )  # fmt: skip
    sources.add_argument(
        "-o", "--output", metavar="PATH",
        help="write the file to PATH (one source only; a relative PATH is under -d)",
    )  # fmt: skip
    sources.add_argument(
        "-d", "--dest-dir", metavar="DIR", default=".",
        help="folder for the files, created if missing (default: the current folder)",
    )  # fmt: skip
    sources.add_argument(
        "--shard", metavar="I/N", type=_shard,
        help="take only items I, I+N, I+2N, ... of the list (I from 1 to N), "
        "to split one list over a job array",
    )  # fmt: skip
    sources.add_argument(
        "--recursive", action="store_true",
        help="for s3://bucket/prefix/ and http(s)://.../ (a web server's directory "
        "listing, as wget -r -np): download every file under it, keeping its layout "
        "under -d",
    )  # fmt: skip
    sources.add_argument(
        "--include", metavar="GLOB", action="append",
        help="with --recursive: keep only files whose path below the start matches "
        "GLOB ('*' matches '/' too: '*.fits' at any depth); may be repeated",
    )  # fmt: skip
    sources.add_argument(
        "--exclude", metavar="GLOB", action="append",
        help="with --recursive: leave out files whose path below the start matches "
        "GLOB ('secondary/*'); may be repeated",
    )  # fmt: skip
    sources.add_argument(
        "--max-depth", metavar="N", type=_depth,
        help="with --recursive: descend at most N folders below the start "
        "(0: only its own files)",
    )  # fmt: skip
    _add_transfer_options(parser)
    _add_s3_options(parser)
    output = parser.add_argument_group("output")
    loudness = output.add_mutually_exclusive_group()
    loudness.add_argument(
        "-q", "--quiet", action="store_true",
        help="print only errors: no progress, no summary",
    )  # fmt: skip
    loudness.add_argument(
        "-v", "--verbose", action="count", default=0,
        help="log what was decided (cache hits, resumes, retries, S3 access) "
        "to stderr; -vv also logs redirects",
    )  # fmt: skip
    output.add_argument(
        "--version", action="version", version=f"{PROG} {__version__}",
        help="print the version and exit",
    )  # fmt: skip
    output.add_argument("-h", "--help", action="help", help="print this help and exit")
    return parser


def _add_transfer_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("transfer")
    group.add_argument(
        "-j", "--jobs", metavar="N", type=_jobs, default=8,
        help="files downloaded at once (default: 8)",
    )  # fmt: skip
    group.add_argument(
        "--connections", metavar="N", type=_connections,
        help="parallel ranged connections for one large file (default: the library's choice)",
    )  # fmt: skip
    group.add_argument(
        "--checksum", metavar="ALGO:HEX",
        help="expected digest of the file, e.g. sha256:<64 hex digits> (one source only)",
    )  # fmt: skip
    group.add_argument(
        "--no-resume", dest="resume", action="store_false",
        help="start over instead of continuing a .part file left by an earlier run",
    )  # fmt: skip
    group.add_argument(
        "--timeout", metavar="SECONDS", type=_seconds,
        help="give up a try after this long without progress (default: 60)",
    )  # fmt: skip
    group.add_argument(
        "--retries", metavar="N", type=_retries,
        help=f"retries of a transient fault, per file (default: {_api.DEFAULT_RETRIES})",
    )  # fmt: skip
    group.add_argument(
        "--ca-bundle", metavar="FILE",
        help="trust the CA certificates in FILE (PEM) instead of the system's, for "
        "https:// and S3 endpoints alike (as curl --cacert); verification is never "
        "turned off",
    )  # fmt: skip


def _add_s3_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("S3 (s3:// sources only)")
    group.add_argument(
        "--profile", metavar="NAME",
        help="sign requests with this AWS profile (needs botocore); default: anonymous",
    )  # fmt: skip
    group.add_argument(
        "--endpoint-url", metavar="URL",
        help="an S3-compatible server instead of AWS "
        "(default: $AWS_ENDPOINT_URL_S3, else $AWS_ENDPOINT_URL)",
    )  # fmt: skip
    group.add_argument(
        "--region", metavar="NAME",
        help="the bucket's region (default: $AWS_REGION, else discovered)",
    )  # fmt: skip
    group.add_argument(
        "--requester-pays", action="store_true",
        help="accept the charges of a requester-pays bucket (needs --profile or credentials)",
    )  # fmt: skip


# -- from arguments to a plan ------------------------------------------------------


def _is_s3(source: str) -> bool:
    return source[:5].lower() == "s3://"


def parse_list_line(line: str) -> Item | None:
    """Parse one line of a ``-i`` list file: ``SOURCE [PATH] [ALG:HEX]``.

    Parameters
    ----------
    line : str
        A line, with or without its line ending.

    Returns
    -------
    tuple or None
        ``(source, local_path or None, checksum or None)``; ``None`` for a
        blank line or a comment (first non-blank character ``#``). A last
        field of the form ``ALG:HEX`` with a known algorithm (``sha256``,
        ``md5``, ``crc32c``, any ``hashlib`` name), after a TAB or spaces,
        is the file's checksum. A TAB separates the local path; so do
        spaces after an http(s) URL, which cannot contain one, but not
        after an ``s3://`` URI, whose key may.

    Examples
    --------
    >>> parse_list_line("https://h/a.fits  out/a.fits\n")
    ('https://h/a.fits', 'out/a.fits', None)
    >>> parse_list_line("https://h/a.fits out/a.fits md5:" + "0" * 32)[2]
    'md5:00000000000000000000000000000000'
    >>> parse_list_line("s3://b/obs 3052/notes.txt")
    ('s3://b/obs 3052/notes.txt', None, None)
    >>> parse_list_line("s3://b/obs 3052/notes.txt\tnotes.txt")
    ('s3://b/obs 3052/notes.txt', 'notes.txt', None)
    >>> parse_list_line("  # a comment") is None
    True
    """
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    text, checksum = _split_checksum(text)
    if "\t" in text:
        source, _, local = text.partition("\t")
    elif _is_s3(text):
        source, local = text, ""
    else:
        source, _, local = text.partition(" ")
    return source.strip(), local.strip() or None, checksum


def _split_checksum(text: str) -> tuple[str, str | None]:
    """``text`` without its last field when that field is ``ALG:HEX``, and that field."""
    cut = max(text.rfind(" "), text.rfind("\t"))
    if cut < 0:
        return text, None
    field = text[cut + 1 :]
    name, colon, _ = field.partition(":")
    if not colon or not name or "/" in field:
        return text, None
    from ._integrity import is_algorithm

    if not is_algorithm(name):
        return text, None
    return text[:cut].rstrip(), field


def _read_list(path: str) -> list[Item]:
    try:
        if path == "-":
            lines = sys.stdin.readlines()
        else:
            with open(path, encoding="utf-8") as stream:
                lines = stream.readlines()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise _UsageError(f"cannot read the list {path!r}: {reason}") from None
    items: list[Item] = []
    for number, line in enumerate(lines, 1):
        item = parse_list_line(line)
        if item is not None:
            _check_scheme(item[0], f" (line {number} of {path})")
            items.append(item)
    return items


#: What the command downloads; anything else is a usage error, before any request.
_SCHEMES: Final = ("http", "https", "s3")


def suggest_source(source: str) -> str:
    """The ``https://`` URL a source without a usable scheme was probably meant to be.

    Examples
    --------
    >>> suggest_source("heasarc.gsfc.nasa.gov/FTP/a.fits")
    'https://heasarc.gsfc.nasa.gov/FTP/a.fits'
    >>> suggest_source("htps://heasarc.gsfc.nasa.gov/FTP/a.fits")
    'https://heasarc.gsfc.nasa.gov/FTP/a.fits'
    >>> suggest_source("https:/heasarc.gsfc.nasa.gov/a.fits")
    'https://heasarc.gsfc.nasa.gov/a.fits'
    """
    scheme, colon, rest = source.partition(":")
    if colon and scheme.isalpha() and "/" not in scheme and "." not in scheme:
        return "https://" + rest.lstrip("/")
    return "https://" + source.lstrip("/")


def _check_scheme(source: str, where: str = "") -> None:
    scheme, sep, _ = source.partition("://")
    if sep and scheme.lower() in _SCHEMES:
        return
    raise _UsageError(
        f"{_httputil.redact_url(source)!r}{where} is not an http(s):// URL or s3:// URI; "
        f"did you mean {_httputil.redact_url(suggest_source(source))!r}?"
    )


def _gather(args: argparse.Namespace) -> list[Item]:
    """Every source, from the arguments then the lists, checked against the options."""
    for source in args.sources:
        _check_scheme(source)
    items: list[Item] = [(source, None, None) for source in args.sources]
    for path in args.input:
        items.extend(_read_list(path))
    if not items:
        raise _UsageError("no source given: name URLs or s3:// URIs, or a list with -i FILE")
    if args.output is not None:
        if len(items) != 1:
            raise _UsageError(f"-o names one file, but {len(items)} sources were given; use -d DIR")
        if args.recursive:
            raise _UsageError("-o names one file; with --recursive, name the folder with -d DIR")
    filters = [
        name for name, value in (("--include", args.include), ("--exclude", args.exclude),
                                 ("--max-depth", args.max_depth)) if value is not None
    ]  # fmt: skip
    if filters and not args.recursive:
        raise _UsageError(f"{', '.join(filters)} filter what --recursive lists; add --recursive")
    if args.checksum is not None:
        if len(items) != 1 or args.recursive:
            raise _UsageError(
                "--checksum names the digest of one file; give exactly one source "
                "(a list names each file's checksum on its line: SOURCE [PATH] [ALG:HEX])"
            )
        _check_checksum(args.checksum)
        source, local, listed = items[0]
        if listed is not None and listed != args.checksum:
            raise _UsageError(
                f"--checksum {args.checksum} differs from {listed} listed for {source}"
            )
        items = [(source, local, args.checksum)]
    return items


def _check_checksum(spec: str) -> None:
    # The library's own parser, so that the command line accepts exactly what
    # checksum= accepts (SHA-256, crc32c...); a bad spec is a usage error here
    # rather than the failure of a download.
    from ._integrity import Checksum

    try:
        Checksum.parse(spec)
    except ValueError as exc:
        raise _UsageError(f"--checksum: {exc}") from None


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments for the batch, HTTP and S3 ones together.

    ``download`` hands each item only the options of its kind, so one set
    serves a mixed list. Only what was given on the command line is passed,
    so the library's defaults (``cache=True`` for HTTP, ``False`` for S3, as
    in pyvo) apply.
    """
    kwargs: dict[str, Any] = {}
    if not args.resume:
        kwargs["resume"] = False
    for option, keyword in (
        ("connections", "connections"), ("timeout", "timeout"), ("retries", "retries"),
        ("profile", "aws_profile"), ("endpoint_url", "endpoint_url"), ("region", "region"),
    ):  # fmt: skip
        value = getattr(args, option)
        if value is not None:
            kwargs[keyword] = value
    if args.recursive:
        kwargs["recursive"] = True
    for option in ("include", "exclude", "max_depth"):
        value = getattr(args, option)
        if value is not None:
            kwargs[option] = value
    if args.requester_pays:
        kwargs["requester_pays"] = True
    if args.ca_bundle is not None:
        kwargs["ssl_context"] = _ca_context(args.ca_bundle)
    return kwargs


def _ca_context(path: str) -> Any:
    """``--ca-bundle FILE``: a verifying TLS context trusting FILE's CAs only."""
    import ssl

    try:
        return ssl.create_default_context(cafile=path)
    except (OSError, ssl.SSLError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise _UsageError(f"--ca-bundle: cannot use {path!r} as a CA bundle: {reason}") from None


def _batch_items(items: Sequence[Item], args: argparse.Namespace) -> list[Any]:
    """The ``download_many`` items: URLs, ``(source, path)`` pairs, a mapping with a checksum."""
    batch: list[Any] = []
    for source, given, checksum in items:
        local = args.output if args.output is not None else given
        if checksum is not None:
            batch.append({"source": source, "local_filepath": local, "checksum": checksum})
        else:
            batch.append(source if local is None else (source, local))
    return batch


# -- running -----------------------------------------------------------------------


def _say(text: str) -> None:
    # Every line the command prints goes through here: no URL password in any.
    line = f"{PROG}: {_httputil.redact(text)}"
    try:
        if _progress.is_terminal(sys.stderr):
            # Broken at spaces, as the progress lines are: the terminal would
            # otherwise wrap in the middle of a number. Logs get one line.
            line = _progress.wrap_words(line, _progress.terminal_columns(sys.stderr))
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass  # stderr closed: the exit status still tells


def _one_line(error: BaseException) -> str:
    # One line per failure, whatever the message holds, so that stderr greps well.
    return " ".join(str(error).split()) or type(error).__name__


#: The library speaks of its parameters; the command line of its options.
#: Whole phrases first, where an option alone would not read right.
_IN_CLI_TERMS: Final = (
    ("pass aws_profile= (a profile in ~/.aws/credentials) or session= with credentials",
     "pass --profile NAME (a profile in ~/.aws/credentials) with credentials"),
    ("pass aws_profile= or session= with credentials", "pass --profile NAME with credentials"),
    ("drop aws_profile=/session= for public data", "drop --profile for public data"),
    ("(aws_profile=, session=, or non-public objects)", "(--profile, or non-public objects)"),
    ("pass auth=(user, password), a logged-in session=, or add the host to ~/.netrc",
     "put user:password@ in the URL, or add the host to ~/.netrc"),
    ("log in (auth=, session=)", "log in (user:password@ in the URL, or ~/.netrc)"),
    ("pass ssl_context= with that CA loaded (ssl.create_default_context(cafile=...))",
     "pass --ca-bundle FILE with that CA (PEM)"),
    ("pass local_filepath=, or recursive=True to", "give -o PATH, or --recursive to"),
    ("pass local_filepath=", "give -o PATH (or a path after the source in the -i list)"),
    ("give a (source, local_path) pair", "give -o PATH (or a path after the source in the -i list)"),
    ("choose a folder you can write to (local_filepath=)", "choose a folder you can write to (-d DIR)"),
    ("give a file path, for example os.path.join(folder, name)", "give a file path with -o PATH"),
    ("give it longer with timeout=", "give it longer with --timeout SECONDS"),
    ("requester_pays=True", "--requester-pays"),
    ("recursive=True", "--recursive"),
    ("aws_profile=", "--profile"),
    ("ssl_context=", "--ca-bundle"),
    ("local_filepath=", "-o"),
    ("endpoint_url=", "--endpoint-url"),
    ("timeout=", "--timeout"),
    ("retries=", "--retries"),
    ("connections=", "--connections"),
    ("checksum=", "--checksum"),
)  # fmt: skip


def in_cli_terms(message: str) -> str:
    """``message`` with the library's parameter names replaced by the options that set them.

    Examples
    --------
    >>> in_cli_terms("the server is slow, give it longer with timeout=")
    'the server is slow, give it longer with --timeout SECONDS'
    """
    for python, flags in _IN_CLI_TERMS:
        if python in message:
            message = message.replace(python, flags)
    return message


def format_failure(source: str, error: BaseException) -> str:
    """The failure line of one item (without the ``pyvo-dl:`` prefix), naming the source once.

    Parameters
    ----------
    source : str
        The URL or URI as the list gave it (an object's own URI for a prefix).
    error : BaseException
        What the item ended with.

    Returns
    -------
    str
        ``failed: MESSAGE`` when the message names the source already, else
        ``failed: SOURCE: MESSAGE``; on one line, with the options of the
        command line where the library names its parameters
        (:func:`in_cli_terms`).

    Examples
    --------
    >>> format_failure("https://h/a.fits", OSError("HTTP 404 (not found) for https://h/a.fits"))
    'failed: HTTP 404 (not found) for https://h/a.fits'
    >>> format_failure("https://h/a.fits", OSError("disk full"))
    'failed: https://h/a.fits: disk full'
    """
    message = _httputil.redact(in_cli_terms(_one_line(error)))
    source = _httputil.redact_url(source)
    if source in message:
        return f"failed: {message}"
    return f"failed: {source}: {message}"


def _report(pairs: Sequence[tuple[str, Any]], display: Any) -> int:
    failures = [(source, result) for source, result in pairs if isinstance(result, BaseException)]
    for source, error in failures:
        _say(format_failure(source, error))
    if display is not None:
        _say(display.summary())
    return EXIT_FAILED if failures else EXIT_OK


class _LogToStderr:
    """``-v``: the package's log records on stderr for the duration of a run."""

    def __init__(self, verbosity: int) -> None:
        self._verbosity = verbosity
        self._handler: Any = None
        self._level = 0

    def __enter__(self) -> _LogToStderr:
        if self._verbosity:
            import logging

            logger = logging.getLogger(_PACKAGE)
            self._handler = logging.StreamHandler(sys.stderr)
            self._handler.setFormatter(logging.Formatter(f"{PROG}: %(message)s"))
            self._level = logger.level
            logger.setLevel(logging.DEBUG if self._verbosity > 1 else logging.INFO)
            logger.addHandler(self._handler)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._handler is not None:
            import logging

            logger = logging.getLogger(_PACKAGE)
            logger.removeHandler(self._handler)
            logger.setLevel(self._level)


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    try:
        items = _gather(args)
        options = _options(args)
    except _UsageError as exc:
        parser.error(str(exc))  # exits with status 2
    # One command is one batch (SPEC §2.3): one pool of -j workers for HTTP
    # and S3 alike, one display, one tally for the one summary line. The
    # shard is taken inside, after --recursive listed the prefixes, so that
    # N processes cover the expanded list exactly once. One AWS context for
    # the run: each profile's credentials and the default chain are looked
    # up once.
    display = None if args.quiet else _progress.AggregateSink(None, summary=False)
    with _LogToStderr(args.verbose), _api._AwsScope():
        pairs = _api.run_batch(
            _batch_items(items, args), args.dest_dir, workers=args.jobs,
            progress=display if display is not None else False, shard=args.shard,
            **options,
        )  # fmt: skip
    return _report(pairs, display)


def main(argv: list[str] | None = None) -> int:
    """Run ``pyvo-dl`` with ``argv`` (default: ``sys.argv[1:]``).

    Parameters
    ----------
    argv : list of str, optional
        The arguments, without the program name. ``demo`` as the first one
        runs the demo (``pyvo_dl._demo``) with the rest.

    Returns
    -------
    int
        The exit status, for ``sys.exit(main())``: 0 when every download
        succeeded, 1 when any failed (each failure is named on stderr), 2 for
        a usage error, 130 when interrupted, 143 when terminated (SIGTERM).
    """
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["demo"]:
        from . import _demo

        return _demo.main(argv[1:])
    from . import _many

    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
            # SIGTERM (a job's time limit, scancel) stops the run as Ctrl-C
            # does: downloads under way keep their .part, locks are released.
            with _many.TerminationHandler():
                return _run(parser, args)
        except _many.Terminated as exc:
            _say(f"{exc.message}; run the same command again to resume")
            return EXIT_TERMINATED
        except SystemExit as exc:  # argparse's errors, --help and --version
            if exc.code is None:
                return EXIT_OK
            return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    except KeyboardInterrupt as exc:
        # A .part file is kept: the same command resumes it.
        _say(f"{exc or 'interrupted'}; run the same command again to resume")
        return EXIT_INTERRUPTED

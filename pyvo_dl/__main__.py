"""``python -m pyvo_dl``: the command line, or ``python -m pyvo_dl demo``."""

# Parses on any Python 3, as __init__.py does: the version check there runs
# first, and this file must not be the one that stops an old interpreter.
import importlib
import sys

# The package's own name (run as ``-m``, __name__ is "__main__"), so that a
# vendored copy names itself correctly.
_PACKAGE = __package__ or __name__.rpartition(".")[0]

_USAGE = f"""\
usage: python -m {_PACKAGE} demo [--quick] [--keep]
       python -m {_PACKAGE} URL_OR_S3_URI ...
The command line is not available in this copy of {_PACKAGE}; the demo is.
"""


def main() -> int:
    """Run the demo (``demo`` as first argument) or the command line.

    Both read their arguments from ``sys.argv``.

    Returns
    -------
    int
        The exit status: 0 on success, 1 on failure, 2 on a usage error.
    """
    args = sys.argv[1:]
    if args[:1] == ["demo"]:
        from . import _demo  # noqa: PLC0415 (http.server & co. only for the demo)

        return _demo.main(args[1:])
    try:
        # Imported here: the demo must work even where _cli is not there (yet).
        cli = importlib.import_module("._cli", _PACKAGE)
    except ModuleNotFoundError as exc:
        if exc.name != f"{_PACKAGE}._cli":
            raise  # _cli exists but something it imports is missing: show that
        sys.stderr.write(_USAGE)
        return 2
    status = cli.main()
    return status if isinstance(status, int) else 0


if __name__ == "__main__":
    sys.exit(main())

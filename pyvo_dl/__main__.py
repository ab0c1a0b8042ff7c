"""``python -m pyvo_dl``: the ``pyvo-dl`` command (``demo`` is one of its commands)."""

# Parses on any Python 3, as __init__.py does: the version check there runs
# first, and this file must not be the one that stops an old interpreter.
import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())

"""Write a generated docs page, or check that it is current (gen_api.py, gen_cli.py)."""

from __future__ import annotations

import sys


def write_or_check(path: str, text: str, script: str, argv: list[str] | None = None) -> int:
    """Write ``text`` to ``path``; with ``--check``, report whether it is already there.

    Parameters
    ----------
    path : str
        The generated page.
    text : str
        What it should hold.
    script : str
        The script that makes it, named in the out-of-date message.
    argv : list of str, optional
        ``["--check"]`` or nothing (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 when written or current, 1 when ``--check`` finds it out of date.
    """
    args = sys.argv[1:] if argv is None else argv
    if args == ["--check"]:
        try:
            with open(path, encoding="utf-8") as f:
                current = f.read()
        except FileNotFoundError:
            current = ""
        if current != text:
            sys.stderr.write(f"{path} is out of date: run python {script}\n")
            return 1
        return 0
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    return 0

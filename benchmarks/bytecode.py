"""Bytecode as an installed package has it: checked, and completed where an install left gaps.

A client that imports a module without an up-to-date ``.pyc`` compiles it in
every run (clients never write bytecode, see ``client_env``), which costs
boto3 about 0.9 s of CPU per run on this machine: a benchmark that lets that
happen to one client and not to another measures compilers, not downloads.
The warm-up runs every Python client once with :data:`REPORT_PREFIX` in
front of its code; at exit, the client writes one line per imported module
saying whether its ``.pyc`` (``module.__cached__``, as that interpreter
would read it) is there and matches the source. :func:`complete` then
compiles, with ``compileall`` as pip does at install, what is missing under
the folders the suite owns (its venv, the pyvo_dl copy) and reports the rest.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Sequence

#: Environment variable naming the file that the report is appended to.
REPORT_ENV = "BENCH_BYTECODE_REPORT"

#: Put in front of a Python client's code during the warm-up only.
REPORT_PREFIX = """\
import atexit as _atexit

def _report_bytecode():
    import importlib.util, os, sys
    lines = []
    for module in list(sys.modules.values()):
        source = getattr(module, "__file__", None)
        cached = getattr(module, "__cached__", None)
        if not source or not cached or not source.endswith(".py"):
            continue
        try:
            with open(cached, "rb") as f:
                head = f.read(16)
            st = os.stat(source)
        except OSError:
            lines.append("missing " + source)
            continue
        fields = [int.from_bytes(head[i:i + 4], "little") for i in (4, 8, 12)]
        fresh = head[:4] == importlib.util.MAGIC_NUMBER and (
            fields[0] != 0  # hash-based: checked against the source by the import itself
            or (fields[1] == int(st.st_mtime) & 0xFFFFFFFF and fields[2] == st.st_size & 0xFFFFFFFF)
        )
        lines.append(("ok " if fresh else "stale ") + source)
    with open(os.environ["BENCH_BYTECODE_REPORT"], "a") as f:
        f.write("".join(line + "\\n" for line in lines))

_atexit.register(_report_bytecode)
"""


@dataclass
class Audit:
    """What the warm-up's clients imported, and the state of its bytecode."""

    modules: int = 0
    compiled_now: List[str] = field(default_factory=list)
    uncompiled_elsewhere: List[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for the table's header."""
        text = f"bytecode: {self.modules} Python modules imported by the clients"
        if not self.compiled_now and not self.uncompiled_elsewhere:
            return text + ", every one with its up-to-date .pyc, as installed"
        if self.compiled_now:
            text += f"; {len(self.compiled_now)} had no up-to-date .pyc and were compiled at setup"
        if self.uncompiled_elsewhere:
            first = ", ".join(self.uncompiled_elsewhere[:3])
            text += (
                f"; {len(self.uncompiled_elsewhere)} outside this suite's folders have none "
                f"(compiled in every run): {first}"
            )
        return text


def read_report(path: str) -> tuple[set[str], set[str]]:
    """The sources seen with a fresh ``.pyc`` and those without one."""
    fresh: set[str] = set()
    stale: set[str] = set()
    try:
        with open(path) as f:
            for line in f:
                state, _, source = line.rstrip("\n").partition(" ")
                (fresh if state == "ok" else stale).add(source)
    except OSError:
        pass
    return fresh, stale - fresh


def complete(python: str, report: str, owned: Sequence[str]) -> Audit:
    """Compile the stale modules under ``owned`` folders; report the others.

    Parameters
    ----------
    python : str
        The interpreter whose bytecode the clients read.
    report : str
        The file the warm-up's clients wrote (see :data:`REPORT_PREFIX`).
    owned : sequence of str
        Folders this suite installed (its venv, the pyvo_dl copy): stale
        modules there are compiled, as ``pip install`` would have.
    """
    fresh, stale = read_report(report)
    roots = [os.path.realpath(folder) + os.sep for folder in owned]
    mine = sorted(s for s in stale if os.path.realpath(s).startswith(tuple(roots)))
    audit = Audit(modules=len(fresh | stale), compiled_now=mine)
    audit.uncompiled_elsewhere = sorted(stale - set(mine))
    if mine:
        # -I: no PYTHONPYCACHEPREFIX, so the .pyc lands in __pycache__ beside the source.
        subprocess.run([python, "-I", "-m", "compileall", "-q", *mine], check=False)
    return audit

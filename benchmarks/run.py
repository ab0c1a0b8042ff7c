"""``python benchmarks/run.py``: the same as ``python -m benchmarks``.

Run as a script, Python puts ``benchmarks/`` on ``sys.path`` instead of the
folder that holds it, so the package cannot be imported by name; this puts
the repository root there instead and runs the package's ``__main__``.
"""

from __future__ import annotations

import os
import runpy
import sys

if __name__ == "__main__":
    # Replace the script's folder, so that benchmarks' modules are only
    # importable as benchmarks.<name>.
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    runpy.run_module("benchmarks", run_name="__main__", alter_sys=True)

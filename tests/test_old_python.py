"""Python 3.6 and 3.7 get one sentence, not a SyntaxError (issue 16.4).

RHEL 8's system ``python3`` is 3.6: ``import pyvo_dl`` and ``python3 -m
pyvo_dl`` must say which Python is needed. The interpreters are pyenv's
(CI has them); a test skips, saying so, where one is missing. The entry
files are also checked with ``ast`` against the 3.6 grammar on every run.
"""

from __future__ import annotations

import ast
import glob
import os
import shutil
import subprocess

import pytest

import pyvo_dl

PACKAGE_DIR = os.path.dirname(os.path.abspath(pyvo_dl.__file__))
PACKAGE_PARENT = os.path.dirname(PACKAGE_DIR)
PACKAGE = pyvo_dl.__name__


def find_python(minor: int) -> str | None:
    """``python3.MINOR`` on PATH that runs, else pyenv's, else None."""
    name = f"python3.{minor}"
    pyenv = glob.glob(os.path.expanduser(f"~/.pyenv/versions/3.{minor}.*/bin/{name}"))
    candidates = [shutil.which(name), *sorted(pyenv)]
    for candidate in candidates:
        if candidate and _runs(candidate):
            return candidate
    return None


def _runs(python: str) -> bool:
    try:
        done = subprocess.run([python, "-c", "pass"], capture_output=True, timeout=30, check=False)
    except OSError:
        return False
    return done.returncode == 0


def run_old(python: str, args: list[str], cwd: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = PACKAGE_PARENT
    return subprocess.run(
        [python, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip


@pytest.mark.parametrize("module", ["__init__.py", "__main__.py"])
def test_entry_files_parse_with_the_python_3_6_grammar(module: str) -> None:
    with open(os.path.join(PACKAGE_DIR, module), encoding="utf-8") as f:
        source = f.read()
    tree = ast.parse(source, feature_version=(3, 6))
    for node in ast.walk(tree):
        assert not isinstance(node, ast.NamedExpr), f"{module}: walrus (3.8)"
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            names = {alias.name for alias in node.names}
            assert "annotations" not in names, f"{module}: 'from __future__ import annotations'"
    assert "=}" not in source, f"{module}: an f-string with '=' (3.8)"


@pytest.mark.parametrize("minor", [6, 7])
@pytest.mark.parametrize(
    ("args", "status", "stream"),
    [
        (["-c", f"import {PACKAGE}"], 1, "traceback"),
        (["-m", PACKAGE], 1, "line"),
        (["-m", PACKAGE, "demo"], 1, "line"),
        (["-m", PACKAGE, "--help"], 1, "line"),
    ],
)
def test_old_python_is_told_what_is_needed(
    minor: int, args: list[str], status: int, stream: str, tmp_path: os.PathLike[str]
) -> None:
    python = find_python(minor)
    if python is None:
        pytest.skip(f"no Python 3.{minor} here (CI gets it from pyenv)")
    result = run_old(python, args, os.fspath(tmp_path))
    version = subprocess.run(
        [python, "-c", "import sys; print(sys.version.split()[0])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    sentence = f"pyvo_dl needs Python 3.8 or newer; this is {version}"
    assert result.returncode == status
    assert result.stdout == ""
    assert "SyntaxError" not in result.stderr
    if stream == "line":
        assert result.stderr == sentence + "\n"
    else:
        # `import pyvo_dl` raises ImportError, what code around optional imports catches.
        assert result.stderr.rstrip("\n").splitlines()[-1] == f"ImportError: {sentence}"
    assert os.listdir(tmp_path) == []

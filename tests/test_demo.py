"""``python -m pyvo_dl demo`` runs from a plain checkout and checks its own results.

Each test starts the demo in a fresh interpreter whose only way to the
package is ``PYTHONPATH`` (the folder holding it, found from
``pyvo_dl.__file__``), in an empty working folder, with ``TMPDIR`` inside
``tmp_path`` so that what the demo leaves behind can be seen.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

import pyvo_dl

PACKAGE = pyvo_dl.__name__
PACKAGE_PARENT = str(Path(pyvo_dl.__file__).resolve().parent.parent)

#: The line of the seed document's S3 examples, printed once per example.
SEED_LINE = (
    "Downloading chandra/data/byobsid/2/3052/primary/acisf03052N004_cntr_img2.jpg"
    " to acisf03052N004_cntr_img2.jpg ... [Done]"
)
#: What every run shows: downloads, the cache hit, the resumed GET, the S3 error.
COMMON_LINES = (
    "[Done]",
    "Found cached file m31_field1.fits.",
    "Range: bytes=",
    "NoSuchKey",
    "All good",
)
MOTO_AVAILABLE = all(importlib.util.find_spec(name) for name in ("moto", "boto3"))
BUILTIN_S3 = "the demo's built-in minimal S3 endpoint: moto is not installed"

# Makes moto and boto3 unimportable, then runs the package as `python -m` would.
BLOCK_MOTO = f"""
import importlib.abc, runpy, sys

class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("moto", "boto3"):
            raise ModuleNotFoundError("blocked by test_demo: " + name, name=name)
        return None

sys.meta_path.insert(0, _Block())
sys.argv = [{PACKAGE!r}, "demo", "--quick"]
runpy.run_module({PACKAGE!r}, run_name="__main__", alter_sys=True)
"""


def run_python(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run ``python *args`` in ``tmp_path/cwd`` with temporary files under ``tmp_path/tmp``."""
    work, temp = tmp_path / "cwd", tmp_path / "tmp"
    work.mkdir()
    temp.mkdir()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [PACKAGE_PARENT, env.get("PYTHONPATH")]))
    env.update(TMPDIR=str(temp), TEMP=str(temp), TMP=str(temp))
    return subprocess.run(
        [sys.executable, *args],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def assert_demo_succeeded(result: subprocess.CompletedProcess[str]) -> None:
    """Exit 0, the key lines present, nothing unexpected."""
    output = result.stdout
    assert result.returncode == 0, output + result.stderr
    for line in COMMON_LINES:
        assert line in output, f"{line!r} missing from:\n{output}"
    assert output.count(SEED_LINE) == 2, output
    assert "UNEXPECTED" not in output
    assert "Traceback" not in result.stderr, result.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("options", "present", "absent"),
    [
        pytest.param(
            ["--quick", "--keep"],
            ["Kept "],
            ["Kill and resume", "Removed "],
            id="quick-keep",
        ),
        pytest.param(
            [],
            [
                "Kill and resume",
                "SIGKILL" if os.name == "posix" else "killed",
                "Resuming http://127.0.0.1:",
                "only the remainder was fetched",
                "Removed ",
            ],
            ["Kept "],
            id="full",
        ),
    ],
)
def test_demo(tmp_path: Path, options: list[str], present: list[str], absent: list[str]) -> None:
    result = run_python(["-m", PACKAGE, "demo", *options], tmp_path)
    assert_demo_succeeded(result)
    for line in present:
        assert line in result.stdout
    for line in absent:
        assert line not in result.stdout
    expected_s3 = "ThreadedMotoServer" if MOTO_AVAILABLE else BUILTIN_S3
    assert expected_s3 in result.stdout
    # Nothing is written to the working folder; the temporary folder goes unless kept.
    assert list((tmp_path / "cwd").iterdir()) == []
    left = list((tmp_path / "tmp").iterdir())
    if "--keep" in options:
        assert len(left) == 1
        assert f"Kept {left[0]}" in result.stdout
        downloads = sorted(p.name for p in (left[0] / "downloads").iterdir())
        assert downloads == [
            "acisf03052N004_cntr_img2.jpg",
            "m31_field1.fits",
            "m31_field2.fits",
            "m31_mosaic.fits",
            "obs 3052+notes_.txt",
        ]
    else:
        assert left == []


@pytest.mark.slow
def test_demo_without_moto_uses_its_builtin_s3(tmp_path: Path) -> None:
    result = run_python(["-c", BLOCK_MOTO], tmp_path)
    assert_demo_succeeded(result)
    assert BUILTIN_S3 in result.stdout
    assert "ThreadedMotoServer" not in result.stdout
    assert list((tmp_path / "tmp").iterdir()) == []


def test_demo_usage_error(tmp_path: Path) -> None:
    result = run_python(["-m", PACKAGE, "demo", "--no-such-option"], tmp_path)
    assert result.returncode == 2
    assert "unrecognized arguments: --no-such-option" in result.stderr
    assert list((tmp_path / "tmp").iterdir()) == []


def _console_script() -> list[str]:
    """The installed ``pyvo-dl`` script (tox installs the wheel), else what it runs."""
    script = Path(sys.executable).with_name("pyvo-dl")
    if script.exists() and PACKAGE == "pyvo_dl":
        return [str(script)]
    return [sys.executable, "-c", "import sys; from pyvo_dl._cli import main; sys.exit(main())"]


@pytest.mark.slow
def test_demo_is_a_command_of_the_installed_script(tmp_path: Path) -> None:
    """``pyvo-dl demo`` is the same command as ``python -m pyvo_dl demo`` (issue 16.5)."""
    command = _console_script()
    work, temp = tmp_path / "cwd", tmp_path / "tmp"
    work.mkdir()
    temp.mkdir()
    env = dict(os.environ, TMPDIR=str(temp))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [PACKAGE_PARENT, env.get("PYTHONPATH")]))
    result = subprocess.run(
        [*command, "demo", "--quick"], cwd=work, env=env, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert_demo_succeeded(result)
    assert list(temp.iterdir()) == []


def test_help_names_the_demo(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    result = run_python(["-m", PACKAGE, "--help"], tmp_path / "a")
    assert result.returncode == 0
    assert "pyvo-dl demo [--quick] [--keep]" in result.stdout
    demo_help = run_python(["-m", PACKAGE, "demo", "--help"], tmp_path / "b")
    assert demo_help.returncode == 0
    assert demo_help.stdout.startswith("usage: pyvo-dl demo ")

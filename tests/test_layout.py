"""The package's shape: import rows, import cost, vendoring, pickling.

STYLE §6.1: imports point down the rows only; ``import pyvo_dl`` loads no
third-party module and none of the heavy standard modules; the folder can be
copied into another package and works under that name; every public
exception survives pickle with its attributes (SPEC §2.4).
"""

from __future__ import annotations

import ast
import os
import pickle
import shutil
import subprocess
import sys
import textwrap

import pytest

import pyvo_dl

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

    from servers import FaultServer

PACKAGE_DIR = os.path.dirname(pyvo_dl.__file__)
ROOT = os.path.dirname(PACKAGE_DIR)

#: The row of each module (STYLE §6.1, with the orchestration and entry rows
#: split finer: S3 and many-file orchestration sit on the engine, the CLI on
#: the API); a module imports only from lower rows (row 1 modules may also
#: import each other).
ROWS = {
    "_errors": 0,
    "_records": 0,
    "_names": 1,
    "_httputil": 1,
    "_retry": 1,
    "_integrity": 1,
    "_s3url": 1,
    "_awsconfig": 1,
    "_items": 1,
    "_listing": 1,
    "_transport": 2,
    "_partfile": 2,
    "_auth": 2,
    "_progress": 2,
    "_signing": 2,
    "_exchange": 3,
    "_parallel": 4,
    "_engine": 5,
    "_s3": 6,
    "_many": 6,
    "_tree": 6,
    "_api": 7,
    "_demo": 8,
    "_cli": 9,
    "__main__": 10,
    "__init__": 10,
}


def _package_imports(module: str) -> set[str]:
    """The pyvo_dl modules that ``module`` imports (relative imports), anywhere in it."""
    with open(os.path.join(PACKAGE_DIR, module + ".py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module)
            else:
                found.update(alias.name for alias in node.names)
    return found


def _runtime_imports(module: str) -> set[str]:
    """Relative imports outside ``if TYPE_CHECKING:`` blocks."""
    with open(os.path.join(PACKAGE_DIR, module + ".py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for child in ast.walk(node):
                skip.add(id(child))
    return {
        node.module or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level == 1 and id(node) not in skip
        for alias in node.names
    }


def test_every_module_has_a_row() -> None:
    modules = {name[:-3] for name in os.listdir(PACKAGE_DIR) if name.endswith(".py")}
    assert modules <= set(ROWS), f"give these modules a row: {modules - set(ROWS)}"


@pytest.mark.parametrize("module", sorted(m for m in ROWS if m not in ("__init__", "__main__")))
def test_imports_point_down(module: str) -> None:
    if not os.path.exists(os.path.join(PACKAGE_DIR, module + ".py")):
        pytest.skip(f"{module} is not written yet")
    row = ROWS[module]
    # "from . import __version__" reads the package's literal at call time.
    for imported in _runtime_imports(module) - {"__version__"}:
        allowed = ROWS[imported] < row or (row == 1 and ROWS[imported] == 1)
        assert allowed, f"{module} (row {row}) imports {imported} (row {ROWS[imported]})"


def test_row_one_imports_no_cycles() -> None:
    row_one = [m for m, r in ROWS.items() if r == 1]
    graph = {m: {i for i in _package_imports(m) if ROWS.get(i) == 1} for m in row_one}

    def visit(node: str, path: tuple[str, ...]) -> None:
        assert node not in path, f"import cycle: {' -> '.join((*path, node))}"
        for nxt in graph[node]:
            visit(nxt, (*path, node))

    for module in row_one:
        visit(module, ())


HEAVY = ["http.client", "ssl", "logging", "concurrent.futures", "xml", "typing", "threading",
         "urllib.request", "email", "json", "dataclasses"]  # fmt: skip
THIRD_PARTY = ["botocore", "boto3", "requests", "urllib3", "astropy", "pyvo", "tqdm", "certifi"]


def test_import_is_light() -> None:
    code = textwrap.dedent(
        f"""
        import sys
        before = set(sys.modules)
        import pyvo_dl
        new = set(sys.modules) - before
        heavy = [m for m in {HEAVY + THIRD_PARTY!r} if m in new]
        print(",".join(heavy))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    assert result.stdout.strip() == "", f"import pyvo_dl loaded: {result.stdout.strip()}"


#: Modules a plain-http download has no use for (SPEC §6): what it does use
#: (http.client, with the email parser, ssl and socket under it; json for
#: its state) is imported at the first request; these never are, until
#: something needs them (a checksum, a log handler, parallel ranges, an S3
#: listing, a session). Its records are plain classes (_records): dataclasses
#: would bring inspect, a third of what the first download imports. The
#: host goes to getaddrinfo as bytes: a str is encoded with the idna codec,
#: whose first use imports encodings.idna, stringprep and unicodedata.
NOT_FOR_A_PLAIN_DOWNLOAD = [
    "hashlib", "zlib", "logging", "concurrent", "xml", "urllib.request", "typing", "html.parser",
    "asyncio", "subprocess", "tempfile", "shutil", "botocore", "requests",
    "dataclasses", "inspect", "encodings.idna", "stringprep", "unicodedata",
]  # fmt: skip


def test_first_plain_download_imports_only_what_it_uses(
    http_server: FaultServer, tmp_path: Path
) -> None:
    """A first http download, with its progress line: http.client, none of the modules above.

    Run with -S: this machine's site hook imports some of them at start-up
    (a .pth file), which would hide what pyvo_dl itself imports.
    """
    url = http_server.add_file("/first/data.fits", os.urandom(3 * 1024 * 1024))
    code = textwrap.dedent(
        f"""
        import sys
        before = set(sys.modules)
        from pyvo_dl import http_download
        http_download({url!r}, {str(tmp_path / "data.fits")!r})
        new = set(sys.modules) - before
        print(",".join(m for m in {NOT_FOR_A_PLAIN_DOWNLOAD!r} if m in new))
        print("http.client" in new)
        """
    )
    result = subprocess.run(
        [sys.executable, "-S", "-c", code],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    loaded, through_http_client = result.stdout.splitlines()[-2:]  # after the progress line
    assert loaded.strip() == "", f"the first download loaded: {loaded}"
    assert through_http_client == "True"


def test_first_plain_download_compiles_none_of_our_patterns(
    http_server: FaultServer, tmp_path: Path
) -> None:
    """Import and a download of a usual name compile no pattern of pyvo_dl's.

    They are strings compiled at their first use (_names, _httputil): the
    character class of unsafe names alone costs 4.5 M instructions to compile.
    Every pattern compiled is seen through ``re._compile``, which
    ``re.compile``, ``re.sub`` and the others all call, on 3.8 to 3.13.
    """
    url = http_server.add_file("/first/plain-name.fits", os.urandom(4096))
    code = textwrap.dedent(
        f"""
        import re
        seen = []
        compile_ = re._compile
        def spy(pattern, flags):
            seen.append(pattern)
            return compile_(pattern, flags)
        re._compile = spy
        from pyvo_dl import _httputil, _names, http_download
        ours = {{
            value for module in (_httputil, _names) for name, value in vars(module).items()
            if name.isupper() and isinstance(value, str) and name.startswith("_")
        }}
        http_download({url!r}, {str(tmp_path / "plain-name.fits")!r}, progress=False)
        print(sorted(ours & set(seen)))
        _names.sanitize_filename("a:b.fits")  # an unusual name: its pattern is compiled
        print(_names._UNSAFE_CHARS in ours and _names._UNSAFE_CHARS in seen)
        """
    )
    result = subprocess.run(
        [sys.executable, "-S", "-c", code],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    compiled, spy_works = result.stdout.splitlines()[-2:]
    assert compiled == "[]", f"compiled at import or for a plain download: {compiled}"
    assert spy_works == "True", "the spy does not see a pattern compiled at its first use"


def test_public_names() -> None:
    assert set(pyvo_dl.__all__) == {
        "AllSourcesFailedError", "DownloadedPath",
        "DownloadError", "DownloadWarning", "HTTPStatusError", "IntegrityError",
        "MissingDependencyError", "S3Error", "aws_download", "download", "download_many",
        "http_download",
    }  # fmt: skip
    for name in pyvo_dl.__all__:
        obj = getattr(pyvo_dl, name)
        assert obj.__doc__, f"{name} has no docstring"
        assert obj.__module__ == "pyvo_dl"
    assert isinstance(pyvo_dl.__version__, str)


EXCEPTIONS = [
    pyvo_dl.DownloadError("boom for http://x/y"),
    pyvo_dl.DownloadError("disk full", 28, "/tmp/x.part"),
    pyvo_dl.HTTPStatusError(404, "http://x/y", "Not Found", "check the URL"),
    pyvo_dl.S3Error("NoSuchKey", 404, "b", "k/x", "no key", "eu-west-1", "REQ1", "http://u", "h"),
    pyvo_dl.IntegrityError("http://x/y", "/tmp/y", "sha256", "ab", "cd"),
    pyvo_dl.MissingDependencyError("botocore", "signed S3 requests"),
]


@pytest.mark.parametrize("error", EXCEPTIONS, ids=lambda e: type(e).__name__)
def test_exceptions_pickle_with_attributes(error: BaseException) -> None:
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is type(error)
    assert str(clone) == str(error)
    public = {k: v for k, v in vars(error).items() if not k.startswith("_")}
    assert {k: v for k, v in vars(clone).items() if not k.startswith("_")} == public
    if isinstance(error, OSError):
        assert (clone.errno, clone.filename) == (error.errno, error.filename)


def test_all_sources_failed_pickles_with_each_failure() -> None:
    """Its failures are exceptions (equal only to themselves): compared by type and text."""
    error = pyvo_dl.AllSourcesFailedError(
        "x.fits",
        [("https://h/x.fits", EXCEPTIONS[2]), ("s3://b/k/x", EXCEPTIONS[3])],
    )
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is pyvo_dl.AllSourcesFailedError
    assert str(clone) == str(error)
    assert clone.target == "x.fits"
    assert [(s, type(e), str(e)) for s, e in clone.failures] == [
        (s, type(e), str(e)) for s, e in error.failures
    ]
    assert clone.failures[1][1].code == "NoSuchKey"


def test_downloaded_path_is_a_str_that_pickles_with_its_source() -> None:
    path = pyvo_dl.DownloadedPath("out/x.fits", "s3://b/x.fits")
    clone = pickle.loads(pickle.dumps(path))
    assert (clone, clone.source, type(clone)) == ("out/x.fits", "s3://b/x.fits", type(path))
    assert os.path.join(path, "a") == os.path.join("out/x.fits", "a")
    assert repr(path) == "'out/x.fits'"


def test_exception_hierarchy() -> None:
    assert issubclass(pyvo_dl.DownloadError, OSError)
    assert issubclass(pyvo_dl.S3Error, pyvo_dl.HTTPStatusError)
    assert issubclass(pyvo_dl.HTTPStatusError, pyvo_dl.DownloadError)
    assert issubclass(pyvo_dl.IntegrityError, pyvo_dl.DownloadError)
    assert issubclass(pyvo_dl.MissingDependencyError, ImportError)
    assert issubclass(pyvo_dl.DownloadWarning, UserWarning)
    assert 'pip install "pyvo-dl[s3]"' in str(EXCEPTIONS[-1])
    assert str(EXCEPTIONS[1]) == "disk full"
    assert EXCEPTIONS[1].errno == 28


def test_vendored_copy_works(tmp_path: Path) -> None:
    """Copy pyvo_dl/ into somepkg/_vendor/ and download a file through that name."""
    vendor = tmp_path / "site" / "somepkg" / "_vendor"
    vendor.mkdir(parents=True)
    (vendor.parent / "__init__.py").write_text("")
    (vendor / "__init__.py").write_text("")
    shutil.copytree(PACKAGE_DIR, vendor / "pyvo_dl", ignore=shutil.ignore_patterns("__pycache__"))
    code = textwrap.dedent(
        """
        import http.server, os, pickle, sys, threading
        from somepkg._vendor import pyvo_dl
        from somepkg._vendor.pyvo_dl import http_download, HTTPStatusError
        assert "pyvo_dl" not in sys.modules, "the vendored copy imported the installed one"
        os.makedirs("srv"); open("srv/data.fits", "wb").write(b"x" * 5000)
        handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory="srv")
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = "http://127.0.0.1:%d/" % server.server_port
        path = http_download(url + "data.fits", progress=False)
        assert open(path, "rb").read() == b"x" * 5000
        try:
            http_download(url + "missing.fits", progress=False)
        except HTTPStatusError as e:
            assert type(e).__module__ == "somepkg._vendor.pyvo_dl", type(e).__module__
            assert pickle.loads(pickle.dumps(e)).status == 404
        else:
            raise AssertionError("no error for a missing file")
        server.shutdown()
        print("vendored ok")
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(tmp_path / "site")
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env,
        timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "vendored ok" in result.stdout


def test_vendored_copy_says_install_botocore(tmp_path: Path) -> None:
    """A vendored copy has no pyvo-dl[s3] extra to install: it names botocore (issue 16.8)."""
    vendor = tmp_path / "site" / "somepkg" / "_vendor"
    vendor.mkdir(parents=True)
    (vendor.parent / "__init__.py").write_text("")
    (vendor / "__init__.py").write_text("")
    shutil.copytree(PACKAGE_DIR, vendor / "pyvo_dl", ignore=shutil.ignore_patterns("__pycache__"))
    code = textwrap.dedent(
        """
        import importlib.abc, sys

        class Hide(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.partition(".")[0] in ("botocore", "boto3"):
                    raise ImportError("hidden: " + name)

        sys.meta_path.insert(0, Hide())
        from somepkg._vendor.pyvo_dl import aws_download, MissingDependencyError
        try:
            aws_download("s3://bkt/x.fits", aws_profile="someone", progress=False)
        except MissingDependencyError as e:
            print(e)
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(tmp_path / "site")
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env,
        timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "install it with: pip install botocore" in result.stdout
    assert "pyvo-dl[s3]" not in result.stdout


def test_runs_from_a_checkout_without_install(tmp_path: Path) -> None:
    """``python -m pyvo_dl`` from a plain folder on PYTHONPATH (an HPC node without pip)."""
    shutil.copytree(PACKAGE_DIR, tmp_path / "checkout" / "pyvo_dl",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(tmp_path / "checkout")
    code = "import pyvo_dl, sys; print(pyvo_dl.__file__)"
    result = subprocess.run(
        [sys.executable, "-s", "-c", code], capture_output=True, text=True, cwd=tmp_path,
        env=env, check=True,
    )  # fmt: skip
    assert result.stdout.startswith(str(tmp_path / "checkout"))
    result = subprocess.run(
        [sys.executable, "-s", "-m", "pyvo_dl", "--help"], capture_output=True, text=True,
        cwd=tmp_path, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "pyvo-dl" in result.stdout


def test_protocol_modules_leave_heavy_stdlib_unloaded() -> None:
    """The modules every download runs through import none of these (SPEC §6).

    email.utils alone (with calendar, datetime, socket...) cost more than a
    whole 1 MiB download from a local server.
    """
    lazy = ["typing", "email", "email.utils", "calendar", "hashlib", "random", "json", "datetime"]
    code = textwrap.dedent(
        f"""
        import sys
        before = set(sys.modules)
        import pyvo_dl._httputil, pyvo_dl._integrity, pyvo_dl._retry, pyvo_dl._names
        new = set(sys.modules) - before
        print(sorted(m for m in {lazy!r} if m in new))
        """
    )
    # -S: a .pth hook in site-packages (certifi, coverage...) may load typing
    # or random before the code runs, hiding what these modules import.
    result = subprocess.run(
        [sys.executable, "-S", "-c", code],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    assert result.stdout.strip() == "[]", f"these modules loaded: {result.stdout.strip()}"

"""The documentation builds: every example runs and every relative link resolves (issue 7).

"Building" the docs (plain Markdown: README.md and docs/*.md) means, here:

- every fenced code block has a language; ```python, ```pycon and ```bash
  (or ```sh) blocks are run, in page order, each page in a fresh folder
  with one namespace shared by its Python blocks (a page reads top to
  bottom, so a later block may use an earlier one's names); ```text,
  ```ini and the like are displays, not run. The pages of :data:`NOT_RUN`
  (another part of the project documents its own tools there) are only
  checked, not run;
- a block that cannot run here is marked in the Markdown, on the line just
  before its opening fence, with ``<!-- skip: reason -->``; every skip
  must give a reason, and the number of skips per page is pinned in
  :data:`EXPECTED_SKIPS` so that adding one is a decision;
- every relative link (and its ``#anchor``) points at something that exists;
- docs/api.md is what docs/gen_api.py makes of today's docstrings.

The examples read as a user would type them, with real archive addresses.
Before a block runs, :meth:`World.rewrite` points those at loopback servers
(:data:`REWRITES`): HEASARC and a generic archive are FaultServers, an
institute's archive with a private CA is a TLS FaultServer (its CA file is
written where the docs say it is), the institute's proxy is the HEASARC
FaultServer (which also answers proxied requests), and S3 is moto, through
``AWS_ENDPOINT_URL`` (or by address, for an ``endpoint_url=`` example). The
files the pages name are served by all of them (:func:`populate`). Output
of ``pycon`` examples is compared after the reverse rewrite, so the docs
show real host names and the library's real messages.

Python blocks run in this process; a block with ``if __name__ ==
"__main__":`` is a script and runs as one (``python example.py``), as do
bash blocks (``bash -e``, ``pyvo-dl`` and ``python3`` found first on
``PATH`` and running this interpreter and this copy of pyvo_dl). A bash
block with ``#SBATCH --array=A-B`` is a SLURM batch script: it runs once per
array task, with the ``SLURM_*`` variables a task would see. Other bash
blocks see ``SLURM_ARRAY_TASK_ID=1`` and ``SLURM_ARRAY_TASK_COUNT=2``, as in
the first task of a two-task array, and find a ``urls.txt`` of catalogue
URLs in their folder.
"""

from __future__ import annotations

import contextlib
import doctest
import hashlib
import importlib.util
import io
import os
import re
import stat
import subprocess
import sys
import warnings
from dataclasses import dataclass

import pytest

import pyvo_dl
from servers import s3_client_for

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path
    from typing import Any

    import trustme

    from servers import FaultServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
#: The folder holding the pyvo_dl the tests import: "/path/to/checkout" in the docs.
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(pyvo_dl.__file__)))


def _pages() -> list[str]:
    names = sorted(name for name in os.listdir(DOCS) if name.endswith(".md"))
    return ["README.md", "CHANGES.md"] + [f"docs/{name}" for name in names]


PAGES = _pages()
RUNNABLE = frozenset({"python", "pycon", "bash", "sh"})
#: Languages shown but not run: output, help text, configuration files.
DISPLAY = frozenset({"text", "ini", "toml"})
#: Skipped blocks per page; a page not listed has none.
EXPECTED_SKIPS = {
    "README.md": 3,
    "docs/hpc.md": 4,
    "docs/progress-capture.md": 1,
    "docs/quickstart.md": 1,
    "docs/troubleshooting.md": 2,
}
#: Pages whose examples this test does not run, and why. Their links and
#: code block languages are still checked.
NOT_RUN = {
    "docs/benchmarks.md": "its commands run the benchmark suite itself (minutes, "
    "and it installs nginx, curl and aria2 with apt-get)",
}

#: Seconds any one example may take.
EXAMPLE_TIMEOUT = 120

# ------------------------------------------------------------- catalogue ---

#: What the examples download. HEASARC's copy of Chandra ObsID 3052 is on
#: the archive's web server (under /FTP/) and in the public bucket nasa-heasarc.
OBS3052 = "chandra/data/byobsid/2/3052/primary/"
OBS3052_FILES = {
    "acisf03052N004_cntr_img2.jpg": 49_174,
    "acisf03052N004_full_img2.jpg": 61_020,
    "acisf03052N004_cntr_img2.fits.gz": 120_411,
    "acisf03052N004_full_img2.fits.gz": 431_930,
    "acisf03052N004_evt2.fits.gz": 1_503_333,
}
#: A bucket that only credentials may read (aws_profile=, session=).
PRIVATE_BUCKET = "my-team-bucket"
PRIVATE_KEYS = {"ngc1068/acisf00344N004_evt2.fits": 80_000}
#: The generic archive: a file behind a login, one refused, one busy, one that stalls.
ARCHIVE_LOGIN = ("alice", "correct horse battery staple")
ARCHIVE_FILES = {
    "/proprietary/obs1234_evt2.fits": 40_000,
    "/embargoed/obs5678_evt2.fits": 40_000,
    "/busy/catalog.fits": 40_000,
    "/slow/cube.fits": 200_000,
}
#: The institute's archive, whose certificate comes from the institute's CA.
INSTITUTE_FILES = {"/data/obs42/image.fits": 30_000}
CA_FILE = "/etc/pki/tls/certs/institute-ca.pem"

#: Real addresses in the docs, and what stands for each here (World.rewrite).
REWRITES = (
    ("https://heasarc.gsfc.nasa.gov", "heasarc"),
    ("https://archive.example.org", "archive"),
    ("https://archive.institute.example", "institute"),
    ("https://s3.institute.example", "moto"),
    ("http://proxy.institute.example:3128", "heasarc"),
    (CA_FILE, "ca_file"),
    ("/path/to/checkout", "checkout"),
)


def content(name: str, size: int) -> bytes:
    """Deterministic bytes for a catalogue file (distinct per name and offset)."""
    seed = hashlib.sha256(name.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


def populate(heasarc: FaultServer, archive: FaultServer, institute: FaultServer, moto: str) -> None:
    """Serve every file the docs name, on every server that stands for its host."""
    client = s3_client_for(moto)
    client.create_bucket(Bucket="nasa-heasarc", ACL="public-read")
    for name, size in OBS3052_FILES.items():
        data = content(name, size)
        kind = "image/jpeg" if name.endswith(".jpg") else "application/gzip"
        heasarc.add_file("/FTP/" + OBS3052 + name, data, content_type=kind)
        client.put_object(Bucket="nasa-heasarc", Key=OBS3052 + name, Body=data, ACL="public-read")
    client.create_bucket(Bucket=PRIVATE_BUCKET)
    for key, size in PRIVATE_KEYS.items():
        client.put_object(Bucket=PRIVATE_BUCKET, Key=key, Body=content(key, size))
    for path, size in ARCHIVE_FILES.items():
        archive.add_file(path, content(path, size))
    archive.set_fault("/proprietary/obs1234_evt2.fits", basic_auth=ARCHIVE_LOGIN)
    archive.set_fault("/embargoed/obs5678_evt2.fits", status=403)
    archive.set_fault("/busy/catalog.fits", status=503)
    archive.set_fault("/slow/cube.fits", stall=60)  # stop() ends the wait
    for path, size in INSTITUTE_FILES.items():
        institute.add_file(path, content(path, size))
    folder = "/FTP/" + OBS3052.rsplit("/", 2)[0] + "/"  # .../3052/, above primary/
    heasarc.add_file(folder, apache_listing(folder, ["primary/"]), content_type=_LISTING_TYPE)
    heasarc.add_file(
        "/FTP/" + OBS3052,
        apache_listing("/FTP/" + OBS3052, sorted(OBS3052_FILES)),
        content_type=_LISTING_TYPE,
    )


_LISTING_TYPE = "text/html;charset=UTF-8"


def apache_listing(path: str, names: list[str]) -> bytes:
    """A listing page as Apache 2.4's mod_autoindex writes it (FancyIndexing, HTMLTable).

    The HEASARC stand-in is a FaultServer; this imitates the real server's
    page (captured from /usr/sbin/apache2 with the configuration of
    tests/webservers.py, which tests/test_trees.py runs for real): sort
    links, an absolute "Parent Directory" link, relative escaped entries.
    """
    import urllib.parse

    parent = path.rstrip("/").rsplit("/", 1)[0] + "/"
    sort_links = (
        '<th><a href="?C=N;O=D">Name</a></th><th><a href="?C=M;O=A">Last modified</a></th>'
        '<th><a href="?C=S;O=A">Size</a></th>'
    )
    rows = [
        f'<tr><th valign="top">&nbsp;</th>{sort_links}</tr>',
        f'<tr><td valign="top">&nbsp;</td><td><a href="{parent}">Parent Directory</a></td></tr>',
    ]
    for name in names:
        href = urllib.parse.quote(name)
        rows.append(f'<tr><td valign="top">&nbsp;</td><td><a href="{href}">{name}</a></td></tr>')
    title = path.rstrip("/")
    page = (
        '<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 4.01//EN" '
        '"http://www.w3.org/TR/html4/strict.dtd">\n'
        f"<html>\n <head>\n  <title>Index of {title}</title>\n </head>\n <body>\n"
        f"<h1>Index of {title}</h1>\n  <table>\n" + "\n".join(rows) + "\n</table>\n</body></html>\n"
    )
    return page.encode("utf-8")


# ---------------------------------------------------------------- blocks ---

_FENCE = re.compile(r"^(?P<fence>```+|~~~+)(?P<lang>[^`\s]*)\s*$")
_SKIP = re.compile(r"^<!--\s*skip\b:?(?P<reason>.*?)-->\s*$")
#: ``<!-- needs: astropy -->``: run only where these (optional) modules import.
_NEEDS = re.compile(r"^<!--\s*needs:\s*(?P<modules>[\w., ]+?)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    page: str
    line: int
    language: str
    code: str
    #: None when not marked; the reason (possibly empty) when marked to skip.
    skip: str | None
    #: Optional modules the block imports (``<!-- needs: ... -->``): where one
    #: is missing the block is not run and the page's test reports a skip.
    needs: tuple[str, ...] = ()

    @property
    def where(self) -> str:
        """``page:line`` of the opening fence."""
        return f"{self.page}:{self.line}"


def read_page(page: str) -> str:
    """Return the text of a page (a path relative to the repository root)."""
    with open(os.path.join(ROOT, page), encoding="utf-8") as f:
        return f.read()


def read_blocks(page: str) -> list[Block]:
    """Return the fenced code blocks of ``page``, in order.

    Raises
    ------
    AssertionError
        For a fence that is never closed.
    """
    lines = read_page(page).splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        start, fence = i, match.group("fence")
        end = next((j for j in range(i + 1, len(lines)) if lines[j].rstrip() == fence), None)
        assert end is not None, f"{page}:{start + 1}: code block never closed"
        previous = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        marker = _SKIP.match(previous.strip())
        needs = _NEEDS.match(previous.strip())
        blocks.append(
            Block(
                page=page,
                line=start + 1,
                language=match.group("lang").lower(),
                code="\n".join(lines[start + 1 : end]) + "\n",
                skip=marker.group("reason").strip() if marker else None,
                needs=tuple(m.strip() for m in needs.group("modules").split(",")) if needs else (),
            )
        )
        i = end + 1
    return blocks


def prose(page: str) -> str:
    """The page without its code blocks (which may hold '#' lines and brackets)."""
    lines = read_page(page).splitlines()
    for block in read_blocks(page):
        count = block.code.count("\n") + 1
        for j in range(block.line - 1, block.line + count):
            lines[j] = ""
    return "\n".join(lines)


# ----------------------------------------------------------------- world ---


class World:
    """The loopback stand-ins for the hosts the docs name, and how to run a block."""

    def __init__(self, folder: Path, targets: dict[str, str]) -> None:
        self.folder = folder
        self.targets = targets
        self.namespace: dict[str, Any] = {"__name__": "__docs__", "password": ARCHIVE_LOGIN[1]}
        self.shims = folder.parent / "bin"
        self._make_shims()

    def rewrite(self, text: str) -> str:
        """Point the real addresses of ``text`` at the loopback servers."""
        for real, name in REWRITES:
            text = text.replace(real, self.targets[name])
        return text

    def unrewrite(self, text: str) -> str:
        """Put the real addresses back into output (servers' URLs only)."""
        for real, name in REWRITES:
            if real.startswith("http") and name != "moto":
                # (?!\d): the server on port 4000 is not the one on port 40001.
                text = re.sub(re.escape(self.targets[name]) + r"(?!\d)", real, text)
        return text

    def _make_shims(self) -> None:
        # pyvo-dl, python3 and python run this interpreter, whatever PATH holds.
        self.shims.mkdir(exist_ok=True)
        commands = {
            "pyvo-dl": f'exec "{sys.executable}" -m pyvo_dl "$@"\n',
            "python3": f'exec "{sys.executable}" "$@"\n',
            "python": f'exec "{sys.executable}" "$@"\n',
        }
        for name, body in commands.items():
            path = self.shims / name
            path.write_text("#!/bin/sh\n" + body)
            path.chmod(path.stat().st_mode | stat.S_IXUSR)

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a subprocess example."""
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join([str(self.shims), env.get("PATH", "")])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [PACKAGE_PARENT, env.get("PYTHONPATH")]))
        env.setdefault("SLURM_ARRAY_TASK_ID", "1")
        env.setdefault("SLURM_ARRAY_TASK_COUNT", "2")
        env.update(extra)
        return env

    # -- running -------------------------------------------------------------

    def run(self, block: Block) -> None:
        """Run one block; fail the test with its location and output if it fails."""
        code = self.rewrite(block.code)
        if block.language == "pycon":
            self._run_pycon(block)
        elif block.language in ("bash", "sh"):
            self._run_bash(block, code)
        elif re.search(r"^if __name__ == .__main__.:", code, re.M):
            self._run_script(block, code)
        else:
            self._run_python(block, code)

    def _run_python(self, block: Block, code: str) -> None:
        out = io.StringIO()
        try:
            with shown_warnings(), contextlib.redirect_stdout(out):
                exec(compile(code, f"<{block.where}>", "exec"), self.namespace)
        except Exception as exc:
            pytest.fail(f"{block.where}: the example raised {exc!r}\noutput:\n{out.getvalue()}")

    def _run_pycon(self, block: Block) -> None:
        parser = doctest.DocTestParser()
        test = parser.get_doctest(block.code, self.namespace, block.where, block.page, block.line)
        test.globs = self.namespace  # DocTest copies it; a page shares one namespace
        for example in test.examples:
            # The source goes to the loopback servers; the expected output
            # keeps the real addresses (the checker maps the output back).
            example.source = self.rewrite(example.source)
        runner = doctest.DocTestRunner(checker=_LoopbackChecker(self), optionflags=doctest.ELLIPSIS)
        report: list[str] = []
        with shown_warnings():
            result = runner.run(test, out=report.append, clear_globs=False)
        assert result.failed == 0, f"{block.where}: the example's output differs:\n" + "".join(
            report
        )

    def _run_script(self, block: Block, code: str) -> None:
        script = self.folder / f"example_{block.line}.py"
        script.write_text(code)
        self._check_process(block, [sys.executable, str(script)], self.env())

    def _run_bash(self, block: Block, code: str) -> None:
        script = self.folder / f"example_{block.line}.sh"
        script.write_text(code)
        array = re.search(r"^#SBATCH\s+--array=(\d+)-(\d+)\s*$", code, re.M)
        if array is None:
            self._check_process(block, ["bash", "-e", str(script)], self.env())
            return
        first, last = int(array.group(1)), int(array.group(2))
        for task in range(first, last + 1):
            env = self.env(
                SLURM_ARRAY_TASK_ID=str(task),
                SLURM_ARRAY_TASK_COUNT=str(last - first + 1),
                SLURM_ARRAY_TASK_MIN=str(first),
                SLURM_ARRAY_TASK_MAX=str(last),
                SLURM_ARRAY_JOB_ID="4242",
                SLURM_JOB_ID=str(4242 + task),
                SLURM_SUBMIT_DIR=str(self.folder),
            )
            self._check_process(block, ["bash", "-e", str(script)], env)

    def _check_process(self, block: Block, command: list[str], env: dict[str, str]) -> None:
        result = subprocess.run(
            command,
            cwd=self.folder,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=EXAMPLE_TIMEOUT,
            check=False,
        )
        assert result.returncode == 0, (
            f"{block.where}: exit status {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )


class _LoopbackChecker(doctest.OutputChecker):
    """Compares an example's output with the loopback addresses put back to the real ones."""

    def __init__(self, world: World) -> None:
        self.world = world

    def check_output(self, want: str, got: str, optionflags: int) -> bool:
        return super().check_output(want, self.world.unrewrite(got), optionflags)

    def output_difference(self, example: doctest.Example, got: str, optionflags: int) -> str:
        return super().output_difference(example, self.world.unrewrite(got), optionflags)


@contextlib.contextmanager
def shown_warnings() -> Iterator[None]:
    """Show DownloadWarning as a user sees it (``DownloadWarning: message``), on stdout.

    pytest turns warnings into errors; the docs show what a user sees. Only
    the library's own warnings are shown: anything else an example warns
    about is still an error.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("always", pyvo_dl.DownloadWarning)

        def show(message: Any, category: Any, *args: Any, **kwargs: Any) -> None:
            print(f"{category.__name__}: {message}")

        warnings.showwarning = show
        yield


@pytest.fixture
def world(
    http_server: FaultServer,
    other_server: FaultServer,
    https_server: FaultServer,
    s3_endpoint: str,
    ca: trustme.CA,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> World:
    """Loopback stand-ins for every host the docs name, populated, in a fresh folder."""
    populate(http_server, other_server, https_server, s3_endpoint)
    ca_file = tmp_path / "institute-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    credentials = tmp_path / "aws-credentials"
    credentials.write_text(
        "[aws_user]\naws_access_key_id = testing\naws_secret_access_key = testing\n"
    )
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    targets = {
        "heasarc": http_server.base_url,
        "archive": other_server.base_url,
        "institute": https_server.base_url,
        "moto": s3_endpoint,
        "ca_file": str(ca_file),
        "checkout": PACKAGE_PARENT,
    }
    world = World(folder, targets)
    urls = [f"https://heasarc.gsfc.nasa.gov/FTP/{OBS3052}{name}" for name in OBS3052_FILES]
    (folder / "urls.txt").write_text(world.rewrite("\n".join(urls) + "\n"))
    # Nothing is predefined: an example that a reader pastes must run as it
    # is, so every name it uses is defined on its page (issue 16.12).
    return world


# ----------------------------------------------------------------- tests ---


def test_pages_are_found() -> None:
    assert {"README.md", "docs/index.md", "docs/quickstart.md", "docs/api.md"} <= set(PAGES)


@pytest.mark.parametrize("page", PAGES)
def test_every_block_has_a_known_language(page: str) -> None:
    for block in read_blocks(page):
        assert block.language in RUNNABLE | DISPLAY, (
            f"{block.where}: code block language {block.language!r} is neither run "
            f"({sorted(RUNNABLE)}) nor a display ({sorted(DISPLAY)})"
        )


@pytest.mark.parametrize("page", PAGES)
def test_skips_have_reasons_and_are_counted(page: str) -> None:
    skipped = [block for block in read_blocks(page) if block.skip is not None]
    for block in skipped:
        assert block.skip, f"{block.where}: <!-- skip: ... --> needs a reason"
        assert block.language in RUNNABLE, f"{block.where}: only runnable blocks need a skip"
    assert len(skipped) == EXPECTED_SKIPS.get(page, 0), (
        f"{page} skips {len(skipped)} blocks ({[b.where for b in skipped]}); "
        "update EXPECTED_SKIPS if that is intended"
    )


@pytest.mark.parametrize("page", PAGES)
def test_examples_run(page: str, world: World) -> None:
    if page in NOT_RUN:
        pytest.skip(f"{page}: {NOT_RUN[page]}")
    missing = []
    for block in read_blocks(page):
        if block.language in RUNNABLE and block.skip is None:
            absent = [m for m in block.needs if importlib.util.find_spec(m) is None]
            if absent:
                missing.append(f"{block.where} needs {', '.join(absent)}, not installed")
                continue
            world.run(block)
    if missing:
        pytest.skip("; ".join(missing))  # after every other block of the page ran


def test_readme_starts_with_the_two_commands() -> None:
    """A new user's first two commands, exactly; .ci/run runs the second as it is."""
    first = next(block for block in read_blocks("README.md") if block.language == "bash")
    commands = [line.split("#")[0].strip() for line in first.code.splitlines()]
    assert commands == ["python3 -m pyvo_dl demo", ".ci/tox -e py"]
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as f:
        assert "\n.ci/tox -e py\n" in f.read()


def test_ci_runs_every_env_of_the_envlist() -> None:
    """.ci/run's envs (README's python3 env plus the others) are tox's envlist, and scale."""
    import configparser

    config = configparser.ConfigParser()
    config.read(os.path.join(ROOT, "tox.ini"), encoding="utf-8")
    envlist = [env.strip() for env in config["tox"]["envlist"].split(",")]
    interpreters = [f"py3{minor}" for minor in range(8, 14)]
    assert envlist == [*interpreters, "lint", "type", "nobotocore"]
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as f:
        script = f.read()
    loop = re.search(r"for env in ([^;]+); do", script)
    assert loop, "the loop over tox envs is gone from .ci/run"
    assert loop.group(1).split() == envlist
    # The env out of the envlist (a contributor's `tox p`), run by CI all the same.
    assert "testenv:scale" in config
    assert '\nothers="scale,$others"\n' in script


def test_tox_bench_comment_names_what_the_suite_installs() -> None:
    """tox.ini's note on the bench env names every package benchmarks/environment.py installs."""
    import ast

    with open(os.path.join(ROOT, "benchmarks", "environment.py"), encoding="utf-8") as f:
        module = ast.parse(f.read())
    values = {
        target.id: ast.literal_eval(node.value)
        for node in module.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name) and target.id in ("DEBIAN_PACKAGES", "VENV_PACKAGES")
    }
    packages = [*values["DEBIAN_PACKAGES"].values(), *values["VENV_PACKAGES"]]
    with open(os.path.join(ROOT, "tox.ini"), encoding="utf-8") as f:
        tox = f.read()
    comment = re.search(r"((?:^#.*\n)+)\[testenv:bench\]", tox, re.MULTILINE)
    assert comment, "the comment above [testenv:bench] is gone"
    words = set(re.findall(r"[\w.\[\]-]+", comment.group(1)))
    assert [name for name in packages if name not in words] == []


def test_api_md_is_current() -> None:
    """docs/api.md is docs/gen_api.py's rendering of today's docstrings."""
    spec = importlib.util.spec_from_file_location("gen_api", os.path.join(DOCS, "gen_api.py"))
    assert spec is not None
    assert spec.loader is not None
    gen_api = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen_api)
    assert read_page("docs/api.md") == gen_api.render(), (
        "docs/api.md is out of date: run python docs/gen_api.py"
    )


# ----------------------------------------------------------------- links ---

_LINK = re.compile(r"(?<!\\)\[(?P<text>[^\]]*)\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")
_CODE_SPAN = re.compile(r"`+[^`]*`+")
_HEADING = re.compile(r"^(#{1,6})\s+(?P<title>.+?)\s*#*\s*$")


def github_anchor(title: str) -> str:
    """The fragment GitHub gives a heading: lower case, punctuation dropped, spaces to '-'.

    Examples
    --------
    >>> github_anchor("`aws_download` and S3: a guide (v2)")
    'aws_download-and-s3-a-guide-v2'
    """
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title)  # a link's text only
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(page: str) -> set[str]:
    """Every heading anchor of ``page``, with GitHub's ``-1``, ``-2`` for repeats."""
    found: set[str] = set()
    counts: dict[str, int] = {}
    for line in prose(page).splitlines():
        match = _HEADING.match(line)
        if not match:
            continue
        base = github_anchor(match.group("title"))
        n = counts.get(base, 0)
        counts[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    for match in re.finditer(r"<a\s+(?:name|id)=\"([^\"]+)\"", read_page(page)):
        found.add(match.group(1))
    return found


def links(page: str) -> list[str]:
    """The link targets of ``page`` outside code blocks and code spans."""
    text = _CODE_SPAN.sub("", prose(page))
    return [match.group("target") for match in _LINK.finditer(text)]


@pytest.mark.parametrize("page", PAGES)
def test_relative_links_resolve(page: str) -> None:
    broken = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
            continue  # http(s) and mailto: checked by nobody here (no internet)
        path, _, fragment = target.partition("#")
        resolved = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
        if path and not os.path.exists(os.path.join(ROOT, resolved)):
            broken.append(f"{target}: no such file {resolved}")
            continue
        if fragment and resolved.endswith(".md") and fragment not in anchors(resolved):
            broken.append(f"{target}: no heading #{fragment} in {resolved}")
    assert not broken, f"{page}: broken links:\n" + "\n".join(broken)


@pytest.mark.parametrize("page", PAGES)
def test_docs_cite_nothing_outside_the_repository(page: str) -> None:
    """Every link goes to a file of the repository (issue 16.12): no page of
    ours depends on a site that may move, and none can be checked here."""
    outside = [t for t in links(page) if re.match(r"^[a-z][a-z0-9+.-]*:", t, re.I)]
    assert outside == [], f"{page} links outside the repository: {outside}"


def test_every_docs_page_is_in_the_index() -> None:
    listed = {
        os.path.normpath(os.path.join("docs", target.partition("#")[0]))
        for target in links("docs/index.md")
    }
    missing = [
        page
        for page in PAGES
        if page.startswith("docs/") and page not in listed and page != "docs/index.md"
    ]
    assert not missing, f"docs/index.md does not link {missing}"


def test_pyproject_names_its_urls() -> None:
    """``[project.urls]`` holds at least one https URL (issue 16.12)."""
    with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as f:
        text = f.read()
    section = text.split("[project.urls]", 1)
    assert len(section) == 2, "pyproject.toml has no [project.urls]"
    body = section[1].split("\n[", 1)[0]
    assert re.search(r'^"[^"]{1,32}" = "https://[^"]+"$', body, re.M), body


def test_readme_says_why_with_the_benchmarks_numbers() -> None:
    """The first screen's measured claims are the ones docs/benchmarks.md holds."""
    readme = read_page("README.md")
    first_screen = readme.split("## Quickstart", 1)[0]
    benchmarks = read_page("docs/benchmarks.md")
    # The README's words, and where docs/benchmarks.md measured them.
    claims = {
        "2.28 x boto3's `download_file`": "aws_download >= 1.25 x boto3: 2.28 x",
        "1.70 x s5cmd `cp -c 16 -p 16`": "aws_download >= 1.0 x s5cmd cp -c 16 -p 16: 1.70 x",
        "a 256 MiB file 1.77 x curl": "pyvo_dl >= 1.5 x curl: 1.77 x",
        "4.56 x parfive": "download_many >= 3 x parfive: 4.56 x",
        "1 GiB file in 19.0 MiB of memory": "peak RSS of one 1G download: 19.0 MiB",
    }
    for said, measured in claims.items():
        assert said in " ".join(first_screen.split()), said
        assert measured in benchmarks, f"docs/benchmarks.md no longer says {measured!r}"
    assert "never merged" in first_screen or "without being merged" in first_screen

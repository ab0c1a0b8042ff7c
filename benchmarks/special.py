"""The scenarios that are not "same download, several clients".

- resume: a pyvo_dl download SIGKILLed when its ``.part`` reaches half the
  file, then run again; what the second run transferred is read from
  nginx's access log (``$body_bytes_sent``);
- peak RSS: a 1 GiB download against a 1 MiB one, from the runs of those
  scenarios;
- import cost: ``python -I -c "import pyvo_dl"`` against ``python -I -c
  pass`` in a clean venv holding nothing but a copy of ``pyvo_dl/``.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time

from . import clients as C
from .data import size_label
from .environment import log
from .measure import Run, check_files, run_process
from .report import BarResult, Row
from .scenarios import Outcome, clear
from .servers import summarize

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Dict, List, Optional, Tuple

    from .scenarios import Context

#: The bars of issue 5 that are not ratios.
RESUME_MAX_FRACTION = 0.51
RSS_MAX_GROWTH_MIB = 10.0
RSS_MAX_MIB = 30.0
IMPORT_MAX_MS = 5.0


# -- resume -------------------------------------------------------------------------


def _kill_at_half(part: str, size: int) -> Callable[[int], bool]:
    """A watch that is true once ``part`` holds half of ``size`` bytes."""
    half = size // 2

    def reached(_pid: int) -> bool:
        """Whether the ``.part`` holds half of the file."""
        try:
            return os.path.getsize(part) >= half
        except OSError:
            return False

    return reached


def _resume_round(ctx: Context, round_: int, url: str, path: str) -> Tuple[Run, Run, float, float]:
    """One interrupted download and its resumption.

    Returns
    -------
    tuple
        The killed run, the resumed run, the fraction of the file in the
        ``.part`` after the kill, the fraction transferred by the resumption.
    """
    key = ctx.big
    size = ctx.data.files[key][0]
    out = os.path.dirname(path)
    argv = [*ctx.prefix, ctx.python, "-c", C.PYVO_DL_HTTP, url, path]
    logs = os.path.join(ctx.work, "logs", "resume.log")
    clear(out)
    first = run_process(
        argv,
        cwd=ctx.work,
        env=ctx.env,
        log_path=logs,
        timeout=300,
        watch=_kill_at_half(path + ".part", size),
    )
    killed = first.status == -9 and not first.timed_out
    try:
        at_kill = os.path.getsize(path + ".part") / size
    except OSError:
        at_kill = 0.0
    error = "" if killed else f"not killed mid-download (status {first.status}) {first.error}"
    killed_run = Run(
        "pyvo_dl killed at 50 %", round_, 0, first.wall, first.cpu, first.rss_kib, killed, error
    )
    time.sleep(0.3)  # nginx logs the aborted request when it notices the reset
    start = ctx.nginx.fast_log.offset()
    second = run_process(argv, cwd=ctx.work, env=ctx.env, log_path=logs, timeout=300)
    error = second.error or check_files(out, ctx.data.expected(key))
    time.sleep(0.2)
    stats = summarize(ctx.nginx.fast_log.entries(start))
    resumed = Run(
        "pyvo_dl resumed",
        round_,
        1,
        second.wall,
        second.cpu,
        second.rss_kib,
        not error,
        error,
        stats,
    )
    return killed_run, resumed, at_kill, stats["body_bytes"] / size


def resume(ctx: Context) -> Outcome:
    """Kill a download at about 50 % and resume it; judge the bytes sent again."""
    key = ctx.big
    size = ctx.data.files[key][0]
    path = os.path.join(ctx.work, "out", "resume", os.path.basename(key))
    rounds = min(ctx.rounds, 3)
    runs: List[Run] = []
    at_kill: List[float] = []
    sent: List[float] = []
    for round_ in range(rounds):
        killed, resumed, fraction_at_kill, fraction_sent = _resume_round(
            ctx, round_, ctx.fast(key), path
        )
        runs += [killed, resumed]
        if killed.ok and resumed.ok:
            at_kill.append(fraction_at_kill)
            sent.append(fraction_sent)
        log(
            f"[resume] round {round_ + 1}/{rounds}: .part at {fraction_at_kill:.1%} when killed, "
            f"second run sent {fraction_sent:.1%} ({resumed.error or 'ok'})"
        )
    rows = [_row("resume", name, runs) for name in ("pyvo_dl killed at 50 %", "pyvo_dl resumed")]
    if at_kill:
        rows[0].note = f".part held {statistics.median(at_kill):.1%} of the file after SIGKILL"
        rows[1].note = f"second run transferred {statistics.median(sent):.1%} of the file"
    label = f"resume of a {size_label(size)} download killed at ~50 %: bytes sent again"
    if sent:
        worst = max(sent)
        bar = BarResult(
            "resume",
            label,
            f"<= {RESUME_MAX_FRACTION:.0%}",
            f"{worst:.1%}",
            worst <= RESUME_MAX_FRACTION,
            f"worst of {len(sent)}; .part held {min(at_kill):.1%}-{max(at_kill):.1%}",
        )
    else:
        bar = BarResult(
            "resume", label, f"<= {RESUME_MAX_FRACTION:.0%}", "n/a", None, "no good pair"
        )
    title = f"resume: one {size_label(size)} download SIGKILLed at ~50 %, then run again"
    return Outcome("resume", title, "", runs, rows, [bar])


def _row(scenario: str, client: str, runs: List[Run]) -> Row:
    mine = [r for r in runs if r.client == client]
    ok = [r for r in mine if r.ok]
    row = Row(scenario, client, len(ok), len(mine))
    if ok:
        walls = [r.wall for r in ok]
        row.median, row.low, row.high = statistics.median(walls), min(walls), max(walls)
        row.cpu = statistics.median(r.cpu for r in ok)
        peaks = [r.rss_kib for r in ok if r.rss_kib is not None]
        row.rss_mib = max(peaks) / 1024 if peaks else None
    failed = [r for r in mine if not r.ok]
    if failed:
        row.note = f"{len(failed)} failed: {failed[0].error}"
    return row


# -- peak RSS -----------------------------------------------------------------------


def rss_bars(big: Optional[Outcome], tiny: Optional[Outcome]) -> List[BarResult]:
    """Peak RSS of pyvo_dl: the big download against the 1 MiB one, and the ceiling."""
    client = "pyvo_dl http_download"

    def peaks(outcome: Optional[Outcome]) -> List[int]:
        """The peak RSS (KiB) of pyvo_dl's good runs in ``outcome``."""
        if outcome is None:
            return []
        runs = outcome.runs
        return [r.rss_kib for r in runs if r.client == client and r.ok and r.rss_kib is not None]

    big_peaks, tiny_peaks = peaks(big), peaks(tiny)
    if not big_peaks or not tiny_peaks or big is None or tiny is None:
        return [BarResult("rss", "peak RSS", "", "n/a", None, "no good runs")]
    big_mib = max(big_peaks) / 1024
    tiny_mib = statistics.median(tiny_peaks) / 1024
    growth = big_mib - tiny_mib
    big_label = big.key.split("-", 1)[1]
    return [
        BarResult(
            big.key,
            f"peak RSS {big_label} minus 1M",
            f"<= {RSS_MAX_GROWTH_MIB:g} MiB",
            f"{growth:+.1f} MiB",
            growth <= RSS_MAX_GROWTH_MIB,
            f"{big_mib:.1f} MiB (max) vs {tiny_mib:.1f} MiB (median)",
        ),
        BarResult(
            big.key,
            f"peak RSS of one {big_label} download",
            f"< {RSS_MAX_MIB:g} MiB",
            f"{big_mib:.1f} MiB",
            big_mib < RSS_MAX_MIB,
        ),
    ]


# -- import cost --------------------------------------------------------------------

_NEW_MODULES = (
    "import sys\n"
    "before = set(sys.modules)\n"
    "import pyvo_dl\n"
    "print(' '.join(sorted(set(sys.modules) - before)))\n"
)


def _clean_venv(ctx: Context) -> str:
    """A venv with no packages but a fresh copy of ``pyvo_dl/``, compiled."""
    folder = os.path.join(ctx.work, "clean-venv")
    subprocess.run([ctx.python, "-m", "venv", "--without-pip", folder], check=True)
    python = os.path.join(folder, "bin", "python")
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = subprocess.run(
        [python, "-I", "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    target = os.path.join(site, "pyvo_dl")
    source = os.path.join(ctx.env["PYTHONPATH"], "pyvo_dl")
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
    # -I ignores PYTHONDONTWRITEBYTECODE, so this writes the .pyc files.
    subprocess.run([python, "-I", "-m", "compileall", "-q", target], check=True)
    return python


def _importtime_ms(python: str, env: Dict[str, str]) -> float | None:
    result = subprocess.run(
        [python, "-I", "-X", "importtime", "-c", "import pyvo_dl"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    for line in result.stderr.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 3 and parts[2] == "pyvo_dl":
            return int(parts[1]) / 1000
    return None


def _new_modules(python: str, env: Dict[str, str]) -> List[str]:
    result = subprocess.run(
        [python, "-I", "-c", _NEW_MODULES], capture_output=True, text=True, env=env, check=True
    )
    return result.stdout.split()


def _third_party(modules: List[str]) -> List[str]:
    stdlib = getattr(sys, "stdlib_module_names", None)
    if stdlib is None:  # Python 3.8/3.9: cannot tell
        return []
    return [
        name
        for name in modules
        if name.split(".")[0] not in stdlib and name.split(".")[0] != "pyvo_dl"
    ]


def import_cost(ctx: Context) -> Outcome:
    """``import pyvo_dl`` against ``pass``, alternated in shuffled pairs."""
    python = _clean_venv(ctx)
    pairs = 30 if ctx.quick else 60
    commands = {
        "python -I -c pass": [*ctx.prefix, python, "-I", "-c", "pass"],
        "python -I -c 'import pyvo_dl'": [*ctx.prefix, python, "-I", "-c", "import pyvo_dl"],
    }
    logs = os.path.join(ctx.work, "logs", "import.log")
    runs: List[Run] = []
    for _ in range(3):  # warm the page cache
        for argv in commands.values():
            run_process(argv, cwd=ctx.work, env=ctx.env, log_path=logs, timeout=60)
    for round_ in range(pairs):
        names = list(commands)
        ctx.rng.shuffle(names)
        for name in names:
            o = run_process(commands[name], cwd=ctx.work, env=ctx.env, log_path=logs, timeout=60)
            runs.append(
                Run(name, round_, len(runs), o.wall, o.cpu, o.rss_kib, not o.error, o.error)
            )
    rows = [_row("import", name, runs) for name in commands]
    bare, importing = list(commands)
    diffs = _paired_differences(runs, importing, bare)
    self_ms = [t for t in (_importtime_ms(python, ctx.env) for _ in range(9)) if t is not None]
    modules = _new_modules(python, ctx.env)
    foreign = _third_party(modules)
    rows[1].note = (
        (
            f"-X importtime: {statistics.median(self_ms):.1f} ms cumulative for pyvo_dl; "
            if self_ms
            else ""
        )
        + f"loads {len(modules)} modules"
        + (f", third-party: {' '.join(foreign)}" if foreign else "")
    )
    bars = [_import_bar(diffs, foreign)]
    title = "import cost in a clean venv (python -I), shuffled pairs"
    extra: Dict[str, object] = {"new_modules": modules, "importtime_ms": self_ms}
    return Outcome("import", title, "", runs, rows, bars, extra)


def _paired_differences(runs: List[Run], importing: str, bare: str) -> List[float]:
    by_round: Dict[int, Dict[str, float]] = {}
    for run in runs:
        if run.ok:
            by_round.setdefault(run.round, {})[run.client] = run.wall
    return [
        walls[importing] - walls[bare]
        for walls in by_round.values()
        if importing in walls and bare in walls
    ]


def _import_bar(diffs: List[float], foreign: List[str]) -> BarResult:
    label = "import pyvo_dl above python -c pass"
    target = f"< {IMPORT_MAX_MS:g} ms"
    if not diffs:
        return BarResult("import", label, target, "n/a", None, "no good pair")
    ms = statistics.median(diffs) * 1000
    ok = ms < IMPORT_MAX_MS and not foreign
    note = f"median of {len(diffs)} pairs" + (f"; imports {' '.join(foreign)}" if foreign else "")
    return BarResult("import", label, target, f"{ms:.1f} ms", ok, note)

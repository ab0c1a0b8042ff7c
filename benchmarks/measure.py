"""Running one client process and measuring it, and checking what it wrote.

Wall time is taken around the whole process (fork to reaping); CPU seconds
(user + system) come from ``os.wait4``, so they are the child's own
(``taskset`` execs the client, keeping its PID). A run that exits with an
error, times out or writes wrong bytes is a failed run: it is reported and
never timed.

Peak RSS cannot come from ``os.wait4`` of a child of this runner: Linux
records the RSS of the forked copy of the parent into the child's
``ru_maxrss`` when it execs, so every child would show at least the
runner's own RSS. Clients are therefore started through GNU ``time``
(1 MiB of RSS), whose ``%M`` is the client's true peak; its own CPU time is
negligible and stays in the wait4 sum.

What else ran on the client's core is read from ``/proc/stat`` around each
run: the core's busy time minus the client's own CPU is other work that
shared the core (another engineer's test run, a build), and the core's
steal time is the hypervisor's. A CPU-bound client (boto3 at its defaults)
slows down by that much while one that waits on the server does not, so a
ratio taken on a busy core is not the ratio a user gets: the table reports
both for every scenario.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Dict, List, Optional, Sequence, Tuple

    Expected = Dict[str, Tuple[int, str]]

#: PIDs of the clients running now, killed on Ctrl-C.
RUNNING: set[int] = set()


@dataclass
class Outcome:
    """What one process did, and what else its core did meanwhile (seconds)."""

    wall: float
    cpu: float
    rss_kib: Optional[int]
    status: int
    timed_out: bool
    error: str = ""
    others: Optional[float] = None
    steal: Optional[float] = None


@dataclass
class Run:
    """One measured run of one client in one round of a scenario."""

    client: str
    round: int
    seq: int
    wall: float
    cpu: float
    rss_kib: Optional[int]
    ok: bool
    error: str = ""
    server: Dict[str, int] = field(default_factory=dict)
    #: CPU seconds that other processes used on the client's core during the run.
    others: Optional[float] = None
    #: Seconds the hypervisor took the client's core away during the run.
    steal: Optional[float] = None


def _exit_code(status: int) -> int:
    # os.waitstatus_to_exitcode is 3.9+.
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def _tail(path: str, limit: int = 400) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - limit))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


#: GNU time, when found: the small parent that reports the client's peak RSS.
TIME_TOOL: Optional[str] = None


def _peak_rss(path: str) -> Optional[int]:
    try:
        with open(path) as f:
            lines = f.read().split()
        return int(lines[-1])
    except (OSError, ValueError, IndexError):
        return None


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def core_times(core: int) -> Optional[Tuple[float, float]]:
    """Busy and steal seconds of one core since boot, from ``/proc/stat``.

    Busy is user + nice + system + irq + softirq; idle and iowait are not.
    None where ``/proc/stat`` is not there (not Linux).
    """
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith(f"cpu{core} "):
                    ticks = [int(x) for x in line.split()[1:9]]
                    busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6]
                    return busy / _TICK, ticks[7] / _TICK
    except (OSError, ValueError, IndexError):
        pass
    return None


def run_process(
    argv: Sequence[str],
    *,
    cwd: str,
    env: Dict[str, str],
    log_path: str,
    timeout: float,
    watch: Optional[Callable[[int], bool]] = None,
    core: Optional[int] = None,
) -> Outcome:
    """Run ``argv`` to its end and measure it.

    Parameters
    ----------
    argv : sequence of str
        The command.
    cwd, env : str, dict
        Its folder and environment.
    log_path : str
        Where its stdout and stderr go (the last line names a failure).
    timeout : float
        Seconds after which it is killed (SIGKILL) and reported as timed out.
    watch : callable, optional
        Polled every half millisecond with the PID while the process runs;
        when it returns True the process is killed with SIGKILL (the resume
        scenario's interruption).
    core : int, optional
        The core the process is pinned to: what else used it meanwhile is
        recorded (see the module's docstring).

    Returns
    -------
    Outcome
    """
    rss_path = log_path + ".rss"
    command = list(argv)
    # A watched run is killed mid-way: it must be this runner's own child,
    # killed and reaped here, or its PID could outlive it as a zombie that
    # the next run's stale-lock check still sees as alive.
    tool = TIME_TOOL if watch is None else None
    timed = tool is not None
    if tool is not None:
        command = [tool, "-f", "%M", "-o", rss_path, *command]
    before = core_times(core) if core is not None else None
    with open(log_path, "wb") as log:
        started = time.perf_counter()
        proc = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    RUNNING.add(proc.pid)
    killer = _Killer(proc.pid)
    timer = threading.Timer(timeout, killer.kill)
    timer.start()
    try:
        if watch is not None:
            _watch(proc.pid, watch, killer)
        # Wait without reaping first, so that the timer can never signal a
        # recycled PID: the zombie keeps the PID until wait4 below.
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        killer.done()
        _, status, usage = os.wait4(proc.pid, 0)
        ended = time.perf_counter()
        after = core_times(core) if core is not None else None
        RUNNING.discard(proc.pid)
    finally:
        # On Ctrl-C the PID stays in RUNNING, for kill_running().
        timer.cancel()
    proc.returncode = _exit_code(status)
    # Without GNU time, ru_maxrss is at least this runner's RSS (see above).
    peak: Optional[int] = usage.ru_maxrss
    if timed:
        peak = _peak_rss(rss_path)
    elif watch is not None:
        peak = None
    outcome = Outcome(
        wall=ended - started,
        cpu=usage.ru_utime + usage.ru_stime,
        rss_kib=peak,
        status=proc.returncode,
        timed_out=killer.timed_out,
    )
    if before is not None and after is not None:
        # Ticks are 10 ms: a short run's share is coarse, a scenario's sum is
        # not. A core's counters can also catch up late (a full run once
        # showed three times a 0.15 s run's length): never more than the run.
        others = after[0] - before[0] - outcome.cpu
        outcome.others = min(max(0.0, others), outcome.wall)
        outcome.steal = after[1] - before[1]
    if killer.timed_out:
        outcome.error = f"timed out after {timeout:.0f} s"
    elif proc.returncode != 0 and not killer.watched:
        outcome.error = f"exit status {proc.returncode}: {_tail(log_path)}"
    return outcome


def _watch(pid: int, watch: Callable[[int], bool], killer: _Killer) -> None:
    while True:
        result = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG)
        if result is not None:
            return
        if watch(pid):
            killer.watched = True
            os.killpg(pid, signal.SIGKILL)
            return
        time.sleep(0.0005)


class _Killer:
    """Kills a child on timeout, but only while it has not been waited for."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.lock = threading.Lock()
        self.finished = False
        self.timed_out = False
        self.watched = False

    def kill(self) -> None:
        """SIGKILL the run's process group, unless it was already waited for."""
        with self.lock:
            if not self.finished:
                self.timed_out = True
                # The group (this run's own session): GNU time and the client.
                os.killpg(self.pid, signal.SIGKILL)

    def done(self) -> None:
        """Mark the child as exited: no kill after this."""
        with self.lock:
            self.finished = True


def kill_running() -> None:
    """SIGKILL and reap the clients still running (Ctrl-C), by their PIDs."""
    for pid in list(RUNNING):
        try:
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except OSError:
            pass
        RUNNING.discard(pid)


# -- checking outputs ---------------------------------------------------------------


def file_digest(path: str) -> str:
    """The SHA-256 of a file, hex."""
    digest = hashlib.sha256()
    view = memoryview(bytearray(1 << 20))
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(view)
            if not n:
                break
            digest.update(view[:n])
    return digest.hexdigest()


def check_files(folder: str, expected: Expected) -> str:
    """Compare the files in ``folder`` with their expected size and SHA-256.

    Returns
    -------
    str
        Empty when every file is there and right; else what is wrong.
    """
    problems: List[str] = []
    for name, (size, sha256) in expected.items():
        path = os.path.join(folder, name)
        try:
            actual = os.path.getsize(path)
        except OSError:
            problems.append(f"{name} missing")
            continue
        if actual != size:
            problems.append(f"{name} has {actual} bytes, not {size}")
        elif file_digest(path) != sha256:
            problems.append(f"{name} has the wrong SHA-256")
        if len(problems) >= 3:
            break
    if not problems:
        return ""
    return "; ".join(problems[:3]) + (" ..." if len(problems) >= 3 else "")

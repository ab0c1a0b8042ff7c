"""The entry point: set up, run every scenario, print and record the table."""

from __future__ import annotations

import argparse
import datetime
import os
import random
import shutil
import signal
import sys
import tempfile
import time

from . import bytecode, measure, special
from . import clients as C
from . import scenarios as S
from .data import MIB, make_data, size_label
from .environment import (
    CLIENT_CORE,
    RESULTS,
    ROOT,
    SERVER_CORE,
    VENV,
    can_pin,
    client_env,
    describe_source,
    ensure_tools,
    ensure_venv,
    log,
    machine_info,
    pin_prefix,
    s5cmd_path,
    snapshot_pyvo_dl,
    write_aws_profile,
)
from .measure import kill_running, run_process
from .report import format_scenario, format_standing, format_summary, write_json
from .servers import CAPPED_CHUNK, CAPPED_DELAY, CAPPED_RATE, Moto, Nginx

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional, Sequence

#: Scenario groups in the order they run; ``--only`` takes these names.
GROUPS = (
    "get",
    "tiny",
    "big",
    "capped",
    "curve",
    "many",
    "capped-many",
    "resume",
    "moto",
    "import",
)

#: Sizes and counts: (full run, --quick).
SIZES = {
    "big": (256 * MIB, 64 * MIB),
    "huge": (1024 * MIB, 256 * MIB),
    "tiny": (MIB, MIB),
    "moto": (32 * MIB, 8 * MIB),
    "small": (2000, 500),
    "capped_small": (200, 200),
}
SMALL_SIZE = 16 * 1024


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """The command line of ``python -m benchmarks``."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="pyvo_dl against curl, wget, aria2c, boto3, s5cmd, obstore, parfive, a bare "
        "http.client loop and pyvo's proposed functions, on loopback servers this suite starts "
        "itself (SPEC §6).",
    )
    parser.add_argument(
        "--quick", action="store_true", help="2 rounds and smaller sizes (about 3 minutes)"
    )
    parser.add_argument("--rounds", type=int, help="rounds per scenario (default 5, --quick 2)")
    parser.add_argument(
        "--only", help=f"comma-separated scenario groups to run, of: {', '.join(GROUPS)}"
    )
    parser.add_argument(
        "--no-install", action="store_true", help="do not run apt-get or pip; use what is there"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp folders (data, logs)")
    parser.add_argument("--seed", type=int, help="seed of the shuffled order (default: random)")
    parser.add_argument(
        "--rev",
        help="measure pyvo_dl as of this git revision (default: the working tree as it is)",
    )
    args = parser.parse_args(argv)
    groups = GROUPS if not args.only else tuple(g.strip() for g in args.only.split(","))
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        parser.error(f"unknown scenario group(s) {', '.join(unknown)}; choose from {GROUPS}")
    args.groups = groups
    if args.rounds is None:
        args.rounds = 2 if args.quick else 5
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1 << 31)
    return args


def _size(name: str, quick: bool) -> int:
    return SIZES[name][1 if quick else 0]


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


class Suite:
    """One run of the benchmark: its folders, servers and results."""

    def __init__(self, args: argparse.Namespace, tools: Dict[str, str], python: str) -> None:
        self.args = args
        self.tools = tools
        self.python = python
        self.pinned = can_pin()
        self.work = tempfile.mkdtemp(prefix="pyvo-dl-bench-")
        # nginx's worker runs as "nobody" when started by root: let it in.
        os.chmod(self.work, 0o755)
        shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self.shm = tempfile.mkdtemp(prefix="pyvo-dl-bench-", dir=shm) if shm else self.work
        self.nginx: Optional[Nginx] = None
        self.moto: Optional[Moto] = None
        self.outcomes: List[S.Outcome] = []
        self.nginx_errors: List[str] = []
        self.source = ""
        self.load_before = (0.0, 0.0, 0.0)
        self.audit = bytecode.Audit()

    def close(self) -> None:
        """Stop the clients and servers this run started; remove its temp folders."""
        kill_running()
        if self.moto is not None:
            self.moto.stop()
        if self.nginx is not None:
            self.nginx.stop()
            self.nginx_errors = self.nginx.errors()
            if self.nginx_errors:
                first = self.nginx_errors[0]
                log(f"nginx logged {len(self.nginx_errors)} error(s); the first: {first}")
        if self.args.keep:
            log(f"kept {self.work} and {self.shm}")
            return
        shutil.rmtree(self.work, ignore_errors=True)
        if self.shm != self.work:
            shutil.rmtree(self.shm, ignore_errors=True)

    def setup(self) -> S.Context:
        """Pin, make the data, start the servers, warm up; return the shared context."""
        quick = self.args.quick
        self.load_before = os.getloadavg()
        if self.pinned:
            # The runner waits and polls on the servers' core, not the clients'.
            os.sched_setaffinity(0, {SERVER_CORE})
        big, huge, tiny, moto_size = (_size(n, quick) for n in ("big", "huge", "tiny", "moto"))
        small_count = max(_size("small", quick), _size("capped_small", quick))
        log(f"making data in {self.work} (random bytes)")
        data = make_data(
            os.path.join(self.work, "data"),
            sorted({big, huge, tiny, moto_size}),
            small_count,
            SMALL_SIZE,
        )
        # Written back now, not by the kernel's flusher during the first runs.
        os.sync()
        server_prefix = pin_prefix(SERVER_CORE, self.pinned)
        self.nginx = Nginx(self.tools["nginx"], data.folder, self.work, server_prefix)
        self.nginx.start()
        log(f"nginx: fast {self.nginx.fast_url}, capped {self.nginx.capped_url}")
        self.source = describe_source(self.args.rev)
        source = snapshot_pyvo_dl(self.args.rev, self.python)
        env = client_env(self.work, source)
        log(f"measuring {self.source}")
        profile = write_aws_profile(self.work)
        ctx = S.Context(
            python=self.python,
            env=env,
            tools=self.tools,
            prefix=pin_prefix(CLIENT_CORE, self.pinned),
            work=self.work,
            shm=self.shm,
            nginx=self.nginx,
            data=data,
            rng=random.Random(self.args.seed),
            rounds=self.args.rounds,
            quick=quick,
            has_cli=os.path.exists(os.path.join(ROOT, "pyvo_dl", "_cli.py")),
            big=f"f{size_label(big)}.bin",
            huge=f"f{size_label(huge)}.bin",
            tiny=f"f{size_label(tiny)}.bin",
            small_count=_size("small", quick),
            capped_small_count=_size("capped_small", quick),
            profile=profile,
            moto_key=f"f{size_label(moto_size)}.bin",
            s5cmd=s5cmd_path() if os.access(s5cmd_path(), os.X_OK) else None,
            client_core=CLIENT_CORE if self.pinned else None,
        )
        if "moto" in self.args.groups:
            self.moto = Moto(self.python, self.work, server_prefix, env)
            self.moto.start()
            path = os.path.join(data.folder, ctx.moto_key)
            self.moto.put_object(S.BUCKET, ctx.moto_key, path, profile)
            ctx.moto = self.moto
            log(f"moto: {self.moto.url}")
        self.audit = warm_up(ctx, owned=[VENV, source])
        log(self.audit.summary())
        return ctx

    def run(self, ctx: S.Context) -> None:
        """Run the selected scenario groups in order."""
        builders: Dict[str, Callable[[S.Context], Any]] = {
            "get": lambda c: S.get_file(c, c.big, full=True),
            "tiny": S.get_tiny,
            "big": lambda c: S.get_file(c, c.huge, full=False),
            "capped": S.capped_file,
            "curve": S.capped_curve,
            "many": S.many_files,
            "capped-many": S.capped_many,
            "moto": S.signed_moto,
        }
        for group in self.args.groups:
            started = time.monotonic()
            if group == "resume":
                outcome = special.resume(ctx)
            elif group == "import":
                outcome = special.import_cost(ctx)
            else:
                scenario = builders[group](ctx)
                if scenario is None:
                    continue
                outcome = S.run_scenario(ctx, scenario)
            outcome.load_average = os.getloadavg()
            self.outcomes.append(outcome)
            log(f"[{outcome.key}] done in {time.monotonic() - started:.0f} s")
        self._add_rss_bars(ctx)

    def _add_rss_bars(self, ctx: S.Context) -> None:
        by_key = {o.key: o for o in self.outcomes}
        big = by_key.get(f"get-{size_label(ctx.data.files[ctx.huge][0])}")
        tiny = by_key.get(f"get-{size_label(ctx.data.files[ctx.tiny][0])}")
        if big is not None and tiny is not None:
            big.bars.extend(special.rss_bars(big, tiny))


class SetupError(Exception):
    """The suite cannot run meaningfully (reported, exit status 2)."""


def warm_up(ctx: S.Context, owned: List[str]) -> bytecode.Audit:
    """Run each kind of client once on small files, unmeasured; check their bytecode.

    Brings binaries, libraries and bytecode into the page cache, so that
    round 1 is not an outlier. Each Python client reports the ``.pyc`` of
    every module it imported (:mod:`benchmarks.bytecode`); what an install
    under ``owned`` left uncompiled is compiled now, as pip would have.
    """
    log("warming up (page cache; bytecode of every Python client checked)")
    folder = os.path.join(ctx.work, "out", "warm-up")
    url, path = ctx.fast(ctx.tiny), os.path.join(folder, os.path.basename(ctx.tiny))
    endpoint = ctx.nginx.fast_url
    urls = [ctx.fast(key) for key in ctx.data.small[:3]]
    url_list = os.path.join(ctx.work, "warm-up-urls.txt")
    pair_list = os.path.join(ctx.work, "warm-up-pairs.txt")
    with open(url_list, "w") as f:
        f.writelines(u + "\n" for u in urls)
    with open(pair_list, "w") as f:
        f.writelines(f"{u}\t{os.path.join(folder, os.path.basename(u))}\n" for u in urls)
    python_clients = [
        (C.PYVO_DL_HTTP, [url, path]),
        (C.PYVO_DL_AWS, [endpoint, S.BUCKET, ctx.tiny, path, "-", "-"]),
        (C.PYVO_DL_MANY, [url_list, folder]),
        (C.READINTO, [url, path]),
        (C.READINTO_ALIGNED, [url, path]),
        (C.URLLIB_COPY, [url, path]),
        (C.HTTP_CLIENT_LOOP, [url_list, folder]),
        (C.HTTP_CLIENT_LOOP_FILES, [url_list, folder]),
        (C.PYVO_PATTERN_HTTP, [url, path]),
        (C.PYVO_PATTERN_HTTP_LOOP, [pair_list]),
        (C.PYVO_PATTERN_AWS, [endpoint, S.BUCKET, ctx.tiny, path]),
        (C.BOTO3_DOWNLOAD_FILE, [endpoint, S.BUCKET, ctx.tiny, path, "-"]),
        (C.OBSTORE_GET, [endpoint, S.BUCKET, ctx.tiny, path]),
        (C.PARFIVE_MANY, [url_list, folder]),
    ]
    if ctx.has_cli:
        # python -m pyvo_dl, with the report in front: runpy as -m runs it.
        cli = "import runpy\nrunpy.run_module('pyvo_dl', run_name='__main__', alter_sys=True)\n"
        python_clients.append((cli, [url, "-o", path]))
    report = os.path.join(ctx.work, "bytecode-report.txt")
    commands = [
        [ctx.python, "-c", bytecode.REPORT_PREFIX + code, *args] for code, args in python_clients
    ]
    if ctx.s5cmd is not None:
        commands.append(C.s5cmd_cp(ctx.s5cmd, endpoint, f"s3://{S.BUCKET}/{ctx.tiny}", path))
    env = dict(ctx.env, **{bytecode.REPORT_ENV: report})
    logs = os.path.join(ctx.work, "logs")
    os.makedirs(logs, exist_ok=True)
    for index, argv in enumerate(commands):
        S.clear(folder)
        outcome = run_process(
            ctx.prefix + argv,
            cwd=ctx.work,
            env=env,
            log_path=os.path.join(logs, "warm-up.log"),
            timeout=300,
        )
        if outcome.error and index == 0:
            # Every pyvo_dl row would fail: say so now, not after 10 minutes.
            raise SetupError(f"pyvo_dl cannot download a file: {outcome.error}")
        if outcome.error:
            log(f"warm-up of {argv[-1]!r} ({argv[0]}) failed: {outcome.error}")
    return bytecode.complete(ctx.python, report, owned)


def render(suite: Suite, elapsed: float) -> str:
    """The whole table: a header, one block per scenario, the bars."""
    args = suite.args
    mode = "quick" if args.quick else "full"
    pin = (
        f"servers on core {SERVER_CORE}, clients on core {CLIENT_CORE} (taskset)"
        if suite.pinned
        else "not pinned"
    )
    title = (
        f"pyvo_dl benchmark, {mode} run: {args.rounds} rounds, seed {args.seed}, "
        f"{elapsed / 60:.1f} min; {pin}; {suite.source}"
    )
    legend = (
        "Wall = whole process; rate from the median wall (MB = 10^6 bytes); 'x ref' = median "
        "over rounds of the reference's time (the two runs around it) over the client's; "
        "CPU = user+sys of the child (median); RSS = its peak (max over runs). "
        f"Capped server: limit_rate {CAPPED_RATE} per request (sendfile_max_chunk {CAPPED_CHUNK}), "
        f"{CAPPED_DELAY * 1000:.0f} ms to first byte. 'phys' = the scenario's physical reference "
        "time over the client's."
    )
    load = (
        f"Load average (1 min) before: {suite.load_before[0]:.2f}, after each scenario: "
        + ", ".join(f"{o.load_average[0]:.2f}" for o in suite.outcomes)
        + " (this suite alone keeps it near 1; more means other work shared the cores)"
    )
    header = [title, legend, load, suite.audit.summary()]
    blocks = [
        format_scenario(o.title + f" [{o.key}]", o.reference, o.rows, o.bars, o.notes)
        for o in suite.outcomes
    ]
    bars = [bar for o in suite.outcomes for bar in o.bars]
    standing = format_standing(suite.outcomes)
    return "\n\n".join(["\n".join(header), *blocks, format_summary(bars), standing]) + "\n"


def _record(suite: Suite, started: float, elapsed: float) -> Dict[str, Any]:
    return {
        "started": datetime.datetime.fromtimestamp(started).isoformat(timespec="seconds"),
        "duration_s": round(elapsed, 1),
        "mode": "quick" if suite.args.quick else "full",
        "rounds": suite.args.rounds,
        "seed": suite.args.seed,
        "pyvo_dl": suite.source,
        "load_average_before": suite.load_before,
        "machine": machine_info(suite.tools, suite.python, suite.pinned),
        "capped_server": {
            "limit_rate": CAPPED_RATE,
            "first_byte_delay_s": CAPPED_DELAY,
            "sendfile_max_chunk": CAPPED_CHUNK,
        },
        "nginx_errors": suite.nginx_errors,
        "bytecode": suite.audit,
        "scenarios": suite.outcomes,
        "bars": [bar for o in suite.outcomes for bar in o.bars],
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the suite; print the table; write ``benchmarks/results/<time>-<mode>.json``.

    Returns
    -------
    int
        0 when every scenario ran (bars may be missed), 2 when the suite
        could not set up, 130 when interrupted.
    """
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.time()
    tools = ensure_tools(not args.no_install)
    missing = [name for name in ("nginx", "curl") if name not in tools]
    if missing:
        log(f"cannot run without {' and '.join(missing)}")
        return 2
    python = ensure_venv(not args.no_install)
    if python is None:
        return 2
    measure.TIME_TOOL = tools.get("time")
    if measure.TIME_TOOL is None:
        log("GNU time is missing: peak RSS will include this runner's own RSS")
    suite = Suite(args, tools, python)
    try:
        suite.run(suite.setup())
    except SetupError as exc:
        log(f"cannot run the benchmark: {exc}")
        return 2
    except KeyboardInterrupt:
        log("interrupted: stopping the servers and clients this run started")
        return 130
    finally:
        suite.close()
    elapsed = time.time() - started
    table = render(suite, elapsed)
    sys.stdout.write(table)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
    base = os.path.join(RESULTS, f"{stamp}-{'quick' if args.quick else 'full'}")
    write_json(base + ".json", _record(suite, started, elapsed))
    with open(base + ".txt", "w") as f:
        f.write(table)
    log(f"wrote {base}.json and {base}.txt")
    return 0

"""The scenarios of SPEC §6, the clients in each, and the bars they are judged by.

A scenario is a set of clients downloading the same thing into the same
folder, one of them the reference. Each round runs the reference, then every
other client in a shuffled order with the reference again after each one
(``ref A ref B ref C ref``), so every client is bracketed by two reference
runs and a steady drift of the machine cancels out of its ratio. Ratios are
taken pair by pair within a round and the median over rounds is reported.
The output folder is emptied right before each run, not after: the pages
freed are taken again at once, before the VM hands them back to its host.

Each scenario also has a physical reference, the time the bytes need at the
least on this machine, and every row shows its share of it: on loopback a
client that reads and writes nothing (``curl -o /dev/null``); through the
capped server ``size / (connections x 40 MiB/s)``; with the first-byte delay
``files x 10 ms / connections``, each with the connections that the server
saw the client open.
"""

from __future__ import annotations

import os
import shutil
import statistics
import time
from dataclasses import dataclass, field

from . import clients as C
from .data import MIB, size_label
from .environment import log
from .measure import Run, check_files, run_process
from .report import BarResult, Row
from .servers import CAPPED_DELAY, CAPPED_RATE_BYTES
from .servers import summarize as summarize_log

TYPE_CHECKING = False
if TYPE_CHECKING:
    import random
    from typing import Dict, List, Optional, Tuple

    from .clients import Client
    from .data import Data
    from .measure import Expected
    from .servers import AccessLog, Moto, Nginx

BUCKET = "bench"
READINTO = "stdlib readinto 1 MiB"
ALIGNED = "stdlib readinto 1 MiB aligned"
HTTP_LOOP = "stdlib http.client loop x8"
#: The same loop with the lock file and the .part that SPEC §3 asks for.
HTTP_LOOP_FILES = "stdlib loop x8, lock + .part"
S5CMD_16 = "s5cmd cp -c 16 -p 16"


@dataclass
class Context:
    """Everything the scenarios share: interpreters, tools, servers, data, folders."""

    python: str
    env: Dict[str, str]
    tools: Dict[str, str]
    prefix: List[str]
    work: str
    shm: str
    nginx: Nginx
    data: Data
    rng: random.Random
    rounds: int
    quick: bool
    has_cli: bool
    big: str
    huge: str
    tiny: str
    small_count: int
    capped_small_count: int
    moto: Optional[Moto] = None
    moto_key: str = ""
    profile: str = "bench"
    s5cmd: Optional[str] = None
    #: The core the clients are pinned to (None: not pinned).
    client_core: Optional[int] = None

    def fast(self, key: str) -> str:
        """The URL of ``key`` on the fast server."""
        return f"{self.nginx.fast_url}/{BUCKET}/{key}"

    def capped(self, key: str) -> str:
        """The URL of ``key`` on the capped server."""
        return f"{self.nginx.capped_url}/{BUCKET}/{key}"


@dataclass
class BarSpec:
    """``client`` must be at least ``minimum`` times as fast as ``versus``."""

    label: str
    client: str
    versus: str
    minimum: float


@dataclass
class Physical:
    """A scenario's physical reference: the least time its bytes need here.

    Either the median of one of its rows (``client``: a reader that writes
    nothing), or ``over_connections`` seconds divided by the connections the
    server saw a client open (the capped server: size / 40 MiB/s; the delay:
    files x 10 ms).
    """

    text: str
    client: Optional[str] = None
    over_connections: float = 0.0


@dataclass
class Scenario:
    """Clients that download the same thing, and how to judge them."""

    key: str
    title: str
    reference: str
    clients: List[Client]
    out_dir: str
    expected: Expected
    unit: str
    amount: float
    rounds: int
    log: Optional[AccessLog] = None
    bars: List[BarSpec] = field(default_factory=list)
    show_connections: bool = False
    physical: Optional[Physical] = None
    #: The row whose share of the physical reference the scenario reports.
    mine: str = ""


@dataclass
class Outcome:
    """What a scenario produced: every run, the table rows and the judged bars."""

    key: str
    title: str
    reference: str
    runs: List[Run]
    rows: List[Row]
    bars: List[BarResult]
    extra: Dict[str, object] = field(default_factory=dict)
    #: os.getloadavg() when it ended: other work on the machine moves every number.
    load_average: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    #: Lines printed under the rows: the physical reference, the client core's load.
    notes: List[str] = field(default_factory=list)
    #: The pyvo_dl row that the summary table quotes.
    mine: str = ""


# -- building the scenarios ------------------------------------------------------------


def _folder(ctx: Context, key: str, tmpfs: bool = False) -> str:
    return os.path.join(ctx.shm if tmpfs else ctx.work, "out", key)


def _tool_clients(ctx: Context, url: str, out: str, name: str) -> List[Client]:
    path = os.path.join(out, name)
    found: List[Client] = []
    if "wget" in ctx.tools:
        found.append(C.Client("wget", C.wget_one(ctx.tools["wget"], url, path)))
    if "aria2c" in ctx.tools:
        found.append(C.Client("aria2c -x8 -s8", C.aria2c_one(ctx.tools["aria2c"], url, out, name)))
    return found


def _s5cmd_clients(ctx: Context, endpoint: str, key: str, path: str) -> List[Client]:
    """s5cmd cp at its defaults (5 parts of 50 MiB at once) and with ``-c 16 -p 16``."""
    if ctx.s5cmd is None:
        return []
    uri = f"s3://{BUCKET}/{key}"
    return [
        C.Client("s5cmd cp", C.s5cmd_cp(ctx.s5cmd, endpoint, uri, path)),
        C.Client(S5CMD_16, C.s5cmd_cp(ctx.s5cmd, endpoint, uri, path, ["-c", "16", "-p", "16"])),
    ]


def _loopback_physical(reader: str) -> Physical:
    return Physical(f"{reader}: the same bytes read and not written", client=reader)


def get_file(ctx: Context, key: str, full: bool) -> Scenario:
    """One file from the fast server: pyvo_dl against curl and the rest."""
    size = ctx.data.files[key][0]
    scenario_key = f"get-{size_label(size)}"
    out = _folder(ctx, scenario_key)
    name = os.path.basename(key)
    url, path, py = ctx.fast(key), os.path.join(out, name), ctx.python
    mine = "pyvo_dl http_download"
    clients = [
        C.Client("curl", C.curl_one(ctx.tools["curl"], url, path)),
        C.python_client(mine, py, C.PYVO_DL_HTTP, [url, path], 300),
        C.python_client(READINTO, py, C.READINTO, [url, path], 300),
        C.python_client(ALIGNED, py, C.READINTO_ALIGNED, [url, path], 300),
    ]
    bars: List[BarSpec] = []
    physical = None
    if full:
        reader = "curl -o /dev/null"
        clients.append(C.Client(reader, C.curl_null(ctx.tools["curl"], url), writes=False))
        physical = _loopback_physical(reader)
        if ctx.has_cli:
            clients.append(C.Client("pyvo_dl CLI", [py, "-m", "pyvo_dl", url, "-o", path]))
        endpoint = ctx.nginx.fast_url
        clients += [
            C.python_client("urllib copyfileobj 1 MiB", py, C.URLLIB_COPY, [url, path], 300),
            C.python_client("pyvo pattern (requests)", py, C.PYVO_PATTERN_HTTP, [url, path], 300),
            *_tool_clients(ctx, url, out, name),
            *_s5cmd_clients(ctx, endpoint, key, path)[:1],
            C.python_client(
                "obstore get().stream()", py, C.OBSTORE_GET, [endpoint, BUCKET, key, path], 300
            ),
        ]
        bars = [
            BarSpec("pyvo_dl >= 1.0 x readinto", mine, READINTO, 1.0),
            BarSpec("pyvo_dl >= 1.0 x readinto aligned", mine, ALIGNED, 1.0),
            BarSpec("pyvo_dl >= 1.5 x curl", mine, "curl", 1.5),
            BarSpec("pyvo_dl >= 1.5 x s5cmd", mine, "s5cmd cp", 1.5),
            BarSpec("pyvo_dl >= 2.5 x pyvo pattern", mine, "pyvo pattern (requests)", 2.5),
        ]
    return Scenario(
        key=scenario_key,
        title=f"one {size_label(size)} file from nginx (loopback)",
        reference="curl",
        clients=clients,
        out_dir=out,
        expected=ctx.data.expected(key),
        unit="MB/s",
        amount=size,
        rounds=ctx.rounds if full else min(ctx.rounds, 3),
        log=ctx.nginx.fast_log,
        bars=bars,
        physical=physical,
        mine=mine,
    )


def get_tiny(ctx: Context) -> Scenario:
    """A 1 MiB file: the other end of the peak-RSS comparison."""
    scenario = get_file(ctx, ctx.tiny, full=False)
    scenario.clients = scenario.clients[:2]
    scenario.rounds = ctx.rounds
    return scenario


def _aws_client(ctx: Context, name: str, endpoint: str, key: str, path: str, conns: str) -> Client:
    args = [endpoint, BUCKET, key, path, conns, "-"]
    return C.python_client(name, ctx.python, C.PYVO_DL_AWS, args, 300)


def _boto3_client(ctx: Context, endpoint: str, key: str, path: str, profile: str = "-") -> Client:
    name = "boto3 download_file" + (" (signed)" if profile != "-" else "")
    args = [endpoint, BUCKET, key, path, profile]
    return C.python_client(name, ctx.python, C.BOTO3_DOWNLOAD_FILE, args, 300)


def _capped_physical(size: int) -> Physical:
    rate = CAPPED_RATE_BYTES / MIB
    return Physical(
        f"{size_label(size)} / (connections x {rate:g} MiB/s)",
        over_connections=size / CAPPED_RATE_BYTES,
    )


def capped_file(ctx: Context) -> Scenario:
    """One file through the capped server: aws_download against boto3 and s5cmd."""
    key = ctx.big
    size = ctx.data.files[key][0]
    scenario_key = f"capped-{size_label(size)}"
    out = _folder(ctx, scenario_key)
    name = os.path.basename(key)
    path, endpoint = os.path.join(out, name), ctx.nginx.capped_url
    mine, boto3 = "pyvo_dl aws_download", "boto3 download_file"
    clients = [
        _boto3_client(ctx, endpoint, key, path),
        _aws_client(ctx, mine, endpoint, key, path, "-"),
        C.python_client(
            "pyvo pattern (boto3)",
            ctx.python,
            C.PYVO_PATTERN_AWS,
            [endpoint, BUCKET, key, path],
            300,
        ),
        *_s5cmd_clients(ctx, endpoint, key, path),
    ]
    if ctx.has_cli:
        uri = f"s3://{BUCKET}/{key}"
        argv = [ctx.python, "-m", "pyvo_dl", uri, "-o", path, "--endpoint-url", endpoint]
        clients.append(C.Client("pyvo_dl CLI", argv))
    if "aria2c" in ctx.tools:
        argv = C.aria2c_one(ctx.tools["aria2c"], ctx.capped(key), out, name)
        clients.append(C.Client("aria2c -x8 -s8", argv))
    bars = [BarSpec("aws_download >= 1.25 x boto3", mine, boto3, 1.25)]
    if ctx.s5cmd is not None:
        bars.append(BarSpec(f"aws_download >= 1.0 x {S5CMD_16}", mine, S5CMD_16, 1.0))
    return Scenario(
        key=scenario_key,
        title=f"one {size_label(size)} object, 40 MiB/s and 10 ms to first byte per request",
        reference=boto3,
        clients=clients,
        out_dir=out,
        expected=ctx.data.expected(key),
        unit="MB/s",
        amount=size,
        rounds=ctx.rounds,
        log=ctx.nginx.capped_log,
        bars=bars,
        show_connections=True,
        physical=_capped_physical(size),
        mine=mine,
    )


def capped_curve(ctx: Context) -> Scenario:
    """aws_download(connections=N) for N = 1, 2, 4, 8, 16 through the capped server."""
    scenario = capped_file(ctx)
    name = os.path.basename(ctx.big)
    out = _folder(ctx, scenario.key + "-curve")
    path, endpoint = os.path.join(out, name), ctx.nginx.capped_url
    scenario.key += "-curve"
    scenario.title = "the same object, aws_download(connections=N)"
    scenario.out_dir = out
    scenario.clients = [_boto3_client(ctx, endpoint, ctx.big, path)]
    for n in (1, 2, 4, 8, 16):
        client = _aws_client(ctx, f"aws_download connections={n}", endpoint, ctx.big, path, str(n))
        client.connections = n
        scenario.clients.append(client)
    scenario.rounds = min(ctx.rounds, 3)
    scenario.bars = []
    scenario.mine = ""
    return scenario


def _write_lists(out: str, urls: List[str], folder: str) -> Dict[str, str]:
    """The list files of the many-file clients, beside ``out``; their paths by kind."""
    lists = out + "-lists"
    os.makedirs(lists, exist_ok=True)
    pairs = [(url, os.path.join(folder, os.path.basename(url))) for url in urls]
    # The S3 key of a URL is its path after /bench/ (path-style addressing).
    uris = [(f"s3://{BUCKET}/{url.split(f'/{BUCKET}/', 1)[1]}", path) for url, path in pairs]
    texts = {
        "urls": "".join(url + "\n" for url in urls),
        "pairs": "".join(f"{u}\t{p}\n" for u, p in pairs),
        "curl": C.curl_config(pairs),
        "curl-null": C.curl_config([(url, "/dev/null") for url in urls]),
        "s5cmd": C.s5cmd_commands(uris),
    }
    paths = {}
    for kind, text in texts.items():
        paths[kind] = os.path.join(lists, f"{kind}.txt")
        with open(paths[kind], "w") as f:
            f.write(text)
    return paths


def _many_clients(
    ctx: Context, urls: List[str], out: str, endpoint: str, full: bool
) -> List[Client]:
    lists = _write_lists(out, urls, out)
    py, curl = ctx.python, ctx.tools["curl"]
    url_list = lists["urls"]
    clients = [
        C.Client("curl -K", C.curl_many(curl, lists["curl"])),
        C.python_client("pyvo_dl download_many", py, C.PYVO_DL_MANY, [url_list, out], 600),
    ]
    if ctx.has_cli:
        clients.append(C.Client("pyvo_dl CLI -i", [py, "-m", "pyvo_dl", "-i", url_list, "-d", out]))
    clients += [
        C.python_client(HTTP_LOOP, py, C.HTTP_CLIENT_LOOP, [url_list, out], 600),
        C.python_client("parfive max_conn=8", py, C.PARFIVE_MANY, [url_list, out], 900),
        C.Client("curl -K --parallel 8", C.curl_many(curl, lists["curl"], parallel=8)),
    ]
    if ctx.s5cmd is not None:
        clients.append(C.Client("s5cmd run", C.s5cmd_run(ctx.s5cmd, endpoint, lists["s5cmd"])))
    if "aria2c" in ctx.tools:
        clients.append(C.Client("aria2c -i -j8", C.aria2c_many(ctx.tools["aria2c"], url_list, out)))
    if full:
        null = C.curl_many(curl, lists["curl-null"], parallel=8)
        clients.append(C.Client("curl -K --parallel 8 -o /dev/null", null, writes=False))
        if "wget" in ctx.tools:
            clients.append(C.Client("wget -i", C.wget_many(ctx.tools["wget"], url_list, out)))
        clients.append(
            C.python_client(HTTP_LOOP_FILES, py, C.HTTP_CLIENT_LOOP_FILES, [url_list, out], 600)
        )
        clients.append(
            C.python_client(
                "pyvo pattern loop", py, C.PYVO_PATTERN_HTTP_LOOP, [lists["pairs"]], 900
            )
        )
    return clients


def _many_bars(ctx: Context, versus: str, minimum: float, label: str) -> List[BarSpec]:
    names = ["pyvo_dl download_many"] + (["pyvo_dl CLI -i"] if ctx.has_cli else [])
    short = {"pyvo_dl download_many": "download_many", "pyvo_dl CLI -i": "CLI -i"}
    return [BarSpec(f"{short[n]} >= {minimum:g} x {label}", n, versus, minimum) for n in names]


def many_files(ctx: Context) -> Scenario:
    """Many 16 KiB files into tmpfs: download_many against the http.client loop and parfive."""
    count = ctx.small_count
    scenario_key = f"many-{count}"
    out = _folder(ctx, scenario_key, tmpfs=True)
    urls = [ctx.fast(key) for key in ctx.data.small[:count]]
    size = ctx.data.files[ctx.data.small[0]][0]
    clients = _many_clients(ctx, urls, out, ctx.nginx.fast_url, full=True)
    names = {c.name for c in clients}
    bars = _many_bars(ctx, HTTP_LOOP, 1.0, "http.client loop")
    bars += _many_bars(ctx, "parfive max_conn=8", 3.0, "parfive")
    reader = "curl -K --parallel 8 -o /dev/null"
    return Scenario(
        key=scenario_key,
        title=f"{count} x {size_label(size)} files from nginx into tmpfs",
        reference="curl -K",
        clients=clients,
        out_dir=out,
        expected=ctx.data.expected_small(count),
        unit="files/s",
        amount=count,
        rounds=ctx.rounds,
        log=ctx.nginx.fast_log,
        bars=[bar for bar in bars if bar.versus in names],
        show_connections=True,
        physical=_loopback_physical(reader) if reader in names else None,
        mine="pyvo_dl download_many",
    )


def capped_many(ctx: Context) -> Scenario:
    """Small files with 10 ms before each first byte: download_many against aria2c."""
    count = ctx.capped_small_count
    scenario_key = f"capped-many-{count}"
    out = _folder(ctx, scenario_key, tmpfs=True)
    urls = [ctx.capped(key) for key in ctx.data.small[:count]]
    size = ctx.data.files[ctx.data.small[0]][0]
    clients = _many_clients(ctx, urls, out, ctx.nginx.capped_url, full=False)
    clients = [c for c in clients if c.name != "curl -K"]
    has_aria2c = any(c.name == "aria2c -i -j8" for c in clients)
    bars = _many_bars(ctx, "aria2c -i -j8", 1.0, "aria2c") if has_aria2c else []
    return Scenario(
        key=scenario_key,
        title=f"{count} x {size_label(size)} files, 10 ms to first byte per request, into tmpfs",
        reference="aria2c -i -j8" if has_aria2c else "curl -K --parallel 8",
        clients=clients,
        out_dir=out,
        expected=ctx.data.expected_small(count),
        unit="files/s",
        amount=count,
        rounds=ctx.rounds,
        log=ctx.nginx.capped_log,
        bars=bars,
        show_connections=True,
        physical=Physical(
            f"{count} files x {CAPPED_DELAY * 1000:g} ms / connections",
            over_connections=count * CAPPED_DELAY,
        ),
        mine="pyvo_dl download_many",
    )


def signed_moto(ctx: Context) -> Scenario | None:
    """A small signed download from moto's S3 server: aws_download(aws_profile=)."""
    if ctx.moto is None:
        return None
    key = ctx.moto_key
    size = ctx.data.files[key][0]
    out = _folder(ctx, "signed-moto")
    path = os.path.join(out, os.path.basename(key))
    args = [ctx.moto.url, BUCKET, key, path, "-", ctx.profile]
    return Scenario(
        key=f"signed-moto-{size_label(size)}",
        title=f"one {size_label(size)} object from moto's S3 server, SigV4-signed",
        reference="boto3 download_file (signed)",
        clients=[
            _boto3_client(ctx, ctx.moto.url, key, path, ctx.profile),
            C.python_client("pyvo_dl aws_download (signed)", ctx.python, C.PYVO_DL_AWS, args, 300),
        ],
        out_dir=out,
        expected=ctx.data.expected(key),
        unit="MB/s",
        amount=size,
        rounds=min(ctx.rounds, 3),
    )


# -- running a scenario ---------------------------------------------------------------


def clear(folder: str) -> None:
    """Empty ``folder`` (right before a run: see the module's docstring)."""
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-")


def run_client(ctx: Context, scenario: Scenario, client: Client, round_: int, seq: int) -> Run:
    """Run one client once, after emptying the output folder, and check its files."""
    clear(scenario.out_dir)
    log_path = os.path.join(ctx.work, "logs", f"{scenario.key}.{_slug(client.name)}.log")
    outcome = run_process(
        ctx.prefix + client.argv,
        cwd=ctx.work,
        env=ctx.env,
        log_path=log_path,
        timeout=client.timeout,
        core=ctx.client_core,
    )
    error = outcome.error
    if not error and client.writes:
        error = check_files(scenario.out_dir, scenario.expected)
    return Run(
        client=client.name,
        round=round_,
        seq=seq,
        wall=outcome.wall,
        cpu=outcome.cpu,
        rss_kib=outcome.rss_kib,
        ok=not error,
        error=error,
        others=outcome.others,
        steal=outcome.steal,
    )


def run_scenario(ctx: Context, scenario: Scenario) -> Outcome:
    """Run every round of a scenario; summarize it into rows and judged bars."""
    by_name = {client.name: client for client in scenario.clients}
    reference = by_name[scenario.reference]
    runs: List[Run] = []
    offsets: List[int] = []
    for round_ in range(scenario.rounds):
        others = [c for c in scenario.clients if c is not reference]
        ctx.rng.shuffle(others)
        order = [reference]
        for client in others:
            order += [client, reference]
        for client in order:
            offsets.append(scenario.log.offset() if scenario.log else 0)
            run = run_client(ctx, scenario, client, round_, len(runs))
            runs.append(run)
            state = f"{run.wall:7.3f} s" if run.ok else f"FAILED: {run.error}"
            log(f"[{scenario.key}] round {round_ + 1}/{scenario.rounds} {client.name}: {state}")
    if scenario.log is not None:
        time.sleep(0.2)  # the last request's log line
        _attach_server_stats(scenario.log, runs, offsets)
    rows = summarize(scenario, runs)
    bars = [judge(scenario, spec, runs, rows) for spec in scenario.bars]
    outcome = Outcome(scenario.key, scenario.title, scenario.reference, runs, rows, bars)
    outcome.notes = [line for line in (physical_note(scenario, rows), core_note(runs)) if line]
    outcome.mine = scenario.mine
    return outcome


def _attach_server_stats(access_log: AccessLog, runs: List[Run], offsets: List[int]) -> None:
    ends = [*offsets[1:], access_log.offset()]
    for run, start, end in zip(runs, offsets, ends):
        run.server = summarize_log(access_log.entries(start, end))


# -- summaries and bars ----------------------------------------------------------------


def _rounds(runs: List[Run]) -> Dict[int, List[Run]]:
    grouped: Dict[int, List[Run]] = {}
    for run in runs:
        grouped.setdefault(run.round, []).append(run)
    return grouped


def _bracketed_by_round(runs: List[Run], reference: str) -> Dict[int, Dict[str, List[float]]]:
    """Per round and client: the reference's time (the runs around it) over the client's."""
    by_round: Dict[int, Dict[str, List[float]]] = {}
    for round_, round_runs in _rounds(runs).items():
        ordered = sorted(round_runs, key=lambda r: r.seq)
        ratios = by_round.setdefault(round_, {})
        for i, run in enumerate(ordered):
            if run.client == reference or not run.ok:
                continue
            neighbours = [ordered[j] for j in (i - 1, i + 1) if 0 <= j < len(ordered)]
            around = [r.wall for r in neighbours if r.client == reference and r.ok]
            if around:
                ratios.setdefault(run.client, []).append(statistics.mean(around) / run.wall)
    return by_round


def bracketed_ratios(runs: List[Run], reference: str) -> Dict[str, List[float]]:
    """Per client, its speed over the reference's, against the two runs around it."""
    ratios: Dict[str, List[float]] = {}
    for round_ratios in _bracketed_by_round(runs, reference).values():
        for client, values in round_ratios.items():
            ratios.setdefault(client, []).extend(values)
    return ratios


def pair_ratios(runs: List[Run], client: str, versus: str, reference: str) -> List[float]:
    """Per round, how many times faster ``client`` was than ``versus``.

    Each is first taken against the reference runs around it, so that a
    drift of the machine between the two runs cancels (``ref A ref ... ref
    B ref``): the ratio is ``bracketed(client) / bracketed(versus)``.
    """
    ratios = []
    for round_ratios in _bracketed_by_round(runs, reference).values():
        mine = round_ratios.get(client, [1.0] if client == reference else [])
        theirs = round_ratios.get(versus, [1.0] if versus == reference else [])
        if mine and theirs:
            ratios.append(statistics.median(mine) / statistics.median(theirs))
    return ratios


def format_rate(amount: float, seconds: float, unit: str) -> str:
    """``123.4 MB/s`` (10^6 bytes) or ``5678 files/s``."""
    if unit == "MB/s":
        return f"{amount / 1e6 / seconds:.1f} MB/s"
    return f"{amount / seconds:.0f} files/s"


def _note(scenario: Scenario, client: Client, runs: List[Run], ok: List[Run]) -> str:
    notes = []
    failed = [r for r in runs if not r.ok]
    if failed:
        notes.append(f"{len(failed)} failed: {failed[0].error}")
    if scenario.show_connections and ok and ok[0].server:
        conns = _connections(ok)
        gets = statistics.median(r.server.get("gets", 0) for r in ok)
        heads = statistics.median(r.server.get("heads", 0) for r in ok)
        extra = f", {heads:g} HEAD(s)" if heads else ""
        notes.append(f"server saw {conns:g} connection(s), {gets:g} GET(s){extra} per run")
        if client.connections and conns < client.connections:
            notes.append(f"asked for {client.connections} connections: ignored")
    return "; ".join(notes)


def _connections(ok: List[Run]) -> float:
    """The median count of TCP connections the server saw in these runs."""
    return statistics.median(r.server.get("connections", 0) for r in ok)


def physical_seconds(scenario: Scenario, ok: List[Run], medians: Dict[str, float]) -> float | None:
    """The physical reference of a client with these good runs (see :class:`Physical`)."""
    physical = scenario.physical
    if physical is None:
        return None
    if physical.client is not None:
        return medians.get(physical.client)
    connections = _connections(ok) if ok and ok[0].server else 0
    return physical.over_connections / connections if connections else None


def summarize(scenario: Scenario, runs: List[Run]) -> List[Row]:
    """One table row per client."""
    ratios = bracketed_ratios(runs, scenario.reference)
    medians = {
        name: statistics.median(r.wall for r in runs if r.client == name and r.ok)
        for name in {r.client for r in runs if r.ok}
    }
    rows = []
    for client in scenario.clients:
        mine = [r for r in runs if r.client == client.name]
        ok = [r for r in mine if r.ok]
        note = _note(scenario, client, mine, ok)
        row = Row(scenario.key, client.name, len(ok), len(mine), note=note)
        if ok:
            walls = [r.wall for r in ok]
            row.median, row.low, row.high = statistics.median(walls), min(walls), max(walls)
            row.rate = format_rate(scenario.amount, row.median, scenario.unit)
            row.cpu = statistics.median(r.cpu for r in ok)
            peaks = [r.rss_kib for r in ok if r.rss_kib is not None]
            row.rss_mib = max(peaks) / 1024 if peaks else None
            if client.name == scenario.reference:
                row.ratio = 1.0
            elif ratios.get(client.name):
                row.ratio = statistics.median(ratios[client.name])
            reference = physical_seconds(scenario, ok, medians)
            if reference is not None:
                row.physical = reference / row.median
        rows.append(row)
    return rows


def physical_note(scenario: Scenario, rows: List[Row]) -> str:
    """``physical reference: ...; pyvo_dl ...: 0.80 s, 85 % of it``."""
    physical = scenario.physical
    if physical is None:
        return ""
    text = f"physical reference: {physical.text}"
    row = next((r for r in rows if r.client == scenario.mine), None)
    if row is not None and row.physical and row.median:
        seconds = row.physical * row.median
        text += f"; {row.client}: {seconds:.3f} s, reached at {row.physical:.0%}"
    return text + " ('phys' column: each client's share of its own reference)"


def core_note(runs: List[Run]) -> str:
    """What else used the client core during the scenario's runs."""
    measured = [r for r in runs if r.others is not None]
    if not measured:
        return ""
    wall = sum(r.wall for r in measured)
    others = sum(r.others or 0.0 for r in measured)
    steal = sum(r.steal or 0.0 for r in measured)
    worst = max(measured, key=lambda r: (r.others or 0.0) / r.wall)
    share = (worst.others or 0.0) / worst.wall
    return (
        f"client core: other processes used {others / wall:.0%} of it during the runs "
        f"(worst run {share:.0%}, {worst.client}), steal {steal / wall:.1%}"
    )


def judge(scenario: Scenario, spec: BarSpec, runs: List[Run], rows: List[Row]) -> BarResult:
    """Measure one ratio bar as the median of its per-round ratios."""
    ratios = pair_ratios(runs, spec.client, spec.versus, scenario.reference)
    target = f">= {spec.minimum:g} x"
    if not ratios:
        return BarResult(scenario.key, spec.label, target, "n/a", None, "no pair of good runs")
    ratio = statistics.median(ratios)
    note = f"per round {min(ratios):.2f}-{max(ratios):.2f}" if len(ratios) > 1 else ""
    passed = ratio >= spec.minimum
    # Two decimals would print a 0.997 that misses a bar of 1.0 as "1.00 x MISS".
    digits = 2 if (round(ratio, 2) >= spec.minimum) == passed else 3
    return BarResult(scenario.key, spec.label, target, f"{ratio:.{digits}f} x", passed, note)

"""The table (printed, and kept as text) and the JSON record of a run."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional, Sequence


@dataclass
class Row:
    """One line of the table: one client in one scenario."""

    scenario: str
    client: str
    ok: int
    runs: int
    median: Optional[float] = None
    low: Optional[float] = None
    high: Optional[float] = None
    rate: str = ""
    ratio: Optional[float] = None
    cpu: Optional[float] = None
    rss_mib: Optional[float] = None
    note: str = ""
    #: The scenario's physical reference time over this client's (1.0 = at it).
    physical: Optional[float] = None


@dataclass
class BarResult:
    """One bar of SPEC §6 / issue 5, judged.

    ``passed`` is None when the bar could not be measured (a client failed
    or is missing).
    """

    scenario: str
    label: str
    target: str
    measured: str
    passed: Optional[bool]
    note: str = ""

    @property
    def verdict(self) -> str:
        """``PASS``, ``MISS`` or ``n/a``."""
        if self.passed is None:
            return "n/a"
        return "PASS" if self.passed else "MISS"


_COLUMNS = (
    ("client", "<", 30),
    ("ok", ">", 5),
    ("median s", ">", 9),
    ("min-max s", ">", 13),
    ("rate", ">", 14),
    ("x ref", ">", 6),
    ("phys", ">", 5),
    ("CPU s", ">", 6),
    ("RSS MiB", ">", 7),
)


def _num(value: Optional[float], digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _seconds(value: Optional[float]) -> str:
    if value is None:
        return ""
    return f"{value:.3f}" if value < 10 else f"{value:.2f}"


def _cells(row: Row) -> List[str]:
    span = ""
    if row.low is not None and row.high is not None:
        span = f"{_seconds(row.low)}-{_seconds(row.high)}"
    return [
        row.client,
        f"{row.ok}/{row.runs}" if row.runs else "",
        _seconds(row.median),
        span,
        row.rate,
        _num(row.ratio, 2),
        "" if row.physical is None else f"{row.physical:.0%}",
        _num(row.cpu, 2),
        _num(row.rss_mib, 1),
    ]


def _line(cells: Sequence[str]) -> str:
    parts = [f"{cell:{align}{width}}" for cell, (_, align, width) in zip(cells, _COLUMNS)]
    return "  ".join(parts).rstrip()


def format_scenario(
    title: str,
    reference: str,
    rows: List[Row],
    bars: List[BarResult],
    notes: Sequence[str] = (),
) -> str:
    """The block of the table for one scenario: header, rows, notes, bars."""
    out = [f"== {title}" + (f"  (reference: {reference})" if reference else "")]
    out.append(_line([name for name, _, _ in _COLUMNS]))
    for row in rows:
        out.append(_line(_cells(row)))
        if row.note:
            out.append(f"{'':4}{row.note}")
    out.extend(f"  {note}" for note in notes)
    for bar in bars:
        note = f"  ({bar.note})" if bar.note else ""
        out.append(f"  bar: {bar.label}: {bar.measured} (target {bar.target}) {bar.verdict}{note}")
    return "\n".join(out)


#: Rows that are references or baselines, not peers a user would pick instead.
NOT_PEERS = ("-o /dev/null", "stdlib ", "pyvo_dl", "aws_download connections=", "python -I")


def _best_peer(rows: List[Row], reference: str) -> str:
    peers = [r for r in rows if r.median and not any(m in r.client for m in NOT_PEERS)]
    if not peers:
        return ""
    best = min(peers, key=lambda r: r.median or 0.0)
    if best.client == reference:
        return f"{best.client} (the reference)"
    ratio = "" if best.ratio is None else f" {best.ratio:.2f} x {reference}"
    return f"{best.client}{ratio}"


def format_standing(blocks: Sequence[Any]) -> str:
    """Issue 14's table: per scenario, pyvo_dl's ratios, the best peer, the bars.

    ``blocks`` are the scenario outcomes (key, reference, rows, bars, mine).
    """
    out = [
        "== Where pyvo_dl stands (Markdown, for docs/benchmarks.md)",
        "| scenario | pyvo_dl | best peer in the run | physical reference | bars |",
        "|---|---|---|---|---|",
    ]
    for block in blocks:
        if not block.bars:
            continue
        row = next((r for r in block.rows if r.client == block.mine), None)
        mine = ""
        if row is not None and row.median is not None:
            mine = f"{row.client} {row.median:.3f} s"
            if row.ratio is not None and block.reference and row.client != block.reference:
                mine += f", {row.ratio:.2f} x {block.reference}"
        share = "" if row is None or row.physical is None else f"{row.physical:.0%}"
        bars = "; ".join(f"{b.verdict} {b.label}: {b.measured}" for b in block.bars)
        peer = _best_peer(block.rows, block.reference)
        out.append(f"| {block.key} | {mine} | {peer} | {share} | {bars} |")
    return "\n".join(out)


def format_summary(bars: List[BarResult]) -> str:
    """Every bar in one list, with the count of PASS and MISS."""
    passed = sum(1 for bar in bars if bar.passed)
    missed = sum(1 for bar in bars if bar.passed is False)
    out = [f"== Bars: {passed} PASS, {missed} MISS, {len(bars) - passed - missed} n/a"]
    width = max((len(bar.label) for bar in bars), default=10)
    out.extend(
        f"{bar.verdict:<5} {bar.label:<{width}}  {bar.measured:>12}  target {bar.target}"
        for bar in bars
    )
    return "\n".join(out)


def write_json(path: str, record: Dict[str, Any]) -> None:
    """Write the run's record (every run of every client, rows, bars, machine)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(record, f, indent=1, default=_default)
        f.write("\n")


def _default(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    raise TypeError(f"cannot write {value!r} as JSON")

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
        _num(row.cpu, 2),
        _num(row.rss_mib, 1),
    ]


def _line(cells: Sequence[str]) -> str:
    parts = [f"{cell:{align}{width}}" for cell, (_, align, width) in zip(cells, _COLUMNS)]
    return "  ".join(parts).rstrip()


def format_scenario(title: str, reference: str, rows: List[Row], bars: List[BarResult]) -> str:
    """The block of the table for one scenario: header, rows, notes, bars."""
    out = [f"== {title}" + (f"  (reference: {reference})" if reference else "")]
    out.append(_line([name for name, _, _ in _COLUMNS]))
    for row in rows:
        out.append(_line(_cells(row)))
        if row.note:
            out.append(f"{'':4}{row.note}")
    for bar in bars:
        note = f"  ({bar.note})" if bar.note else ""
        out.append(f"  bar: {bar.label}: {bar.measured} (target {bar.target}) {bar.verdict}{note}")
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

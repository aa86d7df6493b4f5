"""Data-quality report of candles against the NSE trading calendar.

What counts as a problem: missing sessions, missing bars inside a session, bars outside
session hours, duplicate or non-monotonic timestamps, and OHLC values that contradict each
other. What does not: special sessions the calendar does not list (a Saturday budget day,
Muhurat trading, a DR drill) are data and are listed for information.

A special day with bars both inside regular hours and outside them (the 2024-01-20 files
carry bars up to 18:16) reports the outside bars; a special day whose bars all lie outside
regular hours (a Muhurat evening session) is taken as a session of its own.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .calendar import IST, calendar_bounds, session_bar_starts, sessions
from .timeframes import Timeframe

__all__ = ["GapReport", "check_candles"]

_OPEN = dt.time(9, 15)
_CLOSE = dt.time(15, 30)


@dataclass
class GapReport:
    """The result of a gap check; ``ok`` is True when no problem was found."""

    symbol: str
    timeframe: str
    start: dt.date | None
    end: dt.date | None
    bars: int
    expected_sessions: int
    missing_sessions: list[dt.date] = field(default_factory=list)
    missing_bars: pd.DataFrame = field(default_factory=lambda: _frame(["session", "first", "last", "bars"]))
    outside_hours: pd.DataFrame = field(default_factory=lambda: _frame(["ts"]))
    duplicates: pd.DataFrame = field(default_factory=lambda: _frame(["ts", "count"]))
    non_monotonic: pd.DataFrame = field(default_factory=lambda: _frame(["ts", "previous"]))
    ohlc_inconsistent: pd.DataFrame = field(default_factory=lambda: _frame(["ts", "problem"]))
    special_sessions: list[dt.date] = field(default_factory=list)
    beyond_calendar: bool = False

    @property
    def ok(self) -> bool:
        return not (
            self.missing_sessions
            or len(self.missing_bars)
            or len(self.outside_hours)
            or len(self.duplicates)
            or len(self.non_monotonic)
            or len(self.ohlc_inconsistent)
        )

    def summary(self) -> pd.DataFrame:
        """One row per check with its count, for printing."""
        rows = [
            ("missing sessions", len(self.missing_sessions)),
            ("missing bars", int(self.missing_bars["bars"].sum()) if len(self.missing_bars) else 0),
            ("bars outside session hours", len(self.outside_hours)),
            ("duplicate timestamps", len(self.duplicates)),
            ("non-monotonic timestamps", len(self.non_monotonic)),
            ("OHLC inconsistencies", len(self.ohlc_inconsistent)),
            ("special sessions (info)", len(self.special_sessions)),
        ]
        return pd.DataFrame(rows, columns=["check", "count"])

    def __str__(self) -> str:
        head = (
            f"{self.symbol} {self.timeframe} {self.start}..{self.end}: {self.bars} bars, "
            f"{self.expected_sessions} calendar sessions — {'OK' if self.ok else 'PROBLEMS FOUND'}"
        )
        lines = [head] + [f"  {r.check}: {r.count}" for r in self.summary().itertuples()]
        if self.missing_sessions:
            lines.append("  missing sessions: " + ", ".join(map(str, self.missing_sessions[:10])) + (" …" if len(self.missing_sessions) > 10 else ""))
        if self.special_sessions:
            lines.append("  special sessions: " + ", ".join(map(str, self.special_sessions[:10])))
        if self.beyond_calendar:
            lines.append("  note: the range reaches past the NSE calendar's last known session; later days are not checked")
        return "\n".join(lines)


def _frame(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object") for c in columns})


def check_candles(
    frame: pd.DataFrame,
    timeframe: "str | Timeframe",
    *,
    symbol: str = "",
    start: dt.date | None = None,
    end: dt.date | None = None,
) -> GapReport:
    """Check ``frame`` (rows in the order they were stored or received) for ``timeframe``.

    ``start``/``end`` bound the calendar sessions expected; by default the frame's own span.
    """
    tf = Timeframe.parse(timeframe)
    idx = pd.DatetimeIndex(frame.index)
    if idx.tz is None:
        idx = idx.tz_localize(IST)
    idx = idx.tz_convert(IST)
    days = idx.normalize()
    if start is None and len(idx):
        start = days.min().date()
    if end is None and len(idx):
        end = days.max().date()
    report = GapReport(symbol=symbol, timeframe=tf.name, start=start, end=end, bars=len(idx), expected_sessions=0)
    if start is None or end is None:
        return report

    last_known = calendar_bounds()[1]
    report.beyond_calendar = end > last_known
    expected = sessions(start, min(end, last_known)) if start <= min(end, last_known) else []
    report.expected_sessions = len(expected)
    expected_set = set(expected)
    present = pd.Series(days.date).value_counts()
    present_days = set(present.index)
    report.missing_sessions = sorted(expected_set - present_days)
    report.special_sessions = sorted(d for d in present_days if d not in expected_set and start <= d <= min(end, last_known))

    # Timestamp order and uniqueness, in stored order.
    asi = idx.asi8
    if len(asi) > 1:
        back = np.flatnonzero(np.diff(asi) < 0) + 1
        report.non_monotonic = pd.DataFrame({"ts": idx[back], "previous": idx[back - 1]})
    counts = pd.Series(1, index=idx).groupby(level=0).size()
    dup = counts[counts > 1]
    report.duplicates = pd.DataFrame({"ts": dup.index, "count": dup.to_numpy()})

    # OHLC consistency.
    o, h, low, c = (frame[k].to_numpy(dtype=float) for k in ("open", "high", "low", "close"))
    problems = []
    for mask, text in (
        (h < low, "high below low"),
        (h < np.maximum(o, c), "high below open/close"),
        (low > np.minimum(o, c), "low above open/close"),
    ):
        for ts in idx[mask]:
            problems.append((ts, text))
    report.ohlc_inconsistent = pd.DataFrame(problems, columns=["ts", "problem"]).sort_values("ts", kind="stable").reset_index(drop=True)

    if tf.is_daily:
        return report

    # Session hours and missing bars (intraday only).
    times = idx.time
    inside = np.array([_OPEN <= t < _CLOSE for t in times], dtype=bool)
    day_dates = np.array(days.date)
    has_inside = {d for d, ok in zip(day_dates, inside) if ok}
    outside_mask = np.array(
        [(not ok) and (d in expected_set or d in has_inside) for d, ok in zip(day_dates, inside)], dtype=bool
    )
    report.outside_hours = pd.DataFrame({"ts": idx[outside_mask]})

    runs = []
    unique = pd.DatetimeIndex(idx.unique())
    for day in sorted(expected_set & present_days):
        want = session_bar_starts(day, tf.minutes)
        missing = want.difference(unique)
        if len(missing):
            runs.extend(_runs(day, missing, tf.minutes))
    report.missing_bars = pd.DataFrame(runs, columns=["session", "first", "last", "bars"])
    return report


def _runs(day: dt.date, missing: pd.DatetimeIndex, minutes: int) -> list[tuple]:
    """Collapse missing bar starts into consecutive runs: (session, first, last, count)."""
    out = []
    step = pd.Timedelta(minutes=minutes)
    first = prev = missing[0]
    n = 1
    for ts in missing[1:]:
        if ts - prev == step:
            prev, n = ts, n + 1
            continue
        out.append((day, first, prev, n))
        first = prev = ts
        n = 1
    out.append((day, first, prev, n))
    return out

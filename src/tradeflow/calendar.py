"""NSE sessions and holidays in IST, and bar alignment to the 09:15 session open.

Trading days come from ``exchange_calendars``' ``XBOM`` calendar (BSE; NSE keeps the same
trading days). It lists regular sessions only: special sessions (a Saturday budget day,
Muhurat trading, DR drills) are not in it, and they show up in real data as data, not errors.
The calendar library knows sessions up to a last date (currently 2026-12-31); asking about
later dates logs a warning and treats them as unknown.
"""

from __future__ import annotations

import datetime as dt
import logging
import warnings
from functools import lru_cache

import exchange_calendars as xcals
import numpy as np
import pandas as pd

from .errors import CalendarError

__all__ = [
    "IST",
    "SESSION_OPEN",
    "SESSION_CLOSE",
    "IST_OFFSET",
    "sessions",
    "is_session",
    "calendar_bounds",
    "session_bar_starts",
    "to_ist",
    "as_instant",
]

log = logging.getLogger(__name__)

IST = "Asia/Kolkata"
SESSION_OPEN = dt.time(9, 15)
SESSION_CLOSE = dt.time(15, 30)
IST_OFFSET = pd.Timedelta(hours=5, minutes=30)
"""India has had no daylight saving since 1945, so IST is a fixed UTC+05:30."""

_CALENDAR_NAME = "XBOM"
_CALENDAR_START = "2005-01-03"
_OPEN_MINUTE = SESSION_OPEN.hour * 60 + SESSION_OPEN.minute  # 555
_CLOSE_MINUTE = SESSION_CLOSE.hour * 60 + SESSION_CLOSE.minute  # 930


@lru_cache(maxsize=1)
def _calendar() -> xcals.ExchangeCalendar:
    # exchange_calendars 4.13 trips a pandas 3.1 deprecation while building its schedule;
    # it is theirs to fix and says nothing to our users.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Series.values returning an ndarray", category=DeprecationWarning)
        return xcals.get_calendar(_CALENDAR_NAME, start=_CALENDAR_START)


def calendar_bounds() -> tuple[dt.date, dt.date]:
    """First and last session date the calendar library knows."""
    cal = _calendar()
    return cal.first_session.date(), cal.last_session.date()


def _as_date(value: "str | dt.date | pd.Timestamp") -> dt.date:
    ts = pd.Timestamp(value)
    if ts.tzinfo is not None:
        ts = ts.tz_convert(IST)
    return ts.date()


def sessions(start: "str | dt.date", end: "str | dt.date") -> list[dt.date]:
    """Regular NSE session dates from ``start`` to ``end`` inclusive.

    Dates outside the calendar's known range are dropped with a warning (the library
    does not know future holidays), never guessed.
    """
    first, last = calendar_bounds()
    lo, hi = _as_date(start), _as_date(end)
    if lo > hi:
        raise CalendarError(f"start {lo} is after end {hi}: swap them")
    if hi > last:
        log.warning(
            "the NSE calendar (exchange_calendars %s) knows sessions only up to %s; "
            "dates after it are left out", _CALENDAR_NAME, last,
        )
    if lo < first:
        log.warning("the NSE calendar starts at %s; earlier dates are left out", first)
    lo, hi = max(lo, first), min(hi, last)
    if lo > hi:
        return []
    labels = _calendar().sessions_in_range(pd.Timestamp(lo), pd.Timestamp(hi))
    return [ts.date() for ts in labels]


def is_session(day: "str | dt.date") -> bool:
    """True when ``day`` is a regular NSE session (special sessions are not)."""
    d = _as_date(day)
    first, last = calendar_bounds()
    if not first <= d <= last:
        log.warning("%s is outside the NSE calendar's range %s..%s", d, first, last)
        return False
    return bool(_calendar().is_session(pd.Timestamp(d)))


def session_bar_starts(day: "str | dt.date", minutes: int) -> pd.DatetimeIndex:
    """Expected bar starts (IST) of a regular session for ``minutes``-minute bars.

    Buckets align to 09:15: 15-minute bars start 09:15, 09:30, ...; hourly bars 09:15,
    10:15, ..., 15:15 (the last one short).
    """
    d = _as_date(day)
    base = pd.Timestamp(d).tz_localize(IST)
    offsets = np.arange(_OPEN_MINUTE, _CLOSE_MINUTE, minutes)
    return base + pd.to_timedelta(offsets, unit="min")


def to_ist(index: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """Convert a tz-aware index to IST; a naive one is refused (say which zone it is in)."""
    if index.tz is None:
        raise CalendarError(
            "timestamps have no time zone: localize them first, e.g. "
            "index.tz_localize('Asia/Kolkata') for exchange time or tz_localize('UTC')"
        )
    return index.tz_convert(IST)


def as_instant(value: "str | dt.date | dt.datetime | pd.Timestamp", *, end: bool = False) -> pd.Timestamp:
    """Turn a user's date or time into a UTC instant; naive values are read as IST.

    With ``end=True`` the result is an *exclusive* bound: a date means the end of that
    day, a time means "up to and including the bar that starts then".
    """
    date_only = isinstance(value, dt.date) and not isinstance(value, dt.datetime)
    if isinstance(value, str):
        text = value.strip()
        date_only = len(text) <= 10 and ":" not in text
    try:
        ts = pd.Timestamp(dt.datetime.fromisoformat(value.strip()) if isinstance(value, str) else value)
    except (ValueError, TypeError) as exc:
        raise CalendarError(f"cannot read {value!r} as a date or time: use e.g. 2024-01-31 or '2024-01-31 10:15'") from exc
    if ts is pd.NaT:
        raise CalendarError(f"cannot read {value!r} as a date or time")
    if ts.tzinfo is None:
        ts = ts.tz_localize(IST)
    if end:
        ts = ts + (pd.Timedelta(days=1) if date_only else pd.Timedelta(microseconds=1))
    return ts.tz_convert("UTC")

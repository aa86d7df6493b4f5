"""Backfill and update the store from a source, window by window, resumable.

The store keeps, per ``(source, symbol, timeframe)``, the contiguous span already fully
ingested (its end is the watermark). ``fetch`` asks the source only for what lies outside
that span: later windows in time order (the watermark moves after each one), earlier
windows backwards from the span's start (the start moves after each). An interruption
(Ctrl-C, a network error, a killed process) loses at most the window in flight, and a rerun
starts from there. A window whose end lies in the future, or in a session still trading,
is stored but never counted as complete.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
from tqdm.auto import tqdm

from .calendar import IST, as_instant
from .errors import SourceError
from .sources import Source, get_source
from .store import CandleStore, normalize_symbol
from .timeframes import Timeframe

__all__ = ["FetchResult", "fetch", "plan_windows"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FetchResult:
    """What one ``fetch`` did."""

    source: str
    symbol: str
    timeframe: str
    windows: int
    bars: int
    inserted: int
    coverage_start: pd.Timestamp | None
    coverage_end: pd.Timestamp | None

    @property
    def up_to_date(self) -> bool:
        return self.windows == 0


def plan_windows(
    start: pd.Timestamp, end: pd.Timestamp, window: pd.Timedelta, covered: tuple[pd.Timestamp, pd.Timestamp] | None
) -> tuple[list[tuple[pd.Timestamp, pd.Timestamp]], list[tuple[pd.Timestamp, pd.Timestamp]]]:
    """Split ``[start, end)`` minus the covered span into (earlier windows newest-first, later windows oldest-first).

    The covered span stays contiguous: a request that leaves a hole between itself and
    the span also fetches the hole. Windows are cut at IST midnights so no session is
    split across requests.
    """
    if covered is None:
        return [], _cut(start, end, window)
    c_start, c_end = covered
    before = _cut(start, c_start, window)[::-1] if start < c_start else []
    after = _cut(c_end, end, window) if end > c_end else []
    return before, after


def _cut(lo: pd.Timestamp, hi: pd.Timestamp, window: pd.Timedelta) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    out = []
    step = max(window, pd.Timedelta(days=1))
    cur = lo
    while cur < hi:
        nxt = min(hi, _midnight_ist(cur + step) if cur + step < hi else hi)
        if nxt <= cur:
            nxt = min(hi, cur + step)
        out.append((cur, nxt))
        cur = nxt
    return out


def _midnight_ist(ts: pd.Timestamp) -> pd.Timestamp:
    return ts.tz_convert(IST).normalize().tz_convert("UTC")


def fetch(
    symbol: str,
    timeframe: "str | Timeframe" = "1m",
    start: "str | dt.date | pd.Timestamp | None" = None,
    end: "str | dt.date | pd.Timestamp | None" = None,
    *,
    source: "str | Source | None" = None,
    store: CandleStore | None = None,
    progress: bool = True,
    now: pd.Timestamp | None = None,
    on_window: Callable[[pd.Timestamp, pd.Timestamp, int], None] | None = None,
) -> FetchResult:
    """Fill the store with ``symbol`` bars from ``source`` between ``start`` and ``end`` (dates, inclusive).

    Only what lies outside the already ingested span is requested. ``now`` caps what may
    be marked complete (default: the wall clock); ``on_window`` is called after each stored
    window (for progress displays and tests).
    """
    from .config import settings

    src = get_source(source or settings().default_source) if not hasattr(source, "fetch") else source
    sym = normalize_symbol(symbol)
    tf = Timeframe.parse(timeframe)
    if tf not in src.timeframes():
        offered = ", ".join(t.name for t in src.timeframes())
        raise SourceError(
            f"source {src.name!r} gives {offered} bars, not {tf}: fetch one of those; the store builds longer bars from 1m"
        )
    store = store or CandleStore()
    now = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now).tz_convert("UTC")
    lo = as_instant(start) if start is not None else as_instant(now.tz_convert(IST).date() - dt.timedelta(days=30))
    hi = as_instant(end, end=True) if end is not None else as_instant(now.tz_convert(IST).date(), end=True)
    if lo >= hi:
        raise SourceError(f"start {start} is not before end {end}: swap them")
    complete_until = _complete_until(now, tf)
    cov = store.coverage(src.name, sym, tf)
    before, after = plan_windows(lo, hi, src.window, None if cov is None else (cov.start, cov.end))
    windows = before + after
    c_start = None if cov is None else cov.start
    c_end = None if cov is None else cov.end
    bars = inserted = 0
    label = f"{src.name} {sym} {tf}"
    with tqdm(total=len(windows), desc=label, unit="window", disable=not progress or not windows, leave=True) as bar:
        for w_lo, w_hi in windows:
            frame = src.fetch(sym, tf, w_lo, w_hi)
            result = store.upsert(frame, sym, tf) if len(frame) else None
            bars += len(frame)
            inserted += result.inserted if result else 0
            done_hi = min(w_hi, complete_until)
            if c_start is None:  # first ingest of this series
                c_start, c_end = w_lo, max(done_hi, w_lo)
            elif w_hi <= c_start:  # extending backwards
                c_start = w_lo
            else:  # extending forwards
                c_end = max(c_end, done_hi)
            store.set_coverage(src.name, sym, tf, c_start, c_end)
            if on_window is not None:
                on_window(w_lo, w_hi, len(frame))
            bar.update(1)
            bar.set_postfix(bars=bars)
    if not windows:
        log.info("%s: already ingested %s..%s, nothing to fetch", label, c_start, c_end)
    return FetchResult(src.name, sym, tf.name, len(windows), bars, inserted, c_start, c_end)


def _complete_until(now: pd.Timestamp, tf: Timeframe) -> pd.Timestamp:
    """The latest instant whose bars can be final: never inside today's session.

    Intraday bars are final once closed, but a day is only marked complete after it ends,
    so a rerun later today fetches the rest of the session (the same window again).
    """
    return _midnight_ist(now)

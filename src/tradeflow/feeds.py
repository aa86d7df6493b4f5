"""Feeds: ticks and bars for the engine, from a replay of stored candles (live feeds to come).

Why this module exists: the engine reacts to two kinds of events, ticks (stops, targets)
and closed bars (the strategy stepper). Live brokers send ticks; the store holds candles.
``CandleBuilder`` turns ticks into bars bucketed exactly like the store does (aligned to the
09:15 IST session open, the last bar of a session ending at 15:30, never spanning two
sessions), and the replay functions turn stored candles back into bars or synthetic ticks,
so that a replay of 1-minute candles through the builder gives the store's own N-minute bars.

Times: ``Tick.ts`` is a UTC instant; ``Bar.ts`` is the bar start in Asia/Kolkata, as in the
candle frames of :mod:`tradeflow.store`. Internally the builder works in integer
nanoseconds so that it stays cheap per tick.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .calendar import IST, IST_OFFSET, SESSION_CLOSE, SESSION_OPEN
from .timeframes import Timeframe

__all__ = [
    "Tick",
    "Bar",
    "CandleBuilder",
    "replay_ticks",
    "replay_bars",
    "bars_to_frame",
]

log = logging.getLogger(__name__)

_NS = 1_000_000_000
_MIN_NS = 60 * _NS
_DAY_NS = 86_400 * _NS
_IST_NS = int(IST_OFFSET.total_seconds()) * _NS
_OPEN_NS = (SESSION_OPEN.hour * 60 + SESSION_OPEN.minute) * _MIN_NS  # 09:15 after local midnight
_CLOSE_NS = (SESSION_CLOSE.hour * 60 + SESSION_CLOSE.minute) * _MIN_NS  # 15:30 after local midnight

SleepFn = Callable[[float], None]
_UTC = pd.Timestamp(0, tz="UTC").tzinfo


def _utc(ts: object, what: str) -> pd.Timestamp:
    """A tz-aware instant as a UTC ``pd.Timestamp``; naive times are refused (which zone?)."""
    if type(ts) is pd.Timestamp and ts.tzinfo is not None and ts.tzinfo is _UTC:
        return ts  # the common case of a feed that already speaks UTC: no conversion cost
    out = pd.Timestamp(ts)  # type: ignore[arg-type]
    if out is pd.NaT:
        raise ValueError(f"{what} is missing (NaT)")
    if out.tzinfo is None:
        raise ValueError(
            f"{what} {ts!r} has no time zone: pass a tz-aware instant, e.g. "
            "pd.Timestamp('2024-01-02 09:15', tz='Asia/Kolkata') or tz='UTC'"
        )
    return out.tz_convert("UTC")


_IST_TZ = pd.Timestamp(0, tz=IST).tzinfo  # the zone object once: a zone name is parsed on every use


def _ist(ns: int) -> pd.Timestamp:
    return pd.Timestamp(ns, tz=_IST_TZ)


def _bucket(ns: int, minutes_ns: int) -> tuple[int, int] | None:
    """(start, end) in UTC ns of the session bucket holding ``ns``, or None outside 09:15-15:30 IST.

    Same arithmetic as the store's resample: slots of ``minutes`` counted from 09:15 of the
    IST day, the last one cut at 15:30 so that no bar runs past the session.
    """
    local = ns + _IST_NS
    day0 = local - local % _DAY_NS
    in_day = local - day0
    if in_day < _OPEN_NS or in_day >= _CLOSE_NS:
        return None
    start = day0 + _OPEN_NS + (in_day - _OPEN_NS) // minutes_ns * minutes_ns
    end = min(start + minutes_ns, day0 + _CLOSE_NS)
    return start - _IST_NS, end - _IST_NS


@dataclass(frozen=True, slots=True)
class Tick:
    """One trade (or last-price update) of one instrument at a UTC instant.

    ``ts`` may be given in any zone; it is stored as a UTC ``pd.Timestamp`` so that ticks
    from different brokers compare as instants. ``volume`` is the traded quantity of this
    tick (0 for a quote-only update), not a cumulative day volume.
    """

    symbol: str
    ts: pd.Timestamp
    price: float
    volume: float = 0.0
    ns: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ts = _utc(self.ts, "tick time")
        price, volume = float(self.price), float(self.volume)
        if not (math.isfinite(price) and price > 0):
            raise ValueError(f"tick price must be a positive number, got {self.price!r} for {self.symbol}")
        if not (math.isfinite(volume) and volume >= 0):
            raise ValueError(f"tick volume must be zero or positive, got {self.volume!r} for {self.symbol}")
        object.__setattr__(self, "ts", ts)
        object.__setattr__(self, "price", price)
        object.__setattr__(self, "volume", volume)
        object.__setattr__(self, "ns", int(ts.value))  # Timestamp.value is always nanoseconds


@dataclass(frozen=True, slots=True)
class Bar:
    """One closed candle: ``ts`` is the bar start in IST, ``timeframe`` its length in minutes."""

    symbol: str
    ts: pd.Timestamp
    open: float
    high: float
    low: float
    close: float
    volume: float
    timeframe: int

    @property
    def end(self) -> pd.Timestamp:
        """Exclusive end of the bar; the last bar of a session ends at 15:30 IST, not later."""
        start = self.ts.tz_convert(IST)
        close = start.normalize() + pd.Timedelta(hours=SESSION_CLOSE.hour, minutes=SESSION_CLOSE.minute)
        natural = start + pd.Timedelta(minutes=self.timeframe)
        return natural if natural <= close or start >= close else close


def bars_to_frame(bars: "list[Bar] | tuple[Bar, ...]") -> pd.DataFrame:
    """Bars as a candle frame (IST index named ``ts``; open, high, low, close, volume), to compare with the store."""
    idx = pd.DatetimeIndex([b.ts for b in bars], name="ts")
    # Bar starts are whole minutes; microseconds is the store's unit, so frames compare equal.
    idx = (idx.tz_convert(IST) if len(bars) else pd.DatetimeIndex([], tz=IST, name="ts")).as_unit("us")
    cols = ("open", "high", "low", "close", "volume")
    return pd.DataFrame({c: np.array([getattr(b, c) for b in bars], dtype="float64") for c in cols}, index=idx)


def _minutes(timeframe: "int | str | Timeframe") -> int:
    tf = Timeframe.parse(f"{timeframe}m" if isinstance(timeframe, int) else timeframe)
    if tf.minutes is None:
        raise ValueError("the candle builder makes intraday bars only; daily bars come from the store ('1d')")
    return tf.minutes


class CandleBuilder:
    """Ticks of one symbol to closed bars of ``timeframe_minutes``, aligned to 09:15 IST.

    * ``on_tick`` returns the bar(s) that closed because the tick falls in a later bucket.
    * ``on_time(now)`` closes the open bar once its end has passed (plus ``grace``), so a
      quiet market or a late tick never holds a bar open past its boundary.
    * A tick from a bucket that has already closed (by a later tick or by ``on_time``) is
      dropped with a warning and counted in ``late_ticks``; a tick outside the 09:15-15:30
      IST session is dropped and counted in ``outside_ticks``.
    * Inside the open bucket ticks may arrive slightly out of order: open is the earliest
      tick, close the latest by time, high/low the extremes, volume the sum.
    """

    def __init__(
        self,
        timeframe_minutes: "int | str | Timeframe",
        *,
        symbol: str,
        grace: "float | pd.Timedelta" = 0.0,
    ) -> None:
        self.timeframe = _minutes(timeframe_minutes)
        self.symbol = symbol
        self._len_ns = self.timeframe * _MIN_NS
        g = pd.Timedelta(grace) if isinstance(grace, pd.Timedelta) else pd.Timedelta(seconds=float(grace))
        if g < pd.Timedelta(0):
            raise ValueError(f"grace must not be negative, got {grace!r}")
        self._grace_ns = int(g.value)
        self.late_ticks = 0
        self.outside_ticks = 0
        self._horizon = -(2**62)  # buckets ending at or before this instant are closed for good
        self._start = self._end = 0
        self._open_bar = False
        self._o = self._h = self._l = self._c = self._v = 0.0
        self._first_ns = self._last_ns = 0

    def __repr__(self) -> str:
        return f"CandleBuilder({self.timeframe}, symbol={self.symbol!r})"

    # ------------------------------------------------------------------ events
    def on_tick(self, tick: Tick) -> list[Bar]:
        """Add a tick; return the bars it closed (at most one: the one open before it)."""
        if tick.symbol != self.symbol:
            raise ValueError(f"{self!r} got a tick of {tick.symbol!r}; use one builder per symbol")
        ns = tick.ns
        if self._open_bar and self._start <= ns < self._end:  # fast path: same bucket
            self._add(ns, tick.price, tick.volume)
            return []
        bucket = _bucket(ns, self._len_ns)
        if bucket is None:
            self.outside_ticks += 1
            log.warning("%s: tick at %s is outside the 09:15-15:30 IST session; dropped", self.symbol, _ist(ns))
            return []
        start, end = bucket
        if end <= self._horizon or (self._open_bar and start < self._start):
            self.late_ticks += 1
            log.warning(
                "%s: late tick at %s (price %s) belongs to a bar that has closed; dropped (%d so far)",
                self.symbol, _ist(ns), tick.price, self.late_ticks,
            )
            return []
        closed = [self._close()] if self._open_bar else []
        self._open_bar = True
        self._start, self._end = start, end
        self._o = self._h = self._l = self._c = tick.price
        self._v = tick.volume
        self._first_ns = self._last_ns = ns
        return closed

    def on_time(self, now: object) -> list[Bar]:
        """Close the open bar if ``now`` (tz-aware) is at or past its end plus ``grace``."""
        now_ns = int(_utc(now, "now").value) - self._grace_ns
        self._horizon = max(self._horizon, now_ns)
        if self._open_bar and now_ns >= self._end:
            return [self._close()]
        return []

    def flush(self) -> list[Bar]:
        """Close the open bar whatever the time (end of a replay or of the day's run)."""
        return [self._close()] if self._open_bar else []

    @property
    def partial(self) -> Bar | None:
        """The bar being built, as it stands (not closed), or None."""
        return self._snapshot() if self._open_bar else None

    # ------------------------------------------------------------------ internals
    def _add(self, ns: int, price: float, volume: float) -> None:
        if price > self._h:
            self._h = price
        if price < self._l:
            self._l = price
        if ns < self._first_ns:
            self._first_ns, self._o = ns, price
        if ns >= self._last_ns:
            self._last_ns, self._c = ns, price
        self._v += volume

    def _snapshot(self) -> Bar:
        return Bar(self.symbol, _ist(self._start), self._o, self._h, self._l, self._c, self._v, self.timeframe)

    def _close(self) -> Bar:
        bar = self._snapshot()
        self._open_bar = False
        self._horizon = max(self._horizon, self._end)
        return bar


# ---------------------------------------------------------------------- replay


class _Pacer:
    """Sleeps between events so that simulated time runs ``speed`` times faster than the wall clock."""

    def __init__(self, speed: float | None, sleep: SleepFn, max_sleep: float | None) -> None:
        if speed is not None and not (math.isfinite(speed) and speed > 0):
            raise ValueError(f"speed must be a positive multiplier (or None for full speed), got {speed!r}")
        self.speed, self.sleep, self.max_sleep = speed, sleep, max_sleep
        self._last: int | None = None

    def wait(self, ns: int) -> None:
        if self.speed is None:
            return
        if self._last is not None and ns > self._last:
            delay = (ns - self._last) / _NS / self.speed
            if self.max_sleep is not None:
                delay = min(delay, self.max_sleep)
            if delay > 0:
                self.sleep(delay)
        self._last = ns if self._last is None else max(self._last, ns)


def _infer_minutes(index: pd.DatetimeIndex) -> int:
    """Bar length: the smallest gap between consecutive bars of one IST day."""
    if len(index) < 2:
        raise ValueError("cannot infer the bar length from fewer than two bars: pass timeframe_minutes")
    ist = index.tz_convert(IST).as_unit("ns")
    ns = ist.asi8
    same_day = ist.normalize()[1:] == ist.normalize()[:-1]
    gaps = np.diff(ns)[np.asarray(same_day)]
    gaps = gaps[gaps > 0]
    if not len(gaps):
        raise ValueError("cannot infer the bar length (no two bars share a day): pass timeframe_minutes")
    return max(1, int(gaps.min() // _MIN_NS))


def _bar_spans(candles: pd.DataFrame, timeframe_minutes: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    """UTC ns starts and ends of each stored bar; the last bar of a session ends at 15:30."""
    if not isinstance(candles.index, pd.DatetimeIndex) or candles.index.tz is None:
        raise ValueError("candles need a tz-aware DatetimeIndex of bar starts (a frame from CandleStore.candles)")
    missing = [c for c in ("open", "high", "low", "close") if c not in candles.columns]
    if missing:
        raise ValueError(f"candles lack column(s) {', '.join(missing)}")
    if not candles.index.is_monotonic_increasing:
        raise ValueError("candles must be sorted by time to be replayed")
    minutes = _minutes(timeframe_minutes) if timeframe_minutes is not None else _infer_minutes(candles.index)
    starts = candles.index.tz_convert("UTC").as_unit("ns").asi8
    local = starts + _IST_NS
    session_end = local - local % _DAY_NS + _CLOSE_NS - _IST_NS
    natural = starts + minutes * _MIN_NS
    ends = np.where((natural > session_end) & (starts < session_end), session_end, natural)
    return starts, ends, minutes


def replay_ticks(
    candles: pd.DataFrame,
    *,
    symbol: str,
    timeframe_minutes: int | None = None,
    speed: float | None = None,
    sleep: SleepFn = time.sleep,
    max_sleep: float | None = None,
) -> Iterator[Tick]:
    """Synthetic ticks inside each stored bar: open, nearer extreme, other extreme, close.

    Why: paper trading on a past day needs ticks (stops and targets fire on ticks), and
    this order is the usual conservative guess of a bar's path. The nearer extreme is the
    high when ``|high - open| < |low - open|``, else the low. The four ticks sit evenly inside
    the bar (at 1/5 ... 4/5 of its span, so the close tick comes before the bar end), and the
    bar's volume rides on its close tick, so building bars from these ticks gives back the
    candles. ``speed=None`` replays at full speed; ``speed=60`` plays an hour in a minute,
    sleeping with ``sleep`` (each pause capped at ``max_sleep`` seconds when given, e.g. to
    skip nights).
    """
    starts, ends, _ = _bar_spans(candles, timeframe_minutes)
    o = candles["open"].to_numpy(dtype="float64")
    h = candles["high"].to_numpy(dtype="float64")
    lo = candles["low"].to_numpy(dtype="float64")
    c = candles["close"].to_numpy(dtype="float64")
    vol = candles["volume"].to_numpy(dtype="float64") if "volume" in candles else np.zeros(len(candles))
    vol = np.nan_to_num(vol, nan=0.0)
    high_first = np.abs(h - o) < np.abs(lo - o)
    first = np.where(high_first, h, lo)
    second = np.where(high_first, lo, h)
    span = ends - starts
    pacer = _Pacer(speed, sleep, max_sleep)
    for i in range(len(starts)):
        prices = (o[i], first[i], second[i], c[i])
        for k, price in enumerate(prices, start=1):
            ns = int(starts[i] + span[i] * k // 5)
            pacer.wait(ns)
            yield Tick(symbol, pd.Timestamp(ns, unit="ns", tz="UTC"), float(price), float(vol[i]) if k == 4 else 0.0)


def replay_bars(
    candles: pd.DataFrame,
    *,
    symbol: str | None = None,
    timeframe_minutes: int | None = None,
    speed: float | None = None,
    sleep: SleepFn = time.sleep,
    max_sleep: float | None = None,
) -> Iterator[Bar]:
    """Stored candles as ``Bar`` events, optionally paced by their end times.

    Why: the engine's bar path (strategy stepper) can be driven from the store without
    going through ticks. A bar is only known once it has ended, so pacing waits for the
    bar ends. ``symbol`` defaults to ``candles.attrs["symbol"]`` when present.
    """
    sym = symbol if symbol is not None else str(candles.attrs.get("symbol", ""))
    starts, ends, minutes = _bar_spans(candles, timeframe_minutes)
    cols = {c: candles[c].to_numpy(dtype="float64") for c in ("open", "high", "low", "close")}
    vol = candles["volume"].to_numpy(dtype="float64") if "volume" in candles else np.zeros(len(candles))
    vol = np.nan_to_num(vol, nan=0.0)
    pacer = _Pacer(speed, sleep, max_sleep)
    for i in range(len(starts)):
        pacer.wait(int(ends[i]))
        yield Bar(
            sym, _ist(int(starts[i])), float(cols["open"][i]), float(cols["high"][i]), float(cols["low"][i]),
            float(cols["close"][i]), float(vol[i]), minutes,
        )

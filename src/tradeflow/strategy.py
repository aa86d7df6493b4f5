"""The SuperTrend/MACD strategy: one parameter record, two faces over the same kernel.

* ``signals(candles, params)`` runs the whole history for backtests: the indicator kernels
  over the arrays, then a numba loop of the decision step ``_decide_step``.
* ``Stepper`` (``warm_up(candles)``, then ``on_bar(bar)``) feeds one bar at a time to the
  indicators' step functions and then to the *same* ``_decide_step``, for the paper/live
  engine. The indicator kernels give bit-identical results stepped or vectorized, so a
  replay through the stepper reproduces the vectorized decisions exactly (tested).

Timing contract (nothing uses a future bar):
* a decision is made at the close of its bar and fills at the next bar's open;
* stop-loss, target and trailing stop are judged on bar closes, measured from the entry
  reference price (the open of the bar the entry filled on, before slippage);
* the higher-timeframe filter uses only higher-timeframe bars that have closed: a 60m bar
  09:15-10:15 counts from the decision at the close of the signal bar ending 10:15;
* entries need the bar to end no later than ``entry_cutoff``; any position is closed by a
  decision at the close of the bar ending at or after ``square_off`` (so it fills then).

Rules and their parameters (every one can be switched or tuned):
direction (long/short/both), entry on a SuperTrend flip only or also while in trend, MACD
confirmation, higher-timeframe SuperTrend agreement, exit on SuperTrend reversal after
``min_hold_bars``, stop-loss/target/trailing in points or percent, forced square-off, entry
cutoff, ``max_trades_per_day``, ``max_daily_loss`` (points per unit, realised plus open),
and ``cooldown_bars`` (whole bars flat between an exit and the next entry; 0 allows a
reversal on the same bar).
"""

from __future__ import annotations

import datetime as dt
import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml
from numba import njit
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from . import indicators as _indicators
from ._numba_cache import guard_cache
from .calendar import IST
from .errors import ParameterError
from .indicators import macd, macd_state, macd_step, supertrend, supertrend_state, supertrend_step

__all__ = ["StrategyParams", "signals", "decide", "Bars", "Stepper", "Decision", "EXIT_REASONS", "load_params"]

EXIT_REASONS = {
    0: "",
    1: "supertrend_reversal",
    2: "stop_loss",
    3: "target",
    4: "trailing_stop",
    5: "square_off",
    6: "daily_loss",
}
_OPEN_MIN = 555  # 09:15
_EPOCH = dt.date(1970, 1, 1)
_MIN_US = 60_000_000
_DAY_US = 86_400_000_000
_IST_US = 19_800_000_000  # UTC+05:30, no daylight saving
_CLOSE_MIN = 930  # 15:30


class StrategyParams(BaseModel):
    """Every rule of the strategy, with the defaults of the index-options bot it comes from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timeframe: int = Field(5, ge=1, le=375, description="Minutes per signal candle.")
    st_period: int = Field(10, ge=1, description="SuperTrend ATR period.")
    st_multiplier: float = Field(3.0, gt=0, description="SuperTrend band multiplier.")
    direction: Literal["long", "short", "both"] = "both"
    flip_only: bool = Field(True, description="Enter only on the bar SuperTrend flips; else also while in trend.")
    macd_confirm: bool = Field(False, description="Longs need MACD above its signal, shorts below.")
    macd_fast: int = Field(12, ge=1)
    macd_slow: int = Field(26, ge=1)
    macd_signal: int = Field(9, ge=1)
    htf_minutes: int | None = Field(None, description="Higher-timeframe SuperTrend filter (e.g. 60); None = off.")
    htf_period: int = Field(10, ge=1)
    htf_multiplier: float = Field(3.0, gt=0)
    min_hold_bars: int = Field(0, ge=0, description="Bars to hold before a SuperTrend reversal may exit.")
    stop_loss: float | None = Field(None, gt=0)
    target: float | None = Field(None, gt=0)
    trailing_stop: float | None = Field(None, gt=0)
    stop_mode: Literal["points", "percent"] = "points"
    square_off: dt.time = dt.time(15, 15)
    entry_cutoff: dt.time = dt.time(14, 45)
    max_trades_per_day: int | None = Field(None, ge=1)
    max_daily_loss: float | None = Field(None, gt=0, description="Points per unit; the day stops after it.")
    cooldown_bars: int = Field(0, ge=0)

    @field_validator("square_off", "entry_cutoff", mode="before")
    @classmethod
    def _time(cls, value: Any) -> Any:
        if isinstance(value, str):
            return dt.time.fromisoformat(value)
        if isinstance(value, int):  # YAML reads 15:15 as sexagesimal 915
            return dt.time(value // 60, value % 60)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "StrategyParams":
        if self.macd_fast >= self.macd_slow:
            raise ValueError(f"macd_fast ({self.macd_fast}) must be shorter than macd_slow ({self.macd_slow})")
        if self.htf_minutes is not None and (self.htf_minutes <= self.timeframe or self.htf_minutes % self.timeframe):
            raise ValueError(
                f"htf_minutes ({self.htf_minutes}) must be a larger multiple of timeframe ({self.timeframe}), "
                "so higher-timeframe bars close on signal-bar boundaries"
            )
        if self.entry_cutoff > self.square_off:
            raise ValueError(f"entry_cutoff {self.entry_cutoff} is after square_off {self.square_off}")
        return self

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> "StrategyParams":
        """Build from a dict, refusing unknown names with a "did you mean"."""
        unknown = [k for k in data if k not in cls.model_fields]
        if unknown:
            name = unknown[0]
            close = difflib.get_close_matches(name, list(cls.model_fields), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ParameterError(f"unknown strategy parameter {name!r}{hint}")
        try:
            return cls(**data)
        except ValidationError as exc:
            raise ParameterError(f"invalid strategy parameters: {exc}") from exc

    def vector(self) -> np.ndarray:
        """The numeric parameters in the layout the kernel reads (see ``_P_*``)."""
        nan = np.nan
        return np.array(
            [
                self.timeframe,
                1.0 if self.direction in ("long", "both") else 0.0,
                1.0 if self.direction in ("short", "both") else 0.0,
                1.0 if self.flip_only else 0.0,
                1.0 if self.macd_confirm else 0.0,
                float(self.htf_minutes or 0),
                self.min_hold_bars,
                nan if self.stop_loss is None else self.stop_loss,
                nan if self.target is None else self.target,
                nan if self.trailing_stop is None else self.trailing_stop,
                1.0 if self.stop_mode == "percent" else 0.0,
                self.square_off.hour * 60 + self.square_off.minute,
                self.entry_cutoff.hour * 60 + self.entry_cutoff.minute,
                np.inf if self.max_trades_per_day is None else self.max_trades_per_day,
                np.inf if self.max_daily_loss is None else self.max_daily_loss,
                self.cooldown_bars,
            ],
            dtype=np.float64,
        )

    def vector_tuple(self) -> tuple[float, ...]:
        """``vector()`` as a tuple: kernels keep it in registers (an array would be reloaded
        after every int8 store, which may alias it: about 3x slower decision loops)."""
        return tuple(float(v) for v in self.vector())


def load_params(path: "str | Path", section: str | None = "strategy") -> StrategyParams:
    """Strategy parameters from a YAML file (its ``strategy:`` section, or the whole file)."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    if section and isinstance(data, dict) and section in data:
        data = data[section]
    return StrategyParams.from_mapping(data)


# ------------------------------------------------------------------ kernel state layouts
_P_TF, _P_LONG, _P_SHORT, _P_FLIP, _P_MACD, _P_HTF, _P_MIN_HOLD, _P_SL, _P_TP, _P_TRAIL = range(10)
_P_PCT, _P_SQ, _P_CUTOFF, _P_MAX_TRADES, _P_MAX_LOSS, _P_COOLDOWN = range(10, 16)

_S_POS, _S_ENTRY, _S_HELD, _S_BEST, _S_TRADES, _S_REALIZED, _S_DAY, _S_STOPPED = range(8)
_S_SINCE_EXIT, _S_PEND_ENTRY, _S_PEND_EXIT, _S_PREV_DIR = range(8, 12)
_S_SIZE = 12

_A_DAY, _A_BUCKET, _A_HIGH, _A_LOW, _A_CLOSE, _A_ACTIVE, _A_DIR = range(7)
_A_SIZE = 7


def _strategy_state() -> np.ndarray:
    s = np.zeros(_S_SIZE)
    s[_S_DAY] = np.nan
    s[_S_SINCE_EXIT] = 1e18
    s[_S_PREV_DIR] = np.nan
    return s


def _htf_state() -> np.ndarray:
    a = np.full(_A_SIZE, np.nan)
    a[_A_ACTIVE] = 0.0
    return a


@njit(cache=True, nogil=True)
def _htf_update(hst, a, htf, high, low, close, start_min, end_min, day):
    """Aggregate signal bars into higher-timeframe buckets from 09:15; step SuperTrend on close.

    Returns the direction of the last *closed* higher-timeframe bar (NaN before the first).
    """
    bucket = np.floor((start_min - _OPEN_MIN) / htf)
    same = a[_A_DAY] == day and a[_A_BUCKET] == bucket
    if a[_A_ACTIVE] == 1.0 and not same:  # a bar of a new bucket: the open one has closed
        _, d = supertrend_step(hst, a[_A_HIGH], a[_A_LOW], a[_A_CLOSE])
        a[_A_DIR] = d
        a[_A_ACTIVE] = 0.0
    if same and a[_A_ACTIVE] == 0.0:
        return a[_A_DIR]  # a late bar of a bucket already closed: ignore it
    if a[_A_ACTIVE] == 1.0:
        a[_A_HIGH] = max(a[_A_HIGH], high)
        a[_A_LOW] = min(a[_A_LOW], low)
        a[_A_CLOSE] = close
    else:
        a[_A_DAY] = day
        a[_A_BUCKET] = bucket
        a[_A_HIGH] = high
        a[_A_LOW] = low
        a[_A_CLOSE] = close
        a[_A_ACTIVE] = 1.0
    nominal_end = _OPEN_MIN + (bucket + 1.0) * htf
    if start_min < _CLOSE_MIN and nominal_end > _CLOSE_MIN:
        nominal_end = _CLOSE_MIN  # the session's last bucket is short
    if end_min >= nominal_end:
        _, d = supertrend_step(hst, a[_A_HIGH], a[_A_LOW], a[_A_CLOSE])
        a[_A_DIR] = d
        a[_A_ACTIVE] = 0.0
    return a[_A_DIR]


@njit(cache=True, nogil=True, inline="always")
def _decide_step(state, p, o, c, start_min, day, d, m, sig, htf_d, allow):
    """The rules for one signal bar, given the indicator values known at its close.

    ``state`` is the tuple laid out as ``_S_*``; the new one is returned (a tuple, so the
    backtest loop keeps it in registers). First the previous bar's decisions fill at this
    bar's open, then exits, then entries. Returns (entry +1/-1/0, exit_reason 0..6, state).
    Both faces call this same function.
    """
    pos, entry_ref, held, best, trades, realized, sday, stopped, since, pend_e, pend_x, prev_dir = state
    if sday != day:  # a new session
        sday = day
        trades = 0.0
        realized = 0.0
        stopped = 0.0
    if pend_x == 1.0:  # fills of the previous bar's decisions, at this open
        realized += pos * (o - entry_ref)
        pos = 0.0
        pend_x = 0.0
    if pend_e != 0.0:
        pos = pend_e
        entry_ref = o
        held = 0.0
        best = o
        pend_e = 0.0
    since += 1.0
    end_min = start_min + p[_P_TF]

    reason = 0
    if pos != 0.0:
        held += 1.0
        best = max(best, c) if pos > 0 else min(best, c)
        scale = entry_ref / 100.0 if p[_P_PCT] == 1.0 else 1.0
        move = pos * (c - entry_ref)
        if end_min >= p[_P_SQ]:
            reason = 5
        elif realized + move <= -p[_P_MAX_LOSS]:
            reason = 6
            stopped = 1.0
        elif move <= -p[_P_SL] * scale:
            reason = 2
        elif move >= p[_P_TP] * scale:
            reason = 3
        elif pos * (best - c) >= p[_P_TRAIL] * scale:
            reason = 4
        elif d == -pos and held >= p[_P_MIN_HOLD]:
            reason = 1
        if reason != 0:
            pend_x = 1.0
            since = 0.0
    elif realized <= -p[_P_MAX_LOSS]:
        stopped = 1.0

    entry = 0
    if (
        (pos == 0.0 or reason != 0)
        and allow
        and stopped == 0.0
        and end_min <= p[_P_CUTOFF]
        and end_min < p[_P_SQ]
        and trades < p[_P_MAX_TRADES]
        and since >= p[_P_COOLDOWN]
    ):
        for k in range(2):
            cand = 1.0 if k == 0 else -1.0
            if (cand > 0 and p[_P_LONG] == 0.0) or (cand < 0 and p[_P_SHORT] == 0.0):
                continue
            if d != cand:
                continue
            if p[_P_FLIP] == 1.0 and not prev_dir == -cand:
                continue
            if p[_P_MACD] == 1.0 and not cand * (m - sig) > 0:
                continue
            if p[_P_HTF] > 0 and not htf_d == cand:
                continue
            if reason != 0 and cand == pos:
                continue  # never exit and re-enter the same side on one bar
            entry = int(cand)
            break
    if entry != 0:
        pend_e = float(entry)
        trades += 1.0
    prev_dir = d
    return entry, reason, (pos, entry_ref, held, best, trades, realized, sday, stopped, since, pend_e, pend_x, prev_dir)


@njit(cache=True, nogil=True)
def _load_state(s):
    return (s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8], s[9], s[10], s[11])


@njit(cache=True, nogil=True)
def _store_state(s, state):
    for k in range(_S_SIZE):
        s[k] = state[k]


@njit(cache=True, nogil=True)
def _bar_step(st, mc, hst, agg, s, p, o, h, low, c, start_min, day, allow):
    """The engine's face: step every indicator on one bar, then decide.

    Returns (entry, exit_reason, st_line, st_dir, macd, macd_signal, htf_dir).
    """
    line, d = supertrend_step(st, h, low, c)
    m, sig, _ = macd_step(mc, h, low, c)
    htf_d = np.nan
    if p[_P_HTF] > 0:
        htf_d = _htf_update(hst, agg, p[_P_HTF], h, low, c, start_min, start_min + p[_P_TF], day)
    entry, reason, state = _decide_step(_load_state(s), p, o, c, start_min, day, d, m, sig, htf_d, allow)
    _store_state(s, state)
    return entry, reason, line, d, m, sig, htf_d


@njit(cache=True, nogil=True)
def _htf_dir_nb(h, low, c, start_min, day, tf, htf, hst, agg):
    """The higher-timeframe direction known at each signal bar's close (same update as the stepper)."""
    n = h.shape[0]
    out = np.empty(n)
    for i in range(n):
        out[i] = _htf_update(hst, agg, htf, h[i], low[i], c[i], start_min[i], start_min[i] + tf, day[i])
    return out


@njit(cache=True, nogil=True)
def _decide_nb(o, c, start_min, day, allow, p, st_dir, macd_line, macd_sig, htf_dir, s):
    """The backtest's face: the same decision step over precomputed indicator arrays."""
    n = o.shape[0]
    entry = np.zeros(n, dtype=np.int8)
    reason = np.zeros(n, dtype=np.int8)
    position = np.zeros(n, dtype=np.int8)
    state = _load_state(s)
    for i in range(n):
        e, r, state = _decide_step(state, p, o[i], c[i], start_min[i], day[i], st_dir[i], macd_line[i], macd_sig[i], htf_dir[i], allow[i])
        entry[i] = e
        reason[i] = r
        position[i] = state[0]
    _store_state(s, state)
    return entry, reason, position


# These kernels inline the indicator steps: drop their cached code when indicators.py changes.
guard_cache([_htf_update, _bar_step, _htf_dir_nb], depends_on=[_indicators])


def _states(params: StrategyParams) -> tuple[np.ndarray, ...]:
    return (
        supertrend_state(params.st_period, params.st_multiplier),
        macd_state(params.macd_fast, params.macd_slow, params.macd_signal),
        supertrend_state(params.htf_period, params.htf_multiplier),
        _htf_state(),
        _strategy_state(),
    )


def _clock(index: pd.DatetimeIndex, timeframe: int) -> tuple[np.ndarray, np.ndarray]:
    """IST minute-of-day of each bar start and its IST day number; checks the 09:15 grid."""
    if not isinstance(index, pd.DatetimeIndex) or index.tz is None:
        raise ParameterError("candles need a tz-aware DatetimeIndex (use CandleStore.candles)")
    local_us = index.as_unit("us").asi8 + _IST_US
    day = local_us // _DAY_US
    minute_us = local_us - day * _DAY_US
    minutes = minute_us // _MIN_US
    off = (minute_us % _MIN_US != 0) | ((minutes - _OPEN_MIN) % timeframe != 0)
    if off.any():
        bad = index[np.flatnonzero(off)[0]].tz_convert(IST)
        raise ParameterError(
            f"candles are not {timeframe}-minute bars aligned to 09:15 (first off-grid bar {bad}); "
            f"load them with store.candles(symbol, '{timeframe}m', ...)"
        )
    return minutes.astype(np.float64), day.astype(np.float64)


def _ohlc(candles: pd.DataFrame) -> tuple[np.ndarray, ...]:
    missing = [c for c in ("open", "high", "low", "close") if c not in candles]
    if missing:
        raise ParameterError(f"candles lack column(s) {', '.join(missing)}")
    arrays = tuple(np.ascontiguousarray(candles[c].to_numpy(dtype=np.float64)) for c in ("open", "high", "low", "close"))
    if any(np.isnan(a).any() for a in arrays):
        raise ParameterError("candles contain NaN prices: drop those rows (candles.dropna()) first")
    return arrays


class Bars:
    """Candles prepared once for many strategy runs (a sweep): arrays, clock, indicator memo.

    Indicators depend only on their own parameters, so combinations that share them share
    one computation.
    """

    def __init__(self, candles: pd.DataFrame, timeframe: int) -> None:
        self.index = candles.index
        self.timeframe = timeframe
        self.open, self.high, self.low, self.close = _ohlc(candles)
        self.start_min, self.day = _clock(candles.index, timeframe)
        self._memo: dict[tuple, Any] = {}

    def __len__(self) -> int:
        return len(self.open)

    _MEMO_LIMIT = 8

    def _cached(self, key: tuple, make):
        """Remember the last few indicator results (a sweep walks a grid, so old ones go)."""
        if key in self._memo:
            self._memo[key] = self._memo.pop(key)  # most recently used last
        else:
            self._memo[key] = make()
            while len(self._memo) > self._MEMO_LIMIT:
                self._memo.pop(next(iter(self._memo)))
        return self._memo[key]

    def supertrend(self, period: int, multiplier: float) -> tuple[np.ndarray, np.ndarray]:
        return self._cached(("st", period, multiplier), lambda: supertrend(self.high, self.low, self.close, period, multiplier))

    def macd(self, fast: int, slow: int, signal: int) -> tuple[np.ndarray, np.ndarray]:
        return self._cached(("macd", fast, slow, signal), lambda: macd(self.close, fast, slow, signal)[:2])

    def htf_dir(self, minutes: int | None, period: int, multiplier: float) -> np.ndarray:
        if not minutes:
            return self._cached(("htf-off",), lambda: np.full(len(self), np.nan))
        return self._cached(
            ("htf", minutes, period, multiplier),
            lambda: _htf_dir_nb(
                self.high, self.low, self.close, self.start_min, self.day, float(self.timeframe), float(minutes),
                supertrend_state(period, multiplier), _htf_state(),
            ),
        )

    def allow(self, trade_from: "pd.Timestamp | str | None") -> np.ndarray:
        if trade_from is None:
            return self._cached(("allow-all",), lambda: np.ones(len(self), dtype=np.bool_))
        ts = pd.Timestamp(trade_from)
        ts = ts.tz_localize(IST) if ts.tzinfo is None else ts
        return np.asarray(self.index >= ts)


def decide(bars: Bars, params: StrategyParams, *, trade_from=None) -> tuple[np.ndarray, ...]:
    """Raw decision arrays for ``bars``: (entry +1/-1/0, exit reason code, position held).

    The sweep path: no DataFrame is built. ``signals`` is the readable face of the same call.
    """
    if params.timeframe != bars.timeframe:
        raise ParameterError(f"bars are {bars.timeframe}m but the parameters want {params.timeframe}m candles")
    _, d = bars.supertrend(params.st_period, params.st_multiplier)
    m, sig = bars.macd(params.macd_fast, params.macd_slow, params.macd_signal)
    htf = bars.htf_dir(params.htf_minutes, params.htf_period, params.htf_multiplier)
    return _decide_nb(
        bars.open, bars.close, bars.start_min, bars.day, bars.allow(trade_from), params.vector_tuple(), d, m, sig, htf, _strategy_state()
    )


def signals(candles: pd.DataFrame, params: StrategyParams, *, trade_from: "pd.Timestamp | str | None" = None) -> pd.DataFrame:
    """Decisions for every bar of ``candles`` (bars of ``params.timeframe`` minutes).

    Returns a frame on the same index with ``long_entry``, ``short_entry``, ``exit`` (bool,
    at the decision bar; fills are at the next bar's open), ``exit_reason``, ``position``
    (held during the bar, after the fills at its open: +1, -1, 0), and the
    indicator values the rules saw (``st_line``, ``st_dir``, ``macd``, ``macd_signal``,
    ``htf_dir``). Entries before ``trade_from`` are suppressed (the bars still warm up the
    indicators), which is what the engine's warm-up and walk-forward windows need.
    """
    bars = candles if isinstance(candles, Bars) else Bars(candles, params.timeframe)
    entry, reason, position = decide(bars, params, trade_from=trade_from)
    line, d = bars.supertrend(params.st_period, params.st_multiplier)
    m, sig = bars.macd(params.macd_fast, params.macd_slow, params.macd_signal)
    htf = bars.htf_dir(params.htf_minutes, params.htf_period, params.htf_multiplier)
    names = np.array([EXIT_REASONS[k] for k in range(len(EXIT_REASONS))], dtype=object)
    return pd.DataFrame(
        {
            "long_entry": entry > 0,
            "short_entry": entry < 0,
            "exit": reason > 0,
            "exit_reason": names[reason],
            "st_line": line,
            "st_dir": d,
            "macd": m,
            "macd_signal": sig,
            "htf_dir": htf,
            "position": position,
        },
        index=bars.index,
    )


@dataclass(frozen=True)
class Decision:
    """What the strategy decided at the close of one bar (to be filled at the next open)."""

    ts: pd.Timestamp
    entry: int  # +1 long, -1 short, 0 none
    exit_reason: str  # "" when no exit
    st_line: float
    st_dir: float
    macd: float
    macd_signal: float
    htf_dir: float

    @property
    def exit(self) -> bool:
        return self.exit_reason != ""


class Stepper:
    """The strategy bar by bar, for the engine: ``warm_up(history)``, then ``on_bar(bar)``.

    Bars must be the signal timeframe's closed bars in time order. Warm-up bars update the
    indicators but never enter, so the stepper starts flat.
    """

    def __init__(self, params: StrategyParams) -> None:
        self.params = params
        self._p = params.vector_tuple()
        self._st, self._mc, self._hst, self._agg, self._s = _states(params)
        self.last_ts: pd.Timestamp | None = None
        self._last_ns: int | None = None

    @property
    def position(self) -> int:
        """The strategy's own view: +1, -1 or 0 after the fills of the last bar seen."""
        return int(self._s[_S_POS])

    @property
    def realized_points(self) -> float:
        """Points per unit realised today by the strategy's own account (for ``max_daily_loss``)."""
        return float(self._s[_S_REALIZED])

    def sync_exit(self, price: float | None, entry_ref: float | None = None) -> None:
        """The engine left (or never got) the position outside the bar-close rules: follow it.

        A tick-time stop, a kill or a failed exit retry closes at ``price`` (the move from the
        entry reference is booked against ``max_daily_loss`` and the cooldown starts as if the
        exit had been decided at the close of the bar in progress). ``price=None`` means the
        entry never filled (rejected or cancelled): the stepper just goes flat. ``entry_ref``
        is the engine's entry reference, used when the stepper has not applied the fill yet
        (it does that at the next bar).
        """
        s = self._s
        pos = s[_S_POS] if s[_S_POS] != 0.0 else s[_S_PEND_ENTRY]
        ref = s[_S_ENTRY] if s[_S_POS] != 0.0 else entry_ref
        if price is not None and pos != 0.0 and ref is not None:
            s[_S_REALIZED] += pos * (price - ref)
            s[_S_SINCE_EXIT] = -1.0  # the next bar's step makes it 0, as for an exit decided at this bar
            if s[_S_REALIZED] <= -self._p[_P_MAX_LOSS]:
                s[_S_STOPPED] = 1.0
        s[_S_POS] = 0.0
        s[_S_PEND_ENTRY] = 0.0
        s[_S_PEND_EXIT] = 0.0

    def adopt(self, direction: int, entry_ref: float) -> None:
        """After a restart the broker still holds a position: the strategy holds it too, from
        ``entry_ref`` (its stops, targets and reversal exits then apply; the trailing stop's
        best price restarts at ``entry_ref``)."""
        s = self._s
        s[_S_POS] = float(direction)
        s[_S_ENTRY] = float(entry_ref)
        s[_S_BEST] = float(entry_ref)
        s[_S_HELD] = 0.0
        s[_S_PEND_ENTRY] = 0.0
        s[_S_PEND_EXIT] = 0.0

    def warm_up(self, candles: pd.DataFrame) -> "Stepper":
        for ts, row in zip(candles.index, candles[["open", "high", "low", "close"]].to_numpy(dtype=np.float64)):
            self._step(ts, *row, allow=False)
        return self

    def on_bar(self, bar: "pd.Series | dict[str, Any]", ts: "pd.Timestamp | None" = None) -> Decision:
        """Feed one closed bar (a Series named by its start time, or a dict with ``ts``)."""
        stamp = ts if ts is not None else (bar.name if isinstance(bar, pd.Series) else bar["ts"])
        values = [float(bar[k]) for k in ("open", "high", "low", "close")]
        if any(v != v for v in values):
            raise ParameterError(f"bar {stamp} has a NaN price")
        return self._step(pd.Timestamp(stamp), *values, allow=True)

    def on_bar_ns(self, ts: pd.Timestamp, start_ns: int, o: float, h: float, low: float, c: float) -> Decision:
        """The engine's fast path: ``start_ns`` is the bar start as UTC nanoseconds (``ts`` the same
        instant, only carried into the Decision); checks and clock arithmetic stay in integers."""
        if self._last_ns is not None and start_ns <= self._last_ns:
            raise ParameterError(f"bar {ts} is not after the previous bar {self.last_ts}: feed bars in time order")
        local = start_ns + _IST_US * 1000
        day, in_day = divmod(local, _DAY_US * 1000)
        minute, rest = divmod(in_day, _MIN_US * 1000)
        if (minute - _OPEN_MIN) % self.params.timeframe or rest:
            raise ParameterError(f"bar {ts} is not on the {self.params.timeframe}-minute grid from 09:15")
        if not (o == o and h == h and low == low and c == c):
            raise ParameterError(f"bar {ts} has a NaN price")
        e, r, line, d, m, sig, hd = _bar_step(
            self._st, self._mc, self._hst, self._agg, self._s, self._p, o, h, low, c, float(minute), float(day), True
        )
        self.last_ts, self._last_ns = ts, start_ns
        return Decision(ts, int(e), EXIT_REASONS[int(r)], line, d, m, sig, hd)

    def _step(self, ts: pd.Timestamp, o: float, h: float, low: float, c: float, *, allow: bool) -> Decision:
        if self.last_ts is not None and ts <= self.last_ts:
            raise ParameterError(f"bar {ts} is not after the previous bar {self.last_ts}: feed bars in time order")
        if ts.tzinfo is None:
            raise ParameterError(f"bar time {ts} has no time zone: use IST- or UTC-aware timestamps")
        local = ts.tz_convert(IST)
        minute = local.hour * 60 + local.minute
        if (minute - _OPEN_MIN) % self.params.timeframe or local.second or local.microsecond:
            raise ParameterError(f"bar {local} is not on the {self.params.timeframe}-minute grid from 09:15")
        day = float((local.date() - _EPOCH).days)
        e, r, line, d, m, sig, hd = _bar_step(
            self._st, self._mc, self._hst, self._agg, self._s, self._p, o, h, low, c, float(minute), day, allow
        )
        self.last_ts, self._last_ns = ts, int(ts.value)
        return Decision(ts, int(e), EXIT_REASONS[int(r)], line, d, m, sig, hd)

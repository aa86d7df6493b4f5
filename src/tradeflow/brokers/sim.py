"""The embedded simulated market: seeded, deterministic, clearly synthetic 1-minute candles.

Every regular NSE session (09:15-15:29 bar starts, trading days from the calendar) gets 375
bars. A day's open and close come from a daily random walk that starts at a fixed anchor
date, so any range is generated the same way whatever was asked before; inside the day a
Brownian bridge joins open to close with the U-shaped volatility and volume of a real NSE
session (busy open, quiet lunch, busy close). Prices sit on the 0.05 tick grid.

Nothing here pretends to be real data: the source is named ``sim``, is ``synthetic``, and
frames it returns carry ``attrs["source"] = "sim (synthetic)"``.
"""

from __future__ import annotations

import datetime as dt
import zlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

from ..calendar import IST, calendar_bounds, sessions
from ..errors import SourceError
from ..timeframes import ONE_MINUTE, SESSION_MINUTES, Timeframe

__all__ = ["SimMarket", "SimInstrument", "SIM_INSTRUMENTS", "SIM_START", "sim_instruments"]

SIM_START = dt.date(2015, 1, 1)
"""The simulated market's first day; its random walks start here."""

_TICK = 0.05
_TRADING_DAYS = 252


@dataclass(frozen=True)
class SimInstrument:
    """One simulated symbol: index-like or stock-like, with its starting level and volatility."""

    symbol: str
    kind: str  # "index" or "stock"
    start_price: float
    annual_vol: float
    daily_volume: float
    drift: float = 0.10


SIM_INSTRUMENTS: dict[str, SimInstrument] = {
    i.symbol: i
    for i in (
        SimInstrument("NIFTY", "index", 8300.0, 0.15, 2.5e8),
        SimInstrument("BANKNIFTY", "index", 18700.0, 0.20, 1.8e8),
        SimInstrument("FINNIFTY", "index", 5800.0, 0.18, 6.0e7),
        SimInstrument("RELIANCE", "stock", 440.0, 0.26, 8.0e6),
        SimInstrument("INFY", "stock", 490.0, 0.25, 6.0e6),
        SimInstrument("HDFCBANK", "stock", 480.0, 0.22, 1.2e7),
        SimInstrument("SBIN", "stock", 310.0, 0.30, 1.5e7),
        SimInstrument("TCS", "stock", 1300.0, 0.22, 3.0e6),
    )
}


def _profile() -> np.ndarray:
    """Relative minute variance across a session: high at the open, low at lunch, up at the close."""
    t = np.arange(SESSION_MINUTES, dtype=float)
    w = 1.0 + 2.0 * np.exp(-t / 15.0) + 0.9 * np.exp(-(SESSION_MINUTES - 1 - t) / 25.0)
    return w / w.sum()


_PROFILE = _profile()


class SimMarket:
    """The default source: deterministic synthetic 1-minute candles for a few symbols.

    The same ``seed`` always gives the same candles. Only bars that have closed by
    ``now`` (default: the wall clock) are returned, as a real source would.
    """

    name = "sim"
    synthetic = True
    window = pd.Timedelta(days=30)

    def __init__(self, seed: int = 42, *, now: "pd.Timestamp | None" = None) -> None:
        self.seed = int(seed)
        self._now = now

    def timeframes(self) -> tuple[Timeframe, ...]:
        return (ONE_MINUTE,)

    def symbols(self) -> list[str]:
        return sorted(SIM_INSTRUMENTS)

    def instrument(self, symbol: str) -> SimInstrument:
        try:
            return SIM_INSTRUMENTS[symbol.upper()]
        except KeyError:
            raise SourceError(
                f"the simulated market has no symbol {symbol!r}: choose one of {', '.join(self.symbols())}"
            ) from None

    def fetch(self, symbol: str, timeframe: Timeframe, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        """Synthetic 1-minute bars starting in ``[start, end)`` that have closed by now."""
        if Timeframe.parse(timeframe) != ONE_MINUTE:
            raise SourceError(
                f"the simulated market gives 1m bars only, not {timeframe}: fetch 1m and let the "
                "store build longer bars from them"
            )
        inst = self.instrument(symbol)
        start, end = pd.Timestamp(start).tz_convert("UTC"), pd.Timestamp(end).tz_convert("UTC")
        now = pd.Timestamp.now(tz="UTC") if self._now is None else pd.Timestamp(self._now).tz_convert("UTC")
        end = min(end, now.floor("min") - pd.Timedelta(minutes=1) + pd.Timedelta(microseconds=1))
        lo = max(start.tz_convert(IST).date(), SIM_START)
        hi = (end - pd.Timedelta(microseconds=1)).tz_convert(IST).date()
        days = sessions(lo, hi) if lo <= hi else []
        if not days:
            return _empty(symbol)
        path = _daily_path(self.seed, inst)
        frames = [_session_bars(self.seed, inst, d, *path[d]) for d in days]
        out = pd.concat(frames)
        out = out[(out.index >= start) & (out.index < end)]
        out.attrs["source"] = "sim (synthetic)"
        return out


def _empty(symbol: str) -> pd.DataFrame:
    idx = pd.DatetimeIndex([], tz=IST, name="ts")
    out = pd.DataFrame({c: pd.Series(dtype="float64") for c in ("open", "high", "low", "close", "volume")}, index=idx)
    out.attrs["source"] = "sim (synthetic)"
    return out


def _rng(seed: int, symbol: str, key: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(symbol.encode()), key])


@lru_cache(maxsize=64)
def _daily_path(seed: int, inst: SimInstrument) -> dict[dt.date, tuple[float, float]]:
    """(open, close) of every session from ``SIM_START`` to the calendar's end."""
    days = sessions(SIM_START, calendar_bounds()[1])
    rng = _rng(seed, inst.symbol, 0)
    sd = inst.annual_vol / np.sqrt(_TRADING_DAYS)
    mu = inst.drift / _TRADING_DAYS
    gaps = rng.normal(0.0, 0.3 * sd, len(days))
    moves = rng.normal(mu - 0.5 * sd * sd, 0.95 * sd, len(days))
    log_open = np.empty(len(days))
    log_close = np.empty(len(days))
    level = np.log(inst.start_price)
    for i in range(len(days)):
        log_open[i] = level + gaps[i]
        log_close[i] = log_open[i] + moves[i]
        level = log_close[i]
    return {d: (float(np.exp(o)), float(np.exp(c))) for d, o, c in zip(days, log_open, log_close)}


def _session_bars(seed: int, inst: SimInstrument, day: dt.date, day_open: float, day_close: float) -> pd.DataFrame:
    rng = _rng(seed, inst.symbol, day.toordinal())
    n = SESSION_MINUTES
    sd_day = 0.95 * inst.annual_vol / np.sqrt(_TRADING_DAYS)
    var = _PROFILE * sd_day**2
    steps = rng.normal(0.0, np.sqrt(var))
    walk = np.cumsum(steps)
    cum_var = np.cumsum(var)
    target = np.log(day_close / day_open)
    bridge = walk - cum_var / cum_var[-1] * (walk[-1] - target)
    close = day_open * np.exp(bridge)
    open_ = np.concatenate(([day_open], close[:-1]))
    wick = np.abs(rng.normal(0.0, 0.6 * np.sqrt(var), (2, n)))
    high = np.maximum(open_, close) * np.exp(wick[0])
    low = np.minimum(open_, close) * np.exp(-wick[1])
    open_, close = _tick(open_), _tick(close)
    high = np.maximum(np.ceil(high / _TICK - 1e-9) * _TICK, np.maximum(open_, close))
    low = np.minimum(np.floor(low / _TICK + 1e-9) * _TICK, np.minimum(open_, close))
    volume = np.round(inst.daily_volume * (_PROFILE * 0.7 + 0.3 / n) * rng.lognormal(0.0, 0.35, n))
    index = pd.Timestamp(day).tz_localize(IST) + pd.to_timedelta(np.arange(555, 555 + n), unit="min")
    return pd.DataFrame(
        {"open": open_, "high": np.round(high, 2), "low": np.round(low, 2), "close": close, "volume": volume},
        index=pd.DatetimeIndex(index, name="ts"),
    )


def _tick(x: np.ndarray) -> np.ndarray:
    return np.round(np.round(x / _TICK) * _TICK, 2)


def sim_instruments() -> list:
    """The simulated symbols as broker instruments: stock-like ones as NSE equities (lot 1,
    tick 0.05), index-like ones as indices (quotes only; trade their derivatives)."""
    from .base import Instrument, InstrumentKind, Segment

    out = []
    for inst in SIM_INSTRUMENTS.values():
        if inst.kind == "index":
            out.append(Instrument(inst.symbol, Segment.NSE_IDX, InstrumentKind.INDEX, name=f"{inst.symbol} (synthetic)",
                                  broker_ids={"sim": inst.symbol}))
        else:
            out.append(Instrument(inst.symbol, Segment.NSE_EQ, InstrumentKind.EQUITY, lot_size=1, tick_size=_TICK,
                                  name=f"{inst.symbol} (synthetic)", broker_ids={"sim": inst.symbol}))
    return out

"""SuperTrend and MACD as numba step kernels: one bar in, one bar out, same numbers everywhere.

Each indicator is a *step* function over a small float64 state array. The vectorized
functions are a numba loop over that same step, so a live engine that feeds bars one at a
time through ``*_step`` gets results bit-identical to a backtest run on the whole array::

    line, direction = supertrend(high, low, close, period=10, multiplier=3.0)

    state = supertrend_state(10, 3.0)           # live: one fresh state per instrument
    for h, l, c in bars:
        line_i, dir_i = supertrend_step(state, h, l, c)

* ``supertrend`` follows TradingView's ``ta.supertrend`` (Pine v5 ``pine_supertrend``) with
  the sign flipped so that +1 means up.
* ``macd`` follows vectorbt 1.2's ``vbt.MACD.run(..., macd_ewm=True, signal_ewm=True)``
  exactly, warm-up NaNs included.
* ``supertrend_2d`` / ``macd_2d`` run one parameter set per column, for grids.
* ``SuperTrend`` and ``MACDX`` are vectorbt ``IndicatorFactory`` classes built on first
  attribute access: ``import vectorbt`` takes about 3.5 s here, and importing this module
  should not. They are left out of ``__all__`` so that a star import stays fast.

Kernels use numba's on-disk cache (``cache=True``): a second process loads machine code
instead of compiling (see ``bench/indicators.py``).
"""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING, Any

import numpy as np
from numba import njit

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

__all__ = [
    "supertrend",
    "supertrend_2d",
    "supertrend_state",
    "supertrend_step",
    "macd",
    "macd_2d",
    "macd_state",
    "macd_step",
]

_LAZY = ("SuperTrend", "MACDX")

# ------------------------------------------------------------------ SuperTrend state
# One float64 array per instrument and parameter set. Slots:
_ST_PERIOD = 0  # ATR period (integral value)
_ST_MULT = 1  # band multiplier
_ST_ALPHA = 2  # 1 / period, Wilder's RMA weight
_ST_N = 3  # bars seen so far
_ST_PREV_CLOSE = 4  # previous close (NaN before the first bar: Pine's close[1] is na)
_ST_TR_SUM = 5  # running sum of true ranges, for the SMA seed of the ATR
_ST_ATR = 6  # current ATR (NaN during warm-up)
_ST_LOWER = 7  # final lower band of the previous bar
_ST_UPPER = 8  # final upper band of the previous bar
_ST_DIR = 9  # direction of the previous bar: +1 up, -1 down, NaN in warm-up
_ST_PREV_UPPER = 10  # 1.0 when the previous bar's line was its upper band (Pine: superTrend[1] == upperBand[1])
_ST_SIZE = 11

# ------------------------------------------------------------------ MACD state
# Three EMA slots (fast, slow, signal) of _EMA_SIZE floats each, laid out as:
_E_MINP = 0  # span: outputs are NaN until this many observations (vectorbt's minp=window)
_E_ALPHA = 1  # 1 / (1 + (span - 1) / 2), computed exactly like vectorbt/pandas
_E_BETA = 2  # 1 - alpha (pandas' old_wt_factor)
_E_DENOM = 3  # beta + alpha: if it is exactly 1.0 the division can be skipped bit-exactly
_E_OLD_WT = 4  # pandas' old_wt: only differs from 1 after a NaN gap (ignore_na=False)
_E_NOBS = 5  # non-NaN observations so far
_E_VALUE = 6  # running average (NaN until the first observation)
_EMA_SIZE = 7
_M_FAST = 0
_M_SLOW = _EMA_SIZE
_M_SIGNAL = 2 * _EMA_SIZE
_M_SIZE = 3 * _EMA_SIZE


# ============================================================================ kernels


@njit(cache=True)
def _supertrend_init_nb(period: int, multiplier: float) -> np.ndarray:
    state = np.full(_ST_SIZE, np.nan)
    state[_ST_PERIOD] = period
    state[_ST_MULT] = multiplier
    state[_ST_ALPHA] = 1.0 / period
    state[_ST_N] = 0.0
    state[_ST_TR_SUM] = 0.0
    state[_ST_PREV_UPPER] = 0.0
    return state


@njit(cache=True)
def supertrend_step(state: np.ndarray, high: float, low: float, close: float) -> tuple[float, float]:
    """Advance SuperTrend by one bar; return ``(line, direction)`` and update ``state`` in place.

    ``state`` comes from :func:`supertrend_state`. Direction is +1 (up) or -1 (down), both
    outputs NaN while the ATR warms up. NaN prices are not checked here (the vectorized
    wrapper rejects them): one NaN bar would poison the ATR for good.
    """
    period = state[_ST_PERIOD]
    n = state[_ST_N] + 1.0
    prev_close = state[_ST_PREV_CLOSE]
    state[_ST_N] = n
    state[_ST_PREV_CLOSE] = close

    # Pine ta.tr(true): the first bar has no previous close, so its TR is high - low.
    hl = high - low
    if n == 1.0:
        tr = hl
    else:
        tr = max(hl, abs(high - prev_close), abs(low - prev_close))

    if n < period:  # warm-up: collect TRs for the SMA seed
        state[_ST_TR_SUM] += tr
        return np.nan, np.nan

    first = n == period
    if first:  # Pine ta.rma: seeded with ta.sma of the first `period` TRs
        atr = (state[_ST_TR_SUM] + tr) / period
        prev_lower = 0.0  # Pine nz(lowerBand[1]) / nz(upperBand[1])
        prev_upper = 0.0
    else:
        alpha = state[_ST_ALPHA]
        atr = alpha * tr + (1.0 - alpha) * state[_ST_ATR]
        prev_lower = state[_ST_LOWER]
        prev_upper = state[_ST_UPPER]
    state[_ST_ATR] = atr

    hl2 = (high + low) / 2.0
    mult = state[_ST_MULT]
    upper = hl2 + mult * atr
    lower = hl2 - mult * atr
    # A comparison with a NaN prev_close is False, as Pine's na comparisons are.
    if not (lower > prev_lower or prev_close < prev_lower):
        lower = prev_lower
    if not (upper < prev_upper or prev_close > prev_upper):
        upper = prev_upper

    if first:
        direction = -1.0  # Pine: na(atr[1]) -> _direction := 1 (down in Pine's sign)
    elif state[_ST_PREV_UPPER] == 1.0:
        direction = 1.0 if close > upper else -1.0
    else:
        direction = -1.0 if close < lower else 1.0
    line = lower if direction == 1.0 else upper

    state[_ST_LOWER] = lower
    state[_ST_UPPER] = upper
    state[_ST_DIR] = direction
    state[_ST_PREV_UPPER] = 1.0 if line == upper else 0.0
    return line, direction


@njit(cache=True)
def _supertrend_1d_nb(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int, multiplier: float
) -> tuple[np.ndarray, np.ndarray]:
    n = close.shape[0]
    line = np.empty(n)
    direction = np.empty(n)
    state = _supertrend_init_nb(period, multiplier)
    for i in range(n):
        line[i], direction[i] = supertrend_step(state, high[i], low[i], close[i])
    return line, direction


@njit(cache=True)
def _supertrend_2d_nb(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, periods: np.ndarray, multipliers: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    n, k = close.shape
    line = np.empty((n, k))
    direction = np.empty((n, k))
    for col in range(k):
        state = _supertrend_init_nb(periods[col], multipliers[col])
        for i in range(n):
            line[i, col], direction[i, col] = supertrend_step(state, high[i, col], low[i, col], close[i, col])
    return line, direction


@njit(cache=True)
def _ema_slot_init_nb(state: np.ndarray, base: int, span: int) -> None:
    # vectorbt.generic.nb.ewm_mean_1d_nb / pandas ewma: com = (span-1)/2, alpha = 1/(1+com).
    alpha = 1.0 / (1.0 + (span - 1) / 2.0)
    beta = 1.0 - alpha
    state[base + _E_MINP] = span
    state[base + _E_ALPHA] = alpha
    state[base + _E_BETA] = beta
    state[base + _E_DENOM] = beta + alpha
    state[base + _E_OLD_WT] = 1.0
    state[base + _E_NOBS] = 0.0
    state[base + _E_VALUE] = np.nan


@njit(cache=True)
def _ema_update_nb(state: np.ndarray, base: int, x: float) -> float:
    """One step of pandas ``ewm(span, adjust=False, min_periods=span)``, as vectorbt codes it.

    Same operations in the same order as ``ewm_mean_1d_nb``, so results are bit-identical.
    """
    observed = x == x
    if observed:
        state[base + _E_NOBS] += 1.0
    avg = state[base + _E_VALUE]
    if avg == avg:
        beta = state[base + _E_BETA]
        old_wt = state[base + _E_OLD_WT] * beta
        if observed:
            if avg != x:  # pandas/vectorbt skip the update on equal values
                alpha = state[base + _E_ALPHA]
                if old_wt == beta and state[base + _E_DENOM] == 1.0:
                    avg = old_wt * avg + alpha * x  # == (...) / 1.0 exactly, without the divide
                else:
                    avg = (old_wt * avg + alpha * x) / (old_wt + alpha)
            old_wt = 1.0
        state[base + _E_OLD_WT] = old_wt
    elif observed:
        avg = x  # seeded with the first observation
    state[base + _E_VALUE] = avg
    if state[base + _E_NOBS] >= state[base + _E_MINP]:
        return avg
    return np.nan


@njit(cache=True)
def _macd_init_nb(fast: int, slow: int, signal: int) -> np.ndarray:
    state = np.empty(_M_SIZE)
    _ema_slot_init_nb(state, _M_FAST, fast)
    _ema_slot_init_nb(state, _M_SLOW, slow)
    _ema_slot_init_nb(state, _M_SIGNAL, signal)
    return state


@njit(cache=True)
def macd_step(state: np.ndarray, high: float, low: float, close: float) -> tuple[float, float, float]:
    """Advance MACD by one bar; return ``(macd, signal, histogram)`` and update ``state`` in place.

    ``high`` and ``low`` are ignored: every step function takes ``(state, high, low, close)``
    so an engine can drive all indicators the same way. A NaN close is skipped like pandas'
    ``ignore_na=False`` (it is not an observation but ages the previous average).
    """
    fast = _ema_update_nb(state, _M_FAST, close)
    slow = _ema_update_nb(state, _M_SLOW, close)
    line = fast - slow
    sig = _ema_update_nb(state, _M_SIGNAL, line)
    return line, sig, line - sig


@njit(cache=True)
def _macd_1d_nb(close: np.ndarray, fast: int, slow: int, signal: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = close.shape[0]
    line = np.empty(n)
    sig = np.empty(n)
    hist = np.empty(n)
    state = _macd_init_nb(fast, slow, signal)
    for i in range(n):
        line[i], sig[i], hist[i] = macd_step(state, np.nan, np.nan, close[i])
    return line, sig, hist


@njit(cache=True)
def _macd_2d_nb(
    close: np.ndarray, fasts: np.ndarray, slows: np.ndarray, signals: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n, k = close.shape
    line = np.empty((n, k))
    sig = np.empty((n, k))
    hist = np.empty((n, k))
    for col in range(k):
        state = _macd_init_nb(fasts[col], slows[col], signals[col])
        for i in range(n):
            line[i, col], sig[i, col], hist[i, col] = macd_step(state, np.nan, np.nan, close[i, col])
    return line, sig, hist


# ============================================================================ validation


def _period(name: str, value: Any) -> int:
    """An integer >= 1 (integral floats such as 10.0 are accepted, bools are not)."""
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if isinstance(value, numbers.Integral):
        out = int(value)
    elif isinstance(value, numbers.Real) and float(value).is_integer():
        out = int(value)
    else:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if out < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return out


def _multiplier(value: Any) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValueError(f"multiplier must be a positive finite number, got {value!r}")
    out = float(value)
    if not (math.isfinite(out) and out > 0.0):
        raise ValueError(f"multiplier must be a positive finite number, got {value!r}")
    return out


def _series(name: str, values: ArrayLike, ndim: int) -> np.ndarray:
    """A contiguous float64 copy-or-view of a numpy array, list or pandas Series/DataFrame."""
    if hasattr(values, "to_numpy"):
        values = values.to_numpy(dtype=np.float64)
    try:
        out = np.ascontiguousarray(values, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be numeric, got {type(values).__name__}") from e
    if ndim == 2 and out.ndim == 1:
        out = out.reshape(-1, 1)
    if out.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {out.shape}")
    return out


def _hlc(high: ArrayLike, low: ArrayLike, close: ArrayLike, ndim: int) -> tuple[np.ndarray, ...]:
    h, l, c = (_series(n, v, ndim) for n, v in (("high", high), ("low", low), ("close", close)))
    if not (h.shape == l.shape == c.shape):
        raise ValueError(
            f"high, low and close must have the same shape, got {h.shape}, {l.shape} and {c.shape}"
        )
    for name, arr in (("high", h), ("low", l), ("close", c)):
        if np.isnan(arr).any():
            first = int(np.flatnonzero(np.isnan(arr).ravel())[0])
            raise ValueError(
                f"{name} has NaN (first at flat index {first}); SuperTrend's ATR never recovers "
                "from a NaN, so drop or fill those bars first (e.g. df.dropna())"
            )
    return h, l, c


def _per_column(name: str, value: Any, k: int, conv: Any) -> list:
    values = list(np.ravel(np.asarray(value, dtype=object)))
    if len(values) == 1:
        values = values * k
    if len(values) != k:
        raise ValueError(f"{name} needs one value or one per column ({k}), got {len(values)}")
    return [conv(v) for v in values]


# ============================================================================ public API


def supertrend_state(period: int = 10, multiplier: float = 3.0) -> np.ndarray:
    """A fresh SuperTrend state for :func:`supertrend_step` (parameters are stored in it)."""
    return _supertrend_init_nb(_period("period", period), _multiplier(multiplier))


def supertrend(
    high: ArrayLike, low: ArrayLike, close: ArrayLike, period: int = 10, multiplier: float = 3.0
) -> tuple[np.ndarray, np.ndarray]:
    """SuperTrend as TradingView's ``ta.supertrend(multiplier, period)``; returns ``(line, direction)``.

    Both are float64 arrays of the input's length. ``direction`` is +1 in an uptrend and -1
    in a downtrend (Pine's sign is the opposite: -1 is up there); ``line`` is the lower band
    in an uptrend and the upper band in a downtrend. The first ``period - 1`` bars are NaN.

    Definition (Pine v5 reference ``pine_supertrend``), bar by bar:

    * true range: ``high - low`` on the first bar, else
      ``max(high - low, |high - prev close|, |low - prev close|)``;
    * ATR: Wilder's RMA, alpha = 1/period, seeded on bar ``period - 1`` with the simple mean
      of the first ``period`` true ranges, then ``alpha * tr + (1 - alpha) * atr``;
    * basic bands: ``hl2 +/- multiplier * atr`` with ``hl2 = (high + low) / 2``;
    * the lower band keeps its previous value unless the new one is higher or the previous
      close fell below the previous lower band; the upper band keeps its previous value unless
      the new one is lower or the previous close rose above the previous upper band. On the
      first bar with an ATR the previous bands count as 0 (Pine's ``nz``), so the basic bands
      are taken;
    * trend: DOWN on the first bar with an ATR (Pine's ``_direction := 1`` when
      ``na(atr[1])``). Afterwards, if the previous line was the upper band, the trend turns up
      when ``close > upper band`` (this bar's band), else it turns down when
      ``close < lower band``.

    Edge case kept from Pine: with ``period=1`` the first bar has no previous close, so the
    upper band stays at its ``nz`` value of 0 and the first line is 0.0.

    pandas-ta's ``supertrend`` differs: it compares the close with the *previous* bar's band
    to flip the trend and seeds its ATR differently (an RMA/EMA started from the first value
    rather than an SMA of ``period`` true ranges), so its early values and some flips differ
    from TradingView and from this function.

    Raises ``ValueError`` for mismatched lengths, NaN prices, ``period < 1`` or
    ``multiplier <= 0``.
    """
    p = _period("period", period)
    m = _multiplier(multiplier)
    h, l, c = _hlc(high, low, close, ndim=1)
    return _supertrend_1d_nb(h, l, c, p, m)


def supertrend_2d(
    high: ArrayLike, low: ArrayLike, close: ArrayLike, period: Any = 10, multiplier: Any = 3.0
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`supertrend` on each column of ``(n_bars, n_cols)`` arrays, for parameter grids.

    ``period`` and ``multiplier`` are scalars or one value per column, so a grid over one
    instrument is the price tiled across columns with the parameters listed per column.
    """
    h, l, c = _hlc(high, low, close, ndim=2)
    k = c.shape[1]
    periods = np.array(_per_column("period", period, k, lambda v: _period("period", v)), dtype=np.int64)
    mults = np.array(_per_column("multiplier", multiplier, k, _multiplier), dtype=np.float64)
    return _supertrend_2d_nb(h, l, c, periods, mults)


def macd_state(fast: int = 12, slow: int = 26, signal: int = 9) -> np.ndarray:
    """A fresh MACD state for :func:`macd_step` (parameters are stored in it)."""
    return _macd_init_nb(_period("fast", fast), _period("slow", slow), _period("signal", signal))


def macd(
    close: ArrayLike, fast: int = 12, slow: int = 26, signal: int = 9
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MACD with EMAs; returns ``(macd, signal, histogram)`` as float64 arrays.

    Matches vectorbt 1.2's ``vbt.MACD.run(close, fast_window=fast, slow_window=slow,
    signal_window=signal, macd_ewm=True, signal_ewm=True)`` bit for bit. vectorbt computes
    each EMA with ``ewm_mean_1d_nb(a, span, minp=span, adjust=False)``, a port of pandas'
    ``ewm(span=span, adjust=False, min_periods=span).mean()``:

    * alpha = 2 / (span + 1), the EMA is seeded with the first value and runs from bar 0;
      ``minp`` only *masks* the first ``span - 1`` outputs as NaN, it does not re-seed;
    * ``macd = fast EMA - slow EMA`` is therefore NaN for the first ``max(fast, slow) - 1``
      bars;
    * the signal EMA runs over that NaN-led series: NaNs are not observations, so it is
      seeded with the first *defined* macd value (bar ``max(fast, slow) - 1``) and is NaN
      until ``signal`` macd values have been seen, i.e. for the first
      ``max(fast, slow) + signal - 2`` bars; ``histogram = macd - signal``.

    pandas ``ewm(span=n, adjust=False)`` *without* ``min_periods`` gives the same macd where
    it is defined here, but its signal EMA starts at bar 0 from ``macd[0] = 0``, so its signal
    differs during warm-up by a term that decays as ``(1 - 2/(signal+1))**k``. With
    ``min_periods=n`` on all three EMAs pandas matches this function exactly.
    """
    f, s, g = _period("fast", fast), _period("slow", slow), _period("signal", signal)
    return _macd_1d_nb(_series("close", close, ndim=1), f, s, g)


def macd_2d(
    close: ArrayLike, fast: Any = 12, slow: Any = 26, signal: Any = 9
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`macd` on each column of an ``(n_bars, n_cols)`` array; parameters per column or scalar."""
    c = _series("close", close, ndim=2)
    k = c.shape[1]
    fasts = np.array(_per_column("fast", fast, k, lambda v: _period("fast", v)), dtype=np.int64)
    slows = np.array(_per_column("slow", slow, k, lambda v: _period("slow", v)), dtype=np.int64)
    signals = np.array(_per_column("signal", signal, k, lambda v: _period("signal", v)), dtype=np.int64)
    return _macd_2d_nb(c, fasts, slows, signals)


# ============================================================================ vectorbt


def _supertrend_apply(high: np.ndarray, low: np.ndarray, close: np.ndarray, period: Any, multiplier: Any):
    return supertrend_2d(high, low, close, period, multiplier)


def _macd_apply(close: np.ndarray, fast: Any, slow: Any, signal: Any):
    return macd_2d(close, fast, slow, signal)


def _build_factories() -> dict[str, type]:
    import vectorbt as vbt  # slow (about 3.5 s): only when a factory class is asked for

    super_trend = vbt.IndicatorFactory(
        class_name="SuperTrend",
        module_name=__name__,
        short_name="supertrend",
        input_names=["high", "low", "close"],
        param_names=["period", "multiplier"],
        output_names=["line", "direction"],
    ).from_apply_func(_supertrend_apply, period=10, multiplier=3.0)
    super_trend.__doc__ = (
        "vectorbt indicator around tradeflow.indicators.supertrend (TradingView definition, +1 = up).\n\n"
        "    SuperTrend.run(high, low, close, period=[7, 10], multiplier=[2, 3], param_product=True)"
    )
    macdx = vbt.IndicatorFactory(
        class_name="MACDX",
        module_name=__name__,
        short_name="macdx",
        input_names=["close"],
        param_names=["fast", "slow", "signal"],
        output_names=["macd", "signal", "hist"],
    ).from_apply_func(_macd_apply, fast=12, slow=26, signal=9)
    macdx.__doc__ = (
        "vectorbt indicator around tradeflow.indicators.macd (equals vbt.MACD with macd_ewm=signal_ewm=True).\n\n"
        "    MACDX.run(close, fast=[8, 12], slow=[21, 26], signal=9, param_product=True)"
    )
    return {"SuperTrend": super_trend, "MACDX": macdx}


def __getattr__(name: str) -> Any:
    """Build ``SuperTrend`` and ``MACDX`` on first access, so importing this module stays fast."""
    if name in _LAZY:
        classes = _build_factories()
        globals().update(classes)
        return classes[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

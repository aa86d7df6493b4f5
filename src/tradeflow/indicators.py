"""SuperTrend and MACD as numba step kernels: one bar in, one bar out, same numbers everywhere.

Each indicator is a *step* over an explicit float64 state array, so a live engine that feeds
bars one at a time through ``*_step`` gets results bit-identical to a backtest that runs the
vectorized function over the whole history::

    line, direction = supertrend(high, low, close, period=10, multiplier=3.0)

    state = supertrend_state(10, 3.0)           # live: one fresh state per instrument
    for h, l, c in bars:
        line_i, dir_i = supertrend_step(state, h, l, c)

How the two paths stay identical: all the arithmetic of a bar lives in one private *core*
function (``_supertrend_core``, ``_macd_core``) that maps (parameters, state, bar) to
(new state, outputs) on plain floats. ``*_step`` loads the state from the array, calls the
core and stores it back; the vectorized loop calls the same core with the state kept in
local variables. Both inline the same code, and numba never reorders floating-point maths
without ``fastmath``, so the doubles are the same (the tests check this on real data).
Keeping the state in registers rather than in the array makes the 1M-bar loop about 20%
faster.

* ``supertrend`` follows TradingView's ``ta.supertrend`` (Pine v5 ``pine_supertrend``) with
  the sign flipped so that +1 means up.
* ``macd`` follows vectorbt 1.2's ``vbt.MACD.run(..., macd_ewm=True, signal_ewm=True)``
  bit for bit, warm-up NaNs included.
* ``supertrend_2d`` / ``macd_2d`` run one parameter set per column, for grids.
* ``SuperTrend`` and ``MACDX`` are vectorbt ``IndicatorFactory`` classes built on first
  attribute access: ``import vectorbt`` takes about 3.5 s here, and importing this module
  should not. They are left out of ``__all__`` so that a star import stays fast.

Kernels use numba's on-disk cache (``cache=True``): a second process loads machine code
instead of compiling (see ``bench/indicators.py``). The cores are inlined at numba IR level
(``inline="always"``); left as calls, they made the MACD loop about twice as slow. Kernels
release the GIL (``nogil=True``), so separate threads can run them side by side.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
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
_JIT: dict[str, Any] = {"cache": True, "nogil": True}
_INLINE: dict[str, Any] = {**_JIT, "inline": "always"}

# ------------------------------------------------------------------ SuperTrend state
# One float64 array per instrument and parameter set:
#   [period, alpha, multiplier | n, prev_close, tr_sum, atr, lower, upper, was_upper | line, direction]
# n: bars seen; prev_close: NaN before the first bar (Pine's close[1] is na); tr_sum: running
# sum of true ranges for the SMA seed; lower/upper: the previous bar's final bands; was_upper:
# 1.0 when the previous line was its upper band (Pine: superTrend[1] == upperBand[1]);
# line/direction: the last outputs, for inspection.
_ST_PERIOD, _ST_ALPHA, _ST_MULT = 0, 1, 2
_ST_N, _ST_PREV_CLOSE, _ST_TR_SUM, _ST_ATR, _ST_LOWER, _ST_UPPER, _ST_WAS_UPPER = 3, 4, 5, 6, 7, 8, 9
_ST_LINE, _ST_DIR = 10, 11
_ST_SIZE = 12

# ------------------------------------------------------------------ MACD state
# Three EMAs (fast, slow, signal). Each has 4 parameters (minp = span, alpha, beta = 1 - alpha,
# denom = beta + alpha) and 3 variables (old_wt, nobs, avg), named as in pandas' ewma:
#   [fast params, slow params, signal params | fast vars, slow vars, signal vars | macd, signal, hist]
_M_PARAMS = (0, 4, 8)
_M_VARS = (12, 15, 18)
_M_LAST = 21
_M_SIZE = 24


# ============================================================================ SuperTrend kernels


@njit(**_INLINE)
def _supertrend_core(
    p: tuple[float, float, float],
    s: tuple[float, float, float, float, float, float, float],
    high: float,
    low: float,
    close: float,
) -> tuple[tuple[float, float, float, float, float, float, float], float, float]:
    """One bar of Pine's ``pine_supertrend``: ``(params, state, bar) -> (state, line, direction)``."""
    period, alpha, mult = p
    n, prev_close, tr_sum, atr, lower, upper, was_upper = s
    n += 1.0
    # Pine ta.tr(true): the first bar has no previous close, so its TR is high - low.
    hl = high - low
    if n == 1.0:
        tr = hl
    else:
        tr = max(hl, abs(high - prev_close), abs(low - prev_close))
    if n < period:  # warm-up: collect TRs for the SMA seed of the ATR
        return (n, close, tr_sum + tr, atr, lower, upper, was_upper), np.nan, np.nan

    first = n == period
    if first:  # Pine ta.rma: seeded with ta.sma of the first `period` TRs ...
        atr = (tr_sum + tr) / period
        prev_lower = 0.0  # ... and the previous bands are nz(na) = 0
        prev_upper = 0.0
    else:
        atr = alpha * tr + (1.0 - alpha) * atr
        prev_lower = lower
        prev_upper = upper

    hl2 = (high + low) / 2.0
    upper = hl2 + mult * atr
    lower = hl2 - mult * atr
    # A comparison with a NaN prev_close is False, as Pine's comparisons with na are.
    if not (lower > prev_lower or prev_close < prev_lower):
        lower = prev_lower
    if not (upper < prev_upper or prev_close > prev_upper):
        upper = prev_upper

    if first:
        direction = -1.0  # Pine: na(atr[1]) -> _direction := 1, i.e. down
    elif was_upper == 1.0:
        direction = 1.0 if close > upper else -1.0
    else:
        direction = -1.0 if close < lower else 1.0
    line = lower if direction == 1.0 else upper
    was_upper = 1.0 if line == upper else 0.0
    return (n, close, tr_sum, atr, lower, upper, was_upper), line, direction


@njit(**_JIT)
def _supertrend_init_nb(period: int, multiplier: float) -> np.ndarray:
    state = np.full(_ST_SIZE, np.nan)
    state[_ST_PERIOD] = period
    state[_ST_ALPHA] = 1.0 / period
    state[_ST_MULT] = multiplier
    state[_ST_N] = 0.0
    state[_ST_TR_SUM] = 0.0
    state[_ST_WAS_UPPER] = 0.0
    return state


@njit(**_INLINE)
def supertrend_step(state: np.ndarray, high: float, low: float, close: float) -> tuple[float, float]:
    """Advance SuperTrend by one bar: return ``(line, direction)`` and update ``state`` in place.

    ``state`` comes from :func:`supertrend_state`. Direction is +1 (up) or -1 (down); both
    outputs are NaN while the ATR warms up. Prices are not checked here (the vectorized
    wrapper rejects NaN): one NaN bar would poison the ATR for good.
    """
    p = (state[0], state[1], state[2])
    s = (state[3], state[4], state[5], state[6], state[7], state[8], state[9])
    s, line, direction = _supertrend_core(p, s, high, low, close)
    state[3], state[4], state[5], state[6], state[7], state[8], state[9] = s
    state[_ST_LINE] = line
    state[_ST_DIR] = direction
    return line, direction


@njit(**_JIT)
def _supertrend_run_nb(
    state: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray, line: np.ndarray, direction: np.ndarray
) -> float:
    """Run ``close.shape[0]`` steps from ``state`` into ``line``/``direction``; leave ``state`` at the end.

    Returns the sum of all prices: it is not finite if any price is NaN or infinite, which
    checks the input for free (the sum runs beside the ATR's longer dependency chain).
    """
    p = (state[0], state[1], state[2])
    s = (state[3], state[4], state[5], state[6], state[7], state[8], state[9])
    ln = state[_ST_LINE]
    d = state[_ST_DIR]
    total = 0.0
    for i in range(close.shape[0]):
        h, lo, c = high[i], low[i], close[i]
        total += (h + lo) + c
        s, ln, d = _supertrend_core(p, s, h, lo, c)
        line[i] = ln
        direction[i] = d
    state[3], state[4], state[5], state[6], state[7], state[8], state[9] = s
    state[_ST_LINE] = ln
    state[_ST_DIR] = d
    return total


@njit(**_JIT)
def _supertrend_2d_nb(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    periods: np.ndarray,
    multipliers: np.ndarray,
    line: np.ndarray,
    direction: np.ndarray,
) -> float:
    total = 0.0
    for col in range(close.shape[1]):
        state = _supertrend_init_nb(periods[col], multipliers[col])
        total += _supertrend_run_nb(state, high[:, col], low[:, col], close[:, col], line[:, col], direction[:, col])
    return total


# ============================================================================ MACD kernels


@njit(**_INLINE)
def _ema_core(
    p: tuple[float, float, float, float], s: tuple[float, float, float], x: float
) -> tuple[tuple[float, float, float], float]:
    """One step of pandas ``ewm(span, adjust=False, min_periods=span).mean()`` as vectorbt codes it.

    Same operations in the same order as ``vectorbt.generic.nb.ewm_mean_1d_nb`` (a port of
    pandas' ``ewma``), so the results are bit-identical: seeded with the first observation,
    an update is skipped when the value equals the average, and after a NaN gap the old
    weight has decayed (``ignore_na=False``).
    """
    minp, alpha, beta, denom = p
    old_wt, nobs, avg = s
    observed = x == x
    if observed:
        nobs += 1.0
    if avg == avg:
        old_wt = old_wt * beta
        if observed:
            if avg != x:
                if old_wt == beta and denom == 1.0:
                    avg = old_wt * avg + alpha * x  # == (...) / 1.0 exactly: skip the divide
                else:
                    avg = (old_wt * avg + alpha * x) / (old_wt + alpha)
            old_wt = 1.0
    elif observed:
        avg = x
    out = avg if nobs >= minp else np.nan
    return (old_wt, nobs, avg), out


@njit(**_INLINE)
def _macd_core(
    pf: tuple[float, float, float, float],
    ps: tuple[float, float, float, float],
    pg: tuple[float, float, float, float],
    sf: tuple[float, float, float],
    ss: tuple[float, float, float],
    sg: tuple[float, float, float],
    close: float,
) -> tuple[tuple[float, float, float], tuple[float, float, float], tuple[float, float, float], float, float, float]:
    """One bar of vectorbt's MACD: ``(params, states, close) -> (states, macd, signal, hist)``."""
    sf, fast = _ema_core(pf, sf, close)
    ss, slow = _ema_core(ps, ss, close)
    line = fast - slow
    sg, sig = _ema_core(pg, sg, line)
    return sf, ss, sg, line, sig, line - sig


@njit(**_JIT)
def _macd_init_nb(fast: int, slow: int, signal: int) -> np.ndarray:
    state = np.full(_M_SIZE, np.nan)
    spans = (fast, slow, signal)
    for k in range(3):
        span = spans[k]
        # vectorbt ewm_mean_1d_nb / pandas ewma: com = (span - 1) / 2, alpha = 1 / (1 + com)
        alpha = 1.0 / (1.0 + (span - 1) / 2.0)
        beta = 1.0 - alpha
        b = _M_PARAMS[k]
        state[b] = span
        state[b + 1] = alpha
        state[b + 2] = beta
        state[b + 3] = beta + alpha
        v = _M_VARS[k]
        state[v] = 1.0  # old_wt
        state[v + 1] = 0.0  # nobs
        state[v + 2] = np.nan  # avg
    return state


@njit(**_INLINE)
def macd_step(state: np.ndarray, high: float, low: float, close: float) -> tuple[float, float, float]:
    """Advance MACD by one bar: return ``(macd, signal, histogram)`` and update ``state`` in place.

    ``high`` and ``low`` are ignored: every step function takes ``(state, high, low, close)``
    so an engine can drive all indicators the same way. A NaN close is handled as vectorbt
    and pandas do (not an observation, but the old average loses weight).
    """
    pf = (state[0], state[1], state[2], state[3])
    ps = (state[4], state[5], state[6], state[7])
    pg = (state[8], state[9], state[10], state[11])
    sf = (state[12], state[13], state[14])
    ss = (state[15], state[16], state[17])
    sg = (state[18], state[19], state[20])
    sf, ss, sg, line, sig, hist = _macd_core(pf, ps, pg, sf, ss, sg, close)
    state[12], state[13], state[14] = sf
    state[15], state[16], state[17] = ss
    state[18], state[19], state[20] = sg
    state[21], state[22], state[23] = line, sig, hist
    return line, sig, hist


@njit(**_JIT)
def _macd_run_nb(state: np.ndarray, close: np.ndarray, line: np.ndarray, sig: np.ndarray, hist: np.ndarray) -> None:
    """Run ``close.shape[0]`` steps from ``state`` into the outputs; leave ``state`` at the end."""
    pf = (state[0], state[1], state[2], state[3])
    ps = (state[4], state[5], state[6], state[7])
    pg = (state[8], state[9], state[10], state[11])
    sf = (state[12], state[13], state[14])
    ss = (state[15], state[16], state[17])
    sg = (state[18], state[19], state[20])
    m, g, h = state[21], state[22], state[23]
    for i in range(close.shape[0]):
        sf, ss, sg, m, g, h = _macd_core(pf, ps, pg, sf, ss, sg, close[i])
        line[i] = m
        sig[i] = g
        hist[i] = h
    state[12], state[13], state[14] = sf
    state[15], state[16], state[17] = ss
    state[18], state[19], state[20] = sg
    state[21], state[22], state[23] = m, g, h


@njit(**_JIT)
def _macd_2d_nb(
    close: np.ndarray,
    fasts: np.ndarray,
    slows: np.ndarray,
    signals: np.ndarray,
    line: np.ndarray,
    sig: np.ndarray,
    hist: np.ndarray,
) -> None:
    for col in range(close.shape[1]):
        state = _macd_init_nb(fasts[col], slows[col], signals[col])
        _macd_run_nb(state, close[:, col], line[:, col], sig[:, col], hist[:, col])


# ============================================================================ validation


def _period(name: str, value: Any) -> int:
    """An integer >= 1 (integral floats such as 10.0 pass, bools do not)."""
    if not isinstance(value, (bool, np.bool_)):
        if isinstance(value, numbers.Integral):
            out = int(value)
        elif isinstance(value, numbers.Real) and float(value).is_integer():
            out = int(value)
        else:
            out = 0
        if out >= 1:
            return out
    raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def _multiplier(value: Any) -> float:
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
        out = float(value)
        if math.isfinite(out) and out > 0.0:
            return out
    raise ValueError(f"multiplier must be a finite number > 0, got {value!r}")


def _series(name: str, values: ArrayLike, ndim: int) -> np.ndarray:
    """float64 values of a numpy array, list or pandas object: C-contiguous (1-D) or Fortran (2-D)."""
    if hasattr(values, "to_numpy"):
        values = values.to_numpy(dtype=np.float64)
    try:
        out = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be numeric, got {type(values).__name__}") from e
    if ndim == 2 and out.ndim == 1:
        out = out.reshape(-1, 1)
    if out.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got an array of shape {out.shape}")
    # 2-D kernels walk down columns, so columns should be contiguous.
    return np.ascontiguousarray(out) if ndim == 1 else np.asfortranarray(out)


def _hlc(high: ArrayLike, low: ArrayLike, close: ArrayLike, ndim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    h, l, c = (_series(n, v, ndim) for n, v in (("high", high), ("low", low), ("close", close)))
    if not (h.shape == l.shape == c.shape):
        what = "length" if ndim == 1 else "shape"
        sizes = [a.shape[0] if ndim == 1 else a.shape for a in (h, l, c)]
        raise ValueError(f"high, low and close must have the same {what}, got {sizes[0]}, {sizes[1]} and {sizes[2]}")
    return h, l, c


def _check_finite(total: float, h: np.ndarray, l: np.ndarray, c: np.ndarray) -> None:
    """Raise if a kernel's price sum says some price is NaN or infinite, naming the first one."""
    if math.isfinite(total):
        return
    for name, arr in (("high", h), ("low", l), ("close", c)):
        bad = np.flatnonzero(~np.isfinite(arr.ravel(order="F")))
        if bad.size:
            row, col = divmod(int(bad[0]), arr.shape[0])[::-1]
            where = f"row {row}" if arr.ndim == 1 else f"row {row}, column {col}"
            raise ValueError(
                f"{name} has {bad.size} NaN or infinite value(s), the first at {where}; SuperTrend's ATR "
                "never recovers from one, so drop or fill those bars first (e.g. df.dropna())"
            )
    raise ValueError("the prices are too large: their sum overflows float64")


def _per_column(name: str, value: Any, k: int, conv: Callable[[Any], Any]) -> list[Any]:
    values = list(np.ravel(np.asarray(value, dtype=object)))
    if len(values) == 1:
        values = values * k
    if len(values) != k:
        raise ValueError(f"{name} needs one value or one per column ({k}), got {len(values)}")
    return [conv(v) for v in values]


# ============================================================================ public API


def supertrend_state(period: int = 10, multiplier: float = 3.0) -> np.ndarray:
    """A fresh SuperTrend state for :func:`supertrend_step` (the parameters are stored in it)."""
    return _supertrend_init_nb(_period("period", period), _multiplier(multiplier))


def supertrend(
    high: ArrayLike, low: ArrayLike, close: ArrayLike, period: int = 10, multiplier: float = 3.0
) -> tuple[np.ndarray, np.ndarray]:
    """SuperTrend as TradingView's ``ta.supertrend(multiplier, period)``; returns ``(line, direction)``.

    Inputs are numpy arrays or pandas Series of equal length; both outputs are float64 numpy
    arrays of that length. ``direction`` is +1 in an uptrend and -1 in a downtrend (Pine's
    sign is the opposite: -1 means up there). ``line`` is the lower band in an uptrend and
    the upper band in a downtrend. The first ``period - 1`` bars are NaN (no ATR yet).

    Definition (Pine v5 reference ``pine_supertrend``), bar by bar:

    * true range: ``high - low`` on the first bar, else
      ``max(high - low, |high - prev close|, |low - prev close|)``;
    * ATR: Wilder's RMA, alpha = 1/period, seeded on bar ``period - 1`` with the simple mean
      of the first ``period`` true ranges, then ``alpha * tr + (1 - alpha) * atr``;
    * basic bands: ``hl2 +/- multiplier * atr`` with ``hl2 = (high + low) / 2``;
    * the lower band keeps its previous value unless the new one is higher or the previous
      close fell below the previous lower band; the upper band keeps its previous value
      unless the new one is lower or the previous close rose above the previous upper band.
      On the first bar with an ATR the previous bands count as 0 (Pine's ``nz``);
    * trend: DOWN on the first bar with an ATR (Pine's ``_direction := 1`` when
      ``na(atr[1])``). After that, if the previous line was the upper band the trend turns up
      when ``close >`` this bar's upper band, else it turns down when ``close <`` this bar's
      lower band.

    Edge case kept from Pine: with ``period=1`` the first bar has no previous close, so its
    upper band stays at the ``nz`` value 0 and the first line is 0.0.

    pandas-ta's ``supertrend`` differs: it flips the trend by comparing the close with the
    *previous* bar's band, and seeds its ATR differently (an RMA/EMA started from the first
    value rather than the SMA of ``period`` true ranges), so its early values and some flips
    differ from TradingView and from this function.

    Raises ``ValueError`` for mismatched lengths, NaN or infinite prices, ``period < 1``
    or ``multiplier <= 0``.
    """
    p, m = _period("period", period), _multiplier(multiplier)
    h, l, c = _hlc(high, low, close, ndim=1)
    line, direction = np.empty(c.shape), np.empty(c.shape)  # numpy's allocator: huge pages, fewer faults
    _check_finite(_supertrend_run_nb(_supertrend_init_nb(p, m), h, l, c, line, direction), h, l, c)
    return line, direction


def supertrend_2d(
    high: ArrayLike, low: ArrayLike, close: ArrayLike, period: Any = 10, multiplier: Any = 3.0
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`supertrend` on each column of ``(n_bars, n_cols)`` arrays, for parameter grids.

    ``period`` and ``multiplier`` are scalars or one value per column, so a grid over one
    instrument is the prices tiled across columns with the parameters listed per column.
    Outputs are ``(n_bars, n_cols)`` float64 arrays (Fortran order).
    """
    h, l, c = _hlc(high, low, close, ndim=2)
    k = c.shape[1]
    periods = np.array(_per_column("period", period, k, lambda v: _period("period", v)), dtype=np.int64)
    mults = np.array(_per_column("multiplier", multiplier, k, _multiplier), dtype=np.float64)
    line, direction = np.empty(c.shape, order="F"), np.empty(c.shape, order="F")
    _check_finite(_supertrend_2d_nb(h, l, c, periods, mults, line, direction), h, l, c)
    return line, direction


def macd_state(fast: int = 12, slow: int = 26, signal: int = 9) -> np.ndarray:
    """A fresh MACD state for :func:`macd_step` (the parameters are stored in it)."""
    return _macd_init_nb(_period("fast", fast), _period("slow", slow), _period("signal", signal))


def macd(
    close: ArrayLike, fast: int = 12, slow: int = 26, signal: int = 9
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MACD with EMAs; returns ``(macd, signal, histogram)`` as float64 numpy arrays.

    Matches vectorbt 1.2's ``vbt.MACD.run(close, fast_window=fast, slow_window=slow,
    signal_window=signal, macd_ewm=True, signal_ewm=True)`` bit for bit. vectorbt computes
    each EMA with ``ewm_mean_1d_nb(a, span, minp=span, adjust=False)``, a port of pandas'
    ``ewm(span=span, adjust=False, min_periods=span).mean()``:

    * alpha = 2 / (span + 1); the EMA is seeded with the first value and runs from bar 0.
      ``minp`` only *masks* the first ``span - 1`` outputs as NaN, it does not re-seed;
    * so ``macd = fast EMA - slow EMA`` is NaN for the first ``max(fast, slow) - 1`` bars;
    * the signal EMA runs over that NaN-led series. NaNs are not observations, so it is
      seeded with the first *defined* macd value (bar ``max(fast, slow) - 1``) and is NaN
      until it has seen ``signal`` macd values: the first ``max(fast, slow) + signal - 2``
      bars are NaN. ``histogram = macd - signal``.

    pandas ``ewm(span=n, adjust=False).mean()`` *without* ``min_periods`` gives the same
    macd wherever this one is defined, but its signal EMA starts at bar 0 from
    ``macd[0] = 0``, so its signal differs during warm-up by a term that decays like
    ``(1 - 2/(signal + 1))**k``. With ``min_periods=n`` on all three EMAs pandas matches this
    function exactly. NaNs in ``close`` are handled as pandas/vectorbt do (skipped, with the
    old average losing weight across the gap). TA-Lib seeds each EMA with an SMA instead.
    """
    f, s, g = _period("fast", fast), _period("slow", slow), _period("signal", signal)
    c = _series("close", close, ndim=1)
    line, sig, hist = np.empty(c.shape), np.empty(c.shape), np.empty(c.shape)
    _macd_run_nb(_macd_init_nb(f, s, g), c, line, sig, hist)
    return line, sig, hist


def macd_2d(
    close: ArrayLike, fast: Any = 12, slow: Any = 26, signal: Any = 9
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`macd` on each column of an ``(n_bars, n_cols)`` array; parameters scalar or per column."""
    c = _series("close", close, ndim=2)
    k = c.shape[1]
    fasts = np.array(_per_column("fast", fast, k, lambda v: _period("fast", v)), dtype=np.int64)
    slows = np.array(_per_column("slow", slow, k, lambda v: _period("slow", v)), dtype=np.int64)
    signals = np.array(_per_column("signal", signal, k, lambda v: _period("signal", v)), dtype=np.int64)
    line, sig, hist = (np.empty(c.shape, order="F") for _ in range(3))
    _macd_2d_nb(c, fasts, slows, signals, line, sig, hist)
    return line, sig, hist


# ============================================================================ vectorbt factories


def _supertrend_apply(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, period: Any, multiplier: Any
) -> tuple[np.ndarray, np.ndarray]:
    return supertrend_2d(high, low, close, period, multiplier)


def _macd_apply(
    close: np.ndarray, fast_window: Any, slow_window: Any, signal_window: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return macd_2d(close, fast_window, slow_window, signal_window)


def _build_factories() -> dict[str, type]:
    import vectorbt as vbt  # about 3.5 s: only when a factory class is first asked for

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
        "    SuperTrend.run(high, low, close, period=[7, 10], multiplier=[2, 3], param_product=True)\n"
    )
    # Parameters are named like vbt.MACD's; "signal" would clash with the output of that name.
    macdx = vbt.IndicatorFactory(
        class_name="MACDX",
        module_name=__name__,
        short_name="macdx",
        input_names=["close"],
        param_names=["fast_window", "slow_window", "signal_window"],
        output_names=["macd", "signal", "hist"],
    ).from_apply_func(_macd_apply, fast_window=12, slow_window=26, signal_window=9)
    macdx.__doc__ = (
        "vectorbt indicator around tradeflow.indicators.macd (= vbt.MACD with macd_ewm=signal_ewm=True).\n\n"
        "    MACDX.run(close, fast_window=[8, 12], slow_window=[21, 26], signal_window=9, param_product=True)\n"
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

"""SuperTrend and MACD against independent references on real NIFTY 1-minute bars.

References: a plain-Python transcription of TradingView's Pine v5 ``pine_supertrend`` (written
here from the Pine source, not from our kernels), vectorbt 1.2's ``MACD`` and pandas ``ewm``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tradeflow import indicators as ind
from tradeflow.indicators import (
    macd,
    macd_2d,
    macd_state,
    macd_step,
    supertrend,
    supertrend_2d,
    supertrend_state,
    supertrend_step,
)

NIFTY_1M = Path("data") / "real" / "intraday" / "NIFTY50_1min_2024-01-01_2024-08-23.csv"
ST_PARAMS = [(10, 3.0), (7, 2.0), (14, 1.5), (20, 4.0), (1, 0.5)]
MACD_PARAMS = [(12, 26, 9), (5, 35, 5), (8, 21, 13), (26, 12, 9)]


def _shared_dir() -> Path:
    """The shared folder: $TRADEFLOW_SHARED if set, else ``<checkout>/../shared``."""
    env = os.environ.get("TRADEFLOW_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="module")
def nifty_bars() -> pd.DataFrame:
    """Real NIFTY 1-minute bars (58k), session hours only, as a plain float frame."""
    path = _shared_dir() / NIFTY_1M
    if not path.is_file():
        pytest.skip(f"real NIFTY 1-minute data not found at {path}; set TRADEFLOW_SHARED to the shared folder")
    raw = pd.read_csv(path, dtype={"Date": str, "Time": str})
    raw = raw[raw["Time"] <= "15:29"]  # MANIFEST: 2024-01-20 has after-hours artefact bars
    bars = raw[["Open", "High", "Low", "Close"]].rename(columns=str.lower).reset_index(drop=True).astype("float64")
    assert len(bars) >= 20_000
    return bars


def _hlc(bars: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return bars["high"].to_numpy(), bars["low"].to_numpy(), bars["close"].to_numpy()


# ---------------------------------------------------------------- Pine transcription


def pine_supertrend(high: list[float], low: list[float], close: list[float], period: int, factor: float):
    """Pine v5 ``pine_supertrend(factor, atrPeriod)`` with ``ta.atr`` = ``ta.rma(ta.tr(true))``.

    Returns Pine's ``(superTrend, direction)`` lists, Pine's sign (-1 = up), None where the
    ATR is na (Pine's warm-up outputs are junk; ours are NaN there).
    """
    n = len(close)
    tr = []
    for i in range(n):
        if i == 0:  # ta.tr(true): na(high[1]) ? high - low
            tr.append(high[i] - low[i])
        else:
            tr.append(max(max(high[i] - low[i], abs(high[i] - close[i - 1])), abs(low[i] - close[i - 1])))

    atr: list[float | None] = [None] * n
    alpha = 1 / period
    for i in range(period - 1, n):
        if i == 0 or atr[i - 1] is None:  # sum := na(sum[1]) ? ta.sma(src, length) : ...
            total = 0.0
            for j in range(i - period + 1, i + 1):
                total = total + tr[j]
            atr[i] = total / period
        else:
            atr[i] = alpha * tr[i] + (1 - alpha) * atr[i - 1]

    def nz(x: float | None) -> float:
        return 0.0 if x is None else x

    upper: list[float | None] = [None] * n
    lower: list[float | None] = [None] * n
    st: list[float | None] = [None] * n
    direction: list[int | None] = [None] * n
    for i in range(n):
        if atr[i] is None:
            continue
        src = (high[i] + low[i]) / 2
        upper_band = src + factor * atr[i]
        lower_band = src - factor * atr[i]
        prev_lower = nz(lower[i - 1]) if i > 0 else 0.0
        prev_upper = nz(upper[i - 1]) if i > 0 else 0.0
        prev_close = close[i - 1] if i > 0 else None  # na: every comparison with it is false
        if not (lower_band > prev_lower or (prev_close is not None and prev_close < prev_lower)):
            lower_band = prev_lower
        if not (upper_band < prev_upper or (prev_close is not None and prev_close > prev_upper)):
            upper_band = prev_upper
        if i == 0 or atr[i - 1] is None:
            d = 1
        elif st[i - 1] == prev_upper:
            d = -1 if close[i] > upper_band else 1
        else:
            d = 1 if close[i] < lower_band else -1
        st[i] = lower_band if d == -1 else upper_band
        lower[i], upper[i], direction[i] = lower_band, upper_band, d
    return st, direction


@pytest.mark.parametrize(("period", "multiplier"), ST_PARAMS)
def test_supertrend_equals_pine_transcription(nifty_bars, period, multiplier):
    h, l, c = _hlc(nifty_bars)
    line, direction = supertrend(h, l, c, period=period, multiplier=multiplier)

    ref_st, ref_dir = pine_supertrend(h.tolist(), l.tolist(), c.tolist(), period, multiplier)
    ref_line = np.array([np.nan if v is None else v for v in ref_st])
    ref_direction = np.array([np.nan if v is None else -v for v in ref_dir], dtype=float)  # ours: +1 = up

    assert line.dtype == direction.dtype == np.float64
    assert np.isnan(line).sum() == np.isnan(direction).sum() == period - 1
    assert np.isnan(line[: period - 1]).all()
    assert np.array_equal(line, ref_line, equal_nan=True), np.nanmax(np.abs(line - ref_line))
    assert np.array_equal(direction, ref_direction, equal_nan=True)
    assert direction[period - 1] == -1.0  # Pine starts in a downtrend
    flips = np.count_nonzero(np.diff(direction[period - 1 :]))
    assert flips > 100  # the comparison covers plenty of trend changes


def test_supertrend_period_one_keeps_pines_zero_first_line():
    line, direction = supertrend([10.0, 11.0, 12.0], [9.0, 10.0, 11.0], [9.5, 10.5, 11.5], period=1, multiplier=1.0)
    ref_st, ref_dir = pine_supertrend([10.0, 11.0, 12.0], [9.0, 10.0, 11.0], [9.5, 10.5, 11.5], 1, 1.0)
    assert line[0] == 0.0 and direction[0] == -1.0
    assert line.tolist() == ref_st and direction.tolist() == [-d for d in ref_dir]


def test_supertrend_direction_matches_side_of_close(nifty_bars):
    """+1 when the close is above the line, -1 below, except on some flip bars.

    On a flip bar Pine switches to the *other* band of the same bar. After a big opening gap
    (a bar spanning hundreds of points) that band can lie on the far side of the close: on
    2024-01-17 09:15 (period 14, x1.5) the close fell below the lower band, so the trend
    turned down, but the new upper band, 21762.9, was below the close, 21781.45.
    """
    h, l, c = _hlc(nifty_bars)
    for period, multiplier in ST_PARAMS[:4]:
        line, direction = supertrend(h, l, c, period, multiplier)
        ok = ~np.isnan(line)
        flip = np.zeros(len(c), dtype=bool)
        flip[1:] = direction[1:] != direction[:-1]
        steady = ok & ~flip
        assert (direction[steady & (c > line)] == 1.0).all()
        assert (direction[steady & (c < line)] == -1.0).all()
        wrong_side = ok & (((c > line) & (direction == -1.0)) | ((c < line) & (direction == 1.0)))
        assert wrong_side.sum() <= 0.01 * flip.sum()
        assert set(np.unique(direction[ok])) == {-1.0, 1.0}


def test_supertrend_trend_of_monotonic_series():
    close = 100.0 + np.arange(300.0)
    line, direction = supertrend(close + 0.5, close - 0.5, close, period=10, multiplier=3.0)
    assert direction[-1] == 1.0 and line[-1] < close[-1]
    line, direction = supertrend(close[::-1] + 0.5, close[::-1] - 0.5, close[::-1], period=10, multiplier=3.0)
    assert direction[-1] == -1.0 and line[-1] > close[::-1][-1]


def test_supertrend_accepts_series_and_returns_numpy(nifty_bars):
    bars = nifty_bars.iloc[:500]
    line, direction = supertrend(bars["high"], bars["low"], bars["close"])
    ref = supertrend(*_hlc(bars))
    assert isinstance(line, np.ndarray) and isinstance(direction, np.ndarray)
    assert np.array_equal(line, ref[0], equal_nan=True) and np.array_equal(direction, ref[1], equal_nan=True)


# ---------------------------------------------------------------- MACD


@pytest.mark.parametrize(("fast", "slow", "signal"), MACD_PARAMS)
def test_macd_equals_vectorbt(nifty_bars, fast, slow, signal):
    import vectorbt as vbt

    close = nifty_bars["close"].to_numpy()
    ref = vbt.MACD.run(close, fast_window=fast, slow_window=slow, signal_window=signal, macd_ewm=True, signal_ewm=True)
    line, sig, hist = macd(close, fast, slow, signal)
    assert np.array_equal(line, ref.macd.to_numpy(), equal_nan=True)
    assert np.array_equal(sig, ref.signal.to_numpy(), equal_nan=True)
    assert np.array_equal(hist, ref.hist.to_numpy(), equal_nan=True)
    # vectorbt's warm-up: macd NaN for max(fast, slow) - 1 bars, signal for max(fast, slow) + signal - 2
    assert np.isnan(line).sum() == max(fast, slow) - 1
    assert np.isnan(sig).sum() == np.isnan(hist).sum() == max(fast, slow) + signal - 2


def test_macd_equals_vectorbt_with_nan_gaps(nifty_bars):
    import vectorbt as vbt

    close = nifty_bars["close"].to_numpy()[:5000].copy()
    close[[0, 3, 40, 41, 42, 1000, 4999]] = np.nan
    ref = vbt.MACD.run(close, fast_window=12, slow_window=26, signal_window=9, macd_ewm=True, signal_ewm=True)
    line, sig, hist = macd(close)
    assert np.array_equal(line, ref.macd.to_numpy(), equal_nan=True)
    assert np.array_equal(sig, ref.signal.to_numpy(), equal_nan=True)
    assert np.array_equal(hist, ref.hist.to_numpy(), equal_nan=True)


@pytest.mark.parametrize(("fast", "slow", "signal"), MACD_PARAMS[:3])
def test_macd_equals_pandas_ewm(nifty_bars, fast, slow, signal):
    close = nifty_bars["close"]
    line, sig, hist = macd(close, fast, slow, signal)

    # pandas with min_periods on every EMA is exactly vectorbt's (and our) definition.
    def ema(s: pd.Series, n: int) -> pd.Series:
        return s.ewm(span=n, adjust=False, min_periods=n).mean()

    m = ema(close, fast) - ema(close, slow)
    s = ema(m, signal)
    assert np.array_equal(line, m.to_numpy(), equal_nan=True)
    assert np.array_equal(sig, s.to_numpy(), equal_nan=True)
    assert np.array_equal(hist, (m - s).to_numpy(), equal_nan=True)

    # Plain ewm(adjust=False) with no min_periods: same macd wherever ours is defined, but
    # the signal EMA starts at bar 0 (from macd = 0) instead of at the first defined macd,
    # so the signals differ in the warm-up and converge like (1 - 2/(signal+1))**k.
    pm = close.ewm(span=fast, adjust=False).mean() - close.ewm(span=slow, adjust=False).mean()
    ps = pm.ewm(span=signal, adjust=False).mean().to_numpy()
    defined = ~np.isnan(line)
    assert np.array_equal(line[defined], pm.to_numpy()[defined])
    both = ~np.isnan(sig)
    first = int(np.argmax(both))
    assert sig[first] != ps[first]
    assert np.max(np.abs(sig[first + 500 :] - ps[first + 500 :])) < 1e-9


# ---------------------------------------------------------------- step == vectorized


@pytest.mark.parametrize(("period", "multiplier"), ST_PARAMS[:3])
def test_supertrend_step_bit_identical(nifty_bars, period, multiplier):
    h, l, c = _hlc(nifty_bars)
    line, direction = supertrend(h, l, c, period, multiplier)
    state = supertrend_state(period, multiplier)
    stepped = np.array([supertrend_step(state, h[i], l[i], c[i]) for i in range(len(c))])
    assert np.array_equal(stepped[:, 0], line, equal_nan=True)
    assert np.array_equal(stepped[:, 1], direction, equal_nan=True)


@pytest.mark.parametrize(("fast", "slow", "signal"), MACD_PARAMS[:2])
def test_macd_step_bit_identical(nifty_bars, fast, slow, signal):
    h, l, c = _hlc(nifty_bars)
    ref = macd(c, fast, slow, signal)
    state = macd_state(fast, slow, signal)
    stepped = np.array([macd_step(state, h[i], l[i], c[i]) for i in range(len(c))])
    for k in range(3):
        assert np.array_equal(stepped[:, k], ref[k], equal_nan=True)


def test_state_constructors_return_fresh_arrays():
    a, b = supertrend_state(), supertrend_state()
    assert isinstance(a, np.ndarray) and a.dtype == np.float64 and a is not b
    supertrend_step(a, 10.0, 9.0, 9.5)
    assert not np.array_equal(a, b, equal_nan=True)
    assert macd_state().dtype == np.float64


# ---------------------------------------------------------------- grids


def test_2d_columns_equal_1d(nifty_bars):
    h, l, c = _hlc(nifty_bars.iloc[:10_000])
    params = [(7, 2.0), (10, 3.0), (14, 1.5)]
    tile = lambda a: np.tile(a[:, None], (1, len(params)))  # noqa: E731
    line, direction = supertrend_2d(tile(h), tile(l), tile(c), [p for p, _ in params], [m for _, m in params])
    for col, (p, m) in enumerate(params):
        ref = supertrend(h, l, c, p, m)
        assert np.array_equal(line[:, col], ref[0], equal_nan=True)
        assert np.array_equal(direction[:, col], ref[1], equal_nan=True)
    out = macd_2d(tile(c), fast=[12, 8, 5], slow=26, signal=[9, 9, 5])
    for col, (f, g) in enumerate([(12, 9), (8, 9), (5, 5)]):
        for k, ref in enumerate(macd(c, f, 26, g)):
            assert np.array_equal(out[k][:, col], ref, equal_nan=True)


def test_supertrend_factory_broadcasts_grid(nifty_bars):
    bars = nifty_bars.iloc[:5000]
    h, l, c = _hlc(bars)
    res = ind.SuperTrend.run(
        bars["high"], bars["low"], bars["close"], period=[7, 10], multiplier=[2, 3], param_product=True
    )
    assert res.line.shape == (5000, 4)
    seen = set()
    for key in res.line.columns:
        period, multiplier = key
        seen.add((period, multiplier))
        ref_line, ref_dir = supertrend(h, l, c, period, multiplier)
        assert np.array_equal(res.line[key].to_numpy(), ref_line, equal_nan=True)
        assert np.array_equal(res.direction[key].to_numpy(), ref_dir, equal_nan=True)
    assert seen == {(7, 2), (7, 3), (10, 2), (10, 3)}


def test_macd_factory_broadcasts_grid(nifty_bars):
    close = nifty_bars["close"].iloc[:5000]
    res = ind.MACDX.run(close, fast_window=[8, 12], slow_window=[21, 26], signal_window=9, param_product=True)
    assert res.macd.shape == (5000, 4)
    for key in res.macd.columns:
        fast, slow, signal = key
        ref = macd(close, fast, slow, signal)
        assert np.array_equal(res.macd[key].to_numpy(), ref[0], equal_nan=True)
        assert np.array_equal(res.signal[key].to_numpy(), ref[1], equal_nan=True)
        assert np.array_equal(res.hist[key].to_numpy(), ref[2], equal_nan=True)


# ---------------------------------------------------------------- bad input and surface


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"high": np.ones(5), "low": np.ones(4), "close": np.ones(5)}, "same length, got 5, 4 and 5"),
        ({"period": 0}, "period must be an integer >= 1"),
        ({"period": -3}, "period must be an integer >= 1"),
        ({"period": 2.5}, "period must be an integer >= 1"),
        ({"multiplier": 0}, "multiplier must be a finite number > 0"),
        ({"multiplier": -1.5}, "multiplier must be a finite number > 0"),
        ({"multiplier": float("nan")}, "multiplier must be a finite number > 0"),
        ({"close": np.array([1.0, np.nan, 1.0, 1.0, 1.0])}, "close has 1 NaN or infinite value"),
        ({"high": np.ones((5, 2))}, "must be 1-D"),
    ],
)
def test_supertrend_bad_input(kwargs, message):
    args = {"high": np.full(5, 2.0), "low": np.ones(5), "close": np.full(5, 1.5), **kwargs}
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        supertrend(**args)


@pytest.mark.parametrize("kwargs", [{"fast": 0}, {"slow": -1}, {"signal": 1.5}, {"fast": True}])
def test_macd_bad_params(kwargs):
    with pytest.raises(ValueError, match="must be an integer >= 1"):
        macd(np.ones(50), **kwargs)
    with pytest.raises(ValueError, match="must be an integer >= 1"):
        macd_state(**kwargs)


def test_state_constructors_validate():
    with pytest.raises(ValueError, match="period"):
        supertrend_state(0)
    with pytest.raises(ValueError, match="multiplier"):
        supertrend_state(10, 0.0)


def test_public_names_and_lazy_vectorbt():
    assert set(ind.__all__) == {
        "supertrend", "supertrend_2d", "supertrend_state", "supertrend_step",
        "macd", "macd_2d", "macd_state", "macd_step",
    }  # fmt: skip
    assert all(callable(getattr(ind, name)) for name in ind.__all__)
    code = "import sys, tradeflow.indicators; print('vectorbt' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

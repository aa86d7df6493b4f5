"""The strategy: parameters, rules, no look-ahead, and stepper/vectorized parity on real data."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from tradeflow.errors import ParameterError
from tradeflow.indicators import macd, supertrend
from tradeflow.store import CandleStore
from tradeflow.strategy import StrategyParams, Stepper, load_params, signals

PARAM_SETS = {
    "default": StrategyParams(),
    "macd+htf": StrategyParams(macd_confirm=True, htf_minutes=60),
    "stops": StrategyParams(stop_loss=25, target=50, trailing_stop=20, max_trades_per_day=3, cooldown_bars=2),
    "in-trend long, percent": StrategyParams(direction="long", flip_only=False, stop_loss=0.2, target=0.4, stop_mode="percent", min_hold_bars=3),
    "daily loss, 15m": StrategyParams(timeframe=15, max_daily_loss=60, htf_minutes=75, macd_confirm=True, direction="short"),
}


@pytest.fixture(scope="module")
def real_store(nifty_1m, tmp_path_factory) -> CandleStore:
    store = CandleStore(tmp_path_factory.mktemp("real") / "parquet")
    store.upsert(nifty_1m.loc["2024-01-01":"2024-04-30"], "NIFTY", "1m")
    return store


def _candles(store: CandleStore, p: StrategyParams) -> pd.DataFrame:
    return store.candles("NIFTY", f"{p.timeframe}m")


@pytest.mark.parametrize("name", list(PARAM_SETS))
def test_stepper_replays_signals_exactly(real_store, name):
    p = PARAM_SETS[name]
    candles = _candles(real_store, p)
    warm = 300
    ref = signals(candles, p, trade_from=candles.index[warm])
    stepper = Stepper(p).warm_up(candles.iloc[:warm])
    decisions = [stepper.on_bar(row) for _, row in candles.iloc[warm:].iterrows()]
    entry = np.array([d.entry for d in decisions])
    reason = np.array([d.exit_reason for d in decisions], dtype=object)
    want = ref.iloc[warm:]
    assert (want["long_entry"] | want["short_entry"]).sum() > 5, "the parameter set should trade"
    np.testing.assert_array_equal(entry, want["long_entry"].astype(int) - want["short_entry"].astype(int))
    np.testing.assert_array_equal(reason, want["exit_reason"].to_numpy())
    np.testing.assert_array_equal(np.array([d.st_line for d in decisions]), want["st_line"].to_numpy())
    np.testing.assert_array_equal(np.array([d.htf_dir for d in decisions]), want["htf_dir"].to_numpy())


@pytest.mark.parametrize("name", ["default", "macd+htf", "daily loss, 15m"])
def test_no_decision_depends_on_a_later_bar(real_store, name):
    p = PARAM_SETS[name]
    candles = _candles(real_store, p)
    full = signals(candles, p)
    rng = np.random.default_rng(5)
    for cut in rng.integers(200, len(candles) - 1, 6):
        part = signals(candles.iloc[:cut], p)
        pd.testing.assert_frame_equal(part, full.iloc[:cut])


def test_htf_filter_uses_only_closed_bars(real_store):
    p = PARAM_SETS["macd+htf"]
    candles = _candles(real_store, p)
    sig = signals(candles, p)
    # Independent reference: 60m bars from the store, their SuperTrend, known at each bar's end.
    hourly = real_store.candles("NIFTY", "60m")
    _, hdir = supertrend(hourly["high"], hourly["low"], hourly["close"], p.htf_period, p.htf_multiplier)
    local = hourly.index.tz_convert("Asia/Kolkata")
    ends = np.minimum(hourly.index + pd.Timedelta(minutes=60), local.normalize() + pd.Timedelta(hours=15, minutes=30))
    bar_end = candles.index + pd.Timedelta(minutes=p.timeframe)
    k = np.searchsorted(ends.asi8, bar_end.asi8, side="right") - 1
    expected = np.where(k >= 0, hdir[np.clip(k, 0, None)], np.nan)
    np.testing.assert_array_equal(sig["htf_dir"].to_numpy(), expected)
    # at 10:10 (bar 10:10-10:15 excluded) the 09:15 hourly bar is not closed yet; at 10:15's close it is
    day = candles.index.tz_convert("Asia/Kolkata").normalize() == pd.Timestamp("2024-03-05", tz="Asia/Kolkata")
    first_day = sig[day]
    assert first_day["htf_dir"].iloc[0] == expected[np.flatnonzero(day)[0]]
    entries = sig[(sig.long_entry | sig.short_entry)]
    side = np.where(entries.long_entry, 1.0, -1.0)
    np.testing.assert_array_equal(entries["htf_dir"].to_numpy(), side)
    assert (np.sign(entries["macd"] - entries["macd_signal"]).to_numpy() == side).all()


def test_indicator_columns_are_the_kernels(real_store):
    p = StrategyParams(st_period=7, st_multiplier=2.5, macd_fast=8, macd_slow=21, macd_signal=5)
    candles = _candles(real_store, p)
    sig = signals(candles, p)
    line, direction = supertrend(candles["high"], candles["low"], candles["close"], 7, 2.5)
    m, s, _ = macd(candles["close"], 8, 21, 5)
    np.testing.assert_array_equal(sig["st_line"].to_numpy(), line)
    np.testing.assert_array_equal(sig["st_dir"].to_numpy(), direction)
    np.testing.assert_array_equal(sig["macd"].to_numpy(), m)
    np.testing.assert_array_equal(sig["macd_signal"].to_numpy(), s)


def _ist_minutes(index: pd.DatetimeIndex) -> np.ndarray:
    local = index.tz_convert("Asia/Kolkata")
    return (local.hour * 60 + local.minute).to_numpy()


def test_session_rules(real_store):
    p = PARAM_SETS["stops"]
    candles = _candles(real_store, p)
    sig = signals(candles, p)
    end = _ist_minutes(candles.index) + p.timeframe
    entries = sig.long_entry | sig.short_entry
    assert (end[entries.to_numpy()] <= 14 * 60 + 45).all()  # entry cutoff
    # position never held into a bar starting after the square-off fill at 15:15
    start = _ist_minutes(candles.index)
    assert (sig["position"].to_numpy()[start > 15 * 60 + 15] == 0).all()
    assert set(sig.loc[sig.exit, "exit_reason"]) <= {"stop_loss", "target", "trailing_stop", "square_off", "supertrend_reversal"}
    assert (sig.loc[sig.exit_reason == "square_off"].index.tz_convert("Asia/Kolkata").strftime("%H:%M") == "15:10").all()
    per_day = entries.groupby(candles.index.tz_convert("Asia/Kolkata").date).sum()
    assert per_day.max() <= 3
    # cooldown: at least two whole bars flat between an exit fill and the next entry fill
    pos = sig["position"].to_numpy()
    exit_bars = np.flatnonzero(sig.exit.to_numpy())
    entry_bars = np.flatnonzero(entries.to_numpy())
    for x in exit_bars:
        later = entry_bars[entry_bars >= x]
        if len(later):
            assert later[0] - x >= 2
    assert np.abs(pos).max() == 1


def test_stop_and_target_are_judged_on_closes_from_the_entry_open(real_store):
    p = StrategyParams(stop_loss=25, target=50)
    candles = _candles(real_store, p)
    sig = signals(candles, p)
    pos = sig["position"].to_numpy()
    close = candles["close"].to_numpy()
    open_ = candles["open"].to_numpy()
    checked = 0
    for i in np.flatnonzero(sig.exit_reason.isin(["stop_loss", "target"]).to_numpy()):
        j = i
        while j > 0 and pos[j - 1] == pos[i]:
            j -= 1
        entry_ref = open_[j]  # the bar the entry filled on
        move = pos[i] * (close[i] - entry_ref)
        if sig.exit_reason.iloc[i] == "stop_loss":
            assert move <= -25 + 1e-9
        else:
            assert move >= 50 - 1e-9
        checked += 1
    assert checked > 5


def test_flip_only_and_direction(real_store):
    p = StrategyParams(direction="long")
    candles = _candles(real_store, p)
    sig = signals(candles, p)
    assert not sig.short_entry.any() and sig.long_entry.any()
    prev = sig["st_dir"].shift(1)
    assert ((sig.loc[sig.long_entry, "st_dir"] == 1) & (prev[sig.long_entry] == -1)).all()
    in_trend = signals(candles, StrategyParams(direction="long", flip_only=False))
    assert in_trend.long_entry.sum() > sig.long_entry.sum()


def test_max_daily_loss_stops_the_day(real_store):
    p = PARAM_SETS["daily loss, 15m"]
    sig = signals(_candles(real_store, p), p)
    stopped_days = set(sig.index[sig.exit_reason == "daily_loss"].tz_convert("Asia/Kolkata").date)
    assert stopped_days
    local = sig.index.tz_convert("Asia/Kolkata")
    for day in stopped_days:
        after = sig[(local.date == day) & (sig.index > sig.index[(sig.exit_reason == "daily_loss") & (local.date == day)][0])]
        assert not (after.long_entry | after.short_entry).any()


def test_params_from_yaml_and_errors(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("strategy:\n  timeframe: 15\n  square_off: '15:00'\n  entry_cutoff: '14:30'\n  htf_minutes: 75\n")
    p = load_params(f)
    assert p.timeframe == 15 and p.square_off == dt.time(15, 0) and p.htf_minutes == 75
    with pytest.raises(ParameterError, match="did you mean 'stop_loss'"):
        StrategyParams.from_mapping({"stoploss": 20})
    with pytest.raises(ParameterError, match="larger multiple of timeframe"):
        StrategyParams.from_mapping({"timeframe": 15, "htf_minutes": 50})
    with pytest.raises(ParameterError, match="macd_fast"):
        StrategyParams.from_mapping({"macd_fast": 30})


def test_bad_candles_are_refused(real_store):
    p = StrategyParams(timeframe=15)
    with pytest.raises(ParameterError, match="not 15-minute bars"):
        signals(real_store.candles("NIFTY", "5m", "2024-01-02", "2024-01-02"), p)
    candles = real_store.candles("NIFTY", "15m", "2024-01-02", "2024-01-03")
    broken = candles.copy()
    broken.iloc[3, 0] = np.nan
    with pytest.raises(ParameterError, match="NaN"):
        signals(broken, p)
    stepper = Stepper(p)
    stepper.on_bar(candles.iloc[1])
    with pytest.raises(ParameterError, match="time order"):
        stepper.on_bar(candles.iloc[0])


def test_stale_numba_cache_is_flushed_when_indicators_change(real_store):
    """The strategy kernels inline indicator steps; a changed indicators.py must not reuse old code."""
    import tradeflow.indicators as ind
    import tradeflow.strategy as strat
    from tradeflow._numba_cache import guard_cache, source_stamp

    p = StrategyParams()
    Stepper(p).warm_up(real_store.candles("NIFTY", "5m", "2024-01-02", "2024-01-05"))  # compiled and cached
    kernel = strat._bar_step
    cache = kernel._cache
    marker = next(iter(__import__("pathlib").Path(cache.cache_path).glob("tradeflow.strategy._bar_step.deps")))
    assert marker.read_text() == source_stamp(ind)
    assert guard_cache([kernel], [ind]) is False  # unchanged: nothing flushed
    marker.write_text("stamp of an older indicators.py")
    assert guard_cache([kernel], [ind]) is True
    assert cache._cache_file._load_index() == {}  # numba will recompile instead of loading
    assert marker.read_text() == source_stamp(ind)

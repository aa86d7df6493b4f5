"""Tests of the embedded simulated market ``tradeflow.brokers.sim.SimMarket``."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from tradeflow.brokers import sim as sim_module
from tradeflow.brokers.sim import SimMarket
from tradeflow.calendar import calendar_bounds, sessions
from tradeflow.errors import SourceError
from tradeflow.timeframes import Timeframe

IST = "Asia/Kolkata"
FAR_FUTURE = pd.Timestamp("2035-01-01", tz="UTC")  # a fixed `now` so results do not depend on the clock


def ist(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz=IST)


def fetch(seed: int = 42, symbol: str = "NIFTY", start: str = "2024-01-01", end: str = "2024-04-01", now=FAR_FUTURE):
    return SimMarket(seed=seed, now=now).fetch(symbol, Timeframe.parse("1m"), ist(start), ist(end))


@pytest.fixture(scope="module")
def quarter() -> pd.DataFrame:
    """NIFTY 2024-01-01 .. 2024-03-31 with seed 42."""
    return fetch()


def test_same_seed_gives_identical_frames(quarter):
    sim_module._daily_path.cache_clear()  # rebuild the daily walk from scratch
    again = fetch()
    pd.testing.assert_frame_equal(quarter, again)
    assert again.attrs["source"] == quarter.attrs["source"]


def test_different_seed_gives_different_frames(quarter):
    other = fetch(seed=43)
    assert other.index.equals(quarter.index)  # same sessions and minutes
    assert (other["close"].to_numpy() != quarter["close"].to_numpy()).mean() > 0.9
    assert not np.allclose(other["volume"].to_numpy(), quarter["volume"].to_numpy())


def test_symbols_differ_under_one_seed(quarter):
    bank = fetch(symbol="BANKNIFTY")
    assert bank.index.equals(quarter.index)
    r_bank = np.diff(np.log(bank["close"].to_numpy()))
    r_nifty = np.diff(np.log(quarter["close"].to_numpy()))
    assert abs(np.corrcoef(r_bank, r_nifty)[0, 1]) < 0.3  # independent random streams per symbol


def test_sub_range_equals_slice_of_bigger_fetch(quarter):
    lo, hi = ist("2024-02-05 10:07"), ist("2024-02-20 14:00")
    sim_module._daily_path.cache_clear()
    part = SimMarket(seed=42, now=FAR_FUTURE).fetch("NIFTY", "1m", lo, hi)
    expected = quarter[(quarter.index >= lo) & (quarter.index < hi)]
    assert part.index[0] == lo and part.index[-1] == ist("2024-02-20 13:59")
    pd.testing.assert_frame_equal(part, expected)
    # The same window asked with UTC bounds is the same data.
    utc = SimMarket(seed=42, now=FAR_FUTURE).fetch("NIFTY", "1m", lo.tz_convert("UTC"), hi.tz_convert("UTC"))
    pd.testing.assert_frame_equal(utc, expected)
    # A single day on its own equals that day inside the quarter.
    day = fetch(start="2024-03-15", end="2024-03-16")
    pd.testing.assert_frame_equal(day, quarter[quarter.index.date == dt.date(2024, 3, 15)])


def test_range_independent_across_years():
    """Each day comes from a walk anchored at SIM_START, so it does not depend on the range start."""
    long = fetch(start="2019-12-30", end="2020-01-04")
    short = fetch(start="2020-01-02", end="2020-01-04")
    pd.testing.assert_frame_equal(short, long[long.index >= ist("2020-01-02")])


def test_375_bars_per_regular_session(quarter):
    dates = quarter.index.date
    days = sorted(set(dates))
    assert days == sessions("2024-01-01", "2024-03-31")
    assert dt.date(2024, 1, 22) not in days  # special holiday
    assert dt.date(2024, 1, 26) not in days  # Republic Day
    assert all(d.weekday() < 5 for d in days)  # the calendar's regular sessions only (no Sat 2024-01-20)
    expected_minutes = list(range(555, 930))  # 09:15 .. 15:29 bar starts
    minutes = quarter.index.hour * 60 + quarter.index.minute
    for day in days:
        mask = dates == day
        assert mask.sum() == 375
        assert list(minutes[mask]) == expected_minutes
    assert quarter.index.is_unique and quarter.index.is_monotonic_increasing
    assert str(quarter.index.tz) == IST
    assert (quarter.index.second == 0).all()


def test_no_bars_on_holidays_or_weekends():
    assert fetch(start="2024-01-22", end="2024-01-23").empty  # holiday
    assert fetch(start="2024-01-27", end="2024-01-29").empty  # Saturday and Sunday
    assert len(fetch(start="2024-01-27", end="2024-01-30")) == 375  # Monday 29th


def test_prices_on_tick_grid_and_ohlc_consistent(quarter):
    prices = quarter[["open", "high", "low", "close"]].to_numpy()
    ticks = prices / 0.05
    assert np.abs(ticks - np.round(ticks)).max() < 1e-6
    assert (prices > 0).all()
    o, h, l, c = prices.T
    assert (h >= np.maximum(o, c)).all()
    assert (l <= np.minimum(o, c)).all()
    assert (h >= l).all()
    assert not quarter.isna().any().any()
    assert list(quarter.columns) == ["open", "high", "low", "close", "volume"]


def test_consecutive_bars_are_continuous_within_a_day(quarter):
    """Inside a session each bar opens at the previous bar's close (a Brownian bridge, no jumps)."""
    day = quarter[quarter.index.date == dt.date(2024, 2, 1)]
    np.testing.assert_array_equal(day["open"].to_numpy()[1:], day["close"].to_numpy()[:-1])


def test_volume_positive_with_u_shape(quarter):
    vol = quarter["volume"].to_numpy()
    assert (vol > 0).all()
    assert np.array_equal(vol, np.round(vol))
    per_day = vol.reshape(-1, 375)  # full sessions in order (checked above)
    first15 = per_day[:, :15].mean()
    midday = per_day[:, 150:225].mean()  # 11:45 .. 12:59
    last15 = per_day[:, -15:].mean()
    assert first15 > 1.3 * midday
    assert last15 > 1.2 * midday
    # and it holds on most single days, not only on average
    assert (per_day[:, :15].mean(axis=1) > per_day[:, 150:225].mean(axis=1)).mean() > 0.9


def test_now_cutoff_returns_only_closed_bars(quarter):
    start, end = "2024-01-01", "2024-01-04"
    full = quarter[quarter.index < ist(end)]
    for now in [
        ist("2024-01-02 10:00:30"),  # 09:59 bar closed at 10:00
        ist("2024-01-02 10:00:00"),  # exactly at a close
        ist("2024-01-02 09:59:59.999"),  # the 09:59 bar is still open
        ist("2024-01-02 09:15:00"),  # before the first bar of the day closes
        ist("2024-01-02 08:00"),  # before the open
        ist("2024-01-02 23:00"),  # after the close
    ]:
        got = fetch(start=start, end=end, now=now)
        closed = full[full.index + pd.Timedelta(minutes=1) <= now]
        pd.testing.assert_frame_equal(got, closed)
    got = fetch(start=start, end=end, now=ist("2024-01-02 10:00:30"))
    assert got.index[-1] == ist("2024-01-02 09:59")
    assert fetch(start=start, end=end, now=ist("2024-01-02 09:15:59")).index[-1] == ist("2024-01-01 15:29")
    assert fetch(start=start, end=end, now=ist("2023-12-31 12:00")).empty


def test_default_now_is_the_wall_clock():
    today = pd.Timestamp.now(tz=IST)
    got = SimMarket(seed=1).fetch("NIFTY", "1m", today - pd.Timedelta(days=10), today + pd.Timedelta(days=30))
    now = pd.Timestamp.now(tz="UTC")
    assert ((got.index + pd.Timedelta(minutes=1)) <= now).all()
    if today.date() <= calendar_bounds()[1]:
        assert len(got) >= 375  # at least one past session in the last 10 days
        assert got.index[-1] > today - pd.Timedelta(days=10)


def test_unknown_symbol_is_a_source_error():
    market = SimMarket(seed=1, now=FAR_FUTURE)
    with pytest.raises(SourceError, match=r"no symbol 'XYZ'.*NIFTY"):
        market.fetch("XYZ", "1m", ist("2024-01-01"), ist("2024-01-02"))
    assert "NIFTY" in market.symbols() and "BANKNIFTY" in market.symbols()
    assert len(market.fetch("nifty", "1m", ist("2024-01-01"), ist("2024-01-02"))) == 375  # case-insensitive


@pytest.mark.parametrize("timeframe", ["5m", "15m", "1h", "1d"])
def test_non_1m_timeframe_is_a_source_error(timeframe):
    market = SimMarket(seed=1, now=FAR_FUTURE)
    with pytest.raises(SourceError, match=rf"1m bars only, not {timeframe}: fetch 1m"):
        market.fetch("NIFTY", timeframe, ist("2024-01-01"), ist("2024-01-02"))
    assert market.timeframes() == (Timeframe.parse("1m"),)


def test_marked_as_synthetic(quarter):
    assert quarter.attrs["source"] == "sim (synthetic)"
    assert "synthetic" in fetch(start="2024-01-27", end="2024-01-28").attrs["source"]  # empty frame too
    assert SimMarket.synthetic is True and SimMarket.name == "sim"


def test_sim_bars_fit_the_store(store, quarter):
    """What the simulator produces passes the store's validation and reads back unchanged."""
    month = quarter[quarter.index < ist("2024-02-01")]
    res = store.upsert(month, "NIFTY", "1m")
    assert res.inserted == len(month)
    got = store.candles("NIFTY", "1m")
    pd.testing.assert_frame_equal(got, month, check_freq=False, check_names=False)

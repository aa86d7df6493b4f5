"""Gap and data-quality report against the NSE calendar."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from tradeflow.brokers.sim import SimMarket
from tradeflow.quality import check_candles
from tradeflow.timeframes import ONE_MINUTE


def _day(day: str, minutes: int = 1) -> pd.DataFrame:
    idx = pd.date_range(f"{day} 09:15", f"{day} 15:29", freq=f"{minutes}min", tz="Asia/Kolkata", name="ts")
    price = 100 + np.arange(len(idx)) * 0.05
    return pd.DataFrame({"open": price, "high": price + 1, "low": price - 1, "close": price + 0.5, "volume": 10.0}, index=idx)


def test_clean_sessions_are_ok():
    frame = pd.concat([_day("2024-01-02"), _day("2024-01-03")])
    report = check_candles(frame, "1m")
    assert report.ok, str(report)
    assert report.expected_sessions == 2 and report.bars == 750


def test_missing_session_and_missing_bars():
    # 2024-01-03 absent entirely; 2024-01-04 lacks 10:00-10:04 and 15:29.
    day4 = _day("2024-01-04")
    day4 = day4.drop(pd.date_range("2024-01-04 10:00", periods=5, freq="min", tz="Asia/Kolkata"))
    day4 = day4.drop(pd.Timestamp("2024-01-04 15:29", tz="Asia/Kolkata"))
    report = check_candles(pd.concat([_day("2024-01-02"), day4]), "1m")
    assert report.missing_sessions == [dt.date(2024, 1, 3)]
    runs = report.missing_bars
    assert runs["bars"].tolist() == [5, 1]
    assert runs["first"].iloc[0] == pd.Timestamp("2024-01-04 10:00", tz="Asia/Kolkata")
    assert runs["last"].iloc[0] == pd.Timestamp("2024-01-04 10:04", tz="Asia/Kolkata")
    assert not report.ok


def test_holidays_and_weekends_are_not_missing():
    # 2024-01-22 was a market holiday; 2024-01-20/21 a weekend (the 20th a special session, not in the calendar).
    frame = pd.concat([_day("2024-01-19"), _day("2024-01-23")])
    report = check_candles(frame, "1m")
    assert report.missing_sessions == [] and report.ok


def test_special_session_is_data_and_stray_bars_are_reported():
    saturday = _day("2024-01-20")
    stray = pd.DataFrame(
        {"open": 100.0, "high": 101.0, "low": 99.0, "close": 100.0, "volume": 1.0},
        index=pd.date_range("2024-01-20 15:30", periods=3, freq="min", tz="Asia/Kolkata", name="ts"),
    )
    report = check_candles(pd.concat([_day("2024-01-19"), saturday, stray]), "1m")
    assert report.special_sessions == [dt.date(2024, 1, 20)]
    assert len(report.outside_hours) == 3
    assert report.missing_bars.empty


def test_muhurat_evening_session_is_not_an_error():
    muhurat = pd.DataFrame(
        {"open": 100.0, "high": 101.0, "low": 99.0, "close": 100.0, "volume": 1.0},
        index=pd.date_range("2023-11-12 18:15", periods=60, freq="min", tz="Asia/Kolkata", name="ts"),
    )
    report = check_candles(pd.concat([_day("2023-11-10"), muhurat, _day("2023-11-13")]), "1m")
    assert report.special_sessions == [dt.date(2023, 11, 12)]
    assert report.outside_hours.empty and report.ok


def test_outside_hours_on_a_regular_day():
    frame = _day("2024-01-02")
    pre = frame.iloc[:1].copy()
    pre.index = pd.DatetimeIndex([pd.Timestamp("2024-01-02 09:08", tz="Asia/Kolkata")], name="ts")
    report = check_candles(pd.concat([pre, frame]), "1m")
    assert report.outside_hours["ts"].tolist() == [pd.Timestamp("2024-01-02 09:08", tz="Asia/Kolkata")]


def test_duplicates_and_non_monotonic_in_stored_order():
    frame = _day("2024-01-02")
    shuffled = pd.concat([frame.iloc[:10], frame.iloc[[5]], frame.iloc[10:]])
    report = check_candles(shuffled, "1m")
    assert report.duplicates["ts"].tolist() == [frame.index[5]]
    assert report.non_monotonic["ts"].tolist() == [frame.index[5]]
    assert report.non_monotonic["previous"].tolist() == [frame.index[9]]


def test_ohlc_inconsistencies_named():
    frame = _day("2024-01-02")
    frame.iloc[3, frame.columns.get_loc("high")] = frame["close"].iloc[3] - 0.1  # high below close
    frame.iloc[7, frame.columns.get_loc("low")] = frame["open"].iloc[7] + 0.1  # low above open
    report = check_candles(frame, "1m")
    problems = dict(zip(report.ohlc_inconsistent["ts"], report.ohlc_inconsistent["problem"]))
    assert problems == {frame.index[3]: "high below open/close", frame.index[7]: "low above open/close"}


def test_store_gaps_on_real_nifty(nifty_1m, store, real_dir):
    from tradeflow.csvimport import import_csv

    import_csv(real_dir / "intraday" / "NIFTY50_1min_2024-01-01_2024-08-23.csv", "NIFTY", "1m", store=store)
    report = store.gaps("NIFTY", "1m", "2024-01-01", "2024-03-31")
    # The MANIFEST's facts: the Saturday 2024-01-20 session and the DR session of 2024-03-02 are special,
    # and on 2024-01-20 the file carries 167 stray bars from 15:30 to 18:16.
    assert dt.date(2024, 1, 20) in report.special_sessions and dt.date(2024, 3, 2) in report.special_sessions
    assert len(report.outside_hours) == 167
    assert report.outside_hours["ts"].min() == pd.Timestamp("2024-01-20 15:30", tz="Asia/Kolkata")
    assert report.duplicates.empty and report.non_monotonic.empty and report.ohlc_inconsistent.empty
    # 15m built from 1m: the same sessions, and 12 stray 15m buckets after 15:30 on the 20th.
    built = store.gaps("NIFTY", "15m", "2024-01-01", "2024-03-31")
    assert built.missing_sessions == report.missing_sessions
    assert len(built.outside_hours) == 12


def test_sim_data_has_no_gaps(store):
    frame = SimMarket(seed=3).fetch("SBIN", ONE_MINUTE, pd.Timestamp("2024-06-01", tz="UTC"), pd.Timestamp("2024-07-01", tz="UTC"))
    store.upsert(frame, "SBIN", "1m")
    for tf in ("1m", "15m", "1h", "1d"):
        report = store.gaps("SBIN", tf, "2024-06-01", "2024-06-30")
        assert report.ok, f"{tf}: {report}"
        assert report.expected_sessions == 19  # June 2024: 20 weekdays less the 17th (Bakri Id)

"""Tests of ``tradeflow.store.CandleStore`` against real NSE bars and hand-computed results.

Expected values are derived independently of the store: resampled bars come from a plain
Python loop over the raw 1-minute rows, and the literal prices below were read by hand from
``intraday/NIFTY50_1min_2024-01-01_2024-08-23.csv`` and ``daily_indices/NIFTY50_daily_*_dhan.csv``.
"""

from __future__ import annotations

import datetime as dt
import glob
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import tradeflow
from tradeflow.errors import DataValidationError, StoreError
from tradeflow.store import CandleStore, Coverage

IST = "Asia/Kolkata"
SRC = Path(tradeflow.__file__).resolve().parents[1]  # children import the same tradeflow as the tests
D1, D2 = dt.date(2024, 1, 1), dt.date(2024, 1, 2)  # consecutive regular sessions (Mon, Tue)
DR_DAY = dt.date(2024, 3, 2)  # Saturday DR drill: 09:15-09:59 and 11:30-12:29 only


# ---------------------------------------------------------------------- helpers


def with_volume(frame: pd.DataFrame) -> pd.DataFrame:
    """Copy of real bars (which have no volume) with volume = minute of the session + 1 (1..375)."""
    out = frame.copy()
    minute = out.index.hour * 60 + out.index.minute
    out["volume"] = (np.asarray(minute) - 555 + 1).astype("float64")
    return out


def days_of(frame: pd.DataFrame, *days: dt.date) -> pd.DataFrame:
    return frame[np.isin(frame.index.date, list(days))]


def ist(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz=IST)


def hand_bars(frame: pd.DataFrame, minutes: int | None) -> pd.DataFrame:
    """Resample 1m rows with a plain loop: bucket (date, (minute_of_day - 555) // minutes).

    ``minutes=None`` means one bar per IST date, labelled at midnight.
    """
    bars: dict[tuple, list] = {}
    order: list[tuple] = []
    rows = zip(frame.index, frame["open"], frame["high"], frame["low"], frame["close"], frame["volume"])
    for ts, o, h, l, c, v in rows:
        local = ts.tz_convert(IST)
        day = local.date()
        if minutes is None:
            key = (day, -1)
            label = pd.Timestamp(dt.datetime.combine(day, dt.time(0, 0))).tz_localize(IST)
        else:
            mod = local.hour * 60 + local.minute
            slot = (mod - 555) // minutes
            start = 555 + slot * minutes
            key = (day, slot)
            label = pd.Timestamp(dt.datetime.combine(day, dt.time(start // 60, start % 60))).tz_localize(IST)
        if key not in bars:
            bars[key] = [label, o, h, l, c, v]
            order.append(key)
        else:
            bar = bars[key]
            bar[2] = max(bar[2], h)
            bar[3] = min(bar[3], l)
            bar[4] = c
            bar[5] += v
    labels = [bars[k][0] for k in order]
    data = [bars[k][1:] for k in order]
    out = pd.DataFrame(data, columns=["open", "high", "low", "close", "volume"], index=pd.DatetimeIndex(labels))
    return out.sort_index()


def synthetic_days(days, base: float = 100.0, step: float = 0.05) -> pd.DataFrame:
    """Full 375-bar sessions on the given dates with a known price ramp (valid OHLC)."""
    idx = []
    for d in days:
        start = pd.Timestamp(d).tz_localize(IST)
        idx.extend(start + pd.to_timedelta(np.arange(555, 930), unit="min"))
    idx = pd.DatetimeIndex(idx, name="ts")
    close = np.round(base + np.arange(len(idx)) * step, 2)
    return pd.DataFrame(
        {"open": close, "high": close + 1.0, "low": close - 1.0, "close": close, "volume": np.full(len(idx), 10.0)},
        index=idx,
    )


def snapshot(folder: Path) -> dict[str, bytes | str]:
    """Every directory and file under ``folder`` with the file bytes."""
    out: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), folder)] = "<dir>"
        for f in filenames:
            path = os.path.join(dirpath, f)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, folder)] = fh.read()
    return out


def partition_files(store: CandleStore, symbol: str, tf: str = "1m") -> list[Path]:
    return sorted((store.root / "candles" / f"timeframe={tf}" / f"symbol={symbol}").glob("year=*/data.parquet"))


def read_partition(path: Path) -> pd.DataFrame:
    """A partition file read with pyarrow (independent of the store), keyed by epoch microseconds."""
    table = pq.read_table(path)
    df = table.to_pandas()
    df.index = pd.DatetimeIndex(df["ts"]).as_unit("us").asi8
    return df[["open", "high", "low", "close", "volume"]]


def frame_by_us(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame[["open", "high", "low", "close", "volume"]].copy()
    out.index = frame.index.tz_convert("UTC").as_unit("us").asi8
    return out


# ---------------------------------------------------------------------- upsert


def test_upsert_twice_is_idempotent(store, nifty_1m):
    frame = with_volume(days_of(nifty_1m, D1, D2))
    assert len(frame) == 750

    first = store.upsert(frame, "NIFTY", "1m")
    assert (first.inserted, first.updated, first.partitions) == (750, 0, 1)
    before = store.candles("NIFTY", "1m")

    second = store.upsert(frame, "NIFTY", "1m")
    assert second.inserted == 0
    assert second.updated == 750
    after = store.candles("NIFTY", "1m")
    pd.testing.assert_frame_equal(before, after)

    raw = store.raw("NIFTY", "1m")
    assert len(raw) == 750
    assert raw.index.is_unique
    # The stored values are the input values (independent of the store's own read path).
    stored = pd.concat(read_partition(p) for p in partition_files(store, "NIFTY")).sort_index()
    expected = frame_by_us(frame).sort_index()
    np.testing.assert_array_equal(stored.index, expected.index)
    np.testing.assert_array_equal(stored.to_numpy(), expected.to_numpy())


def test_overlapping_upsert_newest_values_win(store, nifty_1m):
    a = with_volume(days_of(nifty_1m, D1, D2))  # 750 bars
    # B: the second half of A plus the next session, every price lifted by 1000 and volume 7.
    b_days = with_volume(days_of(nifty_1m, D2, dt.date(2024, 1, 3)))
    b = b_days.copy()
    b[["open", "high", "low", "close"]] += 1000.0
    b["volume"] = 7.0
    overlap = a.index.intersection(b.index)
    assert len(overlap) == 375 and len(b) == 750

    store.upsert(a, "NIFTY", "1m")
    res = store.upsert(b, "NIFTY", "1m")
    assert (res.inserted, res.updated) == (375, 375)

    got = store.candles("NIFTY", "1m")
    assert got.index.is_unique and got.index.is_monotonic_increasing
    assert len(got) == len(a.index.union(b.index)) == 1125
    cols = ["open", "high", "low", "close", "volume"]
    pd.testing.assert_frame_equal(got.loc[overlap, cols], b.loc[overlap, cols], check_names=False, check_freq=False)
    only_a = a.index.difference(b.index)
    pd.testing.assert_frame_equal(got.loc[only_a, cols], a.loc[only_a, cols], check_names=False, check_freq=False)
    only_b = b.index.difference(a.index)
    pd.testing.assert_frame_equal(got.loc[only_b, cols], b.loc[only_b, cols], check_names=False, check_freq=False)
    # A concrete bar: D2 09:15 close was 21720.05 in the CSV; B lifted it by 1000.
    assert got.loc[ist("2024-01-02 09:15"), "close"] == pytest.approx(22720.05)
    assert got.loc[ist("2024-01-01 09:15"), "open"] == 21727.75
    assert store.raw("NIFTY", "1m").index.is_unique


# ---------------------------------------------------------------------- resampling


@pytest.mark.parametrize(
    "tf, minutes",
    [("5m", 5), ("15m", 15), ("1h", 60), ("60m", 60), ("75m", 75), ("7m", 7), ("125m", 125), ("375m", 375), ("1d", None)],
)
def test_resample_equals_hand_loop(store, nifty_1m, tf, minutes):
    frame = with_volume(days_of(nifty_1m, D1, D2, DR_DAY))
    store.upsert(frame, "NIFTY", "1m")
    got = store.candles("NIFTY", tf, D1, DR_DAY)
    want = hand_bars(frame, minutes)
    assert len(got) == len(want)
    np.testing.assert_array_equal(got.index.asi8, want.index.asi8)
    np.testing.assert_array_equal(got[["open", "high", "low", "close", "volume"]].to_numpy(), want.to_numpy())


def _labels(day: dt.date, times: list[str]) -> list[pd.Timestamp]:
    return [ist(f"{day} {t}") for t in times]


def test_bucket_starts_align_to_0915(store, nifty_1m):
    frame = with_volume(days_of(nifty_1m, D1, D2))
    store.upsert(frame, "NIFTY", "1m")

    m15 = store.candles("NIFTY", "15m", D1, D1)
    expected_15 = [f"{(555 + 15 * k) // 60:02d}:{(555 + 15 * k) % 60:02d}" for k in range(25)]
    assert expected_15[0] == "09:15" and expected_15[1] == "09:30" and expected_15[-1] == "15:15"
    assert list(m15.index) == _labels(D1, expected_15)

    hourly = store.candles("NIFTY", "1h", D1, D1)
    assert list(hourly.index) == _labels(D1, ["09:15", "10:15", "11:15", "12:15", "13:15", "14:15", "15:15"])
    # The last hourly bar is short: 15:15-15:29 only (15 one-minute bars, volume 361..375).
    last = hourly.iloc[-1]
    assert last["volume"] == sum(range(361, 376)) == 5520
    assert hourly.iloc[0]["volume"] == sum(range(1, 61))

    m75 = store.candles("NIFTY", "75m", D1, D1)
    assert list(m75.index) == _labels(D1, ["09:15", "10:30", "11:45", "13:00", "14:15"])
    assert (m75["volume"].to_numpy() == [sum(range(1 + 75 * k, 76 + 75 * k)) for k in range(5)]).all()

    daily = store.candles("NIFTY", "1d", D1, D2)
    assert list(daily.index) == [ist("2024-01-01 00:00"), ist("2024-01-02 00:00")]
    assert (daily["volume"] == 375 * 376 / 2).all()


def test_real_nifty_numbers_for_2024_01_01(store, nifty_1m, real_dir):
    """Numbers read by hand from the CSV rows of 2024-01-01 (and Dhan's official daily bar)."""
    store.upsert(with_volume(days_of(nifty_1m, D1, D2)), "NIFTY", "1m")

    first15 = store.candles("NIFTY", "15m", D1, D1).loc[ist("2024-01-01 09:15")]
    # rows 09:15..09:29: open of 09:15, max high 21737.35 (09:15), min low 21684.75 (09:21), close of 09:29
    assert (first15["open"], first15["high"], first15["low"], first15["close"]) == (21727.75, 21737.35, 21684.75, 21700.80)

    second15 = store.candles("NIFTY", "15m", D1, D1).loc[ist("2024-01-01 09:30")]
    assert second15["open"] == 21700.15  # the 09:30 row's open

    last_hour = store.candles("NIFTY", "1h", D1, D1).loc[ist("2024-01-01 15:15")]
    # rows 15:15..15:29: open 21725.95, high 21736.25 (15:16), low 21680.85 (15:24), close 21689.45 (15:29)
    assert (last_hour["open"], last_hour["high"], last_hour["low"], last_hour["close"]) == (
        21725.95, 21736.25, 21680.85, 21689.45,
    )

    day = store.candles("NIFTY", "1d", D1, D1)
    assert list(day.index) == [ist("2024-01-01 00:00")]
    bar = day.iloc[0]
    assert (bar["open"], bar["close"]) == (21727.75, 21689.45)  # 09:15 open, 15:29 close
    # High and low agree with Dhan's official daily bar for the session (an independent source):
    # "2023-12-31 18:30:00,21727.75,21834.35,21680.85,21741.9,..."
    assert (bar["high"], bar["low"]) == (21834.35, 21680.85)
    dhan = pd.read_csv(real_dir / "daily_indices" / "NIFTY50_daily_2023-01-02_2026-07-16_dhan.csv")
    row = dhan[dhan["timestamp"] == "2023-12-31 18:30:00"].iloc[0]
    assert (row["high"], row["low"]) == (bar["high"], bar["low"])


@pytest.mark.parametrize("tf, minutes", [("75m", 75), ("1h", 60), ("7m", 7), ("100m", 100), ("375m", 375), ("1d", None)])
def test_bars_never_span_two_sessions(store, nifty_1m, tf, minutes):
    # Two consecutive sessions and a weekend gap (Fri 2024-01-05 -> Mon 2024-01-08).
    days = [D1, D2, dt.date(2024, 1, 5), dt.date(2024, 1, 8)]
    frame = with_volume(days_of(nifty_1m, *days))
    frame["volume"] = frame["volume"] * (1 + np.searchsorted(days, frame.index.date))  # distinct per day
    store.upsert(frame, "NIFTY", "1m")
    got = store.candles("NIFTY", tf, days[0], days[-1])

    bar_dates = got.index.date
    assert sorted(set(bar_dates)) == days
    for i, day in enumerate(days):
        rows = frame[frame.index.date == day]
        bars = got[bar_dates == day]
        # every bar of the day lies inside that day's session, and the day's bars hold exactly its minutes
        if minutes is not None:
            assert bars.index.min() == ist(f"{day} 09:15")
            assert bars.index.max() <= ist(f"{day} 15:29")
            assert len(bars) == math.ceil(375 / minutes)
        assert bars["volume"].sum() == rows["volume"].sum() == (i + 1) * 375 * 376 / 2
        assert bars.iloc[0]["open"] == rows.iloc[0]["open"]
        assert bars.iloc[-1]["close"] == rows.iloc[-1]["close"]
        assert bars["high"].max() == rows["high"].max()
        assert bars["low"].min() == rows["low"].min()


def _dhan_daily(real_dir: Path) -> pd.DataFrame:
    raw = pd.read_csv(real_dir / "daily_indices" / "NIFTY50_daily_2023-01-02_2026-07-16_dhan.csv")
    idx = pd.DatetimeIndex(pd.to_datetime(raw["timestamp"]).dt.tz_localize("UTC"), name="ts")
    return raw[["open", "high", "low", "close", "volume"]].set_index(idx)


def test_stored_daily_bars_win_over_1m_session_by_session(store, nifty_1m, real_dir):
    store.upsert(with_volume(days_of(nifty_1m, D1, D2)), "NIFTY", "1m")
    dhan = _dhan_daily(real_dir)
    d1_official = dhan.loc[[pd.Timestamp("2023-12-31 18:30", tz="UTC")]]  # UTC instant of 2024-01-01 00:00 IST
    assert d1_official.index.tz_convert(IST)[0] == ist("2024-01-01 00:00")
    store.upsert(d1_official, "NIFTY", "1d")
    assert store.timeframes("NIFTY") == ["1d", "1m"]

    got = store.candles("NIFTY", "1d", D1, D2)
    assert list(got.index) == [ist("2024-01-01 00:00"), ist("2024-01-02 00:00")]
    # D1: Dhan's official bar (close 21741.9 is the official close, not the 15:29 bar's 21689.45)
    assert got.loc[ist("2024-01-01"), ["open", "high", "low", "close", "volume"]].tolist() == [
        21727.75, 21834.35, 21680.85, 21741.9, 153995217.0,
    ]
    # D2: built from 1m: open of 09:15 (21751.35), close of 15:29 (21661.50), not Dhan's 21665.8
    d2 = got.loc[ist("2024-01-02")]
    assert (d2["open"], d2["close"], d2["volume"]) == (21751.35, 21661.50, 375 * 376 / 2)

    # Storing D2's official bar later switches D2 too, and leaves the 1m bars alone.
    store.upsert(dhan.loc[[pd.Timestamp("2024-01-01 18:30", tz="UTC")]], "NIFTY", "1d")
    got = store.candles("NIFTY", "1d", D1, D2)
    assert got["close"].tolist() == [21741.9, 21665.8]
    assert len(store.candles("NIFTY", "1m", D1, D2)) == 750


def test_stored_intraday_timeframe_wins_for_its_sessions(store, nifty_1m):
    frame = with_volume(days_of(nifty_1m, D1, D2))
    store.upsert(frame, "NIFTY", "1m")
    imported = hand_bars(frame[frame.index.date == D1], 15)
    imported[["open", "high", "low", "close"]] += 0.5  # distinguishable from the 1m-derived bars
    store.upsert(imported, "NIFTY", "15m")
    got = store.candles("NIFTY", "15m", D1, D2)
    assert len(got) == 50 and got.index.is_unique
    np.testing.assert_array_equal(got.loc[got.index.date == D1, "close"].to_numpy(), imported["close"].to_numpy())
    derived = hand_bars(frame[frame.index.date == D2], 15)
    np.testing.assert_array_equal(got.loc[got.index.date == D2, "close"].to_numpy(), derived["close"].to_numpy())


# ---------------------------------------------------------------------- frame contract


@pytest.mark.parametrize("tf", ["1m", "15m", "1h", "1d"])
def test_returned_frame_contract(store, nifty_1m, tf):
    store.upsert(with_volume(days_of(nifty_1m, D1, D2)), "NIFTY", "1m")
    for got in (store.candles("NIFTY", tf), store.candles("NIFTY", tf, "2030-01-01", "2030-01-31")):
        assert isinstance(got.index, pd.DatetimeIndex)
        assert str(got.index.tz) == IST
        assert list(got.columns) == ["open", "high", "low", "close", "volume"]
        assert (got.dtypes == "float64").all()
        assert got.index.is_unique and got.index.is_monotonic_increasing
    assert len(store.candles("NIFTY", tf)) > 0


def test_upsert_accepts_ts_column_and_utc_index(store, nifty_1m):
    frame = with_volume(days_of(nifty_1m, D1))
    utc = frame.tz_convert("UTC")
    as_column = frame.reset_index()  # 'ts' column, IST
    store.upsert(utc, "NIFTY", "1m")
    res = store.upsert(as_column, "NIFTY", "1m")
    assert (res.inserted, res.updated) == (0, 375)
    got = store.candles("NIFTY", "1m")
    assert got.index[0] == ist("2024-01-01 09:15")
    assert got.iloc[0]["open"] == 21727.75


_TZ_CHILD = r"""
import json, sys, time
import pandas as pd
from tradeflow.store import CandleStore
out = {"tzname": list(time.tzname), "local_offset": time.localtime(1704080700).tm_gmtoff, "bars": {}}
s = CandleStore(sys.argv[1])
for tf in ("1m", "15m", "75m", "1d"):
    c = s.candles("NIFTY", tf, "2024-01-01", "2024-01-02")
    out["bars"][tf] = [[t.isoformat()] + [float(x) for x in row] for t, row in zip(c.index, c.to_numpy())]
# also write from this machine's zone into a second store
CandleStore(sys.argv[2]).upsert(pd.read_pickle(sys.argv[3]), "NIFTY", "1m")
print(json.dumps(out))
"""


def test_other_machine_time_zone_gives_same_answer(store, nifty_1m, tmp_path):
    frame = with_volume(days_of(nifty_1m, D1, D2))
    store.upsert(frame, "NIFTY", "1m")
    pickled = tmp_path / "frame.pkl"
    frame.to_pickle(pickled)
    other = tmp_path / "written_in_new_york"
    env = dict(os.environ, TZ="America/New_York", PYTHONPATH=str(SRC))
    proc = subprocess.run(
        [sys.executable, "-c", _TZ_CHILD, str(store.root), str(other), str(pickled)],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["local_offset"] == -5 * 3600  # the child really ran in New York time (EST in January)
    assert "EST" in out["tzname"]
    for tf, rows in out["bars"].items():
        here = store.candles("NIFTY", tf, "2024-01-01", "2024-01-02")
        assert [r[0] for r in rows] == [t.isoformat() for t in here.index], tf
        np.testing.assert_array_equal(np.array([r[1:] for r in rows]), here.to_numpy())
    assert out["bars"]["15m"][0][0] == "2024-01-01T09:15:00+05:30"
    assert out["bars"]["1d"][0][0] == "2024-01-01T00:00:00+05:30"
    # What the New York process wrote reads back identically here.
    pd.testing.assert_frame_equal(CandleStore(other).candles("NIFTY", "15m"), store.candles("NIFTY", "15m"))
    written = pd.concat(read_partition(p) for p in partition_files(CandleStore(other), "NIFTY"))
    np.testing.assert_array_equal(written.index, frame_by_us(frame).index)


# ---------------------------------------------------------------------- validation


def _bad_frames(good: pd.DataFrame):
    naive = good.tz_localize(None)
    missing = good.drop(columns=["low"])
    nan = good.copy()
    nan.loc[ist("2024-01-01 09:17"), "close"] = np.nan
    negative = good.copy()
    negative.loc[ist("2024-01-01 09:18"), "low"] = -5.0
    zero = good.copy()
    zero.loc[ist("2024-01-01 09:19"), "open"] = 0.0
    inverted = good.copy()
    inverted.loc[ist("2024-01-01 09:20"), ["high", "low"]] = [21600.0, 21700.0]
    duplicate = pd.concat([good, good.iloc[[3]]])
    misaligned = good.copy()
    misaligned.index = misaligned.index.where(misaligned.index != ist("2024-01-01 09:16"), ist("2024-01-01 09:16:30"))
    neg_volume = good.copy()
    neg_volume.loc[ist("2024-01-01 09:21"), "volume"] = -1.0
    text = good.astype({"close": object})
    text.loc[ist("2024-01-01 09:22"), "close"] = "abc"
    return {
        "naive index": (naive, "1m", r"no time zone"),
        "missing column": (missing, "1m", r"lack column\(s\) low"),
        "NaN price": (nan, "1m", r"close is missing \(NaN\).* at 2024-01-01 09:17:00\+05:30"),
        "negative price": (negative, "1m", r"low is zero or negative at 2024-01-01 09:18:00\+05:30"),
        "zero price": (zero, "1m", r"open is zero or negative at 2024-01-01 09:19:00\+05:30"),
        "high below low": (inverted, "1m", r"high is below low at 2024-01-01 09:20:00\+05:30"),
        "duplicate ts": (duplicate, "1m", r"duplicate bar start at 2024-01-01 09:18:00\+05:30; keep one row per bar"),
        "misaligned 09:16:30": (misaligned, "1m", r"not on the 1m grid .* at 2024-01-01 09:16:30\+05:30"),
        "15m bars at 09:16": (good.iloc[:5], "15m", r"not on the 15m grid .* at 2024-01-01 09:16:00\+05:30"),
        "negative volume": (neg_volume, "1m", r"volume is negative at 2024-01-01 09:21:00\+05:30"),
        "non-numeric": (text, "1m", r"must be numeric"),
        "not a frame": (good["close"], "1m", r"expected a pandas DataFrame"),
    }


_BAD_CASES = [
    "naive index", "missing column", "NaN price", "negative price", "zero price", "high below low",
    "duplicate ts", "misaligned 09:16:30", "15m bars at 09:16", "negative volume", "non-numeric", "not a frame",
]


@pytest.mark.parametrize("case", _BAD_CASES)
def test_bad_frame_is_refused_and_store_unchanged(store, nifty_1m, tmp_path, case):
    good = with_volume(days_of(nifty_1m, D1))
    store.upsert(good, "NIFTY", "1m")
    bad, tf, pattern = _bad_frames(good.iloc[:30])[case]
    before = snapshot(tmp_path)
    with pytest.raises(DataValidationError, match=pattern) as info:
        store.upsert(bad, "NIFTY", tf)
    assert isinstance(info.value, StoreError)
    assert snapshot(tmp_path) == before
    assert len(store.candles("NIFTY", "1m")) == 375


def test_validation_lists_every_problem(store, nifty_1m):
    bad = with_volume(days_of(nifty_1m, D1)).iloc[:20].copy()
    bad.loc[ist("2024-01-01 09:15"), "close"] = np.nan
    bad.loc[ist("2024-01-01 09:16"), ["high", "low"]] = [1.0, 2.0]
    with pytest.raises(DataValidationError) as info:
        store.upsert(bad, "NIFTY", "1m")
    assert len(info.value.problems) == 2
    assert any("close is missing" in p for p in info.value.problems)
    assert any("high is below low" in p for p in info.value.problems)


@pytest.mark.parametrize(
    "symbol, timeframe, pattern",
    [
        ("NIF TY", "1m", r"invalid symbol 'NIF TY'"),
        ("../x", "1m", r"invalid symbol '\.\./x'"),
        ("a/b", "1m", r"invalid symbol 'a/b'"),
        ("", "1m", r"invalid symbol ''"),
        ("NIFTY", "7s", r"unknown timeframe '7s'"),
        ("NIFTY", "2d", r"timeframe '2d': only '1d'"),
        ("NIFTY", "400m", r"intraday bars must be 1 to 375 minutes"),
        ("NIFTY", "0m", r"intraday bars must be 1 to 375 minutes"),
    ],
)
def test_bad_symbol_or_timeframe_is_refused(store, nifty_1m, tmp_path, symbol, timeframe, pattern):
    good = with_volume(days_of(nifty_1m, D1))
    store.upsert(good, "NIFTY", "1m")
    before = snapshot(tmp_path)
    with pytest.raises(StoreError, match=pattern):
        store.upsert(good, symbol, timeframe)
    with pytest.raises(StoreError, match=pattern):
        store.candles(symbol, timeframe)
    assert snapshot(tmp_path) == before
    assert not (tmp_path / "x").exists() and not (tmp_path.parent / "X").exists()


def test_lowercase_symbol_is_normalized(store, nifty_1m):
    store.upsert(with_volume(days_of(nifty_1m, D1)), "nifty", "1m")
    assert store.symbols() == ["NIFTY"]
    assert len(store.candles("Nifty", "15m")) == 25


# ---------------------------------------------------------------------- partition pruning


def _corrupt(path: Path) -> None:
    path.write_bytes(b"this is not parquet " * 64)


def test_query_reads_only_its_symbol(store):
    days = ["2023-06-01", "2023-06-02", "2024-03-04", "2024-03-05"]
    for i, sym in enumerate(["AAA", "BBB", "CCC", "M&M"]):
        store.upsert(synthetic_days(days, base=100.0 * (i + 1)), sym, "1m")
    before_1m = store.candles("AAA", "1m")
    before_15m = store.candles("AAA", "15m", "2023-06-01", "2024-12-31")
    assert len(before_1m) == 4 * 375 and len(before_15m) == 4 * 25

    corrupted = partition_files(store, "BBB") + partition_files(store, "M&M")
    assert len(corrupted) == 4  # 2023 and 2024 of each
    for path in corrupted:
        _corrupt(path)

    pd.testing.assert_frame_equal(store.candles("AAA", "1m"), before_1m)
    pd.testing.assert_frame_equal(store.candles("AAA", "15m", "2023-06-01", "2024-12-31"), before_15m)
    assert store.candles("CCC", "1d").iloc[0]["open"] == 300.0
    # The corruption is real: reading the damaged symbol fails.
    for sym in ("BBB", "M&M"):
        with pytest.raises(StoreError):
            store.candles(sym, "1m")


def test_query_reads_only_its_timeframe(store):
    store.upsert(synthetic_days(["2024-03-04", "2024-03-05"]), "AAA", "1m")
    daily = pd.DataFrame(
        {"open": [1.0], "high": [2.0], "low": [0.5], "close": [1.5]}, index=pd.DatetimeIndex([ist("2024-03-04")])
    )
    store.upsert(daily, "AAA", "1d")
    before = store.candles("AAA", "15m")
    (path,) = partition_files(store, "AAA", "1d")
    _corrupt(path)
    pd.testing.assert_frame_equal(store.candles("AAA", "15m"), before)
    with pytest.raises(StoreError):
        store.candles("AAA", "1d")


def test_query_reads_only_its_years(store):
    store.upsert(synthetic_days(["2023-06-01", "2024-03-04", "2024-03-05"]), "AAA", "1m")
    before_1m = store.candles("AAA", "1m", "2024-03-01", "2024-03-31")
    before_75m = store.candles("AAA", "75m", "2024-03-01", "2024-03-31")
    assert len(before_1m) == 750 and len(before_75m) == 10
    (p2023,) = [p for p in partition_files(store, "AAA") if p.parent.name == "year=2023"]
    _corrupt(p2023)
    pd.testing.assert_frame_equal(store.candles("AAA", "1m", "2024-03-01", "2024-03-31"), before_1m)
    pd.testing.assert_frame_equal(store.candles("AAA", "75m", "2024-03-01", "2024-03-31"), before_75m)
    with pytest.raises(StoreError):
        store.candles("AAA", "1m", "2023-06-01", "2023-06-30")


def test_derived_query_from_january_first_skips_previous_year(store):
    store.upsert(synthetic_days(["2023-12-29", "2024-01-01", "2024-01-02"]), "AAA", "1m")
    (p2023,) = [p for p in partition_files(store, "AAA") if p.parent.name == "year=2023"]
    _corrupt(p2023)
    assert len(store.candles("AAA", "1m", "2024-01-01", "2024-01-31")) == 750  # exact timeframe: fine
    assert len(store.candles("AAA", "15m", "2024-01-01", "2024-01-31")) == 50  # derived: reads 2023


def test_corrupt_partition_raises_store_error(store):
    store.upsert(synthetic_days(["2024-03-04"]), "AAA", "1m")
    _corrupt(partition_files(store, "AAA")[0])
    with pytest.raises(StoreError):
        store.candles("AAA", "1m")


# ---------------------------------------------------------------------- crash safety


_CRASH_CHILD = r"""
import sys
import pandas as pd
from tradeflow.store import CandleStore
frame = pd.read_pickle(sys.argv[2])
CandleStore(sys.argv[1]).upsert(frame, "CRASH", "1m")
print("finished", flush=True)
"""

_CRASH_YEARS = range(2016, 2025)  # 9 years, one partition each


def _weekday_minutes(first_year: int, last_year: int) -> np.ndarray:
    """Epoch microseconds (UTC) of 09:15..15:29 IST on every weekday of the years."""
    days = np.arange(np.datetime64(f"{first_year}-01-01"), np.datetime64(f"{last_year + 1}-01-01"))
    weekday = (days.astype("int64") + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
    days = days[weekday < 5]
    minutes = np.arange(555, 930, dtype="int64")
    day_us = days.astype("datetime64[us]").astype("int64")
    return (day_us[:, None] + minutes[None, :] * 60_000_000 - 19_800_000_000).ravel()


def _frame_from_us(us: np.ndarray, close: np.ndarray, volume: float) -> pd.DataFrame:
    idx = pd.DatetimeIndex(pd.to_datetime(us, unit="us", utc=True), name="ts").tz_convert(IST)
    return pd.DataFrame(
        {"open": close, "high": close + 0.5, "low": close - 0.5, "close": close, "volume": np.full(len(us), volume)},
        index=idx,
    )


@pytest.fixture(scope="module")
def crash_frames(tmp_path_factory):
    """New data: ~880k weekday bars 2016-2024 near 5000. Old data: a few sessions in 2018 and 2021
    (overlapping the new data) plus Saturday sessions the new data lacks, all near 100."""
    us = _weekday_minutes(_CRASH_YEARS[0], _CRASH_YEARS[-1])
    rng = np.random.default_rng(11)
    new_close = np.round(5000 + np.cumsum(rng.integers(-4, 5, len(us))) * 0.05, 2)
    new = _frame_from_us(us, new_close, 9.0)
    old_days = ["2018-03-05", "2018-03-06", "2018-03-10", "2021-07-01", "2021-07-03"]  # 10th and 3rd: Saturdays
    old = synthetic_days(old_days, base=100.0, step=0.05)
    old["volume"] = 3.0
    path = tmp_path_factory.mktemp("crash") / "new.pkl"
    new.to_pickle(path)
    return new, old, path


def _tmp_files(root: Path) -> list[str]:
    return glob.glob(str(root / "candles" / "timeframe=1m" / "symbol=CRASH" / "year=*" / ".*.tmp"))


def _year_of(us: np.ndarray) -> np.ndarray:
    return pd.DatetimeIndex(pd.to_datetime(us, unit="us", utc=True)).tz_convert(IST).year.to_numpy()


@pytest.mark.slow
@pytest.mark.parametrize("kill_point", ["first_tmp", "after_50ms", "second_partition"])
def test_killed_writer_leaves_store_consistent(store, crash_frames, kill_point):
    new, old, pickled = crash_frames
    store.upsert(old, "CRASH", "1m")
    old_by_us = frame_by_us(old)
    new_by_us = frame_by_us(new)
    old_years = {int(p.parent.name.split("=")[1]): read_partition(p) for p in partition_files(store, "CRASH")}
    assert sorted(old_years) == [2018, 2021]

    env = dict(os.environ, PYTHONPATH=str(SRC))
    child = subprocess.Popen(
        [sys.executable, "-c", _CRASH_CHILD, str(store.root), str(pickled)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    seen: list[str] = []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and child.poll() is None:
            found = _tmp_files(store.root)
            if found:
                seen = sorted(set(seen) | set(found))
                if kill_point in ("first_tmp", "after_50ms") or len(seen) >= 2:
                    break
            time.sleep(0.001)
        if kill_point == "after_50ms":
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
    finally:
        _, err = child.communicate(timeout=30)
    assert seen, f"no temporary file seen before the writer ended: {err.decode()[-2000:]}"
    assert child.returncode == -signal.SIGKILL, f"writer was not killed mid-write (rc={child.returncode})"
    stale = _tmp_files(store.root)
    assert stale, "the killed writer left no temporary file behind"
    if kill_point == "second_partition":
        assert len(seen) >= 2

    # Every partition file reads whole and is either exactly as before or exactly fully merged.
    parts = {int(p.parent.name.split("=")[1]): read_partition(p) for p in partition_files(store, "CRASH")}
    for year, got in parts.items():
        new_part = new_by_us[_year_of(new_by_us.index.to_numpy()) == year]
        old_part = old_years.get(year)
        merged = new_part if old_part is None else pd.concat(
            [new_part, old_part.loc[old_part.index.difference(new_part.index)]]
        ).sort_index()
        as_before = old_part is not None and got.shape == old_part.shape and np.array_equal(got.index, old_part.index) \
            and np.array_equal(got.to_numpy(), old_part.to_numpy())
        as_merged = got.shape == merged.shape and np.array_equal(got.index, merged.index) \
            and np.array_equal(got.to_numpy(), merged.to_numpy())
        assert as_before or as_merged, f"partition {year} is neither the old nor the merged content"

    current = store.candles("CRASH", "1m")
    cur = frame_by_us(current)
    assert cur.index.is_unique
    assert set(old_by_us.index) <= set(cur.index)  # nothing previously stored was lost
    # every row holds either its old or its new values
    in_new = cur.index.isin(new_by_us.index)
    in_old = cur.index.isin(old_by_us.index)
    assert (in_new | in_old).all()
    cols = ["open", "high", "low", "close", "volume"]
    is_new = np.zeros(len(cur), bool)
    is_new[in_new] = (cur.loc[in_new, cols].to_numpy() == new_by_us.loc[cur.index[in_new], cols].to_numpy()).all(axis=1)
    is_old = np.zeros(len(cur), bool)
    is_old[in_old] = (cur.loc[in_old, cols].to_numpy() == old_by_us.loc[cur.index[in_old], cols].to_numpy()).all(axis=1)
    assert (is_new | is_old).all()

    # A later write succeeds, sweeps the stale temporary files and ends fully merged.
    res = store.upsert(new, "CRASH", "1m")
    assert res.partitions == len(_CRASH_YEARS)
    assert _tmp_files(store.root) == []
    assert not [p for p in store.root.rglob("*") if p.name.endswith(".tmp")]
    final = frame_by_us(store.candles("CRASH", "1m"))
    expected = pd.concat([new_by_us, old_by_us.loc[old_by_us.index.difference(new_by_us.index)]]).sort_index()
    np.testing.assert_array_equal(final.index, expected.index)
    np.testing.assert_array_equal(final[cols].to_numpy(), expected[cols].to_numpy())
    assert len(expected) == len(new) + 2 * 375  # the two old Saturday sessions survive


# ---------------------------------------------------------------------- watermarks


def test_watermarks_round_trip_and_independence(store, tmp_path):
    assert store.coverage("sim", "NIFTY", "1m") is None
    assert store.watermark("sim", "NIFTY", "1m") is None

    start, end = ist("2024-01-01 09:15"), ist("2024-03-28 15:30")
    store.set_coverage("sim", "NIFTY", "1m", start, end)
    cov = store.coverage("sim", "NIFTY", "1m")
    assert isinstance(cov, Coverage)
    assert cov.start == start and cov.end == end  # same instants
    assert str(cov.end.tz) == "UTC"
    assert cov.end == pd.Timestamp("2024-03-28 10:00", tz="UTC")
    assert store.watermark("sim", "NIFTY", "1m") == end
    assert store.watermark("sim", "nifty", "1m") == end  # symbol normalized

    # other keys are independent
    assert store.watermark("dhan", "NIFTY", "1m") is None
    assert store.watermark("sim", "BANKNIFTY", "1m") is None
    assert store.watermark("sim", "NIFTY", "15m") is None
    other_end = pd.Timestamp("2024-02-01", tz="UTC")
    store.set_coverage("dhan", "NIFTY", "1m", pd.Timestamp("2023-01-01", tz="UTC"), other_end)
    store.set_coverage("sim", "NIFTY", "1h", start, other_end)
    assert store.watermark("sim", "NIFTY", "1m") == end
    assert store.watermark("dhan", "NIFTY", "1m") == other_end
    assert store.watermark("sim", "NIFTY", "60m") == other_end  # 1h and 60m are one timeframe

    # advancing one key changes only that key
    later = end + pd.Timedelta(days=3)
    store.set_coverage("sim", "NIFTY", "1m", start, later)
    assert store.watermark("sim", "NIFTY", "1m") == later
    assert store.watermark("dhan", "NIFTY", "1m") == other_end

    # a fresh instance (a new process would do the same) reads them back
    again = CandleStore(store.root)
    assert again.coverage("sim", "NIFTY", "1m") == Coverage(start, later)
    assert again.watermark("dhan", "NIFTY", "1m") == other_end
    assert json.loads((store.root / "_meta" / "watermarks.json").read_text())  # valid JSON on disk
    assert not list((store.root / "_meta").glob(".*.tmp"))

    with pytest.raises(StoreError, match="before its start"):
        store.set_coverage("sim", "NIFTY", "1m", end, start)
    assert store.watermark("sim", "NIFTY", "1m") == later


def test_corrupt_watermark_file_is_reported(store):
    path = store.root / "_meta" / "watermarks.json"
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(StoreError, match="not valid JSON"):
        store.watermark("sim", "NIFTY", "1m")


# ---------------------------------------------------------------------- catalogue


def test_catalogue_symbols_timeframes_coverage_table(store, nifty_1m, real_dir):
    assert store.symbols() == []
    assert store.timeframes("NIFTY") == []
    empty = store.coverage_table()
    assert empty.empty and list(empty.columns) == ["symbol", "timeframe", "bars", "first", "last"]

    store.upsert(with_volume(days_of(nifty_1m, D1, D2)), "NIFTY", "1m")
    store.upsert(synthetic_days(["2023-12-29", "2024-01-01"]), "BANKNIFTY", "1m")
    dhan = _dhan_daily(real_dir)
    jan = dhan[(dhan.index >= pd.Timestamp("2023-12-31 18:30", tz="UTC")) & (dhan.index < pd.Timestamp("2024-01-31 18:30", tz="UTC"))]
    store.upsert(jan, "NIFTY", "1d")
    store.upsert(hand_bars(with_volume(days_of(nifty_1m, D1)), 60), "NIFTY", "1h")

    assert store.symbols() == ["BANKNIFTY", "NIFTY"]
    assert store.symbols("1m") == ["BANKNIFTY", "NIFTY"]
    assert store.symbols("1d") == ["NIFTY"]
    assert store.symbols("60m") == ["NIFTY"] == store.symbols("1h")
    assert store.symbols("15m") == []
    assert store.timeframes("NIFTY") == ["1d", "1m", "60m"]
    assert store.timeframes("banknifty") == ["1m"]

    table = store.coverage_table()
    rows = {(r.symbol, r.timeframe): r for r in table.itertuples()}
    assert set(rows) == {("BANKNIFTY", "1m"), ("NIFTY", "1d"), ("NIFTY", "1m"), ("NIFTY", "60m")}
    assert rows[("NIFTY", "1m")].bars == 750
    assert rows[("NIFTY", "1m")].first == ist("2024-01-01 09:15")
    assert rows[("NIFTY", "1m")].last == ist("2024-01-02 15:29")
    assert rows[("BANKNIFTY", "1m")].bars == 750  # two years' partitions counted together
    assert rows[("BANKNIFTY", "1m")].first == ist("2023-12-29 09:15")
    assert rows[("NIFTY", "1d")].bars == 22  # Dhan's January 2024: 21 weekday sessions (22nd, 26th closed) + Sat 20th
    assert rows[("NIFTY", "1d")].first == ist("2024-01-01 00:00")
    assert rows[("NIFTY", "1d")].last == ist("2024-01-31 00:00")
    assert rows[("NIFTY", "60m")].bars == 7
    assert rows[("NIFTY", "60m")].last == ist("2024-01-01 15:15")

"""CSV import: the shapes real files come in, and malformed files refused whole."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tradeflow.csvimport import CsvFormat, import_csv, read_candles_csv
from tradeflow.errors import DataValidationError


def _write(tmp_path: Path, text: str, name: str = "bars.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()} if root.exists() else {}


def test_separate_date_and_time_columns_naive_ist(tmp_path):
    path = _write(tmp_path, "Instrument,Date,Time,Open,High,Low,Close\nNIFTY,20240101,09:15,10,11,9,10.5\nNIFTY,20240101,09:16,10.5,12,10,11\n")
    frame = read_candles_csv(path)
    assert list(frame.index.tz_convert("Asia/Kolkata").strftime("%Y-%m-%d %H:%M")) == ["2024-01-01 09:15", "2024-01-01 09:16"]
    assert frame.index[0] == pd.Timestamp("2024-01-01 03:45", tz="UTC")
    assert frame["close"].tolist() == [10.5, 11.0]


def test_epoch_seconds_are_utc(tmp_path):
    path = _write(tmp_path, "Time,Open,High,Low,Close\n1514778300,25565.8,25587.8,25498.3,25551.7\n")
    frame = read_candles_csv(path)
    assert frame.index[0].tz_convert("Asia/Kolkata") == pd.Timestamp("2018-01-01 09:15", tz="Asia/Kolkata")


def test_epoch_milliseconds(tmp_path):
    path = _write(tmp_path, "ts,open,high,low,close\n1514778300000,1,2,0.5,1.5\n")
    frame = read_candles_csv(path, CsvFormat(format="epoch_ms"))
    assert frame.index[0] == pd.Timestamp("2018-01-01 03:45", tz="UTC")


def test_iso_strings_with_offset_and_naive_utc(tmp_path):
    with_offset = _write(tmp_path, "datetime,open,high,low,close\n2024-01-01T09:15:00+05:30,1,2,0.5,1.5\n", "a.csv")
    assert read_candles_csv(with_offset).index[0] == pd.Timestamp("2024-01-01 03:45", tz="UTC")
    naive_utc = _write(tmp_path, "timestamp,open,high,low,close,volume\n2023-01-01 18:30:00,1,2,0.5,1.5,100\n", "b.csv")
    frame = read_candles_csv(naive_utc, CsvFormat(tz="UTC"))
    assert frame.index[0].tz_convert("Asia/Kolkata") == pd.Timestamp("2023-01-02", tz="Asia/Kolkata")
    assert frame["volume"].iloc[0] == 100


def test_naive_ist_and_naive_utc_differ_by_five_and_a_half_hours(tmp_path):
    path = _write(tmp_path, "timestamp,open,high,low,close\n2024-01-01 09:15,1,2,0.5,1.5\n")
    ist = read_candles_csv(path, CsvFormat(tz="IST")).index[0]
    utc = read_candles_csv(path, CsvFormat(tz="UTC")).index[0]
    assert utc - ist == pd.Timedelta(hours=5, minutes=30)


def test_explicit_columns_format_and_headerless(tmp_path):
    path = _write(tmp_path, '"020117","252.50","253.65","242.60","243.60","6362168368.75","25988990","164268"\n')
    fmt = CsvFormat(header=False, names=["d", "o", "h", "l", "c", "value", "qty", "trades"], format="%d%m%y", columns={"date": "d", "volume": "qty"})
    frame = read_candles_csv(path, fmt)
    assert frame.index[0].tz_convert("Asia/Kolkata") == pd.Timestamp("2017-01-02", tz="Asia/Kolkata")
    assert frame.iloc[0].to_dict() == {"open": 252.5, "high": 253.65, "low": 242.6, "close": 243.6, "volume": 25988990.0}


def test_day_first_dates_are_read_day_first(tmp_path):
    path = _write(tmp_path, "date,open,high,low,close\n02-01-2024,1,2,0.5,1.5\n13-01-2024,1,2,0.5,1.5\n")
    days = read_candles_csv(path).index.tz_convert("Asia/Kolkata").date
    assert [str(d) for d in days] == ["2024-01-02", "2024-01-13"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("timestamp,open,high,low\n2024-01-01 09:15,1,2,0.5\n", "missing column for close"),
        ("timestamp,open,high,low,close\n2024-01-01 09:15,1,2,0.5,1\nnot a time,1,2,0.5,1\n", "line 3, column 'timestamp': cannot read 'not a time'"),
        ("timestamp,open,high,low,close\n2024-01-01 09:15,1,2,0.5,1\n2024-01-01 09:16,1,2,-0.5,1\n", "line 3, column 'low': price -0.5 is not positive"),
        ("timestamp,open,high,low,close\n2024-01-01 09:15,1,2,0.5,1\n2024-01-01 09:16,1,1,2,1\n", "line 3, columns 'high'/'low': high 1 is below low 2"),
        ("timestamp,open,high,low,close\n2024-01-01 09:15,1,2,0.5,abc\n", "line 2, column 'close': 'abc' is not a number"),
        ("timestamp,open,high,low,close\n2024-01-01 09:15,1,2,0.5,\n", "line 2, column 'close': is empty"),
        ("timestamp,open,high,low,close\n2024-01-01 09:15,1,2,0.5,1\n2024-01-01 09:15,1,2,0.5,1\n", "line 3: timestamp 2024-01-01 09:15:00+05:30 repeats line 2"),
        ("time,open,high,low,close\n", "no data rows"),
        ("", "the file is empty"),
        ("timestamp,open,high,low,close\n2024-01-01 09:15,1,2,0.5,1,7,8\n", "line 2 has 7 fields, the header has 5"),
        ("timestamp,open,high,low,close\n2024-01-01 09:15,1,2,0.5,1\n2024-01-01 09:16,1,2,0.5,1,9\n", "Expected 5 fields in line 3, saw 6"),
    ],
)
def test_malformed_files_are_refused_and_nothing_is_written(tmp_path, store, body, expected):
    store.upsert(pd.DataFrame({"open": [5.0], "high": [6.0], "low": [4.0], "close": [5.5]}, index=pd.DatetimeIndex([pd.Timestamp("2024-01-01 09:15", tz="Asia/Kolkata")])), "NIFTY", "1m")
    before = _tree(store.root)
    path = _write(tmp_path, body)
    with pytest.raises(DataValidationError) as info:
        import_csv(path, "NIFTY", "1m", store=store)
    assert expected in str(info.value)
    assert _tree(store.root) == before


def test_every_problem_is_listed_with_its_line(tmp_path):
    body = "timestamp,open,high,low,close\n2024-01-01 09:15,1,2,0.5,1\n2024-01-01 09:16,x,2,0.5,1\n\n2024-01-01 09:18,1,2,0.5,-1\n"
    with pytest.raises(DataValidationError) as info:
        read_candles_csv(_write(tmp_path, body))
    problems = info.value.problems
    assert problems[0].startswith("line 3, column 'open'")
    assert problems[1].startswith("line 5, column 'close'")  # blank line 4 still counts


def test_unknown_time_zone_and_unknown_column_role(tmp_path):
    path = _write(tmp_path, "timestamp,open,high,low,close\n2024-01-01 09:15,1,2,0.5,1\n")
    with pytest.raises(DataValidationError, match="unknown source time zone 'EST'"):
        read_candles_csv(path, CsvFormat(tz="EST"))
    with pytest.raises(DataValidationError, match="column 'Last' .* is not in the file"):
        read_candles_csv(path, CsvFormat(columns={"close": "Last"}))


def test_reimport_is_idempotent(tmp_path, store):
    path = _write(tmp_path, "Date,Time,Open,High,Low,Close\n20240102,09:15,10,11,9,10.5\n20240102,09:16,10.5,12,10,11\n")
    first = import_csv(path, "NIFTY", "1m", store=store)
    files = _tree(store.root / "candles")
    second = import_csv(path, "NIFTY", "1m", store=store)
    assert (first.inserted, first.updated) == (2, 0)
    assert (second.inserted, second.updated) == (0, 2)
    assert len(store.candles("NIFTY", "1m")) == 2
    assert store.candles("NIFTY", "1m").equals(read_candles_csv(path).tz_convert("Asia/Kolkata").assign(volume=float("nan"))[["open", "high", "low", "close", "volume"]])
    assert _tree(store.root / "candles").keys() == files.keys()


def test_real_files_import(real_dir, store):
    intraday = real_dir / "intraday"
    result = import_csv(intraday / "BANKNIFTY_15min_2018-01-01_2023-08-04_epoch.csv", "BANKNIFTY", "15m", store=store)
    assert result.inserted == 34_300
    first = store.candles("BANKNIFTY", "15m", "2018-01-01", "2018-01-01")
    assert len(first) == 25 and first.index[0].strftime("%H:%M") == "09:15" and first.index[-1].strftime("%H:%M") == "15:15"
    assert first["open"].iloc[0] == 25565.8
    daily = import_csv(real_dir / "daily_indices" / "NIFTY50_daily_2023-01-02_2026-07-16_dhan.csv", "NIFTY", "1d", fmt=CsvFormat(tz="UTC"), store=store)
    assert daily.inserted == 876
    day = store.candles("NIFTY", "1d", "2023-01-02", "2023-01-02")
    assert day.index[0] == pd.Timestamp("2023-01-02", tz="Asia/Kolkata") and day["close"].iloc[0] == 18197.45

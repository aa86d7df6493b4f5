"""NSE calendar from exchange_calendars, bar alignment, timeframe parsing, user time bounds."""

from __future__ import annotations

import datetime as dt
import logging

import pandas as pd
import pytest

from tradeflow.calendar import as_instant, calendar_bounds, is_session, session_bar_starts, sessions
from tradeflow.errors import CalendarError, StoreError
from tradeflow.timeframes import Timeframe


def test_known_holidays_and_weekends():
    assert not is_session("2024-01-22")  # special holiday declared for the Ayodhya ceremony
    assert not is_session("2024-01-26")  # Republic Day
    assert not is_session("2024-01-20")  # Saturday (a special session happened, but it is not regular)
    assert is_session("2024-01-23")
    assert sessions("2024-01-19", "2024-01-26") == [dt.date(2024, 1, d) for d in (19, 23, 24, 25)]


def test_dates_past_the_calendar_warn_and_are_left_out(caplog):
    last = calendar_bounds()[1]
    with caplog.at_level(logging.WARNING, logger="tradeflow.calendar"):
        days = sessions(last - dt.timedelta(days=3), last + dt.timedelta(days=30))
    assert days and max(days) <= last
    assert "knows sessions only up to" in caplog.text


def test_bar_starts_align_to_0915():
    assert [t.strftime("%H:%M") for t in session_bar_starts("2024-01-02", 60)] == [
        "09:15", "10:15", "11:15", "12:15", "13:15", "14:15", "15:15"]
    assert [t.strftime("%H:%M") for t in session_bar_starts("2024-01-02", 75)] == ["09:15", "10:30", "11:45", "13:00", "14:15"]
    assert len(session_bar_starts("2024-01-02", 1)) == 375
    assert len(session_bar_starts("2024-01-02", 25)) == 15


@pytest.mark.parametrize(("text", "minutes"), [("1m", 1), ("15m", 15), ("1h", 60), ("60m", 60), ("75min", 75), ("1d", None), ("1D", None)])
def test_timeframe_parse(text, minutes):
    assert Timeframe.parse(text).minutes == minutes


@pytest.mark.parametrize("text", ["7s", "0m", "2d", "1w", "400m", "", "fifteen"])
def test_timeframe_parse_refuses(text):
    with pytest.raises(StoreError, match="timeframe"):
        Timeframe.parse(text)


def test_user_bounds_are_ist_and_date_ends_are_inclusive():
    assert as_instant("2024-01-31") == pd.Timestamp("2024-01-30 18:30", tz="UTC")
    assert as_instant("2024-01-31", end=True) == pd.Timestamp("2024-01-31 18:30", tz="UTC")
    assert as_instant(dt.date(2024, 1, 31), end=True) == pd.Timestamp("2024-01-31 18:30", tz="UTC")
    assert as_instant("2024-01-31 10:15", end=True) > pd.Timestamp("2024-01-31 10:15", tz="Asia/Kolkata")
    assert as_instant(pd.Timestamp("2024-01-31 04:45", tz="UTC")) == pd.Timestamp("2024-01-31 10:15", tz="Asia/Kolkata")
    with pytest.raises(CalendarError, match="cannot read"):
        as_instant("31st of Jan")

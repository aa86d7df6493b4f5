"""Fetching from a source into the store: windows, watermarks, resume, only-what-is-missing."""

from __future__ import annotations

import pandas as pd
import pytest

from tradeflow.brokers.sim import SimMarket
from tradeflow.calendar import sessions
from tradeflow.errors import SourceError
from tradeflow.ingest import fetch, plan_windows
from tradeflow.timeframes import ONE_MINUTE

NOW = pd.Timestamp("2024-07-01 12:00", tz="Asia/Kolkata")


class Recording(SimMarket):
    """The sim market, recording every request and optionally failing on the n-th."""

    def __init__(self, fail_on: int | None = None, **kw):
        super().__init__(seed=7, now=kw.pop("now", NOW))
        self.calls: list[tuple[pd.Timestamp, pd.Timestamp]] = []
        self.fail_on = fail_on

    def fetch(self, symbol, timeframe, start, end):
        self.calls.append((start, end))
        if self.fail_on is not None and len(self.calls) == self.fail_on:
            raise ConnectionError("network down")
        return super().fetch(symbol, timeframe, start, end)


def test_fetch_fills_store_and_sets_watermark(store):
    src = Recording()
    res = fetch("NIFTY", "1m", "2024-01-01", "2024-03-31", source=src, store=store, progress=False, now=NOW)
    assert res.windows == len(src.calls) == 4  # 30-day windows
    frame = store.candles("NIFTY", "1m", "2024-01-01", "2024-03-31")
    expected = SimMarket(seed=7, now=NOW).fetch("NIFTY", ONE_MINUTE, pd.Timestamp("2024-01-01", tz="Asia/Kolkata"), pd.Timestamp("2024-04-01", tz="Asia/Kolkata"))
    pd.testing.assert_frame_equal(frame, expected, check_freq=False, check_names=False, check_index_type=False)
    assert store.watermark("sim", "NIFTY", "1m") == pd.Timestamp("2024-04-01", tz="Asia/Kolkata")
    # windows are cut at IST midnights and never overlap
    for (a_lo, a_hi), (b_lo, _) in zip(src.calls, src.calls[1:]):
        assert a_hi == b_lo and a_hi.tz_convert("Asia/Kolkata").time() == pd.Timestamp("00:00").time()


def test_second_run_fetches_nothing(store):
    fetch("NIFTY", "1m", "2024-01-01", "2024-01-31", source=Recording(), store=store, progress=False, now=NOW)
    again = Recording()
    res = fetch("NIFTY", "1m", "2024-01-01", "2024-01-31", source=again, store=store, progress=False, now=NOW)
    assert again.calls == [] and res.up_to_date


def test_extension_fetches_only_the_new_parts(store):
    fetch("NIFTY", "1m", "2024-02-01", "2024-02-29", source=Recording(), store=store, progress=False, now=NOW)
    src = Recording()
    fetch("NIFTY", "1m", "2024-01-15", "2024-03-10", source=src, store=store, progress=False, now=NOW)
    lo = pd.Timestamp("2024-02-01", tz="Asia/Kolkata")
    hi = pd.Timestamp("2024-03-01", tz="Asia/Kolkata")
    assert all(end <= lo or start >= hi for start, end in src.calls), src.calls
    assert min(s for s, _ in src.calls) == pd.Timestamp("2024-01-15", tz="Asia/Kolkata")
    cov = store.coverage("sim", "NIFTY", "1m")
    assert (cov.start, cov.end) == (pd.Timestamp("2024-01-15", tz="Asia/Kolkata"), pd.Timestamp("2024-03-11", tz="Asia/Kolkata"))
    assert len(store.candles("NIFTY", "1d", "2024-01-15", "2024-03-10")) == len(sessions("2024-01-15", "2024-03-10"))


def test_interrupted_fetch_resumes_without_refetching_finished_windows(store):
    failing = Recording(fail_on=3)
    with pytest.raises(ConnectionError):
        fetch("NIFTY", "1m", "2024-01-01", "2024-04-30", source=failing, store=store, progress=False, now=NOW)
    done = failing.calls[:2]
    assert store.watermark("sim", "NIFTY", "1m") == done[-1][1]
    resumed = Recording()
    fetch("NIFTY", "1m", "2024-01-01", "2024-04-30", source=resumed, store=store, progress=False, now=NOW)
    assert resumed.calls[0][0] == done[-1][1]
    assert not set(resumed.calls) & set(done)
    report = store.gaps("NIFTY", "1m", "2024-01-01", "2024-04-30")
    assert report.ok and report.bars == report.expected_sessions * 375


def test_today_is_never_marked_complete(store):
    now = pd.Timestamp("2024-03-05 11:00", tz="Asia/Kolkata")
    src = Recording(now=now)
    fetch("NIFTY", "1m", "2024-03-01", "2024-03-05", source=src, store=store, progress=False, now=now)
    today = store.candles("NIFTY", "1m", "2024-03-05", "2024-03-05")
    assert today.index[-1] == pd.Timestamp("2024-03-05 10:59", tz="Asia/Kolkata")  # only closed bars
    assert store.watermark("sim", "NIFTY", "1m") == pd.Timestamp("2024-03-05", tz="Asia/Kolkata")
    later = pd.Timestamp("2024-03-05 16:00", tz="Asia/Kolkata")
    fetch("NIFTY", "1m", "2024-03-01", "2024-03-05", source=Recording(now=later), store=store, progress=False, now=later)
    assert len(store.candles("NIFTY", "1m", "2024-03-05", "2024-03-05")) == 375


def test_source_without_the_timeframe_is_refused(store):
    with pytest.raises(SourceError, match="gives 1m bars, not 15m"):
        fetch("NIFTY", "15m", "2024-01-01", "2024-01-31", source=Recording(), store=store, progress=False)


def test_unknown_source_lists_known_ones(store):
    with pytest.raises(SourceError, match="unknown source 'zerodha': choose one of .*sim"):
        fetch("NIFTY", "1m", "2024-01-01", "2024-01-31", source="zerodha", store=store, progress=False)


def test_plan_windows_keeps_coverage_contiguous():
    ist = lambda s: pd.Timestamp(s, tz="Asia/Kolkata")  # noqa: E731
    before, after = plan_windows(ist("2024-05-01"), ist("2024-06-01"), pd.Timedelta(days=10), (ist("2024-01-01"), ist("2024-02-01")))
    assert before == [] and after[0][0] == ist("2024-02-01") and after[-1][1] == ist("2024-06-01")
    before, after = plan_windows(ist("2023-10-01"), ist("2023-11-01"), pd.Timedelta(days=10), (ist("2024-01-01"), ist("2024-02-01")))
    assert after == [] and before[0][1] == ist("2024-01-01") and before[-1][0] == ist("2023-10-01")

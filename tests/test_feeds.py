"""Feeds: the candle builder's bucketing and closing rules, and replays of stored candles."""

from __future__ import annotations

import logging

import pandas as pd
import pytest

from tradeflow.brokers.sim import SimMarket
from tradeflow.feeds import Bar, CandleBuilder, Tick, bars_to_frame, replay_bars, replay_ticks
from tradeflow.store import CandleStore
from tradeflow.timeframes import ONE_MINUTE

SYM = "NIFTY"


def ist(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="Asia/Kolkata")


def tick(text: str, price: float, volume: float = 0.0) -> Tick:
    return Tick(SYM, ist(text), price, volume)


# ---------------------------------------------------------------------- records


def test_tick_is_a_utc_instant_and_refuses_naive_times():
    t = tick("2024-03-04 09:15:10", 100.0, 5)
    assert str(t.ts.tz) == "UTC"
    assert t.ts == pd.Timestamp("2024-03-04 03:45:10", tz="UTC")
    with pytest.raises(ValueError, match="time zone"):
        Tick(SYM, pd.Timestamp("2024-03-04 09:15"), 100.0)
    with pytest.raises(ValueError):
        Tick(SYM, ist("2024-03-04 09:15"), -1.0)
    with pytest.raises(Exception):
        t.price = 1.0  # frozen


def test_bar_end_is_cut_at_the_session_close():
    assert Bar(SYM, ist("2024-03-04 15:15"), 1, 1, 1, 1, 0, 60).end == ist("2024-03-04 15:30")
    assert Bar(SYM, ist("2024-03-04 09:15"), 1, 1, 1, 1, 0, 15).end == ist("2024-03-04 09:30")


# ---------------------------------------------------------------------- builder


def test_builder_ohlcv_and_alignment_to_0915():
    b = CandleBuilder(15, symbol=SYM)
    assert b.on_tick(tick("2024-03-04 09:16", 100, 1)) == []
    assert b.on_tick(tick("2024-03-04 09:20", 103, 2)) == []
    assert b.on_tick(tick("2024-03-04 09:25", 98, 3)) == []
    assert b.on_tick(tick("2024-03-04 09:29:59", 101, 4)) == []
    closed = b.on_tick(tick("2024-03-04 09:30", 102, 5))
    assert closed == [Bar(SYM, ist("2024-03-04 09:15"), 100.0, 103.0, 98.0, 101.0, 10.0, 15)]
    assert closed[0].ts.tz is not None and str(closed[0].ts.tz) == "Asia/Kolkata"
    assert b.partial.ts == ist("2024-03-04 09:30")
    # 75-minute buckets: 09:15, 10:30, 11:45, 13:00, 14:15
    b75 = CandleBuilder(75, symbol=SYM)
    b75.on_tick(tick("2024-03-04 10:29", 100))
    assert [x.ts for x in b75.on_tick(tick("2024-03-04 14:20", 100))] == [ist("2024-03-04 09:15")]
    assert b75.partial.ts == ist("2024-03-04 14:15")


def test_out_of_order_tick_from_a_closed_bar_is_dropped_and_counted(caplog):
    b = CandleBuilder(5, symbol=SYM)
    b.on_tick(tick("2024-03-04 09:15:05", 100, 1))
    closed = b.on_tick(tick("2024-03-04 09:20:01", 101, 1))
    assert len(closed) == 1
    with caplog.at_level(logging.WARNING, logger="tradeflow.feeds"):
        assert b.on_tick(tick("2024-03-04 09:19:59", 50, 7)) == []
    assert b.late_ticks == 1
    assert "late tick" in caplog.text
    # the dropped tick changed nothing: neither the closed bar nor the open one
    assert closed[0].low == 100.0 and closed[0].volume == 1.0
    bar = b.flush()[0]
    assert (bar.open, bar.low, bar.volume) == (101.0, 101.0, 1.0)


def test_out_of_order_ticks_inside_the_open_bucket_keep_time_order():
    b = CandleBuilder(5, symbol=SYM)
    b.on_tick(tick("2024-03-04 09:16", 100))
    b.on_tick(tick("2024-03-04 09:15:30", 99))  # earlier, same bucket: becomes the open
    b.on_tick(tick("2024-03-04 09:19", 104))
    b.on_tick(tick("2024-03-04 09:18", 102))  # earlier than the last: not the close
    bar = b.flush()[0]
    assert (bar.open, bar.high, bar.low, bar.close) == (99.0, 104.0, 99.0, 104.0)
    assert b.late_ticks == 0


def test_on_time_closes_at_the_boundary_and_a_late_tick_cannot_reopen_it():
    b = CandleBuilder(15, symbol=SYM)
    b.on_tick(tick("2024-03-04 09:20", 100, 1))
    assert b.on_time(ist("2024-03-04 09:29:59")) == []
    closed = b.on_time(ist("2024-03-04 09:30:00"))
    assert [x.ts for x in closed] == [ist("2024-03-04 09:15")]
    assert b.on_time(ist("2024-03-04 09:30:01")) == []  # closed once only
    # the tick stamped 09:29:59 arrives after the boundary: dropped, nothing held open
    assert b.on_tick(tick("2024-03-04 09:29:59", 90, 3)) == []
    assert b.late_ticks == 1 and b.partial is None
    # the next bucket works as usual
    b.on_tick(tick("2024-03-04 09:31", 101))
    assert b.on_time(pd.Timestamp("2024-03-04 04:15", tz="UTC"))[0].ts == ist("2024-03-04 09:30")


def test_grace_delays_closing_by_time():
    b = CandleBuilder(1, symbol=SYM, grace=2.0)
    b.on_tick(tick("2024-03-04 09:15:30", 100))
    assert b.on_time(ist("2024-03-04 09:16:01")) == []
    b.on_tick(tick("2024-03-04 09:15:59", 101))  # late but within grace: still counted
    assert b.on_time(ist("2024-03-04 09:16:02"))[0].close == 101.0


def test_bars_never_span_two_sessions():
    b = CandleBuilder(60, symbol=SYM)
    b.on_tick(tick("2024-03-04 15:20", 100, 1))
    b.on_tick(tick("2024-03-04 15:29:59", 101, 1))
    closed = b.on_tick(tick("2024-03-05 09:15:01", 102, 1))
    assert len(closed) == 1
    assert closed[0].ts == ist("2024-03-04 15:15") and closed[0].end == ist("2024-03-04 15:30")
    assert (closed[0].close, closed[0].volume) == (101.0, 2.0)
    assert b.partial.ts == ist("2024-03-05 09:15")
    # a whole-session bar (375m) still closes at the day's end
    day = CandleBuilder(375, symbol=SYM)
    day.on_tick(tick("2024-03-04 09:15", 100))
    assert day.on_time(ist("2024-03-04 15:30"))[0].ts == ist("2024-03-04 09:15")


def test_ticks_outside_the_session_are_dropped(caplog):
    b = CandleBuilder(15, symbol=SYM)
    with caplog.at_level(logging.WARNING, logger="tradeflow.feeds"):
        assert b.on_tick(tick("2024-03-04 09:10", 100)) == []
        assert b.on_tick(tick("2024-03-04 15:30", 100)) == []
    assert b.outside_ticks == 2 and b.partial is None
    assert "outside" in caplog.text


def test_builder_refuses_other_symbols_and_daily_bars():
    with pytest.raises(ValueError):
        CandleBuilder("1d", symbol=SYM)
    b = CandleBuilder("15m", symbol=SYM)
    assert b.timeframe == 15
    with pytest.raises(ValueError, match="one builder per symbol"):
        b.on_tick(Tick("BANKNIFTY", ist("2024-03-04 09:20"), 1.0))


# ---------------------------------------------------------------------- replay


def _frame(rows: list[tuple[str, float, float, float, float, float]]) -> pd.DataFrame:
    idx = pd.DatetimeIndex([ist(r[0]) for r in rows], name="ts")
    return pd.DataFrame([r[1:] for r in rows], index=idx, columns=["open", "high", "low", "close", "volume"])


def test_replay_tick_order_for_up_and_down_bars():
    candles = _frame([
        ("2024-03-04 09:15", 100.0, 110.0, 99.0, 108.0, 500.0),  # up bar: low is nearer the open
        ("2024-03-04 09:16", 108.0, 109.0, 95.0, 96.0, 700.0),  # down bar: high is nearer the open
    ])
    ticks = list(replay_ticks(candles, symbol=SYM))
    assert [t.price for t in ticks] == [100.0, 99.0, 110.0, 108.0, 108.0, 109.0, 95.0, 96.0]
    assert [t.volume for t in ticks] == [0, 0, 0, 500.0, 0, 0, 0, 700.0]
    start = ist("2024-03-04 09:15")
    assert [t.ts - start for t in ticks[:4]] == [pd.Timedelta(seconds=s) for s in (12, 24, 36, 48)]
    for t, bar_start in zip(ticks, [start] * 4 + [ist("2024-03-04 09:16")] * 4):
        assert bar_start < t.ts < bar_start + pd.Timedelta(minutes=1)
    assert all(str(t.ts.tz) == "UTC" and t.symbol == SYM for t in ticks)


def test_replay_ticks_of_a_short_last_bar_stay_inside_the_session():
    candles = _frame([
        ("2024-03-04 14:15", 100.0, 101.0, 99.0, 100.5, 1.0),
        ("2024-03-04 15:15", 100.5, 102.0, 100.0, 101.0, 1.0),
    ])
    ticks = list(replay_ticks(candles, symbol=SYM))
    assert max(t.ts for t in ticks) < ist("2024-03-04 15:30")
    assert ticks[-1].ts == ist("2024-03-04 15:27")  # 4/5 of the 15-minute span


def test_replay_bars_yields_the_stored_bars():
    candles = _frame([
        ("2024-03-04 09:15", 100.0, 110.0, 99.0, 108.0, 500.0),
        ("2024-03-04 09:30", 108.0, 109.0, 95.0, 96.0, 700.0),
    ])
    bars = list(replay_bars(candles, symbol=SYM))
    assert [b.timeframe for b in bars] == [15, 15]
    pd.testing.assert_frame_equal(bars_to_frame(bars), candles, check_freq=False)


def test_pacing_with_a_fake_sleep():
    candles = _frame([
        ("2024-03-04 09:15", 100.0, 110.0, 99.0, 108.0, 500.0),
        ("2024-03-04 09:16", 108.0, 109.0, 95.0, 96.0, 700.0),
        ("2024-03-04 09:20", 96.0, 97.0, 95.0, 96.0, 1.0),
    ])
    slept: list[float] = []
    list(replay_bars(candles, symbol=SYM, timeframe_minutes=1, speed=60.0, sleep=slept.append))
    assert slept == pytest.approx([1.0, 4.0])  # bar ends 1 and 4 simulated minutes apart
    slept.clear()
    list(replay_ticks(candles, symbol=SYM, timeframe_minutes=1, speed=2.0, sleep=slept.append))
    assert len(slept) == 11 and slept[:3] == pytest.approx([6.0, 6.0, 6.0])
    assert slept[3] == pytest.approx(12.0)  # close at :48 to next open at 1:12
    slept.clear()
    list(replay_ticks(candles, symbol=SYM, speed=2.0, sleep=slept.append, max_sleep=5.0))
    assert max(slept) == 5.0
    slept.clear()
    list(replay_ticks(candles, symbol=SYM, sleep=slept.append))  # speed=None: full speed
    assert slept == []
    with pytest.raises(ValueError):
        list(replay_bars(candles, speed=0.0, sleep=slept.append))


# ---------------------------------------------------------------------- parity with the store


@pytest.fixture(scope="module")
def sim_store(tmp_path_factory) -> CandleStore:
    store = CandleStore(tmp_path_factory.mktemp("feeds") / "parquet")
    frame = SimMarket(seed=1).fetch(SYM, ONE_MINUTE, ist("2024-03-04"), ist("2024-03-08"))
    assert frame.index.normalize().nunique() >= 3
    store.upsert(frame, SYM, "1m")
    return store


@pytest.mark.parametrize("minutes", [1, 5, 15, 60, 75])
def test_replayed_ticks_rebuild_the_stores_bars(sim_store, minutes):
    one_minute = sim_store.candles(SYM, "1m")
    expected = sim_store.candles(SYM, f"{minutes}m")
    builder = CandleBuilder(minutes, symbol=SYM)
    bars: list[Bar] = []
    day = None
    for t in replay_ticks(one_minute, symbol=SYM):
        local_day = t.ts.tz_convert("Asia/Kolkata").date()
        if day is not None and local_day != day:
            # the session's last bar closes at 15:30 by time, with no next tick
            closed = builder.on_time(ist(f"{day} 15:30"))
            assert len(closed) == 1 and closed[0].end == ist(f"{day} 15:30")
            bars += closed
        day = local_day
        out = builder.on_tick(t)
        bars += out
    bars += builder.on_time(ist(f"{day} 15:30"))
    assert builder.partial is None and builder.late_ticks == 0 and builder.outside_ticks == 0
    got = bars_to_frame(bars)
    pd.testing.assert_frame_equal(got, expected[list(got.columns)], check_freq=False)

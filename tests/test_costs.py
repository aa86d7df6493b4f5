"""Worked charge examples, checked by hand against the rate table in ``tradeflow.costs``.

Every expected number is written out with its arithmetic, so a reviewer can redo it on paper.
Components are rounded to paise half up per order (one side); a round trip is the sum of the
two orders. Dates: 2024-11-05 is after the 2024-10-01 STT and NSE charge changes, 2024-09-30
the last day before them.
"""

from __future__ import annotations

import doctest
from datetime import date

import numpy as np
import pytest

import tradeflow.costs as costs
from tradeflow.costs import (
    BROKERAGE,
    RATE_TABLE,
    Charges,
    ChargesError,
    Segment,
    Side,
    charges,
    order_charges,
    rates,
    round_trip,
)
from tradeflow.errors import TradeflowError

NEW = date(2024, 11, 5)
OLD = date(2024, 9, 30)


def assert_charges(got: Charges, **expected: float) -> None:
    """Compare each named field to the hand-computed value, to the paisa."""
    for name, value in expected.items():
        assert getattr(got, name) == pytest.approx(value, abs=1e-9), name
    parts = got.brokerage + got.stt + got.exchange + got.sebi + got.stamp + got.gst
    assert got.total == pytest.approx(parts, abs=1e-9)


# --------------------------------------------------------------------------- equity intraday


def test_intraday_round_trip_with_the_003pct_cap_binding():
    # Buy 10 @ 500 and sell 10 @ 510 on 2024-11-05 with Dhan: turnover buy 5,000, sell 5,100.
    buy = charges(Segment.EQUITY_INTRADAY, Side.BUY, 500, 10, on=NEW, broker="dhan")
    sell = charges(Segment.EQUITY_INTRADAY, Side.SELL, 510, 10, on=NEW, broker="dhan")
    # brokerage: 0.03% × 5,000 = 1.50 < ₹20 (cap binds); sell 0.03% × 5,100 = 1.53
    # STT: none on the buy; sell 0.025% × 5,100 = 1.275 -> 1.28 (half up)
    # exchange: 0.00297% × 5,000 = 0.1485 -> 0.15; 0.00297% × 5,100 = 0.15147 -> 0.15
    # SEBI: 5,000 × 1e-6 = 0.005 -> 0.01; 5,100 × 1e-6 = 0.0051 -> 0.01
    # stamp: 0.003% × 5,000 = 0.15 on the buy only
    # GST: 18% × (1.50 + 0.15 + 0.01) = 0.2988 -> 0.30; 18% × (1.53 + 0.15 + 0.01) = 0.3042 -> 0.30
    assert_charges(buy, turnover=5_000, brokerage=1.50, stt=0, exchange=0.15, sebi=0.01, stamp=0.15, gst=0.30,
                   total=1.50 + 0.15 + 0.01 + 0.15 + 0.30)  # 2.11
    assert_charges(sell, turnover=5_100, brokerage=1.53, stt=1.28, exchange=0.15, sebi=0.01, stamp=0, gst=0.30,
                   total=1.53 + 1.28 + 0.15 + 0.01 + 0.30)  # 3.27
    trip = round_trip("equity_intraday", 500, 510, 10, on=NEW, broker="dhan")
    assert_charges(trip, turnover=10_100, brokerage=3.03, stt=1.28, exchange=0.30, sebi=0.02, stamp=0.15, gst=0.60,
                   total=2.11 + 3.27)  # 5.38


def test_intraday_round_trip_with_the_20_rupee_flat_binding():
    # Buy 1,000 @ 1,500 and sell 1,000 @ 1,510: turnover 15,00,000 and 15,10,000.
    trip = round_trip("equity_intraday", 1_500, 1_510, 1_000, on=NEW)
    # brokerage: 0.03% × 15,00,000 = 450 > ₹20, so ₹20 a side = 40
    # STT: 0.025% × 15,10,000 = 377.50 (sell only)
    # exchange: 0.00297% × 15,00,000 = 44.55; × 15,10,000 = 44.847 -> 44.85
    # SEBI: 1.50 + 1.51
    # stamp: 0.003% × 15,00,000 = 45.00 (buy only)
    # GST: 18% × (20 + 44.55 + 1.50) = 11.889 -> 11.89; 18% × (20 + 44.85 + 1.51) = 11.9448 -> 11.94
    assert_charges(trip, turnover=3_010_000, brokerage=40, stt=377.50, exchange=44.55 + 44.85,
                   sebi=1.50 + 1.51, stamp=45.00, gst=11.89 + 11.94)
    # buy 20 + 44.55 + 1.50 + 45.00 + 11.89 = 122.94; sell 20 + 377.50 + 44.85 + 1.51 + 11.94 = 455.80
    assert trip.total == pytest.approx(122.94 + 455.80)  # 578.74


# --------------------------------------------------------------------------- equity delivery


def test_delivery_pays_stt_on_both_sides_and_no_brokerage():
    # Buy 100 @ 2,000 (2,00,000) and sell 100 @ 2,100 (2,10,000).
    buy = charges("equity_delivery", "buy", 2_000, 100, on=NEW)
    sell = charges("equity_delivery", "sell", 2_100, 100, on=NEW)
    # brokerage ₹0 (Dhan delivery); STT 0.1% × 2,00,000 = 200.00 and 0.1% × 2,10,000 = 210.00
    # exchange 0.00297% × 2,00,000 = 5.94; × 2,10,000 = 6.237 -> 6.24
    # SEBI 0.20 and 0.21; stamp 0.015% × 2,00,000 = 30.00 on the buy
    # GST 18% × (0 + 5.94 + 0.20) = 1.1052 -> 1.11; 18% × (6.24 + 0.21) = 1.161 -> 1.16
    assert_charges(buy, brokerage=0, stt=200.00, exchange=5.94, sebi=0.20, stamp=30.00, gst=1.11,
                   total=200 + 5.94 + 0.20 + 30 + 1.11)  # 237.25
    assert_charges(sell, brokerage=0, stt=210.00, exchange=6.24, sebi=0.21, stamp=0, gst=1.16,
                   total=210 + 6.24 + 0.21 + 1.16)  # 217.61
    assert round_trip("equity_delivery", 2_000, 2_100, 100, on=NEW).total == pytest.approx(237.25 + 217.61)


# --------------------------------------------------------------------------- futures


def test_index_futures_before_the_2024_10_01_stt_change():
    # NIFTY futures, 1 lot of 75: buy @ 24,000 (18,00,000), sell @ 24,100 (18,07,500), on 2024-09-30.
    trip = round_trip(Segment.INDEX_FUTURES, 24_000, 24_100, 75, on=OLD)
    # brokerage: 0.03% × 18,00,000 = 540 > 20, so 20 + 20
    # STT: 0.0125% × 18,07,500 = 225.9375 -> 225.94
    # exchange: 0.0019% × 18,00,000 = 34.20; × 18,07,500 = 34.3425 -> 34.34
    # SEBI: 1.80; 1.8075 -> 1.81
    # stamp: 0.002% × 18,00,000 = 36.00
    # GST: 18% × (20 + 34.20 + 1.80) = 10.08; 18% × (20 + 34.34 + 1.81) = 10.107 -> 10.11
    assert_charges(trip, brokerage=40, stt=225.94, exchange=34.20 + 34.34, sebi=1.80 + 1.81, stamp=36.00,
                   gst=10.08 + 10.11)
    assert trip.total == pytest.approx(102.08 + 292.20)  # 394.28


def test_index_futures_from_2024_10_01_pay_the_new_stt_and_exchange_rate():
    trip = round_trip(Segment.INDEX_FUTURES, 24_000, 24_100, 75, on=date(2024, 10, 1))
    # STT: 0.02% × 18,07,500 = 361.50
    # exchange: 0.00173% × 18,00,000 = 31.14; × 18,07,500 = 31.26975 -> 31.27
    # GST: 18% × (20 + 31.14 + 1.80) = 9.5292 -> 9.53; 18% × (20 + 31.27 + 1.81) = 9.5544 -> 9.55
    assert_charges(trip, brokerage=40, stt=361.50, exchange=31.14 + 31.27, sebi=1.80 + 1.81, stamp=36.00,
                   gst=9.53 + 9.55)
    # buy 20 + 31.14 + 1.80 + 36 + 9.53 = 98.47; sell 20 + 361.50 + 31.27 + 1.81 + 9.55 = 424.13
    assert trip.total == pytest.approx(98.47 + 424.13)  # 522.60


def test_stock_futures_share_the_index_futures_rates():
    index = round_trip("index_futures", 24_000, 24_100, 75, on=NEW)
    stock = round_trip("stock_futures", 24_000, 24_100, 75, on=NEW)
    assert index == stock


# --------------------------------------------------------------------------- options


def test_index_options_after_2024_10_01():
    # NIFTY options: buy 75 @ 100 (7,500), sell 75 @ 120 (9,000) on 2024-11-05.
    buy = charges("index_options", "buy", 100, 75, on=NEW)
    sell = charges("index_options", "sell", 120, 75, on=NEW)
    # brokerage flat ₹20 per order (no 0.03% cap for options)
    # STT: 0.1% × 9,000 = 9.00 on the sell
    # exchange: 0.03503% × 7,500 = 2.62725 -> 2.63; × 9,000 = 3.1527 -> 3.15 (5.78 in all)
    # SEBI: 0.0075 -> 0.01; 0.009 -> 0.01
    # stamp: 0.003% × 7,500 = 0.225 -> 0.23 on the buy
    # GST: 18% × (20 + 2.63 + 0.01) = 4.0752 -> 4.08; 18% × (20 + 3.15 + 0.01) = 4.1688 -> 4.17
    # (GST on the pair's summed base, 18% × 45.80 = 8.244 -> 8.24, is a paisa less: rounding is per order.)
    assert_charges(buy, brokerage=20, stt=0, exchange=2.63, sebi=0.01, stamp=0.23, gst=4.08,
                   total=20 + 2.63 + 0.01 + 0.23 + 4.08)  # 26.95
    assert_charges(sell, brokerage=20, stt=9.00, exchange=3.15, sebi=0.01, stamp=0, gst=4.17,
                   total=20 + 9.00 + 3.15 + 0.01 + 4.17)  # 36.33
    trip = round_trip("index_options", 100, 120, 75, on=NEW)
    assert_charges(trip, turnover=16_500, brokerage=40, stt=9.00, exchange=5.78, sebi=0.02, stamp=0.23, gst=8.25,
                   total=26.95 + 36.33)  # 63.28


def test_index_options_before_2024_10_01():
    trip = round_trip("index_options", 100, 120, 75, on=OLD)
    # STT: 0.0625% × 9,000 = 5.625 -> 5.63
    # exchange: 0.0495% × 7,500 = 3.7125 -> 3.71; × 9,000 = 4.455 -> 4.46
    # GST: 18% × (20 + 3.71 + 0.01) = 4.2696 -> 4.27; 18% × (20 + 4.46 + 0.01) = 4.4046 -> 4.40
    assert_charges(trip, brokerage=40, stt=5.63, exchange=3.71 + 4.46, sebi=0.02, stamp=0.23, gst=4.27 + 4.40)
    # buy 20 + 3.71 + 0.01 + 0.23 + 4.27 = 28.22; sell 20 + 5.63 + 4.46 + 0.01 + 4.40 = 34.50
    assert trip.total == pytest.approx(28.22 + 34.50)  # 62.72


def test_stt_on_derivatives_rises_again_from_2026_04_01():
    # Finance Act 2026: futures 0.02% -> 0.05%, options premium 0.1% -> 0.15%.
    assert rates("index_futures", date(2026, 3, 31)).stt_sell == pytest.approx(0.02e-2)
    assert rates("index_futures", date(2026, 4, 1)).stt_sell == pytest.approx(0.05e-2)
    assert rates("stock_options", date(2026, 4, 1)).stt_sell == pytest.approx(0.15e-2)
    # 0.15% × 9,000 = 13.50
    assert charges("index_options", "sell", 120, 75, on=date(2026, 4, 1)).stt == pytest.approx(13.50)


def test_rates_pick_the_row_in_force_on_the_trade_date():
    assert rates("index_options", OLD).exchange_txn == pytest.approx(0.0495e-2)
    assert rates("index_options", date(2024, 10, 1)).exchange_txn == pytest.approx(0.03503e-2)
    assert rates("equity_delivery", NEW).stt_buy == pytest.approx(0.1e-2)
    assert rates("equity_intraday", date(2020, 7, 1)).effective_from == date(2020, 7, 1)


# --------------------------------------------------------------------------- sides, shorts, brokers


@pytest.mark.parametrize("segment", list(Segment))
def test_stamp_duty_only_on_the_buy_leg(segment):
    buy = charges(segment, Side.BUY, 250, 100, on=NEW)
    sell = charges(segment, Side.SELL, 250, 100, on=NEW)
    assert buy.stamp > 0
    assert sell.stamp == 0


def test_short_round_trip_sells_first_then_buys():
    # Short NIFTY futures: sell 75 @ 24,000 (18,00,000), buy back 75 @ 23,900 (17,92,500), 2024-11-05.
    trip = round_trip("index_futures", 24_000, 23_900, 75, side="short", on=NEW)
    # sell leg: 20 + STT 0.02% × 18,00,000 = 360.00 + exchange 31.14 + SEBI 1.80
    #           + GST 18% × (20 + 31.14 + 1.80) = 9.5292 -> 9.53                    = 422.47
    # buy leg:  20 + exchange 0.00173% × 17,92,500 = 31.01025 -> 31.01 + SEBI 1.7925 -> 1.79
    #           + stamp 0.002% × 17,92,500 = 35.85 + GST 18% × (20 + 31.01 + 1.79) = 9.504 -> 9.50 = 98.15
    assert_charges(trip, turnover=3_592_500, brokerage=40, stt=360.00, exchange=31.14 + 31.01, sebi=1.80 + 1.79,
                   stamp=35.85, gst=9.53 + 9.50, total=422.47 + 98.15)  # 520.62
    # A short entered at 24,100 and covered at 24,000 has the same legs as a long 24,000 -> 24,100.
    assert round_trip("index_futures", 24_100, 24_000, 75, side="short", on=NEW) == round_trip(
        "index_futures", 24_000, 24_100, 75, on=NEW
    )


def test_zero_brokerage_schedule_and_definedge_match_dhan():
    zero = round_trip("index_options", 100, 120, 75, on=NEW, broker="zero")
    # as the options example, less 40 brokerage and its GST: 18% × (2.63 + 0.01) = 0.4752 -> 0.48,
    # 18% × (3.15 + 0.01) = 0.5688 -> 0.57
    assert_charges(zero, brokerage=0, gst=0.48 + 0.57, total=9.00 + 5.78 + 0.02 + 0.23 + 0.48 + 0.57)
    assert round_trip("index_options", 100, 120, 75, on=NEW, broker="Definedge") == round_trip(
        "index_options", 100, 120, 75, on=NEW, broker="dhan"
    )
    assert set(BROKERAGE) == {"dhan", "definedge", "zero"}


# --------------------------------------------------------------------------- vectorised helper


@pytest.mark.parametrize("segment", list(Segment))
def test_order_charges_equals_scalar_charges_on_a_random_batch(segment):
    rng = np.random.default_rng(20241001)
    n = 400
    sides = rng.choice([1, -1], size=n)
    prices = np.round(rng.uniform(0.05, 30_000, size=n), 2)
    quantities = rng.integers(1, 5_000, size=n)
    first, last = np.datetime64("2020-07-01"), np.datetime64("2026-12-31")
    days = first + rng.integers(0, (last - first).astype(int) + 1, size=n).astype("timedelta64[D]")
    days[:4] = np.array(["2024-09-30", "2024-10-01", "2026-03-31", "2026-04-01"], dtype="datetime64[D]")
    got = order_charges(segment, sides, prices, quantities, on_dates=days, broker="dhan")
    want = np.array([
        charges(segment, int(s), float(p), int(q), on=d.astype(object), broker="dhan").total
        for s, p, q, d in zip(sides, prices, quantities, days)
    ])
    assert got.shape == (n,)
    np.testing.assert_array_equal(got, want)


def test_order_charges_takes_one_date_for_all_orders_and_broadcasts():
    got = order_charges("equity_intraday", np.array([1, -1]), np.array([500.0, 510.0]), 10, on_dates=NEW)
    np.testing.assert_allclose(got, [2.11, 3.27])  # the intraday worked example
    assert order_charges("equity_intraday", np.array([], dtype=int), np.array([]), np.array([]), on_dates=NEW).shape == (0,)


def test_order_charges_uses_the_local_date_of_tz_aware_pandas_times():
    import pandas as pd

    # Midnight IST on 2024-10-01 is 2024-09-30 in UTC; the trade date is the IST one.
    when = pd.Series(pd.to_datetime(["2024-10-01 00:00", "2024-09-30 15:29"]).tz_localize("Asia/Kolkata"))
    got = order_charges("index_futures", np.array([1, -1]), np.array([24_000.0, 24_100.0]), 75, on_dates=when)
    # the new-rate buy leg (98.47) and the old-rate sell leg (292.20) of the futures examples
    np.testing.assert_allclose(got, [98.47, 292.20])


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: charges("index_options", "buy", 0, 75, on=NEW), "price must be positive and finite, got 0"),
        (lambda: charges("index_options", "buy", -5.0, 75, on=NEW), "price must be positive and finite, got -5.0"),
        (lambda: charges("index_options", "buy", float("nan"), 75, on=NEW), "price must be positive and finite"),
        (lambda: charges("index_options", "buy", 100, 0, on=NEW), "quantity must be positive and finite, got 0"),
        (lambda: charges("index_options", "buy", "100", 75, on=NEW), "price must be a number, got '100'"),
        (lambda: charges("index_option", "buy", 100, 75, on=NEW), "unknown segment 'index_option'; did you mean 'index_options'?"),
        (lambda: charges("commodity", "buy", 100, 75, on=NEW), "unknown segment 'commodity' (choose from equity_intraday"),
        (lambda: charges("index_options", "hold", 100, 75, on=NEW), "unknown side 'hold': use 'buy' or 'sell'"),
        (lambda: charges("index_options", "buy", 100, 75, on=NEW, broker="dhann"), "unknown broker 'dhann'; did you mean 'dhan'?"),
        (lambda: charges("index_options", "buy", 100, 75, on=NEW, exchange="BSE"), "no rates for exchange 'BSE': only NSE is tabled"),
        (lambda: charges("index_options", "buy", 100, 75, on=date(2020, 6, 30)),
         "no index_options rates before 2020-07-01 (got a trade on 2020-06-30)"),
        (lambda: charges("index_options", "buy", 100, 75, on="30/06/2024"), "trade date '30/06/2024' is not an ISO date"),
        (lambda: charges("index_options", "buy", 100, 75, on=20240630), "trade date must be a date, got 20240630"),
        (lambda: round_trip("index_options", 100, 120, 75, side="flat", on=NEW), "round trip side must be 'long' or 'short', got 'flat'"),
        (lambda: rates("equity_delivery", date(2019, 1, 1)), "no equity_delivery rates before 2020-07-01"),
        (lambda: order_charges("index_options", np.array([1, 0]), np.array([1.0, 2.0]), 75, on_dates=NEW),
         "sides must be +1 (buy) or -1 (sell): 1 bad value(s), first at index 1: 0"),
        (lambda: order_charges("index_options", np.array([1, -1]), np.array([1.0, -2.0]), 75, on_dates=NEW),
         "prices must be positive and finite: 1 bad value(s), first at index 1: -2.0"),
        (lambda: order_charges("index_options", np.array([1, -1]), np.array([1.0, 2.0]), np.array([75, 0]), on_dates=NEW),
         "quantities must be positive and finite: 1 bad value(s), first at index 1: 0.0"),
        (lambda: order_charges("index_options", np.array([1, -1]), np.array([1.0, 2.0, 3.0]), 75, on_dates=NEW),
         "must have matching shapes, got (2,), (3,), (), ()"),
        (lambda: order_charges("index_options", np.array([1, -1]), np.array([1.0, 2.0]), 75,
                               on_dates=np.array(["2024-11-05", "NaT"], dtype="datetime64[D]")),
         "on_dates must be dates, not NaT: 1 bad value(s), first at index 1"),
        (lambda: order_charges("index_options", np.array([1, -1]), np.array([1.0, 2.0]), 75,
                               on_dates=np.array(["2024-11-05", "2019-01-01"], dtype="datetime64[D]")),
         "no index_options rates before 2020-07-01 (got a trade on 2019-01-01)"),
    ],
)
def test_errors_say_what_is_wrong(call, message):
    with pytest.raises(ChargesError) as info:
        call()
    assert message in str(info.value)
    assert isinstance(info.value, TradeflowError) and isinstance(info.value, ValueError)


# --------------------------------------------------------------------------- table and surface


def test_rate_table_covers_every_segment_from_its_first_date():
    for segment in Segment:
        rows = [r for r in RATE_TABLE if segment in r.segments]
        assert min(r.effective_from for r in rows) == date(2020, 7, 1), segment
        assert len({r.effective_from for r in rows}) == len(rows), segment
        for r in rows:
            assert r.market == "NSE" and r.source
            assert r.sebi_fee == pytest.approx(10 / 1e7) and r.gst == pytest.approx(0.18)


def test_charges_print_readably():
    text = str(charges("index_options", "sell", 120, 75, on=NEW))
    assert text.splitlines()[0] == "charges (INR) on turnover 9,000.00"
    assert "STT" in text and text.rstrip().endswith("36.33")


def test_exported_names_and_docstring_examples():
    assert set(costs.__all__) == {
        "Segment", "Side", "Charges", "RateRow", "RATE_TABLE", "BrokerageRule", "BROKERAGE",
        "ChargesError", "charges", "round_trip", "rates", "order_charges",
    }
    assert doctest.testmod(costs).failed == 0

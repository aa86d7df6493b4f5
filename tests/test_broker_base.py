"""Shared pre-trade validation and the order state machine."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from tradeflow.brokers.base import (
    BrokerError, GttKind, GttLeg, GttRequest, Instrument, InstrumentKind, InvalidOrder, Order, OrderRequest, OrderStatus,
    OrderType, Product, Segment, Side, advance, validate_gtt, validate_order,
)
from tradeflow.brokers.ratelimit import TokenBucket

RELIANCE = Instrument("RELIANCE", Segment.NSE_EQ, InstrumentKind.EQUITY, lot_size=1, tick_size=0.05,
                      upper_circuit=3200.0, lower_circuit=2600.0, broker_ids={"dhan": "2885"})
NIFTY_FUT = Instrument("NIFTY24DECFUT", Segment.NSE_FNO, InstrumentKind.FUTIDX, lot_size=75, tick_size=0.05,
                       expiry=dt.date(2024, 12, 26))
NIFTY = Instrument("NIFTY", Segment.NSE_IDX, InstrumentKind.INDEX)


def req(**kw) -> OrderRequest:
    base = {"instrument": RELIANCE, "side": Side.BUY, "quantity": 10, "order_type": OrderType.LIMIT, "price": 2900.0}
    base.update(kw)
    return OrderRequest(**base)


def test_a_good_order_passes():
    validate_order(req())
    validate_order(req(instrument=NIFTY_FUT, quantity=150, product=Product.MARGIN, price=24000.05))
    validate_order(req(order_type=OrderType.SL, price=2905.0, trigger_price=2904.0), last_price=2900.0)
    validate_order(req(side=Side.SELL, order_type=OrderType.SL_M, price=None, trigger_price=2890.0), last_price=2900.0)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"instrument": NIFTY_FUT, "quantity": 100, "product": Product.MARGIN, "price": 24000.0},
         "quantity 100 is not a multiple of the lot size 75; use 75 or 150"),
        ({"quantity": 0}, "quantity must be a positive whole number"),
        ({"price": 2900.03}, "price 2900.03 is off the tick size 0.05; use 2,900.00 or 2,900.05"),
        ({"price": None}, "a LIMIT order needs a price"),
        ({"order_type": OrderType.MARKET}, "a MARKET order takes no price"),
        ({"order_type": OrderType.SL, "price": 2905.0}, "a SL order needs a trigger price"),
        ({"order_type": OrderType.SL, "price": 2900.0, "trigger_price": 2905.0}, "trigger 2905.0 must not be above its limit price"),
        ({"side": Side.SELL, "order_type": OrderType.SL, "price": 2905.0, "trigger_price": 2900.0},
         "a sell stop's trigger 2900.0 must not be below its limit price"),
        ({"price": 3300.0}, "above today's upper circuit 3,200.00"),
        ({"price": 2500.0}, "below today's lower circuit 2,600.00"),
        ({"product": Product.MARGIN}, "product MARGIN is not allowed for NSE_EQ; use DELIVERY or INTRADAY"),
        ({"instrument": NIFTY_FUT, "quantity": 75, "product": Product.DELIVERY, "price": 24000.0},
         "product DELIVERY is not allowed for NSE_FNO; use INTRADAY or MARGIN"),
        ({"tag": "has space"}, "tag 'has space' must be 1-25 letters"),
    ],
)
def test_bad_orders_say_what_to_fix(changes, message):
    with pytest.raises(InvalidOrder) as info:
        validate_order(req(**changes))
    assert message in str(info.value)


def test_stop_trigger_must_be_on_the_right_side_of_the_last_price():
    with pytest.raises(InvalidOrder, match="must be above the last price 2910.0"):
        validate_order(req(order_type=OrderType.SL, price=2905.0, trigger_price=2904.0), last_price=2910.0)
    with pytest.raises(InvalidOrder, match="must be below the last price 2880.0"):
        validate_order(req(side=Side.SELL, order_type=OrderType.SL_M, price=None, trigger_price=2890.0), last_price=2880.0)


def test_indices_cannot_be_traded_and_problems_are_all_listed():
    with pytest.raises(InvalidOrder, match="is an index and cannot be traded"):
        validate_order(req(instrument=NIFTY))
    with pytest.raises(InvalidOrder) as info:
        validate_order(req(quantity=-5, price=2900.01, product=Product.MARGIN))
    assert len(info.value.problems) == 3


def test_gtt_triggers_relative_to_last_price():
    oco = GttRequest(RELIANCE, Side.SELL, GttKind.OCO, (GttLeg(3000.0, 2999.0, 10), GttLeg(2800.0, 2799.0, 10)))
    validate_gtt(oco, last_price=2900.0)
    with pytest.raises(InvalidOrder, match="the target trigger 3000.0 must be above the last price 3050.0"):
        validate_gtt(oco, last_price=3050.0)
    short_cover = GttRequest(RELIANCE, Side.BUY, GttKind.OCO, (GttLeg(2800.0, None, 10), GttLeg(3000.0, None, 10)))
    validate_gtt(short_cover, last_price=2900.0)
    with pytest.raises(InvalidOrder, match="the stop trigger 3000.0 must be above"):
        validate_gtt(short_cover, last_price=3100.0)
    single = GttRequest(RELIANCE, Side.BUY, GttKind.SINGLE, (GttLeg(2900.0, 2900.0, 10),))
    with pytest.raises(InvalidOrder, match="equals the last price"):
        validate_gtt(single, last_price=2900.0)
    with pytest.raises(InvalidOrder, match="target leg: quantity 5 is not a multiple of the lot size 75"):
        validate_gtt(GttRequest(NIFTY_FUT, Side.SELL, GttKind.OCO, (GttLeg(24100.0, None, 5), GttLeg(23900.0, None, 75)),
                                product=Product.MARGIN), last_price=24000.0)


def test_state_machine_allows_only_real_moves():
    o = Order("1", req(), OrderStatus.PENDING)
    t0 = pd.Timestamp("2024-01-02 09:15", tz="UTC")
    o = advance(o, OrderStatus.OPEN, at=t0)
    o = advance(o, OrderStatus.PARTIALLY_FILLED, at=t0, filled_quantity=4)
    o = advance(o, OrderStatus.PARTIALLY_FILLED, at=t0, filled_quantity=7)
    o = advance(o, OrderStatus.FILLED, at=t0, filled_quantity=10, average_price=2900.0)
    assert [s for _, s in o.history] == [OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED]
    assert o.filled_quantity == 10 and o.status.is_final
    with pytest.raises(BrokerError, match="reported CANCELLED after FILLED, which cannot happen"):
        advance(o, OrderStatus.CANCELLED)
    with pytest.raises(BrokerError):
        advance(advance(Order("2", req(), OrderStatus.PENDING), OrderStatus.REJECTED), OrderStatus.OPEN)


def test_token_bucket_spaces_calls():
    now = [0.0]
    waits = []

    def sleep(s):
        waits.append(s)
        now[0] += s

    b = TokenBucket(2.0, capacity=2.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(6):
        b.acquire()
    assert now[0] == pytest.approx(2.0)  # 2 free, then 4 more at 2/s
    assert sum(waits) == pytest.approx(2.0)

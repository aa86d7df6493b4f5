"""The paper broker: fill rules, charges, funds, modify/cancel, P&L, GTT, persistence."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from tradeflow import costs
from tradeflow.brokers.base import (
    Broker, BrokerError, GttKind, GttLeg, GttRequest, Instrument, InstrumentKind, InvalidOrder, OptionType,
    OrderRejected, OrderRequest, OrderStatus, OrderType, Product, Segment, Side, Validity,
)
from tradeflow.brokers.paper import PaperBroker
from tradeflow.feeds import Tick

REL = Instrument("RELIANCE", Segment.NSE_EQ, InstrumentKind.EQUITY, tick_size=0.05)
FUT = Instrument("NIFTY24DECFUT", Segment.NSE_FNO, InstrumentKind.FUTIDX, lot_size=25, tick_size=0.05)
OPT = Instrument("NIFTY24DEC24000CE", Segment.NSE_FNO, InstrumentKind.OPTIDX, lot_size=25, tick_size=0.05,
                 strike=24000.0, option_type=OptionType.CE)
DAY = pd.Timestamp("2024-11-05 10:00", tz="Asia/Kolkata")


class Clock:
    def __init__(self):
        self.t = DAY

    def __call__(self):
        self.t = self.t + pd.Timedelta(seconds=1)
        return self.t


@pytest.fixture
def path(tmp_path):
    return tmp_path / "paper.duckdb"


@pytest.fixture
def broker(path):
    b = PaperBroker(db_path=path, cash=1_000_000.0, instruments=[REL, FUT, OPT], clock=Clock())
    yield b
    b.close()


def q(b, symbol, last, bid=None, ask=None, minute=0):
    b.on_quote(symbol, last, bid=bid, ask=ask, ts=DAY + pd.Timedelta(minutes=minute))


def buy(inst=REL, qty=10, **kw):
    return OrderRequest(inst, Side.BUY, qty, **kw)


def sell(inst=REL, qty=10, **kw):
    return OrderRequest(inst, Side.SELL, qty, **kw)


def test_is_a_broker(broker):
    assert isinstance(broker, Broker)
    assert broker.name == "paper" and broker.live is False
    assert broker.instruments() == [REL, FUT, OPT]
    with pytest.raises(BrokerError, match="no history; use the store"):
        broker.history(REL, "1m", DAY, DAY)


def test_default_file_under_data_dir(tmp_path):
    b = PaperBroker()
    try:
        assert b.db_path == tmp_path / "data" / "paper" / "paper.duckdb" and b.db_path.exists()
    finally:
        b.close()


def test_market_fills_at_next_tick_at_ask_and_bid(broker):
    q(broker, "RELIANCE", 2500.0, bid=2499.9, ask=2500.1)
    o = broker.place_order(buy())
    assert o.status is OrderStatus.OPEN and o.order_id == "P000001"
    assert [s for _, s in o.history] == [OrderStatus.PENDING, OrderStatus.OPEN]
    q(broker, "RELIANCE", 2501.0, bid=2500.95, ask=2501.05, minute=1)
    f = broker.order(o.order_id)
    assert f.status is OrderStatus.FILLED and f.average_price == 2501.05 and f.filled_quantity == 10
    assert [s for _, s in f.history] == [OrderStatus.PENDING, OrderStatus.OPEN, OrderStatus.FILLED]
    s = broker.place_order(sell())
    q(broker, "RELIANCE", 2502.0, bid=2501.9, ask=2502.1, minute=2)
    assert broker.order(s.order_id).average_price == 2501.9


def test_market_without_bid_ask_pays_slippage(path):
    b = PaperBroker(db_path=path, slippage_ticks=2, clock=Clock())
    b.on_tick(Tick("RELIANCE", DAY, 2500.0))
    o1 = b.place_order(buy(product=Product.INTRADAY))
    o2 = b.place_order(sell(qty=5, product=Product.INTRADAY))
    b.on_tick(Tick("RELIANCE", DAY + pd.Timedelta(minutes=1), 2510.0))
    assert b.order(o1.order_id).average_price == pytest.approx(2510.10)
    assert b.order(o2.order_id).average_price == pytest.approx(2509.90)
    b.close()


def test_market_with_no_quote_is_rejected(broker):
    with pytest.raises(OrderRejected, match="no price known"):
        broker.place_order(buy())
    assert broker.orders() == []


def test_limit_fills_only_when_price_trades_through(broker):
    q(broker, "RELIANCE", 2500.0)
    o = broker.place_order(buy(order_type=OrderType.LIMIT, price=2490.0))
    q(broker, "RELIANCE", 2495.0, minute=1)
    assert broker.order(o.order_id).status is OrderStatus.OPEN
    q(broker, "RELIANCE", 2490.0, minute=2)
    f = broker.order(o.order_id)
    assert f.status is OrderStatus.FILLED and f.average_price == 2490.0
    s = broker.place_order(sell(order_type=OrderType.LIMIT, price=2500.0))
    q(broker, "RELIANCE", 2505.0, minute=3)  # gaps through: filled at the better price
    assert broker.order(s.order_id).average_price == 2505.0


def test_sl_triggers_then_behaves_as_limit(broker):
    q(broker, "RELIANCE", 2500.0)
    o = broker.place_order(buy(order_type=OrderType.SL, trigger_price=2510.0, price=2512.0))
    q(broker, "RELIANCE", 2509.0, minute=1)
    assert broker.order(o.order_id).status is OrderStatus.OPEN
    q(broker, "RELIANCE", 2515.0, minute=2)  # triggered, but above the limit: rests
    assert broker.order(o.order_id).status is OrderStatus.OPEN
    q(broker, "RELIANCE", 2511.0, minute=3)
    f = broker.order(o.order_id)
    assert f.status is OrderStatus.FILLED and f.average_price == 2511.0


def test_sl_m_triggers_and_fills_as_market(broker):
    q(broker, "RELIANCE", 2500.0)
    broker.place_order(buy(qty=10))
    q(broker, "RELIANCE", 2500.0, minute=1)
    o = broker.place_order(sell(order_type=OrderType.SL_M, trigger_price=2490.0))
    q(broker, "RELIANCE", 2491.0, minute=2)
    assert broker.order(o.order_id).status is OrderStatus.OPEN
    q(broker, "RELIANCE", 2489.0, bid=2488.95, ask=2489.05, minute=3)
    f = broker.order(o.order_id)
    assert f.status is OrderStatus.FILLED and f.average_price == 2488.95


def test_charges_equal_costs_and_round_trip_pnl(broker):
    q(broker, "RELIANCE", 2500.0, bid=2499.95, ask=2500.05)
    b = broker.place_order(buy(qty=10))
    q(broker, "RELIANCE", 2500.0, bid=2499.95, ask=2500.05, minute=1)
    s = broker.place_order(sell(qty=10))
    q(broker, "RELIANCE", 2520.0, bid=2519.95, ask=2520.05, minute=2)
    day = dt.date(2024, 11, 5)
    c_buy = costs.charges(costs.Segment.EQUITY_INTRADAY, "buy", 2500.05, 10, on=day).total
    c_sell = costs.charges(costs.Segment.EQUITY_INTRADAY, "sell", 2519.95, 10, on=day).total
    assert broker.charges_paid(b.order_id) == c_buy
    assert broker.charges_paid(s.order_id) == c_sell
    (pos,) = broker.positions()
    gross = (2519.95 - 2500.05) * 10
    assert pos.quantity == 0 and pos.realized_pnl == pytest.approx(gross)  # gross of charges
    f = broker.funds()
    assert f.total == pytest.approx(1_000_000 + gross - c_buy - c_sell)  # cash is net of charges
    assert f.used == 0 and f.available == f.total
    assert [t.price for t in broker.trades()] == [2500.05, 2519.95]


def test_fno_segments_and_margin(broker):
    q(broker, "NIFTY24DECFUT", 24000.0, bid=23999.95, ask=24000.05)
    o = broker.place_order(buy(FUT, 25, product=Product.MARGIN))
    q(broker, "NIFTY24DECFUT", 24100.0, bid=24099.95, ask=24100.05, minute=1)
    assert broker.charges_paid(o.order_id) == costs.charges("index_futures", "buy", 24100.05, 25,
                                                            on=dt.date(2024, 11, 5)).total
    (pos,) = broker.positions()
    assert pos.unrealized_pnl == pytest.approx((24100.0 - 24100.05) * 25)
    assert broker.funds().used == pytest.approx(round(0.15 * 24100.05 * 25, 2))
    q(broker, "NIFTY24DEC24000CE", 120.0)
    broker.place_order(buy(OPT, 25, order_type=OrderType.LIMIT, price=120.0))
    q(broker, "NIFTY24DEC24000CE", 119.0, minute=2)
    t = broker.trades()[-1]
    assert t.price == 119.0
    assert broker.charges_paid(t.order_id) == costs.charges("index_options", "buy", 119.0, 25,
                                                            on=dt.date(2024, 11, 5)).total


def test_funds_rejection_stores_nothing(path):
    b = PaperBroker(db_path=path, cash=10_000.0, clock=Clock())
    q(b, "RELIANCE", 2500.0)
    with pytest.raises(OrderRejected, match="insufficient funds"):
        b.place_order(buy(qty=10))
    assert b.orders() == [] and b.funds().available == 10_000.0
    ok = b.place_order(buy(qty=3))
    assert ok.order_id == "P000001"
    with pytest.raises(OrderRejected, match="insufficient funds"):  # the open order's reserve counts
        b.place_order(buy(qty=1))
    b.close()


def test_delivery_cannot_be_sold_short(broker):
    q(broker, "RELIANCE", 2500.0)
    with pytest.raises(OrderRejected, match="delivery cannot be sold short"):
        broker.place_order(sell(product=Product.DELIVERY))
    broker.place_order(buy(product=Product.DELIVERY))
    q(broker, "RELIANCE", 2500.0, minute=1)
    (h,) = broker.holdings()
    assert h.quantity == 10
    broker.place_order(sell(qty=10, product=Product.DELIVERY, order_type=OrderType.LIMIT, price=2600.0))
    with pytest.raises(OrderRejected, match="open sell orders cover 10"):
        broker.place_order(sell(qty=1, product=Product.DELIVERY))


def test_invalid_orders_touch_nothing(broker):
    q(broker, "RELIANCE", 2500.0)
    before = broker.funds()
    with pytest.raises(InvalidOrder, match="tick size"):
        broker.place_order(buy(order_type=OrderType.LIMIT, price=2500.03))
    with pytest.raises(InvalidOrder, match="must be above the last price"):
        broker.place_order(buy(order_type=OrderType.SL_M, trigger_price=2490.0))
    with pytest.raises(InvalidOrder, match="lot size"):
        broker.place_order(buy(FUT, 10, product=Product.MARGIN))
    assert broker.orders() == [] and broker.funds() == before


def test_modify_and_cancel_rules(broker):
    q(broker, "RELIANCE", 2500.0)
    o = broker.place_order(buy(order_type=OrderType.LIMIT, price=2400.0))
    m = broker.modify_order(o.order_id, price=2450.0, quantity=20)
    assert m.request.price == 2450.0 and m.request.quantity == 20 and m.status is OrderStatus.OPEN
    with pytest.raises(InvalidOrder, match="tick size"):
        broker.modify_order(o.order_id, price=2450.01)
    assert broker.order(o.order_id).request.price == 2450.0
    with pytest.raises(OrderRejected, match="insufficient funds"):
        broker.modify_order(o.order_id, quantity=1000)
    m = broker.modify_order(o.order_id, order_type=OrderType.MARKET)
    assert m.request.price is None
    q(broker, "RELIANCE", 2501.0, minute=1)
    with pytest.raises(OrderRejected, match="already filled"):
        broker.cancel_order(o.order_id)
    with pytest.raises(OrderRejected, match="only open orders"):
        broker.modify_order(o.order_id, quantity=5)
    c = broker.place_order(sell(qty=5, order_type=OrderType.LIMIT, price=2600.0))
    c = broker.cancel_order(c.order_id)
    assert c.status is OrderStatus.CANCELLED
    assert [s for _, s in c.history] == [OrderStatus.PENDING, OrderStatus.OPEN, OrderStatus.CANCELLED]
    with pytest.raises(OrderRejected, match="already cancelled"):
        broker.cancel_order(c.order_id)
    q(broker, "RELIANCE", 2700.0, minute=2)
    assert broker.order(c.order_id).status is OrderStatus.CANCELLED
    with pytest.raises(BrokerError, match="no paper order"):
        broker.order("P999999")


def test_order_by_tag(broker):
    q(broker, "RELIANCE", 2500.0)
    assert broker.order_by_tag("run1-bar5-entry") is None
    o = broker.place_order(buy(tag="run1-bar5-entry"))
    assert broker.order_by_tag("run1-bar5-entry").order_id == o.order_id


def test_gtt_single_both_directions(broker):
    q(broker, "RELIANCE", 2500.0)
    up = broker.place_gtt(GttRequest(REL, Side.BUY, GttKind.SINGLE, (GttLeg(2550.0, None, 5),), Product.INTRADAY))
    down = broker.place_gtt(GttRequest(REL, Side.BUY, GttKind.SINGLE, (GttLeg(2450.0, 2450.0, 5),), Product.INTRADAY))
    q(broker, "RELIANCE", 2549.0, minute=1)
    assert {g.status for g in broker.gtts()} == {"ACTIVE"}
    q(broker, "RELIANCE", 2551.0, minute=2)
    assert broker.gtts()[0].status == "TRIGGERED" and broker.gtts()[1].status == "ACTIVE"
    o = broker.gtt_order(up.gtt_id)
    assert o.status is OrderStatus.OPEN and o.request.order_type is OrderType.MARKET
    q(broker, "RELIANCE", 2552.0, minute=3)
    assert broker.order(o.order_id).average_price == pytest.approx(2552.05)
    q(broker, "RELIANCE", 2449.0, minute=4)
    o2 = broker.gtt_order(down.gtt_id)
    assert o2.request.order_type is OrderType.LIMIT and o2.request.price == 2450.0
    q(broker, "RELIANCE", 2448.0, minute=5)
    assert broker.order(o2.order_id).average_price == 2448.0


def test_gtt_oco_cancels_other_leg_and_rules(broker):
    q(broker, "RELIANCE", 2500.0)
    with pytest.raises(InvalidOrder, match="must be above the last price"):
        broker.place_gtt(GttRequest(REL, Side.SELL, GttKind.OCO, (GttLeg(2450.0, None, 10), GttLeg(2400.0, None, 10))))
    assert broker.gtts() == []
    broker.place_order(buy(product=Product.DELIVERY))
    q(broker, "RELIANCE", 2500.0, minute=1)
    g = broker.place_gtt(GttRequest(REL, Side.SELL, GttKind.OCO,
                                    (GttLeg(2600.0, 2600.0, 10), GttLeg(2450.0, None, 10)), Product.DELIVERY))
    g2 = broker.modify_gtt(g.gtt_id, GttRequest(REL, Side.SELL, GttKind.OCO,
                                                (GttLeg(2600.0, 2600.0, 10), GttLeg(2460.0, None, 10)), Product.DELIVERY))
    assert g2.request.stop.trigger_price == 2460.0
    q(broker, "RELIANCE", 2455.0, minute=2)  # the stop fires
    assert broker.gtts()[0].status == "TRIGGERED"
    stop = broker.gtt_order(g.gtt_id)
    assert stop.request.order_type is OrderType.MARKET
    q(broker, "RELIANCE", 2454.0, minute=3)
    q(broker, "RELIANCE", 2700.0, minute=4)  # the target leg is gone: no second order
    assert len(broker.orders()) == 2 and broker.holdings() == []
    with pytest.raises(OrderRejected, match="only active"):
        broker.cancel_gtt(g.gtt_id)
    other = broker.place_gtt(GttRequest(REL, Side.BUY, GttKind.SINGLE, (GttLeg(2800.0, None, 1),), Product.INTRADAY))
    broker.cancel_gtt(other.gtt_id)
    q(broker, "RELIANCE", 2900.0, minute=5)
    assert broker.gtts()[-1].status == "CANCELLED" and len(broker.orders()) == 2


def test_persistence_across_instances(path):
    b = PaperBroker(db_path=path, cash=500_000.0, clock=Clock())
    q(b, "RELIANCE", 2500.0)
    f = b.place_order(buy(qty=10, tag="keep-1"))
    q(b, "RELIANCE", 2500.0, minute=1)
    rest = b.place_order(sell(qty=10, order_type=OrderType.LIMIT, price=2600.0))
    g = b.place_gtt(GttRequest(REL, Side.BUY, GttKind.SINGLE, (GttLeg(2300.0, None, 1),), Product.INTRADAY))
    snapshot = (b.orders(), b.trades(), b.positions(), b.funds(), b.gtts())
    b.close()

    b2 = PaperBroker(db_path=path, cash=1.0, clock=Clock())  # cash ignored: the account exists
    assert (b2.orders(), b2.trades(), b2.positions(), b2.funds(), b2.gtts()) == snapshot
    assert b2.order_by_tag("keep-1").order_id == f.order_id
    assert b2.quote([REL])["RELIANCE"].last_price == 2500.0
    new = b2.place_order(buy(qty=1, order_type=OrderType.LIMIT, price=2000.0))
    assert new.order_id == "P000003"  # ids carry on across restarts
    q(b2, "RELIANCE", 2600.0, minute=2)  # the order accepted before the restart fills now
    assert b2.order(rest.order_id).status is OrderStatus.FILLED
    q(b2, "RELIANCE", 2290.0, minute=3)
    assert b2.gtts()[0].status == "TRIGGERED" and b2.gtt_order(g.gtt_id).order_id == "P000004"
    b2.close()
    b3 = PaperBroker(db_path=path)
    assert b3.positions()[0].realized_pnl == pytest.approx((2600.0 - 2500.05) * 10)
    assert b3.gtts()[0].status == "TRIGGERED"
    b3.close()


# ---------------------------------------------------------------------- DAY expiry

NEXT = DAY + pd.Timedelta(days=1)  # 2024-11-06 10:00 IST


def test_end_of_day_expires_open_day_orders_and_releases_funds(path):
    b = PaperBroker(db_path=path, cash=1_000_000.0, clock=Clock())
    q(b, "RELIANCE", 2500.0)
    day_order = b.place_order(buy(order_type=OrderType.LIMIT, price=2400.0))
    ioc = b.place_order(buy(order_type=OrderType.LIMIT, price=2400.0, validity=Validity.IOC))
    filled = b.place_order(buy())
    q(b, "RELIANCE", 2500.0, minute=1)  # fills the market order, cancels the IOC
    assert b.funds().used > 0
    close = pd.Timestamp("2024-11-05 15:30", tz="Asia/Kolkata")
    (gone,) = b.end_of_day(close)
    assert gone.order_id == day_order.order_id and gone.status is OrderStatus.EXPIRED
    assert gone.message == "expired at the close" and gone.updated_at == close
    assert [s for _, s in gone.history] == [OrderStatus.PENDING, OrderStatus.OPEN, OrderStatus.EXPIRED]
    assert b.order(ioc.order_id).status is OrderStatus.CANCELLED
    assert b.order(filled.order_id).status is OrderStatus.FILLED
    assert b.funds().used == pytest.approx(2500.05 * 10)  # only the position's margin (at the slipped fill) is left
    assert b.end_of_day(close) == []  # a second call changes nothing
    q(b, "RELIANCE", 2300.0, minute=2)  # an expired order never fills
    assert b.order(day_order.order_id).status is OrderStatus.EXPIRED and len(b.trades()) == 1
    b.close()
    b2 = PaperBroker(db_path=path)
    assert b2.order(day_order.order_id).status is OrderStatus.EXPIRED
    b2.close()


def test_end_of_day_keeps_orders_placed_after_its_date(path):
    clock = Clock()
    b = PaperBroker(db_path=path, clock=clock)
    q(b, "RELIANCE", 2500.0)
    clock.t = NEXT
    tomorrow = b.place_order(buy(order_type=OrderType.LIMIT, price=2400.0))
    assert b.end_of_day(DAY.replace(hour=15, minute=30)) == []
    assert b.order(tomorrow.order_id).status is OrderStatus.OPEN
    (gone,) = b.end_of_day(pd.Timestamp("2024-11-06 10:00:30", tz="UTC"))  # 15:30:30 IST on the 6th
    assert gone.order_id == tomorrow.order_id
    b.close()


def test_end_of_day_needs_a_time_zone(broker):
    with pytest.raises(BrokerError, match="no time zone"):
        broker.end_of_day(pd.Timestamp("2024-11-05 15:30"))


def test_day_order_expires_on_the_next_days_first_quote_before_it_could_fill(path):
    clock = Clock()
    b = PaperBroker(db_path=path, clock=clock)
    q(b, "RELIANCE", 2500.0)
    stale = b.place_order(buy(order_type=OrderType.LIMIT, price=2400.0))
    late = b.place_order(buy())  # placed after the last quote of the day: never filled that day
    b.on_quote("RELIANCE", 2300.0, ts=NEXT)  # would fill both, but a new IST date came first
    for oid in (stale.order_id, late.order_id):
        o = b.order(oid)
        assert o.status is OrderStatus.EXPIRED and o.message == "expired at the close of 2024-11-05"
        assert o.updated_at == NEXT
    assert b.trades() == [] and b.funds().used == 0
    clock.t = NEXT
    fresh = b.place_order(buy(order_type=OrderType.LIMIT, price=2300.0))  # today's orders work as before
    b.on_quote("RELIANCE", 2299.0, ts=NEXT + pd.Timedelta(minutes=1))
    assert b.order(fresh.order_id).status is OrderStatus.FILLED
    b.close()


def test_a_quote_of_any_symbol_on_a_later_date_expires_yesterdays_day_orders(path):
    b = PaperBroker(db_path=path, clock=Clock())
    q(b, "RELIANCE", 2500.0)
    q(b, "NIFTY24DECFUT", 24000.0)
    o = b.place_order(buy(order_type=OrderType.LIMIT, price=2400.0))
    ioc = b.place_order(buy(order_type=OrderType.LIMIT, price=2400.0, validity=Validity.IOC))
    q(b, "NIFTY24DECFUT", 24010.0, minute=30)  # same day: nothing expires
    assert b.order(o.order_id).status is OrderStatus.OPEN
    b.on_quote("NIFTY24DECFUT", 24020.0, ts=NEXT)
    assert b.order(o.order_id).status is OrderStatus.EXPIRED
    assert b.order(ioc.order_id).status is OrderStatus.OPEN  # only DAY orders expire
    b.close()


def test_quotes_after_the_close_on_the_same_day_do_not_expire(path):
    b = PaperBroker(db_path=path, clock=Clock())
    q(b, "RELIANCE", 2500.0)
    o = b.place_order(buy(order_type=OrderType.LIMIT, price=2400.0))
    b.on_quote("RELIANCE", 2450.0, ts=pd.Timestamp("2024-11-05 23:59:59", tz="Asia/Kolkata"))
    assert b.order(o.order_id).status is OrderStatus.OPEN
    b.on_quote("RELIANCE", 2450.0, ts=pd.Timestamp("2024-11-05 18:30", tz="UTC"))  # 00:00 IST on the 6th
    assert b.order(o.order_id).status is OrderStatus.EXPIRED
    b.close()


def test_day_orders_expire_after_a_restart_and_gtt_orders_by_their_trigger_date(path):
    b = PaperBroker(db_path=path, clock=Clock())
    q(b, "RELIANCE", 2500.0)
    o = b.place_order(buy(order_type=OrderType.LIMIT, price=2400.0))
    g = b.place_gtt(GttRequest(REL, Side.BUY, GttKind.SINGLE, (GttLeg(2550.0, 2500.0, 5),), Product.INTRADAY))
    q(b, "RELIANCE", 2551.0, minute=5)  # the GTT places a LIMIT 2500 that rests
    placed = b.gtt_order(g.gtt_id)
    assert placed.status is OrderStatus.OPEN
    b.close()
    b2 = PaperBroker(db_path=path, clock=Clock())
    b2.on_quote("RELIANCE", 2300.0, ts=NEXT)
    assert b2.order(o.order_id).status is OrderStatus.EXPIRED
    assert b2.order(placed.order_id).status is OrderStatus.EXPIRED and b2.trades() == []
    b2.close()


def test_modify_keeps_the_placement_date(path):
    clock = Clock()
    b = PaperBroker(db_path=path, clock=clock)
    q(b, "RELIANCE", 2500.0)
    o = b.place_order(buy(order_type=OrderType.LIMIT, price=2400.0))
    clock.t = NEXT
    b.modify_order(o.order_id, price=2410.0)  # modified on the 6th, placed on the 5th
    b.on_quote("RELIANCE", 2450.0, ts=NEXT + pd.Timedelta(minutes=1))
    assert b.order(o.order_id).status is OrderStatus.EXPIRED
    b.close()


# ---------------------------------------------------------------------- the per-symbol book and quotes out


def test_same_symbol_orders_fill_in_placement_order_and_others_wait(broker):
    q(broker, "RELIANCE", 2500.0)
    q(broker, "NIFTY24DECFUT", 24000.0)
    a = broker.place_order(buy(qty=1))
    f = broker.place_order(buy(FUT, 25, product=Product.MARGIN, order_type=OrderType.LIMIT, price=23900.0))
    c = broker.place_order(buy(qty=2, order_type=OrderType.LIMIT, price=2500.0))
    d = broker.place_order(sell(qty=3))
    q(broker, "RELIANCE", 2500.0, minute=1)
    assert [t.order_id for t in broker.trades()] == [a.order_id, c.order_id, d.order_id]
    assert broker.order(f.order_id).status is OrderStatus.OPEN
    q(broker, "NIFTY24DECFUT", 23890.0, minute=2)
    assert broker.order(f.order_id).status is OrderStatus.FILLED


def test_on_tick_takes_the_fast_path_and_the_checked_one(broker):
    broker.on_tick(Tick("RELIANCE", DAY, 2500.0))
    o = broker.place_order(buy())
    broker.on_tick(Tick("RELIANCE", DAY + pd.Timedelta(minutes=1), 2510.0))
    assert broker.order(o.order_id).average_price == pytest.approx(2510.05)

    class Naive:  # not a feeds.Tick: checked like on_quote
        symbol, price, ts = "RELIANCE", 2500.0, pd.Timestamp("2024-11-05 10:05")

    with pytest.raises(BrokerError, match="no time zone"):
        broker.on_tick(Naive())
    Naive.ts, Naive.price = DAY + pd.Timedelta(minutes=2), float("nan")
    with pytest.raises(BrokerError, match="positive number"):
        broker.on_tick(Naive())
    Naive.price = 2520
    broker.on_tick(Naive())
    assert broker.last_quote("RELIANCE").last_price == 2520.0


def test_last_quote(broker, path):
    assert broker.last_quote("RELIANCE") is None
    q(broker, "RELIANCE", 2500.0, bid=2499.95, ask=2500.05)
    lq = broker.last_quote("RELIANCE")
    assert lq.instrument == REL and (lq.last_price, lq.bid, lq.ask) == (2500.0, 2499.95, 2500.05)
    assert lq.time == DAY and str(lq.time.tz) == "UTC"
    assert broker.last_quote(REL) == lq == broker.quote([REL])["RELIANCE"]
    assert broker.last_quote("TCS") is None
    broker.on_quote("TCS", 4000.0, ts=DAY)  # quoted, but no instrument known: a stand-in, never an error
    stand_in = broker.last_quote("TCS")
    assert stand_in.last_price == 4000.0 and stand_in.instrument.symbol == "TCS"
    assert stand_in.instrument.name == "(not known to the paper broker)"
    tcs = Instrument("TCS", Segment.NSE_EQ, InstrumentKind.EQUITY, tick_size=0.1)
    assert broker.last_quote(tcs).instrument is tcs

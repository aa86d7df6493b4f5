"""Contract tests: ``DhanBroker`` with the real dhanhq SDK against a fake Dhan on 127.0.0.1.

Each test scripts the fake's replies (shapes from the Dhan v2 docs and the recorded
captures), then checks what went over the wire (method, path, headers, JSON body) and what
came back as tradeflow records or errors.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tradeflow.brokers.base import (
    Broker,
    BrokerError,
    BrokerUnavailable,
    GttKind,
    GttLeg,
    GttRequest,
    Instrument,
    InstrumentKind,
    InvalidOrder,
    OrderRejected,
    OrderRequest,
    OrderStatus,
    OrderType,
    Product,
    RateLimited,
    Segment,
    SessionExpired,
    Side,
    Validity,
)
from tradeflow.brokers.dhan import DEFAULT_RATES, DhanBroker
from tradeflow.brokers.ratelimit import reset_buckets

CLIENT = "1000000001"
TOKEN = "FAKE-ACCESS-TOKEN-c0ffee-7f3a9c"
IST = "Asia/Kolkata"
FAST = {"orders": 1000.0, "history": 1000.0, "quotes": 1000.0, "other": 1000.0}

TCS = Instrument("TCS", Segment.NSE_EQ, InstrumentKind.EQUITY, broker_ids={"dhan": "11536"})
HDFCBANK = Instrument("HDFCBANK", Segment.NSE_EQ, InstrumentKind.EQUITY, broker_ids={"dhan": "1333"})
NIFTY_FUT = Instrument("NIFTY-JAN2026-FUT", Segment.NSE_FNO, InstrumentKind.FUTIDX, lot_size=75, tick_size=0.1,
                       broker_ids={"dhan": "49081"})
NIFTY = Instrument("NIFTY", Segment.NSE_IDX, InstrumentKind.INDEX, broker_ids={"dhan": "13"})
NO_ID = Instrument("NOID", Segment.NSE_EQ, InstrumentKind.EQUITY)
INSTRUMENTS = [TCS, HDFCBANK, NIFTY_FUT, NIFTY]


# ---------------------------------------------------------------------- the fake Dhan


@dataclass
class Call:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    at: float


@dataclass
class Route:
    method: str
    pattern: re.Pattern
    reply: Any
    status: int
    delay: float
    raw: str | None
    times: int | None
    content_type: str
    used: int = 0


@dataclass
class FakeDhan:
    """Scripted replies by (method, path regex), newest route first; records every request on arrival."""

    base: str = ""
    routes: list[Route] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on(self, method: str, path: str, reply: Any = None, status: int = 200, *, delay: float = 0.0,
           raw: str | None = None, times: int | None = None, content_type: str = "application/json") -> None:
        self.routes.insert(0, Route(method, re.compile(path), reply, status, delay, raw, times, content_type))

    def __call__(self, request: Request) -> Response:
        text = request.get_data(as_text=True)
        call = Call(request.method, request.path, dict(request.headers), json.loads(text) if text else None, time.monotonic())
        with self.lock:
            self.calls.append(call)
            route = next((r for r in self.routes if r.method == request.method and r.pattern.fullmatch(request.path)
                          and (r.times is None or r.used < r.times)), None)
            if route is not None:
                route.used += 1
        if route is None:
            return Response(json.dumps({"errorType": "NotFound", "errorCode": "DH-910", "errorMessage": "no route"}), 404,
                            content_type="application/json")
        reply = route.reply(call) if callable(route.reply) else route.reply
        if route.delay:
            time.sleep(route.delay)
        if isinstance(reply, Response):
            return reply
        if route.raw is not None:
            return Response(route.raw, route.status, content_type=route.content_type)
        return Response(json.dumps(reply), route.status, content_type="application/json")

    def made(self, method: str | None = None, path: str | None = None) -> list[Call]:
        return [c for c in self.calls if (method is None or c.method == method) and (path is None or re.fullmatch(path, c.path))]


@pytest.fixture(scope="module")
def _server():
    srv = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    srv.start()
    holder: dict[str, FakeDhan] = {}
    srv.expect_request(re.compile(r".*")).respond_with_handler(lambda request: holder["fake"](request))
    yield srv, holder
    srv.clear()
    srv.stop()


@pytest.fixture
def fake(_server) -> FakeDhan:
    srv, holder = _server
    holder["fake"] = FakeDhan(base=srv.url_for("/v2"))
    srv.clear_handler_errors()
    yield holder["fake"]
    assert not srv.handler_errors, srv.handler_errors


@pytest.fixture(autouse=True)
def _fresh_buckets():
    reset_buckets()
    yield
    reset_buckets()


@pytest.fixture
def make(fake):
    def build(**kw) -> DhanBroker:
        kw.setdefault("instruments", INSTRUMENTS)
        kw.setdefault("rates", FAST)
        kw.setdefault("retry_wait", 0.01)
        kw.setdefault("tag_lookup_wait", 0.01)
        kw.setdefault("timeout", 5)
        return DhanBroker(CLIENT, TOKEN, base_url=fake.base, **kw)

    return build


def err(code: str, message: str, kind: str = "Input_Exception") -> dict:
    return {"errorType": kind, "errorCode": code, "errorMessage": message}


def order_row(**changes) -> dict:
    row = {
        "dhanClientId": CLIENT, "orderId": "112111182198", "exchangeOrderId": "1100000012345", "correlationId": "tag1",
        "orderStatus": "PENDING", "transactionType": "BUY", "exchangeSegment": "NSE_EQ", "productType": "INTRADAY",
        "orderType": "LIMIT", "validity": "DAY", "tradingSymbol": "TCS", "securityId": "11536", "quantity": 5,
        "disclosedQuantity": 0, "price": 3345.8, "triggerPrice": 0.0, "afterMarketOrder": False, "boProfitValue": 0.0,
        "boStopLossValue": 0.0, "legName": None, "createTime": "2026-01-05 10:00:00", "updateTime": "2026-01-05 10:00:05",
        "exchangeTime": "2026-01-05 10:00:01", "drvExpiryDate": None, "drvOptionType": None, "drvStrikePrice": 0.0,
        "omsErrorCode": None, "omsErrorDescription": None, "algoId": "0", "remainingQuantity": 5,
        "averageTradedPrice": 0, "filledQty": 0,
    }
    row.update(changes)
    return row


def assert_auth(call: Call) -> None:
    assert call.headers.get("Access-Token") == TOKEN
    assert call.headers.get("Client-Id") == CLIENT


# ---------------------------------------------------------------------- construction


def test_missing_credentials_name_the_variables_to_set():
    with pytest.raises(SessionExpired, match="DHAN_CLIENT_ID and DHAN_ACCESS_TOKEN"):
        DhanBroker()
    with pytest.raises(SessionExpired, match="set DHAN_ACCESS_TOKEN") as info:
        DhanBroker("1000000001")
    assert "DHAN_CLIENT_ID" not in str(info.value)


def test_defaults_come_from_settings_and_repr_hides_the_token(fake, monkeypatch):
    monkeypatch.setenv("DHAN_CLIENT_ID", CLIENT)
    monkeypatch.setenv("DHAN_ACCESS_TOKEN", TOKEN)
    monkeypatch.setenv("DHAN_BASE_URL", fake.base + "/")
    monkeypatch.setenv("HTTP_TIMEOUT", "3")
    fake.on("GET", "/v2/fundlimit", {"dhanClientId": CLIENT, "availabelBalance": 98440.0, "sodLimit": 113642,
                                     "utilizedAmount": 15202.0, "withdrawableBalance": 98310.0})
    broker = DhanBroker(rates=FAST)
    assert isinstance(broker, Broker) and broker.name == "dhan" and broker.live is True
    assert broker.timeout == 3.0 and broker._http.timeout == 3.0 and broker._http.base_url == fake.base
    assert TOKEN not in repr(broker) and TOKEN not in str(broker)
    funds = broker.funds()
    assert (funds.available, funds.used, funds.total) == (98440.0, 15202.0, 113642.0)
    (call,) = fake.calls
    assert (call.method, call.path) == ("GET", "/v2/fundlimit")
    assert_auth(call)
    assert broker.instruments() == []


def test_instruments_are_returned_as_given(make):
    assert make().instruments() == INSTRUMENTS
    assert make(instruments={"a": TCS}).instruments() == [TCS]


# ---------------------------------------------------------------------- orders


def test_place_order_sends_the_documented_body_and_returns_an_order(make, fake):
    fake.on("POST", "/v2/orders", {"orderId": "112111182198", "orderStatus": "PENDING"})
    req = OrderRequest(TCS, Side.BUY, 5, OrderType.LIMIT, Product.INTRADAY, price=3345.8, tag="tag1")
    order = make().place_order(req)
    (call,) = fake.calls
    assert (call.method, call.path) == ("POST", "/v2/orders")
    assert_auth(call)
    assert call.body == {
        "transactionType": "BUY", "exchangeSegment": "NSE_EQ", "productType": "INTRADAY", "orderType": "LIMIT",
        "validity": "DAY", "securityId": "11536", "quantity": 5, "disclosedQuantity": 0, "price": 3345.8,
        "afterMarketOrder": False, "boProfitValue": None, "boStopLossValue": None, "triggerPrice": 0.0,
        "correlationId": "tag1", "dhanClientId": CLIENT,
    }
    assert order.order_id == "112111182198" and order.request == req and order.tag == "tag1"
    assert order.status is OrderStatus.OPEN
    assert [s for _, s in order.history] == [OrderStatus.PENDING, OrderStatus.OPEN]


@pytest.mark.parametrize(
    "req, expected, dhan_status, status",
    [
        (OrderRequest(NIFTY_FUT, Side.SELL, 150, OrderType.SL, Product.MARGIN, price=100.0, trigger_price=101.0, tag="t2"),
         {"transactionType": "SELL", "exchangeSegment": "NSE_FNO", "productType": "MARGIN", "orderType": "STOP_LOSS",
          "securityId": "49081", "quantity": 150, "price": 100.0, "triggerPrice": 101.0, "validity": "DAY"},
         "TRANSIT", OrderStatus.PENDING),
        (OrderRequest(TCS, Side.BUY, 1, OrderType.SL_M, Product.DELIVERY, trigger_price=3400.0, validity=Validity.IOC, tag="t3"),
         {"transactionType": "BUY", "exchangeSegment": "NSE_EQ", "productType": "CNC", "orderType": "STOP_LOSS_MARKET",
          "price": 0.0, "triggerPrice": 3400.0, "validity": "IOC"},
         "PENDING", OrderStatus.OPEN),
        (OrderRequest(TCS, Side.SELL, 2, OrderType.MARKET, Product.INTRADAY, tag="t4"),
         {"transactionType": "SELL", "productType": "INTRADAY", "orderType": "MARKET", "price": 0.0, "triggerPrice": 0.0},
         "EXPIRED", OrderStatus.EXPIRED),
    ],
)
def test_place_order_maps_enums(make, fake, req, expected, dhan_status, status):
    fake.on("POST", "/v2/orders", {"orderId": "9", "orderStatus": dhan_status})
    order = make().place_order(req)
    body = fake.calls[0].body
    assert {k: body[k] for k in expected} == expected
    assert body["correlationId"] == req.tag and body["dhanClientId"] == CLIENT
    assert order.status is status


def test_rejected_placement_reads_the_reason(make, fake):
    fake.on("POST", "/v2/orders", {"orderId": "9", "orderStatus": "REJECTED"})
    fake.on("GET", "/v2/orders/9", order_row(orderId="9", orderStatus="REJECTED", correlationId="r1", quantity=1,
                                             orderType="MARKET", price=0, omsErrorDescription="RMS: margin shortfall"))
    order = make().place_order(OrderRequest(TCS, Side.BUY, 1, tag="r1"))
    assert (order.status, order.message, order.tag) == (OrderStatus.REJECTED, "RMS: margin shortfall", "r1")
    assert [(c.method, c.path) for c in fake.calls] == [("POST", "/v2/orders"), ("GET", "/v2/orders/9")]


def test_place_order_without_a_tag_makes_one_up(make, fake):
    fake.on("POST", "/v2/orders", {"orderId": "7", "orderStatus": "TRANSIT"})
    order = make().place_order(OrderRequest(TCS, Side.BUY, 1))
    sent = fake.calls[0].body["correlationId"]
    assert re.fullmatch(r"[A-Za-z0-9]{1,25}", sent)
    assert order.tag == sent and order.status is OrderStatus.PENDING


@pytest.mark.parametrize(
    "req",
    [
        OrderRequest(TCS, Side.BUY, 5, OrderType.LIMIT, price=3345.83),  # off the tick
        OrderRequest(NIFTY, Side.BUY, 75),  # an index
        OrderRequest(NIFTY_FUT, Side.BUY, 100),  # not whole lots
        OrderRequest(TCS, Side.BUY, 5, OrderType.LIMIT),  # no price
        OrderRequest(NIFTY_FUT, Side.BUY, 75, product=Product.DELIVERY),  # CNC on F&O
        OrderRequest(NO_ID, Side.BUY, 1),  # no Dhan security id
        OrderRequest(TCS, Side.BUY, 1, tag="bad tag!"),
    ],
)
def test_invalid_orders_send_nothing(make, fake, req):
    fake.on("POST", "/v2/orders", {"orderId": "1", "orderStatus": "PENDING"})
    with pytest.raises(InvalidOrder):
        make().place_order(req)
    assert fake.calls == []


@pytest.mark.parametrize(
    "dhan, ours",
    [("TRANSIT", OrderStatus.PENDING), ("PENDING", OrderStatus.OPEN), ("PART_TRADED", OrderStatus.PARTIALLY_FILLED),
     ("TRADED", OrderStatus.FILLED), ("CANCELLED", OrderStatus.CANCELLED), ("REJECTED", OrderStatus.REJECTED),
     ("EXPIRED", OrderStatus.EXPIRED)],
)
def test_order_status_table(make, fake, dhan, ours):
    fake.on("GET", "/v2/orders", [order_row(orderStatus=dhan)])
    (order,) = make().orders()
    assert order.status is ours
    assert order.history[0] == (pd.Timestamp("2026-01-05 10:00:00", tz=IST), OrderStatus.PENDING)
    assert order.history[-1][1] is ours


def test_order_book_maps_fields_and_instruments(make, fake):
    fake.on("GET", "/v2/orders", [
        order_row(),
        order_row(orderId="2", correlationId="", orderStatus="PART_TRADED", transactionType="SELL", exchangeSegment="NSE_FNO",
                  productType="MARGIN", orderType="STOP_LOSS", tradingSymbol="BANKNIFTY-Jan2026-60000-CE",
                  securityId="55555", quantity=60, price=210.0, triggerPrice=211.0, filledQty=30,
                  averageTradedPrice=210.5, drvOptionType="CALL", drvStrikePrice=60000.0,
                  drvExpiryDate="2026-01-27 14:30:00", omsErrorDescription="partly"),
    ])
    first, second = make().orders()
    (call,) = fake.calls
    assert (call.method, call.path) == ("GET", "/v2/orders")
    assert_auth(call)
    assert first.request.instrument is TCS and first.request.price == 3345.8 and first.request.trigger_price is None
    assert first.request.tag == "tag1" and first.exchange_order_id == "1100000012345"
    assert first.updated_at == pd.Timestamp("2026-01-05 10:00:05", tz=IST) and first.average_price is None
    r = second.request
    assert (r.side, r.order_type, r.product, r.quantity, r.price, r.trigger_price, r.tag) == (
        Side.SELL, OrderType.SL, Product.MARGIN, 60, 210.0, 211.0, None)
    assert (second.status, second.filled_quantity, second.average_price, second.message) == (
        OrderStatus.PARTIALLY_FILLED, 30, 210.5, "partly")
    inst = r.instrument  # unknown to the broker: a minimal record from the reply
    assert (inst.symbol, inst.segment, inst.lot_size, inst.broker_ids) == (
        "BANKNIFTY-Jan2026-60000-CE", Segment.NSE_FNO, 1, {"dhan": "55555"})


@pytest.mark.parametrize(
    "changes, value",
    [({"orderStatus": "WEIRD"}, "WEIRD"), ({"orderStatus": "CLOSED"}, "CLOSED"), ({"productType": "MTF"}, "MTF"),
     ({"exchangeSegment": "MCX_COMM"}, "MCX_COMM"), ({"orderType": "BRACKET"}, "BRACKET"),
     ({"transactionType": "SHORT"}, "SHORT"), ({"validity": "GTD"}, "GTD"), ({"orderStatus": None}, "None")],
)
def test_unknown_dhan_values_raise_naming_the_value(make, fake, changes, value):
    fake.on("GET", "/v2/orders", [order_row(**changes)])
    with pytest.raises(BrokerError, match=value):
        make().orders()


def test_order_and_order_by_tag(make, fake):
    fake.on("GET", "/v2/orders/112111182198", order_row(orderStatus="TRADED", filledQty=5, averageTradedPrice=3345.5))
    fake.on("GET", "/v2/orders/external/tag1", order_row())
    fake.on("GET", "/v2/orders/external/none", [])
    fake.on("GET", "/v2/orders/external/unknown", err("DH-905", "Invalid correlation id"), 400)
    broker = make()
    order = broker.order("112111182198")
    assert (order.status, order.filled_quantity, order.average_price) == (OrderStatus.FILLED, 5, 3345.5)
    assert broker.order_by_tag("tag1").order_id == "112111182198"
    assert broker.order_by_tag("none") is None
    assert broker.order_by_tag("unknown") is None
    assert [(c.method, c.path) for c in fake.calls] == [
        ("GET", "/v2/orders/112111182198"), ("GET", "/v2/orders/external/tag1"),
        ("GET", "/v2/orders/external/none"), ("GET", "/v2/orders/external/unknown")]
    for call in fake.calls:
        assert_auth(call)


def test_modify_order_fills_unchanged_fields_and_reads_back(make, fake):
    state = {"row": order_row()}

    def put(call):
        state["row"] = order_row(quantity=call.body["quantity"], price=call.body["price"])
        return {"orderId": "112111182198", "orderStatus": "TRANSIT"}

    fake.on("GET", "/v2/orders/112111182198", lambda call: state["row"])
    fake.on("PUT", "/v2/orders/112111182198", put)
    order = make().modify_order("112111182198", quantity=10, price=3340.0)
    assert [(c.method, c.path) for c in fake.calls] == [
        ("GET", "/v2/orders/112111182198"), ("PUT", "/v2/orders/112111182198"), ("GET", "/v2/orders/112111182198")]
    assert fake.calls[1].body == {
        "orderId": "112111182198", "orderType": "LIMIT", "legName": None, "quantity": 10, "price": 3340.0,
        "disclosedQuantity": 0, "triggerPrice": 0.0, "validity": "DAY", "dhanClientId": CLIENT}
    assert_auth(fake.calls[1])
    assert (order.request.quantity, order.request.price, order.status) == (10, 3340.0, OrderStatus.OPEN)


def test_modify_order_validates_and_refuses_final_orders(make, fake):
    fake.on("GET", "/v2/orders/1", order_row(orderId="1"))
    fake.on("GET", "/v2/orders/2", order_row(orderId="2", orderStatus="TRADED", filledQty=5))
    broker = make()
    with pytest.raises(InvalidOrder, match="tick"):
        broker.modify_order("1", price=3340.01)
    with pytest.raises(InvalidOrder, match="FILLED"):
        broker.modify_order("2", price=3340.0)
    assert fake.made("PUT") == []


def test_modify_order_to_market_drops_the_price(make, fake):
    fake.on("GET", "/v2/orders/1", order_row(orderId="1"))
    fake.on("PUT", "/v2/orders/1", {"orderId": "1", "orderStatus": "TRANSIT"})
    make().modify_order("1", order_type=OrderType.MARKET)
    body = fake.made("PUT")[0].body
    assert (body["orderType"], body["price"], body["triggerPrice"]) == ("MARKET", 0.0, 0.0)


def test_cancel_order_reads_the_order_back(make, fake):
    fake.on("DELETE", "/v2/orders/1", {"orderId": "1", "orderStatus": "CANCELLED"})
    fake.on("GET", "/v2/orders/1", order_row(orderId="1", orderStatus="CANCELLED"))
    order = make().cancel_order("1")
    assert order.status is OrderStatus.CANCELLED
    delete = fake.calls[0]
    assert (delete.method, delete.path, delete.body) == ("DELETE", "/v2/orders/1", None)
    assert_auth(delete)


def test_cancel_order_202_with_empty_body_is_a_success(make, fake):
    fake.on("DELETE", "/v2/orders/1", raw="", status=202)
    fake.on("GET", "/v2/orders/1", order_row(orderId="1", orderStatus="CANCELLED"))
    assert make().cancel_order("1").status is OrderStatus.CANCELLED
    assert [(c.method, c.path) for c in fake.calls] == [("DELETE", "/v2/orders/1"), ("GET", "/v2/orders/1")]


def test_cancel_order_with_an_error_page_is_not_retried_and_says_the_state(make, fake):
    fake.on("DELETE", "/v2/orders/1", raw="<html>502 Bad Gateway</html>", status=502, content_type="text/html")
    fake.on("GET", "/v2/orders/1", order_row(orderId="1"))
    with pytest.raises(BrokerUnavailable, match="still OPEN"):
        make().cancel_order("1")
    assert len(fake.made("DELETE")) == 1


# ---------------------------------------------------------------------- portfolio


def test_trades_positions_holdings(make, fake):
    fake.on("GET", "/v2/trades/", [{
        "dhanClientId": CLIENT, "orderId": "112111182198", "exchangeOrderId": "15112111182198", "exchangeTradeId": "15112111182198",
        "transactionType": "BUY", "exchangeSegment": "NSE_EQ", "productType": "INTRADAY", "orderType": "LIMIT",
        "tradingSymbol": "TCS", "securityId": "11536", "tradedQuantity": 5, "tradedPrice": 3345.8,
        "createTime": "2026-01-05 10:00:00", "updateTime": "2026-01-05 10:00:02", "exchangeTime": "2026-01-05 10:00:01",
    }])
    fake.on("GET", "/v2/positions", [
        {"dhanClientId": CLIENT, "tradingSymbol": "TCS", "securityId": "11536", "positionType": "LONG",
         "exchangeSegment": "NSE_EQ", "productType": "CNC", "buyAvg": 3345.8, "buyQty": 40, "sellAvg": 0, "netQty": 40,
         "realizedProfit": 0.0, "unrealizedProfit": 6122.0, "multiplier": 1, "drvExpiryDate": "0001-01-01",
         "drvOptionType": None, "drvStrikePrice": 0.0, "crossCurrency": False},
        {"dhanClientId": CLIENT, "tradingSymbol": "NIFTY-JAN2026-FUT", "securityId": "49081", "positionType": "SHORT",
         "exchangeSegment": "NSE_FNO", "productType": "MARGIN", "buyAvg": 0, "sellAvg": 24000.5, "netQty": -75,
         "realizedProfit": 10.0, "unrealizedProfit": -5.0, "drvExpiryDate": "2026-01-27"},
    ])
    fake.on("GET", "/v2/holdings", [
        {"exchange": "ALL", "tradingSymbol": "HDFCBANK", "securityId": "1333", "isin": "INE040A01034", "totalQty": 1000,
         "dpQty": 1000, "t1Qty": 0, "availableQty": 1000, "collateralQty": 0, "avgCostPrice": 2655.0, "lastTradedPrice": 1700.0},
        {"exchange": "BSE", "tradingSymbol": "ITC", "securityId": "500875", "totalQty": 10, "avgCostPrice": 400.0},
    ])
    broker = make()
    (trade,) = broker.trades()
    assert (trade.trade_id, trade.order_id, trade.instrument, trade.side, trade.quantity, trade.price, trade.time) == (
        "15112111182198", "112111182198", TCS, Side.BUY, 5, 3345.8, pd.Timestamp("2026-01-05 10:00:01", tz=IST))
    long, short = broker.positions()
    assert (long.instrument, long.product, long.quantity, long.average_price, long.unrealized_pnl) == (
        TCS, Product.DELIVERY, 40, 3345.8, 6122.0)
    assert (short.instrument, short.product, short.quantity, short.average_price, short.realized_pnl) == (
        NIFTY_FUT, Product.MARGIN, -75, 24000.5, 10.0)
    hdfc, itc = broker.holdings()
    assert (hdfc.instrument, hdfc.quantity, hdfc.average_price, hdfc.last_price) == (HDFCBANK, 1000, 2655.0, 1700.0)
    assert (itc.instrument.symbol, itc.instrument.segment, itc.instrument.lot_size) == ("ITC", Segment.BSE_EQ, 1)
    fake.on("GET", "/v2/holdings", [{"exchange": "MCX", "tradingSymbol": "GOLD", "securityId": "1", "totalQty": 1}])
    with pytest.raises(BrokerError, match="'MCX'"):
        broker.holdings()
    assert [(c.method, c.path) for c in fake.calls] == [("GET", "/v2/trades/"), ("GET", "/v2/positions"), ("GET", "/v2/holdings"),
                                                        ("GET", "/v2/holdings")]
    for call in fake.calls:
        assert_auth(call)


# ---------------------------------------------------------------------- quotes


QUOTE_TCS = {
    "average_price": 4010.5, "buy_quantity": 100, "sell_quantity": 120,
    "depth": {"buy": [{"quantity": 10, "orders": 1, "price": 4010.0}] * 5, "sell": [{"quantity": 5, "orders": 2, "price": 4010.5}] * 5},
    "last_price": 4010.25, "last_quantity": 3, "last_trade_time": "05/01/2026 10:15:30", "lower_circuit_limit": 3600.0,
    "upper_circuit_limit": 4400.0, "net_change": 12.0, "ohlc": {"open": 4000.0, "close": 3998.25, "high": 4020.0, "low": 3990.0},
    "oi": 0, "oi_day_high": 0, "oi_day_low": 0, "volume": 123456,
}


def test_quote_sends_ints_by_segment_and_reads_the_double_nested_reply(make, fake):
    fake.on("POST", "/v2/marketfeed/quote", {"data": {"NSE_EQ": {"11536": QUOTE_TCS}, "IDX_I": {"13": {"last_price": 24010.0}}},
                                             "status": "success"})
    quotes = make().quote([TCS, NIFTY])
    (call,) = fake.calls
    assert (call.method, call.path) == ("POST", "/v2/marketfeed/quote")
    assert_auth(call)
    assert call.body == {"NSE_EQ": [11536], "IDX_I": [13], "dhanClientId": CLIENT}
    q = quotes["TCS"]
    assert (q.instrument, q.last_price, q.bid, q.ask, q.open, q.high, q.low, q.close, q.volume) == (
        TCS, 4010.25, 4010.0, 4010.5, 4000.0, 4020.0, 3990.0, 3998.25, 123456.0)
    assert (q.upper_circuit, q.lower_circuit, q.time) == (4400.0, 3600.0, pd.Timestamp("2026-01-05 10:15:30", tz=IST))
    assert quotes["NIFTY"].last_price == 24010.0 and quotes["NIFTY"].instrument is NIFTY


def test_quote_splits_more_than_1000_instruments(make, fake):
    many = [Instrument(f"S{i}", Segment.NSE_EQ, InstrumentKind.EQUITY, broker_ids={"dhan": str(1000 + i)}) for i in range(1001)]
    fake.on("POST", "/v2/marketfeed/quote", lambda call: {
        "data": {"NSE_EQ": {str(s): {"last_price": float(s)} for s in call.body["NSE_EQ"]}}, "status": "success"})
    quotes = make().quote(many)
    assert [len(c.body["NSE_EQ"]) for c in fake.calls] == [1000, 1]
    assert len(quotes) == 1001 and quotes["S1000"].last_price == 2000.0


# ---------------------------------------------------------------------- history


def candles(stamps, base=100.0, oi=None):
    n = len(stamps)
    return {"open": [base] * n, "high": [base + 2] * n, "low": [base - 1] * n, "close": [base + 1] * n,
            "volume": [1000] * n, "timestamp": list(stamps), "open_interest": oi or [0] * n}


def fixed_clock(text):
    return lambda: pd.Timestamp(text, tz=IST)


def test_history_intraday_splits_into_90_day_windows(make, fake):
    stamps = [1767586500, 1767586800]  # 2026-01-05 09:45 and 09:50 IST
    fake.on("POST", "/v2/charts/intraday", lambda call: candles(stamps) if call.body["fromDate"] <= "2026-01-05" else {})
    start, end = pd.Timestamp("2025-06-20 09:15", tz=IST), pd.Timestamp("2026-01-06 15:30", tz=IST)  # 200 days
    frame = make(clock=fixed_clock("2026-02-01 12:00")).history(TCS, "5m", start, end)
    bodies = [c.body for c in fake.calls]
    assert len(bodies) == 3
    spans = [(pd.Timestamp(b["fromDate"]), pd.Timestamp(b["toDate"])) for b in bodies]
    assert spans[0][0] == pd.Timestamp("2025-06-20 09:15") and spans[-1][1] == pd.Timestamp("2026-01-06 15:30")
    assert all(hi - lo <= pd.Timedelta(days=90) for lo, hi in spans)
    assert all(spans[i][1] == spans[i + 1][0] for i in range(len(spans) - 1))  # contiguous, no gap
    for body in bodies:
        assert {k: body[k] for k in ("securityId", "exchangeSegment", "instrument", "interval", "oi", "dhanClientId")} == {
            "securityId": "11536", "exchangeSegment": "NSE_EQ", "instrument": "EQUITY", "interval": 5, "oi": False,
            "dhanClientId": CLIENT}
    assert_auth(fake.calls[0])
    assert isinstance(frame.index, pd.DatetimeIndex) and str(frame.index.tz) == IST and frame.index.name == "ts"
    assert list(frame.index) == [pd.Timestamp("2026-01-05 09:45", tz=IST), pd.Timestamp("2026-01-05 09:50", tz=IST)]
    assert frame.index[0] == pd.Timestamp("2026-01-05 04:15", tz="UTC")
    assert list(frame.columns) == ["open", "high", "low", "close", "volume"]
    assert frame.iloc[0].tolist() == [100.0, 102.0, 99.0, 101.0, 1000.0]
    assert all(str(t) == "float64" for t in frame.dtypes)


def test_history_drops_the_bar_in_progress(make, fake):
    base = pd.Timestamp("2026-01-05 09:55", tz=IST)
    stamps = [int((base + pd.Timedelta(minutes=5 * i)).timestamp()) for i in range(3)]  # 09:55, 10:00, 10:05
    fake.on("POST", "/v2/charts/intraday", candles(stamps))
    frame = make(clock=fixed_clock("2026-01-05 10:07")).history(TCS, "5m", "2026-01-05 09:15", "2026-01-05 15:30")
    assert list(frame.index.strftime("%H:%M")) == ["09:55", "10:00"]
    assert fake.calls[0].body["toDate"] == "2026-01-05 10:07:00"  # not asked beyond now


def test_history_60m_last_bar_closes_at_the_session_close(make, fake):
    stamps = [int(pd.Timestamp("2026-01-05 14:15", tz=IST).timestamp()), int(pd.Timestamp("2026-01-05 15:15", tz=IST).timestamp())]
    fake.on("POST", "/v2/charts/intraday", candles(stamps))
    frame = make(clock=fixed_clock("2026-01-05 15:31")).history(TCS, "1h", "2026-01-05", "2026-01-06")
    assert list(frame.index.strftime("%H:%M")) == ["14:15", "15:15"]
    assert fake.calls[0].body["interval"] == 60


def test_history_daily_to_date_is_exclusive_and_oi_when_asked(make, fake):
    fake.on("POST", "/v2/charts/historical", candles([1326220200, 1326306600], oi=[10, 20]))  # 2012-01-11/12 00:00 IST
    frame = make().history(NIFTY_FUT, "1d", pd.Timestamp("2012-01-01"), pd.Timestamp("2012-02-01"), oi=True)
    (call,) = fake.calls
    assert (call.method, call.path) == ("POST", "/v2/charts/historical")
    assert call.body == {"securityId": "49081", "exchangeSegment": "NSE_FNO", "instrument": "FUTIDX", "expiryCode": 0,
                         "oi": True, "fromDate": "2012-01-01", "toDate": "2012-02-01", "dhanClientId": CLIENT}
    assert list(frame.index) == [pd.Timestamp("2012-01-11", tz=IST), pd.Timestamp("2012-01-12", tz=IST)]
    assert list(frame.columns) == ["open", "high", "low", "close", "volume", "oi"] and frame["oi"].tolist() == [10.0, 20.0]


def test_history_daily_bar_of_today_waits_for_the_close(make, fake):
    today = int(pd.Timestamp("2026-01-05", tz=IST).timestamp())
    yesterday = int(pd.Timestamp("2026-01-02", tz=IST).timestamp())
    fake.on("POST", "/v2/charts/historical", candles([yesterday, today]))
    during = make(clock=fixed_clock("2026-01-05 14:00")).history(TCS, "1d", "2026-01-01", "2026-01-10")
    after = make(clock=fixed_clock("2026-01-05 16:00")).history(TCS, "1d", "2026-01-01", "2026-01-10")
    assert len(during) == 1 and len(after) == 2
    assert fake.calls[0].body["toDate"] == "2026-01-06"


def test_history_refuses_timeframes_dhan_does_not_serve(make, fake):
    with pytest.raises(BrokerError, match="1m, 5m, 15m, 25m, 60m"):
        make().history(TCS, "3m", "2026-01-01", "2026-01-02")
    with pytest.raises(BrokerError, match="unknown timeframe"):
        make().history(TCS, "weekly", "2026-01-01", "2026-01-02")
    assert fake.calls == []


# ---------------------------------------------------------------------- GTT (forever orders)


def test_place_gtt_single_and_oco(make, fake):
    fake.on("POST", "/v2/marketfeed/quote", {"data": {"NSE_EQ": {"1333": {"last_price": 1990.0}}}, "status": "success"})
    fake.on("POST", "/v2/forever/orders", {"orderId": "5132208051112", "orderStatus": "PENDING"})
    broker = make()
    single = GttRequest(HDFCBANK, Side.BUY, GttKind.SINGLE, (GttLeg(1950.0, 1900.0, 10),))
    gtt = broker.place_gtt(single, last_price=2000.0)
    assert (gtt.gtt_id, gtt.status, gtt.request) == ("5132208051112", "ACTIVE", single)
    assert fake.calls[0].body == {
        "orderFlag": "SINGLE", "transactionType": "BUY", "exchangeSegment": "NSE_EQ", "productType": "CNC",
        "orderType": "LIMIT", "validity": "DAY", "securityId": "1333", "quantity": 10, "disclosedQuantity": 0,
        "price": 1900.0, "triggerPrice": 1950.0, "price1": 0.0, "triggerPrice1": 0.0, "quantity1": 0, "dhanClientId": CLIENT}
    oco = GttRequest(HDFCBANK, Side.SELL, GttKind.OCO, (GttLeg(2099.0, 2100.0, 10), GttLeg(1801.0, 1800.0, 10)), tag="gtt1")
    broker.place_gtt(oco)  # no last price given: quoted first
    quote, post = fake.calls[1:]
    assert (quote.path, post.path) == ("/v2/marketfeed/quote", "/v2/forever/orders")
    assert post.body == {
        "orderFlag": "OCO", "transactionType": "SELL", "exchangeSegment": "NSE_EQ", "productType": "CNC",
        "orderType": "LIMIT", "validity": "DAY", "securityId": "1333", "quantity": 10, "disclosedQuantity": 0,
        "price": 2100.0, "triggerPrice": 2099.0, "price1": 1800.0, "triggerPrice1": 1801.0, "quantity1": 10,
        "correlationId": "gtt1", "dhanClientId": CLIENT}
    for call in fake.calls:
        assert_auth(call)


@pytest.mark.parametrize(
    "req",
    [
        GttRequest(HDFCBANK, Side.SELL, GttKind.OCO, (GttLeg(1980.0, 1980.0, 10), GttLeg(1801.0, 1800.0, 10))),  # target below LTP
        GttRequest(HDFCBANK, Side.BUY, GttKind.SINGLE, (GttLeg(1950.0, 1900.0, 10),), product=Product.INTRADAY),
        GttRequest(HDFCBANK, Side.SELL, GttKind.OCO, (GttLeg(2099.0, 2100.0, 10), GttLeg(1801.0, None, 10))),  # mixed types
        GttRequest(HDFCBANK, Side.BUY, GttKind.SINGLE, (GttLeg(1950.03, 1900.0, 10),)),  # off tick
    ],
)
def test_invalid_gtts_send_nothing(make, fake, req):
    with pytest.raises(InvalidOrder):
        make().place_gtt(req, last_price=1990.0)
    assert fake.calls == []


def test_modify_gtt_sends_one_put_per_leg(make, fake):
    fake.on("PUT", "/v2/forever/orders/5132208051112", {"orderId": "5132208051112", "orderStatus": "TRANSIT"})
    oco = GttRequest(HDFCBANK, Side.SELL, GttKind.OCO, (GttLeg(2199.0, 2200.0, 10), GttLeg(1791.0, 1790.0, 10)))
    gtt = make().modify_gtt("5132208051112", oco, last_price=2000.0)
    assert gtt.status == "ACTIVE" and gtt.request == oco
    bodies = [c.body for c in fake.made("PUT", "/v2/forever/orders/5132208051112")]
    common = {"orderId": "5132208051112", "orderFlag": "OCO", "orderType": "LIMIT", "disclosedQuantity": 0,
              "validity": "DAY", "dhanClientId": CLIENT, "quantity": 10}
    assert bodies == [
        {**common, "legName": "TARGET_LEG", "price": 2200.0, "triggerPrice": 2199.0},
        {**common, "legName": "STOP_LOSS_LEG", "price": 1790.0, "triggerPrice": 1791.0},
    ]


def test_modify_gtt_second_leg_failure_says_the_first_was_changed(make, fake):
    def put(call):
        if call.body["legName"] == "TARGET_LEG":
            return {"orderId": "9", "orderStatus": "TRANSIT"}
        return Response(json.dumps(err("DH-906", "Leg not modifiable", "Order_Error")), 400, content_type="application/json")

    fake.on("PUT", "/v2/forever/orders/9", put)
    oco = GttRequest(HDFCBANK, Side.SELL, GttKind.OCO, (GttLeg(2199.0, 2200.0, 10), GttLeg(1791.0, 1790.0, 10)))
    with pytest.raises(OrderRejected, match="TARGET_LEG WAS modified") as info:
        make().modify_gtt("9", oco, last_price=2000.0)
    assert info.value.code == "DH-906"


def test_cancel_gtt_and_list(make, fake):
    fake.on("DELETE", "/v2/forever/orders/5132208051112", {"orderId": "5132208051112", "orderStatus": "CANCELLED"})
    fake.on("GET", "/v2/forever/orders", [
        {"dhanClientId": CLIENT, "orderId": "5132208051112", "orderStatus": "CONFIRM", "transactionType": "BUY",
         "exchangeSegment": "NSE_EQ", "productType": "CNC", "orderType": "SINGLE", "tradingSymbol": "HDFCBANK",
         "securityId": "1333", "quantity": 10, "price": 1428, "triggerPrice": 1427, "legName": "ENTRY_LEG",
         "createTime": "2022-08-05 12:41:19", "updateTime": None, "exchangeTime": None},
        {"orderId": "77", "orderStatus": "PENDING", "transactionType": "SELL", "exchangeSegment": "NSE_EQ",
         "productType": "CNC", "orderType": "OCO", "tradingSymbol": "TCS", "securityId": "11536", "quantity": 4,
         "price": 4200.0, "triggerPrice": 4199.0, "legName": "TARGET_LEG"},
        {"orderId": "77", "orderStatus": "PENDING", "transactionType": "SELL", "exchangeSegment": "NSE_EQ",
         "productType": "CNC", "orderType": "OCO", "tradingSymbol": "TCS", "securityId": "11536", "quantity": 4,
         "price": 0, "triggerPrice": 3801.0, "legName": "STOP_LOSS_LEG"},
    ])
    broker = make()
    assert broker.cancel_gtt("5132208051112") is None
    assert (fake.calls[0].method, fake.calls[0].path) == ("DELETE", "/v2/forever/orders/5132208051112")
    single, oco = broker.gtts()
    assert (single.gtt_id, single.status, single.request.kind, single.request.product, single.request.legs) == (
        "5132208051112", "ACTIVE", GttKind.SINGLE, Product.DELIVERY, (GttLeg(1427.0, 1428.0, 10),))
    assert (oco.request.instrument, oco.request.side, oco.request.legs) == (
        TCS, Side.SELL, (GttLeg(4199.0, 4200.0, 4), GttLeg(3801.0, None, 4)))
    assert oco.request.target.trigger_price == 4199.0 and oco.request.stop.trigger_price == 3801.0
    assert (fake.calls[1].method, fake.calls[1].path) == ("GET", "/v2/forever/orders")


# ---------------------------------------------------------------------- errors


def test_dh901_is_session_expired_saying_what_to_do(make, fake):
    fake.on("GET", "/v2/orders", err("DH-901", "Client ID or user generated access token is invalid or expired.",
                                      "Invalid_Authentication"), 401)
    with pytest.raises(SessionExpired, match="log in again / renew the access token") as info:
        make().orders()
    assert "DH-901" in str(info.value) and "DHAN_ACCESS_TOKEN" in str(info.value)
    assert len(fake.calls) == 1  # not retried


@pytest.mark.parametrize("code", ["807", "DH-808", "809"])
def test_data_api_token_codes_are_session_expired(make, fake, code):
    fake.on("POST", "/v2/charts/historical", err(code, "token expired", "Data_Error"), 401)
    with pytest.raises(SessionExpired):
        make().history(TCS, "1d", "2025-01-01", "2025-02-01")


def test_dh904_is_rate_limited_after_retries(make, fake):
    fake.on("GET", "/v2/positions", err("DH-904", "Too many requests", "Rate_Limit"), 429)
    with pytest.raises(RateLimited):
        make(retry_attempts=3).positions()
    assert len(fake.made("GET", "/v2/positions")) == 3


def test_http_429_without_json_is_rate_limited(make, fake):
    fake.on("GET", "/v2/holdings", raw="slow down", status=429, content_type="text/plain")
    with pytest.raises(RateLimited):
        make(retry_attempts=2).holdings()


def test_reads_retry_and_recover(make, fake):
    fake.on("GET", "/v2/positions", [])
    fake.on("GET", "/v2/positions", raw="<html>502</html>", status=502, content_type="text/html", times=1)
    fake.on("GET", "/v2/positions", err("DH-904", "Too many requests", "Rate_Limit"), 429, times=1)
    assert make().positions() == []
    assert len(fake.calls) == 3


def test_dh905_is_order_rejected_with_code_and_message(make, fake):
    fake.on("POST", "/v2/orders", err("DH-905", "Missing required fields, bad values for parameters etc."), 400)
    with pytest.raises(OrderRejected) as info:
        make().place_order(OrderRequest(TCS, Side.BUY, 1, tag="x1"))
    assert info.value.code == "DH-905"
    assert info.value.broker_message == "Missing required fields, bad values for parameters etc."
    assert len(fake.calls) == 1  # a refusal is final: no lookup, no retry


@pytest.mark.parametrize("raw, status", [("<html><body>Internal Server Error</body></html>", 500), ("", 503)])
def test_server_errors_and_html_are_broker_unavailable(make, fake, raw, status):
    fake.on("GET", "/v2/fundlimit", raw=raw, status=status, content_type="text/html")
    with pytest.raises(BrokerUnavailable, match=f"HTTP {status}"):
        make(retry_attempts=2).funds()
    assert len(fake.calls) == 2


def test_dh908_on_placement_is_looked_up_not_retried(make, fake):
    fake.on("POST", "/v2/orders", err("DH-908", "Internal server error", "Internal_Server_Error"), 500)
    fake.on("GET", "/v2/orders/external/.*", [])
    with pytest.raises(BrokerUnavailable, match="was not placed"):
        make(tag_lookups=3).place_order(OrderRequest(TCS, Side.BUY, 1, tag="abc123"))
    assert len(fake.made("POST", "/v2/orders")) == 1
    assert [c.path for c in fake.made("GET")] == ["/v2/orders/external/abc123"] * 3


def test_timed_out_placement_is_found_by_its_tag(make, fake):
    book: dict[str, dict] = {}

    def slow_place(call):
        tag = call.body["correlationId"]
        book[tag] = order_row(orderId="555", correlationId=tag, orderStatus="PENDING", quantity=1, orderType="MARKET", price=0)
        return {"orderId": "555", "orderStatus": "PENDING"}

    fake.on("POST", "/v2/orders", slow_place, delay=1.2)
    fake.on("GET", "/v2/orders/external/(.+)", lambda call: book.get(call.path.rsplit("/", 1)[1], []))
    started = time.monotonic()
    order = make(timeout=0.4).place_order(OrderRequest(TCS, Side.BUY, 1))  # no tag: one is made up
    assert time.monotonic() - started < 1.2
    assert len(fake.made("POST", "/v2/orders")) == 1
    tag = fake.made("POST", "/v2/orders")[0].body["correlationId"]
    lookups = fake.made("GET", "/v2/orders/external/.*")
    assert lookups and all(c.path == f"/v2/orders/external/{tag}" for c in lookups)
    assert (order.order_id, order.tag, order.status) == ("555", tag, OrderStatus.OPEN)


def test_timed_out_placement_with_unreadable_book_may_have_been_placed(make, fake):
    fake.on("POST", "/v2/orders", {"orderId": "1", "orderStatus": "PENDING"}, delay=0.8)
    fake.on("GET", "/v2/orders/external/.*", raw="<html>502</html>", status=502, content_type="text/html")
    with pytest.raises(BrokerUnavailable, match="MAY have been placed"):
        make(timeout=0.3, retry_attempts=2, tag_lookups=1).place_order(OrderRequest(TCS, Side.BUY, 1, tag="t9"))
    assert len(fake.made("POST", "/v2/orders")) == 1


# ---------------------------------------------------------------------- rate limits


def test_default_rate_table():
    assert DEFAULT_RATES == {"orders": 10.0, "history": 5.0, "quotes": 1.0, "other": 20.0}


def test_quotes_are_held_to_one_per_second_by_default(fake):
    broker = DhanBroker(CLIENT, TOKEN, base_url=fake.base, timeout=5, instruments=INSTRUMENTS)
    assert {k: b.rate for k, b in broker._buckets.items()} == DEFAULT_RATES
    fake.on("POST", "/v2/marketfeed/quote", {"data": {"NSE_EQ": {"11536": {"last_price": 1.0}}}, "status": "success"})
    for _ in range(3):
        broker.quote([TCS])
    seen = [c.at for c in fake.calls]
    gaps = [b - a for a, b in zip(seen, seen[1:])]
    assert len(seen) == 3 and all(g >= 0.9 for g in gaps), gaps
    assert seen[-1] - seen[0] >= 1.9


def test_buckets_are_shared_between_brokers(make):
    assert make()._buckets["orders"] is make()._buckets["orders"]


# ---------------------------------------------------------------------- secrets


def test_the_token_never_reaches_logs_or_errors(make, fake, caplog):
    caplog.set_level(logging.DEBUG)
    fake.on("GET", "/v2/orders", lambda call: err("DH-901", f"token {call.headers.get('Access-Token')} expired"), 401)
    fake.on("GET", "/v2/positions", raw="<html>500</html>", status=500, content_type="text/html")
    fake.on("POST", "/v2/orders", {"orderId": "1", "orderStatus": "PENDING"}, delay=0.6)
    fake.on("GET", "/v2/orders/external/.*", err("DH-905", "no such correlation id"), 400)
    fake.on("GET", "/v2/holdings", err("DH-904", "Too many requests", "Rate_Limit"), 429)
    broker = make(timeout=0.3, retry_attempts=2, tag_lookups=1)
    messages = [repr(broker)]
    for action in (broker.orders, broker.positions, broker.holdings,
                   lambda: broker.place_order(OrderRequest(TCS, Side.BUY, 1))):
        with pytest.raises(BrokerError) as info:
            action()
        messages.append(str(info.value))
        messages.append(repr(info.value))
    with pytest.raises(SessionExpired):
        DhanBroker(CLIENT, None)
    assert any("expired" in m for m in messages)
    assert "***" in messages[1]  # the broker's echo of the token was masked
    for text in messages + [caplog.text] + [r.getMessage() for r in caplog.records]:
        assert TOKEN not in text


def test_the_token_is_not_in_the_brokers_attributes(make):
    broker = make()
    assert TOKEN not in repr(vars(broker))

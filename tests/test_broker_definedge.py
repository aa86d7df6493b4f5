"""Contract tests: ``DefinedgeBroker`` driving the real pyintegrate SDK against a fake Definedge.

The fake server (pytest-httpserver on 127.0.0.1) answers with the documented shapes (all
values strings, always a Content-Type); each test checks what reached the server (method,
path, JSON body, ``Authorization`` header) and how the answer became tradeflow records.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from pathlib import Path

import integrate
import pandas as pd
import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tradeflow.brokers.base import (
    Broker, BrokerError, BrokerUnavailable, Gtt, GttKind, GttLeg, GttRequest, Instrument, InstrumentKind, InvalidOrder,
    Order, OrderRejected, OrderRequest, OrderStatus, OrderType, Product, RateLimited, Segment, SessionExpired, Side,
)
from tradeflow.brokers.definedge import DefinedgeBroker
from tradeflow.brokers.ratelimit import reset_buckets

KEY = "SESSKEY-fake-7c1e9a40"
WS_KEY = "WSKEY-fake-44b0d1"
NEW_KEY = "SESSKEY-fresh-2d8f77"
API_SECRET = "APISECRET-fake-5a5a5a"
ALGO = "ALGO123"
KEYS = ("U1", "A1", KEY, WS_KEY)
IST = "Asia/Kolkata"

TCS = Instrument("TCS", Segment.NSE_EQ, InstrumentKind.EQUITY, broker_ids={"definedge": "11536", "definedge_symbol": "TCS-EQ"})
ACC = Instrument("ACC", Segment.NSE_EQ, InstrumentKind.EQUITY, broker_ids={"definedge": "22", "definedge_symbol": "ACC-EQ"})
CUB = Instrument("CUB", Segment.BSE_EQ, InstrumentKind.EQUITY, broker_ids={"definedge": "532210"})
# as tradeflow.instruments builds them: our symbols, only the token; Definedge's trading symbol is asked for
NIFTY_CE = Instrument("NIFTY30JUN2625000CE", Segment.NSE_FNO, InstrumentKind.OPTIDX, lot_size=75,
                      broker_ids={"definedge": "43210"})
SENSEX_FUT = Instrument("SENSEX25JUN26FUT", Segment.BSE_FNO, InstrumentKind.FUTIDX, lot_size=20,
                        broker_ids={"definedge": "1101"})
NIFTY_IDX = Instrument("NIFTY 50", Segment.NSE_IDX, InstrumentKind.INDEX, broker_ids={"definedge": "26000"})
INSTRUMENTS = [TCS, ACC, CUB, NIFTY_CE, SENSEX_FUT, NIFTY_IDX]
SECURITY_INFO = {"NFO/43210": "NIFTY26JUN25000CE", "BFO/1101": "SENSEX26JUNFUT", "BSE/532210": "CUB"}
SECINFO = re.compile(r"^/dart/v1/securityinfo/.*")

SUCCESS_ORDER = {"status": "SUCCESS", "order_id": "24010500000123"}


def order_row(**changes) -> dict:
    """An order-book row in the documented shape (all strings)."""
    row = {
        "order_id": "24010500000123", "tradingsymbol": "TCS-EQ", "token": "11536", "quantity": "1",
        "price_type": "LIMIT", "product_type": "CNC", "order_entry_time": "09:20:00 05-01-2026",
        "order_status": "OPEN", "order_type": "BUY", "variety": "REGULAR", "lotsize": "1",
        "exchange_orderid": "1300000000010094", "pending_qty": "1", "price": "3300.50",
        "exchange_time": "05-01-2026 09:20:01", "average_traded_price": "0.00", "exchange": "NSE",
        "filled_qty": "0", "disclosed_quantity": "0", "validity": "DAY", "price_precision": "2",
        "ticksize": "0.05", "price_factor": "1.000000", "multiplier": "1", "rqty": "1", "required_price": "3300.50",
    }
    row.update(changes)
    return row


# ---------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def _server():
    srv = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def server(_server):
    _server.clear()
    yield _server
    _server.clear()


class Stall:
    """A handler that notes each arrival, then holds its answer for ``seconds`` (or until released).

    The server's own log gets a request only after it is answered; ``arrivals`` has it at once.
    """

    def __init__(self, body: str, seconds: float) -> None:
        self.body, self.seconds = body, seconds
        self.arrivals: list[Request] = []
        self._go = threading.Event()
        self._busy = 0
        self._lock = threading.Lock()

    def __call__(self, request: Request) -> Response:
        with self._lock:
            self.arrivals.append(request)
            self._busy += 1
        try:
            self._go.wait(self.seconds)
            return Response(self.body, content_type="application/json")
        finally:
            with self._lock:
                self._busy -= 1

    def release(self) -> None:
        self._go.set()
        deadline = time.monotonic() + 5
        while self._busy and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)  # let the server finish logging the late answer before the next test


@pytest.fixture
def stall(server):
    made: list[Stall] = []

    def make_stall(body: str, seconds: float = 2.0) -> Stall:
        made.append(Stall(body, seconds))
        return made[-1]

    yield make_stall
    for s in made:
        s.release()


@pytest.fixture(autouse=True)
def _env(server, monkeypatch):
    monkeypatch.setenv("DEFINEDGE_BASE_URL", server.url_for("/dart/v1"))  # no trailing slash: the broker adds it
    monkeypatch.setenv("DEFINEDGE_LOGIN_URL", server.url_for("/auth/"))
    monkeypatch.setenv("DEFINEDGE_DATA_URL", server.url_for("/sds/history/"))
    monkeypatch.setenv("DEFINEDGE_MASTER_URL", server.url_for("/public/allmaster.zip"))
    monkeypatch.setenv("DEFINEDGE_ALGO_ID", ALGO)
    monkeypatch.setenv("DEFINEDGE_API_SECRET", API_SECRET)
    monkeypatch.setattr(DefinedgeBroker, "_BACKOFF", 0.01)
    server.expect_request(SECINFO, method="GET").respond_with_handler(_security_info)
    reset_buckets()
    yield
    reset_buckets()


def _security_info(request: Request) -> Response:
    key = request.path.split("/securityinfo/")[1]
    exchange, token = key.split("/")
    body = {"status": "SUCCESS", "exchange": exchange, "token": token, "tradingsymbol": SECURITY_INFO[key]}
    return Response(json.dumps(body), content_type="application/json")


def make(**kw) -> DefinedgeBroker:
    kw.setdefault("instruments", INSTRUMENTS)
    kw.setdefault("timeout", 3.0)
    return DefinedgeBroker(kw.pop("session_keys", KEYS), **kw)


def reqs(server: HTTPServer, path: str | None = None, method: str | None = None) -> list[Request]:
    return [r for r, _ in server.log if (path is None or r.path == path) and (method is None or r.method == method)]


def only(server: HTTPServer, path: str, method: str) -> Request:
    found = reqs(server, path, method)
    assert len(found) == 1, f"expected one {method} {path}, got {[(r.method, r.path) for r, _ in server.log]}"
    assert found[0].headers.get("Authorization") == KEY
    return found[0]


def json_handler(answers, record: list | None = None):
    """Answers in turn (the last one repeats); ``record`` gets (monotonic time, request)."""
    answers = list(answers)
    lock = threading.Lock()

    def handler(request: Request) -> Response:
        with lock:
            if record is not None:
                record.append((time.monotonic(), request))
            answer = answers.pop(0) if len(answers) > 1 else answers[0]
        status, body = answer if isinstance(answer, tuple) else (200, answer)
        return Response(json.dumps(body), status=status, content_type="application/json")

    return handler


def lmt(**kw) -> OrderRequest:
    base = dict(instrument=TCS, side=Side.BUY, quantity=1, order_type=OrderType.LIMIT, product=Product.DELIVERY,
                price=3300.5, tag="swing-1")
    base.update(kw)
    return OrderRequest(**base)


# ---------------------------------------------------------------------- shape


def test_is_a_broker_and_repr_hides_secrets():
    broker = make()
    assert isinstance(broker, Broker)
    assert broker.name == "definedge" and broker.live is True
    text = repr(broker)
    assert KEY not in text and WS_KEY not in text and "session=set" in text and "algo_id=set" in text
    assert broker.instruments() == INSTRUMENTS


def test_session_keys_may_be_secretstr_and_must_be_four(server):
    from pydantic import SecretStr

    from tradeflow.errors import ConfigError

    server.expect_request("/dart/v1/limits", method="GET").respond_with_json({"status": "SUCCESS", "cash": "10.00"})
    assert make(session_keys=("U1", "A1", SecretStr(KEY), SecretStr(WS_KEY))).funds().available == 10.0
    assert only(server, "/dart/v1/limits", "GET")
    with pytest.raises(ConfigError, match="four session keys"):
        make(session_keys=("U1", KEY))


# ---------------------------------------------------------------------- place_order


def test_place_limit_order_wire_and_record(server):
    server.expect_request("/dart/v1/placeorder", method="POST").respond_with_json(SUCCESS_ORDER)
    order = make().place_order(lmt())
    sent = only(server, "/dart/v1/placeorder", "POST")
    assert sent.headers["Content-Type"] == "application/json"
    assert sent.get_json() == {
        "exchange": "NSE", "order_type": "BUY", "price": 3300.5, "price_type": "LIMIT", "product_type": "CNC",
        "quantity": 1, "tradingsymbol": "TCS-EQ", "algo_id": ALGO, "remarks": "swing-1", "validity": "DAY",
    }
    assert isinstance(order, Order)
    assert order.order_id == "24010500000123" and order.status is OrderStatus.PENDING
    assert order.tag == "swing-1" and order.request.instrument is TCS
    assert [s for _, s in order.history] == [OrderStatus.PENDING]


@pytest.mark.parametrize(
    ("request_kw", "expected"),
    [
        (dict(instrument=NIFTY_CE, side=Side.SELL, quantity=75, order_type=OrderType.SL_M, product=Product.MARGIN,
              price=None, trigger_price=99.5, validity="IOC", tag="exit-1"),
         {"exchange": "NFO", "order_type": "SELL", "price": 0, "price_type": "SL-MARKET", "product_type": "NORMAL",
          "quantity": 75, "tradingsymbol": "NIFTY26JUN25000CE", "trigger_price": 99.5, "validity": "IOC",
          "remarks": "exit-1"}),
        (dict(instrument=CUB, side=Side.BUY, quantity=10, order_type=OrderType.SL, product=Product.INTRADAY,
              price=200.5, trigger_price=200.0, tag="brk"),
         {"exchange": "BSE", "order_type": "BUY", "price": 200.5, "price_type": "SL-LIMIT", "product_type": "INTRADAY",
          "quantity": 10, "tradingsymbol": "CUB", "trigger_price": 200.0, "validity": "DAY", "remarks": "brk"}),
        (dict(instrument=SENSEX_FUT, side=Side.BUY, quantity=20, order_type=OrderType.MARKET, product=Product.MARGIN,
              price=None, tag="mkt"),
         {"exchange": "BFO", "order_type": "BUY", "price": 0, "price_type": "MARKET", "product_type": "NORMAL",
          "quantity": 20, "tradingsymbol": "SENSEX26JUNFUT", "validity": "DAY", "remarks": "mkt"}),
    ],
)
def test_place_order_maps_segment_side_type_product(server, request_kw, expected):
    server.expect_request("/dart/v1/placeorder", method="POST").respond_with_json(SUCCESS_ORDER)
    make().place_order(OrderRequest(**request_kw))
    body = only(server, "/dart/v1/placeorder", "POST").get_json()
    assert body == {**expected, "algo_id": ALGO}


def test_trading_symbol_is_asked_once_by_token(server):
    server.expect_request("/dart/v1/placeorder", method="POST").respond_with_json(SUCCESS_ORDER)
    broker = make()
    req = OrderRequest(NIFTY_CE, Side.BUY, 75, OrderType.LIMIT, Product.MARGIN, price=101.05, tag="opt")
    broker.place_order(req)
    broker.place_order(req)
    only(server, "/dart/v1/securityinfo/NFO/43210", "GET")
    assert reqs(server)[0].path == "/dart/v1/securityinfo/NFO/43210"  # asked before the first order
    bodies = [r.get_json() for r in reqs(server, "/dart/v1/placeorder")]
    assert [b["tradingsymbol"] for b in bodies] == ["NIFTY26JUN25000CE"] * 2


def test_failed_trading_symbol_lookup_sends_no_order(server):
    server.clear()
    server.expect_request(SECINFO, method="GET").respond_with_json({"status": "ERROR", "message": "Invalid token"})
    with pytest.raises(BrokerError, match="order not sent.*Invalid token"):
        make().place_order(OrderRequest(NIFTY_CE, Side.BUY, 75, OrderType.MARKET, Product.MARGIN, tag="x"))
    assert reqs(server, "/dart/v1/placeorder") == []


def test_untagged_order_gets_a_tag_it_can_be_found_by(server):
    server.expect_request("/dart/v1/placeorder", method="POST").respond_with_json(SUCCESS_ORDER)
    order = make().place_order(lmt(tag=None))
    remarks = only(server, "/dart/v1/placeorder", "POST").get_json()["remarks"]
    assert re.fullmatch(r"tf-[0-9a-f]{12}", remarks) and order.tag == remarks


def test_invalid_order_sends_nothing(server):
    broker = make()
    with pytest.raises(InvalidOrder, match="off the tick size"):
        broker.place_order(lmt(price=3300.53))
    with pytest.raises(InvalidOrder, match="not a multiple of the lot size 75"):
        broker.place_order(lmt(instrument=NIFTY_CE, quantity=50, product=Product.MARGIN, price=100.0))
    with pytest.raises(InvalidOrder, match="index"):
        broker.place_order(lmt(instrument=NIFTY_IDX))
    assert server.log == []


def test_missing_algo_id_sends_nothing(server, monkeypatch):
    monkeypatch.delenv("DEFINEDGE_ALGO_ID")
    with pytest.raises(InvalidOrder, match="DEFINEDGE_ALGO_ID"):
        make().place_order(lmt())
    assert server.log == []


def test_rejected_order_is_order_rejected(server):
    server.expect_request("/dart/v1/placeorder", method="POST").respond_with_json(
        {"status": "ERROR", "message": "RMS: Margin Exceeds, Required: 3300.50"})
    with pytest.raises(OrderRejected, match="Margin Exceeds") as info:
        make().place_order(lmt())
    assert info.value.broker_message == "RMS: Margin Exceeds, Required: 3300.50"
    assert len(reqs(server, "/dart/v1/placeorder")) == 1


def test_order_placement_is_not_retried_on_429(server):
    server.expect_request("/dart/v1/placeorder", method="POST").respond_with_json(
        {"status": "ERROR", "message": "too many requests"}, status=429)
    with pytest.raises(RateLimited):
        make().place_order(lmt())
    assert len(reqs(server, "/dart/v1/placeorder")) == 1


# ---------------------------------------------------------------------- unknown outcome → lookup by tag


SLOW_ORDER = '{"status": "SUCCESS", "order_id": "24010500000999"}'


def test_timed_out_placement_found_by_tag(server, stall):
    slow = stall(SLOW_ORDER)
    server.expect_request("/dart/v1/placeorder", method="POST").respond_with_handler(slow)
    server.expect_request("/dart/v1/orders", method="GET").respond_with_json({"status": "SUCCESS", "orders": [
        order_row(order_id="24010500000998", remarks="other-tag"),
        order_row(order_id="24010500000999", remarks="swing-1", order_status="NEW", exchange_orderid=""),
    ]})
    order = make(timeout=0.4).place_order(lmt())
    assert order.order_id == "24010500000999" and order.status is OrderStatus.PENDING and order.tag == "swing-1"
    assert len(slow.arrivals) == 1 and slow.arrivals[0].get_json()["remarks"] == "swing-1"
    assert len(reqs(server, "/dart/v1/orders", "GET")) == 1


def test_timed_out_placement_not_in_book_says_not_placed(server, stall):
    slow = stall(SLOW_ORDER)
    server.expect_request("/dart/v1/placeorder", method="POST").respond_with_handler(slow)
    server.expect_request("/dart/v1/orders", method="GET").respond_with_json(
        {"status": "SUCCESS", "orders": [order_row(remarks="other-tag")]})
    with pytest.raises(BrokerUnavailable, match="no order tagged 'swing-1'.*not placed"):
        make(timeout=0.4).place_order(lmt())
    assert len(slow.arrivals) == 1


def test_500_without_status_on_placement_is_not_success(server):
    server.expect_request("/dart/v1/placeorder", method="POST").respond_with_json({"oops": True}, status=500)
    server.expect_request("/dart/v1/orders", method="GET").respond_with_json({"status": "SUCCESS", "orders": []})
    with pytest.raises(BrokerUnavailable, match="HTTP 500.*not placed"):
        make().place_order(lmt())
    assert len(reqs(server, "/dart/v1/placeorder", "POST")) == 1


def test_placement_outcome_unknown_when_book_has_no_tags_and_a_lookalike(server):
    server.expect_request("/dart/v1/placeorder", method="POST").respond_with_json({"order_id": "1"})  # no status
    server.expect_request("/dart/v1/orders", method="GET").respond_with_json(
        {"status": "SUCCESS", "orders": [order_row(order_id="24010500000777")]})  # documented rows: no remarks
    with pytest.raises(BrokerUnavailable, match="24010500000777.*may have been placed"):
        make().place_order(lmt())
    assert len(reqs(server, "/dart/v1/placeorder", "POST")) == 1


# ---------------------------------------------------------------------- session expiry


def test_session_expired_renews_once_and_retries(server):
    calls = []

    def handler(request: Request) -> Response:
        calls.append(request.headers.get("Authorization"))
        if request.headers.get("Authorization") == NEW_KEY:
            body = '{"status": "SUCCESS", "order_id": "24010500000123"}'
        else:
            body = '{"status": "ERROR", "message": "Session Expired"}'
        return Response(body, content_type="application/json")

    server.expect_request("/dart/v1/placeorder", method="POST").respond_with_handler(handler)
    renewals = []

    def renew():
        renewals.append(1)
        return ("U1", "A1", NEW_KEY, "WS2-fresh")

    order = make(on_session_expired=renew).place_order(lmt())
    assert order.order_id == "24010500000123"
    assert calls == [KEY, NEW_KEY] and len(renewals) == 1


def test_second_expiry_raises_session_expired(server):
    server.expect_request("/dart/v1/orders", method="GET").respond_with_json(
        {"status": "ERROR", "message": "Session Expired"})
    renewals = []
    broker = make(on_session_expired=lambda: renewals.append(1) or ("U1", "A1", NEW_KEY, "WS2-fresh"))
    with pytest.raises(SessionExpired, match="tradeflow session login --broker definedge") as info:
        broker.orders()
    assert len(reqs(server, "/dart/v1/orders")) == 2 and len(renewals) == 1
    assert NEW_KEY not in str(info.value) and KEY not in str(info.value)


def test_expiry_without_renewal_raises_at_once(server):
    server.expect_request("/dart/v1/positions", method="GET").respond_with_json(
        {"status": "ERROR", "message": "Session Expired"})
    with pytest.raises(SessionExpired, match="log in again"):
        make().positions()
    assert len(reqs(server)) == 1


def test_no_keys_and_no_renewal_sends_nothing(server):
    with pytest.raises(SessionExpired, match="no Definedge session keys"):
        make(session_keys=None).funds()
    assert server.log == []


# ---------------------------------------------------------------------- read errors


def test_read_error_status_is_broker_error_not_rejection(server):
    server.expect_request("/dart/v1/trades", method="GET").respond_with_json(
        {"status": "ERROR", "message": "Trade book not available"})
    with pytest.raises(BrokerError, match="Trade book not available") as info:
        make().trades()
    assert not isinstance(info.value, (OrderRejected, BrokerUnavailable))


def test_500_without_status_is_unavailable_after_retries(server):
    server.expect_request("/dart/v1/limits", method="GET").respond_with_json({"oops": True}, status=500)
    with pytest.raises(BrokerUnavailable, match="HTTP 500"):
        make().funds()
    assert len(reqs(server, "/dart/v1/limits")) == DefinedgeBroker._READ_ATTEMPTS


def test_200_without_status_is_not_success(server):
    server.expect_request("/dart/v1/positions", method="GET").respond_with_json({"positions": []})
    with pytest.raises(BrokerUnavailable, match="without status"):
        make().positions()


def test_429_read_retries_then_succeeds(server):
    server.expect_request("/dart/v1/limits", method="GET").respond_with_handler(json_handler([
        (429, {"status": "ERROR", "message": "rate"}), {"status": "SUCCESS", "cash": "1000.00"}]))
    assert make().funds().available == 1000.0
    assert len(reqs(server, "/dart/v1/limits")) == 2


def test_429_read_gives_rate_limited_when_it_persists(server):
    server.expect_request("/dart/v1/holdings", method="GET").respond_with_json({"message": "slow down"}, status=429)
    with pytest.raises(RateLimited):
        make().holdings()


def test_timeout_is_unavailable_after_read_retries(server, stall):
    slow = stall('{"status": "SUCCESS", "orders": []}')
    server.expect_request("/dart/v1/orders", method="GET").respond_with_handler(slow)
    with pytest.raises(BrokerUnavailable, match=r"within 0.3s"):
        make(timeout=0.3).orders()
    assert len(slow.arrivals) == DefinedgeBroker._READ_ATTEMPTS


def test_connection_refused_is_unavailable():
    broker = make(base_url="http://127.0.0.1:9/dart/v1/")
    with pytest.raises(BrokerUnavailable, match="cannot reach Definedge"):
        broker.funds()


def test_missing_content_type_is_unavailable(server):
    server.expect_request("/dart/v1/limits", method="GET").respond_with_response(
        Response(b'{"status": "SUCCESS"}', headers={}, content_type=None, mimetype=None))
    with pytest.raises(BrokerUnavailable):
        make().funds()


# ---------------------------------------------------------------------- order book, modify, cancel


@pytest.mark.parametrize(
    ("changes", "status", "filled"),
    [
        ({"order_status": "NEW"}, OrderStatus.PENDING, 0),
        ({"order_status": "OPEN"}, OrderStatus.OPEN, 0),
        ({"order_status": "OPEN", "filled_qty": "1", "quantity": "2", "average_traded_price": "3300.00"},
         OrderStatus.PARTIALLY_FILLED, 1),
        ({"order_status": "REPLACED"}, OrderStatus.OPEN, 0),
        ({"order_status": "COMPLETE", "filled_qty": "1", "average_traded_price": "3299.95"}, OrderStatus.FILLED, 1),
        ({"order_status": "CANCELED"}, OrderStatus.CANCELLED, 0),
        ({"order_status": "REJECTED"}, OrderStatus.REJECTED, 0),
    ],
)
def test_orders_map_status(server, changes, status, filled):
    server.expect_request("/dart/v1/orders", method="GET").respond_with_json(
        {"status": "SUCCESS", "orders": [order_row(**changes)]})
    [order] = make().orders()
    only(server, "/dart/v1/orders", "GET")
    assert order.status is status and order.filled_quantity == filled
    assert order.history[0][1] is OrderStatus.PENDING and order.history[-1][1] is status
    assert order.request.instrument is TCS and order.request.side is Side.BUY
    assert order.request.order_type is OrderType.LIMIT and order.request.price == 3300.5
    assert order.request.product is Product.DELIVERY and order.exchange_order_id == "1300000000010094"
    assert order.updated_at == pd.Timestamp("2026-01-05 09:20:01", tz=IST)
    if filled:
        assert order.average_price == float(changes["average_traded_price"])
    else:
        assert order.average_price is None


@pytest.mark.parametrize(
    ("field", "value"),
    [("order_status", "TRIGGERED_MAYBE"), ("price_type", "SL"), ("product_type", "MIS"), ("exchange", "MCX"),
     ("order_type", "B")],
)
def test_unknown_broker_values_raise_naming_them(server, field, value):
    server.expect_request("/dart/v1/orders", method="GET").respond_with_json(
        {"status": "SUCCESS", "orders": [order_row(**{field: value})]})
    with pytest.raises(BrokerError, match=re.escape(repr(value))):
        make().orders()


def test_order_rows_outside_the_instrument_list_get_a_minimal_instrument(server):
    server.expect_request("/dart/v1/orders", method="GET").respond_with_json({"status": "SUCCESS", "orders": [
        order_row(tradingsymbol="BANKNIFTY26JUN52000PE", token="777", exchange="NFO", lotsize="30",
                  product_type="NORMAL", quantity="30", price="10.00")]})
    [order] = make().orders()
    inst = order.request.instrument
    assert (inst.symbol, inst.segment, inst.kind, inst.lot_size) == ("BANKNIFTY26JUN52000PE", Segment.NSE_FNO,
                                                                     InstrumentKind.OPTIDX, 30)
    assert order.request.product is Product.MARGIN


def test_single_order_has_no_status_key(server):
    server.expect_request("/dart/v1/order/23072600000002", method="GET").respond_with_json({
        "order_id": "23072600000002", "tradingsymbol": "TCS-EQ", "token": "11536", "quantity": "1",
        "price_type": "MARKET", "product_type": "CNC", "order_entry_time": "11:15:05 26-07-2023",
        "order_status": "COMPLETE", "order_type": "BUY", "exchange_orderid": "1300000000010094",
        "pending_qty": "0", "price": "0.00", "exchange_time": "26-07-2023 11:15:06", "exchange": "NSE",
        "disclosed_quantity": "0", "validity": "DAY", "average_traded_price": "3221.00"})  # no filled_qty
    order = make().order("23072600000002")
    only(server, "/dart/v1/order/23072600000002", "GET")
    assert order.status is OrderStatus.FILLED and order.request.order_type is OrderType.MARKET
    assert order.request.price is None and order.average_price == 3221.0 and order.filled_quantity == 1


def test_order_status_moves_through_the_state_machine(server):
    server.expect_request("/dart/v1/placeorder", method="POST").respond_with_json(SUCCESS_ORDER)
    server.expect_request("/dart/v1/order/24010500000123", method="GET").respond_with_handler(json_handler([
        order_row(order_status="OPEN", remarks="swing-1"),
        order_row(order_status="COMPLETE", filled_qty="1", average_traded_price="3300.50"),
        order_row(order_status="OPEN"),  # a filled order cannot reopen
    ]))
    broker = make()
    broker.place_order(lmt())
    assert broker.order("24010500000123").status is OrderStatus.OPEN
    filled = broker.order("24010500000123")
    assert [s for _, s in filled.history] == [OrderStatus.PENDING, OrderStatus.OPEN, OrderStatus.FILLED]
    assert filled.tag == "swing-1"
    with pytest.raises(BrokerError, match="cannot happen"):
        broker.order("24010500000123")


def test_order_by_tag_scans_remarks(server):
    server.expect_request("/dart/v1/orders", method="GET").respond_with_json({"status": "SUCCESS", "orders": [
        order_row(order_id="1001", remarks="a"), order_row(order_id="1002", remarks="b"),
        order_row(order_id="1003", remarks="b", order_status="COMPLETE", filled_qty="1")]})
    broker = make()
    found = broker.order_by_tag("b")
    only(server, "/dart/v1/orders", "GET")
    assert found is not None and found.order_id == "1003" and found.tag == "b"  # the newest of the tag
    assert broker.order_by_tag("zzz") is None


def test_order_by_tag_without_remarks_in_the_book(server):
    server.expect_request("/dart/v1/placeorder", method="POST").respond_with_json(SUCCESS_ORDER)
    server.expect_request("/dart/v1/orders", method="GET").respond_with_json(
        {"status": "SUCCESS", "orders": [order_row()]})  # documented rows carry no remarks
    broker = make()
    broker.place_order(lmt(tag="mine"))
    assert broker.order_by_tag("mine").order_id == "24010500000123"  # placed by this object
    with pytest.raises(BrokerError, match="does not show tags"):
        broker.order_by_tag("someone-elses")


def test_modify_order_reads_validates_and_posts(server):
    server.expect_request("/dart/v1/order/24010500000123", method="GET").respond_with_json(order_row())
    server.expect_request("/dart/v1/modify", method="POST").respond_with_json(SUCCESS_ORDER)
    order = make().modify_order("24010500000123", price=3290.0, quantity=2)
    body = only(server, "/dart/v1/modify", "POST").get_json()
    assert body == {"exchange": "NSE", "order_id": "24010500000123", "order_type": "BUY", "price": 3290.0,
                    "price_type": "LIMIT", "product_type": "CNC", "quantity": 2, "tradingsymbol": "TCS-EQ",
                    "validity": "DAY"}
    assert order.request.price == 3290.0 and order.request.quantity == 2 and order.status is OrderStatus.OPEN


def test_modify_to_a_bad_price_sends_no_modify(server):
    server.expect_request("/dart/v1/order/24010500000123", method="GET").respond_with_json(order_row())
    with pytest.raises(InvalidOrder, match="tick"):
        make().modify_order("24010500000123", price=3290.01)
    assert reqs(server, "/dart/v1/modify") == []


def test_modify_rejected_is_order_rejected(server):
    server.expect_request("/dart/v1/order/24010500000123", method="GET").respond_with_json(order_row())
    server.expect_request("/dart/v1/modify", method="POST").respond_with_json(
        {"status": "ERROR", "message": "Order already executed"})
    with pytest.raises(OrderRejected, match="already executed"):
        make().modify_order("24010500000123", price=3290.0)


def test_cancel_order_then_reads_it_back(server):
    server.expect_request("/dart/v1/cancel/24010500000123", method="GET").respond_with_json(
        {"status": "SUCCESS", "order_id": "24010500000123", "request_time": "09:31:27 05-01-2026"})
    server.expect_request("/dart/v1/order/24010500000123", method="GET").respond_with_json(
        order_row(order_status="CANCELED"))
    order = make().cancel_order("24010500000123")
    only(server, "/dart/v1/cancel/24010500000123", "GET")
    assert order.status is OrderStatus.CANCELLED


# ---------------------------------------------------------------------- account


def test_trades_positions_holdings_funds(server):
    server.expect_request("/dart/v1/trades", method="GET").respond_with_json({"status": "SUCCESS", "trades": [{
        "order_id": "1234567890", "exchange": "NFO", "price_type": "MARKET", "validity": "DAY",
        "product_type": "NORMAL", "fill_id": "4627", "fill_time": "01-02-2023 13:49:48", "order_type": "SELL",
        "tradingsymbol": "NIFTY26JUN25000CE", "quantity": "75", "token": "43210", "filled_qty": "75",
        "last_fill_qty": "75", "price_precision": "2", "lotsize": "75", "ticksize": "0.05", "price": "0.00",
        "fill_price": "117.65", "exchange_time": "01-02-2023 13:49:48", "exchange_orderid": "1001234567890 "}]})
    server.expect_request("/dart/v1/positions", method="GET").respond_with_json({"status": "SUCCESS", "positions": [{
        "exchange": "NSE", "tradingsymbol": "TCS-EQ", "product_type": "INTRADAY", "token": "11536", "lotsize": "1",
        "ticksize": "0.05", "multiplier": "1", "day_buy_qty": "1", "day_sell_qty": "0", "day_buy_avg": "3221.00",
        "net_quantity": "-2", "net_averageprice": "3221.00", "lastPrice": "3225.40", "unrealized_pnl": "-8.80",
        "realized_pnl": "-0.00"}]})
    server.expect_request("/dart/v1/holdings", method="GET").respond_with_json({"status": "SUCCESS", "data": [{
        "dp_qty": "5", "t1_qty": "25", "holding_used": "0", "avg_buy_price": "197.30", "sell_amt": "0.000000",
        "trade_qty": "0", "tradingsymbol": [
            {"exchange": "BSE", "tradingsymbol": "CUB", "token": "532210", "price_precision": "2", "ticksize": "0.05",
             "lotsize": "1", "isin": "INE491A01021"},
            {"exchange": "NSE", "tradingsymbol": "CUB-EQ", "token": "5701", "price_precision": "2",
             "ticksize": "0.05", "lotsize": "1", "isin": "INE491A01021"}]}]})
    server.expect_request("/dart/v1/limits", method="GET").respond_with_json({
        "status": "SUCCESS", "cash": "2500000.00", "payin": "1000.00", "payout": "500.0",
        "brokerCollateralAmount": "0.00", "unClearedCash": "0.00", "dayCash": "0.00",
        "turnOverLimit": "750000000.00", "pendordvallmt": "450000000.00"})
    broker = make()

    [trade] = broker.trades()
    assert (trade.trade_id, trade.order_id, trade.instrument, trade.side, trade.quantity, trade.price) == (
        "4627", "1234567890", NIFTY_CE, Side.SELL, 75, 117.65)
    assert trade.time == pd.Timestamp("2023-02-01 08:19:48", tz="UTC")

    [pos] = broker.positions()
    assert (pos.instrument, pos.product, pos.quantity, pos.average_price, pos.last_price, pos.unrealized_pnl) == (
        TCS, Product.INTRADAY, -2, 3221.0, 3225.4, -8.8)

    [hold] = broker.holdings()
    assert hold.instrument is CUB and hold.quantity == 30 and hold.average_price == 197.3  # BSE listing is in our list

    funds = broker.funds()
    assert (funds.total, funds.used, funds.available) == (2501000.0, 0.0, 2500500.0)
    for path in ("trades", "positions", "holdings", "limits"):
        only(server, f"/dart/v1/{path}", "GET")


# ---------------------------------------------------------------------- quotes


QUOTE = {
    "status": "SUCCESS", "lotsize": "1", "exchange": "NSE", "tradingsymbol": "ACC-EQ", "company_name": "ACC LIMITED",
    "symbol_name": "ACC", "segment": "EQT", "instrument_name": "EQ", "isin": "INE012A01025", "ticksize": "0.05",
    "price_precision": "2", "multiplier": "1", "upper_circuit": "2165.10", "lower_circuit": "1673.05",
    "price_factor": "(1 / 1 ) * (1 / 1)", "ltp": "1858.00", "day_high": "2008.50", "day_low": "1750.00",
    "volume": "4839643", "last_traded_qty": "2", "last_trade_time": "15:29:59", "best_bid_price1": "1858.00",
    "best_ask_price1": "1859.00", "best_bid_qty1": "8", "best_ask_qty1": "94", "day_open": "1999.50",
    "average_traded_price": "1858.91",
}


def test_quote_per_instrument(server):
    server.expect_request("/dart/v1/quotes/NSE/22", method="GET").respond_with_json(QUOTE)
    server.expect_request("/dart/v1/quotes/NFO/43210", method="GET").respond_with_json(
        {**QUOTE, "exchange": "NFO", "tradingsymbol": "NIFTY26JUN25000CE", "ltp": "101.05"})
    broker = make()
    broker._clock = lambda: pd.Timestamp("2026-01-05 16:00", tz=IST).tz_convert("UTC")
    quotes = broker.quote([ACC, NIFTY_CE])
    only(server, "/dart/v1/quotes/NSE/22", "GET")
    only(server, "/dart/v1/quotes/NFO/43210", "GET")
    acc = quotes["ACC"]
    assert acc.instrument is ACC and acc.last_price == 1858.0 and (acc.bid, acc.ask) == (1858.0, 1859.0)
    assert (acc.open, acc.high, acc.low, acc.volume) == (1999.5, 2008.5, 1750.0, 4839643.0)
    assert (acc.upper_circuit, acc.lower_circuit) == (2165.1, 1673.05)
    assert acc.time == pd.Timestamp("2026-01-05 15:29:59", tz=IST)
    assert quotes["NIFTY30JUN2625000CE"].last_price == 101.05


def test_quote_needs_a_token(server):
    with pytest.raises(InvalidOrder, match="no definedge id"):
        make().quote([Instrument("XYZ", Segment.NSE_EQ, InstrumentKind.EQUITY)])
    assert server.log == []


# ---------------------------------------------------------------------- history


def _csv_handler(rows_by_from: dict[str, str] | None = None, default: str = ""):
    def handler(request: Request) -> Response:
        start = request.path.rstrip("/").split("/")[-2]
        body = (rows_by_from or {}).get(start, default)
        return Response(body, content_type="text/csv")

    return handler


HISTORY = re.compile(r"^/sds/history/.*")


def test_history_minute_through_the_rewriting_adapter(server):
    server.expect_request(HISTORY, method="GET").respond_with_handler(_csv_handler(default=(
        "050120260915,100,102,99,101,1000\n050120260916,101,103,100.5,102.5,1200\n"
        "050120260917,102.5,104,102,103,900\n050120260918,103,103.5,102,102.2,800\n")))
    broker = make()
    broker._clock = lambda: pd.Timestamp("2026-01-06", tz="UTC")
    out = broker.history(ACC, "1m", pd.Timestamp("2026-01-05 09:15", tz=IST), pd.Timestamp("2026-01-05 09:18", tz=IST))
    sent = only(server, "/sds/history/NSE/22/minute/050120260915/050120260918", "GET")
    assert sent.headers["Host"].startswith("127.0.0.1")
    assert list(out.columns) == ["open", "high", "low", "close", "volume"]
    assert out.index.name == "ts" and str(out.index.tz) == IST and (out.dtypes == "float64").all()
    assert list(out.index.tz_convert("UTC")) == [pd.Timestamp(f"2026-01-05 03:{m}", tz="UTC") for m in (45, 46, 47)]
    assert out.iloc[1].tolist() == [101.0, 103.0, 100.5, 102.5, 1200.0]


def test_history_leaves_out_the_bar_still_forming(server):
    server.expect_request(HISTORY, method="GET").respond_with_handler(_csv_handler(default=(
        "050120260915,100,102,99,101,1000\n050120260916,101,103,100.5,102.5,1200\n"
        "050120260917,102.5,104,102,103,900\n")))
    broker = make()
    broker._clock = lambda: pd.Timestamp("2026-01-05 09:17:30", tz=IST).tz_convert("UTC")
    out = broker.history(ACC, "1m", pd.Timestamp("2026-01-05 09:15", tz=IST), pd.Timestamp("2026-01-05 15:30", tz=IST))
    assert [t.strftime("%H:%M") for t in out.index] == ["09:15", "09:16"]
    assert reqs(server)[0].path == "/sds/history/NSE/22/minute/050120260915/050120260917"  # not past now


def test_history_daily_with_oi_and_in_progress_day(server):
    server.expect_request(HISTORY, method="GET").respond_with_handler(_csv_handler(default=(
        "020120260000,25000,25100,24900,25050,1000,500\n050120260000,25050,25200,25000,25150,900,600\n")))
    broker = make()
    broker._clock = lambda: pd.Timestamp("2026-01-05 12:00", tz=IST).tz_convert("UTC")  # the 5th is still trading
    out = broker.history(NIFTY_CE, "1d", pd.Timestamp("2026-01-01", tz=IST), pd.Timestamp("2026-01-06", tz=IST))
    assert reqs(server)[0].path == "/sds/history/NFO/43210/day/010120260000/050120261200"
    assert list(out.columns) == ["open", "high", "low", "close", "volume", "oi"]
    assert list(out.index) == [pd.Timestamp("2026-01-02", tz=IST)] and out["oi"].iloc[0] == 500.0


def test_history_long_range_is_windowed(server):
    server.expect_request(HISTORY, method="GET").respond_with_handler(_csv_handler({
        "011120250000": "031120250915,1,2,0.5,1.5,10\n",
        "011220250000": "011220250915,2,3,1.5,2.5,20\n",
        "311220250000": "311220250915,3,4,2.5,3.5,30\n050120260915,4,5,3.5,4.5,40\n",
    }))
    broker = make()
    broker._clock = lambda: pd.Timestamp("2026-02-01", tz="UTC")
    out = broker.history(ACC, "1m", pd.Timestamp("2025-11-01", tz=IST), pd.Timestamp("2026-01-05 10:00", tz=IST))
    paths = [r.path.split("/")[-2:] for r in reqs(server)]
    assert paths == [["011120250000", "011220250000"], ["011220250000", "311220250000"],
                     ["311220250000", "050120261000"]]
    assert out["volume"].tolist() == [10.0, 20.0, 30.0, 40.0] and out.index.is_monotonic_increasing


def test_history_refuses_timeframes_definedge_lacks(server):
    with pytest.raises(BrokerError, match="1-minute and daily bars only"):
        make().history(ACC, "5m", pd.Timestamp("2026-01-05", tz=IST), pd.Timestamp("2026-01-06", tz=IST))
    assert server.log == []


def test_history_bad_rows_name_the_row(server):
    server.expect_request(HISTORY, method="GET").respond_with_data("050120260915,abc,1,1,1,1\n", content_type="text/csv")
    broker = make()
    broker._clock = lambda: pd.Timestamp("2026-01-06", tz="UTC")
    with pytest.raises(BrokerError, match="unreadable row '050120260915,abc"):
        broker.history(ACC, "1m", pd.Timestamp("2026-01-05 09:15", tz=IST), pd.Timestamp("2026-01-05 09:20", tz=IST))


def test_master_host_is_rewritten_and_nothing_is_written_into_the_sdk(server):
    master = Path(integrate.__file__).parent / "allmaster.csv"
    existed = master.exists()
    server.expect_request("/public/allmaster.zip", method="GET").respond_with_data(b"PK", content_type="application/zip")
    broker = make()
    answer = broker._c2i._req_sess.get("https://app.definedgesecurities.com/public/allmaster.zip", timeout=2)
    assert answer.status_code == 200 and reqs(server, "/public/allmaster.zip")
    assert master.exists() == existed


# ---------------------------------------------------------------------- GTT


GTT_BOOK = {"status": "SUCCESS", "pendingGTTOrderBook": [
    {"alert_id": "1234001", "tradingsymbol": "TCS-EQ", "exchange": "NSE", "token": "11536", "remarks": "",
     "order_time": "16:23:36 27-03-2023", "order_type": "BUY", "price_type": "LIMIT", "product_type": "CNC",
     "lotsize": "1", "trigger_price": "3390.00", "quantity": "3", "condition": "LTP_ABOVE"},
    {"alert_id": "1234003", "tradingsymbol": "NIFTY26JUN25000CE", "exchange": "NFO", "token": "43210",
     "remarks": "oco1", "order_time": "16:31:10 27-03-2023", "order_type": "SELL", "price_type": "LIMIT",
     "product_type": "NORMAL", "lotsize": "75", "stoploss_quantity": "75", "target_quantity": "75",
     "stoploss_price": "80.00", "target_price": "120.00", "condition": "LMT_OCO"},
]}
GTT_OK = {"status": "SUCCESS", "alert_id": "1234001", "message": "Order Submitted Successfully",
          "request_time": "16:23:36 27-03-2023"}


@pytest.mark.parametrize(("ltp", "condition"), [("3300.00", "LTP_ABOVE"), ("3400.00", "LTP_BELOW")])
def test_place_single_gtt_condition_from_the_last_price(server, ltp, condition):
    server.expect_request("/dart/v1/quotes/NSE/11536", method="GET").respond_with_json({**QUOTE, "ltp": ltp})
    server.expect_request("/dart/v1/gttplaceorder", method="POST").respond_with_json(GTT_OK)
    req = GttRequest(TCS, Side.BUY, GttKind.SINGLE, (GttLeg(3390.0, 3390.0, 3),))
    gtt = make().place_gtt(req)
    body = only(server, "/dart/v1/gttplaceorder", "POST").get_json()
    assert body == {"exchange": "NSE", "order_type": "BUY", "price": 3390.0, "quantity": 3, "tradingsymbol": "TCS-EQ",
                    "alert_price": 3390.0, "condition": condition}
    assert isinstance(gtt, Gtt) and gtt.gtt_id == "1234001" and gtt.request is req


def test_place_oco_gtt(server):
    server.expect_request("/dart/v1/ocoplaceorder", method="POST").respond_with_json(GTT_OK)
    req = GttRequest(NIFTY_CE, Side.SELL, GttKind.OCO, (GttLeg(120.0, None, 75), GttLeg(80.0, None, 75)),
                     product=Product.MARGIN, tag="oco1")
    make().place_gtt(req, last_price=100.0)
    body = only(server, "/dart/v1/ocoplaceorder", "POST").get_json()
    assert body == {"exchange": "NFO", "order_type": "SELL", "tradingsymbol": "NIFTY26JUN25000CE",
                    "stoploss_quantity": 75, "stoploss_price": 80.0, "target_quantity": 75, "target_price": 120.0,
                    "remarks": "oco1"}


def test_bad_gtt_sends_nothing(server):
    broker = make()
    with pytest.raises(InvalidOrder, match="stop trigger 101.0 must be below"):
        broker.place_gtt(GttRequest(NIFTY_CE, Side.SELL, GttKind.OCO, (GttLeg(120.0, None, 75), GttLeg(101.0, None, 75)),
                                    product=Product.MARGIN), last_price=100.0)
    with pytest.raises(InvalidOrder, match="limit orders"):
        broker.place_gtt(GttRequest(TCS, Side.BUY, GttKind.SINGLE, (GttLeg(3390.0, None, 3),)), last_price=3300.0)
    with pytest.raises(InvalidOrder, match="always DELIVERY"):
        broker.place_gtt(GttRequest(TCS, Side.BUY, GttKind.SINGLE, (GttLeg(3390.0, 3390.0, 3),),
                                    product=Product.INTRADAY), last_price=3300.0)
    assert server.log == []


def test_gtts_merges_single_and_oco_then_modify_and_cancel_pick_the_endpoint(server):
    server.expect_request("/dart/v1/gttorders", method="GET").respond_with_json(GTT_BOOK)
    for path in ("gttmodify", "ocomodify"):
        server.expect_request(f"/dart/v1/{path}", method="POST").respond_with_json(GTT_OK)
    for path in ("gttcancel/1234001", "ococancel/1234003"):
        server.expect_request(f"/dart/v1/{path}", method="GET").respond_with_json(GTT_OK)
    broker = make()
    single, oco = broker.gtts()
    only(server, "/dart/v1/gttorders", "GET")
    assert (single.gtt_id, single.request.kind, single.request.side, single.request.product) == (
        "1234001", GttKind.SINGLE, Side.BUY, Product.DELIVERY)
    assert single.request.legs == (GttLeg(3390.0, 3390.0, 3),) and single.request.instrument is TCS
    assert (oco.gtt_id, oco.request.kind, oco.request.tag, oco.request.product) == (
        "1234003", GttKind.OCO, "oco1", Product.MARGIN)
    assert oco.request.target.trigger_price == 120.0 and oco.request.stop.trigger_price == 80.0

    broker.modify_gtt("1234001", GttRequest(TCS, Side.BUY, GttKind.SINGLE, (GttLeg(3385.0, 3380.0, 3),)),
                      last_price=3300.0)
    assert only(server, "/dart/v1/gttmodify", "POST").get_json() == {
        "exchange": "NSE", "alert_id": "1234001", "order_type": "BUY", "price": 3380.0, "quantity": 3,
        "tradingsymbol": "TCS-EQ", "alert_price": 3385.0, "condition": "LTP_ABOVE"}
    broker.modify_gtt("1234003", GttRequest(NIFTY_CE, Side.SELL, GttKind.OCO,
                                            (GttLeg(125.0, None, 75), GttLeg(75.0, None, 75)), product=Product.MARGIN),
                      last_price=100.0)
    assert only(server, "/dart/v1/ocomodify", "POST").get_json()["alert_id"] == "1234003"
    broker.cancel_gtt("1234001")
    broker.cancel_gtt("1234003")
    only(server, "/dart/v1/gttcancel/1234001", "GET")
    only(server, "/dart/v1/ococancel/1234003", "GET")


def test_cancel_unknown_gtt_is_a_clear_error(server):
    server.expect_request("/dart/v1/gttorders", method="GET").respond_with_json(GTT_BOOK)
    with pytest.raises(BrokerError, match="GTT 999 is not among"):
        make().cancel_gtt("999")


# ---------------------------------------------------------------------- rate limits


def test_rate_limits_hold_at_the_server(server):
    quote_times: list = []
    order_times: list = []
    server.expect_request("/dart/v1/quotes/NSE/22", method="GET").respond_with_handler(json_handler([QUOTE], quote_times))
    server.expect_request("/dart/v1/placeorder", method="POST").respond_with_handler(
        json_handler([SUCCESS_ORDER], order_times))
    broker = make()
    broker.quote([ACC] * 1)
    for _ in range(5):
        broker.quote([ACC])
    for i in range(8):
        broker.place_order(lmt(tag=f"t{i}"))  # TCS names its trading symbol: no lookups in between
    q = [t for t, _ in quote_times]
    o = [t for t, _ in order_times]
    assert len(q) == 6 and len(o) == 8
    assert q[-1] - q[0] >= (6 - 2) / 2.0 - 0.05  # 2/s, bursts of 2
    assert o[-1] - o[0] >= (8 - 5) / 5.0 - 0.05  # 5/s, bursts of 5
    for i in range(len(q)):  # a bucket of 2 at 2/s: n calls span at least (n - 2) / 2 seconds
        for j in range(i + 1, len(q)):
            assert q[j] - q[i] >= (j - i + 1 - 2) / 2.0 - 0.05


# ---------------------------------------------------------------------- secrets


def test_no_secret_reaches_logs_or_errors(server, caplog):
    caplog.set_level(logging.DEBUG)
    server.expect_request("/dart/v1/placeorder", method="POST").respond_with_handler(json_handler([
        SUCCESS_ORDER, {"status": "ERROR", "message": "RMS: blocked"}, (500, {"oops": True})]))
    server.expect_request("/dart/v1/orders", method="GET").respond_with_json({"status": "SUCCESS", "orders": []})
    server.expect_request("/dart/v1/limits", method="GET").respond_with_json(
        {"status": "ERROR", "message": "Session Expired"})
    server.expect_request("/dart/v1/trades", method="GET").respond_with_json(
        {"status": "ERROR", "message": f"Invalid session key {KEY}"})  # a server echoing the key
    broker = make(on_session_expired=lambda: ("U1", "A1", NEW_KEY, "WS2-fresh-key"))
    errors: list[str] = [repr(broker)]
    broker.place_order(lmt())
    for call in (lambda: broker.place_order(lmt()), lambda: broker.place_order(lmt()), broker.funds, broker.trades):
        with pytest.raises(BrokerError) as info:
            call()
        errors += [str(info.value), repr(info.value), str(info.value.__cause__ or "")]
    # even if pyintegrate's own logging were switched on, its loggers would not print the key
    logging.getLogger("integrate.connect").warning("Request: GET /x {'Authorization': '%s'}", KEY)
    assert reqs(server)[0].headers["Authorization"] == KEY  # the key was really in use
    text = caplog.text + "\n".join(errors)
    for secret in (KEY, WS_KEY, NEW_KEY, API_SECRET, "WS2-fresh-key"):
        assert secret not in text
    assert "'Authorization': '***'" in caplog.text
    for name in ("integrate.connect", "integrate.orders", "integrate.data"):
        assert logging.getLogger(name).getEffectiveLevel() >= logging.WARNING

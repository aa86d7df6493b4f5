"""End to end: the CLI and the connect notebook over the real dhanhq SDK and a fake Dhan on 127.0.0.1.

The fake serves the profile, the instrument master, funds, positions, quotes and orders; the
tests check what reached it, and that nothing does without TRADEFLOW_ALLOW_LIVE=1.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from tradeflow.brokers.ratelimit import reset_buckets
from tradeflow.cli import app
from tradeflow.runner import run_notebook

REPO = Path(__file__).resolve().parents[1]
MASTER = REPO / "tests" / "fixtures" / "instruments" / "dhan_detailed_options.csv"
TOKEN = "FAKE-DHAN-TOKEN-9z8y7x"
runner = CliRunner()


@pytest.fixture
def fake_dhan(httpserver, monkeypatch):
    reset_buckets()
    monkeypatch.setenv("DHAN_BASE_URL", httpserver.url_for("/v2"))
    monkeypatch.setenv("DHAN_MASTER_URL", httpserver.url_for("/master.csv"))
    monkeypatch.setenv("DHAN_CLIENT_ID", "1000000001")
    monkeypatch.setenv("DHAN_ACCESS_TOKEN", TOKEN)
    validity = (pd.Timestamp.now(tz="Asia/Kolkata") + pd.Timedelta(hours=20)).strftime("%d/%m/%Y %H:%M")
    httpserver.expect_request("/v2/profile").respond_with_json({"dhanClientId": "1000000001", "tokenValidity": validity})
    httpserver.expect_request("/master.csv").respond_with_data(MASTER.read_text(), content_type="text/csv")
    httpserver.expect_request("/v2/fundlimit").respond_with_json(
        {"dhanClientId": "1000000001", "availabelBalance": 98440.0, "sodLimit": 113642, "utilizedAmount": 15202.0})
    httpserver.expect_request("/v2/positions").respond_with_json([])
    quote = {"last_price": 1300.0, "ohlc": {"open": 1290.0, "close": 1295.0, "high": 1310.0, "low": 1285.0},
             "lower_circuit_limit": 1183.6, "upper_circuit_limit": 1446.6, "volume": 1000}
    httpserver.expect_request("/v2/marketfeed/quote", method="POST").respond_with_json(
        {"data": {"NSE_EQ": {"2885": quote}}, "status": "success"})
    row = {"dhanClientId": "1000000001", "orderId": "5001", "correlationId": "cli1", "orderStatus": "PENDING",
           "transactionType": "BUY", "exchangeSegment": "NSE_EQ", "productType": "INTRADAY", "orderType": "LIMIT",
           "validity": "DAY", "tradingSymbol": "RELIANCE", "securityId": "2885", "quantity": 2, "price": 1300.5,
           "triggerPrice": 0.0, "filledQty": 0, "remainingQuantity": 2, "averageTradedPrice": 0,
           "createTime": "2026-01-05 10:00:00", "updateTime": "2026-01-05 10:00:01", "exchangeTime": "2026-01-05 10:00:01"}
    httpserver.expect_request("/v2/orders", method="POST").respond_with_json({"orderId": "5001", "orderStatus": "PENDING"})
    httpserver.expect_request("/v2/orders/5001").respond_with_json(row)
    httpserver.expect_request("/v2/orders", method="GET").respond_with_json([row])
    return httpserver


def _posted_orders(server) -> list[dict]:
    return [json.loads(r.get_data()) for r, _ in server.log if r.method == "POST" and r.path == "/v2/orders"]


def test_live_order_refused_without_arming_and_nothing_sent(fake_dhan):
    res = runner.invoke(app, ["order", "place", "RELIANCE", "--broker", "dhan", "--side", "buy", "--qty-lots", "2",
                              "--type", "limit", "--price", "1300.5", "--segment", "NSE_EQ"])
    assert res.exit_code == 2 and "TRADEFLOW_ALLOW_LIVE=1" in res.output and "nothing was sent" in res.output
    assert len(fake_dhan.log) == 0


def test_armed_order_place_reaches_the_broker_once(fake_dhan, monkeypatch):
    monkeypatch.setenv("TRADEFLOW_ALLOW_LIVE", "1")
    res = runner.invoke(app, ["order", "place", "RELIANCE", "--broker", "dhan", "--side", "buy", "--qty-lots", "2",
                              "--type", "limit", "--price", "1300.5", "--segment", "NSE_EQ", "--tag", "cli1"])
    assert res.exit_code == 0, res.output
    (body,) = _posted_orders(fake_dhan)
    assert body["securityId"] == "2885" and body["quantity"] == 2 and body["price"] == 1300.5
    assert body["correlationId"] == "cli1" and body["transactionType"] == "BUY" and body["orderType"] == "LIMIT"
    assert "5001" in res.output
    assert TOKEN not in res.output


def test_invalid_order_is_refused_before_sending(fake_dhan, monkeypatch):
    monkeypatch.setenv("TRADEFLOW_ALLOW_LIVE", "1")
    res = runner.invoke(app, ["order", "place", "RELIANCE", "--broker", "dhan", "--side", "buy", "--type", "limit",
                              "--price", "1300.03", "--segment", "NSE_EQ"])
    assert res.exit_code == 2 and "off the tick size" in res.output
    assert _posted_orders(fake_dhan) == []
    res = runner.invoke(app, ["order", "place", "RELIANCE", "--broker", "dhan", "--side", "buy", "--type", "limit",
                              "--price", "1500", "--segment", "NSE_EQ"])
    assert res.exit_code == 2 and "upper circuit" in res.output
    assert _posted_orders(fake_dhan) == []


def test_reads_need_no_arming(fake_dhan):
    res = runner.invoke(app, ["funds", "--broker", "dhan"])
    assert res.exit_code == 0 and "available 98,440.00" in res.output
    res = runner.invoke(app, ["order", "list", "--broker", "dhan"])
    assert res.exit_code == 0 and "5001" in res.output


def test_connect_notebook_runs_against_the_fake(fake_dhan, tmp_path):
    result = run_notebook(REPO / "notebooks" / "00_connect.ipynb",
                          parameters={"broker": "dhan", "symbol": "RELIANCE", "segment": "NSE_EQ"}, runs_dir=tmp_path / "runs")
    text = result.notebook.read_text()
    nb = json.loads(text)
    assert [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"] == []
    assert "98,440.00" in text and "1300.0" in text
    assert TOKEN not in text and TOKEN not in result.html.read_text()


def test_fetch_from_dhan_windows_and_resumes_after_a_failure(fake_dhan, monkeypatch):
    """`tradeflow fetch --source dhan`: 90-day windows, a window that keeps failing stops the run,
    the rerun starts from the watermark and never asks for a finished window again."""
    from werkzeug import Response

    from tradeflow.calendar import session_bar_starts, sessions
    from tradeflow.store import CandleStore

    state = {"broken": True, "asked": []}

    def intraday(request):
        body = json.loads(request.get_data())
        lo = pd.Timestamp(body["fromDate"]).tz_localize("Asia/Kolkata")
        hi = pd.Timestamp(body["toDate"]).tz_localize("Asia/Kolkata")
        state["asked"].append((lo, hi))
        if state["broken"] and lo >= pd.Timestamp("2024-03-01", tz="Asia/Kolkata"):
            return Response("<html>502 Bad Gateway</html>", status=502, content_type="text/html")
        stamps = [t for d in sessions(lo.date(), hi.date()) for t in session_bar_starts(d, 1) if lo <= t < hi]
        secs = [int(t.timestamp()) for t in stamps]
        price = [22000.0 + (s % 7200) / 100 for s in secs]
        return Response(json.dumps({"open": price, "high": [p + 1 for p in price], "low": [p - 1 for p in price],
                                    "close": price, "volume": [0] * len(price), "timestamp": secs}),
                        content_type="application/json")

    fake_dhan.expect_request("/v2/charts/intraday", method="POST").respond_with_handler(intraday)
    args = ["fetch", "--source", "dhan", "--symbol", "NIFTY", "--timeframe", "1m", "--start", "2024-01-01",
            "--end", "2024-04-30", "--no-progress"]
    res = runner.invoke(app, args)
    assert res.exit_code != 0  # the broken window stopped the run
    store = CandleStore()
    mark = store.watermark("dhan", "NIFTY", "1m")
    assert mark is not None and mark <= pd.Timestamp("2024-03-31", tz="Asia/Kolkata")
    finished = [w for w in state["asked"] if w[1] <= mark]
    assert finished
    state["broken"], state["asked"] = False, []
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert all(lo >= mark - pd.Timedelta(minutes=1) for lo, _ in state["asked"])  # nothing finished asked again
    assert all(hi - lo <= pd.Timedelta(days=90) for lo, hi in state["asked"])
    report = store.gaps("NIFTY", "1m", "2024-01-01", "2024-04-30")
    assert report.ok and report.bars == report.expected_sessions * 375


def test_paper_broker_from_the_command_line_persists_between_commands():
    res = runner.invoke(app, ["order", "place", "RELIANCE", "--broker", "paper", "--side", "buy", "--qty-lots", "3",
                              "--type", "limit", "--price", "100", "--tag", "p1"])
    assert res.exit_code == 0, res.output
    assert "P000001" in res.output and "OPEN" in res.output
    listed = runner.invoke(app, ["order", "list", "--broker", "paper"])  # a new process would see the same account
    assert "P000001" in listed.output
    cancelled = runner.invoke(app, ["order", "cancel", "P000001", "--broker", "paper"])
    assert cancelled.exit_code == 0 and "CANCELLED" in cancelled.output
    index = runner.invoke(app, ["order", "place", "NIFTY", "--broker", "paper", "--side", "buy"])
    assert index.exit_code == 2 and "is an index and cannot be traded" in index.output
    funds = runner.invoke(app, ["funds", "--broker", "paper"])
    assert "available 1,000,000.00" in funds.output

"""The order and GTT panels, headless: widget values set, buttons clicked, the paper broker checked.

No browser and no timer: tests call ``refresh()`` themselves. Live-broker behaviour is tested on a
paper broker that says it is live (no real broker's order API is ever called).
"""

from __future__ import annotations

import asyncio
import html
import json
import os
from pathlib import Path

import pandas as pd
import pytest

from tradeflow.brokers.base import GttKind, OrderRequest, OrderStatus, OrderType, Product, Side
from tradeflow.brokers.paper import PaperBroker
from tradeflow.instruments import InstrumentMaster, parse_dhan_master
from tradeflow.widgets import GttPanel, OrderPanel, SimQuotes, TradingDesk
from tradeflow.widgets.model import (
    GttTicket, OrderTicket, Ticker, check_gtt, check_order, describe, estimate, kill_switch, status_text,
)

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "instruments" / "dhan_detailed_options.csv"
DAY = pd.Timestamp("2026-06-01 10:00", tz="Asia/Kolkata")  # a Monday; the fixture's contracts are live


class Clock:
    def __init__(self) -> None:
        self.t = DAY

    def __call__(self) -> pd.Timestamp:
        self.t = self.t + pd.Timedelta(seconds=1)
        return self.t


class FakeLive(PaperBroker):
    """A paper account that says it is live: exercises the live banner, arming and the second
    confirmation without any real broker."""

    name = "fakelive"
    live = True


@pytest.fixture(scope="module")
def master() -> InstrumentMaster:
    return InstrumentMaster(parse_dhan_master(FIXTURE))


@pytest.fixture
def broker(tmp_path, master):
    b = PaperBroker(db_path=tmp_path / "paper.duckdb", cash=1_000_000.0, instruments=list(master), clock=Clock())
    quote(b, "RELIANCE", 1300.0)
    quote(b, "NIFTY30JUN26FUT", 24010.0)
    yield b
    b.close()


def quote(b: PaperBroker, symbol: str, last: float, minute: int = 0) -> None:
    b.on_quote(symbol, last, ts=DAY + pd.Timedelta(minutes=minute, seconds=30))


class Kills:
    """Stands in for tradeflow.trading.request_kill and records its calls."""

    def __init__(self, runs=()):
        self.calls = 0
        self.runs = list(runs)

    def __call__(self):
        self.calls += 1
        return [{"run_id": r} for r in self.runs]


@pytest.fixture
def kills():
    return Kills()


@pytest.fixture
def panel(broker, master, kills) -> OrderPanel:
    return OrderPanel(broker, master=master, request_kill=kills)


def fill_form(p: OrderPanel, symbol="RELIANCE", *, side="BUY", order_type="LIMIT", qty=1, unit="lots", price=None,
              trigger=None, product=None, tag="") -> None:
    p.picker.search.value = symbol
    p.side.value = side
    p.order_type.value = order_type
    p.unit.value = unit
    p.qty.value = qty
    if product is not None:
        p.product.value = product
    p.price.value = price or 0.0
    p.trigger.value = trigger or 0.0
    p.tag.value = tag


def shown(widget) -> str:
    """What an HTML widget shows, entities decoded."""
    return html.unescape(widget.value)


# ---------------------------------------------------------------------- search


def test_search_suggests_futures_and_options_with_expiry_and_strike(panel):
    panel.picker.search.value = "NIFTY 24000"
    labels = [label for label, _ in panel.picker.suggestions.options]
    assert labels and all("24000" in label for label in labels)
    assert any("NIFTY30JUN2624000CE" in label and "exp 30 Jun 2026" in label and "strike 24000 CE" in label
               and "lot 75" in label for label in labels)
    assert panel.instrument is None  # several matches: nothing chosen until one is picked
    panel.picker.search.value = "NIFTY"
    labels = [label for label, _ in panel.picker.suggestions.options]
    assert any("NIFTY30JUN26FUT" in label and "FUTIDX" in label and "exp 30 Jun 2026" in label for label in labels)
    pick = next(i for i, (label, _) in enumerate(panel.picker.suggestions.options) if label.startswith("NIFTY30JUN26FUT"))
    panel.picker.suggestions.index = pick
    assert panel.instrument.symbol == "NIFTY30JUN26FUT" and panel.picker.search.value == "NIFTY30JUN26FUT"
    panel.qty.value = 2
    assert panel.qty_info.value == "2 lot(s) × 75 = 150 units"
    assert panel.product.options == ("INTRADAY", "MARGIN")  # F&O products only
    assert panel.price.step == 0.1  # price steps by the instrument's tick
    assert "LTP 24,010.00" in shown(panel.ltp)


# ---------------------------------------------------------------------- placing


def test_place_a_limit_order_by_clicking_then_follow_it_to_filled(panel, broker):
    fill_form(panel, side="BUY", qty=2, price=1299.5)
    assert not panel.review.disabled, shown(panel.problems)
    assert "ready: BUY 2 RELIANCE" in shown(panel.problems)
    panel.review.click()
    summary = shown(panel.confirm.summary)
    assert "BUY 2 RELIANCE (2 lots × 1) · LIMIT 1,299.50 · INTRADAY · DAY · NSE_EQ" in summary
    assert "estimated charges: ₹" in summary and "margin / cash blocked: ₹2,599.00" in summary
    assert "available funds: ₹1,000,000.00" in summary
    assert broker.orders() == []  # nothing sent before the confirmation
    panel.confirm.yes.click()
    panel.confirm.yes.click()  # a double click sends nothing more
    orders = broker.orders()
    assert len(orders) == 1
    o = orders[0]
    assert (o.request.side, o.request.quantity, o.request.order_type, o.request.price) == (Side.BUY, 2, OrderType.LIMIT, 1299.5)
    assert o.status is OrderStatus.OPEN and o.request.tag.startswith("ui-")  # a tag to find it by after a timeout
    assert panel.tracked == o.order_id and "PENDING → OPEN" in shown(panel.status)
    assert panel.open_table.keys == [o.order_id] and panel.done_table.keys == []
    quote(broker, "RELIANCE", 1299.0, minute=1)
    panel.refresh()
    assert "OPEN → FILLED at 1,299.00" in shown(panel.status)
    assert panel.open_table.keys == [] and panel.done_table.keys == [o.order_id]
    assert panel.positions_table.keys == ["RELIANCE-INTRADAY"]
    quote(broker, "RELIANCE", 1310.0, minute=2)
    panel.refresh()
    cells = [c.value for c in panel.positions_table.row("RELIANCE-INTRADAY").children[:8]]
    assert cells[:3] == ["RELIANCE", "INTRADAY", "2"] and cells[5] == "22.00"  # live unrealised P&L
    assert "used ₹2,598.00" in shown(panel.funds)


def test_units_mode_and_sl_order_with_trigger(panel, broker):
    fill_form(panel, "NIFTY30JUN26FUT", side="SELL", order_type="SL", qty=150, unit="units", price=23990.0,
              trigger=24000.0)
    assert panel.qty_info.value == "150 units = 2 lot(s) of 75"
    assert not panel.review.disabled, shown(panel.problems)
    panel.review.click()
    panel.confirm.yes.click()
    (o,) = broker.orders()
    assert (o.request.quantity, o.request.order_type, o.request.trigger_price, o.request.product) == (
        150, OrderType.SL, 24000.0, Product.INTRADAY)


@pytest.mark.parametrize("form, expected", [
    (dict(symbol="NIFTY30JUN26FUT", qty=80, unit="units", price=24000.0),
     "quantity 80 is not a multiple of the lot size 75; use 75 or 150"),
    (dict(price=1300.05), "price 1300.05 is off the tick size 0.1; use 1,300.00 or 1,300.10"),
    (dict(order_type="SL_M", trigger=1290.0), "a buy stop's trigger 1290.0 must be above the last price 1300.0"),
    (dict(side="SELL", order_type="SL", price=1310.0, trigger=1305.0), "a sell stop's trigger 1305.0 must not be below its limit price 1310.0"),
    (dict(order_type="LIMIT", price=None), "a LIMIT order needs a price"),
    (dict(order_type="SL", price=1310.0), "a SL order needs a trigger price"),
    (dict(symbol="RELIANC3", price=1300.0), "no instrument matches 'RELIANC3' in this broker's master; did you mean RELIANCE?"),
    (dict(symbol="NIFTY", price=24000.0), "NIFTY is an index and cannot be traded; trade its futures or options instead"),
    (dict(price=1500.0), "price 1500.0 is above today's upper circuit 1,446.60"),
    (dict(price=1300.0, tag="bad tag!"), "tag 'bad tag!' must be 1-25 letters, digits, '-' or '_'"),
    (dict(price=1300.0, qty=0), "lots must be a positive whole number, got 0"),
    (dict(symbol="", price=1300.0), "choose an instrument: type a symbol and pick a suggestion"),
])
def test_invalid_input_shows_what_to_fix_and_sends_nothing(panel, broker, form, expected):
    fill_form(panel, **form)
    assert expected in shown(panel.problems)
    assert panel.review.disabled
    panel.review.click()  # even a forced click (ipywidgets ignores `disabled` in .click()) sends nothing
    assert not panel.confirm.pending
    assert expected in shown(panel.message)
    assert broker.orders() == [] and broker.positions() == []


def test_a_change_while_confirming_cancels_the_confirmation(panel, broker):
    fill_form(panel, price=1299.0)
    panel.review.click()
    assert panel.confirm.pending
    panel.qty.value = 5
    assert not panel.confirm.pending and "review it again" in shown(panel.message)
    panel.confirm.yes.click()
    assert broker.orders() == []


def test_broker_rejection_is_shown_and_nothing_is_stored(panel, broker):
    fill_form(panel, "NIFTY30JUN26FUT", qty=300, price=24000.0)  # margin ~8.1 crore on a 10 lakh account
    assert not panel.review.disabled
    panel.review.click()
    assert "NOT ENOUGH FUNDS" in shown(panel.confirm.summary)
    panel.confirm.yes.click()
    assert "not placed:" in shown(panel.message) and "insufficient funds" in shown(panel.message)
    assert broker.orders() == []


# ---------------------------------------------------------------------- orders table: modify, cancel; positions: exit


def place(broker, price=1290.0, qty=1, order_type=OrderType.LIMIT, trigger=None, side=Side.BUY):
    inst = broker.instruments()[1]
    assert inst.symbol == "RELIANCE"
    return broker.place_order(OrderRequest(inst, side, qty, order_type, Product.INTRADAY, price, trigger))


def test_modify_and_cancel_from_the_orders_table(panel, broker):
    o = place(broker)
    panel.refresh()
    panel.open_table.button(o.order_id, "tf-row-modify").click()
    assert panel.modify_box.layout.display is None and panel.m_price.value == 1290.0
    panel.m_price.value = 1290.05
    assert "off the tick size 0.1" in shown(panel.m_problems) and panel.m_review.disabled
    panel.m_price.value = 1291.0
    panel.m_qty.value = 3
    assert not panel.m_review.disabled
    panel.m_review.click()
    assert "to: BUY 3 RELIANCE" in shown(panel.confirm.summary) and "LIMIT 1,291.00" in shown(panel.confirm.summary)
    panel.confirm.yes.click()
    changed = broker.order(o.order_id)
    assert (changed.request.quantity, changed.request.price) == (3, 1291.0)
    panel.open_table.button(o.order_id, "tf-row-cancel").click()
    assert broker.order(o.order_id).status is OrderStatus.CANCELLED
    assert panel.open_table.keys == [] and panel.done_table.keys == [o.order_id]


def test_exit_button_flattens_a_position(panel, broker):
    place(broker, price=1300.0, qty=4)
    quote(broker, "RELIANCE", 1299.0, minute=1)
    place(broker, price=1200.0, qty=1)  # a resting buy the exit warns about
    panel.refresh()
    panel.positions_table.button("RELIANCE-INTRADAY", "tf-row-exit").click()
    assert "SELL 4 RELIANCE" in shown(panel.confirm.summary) and "MARKET" in shown(panel.confirm.summary)
    assert "1 open order(s) on RELIANCE INTRADAY" in shown(panel.confirm.summary)
    panel.confirm.yes.click()
    exit_order = broker.orders()[-1]
    assert (exit_order.request.side, exit_order.request.quantity, exit_order.request.order_type) == (Side.SELL, 4, OrderType.MARKET)
    quote(broker, "RELIANCE", 1305.0, minute=2)
    panel.refresh()
    assert next(p for p in broker.positions() if p.instrument.symbol == "RELIANCE").quantity == 0
    assert panel.positions_table.button("RELIANCE-INTRADAY", "tf-row-exit").disabled


# ---------------------------------------------------------------------- live brokers


@pytest.fixture
def live(tmp_path, master):
    b = FakeLive(db_path=tmp_path / "live.duckdb", cash=1_000_000.0, instruments=list(master), clock=Clock())
    quote(b, "RELIANCE", 1300.0)
    yield b
    b.close()


def test_live_broker_not_armed_refuses_everything(live, master, kills):
    resting = place(live)  # placed behind the panel's back, to see that the panel cannot cancel it either
    p = OrderPanel(live, master=master, request_kill=kills)
    assert "tf-live-banner" in shown(p.banner) and "NOT ARMED" in shown(p.banner) and "TRADEFLOW_ALLOW_LIVE=1" in shown(p.banner)
    fill_form(p, price=1299.0)
    assert "ready:" in shown(p.problems) and p.review.disabled
    p.review.click()
    assert not p.confirm.pending and "real orders need TRADEFLOW_ALLOW_LIVE=1" in shown(p.message)
    p.cancel_order(resting.order_id)
    p.kill.click()
    assert not p.confirm.pending and kills.calls == 0
    assert [o.status for o in live.orders()] == [OrderStatus.OPEN]
    assert p.open_table.button(resting.order_id, "tf-row-cancel").disabled
    g = GttPanel(live, master=master, symbol="RELIANCE")
    assert "NOT ARMED" in shown(g.banner)
    g.trigger.value = 1250.0
    assert g.review.disabled
    g.review.click()
    assert not g.confirm.pending and live.gtts() == []


def test_live_broker_armed_asks_twice_and_rechecks_arming(live, master, kills, monkeypatch):
    monkeypatch.setenv("TRADEFLOW_ALLOW_LIVE", "1")
    p = OrderPanel(live, master=master, request_kill=kills)
    assert "tf-live-banner" in shown(p.banner) and "REAL" in shown(p.banner) and "NOT ARMED" not in shown(p.banner)
    fill_form(p, price=1299.0)
    p.review.click()
    assert "LIVE fakelive" in shown(p.confirm.summary) and "tf-live" in p.confirm.widget._dom_classes
    p.confirm.yes.click()
    assert live.orders() == [] and p.confirm.stage == "second"
    assert "REAL order at fakelive" in shown(p.confirm.live_note)
    p.confirm.live_yes.click()
    assert len(live.orders()) == 1
    # disarmed between the two confirmations: the red button refuses
    p.review.click()
    p.confirm.yes.click()
    monkeypatch.delenv("TRADEFLOW_ALLOW_LIVE")
    p.confirm.live_yes.click()
    assert len(live.orders()) == 1 and "TRADEFLOW_ALLOW_LIVE=1" in shown(p.message)


def test_paper_broker_needs_one_confirmation_and_no_arming(panel, broker):
    assert "tf-paper-banner" in shown(panel.banner) and "PAPER" in shown(panel.banner)
    fill_form(panel, price=1299.0)
    panel.review.click()
    assert "tf-live" not in panel.confirm.widget._dom_classes
    panel.confirm.yes.click()
    assert len(broker.orders()) == 1


# ---------------------------------------------------------------------- kill switch


def test_kill_switch_cancels_flattens_and_stops_engines(panel, broker, kills, master):
    place(broker, price=1300.0, qty=2)
    quote(broker, "RELIANCE", 1299.0, minute=1)  # fills: a long of 2
    resting = place(broker, price=1250.0)
    g = GttPanel(broker, master=master, symbol="RELIANCE")
    g.trigger.value = 1350.0
    g.review.click()
    g.confirm.yes.click()
    assert [x.status for x in broker.gtts()] == ["ACTIVE"]
    panel.refresh()
    panel.kill.click()
    summary = shown(panel.confirm.summary)
    assert "cancel 1 open order(s)" in summary and "flatten 1 position(s)" in summary and "cancel 1 active GTT(s)" in summary
    assert kills.calls == 0 and broker.order(resting.order_id).status is OrderStatus.OPEN  # nothing before confirming
    panel.confirm.yes.click()
    assert kills.calls == 1
    assert broker.order(resting.order_id).status is OrderStatus.CANCELLED
    assert [x.status for x in broker.gtts()] == ["CANCELLED"]
    exit_order = broker.orders()[-1]
    assert (exit_order.request.side, exit_order.request.quantity, exit_order.request.order_type) == (Side.SELL, 2, OrderType.MARKET)
    assert exit_order.request.tag.startswith("kill-")
    quote(broker, "RELIANCE", 1298.0, minute=2)
    assert all(p.quantity == 0 for p in broker.positions())
    assert "kill switch done" in shown(panel.message) and exit_order.order_id in shown(panel.message)


def test_kill_switch_writes_kill_into_running_engines_folders(broker, tmp_path):
    from tradeflow.config import settings

    run_dir = tmp_path / "run1"
    run_dir.mkdir()
    active = settings().runs_dir / "active"
    active.mkdir(parents=True)
    (active / "run1.json").write_text(json.dumps({"run_id": "run1", "run_dir": str(run_dir), "pid": os.getpid()}))
    report = kill_switch(broker)  # the real tradeflow.trading.request_kill
    assert report.engines == ["run1"] and (run_dir / "KILL").exists()


def test_kill_switch_on_live_leaves_positions_to_running_engines(live, monkeypatch):
    monkeypatch.setenv("TRADEFLOW_ALLOW_LIVE", "1")
    place(live, price=1300.0, qty=2)
    quote(live, "RELIANCE", 1299.0, minute=1)
    report = kill_switch(live, request_kill=Kills(["run-a"]))
    assert report.exits == [] and "running engines were told to stop" in report.skipped[0]
    report = kill_switch(live, request_kill=Kills())  # pressed again once the engines have stopped
    assert len(report.exits) == 1


# ---------------------------------------------------------------------- GTT panel


@pytest.fixture
def gtt(broker, master) -> GttPanel:
    return GttPanel(broker, master=master, symbol="RELIANCE")


def test_single_gtt_placed_by_clicking_and_fires(gtt, broker):
    gtt.side.value = "BUY"
    gtt.trigger.value = 1250.0
    gtt.price.value = 1251.0
    assert "when the last price falls to 1,250.00 or below → BUY 1 RELIANCE LIMIT 1,251.00 (DELIVERY)" in shown(gtt.legs)
    gtt.review.click()
    assert broker.gtts() == []
    gtt.confirm.yes.click()
    (g,) = broker.gtts()
    assert (g.request.kind, g.request.side, g.request.legs[0].trigger_price, g.request.legs[0].price) == (
        GttKind.SINGLE, Side.BUY, 1250.0, 1251.0)
    assert gtt.table.keys == [g.gtt_id]
    quote(broker, "RELIANCE", 1249.0, minute=1)
    gtt.refresh()
    placed = broker.gtt_order(g.gtt_id)
    assert placed is not None and f"{placed.order_id} OPEN" in gtt.table.row(g.gtt_id).children[8].value


def test_oco_gtt_modify_and_cancel(gtt, broker):
    gtt.kind.value = "OCO"
    gtt.side.value = "SELL"
    gtt.trigger.value = 1350.0
    gtt.stop_trigger.value = 1250.0
    assert gtt.stop_trigger.layout.display is None and gtt.trigger.description == "Target trigger"
    assert "target: when the last price rises to 1,350.00" in shown(gtt.legs)
    assert "stop: when the last price falls to 1,250.00" in shown(gtt.legs)
    gtt.review.click()
    gtt.confirm.yes.click()
    (g,) = broker.gtts()
    assert g.request.kind is GttKind.OCO and [leg.trigger_price for leg in g.request.legs] == [1350.0, 1250.0]
    gtt.table.button(g.gtt_id, "tf-row-modify").click()
    assert gtt.editing == g.gtt_id and gtt.stop_trigger.value == 1250.0
    gtt.stop_trigger.value = 1260.0
    gtt.review.click()
    assert f"Modify GTT {g.gtt_id}" in shown(gtt.confirm.summary)
    gtt.confirm.yes.click()
    assert [leg.trigger_price for leg in broker.gtts()[0].request.legs] == [1350.0, 1260.0]
    assert len(broker.gtts()) == 1 and gtt.editing is None
    gtt.table.button(g.gtt_id, "tf-row-cancel").click()
    assert broker.gtts()[0].status == "CANCELLED" and gtt.table.row(g.gtt_id).children[-1].value == ""


@pytest.mark.parametrize("form, expected", [
    (dict(kind="OCO", side="SELL", trigger=1290.0, stop_trigger=1250.0), "the target trigger 1290.0 must be above the last price 1300.0"),
    (dict(kind="OCO", side="SELL", trigger=1350.0, stop_trigger=1310.0), "the stop trigger 1310.0 must be below the last price 1300.0"),
    (dict(kind="OCO", side="SELL", trigger=1350.0), "an OCO GTT needs a stop trigger"),
    (dict(kind="SINGLE", side="BUY", trigger=1300.0), "trigger 1300.0 equals the last price; it would fire at once"),
    (dict(kind="SINGLE", side="BUY", trigger=1250.05), "trigger 1250.05 must be positive and on the tick size 0.1"),
    (dict(kind="SINGLE", side="BUY", trigger=0.0), "set the trigger price"),
    (dict(kind="SINGLE", side="BUY", trigger=1250.0, lots=0), "lots must be a positive whole number, got 0"),
])
def test_invalid_gtt_shows_what_to_fix_and_sends_nothing(gtt, broker, form, expected):
    for name, value in form.items():
        getattr(gtt, name).value = value
    assert expected in shown(gtt.problems) and gtt.review.disabled
    gtt.review.click()
    assert not gtt.confirm.pending and broker.gtts() == []


def test_gtt_needs_a_last_price(broker, master):
    g = GttPanel(broker, master=master, symbol="NIFTY30JUN2624000CE")  # never quoted
    g.trigger.value = 100.0
    assert "no last price for NIFTY30JUN2624000CE yet" in shown(g.problems) and g.review.disabled


# ---------------------------------------------------------------------- the model without widgets


def test_model_checks_without_widgets(master):
    rel = master.get("RELIANCE")
    ok = check_order(OrderTicket(rel, "BUY", "DELIVERY", "LIMIT", 3, price=1300.0), last_price=1300.0)
    assert ok.ok and ok.request.quantity == 3 and ok.request.product is Product.DELIVERY
    assert any("fill at once" in w for w in ok.warnings)
    far = check_order(OrderTicket(rel, "SELL", "INTRADAY", "LIMIT", 1, price=1400.0), last_price=1300.0)
    assert any("7.7% above the last price" in w for w in far.warnings)
    bad = check_gtt(GttTicket(rel, "OCO", "BUY", "DELIVERY", 1, trigger=1250.0, stop_trigger=1350.0), last_price=1300.0)
    assert bad.ok and bad.request.side is Side.BUY  # BUY OCO: target below, stop above (exits a short)
    assert "exp 30 Jun 2026 · strike 24000 CE · lot 75" in describe(master.get("NIFTY30JUN2624000CE"))


def test_estimate_counts_closing_quantity_as_free(broker, master):
    rel = master.get("RELIANCE")
    req = OrderRequest(rel, Side.SELL, 2, OrderType.LIMIT, Product.INTRADAY, 1300.0)
    est = estimate(broker, req, last_price=1300.0)
    assert est.margin == 2600.0 and est.charges > 0
    place(broker, price=1300.0, qty=2)
    quote(broker, "RELIANCE", 1299.0, minute=1)
    est = estimate(broker, req, last_price=1300.0, positions=broker.positions(), funds=broker.funds())
    assert est.margin == 0.0 and not est.short_of_funds
    fut = master.get("NIFTY30JUN26FUT")
    est = estimate(broker, OrderRequest(fut, Side.BUY, 75, OrderType.MARKET), last_price=24000.0)
    assert est.margin == round(0.15 * 75 * 24000.0, 2)


def test_status_text_shows_the_path():
    from tradeflow.brokers.base import Order, advance

    inst = InstrumentMaster(parse_dhan_master(FIXTURE)).get("RELIANCE")
    o = Order("P1", OrderRequest(inst, Side.BUY, 1), OrderStatus.PENDING, history=((DAY, OrderStatus.PENDING),))
    o = advance(advance(o, OrderStatus.OPEN, at=DAY), OrderStatus.FILLED, at=DAY, average_price=1300.1)
    assert status_text(o) == "P1: PENDING → OPEN → FILLED at 1,300.10"


def test_ticker_needs_a_running_loop_and_refreshes_on_it():
    calls = []
    t = Ticker(0.01, lambda: calls.append(1))
    assert t.start() is False  # no event loop here: tests refresh by hand

    async def run():
        assert t.start() is True
        await asyncio.sleep(0.1)
        t.stop()

    asyncio.run(run())
    assert calls


def test_sim_quotes_feed_the_paper_account_and_give_the_day_change(tmp_path):
    from tradeflow.brokers.sim import sim_instruments

    b = PaperBroker(db_path=tmp_path / "p.duckdb", instruments=sim_instruments())
    now = pd.Timestamp("2024-03-05 12:00:30", tz="Asia/Kolkata").tz_convert("UTC")
    quotes = SimQuotes(b, seed=42, now=lambda: now)
    rel = next(i for i in sim_instruments() if i.symbol == "RELIANCE")
    q = quotes(rel)
    assert q is not None and q.time == pd.Timestamp("2024-03-05 11:59", tz="Asia/Kolkata")
    assert q.close is not None and q.close != q.last_price  # the previous session's close
    b.place_order(OrderRequest(rel, Side.BUY, 1, OrderType.LIMIT, Product.INTRADAY, round(q.last_price * 0.5, 1)))
    assert quotes(rel).time == q.time  # the same bar is not fed twice (it would count as a new tick)
    b.close()


def test_desk_builds_both_panels(broker, master):
    desk = TradingDesk(broker, master=master, symbol="RELIANCE")
    assert desk.orders.instrument.symbol == "RELIANCE" and desk.gtt.instrument.symbol == "RELIANCE"
    assert "tf-desk" in desk.widget._dom_classes


def test_trading_desk_refuses_a_live_broker_without_arming():
    from tradeflow.widgets import trading_desk

    shown = trading_desk("dhan", refresh_seconds=None)
    assert "TRADEFLOW_ALLOW_LIVE=1" in shown.widget.value and "nothing was sent" in shown.widget.value


@pytest.mark.slow
def test_order_panel_notebook_runs_with_papermill(tmp_path):
    from tradeflow.runner import run_notebook

    result = run_notebook(REPO / "notebooks" / "40_order_panel.ipynb", parameters={"refresh_seconds": 0},
                          runs_dir=tmp_path / "runs", html=False)
    nb = json.loads(result.notebook.read_text())
    errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors == []
    views = [o for c in nb["cells"] for o in c.get("outputs", []) if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert views, "the desk was displayed as a widget"
    assert (tmp_path / "data" / "paper" / "paper.duckdb").exists()  # the test's paper account, not the checkout's

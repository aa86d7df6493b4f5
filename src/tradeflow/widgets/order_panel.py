"""The order panel: an order ticket, a confirmation with charges and margin, orders, positions,
funds and a kill switch, over any ``Broker`` (paper by default; Dhan or Definedge when armed).

Everything it sends goes through :func:`~tradeflow.widgets.model.require_armed` (a live broker
needs ``TRADEFLOW_ALLOW_LIVE=1`` at the moment of sending) and, for a live broker, a second
red confirmation. The form is checked as you type with the shared pre-trade validation and
the button that reviews an order stays disabled while the order is invalid.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace

import ipywidgets as w

from ..brokers.base import (
    Broker, BrokerUnavailable, InvalidOrder, Order, OrderStatus, OrderType, Position, Quote, validate_order,
)
from ..errors import TradeflowError
from ..instruments import InstrumentMaster
from .model import (
    ORDER_COLUMNS, POSITION_COLUMNS, Check, InstrumentFinder, OrderTicket, QuoteSource, Ticker, after_unknown_outcome,
    broker_quotes, check_order, describe_order, esc, estimate, exit_request, kill_switch, new_tag,
    order_cells, position_cells, products_for, require_armed, status_text,
)
from .base import QuotePanel
from .tables import STYLE, Confirm, RowAction, Table, bullets, guarded

__all__ = ["OrderPanel"]

log = logging.getLogger(__name__)

_OPEN = (OrderStatus.PENDING, OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED)
_ORDER_WIDTHS = ("80px", "70px", "170px", "45px", "55px", "60px", "80px", "80px", "80px", "130px", "50px", "80px",
                 "150px", "240px")
_POS_WIDTHS = ("170px", "90px", "60px", "90px", "90px", "100px", "100px", "100px")


class OrderPanel(QuotePanel):
    """Orders at ``broker`` from a notebook or a Voila page.

    ``master``: the instrument master to search (default: ``broker.instruments()``).
    ``quotes``: where last prices come from (default: ``broker.quote``; on paper,
    :class:`~tradeflow.widgets.model.SimQuotes` makes the simulated market move).
    ``symbol``: preselected instrument. ``refresh_seconds``: refresh the quote, tables and funds
    on a timer (None: call :meth:`refresh` yourself). ``request_kill``: what the kill switch calls
    to stop running engines (default ``tradeflow.trading.request_kill``).
    """

    label = "order panel"

    def __init__(self, broker: Broker, *, master: InstrumentMaster | Sequence | None = None,
                 quotes: QuoteSource | None = None, symbol: str | None = None, refresh_seconds: float | None = None,
                 request_kill: Callable[[], list[dict]] | None = None, cancel_gtts_on_kill: bool = True) -> None:
        self.broker = broker
        self.finder = InstrumentFinder(master if master is not None else broker.instruments())
        self.quotes = quotes or broker_quotes(broker)
        self.request_kill = request_kill
        self.cancel_gtts_on_kill = cancel_gtts_on_kill
        self.quote: Quote | None = None
        self.tracked: str | None = None
        self.check: Check = Check()
        self._modifying: Order | None = None
        self._modify_quote: Quote | None = None
        self._orders: list[Order] = []
        self._positions: list[Position] = []
        self._confirming = ""
        self._ticker: Ticker | None = None
        self.last_kill = None
        self._build()
        self._start(symbol, refresh_seconds)

    # ------------------------------------------------------------------ layout

    def _build(self) -> None:
        self._header("tf-order")
        self.side = w.ToggleButtons(options=[("BUY", "BUY"), ("SELL", "SELL")], value="BUY", description="Side",
                                    style={"button_width": "70px"})
        self.side.add_class("tf-order-side")
        self.product = w.Dropdown(options=[p.value for p in products_for(None)], value="INTRADAY", description="Product",
                                  layout=w.Layout(width="220px"))
        self.product.add_class("tf-order-product")
        self.order_type = w.ToggleButtons(options=[("MARKET", "MARKET"), ("LIMIT", "LIMIT"), ("SL", "SL"), ("SL-M", "SL_M")],
                                          value="LIMIT", description="Type", style={"button_width": "80px"})
        self.order_type.add_class("tf-order-type")
        self.validity = w.Dropdown(options=["DAY", "IOC"], value="DAY", description="Validity",
                                   layout=w.Layout(width="200px"))
        self.validity.add_class("tf-order-validity")
        self.qty = w.IntText(value=1, description="Quantity", continuous_update=True, layout=w.Layout(width="200px"))
        self.qty.add_class("tf-order-qty")
        self.unit = w.ToggleButtons(options=[("lots", "lots"), ("units", "units")], value="lots",
                                    style={"button_width": "60px"})
        self.unit.add_class("tf-order-unit")
        self.qty_info = w.Label()
        self.qty_info.add_class("tf-order-qty-info")
        self.price = w.FloatText(value=0.0, step=0.05, description="Price", continuous_update=True,
                                 layout=w.Layout(width="220px"))
        self.price.add_class("tf-order-price")
        self.trigger = w.FloatText(value=0.0, step=0.05, description="Trigger", continuous_update=True,
                                   layout=w.Layout(width="220px"))
        self.trigger.add_class("tf-order-trigger")
        self.tag = w.Text(placeholder="optional: 1-25 letters, digits, - _", description="Tag", continuous_update=True,
                          layout=w.Layout(width="300px"))
        self.tag.add_class("tf-order-tag")
        self.problems = w.HTML()
        self.problems.add_class("tf-order-problems")
        self.review = w.Button(description="Review order", button_style="primary", icon="search")
        self.review.add_class("tf-order-review")
        self.confirm = Confirm("tf-order")
        self.message = w.HTML()
        self.message.add_class("tf-order-message")
        self.status = w.HTML()
        self.status.add_class("tf-order-status")
        self.funds = w.HTML()
        self.funds.add_class("tf-funds")
        self.refresh_error = w.HTML()
        self.refresh_error.add_class("tf-refresh-error")
        self.refresh_button = w.Button(description="Refresh", icon="refresh")
        self.refresh_button.add_class("tf-refresh")
        self.kill = w.Button(description="KILL SWITCH", button_style="danger", icon="power-off",
                             tooltip="cancel every open order, flatten every position, stop running engines")
        self.kill.add_class("tf-kill")
        self.open_table = Table(ORDER_COLUMNS, _ORDER_WIDTHS, css="tf-open-orders", empty="no open orders")
        self.done_table = Table(ORDER_COLUMNS, _ORDER_WIDTHS, css="tf-done-orders", empty="no completed orders")
        self.positions_table = Table(POSITION_COLUMNS, _POS_WIDTHS, css="tf-positions", empty="no positions")
        # the modify box: one open order at a time
        self.m_title = w.HTML()
        self.m_qty = w.IntText(value=1, description="Lots", continuous_update=True, layout=w.Layout(width="200px"))
        self.m_qty.add_class("tf-modify-qty")
        self.m_price = w.FloatText(value=0.0, step=0.05, description="Price", continuous_update=True,
                                   layout=w.Layout(width="220px"))
        self.m_price.add_class("tf-modify-price")
        self.m_trigger = w.FloatText(value=0.0, step=0.05, description="Trigger", continuous_update=True,
                                     layout=w.Layout(width="220px"))
        self.m_trigger.add_class("tf-modify-trigger")
        self.m_problems = w.HTML()
        self.m_problems.add_class("tf-modify-problems")
        self.m_review = w.Button(description="Review change", button_style="primary")
        self.m_review.add_class("tf-modify-review")
        self.m_close = w.Button(description="Close")
        self.m_close.add_class("tf-modify-close")
        self.modify_box = w.VBox([self.m_title, w.HBox([self.m_qty, self.m_price, self.m_trigger]), self.m_problems,
                                  w.HBox([self.m_review, self.m_close])], layout=w.Layout(display="none"))
        self.modify_box.add_class("tf-modify-box")

        form = w.VBox([
            self.picker.widget, self.ltp,
            w.HBox([self.side, self.order_type]),
            w.HBox([self.product, self.validity, self.tag]),
            w.HBox([self.qty, self.unit, self.qty_info]),
            w.HBox([self.price, self.trigger]),
            self.problems, self.review,
        ])
        self.widget = w.VBox([
            w.HTML(STYLE), self.banner, form, self.confirm.widget, self.message, self.status,
            w.HBox([self.funds, self.refresh_button, self.kill]), self.refresh_error,
            w.HTML("<div class='tf-section'>Open orders</div>"), self.open_table.widget, self.modify_box,
            w.HTML("<div class='tf-section'>Completed orders</div>"), self.done_table.widget,
            w.HTML("<div class='tf-section'>Positions</div>"), self.positions_table.widget,
        ])
        self.widget.add_class("tf-order-panel")

        self.picker.on_change(self._instrument_changed)
        for widget in (self.side, self.product, self.order_type, self.validity, self.qty, self.unit, self.price,
                       self.trigger, self.tag):
            widget.observe(self._form_changed, names="value")
        for widget in (self.m_qty, self.m_price, self.m_trigger):
            widget.observe(lambda _ch: self._check_modify(), names="value")
        self.review.on_click(lambda _b: self.on_review())
        self.refresh_button.on_click(lambda _b: self.refresh())
        self.kill.on_click(lambda _b: self.on_kill())
        self.m_review.on_click(lambda _b: self.on_review_modify())
        self.m_close.on_click(lambda _b: self.close_modify())

    # ------------------------------------------------------------------ messages

    def say(self, text: str, *, error: bool = False, lines: Sequence[str] = ()) -> None:
        """Show the result of the last action (errors in red)."""
        css = "tf-error" if error else "tf-ok"
        self.message.value = f"<div class='{css}'>{esc(text)}</div>" + bullets(lines, css)
        (log.warning if error else log.info)("order panel: %s", text)

    # ------------------------------------------------------------------ the ticket

    def ticket(self) -> OrderTicket:
        """The form as an order ticket."""
        return OrderTicket(
            instrument=self.instrument, side=self.side.value, product=self.product.value,
            order_type=self.order_type.value, quantity=self.qty.value, unit=self.unit.value,
            price=self.price.value, trigger=self.trigger.value, validity=self.validity.value,
            tag=self.tag.value or None,
        )

    def _instrument_changed(self, inst) -> None:
        self.quote = None
        if inst is not None:
            allowed = [p.value for p in products_for(inst)]
            current = self.product.value
            if list(self.product.options) != allowed:
                self.product.options = allowed
            self.product.value = current if current in allowed else allowed[0]
            for field in (self.price, self.trigger):
                field.step = inst.tick_size
            self._refresh_quote()
            self.price.value = self.last_price or 0.0
            self.trigger.value = 0.0
        self._form_changed()

    def _form_changed(self, _change=None) -> None:
        if self.confirm.pending and self._confirming == "place":
            self.confirm.cancel()
            self.say("the order changed while it was waiting for confirmation: review it again", error=True)
        ot = self.order_type.value
        self.price.layout.display = None if ot in ("LIMIT", "SL") else "none"
        self.trigger.layout.display = None if ot in ("SL", "SL_M") else "none"
        self.validate()

    def validate(self) -> Check:
        """Check the form now; show what to fix and enable the review button only when it is valid."""
        inst = self.instrument
        if inst is not None:
            n = self.qty.value
            if self.unit.value == "lots":
                self.qty_info.value = f"{n} lot(s) × {inst.lot_size} = {n * inst.lot_size} units"
            else:
                self.qty_info.value = f"{n} units = {n / inst.lot_size:g} lot(s) of {inst.lot_size}"
        else:
            self.qty_info.value = ""
        self.check = check_order(self.ticket(), last_price=self.last_price, no_instrument=self.picker.message)
        if self.check.ok:
            self.problems.value = ("<div class='tf-ok'>ready: " + esc(describe_order(self.check.request)) + "</div>"
                                   + bullets(self.check.warnings, "tf-warnings"))
        else:
            self.problems.value = bullets(self.check.problems, "tf-problems")
        self.review.disabled = not self.check.ok or not self._can_send()
        return self.check

    # ------------------------------------------------------------------ placing

    @guarded
    def on_review(self) -> None:
        """Review: the whole order, its charges and the money it blocks; then the confirmation."""
        check = self.validate()
        if not check.ok:
            self.say("the order is not valid: " + "; ".join(check.problems), error=True)
            return
        require_armed(self.broker)
        req = check.request if check.request.tag else replace(check.request, tag=new_tag())
        validate_order(req, last_price=self.last_price)
        funds = positions = None
        try:
            funds = self.broker.funds()
            positions = self.broker.positions()
        except TradeflowError as exc:
            log.warning("order panel: funds/positions for the estimate failed: %s", exc)
        est = estimate(self.broker, req, last_price=self.last_price, funds=funds, positions=positions)
        live = bool(getattr(self.broker, "live", True))
        summary = (f"<b>{'LIVE ' if live else ''}{esc(self.broker.name)}: {esc(describe_order(req))}</b>"
                   + bullets(est.lines(), "tf-estimate") + bullets(check.warnings, "tf-warnings"))
        self._confirming = "place"
        self.confirm.ask(summary, lambda: self._place(req), live=live, yes="Place order",
                         live_note=f"This places a REAL order at {self.broker.name}.")

    @guarded
    def _place(self, req) -> None:
        self._confirming = ""
        require_armed(self.broker)
        try:
            order = self.broker.place_order(req)
        except BrokerUnavailable as exc:
            self.say(after_unknown_outcome(self.broker, req, exc), error=True)
            self.refresh_tables()
            return
        except TradeflowError as exc:
            self.say(f"not placed: {exc}", error=True)
            return
        self.tracked = order.order_id
        self.say(f"order {order.order_id} placed at {self.broker.name}: {order.status.value}")
        self.status.value = esc(status_text(order))
        self.refresh_tables()

    # ------------------------------------------------------------------ rows: cancel, modify, exit

    @guarded
    def cancel_order(self, order_id: str) -> None:
        """Cancel at once (it only reduces risk), still only when armed for a live broker."""
        require_armed(self.broker)
        try:
            order = self.broker.cancel_order(order_id)
        except TradeflowError as exc:
            self.say(f"cancel {order_id} failed: {exc}", error=True)
        else:
            self.say(f"order {order_id}: {order.status.value}")
        if self._modifying is not None and self._modifying.order_id == order_id:
            self.close_modify()
        self.refresh_tables()

    @guarded
    def start_modify(self, order_id: str) -> None:
        """Open the modify box with the order's quantity (lots), price and trigger."""
        order = self.broker.order(order_id)
        if order.status not in _OPEN:
            self.say(f"order {order_id} is {order.status.value}: only open orders can be modified", error=True)
            return
        req = order.request
        self._modifying = order
        try:
            self._modify_quote = self.quotes(req.instrument)
        except TradeflowError as exc:
            log.warning("order panel: quote for %s failed: %s", req.instrument.symbol, exc)
            self._modify_quote = None
        self.m_title.value = f"<b>Modify {esc(order.order_id)}</b>: {esc(describe_order(req))}"
        self.m_qty.value = req.quantity // req.instrument.lot_size
        for field, value in ((self.m_price, req.price), (self.m_trigger, req.trigger_price)):
            field.step = req.instrument.tick_size
            field.value = value or 0.0
        self.m_price.layout.display = None if req.order_type in (OrderType.LIMIT, OrderType.SL) else "none"
        self.m_trigger.layout.display = None if req.order_type in (OrderType.SL, OrderType.SL_M) else "none"
        self.modify_box.layout.display = None
        self._check_modify()

    def close_modify(self) -> None:
        self._modifying = None
        self.modify_box.layout.display = "none"
        if self.confirm.pending and self._confirming == "modify":
            self.confirm.cancel()

    def _modified(self) -> tuple[dict, list[str]]:
        """The changes the modify box asks for, and the problems with them."""
        order = self._modifying
        if order is None:
            return {}, ["no order is being modified"]
        req = order.request
        lots = self.m_qty.value
        if lots <= 0:
            return {}, [f"lots must be a positive whole number, got {lots}"]
        changes: dict = {}
        qty = lots * req.instrument.lot_size
        if qty != req.quantity:
            changes["quantity"] = qty
        if req.order_type in (OrderType.LIMIT, OrderType.SL) and (self.m_price.value or None) != req.price:
            changes["price"] = self.m_price.value or None
        if req.order_type in (OrderType.SL, OrderType.SL_M) and (self.m_trigger.value or None) != req.trigger_price:
            changes["trigger_price"] = self.m_trigger.value or None
        if not changes:
            return {}, ["nothing changed: set a new quantity, price or trigger"]
        if any(v is None for v in changes.values()):
            return {}, [f"a {req.order_type} order needs its {k.replace('_', ' ')}" for k, v in changes.items() if v is None]
        last = self._modify_quote.last_price if self._modify_quote is not None else None
        try:
            validate_order(replace(req, **changes), last_price=last)
        except InvalidOrder as exc:
            return {}, list(exc.problems) or [str(exc)]
        return changes, []

    def _check_modify(self) -> None:
        if self.confirm.pending and self._confirming == "modify":
            self.confirm.cancel()
        changes, problems = self._modified()
        self.m_problems.value = bullets(problems, "tf-problems")
        self.m_review.disabled = bool(problems) or not self._can_send()

    @guarded
    def on_review_modify(self) -> None:
        changes, problems = self._modified()
        if problems:
            self.say("the change is not valid: " + "; ".join(problems), error=True)
            return
        require_armed(self.broker)
        order = self._modifying
        new = replace(order.request, **changes)
        live = bool(getattr(self.broker, "live", True))
        summary = (f"<b>Modify {esc(order.order_id)}</b><br>from: {esc(describe_order(order.request))}"
                   f"<br>to: {esc(describe_order(new))}")
        self._confirming = "modify"
        self.confirm.ask(summary, lambda: self._modify(order.order_id, changes), live=live, yes="Modify order",
                         live_note=f"This modifies a REAL order at {self.broker.name}.")

    @guarded
    def _modify(self, order_id: str, changes: dict) -> None:
        self._confirming = ""
        require_armed(self.broker)
        try:
            order = self.broker.modify_order(order_id, **changes)
        except TradeflowError as exc:
            self.say(f"modify {order_id} failed: {exc}", error=True)
        else:
            self.tracked = order.order_id
            self.status.value = esc(status_text(order))
            self.say(f"order {order_id} modified: {describe_order(order.request)}")
            self.close_modify()
        self.refresh_tables()

    @guarded
    def exit_position(self, symbol: str, product: str) -> None:
        """Ask to close a position with a MARKET order of its whole quantity."""
        pos = next((p for p in self.broker.positions() if p.instrument.symbol == symbol and p.product.value == product
                    and p.quantity), None)
        if pos is None:
            self.say(f"no open {symbol} {product} position to exit", error=True)
            return
        require_armed(self.broker)
        req = exit_request(pos, tag=new_tag("exit"))
        others = [o for o in self._orders if o.status in _OPEN and o.request.instrument.symbol == symbol
                  and o.request.product is pos.product]
        warn = [f"{len(others)} open order(s) on {symbol} {product} ({', '.join(o.order_id for o in others)}) may also "
                "fill and open a new position: cancel them first"] if others else []
        live = bool(getattr(self.broker, "live", True))
        summary = f"<b>Exit {esc(symbol)} {esc(product)}: {esc(describe_order(req))}</b>" + bullets(warn, "tf-warnings")
        self._confirming = "exit"
        self.confirm.ask(summary, lambda: self._place(req), live=live, yes="Exit position",
                         live_note=f"This sends a REAL market order at {self.broker.name}.")

    # ------------------------------------------------------------------ kill switch

    @guarded
    def on_kill(self) -> None:
        """Ask for confirmation, then cancel, flatten and stop running engines."""
        require_armed(self.broker)
        from ..trading import active_runs

        def count(what: str, listing: Callable[[], list]) -> list | None:
            # a listing that fails must not keep the kill switch from being offered
            try:
                return listing()
            except TradeflowError as exc:
                log.warning("kill switch: could not list %s: %s", what, exc)
                return None

        orders = count("orders", lambda: [o for o in self.broker.orders() if o.status in _OPEN])
        positions = count("positions", lambda: [p for p in self.broker.positions() if p.quantity])
        gtts = count("GTTs", lambda: [g for g in self.broker.gtts() if g.status == "ACTIVE"]) \
            if self.cancel_gtts_on_kill else []
        engines = [r["run_id"] for r in active_runs() if r.get("alive")] if self.request_kill is None else []

        def n(items: list | None) -> str:
            return "every" if items is None else str(len(items))

        lines = [f"cancel {n(orders)} open order(s)",
                 f"flatten {n(positions)} position(s) with MARKET orders"
                 + (f" ({', '.join(p.instrument.symbol for p in positions)})" if positions else ""),
                 "tell running engines to stop" + (f" ({', '.join(engines)})" if engines else "")]
        if self.cancel_gtts_on_kill:
            lines.insert(1, f"cancel {n(gtts)} active GTT(s)")
        live = bool(getattr(self.broker, "live", True))
        self._confirming = "kill"
        self.confirm.ask(f"<b>KILL SWITCH at {esc(self.broker.name)}</b>" + bullets(lines, "tf-warnings"),
                         self._kill, live=live, yes="Kill: cancel and flatten",
                         live_note=f"This cancels and flattens REAL orders and positions at {self.broker.name}.")

    @guarded
    def _kill(self) -> None:
        self._confirming = ""
        report = kill_switch(self.broker, cancel_gtts=self.cancel_gtts_on_kill, request_kill=self.request_kill)
        self.last_kill = report
        self.say("kill switch done" + (" with failures" if report.errors else ""), error=bool(report.errors),
                 lines=report.lines())
        self.refresh_tables()

    # ------------------------------------------------------------------ refresh

    def refresh(self) -> None:
        """Refresh the last price, re-check the form (stops depend on it), the tables and funds."""
        self.refresh_error.value = ""
        self._refresh_quote()
        if not (self.confirm.pending and self._confirming == "place"):
            self.validate()
        self.refresh_tables()

    def refresh_tables(self) -> None:
        """Orders (open and done), positions with P&L, funds, and the tracked order's status."""
        try:
            self._orders = self.broker.orders()
            self._positions = self.broker.positions()
            funds = self.broker.funds()
        except TradeflowError as exc:
            self.refresh_error.value = f"<span class='tf-error'>refresh failed: {esc(exc)}</span>"
            log.warning("order panel: refresh failed: %s", exc)
            return
        can = self._can_send()
        open_rows, done_rows = [], []
        for o in reversed(self._orders):
            if o.status in _OPEN:
                open_rows.append((o.order_id, order_cells(o), (
                    RowAction("Modify", "tf-row-modify", lambda oid=o.order_id: self.start_modify(oid), can),
                    RowAction("Cancel", "tf-row-cancel", lambda oid=o.order_id: self.cancel_order(oid), can, "warning"),
                )))
            else:
                done_rows.append((o.order_id, order_cells(o), ()))
        self.open_table.update(open_rows)
        self.done_table.update(done_rows)
        self.positions_table.update([
            (f"{p.instrument.symbol}-{p.product.value}", position_cells(p), (
                RowAction("Exit", "tf-row-exit",
                          lambda s=p.instrument.symbol, pr=p.product.value: self.exit_position(s, pr),
                          can and p.quantity != 0, "danger"),
            )) for p in self._positions
        ])
        total = f", total ₹{funds.total:,.2f}" if funds.total is not None else ""
        self.funds.value = f"<b>Funds</b>: available ₹{funds.available:,.2f}, used ₹{funds.used:,.2f}{total}"
        if self.tracked is not None:
            found = next((o for o in self._orders if o.order_id == self.tracked), None)
            if found is not None:
                self.status.value = esc(status_text(found))

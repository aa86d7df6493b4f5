"""The GTT panel: single-trigger and OCO (target and stop) GTTs, checked against the last price.

On Dhan these are forever orders, on Definedge GTT/OCO orders, on paper the paper broker's
own triggers; the panel only speaks the ``Broker`` protocol. Each leg shows the order it will
place when it fires; the list has Modify and Cancel for active GTTs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import ipywidgets as w

from ..brokers.base import Broker, Gtt, GttKind, GttRequest, Order, Product, Quote
from ..errors import TradeflowError
from ..instruments import InstrumentMaster
from .model import (
    GTT_COLUMNS, Check, GttTicket, InstrumentFinder, QuoteSource, Ticker, broker_quotes, check_gtt, describe_gtt, esc,
    gtt_cells, gtt_leg_lines, products_for, require_armed,
)
from .base import QuotePanel
from .tables import STYLE, Confirm, RowAction, Table, bullets, guarded

__all__ = ["GttPanel"]

log = logging.getLogger(__name__)

_WIDTHS = ("80px", "170px", "60px", "50px", "55px", "300px", "90px", "90px", "150px")


def _default_product(inst) -> str:
    return Product.MARGIN.value if inst is not None and inst.segment.is_derivative else Product.DELIVERY.value


class GttPanel(QuotePanel):
    """GTTs at ``broker``: place, list, modify and cancel. Arguments as for ``OrderPanel``."""

    label = "GTT panel"

    def __init__(self, broker: Broker, *, master: InstrumentMaster | Sequence | None = None,
                 quotes: QuoteSource | None = None, symbol: str | None = None,
                 refresh_seconds: float | None = None) -> None:
        self.broker = broker
        self.finder = InstrumentFinder(master if master is not None else broker.instruments())
        self.quotes = quotes or broker_quotes(broker)
        self.quote: Quote | None = None
        self.check: Check = Check()
        self.editing: str | None = None
        self._gtts: list[Gtt] = []
        self._confirming = ""
        self._ticker: Ticker | None = None
        self._build()
        self._start(symbol, refresh_seconds)

    def _build(self) -> None:
        self._header("tf-gtt")
        self.kind = w.ToggleButtons(options=[("Single", "SINGLE"), ("OCO (target + stop)", "OCO")], value="SINGLE",
                                    description="GTT", style={"button_width": "150px"})
        self.kind.add_class("tf-gtt-kind")
        self.side = w.ToggleButtons(options=[("BUY", "BUY"), ("SELL", "SELL")], value="SELL", description="Side",
                                    style={"button_width": "70px"})
        self.side.add_class("tf-gtt-side")
        self.product = w.Dropdown(options=[p.value for p in products_for(None)], value="DELIVERY",
                                  description="Product", layout=w.Layout(width="220px"))
        self.product.add_class("tf-gtt-product")
        self.lots = w.IntText(value=1, description="Lots", continuous_update=True, layout=w.Layout(width="180px"))
        self.lots.add_class("tf-gtt-lots")
        self.lots_info = w.Label()
        self.trigger = w.FloatText(value=0.0, step=0.05, description="Trigger", continuous_update=True,
                                   layout=w.Layout(width="220px"))
        self.trigger.add_class("tf-gtt-trigger")
        self.price = w.FloatText(value=0.0, step=0.05, description="Price", continuous_update=True,
                                 tooltip="limit price of the order it places; 0 = a market order",
                                 layout=w.Layout(width="220px"))
        self.price.add_class("tf-gtt-price")
        self.stop_trigger = w.FloatText(value=0.0, step=0.05, description="Stop trigger", continuous_update=True,
                                        layout=w.Layout(width="220px"))
        self.stop_trigger.add_class("tf-gtt-stop-trigger")
        self.stop_price = w.FloatText(value=0.0, step=0.05, description="Stop price", continuous_update=True,
                                      layout=w.Layout(width="220px"))
        self.stop_price.add_class("tf-gtt-stop-price")
        self.price_note = w.HTML("<small>price 0 = the leg places a MARKET order</small>")
        self.tag = w.Text(placeholder="optional: 1-25 letters, digits, - _", description="Tag", continuous_update=True,
                          layout=w.Layout(width="300px"))
        self.tag.add_class("tf-gtt-tag")
        self.legs = w.HTML()
        self.legs.add_class("tf-gtt-legs")
        self.problems = w.HTML()
        self.problems.add_class("tf-gtt-problems")
        self.review = w.Button(description="Review GTT", button_style="primary", icon="search")
        self.review.add_class("tf-gtt-review")
        self.stop_editing = w.Button(description="New GTT instead", layout=w.Layout(display="none", width="auto"))
        self.stop_editing.add_class("tf-gtt-stop-editing")
        self.confirm = Confirm("tf-gtt")
        self.message = w.HTML()
        self.message.add_class("tf-gtt-message")
        self.refresh_error = w.HTML()
        self.refresh_button = w.Button(description="Refresh", icon="refresh")
        self.refresh_button.add_class("tf-gtt-refresh")
        self.table = Table(GTT_COLUMNS, _WIDTHS, css="tf-gtts", empty="no GTTs")
        form = w.VBox([
            self.picker.widget, self.ltp, w.HBox([self.kind, self.side]), w.HBox([self.product, self.lots, self.lots_info]),
            w.HBox([self.trigger, self.price]), w.HBox([self.stop_trigger, self.stop_price]), self.price_note, self.tag,
            self.legs, self.problems, w.HBox([self.review, self.stop_editing]),
        ])
        self.widget = w.VBox([
            w.HTML(STYLE), self.banner, form, self.confirm.widget, self.message, self.refresh_error,
            w.HBox([w.HTML("<div class='tf-section'>GTTs</div>"), self.refresh_button]), self.table.widget,
        ])
        self.widget.add_class("tf-gtt-panel")
        self.picker.on_change(self._instrument_changed)
        for widget in (self.kind, self.side, self.product, self.lots, self.trigger, self.price, self.stop_trigger,
                       self.stop_price, self.tag):
            widget.observe(self._form_changed, names="value")
        self.review.on_click(lambda _b: self.on_review())
        self.stop_editing.on_click(lambda _b: self.new_gtt())
        self.refresh_button.on_click(lambda _b: self.refresh())
        self._form_changed()

    def say(self, text: str, *, error: bool = False) -> None:
        css = "tf-error" if error else "tf-ok"
        self.message.value = f"<div class='{css}'>{esc(text)}</div>"
        (log.warning if error else log.info)("GTT panel: %s", text)

    def ticket(self) -> GttTicket:
        return GttTicket(
            instrument=self.instrument, kind=self.kind.value, side=self.side.value, product=self.product.value,
            lots=self.lots.value, trigger=self.trigger.value, price=self.price.value,
            stop_trigger=self.stop_trigger.value, stop_price=self.stop_price.value, tag=self.tag.value or None,
        )

    def _instrument_changed(self, inst) -> None:
        self.quote = None
        if inst is not None:
            allowed = [p.value for p in products_for(inst)]
            if list(self.product.options) != allowed:
                self.product.options = allowed
            if self.editing is None or self.product.value not in allowed:
                self.product.value = _default_product(inst)
            for field in (self.trigger, self.price, self.stop_trigger, self.stop_price):
                field.step = inst.tick_size
            self._refresh_quote()
        self._form_changed()

    def _form_changed(self, _change=None) -> None:
        if self.confirm.pending and self._confirming == "gtt":
            self.confirm.cancel()
            self.say("the GTT changed while it was waiting for confirmation: review it again", error=True)
        oco = self.kind.value == "OCO"
        self.trigger.description = "Target trigger" if oco else "Trigger"
        self.price.description = "Target price" if oco else "Price"
        for field in (self.stop_trigger, self.stop_price):
            field.layout.display = None if oco else "none"
        self.validate()

    def validate(self) -> Check:
        """Check the form against the last price; show each leg's order, or what to fix."""
        inst = self.instrument
        n = self.lots.value
        self.lots_info.value = f"× {inst.lot_size} = {n * inst.lot_size} units" if inst is not None else ""
        self.check = check_gtt(self.ticket(), last_price=self.last_price, no_instrument=self.picker.message)
        if self.check.ok:
            self.legs.value = bullets(gtt_leg_lines(self.check.request, self.last_price), "tf-ok")
            self.problems.value = bullets(self.check.warnings, "tf-warnings")
        else:
            self.legs.value = ""
            self.problems.value = bullets(self.check.problems, "tf-problems")
        self.review.disabled = not self.check.ok or not self._can_send()
        return self.check

    # ------------------------------------------------------------------ place / modify / cancel

    @guarded
    def on_review(self) -> None:
        check = self.validate()
        if not check.ok:
            self.say("the GTT is not valid: " + "; ".join(check.problems), error=True)
            return
        require_armed(self.broker)
        req: GttRequest = check.request
        live = bool(getattr(self.broker, "live", True))
        what = f"Modify GTT {self.editing}" if self.editing else "Place GTT"
        summary = (f"<b>{'LIVE ' if live else ''}{esc(self.broker.name)}: {esc(what)}: {esc(describe_gtt(req))}</b>"
                   + bullets(gtt_leg_lines(req, self.last_price), "tf-estimate") + bullets(check.warnings, "tf-warnings"))
        self._confirming = "gtt"
        gid = self.editing
        self.confirm.ask(summary, lambda: self._send(req, gid), live=live, yes=what,
                         live_note=f"This sends a REAL GTT to {self.broker.name}.")

    @guarded
    def _send(self, req: GttRequest, gtt_id: str | None) -> None:
        self._confirming = ""
        require_armed(self.broker)
        try:
            gtt = self.broker.place_gtt(req) if gtt_id is None else self.broker.modify_gtt(gtt_id, req)
        except TradeflowError as exc:
            self.say(f"GTT {'not placed' if gtt_id is None else gtt_id + ' not modified'}: {exc}", error=True)
            return
        self.say(f"GTT {gtt.gtt_id} {'placed' if gtt_id is None else 'modified'} at {self.broker.name}: {gtt.status}")
        self.new_gtt()
        self.refresh_table()

    @guarded
    def cancel_gtt(self, gtt_id: str) -> None:
        """Cancel at once (it only reduces what may happen), still only when armed for a live broker."""
        require_armed(self.broker)
        try:
            self.broker.cancel_gtt(gtt_id)
        except TradeflowError as exc:
            self.say(f"cancel GTT {gtt_id} failed: {exc}", error=True)
        else:
            self.say(f"GTT {gtt_id} cancelled")
            if self.editing == gtt_id:
                self.new_gtt()
        self.refresh_table()

    @guarded
    def start_modify(self, gtt_id: str) -> None:
        """Load an active GTT into the form; "Review GTT" then modifies it instead of placing a new one."""
        gtt = next((g for g in self.broker.gtts() if g.gtt_id == gtt_id), None)
        if gtt is None or gtt.status != "ACTIVE":
            self.say(f"GTT {gtt_id} is not active: only active GTTs can be modified", error=True)
            return
        r = gtt.request
        self.editing = gtt_id
        self.picker.choose(r.instrument)
        self.kind.value = r.kind.value
        self.side.value = r.side.value
        self.product.value = r.product.value
        self.lots.value = r.legs[0].quantity // r.instrument.lot_size
        self.trigger.value = r.legs[0].trigger_price
        self.price.value = r.legs[0].price or 0.0
        if r.kind is GttKind.OCO:
            self.stop_trigger.value = r.legs[1].trigger_price
            self.stop_price.value = r.legs[1].price or 0.0
        self.tag.value = r.tag or ""
        self.review.description = f"Review change to {gtt_id}"
        self.stop_editing.layout.display = None
        self.say(f"editing GTT {gtt_id}: change the fields, then review")
        self._form_changed()

    def new_gtt(self) -> None:
        """Leave modify mode: the form places a new GTT again."""
        self.editing = None
        self.review.description = "Review GTT"
        self.stop_editing.layout.display = "none"

    # ------------------------------------------------------------------ refresh

    def refresh(self) -> None:
        """Refresh the last price, re-check the form against it, and the list of GTTs."""
        self.refresh_error.value = ""
        self._refresh_quote()
        if not (self.confirm.pending and self._confirming == "gtt"):
            self.validate()
        self.refresh_table()

    def refresh_table(self) -> None:
        try:
            self._gtts = self.broker.gtts()
        except TradeflowError as exc:
            self.refresh_error.value = f"<span class='tf-error'>GTT list failed: {esc(exc)}</span>"
            log.warning("GTT panel: refresh failed: %s", exc)
            return
        placed_by: Callable[[str], Order | None] | None = getattr(self.broker, "gtt_order", None)
        can = self._can_send()
        rows = []
        for g in reversed(self._gtts):
            placed = None
            if placed_by is not None and g.status != "ACTIVE":
                try:
                    placed = placed_by(g.gtt_id)
                except TradeflowError:
                    placed = None
            active = g.status == "ACTIVE"
            actions = (
                RowAction("Modify", "tf-row-modify", lambda gid=g.gtt_id: self.start_modify(gid), can),
                RowAction("Cancel", "tf-row-cancel", lambda gid=g.gtt_id: self.cancel_gtt(gid), can, "warning"),
            ) if active else ()
            rows.append((g.gtt_id, gtt_cells(g, placed), actions))
        self.table.update(rows)

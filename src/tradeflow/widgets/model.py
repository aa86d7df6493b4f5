"""The logic behind the order and GTT panels, with no ipywidgets: testable on its own.

The panels (``order_panel``, ``gtt_panel``) only move values between widgets and these
functions, so everything that decides what is sent to a broker lives here:

* what a person typed (:class:`OrderTicket`, :class:`GttTicket`) becomes a checked request
  through the shared pre-trade validation (``tradeflow.ordering``, ``validate_order``,
  ``validate_gtt``); :func:`check_order` and :func:`check_gtt` return every problem as text
  that says what to fix, instead of raising, so the panel can show them as you type;
* :func:`estimate` prices an order before it is sent (``tradeflow.costs``) and says how much
  margin or cash it blocks, on the paper broker's money model;
* :func:`require_armed` is the live-arming gate every send goes through;
* :func:`kill_switch` cancels, flattens and tells running engines to stop;
* :class:`SimQuotes` feeds the paper account from the simulated market, so a panel on paper
  sees prices move and resting orders fill; :class:`Ticker` refreshes a panel on a timer.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import html
import itertools
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd

from .. import costs
from ..brokers.base import (
    Broker, BrokerUnavailable, Funds, Gtt, GttKind, GttRequest, Instrument, InstrumentKind, InvalidOrder,
    Order, OrderRequest, OrderStatus, OrderType, Position, Product, Quote, Side, Validity, validate_order,
)
from ..brokers.connect import LiveNotArmed
from ..errors import TradeflowError
from ..instruments import InstrumentMaster, UnknownInstrument
from ..ordering import gtt_request, order_request, parse_enum

__all__ = [
    "OrderTicket", "GttTicket", "Check", "Estimate", "KillReport", "InstrumentFinder", "SimQuotes", "Ticker",
    "QuoteSource", "check_order", "check_gtt", "estimate", "require_armed", "is_armed", "live_banner",
    "describe", "describe_order", "describe_gtt", "gtt_leg_lines", "order_cells", "position_cells", "gtt_cells",
    "exit_request", "kill_switch", "broker_quotes", "products_for", "new_tag", "status_text",
    "after_unknown_outcome", "quote_line", "esc", "ORDER_COLUMNS", "POSITION_COLUMNS", "GTT_COLUMNS", "FAR_FROM_LAST",
]

log = logging.getLogger(__name__)

IST = "Asia/Kolkata"
FAR_FROM_LAST = 0.05
"""A limit price or trigger further than this fraction from the last price gets a warning (fat finger)."""

QuoteSource = Callable[[Instrument], "Quote | None"]
"""Gives the latest quote of an instrument (None when there is none yet)."""


# ---------------------------------------------------------------------- live arming


def is_armed() -> bool:
    """``TRADEFLOW_ALLOW_LIVE=1`` now (the environment is re-read, so unsetting it disarms at once)."""
    from ..config import settings

    return settings(reload=True).allow_live


def require_armed(broker: Broker) -> None:
    """Raise ``LiveNotArmed`` before anything is sent to a live broker without ``TRADEFLOW_ALLOW_LIVE=1``."""
    if getattr(broker, "live", True) and not is_armed():
        raise LiveNotArmed(
            f"{broker.name} is a live broker: real orders need TRADEFLOW_ALLOW_LIVE=1 in the environment of the "
            "kernel running this panel; nothing was sent"
        )


def live_banner(broker: Broker) -> tuple[str, str]:
    """(css class, text) of the panel's banner: red for a live broker, whether it is armed or not."""
    name = broker.name.upper()
    if not getattr(broker, "live", True):
        label = "PAPER" if name == "PAPER" else f"PAPER · {name}"
        return "tf-paper-banner", f"{label}: a simulated account, no real money"
    if is_armed():
        return "tf-live-banner", f"LIVE · {name}: orders placed here are REAL and cost real money"
    return "tf-live-banner", (f"LIVE · {name} · NOT ARMED: sending is refused until TRADEFLOW_ALLOW_LIVE=1 is set "
                              "in the kernel's environment (restart the kernel after setting it)")


# ---------------------------------------------------------------------- instruments


def describe(inst: Instrument) -> str:
    """One line naming an instrument the way a trader reads it: expiry and strike for derivatives."""
    parts = [inst.symbol, inst.segment.value, inst.kind.value]
    if inst.expiry is not None:
        parts.append(f"exp {inst.expiry:%d %b %Y}")
    if inst.strike is not None:
        parts.append(f"strike {inst.strike:g}{' ' + inst.option_type.value if inst.option_type else ''}")
    parts.append(f"lot {inst.lot_size}")
    parts.append(f"tick {inst.tick_size:g}")
    if inst.name and inst.name.upper() != inst.symbol.upper():
        parts.append(inst.name)
    return " · ".join(parts)


class InstrumentFinder:
    """Search suggestions and exact lookups over an instrument master.

    Several words narrow the search: ``NIFTY 24000 CE`` finds the 24000 calls of every expiry
    (the first word searches symbols and names, the others must appear in the description).
    """

    def __init__(self, master: InstrumentMaster | Sequence[Instrument]) -> None:
        self.master = master if isinstance(master, InstrumentMaster) else InstrumentMaster(master)

    def suggest(self, text: str, limit: int = 12) -> list[Instrument]:
        words = text.strip().upper().split()
        if not words:
            return []
        first = self.master.search(words[0], limit=len(self.master) if len(words) > 1 else limit)
        if len(words) == 1:
            return first
        rest = words[1:]
        hits = [i for i in first if all(w in describe(i).upper() for w in rest)]
        return hits[:limit]

    def resolve(self, text: str) -> Instrument | None:
        """The instrument whose symbol is exactly ``text`` (one segment only), else None."""
        try:
            return self.master.get(text.strip())
        except TradeflowError:
            return None

    def unknown(self, text: str) -> str:
        """The message for a search that matched nothing, with "did you mean" when there is one."""
        try:
            self.master.get(text.strip())
        except UnknownInstrument as exc:
            hint = f"; did you mean {', '.join(exc.suggestions)}?" if exc.suggestions else ""
            return f"no instrument matches {text.strip()!r} in this broker's master{hint}"
        except TradeflowError as exc:
            return str(exc)
        return f"pick {text.strip()} from the suggestions"


def products_for(inst: Instrument | None) -> list[Product]:
    """Products the exchange segment allows (cash: INTRADAY, DELIVERY; F&O: INTRADAY, MARGIN)."""
    if inst is None or not inst.segment.is_derivative:
        return [Product.INTRADAY, Product.DELIVERY]
    return [Product.INTRADAY, Product.MARGIN]


# ---------------------------------------------------------------------- tickets and checks


@dataclass(frozen=True)
class Check:
    """The outcome of checking a ticket: a request to send, or the problems that stop it."""

    request: Any = None  # OrderRequest | GttRequest
    problems: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.request is not None and not self.problems


@dataclass(frozen=True)
class OrderTicket:
    """An order form as typed. ``quantity`` is in lots (``unit="lots"``) or units; a price of
    None or 0 means "not given"; price and trigger are used only by the order types that take them."""

    instrument: Instrument | None = None
    side: str = "BUY"
    product: str = "INTRADAY"
    order_type: str = "LIMIT"
    quantity: int = 1
    unit: str = "lots"
    price: float | None = None
    trigger: float | None = None
    validity: str = "DAY"
    tag: str | None = None


def _given(value: float | None) -> float | None:
    return None if value is None or value == 0 else float(value)


def _problems(exc: InvalidOrder) -> list[str]:
    return list(exc.problems) or [str(exc)]


def _far(price: float, last: float | None, what: str) -> str | None:
    if last is None or last <= 0:
        return None
    off = (price - last) / last
    if abs(off) > FAR_FROM_LAST:
        return f"{what} {price:,.2f} is {abs(off):.1%} {'above' if off > 0 else 'below'} the last price {last:,.2f}: check it"
    return None


def check_order(ticket: OrderTicket, *, last_price: float | None = None, no_instrument: str | None = None) -> Check:
    """Check an order ticket with the shared pre-trade validation; never raises for bad input.

    ``no_instrument`` is the message to show when no instrument is picked (e.g. the search
    matched nothing). Warnings do not block: a limit far from the last price, no quote yet.
    """
    inst = ticket.instrument
    if inst is None:
        return Check(problems=(no_instrument or "choose an instrument: type a symbol and pick a suggestion",))
    try:
        order_type = parse_enum(OrderType, ticket.order_type, "order type")
        price = _given(ticket.price) if order_type in (OrderType.LIMIT, OrderType.SL) else None
        trigger = _given(ticket.trigger) if order_type in (OrderType.SL, OrderType.SL_M) else None
        tag = (ticket.tag or "").strip() or None
        qty = ticket.quantity
        if isinstance(qty, bool) or not isinstance(qty, int) or qty <= 0:
            what = "lots" if ticket.unit == "lots" else "quantity"
            return Check(problems=(f"{what} must be a positive whole number, got {qty!r}",))
        if ticket.unit == "lots":
            req = order_request(inst, ticket.side, qty, order_type.value, product=ticket.product, price=price,
                                trigger=trigger, validity=ticket.validity, tag=tag, last_price=last_price)
        else:
            req = OrderRequest(
                inst, parse_enum(Side, ticket.side, "side"), qty, order_type, parse_enum(Product, ticket.product, "product"),
                price, trigger, parse_enum(Validity, ticket.validity, "validity"), tag,
            )
            validate_order(req, last_price=last_price)
    except InvalidOrder as exc:
        return Check(problems=tuple(_problems(exc)))
    warnings = []
    if last_price is None:
        warnings.append(f"no last price for {inst.symbol} yet: stop triggers cannot be checked against it")
    for what, value in (("limit price", req.price), ("trigger", req.trigger_price)):
        note = _far(value, last_price, what) if value is not None else None
        if note:
            warnings.append(note)
    if req.order_type is OrderType.LIMIT and last_price is not None:
        if (req.side is Side.BUY and req.price >= last_price) or (req.side is Side.SELL and req.price <= last_price):
            where = "at or above" if req.side is Side.BUY else "at or below"
            warnings.append(f"this {req.side.value.lower()} limit is {where} the last price {last_price:,.2f}: "
                            "it can fill at once, like a market order")
    return Check(req, (), tuple(warnings))


@dataclass(frozen=True)
class GttTicket:
    """A GTT form as typed: SINGLE (trigger, price) or OCO (target trigger/price and stop).
    A price of None or 0 makes that leg a market order."""

    instrument: Instrument | None = None
    kind: str = "SINGLE"
    side: str = "SELL"
    product: str = "DELIVERY"
    lots: int = 1
    trigger: float | None = None
    price: float | None = None
    stop_trigger: float | None = None
    stop_price: float | None = None
    tag: str | None = None


def check_gtt(ticket: GttTicket, *, last_price: float | None, no_instrument: str | None = None) -> Check:
    """Check a GTT ticket against the last price with the shared validation; never raises for bad input."""
    inst = ticket.instrument
    if inst is None:
        return Check(problems=(no_instrument or "choose an instrument: type a symbol and pick a suggestion",))
    problems = []
    if last_price is None:
        problems.append(f"no last price for {inst.symbol} yet: a GTT's triggers are checked against it; press Refresh")
    trigger = _given(ticket.trigger)
    if trigger is None:
        problems.append("set the trigger price" if ticket.kind.upper() == "SINGLE" else "set the target's trigger price")
    oco = ticket.kind.upper() == "OCO"
    if oco and _given(ticket.stop_trigger) is None:
        problems.append("an OCO GTT needs a stop trigger: set the stop's trigger price")
    lots = ticket.lots
    if isinstance(lots, bool) or not isinstance(lots, int) or lots <= 0:
        problems.append(f"lots must be a positive whole number, got {lots!r}")
    if problems:
        return Check(problems=tuple(problems))
    try:
        req = gtt_request(inst, ticket.side, lots, kind=ticket.kind, trigger=trigger, price=_given(ticket.price),
                          stop_trigger=_given(ticket.stop_trigger) if oco else None,
                          stop_price=_given(ticket.stop_price) if oco else None, product=ticket.product,
                          last_price=last_price, tag=(ticket.tag or "").strip() or None)
    except InvalidOrder as exc:
        return Check(problems=tuple(_problems(exc)))
    warnings = [w for leg in req.legs for w in [_far(leg.trigger_price, last_price, "trigger")] if w]
    return Check(req, (), tuple(warnings))


# ---------------------------------------------------------------------- describing requests


def _px(x: float | None) -> str:
    return "" if x is None else f"{x:,.2f}"


def describe_order(req: OrderRequest) -> str:
    """The whole order in one line, as the confirmation shows it."""
    inst = req.instrument
    lots = req.quantity / inst.lot_size
    qty = f"{req.quantity} {inst.symbol} ({lots:g} lot{'s' if lots != 1 else ''} × {inst.lot_size})"
    how = {
        OrderType.MARKET: "MARKET",
        OrderType.LIMIT: f"LIMIT {_px(req.price)}",
        OrderType.SL: f"SL trigger {_px(req.trigger_price)} limit {_px(req.price)}",
        OrderType.SL_M: f"SL-M trigger {_px(req.trigger_price)}",
    }[req.order_type]
    out = f"{req.side} {qty} · {how} · {req.product} · {req.validity} · {inst.segment.value}"
    return out + (f" · tag {req.tag}" if req.tag else "")


def gtt_leg_lines(req: GttRequest, last_price: float | None) -> list[str]:
    """What each leg does when it fires: the trigger's direction and the order it places."""
    out = []
    for i, leg in enumerate(req.legs):
        label = "trigger" if req.kind is GttKind.SINGLE else ("target" if i == 0 else "stop")
        if last_price is None:
            when = f"when the last price reaches {_px(leg.trigger_price)}"
        elif leg.trigger_price > last_price:
            when = f"when the last price rises to {_px(leg.trigger_price)} or above"
        else:
            when = f"when the last price falls to {_px(leg.trigger_price)} or below"
        order = f"LIMIT {_px(leg.price)}" if leg.price is not None else "MARKET"
        out.append(f"{label}: {when} → {req.side} {leg.quantity} {req.instrument.symbol} {order} ({req.product})")
    if req.kind is GttKind.OCO:
        out.append("when one leg fires, the other is cancelled")
    return out


def describe_gtt(req: GttRequest) -> str:
    lots = req.legs[0].quantity / req.instrument.lot_size
    return (f"{req.kind} GTT · {req.side} {req.legs[0].quantity} {req.instrument.symbol} ({lots:g} lot(s)) · "
            f"{req.product}" + (f" · tag {req.tag}" if req.tag else ""))


_TAGS = itertools.count(1)


def new_tag(prefix: str = "ui") -> str:
    """A client tag for an order sent from a panel, so an unknown outcome can be looked up by tag."""
    now = pd.Timestamp.now(tz=IST)
    return f"{prefix}-{now:%y%m%d%H%M%S}-{next(_TAGS) % 1000:03d}"


# ---------------------------------------------------------------------- estimate before sending


@dataclass(frozen=True)
class Estimate:
    """What an order costs before it is sent. Amounts in rupees; None when unknown (no price)."""

    price: float | None
    charges: float | None
    margin: float | None
    available: float | None
    note: str = ""

    @property
    def needs(self) -> float | None:
        if self.margin is None or self.charges is None:
            return None
        return round(self.margin + self.charges, 2)

    @property
    def short_of_funds(self) -> bool:
        return self.needs is not None and self.available is not None and self.needs > self.available + 1e-9

    def lines(self) -> list[str]:
        out = []
        out.append(f"price used: {_px(self.price)}" if self.price is not None else "price used: unknown (no quote yet)")
        out.append(f"estimated charges: ₹{self.charges:,.2f}" if self.charges is not None else "estimated charges: unknown")
        if self.margin is not None:
            out.append(f"margin / cash blocked: ₹{self.margin:,.2f} (needs ₹{self.needs:,.2f} with charges)")
        if self.available is not None:
            out.append(f"available funds: ₹{self.available:,.2f}")
        if self.short_of_funds:
            out.append(f"NOT ENOUGH FUNDS: needs ₹{self.needs:,.2f}, available ₹{self.available:,.2f}; the broker will reject it")
        if self.note:
            out.append(self.note)
        return out


def _brokerage(broker: Broker) -> str:
    name = getattr(broker, "brokerage", None) or broker.name
    return name if name in costs.BROKERAGE else "dhan"


def _margin(inst: Instrument, qty: int, price: float, rate: float) -> float:
    """The paper broker's money model: equity the notional, futures ``rate`` of it, bought
    options the premium, sold options ``rate`` of strike × quantity."""
    n = abs(qty)
    if n == 0:
        return 0.0
    if inst.kind is InstrumentKind.EQUITY:
        return n * price
    if inst.kind in (InstrumentKind.FUTIDX, InstrumentKind.FUTSTK):
        return rate * n * price
    if qty > 0:
        return n * price
    return rate * n * (inst.strike or price)


def estimate(broker: Broker, req: OrderRequest, *, last_price: float | None, funds: Funds | None = None,
             positions: Sequence[Position] | None = None, on: dt.date | None = None) -> Estimate:
    """Charges (``tradeflow.costs``) and the margin or cash the order blocks, before it is sent.

    The part of the order that closes an existing position (same symbol and product) blocks
    nothing. Margins follow the paper broker's model; a live broker's RMS decides for real.
    """
    from ..brokers.paper import MARGIN_RATE, costs_segment

    price = {OrderType.LIMIT: req.price, OrderType.SL: req.price}.get(req.order_type)
    if req.order_type is OrderType.SL_M:
        price = req.trigger_price
    elif req.order_type is OrderType.MARKET:
        price = last_price
    day = on or pd.Timestamp.now(tz=IST).date()
    charges = margin = available = None
    note = "" if not getattr(broker, "live", False) else "margins are estimates on the paper model; the broker's RMS decides"
    if price is not None:
        try:
            seg = costs_segment(req.instrument, req.product)
            charges = costs.charges(seg, req.side.value.lower(), price, req.quantity, on=day, broker=_brokerage(broker)).total
        except TradeflowError as exc:
            note = f"charges unknown: {exc}"
        held = sum(p.quantity for p in (positions or ()) if p.instrument.symbol == req.instrument.symbol
                   and p.product is req.product)
        closing = min(req.quantity, abs(held)) if held and (held > 0) != (req.side is Side.BUY) else 0
        rate = float(getattr(broker, "margin_rate", MARGIN_RATE))
        margin = round(_margin(req.instrument, req.side.sign * (req.quantity - closing), price, rate), 2)
    if funds is not None:
        available = funds.available
    return Estimate(price, charges, margin, available, note)


# ---------------------------------------------------------------------- rows of the tables

ORDER_COLUMNS = ("id", "time", "symbol", "side", "qty", "type", "price", "trigger", "product", "status", "filled",
                 "avg", "tag", "message")
POSITION_COLUMNS = ("symbol", "product", "qty", "avg", "last", "unrealised", "realised", "P&L")
GTT_COLUMNS = ("id", "symbol", "kind", "side", "qty", "legs (trigger → order)", "product", "status", "order")


def _time(ts: pd.Timestamp | None) -> str:
    return "" if ts is None else pd.Timestamp(ts).tz_convert(IST).strftime("%H:%M:%S")


def order_cells(o: Order) -> list[str]:
    r = o.request
    return [o.order_id, _time(o.updated_at or (o.history[-1][0] if o.history else None)), r.instrument.symbol,
            r.side.value, str(r.quantity), r.order_type.value.replace("_", "-"), _px(r.price), _px(r.trigger_price),
            r.product.value, o.status.value, str(o.filled_quantity), _px(o.average_price), r.tag or "", o.message]


def position_cells(p: Position) -> list[str]:
    total = p.realized_pnl + p.unrealized_pnl
    return [p.instrument.symbol, p.product.value, str(p.quantity), _px(p.average_price) if p.quantity else "",
            _px(p.last_price), f"{p.unrealized_pnl:,.2f}", f"{p.realized_pnl:,.2f}", f"{total:,.2f}"]


def gtt_cells(g: Gtt, placed: Order | None = None) -> list[str]:
    r = g.request
    legs = " | ".join(f"{_px(leg.trigger_price)} → {'LMT ' + _px(leg.price) if leg.price is not None else 'MKT'}"
                      for leg in r.legs)
    order = f"{placed.order_id} {placed.status.value}" if placed is not None else ""
    return [g.gtt_id, r.instrument.symbol, r.kind.value, r.side.value, str(r.legs[0].quantity), legs, r.product.value,
            g.status, order]


def status_text(o: Order) -> str:
    """An order's status with the path it took: ``P000001: PENDING → OPEN → FILLED at 2,501.10``."""
    path = " → ".join(s.value for _, s in o.history) or o.status.value
    if o.history and o.history[-1][1] is not o.status:
        path += f" → {o.status.value}"
    text = f"{o.order_id}: {path}"
    if o.status is OrderStatus.FILLED and o.average_price is not None:
        text += f" at {o.average_price:,.2f}"
    if o.message:
        text += f" ({o.message})"
    return text


# ---------------------------------------------------------------------- exits and the kill switch


def exit_request(p: Position, *, tag: str | None = None) -> OrderRequest:
    """A MARKET order that closes position ``p`` (the opposite side, its whole quantity, same product)."""
    if p.quantity == 0:
        raise InvalidOrder(f"{p.instrument.symbol} {p.product} is already flat: nothing to exit")
    side = Side.SELL if p.quantity > 0 else Side.BUY
    req = OrderRequest(p.instrument, side, abs(p.quantity), OrderType.MARKET, p.product, tag=tag)
    validate_order(req)
    return req


_OPEN = (OrderStatus.PENDING, OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED)


@dataclass
class KillReport:
    """What the kill switch did, item by item; ``errors`` lists what failed (and needs a look)."""

    engines: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    gtts_cancelled: list[str] = field(default_factory=list)
    exits: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"engines told to stop: {', '.join(self.engines) or 'none running'}",
               f"orders cancelled: {', '.join(self.cancelled) or 'none open'}"]
        if self.gtts_cancelled:
            out.append(f"GTTs cancelled: {', '.join(self.gtts_cancelled)}")
        out.append(f"exit orders sent: {', '.join(self.exits) or 'no open position'}")
        out += self.skipped
        out += [f"FAILED: {e}" for e in self.errors]
        return out


def kill_switch(broker: Broker, *, cancel_gtts: bool = True,
                request_kill: Callable[[], list[dict]] | None = None) -> KillReport:
    """Stop everything at ``broker``: tell running engines to stop (``tradeflow.trading.request_kill``),
    cancel every open order (and active GTT), then flatten every position with MARKET orders.

    Every step is tried even when one fails; failures are listed in the report. On a live broker,
    when an engine was running, positions are left to the engines (each knows its own position
    and exits it once); flattening them here too could exit twice and open the reverse position.
    Press the kill switch again once the engines have stopped to flatten what is left.
    """
    require_armed(broker)
    if request_kill is None:
        from ..trading import request_kill
    report = KillReport()
    try:
        report.engines = [str(info.get("run_id")) for info in request_kill()]
    except Exception as exc:  # noqa: BLE001 - the rest of the kill switch must still run
        log.exception("kill switch: could not signal the running engines")
        report.errors.append(f"could not signal running engines: {exc}")
    try:
        orders = broker.orders()
    except TradeflowError as exc:
        orders = []
        report.errors.append(f"could not list orders: {exc}")
    for o in orders:
        if o.status in _OPEN:
            try:
                broker.cancel_order(o.order_id)
                report.cancelled.append(o.order_id)
            except TradeflowError as exc:
                report.errors.append(f"cancel {o.order_id}: {exc}")
    if cancel_gtts:
        try:
            for g in broker.gtts():
                if g.status == "ACTIVE":
                    try:
                        broker.cancel_gtt(g.gtt_id)
                        report.gtts_cancelled.append(g.gtt_id)
                    except TradeflowError as exc:
                        report.errors.append(f"cancel GTT {g.gtt_id}: {exc}")
        except TradeflowError as exc:
            report.errors.append(f"could not list GTTs: {exc}")
    try:
        positions = [p for p in broker.positions() if p.quantity]
    except TradeflowError as exc:
        positions = []
        report.errors.append(f"could not list positions: {exc}")
    if positions and getattr(broker, "live", True) and report.engines:
        report.skipped.append(
            f"positions NOT flattened here ({', '.join(p.instrument.symbol for p in positions)}): running engines were "
            "told to stop and exit their own; press the kill switch again once they have stopped to flatten the rest"
        )
        return report
    for p in positions:
        try:
            order = broker.place_order(exit_request(p, tag=new_tag("kill")))
            report.exits.append(f"{order.order_id} ({order.request.side} {order.request.quantity} {p.instrument.symbol})")
        except TradeflowError as exc:
            report.errors.append(f"exit {p.instrument.symbol} {p.product}: {exc}")
    log.warning("kill switch at %s: %s", broker.name, "; ".join(report.lines()))
    return report


def after_unknown_outcome(broker: Broker, req: OrderRequest, exc: BrokerUnavailable) -> str:
    """The message for a send whose outcome is unknown: look the tag up before anyone retries."""
    found = None
    if req.tag:
        try:
            found = broker.order_by_tag(req.tag)
        except TradeflowError:
            found = None
    if found is not None:
        return f"the broker did not answer ({exc}), but order {status_text(found)} carries tag {req.tag}: it was placed"
    return (f"the broker did not answer ({exc}); the order may or may not have been placed. Check the orders "
            f"table (tag {req.tag}) before sending it again")


# ---------------------------------------------------------------------- quotes and the timer


def broker_quotes(broker: Broker) -> QuoteSource:
    """A quote source asking ``broker.quote`` for one instrument."""

    def quote(inst: Instrument) -> Quote | None:
        return broker.quote([inst]).get(inst.symbol)

    return quote


class SimQuotes:
    """Quotes for a paper account from the simulated market (clearly synthetic).

    Each call feeds the paper broker the symbol's latest closed 1-minute bar when it is newer
    than the account's last quote (so resting orders fill as the simulated market moves), and
    returns that quote with the previous session's close, for the day change. Symbols the
    simulated market does not have get the paper account's own last quote.
    """

    def __init__(self, broker, *, seed: int | None = None, now: Callable[[], pd.Timestamp] | None = None) -> None:
        from ..brokers.sim import SimMarket
        from ..config import settings

        self.broker = broker
        self.market = SimMarket(seed=settings().sim_seed if seed is None else seed)
        self._now = now or (lambda: pd.Timestamp.now(tz="UTC"))
        self._prev_close: dict[tuple[str, dt.date], float | None] = {}

    def __call__(self, inst: Instrument) -> Quote | None:
        from ..timeframes import ONE_MINUTE

        if inst.symbol.upper() in self.market.symbols():
            now = self._now()
            have = self.broker.last_quote(inst)
            since = now - pd.Timedelta(days=10) if have is None or have.time is None else max(
                pd.Timestamp(have.time), now - pd.Timedelta(days=10))
            closed = now.floor("min") - pd.Timedelta(minutes=1) + pd.Timedelta(microseconds=1)  # bars that have closed
            bars = self.market.fetch(inst.symbol, ONE_MINUTE, since, closed)
            if len(bars):
                ts = bars.index[-1].tz_convert("UTC")
                if have is None or have.time is None or ts > pd.Timestamp(have.time):
                    self.broker.on_quote(inst.symbol, float(bars["close"].iloc[-1]), ts=ts)
        q = self.broker.last_quote(inst)
        if q is None:
            return None
        return replace(q, close=self._previous_close(inst.symbol, q.time))

    def _previous_close(self, symbol: str, at: pd.Timestamp | None) -> float | None:
        from ..timeframes import ONE_MINUTE

        if at is None or symbol.upper() not in self.market.symbols():
            return None
        day = pd.Timestamp(at).tz_convert(IST).date()
        key = (symbol, day)
        if key not in self._prev_close:
            start = pd.Timestamp(day, tz=IST) - pd.Timedelta(days=10)
            bars = self.market.fetch(symbol, ONE_MINUTE, start.tz_convert("UTC"), pd.Timestamp(day, tz=IST).tz_convert("UTC"))
            self._prev_close[key] = float(bars["close"].iloc[-1]) if len(bars) else None
        return self._prev_close[key]


class Ticker:
    """Calls ``callback`` every ``seconds`` on the kernel's event loop (Jupyter and Voila run one),
    so refreshes never race the widget callbacks. Without a running loop it does not start."""

    def __init__(self, seconds: float, callback: Callable[[], None]) -> None:
        if not (seconds > 0 and math.isfinite(seconds)):
            raise ValueError(f"refresh interval must be a positive number of seconds, got {seconds!r}")
        self.seconds = float(seconds)
        self.callback = callback
        self._task: asyncio.Task | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> bool:
        """Start; returns False (and logs why) when there is no running event loop."""
        if self.running:
            return True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            log.warning("auto-refresh needs a running event loop (Jupyter or Voila); call refresh() instead")
            return False
        self._task = loop.create_task(self._run())
        return True

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.seconds)
            try:
                self.callback()
            except Exception:  # noqa: BLE001 - a failed refresh must not end the timer
                log.exception("panel refresh failed")


def quote_line(q: Quote | None, symbol: str) -> str:
    """``LTP 1,234.50 · +12.30 (+1.01%) · 10:31 IST`` (the change against the previous close, when known)."""
    if q is None:
        return f"{symbol}: no quote yet"
    text = f"{symbol} LTP {q.last_price:,.2f}"
    if q.close:
        ch = q.last_price - q.close
        text += f" · {'▲' if ch > 0 else ('▼' if ch < 0 else '=')} {ch:+,.2f} ({ch / q.close:+.2%}) vs prev close {q.close:,.2f}"
    else:
        text += " · day change unknown (no previous close)"
    if q.time is not None:
        text += f" · {pd.Timestamp(q.time).tz_convert(IST):%d %b %H:%M} IST"
    return text


def esc(text: object) -> str:
    return html.escape(str(text))

"""One broker protocol: records, enums, errors, the order state machine and pre-trade checks.

Every broker (paper, Dhan, Definedge) speaks this; nothing an adapter returns is an SDK
type or envelope. Pre-trade validation is shared, so an order the paper broker refuses is
refused the same way live, before anything is sent.
"""

from __future__ import annotations

import datetime as dt
import enum
import math
from dataclasses import dataclass, field, replace
from typing import Protocol, runtime_checkable

import pandas as pd

from ..errors import TradeflowError

__all__ = [
    "Side", "Product", "OrderType", "Validity", "Segment", "InstrumentKind", "OptionType", "OrderStatus", "GttKind",
    "Instrument", "OrderRequest", "Order", "Trade", "Position", "Holding", "Funds", "Quote", "GttLeg", "GttRequest", "Gtt",
    "BrokerError", "InvalidOrder", "OrderRejected", "SessionExpired", "RateLimited", "BrokerUnavailable",
    "TRANSITIONS", "advance", "validate_order", "validate_gtt", "on_tick", "Broker",
]


class Side(enum.StrEnum):
    BUY = "BUY"
    SELL = "SELL"

    @property
    def sign(self) -> int:
        return 1 if self is Side.BUY else -1


class Product(enum.StrEnum):
    INTRADAY = "INTRADAY"
    DELIVERY = "DELIVERY"  # equity cash carried overnight (CNC)
    MARGIN = "MARGIN"  # F&O carried overnight (Dhan MARGIN, Definedge NORMAL)


class OrderType(enum.StrEnum):
    MARKET = "MARKET"
    LIMIT = "LIMIT"
    SL = "SL"  # stop-loss limit: trigger, then a limit order at price
    SL_M = "SL_M"  # stop-loss market: trigger, then a market order


class Validity(enum.StrEnum):
    DAY = "DAY"
    IOC = "IOC"


class Segment(enum.StrEnum):
    NSE_EQ = "NSE_EQ"
    BSE_EQ = "BSE_EQ"
    NSE_FNO = "NSE_FNO"
    BSE_FNO = "BSE_FNO"
    NSE_IDX = "NSE_IDX"  # indices: quotes and history only, never orders
    BSE_IDX = "BSE_IDX"

    @property
    def is_derivative(self) -> bool:
        return self in (Segment.NSE_FNO, Segment.BSE_FNO)

    @property
    def is_index(self) -> bool:
        return self in (Segment.NSE_IDX, Segment.BSE_IDX)


class InstrumentKind(enum.StrEnum):
    EQUITY = "EQUITY"
    INDEX = "INDEX"
    FUTIDX = "FUTIDX"
    FUTSTK = "FUTSTK"
    OPTIDX = "OPTIDX"
    OPTSTK = "OPTSTK"


class OptionType(enum.StrEnum):
    CE = "CE"
    PE = "PE"


class OrderStatus(enum.StrEnum):
    PENDING = "PENDING"  # sent, not yet acknowledged by the exchange
    OPEN = "OPEN"  # resting at the exchange (or waiting for its trigger)
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"

    @property
    def is_final(self) -> bool:
        return self in (OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED, OrderStatus.EXPIRED)


class GttKind(enum.StrEnum):
    SINGLE = "SINGLE"
    OCO = "OCO"


# ---------------------------------------------------------------------- errors


class BrokerError(TradeflowError):
    """Something a broker (or the checks before it) refused or could not do."""


class InvalidOrder(BrokerError):
    """The order failed pre-trade validation: nothing was sent. ``problems`` lists what to fix."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        self.problems = list(problems or [])
        if self.problems:
            message = message + ": " + "; ".join(self.problems)
        super().__init__(message)


class OrderRejected(BrokerError):
    """The broker said no. ``code`` and ``broker_message`` are the broker's own."""

    def __init__(self, message: str, *, code: str = "", broker_message: str = "") -> None:
        self.code = code
        self.broker_message = broker_message
        super().__init__(message)


class SessionExpired(BrokerError):
    """The session is no longer valid; log in again (``tradeflow session login``)."""


class RateLimited(BrokerError):
    """The broker throttled us; wait and retry reads (orders are never retried blindly)."""


class BrokerUnavailable(BrokerError):
    """Network failure, timeout or a broker server error: the outcome of the call is unknown."""


# ---------------------------------------------------------------------- records


@dataclass(frozen=True)
class Instrument:
    """A tradable (or quotable) instrument as every broker sees it.

    ``broker_ids`` maps a broker name to its id for the instrument (Dhan security id,
    Definedge token). Circuit limits, when the master gives them, bound limit prices.
    """

    symbol: str  # trading symbol, e.g. "RELIANCE", "NIFTY24DEC24000CE"
    segment: Segment
    kind: InstrumentKind
    lot_size: int = 1
    tick_size: float = 0.05
    name: str = ""
    underlying: str = ""
    expiry: dt.date | None = None
    strike: float | None = None
    option_type: OptionType | None = None
    broker_ids: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    upper_circuit: float | None = None
    lower_circuit: float | None = None

    @property
    def tradable(self) -> bool:
        return not self.segment.is_index

    def id_for(self, broker: str) -> str:
        try:
            return self.broker_ids[broker]
        except KeyError:
            raise InvalidOrder(f"{self.symbol} has no {broker} id: refresh the {broker} instrument master") from None


@dataclass(frozen=True)
class OrderRequest:
    """What to send. ``quantity`` is in units (lots × lot size); prices in rupees."""

    instrument: Instrument
    side: Side
    quantity: int
    order_type: OrderType = OrderType.MARKET
    product: Product = Product.INTRADAY
    price: float | None = None
    trigger_price: float | None = None
    validity: Validity = Validity.DAY
    tag: str | None = None

    @property
    def lots(self) -> float:
        return self.quantity / self.instrument.lot_size


@dataclass(frozen=True)
class Order:
    """An order as the broker last reported it, with every status it went through."""

    order_id: str
    request: OrderRequest
    status: OrderStatus
    filled_quantity: int = 0
    average_price: float | None = None
    message: str = ""
    history: tuple[tuple[pd.Timestamp, OrderStatus], ...] = ()
    exchange_order_id: str = ""
    updated_at: pd.Timestamp | None = None

    @property
    def tag(self) -> str | None:
        return self.request.tag


@dataclass(frozen=True)
class Trade:
    trade_id: str
    order_id: str
    instrument: Instrument
    side: Side
    quantity: int
    price: float
    time: pd.Timestamp | None = None


@dataclass(frozen=True)
class Position:
    """Net position: ``quantity`` > 0 long, < 0 short, 0 closed today."""

    instrument: Instrument
    product: Product
    quantity: int
    average_price: float
    realized_pnl: float = 0.0
    unrealized_pnl: float = 0.0
    last_price: float | None = None


@dataclass(frozen=True)
class Holding:
    instrument: Instrument
    quantity: int
    average_price: float
    last_price: float | None = None


@dataclass(frozen=True)
class Funds:
    available: float
    used: float = 0.0
    total: float | None = None


@dataclass(frozen=True)
class Quote:
    instrument: Instrument
    last_price: float
    time: pd.Timestamp | None = None
    bid: float | None = None
    ask: float | None = None
    open: float | None = None
    high: float | None = None
    low: float | None = None
    close: float | None = None  # previous session's close
    volume: float | None = None
    oi: float | None = None
    upper_circuit: float | None = None
    lower_circuit: float | None = None


@dataclass(frozen=True)
class GttLeg:
    """One leg: when the last price crosses ``trigger_price``, place this order."""

    trigger_price: float
    price: float | None  # None: a market order
    quantity: int


@dataclass(frozen=True)
class GttRequest:
    """A good-till-triggered order: one leg (SINGLE), or target and stop legs (OCO).

    For OCO, ``side`` is the side of both exit orders: SELL to exit a long position (target
    above the last price, stop below), BUY to exit a short one (the reverse).
    """

    instrument: Instrument
    side: Side
    kind: GttKind
    legs: tuple[GttLeg, ...]
    product: Product = Product.DELIVERY
    tag: str | None = None

    @property
    def target(self) -> GttLeg:
        return self.legs[0]

    @property
    def stop(self) -> GttLeg:
        if self.kind is not GttKind.OCO:
            raise InvalidOrder("a single-trigger GTT has no stop leg")
        return self.legs[1]


@dataclass(frozen=True)
class Gtt:
    gtt_id: str
    request: GttRequest
    status: str = "ACTIVE"


# ---------------------------------------------------------------------- order state machine

TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.PENDING: frozenset(
        {OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED, OrderStatus.REJECTED, OrderStatus.CANCELLED, OrderStatus.EXPIRED}
    ),
    OrderStatus.OPEN: frozenset(
        {OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED, OrderStatus.EXPIRED}
    ),
    OrderStatus.PARTIALLY_FILLED: frozenset(
        {OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.EXPIRED}
    ),
    OrderStatus.FILLED: frozenset(),
    OrderStatus.CANCELLED: frozenset(),
    OrderStatus.REJECTED: frozenset(),
    OrderStatus.EXPIRED: frozenset(),
}
"""Which status may follow which: shared by paper and live. A final status never changes."""


def advance(order: Order, status: OrderStatus, *, at: pd.Timestamp | None = None, **changes) -> Order:
    """The order after the broker reported ``status``; an impossible move raises.

    Reporting the same status again is allowed (fills of a partly filled order, a
    modification of an open one) and leaves the history unchanged.
    """
    if status != order.status and status not in TRANSITIONS[order.status]:
        raise BrokerError(
            f"order {order.order_id}: the broker reported {status} after {order.status}, which cannot happen; "
            "treating the order state as unknown (check it in the broker's order book)"
        )
    stamp = at if at is not None else pd.Timestamp.now(tz="UTC")
    history = order.history if status == order.status else order.history + ((stamp, status),)
    return replace(order, status=status, history=history, updated_at=stamp, **changes)


# ---------------------------------------------------------------------- pre-trade validation

_PRODUCTS = {
    False: {Product.INTRADAY, Product.DELIVERY},  # cash segments
    True: {Product.INTRADAY, Product.MARGIN},  # derivatives
}


def on_tick(price: float, tick: float) -> bool:
    """True when ``price`` is a whole number of ticks (to a paisa's hundredth)."""
    steps = price / tick
    return math.isclose(steps, round(steps), rel_tol=0.0, abs_tol=1e-6)


def _fmt(x: float) -> str:
    return f"{x:,.2f}"


def validate_order(req: OrderRequest, *, last_price: float | None = None) -> None:
    """Refuse an order that cannot be right, naming every problem and what to fix.

    Checks: tradable instrument; quantity a positive whole number of lots; prices on the
    tick grid; a limit order has a price, a stop order a trigger (and SL-M no price, market
    none at all); a stop's trigger on the right side of its price and of the last price;
    product allowed for the segment; limit price and trigger inside the circuit band.
    """
    inst = req.instrument
    problems: list[str] = []
    if not inst.tradable:
        raise InvalidOrder(f"{inst.symbol} is an index and cannot be traded; trade its futures or options instead")
    lot = inst.lot_size
    if not isinstance(req.quantity, int) or isinstance(req.quantity, bool) or req.quantity <= 0:
        problems.append(f"quantity must be a positive whole number of units, got {req.quantity!r}")
    elif req.quantity % lot:
        lower = req.quantity // lot * lot
        problems.append(
            f"quantity {req.quantity} is not a multiple of the lot size {lot}; use {lower or lot} or {lower + lot}"
        )
    ot = req.order_type
    if ot in (OrderType.LIMIT, OrderType.SL) and req.price is None:
        problems.append(f"a {ot} order needs a price")
    if ot in (OrderType.MARKET, OrderType.SL_M) and req.price is not None:
        problems.append(f"a {ot} order takes no price (got {req.price}); use LIMIT or SL to set one")
    if ot in (OrderType.SL, OrderType.SL_M) and req.trigger_price is None:
        problems.append(f"a {ot} order needs a trigger price")
    if ot in (OrderType.MARKET, OrderType.LIMIT) and req.trigger_price is not None:
        problems.append(f"a {ot} order takes no trigger price; use SL or SL_M for a stop order")
    for name, value in (("price", req.price), ("trigger price", req.trigger_price)):
        if value is None:
            continue
        if not (value > 0 and math.isfinite(value)):
            problems.append(f"{name} must be positive, got {value}")
        elif not on_tick(value, inst.tick_size):
            down = math.floor(value / inst.tick_size) * inst.tick_size
            problems.append(
                f"{name} {value} is off the tick size {inst.tick_size}; use {_fmt(down)} or {_fmt(down + inst.tick_size)}"
            )
        elif inst.upper_circuit is not None and value > inst.upper_circuit + 1e-9:
            problems.append(f"{name} {value} is above today's upper circuit {_fmt(inst.upper_circuit)}")
        elif inst.lower_circuit is not None and value < inst.lower_circuit - 1e-9:
            problems.append(f"{name} {value} is below today's lower circuit {_fmt(inst.lower_circuit)}")
    trig = req.trigger_price
    if ot is OrderType.SL and trig is not None and req.price is not None:
        if req.side is Side.BUY and trig > req.price:
            problems.append(f"a buy stop's trigger {trig} must not be above its limit price {req.price}")
        if req.side is Side.SELL and trig < req.price:
            problems.append(f"a sell stop's trigger {trig} must not be below its limit price {req.price}")
    if ot in (OrderType.SL, OrderType.SL_M) and trig is not None and last_price is not None:
        if req.side is Side.BUY and trig <= last_price:
            problems.append(f"a buy stop's trigger {trig} must be above the last price {last_price} (it would fire at once)")
        if req.side is Side.SELL and trig >= last_price:
            problems.append(f"a sell stop's trigger {trig} must be below the last price {last_price} (it would fire at once)")
    allowed = _PRODUCTS[inst.segment.is_derivative]
    if req.product not in allowed:
        names = " or ".join(sorted(p.value for p in allowed))
        problems.append(f"product {req.product} is not allowed for {inst.segment}; use {names}")
    if req.tag is not None and (not req.tag or len(req.tag) > 25 or not req.tag.replace("-", "").replace("_", "").isalnum()):
        problems.append(f"tag {req.tag!r} must be 1-25 letters, digits, '-' or '_'")
    if problems:
        raise InvalidOrder(f"{req.side} {req.quantity} {inst.symbol} not sent", problems)


def validate_gtt(req: GttRequest, *, last_price: float) -> None:
    """Refuse a GTT whose legs cannot be right, relative to the last price.

    SINGLE: the trigger must differ from the last price (its side decides whether it fires
    on a rise or a fall). OCO: exit orders for a position, so for SELL the target trigger is
    above the last price and the stop below; for BUY the reverse.
    """
    inst = req.instrument
    problems: list[str] = []
    expected = 1 if req.kind is GttKind.SINGLE else 2
    if len(req.legs) != expected:
        raise InvalidOrder(f"a {req.kind} GTT has {expected} leg(s), got {len(req.legs)}")
    for i, leg in enumerate(req.legs):
        label = "trigger" if req.kind is GttKind.SINGLE else ("target" if i == 0 else "stop")
        order_type = OrderType.LIMIT if leg.price is not None else OrderType.MARKET
        try:
            validate_order(OrderRequest(inst, req.side, leg.quantity, order_type, req.product, leg.price))
        except InvalidOrder as exc:
            problems.extend(f"{label} leg: {p}" for p in (exc.problems or [str(exc)]))
        if not (leg.trigger_price > 0) or not on_tick(leg.trigger_price, inst.tick_size):
            problems.append(f"{label} trigger {leg.trigger_price} must be positive and on the tick size {inst.tick_size}")
    if req.kind is GttKind.SINGLE:
        if math.isclose(req.legs[0].trigger_price, last_price):
            problems.append(f"trigger {req.legs[0].trigger_price} equals the last price; it would fire at once")
    else:
        target, stop = req.legs
        above, below = (target, stop) if req.side is Side.SELL else (stop, target)
        if not above.trigger_price > last_price:
            which = "target" if req.side is Side.SELL else "stop"
            problems.append(f"the {which} trigger {above.trigger_price} must be above the last price {last_price}")
        if not below.trigger_price < last_price:
            which = "stop" if req.side is Side.SELL else "target"
            problems.append(f"the {which} trigger {below.trigger_price} must be below the last price {last_price}")
    if problems:
        raise InvalidOrder(f"{req.kind} GTT on {inst.symbol} not sent", problems)


# ---------------------------------------------------------------------- the protocol


@runtime_checkable
class Broker(Protocol):
    """What every broker does. All methods are required; errors are ``BrokerError`` subclasses.

    ``place_order`` validates first (``InvalidOrder``: nothing sent). Order and GTT ids are
    the broker's. ``history`` returns a candle frame (UTC instants, IST index) for bars that
    have closed.
    """

    name: str
    live: bool

    def place_order(self, req: OrderRequest) -> Order: ...
    def modify_order(self, order_id: str, *, quantity: int | None = None, price: float | None = None,
                     trigger_price: float | None = None, order_type: OrderType | None = None) -> Order: ...
    def cancel_order(self, order_id: str) -> Order: ...
    def orders(self) -> list[Order]: ...
    def order(self, order_id: str) -> Order: ...
    def order_by_tag(self, tag: str) -> Order | None: ...
    def trades(self) -> list[Trade]: ...
    def positions(self) -> list[Position]: ...
    def holdings(self) -> list[Holding]: ...
    def funds(self) -> Funds: ...
    def quote(self, instruments: list[Instrument]) -> dict[str, Quote]: ...
    def history(self, instrument: Instrument, timeframe: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame: ...
    def place_gtt(self, req: GttRequest) -> Gtt: ...
    def modify_gtt(self, gtt_id: str, req: GttRequest) -> Gtt: ...
    def cancel_gtt(self, gtt_id: str) -> None: ...
    def gtts(self) -> list[Gtt]: ...
    def instruments(self) -> list[Instrument]: ...

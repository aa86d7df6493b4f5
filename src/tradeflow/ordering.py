"""Turn what a person types (symbol, side, lots, type, prices) into checked broker requests.

The CLI and the widget panels call these, so "2 lots of NIFTY futures at 24,000.05" means
the same thing everywhere: quantities are lots × the master's lot size, and every request
passes the shared pre-trade validation before a broker sees it.
"""

from __future__ import annotations

from .brokers.base import (
    GttKind, GttLeg, GttRequest, Instrument, InvalidOrder, OrderRequest, OrderType, Product, Side, Validity,
    validate_gtt, validate_order,
)

__all__ = ["order_request", "gtt_request", "parse_enum"]


def parse_enum(enum_cls, value: str, what: str):
    """``value`` as a member of ``enum_cls`` (case-insensitive, '-' = '_'), or a clear error."""
    key = str(value).strip().upper().replace("-", "_")
    try:
        return enum_cls(key)
    except ValueError:
        names = ", ".join(m.value.lower() for m in enum_cls)
        raise InvalidOrder(f"unknown {what} {value!r}: use one of {names}") from None


def order_request(
    instrument: Instrument,
    side: str,
    lots: int,
    order_type: str = "market",
    *,
    product: str | None = None,
    price: float | None = None,
    trigger: float | None = None,
    validity: str = "day",
    tag: str | None = None,
    last_price: float | None = None,
) -> OrderRequest:
    """A validated order for ``lots`` lots; product defaults to INTRADAY."""
    if not isinstance(lots, int) or lots <= 0:
        raise InvalidOrder(f"lots must be a positive whole number, got {lots!r}")
    req = OrderRequest(
        instrument=instrument,
        side=parse_enum(Side, side, "side"),
        quantity=lots * instrument.lot_size,
        order_type=parse_enum(OrderType, order_type, "order type"),
        product=parse_enum(Product, product or "intraday", "product"),
        price=price,
        trigger_price=trigger,
        validity=parse_enum(Validity, validity, "validity"),
        tag=tag,
    )
    validate_order(req, last_price=last_price)
    return req


def gtt_request(
    instrument: Instrument,
    side: str,
    lots: int,
    *,
    kind: str = "single",
    trigger: float,
    price: float | None = None,
    stop_trigger: float | None = None,
    stop_price: float | None = None,
    product: str = "delivery",
    last_price: float,
    tag: str | None = None,
) -> GttRequest:
    """A validated GTT: SINGLE (``trigger``/``price``) or OCO (target ``trigger``/``price`` and stop)."""
    gkind = parse_enum(GttKind, kind, "GTT kind")
    qty = lots * instrument.lot_size
    legs = [GttLeg(trigger, price, qty)]
    if gkind is GttKind.OCO:
        if stop_trigger is None:
            raise InvalidOrder("an OCO GTT needs a stop trigger (--stop-trigger)")
        legs.append(GttLeg(stop_trigger, stop_price, qty))
    req = GttRequest(instrument, parse_enum(Side, side, "side"), gkind, tuple(legs), parse_enum(Product, product, "product"), tag)
    validate_gtt(req, last_price=last_price)
    return req

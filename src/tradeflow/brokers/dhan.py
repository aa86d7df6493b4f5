"""Dhan (DhanHQ API v2) behind the one broker protocol, through the ``dhanhq`` 2.3 SDK.

``DhanBroker`` speaks :class:`tradeflow.brokers.base.Broker`: orders, order book, trades,
positions, holdings, funds, quotes, candles and GTTs (Dhan "forever orders"). Nothing it
returns is an SDK type or the SDK's ``{status, remarks, data}`` envelope.

Translation happens here, through explicit tables (ours ↔ Dhan):

==============  ===============================================================
segment         NSE_EQ↔NSE_EQ, BSE_EQ↔BSE_EQ, NSE_FNO↔NSE_FNO, BSE_FNO↔BSE_FNO,
                NSE_IDX/BSE_IDX→IDX_I (an IDX_I reply is resolved by security id)
side            BUY↔BUY, SELL↔SELL
product         INTRADAY↔INTRADAY, DELIVERY↔CNC, MARGIN↔MARGIN
order type      MARKET↔MARKET, LIMIT↔LIMIT, SL↔STOP_LOSS, SL_M↔STOP_LOSS_MARKET
validity        DAY↔DAY, IOC↔IOC
order status    TRANSIT→PENDING (not at the exchange yet), PENDING→OPEN (resting),
                PART_TRADED→PARTIALLY_FILLED, TRADED→FILLED, CANCELLED, REJECTED,
                EXPIRED; the super/forever-only statuses (CLOSED, TRIGGERED, CONFIRM)
                are refused in the order book
GTT             SINGLE↔SINGLE, OCO↔OCO; OCO first leg = target, second = stop;
                product DELIVERY→CNC, MARGIN→MARGIN (INTRADAY refused: a GTT outlives
                the day); status PENDING/CONFIRM/TRANSIT→ACTIVE, TRIGGERED/TRADED→
                TRIGGERED, CANCELLED, REJECTED, EXPIRED
==============  ===============================================================

A value missing from a table raises :class:`BrokerError` naming it; nothing is guessed.

Errors: DH-901 and 807/808/809 (and 810) → :class:`SessionExpired`; DH-904, 805 and
HTTP 429 → :class:`RateLimited`; DH-905/906 and 811–814 → :class:`OrderRejected` (with
Dhan's code and message); DH-908/909/910, 800, HTTP 5xx, timeouts, connection errors and
non-JSON replies → :class:`BrokerUnavailable`.

Calls are throttled by the process-wide token buckets of :mod:`.ratelimit` (orders
10/s, history 5/s, quotes 1/s, other 20/s). Reads retry with exponential backoff on
``RateLimited`` and ``BrokerUnavailable``; writes are never retried. A placement whose
outcome is unknown (timeout, 5xx) is looked up by its tag (``correlationId``) instead.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import tenacity
from pydantic import SecretStr

from ..config import broker_settings
from ..timeframes import Timeframe
from .base import (
    BrokerError,
    BrokerUnavailable,
    Funds,
    Gtt,
    GttKind,
    GttLeg,
    GttRequest,
    Holding,
    Instrument,
    InstrumentKind,
    InvalidOrder,
    OptionType,
    Order,
    OrderRejected,
    OrderRequest,
    OrderStatus,
    OrderType,
    Position,
    Product,
    Quote,
    RateLimited,
    Segment,
    SessionExpired,
    Side,
    Trade,
    Validity,
    advance,
    validate_gtt,
    validate_order,
)
from .ratelimit import TokenBucket, bucket

__all__ = ["DhanBroker"]

log = logging.getLogger(__name__)

_IST = "Asia/Kolkata"
_BROKER = "dhan"

# ---------------------------------------------------------------------- mapping tables

_SEGMENT_TO_DHAN: dict[Segment, str] = {
    Segment.NSE_EQ: "NSE_EQ",
    Segment.BSE_EQ: "BSE_EQ",
    Segment.NSE_FNO: "NSE_FNO",
    Segment.BSE_FNO: "BSE_FNO",
    Segment.NSE_IDX: "IDX_I",
    Segment.BSE_IDX: "IDX_I",
}
_SEGMENT_FROM_DHAN: dict[str, Segment] = {
    "NSE_EQ": Segment.NSE_EQ,
    "BSE_EQ": Segment.BSE_EQ,
    "NSE_FNO": Segment.NSE_FNO,
    "BSE_FNO": Segment.BSE_FNO,
}
"""IDX_I is not here: it stands for both index segments and is resolved by security id."""

_HOLDING_EXCHANGE: dict[str, Segment] = {"NSE": Segment.NSE_EQ, "BSE": Segment.BSE_EQ, "ALL": Segment.NSE_EQ}
"""Holdings carry an exchange, not a segment; "ALL" (listed on both) is read as NSE."""

_SIDE_TO_DHAN: dict[Side, str] = {Side.BUY: "BUY", Side.SELL: "SELL"}
_SIDE_FROM_DHAN: dict[str, Side] = {v: k for k, v in _SIDE_TO_DHAN.items()}

_PRODUCT_TO_DHAN: dict[Product, str] = {Product.INTRADAY: "INTRADAY", Product.DELIVERY: "CNC", Product.MARGIN: "MARGIN"}
_PRODUCT_FROM_DHAN: dict[str, Product] = {v: k for k, v in _PRODUCT_TO_DHAN.items()}

_ORDER_TYPE_TO_DHAN: dict[OrderType, str] = {
    OrderType.MARKET: "MARKET",
    OrderType.LIMIT: "LIMIT",
    OrderType.SL: "STOP_LOSS",
    OrderType.SL_M: "STOP_LOSS_MARKET",
}
_ORDER_TYPE_FROM_DHAN: dict[str, OrderType] = {v: k for k, v in _ORDER_TYPE_TO_DHAN.items()}

_VALIDITY_TO_DHAN: dict[Validity, str] = {Validity.DAY: "DAY", Validity.IOC: "IOC"}
_VALIDITY_FROM_DHAN: dict[str, Validity] = {v: k for k, v in _VALIDITY_TO_DHAN.items()}

_STATUS_FROM_DHAN: dict[str, OrderStatus] = {
    "TRANSIT": OrderStatus.PENDING,  # did not reach the exchange yet
    "PENDING": OrderStatus.OPEN,  # at the exchange, awaiting execution
    "PART_TRADED": OrderStatus.PARTIALLY_FILLED,
    "TRADED": OrderStatus.FILLED,
    "CANCELLED": OrderStatus.CANCELLED,
    "REJECTED": OrderStatus.REJECTED,
    "EXPIRED": OrderStatus.EXPIRED,
}
_NOT_ORDER_STATUSES = {"CLOSED": "a super-order status", "TRIGGERED": "a super-order status", "CONFIRM": "a forever-order status"}

_KIND_TO_DHAN: dict[InstrumentKind, str] = {k: k.value for k in InstrumentKind}
"""Dhan's chart ``instrument`` names are ours: EQUITY, INDEX, FUTIDX, FUTSTK, OPTIDX, OPTSTK."""

_OPTION_FROM_DHAN: dict[str, OptionType] = {"CALL": OptionType.CE, "PUT": OptionType.PE, "CE": OptionType.CE, "PE": OptionType.PE}

_GTT_KIND_TO_DHAN: dict[GttKind, str] = {GttKind.SINGLE: "SINGLE", GttKind.OCO: "OCO"}
_GTT_KIND_FROM_DHAN: dict[str, GttKind] = {v: k for k, v in _GTT_KIND_TO_DHAN.items()}
_GTT_PRODUCT_TO_DHAN: dict[Product, str] = {Product.DELIVERY: "CNC", Product.MARGIN: "MARGIN"}
_GTT_PRODUCT_FROM_DHAN: dict[str, Product] = {"CNC": Product.DELIVERY, "MARGIN": Product.MARGIN, "INTRADAY": Product.INTRADAY}
_GTT_STATUS_FROM_DHAN: dict[str, str] = {
    "PENDING": "ACTIVE",
    "CONFIRM": "ACTIVE",
    "TRANSIT": "ACTIVE",
    "TRIGGERED": "TRIGGERED",
    "TRADED": "TRIGGERED",
    "CANCELLED": "CANCELLED",
    "REJECTED": "REJECTED",
    "EXPIRED": "EXPIRED",
}
_GTT_STATUS_RANK = {"TRIGGERED": 0, "REJECTED": 1, "EXPIRED": 2, "CANCELLED": 3, "ACTIVE": 4}
_GTT_FIRST_LEGS = {"TARGET_LEG", "ENTRY_LEG", None, ""}
_GTT_SECOND_LEGS = {"STOP_LOSS_LEG"}

_INTERVALS = (1, 5, 15, 25, 60)
_MAX_INTRADAY_WINDOW = pd.Timedelta(days=90)
_MAX_QUOTES = 1000

DEFAULT_RATES: dict[str, float] = {"orders": 10.0, "history": 5.0, "quotes": 1.0, "other": 20.0}
"""Dhan's published per-second limits by class of call."""

# ---------------------------------------------------------------------- error codes

_SESSION_CODES = {"901", "807", "808", "809"}
_RATE_CODES = {"904", "805"}
_REJECT_CODES = {"905", "906", "811", "812", "813", "814"}
_UNAVAILABLE_CODES = {"908", "909", "910", "800"}
_ACCESS_CODES = {
    "902": "the account has no Data API subscription or no trading access: enable it on web.dhan.co",
    "806": "the account has no Data API subscription: subscribe on web.dhan.co",
    "903": "the account or segment is not enabled for this: check the segment activation on web.dhan.co",
    "907": "Dhan had no data for the request (check the security id, dates and range)",
    "804": "too many instruments in one request",
}


def _code_number(code: Any) -> str:
    text = str(code or "").strip().upper()
    return text[3:] if text.startswith("DH-") else text


def _unknown(kind: str, value: Any, where: str) -> BrokerError:
    return BrokerError(
        f"Dhan reported {kind} {value!r} in {where}, which tradeflow does not map; nothing was guessed: "
        "check the order in the Dhan app and report the value so the mapping can be extended"
    )


def _lookup(table: Mapping[str, Any], value: Any, kind: str, where: str) -> Any:
    try:
        return table[value]
    except (KeyError, TypeError):
        raise _unknown(kind, value, where) from None


def _new_tag() -> str:
    """A short alphanumeric correlation id (18 characters)."""
    return "tf" + secrets.token_hex(8)


def _ist_time(value: Any) -> pd.Timestamp | None:
    """``"YYYY-MM-DD HH:MM:SS"`` (or ``DD/MM/YYYY HH:MM:SS``) in IST → tz-aware; blanks and sentinels → None."""
    if value in (None, "", "NA", "N/A"):
        return None
    text = str(value).strip()
    try:
        if "/" in text:
            parsed = dt.datetime.strptime(text, "%d/%m/%Y %H:%M:%S")
        else:
            parsed = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise BrokerError(f"Dhan sent a time {text!r} tradeflow cannot read") from exc
    if parsed.year < 1971:  # "0001-01-01" sentinels
        return None
    ts = pd.Timestamp(parsed)
    return ts.tz_localize(_IST) if ts.tzinfo is None else ts.tz_convert(_IST)


def _num(row: Mapping[str, Any], key: str, default: float = 0.0) -> float:
    value = row.get(key)
    if value in (None, ""):
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        raise BrokerError(f"Dhan sent {key}={value!r}, which is not a number") from None


def _int(row: Mapping[str, Any], key: str, default: int = 0) -> int:
    value = _num(row, key, float(default))
    if not value.is_integer():
        raise BrokerError(f"Dhan sent {key}={row.get(key)!r}, which is not a whole number")
    return int(value)


def _positive(value: float | None) -> float | None:
    return value if value is not None and value > 0 else None


def _rebuild(exc: BrokerError, message: str) -> BrokerError:
    """The same kind of error with a fuller message (for a partly done multi-step call)."""
    if isinstance(exc, OrderRejected):
        return OrderRejected(message, code=exc.code, broker_message=exc.broker_message)
    if isinstance(exc, InvalidOrder):
        return InvalidOrder(message)
    return type(exc)(message)


# ---------------------------------------------------------------------- the broker


class DhanBroker:
    """Live trading on Dhan through the ``dhanhq`` SDK, speaking the tradeflow broker protocol.

    Arguments (all optional; defaults come from :func:`tradeflow.config.broker_settings`,
    i.e. the environment or ``.env``):

    - ``client_id``, ``access_token``: Dhan credentials (``DHAN_CLIENT_ID``,
      ``DHAN_ACCESS_TOKEN``). Missing ones raise :class:`SessionExpired` naming them.
    - ``base_url``: REST root (``DHAN_BASE_URL``, default ``https://api.dhan.co/v2``).
    - ``timeout``: seconds for every HTTP call (``HTTP_TIMEOUT``, default 10).
    - ``instruments``: the instrument master (a list, or a dict whose values are
      instruments); replies are resolved to these by Dhan security id.

    Keyword-only tuning (tests make these small): ``rates`` overrides the per-second
    bucket rates (``orders``, ``history``, ``quotes``, ``other``; buckets are shared
    process-wide, so the first broker to use a class sets its rate); ``retry_attempts``
    and ``retry_wait`` (seconds, doubled per retry) for reads; ``tag_lookups`` and
    ``tag_lookup_wait`` for finding an order whose placement timed out; ``clock`` returns
    "now" (a tz-aware Timestamp) to decide which bars have closed.

    The access token is never printed, logged or put into an error message.
    """

    name = "dhan"
    live = True

    def __init__(
        self,
        client_id: str | None = None,
        access_token: str | None = None,
        *,
        base_url: str | None = None,
        timeout: float | None = None,
        instruments: "list[Instrument] | dict | None" = None,
        rates: Mapping[str, float] | None = None,
        retry_attempts: int = 4,
        retry_wait: float = 0.5,
        tag_lookups: int = 3,
        tag_lookup_wait: float = 0.5,
        clock: Callable[[], pd.Timestamp] | None = None,
    ) -> None:
        cfg = broker_settings()
        client_id = client_id if client_id is not None else cfg.dhan_client_id
        if access_token is None and cfg.dhan_access_token is not None:
            access_token = cfg.dhan_access_token.get_secret_value()
        missing = [n for n, v in (("DHAN_CLIENT_ID", client_id), ("DHAN_ACCESS_TOKEN", access_token)) if not v]
        if missing:
            raise SessionExpired(
                f"Dhan credentials missing: set {' and '.join(missing)} in the environment or .env "
                "(or pass client_id= / access_token=); generate an access token on web.dhan.co"
            )
        base_url = (base_url if base_url is not None else cfg.dhan_base_url).rstrip("/")
        timeout = float(timeout if timeout is not None else cfg.http_timeout)
        if not (timeout > 0 and math.isfinite(timeout)):
            raise BrokerError(f"timeout must be a positive number of seconds, got {timeout}")
        unknown_rates = set(rates or {}) - set(DEFAULT_RATES)
        if unknown_rates:
            raise BrokerError(f"unknown rate class(es) {sorted(unknown_rates)}: use {sorted(DEFAULT_RATES)}")
        if retry_attempts < 1 or tag_lookups < 1:
            raise BrokerError("retry_attempts and tag_lookups must be at least 1")

        import dhanhq as _sdk  # imported here: the SDK is only needed by live Dhan use

        self.client_id = str(client_id)
        self.base_url = base_url
        self.timeout = timeout
        self._secret = SecretStr(str(access_token))  # masked in vars()/repr; the SDK keeps its own copy
        self._ctx = _sdk.DhanContext(self.client_id, self._secret.get_secret_value())
        http = getattr(self._ctx, "dhan_http", None)
        if http is None:  # DhanContext swallows its own exceptions
            raise BrokerError("the dhanhq SDK could not build its HTTP client; reinstall dhanhq 2.3")
        http.base_url = base_url
        http.timeout = timeout
        http.session.hooks.setdefault("response", []).append(self._record_response)
        self._http = http
        self._sdk = _sdk.dhanhq(self._ctx)
        self._local = threading.local()

        merged = {**DEFAULT_RATES, **dict(rates or {})}
        self._buckets: dict[str, TokenBucket] = {kind: bucket(_BROKER, kind, rate) for kind, rate in merged.items()}
        for kind, rate in merged.items():
            if self._buckets[kind].rate != rate:
                log.warning("dhan: the shared %s bucket already runs at %s/s; %s/s was not applied", kind,
                            self._buckets[kind].rate, rate)
        self._retry_attempts = int(retry_attempts)
        self._retry_wait = float(retry_wait)
        self._tag_lookups = int(tag_lookups)
        self._tag_lookup_wait = float(tag_lookup_wait)
        self._clock = clock

        if instruments is None:
            items: list[Instrument] = []
        elif isinstance(instruments, Mapping):
            items = list(instruments.values())
        else:
            items = list(instruments)
        bad = [i for i in items if not isinstance(i, Instrument)]
        if bad:
            raise BrokerError(f"instruments must be Instrument records, got {type(bad[0]).__name__}")
        self._instruments = items
        self._by_id: dict[tuple[Segment, str], Instrument] = {}
        for inst in items:
            sid = inst.broker_ids.get(_BROKER)
            if sid:
                self._by_id[(inst.segment, str(sid))] = inst

    def __repr__(self) -> str:
        return f"DhanBroker(client_id={self.client_id!r}, base_url={self.base_url!r}, timeout={self.timeout})"

    # ------------------------------------------------------------------ plumbing

    def _record_response(self, response, *args, **kwargs):
        self._local.http = (response.status_code, not response.content)
        return response

    def _scrub(self, text: str) -> str:
        secret = self._secret.get_secret_value()
        return text.replace(secret, "***") if secret else text

    def _now(self) -> pd.Timestamp:
        now = self._clock() if self._clock is not None else pd.Timestamp.now(tz="UTC")
        now = pd.Timestamp(now)
        return now.tz_localize(_IST) if now.tzinfo is None else now

    def _call(self, kind: str, what: str, fn: Callable[..., Any], *args: Any, retry: bool = True,
              empty_ok: bool = False, **kwargs: Any) -> Any:
        """One SDK call through the ``kind`` bucket, its envelope unwrapped (retried if a read)."""

        def attempt() -> Any:
            self._buckets[kind].acquire()
            self._local.http = None
            log.debug("dhan: %s", what)
            try:
                envelope = fn(*args, **kwargs)
            except BrokerError:
                raise
            except Exception as exc:  # the SDK raises bare Exception/ValueError for its own checks
                raise BrokerError(f"{what}: the dhanhq SDK refused the call: {self._scrub(str(exc))}") from exc
            return self._unwrap(envelope, what, empty_ok=empty_ok)

        if not retry:
            return attempt()
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type((RateLimited, BrokerUnavailable)),
            stop=tenacity.stop_after_attempt(self._retry_attempts),
            wait=tenacity.wait_exponential(multiplier=self._retry_wait, min=self._retry_wait, max=self._retry_wait * 8),
            before_sleep=lambda state: log.info("dhan: %s failed (%s); retrying", what, state.outcome.exception()),
            reraise=True,
        )
        return retrying(attempt)

    def _unwrap(self, envelope: Any, what: str, *, empty_ok: bool = False) -> Any:
        """The ``data`` of a success envelope; a failure becomes the matching ``BrokerError``."""
        if not isinstance(envelope, Mapping) or "status" not in envelope:
            raise BrokerError(f"{what}: the dhanhq SDK returned something unexpected ({type(envelope).__name__})")
        if envelope["status"] == "success":
            return envelope.get("data")
        http = getattr(self._local, "http", None)
        status_code, empty_body = http if http is not None else (None, False)
        remarks = envelope.get("remarks")
        if isinstance(remarks, Mapping):
            code = str(remarks.get("error_code") or "")
            message = self._scrub(str(remarks.get("error_message") or remarks.get("error_type") or ""))
            number = _code_number(code)
            label = f"{code}: {message}" if code else message or f"HTTP {status_code}"
            if number in _SESSION_CODES:
                raise SessionExpired(
                    f"{what}: Dhan says the session is invalid or expired ({label}); log in again / renew the "
                    "access token (generate a new one on web.dhan.co or renew it) and set DHAN_ACCESS_TOKEN"
                )
            if number == "810":
                raise SessionExpired(f"{what}: Dhan does not know this client id ({label}); check DHAN_CLIENT_ID")
            if number in _RATE_CODES or status_code == 429:
                raise RateLimited(f"{what}: Dhan is throttling requests ({label}); wait a moment and retry")
            if number in _REJECT_CODES:
                raise OrderRejected(f"{what}: Dhan refused it ({label})", code=code, broker_message=message)
            if number in _UNAVAILABLE_CODES or (status_code is not None and status_code >= 500):
                raise BrokerUnavailable(f"{what}: Dhan failed to answer ({label}); the outcome is unknown, try again shortly")
            if number in _ACCESS_CODES:
                raise BrokerError(f"{what}: {_ACCESS_CODES[number]} ({label})")
            if status_code in (401, 403):
                raise SessionExpired(f"{what}: Dhan refused the credentials ({label}); log in again / renew the access token")
            raise BrokerError(f"{what}: Dhan answered with error {label or 'without a code'} (HTTP {status_code}); nothing was guessed")
        detail = self._scrub(str(remarks or "no detail"))
        if empty_ok and status_code is not None and 200 <= status_code < 300 and empty_body:
            return None  # e.g. 202 Accepted with an empty body: a documented success
        if status_code == 429:
            raise RateLimited(f"{what}: Dhan is throttling requests (HTTP 429); wait a moment and retry")
        if status_code in (401, 403):
            raise SessionExpired(f"{what}: Dhan refused the credentials (HTTP {status_code}); log in again / renew the access token")
        if status_code == 404:
            raise BrokerError(f"{what}: Dhan has no such endpoint (HTTP 404, not JSON); check DHAN_BASE_URL ({self.base_url})")
        where = f"HTTP {status_code}, not JSON" if status_code is not None else "no HTTP answer"
        raise BrokerUnavailable(f"{what}: Dhan is unreachable or answered unusably ({where}: {detail}); try again shortly")

    # ------------------------------------------------------------------ instruments

    def instruments(self) -> list[Instrument]:
        """The instruments given to the constructor (the master is loaded elsewhere)."""
        return list(self._instruments)

    def _resolve(self, dhan_segment: Any, security_id: Any, row: Mapping[str, Any], where: str) -> Instrument:
        sid = str(security_id or "").strip()
        if not sid:
            raise BrokerError(f"Dhan sent no securityId in {where}")
        if dhan_segment == "IDX_I":
            for seg in (Segment.NSE_IDX, Segment.BSE_IDX):
                if (seg, sid) in self._by_id:
                    return self._by_id[(seg, sid)]
            raise BrokerError(
                f"Dhan sent index security id {sid} in {where}, which is not in the instruments given to "
                "DhanBroker; pass the instrument master (instruments=...) so the index can be named"
            )
        seg = _lookup(_SEGMENT_FROM_DHAN, dhan_segment, "exchange segment", where)
        inst = self._by_id.get((seg, sid))
        return inst if inst is not None else self._minimal(seg, sid, row)

    def _minimal(self, seg: Segment, sid: str, row: Mapping[str, Any]) -> Instrument:
        """An instrument we were not told about: its trading symbol, segment, lot 1 (log it)."""
        symbol = str(row.get("tradingSymbol") or "").strip() or f"DHAN:{sid}"
        option = row.get("drvOptionType")
        option_type = _OPTION_FROM_DHAN.get(str(option).upper()) if option else None
        if seg.is_derivative:
            kind = InstrumentKind.OPTSTK if option_type else InstrumentKind.FUTSTK
        else:
            kind = InstrumentKind.EQUITY
        expiry = _ist_time(row.get("drvExpiryDate")) if seg.is_derivative else None
        strike = _positive(_num(row, "drvStrikePrice")) if option_type else None
        log.info("dhan: security %s %s (%s) is not in the instrument list; using a minimal record", seg, sid, symbol)
        return Instrument(symbol, seg, kind, lot_size=1, expiry=expiry.date() if expiry else None, strike=strike,
                          option_type=option_type, broker_ids={_BROKER: sid})

    # ------------------------------------------------------------------ orders

    def place_order(self, req: OrderRequest) -> Order:
        """Validate (``InvalidOrder``: nothing sent), then place once; never retried blindly.

        ``req.tag`` goes as Dhan's ``correlationId``; without one a short tag is made up so
        the order can be found again. If the outcome is unknown (timeout, 5xx), the order is
        looked up by its tag and returned when found; when Dhan definitely has no such order,
        ``BrokerUnavailable`` says it was not placed.
        """
        validate_order(req)
        inst = req.instrument
        security_id = inst.id_for(_BROKER)
        if req.tag is None:
            req = replace(req, tag=_new_tag())
        what = f"placing {req.side} {req.quantity} {inst.symbol} (tag {req.tag})"
        try:
            data = self._call(
                "orders", what, self._sdk.place_order, retry=False,
                security_id=str(security_id),
                exchange_segment=_SEGMENT_TO_DHAN[inst.segment],
                transaction_type=_SIDE_TO_DHAN[req.side],
                quantity=int(req.quantity),
                order_type=_ORDER_TYPE_TO_DHAN[req.order_type],
                product_type=_PRODUCT_TO_DHAN[req.product],
                price=float(req.price or 0.0),
                trigger_price=float(req.trigger_price or 0.0),
                validity=_VALIDITY_TO_DHAN[req.validity],
                tag=req.tag,
            )
        except BrokerUnavailable as exc:
            return self._recover_placement(req, exc)
        if not isinstance(data, Mapping) or not data.get("orderId"):
            return self._recover_placement(req, BrokerUnavailable(f"{what}: Dhan's reply carried no order id"))
        now = self._now()
        order = Order(str(data["orderId"]), req, OrderStatus.PENDING, history=((now, OrderStatus.PENDING),), updated_at=now)
        status = _lookup(_STATUS_FROM_DHAN, data.get("orderStatus"), "order status", f"the reply to {what}")
        log.info("dhan: placed order %s (tag %s): %s", order.order_id, req.tag, status)
        if status is OrderStatus.REJECTED:  # the reason is only in the order book
            try:
                return self.order(order.order_id)
            except BrokerError as exc:
                log.warning("dhan: order %s was rejected; its reason could not be read (%s)", order.order_id, exc)
        return advance(order, status, at=now)

    def _recover_placement(self, req: OrderRequest, cause: BrokerUnavailable) -> Order:
        tag = req.tag or ""
        log.warning("dhan: placement of tag %s has an unknown outcome (%s); looking it up", tag, cause)
        for attempt in range(self._tag_lookups):
            if attempt:
                time.sleep(self._tag_lookup_wait * 2 ** (attempt - 1))
            try:
                found = self.order_by_tag(tag)
            except BrokerError as exc:
                raise BrokerUnavailable(
                    f"placing the order tagged {tag!r} failed in transit ({cause}) and the order book could not be "
                    f"checked ({exc}): the order MAY have been placed; look for tag {tag!r} in the Dhan order book "
                    "before sending it again"
                ) from cause
            if found is not None:
                log.warning("dhan: the order tagged %s was placed after all: %s", tag, found.order_id)
                return found
        raise BrokerUnavailable(
            f"the order tagged {tag!r} was not placed: sending it failed ({cause}) and Dhan has no order with that "
            f"tag after {self._tag_lookups} lookup(s)"
        ) from cause

    def modify_order(self, order_id: str, *, quantity: int | None = None, price: float | None = None,
                     trigger_price: float | None = None, order_type: OrderType | None = None) -> Order:
        """Change an open order (unchanged fields are taken from Dhan's order book); not retried.

        The changed order is validated first (``InvalidOrder``: nothing sent). Switching to
        MARKET/SL_M drops the price, to MARKET/LIMIT the trigger.
        """
        current = self.order(order_id)
        if current.status.is_final:
            raise InvalidOrder(f"order {order_id} is {current.status}: there is nothing to modify")
        old = current.request
        new_type = OrderType(order_type) if order_type is not None else old.order_type
        new = replace(
            old,
            order_type=new_type,
            quantity=quantity if quantity is not None else old.quantity,
            price=None if new_type in (OrderType.MARKET, OrderType.SL_M) else (price if price is not None else old.price),
            trigger_price=None if new_type in (OrderType.MARKET, OrderType.LIMIT) else (
                trigger_price if trigger_price is not None else old.trigger_price),
        )
        validate_order(replace(new, tag=None))  # the tag may have been set outside tradeflow
        what = f"modifying order {order_id}"
        self._call(
            "orders", what, self._sdk.modify_order, str(order_id), _ORDER_TYPE_TO_DHAN[new.order_type], None,
            int(new.quantity), float(new.price or 0.0), float(new.trigger_price or 0.0), 0,
            _VALIDITY_TO_DHAN[new.validity], retry=False,
        )
        try:
            return self.order(order_id)
        except BrokerError as exc:
            log.warning("dhan: %s was accepted but could not be re-read (%s)", what, exc)
            return replace(current, request=new, updated_at=self._now())

    def cancel_order(self, order_id: str) -> Order:
        """Cancel, then read the order back (Dhan may answer 202 with no body: a success).

        If the cancel's outcome is unknown, the order is read: CANCELLED → returned; else
        ``BrokerUnavailable`` says what state it is in.
        """
        what = f"cancelling order {order_id}"
        try:
            self._call("orders", what, self._sdk.cancel_order, str(order_id), retry=False, empty_ok=True)
        except BrokerUnavailable as exc:
            try:
                current = self.order(order_id)
            except BrokerError as exc2:
                raise BrokerUnavailable(
                    f"{exc}; the order could not be read back either ({exc2}): check order {order_id} in the Dhan "
                    "order book before cancelling again"
                ) from exc
            if current.status is OrderStatus.CANCELLED:
                return current
            raise BrokerUnavailable(
                f"{exc}; order {order_id} is still {current.status}: cancel it again if you still want it cancelled"
            ) from exc
        try:
            return self.order(order_id)
        except BrokerError as exc:
            raise _rebuild(exc, f"Dhan accepted the cancel of order {order_id}, but reading it back failed: {exc}") from exc

    def orders(self) -> list[Order]:
        """Today's order book."""
        data = self._call("other", "reading the order book", self._sdk.get_order_list)
        return [self._order_from_row(row) for row in self._rows(data, "the order book")]

    def order(self, order_id: str) -> Order:
        what = f"reading order {order_id}"
        data = self._call("other", what, self._sdk.get_order_by_id, str(order_id))
        rows = self._rows(data, what)
        if not rows:
            raise OrderRejected(f"{what}: Dhan has no such order", code="", broker_message="")
        return self._order_from_row(rows[0])

    def order_by_tag(self, tag: str) -> Order | None:
        """The order placed with ``correlationId == tag``, or None when Dhan has none.

        "None" means a clean answer only: an empty reply, or Dhan's input error (DH-905,
        as for an unknown order id); anything else raises, so a caller never mistakes
        "could not check" for "not there".
        """
        what = f"looking up the order tagged {tag!r}"
        try:
            data = self._call("other", what, self._sdk.get_order_by_correlationID, str(tag))
        except OrderRejected as exc:
            if _code_number(exc.code) == "905":
                return None
            raise
        rows = self._rows(data, what)
        if not rows:
            return None
        orders = [self._order_from_row(row) for row in rows]
        if len(orders) > 1:
            log.warning("dhan: %d orders carry tag %s; returning the latest", len(orders), tag)
        return max(orders, key=lambda o: (o.history[0][0] if o.history else pd.Timestamp.min.tz_localize("UTC")))

    @staticmethod
    def _rows(data: Any, where: str) -> list[Mapping[str, Any]]:
        if data in (None, "", {}, []):
            return []
        if isinstance(data, Mapping):
            return [data]
        if isinstance(data, list) and all(isinstance(r, Mapping) for r in data):
            return data
        raise BrokerError(f"{where}: Dhan sent {type(data).__name__} where records were expected")

    def _order_from_row(self, row: Mapping[str, Any]) -> Order:
        order_id = str(row.get("orderId") or "")
        where = f"order {order_id}"
        raw_status = row.get("orderStatus")
        if raw_status in _NOT_ORDER_STATUSES:
            raise BrokerError(
                f"Dhan reported status {raw_status!r} ({_NOT_ORDER_STATUSES[raw_status]}) for {where}; tradeflow "
                "manages plain orders only and does not guess what it means for one: check it in the Dhan app"
            )
        status = _lookup(_STATUS_FROM_DHAN, raw_status, "order status", where)
        inst = self._resolve(row.get("exchangeSegment"), row.get("securityId"), row, where)
        order_type = _lookup(_ORDER_TYPE_FROM_DHAN, row.get("orderType"), "order type", where)
        price = _num(row, "price") if order_type in (OrderType.LIMIT, OrderType.SL) else None
        trigger = _num(row, "triggerPrice") if order_type in (OrderType.SL, OrderType.SL_M) else None
        tag = row.get("correlationId") or None
        req = OrderRequest(
            instrument=inst,
            side=_lookup(_SIDE_FROM_DHAN, row.get("transactionType"), "transaction type", where),
            quantity=_int(row, "quantity"),
            order_type=order_type,
            product=_lookup(_PRODUCT_FROM_DHAN, row.get("productType"), "product type", where),
            price=price,
            trigger_price=trigger,
            validity=_lookup(_VALIDITY_FROM_DHAN, row.get("validity"), "validity", where),
            tag=str(tag) if tag is not None else None,
        )
        created = _ist_time(row.get("createTime")) or _ist_time(row.get("updateTime")) or self._now()
        updated = _ist_time(row.get("updateTime")) or _ist_time(row.get("exchangeTime")) or created
        base = Order(order_id, req, OrderStatus.PENDING, history=((created, OrderStatus.PENDING),), updated_at=created)
        return advance(
            base, status, at=updated,
            filled_quantity=_int(row, "filledQty"),
            average_price=_positive(_num(row, "averageTradedPrice")),
            message=str(row.get("omsErrorDescription") or ""),
            exchange_order_id=str(row.get("exchangeOrderId") or ""),
        )

    # ------------------------------------------------------------------ portfolio

    def trades(self) -> list[Trade]:
        """Today's fills."""
        data = self._call("other", "reading the trade book", self._sdk.get_trade_book)
        out = []
        for row in self._rows(data, "the trade book"):
            order_id = str(row.get("orderId") or "")
            where = f"a trade of order {order_id}"
            time_ = _ist_time(row.get("exchangeTime")) or _ist_time(row.get("updateTime")) or _ist_time(row.get("createTime"))
            qty = _int(row, "tradedQuantity")
            price = _num(row, "tradedPrice")
            trade_id = row.get("exchangeTradeId") or f"{order_id}:{row.get('exchangeTime')}:{qty}:{price}"
            out.append(Trade(
                trade_id=str(trade_id),
                order_id=order_id,
                instrument=self._resolve(row.get("exchangeSegment"), row.get("securityId"), row, where),
                side=_lookup(_SIDE_FROM_DHAN, row.get("transactionType"), "transaction type", where),
                quantity=qty,
                price=price,
                time=time_,
            ))
        return out

    def positions(self) -> list[Position]:
        """Net positions (quantity > 0 long, < 0 short, 0 closed today)."""
        data = self._call("other", "reading positions", self._sdk.get_positions)
        out = []
        for row in self._rows(data, "positions"):
            where = f"the position in {row.get('tradingSymbol')!r}"
            qty = _int(row, "netQty")
            avg = _num(row, "buyAvg") if qty > 0 else _num(row, "sellAvg") if qty < 0 else 0.0
            out.append(Position(
                instrument=self._resolve(row.get("exchangeSegment"), row.get("securityId"), row, where),
                product=_lookup(_PRODUCT_FROM_DHAN, row.get("productType"), "product type", where),
                quantity=qty,
                average_price=avg,
                realized_pnl=_num(row, "realizedProfit"),
                unrealized_pnl=_num(row, "unrealizedProfit"),
            ))
        return out

    def holdings(self) -> list[Holding]:
        """Demat holdings."""
        data = self._call("other", "reading holdings", self._sdk.get_holdings)
        out = []
        for row in self._rows(data, "holdings"):
            where = f"the holding of {row.get('tradingSymbol')!r}"
            seg = _lookup(_HOLDING_EXCHANGE, row.get("exchange"), "holding exchange", where)
            out.append(Holding(
                instrument=self._resolve(_SEGMENT_TO_DHAN[seg], row.get("securityId"), row, where),
                quantity=_int(row, "totalQty"),
                average_price=_num(row, "avgCostPrice"),
                last_price=_positive(_num(row, "lastTradedPrice")),
            ))
        return out

    def funds(self) -> Funds:
        """Available (``availabelBalance``, sic), used (``utilizedAmount``), total (``sodLimit``)."""
        data = self._call("other", "reading fund limits", self._sdk.get_fund_limits)
        rows = self._rows(data, "fund limits")
        if not rows:
            raise BrokerError("reading fund limits: Dhan sent no data")
        row = rows[0]
        key = "availabelBalance" if "availabelBalance" in row else "availableBalance"
        if key not in row:
            raise BrokerError("reading fund limits: Dhan's reply has no available balance field")
        return Funds(available=_num(row, key), used=_num(row, "utilizedAmount"),
                     total=_num(row, "sodLimit") if row.get("sodLimit") is not None else None)

    # ------------------------------------------------------------------ market data

    def quote(self, instruments: list[Instrument]) -> dict[str, Quote]:
        """Full quotes keyed by symbol, up to 1000 instruments per request (more are split).

        Instruments Dhan sends nothing for are left out (and logged).
        """
        wanted: dict[tuple[str, str], Instrument] = {}
        by_symbol: dict[str, Instrument] = {}
        for inst in instruments:
            key = (_SEGMENT_TO_DHAN[inst.segment], str(inst.id_for(_BROKER)))
            prior = by_symbol.get(inst.symbol)
            if prior is not None and prior.segment != inst.segment:
                raise BrokerError(f"{inst.symbol} was asked for in {prior.segment} and {inst.segment}: quote them in separate calls")
            by_symbol[inst.symbol] = inst
            wanted[key] = inst
        out: dict[str, Quote] = {}
        keys = list(wanted)
        for start in range(0, len(keys), _MAX_QUOTES):
            chunk = keys[start:start + _MAX_QUOTES]
            body: dict[str, list[int]] = {}
            for seg, sid in chunk:
                try:
                    body.setdefault(seg, []).append(int(sid))
                except ValueError:
                    raise InvalidOrder(f"{wanted[(seg, sid)].symbol}: Dhan security id {sid!r} is not a number") from None
            data = self._call("quotes", f"quoting {len(chunk)} instrument(s)", self._sdk.quote_data, body)
            inner = data.get("data") if isinstance(data, Mapping) else None
            if not isinstance(inner, Mapping):
                raise BrokerError("quoting: Dhan's reply has no data")
            for seg, sid in chunk:
                inst = wanted[(seg, sid)]
                row = (inner.get(seg) or {}).get(sid)
                if row is None:
                    log.warning("dhan: no quote came back for %s (%s %s)", inst.symbol, seg, sid)
                    continue
                out[inst.symbol] = self._quote_from_row(inst, row)
        return out

    @staticmethod
    def _quote_from_row(inst: Instrument, row: Mapping[str, Any]) -> Quote:
        ohlc = row.get("ohlc") or {}
        depth = row.get("depth") or {}
        buy = depth.get("buy") or []
        sell = depth.get("sell") or []
        return Quote(
            instrument=inst,
            last_price=_num(row, "last_price"),
            time=_ist_time(row.get("last_trade_time")),
            bid=_positive(_num(buy[0], "price")) if buy else None,
            ask=_positive(_num(sell[0], "price")) if sell else None,
            open=_positive(_num(ohlc, "open")),
            high=_positive(_num(ohlc, "high")),
            low=_positive(_num(ohlc, "low")),
            close=_positive(_num(ohlc, "close")),
            volume=_num(row, "volume") if row.get("volume") is not None else None,
            oi=_num(row, "oi") if row.get("oi") is not None else None,
            upper_circuit=_positive(_num(row, "upper_circuit_limit")),
            lower_circuit=_positive(_num(row, "lower_circuit_limit")),
        )

    def history(self, instrument: Instrument, timeframe: str, start: pd.Timestamp, end: pd.Timestamp, *,
                oi: bool = False) -> pd.DataFrame:
        """Closed bars starting in ``[start, end)``: an IST ``ts`` index, float columns
        ``open, high, low, close, volume`` (and ``oi`` when asked).

        Timeframes: ``1m, 5m, 15m, 25m, 60m`` (``1h``) from ``/charts/intraday``, fetched in
        windows of at most 90 days; ``1d`` from ``/charts/historical`` (``toDate``
        exclusive). Naive bounds are read as IST. A bar still in progress is not returned.
        """
        try:
            tf = Timeframe.parse(timeframe)
        except Exception as exc:
            raise BrokerError(f"timeframe {timeframe!r}: {exc}") from exc
        if not tf.is_daily and tf.minutes not in _INTERVALS:
            raise BrokerError(
                f"Dhan serves 1m, 5m, 15m, 25m, 60m and 1d bars, not {tf}: fetch 1m (or 5m/15m) and resample"
            )
        start, end = self._instant(start), self._instant(end)
        now = self._now()
        security_id = str(instrument.id_for(_BROKER))
        segment = _SEGMENT_TO_DHAN[instrument.segment]
        kind = _KIND_TO_DHAN[instrument.kind]
        frames: list[pd.DataFrame] = []
        if tf.is_daily:
            first = start.tz_convert(_IST).date()
            last = (min(end, now) - pd.Timedelta(microseconds=1)).tz_convert(_IST).date()
            if start < end and first <= last:
                to_date = last + dt.timedelta(days=1)  # exclusive
                what = f"reading daily bars of {instrument.symbol} {first}..{last}"
                data = self._call("history", what, self._sdk.historical_daily_data, security_id, segment, kind,
                                  first.isoformat(), to_date.isoformat(), 0, oi)
                frames.append(self._candles(data, what, oi))
        else:
            stop = min(end, now)
            cursor = start
            while cursor < stop:
                nxt = min(cursor + _MAX_INTRADAY_WINDOW, stop)
                lo = cursor.tz_convert(_IST).strftime("%Y-%m-%d %H:%M:%S")
                hi = nxt.tz_convert(_IST).strftime("%Y-%m-%d %H:%M:%S")
                what = f"reading {tf} bars of {instrument.symbol} {lo}..{hi}"
                data = self._call("history", what, self._sdk.intraday_minute_data, security_id, segment, kind,
                                  lo, hi, tf.minutes, oi)
                frames.append(self._candles(data, what, oi))
                cursor = nxt
        columns = ["open", "high", "low", "close", "volume"] + (["oi"] if oi else [])
        frames = [f for f in frames if len(f)]
        if frames:
            out = pd.concat(frames)
            out = out[~out.index.duplicated(keep="last")].sort_index()
        else:
            out = pd.DataFrame({c: pd.Series(dtype="float64") for c in columns},
                               index=pd.DatetimeIndex([], tz=_IST, name="ts"))
        out = out.loc[(out.index >= start) & (out.index < end)]
        out = out.loc[self._closed(out.index, tf, now)]
        out.attrs["source"] = "dhan"
        return out

    @staticmethod
    def _instant(value: Any) -> pd.Timestamp:
        ts = pd.Timestamp(value)
        return (ts.tz_localize(_IST) if ts.tzinfo is None else ts).tz_convert("UTC")

    @staticmethod
    def _closed(index: pd.DatetimeIndex, tf: Timeframe, now: pd.Timestamp) -> np.ndarray:
        """Which bars had closed by ``now``: a daily bar at its session's 15:30 close, an
        intraday bar at its start + length (cut at 15:30 for the session's last bar)."""
        if not len(index):
            return np.zeros(0, dtype=bool)
        local = index.tz_convert(_IST)
        day_close = local.normalize() + pd.Timedelta(hours=15, minutes=30)
        if tf.is_daily:
            ends = day_close
        else:
            ends = local + pd.Timedelta(minutes=tf.minutes)
            cut = (local < day_close) & (ends > day_close)
            ends = ends.where(~cut, day_close)
        return np.asarray(ends <= now.tz_convert(_IST), dtype=bool)

    @staticmethod
    def _candles(data: Any, what: str, oi: bool) -> pd.DataFrame:
        columns = ["open", "high", "low", "close", "volume"] + (["oi"] if oi else [])
        if data in (None, "", {}, []):
            data = {}
        if not isinstance(data, Mapping):
            raise BrokerError(f"{what}: Dhan sent {type(data).__name__} where candle arrays were expected")
        stamps = list(data.get("timestamp") or [])
        arrays = {c: list(data.get("open_interest" if c == "oi" else c) or []) for c in columns}
        if oi and not arrays["oi"] and stamps:
            arrays["oi"] = [0.0] * len(stamps)
        bad = [c for c, v in arrays.items() if len(v) != len(stamps)]
        if bad:
            raise BrokerError(f"{what}: Dhan's candle arrays have different lengths ({', '.join(bad)} vs timestamp)")
        index = pd.DatetimeIndex(pd.to_datetime(pd.Series(stamps, dtype="float64"), unit="s", utc=True), name="ts")
        frame = pd.DataFrame({c: pd.Series(arrays[c], dtype="float64").to_numpy() for c in columns},
                             index=index.tz_convert(_IST))
        return frame

    # ------------------------------------------------------------------ GTT (forever orders)

    def _last_price(self, inst: Instrument) -> float:
        quote = self.quote([inst]).get(inst.symbol)
        if quote is None or not quote.last_price > 0:
            raise BrokerUnavailable(f"no last price for {inst.symbol} from Dhan: cannot check the GTT triggers; try again")
        return quote.last_price

    def _gtt_fields(self, req: GttRequest, last_price: float | None) -> tuple[str, str, str]:
        validate_gtt(req, last_price=last_price if last_price is not None else self._last_price(req.instrument))
        if req.product not in _GTT_PRODUCT_TO_DHAN:
            raise InvalidOrder(
                f"{req.kind} GTT on {req.instrument.symbol} not sent",
                [f"product {req.product} cannot be used: a Dhan forever order is carried overnight; use DELIVERY "
                 "(CNC) for cash or MARGIN for F&O"],
            )
        priced = {leg.price is not None for leg in req.legs}
        if len(priced) > 1:
            raise InvalidOrder(
                f"{req.kind} GTT on {req.instrument.symbol} not sent",
                ["Dhan's forever OCO has one order type for both legs: give both legs a price (LIMIT) or neither (MARKET)"],
            )
        order_type = "LIMIT" if priced == {True} else "MARKET"
        return _GTT_KIND_TO_DHAN[req.kind], _GTT_PRODUCT_TO_DHAN[req.product], order_type

    def place_gtt(self, req: GttRequest, *, last_price: float | None = None) -> Gtt:
        """Place a Dhan forever order: SINGLE, or OCO (first leg target, second stop).

        The triggers are checked against ``last_price`` (fetched with a quote when not
        given). Not retried: if the outcome is unknown, check :meth:`gtts` before retrying.
        """
        flag, product, order_type = self._gtt_fields(req, last_price)
        inst = req.instrument
        target = req.legs[0]
        stop = req.legs[1] if req.kind is GttKind.OCO else None
        what = f"placing a {req.kind} GTT on {inst.symbol}"
        try:
            data = self._call(
                "orders", what, self._sdk.place_forever, retry=False,
                security_id=str(inst.id_for(_BROKER)),
                exchange_segment=_SEGMENT_TO_DHAN[inst.segment],
                transaction_type=_SIDE_TO_DHAN[req.side],
                product_type=product,
                order_type=order_type,
                quantity=int(target.quantity),
                price=float(target.price or 0.0),
                trigger_Price=float(target.trigger_price),
                order_flag=flag,
                validity="DAY",
                price1=float(stop.price or 0.0) if stop else 0.0,
                trigger_Price1=float(stop.trigger_price) if stop else 0.0,
                quantity1=int(stop.quantity) if stop else 0,
                tag=req.tag,
            )
        except BrokerUnavailable as exc:
            raise BrokerUnavailable(f"{exc}: the GTT MAY have been placed; check gtts() before placing it again") from exc
        if not isinstance(data, Mapping) or not data.get("orderId"):
            raise BrokerUnavailable(f"{what}: Dhan's reply carried no id; check gtts() before placing it again")
        status = _lookup(_GTT_STATUS_FROM_DHAN, data.get("orderStatus"), "forever-order status", f"the reply to {what}")
        return Gtt(str(data["orderId"]), req, status)

    def modify_gtt(self, gtt_id: str, req: GttRequest, *, last_price: float | None = None) -> Gtt:
        """Change a forever order's legs (one PUT per leg: TARGET_LEG, then STOP_LOSS_LEG); not retried."""
        flag, _, order_type = self._gtt_fields(req, last_price)
        legs = [("TARGET_LEG", req.legs[0])] + ([("STOP_LOSS_LEG", req.legs[1])] if req.kind is GttKind.OCO else [])
        status = "ACTIVE"
        done: list[str] = []
        for leg_name, leg in legs:
            what = f"modifying the {leg_name} of GTT {gtt_id}"
            try:
                data = self._call(
                    "orders", what, self._sdk.modify_forever, retry=False,
                    order_id=str(gtt_id), order_flag=flag, order_type=order_type, leg_name=leg_name,
                    quantity=int(leg.quantity), price=float(leg.price or 0.0), trigger_price=float(leg.trigger_price),
                    disclosed_quantity=0, validity="DAY",
                )
            except BrokerError as exc:
                if not done:
                    raise
                raise _rebuild(exc, f"{exc} (the {', '.join(done)} WAS modified: check GTT {gtt_id} in gtts())") from exc
            done.append(leg_name)
            if isinstance(data, Mapping) and data.get("orderStatus"):
                status = _lookup(_GTT_STATUS_FROM_DHAN, data.get("orderStatus"), "forever-order status", f"the reply to {what}")
        return Gtt(str(gtt_id), req, status)

    def cancel_gtt(self, gtt_id: str) -> None:
        """Delete a forever order; an unknown outcome is settled by reading :meth:`gtts`."""
        what = f"cancelling GTT {gtt_id}"
        try:
            self._call("orders", what, self._sdk.cancel_forever, str(gtt_id), retry=False, empty_ok=True)
        except BrokerUnavailable as exc:
            try:
                remaining = {g.gtt_id: g for g in self.gtts()}
            except BrokerError as exc2:
                raise BrokerUnavailable(f"{exc}; the GTT list could not be read either ({exc2}): check GTT {gtt_id}") from exc
            gtt = remaining.get(str(gtt_id))
            if gtt is None or gtt.status == "CANCELLED":
                return None
            raise BrokerUnavailable(f"{exc}; GTT {gtt_id} is still {gtt.status}: cancel it again") from exc
        return None

    def gtts(self) -> list[Gtt]:
        """All forever orders (rows of one OCO are joined by order id)."""
        data = self._call("other", "reading forever orders", self._sdk.get_forever)
        groups: dict[str, list[Mapping[str, Any]]] = {}
        for row in self._rows(data, "forever orders"):
            groups.setdefault(str(row.get("orderId") or ""), []).append(row)
        return [self._gtt_from_rows(gtt_id, rows) for gtt_id, rows in groups.items()]

    def _gtt_from_rows(self, gtt_id: str, rows: list[Mapping[str, Any]]) -> Gtt:
        where = f"forever order {gtt_id}"
        head = rows[0]
        kind = _lookup(_GTT_KIND_FROM_DHAN, head.get("orderType") or head.get("orderFlag"), "forever-order type", where)

        def leg(row: Mapping[str, Any], suffix: str = "") -> GttLeg:
            price = _num(row, "price" + suffix)
            return GttLeg(trigger_price=_num(row, "triggerPrice" + suffix), price=price if price > 0 else None,
                          quantity=_int(row, "quantity" + suffix))

        firsts = [r for r in rows if r.get("legName") in _GTT_FIRST_LEGS]
        seconds = [r for r in rows if r.get("legName") in _GTT_SECOND_LEGS]
        others = [r.get("legName") for r in rows if r.get("legName") not in _GTT_FIRST_LEGS | _GTT_SECOND_LEGS]
        if others:
            raise _unknown("leg name", others[0], where)
        if kind is GttKind.SINGLE:
            if len(firsts) != 1 or seconds:
                raise BrokerError(f"{where}: a SINGLE forever order should have one leg, Dhan sent {len(rows)} row(s)")
            legs = (leg(firsts[0]),)
        else:
            first = firsts[0] if len(firsts) == 1 else None
            if first is None:
                raise BrokerError(f"{where}: Dhan sent no single target leg for this OCO; check it in the Dhan app")
            if len(seconds) == 1:
                second = leg(seconds[0])
            elif not seconds and _num(first, "triggerPrice1") > 0:
                second = leg(first, "1")
            else:
                raise BrokerError(f"{where}: Dhan sent no stop leg for this OCO; check it in the Dhan app")
            legs = (leg(first), second)
        statuses = [_lookup(_GTT_STATUS_FROM_DHAN, r.get("orderStatus"), "forever-order status", where) for r in rows]
        status = min(statuses, key=_GTT_STATUS_RANK.__getitem__)
        req = GttRequest(
            instrument=self._resolve(head.get("exchangeSegment"), head.get("securityId"), head, where),
            side=_lookup(_SIDE_FROM_DHAN, head.get("transactionType"), "transaction type", where),
            kind=kind,
            legs=legs,
            product=_lookup(_GTT_PRODUCT_FROM_DHAN, head.get("productType"), "product type", where),
            tag=str(head["correlationId"]) if head.get("correlationId") else None,
        )
        return Gtt(gtt_id, req, status)


"""Definedge Securities (Integrate API) as a tradeflow ``Broker``, over pyintegrate 3.0.

``DefinedgeBroker`` speaks the protocol in :mod:`tradeflow.brokers.base`; nothing it returns
is an SDK type or a raw dict. It never logs in (the session module does, with TOTP, and hands
over the four session keys), never asks for input and never touches the SDK's instrument
master (which would download into the installed package): tokens and trading symbols come
from the ``instruments`` given to it.

Instruments
    ``broker_ids["definedge"]`` is the Definedge token (as :mod:`tradeflow.instruments` sets
    it). Orders need Definedge's own trading symbol (``TCS-EQ``, ``NIFTY26JUN25000CE``): it is
    ``broker_ids["definedge_symbol"]`` when given, else asked once per token from Definedge
    (GET ``securityinfo/{exchange}/{token}``) and cached; symbols are never guessed. Rows for
    instruments not in the list get a minimal instrument built from the row.

Mappings (both ways; an unknown broker value raises ``BrokerError`` naming it)
    segment ↔ exchange     NSE_EQ/NSE_IDX ↔ NSE, BSE_EQ/BSE_IDX ↔ BSE, NSE_FNO ↔ NFO, BSE_FNO ↔ BFO
    side ↔ order_type      BUY ↔ BUY, SELL ↔ SELL
    order type ↔ price_type MARKET ↔ MARKET, LIMIT ↔ LIMIT, SL ↔ SL-LIMIT, SL_M ↔ SL-MARKET
    product ↔ product_type INTRADAY ↔ INTRADAY, DELIVERY ↔ CNC, MARGIN ↔ NORMAL
    validity               DAY ↔ DAY, IOC ↔ IOC
    order_status →         NEW → PENDING, OPEN/REPLACED → OPEN (PARTIALLY_FILLED once
                           anything filled), COMPLETE → FILLED, CANCELED → CANCELLED,
                           REJECTED → REJECTED
    GTT condition →        LTP_ABOVE/LTP_BELOW → SINGLE, LMT_OCO → OCO

Errors
    A JSON ``{"status": "ERROR"}`` answer becomes ``OrderRejected`` for order and GTT writes and
    ``BrokerError`` for reads; "Session Expired" (or HTTP 401) refreshes the keys once through
    ``on_session_expired`` and retries once, then raises ``SessionExpired``. HTTP 5xx, a body
    without ``status``, timeouts and connection failures are ``BrokerUnavailable``; HTTP 429 is
    ``RateLimited``. Reads retry those two with exponential backoff; writes are never retried.
    A placement whose outcome is unknown is looked up in the order book by its tag before
    ``place_order`` answers.

Tags
    Every order carries its tag in ``remarks`` (an order without a tag gets ``tf-`` + 12 hex
    digits so it can be found after a timeout). Definedge's documented order book rows do not
    include ``remarks``; when rows carry it, ``order_by_tag`` matches it, otherwise it can only
    answer for orders this broker object placed and raises for others rather than guess.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import pandas as pd
import requests
from pydantic import SecretStr
from requests.adapters import HTTPAdapter
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

import integrate

from ..calendar import IST, SESSION_CLOSE
from ..config import broker_settings
from .._redact import SecretFilter
from ..errors import ConfigError, StoreError, TradeflowError
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
from .ratelimit import bucket

__all__ = ["DefinedgeBroker"]

log = logging.getLogger(__name__)

BROKER = "definedge"
LOGIN_HINT = "log in again: `tradeflow session login --broker definedge`"

# The SDK's hard-coded hosts, rewritten to the configured addresses by a transport adapter.
_SDK_DATA_URL = "https://data.definedgesecurities.com/sds/history/"
_SDK_MASTER_URL = "https://app.definedgesecurities.com/public/allmaster.zip"

_RATES = {"orders": 5.0, "history": 2.0, "quotes": 2.0, "other": 10.0}
"""Calls per second by class: conservative (Definedge publishes none; SEBI caps orders at 10/s)."""

# ---------------------------------------------------------------------- mapping tables

_EXCHANGE_OF: dict[Segment, str] = {
    Segment.NSE_EQ: "NSE",
    Segment.BSE_EQ: "BSE",
    Segment.NSE_FNO: "NFO",
    Segment.BSE_FNO: "BFO",
    Segment.NSE_IDX: "NSE",  # quotes and history only
    Segment.BSE_IDX: "BSE",
}
_SEGMENT_OF: dict[str, Segment] = {"NSE": Segment.NSE_EQ, "BSE": Segment.BSE_EQ, "NFO": Segment.NSE_FNO, "BFO": Segment.BSE_FNO}

_SIDE_OUT: dict[Side, str] = {Side.BUY: "BUY", Side.SELL: "SELL"}
_SIDE_IN: dict[str, Side] = {v: k for k, v in _SIDE_OUT.items()}

_PRICE_TYPE_OUT: dict[OrderType, str] = {
    OrderType.MARKET: "MARKET",
    OrderType.LIMIT: "LIMIT",
    OrderType.SL: "SL-LIMIT",
    OrderType.SL_M: "SL-MARKET",
}
_PRICE_TYPE_IN: dict[str, OrderType] = {v: k for k, v in _PRICE_TYPE_OUT.items()}

_PRODUCT_OUT: dict[Product, str] = {Product.INTRADAY: "INTRADAY", Product.DELIVERY: "CNC", Product.MARGIN: "NORMAL"}
_PRODUCT_IN: dict[str, Product] = {v: k for k, v in _PRODUCT_OUT.items()}

_VALIDITY_OUT: dict[Validity, str] = {Validity.DAY: "DAY", Validity.IOC: "IOC"}
_VALIDITY_IN: dict[str, Validity] = {v: k for k, v in _VALIDITY_OUT.items()}

_STATUS_IN: dict[str, OrderStatus] = {
    "NEW": OrderStatus.PENDING,  # accepted by Definedge, not yet confirmed by the exchange
    "OPEN": OrderStatus.OPEN,
    "REPLACED": OrderStatus.OPEN,  # modified and resting again
    "COMPLETE": OrderStatus.FILLED,
    "CANCELED": OrderStatus.CANCELLED,
    "REJECTED": OrderStatus.REJECTED,
}
"""The SDK's ``ORDER_STATUS_*`` values. An OPEN/REPLACED order with fills is PARTIALLY_FILLED."""

_GTT_KIND_IN: dict[str, GttKind] = {"LTP_ABOVE": GttKind.SINGLE, "LTP_BELOW": GttKind.SINGLE, "LMT_OCO": GttKind.OCO}

_GTT_PRODUCT: dict[bool, Product] = {False: Product.DELIVERY, True: Product.MARGIN}
"""Definedge GTT/OCO orders are always CNC (cash) or NORMAL (derivatives); there is no product field."""

_INDEX_UNDERLYINGS = ("NIFTY", "BANKNIFTY", "FINNIFTY", "MIDCPNIFTY", "NIFTYNXT50", "SENSEX", "BANKEX", "SENSEX50")

_HISTORY_TIMEFRAME = {1: "minute", None: "day"}
_HISTORY_WINDOW = {"minute": pd.Timedelta(days=30), "day": pd.Timedelta(days=5 * 365)}
"""Longest span asked in one history request; longer ranges are split into windows."""


def _lookup(table: dict, value: Any, what: str) -> Any:
    key = str(value).strip().upper() if isinstance(value, str) else value
    try:
        return table[key]
    except KeyError:
        known = ", ".join(sorted(map(str, table)))
        raise BrokerError(
            f"Definedge sent an unknown {what} {value!r} (known: {known}); "
            "tradeflow.brokers.definedge needs a mapping for it"
        ) from None


# ---------------------------------------------------------------------- log hygiene


class _Redactor(SecretFilter):
    """Replaces known secrets in records of the SDK's loggers (defence in depth: they are at WARNING)."""


_REDACTOR = _Redactor()
for _name in ("integrate", "integrate.connect", "integrate.orders", "integrate.data", "integrate.ws"):
    # pyintegrate sets its loggers to DEBUG at import and, with logging=True, logs the
    # Authorization header (the session key). We never enable that; this makes sure.
    _sdk_log = logging.getLogger(_name)
    _sdk_log.setLevel(logging.WARNING)
    if _REDACTOR not in _sdk_log.filters:
        _sdk_log.addFilter(_REDACTOR)


# ---------------------------------------------------------------------- transport


class _ApiError(Exception):
    """A ``{"status": "ERROR"}`` answer (or HTTP 401), raised from the response hook."""

    def __init__(self, message: str, *, expired: bool) -> None:
        super().__init__(message)
        self.message = message
        self.expired = expired


class _RewritingAdapter(HTTPAdapter):
    """Sends requests for the SDK's hard-coded hosts to the configured addresses instead."""

    def __init__(self, rewrites: dict[str, str]) -> None:
        super().__init__()
        self._rewrites = rewrites

    def send(self, request, **kwargs):  # type: ignore[override]
        for src, dst in self._rewrites.items():
            if request.url and request.url.startswith(src):
                request.url = dst + request.url[len(src):]
                break
        return super().send(request, **kwargs)


def _check_response(response: requests.Response, *args, **kwargs) -> requests.Response:
    """Session hook: the HTTP status and body shape are checked here, before the SDK reads it.

    pyintegrate ignores the status code (a 500 looks like success) and raises a bare
    ``Exception`` for error bodies; raising our own errors here keeps both from happening.
    """
    code = response.status_code
    if 300 <= code < 400:
        return response  # a redirect: requests follows it and this hook sees the final answer
    ctype = response.headers.get("content-type", "")
    where = f"{response.request.method} {urlsplit(response.url).path}"
    if code == 429:
        response.close()
        raise RateLimited(f"Definedge throttled {where} (HTTP 429); slow down and retry later")
    body: Any = None
    if "application/json" in ctype or code >= 400:
        try:
            body = response.json()
        except ValueError:
            body = None
    message = _REDACTOR.scrub(str(body.get("message") or "").strip()[:300]) if isinstance(body, dict) else ""
    if code >= 500:
        response.close()
        detail = f": {message}" if message else ""
        raise BrokerUnavailable(f"Definedge server error on {where} (HTTP {code}{detail}); the outcome is unknown")
    if isinstance(body, dict) and str(body.get("status", "")).upper() == "ERROR":
        response.close()
        message = message or f"error without a message (HTTP {code})"
        raise _ApiError(message, expired="session expired" in message.lower() or "invalid session" in message.lower())
    if code == 401:
        response.close()
        raise _ApiError(f"HTTP 401 Unauthorized{': ' + message if message else ''}", expired=True)
    if code >= 400:
        response.close()
        raise BrokerError(f"Definedge refused {where} (HTTP {code}{': ' + message if message else ''})")
    if not ctype:
        response.close()
        raise BrokerUnavailable(f"Definedge answered {where} without a Content-Type; the outcome is unknown")
    if "application/json" in ctype and body is None:
        response.close()
        raise BrokerUnavailable(f"Definedge answered {where} with invalid JSON; the outcome is unknown")
    zipped = urlsplit(response.url).path.endswith(".zip") and ("zip" in ctype or "octet-stream" in ctype)
    if "application/json" not in ctype and "text/csv" not in ctype and not zipped:
        response.close()
        raise BrokerUnavailable(f"Definedge answered {where} with unexpected content ({ctype}); the outcome is unknown")
    return response


def _slash(url: str) -> str:
    return url if url.endswith("/") else url + "/"


def _secret(value: Any) -> str:
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def _session_tuple(keys: Any, source: str) -> tuple[str, str, str, str]:
    if not isinstance(keys, (tuple, list)) or len(keys) != 4:
        raise ConfigError(f"{source} must give four session keys (uid, actid, api_session_key, ws_session_key)")
    values = tuple(_secret(k) for k in keys)
    if not all(isinstance(v, str) and v for v in values[:3]):
        raise ConfigError(f"{source} gave an empty or non-text session key; {LOGIN_HINT}")
    return values  # type: ignore[return-value]


# ---------------------------------------------------------------------- parsing helpers


def _text(row: dict, key: str) -> str:
    value = row.get(key)
    return "" if value is None else str(value).strip()


def _float(row: dict, key: str, what: str, *, default: float | None = None) -> float | None:
    raw = _text(row, key)
    if raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise BrokerError(f"Definedge sent {what} field {key!r} = {raw!r}, which is not a number") from None
    if not math.isfinite(value):
        raise BrokerError(f"Definedge sent {what} field {key!r} = {raw!r}, which is not a finite number")
    return value


def _int(row: dict, key: str, what: str, *, default: int | None = None) -> int | None:
    value = _float(row, key, what)
    if value is None:
        return default
    if not value.is_integer():
        raise BrokerError(f"Definedge sent {what} field {key!r} = {row.get(key)!r}, which is not a whole number")
    return int(value)


def _need_float(row: dict, key: str, what: str) -> float:
    value = _float(row, key, what)
    if value is None:
        raise BrokerError(f"Definedge sent {what} without {key!r}; got fields {', '.join(sorted(row)) or 'none'}")
    return value


def _need_int(row: dict, key: str, what: str) -> int:
    value = _int(row, key, what)
    if value is None:
        raise BrokerError(f"Definedge sent {what} without {key!r}; got fields {', '.join(sorted(row)) or 'none'}")
    return value


def _ist_time(raw: str, fmt: str) -> pd.Timestamp | None:
    """An IST wall-clock text as a UTC instant; None when absent or unreadable."""
    if not raw:
        return None
    try:
        return pd.Timestamp(dt.datetime.strptime(raw, fmt)).tz_localize(IST).tz_convert("UTC")
    except ValueError:
        return None


def _price(value: float | None) -> float:
    return 0 if value is None else round(float(value), 4)


def _empty_candles() -> pd.DataFrame:
    idx = pd.DatetimeIndex([], tz=IST, name="ts")
    return pd.DataFrame({c: pd.Series(dtype="float64") for c in ("open", "high", "low", "close", "volume")}, index=idx)


# ---------------------------------------------------------------------- the broker


class DefinedgeBroker:
    """Live trading through Definedge Securities' Integrate API (pyintegrate 3.0).

    Parameters
    ----------
    session_keys:
        ``(uid, actid, api_session_key, ws_session_key)`` from the session module
        (``tradeflow.session.definedge_session().keys()``); values may be ``SecretStr``.
        ``None``: the first call asks ``on_session_expired`` for keys, or raises
        ``SessionExpired``.
    algo_id:
        The exchange-approved algo id sent with every order (SEBI); default
        ``DEFINEDGE_ALGO_ID``. Without one ``place_order`` refuses before sending.
    base_url, login_url, data_url:
        Trading API, login and history addresses; defaults from settings
        (``DEFINEDGE_BASE_URL`` …). A trailing slash is added where missing.
    timeout:
        Seconds every HTTP call may take (default ``http_timeout`` from settings).
    instruments:
        What this broker can resolve: tokens and trading symbols come from here.
    on_session_expired:
        Returns fresh session keys. On "Session Expired" it is called once and the call
        is retried once; a second expiry raises ``SessionExpired``.

    Example::

        from tradeflow.session import definedge_session
        broker = DefinedgeBroker(definedge_session().keys(), instruments=master,
                                 on_session_expired=lambda: definedge_session(refresh=True).keys())
        order = broker.place_order(OrderRequest(tcs, Side.BUY, 1, OrderType.LIMIT,
                                                Product.DELIVERY, price=3300.5, tag="swing-1"))
    """

    name = BROKER
    live = True

    _READ_ATTEMPTS = 3
    _BACKOFF = 0.25  # seconds before the first read retry; doubles each time
    _BACKOFF_MAX = 4.0

    def __init__(
        self,
        session_keys: tuple[str, str, str, str] | None = None,
        *,
        algo_id: str | None = None,
        base_url: str | None = None,
        login_url: str | None = None,
        data_url: str | None = None,
        timeout: float | None = None,
        instruments: list[Instrument] | None = None,
        on_session_expired: Callable[[], tuple] | None = None,
    ) -> None:
        cfg = broker_settings()
        self._base_url = _slash(base_url or cfg.definedge_base_url)
        self._login_url = _slash(login_url or cfg.definedge_login_url)
        self._data_url = _slash(data_url or cfg.definedge_data_url)
        self._master_url = cfg.definedge_master_url
        self._timeout = float(timeout if timeout is not None else cfg.http_timeout)
        if not (self._timeout > 0 and math.isfinite(self._timeout)):
            raise ConfigError(f"timeout must be a positive number of seconds, got {timeout!r}")
        algo = algo_id if algo_id is not None else cfg.definedge_algo_id
        self._algo_id = algo.strip() if algo and algo.strip() else None
        self._on_session_expired = on_session_expired
        _REDACTOR.add(*(_secret(s) for s in (cfg.definedge_api_token, cfg.definedge_api_secret, cfg.definedge_totp_secret) if s))

        self._c2i = integrate.ConnectToIntegrate(
            login_url=self._login_url, base_url=self._base_url, timeout=self._timeout, logging=False
        )
        self._orders_api = integrate.IntegrateOrders(self._c2i, logging=False)
        session = self._c2i._req_sess
        rewrites = {_SDK_DATA_URL: self._data_url, _SDK_MASTER_URL: self._master_url}
        adapter = _RewritingAdapter(rewrites)
        session.mount("https://data.definedgesecurities.com/", adapter)
        session.mount("https://app.definedgesecurities.com/", adapter)
        session.hooks["response"].append(_check_response)

        self._lock = threading.RLock()
        self._has_session = False
        self._key_generation = 0  # bumped on every new set of keys
        if session_keys is not None:
            self._set_keys(_session_tuple(session_keys, "session_keys"))

        self._instruments: list[Instrument] = list(instruments or [])
        self._by_token: dict[tuple[str, str], Instrument] = {}
        self._by_symbol: dict[tuple[str, str], Instrument] = {}
        self._tsyms: dict[tuple[str, str], str] = {}  # (exchange, token) -> Definedge trading symbol
        for inst in self._instruments:
            exchange = _EXCHANGE_OF[inst.segment]
            token = inst.broker_ids.get(BROKER)
            explicit = inst.broker_ids.get("definedge_symbol")
            if token:
                self._by_token.setdefault((exchange, str(token)), inst)
            if explicit:
                self._by_symbol.setdefault((exchange, explicit), inst)
            self._by_symbol.setdefault((exchange, inst.symbol), inst)

        self._requests: dict[str, OrderRequest] = {}  # order id -> what we sent (tag, trigger)
        self._tags: dict[str, str] = {}  # tag -> order id, for orders placed by this object
        self._known: dict[str, Order] = {}  # order id -> last reported state
        self._seen_ids: set[str] = set()  # every order id seen in a book or placement
        self._gtt_kinds: dict[str, GttKind] = {}
        self._gtt_requests: dict[str, GttRequest] = {}
        self._clock: Callable[[], pd.Timestamp] = lambda: pd.Timestamp.now(tz="UTC")

    def __repr__(self) -> str:
        return (
            f"DefinedgeBroker(base_url={self._base_url!r}, session={'set' if self._has_session else 'none'}, "
            f"algo_id={'set' if self._algo_id else 'missing'}, instruments={len(self._instruments)})"
        )

    # ------------------------------------------------------------------ session and calls

    def _set_keys(self, keys: tuple[str, str, str, str]) -> None:
        _REDACTOR.add(keys[2], keys[3])
        self._c2i.set_session_keys(*keys)
        self._has_session = True
        self._key_generation += 1

    def _refresh_session(self) -> None:
        if self._on_session_expired is None:
            raise SessionExpired(f"the Definedge session has expired; {LOGIN_HINT}")
        try:
            keys = self._on_session_expired()
        except TradeflowError:
            raise
        except Exception as exc:
            raise SessionExpired(
                f"renewing the Definedge session failed ({type(exc).__name__}); {LOGIN_HINT}"
            ) from exc
        self._set_keys(_session_tuple(keys, "on_session_expired"))
        log.info("Definedge session keys renewed")

    def _call(self, kind: str, what: str, fn: Callable[[], Any], *, write: bool = False) -> Any:
        """One SDK call: rate limit, one session renewal on expiry, errors mapped to ours."""
        renewed = False
        while True:
            with self._lock:
                if not self._has_session:
                    if self._on_session_expired is None:
                        raise SessionExpired(f"no Definedge session keys were given ({what}); {LOGIN_HINT}")
                    self._refresh_session()
                    renewed = True
                generation = self._key_generation
            bucket(BROKER, kind, _RATES[kind]).acquire()
            try:
                return fn()
            except _ApiError as exc:
                if exc.expired:
                    if not renewed and self._on_session_expired is not None:
                        renewed = True
                        with self._lock:
                            if self._key_generation == generation:  # not already renewed by another thread
                                self._refresh_session()
                        continue
                    again = " even after renewing the keys" if renewed else ""
                    raise SessionExpired(f"the Definedge session has expired{again} ({what}); {LOGIN_HINT}") from exc
                if write:
                    raise OrderRejected(f"Definedge rejected {what}: {exc.message}", broker_message=exc.message) from exc
                raise BrokerError(f"Definedge refused {what}: {exc.message}") from exc
            except TradeflowError:
                raise
            except requests.Timeout as exc:
                raise BrokerUnavailable(
                    f"no answer from Definedge within {self._timeout:g}s ({what}); the outcome is unknown"
                ) from exc
            except requests.RequestException as exc:
                raise BrokerUnavailable(f"cannot reach Definedge ({what}: {type(exc).__name__}); the outcome is unknown") from exc
            except ValueError as exc:  # pyintegrate's own checks, before anything is sent
                raise InvalidOrder(f"pyintegrate refused {what} before sending it", [str(exc)]) from exc
            except Exception as exc:
                if type(exc) is Exception or isinstance(exc, KeyError):  # pyintegrate's bare errors
                    detail = _REDACTOR.scrub(str(exc)[:200])
                    raise BrokerUnavailable(f"pyintegrate failed on {what} ({detail}); the outcome is unknown") from exc
                raise

    def _read(self, kind: str, what: str, fn: Callable[[], Any]) -> Any:
        """A read: ``_call`` retried with exponential backoff on RateLimited / BrokerUnavailable."""
        retrying = Retrying(
            stop=stop_after_attempt(self._READ_ATTEMPTS),
            wait=wait_exponential(multiplier=self._BACKOFF, max=self._BACKOFF_MAX),
            retry=retry_if_exception_type((RateLimited, BrokerUnavailable)),
            reraise=True,
        )
        return retrying(self._call, kind, what, fn)

    def _get(self, route: str) -> Callable[[], Any]:
        return lambda: self._c2i.send_request(route_prefix=self._c2i.base_url, route=route, method="GET")

    @staticmethod
    def _checked(data: Any, what: str, *keys: str, need_status: bool = True) -> dict:
        """The answer as a dict; one without ``status`` (or the named keys) is a failure, not success."""
        if not isinstance(data, dict):
            raise BrokerUnavailable(f"Definedge answered {what} with {type(data).__name__}, not an object; the outcome is unknown")
        if need_status and str(data.get("status", "")).upper() != "SUCCESS":
            raise BrokerUnavailable(
                f"Definedge answered {what} without status SUCCESS (status={data.get('status')!r}); the outcome is unknown"
            )
        missing = [k for k in keys if k not in data or data[k] in (None, "")]
        if missing:
            raise BrokerUnavailable(f"Definedge answered {what} without {', '.join(missing)}; the outcome is unknown")
        return data

    # ------------------------------------------------------------------ instruments

    def instruments(self) -> list[Instrument]:
        """The instruments this broker was given."""
        return list(self._instruments)

    def _tradingsymbol(self, inst: Instrument) -> str:
        """Definedge's trading symbol: ``broker_ids["definedge_symbol"]``, else asked once by token."""
        explicit = inst.broker_ids.get("definedge_symbol")
        if explicit:
            return explicit
        exchange, token = _EXCHANGE_OF[inst.segment], self._token(inst)
        cached = self._tsyms.get((exchange, token))
        if cached:
            return cached
        what = f"looking up Definedge's trading symbol of {inst.symbol} (token {token})"
        data = self._read("other", what, self._get(f"securityinfo/{exchange}/{token}"))
        tsym = _text(self._checked(data, what, "tradingsymbol"), "tradingsymbol")
        with self._lock:
            self._tsyms[(exchange, token)] = tsym
        return tsym

    @staticmethod
    def _token(inst: Instrument) -> str:
        return inst.id_for(BROKER)

    def _instrument(self, row: dict, what: str, *, symbol_key: str = "tradingsymbol") -> Instrument:
        exchange = _text(row, "exchange").upper()
        segment = _lookup(_SEGMENT_OF, exchange, f"exchange in {what}")
        token, symbol = _text(row, "token"), _text(row, symbol_key)
        found = self._by_token.get((exchange, token)) if token else None
        if found is not None and symbol:
            self._tsyms.setdefault((exchange, token), symbol)
        found = found or self._by_symbol.get((exchange, symbol))
        if found is not None:
            return found
        if not symbol:
            raise BrokerError(f"Definedge sent {what} without a trading symbol")
        return self._fallback_instrument(row, segment, symbol, token, what)

    @staticmethod
    def _fallback_instrument(row: dict, segment: Segment, symbol: str, token: str, what: str) -> Instrument:
        """A minimal instrument for a row outside the instrument list (e.g. a manual trade)."""
        if segment.is_derivative:
            # derivative symbols are the underlying followed by the expiry: NIFTY26JUN25000CE
            index = any(symbol.startswith(u) and symbol[len(u):len(u) + 1].isdigit() for u in _INDEX_UNDERLYINGS)
            option = symbol.endswith(("CE", "PE"))
            kind = {(True, True): InstrumentKind.OPTIDX, (True, False): InstrumentKind.FUTIDX,
                    (False, True): InstrumentKind.OPTSTK, (False, False): InstrumentKind.FUTSTK}[(index, option)]
        else:
            kind = InstrumentKind.EQUITY
        name = symbol[:-3] if segment is Segment.NSE_EQ and symbol.endswith("-EQ") else symbol  # TCS-EQ -> TCS
        lot = _int(row, "lotsize", what, default=1) or 1
        tick = _float(row, "ticksize", what, default=0.05) or 0.05
        ids = {BROKER: token, "definedge_symbol": symbol} if token else {"definedge_symbol": symbol}
        return Instrument(symbol=name, segment=segment, kind=kind, lot_size=lot, tick_size=tick, broker_ids=ids)

    # ------------------------------------------------------------------ orders

    def _order_body(self, req: OrderRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "exchange": _EXCHANGE_OF[req.instrument.segment],
            "order_type": _SIDE_OUT[req.side],
            "price": _price(req.price if req.order_type in (OrderType.LIMIT, OrderType.SL) else None),
            "price_type": _PRICE_TYPE_OUT[req.order_type],
            "product_type": _PRODUCT_OUT[req.product],
            "quantity": int(req.quantity),
            "tradingsymbol": self._tradingsymbol(req.instrument),
            "validity": _VALIDITY_OUT[req.validity],
        }
        if req.order_type in (OrderType.SL, OrderType.SL_M):
            body["trigger_price"] = _price(req.trigger_price)
        if req.tag:
            body["remarks"] = req.tag
        return body

    def place_order(self, req: OrderRequest) -> Order:
        """Validate, then POST ``placeorder``; returns the order as PENDING with Definedge's id.

        Nothing is sent when validation fails (``InvalidOrder``) or no algo id is configured.
        The order's tag travels in ``remarks``; an untagged order gets ``tf-<12 hex>``. If the
        outcome is unknown (timeout, 5xx, malformed answer) the order book is searched for the
        tag: the order found is returned, else ``BrokerUnavailable`` says it was not placed.
        Never retried blindly.
        """
        validate_order(req)
        if not self._algo_id:
            raise InvalidOrder(
                f"{req.side} {req.quantity} {req.instrument.symbol} not sent",
                ["no Definedge algo id: SEBI requires one on every API order; set DEFINEDGE_ALGO_ID "
                 "(environment or .env) or pass algo_id= to DefinedgeBroker"],
            )
        if req.tag is None:
            req = replace(req, tag=f"tf-{uuid.uuid4().hex[:12]}")
        try:
            body = self._order_body(req)
        except InvalidOrder:
            raise
        except BrokerError as exc:
            raise type(exc)(f"order not sent: {exc}") from exc
        what = f"placing {req.side} {req.quantity} {body['tradingsymbol']} {body['price_type']} (tag {req.tag})"
        seen_before = set(self._seen_ids)
        sent_at = self._clock()
        log.info("Definedge: %s", what)
        try:
            data = self._call("orders", what, lambda: self._orders_api.place_order(algo_id=self._algo_id, **body), write=True)
            order_id = str(self._checked(data, what, "order_id")["order_id"]).strip()
        except BrokerUnavailable as exc:
            return self._resolve_unknown_placement(req, exc, seen_before)
        order = Order(order_id, req, OrderStatus.PENDING, history=((sent_at, OrderStatus.PENDING),), updated_at=sent_at)
        self._remember(order)
        return order

    def _remember(self, order: Order) -> None:
        with self._lock:
            self._requests[order.order_id] = order.request
            self._known[order.order_id] = order
            self._seen_ids.add(order.order_id)
            if order.request.tag:
                self._tags[order.request.tag] = order.order_id

    def _resolve_unknown_placement(self, req: OrderRequest, cause: BrokerUnavailable, seen_before: set[str]) -> Order:
        tag = req.tag
        log.warning("Definedge: placement of tag %s has an unknown outcome (%s); looking it up", tag, cause)
        try:
            rows = self._order_rows()
        except BrokerError as exc:
            raise BrokerUnavailable(
                f"{cause}; looking the order up by tag {tag!r} also failed ({exc}): check the Definedge order "
                "book before placing it again"
            ) from cause
        tagged = [r for r in rows if _text(r, "remarks") == tag]
        if tagged:
            row = self._latest(tagged)
            with self._lock:
                self._requests.setdefault(_text(row, "order_id"), req)
                self._tags[tag] = _text(row, "order_id")
            return self._order_from_row(row)
        echoes = any("remarks" in r for r in rows)
        if rows and not echoes:
            body = self._order_body(req)
            alike = [r for r in rows if _text(r, "order_id") not in seen_before and self._same_order(r, body)]
            if alike:
                ids = ", ".join(_text(r, "order_id") for r in alike)
                raise BrokerUnavailable(
                    f"{cause}; Definedge's order book does not show tags, and order(s) {ids} match this one's "
                    "details: it may have been placed; check them before placing it again"
                ) from cause
        raise BrokerUnavailable(
            f"{cause}; no order tagged {tag!r} (or matching it) is in the Definedge order book, so it was not placed"
        ) from cause

    @staticmethod
    def _same_order(row: dict, body: dict[str, Any]) -> bool:
        try:
            price = float(_text(row, "price") or 0)
            qty = float(_text(row, "quantity") or 0)
        except ValueError:
            return True  # unreadable: treat as a possible match (the safe side)
        return (
            _text(row, "exchange").upper() == body["exchange"]
            and _text(row, "tradingsymbol") == body["tradingsymbol"]
            and _text(row, "order_type").upper() == body["order_type"]
            and _text(row, "price_type").upper() == body["price_type"]
            and _text(row, "product_type").upper() == body["product_type"]
            and qty == body["quantity"]
            and math.isclose(price, float(body["price"]), abs_tol=1e-6)
        )

    @staticmethod
    def _latest(rows: list[dict]) -> dict:
        def key(r: dict):
            oid = _text(r, "order_id")
            return (0, int(oid), "") if oid.isdigit() else (1, 0, oid)

        return max(rows, key=key)

    def _order_rows(self) -> list[dict]:
        data = self._checked(self._read("other", "reading the order book", self._orders_api.orders), "the order book")
        rows = data.get("orders") or []
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise BrokerError("Definedge sent an order book that is not a list of orders")
        return rows

    def _order_from_row(self, row: dict) -> Order:
        what = "an order"
        order_id = _text(row, "order_id")
        if not order_id:
            raise BrokerError(f"Definedge sent an order without order_id (fields: {', '.join(sorted(row))})")
        sent = self._requests.get(order_id)
        inst = self._instrument(row, what)
        if sent is not None and (sent.instrument == inst or sent.instrument.broker_ids.get(BROKER) == _text(row, "token")):
            inst = sent.instrument
        order_type = _lookup(_PRICE_TYPE_IN, _text(row, "price_type"), "price_type")
        price = _float(row, "price", what) if order_type in (OrderType.LIMIT, OrderType.SL) else None
        trigger = None
        if order_type in (OrderType.SL, OrderType.SL_M):
            trigger = _float(row, "trigger_price", what) or (sent.trigger_price if sent else None)
        validity = _lookup(_VALIDITY_IN, _text(row, "validity") or "DAY", "validity")
        tag = _text(row, "remarks") or (sent.tag if sent else None) or None
        req = OrderRequest(
            instrument=inst,
            side=_lookup(_SIDE_IN, _text(row, "order_type"), "order_type (side)"),
            quantity=_need_int(row, "quantity", what),
            order_type=order_type,
            product=_lookup(_PRODUCT_IN, _text(row, "product_type"), "product_type"),
            price=price,
            trigger_price=trigger,
            validity=validity,
            tag=tag,
        )
        status = _lookup(_STATUS_IN, _text(row, "order_status"), "order_status")
        filled = _int(row, "filled_qty", what, default=0) or 0
        if status is OrderStatus.OPEN and filled > 0:
            status = OrderStatus.PARTIALLY_FILLED
        if status is OrderStatus.FILLED and "filled_qty" not in row:
            filled = req.quantity  # the single-order answer has no filled_qty; COMPLETE means all of it
        avg = _float(row, "average_traded_price", what)
        at = _ist_time(_text(row, "exchange_time"), "%d-%m-%Y %H:%M:%S")
        message = next((_text(row, k) for k in ("message", "reason", "rejection_reason") if _text(row, k)), "")
        with self._lock:
            prior = self._known.get(order_id)
            if prior is None:
                start = at or self._clock()
                prior = Order(order_id, req, OrderStatus.PENDING, history=((start, OrderStatus.PENDING),), updated_at=start)
            order = advance(
                prior,
                status,
                at=at,
                request=req,
                filled_quantity=filled,
                average_price=avg if (avg and filled) else None,
                exchange_order_id=_text(row, "exchange_orderid"),
                message=message,
            )
            self._known[order_id] = order
            self._seen_ids.add(order_id)
        return order

    def orders(self) -> list[Order]:
        """Today's orders (GET ``orders``)."""
        return [self._order_from_row(r) for r in self._order_rows()]

    def order(self, order_id: str) -> Order:
        """One order (GET ``order/{id}``; Definedge answers with the bare order, no ``status``)."""
        what = f"reading order {order_id}"
        data = self._read("other", what, lambda: self._orders_api.order(str(order_id)))
        if isinstance(data, dict) and isinstance(data.get("orders"), list):  # tolerate a book-shaped answer
            rows = [r for r in data["orders"] if isinstance(r, dict) and _text(r, "order_id") == str(order_id)]
            data = rows[0] if rows else {}
        row = self._checked(data, what, "order_id", "order_status", need_status=False)
        return self._order_from_row(row)

    def order_by_tag(self, tag: str) -> Order | None:
        """The order whose ``remarks`` is ``tag`` (the newest if several), or None.

        Definedge has no lookup by tag, so this scans the order book. When its rows do not
        echo ``remarks``, only orders placed by this object can be found; for any other tag
        a non-empty book raises ``BrokerError`` rather than answer "not there" wrongly.
        """
        rows = self._order_rows()
        tagged = [r for r in rows if _text(r, "remarks") == tag]
        if tagged:
            return self._order_from_row(self._latest(tagged))
        known_id = self._tags.get(tag)
        if known_id is not None:
            mine = [r for r in rows if _text(r, "order_id") == known_id]
            return self._order_from_row(mine[0]) if mine else self.order(known_id)
        if rows and not any("remarks" in r for r in rows):
            raise BrokerError(
                f"cannot look up tag {tag!r}: Definedge's order book does not show tags (remarks) and this "
                "broker object did not place that order; check the order book by hand"
            )
        return None

    def modify_order(self, order_id: str, *, quantity: int | None = None, price: float | None = None,
                     trigger_price: float | None = None, order_type: OrderType | None = None) -> Order:
        """Change an open order (POST ``modify``): reads it first, validates the result, then sends.

        Changing the type clears fields the new type does not take (a LIMIT loses its trigger).
        """
        current = self.order(order_id)
        if current.status.is_final:
            raise InvalidOrder(f"order {order_id} is {current.status} and cannot be modified")
        old = current.request
        new_type = order_type or old.order_type
        new_price = price if price is not None else (old.price if new_type in (OrderType.LIMIT, OrderType.SL) else None)
        new_trigger = trigger_price if trigger_price is not None else (
            old.trigger_price if new_type in (OrderType.SL, OrderType.SL_M) else None
        )
        req = replace(old, quantity=quantity if quantity is not None else old.quantity, order_type=new_type,
                      price=new_price, trigger_price=new_trigger)
        validate_order(req)
        body = self._order_body(req)
        what = f"modifying order {order_id}"
        data = self._call("orders", what, lambda: self._orders_api.modify_order(order_id=str(order_id), **body), write=True)
        self._checked(data, what)
        with self._lock:
            self._requests[str(order_id)] = req
            known = self._known.get(str(order_id), current)
            order = advance(known, known.status, request=req)
            self._known[str(order_id)] = order
        return order

    def cancel_order(self, order_id: str) -> Order:
        """Cancel (GET ``cancel/{id}``), then read the order back: it may show CANCELLED or, if it
        filled first, FILLED."""
        what = f"cancelling order {order_id}"
        data = self._call("orders", what, lambda: self._orders_api.cancel_order(str(order_id)), write=True)
        self._checked(data, what)
        return self.order(order_id)

    # ------------------------------------------------------------------ account

    def trades(self) -> list[Trade]:
        """Today's fills (GET ``trades``); one record per fill row."""
        data = self._checked(self._read("other", "reading the trade book", self._orders_api.trades), "the trade book")
        out = []
        for row in data.get("trades") or []:
            what = "a trade"
            qty = _int(row, "last_fill_qty", what) or _need_int(row, "filled_qty", what)
            out.append(Trade(
                trade_id=_text(row, "fill_id"),
                order_id=_text(row, "order_id"),
                instrument=self._instrument(row, what),
                side=_lookup(_SIDE_IN, _text(row, "order_type"), "order_type (side)"),
                quantity=qty,
                price=_need_float(row, "fill_price", what),
                time=_ist_time(_text(row, "fill_time"), "%d-%m-%Y %H:%M:%S"),
            ))
        return out

    def positions(self) -> list[Position]:
        """Net positions (GET ``positions``)."""
        data = self._checked(self._read("other", "reading positions", self._orders_api.positions), "positions")
        out = []
        for row in data.get("positions") or []:
            what = "a position"
            out.append(Position(
                instrument=self._instrument(row, what),
                product=_lookup(_PRODUCT_IN, _text(row, "product_type"), "product_type"),
                quantity=_need_int(row, "net_quantity", what),
                average_price=_float(row, "net_averageprice", what, default=0.0) or 0.0,
                realized_pnl=_float(row, "realized_pnl", what, default=0.0) or 0.0,
                unrealized_pnl=_float(row, "unrealized_pnl", what, default=0.0) or 0.0,
                last_price=_float(row, "lastPrice", what),
            ))
        return out

    def holdings(self) -> list[Holding]:
        """Demat holdings (GET ``holdings``): quantity = ``dp_qty + t1_qty`` (today's sells show
        as positions); the instrument is the NSE listing unless only BSE matches."""
        data = self._checked(self._read("other", "reading holdings", self._orders_api.holdings), "holdings")
        out = []
        for row in data.get("data") or []:
            what = "a holding"
            listings = row.get("tradingsymbol")
            if not isinstance(listings, list) or not listings:
                raise BrokerError("Definedge sent a holding without its listings (tradingsymbol list)")
            listings = sorted(listings, key=lambda r: _text(r, "exchange") != "NSE")
            known = [r for r in listings if (_text(r, "exchange"), _text(r, "token")) in self._by_token
                     or (_text(r, "exchange"), _text(r, "tradingsymbol")) in self._by_symbol]
            inst = self._instrument((known or listings)[0], what)
            qty = (_int(row, "dp_qty", what, default=0) or 0) + (_int(row, "t1_qty", what, default=0) or 0)
            out.append(Holding(instrument=inst, quantity=qty, average_price=_need_float(row, "avg_buy_price", what)))
        return out

    def funds(self) -> Funds:
        """Cash limits (GET ``limits``): total = cash + payin + broker collateral; used = margin
        used when Definedge reports it; available = total - payout - used."""
        data = self._checked(self._read("other", "reading funds", self._orders_api.limits), "limits")
        what = "limits"
        total = _need_float(data, "cash", what) + (_float(data, "payin", what) or 0.0) + (
            _float(data, "brokerCollateralAmount", what) or 0.0)
        used_key = next((k for k in data if k.lower() in ("marginused", "margin_used")), None)
        used = (_float(data, used_key, what) or 0.0) if used_key else 0.0
        payout = _float(data, "payout", what) or 0.0
        return Funds(available=total - payout - used, used=used, total=total)

    # ------------------------------------------------------------------ market data

    def quote(self, instruments: list[Instrument]) -> dict[str, Quote]:
        """Last price and day statistics per instrument (GET ``quotes/{exchange}/{token}``),
        keyed by ``Instrument.symbol``."""
        out: dict[str, Quote] = {}
        for inst in instruments:
            exchange, token = _EXCHANGE_OF[inst.segment], self._token(inst)
            what = f"quote for {inst.symbol}"
            data = self._checked(self._read("quotes", f"reading the {what}", self._get(f"quotes/{exchange}/{token}")), what, "ltp")
            if _text(data, "tradingsymbol"):
                self._tsyms.setdefault((exchange, token), _text(data, "tradingsymbol"))
            now = self._clock().tz_convert(IST)
            time = None
            raw = _text(data, "last_trade_time")
            if raw:
                try:
                    t = dt.datetime.strptime(raw, "%H:%M:%S").time()
                    stamp = pd.Timestamp(dt.datetime.combine(now.date(), t)).tz_localize(IST)
                    time = (stamp - pd.Timedelta(days=1) if stamp > now else stamp).tz_convert("UTC")
                except ValueError:
                    time = None
            out[inst.symbol] = Quote(
                instrument=inst,
                last_price=_need_float(data, "ltp", what),
                time=time,
                bid=_float(data, "best_bid_price1", what),
                ask=_float(data, "best_ask_price1", what),
                open=_float(data, "day_open", what),
                high=_float(data, "day_high", what),
                low=_float(data, "day_low", what),
                close=_float(data, "close", what),
                volume=_float(data, "volume", what),
                oi=_float(data, "open_interest", what),
                upper_circuit=_float(data, "upper_circuit", what),
                lower_circuit=_float(data, "lower_circuit", what),
            )
        return out

    def history(self, instrument: Instrument, timeframe: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        """Closed bars starting in ``[start, end)`` from Definedge's history host.

        ``timeframe`` is ``"1m"`` or ``"1d"`` (Definedge has nothing else; build longer bars
        from 1m). Naive ``start``/``end`` are read as IST. Returns a frame indexed by bar start
        in Asia/Kolkata (``ts``; daily bars at the session date's midnight) with float columns
        ``open, high, low, close, volume`` and ``oi`` when Definedge sends it. Long ranges are
        fetched in windows; a bar still forming (or today's daily bar before 15:30) is left out.
        """
        try:
            tf = Timeframe.parse(timeframe)
        except StoreError as exc:
            raise BrokerError(str(exc)) from exc
        if tf.minutes not in _HISTORY_TIMEFRAME:
            raise BrokerError(
                f"Definedge history has 1-minute and daily bars only, not {tf}: fetch '1m' and let the store "
                f"build {tf} bars from them"
            )
        frame = _HISTORY_TIMEFRAME[tf.minutes]
        exchange, token = _EXCHANGE_OF[instrument.segment], self._token(instrument)
        lo, hi = self._utc(start), self._utc(end)
        now = self._clock()
        hi_req = min(hi, now)
        if lo >= hi_req:
            return _empty_candles()
        rows: list[list[str]] = []
        window = _HISTORY_WINDOW[frame]
        w0 = lo
        while w0 < hi_req:
            w1 = min(w0 + window, hi_req)
            a, b = w0.tz_convert(IST), w1.tz_convert(IST)
            route = f"{exchange}/{token}/{frame}/{a:%d%m%Y%H%M}/{b:%d%m%Y%H%M}"
            what = f"reading {frame} history of {instrument.symbol} {a:%Y-%m-%d %H:%M}..{b:%Y-%m-%d %H:%M} IST"
            rows.extend(self._read("history", what, lambda r=route, w=what: self._history_lines(r, w)))
            w0 = w1
        out = self._candles(rows, instrument.symbol, daily=tf.is_daily)
        if out.empty:
            return out
        starts = out.index.tz_convert("UTC")
        closes = starts + pd.Timedelta(minutes=1) if not tf.is_daily else (
            out.index + pd.Timedelta(hours=SESSION_CLOSE.hour, minutes=SESSION_CLOSE.minute)).tz_convert("UTC")
        first = lo.tz_convert(IST).normalize().tz_convert("UTC") if tf.is_daily else lo
        keep = (starts >= first) & (starts < hi) & (closes <= now)
        return out[keep]

    @staticmethod
    def _utc(value: Any) -> pd.Timestamp:
        ts = pd.Timestamp(value)
        return (ts.tz_localize(IST) if ts.tzinfo is None else ts).tz_convert("UTC")

    def _history_lines(self, route: str, what: str) -> list[list[str]]:
        data = self._c2i.send_request(route_prefix=_SDK_DATA_URL, route=route, method="GET")
        if not isinstance(data, dict):
            raise BrokerUnavailable(f"Definedge answered {what} with {type(data).__name__}")
        if "data" not in data:  # JSON instead of CSV
            if "status" not in data:
                raise BrokerUnavailable(f"Definedge answered {what} with JSON without status; treating it as a failure")
            return []  # {"status": "SUCCESS", ...} without rows: nothing in range
        return [line.split(",") for line in data["data"] if line.strip()]

    @staticmethod
    def _candles(rows: list[list[str]], symbol: str, *, daily: bool) -> pd.DataFrame:
        if not rows:
            return _empty_candles()
        stamps, values, ois = [], [], []
        for fields in rows:
            if len(fields) not in (6, 7):
                raise BrokerError(
                    f"Definedge history for {symbol}: a row has {len(fields)} fields, expected 6 or 7 "
                    f"(datetime, open, high, low, close, volume[, oi]): {','.join(fields)[:80]!r}"
                )
            try:
                stamps.append(dt.datetime.strptime(fields[0].strip(), "%d%m%Y%H%M"))
                values.append([float(x) for x in fields[1:6]])
                ois.append(float(fields[6]) if len(fields) == 7 else math.nan)
            except ValueError:
                raise BrokerError(f"Definedge history for {symbol}: unreadable row {','.join(fields)[:80]!r}") from None
        idx = pd.DatetimeIndex(stamps).tz_localize(IST)
        if daily:
            idx = idx.normalize()
        out = pd.DataFrame(values, columns=["open", "high", "low", "close", "volume"], index=idx, dtype="float64")
        if not all(math.isnan(x) for x in ois):
            out["oi"] = ois
        out.index.name = "ts"
        out = out[~out.index.duplicated(keep="last")].sort_index()
        return out

    # ------------------------------------------------------------------ GTT

    def _last_price(self, inst: Instrument, last_price: float | None) -> float:
        if last_price is not None:
            return float(last_price)
        return self.quote([inst])[inst.symbol].last_price

    def _gtt_checks(self, req: GttRequest, last_price: float) -> None:
        validate_gtt(req, last_price=last_price)
        inst = req.instrument
        problems = []
        implied = _GTT_PRODUCT[inst.segment.is_derivative]
        if req.product is not implied:
            problems.append(f"Definedge GTT orders are always {implied} ({_PRODUCT_OUT[implied]}) for {inst.segment}; "
                            f"use product={implied}")
        if req.kind is GttKind.SINGLE and req.legs[0].price is None:
            problems.append("Definedge GTT orders are limit orders: give the leg a price")
        if req.kind is GttKind.OCO:
            for label, leg in (("target", req.target), ("stop", req.stop)):
                if leg.price is not None and not math.isclose(leg.price, leg.trigger_price):
                    problems.append(f"Definedge OCO legs have one price each: set the {label} leg's price to its "
                                    f"trigger ({leg.trigger_price}) or None")
        if problems:
            raise InvalidOrder(f"{req.kind} GTT on {inst.symbol} not sent", problems)

    def _gtt_body(self, req: GttRequest, last_price: float) -> dict[str, Any]:
        inst = req.instrument
        base = {"exchange": _EXCHANGE_OF[inst.segment], "order_type": _SIDE_OUT[req.side],
                "tradingsymbol": self._tradingsymbol(inst)}
        if req.kind is GttKind.SINGLE:
            leg = req.legs[0]
            condition = "LTP_ABOVE" if leg.trigger_price > last_price else "LTP_BELOW"
            return {**base, "price": _price(leg.price), "quantity": int(leg.quantity),
                    "alert_price": _price(leg.trigger_price), "condition": condition}
        body = {**base, "stoploss_quantity": int(req.stop.quantity), "stoploss_price": _price(req.stop.trigger_price),
                "target_quantity": int(req.target.quantity), "target_price": _price(req.target.trigger_price)}
        if req.tag:
            body["remarks"] = req.tag
        return body

    def place_gtt(self, req: GttRequest, *, last_price: float | None = None) -> Gtt:
        """Place a GTT: SINGLE → POST ``gttplaceorder`` with LTP_ABOVE when the trigger is above
        the last price, else LTP_BELOW; OCO → POST ``ocoplaceorder`` (target and stop legs).

        ``last_price`` is fetched with a quote unless given. A SINGLE GTT cannot carry a tag on
        Definedge (no remarks field); an OCO's tag goes in ``remarks``. Not retried.
        """
        lp = self._last_price(req.instrument, last_price)
        self._gtt_checks(req, lp)
        body = self._gtt_body(req, lp)
        what = f"placing a {req.kind} GTT on {body['tradingsymbol']}"
        if req.kind is GttKind.SINGLE and req.tag:
            log.info("Definedge: a single GTT has no remarks field; tag %s stays on our record only", req.tag)
        if req.kind is GttKind.SINGLE:
            fn = lambda: self._orders_api.place_gtt_order(**body)  # noqa: E731
        else:
            fn = lambda: self._orders_api.place_oco_order(**body)  # noqa: E731
        try:
            data = self._checked(self._call("orders", what, fn, write=True), what, "alert_id")
        except BrokerUnavailable as exc:
            raise BrokerUnavailable(f"{exc}; check gtts() before placing it again") from exc
        gtt_id = str(data["alert_id"]).strip()
        with self._lock:
            self._gtt_kinds[gtt_id] = req.kind
            self._gtt_requests[gtt_id] = req
        return Gtt(gtt_id, req)

    def modify_gtt(self, gtt_id: str, req: GttRequest, *, last_price: float | None = None) -> Gtt:
        """Replace a GTT's legs (POST ``gttmodify`` or ``ocomodify``); the kind cannot change."""
        kind = self._gtt_kind(gtt_id)
        if kind is not req.kind:
            raise InvalidOrder(f"GTT {gtt_id} is {kind}; it cannot become {req.kind} (cancel it and place a new one)")
        lp = self._last_price(req.instrument, last_price)
        self._gtt_checks(req, lp)
        body = self._gtt_body(req, lp)
        what = f"modifying {kind} GTT {gtt_id}"
        if kind is GttKind.SINGLE:
            fn = lambda: self._orders_api.modify_gtt_order(alert_id=str(gtt_id), **body)  # noqa: E731
        else:
            fn = lambda: self._orders_api.modify_oco_order(alert_id=str(gtt_id), **body)  # noqa: E731
        self._checked(self._call("orders", what, fn, write=True), what)
        with self._lock:
            self._gtt_requests[str(gtt_id)] = req
        return Gtt(str(gtt_id), req)

    def cancel_gtt(self, gtt_id: str) -> None:
        """Cancel a GTT (GET ``gttcancel/{id}``) or OCO (GET ``ococancel/{id}``)."""
        kind = self._gtt_kind(gtt_id)
        what = f"cancelling {kind} GTT {gtt_id}"
        if kind is GttKind.SINGLE:
            fn = lambda: self._orders_api.cancel_gtt_order(str(gtt_id))  # noqa: E731
        else:
            fn = lambda: self._orders_api.cancel_oco_order(str(gtt_id))  # noqa: E731
        self._checked(self._call("orders", what, fn, write=True), what)
        with self._lock:
            self._gtt_kinds.pop(str(gtt_id), None)
            self._gtt_requests.pop(str(gtt_id), None)

    def _gtt_kind(self, gtt_id: str) -> GttKind:
        kind = self._gtt_kinds.get(str(gtt_id))
        if kind is not None:
            return kind
        for gtt in self.gtts():
            if gtt.gtt_id == str(gtt_id):
                return gtt.request.kind
        raise BrokerError(f"GTT {gtt_id} is not among Definedge's pending GTT/OCO orders")

    def gtts(self) -> list[Gtt]:
        """Pending GTT and OCO orders (GET ``gttorders``: Definedge keeps both in one book;
        OCO rows have condition ``LMT_OCO``)."""
        data = self._checked(self._read("other", "reading the GTT book", self._orders_api.gtt_orders), "the GTT book")
        out = []
        for row in data.get("pendingGTTOrderBook") or []:
            what = "a GTT"
            gtt_id = _text(row, "alert_id")
            kind = _lookup(_GTT_KIND_IN, _text(row, "condition"), "GTT condition")
            inst = self._instrument(row, what)
            implied = _PRODUCT_OUT[_GTT_PRODUCT[inst.segment.is_derivative]]
            product = _lookup(_PRODUCT_IN, _text(row, "product_type") or implied, "product_type")
            sent = self._gtt_requests.get(gtt_id)
            if kind is GttKind.SINGLE:
                trigger = _need_float(row, "trigger_price", what)
                price = _float(row, "price", what)
                if price is None:
                    price = sent.legs[0].price if sent else trigger  # the book omits the limit price
                legs: tuple[GttLeg, ...] = (GttLeg(trigger, price, _need_int(row, "quantity", what)),)
            else:
                target = _need_float(row, "target_price", what)
                stop = _need_float(row, "stoploss_price", what)
                legs = (GttLeg(target, target, _need_int(row, "target_quantity", what)),
                        GttLeg(stop, stop, _need_int(row, "stoploss_quantity", what)))
            req = GttRequest(
                instrument=inst,
                side=_lookup(_SIDE_IN, _text(row, "order_type"), "order_type (side)"),
                kind=kind,
                legs=legs,
                product=product,
                tag=_text(row, "remarks") or (sent.tag if sent else None) or None,
            )
            with self._lock:
                self._gtt_kinds[gtt_id] = kind
            out.append(Gtt(gtt_id, req, status="ACTIVE"))
        return out

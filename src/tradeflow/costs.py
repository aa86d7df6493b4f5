"""Indian trading charges per executed order: brokerage, STT, exchange, SEBI, stamp duty, GST.

A backtest that ignores charges flatters every high-turnover strategy, and options buying most
of all. This module prices one executed order (one side) the way a contract note does, from a
single dated rate table, so a trade on 2024-09-30 pays the old STT and one on 2024-10-01 the
new one::

    >>> from datetime import date
    >>> c = charges("index_options", "sell", 120.0, 75, on=date(2024, 11, 5))
    >>> c.total
    36.33
    >>> print(c)                                            # doctest: +NORMALIZE_WHITESPACE
    charges (INR) on turnover 9,000.00
      brokerage      20.00
      STT             9.00
      exchange        3.15
      SEBI            0.01
      stamp           0.00
      GST             4.17
      total          36.33

What is priced, per order:

* **brokerage** from a named schedule (``BROKERAGE``: ``"dhan"``, ``"definedge"``, ``"zero"``);
* **STT** on the side the law taxes (both sides for delivery, the sell side otherwise; options on
  premium);
* **exchange** transaction charges (NSE only);
* **SEBI** turnover fee, ₹10 per crore;
* **stamp** duty on the buy side only;
* **GST** at 18% on brokerage + exchange charges + SEBI fee.

Each component is rounded to paise (half up) and the total is the sum of the rounded components.
Not priced: NSE's IPFT levy (₹10/crore cash and futures, ₹50/crore options premium, since
2023-04-01; some brokers fold it into "exchange charges"), STT on exercised options (on
intrinsic value), DP charges on delivery sells, and brokers' own per-contract-note rounding (STT
is rounded to the rupee per contract note, not per order). Prices and turnovers are in rupees;
for options ``price`` is the premium.
"""

from __future__ import annotations

import datetime as dt
import difflib
import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Literal

import numpy as np

from .errors import TradeflowError

__all__ = [
    "Segment",
    "Side",
    "Charges",
    "RateRow",
    "RATE_TABLE",
    "BrokerageRule",
    "BROKERAGE",
    "ChargesError",
    "charges",
    "round_trip",
    "rates",
    "order_charges",
]


class ChargesError(TradeflowError, ValueError):
    """Charges cannot be computed: bad price, quantity, side, segment, broker, exchange or date."""


class Segment(enum.StrEnum):
    """What was traded and how: each has its own STT, stamp duty and exchange rate."""

    EQUITY_INTRADAY = "equity_intraday"
    EQUITY_DELIVERY = "equity_delivery"
    INDEX_FUTURES = "index_futures"
    STOCK_FUTURES = "stock_futures"
    INDEX_OPTIONS = "index_options"
    STOCK_OPTIONS = "stock_options"


class Side(enum.StrEnum):
    """Which side of the trade this order is; STT and stamp duty depend on it."""

    BUY = "buy"
    SELL = "sell"


_EI, _ED = Segment.EQUITY_INTRADAY, Segment.EQUITY_DELIVERY
_FUT = (Segment.INDEX_FUTURES, Segment.STOCK_FUTURES)
_OPT = (Segment.INDEX_OPTIONS, Segment.STOCK_OPTIONS)


# --------------------------------------------------------------------------- rate table


@dataclass(frozen=True)
class RateRow:
    """Statutory and exchange rates for some segments on NSE, from ``effective_from`` on.

    Rates are fractions of turnover (``0.025e-2`` is 0.025%); for options, of premium turnover.
    A row applies until the next row for the same segment.
    """

    segments: tuple[Segment, ...]
    effective_from: dt.date
    stt_buy: float
    stt_sell: float
    exchange_txn: float
    sebi_fee: float
    stamp_buy: float
    gst: float
    source: str
    market: str = "NSE"


_SEBI = 10 / 1e7
"""₹10 per crore of turnover (SEBI cut it from ₹15 to ₹10 with effect from 2020-06-01)."""
_GST = 0.18
"""GST on brokerage, exchange charges and SEBI fee, 18% since GST began on 2017-07-01."""

# Where a rate is not certain the source says so. Stamp duty rates are the uniform ones of the
# Indian Stamp Act amendment in force from 2020-07-01 (delivery 0.015%, intraday and options
# 0.003%, futures 0.002%, buyer pays), which is why the table starts on that day.
RATE_TABLE: tuple[RateRow, ...] = (
    # ---- equity intraday: STT 0.025% on the sell side (unchanged since 2013-06-01)
    RateRow((_EI,), dt.date(2020, 7, 1), 0.0, 0.025e-2, 0.00325e-2, _SEBI, 0.003e-2, _GST,
            "NSE cash ₹325/crore (top slab; NSE's volume slabs made some brokers pay less)"),
    RateRow((_EI,), dt.date(2021, 1, 1), 0.0, 0.025e-2, 0.00345e-2, _SEBI, 0.003e-2, _GST,
            "NSE raised transaction charges 6% from 2021-01-01: cash ₹345/crore"),
    RateRow((_EI,), dt.date(2023, 4, 1), 0.0, 0.025e-2, 0.00322e-2, _SEBI, 0.003e-2, _GST,
            "NSE rolled the 6% back from 2023-04-01; 0.00322% is the rate discount brokers "
            "published for 2023-24 (NSE's top slab was ₹325/crore): uncertain by ~1%"),
    RateRow((_EI,), dt.date(2024, 10, 1), 0.0, 0.025e-2, 0.00297e-2, _SEBI, 0.003e-2, _GST,
            "SEBI 'true to label' circular of 2024-07-01: NSE cash flat ₹2.97/lakh from 2024-10-01"),
    # ---- equity delivery: STT 0.1% on buy and on sell
    RateRow((_ED,), dt.date(2020, 7, 1), 0.1e-2, 0.1e-2, 0.00325e-2, _SEBI, 0.015e-2, _GST,
            "as equity intraday, 2020-07-01"),
    RateRow((_ED,), dt.date(2021, 1, 1), 0.1e-2, 0.1e-2, 0.00345e-2, _SEBI, 0.015e-2, _GST,
            "as equity intraday, 2021-01-01"),
    RateRow((_ED,), dt.date(2023, 4, 1), 0.1e-2, 0.1e-2, 0.00322e-2, _SEBI, 0.015e-2, _GST,
            "as equity intraday, 2023-04-01 (exchange rate uncertain by ~1%)"),
    RateRow((_ED,), dt.date(2024, 10, 1), 0.1e-2, 0.1e-2, 0.00297e-2, _SEBI, 0.015e-2, _GST,
            "as equity intraday, 2024-10-01"),
    # ---- futures (index and stock): STT on the sell side
    RateRow(_FUT, dt.date(2020, 7, 1), 0.0, 0.01e-2, 0.0019e-2, _SEBI, 0.002e-2, _GST,
            "STT 0.01%; NSE futures ₹190/crore: uncertain, inferred from the 2021 6% rise to ₹200"),
    RateRow(_FUT, dt.date(2021, 1, 1), 0.0, 0.01e-2, 0.002e-2, _SEBI, 0.002e-2, _GST,
            "STT 0.01%; NSE futures ₹200/crore after the 6% rise of 2021-01-01"),
    RateRow(_FUT, dt.date(2023, 4, 1), 0.0, 0.0125e-2, 0.0019e-2, _SEBI, 0.002e-2, _GST,
            "Finance Act 2023: STT 0.0125% from 2023-04-01; NSE 6% rollback: futures ~₹190/crore "
            "(0.0019% as brokers published it; uncertain)"),
    RateRow(_FUT, dt.date(2024, 10, 1), 0.0, 0.02e-2, 0.00173e-2, _SEBI, 0.002e-2, _GST,
            "Finance (No. 2) Act 2024: STT 0.02% from 2024-10-01; NSE futures flat ₹1.73/lakh"),
    RateRow(_FUT, dt.date(2026, 4, 1), 0.0, 0.05e-2, 0.00173e-2, _SEBI, 0.002e-2, _GST,
            "Budget 2026 (Finance Act 2026): STT on futures 0.05% from 2026-04-01"),
    # ---- options (index and stock): STT on the sell side, on premium
    RateRow(_OPT, dt.date(2020, 7, 1), 0.0, 0.05e-2, 0.05e-2, _SEBI, 0.003e-2, _GST,
            "STT 0.05% of premium (since 2016-06-01); NSE options ₹5,000/crore of premium (top slab)"),
    RateRow(_OPT, dt.date(2021, 1, 1), 0.0, 0.05e-2, 0.053e-2, _SEBI, 0.003e-2, _GST,
            "NSE options ₹5,300/crore of premium after the 6% rise of 2021-01-01"),
    RateRow(_OPT, dt.date(2023, 4, 1), 0.0, 0.0625e-2, 0.0495e-2, _SEBI, 0.003e-2, _GST,
            "Finance Act 2023: STT 0.0625% from 2023-04-01; NSE 6% rollback: 0.0495% as discount "
            "brokers published it (NSE's top slab was ₹5,000/crore): uncertain by ~1%"),
    RateRow(_OPT, dt.date(2024, 10, 1), 0.0, 0.1e-2, 0.03503e-2, _SEBI, 0.003e-2, _GST,
            "Finance (No. 2) Act 2024: STT 0.1% from 2024-10-01; NSE options flat ₹35.03/lakh premium"),
    RateRow(_OPT, dt.date(2026, 4, 1), 0.0, 0.15e-2, 0.03503e-2, _SEBI, 0.003e-2, _GST,
            "Budget 2026 (Finance Act 2026): STT on options premium 0.15% from 2026-04-01"),
)

_RATE_COLUMNS = ("stt_buy", "stt_sell", "exchange_txn", "sebi_fee", "stamp_buy", "gst")
_MARKETS = ("NSE",)


def _index_table() -> dict[Segment, tuple[np.ndarray, tuple[RateRow, ...], dict[str, np.ndarray]]]:
    """Per segment: start days (sorted), rows, and each rate as an array, for vector lookups."""
    index: dict[Segment, tuple[np.ndarray, tuple[RateRow, ...], dict[str, np.ndarray]]] = {}
    for segment in Segment:
        rows = tuple(sorted((r for r in RATE_TABLE if segment in r.segments), key=lambda r: r.effective_from))
        starts = np.array([r.effective_from for r in rows], dtype="datetime64[D]")
        if not rows or len(set(starts.tolist())) != len(rows):
            raise RuntimeError(f"RATE_TABLE must have one row per start date for {segment.value}")
        cols = {name: np.array([getattr(r, name) for r in rows], dtype=float) for name in _RATE_COLUMNS}
        index[segment] = (starts, rows, cols)
    return index


_BY_SEGMENT = _index_table()
_FIRST_DAY = min(r.effective_from for r in RATE_TABLE)


# --------------------------------------------------------------------------- brokerage


@dataclass(frozen=True)
class BrokerageRule:
    """Brokerage for one executed order: ``flat`` rupees, or ``pct_cap`` × turnover if lower."""

    flat: float
    pct_cap: float | None = None


_CAPPED = BrokerageRule(20.0, 0.03e-2)  # ₹20 or 0.03% of turnover, whichever is lower
_FLAT20 = BrokerageRule(20.0)
_FREE = BrokerageRule(0.0)

# Schedules are not dated: they describe the broker's tariff as given in the brief (Dhan and
# Definedge both advertise ₹20 or 0.03% for intraday and futures, flat ₹20 for options, ₹0 for
# delivery). Check the broker's current tariff page before trusting delivery costs.
BROKERAGE: Mapping[str, Mapping[Segment, BrokerageRule]] = MappingProxyType(
    {
        name: MappingProxyType(
            {
                _EI: _CAPPED,
                _ED: _FREE,
                Segment.INDEX_FUTURES: _CAPPED,
                Segment.STOCK_FUTURES: _CAPPED,
                Segment.INDEX_OPTIONS: _FLAT20,
                Segment.STOCK_OPTIONS: _FLAT20,
            }
        )
        for name in ("dhan", "definedge")
    }
    | {"zero": MappingProxyType({segment: _FREE for segment in Segment})}
)


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Charges:
    """Charges in rupees for one order or a round trip; ``total`` is the sum of the components."""

    brokerage: float
    stt: float
    exchange: float
    sebi: float
    stamp: float
    gst: float
    total: float
    turnover: float

    def __add__(self, other: Charges) -> Charges:
        if not isinstance(other, Charges):
            return NotImplemented
        return Charges(**{f.name: round(getattr(self, f.name) + getattr(other, f.name), 2) for f in fields(self)})

    def __str__(self) -> str:
        rows = [
            ("brokerage", self.brokerage),
            ("STT", self.stt),
            ("exchange", self.exchange),
            ("SEBI", self.sebi),
            ("stamp", self.stamp),
            ("GST", self.gst),
            ("total", self.total),
        ]
        lines = [f"charges (INR) on turnover {self.turnover:,.2f}"]
        lines += [f"  {name:<10} {value:>10,.2f}" for name, value in rows]
        return "\n".join(lines)


# --------------------------------------------------------------------------- coercion


def _suggest(value: object, choices: list[str]) -> str:
    close = difflib.get_close_matches(str(value).lower(), choices, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _segment(value: Segment | str) -> Segment:
    if isinstance(value, Segment):
        return value
    key = str(value).strip().lower().replace("-", "_").replace(" ", "_")
    try:
        return Segment(key)
    except ValueError:
        choices = [s.value for s in Segment]
        raise ChargesError(
            f"unknown segment {value!r}{_suggest(key, choices)} (choose from {', '.join(choices)})"
        ) from None


def _side(value: Side | str | int) -> Side:
    if isinstance(value, Side):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value in (1, -1):
        return Side.BUY if value == 1 else Side.SELL
    try:
        return Side(str(value).strip().lower())
    except ValueError:
        raise ChargesError(f"unknown side {value!r}: use 'buy' or 'sell' (or +1 / -1)") from None


def _broker(name: str, segment: Segment) -> BrokerageRule:
    key = str(name).strip().lower()
    if key not in BROKERAGE:
        choices = sorted(BROKERAGE)
        raise ChargesError(
            f"unknown broker {name!r}{_suggest(key, choices)} (brokerage schedules: {', '.join(choices)})"
        )
    return BROKERAGE[key][segment]


def _market(exchange: str) -> None:
    if str(exchange).strip().upper() not in _MARKETS:
        raise ChargesError(
            f"no rates for exchange {exchange!r}: only NSE is tabled; add rows to RATE_TABLE "
            "before pricing BSE trades"
        )


def _day(on: object) -> np.datetime64:
    """One trade date as ``datetime64[D]``; a datetime counts by its calendar date."""
    if isinstance(on, dt.datetime):
        on = on.date()
    if isinstance(on, str):
        try:
            on = dt.date.fromisoformat(on)
        except ValueError:
            raise ChargesError(f"trade date {on!r} is not an ISO date such as '2024-10-01'") from None
    if isinstance(on, (dt.date, np.datetime64)):
        day = np.datetime64(on, "D")
        if not np.isnat(day):
            return day
    raise ChargesError(f"trade date must be a date, got {on!r} ({type(on).__name__})")


def _positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ChargesError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    number = float(value)
    if not (math.isfinite(number) and number > 0):
        raise ChargesError(f"{name} must be positive and finite, got {value!r}")
    return number


# --------------------------------------------------------------------------- arithmetic


def _paise(x: np.ndarray) -> np.ndarray:
    """Round rupees to paise, half up, as contract notes do.

    Rounding at 1e-4 paise first removes float noise, so 0.225 (stored as 0.22499999…) is
    0.23, not 0.22.
    """
    return np.floor(np.round(x * 100.0, 4) + 0.5) / 100.0


def _lookup(segment: Segment, days: np.ndarray) -> dict[str, np.ndarray]:
    starts, _, cols = _BY_SEGMENT[segment]
    where = np.searchsorted(starts, days, side="right") - 1
    early = where < 0
    if early.any():
        first = days[early][0]
        raise ChargesError(
            f"no {segment.value} rates before {_FIRST_DAY.isoformat()} (got a trade on {first}): "
            "the rate table starts when uniform stamp duty began; add older rows to RATE_TABLE "
            "if you need them"
        )
    return {name: col[where] for name, col in cols.items()}


def _compute(
    segment: Segment, is_buy: np.ndarray, price: np.ndarray, qty: np.ndarray, days: np.ndarray, rule: BrokerageRule
) -> dict[str, np.ndarray]:
    """Every component for every order; the one formula both the scalar and vector paths use."""
    r = _lookup(segment, days)
    turnover = price * qty
    if rule.pct_cap is None:
        brokerage = np.full(turnover.shape, rule.flat)
    else:
        brokerage = np.minimum(rule.flat, rule.pct_cap * turnover)
    brokerage = _paise(brokerage)
    stt = _paise(turnover * np.where(is_buy, r["stt_buy"], r["stt_sell"]))
    exchange = _paise(turnover * r["exchange_txn"])
    sebi = _paise(turnover * r["sebi_fee"])
    stamp = _paise(np.where(is_buy, turnover * r["stamp_buy"], 0.0))
    gst = _paise(r["gst"] * (brokerage + exchange + sebi))
    total = np.round(brokerage + stt + exchange + sebi + stamp + gst, 2)
    return {
        "brokerage": brokerage,
        "stt": stt,
        "exchange": exchange,
        "sebi": sebi,
        "stamp": stamp,
        "gst": gst,
        "total": total,
        "turnover": turnover,
    }


# --------------------------------------------------------------------------- public API


def rates(segment: Segment | str, on: dt.date, *, exchange: str = "NSE") -> RateRow:
    """The rate row in force for ``segment`` on trade date ``on``, to check what will be charged."""
    seg = _segment(segment)
    _market(exchange)
    day = _day(on)
    _lookup(seg, np.array([day]))  # raises for dates before the table
    starts, rows, _ = _BY_SEGMENT[seg]
    return rows[int(np.searchsorted(starts, day, side="right")) - 1]


def charges(
    segment: Segment | str,
    side: Side | str | int,
    price: float,
    quantity: float,
    *,
    on: dt.date,
    broker: str = "dhan",
    exchange: str = "NSE",
) -> Charges:
    """Charges for one executed order of ``quantity`` units at ``price`` (premium for options).

    ``quantity`` is in units, not lots (one NIFTY lot of 75 is ``quantity=75``). ``on`` is the
    trade date and picks the rate row; ``broker`` names a schedule in ``BROKERAGE``.
    """
    seg = _segment(segment)
    sd = _side(side)
    p = _positive("price", price)
    q = _positive("quantity", quantity)
    _market(exchange)
    rule = _broker(broker, seg)
    parts = _compute(seg, np.array([sd is Side.BUY]), np.array([p]), np.array([q]), np.array([_day(on)]), rule)
    return Charges(**{name: float(values[0]) for name, values in parts.items()})


def round_trip(
    segment: Segment | str,
    entry_price: float,
    exit_price: float,
    quantity: float,
    *,
    side: Literal["long", "short"] = "long",
    on: dt.date,
    broker: str = "dhan",
    exchange: str = "NSE",
) -> Charges:
    """Charges for opening and closing a position: a long buys then sells, a short sells then buys.

    Both legs are priced on the same date ``on`` (for delivery trades held across a rate change,
    price the legs with :func:`charges` separately). Each field is the sum of the two legs.
    """
    direction = str(side).strip().lower()
    if direction not in ("long", "short"):
        raise ChargesError(f"round trip side must be 'long' or 'short', got {side!r}")
    first, second = (Side.BUY, Side.SELL) if direction == "long" else (Side.SELL, Side.BUY)
    kwargs = dict(on=on, broker=broker, exchange=exchange)
    return charges(segment, first, entry_price, quantity, **kwargs) + charges(
        segment, second, exit_price, quantity, **kwargs
    )


def order_charges(
    segment: Segment | str,
    sides: np.ndarray,
    prices: np.ndarray,
    quantities: np.ndarray,
    *,
    on_dates: np.ndarray | dt.date,
    broker: str = "dhan",
    exchange: str = "NSE",
) -> np.ndarray:
    """Total charges per order for a batch of orders, for backtests; equals ``charges(...).total``.

    ``sides`` holds +1 for buys and -1 for sells; ``on_dates`` is an array of ``datetime64[D]``
    (any datetime64 unit is floored to the day; tz-aware pandas times count by their local
    date) or one date for all orders. Arrays broadcast
    against each other, and the result has their common shape.
    """
    seg = _segment(segment)
    _market(exchange)
    rule = _broker(broker, seg)
    try:
        side_arr = np.asarray(sides)
        price_arr = np.asarray(prices, dtype=float)
        qty_arr = np.asarray(quantities, dtype=float)
    except (TypeError, ValueError) as e:
        raise ChargesError(f"sides, prices and quantities must be numeric arrays: {e}") from e
    if isinstance(on_dates, (dt.date, str, np.datetime64)):
        day_arr = np.asarray(_day(on_dates))
    else:
        if getattr(getattr(on_dates, "dtype", None), "tz", None) is not None:
            # tz-aware pandas times: the trade date is the local (IST) date, not the UTC one
            on_dates = getattr(on_dates, "dt", on_dates).tz_localize(None)
        try:
            day_arr = np.asarray(on_dates).astype("datetime64[D]")
        except (TypeError, ValueError) as e:
            raise ChargesError(f"on_dates must be datetime64[D] values or one date: {e}") from e
    try:
        side_arr, price_arr, qty_arr, day_arr = np.broadcast_arrays(side_arr, price_arr, qty_arr, day_arr)
    except ValueError:
        raise ChargesError(
            "sides, prices, quantities and on_dates must have matching shapes, got "
            f"{np.shape(sides)}, {np.shape(prices)}, {np.shape(quantities)}, {np.shape(on_dates)}"
        ) from None
    _check_array("sides", side_arr, ~np.isin(side_arr, (1, -1)) | (side_arr.dtype == bool), "+1 (buy) or -1 (sell)")
    _check_array("prices", price_arr, ~(np.isfinite(price_arr) & (price_arr > 0)), "positive and finite")
    _check_array("quantities", qty_arr, ~(np.isfinite(qty_arr) & (qty_arr > 0)), "positive and finite")
    _check_array("on_dates", day_arr, np.isnat(day_arr), "dates, not NaT")
    return _compute(seg, side_arr == 1, price_arr, qty_arr, day_arr, rule)["total"]


def _check_array(name: str, values: np.ndarray, bad: np.ndarray, wanted: str) -> None:
    bad = np.broadcast_to(bad, values.shape)
    if bad.any():
        at = tuple(int(i) for i in np.argwhere(bad)[0])
        where = at[0] if len(at) == 1 else at
        raise ChargesError(
            f"{name} must be {wanted}: {int(bad.sum())} bad value(s), first at index {where}: {values[at]}"
        )

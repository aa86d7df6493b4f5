"""The paper broker: the whole ``Broker`` protocol over any quote source, persisted in DuckDB.

Quotes come in through :meth:`PaperBroker.on_tick` (a ``feeds.Tick``) or
:meth:`PaperBroker.on_quote` (last, and bid/ask when known), from the simulated market, a
replay of the store, or a live broker's quotes. Orders are checked (``validate_order``, then
funds), rest in the book, and fill on later ticks of their symbol::

    >>> broker = PaperBroker(db_path=tmp / "paper.duckdb", cash=100_000)
    >>> broker.on_quote("RELIANCE", 2500.0)
    >>> order = broker.place_order(OrderRequest(reliance, Side.BUY, 10))   # OPEN
    >>> broker.on_quote("RELIANCE", 2501.0, bid=2500.9, ask=2501.1)
    >>> broker.order(order.order_id).average_price                          # 2501.1 (the ask)

Fill model (one tick of the order's symbol at a time, evaluated in placement order; an order
never fills on the tick during which it was placed, nor on a quote received before it):

* MARKET fills in full at the next tick: a buy at the ask, a sell at the bid when the quote
  has them, else at last ± ``slippage_ticks`` × tick size (worse for us).
* LIMIT fills in full when the last price trades through the limit (buy: last <= limit; sell:
  last >= limit), at the better of limit and last (a gap fills at the gapped price).
* SL triggers when the last price crosses the trigger (buy: last >= trigger; sell: last <=
  trigger), then behaves as a LIMIT at ``price`` from that same tick on.
* SL_M triggers the same way and fills on the triggering tick as a MARKET order.
* IOC orders that cannot fill on their first tick are cancelled.
* Partial fills are not modelled: an order fills in full on one tick or not at all (no
  volume or depth is consulted). There is no intraday square-off (yet).

DAY orders do not live past their session. An OPEN order with ``Validity.DAY`` becomes
EXPIRED (message "expired at the close"), its reserve released:

* at the close, when :meth:`PaperBroker.end_of_day` is called with a time on (or after) the
  IST date it was placed (for the engine, or a notebook, to call once the session is over);
* lazily, when any quote arrives on a later IST date than the order's placement (message
  "expired at the close of <date>"), before that quote is evaluated, so an order the close
  was never reported for cannot fill on the next morning's prices.

An order's placement time is the first time in its status history: the ``clock`` for orders
placed by :meth:`~PaperBroker.place_order`, the triggering quote's time for GTT orders. A
replay of old quotes should therefore pass a ``clock`` that follows the replay.

Cost of a quote: the book keeps OPEN orders and ACTIVE GTTs indexed by symbol, so a tick
costs the quote update plus the work on that symbol's own open orders and GTTs; a tick of a
symbol with none (the usual case) is a dictionary update of about a microsecond.

Charges are :func:`tradeflow.costs.charges` for the fill (segment from the instrument and
product, side, fill price, quantity, the fill's IST date, brokerage schedule ``brokerage``),
always at NSE rates (BSE trades are priced as NSE; the rate table has only NSE).

Money model (documented because it is simpler than a real RMS):

* ``cash`` is the ledger: it changes only by realised P&L and charges (charges are taken at
  each fill). ``Position.realized_pnl`` is **gross** (price P&L, before charges); the account's
  net result is ``cash - initial cash``, which is realised P&L minus all charges.
* ``used`` is the money blocked: for every open position its margin at the average price, and
  for every open order the requirement reserved when it was accepted. ``available = cash -
  used``. Margins: equity (either product) 100% of notional; futures ``margin_rate`` (15%) of
  notional; bought options the full premium; sold options ``margin_rate`` of strike ×
  quantity (of premium × quantity when there is no strike).
* An order is accepted only when the part that opens or adds to a position (the part that
  closes an existing position, net of other open closing orders, needs nothing) needs no
  more than ``available``, charges estimated included; else ``OrderRejected`` and nothing is
  stored. Equity DELIVERY cannot be sold short: a sell beyond the holding is rejected.

Persistence: orders (with status history), trades, positions, GTTs, cash, id counters and
last quotes live in one DuckDB file (default ``settings().data_dir / "paper" /
"paper.duckdb"``). Every change to the account is written in one transaction before the call
returns; a failed write is rolled back, the in-memory state is reloaded from the file and a
``BrokerError`` is raised. Quotes that change nothing else are kept in memory and written with
the next change (or :meth:`PaperBroker.flush` / :meth:`PaperBroker.close`), so a tick stream
does not pay a disk write per tick. A new ``PaperBroker`` on the same file sees the same
account (its ``cash`` argument is then ignored). One process at a time may open the file.

With ``writer=`` (a :class:`tradeflow._writer.Writer` shared with the engine's journal) each
change is still one transaction, but it is queued to that writer's thread instead of waiting
for the disk, in order with the journal's writes; a failed write then stops the account (every
later call raises ``BrokerError``) rather than rolling back.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from .. import costs
from ..calendar import IST_OFFSET
from .._writer import Writer
from ..config import settings
from .base import (
    Funds,
    Gtt,
    GttKind,
    GttLeg,
    GttRequest,
    Holding,
    Instrument,
    InstrumentKind,
    InvalidOrder,
    BrokerError,
    OptionType,
    Order,
    OrderRejected,
    OrderRequest,
    OrderStatus,
    OrderType,
    Position,
    Product,
    Quote,
    Segment,
    Side,
    Trade,
    Validity,
    advance,
    validate_gtt,
    validate_order,
)

__all__ = ["PaperBroker", "MARGIN_RATE", "costs_segment"]

MARGIN_RATE = 0.15
"""Futures margin (and sold-option margin on strike) as a fraction of notional."""

_IST = "Asia/Kolkata"
_UTC = pd.Timestamp(0, tz="UTC").tzinfo
_INF = math.inf
_DAY_NS = 86_400 * 1_000_000_000
_IST_NS = int(IST_OFFSET.total_seconds()) * 1_000_000_000
_UNKNOWN = "(not known to the paper broker)"
_NEVER = 1 << 62  # an expiry instant (UTC ns) that never comes: IOC orders, an empty book


def _next_ist_midnight(ns: int) -> int:
    """The UTC instant (ns) at which the IST date holding the UTC instant ``ns`` ends."""
    local = ns + _IST_NS
    return local - local % _DAY_NS + _DAY_NS - _IST_NS

_SEGMENT_BY_KIND = {
    InstrumentKind.FUTIDX: costs.Segment.INDEX_FUTURES,
    InstrumentKind.FUTSTK: costs.Segment.STOCK_FUTURES,
    InstrumentKind.OPTIDX: costs.Segment.INDEX_OPTIONS,
    InstrumentKind.OPTSTK: costs.Segment.STOCK_OPTIONS,
}


def costs_segment(instrument: Instrument, product: Product) -> costs.Segment:
    """The ``tradeflow.costs`` segment a fill of ``instrument`` with ``product`` is charged as."""
    if instrument.kind is InstrumentKind.EQUITY:
        return costs.Segment.EQUITY_DELIVERY if product is Product.DELIVERY else costs.Segment.EQUITY_INTRADAY
    try:
        return _SEGMENT_BY_KIND[instrument.kind]
    except KeyError:
        raise InvalidOrder(f"{instrument.symbol} ({instrument.kind}) cannot be traded, so it has no charges") from None


# ---------------------------------------------------------------------- (de)serialisation


def _ts(value: pd.Timestamp | None) -> str | None:
    return None if value is None else pd.Timestamp(value).isoformat()


def _from_ts(value: str | None) -> pd.Timestamp | None:
    return None if value is None else pd.Timestamp(value)


def _inst_to(i: Instrument) -> dict:
    return {
        "symbol": i.symbol, "segment": i.segment.value, "kind": i.kind.value, "lot_size": i.lot_size,
        "tick_size": i.tick_size, "name": i.name, "underlying": i.underlying,
        "expiry": i.expiry.isoformat() if i.expiry else None, "strike": i.strike,
        "option_type": i.option_type.value if i.option_type else None, "broker_ids": dict(i.broker_ids),
        "upper_circuit": i.upper_circuit, "lower_circuit": i.lower_circuit,
    }


def _inst_from(d: dict) -> Instrument:
    return Instrument(
        symbol=d["symbol"], segment=Segment(d["segment"]), kind=InstrumentKind(d["kind"]), lot_size=d["lot_size"],
        tick_size=d["tick_size"], name=d["name"], underlying=d["underlying"],
        expiry=dt.date.fromisoformat(d["expiry"]) if d["expiry"] else None, strike=d["strike"],
        option_type=OptionType(d["option_type"]) if d["option_type"] else None, broker_ids=d["broker_ids"],
        upper_circuit=d["upper_circuit"], lower_circuit=d["lower_circuit"],
    )


def _req_to(r: OrderRequest) -> dict:
    return {
        "instrument": _inst_to(r.instrument), "side": r.side.value, "quantity": r.quantity,
        "order_type": r.order_type.value, "product": r.product.value, "price": r.price,
        "trigger_price": r.trigger_price, "validity": r.validity.value, "tag": r.tag,
    }


def _req_from(d: dict) -> OrderRequest:
    return OrderRequest(
        instrument=_inst_from(d["instrument"]), side=Side(d["side"]), quantity=d["quantity"],
        order_type=OrderType(d["order_type"]), product=Product(d["product"]), price=d["price"],
        trigger_price=d["trigger_price"], validity=Validity(d["validity"]), tag=d["tag"],
    )


def _order_to(o: Order) -> dict:
    return {
        "order_id": o.order_id, "request": _req_to(o.request), "status": o.status.value,
        "filled_quantity": o.filled_quantity, "average_price": o.average_price, "message": o.message,
        "history": [[_ts(t), s.value] for t, s in o.history], "exchange_order_id": o.exchange_order_id,
        "updated_at": _ts(o.updated_at),
    }


def _order_from(d: dict) -> Order:
    return Order(
        order_id=d["order_id"], request=_req_from(d["request"]), status=OrderStatus(d["status"]),
        filled_quantity=d["filled_quantity"], average_price=d["average_price"], message=d["message"],
        history=tuple((_from_ts(t), OrderStatus(s)) for t, s in d["history"]),
        exchange_order_id=d["exchange_order_id"], updated_at=_from_ts(d["updated_at"]),
    )


def _gtt_req_to(r: GttRequest) -> dict:
    return {
        "instrument": _inst_to(r.instrument), "side": r.side.value, "kind": r.kind.value,
        "legs": [[leg.trigger_price, leg.price, leg.quantity] for leg in r.legs], "product": r.product.value,
        "tag": r.tag,
    }


def _gtt_req_from(d: dict) -> GttRequest:
    return GttRequest(
        instrument=_inst_from(d["instrument"]), side=Side(d["side"]), kind=GttKind(d["kind"]),
        legs=tuple(GttLeg(t, p, q) for t, p, q in d["legs"]), product=Product(d["product"]), tag=d["tag"],
    )


# ---------------------------------------------------------------------- mutable book-keeping


@dataclass
class _Book:
    """An order plus what only the paper broker needs to know about it."""

    order: Order
    seq: int  # placement sequence: fills are evaluated in this order
    tick_seen: int  # the symbol's tick counter when accepted: only later ticks may fill it
    reserve: float = 0.0  # money blocked while the order is open
    triggered: bool = False  # SL / SL_M: the trigger has been crossed
    expires: int = _NEVER  # DAY orders: the UTC ns at which the IST date of placement ends


@dataclass
class _Pos:
    instrument: Instrument
    product: Product
    quantity: int = 0
    average_price: float = 0.0
    realized: float = 0.0


@dataclass
class _GttBook:
    gtt: Gtt
    directions: tuple[int, ...]  # per leg: +1 fires when last >= trigger, -1 when last <= trigger
    order_id: str | None = None
    leg: int | None = None


@dataclass(slots=True)
class _Last:
    last: float
    bid: float | None
    ask: float | None
    ts: pd.Timestamp
    count: int  # ticks seen for this symbol (this process)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS orders (order_id VARCHAR PRIMARY KEY, seq BIGINT, body VARCHAR);
CREATE TABLE IF NOT EXISTS trades (trade_id VARCHAR PRIMARY KEY, seq BIGINT, body VARCHAR);
CREATE TABLE IF NOT EXISTS positions (key VARCHAR PRIMARY KEY, body VARCHAR);
CREATE TABLE IF NOT EXISTS gtts (gtt_id VARCHAR PRIMARY KEY, seq BIGINT, body VARCHAR);
CREATE TABLE IF NOT EXISTS quotes (symbol VARCHAR PRIMARY KEY, body VARCHAR);
"""


def _round_price(x: float) -> float:
    return round(x, 4)


class PaperBroker:
    """A simulated broker with a fill model, GTT/OCO triggers and a persisted account.

    ``db_path``: the DuckDB file (default ``settings().data_dir / "paper" / "paper.duckdb"``).
    ``cash``: starting cash of a new account (ignored when the file already holds one).
    ``instruments``: what :meth:`instruments` returns (instruments seen in orders and GTTs are
    remembered too). ``slippage_ticks``: ticks added to (buys) or taken from (sells) the last
    price for a market fill when the quote has no bid/ask. ``segment_for(instrument,
    product)``: override the ``tradeflow.costs`` segment (default :func:`costs_segment`).
    ``clock()``: a tz-aware ``pd.Timestamp`` for order status times (default: now, UTC).
    ``margin_rate`` and ``brokerage`` (a ``costs.BROKERAGE`` schedule) tune the money model.
    """

    name = "paper"
    live = False

    def __init__(
        self,
        *,
        db_path: str | Path | None = None,
        cash: float = 1_000_000.0,
        instruments: Iterable[Instrument] = (),
        slippage_ticks: int = 1,
        segment_for: Callable[[Instrument, Product], costs.Segment] | None = None,
        clock: Callable[[], pd.Timestamp] | None = None,
        margin_rate: float = MARGIN_RATE,
        brokerage: str = "dhan",
        writer: "Writer | None" = None,
    ) -> None:
        import duckdb

        if not (isinstance(cash, (int, float)) and math.isfinite(cash) and cash >= 0):
            raise BrokerError(f"paper cash must be a finite amount >= 0, got {cash!r}")
        if not (isinstance(slippage_ticks, int) and slippage_ticks >= 0):
            raise BrokerError(f"slippage_ticks must be a whole number >= 0, got {slippage_ticks!r}")
        if not (0 < margin_rate <= 1):
            raise BrokerError(f"margin_rate must be in (0, 1], got {margin_rate!r}")
        self.db_path = Path(db_path) if db_path is not None else settings().data_dir / "paper" / "paper.duckdb"
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self.slippage_ticks = slippage_ticks
        self.margin_rate = float(margin_rate)
        self.brokerage = brokerage
        self._segment_for = segment_for or costs_segment
        self._clock = clock or (lambda: pd.Timestamp.now(tz="UTC"))
        self._lock = threading.RLock()
        self._writer = writer
        self._given = list(instruments)
        try:
            self._db = duckdb.connect(str(self.db_path))
        except duckdb.Error as exc:
            raise BrokerError(
                f"cannot open the paper account {self.db_path}: {exc} (is another process using it?)"
            ) from exc
        self._db.execute(_SCHEMA)
        self._initial_cash = float(cash)
        self._load()

    # ------------------------------------------------------------------ state on disk

    def _load(self) -> None:
        db = self._db
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        self._cash = float(meta["cash"]) if "cash" in meta else self._initial_cash
        self._counters = {k: int(meta.get(f"next_{k}", 1)) for k in ("order", "trade", "gtt")}
        self._inst: dict[str, Instrument] = {i.symbol: i for i in self._given}
        self._orders: dict[str, _Book] = {}
        for seq, body in db.execute("SELECT seq, body FROM orders ORDER BY seq").fetchall():
            d = json.loads(body)
            order = _order_from(d["order"])
            # quote counters restart at 0, so any tick after a restart may fill an order accepted before it
            self._orders[order.order_id] = _Book(order, seq, 0, d["reserve"], d["triggered"])
            self._inst.setdefault(order.request.instrument.symbol, order.request.instrument)
        self._trades: list[tuple[Trade, dict]] = []
        for (body,) in db.execute("SELECT body FROM trades ORDER BY seq").fetchall():
            d = json.loads(body)
            trade = Trade(d["trade_id"], d["order_id"], _inst_from(d["instrument"]), Side(d["side"]), d["quantity"],
                          d["price"], _from_ts(d["time"]))
            self._trades.append((trade, d))
        self._positions: dict[str, _Pos] = {}
        for key, body in db.execute("SELECT key, body FROM positions").fetchall():
            d = json.loads(body)
            self._positions[key] = _Pos(_inst_from(d["instrument"]), Product(d["product"]), d["quantity"],
                                        d["average_price"], d["realized"])
        self._gtts: dict[str, _GttBook] = {}
        for (body,) in db.execute("SELECT body FROM gtts ORDER BY seq").fetchall():
            d = json.loads(body)
            gtt = Gtt(d["gtt_id"], _gtt_req_from(d["request"]), d["status"])
            self._gtts[gtt.gtt_id] = _GttBook(gtt, tuple(d["directions"]), d["order_id"], d["leg"])
            self._inst.setdefault(gtt.request.instrument.symbol, gtt.request.instrument)
        self._quotes: dict[str, _Last] = {}
        for symbol, body in db.execute("SELECT symbol, body FROM quotes").fetchall():
            d = json.loads(body)
            self._quotes[symbol] = _Last(d["last"], d["bid"], d["ask"], pd.Timestamp(d["ts"]), 0)
        # the indexes a tick works from: OPEN orders and ACTIVE GTTs by symbol, in placement order
        self._open: dict[str, dict[str, _Book]] = {}
        self._expiry_floor = _NEVER  # never later than the earliest ``expires`` of an open order
        for b in self._orders.values():
            if b.order.status is OrderStatus.OPEN:
                self._index(b)
        self._active: dict[str, dict[str, _GttBook]] = {}
        for gid, g in self._gtts.items():
            if g.gtt.status == "ACTIVE":
                self._active.setdefault(g.gtt.request.instrument.symbol, {})[gid] = g
        self._dirty_orders: set[str] = set()
        self._dirty_positions: set[str] = set()
        self._dirty_gtts: set[str] = set()
        self._dirty_quotes: set[str] = set()
        self._new_trades: list[int] = []
        if "cash" not in meta:
            self._commit(force=True)

    def _commit(self, *, force: bool = False) -> None:
        """Write every pending change in one transaction; on failure restore memory from disk."""
        changed = force or self._dirty_orders or self._dirty_positions or self._dirty_gtts or self._new_trades
        if not changed and not self._dirty_quotes:
            return
        db = self._db
        try:
            rows: dict[str, list[list]] = {"orders": [], "trades": [], "positions": [], "gtts": [], "quotes": [], "meta": []}
            for oid in self._dirty_orders:
                b = self._orders[oid]
                body = {"order": _order_to(b.order), "tick_seen": b.tick_seen, "reserve": b.reserve,
                        "triggered": b.triggered}
                rows["orders"].append([oid, b.seq, json.dumps(body)])
            for idx in self._new_trades:
                trade, d = self._trades[idx]
                rows["trades"].append([trade.trade_id, idx, json.dumps(d)])
            for key in self._dirty_positions:
                p = self._positions[key]
                body = {"instrument": _inst_to(p.instrument), "product": p.product.value, "quantity": p.quantity,
                        "average_price": p.average_price, "realized": p.realized}
                rows["positions"].append([key, json.dumps(body)])
            for gid in self._dirty_gtts:
                g = self._gtts[gid]
                body = {"gtt_id": gid, "request": _gtt_req_to(g.gtt.request), "status": g.gtt.status,
                        "directions": list(g.directions), "order_id": g.order_id, "leg": g.leg}
                rows["gtts"].append([gid, int(gid[1:]), json.dumps(body)])
            # quotes: those of the symbols this change touched (a restart must know the last price an
            # open order has seen); the others stay pending for flush()/close(), so a commit does not
            # rewrite every quoted symbol of a 500-instrument stream
            touched = {self._orders[o].order.request.instrument.symbol for o in self._dirty_orders}
            touched |= {self._positions[k].instrument.symbol for k in self._dirty_positions}
            touched |= {self._gtts[g].gtt.request.instrument.symbol for g in self._dirty_gtts}
            quotes = self._dirty_quotes if (force or not changed) else (self._dirty_quotes & touched)
            for symbol in quotes:
                q = self._quotes[symbol]
                body = {"last": q.last, "bid": q.bid, "ask": q.ask, "ts": _ts(q.ts)}
                rows["quotes"].append([symbol, json.dumps(body)])
            meta = {"cash": repr(self._cash), **{f"next_{k}": str(v) for k, v in self._counters.items()}}
            rows["meta"] = [[key, value] for key, value in meta.items()]
            if self._writer is not None:
                # the engine's mode: written in order with the journal by the shared writer thread
                self._writer.submit(lambda: self._write_rows(rows))
            else:
                self._write_rows(rows)
        except Exception as exc:
            try:
                if self._writer is None:
                    db.execute("ROLLBACK")
            finally:
                self._load()
            raise BrokerError(
                f"the paper account {self.db_path} could not be saved ({exc}); the last change was undone"
            ) from exc
        self._dirty_orders.clear()
        self._dirty_positions.clear()
        self._dirty_gtts.clear()
        self._dirty_quotes -= quotes
        self._new_trades.clear()

    def _write_rows(self, rows: dict[str, list[list]]) -> None:
        db = self._db
        db.execute("BEGIN TRANSACTION")
        try:
            # one multi-row statement per table: DuckDB pays about a millisecond per statement
            for table, values in rows.items():
                if values:
                    marks = ", ".join(["(" + ", ".join(["?"] * len(values[0])) + ")"] * len(values))
                    db.execute(f"INSERT OR REPLACE INTO {table} VALUES {marks}", [v for row in values for v in row])
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def flush(self) -> None:
        """Write quotes that changed nothing else (everything else is already on disk)."""
        with self._lock:
            self._commit()
            if self._writer is not None:
                self._writer.sync()
                self._check_open()

    def close(self) -> None:
        """Flush and close the database file (another ``PaperBroker`` may then open it)."""
        with self._lock:
            if self._db is not None:
                self._commit()
                if self._writer is not None:
                    self._writer.sync()
                self._db.close()
                self._db = None

    def __enter__(self) -> PaperBroker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _next_id(self, kind: str, prefix: str) -> str:
        n = self._counters[kind]
        self._counters[kind] = n + 1
        return f"{prefix}{n:06d}"

    # ------------------------------------------------------------------ quotes in

    def on_tick(self, tick) -> None:
        """Take one ``feeds.Tick`` (last price only: bid and ask become unknown) and run the book."""
        ts, price = tick.ts, tick.price
        # a feeds.Tick is already checked (UTC pd.Timestamp, positive finite float): skip the checks
        if type(ts) is pd.Timestamp and ts.tzinfo is _UTC and type(price) is float and 0.0 < price < _INF:
            self._take(tick.symbol, price, None, None, ts)
        else:
            self.on_quote(tick.symbol, price, ts=ts)

    def on_quote(self, symbol: str, last: float, bid: float | None = None, ask: float | None = None,
                 ts: pd.Timestamp | None = None) -> None:
        """Take a quote for ``symbol``, then fill or trigger its open orders and GTTs.

        ``ts`` (default: the ``clock``) must be tz-aware. Open DAY orders placed on an earlier
        IST date than ``ts`` are expired first (see the module docstring).
        """
        for name, value in (("last", last), ("bid", bid), ("ask", ask)):
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise BrokerError(f"{symbol}: quote {name} must be a positive number, got {value!r}")
        self._take(symbol, float(last), None if bid is None else float(bid), None if ask is None else float(ask),
                   self._utc(ts, f"{symbol}: quote time"))

    def _utc(self, ts, what: str) -> pd.Timestamp:
        if type(ts) is pd.Timestamp and ts.tzinfo is _UTC:
            return ts
        stamp = pd.Timestamp(ts) if ts is not None else self._clock()
        if stamp.tzinfo is None:
            raise BrokerError(f"{what} {stamp} has no time zone; give a UTC or IST timestamp")
        return stamp.tz_convert("UTC")

    def _take(self, symbol: str, last: float, bid: float | None, ask: float | None, stamp: pd.Timestamp) -> None:
        """The quote path after checks: ``stamp`` is a UTC ``pd.Timestamp``, prices positive floats."""
        with self._lock:
            if self._db is None:
                self._check_open()
            q = self._quotes.get(symbol)
            if q is None:
                q = self._quotes[symbol] = _Last(last, bid, ask, stamp, 1)
            else:  # updated in place: a tick stream should not allocate a record per tick
                q.last, q.bid, q.ask, q.ts = last, bid, ask, stamp
                q.count += 1
            self._dirty_quotes.add(symbol)
            if stamp.value >= self._expiry_floor:
                self._expire(stamp.value, stamp, None)
            book = self._open.get(symbol)
            if book:
                self._run_orders(book, q)
            gtts = self._active.get(symbol)
            if gtts:
                self._run_gtts(gtts, q)
            if self._dirty_orders or self._dirty_gtts or self._new_trades:
                self._commit()

    # ------------------------------------------------------------------ the open-order index and DAY expiry

    def _index(self, b: _Book) -> None:
        """Add an OPEN order to the per-symbol index (after every order already there: placement order)."""
        o = b.order
        self._open.setdefault(o.request.instrument.symbol, {})[o.order_id] = b
        if o.request.validity is Validity.DAY:
            b.expires = _next_ist_midnight(pd.Timestamp(o.history[0][0]).value)
            if b.expires < self._expiry_floor:
                self._expiry_floor = b.expires

    def _unindex(self, b: _Book) -> None:
        """Drop an order that stopped being OPEN from the index."""
        symbol = b.order.request.instrument.symbol
        book = self._open.get(symbol)
        if book is not None:
            book.pop(b.order.order_id, None)
            if not book:
                del self._open[symbol]

    def _expire(self, upto: int, at: pd.Timestamp, message: str | None) -> list[Order]:
        """Expire the open DAY orders whose placement date ended at or before ``upto`` (UTC ns)."""
        due = sorted((b for book in self._open.values() for b in book.values() if b.expires <= upto),
                     key=lambda b: b.seq)
        for b in due:
            o = b.order
            if message is None:
                placed = pd.Timestamp(o.history[0][0]).tz_convert(_IST).date()
                text = f"expired at the close of {placed.isoformat()}"
            else:
                text = message
            b.order = advance(o, OrderStatus.EXPIRED, at=at, message=text)
            b.reserve = 0.0
            self._dirty_orders.add(o.order_id)
            self._unindex(b)
        self._expiry_floor = min((b.expires for book in self._open.values() for b in book.values()), default=_NEVER)
        return [b.order for b in due]

    def end_of_day(self, ts: pd.Timestamp | None = None) -> list[Order]:
        """The session is over: expire every OPEN DAY order placed on or before the IST date of
        ``ts`` (default: the ``clock``), releasing its reserve; returns them in placement order.

        IOC orders, GTTs and positions are untouched (there is no intraday square-off). Calling
        it again, or for a date with no open DAY order, changes nothing.
        """
        with self._lock:
            self._check_open()
            stamp = self._utc(ts, "end_of_day: the close time")
            expired = self._expire(_next_ist_midnight(stamp.value), stamp, "expired at the close")
            if expired:
                self._commit()
            return expired

    def _check_open(self) -> None:
        if self._db is None:
            raise BrokerError("this paper broker is closed; create a new PaperBroker on the same file")
        if self._writer is not None and self._writer.failed is not None:
            raise BrokerError(f"the paper account {self.db_path} could not be saved ({self._writer.failed}); "
                              "the run must stop (the file holds the account up to the failed write)")

    def _market_price(self, inst: Instrument, side: Side, q: _Last) -> float:
        if side is Side.BUY and q.ask is not None:
            return q.ask
        if side is Side.SELL and q.bid is not None:
            return q.bid
        return _round_price(q.last + side.sign * self.slippage_ticks * inst.tick_size)

    def _fill_price(self, b: _Book, q: _Last) -> float | None:
        req = b.order.request
        inst, side, last = req.instrument, req.side, q.last
        ot = req.order_type
        if ot in (OrderType.SL, OrderType.SL_M) and not b.triggered:
            if (side is Side.BUY and last >= req.trigger_price) or (side is Side.SELL and last <= req.trigger_price):
                b.triggered = True
                self._dirty_orders.add(b.order.order_id)
            else:
                return None
        if ot in (OrderType.MARKET, OrderType.SL_M):
            return self._market_price(inst, side, q)
        limit = req.price
        if side is Side.BUY and last <= limit:
            return min(limit, last)
        if side is Side.SELL and last >= limit:
            return max(limit, last)
        return None

    def _run_orders(self, book: dict[str, _Book], q: _Last) -> None:
        """Evaluate one symbol's OPEN orders (``book``, in placement order) against its quote ``q``."""
        count = q.count
        for b in list(book.values()):
            if b.tick_seen >= count:
                continue
            price = self._fill_price(b, q)
            if price is not None:
                self._fill(b, price, q.ts)
            elif b.order.request.validity is Validity.IOC:
                o = b.order
                b.order = advance(o, OrderStatus.CANCELLED, at=q.ts, message="IOC order not fillable at the next tick")
                b.reserve = 0.0
                self._dirty_orders.add(o.order_id)
                self._unindex(b)

    def _charges(self, inst: Instrument, product: Product, side: Side, price: float, qty: int,
                 when: pd.Timestamp) -> costs.Charges:
        seg = self._segment_for(inst, product)
        day = pd.Timestamp(when).tz_convert(_IST).date()
        return costs.charges(seg, side.value.lower(), price, qty, on=day, broker=self.brokerage, exchange="NSE")

    def _fill(self, b: _Book, price: float, ts: pd.Timestamp) -> None:
        o = b.order
        req = o.request
        inst = req.instrument
        ch = self._charges(inst, req.product, req.side, price, req.quantity, ts)
        trade_id = self._next_id("trade", "T")
        trade = Trade(trade_id, o.order_id, inst, req.side, req.quantity, price, ts)
        record = {"trade_id": trade_id, "order_id": o.order_id, "instrument": _inst_to(inst), "side": req.side.value,
                  "quantity": req.quantity, "price": price, "time": _ts(ts), "product": req.product.value,
                  "charges": ch.total}
        self._trades.append((trade, record))
        self._new_trades.append(len(self._trades) - 1)
        key = self._pos_key(inst.symbol, req.product)
        pos = self._positions.setdefault(key, _Pos(inst, req.product))
        signed = req.side.sign * req.quantity
        if pos.quantity == 0 or (pos.quantity > 0) == (signed > 0):
            total = pos.quantity + signed
            pos.average_price = (pos.average_price * abs(pos.quantity) + price * abs(signed)) / abs(total)
            pos.quantity = total
        else:
            closed = min(abs(signed), abs(pos.quantity))
            pnl = (price - pos.average_price) * closed * (1 if pos.quantity > 0 else -1)
            pos.realized = round(pos.realized + pnl, 6)
            self._cash = round(self._cash + pnl, 6)
            rest = pos.quantity + signed
            if rest == 0:
                pos.average_price = 0.0
            elif (rest > 0) != (pos.quantity > 0):
                pos.average_price = price  # flipped: the excess opens at the fill price
            pos.quantity = rest
        self._cash = round(self._cash - ch.total, 6)
        self._dirty_positions.add(key)
        b.reserve = 0.0
        b.order = advance(o, OrderStatus.FILLED, at=ts, filled_quantity=req.quantity, average_price=price,
                          message=f"filled at {price:.2f}; charges {ch.total:.2f}")
        self._dirty_orders.add(o.order_id)
        self._unindex(b)

    # ------------------------------------------------------------------ money

    @staticmethod
    def _pos_key(symbol: str, product: Product) -> str:
        return f"{symbol}|{product.value}"

    def _margin(self, inst: Instrument, qty: int, price: float) -> float:
        """Money a position of ``qty`` (signed) at ``price`` blocks."""
        if qty == 0:
            return 0.0
        n = abs(qty)
        if inst.kind is InstrumentKind.EQUITY:
            return n * price
        if inst.kind in (InstrumentKind.FUTIDX, InstrumentKind.FUTSTK):
            return self.margin_rate * n * price
        if qty > 0:  # bought option: the premium
            return n * price
        return self.margin_rate * n * (inst.strike if inst.strike else price)

    def _used(self) -> float:
        used = sum(self._margin(p.instrument, p.quantity, p.average_price) for p in self._positions.values() if p.quantity)
        used += sum(b.reserve for book in self._open.values() for b in book.values())  # the index holds the OPEN ones
        return round(used, 2)

    def _estimate_price(self, req: OrderRequest) -> float:
        if req.order_type in (OrderType.LIMIT, OrderType.SL):
            return req.price
        if req.order_type is OrderType.SL_M:
            return _round_price(req.trigger_price + req.side.sign * self.slippage_ticks * req.instrument.tick_size)
        q = self._quotes.get(req.instrument.symbol)
        if q is None:
            raise OrderRejected(
                f"{req.side} {req.quantity} {req.instrument.symbol} rejected: no price known yet for a market order; "
                "feed a quote first (on_tick / on_quote)"
            )
        return self._market_price(req.instrument, req.side, q)

    def _requirement(self, req: OrderRequest, *, exclude: str | None = None) -> float:
        """Money this order needs to be accepted; raises ``OrderRejected`` when it cannot be."""
        inst = req.instrument
        key = self._pos_key(inst.symbol, req.product)
        pos = self._positions.get(key)
        held = pos.quantity if pos else 0
        closing_dir = -1 if held > 0 else 1
        pending_close = sum(
            b.order.request.quantity for oid, b in self._open.get(inst.symbol, {}).items()
            if oid != exclude and b.order.request.product is req.product and b.order.request.side.sign == closing_dir
        )
        closes = held != 0 and req.side.sign == closing_dir
        closable = max(0, abs(held) - pending_close) if closes else 0
        opening = req.quantity - min(req.quantity, closable)
        label = f"{req.side} {req.quantity} {inst.symbol}"
        if opening and req.side is Side.SELL and inst.kind is InstrumentKind.EQUITY and req.product is Product.DELIVERY:
            raise OrderRejected(
                f"{label} rejected: only {closable} can be sold from the DELIVERY holding of {held} "
                f"(open sell orders cover {pending_close}); delivery cannot be sold short, use INTRADAY"
            )
        price = self._estimate_price(req)
        when = self._quotes[inst.symbol].ts if inst.symbol in self._quotes else self._clock()
        charges = self._charges(inst, req.product, req.side, price, req.quantity, when).total
        need = round(self._margin(inst, req.side.sign * opening, price) + charges, 2)
        available = self._cash - self._used() + (self._orders[exclude].reserve if exclude else 0.0)
        if need > available + 1e-9:
            raise OrderRejected(
                f"{label} rejected: insufficient funds, needs {need:,.2f} (margin for {opening} at {price:,.2f} "
                f"plus estimated charges {charges:,.2f}) but only {available:,.2f} is available"
            )
        return need

    # ------------------------------------------------------------------ orders

    def _last(self, symbol: str) -> float | None:
        q = self._quotes.get(symbol)
        return q.last if q else None

    def _get(self, order_id: str) -> _Book:
        try:
            return self._orders[order_id]
        except KeyError:
            raise BrokerError(f"no paper order {order_id!r}; orders() lists them") from None

    def place_order(self, req: OrderRequest) -> Order:
        """Validate, check funds, and accept ``req`` as an OPEN order (fills on later ticks)."""
        with self._lock:
            self._check_open()
            validate_order(req, last_price=self._last(req.instrument.symbol))
            reserve = self._requirement(req)
            return self._accept(req, reserve)

    def _accept(self, req: OrderRequest, reserve: float) -> Order:
        now = self._clock()
        oid = self._next_id("order", "P")
        order = Order(oid, req, OrderStatus.PENDING, history=((now, OrderStatus.PENDING),), updated_at=now)
        order = advance(order, OrderStatus.OPEN, at=now)
        q = self._quotes.get(req.instrument.symbol)
        b = self._orders[oid] = _Book(order, int(oid[1:]), q.count if q else 0, reserve)
        self._index(b)
        self._inst.setdefault(req.instrument.symbol, req.instrument)
        self._dirty_orders.add(oid)
        self._commit()
        return order

    def modify_order(self, order_id: str, *, quantity: int | None = None, price: float | None = None,
                     trigger_price: float | None = None, order_type: OrderType | None = None) -> Order:
        """Change an OPEN order; the new order is validated and funds re-checked as if new."""
        with self._lock:
            self._check_open()
            b = self._get(order_id)
            o = b.order
            if o.status is not OrderStatus.OPEN:
                raise OrderRejected(f"order {order_id} is {o.status.lower()}; only open orders can be modified")
            req = o.request
            changes: dict = {}
            if order_type is not None and order_type is not req.order_type:
                changes["order_type"] = order_type
                if order_type in (OrderType.MARKET, OrderType.SL_M) and price is None:
                    changes["price"] = None
                if order_type in (OrderType.MARKET, OrderType.LIMIT) and trigger_price is None:
                    changes["trigger_price"] = None
            if quantity is not None:
                changes["quantity"] = quantity
            if price is not None:
                changes["price"] = price
            if trigger_price is not None:
                changes["trigger_price"] = trigger_price
            if not changes:
                raise InvalidOrder(f"order {order_id}: nothing to modify (give quantity, price, trigger_price or order_type)")
            new = replace(req, **changes)
            stopped = new.order_type in (OrderType.SL, OrderType.SL_M) and b.triggered
            validate_order(new, last_price=None if stopped else self._last(req.instrument.symbol))
            reserve = self._requirement(new, exclude=order_id)
            b.order = advance(o, OrderStatus.OPEN, at=self._clock(), request=new)
            b.reserve = reserve
            if new.order_type in (OrderType.MARKET, OrderType.LIMIT):
                b.triggered = False
            self._dirty_orders.add(order_id)
            self._commit()
            return b.order

    def cancel_order(self, order_id: str) -> Order:
        """Cancel an OPEN order; a filled, cancelled or rejected one raises ``OrderRejected``."""
        with self._lock:
            self._check_open()
            b = self._get(order_id)
            o = b.order
            if o.status is OrderStatus.FILLED:
                raise OrderRejected(f"order {order_id} is already filled at {o.average_price:.2f}; it cannot be cancelled")
            if o.status is not OrderStatus.OPEN:
                raise OrderRejected(f"order {order_id} is already {o.status.lower()}; it cannot be cancelled")
            b.order = advance(o, OrderStatus.CANCELLED, at=self._clock(), message="cancelled by the user")
            b.reserve = 0.0
            self._dirty_orders.add(order_id)
            self._unindex(b)
            self._commit()
            return b.order

    def orders(self) -> list[Order]:
        with self._lock:
            return [b.order for b in sorted(self._orders.values(), key=lambda b: b.seq)]

    def order(self, order_id: str) -> Order:
        with self._lock:
            return self._get(order_id).order

    def order_by_tag(self, tag: str) -> Order | None:
        """The latest order carrying ``tag``, or None."""
        with self._lock:
            found = [b for b in self._orders.values() if b.order.request.tag == tag]
            return max(found, key=lambda b: b.seq).order if found else None

    def trades(self) -> list[Trade]:
        with self._lock:
            return [t for t, _ in self._trades]

    def charges_paid(self, order_id: str | None = None) -> float:
        """Total charges taken from cash, for one order or for the whole account."""
        with self._lock:
            return round(sum(d["charges"] for _, d in self._trades if order_id in (None, d["order_id"])), 2)

    # ------------------------------------------------------------------ positions and money out

    def positions(self) -> list[Position]:
        """Net positions per symbol and product; ``realized_pnl`` is gross of charges."""
        with self._lock:
            out = []
            for p in self._positions.values():
                last = self._last(p.instrument.symbol)
                unreal = (last - p.average_price) * p.quantity if (last is not None and p.quantity) else 0.0
                out.append(Position(p.instrument, p.product, p.quantity, p.average_price, round(p.realized, 2),
                                    round(unreal, 2), last))
            return out

    def holdings(self) -> list[Holding]:
        """Equity DELIVERY positions that are long."""
        with self._lock:
            return [
                Holding(p.instrument, p.quantity, p.average_price, self._last(p.instrument.symbol))
                for p in self._positions.values()
                if p.product is Product.DELIVERY and p.instrument.kind is InstrumentKind.EQUITY and p.quantity > 0
            ]

    def funds(self) -> Funds:
        """``total`` is the cash ledger, ``used`` the money blocked, ``available = total - used``."""
        with self._lock:
            used = self._used()
            return Funds(available=round(self._cash - used, 2), used=used, total=round(self._cash, 2))

    def quote(self, instruments: list[Instrument]) -> dict[str, Quote]:
        """The last known quote per symbol; symbols never quoted are left out."""
        with self._lock:
            out = {}
            for inst in instruments:
                q = self._quotes.get(inst.symbol)
                if q is not None:
                    out[inst.symbol] = Quote(inst, q.last, q.ts, q.bid, q.ask)
            return out

    def last_quote(self, symbol: str | Instrument) -> Quote | None:
        """The last quote taken for ``symbol`` (a symbol or an ``Instrument``), or None if never quoted.

        Its ``time`` is UTC; ``bid``/``ask`` are None when the quote had none (a ``feeds.Tick``).
        Its ``instrument`` is the one given, else the one the broker knows (``instruments=``, or
        seen in an order or GTT); a symbol that was only ever quoted gets a stand-in carrying
        just the symbol (NSE_EQ, EQUITY, ``name`` "(not known to the paper broker)"): pass the
        ``Instrument`` when its details matter. Never raises for a symbol it has not seen.
        """
        with self._lock:
            name = symbol.symbol if isinstance(symbol, Instrument) else symbol
            q = self._quotes.get(name)
            if q is None:
                return None
            inst = symbol if isinstance(symbol, Instrument) else self._inst.get(name)
            if inst is None:
                inst = Instrument(name, Segment.NSE_EQ, InstrumentKind.EQUITY, name=_UNKNOWN)
            return Quote(inst, q.last, q.ts, q.bid, q.ask)

    def history(self, instrument: Instrument, timeframe: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        raise BrokerError("the paper broker has no history; use the store")

    def instruments(self) -> list[Instrument]:
        return list(self._given)

    # ------------------------------------------------------------------ GTT

    def _gtt_directions(self, req: GttRequest) -> tuple[int, ...]:
        last = self._last(req.instrument.symbol)
        if last is None:
            raise InvalidOrder(
                f"{req.kind} GTT on {req.instrument.symbol} not sent: no last price known yet; feed a quote first"
            )
        validate_gtt(req, last_price=last)
        return tuple(1 if leg.trigger_price > last else -1 for leg in req.legs)

    def place_gtt(self, req: GttRequest) -> Gtt:
        """Store an ACTIVE GTT; on a later quote crossing a trigger its order is placed (a LIMIT at
        the leg's price, or MARKET), and for OCO the other leg is dropped."""
        with self._lock:
            self._check_open()
            directions = self._gtt_directions(req)
            gid = self._next_id("gtt", "G")
            g = self._gtts[gid] = _GttBook(Gtt(gid, req, "ACTIVE"), directions)
            self._active.setdefault(req.instrument.symbol, {})[gid] = g
            self._inst.setdefault(req.instrument.symbol, req.instrument)
            self._dirty_gtts.add(gid)
            self._commit()
            return self._gtts[gid].gtt

    def _get_gtt(self, gtt_id: str) -> _GttBook:
        try:
            g = self._gtts[gtt_id]
        except KeyError:
            raise BrokerError(f"no paper GTT {gtt_id!r}; gtts() lists them") from None
        if g.gtt.status != "ACTIVE":
            raise OrderRejected(f"GTT {gtt_id} is {g.gtt.status.lower()}; only active GTTs can be changed")
        return g

    def modify_gtt(self, gtt_id: str, req: GttRequest) -> Gtt:
        with self._lock:
            self._check_open()
            g = self._get_gtt(gtt_id)
            if req.instrument.symbol != g.gtt.request.instrument.symbol:
                raise InvalidOrder(f"GTT {gtt_id} is on {g.gtt.request.instrument.symbol}, not {req.instrument.symbol}")
            g.directions = self._gtt_directions(req)
            g.gtt = replace(g.gtt, request=req)
            self._dirty_gtts.add(gtt_id)
            self._commit()
            return g.gtt

    def cancel_gtt(self, gtt_id: str) -> None:
        with self._lock:
            self._check_open()
            g = self._get_gtt(gtt_id)
            g.gtt = replace(g.gtt, status="CANCELLED")
            self._unindex_gtt(g)
            self._dirty_gtts.add(gtt_id)
            self._commit()

    def gtts(self) -> list[Gtt]:
        """Every GTT with its status: ACTIVE, TRIGGERED or CANCELLED."""
        with self._lock:
            return [g.gtt for g in self._gtts.values()]

    def gtt_order(self, gtt_id: str) -> Order | None:
        """The order a triggered GTT placed (None while it is active or after a cancel)."""
        with self._lock:
            g = self._gtts.get(gtt_id)
            if g is None:
                raise BrokerError(f"no paper GTT {gtt_id!r}; gtts() lists them")
            return self._orders[g.order_id].order if g.order_id else None

    def _unindex_gtt(self, g: _GttBook) -> None:
        symbol = g.gtt.request.instrument.symbol
        active = self._active.get(symbol)
        if active is not None:
            active.pop(g.gtt.gtt_id, None)
            if not active:
                del self._active[symbol]

    def _run_gtts(self, active: dict[str, _GttBook], q: _Last) -> None:
        """Fire one symbol's ACTIVE GTTs (``active``, in placement order) that ``q`` crosses."""
        for gid, g in list(active.items()):
            req = g.gtt.request
            for i, (leg, d) in enumerate(zip(req.legs, g.directions)):
                if (d > 0 and q.last >= leg.trigger_price) or (d < 0 and q.last <= leg.trigger_price):
                    break
            else:
                continue
            order_type = OrderType.MARKET if leg.price is None else OrderType.LIMIT
            oreq = OrderRequest(req.instrument, req.side, leg.quantity, order_type, req.product, leg.price, tag=req.tag)
            g.gtt = replace(g.gtt, status="TRIGGERED")
            g.leg = i
            self._unindex_gtt(g)
            self._dirty_gtts.add(gid)
            try:
                validate_order(oreq, last_price=q.last)
                reserve = self._requirement(oreq)
            except BrokerError as exc:
                now = q.ts
                oid = self._next_id("order", "P")
                order = Order(oid, oreq, OrderStatus.PENDING, history=((now, OrderStatus.PENDING),), updated_at=now)
                order = advance(order, OrderStatus.REJECTED, at=now, message=f"GTT {gid}: {exc}")
                self._orders[oid] = _Book(order, int(oid[1:]), q.count)
                self._dirty_orders.add(oid)
                g.order_id = oid
                continue
            now = q.ts
            oid = self._next_id("order", "P")
            order = Order(oid, oreq, OrderStatus.PENDING, history=((now, OrderStatus.PENDING),), updated_at=now,
                          message=f"placed by GTT {gid}")
            order = advance(order, OrderStatus.OPEN, at=now)
            b = self._orders[oid] = _Book(order, int(oid[1:]), q.count, reserve)
            self._index(b)
            self._dirty_orders.add(oid)
            g.order_id = oid

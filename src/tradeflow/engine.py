"""The paper/live loop: ticks → candles → strategy step → risk → orders → journal.

One engine serves paper and live alike; only the broker and the stream differ. Per event:

* a tick of the signal symbol first closes the bar(s) whose end it has passed (the candle
  builder), and each closed bar goes to the strategy :class:`~tradeflow.strategy.Stepper`
  (the backtest's own kernels), whose decision becomes orders; *then* the tick goes to the
  paper broker (when paper), so a market order decided at a bar close fills at the first
  price of the next bar, the backtest's "next open";
* then open orders are polled until the broker says filled, rejected or cancelled (with a
  timeout that cancels); a position opens only on a confirmed entry fill and closes only on
  a confirmed exit fill; an exit is never sent twice for one position (a rejected exit is
  retried with a new tag, at most ``MAX_EXIT_ATTEMPTS`` times, then the engine stops loudly);
* then the tick-time risk checks (:mod:`tradeflow.risk`) and the housekeeping once per
  second of event time: the ``KILL`` file, the ``until`` time, the square-off safety net.

Order tags are ``<run hash>-<YYMMDDHHMM of the entry bar>-<leg>`` (legs: ``e`` the entry, ``x``
its exit whatever the reason, ``x2``/``x3`` exit retries; the reason is in the journal), so a
restart that replays the day derives the same tags and adopts the orders already sent (from
the journal, or from the broker by tag when the journal only got the "sending" row) instead
of sending them again. Ticks at or before the journal's last instant are a catch-up: they
rebuild candles and strategy state but are not fed to the paper broker, and decisions made
there send nothing new.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from . import costs
from .brokers.base import (
    Broker,
    BrokerError,
    BrokerUnavailable,
    Instrument,
    InvalidOrder,
    Order,
    OrderRejected,
    OrderRequest,
    OrderStatus,
    OrderType,
    Product,
    SessionExpired,
    Side,
)
from .calendar import IST, IST_OFFSET
from .errors import ParameterError
from .feeds import Bar, CandleBuilder, Tick
from .journal import Journal, OrderRow, PositionRow
from .notify import LogNotifier, Notifier
from .risk import OpenRisk, RiskParams, TickRisk
from .strategy import Decision, StrategyParams, Stepper

__all__ = ["Engine", "make_tag", "run_hash", "MAX_EXIT_ATTEMPTS"]

log = logging.getLogger(__name__)

MAX_EXIT_ATTEMPTS = 3
MAX_REFUSED_ENTRIES = 3
_NS = 1_000_000_000
_IST_NS = int(IST_OFFSET.total_seconds()) * _NS
_DAY_NS = 86_400 * _NS


def run_hash(run_id: str) -> str:
    """Eight hex characters naming the run inside order tags (tags are at most 25 characters)."""
    return hashlib.sha1(run_id.encode()).hexdigest()[:8]


def make_tag(run_id: str, bar_ts: pd.Timestamp, leg: str) -> str:
    """The client tag of an order: (run, bar, leg), the same on every restart."""
    local = pd.Timestamp(bar_ts).tz_convert(IST)
    return f"{run_hash(run_id)}-{local:%y%m%d%H%M}-{leg}"


def _local_minutes(ns: int) -> int:
    return ((ns + _IST_NS) % _DAY_NS) // (60 * _NS)


def _ist_day(ns: int) -> dt.date:
    return dt.date(1970, 1, 1) + dt.timedelta(days=(ns + _IST_NS) // _DAY_NS)


@dataclass
class _Pending:
    tag: str
    leg: str
    position_id: str
    request: OrderRequest
    placed_ns: int
    order_id: str | None
    status: str
    adopted: bool = False


@dataclass
class _Position:
    row: PositionRow
    instrument: Instrument
    entry_side: Side
    risk: OpenRisk | None = None
    exit_wanted: str = ""  # an exit decided before the entry was confirmed
    exit_attempts: int = 0
    retry_reason: str = ""


@dataclass
class DayStats:
    day: dt.date | None = None
    trades: int = 0
    gross: float = 0.0
    charges: float = 0.0
    orders: int = 0
    halted: str = ""  # why entries are stopped for the day ("" when they are not)
    refused: int = 0  # entries refused in a row

    @property
    def net(self) -> float:
        return self.gross - self.charges


@dataclass
class EngineStatus:
    """What the notebook's status line and the final summary show."""

    run_id: str
    state: str
    last_bar: pd.Timestamp | None
    position: str
    day_pnl: float
    open_pnl: float
    trades: int
    feed: str = ""

    def line(self) -> str:
        bar = f"{self.last_bar:%Y-%m-%d %H:%M}" if self.last_bar is not None else "-"
        return (f"[{self.state}] last bar {bar} | position {self.position} | day P&L {self.day_pnl:,.2f} "
                f"(open {self.open_pnl:,.2f}) | trades {self.trades}" + (f" | feed {self.feed}" if self.feed else ""))


class Engine:
    """The trading loop for one signal symbol. Build it, ``warm_up`` it, then ``run(stream)``.

    ``instrument_for(direction, spot)`` picks what an entry trades (the underlying, its
    future, or an ATM option); ``lots`` × the instrument's lot size is the quantity.
    ``paper=True`` feeds every tick to the broker (a ``PaperBroker``). ``clock`` is the
    wall clock used for live polling intervals; event time comes from the ticks.
    """

    def __init__(
        self,
        *,
        run_id: str,
        symbol: str,
        params: StrategyParams,
        broker: Broker,
        journal: Journal,
        instrument_for: Callable[[int, float], Instrument],
        lots: int = 1,
        risk: RiskParams | None = None,
        product: Product = Product.INTRADAY,
        notifier: Notifier | None = None,
        paper: bool = True,
        run_dir: Path | None = None,
        until: dt.time = dt.time(15, 30),
        fill_timeout: float = 30.0,
        poll_interval: float = 0.0,
        subscribe: Callable[[Instrument], None] | None = None,
        on_status: Callable[[EngineStatus], None] | None = None,
        wall_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.run_id = run_id
        self.symbol = symbol
        self.params = params
        self.risk_params = risk or RiskParams()
        if lots > self.risk_params.max_lots:
            raise ParameterError(f"lots {lots} is above risk.max_lots {self.risk_params.max_lots}; lower lots or raise the limit")
        self.broker = broker
        self.journal = journal
        self.instrument_for = instrument_for
        self.lots = lots
        self.product = product
        self.notifier = notifier or LogNotifier()
        self.paper = paper
        self.run_dir = run_dir
        self.until_min = until.hour * 60 + until.minute
        self.fill_timeout_ns = int(fill_timeout * _NS)
        self.poll_interval = poll_interval
        self.subscribe = subscribe
        self.on_status = on_status
        self._wall = wall_clock
        self.stepper = Stepper(params)
        self.builder = CandleBuilder(params.timeframe, symbol=symbol)
        self.tick_risk = TickRisk(params, self.risk_params)
        self.now_ns = 0
        self.resume_ns = -1
        self.positions: dict[str, _Position] = {}  # at most one open/opening plus one closing (a reversal)
        self._fed_until: dict[str, int] = {}
        self.pending: dict[str, _Pending] = {}
        self.deferred: dict[str, _Pending] = {}
        self.day = DayStats()
        self.total = DayStats()
        self.last_bar: Bar | None = None
        self.last_price: dict[str, float] = {}
        self.state = "ready"
        self.stop_reason = ""
        self._stopping = False
        self._next_house_ns = 0
        self._day_start = self._day_end = 0
        self._broker_seen_ns = -1
        self._next_kill_check = -math.inf  # a restarted paper run: up to here the paper account may know our tags
        self._last_poll = -math.inf
        self._sq_min = params.square_off.hour * 60 + params.square_off.minute
        self.feed_health: Callable[[], str] | None = None

    # ------------------------------------------------------------------ set-up
    def warm_up(self, candles: pd.DataFrame) -> "Engine":
        """History before the first live bar: indicators only, no entries."""
        if len(candles):
            self.stepper.warm_up(candles)
        return self

    def resume(self) -> int | None:
        """Where a restarted run catches up to (None for a new run)."""
        ns = self.journal.resume_ns(self.run_id)
        self.resume_ns = ns if ns is not None else -1
        if self.paper:
            # the paper account already saw the ticks up to its last quote: do not feed them twice
            for sym, q in getattr(self.broker, "_quotes", {}).items():
                self._fed_until[sym] = int(q.ts.value)
            self._broker_seen_ns = max(self._fed_until.values(), default=-1)
        if ns is not None:
            log.info("%s: resuming; events up to %s are a catch-up (no new orders)", self.run_id, pd.Timestamp(ns, tz="UTC").tz_convert(IST))
        return ns

    def reconcile(self, instruments: dict[str, Instrument] | None = None) -> list[str]:
        """A restart without a replay (live feeds): adopt the journal's open positions, with the
        broker as the truth. Returns what was found, one line each (also journalled).

        * a journal position the broker still holds (same signed quantity) is adopted as open,
          and the strategy is told it holds it (so its exits apply);
        * one the broker no longer holds was closed while the engine was down: marked closed
          with exit reason ``closed_outside`` (no price is invented);
        * a quantity that differs, or a position in the traded instrument the journal does not
          know, is reported loudly and left alone: a human decides.
        """
        notes: list[str] = []
        rows = self.journal.positions(self.run_id)
        live = rows[rows["state"].isin(["opening", "open", "closing"])] if len(rows) else rows
        held = {(p.instrument.symbol, p.product): p for p in self.broker.positions()}
        known = set()
        for r in live.itertuples():
            pos_row = PositionRow(r.position_id, r.symbol, int(r.direction), int(r.quantity), r.state, r.entry_tag,
                                  r.entry_time, r.entry_price, r.entry_ref, r.exit_tag, r.exit_time, r.exit_price,
                                  r.exit_reason or "", r.gross_pnl, float(r.charges or 0.0), r.net_pnl)
            order = self.journal.order_row(self.run_id, r.entry_tag)
            side = Side(order.side) if order is not None else (Side.BUY if r.direction > 0 else Side.SELL)
            signed = pos_row.quantity * (1 if side is Side.BUY else -1)
            at = held.get((r.symbol, self.product))
            known.add(r.symbol)
            if at is not None and at.quantity == signed:
                inst = (instruments or {}).get(r.symbol, at.instrument)
                pos_row.state = "open"
                pos = _Position(pos_row, inst, side)
                ref = float(r.entry_ref) if r.entry_ref == r.entry_ref and r.entry_ref is not None else float(at.average_price)
                pos.risk = OpenRisk(pos_row.direction, ref, ref)
                self.positions[pos_row.position_id] = pos
                self.stepper.adopt(pos_row.direction, ref)
                notes.append(f"adopted open position {r.symbol} {signed:+d} ({r.position_id})")
            elif at is None or at.quantity == 0:
                pos_row.state, pos_row.exit_reason = "closed", "closed_outside"
                self.journal.position(self.run_id, pos_row, self.now_ns)
                notes.append(f"{r.symbol} {signed:+d} ({r.position_id}) is no longer held at the broker: marked closed_outside")
            else:
                notes.append(f"MISMATCH {r.symbol}: journal {signed:+d}, broker {at.quantity:+d}; left alone, check by hand")
        for (sym, _), p in held.items():
            if sym not in known and p.quantity != 0 and sym in (instruments or {}):
                notes.append(f"MISMATCH {sym}: broker holds {p.quantity:+d} that this run did not open; left alone")
        for note in notes:
            level = "error" if note.startswith("MISMATCH") else "info"
            log.log(logging.ERROR if level == "error" else logging.INFO, "%s: %s", self.run_id, note)
            self.journal.event(self.run_id, "reconcile", note, tick_ns=self.now_ns)
            if level == "error":
                self.notifier.send("error", f"{self.run_id}: {note}", level="error")
        return notes

    @property
    def catching_up(self) -> bool:
        """Before the instant the previous life last wrote at (that instant itself is redone)."""
        return self.now_ns < self.resume_ns

    @property
    def current(self) -> _Position | None:
        """The position the strategy holds or is entering (not one whose exit is in flight)."""
        for pos in self.positions.values():
            if pos.row.state in ("opening", "open"):
                return pos
        return None

    @property
    def done(self) -> bool:
        return self.state in ("stopped", "killed", "failed")

    # ------------------------------------------------------------------ the loop
    def run(self, events: Iterable) -> EngineStatus:
        """Process a stream until it ends, ``until`` passes, or a kill; then stop cleanly."""
        self.state = "running"
        try:
            for ev in events:
                if isinstance(ev, Tick):
                    self.on_tick(ev)
                elif isinstance(ev, Bar):
                    self.on_bar_event(ev)
                else:
                    self.on_time(getattr(ev, "ts", ev))
                if self.state == "failed" or (self._stopping and not self.pending and not self.positions):
                    break
        except SessionExpired as exc:
            self._fail(f"broker session expired: {exc}; log in again (tradeflow session login) and restart")
            raise
        except Exception as exc:
            self._fail(f"{type(exc).__name__}: {exc}")
            raise
        for bar in self.builder.flush():
            self._on_bar(bar)
        self.stop(self.stop_reason or "stream ended")
        return self.status()

    def on_tick(self, tick: Tick) -> None:
        ns = tick.ns
        if ns > self.now_ns:
            self.now_ns = ns
        self.last_price[tick.symbol] = tick.price
        if tick.symbol == self.symbol:
            if not self._day_start <= ns < self._day_end:
                self._roll_day(ns)
            for bar in self.builder.on_tick(tick):  # a tick of a later bucket closes the open bar
                self._on_bar(bar)
        self._price_event(tick)

    def _price_event(self, tick: Tick) -> None:
        """After any bar it closed: the broker sees the price, orders are polled, risk is checked."""
        ns = tick.ns
        if self.paper and ns > self._fed_until.get(tick.symbol, -1):
            self.broker.on_tick(tick)  # type: ignore[attr-defined]
        if self.deferred:
            self._place_deferred(tick.symbol)
        if self.pending:
            self._poll()
        if self.positions:
            pos = self.current
            if pos is not None and pos.risk is not None and pos.row.state == "open" and tick.symbol == self.symbol:
                reason = self.tick_risk.check(pos.risk, tick.price, self.stepper.realized_points)
                if reason:
                    self._exit(pos, reason)
            if self.tick_risk.max_rupees != math.inf and not self.day.halted:
                if self.tick_risk.rupee_breach(self.day.net + self.open_pnl()):
                    self._halt_day("max_daily_loss_rupees")
        if ns >= self._next_house_ns:
            self._housekeeping(ns)
        elif self.run_dir is not None and self._wall() >= self._next_kill_check:
            self._check_kill()

    def on_bar_event(self, bar: Bar) -> None:
        """A closed bar of the signal timeframe (a bar replay): quote its open, its close, then decide."""
        if bar.symbol != self.symbol or bar.timeframe != self.params.timeframe:
            raise BrokerError(f"bar replay needs {self.symbol} {self.params.timeframe}m bars, got {bar.symbol} {bar.timeframe}m")
        self._roll_day(int(bar.ts.value))
        for price, ts in ((bar.open, bar.ts), (bar.close, bar.end - pd.Timedelta(microseconds=1))):
            tick = Tick(self.symbol, ts, price)
            self.now_ns = max(self.now_ns, tick.ns)
            self.last_price[self.symbol] = price
            self._price_event(tick)
        self._on_bar(bar)

    def on_time(self, now) -> None:
        """A heartbeat from a live stream: close bars whose end has passed, poll, housekeeping."""
        ns = int(pd.Timestamp(now).value)
        if ns > self.now_ns:
            self.now_ns = ns
        for bar in self.builder.on_time(pd.Timestamp(ns, tz="UTC")):
            self._on_bar(bar)
        if self.deferred:
            self._expire_deferred()
        if self.pending:
            self._poll()
        self._housekeeping(ns)

    # ------------------------------------------------------------------ bars → decisions
    def _on_bar(self, bar: Bar) -> None:
        decision = self.stepper.on_bar_ns(bar.ts, bar.ts.value, bar.open, bar.high, bar.low, bar.close)
        self.last_bar = bar
        if not self.catching_up:
            self.journal.signal(self.run_id, bar, decision, self.now_ns)
        self._act(bar, decision)
        if not self.catching_up:
            self._check_kill(force=True)
        if self.on_status is not None and not self.catching_up:
            self.on_status(self.status())

    def _act(self, bar: Bar, d: Decision) -> None:
        pos = self.current
        if d.exit and pos is not None:
            if pos.row.state == "open":
                self._exit(pos, d.exit_reason, from_strategy=True)
            else:
                pos.exit_wanted = d.exit_reason
        if d.entry:
            self._enter(d.entry, bar)

    def _enter(self, direction: int, bar: Bar) -> None:
        why = ""
        if self._stopping:
            why = f"the engine is stopping ({self.stop_reason})"
        elif self.day.halted:
            why = f"entries are stopped for the day ({self.day.halted})"
        elif self.tick_risk.rupee_breach(self.day.net):
            self._halt_day("max_daily_loss_rupees")
            why = f"entries are stopped for the day ({self.day.halted})"
        elif self.day.orders >= self.risk_params.max_orders_per_day:
            why = f"max_orders_per_day {self.risk_params.max_orders_per_day} reached"
        elif self.current is not None:
            why = f"position {self.current.row.position_id} is still {self.current.row.state}"
        elif _local_minutes(int(bar.end.value)) >= self.until_min:
            why = "past the run's `until` time"
        if why:
            if not self.catching_up:
                self.journal.event(self.run_id, "skip", f"entry {direction:+d} at {bar.ts} not taken: {why}", tick_ns=self.now_ns)
            self.stepper.sync_exit(None)
            return
        spot = self.last_price.get(self.symbol, bar.close)
        try:
            inst = self.instrument_for(direction, spot)
        except Exception as exc:  # an unknown option chain, an expired master: say it, do not trade
            self._error(f"no instrument to trade for a {direction:+d} signal at {spot}: {exc}")
            self.stepper.sync_exit(None)
            return
        side = Side.BUY if (direction > 0 or inst.option_type is not None) else Side.SELL
        tag = make_tag(self.run_id, bar.ts, "e")
        req = OrderRequest(inst, side, self.lots * inst.lot_size, OrderType.MARKET, self.product, tag=tag)
        row = PositionRow(tag, inst.symbol, direction, req.quantity, "opening", tag)
        self.positions[tag] = _Position(row, inst, side)
        if not self._send(tag, "e", tag, req):
            self.positions.pop(tag, None)
            self.stepper.sync_exit(None)
            if not self.catching_up:
                row.state = "failed"
                self.journal.position(self.run_id, row, self.now_ns)
                self._refused_entry()

    def _refused_entry(self) -> None:
        """Entries refused again and again (funds, RMS) stop for the day instead of spamming the broker."""
        self.day.refused += 1
        if self.day.refused >= MAX_REFUSED_ENTRIES and not self.day.halted:
            self._halt_day(f"{self.day.refused} entries in a row refused by the broker; check funds and margins")

    def _exit(self, pos: _Position, reason: str, *, from_strategy: bool = False) -> None:
        """Send the exit of ``pos``. Its tag is the entry's with leg ``x`` (``x2``, ``x3`` for retries):
        one per position and attempt whatever the reason, the same on every restart, and never
        the tag of another position's order (each entry bar holds at most one entry)."""
        if pos.row.state != "open":
            return  # nothing held, or an exit is already in flight: never two exits for one position
        if not from_strategy:
            price = self.last_price.get(self.symbol)
            self.stepper.sync_exit(price, pos.risk.entry_ref if pos.risk else None)
        pos.exit_attempts += 1
        leg = "x" if pos.exit_attempts == 1 else f"x{pos.exit_attempts}"
        tag = f"{pos.row.entry_tag.rsplit('-', 1)[0]}-{leg}"
        side = Side.SELL if pos.entry_side is Side.BUY else Side.BUY
        req = OrderRequest(pos.instrument, side, pos.row.quantity, OrderType.MARKET, self.product, tag=tag)
        pos.row.state = "closing"
        pos.row.exit_tag = tag
        pos.row.exit_reason = reason
        if not self.catching_up:
            self.journal.position(self.run_id, pos.row, self.now_ns)
        if not self._send(tag, leg, pos.row.position_id, req):
            self._exit_failed(pos, f"exit order {tag} was not accepted")

    # ------------------------------------------------------------------ orders
    def _send(self, tag: str, leg: str, position_id: str, req: OrderRequest) -> bool:
        """Journal, then place, then journal; or adopt the order a previous life already sent."""
        known = self.journal.order_row(self.run_id, tag)
        if known is None and self.paper and not self.catching_up and self.now_ns <= self._broker_seen_ns:
            # paper writes its account at once while the journal queues: a restart may find the
            # order in the paper account but not (yet) in the journal
            found = self.broker.order_by_tag(tag)
            if found is not None:
                known = OrderRow(tag, leg, position_id, req.instrument.symbol, req.side.value, req.quantity,
                                 req.order_type.value, found.order_id, found.status.value, 0, None, "")
                self.journal.order_sending(self.run_id, known, self.now_ns)
        if known is not None:
            self.pending[tag] = _Pending(tag, leg, position_id, req, self.now_ns, known.order_id, known.status, adopted=True)
            log.info("%s: adopting order %s (%s) sent before the restart", self.run_id, tag, known.status)
            self.day.orders += 1
            return True
        if self.catching_up:
            log.info("%s: catch-up decision %s was not sent before the restart; not sending it now", self.run_id, tag)
            return False
        if self.paper and req.order_type is OrderType.MARKET and self.broker.last_quote(req.instrument.symbol) is None:  # type: ignore[attr-defined]
            if self.subscribe is not None:
                self.subscribe(req.instrument)
            self.deferred[tag] = _Pending(tag, leg, position_id, req, self.now_ns, None, "WAITING_QUOTE")
            log.info("%s: %s waits for the first quote of %s", self.run_id, tag, req.instrument.symbol)
            return True
        return self._place(_Pending(tag, leg, position_id, req, self.now_ns, None, "SENDING"))

    def _place(self, p: _Pending, *, resend: bool = False) -> bool:
        req = p.request
        if not self.paper:
            self.journal.sync()  # a live order must never exist without its journal row on disk
        if resend:  # the journal has the row from the life that died before the broker call
            self.journal.order_update(self.run_id, p.tag, status="SENDING", message="sent after a restart", tick_ns=self.now_ns)
        else:
            self.journal.order_sending(self.run_id, OrderRow(p.tag, p.leg, p.position_id, req.instrument.symbol, req.side.value,
                                                             req.quantity, req.order_type.value, None, "SENDING", 0, None, ""),
                                       self.now_ns)
        self.day.orders += 1
        try:
            order = self.broker.place_order(req)
        except (InvalidOrder, OrderRejected) as exc:
            self.journal.order_update(self.run_id, p.tag, status="REJECTED", message=str(exc), tick_ns=self.now_ns)
            self._error(f"order {p.tag} ({req.side} {req.quantity} {req.instrument.symbol}) refused: {exc}")
            return False
        except BrokerUnavailable as exc:
            # the outcome is unknown: the tag lookup in _poll finds it or proves it absent
            self.journal.order_update(self.run_id, p.tag, status="UNKNOWN", message=str(exc), tick_ns=self.now_ns)
            log.warning("%s: placing %s timed out (%s); looking it up by tag", self.run_id, p.tag, exc)
            p.status = "UNKNOWN"
            self.pending[p.tag] = p
            return True
        p.order_id, p.status = order.order_id, order.status.value
        self.journal.order_update(self.run_id, p.tag, status=order.status.value, order_id=order.order_id,
                                  message=order.message, tick_ns=self.now_ns)
        self.pending[p.tag] = p
        if order.status.is_final:
            self._settle(p, order)
        return True

    def _place_deferred(self, symbol: str) -> None:
        for tag, p in list(self.deferred.items()):
            if p.request.instrument.symbol == symbol and self.broker.last_quote(symbol) is not None:  # type: ignore[attr-defined]
                del self.deferred[tag]
                p.placed_ns = self.now_ns
                if not self._place(p):
                    self._order_failed(p, "refused")
        self._expire_deferred()

    def _expire_deferred(self) -> None:
        for tag, p in list(self.deferred.items()):
            if self.now_ns - p.placed_ns > self.fill_timeout_ns:
                del self.deferred[tag]
                self._error(f"{tag}: no quote for {p.request.instrument.symbol} within the fill timeout; order not sent")
                self._order_failed(p, "no quote")

    def _poll(self) -> None:
        if self.poll_interval > 0:
            now = self._wall()
            if now - self._last_poll < self.poll_interval:
                return
            self._last_poll = now
        for tag, p in list(self.pending.items()):
            try:
                order = self.broker.order(p.order_id) if p.order_id else self.broker.order_by_tag(tag)
            except BrokerUnavailable as exc:
                log.warning("%s: status of %s unknown for now (%s)", self.run_id, tag, exc)
                continue
            if order is None and p.adopted and p.status == "SENDING":
                if not self.catching_up:  # the previous life died between the journal and the broker call
                    del self.pending[tag]
                    p.adopted, p.placed_ns = False, self.now_ns
                    if not self._place(p, resend=True):
                        self._order_failed(p, "refused")
                continue
            if order is None:  # placement outcome was unknown and the broker has no such tag
                if self.now_ns - p.placed_ns > self.fill_timeout_ns:
                    del self.pending[tag]
                    self.journal.order_update(self.run_id, tag, status="REJECTED", tick_ns=self.now_ns,
                                              message="the broker has no order with this tag: it was never placed")
                    self._order_failed(p, "never placed")
                continue
            if p.order_id is None:
                p.order_id = order.order_id
            if order.updated_at is not None and order.updated_at.value > self.now_ns and order.status.is_final:
                continue  # adopted after a restart: it settled later than the replay has reached
            if order.status.value != p.status:
                p.status = order.status.value
                if not order.status.is_final:
                    self.journal.order_update(self.run_id, tag, status=p.status, order_id=order.order_id,
                                              message=order.message, tick_ns=self.now_ns)
            if order.status.is_final:
                self._settle(p, order)
            elif self.now_ns - p.placed_ns > self.fill_timeout_ns and not self.catching_up:
                self._cancel_stale(p)

    def _cancel_stale(self, p: _Pending) -> None:
        log.warning("%s: %s not filled within the fill timeout; cancelling it", self.run_id, p.tag)
        self.journal.event(self.run_id, "cancel", f"cancelling {p.tag} ({p.order_id}): not filled within the fill timeout",
                           tick_ns=self.now_ns)
        try:
            order = self.broker.cancel_order(p.order_id)  # type: ignore[arg-type]
        except BrokerError as exc:
            self._error(f"could not cancel stale order {p.tag}: {exc}")
            return
        if order.status.is_final:
            self._settle(p, order)

    def _settle(self, p: _Pending, order: Order) -> None:
        """A final status: journal it and move the position."""
        self.pending.pop(p.tag, None)
        status = order.status
        with self.journal.batch():  # the status, the fill, the position and the day: one commit
            if not (p.adopted and self.catching_up):
                self.journal.order_update(self.run_id, p.tag, status=status.value, order_id=order.order_id,
                                          filled_quantity=order.filled_quantity, average_price=order.average_price,
                                          message=order.message, tick_ns=self.now_ns)
            if status is OrderStatus.FILLED:
                self._filled(p, order)
            else:
                self._order_failed(p, f"{status.value.lower()}: {order.message}")

    def _filled(self, p: _Pending, order: Order) -> None:
        pos = self.positions.get(p.position_id)
        price = float(order.average_price)
        when = order.updated_at if order.updated_at is not None else pd.Timestamp(self.now_ns, tz="UTC")
        req = p.request
        self.journal.fill(self.run_id, p.tag, order.order_id, ts=when, symbol=req.instrument.symbol, side=req.side.value,
                          quantity=order.filled_quantity or req.quantity, price=price, tick_ns=self.now_ns)
        if pos is None:
            self._error(f"fill of {p.tag} does not belong to an open position; check the broker's positions")
            return
        charge = self._charge(req, price, when)
        pos.row.charges = round(pos.row.charges + charge, 2)
        if p.leg == "e":
            self.day.refused = 0
            ref = self.last_price.get(self.symbol, price)
            pos.row.state, pos.row.entry_price, pos.row.entry_time, pos.row.entry_ref = "open", price, when, ref
            pos.risk = OpenRisk(pos.row.direction, ref, ref)
            self.journal.position(self.run_id, pos.row, self.now_ns)
            self._notify("fill", f"entry {req.side} {req.quantity} {req.instrument.symbol} at {price:,.2f} ({p.tag})")
            if pos.exit_wanted:
                self._exit(pos, pos.exit_wanted, from_strategy=True)
            elif self._stopping:  # filled while a kill or `until` was flattening: out at once
                self._exit(pos, "kill" if self.state == "killed" else "until")
            return
        sign = 1 if pos.entry_side is Side.BUY else -1
        gross = round(sign * (price - float(pos.row.entry_price)) * pos.row.quantity, 2)
        pos.row.state, pos.row.exit_price, pos.row.exit_time = "closed", price, when
        pos.row.gross_pnl, pos.row.net_pnl = gross, round(gross - pos.row.charges, 2)
        self.journal.position(self.run_id, pos.row, self.now_ns)
        for stats in (self.day, self.total):
            stats.trades += 1
            stats.gross += gross
            stats.charges += pos.row.charges
        self._journal_day()
        self._notify("fill", f"exit ({pos.row.exit_reason}) {req.side} {req.quantity} {req.instrument.symbol} at {price:,.2f}: "
                             f"net {pos.row.net_pnl:,.2f}")
        del self.positions[p.position_id]

    def _order_failed(self, p: _Pending, why: str) -> None:
        pos = self.positions.get(p.position_id)
        if pos is None:
            return
        if p.leg == "e":
            pos.row.state = "failed"
            self.journal.position(self.run_id, pos.row, self.now_ns)
            self._error(f"entry {p.tag} {why}; no position taken")
            del self.positions[p.position_id]
            self._refused_entry()
            if pos.exit_wanted == "":
                self.stepper.sync_exit(None)
        else:
            self._exit_failed(pos, f"exit {p.tag} {why}")

    def _exit_failed(self, pos: _Position, why: str) -> None:
        pos.row.state = "open"
        if pos.exit_attempts >= MAX_EXIT_ATTEMPTS:
            self._error(f"{why}; {pos.exit_attempts} exit attempts failed: position {pos.row.symbol} is still OPEN at the "
                        "broker, close it by hand", level="critical")
            self._stopping = True
            self.stop_reason = "exit failed"
            self.state = "failed"
            return
        self._error(f"{why}; retrying the exit")
        pos.retry_reason = pos.row.exit_reason or "retry"

    # ------------------------------------------------------------------ housekeeping and risk
    def _housekeeping(self, ns: int) -> None:
        """Once a minute of market time (and on heartbeats): retries, kill file, square-off net, until."""
        self._next_house_ns = ns - (ns + _IST_NS) % (60 * _NS) + 60 * _NS  # the next minute boundary
        for pos in list(self.positions.values()):
            if pos.retry_reason and pos.row.state == "open" and not self.catching_up and self.state != "failed":
                reason, pos.retry_reason = pos.retry_reason, ""
                self._exit(pos, reason, from_strategy=True)
        self._check_kill()
        minute = _local_minutes(ns)
        pos = self.current
        if pos is not None and pos.row.state == "open" and minute >= self._sq_min + self.params.timeframe:
            self._exit(pos, "square_off")  # safety net: the bar-close rule missed it
        if minute >= self.until_min and not self._stopping:
            self._stopping = True
            self.stop_reason = "until time reached"
            self._flatten("until")

    def _check_kill(self, *, force: bool = False) -> None:
        """The KILL file: at every bar close, else at most once a second of wall time."""
        now = self._wall()
        if (now < self._next_kill_check and not force) or self.run_dir is None or self._stopping:
            return
        self._next_kill_check = now + 1.0
        if (self.run_dir / "KILL").exists():
            self.kill("KILL file found in the run folder")

    def _halt_day(self, why: str) -> None:
        if self.day.halted:
            return
        self.day.halted = why
        self._error(f"stopping entries for today and flattening: {why}", level="warning")
        self._flatten("daily_loss")

    def _flatten(self, reason: str) -> None:
        for tag, p in list(self.pending.items()):
            if p.leg == "e" and p.order_id:
                self.journal.event(self.run_id, "cancel", f"cancelling {tag} ({p.order_id}): {reason}", tick_ns=self.now_ns)
                try:
                    order = self.broker.cancel_order(p.order_id)
                    if order.status.is_final:
                        self._settle(p, order)
                except BrokerError as exc:
                    self._error(f"cancel of {tag} failed: {exc}")
        for tag, p in list(self.deferred.items()):
            del self.deferred[tag]
            self._order_failed(p, "cancelled by flatten")
        pos = self.current
        if pos is not None and pos.row.state == "open":
            self._exit(pos, reason)

    def kill(self, why: str = "kill switch") -> None:
        """Cancel this run's open orders, flatten its position, stop after the exit fills."""
        if self._stopping and self.state == "killed":
            return
        self._notify("kill", f"{self.run_id}: {why}; cancelling orders and flattening", level="warning")
        self.journal.event(self.run_id, "kill", why, tick_ns=self.now_ns)
        self._stopping = True
        self.stop_reason = why
        self.state = "killed"
        self._flatten("kill")

    def stop(self, why: str) -> None:
        if self.state in ("stopped",):
            return
        final = self.state if self.state in ("killed", "failed") else "stopped"
        self._journal_day()
        self.journal.event(self.run_id, "stop", why, tick_ns=self.now_ns)
        st = self.status()
        self._notify("summary", f"{self.run_id} {st.line()}")
        self._notify("stop", f"{self.run_id} stopped: {why}")
        self.state = final

    # ------------------------------------------------------------------ helpers
    def _roll_day(self, ns: int) -> None:
        self._day_start = ns - (ns + _IST_NS) % _DAY_NS
        self._day_end = self._day_start + _DAY_NS
        day = _ist_day(ns)
        if self.day.day != day:
            if self.day.day is not None:
                self._journal_day()
                if not self.catching_up:
                    self._notify("summary", f"{self.run_id} {self.day.day}: {self.day.trades} trades, net {self.day.net:,.2f}")
            self.day = DayStats(day)

    def _journal_day(self) -> None:
        if self.day.day is not None and not self.catching_up:
            self.journal.daily(self.run_id, self.day.day, trades=self.day.trades, gross_pnl=round(self.day.gross, 2),
                               charges=round(self.day.charges, 2), net_pnl=round(self.day.net, 2))

    def _charge(self, req: OrderRequest, price: float, when: pd.Timestamp) -> float:
        from .brokers.paper import costs_segment

        seg = costs_segment(req.instrument, req.product)
        broker = getattr(self.broker, "brokerage", None) or ("definedge" if self.broker.name == "definedge" else "dhan")
        return costs.charges(seg, req.side.value.lower(), price, req.quantity, on=when.tz_convert(IST).date(), broker=broker).total

    def open_pnl(self) -> float:
        """P&L of what is held now, net of the charges paid on it so far."""
        total = 0.0
        for pos in self.positions.values():
            last = self.last_price.get(pos.instrument.symbol)
            if pos.row.state not in ("open", "closing") or pos.row.entry_price is None or last is None:
                continue
            sign = 1 if pos.entry_side is Side.BUY else -1
            total += sign * (last - float(pos.row.entry_price)) * pos.row.quantity - pos.row.charges
        return total

    def status(self) -> EngineStatus:
        pos = self.current or next(iter(self.positions.values()), None)
        held = "flat" if pos is None else f"{pos.entry_side} {pos.row.quantity} {pos.row.symbol} ({pos.row.state})"
        return EngineStatus(
            self.run_id, self.state, self.last_bar.ts if self.last_bar else None, held,
            round(self.day.net + self.open_pnl(), 2), round(self.open_pnl(), 2), self.total.trades,
            self.feed_health() if self.feed_health else "",
        )

    def _notify(self, event: str, text: str, level: str = "info") -> None:
        if not self.catching_up:
            self.notifier.send(event, text, level=level)

    def _error(self, text: str, level: str = "error") -> None:
        log.log(logging.CRITICAL if level == "critical" else logging.ERROR if level == "error" else logging.WARNING,
                "%s: %s", self.run_id, text)
        if not self.catching_up:
            self.journal.event(self.run_id, "error" if level != "warning" else "warning", text, tick_ns=self.now_ns)
            self.notifier.send("error", f"{self.run_id}: {text}", level=level)

    def _fail(self, text: str) -> None:
        self.state = "failed"
        try:
            self.journal.event(self.run_id, "error", text, tick_ns=self.now_ns)
        finally:
            self.notifier.send("error", f"{self.run_id}: {text}", level="critical")

"""The engine's mechanics on the simulated market: orders, confirmations, failures, kill, limits."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pandas as pd
import pytest

from tradeflow.brokers.base import (
    BrokerUnavailable,
    Instrument,
    InstrumentKind,
    OptionType,
    OrderRejected,
    OrderStatus,
    Segment,
)
from tradeflow.brokers.connect import LiveNotArmed
from tradeflow.brokers.paper import PaperBroker
from tradeflow.brokers.sim import SimMarket
from tradeflow.calendar import IST
from tradeflow.engine import MAX_EXIT_ATTEMPTS, Engine, make_tag
from tradeflow.errors import ConfigError, ParameterError
from tradeflow.feeds import Tick, replay_ticks
from tradeflow.journal import Journal
from tradeflow.risk import RiskParams
from tradeflow.store import CandleStore
from tradeflow.strategy import StrategyParams
from tradeflow.timeframes import Timeframe
from tradeflow.trading import load_trade_config, run_trade

DAY = dt.date(2024, 3, 5)
FUT = Instrument("NIFTY", Segment.NSE_FNO, InstrumentKind.FUTIDX, lot_size=75)
PARAMS = StrategyParams(timeframe=5, st_period=7, st_multiplier=1.5, flip_only=False, cooldown_bars=0)


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str]] = []

    def send(self, event: str, text: str, *, level: str = "info") -> None:
        self.sent.append((event, text, level))

    def events(self, kind: str) -> list[str]:
        return [t for e, t, _ in self.sent if e == kind]


@pytest.fixture(scope="module")
def sim_data(tmp_path_factory):
    store = CandleStore(tmp_path_factory.mktemp("engine") / "parquet")
    sim = SimMarket(seed=7)
    start = pd.Timestamp("2024-02-20", tz=IST)
    frame = sim.fetch("NIFTY", Timeframe(1), start, pd.Timestamp(DAY + dt.timedelta(days=1)).tz_localize(IST))
    store.upsert(frame, "NIFTY", "1m")
    warm = store.candles("NIFTY", "5m", "2024-02-20", DAY - dt.timedelta(days=1))
    day_1m = store.candles("NIFTY", "1m", DAY, DAY)
    return store, warm, day_1m


def _engine(tmp_path, warm, *, broker=None, params=PARAMS, risk=None, instrument_for=None, run_id="t1", **kw):
    holder: dict = {}
    broker = broker or PaperBroker(db_path=tmp_path / "paper.duckdb", cash=10_000_000,
                                   clock=lambda: pd.Timestamp(holder["e"].now_ns or 1, tz="UTC"))
    journal = Journal(tmp_path / "journal.duckdb")
    rec = Recorder()
    engine = Engine(run_id=run_id, symbol="NIFTY", params=params, broker=broker, journal=journal,
                    instrument_for=instrument_for or (lambda d, s: FUT), risk=risk or RiskParams(stops_on="close"),
                    notifier=rec, run_dir=tmp_path, **kw)
    holder["e"] = engine
    journal.start_run(run_id, name="t", mode="paper", broker="paper", symbol="NIFTY", params={}, run_dir=str(tmp_path))
    engine.warm_up(warm)
    engine.resume()
    return engine, journal, broker, rec


def _ticks(day_1m):
    return list(replay_ticks(day_1m, symbol="NIFTY"))


def test_orders_carry_tags_and_every_position_has_one_entry_and_one_exit(tmp_path, sim_data):
    _, warm, day = sim_data
    engine, journal, broker, rec = _engine(tmp_path, warm)
    engine.run(_ticks(day))
    positions = journal.positions("t1")
    orders = journal.orders("t1")
    assert len(positions) >= 3 and set(positions["state"]) == {"closed"}
    assert orders["tag"].is_unique and set(orders["status"]) == {"FILLED"}
    for _, pos in positions.iterrows():
        legs = orders[orders["position_id"] == pos["position_id"]]
        assert sorted(legs["leg"]) == ["e", "x"]  # one entry, one exit, never two exits
    tag = orders["tag"].iloc[0]
    assert tag.startswith(make_tag("t1", pd.Timestamp("2024-03-05 09:15", tz=IST), "e")[:9]) and len(tag) <= 25
    # the broker's orders are exactly the journal's, by tag
    assert sorted(o.tag for o in broker.orders()) == sorted(orders["tag"])
    assert all(p.quantity == 0 for p in broker.positions())
    # every status change is in the history: SENDING, OPEN, FILLED per order
    hist = journal.order_history("t1")
    assert set(hist.groupby("tag")["status"].apply(lambda s: tuple(s))) == {("SENDING", "OPEN", "FILLED")}
    # notifications: fills and a daily summary and a stop
    assert len(rec.events("fill")) == 2 * len(positions)
    assert rec.events("stop") and rec.events("summary")
    net = journal.daily_pnl("t1")["net_pnl"].sum()
    assert net == pytest.approx(positions["net_pnl"].sum(), abs=0.05)
    # the paper account's cash moved by exactly the run's net P&L
    assert broker._cash - 10_000_000 == pytest.approx(net, abs=0.05)


def test_rejected_entries_open_nothing_and_the_strategy_follows(tmp_path, sim_data):
    _, warm, day = sim_data
    broker = PaperBroker(db_path=tmp_path / "poor.duckdb", cash=1_000)  # far too little for a NIFTY lot
    engine, journal, _, rec = _engine(tmp_path, warm, broker=broker)
    engine.run(_ticks(day))
    orders = journal.orders("t1")
    assert len(orders) == 3 and set(orders["status"]) == {"REJECTED"}  # then entries stop for the day
    assert set(orders["leg"]) == {"e"}  # no exit was ever sent for a position that never opened
    assert set(journal.positions("t1")["state"]) == {"failed"}
    assert any("insufficient funds" in t for t in rec.events("error"))
    assert "3 entries in a row refused" in engine.day.halted
    assert engine.stepper.position == 0


def test_unfilled_orders_are_cancelled_after_the_timeout(tmp_path, sim_data):
    _, warm, day = sim_data
    holder = {}

    class Stuck(PaperBroker):
        def on_tick(self, tick):  # quotes are known, but the book never trades
            q = self._quotes.get(tick.symbol)
            if q is None:
                super().on_tick(tick)

    broker = Stuck(db_path=tmp_path / "stuck.duckdb", cash=10_000_000, clock=lambda: pd.Timestamp(holder["e"].now_ns or 1, tz="UTC"))
    engine, journal, _, rec = _engine(tmp_path, warm, broker=broker, fill_timeout=60)
    holder["e"] = engine
    engine.run(_ticks(day))
    orders = journal.orders("t1")
    assert len(orders) >= 1 and set(orders["status"]) == {"CANCELLED"}
    assert all(o.status is OrderStatus.CANCELLED for o in broker.orders())
    assert engine.positions == {} and set(journal.positions("t1")["state"]) == {"failed"}


def test_unknown_placement_is_resolved_by_tag(tmp_path, sim_data):
    """A timeout after the broker accepted the order: the tag lookup adopts it, nothing is resent."""
    _, warm, day = sim_data

    class Flaky(PaperBroker):
        calls = 0

        def place_order(self, req):
            order = super().place_order(req)
            Flaky.calls += 1
            if Flaky.calls == 1:
                raise BrokerUnavailable("read timed out")
            return order

    holder = {}
    broker = Flaky(db_path=tmp_path / "flaky.duckdb", cash=10_000_000, clock=lambda: pd.Timestamp(holder["e"].now_ns or 1, tz="UTC"))
    engine, journal, _, _ = _engine(tmp_path, warm, broker=broker)
    holder["e"] = engine
    engine.run(_ticks(day))
    orders = journal.orders("t1")
    first = orders.iloc[0]
    assert first["status"] == "FILLED" and first["order_id"] == broker.orders()[0].order_id
    assert len(broker.orders()) == len(orders)  # one broker order per journal row: nothing sent twice
    hist = journal.order_history("t1")
    assert "UNKNOWN" in set(hist[hist["tag"] == first["tag"]]["status"])


def test_rejected_exit_is_retried_with_a_new_tag_then_the_engine_stops_loudly(tmp_path, sim_data):
    _, warm, day = sim_data
    holder = {}

    class NoExits(PaperBroker):
        def place_order(self, req):
            if req.tag.rsplit("-", 1)[1] != "e":  # every exit leg
                raise OrderRejected("RMS: square-off blocked")
            return super().place_order(req)

    broker = NoExits(db_path=tmp_path / "noexit.duckdb", cash=10_000_000, clock=lambda: pd.Timestamp(holder["e"].now_ns or 1, tz="UTC"))
    engine, journal, _, rec = _engine(tmp_path, warm, broker=broker)
    holder["e"] = engine
    engine.run(_ticks(day))
    orders = journal.orders("t1")
    exits = orders[orders["leg"].str.startswith("x")]
    assert list(exits["leg"]) == ["x", "x2", "x3"][: MAX_EXIT_ATTEMPTS]
    assert exits["tag"].is_unique
    assert engine.state == "failed"
    assert any(level == "critical" and "close it by hand" in text for _, text, level in rec.sent)


def test_kill_file_cancels_and_flattens(tmp_path, sim_data):
    _, warm, day = sim_data
    ticks = _ticks(day)
    engine, journal, broker, rec = _engine(tmp_path, warm)

    def events():
        for tick in ticks:
            yield tick
            if engine.positions and any(p.row.state == "open" for p in engine.positions.values()):
                (tmp_path / "KILL").write_text("stop")

    engine.run(events())
    assert engine.state == "killed"
    assert rec.events("kill")
    pos = journal.positions("t1")
    assert pos["exit_reason"].iloc[-1] == "kill" and pos["state"].iloc[-1] == "closed"
    assert all(p.quantity == 0 for p in broker.positions())
    assert engine.now_ns < ticks[-1].ns  # it stopped early


def test_tick_stop_and_rupee_daily_loss_limit(tmp_path, sim_data):
    _, warm, day = sim_data
    params = PARAMS.model_copy(update={"stop_loss": 5.0})
    engine, journal, broker, rec = _engine(tmp_path, warm, params=params,
                                           risk=RiskParams(stops_on="tick", max_daily_loss_rupees=1500))
    engine.run(_ticks(day))
    pos = journal.positions("t1")
    assert "stop_loss" in set(pos["exit_reason"]) or "daily_loss" in set(pos["exit_reason"])
    assert engine.day.halted == "max_daily_loss_rupees"
    halted_at = journal.events("t1")
    assert any("max_daily_loss_rupees" in t for t in halted_at["text"])
    # after the halt no entry was sent
    orders = journal.orders("t1")
    stop_row = pos[pos["exit_reason"] == "daily_loss"]
    if len(stop_row):
        cut = stop_row["exit_time"].iloc[0]
        later = pos[pos["entry_time"] > cut]
        assert later.empty
    assert all(p.quantity == 0 for p in broker.positions())
    assert len(orders) == 2 * len(pos[pos["state"] == "closed"])


def test_options_buy_ce_on_long_pe_on_short_after_their_first_quote(tmp_path, sim_data):
    _, warm, day = sim_data
    ce = Instrument("NIFTY24MAR22000CE", Segment.NSE_FNO, InstrumentKind.OPTIDX, lot_size=50, option_type=OptionType.CE,
                    strike=22000.0, underlying="NIFTY", expiry=dt.date(2024, 3, 7))
    pe = replace(ce, symbol="NIFTY24MAR22000PE", option_type=OptionType.PE)
    picked: list[tuple[int, float]] = []

    def pick(direction, spot):
        picked.append((direction, spot))
        return ce if direction > 0 else pe

    base = float(day["open"].iloc[0])

    def with_options():
        for tick in _ticks(day):
            yield tick
            # a crude premium stream for both contracts, one quote per underlying tick
            yield Tick(ce.symbol, tick.ts + pd.Timedelta(milliseconds=1), max(1.0, 100 + (tick.price - base) / 2))
            yield Tick(pe.symbol, tick.ts + pd.Timedelta(milliseconds=1), max(1.0, 100 - (tick.price - base) / 2))

    engine, journal, broker, _ = _engine(tmp_path, warm, instrument_for=pick)
    engine.run(with_options())
    pos = journal.positions("t1")
    assert len(pos) >= 2 and set(pos["state"]) == {"closed"}
    assert set(pos["symbol"]) <= {ce.symbol, pe.symbol}
    assert all((r.direction > 0) == (r.symbol == ce.symbol) for r in pos.itertuples())
    orders = journal.orders("t1")
    assert set(orders[orders["leg"] == "e"]["side"]) == {"BUY"}  # options are bought on both signals
    assert set(orders[orders["leg"] != "e"]["side"]) == {"SELL"}
    assert set(orders["quantity"]) == {50}
    assert picked and all(day["low"].min() <= s <= day["high"].max() for _, s in picked)


def test_live_refuses_before_any_broker_call(monkeypatch):
    import tradeflow.brokers.connect as connect_mod

    def boom(*a, **k):
        raise AssertionError("a broker was contacted")

    monkeypatch.setattr(connect_mod, "connect", boom)
    cfg = load_trade_config({"mode": "live", "broker": "dhan", "feed": "broker"})
    with pytest.raises(LiveNotArmed) as err:
        run_trade(cfg)
    assert "mode: live" in str(err.value) and "TRADEFLOW_ALLOW_LIVE=1" in str(err.value)
    monkeypatch.setenv("TRADEFLOW_ALLOW_LIVE", "1")
    with pytest.raises(ConfigError, match="paper broker"):
        run_trade(load_trade_config({"mode": "live", "broker": "paper", "feed": "broker"}))
    with pytest.raises(ConfigError, match="feed: replay"):
        run_trade(load_trade_config({"mode": "live", "broker": "dhan", "feed": "replay"}))


def test_holiday_exits_cleanly(monkeypatch, tmp_path):
    import tradeflow.trading as trading

    monkeypatch.setattr(trading, "_today", lambda: dt.date(2024, 1, 26))  # Republic Day
    rec = Recorder()
    result = run_trade(load_trade_config({"feed": "sim", "name": "hol"}), notifier=rec)
    assert result.status == "holiday" and result.trades.empty
    assert "not an NSE session" in rec.events("stop")[0]
    with pytest.raises(ParameterError, match="not an NSE session"):
        run_trade(load_trade_config({"feed": "replay", "replay_date": "2024-01-26"}))


def test_bad_trade_parameters_say_what_to_fix():
    with pytest.raises(ParameterError, match="did you mean 'replay_date'"):
        load_trade_config({"replay_dat": "2024-03-05"})
    with pytest.raises(ParameterError, match="strategy.*did you mean 'stop_loss'"):
        load_trade_config({"strategy": {"stoploss": 10}})
    with pytest.raises(ParameterError, match="replay_date"):
        run_trade(load_trade_config({"feed": "replay"}))
    with pytest.raises(ParameterError, match="max_lots"):
        Engine(run_id="x", symbol="NIFTY", params=PARAMS, broker=None, journal=None, instrument_for=lambda d, s: FUT,
               lots=20, risk=RiskParams(max_lots=2))


def test_reconcile_after_a_restart_takes_the_broker_as_the_truth(tmp_path, sim_data):
    """A live-style restart (no replay): journal positions are adopted, dropped or flagged by what the broker holds."""
    from tradeflow.brokers.base import OrderRequest, Side
    from tradeflow.journal import OrderRow, PositionRow

    _, warm, day = sim_data
    broker = PaperBroker(db_path=tmp_path / "acct.duckdb", cash=10_000_000)
    other = Instrument("BANKNIFTY", Segment.NSE_FNO, InstrumentKind.FUTIDX, lot_size=15)
    for inst, side, qty in ((FUT, Side.SELL, 75), (other, Side.BUY, 30)):
        broker.on_quote(inst.symbol, 22000.0, ts=pd.Timestamp("2024-03-05 10:00", tz=IST))
        broker.place_order(OrderRequest(inst, side, qty))
        broker.on_quote(inst.symbol, 22001.0, ts=pd.Timestamp("2024-03-05 10:01", tz=IST))
    journal = Journal(tmp_path / "journal.duckdb")
    journal.start_run("r", name="r", mode="live", broker="paper", symbol="NIFTY", params={}, run_dir=str(tmp_path))
    for pid, sym, direction, side in (("p1", "NIFTY", -1, "SELL"), ("p2", "SBIN", 1, "BUY")):
        journal.order_sending("r", OrderRow(pid, "e", pid, sym, side, 75, "MARKET", "X", "FILLED", 75, 22000.0, ""), 1)
        journal.position("r", PositionRow(pid, sym, direction, 75, "open", pid, entry_price=22000.0, entry_ref=21990.0), 1)
    journal.close()

    engine, journal, _, rec = _engine(tmp_path, warm, broker=broker, run_id="r", paper=False)
    notes = engine.reconcile({"NIFTY": FUT, "BANKNIFTY": other})
    assert any(n.startswith("adopted open position NIFTY -75") for n in notes)
    assert any("SBIN +75 (p2) is no longer held" in n for n in notes)
    assert any(n.startswith("MISMATCH BANKNIFTY") for n in notes)
    assert list(engine.positions) == ["p1"] and engine.stepper.position == -1
    assert rec.events("error")  # the mismatch is shouted
    states = journal.positions("r").set_index("position_id")["state"].to_dict()
    assert states == {"p1": "open", "p2": "closed"}
    # the adopted position is the engine's: a kill flattens it at the broker
    engine.last_price["NIFTY"] = 22001.0
    engine.now_ns = pd.Timestamp("2024-03-05 10:01:30", tz=IST).value  # past the journal's last instant
    engine.kill("test")
    broker.on_quote("NIFTY", 22002.0, ts=pd.Timestamp("2024-03-05 10:02", tz=IST))
    engine._poll()
    assert {p.instrument.symbol: p.quantity for p in broker.positions()}["NIFTY"] == 0


def test_an_entry_that_fills_during_a_kill_is_flattened_at_once_under_its_own_tag(tmp_path, sim_data):
    """A kill cancels a pending entry, but the broker filled it first: the engine exits it too."""
    _, warm, day = sim_data

    class FillsBeforeCancel(PaperBroker):
        """A slow exchange: the tick right after a placement does not reach the book (so the entry
        is still open between ticks), and a cancel loses the race with the fill."""

        skip = False

        def place_order(self, req):
            order = super().place_order(req)
            self.skip = True
            return order

        def on_tick(self, tick):
            if self.skip:
                self.skip = False
                return
            super().on_tick(tick)

        def cancel_order(self, order_id):
            return self.order(order_id)  # still OPEN: it fills on the next tick

    holder = {}
    broker = FillsBeforeCancel(db_path=tmp_path / "race.duckdb", cash=10_000_000,
                               clock=lambda: pd.Timestamp(holder["e"].now_ns or 1, tz="UTC"))
    engine, journal, _, rec = _engine(tmp_path, warm, broker=broker)
    holder["e"] = engine
    ticks = _ticks(day)

    def events():
        for tick in ticks:
            if engine.pending and any(p.leg == "e" for p in engine.pending.values()):
                engine.kill("test race")
            yield tick

    engine.run(events())
    assert engine.state == "killed"
    pos = journal.positions("t1")
    last = pos.iloc[-1]
    assert last["state"] == "closed" and last["exit_reason"] == "kill"
    assert all(p.quantity == 0 for p in broker.positions())
    orders = journal.orders("t1")
    assert orders["tag"].is_unique
    assert set(orders[orders["position_id"] == last["position_id"]]["leg"]) == {"e", "x"}

"""Paper and live runs from one parameter file: set-up, run, results, kill and compare.

``tradeflow trade -p params/paper_nifty.yaml``, ``notebooks/30_trade.ipynb`` and ``make
paper`` all come here. :func:`run_trade` checks live arming *first* (before any broker or
network call), gates on the NSE calendar, warms the strategy up from the candle store,
builds the broker (the paper account of this run, or the live adapter), the stream (a replay
of stored candles, the simulated market, a broker feed with polling fallback) and the
journal, then runs the :class:`~tradeflow.engine.Engine`.

Run ids are ``<name>-<YYYYMMDD>-<params hash>``: running the same parameters on the same day
again *resumes* that run (journal, paper account and order tags are the run's), which is
what a restart after a crash needs; different parameters make a different run.
"""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ._writer import Writer
from .brokers.base import Instrument, InstrumentKind, Product, Segment
from .calendar import IST, is_session, sessions
from .errors import ConfigError, ParameterError
from .params import model_from_mapping
from .risk import RiskParams
from .strategy import StrategyParams

__all__ = [
    "TradeConfig",
    "TradeResult",
    "load_trade_config",
    "check_arming",
    "run_trade",
    "compare_run",
    "request_kill",
    "active_runs",
    "bar_start",
]

log = logging.getLogger(__name__)


class TradeConfig(BaseModel):
    """Everything a paper or live run needs, from a YAML file or notebook parameters."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("paper_nifty", pattern=r"^[A-Za-z0-9_.-]{1,40}$")
    mode: Literal["paper", "live"] = "paper"
    broker: Literal["paper", "dhan", "definedge"] = Field(
        "paper", description="Live orders go here (mode: live); in paper mode, where quotes come from for feed: broker/poll."
    )
    feed: Literal["replay", "sim", "broker", "poll"] = "replay"
    symbol: str = "NIFTY"
    source: str = Field("sim", description="History for warm-up and replays (a store source).")
    fetch: bool = True
    trade: Literal["underlying", "options"] = "underlying"
    instrument: str | None = Field(None, description="Tradable symbol from the master (e.g. a future); default: the symbol's own.")
    lots: int = Field(1, ge=1)
    lot_size: int = Field(75, ge=1, description="Units per lot of the paper proxy future of an index (no master).")
    tick_size: float = Field(0.05, gt=0)
    product: Product = Product.INTRADAY
    option_expiry: str = "nearest"
    replay_date: dt.date | None = None
    replay_days: int = Field(1, ge=1)
    replay_as: Literal["ticks", "bars"] = "ticks"
    speed: float | None = Field(None, gt=0, description="Replay pace (60 = an hour a minute); None = full speed.")
    when_closed: Literal["exit", "latest"] = Field(
        "exit", description="feed: sim on a closed day: exit cleanly, or play the latest session."
    )
    until: dt.time = dt.time(15, 30)
    warmup_days: int = Field(10, ge=1)
    cash: float = Field(1_000_000.0, gt=0)
    slippage_ticks: int = Field(1, ge=0)
    brokerage: str = "dhan"
    fill_timeout: float = Field(30.0, gt=0)
    poll_interval: float = Field(1.0, ge=0, description="Seconds between order-status polls on a live broker.")
    run_id: str | None = None
    strategy: StrategyParams = Field(default_factory=StrategyParams)
    risk: RiskParams = Field(default_factory=RiskParams)

    @field_validator("until", mode="before")
    @classmethod
    def _time(cls, value: Any) -> Any:
        if isinstance(value, int):  # YAML 1.1 reads 15:30 as 930
            return dt.time(value // 60, value % 60)
        return value


def load_trade_config(source: "str | Path | dict[str, Any]") -> TradeConfig:
    """A run's parameters from a YAML file or a mapping; unknown names get a "did you mean"."""
    if isinstance(source, dict):
        data, where = dict(source), "parameters"
    else:
        path = Path(source)
        if not path.is_file():
            raise ParameterError(f"parameter file {path} not found")
        data, where = yaml.safe_load(path.read_text()) or {}, str(path)
    return model_from_mapping(TradeConfig, data, {"strategy": StrategyParams, "risk": RiskParams}, source=where)


def check_arming(cfg: TradeConfig) -> None:
    """Live needs both keys; refuse before anything touches a broker, naming what is missing."""
    from .brokers.connect import LiveNotArmed, _armed

    if cfg.mode != "live":
        return
    if os.environ.get("TRADEFLOW_NOW"):
        raise ConfigError("TRADEFLOW_NOW (a pretend clock for paper rehearsals) is set: unset it for a live run")
    missing = []
    if cfg.broker == "paper":
        raise ConfigError("mode: live needs broker: dhan or definedge (the paper broker never sends real orders)")
    if not _armed():
        missing.append("TRADEFLOW_ALLOW_LIVE=1 is not set in this machine's environment")
    if missing:
        raise LiveNotArmed(
            "live trading refused before any broker call: it needs both `mode: live` in the parameters and "
            "TRADEFLOW_ALLOW_LIVE=1 in the environment; " + "; ".join(missing)
        )
    if cfg.feed in ("replay", "sim"):
        raise ConfigError(f"mode: live cannot trade on feed: {cfg.feed}; use feed: broker (websocket) or poll")


def _params_hash(cfg: TradeConfig) -> str:
    body = cfg.model_dump(mode="json", exclude={"run_id", "speed", "until"})
    return hashlib.sha1(json.dumps(body, sort_keys=True).encode()).hexdigest()[:6]


def bar_start(ts: pd.Timestamp, minutes: int) -> pd.Timestamp:
    """The start (IST) of the ``minutes`` bar holding instant ``ts``, on the 09:15 grid."""
    local = pd.Timestamp(ts).tz_convert(IST)
    since = local.hour * 60 + local.minute - 555
    start = max(0, since) // minutes * minutes + 555
    return local.normalize() + pd.Timedelta(minutes=start)


# ---------------------------------------------------------------------- results
@dataclass
class TradeResult:
    run_id: str
    status: str  # stopped, killed, failed, holiday
    run_dir: Path
    trades: pd.DataFrame
    daily: pd.DataFrame
    summary: str
    days: list[dt.date]
    journal_path: Path | None = None
    signals: pd.DataFrame | None = None

    def __repr__(self) -> str:
        return f"TradeResult({self.run_id!r}, {self.status}, {len(self.trades)} trades)"


def trades_frame(positions: pd.DataFrame) -> pd.DataFrame:
    """The journal's positions as a trade list (long/short by the strategy's direction)."""
    cols = ["entry_time", "exit_time", "side", "symbol", "quantity", "entry_price", "exit_price", "exit_reason",
            "gross_pnl", "charges", "net_pnl", "state"]
    if positions.empty:
        return pd.DataFrame(columns=cols)
    out = positions[positions["state"].isin(["open", "closing", "closed"])].copy()
    out["side"] = out["direction"].map({1: "long", -1: "short"})
    return out[cols].reset_index(drop=True)


# ---------------------------------------------------------------------- active runs and the kill switch
def _active_dir() -> Path:
    from .config import settings

    return settings().runs_dir / "active"


def active_runs() -> list[dict[str, Any]]:
    """Runs that registered as running (their pid may have died: ``alive`` says)."""
    out = []
    for path in sorted(_active_dir().glob("*.json")):
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        info["alive"] = _pid_alive(int(info.get("pid", 0)))
        info["file"] = str(path)
        out.append(info)
    return out


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def request_kill(run_id: str | None = None) -> list[dict[str, Any]]:
    """Write ``KILL`` into the folder of every active run (or of ``run_id``); returns them.

    Each engine checks its folder once per second of market time, then cancels its open
    orders, flattens and stops. Registrations of dead processes are removed.
    """
    hit = []
    for info in active_runs():
        if run_id is not None and info["run_id"] != run_id:
            continue
        if not info["alive"]:
            Path(info["file"]).unlink(missing_ok=True)
            continue
        kill = Path(info["run_dir"]) / "KILL"
        kill.write_text(f"kill requested at {pd.Timestamp.now(tz=IST)}\n")
        hit.append(info)
    return hit


# ---------------------------------------------------------------------- the run
def _now() -> pd.Timestamp:
    """Now in IST; ``TRADEFLOW_NOW`` (an ISO time) pretends another day for paper rehearsals and tests."""
    fake = os.environ.get("TRADEFLOW_NOW")
    if fake:
        ts = pd.Timestamp(fake)
        return (ts.tz_localize(IST) if ts.tzinfo is None else ts).tz_convert(IST)
    return pd.Timestamp.now(tz=IST)


def _today() -> dt.date:
    return _now().date()


def _days(cfg: TradeConfig, *, wait: Callable[[float], None] = time.sleep) -> tuple[list[dt.date], str]:
    """The session(s) the run trades, or none with the reason (a holiday, the market closed)."""
    if cfg.feed == "replay":
        if cfg.replay_date is None:
            raise ParameterError("feed: replay needs replay_date (a past NSE session, e.g. 2024-03-05)")
        if not is_session(cfg.replay_date):
            raise ParameterError(f"replay_date {cfg.replay_date} is not an NSE session (weekend or holiday); pick a trading day")
        return sessions(cfg.replay_date, cfg.replay_date + dt.timedelta(days=cfg.replay_days * 2 + 10))[: cfg.replay_days], ""
    today = _today()
    latest = cfg.feed == "sim" and cfg.when_closed == "latest"
    if not is_session(today):
        if latest:
            return [sessions(today - dt.timedelta(days=15), today - dt.timedelta(days=1))[-1]], ""
        return [], f"{today} is not an NSE session (weekend or exchange holiday): nothing to do"
    now = _now()
    open_, close = now.normalize() + pd.Timedelta(hours=9, minutes=15), now.normalize() + pd.Timedelta(hours=15, minutes=30)
    if now >= close:
        if latest:
            return [today], ""
        return [], f"the NSE session of {today} has closed ({now:%H:%M} IST): nothing to do"
    if now < open_:
        log.info("waiting for the open at 09:15 IST (%.0f s)", (open_ - now).total_seconds())
        wait(max(0.0, (open_ - now).total_seconds()))
    return [today], ""


def _history(cfg: TradeConfig, store, days: list[dt.date], progress: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(warm-up candles of the signal timeframe before the first day, 1m candles of the days)."""
    from .ingest import fetch

    first, last = days[0], days[-1]
    warm_start = first - dt.timedelta(days=int(cfg.warmup_days * 1.6) + 5)
    if cfg.fetch:
        fetch(cfg.symbol, "1m", warm_start, last, source=cfg.source, store=store, progress=progress)
    tf = cfg.strategy.timeframe
    warm = store.candles(cfg.symbol, f"{tf}m", warm_start, first - dt.timedelta(days=1))
    if cfg.feed in ("broker", "poll") and first == _today():
        # a broker feed has no history: today's closed bars so far come from the store (fetched from `source`)
        today = store.candles(cfg.symbol, f"{tf}m", first, first)
        ends = today.index + pd.Timedelta(minutes=tf)
        warm = pd.concat([warm, today[ends <= pd.Timestamp.now(tz=IST)]])
    day_bars = store.candles(cfg.symbol, "1m" if cfg.replay_as == "ticks" else f"{tf}m", first, last)
    return warm, day_bars


def _instrument_picker(cfg: TradeConfig, master) -> Callable[[int, float], Instrument]:
    """What an entry trades: a fixed instrument (equity, future, paper proxy) or an ATM option."""
    if cfg.trade == "options":
        if master is None:
            raise ConfigError(
                "trade: options needs option quotes and an instrument master: use feed: broker or poll with "
                "broker: dhan or definedge; replays and the simulated market have only the underlying"
            )

        def pick(direction: int, spot: float) -> Instrument:
            return master.atm_option(cfg.symbol, spot, cfg.option_expiry, "CE" if direction > 0 else "PE",
                                     today=pd.Timestamp.now(tz=IST).date())

        return pick
    if cfg.instrument:
        if master is None:
            raise ConfigError(f"instrument: {cfg.instrument} needs a broker instrument master (feed: broker or poll)")
        inst = master.get(cfg.instrument)
    elif master is not None:
        found = master.get(cfg.symbol)
        if found.kind is InstrumentKind.INDEX:
            futures = master.futures(cfg.symbol)
            if not futures:
                raise ConfigError(f"{cfg.symbol} is an index and the master lists no futures on it; set instrument:")
            found = futures[0]
        inst = found
    else:
        from .brokers.sim import sim_instruments

        known = {i.symbol: i for i in sim_instruments()}
        inst = known.get(cfg.symbol.upper())
        if inst is None or inst.kind is InstrumentKind.INDEX:
            # paper on an index: a proxy future priced off the index itself (no basis), lot_size from the config
            inst = Instrument(cfg.symbol.upper(), Segment.NSE_FNO, InstrumentKind.FUTIDX, lot_size=cfg.lot_size,
                              tick_size=cfg.tick_size, name=f"{cfg.symbol} proxy future (paper, priced off the index)",
                              underlying=cfg.symbol.upper())
    return lambda direction, spot: inst


def _stream(cfg: TradeConfig, days: list[dt.date], day_bars: pd.DataFrame, quotes, instruments: list[Instrument]):
    """The event stream of the run: replay, the simulated market, or a broker feed with polling fallback."""
    from . import streams

    if cfg.feed == "replay":
        if day_bars.empty:
            raise ParameterError(
                f"no candles of {cfg.symbol} for {days[0]}..{days[-1]} in the store: run "
                f"`tradeflow fetch --symbol {cfg.symbol} --source {cfg.source} --start {days[0]} --end {days[-1]}` or set fetch: true"
            )
        return streams.ReplayStream({cfg.symbol.upper(): day_bars}, as_ticks=cfg.replay_as == "ticks", speed=cfg.speed,
                                    max_sleep=1.0, timeframe_minutes=1 if cfg.replay_as == "ticks" else cfg.strategy.timeframe)
    if cfg.feed == "sim":
        return streams.open_stream("sim", symbols=[cfg.symbol.upper()], speed=cfg.speed)
    if cfg.feed == "poll":
        return streams.open_stream("poll", broker=quotes, instruments=instruments, interval=1.0)
    if cfg.broker == "dhan":
        from .session import dhan_session

        sess = dhan_session()
        return streams.open_stream("dhan", instruments=instruments, client_id=sess.client_id,
                                   access_token=sess.access_token, broker=quotes)
    if cfg.broker == "definedge":
        from .session import definedge_session

        uid, actid, _, ws_key = definedge_session().keys()
        return streams.open_stream("definedge", instruments=instruments, uid=uid, actid=actid, susertoken=ws_key, broker=quotes)
    raise ConfigError("feed: broker needs broker: dhan or definedge (whose websocket gives the ticks)")


def _run_dir(run_id: str) -> Path:
    env = os.environ.get("TRADEFLOW_RUN_DIR")
    if env:
        return Path(env)
    from .config import settings

    return settings().runs_dir / dt.date.today().isoformat() / run_id


def run_trade(
    cfg: TradeConfig,
    *,
    store=None,
    journal_path: "str | Path | None" = None,
    notifier=None,
    stream=None,
    broker=None,
    master=None,
    on_status: Callable | None = None,
    progress: bool = False,
    fresh: bool = False,
) -> TradeResult:
    """Run the engine for ``cfg``; returns the trades and where the run's files are."""
    check_arming(cfg)  # before anything else: no broker call, no network, no file
    from .engine import Engine
    from .journal import Journal
    from .notify import notifier_from_env
    from .store import CandleStore

    days, closed = _days(cfg)
    base_id = cfg.run_id or f"{cfg.name}-{(days[0] if days else dt.date.today()):%Y%m%d}-{_params_hash(cfg)}"
    run_id = f"{base_id}-{pd.Timestamp.now():%H%M%S}" if fresh else base_id
    run_dir = _run_dir(run_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    notifier = notifier or notifier_from_env()
    if not days:
        msg = closed
        log.info(msg)
        notifier.send("stop", f"{run_id}: {msg}")
        return TradeResult(run_id, "holiday", run_dir, trades_frame(pd.DataFrame()), pd.DataFrame(), msg, [])
    if (run_dir / "KILL").exists():
        raise ConfigError(f"{run_dir / 'KILL'} exists: this run was killed; delete that file to start it again")
    store = store or CandleStore()
    warm, day_bars = _history(cfg, store, days, progress)
    # a run started during today's session: what happened before now rebuilds state, it is not traded
    live_now = cfg.feed != "replay" and days[0] == _today() and _now().hour * 60 + _now().minute >= 555

    own_broker = broker is None
    writer = Writer()  # the journal and the paper account reach disk in one order
    holder: dict[str, Any] = {}  # the engine, once built: a replay's paper broker keeps the replay's clock

    def event_clock() -> pd.Timestamp:
        engine = holder.get("engine")
        return pd.Timestamp(engine.now_ns, tz="UTC") if engine is not None and engine.now_ns else pd.Timestamp.now(tz="UTC")

    if broker is None:
        if cfg.mode == "live":
            from .brokers.connect import connect

            broker = connect(cfg.broker, orders=True)
        else:
            from .brokers.paper import PaperBroker
            from .config import settings

            broker = PaperBroker(db_path=settings().data_dir / "paper" / "runs" / f"{run_id}.duckdb", cash=cfg.cash,
                                 slippage_ticks=cfg.slippage_ticks, brokerage=cfg.brokerage,
                                 clock=event_clock if cfg.feed == "replay" else None, writer=writer)
    quotes = broker
    if cfg.feed in ("broker", "poll"):
        if cfg.broker == "paper":
            raise ConfigError(f"feed: {cfg.feed} needs broker: dhan or definedge for its quotes (paper orders stay paper)")
        if master is None:
            from .instruments import load_master

            master = load_master(cfg.broker)
        if cfg.mode == "paper":
            from .brokers.connect import connect

            quotes = connect(cfg.broker)  # quotes only: paper orders never reach it
    pick = _instrument_picker(cfg, master)
    journal = Journal(journal_path, writer=writer)
    active = _active_dir() / f"{run_id}.json"
    try:
        engine = Engine(
            run_id=run_id, symbol=cfg.symbol.upper(), params=cfg.strategy, broker=broker, journal=journal,
            instrument_for=pick, lots=cfg.lots, risk=cfg.risk, product=cfg.product, notifier=notifier,
            paper=cfg.mode == "paper", run_dir=run_dir, until=cfg.until, fill_timeout=cfg.fill_timeout,
            poll_interval=0.0 if cfg.mode == "paper" else cfg.poll_interval, on_status=on_status,
        )
        holder["engine"] = engine
        engine.warm_up(warm)
        resumed = journal.start_run(run_id, name=cfg.name, mode=cfg.mode, broker=cfg.broker, symbol=cfg.symbol,
                                    params=cfg.model_dump(mode="json"), run_dir=str(run_dir), pid=os.getpid())
        engine.resume()
        if live_now:
            engine.resume_ns = max(engine.resume_ns, int(pd.Timestamp.now(tz="UTC").value))
            if resumed and cfg.feed in ("broker", "poll"):
                engine.reconcile()  # no replay of the morning: the broker's positions are the truth
        traded = pick(1, float(warm["close"].iloc[-1]) if len(warm) else 1.0) if cfg.trade == "underlying" else None
        if stream is None:
            wanted = [i for i in (master.get(cfg.symbol) if master is not None else None, traded) if i is not None]
            stream = _stream(cfg, days, day_bars, quotes, wanted)
        engine.subscribe = getattr(stream, "subscribe", None)
        engine.feed_health = (lambda: getattr(stream, "health").state) if hasattr(stream, "health") else None
        active.parent.mkdir(parents=True, exist_ok=True)
        active.write_text(json.dumps({"run_id": run_id, "run_dir": str(run_dir), "pid": os.getpid(),
                                      "started": str(pd.Timestamp.now(tz=IST))}))
        journal.event(run_id, "start", f"{'resumed' if resumed else 'started'} {cfg.mode} {cfg.symbol} on {cfg.feed} "
                                       f"({days[0]}..{days[-1]})", tick_ns=None)
        if not resumed:
            notifier.send("start", f"{run_id}: {cfg.mode} run on {cfg.symbol} ({cfg.feed}) started")
        try:
            status = engine.run(stream)
        finally:
            close = getattr(stream, "close", None)
            if close:
                close()
        journal.finish_run(run_id, engine.state)
        trades = trades_frame(journal.positions(run_id))
        daily = journal.daily_pnl(run_id)
        trades.to_csv(run_dir / "trades.csv", index=False)
        (run_dir / "summary.json").write_text(json.dumps(
            {"run_id": run_id, "status": engine.state, "line": status.line(), "days": [str(d) for d in days],
             "trades": len(trades), "net_pnl": float(trades["net_pnl"].fillna(0).sum()) if len(trades) else 0.0}, indent=1))
        return TradeResult(run_id, engine.state, run_dir, trades, daily, status.line(), days, journal.path,
                           journal.signals(run_id))
    finally:
        active.unlink(missing_ok=True)
        try:
            journal.close()
            if own_broker and hasattr(broker, "close"):
                broker.close()
        finally:
            writer.close()


# ---------------------------------------------------------------------- compare with the backtest
def compare_run(run_id: str, *, store=None, journal_path: "str | Path | None" = None) -> pd.DataFrame:
    """A run's trades beside the backtest's on the same days and parameters, with the differences.

    Trades are matched by entry bar (the signal bar the entry filled in). ``status`` is
    ``same`` (times, side and reason equal), ``differs`` (the columns ``*_diff`` say how), or
    ``run only`` / ``backtest only``.
    """
    from .backtest import Execution, run_backtest
    from .brokers.paper import costs_segment
    from .journal import Journal
    from .store import CandleStore

    with Journal(journal_path, read_only=True) as journal:
        info = journal.run(run_id)
        if info is None:
            known = journal.runs()["run_id"].tolist()
            close = difflib.get_close_matches(run_id, known, n=1)
            raise ParameterError(f"no run {run_id!r} in the journal" + (f"; did you mean {close[0]!r}?" if close else ""))
        positions = journal.positions(run_id)
    cfg = load_trade_config(info["params"])
    ours = trades_frame(positions)
    store = store or CandleStore()
    tf = cfg.strategy.timeframe
    if ours.empty:
        days = [cfg.replay_date] if cfg.replay_date else []
    else:
        days = sorted({t.date() for t in ours["entry_time"]})
    if cfg.replay_date:
        days = sessions(cfg.replay_date, cfg.replay_date + dt.timedelta(days=cfg.replay_days * 2 + 10))[: cfg.replay_days]
    if not days:
        return pd.DataFrame()
    warm_start = days[0] - dt.timedelta(days=int(cfg.warmup_days * 1.6) + 5)
    candles = store.candles(cfg.symbol, f"{tf}m", warm_start, days[-1])
    inst = Instrument(cfg.symbol, Segment.NSE_FNO, InstrumentKind.FUTIDX, lot_size=cfg.lot_size)
    if not ours.empty and ours["symbol"].iloc[0] != cfg.symbol.upper():
        inst = Instrument(ours["symbol"].iloc[0], Segment.NSE_FNO, InstrumentKind.OPTIDX, lot_size=cfg.lot_size)
    ex = Execution(lots=cfg.lots, lot_size=cfg.lot_size, tick_size=cfg.tick_size, slippage_ticks=cfg.slippage_ticks,
                   segment=costs_segment(inst, cfg.product), broker=cfg.brokerage)
    bt = run_backtest(candles, cfg.strategy, ex, symbol=cfg.symbol, trade_from=pd.Timestamp(days[0]).tz_localize(IST)).trades
    bt = bt[bt["entry_time"].dt.tz_convert(IST).dt.date.isin(days)]
    return align_trades(ours, bt, tf)


def align_trades(ours: pd.DataFrame, bt: pd.DataFrame, minutes: int) -> pd.DataFrame:
    """Match run and backtest trades by entry bar; one row per trade of either, with differences."""
    a = ours.copy()
    a["bar"] = [bar_start(t, minutes) for t in a["entry_time"]] if len(a) else []
    b = bt.copy()
    b["bar"] = [pd.Timestamp(t).tz_convert(IST) for t in b["entry_time"]] if len(b) else []
    keep = ["bar", "side", "entry_time", "exit_time", "entry_price", "exit_price", "exit_reason", "net_pnl"]
    a = a[keep].add_suffix("_run").rename(columns={"bar_run": "bar"})
    b = b[keep].add_suffix("_bt").rename(columns={"bar_bt": "bar"})
    if len(a):
        a["bar"] = pd.DatetimeIndex(a["bar"]).as_unit("us")
    if len(b):
        b["bar"] = pd.DatetimeIndex(b["bar"]).as_unit("us")
    out = a.merge(b, on="bar", how="outer").sort_values("bar").reset_index(drop=True)
    exit_bar_run = [bar_start(t, minutes) if pd.notna(t) else pd.NaT for t in out["exit_time_run"]]
    exit_bar_bt = [pd.Timestamp(t).tz_convert(IST) if pd.notna(t) else pd.NaT for t in out["exit_time_bt"]]
    out["exit_bar_diff_min"] = [
        (r - t).total_seconds() / 60 if pd.notna(r) and pd.notna(t) else float("nan") for r, t in zip(exit_bar_run, exit_bar_bt)
    ]
    out["entry_price_diff"] = out["entry_price_run"] - out["entry_price_bt"]
    out["exit_price_diff"] = out["exit_price_run"] - out["exit_price_bt"]
    status = []
    for _, row in out.iterrows():
        if pd.isna(row["side_bt"]):
            status.append("run only")
        elif pd.isna(row["side_run"]):
            status.append("backtest only")
        elif row["side_run"] == row["side_bt"] and row["exit_reason_run"] == row["exit_reason_bt"] and row["exit_bar_diff_min"] == 0:
            status.append("same")
        else:
            status.append("differs")
    out["status"] = status
    return out

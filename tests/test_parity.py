"""Parity: real NIFTY days replayed through the paper engine give the backtest's trade list.

The engine builds 5-minute (or 3-minute) bars from synthetic ticks of the 1-minute candles,
steps the strategy bar by bar, sends market orders to the paper broker, which fills them at
the next tick (the next bar's open) with one tick of slippage; the vectorbt backtest runs on
the store's resampled candles with the same parameters, slippage and charges. Entry and exit
bars, sides, exit reasons, prices and net P&L must all agree.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from tradeflow.backtest import Execution, run_backtest
from tradeflow.calendar import IST
from tradeflow.store import CandleStore
from tradeflow.trading import align_trades, compare_run, load_trade_config, run_trade

FIRST = dt.date(2024, 3, 4)
DAYS = 4  # 4, 5, 6, 7 March 2024 (8 March was a holiday)

PARAM_SETS = {
    "supertrend_stops": dict(timeframe=5, st_period=10, st_multiplier=3.0, stop_loss=40, target=80,
                             max_trades_per_day=4, cooldown_bars=1),
    "macd_trailing": dict(timeframe=5, st_period=7, st_multiplier=2.0, macd_confirm=True, flip_only=False,
                          trailing_stop=30, min_hold_bars=1),
    "htf_long_daily_loss": dict(timeframe=5, st_period=10, st_multiplier=2.0, htf_minutes=60, direction="long",
                                flip_only=False, min_hold_bars=2, max_daily_loss=60, stop_loss=25),
    "percent_3m": dict(timeframe=3, st_period=10, st_multiplier=2.5, stop_mode="percent", stop_loss=0.2, target=0.4,
                       entry_cutoff="14:30", square_off="15:00"),
}


@pytest.fixture(scope="module")
def real_store(nifty_1m, tmp_path_factory) -> CandleStore:
    store = CandleStore(tmp_path_factory.mktemp("parity") / "parquet")
    store.upsert(nifty_1m.loc["2024-02-05":"2024-03-12"], "NIFTY", "1m")
    return store


def _config(name: str, strategy: dict, **extra) -> dict:
    return {
        "name": f"parity-{name}"[:40], "mode": "paper", "feed": "replay", "symbol": "NIFTY", "fetch": False,
        "replay_date": FIRST, "replay_days": DAYS, "lots": 1, "lot_size": 75, "slippage_ticks": 1,
        "risk": {"stops_on": "close"}, "strategy": strategy, **extra,
    }


def _backtest(store: CandleStore, cfg) -> pd.DataFrame:
    tf = cfg.strategy.timeframe
    warm_start = FIRST - dt.timedelta(days=int(cfg.warmup_days * 1.6) + 5)
    last = pd.Timestamp(FIRST + dt.timedelta(days=10))
    candles = store.candles("NIFTY", f"{tf}m", warm_start, last)
    ex = Execution(lots=1, lot_size=75, tick_size=0.05, slippage_ticks=1, segment="index_futures", broker="dhan")
    trades = run_backtest(candles, cfg.strategy, ex, symbol="NIFTY", trade_from=pd.Timestamp(FIRST).tz_localize(IST)).trades
    return trades


@pytest.mark.parametrize(("name", "as_"), [(n, "ticks") for n in PARAM_SETS] + [("supertrend_stops", "bars")])
def test_paper_replay_equals_backtest(real_store, name, as_):
    cfg = load_trade_config(_config(f"{name}-{as_}", PARAM_SETS[name], replay_as=as_))
    result = run_trade(cfg, store=real_store)
    assert result.status == "stopped"
    assert result.days[0] == FIRST and len(result.days) == DAYS
    bt = _backtest(real_store, cfg)
    bt = bt[bt["entry_time"].dt.tz_convert(IST).dt.date.isin(result.days)]
    assert len(bt) >= 3, f"{name}: too few backtest trades ({len(bt)}) for a meaningful comparison"
    table = align_trades(result.trades, bt, cfg.strategy.timeframe)
    bad = table[table["status"] != "same"]
    assert bad.empty, f"{name}: trades differ\n{bad.to_string()}"
    assert np.allclose(table["entry_price_diff"], 0.0, atol=1e-6)
    assert np.allclose(table["exit_price_diff"], 0.0, atol=1e-6)
    assert np.allclose(table["net_pnl_run"], table["net_pnl_bt"], atol=0.02)
    # the journal holds one order per leg, all filled, none sent twice
    assert set(result.trades["state"]) == {"closed"}


def test_compare_command_reports_same_trades(real_store):
    cfg = load_trade_config(_config("compare", PARAM_SETS["supertrend_stops"]))
    result = run_trade(cfg, store=real_store)
    table = compare_run(result.run_id, store=real_store)
    assert len(table) == len(result.trades) > 0
    assert (table["status"] == "same").all()


def test_tick_stops_exit_earlier_than_the_backtest_and_compare_shows_it(real_store):
    """With stops on ticks a stop fires inside the bar: the exits move, and compare says so."""
    strategy = dict(PARAM_SETS["supertrend_stops"], stop_loss=15, target=None)
    cfg = load_trade_config(_config("tickstops", strategy, risk={"stops_on": "tick"}))
    result = run_trade(cfg, store=real_store)
    stops = result.trades[result.trades["exit_reason"] == "stop_loss"]
    assert len(stops) > 0
    # bar-close exits fill at the first tick of a signal bar (minute on the 5-minute grid, 12 s in);
    # a tick stop fills at the tick after the touch, inside a bar
    inside = [not (t.minute % 5 == 0 and t.second == 12) for t in stops["exit_time"].dt.tz_convert(IST)]
    assert any(inside)
    table = compare_run(result.run_id, store=real_store)
    assert (table["status"] != "same").any()

"""vectorbt backtests: fills, charges, trade list, sweeps (local, Dask, resume), walk-forward."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tradeflow import backtest as bt
from tradeflow.backtest import Execution, expand_grid, run_backtest, sweep, walk_forward
from tradeflow.costs import Segment, charges
from tradeflow.errors import ParameterError
from tradeflow.store import CandleStore
from tradeflow.strategy import StrategyParams, signals

EX = Execution(lots=2, lot_size=75, slippage_ticks=2, segment=Segment.INDEX_FUTURES)
PARAMS = StrategyParams(stop_loss=30, target=60, max_trades_per_day=4)


@pytest.fixture(scope="module")
def real_store(nifty_1m, tmp_path_factory) -> CandleStore:
    store = CandleStore(tmp_path_factory.mktemp("bt") / "parquet")
    store.upsert(nifty_1m.loc["2024-01-01":"2024-03-31"], "NIFTY", "1m")
    return store


@pytest.fixture(scope="module")
def result(real_store):
    return run_backtest(real_store.candles("NIFTY", "5m"), PARAMS, EX, symbol="NIFTY")


def test_fills_are_next_open_plus_slippage(result):
    candles, trades, sig = result.candles, result.trades, result.signals
    assert len(trades) > 30
    slip = 2 * 0.05
    for t in trades.itertuples():
        j = candles.index.get_loc(t.entry_time)
        decided = sig.iloc[j - 1]
        assert decided["long_entry" if t.side == "long" else "short_entry"], "entry fills the bar after its decision"
        side = 1 if t.side == "long" else -1
        assert t.entry_price == pytest.approx(candles["open"].iloc[j] + side * slip)
        if t.status == "closed":
            k = candles.index.get_loc(t.exit_time)
            assert sig["exit"].iloc[k - 1] and sig["exit_reason"].iloc[k - 1] == t.exit_reason
            assert t.exit_price == pytest.approx(candles["open"].iloc[k] - side * slip)


def test_charges_and_pnl_add_up(result):
    trades = result.trades
    closed = trades[trades.status == "closed"]
    assert (closed["quantity"] == 150).all()
    # each leg priced independently with the costs module
    for t in closed.head(10).itertuples():
        buy_first = t.side == "long"
        entry = charges(Segment.INDEX_FUTURES, "buy" if buy_first else "sell", t.entry_price, 150, on=t.entry_time.date())
        exit_ = charges(Segment.INDEX_FUTURES, "sell" if buy_first else "buy", t.exit_price, 150, on=t.exit_time.date())
        assert t.charges == pytest.approx(entry.total + exit_.total, abs=0.011)
        side = 1 if buy_first else -1
        assert t.gross_pnl == pytest.approx(side * (t.exit_price - t.entry_price) * 150)
        assert t.net_pnl == pytest.approx(t.gross_pnl - t.charges, abs=0.011)
    pf = result.portfolio
    assert trades["charges"].sum() == pytest.approx(float(pf.orders.fees.sum().iloc[0]), abs=0.05)
    assert trades["net_pnl"].sum() == pytest.approx(float(pf.total_profit().iloc[0]), abs=0.05)
    assert result.daily_pnl.sum() == pytest.approx(float(pf.total_profit().iloc[0]), abs=0.05)
    capital = 150 * result.candles["open"].iloc[0]  # no capital given: one position's notional
    assert result.equity.iloc[-1] - capital == pytest.approx(result.daily_pnl.sum(), abs=0.05)
    m = result.metrics()
    assert m["net_pnl"] == pytest.approx(result.daily_pnl.sum(), abs=0.05)
    assert m["total_return"] == pytest.approx(m["net_pnl"] / capital)
    daily = result.daily_pnl.to_numpy() / capital
    assert m["sharpe"] == pytest.approx(daily.mean() / daily.std(ddof=1) * np.sqrt(252))
    equity = capital + np.cumsum(result.daily_pnl.to_numpy())
    assert m["max_drawdown"] == pytest.approx((equity / np.maximum.accumulate(np.r_[capital, equity])[1:] - 1).min())


def test_trade_count_and_reasons_match_signals(result):
    sig = result.signals
    entries = int((sig.long_entry | sig.short_entry).iloc[:-1].sum())  # a decision on the last bar never fills
    assert len(result.trades) == entries
    assert set(result.trades["exit_reason"]) <= {"stop_loss", "target", "square_off", "supertrend_reversal", ""}


def test_stats_and_metrics(result):
    stats = result.stats()
    assert stats["Total Trades"] == len(result.trades)
    m = result.metrics()
    assert m["trades"] == len(result.trades)
    assert m["charges"] == pytest.approx(result.trades["charges"].sum(), abs=0.05)
    assert "net P&L" in result.summary()


def test_expand_grid_and_errors():
    combos = expand_grid(StrategyParams(), {"st_period": [7, 10], "timeframe": [5, 15]})
    assert len(combos) == 4 and {(p.st_period, p.timeframe) for p in combos} == {(7, 5), (7, 15), (10, 5), (10, 15)}
    with pytest.raises(ParameterError, match="did you mean 'st_period'"):
        expand_grid(StrategyParams(), {"st_perod": [7]})
    with pytest.raises(ParameterError, match="invalid"):
        expand_grid(StrategyParams(htf_minutes=60), {"timeframe": [25]})


GRID = {"st_period": [7, 10], "st_multiplier": [2.0, 3.0], "timeframe": [5, 15]}


def test_sweep_rows_equal_single_backtests(real_store, tmp_path):
    res = sweep("NIFTY", GRID, store=real_store, base=PARAMS, execution=EX, metric="net_pnl", progress=False,
                checkpoint_dir=tmp_path / "ck", chunk_size=3)
    table = res.table
    assert len(table) == 8
    assert table["net_pnl"].is_monotonic_decreasing
    for row in table.head(3).itertuples():
        p = StrategyParams(**json.loads(row.params))
        single = run_backtest(real_store.candles("NIFTY", f"{p.timeframe}m"), p, EX)
        m = single.metrics()  # the full, uncompressed run
        for name in bt.METRICS:
            assert getattr(row, name) == pytest.approx(m[name], rel=1e-9, abs=1e-6), name
    assert res.best().model_dump() == StrategyParams(**json.loads(table.iloc[0]["params"])).model_dump()


def test_sweep_resumes_after_interruption(real_store, tmp_path, monkeypatch):
    calls = []
    real_task = bt._sweep_task

    def flaky(*args):
        calls.append(args)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_task(*args)

    monkeypatch.setattr(bt, "_sweep_task", flaky)
    with pytest.raises(KeyboardInterrupt):
        sweep("NIFTY", GRID, store=real_store, base=PARAMS, execution=EX, progress=False, checkpoint_dir=tmp_path / "ck", chunk_size=2)
    assert len(list((tmp_path / "ck").glob("chunk-*.parquet"))) == 2
    calls.clear()
    monkeypatch.setattr(bt, "_sweep_task", lambda *a: (calls.append(a), real_task(*a))[1])
    res = sweep("NIFTY", GRID, store=real_store, base=PARAMS, execution=EX, progress=False, checkpoint_dir=tmp_path / "ck", chunk_size=2)
    assert len(calls) == 2  # 4 chunks, 2 already done
    fresh = sweep("NIFTY", GRID, store=real_store, base=PARAMS, execution=EX, progress=False, checkpoint_dir=tmp_path / "ck2", chunk_size=2)
    pd.testing.assert_frame_equal(res.table, fresh.table)


@pytest.mark.slow
def test_dask_sweep_equals_local(real_store, tmp_path):
    grid = {"st_period": [7, 10], "st_multiplier": [2.0, 3.0]}
    local = sweep("NIFTY", grid, store=real_store, base=PARAMS, execution=EX, progress=False, checkpoint_dir=tmp_path / "a", chunk_size=1)
    dask = sweep("NIFTY", grid, store=real_store, base=PARAMS, execution=EX, progress=False, checkpoint_dir=tmp_path / "b",
                 chunk_size=1, executor="dask")
    pd.testing.assert_frame_equal(local.table, dask.table)


def test_walk_forward(real_store):
    grid = {"st_multiplier": [2.0, 3.0]}
    wf = walk_forward("NIFTY", grid, base=PARAMS, execution=EX, store=real_store, in_sample_days=20, out_sample_days=10,
                      metric="net_pnl", progress=False)
    days = sorted(set(real_store.candles("NIFTY", "5m").index.tz_convert("Asia/Kolkata").date))
    assert len(wf.windows) == (len(days) - 20) // 10
    for w in wf.windows.itertuples():
        first, last = w.out_of_sample.split("..")
        t = wf.trades[wf.trades.window == w.window]
        dates = t["entry_time"].dt.tz_convert("Asia/Kolkata").dt.date.astype(str)
        assert ((dates >= first) & (dates <= last)).all()
        # the chosen multiplier is the in-sample best
        is_first, is_last = w.in_sample.split("..")
        scores = {}
        for m in grid["st_multiplier"]:
            p = PARAMS.model_copy(update={"st_multiplier": m})
            c = real_store.candles("NIFTY", "5m", is_first, is_last)
            scores[m] = run_backtest(c, p, EX).metrics()["net_pnl"]
        assert w.st_multiplier == max(scores, key=scores.get)
    assert wf.daily_pnl.index.is_monotonic_increasing
    assert wf.equity.iloc[-1] == pytest.approx(wf.daily_pnl.sum())


def test_empty_candles_refused():
    with pytest.raises(ParameterError, match="no candles"):
        run_backtest(pd.DataFrame(columns=["open", "high", "low", "close"]), PARAMS)


def test_many_symbols(real_store, nifty_1m):
    from tradeflow.backtest import backtest_symbols

    # a second symbol: the same bars shifted up by 1,000 points
    shifted = nifty_1m.loc["2024-01-01":"2024-01-31"] + 1000.0
    real_store.upsert(shifted, "OTHER", "1m")
    results = backtest_symbols(["NIFTY", "OTHER"], PARAMS, EX, start="2024-01-01", end="2024-01-31", store=real_store)
    assert set(results) == {"NIFTY", "OTHER"}
    a, b = results["NIFTY"].trades, results["OTHER"].trades
    # SuperTrend and the point-based rules do not care about the level: the same trades, prices 1,000 higher
    assert list(a["entry_time"]) == list(b["entry_time"]) and list(a["exit_reason"]) == list(b["exit_reason"])
    np.testing.assert_allclose(b["entry_price"] - a["entry_price"], 1000.0)
    table = sweep(["NIFTY", "OTHER"], {"st_period": [7, 10]}, start="2024-01-01", end="2024-01-31", store=real_store, base=PARAMS,
                  execution=EX, progress=False, checkpoint_dir=real_store.root.parent / "ck-many").table
    assert sorted(table["symbol"].unique()) == ["NIFTY", "OTHER"] and len(table) == 4

"""Backtests with vectorbt: one symbol or many, parameter sweeps (local or Dask), walk-forward.

Fills follow the strategy's timing contract: a decision at the close of bar *i* fills at
the open of bar *i + 1*, worsened by ``slippage_ticks`` ticks. Every order pays the Indian
charges of ``tradeflow.costs`` for its segment, side and date, so the equity curve, the
trade list and the metrics are net of costs. Sizes are ``lots × lot_size`` units.

vectorbt gets per-bar fee fractions worked out from our own charges, so its fees sum to the
same rupees as the trade list's charges (which it reports per leg exactly).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from .calendar import IST
from .costs import Segment, order_charges
from .errors import ParameterError
from .strategy import StrategyParams, signals

__all__ = [
    "Execution",
    "BacktestResult",
    "run_backtest",
    "backtest_symbols",
    "sweep",
    "SweepResult",
    "walk_forward",
    "WalkForwardResult",
    "METRICS",
]

log = logging.getLogger(__name__)

_TRADING_MINUTES_PER_YEAR = 252 * 375
METRICS = ("total_return", "net_pnl", "sharpe", "max_drawdown", "trades", "win_rate", "profit_factor", "charges")
"""Metrics a sweep reports; any of them can rank it (``max_drawdown`` is negative, larger is better)."""


class Execution(BaseModel):
    """How orders fill and what they cost."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lots: int = Field(1, ge=1)
    lot_size: int = Field(1, ge=1, description="Units per lot (NIFTY futures: 75 from 2024-11; check the master).")
    tick_size: float = Field(0.05, gt=0)
    slippage_ticks: float = Field(1.0, ge=0)
    segment: Segment = Segment.INDEX_FUTURES
    broker: str = "dhan"
    capital: float | None = Field(None, gt=0, description="Starting cash; None = the most the run ever needed.")

    @property
    def quantity(self) -> int:
        return self.lots * self.lot_size


# ---------------------------------------------------------------------- one portfolio


@dataclass
class _Orders:
    """vectorbt inputs for one column, and our exact per-leg charges."""

    long_entry: np.ndarray
    long_exit: np.ndarray
    short_entry: np.ndarray
    short_exit: np.ndarray
    fees: np.ndarray
    slippage: np.ndarray
    entry_charge: np.ndarray
    exit_charge: np.ndarray


def _orders(candles: pd.DataFrame, sig: pd.DataFrame, ex: Execution) -> _Orders:
    """Shift decisions to their fill bars and price every leg's charges."""
    n = len(candles)
    open_ = candles["open"].to_numpy(dtype=np.float64)
    pos = sig["position"].to_numpy()

    def shifted(a: np.ndarray) -> np.ndarray:
        out = np.zeros(n, dtype=bool)
        out[1:] = a[:-1]
        return out

    held = np.zeros(n, dtype=np.int8)
    held[1:] = pos[:-1]  # position before the fills at bar j's open
    exit_ = shifted(sig["exit"].to_numpy())
    long_entry = shifted(sig["long_entry"].to_numpy())
    short_entry = shifted(sig["short_entry"].to_numpy())
    long_exit = exit_ & (held > 0)
    short_exit = exit_ & (held < 0)

    slip = ex.slippage_ticks * ex.tick_size
    qty = float(ex.quantity)
    days = candles.index.tz_convert(IST).tz_localize(None).to_numpy().astype("datetime64[D]")
    entry_charge = np.zeros(n)
    exit_charge = np.zeros(n)
    for mask, side, target in (
        (long_entry, 1, entry_charge),
        (short_entry, -1, entry_charge),
        (long_exit, -1, exit_charge),
        (short_exit, 1, exit_charge),
    ):
        idx = np.flatnonzero(mask)
        if len(idx):
            price = open_[idx] + side * slip
            target[idx] += order_charges(
                ex.segment, np.full(len(idx), side), price, np.full(len(idx), qty), on_dates=days[idx], broker=ex.broker
            )
    legs = (long_entry | short_entry).astype(float) + (long_exit | short_exit).astype(float)
    fill_price = np.where(long_entry | short_exit, open_ + slip, open_ - slip)
    with np.errstate(divide="ignore", invalid="ignore"):
        fees = np.where(legs > 0, (entry_charge + exit_charge) / (legs * qty * fill_price), 0.0)
        slippage = np.where(legs > 0, slip / open_, 0.0)
    return _Orders(long_entry, long_exit, short_entry, short_exit, fees, slippage, entry_charge, exit_charge)


def _freq(params: StrategyParams) -> pd.Timedelta:
    return pd.Timedelta(minutes=params.timeframe)


def _portfolio(candles: pd.DataFrame, orders: Sequence[_Orders], ex: Execution, freq: pd.Timedelta, columns: pd.Index):
    import vectorbt as vbt

    def stack(name: str) -> pd.DataFrame:
        return pd.DataFrame(np.column_stack([getattr(o, name) for o in orders]), index=candles.index, columns=columns)

    open_ = pd.DataFrame(
        np.repeat(candles["open"].to_numpy(dtype=np.float64)[:, None], len(orders), axis=1), index=candles.index, columns=columns
    )
    close = open_.copy()
    close[:] = np.repeat(candles["close"].to_numpy(dtype=np.float64)[:, None], len(orders), axis=1)
    return vbt.Portfolio.from_signals(
        close,
        entries=stack("long_entry"),
        exits=stack("long_exit"),
        short_entries=stack("short_entry"),
        short_exits=stack("short_exit"),
        price=open_,
        size=float(ex.quantity),
        fees=stack("fees"),
        slippage=stack("slippage"),
        init_cash=ex.capital if ex.capital is not None else "autoalign",
        upon_opposite_entry="reverse",
        freq=freq,
    )


def _year_freq(tf: pd.Timedelta) -> pd.Timedelta:
    """Annualise by trading bars, not calendar time: 252 sessions × 375 minutes a year."""
    return pd.Timedelta(minutes=_TRADING_MINUTES_PER_YEAR)


@dataclass
class BacktestResult:
    """A backtest: the vectorbt portfolio, our trade list, daily P&L, equity and stats."""

    params: StrategyParams
    execution: Execution
    candles: pd.DataFrame
    signals: pd.DataFrame
    portfolio: Any
    trades: pd.DataFrame
    daily_pnl: pd.Series
    equity: pd.Series
    symbol: str = ""

    def stats(self) -> pd.Series:
        """vectorbt's statistics of the portfolio (annualised by trading minutes)."""
        pf = self.portfolio
        return pf.stats(column=pf.wrapper.columns[0], settings={"year_freq": _year_freq(_freq(self.params))})

    def metrics(self) -> pd.Series:
        return _metrics(self.portfolio, self.params).iloc[0]

    def summary(self) -> str:
        m = self.metrics()
        return (
            f"{self.symbol} {self.params.timeframe}m {self.candles.index[0].date()}..{self.candles.index[-1].date()}: "
            f"{int(m['trades'])} trades, net P&L {m['net_pnl']:,.2f} after charges {m['charges']:,.2f}, "
            f"win rate {m['win_rate']:.1%}, max drawdown {m['max_drawdown']:.2%}, sharpe {m['sharpe']:.2f}"
        )


def run_backtest(
    candles: pd.DataFrame,
    params: StrategyParams,
    execution: Execution | None = None,
    *,
    symbol: str = "",
    trade_from: "pd.Timestamp | str | None" = None,
) -> BacktestResult:
    """Backtest ``params`` on ``candles`` (bars of ``params.timeframe`` minutes)."""
    ex = execution or Execution()
    if candles.empty:
        raise ParameterError(f"no candles to backtest {symbol}: fetch or import history first")
    sig = signals(candles, params, trade_from=trade_from)
    orders = _orders(candles, sig, ex)
    pf = _portfolio(candles, [orders], ex, _freq(params), pd.Index([symbol or "strategy"]))
    trades = _trade_list(pf, candles, sig, orders, ex)
    value = pf.value().iloc[:, 0]
    pnl = value.diff()
    pnl.iloc[0] = value.iloc[0] - pf.init_cash.iloc[0]
    daily = pnl.groupby(pnl.index.tz_convert(IST).date).sum()
    daily.index = pd.DatetimeIndex(pd.to_datetime(daily.index)).tz_localize(IST)
    daily.name = "pnl"
    return BacktestResult(params, ex, candles, sig, pf, trades, daily, value.rename("equity"), symbol)


def _trade_list(pf, candles: pd.DataFrame, sig: pd.DataFrame, orders: _Orders, ex: Execution) -> pd.DataFrame:
    rec = pf.trades.records
    if len(rec) == 0:
        return pd.DataFrame(
            columns=["entry_time", "exit_time", "side", "entry_price", "exit_price", "quantity", "gross_pnl", "charges", "net_pnl", "exit_reason", "status"]
        )
    idx = candles.index
    entry_i = rec["entry_idx"].astype(int)
    exit_i = rec["exit_idx"].astype(int)
    side = np.where(rec["direction"] == 0, 1, -1)
    closed = rec["status"] == 1
    qty = rec["size"]
    gross = side * (rec["exit_price"] - rec["entry_price"]) * qty
    reasons = sig["exit_reason"].to_numpy()
    reason = np.where(closed, reasons[np.maximum(exit_i - 1, 0)], "")
    charges = orders.entry_charge[entry_i] + np.where(closed, orders.exit_charge[exit_i], 0.0)
    return pd.DataFrame(
        {
            "entry_time": idx[entry_i],
            "exit_time": pd.DatetimeIndex([idx[e] if c else pd.NaT for e, c in zip(exit_i, closed)]).tz_convert(IST),
            "side": np.where(side > 0, "long", "short"),
            "entry_price": rec["entry_price"],
            "exit_price": np.where(closed, rec["exit_price"], np.nan),
            "quantity": qty,
            "gross_pnl": np.where(closed, gross, np.nan),
            "charges": np.round(charges, 2),
            "net_pnl": np.where(closed, gross - charges, np.nan),
            "exit_reason": reason,
            "status": np.where(closed, "closed", "open"),
        }
    )


def _metrics(pf, params: StrategyParams) -> pd.DataFrame:
    """One row of metrics per portfolio column."""
    yf = _year_freq(_freq(params))
    trades = pf.trades
    out = pd.DataFrame(
        {
            "total_return": pf.total_return(),
            "net_pnl": pf.total_profit(),
            "sharpe": pf.sharpe_ratio(year_freq=yf),
            "max_drawdown": -pf.max_drawdown().abs(),
            "trades": trades.count(),
            "win_rate": trades.win_rate(),
            "profit_factor": trades.profit_factor(),
            "charges": pf.orders.fees.sum(),
        }
    )
    out["win_rate"] = out["win_rate"].fillna(0.0)
    return out


def backtest_symbols(
    symbols: Iterable[str],
    params: StrategyParams,
    execution: Execution | None = None,
    *,
    start=None,
    end=None,
    store=None,
) -> dict[str, BacktestResult]:
    """One backtest per symbol from the store; each symbol its own vectorbt portfolio."""
    from .store import CandleStore

    store = store or CandleStore()
    return {
        sym: run_backtest(store.candles(sym, f"{params.timeframe}m", start, end), params, execution, symbol=sym)
        for sym in symbols
    }


# ---------------------------------------------------------------------- sweeps


def expand_grid(base: StrategyParams, grid: dict[str, Sequence[Any]]) -> list[StrategyParams]:
    """Every combination of ``grid`` over ``base``; unknown names get a "did you mean"."""
    fields = StrategyParams.model_fields
    for name, values in grid.items():
        if name not in fields:
            import difflib

            close = difflib.get_close_matches(name, list(fields), n=1)
            raise ParameterError(f"unknown sweep parameter {name!r}" + (f"; did you mean {close[0]!r}?" if close else ""))
        if not isinstance(values, (list, tuple)) or not values:
            raise ParameterError(f"sweep parameter {name!r} needs a non-empty list of values")
    names = list(grid)
    combos = []
    for values in itertools.product(*(grid[n] for n in names)):
        data = base.model_dump()
        data.update(dict(zip(names, values)))
        try:
            combos.append(StrategyParams(**data))
        except Exception as exc:  # an impossible combination (e.g. htf not a multiple): say which
            raise ParameterError(f"sweep combination {dict(zip(names, values))} is invalid: {exc}") from exc
    return combos


@dataclass
class SweepResult:
    """A tidy table: one row per (symbol, parameter set) with its metrics, best first."""

    table: pd.DataFrame
    metric: str
    grid: dict[str, list[Any]] = field(default_factory=dict)

    def best(self, symbol: str | None = None) -> StrategyParams:
        rows = self.table if symbol is None else self.table[self.table["symbol"] == symbol]
        row = rows.iloc[0]
        return StrategyParams(**json.loads(row["params"]))


def _chunk_metrics(candles: pd.DataFrame, combos: list[StrategyParams], ex: Execution, trade_from=None) -> pd.DataFrame:
    """Signals for each combination, then one broadcast portfolio for the whole chunk."""
    orders = [_orders(candles, signals(candles, p, trade_from=trade_from), ex) for p in combos]
    pf = _portfolio(candles, orders, ex, _freq(combos[0]), pd.RangeIndex(len(combos)))
    m = _metrics(pf, combos[0]).reset_index(drop=True)
    m.insert(0, "params", [p.model_dump_json() for p in combos])
    return m


def _sweep_task(store_root: str, symbol: str, timeframe: int, start, end, combos_json: list[str], ex_json: str) -> pd.DataFrame:
    """One unit of sweep work; runs on a Dask worker, which reads its own candles."""
    from .store import CandleStore

    combos = [StrategyParams.model_validate_json(c) for c in combos_json]
    ex = Execution.model_validate_json(ex_json)
    candles = CandleStore(store_root).candles(symbol, f"{timeframe}m", start, end)
    if candles.empty:
        raise ParameterError(f"no {timeframe}m candles for {symbol} in the store: fetch them first")
    out = _chunk_metrics(candles, combos, ex)
    out.insert(0, "symbol", symbol)
    return out


def sweep(
    symbols: "str | Sequence[str]",
    grid: dict[str, Sequence[Any]],
    *,
    start=None,
    end=None,
    base: StrategyParams | None = None,
    execution: Execution | None = None,
    metric: str = "total_return",
    store=None,
    executor: Literal["local", "dask"] = "local",
    scheduler: str | None = None,
    chunk_size: int | None = None,
    checkpoint_dir: "str | Path | None" = None,
    progress: bool = True,
) -> SweepResult:
    """Backtest every combination of ``grid`` (strategy parameters, ``timeframe`` included).

    Work is split into chunks of (symbol × parameter sets); each chunk is one broadcast
    vectorbt portfolio, so memory stays bounded (``chunk_size`` combinations, by default
    about ten million cells per chunk). ``executor="dask"`` sends chunks to the Dask
    scheduler at ``scheduler`` (a ``LocalCluster`` when None); each worker reads its own
    candles from the store. Finished chunks are saved under ``checkpoint_dir`` (default
    ``data/sweeps/<hash>``), so an interrupted sweep resumes where it stopped.
    """
    from .config import settings
    from .store import CandleStore

    if metric not in METRICS:
        raise ParameterError(f"unknown metric {metric!r}: choose one of {', '.join(METRICS)}")
    if executor not in ("local", "dask"):
        raise ParameterError(f"unknown executor {executor!r}: use 'local' or 'dask'")
    syms = [symbols] if isinstance(symbols, str) else list(symbols)
    base = base or StrategyParams()
    ex = execution or Execution()
    combos = expand_grid(base, {k: list(v) for k, v in grid.items()})
    store = store or CandleStore()
    root = str(Path(store.root).resolve())

    tasks: list[tuple[str, int, list[str]]] = []
    by_tf: dict[int, list[StrategyParams]] = {}
    for p in combos:
        by_tf.setdefault(p.timeframe, []).append(p)
    for sym in syms:
        for tf, group in sorted(by_tf.items()):
            n_bars = max(1, _count_bars(store, sym, tf, start, end))
            size = chunk_size or max(1, min(len(group), 10_000_000 // n_bars))
            for i in range(0, len(group), size):
                tasks.append((sym, tf, [p.model_dump_json() for p in group[i : i + size]]))

    key = hashlib.sha256(
        json.dumps([root, syms, str(start), str(end), base.model_dump_json(), ex.model_dump_json(), {k: list(map(str, v)) for k, v in grid.items()}]).encode()
    ).hexdigest()[:16]
    ckpt = Path(checkpoint_dir) if checkpoint_dir else settings().data_dir / "sweeps" / key
    ckpt.mkdir(parents=True, exist_ok=True)
    results: dict[int, pd.DataFrame] = {}
    for i in range(len(tasks)):
        path = ckpt / f"chunk-{i:05d}.parquet"
        if path.exists():
            results[i] = pd.read_parquet(path)
    todo = [i for i in range(len(tasks)) if i not in results]
    if results:
        log.info("sweep %s: resuming, %d of %d chunks already done", key, len(results), len(tasks))

    def save(i: int, frame: pd.DataFrame) -> None:
        tmp = ckpt / f".chunk-{i:05d}.parquet.tmp"
        frame.to_parquet(tmp)
        tmp.replace(ckpt / f"chunk-{i:05d}.parquet")
        results[i] = frame

    ex_json = ex.model_dump_json()
    bar = tqdm(total=len(tasks), initial=len(results), desc="sweep", unit="chunk", disable=not progress)
    try:
        if executor == "local":
            for i in todo:
                sym, tf, cj = tasks[i]
                save(i, _sweep_task(root, sym, tf, start, end, cj, ex_json))
                bar.update(1)
        else:
            _run_dask(tasks, todo, root, start, end, ex_json, scheduler, save, bar)
    finally:
        bar.close()
    table = pd.concat([results[i] for i in range(len(tasks))], ignore_index=True)
    params = pd.DataFrame([json.loads(p) for p in table["params"]])
    varying = [k for k in grid]
    table = pd.concat([table[["symbol"]], params[varying], table.drop(columns=["symbol"])], axis=1)
    table = table.sort_values(metric, ascending=False, kind="stable", na_position="last").reset_index(drop=True)
    return SweepResult(table, metric, {k: list(v) for k, v in grid.items()})


def _count_bars(store, symbol: str, tf: int, start, end) -> int:
    return len(store.candles(symbol, f"{tf}m", start, end))


def _run_dask(tasks, todo, root, start, end, ex_json, scheduler, save, bar) -> None:
    from dask.distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler is None:
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
    else:
        client = Client(scheduler)
    try:
        futures = {client.submit(_sweep_task, root, *tasks[i][:2], start, end, tasks[i][2], ex_json, pure=False): i for i in todo}
        for fut in as_completed(futures):
            save(futures[fut], fut.result())
            bar.update(1)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


# ---------------------------------------------------------------------- walk-forward


@dataclass
class WalkForwardResult:
    """Per-window choices and out-of-sample results, and the stitched out-of-sample run."""

    windows: pd.DataFrame
    trades: pd.DataFrame
    daily_pnl: pd.Series

    @property
    def equity(self) -> pd.Series:
        return self.daily_pnl.cumsum().rename("oos_equity")


def walk_forward(
    symbol: str,
    grid: dict[str, Sequence[Any]],
    *,
    start=None,
    end=None,
    in_sample_days: int = 60,
    out_sample_days: int = 20,
    base: StrategyParams | None = None,
    execution: Execution | None = None,
    metric: str = "total_return",
    store=None,
    progress: bool = True,
) -> WalkForwardResult:
    """Rolling windows: pick the best parameters in-sample by ``metric``, trade them out-of-sample.

    Windows count trading sessions. The out-of-sample run sees the in-sample bars only to warm
    its indicators (entries start at the window), and every window's trades are closed by the
    day's square-off, so windows never share a position.
    """
    from .store import CandleStore

    if metric not in METRICS:
        raise ParameterError(f"unknown metric {metric!r}: choose one of {', '.join(METRICS)}")
    base = base or StrategyParams()
    ex = execution or Execution()
    store = store or CandleStore()
    combos = expand_grid(base, {k: list(v) for k, v in grid.items()})
    tfs = sorted({p.timeframe for p in combos})
    data = {tf: store.candles(symbol, f"{tf}m", start, end) for tf in tfs}
    days = sorted(set(data[tfs[0]].index.tz_convert(IST).date))
    if len(days) < in_sample_days + out_sample_days:
        raise ParameterError(
            f"{symbol}: {len(days)} sessions in range, fewer than one window needs "
            f"({in_sample_days} in-sample + {out_sample_days} out-of-sample)"
        )
    rows, trades, daily = [], [], []
    starts = range(0, len(days) - in_sample_days - out_sample_days + 1, out_sample_days)
    for w, i in enumerate(tqdm(starts, desc="walk-forward", unit="window", disable=not progress)):
        is_days = days[i : i + in_sample_days]
        oos_days = days[i + in_sample_days : i + in_sample_days + out_sample_days]
        best_score, best = -math.inf, None
        for tf in tfs:
            group = [p for p in combos if p.timeframe == tf]
            is_candles = _between(data[tf], is_days[0], is_days[-1])
            m = _chunk_metrics(is_candles, group, ex)
            m = m.sort_values(metric, ascending=False, kind="stable", na_position="last")
            top = m.iloc[0]
            if pd.notna(top[metric]) and top[metric] > best_score:
                best_score, best = top[metric], StrategyParams.model_validate_json(top["params"])
        best = best or combos[0]
        oos = _between(data[best.timeframe], is_days[0], oos_days[-1])
        oos_from = pd.Timestamp(oos_days[0]).tz_localize(IST)
        res = run_backtest(oos, best, ex, symbol=symbol, trade_from=oos_from)
        t = res.trades.assign(window=w)
        trades.append(t)
        d = res.daily_pnl[res.daily_pnl.index >= oos_from]
        daily.append(d)
        chosen = {k: getattr(best, k) for k in grid}
        rows.append(
            {
                "window": w,
                "in_sample": f"{is_days[0]}..{is_days[-1]}",
                "out_of_sample": f"{oos_days[0]}..{oos_days[-1]}",
                **chosen,
                f"in_sample_{metric}": best_score,
                "oos_trades": int((t["status"] == "closed").sum()),
                "oos_net_pnl": float(t["net_pnl"].sum()),
            }
        )
    return WalkForwardResult(pd.DataFrame(rows), pd.concat(trades, ignore_index=True), pd.concat(daily).rename("pnl"))


def _between(candles: pd.DataFrame, first, last) -> pd.DataFrame:
    local = candles.index.tz_convert(IST).date
    return candles[(local >= first) & (local <= last)]

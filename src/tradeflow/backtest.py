"""Backtests with vectorbt: one symbol or many, parameter sweeps (local or Dask), walk-forward.

Fills follow the strategy's timing contract: a decision at the close of bar *i* fills at
the open of bar *i + 1*, worsened by ``slippage_ticks`` ticks. Every order pays the Indian
charges of ``tradeflow.costs`` for its segment, side and date, so the equity curve, the
trade list and the metrics are net of costs. Sizes are ``lots × lot_size`` units.

vectorbt gets per-bar fee fractions worked out from our own charges, so its fees sum to the
same rupees as the trade list's charges (which it reports per leg exactly).
"""

from __future__ import annotations

import functools
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
from .strategy import Bars, StrategyParams, decide, signals

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
    """One column's fills, sparse: the bars they happen on, their direction, price and charges."""

    n: int  # bars in the run
    idx: np.ndarray  # fill bars (sorted): the bar after each decision
    long_entry: np.ndarray
    long_exit: np.ndarray
    short_entry: np.ndarray
    short_exit: np.ndarray
    price: np.ndarray  # fill price, slippage included
    fees: np.ndarray  # fee fraction of the bar's order value (vectorbt's unit)
    entry_charge: np.ndarray
    exit_charge: np.ndarray

    @property
    def count(self) -> int:
        return len(self.idx)

    def dense(self, name: str, pos: np.ndarray, n_rows: int, fill: "float | bool | np.ndarray") -> np.ndarray:
        """``name`` laid out on ``n_rows`` rows, this column's fills at positions ``pos``."""
        values = getattr(self, name)
        out = np.array(fill, copy=True) if isinstance(fill, np.ndarray) else np.full(n_rows, fill, dtype=values.dtype)
        out[pos] = values
        return out

    def at(self, name: str, bars_idx: np.ndarray) -> np.ndarray:
        """``name`` at arbitrary bar indices (0 where this column has no fill)."""
        values = getattr(self, name)
        if not len(self.idx):
            return np.zeros(len(bars_idx))
        where = np.clip(np.searchsorted(self.idx, bars_idx), 0, len(self.idx) - 1)
        return np.where(self.idx[where] == bars_idx, values[where], 0.0)


def _orders(bars: Bars, entry: np.ndarray, reason: np.ndarray, position: np.ndarray, ex: Execution) -> _Orders:
    """Move decisions to their fill bars (the next open), add slippage, price every leg's charges.

    A decision on the last bar has no next bar and never fills.
    """
    n = len(bars)
    decided = np.flatnonzero((entry != 0) | (reason > 0))
    decided = decided[decided + 1 < n]
    idx = decided + 1
    held = position[decided]  # position during the decision bar = before the fill
    exit_ = reason[decided] > 0
    long_entry = entry[decided] > 0
    short_entry = entry[decided] < 0
    long_exit = exit_ & (held > 0)
    short_exit = exit_ & (held < 0)

    slip = ex.slippage_ticks * ex.tick_size
    buy = long_entry | short_exit  # a reversal's two legs go the same way
    price = bars.open[idx] + np.where(buy, slip, -slip)
    qty = float(ex.quantity)
    days = bars.day[idx].astype("int64").astype("datetime64[D]")
    first = _first_rate_day()
    if len(days) and days[0] < first:
        log.warning(
            "charges for trades before %s use that date's rates: the rate table starts there "
            "(stamp duty was set state by state before)", first,
        )
        days = np.maximum(days, first)
    sides = np.where(buy, 1, -1)
    entry_leg = long_entry | short_entry
    exit_leg = long_exit | short_exit
    entry_charge = np.zeros(len(idx))
    exit_charge = np.zeros(len(idx))
    if entry_leg.any():
        entry_charge[entry_leg] = order_charges(
            ex.segment, sides[entry_leg], price[entry_leg], np.full(int(entry_leg.sum()), qty),
            on_dates=days[entry_leg], broker=ex.broker,
        )
    if exit_leg.any():
        exit_charge[exit_leg] = order_charges(
            ex.segment, sides[exit_leg], price[exit_leg], np.full(int(exit_leg.sum()), qty),
            on_dates=days[exit_leg], broker=ex.broker,
        )
    legs = entry_leg.astype(float) + exit_leg.astype(float)
    fees = (entry_charge + exit_charge) / (legs * qty * price) if len(idx) else np.zeros(0)
    return _Orders(n, idx, long_entry, long_exit, short_entry, short_exit, price, fees, entry_charge, exit_charge)


def _first_rate_day() -> np.datetime64:
    from .costs import RATE_TABLE

    return np.datetime64(min(row.effective_from for row in RATE_TABLE), "D")


def _freq(params: StrategyParams) -> pd.Timedelta:
    return pd.Timedelta(minutes=params.timeframe)


def _portfolio(bars: Bars, orders: Sequence[_Orders], ex: Execution, freq: pd.Timedelta, columns: pd.Index, *, compress: bool = False):
    """One vectorbt portfolio, a column per order set; prices already carry the slippage.

    Cash never limits an order (``init_cash="auto"``: vectorbt finds the cash each column
    needed): Indian futures and options trade on margin, which vectorbt does not model, so
    returns are measured on ``Execution.capital`` by ``_metrics`` instead.

    ``compress=True`` (sweeps) simulates only the bars where some column fills, plus the
    last bar: fixed-size orders make every trade, fee and P&L identical to the full run, at
    a fraction of the cost; only the bar-by-bar equity curve is not kept. Returns the
    portfolio and the bar index of each of its rows.
    """
    import vectorbt as vbt

    if compress:
        rows = np.unique(np.concatenate([o.idx for o in orders] + [np.array([0, len(bars) - 1])])).astype(np.int64)
    else:
        rows = np.arange(len(bars))
    n_rows = len(rows)

    def stack(name: str, fill) -> np.ndarray:
        cols = []
        for o in orders:
            pos = np.searchsorted(rows, o.idx)
            cols.append(o.dense(name, pos, n_rows, fill))
        return np.column_stack(cols)

    # vectorbt gets IST wall-clock times without a zone: it turns a tz-aware index into an
    # object array on every wrap (seconds per call on 1M bars under pandas 3).
    wall = bars.index[rows].tz_convert(IST).tz_localize(None)
    close = pd.DataFrame(np.repeat(bars.close[rows][:, None], len(orders), axis=1), index=wall, columns=columns)
    pf = vbt.Portfolio.from_signals(
        close,
        entries=stack("long_entry", False),
        exits=stack("long_exit", False),
        short_entries=stack("short_entry", False),
        short_exits=stack("short_exit", False),
        price=stack("price", bars.open[rows]),
        size=float(ex.quantity),
        fees=stack("fees", 0.0),
        init_cash="auto",
        upon_opposite_entry="reverse",
        max_orders=max(1, sum(o.count for o in orders)),
        max_logs=0,
        freq=freq,
    )
    return pf, rows


def _year_freq(tf: pd.Timedelta) -> pd.Timedelta:
    """Annualise by trading bars, not calendar time: 252 sessions × 375 minutes a year."""
    return pd.Timedelta(minutes=_TRADING_MINUTES_PER_YEAR)


def _capital(bars: Bars, ex: Execution) -> float:
    """The money returns are measured on: ``Execution.capital``, else one position's notional."""
    return float(ex.capital) if ex.capital is not None else float(ex.quantity * bars.open[0])


def _metrics(pf, rows: np.ndarray, bars: Bars, ex: Execution) -> pd.DataFrame:
    """One row of metrics per portfolio column, from its trades and their daily P&L.

    Intraday positions are flat every night, so each trade's P&L (charges included) belongs
    to its exit day; Sharpe (annualised by 252 sessions) and maximum drawdown are taken on
    that daily equity, with days without trades counted as zero.
    """
    rec = pf.trades.records
    n_cols = pf.wrapper.shape_2d[1]
    capital = _capital(bars, ex)
    sessions, day_of_bar = np.unique(bars.day, return_inverse=True)
    daily = np.zeros((n_cols, len(sessions)))
    col = rec["col"].astype(int)
    pnl = rec["pnl"]
    np.add.at(daily, (col, day_of_bar[rows[rec["exit_idx"].astype(int)]]), pnl)
    equity = capital + np.cumsum(daily, axis=1)
    peak = np.maximum.accumulate(np.concatenate([np.full((n_cols, 1), capital), equity], axis=1), axis=1)[:, 1:]
    rets = daily / capital
    with np.errstate(divide="ignore", invalid="ignore"):
        std = rets.std(axis=1, ddof=1) if len(sessions) > 1 else np.full(n_cols, np.nan)
        sharpe = np.where(std > 0, rets.mean(axis=1) / std * np.sqrt(252), np.nan)
    count = np.bincount(col, minlength=n_cols)
    wins = np.bincount(col, weights=(pnl > 0).astype(float), minlength=n_cols)
    gross_win = np.bincount(col, weights=np.where(pnl > 0, pnl, 0.0), minlength=n_cols)
    gross_loss = np.bincount(col, weights=np.where(pnl < 0, -pnl, 0.0), minlength=n_cols)
    fees = pf.orders.records
    charges = np.bincount(fees["col"].astype(int), weights=fees["fees"], minlength=n_cols)
    net = daily.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return pd.DataFrame(
            {
                "total_return": net / capital,
                "net_pnl": net,
                "sharpe": sharpe,
                "max_drawdown": (equity / peak - 1.0).min(axis=1),
                "trades": count,
                "win_rate": np.where(count > 0, wins / np.maximum(count, 1), 0.0),
                "profit_factor": np.where(gross_loss > 0, gross_win / gross_loss, np.where(gross_win > 0, np.inf, np.nan)),
                "charges": charges,
            },
            index=pf.wrapper.columns,
        )


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
        """vectorbt's statistics of the portfolio, annualised by trading minutes.

        vectorbt's "Start Value" is the cash the run needed (no margin model), so its return
        percentages differ from ``metrics()``, which measure on ``Execution.capital``.
        """
        pf = self.portfolio
        return pf.stats(column=pf.wrapper.columns[0], settings={"year_freq": _year_freq(_freq(self.params))})

    def metrics(self) -> pd.Series:
        """total_return, net_pnl, sharpe, max_drawdown, trades, win_rate, profit_factor, charges."""
        bars = Bars(self.candles, self.params.timeframe)
        return _metrics(self.portfolio, np.arange(len(bars)), bars, self.execution).iloc[0]

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
    bars = Bars(candles, params.timeframe)
    sig = signals(bars, params, trade_from=trade_from)
    entry = sig["long_entry"].to_numpy().astype(np.int8) - sig["short_entry"].to_numpy().astype(np.int8)
    reason = sig["exit"].to_numpy().astype(np.int8)
    orders = _orders(bars, entry, reason, sig["position"].to_numpy(), ex)
    pf, _ = _portfolio(bars, [orders], ex, _freq(params), pd.Index([symbol or "strategy"]))
    trades = _trade_list(pf, candles, sig, orders, ex)
    value = pf.value().iloc[:, 0]
    value.index = candles.index
    pnl = value.diff()
    pnl.iloc[0] = value.iloc[0] - pf.init_cash.iloc[0]
    daily = pnl.groupby(pnl.index.tz_convert(IST).date).sum()
    daily.index = pd.DatetimeIndex(pd.to_datetime(daily.index)).tz_localize(IST)
    daily.name = "pnl"
    equity = (_capital(bars, ex) + pnl.cumsum()).rename("equity")
    return BacktestResult(params, ex, candles, sig, pf, trades, daily, equity, symbol)


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
    charges = orders.at("entry_charge", entry_i) + np.where(closed, orders.at("exit_charge", exit_i), 0.0)
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


def _chunk_metrics(candles: "pd.DataFrame | Bars", combos: list[StrategyParams], ex: Execution, trade_from=None) -> pd.DataFrame:
    """Signals for each combination, then one broadcast portfolio for the whole chunk."""
    bars = candles if isinstance(candles, Bars) else Bars(candles, combos[0].timeframe)
    orders = [_orders(bars, *decide(bars, p, trade_from=trade_from), ex) for p in combos]
    pf, rows = _portfolio(bars, orders, ex, _freq(combos[0]), pd.RangeIndex(len(combos)), compress=True)
    m = _metrics(pf, rows, bars, ex).reset_index(drop=True)
    m.insert(0, "params", [p.model_dump_json() for p in combos])
    return m


def _store_stamp(store_root: str, symbol: str) -> tuple:
    """Names, sizes and times of a symbol's files: a cache key that changes when the data does."""
    base = Path(store_root) / "candles"
    return tuple(
        (str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(base.glob(f"timeframe=*/symbol={symbol}/year=*/data.parquet"))
    )


@functools.lru_cache(maxsize=4)
def _load_bars(store_root: str, symbol: str, timeframe: int, start: str, end: str, stamp: tuple) -> Bars:
    """Candles of one sweep task, prepared once per process (a worker runs many chunks)."""
    from .store import CandleStore

    candles = CandleStore(store_root).candles(symbol, f"{timeframe}m", None if start == "None" else start, None if end == "None" else end)
    if candles.empty:
        raise ParameterError(f"no {timeframe}m candles for {symbol} in the store: fetch them first")
    return Bars(candles, timeframe)


def _sweep_task(store_root: str, symbol: str, timeframe: int, start, end, combos_json: list[str], ex_json: str) -> pd.DataFrame:
    """One unit of sweep work; runs on a Dask worker, which reads its own candles."""
    combos = [StrategyParams.model_validate_json(c) for c in combos_json]
    ex = Execution.model_validate_json(ex_json)
    bars = _load_bars(store_root, symbol, timeframe, str(start), str(end), _store_stamp(store_root, symbol))
    out = _chunk_metrics(bars, combos, ex)
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
    vectorbt portfolio over the bars where its orders fill, so memory stays bounded
    (``chunk_size`` combinations, 25 by default). ``executor="dask"`` sends chunks to the Dask
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
            size = chunk_size or 25
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

"""Backtest and sweep jobs from one YAML file, and the HTML report they write.

The CLI (``tradeflow backtest|sweep -p params/backtest_nifty.yaml``) and the backtest
notebook both come here, so a job run either way writes the same files::

    <out>/trades.csv   <out>/daily_pnl.csv   <out>/metrics.json   <out>/report.html
    <out>/sweep.csv    <out>/walk_forward.csv                     (when asked for)
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field

from .backtest import BacktestResult, Execution, SweepResult, WalkForwardResult, run_backtest, sweep, walk_forward
from .errors import ParameterError
from .params import model_from_mapping
from .strategy import StrategyParams

__all__ = ["BacktestConfig", "SweepConfig", "WalkForwardConfig", "load_config", "prepare_candles", "write_report", "run_job"]

log = logging.getLogger(__name__)


class SweepConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    metric: str = "total_return"
    executor: Literal["local", "dask"] = "local"
    scheduler: str | None = None


class WalkForwardConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    in_sample_days: int = Field(40, ge=1)
    out_sample_days: int = Field(20, ge=1)


class BacktestConfig(BaseModel):
    """A research job: which data, which strategy, how orders fill, and what to sweep."""

    model_config = ConfigDict(extra="forbid")
    symbol: str = "NIFTY"
    source: str = "sim"
    fetch: bool = Field(True, description="Fetch missing 1m history from `source` before running.")
    start: dt.date = dt.date(2024, 1, 1)
    end: dt.date = dt.date(2024, 3, 31)
    strategy: StrategyParams = Field(default_factory=StrategyParams)
    execution: Execution = Field(default_factory=Execution)
    sweep: SweepConfig | None = None
    walk_forward: WalkForwardConfig | None = None
    output: Path | None = Field(None, description="Folder for results; default data/backtests/<symbol>-<time>.")


def load_config(path: "str | Path") -> BacktestConfig:
    """Read a job file; unknown keys get a "did you mean", bad values say which key."""
    p = Path(path)
    if not p.is_file():
        raise ParameterError(f"parameter file {p} not found")
    data = yaml.safe_load(p.read_text()) or {}
    return config_from_mapping(data, source=str(p))


def config_from_mapping(data: dict[str, Any], *, source: str = "parameters") -> BacktestConfig:
    """A job from a mapping; unknown names get a "did you mean", bad values say which key."""
    return model_from_mapping(BacktestConfig, data, {"strategy": StrategyParams, "execution": Execution}, source=source)


def prepare_candles(cfg: BacktestConfig, store=None, *, progress: bool = True) -> pd.DataFrame:
    """Make sure the store holds the history (fetching from ``cfg.source``), return signal candles."""
    from .ingest import fetch
    from .store import CandleStore

    store = store or CandleStore()
    if cfg.fetch:
        fetch(cfg.symbol, "1m", cfg.start, cfg.end, source=cfg.source, store=store, progress=progress)
    candles = store.candles(cfg.symbol, f"{cfg.strategy.timeframe}m", cfg.start, cfg.end)
    if candles.empty:
        raise ParameterError(
            f"no {cfg.strategy.timeframe}m candles for {cfg.symbol} {cfg.start}..{cfg.end}: "
            f"run `tradeflow fetch --symbol {cfg.symbol}` or set fetch: true"
        )
    return candles


def run_job(cfg: BacktestConfig, *, kind: Literal["backtest", "sweep"] = "backtest", store=None, out: Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Run a backtest (and, when configured, the sweep and walk-forward); write every result."""
    from .config import settings
    from .store import CandleStore

    store = store or CandleStore()
    candles = prepare_candles(cfg, store, progress=progress)
    out = Path(out or cfg.output or settings().data_dir / "backtests" / f"{cfg.symbol}-{dt.datetime.now():%Y%m%d-%H%M%S}")
    out.mkdir(parents=True, exist_ok=True)
    result = run_backtest(candles, cfg.strategy, cfg.execution, symbol=cfg.symbol)
    sw = wf = None
    if kind == "sweep" or cfg.sweep is not None:
        scfg = cfg.sweep or SweepConfig()
        if not scfg.grid:
            raise ParameterError("a sweep needs `sweep: grid:` with lists of values, e.g. st_period: [7, 10, 14]")
        sw = sweep(
            cfg.symbol, scfg.grid, start=cfg.start, end=cfg.end, base=cfg.strategy, execution=cfg.execution,
            metric=scfg.metric, store=store, executor=scfg.executor, scheduler=scfg.scheduler, progress=progress,
        )
        sw.table.to_csv(out / "sweep.csv", index=False)
        if cfg.walk_forward is not None:
            wf = walk_forward(
                cfg.symbol, scfg.grid, start=cfg.start, end=cfg.end, base=cfg.strategy, execution=cfg.execution,
                metric=scfg.metric, store=store, progress=progress, **cfg.walk_forward.model_dump(),
            )
            wf.windows.to_csv(out / "walk_forward.csv", index=False)
    result.trades.to_csv(out / "trades.csv", index=False)
    result.daily_pnl.to_csv(out / "daily_pnl.csv")
    metrics = {k: (None if pd.isna(v) else float(v)) for k, v in result.metrics().items()}
    (out / "metrics.json").write_text(json.dumps({"symbol": cfg.symbol, "params": cfg.strategy.model_dump(mode="json"), "metrics": metrics}, indent=1))
    report = write_report(out / "report.html", result, sw, wf, synthetic=cfg.source == "sim")
    return {"out": out, "result": result, "sweep": sw, "walk_forward": wf, "report": report, "metrics": metrics}


def write_report(
    path: Path,
    result: BacktestResult,
    sweep_result: SweepResult | None = None,
    wf: WalkForwardResult | None = None,
    *,
    synthetic: bool = False,
) -> Path:
    """One self-contained HTML page: summary, stats, charts, trades, sweep and walk-forward."""
    from . import plots

    figs = [
        plots.strategy_chart(result, day=result.candles.index[-1].date(), title=f"{result.symbol}: last session"),
        plots.equity_chart(result.equity),
    ]
    if sweep_result is not None and len(sweep_result.grid) >= 2:
        x, y = list(sweep_result.grid)[:2]
        figs.append(plots.sweep_heatmap(sweep_result.table, x, y, sweep_result.metric))
    if wf is not None:
        figs.append(plots.walk_forward_chart(wf))
    parts = [
        "<html><head><meta charset='utf-8'><title>tradeflow backtest</title>"
        "<style>body{font-family:sans-serif;margin:2em} table{border-collapse:collapse;font-size:12px}"
        " td,th{border:1px solid #ccc;padding:2px 6px}</style></head><body>",
        f"<h1>Backtest: {result.symbol}</h1>",
        "<p style='color:#b00'><b>SYNTHETIC DATA</b>: simulated market, not real prices.</p>" if synthetic else "",
        f"<p>{result.summary()}</p>",
        "<h2>Parameters</h2>",
        pd.Series(result.params.model_dump(mode="json")).to_frame("value").to_html(),
        "<h2>Statistics</h2>",
        result.stats().to_frame("value").to_html(),
    ]
    for i, fig in enumerate(figs):
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(i == 0)))
    parts += ["<h2>Trades</h2>", result.trades.to_html(index=False)]
    if sweep_result is not None:
        parts += [f"<h2>Sweep (by {sweep_result.metric})</h2>", sweep_result.table.drop(columns=["params"]).head(50).to_html(index=False)]
    if wf is not None:
        parts += ["<h2>Walk-forward</h2>", wf.windows.to_html(index=False)]
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")
    return path

"""Benchmark: a 100-combination sweep on 1M one-minute bars, end to end, with peak memory.

    .venv/bin/python bench/sweep.py [--bars 1000000] [--combos 100] [--chunk N]

Builds a store of simulated 1m bars (about ten years), then times ``tradeflow.backtest.sweep``
(signals for every combination + one vectorbt portfolio per chunk + metrics) after a warm-up
run that compiles the numba kernels. Peak memory is the process's maximum RSS.
Goals (issue 3): under 10 s and under 3 GB on this 2-core machine.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from tradeflow.backtest import Execution, sweep  # noqa: E402
from tradeflow.brokers.sim import SimMarket  # noqa: E402
from tradeflow.store import CandleStore  # noqa: E402
from tradeflow.strategy import StrategyParams  # noqa: E402
from tradeflow.timeframes import ONE_MINUTE  # noqa: E402


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bars", type=int, default=1_000_000)
    ap.add_argument("--combos", type=int, default=100)
    ap.add_argument("--chunk", type=int, default=None, help="combinations per portfolio (default: automatic)")
    args = ap.parse_args()

    import pandas as pd

    root = Path(tempfile.mkdtemp()) / "parquet"
    store = CandleStore(root)
    days_needed = int(np.ceil(args.bars / 375))
    t0 = time.perf_counter()
    frame = SimMarket(seed=1).fetch("NIFTY", ONE_MINUTE, pd.Timestamp("2015-01-01", tz="UTC"), pd.Timestamp("2026-11-01", tz="UTC"))
    frame = frame.iloc[-days_needed * 375 :].iloc[-args.bars :]
    store.upsert(frame, "NIFTY", "1m")
    build = time.perf_counter() - t0
    start, end = frame.index[0].date(), frame.index[-1].date()

    side = int(np.sqrt(args.combos))
    periods = list(range(5, 5 + side))
    mults = list(np.round(np.linspace(1.5, 4.5, int(np.ceil(args.combos / side))), 3))
    grid = {"st_period": periods, "st_multiplier": mults}
    n_combos = len(periods) * len(mults)
    base = StrategyParams(timeframe=1, stop_loss=20, target=40, max_trades_per_day=10)
    ex = Execution(lot_size=75)

    # warm-up: compile numba kernels (signals, vectorbt) on a small slice
    t0 = time.perf_counter()
    sweep("NIFTY", {"st_period": [7, 8]}, start=end, end=end, base=base, execution=ex, store=store, progress=False,
          checkpoint_dir=Path(tempfile.mkdtemp()))
    warm = time.perf_counter() - t0
    rss_before = rss_mb()

    t0 = time.perf_counter()
    res = sweep("NIFTY", grid, start=start, end=end, base=base, execution=ex, store=store, progress=False,
                checkpoint_dir=Path(tempfile.mkdtemp()), chunk_size=args.chunk)
    elapsed = time.perf_counter() - t0
    peak = rss_mb()

    print(f"tradeflow sweep benchmark ({len(frame):,} 1m bars {start}..{end}, 2 CPU)")
    print(f"  store build (sim + upsert)          {build:8.2f} s")
    print(f"  warm-up (numba compile, tiny sweep) {warm:8.2f} s")
    print(f"  sweep: {n_combos} combinations end to end {elapsed:8.2f} s   ({elapsed / n_combos * 1000:.0f} ms per combination)")
    print(f"  peak RSS                            {peak:8.0f} MB   (before the sweep {rss_before:.0f} MB)")
    print(f"  goals: < 10 s and < 3,000 MB -> {'met' if elapsed < 10 and peak < 3000 else 'NOT met'}")
    print(res.table.drop(columns=["params"]).head(5).to_string(index=False))


if __name__ == "__main__":
    main()

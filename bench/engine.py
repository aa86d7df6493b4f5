"""Benchmark the trading engine: ticks through candle builder, strategy step and paper broker.

Run:  .venv/bin/python bench/engine.py [--ticks 1000000] [--symbols 500]

(a) one instrument: ``--ticks`` ticks of a seeded random walk at 2 ticks a second per instrument
    (a liquid contract's feed; 0.8 points a tick, so 5-minute bars span ~20 points), through
    ``Engine.on_tick`` (candle builder, strategy stepper on every closed 5-minute bar, paper
    broker fills, tick-time stops, journal writes on every order): ticks per second;
(b) ``--symbols`` instruments, one engine each, sharing one paper account and one journal,
    ticks interleaved in time: ticks per second in one process;
(c) latency, per tick, from ``on_tick`` entry: the median and 99th percentile over all ticks,
    and the tick-to-decision latency on the ticks that close a bar (candle closed, strategy
    stepped, order request built, before the broker call), median and 99th percentile.

Goals (issue 5): at least 200,000 ticks/s in one process; 99th percentile under 200 µs.
Tick objects are built before timing (a feed builds them as it parses); that cost is printed too.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from tradeflow._writer import Writer
from tradeflow.brokers.base import Instrument, InstrumentKind, Segment
from tradeflow.brokers.paper import PaperBroker
from tradeflow.calendar import IST, sessions
from tradeflow.engine import Engine
from tradeflow.feeds import Tick
from tradeflow.journal import Journal
from tradeflow.notify import LogNotifier
from tradeflow.risk import RiskParams
from tradeflow.strategy import StrategyParams

CLOCK = [1]  # the replay's time (UTC ns) for the shared paper account's order stamps, set per tick
PARAMS = StrategyParams(timeframe=5, st_period=10, st_multiplier=2.0, flip_only=True, stop_loss=30, target=60)


RATE = 2.0  # ticks a second per instrument: a liquid NSE contract's feed
SIGMA = 0.8  # points per tick: a 5-minute bar then spans about 20 points, as NIFTY's do


def _ticks(symbols: list[str], n: int, seed: int = 7) -> list[Tick]:
    """``n`` ticks in total, round-robin over ``symbols`` at ``RATE`` ticks/s each, in whole sessions."""
    rng = np.random.default_rng(seed)
    per_day = int(22_500 * RATE * len(symbols))
    days = sessions(dt.date(2024, 3, 1), dt.date(2024, 12, 31))[: max(1, -(-n // per_day))]
    gap = int(1e9 / (RATE * len(symbols)))  # all symbols together tick this often
    stamps = []
    for d in days:
        open_ns = pd.Timestamp(f"{d} 09:15", tz=IST).value
        stamps.append(open_ns + np.arange(min(per_day, n)) * gap)
    ns = np.concatenate(stamps)[:n]
    prices = {s: 20_000.0 * (1 + 0.01 * k) for k, s in enumerate(symbols)}
    steps = rng.normal(0, SIGMA, n)
    out = []
    for i in range(n):
        sym = symbols[i % len(symbols)]
        p = max(100.0, prices[sym] + steps[i])
        prices[sym] = p
        out.append(Tick(sym, pd.Timestamp(int(ns[i]), tz="UTC"), round(p, 2)))
    return out


def _history(symbol: str, last: float, bars: int = 150) -> pd.DataFrame:
    """5-minute warm-up bars ending the session before the replay, so the strategy trades at once."""
    rng = np.random.default_rng(abs(hash(symbol)) % 2**32)
    days = sessions(dt.date(2024, 2, 1), dt.date(2024, 2, 29))
    idx = pd.DatetimeIndex([pd.Timestamp(f"{d} 09:15", tz=IST) + pd.Timedelta(minutes=5 * k) for d in days for k in range(75)])[-bars:]
    close = last + np.cumsum(rng.normal(0, SIGMA * 25, bars))[::-1] * -1
    open_ = np.r_[close[0], close[:-1]]
    spread = np.abs(rng.normal(0, SIGMA * 10, bars))
    return pd.DataFrame({"open": open_, "high": np.maximum(open_, close) + spread, "low": np.minimum(open_, close) - spread,
                         "close": close}, index=idx)


class _Quiet(LogNotifier):
    def send(self, event, text, *, level="info"):  # a benchmark does not log every fill
        pass


def _engines(symbols: list[str], folder: Path) -> tuple[dict[str, Engine], PaperBroker, Journal, list[int]]:
    writer = Writer()  # as `tradeflow trade` does: journal and paper account written in order, off the tick path
    broker = PaperBroker(db_path=folder / "paper.duckdb", cash=1e12, slippage_ticks=1, writer=writer,
                         clock=lambda: pd.Timestamp(CLOCK[0], tz="UTC"))
    journal = Journal(folder / "journal.duckdb", writer=writer)
    decided: list[int] = []
    engines = {}
    for sym in symbols:
        inst = Instrument(sym, Segment.NSE_FNO, InstrumentKind.FUTIDX, lot_size=75)
        eng = Engine(run_id=f"bench-{sym}", symbol=sym, params=PARAMS, broker=broker, journal=journal,
                     instrument_for=lambda d, s, inst=inst: inst, risk=RiskParams(stops_on="tick"), notifier=_Quiet())
        eng.warm_up(_history(sym, 20_000.0 * (1 + 0.01 * len(engines))))
        journal.start_run(eng.run_id, name="bench", mode="paper", broker="paper", symbol=sym, params={}, run_dir=str(folder))
        act = eng._act

        def timed_act(bar, d, act=act):
            decided.append(time.perf_counter_ns())
            act(bar, d)

        eng._act = timed_act
        engines[sym] = eng
    engines["__writer__"] = writer  # closed by run()
    return engines, broker, journal, decided


def run(symbols: list[str], n: int, label: str) -> dict[str, float]:
    t0 = time.perf_counter()
    ticks = _ticks(symbols, n)
    build = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        engines, broker, journal, decided = _engines(symbols, Path(tmp))
        writer = engines.pop("__writer__")
        lat = np.empty(len(ticks), dtype=np.int64)
        decision_lat: list[int] = []
        pc = time.perf_counter_ns
        gc.collect()
        gc.freeze()  # the pre-built ticks are not garbage a live loop would carry: keep the collector off them
        start = time.perf_counter()
        for i, tick in enumerate(ticks):
            before = len(decided)
            CLOCK[0] = tick.ns
            t = pc()
            engines[tick.symbol].on_tick(tick)
            lat[i] = pc() - t
            if len(decided) > before:
                decision_lat.append(decided[before] - t)
        elapsed = time.perf_counter() - start
        gc.unfreeze()
        orders = len(broker.orders())
        for eng in engines.values():
            eng.stop("benchmark done")
        journal.close()
        broker.close()
        writer.close()
    rate = len(ticks) / elapsed
    res = {
        "ticks": len(ticks), "symbols": len(symbols), "seconds": elapsed, "ticks_per_s": rate,
        "p50_us": float(np.percentile(lat, 50)) / 1e3, "p99_us": float(np.percentile(lat, 99)) / 1e3,
        "decisions": len(decision_lat),
        "decision_p50_us": statistics.median(decision_lat) / 1e3 if decision_lat else float("nan"),
        "decision_p99_us": float(np.percentile(decision_lat, 99)) / 1e3 if decision_lat else float("nan"),
        "orders": orders, "tick_build_s": build,
    }
    print(f"{label}: {res['ticks']:,} ticks, {res['symbols']} symbol(s): {res['seconds']:.2f} s = "
          f"{res['ticks_per_s']:,.0f} ticks/s (goal >= 200,000)")
    print(f"    per tick: median {res['p50_us']:.1f} µs, p99 {res['p99_us']:.1f} µs (goal p99 < 200 µs)")
    print(f"    tick-to-decision on {res['decisions']:,} bar-closing ticks: median {res['decision_p50_us']:.1f} µs, "
          f"p99 {res['decision_p99_us']:.1f} µs; {orders:,} orders filled by the paper broker")
    print(f"    (building the Tick objects beforehand took {build:.2f} s)")
    return res


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ticks", type=int, default=1_000_000)
    ap.add_argument("--symbols", type=int, default=500)
    args = ap.parse_args(argv)
    # compile and warm every path once so that the timings are the steady state
    run(["WARM"], 20_000, "warm-up")
    print()
    run(["NIFTY"], args.ticks, "one instrument")
    run([f"S{i:03d}" for i in range(args.symbols)], args.ticks, f"{args.symbols} instruments")


if __name__ == "__main__":
    main(sys.argv[1:])

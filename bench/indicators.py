"""Benchmark tradeflow's SuperTrend and MACD kernels on one-minute bars beside pandas versions.

Run:  .venv/bin/python bench/indicators.py [--bars 1000000] [--repeat 7]

(a) ``supertrend(h, l, c, 10, 3)``, ``macd(c, 12, 26, 9)`` and both back to back, each the
    median (and min) of ``--repeat`` runs after compilation, through the public functions
    (input checks and output allocation included). Twice: once dropping each run's outputs,
    so the allocator hands the same memory back (the steady state of a loop), and once
    keeping them, so every run writes to memory the kernel must fault in and zero (page
    faults are counted). SuperTrend writes 16 MB of outputs per 1M bars and MACD 24 MB;
    fresh memory costs several ms on this VM whatever the kernel does;
(b) pandas/numpy versions of the same definitions: MACD with ``ewm(adjust=False,
    min_periods=n)``, SuperTrend with vectorized TR/ATR and a Python loop for the band
    recursion (timed once: it is slow), and how closely they agree with ours;
(c) the first call in a FRESH process (``sys.executable -c``: import, then supertrend + macd
    on 1,000 bars), twice with the same empty ``NUMBA_CACHE_DIR``: the first compiles and
    fills numba's on-disk cache, the second loads from it.

Bars are the real NIFTY 1-minute file (``$TRADEFLOW_SHARED`` or ``../shared``) stretched to
``--bars``: its log returns and high/low/open offsets are tiled with a little seeded noise and
compounded from 20,000. Without the file, a seeded random walk is used.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from tradeflow.indicators import macd, supertrend

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TRADEFLOW_SHARED", REPO.parent / "shared"))
NIFTY_1M = SHARED / "data" / "real" / "intraday" / "NIFTY50_1min_2024-01-01_2024-08-23.csv"

FRESH = """
import time
t0 = time.perf_counter()
import numpy as np
from tradeflow.indicators import macd, supertrend
t1 = time.perf_counter()
c = 20000.0 + np.cumsum(np.random.default_rng(0).normal(size=1000))
supertrend(c + 1.0, c - 1.0, c, 10, 3.0)
macd(c, 12, 26, 9)
t2 = time.perf_counter()
print(t1 - t0, t2 - t1)
"""


# ---------------------------------------------------------------------- data


def make_bars(n: int, seed: int = 0) -> tuple[pd.DataFrame, str]:
    """``n`` one-minute OHLC bars shaped like real NIFTY (or a random walk without the file)."""
    rng = np.random.default_rng(seed)
    if NIFTY_1M.is_file():
        raw = pd.read_csv(NIFTY_1M, dtype={"Time": str})
        raw = raw[raw["Time"] <= "15:29"]
        o, h, l, c = (raw[k].to_numpy(np.float64) for k in ("Open", "High", "Low", "Close"))
        ret = np.diff(np.log(c), prepend=np.log(c[0]))
        up, down, op = np.log(h / c), np.log(l / c), np.log(o / c)
        reps = -(-n // len(c))
        ret = np.tile(ret, reps)[:n] * rng.normal(1.0, 0.1, n)
        up, down, op = (np.tile(a, reps)[:n] * rng.uniform(0.9, 1.1, n) for a in (up, down, op))
        source = f"real NIFTY 1m ({len(c):,} bars) tiled x{reps} with 10% seeded noise"
    else:
        ret = rng.normal(0.0, 4e-4, n)
        up, down = np.abs(rng.normal(0.0, 3e-4, (2, n)))
        down = -down
        op = rng.uniform(down, up)
        source = f"seeded random walk (no {NIFTY_1M})"
    close = 20_000.0 * np.exp(np.cumsum(ret))
    high = close * np.exp(np.maximum(up, op))
    low = close * np.exp(np.minimum(down, op))
    return pd.DataFrame({"open": close * np.exp(op), "high": high, "low": low, "close": close}), source


# ---------------------------------------------------------------------- pandas references


def pandas_macd(close: pd.Series, fast: int, slow: int, signal: int) -> tuple[pd.Series, pd.Series, pd.Series]:
    def ema(s: pd.Series, n: int) -> pd.Series:
        return s.ewm(span=n, adjust=False, min_periods=n).mean()

    m = ema(close, fast) - ema(close, slow)
    s = ema(m, signal)
    return m, s, m - s


def pandas_supertrend(df: pd.DataFrame, period: int, multiplier: float) -> tuple[np.ndarray, np.ndarray]:
    """TradingView's definition: vectorized TR/ATR/basic bands, a Python loop for the recursion."""
    high, low, close = df["high"], df["low"], df["close"]
    prev_close = close.shift(1)
    tr = pd.concat([high - low, (high - prev_close).abs(), (low - prev_close).abs()], axis=1).max(axis=1)
    seeded = tr.iloc[period - 1 :].copy()
    seeded.iloc[0] = tr.iloc[:period].mean()  # RMA seeded with the SMA of the first `period` TRs
    atr = seeded.ewm(alpha=1.0 / period, adjust=False).mean().reindex(tr.index)
    hl2 = (high + low) / 2.0
    basic_up = (hl2 + multiplier * atr).to_list()
    basic_lo = (hl2 - multiplier * atr).to_list()
    c = close.to_list()
    n = len(c)
    line = [float("nan")] * n
    direction = [float("nan")] * n
    upper = lower = 0.0
    was_upper = False
    for i in range(period - 1, n):
        first = i == period - 1
        pu, pl = (0.0, 0.0) if first else (upper, lower)
        pc = c[i - 1] if i > 0 else float("nan")
        lower = basic_lo[i] if (basic_lo[i] > pl or pc < pl) else pl
        upper = basic_up[i] if (basic_up[i] < pu or pc > pu) else pu
        if first:
            d = -1.0
        elif was_upper:
            d = 1.0 if c[i] > upper else -1.0
        else:
            d = -1.0 if c[i] < lower else 1.0
        line[i] = lower if d == 1.0 else upper
        direction[i] = d
        was_upper = line[i] == upper
    return np.array(line), np.array(direction)


# ---------------------------------------------------------------------- timing


def timed(fn: Callable[[], object], repeat: int, keep: bool = False) -> tuple[float, float, float]:
    """(median s, min s, page faults per run) of ``repeat`` runs after one warm-up run.

    ``keep=True`` keeps every run's result alive, so each run gets memory it has not touched.
    """
    kept = [fn()]
    times = []
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(repeat):
        if not keep:
            kept.clear()
        t = time.perf_counter()
        kept.append(fn())
        times.append(time.perf_counter() - t)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    return statistics.median(times), min(times), faults / repeat


def fresh_process_runs(runs: int = 2) -> list[tuple[float, float]]:
    """(import s, first-call s) of ``runs`` fresh interpreters sharing one new numba cache dir."""
    out = []
    with tempfile.TemporaryDirectory(prefix="numba-cache-") as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        for _ in range(runs):
            res = subprocess.run([sys.executable, "-c", FRESH], env=env, capture_output=True, text=True, check=True)
            imp, call = (float(x) for x in res.stdout.split())
            out.append((imp, call))
    return out


def ms(x: float) -> str:
    return f"{x * 1e3:,.1f} ms" if x < 1 else f"{x:,.2f} s"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bars", type=int, default=1_000_000, help="one-minute bars (default 1,000,000)")
    ap.add_argument("--repeat", type=int, default=7, help="timed runs per row, median reported (default 7, min 5)")
    args = ap.parse_args(argv)
    repeat = max(args.repeat, 5)

    df, source = make_bars(args.bars)
    h, l, c = (df[k].to_numpy() for k in ("high", "low", "close"))
    print(f"{len(df):,} bars: {source}")
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, pandas {pd.__version__}, {os.cpu_count()} CPUs")
    print(f"median (min) of {repeat} runs after compilation; the pandas SuperTrend is timed once\n")

    jobs = {
        "SuperTrend(10, 3)": lambda: supertrend(h, l, c, 10, 3.0),
        "MACD(12, 26, 9)": lambda: macd(c, 12, 26, 9),
        "both": lambda: (supertrend(h, l, c, 10, 3.0), macd(c, 12, 26, 9)),
    }
    reused = {name: timed(fn, repeat) for name, fn in jobs.items()}
    fresh = {name: timed(fn, repeat, keep=True) for name, fn in jobs.items()}

    close = df["close"]
    pm_med, pm_min, _ = timed(lambda: pandas_macd(close, 12, 26, 9), repeat)
    t = time.perf_counter()
    p_line, p_dir = pandas_supertrend(df, 10, 3.0)
    pst = time.perf_counter() - t
    pandas_times = {
        "SuperTrend(10, 3)": (ms(pst) + " (1 run)", pst),
        "MACD(12, 26, 9)": (f"{ms(pm_med)} ({ms(pm_min)})", pm_med),
        "both": (ms(pst + pm_med), pst + pm_med),
    }

    line, direction = supertrend(h, l, c, 10, 3.0)
    ours = macd(c, 12, 26, 9)
    ref = pandas_macd(close, 12, 26, 9)
    macd_diff = max(np.nanmax(np.abs(a - b.to_numpy())) for a, b in zip(ours, ref))
    st_diff = np.nanmax(np.abs(line - p_line))
    agreement = {
        "SuperTrend(10, 3)": f"line max |diff| {st_diff:.1e}, direction "
        + ("identical" if np.array_equal(direction, p_dir, equal_nan=True) else "DIFFERS"),
        "MACD(12, 26, 9)": f"max |diff| {macd_diff:.1e} (macd, signal, hist)",
        "both": "goal: under 15 ms",
    }

    rows = []
    for name in jobs:
        r_med, r_min, _ = reused[name]
        f_med, f_min, f_faults = fresh[name]
        p_text, p_sec = pandas_times[name]
        rows.append((name, f"{ms(r_med)} ({ms(r_min)})", f"{ms(f_med)} ({ms(f_min)}), {f_faults:,.0f} faults",
                     p_text, f"{p_sec / r_med:,.0f}x", agreement[name]))  # fmt: skip
    bars = "1M bars" if len(df) == 1_000_000 else f"{len(df):,} bars"
    head = (f"indicator, {bars}", "tradeflow, memory reused", "tradeflow, fresh memory", "pandas/numpy",
            "speed-up", "agreement with pandas")  # fmt: skip
    print_table(head, rows)

    print()
    fresh = fresh_process_runs(2)
    rows = [
        (label, ms(imp), ms(call), ms(imp + call))
        for label, (imp, call) in zip(("1: empty numba cache (compiles)", "2: same cache dir (loads)"), fresh)
    ]
    print_table(("fresh process, 1,000 bars", "import", "first supertrend+macd", "total"), rows)
    return 0


def print_table(head: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(r[i])) for r in (head, *rows)) for i in range(len(head))]
    line = "  ".join(f"{h:<{w}}" for h, w in zip(head, widths))
    print(line)
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(f"{v:<{w}}" for v, w in zip(r, widths)))


if __name__ == "__main__":
    raise SystemExit(main())

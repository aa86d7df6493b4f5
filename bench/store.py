"""Benchmark the candle store: import, resample, and a range query in a many-symbol store.

Run:  .venv/bin/python bench/store.py [--bars 1000000] [--symbols 50] [--repeat 3]

(a) import N one-minute bars into an empty CandleStore in a temp dir (time, bars/s, bytes on disk);
(b) resample those bars to 15m through ``store.candles(sym, "15m")`` beside pandas ``resample`` on
    the same in-memory data aligned to 09:15, per session, and check both give the same bars;
(c) a one-symbol, one-month query from a store holding ``--symbols`` symbols with a year of 1m bars.

Bars are synthetic (a random walk on the 0.05 tick grid) on real NSE session dates. Every timing
is the median of ``--repeat`` runs (queries: at least 5) measured with ``time.perf_counter``.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from tradeflow.calendar import IST, sessions
from tradeflow.store import CandleStore

_OPEN_MIN = 555  # 09:15
_SESSION = 375  # 1m bars in a regular session
_IST_US = 19_800 * 1_000_000
_AGG = {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}
COLUMNS = ["open", "high", "low", "close", "volume"]


# ---------------------------------------------------------------------- data


def session_days(n_days: int, last: str = "2024-12-31") -> np.ndarray:
    """The last ``n_days`` NSE sessions up to ``last`` (weekdays further back if the calendar runs out)."""
    days = np.array(sessions("2005-01-03", last), dtype="datetime64[D]")
    if len(days) >= n_days:
        return days[-n_days:]
    extra = np.arange(days[0] - 10 * n_days, days[0])
    extra = extra[((extra.astype("int64") + 3) % 7) < 5]  # Mon..Fri
    return np.concatenate([extra, days])[-n_days:]


def minute_bars(days: np.ndarray, n: int | None = None, seed: int = 0, base: float = 20_000.0) -> pd.DataFrame:
    """09:15..15:29 IST one-minute bars on ``days``; the last ``n`` of them when ``n`` is given."""
    day_us = days.astype("datetime64[us]").astype("int64")
    us = (day_us[:, None] + np.arange(_OPEN_MIN, _OPEN_MIN + _SESSION, dtype="int64")[None, :] * 60_000_000 - _IST_US).ravel()
    if n is not None:
        us = us[-n:]
    rng = np.random.default_rng(seed)
    m = len(us)
    close = np.round((base + np.cumsum(rng.integers(-20, 21, m)) * 0.05) / 0.05) * 0.05
    close = np.round(np.maximum(close, 1.0), 2)
    open_ = np.round(np.concatenate(([close[0]], close[:-1])), 2)
    high = np.round(np.maximum(open_, close) + rng.integers(0, 10, m) * 0.05, 2)
    low = np.round(np.minimum(open_, close) - rng.integers(0, 10, m) * 0.05, 2)
    volume = rng.integers(1, 5_000, m).astype("float64")
    idx = pd.DatetimeIndex(pd.to_datetime(us, unit="us", utc=True), name="ts").tz_convert(IST)
    return pd.DataFrame({"open": open_, "high": high, "low": low, "close": close, "volume": volume}, index=idx)


# ---------------------------------------------------------------------- pandas baselines


def pandas_resample_global(df: pd.DataFrame, minutes: int) -> pd.DataFrame:
    """One ``resample`` over the whole frame with bins anchored at 09:15 IST of the first day.

    Correct per session only when ``minutes`` divides a day (1440): then every day's bins start
    at 09:15 and none crosses midnight. Empty overnight bins are dropped.
    """
    out = df.resample(f"{minutes}min", origin="start_day", offset="9h15min", label="left", closed="left").agg(_AGG)
    return out.dropna(subset=["open"])


def pandas_resample_per_session(df: pd.DataFrame, minutes: int) -> pd.DataFrame:
    """``resample`` per session for any bar length, without a slow groupby-resample.

    Each session is laid on its own slot of a virtual timeline, ``ceil(375/minutes)*minutes``
    minutes long and starting at 09:15, so bins cannot cross from one session into the next;
    one ``resample`` runs over that timeline and labels are mapped back to real bar starts.
    """
    local_us = df.index.as_unit("us").asi8 + _IST_US  # wall-clock IST microseconds
    day = local_us // 86_400_000_000
    minute = (local_us % 86_400_000_000) // 60_000_000 - _OPEN_MIN
    sessions_, session_no = np.unique(day, return_inverse=True)
    slot = math.ceil(_SESSION / minutes) * minutes
    virtual = pd.to_datetime((session_no * slot + minute) * 60_000_000_000, unit="ns")
    res = df.set_axis(virtual).resample(f"{minutes}min", origin="epoch", label="left", closed="left").agg(_AGG)
    res = res.dropna(subset=["open"])
    vmin = res.index.as_unit("ns").asi8 // 60_000_000_000
    real_day = sessions_[vmin // slot]
    real_us = real_day * 86_400_000_000 + (_OPEN_MIN + vmin % slot) * 60_000_000 - _IST_US
    res.index = pd.DatetimeIndex(pd.to_datetime(real_us, unit="us", utc=True), name="ts").tz_convert(IST)
    return res


def same_bars(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    return (
        len(a) == len(b)
        and np.array_equal(a.index.as_unit("us").asi8, b.index.as_unit("us").asi8)
        and np.array_equal(a[COLUMNS].to_numpy(), b[COLUMNS].to_numpy())
    )


# ---------------------------------------------------------------------- timing


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    """Median wall time of ``repeat`` calls and the last result."""
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def disk_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in (root / "candles").rglob("*.parquet"))


def fmt_n(x: float) -> str:
    return f"{x:,.0f}"


def fmt_s(x: float) -> str:
    return f"{x * 1000:,.1f} ms" if x < 1 else f"{x:,.2f} s"


# ---------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bars", type=int, default=1_000_000, help="1m bars to import (default 1,000,000)")
    ap.add_argument("--symbols", type=int, default=50, help="symbols in the range-query store (default 50)")
    ap.add_argument("--months", type=int, default=12, help="months of 1m bars per symbol there (default 12)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per timing, median reported (default 3)")
    args = ap.parse_args(argv)
    repeat = max(1, args.repeat)
    rows: list[tuple[str, str, str]] = []
    notes: list[str] = []

    with tempfile.TemporaryDirectory(prefix="tradeflow-bench-") as tmp:
        tmp = Path(tmp)

        # (a) import -----------------------------------------------------------------
        n_days = math.ceil(args.bars / _SESSION)
        frame = minute_bars(session_days(n_days), args.bars, seed=1)
        first, last = frame.index[0], frame.index[-1]
        runs = iter(range(repeat))

        def do_import() -> CandleStore:
            store = CandleStore(tmp / f"import{next(runs)}")
            store.upsert(frame, "BENCH", "1m")
            return store

        t_import, store = timed(do_import, repeat)
        size = disk_bytes(store.root)
        rows += [
            ("(a) import", f"{len(frame):,} 1m bars into an empty store", fmt_s(t_import)),
            ("", "throughput", f"{fmt_n(len(frame) / t_import)} bars/s"),
            ("", "on disk (zstd Parquet)", f"{size / 2**20:,.1f} MiB ({size / len(frame):.1f} B/bar)"),
        ]
        notes.append(f"data: {n_days:,} sessions {first:%Y-%m-%d %H:%M} .. {last:%Y-%m-%d %H:%M} IST")
        t_upsert_again, _ = timed(lambda: store.upsert(frame, "BENCH", "1m"), 1)
        rows.append(("", "same bars again (idempotent merge)", fmt_s(t_upsert_again)))

        # (b) resample ---------------------------------------------------------------
        t_store15, store15 = timed(lambda: store.candles("BENCH", "15m"), repeat)
        t_glob15, glob15 = timed(lambda: pandas_resample_global(frame, 15), repeat)
        t_sess15, sess15 = timed(lambda: pandas_resample_per_session(frame, 15), repeat)
        match_glob, match_sess = same_bars(store15, glob15), same_bars(store15, sess15)
        rows += [
            ("(b) resample 15m", f"store.candles(.., '15m') -> {len(store15):,} bars", fmt_s(t_store15)),
            ("", "pandas resample, origin 09:15 (in memory)", fmt_s(t_glob15)),
            ("", "pandas resample per session (in memory)", fmt_s(t_sess15)),
            ("", "store == pandas (both ways)", "yes" if match_glob and match_sess else f"NO ({match_glob}, {match_sess})"),
        ]
        t_store75, store75 = timed(lambda: store.candles("BENCH", "75m"), repeat)
        t_sess75, sess75 = timed(lambda: pandas_resample_per_session(frame, 75), repeat)
        glob75 = pandas_resample_global(frame, 75)
        rows += [
            ("  resample 75m", f"store.candles(.., '75m') -> {len(store75):,} bars", fmt_s(t_store75)),
            ("", "pandas resample per session (in memory)", fmt_s(t_sess75)),
            ("", "store == pandas per session", "yes" if same_bars(store75, sess75) else "NO"),
        ]
        notes.append(
            "75m: one global resample from 09:15 gives "
            + ("the same bars" if same_bars(store75, glob75) else f"{len(glob75):,} bars that drift off 09:15 (1440 is not "
               "a multiple of 75): bucket per session")
        )

        # (c) range query in a many-symbol store ----------------------------------------
        multi = CandleStore(tmp / "multi")
        first_day = (pd.Timestamp("2024-06-30") - pd.DateOffset(months=args.months) + pd.Timedelta(days=1)).date()
        year_days = np.array(sessions(first_day, "2024-06-30"), dtype="datetime64[D]")
        t0 = time.perf_counter()
        per_symbol = 0
        for i in range(args.symbols):
            bars = minute_bars(year_days, seed=100 + i, base=100.0 + 50 * i)
            multi.upsert(bars, f"SYM{i:03d}", "1m")
            per_symbol = len(bars)
        t_build = time.perf_counter() - t0
        target = f"SYM{args.symbols // 2:03d}"
        q_repeat = max(5, repeat)
        t_q1, q1 = timed(lambda: multi.candles(target, "1m", "2024-03-01", "2024-03-31"), q_repeat)
        t_q15, q15 = timed(lambda: multi.candles(target, "15m", "2024-03-01", "2024-03-31"), q_repeat)
        t_qall, qall = timed(lambda: multi.candles(target, "1m"), q_repeat)
        rows += [
            ("(c) build", f"{args.symbols} symbols x {per_symbol:,} 1m bars ({len(year_days)} sessions)", fmt_s(t_build)),
            ("", "on disk", f"{disk_bytes(multi.root) / 2**20:,.1f} MiB"),
            ("  query", f"{target} 1m, 2024-03 -> {len(q1):,} bars", fmt_s(t_q1)),
            ("", f"{target} 15m, 2024-03 -> {len(q15):,} bars", fmt_s(t_q15)),
            ("", f"{target} 1m, all -> {len(qall):,} bars", fmt_s(t_qall)),
        ]
        notes.append(
            f"timings are medians of {repeat} runs ({q_repeat} for queries); python {sys.version.split()[0]}, "
            f"pandas {pd.__version__}, {os.cpu_count()} CPU(s)"
        )

    print_table(rows, notes)
    ok = match_glob and match_sess and same_bars(store75, sess75)
    return 0 if ok else 1


def print_table(rows: list[tuple[str, str, str]], notes: list[str]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # plain text
        w0 = max(len(r[0]) for r in rows)
        w1 = max(len(r[1]) for r in rows)
        print(f"{'step':<{w0}}  {'what':<{w1}}  result")
        for a, b, c in rows:
            print(f"{a:<{w0}}  {b:<{w1}}  {c}")
        for note in notes:
            print(f"  * {note}")
        return
    table = Table(title="tradeflow CandleStore benchmark", title_justify="left")
    table.add_column("step", style="bold")
    table.add_column("what")
    table.add_column("result", justify="right")
    for a, b, c in rows:
        table.add_row(a, b, c, end_section=False)
    console = Console(width=max(100, min(140, Console().width)))
    console.print(table)
    for note in notes:
        console.print(f"  * {note}", highlight=False, soft_wrap=True)


if __name__ == "__main__":
    sys.exit(main())

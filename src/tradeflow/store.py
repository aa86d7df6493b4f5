"""The candle store: hive-partitioned Parquet under one root, read and written through DuckDB.

Layout::

    <root>/candles/timeframe=1m/symbol=NIFTY/year=2024/data.parquet
    <root>/_meta/watermarks.json
    <root>/_locks/...

* Time is stored as UTC instants (``ts``, Parquet ``timestamp[us, UTC]``); frames come back
  with an Asia/Kolkata index labelled by bar start. ``year`` is the IST year of the bar.
* ``(symbol, timeframe, ts)`` is unique: ``upsert`` merges into the partitions it touches,
  newest values winning, and replaces each partition file atomically (write a temporary
  file beside it, fsync, ``os.replace``). A writer killed half-way leaves every partition
  either as it was or fully merged, never half-written or duplicated.
* Longer timeframes are built from stored 1m bars by a DuckDB query, bucketed from the
  09:15 session open; bars never span two sessions. Bars stored at the asked timeframe
  itself (a source's official daily bars, an imported 15m file) win session by session.
* A query reads only the partition files of its symbol, timeframe and years.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import numpy as np
import pandas as pd
from filelock import FileLock, Timeout

from .calendar import IST, IST_OFFSET, as_instant
from .errors import DataValidationError, StoreError
from .timeframes import ONE_MINUTE, Timeframe

if TYPE_CHECKING:
    from .quality import GapReport

__all__ = ["CandleStore", "UpsertResult", "Coverage", "CANDLE_COLUMNS", "normalize_symbol"]

log = logging.getLogger(__name__)

CANDLE_COLUMNS = ("open", "high", "low", "close", "volume")
_STORED = ("ts", "open", "high", "low", "close", "volume", "oi")
_SYMBOL = re.compile(r"^[A-Z0-9][A-Z0-9&_.\-]{0,39}$")
_US = 1_000_000
_DAY_US = 86_400 * _US
_IST_US = int(IST_OFFSET.total_seconds()) * _US
_OPEN_MIN = 555  # 09:15 in minutes after midnight
_TMP_SUFFIX = ".tmp"
_PROBLEM_LIMIT = 10


def normalize_symbol(symbol: str) -> str:
    """Upper-case a trading symbol and refuse anything that cannot be a safe folder name."""
    sym = str(symbol).strip().upper()
    if not _SYMBOL.match(sym):
        raise StoreError(
            f"invalid symbol {symbol!r}: use letters, digits and & _ . - only (for example NIFTY, "
            "BANKNIFTY, M&M, BAJAJ-AUTO), at most 40 characters"
        )
    return sym


@dataclass(frozen=True)
class UpsertResult:
    """What one ``upsert`` did: rows new to the store and rows whose values were replaced."""

    inserted: int
    updated: int
    partitions: int


@dataclass(frozen=True)
class Coverage:
    """The contiguous span a source has fully ingested for one symbol and timeframe.

    ``end`` is the watermark: the last fully ingested instant (exclusive bound, UTC).
    """

    start: pd.Timestamp
    end: pd.Timestamp


class CandleStore:
    """Parquet candle store read and written through DuckDB. See the module docstring."""

    def __init__(self, root: "str | os.PathLike[str] | None" = None, *, lock_timeout: float = 60.0) -> None:
        if root is None:
            from .config import settings

            root = settings().store_root
        self.root = Path(root)
        self.lock_timeout = lock_timeout

    def __repr__(self) -> str:
        return f"CandleStore(root={str(self.root)!r})"

    # ------------------------------------------------------------------ paths
    def _series_dir(self, symbol: str, tf: Timeframe) -> Path:
        return self.root / "candles" / f"timeframe={tf.name}" / f"symbol={symbol}"

    def _partition(self, symbol: str, tf: Timeframe, year: int) -> Path:
        return self._series_dir(symbol, tf) / f"year={year}" / "data.parquet"

    def _files(self, symbol: str, tf: Timeframe, start_us: int | None = None, end_us: int | None = None) -> list[Path]:
        """Existing partition files of one series whose IST year overlaps the range."""
        base = self._series_dir(symbol, tf)
        if not base.is_dir():
            return []
        lo = _ist_year(start_us) if start_us is not None else -1
        hi = _ist_year(end_us - 1) if end_us is not None else 10_000
        files = []
        for part in sorted(base.glob("year=*")):
            try:
                year = int(part.name.split("=", 1)[1])
            except ValueError:
                continue
            path = part / "data.parquet"
            if lo <= year <= hi and path.is_file():
                files.append(path)
        return files

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        lock_dir = self.root / "_locks"
        lock_dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(lock_dir / f"{name}.lock"), timeout=self.lock_timeout)
        try:
            with lock:
                yield
        except Timeout as exc:
            raise StoreError(
                f"another process has held the store lock {name!r} for {self.lock_timeout:.0f}s; "
                "wait for it to finish (a fetch or import may be running) and try again"
            ) from exc

    # ------------------------------------------------------------------ catalogue
    def symbols(self, timeframe: "str | Timeframe | None" = None) -> list[str]:
        """Symbols with stored bars (at ``timeframe``, or at any)."""
        base = self.root / "candles"
        pattern = f"timeframe={Timeframe.parse(timeframe).name}/symbol=*" if timeframe else "timeframe=*/symbol=*"
        return sorted({p.name.split("=", 1)[1] for p in base.glob(pattern) if any(p.glob("year=*/data.parquet"))})

    def timeframes(self, symbol: str) -> list[str]:
        """Timeframes stored (not derived) for ``symbol``."""
        sym = normalize_symbol(symbol)
        base = self.root / "candles"
        return sorted(
            p.parent.name.split("=", 1)[1]
            for p in base.glob(f"timeframe=*/symbol={sym}")
            if any(p.glob("year=*/data.parquet"))
        )

    def coverage_table(self) -> pd.DataFrame:
        """One row per stored series: symbol, timeframe, bars, first and last bar (IST)."""
        rows = []
        for path in sorted((self.root / "candles").glob("timeframe=*/symbol=*")):
            tf = Timeframe.parse(path.parent.name.split("=", 1)[1])
            sym = path.name.split("=", 1)[1]
            files = self._files(sym, tf)
            if not files:
                continue
            with _connect() as con:
                n, lo, hi = con.execute(
                    f"SELECT count(*), min(epoch_us(ts)), max(epoch_us(ts)) FROM read_parquet({_sql_list(files)})"
                ).fetchall()[0]
            rows.append({"symbol": sym, "timeframe": tf.name, "bars": n, "first": _us_to_ist(lo), "last": _us_to_ist(hi)})
        return pd.DataFrame(rows, columns=["symbol", "timeframe", "bars", "first", "last"])

    # ------------------------------------------------------------------ write
    def upsert(self, frame: pd.DataFrame, symbol: str, timeframe: "str | Timeframe") -> UpsertResult:
        """Merge candles into the store; idempotent, newest values win, atomic per partition.

        ``frame``: a tz-aware DatetimeIndex (or a tz-aware ``ts`` column) labelled by bar
        start, and columns ``open, high, low, close`` (``volume`` and ``oi`` optional).
        Daily bars are keyed by their IST session date. The frame is checked first (columns,
        NaNs, prices, high >= low, duplicate or misaligned times); a bad frame raises
        ``DataValidationError`` and nothing is written.
        """
        sym = normalize_symbol(symbol)
        tf = Timeframe.parse(timeframe)
        data = _prepare(frame, tf)
        if data.empty:
            return UpsertResult(0, 0, 0)
        years = _ist_year_array(data["ts_us"].to_numpy())
        data["year"] = years
        inserted = updated = 0
        with self._locked(f"{tf.name}-{sym}"):
            _remove_stale_tmp(self._series_dir(sym, tf))
            staged: list[tuple[Path, Path]] = []
            try:
                with _connect() as con:
                    for year in np.unique(years):
                        part = data[data["year"] == year].drop(columns=["year"])
                        target = self._partition(sym, tf, int(year))
                        target.parent.mkdir(parents=True, exist_ok=True)
                        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}{_TMP_SUFFIX}")
                        ins, upd = _merge_partition(con, part, target, tmp)
                        staged.append((tmp, target))
                        inserted += ins
                        updated += upd
                # Every merged partition is complete on disk before any replaces its original.
                for tmp, target in staged:
                    os.replace(tmp, target)
                    _fsync_dir(target.parent)
            finally:
                for tmp, _ in staged:
                    with contextlib.suppress(FileNotFoundError):
                        tmp.unlink()
        log.info("upsert %s %s: %d new, %d replaced, %d partition(s)", sym, tf, inserted, updated, len(staged))
        return UpsertResult(inserted, updated, len(staged))

    # ------------------------------------------------------------------ read
    def raw(self, symbol: str, timeframe: "str | Timeframe", start=None, end=None) -> pd.DataFrame:
        """Stored rows of exactly ``timeframe``, in file order (no resampling, no de-duplication).

        For data-quality checks; ``candles`` is what analysis should use.
        """
        sym, tf = normalize_symbol(symbol), Timeframe.parse(timeframe)
        lo, hi = _range_us(start, end)
        files = self._files(sym, tf, lo, hi)
        if not files:
            return _empty_frame()
        with _connect() as con:
            res = con.execute(
                f"SELECT epoch_us(ts) AS ts_us, open, high, low, close, volume, oi "
                f"FROM read_parquet({_sql_list(files)}) WHERE epoch_us(ts) >= ? AND epoch_us(ts) < ?",
                [lo, hi],
            ).df()
        return _to_frame(res)

    def candles(
        self,
        symbol: str,
        timeframe: "str | Timeframe" = "1m",
        start: "str | dt.date | pd.Timestamp | None" = None,
        end: "str | dt.date | pd.Timestamp | None" = None,
    ) -> pd.DataFrame:
        """Candles of ``symbol`` at ``timeframe`` with bar starts in ``[start, end]``.

        ``start``/``end`` are dates or times; naive values are IST, and a date ``end`` means
        the whole day. Returns an Asia/Kolkata-indexed frame ``open, high, low, close,
        volume`` (plus ``oi`` when stored). Intraday timeframes other than the stored one are
        built from 1m bars (buckets from 09:15, open first, close last, high/low extremes,
        volume summed); ``1d`` uses stored daily bars per session where a source gave them
        (the official close) and 1m bars otherwise.
        """
        sym, tf = normalize_symbol(symbol), Timeframe.parse(timeframe)
        lo, hi = _range_us(start, end)
        exact = self._files(sym, tf, lo, hi)
        # A bucket and its 1m rows share one IST day, so the range's own years suffice.
        base = self._files(sym, ONE_MINUTE, lo, hi) if tf != ONE_MINUTE else []
        if not exact and not base:
            log.info("no stored bars for %s %s in range", sym, tf)
            return _empty_frame()
        parts = []
        if exact:
            parts.append(
                f"SELECT epoch_us(ts) AS ts_us, open, high, low, close, volume, oi FROM read_parquet({_sql_list(exact)})"
            )
        if base:
            parts.append(_resample_sql(_sql_list(base), tf, exclude_exact=_sql_list(exact) if exact else None))
        query = f"SELECT * FROM ({' UNION ALL '.join(parts)}) WHERE ts_us >= ? AND ts_us < ? ORDER BY ts_us"
        with _connect() as con:
            res = con.execute(query, [lo, hi]).df()
        return _to_frame(res)

    def gaps(self, symbol: str, timeframe: "str | Timeframe" = "1m", start=None, end=None) -> "GapReport":
        """Data-quality report of ``symbol`` at ``timeframe`` against the NSE calendar.

        Checks the stored rows of that timeframe as they lie on disk; a timeframe built from
        1m bars is checked as built, with the order/duplicate checks run on the 1m rows.
        """
        from .quality import check_candles

        sym, tf = normalize_symbol(symbol), Timeframe.parse(timeframe)
        lo_day = None if start is None else as_instant(start).tz_convert(IST).date()
        hi_day = None if end is None else (as_instant(end, end=True) - pd.Timedelta(microseconds=1)).tz_convert(IST).date()
        stored = self.raw(sym, tf, start, end)
        if len(stored):
            return check_candles(stored, tf, symbol=sym, start=lo_day, end=hi_day)
        report = check_candles(self.candles(sym, tf, start, end), tf, symbol=sym, start=lo_day, end=hi_day)
        base = check_candles(self.raw(sym, ONE_MINUTE, start, end), ONE_MINUTE, symbol=sym, start=lo_day, end=hi_day)
        report.duplicates, report.non_monotonic = base.duplicates, base.non_monotonic
        return report

    # ------------------------------------------------------------------ watermarks
    @property
    def _watermark_file(self) -> Path:
        return self.root / "_meta" / "watermarks.json"

    def _read_watermarks(self) -> dict[str, dict[str, str]]:
        path = self._watermark_file
        if not path.exists():
            return {}
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise StoreError(f"{path} is not valid JSON: fix or delete it (fetches then start from scratch)") from exc

    def coverage(self, source: str, symbol: str, timeframe: "str | Timeframe") -> Coverage | None:
        """The span ``source`` has fully ingested for this series, or None."""
        key = _wm_key(source, normalize_symbol(symbol), Timeframe.parse(timeframe))
        entry = self._read_watermarks().get(key)
        if not entry:
            return None
        return Coverage(pd.Timestamp(entry["start"]), pd.Timestamp(entry["end"]))

    def watermark(self, source: str, symbol: str, timeframe: "str | Timeframe") -> pd.Timestamp | None:
        """The last fully ingested instant (UTC, exclusive) for ``(source, symbol, timeframe)``."""
        cov = self.coverage(source, symbol, timeframe)
        return None if cov is None else cov.end

    def set_coverage(self, source: str, symbol: str, timeframe: "str | Timeframe", start: pd.Timestamp, end: pd.Timestamp) -> None:
        """Record the fully ingested span; the file is replaced atomically."""
        key = _wm_key(source, normalize_symbol(symbol), Timeframe.parse(timeframe))
        start, end = pd.Timestamp(start).tz_convert("UTC"), pd.Timestamp(end).tz_convert("UTC")
        if end < start:
            raise StoreError(f"coverage end {end} is before its start {start}")
        with self._locked("watermarks"):
            marks = self._read_watermarks()
            marks[key] = {
                "start": start.isoformat(),
                "end": end.isoformat(),
                "updated": pd.Timestamp.now(tz="UTC").isoformat(),
            }
            _atomic_write_text(self._watermark_file, json.dumps(marks, indent=1, sort_keys=True))


# ---------------------------------------------------------------------- helpers


@contextlib.contextmanager
def _connect() -> Iterator[duckdb.DuckDBPyConnection]:
    """A private in-memory DuckDB connection; unreadable Parquet becomes a ``StoreError``."""
    con = duckdb.connect()
    # Instants are UTC whatever the machine's zone; TIMESTAMP -> TIMESTAMPTZ casts depend on it.
    con.execute("SET TimeZone = 'UTC'")
    try:
        yield con
    except (duckdb.IOException, duckdb.InvalidInputException) as exc:
        raise StoreError(
            f"the store cannot read a partition file ({str(exc).splitlines()[0]}); restore it from a backup, "
            "or delete that year's folder and fetch or import it again"
        ) from exc
    finally:
        con.close()


def _sql_list(paths: list[Path]) -> str:
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


def _ist_year(us: int) -> int:
    return int(_ist_year_array(np.array([us], dtype=np.int64))[0])


def _ist_year_array(us: np.ndarray) -> np.ndarray:
    days = (us + _IST_US) // _DAY_US
    return days.astype("datetime64[D]").astype("datetime64[Y]").astype(int) + 1970


def _us_to_ist(us: int | None) -> pd.Timestamp | None:
    return None if us is None else pd.Timestamp(int(us), unit="us", tz="UTC").tz_convert(IST)


def _range_us(start, end) -> tuple[int, int]:
    lo = -(2**62) if start is None else _ts_us(as_instant(start))
    hi = 2**62 if end is None else _ts_us(as_instant(end, end=True))
    if lo >= hi:
        raise StoreError(f"start {start} is not before end {end}: swap them")
    return lo, hi


def _ts_us(ts: pd.Timestamp) -> int:
    return int(ts.value // 1000)  # Timestamp.value is always nanoseconds


def _wm_key(source: str, symbol: str, tf: Timeframe) -> str:
    return f"{source}|{symbol}|{tf.name}"


def _empty_frame() -> pd.DataFrame:
    idx = pd.DatetimeIndex([], tz=IST, name="ts")
    return pd.DataFrame({c: pd.Series(dtype="float64") for c in CANDLE_COLUMNS}, index=idx)


def _to_frame(res: pd.DataFrame) -> pd.DataFrame:
    """DuckDB result with ``ts_us`` to the candle frame contract (IST index, float columns)."""
    if res.empty:
        return _empty_frame()
    idx = pd.DatetimeIndex(pd.to_datetime(res["ts_us"].to_numpy(dtype="int64"), unit="us", utc=True), name="ts")
    out = res.drop(columns=["ts_us"]).astype("float64")
    out.index = idx.tz_convert(IST)
    if "oi" in out and out["oi"].isna().all():
        out = out.drop(columns=["oi"])
    return out


def _bucket_expr(tf: Timeframe) -> str:
    """SQL for the bar-start instant (epoch µs) of each 1m row's bucket, aligned to 09:15 IST."""
    day = f"((ts_us + {_IST_US}) // {_DAY_US})"
    if tf.is_daily:
        return f"({day} * {_DAY_US} - {_IST_US})"
    minute = f"(((ts_us + {_IST_US}) % {_DAY_US}) // {60 * _US})"
    slot = f"CAST(floor(({minute} - {_OPEN_MIN}) / {tf.minutes}) AS BIGINT)"
    return f"({day} * {_DAY_US} - {_IST_US} + ({_OPEN_MIN} + {slot} * {tf.minutes}) * {60 * _US})"


def _resample_sql(base_files: str, tf: Timeframe, exclude_exact: str | None) -> str:
    """Aggregate stored 1m bars to ``tf``; sessions that have bars stored at ``tf`` are skipped."""
    day = f"((ts_us + {_IST_US}) // {_DAY_US})"
    skip = ""
    if exclude_exact:
        skip = (
            f"WHERE {day} NOT IN (SELECT DISTINCT (epoch_us(ts) + {_IST_US}) // {_DAY_US} "
            f"FROM read_parquet({exclude_exact}))"
        )
    return (
        f"SELECT bucket AS ts_us, arg_min(open, ts_us) AS open, max(high) AS high, min(low) AS low, "
        f"arg_max(close, ts_us) AS close, sum(volume) AS volume, arg_max(oi, ts_us) AS oi FROM ("
        f"SELECT {_bucket_expr(tf)} AS bucket, * FROM ("
        f"SELECT epoch_us(ts) AS ts_us, open, high, low, close, volume, oi FROM read_parquet({base_files})"
        f") {skip}) GROUP BY bucket"
    )


def _prepare(frame: pd.DataFrame, tf: Timeframe) -> pd.DataFrame:
    """Check a frame before writing and return ``ts_us`` + stored columns, sorted."""
    if not isinstance(frame, pd.DataFrame):
        raise DataValidationError(f"expected a pandas DataFrame of candles, got {type(frame).__name__}")
    df = frame.copy()
    df.columns = [str(c).lower() for c in df.columns]
    if "ts" in df.columns:
        df = df.set_index("ts")
    if not isinstance(df.index, pd.DatetimeIndex):
        raise DataValidationError(
            "candles need a DatetimeIndex of bar starts (or a 'ts' column): "
            "set one with frame.set_index(pd.to_datetime(...))"
        )
    if df.index.tz is None:
        raise DataValidationError(
            "candle timestamps have no time zone: use frame.tz_localize('Asia/Kolkata') for exchange "
            "time or frame.tz_localize('UTC') for UTC before writing"
        )
    missing = [c for c in ("open", "high", "low", "close") if c not in df.columns]
    if missing:
        raise DataValidationError(
            f"candles lack column(s) {', '.join(missing)}; they have {', '.join(map(str, df.columns)) or 'none'}"
        )
    for col in ("volume", "oi"):
        if col not in df.columns:
            df[col] = np.nan
    idx = df.index.tz_convert("UTC")
    if tf.is_daily:
        # A daily bar is keyed by its IST session date, whatever time of day the source put on it.
        idx = idx.tz_convert(IST).normalize().tz_convert("UTC")
    values = df[["open", "high", "low", "close", "volume", "oi"]]
    try:
        values = values.astype("float64")
    except (TypeError, ValueError) as exc:
        raise DataValidationError(f"candle columns must be numeric: {exc}") from exc
    ts_us = idx.as_unit("us").asi8
    problems = _frame_problems(values, idx, tf)
    if problems:
        raise DataValidationError(f"refused to write {len(values)} candle(s); nothing was written:", problems)
    out = values.reset_index(drop=True)
    out.insert(0, "ts_us", ts_us)
    return out.sort_values("ts_us", kind="stable").reset_index(drop=True)


def _frame_problems(values: pd.DataFrame, idx: pd.DatetimeIndex, tf: Timeframe) -> list[str]:
    problems: list[str] = []

    def add(mask: np.ndarray, what: str, fix: str = "") -> None:
        if mask.any():
            where = idx[mask].tz_convert(IST)[:3]
            shown = ", ".join(str(t) for t in where)
            more = f" and {int(mask.sum()) - len(where)} more" if mask.sum() > len(where) else ""
            problems.append(f"{what} at {shown}{more}" + (f"; {fix}" if fix else ""))

    ohlc = values[["open", "high", "low", "close"]]
    for col in ohlc.columns:
        add(ohlc[col].isna().to_numpy(), f"{col} is missing (NaN)", "drop or fill those rows")
        add((ohlc[col] <= 0).to_numpy(), f"{col} is zero or negative")
    add((values["volume"] < 0).to_numpy(), "volume is negative")
    add((ohlc["high"] < ohlc["low"]).to_numpy(), "high is below low")
    add(idx.isna(), "timestamp is missing")
    add(idx.duplicated(keep="first"), "duplicate bar start", "keep one row per bar")
    if not tf.is_daily:
        local_min = ((idx.as_unit("us").asi8 + _IST_US) % _DAY_US) / (60 * _US) - _OPEN_MIN
        misaligned = (local_min % tf.minutes) != 0
        add(
            np.asarray(misaligned),
            f"bar start not on the {tf} grid aligned to 09:15 IST",
            "label each bar by its start time",
        )
    return problems[:_PROBLEM_LIMIT]


def _merge_partition(con: duckdb.DuckDBPyConnection, part: pd.DataFrame, target: Path, tmp: Path) -> tuple[int, int]:
    """Write ``part`` merged over the existing partition into ``tmp``; return (inserted, updated)."""
    con.register("incoming", part)
    new_rows = "SELECT make_timestamp(ts_us)::TIMESTAMPTZ AS ts, open, high, low, close, volume, oi FROM incoming"
    if target.exists():
        old = f"read_parquet('{_sql_escape(target)}')"
        existing = con.execute(
            f"SELECT count(*) FROM incoming i SEMI JOIN {old} o ON epoch_us(o.ts) = i.ts_us"
        ).fetchall()[0][0]
        query = (
            f"{new_rows} UNION ALL SELECT ts, open, high, low, close, volume, oi FROM {old} o "
            f"ANTI JOIN incoming i ON epoch_us(o.ts) = i.ts_us ORDER BY ts"
        )
    else:
        existing = 0
        query = f"{new_rows} ORDER BY ts"
    con.execute(
        f"COPY ({query}) TO '{_sql_escape(tmp)}' (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 122880)"
    )
    con.unregister("incoming")
    _fsync_file(tmp)
    return len(part) - existing, existing


def _sql_escape(path: Path) -> str:
    return str(path).replace("'", "''")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform can fsync a directory
        _fsync_file(path)


def _remove_stale_tmp(folder: Path) -> None:
    """Delete temporary files left by a writer that died (we hold the series lock)."""
    for stale in folder.glob(f"year=*/.*{_TMP_SUFFIX}"):
        log.warning("removing %s left by an interrupted write", stale)
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}{_TMP_SUFFIX}")
    try:
        with open(tmp, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()

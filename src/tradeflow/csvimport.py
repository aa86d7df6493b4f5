"""Read candle CSV files of many shapes into a checked candle frame, then into the store.

Shapes handled: one timestamp column (ISO strings, ``YYYY-MM-DD HH:MM``, epoch seconds or
milliseconds) or separate date and time columns (``20240101`` + ``09:15``, ``02-01-2024`` +
``09:15:00``); header or none; naive times in IST or UTC. Column names are found
case-insensitively (``open``/``o``, ``high``/``h``, ...) or given explicitly.

A malformed file is refused as a whole: every problem found (up to a limit) is reported
with its line number and column, and nothing reaches the store.
"""

from __future__ import annotations

import csv
import logging
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .calendar import IST
from .errors import DataValidationError
from .store import CandleStore, UpsertResult
from .timeframes import Timeframe

__all__ = ["CsvFormat", "read_candles_csv", "import_csv"]

log = logging.getLogger(__name__)

_ALIASES: dict[str, tuple[str, ...]] = {
    "open": ("open", "o", "open_price"),
    "high": ("high", "h", "high_price"),
    "low": ("low", "l", "low_price"),
    "close": ("close", "c", "close_price", "ltp"),
    "volume": ("volume", "vol", "v", "qty"),
    "oi": ("oi", "open_interest", "openinterest"),
}
_TS_NAMES = ("timestamp", "datetime", "date_time", "ts", "time_stamp")
_ZONES = {"ist": IST, "asia/kolkata": IST, "asia/calcutta": IST, "utc": "UTC", "z": "UTC"}
_FORMATS = ("auto", "iso", "epoch", "epoch_ms")
_LIMIT = 10


@dataclass
class CsvFormat:
    """How to read a candle CSV. Every field has a default that reads the common shapes.

    * ``columns``: explicit CSV column names, e.g. ``{"close": "LTP", "timestamp": "Time"}``;
      keys are ``open high low close volume oi timestamp date time``.
    * ``format``: ``auto`` (ISO or ``YYYYMMDD``, day-first otherwise), ``iso``, ``epoch``
      (seconds), ``epoch_ms``, or a ``strftime`` pattern for the timestamp (or date) column.
    * ``time_format``: ``strftime`` pattern of a separate time column (default: ``HH:MM[:SS]``).
    * ``tz``: zone of naive timestamps, ``Asia/Kolkata`` (``IST``) or ``UTC``. Epochs are UTC.
    * ``header``: False for a file with no header row; then ``names`` names its columns.
    """

    columns: dict[str, str] = field(default_factory=dict)
    format: str = "auto"
    time_format: str | None = None
    tz: str = IST
    header: bool = True
    names: list[str] | None = None
    delimiter: str = ","


def read_candles_csv(path: "str | Path", fmt: CsvFormat | None = None) -> pd.DataFrame:
    """Read and check a candle CSV; returns a tz-aware candle frame sorted by time.

    Raises ``DataValidationError`` naming the line and column of each problem.
    """
    fmt = fmt or CsvFormat()
    path = Path(path)
    if not path.is_file():
        raise DataValidationError(f"{path}: no such file")
    zone = _zone(fmt.tz)
    if fmt.format not in _FORMATS and "%" not in fmt.format:
        raise DataValidationError(
            f"unknown time format {fmt.format!r}: use one of {', '.join(_FORMATS)} or a strftime pattern like '%d-%m-%Y %H:%M'"
        )
    raw = _read(path, fmt)
    first_line = 2 if fmt.header else 1
    lines = raw.index.to_numpy() + first_line
    cols = _resolve_columns(path, list(raw.columns), fmt)
    problems: list[str] = []

    ts = _timestamps(raw, cols, fmt, zone, lines, problems)
    values: dict[str, pd.Series] = {}
    for key in ("open", "high", "low", "close", "volume", "oi"):
        if key in cols:
            values[key] = _numbers(raw[cols[key]], cols[key], lines, problems)
    for key in ("open", "high", "low", "close"):
        bad = (values[key] <= 0).to_numpy()
        for i in np.flatnonzero(bad)[:_LIMIT]:
            problems.append(f"line {lines[i]}, column {cols[key]!r}: price {values[key].iloc[i]:g} is not positive")
    if "volume" in values:
        for i in np.flatnonzero((values["volume"] < 0).to_numpy())[:_LIMIT]:
            problems.append(f"line {lines[i]}, column {cols['volume']!r}: volume {values['volume'].iloc[i]:g} is negative")
    below = (values["high"] < values["low"]).to_numpy()
    for i in np.flatnonzero(below)[:_LIMIT]:
        problems.append(
            f"line {lines[i]}, columns {cols['high']!r}/{cols['low']!r}: high {values['high'].iloc[i]:g} "
            f"is below low {values['low'].iloc[i]:g}"
        )
    if ts is not None:
        dup = ts.duplicated(keep="first") & ts.notna()
        if dup.any():
            first_seen = {}
            for i, t in enumerate(ts):
                if pd.isna(t):
                    continue
                if t in first_seen and len(problems) < 3 * _LIMIT:
                    problems.append(f"line {lines[i]}: timestamp {t.tz_convert(IST)} repeats line {first_seen[t]}")
                first_seen.setdefault(t, lines[i])
    if problems:
        shown = sorted(set(problems), key=_line_of)[:_LIMIT]
        more = len(set(problems)) - len(shown)
        raise DataValidationError(
            f"{path.name}: refused, nothing was written ({len(set(problems))} problem(s){f', first {_LIMIT} shown' if more > 0 else ''}):",
            shown,
        )
    frame = pd.DataFrame({k: v.to_numpy() for k, v in values.items()}, index=pd.DatetimeIndex(ts, name="ts"))
    frame = frame.sort_index(kind="stable")
    frame.attrs["source"] = f"csv:{path.name}"
    return frame


def import_csv(
    path: "str | Path",
    symbol: str,
    timeframe: "str | Timeframe",
    *,
    fmt: CsvFormat | None = None,
    store: CandleStore | None = None,
) -> UpsertResult:
    """Read ``path`` (checked as a whole) and upsert it into the store."""
    frame = read_candles_csv(path, fmt)
    store = store or CandleStore()
    result = store.upsert(frame, symbol, timeframe)
    log.info("imported %s into %s %s: %s", path, symbol, timeframe, result)
    return result


# ---------------------------------------------------------------------- helpers


def _line_of(problem: str) -> int:
    match = re.match(r"line (\d+)", problem)
    return int(match.group(1)) if match else 0


def _zone(tz: str) -> str:
    zone = _ZONES.get(str(tz).strip().lower())
    if zone is None:
        raise DataValidationError(f"unknown source time zone {tz!r}: use 'Asia/Kolkata' (or 'IST') or 'UTC'")
    return zone


def _read(path: Path, fmt: CsvFormat) -> pd.DataFrame:
    kwargs: dict = {"dtype": str, "keep_default_na": False, "skip_blank_lines": False, "sep": fmt.delimiter}
    if not fmt.header:
        if not fmt.names:
            raise DataValidationError(
                f"{path.name}: a file without a header needs its column names (names=[...] or --names date,open,high,low,close)"
            )
        kwargs.update(header=None, names=list(fmt.names))
    kwargs["index_col"] = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            raw = pd.read_csv(path, **kwargs)
    except pd.errors.ParserWarning as exc:
        raise DataValidationError(f"{path.name}: {_ragged_line(path, fmt)}; fix that row") from exc
    except pd.errors.EmptyDataError as exc:
        raise DataValidationError(f"{path.name}: the file is empty") from exc
    except (pd.errors.ParserError, csv.Error, UnicodeDecodeError) as exc:
        raise DataValidationError(f"{path.name}: not a readable CSV ({exc}); check the delimiter and quoting") from exc
    raw.columns = [str(c).strip() for c in raw.columns]
    blank = raw.apply(lambda col: col.str.strip() == "").all(axis=1)
    raw = raw[~blank]
    if raw.empty:
        raise DataValidationError(f"{path.name}: no data rows")
    return raw


def _ragged_line(path: Path, fmt: CsvFormat) -> str:
    """Name the first row whose field count differs from the header's (pandas does not)."""
    with open(path, newline="") as fh:
        rows = csv.reader(fh, delimiter=fmt.delimiter)
        width = len(fmt.names) if not fmt.header and fmt.names else None
        for number, row in enumerate(rows, start=1):
            if not row:
                continue
            if width is None:
                width = len(row)
            elif len(row) != width:
                return f"line {number} has {len(row)} fields, the header has {width}"
    return "rows have more fields than the header"


def _resolve_columns(path: Path, available: list[str], fmt: CsvFormat) -> dict[str, str]:
    lower = {c.lower(): c for c in available}
    cols: dict[str, str] = {}
    for key, name in fmt.columns.items():
        if key not in (*_ALIASES, "timestamp", "date", "time"):
            raise DataValidationError(
                f"unknown column role {key!r}: use open, high, low, close, volume, oi, timestamp, date or time"
            )
        if name not in available and name.lower() not in lower:
            raise DataValidationError(
                f"{path.name}: column {name!r} (given for {key}) is not in the file; its columns are: {', '.join(available)}"
            )
        cols[key] = name if name in available else lower[name.lower()]
    for key, aliases in _ALIASES.items():
        if key in cols:
            continue
        found = next((lower[a] for a in aliases if a in lower), None)
        if found:
            cols[key] = found
        elif key in ("open", "high", "low", "close"):
            raise DataValidationError(
                f"{path.name}: missing column for {key}: none of {', '.join(aliases)} found; its columns are: "
                f"{', '.join(available)}. Name it with --col {key}=NAME"
            )
    if not {"timestamp", "date"} & cols.keys():
        if "date" in lower and "time" in lower:
            cols["date"], cols["time"] = lower["date"], lower["time"]
        else:
            found = next((lower[n] for n in (*_TS_NAMES, "date", "time") if n in lower), None)
            if found is None:
                raise DataValidationError(
                    f"{path.name}: no timestamp column: none of timestamp, datetime, date, time found; its columns "
                    f"are: {', '.join(available)}. Name it with --col timestamp=NAME (or --col date=... --col time=...)"
                )
            cols["timestamp"] = found
    if "date" in cols and "time" not in cols and "time" in lower and "timestamp" not in cols:
        cols["time"] = lower["time"]
    return cols


def _numbers(col: pd.Series, name: str, lines: np.ndarray, problems: list[str]) -> pd.Series:
    text = col.str.strip()
    values = pd.to_numeric(text.str.replace(",", "", regex=False), errors="coerce")
    bad = values.isna().to_numpy()
    for i in np.flatnonzero(bad)[:_LIMIT]:
        shown = text.iloc[i]
        what = "is empty" if shown == "" else f"{shown!r} is not a number"
        problems.append(f"line {lines[i]}, column {name!r}: {what}")
    return values.astype("float64")


def _timestamps(
    raw: pd.DataFrame, cols: dict[str, str], fmt: CsvFormat, zone: str, lines: np.ndarray, problems: list[str]
) -> pd.Series | None:
    if "timestamp" in cols:
        name = cols["timestamp"]
        text = raw[name].str.strip()
    else:
        name = cols["date"] + ("+" + cols["time"] if "time" in cols else "")
        text = raw[cols["date"]].str.strip()
        if "time" in cols:
            text = text + " " + raw[cols["time"]].str.strip()
    parsed, hint = _parse_times(text, fmt, zone, has_time_col="time" in cols)
    bad = parsed.isna().to_numpy()
    for i in np.flatnonzero(bad)[:_LIMIT]:
        shown = text.iloc[i]
        what = "is empty" if shown.strip() == "" else f"cannot read {shown!r} as a time ({hint})"
        problems.append(f"line {lines[i]}, column {name!r}: {what}")
    return parsed


def _parse_times(text: pd.Series, fmt: CsvFormat, zone: str, *, has_time_col: bool) -> tuple[pd.Series, str]:
    kind = fmt.format
    sample = text[text != ""]
    first = sample.iloc[0] if len(sample) else ""
    if kind == "auto" and re.fullmatch(r"\d{9,13}(\.\d+)?", first) and not has_time_col:
        kind = "epoch_ms" if len(first.split(".")[0]) >= 12 else "epoch"
    if kind in ("epoch", "epoch_ms"):
        unit = "ms" if kind == "epoch_ms" else "s"
        nums = pd.to_numeric(text, errors="coerce")
        return pd.Series(pd.to_datetime(nums, unit=unit, utc=True, errors="coerce"), index=text.index), f"epoch {unit}, UTC"
    if "%" in kind:
        pattern = kind
        if has_time_col and fmt.time_format:
            pattern = f"{kind} {fmt.time_format}"
        elif has_time_col:
            return _parse_with_time_guess(text, kind, zone)
        parsed = pd.to_datetime(text, format=pattern, errors="coerce", utc=False)
        return _localize(parsed, text, zone), f"format {pattern}"
    # auto / iso
    if re.fullmatch(r"\d{8}( .*)?", first):
        date_part = "%Y%m%d"
        if has_time_col:
            return _parse_with_time_guess(text, date_part, zone, time_format=fmt.time_format)
        parsed = pd.to_datetime(text, format=date_part, errors="coerce")
        return _localize(parsed, text, zone), "format %Y%m%d"
    iso = re.fullmatch(r"\d{4}-\d{2}-\d{2}([ T].*)?", first) is not None
    parsed = pd.to_datetime(text, errors="coerce", utc=False, dayfirst=not iso, format="ISO8601" if iso else None)
    return _localize(parsed, text, zone), "ISO 8601, e.g. 2024-01-31 09:15" if iso else "day-first date"


def _parse_with_time_guess(text: pd.Series, date_format: str, zone: str, time_format: str | None = None) -> tuple[pd.Series, str]:
    """Date + time columns: try HH:MM:SS, then HH:MM (or the given time format)."""
    options = [time_format] if time_format else ["%H:%M:%S", "%H:%M"]
    best = None
    for tfmt in options:
        parsed = pd.to_datetime(text, format=f"{date_format} {tfmt}", errors="coerce")
        if best is None or parsed.notna().sum() > best[0].notna().sum():
            best = (parsed, f"format {date_format} {tfmt}")
    return _localize(best[0], text, zone), best[1]


def _localize(parsed: pd.Series, text: pd.Series, zone: str) -> pd.Series:
    """Naive times are in ``zone``; times that carried an offset are converted to UTC."""
    if getattr(parsed.dt, "tz", None) is not None:
        return parsed.dt.tz_convert("UTC")
    if parsed.dtype == object:  # mixed offsets: let pandas normalise to UTC
        return pd.to_datetime(text, errors="coerce", utc=True)
    try:
        return parsed.dt.tz_localize(zone).dt.tz_convert("UTC")
    except (ValueError, TypeError):  # pragma: no cover - IST and UTC have no DST gaps
        return pd.Series(pd.NaT, index=parsed.index)

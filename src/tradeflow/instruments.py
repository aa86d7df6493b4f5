"""Instrument masters: read Dhan and Definedge files, look instruments up, cache a file per day.

Both brokers publish a master of every contract each morning. This module turns either into
our :class:`~tradeflow.brokers.base.Instrument` records, so a strategy names ``NIFTY`` or
``RELIANCE`` and each adapter finds its own id in ``Instrument.broker_ids``.

Symbols are ours, not a broker's, so one contract gets one symbol whichever master it came
from (and masters of two brokers merge): equities and indices keep the exchange symbol
(``RELIANCE``, ``NIFTY``); futures are ``<UNDERLYING><DDMONYY>FUT`` and options
``<UNDERLYING><DDMONYY><STRIKE><CE|PE>`` (``NIFTY26DEC24FUT``, ``NIFTY26DEC2424000CE``,
``IDEA26JUN268.25CE``) because Dhan's own option symbols do not name the expiry day and
repeat across weekly expiries. The broker's own description stays searchable as ``name``.

Units: tick sizes come out in rupees. Dhan stores equity and derivative ticks in paise
(``5`` = 0.05) but index ticks in rupees (``0.05``) in the same file, and Definedge stores
ticks in units of ``10**-price_precision`` rupees; the unit of each (exchange, segment) group
is checked against known instruments (SBIN, RELIANCE, NIFTY, ...) before it is trusted.

Security ids repeat across segments (Dhan id 13 is both the NIFTY index and ABB's share), so
:meth:`InstrumentMaster.by_broker_id` takes the segment when an id is ambiguous.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import gc
import io
import logging
import math
import os
import re
import tempfile
import zipfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Callable, Literal
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from .brokers.base import Instrument, InstrumentKind, OptionType, Segment
from .config import broker_settings, settings
from .errors import ConfigError, TradeflowError

__all__ = [
    "BROKERS",
    "InstrumentMaster",
    "parse_dhan_master",
    "parse_definedge_master",
    "load_master",
    "InstrumentError",
    "UnknownInstrument",
    "AmbiguousInstrument",
    "MasterFormatError",
    "MasterUnavailable",
]

log = logging.getLogger(__name__)

BROKERS: tuple[str, ...] = ("dhan", "definedge")
"""Brokers whose masters :func:`load_master` can fetch."""


# ---------------------------------------------------------------------- errors


class InstrumentError(TradeflowError):
    """An instrument lookup or an instrument master went wrong."""


class UnknownInstrument(InstrumentError, LookupError):
    """No instrument matches; ``suggestions`` holds close symbols (maybe empty)."""

    def __init__(self, message: str, suggestions: Sequence[str] = ()) -> None:
        self.suggestions = list(suggestions)
        if self.suggestions:
            message = f"{message}; did you mean {', '.join(self.suggestions)}?"
        super().__init__(message)


class AmbiguousInstrument(InstrumentError, LookupError):
    """Several instruments match (same symbol or id in two segments); ``candidates`` lists them."""

    def __init__(self, message: str, candidates: Sequence[Instrument] = ()) -> None:
        self.candidates = list(candidates)
        super().__init__(message)


class MasterFormatError(InstrumentError, ValueError):
    """A master file is not in a format we can read (missing columns, wrong units, bad zip)."""


class MasterUnavailable(InstrumentError):
    """No master could be downloaded and none is cached."""


# ---------------------------------------------------------------------- shared parsing helpers

_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_OPTION_KINDS = frozenset({InstrumentKind.OPTIDX, InstrumentKind.OPTSTK})
_FUTURE_KINDS = frozenset({InstrumentKind.FUTIDX, InstrumentKind.FUTSTK})
_DERIVATIVE_KINDS = _OPTION_KINDS | _FUTURE_KINDS
_KINDS = {k.value: k for k in (InstrumentKind.FUTIDX, InstrumentKind.FUTSTK, InstrumentKind.OPTIDX, InstrumentKind.OPTSTK)}
_OPTION_TYPES = {"CE": OptionType.CE, "PE": OptionType.PE}

# Known instruments whose tick in rupees lies in [0.01, 1): large caps priced well under
# 10,000 rupees and the main indices. They decide the unit of a file's tick column.
_TICK_ANCHORS = frozenset({
    "SBIN", "RELIANCE", "INFY", "TCS", "HDFCBANK", "ICICIBANK", "ITC",
    "NIFTY", "BANKNIFTY", "FINNIFTY", "SENSEX",
})
_MIN_TICK, _MAX_TICK = 0.01, 100.0  # rupees: NSE/BSE cash and F&O ticks lie in this range
_FALLBACK_INDEX_TICK = 0.05  # indices are never traded; a zero tick in the master is replaced

_ISO_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d", "%Y-%m-%dT%H:%M:%S")
_DHAN_DATE_FORMATS = _ISO_FORMATS + ("%d/%m/%y", "%d/%m/%Y", "%d-%m-%Y", "%d-%b-%Y", "%d%b%Y")
_DEFINEDGE_DATE_FORMATS = ("%d%m%Y",) + _ISO_FORMATS
_NO_DATE = frozenset({"", "0", "NA", "NAN", "NONE", "NULL", "-1", "-"})
_SENTINEL_BEFORE = dt.date(1990, 1, 1)  # 0001-01-01 (Dhan) and 01011980 (Definedge) mean "none"
_LOG_EXAMPLES = 5


def _parse_date(text: str, formats: Sequence[str]) -> dt.date | None:
    """A date, or None for the masters' "no expiry" sentinels; ValueError when unreadable."""
    s = text.strip()
    if s.upper() in _NO_DATE:
        return None
    for fmt in formats:
        try:
            day = dt.datetime.strptime(s, fmt).date()
        except ValueError:
            continue
        return None if day < _SENTINEL_BEFORE else day
    raise ValueError(f"unreadable date {text!r}")


_BAD = object()  # marks an unreadable date (None means "no expiry")


def _dates(values: pd.Series, formats: Sequence[str]) -> list[object]:
    """Parse a column of dates once per distinct value (a master has few expiries)."""
    parsed: dict[str, object] = {}
    for value in pd.unique(values):
        try:
            parsed[value] = _parse_date(value, formats)
        except ValueError:
            parsed[value] = _BAD
    return [parsed[v] for v in values.tolist()]


def _strike_text(strike: float) -> str:
    """24000.0 -> '24000', 8.25 -> '8.25' (for symbols)."""
    if strike == int(strike):
        return str(int(strike))
    return f"{strike:.4f}".rstrip("0").rstrip(".")


def _to_float(values: pd.Series) -> np.ndarray:
    return pd.to_numeric(values, errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def _choose_tick_scale(raw: np.ndarray, small_unit: np.ndarray, anchors: np.ndarray, label: str) -> tuple[np.ndarray, str]:
    """Convert one group's raw ticks to rupees, deciding whether they are in small units.

    ``small_unit`` is the divisor if the column is in small units (100 for paise). Known
    instruments decide: their rupee tick is in [0.01, 1), so a raw 5 means paise and a raw
    0.05 means rupees. Without any, whole-number ticks with a median of at least 1 are read
    as small units. Known instruments that fit neither reading stop the parse.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = raw / small_unit
    pick = anchors & (raw > 0)
    if pick.any():
        a_raw, a_scaled = raw[pick], scaled[pick]
        if np.all((a_scaled >= _MIN_TICK) & (a_scaled < 1.0)):
            return scaled, f"small units (known instruments: raw {_fmt_values(a_raw)} -> {_fmt_values(a_scaled)} rupees)"
        if np.all((a_raw >= _MIN_TICK) & (a_raw < 1.0)):
            return raw.copy(), f"rupees (known instruments: {_fmt_values(a_raw)})"
        raise MasterFormatError(
            f"{label}: cannot tell the unit of the tick-size column; known instruments have raw ticks "
            f"{_fmt_values(a_raw)}, which are neither paise-like nor rupees: check the file against the broker's "
            "documentation before trading with it"
        )
    positive = raw[np.isfinite(raw) & (raw > 0)]
    if positive.size == 0:
        return raw.copy(), "rupees (no positive ticks)"
    whole = bool(np.all(np.abs(positive - np.round(positive)) < 1e-9))
    if whole and float(np.median(positive)) >= 1.0:
        return scaled, "small units (no known instrument; whole-number ticks)"
    return raw.copy(), "rupees (no known instrument; fractional ticks)"


def _fmt_values(values: np.ndarray) -> str:
    uniq = sorted({float(v) for v in values})
    return "/".join(f"{v:g}" for v in uniq[:6])


class _Skips:
    """Rows left out: counted per reason, a few examples kept for the log."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.bad: Counter[str] = Counter()
        self.examples: list[str] = []
        self.unsupported: Counter[str] = Counter()

    def add(self, reason: str, where: str) -> None:
        self.bad[reason] += 1
        if len(self.examples) < _LOG_EXAMPLES:
            self.examples.append(f"{where}: {reason}")

    def report(self, total: int, kept: int) -> None:
        if self.unsupported:
            parts = ", ".join(f"{k} {n}" for k, n in self.unsupported.most_common())
            log.info("%s: left out %d rows of segments or types tradeflow does not trade (%s)",
                     self.source, sum(self.unsupported.values()), parts)
        if self.bad:
            n = sum(self.bad.values())
            reasons = ", ".join(f"{k} ({c})" for k, c in self.bad.most_common())
            log.warning("%s: skipped %d of %d rows that could not be read: %s; e.g. %s",
                        self.source, n, total, reasons, "; ".join(self.examples))
        log.debug("%s: %d instruments from %d rows", self.source, kept, total)


def _read_csv(source: "str | os.PathLike[str] | io.IOBase", *, header: bool, label: str,
              usecols: Callable[[str], bool] | None = None) -> pd.DataFrame:
    try:
        return pd.read_csv(
            source, dtype=str, keep_default_na=False, na_filter=False, header=0 if header else None,
            usecols=usecols, skipinitialspace=True, encoding_errors="replace",
        )
    except FileNotFoundError:
        raise
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise MasterFormatError(f"{label}: not a readable CSV ({exc})") from exc


def _label(source: object) -> str:
    return str(source) if isinstance(source, (str, os.PathLike)) else "master frame"


def _check_columns(frame: pd.DataFrame, required: Sequence[str], label: str, what: str) -> None:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise MasterFormatError(
            f"{label}: not a {what}: missing column(s) {', '.join(missing)} "
            f"(found: {', '.join(map(str, frame.columns[:20]))}{' ...' if len(frame.columns) > 20 else ''})"
        )


def _strip(frame: pd.DataFrame, col: str | None) -> pd.Series:
    if col is None or col not in frame.columns:
        return pd.Series([""] * len(frame), index=frame.index, dtype=object)
    values = frame[col]
    if values.isna().any():  # a frame read without keep_default_na=False: NaN means empty
        values = values.astype(object).where(values.notna(), "")
    return values.astype(str).str.strip()


@dataclasses.dataclass
class _Rows:
    """Broker rows in one shape, column by column, before the instruments are built."""

    broker: str
    source: str
    segment: list[Segment | None]
    segment_label: list[str]
    ident: list[str]
    inst: list[str]  # the broker's instrument type, upper case
    symbol: list[str]  # exchange symbol for cash rows, the broker's symbol for derivatives
    underlying: list[str]
    name: list[str]
    series: list[str]
    lot: np.ndarray
    tick: np.ndarray  # rupees
    expiry: list[object]
    strike: np.ndarray
    option: list[str]
    upper: np.ndarray
    lower: np.ndarray
    extra_key: str = ""  # a second broker id, e.g. "definedge_symbol" (orders go by trading symbol)
    extra: list[str] | None = None


def _cash_symbols(rows: _Rows, kinds: list[InstrumentKind | None]) -> list[str]:
    """Exchange symbols for cash rows, unique within a segment.

    A symbol listed twice in a segment (an EQ share and its bond, warrant or partly paid
    share) keeps the bare name for the EQ series and gets ``-SERIES`` for the others, as the
    exchanges' own trading symbols do; anything still repeated (two indices named alike)
    gets ``-<broker id>`` after the first.
    """
    cash = (InstrumentKind.EQUITY, InstrumentKind.INDEX)
    counts = Counter((rows.segment[i], rows.symbol[i]) for i, k in enumerate(kinds) if k in cash)
    out = list(rows.symbol)
    if all(n == 1 for n in counts.values()):
        return out
    for i, k in enumerate(kinds):
        if k is InstrumentKind.EQUITY and counts[(rows.segment[i], rows.symbol[i])] > 1:
            series = rows.series[i].upper()
            if series and series != "EQ":
                out[i] = f"{rows.symbol[i]}-{series}"
    seen: set[tuple[Segment | None, str]] = set()
    for i, k in enumerate(kinds):
        if k in cash:
            key = (rows.segment[i], out[i])
            if key in seen:
                out[i] = f"{out[i]}-{rows.ident[i]}"
            seen.add(key)
    return out


class _NoGc:
    """Pause the cyclic garbage collector while building many small objects (it otherwise
    rescans them again and again, doubling the time to build a 100k-row master)."""

    def __enter__(self) -> None:
        self._was = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc: object) -> None:
        if self._was:
            gc.enable()


def _build(rows: _Rows, kinds: list[InstrumentKind | None], skips: _Skips) -> list[Instrument]:
    """Instruments from rows whose segment and kind are known; bad rows go to ``skips``."""
    symbols = _cash_symbols(rows, kinds)
    lot, tick, strike = rows.lot, rows.tick, rows.strike
    with np.errstate(invalid="ignore"):
        lot_ok = np.isfinite(lot) & (lot >= 1) & (lot == np.floor(lot))
        tick_ok = np.isfinite(tick) & (tick >= _MIN_TICK - 1e-12) & (tick <= _MAX_TICK)
        strike_ok = np.isfinite(strike) & (strike > 0)
        circuit_ok = np.isfinite(rows.upper) & np.isfinite(rows.lower) & (rows.lower > 0) & (rows.upper >= rows.lower)
    lots = np.where(lot_ok, lot, 1).astype(np.int64).tolist()
    ticks = np.round(np.where(tick_ok, tick, _FALLBACK_INDEX_TICK), 6).tolist()
    strikes = strike.tolist()
    uppers, lowers = rows.upper.tolist(), rows.lower.tolist()
    lot_ok, tick_ok, strike_ok, circuit_ok = lot_ok.tolist(), tick_ok.tolist(), strike_ok.tolist(), circuit_ok.tolist()
    dates: dict[dt.date, str] = {}
    broker = rows.broker
    extra_key, extra = rows.extra_key, rows.extra
    out: list[Instrument] = []
    append = out.append
    with _NoGc():
        for i, kind in enumerate(kinds):
            segment = rows.segment[i]
            if segment is None or kind is None:
                continue
            ident = rows.ident[i]
            ids = {broker: ident}
            if extra_key and extra is not None and extra[i]:
                ids[extra_key] = extra[i]
            problem = ""
            if not ident:
                problem = "no security id"
            elif not lot_ok[i]:
                problem = "lot size not a positive whole number"
            elif not tick_ok[i] and kind is not InstrumentKind.INDEX:
                problem = "tick size missing or out of range"
            expiry = rows.expiry[i]
            if not problem and expiry is _BAD:
                problem = "unreadable expiry"
            upper, lower = (uppers[i], lowers[i]) if circuit_ok[i] else (None, None)
            if not problem and kind in _DERIVATIVE_KINDS:
                underlying = rows.underlying[i]
                opt: OptionType | None = None
                strike_value: float | None = None
                if not underlying:
                    problem = "derivative without an underlying"
                elif expiry is None:
                    problem = "derivative without an expiry"
                elif kind in _OPTION_KINDS:
                    opt = _OPTION_TYPES.get(rows.option[i])
                    if opt is None:
                        problem = f"option type {rows.option[i]!r} is not CE or PE"
                    elif not strike_ok[i]:
                        problem = "option without a positive strike"
                    else:
                        strike_value = strikes[i]
                if not problem:
                    day = dates.get(expiry)
                    if day is None:
                        day = dates[expiry] = f"{expiry.day:02d}{_MONTHS[expiry.month - 1]}{expiry.year % 100:02d}"
                    if opt is None:
                        symbol = f"{underlying}{day}FUT"
                    else:
                        symbol = f"{underlying}{day}{_strike_text(strike_value)}{opt.value}"
                    append(Instrument(
                        symbol=symbol, segment=segment, kind=kind, lot_size=lots[i], tick_size=ticks[i],
                        name=rows.name[i] or rows.symbol[i], underlying=underlying, expiry=expiry,
                        strike=strike_value, option_type=opt, broker_ids=ids,
                        upper_circuit=upper, lower_circuit=lower,
                    ))
                    continue
            if problem:
                skips.add(problem, f"{broker} id {ident or '?'} ({rows.symbol[i] or rows.name[i] or '?'})")
                continue
            symbol = symbols[i]
            if not symbol:
                skips.add("no trading symbol", f"{broker} id {ident}")
                continue
            append(Instrument(
                symbol=symbol, segment=segment, kind=kind, lot_size=lots[i], tick_size=ticks[i], name=rows.name[i],
                broker_ids=ids, upper_circuit=upper, lower_circuit=lower,
            ))
    return out


def _convert_ticks(raw: np.ndarray, small_unit: np.ndarray, group: list[str], anchor: np.ndarray,
                   source: str) -> np.ndarray:
    """Rupee ticks, deciding the unit separately for each (exchange, segment) group."""
    out = np.full(raw.shape, np.nan)
    keys = np.asarray(group, dtype=object)
    for key in pd.unique(keys):
        mask = keys == key
        scaled, basis = _choose_tick_scale(raw[mask], small_unit[mask], anchor[mask], f"{source} [{key}]")
        log.info("%s: %s tick sizes read as %s", source, key, basis)
        out[mask] = scaled
    return out


# ---------------------------------------------------------------------- Dhan

_DHAN_SEGMENTS = {
    ("NSE", "E"): Segment.NSE_EQ, ("BSE", "E"): Segment.BSE_EQ,
    ("NSE", "I"): Segment.NSE_IDX, ("BSE", "I"): Segment.BSE_IDX,
    ("NSE", "D"): Segment.NSE_FNO, ("BSE", "D"): Segment.BSE_FNO,
}
_DHAN_COMPACT = ("SEM_EXM_EXCH_ID", "SEM_SEGMENT", "SEM_SMST_SECURITY_ID", "SEM_INSTRUMENT_NAME",
                 "SEM_TRADING_SYMBOL", "SEM_LOT_UNITS", "SEM_EXPIRY_DATE", "SEM_STRIKE_PRICE",
                 "SEM_OPTION_TYPE", "SEM_TICK_SIZE")
_DHAN_COMPACT_OPTIONAL = ("SEM_CUSTOM_SYMBOL", "SM_SYMBOL_NAME", "SEM_SERIES")
_DHAN_DETAILED = ("EXCH_ID", "SEGMENT", "SECURITY_ID", "INSTRUMENT", "UNDERLYING_SYMBOL", "SYMBOL_NAME",
                  "LOT_SIZE", "SM_EXPIRY_DATE", "STRIKE_PRICE", "OPTION_TYPE", "TICK_SIZE")
_DHAN_DETAILED_OPTIONAL = ("DISPLAY_NAME", "SERIES", "SM_UPPER_LIMIT", "SM_LOWER_LIMIT")
_DHAN_USED = frozenset(_DHAN_COMPACT + _DHAN_COMPACT_OPTIONAL + _DHAN_DETAILED + _DHAN_DETAILED_OPTIONAL)
_DHAN_UNDERLYING = re.compile(r"^(?P<u>.+?)-[A-Za-z]{3}\d{4}-")  # NIFTY-Jun2026-27650-CE, BAJAJ-AUTO-Jul2025-FUT


def parse_dhan_master(source: "str | os.PathLike[str] | pd.DataFrame") -> list[Instrument]:
    """Instruments from a Dhan scrip master, compact (``SEM_*`` columns) or detailed.

    ``source`` is a CSV path or a frame read with ``dtype=str``. NSE and BSE equities,
    indices and F&O are kept (currency and commodity rows are left out, logged at INFO);
    rows that cannot be read are skipped with one warning giving the count and examples.
    Tick sizes are converted to rupees (see the module docstring); the detailed master's
    ``SM_UPPER_LIMIT``/``SM_LOWER_LIMIT`` become the circuit limits.

    Raises ``MasterFormatError`` naming the missing columns when the file is neither format.
    """
    label = _label(source)
    if isinstance(source, pd.DataFrame):
        frame = source.copy()
        frame.columns = [str(c).strip() for c in frame.columns]
    else:
        frame = _read_csv(source, header=True, label=label, usecols=lambda c: str(c).strip() in _DHAN_USED)
        frame.columns = [str(c).strip() for c in frame.columns]
    cols = set(frame.columns)
    if any(str(c).startswith("SEM_") for c in cols):
        _check_columns(frame, _DHAN_COMPACT, label, "Dhan compact master")
        rows = _dhan_compact_rows(frame, label)
    elif cols & {"SECURITY_ID", "EXCH_ID", "SEGMENT"}:
        _check_columns(frame, _DHAN_DETAILED, label, "Dhan detailed master")
        rows = _dhan_detailed_rows(frame, label)
    else:
        raise MasterFormatError(
            f"{label}: not a Dhan master: expected the compact columns ({', '.join(_DHAN_COMPACT)}) "
            f"or the detailed ones ({', '.join(_DHAN_DETAILED)})"
        )
    return _finish_dhan(rows, label)


def _dhan_compact_rows(frame: pd.DataFrame, label: str) -> _Rows:
    symbol = _strip(frame, "SEM_TRADING_SYMBOL")
    custom = _strip(frame, "SEM_CUSTOM_SYMBOL")
    # The compact master has no underlying column: NIFTY-Jun2026-27650-CE names it, else
    # the first word of the custom symbol (NIFTY 30 JUN 27650 CALL).
    underlying = pd.Series("", index=frame.index, dtype=object)
    deriv = (_strip(frame, "SEM_SEGMENT").str.upper() == "D").to_numpy()
    if deriv.any():
        parsed = symbol[deriv].str.extract(_DHAN_UNDERLYING)["u"].fillna("")
        first = custom[deriv].str.split(" ", n=1).str[0].fillna("")
        underlying[deriv] = parsed.where(parsed != "", first).to_numpy(dtype=object)
    name = custom.where(custom != "", _strip(frame, "SM_SYMBOL_NAME"))
    expiry = _dates(_strip(frame, "SEM_EXPIRY_DATE"), _DHAN_DATE_FORMATS)
    return _dhan_rows(frame, label, exch="SEM_EXM_EXCH_ID", seg="SEM_SEGMENT", ident="SEM_SMST_SECURITY_ID",
                      inst="SEM_INSTRUMENT_NAME", symbol=symbol, underlying=underlying, name=name,
                      series="SEM_SERIES", lot="SEM_LOT_UNITS", tick="SEM_TICK_SIZE", expiry=expiry,
                      strike="SEM_STRIKE_PRICE", option="SEM_OPTION_TYPE", upper=None, lower=None)


def _dhan_detailed_rows(frame: pd.DataFrame, label: str) -> _Rows:
    under = _strip(frame, "UNDERLYING_SYMBOL")
    symbol_name = _strip(frame, "SYMBOL_NAME")
    seg = _strip(frame, "SEGMENT").str.upper()
    cash = seg.isin(["E", "I"])
    # Cash rows: the exchange symbol is UNDERLYING_SYMBOL. Derivatives: SYMBOL_NAME is
    # Dhan's trading symbol (NIFTY-Jun2026-FUT) and UNDERLYING_SYMBOL the underlying.
    symbol = under.where(cash, symbol_name)
    symbol = symbol.where(symbol != "", symbol_name)
    underlying = under.astype(object)
    missing = ((under == "") & (seg == "D")).to_numpy()
    if missing.any():
        underlying[missing] = symbol_name[missing].str.extract(_DHAN_UNDERLYING)["u"].fillna("").to_numpy(dtype=object)
    display = _strip(frame, "DISPLAY_NAME")
    name = display.where(display != "", symbol_name)
    expiry = _dates(_strip(frame, "SM_EXPIRY_DATE"), _DHAN_DATE_FORMATS)
    return _dhan_rows(frame, label, exch="EXCH_ID", seg="SEGMENT", ident="SECURITY_ID", inst="INSTRUMENT",
                      symbol=symbol, underlying=underlying, name=name, series="SERIES", lot="LOT_SIZE",
                      tick="TICK_SIZE", expiry=expiry, strike="STRIKE_PRICE", option="OPTION_TYPE",
                      upper="SM_UPPER_LIMIT", lower="SM_LOWER_LIMIT")


def _dhan_rows(frame: pd.DataFrame, label: str, *, exch: str, seg: str, ident: str, inst: str, symbol: pd.Series,
               underlying: pd.Series, name: pd.Series, series: str, lot: str, tick: str, expiry: list[object],
               strike: str, option: str, upper: str | None, lower: str | None) -> _Rows:
    ex = _strip(frame, exch).str.upper().tolist()
    sg = _strip(frame, seg).str.upper().tolist()
    n = len(frame)
    nan = np.full(n, np.nan)
    ident_col = _strip(frame, ident)
    # A float-typed id column ("13.0") still names security 13.
    ident_col = ident_col.str.replace(r"\.0+$", "", regex=True)
    return _Rows(
        broker="dhan", source=f"dhan master {label}",
        segment=[_DHAN_SEGMENTS.get((e, s)) for e, s in zip(ex, sg)],
        segment_label=[f"{e} {s}" for e, s in zip(ex, sg)],
        ident=ident_col.tolist(), inst=_strip(frame, inst).str.upper().tolist(),
        symbol=symbol.tolist(), underlying=underlying.tolist(), name=name.tolist(),
        series=_strip(frame, series).tolist(), lot=_to_float(_strip(frame, lot)),
        tick=_to_float(_strip(frame, tick)), expiry=expiry, strike=_to_float(_strip(frame, strike)),
        option=_strip(frame, option).str.upper().tolist(),
        upper=_to_float(_strip(frame, upper)) if upper and upper in frame.columns else nan,
        lower=_to_float(_strip(frame, lower)) if lower and lower in frame.columns else nan,
    )


def _dhan_kind(segment: Segment | None, inst: str) -> InstrumentKind | None:
    if segment is None:
        return None
    if segment.is_index:
        return InstrumentKind.INDEX if inst == "INDEX" else None
    if segment.is_derivative:
        return _KINDS.get(inst)
    return InstrumentKind.EQUITY if inst == "EQUITY" else None


def _finish_dhan(rows: _Rows, label: str) -> list[Instrument]:
    skips = _Skips(rows.source)
    kinds: list[InstrumentKind | None] = []
    known: dict[tuple[Segment | None, str], InstrumentKind | None] = {}
    for i, segment in enumerate(rows.segment):
        key = (segment, rows.inst[i])
        if key not in known:
            known[key] = _dhan_kind(segment, rows.inst[i])
        kind = known[key]
        if segment is None:
            skips.unsupported[rows.segment_label[i]] += 1
        elif kind is None:
            skips.unsupported[f"{rows.segment_label[i]} {rows.inst[i] or '(no type)'}"] += 1
        kinds.append(kind)
    anchor = np.array([
        (rows.underlying[i] if k in _DERIVATIVE_KINDS else rows.symbol[i]).upper() in _TICK_ANCHORS
        for i, k in enumerate(kinds)
    ], dtype=bool)
    keep = np.array([k is not None for k in kinds], dtype=bool)
    tick = np.full(len(kinds), np.nan)
    if keep.any():
        idx = np.flatnonzero(keep)
        tick[idx] = _convert_ticks(rows.tick[idx], np.full(idx.size, 100.0),
                                   [rows.segment_label[i] for i in idx], anchor[idx], rows.source)
    rows.tick = tick
    out = _build(rows, kinds, skips)
    skips.report(len(kinds), len(out))
    return out


# ---------------------------------------------------------------------- Definedge

_DEFINEDGE_COLUMNS = ("SEGMENT", "TOKEN", "SYMBOL", "TRADINGSYM", "INSTRUMENT", "EXPIRY", "TICKSIZE", "LOTSIZE",
                      "OPTIONTYPE", "STRIKE", "PRICEPREC", "MULTIPLIER", "ISIN", "PRICEMULT", "COMPANY")
_DEFINEDGE_CASH = {"NSE": (Segment.NSE_EQ, Segment.NSE_IDX), "BSE": (Segment.BSE_EQ, Segment.BSE_IDX)}
_DEFINEDGE_FNO = {"NFO": Segment.NSE_FNO, "BFO": Segment.BSE_FNO}
_DEFINEDGE_INDEX_TYPES = frozenset({"IDX", "INDEX"})
# Definedge names indices as the exchange does ("Nifty 50"); the F&O underlyings and Dhan use
# the short names, so the indices that have options are renamed to match.
_DEFINEDGE_INDEX_ALIASES = {
    "NIFTY 50": "NIFTY", "NIFTY BANK": "BANKNIFTY", "NIFTY FIN SERVICE": "FINNIFTY",
    "NIFTY MID SELECT": "MIDCPNIFTY", "NIFTY NEXT 50": "NIFTYNXT50", "INDIA VIX": "INDIA VIX",
    "SENSEX": "SENSEX", "BANKEX": "BANKEX", "SENSEX50": "SENSEX50",
}
_DEFINEDGE_MEMBER = "allmaster.csv"


def parse_definedge_master(source: "str | os.PathLike[str] | pd.DataFrame") -> list[Instrument]:
    """Instruments from a Definedge master: the headerless CSV (15 columns, or 14 without
    ``COMPANY``) or the zip holding ``allmaster.csv``.

    Strikes are ``raw / (multiplier * 10**price_precision)`` without truncation (the SDK's
    ``int()`` turns 83.25 into 83); ticks are ``raw / 10**price_precision`` rupees, checked
    against known instruments. NSE/BSE cash and NFO/BFO rows are kept; others are left out.
    ``broker_ids`` holds the token (``"definedge"``) and Definedge's own trading symbol
    (``"definedge_symbol"``, e.g. ``SBIN-EQ``), which its order API takes.
    """
    label = _label(source)
    if isinstance(source, pd.DataFrame):
        frame = source.copy()
    else:
        path = Path(source)
        if zipfile.is_zipfile(path):
            frame = _read_definedge_zip(path, label)
        else:
            frame = _read_csv(path, header=False, label=label)
    frame = _definedge_frame(frame, label)
    return _finish_definedge(frame, label)


def _read_definedge_zip(path: Path, label: str) -> pd.DataFrame:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            member = next((n for n in names if n.rsplit("/", 1)[-1].lower() == _DEFINEDGE_MEMBER), None)
            if member is None:
                raise MasterFormatError(
                    f"{label}: the zip has no {_DEFINEDGE_MEMBER} (members: {', '.join(names[:10]) or 'none'})"
                )
            with archive.open(member) as fh:
                return _read_csv(io.TextIOWrapper(fh, encoding="utf-8", errors="replace"), header=False, label=label)
    except zipfile.BadZipFile as exc:
        raise MasterFormatError(f"{label}: not a readable zip ({exc})") from exc


def _definedge_frame(frame: pd.DataFrame, label: str) -> pd.DataFrame:
    ncols = frame.shape[1]
    if set(_DEFINEDGE_COLUMNS[:14]) <= {str(c).strip().upper() for c in frame.columns}:
        frame = frame.rename(columns=lambda c: str(c).strip().upper())
    elif ncols in (14, 15):
        frame = frame.set_axis(list(_DEFINEDGE_COLUMNS[:ncols]), axis=1)
        if len(frame) and str(frame.iloc[0, 0]).strip().upper() == "SEGMENT":
            frame = frame.iloc[1:]  # a header row after all
    else:
        raise MasterFormatError(
            f"{label}: not a Definedge master: expected 14 or 15 columns "
            f"({', '.join(_DEFINEDGE_COLUMNS)}), found {ncols}"
        )
    if "COMPANY" not in frame.columns:
        frame = frame.assign(COMPANY="")
    return frame


def _finish_definedge(frame: pd.DataFrame, label: str) -> list[Instrument]:
    source = f"definedge master {label}"
    seg_col = _strip(frame, "SEGMENT").str.upper().tolist()
    inst_col = _strip(frame, "INSTRUMENT").str.upper().tolist()
    symbol_col = _strip(frame, "SYMBOL").tolist()
    tsym_col = _strip(frame, "TRADINGSYM").tolist()
    company = _strip(frame, "COMPANY").tolist()
    prec = _to_float(_strip(frame, "PRICEPREC"))
    mult = _to_float(_strip(frame, "MULTIPLIER"))
    raw_strike = _to_float(_strip(frame, "STRIKE"))
    expiry = _dates(_strip(frame, "EXPIRY"), _DEFINEDGE_DATE_FORMATS)
    n = len(frame)
    skips = _Skips(source)
    segments: list[Segment | None] = []
    kinds: list[InstrumentKind | None] = []
    symbols: list[str] = []
    names: list[str] = []
    underlyings: list[str] = []
    for i in range(n):
        seg, inst = seg_col[i], inst_col[i]
        segment: Segment | None = None
        kind: InstrumentKind | None = None
        sym, name, under = symbol_col[i], company[i] or tsym_col[i], ""
        if seg in _DEFINEDGE_CASH:
            if inst in _DEFINEDGE_INDEX_TYPES:
                segment, kind = _DEFINEDGE_CASH[seg][1], InstrumentKind.INDEX
                sym = _DEFINEDGE_INDEX_ALIASES.get(sym.upper(), sym)
                name = symbol_col[i]
            elif inst:
                segment, kind = _DEFINEDGE_CASH[seg][0], InstrumentKind.EQUITY
        elif seg in _DEFINEDGE_FNO:
            segment, kind = _DEFINEDGE_FNO[seg], _KINDS.get(inst)
            under, name = symbol_col[i], tsym_col[i]
        if segment is None:
            skips.unsupported[seg or "(no segment)"] += 1
        elif kind is None:
            skips.unsupported[f"{seg} {inst or '(no type)'}"] += 1
            segment = None
        segments.append(segment)
        kinds.append(kind)
        symbols.append(sym)
        names.append(name)
        underlyings.append(under)
    with np.errstate(invalid="ignore", over="ignore"):
        power = np.power(10.0, prec)
        strike = raw_strike / (mult * power)
    rows = _Rows(
        broker="definedge", source=source, segment=segments, segment_label=seg_col,
        ident=_strip(frame, "TOKEN").tolist(), inst=inst_col, symbol=symbols, underlying=underlyings,
        name=names, series=inst_col, lot=_to_float(_strip(frame, "LOTSIZE")), tick=np.full(n, np.nan),
        expiry=expiry, strike=strike, option=_strip(frame, "OPTIONTYPE").str.upper().tolist(),
        upper=np.full(n, np.nan), lower=np.full(n, np.nan), extra_key="definedge_symbol", extra=tsym_col,
    )
    # Unreadable precision or multiplier: the strike is unknown, so options are skipped.
    bad_scale = ~(np.isfinite(power) & np.isfinite(mult) & (mult > 0))
    rows.strike = np.where(bad_scale, np.nan, strike)
    keep = np.array([k is not None for k in kinds], dtype=bool)
    anchor = np.array([
        (underlyings[i] if k in _DERIVATIVE_KINDS else symbols[i]).upper() in _TICK_ANCHORS
        for i, k in enumerate(kinds)
    ], dtype=bool)
    if keep.any():
        idx = np.flatnonzero(keep)
        raw_tick = _to_float(_strip(frame, "TICKSIZE"))
        groups = [f"{seg_col[i]} {'IDX' if kinds[i] is InstrumentKind.INDEX else ''}".strip() for i in idx]
        rows.tick[idx] = _convert_ticks(raw_tick[idx], power[idx], groups, anchor[idx], source)
    out = _build(rows, kinds, skips)
    skips.report(n, len(out))
    return out


# ---------------------------------------------------------------------- the master

_KIND_ORDER = {
    InstrumentKind.EQUITY: 0, InstrumentKind.INDEX: 1, InstrumentKind.FUTIDX: 2, InstrumentKind.FUTSTK: 2,
    InstrumentKind.OPTIDX: 3, InstrumentKind.OPTSTK: 3,
}
_SEGMENT_ORDER = {s: i for i, s in enumerate(Segment)}
_MERGE_FIELDS = ("kind", "lot_size", "tick_size", "expiry", "strike", "option_type", "underlying")


def _chain_key(inst: Instrument) -> tuple:
    return (inst.expiry or dt.date.min, inst.strike or 0.0, inst.option_type or "", _SEGMENT_ORDER[inst.segment])


def _sort_key(inst: Instrument) -> tuple:
    return (_KIND_ORDER[inst.kind], _SEGMENT_ORDER[inst.segment], inst.expiry or dt.date.min,
            inst.strike or 0.0, inst.option_type or "", len(inst.symbol), inst.symbol)


def _as_segment(segment: "Segment | str | None") -> Segment | None:
    if segment is None or isinstance(segment, Segment):
        return segment
    try:
        return Segment(str(segment).upper())
    except ValueError:
        raise InstrumentError(
            f"unknown segment {segment!r}; use one of {', '.join(s.value for s in Segment)}"
        ) from None


_IST = ZoneInfo("Asia/Kolkata")  # tradeflow.calendar.IST, without importing the exchange calendars


def _ist_today() -> dt.date:
    return dt.datetime.now(_IST).date()


class InstrumentMaster:
    """Every instrument of one broker's master, or of several merged, with lookups.

    Instruments with the same segment and symbol from different brokers become one, holding
    both brokers' ids (a disagreement on lot or tick size is logged, and the first kept).
    Lookups are case-insensitive. Build one with :func:`load_master` or from parsed lists::

        master = InstrumentMaster(parse_dhan_master(p1) + parse_definedge_master(p2))
        master.get("RELIANCE", "NSE_EQ").id_for("dhan")
    """

    def __init__(self, instruments: Iterable[Instrument]) -> None:
        with _NoGc():
            self._index(instruments)

    def _index(self, instruments: Iterable[Instrument]) -> None:
        by_key: dict[tuple[str, str], Instrument] = {}
        dropped = 0
        conflicts: Counter[str] = Counter()
        examples: list[str] = []
        for inst in instruments:
            key = (inst.segment.value, inst.symbol.upper())
            seen = by_key.get(key)
            if seen is None:
                by_key[key] = inst
            elif seen.broker_ids.keys() & inst.broker_ids.keys():
                dropped += 1  # the same broker lists the symbol twice: keep its first row
            else:
                by_key[key] = self._merge(seen, inst, conflicts, examples)
        if dropped:
            log.warning("instrument master: skipped %d rows that repeat a segment and symbol of the same broker "
                        "(kept the first of each)", dropped)
        if conflicts:
            log.warning("instrument master: brokers disagree on %s; kept the first broker's values (e.g. %s). "
                        "An older master is the usual cause: refresh it",
                        ", ".join(f"{f} of {n} instrument(s)" for f, n in conflicts.most_common()), "; ".join(examples))
        self._items: list[Instrument] = list(by_key.values())
        by_symbol: dict[str, list[Instrument]] = defaultdict(list)
        by_id: dict[tuple[str, str], list[Instrument]] = defaultdict(list)
        derivatives: dict[str, list[Instrument]] = defaultdict(list)
        search_rows: list[tuple[str, str, Instrument]] = []
        for (_, sym), inst in by_key.items():
            by_symbol[sym].append(inst)
            for broker, ident in inst.broker_ids.items():
                by_id[(broker, str(ident))].append(inst)
            if inst.underlying:
                derivatives[inst.underlying.upper()].append(inst)
            search_rows.append((sym, inst.name.upper(), inst))
        for chain in derivatives.values():
            chain.sort(key=_chain_key)
        self._by_symbol = dict(by_symbol)
        self._by_id = dict(by_id)
        self._derivatives = dict(derivatives)
        self._search_rows = search_rows

    @staticmethod
    def _merge(first: Instrument, other: Instrument, conflicts: Counter[str], examples: list[str]) -> Instrument:
        """One instrument holding both brokers' ids; differing fields are counted, first kept."""
        for name in _MERGE_FIELDS:
            a, b = getattr(first, name), getattr(other, name)
            if a != b and not (isinstance(a, float) and isinstance(b, float) and math.isclose(a, b)):
                conflicts[name] += 1
                if len(examples) < _LOG_EXAMPLES:
                    examples.append(f"{first.symbol} {first.segment.value} {name}: "
                                    f"{'/'.join(first.broker_ids)} {a}, {'/'.join(other.broker_ids)} {b}")
        return dataclasses.replace(
            first,
            broker_ids={**first.broker_ids, **other.broker_ids},
            name=first.name or other.name,
            upper_circuit=first.upper_circuit if first.upper_circuit is not None else other.upper_circuit,
            lower_circuit=first.lower_circuit if first.lower_circuit is not None else other.lower_circuit,
        )

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Instrument]:
        return iter(self._items)

    def __repr__(self) -> str:
        counts = Counter(i.segment.value for i in self._items)
        parts = ", ".join(f"{s} {n}" for s, n in sorted(counts.items()))
        return f"InstrumentMaster({len(self._items)} instruments{': ' + parts if parts else ''})"

    # ------------------------------------------------------------------ lookups

    def search(self, text: str, limit: int = 20) -> list[Instrument]:
        """Instruments whose symbol or name contains ``text``, best first: exact symbol, exact
        name, symbol prefix, name prefix, then substrings; ties go to equities and indices
        before futures and options, NSE before BSE, then nearer expiry and lower strike."""
        q = text.strip().upper()
        if not q or limit <= 0:
            return []
        ranked: list[tuple[int, Instrument]] = []
        for sym, name, inst in self._search_rows:
            in_sym, in_name = q in sym, q in name
            if not (in_sym or in_name):
                continue
            rank = 6
            if in_sym:
                rank = 0 if sym == q else (2 if sym.startswith(q) else 4)
            if in_name and rank > 1:
                rank = min(rank, 1 if name == q else (3 if name.startswith(q) else 5))
            ranked.append((rank, inst))
        ranked.sort(key=lambda r: (r[0], _sort_key(r[1])))
        return [inst for _, inst in ranked[:limit]]

    def get(self, symbol: str, segment: "Segment | str | None" = None) -> Instrument:
        """The instrument with this symbol (in ``segment`` when given).

        Raises ``UnknownInstrument`` with "did you mean" suggestions, or
        ``AmbiguousInstrument`` when the symbol is listed in several segments (RELIANCE on
        NSE and BSE): pass the segment then, the order goes to that exchange.
        """
        seg = _as_segment(segment)
        found = self._by_symbol.get(symbol.strip().upper(), [])
        if seg is not None:
            found = [i for i in found if i.segment is seg]
        if len(found) == 1:
            return found[0]
        if found:
            found = sorted(found, key=lambda i: _SEGMENT_ORDER[i.segment])
            segs = ", ".join(i.segment.value for i in found)
            raise AmbiguousInstrument(
                f"{symbol} is listed in {segs}: pass the segment, e.g. get({symbol!r}, {found[0].segment.value!r})", found
            )
        where = f" in {seg.value}" if seg else ""
        others = self._by_symbol.get(symbol.strip().upper(), [])
        if seg is not None and others:
            raise UnknownInstrument(
                f"{symbol} is not listed{where}, only in "
                + ", ".join(i.segment.value for i in sorted(others, key=lambda i: _SEGMENT_ORDER[i.segment]))
            )
        raise UnknownInstrument(f"no instrument {symbol!r}{where} in this master", self._suggest(symbol))

    def by_broker_id(self, broker: str, ident: "str | int", segment: "Segment | str | None" = None) -> Instrument:
        """The instrument a broker knows by ``ident`` (Dhan security id, Definedge token).

        Ids repeat across segments (Dhan 13 is the NIFTY index and ABB's share), so pass the
        segment the broker reported with the id when there is more than one match.
        """
        seg = _as_segment(segment)
        text = str(ident).strip()
        found = self._by_id.get((broker, text), [])
        if seg is not None:
            found = [i for i in found if i.segment is seg]
        if len(found) == 1:
            return found[0]
        if found:
            listing = ", ".join(f"{i.symbol} ({i.segment.value})" for i in found)
            raise AmbiguousInstrument(f"{broker} id {text} names {listing}: pass the segment", found)
        brokers = sorted({b for b, _ in self._by_id})
        if broker not in brokers:
            raise UnknownInstrument(
                f"this master has no {broker} ids (it has: {', '.join(brokers) or 'none'})",
                difflib.get_close_matches(broker, brokers, n=3),
            )
        where = f" in {seg.value}" if seg else ""
        raise UnknownInstrument(f"no {broker} instrument with id {text}{where}: refresh the {broker} instrument master")

    def options(self, underlying: str, expiry: "dt.date | str | None" = None, *,
                segment: "Segment | str | None" = None) -> list[Instrument]:
        """Options on ``underlying`` (all expiries, or one), sorted by expiry, strike, CE/PE.

        Raises ``UnknownInstrument`` when the underlying has no options (with suggestions),
        or when none expire on ``expiry`` (naming the expiries there are).
        """
        chain = self._chain(underlying, _OPTION_KINDS, "options", segment)
        if expiry is None:
            return chain
        day = _as_date(expiry)
        out = [i for i in chain if i.expiry == day]
        if not out:
            listed = sorted({i.expiry for i in chain})
            raise UnknownInstrument(
                f"no {underlying} options expire on {day}; expiries listed: {_fmt_dates(listed)}"
            )
        return out

    def futures(self, underlying: str, *, segment: "Segment | str | None" = None) -> list[Instrument]:
        """Futures on ``underlying``, nearest expiry first."""
        return self._chain(underlying, _FUTURE_KINDS, "futures", segment)

    def expiries(self, underlying: str, kind: Literal["CE", "PE", "FUT"] = "CE", *,
                 segment: "Segment | str | None" = None) -> list[dt.date]:
        """Sorted expiry dates of ``underlying``'s calls (``CE``), puts (``PE``) or futures (``FUT``).

        Every expiry the master lists is returned, including any already past in an old file.
        """
        k = str(kind).upper()
        if k == "FUT":
            return sorted({i.expiry for i in self.futures(underlying, segment=segment)})
        opt = _option_type(k)
        return sorted({i.expiry for i in self._chain(underlying, _OPTION_KINDS, "options", segment)
                       if i.option_type is opt})

    def atm_option(self, underlying: str, spot: float, expiry: "Literal['nearest', 'next'] | dt.date | str" = "nearest",
                   kind: Literal["CE", "PE"] = "CE", *, segment: "Segment | str | None" = None,
                   today: dt.date | None = None) -> Instrument:
        """The ``kind`` option on ``underlying`` whose strike is nearest ``spot``.

        ``expiry``: ``"nearest"`` (the first expiry on or after ``today``, IST), ``"next"`` (the
        one after it, weekly or monthly alike) or a date. A spot exactly between two strikes
        takes the **lower** strike for calls and puts alike, so a CE and a PE picked for the
        same spot share a strike (a straddle stays a straddle).
        """
        opt = _option_type(kind)
        try:
            price = float(spot)
        except (TypeError, ValueError):
            price = math.nan
        if isinstance(spot, bool) or not (math.isfinite(price) and price > 0):
            raise InstrumentError(f"spot must be a positive price, got {spot!r}")
        chain = [i for i in self._chain(underlying, _OPTION_KINDS, "options", segment) if i.option_type is opt]
        if not chain:
            raise UnknownInstrument(f"{underlying} has no {opt.value} options in this master")
        day = today or _ist_today()
        listed = sorted({i.expiry for i in chain})
        live = [d for d in listed if d >= day]
        if isinstance(expiry, str) and expiry.strip().lower() in ("nearest", "next"):
            which = 0 if expiry.strip().lower() == "nearest" else 1
            if len(live) <= which:
                if not live:
                    raise UnknownInstrument(
                        f"every {underlying} {opt.value} option in this master expired (last {listed[-1]}, today {day}): "
                        "refresh the instrument master"
                    )
                raise UnknownInstrument(f"{underlying} has only one {opt.value} expiry on or after {day} ({live[0]})")
            chosen = live[which]
        else:
            chosen = _as_date(expiry)
            if chosen < day:
                raise InstrumentError(f"expiry {chosen} is before today ({day}); live expiries: {_fmt_dates(live)}")
            if chosen not in listed:
                raise UnknownInstrument(
                    f"no {underlying} {opt.value} options expire on {chosen}; live expiries: {_fmt_dates(live)}"
                )
        strikes = [i for i in chain if i.expiry == chosen]
        best = min(strikes, key=lambda i: (round(abs((i.strike or 0.0) - price), 9), i.strike))
        same = [i for i in strikes if i.strike == best.strike]
        if len(same) > 1:
            segs = ", ".join(sorted(i.segment.value for i in same))
            raise AmbiguousInstrument(f"{best.symbol} is listed in {segs}: pass segment=", same)
        return best

    # ------------------------------------------------------------------ helpers

    def _chain(self, underlying: str, kinds: frozenset[InstrumentKind], what: str,
               segment: "Segment | str | None") -> list[Instrument]:
        seg = _as_segment(segment)
        chain = [i for i in self._derivatives.get(underlying.strip().upper(), [])
                 if i.kind in kinds and (seg is None or i.segment is seg)]
        if chain:
            return chain
        having = sorted({u for u, c in self._derivatives.items() if any(i.kind in kinds for i in c)})
        where = f" in {seg.value}" if seg else ""
        hint = difflib.get_close_matches(underlying.strip().upper(), having, n=3, cutoff=0.6)
        raise UnknownInstrument(f"{underlying!r} has no {what}{where} in this master", hint)

    def _suggest(self, symbol: str) -> list[str]:
        q = symbol.strip().upper()
        if not q:
            return []
        pool = {s for s, _, i in self._search_rows if i.kind not in _DERIVATIVE_KINDS or s[:3] == q[:3]}
        close = difflib.get_close_matches(q, pool, n=5, cutoff=0.75)
        prefixed = [i.symbol for i in self.search(q, limit=5)]
        out: list[str] = []
        for s in close + prefixed:
            if s not in out and s.upper() != q:
                out.append(s)
        return out[:5]


def _option_type(kind: str) -> OptionType:
    try:
        return OptionType(str(kind).upper())
    except ValueError:
        raise InstrumentError(f"option kind must be CE or PE, got {kind!r}") from None


def _as_date(value: "dt.date | str") -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value).strip())
    except ValueError:
        raise InstrumentError(f"expiry must be 'nearest', 'next' or a date like 2026-06-30, got {value!r}") from None


def _fmt_dates(days: Sequence[dt.date], limit: int = 6) -> str:
    if not days:
        return "none"
    shown = ", ".join(d.isoformat() for d in days[:limit])
    return shown + (f" (+{len(days) - limit} more)" if len(days) > limit else "")


# ---------------------------------------------------------------------- daily cache

_EXTENSIONS = {"dhan": "csv", "definedge": "zip"}
_CACHE_NAME = re.compile(r"^(?P<broker>[a-z]+)-(?P<day>\d{4}-\d{2}-\d{2})\.(?P<ext>csv|zip)$")
_PARSED: dict[tuple[str, int, int], InstrumentMaster] = {}
_PARSED_LIMIT = 4


def load_master(broker: str, *, refresh: bool = False, data_dir: "str | os.PathLike[str] | None" = None,
                fetch: bool = True, today: dt.date | None = None) -> InstrumentMaster:
    """The broker's instrument master, downloaded at most once per trading day (IST date).

    The file is kept as ``<data_dir>/instruments/<broker>-<YYYY-MM-DD>.<csv|zip>`` (written to
    a temporary file, checked by parsing, then renamed, so a failed download never replaces a
    good file). A second call the same day reads the file (parsed masters are also kept in
    memory); ``refresh=True`` downloads again. If a download fails, the newest earlier file is
    used with a warning; with nothing cached, ``MasterUnavailable`` says what failed.
    ``fetch=False`` never downloads. ``today`` overrides the IST date (tests, replays).

    The address comes from ``broker_settings()`` (``DHAN_MASTER_URL``: the detailed CSV;
    ``DEFINEDGE_MASTER_URL``: ``allmaster.zip``). Brokers publish the day's master in the
    morning (Definedge: after 07:30 IST), so a file fetched before then may be yesterday's;
    use ``refresh=True`` after it to pick up new contracts.
    """
    if broker not in _EXTENSIONS:
        raise InstrumentError(
            f"unknown broker {broker!r}; use one of {', '.join(BROKERS)}"
            + (f" (did you mean {difflib.get_close_matches(broker, BROKERS, n=1)[0]}?)"
               if difflib.get_close_matches(broker, BROKERS, n=1) else "")
        )
    folder = _cache_dir(data_dir)
    day = today or _ist_today()
    ext = _EXTENSIONS[broker]
    target = folder / f"{broker}-{day.isoformat()}.{ext}"
    if target.is_file() and not (refresh and fetch):
        return _parse_cached(broker, target)
    failure: MasterUnavailable | None = None
    if fetch:
        try:
            master = _download(broker, target)
        except MasterUnavailable as exc:
            failure = exc
        else:
            _prune(folder, broker, keep=target)
            return master
    fallback = target if target.is_file() else _latest_cached(folder, broker, before=day)
    if fallback is None:
        reason = str(failure) if failure else "fetch=False and no file is cached"
        raise MasterUnavailable(
            f"no {broker} instrument master: {reason}; nothing cached in {folder}. "
            f"Check the network and {broker.upper()}_MASTER_URL, then call load_master({broker!r}) again"
        ) from failure
    if failure:
        log.warning("%s; using the cached master %s instead (contracts listed since then are missing)",
                    failure, fallback.name)
    elif fallback != target:
        log.warning("using the cached %s master %s (fetch=False): contracts listed since then are missing",
                    broker, fallback.name)
    return _parse_cached(broker, fallback)


def _cache_dir(data_dir: "str | os.PathLike[str] | None") -> Path:
    base = Path(data_dir) if data_dir is not None else settings().data_dir
    folder = (base / "instruments").resolve()
    package = Path(__file__).resolve().parent
    if folder == package or package in folder.parents:
        raise ConfigError(
            f"refusing to keep instrument masters in {folder}, inside the installed tradeflow package; "
            "set TRADEFLOW_DATA_DIR to a data folder outside it"
        )
    return folder


def _parse(broker: str, path: Path) -> list[Instrument]:
    return parse_dhan_master(path) if broker == "dhan" else parse_definedge_master(path)


def _parse_cached(broker: str, path: Path) -> InstrumentMaster:
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    master = _PARSED.get(key)
    if master is None:
        try:
            master = InstrumentMaster(_parse(broker, path))
        except MasterFormatError as exc:
            raise MasterFormatError(f"{exc}; the cached file may be damaged: load_master({broker!r}, refresh=True)") from exc
        while len(_PARSED) >= _PARSED_LIMIT:
            _PARSED.pop(next(iter(_PARSED)))
        _PARSED[key] = master
    return master


def _download(broker: str, target: Path) -> InstrumentMaster:
    """Fetch, check by parsing, then rename into place; any failure is MasterUnavailable."""
    import requests  # only when downloading: parsing a file needs no HTTP stack

    cfg = broker_settings()
    url = cfg.dhan_master_url if broker == "dhan" else cfg.definedge_master_url
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    except OSError as exc:
        raise MasterUnavailable(f"cannot save the {broker} master in {target.parent}: {exc}") from exc
    tmp = Path(tmp_name)
    try:
        try:
            with os.fdopen(fd, "wb") as fh, requests.get(url, timeout=cfg.http_timeout, stream=True) as resp:
                if resp.status_code >= 400:
                    raise MasterUnavailable(f"downloading the {broker} master from {url} failed: HTTP {resp.status_code}")
                for chunk in resp.iter_content(chunk_size=1 << 20):
                    fh.write(chunk)
        except requests.RequestException as exc:
            raise MasterUnavailable(f"downloading the {broker} master from {url} failed: {exc}") from exc
        except OSError as exc:
            raise MasterUnavailable(f"cannot save the {broker} master in {target.parent}: {exc}") from exc
        try:
            instruments = _parse(broker, tmp)
        except MasterFormatError as exc:
            raise MasterUnavailable(f"the {broker} master downloaded from {url} is not usable: {exc}") from exc
        if not instruments:
            raise MasterUnavailable(f"the {broker} master downloaded from {url} lists no instruments")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("downloaded the %s instrument master to %s (%d instruments)", broker, target, len(instruments))
    master = InstrumentMaster(instruments)
    stat = target.stat()
    _PARSED[(str(target), stat.st_mtime_ns, stat.st_size)] = master
    while len(_PARSED) > _PARSED_LIMIT:
        _PARSED.pop(next(iter(_PARSED)))
    return master


def _cached_files(folder: Path, broker: str) -> list[tuple[dt.date, Path]]:
    out = []
    if not folder.is_dir():
        return out
    for path in folder.iterdir():
        m = _CACHE_NAME.match(path.name)
        if m and m["broker"] == broker and m["ext"] == _EXTENSIONS[broker]:
            try:
                out.append((dt.date.fromisoformat(m["day"]), path))
            except ValueError:
                continue
    return sorted(out)


def _latest_cached(folder: Path, broker: str, *, before: dt.date) -> Path | None:
    older = [p for d, p in _cached_files(folder, broker) if d < before]
    return older[-1] if older else None


def _prune(folder: Path, broker: str, *, keep: Path) -> None:
    """Keep today's file and the newest earlier one (the fallback); delete older ones, and
    partial downloads left for more than an hour by a process that died."""
    old = [p for _, p in _cached_files(folder, broker) if p != keep][:-1]
    cutoff = dt.datetime.now().timestamp() - 3600
    for path in old + list(folder.glob(f".{broker}-*.part")):
        try:
            if path.suffix != ".part" or path.stat().st_mtime < cutoff:
                path.unlink()
        except OSError as exc:
            log.debug("could not delete old master %s: %s", path, exc)

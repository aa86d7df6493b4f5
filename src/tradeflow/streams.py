"""One tick/bar stream interface for the engine: replay, simulated live, polling, broker websockets.

Why this module exists: the engine loop is synchronous and wants one thing to iterate,
whatever the source. Every stream here is a :class:`TickStream`: ``subscribe(instruments)``,
iterate it in the caller's thread to get :class:`~tradeflow.feeds.Tick`,
:class:`~tradeflow.feeds.Bar` or :class:`Heartbeat` events, ``close()`` it from anywhere,
read ``health`` at any time. Live streams emit a ``Heartbeat`` (a UTC instant) whenever no
tick came for ``heartbeat`` seconds, so the engine can close bars on time in a quiet market.

==================  ==========================================================================
``ReplayStream``    stored candles of several symbols merged in time order (finite)
``SimLiveStream``   the simulated market: today's session on the wall clock while NSE is open,
                    else the most recent sim session replayed at ``speed``×
``PollingStream``   ``broker.quote()`` under a token bucket (Dhan's quote API allows 1 call/s)
``DhanFeedStream``  Dhan market feed v2 (binary little-endian packets, JSON subscribe)
``DefinedgeFeedStream``  Definedge Integrate websocket (Noren JSON: connect, ``t``/``tk``/``tf``)
``ResilientStream`` reconnects a primary with backoff and falls back to polling when the
                    primary goes silent during market hours; switches back when it recovers
==================  ==========================================================================

Own websocket client, not the SDKs' (a deliberate choice). Both broker websockets are
spoken directly with the ``websockets`` library's synchronous client, run in one background
thread per stream that feeds a queue the caller's iterator reads. The SDK classes were not
robust enough to sit under an unattended engine (see ``reference/broker-sdks.md`` 1.4, 1.9,
2.4, 2.9): ``dhanhq.marketfeed.MarketFeed`` calls ``asyncio.set_event_loop`` on the caller's
thread, ``print``\\ s, parses only the first packet of a frame (we walk all of them), drops the
date from the trade time, blocks in ``get_data`` without a timeout and can hang in
``close_connection``; pyintegrate's ``IntegrateWebSocket`` runs a Twisted reactor that cannot
be restarted in a process (so no reconnect, no second test), never sends the ``{"t":"h"}``
heartbeat Definedge requires every 50 s, and scans the master file per token. The wire
protocol is small and documented by the probes, so speaking it ourselves gives timeouts,
reconnect + resubscribe, heartbeats and log hygiene we control.

Times. ``Tick.ts`` is the exchange's trade time as a UTC instant (bars are bucketed by when
the trade happened, not when it reached us); a packet without a usable time gets the receipt
time. Dhan's feed sends ``LTT`` as epoch seconds that third parties report to be *IST-shifted*
(the IST wall clock read as if it were UTC); Definedge's ``ft`` is believed to be a true epoch.
Neither is verified against production here, so both streams take ``exchange_time="auto"``
(default): start from that belief (Dhan: IST-shifted, Definedge: UTC) and, from the first
few *fresh* updates (a time that changed on an open connection, i.e. a trade that just
happened), settle which one matches the receipt clock, logging if the belief was wrong.
``"ist"`` or ``"utc"`` fixes the reading. Volumes: ``Tick.volume`` is the change of the
broker's cumulative day volume since the previous packet for that instrument (0 for the
first snapshot after a (re)connect), so bars built from ticks carry the exchange volume.

Secrets. Dhan's feed takes the access token in the URL query string, Definedge its session
key in the first frame. Neither URL-with-query nor frame is ever logged: the websocket
library's wire logger (``tradeflow.streams.wire``) is set to INFO (its DEBUG lines carry the
request path and frame text) and, if lowered, shows frames by type and size only; every
message of this module's loggers passes a filter that masks the known secret values and any
``token=`` query; errors are reported by type and scrubbed text only.

Settings. Feed URLs: the constructor's ``url``, else ``TRADEFLOW_DHAN_FEED_URL`` /
``TRADEFLOW_DEFINEDGE_FEED_URL``, else :func:`tradeflow.config.broker_settings`
(``DHAN_FEED_URL`` / ``DEFINEDGE_WS_URL``), whose defaults are the production addresses
``wss://api-feed.dhan.co`` and ``wss://trade.definedgesecurities.com/NorenWSTRTP/``.
"""

from __future__ import annotations

import dataclasses
import difflib
import heapq
import json
import logging
import math
import os
import queue
import re
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal, Protocol, runtime_checkable
from urllib.parse import urlencode, urlsplit

import pandas as pd

from .brokers.base import (
    Broker,
    BrokerUnavailable,
    Instrument,
    Quote,
    RateLimited,
    Segment,
    SessionExpired,
)
from .brokers.ratelimit import TokenBucket
from .brokers.sim import SimMarket
from .calendar import IST, SESSION_CLOSE, SESSION_OPEN, is_session, sessions
from ._redact import SecretFilter
from .errors import ConfigError, SourceError
from .feeds import Bar, Tick, _Pacer, replay_bars, replay_ticks
from .timeframes import ONE_MINUTE

__all__ = [
    "Heartbeat",
    "Event",
    "FeedHealth",
    "TickStream",
    "ReplayStream",
    "SimLiveStream",
    "PollingStream",
    "DhanFeedStream",
    "DefinedgeFeedStream",
    "ResilientStream",
    "is_market_open",
    "open_stream",
    "DHAN_FEED_URL",
    "DEFINEDGE_FEED_URL",
]

log = logging.getLogger(__name__)
_WIRE_LOG = logging.getLogger(__name__ + ".wire")
_WIRE_LOG.setLevel(logging.INFO)  # websockets logs the request path (Dhan token) and frames at DEBUG

DHAN_FEED_URL = "wss://api-feed.dhan.co"
"""Production Dhan market feed (v2); credentials go in the query string at connect time."""
DEFINEDGE_FEED_URL = "wss://trade.definedgesecurities.com/NorenWSTRTP/"
"""Production Definedge Integrate (Noren) websocket."""

_NS = 1_000_000_000
_IST_SHIFT_S = 19_800  # 05:30 in seconds
_BACKOFF = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)

Clock = Callable[[], pd.Timestamp]
SleepFn = Callable[[float], None]


def _utcnow() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC")


def _as_utc(ts: object) -> pd.Timestamp:
    out = pd.Timestamp(ts)  # type: ignore[arg-type]
    if out.tzinfo is None:
        raise ValueError(f"{ts!r} has no time zone: pass a tz-aware instant")
    return out.tz_convert("UTC")


# ---------------------------------------------------------------------- events and health


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """"Nothing traded, but it is now ``ts``" (UTC): lets the engine close bars in a quiet market."""

    ts: pd.Timestamp

    def __post_init__(self) -> None:
        object.__setattr__(self, "ts", _as_utc(self.ts))


Event = Tick | Bar | Heartbeat
"""What a stream yields."""

State = Literal["connecting", "live", "polling", "reconnecting", "closed"]


@dataclass
class FeedHealth:
    """A snapshot of a stream's condition, for logs, dashboards and the engine's checks.

    ``last_error`` is a short description without secrets (type and scrubbed message).
    """

    source: str
    state: State = "connecting"
    last_tick_at: pd.Timestamp | None = None
    ticks: int = 0
    reconnects: int = 0
    fallbacks: int = 0
    last_error: str | None = None


class _Health:
    """Thread-safe holder of a :class:`FeedHealth`; ``snapshot()`` hands out copies."""

    def __init__(self, source: str) -> None:
        self._h = FeedHealth(source)
        self._lock = threading.Lock()

    def set(self, **changes: Any) -> None:
        with self._lock:
            for key, value in changes.items():
                setattr(self._h, key, value)

    def add(self, field: str, n: int = 1) -> None:
        with self._lock:
            setattr(self._h, field, getattr(self._h, field) + n)

    def tick(self, ts: pd.Timestamp) -> None:
        with self._lock:
            self._h.ticks += 1
            self._h.last_tick_at = ts

    @property
    def state(self) -> State:
        return self._h.state

    def snapshot(self) -> FeedHealth:
        with self._lock:
            return dataclasses.replace(self._h)


@runtime_checkable
class TickStream(Protocol):
    """What the engine consumes. Iterate in the caller's thread; ``close()`` ends the iteration.

    Required: ``name``; ``subscribe(instruments)`` (before or during iteration; streams with a
    fixed universe may restrict to it); ``__iter__`` yielding :data:`Event` until closed or
    exhausted (a fatal problem such as an expired session is raised out of the iterator);
    ``close()`` (idempotent, callable from any thread); ``health`` (a :class:`FeedHealth` copy).
    """

    name: str

    def subscribe(self, instruments: list[Instrument]) -> None: ...
    def __iter__(self) -> Iterator[Event]: ...
    def close(self) -> None: ...
    @property
    def health(self) -> FeedHealth: ...


# ---------------------------------------------------------------------- log hygiene


class _Redactor(SecretFilter):
    """Masks registered secret values, and any ``token=``/``susertoken`` value, in log records."""

    pattern = re.compile(r"(?i)((?:access[-_]?)?token=|susertoken[\"']?\s*[:=]\s*[\"']?)[^&\s\"',}]+")


class _FrameSummary(logging.Filter):
    """Wire DEBUG lines show a frame as its type and size only: the library's truncated frame
    text could carry part of a session key that no exact-match mask would catch."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        if any(hasattr(a, "opcode") and hasattr(a, "data") for a in args):
            record.args = tuple(f"{a.opcode.name} [{len(a.data)} bytes]" if hasattr(a, "opcode") and hasattr(a, "data")
                                else a for a in args)
        return True


_REDACTOR = _Redactor()
for _logger in (log, _WIRE_LOG):
    if _REDACTOR not in _logger.filters:
        _logger.addFilter(_REDACTOR)
_WIRE_LOG.filters.insert(0, _FrameSummary())


def _describe(exc: BaseException) -> str:
    """``Type: message`` with secrets masked, for logs and ``FeedHealth.last_error``."""
    text = str(exc).strip()
    return _REDACTOR.scrub(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)[:300]


def _secret_value(value: Any) -> str:
    getter = getattr(value, "get_secret_value", None)
    return str(getter() if callable(getter) else value)


def _host(url: str) -> str:
    """Scheme and host of a URL (never its query), safe to log."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


def _feed_url(explicit: str | None, env: str, setting: str) -> str:
    if explicit:
        return explicit
    if os.environ.get(env):
        return os.environ[env]
    from .config import broker_settings

    return str(getattr(broker_settings(), setting))


# ---------------------------------------------------------------------- calendar


@lru_cache(maxsize=64)
def _session_day(day: Any) -> bool:
    return is_session(day)


def is_market_open(now: object) -> bool:
    """True while a regular NSE session is trading (09:15-15:30 IST on a calendar session day)."""
    ist = _as_utc(now).tz_convert(IST)
    return SESSION_OPEN <= ist.time() < SESSION_CLOSE and _session_day(ist.date())


def _at(day: Any, t: Any) -> pd.Timestamp:
    return pd.Timestamp.combine(day, t).tz_localize(IST).tz_convert("UTC")


def _wait_and_beat(target_ns: int, now: Callable[[], int], sleep: SleepFn, heartbeat: float,
                   stopped: Callable[[], bool], last_event_ns: list[int]) -> Iterator[Heartbeat]:
    """Wait on ``now``/``sleep`` until ``target_ns``, yielding a Heartbeat after each
    ``heartbeat`` seconds (stream time) without an event. ``last_event_ns`` is shared state."""
    beat_ns = int(heartbeat * _NS)
    while not stopped():
        current = now()
        if current >= target_ns:
            return
        next_beat = last_event_ns[0] + beat_ns
        if current >= next_beat:
            last_event_ns[0] = current
            yield Heartbeat(pd.Timestamp(current, unit="ns", tz="UTC"))
            continue
        sleep(max(min(target_ns, next_beat) - current, 1) / _NS)


# ---------------------------------------------------------------------- replay


class ReplayStream:
    """Stored candles of several symbols replayed as one time-ordered stream (finite).

    Why: paper runs and tests on past days need the same events a live feed gives. Ticks
    come from :func:`tradeflow.feeds.replay_ticks` (four synthetic ticks per bar) and are
    merged across symbols by instant; bars from :func:`~tradeflow.feeds.replay_bars`, merged
    by their end (a bar is only known once it has ended). ``speed``/``sleep``/``max_sleep``
    pace the merged stream as in :mod:`tradeflow.feeds`; ``speed=None`` runs at full speed.
    ``subscribe`` narrows the replay to some of the symbols.
    """

    name = "replay"

    def __init__(self, candles: dict[str, pd.DataFrame], *, as_ticks: bool = True, speed: float | None = None,
                 sleep: SleepFn = time.sleep, max_sleep: float | None = None,
                 timeframe_minutes: int | None = None) -> None:
        if not candles:
            raise ValueError("ReplayStream needs candles: a dict of symbol -> candle frame (CandleStore.candles)")
        self._candles = dict(candles)
        self._symbols = list(self._candles)
        self.as_ticks = as_ticks
        self._pacer = _Pacer(speed, sleep, max_sleep)  # validates speed
        self._timeframe = timeframe_minutes
        self._closed = False
        self._health = _Health(self.name)

    def subscribe(self, instruments: list[Instrument]) -> None:
        wanted = [i.symbol for i in instruments]
        unknown = [s for s in wanted if s not in self._candles]
        if unknown:
            hint = difflib.get_close_matches(unknown[0], self._candles, n=1)
            raise ValueError(f"no candles to replay for {', '.join(unknown)}"
                             + (f" (did you mean {hint[0]!r}?)" if hint else f"; have {', '.join(self._candles)}"))
        self._symbols = wanted

    def __iter__(self) -> Iterator[Event]:
        if self.as_ticks:
            streams = [replay_ticks(self._candles[s], symbol=s, timeframe_minutes=self._timeframe) for s in self._symbols]
            merged: Iterator[Tick | Bar] = heapq.merge(*streams, key=lambda t: t.ns)
            at: Callable[[Any], int] = lambda t: t.ns  # noqa: E731
        else:
            streams = [replay_bars(self._candles[s], symbol=s, timeframe_minutes=self._timeframe) for s in self._symbols]
            merged = heapq.merge(*streams, key=lambda b: b.end.value)
            at = lambda b: b.end.value  # noqa: E731
        self._health.set(state="live")
        try:
            for event in merged:
                if self._closed:
                    return
                self._pacer.wait(at(event))
                if isinstance(event, Tick):
                    self._health.tick(event.ts)
                yield event
        finally:
            self._health.set(state="closed")

    def close(self) -> None:
        self._closed = True
        self._health.set(state="closed")

    @property
    def health(self) -> FeedHealth:
        return self._health.snapshot()


# ---------------------------------------------------------------------- simulated market


class _StopEventStream:
    """``close()`` sets ``_stop`` (the running iteration ends at its next step); ``health`` snapshots ``_health``."""

    _stop: threading.Event
    _health: "_Health"

    def close(self) -> None:
        self._stop.set()
        self._health.set(state="closed")

    @property
    def health(self) -> FeedHealth:
        return self._health.snapshot()


class SimLiveStream(_StopEventStream):
    """The simulated market as a live feed, paced by the wall clock or replayed when closed.

    While an NSE session is open (calendar + 09:15-15:30 IST), it emits today's synthetic
    ticks (four per sim 1-minute bar, as :func:`~tradeflow.feeds.replay_ticks` places them):
    first at once every tick up to now (``catch_up``, so the engine sees today's bars), then
    each one when the clock reaches it, with Heartbeats while idle, and a last Heartbeat at
    15:30 before it ends. When the market is closed it replays the most recent complete sim
    session at ``speed``× (``None``: full speed) and says which in a log line. ``clock`` and
    ``sleep`` are injectable so tests run instantly; ``heartbeat`` is in real seconds.
    """

    name = "sim"

    def __init__(self, market: SimMarket, symbols: Iterable[str] = (), *, speed: float | None = 1.0,
                 heartbeat: float = 5.0, catch_up: bool = True, clock: Clock = _utcnow,
                 sleep: SleepFn | None = None) -> None:
        if speed is not None and not (math.isfinite(speed) and speed > 0):
            raise ValueError(f"speed must be a positive multiplier (or None for full speed), got {speed!r}")
        if not heartbeat > 0:
            raise ValueError(f"heartbeat must be a positive number of seconds, got {heartbeat!r}")
        self.market = market
        self._symbols: list[str] = []
        self.speed, self.heartbeat, self.catch_up = speed, float(heartbeat), catch_up
        self._clock = clock
        self._stop = threading.Event()
        self._sleep = sleep if sleep is not None else self._stop.wait
        self._health = _Health(self.name)
        self._add(symbols)

    def _add(self, symbols: Iterable[str]) -> None:
        for s in symbols:
            sym = self.market.instrument(s).symbol  # SourceError for an unknown symbol
            if sym not in self._symbols:
                self._symbols.append(sym)

    def subscribe(self, instruments: list[Instrument]) -> None:
        """Add symbols (takes effect for an iteration that has not started yet)."""
        self._add(i.symbol for i in instruments)

    def _session(self, now: pd.Timestamp) -> tuple[Any, bool]:
        """(session day, live?) — today's if open now, else the last session that has closed."""
        ist = now.tz_convert(IST)
        if is_market_open(now):
            return ist.date(), True
        days = sessions((ist - pd.Timedelta(days=15)).date(), ist.date())
        done = [d for d in days if _at(d, SESSION_CLOSE) <= now]
        if not done:
            raise SourceError(f"no completed NSE session before {ist:%Y-%m-%d %H:%M} IST to replay")
        return done[-1], False

    def _ticks(self, day: Any) -> Iterator[Tick]:
        open_, close = _at(day, SESSION_OPEN), _at(day, SESSION_CLOSE)
        whole_day = SimMarket(self.market.seed, now=close)  # the full session; we only emit what is due
        frames = {s: whole_day.fetch(s, ONE_MINUTE, open_, close) for s in self._symbols}
        return heapq.merge(*(replay_ticks(f, symbol=s, timeframe_minutes=1) for s, f in frames.items() if len(f)),
                           key=lambda t: t.ns)

    def __iter__(self) -> Iterator[Event]:
        if not self._symbols:
            raise ValueError("SimLiveStream has no symbols: pass symbols= or subscribe() first "
                             f"(the sim market has {', '.join(self.market.symbols())})")
        now = _as_utc(self._clock())
        day, live = self._session(now)
        close_ns = _at(day, SESSION_CLOSE).value
        stopped = self._stop.is_set
        virtual = [_at(day, SESSION_OPEN).value]  # stream time of a replay, advanced by its sleeps
        self._health.set(state="live")
        if live:
            log.info("sim: the NSE session of %s is open; streaming its synthetic ticks on the wall clock", day)
            clock_ns: Callable[[], int] = lambda: _as_utc(self._clock()).value  # noqa: E731
            sleep, beat = self._sleep, self.heartbeat
        else:
            log.info("sim: the NSE market is closed; replaying the sim session of %s at %s", day,
                     "full speed" if self.speed is None else f"{self.speed:g}x")
            clock_ns = lambda: virtual[0]  # noqa: E731
            speed = self.speed or 1.0

            def sleep(seconds: float) -> None:
                self._sleep(seconds / speed)
                virtual[0] += int(seconds * _NS)

            beat = self.heartbeat * speed  # stream seconds between Heartbeats: ``heartbeat`` real seconds
        paced = live or self.speed is not None
        last = [clock_ns()]
        try:
            for tick in self._ticks(day):
                if stopped():
                    return
                if live and tick.ns <= now.value:
                    if not self.catch_up:
                        continue  # already due when the stream started: catch up at once, or skip
                elif paced:
                    yield from _wait_and_beat(tick.ns, clock_ns, sleep, beat, stopped, last)
                    if stopped():
                        return
                else:
                    virtual[0] = max(virtual[0], tick.ns)  # full speed: no waiting
                last[0] = clock_ns()
                self._health.tick(tick.ts)
                yield tick
            if paced:
                yield from _wait_and_beat(close_ns, clock_ns, sleep, beat, stopped, last)
            if not stopped():
                yield Heartbeat(pd.Timestamp(close_ns, unit="ns", tz="UTC"))  # the engine closes the last bar
        finally:
            self._health.set(state="closed")


# ---------------------------------------------------------------------- polling


class PollingStream(_StopEventStream):
    """Ticks from polling ``broker.quote(instruments)``: the fallback when no websocket works.

    Each poll waits for ``interval`` seconds after the previous one *and* for a token of a
    private bucket of ``rate`` calls per second (default 1/s: Dhan's quote API limit; the
    broker adapter's own shared bucket still applies inside ``quote``). A Tick is emitted
    for an instrument when its last price or last-trade time changed (its volume is the
    change of the quote's day volume); a poll with no change yields a Heartbeat.
    ``RateLimited`` and ``BrokerUnavailable`` are retried after ``backoff`` pauses (growing
    with consecutive failures, Heartbeats still flowing); ``SessionExpired`` and any other
    error are raised out of the iterator, because polling cannot fix them.
    """

    def __init__(self, broker: Broker, instruments: Sequence[Instrument] = (), *, interval: float = 1.0,
                 rate: float | None = None, backoff: Sequence[float] = _BACKOFF, clock: Clock = _utcnow,
                 sleep: SleepFn | None = None) -> None:
        if not (interval > 0 and math.isfinite(interval)):
            raise ValueError(f"interval must be a positive number of seconds, got {interval!r}")
        if not backoff:
            raise ValueError("backoff needs at least one pause")
        self.broker = broker
        self.name = f"poll:{getattr(broker, 'name', type(broker).__name__)}"
        self.interval = float(interval)
        self.backoff = tuple(float(b) for b in backoff)
        self._instruments: list[Instrument] = []
        self._clock = clock
        self._stop = threading.Event()
        self._sleep = sleep if sleep is not None else self._stop.wait
        self._bucket = TokenBucket(float(rate) if rate is not None else 1.0, capacity=1.0,
                                   clock=lambda: _as_utc(self._clock()).value / _NS, sleep=self._sleep)
        self._last: dict[str, tuple[float, Any]] = {}
        self._volume: dict[str, float] = {}
        self._health = _Health(self.name)
        self.subscribe(list(instruments))

    def subscribe(self, instruments: list[Instrument]) -> None:
        known = {i.symbol for i in self._instruments}
        self._instruments.extend(i for i in instruments if i.symbol not in known)

    def _ticks(self, quotes: dict[str, Quote], now: pd.Timestamp) -> list[Tick]:
        out = []
        for inst in self._instruments:
            q = quotes.get(inst.symbol)
            if q is None or not (q.last_price and q.last_price > 0):
                continue
            key = (float(q.last_price), q.time)
            if self._last.get(inst.symbol) == key:
                continue
            self._last[inst.symbol] = key
            volume = 0.0
            if q.volume is not None:
                prior = self._volume.get(inst.symbol)
                volume = max(float(q.volume) - prior, 0.0) if prior is not None else 0.0
                self._volume[inst.symbol] = float(q.volume)
            out.append(Tick(inst.symbol, q.time if q.time is not None else now, float(q.last_price), volume))
        return out

    def __iter__(self) -> Iterator[Event]:
        if not self._instruments:
            raise ValueError(f"{self.name}: nothing to poll; pass instruments or subscribe() first")
        failures = 0
        next_poll: pd.Timestamp | None = None
        self._health.set(state="polling")
        try:
            while not self._stop.is_set():
                now = _as_utc(self._clock())
                if next_poll is not None and now < next_poll:
                    self._sleep((next_poll - now).total_seconds())
                    continue
                self._bucket.acquire()
                if self._stop.is_set():
                    return
                next_poll = _as_utc(self._clock()) + pd.Timedelta(seconds=self.interval)
                try:
                    quotes = self.broker.quote(list(self._instruments))
                except SessionExpired as exc:
                    self._health.set(last_error=_describe(exc))
                    log.error("%s: the broker session expired; stopping (%s)", self.name, _describe(exc))
                    raise
                except (RateLimited, BrokerUnavailable) as exc:
                    pause = self.backoff[min(failures, len(self.backoff) - 1)]
                    failures += 1
                    self._health.set(last_error=_describe(exc))
                    log.warning("%s: %s; polling again in %.3g s", self.name, _describe(exc), pause)
                    self._sleep(pause)
                    next_poll = None
                    yield Heartbeat(self._clock())
                    continue
                failures = 0
                ticks = self._ticks(quotes, _as_utc(self._clock()))
                for t in ticks:
                    self._health.tick(t.ts)
                    yield t
                if not ticks:
                    yield Heartbeat(self._clock())
        finally:
            self._health.set(state="closed")


# ---------------------------------------------------------------------- exchange time


class _ExchangeClock:
    """Epoch seconds from a broker packet → UTC instant, settling whether they are IST-shifted.

    ``zone`` is ``"ist"`` (the IST wall clock written as a UTC epoch, i.e. 05:30 ahead),
    ``"utc"`` (a true epoch) or ``"auto"``: start from ``default`` and, from fresh updates
    only, count which reading lands within ``tolerance`` seconds of the receipt clock; after
    ``votes`` agreeing updates that reading is kept for good.
    """

    def __init__(self, zone: str, *, default: str, source: str, tolerance: float = 300.0, votes: int = 3) -> None:
        if zone not in ("auto", "ist", "utc"):
            raise ValueError(f"exchange_time must be 'auto', 'ist' or 'utc', got {zone!r}")
        self.source = source
        self.zone = default if zone == "auto" else zone
        self.settled = zone != "auto"
        self._tolerance, self._votes_needed = tolerance, votes
        self._votes: dict[str, int] = {"ist": 0, "utc": 0}

    def to_utc(self, raw: float, received: pd.Timestamp, *, fresh: bool) -> pd.Timestamp:
        if not raw or raw <= 0:
            return received
        if fresh and not self.settled:
            diff = raw - received.value / _NS
            vote = "utc" if abs(diff) <= self._tolerance else "ist" if abs(diff - _IST_SHIFT_S) <= self._tolerance else None
            if vote is not None:
                self._votes[vote] += 1
                if self._votes[vote] >= self._votes_needed:
                    self.settled = True
                    if vote != self.zone:
                        log.warning("%s: exchange times turned out to be %s epochs, not %s; reading them as %s from now on",
                                    self.source, "IST-shifted" if vote == "ist" else "true UTC",
                                    "IST-shifted" if self.zone == "ist" else "true UTC", vote.upper())
                    else:
                        log.info("%s: exchange times confirmed as %s epochs", self.source,
                                 "IST-shifted" if vote == "ist" else "true UTC")
                    self.zone = vote
        shift = _IST_SHIFT_S if self.zone == "ist" else 0
        return pd.Timestamp(int((raw - shift) * _NS), unit="ns", tz="UTC")


# ---------------------------------------------------------------------- websocket base


class _Fatal:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_END = object()


class _Reconnect(Exception):
    """The server asked us to go away (or said something we cannot continue from): reconnect."""


class _WsStream:
    """A websocket client in a background thread feeding a queue the caller iterates.

    Subclasses implement ``_url()``, ``_open(ws)`` (login + subscribe everything),
    ``_send_subscriptions(ws, instruments)``, ``_on_message(ws, data, received)`` → events,
    and optionally ``_idle(ws)``. The thread reconnects after ``backoff`` pauses (growing
    with consecutive failures, reset once a connection is up) and resubscribes every
    instrument on each new connection. Only :class:`SessionExpired` (and a handshake refused
    with HTTP 401/403) ends the stream with an error.
    """

    name = "ws"
    _max_instruments = 5000

    def __init__(self, instruments: Sequence[Instrument], *, url: str, heartbeat: float, backoff: Sequence[float],
                 open_timeout: float, clock: Clock, exchange_time: str, exchange_default: str) -> None:
        if not heartbeat > 0:
            raise ValueError(f"heartbeat must be a positive number of seconds, got {heartbeat!r}")
        if not backoff:
            raise ValueError("backoff needs at least one pause")
        self.url = url
        self.heartbeat = float(heartbeat)
        self.backoff = tuple(float(b) for b in backoff)
        self.open_timeout = float(open_timeout)
        self._clock = clock
        self._times = _ExchangeClock(exchange_time, default=exchange_default, source=self.name)
        self._subs: dict[tuple[Any, str], Instrument] = {}
        self._pending: list[Instrument] = []
        self._lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ws: Any = None
        self._health = _Health(self.name)
        self._poll = 0.25  # seconds between checks for new subscriptions, heartbeats, close
        self.subscribe(list(instruments))

    # -- to implement
    def _key(self, inst: Instrument) -> tuple[Any, str]:
        raise NotImplementedError

    def _connect_url(self) -> str:
        raise NotImplementedError

    def _open(self, ws: Any) -> None:
        raise NotImplementedError

    def _send_subscriptions(self, ws: Any, instruments: list[Instrument]) -> None:
        raise NotImplementedError

    def _on_message(self, ws: Any, data: str | bytes, received: pd.Timestamp) -> list[Tick]:
        raise NotImplementedError

    def _idle(self, ws: Any) -> None:
        pass

    def _on_close(self, ws: Any) -> None:
        pass

    # -- public
    def subscribe(self, instruments: list[Instrument]) -> None:
        """Add instruments; sent at once on a live connection and again after every reconnect."""
        new: dict[tuple[Any, str], Instrument] = {}
        for inst in instruments:
            key = self._key(inst)
            if key not in self._subs and key not in new:
                new[key] = inst
        with self._lock:
            total = len(self._subs) + len(new)
            if total > self._max_instruments:
                raise ValueError(f"{self.name} allows {self._max_instruments} instruments per connection; "
                                 f"this would make {total}: split them over several streams")
            self._subs.update(new)
            if self._thread is not None:
                self._pending.extend(new.values())

    def __iter__(self) -> Iterator[Event]:
        """Events until ``close()``; an abandoned iteration closes the connection too."""
        self._start()
        last = time.monotonic()
        try:
            while True:
                wait = self.heartbeat - (time.monotonic() - last)
                try:
                    item = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
                except queue.Empty:
                    if self._stop.is_set():
                        return
                    last = time.monotonic()
                    yield Heartbeat(self._clock())
                    continue
                if item is _END:
                    return
                if isinstance(item, _Fatal):
                    raise item.exc
                last = time.monotonic()
                self._health.tick(item.ts)
                yield item
        finally:
            self.close()

    def close(self) -> None:
        self._stop.set()
        self._queue.put(_END)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2.0)
        self._health.set(state="closed")

    @property
    def health(self) -> FeedHealth:
        return self._health.snapshot()

    # -- the network thread
    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name=f"tradeflow-{self.name}-feed", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from websockets.exceptions import InvalidStatus
        from websockets.sync.client import connect

        failures = 0
        first = True
        while not self._stop.is_set():
            self._health.set(state="connecting" if first else "reconnecting")
            try:
                with connect(self._connect_url(), open_timeout=self.open_timeout, ping_interval=10, ping_timeout=10,
                             close_timeout=2, logger=_WIRE_LOG, max_size=2**22) as ws:
                    self._ws = ws
                    with self._lock:
                        self._pending.clear()  # everything is (re)subscribed by _open
                    self._open(ws)
                    failures = 0
                    self._health.set(state="live")
                    log.info("%s: connected to %s, %d instrument(s) subscribed", self.name, _host(self.url),
                             len(self._subs))
                    self._pump(ws)
            except SessionExpired as exc:
                self._fail(exc)
                return
            except InvalidStatus as exc:
                status = getattr(getattr(exc, "response", None), "status_code", None)
                if status in (401, 403):
                    self._fail(SessionExpired(f"{self.name}: the feed refused the credentials (HTTP {status}); "
                                              "log in again (tradeflow session login)"))
                    return
                self._note(exc)
            except Exception as exc:  # network, protocol, server drop: all lead to a reconnect
                self._note(exc)
            finally:
                self._ws = None
            if self._stop.is_set():
                break
            pause = self.backoff[min(failures, len(self.backoff) - 1)]
            failures += 1
            first = False
            self._health.add("reconnects")
            self._health.set(state="reconnecting")
            log.info("%s: reconnecting in %.3g s", self.name, pause)
            self._stop.wait(pause)
        self._queue.put(_END)

    def _note(self, exc: BaseException) -> None:
        if self._stop.is_set():
            return
        text = _describe(exc)
        self._health.set(last_error=text)
        log.warning("%s: connection lost (%s)", self.name, text)

    def _fail(self, exc: BaseException) -> None:
        self._health.set(last_error=_describe(exc), state="closed")
        log.error("%s: %s", self.name, _describe(exc))
        self._queue.put(_Fatal(exc))

    def _pump(self, ws: Any) -> None:
        while not self._stop.is_set():
            try:
                data = ws.recv(timeout=self._poll)
            except TimeoutError:
                data = None
            if data is not None:
                received = _as_utc(self._clock())
                try:
                    events = self._on_message(ws, data, received)
                except (SessionExpired, _Reconnect):
                    raise
                except Exception as exc:  # one malformed message must not end the feed
                    log.warning("%s: skipped a message that could not be read (%s)", self.name, _describe(exc))
                    events = []
                for ev in events:
                    self._queue.put(ev)
            with self._lock:
                pending, self._pending = self._pending, []
            if pending:
                self._send_subscriptions(ws, pending)
            self._idle(ws)
        self._on_close(ws)


# ---------------------------------------------------------------------- Dhan market feed v2

_DHAN_SEGMENT: dict[Segment, tuple[str, int]] = {
    Segment.NSE_IDX: ("IDX_I", 0),
    Segment.BSE_IDX: ("IDX_I", 0),
    Segment.NSE_EQ: ("NSE_EQ", 1),
    Segment.NSE_FNO: ("NSE_FNO", 2),
    Segment.BSE_EQ: ("BSE_EQ", 4),
    Segment.BSE_FNO: ("BSE_FNO", 8),
}
"""Our segment → (Dhan exchange segment name in requests, numeric code in packets)."""

_DHAN_REQUEST = {"ticker": 15, "quote": 17, "full": 21}
_DHAN_DISCONNECT = 12
_DHAN_SIZES = {2: 16, 3: 112, 4: 50, 5: 12, 6: 16, 7: 8, 8: 162, 50: 10}
"""Packet sizes by response code (code 1, the index packet, has no documented layout)."""
_DHAN_FATAL = {807: "the access token has expired", 808: "the client id is invalid",
               809: "authentication failed", 810: "the client id is invalid"}
_DHAN_REASONS = {800: "internal server error", 804: "too many instruments", 805: "too many connections",
                 806: "Data APIs not subscribed", 811: "invalid expiry date", 812: "invalid date format",
                 813: "invalid security id", 814: "invalid request"}


@dataclass(frozen=True)
class _DhanPacket:
    code: int
    segment: int
    security_id: str
    ltp: float = 0.0
    ltt: int = 0
    volume: float | None = None
    reason: int | None = None


def _parse_dhan(frame: bytes) -> list[_DhanPacket]:
    """Every packet of a binary frame (the SDK reads only the first): header ``<BHBI``
    (code, length, segment, security id), then the code's layout."""
    out: list[_DhanPacket] = []
    pos = 0
    while pos + 8 <= len(frame):
        code, length, seg, sid = struct.unpack_from("<BHBI", frame, pos)
        size = _DHAN_SIZES.get(code, length)
        if size < 8 or pos + size > len(frame):
            log.warning("dhan: truncated or unknown packet (code %d, %d bytes left); rest of the frame skipped",
                        code, len(frame) - pos)
            break
        if code == 2:  # ticker: LTP f32, LTT u32
            ltp, ltt = struct.unpack_from("<fI", frame, pos + 8)
            out.append(_DhanPacket(code, seg, str(sid), round(ltp, 2), ltt))
        elif code in (4, 8):  # quote / full: LTP, LTQ, LTT, ATP, volume, ...
            ltp, _ltq, ltt, _atp, volume = struct.unpack_from("<fHIfI", frame, pos + 8)
            out.append(_DhanPacket(code, seg, str(sid), round(ltp, 2), ltt, float(volume)))
        elif code == 50:
            (reason,) = struct.unpack_from("<H", frame, pos + 8)
            out.append(_DhanPacket(code, seg, str(sid), reason=reason))
        else:  # 1 index (undocumented layout), 3 depth, 5 OI, 6 previous close, 7 market status
            out.append(_DhanPacket(code, seg, str(sid)))
        pos += size
    return out


class DhanFeedStream(_WsStream):
    """Dhan's live market feed (v2) as ticks, over our own websocket client.

    Connects to ``{url}?version=2&token=…&clientId=…&authType=2`` (the URL is never logged),
    subscribes with ``{"RequestCode": 17, "InstrumentCount": n, "InstrumentList":
    [{"ExchangeSegment": "NSE_EQ", "SecurityId": "11536"}, …]}`` in batches of 100 (``mode``
    ``"quote"``, the default, also gives volumes; ``"ticker"`` only price and time), at most
    5000 instruments per connection. Ticker (2), quote (4) and full (8) packets become ticks
    when price, trade time or day volume changed; other packets are ignored. A disconnect
    packet (50) with 807 (token expired) or 808-810 (bad client id / authentication) raises
    :class:`SessionExpired` out of the iterator; any other reason, or a dropped connection,
    reconnects after ``backoff`` and resubscribes. Instruments need ``broker_ids["dhan"]``.
    """

    name = "dhan"
    _max_instruments = 5000
    _batch = 100

    def __init__(self, client_id: str, access_token: Any, instruments: Sequence[Instrument] = (), *,
                 url: str | None = None, mode: Literal["ticker", "quote", "full"] = "quote",
                 heartbeat: float = 1.0, backoff: Sequence[float] = _BACKOFF, open_timeout: float = 10.0,
                 exchange_time: Literal["auto", "ist", "utc"] = "auto", clock: Clock = _utcnow) -> None:
        token = _secret_value(access_token)
        if not client_id or not token:
            raise ConfigError("Dhan feed needs a client id and an access token (DHAN_CLIENT_ID, DHAN_ACCESS_TOKEN)")
        if mode not in _DHAN_REQUEST:
            raise ValueError(f"mode must be one of {', '.join(_DHAN_REQUEST)}, got {mode!r}")
        _REDACTOR.add(token)
        self.client_id = str(client_id)
        self._token = token
        self.mode = mode
        self._symbols: dict[tuple[int, str], str] = {}
        self._state: dict[tuple[int, str], tuple[float, int, float | None]] = {}
        super().__init__(instruments, url=_feed_url(url, "TRADEFLOW_DHAN_FEED_URL", "dhan_feed_url"),
                         heartbeat=heartbeat, backoff=backoff, open_timeout=open_timeout, clock=clock,
                         exchange_time=exchange_time, exchange_default="ist")

    def __repr__(self) -> str:
        return f"DhanFeedStream(client_id={self.client_id!r}, url={_host(self.url)!r}, instruments={len(self._subs)})"

    def _key(self, inst: Instrument) -> tuple[Any, str]:
        try:
            name, code = _DHAN_SEGMENT[inst.segment]
        except KeyError:
            raise ValueError(f"{inst.symbol}: segment {inst.segment} has no Dhan feed segment") from None
        sid = str(inst.id_for("dhan"))
        self._symbols[(code, sid)] = inst.symbol
        return (name, sid)

    def _connect_url(self) -> str:
        query = urlencode({"version": 2, "token": self._token, "clientId": self.client_id, "authType": 2})
        return self.url + ("&" if "?" in self.url else "?") + query

    def _open(self, ws: Any) -> None:
        self._state.clear()  # the first packet of each instrument is a snapshot again
        with self._lock:
            instruments = list(self._subs.values())
        self._send_subscriptions(ws, instruments)

    def _send_subscriptions(self, ws: Any, instruments: list[Instrument]) -> None:
        code = _DHAN_REQUEST[self.mode]
        keys = [self._key(i) for i in instruments]
        for start in range(0, len(keys), self._batch):
            chunk = keys[start:start + self._batch]
            ws.send(json.dumps({"RequestCode": code, "InstrumentCount": len(chunk),
                                "InstrumentList": [{"ExchangeSegment": seg, "SecurityId": sid} for seg, sid in chunk]}))

    def _on_message(self, ws: Any, data: str | bytes, received: pd.Timestamp) -> list[Tick]:
        if isinstance(data, str):
            log.debug("dhan: ignored a text message of %d characters", len(data))
            return []
        ticks = []
        for p in _parse_dhan(data):
            if p.code == 50:
                if p.reason in _DHAN_FATAL:
                    raise SessionExpired(f"Dhan closed the feed: {_DHAN_FATAL[p.reason]} (code {p.reason}); "
                                         "generate a new access token (tradeflow session login --broker dhan)")
                raise _Reconnect(f"Dhan closed the feed: {_DHAN_REASONS.get(p.reason or 0, 'no reason given')} "
                                 f"(code {p.reason})")
            if p.code not in (2, 4, 8) or not p.ltp > 0:
                continue
            key = (p.segment, p.security_id)
            symbol = self._symbols.get(key)
            if symbol is None:
                log.debug("dhan: a packet for unsubscribed security %s (segment %d) was ignored", p.security_id, p.segment)
                continue
            prior = self._state.get(key)
            volume = p.volume if p.volume is not None else (prior[2] if prior else None)
            if prior is not None and prior == (p.ltp, p.ltt, volume):
                continue
            self._state[key] = (p.ltp, p.ltt, volume)
            fresh = prior is not None and p.ltt != prior[1]
            traded = 0.0
            if prior is not None and p.volume is not None and prior[2] is not None:
                traded = max(p.volume - prior[2], 0.0)
            ticks.append(Tick(symbol, self._times.to_utc(p.ltt, received, fresh=fresh), p.ltp, traded))
        return ticks

    def _on_close(self, ws: Any) -> None:
        try:
            ws.send(json.dumps({"RequestCode": _DHAN_DISCONNECT}))
        except Exception:  # the connection may already be gone; nothing to tell the user
            pass


# ---------------------------------------------------------------------- Definedge (Noren) feed

_DEFINEDGE_EXCHANGE: dict[Segment, str] = {
    Segment.NSE_EQ: "NSE",
    Segment.NSE_IDX: "NSE",
    Segment.BSE_EQ: "BSE",
    Segment.BSE_IDX: "BSE",
    Segment.NSE_FNO: "NFO",
    Segment.BSE_FNO: "BFO",
}


def _num(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


class DefinedgeFeedStream(_WsStream):
    """Definedge Integrate's websocket (Noren JSON) as ticks, over our own websocket client.

    On connect it sends ``{"t": "c", "uid", "actid", "source": "TRTP", "susertoken"}`` and
    waits for ``{"t": "ck", "s": "OK"|"Ok"}`` (anything else raises :class:`SessionExpired`),
    then subscribes touchline with ``{"t": "t", "k": "NSE|22#NFO|43210"}`` (at most 500 tokens
    per connection). ``tk`` snapshots and ``tf`` partial updates (only changed fields) are
    merged per token; a Tick is emitted when the last price or the day volume changed, at
    the feed time ``ft`` (receipt time until one is known). ``{"t": "h"}`` is sent every
    ``app_heartbeat`` seconds (Definedge requires it every 50 s; the SDK never sends it).
    Instruments need ``broker_ids["definedge"]`` (the token).
    """

    name = "definedge"
    _max_instruments = 500
    _batch = 100

    def __init__(self, uid: str, actid: str, susertoken: Any, instruments: Sequence[Instrument] = (), *,
                 url: str | None = None, heartbeat: float = 1.0, app_heartbeat: float = 50.0,
                 backoff: Sequence[float] = _BACKOFF, open_timeout: float = 10.0,
                 exchange_time: Literal["auto", "ist", "utc"] = "auto", clock: Clock = _utcnow) -> None:
        token = _secret_value(susertoken)
        if not uid or not actid or not token:
            raise ConfigError("Definedge feed needs uid, actid and the websocket session key (susertoken): "
                              "take them from tradeflow.session.definedge_session()")
        if not app_heartbeat > 0:
            raise ValueError(f"app_heartbeat must be a positive number of seconds, got {app_heartbeat!r}")
        _REDACTOR.add(token)
        self.uid, self.actid = str(uid), str(actid)
        self._token = token
        self.app_heartbeat = float(app_heartbeat)
        self._symbols: dict[tuple[str, str], str] = {}
        self._state: dict[tuple[str, str], dict[str, str]] = {}
        self._last_beat = 0.0
        super().__init__(instruments, url=_feed_url(url, "TRADEFLOW_DEFINEDGE_FEED_URL", "definedge_ws_url"),
                         heartbeat=heartbeat, backoff=backoff, open_timeout=open_timeout, clock=clock,
                         exchange_time=exchange_time, exchange_default="utc")
        self._poll = min(0.25, self.app_heartbeat / 4)

    def __repr__(self) -> str:
        return f"DefinedgeFeedStream(actid={self.actid!r}, url={_host(self.url)!r}, instruments={len(self._subs)})"

    def _key(self, inst: Instrument) -> tuple[Any, str]:
        try:
            exchange = _DEFINEDGE_EXCHANGE[inst.segment]
        except KeyError:
            raise ValueError(f"{inst.symbol}: segment {inst.segment} has no Definedge exchange") from None
        token = str(inst.id_for("definedge"))
        self._symbols[(exchange, token)] = inst.symbol
        return (exchange, token)

    def _connect_url(self) -> str:
        return self.url

    def _open(self, ws: Any) -> None:
        self._state.clear()
        ws.send(json.dumps({"t": "c", "uid": self.uid, "actid": self.actid, "source": "TRTP",
                            "susertoken": self._token}))
        deadline = time.monotonic() + self.open_timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("Definedge did not acknowledge the login")
            reply = json.loads(ws.recv(timeout=left))
            if isinstance(reply, dict) and reply.get("t") == "ck":
                break
        if str(reply.get("s", "")).upper() != "OK":
            raise SessionExpired(f"Definedge refused the websocket login ({reply.get('s')!r}); the session key "
                                 "has expired: log in again (tradeflow session login --broker definedge)")
        self._last_beat = time.monotonic()
        with self._lock:
            instruments = list(self._subs.values())
        self._send_subscriptions(ws, instruments)

    def _send_subscriptions(self, ws: Any, instruments: list[Instrument]) -> None:
        keys = [self._key(i) for i in instruments]
        for start in range(0, len(keys), self._batch):
            chunk = keys[start:start + self._batch]
            ws.send(json.dumps({"t": "t", "k": "#".join(f"{e}|{tk}" for e, tk in chunk)}))

    def _idle(self, ws: Any) -> None:
        if time.monotonic() - self._last_beat >= self.app_heartbeat:
            ws.send(json.dumps({"t": "h"}))
            self._last_beat = time.monotonic()

    def _on_message(self, ws: Any, data: str | bytes, received: pd.Timestamp) -> list[Tick]:
        payload = json.loads(data)
        ticks = []
        for msg in payload if isinstance(payload, list) else [payload]:
            if not isinstance(msg, dict) or msg.get("t") not in ("tk", "tf"):
                continue
            key = (str(msg.get("e", "")), str(msg.get("tk", "")))
            symbol = self._symbols.get(key)
            if symbol is None:
                continue
            snapshot = msg["t"] == "tk"
            prior = self._state.get(key)
            state = {} if snapshot or prior is None else dict(prior)
            state.update({k: str(v) for k, v in msg.items()})
            self._state[key] = state
            price = _num(state.get("lp"))
            if price is None or price <= 0:
                continue
            old_price = _num(prior.get("lp")) if prior else None
            old_volume = _num(prior.get("v")) if prior else None
            volume = _num(state.get("v"))
            if prior is not None and not snapshot and "lp" not in msg and "v" not in msg:
                continue  # depth/OI-only update: nothing traded
            if prior is not None and price == old_price and volume == old_volume:
                continue
            traded = max(volume - old_volume, 0.0) if volume is not None and old_volume is not None else 0.0
            ft = _num(state.get("ft"))
            fresh = prior is not None and "ft" in msg and str(msg["ft"]) != prior.get("ft")
            ts = self._times.to_utc(ft or 0, received, fresh=fresh)
            ticks.append(Tick(symbol, ts, price, traded))
        return ticks


# ---------------------------------------------------------------------- resilient wrapper


class _Pump:
    """Iterates one stream in a daemon thread, posting ``(role, generation, event)`` to a queue."""

    def __init__(self, stream: TickStream, role: str, gen: int, out: queue.Queue) -> None:
        self.stream, self.role, self.gen = stream, role, gen
        self.started = time.monotonic()
        self._out = out
        self._thread = threading.Thread(target=self._run, name=f"tradeflow-{role}-{gen}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for event in self.stream:
                self._out.put((self.role, self.gen, event))
            self._out.put((self.role, self.gen, _END))
        except BaseException as exc:  # reported to the consumer, who decides
            self._out.put((self.role, self.gen, _Fatal(exc)))

    def stop(self, *, wait: bool = True) -> None:
        """Close the stream; ``wait=False`` closes it in the background (a websocket's close
        handshake can take a moment, and a switch-over should not hold up the engine)."""
        if not wait:
            threading.Thread(target=self.stop, name=f"tradeflow-close-{self.role}-{self.gen}", daemon=True).start()
            return
        try:
            self.stream.close()
        except Exception as exc:  # closing a broken stream must not break the switch-over
            log.debug("closing %s failed (%s)", self.role, _describe(exc))


class ResilientStream:
    """A primary stream kept alive, with a polling fallback while it is silent in market hours.

    * The primary (made by ``primary_factory``, subscribed to every instrument given to
      ``subscribe``) is recreated after ``backoff`` pauses whenever it ends or fails;
      :class:`SessionExpired` from either stream is raised out of the iterator.
    * Watchdog: when ``market_open(now)`` (default :func:`is_market_open`) and no tick came
      from the primary for ``watchdog`` seconds, it logs a warning and switches to the
      stream made by ``fallback_factory`` (e.g. a :class:`PollingStream`). The primary keeps
      running in the background and, while silent, is recreated every ``watchdog`` seconds
      (or the current ``backoff`` pause if longer); its first tick switches back (logged),
      closes the fallback and is forwarded.
    * Outside market hours silence is normal: no fallback, no recreation.
    * Heartbeats: those of the active stream, plus its own after ``heartbeat`` seconds
      without any event (e.g. while the primary is reconnecting).

    Waiting happens on one event queue fed by both streams' threads (so fallback ticks keep
    flowing during a reconnect pause), which is why this is a small scheduling loop rather
    than a tenacity retry. ``clock`` gives "now" for the market-hours check and Heartbeats;
    the watchdog and backoff pauses are measured in real (monotonic) seconds.
    """

    def __init__(self, primary_factory: Callable[[], TickStream], *,
                 fallback_factory: Callable[[], TickStream] | None = None, watchdog: float = 30.0,
                 backoff: Sequence[float] = _BACKOFF, market_open: Callable[[pd.Timestamp], bool] = is_market_open,
                 heartbeat: float = 1.0, clock: Clock = _utcnow, name: str | None = None) -> None:
        if not watchdog > 0 or not heartbeat > 0:
            raise ValueError("watchdog and heartbeat must be positive numbers of seconds")
        if not backoff:
            raise ValueError("backoff needs at least one pause")
        self._factories: dict[str, Callable[[], TickStream] | None] = {"primary": primary_factory,
                                                                       "fallback": fallback_factory}
        self.watchdog, self.heartbeat = float(watchdog), float(heartbeat)
        self.backoff = tuple(float(b) for b in backoff)
        self._market_open, self._clock = market_open, clock
        self._named = name is not None
        self.name = name or "resilient"
        self._instruments: list[Instrument] = []
        self._events: queue.Queue = queue.Queue()
        self._pumps: dict[str, _Pump | None] = {"primary": None, "fallback": None}
        self._gen = 0
        self._mode: Literal["primary", "fallback"] = "primary"
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._health = _Health(self.name)
        self._restarts = 0
        self._inner_reconnects = 0

    def subscribe(self, instruments: list[Instrument]) -> None:
        with self._lock:
            known = {(i.segment, i.symbol) for i in self._instruments}
            new = [i for i in instruments if (i.segment, i.symbol) not in known]
            self._instruments.extend(new)
            pumps = [p for p in self._pumps.values() if p is not None]
        if new:
            for pump in pumps:
                pump.stream.subscribe(new)

    # -- helpers
    def _start(self, role: str) -> _Pump:
        factory = self._factories[role]
        if factory is None:
            raise ValueError(f"{self.name}: no {role} factory")
        stream = factory()
        with self._lock:
            if self._instruments:
                stream.subscribe(list(self._instruments))
            self._gen += 1
            pump = _Pump(stream, role, self._gen, self._events)
            self._pumps[role] = pump
        if role == "primary" and not self._named:
            self.name = f"resilient({stream.name})"
            self._health.set(source=self.name)
        return pump

    def _drop(self, role: str, *, wait: bool = False) -> None:
        with self._lock:
            pump, self._pumps[role] = self._pumps[role], None
        if pump is None:
            return
        if role == "primary":
            self._inner_reconnects += pump.stream.health.reconnects
        pump.stop(wait=wait)

    def _refresh_health(self) -> None:
        primary = self._pumps["primary"]
        inner = primary.stream.health if primary is not None else None
        if self._closed.is_set():
            state: State = "closed"
        elif self._mode == "fallback":
            state = "polling"
        elif inner is None:
            state = "reconnecting"
        else:
            state = inner.state if inner.state in ("connecting", "reconnecting") else "live"
        total = self._restarts + self._inner_reconnects + (inner.reconnects if inner is not None else 0)
        self._health.set(state=state, reconnects=total)

    def _pause(self, failures: int) -> float:
        return self.backoff[min(failures, len(self.backoff) - 1)]

    # -- iteration
    def __iter__(self) -> Iterator[Event]:
        mono = time.monotonic
        failures = {"primary": 0, "fallback": 0}  # consecutive failures, for the backoff
        retry_at: dict[str, float | None] = {"primary": None, "fallback": None}
        last_primary_tick = last_yield = mono()
        step = min(0.2, self.watchdog / 4, self.heartbeat)
        self._start("primary")
        try:
            while not self._closed.is_set():
                now_m = mono()
                market = self._market_open(_as_utc(self._clock()))
                for role in ("primary", "fallback"):
                    at = retry_at[role]
                    if at is not None and now_m >= at and (role == "primary" or self._mode == "fallback"):
                        retry_at[role] = None
                        self._restarts += role == "primary"
                        pump = self._start(role)
                        log.info("%s: %s %s restarted", self.name, role, pump.stream.name)
                primary = self._pumps["primary"]
                if (self._mode == "primary" and market and now_m - last_primary_tick >= self.watchdog
                        and self._factories["fallback"] is not None):
                    self._mode = "fallback"
                    self._health.add("fallbacks")
                    log.warning("%s: no tick from the primary feed for %.3g s during market hours; "
                                "switching to the polling fallback", self.name, now_m - last_primary_tick)
                    self._start("fallback")
                elif self._mode == "fallback" and not market:
                    self._mode = "primary"
                    log.info("%s: the market has closed; the polling fallback is stopped", self.name)
                    self._drop("fallback")
                    retry_at["fallback"] = None
                    last_primary_tick = now_m
                elif self._mode == "fallback" and primary is not None:
                    quiet = max(self.watchdog, self._pause(failures["primary"]))
                    if now_m - max(primary.started, last_primary_tick) >= quiet:
                        log.info("%s: the primary feed is still silent; recreating it", self.name)
                        failures["primary"] += 1
                        self._drop("primary")
                        self._restarts += 1
                        self._start("primary")
                self._refresh_health()
                try:
                    role, gen, item = self._events.get(timeout=step)
                except queue.Empty:
                    if mono() - last_yield >= self.heartbeat:
                        last_yield = mono()
                        yield Heartbeat(self._clock())
                    continue
                current = self._pumps[role]
                if current is None or current.gen != gen:
                    continue  # from a stream already replaced or closed
                if item is _END or isinstance(item, _Fatal):
                    exc = item.exc if isinstance(item, _Fatal) else None
                    text = _describe(exc) if exc is not None else "the stream ended"
                    self._health.set(last_error=text)
                    if isinstance(exc, SessionExpired):
                        log.error("%s: %s %s: %s", self.name, role, current.stream.name, text)
                        raise exc
                    pause = self._pause(failures[role])
                    failures[role] += 1
                    log.warning("%s: %s %s stopped (%s); retrying in %.3g s", self.name, role, current.stream.name,
                                text, pause)
                    self._drop(role)
                    retry_at[role] = mono() + pause
                    continue
                if isinstance(item, Heartbeat):
                    if (role == "primary") == (self._mode == "primary"):
                        last_yield = mono()
                        yield item
                    continue
                if role == "primary":
                    last_primary_tick = mono()
                    failures["primary"] = 0
                    if self._mode == "fallback":
                        self._mode = "primary"
                        log.warning("%s: the primary feed %s delivers again; switching back from polling",
                                    self.name, current.stream.name)
                        self._drop("fallback")
                        retry_at["fallback"] = None
                elif self._mode != "fallback":
                    continue  # a late event of a fallback being closed
                else:
                    failures["fallback"] = 0
                if isinstance(item, Tick):
                    self._health.tick(item.ts)
                last_yield = mono()
                yield item
        finally:
            self.close()

    def close(self) -> None:
        self._closed.set()
        for role in ("fallback", "primary"):
            self._drop(role, wait=True)
        self._health.set(state="closed")

    @property
    def health(self) -> FeedHealth:
        return self._health.snapshot()


# ---------------------------------------------------------------------- factory

_KINDS = ("replay", "sim", "poll", "dhan", "definedge")


def open_stream(kind: str, *, instruments: Sequence[Instrument] | None = None, symbols: Sequence[str] | None = None,
                candles: dict[str, pd.DataFrame] | None = None, market: SimMarket | None = None,
                broker: Broker | None = None, client_id: str | None = None, access_token: Any = None,
                uid: str | None = None, actid: str | None = None, susertoken: Any = None, url: str | None = None,
                resilient: bool = True, watchdog: float = 30.0, poll_interval: float = 1.0,
                **options: Any) -> TickStream:
    """The stream called ``kind``, subscribed to ``instruments``.

    * ``"replay"``: ``candles`` (symbol → frame) required; ``options`` go to :class:`ReplayStream`.
    * ``"sim"``: the simulated market (``market`` or one seeded from settings), ``symbols`` or
      the instruments' symbols (default: every sim symbol); ``options`` to :class:`SimLiveStream`.
    * ``"poll"``: ``broker`` and ``instruments`` required; ``options`` to :class:`PollingStream`.
    * ``"dhan"``: ``client_id``/``access_token``, else ``DHAN_CLIENT_ID``/``DHAN_ACCESS_TOKEN``
      from the environment or ``.env`` (:class:`ConfigError` when missing).
    * ``"definedge"``: ``uid``, ``actid`` and ``susertoken`` (the websocket session key from
      :func:`tradeflow.session.definedge_session`); :class:`ConfigError` when missing.

    Broker feeds are wrapped in a :class:`ResilientStream` unless ``resilient=False``; given a
    ``broker``, it polls that broker's quotes as the fallback (every ``poll_interval`` s).
    """
    key = str(kind).strip().lower()
    if key not in _KINDS:
        hint = difflib.get_close_matches(key, _KINDS, n=1)
        raise ValueError(f"unknown stream kind {kind!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                         + f": choose one of {', '.join(_KINDS)}")
    instruments = list(instruments or [])
    if key == "replay":
        if not candles:
            raise ValueError("a replay stream needs candles= (a dict of symbol -> candle frame)")
        stream: TickStream = ReplayStream(candles, **options)
    elif key == "sim":
        if market is None:
            from .config import settings

            market = SimMarket(settings().sim_seed)
        names = list(symbols or [i.symbol for i in instruments] or market.symbols())
        return SimLiveStream(market, names, **options)
    elif key == "poll":
        if broker is None:
            raise ValueError("a polling stream needs broker= (a Broker whose quote() it calls)")
        if not instruments:
            raise ValueError("a polling stream needs instruments= to poll")
        return PollingStream(broker, instruments, interval=poll_interval, **options)
    else:
        if key == "dhan":
            from .config import broker_settings

            cfg = broker_settings()
            client_id = client_id or cfg.dhan_client_id
            token = access_token if access_token is not None else cfg.dhan_access_token
            missing = [n for n, v in (("DHAN_CLIENT_ID", client_id), ("DHAN_ACCESS_TOKEN", token)) if not v]
            if missing:
                raise ConfigError(f"the Dhan feed needs {' and '.join(missing)}: set them in the environment or .env "
                                  "(or pass client_id= / access_token=)")
            make: Callable[[], TickStream] = lambda: DhanFeedStream(client_id, token, url=url, **options)  # noqa: E731
        else:
            missing = [n for n, v in (("uid", uid), ("actid", actid), ("susertoken", susertoken)) if not v]
            if missing:
                raise ConfigError(f"the Definedge feed needs {', '.join(missing)}: pass the session keys from "
                                  "tradeflow.session.definedge_session() (uid, actid, ws_session_key)")
            make = lambda: DefinedgeFeedStream(uid, actid, susertoken, url=url, **options)  # noqa: E731
        if not resilient:
            stream = make()
        else:
            fallback = None
            if broker is not None:
                fallback = lambda: PollingStream(broker, interval=poll_interval)  # noqa: E731
            stream = ResilientStream(make, fallback_factory=fallback, watchdog=watchdog)
    if instruments:
        stream.subscribe(instruments)
    return stream

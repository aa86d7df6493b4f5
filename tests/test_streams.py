"""Streams: replay merge, simulated live pacing, polling, both broker websockets on loopback, failover."""

from __future__ import annotations

import json
import logging
import struct
import threading
import time
from collections.abc import Callable, Iterator

import pandas as pd
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import serve

from tradeflow.brokers.base import (
    BrokerUnavailable,
    Instrument,
    InstrumentKind,
    Quote,
    RateLimited,
    Segment,
    SessionExpired,
)
from tradeflow.brokers.sim import SimMarket
from tradeflow.calendar import is_session
from tradeflow.errors import ConfigError
from tradeflow.feeds import Bar, Tick, replay_ticks
from tradeflow.streams import (
    DefinedgeFeedStream,
    DhanFeedStream,
    FeedHealth,
    Heartbeat,
    PollingStream,
    ReplayStream,
    ResilientStream,
    SimLiveStream,
    TickStream,
    _ExchangeClock,
    is_market_open,
    open_stream,
)
from tradeflow.timeframes import ONE_MINUTE

IST = "Asia/Kolkata"
TOKEN = "JWT-SECRET-TOKEN-0123456789"
WS_KEY = "WS-SESSION-KEY-9876543210"

TCS = Instrument("TCS", Segment.NSE_EQ, InstrumentKind.EQUITY, broker_ids={"dhan": "11536", "definedge": "11536"})
ACC = Instrument("ACC", Segment.NSE_EQ, InstrumentKind.EQUITY, broker_ids={"definedge": "22"})
NIFTY_FUT = Instrument("NIFTY26JUNFUT", Segment.NSE_FNO, InstrumentKind.FUTIDX, lot_size=75,
                       broker_ids={"dhan": "49081", "definedge": "43210"})


def ist(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz=IST)


class FakeClock:
    """A clock that only moves when someone sleeps on it."""

    def __init__(self, start: pd.Timestamp) -> None:
        self.t = pd.Timestamp(start).tz_convert("UTC")
        self.sleeps: list[float] = []

    def __call__(self) -> pd.Timestamp:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += pd.Timedelta(seconds=seconds)


def take(stream, until: Callable[[list], bool], *, limit: float = 10.0, seen: list | None = None) -> list:
    """Events of ``stream`` until ``until(events)`` holds (fails after ``limit`` real seconds).

    ``seen`` collects ``stream.health`` after each event (while the iteration is still running).
    """
    events: list = []
    deadline = time.monotonic() + limit
    for ev in stream:
        events.append(ev)
        if seen is not None:
            seen.append(stream.health)
        if until(events):
            return events
        assert time.monotonic() < deadline, f"gave up after {limit}s with {len(events)} events"
    return events


def ticks_of(events: list) -> list[Tick]:
    return [e for e in events if isinstance(e, Tick)]


# ---------------------------------------------------------------------- replay


def test_replay_merges_symbols_in_time_order():
    sim = SimMarket(7)
    day = (ist("2024-06-03"), ist("2024-06-04"))
    a = sim.fetch("NIFTY", ONE_MINUTE, *day).iloc[:30]
    b = sim.fetch("TCS", ONE_MINUTE, *day).iloc[10:40]  # starts later, ends later
    stream = ReplayStream({"NIFTY": a, "TCS": b})
    assert isinstance(stream, TickStream)
    events = list(stream)
    assert len(events) == 4 * (len(a) + len(b))
    ns = [e.ns for e in events]
    assert ns == sorted(ns)
    assert {e.symbol for e in events[:40]} == {"NIFTY"}  # TCS only starts at 09:25
    assert [e for e in events if e.symbol == "TCS"] == list(replay_ticks(b, symbol="TCS"))
    assert stream.health.state == "closed" and stream.health.ticks == len(events)

    bars = list(ReplayStream({"NIFTY": a, "TCS": b}, as_ticks=False))
    assert all(isinstance(x, Bar) for x in bars)
    ends = [x.end for x in bars]
    assert ends == sorted(ends) and len(bars) == len(a) + len(b)

    narrowed = ReplayStream({"NIFTY": a, "TCS": b})
    narrowed.subscribe([TCS])
    assert {e.symbol for e in narrowed} == {"TCS"}
    with pytest.raises(ValueError, match="did you mean 'NIFTY'"):
        narrowed.subscribe([Instrument("NIFTI", Segment.NSE_IDX, InstrumentKind.INDEX)])


def test_replay_paces_with_the_injected_sleep():
    a = SimMarket(7).fetch("NIFTY", ONE_MINUTE, ist("2024-06-03"), ist("2024-06-04")).iloc[:10]
    slept: list[float] = []
    events = list(ReplayStream({"NIFTY": a}, speed=60, sleep=slept.append))
    assert len(events) == 40
    assert sum(slept) == pytest.approx((events[-1].ns - events[0].ns) / 1e9 / 60)


# ---------------------------------------------------------------------- simulated live


def test_sim_live_in_session_catches_up_then_follows_the_clock(caplog):
    caplog.set_level(logging.INFO, logger="tradeflow")
    assert is_session("2024-06-05")
    clock = FakeClock(ist("2024-06-05 10:00"))
    assert is_market_open(clock())
    stream = SimLiveStream(SimMarket(42), ["NIFTY", "TCS"], heartbeat=5.0, clock=clock, sleep=clock.sleep)
    seen: list[tuple[object, pd.Timestamp]] = []
    for ev in stream:
        seen.append((ev, clock()))
        if len([e for e, _ in seen if isinstance(e, Tick)]) >= 360 + 20:
            break
    stream.close()
    assert "session of 2024-06-05 is open" in caplog.text

    # 45 bars (09:15..09:59) x 4 ticks x 2 symbols were due at 10:00: emitted without sleeping
    catch_up = [e for e, at in seen if at == ist("2024-06-05 10:00")]
    assert len(catch_up) == 360 and all(isinstance(e, Tick) for e in catch_up)
    assert max(e.ts for e in catch_up) == ist("2024-06-05 09:59:48")
    # afterwards nothing is emitted before its time, and the idle gaps carry Heartbeats
    assert all(ev.ts <= at for ev, at in seen)
    later = [(e, at) for e, at in seen[360:]]
    assert isinstance(later[0][0], Heartbeat) and later[0][0].ts == ist("2024-06-05 10:00:05")
    first_tick = next(e for e, _ in later if isinstance(e, Tick))
    assert first_tick.ts == ist("2024-06-05 10:00:12")
    # the ticks are the sim's own 1-minute bars as synthetic ticks
    day = SimMarket(42, now=ist("2024-06-05 15:30")).fetch("TCS", ONE_MINUTE, ist("2024-06-05 09:15"),
                                                            ist("2024-06-05 15:30"))
    expected = list(replay_ticks(day, symbol="TCS"))
    got = [e for e, _ in seen if isinstance(e, Tick) and e.symbol == "TCS"]
    assert got == expected[: len(got)]


def test_sim_live_when_closed_replays_the_last_session_at_speed(caplog):
    caplog.set_level(logging.INFO, logger="tradeflow")
    clock = FakeClock(ist("2024-06-08 11:00"))  # a Saturday
    assert not is_market_open(clock())
    stream = SimLiveStream(SimMarket(42), ["INFY"], speed=60, clock=clock, sleep=clock.sleep)
    events = list(stream)
    assert "replaying the sim session of 2024-06-07 at 60x" in caplog.text
    ticks = ticks_of(events)
    assert len(ticks) == 375 * 4
    assert {t.ts.tz_convert(IST).date().isoformat() for t in ticks} == {"2024-06-07"}
    assert events[-1] == Heartbeat(ist("2024-06-07 15:30"))
    assert sum(clock.sleeps) == pytest.approx(6.25 * 3600 / 60)  # the session's 6h15m at 60x
    # after the close on a session day, that day's session is the one replayed
    late = FakeClock(ist("2024-06-07 16:00"))
    first = next(iter(SimLiveStream(SimMarket(42), ["INFY"], speed=None, clock=late, sleep=late.sleep)))
    assert first.ts.tz_convert(IST).date().isoformat() == "2024-06-07"


# ---------------------------------------------------------------------- polling


class FakeBroker:
    name = "fake"

    def __init__(self, script: list, clock: FakeClock | None = None) -> None:
        self.script = list(script)
        self.clock = clock
        self.calls: list[pd.Timestamp] = []

    def quote(self, instruments: list[Instrument]) -> dict[str, Quote]:
        self.calls.append(self.clock() if self.clock else pd.Timestamp.now(tz="UTC"))
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(step, Exception):
            raise step
        if callable(step):
            step = step()
        by_symbol = {i.symbol: i for i in instruments}
        return {s: Quote(by_symbol[s], price, time=at, volume=vol) for s, (price, at, vol) in step.items()}


def test_polling_dedupes_and_respects_the_rate():
    clock = FakeClock(ist("2024-06-05 10:00"))
    t1, t2 = ist("2024-06-05 09:59:59"), ist("2024-06-05 10:00:01")
    broker = FakeBroker([
        {"TCS": (100.0, t1, 1000), "ACC": (200.0, t1, 50)},
        {"TCS": (100.0, t1, 1000), "ACC": (200.0, t1, 50)},  # nothing new
        {"TCS": (100.0, t2, 1010), "ACC": (201.0, t1, 50)},  # same price, new trade time; new price
    ], clock)
    stream = PollingStream(broker, [TCS, ACC], interval=0.1, rate=1.0, clock=clock, sleep=clock.sleep)
    seen: list[FeedHealth] = []
    events = take(stream, lambda ev: len(broker.calls) == 3 and len(ticks_of(ev)) == 4, seen=seen)
    assert [type(e).__name__ for e in events] == ["Tick", "Tick", "Heartbeat", "Tick", "Tick"]
    assert events[0] == Tick("TCS", t1, 100.0, 0.0)
    assert events[3] == Tick("TCS", t2, 100.0, 10.0)  # volume: the change of the day volume
    assert events[4] == Tick("ACC", t1, 201.0, 0.0)
    gaps = [(b - a).total_seconds() for a, b in zip(broker.calls, broker.calls[1:])]
    assert all(g >= 1.0 - 1e-6 for g in gaps), gaps  # the 1/s bucket, not the 0.1 s interval, sets the pace
    assert {h.state for h in seen} == {"polling"}
    assert stream.health.ticks == 4 and stream.health.state == "closed"  # the iteration has ended


def test_polling_backs_off_on_rate_limit_and_outage_and_stops_on_expiry(caplog):
    clock = FakeClock(ist("2024-06-05 10:00"))
    ok = {"TCS": (100.0, ist("2024-06-05 09:59:59"), 10)}
    broker = FakeBroker([RateLimited("429 slow down"), BrokerUnavailable("HTTP 502"), ok,
                         SessionExpired("DH-901 token expired")], clock)
    stream = PollingStream(broker, [TCS], interval=1.0, backoff=(2.0, 5.0), clock=clock, sleep=clock.sleep)
    events = []
    with pytest.raises(SessionExpired):
        for ev in stream:
            events.append(ev)
    assert [type(e).__name__ for e in events] == ["Heartbeat", "Heartbeat", "Tick"]
    assert 2.0 in clock.sleeps and 5.0 in clock.sleeps  # growing pauses after consecutive failures
    assert "RateLimited: 429 slow down" in caplog.text and "BrokerUnavailable: HTTP 502" in caplog.text
    assert stream.health.last_error.startswith("SessionExpired")


# ---------------------------------------------------------------------- local websocket servers

_QUIET = logging.getLogger("test.wsserver")
_QUIET.setLevel(logging.CRITICAL)
_QUIET.propagate = False


class WsServer:
    """A websockets server on 127.0.0.1 that plays one script per incoming connection."""

    def __init__(self, scripts: list[Callable]) -> None:
        self.scripts = scripts
        self.paths: list[str] = []
        self.received: list[list] = []
        self.errors: list[BaseException] = []
        self._server = serve(self._handle, "127.0.0.1", 0, logger=_QUIET)
        self.url = f"ws://127.0.0.1:{self._server.socket.getsockname()[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _handle(self, ws) -> None:
        n = len(self.paths)
        self.paths.append(ws.request.path)
        self.received.append([])
        try:
            self.scripts[min(n, len(self.scripts) - 1)](ws, self.received[n])
        except ConnectionClosed:
            pass
        except BaseException as exc:  # surfaced by the test
            self.errors.append(exc)

    def close(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=2)


def recv_json(ws, box: list, timeout: float = 5.0) -> dict:
    msg = json.loads(ws.recv(timeout=timeout))
    box.append(msg)
    return msg


def hold(ws, box: list) -> None:
    """Keep the connection open, recording what the client sends, until it goes away."""
    while True:
        box.append(json.loads(ws.recv(timeout=10)))


# Dhan v2 packets, little-endian (layouts of dhanhq.marketfeed)
def d_ticker(seg: int, sid: int, ltp: float, ltt: int) -> bytes:
    return struct.pack("<BHBIfI", 2, 16, seg, sid, ltp, ltt)


def d_prev_close(seg: int, sid: int, price: float) -> bytes:
    return struct.pack("<BHBIfI", 6, 16, seg, sid, price, 0)


def d_quote(seg: int, sid: int, ltp: float, ltt: int, volume: int) -> bytes:
    return struct.pack("<BHBIfHIfIIIffff", 4, 50, seg, sid, ltp, 5, ltt, ltp, volume, 0, 0, ltp, ltp, ltp, ltp)


def d_full(seg: int, sid: int, ltp: float, ltt: int, volume: int) -> bytes:
    head = struct.pack("<BHBIfHIfIIIIIIffff", 8, 162, seg, sid, ltp, 5, ltt, ltp, volume, 0, 0, 0, 0, 0, ltp, ltp,
                       ltp, ltp)
    return head + bytes(100)


def d_disconnect(reason: int) -> bytes:
    return struct.pack("<BHBIH", 50, 10, 0, 0, reason)


def test_dhan_feed_parses_reconnects_resubscribes_and_stops_on_expired_token(caplog):
    caplog.set_level(logging.DEBUG, logger="tradeflow")
    caplog.set_level(logging.DEBUG, logger="tradeflow.streams.wire")  # even with wire debugging on
    now_ist_epoch = int(time.time()) + 19_800  # Dhan's LTT: the IST wall clock written as an epoch

    def first(ws, box):
        recv_json(ws, box)
        ws.send(d_ticker(1, 11536, 3345.8, now_ist_epoch) + d_prev_close(1, 11536, 3300.0)
                + d_ticker(2, 49081, 101.5, now_ist_epoch))  # several packets in one frame
        ws.send(d_quote(1, 11536, 3346.0, now_ist_epoch + 1, 1000))
        ws.send(d_quote(1, 11536, 3346.0, now_ist_epoch + 1, 1000))  # repeated: no tick
        ws.send(d_full(1, 11536, 3346.5, now_ist_epoch + 2, 1010))
        time.sleep(0.1)
        # returning drops the connection: the client must reconnect and subscribe again

    def second(ws, box):
        recv_json(ws, box)
        ws.send(d_ticker(1, 11536, 3347.0, now_ist_epoch + 3))
        time.sleep(0.1)
        ws.send(d_disconnect(807))
        hold(ws, box)

    server = WsServer([first, second])
    try:
        stream = DhanFeedStream("1000000001", TOKEN, [TCS, NIFTY_FUT], url=server.url, heartbeat=0.2,
                                backoff=(0.05,))
        events = []
        with pytest.raises(SessionExpired, match="access token has expired"):
            for ev in stream:
                events.append(ev)
                assert len(events) < 200
    finally:
        server.close()
    assert not server.errors
    expected_sub = {"RequestCode": 17, "InstrumentCount": 2, "InstrumentList": [
        {"ExchangeSegment": "NSE_EQ", "SecurityId": "11536"}, {"ExchangeSegment": "NSE_FNO", "SecurityId": "49081"}]}
    assert len(server.paths) == 2
    assert server.received[0][0] == expected_sub and server.received[1][0] == expected_sub
    assert server.paths[0] == f"/?version=2&token={TOKEN}&clientId=1000000001&authType=2"

    def at(epoch: int) -> pd.Timestamp:
        return pd.Timestamp(epoch - 19_800, unit="s", tz="UTC")

    assert ticks_of(events) == [
        Tick("TCS", at(now_ist_epoch), 3345.8, 0.0),
        Tick("NIFTY26JUNFUT", at(now_ist_epoch), 101.5, 0.0),
        Tick("TCS", at(now_ist_epoch + 1), 3346.0, 0.0),
        Tick("TCS", at(now_ist_epoch + 2), 3346.5, 10.0),  # day volume 1000 -> 1010
        Tick("TCS", at(now_ist_epoch + 3), 3347.0, 0.0),  # first packet after the reconnect: a snapshot
    ]
    health = stream.health
    assert health.reconnects == 1 and health.state == "closed" and health.ticks == 5
    assert "807" in health.last_error
    for text in (caplog.text, repr(stream), str(health)):
        assert TOKEN not in text
    assert "token=***&clientId" in caplog.text  # the handshake line, masked
    assert "reconnecting" in caplog.text


def test_dhan_feed_batches_subscriptions_and_enforces_the_limit():
    many = [Instrument(f"S{i}", Segment.NSE_EQ, InstrumentKind.EQUITY, broker_ids={"dhan": str(1000 + i)})
            for i in range(250)]
    server = WsServer([hold])
    try:
        stream = DhanFeedStream("1000000001", TOKEN, many, url=server.url, mode="ticker", heartbeat=0.05)
        added: list[Instrument] = []

        def step(events: list) -> bool:
            if server.received and len(server.received[0]) == 3 and not added:
                added.append(TCS)
                stream.subscribe([TCS])  # while iterating, on a live connection: sent at once
            return bool(server.received) and len(server.received[0]) == 4

        take(stream, step)
        stream.close()
    finally:
        server.close()
    subs, goodbye = server.received[0][:-1], server.received[0][-1]
    assert [m["InstrumentCount"] for m in subs] == [100, 100, 50, 1] and {m["RequestCode"] for m in subs} == {15}
    assert [len(m["InstrumentList"]) for m in subs] == [100, 100, 50, 1]
    assert goodbye == {"RequestCode": 12}  # close() says goodbye before disconnecting
    assert server.received[0][3]["InstrumentList"] == [{"ExchangeSegment": "NSE_EQ", "SecurityId": "11536"}]
    too_many = [Instrument(f"S{i}", Segment.NSE_EQ, InstrumentKind.EQUITY, broker_ids={"dhan": str(i)})
                for i in range(5001)]
    with pytest.raises(ValueError, match="5000 instruments per connection"):
        DhanFeedStream("1000000001", TOKEN, too_many, url=server.url)


def test_exchange_time_auto_settles_on_what_fresh_updates_show(caplog):
    received = pd.Timestamp("2024-06-05 04:30:00", tz="UTC")
    epoch = int(received.value // 10**9)
    clock = _ExchangeClock("auto", default="ist", source="dhan")
    assert clock.to_utc(epoch + 19_800, received, fresh=False) == received  # believed IST-shifted
    for k in range(3):  # fresh updates carrying true UTC epochs
        clock.to_utc(epoch + k, received, fresh=True)
    assert clock.settled and clock.zone == "utc"
    assert "turned out to be true UTC epochs" in caplog.text
    assert clock.to_utc(epoch, received, fresh=False) == received
    assert clock.to_utc(0, received, fresh=True) == received  # no time: the receipt time


def test_definedge_feed_login_subscribe_partial_updates_heartbeat_and_reconnect(caplog):
    caplog.set_level(logging.DEBUG, logger="tradeflow")
    caplog.set_level(logging.DEBUG, logger="tradeflow.streams.wire")
    ft = int(time.time())

    def first(ws, box):
        recv_json(ws, box)
        ws.send(json.dumps({"t": "ck", "s": "Ok", "uid": "U1"}))
        recv_json(ws, box)
        ws.send(json.dumps({"t": "tk", "e": "NSE", "tk": "22", "ts": "ACC-EQ", "lp": "2100.50", "v": "1000"}))
        ws.send(json.dumps({"t": "tf", "e": "NSE", "tk": "22", "lp": "2101.00", "v": "1010", "ft": str(ft)}))
        ws.send(json.dumps({"t": "tf", "e": "NSE", "tk": "22", "v": "1025"}))  # a trade at the same price
        ws.send(json.dumps({"t": "tf", "e": "NSE", "tk": "22", "bp1": "2100.95"}))  # depth only: no tick
        ws.send(json.dumps({"t": "tf", "e": "NFO", "tk": "43210", "lp": "120.50", "ft": str(ft)}))
        while recv_json(ws, box, timeout=3).get("t") != "h":  # the app heartbeat the SDK never sends
            pass

    def second(ws, box):
        recv_json(ws, box)
        ws.send(json.dumps({"t": "ck", "s": "OK"}))
        recv_json(ws, box)
        ws.send(json.dumps({"t": "tf", "e": "NSE", "tk": "22", "lp": "2102", "v": "1030", "ft": str(ft + 5)}))
        hold(ws, box)

    server = WsServer([first, second])
    started = pd.Timestamp.now(tz="UTC")
    try:
        stream = DefinedgeFeedStream("U1", "A1", WS_KEY, [ACC, NIFTY_FUT], url=server.url, heartbeat=0.1,
                                     app_heartbeat=0.2, backoff=(0.05,))
        events = take(stream, lambda ev: len(ticks_of(ev)) == 5)
        stream.close()
    finally:
        server.close()
    assert not server.errors
    login = {"t": "c", "uid": "U1", "actid": "A1", "source": "TRTP", "susertoken": WS_KEY}
    subscribe = {"t": "t", "k": "NSE|22#NFO|43210"}
    assert server.received[0][:2] == [login, subscribe]
    assert server.received[0][-1] == {"t": "h"}
    assert server.received[1][:2] == [login, subscribe]  # the same after the reconnect

    at = pd.Timestamp(ft, unit="s", tz="UTC")
    ticks = ticks_of(events)
    snapshot = ticks[0]
    assert (snapshot.symbol, snapshot.price, snapshot.volume) == ("ACC", 2100.5, 0.0)
    assert started <= snapshot.ts <= pd.Timestamp.now(tz="UTC")  # no feed time yet: the receipt time
    assert ticks[1:] == [
        Tick("ACC", at, 2101.0, 10.0),
        Tick("ACC", at, 2101.0, 15.0),
        Tick("NIFTY26JUNFUT", at, 120.5, 0.0),
        Tick("ACC", at + pd.Timedelta(seconds=5), 2102.0, 0.0),
    ]
    assert stream.health.reconnects == 1
    fragments = {WS_KEY[i:i + 8] for i in range(len(WS_KEY) - 7)}
    assert not any(f in caplog.text for f in fragments)  # not even the tail of a truncated frame
    assert "> TEXT [" in caplog.text  # frames are logged by type and size


def test_definedge_refused_login_raises_session_expired():
    def refuse(ws, box):
        recv_json(ws, box)
        ws.send(json.dumps({"t": "ck", "s": "Not_Ok"}))
        time.sleep(0.2)

    server = WsServer([refuse])
    try:
        stream = DefinedgeFeedStream("U1", "A1", WS_KEY, [ACC], url=server.url, heartbeat=0.1, backoff=(0.05,))
        with pytest.raises(SessionExpired, match="refused the websocket login"):
            take(stream, lambda ev: False, limit=5)
    finally:
        server.close()
    assert len(server.paths) == 1  # no reconnect loop on a refused session


# ---------------------------------------------------------------------- resilient


class FakeStream:
    """A scripted TickStream: ``behaviour(stream)`` yields its events (runs in the pump thread)."""

    def __init__(self, name: str, behaviour: Callable[["FakeStream"], Iterator]) -> None:
        self.name = name
        self.behaviour = behaviour
        self.subscribed: list[Instrument] = []
        self.closed = False

    def subscribe(self, instruments):
        self.subscribed.extend(instruments)

    def __iter__(self):
        for ev in self.behaviour(self):
            if self.closed:
                return
            yield ev

    def close(self):
        self.closed = True

    @property
    def health(self) -> FeedHealth:
        return FeedHealth(self.name, state="closed" if self.closed else "live")


def ticking(price: float, *, first_only: bool = False, every: float = 0.02):
    def run(s: FakeStream):
        n = 0
        while not s.closed:
            if not (first_only and n):
                yield Tick("TCS", pd.Timestamp.now(tz="UTC"), price + n)
            else:
                yield Heartbeat(pd.Timestamp.now(tz="UTC"))
            n += 1
            time.sleep(every)
    return run


def silent(s: FakeStream):
    while not s.closed:
        yield Heartbeat(pd.Timestamp.now(tz="UTC"))
        time.sleep(0.05)


def factory(behaviours: list) -> Callable[[], FakeStream]:
    made: list[FakeStream] = []

    def make() -> FakeStream:
        s = FakeStream(f"fake{len(made)}", behaviours[min(len(made), len(behaviours) - 1)])
        made.append(s)
        return s

    make.made = made  # type: ignore[attr-defined]
    return make


def test_resilient_falls_back_to_polling_when_silent_in_market_hours_and_switches_back(caplog):
    caplog.set_level(logging.INFO, logger="tradeflow")
    # one tick then silence; recreated once the watchdog fires: still silent; recreated again: healthy
    primary = factory([ticking(100.0, first_only=True), silent, ticking(300.0)])
    prices = iter(range(500, 10_000))
    broker = FakeBroker([lambda: {"TCS": (float(next(prices)), None, None)}])
    fallbacks: list[PollingStream] = []

    def poll() -> PollingStream:
        fallbacks.append(PollingStream(broker, interval=0.02, rate=100))
        return fallbacks[-1]

    stream = ResilientStream(primary, fallback_factory=poll, watchdog=0.3, backoff=(0.05,), heartbeat=0.1,
                             market_open=lambda now: True)
    stream.subscribe([TCS])
    seen: list[FeedHealth] = []
    events = take(stream, lambda ev: len([t for t in ticks_of(ev) if 300 <= t.price < 500]) >= 3, seen=seen)
    health = seen[-1]
    stream.close()

    sources = []
    for t in ticks_of(events):
        src = "p1" if t.price < 300 else "p2" if t.price < 500 else "poll"
        if not sources or sources[-1] != src:
            sources.append(src)
    assert sources == ["p1", "poll", "p2"]
    assert len(fallbacks) == 1 and health.fallbacks == 1 and health.state == "live"
    assert "polling" in {h.state for h in seen}
    assert stream.health.state == "closed"
    assert health.reconnects == 2 and len(primary.made) == 3
    assert len([t for t in ticks_of(events) if t.price >= 500]) >= 5  # polled while the primary was down
    assert all(s.subscribed == [TCS] for s in primary.made)  # resubscribed after the recreation
    assert "switching to the polling fallback" in caplog.text
    assert "delivers again; switching back from polling" in caplog.text
    assert fallbacks[0].health.state == "closed"  # the fallback was closed on the way back


def test_resilient_ignores_silence_outside_market_hours():
    primary = factory([ticking(100.0, first_only=True)])
    called: list[int] = []

    def poll():
        called.append(1)
        raise AssertionError("no fallback outside market hours")

    stream = ResilientStream(primary, fallback_factory=poll, watchdog=0.2, backoff=(0.05,), heartbeat=0.1,
                             market_open=lambda now: False)
    stream.subscribe([TCS])
    start = time.monotonic()
    seen: list[FeedHealth] = []
    events = take(stream, lambda ev: time.monotonic() - start > 1.0, seen=seen)
    health = seen[-1]
    stream.close()
    assert not called and health.fallbacks == 0 and health.state == "live"
    assert len(primary.made) == 1 and len(ticks_of(events)) == 1
    assert sum(isinstance(e, Heartbeat) for e in events) >= 5


def test_resilient_restarts_a_failed_primary_and_raises_an_expired_session(caplog):
    def boom(s):
        yield Tick("TCS", pd.Timestamp.now(tz="UTC"), 100.0)
        raise ConnectionError("socket reset")

    def expired(s):
        yield Tick("TCS", pd.Timestamp.now(tz="UTC"), 101.0)
        raise SessionExpired("token expired")

    primary = factory([boom, expired])
    stream = ResilientStream(primary, watchdog=5.0, backoff=(0.05,), heartbeat=0.1, market_open=lambda now: False)
    events = []
    with pytest.raises(SessionExpired):
        for ev in stream:
            events.append(ev)
    assert [t.price for t in ticks_of(events)] == [100.0, 101.0]
    assert "ConnectionError: socket reset" in caplog.text
    assert stream.health.reconnects == 1 and stream.health.state == "closed"


# ---------------------------------------------------------------------- factory


def test_open_stream_kinds_and_clear_errors(monkeypatch):
    with pytest.raises(ValueError, match="did you mean 'definedge'"):
        open_stream("definedg")
    with pytest.raises(ConfigError, match="DHAN_CLIENT_ID and DHAN_ACCESS_TOKEN"):
        open_stream("dhan", instruments=[TCS])
    with pytest.raises(ConfigError, match="susertoken"):
        open_stream("definedge", uid="U1", actid="A1")
    with pytest.raises(ValueError, match="needs broker="):
        open_stream("poll", instruments=[TCS])
    with pytest.raises(ValueError, match="needs candles="):
        open_stream("replay")

    sim = open_stream("sim", symbols=["TCS"], speed=None)
    assert isinstance(sim, SimLiveStream)
    candles = {"TCS": SimMarket(1).fetch("TCS", ONE_MINUTE, ist("2024-06-03"), ist("2024-06-04")).iloc[:3]}
    assert len(list(open_stream("replay", candles=candles))) == 12

    monkeypatch.setenv("DHAN_CLIENT_ID", "1000000001")
    monkeypatch.setenv("DHAN_ACCESS_TOKEN", TOKEN)
    monkeypatch.setenv("TRADEFLOW_DHAN_FEED_URL", "ws://127.0.0.1:1/feed")
    dhan = open_stream("dhan", instruments=[TCS], resilient=False)
    assert isinstance(dhan, DhanFeedStream) and dhan.url == "ws://127.0.0.1:1/feed"
    assert TOKEN not in repr(dhan)
    wrapped = open_stream("dhan", instruments=[TCS], broker=FakeBroker([{}]))
    assert isinstance(wrapped, ResilientStream)
    definedge = open_stream("definedge", uid="U1", actid="A1", susertoken=WS_KEY, resilient=False)
    assert definedge.url == "ws://127.0.0.1:9/"  # DEFINEDGE_WS_URL from the settings (conftest)

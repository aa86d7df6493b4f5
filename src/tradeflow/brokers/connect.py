"""Build a broker by name, with live arming, and expose broker history as a store source.

Live arming: anything that can send an order to a real broker needs
``TRADEFLOW_ALLOW_LIVE=1`` in the environment of the machine that runs it; without it
``connect(..., orders=True)`` refuses before any broker call.
"""

from __future__ import annotations

import logging

import pandas as pd

from ..errors import TradeflowError
from ..timeframes import Timeframe
from .base import Broker, BrokerError

__all__ = ["connect", "LiveNotArmed", "BrokerSource", "LIVE_BROKERS"]

log = logging.getLogger(__name__)

LIVE_BROKERS = ("dhan", "definedge")


class LiveNotArmed(TradeflowError):
    """A live broker was asked to send orders without ``TRADEFLOW_ALLOW_LIVE=1``."""


def _armed() -> bool:
    from ..config import settings

    return settings(reload=True).allow_live


def connect(name: str, *, orders: bool = False, instruments=None) -> Broker:
    """The broker called ``name`` (``dhan`` or ``definedge``), logged in from the configured credentials.

    ``orders=True`` is for callers that may place, modify or cancel orders: a live broker
    then needs ``TRADEFLOW_ALLOW_LIVE=1``, checked before anything is sent.
    ``instruments`` defaults to the broker's instrument master (downloaded once a day).
    """
    key = name.strip().lower()
    if key == "paper":
        return _paper(instruments)
    if key not in LIVE_BROKERS:
        raise BrokerError(f"unknown broker {name!r}: choose one of paper, {', '.join(LIVE_BROKERS)}")
    if orders and not _armed():
        raise LiveNotArmed(
            f"{key} is a live broker: real orders need TRADEFLOW_ALLOW_LIVE=1 in this machine's environment "
            "(and `mode: live` in the run's parameters); nothing was sent"
        )
    if instruments is None:
        from ..instruments import load_master

        instruments = list(load_master(key))
    if key == "dhan":
        from ..session import dhan_session
        from .dhan import DhanBroker

        s = dhan_session()
        return DhanBroker(s.client_id, s.access_token.get_secret_value(), instruments=instruments)
    from ..session import definedge_session
    from .definedge import DefinedgeBroker

    return DefinedgeBroker(
        definedge_session().keys(), instruments=instruments,
        on_session_expired=lambda: definedge_session(refresh=True).keys(),
    )


def _paper(instruments=None) -> Broker:
    """The paper account (persisted under data/paper/) quoting the simulated market's last
    closed bar, so a command-line order has a price to be checked and filled against."""
    from ..config import settings
    from .paper import PaperBroker
    from .sim import SimMarket, sim_instruments

    broker = PaperBroker(instruments=instruments if instruments is not None else sim_instruments())
    sim = SimMarket(seed=settings().sim_seed)
    now = pd.Timestamp.now(tz="UTC")
    for inst in broker.instruments():
        if inst.symbol in sim.symbols():
            recent = sim.fetch(inst.symbol, Timeframe(1), now - pd.Timedelta(days=10), now)
            if len(recent):
                broker.on_quote(inst.symbol, float(recent["close"].iloc[-1]), ts=recent.index[-1])
    return broker


class BrokerSource:
    """A broker's history API as a ``tradeflow.sources.Source``, for ``tradeflow fetch``.

    Symbols are looked up in the broker's instrument master; windows follow the broker's
    limits (Dhan intraday: 90 days per call), and ``ingest`` handles resume and watermarks.
    """

    synthetic = False

    def __init__(self, broker: Broker, master, *, window_days: int = 90) -> None:
        self.broker = broker
        self.master = master
        self.name = broker.name
        self.window = pd.Timedelta(days=window_days)

    def timeframes(self) -> tuple[Timeframe, ...]:
        return (Timeframe(1), Timeframe(5), Timeframe(15), Timeframe(25), Timeframe(60), Timeframe(None)) if self.name == "dhan" \
            else (Timeframe(1), Timeframe(None))

    def symbols(self) -> list[str]:
        return [i.symbol for i in self.master]

    def fetch(self, symbol: str, timeframe: Timeframe, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        instrument = self.master.get(symbol)
        frame = self.broker.history(instrument, Timeframe.parse(timeframe).name, start, end)
        if len(frame):
            frame = frame[(frame.index >= start) & (frame.index < end)]
        return frame


def _register() -> None:
    """Make ``dhan`` and ``definedge`` available to ``tradeflow fetch --source``."""
    from ..instruments import load_master
    from ..sources import register_source

    for key in LIVE_BROKERS:
        register_source(key, lambda key=key: BrokerSource(connect(key), load_master(key)))

"""Where candles come from: one small interface that the sim market, CSV files and (in a
later issue) broker history APIs all satisfy, so ``ingest`` never knows a wire format.
"""

from __future__ import annotations

from typing import Callable, Protocol, runtime_checkable

import pandas as pd

from .errors import SourceError
from .timeframes import Timeframe

__all__ = ["Source", "get_source", "register_source", "source_names"]


@runtime_checkable
class Source(Protocol):
    """A provider of historical candles.

    ``fetch`` returns a candle frame (tz-aware index, ``open, high, low, close, volume``)
    for bars starting in ``[start, end)`` (UTC instants), and only bars that have closed.
    ``window`` is the longest span one call may ask for; ``ingest`` splits longer ranges.
    """

    name: str
    synthetic: bool
    window: pd.Timedelta

    def timeframes(self) -> tuple[Timeframe, ...]: ...

    def symbols(self) -> list[str]: ...

    def fetch(self, symbol: str, timeframe: Timeframe, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame: ...


_FACTORIES: dict[str, Callable[[], Source]] = {}


def register_source(name: str, factory: Callable[[], Source]) -> None:
    """Make a source available by name (brokers register theirs when imported)."""
    _FACTORIES[name] = factory


def source_names() -> list[str]:
    _ensure_builtin()
    return sorted(_FACTORIES)


def get_source(name: str) -> Source:
    """The source called ``name``; an unknown name gets the list of known ones."""
    _ensure_builtin()
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise SourceError(f"unknown source {name!r}: choose one of {', '.join(sorted(_FACTORIES))}") from None
    return factory()


def _ensure_builtin() -> None:
    if "sim" not in _FACTORIES:
        from .brokers.sim import SimMarket
        from .config import settings

        register_source("sim", lambda: SimMarket(seed=settings().sim_seed))
        from .brokers.connect import _register

        _register()

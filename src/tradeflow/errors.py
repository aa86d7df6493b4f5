"""One error tree for tradeflow, so callers can catch by kind and faces can map to exit codes.

Every message says what went wrong *and* what to do about it.
"""

from __future__ import annotations

__all__ = [
    "TradeflowError",
    "ConfigError",
    "StoreError",
    "DataValidationError",
    "CalendarError",
    "SourceError",
    "ParameterError",
]


class TradeflowError(Exception):
    """Base of every error tradeflow raises on purpose."""


class ConfigError(TradeflowError):
    """A setting is missing or invalid."""


class StoreError(TradeflowError):
    """The candle store cannot do what was asked (bad symbol, timeframe, locked, corrupt)."""


class DataValidationError(StoreError):
    """Incoming candles or a CSV are malformed; nothing was written.

    ``problems`` lists every issue found (up to a limit), each naming where it is.
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        self.problems = list(problems or [])
        if self.problems:
            message = message + "\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(message)


class CalendarError(TradeflowError):
    """A date is outside what the exchange calendar knows."""


class SourceError(TradeflowError):
    """A data source failed or does not offer what was asked."""


class ParameterError(TradeflowError):
    """A parameter file or notebook parameter is unknown or invalid."""

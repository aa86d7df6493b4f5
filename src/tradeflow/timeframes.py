"""Timeframes: parse ``"15m"``, ``"1h"``, ``"1d"`` into one canonical record.

Intraday timeframes are whole minutes (1 to 375, one NSE session); ``1d`` is one bar per
session. ``1h`` and ``60m`` are the same timeframe and are stored under ``60m``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import StoreError

__all__ = ["Timeframe", "SESSION_MINUTES"]

SESSION_MINUTES = 375
"""Minutes in a regular NSE session, 09:15 to 15:30."""

_PATTERN = re.compile(r"^\s*(\d+)\s*(m|min|mins|minute|minutes|h|hr|hour|hours|d|day|days)\s*$", re.I)


@dataclass(frozen=True, order=True)
class Timeframe:
    """A bar length: ``minutes`` for intraday bars, or ``minutes=None`` for daily bars."""

    minutes: int | None

    @classmethod
    def parse(cls, value: "str | Timeframe") -> "Timeframe":
        """Parse ``"1m"``, ``"15m"``, ``"75m"``, ``"1h"``, ``"1d"`` (case-insensitive)."""
        if isinstance(value, Timeframe):
            return value
        match = _PATTERN.match(str(value))
        if not match:
            raise StoreError(
                f"unknown timeframe {value!r}: use whole minutes such as '1m', '5m', '15m', '75m', "
                "hours such as '1h', or '1d' for daily bars"
            )
        n, unit = int(match.group(1)), match.group(2).lower()
        if unit.startswith("d"):
            if n != 1:
                raise StoreError(f"timeframe {value!r}: only '1d' is supported for daily bars")
            return cls(None)
        minutes = n * 60 if unit.startswith("h") else n
        if not 1 <= minutes <= SESSION_MINUTES:
            raise StoreError(
                f"timeframe {value!r}: intraday bars must be 1 to {SESSION_MINUTES} minutes "
                "(one session); use '1d' for daily bars"
            )
        return cls(minutes)

    @property
    def is_daily(self) -> bool:
        return self.minutes is None

    @property
    def name(self) -> str:
        """Canonical name used in the store's paths: ``"15m"``, ``"60m"``, ``"1d"``."""
        return "1d" if self.minutes is None else f"{self.minutes}m"

    def __str__(self) -> str:
        return self.name


ONE_MINUTE = Timeframe(1)
DAILY = Timeframe(None)

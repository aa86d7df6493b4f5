"""Guardrails between the strategy and the broker, and the tick-by-tick exits.

Why a separate layer: the strategy decides on bar closes (so that the backtest and the engine
agree), but a trader expects a stop to act when the price touches it, and an account needs
limits no strategy parameter knows about (money lost today, orders sent today, size).

* ``stops_on: tick`` (the default): the strategy's own ``stop_loss``, ``target``,
  ``trailing_stop`` and ``max_daily_loss`` (points) are checked on every tick of the signal
  symbol, measured from the entry reference (the signal symbol's price at the entry fill),
  and exit at once. ``stops_on: close`` leaves them to the strategy's bar-close rules, which
  is exactly the backtest's model (the parity test runs that way).
* ``max_daily_loss_rupees``: realised plus open P&L of the day, net of charges, at or below
  minus this flattens the position and stops entries for the day (checked on every tick).
* ``max_orders_per_day`` and ``max_lots`` refuse entries beyond them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .strategy import StrategyParams

__all__ = ["RiskParams", "TickRisk", "OpenRisk"]


class RiskParams(BaseModel):
    """Account-level limits and where the strategy's stops are watched."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stops_on: Literal["tick", "close"] = Field(
        "tick", description="'tick': stops/targets/trail act on every tick; 'close': on bar closes, as the backtest."
    )
    max_daily_loss_rupees: float | None = Field(None, gt=0, description="Net day loss (incl. open P&L) that flattens and stops the day.")
    max_orders_per_day: int = Field(40, ge=1, description="Orders the engine may send in one day, exits included.")
    max_lots: int = Field(10, ge=1, description="Largest entry in lots; a larger configured size is refused at start.")


@dataclass
class OpenRisk:
    """What the tick check needs to know about the open position."""

    direction: int  # +1 long, -1 short (the strategy's side, also for bought puts)
    entry_ref: float  # signal-symbol price at the entry fill
    best: float  # most favourable signal-symbol price since entry (for the trailing stop)


class TickRisk:
    """The tick-time exits. ``check`` returns an exit reason (the strategy's names) or ''."""

    def __init__(self, params: StrategyParams, risk: RiskParams) -> None:
        self.on_ticks = risk.stops_on == "tick"
        self.sl = params.stop_loss
        self.tp = params.target
        self.trail = params.trailing_stop
        self.pct = params.stop_mode == "percent"
        self.max_points = params.max_daily_loss if params.max_daily_loss is not None else math.inf
        self.max_rupees = risk.max_daily_loss_rupees if risk.max_daily_loss_rupees is not None else math.inf

    def check(self, pos: OpenRisk, price: float, realized_points: float) -> str:
        """Exit reason for the position at this signal-symbol price ('' to hold); updates ``best``."""
        d = pos.direction
        if d > 0:
            if price > pos.best:
                pos.best = price
        elif price < pos.best:
            pos.best = price
        if not self.on_ticks:
            return ""
        move = d * (price - pos.entry_ref)
        scale = pos.entry_ref / 100.0 if self.pct else 1.0
        if realized_points + move <= -self.max_points:
            return "daily_loss"
        if self.sl is not None and move <= -self.sl * scale:
            return "stop_loss"
        if self.tp is not None and move >= self.tp * scale:
            return "target"
        if self.trail is not None and d * (pos.best - price) >= self.trail * scale:
            return "trailing_stop"
        return ""

    def rupee_breach(self, day_net_pnl: float) -> bool:
        """True when the day's net P&L (realised, open, charges) breaches ``max_daily_loss_rupees``."""
        return day_net_pnl <= -self.max_rupees

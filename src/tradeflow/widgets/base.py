"""What every panel shares: display, the auto-refresh timer, the picked instrument and its quote."""

from __future__ import annotations

import logging

from ..errors import TradeflowError
from .model import Ticker, esc, quote_line, require_armed

__all__ = ["Refreshing", "QuotePanel"]

log = logging.getLogger(__name__)


class Refreshing:
    """A displayable object with ``widget`` and ``refresh()``, refreshed on a timer when asked."""

    _ticker: Ticker | None = None

    def refresh(self) -> None:  # pragma: no cover - each panel defines it
        raise NotImplementedError

    def start_auto_refresh(self, seconds: float) -> bool:
        """Refresh every ``seconds`` on the kernel's event loop; False when there is none."""
        self.stop_auto_refresh()
        self._ticker = Ticker(seconds, self.refresh)
        return self._ticker.start()

    def stop_auto_refresh(self) -> None:
        if self._ticker is not None:
            self._ticker.stop()
            self._ticker = None

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


class QuotePanel(Refreshing):
    """A panel with an instrument picker (``picker``), a quote source (``quotes``), an ``ltp``
    line and a ``refresh_error`` line; ``label`` names it in logs and messages."""

    label = "panel"
    quote = None

    @property
    def instrument(self):
        return self.picker.instrument

    @property
    def last_price(self) -> float | None:
        return self.quote.last_price if self.quote is not None else None

    def _can_send(self) -> bool:
        """False while the broker is live and not armed (the review button stays disabled)."""
        try:
            require_armed(self.broker)
        except TradeflowError:
            return False
        return True

    def _refresh_quote(self) -> None:
        inst = self.instrument
        if inst is None:
            self.quote = None
            self.ltp.value = ""
            return
        try:
            self.quote = self.quotes(inst)
        except TradeflowError as exc:
            self.refresh_error.value = f"<span class='tf-error'>quote for {esc(inst.symbol)} failed: {esc(exc)}</span>"
            log.warning("%s: quote for %s failed: %s", self.label, inst.symbol, exc)
            return
        self.ltp.value = esc(quote_line(self.quote, inst.symbol))

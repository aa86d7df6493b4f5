"""What every panel shares: display, the auto-refresh timer, the picked instrument and its quote."""

from __future__ import annotations

import logging

from ..errors import TradeflowError
from .model import Ticker, esc, live_banner, quote_line, require_armed

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

    def _header(self, prefix: str) -> None:
        """The live/paper banner, the instrument picker and the last-price line (CSS classes from ``prefix``)."""
        import ipywidgets as w

        from .picker import InstrumentPicker

        css, text = live_banner(self.broker)
        self.banner = w.HTML(f"<div class='{css}'>{esc(text)}</div>")
        self.banner.add_class(f"{prefix}-banner")
        self.picker = InstrumentPicker(self.finder, prefix=prefix)
        self.ltp = w.HTML()
        self.ltp.add_class(f"{prefix}-ltp")

    def _start(self, symbol: str | None, refresh_seconds: float | None) -> None:
        """After the layout is built: preselect ``symbol``, refresh once, start the timer if asked."""
        if symbol:
            self.picker.search.value = symbol
        self.refresh()
        if refresh_seconds:
            self.start_auto_refresh(refresh_seconds)

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

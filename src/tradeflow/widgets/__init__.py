"""ipywidgets order and GTT panels over any ``Broker``, for notebooks and Voila pages.

    >>> from tradeflow.widgets import trading_desk
    >>> desk = trading_desk("paper", symbol="RELIANCE", refresh_seconds=2)   # the paper account on the sim market
    >>> desk                                                                  # shows both panels

``trading_desk("dhan")`` (or ``"definedge"``) works the same once a session exists and
``TRADEFLOW_ALLOW_LIVE=1`` is set: the panels then show a red LIVE banner and ask twice before
anything is sent. Build :class:`OrderPanel` or :class:`GttPanel` yourself over any broker
(a ``PaperBroker`` in tests); their logic lives in :mod:`tradeflow.widgets.model`, free of
ipywidgets.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from ..brokers.base import Broker, BrokerError
from ..errors import TradeflowError
from .base import Refreshing
from .gtt_panel import GttPanel
from .model import QuoteSource, SimQuotes, Ticker, broker_quotes, esc
from .order_panel import OrderPanel

__all__ = ["OrderPanel", "GttPanel", "TradingDesk", "trading_desk", "SimQuotes", "broker_quotes"]

log = logging.getLogger(__name__)


class TradingDesk(Refreshing):
    """The order panel and the GTT panel over one broker, one master and one quote source,
    refreshed together on one timer."""

    def __init__(self, broker: Broker, *, master: Sequence | None = None, quotes: QuoteSource | None = None,
                 symbol: str | None = None, refresh_seconds: float | None = None,
                 request_kill: Callable[[], list[dict]] | None = None) -> None:
        import ipywidgets as w

        from ..instruments import InstrumentMaster

        self.broker = broker
        master = master if master is not None else InstrumentMaster(broker.instruments())
        quotes = quotes or broker_quotes(broker)
        self.orders = OrderPanel(broker, master=master, quotes=quotes, symbol=symbol, request_kill=request_kill)
        self.gtt = GttPanel(broker, master=master, quotes=quotes, symbol=symbol)
        self.widget = w.VBox([
            w.HTML("<h3>Orders</h3>"), self.orders.widget, w.HTML("<hr><h3>GTT (good till triggered)</h3>"),
            self.gtt.widget,
        ])
        self.widget.add_class("tf-desk")
        self._ticker: Ticker | None = None
        if refresh_seconds:
            self.start_auto_refresh(refresh_seconds)

    def refresh(self) -> None:
        self.orders.refresh()
        self.gtt.refresh()


class Refused:
    """What :func:`trading_desk` shows when the broker cannot be opened: the reason, in red."""

    def __init__(self, error: TradeflowError) -> None:
        import ipywidgets as w

        from .tables import STYLE

        self.error = error
        self.widget = w.HTML(f"{STYLE}<div class='tf-live-banner tf-refused'>{esc(error)}</div>")

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def _open_paper(connect: Callable, wait_seconds: float) -> Broker:
    import time

    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            return connect("paper")
        except BrokerError as exc:
            if not str(exc).startswith("cannot open the paper account"):
                raise
            if time.monotonic() >= deadline:
                raise BrokerError(
                    f"{exc}. The paper account is open in another process: a notebook kernel, an earlier Voila page "
                    "or a `tradeflow` command. Close it (or restart voila), then reload"
                ) from exc
            time.sleep(0.5)


def trading_desk(broker: str = "paper", *, symbol: str | None = None, refresh_seconds: float | None = 2.0,
                 wait_seconds: float = 10.0) -> "TradingDesk | Refused":
    """Both panels over the broker called ``broker``.

    ``paper``: the paper account (``data/paper/paper.duckdb``) quoting the simulated market,
    which moves while NSE is open. ``dhan`` / ``definedge``: the live adapter from the stored
    session; it needs ``TRADEFLOW_ALLOW_LIVE=1`` (else the reason is shown and nothing is
    opened). A broker that cannot be opened gives a :class:`Refused` showing why.

    The paper account is one DuckDB file that one process at a time may open; a reloaded
    Voila page starts a new kernel while the old one is still closing, so opening it is
    retried for ``wait_seconds``.
    """
    from ..brokers.connect import connect

    key = broker.strip().lower()
    try:
        if key == "paper":
            b = _open_paper(connect, wait_seconds)
            quotes: QuoteSource = SimQuotes(b)
        else:
            b = connect(key, orders=True)
            quotes = broker_quotes(b)
    except TradeflowError as exc:
        log.error("trading desk: %s", exc)
        return Refused(exc)
    return TradingDesk(b, quotes=quotes, symbol=symbol, refresh_seconds=refresh_seconds)

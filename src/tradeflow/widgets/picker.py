"""The instrument search box both panels use: suggestions from the instrument master as you type."""

from __future__ import annotations

import logging
from collections.abc import Callable

import ipywidgets as w

from ..brokers.base import Instrument
from .model import InstrumentFinder, describe, esc

__all__ = ["InstrumentPicker"]

log = logging.getLogger(__name__)


class InstrumentPicker:
    """A search box, a list of suggestions (equities, indices, futures and options with expiry,
    strike and lot), and the chosen instrument. Typing an exact symbol chooses it; otherwise pick
    a suggestion. ``message`` says what is wrong when nothing is chosen."""

    def __init__(self, finder: InstrumentFinder, *, prefix: str, limit: int = 12) -> None:
        self.finder = finder
        self.limit = limit
        self.search = w.Text(placeholder="symbol or name, e.g. RELIANCE, NIFTY 24000 CE", continuous_update=True,
                             description="Instrument", layout=w.Layout(width="420px"))
        self.search.add_class(f"{prefix}-search")
        self.suggestions = w.Select(options=[], rows=6, layout=w.Layout(width="620px"))
        self.suggestions.add_class(f"{prefix}-suggestions")
        self.chosen = w.HTML()
        self.chosen.add_class(f"{prefix}-chosen")
        self.widget = w.VBox([self.search, self.suggestions, self.chosen])
        self._found: list[Instrument] = []
        self._instrument: Instrument | None = None
        self._listeners: list[Callable[[Instrument | None], None]] = []
        self._busy = False
        self.message = "choose an instrument: type a symbol and pick a suggestion"
        self.search.observe(lambda ch: self._typed(ch["new"]), names="value")
        self.suggestions.observe(lambda ch: self._picked(ch["new"]), names="value")
        self._show()

    @property
    def instrument(self) -> Instrument | None:
        return self._instrument

    def on_change(self, callback: Callable[[Instrument | None], None]) -> None:
        self._listeners.append(callback)

    def choose(self, inst: Instrument | None) -> None:
        """Choose ``inst`` directly (e.g. the GTT panel loading a GTT to modify)."""
        self._busy = True
        try:
            self.search.value = inst.symbol if inst is not None else ""
            self._found = [inst] if inst is not None else []
            self.suggestions.options = [(describe(inst), 0)] if inst is not None else []
            self.suggestions.index = 0 if inst is not None else None
        finally:
            self._busy = False
        self._set(inst)

    def _typed(self, text: str) -> None:
        if self._busy:
            return
        text = text.strip()
        if not text:
            self._found = []
            self._busy = True
            try:
                self.suggestions.options = []
            finally:
                self._busy = False
            self.message = "choose an instrument: type a symbol and pick a suggestion"
            self._set(None)
            return
        found = self.finder.suggest(text, self.limit)
        exact = self.finder.resolve(text)
        if exact is not None and exact not in found:
            found = [exact] + found[: self.limit - 1]
        self._found = found
        self._busy = True
        try:
            self.suggestions.options = [(describe(i), n) for n, i in enumerate(found)]
            self.suggestions.index = found.index(exact) if exact is not None else None
        finally:
            self._busy = False
        if exact is None:
            self.message = (self.finder.unknown(text) if not found else
                            f"{len(found)} suggestion(s) for {text!r}: pick one from the list")
        self._set(exact)

    def _picked(self, index: int | None) -> None:
        if self._busy or index is None or index >= len(self._found):
            return
        inst = self._found[index]
        self._busy = True
        try:
            self.search.value = inst.symbol
        finally:
            self._busy = False
        self._set(inst)

    def _set(self, inst: Instrument | None) -> None:
        changed = inst != self._instrument
        self._instrument = inst
        self._show()
        if changed:
            for cb in self._listeners:
                cb(inst)

    def _show(self) -> None:
        if self._instrument is not None:
            self.chosen.value = f"<b>{esc(describe(self._instrument))}</b>"
        else:
            self.chosen.value = f"<span class='tf-problems'>{esc(self.message)}</span>"
        self.suggestions.layout.display = None if self.suggestions.options else "none"

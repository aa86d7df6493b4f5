"""Small ipywidgets tables: rows of text cells with per-row buttons, and the panels' shared parts.

ipywidgets has no table with buttons in its rows, so a row is an ``HBox`` of fixed-width
labels followed by its buttons. Every row carries the CSS classes ``tf-row`` and
``tf-row-<key>`` (an order or GTT id), so a browser test (or a person's stylesheet) can
find "the Cancel button of order P000001" as ``.tf-row-P000001 .tf-row-cancel``.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import ipywidgets as w

from ..errors import TradeflowError
from .model import esc

__all__ = ["Table", "RowAction", "Confirm", "STYLE", "css_key", "bullets", "guarded"]

log = logging.getLogger(__name__)

STYLE = """
<style>
.tf-live-banner { background:#c62828; color:#fff; font-weight:700; padding:8px 12px; border-radius:4px; }
.tf-paper-banner { background:#e8f5e9; color:#1b5e20; font-weight:600; padding:6px 12px; border-radius:4px; }
.tf-problems { color:#b71c1c; }
.tf-warnings { color:#8d6e00; }
.tf-ok { color:#1b5e20; }
.tf-error { color:#b71c1c; font-weight:600; }
.tf-table-head .widget-label { font-weight:700; }
.tf-row:hover { background:#f5f5f5; }
.tf-confirm-box { border:2px solid #1565c0; padding:6px 10px; border-radius:4px; }
.tf-confirm-box.tf-live { border-color:#c62828; background:#fff5f5; }
.tf-section { font-weight:700; margin-top:8px; }
</style>
"""
"""CSS the panels put on the page once (an HTML widget): banners, messages, tables."""


def css_key(text: str) -> str:
    """``text`` made safe for a CSS class name (ids are already letters and digits)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)


@dataclass(frozen=True)
class RowAction:
    """A button in a row: its label, its CSS class, what it does, and whether it can be pressed."""

    label: str
    css: str
    on_click: Callable[[], None]
    enabled: bool = True
    style: str = ""


class Table:
    """A header and rows of cells; rows are rebuilt only when their content changes."""

    def __init__(self, columns: Sequence[str], widths: Sequence[str], *, css: str, empty: str = "nothing here") -> None:
        if len(columns) != len(widths):
            raise ValueError("one width per column")
        self.columns = tuple(columns)
        self.widths = tuple(widths)
        self.empty = empty
        head = w.HBox([self._cell(c, wd) for c, wd in zip(columns, widths)])
        head.add_class("tf-table-head")
        self._rows = w.VBox([])
        self._empty = w.Label(empty)
        self.widget = w.VBox([head, self._rows, self._empty])
        self.widget.add_class(css)
        self._shown: list[tuple] = []
        self.keys: list[str] = []

    @staticmethod
    def _cell(text: str, width: str) -> w.Label:
        return w.Label(text, layout=w.Layout(width=width, overflow="hidden"))

    def update(self, rows: Sequence[tuple[str, Sequence[str], Sequence[RowAction]]]) -> None:
        """Show ``rows``: (key, cells, actions) each. Unchanged content keeps its widgets."""
        signature = [(key, tuple(cells), tuple((a.label, a.css, a.enabled) for a in actions))
                     for key, cells, actions in rows]
        if signature == self._shown:
            return
        boxes = []
        for key, cells, actions in rows:
            items: list[w.Widget] = [self._cell(str(c), wd) for c, wd in zip(cells, self.widths)]
            for a in actions:
                b = w.Button(description=a.label, disabled=not a.enabled, button_style=a.style,
                             layout=w.Layout(width="auto"))
                b.add_class(a.css)
                b.on_click(lambda _b, a=a: a.on_click())
                items.append(b)
            box = w.HBox(items)
            box.add_class("tf-row")
            box.add_class(f"tf-row-{css_key(key)}")
            boxes.append(box)
        self._rows.children = boxes
        self._empty.layout.display = "none" if rows else None
        self._shown = signature
        self.keys = [key for key, _, _ in rows]

    def row(self, key: str) -> w.HBox:
        """The row widget of ``key`` (tests press its buttons)."""
        return self._rows.children[self.keys.index(key)]

    def button(self, key: str, css: str) -> w.Button:
        """The button with class ``css`` in the row of ``key``."""
        for child in self.row(key).children:
            if isinstance(child, w.Button) and css in child._dom_classes:
                return child
        raise KeyError(f"row {key} has no {css} button")


class Confirm:
    """The confirmation step: shows what will be sent, then runs it on "Confirm".

    For a live broker a second, red confirmation follows the first, and only that one sends.
    Buttons are hidden before the action runs, so a double click cannot send twice.
    """

    def __init__(self, prefix: str) -> None:
        self.summary = w.HTML()
        self.yes = w.Button(description="Confirm", button_style="primary", icon="check")
        self.yes.add_class(f"{prefix}-confirm")
        self.back = w.Button(description="Back", icon="times")
        self.back.add_class(f"{prefix}-back")
        self.live_yes = w.Button(description="Yes, send to the LIVE broker", button_style="danger",
                                 layout=w.Layout(width="auto"))
        self.live_yes.add_class(f"{prefix}-confirm-live")
        self.live_note = w.HTML()
        self.widget = w.VBox([self.summary, self.live_note, w.HBox([self.yes, self.live_yes, self.back])])
        self.widget.add_class("tf-confirm-box")
        self.widget.add_class(f"{prefix}-confirm-box")
        self._action: Callable[[], None] | None = None
        self._live = False
        self._live_label = ""
        self.yes.on_click(lambda _b: self._first())
        self.live_yes.on_click(lambda _b: self._second())
        self.back.on_click(lambda _b: self.cancel())
        self.cancel()

    @property
    def pending(self) -> bool:
        return self._action is not None

    @property
    def stage(self) -> str:
        """``idle``, ``first`` (waiting for Confirm) or ``second`` (a live send waiting for the red button)."""
        if self._action is None:
            return "idle"
        return "second" if self.live_yes.layout.display != "none" else "first"

    def ask(self, html_summary: str, action: Callable[[], None], *, live: bool, yes: str = "Confirm",
            live_note: str = "") -> None:
        """Show ``html_summary`` and wait; ``action`` runs after the confirmation(s)."""
        self._action = action
        self._live = live
        self._live_label = live_note
        self.summary.value = html_summary
        self.yes.description = yes
        self.yes.layout.display = None
        self.live_yes.layout.display = "none"
        self.live_note.value = ""
        if live:
            self.widget.add_class("tf-live")
        else:
            self.widget.remove_class("tf-live")
        self.widget.layout.display = None

    def cancel(self) -> None:
        self._action = None
        self.widget.layout.display = "none"
        self.live_yes.layout.display = "none"

    def _first(self) -> None:
        if self._action is None:
            return
        if self._live:
            self.yes.layout.display = "none"
            self.live_yes.layout.display = None
            self.live_note.value = (f"<div class='tf-live-banner'>{esc(self._live_label or 'This is a REAL order.')} "
                                    "Press the red button to send it, or Back.</div>")
            return
        self._run()

    def _second(self) -> None:
        if self._action is None or not self._live:
            return
        self._run()

    def _run(self) -> None:
        action, self._action = self._action, None
        self.widget.layout.display = "none"
        self.live_yes.layout.display = "none"
        if action is not None:
            action()


def bullets(items: Sequence[str], css: str) -> str:
    """An HTML list of ``items`` (escaped) with class ``css``."""
    if not items:
        return ""
    return f"<ul class='{css}'>" + "".join(f"<li>{esc(i)}</li>" for i in items) + "</ul>"


def guarded(method: Callable) -> Callable:
    """Show any error a button handler raises in its panel (a widget callback's exception would
    otherwise only reach the kernel log, where a Voila user never sees it)."""

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except TradeflowError as exc:
            self.say(str(exc), error=True)
        except Exception as exc:  # noqa: BLE001 - shown, and logged with the traceback
            log.exception("panel: %s failed", method.__name__)
            self.say(f"unexpected error ({type(exc).__name__}: {exc}): see the kernel log, and check the orders "
                     "table before trying again", error=True)
        return None

    return run

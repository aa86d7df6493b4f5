"""Plotly figures for notebooks and HTML reports (the research issue adds indicator panes)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

__all__ = ["candlestick", "use_notebook_renderer"]


def use_notebook_renderer() -> None:
    """Render in JupyterLab (mimetype) and in exported HTML (plotly.js from its CDN)."""
    pio.renderers.default = "plotly_mimetype+notebook_connected"


def candlestick(frame: pd.DataFrame, title: str = "", *, synthetic: bool = False) -> go.Figure:
    """A candlestick chart of a candle frame, with volume bars when there is volume."""
    if frame.empty:
        raise ValueError("no candles to plot: fetch or import data for that symbol and day first")
    fig = go.Figure(
        go.Candlestick(
            x=frame.index, open=frame["open"], high=frame["high"], low=frame["low"], close=frame["close"], name="price"
        )
    )
    if "volume" in frame and frame["volume"].notna().any():
        fig.add_trace(go.Bar(x=frame.index, y=frame["volume"], name="volume", yaxis="y2", opacity=0.3))
        fig.update_layout(yaxis2={"overlaying": "y", "side": "right", "showgrid": False, "title": "volume"})
    if synthetic:
        title = f"{title} — SYNTHETIC (simulated market)"
    fig.update_layout(title=title, xaxis_rangeslider_visible=False, height=520, template="plotly_white")
    fig.update_xaxes(rangebreaks=[{"bounds": [15.5, 9.25], "pattern": "hour"}, {"bounds": ["sat", "mon"]}])
    return fig

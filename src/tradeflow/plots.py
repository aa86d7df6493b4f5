"""Plotly figures for notebooks and HTML reports (the research issue adds indicator panes)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

__all__ = ["candlestick", "use_notebook_renderer", "strategy_chart", "equity_chart", "sweep_heatmap", "walk_forward_chart", "run_chart"]


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


def strategy_chart(result, *, day=None, title: str = "") -> go.Figure:
    """Candles with the SuperTrend line coloured by direction, trade markers, and a MACD pane."""
    from plotly.subplots import make_subplots

    candles, sig, trades = result.candles, result.signals, result.trades
    if day is not None:
        local = candles.index.tz_convert("Asia/Kolkata").date
        keep = local == pd.Timestamp(day).date()
        candles, sig = candles[keep], sig[keep]
        trades = trades[trades["entry_time"].dt.tz_convert("Asia/Kolkata").dt.date == pd.Timestamp(day).date()]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.72, 0.28], vertical_spacing=0.03)
    fig.add_trace(
        go.Candlestick(x=candles.index, open=candles["open"], high=candles["high"], low=candles["low"], close=candles["close"], name="price"),
        row=1, col=1,
    )
    for direction, colour, name in ((1.0, "#2ca02c", "SuperTrend up"), (-1.0, "#d62728", "SuperTrend down")):
        line = sig["st_line"].where(sig["st_dir"] == direction)
        fig.add_trace(go.Scatter(x=sig.index, y=line, mode="lines", line={"color": colour, "width": 1.5}, name=name), row=1, col=1)
    if len(trades):
        for side, symbol_, colour in (("long", "triangle-up", "#2ca02c"), ("short", "triangle-down", "#d62728")):
            t = trades[trades["side"] == side]
            fig.add_trace(
                go.Scatter(x=t["entry_time"], y=t["entry_price"], mode="markers", name=f"{side} entry",
                           marker={"symbol": symbol_, "size": 11, "color": colour}),
                row=1, col=1,
            )
        done = trades[trades["status"] == "closed"]
        fig.add_trace(
            go.Scatter(x=done["exit_time"], y=done["exit_price"], mode="markers", name="exit", text=done["exit_reason"],
                       marker={"symbol": "x", "size": 9, "color": "#444"}),
            row=1, col=1,
        )
    fig.add_trace(go.Scatter(x=sig.index, y=sig["macd"], name="MACD", line={"width": 1.2}), row=2, col=1)
    fig.add_trace(go.Scatter(x=sig.index, y=sig["macd_signal"], name="signal", line={"width": 1.2}), row=2, col=1)
    fig.add_trace(go.Bar(x=sig.index, y=sig["macd"] - sig["macd_signal"], name="histogram", opacity=0.4), row=2, col=1)
    fig.update_layout(title=title, xaxis_rangeslider_visible=False, height=700, template="plotly_white")
    fig.update_xaxes(rangebreaks=[{"bounds": [15.5, 9.25], "pattern": "hour"}, {"bounds": ["sat", "mon"]}])
    return fig


def equity_chart(equity: pd.Series, title: str = "Equity and drawdown") -> go.Figure:
    """Equity curve above its drawdown from the running peak."""
    from plotly.subplots import make_subplots

    drawdown = equity / equity.cummax() - 1.0
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.7, 0.3], vertical_spacing=0.04)
    fig.add_trace(go.Scatter(x=equity.index, y=equity, name="equity"), row=1, col=1)
    fig.add_trace(go.Scatter(x=drawdown.index, y=drawdown, name="drawdown", fill="tozeroy", line={"color": "#d62728"}), row=2, col=1)
    fig.update_yaxes(tickformat=".1%", row=2, col=1)
    fig.update_layout(title=title, height=520, template="plotly_white")
    return fig


def sweep_heatmap(table: pd.DataFrame, x: str, y: str, metric: str) -> go.Figure:
    """A metric over two swept parameters (the best value where other parameters vary)."""
    for name in (x, y, metric):
        if name not in table:
            raise ValueError(f"the sweep table has no column {name!r}; it has {', '.join(table.columns)}")
    pivot = table.groupby([y, x])[metric].max().unstack(x)
    fig = go.Figure(
        go.Heatmap(z=pivot.to_numpy(), x=[str(v) for v in pivot.columns], y=[str(v) for v in pivot.index],
                   colorscale="RdYlGn", colorbar={"title": metric})
    )
    fig.update_layout(title=f"{metric} by {x} and {y}", xaxis_title=x, yaxis_title=y, template="plotly_white", height=480)
    return fig


def walk_forward_chart(result) -> go.Figure:
    """Stitched out-of-sample equity, with each window's out-of-sample P&L as bars."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=2, cols=1, row_heights=[0.65, 0.35], vertical_spacing=0.08,
                        subplot_titles=("stitched out-of-sample equity (P&L)", "out-of-sample net P&L per window"))
    eq = result.equity
    fig.add_trace(go.Scatter(x=eq.index, y=eq, name="OOS equity"), row=1, col=1)
    w = result.windows
    colours = ["#2ca02c" if v >= 0 else "#d62728" for v in w["oos_net_pnl"]]
    fig.add_trace(go.Bar(x=w["out_of_sample"], y=w["oos_net_pnl"], marker_color=colours, name="window P&L"), row=2, col=1)
    fig.update_layout(height=600, template="plotly_white", showlegend=False)
    return fig


def run_chart(signals: pd.DataFrame, trades: pd.DataFrame, *, title: str = "") -> go.Figure:
    """A paper/live run: its signal bars (from the journal) with SuperTrend, and its fills."""
    if signals.empty:
        raise ValueError("the run has no closed bars yet: nothing to chart")
    bars = signals.set_index(pd.DatetimeIndex(pd.to_datetime(signals["bar_ts"], utc=True)).tz_convert("Asia/Kolkata"))
    fig = go.Figure(go.Candlestick(x=bars.index, open=bars["open"], high=bars["high"], low=bars["low"],
                                   close=bars["close"], name="price"))
    for direction, colour, name in ((1.0, "#2ca02c", "SuperTrend up"), (-1.0, "#d62728", "SuperTrend down")):
        line = bars["st_line"].where(bars["st_dir"] == direction)
        fig.add_trace(go.Scatter(x=bars.index, y=line, mode="lines", line={"color": colour, "width": 1.5}, name=name))
    if len(trades):
        for side, marker, colour in (("long", "triangle-up", "#2ca02c"), ("short", "triangle-down", "#d62728")):
            t = trades[trades["side"] == side]
            fig.add_trace(go.Scatter(x=t["entry_time"], y=t["entry_price"], mode="markers", name=f"{side} entry",
                                     marker={"symbol": marker, "size": 11, "color": colour}))
        done = trades[trades["exit_time"].notna()]
        fig.add_trace(go.Scatter(x=done["exit_time"], y=done["exit_price"], mode="markers", name="exit",
                                 text=done["exit_reason"], marker={"symbol": "x", "size": 9, "color": "#444"}))
    fig.update_layout(title=title, xaxis_rangeslider_visible=False, height=520, template="plotly_white")
    fig.update_xaxes(rangebreaks=[{"bounds": [15.5, 9.25], "pattern": "hour"}, {"bounds": ["sat", "mon"]}])
    return fig

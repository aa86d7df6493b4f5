"""The ``tradeflow`` command: thin typer commands over the library; no logic lives here."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from .errors import TradeflowError

app = typer.Typer(
    help="tradeflow: candle store, backtests and trading for Indian markets. Paper and the simulated market by default.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
out = Console(soft_wrap=True, width=None if Console().is_terminal else 200)
err = Console(stderr=True, soft_wrap=True, width=None if Console(stderr=True).is_terminal else 200)

DEMO_NOTEBOOKS = ("10_history", "20_backtest", "30_trade")
"""Notebooks ``tradeflow demo`` runs, in order (later issues add theirs)."""


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err, show_path=False)],
        force=True,
    )


def _fail(exc: Exception) -> typer.Exit:
    err.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True)
    return typer.Exit(code=2)


def _frame_table(frame, title: str, limit: int = 20) -> Table:
    table = Table(title=title, show_lines=False)
    table.add_column("ts (IST)")
    for col in frame.columns:
        table.add_column(str(col), justify="right")
    rows = frame if len(frame) <= limit else frame.iloc[list(range(limit // 2)) + list(range(-limit // 2, 0))]
    for i, (ts, row) in enumerate(rows.iterrows()):
        if len(frame) > limit and i == limit // 2:
            table.add_row("…", *["…"] * len(frame.columns))
        table.add_row(str(ts), *[f"{v:,.2f}" if v == v else "" for v in row.to_numpy()])
    return table


@app.command("import-csv")
def import_csv_cmd(
    file: Annotated[Path, typer.Argument(help="CSV file of candles.")],
    symbol: Annotated[str, typer.Option(help="Symbol to store the candles under, e.g. NIFTY.")],
    timeframe: Annotated[str, typer.Option(help="Timeframe of the file's bars: 1m, 15m, 1d, …")] = "1m",
    col: Annotated[
        Optional[list[str]],
        typer.Option(help="Column name for a role, e.g. --col close=LTP --col timestamp=Time (roles: open high low close volume oi timestamp date time)."),
    ] = None,
    time_format: Annotated[
        str, typer.Option("--format", help="auto, iso, epoch (seconds), epoch_ms, or a strftime pattern such as '%d-%m-%Y %H:%M'.")
    ] = "auto",
    time_col_format: Annotated[Optional[str], typer.Option("--time-format", help="strftime pattern of a separate time column, e.g. %H:%M.")] = None,
    tz: Annotated[str, typer.Option(help="Zone of naive timestamps: Asia/Kolkata (IST) or UTC.")] = "Asia/Kolkata",
    no_header: Annotated[bool, typer.Option("--no-header", help="The file has no header row; give --names.")] = False,
    names: Annotated[Optional[str], typer.Option(help="Comma-separated column names for a file without a header.")] = None,
    delimiter: Annotated[str, typer.Option(help="Field delimiter.")] = ",",
) -> None:
    """Import a candle CSV into the store. A malformed file is refused whole, naming line and column."""
    from .csvimport import CsvFormat, import_csv

    try:
        columns = {}
        for item in col or []:
            key, sep, value = item.partition("=")
            if not sep:
                raise TradeflowError(f"--col {item!r}: write it as ROLE=NAME, e.g. --col close=LTP")
            columns[key.strip().lower()] = value.strip()
        fmt = CsvFormat(
            columns=columns,
            format=time_format,
            time_format=time_col_format,
            tz=tz,
            header=not no_header,
            names=[n.strip() for n in names.split(",")] if names else None,
            delimiter=delimiter,
        )
        result = import_csv(file, symbol, timeframe, fmt=fmt)
    except TradeflowError as exc:
        raise _fail(exc) from None
    out.print(f"imported {file}: {result.inserted} new bar(s), {result.updated} replaced, into {symbol.upper()} {timeframe}")


@app.command()
def fetch(
    symbol: Annotated[list[str], typer.Option("--symbol", "-s", help="Symbol(s) to fetch; repeat for several.")],
    source: Annotated[Optional[str], typer.Option(help="Data source (default: sim, the simulated market).")] = None,
    timeframe: Annotated[str, typer.Option(help="Timeframe to fetch (sim gives 1m).")] = "1m",
    start: Annotated[Optional[str], typer.Option(help="First date, e.g. 2024-01-01 (default: 30 days ago).")] = None,
    end: Annotated[Optional[str], typer.Option(help="Last date, inclusive (default: today).")] = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="Hide the progress bar.")] = False,
) -> None:
    """Fill the store from a source; only what is missing is fetched, and an interrupted run resumes."""
    from .ingest import fetch as do_fetch
    from .store import CandleStore

    store = CandleStore()
    try:
        for sym in symbol:
            res = do_fetch(sym, timeframe, start, end, source=source, store=store, progress=not no_progress)
            if res.up_to_date:
                out.print(f"{res.symbol} {res.timeframe} from {res.source}: already up to date")
            else:
                out.print(f"{res.symbol} {res.timeframe} from {res.source}: {res.bars} bar(s) in {res.windows} window(s), {res.inserted} new")
            report = store.gaps(sym, timeframe, start, end)
            out.print(str(report), highlight=False)
    except TradeflowError as exc:
        raise _fail(exc) from None
    except KeyboardInterrupt:
        err.print("interrupted: what was fetched is stored; run the same command again to resume")
        raise typer.Exit(code=130) from None


@app.command()
def candles(
    symbol: Annotated[str, typer.Argument(help="Symbol, e.g. NIFTY.")],
    timeframe: Annotated[str, typer.Option(help="1m, 5m, 15m, 75m, 1h, 1d, …")] = "15m",
    start: Annotated[Optional[str], typer.Option(help="First date or time (IST).")] = None,
    end: Annotated[Optional[str], typer.Option(help="Last date or time (IST), inclusive.")] = None,
    out_file: Annotated[Optional[Path], typer.Option("--out", help="Write to FILE.csv or FILE.parquet instead of printing.")] = None,
) -> None:
    """Print or write candles from the store, built from 1m bars where needed."""
    from .store import CandleStore

    try:
        frame = CandleStore().candles(symbol, timeframe, start, end)
    except TradeflowError as exc:
        raise _fail(exc) from None
    if out_file is not None:
        suffix = out_file.suffix.lower()
        if suffix not in (".csv", ".parquet"):
            raise _fail(TradeflowError(f"--out {out_file}: use a .csv or .parquet file name"))
        out_file.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(out_file) if suffix == ".csv" else frame.to_parquet(out_file)
        out.print(f"wrote {len(frame)} bar(s) to {out_file}")
        return
    if frame.empty:
        err.print(f"no {timeframe} bars for {symbol.upper()} in that range: run `tradeflow fetch --symbol {symbol.upper()}` or `tradeflow import-csv`")
        raise typer.Exit(code=1)
    out.print(_frame_table(frame, f"{symbol.upper()} {timeframe} — {len(frame)} bar(s)"))


@app.command()
def gaps(
    symbol: Annotated[str, typer.Argument(help="Symbol, e.g. NIFTY.")],
    timeframe: Annotated[str, typer.Option(help="Timeframe to check.")] = "1m",
    start: Annotated[Optional[str], typer.Option(help="First date (IST).")] = None,
    end: Annotated[Optional[str], typer.Option(help="Last date (IST), inclusive.")] = None,
    out_file: Annotated[Optional[Path], typer.Option("--out", help="Also write the details to this CSV.")] = None,
    strict: Annotated[bool, typer.Option(help="Exit with code 1 when a problem is found (for scripts).")] = False,
) -> None:
    """Data-quality report against the NSE calendar: missing sessions and bars, odd hours, duplicates, bad OHLC."""
    import pandas as pd

    from .store import CandleStore

    try:
        report = CandleStore().gaps(symbol, timeframe, start, end)
    except TradeflowError as exc:
        raise _fail(exc) from None
    out.print(str(report), highlight=False)
    if len(report.missing_bars):
        out.print(_plain_table(report.missing_bars.head(20), "missing bars (first 20 runs)"))
    if len(report.ohlc_inconsistent):
        out.print(_plain_table(report.ohlc_inconsistent.head(20), "OHLC inconsistencies (first 20)"))
    if out_file is not None:
        parts = [
            report.missing_bars.assign(check="missing bars"),
            pd.DataFrame({"session": report.missing_sessions}).assign(check="missing session"),
            report.outside_hours.assign(check="outside session hours"),
            report.duplicates.assign(check="duplicate"),
            report.non_monotonic.assign(check="non-monotonic"),
            report.ohlc_inconsistent.assign(check="OHLC"),
        ]
        pd.concat([p for p in parts if len(p)], ignore_index=True).to_csv(out_file, index=False)
        out.print(f"details written to {out_file}")
    if strict and not report.ok:
        raise typer.Exit(code=1)


def _plain_table(frame, title: str) -> Table:
    return _rows_table(title, tuple(map(str, frame.columns)), ([str(v) for v in row] for row in frame.itertuples(index=False)))


def _research(params: Path, kind: str, out_dir: Optional[Path]) -> None:
    from .research import load_config, run_job

    try:
        job = run_job(load_config(params), kind=kind, out=out_dir)
    except TradeflowError as exc:
        raise _fail(exc) from None
    out.print(job["result"].summary(), highlight=False)
    if job["sweep"] is not None:
        table = job["sweep"].table.drop(columns=["params"]).head(10)
        out.print(_plain_table(table.round(4), f"sweep: top 10 by {job['sweep'].metric}"))
    if job["walk_forward"] is not None:
        out.print(_plain_table(job["walk_forward"].windows.round(4), "walk-forward windows"))
    out.print(f"results: {job['out']}\nreport:  {job['report']}")


@app.command()
def backtest(
    params: Annotated[Path, typer.Option("--params", "-p", help="Job file, e.g. params/backtest_nifty.yaml.")],
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Folder for the results.")] = None,
) -> None:
    """Backtest the strategy of a job file; writes trades.csv, metrics.json and report.html."""
    _research(params, "backtest", out_dir)


@app.command("sweep")
def sweep_cmd(
    params: Annotated[Path, typer.Option("--params", "-p", help="Job file with a `sweep: grid:` section.")],
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Folder for the results.")] = None,
) -> None:
    """Sweep a parameter grid (local or Dask) and walk forward if configured; writes sweep.csv too."""
    _research(params, "sweep", out_dir)


order_app = typer.Typer(help="Orders at a broker (live brokers need TRADEFLOW_ALLOW_LIVE=1).", no_args_is_help=True)
gtt_app = typer.Typer(help="GTT / forever orders at a broker (live brokers need TRADEFLOW_ALLOW_LIVE=1).", no_args_is_help=True)
app.add_typer(order_app, name="order")
app.add_typer(gtt_app, name="gtt")
BrokerOpt = Annotated[str, typer.Option("--broker", help="paper (the simulated market), dhan or definedge.")]


def _broker(name: str, *, orders: bool = False):
    from .brokers.connect import connect

    return connect(name, orders=orders)


def _instrument(broker, symbol: str, segment: Optional[str]):
    from .instruments import InstrumentMaster

    return InstrumentMaster(broker.instruments()).get(symbol, segment)


def _last_price(broker, inst) -> float:
    return broker.quote([inst])[inst.symbol].last_price


def _order_row(o) -> list[str]:
    r = o.request
    return [o.order_id, r.instrument.symbol, r.side.value, str(r.quantity), r.order_type.value,
            "" if r.price is None else f"{r.price:.2f}", "" if r.trigger_price is None else f"{r.trigger_price:.2f}",
            o.status.value, str(o.filled_quantity), r.tag or "", o.message]


def _rows_table(title: str, columns: tuple[str, ...], rows) -> Table:
    """A rich table of already formatted rows (every command's listing goes through here)."""
    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    return table


def _orders_table(orders, title: str) -> Table:
    columns = ("id", "symbol", "side", "qty", "type", "price", "trigger", "status", "filled", "tag", "message")
    return _rows_table(title, columns, (_order_row(o) for o in orders))


@order_app.command("place")
def order_place(
    symbol: Annotated[str, typer.Argument(help="Trading symbol from the broker's master, e.g. RELIANCE.")],
    broker: BrokerOpt,
    side: Annotated[str, typer.Option(help="buy or sell.")],
    qty_lots: Annotated[int, typer.Option("--qty-lots", help="Lots; quantity = lots × lot size.")] = 1,
    order_type: Annotated[str, typer.Option("--type", help="market, limit, sl or sl-m.")] = "market",
    price: Annotated[Optional[float], typer.Option(help="Limit price (limit and sl).")] = None,
    trigger: Annotated[Optional[float], typer.Option(help="Trigger price (sl and sl-m).")] = None,
    product: Annotated[str, typer.Option(help="intraday, delivery or margin.")] = "intraday",
    segment: Annotated[Optional[str], typer.Option(help="NSE_EQ, NSE_FNO, … when a symbol is in several.")] = None,
    tag: Annotated[Optional[str], typer.Option(help="Your tag for the order (1-25 letters, digits, - _).")] = None,
) -> None:
    """Validate and place one order; prints the broker's order id and status."""
    from .ordering import order_request

    try:
        b = _broker(broker, orders=True)
        inst = _instrument(b, symbol, segment)
        last = _last_price(b, inst) if order_type.lower().startswith("sl") else None
        req = order_request(inst, side, qty_lots, order_type, product=product, price=price, trigger=trigger, tag=tag, last_price=last)
        order = b.place_order(req)
    except TradeflowError as exc:
        raise _fail(exc) from None
    out.print(_orders_table([order], "order placed"))


@order_app.command("list")
def order_list(broker: BrokerOpt) -> None:
    """Today's orders at the broker."""
    try:
        orders = _broker(broker).orders()
    except TradeflowError as exc:
        raise _fail(exc) from None
    out.print(_orders_table(orders, f"{broker} orders"))


@order_app.command("cancel")
def order_cancel(order_id: Annotated[str, typer.Argument(help="The broker's order id.")], broker: BrokerOpt) -> None:
    """Cancel an open order."""
    try:
        order = _broker(broker, orders=True).cancel_order(order_id)
    except TradeflowError as exc:
        raise _fail(exc) from None
    out.print(_orders_table([order], "order cancelled"))


@order_app.command("modify")
def order_modify(
    order_id: Annotated[str, typer.Argument(help="The broker's order id.")],
    broker: BrokerOpt,
    qty_lots: Annotated[Optional[int], typer.Option("--qty-lots")] = None,
    price: Annotated[Optional[float], typer.Option()] = None,
    trigger: Annotated[Optional[float], typer.Option()] = None,
) -> None:
    """Change an open order's quantity, price or trigger."""
    try:
        b = _broker(broker, orders=True)
        current = b.order(order_id)
        qty = None if qty_lots is None else qty_lots * current.request.instrument.lot_size
        order = b.modify_order(order_id, quantity=qty, price=price, trigger_price=trigger)
    except TradeflowError as exc:
        raise _fail(exc) from None
    out.print(_orders_table([order], "order modified"))


@gtt_app.command("place")
def gtt_place(
    symbol: Annotated[str, typer.Argument(help="Trading symbol, e.g. RELIANCE.")],
    broker: BrokerOpt,
    side: Annotated[str, typer.Option(help="buy or sell (for OCO: the side of both exit orders).")],
    trigger: Annotated[float, typer.Option(help="Trigger (OCO: the target's trigger).")],
    qty_lots: Annotated[int, typer.Option("--qty-lots")] = 1,
    kind: Annotated[str, typer.Option(help="single or oco.")] = "single",
    price: Annotated[Optional[float], typer.Option(help="Limit price of the (target) order; none = market.")] = None,
    stop_trigger: Annotated[Optional[float], typer.Option(help="OCO stop trigger.")] = None,
    stop_price: Annotated[Optional[float], typer.Option(help="OCO stop limit price; none = market.")] = None,
    product: Annotated[str, typer.Option(help="delivery, intraday or margin.")] = "delivery",
    segment: Annotated[Optional[str], typer.Option()] = None,
) -> None:
    """Place a GTT (Dhan: forever order; Definedge: GTT/OCO), checked against the last price."""
    from .ordering import gtt_request

    try:
        b = _broker(broker, orders=True)
        inst = _instrument(b, symbol, segment)
        req = gtt_request(inst, side, qty_lots, kind=kind, trigger=trigger, price=price, stop_trigger=stop_trigger,
                          stop_price=stop_price, product=product, last_price=_last_price(b, inst))
        gtt = b.place_gtt(req)
    except TradeflowError as exc:
        raise _fail(exc) from None
    out.print(f"GTT {gtt.gtt_id} placed: {req.kind} {req.side} {inst.symbol}")


@gtt_app.command("list")
def gtt_list(broker: BrokerOpt) -> None:
    """Active GTTs at the broker."""
    try:
        gtts = _broker(broker).gtts()
    except TradeflowError as exc:
        raise _fail(exc) from None
    rows = ((g.gtt_id, g.request.instrument.symbol, g.request.kind.value, g.request.side.value,
             ", ".join(f"{leg.trigger_price:.2f}" for leg in g.request.legs), g.status) for g in gtts)
    out.print(_rows_table(f"{broker} GTTs", ("id", "symbol", "kind", "side", "triggers", "status"), rows))


@gtt_app.command("cancel")
def gtt_cancel(gtt_id: Annotated[str, typer.Argument()], broker: BrokerOpt) -> None:
    """Cancel a GTT."""
    try:
        _broker(broker, orders=True).cancel_gtt(gtt_id)
    except TradeflowError as exc:
        raise _fail(exc) from None
    out.print(f"GTT {gtt_id} cancelled")


@app.command()
def positions(broker: BrokerOpt) -> None:
    """Open and closed-today positions at the broker."""
    try:
        rows = _broker(broker).positions()
    except TradeflowError as exc:
        raise _fail(exc) from None
    formatted = ((p.instrument.symbol, p.product.value, str(p.quantity), f"{p.average_price:.2f}",
                  f"{p.realized_pnl:,.2f}", f"{p.unrealized_pnl:,.2f}") for p in rows)
    out.print(_rows_table(f"{broker} positions", ("symbol", "product", "qty", "avg", "realised", "unrealised"), formatted))


@app.command()
def funds(broker: BrokerOpt) -> None:
    """Available and used funds at the broker."""
    try:
        f = _broker(broker).funds()
    except TradeflowError as exc:
        raise _fail(exc) from None
    out.print(f"{broker}: available {f.available:,.2f}, used {f.used:,.2f}" + (f", total {f.total:,.2f}" if f.total is not None else ""))


session_app = typer.Typer(help="Broker sessions: status and login.", no_args_is_help=True)
app.add_typer(session_app, name="session")


@session_app.command("status")
def session_status() -> None:
    """Per broker: logged in or not, expiry countdown, account (masked), and the static-IP reminder."""
    from .session import status

    rows = status()
    table = Table(title="broker sessions")
    for col in ("broker", "logged_in", "expires_in", "account", "note"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["broker"], "yes" if r["logged_in"] else "no", r["expires_in"], r["account"], r["note"])
    out.print(table)


@session_app.command("login")
def session_login(broker: Annotated[str, typer.Option(help="definedge (TOTP login) or dhan (token check / PIN+TOTP).")]) -> None:
    """Log in now with the credentials from the environment, .env or keyring; never asks for input."""
    from .session import dhan_session, definedge_session

    try:
        if broker == "definedge":
            s = definedge_session(refresh=True)
            out.print(f"definedge: logged in as {s.__repr__()}")
        elif broker == "dhan":
            s = dhan_session()
            out.print(f"dhan: session ok, token valid until {s.expires_at}")
        else:
            raise TradeflowError(f"unknown broker {broker!r}: use dhan or definedge")
    except TradeflowError as exc:
        raise _fail(exc) from None


@app.command()
def run(
    notebook: Annotated[Path, typer.Argument(help="Notebook to execute, e.g. notebooks/10_history.ipynb.")],
    params: Annotated[Optional[Path], typer.Option("--params", "-p", help="YAML parameter file, e.g. params/demo.yaml.")] = None,
    no_html: Annotated[bool, typer.Option("--no-html", help="Skip the HTML copy.")] = False,
) -> None:
    """Execute a notebook with papermill into data/runs/<date>/<name>-<time>.ipynb (and .html)."""
    from .runner import run_notebook

    try:
        result = run_notebook(notebook, params, html=not no_html, progress=True)
    except TradeflowError as exc:
        raise _fail(exc) from None
    out.print(f"notebook: {result.notebook}")
    if result.html:
        out.print(f"html:     {result.html}")


@app.command()
def demo(
    params: Annotated[Path, typer.Option("--params", "-p", help="Demo parameter set.")] = Path("params/demo.yaml"),
    notebooks_dir: Annotated[Path, typer.Option(help="Folder of the notebooks.")] = Path("notebooks"),
) -> None:
    """Run the demo parameter set through the notebooks, on the simulated market."""
    from .runner import run_notebook

    try:
        for stem in DEMO_NOTEBOOKS:
            nb = notebooks_dir / f"{stem}.ipynb"
            out.print(f"running {nb} …")
            result = run_notebook(nb, params, progress=True)
            out.print(f"  notebook: {result.notebook}\n  html:     {result.html}")
    except TradeflowError as exc:
        raise _fail(exc) from None
    out.print("[bold green]demo done[/] — open the HTML files above, or `make lab` to explore")


@app.command()
def trade(
    params: Annotated[Path, typer.Option("--params", "-p", help="Run parameters, e.g. params/paper_nifty.yaml.")],
    replay_date: Annotated[Optional[str], typer.Option(help="Paper on a past day: replay it (sets feed: replay).")] = None,
    feed: Annotated[Optional[str], typer.Option(help="replay, sim, broker or poll (overrides the file).")] = None,
    until: Annotated[Optional[str], typer.Option(help="Stop at this IST time, e.g. 11:30.")] = None,
    run_id: Annotated[Optional[str], typer.Option(help="Resume or name a run (default: name-date-params hash).")] = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="Start a new run even if today's run with these parameters exists.")] = False,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override a parameter: --set speed=60 --set when_closed=latest.")] = None,
) -> None:
    """Run the strategy in paper (default) or live mode; a restart of the same run resumes it."""
    import yaml

    from .trading import load_trade_config, run_trade

    try:
        if not params.is_file():
            raise TradeflowError(f"parameter file {params} not found")
        data = yaml.safe_load(params.read_text()) or {}
        for key, value in (("replay_date", replay_date), ("feed", feed), ("until", until), ("run_id", run_id)):
            if value is not None:
                data[key] = value
        if replay_date is not None and feed is None:
            data["feed"] = "replay"
        for item in set_ or []:
            key, sep, value = item.partition("=")
            if not sep:
                raise TradeflowError(f"--set {item!r}: write it as name=value, e.g. --set speed=60")
            data[key.strip()] = yaml.safe_load(value)
        cfg = load_trade_config(data)
        last = {"line": ""}

        def status(st) -> None:
            line = st.line()
            if line != last["line"]:
                last["line"] = line
                err.print(line, highlight=False, markup=False)

        result = run_trade(cfg, on_status=status, fresh=fresh, progress=True)
    except TradeflowError as exc:
        raise _fail(exc) from None
    out.print(f"run {result.run_id}: {result.status}; {result.summary}", highlight=False, markup=False)
    if len(result.trades):
        out.print(_plain_table(result.trades.round({c: 2 for c in ("entry_price", "exit_price", "gross_pnl", "charges", "net_pnl")}), "trades"))
    out.print(f"files: {result.run_dir}")
    if result.status == "failed":
        raise typer.Exit(code=1)


@app.command()
def kill(run_id: Annotated[Optional[str], typer.Argument(help="One run; default: every active run.")] = None) -> None:
    """Kill switch: active runs cancel their open orders, flatten their positions and stop."""
    from .trading import request_kill

    hit = request_kill(run_id)
    if not hit:
        out.print("no active run" + (f" named {run_id}" if run_id else "") + " to kill")
        raise typer.Exit(code=1)
    for info in hit:
        out.print(f"kill requested: {info['run_id']} (pid {info['pid']}, folder {info['run_dir']})")


@app.command()
def compare(run_id: Annotated[str, typer.Argument(help="A paper or live run id (see `tradeflow runs`).")]) -> None:
    """A run's trades beside the backtest's on the same days and parameters, with the differences."""
    from .trading import compare_run

    try:
        table = compare_run(run_id)
    except TradeflowError as exc:
        raise _fail(exc) from None
    if table.empty:
        out.print("no trades in the run or the backtest for its days")
        return
    cols = ["bar", "status", "side_run", "side_bt", "exit_reason_run", "exit_reason_bt", "exit_bar_diff_min",
            "entry_price_diff", "exit_price_diff", "net_pnl_run", "net_pnl_bt"]
    numeric = ("exit_bar_diff_min", "entry_price_diff", "exit_price_diff", "net_pnl_run", "net_pnl_bt")
    out.print(_plain_table(table[cols].round({c: 2 for c in numeric}), f"{run_id}: run vs backtest"))
    counts = table["status"].value_counts().to_dict()
    out.print(", ".join(f"{k}: {v}" for k, v in counts.items()))


@app.command()
def runs() -> None:
    """Paper and live runs in the journal, newest last."""
    from .journal import Journal

    try:
        with Journal(read_only=True) as journal:
            table = journal.runs()
    except TradeflowError as exc:
        raise _fail(exc) from None
    out.print(_plain_table(table, "runs"))


if __name__ == "__main__":  # pragma: no cover
    app()

"""The trading journal: what every run decided, sent, heard back and held, in DuckDB.

Why: a crash (or a SIGKILL) must leave a readable record, and a restart must know which
orders it already sent. The engine writes here *before* every broker call (the order row
with its tag and status ``SENDING``) and *after* it (the broker's order id and status), so
after a crash an order is either in the journal with its tag, or it was never sent. Each
write is its own DuckDB transaction (DuckDB keeps a write-ahead log, so a killed process
loses at most the statement in flight and the file opens whole).

Tables (one file for all runs, default ``data/journal/journal.duckdb``):

* ``runs``: run id, name, mode, broker, symbol, parameters (JSON), run folder, status;
* ``events``: free-form log of starts, stops, kills, errors, feed changes;
* ``signals``: one row per closed signal bar (the stepper's decision and indicator values);
* ``orders`` (latest state per tag) and ``order_status`` (every status with its time);
* ``fills``: confirmed fills;
* ``positions``: the engine's positions, entry to exit, with exit reason and charges;
* ``daily``: P&L per run and day.

Every row carries ``tick_ns``, the event-time instant (UTC ns) the engine was at when it
wrote it; the largest one is where a restarted run resumes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ._writer import Writer
from .errors import TradeflowError

__all__ = ["Journal", "JournalError", "OrderRow", "PositionRow", "default_journal_path"]

log = logging.getLogger(__name__)


class JournalError(TradeflowError):
    """The journal file cannot be opened or written."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY, name VARCHAR, mode VARCHAR, broker VARCHAR, symbol VARCHAR,
    params VARCHAR, run_dir VARCHAR, status VARCHAR, started_at TIMESTAMPTZ, updated_at TIMESTAMPTZ,
    pid INTEGER);
CREATE TABLE IF NOT EXISTS events (
    run_id VARCHAR, seq BIGINT, ts TIMESTAMPTZ, tick_ns BIGINT, kind VARCHAR, text VARCHAR, data VARCHAR);
CREATE TABLE IF NOT EXISTS signals (
    run_id VARCHAR, bar_ts TIMESTAMPTZ, tick_ns BIGINT, entry INTEGER, exit_reason VARCHAR,
    open DOUBLE, high DOUBLE, low DOUBLE, close DOUBLE, st_line DOUBLE, st_dir DOUBLE, macd DOUBLE,
    macd_signal DOUBLE, htf_dir DOUBLE, PRIMARY KEY (run_id, bar_ts));
CREATE TABLE IF NOT EXISTS orders (
    run_id VARCHAR, tag VARCHAR, leg VARCHAR, position_id VARCHAR, symbol VARCHAR, side VARCHAR,
    quantity INTEGER, order_type VARCHAR, order_id VARCHAR, status VARCHAR, filled_quantity INTEGER,
    average_price DOUBLE, message VARCHAR, tick_ns BIGINT, sent_at TIMESTAMPTZ, updated_at TIMESTAMPTZ,
    PRIMARY KEY (run_id, tag));
CREATE TABLE IF NOT EXISTS order_status (
    run_id VARCHAR, tag VARCHAR, ts TIMESTAMPTZ, tick_ns BIGINT, status VARCHAR, message VARCHAR);
CREATE TABLE IF NOT EXISTS fills (
    run_id VARCHAR, tag VARCHAR, order_id VARCHAR, ts TIMESTAMPTZ, tick_ns BIGINT, symbol VARCHAR,
    side VARCHAR, quantity INTEGER, price DOUBLE, PRIMARY KEY (run_id, tag));
CREATE TABLE IF NOT EXISTS positions (
    run_id VARCHAR, position_id VARCHAR, symbol VARCHAR, direction INTEGER, quantity INTEGER, state VARCHAR,
    entry_tag VARCHAR, entry_time TIMESTAMPTZ, entry_price DOUBLE, entry_ref DOUBLE,
    exit_tag VARCHAR, exit_time TIMESTAMPTZ, exit_price DOUBLE, exit_reason VARCHAR,
    gross_pnl DOUBLE, charges DOUBLE, net_pnl DOUBLE, tick_ns BIGINT, PRIMARY KEY (run_id, position_id));
CREATE TABLE IF NOT EXISTS daily (
    run_id VARCHAR, day DATE, trades INTEGER, gross_pnl DOUBLE, charges DOUBLE, net_pnl DOUBLE,
    PRIMARY KEY (run_id, day));
"""


def default_journal_path() -> Path:
    from .config import settings

    return settings().data_dir / "journal" / "journal.duckdb"


@dataclass
class OrderRow:
    """The journal's view of one order the engine sent (or was about to send)."""

    tag: str
    leg: str
    position_id: str
    symbol: str
    side: str
    quantity: int
    order_type: str
    order_id: str | None
    status: str
    filled_quantity: int
    average_price: float | None
    message: str


@dataclass
class PositionRow:
    """One position of a run, from the entry order to the exit fill."""

    position_id: str
    symbol: str
    direction: int
    quantity: int
    state: str  # opening, open, closing, closed, failed
    entry_tag: str
    entry_time: pd.Timestamp | None = None
    entry_price: float | None = None
    entry_ref: float | None = None
    exit_tag: str | None = None
    exit_time: pd.Timestamp | None = None
    exit_price: float | None = None
    exit_reason: str = ""
    gross_pnl: float | None = None
    charges: float = 0.0
    net_pnl: float | None = None


class _Result:
    """A DuckDB result read into plain rows (DuckDB's own pandas export trips pandas 3 deprecations)."""

    def __init__(self, cursor) -> None:
        self.columns = [d[0] for d in (cursor.description or [])]
        self.rows = cursor.fetchall() if cursor.description else []

    def fetchone(self):
        return self.rows[0] if self.rows else None

    def fetchall(self):
        return self.rows

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=self.columns)


class Journal:
    """One DuckDB file of runs.

    Writes go, in order, through one background writer thread (a DuckDB statement costs about
    a millisecond, which a tick loop cannot wait for); each write or :meth:`batch` is one
    transaction. Reads wait for the queue to drain first, so they see every earlier write.
    :meth:`sync` waits for it too: the engine calls it before a *live* broker call, so the
    "sending" row is on disk before the order can exist. A killed process loses at most the
    writes still queued, always a suffix: what is on disk is the run up to some instant.
    A failed write stops the run at the next journal call (``JournalError``).
    """

    def __init__(self, path: "str | Path | None" = None, *, read_only: bool = False, writer: "Writer | None" = None) -> None:
        import duckdb

        self.path = Path(path) if path is not None else default_journal_path()
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        elif not self.path.exists():
            raise JournalError(f"no journal at {self.path}: no run has been started with this data folder")
        try:
            self._db = duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.Error as exc:
            raise JournalError(f"cannot open the journal {self.path}: {exc} (is a run using it right now?)") from exc
        if not read_only:
            self._db.execute(_SCHEMA)
            self._db.execute("SET TimeZone = 'UTC'")
        self._lock = threading.RLock()
        self._seq = 0
        self._signals: list[list[Any]] = []
        self._tags: dict[tuple[str, str], OrderRow] = {}
        self._run_tags: dict[str, set[str]] = {}
        self._known_runs: set[str] = set()
        self._batch: list[tuple[str, list[Any]]] | None = None
        self._own_writer = writer is None
        self._writer = writer or Writer("journal-writer")

    # ------------------------------------------------------------------ the writer

    def _apply(self, job: list[tuple[str, list[Any]]]) -> None:
        with self._lock:
            db = self._db
            if len(job) == 1:
                db.execute(*job[0])
                return
            db.execute("BEGIN TRANSACTION")
            try:
                for sql, params in job:
                    db.execute(sql, params)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _w(self, sql: str, params: list[Any] | None = None) -> None:
        """Queue one write (or add it to the open batch)."""
        self._check()
        if self._batch is not None:
            self._batch.append((sql, params or []))
            return
        self._submit([(sql, params or [])])

    def _submit(self, job: list[tuple[str, list[Any]]]) -> None:
        self._writer.submit(lambda: self._apply(job))

    def _check(self) -> None:
        if self._db is None:
            raise JournalError("the journal is closed")
        if self._writer.failed is not None:
            raise JournalError(f"journal write failed ({self._writer.failed}); the run cannot continue safely")

    def sync(self) -> None:
        """Wait until every queued write is on disk (raises if one failed)."""
        if self._signals:
            self.flush()
        self._writer.sync()
        self._check()

    def close(self) -> None:
        if self._db is None:
            return
        try:
            self.sync()
        finally:
            if self._own_writer:
                self._writer.close()
            with self._lock:
                self._db.close()
                self._db = None

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _x(self, sql: str, params: list[Any] | None = None) -> "_Result":
        """A read (after every queued write) or a write that must be done now."""
        self._check()
        self.sync()
        with self._lock:
            try:
                return _Result(self._db.execute(sql, params or []))
            except Exception as exc:  # duckdb.Error and IO errors alike: the run must stop
                raise JournalError(f"journal call failed ({exc}); the run cannot continue safely") from exc

    # ------------------------------------------------------------------ runs
    def start_run(self, run_id: str, *, name: str, mode: str, broker: str, symbol: str, params: dict,
                  run_dir: str, pid: int | None = None) -> bool:
        """Record the run (or mark an existing one running again). True when it already existed."""
        now = pd.Timestamp.now(tz="UTC")
        existing = self._x("SELECT status FROM runs WHERE run_id = ?", [run_id]).fetchone()
        if existing:
            self._x("UPDATE runs SET status = 'running', updated_at = ?, pid = ? WHERE run_id = ?", [now, pid, run_id])
        else:
            self._x("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, 'running', ?, ?, ?)",
                    [run_id, name, mode, broker, symbol, json.dumps(params, default=str), run_dir, now, now, pid])
        self._seq = int(self._x("SELECT coalesce(max(seq), 0) FROM events WHERE run_id = ?", [run_id]).fetchone()[0])
        # every tag the run journalled so far: a lookup for a new tag then needs no query
        self._run_tags[run_id] = {r[0] for r in self._x("SELECT tag FROM orders WHERE run_id = ?", [run_id]).fetchall()}
        self._known_runs.add(run_id)
        return existing is not None

    def finish_run(self, run_id: str, status: str) -> None:
        self._w("UPDATE runs SET status = ?, updated_at = ? WHERE run_id = ?", [status, pd.Timestamp.now(tz="UTC"), run_id])

    def run(self, run_id: str) -> dict[str, Any] | None:
        row = self._x("SELECT * FROM runs WHERE run_id = ?", [run_id]).frame()
        if row.empty:
            return None
        out = row.iloc[0].to_dict()
        out["params"] = json.loads(out["params"])
        return out

    def runs(self, status: str | None = None) -> pd.DataFrame:
        sql = "SELECT run_id, name, mode, broker, symbol, status, run_dir, started_at, updated_at, pid FROM runs"
        args: list[Any] = []
        if status:
            sql += " WHERE status = ?"
            args.append(status)
        return self._x(sql + " ORDER BY started_at", args).frame()

    def resume_ns(self, run_id: str) -> int | None:
        """The last event-time instant the run wrote anything at (where a restart catches up to)."""
        parts = [f"SELECT max(tick_ns) FROM {t} WHERE run_id = ?" for t in ("events", "signals", "orders", "fills", "positions")]
        row = self._x(f"SELECT max(m) FROM ({' UNION ALL '.join(parts)}) AS t(m)", [run_id] * len(parts)).fetchone()
        return None if row[0] is None else int(row[0])

    # ------------------------------------------------------------------ events and signals
    def event(self, run_id: str, kind: str, text: str, *, tick_ns: int | None = None, data: dict | None = None) -> None:
        self._seq += 1
        self._w("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)",
                [run_id, self._seq, pd.Timestamp.now(tz="UTC"), tick_ns, kind, text, json.dumps(data or {}, default=str)])

    SIGNAL_BATCH = 200

    def signal(self, run_id: str, bar, decision, tick_ns: int) -> None:
        """Buffered (a bar close is not a broker call): written with the next other write, every
        ``SIGNAL_BATCH`` bars, or on close. A crash loses only signals a restart recomputes."""
        self._signals.append(
            [run_id, bar.ts, tick_ns, decision.entry, decision.exit_reason, bar.open, bar.high, bar.low, bar.close,
             decision.st_line, decision.st_dir, decision.macd, decision.macd_signal, decision.htf_dir]
        )
        if len(self._signals) >= self.SIGNAL_BATCH:
            self.flush()

    def flush(self) -> None:
        """Queue the buffered signals (one multi-row statement: DuckDB's executemany goes row by row)."""
        if self._signals and self._db is not None:
            rows, self._signals = self._signals, []
            values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(rows))
            self._submit([(f"INSERT OR REPLACE INTO signals VALUES {values}", [v for r in rows for v in r])])

    @contextlib.contextmanager
    def batch(self):
        """Several writes in one transaction (one commit), all or nothing; nested batches join the outer one."""
        if self._batch is not None:
            yield self
            return
        self._batch = []
        try:
            yield self
        except BaseException:
            self._batch = None
            raise
        job, self._batch = self._batch, None
        if job:
            self._submit(job)

    # ------------------------------------------------------------------ orders
    def order_sending(self, run_id: str, row: OrderRow, tick_ns: int) -> None:
        """Before the broker call: the tag is recorded, so a restart never sends it again."""
        now = pd.Timestamp.now(tz="UTC")
        with self.batch():
            self._w(
                "INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [run_id, row.tag, row.leg, row.position_id, row.symbol, row.side, row.quantity, row.order_type,
                 row.order_id, row.status, row.filled_quantity, row.average_price, row.message, tick_ns, now, now],
            )
            self._w("INSERT INTO order_status VALUES (?, ?, ?, ?, ?, ?)", [run_id, row.tag, now, tick_ns, row.status, row.message])
        self._tags[(run_id, row.tag)] = row
        self._run_tags.setdefault(run_id, set()).add(row.tag)

    def order_update(self, run_id: str, tag: str, *, status: str, tick_ns: int, order_id: str | None = None,
                     filled_quantity: int | None = None, average_price: float | None = None, message: str = "") -> None:
        """After a broker call or a status change: the latest state plus one history row."""
        now = pd.Timestamp.now(tz="UTC")
        with self.batch():
            self._w(
                "UPDATE orders SET status = ?, order_id = coalesce(?, order_id), filled_quantity = coalesce(?, filled_quantity), "
                "average_price = coalesce(?, average_price), message = ?, tick_ns = ?, updated_at = ? WHERE run_id = ? AND tag = ?",
                [status, order_id, filled_quantity, average_price, message, tick_ns, now, run_id, tag],
            )
            self._w("INSERT INTO order_status VALUES (?, ?, ?, ?, ?, ?)", [run_id, tag, now, tick_ns, status, message])
        self._tags.pop((run_id, tag), None)

    def order_row(self, run_id: str, tag: str) -> OrderRow | None:
        """The journal's row for ``tag`` (None when this run never journalled it)."""
        key = (run_id, tag)
        if key in self._tags:
            return self._tags[key]
        if run_id in self._known_runs and not self._may_have(run_id, tag):
            return None
        row = self._x(
            "SELECT tag, leg, position_id, symbol, side, quantity, order_type, order_id, status, filled_quantity, "
            "average_price, message FROM orders WHERE run_id = ? AND tag = ?", [run_id, tag]
        ).fetchone()
        out = OrderRow(*row) if row else None
        if out is not None:
            self._tags[key] = out
        return out

    def _may_have(self, run_id: str, tag: str) -> bool:
        return tag in self._run_tags.get(run_id, set())

    def orders(self, run_id: str) -> pd.DataFrame:
        return self._x("SELECT * EXCLUDE (run_id) FROM orders WHERE run_id = ? ORDER BY sent_at, tag", [run_id]).frame()

    def order_history(self, run_id: str) -> pd.DataFrame:
        return self._x("SELECT * EXCLUDE (run_id) FROM order_status WHERE run_id = ? ORDER BY ts", [run_id]).frame()

    def fill(self, run_id: str, tag: str, order_id: str, *, ts: pd.Timestamp, symbol: str, side: str,
             quantity: int, price: float, tick_ns: int) -> None:
        self._w("INSERT OR REPLACE INTO fills VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [run_id, tag, order_id, ts, tick_ns, symbol, side, quantity, price])

    def fills(self, run_id: str) -> pd.DataFrame:
        return self._x("SELECT * EXCLUDE (run_id) FROM fills WHERE run_id = ? ORDER BY ts, tag", [run_id]).frame()

    # ------------------------------------------------------------------ positions and P&L
    def position(self, run_id: str, pos: PositionRow, tick_ns: int) -> None:
        d = asdict(pos)
        cols = list(d)
        self._w(
            f"INSERT OR REPLACE INTO positions (run_id, {', '.join(cols)}, tick_ns) VALUES ({', '.join(['?'] * (len(cols) + 2))})",
            [run_id, *d.values(), tick_ns],
        )

    def positions(self, run_id: str) -> pd.DataFrame:
        frame = self._x(
            "SELECT * EXCLUDE (run_id, tick_ns) FROM positions WHERE run_id = ? ORDER BY entry_time NULLS LAST, position_id",
            [run_id],
        ).frame()
        for col in ("entry_time", "exit_time"):
            if col in frame and len(frame):
                frame[col] = pd.to_datetime(frame[col], utc=True).dt.tz_convert("Asia/Kolkata")
        return frame

    def daily(self, run_id: str, day, *, trades: int, gross_pnl: float, charges: float, net_pnl: float) -> None:
        self._w("INSERT OR REPLACE INTO daily VALUES (?, ?, ?, ?, ?, ?)", [run_id, day, trades, gross_pnl, charges, net_pnl])

    def daily_pnl(self, run_id: str) -> pd.DataFrame:
        return self._x("SELECT * EXCLUDE (run_id) FROM daily WHERE run_id = ? ORDER BY day", [run_id]).frame()

    def events(self, run_id: str) -> pd.DataFrame:
        return self._x("SELECT seq, ts, kind, text, data FROM events WHERE run_id = ? ORDER BY seq", [run_id]).frame()

    def signals(self, run_id: str) -> pd.DataFrame:
        return self._x("SELECT * EXCLUDE (run_id) FROM signals WHERE run_id = ? ORDER BY bar_ts", [run_id]).frame()

"""Restart safety: SIGKILL a paper replay at random points, restart it, and get the same result.

The victim runs as a real ``tradeflow trade`` process (paced so that it can be interrupted),
is killed with SIGKILL at random moments after it has started trading, and restarted with
the same run id each time, until a run completes. Its final trades, paper positions and cash
must equal those of an uninterrupted run of the same parameters, and the paper broker must
hold exactly one order per order tag (nothing sent twice).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

from tradeflow.brokers.paper import PaperBroker
from tradeflow.journal import Journal
from tradeflow.trading import load_trade_config, run_trade

PARAMS = {
    "name": "restart", "mode": "paper", "feed": "replay", "symbol": "NIFTY", "source": "sim",
    "replay_date": "2024-03-04", "replay_days": 3, "lots": 1, "lot_size": 75,
    "strategy": {"timeframe": 5, "st_period": 7, "st_multiplier": 1.5, "flip_only": False, "stop_loss": 20,
                 "target": 40, "cooldown_bars": 0},
    "risk": {"stops_on": "tick"},
}
KILLS = 4


def _trades(journal: Journal, run_id: str) -> pd.DataFrame:
    pos = journal.positions(run_id)
    cols = ["entry_time", "exit_time", "direction", "symbol", "quantity", "entry_price", "exit_price", "exit_reason",
            "gross_pnl", "charges", "net_pnl", "state"]
    return pos[cols].reset_index(drop=True)


def _paper(run_id: str, data_dir: Path):
    broker = PaperBroker(db_path=data_dir / "paper" / "runs" / f"{run_id}.duckdb")
    try:
        return ([(p.instrument.symbol, p.quantity, round(p.realized_pnl, 2)) for p in broker.positions()],
                round(broker._cash, 2), [o.tag for o in broker.orders()])
    finally:
        broker.close()


def _status(data_dir: Path, run_id: str) -> tuple[str, int]:
    with Journal(data_dir / "journal" / "journal.duckdb", read_only=True) as j:
        info = j.run(run_id)
        return (info["status"] if info else "absent", len(j.positions(run_id)))


def test_sigkill_at_random_points_then_restart_gives_the_uninterrupted_result(tmp_path):
    data_dir = Path(os.environ["TRADEFLOW_DATA_DIR"])
    # the reference: one uninterrupted run in this process
    ref = run_trade(load_trade_config({**PARAMS, "run_id": "reference"}))
    assert ref.status == "stopped" and len(ref.trades) >= 4

    params = tmp_path / "victim.yaml"
    params.write_text(yaml.safe_dump({**PARAMS, "speed": 12_000}))
    cmd = [sys.executable, "-m", "tradeflow.cli", "trade", "-p", str(params), "--run-id", "victim"]
    active = data_dir / "runs" / "active" / "victim.json"
    rng = random.Random(20261122)
    interrupted = 0
    progress = []
    for attempt in range(KILLS + 6):
        active.unlink(missing_ok=True)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ.copy())
        deadline = time.monotonic() + 120
        while not active.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        if attempt < KILLS and proc.poll() is None:
            time.sleep(rng.uniform(0.3, 3.0))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
                status, n = _status(data_dir, "victim")
                if status == "running":  # died mid-run, as intended
                    interrupted += 1
                    progress.append(n)
                continue
        _, stderr = proc.communicate(timeout=180)
        assert proc.returncode == 0, stderr.decode()[-3000:]
        if _status(data_dir, "victim")[0] == "stopped":
            break
    print(f"kills mid-run: {interrupted}, positions at each kill: {progress}, reference trades: {len(ref.trades)}")
    assert interrupted >= 2, f"only {interrupted} kills landed mid-run; the replay is too fast to interrupt"
    assert any(0 < n < len(ref.trades) for n in progress), f"no kill landed between trades: {progress}"

    with Journal(data_dir / "journal" / "journal.duckdb", read_only=True) as j:
        ours, theirs = _trades(j, "victim"), _trades(j, "reference")
        orders = j.orders("victim")
    pd.testing.assert_frame_equal(ours, theirs)
    v_pos, v_cash, v_tags = _paper("victim", data_dir)
    r_pos, r_cash, r_tags = _paper("reference", data_dir)
    assert v_pos == r_pos and v_cash == r_cash
    assert len(v_tags) == len(set(v_tags)) == len(r_tags), "an order was sent twice (or lost)"
    assert sorted(v_tags) == sorted(orders["tag"][orders["status"] != "REJECTED"])

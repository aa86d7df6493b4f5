"""The trading faces: `tradeflow trade / compare / kill / runs`, and notebooks/30_trade.ipynb."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml
from typer.testing import CliRunner

from tradeflow.cli import app
from tradeflow.journal import Journal
from tradeflow.runner import run_notebook

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()
SIM = {"name": "cli", "feed": "replay", "symbol": "NIFTY", "replay_date": "2024-03-05",
       "strategy": {"timeframe": 5, "st_period": 7, "st_multiplier": 1.5, "flip_only": False, "cooldown_bars": 0},
       "risk": {"stops_on": "close"}}


def _params(tmp_path, **extra) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({**SIM, **extra}))
    return path


def test_trade_then_compare_then_runs(tmp_path):
    res = runner.invoke(app, ["trade", "-p", str(_params(tmp_path))])
    assert res.exit_code == 0, repr(res.exception)
    line = next(x for x in res.output.splitlines() if x.startswith("run "))
    run_id = line.split()[1].rstrip(":")
    assert "stopped" in line and "trades" in res.output
    summary = json.loads(next(Path(os.environ["TRADEFLOW_DATA_DIR"]).glob(f"runs/*/{run_id}/summary.json")).read_text())
    assert summary["status"] == "stopped" and summary["trades"] > 0
    cmp = runner.invoke(app, ["compare", run_id])
    assert cmp.exit_code == 0, cmp.output
    assert f"same: {summary['trades']}" in cmp.output  # every trade equals the backtest's
    listed = runner.invoke(app, ["runs"])
    assert run_id in listed.output
    wrong = runner.invoke(app, ["compare", run_id[:-1] + "x"])
    assert wrong.exit_code == 2 and "did you mean" in wrong.output


def test_trade_refuses_bad_parameters_and_live_without_arming(tmp_path):
    res = runner.invoke(app, ["trade", "-p", str(_params(tmp_path, stop_loss=10))])
    assert res.exit_code == 2 and "unknown parameter 'stop_loss'" in res.output
    res = runner.invoke(app, ["trade", "-p", str(_params(tmp_path)), "--set", "mode=live", "--set", "broker=dhan",
                              "--feed", "broker"])
    assert res.exit_code == 2 and "TRADEFLOW_ALLOW_LIVE=1" in res.output and "mode: live" in res.output
    res = runner.invoke(app, ["trade", "-p", str(tmp_path / "missing.yaml")])
    assert res.exit_code == 2 and "not found" in res.output


def test_kill_command_stops_a_running_trade(tmp_path):
    assert runner.invoke(app, ["kill"]).exit_code == 1  # nothing to kill
    params = _params(tmp_path, speed=1500, replay_days=1)
    data = Path(os.environ["TRADEFLOW_DATA_DIR"])
    proc = subprocess.Popen([sys.executable, "-m", "tradeflow.cli", "trade", "-p", str(params), "--run-id", "killme"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ.copy())
    active = data / "runs" / "active" / "killme.json"
    deadline = time.monotonic() + 60
    while not active.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(2.0)
    res = runner.invoke(app, ["kill", "killme"])
    assert res.exit_code == 0 and "kill requested: killme" in res.output
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert "killme: killed" in out.decode()
    with Journal(data / "journal" / "journal.duckdb", read_only=True) as j:
        assert j.run("killme")["status"] == "killed"
        assert "kill" in set(j.events("killme")["kind"])
        assert set(j.positions("killme")["state"]) <= {"closed", "failed"}
    assert not active.exists()
    again = subprocess.run([sys.executable, "-m", "tradeflow.cli", "trade", "-p", str(params), "--run-id", "killme"],
                           capture_output=True, env=os.environ.copy(), timeout=120)
    assert again.returncode == 2 and b"was killed" in again.stderr


def test_trade_notebook_replays_a_sim_day(tmp_path):
    result = run_notebook(REPO / "notebooks" / "30_trade.ipynb", REPO / "params" / "demo.yaml", runs_dir=tmp_path / "runs")
    nb = json.loads(result.notebook.read_text())
    errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors == []
    text = result.notebook.read_text()
    assert "stopped" in text and "net_pnl" in text and "plotly" in text and "SYNTHETIC" in text


def test_scheduled_run_exits_cleanly_on_a_holiday(tmp_path, monkeypatch):
    monkeypatch.setenv("TRADEFLOW_NOW", "2024-01-26T09:10:00+05:30")  # Republic Day, a Friday
    res = subprocess.run([sys.executable, "-m", "tradeflow.cli", "run", str(REPO / "notebooks" / "30_trade.ipynb"),
                          "-p", str(REPO / "params" / "paper_nifty.yaml"), "--no-html"],
                         capture_output=True, env=os.environ.copy(), timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stderr.decode()[-2000:]
    out = Path(res.stdout.decode().split("notebook:")[1].split()[0])
    assert "not an NSE session" in out.read_text()

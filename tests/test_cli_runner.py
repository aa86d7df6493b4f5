"""The command line and the notebook runner: thin faces over the library."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from tradeflow.cli import app
from tradeflow.errors import ParameterError
from tradeflow.runner import load_parameters, run_notebook
from tradeflow.store import CandleStore

REPO = Path(__file__).resolve().parents[1]
HISTORY = REPO / "notebooks" / "10_history.ipynb"
runner = CliRunner()


def _store(tmp_path) -> CandleStore:
    return CandleStore(tmp_path / "parquet")


def test_fetch_then_candles_csv_and_parquet(tmp_path):
    res = runner.invoke(app, ["fetch", "--symbol", "NIFTY", "--start", "2024-01-01", "--end", "2024-01-10", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "NIFTY 1m from sim: 3000 bar(s)" in res.output  # 8 sessions x 375 (Jan 1 traded)
    again = runner.invoke(app, ["fetch", "--symbol", "NIFTY", "--start", "2024-01-01", "--end", "2024-01-10", "--no-progress"])
    assert "already up to date" in again.output
    out_csv = tmp_path / "out.csv"
    res = runner.invoke(app, ["candles", "NIFTY", "--timeframe", "15m", "--start", "2024-01-02", "--end", "2024-01-02", "--out", str(out_csv)])
    assert res.exit_code == 0, res.output
    written = pd.read_csv(out_csv, index_col=0)
    assert len(written) == 25 and written.index[0] == "2024-01-02 09:15:00+05:30"
    out_pq = tmp_path / "out.parquet"
    runner.invoke(app, ["candles", "NIFTY", "--timeframe", "1d", "--out", str(out_pq)])
    assert len(pd.read_parquet(out_pq)) == 8
    printed = runner.invoke(app, ["candles", "NIFTY", "--timeframe", "1h", "--start", "2024-01-02", "--end", "2024-01-02"])
    assert printed.exit_code == 0 and "15:15" in printed.output


def test_import_csv_and_gaps(tmp_path):
    csv = tmp_path / "x.csv"
    csv.write_text("Date,Time,Open,High,Low,Close\n20240102,09:15,10,11,9,10.5\n20240102,09:17,10.5,12,10,11\n")
    res = runner.invoke(app, ["import-csv", str(csv), "--symbol", "nifty", "--timeframe", "1m"])
    assert res.exit_code == 0, res.output
    assert "2 new bar(s)" in res.output
    assert len(_store(tmp_path).candles("NIFTY", "1m")) == 2
    gaps = runner.invoke(app, ["gaps", "NIFTY", "--strict", "--out", str(tmp_path / "gaps.csv")])
    assert gaps.exit_code == 1
    assert "missing bars: 373" in gaps.output
    details = pd.read_csv(tmp_path / "gaps.csv")
    assert set(details["check"]) == {"missing bars"}


def test_bad_input_exits_2_with_a_message(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,open,high,low,close\n2024-01-02 09:15,1,0.5,2,1\n")
    res = runner.invoke(app, ["import-csv", str(bad), "--symbol", "NIFTY"])
    assert res.exit_code == 2
    assert "line 2" in res.output and "below low" in res.output
    assert not (tmp_path / "parquet" / "candles").exists()
    res = runner.invoke(app, ["candles", "NIFTY", "--timeframe", "7s"])
    assert res.exit_code == 2 and "unknown timeframe '7s'" in res.output
    res = runner.invoke(app, ["import-csv", str(bad), "--symbol", "NIFTY", "--col", "close"])
    assert res.exit_code == 2 and "ROLE=NAME" in res.output


def test_candles_with_no_data_says_what_to_do():
    res = runner.invoke(app, ["candles", "NIFTY"])
    assert res.exit_code == 1 and "tradeflow fetch" in res.output


def test_parameters_unknown_name_gets_did_you_mean(tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text("symbls: [NIFTY]\n")
    with pytest.raises(ParameterError, match="no parameter 'symbls'; did you mean 'symbols'"):
        load_parameters(params, HISTORY)


def test_parameters_refuse_secrets(tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text("dhan_access_token: abc\n")
    with pytest.raises(ParameterError, match="looks like a secret") as info:
        load_parameters(params, HISTORY)
    assert "abc" not in str(info.value)


def test_parameters_sections_per_notebook():
    params = load_parameters(REPO / "params" / "demo.yaml", HISTORY)
    assert params["source"] == "sim" and params["symbols"] == ["NIFTY", "BANKNIFTY"]


def test_history_notebook_runs_with_papermill(tmp_path):
    result = run_notebook(
        HISTORY,
        parameters={"symbols": ["SBIN"], "start": "2024-02-01", "end": "2024-02-06", "chart_timeframe": "15m"},
        runs_dir=tmp_path / "runs",
    )
    assert result.notebook.parent.parent == tmp_path / "runs" and result.notebook.exists()
    assert result.html is not None and result.html.stat().st_size > 10_000
    nb = json.loads(result.notebook.read_text())
    errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors == []
    # the notebook wrote into the test's store (settings come from the environment), with no gaps
    store = CandleStore(tmp_path / "parquet")
    assert len(store.candles("SBIN", "1d")) == 4  # Feb 1, 2, 5, 6 of 2024
    assert store.gaps("SBIN", "1m").ok
    text = result.notebook.read_text()
    assert "plotly" in text and "SYNTHETIC" in text


def test_notebooks_have_parameters_cell_and_no_outputs():
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        nb = json.loads(path.read_text())
        assert any("parameters" in c.get("metadata", {}).get("tags", []) for c in nb["cells"]), path
        assert all(not c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code"), f"{path} has outputs"
        first = "".join(nb["cells"][0]["source"])
        assert "google.colab" in first, f"{path}: the first cell installs the package on Colab"


BACKTEST_NB = REPO / "notebooks" / "20_backtest.ipynb"


def test_backtest_and_sweep_commands_write_results(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text(
        "symbol: NIFTY\nstart: 2024-02-01\nend: 2024-02-29\n"
        "strategy: {timeframe: 15, stop_loss: 40, target: 80}\n"
        "execution: {lot_size: 75}\n"
        "sweep: {grid: {st_period: [7, 10], st_multiplier: [2.0, 3.0]}, metric: net_pnl}\n"
        "walk_forward: {in_sample_days: 10, out_sample_days: 5}\n"
    )
    out = tmp_path / "out"
    res = runner.invoke(app, ["sweep", "-p", str(job), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "sweep: top 10 by net_pnl" in res.output and "walk-forward windows" in res.output
    for name in ("trades.csv", "daily_pnl.csv", "metrics.json", "report.html", "sweep.csv", "walk_forward.csv"):
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    trades = pd.read_csv(out / "trades.csv")
    assert metrics["metrics"]["trades"] == len(trades)
    assert abs(metrics["metrics"]["net_pnl"] - trades["net_pnl"].sum()) < 0.05
    assert len(pd.read_csv(out / "sweep.csv")) == 4
    assert "SYNTHETIC" in (out / "report.html").read_text()


def test_backtest_command_refuses_unknown_parameters(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text("symbol: NIFTY\nstrategy: {timeframe: 15, stoploss: 40}\n")
    res = runner.invoke(app, ["backtest", "-p", str(job)])
    assert res.exit_code == 2 and "did you mean 'stop_loss'" in res.output
    job.write_text("symbl: NIFTY\n")
    res = runner.invoke(app, ["backtest", "-p", str(job)])
    assert res.exit_code == 2 and "did you mean 'symbol'" in res.output


def test_backtest_notebook_runs_with_papermill(tmp_path):
    result = run_notebook(
        BACKTEST_NB,
        parameters={
            "start": "2024-02-01", "end": "2024-02-29",
            "strategy": {"timeframe": 15, "stop_loss": 40, "target": 80},
            "sweep_grid": {"st_period": [7, 10], "st_multiplier": [2.0, 3.0]},
            "walk_forward": {"in_sample_days": 10, "out_sample_days": 5},
        },
        runs_dir=tmp_path / "runs",
    )
    nb = json.loads(result.notebook.read_text())
    errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors == []
    files = result.notebook.with_suffix("").parent / (result.notebook.stem + "-files")
    assert (files / "report.html").exists() and (files / "trades.csv").exists()
    assert "Sharpe" in result.notebook.read_text()


def test_every_parameter_line_is_seen_by_papermill():
    """papermill silently skips assignments it cannot parse (e.g. a '=' in a comment)."""
    import papermill as pm

    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        nb = json.loads(path.read_text())
        cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
        assigned = [line.split("=")[0].strip() for line in "".join(cell["source"]).splitlines() if line and line[0].isalpha() and "=" in line]
        assert sorted(pm.inspect_notebook(str(path))) == sorted(assigned), path

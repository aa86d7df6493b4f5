"""Shared fixtures: a fresh store per test, real NSE data from ../shared when present."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from tradeflow.store import CandleStore

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TRADEFLOW_SHARED", REPO.parent / "shared"))
REAL = SHARED / "data" / "real"


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path, monkeypatch):
    """Point the default store and data folders at the test's temp dir, never the checkout."""
    monkeypatch.setenv("TRADEFLOW_STORE_ROOT", str(tmp_path / "parquet"))
    monkeypatch.setenv("TRADEFLOW_DATA_DIR", str(tmp_path / "data"))
    from tradeflow.config import settings

    settings(reload=True)
    yield
    settings(reload=True)


@pytest.fixture
def store(tmp_path) -> CandleStore:
    return CandleStore(tmp_path / "parquet")


@pytest.fixture(scope="session")
def real_dir() -> Path:
    """``../shared/data/real``; tests that need it skip with the reason when it is absent."""
    if not REAL.is_dir():
        pytest.skip(f"real NSE data not found at {REAL} (a user's clone has no ../shared); set TRADEFLOW_SHARED")
    return REAL


@pytest.fixture(scope="session")
def nifty_1m(real_dir) -> pd.DataFrame:
    """Real NIFTY 1-minute bars, 2024-01-01..2024-08-23, IST, session hours only (see MANIFEST)."""
    raw = pd.read_csv(real_dir / "intraday" / "NIFTY50_1min_2024-01-01_2024-08-23.csv", dtype={"Date": str})
    ts = pd.to_datetime(raw["Date"] + " " + raw["Time"], format="%Y%m%d %H:%M").dt.tz_localize("Asia/Kolkata")
    frame = pd.DataFrame(
        {"open": raw["Open"], "high": raw["High"], "low": raw["Low"], "close": raw["Close"]},
    ).set_index(pd.DatetimeIndex(ts, name="ts"))
    t = frame.index.time
    return frame[(t >= pd.Timestamp("09:15").time()) & (t <= pd.Timestamp("15:29").time())]

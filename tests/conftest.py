"""Shared fixtures: a fresh store per test, real NSE data from ../shared when present."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pandas as pd
import pytest

from tradeflow.store import CandleStore

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TRADEFLOW_SHARED", REPO.parent / "shared"))
REAL = SHARED / "data" / "real"


_LOOPBACK = ("127.", "::1", "localhost")
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _guarded(method):
    def connect(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if self.family in (socket.AF_INET, socket.AF_INET6) and not str(host).startswith(_LOOPBACK):
            raise ConnectionRefusedError(f"tests may only reach 127.0.0.1, not {host!r} (no real broker, no internet)")
        return method(self, address)

    return connect


@pytest.fixture(autouse=True, scope="session")
def _no_network():
    """No test can reach a real broker or the internet: only loopback connections are allowed."""
    socket.socket.connect = _guarded(_real_connect)
    socket.socket.connect_ex = _guarded(_real_connect_ex)
    yield
    socket.socket.connect = _real_connect
    socket.socket.connect_ex = _real_connect_ex


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path, monkeypatch):
    """Point the default store and data folders at the test's temp dir, never the checkout."""
    monkeypatch.setenv("TRADEFLOW_STORE_ROOT", str(tmp_path / "parquet"))
    monkeypatch.setenv("TRADEFLOW_DATA_DIR", str(tmp_path / "data"))
    # Every broker address points at a closed local port unless a test sets its fake server;
    # no credential from the developer's environment or .env leaks into a test.
    for name in ("DHAN_BASE_URL", "DHAN_AUTH_URL", "DHAN_MASTER_URL", "DEFINEDGE_BASE_URL", "DEFINEDGE_LOGIN_URL",
                 "DEFINEDGE_DATA_URL", "DEFINEDGE_MASTER_URL"):
        monkeypatch.setenv(name, "http://127.0.0.1:9/")
    for name in ("DHAN_FEED_URL", "DEFINEDGE_WS_URL"):
        monkeypatch.setenv(name, "ws://127.0.0.1:9/")
    for name in ("DHAN_CLIENT_ID", "DHAN_ACCESS_TOKEN", "DHAN_PIN", "DHAN_TOTP_SECRET", "DEFINEDGE_API_TOKEN",
                 "DEFINEDGE_API_SECRET", "DEFINEDGE_TOTP_SECRET", "DEFINEDGE_ALGO_ID", "TRADEFLOW_ALLOW_LIVE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # a .env in the checkout is not read
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
